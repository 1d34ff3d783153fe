"""The baseline: the old design, kept to compare against.

One long-lived Spark session in the driver process runs every bronze chunk one after another,
then silver and gold in that same session, and the source is asked one request at a time, as
the old tool did. Same job code, same tables, same source limits as the Ray executor.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import time
from dataclasses import dataclass

from jobs import bronze
from jobs.context import StageInputs
from jobs.inspect import summarize
from jobs.sources.limits import LocalThrottle, RateLimiter
from jobs.stages import build_source, run_stage_range
from jobs.tables import ensure_tables
from ray_backfill.config import Settings
from ray_backfill.errors import BackfillError
from ray_backfill.executors.base import PeakRss, Task, TaskResult
from ray_backfill.sessions import spark_session


class SequentialExecutor:
    """Runs every task in one shared session, in order, in this process."""

    name = "sequential"
    slots = 1

    def __init__(self, settings: Settings, inputs: StageInputs, run_id: str):
        self.settings = settings
        self.inputs = inputs
        self.run_id = run_id
        self.spark = None
        self._stack = contextlib.ExitStack()
        source = settings.source
        self._limiter = (RateLimiter(source.limits, lease_ttl_s=source.timeout_s + 30)
                         if source.kind == "open-meteo" and not source.limits.is_unlimited else None)

    def __enter__(self) -> "SequentialExecutor":
        self.spark = self._stack.enter_context(spark_session(self.settings, f"backfill-{self.run_id}"))
        return self

    def __exit__(self, *exc) -> None:
        self._stack.close()
        self.spark = None

    def start(self, task: Task) -> "_Done":
        with PeakRss(os.getpid()) as rss:  # the driver and its JVM: the memory the old design grew
            result = self._run(task)
        result.peak_rss_mb = rss.peak_mb
        return _Done(task, result)

    def _run(self, task: Task) -> TaskResult:
        started = time.monotonic()
        stats = None
        phase_seconds: dict[str, float] = {}
        try:
            if task.stage == "prepare":
                ensure_tables(self.spark, self.settings.catalog)
                rows = 0
            elif task.stage == "bronze":
                source = self._source()
                try:
                    written = bronze.run_chunk(self.spark, self.settings, source, task.chunk, self.inputs.locations,
                                               self.inputs.variables, self.run_id)
                    rows = written.rows
                    phase_seconds = {"fetch_seconds": round(written.fetch_seconds, 2),
                                     "write_seconds": round(written.write_seconds, 2)}
                finally:
                    stats = getattr(source, "stats", None)
                    if stats is not None:
                        source.close()
            else:
                rows = sum(run_stage_range(task.stage, self.spark, self.settings, task.chunk, self.inputs,
                                           self.run_id).values())
            result = TaskResult(ok=True, rows=rows)
            result.details.update(phase_seconds)
            if stats is not None:
                result.details["source_stats"] = dataclasses.asdict(stats)
            if task.stage == "gold":
                result.details["summary"] = [s.to_json() for s in summarize(self.spark, self.settings.catalog)]
        except (BackfillError, OSError) as exc:
            result = TaskResult(ok=False, error=str(exc).splitlines()[0])
        except Exception as exc:  # a Spark error in the shared session; the loop decides on retries
            result = TaskResult(ok=False, error=f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}")
        result.seconds = round(time.monotonic() - started, 2)
        return result

    def _source(self):
        """A source asking one request at a time, under the run's limits."""
        source = self.settings.source
        if source.kind != "open-meteo":
            return build_source(source)
        throttle = LocalThrottle(self._limiter, holder="sequential") if self._limiter else None
        return build_source(dataclasses.replace(source, concurrency=1), throttle)

    def limiter_snapshot(self) -> dict | None:
        """The limiter's limits and counters, for the run report."""
        return self._limiter.snapshot() if self._limiter else None

    def wait(self, handles: list["_Done"], timeout_s: float) -> list[tuple["_Done", TaskResult]]:
        return [(h, h.result) for h in handles]

    def cancel(self, handles) -> None:
        """Nothing runs in the background: a task in progress is interrupted by Ctrl-C itself."""


@dataclass(eq=False)
class _Done:
    """A finished attempt: the sequential executor runs it inside `start`."""

    task: Task
    result: TaskResult
