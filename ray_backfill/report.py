"""A run's report as one self-contained page (report.html, next to report.json in the run's ledger dir).

Drawn here in Python as inline SVG: no script library, no font, nothing fetched, so the file opens
offline and can be mailed around. Sections: the run at a glance, a timeline of every attempt per
node and slot (phases coloured, retries and standby time visible), peak memory per task, the
source's use per minute against its limits, rows per table, and the settings with secrets hidden.
"""

from __future__ import annotations

import datetime as dt
import html
import json
import re
import statistics
from dataclasses import dataclass, field

from jobs.config import SECRET_FIELDS, split_uri_secret

# phase -> (label, colour, track): the session's life on the upper track, the data work on the lower
PHASES = {
    "session_start": ("session start", "#6f86b8", "session"),
    "standby": ("standby: session up, waiting for its turn", "#c7d2ea", "session"),
    "session_stop": ("session stop", "#aab2c0", "session"),
    "fetch": ("fetch from the source", "#2a9d8f", "work"),
    "write": ("write (Iceberg commit)", "#e9a23b", "work"),
    "work": ("silver / gold", "#8e6cc0", "work"),
}
STAGE_COLOURS = {"prepare": "#9aa3b2", "bronze": "#2a9d8f", "silver": "#8e6cc0", "gold": "#e9a23b"}
OUTCOME_COLOURS = {"succeeded": "#1f9d55", "failed": "#d64545", "cancelled": "#8a8f98"}
FAILED, CANCELLED = "#d64545", "#8a8f98"
_SECRET_KEY = re.compile(r"password|passwd|secret|token|api[_-]?key|credential|access[_-]?key", re.IGNORECASE)
HIDDEN = "(hidden)"

WIDTH = 1100  # the SVGs' coordinate width; they scale to the page
LEFT = 150  # the label column of the timeline and the memory chart
RIGHT = 24
BAR_H, TRACK_H = 22, 9  # an attempt's bar, and its upper (session) track
LABEL_H, LABEL_FONT = 13, 11
MAX_LABEL_ROWS = 6  # text rows under a lane; a label that fits in none is left to the bar's tooltip
MAX_NAMED_BARS = 80  # memory bars with the task's name beside them
CHAR_W = 0.62 * LABEL_FONT  # a label's width per character, a little over the usual sans-serif's


def esc(value: object) -> str:
    """Text or an attribute value, HTML-escaped."""
    return html.escape(str(value), quote=True)


@dataclass
class Attempt:
    """One attempt of a task as the timeline draws it (epoch seconds)."""

    task_id: str
    stage: str
    attempt: int
    status: str
    started_at: float
    ended_at: float
    node: str
    standby: bool = False
    phases: dict[str, list[float]] = field(default_factory=dict)
    peak_rss_mb: float | None = None
    error: str | None = None

    @property
    def span(self) -> tuple[float, float]:
        """From its first sign of life (a standby's session start) to its last."""
        starts = [self.started_at, *(p[0] for p in self.phases.values())]
        ends = [self.ended_at, *(p[1] for p in self.phases.values())]
        return min(starts), max(ends)

    @property
    def turn(self) -> tuple[float, float]:
        """From its turn (when it took its slot) to its last sign of life: what its slot's lane holds."""
        return self.started_at, self.span[1]

    @property
    def label(self) -> str:
        return self.task_id if self.attempt == 1 else f"{self.task_id} #{self.attempt}"


def attempts_of(report: dict) -> list[Attempt]:
    """Every attempt the report knows: those that did not succeed (each task's `history`) and each
    task's successful last one (its `metrics`), in start order."""
    out = []
    for task in report.get("tasks", []):
        node = task.get("node_id")
        for h in task.get("history") or []:
            if h.get("started_at") is None or h.get("ended_at") is None:
                continue
            out.append(Attempt(task["task_id"], task["stage"], h["attempt"], h["status"], h["started_at"],
                               h["ended_at"], h.get("node_id") or "", bool(h.get("standby")),
                               peak_rss_mb=h.get("peak_rss_mb"), error=h.get("error")))
        m = task.get("metrics") or {}
        if task.get("status") == "succeeded" and m.get("started_at") is not None and m.get("ended_at") is not None:
            phases = {k: list(v) for k, v in (m.get("phases") or {}).items() if k in PHASES and len(v) == 2}
            ready = phases.get("session_start", [None, None])[1]
            if m.get("standby") and ready is not None and m["started_at"] > ready:
                phases["standby"] = [ready, m["started_at"]]
            out.append(Attempt(task["task_id"], task["stage"], task.get("attempts") or 1, "succeeded",
                               m["started_at"], m["ended_at"], node or "", bool(m.get("standby")), phases,
                               task.get("peak_rss_mb")))
    return sorted(out, key=lambda a: (a.span[0], a.task_id, a.attempt))


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


def seconds_text(s: float) -> str:
    """12.3s, 4m 05s, 1h 02m."""
    if s < 60:
        return f"{s:.1f}s"
    if s < 3600:
        return f"{int(s // 60)}m {int(s % 60):02d}s"
    return f"{int(s // 3600)}h {int(s % 3600 // 60):02d}m"


def _clock(epoch: float, seconds: bool = True) -> str:
    return dt.datetime.fromtimestamp(epoch, dt.timezone.utc).strftime("%H:%M:%S" if seconds else "%H:%M")


def _when(iso: str | None) -> str:
    if not iso:
        return "—"
    return dt.datetime.fromisoformat(iso).astimezone(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


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
             f"{_clock(a.started_at)} → {_clock(a.ended_at)} UTC ({seconds_text(a.ended_at - a.started_at)})"]
    if a.phases:
        lines.append(", ".join(f"{PHASES[k][0].split(':')[0]} {seconds_text(v[1] - v[0])}"
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
    if not attempts:
        return '<p class="none">No attempt ran in this session of the run.</p>'
    t0 = min(a.span[0] for a in attempts)
    t1 = max(a.span[1] for a in attempts)
    total = max(t1 - t0, 1.0)
    plot_w = WIDTH - LEFT - RIGHT

    def x(t: float) -> float:
        return LEFT + (t - t0) / total * plot_w

    names = _node_names(attempts)
    rows: list[str] = []
    y = 30.0
    for node, name in names.items():
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
    axis = []
    step = _tick_step(total)
    tick = 0.0
    while tick <= total + 1e-9:
        tx = x(t0 + tick)
        axis.append(f'<line class="grid" x1="{tx:.1f}" x2="{tx:.1f}" y1="22" y2="{height:.1f}"/>'
                    f'<text class="tick" x="{tx:.1f}" y="14">{esc(_tick_text(tick))}</text>')
        tick += step
    barrier = [a.started_at for a in attempts if a.stage == "silver"]  # its turn: every chunk committed
    if barrier:
        bx = x(min(barrier))
        axis.append(f'<line class="barrier" x1="{bx:.1f}" x2="{bx:.1f}" y1="22" y2="{height:.1f}"/>'
                    f'<text class="barrier-text" x="{bx + 4:.1f}" y="{height - 6:.1f}">barrier</text>')
    return (f'<svg id="timeline" class="chart" viewBox="0 0 {WIDTH} {height:.0f}" role="img" '
            f'aria-label="timeline of every attempt">{_PATTERNS}{"".join(axis)}{"".join(rows)}</svg>')


_PATTERNS = (
    '<defs>'
    f'<pattern id="hatch-failed" width="6" height="6" patternUnits="userSpaceOnUse" patternTransform="rotate(45)">'
    f'<rect width="6" height="6" fill="#fbe4e4"/><line x1="0" y1="0" x2="0" y2="6" stroke="{FAILED}" '
    'stroke-width="2.5"/></pattern>'
    f'<pattern id="hatch-cancelled" width="6" height="6" patternUnits="userSpaceOnUse" patternTransform="rotate(45)">'
    f'<rect width="6" height="6" fill="#eceef1"/><line x1="0" y1="0" x2="0" y2="6" stroke="{CANCELLED}" '
    'stroke-width="2"/></pattern>'
    '<pattern id="hatch-standby" width="5" height="5" patternUnits="userSpaceOnUse" patternTransform="rotate(-45)">'
    f'<rect width="5" height="5" fill="{PHASES["standby"][1]}"/><line x1="0" y1="0" x2="0" y2="5" stroke="#fff" '
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
        _, colour, track = PHASES[name]
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


def memory_svg(tasks: list[dict]) -> str:
    """Peak memory of each task's last attempt (its process tree), one bar per task."""
    measured = [t for t in tasks if t.get("peak_rss_mb")]
    if not measured:
        return '<p class="none">No memory was measured in this run.</p>'
    top = max(t["peak_rss_mb"] for t in measured)
    plot_w = WIDTH - LEFT - RIGHT - 90
    named = len(measured) <= MAX_NAMED_BARS  # beyond, thin bars without names (the tooltip has them)
    row = 20 if named else 6
    height = len(measured) * row + 8
    parts = []
    for i, t in enumerate(measured):
        y = 4 + i * row
        w = max(t["peak_rss_mb"] / top * plot_w, 2)
        colour = STAGE_COLOURS.get(t["stage"], "#9aa3b2") if t.get("status") == "succeeded" else FAILED
        tip = (f"{t['task_id']} · {t.get('status')} · attempt {t.get('attempts')}\n"
               f"peak {t['peak_rss_mb']:,.0f} MiB (its process and every child)")
        text = (f'<text class="lane" x="{LEFT - 8}" y="{y + 13}" text-anchor="end">{esc(t["task_id"])}</text>'
                f'<text class="value" x="{LEFT + w + 6:.1f}" y="{y + 13}">{t["peak_rss_mb"]:,.0f} MiB</text>'
                if named else "")
        parts.append(f'<g class="mem" data-tip="{esc(tip)}">{text}<rect x="{LEFT}" y="{y + 2}" width="{w:.1f}" '
                     f'height="{row - (6 if named else 1)}" rx="{2 if named else 0}" fill="{colour}"/></g>')
    bronze = [t["peak_rss_mb"] for t in measured if t["stage"] == "bronze"]
    if len(bronze) > 1:
        mx = LEFT + statistics.median(bronze) / top * plot_w
        parts.append(f'<line class="median" x1="{mx:.1f}" x2="{mx:.1f}" y1="0" y2="{height}"/>'
                     f'<text class="median-text" x="{mx + 4:.1f}" y="{height + 10}">median bronze chunk '
                     f'{statistics.median(bronze):,.0f} MiB</text>')
        height += 14
    return f'<svg id="memory" class="chart" viewBox="0 0 {WIDTH} {height}" role="img">{"".join(parts)}</svg>'


def _minutes(limiter: dict) -> list[dict]:
    """The limiter's per-minute use, with the quiet minutes between filled in as zeros."""
    kept = {int(m["minute"]): m for m in limiter.get("per_minute") or []}
    if not kept:
        return []
    first, last = min(kept), max(kept)
    return [kept.get(m, {"minute": m, "requests": 0, "weighted_calls": 0, "responses_429": 0, "max_in_flight": 0})
            for m in range(first, last + 60, 60)]


def _columns_svg(svg_id: str, minutes: list[dict], key: str, limit: float | None, colour: str, unit: str,
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
        tip = (f"{_clock(m['minute'], False)} UTC: {m.get('requests', 0):,} requests, "
               f"{m.get('weighted_calls', 0):,.1f} weighted calls, {m.get('responses_429', 0)} × 429, "
               f"at most {m.get('max_in_flight', 0)} in flight")
        parts.append(f'<rect class="col" x="{cx - bar_w / 2:.1f}" y="{base - h:.1f}" width="{bar_w:.1f}" '
                     f'height="{h:.1f}" fill="{colour}" data-tip="{esc(tip)}"/>')
        if i % label_every == 0:
            parts.append(f'<text class="tick" x="{cx:.1f}" y="{base + 14}">{_clock(m["minute"], False)}</text>')
    if limit:
        ly = base - limit / top * plot_h
        parts.append(f'<line class="limit" x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{ly:.1f}" y2="{ly:.1f}"/>'
                     f'<text class="limit-text" x="{WIDTH - RIGHT}" y="{ly - 5:.1f}" text-anchor="end">'
                     f'limit {limit:,.0f} {esc(unit)}</text>')
    if strip_429:
        parts.append(f'<text class="lane" x="{LEFT - 8}" y="{height + 14}" text-anchor="end">429 answers</text>')
        for i, m in enumerate(minutes):
            n = int(m.get("responses_429") or 0)
            cx = LEFT + step * (i + 0.5)
            if n:
                parts.append(f'<rect class="r429" x="{cx - bar_w / 2:.1f}" y="{height + 2}" width="{bar_w:.1f}" '
                             f'height="16" rx="2" fill="{FAILED}"/><text class="count" x="{cx:.1f}" '
                             f'y="{height + 14}">{n}</text>')
        if not any(m.get("responses_429") for m in minutes):
            parts.append(f'<text class="ok" x="{LEFT}" y="{height + 14}">none</text>')
        height += 24
    return f'<svg id="{svg_id}" class="chart" viewBox="0 0 {WIDTH} {height}" role="img">{"".join(parts)}</svg>'


def source_section(source: dict | None) -> str:
    if not source:
        return '<p class="none">No source limiter in this run (the synthetic source asks no API).</p>'
    limiter = source.get("limiter") or {}
    clients = source.get("clients") or {}
    limits = limiter.get("limits") or {}
    out = []
    facts = [("requests sent", clients.get("requests")), ("weighted calls", clients.get("weighted_calls")),
             ("retries", clients.get("retries")), ("429 answers", clients.get("responses_429")),
             ("no answer (timeouts, connections)", clients.get("transport_errors")),
             ("leases granted", limiter.get("leases")), ("waits at the limiter", limiter.get("waits")),
             ("most in flight", limiter.get("max_in_flight")), ("expired leases", limiter.get("expired_leases"))]
    out.append('<div class="facts">' + "".join(
        f'<div><b>{_number(v)}</b><span>{esc(k)}</span></div>' for k, v in facts if v is not None) + "</div>")
    shown = ", ".join(f"{_number(limits[k])} {u}" for k, u in (("per_minute", "calls/min"), ("per_hour", "calls/hour"),
                                                               ("per_day", "calls/day"), ("max_in_flight", "in flight"))
                      if limits.get(k) is not None)
    out.append(f'<p class="muted">Limits: {esc(shown or "none")}.</p>')
    minutes = _minutes(limiter)
    if minutes:
        out.append("<h3>Weighted calls per minute</h3>")
        out.append(_columns_svg("calls", minutes, "weighted_calls", limits.get("per_minute"), "#2a9d8f",
                                "calls/min", 190, strip_429=True))
        out.append("<h3>Most requests in flight per minute</h3>")
        out.append(_columns_svg("inflight", minutes, "max_in_flight", limits.get("max_in_flight"), "#6f86b8",
                                "in flight", 120))
        if limiter.get("per_minute_dropped"):
            out.append(f'<p class="muted">{limiter["per_minute_dropped"]:,} earlier minutes are not kept.</p>')
    return "".join(out)


def _number(v: object) -> str:
    if isinstance(v, float):
        return f"{v:,.1f}" if v != int(v) else f"{int(v):,}"
    return f"{v:,}" if isinstance(v, int) else esc(v)


def tables_section(report: dict) -> str:
    """Rows in each table after the run (gold's summary) and rows this run's tasks wrote."""
    written: dict[str, int] = {}
    for t in report.get("tasks", []):
        for name, rows in ((t.get("metrics") or {}).get("tables") or {}).items():
            written[name] = written.get(name, 0) + int(rows)
    now = {s["table"]: s for s in report.get("tables") or []}
    names = [*now, *(n for n in written if n not in now)]
    if not names:
        return '<p class="none">No table was written.</p>'
    top = max([*(s["rows"] for s in now.values()), *written.values(), 1])
    rows = []
    for name in names:
        s = now.get(name, {})
        count = s.get("rows")
        span = f"{s['first']} .. {s['last']}" if s.get("first") else ""
        shown = count if count is not None else written.get(name, 0)
        rows.append(f'<tr><td class="mono">{esc(name)}</td>'
                    f'<td class="num">{_number(count) if count is not None else "—"}</td>'
                    f'<td class="num">{_number(written[name]) if name in written else "—"}</td>'
                    f'<td class="barcell"><span class="hbar" style="width:{shown / top * 100:.1f}%"></span></td>'
                    f'<td class="mono muted">{esc(span)}</td></tr>')
    note = "" if now else '<p class="muted">Gold did not run: rows written by this run only.</p>'
    return (f'{note}<table id="tables" class="data"><thead><tr><th>table</th><th class="num">rows now</th>'
            f'<th class="num">written by this run</th><th></th><th>span</th></tr></thead>'
            f'<tbody>{"".join(rows)}</tbody></table>')


def redact(value: object, path: tuple[str, ...] = ()) -> object:
    """Settings with every secret hidden: the fields `jobs.config` keeps in the environment, any key
    that names a credential, and a password in a URI."""
    if path[-2:] in SECRET_FIELDS or (path and _SECRET_KEY.search(path[-1])):
        return HIDDEN if value not in (None, "") else None
    if isinstance(value, dict):
        return {k: redact(v, (*path, str(k))) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        if len(value) == 2 and isinstance(value[0], str) and _SECRET_KEY.search(value[0]):
            return [value[0], HIDDEN]  # a (key, value) pair of catalog properties or spark conf
        return [redact(v, path) for v in value]
    if isinstance(value, str) and "://" in value:
        return split_uri_secret(value)[0]
    return value


def _value_text(v: object) -> str:
    if v is None or v == [] or v == {}:
        return "—"
    if isinstance(v, (list, dict)):
        return json.dumps(v, ensure_ascii=False)
    return str(v)


def settings_section(report: dict) -> str:
    request = {k: v for k, v in (report.get("request") or {}).items() if k != "settings"}
    sections = {"run": request, **(redact(report.get("settings") or {}))}
    out = []
    for name, values in sections.items():
        if not isinstance(values, dict) or not values:
            continue
        rows = "".join(f'<tr><th>{esc(k)}</th><td class="mono">{esc(_value_text(v))}</td></tr>'
                       for k, v in values.items())
        out.append(f'<div class="settings"><h3>{esc(name)}</h3><table class="kv">{rows}</table></div>')
    return f'<div class="settings-grid">{"".join(out)}</div>'


def _task_table(tasks: list[dict]) -> str:
    rows = []
    for t in tasks:
        status = t.get("status", "")
        retried = len(t.get("history") or [])
        rows.append(
            f'<tr><td class="mono">{esc(t["task_id"])}</td>'
            f'<td><span class="pill {esc(status)}">{esc(status)}</span></td>'
            f'<td class="num">{t.get("attempts", 0)}{" (" + str(retried) + " not ok)" if retried else ""}</td>'
            f'<td class="num">{_number(t.get("rows", 0))}</td>'
            f'<td class="num">{seconds_text(t.get("seconds") or 0)}</td>'
            f'<td class="num">{_number(round(t["peak_rss_mb"])) if t.get("peak_rss_mb") else "—"}</td>'
            f'<td class="mono muted">{esc((t.get("node_id") or "—")[:12])}</td>'
            f'<td class="err">{esc(t.get("error") or "") if status != "succeeded" else ""}</td></tr>')
    return ('<table class="data"><thead><tr><th>task</th><th>state</th><th class="num">attempts</th>'
            '<th class="num">rows</th><th class="num">last attempt</th><th class="num">peak MiB</th><th>node</th>'
            f'<th>last error</th></tr></thead><tbody>{"".join(rows)}</tbody></table>')


def _legend() -> str:
    items = [(f'background:{c}', label) for name, (label, c, _) in PHASES.items() if name != "standby"]
    items.insert(1, ("background:repeating-linear-gradient(-45deg,#c7d2ea 0 3px,#fff 3px 5px)", PHASES["standby"][0]))
    items += [(f"background:repeating-linear-gradient(45deg,#fbe4e4 0 3px,{FAILED} 3px 5px)", "failed attempt ✕"),
              (f"background:repeating-linear-gradient(45deg,#eceef1 0 3px,{CANCELLED} 3px 5px)",
               "cancelled attempt ⊘")]
    return '<div class="legend">' + "".join(
        f'<span><i style="{style}"></i>{esc(label)}</span>' for style, label in items) + (
        '<span><i class="turn-key"></i>a standby\'s turn (the strip above its bar: before it)</span></div>')


def _session_start(report: dict) -> float | None:
    """Epoch seconds this driver session began (a resumed run's report draws only its own attempts)."""
    total = (report.get("stage_seconds") or {}).get("total")
    if not report.get("finished_at") or total is None:
        return None
    return dt.datetime.fromisoformat(report["finished_at"]).timestamp() - total - 2.0


def render_html(report: dict) -> str:
    """The report page of a run, from the report's data (report.json plus `settings`)."""
    tasks = report.get("tasks", [])
    attempts = attempts_of(report)
    began = _session_start(report)
    earlier = {a.task_id for a in attempts if began is not None and a.span[1] < began}
    attempts = [a for a in attempts if began is None or a.span[1] >= began]
    request = report.get("request") or {}
    outcome = report.get("outcome") or "unfinished"
    bronze = [t for t in tasks if t["stage"] == "bronze"]
    done = sum(t.get("status") == "succeeded" for t in bronze)
    total = (report.get("stage_seconds") or {}).get("total") or 0.0
    rows = sum(t.get("rows", 0) for t in bronze)
    peaks = [t["peak_rss_mb"] for t in tasks if t.get("peak_rss_mb")]
    retries = sum(len(t.get("history") or []) for t in tasks)
    cards = [("wall time", seconds_text(total)), ("bronze chunks", f"{done} / {len(bronze)} committed"),
             ("attempts", f"{len(attempts)} ({retries} not ok)" if retries else str(len(attempts))),
             ("bronze rows", f"{rows:,}"), ("peak memory", f"{max(peaks):,.0f} MiB" if peaks else "—")]
    client = ((report.get("source") or {}).get("clients") or {})
    if client:
        cards.append(("source requests", f"{client.get('requests', 0):,} ({client.get('responses_429', 0)} × 429)"))
    stage_bar = _stage_bar(report.get("stage_seconds") or {}, total)
    t0 = min((a.span[0] for a in attempts), default=None)
    note = (f'<p class="muted">{len(earlier)} task(s) ran in an earlier session of this run (before a resume) '
            f'and are not drawn.</p>') if earlier else ""
    error = f'<p class="run-error">{esc(report["error"])}</p>' if report.get("error") else ""
    title = f"Run {report.get('run_id', '')} — {outcome}"
    body = f"""
<header>
  <div class="title"><h1>Backfill run <span class="mono">{esc(report.get('run_id', ''))}</span></h1>
  <span class="badge" style="background:{OUTCOME_COLOURS.get(outcome, '#8a8f98')}">{esc(outcome)}</span></div>
  <p class="sub">{esc(request.get('start_date', '?'))} → {esc(request.get('end_date', '?'))} ·
  {esc(request.get('granularity', ''))} chunks · executor {esc(request.get('executor', ''))} ·
  started {esc(_when(report.get('created_at')))} · finished {esc(_when(report.get('finished_at')))}</p>
  {error}
  <div class="cards">{''.join(f'<div class="card"><b>{esc(v)}</b><span>{esc(k)}</span></div>' for k, v in cards)}</div>
  {stage_bar}
</header>
<section><h2>Timeline</h2>
  <p class="muted">Every attempt, per node and slot{f", from {_clock(t0)} UTC" if t0 else ""}. Upper track: the
  attempt's Spark session; lower track: its work. Hover a bar for details.</p>
  {_legend()}{note}
  <div class="scroll">{timeline_svg(attempts)}</div>
</section>
<section><h2>Tasks</h2>{_task_table(tasks)}</section>
<section><h2>Peak memory per task</h2>
  <p class="muted">Resident memory of the attempt's process and all its children (Spark's JVMs included),
  last attempt.</p>{memory_svg(tasks)}</section>
<section><h2>Source use against its limits</h2>{source_section(report.get('source'))}</section>
<section><h2>Rows per table</h2>{tables_section(report)}</section>
<section><h2>Settings</h2><p class="muted">Secrets are never recorded; any that slip in show as
  {HIDDEN}.</p>{settings_section(report)}</section>
<footer>ray-backfill · report.json beside this file holds the same data</footer>
<div id="tip" role="tooltip"></div>"""
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{esc(title)}</title><style>{_CSS}</style></head><body>{body}<script>{_JS}</script></body></html>\n")


def _stage_bar(stage_seconds: dict, total: float) -> str:
    parts = [(s, stage_seconds[s]) for s in ("prepare", "bronze", "silver", "gold") if stage_seconds.get(s)]
    if not parts or not total:
        return ""
    segs = "".join(f'<span style="flex:{max(v, total * 0.004):.3f};background:{STAGE_COLOURS[s]}" '
                   f'data-tip="{esc(f"{s}: {seconds_text(v)}")}">{esc(s)} {esc(seconds_text(v))}</span>'
                   for s, v in parts)
    return f'<div class="stages">{segs}</div>'


_CSS = """
:root{--ink:#1d2433;--muted:#667085;--line:#e4e7ec;--bg:#f6f7f9;--card:#fff}
*{box-sizing:border-box}
body{margin:0;background:var(--bg);color:var(--ink);font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,
"Helvetica Neue",Arial,sans-serif}
header,section,footer{max-width:1180px;margin:18px auto;padding:18px 22px;background:var(--card);
border:1px solid var(--line);border-radius:10px;box-shadow:0 1px 2px rgba(16,24,40,.04)}
footer{background:none;border:none;box-shadow:none;color:var(--muted);font-size:12px;text-align:center}
h1{font-size:20px;margin:0}h2{font-size:16px;margin:0 0 8px}h3{font-size:13px;margin:14px 0 4px;color:var(--muted);
font-weight:600;text-transform:uppercase;letter-spacing:.04em}
.title{display:flex;align-items:center;gap:12px;flex-wrap:wrap}
.badge{color:#fff;border-radius:999px;padding:2px 12px;font-weight:600;font-size:13px}
.sub,.muted{color:var(--muted)}.sub{margin:6px 0 12px}.muted{font-size:12.5px;margin:4px 0 10px}
.mono{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:12.5px}
.cards{display:grid;grid-template-columns:repeat(auto-fit,minmax(150px,1fr));gap:10px;margin:10px 0 14px}
.card,.facts div{background:var(--bg);border-radius:8px;padding:10px 12px}
.card b,.facts b{display:block;font-size:18px}.card span,.facts span{color:var(--muted);font-size:12px}
.facts{display:grid;grid-template-columns:repeat(auto-fit,minmax(140px,1fr));gap:8px;margin-bottom:6px}
.facts b{font-size:15px}
.stages{display:flex;height:22px;border-radius:6px;overflow:hidden;font-size:11px;color:#fff}
.stages span{padding:3px 6px;white-space:nowrap;overflow:hidden;text-overflow:ellipsis}
.run-error{background:#fdecec;color:#9b1c1c;border-radius:6px;padding:8px 10px}
.legend{display:flex;flex-wrap:wrap;gap:6px 16px;font-size:12px;color:var(--muted);margin:6px 0 8px}
.legend i{display:inline-block;width:14px;height:10px;border-radius:2px;margin-right:6px;vertical-align:-1px}
.legend .turn-key{width:2px;height:14px;background:#1d2433;vertical-align:-3px}
.scroll{overflow-x:auto}
svg.chart{width:100%;height:auto;display:block;font-family:inherit}
svg text{font-size:11px;fill:var(--ink)}
svg .tick{fill:var(--muted);text-anchor:middle;font-size:10.5px}
svg .node{font-weight:600;font-size:12px}svg .lane{fill:var(--muted)}
svg .label{font-size:11px}svg .label.failed{fill:#b42323}svg .label.cancelled{fill:#6b7079}
svg .grid{stroke:#eef0f3}svg .sep{stroke:var(--line)}svg .axis{stroke:#c5ccd8}
svg .leader{stroke:#c5ccd8}svg .turn{stroke:#1d2433;stroke-width:1.5}
svg .barrier{stroke:#8e6cc0;stroke-dasharray:4 3}svg .barrier-text{fill:#8e6cc0;font-size:10.5px}
svg .limit{stroke:#d64545;stroke-dasharray:5 4;stroke-width:1.5}svg .limit-text{fill:#d64545;font-size:11px}
svg .median{stroke:#1d2433;stroke-dasharray:3 3;opacity:.5}svg .median-text{fill:var(--muted);font-size:10.5px}
svg .count{fill:#fff;font-size:10px;text-anchor:middle;font-weight:600}svg .ok{fill:#1f9d55}
svg .value{fill:var(--muted)}
svg g.attempt:hover rect.bar,svg g.mem:hover rect{stroke:#1d2433;stroke-width:1.5}
table{border-collapse:collapse;width:100%}
table.data th,table.data td{padding:5px 8px;border-bottom:1px solid var(--line);text-align:left;vertical-align:top}
table.data th{font-size:12px;color:var(--muted);font-weight:600}
table.data tbody tr:hover{background:#fafbfc}
.num{text-align:right!important;font-variant-numeric:tabular-nums;white-space:nowrap}
.err{color:#9b1c1c;font-size:12.5px}
.barcell{width:22%}.hbar{display:block;height:8px;border-radius:4px;background:#2a9d8f;min-width:2px}
.pill{border-radius:999px;padding:1px 8px;font-size:12px;background:#eef0f3}
.pill.succeeded{background:#e3f4ea;color:#17703d}.pill.failed{background:#fdecec;color:#9b1c1c}
.pill.cancelled{background:#eef0f3;color:#555b66}
.settings-grid{display:grid;grid-template-columns:repeat(auto-fit,minmax(320px,1fr));gap:4px 24px}
table.kv th{font-weight:500;color:var(--muted);text-align:left;padding:3px 10px 3px 0;width:42%;font-size:12.5px;
vertical-align:top}
table.kv td{padding:3px 0;word-break:break-all}
.none{color:var(--muted);font-style:italic}
#tip{position:fixed;display:none;pointer-events:none;max-width:440px;background:#1d2433;color:#fff;font-size:12px;
padding:8px 10px;border-radius:6px;white-space:pre-line;box-shadow:0 4px 14px rgba(0,0,0,.2);z-index:10}
"""

# Hover details: the tooltip follows the pointer over anything with a data-tip.
_JS = """
(function () {
  var tip = document.getElementById('tip');
  document.querySelectorAll('[data-tip]').forEach(function (el) {
    el.addEventListener('mousemove', function (e) {
      tip.textContent = el.getAttribute('data-tip');
      tip.style.display = 'block';
      var x = Math.min(e.clientX + 14, window.innerWidth - tip.offsetWidth - 8);
      tip.style.left = x + 'px';
      tip.style.top = (e.clientY + 16) + 'px';
    });
    el.addEventListener('mouseleave', function () { tip.style.display = 'none'; });
  });
})();
"""
