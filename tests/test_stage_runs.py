"""Stages end to end on real Iceberg tables: idempotency, ranged re-runs, chunked == whole, a
bronze chunk refused for an incomplete answer, and a re-run limited to some pollutants."""

from __future__ import annotations

import datetime as dt

import pandas as pd
import pytest
from pyspark.sql import functions as F

from jobs.bronze import VALUE_COLUMNS, fetch_chunk
from jobs.config import PipelineConfig, SourceConfig
from jobs.context import load_inputs
from jobs.dates import Chunk, DateRange
from jobs.errors import ConfigError, IncompleteChunkError
from jobs.inspect import table_checksum
from jobs.sources.fake_server import FakeOpenMeteoServer
from jobs.sources.synthetic import SyntheticSource
from jobs.tables import ALL_TABLES, BRONZE, FACT_EPISODE, SILVER
from jobs.tasks import Task, run_task, warm_session
from jobs.writes import current_snapshot_id
from ray_backfill.executors.sequential import SequentialExecutor
from ray_backfill.loop import RetryPolicy
from ray_backfill.request import BackfillRequest
from ray_backfill.runner import run_backfill

pytestmark = [pytest.mark.spark, pytest.mark.integration]

KEYS = ("hanoi", "hcmc")
JAN = Chunk(dt.date(2024, 1, 1), dt.date(2024, 2, 1))
MARCH_3 = Chunk(dt.date(2024, 3, 1), dt.date(2024, 3, 4))  # chunk id 2024-03-01_2024-03-03, 72 hours


def _inputs(keys=KEYS):
    return load_inputs(PipelineConfig(locations=keys))


def _run(spark, settings, stage, chunk, inputs, run_id="r1"):
    task = Task(f"{stage}-{chunk.chunk_id}", stage, chunk, 1, run_id)
    return run_task(task, settings, inputs, warm_session(spark)).tables


def _checksums(spark, settings, where=None):
    out = {}
    for spec in ALL_TABLES:
        df = spark.table(spec.qualified(settings.catalog))
        if where is not None and spec.namespace != "gold":
            df = df.where(where)
        out[spec.name] = table_checksum(df)
    return out


def _all_stages(spark, settings, chunk, inputs, run_id="r1"):
    for stage in ("bronze", "silver", "gold"):
        _run(spark, settings, stage, chunk, inputs, run_id)


def test_reruns_of_the_range_or_a_sub_range_leave_identical_tables_and_touch_nothing_outside(spark, fresh_settings):
    inputs = _inputs()
    _all_stages(spark, fresh_settings, JAN, inputs, "whole")
    first = _checksums(spark, fresh_settings)
    mid = Chunk(dt.date(2024, 1, 10), dt.date(2024, 1, 20))
    outside = (F.col("ts_utc") < F.lit("2024-01-10").cast("timestamp")) | (
        F.col("ts_utc") >= F.lit("2024-01-20").cast("timestamp"))
    bronze_table = BRONZE.qualified(fresh_settings.catalog)

    def outside_rows():
        return table_checksum(spark.table(bronze_table).where(outside)), \
            spark.table(bronze_table).where(outside).select("_run_id").distinct().collect()

    before = outside_rows()
    _all_stages(spark, fresh_settings, mid, inputs, "partial")
    assert outside_rows() == before
    runs = {r[0] for r in spark.table(bronze_table).select("_run_id").distinct().collect()}
    assert runs == {"whole", "partial"}
    # every stage run again over the whole range gives the tables of the first run
    _all_stages(spark, fresh_settings, JAN, inputs, "whole-again")
    again = _checksums(spark, fresh_settings)
    assert again == first
    bronze = spark.table(bronze_table)
    # 2 cities x 31 days x 24 h, each hour once
    assert bronze.count() == 2 * 31 * 24
    assert [r[0] for r in bronze.select("_run_id").distinct().collect()] == ["whole-again"]
    silver = spark.table(SILVER.qualified(fresh_settings.catalog))
    assert silver.count() == silver.select("location_key", "ts_utc").distinct().count()
    # and the content is the same as before everywhere, the re-run range included
    _all_stages(spark, fresh_settings, mid, inputs, "partial-again")
    assert _checksums(spark, fresh_settings) == again


def test_rerun_for_one_location_keeps_the_others(spark, fresh_settings):
    _all_stages(spark, fresh_settings, JAN, _inputs(), "both")
    table = SILVER.qualified(fresh_settings.catalog)
    hcmc_before = table_checksum(spark.table(table).where(F.col("location_key") == "hcmc"))
    _all_stages(spark, fresh_settings, JAN, _inputs(("hanoi",)), "hanoi-only")
    assert table_checksum(spark.table(table).where(F.col("location_key") == "hcmc")) == hcmc_before
    by_run = dict(spark.table(table).groupBy("location_key").agg(F.max("_run_id")).collect())
    assert by_run == {"hanoi": "hanoi-only", "hcmc": "both"}


def test_chunked_run_equals_whole_run(spark, fresh_settings, tmp_path):
    """Rolling windows and episodes reach across chunk edges, so chunking changes nothing."""
    inputs = _inputs()
    whole = Chunk(dt.date(2024, 1, 1), dt.date(2024, 2, 15))
    _all_stages(spark, fresh_settings, whole, inputs)
    reference = _checksums(spark, fresh_settings)
    episodes = spark.table(FACT_EPISODE.qualified(fresh_settings.catalog)).count()
    assert episodes > 0, "the synthetic winter in Hanoi should hold pollution episodes"
    # Rebuild silver and gold piecewise, with edges in the middle of days' windows and episodes.
    for piece in (Chunk(dt.date(2024, 1, 1), dt.date(2024, 1, 9)), Chunk(dt.date(2024, 1, 9), dt.date(2024, 2, 1)),
                  Chunk(dt.date(2024, 2, 1), dt.date(2024, 2, 15))):
        _run(spark, fresh_settings, "silver", piece, inputs)
        _run(spark, fresh_settings, "gold", piece, inputs)
    assert _checksums(spark, fresh_settings) == reference


def test_a_second_session_in_one_process_is_refused_and_the_first_survives(spark, spark_settings):
    from jobs.errors import StageError
    from ray_backfill.sessions import spark_session

    with pytest.raises(StageError, match="already running in this process"):
        with spark_session(spark_settings, "second"):
            pass
    assert spark.range(3).count() == 3


class _SharedSessionExecutor(SequentialExecutor):
    """The sequential executor on the tests' session: a process may run only one."""

    def __init__(self, spark, *args):
        super().__init__(*args)
        self._shared = spark

    def __enter__(self):
        self.spark = self._shared
        return self

    def __exit__(self, *exc):
        self.spark = None


def _bronze_state(spark, settings):
    table = BRONZE.qualified(settings.catalog)
    return current_snapshot_id(spark, table), table_checksum(spark.table(table))


def test_an_incomplete_answer_fails_the_chunk_names_the_gap_and_keeps_the_stored_rows(spark, fresh_settings):
    with FakeOpenMeteoServer(locations=_inputs().all_locations) as server:
        settings = fresh_settings.replace(
            source=SourceConfig(kind="open-meteo", api_url=server.url, profile="unlimited", backoff_s=0.01),
            pipeline=PipelineConfig(locations=KEYS))
        assert _run(spark, settings, "bronze", MARCH_3, _inputs(), "complete") == {BRONZE.full_name: 2 * 72}
        before = _bronze_state(spark, settings)
        for damage, gap in [
            ("drop-last-hours:24", "answered 48 of 72 hours, missing 2024-03-03T00:00Z .. 2024-03-03T23:00Z"),
            ("empty-time", "answered 0 of 72 hours, missing 2024-03-01T00:00Z .. 2024-03-03T23:00Z"),
            ("drop-variable:ozone", "left out variable 'ozone'"),
            ("repeat-hour:5", "sent 1 hour more than once (2024-03-01T05:00Z)"),
        ]:
            server.reset()
            server.damage("hcmc", damage)
            with pytest.raises(IncompleteChunkError) as caught:
                _run(spark, settings, "bronze", MARCH_3, _inputs(), "damaged")
            assert str(caught.value) == (f"incomplete chunk 2024-03-01_2024-03-03 for location 'hcmc': open-meteo "
                                         f"{gap}; nothing was written")
            assert _bronze_state(spark, settings) == before  # no commit at all
        # A whole run: the chunk fails every attempt, the ledger and the output name the gap, silver waits.
        lines: list[str] = []
        request = BackfillRequest(settings=settings, date_range=DateRange(MARCH_3.start, MARCH_3.last_day),
                                  executor="sequential", retries=1)
        executor = _SharedSessionExecutor(spark, settings, _inputs(), request.run_id)
        record = run_backfill(request, echo=lines.append, executor=executor,
                              retry=RetryPolicy(base_s=0.001, cap_s=0.001))
    states = {t.task_id: (t.status.value, t.attempts, t.error) for t in record.tasks}
    message = "incomplete chunk 2024-03-01_2024-03-03 for location 'hcmc': open-meteo sent 1 hour more than once"
    assert record.outcome == "failed"
    assert states["bronze-2024-03-01_2024-03-03"][:2] == ("failed", 2)
    assert states["bronze-2024-03-01_2024-03-03"][2].startswith(message)
    assert states["silver"][0] == "pending" and states["gold"][0] == "pending"
    assert any(message in line for line in lines)
    assert _bronze_state(spark, settings) == before


def _bronze_rows(spark, settings) -> pd.DataFrame:
    frame = spark.table(BRONZE.qualified(settings.catalog)).toPandas()
    frame[list(VALUE_COLUMNS)] = frame[list(VALUE_COLUMNS)].astype(float)  # NULL -> NaN, INT -> float
    frame["ts_utc"] = frame["ts_utc"].astype("datetime64[ns]")  # naive UTC (the session's time zone)
    return frame.sort_values(["location_key", "ts_utc"]).set_index(["location_key", "ts_utc"])


def test_a_rerun_with_fewer_pollutants_replaces_only_their_columns(spark, fresh_settings):
    three = ("hanoi", "hcmc", "danang")
    _run(spark, fresh_settings, "bronze", MARCH_3, _inputs(three), "all")
    before = _bronze_rows(spark, fresh_settings)
    assert before[list(VALUE_COLUMNS)].notna().mean().min() > 0.95  # every column was filled
    # pm25 only, for two of the three cities, from another seed: the pm25 columns' values change
    narrow = load_inputs(PipelineConfig(locations=KEYS, pollutants=("pm25",)))
    assert narrow.variables == ("pm2_5", "us_aqi", "us_aqi_pm2_5")
    reseeded = fresh_settings.replace(source=SourceConfig(seed=8))
    _run(spark, reseeded, "bronze", MARCH_3, narrow, "pm25-only")
    after = _bronze_rows(spark, fresh_settings)
    assert after.index.equals(before.index)

    asked = ["aqi", "aqi_pm25", "pm25"]
    kept = [c for c in VALUE_COLUMNS if c not in asked]
    assert len(kept) == 14
    rerun = after.index.get_level_values("location_key").isin(KEYS)
    pd.testing.assert_frame_equal(after.loc[rerun, kept], before.loc[rerun, kept])
    fresh = fetch_chunk(SyntheticSource(seed=8), MARCH_3, narrow.locations, narrow.variables).frame
    fresh = fresh.set_index(["location_key", "ts_utc"]).sort_index()[asked].astype(float)
    fresh.index = fresh.index.set_levels(fresh.index.levels[1].tz_localize(None), level=1)
    pd.testing.assert_frame_equal(after.loc[rerun, asked], fresh, check_names=False)
    assert (after.loc[rerun, "pm25"] != before.loc[rerun, "pm25"]).mean() > 0.9
    assert set(after.loc[rerun, "_run_id"]) == {"pm25-only"}
    # danang was not asked for: every column of its rows as before
    pd.testing.assert_frame_equal(after.loc[~rerun], before.loc[~rerun])

    # Stored values of another source are not relabelled: refused, nothing written.
    state = _bronze_state(spark, fresh_settings)
    with FakeOpenMeteoServer(locations=narrow.all_locations) as server:
        other = fresh_settings.replace(source=SourceConfig(kind="open-meteo", api_url=server.url, profile="unlimited"))
        with pytest.raises(ConfigError, match=r"^bronze chunk 2024-03-01_2024-03-03 holds rows of source 'synthetic' "
                                              r"\(domain 'synthetic'\) for location '(hanoi|hcmc)': --pollutants keeps "
                                              r".* re-run this range without --pollutants$"):
            _run(spark, other, "bronze", MARCH_3, narrow, "other-source")
    assert _bronze_state(spark, fresh_settings) == state


def test_each_task_counts_its_own_spark_jobs_stages_and_tasks_in_a_warm_session(spark, fresh_settings):
    inputs = _inputs()
    _run(spark, fresh_settings, "bronze", MARCH_3, inputs)
    works = [run_task(Task(f"silver-{i}", "silver", MARCH_3, 1, "r1"), fresh_settings, inputs,
                      warm_session(spark)).spark_work for i in range(2)]
    first, again = works
    assert 1 <= first["jobs"] <= first["stages"] <= first["tasks"], first
    # the second run of the same work counts its own jobs, not the session's so far (its tasks may
    # differ: it reads the files the first one wrote)
    assert (again["jobs"], again["stages"]) == (first["jobs"], first["stages"]) and again["tasks"] >= again["stages"]
