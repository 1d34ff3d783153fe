"""The report page: the model (`model.build`) and its drawings (`draw`) poured into
templates/report.html.j2, which inlines report.css and report.js: one file that loads nothing.

Autoescape is on, and every `{{ value }}` is escaped as `html.escape(quote=True)` escapes it
(`&quot;`, `&#x27;`), the same bytes the page always had; only the drawn SVG, which escapes the run's
text itself (`draw.esc`), goes in as Markup.
"""

from __future__ import annotations

import html

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape
from markupsafe import Markup

from ray_backfill.report import draw
from ray_backfill.report.model import HIDDEN, Report, build


def _escape(value: object) -> object:
    """Every printed value as html.escape escapes it; Markup (the drawings) as it is."""
    if hasattr(value, "__html__"):
        return value
    return Markup(html.escape(str(value), quote=True))


_ENV = Environment(loader=PackageLoader("ray_backfill.report", "templates"),
                   autoescape=select_autoescape(["html", "j2"]), finalize=_escape, undefined=StrictUndefined,
                   keep_trailing_newline=True)


def _drawings(m: Report) -> dict[str, Markup]:
    """The page's SVGs, built from escaped values only (see `draw`)."""
    out = {}
    if m.attempts:
        out["timeline"] = Markup(draw.timeline_svg(m.attempts))
    if m.memory:
        out["memory"] = Markup(draw.memory_svg(m.memory))
    if m.source and m.source.minutes:
        out["calls"] = Markup(draw.columns_svg("calls", m.source.minutes, "weighted_calls", m.source.per_minute_limit,
                                               "#2a9d8f", "calls/min", 190, strip_429=True))
        out["inflight"] = Markup(draw.columns_svg("inflight", m.source.minutes, "max_in_flight",
                                                  m.source.in_flight_limit, "#6f86b8", "in flight", 120))
    return out


def render_html(report: dict) -> str:
    """The report page of a run, from the report's data (report.json plus `settings`)."""
    m = build(report)
    return _ENV.get_template("report.html.j2").render(
        m=m, svg=_drawings(m), hidden=HIDDEN, outcome_colour=draw.outcome_colour(m.outcome),
        stages=draw.stage_segments(m.stage_seconds, m.total_seconds), legend=draw.legend_items())
