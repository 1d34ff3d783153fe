"""The scheduling loop every executor shares.

prepare (create tables) → bronze chunks (fanned out, retried) → barrier → silver → gold → maintain
(opt-in: Iceberg table maintenance, ray_backfill/maintain.py).
Every state change is written to the run's ledger first, so `resume` can pick up after any stop,
including a killed driver. Silver and gold run only when every bronze chunk has succeeded, maintain
only when every task before it has.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import random
import signal
import time
from dataclasses import dataclass
from typing import Callable

from jobs.config import CatalogConfig
from jobs.context import StageInputs, load_inputs
from jobs.dates import Chunk
from jobs.inspect import TableSummary, format_summaries
from jobs.maintain import MaintainOptions, MaintainReport
from jobs.tasks import TASK_STAGES, Task
from ray_backfill.executors.base import Executor, TaskResult, error_line
from ray_backfill.ledger import (
    ChunkStatus,
    Heartbeat,
    RunLedger,
    RunRecord,
    TaskRecord,
    attempt_entry,
    check_no_live_driver,
    open_ledger,
    run_log_dir,
    take_lease,
)
from ray_backfill.maintain import RunExpiry, run_options
from ray_backfill.plan import new_record
from ray_backfill.progress import Flight, Progress, summary_table
from ray_backfill.report import render_html
from ray_backfill.request import BackfillRequest, resume_command
from ray_backfill.sessions import check_writers, ensure_warehouse


def _warehouse_text(catalog: CatalogConfig) -> str:
    return str(catalog.warehouse_path if catalog.warehouse_is_local else catalog.warehouse)


def make_executor(request: BackfillRequest, inputs: StageInputs, echo: Callable[[str], None]) -> Executor:
    if request.executor == "sequential":
        from ray_backfill.executors.sequential import SequentialExecutor

        return SequentialExecutor(request.settings, inputs, request.run_id)
    from ray_backfill.executors.ray import RayExecutor

    return RayExecutor(request.settings, request.run_id, address=request.address,
                       parallelism=request.parallelism, standby=request.standby,
                       chunk_timeout_s=request.chunk_timeout_s, echo=echo)


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with jitter between a failed attempt and its retry."""

    # the first retry waits base_s × U(jitter), each later one twice as long, up to cap_s
    base_s: float = 2.0
    cap_s: float = 60.0
    jitter: tuple[float, float] = (0.5, 1.0)

    def delay(self, failures: int) -> float:
        """Seconds before the retry that follows the `failures`-th failed attempt (1-based)."""
        return min(self.cap_s, self.base_s * 2 ** (failures - 1)) * random.uniform(*self.jitter)


def _raise_cancel(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


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
    record = record or new_record(request)
    check_no_live_driver(ledger, record)
    previous = signal.signal(signal.SIGTERM, _raise_cancel)  # `ray job stop` sends SIGTERM
    started = time.monotonic()
    try:
        with executor or make_executor(request, inputs, echo) as running:
            # ray.init puts in its own SIGTERM handler (sys.exit): ours, which cancels the run, goes back
            signal.signal(signal.SIGTERM, _raise_cancel)
            check_writers(settings.catalog, running.slots)
            _run_phases(request, record, running, ledger, progress or Progress(echo), echo, started, retry)
    finally:
        signal.signal(signal.SIGTERM, previous)
    return record


def _run_phases(request: BackfillRequest, record: RunRecord, executor: Executor, ledger: RunLedger,
                progress: Progress, echo: Callable[[str], None], started: float, retry: RetryPolicy) -> None:
    """prepare → bronze → barrier → silver → gold on a started executor; the ledger sees every step.

    Every exit leaves the ledger with an outcome: succeeded, failed (a task failed, or the driver
    raised: `record.error` says what), or cancelled (Ctrl-C, SIGTERM); attempts in flight are
    stopped first. Only a killed driver leaves none, and its heartbeat then goes stale.
    """
    take_lease(ledger, record)  # a resume re-runs whatever did not succeed
    heartbeat = Heartbeat(ledger, record).__enter__()
    echo(f"run {request.run_id}: {len(record.by_stage('bronze'))} bronze chunks, executor {request.executor}, "
         f"warehouse {_warehouse_text(request.settings.catalog)}, ledger {ledger.path(record.run_id)}")
    progress.start(record, executor.slots)
    try:
        check_no_live_driver(ledger, record, earlier_only=True)  # a run that started at the same moment
        loop = _Loop(request, record, executor, ledger, progress, retry)
        ok = True
        stages = TASK_STAGES
        for i, stage in enumerate(stages):  # each phase is a barrier for the next
            later = record.by_stage(stages[i + 1]) if i + 1 < len(stages) else []
            ok = ok and loop.phase(record.by_stage(stage), then=later)
        executor.upcoming([])  # nothing more will start: no standby waits in vain
        record.outcome = "succeeded" if ok else "failed"
        record.source = _source_report(executor, record)
        if loop.summary:
            record.tables = [s.to_json() for s in loop.summary]
    except BaseException as exc:
        _mark_stopped(record, exc)
        raise
    finally:
        heartbeat.__exit__()
        progress.close()
        record.finished_at = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
        record.stage_seconds["total"] = round(time.monotonic() - started, 2)
        ledger.save(record)
        report = _report(record)
        report_path = ledger.save_report(record.run_id, report)
        try:  # the page is for reading: a bug drawing it must not cost the run's closing lines
            page = render_html({**report, "settings": record.request["settings"]})
            report_path = ledger.save_report_html(record.run_id, page)
        except Exception as exc:
            echo(f"report.html not written ({error_line(exc)}); the report is in {report_path}")
        echo(summary_table(record))
        if record.tables:
            echo(format_summaries(record.tables))
        _closing_lines(request, record, report_path, echo)


def _mark_stopped(record: RunRecord, exc: BaseException) -> None:
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


def _report(record: RunRecord) -> dict:
    data = record.to_json()
    data.pop("request", None)
    data["request"] = {k: v for k, v in record.request.items() if k != "settings"}
    return data


def _logs_line(request: BackfillRequest, record: RunRecord) -> str:
    """Where the attempts' own output is."""
    where = run_log_dir(request.settings.catalog, record.run_id)
    if request.executor == "sequential":
        return f"  logs:    {where / 'session.log'} (the one session's output)" if where else "  logs:    -"
    if where is not None:
        return f"  logs:    {where} (one file per attempt)"
    return f"  logs:    each node's Ray log folder, ray-backfill/{record.run_id}/ (one file per attempt)"


def _closing_lines(request: BackfillRequest, record: RunRecord, report_path, echo) -> None:
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
             f"warehouse {_warehouse_text(catalog)}")
        echo(f"  report:  {report_path}")
        echo(_logs_line(request, record))
        return
    echo(f"run {record.run_id} {record.outcome} after {total:.1f}s")
    if record.error:
        echo(f"  {record.error}")
    for t in failed:
        echo(f"  {t.task_id}: {t.status.value} after {t.attempts} attempt(s): {t.error}")
    if any(t.stage == "bronze" for t in failed):
        echo("  silver and gold did not run: not every bronze chunk committed")
    echo(f"  report:  {report_path}")
    echo(_logs_line(request, record))
    echo(f"resume with: {resume_command(request)}")


@dataclass
class _InFlight:
    handle: object
    task: TaskRecord
    began: float  # epoch seconds


class _Loop:
    """Runs the tasks of one phase on the executor: bounded in flight, retried with backoff."""

    def __init__(self, request: BackfillRequest, record: RunRecord, executor: Executor, ledger: RunLedger,
                 progress: Progress, retry: RetryPolicy):
        self.request, self.record, self.executor = request, record, executor
        self.ledger, self.progress, self.retry = ledger, progress, retry
        self.summary: list[TableSummary] | None = None  # what gold reported the tables hold
        self._told: list | None = None  # the upcoming attempts last told to the executor
        self._shown = 0.0  # when the live display last learnt the attempts' phases
        self._phases: dict[str, str] = {}
        self._maintain: MaintainOptions | None = None  # the maintain task's cutoffs, found once
        self._expiry = RunExpiry(request.settings.catalog, ledger, record)  # docs/operations.md#long-runs-metadata

    def _event(self, task: TaskRecord, line: str, started: bool = False) -> None:
        self.ledger.event(self.record, task)
        self.executor.observe(self.record, task)
        self.progress.event(self.record, line, started=started)

    def _show(self, in_flight: dict[int, "_InFlight"]) -> None:
        """The live display's attempts in flight, with their phases (asked of the executor once a second)."""
        if not self.progress.live:
            return
        if time.monotonic() - self._shown >= 1.0:
            self._shown = time.monotonic()
            self._phases = self.executor.phases([f.handle for f in in_flight.values()])
        self.progress.flights([Flight(f.task.task_id, f.task.attempts, f.began,
                                      self._phases.get(f.task.task_id, "starting")) for f in in_flight.values()])

    def _attempt(self, task: TaskRecord) -> Task:
        """The task's next attempt."""
        chunk = Chunk(dt.date.fromisoformat(task.start), dt.date.fromisoformat(task.end))
        if task.stage == "maintain" and self._maintain is None:
            # once, so a standby started for the task matches it; still safe later: a run that
            # turns live after this look writes only files newer than it
            self._maintain = run_options(self.ledger, self.record)
        return Task(task.task_id, task.stage, chunk, task.attempts + 1, self.record.run_id,
                    self._maintain if task.stage == "maintain" else None)

    def _tell_upcoming(self, queue: list[TaskRecord], then: list[TaskRecord], running: int) -> None:
        """Tell the executor what starts next: this phase's queue, else the next phase's tasks.

        Told again when the list or the number of attempts in flight changes (a slot that frees
        up at a phase's tail is room for a standby)."""
        ahead = queue or [t for t in then if t.status != ChunkStatus.SUCCEEDED]
        key = [running, *((t.task_id, t.attempts) for t in ahead)]
        if key != self._told:
            self._told = key
            self.executor.upcoming([self._attempt(t) for t in ahead])

    def phase(self, tasks: list[TaskRecord], then: list[TaskRecord] = ()) -> bool:
        """Run every not-yet-succeeded task; True when all have succeeded.

        `then` are the next phase's tasks: the executor hears of them once this phase's last
        attempts are running (it may start their processes ahead; they begin only when started).
        """
        queue = [t for t in tasks if t.status != ChunkStatus.SUCCEEDED]
        tries: dict[str, int] = {}
        not_before: dict[str, float] = {}
        in_flight: dict[int, _InFlight] = {}
        stage_started = time.monotonic()
        try:
            while queue or in_flight:
                now = time.monotonic()
                while len(in_flight) < self.executor.slots:
                    task = next((t for t in queue if not_before.get(t.task_id, 0) <= now), None)
                    if task is None:
                        break
                    queue.remove(task)
                    tries[task.task_id] = tries.get(task.task_id, 0) + 1
                    attempt = self._attempt(task)
                    task.move(ChunkStatus.RUNNING, attempts=attempt.attempt)
                    self._event(task, f"  {task.task_id}: running (attempt {task.attempts})", started=True)
                    began = time.time()
                    handle = self.executor.start(attempt)
                    in_flight[id(handle)] = _InFlight(handle, task, began)
                self._tell_upcoming(queue, list(then), len(in_flight))
                for handle, result in self.executor.wait([f.handle for f in in_flight.values()], timeout_s=0.5):
                    flight = in_flight.pop(id(handle))
                    # wall-clock span of the attempt, for timelines, where the executor did not measure it
                    if result.started_at is None:
                        result.started_at = round(flight.began, 3)
                    if result.ended_at is None:
                        result.ended_at = round(time.time(), 3)
                    self._finish(flight.task, result, tries, not_before, queue)
                    self._expiry.after(flight.task, [f.began for f in in_flight.values()], not (queue or in_flight))
                self._show(in_flight)
                if not in_flight and queue:
                    time.sleep(min(0.5, max(0.0, min(not_before.get(t.task_id, 0) for t in queue) - time.monotonic())))
        except BaseException as exc:  # Ctrl-C, SIGTERM or the driver's own error: nothing keeps running
            # the ledger first: after `ray job stop`'s SIGTERM a SIGKILL comes within seconds
            _mark_stopped(self.record, exc)
            for flight in in_flight.values():  # the report's timeline shows where they were stopped
                flight.task.log_attempt(attempt_entry(flight.task.attempts, flight.task.status.value,
                                                      round(flight.began, 3), round(time.time(), 3)))
            if self.record.outcome:
                with contextlib.suppress(Exception):
                    self.ledger.save(self.record)
            self.executor.cancel([f.handle for f in in_flight.values()])
            raise
        finally:
            if tasks:
                stage = tasks[0].stage
                self.record.stage_seconds[stage] = round(
                    self.record.stage_seconds.get(stage, 0) + time.monotonic() - stage_started, 2)
        return all(t.status == ChunkStatus.SUCCEEDED for t in tasks)

    def _finish(self, task: TaskRecord, result: TaskResult, tries: dict[str, int], not_before: dict[str, float],
                queue: list[TaskRecord]) -> None:
        common = dict(seconds=result.seconds, node_id=result.node_id, peak_rss_mb=result.peak_rss_mb,
                      session_seconds=result.outcome.session_seconds if result.outcome else None,
                      metrics=result.metrics())
        if not result.ok:
            task.log_attempt(attempt_entry(
                task.attempts, "cancelled" if result.cancelled else "failed", result.started_at, result.ended_at,
                node_id=result.node_id, standby=result.standby, peak_rss_mb=result.peak_rss_mb, error=result.error))
        if result.ok:
            if result.outcome and result.outcome.summary is not None:
                self.summary = result.outcome.summary
            task.move(ChunkStatus.SUCCEEDED, rows=result.rows, error=None, **common)
            self._event(task, f"  {task.task_id}: succeeded, {result.rows:,} rows in {result.seconds:.1f}s")
        elif tries[task.task_id] <= self.request.retries and not result.cancelled and not result.permanent:
            wait = self.retry.delay(tries[task.task_id])
            not_before[task.task_id] = time.monotonic() + wait
            task.move(ChunkStatus.PENDING, error=result.error, **common)
            queue.append(task)
            self._event(task, f"  {task.task_id}: attempt {task.attempts} failed ({result.error}); retry in {wait:.1f}s")
        else:
            final = ChunkStatus.CANCELLED if result.cancelled else ChunkStatus.FAILED
            task.move(final, error=result.error, **common)
            why = " (permanent: not retried)" if result.permanent and not result.cancelled else ""
            self._event(task, f"  {task.task_id}: {final.value} after {task.attempts} attempt(s){why}: {result.error}")
