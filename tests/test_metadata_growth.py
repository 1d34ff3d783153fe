"""A long run's per-commit cost stays flat: the metadata properties every table gets, and the driver's
in-run expiry of bronze snapshots (docs/operations.md#long-runs-metadata), on real Iceberg tables.

The pyiceberg tests commit to a SQLite catalog in tmp_path (no JVM); the Spark test commits through
the shared session of tests/conftest.py, as the chunks do, with the pyiceberg expiry in between.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import os
import socket
import time
from pathlib import Path

import pytest

from jobs.config import CatalogConfig
from jobs.tables import BRONZE, METADATA_PROPERTIES
from ray_backfill.browse import sqlalchemy_uri
from ray_backfill.ledger import ChunkStatus, RunRecord, TaskRecord, new_run_id, open_ledger, utcnow
from ray_backfill.maintain import KEEP_LAST, RunExpiry, expirable, expire_run_snapshots
from tests.inmemory import InMemoryExecutor

PREVIOUS_VERSIONS = int(METADATA_PROPERTIES["write.metadata.previous-versions-max"])


# --- the pinning rule ----------------------------------------------------------------------------

_LINEAGE = [(1, 1000), (2, 2000), (3, 3000), (4, 4000), (5, 5000), (6, 6000)]


@pytest.mark.parametrize("lineage, in_flight, keep_last, margin, run_start, expected", [
    pytest.param(_LINEAGE, [], 2, 0, 0, [1, 2, 3, 4], id="nothing in flight: all but the last"),
    pytest.param(_LINEAGE, [3500], 2, 0, 0, [1, 2], id="the snapshot current at the attempt's start stays"),
    pytest.param(_LINEAGE, [3000], 2, 0, 0, [1, 2], id="one committed at the very start may be the pinned one"),
    pytest.param(_LINEAGE, [5500], 2, 2000, 0, [1, 2], id="the margin moves the start earlier"),
    pytest.param(_LINEAGE, [5500, 2500], 2, 0, 0, [1], id="the oldest attempt in flight decides"),
    pytest.param(_LINEAGE, [500], 1, 0, 0, [], id="an attempt older than every commit pins them all"),
    pytest.param(_LINEAGE, [], 5, 0, 0, [1], id="the last keep_last stay"),
    pytest.param(_LINEAGE, [], 0, 0, 0, [1, 2, 3, 4, 5], id="the current one stays whatever keep_last"),
    pytest.param(_LINEAGE, [], 1, 0, 2500, [3, 4, 5], id="snapshots from before the run stay"),
    pytest.param([(1, 1000), (2, 2000), (3, 9000), (4, 3000), (5, 4000), (6, 5000)], [4500], 1, 0, 0, [1],
                 id="a commit time out of order ends the settled lead"),
    pytest.param([], [], 1, 0, 0, [], id="a table never written"),
    pytest.param([(1, 1000)], [], 1, 0, 0, [], id="only the current snapshot"),
])
def test_which_snapshots_may_expire(lineage, in_flight, keep_last, margin, run_start, expected):
    assert expirable(lineage, in_flight, now_ms=10_000, run_start_ms=run_start, keep_last=keep_last,
                     margin_ms=margin) == expected


# --- pyiceberg: many commits, bounded metadata -----------------------------------------------------

def _bronze_table(tmp_path: Path):
    """A SQLite catalog in tmp_path holding a (two-column) bronze table with the metadata properties."""
    import pyarrow as pa
    from pyiceberg.catalog.sql import SqlCatalog

    catalog = CatalogConfig(name="lh", warehouse=str(tmp_path / "warehouse"))
    catalog.warehouse_path.mkdir(parents=True)
    iceberg = SqlCatalog(catalog.name, uri=sqlalchemy_uri(catalog), warehouse=catalog.warehouse_uri)
    iceberg.create_namespace(BRONZE.namespace)
    schema = pa.schema([("location_key", pa.string()), ("n", pa.int64())])
    table = iceberg.create_table((BRONZE.namespace, BRONZE.name), schema=schema, properties=METADATA_PROPERTIES)
    return catalog, iceberg, table


def _commit(table, n: int) -> None:
    import pyarrow as pa

    table.append(pa.table({"location_key": ["hanoi"], "n": [n]}, schema=table.schema().as_arrow()))


def _metadata_files(catalog: CatalogConfig) -> list[Path]:
    return sorted((catalog.warehouse_path / BRONZE.namespace / BRONZE.name / "metadata").glob("*.metadata.json"))


def _run(catalog: CatalogConfig) -> tuple:
    ledger = open_ledger(catalog)
    record = RunRecord(new_run_id(), {"settings": {"catalog": {"warehouse": catalog.warehouse}}}, [],
                       created_at=(dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=1)).isoformat())
    return ledger, record


def _bronze_task() -> TaskRecord:
    return TaskRecord("bronze-2024-01-01", "bronze", "2024-01-01", "2024-01-02", status=ChunkStatus.SUCCEEDED)


def test_sixty_commits_keep_the_metadata_files_and_snapshots_bounded(tmp_path):
    catalog, iceberg, table = _bronze_table(tmp_path)
    ledger, record = _run(catalog)
    every, pinned_back = 10, 8  # an expiry every 10 commits; the oldest attempt in flight pinned 8 commits ago
    expiry = RunExpiry(catalog, ledger, record, every=every, margin_s=0)
    began: list[float] = []  # began[i]: an attempt that began just after commit i-1 (the one it pins)
    most = 0
    for i in range(60):
        began.append(time.time())
        time.sleep(0.002)  # commit times are milliseconds: the next commit is stamped after the attempt began
        _commit(table, i)
        last = i == 59  # the barrier: no attempt in flight
        expiry.after(_bronze_task(), [] if last else began[max(0, i - pinned_back + 1):], last=last)
        table.refresh()
        most = max(most, len(table.snapshots()))
        assert len(_metadata_files(catalog)) <= PREVIOUS_VERSIONS + 1
        if (i + 1) % every == 0 and not last:  # just expired: the pinned snapshot and every one after it
            assert len(table.snapshots()) == pinned_back + 1
    assert most <= pinned_back + every  # flat: it does not grow with the number of commits
    assert len(table.snapshots()) == KEEP_LAST and expiry.expired == 60 - KEEP_LAST
    assert sorted(table.scan().to_arrow().column("n").to_pylist()) == list(range(60))  # no data file touched
    assert len(table.metadata.metadata_log) <= PREVIOUS_VERSIONS and len(table.metadata.snapshot_log) == KEEP_LAST
    iceberg.close()


def test_another_live_runs_attempt_pins_too_and_snapshots_before_the_run_stay(tmp_path):
    catalog, iceberg, table = _bronze_table(tmp_path)
    for i in range(3):  # earlier history: `maintain` decides on it
        _commit(table, i)
    time.sleep(1.1)
    ledger, record = _run(catalog)  # started a second ago: after those three
    for i in range(3, 6):
        _commit(table, i)
    time.sleep(1.1)  # ledger times are whole seconds: the other attempt's start is after commit 5
    task = TaskRecord("bronze-2023-01", "bronze", "2023-01-01", "2023-02-01", status=ChunkStatus.RUNNING,
                      updated_at=utcnow())
    for i in range(6, 12):
        _commit(table, i)
    ledger.save(RunRecord(new_run_id(), record.request, [task], driver={"host": socket.gethostname(),
                                                                         "pid": os.getpid()}, heartbeat_at=utcnow()))
    before = [s.snapshot_id for s in table.snapshots()]
    RunExpiry(catalog, ledger, record, every=1, margin_s=0).after(_bronze_task(), [], last=True)
    table.refresh()
    # the run's first two go; the one current when the other run's attempt began, and all after it, stay
    assert [s.snapshot_id for s in table.snapshots()] == before[:3] + before[5:]
    iceberg.close()


def test_expiry_failures_are_logged_and_never_raised_and_other_catalogs_are_skipped(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="ray_backfill.maintain")
    catalog = CatalogConfig(name="lh", warehouse=str(tmp_path / "warehouse"))
    catalog.warehouse_path.mkdir(parents=True)
    catalog.sqlite_file.write_bytes(b"this is not a SQLite database" * 100)
    ledger, record = _run(catalog)
    expiry = RunExpiry(catalog, ledger, record, every=1)
    expiry.after(_bronze_task(), [], last=True)
    assert expiry.pending == 1  # tried again after the next commit
    failed = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(failed) == 1 and failed[0].getMessage().startswith(
        "in-run snapshot expiry of bronze.open_meteo_hourly failed, tried again after the next commit: ")
    assert "\n" not in failed[0].getMessage()

    caplog.clear()
    hadoop = CatalogConfig(name="lh", kind="hadoop", warehouse=str(tmp_path / "hadoop"))
    skipped = RunExpiry(hadoop, ledger, record, every=1)
    skipped.after(_bronze_task(), [], last=True)
    assert not skipped.enabled and skipped.pending == 0
    assert [r.getMessage() for r in caplog.records] == [
        "in-run snapshot expiry is off: pyiceberg does not open a hadoop catalog; `ray-backfill maintain` "
        "expires the run's snapshots (docs/operations.md#long-runs-metadata)"]
    assert expire_run_snapshots(catalog.__class__(name="lh", warehouse=str(tmp_path / "none")), 0.0, []) == 0



@dataclasses.dataclass
class _Committing(InMemoryExecutor):
    """The in-memory executor, but its bronze attempts commit to a real table as a range replace
    does: pin the current snapshot when they begin, commit when they end; a pin gone by then is lost."""

    table: object = None
    pins: dict = dataclasses.field(default_factory=dict)
    lost: list = dataclasses.field(default_factory=list)
    most: int = 0

    def start(self, task):
        call = super().start(task)
        call.polls_left = 1 + len(self.started) % 5  # attempts of different lengths: always some in flight
        if task.stage == "bronze":
            self.table.refresh()
            self.pins[id(call)] = self.table.metadata.current_snapshot_id
        return call

    def wait(self, handles, timeout_s):
        done = super().wait(handles, timeout_s)
        for call, result in done:
            if call.task.stage == "bronze" and result.ok:
                self.table.refresh()
                pinned = self.pins.pop(id(call))
                if pinned is not None and self.table.snapshot_by_id(pinned) is None:
                    self.lost.append(call.task.task_id)
                _commit(self.table, len(self.started))
                self.most = max(self.most, len(self.table.snapshots()))
        return done


def test_the_run_loop_expires_during_the_run_and_at_the_barrier_and_never_a_pinned_snapshot(tmp_path, monkeypatch):
    import ray_backfill.maintain as maintain_module
    from tests.test_loop import _request, _run

    monkeypatch.setattr(maintain_module, "EXPIRE_EVERY", 4)
    monkeypatch.setattr(maintain_module, "KEEP_LAST", 1)
    monkeypatch.setattr(maintain_module, "PIN_MARGIN_S", 0.0)
    catalog, iceberg, table = _bronze_table(tmp_path)
    request = _request(tmp_path, granularity="weekly")
    request = dataclasses.replace(request, settings=request.settings.replace(catalog=catalog))
    executor = _Committing(slots=3, table=table)
    record, _ = _run(request, executor)
    chunks = len(record.by_stage("bronze"))
    assert record.outcome == "succeeded" and chunks >= 15
    assert executor.lost == []  # every attempt's pinned snapshot was there when it committed
    assert executor.most < chunks - 4  # expired while the run went on
    table.refresh()
    assert len(table.snapshots()) == 1  # the barrier: nothing in flight, the last KEEP_LAST stay
    iceberg.close()


# --- Spark: the writers' side ------------------------------------------------------------------------

def _overwrite_month(spark, name: str, month: int, n: int, validate_from: int | None = None) -> None:
    """One bronze-like commit: replace 2024-`month` with one row, as a chunk's range replace does."""
    from pyspark.sql import functions as F

    from jobs.writes import literal_ts

    lo, hi = dt.datetime(2024, month, 1), dt.datetime(2024, month + 1, 1)
    df = spark.range(1).select(F.lit("hanoi").alias("location_key"), literal_ts(lo).alias("ts_utc"),
                               F.lit(float(n)).alias("pm25"))
    for f in BRONZE.fields:
        if f.name not in df.columns:
            df = df.withColumn(f.name, F.lit(None))
    writer = BRONZE.conform(df).writeTo(name)
    if validate_from is not None:
        writer = writer.option("validate-from-snapshot-id", str(validate_from)).option("isolation-level",
                                                                                      "serializable")
    writer.overwrite((F.col("ts_utc") >= literal_ts(lo)) & (F.col("ts_utc") < literal_ts(hi)))


def _snapshot_ids(spark, name: str) -> list[int]:
    return [int(r[0]) for r in spark.sql(f"SELECT snapshot_id FROM {name}.snapshots ORDER BY committed_at").collect()]


@pytest.mark.spark
def test_spark_commits_keep_metadata_bounded_and_a_kept_pin_still_commits_after_an_expiry(spark, fresh_settings):
    from jobs.tables import ensure_tables
    from jobs.writes import current_snapshot_id

    catalog = fresh_settings.catalog
    name = BRONZE.qualified(catalog)
    props = {r[0]: r[1] for r in spark.sql(f"SHOW TBLPROPERTIES {name}").collect()}
    assert METADATA_PROPERTIES.items() <= props.items()
    # a table from before: prepare gives it the properties, and a second prepare changes nothing
    spark.sql(f"ALTER TABLE {name} UNSET TBLPROPERTIES ('write.metadata.delete-after-commit.enabled', "
              "'write.metadata.previous-versions-max')")
    ensure_tables(spark, catalog)
    metadata = catalog.warehouse_path / BRONZE.namespace / BRONZE.name / "metadata"
    files = sorted(metadata.glob("*.metadata.json"))
    ensure_tables(spark, catalog)
    assert sorted(metadata.glob("*.metadata.json")) == files
    assert METADATA_PROPERTIES.items() <= {r[0]: r[1] for r in spark.sql(f"SHOW TBLPROPERTIES {name}").collect()}.items()

    run_start = time.time() - 1
    for i in range(24):  # daily chunks of three months: each replaces its month's file
        _overwrite_month(spark, name, 1 + i % 3, i)
    assert len(list(metadata.glob("*.metadata.json"))) <= PREVIOUS_VERSIONS + 1
    # overwrites drop the manifests they empty: about one per month, far from the 100 that trigger a merge
    assert spark.table(f"{name}.manifests").count() <= 4
    before = max(metadata.glob("*.metadata.json"), key=lambda p: p.stat().st_mtime).stat().st_size

    began = time.time()  # an attempt begins, then pins the current snapshot (jobs/writes.replace_range)
    time.sleep(0.05)
    pinned = current_snapshot_id(spark, name)
    time.sleep(0.05)
    for month in (4, 5):  # other chunks commit meanwhile
        _overwrite_month(spark, name, month, month)
    expire_run_snapshots(catalog, run_start, [began], margin_s=0, keep_last=1)
    assert _snapshot_ids(spark, name)[0] == pinned and len(_snapshot_ids(spark, name)) == 3
    after = max(metadata.glob("*.metadata.json"), key=lambda p: p.stat().st_mtime).stat().st_size
    assert after < before / 3
    _overwrite_month(spark, name, 1, 100, validate_from=pinned)  # the attempt commits: its history is there

    # the rule's point: a pinned snapshot expired anyway fails the writer's validation (a retry re-pins)
    stale = current_snapshot_id(spark, name)
    _overwrite_month(spark, name, 6, 6)
    expire_run_snapshots(catalog, run_start, [], margin_s=0, keep_last=1)
    assert stale not in _snapshot_ids(spark, name)
    with pytest.raises(Exception, match="Cannot determine history"):
        _overwrite_month(spark, name, 2, 200, validate_from=stale)
    rows = {r[0].month: r[1] for r in spark.table(name).select("ts_utc", "pm25").collect()}
    assert rows == {1: 100.0, 2: 22.0, 3: 23.0, 4: 4.0, 5: 5.0, 6: 6.0}
