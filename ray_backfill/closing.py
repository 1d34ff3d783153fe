"""A run's close, on every exit: the ledger's last write, report.json and report.html beside it,
then what the driver prints last (the task table, the tables' rows, the closing lines)."""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path
from typing import Callable

from jobs.inspect import format_summaries
from ray_backfill.executors.base import error_line
from ray_backfill.ledger import RunLedger, RunRecord
from ray_backfill.progress import summary_table
from ray_backfill.report import render_html
from ray_backfill.request import BackfillRequest
from ray_backfill.run_text import closing_lines


def close_run(request: BackfillRequest, record: RunRecord, ledger: RunLedger, started: float,
              echo: Callable[[str], None]) -> None:
    """The record finished and saved, its report written, the summary and closing lines printed.
    `started` is the run's time.monotonic() at its start."""
    record.finished_at = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    record.stage_seconds["total"] = round(time.monotonic() - started, 2)
    ledger.save(record)
    report_path = write_report(ledger, record, echo)
    echo(summary_table(record))
    if record.tables:
        echo(format_summaries(record.tables))
    closing_lines(request, record, report_path, echo)


def write_report(ledger: RunLedger, record: RunRecord, echo: Callable[[str], None]) -> Path | str:
    """report.json, then report.html; returns where the page is, or report.json if it was not written."""
    report = report_json(record)
    report_path = ledger.save_report(record.run_id, report)
    try:  # the page is for reading: a bug drawing it must not cost the run's closing lines
        page = render_html({**report, "settings": record.request["settings"]})
        report_path = ledger.save_report_html(record.run_id, page)
    except Exception as exc:
        echo(f"report.html not written ({error_line(exc)}); the report is in {report_path}")
    return report_path


def report_json(record: RunRecord) -> dict:
    """The record as report.json holds it: the request without its settings."""
    data = record.to_json()
    data.pop("request", None)
    data["request"] = {k: v for k, v in record.request.items() if k != "settings"}
    return data
