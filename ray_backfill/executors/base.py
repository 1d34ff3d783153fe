"""What the scheduling loop needs from an executor: start tasks, wait for results, cancel."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Protocol

from ray_backfill.plan import Chunk


@dataclass(frozen=True)
class Task:
    """One attempt of one task: a bronze chunk, or a whole-range stage (prepare, silver, gold)."""

    task_id: str
    stage: str
    chunk: Chunk
    attempt: int


@dataclass
class TaskResult:
    """How an attempt ended; `error` is one line when `ok` is False."""

    ok: bool
    rows: int = 0
    seconds: float = 0.0
    error: str | None = None
    node_id: str | None = None
    peak_rss_mb: float | None = None
    session_seconds: float | None = None
    details: dict = field(default_factory=dict)


class Executor(Protocol):
    """Runs tasks; the loop in `ray_backfill.runner` decides what, when, and how often."""

    name: str
    slots: int  # attempts in flight at most

    def __enter__(self) -> "Executor": ...

    def __exit__(self, *exc) -> None: ...

    def start(self, task: Task) -> object:
        """Start an attempt; returns a handle."""

    def wait(self, handles: list[object], timeout_s: float) -> list[tuple[object, TaskResult]]:
        """The handles that finished within `timeout_s`, with their results."""

    def cancel(self, handles: list[object]) -> None:
        """Stop these attempts; their processes are gone when this returns."""


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
