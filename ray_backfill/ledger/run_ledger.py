"""`RunLedger`: the runs' records kept in a `RunStore` as a snapshot plus an append-only event log,
and `open_ledger`, which picks the store for a catalog's ledger dir (`location.ledger_location`)."""

from __future__ import annotations

import os
import socket
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping
from urllib.parse import urlparse

from jobs.config import CatalogConfig
from jobs.errors import InputError
from ray_backfill.ledger import codec
from ray_backfill.ledger.arrow_store import ArrowStore
from ray_backfill.ledger.local_store import LocalStore
from ray_backfill.ledger.location import RUNS_IN_WAREHOUSE, ledger_location, s3_options
from ray_backfill.ledger.state import RUN_ID_PATTERN, RunRecord, TaskRecord, check_run_id, utcnow
from ray_backfill.ledger.store import RunStore

if TYPE_CHECKING:
    from pyarrow.fs import FileSystem

SNAPSHOT, EVENTS, CANCEL = "ledger.json", "events", "cancel.json"
REPORT, REPORT_HTML = "report.json", "report.html"


class RunLedger:
    """Owns the run ledgers under one folder: a local path, or a URI on a pyarrow file system, or
    any other `RunStore` handed in instead of a root."""

    def __init__(self, root: Path | str | RunStore, filesystem: FileSystem | None = None):
        if isinstance(root, (Path, str)):
            root = LocalStore(Path(root)) if filesystem is None else ArrowStore(str(root), filesystem)
        self._store: RunStore = root
        self._lock = threading.Lock()  # the loop and the heartbeat thread write events
        self._since_snapshot: dict[str, int] = {}

    @classmethod
    def for_warehouse(cls, warehouse: Path) -> "RunLedger":
        return cls(Path(warehouse) / RUNS_IN_WAREHOUSE)

    @property
    def store(self) -> RunStore:
        return self._store

    @property
    def root(self) -> Path | str:
        """The ledger dir: a local Path, or the URI given with a file system."""
        return self._store.root

    @property
    def filesystem(self) -> FileSystem | None:
        """The pyarrow file system of a URI ledger dir; None for a local path."""
        return self._store.filesystem if isinstance(self._store, ArrowStore) else None

    def path(self, run_id: str) -> Path | str:
        """The run's ledger file (the snapshot), a local Path or a URI like `root`."""
        return self._store.where(check_run_id(run_id), SNAPSHOT)

    def save(self, record: RunRecord) -> None:
        """Write the whole record as the run's snapshot (atomically), then drop the events it holds."""
        with self._lock:
            self._store.write(check_run_id(record.run_id), SNAPSHOT, codec.dump(record.to_json()))
            self._store.clear_log(record.run_id, EVENTS)
            self._since_snapshot[record.run_id] = 0

    def event(self, record: RunRecord, task: TaskRecord | None = None, **fields: Any) -> None:
        """Append one change to the run's log: `task`'s new state and/or fields (heartbeat_at).

        Costs one small write; every `len(record.tasks)` events (at least 64) the record is
        written whole as the new snapshot, which keeps reads short and the cost per event flat.
        """
        with self._lock:
            record.seq += 1
            line = codec.event_line(record.seq, task.to_json() if task is not None else None, **fields)
            if "heartbeat_at" in fields:
                record.heartbeat_at = fields["heartbeat_at"]
            self._store.append(record.run_id, EVENTS, record.seq, line)
            count = self._since_snapshot.get(record.run_id, 0) + 1
            self._since_snapshot[record.run_id] = count
        if count >= max(64, len(record.tasks)):
            self.save(record)

    def request_cancel(self, run_id: str) -> None:
        """Ask the run's driver to stop (`ray-backfill cancel`): a file it looks for every 2 s."""
        self._store.write(check_run_id(run_id), CANCEL,
                          codec.dump({"requested_at": utcnow(), "by": f"{socket.gethostname()}:{os.getpid()}"}))

    def cancel_requested(self, run_id: str) -> bool:
        return self._store.read(check_run_id(run_id), CANCEL) is not None

    def clear_cancel(self, run_id: str) -> None:
        self._store.delete(check_run_id(run_id), CANCEL)

    def save_report(self, run_id: str, report: dict) -> Path | str:
        self._store.write(check_run_id(run_id), REPORT, codec.dump(report))
        return self._store.where(run_id, REPORT)

    def save_report_html(self, run_id: str, html: str) -> Path | str:
        """The run's report as a page (`ray_backfill.report`), next to report.json."""
        self._store.write(check_run_id(run_id), REPORT_HTML, html.encode(), content_type="text/html; charset=utf-8")
        return self.report_html_path(run_id)

    def report_html_path(self, run_id: str) -> Path | str:
        return self._store.where(check_run_id(run_id), REPORT_HTML)

    def has_report_html(self, run_id: str) -> bool:
        return self._store.exists(check_run_id(run_id), REPORT_HTML)

    def load(self, run_id: str) -> RunRecord:
        """The run's record: its snapshot with the events logged after it replayed.

        InputError (one line) for a bad id, a missing run, or a file that is not a ledger."""
        path = self.path(run_id)
        data = self._store.read(run_id, SNAPSHOT)
        if data is None:
            known = ", ".join(self.run_ids()[-5:]) or "none"
            raise InputError(f"run {run_id!r} has no ledger at {path}; recent runs: {known}")
        try:
            record = RunRecord.from_json(codec.parse(data))
            for event in codec.parse_events(self._store.read_log(run_id, EVENTS), after=record.seq):
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
        return sorted(i for i in self._store.run_ids(SNAPSHOT) if RUN_ID_PATTERN.fullmatch(i))


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
