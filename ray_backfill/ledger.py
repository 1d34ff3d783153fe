"""The durable record of a run: chunk states, attempts, rows, seconds, errors.

Kept as JSON in the warehouse (`<warehouse>/_ray_backfill/runs/<run_id>/`), written atomically
(temp file + rename) by the run's driver, the only writer. Resume reads it back — also after the
driver was killed, when chunks still say `running`.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

from ray_backfill.errors import InputError

LEDGER_VERSION = 1


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


class IllegalTransition(InputError):
    """A state change the ledger does not allow (e.g. succeeded → running)."""


def utcnow() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


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
    updated_at: str = field(default_factory=utcnow)

    def move(self, new: ChunkStatus, **changes: Any) -> None:
        """Change state, or raise IllegalTransition."""
        if new != self.status and not self.status.can_become(new):
            raise IllegalTransition(f"task {self.task_id}: cannot go from {self.status.value} to {new.value}")
        self.status = new
        for key, value in changes.items():
            setattr(self, key, value)
        self.updated_at = utcnow()

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
    version: int = LEDGER_VERSION

    def task(self, task_id: str) -> TaskRecord:
        return next(t for t in self.tasks if t.task_id == task_id)

    def by_stage(self, stage: str) -> list[TaskRecord]:
        return [t for t in self.tasks if t.stage == stage]

    def to_json(self) -> dict:
        return {
            "version": self.version, "run_id": self.run_id, "created_at": self.created_at,
            "finished_at": self.finished_at, "outcome": self.outcome, "stage_seconds": self.stage_seconds,
            "tables": self.tables, "source": self.source, "request": self.request, "tasks": [t.to_json() for t in self.tasks],
        }

    @classmethod
    def from_json(cls, data: dict) -> "RunRecord":
        if data.get("version") != LEDGER_VERSION:
            raise InputError(f"ledger version {data.get('version')!r} is not {LEDGER_VERSION}; written by another release")
        return cls(
            run_id=data["run_id"], request=data["request"], tasks=[TaskRecord.from_json(t) for t in data["tasks"]],
            created_at=data["created_at"], finished_at=data.get("finished_at"), outcome=data.get("outcome"),
            stage_seconds=data.get("stage_seconds", {}), tables=data.get("tables"), source=data.get("source"),
        )


class RunLedger:
    """Owns the ledger files of one warehouse."""

    def __init__(self, root: Path):
        self.root = Path(root)

    @classmethod
    def for_warehouse(cls, warehouse: Path) -> "RunLedger":
        return cls(Path(warehouse) / "_ray_backfill" / "runs")

    def path(self, run_id: str) -> Path:
        return self.root / run_id / "ledger.json"

    def save(self, record: RunRecord) -> None:
        """Atomically replace the run's ledger file."""
        self._write_json(self.path(record.run_id), record.to_json())

    def save_report(self, run_id: str, report: dict) -> Path:
        path = self.root / run_id / "report.json"
        self._write_json(path, report)
        return path

    def load(self, run_id: str) -> RunRecord:
        path = self.path(run_id)
        if not path.is_file():
            known = ", ".join(self.run_ids()[-5:]) or "none"
            raise InputError(f"run {run_id!r} has no ledger at {path}; recent runs: {known}")
        return RunRecord.from_json(json.loads(path.read_text()))

    def run_ids(self) -> list[str]:
        """Run ids, oldest first (ids start with their UTC start time)."""
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if (p / "ledger.json").is_file())

    @staticmethod
    def _write_json(path: Path, data: dict) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".json")
        with os.fdopen(fd, "w") as handle:
            json.dump(data, handle, indent=1, sort_keys=True)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
