"""A backfill run, end to end: resolve → plan → lock → loop → record → report.

  resolve  request.py    build_request / resume_request: flags, env and file, validated once (the CLI)
  plan     plan.py       new_record: the run's tasks, its ledger's first record (a resume brings its own)
  lock     ledger/lease  check_no_live_driver, take_lease, Heartbeat: one driver per run, no overlap
  loop     loop.py       run_tasks: the tasks in, results out (phases, barrier, retries)
  record   outcome.py    record_results, or mark_stopped when the driver stops it
  report   closing.py    close_run: the ledger's last write, report.json and .html, the closing lines

Every state change is written to the run's ledger first, so `resume` can pick up after any stop,
including a killed driver.
"""

from __future__ import annotations

import time
from typing import Callable

from jobs.context import StageInputs, load_inputs
from ray_backfill.closing import close_run
from ray_backfill.executors.base import Executor
from ray_backfill.ledger import Heartbeat, RunLedger, RunRecord, check_no_live_driver, open_ledger, take_lease
from ray_backfill.loop import RetryPolicy, run_tasks
from ray_backfill.outcome import mark_stopped, record_results
from ray_backfill.plan import new_record
from ray_backfill.progress import Progress
from ray_backfill.request import BackfillRequest
from ray_backfill.run_text import start_line
from ray_backfill.sessions import check_writers, ensure_warehouse
from ray_backfill.signals import sigterm_cancels


def run_backfill(request: BackfillRequest, record: RunRecord | None = None,
                 echo: Callable[[str], None] = print, progress: Progress | None = None,
                 ledger: RunLedger | None = None, executor: Executor | None = None,
                 retry: RetryPolicy = RetryPolicy()) -> RunRecord:
    """Run (or resume, given its record and the ledger it came from) a backfill; returns the final record.

    The executor starts before the ledger is written, so a run it refuses (ConfigError: e.g. a
    catalog the cluster's hosts cannot share) leaves no record behind. `executor` replaces the one
    the request names (tests hand in an in-memory one).
    """
    settings = request.settings
    inputs = load_inputs(settings.pipeline)
    ensure_warehouse(settings.catalog)
    ledger = ledger or open_ledger(settings.catalog)
    record = record or new_record(request)  # plan
    check_no_live_driver(ledger, record)  # lock: refused before anything starts
    started = time.monotonic()
    with sigterm_cancels() as rearm, executor or make_executor(request, inputs, echo) as running:
        rearm()  # ray.init puts in its own SIGTERM handler (sys.exit): ours, which cancels the run, goes back
        check_writers(settings.catalog, running.slots)
        _run_started(request, record, running, ledger, progress or Progress(echo), echo, started, retry)
    return record


def _run_started(request: BackfillRequest, record: RunRecord, executor: Executor, ledger: RunLedger,
                 progress: Progress, echo: Callable[[str], None], started: float, retry: RetryPolicy) -> None:
    """lock → loop → record → report on a started executor; the ledger sees every step.

    Every exit leaves the ledger with an outcome: succeeded, failed (a task failed, or the driver
    raised: `record.error` says what), or cancelled (Ctrl-C, SIGTERM); attempts in flight are
    stopped first. Only a killed driver leaves none, and its heartbeat then goes stale.
    """
    take_lease(ledger, record)  # lock: this driver's, written to the ledger
    try:
        with Heartbeat(ledger, record):  # ... and kept fresh while the run runs
            try:
                echo(start_line(request, record, ledger))
                progress.start(record, executor.slots)
                check_no_live_driver(ledger, record, earlier_only=True)  # a run that started at the same moment
                results = run_tasks(request, record, executor, ledger, progress, retry)  # loop
                record_results(record, executor, results)  # record
            except BaseException as exc:
                mark_stopped(record, exc)  # record: cancelled or failed
                raise
    finally:
        progress.close()
        close_run(request, record, ledger, started, echo)  # report


def make_executor(request: BackfillRequest, inputs: StageInputs, echo: Callable[[str], None]) -> Executor:
    """The executor the request names, not yet started."""
    if request.executor == "sequential":
        from ray_backfill.executors.sequential import SequentialExecutor

        return SequentialExecutor(request.settings, inputs, request.run_id)
    from ray_backfill.executors.ray import RayExecutor

    return RayExecutor(request.settings, request.run_id, address=request.address,
                       parallelism=request.parallelism, standby=request.standby,
                       chunk_timeout_s=request.chunk_timeout_s, echo=echo)
