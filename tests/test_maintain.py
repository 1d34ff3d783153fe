"""Table maintenance: compaction, snapshot expiry and orphan removal on real Iceberg tables, the
cutoffs from real ledgers of live and lost runs, `ray-backfill maintain`, and `run --maintain` in
the scheduling loop.

The Spark tests share the session of tests/conftest.py, each on a fresh catalog.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import socket
import time
from pathlib import Path
from urllib.parse import urlparse

import pytest
from pyspark.sql import functions as F

from jobs.context import load_inputs
from jobs.dates import Chunk
from jobs.errors import ConfigError
from jobs.inspect import table_checksum
from jobs.maintain import MaintainOptions, MaintainReport, TableMaintenance, maintain
from jobs.tables import BRONZE, DIM_TIME
from jobs.tasks import Task, TaskOutcome, run_task, warm_session
from ray_backfill.cli import _parser
from ray_backfill.executors.base import TaskResult
from ray_backfill.ledger import RunLedger, RunRecord, open_ledger, utcnow
from ray_backfill.maintain import parse_instant, run_options
from ray_backfill.plan import new_record
from ray_backfill.request import build_request
from tests.helpers import run_cli
from tests.inmemory import InMemoryExecutor, scripted
from tests.test_loop import _request, _run

UTC = dt.timezone.utc


def _now() -> dt.datetime:
    return dt.datetime.now(UTC)


def _append(spark, catalog, spec, hours: range) -> None:
    """One commit of rows at `hours` after 2024-01-01 (bronze) or of those hours of the day (dim_time)."""
    df = spark.range(hours.start, hours.stop)
    if spec is BRONZE:
        ts = F.timestamp_seconds(F.lit(1704067200) + F.col("id") * 3600)
        df = df.select(F.lit("hanoi").alias("location_key"), ts.alias("ts_utc"), F.to_date(ts).alias("date_utc"),
                       (F.col("id") % 50).alias("pm25"))
    else:
        df = df.select((F.col("id") * 100).alias("time_key"), F.col("id").alias("hour"))
    for f in spec.fields:
        if f.name not in df.columns:
            df = df.withColumn(f.name, F.lit(None))
    spec.conform(df).writeTo(spec.qualified(catalog)).append()


def _data_folder(spark, catalog, spec) -> Path:
    path = spark.table(f"{spec.qualified(catalog)}.data_files").select("file_path").first()[0]
    return Path(urlparse(path).path).parent


def _plant(folder: Path, name: str, age_s: float) -> Path:
    """A data file no snapshot references, last modified `age_s` ago: what a killed attempt leaves."""
    path = folder / name
    path.write_bytes(b"PAR1" + b"\0" * 1000)
    then = time.time() - age_s
    os.utime(path, (then, then))
    return path


def _state(spark, catalog, specs) -> dict:
    out = {}
    for spec in specs:
        name = spec.qualified(catalog)
        out[spec.name] = (spark.table(f"{name}.data_files").count(), spark.table(f"{name}.snapshots").count(),
                          table_checksum(spark.table(name)))
    return out


def _live_files_on_disk(spark, catalog, spec) -> bool:
    paths = [r[0] for r in spark.table(f"{spec.qualified(catalog)}.data_files").select("file_path").collect()]
    return bool(paths) and all(Path(urlparse(p).path).is_file() for p in paths)


@pytest.mark.spark
def test_a_dry_run_changes_nothing_and_the_run_does_what_it_listed(spark, fresh_settings):
    catalog, specs = fresh_settings.catalog, (BRONZE,)
    for hours in (range(0, 24), range(24, 48), range(800, 824)):  # 2 commits in January, 1 in February
        _append(spark, catalog, BRONZE, hours)
    folder = _data_folder(spark, catalog, BRONZE)
    old = _plant(folder, "00000-killed-attempt.parquet", age_s=2 * 3600)
    fresh = _plant(folder, "00001-in-flight.parquet", age_s=0)
    before = _state(spark, catalog, specs)
    options = MaintainOptions(orphans_before=_now() - dt.timedelta(hours=1), dry_run=True)

    dry = maintain(spark, catalog, options, specs)
    assert _state(spark, catalog, specs) == before and old.exists() and fresh.exists()
    bronze, = dry.tables
    assert bronze.orphans == [f"file:{old}"] and bronze.orphan_bytes == 1004
    assert bronze.compacted_files >= 2  # January's files at least
    assert bronze.snapshots_expired == 2  # all but the last
    assert dry.line().startswith("maintain (dry run): ") and "1 orphan files (0.0 MiB) to remove" in dry.line()

    done = maintain(spark, catalog, dataclasses.replace(options, dry_run=False), specs)
    after = _state(spark, catalog, specs)
    for spec, report in zip(specs, done.tables):
        files, snapshots, checksum = after[spec.name]
        assert checksum == before[spec.name][2]  # every row as before
        assert snapshots == report.snapshots_after == 1  # the compaction's, all the backfill's history expired
        assert files == report.data_files_after < report.data_files_before == before[spec.name][0]
        assert report.snapshots_expired == report.snapshots_before  # the compaction added one, one stays
        assert report.compacted_files == dry.tables[specs.index(spec)].compacted_files
        assert _live_files_on_disk(spark, catalog, spec)
    assert after["open_meteo_hourly"][0] == 2  # one file per month
    assert not old.exists() and fresh.exists()  # newer than the cutoff: perhaps a write in flight
    assert done.total.orphan_files == 1 and done.tables[0].orphan_bytes == 1004
    assert done.line().startswith(f"maintain: {done.total.data_files_before} → {done.total.data_files_after} "
                                  "data files, ") and done.line().endswith(
        f"1 orphan files (0.0 MiB) removed; {done.total.snapshots_expired} snapshots expired")


def _ledger_run(ledger: RunLedger, warehouse: str, run_id: str, started: dt.datetime, beat: str) -> None:
    """A run's ledger as its driver (this very process, so its pid is alive) writes it."""
    ledger.save(RunRecord(run_id, {"settings": {"catalog": {"warehouse": warehouse}}, "start_date": "2023-01-01",
                                   "end_date": "2023-01-31"}, [], created_at=started.isoformat(timespec="seconds"),
                          driver={"host": socket.gethostname(), "pid": os.getpid()}, heartbeat_at=beat))


@pytest.mark.spark
def test_the_maintain_task_keeps_what_a_live_run_may_use_and_ignores_a_lost_one(spark, fresh_settings, tmp_path):
    settings = fresh_settings
    catalog = settings.catalog
    ledger = open_ledger(catalog)
    now = _now()
    live_start, lost_start = now - dt.timedelta(hours=1), now - dt.timedelta(hours=3)
    _ledger_run(ledger, catalog.warehouse, "20230101T000000Z-aaaaaa", lost_start, "2000-01-01T00:00:00+00:00")
    _ledger_run(ledger, catalog.warehouse, "20230101T000000Z-bbbbbb", live_start, utcnow())
    _ledger_run(ledger, str(tmp_path / "elsewhere"), "20230101T000000Z-cccccc", now - dt.timedelta(hours=5), utcnow())
    for hours in (range(0, 12), range(12, 24)):
        _append(spark, catalog, DIM_TIME, hours)
    folder = _data_folder(spark, catalog, DIM_TIME)
    older = _plant(folder, "00000-older-than-every-live-run.parquet", age_s=2 * 3600)
    in_flight = _plant(folder, "00001-written-while-a-run-is-live.parquet", age_s=1800)
    record = new_record(dataclasses.replace(_request(tmp_path), settings=settings, maintain=True))
    assert [t.task_id for t in record.tasks][-2:] == ["gold", "maintain"]

    options = run_options(ledger, record)
    # the lost run (stale heartbeat) and the run on another warehouse do not hold the cutoff back
    assert options.orphans_before == options.live_since == live_start.replace(microsecond=0)
    task = Task("maintain", "maintain", Chunk(dt.date(2024, 1, 1), dt.date(2024, 2, 1)), 1, record.run_id, options)
    assert Task.from_json(task.to_json()) == task  # as it travels to the chunk's process
    before = table_checksum(spark.table(DIM_TIME.qualified(catalog)))
    outcome = run_task(task, settings, load_inputs(settings.pipeline), warm_session(spark))

    report = MaintainReport.from_json(outcome.maintenance)
    dim_time = next(t for t in report.tables if t.table == DIM_TIME.full_name)
    assert not older.exists() and in_flight.exists()
    assert dim_time.orphans == [f"file:{older}"] and report.total.orphan_files == 1
    # every snapshot is younger than the live run: none expires, the compaction adds its own
    assert (dim_time.snapshots_before, dim_time.snapshots_expired, dim_time.snapshots_after) == (2, 0, 3)
    assert dim_time.data_files_after < dim_time.data_files_before
    assert table_checksum(spark.table(DIM_TIME.qualified(catalog))) == before
    assert len(report.tables) == 9 and report.total.snapshots_expired == 0


@pytest.mark.spark
@pytest.mark.integration
def test_the_maintain_command_prints_the_report(spark, fresh_settings):
    catalog = fresh_settings.catalog
    for hours in (range(0, 12), range(12, 24)):
        _append(spark, catalog, DIM_TIME, hours)
    old = _plant(_data_folder(spark, catalog, DIM_TIME), "00000-killed-attempt.parquet", age_s=3 * 86400)
    files = spark.table(f"{DIM_TIME.qualified(catalog)}.data_files").count()
    result = run_cli("maintain", "--warehouse", catalog.warehouse, "--older-than", "1d",
                     env={"RAY_BACKFILL_CATALOG_NAME": catalog.name}, timeout=300)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    row = next(line for line in lines if line.startswith("gold.dim_time "))
    assert row.split()[1:4] == [str(files), "→", "1"]  # data files before → after
    assert lines[-1] == (f"maintain: {files} → 1 data files, 0.0 → 0.0 MiB; 1 orphan files (0.0 MiB) removed; "
                         "2 snapshots expired")  # of the two commits and the compaction, one stays
    assert not old.exists() and "ERROR" not in result.stderr
    # Spark's and the JVM's own output is in the command's log file, not on the console
    assert "WARN" not in result.stdout + result.stderr
    assert any("Setting default log level" in log.read_text()
               for log in (catalog.warehouse_path / "_ray_backfill" / "maintain").glob("maintain-*.log"))


def test_when_flags_parse_and_refuse(monkeypatch):
    now = dt.datetime(2024, 5, 1, 12, tzinfo=UTC)
    assert parse_instant("2h", "--older-than", now) == dt.datetime(2024, 5, 1, 10, tzinfo=UTC)
    assert parse_instant("7d", "--older-than", now) == dt.datetime(2024, 4, 24, 12, tzinfo=UTC)
    assert parse_instant("2024-04-30T08:00:00", "--older-than", now) == dt.datetime(2024, 4, 30, 8, tzinfo=UTC)
    with pytest.raises(ConfigError, match=r"^--older-than 'yesterday' is neither an ISO timestamp"):
        parse_instant("yesterday", "--older-than", now)
    with pytest.raises(ConfigError, match=r"^--expire-older-than '2024-06-01' is in the future$"):
        parse_instant("2024-06-01", "--expire-older-than", now)
    with pytest.raises(ConfigError, match=r"^--retain-last 0 must be >= 1"):
        MaintainOptions(orphans_before=now, retain_last=0)
    run = ["run", "--start-date", "2024-01-01", "--end-date", "2024-01-31"]
    assert build_request(_parser().parse_args(run + ["--maintain"])).maintain
    assert not build_request(_parser().parse_args(run)).maintain
    monkeypatch.setenv("RAY_BACKFILL_MAINTAIN", "yes")
    assert build_request(_parser().parse_args(run)).maintain
    monkeypatch.setenv("RAY_BACKFILL_MAINTAIN", "sometimes")
    with pytest.raises(ConfigError, match=r"^RAY_BACKFILL_MAINTAIN 'sometimes' is not one of true, false"):
        build_request(_parser().parse_args(run))


@dataclasses.dataclass
class _Maintaining(InMemoryExecutor):
    """The in-memory executor; its maintain attempt reports what it did, as the real task does."""

    def _result(self, task: Task) -> TaskResult:
        if task.stage != "maintain" or self.behaviour(task) != "ok":
            return super()._result(task)
        table = TableMaintenance("bronze.open_meteo_hourly", 96, 9, 43_200_000, 39_845_888, 34, 1, 90, 33,
                                 3, 1_153_434, ["file:/w/a", "file:/w/b", "file:/w/c"])
        report = MaintainReport([table], task.maintain, task.maintain.orphans_before)
        return TaskResult(ok=True, outcome=TaskOutcome(maintenance=report.to_json()), seconds=0.01)


def test_run_with_maintain_records_a_maintain_task_after_gold_and_none_after_a_failed_chunk(tmp_path):
    executor = _Maintaining(slots=2)
    record, lines = _run(dataclasses.replace(_request(tmp_path / "ok"), maintain=True), executor)
    assert record.outcome == "succeeded"
    assert [c.task.task_id for c in executor.started][-3:] == ["silver", "gold", "maintain"]
    assert ("end", "gold", 1) in executor.events[:executor.events.index(("start", "maintain", 1))]
    maintain_task = record.task("maintain")
    assert maintain_task.status.value == "succeeded"
    assert maintain_task.metrics["maintenance"]["total"]["snapshots_expired"] == 33
    options = executor.starts_of("maintain")[0].task.maintain
    assert options.orphans_before == dt.datetime.fromisoformat(record.created_at) and options.live_since is None
    assert lines[-5].startswith(f"run {record.run_id} succeeded")
    assert lines[-4] == "  maintain: 96 → 9 data files, 41.2 → 38.0 MiB; 3 orphan files (1.1 MiB) removed; " \
                        "33 snapshots expired"

    executor = _Maintaining(slots=2, behaviour=scripted({"bronze-2024-02": ["permanent"]}))
    record, lines = _run(dataclasses.replace(_request(tmp_path / "failed"), maintain=True), executor)
    assert record.outcome == "failed" and not executor.starts_of("maintain")
    assert record.task("maintain").status.value == "pending" and not any("maintain:" in li for li in lines)


def test_maintain_on_a_mistyped_warehouse_is_one_line_and_creates_nothing(tmp_path, capsys):
    from ray_backfill.cli import main

    typo = tmp_path / "warehuose"
    assert main(["maintain", "--warehouse", str(typo)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: no lakehouse at {typo}"), err
    assert not typo.exists()
