"""The baseline: the old design, kept to compare against.

One long-lived Spark session in the driver process runs every bronze chunk one after another,
then silver and gold in that same session, and the source is asked one request at a time, as
the old tool did. Same task runner, same tables, same source limits as the Ray executor.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import time
from dataclasses import dataclass
from pathlib import Path

from jobs.config import Settings
from jobs.context import StageInputs
from jobs.limits import LocalThrottle, RateLimiter
from jobs.tasks import Task, run_task, warm_session
from ray_backfill.executors.base import Executor, PeakRss, TaskResult, error_line, is_permanent
from ray_backfill.ledger import run_log_dir
from ray_backfill.sessions import spark_session


@dataclass(eq=False)
class _Done:
    """A finished attempt: the sequential executor runs it inside `start`."""

    task: Task
    result: TaskResult


class SequentialExecutor(Executor[_Done]):
    """Runs every task in one shared session, in order, in this process."""

    name = "sequential"
    slots = 1

    def __init__(self, settings: Settings, inputs: StageInputs, run_id: str):
        source = settings.source
        if source.kind == "open-meteo":  # one request at a time, as the old flow asked
            settings = settings.replace(source=dataclasses.replace(source, concurrency=1))
        self.settings = settings
        self.inputs = inputs
        self.run_id = run_id
        self.spark = None
        self._log: Path | None = None  # the session's output
        self._stack = contextlib.ExitStack()
        self._limiter = (RateLimiter(source.limits, lease_ttl_s=source.timeout_s + 30)
                         if source.kind == "open-meteo" and not source.limits.is_unlimited else None)

    def __enter__(self) -> "SequentialExecutor":
        logs = run_log_dir(self.settings.catalog, self.run_id)
        self._log = logs / "session.log" if logs else None
        self.spark = self._stack.enter_context(spark_session(self.settings, f"backfill-{self.run_id}",
                                                             log_path=self._log))
        return self

    def __exit__(self, *exc) -> None:
        self._stack.close()
        self.spark = None

    def start(self, task: Task) -> _Done:
        started, began = time.monotonic(), time.time()
        throttle = LocalThrottle(self._limiter, holder="sequential") if self._limiter else None
        with PeakRss(os.getpid()) as rss:  # the driver and its JVM: the memory the old design grew
            try:
                outcome = run_task(task, self.settings, self.inputs, warm_session(self.spark), throttle=throttle)
                result = TaskResult(ok=True, outcome=outcome)
            except Exception as exc:  # a failed task leaves the shared session up; the loop decides on retries
                result = TaskResult(ok=False, error=error_line(exc), permanent=is_permanent(exc))
        result.seconds = round(time.monotonic() - started, 2)
        result.started_at, result.ended_at = round(began, 3), round(time.time(), 3)
        result.peak_rss_mb = rss.peak_mb
        result.log_path = str(self._log) if self._log else None
        return _Done(task, result)

    def limiter_snapshot(self) -> dict | None:
        """The limiter's limits and counters, for the run report."""
        return self._limiter.snapshot() if self._limiter else None

    def wait(self, handles: list[_Done], timeout_s: float) -> list[tuple[_Done, TaskResult]]:
        return [(h, h.result) for h in handles]

    def cancel(self, handles: list[_Done]) -> None:
        """Nothing runs in the background: a task in progress is interrupted by Ctrl-C itself."""
