"""What the driver prints about a run (the plan's text is plan_text.py): the line it starts with,
and the closing lines, its outcome and where its tables, report and logs are (or how to resume it)."""

from __future__ import annotations

from typing import Callable

from jobs.config import CatalogConfig
from jobs.maintain import MaintainReport
from ray_backfill.ledger import ChunkStatus, RunLedger, RunRecord, run_log_dir
from ray_backfill.request import BackfillRequest, resume_command


def warehouse_text(catalog: CatalogConfig) -> str:
    return str(catalog.warehouse_path if catalog.warehouse_is_local else catalog.warehouse)


def start_line(request: BackfillRequest, record: RunRecord, ledger: RunLedger) -> str:
    """The run's first line: its chunks, executor, warehouse and ledger."""
    return (f"run {request.run_id}: {len(record.by_stage('bronze'))} bronze chunks, executor {request.executor}, "
            f"warehouse {warehouse_text(request.settings.catalog)}, ledger {ledger.path(record.run_id)}")


def logs_line(request: BackfillRequest, record: RunRecord) -> str:
    """Where the attempts' own output is."""
    where = run_log_dir(request.settings.catalog, record.run_id)
    if request.executor == "sequential":
        return f"  logs:    {where / 'session.log'} (the one session's output)" if where else "  logs:    -"
    if where is not None:
        return f"  logs:    {where} (one file per attempt)"
    return f"  logs:    each node's Ray log folder, ray-backfill/{record.run_id}/ (one file per attempt)"


def closing_lines(request: BackfillRequest, record: RunRecord, report_path, echo: Callable[[str], None]) -> None:
    """The run's outcome, then where its tables, report and logs are (or how to resume it)."""
    failed = [t for t in record.tasks if t.status in (ChunkStatus.FAILED, ChunkStatus.CANCELLED)]
    total = record.stage_seconds.get("total", 0)
    catalog = request.settings.catalog
    if record.outcome == "succeeded":
        catalog_at = catalog.sqlite_file if catalog.kind == "sqlite" else catalog.uri
        echo(f"run {record.run_id} succeeded in {total:.1f}s")
        for task in record.by_stage("maintain"):
            if task.metrics.get("maintenance"):
                echo(f"  {MaintainReport.from_json(task.metrics['maintenance']).line()}")
        echo(f"  tables:  catalog '{catalog.name}' ({catalog.kind}: {catalog_at}), "
             f"warehouse {warehouse_text(catalog)}")
        echo(f"  report:  {report_path}")
        echo(logs_line(request, record))
        return
    echo(f"run {record.run_id} {record.outcome} after {total:.1f}s")
    if record.error:
        echo(f"  {record.error}")
    for t in failed:
        echo(f"  {t.task_id}: {t.status.value} after {t.attempts} attempt(s): {t.error}")
    if any(t.stage == "bronze" for t in failed):
        echo("  silver and gold did not run: not every bronze chunk committed")
    echo(f"  report:  {report_path}")
    echo(logs_line(request, record))
    echo(f"resume with: {resume_command(request)}")
