"""A run's report as one self-contained page (report.html, next to report.json in the run's ledger dir).

Drawn as inline SVG: no script library, no font, nothing fetched, so the file opens offline and can
be mailed around. Sections: the run at a glance, a timeline of every attempt per node and slot
(phases coloured, retries and standby time visible), peak memory per task, the source's use per
minute against its limits, rows per table, and the settings with secrets hidden.

Where each part lives:
- `model.py`: what the page shows, built from the record (`build`); plain data, no markup.
- `draw.py`: the SVG drawings and the colours; pure functions.
- `render.py`: fills `templates/report.html.j2` (with `report.css` and `report.js` inlined).
"""

from ray_backfill.report.draw import MAX_LABEL_ROWS, esc, pack_lanes
from ray_backfill.report.model import HIDDEN, Attempt, Report, attempts_of, build, redact, seconds_text
from ray_backfill.report.render import render_html

__all__ = ["HIDDEN", "MAX_LABEL_ROWS", "Attempt", "Report", "attempts_of", "build", "esc", "pack_lanes", "redact",
           "render_html", "seconds_text"]
