"""What the scheduling loop needs from an executor: start tasks, wait for results, cancel."""

from __future__ import annotations

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
