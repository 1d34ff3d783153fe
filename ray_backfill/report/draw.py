"""The report's drawings: inline SVG built from the page's model, and the colours the page keys them by.

Pure functions returning SVG text or small structures; no script library, no font, nothing fetched.
Every text that comes from the run (task ids, errors, node ids) goes through `esc` here, so the
renderer may mark what these functions return as safe markup.
"""

from __future__ import annotations

import html
import statistics
from typing import Callable, NamedTuple

from ray_backfill.report.model import PHASES, Attempt, MemoryBar, clock, seconds_text

# phase -> (colour, track): the session's life on the upper track, the data work on the lower
PHASE_STYLE = {
    "session_start": ("#6f86b8", "session"),
    "standby": ("#c7d2ea", "session"),
    "session_stop": ("#aab2c0", "session"),
    "fetch": ("#2a9d8f", "work"),
    "write": ("#e9a23b", "work"),
    "work": ("#8e6cc0", "work"),
}
STAGE_COLOURS = {"prepare": "#9aa3b2", "bronze": "#2a9d8f", "silver": "#8e6cc0", "gold": "#e9a23b"}
OUTCOME_COLOURS = {"succeeded": "#1f9d55", "failed": "#d64545", "cancelled": "#8a8f98"}
FAILED, CANCELLED = "#d64545", "#8a8f98"

WIDTH = 1100  # the SVGs' coordinate width; they scale to the page
LEFT = 150  # the label column of the timeline and the memory chart
RIGHT = 24
BAR_H, TRACK_H = 22, 9  # an attempt's bar, and its upper (session) track
LABEL_H, LABEL_FONT = 13, 11
MAX_LABEL_ROWS = 6  # text rows under a lane; a label that fits in none is left to the bar's tooltip
MAX_NAMED_BARS = 80  # memory bars with the task's name beside them
CHAR_W = 0.62 * LABEL_FONT  # a label's width per character, a little over the usual sans-serif's


class StageSegment(NamedTuple):
    """A stage's part of the header's stage bar."""

    stage: str
    flex: str
    colour: str
    seconds: str


def esc(value: object) -> str:
    """Text or an attribute value, HTML-escaped."""
    return html.escape(str(value), quote=True)


def outcome_colour(outcome: str) -> str:
    return OUTCOME_COLOURS.get(outcome, "#8a8f98")


def stage_segments(stage_seconds: list[tuple[str, float]], total: float) -> list[StageSegment]:
    """The stage bar: a segment per stage that took time, in proportion (none without a total)."""
    if not total:
        return []
    return [StageSegment(s, f"{max(v, total * 0.004):.3f}", STAGE_COLOURS[s], seconds_text(v))
            for s, v in stage_seconds]


def legend_items() -> list[tuple[str, str]]:
    """(CSS background of the swatch, label) for each phase and for failed and cancelled attempts."""
    items = [(f"background:{PHASE_STYLE[name][0]}", label) for name, label in PHASES.items() if name != "standby"]
    items.insert(1, ("background:repeating-linear-gradient(-45deg,#c7d2ea 0 3px,#fff 3px 5px)", PHASES["standby"]))
    items += [(f"background:repeating-linear-gradient(45deg,#fbe4e4 0 3px,{FAILED} 3px 5px)", "failed attempt ✕"),
              (f"background:repeating-linear-gradient(45deg,#eceef1 0 3px,{CANCELLED} 3px 5px)",
               "cancelled attempt ⊘")]
    return items


def pack_lanes(spans: list[tuple[float, float]]) -> list[int]:
    """A lane per span, so that spans in one lane never overlap, in as few lanes as possible:
    in start order, each takes the lowest lane free by its start (a span may start where another ends)."""
    lanes: list[float] = []  # when each lane is free again
    out = [0] * len(spans)
    for i in sorted(range(len(spans)), key=lambda i: spans[i]):
        start, end = spans[i]
        lane = next((n for n, free in enumerate(lanes) if free <= start), len(lanes))
        if lane == len(lanes):
            lanes.append(end)
        lanes[lane] = max(end, start)
        out[i] = lane
    return out


def _tick_step(span: float, most: int = 10) -> float:
    return next((s for s in (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 14400, 21600)
                 if span / s <= most), 43200)


def _tick_text(offset: float) -> str:
    if offset < 60 or offset % 60:
        return f"{offset:g}s" if offset < 60 else f"{int(offset // 60)}m{int(offset % 60):02d}"
    return f"{int(offset // 60)}m" if offset < 3600 else f"{int(offset // 3600)}h{int(offset % 3600 // 60):02d}"


def _node_names(attempts: list[Attempt]) -> dict[str, str]:
    """Node ids in the order they first ran something, with short names."""
    names: dict[str, str] = {}
    for a in attempts:
        if a.node not in names:
            names[a.node] = f"node {a.node[:10]}" if a.node else "driver host"
    return names


def _tip(a: Attempt, lane_name: str) -> str:
    start = a.span[0]
    lines = [f"{a.task_id} · attempt {a.attempt} · {a.status}", lane_name,
             f"{clock(a.started_at)} → {clock(a.ended_at)} UTC ({seconds_text(a.ended_at - a.started_at)})"]
    if a.phases:
        lines.append(", ".join(f"{PHASES[k].split(':')[0]} {seconds_text(v[1] - v[0])}"
                               for k, v in sorted(a.phases.items(), key=lambda kv: kv[1][0])))
    if a.standby:
        lines.append(f"standby: its process and session started {seconds_text(a.started_at - start)} before its turn")
    if a.peak_rss_mb:
        lines.append(f"peak memory {a.peak_rss_mb:,.0f} MiB")
    if a.error:
        lines.append(f"error: {a.error}")
    return "\n".join(lines)


def _label_rows(items: list[tuple[float, float]]) -> list[int]:
    """A text row per label [x, x + width], so that labels in one row keep 6 px apart."""
    return pack_lanes([(x, x + w + 6) for x, w in items])


def timeline_svg(attempts: list[Attempt]) -> str:
    """The Gantt chart: a group per node, a lane per slot, a bar per attempt, its label below it."""
    t0 = min(a.span[0] for a in attempts)
    t1 = max(a.span[1] for a in attempts)
    total = max(t1 - t0, 1.0)
    plot_w = WIDTH - LEFT - RIGHT

    def x(t: float) -> float:
        return LEFT + (t - t0) / total * plot_w

    rows: list[str] = []
    y = 30.0
    for node, name in _node_names(attempts).items():
        mine = [a for a in attempts if a.node == node]
        lanes = pack_lanes([a.turn for a in mine])
        rows.append(f'<text class="node" x="8" y="{y + 12:.1f}">{esc(name)}</text>'
                    f'<line class="sep" x1="0" x2="{WIDTH}" y1="{y - 6:.1f}" y2="{y - 6:.1f}"/>')
        y += 18
        for lane in range(max(lanes) + 1):
            in_lane = [a for a, n in zip(mine, lanes) if n == lane]
            places = []
            for a in in_lane:
                w = len(a.label) * CHAR_W
                places.append((min(max(x(a.started_at), LEFT), WIDTH - RIGHT - w), w))
            label_rows = _label_rows(places)
            rows.append(f'<text class="lane" x="20" y="{y + 15:.1f}">slot {lane + 1}</text>')
            for a, (lx, _), row in zip(in_lane, places, label_rows):
                label_y = y + BAR_H + LABEL_H * (row + 1) - 2 if row < MAX_LABEL_ROWS else None
                rows.append(_bar(a, x, y, lx, label_y, f"{name}, slot {lane + 1}"))
            y += BAR_H + LABEL_H * min(max(label_rows) + 1, MAX_LABEL_ROWS) + 12
        y += 6
    height = y + 4
    barrier = [a.started_at for a in attempts if a.stage == "silver"]  # its turn: every chunk committed
    axis = _axis(x, t0, total, height, min(barrier) if barrier else None)
    return (f'<svg id="timeline" class="chart" viewBox="0 0 {WIDTH} {height:.0f}" role="img" '
            f'aria-label="timeline of every attempt">{_PATTERNS}{axis}{"".join(rows)}</svg>')


def _axis(x: Callable[[float], float], t0: float, total: float, height: float, barrier: float | None) -> str:
    """The timeline's ticks and grid lines, and silver's barrier."""
    axis = []
    step = _tick_step(total)
    tick = 0.0
    while tick <= total + 1e-9:
        tx = x(t0 + tick)
        axis.append(f'<line class="grid" x1="{tx:.1f}" x2="{tx:.1f}" y1="22" y2="{height:.1f}"/>'
                    f'<text class="tick" x="{tx:.1f}" y="14">{esc(_tick_text(tick))}</text>')
        tick += step
    if barrier is not None:
        bx = x(barrier)
        axis.append(f'<line class="barrier" x1="{bx:.1f}" x2="{bx:.1f}" y1="22" y2="{height:.1f}"/>'
                    f'<text class="barrier-text" x="{bx + 4:.1f}" y="{height - 6:.1f}">barrier</text>')
    return "".join(axis)


_PATTERNS = (
    '<defs>'
    f'<pattern id="hatch-failed" width="6" height="6" patternUnits="userSpaceOnUse" patternTransform="rotate(45)">'
    f'<rect width="6" height="6" fill="#fbe4e4"/><line x1="0" y1="0" x2="0" y2="6" stroke="{FAILED}" '
    'stroke-width="2.5"/></pattern>'
    f'<pattern id="hatch-cancelled" width="6" height="6" patternUnits="userSpaceOnUse" patternTransform="rotate(45)">'
    f'<rect width="6" height="6" fill="#eceef1"/><line x1="0" y1="0" x2="0" y2="6" stroke="{CANCELLED}" '
    'stroke-width="2"/></pattern>'
    '<pattern id="hatch-standby" width="5" height="5" patternUnits="userSpaceOnUse" patternTransform="rotate(-45)">'
    f'<rect width="5" height="5" fill="{PHASE_STYLE["standby"][0]}"/><line x1="0" y1="0" x2="0" y2="5" stroke="#fff" '
    'stroke-width="1.5"/></pattern>'
    '</defs>'
)


def _bar(a: Attempt, x, y: float, label_x: float, label_y: float | None, lane_name: str) -> str:
    """The attempt's bar from its turn on; what a standby did before its turn, a strip above it."""
    start, end = a.turn
    x0, x1 = x(start), x(end)
    w = max(x1 - x0, 2.0)
    fill = {"failed": "url(#hatch-failed)", "cancelled": "url(#hatch-cancelled)"}.get(a.status, "#eef1f6")
    stroke = {"failed": FAILED, "cancelled": CANCELLED}.get(a.status, "#c5ccd8")
    parts = [f'<rect class="bar" x="{x0:.1f}" y="{y:.1f}" width="{w:.1f}" height="{BAR_H}" rx="3" '
             f'fill="{fill}" stroke="{stroke}"/>']
    for name, (p0, p1) in sorted(a.phases.items(), key=lambda kv: kv[1][0]):
        colour, track = PHASE_STYLE[name]
        paint = "url(#hatch-standby)" if name == "standby" else colour
        if p0 < start:  # before its turn: the standby's strip
            parts.append(f'<rect class="phase {name} ahead" x="{x(p0):.1f}" y="{y - 7:.1f}" '
                         f'width="{max(x(min(p1, start)) - x(p0), 1):.1f}" height="5" fill="{paint}"/>')
            p0 = start
        if p1 <= p0:
            continue
        py, ph = (y + 1, TRACK_H - 1) if track == "session" else (y + TRACK_H + 1, BAR_H - TRACK_H - 2)
        parts.append(f'<rect class="phase {name}" x="{x(p0):.1f}" y="{py:.1f}" width="{max(x(p1) - x(p0), 1):.1f}" '
                     f'height="{ph}" fill="{paint}"/>')
    if a.standby:  # the moment its turn came
        parts.append(f'<line class="turn" x1="{x0:.1f}" x2="{x0:.1f}" y1="{y - 8:.1f}" y2="{y + BAR_H + 2:.1f}"/>')
    mark = {"failed": " ✕", "cancelled": " ⊘"}.get(a.status, "")
    if label_y is not None:
        if label_y - 9 > y + BAR_H + 2:
            parts.append(f'<line class="leader" x1="{x0 + 0.5:.1f}" x2="{x0 + 0.5:.1f}" y1="{y + BAR_H:.1f}" '
                         f'y2="{label_y - 9:.1f}"/>')
        parts.append(f'<text class="label {esc(a.status)}" x="{label_x:.1f}" y="{label_y:.1f}">'
                     f'{esc(a.label)}{mark}</text>')
    return (f'<g class="attempt" data-task="{esc(a.task_id)}" data-attempt="{a.attempt}" data-status="{esc(a.status)}" '
            f'data-tip="{esc(_tip(a, lane_name))}">{"".join(parts)}</g>')


def memory_svg(bars: list[MemoryBar]) -> str:
    """Peak memory of each task's last attempt (its process tree), one bar per task."""
    top = max(b.peak_rss_mb for b in bars)
    plot_w = WIDTH - LEFT - RIGHT - 90
    named = len(bars) <= MAX_NAMED_BARS  # beyond, thin bars without names (the tooltip has them)
    row = 20 if named else 6
    height = len(bars) * row + 8
    parts = []
    for i, b in enumerate(bars):
        y = 4 + i * row
        w = max(b.peak_rss_mb / top * plot_w, 2)
        colour = STAGE_COLOURS.get(b.stage, "#9aa3b2") if b.status == "succeeded" else FAILED
        tip = (f"{b.task_id} · {b.status} · attempt {b.attempts}\n"
               f"peak {b.peak_rss_mb:,.0f} MiB (its process and every child)")
        text = (f'<text class="lane" x="{LEFT - 8}" y="{y + 13}" text-anchor="end">{esc(b.task_id)}</text>'
                f'<text class="value" x="{LEFT + w + 6:.1f}" y="{y + 13}">{b.peak_rss_mb:,.0f} MiB</text>'
                if named else "")
        parts.append(f'<g class="mem" data-tip="{esc(tip)}">{text}<rect x="{LEFT}" y="{y + 2}" width="{w:.1f}" '
                     f'height="{row - (6 if named else 1)}" rx="{2 if named else 0}" fill="{colour}"/></g>')
    bronze = [b.peak_rss_mb for b in bars if b.stage == "bronze"]
    if len(bronze) > 1:
        mx = LEFT + statistics.median(bronze) / top * plot_w
        parts.append(f'<line class="median" x1="{mx:.1f}" x2="{mx:.1f}" y1="0" y2="{height}"/>'
                     f'<text class="median-text" x="{mx + 4:.1f}" y="{height + 10}">median bronze chunk '
                     f'{statistics.median(bronze):,.0f} MiB</text>')
        height += 14
    return f'<svg id="memory" class="chart" viewBox="0 0 {WIDTH} {height}" role="img">{"".join(parts)}</svg>'


def columns_svg(svg_id: str, minutes: list[dict], key: str, limit: float | None, colour: str, unit: str,
                height: int, strip_429: bool = False) -> str:
    """Columns per minute of `key`, a dashed line at the limit, and (for calls) a strip of 429s."""
    values = [float(m.get(key) or 0) for m in minutes]
    top = max([*values, limit or 0, 1]) * 1.12
    plot_w, plot_h, base = WIDTH - LEFT - RIGHT, height - 30, height - 22
    step = plot_w / len(minutes)
    bar_w = min(step * 0.8, 48)
    parts = [f'<line class="axis" x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{base}" y2="{base}"/>',
             f'<text class="tick" x="{LEFT - 8}" y="{base - plot_h + 10:.0f}" text-anchor="end">'
             f'{top / 1.12:,.0f}</text>',
             f'<text class="tick" x="{LEFT - 8}" y="{base}" text-anchor="end">0</text>']
    label_every = max(1, round(len(minutes) / 12))
    for i, (m, v) in enumerate(zip(minutes, values)):
        cx = LEFT + step * (i + 0.5)
        h = v / top * plot_h
        tip = (f"{clock(m['minute'], False)} UTC: {m.get('requests', 0):,} requests, "
               f"{m.get('weighted_calls', 0):,.1f} weighted calls, {m.get('responses_429', 0)} × 429, "
               f"at most {m.get('max_in_flight', 0)} in flight")
        parts.append(f'<rect class="col" x="{cx - bar_w / 2:.1f}" y="{base - h:.1f}" width="{bar_w:.1f}" '
                     f'height="{h:.1f}" fill="{colour}" data-tip="{esc(tip)}"/>')
        if i % label_every == 0:
            parts.append(f'<text class="tick" x="{cx:.1f}" y="{base + 14}">{clock(m["minute"], False)}</text>')
    if limit:
        ly = base - limit / top * plot_h
        parts.append(f'<line class="limit" x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{ly:.1f}" y2="{ly:.1f}"/>'
                     f'<text class="limit-text" x="{WIDTH - RIGHT}" y="{ly - 5:.1f}" text-anchor="end">'
                     f'limit {limit:,.0f} {esc(unit)}</text>')
    if strip_429:
        parts.append(_strip_429(minutes, step, bar_w, height))
        height += 24
    return f'<svg id="{svg_id}" class="chart" viewBox="0 0 {WIDTH} {height}" role="img">{"".join(parts)}</svg>'


def _strip_429(minutes: list[dict], step: float, bar_w: float, height: int) -> str:
    """Under the columns: the 429 answers per minute, or "none"."""
    parts = [f'<text class="lane" x="{LEFT - 8}" y="{height + 14}" text-anchor="end">429 answers</text>']
    for i, m in enumerate(minutes):
        n = int(m.get("responses_429") or 0)
        cx = LEFT + step * (i + 0.5)
        if n:
            parts.append(f'<rect class="r429" x="{cx - bar_w / 2:.1f}" y="{height + 2}" width="{bar_w:.1f}" '
                         f'height="16" rx="2" fill="{FAILED}"/><text class="count" x="{cx:.1f}" '
                         f'y="{height + 14}">{n}</text>')
    if not any(m.get("responses_429") for m in minutes):
        parts.append(f'<text class="ok" x="{LEFT}" y="{height + 14}">none</text>')
    return "".join(parts)
