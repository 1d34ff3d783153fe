"""How a run's end is recorded: succeeded or failed when its tasks are done, with the source's
counters and the tables gold summed up; cancelled or failed when the driver stops it."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ray_backfill.executors.base import Executor, error_line
from ray_backfill.ledger import ChunkStatus, RunRecord

if TYPE_CHECKING:
    from ray_backfill.loop import Results


def record_results(record: RunRecord, executor: Executor, results: Results) -> None:
    """The loop's results in the record: the outcome, the source's side, what the tables hold."""
    record.outcome = "succeeded" if results.ok else "failed"
    record.source = _source_report(executor, record)
    if results.tables:
        record.tables = [s.to_json() for s in results.tables]


def mark_stopped(record: RunRecord, exc: BaseException) -> None:
    """The run's outcome when the driver stops it: cancelled (Ctrl-C, SIGTERM from `ray job stop`,
    whose SIGKILL follows in seconds, or another handler's sys.exit) or failed (the driver's own
    error). Idempotent."""
    if isinstance(exc, (KeyboardInterrupt, SystemExit)):  # SystemExit: a signal handler's sys.exit
        record.outcome = "cancelled"
        for task in record.tasks:
            if not task.status.is_terminal():
                task.move(ChunkStatus.CANCELLED, error=task.error or "cancelled")
    elif isinstance(exc, Exception):
        record.outcome = "failed"
        record.error = record.error or f"the driver failed: {error_line(exc)}"
        for task in record.tasks:
            if task.status == ChunkStatus.RUNNING:
                task.move(ChunkStatus.FAILED, error=record.error)


def _source_report(executor: Executor, record: RunRecord) -> dict | None:
    """The source's side of the run: the limiter's counters and the clients' totals."""
    stats = [t.metrics.get("source_stats") for t in record.by_stage("bronze") if t.metrics.get("source_stats")]
    snapshot = executor.limiter_snapshot()
    if not stats and snapshot is None:
        return None
    totals = {key: sum(s.get(key, 0) for s in stats)
              for key in ("requests", "weighted_calls", "retries", "responses_429", "transport_errors")}
    return {"limiter": snapshot, "clients": totals}
