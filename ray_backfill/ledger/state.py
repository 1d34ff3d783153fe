"""A run's state and its legal changes: chunk states, attempts, rows, seconds, errors, heartbeat.

Pure: no I/O, no knowledge of where a run is kept (`store.py`, `RunLedger`); `to_json` and
`from_json` give and take the fields of the on-disk format, whose version `codec.py` checks.
"""

from __future__ import annotations

import datetime as dt
import re
import uuid
from dataclasses import asdict, dataclass, field
from enum import Enum
from typing import Any

from jobs.errors import IllegalTransition, InputError
from ray_backfill.ledger import codec


class ChunkStatus(str, Enum):
    """State of a chunk or stage. Terminal: succeeded, failed, cancelled."""

    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    def is_terminal(self) -> bool:
        return self in (ChunkStatus.SUCCEEDED, ChunkStatus.FAILED, ChunkStatus.CANCELLED)

    def can_become(self, new: "ChunkStatus") -> bool:
        """Legal transitions; a retry goes running → pending, a resume any non-success → pending."""
        return new in _TRANSITIONS[self]


_TRANSITIONS = {
    ChunkStatus.PENDING: {ChunkStatus.RUNNING, ChunkStatus.CANCELLED, ChunkStatus.SUCCEEDED},
    ChunkStatus.RUNNING: {ChunkStatus.SUCCEEDED, ChunkStatus.FAILED, ChunkStatus.CANCELLED, ChunkStatus.PENDING},
    ChunkStatus.FAILED: {ChunkStatus.PENDING},
    ChunkStatus.CANCELLED: {ChunkStatus.PENDING},
    ChunkStatus.SUCCEEDED: set(),
}


RUN_ID_PATTERN = re.compile(r"\d{8}T\d{6}Z-[0-9a-f]{6}")


def new_run_id() -> str:
    """A sortable, unique run id: UTC time plus a random suffix."""
    return f"{dt.datetime.now(dt.timezone.utc):%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:6]}"


def check_run_id(run_id: str) -> str:
    """The run id, or InputError: ids are `YYYYMMDDTHHMMSSZ-xxxxxx`, never a path."""
    if not isinstance(run_id, str) or not RUN_ID_PATTERN.fullmatch(run_id):
        raise InputError(f"run id {run_id!r} is not a run id (like 20240101T000000Z-1a2b3c; "
                         "`ray-backfill status` lists them)")
    return run_id


def utcnow() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


HISTORY_KEPT = 10


def attempt_entry(attempt: int, status: str, started_at: float | None, ended_at: float | None, *,
                  node_id: str | None = None, standby: bool = False, peak_rss_mb: float | None = None,
                  error: str | None = None) -> dict:
    """One attempt as `TaskRecord.history` keeps it (for the report's timeline): span, where, how it ended."""
    entry = {"attempt": attempt, "status": status, "started_at": started_at, "ended_at": ended_at,
             "node_id": node_id, "standby": standby or None, "peak_rss_mb": peak_rss_mb,
             "error": error[:200] if error else None}
    return {k: v for k, v in entry.items() if v is not None}


@dataclass
class TaskRecord:
    """One bronze chunk, or a whole-range stage (`prepare`, `silver`, `gold`)."""

    task_id: str
    stage: str
    start: str
    end: str
    status: ChunkStatus = ChunkStatus.PENDING
    attempts: int = 0
    rows: int = 0
    seconds: float = 0.0
    error: str | None = None
    node_id: str | None = None
    peak_rss_mb: float | None = None
    session_seconds: float | None = None
    # the last attempt's phase seconds (fetch, write, stop) and source counters
    metrics: dict = field(default_factory=dict)
    # the attempts that did not succeed, oldest first, each in a few fields (`attempt_entry`); at most
    # HISTORY_KEPT, so an event's size stays bounded however often a chunk is retried or resumed
    history: list[dict] = field(default_factory=list)
    updated_at: str = field(default_factory=utcnow)

    def move(self, new: ChunkStatus, **changes: Any) -> None:
        """Change state, or raise IllegalTransition."""
        if new != self.status and not self.status.can_become(new):
            raise IllegalTransition(f"task {self.task_id}: cannot go from {self.status.value} to {new.value}")
        self.status = new
        for key, value in changes.items():
            setattr(self, key, value)
        self.updated_at = utcnow()

    def log_attempt(self, entry: dict) -> None:
        """Keep an attempt that did not succeed (`attempt_entry`), dropping the oldest past HISTORY_KEPT."""
        self.history = [*self.history, entry][-HISTORY_KEPT:]

    def to_json(self) -> dict:
        data = asdict(self)
        data["status"] = self.status.value
        return data

    @classmethod
    def from_json(cls, data: dict) -> "TaskRecord":
        data = dict(data)
        data["status"] = ChunkStatus(data["status"])
        return cls(**data)


@dataclass
class RunRecord:
    """A run: its request (to resume it) and its tasks, in plan order."""

    run_id: str
    request: dict
    tasks: list[TaskRecord]
    created_at: str = field(default_factory=utcnow)
    finished_at: str | None = None
    outcome: str | None = None  # succeeded | failed | cancelled
    stage_seconds: dict[str, float] = field(default_factory=dict)
    tables: list[dict] | None = None  # rows and span per table after the run, from gold
    source: dict | None = None  # the run's source limiter: limits and what it granted
    driver: dict | None = None  # the driver writing the record: host, pid
    heartbeat_at: str | None = None  # the driver's last sign of life (UTC, ISO)
    error: str | None = None  # what ended the run when it was not a task (the driver's own error)
    seq: int = 0  # events written so far; the snapshot holds those up to `seq`

    def task(self, task_id: str) -> TaskRecord:
        return next(t for t in self.tasks if t.task_id == task_id)

    def by_stage(self, stage: str) -> list[TaskRecord]:
        return [t for t in self.tasks if t.stage == stage]

    def to_json(self) -> dict:
        """The record's fields as the ledger's current format writes them (`codec`), version included."""
        return {
            "version": codec.LEDGER_VERSION, "run_id": self.run_id, "created_at": self.created_at,
            "finished_at": self.finished_at, "outcome": self.outcome, "stage_seconds": self.stage_seconds,
            "tables": self.tables, "source": self.source, "request": self.request,
            "tasks": [t.to_json() for t in self.tasks],
            "driver": self.driver, "heartbeat_at": self.heartbeat_at, "error": self.error, "seq": self.seq,
        }

    @classmethod
    def from_json(cls, data: dict) -> "RunRecord":
        """The record from its fields in any format version this release reads (`codec.upgrade`)."""
        data = codec.upgrade(data)
        return cls(
            run_id=data["run_id"], request=data["request"], tasks=[TaskRecord.from_json(t) for t in data["tasks"]],
            created_at=data["created_at"], finished_at=data.get("finished_at"), outcome=data.get("outcome"),
            stage_seconds=data.get("stage_seconds", {}), tables=data.get("tables"), source=data.get("source"),
            driver=data.get("driver"), heartbeat_at=data.get("heartbeat_at"), error=data.get("error"),
            seq=data.get("seq", 0),
        )

    def apply(self, event: dict) -> None:
        """Replay one event of the log (a task's new state, a heartbeat)."""
        if "task" in event:
            task = TaskRecord.from_json(event["task"])
            index = next(i for i, t in enumerate(self.tasks) if t.task_id == task.task_id)
            self.tasks[index] = task
        if "heartbeat_at" in event:
            self.heartbeat_at = event["heartbeat_at"]
        self.seq = event["seq"]

    def cancel(self, why: str) -> None:
        """End the run as cancelled: every task not yet ended is cancelled with `why` (unless it
        already has an error); what a driver's own Ctrl-C would have recorded."""
        self.outcome, self.finished_at = "cancelled", utcnow()
        for task in self.tasks:
            if not task.status.is_terminal():
                task.move(ChunkStatus.CANCELLED, error=task.error or why)
