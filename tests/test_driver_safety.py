"""Every exit of a driver leaves a readable record; a second driver never races a live one.

The real runner, ledger and CLI with the in-memory executor (no Spark): a driver error, a
SIGKILLed driver process, a resume while the first driver lives, overlapping runs, paths
resolved once, non-finite numbers refused.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from jobs.config import CatalogConfig, PipelineConfig, Settings
from jobs.dates import DateRange
from jobs.errors import ConfigError
from ray_backfill.ledger import ChunkStatus, RunLedger, utcnow
from ray_backfill.progress import Progress
from ray_backfill.loop import RetryPolicy
from ray_backfill.plan import new_record
from ray_backfill.request import BackfillRequest
from ray_backfill.runner import run_backfill
from tests.inmemory import InMemoryExecutor

ROOT = Path(__file__).resolve().parent.parent
NO_WAIT = RetryPolicy(base_s=0.001, cap_s=0.001)


def _request(warehouse: Path, start=dt.date(2024, 1, 1), end=dt.date(2024, 4, 30), **kwargs) -> BackfillRequest:
    settings = Settings(catalog=CatalogConfig(warehouse=str(warehouse)),
                        pipeline=PipelineConfig(locations=("hanoi", "hcmc")))
    return BackfillRequest(settings=settings, date_range=DateRange(start, end), **{"retries": 0, **kwargs})


def _run(request, executor, record=None, ledger=None):
    lines: list[str] = []
    try:
        record = run_backfill(request, record, echo=lines.append, progress=Progress(lines.append, tty=False),
                              ledger=ledger, executor=executor, retry=NO_WAIT)
    except BaseException as exc:
        return None, lines, exc
    return record, lines, None


def test_a_driver_error_records_the_run_as_failed_cancels_what_runs_and_prints_the_resume_command(tmp_path):
    request = _request(tmp_path / "wh")
    # the driver raises starting the 4th attempt (bronze-2024-03): prepare done, two chunks in flight
    executor = InMemoryExecutor(slots=3, polls=5, crash_on_start=4, crash=RuntimeError)
    _, lines, exc = _run(request, executor)
    assert isinstance(exc, RuntimeError)
    record = RunLedger.for_warehouse(tmp_path / "wh").load(request.run_id)
    assert record.outcome == "failed" and record.finished_at
    assert record.error == "the driver failed: RuntimeError: driver dies starting bronze-2024-03"
    assert {t.task_id for t in executor.cancelled} == {"bronze-2024-01", "bronze-2024-02"}
    states = {t.task_id: t.status for t in record.tasks}
    assert states["prepare"] == ChunkStatus.SUCCEEDED
    # the two in flight and the one the driver was starting (it was already marked running)
    assert {t for t, s in states.items() if s == ChunkStatus.FAILED} == {f"bronze-2024-0{i}" for i in (1, 2, 3)}
    assert all(states[t] == ChunkStatus.PENDING for t in ("bronze-2024-04", "silver", "gold"))
    assert f"run {request.run_id} failed after" in "\n".join(lines)
    assert "  the driver failed: RuntimeError: driver dies starting bronze-2024-03" in lines
    assert lines[-1] == f"resume with: ray-backfill resume {request.run_id} --warehouse {tmp_path / 'wh'}"
    again, _, exc = _run(request, InMemoryExecutor(slots=2), record=record)
    assert exc is None and again.outcome == "succeeded" and again.error is None


def test_the_cli_turns_a_driver_error_into_one_last_line_and_exit_1(tmp_path, capsys, monkeypatch):
    from ray_backfill import cli

    def boom(request):
        raise RuntimeError("the catalog fell over\nsecond line")

    monkeypatch.setattr(cli, "run_backfill", boom)
    code = cli.main(["run", "--start-date", "2024-01-01", "--end-date", "2024-01-31",
                     "--warehouse", str(tmp_path / "wh"), "--spark-mode", "local"])
    err = capsys.readouterr().err
    assert code == 1
    assert err.splitlines()[-1] == "error: RuntimeError: the catalog fell over"


DRIVER = textwrap.dedent("""
    import datetime as dt, sys, time
    from jobs.config import CatalogConfig, PipelineConfig, Settings
    from jobs.dates import DateRange
    from ray_backfill import ledger as ledger_module
    from ray_backfill.ledger import lease
    from ray_backfill.request import BackfillRequest
    from ray_backfill.runner import run_backfill
    from tests.inmemory import InMemoryExecutor

    ledger_module.HEARTBEAT_S = lease.HEARTBEAT_S = 0.2
    settings = Settings(catalog=CatalogConfig(warehouse=sys.argv[1]), pipeline=PipelineConfig(locations=("hanoi",)))
    request = BackfillRequest(settings=settings, date_range=DateRange(dt.date(2024, 1, 1), dt.date(2024, 2, 29)),
                              run_id=sys.argv[2])
    class Slow(InMemoryExecutor):
        def wait(self, handles, timeout_s):
            time.sleep(timeout_s)
            return super().wait(handles, timeout_s)
    run_backfill(request, executor=Slow(slots=1, polls=10_000))
""")


def _live_driver(warehouse: Path, run_id: str) -> subprocess.Popen:
    """A real driver process on the in-memory executor whose chunks never end; returns once it beats."""
    proc = subprocess.Popen([sys.executable, "-c", DRIVER, str(warehouse), run_id], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    events = RunLedger.for_warehouse(warehouse).root / run_id / "events.jsonl"
    deadline = time.monotonic() + 30
    while not (events.exists() and b"heartbeat_at" in events.read_bytes()):
        assert proc.poll() is None, proc.stderr.read()
        assert time.monotonic() < deadline, "the driver wrote no heartbeat"
        time.sleep(0.1)
    return proc


@pytest.mark.process
def test_a_sigkilled_driver_is_lost_in_status_and_a_live_one_refuses_a_second_driver(tmp_path, capsys):
    from ray_backfill.cli import main

    warehouse, run_id = tmp_path / "wh", "20240301T000000Z-abcdef"
    proc = _live_driver(warehouse, run_id)
    try:
        assert main(["status", run_id, "--warehouse", str(warehouse)]) == 0
        out = capsys.readouterr().out
        assert out.startswith(f"run {run_id}: running (pid {proc.pid} on {socket.gethostname()}; heartbeat ")
        # a resume while the first driver lives, and a new run over overlapping dates: refused
        assert main(["resume", run_id, "--warehouse", str(warehouse)]) == 1
        err = capsys.readouterr().err
        assert err.startswith(f"error: run {run_id} is still running (pid {proc.pid} ") and err.count("\n") == 1
        assert main(["run", "--start-date", "2024-02-10", "--end-date", "2024-03-31", "--warehouse",
                     str(warehouse), "--spark-mode", "local"]) == 1
        err = capsys.readouterr().err
        assert err.startswith(f"error: run {run_id} (2024-01-01 .. 2024-02-29) is running") and "overlaps" in err
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        proc.stderr.close()
    assert main(["status", run_id, "--warehouse", str(warehouse)]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"run {run_id}: driver lost (pid {proc.pid} on {socket.gethostname()}; last heartbeat ")
    assert main(["status", "--warehouse", str(warehouse)]) == 0
    assert capsys.readouterr().out.startswith(f"{run_id}  driver lost")
    record = RunLedger.for_warehouse(warehouse).load(run_id)
    assert record.outcome is None and record.task("prepare").status == ChunkStatus.RUNNING
    resumed, _, exc = _run(_request(warehouse, dt.date(2024, 1, 1), dt.date(2024, 2, 29), run_id=run_id),
                           InMemoryExecutor(), record=record)
    assert exc is None and resumed.outcome == "succeeded"


def test_overlapping_live_runs_on_one_warehouse_are_refused_others_are_not(tmp_path):
    warehouse = tmp_path / "wh"
    ledger = RunLedger.for_warehouse(warehouse)
    live = new_record(_request(warehouse, dt.date(2024, 1, 1), dt.date(2024, 1, 31), run_id="20240301T000000Z-aaaaaa"))
    live.driver, live.heartbeat_at = {"host": socket.gethostname(), "pid": os.getpid()}, utcnow()
    ledger.save(live)
    _, _, exc = _run(_request(warehouse, dt.date(2024, 1, 31), dt.date(2024, 2, 29)), InMemoryExecutor())
    assert isinstance(exc, ConfigError) and "20240301T000000Z-aaaaaa (2024-01-01 .. 2024-01-31) is running" in str(exc)
    assert ledger.run_ids() == ["20240301T000000Z-aaaaaa"]  # the refused run left no record
    record, _, exc = _run(_request(warehouse, dt.date(2024, 2, 1), dt.date(2024, 2, 29)), InMemoryExecutor())
    assert exc is None and record.outcome == "succeeded"  # no overlap
    other = tmp_path / "other"  # another warehouse, the same ledger dir
    record, _, exc = _run(_request(other, dt.date(2024, 1, 1), dt.date(2024, 1, 31)), InMemoryExecutor(),
                          ledger=ledger)
    assert exc is None and record.outcome == "succeeded"
    live.heartbeat_at = (dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=5)).isoformat()
    ledger.save(live)  # its driver stopped beating: the lease has expired
    record, _, exc = _run(_request(warehouse, dt.date(2024, 1, 1), dt.date(2024, 1, 31)), InMemoryExecutor())
    assert exc is None and record.outcome == "succeeded"


class _Racing(RunLedger):
    """A ledger on which another driver writes its live run right after this one checked for live
    runs and before its own lease landed: two runs starting at the same moment."""

    def __init__(self, root: Path, other):
        super().__init__(root)
        self.other = other

    def save(self, record) -> None:
        if self.other is not None and record.run_id != self.other.run_id:
            other, self.other = self.other, None
            other.driver, other.heartbeat_at = {"host": socket.gethostname(), "pid": os.getpid()}, utcnow()
            super().save(other)
        super().save(record)


@pytest.mark.parametrize("other_first", [True, False])
def test_of_two_overlapping_runs_started_at_once_only_the_earlier_goes_on(other_first, tmp_path):
    warehouse = tmp_path / "wh"
    mine = _request(warehouse, dt.date(2024, 1, 1), dt.date(2024, 1, 31), run_id="20240301T000000Z-bbbbbb")
    other = new_record(_request(warehouse, dt.date(2024, 1, 15), dt.date(2024, 2, 15),
                                run_id="20240301T000000Z-aaaaaa" if other_first else "20240301T000001Z-cccccc"))
    other.created_at = "2024-03-01T00:00:00+00:00" if other_first else "2024-03-01T00:00:01+00:00"
    record = new_record(mine)
    record.created_at = "2024-03-01T00:00:00.500000+00:00"
    executor = InMemoryExecutor()
    done, lines, exc = _run(mine, executor, record=record, ledger=_Racing(warehouse / "_ray_backfill" / "runs", other))
    if other_first:  # the other run was first: this one stops before any task, recorded as failed
        assert isinstance(exc, ConfigError) and f"run {other.run_id} (2024-01-15 .. 2024-02-15) is running" in str(exc)
        assert not executor.started
        stored = RunLedger.for_warehouse(warehouse).load(mine.run_id)
        assert stored.outcome == "failed" and other.run_id in stored.error
    else:  # this one was first: it goes on (the other one gives way when it looks)
        assert exc is None and done.outcome == "succeeded", lines


def test_the_heartbeat_thread_beats_into_the_log_until_closed(tmp_path):
    from ray_backfill.ledger import Heartbeat

    ledger = RunLedger(tmp_path)
    record = new_record(_request(tmp_path / "wh"))
    record.heartbeat_at = "2000-01-01T00:00:00+00:00"
    ledger.save(record)
    events = tmp_path / record.run_id / "events.jsonl"
    with Heartbeat(ledger, record, every_s=0.05):
        deadline = time.monotonic() + 30
        while not (events.exists() and len(events.read_text().splitlines()) >= 3) and time.monotonic() < deadline:
            time.sleep(0.05)
    beats = [json.loads(line) for line in events.read_text().splitlines()]
    assert len(beats) >= 3 and all(set(b) == {"seq", "heartbeat_at"} for b in beats)
    assert ledger.load(record.run_id).heartbeat_at == beats[-1]["heartbeat_at"] > "2000"
    time.sleep(0.2)
    assert len((tmp_path / record.run_id / "events.jsonl").read_text().splitlines()) == len(beats)


# --- paths are resolved once, where the run is built ------------------------------------------------


def _build(argv, cwd: Path, monkeypatch):
    from ray_backfill.cli import _parser
    from ray_backfill.request import build_request

    monkeypatch.chdir(cwd)
    return build_request(_parser().parse_args(["run", "--start-date", "2024-01-01", "--end-date", "2024-01-31",
                                               *argv]))


def test_relative_paths_are_stored_absolute_and_resume_from_elsewhere_uses_the_same_warehouse(tmp_path, monkeypatch):
    from ray_backfill.cli import _parser
    from ray_backfill.request import ledger_for_args, resume_command

    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    locations = tmp_path / "a" / "locs.jsonl"
    locations.write_text((ROOT / "data" / "locations.jsonl").read_text())
    request = _build(["--warehouse", "wh", "--ledger-dir", "../ledgers", "--locations-file", "locs.jsonl"],
                     tmp_path / "a", monkeypatch)
    catalog = request.settings.catalog
    assert catalog.warehouse == str(tmp_path / "a" / "wh") and catalog.ledger_dir == str(tmp_path / "ledgers")
    assert request.settings.pipeline.locations_file == locations
    stored = request.to_json()["settings"]
    assert stored["catalog"]["warehouse"] == str(tmp_path / "a" / "wh")
    assert stored["pipeline"]["locations_file"] == str(locations)
    command = resume_command(request)
    assert command == (f"ray-backfill resume {request.run_id} --warehouse {tmp_path / 'a' / 'wh'} "
                       f"--ledger-dir {tmp_path / 'ledgers'}")
    monkeypatch.chdir(tmp_path / "b")  # the printed command, run from another directory, finds the same ledger
    assert ledger_for_args(_parser().parse_args(command.split()[1:])).root == tmp_path / "ledgers"
    default = _build([], tmp_path / "b", monkeypatch)
    assert default.settings.catalog.warehouse == str(tmp_path / "b" / "warehouse")
    assert "--warehouse " + str(tmp_path / "b" / "warehouse") in resume_command(default)


def test_a_warehouse_inside_a_ray_jobs_temporary_working_dir_is_refused(tmp_path, monkeypatch, capsys):
    from ray_backfill.cli import main

    job_copy = tmp_path / "session_x" / "runtime_resources" / "working_dir_files" / "_ray_pkg_0123abcd"
    (job_copy / "data").mkdir(parents=True)
    (job_copy / "data" / "locs.jsonl").write_text((ROOT / "data" / "locations.jsonl").read_text())
    for argv in (["--warehouse", "warehouse"], [], ["--warehouse", str(tmp_path / "shared"), "--ledger-dir", "runs"]):
        with pytest.raises(ConfigError, match="inside the Ray job's temporary copy of its working directory"):
            _build(argv, job_copy, monkeypatch)
    assert main(["run", "--start-date", "2024-01-01", "--end-date", "2024-01-31", "--spark-mode", "local"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: --warehouse ./warehouse resolves to ") and err.count("\n") == 1
    assert "give an absolute path all nodes share or a shared URI" in err
    request = _build(["--warehouse", str(tmp_path / "shared"), "--locations-file", "data/locs.jsonl"], job_copy,
                     monkeypatch)
    # an input file in the job's copy stays relative to it: every node has its own copy
    assert request.settings.pipeline.locations_file == Path("data/locs.jsonl")
    assert not (job_copy / "warehouse").exists()


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "0", "-5"])
def test_a_chunk_timeout_that_is_not_a_finite_positive_number_is_refused(value, tmp_path, capsys):
    from ray_backfill.cli import main

    code = main(["run", "--start-date", "2024-01-01", "--end-date", "2024-01-31", "--warehouse", str(tmp_path / "wh"),
                 "--spark-mode", "local", f"--chunk-timeout={value}"])
    err = capsys.readouterr().err
    assert code == 1 and err.startswith(f"error: --chunk-timeout {float(value)} must be a finite number")
    assert err.count("\n") == 1 and not (tmp_path / "wh").exists()


def test_the_fault_drills_do_nothing_unless_switched_on_for_tests(monkeypatch):
    from jobs.dates import Chunk
    from jobs.tasks import Task
    from ray_backfill.worker import FAULTS_ENABLED_ENV, FAULTS_ENV, _inject

    task = Task("bronze-2024-01", "bronze", Chunk(dt.date(2024, 1, 1), dt.date(2024, 2, 1)), 1, "run")
    monkeypatch.setenv(FAULTS_ENV, json.dumps({"bronze-2024-01": {"always_fail": True}}))
    monkeypatch.delenv(FAULTS_ENABLED_ENV, raising=False)
    _inject(task, "start")  # a stray drill in a real environment: nothing happens
    monkeypatch.setenv(FAULTS_ENABLED_ENV, "yes")
    _inject(task, "start")
    monkeypatch.setenv(FAULTS_ENABLED_ENV, "1")
    with pytest.raises(RuntimeError, match="injected failure in bronze-2024-01 attempt 1"):
        _inject(task, "start")


def test_a_permanent_failure_is_not_retried_a_transient_one_is(tmp_path):
    from tests.inmemory import scripted

    executor = InMemoryExecutor(behaviour=scripted({"bronze-2024-01": ["permanent"], "bronze-2024-02": ["fail"]}))
    record, lines, exc = _run(_request(tmp_path / "wh", retries=2), executor)
    assert exc is None and record.outcome == "failed"
    assert [c.task.attempt for c in executor.starts_of("bronze-2024-01")] == [1]
    assert [c.task.attempt for c in executor.starts_of("bronze-2024-02")] == [1, 2]
    assert ("  bronze-2024-01: failed after 1 attempt(s) (permanent: not retried): open-meteo refused the request "
            "(HTTP 400) in bronze-2024-01") in lines


@pytest.mark.parametrize("exc, permanent", [
    ("InputError('bad')", True), ("ConfigError('bad')", True), ("SourceRequestError('400', status=400)", True),
    ("SourceUnavailable('daily quota', permanent=True)", True),
    ("SourceUnavailable('5xx until retries ran out')", False),
    ("StageError('x', 'bronze')", False), ("RuntimeError('CommitFailedException: conflict')", False),
    ("TimeoutError()", False)])
def test_which_errors_are_permanent(exc, permanent):
    from jobs import errors
    from ray_backfill.executors.base import is_permanent

    assert is_permanent(eval(exc, vars(errors))) is permanent


@pytest.mark.spark
def test_a_missing_table_is_permanent(spark):
    from ray_backfill.executors.base import is_permanent

    with pytest.raises(Exception) as caught:
        spark.table("lh.nowhere.no_such_table")
    assert is_permanent(caught.value)


# --- secrets ----------------------------------------------------------------------------------


@pytest.mark.parametrize("uri, clean", [
    ("jdbc:postgresql://db:5432/lh?user=iceberg&password=s3cr3t-PW", "jdbc:postgresql://db:5432/lh?user=iceberg"),
    ("jdbc:postgresql://iceberg:s3cr3t-PW@db:5432/lh", "jdbc:postgresql://iceberg@db:5432/lh"),
    ("https://catalog:8181/api?token=s3cr3t-PW&warehouse=w", "https://catalog:8181/api?warehouse=w"),
])
def test_a_catalog_uri_holding_a_credential_is_stored_and_shown_without_it(uri, clean, tmp_path, capsys):
    from jobs.config import settings_to_dict, split_uri_secret
    from ray_backfill.plan_text import format_plan
    from ray_backfill.run_text import closing_lines

    kind = "rest" if uri.startswith("https") else "postgres"
    catalog = CatalogConfig(kind=kind, uri=uri, warehouse=str(tmp_path / "wh"))
    assert catalog.uri == clean and catalog.password == "s3cr3t-PW"
    assert split_uri_secret(clean)[2] is None
    request = BackfillRequest(settings=Settings(catalog=catalog), date_range=DateRange(dt.date(2024, 1, 1),
                                                                                       dt.date(2024, 1, 31)))
    record = new_record(request)
    record.outcome = "succeeded"
    shown: list[str] = []
    closing_lines(request, record, "report.json", shown.append)
    from jobs.context import load_inputs

    text = json.dumps(settings_to_dict(request.settings)) + json.dumps(request.to_json()) + "\n".join(shown) + \
        format_plan(request, load_inputs(request.settings.pipeline)) + repr(catalog)
    assert clean in text and "s3cr3t-PW" not in text
    with pytest.raises(ConfigError, match="give it once"):
        CatalogConfig(kind=kind, uri=uri, password="another", warehouse="/wh")


def test_no_session_starts_with_the_catalog_credentials_in_its_settings(tmp_path):
    from ray_backfill.sessions import catalog_conf, catalog_secrets, spark_conf

    for kind, uri, key in (("postgres", "jdbc:postgresql://db/lh", "jdbc.password"),
                           ("rest", "http://c:8181", "token")):
        catalog = CatalogConfig(kind=kind, uri=uri, password="s3cr3t-PW", warehouse=str(tmp_path))
        started_with = spark_conf(Settings(catalog=catalog), ["a.jar"])
        assert "s3cr3t-PW" not in json.dumps(started_with)
        assert catalog_secrets(catalog) == {f"spark.sql.catalog.lh.{key}": "s3cr3t-PW"}
        assert catalog_conf(catalog)[f"spark.sql.catalog.lh.{key}"] == "s3cr3t-PW"  # attaching to a live session


@pytest.mark.parametrize("domains, start, end, problem", [
    ("cams_global", "2022-07-31", "2022-08-31", "--start-date 2022-07-31 is before the first day open-meteo's "
                                                "cams_global domain has data for (2022-08-01)"),
    ("auto", "2021-01-01", "2021-01-31", "(2022-08-01)"),
    ("cams_europe", "2012-12-31", "2013-01-31", "(2013-01-01)"),
    ("cams_global", "2024-01-01", "+5", "past the open-meteo cams_global forecast horizon (5 days from today"),
    ("cams_europe", "2024-01-01", "+4", "past the open-meteo cams_europe forecast horizon (4 days"),
])
def test_dates_the_real_source_has_no_data_for_are_refused(domains, start, end, problem):
    from jobs.errors import DateRangeError
    from jobs.sources.openmeteo import check_dates

    today = dt.datetime.now(dt.timezone.utc).date()
    end_day = today + dt.timedelta(days=int(end)) if end.startswith("+") else dt.date.fromisoformat(end)
    with pytest.raises(DateRangeError) as caught:
        check_dates(domains, dt.date.fromisoformat(start), end_day)
    assert problem in str(caught.value)
    check_dates(domains, dt.date(2023, 1, 1) if domains != "cams_europe" else dt.date(2013, 1, 1),
                today + dt.timedelta(days=3))  # inside both bounds: accepted


def test_the_plan_refuses_them_in_one_line_for_the_open_meteo_source_only(tmp_path, capsys):
    from ray_backfill.cli import main

    args = ["--start-date", "2021-06-01", "--end-date", "2021-06-30", "--warehouse", str(tmp_path / "wh")]
    assert main(["plan", *args, "--source", "open-meteo"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: --start-date 2021-06-01 is before the first day") and err.count("\n") == 1
    assert main(["plan", *args]) == 0  # the synthetic source has every day


def test_an_api_key_goes_to_the_commercial_host_with_its_profile():
    from jobs.config import SourceConfig
    from jobs.limits import PROFILES

    free = SourceConfig(kind="open-meteo")
    assert free.api_url == "https://air-quality-api.open-meteo.com"
    paid = SourceConfig(kind="open-meteo", api_key="k3y", profile="commercial")
    assert paid.api_url == "https://customer-air-quality-api.open-meteo.com"
    assert paid.limits == PROFILES["commercial"] and paid.limits.per_minute is None
    own = SourceConfig(kind="open-meteo", api_key="k3y", api_url="http://127.0.0.1:8080")
    assert own.api_url == "http://127.0.0.1:8080"  # a server of one's own (or the fake) keeps its URL
    assert "k3y" not in repr(paid)
