"""The ledger's storage interface (`RunStore`): both stores behave alike under the same calls, a
second atomic create is refused where the store can do one, and said to be impossible where not."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from pyarrow.fs import LocalFileSystem

from ray_backfill.ledger import (
    ArrowStore,
    AtomicCreateUnsupported,
    ChunkStatus,
    LocalStore,
    RunLedger,
    RunRecord,
    RunStore,
    TaskRecord,
)

RUN = "20240101T000000Z-abc123"


@pytest.fixture(params=["local", "arrow"])
def store(request, tmp_path) -> RunStore:
    root = tmp_path / "runs"
    return LocalStore(root) if request.param == "local" else ArrowStore(root.as_uri(), LocalFileSystem())


def _files(tmp_path: Path) -> list[str]:
    return sorted(str(p.relative_to(tmp_path / "runs")) for p in (tmp_path / "runs").rglob("*") if p.is_file())


def test_both_stores_are_run_stores_and_say_where_a_file_is(store, tmp_path):
    assert isinstance(store, RunStore)
    where = store.where(RUN, "ledger.json")
    if isinstance(store, LocalStore):
        assert store.root == tmp_path / "runs" and where == tmp_path / "runs" / RUN / "ledger.json"
    else:
        assert store.root == (tmp_path / "runs").as_uri() and where == f"{store.root}/{RUN}/ledger.json"


def test_write_read_exists_delete(store, tmp_path):
    assert store.read(RUN, "ledger.json") is None and not store.exists(RUN, "ledger.json")
    store.delete(RUN, "ledger.json")  # nothing to delete: no error
    store.write(RUN, "ledger.json", b"one")
    store.write(RUN, "ledger.json", b"two")  # replaces it
    store.write(RUN, "report.html", b"<p>", content_type="text/html; charset=utf-8")
    assert store.read(RUN, "ledger.json") == b"two" and store.exists(RUN, "report.html")
    assert _files(tmp_path) == [f"{RUN}/ledger.json", f"{RUN}/report.html"]  # no temp files left
    store.delete(RUN, "report.html")
    assert not store.exists(RUN, "report.html") and _files(tmp_path) == [f"{RUN}/ledger.json"]


def test_run_ids_are_the_folders_holding_the_named_file(store):
    assert store.run_ids("ledger.json") == []
    store.write(RUN, "ledger.json", b"{}")
    store.write("20240102T000000Z-abc123", "report.json", b"{}")
    assert store.run_ids("ledger.json") == [RUN]
    assert sorted(store.run_ids("report.json")) == ["20240102T000000Z-abc123"]


def test_a_log_keeps_its_lines_in_order_until_cleared(store, tmp_path):
    assert store.read_log(RUN, "events") == []
    for seq in range(1, 13):  # past 9: the order is by sequence number, not by name
        store.append(RUN, "events", seq, f'{{"seq": {seq}}}\n'.encode())
    assert [line.strip() for line in store.read_log(RUN, "events")] == [f'{{"seq": {s}}}'.encode() for s in range(1, 13)]
    store.clear_log(RUN, "events")
    assert store.read_log(RUN, "events") == [] and _files(tmp_path) == []


def test_create_is_atomic_on_a_local_folder_and_refused_through_pyarrow(store, tmp_path):
    if isinstance(store, ArrowStore):
        assert store.atomic_create is False
        with pytest.raises(AtomicCreateUnsupported, match="cannot create a file only if it is absent.*arrow/issues/44281"):
            store.create(RUN, "lease.json", b"first")
        assert _files(tmp_path) == []  # nothing written
        return
    assert store.atomic_create is True
    assert store.create(RUN, "lease.json", b"first") is True
    assert store.create(RUN, "lease.json", b"second") is False  # a second create is refused
    assert store.read(RUN, "lease.json") == b"first" and _files(tmp_path) == [f"{RUN}/lease.json"]


def test_of_writers_racing_to_create_one_file_exactly_one_wins(tmp_path):
    store = LocalStore(tmp_path / "runs")
    start, won = threading.Barrier(8), []

    def race(i: int) -> None:
        start.wait()
        if store.create(RUN, "lease.json", f"writer {i}".encode()):
            won.append(i)

    threads = [threading.Thread(target=race, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(won) == 1 and store.read(RUN, "lease.json") == f"writer {won[0]}".encode()
    assert _files(tmp_path) == [f"{RUN}/lease.json"]


class DictStore:
    """A third store, in memory: what the ledger needs of any store is the RunStore interface."""

    root = "mem://runs"
    atomic_create = True

    def __init__(self):
        self.files: dict[tuple[str, str], bytes] = {}
        self.logs: dict[tuple[str, str], list[bytes]] = {}

    def where(self, run_id, name):
        return f"{self.root}/{run_id}/{name}"

    def read(self, run_id, name):
        return self.files.get((run_id, name))

    def exists(self, run_id, name):
        return (run_id, name) in self.files

    def write(self, run_id, name, data, content_type="application/json"):
        self.files[run_id, name] = data

    def create(self, run_id, name, data, content_type="application/json"):
        return self.files.setdefault((run_id, name), data) is data

    def delete(self, run_id, name):
        self.files.pop((run_id, name), None)

    def run_ids(self, having):
        return [run_id for run_id, name in self.files if name == having]

    def append(self, run_id, log, seq, line):
        self.logs.setdefault((run_id, log), []).append(line)

    def read_log(self, run_id, log):
        return list(self.logs.get((run_id, log), []))

    def clear_log(self, run_id, log):
        self.logs.pop((run_id, log), None)


def test_the_ledger_runs_on_any_run_store():
    store = DictStore()
    assert isinstance(store, RunStore)
    ledger = RunLedger(store)
    assert ledger.store is store and ledger.root == "mem://runs" and ledger.filesystem is None
    record = RunRecord(RUN, {"x": 1}, [TaskRecord("gold", "gold", "2024-01-01", "2024-02-01")])
    ledger.save(record)
    record.tasks[0].move(ChunkStatus.RUNNING, attempts=1)
    ledger.event(record, record.tasks[0])
    ledger.event(record, heartbeat_at="2024-01-01T00:00:00+00:00")
    assert len(store.logs[RUN, "events"]) == 2
    assert ledger.load(RUN).to_json() == record.to_json() and ledger.run_ids() == [RUN]
    ledger.request_cancel(RUN)
    assert ledger.cancel_requested(RUN)
    ledger.clear_cancel(RUN)
    assert not ledger.cancel_requested(RUN)
    assert ledger.save_report_html(RUN, "<p>") == f"mem://runs/{RUN}/report.html" and ledger.has_report_html(RUN)
