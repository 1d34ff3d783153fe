"""The scheduling loop: the run's tasks in, their results out.

prepare → bronze chunks (fanned out, bounded in flight, retried with backoff) → barrier → silver →
gold → maintain (opt-in). Each phase is a barrier for the next: silver and gold run only when every
bronze chunk has succeeded, maintain only when every task before it has. Every state change goes
to the ledger first, so `resume` can pick up after any stop, including a killed driver.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import random
import time
from dataclasses import dataclass, field

from jobs.dates import Chunk
from jobs.inspect import TableSummary
from jobs.maintain import MaintainOptions
from jobs.tasks import TASK_STAGES, Task
from ray_backfill.executors.base import Executor, TaskResult
from ray_backfill.ledger import ChunkStatus, RunLedger, RunRecord, TaskRecord, attempt_entry
from ray_backfill.maintain import RunExpiry, run_options
from ray_backfill.outcome import mark_stopped
from ray_backfill.progress import Flight, Progress
from ray_backfill.request import BackfillRequest


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


@dataclass(frozen=True)
class Results:
    """What the loop hands back: whether every task succeeded, and what gold reported the tables hold."""

    ok: bool
    tables: list[TableSummary] | None = None


def run_tasks(request: BackfillRequest, record: RunRecord, executor: Executor, ledger: RunLedger,
              progress: Progress, retry: RetryPolicy) -> Results:
    """Every phase of the run, in order, on a started executor; the record's tasks move as they run."""
    loop = _Loop(request, record, executor, ledger, progress, retry)
    ok = True
    for i, stage in enumerate(TASK_STAGES):  # each phase is a barrier for the next
        later = record.by_stage(TASK_STAGES[i + 1]) if i + 1 < len(TASK_STAGES) else []
        ok = ok and loop.phase(record.by_stage(stage), then=later)
    executor.upcoming([])  # nothing more will start: no standby waits in vain
    return Results(ok, loop.summary)


@dataclass
class _InFlight:
    handle: object
    task: TaskRecord
    began: float  # epoch seconds


@dataclass
class _Phase:
    """One phase's tasks while it runs: those waiting, tries so far, retry times, those in flight."""

    queue: list[TaskRecord]
    tries: dict[str, int] = field(default_factory=dict)
    not_before: dict[str, float] = field(default_factory=dict)  # monotonic time a retry may start
    in_flight: dict[int, _InFlight] = field(default_factory=dict)


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

    def _show(self, in_flight: dict[int, _InFlight]) -> None:
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
        state = _Phase([t for t in tasks if t.status != ChunkStatus.SUCCEEDED])
        stage_started = time.monotonic()
        try:
            while state.queue or state.in_flight:
                self._fill_slots(state)
                self._tell_upcoming(state.queue, list(then), len(state.in_flight))
                self._collect(state)
                self._show(state.in_flight)
                if not state.in_flight and state.queue:
                    time.sleep(min(0.5, max(0.0, min(state.not_before.get(t.task_id, 0) for t in state.queue)
                                            - time.monotonic())))
        except BaseException as exc:  # Ctrl-C, SIGTERM or the driver's own error: nothing keeps running
            self._stop(state.in_flight, exc)
            raise
        finally:
            if tasks:
                stage = tasks[0].stage
                self.record.stage_seconds[stage] = round(
                    self.record.stage_seconds.get(stage, 0) + time.monotonic() - stage_started, 2)
        return all(t.status == ChunkStatus.SUCCEEDED for t in tasks)

    def _fill_slots(self, state: _Phase) -> None:
        """Start waiting tasks whose retry time has come while the executor has free slots."""
        now = time.monotonic()
        while len(state.in_flight) < self.executor.slots:
            task = next((t for t in state.queue if state.not_before.get(t.task_id, 0) <= now), None)
            if task is None:
                break
            state.queue.remove(task)
            state.tries[task.task_id] = state.tries.get(task.task_id, 0) + 1
            attempt = self._attempt(task)
            task.move(ChunkStatus.RUNNING, attempts=attempt.attempt)
            self._event(task, f"  {task.task_id}: running (attempt {task.attempts})", started=True)
            began = time.time()
            handle = self.executor.start(attempt)
            state.in_flight[id(handle)] = _InFlight(handle, task, began)

    def _collect(self, state: _Phase) -> None:
        """The attempts that finished within half a second, recorded."""
        for handle, result in self.executor.wait([f.handle for f in state.in_flight.values()], timeout_s=0.5):
            flight = state.in_flight.pop(id(handle))
            # wall-clock span of the attempt, for timelines, where the executor did not measure it
            if result.started_at is None:
                result.started_at = round(flight.began, 3)
            if result.ended_at is None:
                result.ended_at = round(time.time(), 3)
            self._finish(flight.task, result, state)
            self._expiry.after(flight.task, [f.began for f in state.in_flight.values()],
                               not (state.queue or state.in_flight))

    def _stop(self, in_flight: dict[int, _InFlight], exc: BaseException) -> None:
        """The run stopped mid-phase: its outcome saved first (after `ray job stop`'s SIGTERM a
        SIGKILL comes within seconds), then the attempts in flight stopped."""
        mark_stopped(self.record, exc)
        for flight in in_flight.values():  # the report's timeline shows where they were stopped
            flight.task.log_attempt(attempt_entry(flight.task.attempts, flight.task.status.value,
                                                  round(flight.began, 3), round(time.time(), 3)))
        if self.record.outcome:
            with contextlib.suppress(Exception):
                self.ledger.save(self.record)
        self.executor.cancel([f.handle for f in in_flight.values()])

    def _finish(self, task: TaskRecord, result: TaskResult, state: _Phase) -> None:
        """An attempt's result: the task succeeded, waits for its retry, or failed for good."""
        common = dict(seconds=result.seconds, node_id=result.node_id, peak_rss_mb=result.peak_rss_mb,
                      session_seconds=result.outcome.session_seconds if result.outcome else None,
                      metrics=result.metrics())
        if not result.ok:
            task.log_attempt(attempt_entry(
                task.attempts, "cancelled" if result.cancelled else "failed", result.started_at, result.ended_at,
                node_id=result.node_id, standby=result.standby, peak_rss_mb=result.peak_rss_mb, error=result.error))
        tries = state.tries[task.task_id]
        if result.ok:
            if result.outcome and result.outcome.summary is not None:
                self.summary = result.outcome.summary
            task.move(ChunkStatus.SUCCEEDED, rows=result.rows, error=None, **common)
            self._event(task, f"  {task.task_id}: succeeded, {result.rows:,} rows in {result.seconds:.1f}s")
        elif tries <= self.request.retries and not result.cancelled and not result.permanent:
            wait = self.retry.delay(tries)
            state.not_before[task.task_id] = time.monotonic() + wait
            task.move(ChunkStatus.PENDING, error=result.error, **common)
            state.queue.append(task)
            self._event(task, f"  {task.task_id}: attempt {task.attempts} failed ({result.error}); retry in {wait:.1f}s")
        else:
            final = ChunkStatus.CANCELLED if result.cancelled else ChunkStatus.FAILED
            task.move(final, error=result.error, **common)
            why = " (permanent: not retried)" if result.permanent and not result.cancelled else ""
            self._event(task, f"  {task.task_id}: {final.value} after {task.attempts} attempt(s){why}: {result.error}")
