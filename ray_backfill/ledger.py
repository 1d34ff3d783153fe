"""The durable record of a run: chunk states, attempts, rows, seconds, errors, the driver's heartbeat.

Kept under the ledger dir (`<ledger_dir>/<run_id>/`; where that is: `ledger_location`), written by
the run's driver, the only writer, as a snapshot plus an append-only event log:
  ledger.json    the whole record, replaced atomically (temp file + rename on a file system, one
                 PUT on an object store) when the run starts and ends, and once every `len(tasks)`
                 events, so an event costs the same whatever the run's size (amortised);
  events.jsonl   one line per task change or heartbeat since the snapshot (on an object store,
                 one small object per event under events/); lines with a sequence number the
                 snapshot already holds, or a torn last line, are skipped when read.
Resume and status read snapshot + events — also after the driver was killed, when chunks still
say `running` and the heartbeat stops: `driver_state` tells a live driver from a lost one.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import re
import socket
import tempfile
import threading
import uuid
from dataclasses import asdict, dataclass, field
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Mapping
from urllib.parse import urlparse

from jobs.config import CatalogConfig
from jobs.errors import ConfigError, IllegalTransition, InputError, WarehouseError
from ray_backfill.logs import pid_alive

if TYPE_CHECKING:
    from pyarrow.fs import FileSystem

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


# A driver writes a heartbeat every HEARTBEAT_S; one silent for STALE_S is taken for lost.
HEARTBEAT_S = 10.0
STALE_S = 60.0
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
            "driver": self.driver, "heartbeat_at": self.heartbeat_at, "error": self.error, "seq": self.seq,
        }

    @classmethod
    def from_json(cls, data: dict) -> "RunRecord":
        if data.get("version") != LEDGER_VERSION:
            raise InputError(f"ledger version {data.get('version')!r} is not {LEDGER_VERSION}; written by another release")
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


def _age_s(iso: str | None, now: dt.datetime | None = None) -> float | None:
    if not iso:
        return None
    now = now or dt.datetime.now(dt.timezone.utc)
    return (now - dt.datetime.fromisoformat(iso)).total_seconds()


def mark_cancelled(ledger: "RunLedger", record: RunRecord, why: str) -> None:
    """Record a run whose driver is gone as cancelled (what its own Ctrl-C would have written)."""
    record.outcome, record.finished_at = "cancelled", utcnow()
    for task in record.tasks:
        if not task.status.is_terminal():
            task.move(ChunkStatus.CANCELLED, error=task.error or why)
    ledger.save(record)


def driver_state(record: RunRecord, now: dt.datetime | None = None) -> tuple[str, str]:
    """("finished" | "running" | "lost", one line saying so) for a run's driver.

    Lost: no heartbeat for STALE_S, or the driver's process is gone from this very host.
    """
    if record.outcome:
        return "finished", record.outcome
    age = _age_s(record.heartbeat_at, now)
    driver = record.driver or {}
    where = f"pid {driver.get('pid')} on {driver.get('host')}" if driver else "its driver"
    if age is None:
        return "lost", "driver lost (it never wrote a heartbeat)"
    gone_here = driver.get("host") == socket.gethostname() and not pid_alive(int(driver.get("pid", 0)))
    if gone_here or age > STALE_S:
        return "lost", f"driver lost ({where}; last heartbeat {record.heartbeat_at}, {age:.0f}s ago)"
    return "running", f"running ({where}; heartbeat {age:.0f}s ago)"


def live_runs(ledger: "RunLedger", warehouse: str, exclude: str | None = None) -> list[RunRecord]:
    """The runs on `warehouse` whose driver is alive (a fresh heartbeat, `driver_state`), oldest
    first, but `exclude`; unreadable ledgers are skipped (`status` names them)."""
    live = []
    for run_id in ledger.run_ids():
        if run_id == exclude:
            continue
        try:
            record = ledger.load(run_id)
        except InputError:
            continue
        if (record.outcome is None and driver_state(record)[0] == "running"
                and record.request["settings"]["catalog"]["warehouse"] == warehouse):
            live.append(record)
    return live


class RunLedger:
    """Owns the run ledgers under one folder: a local path, or a URI on a pyarrow file system."""

    def __init__(self, root: Path | str, filesystem: FileSystem | None = None):
        self._store = _LocalStore(Path(root)) if filesystem is None else _ArrowStore(str(root), filesystem)
        self._lock = threading.Lock()  # the loop and the heartbeat thread write events
        self._since_snapshot: dict[str, int] = {}

    @classmethod
    def for_warehouse(cls, warehouse: Path) -> "RunLedger":
        return cls(Path(warehouse) / "_ray_backfill" / "runs")

    @property
    def root(self) -> Path | str:
        """The ledger dir: a local Path, or the URI given with a file system."""
        return self._store.root

    @property
    def filesystem(self) -> FileSystem | None:
        """The pyarrow file system of a URI ledger dir; None for a local path."""
        return self._store.filesystem

    def path(self, run_id: str) -> Path | str:
        """The run's ledger file (the snapshot), a local Path or a URI like `root`."""
        return self._store.file(check_run_id(run_id), "ledger.json")

    def save(self, record: RunRecord) -> None:
        """Write the whole record as the run's snapshot (atomically), then drop the events it holds."""
        with self._lock:
            self._store.write(self.path(record.run_id), _dump(record.to_json()))
            self._store.clear_events(record.run_id)
            self._since_snapshot[record.run_id] = 0

    def event(self, record: RunRecord, task: TaskRecord | None = None, **fields: Any) -> None:
        """Append one change to the run's log: `task`'s new state and/or fields (heartbeat_at).

        Costs one small write; every `len(record.tasks)` events (at least 64) the record is
        written whole as the new snapshot, which keeps reads short and the cost per event flat.
        """
        with self._lock:
            record.seq += 1
            data: dict[str, Any] = {"seq": record.seq, **fields}
            if task is not None:
                data["task"] = task.to_json()
            if "heartbeat_at" in fields:
                record.heartbeat_at = fields["heartbeat_at"]
            self._store.append(record.run_id, record.seq, json.dumps(data, sort_keys=True).encode() + b"\n")
            count = self._since_snapshot.get(record.run_id, 0) + 1
            self._since_snapshot[record.run_id] = count
        if count >= max(64, len(record.tasks)):
            self.save(record)

    def request_cancel(self, run_id: str) -> None:
        """Ask the run's driver to stop (`ray-backfill cancel`): a file it looks for every 2 s."""
        self._store.write(self._store.file(check_run_id(run_id), "cancel.json"),
                          _dump({"requested_at": utcnow(), "by": f"{socket.gethostname()}:{os.getpid()}"}))

    def cancel_requested(self, run_id: str) -> bool:
        return self._store.read(self._store.file(check_run_id(run_id), "cancel.json")) is not None

    def clear_cancel(self, run_id: str) -> None:
        self._store.delete(self._store.file(check_run_id(run_id), "cancel.json"))

    def save_report(self, run_id: str, report: dict) -> Path | str:
        path = self._store.file(check_run_id(run_id), "report.json")
        self._store.write(path, _dump(report))
        return path

    def save_report_html(self, run_id: str, html: str) -> Path | str:
        """The run's report as a page (`ray_backfill.report`), next to report.json."""
        path = self.report_html_path(run_id)
        self._store.write(path, html.encode(), content_type="text/html; charset=utf-8")
        return path

    def report_html_path(self, run_id: str) -> Path | str:
        return self._store.file(check_run_id(run_id), "report.html")

    def has_report_html(self, run_id: str) -> bool:
        return self._store.exists(self.report_html_path(run_id))

    def load(self, run_id: str) -> RunRecord:
        """The run's record: its snapshot with the events logged after it replayed.

        InputError (one line) for a bad id, a missing run, or a file that is not a ledger."""
        path = self.path(run_id)
        data = self._store.read(path)
        if data is None:
            known = ", ".join(self.run_ids()[-5:]) or "none"
            raise InputError(f"run {run_id!r} has no ledger at {path}; recent runs: {known}")
        try:
            record = RunRecord.from_json(json.loads(data))
            for line in self._store.read_events(run_id):
                try:
                    event = json.loads(line)
                except ValueError:
                    continue  # a torn last line: the driver died mid-append
                if event.get("seq", 0) > record.seq:
                    record.apply(event)
        except InputError as exc:
            raise InputError(f"run {run_id}: ledger {path}: {exc}") from None
        except (ValueError, KeyError, TypeError, AttributeError, StopIteration) as exc:
            reason = f"{type(exc).__name__}: {exc}".splitlines()[0][:200]
            raise InputError(f"run {run_id}: ledger {path} is not a readable run ledger ({reason})") from None
        if record.run_id != run_id:
            raise InputError(f"run {run_id}: ledger {path} belongs to run {record.run_id!r}")
        return record

    def run_ids(self) -> list[str]:
        """Run ids, oldest first (ids start with their UTC start time); other folders are not runs."""
        return sorted(i for i in self._store.run_ids() if RUN_ID_PATTERN.fullmatch(i))


def _dump(data: dict) -> bytes:
    return json.dumps(data, indent=1, sort_keys=True).encode()


class _LocalStore:
    """A folder on this machine (or a mount all nodes share): temp file, fsync, os.replace."""

    filesystem = None

    def __init__(self, root: Path):
        self.root = root

    def file(self, run_id: str, name: str) -> Path:
        return self.root / run_id / name

    def write(self, path: Path, data: bytes, content_type: str = "application/json") -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=path.suffix)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)

    def read(self, path: Path) -> bytes | None:
        return path.read_bytes() if path.is_file() else None

    def exists(self, path: Path) -> bool:
        return path.is_file()

    def delete(self, path: Path) -> None:
        path.unlink(missing_ok=True)

    def append(self, run_id: str, seq: int, line: bytes) -> None:
        path = self.file(run_id, "events.jsonl")
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "ab") as handle:
            handle.write(line)
            handle.flush()
            os.fsync(handle.fileno())

    def read_events(self, run_id: str) -> list[bytes]:
        path = self.file(run_id, "events.jsonl")
        return path.read_bytes().splitlines() if path.is_file() else []

    def clear_events(self, run_id: str) -> None:
        self.file(run_id, "events.jsonl").unlink(missing_ok=True)

    def run_ids(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return [p.name for p in self.root.iterdir() if (p / "ledger.json").is_file()]


class _ArrowStore:
    """A folder on a pyarrow file system, named by its URI (s3a://bucket/key, file:///path).

    On an object store a new object appears whole or not at all, so one PUT replaces a ledger
    atomically; pyarrow's local file system writes a temp file and renames it over the old one.
    """

    def __init__(self, root: str, filesystem: FileSystem):
        self.root = root.rstrip("/")
        self.filesystem = filesystem
        parsed = urlparse(self.root)
        # pyarrow names S3 objects bucket/key and local files by their absolute path
        self._base = parsed.path if parsed.scheme == "file" else parsed.netloc + parsed.path

    def file(self, run_id: str, name: str) -> str:
        return f"{self.root}/{run_id}/{name}"

    def _path(self, uri: str) -> str:
        return self._base + uri[len(self.root):]

    @contextlib.contextmanager
    def _reporting(self, uri: str) -> Iterator[None]:
        try:
            yield
        except OSError as exc:
            raise WarehouseError(f"run ledger {uri}: {' '.join(str(exc).split())}") from None

    def write(self, uri: str, data: bytes, content_type: str = "application/json") -> None:
        path, fs = self._path(uri), self.filesystem
        with self._reporting(uri):
            if fs.type_name != "local":
                with fs.open_output_stream(path, metadata={"Content-Type": content_type}) as out:
                    out.write(data)
                return
            parent = path.rsplit("/", 1)[0]
            fs.create_dir(parent, recursive=True)
            tmp = f"{parent}/.tmp-{uuid.uuid4().hex}"
            with fs.open_output_stream(tmp) as out:
                out.write(data)
            fs.move(tmp, path)

    def read(self, uri: str) -> bytes | None:
        from pyarrow.fs import FileType

        path = self._path(uri)
        with self._reporting(uri):
            if self.filesystem.get_file_info(path).type != FileType.File:
                return None
            with self.filesystem.open_input_stream(path) as handle:
                return handle.read()

    def exists(self, uri: str) -> bool:
        from pyarrow.fs import FileType

        with self._reporting(uri):
            return self.filesystem.get_file_info(self._path(uri)).type == FileType.File

    def delete(self, uri: str) -> None:
        from pyarrow.fs import FileType

        with self._reporting(uri):
            if self.filesystem.get_file_info(self._path(uri)).type == FileType.File:
                self.filesystem.delete_file(self._path(uri))

    def append(self, run_id: str, seq: int, line: bytes) -> None:
        # an object store cannot append: one small object per event, named by its sequence number
        uri = self.file(run_id, f"events/{seq:012d}.json")
        with self._reporting(uri), self.filesystem.open_output_stream(self._path(uri)) as out:
            out.write(line)

    def _event_infos(self, run_id: str) -> list:
        from pyarrow.fs import FileSelector, FileType

        folder = self._path(self.file(run_id, "events"))
        with self._reporting(self.file(run_id, "events")):
            infos = self.filesystem.get_file_info(FileSelector(folder, allow_not_found=True))
        return sorted((i for i in infos if i.type == FileType.File and i.path.endswith(".json")),
                      key=lambda i: i.path)

    def read_events(self, run_id: str) -> list[bytes]:
        lines = []
        for info in self._event_infos(run_id):
            with self._reporting(info.path), self.filesystem.open_input_stream(info.path) as handle:
                lines.append(handle.read())
        return lines

    def clear_events(self, run_id: str) -> None:
        for info in self._event_infos(run_id):
            with self._reporting(info.path):
                self.filesystem.delete_file(info.path)

    def run_ids(self) -> list[str]:
        from pyarrow.fs import FileSelector, FileType

        with self._reporting(self.root):
            infos = self.filesystem.get_file_info(FileSelector(self._base, allow_not_found=True, recursive=True))
        ids = []
        for info in infos:
            parts = info.path[len(self._base):].strip("/").split("/")
            if info.type == FileType.File and len(parts) == 2 and parts[1] == "ledger.json":
                ids.append(parts[0])
        return ids


_RUNS_IN_WAREHOUSE = "_ray_backfill/runs"


def ledger_location(catalog: CatalogConfig) -> Path | str:
    """Where the run ledgers of a catalog live: a local Path, or an s3://, s3a://, file:// URI.

    `ledger_dir` when set; else `<warehouse>/_ray_backfill/runs` for a local warehouse (a path)
    or an s3/s3a one (a URI in its bucket). Any other warehouse (hdfs://) needs `ledger_dir`:
    pyarrow reaches HDFS only through libhdfs and a JVM, which a terminal on a node may lack.
    """
    if catalog.ledger_dir:
        if urlparse(catalog.ledger_dir).scheme:
            return catalog.ledger_dir
        return Path(catalog.ledger_dir).expanduser().resolve()
    if catalog.warehouse_is_local:
        return catalog.warehouse_path / _RUNS_IN_WAREHOUSE
    if urlparse(catalog.warehouse).scheme in ("s3", "s3a"):
        return f"{catalog.warehouse.rstrip('/')}/{_RUNS_IN_WAREHOUSE}"
    raise ConfigError(f"the run ledger cannot live in warehouse {catalog.warehouse!r}; give --ledger-dir "
                      "(or RAY_BACKFILL_LEDGER_DIR, ledger_dir in --config) a path all nodes share "
                      "(e.g. NFS) or an s3:// URI")


def run_log_dir(catalog: CatalogConfig, run_id: str) -> Path | None:
    """Where a run's attempt logs go: `<run>/logs/` next to its ledger when that is a local path
    (all nodes see it: a local warehouse is refused on a cluster of several hosts); else None, and
    each attempt logs under its node's Ray log folder (ray_backfill/executors/ray.py: attempt_log)."""
    try:
        where = ledger_location(catalog)
    except ConfigError:
        return None
    return where / check_run_id(run_id) / "logs" if isinstance(where, Path) else None


def open_ledger(catalog: CatalogConfig, env: Mapping[str, str] | None = None) -> RunLedger:
    """The RunLedger at `ledger_location(catalog)`; S3 settings come from the catalog and `env`."""
    where = ledger_location(catalog)
    if isinstance(where, Path):
        return RunLedger(where)
    from pyarrow import fs

    if urlparse(where).scheme == "file":
        return RunLedger(where, fs.LocalFileSystem())
    options = s3_options(dict(catalog.properties), os.environ if env is None else env)
    return RunLedger(where, fs.S3FileSystem(**options))


def s3_options(properties: Mapping[str, str], env: Mapping[str, str]) -> dict[str, Any]:
    """pyarrow S3FileSystem arguments from the Iceberg catalog properties, else the AWS variables.

    Credentials are left to the AWS SDK's own chain (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY,
    profiles, instance roles, IRSA), so no secret passes through here.
    """
    options: dict[str, Any] = {}
    endpoint = properties.get("s3.endpoint") or env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL")
    if endpoint:
        parsed = urlparse(endpoint if "://" in endpoint else f"https://{endpoint}")
        options["scheme"], options["endpoint_override"] = parsed.scheme, parsed.netloc
    region = properties.get("client.region") or env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION")
    if region:
        options["region"] = region
    # pyarrow uses path-style URLs unless told otherwise; Iceberg's s3.path-style-access=false asks for virtual-hosted
    if properties.get("s3.path-style-access", "").strip().lower() == "false":
        options["force_virtual_addressing"] = True
    return options
