"""One task of a backfill, run in a session handed in: the one runner every executor and the stage
command call.

A task is `prepare` (create the tables), one bronze chunk, silver or gold over a range, or the
opt-in `maintain` after gold (jobs/maintain.py). How
the session is made is the caller's business (a fresh RayDP session per chunk, the baseline's
one warm session): `open_session` returns a context manager that yields it. Bronze asks the
source while the session starts.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import logging
import time
from dataclasses import dataclass, field
from typing import Callable, ContextManager, Literal

from pyspark.sql import SparkSession

from jobs import bronze, gold, silver
from jobs.config import Settings, SourceConfig
from jobs.context import StageInputs
from jobs.dates import Chunk
from jobs.inspect import TableSummary, summarize
from jobs.limits import Throttle
from jobs.maintain import MaintainOptions, maintain
from jobs.sources import Source
from jobs.tables import BRONZE, ensure_tables

log = logging.getLogger(__name__)

TaskStage = Literal["prepare", "bronze", "silver", "gold", "maintain"]
# The stages that write data, in pipeline order; `prepare` runs before them, `maintain` (opt-in) after.
DATA_STAGES: tuple[TaskStage, ...] = ("bronze", "silver", "gold")
TASK_STAGES: tuple[TaskStage, ...] = ("prepare", *DATA_STAGES, "maintain")

SessionFactory = Callable[[], ContextManager[SparkSession]]
# Called at "start", "before_write" and "stop" (the session is about to stop): the fault drills of
# the tests hook in here, and the worker tells its supervisor the task's phase.
Checkpoint = Callable[[str], None]


@dataclass(frozen=True)
class Task:
    """One attempt of one task: a bronze chunk, or a whole-range stage (prepare, silver, gold, maintain)."""

    task_id: str
    stage: TaskStage
    chunk: Chunk
    attempt: int
    run_id: str
    # maintain only: its cutoffs, which the driver derives from the live runs' ledgers
    maintain: MaintainOptions | None = None

    def __post_init__(self) -> None:
        if self.stage not in TASK_STAGES:
            raise ValueError(f"task {self.task_id}: unknown stage {self.stage!r}")
        if (self.stage == "maintain") != (self.maintain is not None):
            raise ValueError(f"task {self.task_id}: maintenance options go with the maintain stage only")

    def to_json(self) -> dict:
        return {"task_id": self.task_id, "stage": self.stage, "chunk": self.chunk.to_json(),
                "attempt": self.attempt, "run_id": self.run_id,
                "maintain": self.maintain.to_json() if self.maintain else None}

    @classmethod
    def from_json(cls, data: dict) -> "Task":
        options = data.get("maintain")
        return cls(data["task_id"], data["stage"], Chunk.from_json(data["chunk"]), int(data["attempt"]),
                   data["run_id"], MaintainOptions.from_json(options) if options else None)


@dataclass
class TaskOutcome:
    """What a task that succeeded did, phase by phase."""

    rows: int = 0
    # rows written per table, "namespace.table" -> rows
    tables: dict[str, int] = field(default_factory=dict)
    # seconds until the session was up, of the source fetch, the commit, the session's stop
    session_seconds: float | None = None
    fetch_seconds: float | None = None
    write_seconds: float | None = None
    stop_seconds: float | None = None
    # wall-clock [start, end] (epoch seconds) of each phase, for timelines
    phases: dict[str, list[float]] = field(default_factory=dict)
    # the source client's counters (requests, weighted calls, retries, 429s) as plain data
    source_stats: dict | None = None
    # what the lakehouse holds after gold
    summary: list[TableSummary] | None = None
    # maintain: files, bytes and snapshots before and after (MaintainReport.to_json)
    maintenance: dict | None = None
    # the Spark work the stage ran: jobs, stages (skipped ones too) and tasks (`spark_work`)
    spark_work: dict | None = None

    def to_json(self) -> dict:
        data = dataclasses.asdict(self)
        data["summary"] = [s.to_json() for s in self.summary] if self.summary is not None else None
        return data

    @classmethod
    def from_json(cls, data: dict) -> "TaskOutcome":
        data = dict(data)
        if data.get("summary") is not None:
            data["summary"] = [TableSummary.from_json(s) for s in data["summary"]]
        return cls(**data)


def build_source(cfg: SourceConfig, throttle: Throttle | None = None) -> Source:
    """The configured source: the built-in synthetic one, or the Open-Meteo HTTP client that asks
    `throttle` (the run's shared limiter) before every request."""
    if cfg.kind == "synthetic":
        from jobs.sources.synthetic import SyntheticSource

        return SyntheticSource(seed=cfg.seed)
    from jobs.sources.openmeteo import OpenMeteoClient

    return OpenMeteoClient.from_config(cfg, throttle)


def _no_checkpoint(point: str) -> None:
    return None


def _span(began: float) -> list[float]:
    return [round(began, 3), round(time.time(), 3)]


def run_task(task: Task, settings: Settings, inputs: StageInputs, open_session: SessionFactory, *,
             throttle: Throttle | None = None, checkpoint: Checkpoint = _no_checkpoint) -> TaskOutcome:
    """Run one task in the session `open_session` yields; raises whatever the stage raised."""
    checkpoint("start")
    out = TaskOutcome()
    started, began = time.monotonic(), time.time()
    source = build_source(settings.source, throttle) if task.stage == "bronze" else None
    try:
        with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
            fetching = None
            if source is not None:
                fetching = pool.submit(bronze.fetch_chunk, source, task.chunk, inputs.locations, inputs.variables)
            with open_session() as spark:
                out.session_seconds = round(time.monotonic() - started, 2)
                out.phases["session_start"] = _span(began)
                jobs_before = _last_job_id(spark)
                _run_stage(task, spark, settings, inputs, out, fetching, began, checkpoint)
                out.spark_work = spark_work(spark, after_job=jobs_before)
                log.info("%s: spark work %s", task.task_id,
                         ", ".join(f"{n} {what}" for what, n in out.spark_work.items()))
                checkpoint("stop")
                stop_started, stop_began = time.monotonic(), time.time()
            out.stop_seconds = round(time.monotonic() - stop_started, 2)
            out.phases["session_stop"] = _span(stop_began)
    finally:
        if source is not None:
            out.source_stats = dataclasses.asdict(source.stats) if source.stats is not None else None
            source.close()
    return out


def _last_job_id(spark: SparkSession) -> int:
    """The newest Spark job the session knows of (-1 for none): a warm session's earlier tasks' jobs."""
    return max(spark.sparkContext.statusTracker().getJobIdsForGroup(None), default=-1)


def spark_work(spark: SparkSession, after_job: int = -1) -> dict[str, int]:
    """The Spark jobs the session ran after job `after_job`, their stages (skipped ones, whose output
    an earlier stage had, included) and tasks, from Spark's status tracker: what a stage pays Spark's
    per-job and per-stage overhead for (the README's performance section)."""
    tracker = spark.sparkContext.statusTracker()
    jobs = [j for j in tracker.getJobIdsForGroup(None) if j > after_job]
    stages: set[int] = set()
    for job in jobs:
        info = tracker.getJobInfo(job)
        stages.update(info.stageIds if info is not None else ())
    tasks = 0
    for stage in stages:
        info = tracker.getStageInfo(stage)
        tasks += info.numTasks if info is not None else 0
    return {"jobs": len(jobs), "stages": len(stages), "tasks": tasks}


def _run_stage(task: Task, spark: SparkSession, settings: Settings, inputs: StageInputs, out: TaskOutcome,
               fetching: concurrent.futures.Future | None, began: float, checkpoint: Checkpoint) -> None:
    if task.stage == "prepare":
        ensure_tables(spark, settings.catalog)
        return
    if task.stage == "bronze":
        fetched = fetching.result()
        out.fetch_seconds = round(fetched.fetch_seconds, 2)
        out.phases["fetch"] = [round(began, 3), round(began + fetched.fetch_seconds, 3)]  # began with the task
        write_began = time.time()
        checkpoint("before_write")
        written = bronze.write_chunk(spark, settings, fetched, inputs.location_keys, task.run_id)
        out.rows, out.tables = written.rows, {BRONZE.full_name: written.rows}
        out.write_seconds = round(written.write_seconds, 2)
        out.phases["write"] = _span(write_began)
        return
    checkpoint("before_write")
    work_began = time.time()
    if task.stage == "maintain":
        out.maintenance = maintain(spark, settings.catalog, task.maintain).to_json()
        out.phases["work"] = _span(work_began)
        return
    stage = silver if task.stage == "silver" else gold
    out.tables = stage.run(spark, settings, task.chunk, inputs, task.run_id)
    out.rows = sum(out.tables.values())
    out.phases["work"] = _span(work_began)
    if task.stage == "gold":  # the last stage tells what the lakehouse now holds
        out.summary = summarize(spark, settings.catalog)


def warm_session(spark: SparkSession) -> SessionFactory:
    """A session factory that hands out one running session and leaves it running."""
    return lambda: contextlib.nullcontext(spark)
