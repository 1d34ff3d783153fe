"""Ledger records: legal transitions, JSON round trip, atomic files, and where the ledger lives."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from ray_backfill.ledger import (
    ChunkStatus,
    IllegalTransition,
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
    record = RunRecord("20240101T000000Z-abc", {"x": 1}, [TaskRecord("gold", "gold", "2024-01-01", "2024-02-01")])
    record.tasks[0].move(ChunkStatus.RUNNING, attempts=1)
    ledger.save(record)
    loaded = ledger.load(record.run_id)
    assert loaded.to_json() == record.to_json()
    assert ledger.run_ids() == [record.run_id]
    assert not list(ledger.path(record.run_id).parent.glob(".tmp-*"))


def test_unknown_run_names_the_path(tmp_path):
    with pytest.raises(ValueError, match="run 'nope' has no ledger at"):
        RunLedger.for_warehouse(tmp_path).load("nope")


# --- where the ledger lives: ledger_dir, else the warehouse (local or S3), else a one-line error -----

RUN_ARGS = ["--start-date", "2024-01-01", "--end-date", "2024-02-29", "--spark-mode", "local"]


def _cli_args(*argv: str):
    from ray_backfill.cli import _parser

    return _parser().parse_args(argv)


def _run_ledger(*argv: str) -> RunLedger:
    """The ledger `run` writes, from its flags as the CLI parses them."""
    from ray_backfill.ledger import open_ledger
    from ray_backfill.runner import build_request

    return open_ledger(build_request(_cli_args("run", *RUN_ARGS, *argv)).settings.catalog)


def _found_ledgers(*argv: str) -> list[RunLedger]:
    """The ledgers `run`, `status` and `resume` use with the same settings."""
    from ray_backfill.runner import ledger_for_args

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
    from ray_backfill.runner import (
        build_request,
        ledger_for_args,
        new_record,
        resume_command,
    )

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
    assert capsys.readouterr().out.startswith(f"run {request.run_id}: in progress")
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
    record = RunRecord("20240101T000000Z-abc", {"x": 1}, [TaskRecord("gold", "gold", "2024-01-01", "2024-02-01")])
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
    with pytest.raises(ValueError, match=f"run 'nope' has no ledger at {uri}/nope/ledger.json"):
        ledger.load("nope")


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
    assert ledger.path("RUN") == "s3a://lakehouse/warehouse/_ray_backfill/runs/RUN/ledger.json"
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
