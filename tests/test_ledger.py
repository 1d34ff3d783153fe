"""Ledger records: legal transitions, JSON round trip, atomic files, and where the ledger lives."""

from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path

import pytest

from jobs.errors import IllegalTransition
from ray_backfill.ledger import (
    ChunkStatus,
    RunLedger,
    RunRecord,
    TaskRecord,
    s3_options,
)


def test_terminal_states():
    assert {s for s in ChunkStatus if s.is_terminal()} == {ChunkStatus.SUCCEEDED, ChunkStatus.FAILED, ChunkStatus.CANCELLED}


def test_illegal_transition_raises():
    task = TaskRecord("bronze-2024-01", "bronze", "2024-01-01", "2024-02-01")
    task.move(ChunkStatus.RUNNING, attempts=1)
    task.move(ChunkStatus.SUCCEEDED, rows=10)
    with pytest.raises(IllegalTransition, match="succeeded to running"):
        task.move(ChunkStatus.RUNNING)


def test_round_trip_and_listing(tmp_path):
    ledger = RunLedger.for_warehouse(tmp_path)
    record = RunRecord("20240101T000000Z-abc123", {"x": 1}, [TaskRecord("gold", "gold", "2024-01-01", "2024-02-01")])
    record.tasks[0].move(ChunkStatus.RUNNING, attempts=1)
    ledger.save(record)
    loaded = ledger.load(record.run_id)
    assert loaded.to_json() == record.to_json()
    assert ledger.run_ids() == [record.run_id]
    assert not list(ledger.path(record.run_id).parent.glob(".tmp-*"))


def test_unknown_run_names_the_path(tmp_path):
    with pytest.raises(ValueError, match="run '20240101T000000Z-000000' has no ledger at"):
        RunLedger.for_warehouse(tmp_path).load("20240101T000000Z-000000")


# --- where the ledger lives: ledger_dir, else the warehouse (local or S3), else a one-line error -----

RUN_ARGS = ["--start-date", "2024-01-01", "--end-date", "2024-02-29", "--spark-mode", "local"]


def _cli_args(*argv: str):
    from ray_backfill.cli import _parser

    return _parser().parse_args(argv)


def _run_ledger(*argv: str) -> RunLedger:
    """The ledger `run` writes, from its flags as the CLI parses them."""
    from ray_backfill.ledger import open_ledger
    from ray_backfill.request import build_request

    return open_ledger(build_request(_cli_args("run", *RUN_ARGS, *argv)).settings.catalog)


def _found_ledgers(*argv: str) -> list[RunLedger]:
    """The ledgers `run`, `status` and `resume` use with the same settings."""
    from ray_backfill.request import ledger_for_args

    return [_run_ledger(*argv), ledger_for_args(_cli_args("status", *argv)),
            ledger_for_args(_cli_args("resume", "RUN_ID", *argv))]


def test_local_warehouse_keeps_the_ledger_under_it(tmp_path, monkeypatch):
    from jobs.config import CatalogConfig
    from ray_backfill.ledger import ledger_location

    monkeypatch.chdir(tmp_path)
    runs = tmp_path / "wh" / "_ray_backfill" / "runs"
    for ledger in _found_ledgers("--warehouse", str(tmp_path / "wh")):
        assert ledger.root == runs and ledger.filesystem is None
    assert ledger_location(CatalogConfig(warehouse=(tmp_path / "wh").as_uri())) == runs
    assert ledger_location(CatalogConfig()) == tmp_path / "warehouse" / "_ray_backfill" / "runs"
    assert [ledger.root for ledger in _found_ledgers()] == [tmp_path / "warehouse" / "_ray_backfill" / "runs"] * 3


@pytest.mark.parametrize("given", ["flag", "env", "config file"])
def test_ledger_dir_is_where_run_status_and_resume_look(given, tmp_path, monkeypatch, capsys):
    from ray_backfill.cli import main
    from ray_backfill.plan import new_record
    from ray_backfill.request import build_request, ledger_for_args, resume_command

    ledgers = tmp_path / "shared" / "runs"
    argv = ["--warehouse", "hdfs://nn:8020/wh"]  # a warehouse that cannot hold the ledger itself
    if given == "flag":
        argv += ["--ledger-dir", str(ledgers)]
    elif given == "env":
        monkeypatch.setenv("RAY_BACKFILL_LEDGER_DIR", str(ledgers))
    else:
        (tmp_path / "c.toml").write_text(f'ledger_dir = "{ledgers}"\n')
        argv += ["--config", str(tmp_path / "c.toml")]
    assert [ledger.root for ledger in _found_ledgers(*argv)] == [ledgers] * 3

    request = build_request(_cli_args("run", *RUN_ARGS, *argv))
    _run_ledger(*argv).save(new_record(request))
    assert main(["status", *argv]) == 0
    assert request.run_id in capsys.readouterr().out
    assert main(["status", request.run_id, *argv]) == 0
    assert capsys.readouterr().out.startswith(f"run {request.run_id}: driver lost")
    # the resume command a failed run prints finds the same ledger
    monkeypatch.delenv("RAY_BACKFILL_LEDGER_DIR", raising=False)
    resume = _cli_args(*shlex.split(resume_command(request))[1:])
    assert ledger_for_args(resume).load(request.run_id).run_id == request.run_id


HDFS = ["--warehouse", "hdfs://nn:8020/wh"]


@pytest.mark.parametrize("argv", [["status", *HDFS], ["status", "RUN_ID", *HDFS], ["resume", "RUN_ID", *HDFS],
                                  ["run", *RUN_ARGS, "--executor", "sequential", *HDFS]],
                         ids=["status", "status RUN_ID", "resume", "run"])
def test_hdfs_warehouse_without_ledger_dir_is_one_line_naming_it_and_the_flag(argv, capsys):
    from ray_backfill.cli import main

    assert main(argv) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err, err
    assert "warehouse 'hdfs://nn:8020/wh'" in err and "--ledger-dir" in err and "s3://" in err


def test_file_uri_ledger_dir_goes_through_pyarrow(tmp_path):
    from pyarrow.fs import LocalFileSystem

    from jobs.config import CatalogConfig
    from ray_backfill.ledger import open_ledger

    uri = (tmp_path / "ledgers").as_uri()
    ledger = open_ledger(CatalogConfig(warehouse="hdfs://nn:8020/wh", ledger_dir=uri + "/"))
    assert isinstance(ledger.filesystem, LocalFileSystem) and ledger.root == uri
    assert ledger.run_ids() == []
    record = RunRecord("20240101T000000Z-abc123", {"x": 1}, [TaskRecord("gold", "gold", "2024-01-01", "2024-02-01")])
    ledger.save(record)
    record.tasks[0].move(ChunkStatus.RUNNING, attempts=1)
    ledger.save(record)  # replaces the file
    report = ledger.save_report(record.run_id, {"outcome": "failed"})
    assert ledger.path(record.run_id) == f"{uri}/{record.run_id}/ledger.json"
    assert report == f"{uri}/{record.run_id}/report.json"
    assert ledger.load(record.run_id).to_json() == record.to_json()
    assert ledger.run_ids() == [record.run_id]
    run_dir = tmp_path / "ledgers" / record.run_id
    assert sorted(p.name for p in run_dir.iterdir()) == ["ledger.json", "report.json"]  # no temp files left
    # the same bytes as a ledger kept under a local path
    local = RunLedger(tmp_path / "local")
    local.save(record)
    assert (run_dir / "ledger.json").read_bytes() == local.path(record.run_id).read_bytes()
    with pytest.raises(ValueError, match="has no ledger at " + re.escape(f"{uri}/20240101T000000Z-000000/ledger.json")):
        ledger.load("20240101T000000Z-000000")


def test_s3a_warehouse_keeps_the_ledger_in_its_bucket_through_pyarrow_s3(monkeypatch):
    from ray_backfill.ledger import open_ledger
    from ray_backfill.options import resolve

    for var in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_REGION", "AWS_DEFAULT_REGION"):
        monkeypatch.delenv(var, raising=False)
    args = _cli_args("status", "--config", str(Path(__file__).parent.parent / "cluster" / "warehouse-s3.toml"))
    settings, _ = resolve(args, {})
    ledger = open_ledger(settings.catalog)  # builds the file system only: S3 is not contacted
    assert ledger.root == "s3a://lakehouse/warehouse/_ray_backfill/runs"
    assert ledger.filesystem.type_name == "s3" and ledger.filesystem.region == "us-east-1"
    assert ledger.path("20240101T000000Z-abc123") == "s3a://lakehouse/warehouse/_ray_backfill/runs/20240101T000000Z-abc123/ledger.json"
    assert s3_options(dict(settings.catalog.properties), {}) == {
        "scheme": "http", "endpoint_override": "minio:9000", "region": "us-east-1"}


@pytest.mark.parametrize("properties, env, expected", [
    ({}, {}, {}),
    ({}, {"AWS_ENDPOINT_URL": "https://s3.example.com", "AWS_REGION": "eu-west-1"},
     {"scheme": "https", "endpoint_override": "s3.example.com", "region": "eu-west-1"}),
    ({}, {"AWS_ENDPOINT_URL_S3": "http://minio:9000", "AWS_ENDPOINT_URL": "http://other:1"},
     {"scheme": "http", "endpoint_override": "minio:9000"}),
    ({"s3.endpoint": "minio:9000"}, {"AWS_ENDPOINT_URL": "http://other:1"},
     {"scheme": "https", "endpoint_override": "minio:9000"}),
    ({"s3.path-style-access": "false"}, {"AWS_DEFAULT_REGION": "ap-south-1"},
     {"force_virtual_addressing": True, "region": "ap-south-1"}),
    ({"s3.path-style-access": "true"}, {"AWS_ACCESS_KEY_ID": "AKIAEXAMPLE", "AWS_SECRET_ACCESS_KEY": "s3cret"}, {}),
])
def test_s3_options_come_from_catalog_properties_then_aws_variables_never_credentials(properties, env, expected):
    assert s3_options(properties, env) == expected


# --- run ids, broken ledgers, the event log, the driver's heartbeat ------------------------------

@pytest.mark.parametrize("bad", ["../../x", "/tmp/x", "20240101T000000Z-abc123/../..", "", "RUN_ID", "x" * 300])
def test_a_run_id_that_is_not_one_is_a_one_line_error_before_any_path_is_built(bad, tmp_path, capsys):
    from ray_backfill.cli import main

    with pytest.raises(ValueError, match="is not a run id"):
        RunLedger.for_warehouse(tmp_path).path(bad)
    for command in ("status", "resume"):
        assert main([command, bad, "--warehouse", str(tmp_path)]) == 1
        err = capsys.readouterr().err
        assert err.startswith("error: run id ") and err.count("\n") == 1
    assert not (tmp_path / "_ray_backfill").exists()


def _gold_record(run_id: str = "20240101T000000Z-abc123", tasks: int = 1) -> RunRecord:
    return RunRecord(run_id, {"x": 1}, [TaskRecord(f"bronze-{i}", "bronze", "2024-01-01", "2024-02-01")
                                        for i in range(tasks)])


@pytest.mark.parametrize("content", [b"{not json", b"[]", b'{"version": 1, "run_id": 3}', b"\x00\xff",
                                     b'{"version": 7}'])
def test_a_corrupt_or_foreign_ledger_is_one_line_for_that_run_and_status_lists_the_others(content, tmp_path,
                                                                                           capsys):
    from ray_backfill.cli import main

    ledger = RunLedger.for_warehouse(tmp_path)
    good, broken = _gold_record("20240101T000000Z-aaaaaa"), _gold_record("20240102T000000Z-bbbbbb")
    ledger.save(good)
    ledger.save(broken)
    Path(ledger.path(broken.run_id)).write_bytes(content)
    with pytest.raises(ValueError, match=f"run {broken.run_id}: ledger .*ledger.json"):
        ledger.load(broken.run_id)
    assert main(["status", broken.run_id, "--warehouse", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: run {broken.run_id}: ledger ") and err.count("\n") == 1
    assert main(["status", "--warehouse", str(tmp_path)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith(good.run_id) and "unreadable" not in out[0]
    assert out[1].startswith(f"{broken.run_id}  unreadable")


def test_a_ledger_copied_under_another_run_id_is_refused(tmp_path):
    ledger = RunLedger.for_warehouse(tmp_path)
    ledger.save(_gold_record("20240101T000000Z-aaaaaa"))
    other = Path(ledger.path("20240101T000000Z-bbbbbb"))
    other.parent.mkdir(parents=True)
    other.write_bytes(Path(ledger.path("20240101T000000Z-aaaaaa")).read_bytes())
    with pytest.raises(ValueError, match="belongs to run '20240101T000000Z-aaaaaa'"):
        ledger.load("20240101T000000Z-bbbbbb")


def _bytes_written() -> int:
    """Bytes this process handed to write(2) so far (Linux /proc/self/io)."""
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("wchar:"):
            return int(line.split()[1])
    raise AssertionError("no wchar in /proc/self/io")


def _bytes_per_event(tmp_path: Path, chunks: int) -> tuple[float, int]:
    """Average bytes written per task event over a run of `chunks` tasks (each runs then succeeds)."""
    ledger = RunLedger(tmp_path / f"runs-{chunks}")
    record = _gold_record(tasks=chunks)
    ledger.save(record)
    before = _bytes_written()
    for task in record.tasks:
        task.move(ChunkStatus.RUNNING, attempts=1)
        ledger.event(record, task)
        task.move(ChunkStatus.SUCCEEDED, rows=744, seconds=3.2)
        ledger.event(record, task)
    return (_bytes_written() - before) / (2 * chunks), len(_dump_size(record))


def _dump_size(record: RunRecord) -> bytes:
    from ray_backfill.ledger.codec import dump

    return dump(record.to_json())


def test_an_event_costs_the_same_in_a_2000_chunk_run_as_in_a_20_chunk_run(tmp_path):
    """A 5-year daily backfill must not rewrite its whole ledger on every event."""
    small, _ = _bytes_per_event(tmp_path, 20)
    large, snapshot = _bytes_per_event(tmp_path, 2000)
    assert snapshot > 500_000  # rewriting it per event would be ~2 GB for this run
    assert large < 3 * small and large < 5_000, (small, large)


def test_snapshot_plus_events_read_back_as_the_live_record_also_after_a_torn_last_line(tmp_path):
    ledger = RunLedger(tmp_path)
    record = _gold_record(tasks=100)
    ledger.save(record)
    for i, task in enumerate(record.tasks[:70]):  # 140 events: one snapshot on the way (every 100)
        task.move(ChunkStatus.RUNNING, attempts=1)
        ledger.event(record, task)
        task.move(ChunkStatus.SUCCEEDED if i % 3 else ChunkStatus.FAILED, rows=i, error=None if i % 3 else "boom")
        ledger.event(record, task)
    ledger.event(record, heartbeat_at="2024-01-01T00:00:00+00:00")
    assert ledger.load(record.run_id).to_json() == record.to_json()
    events = Path(ledger.path(record.run_id)).parent / "events.jsonl"
    assert 0 < len(events.read_bytes().splitlines()) < 100
    with open(events, "ab") as handle:  # the driver died mid-append
        handle.write(b'{"seq": 999, "task": {"task_id": "bron')
    assert ledger.load(record.run_id).to_json() == record.to_json()
    ledger.save(record)
    assert not events.exists()


@pytest.mark.process
def test_driver_state_tells_a_live_driver_from_a_lost_or_finished_one():
    import datetime as dt
    import os
    import socket

    from ray_backfill.ledger import STALE_S, driver_state, utcnow

    record = _gold_record()
    assert driver_state(record)[0] == "lost"  # never wrote a heartbeat
    record.driver, record.heartbeat_at = {"host": socket.gethostname(), "pid": os.getpid()}, utcnow()
    assert driver_state(record)[0] == "running"
    later = dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=STALE_S + 5)
    state, line = driver_state(record, now=later)
    assert state == "lost" and line.startswith("driver lost (pid ") and "last heartbeat" in line
    gone = subprocess.Popen(["true"])
    gone.wait()
    record.driver["pid"] = gone.pid  # its process is gone from this very host: lost at once
    assert driver_state(record)[0] == "lost"
    record.driver["host"] = "another-host"  # elsewhere only the heartbeat can tell
    assert driver_state(record)[0] == "running"
    record.outcome = "failed"
    assert driver_state(record) == ("finished", "failed")


# --- the on-disk format: a run written by an earlier release still reads --------------------------

FIXTURES = Path(__file__).parent / "fixtures"
V1_RUN = "20240105T120000Z-a1b2c3"


def test_a_run_written_by_the_format_version_1_release_still_reads(tmp_path):
    """tests/fixtures/ledger_v1 was written by the release before the ledger's split (format version
    1): a snapshot and four events after it (three task changes, a heartbeat)."""
    import json
    import shutil

    shutil.copytree(FIXTURES / "ledger_v1", tmp_path / "runs")
    assert json.loads((tmp_path / "runs" / V1_RUN / "ledger.json").read_text())["version"] == 1
    ledger = RunLedger(tmp_path / "runs")
    assert ledger.run_ids() == [V1_RUN]
    record = ledger.load(V1_RUN)
    assert record.to_json() == json.loads((FIXTURES / "ledger_v1_read.json").read_text())
    assert [t.status.value for t in record.tasks] == ["succeeded", "succeeded", "running", "pending", "pending"]
    assert record.seq == 4 and record.heartbeat_at == "2024-01-05T12:00:40+00:00"
    assert record.task("bronze-2024-01").history == [
        {"attempt": 1, "status": "failed", "started_at": 1704456000.0, "ended_at": 1704456010.5, "node_id": "n1",
         "peak_rss_mb": 512.0, "error": "SourceUnavailable: 503"}]
    ledger.save(record)  # written back by this release, it reads the same
    assert ledger.load(V1_RUN).to_json() == record.to_json()


def test_a_file_uri_ledger_dir_takes_events_and_reads_them_back(tmp_path):
    """pyarrow's local file system makes no folders for a file it opens: the log's own folder is made
    first (its first event used to fail with 'No such file or directory')."""
    from pyarrow.fs import LocalFileSystem

    ledger = RunLedger((tmp_path / "ledgers").as_uri(), LocalFileSystem())
    record = _gold_record(tasks=2)
    ledger.save(record)
    record.tasks[0].move(ChunkStatus.RUNNING, attempts=1)
    ledger.event(record, record.tasks[0])
    ledger.event(record, heartbeat_at="2024-01-01T00:00:00+00:00")
    events = tmp_path / "ledgers" / record.run_id / "events"
    assert sorted(p.name for p in events.iterdir()) == ["000000000001.json", "000000000002.json"]
    assert ledger.load(record.run_id).to_json() == record.to_json()
    ledger.save(record)
    assert list(events.iterdir()) == []
