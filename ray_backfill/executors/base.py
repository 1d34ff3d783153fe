"""What the scheduling loop needs from an executor: start attempts, wait for results, cancel."""

from __future__ import annotations

import abc
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Generic, TypeVar

from jobs.errors import BackfillError
from jobs.tasks import Task, TaskOutcome

if TYPE_CHECKING:
    from ray_backfill.ledger import RunRecord, TaskRecord


@dataclass
class TaskResult:
    """How an attempt ended: `outcome` when it succeeded, else `error` (one line).

    `cancelled` says the attempt was stopped on purpose (cancel, Ctrl-C), not failed: it is not
    retried. `seconds` is the attempt's wall time; `started_at`/`ended_at` its span (epoch seconds).
    """

    ok: bool
    outcome: TaskOutcome | None = None
    error: str | None = None
    cancelled: bool = False
    seconds: float = 0.0
    node_id: str | None = None
    peak_rss_mb: float | None = None
    started_at: float | None = None
    ended_at: float | None = None
    # the attempt's own process, and whether it had started ahead of its turn (a standby)
    worker_pid: int | None = None
    standby: bool = False
    # another attempt cannot succeed (bad input, a request the source refuses): not retried
    permanent: bool = False
    # the attempt's own output (its process's logging, Spark's, the JVMs'), on its node
    log_path: str | None = None

    @property
    def rows(self) -> int:
        return self.outcome.rows if self.outcome else 0

    def metrics(self) -> dict:
        """The attempt's phase seconds, spans and source counters, as the ledger keeps them."""
        data: dict = {"started_at": self.started_at, "ended_at": self.ended_at, "worker_pid": self.worker_pid,
                      "standby": self.standby or None, "log": self.log_path}
        if self.outcome is not None:
            o = self.outcome
            data.update(fetch_seconds=o.fetch_seconds, write_seconds=o.write_seconds, stop_seconds=o.stop_seconds,
                        phases=o.phases, tables=o.tables, source_stats=o.source_stats,
                        maintenance=o.maintenance, spark_work=o.spark_work)
        return {k: v for k, v in data.items() if v is not None and v != {}}

    def to_json(self) -> dict:
        return {"ok": self.ok, "outcome": self.outcome.to_json() if self.outcome else None, "error": self.error,
                "cancelled": self.cancelled, "seconds": self.seconds, "node_id": self.node_id,
                "peak_rss_mb": self.peak_rss_mb, "started_at": self.started_at, "ended_at": self.ended_at,
                "worker_pid": self.worker_pid, "standby": self.standby, "permanent": self.permanent,
                "log_path": self.log_path}

    @classmethod
    def from_json(cls, data: dict) -> "TaskResult":
        data = dict(data)
        outcome = data.pop("outcome", None)
        return cls(outcome=TaskOutcome.from_json(outcome) if outcome else None, **data)


def is_permanent(exc: BaseException) -> bool:
    """Whether retrying the task cannot help: the project's errors say so (`permanent`); from
    Spark, a table or column that does not exist (an analysis error) is permanent too."""
    if getattr(exc, "permanent", False):
        return True
    text = str(exc)
    return type(exc).__name__ == "AnalysisException" and any(
        code in text for code in ("TABLE_OR_VIEW_NOT_FOUND", "SCHEMA_NOT_FOUND", "UNRESOLVED_COLUMN"))


def error_line(exc: BaseException) -> str:
    """An attempt's error as one line: the project's own message, else the exception's type and first line."""
    text = str(exc).strip()
    message = text.splitlines()[0] if text else type(exc).__name__
    if not isinstance(exc, BackfillError) and text:
        message = f"{type(exc).__name__}: {message}"
    return message[:500]


Handle = TypeVar("Handle")


class Executor(abc.ABC, Generic[Handle]):
    """Runs task attempts; the loop in `ray_backfill.loop` decides what, when, and how often.

    An executor is a context manager: resources (a Ray connection, a warm session) live between
    `__enter__` and `__exit__`. `slots` is how many attempts may be in flight at once.
    """

    name: str = "executor"
    slots: int = 1

    def __enter__(self) -> "Executor[Handle]":
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    @abc.abstractmethod
    def start(self, task: Task) -> Handle:
        """Start an attempt; returns its handle."""

    @abc.abstractmethod
    def wait(self, handles: list[Handle], timeout_s: float) -> list[tuple[Handle, TaskResult]]:
        """The handles that finished within `timeout_s`, with their results."""

    @abc.abstractmethod
    def cancel(self, handles: list[Handle]) -> None:
        """Stop these attempts; their processes are gone when this returns."""

    def upcoming(self, tasks: list[Task]) -> None:
        """The attempts the loop will start next, in order (the next phase's once this one's are
        all started). An executor may start their processes ahead (standbys); a task no longer
        listed has lost its turn and its standby may go. Default: nothing ahead."""

    def observe(self, record: "RunRecord", task: "TaskRecord") -> None:
        """Called after every state change the ledger saw (e.g. to export metrics)."""

    def limiter_snapshot(self) -> dict | None:
        """The run's source limiter: its limits and what it granted; None without one."""
        return None

    def phases(self, handles: list[Handle]) -> dict[str, str]:
        """What each attempt in flight is doing (task id -> phase), as far as the executor knows;
        for the live display. Default: nothing known."""
        return {}


def tree_rss_mb(pid: int) -> float:
    """Resident memory of a process and all its descendants, MiB."""
    import psutil

    total = 0
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return 0.0
    for proc in procs:
        try:
            total += proc.memory_info().rss
        except psutil.Error:
            continue
    return total / 2**20


class PeakRss:
    """Samples a process tree's RSS in a thread while the `with` block runs; `.peak_mb` after."""

    def __init__(self, pid: int, every_s: float = 0.25):
        self.pid, self.every_s, self.peak_mb = pid, every_s, 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak_mb = max(self.peak_mb, tree_rss_mb(self.pid))
            self._stop.wait(self.every_s)

    def __enter__(self) -> "PeakRss":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak_mb = round(max(self.peak_mb, tree_rss_mb(self.pid)), 1)
