"""build_silver on tiny inline bronze frames; every expected value is worked out by hand."""

from __future__ import annotations

import math
from datetime import date, datetime, timedelta, timezone

import pytest

from jobs.errors import DateRangeError
from jobs.silver import build_silver
from jobs.tables import BRONZE, POLLUTANT_CODES, SILVER

pytestmark = pytest.mark.spark

# Hour h of the tests is DAY0 + h hours; the output range usually starts at h = 24.
DAY0 = datetime(2024, 3, 1, tzinfo=timezone.utc)
RUN_ID = "run-test"


def hour(h: int) -> datetime:
    return DAY0 + timedelta(hours=h)


def naive(h: int) -> datetime:
    """The naive-UTC form build_silver takes for start and end."""
    return hour(h).replace(tzinfo=None)


def bronze_row(h: int, location: str = "lyon", ingested: int = 0, chunk: str = "2024-03", **values) -> dict:
    """A bronze row at hour h with every concentration NULL unless given; `ingested` in seconds."""
    row = {c: None for c in BRONZE.column_names}
    row.update(
        location_key=location,
        ts_utc=hour(h),
        date_utc=hour(h).date(),
        latitude=45.75,
        longitude=4.85,
        aqi=42,
        model_domain="cams_europe",
        source="synthetic",
        _ingested_at=DAY0 + timedelta(days=30, seconds=ingested),
        _run_id="bronze-run",
        _chunk_id=chunk,
    )
    row.update(values)
    return row


def bronze_df(spark, rows):
    # Aware UTC datetimes: pyspark reads naive ones in the process's local time zone.
    return spark.createDataFrame([tuple(r[c] for c in BRONZE.column_names) for r in rows], BRONZE.ddl())


def silver_rows(spark, rows, start: int = 24, end: int = 25) -> dict:
    """build_silver over hours [start, end) as {(location, h): row}, checking the key is unique."""
    from pyspark.sql import functions as F

    out = build_silver(bronze_df(spark, rows), naive(start), naive(end), RUN_ID)
    offset = (F.col("ts_utc").cast("long") - int(DAY0.timestamp())) / 3600
    collected = out.withColumn("_h", offset.cast("int")).collect()
    keyed = {(r.location_key, r._h): r for r in collected}
    assert len(keyed) == len(collected), "more than one row per (location_key, ts_utc)"
    return keyed


def test_columns_types_and_one_row_per_hour(spark):
    rows = [bronze_row(h, pm25=5.0) for h in range(20, 27)] + [bronze_row(24, ingested=-10, pm25=7.0)]
    out = build_silver(bronze_df(spark, rows), naive(24), naive(26), RUN_ID)
    assert out.columns == SILVER.column_names
    expected_types = [f.type.lower() for f in SILVER.fields]
    assert [f.dataType.simpleString() for f in out.schema.fields] == expected_types
    # Hours 24 and 25 only: 20–23 are look-back, 26 is the (open) end.
    assert out.count() == 2
    assert {r._run_id for r in out.collect()} == {RUN_ID}


def test_latest_ingested_wins_and_is_flagged(spark):
    rows = [
        bronze_row(24, ingested=0, pm25=10.0, latitude=1.0),
        bronze_row(24, ingested=60, pm25=20.0, latitude=2.0),
        bronze_row(24, ingested=30, pm25=30.0, latitude=3.0),
        bronze_row(24, location="nice", pm25=4.0),
    ]
    out = silver_rows(spark, rows)
    assert (out["lyon", 24].pm25, out["lyon", 24].latitude, out["lyon", 24].dq_flags) == (20.0, 2.0, ["dup"])
    # Collected timestamps are naive local time; .timestamp() reads them back the same way.
    assert out["lyon", 24]._ingested_at.timestamp() == (DAY0 + timedelta(days=30, seconds=60)).timestamp()
    assert (out["nice", 24].pm25, out["nice", 24].dq_flags) == (4.0, [])


def test_tie_broken_by_chunk_id_then_values_not_row_order(spark):
    same_time = [bronze_row(24, chunk="2024-03", pm25=float(v)) for v in (11, 12, 13, 14)]
    later_chunk = [bronze_row(24, location="nice", chunk=c, pm25=v) for c, v in (("2024-02", 1.0), ("2024-03", 2.0))]
    forward = silver_rows(spark, same_time + later_chunk)
    backward = silver_rows(spark, list(reversed(same_time + later_chunk)))
    # The greatest _chunk_id wins ("2024-03" > "2024-02").
    assert forward["nice", 24].pm25 == backward["nice", 24].pm25 == 2.0
    # Otherwise identical rows: the value hash decides, whichever order the rows arrive in.
    assert forward["lyon", 24].pm25 == backward["lyon", 24].pm25
    assert forward["lyon", 24].pm25 in (11.0, 12.0, 13.0, 14.0)


def test_implausible_values_nulled_and_flagged_row_kept(spark):
    rows = [bronze_row(24, pm25=-1.0, pm10=25000.0, o3=math.nan, no2=30.0, co2=420.0, uv_index=51.0)]
    row = silver_rows(spark, rows)["lyon", 24]
    assert (row.pm25, row.pm10, row.o3, row.uv_index) == (None, None, None, None)
    assert (row.no2, row.co2) == (30.0, 420.0)
    # NaN is flagged as nan_ only, not also as above the ceiling (Spark sorts NaN above numbers).
    assert row.dq_flags == ["max_pm10", "max_uv_index", "nan_o3", "neg_pm25"]
    # Two of ten left: no2 and co2.
    assert row.data_completeness == 20.0


def test_pm25_24h_mean_reaches_back_before_start(spark):
    # Hours 1–23 (before start = 24) at 10, hours 24 and 25 at 34; hour 0 at 1000 lies outside
    # every output hour's 24-h window; hour 26 is at the open end.
    rows = [bronze_row(0, pm25=1000.0)] + [bronze_row(h, pm25=10.0) for h in range(1, 24)]
    rows += [bronze_row(h, pm25=34.0) for h in (24, 25, 26)]
    out = silver_rows(spark, rows, start=24, end=26)
    assert sorted(out) == [("lyon", 24), ("lyon", 25)]
    # h24: (23 × 10 + 34) / 24 = 11.0 → 49/26.3 × (11.0 − 9.1) + 51 = 54.54 → 55
    # h25: (22 × 10 + 2 × 34) / 24 = 12.0 → 49/26.3 × (12.0 − 9.1) + 51 = 56.40 → 56
    assert (out["lyon", 24].pm25_24h, out["lyon", 24].aqi_pm25) == (11.0, 55)
    assert (out["lyon", 25].pm25_24h, out["lyon", 25].aqi_pm25) == (12.0, 56)
    first = out["lyon", 24]
    assert (first.aqi, first.aqi_category, first.dominant_pollutant, first.source_aqi) == (55, "moderate", "pm25", 42)


def test_75_percent_rule_counts_clock_hours(spark):
    # Window of h24 is hours 1–24. "full": rows every hour, pm25 = 20 at 7–24 (18 of 24).
    # "short": pm25 = 20 at 8–24 (17 of 24). "gap": rows 0–24 without hour 15, pm25 = 20 at 0
    # and 7–24: 17 clock hours in the window, though the last 24 rows hold 18 values.
    rows = [bronze_row(h, location="full", pm25=20.0 if h >= 7 else None) for h in range(1, 25)]
    rows += [bronze_row(h, location="short", pm25=20.0 if h >= 8 else None) for h in range(1, 25)]
    rows += [bronze_row(h, location="gap", pm25=20.0 if h == 0 or h >= 7 else None) for h in range(25) if h != 15]
    out = silver_rows(spark, rows)
    # 20.0 → 49/26.3 × (20.0 − 9.1) + 51 = 71.31 → 71
    assert (out["full", 24].pm25_24h, out["full", 24].aqi_pm25) == (20.0, 71)
    assert (out["short", 24].pm25_24h, out["short", 24].aqi_pm25, out["short", 24].aqi) == (None, None, None)
    assert (out["gap", 24].pm25_24h, out["gap", 24].aqi_pm25) == (None, None)
    assert (out["short", 24].aqi_category, out["short", 24].dominant_pollutant) == (None, None)


def test_o3_8h_and_1h_rule_end_to_end(spark):
    # ppm = µg/m³ × 24.45 / 48 / 1000, truncated to 0.001.
    # "low": 120 for hours 17–24: 8-h 0.061125 → 0.061: 49/15 × 6 + 51 = 70.6 → 71; 1-h < 0.125.
    # "spike": 120 for 17–23, 350 at 24: 8-h (7 × 120 + 350) / 8 = 148.75 → 0.0757 → 0.075:
    #   49/14 × 4 + 101 = 115; 1-h 350 → 0.17828 → 0.178: 49/39 × 13 + 151 = 167.33 → 167 wins.
    # "high": 450 for 17–24: 8-h 0.229 > 0.200, so the 1-h index alone: 99/199 × 24 + 201 → 213.
    # "sparse": 120 at 19–24 only: 6 of 8 hours is enough → 71; "sparser" 20–24 (5 of 8) → NULL.
    rows = [bronze_row(h, location="low", o3=120.0) for h in range(17, 25)]
    rows += [bronze_row(h, location="spike", o3=350.0 if h == 24 else 120.0) for h in range(17, 25)]
    rows += [bronze_row(h, location="high", o3=450.0) for h in range(17, 25)]
    rows += [bronze_row(h, location="sparse", o3=120.0) for h in range(19, 25)]
    rows += [bronze_row(h, location="sparser", o3=120.0) for h in range(20, 25)]
    out = silver_rows(spark, rows)
    assert out["spike", 24].o3_8h == 148.75
    assert {loc: out[loc, 24].aqi_o3 for loc in ("low", "spike", "high", "sparse", "sparser")} == {
        "low": 71, "spike": 167, "high": 213, "sparse": 71, "sparser": None,
    }
    high = out["high", 24]
    assert (high.aqi, high.aqi_category, high.dominant_pollutant) == (213, "very_unhealthy", "o3")


def test_gases_use_their_averaging_times(spark):
    # CO 5000 µg/m³ for hours 17–24 (8-h): 5000 × 24.45 / 28.01 = 4364.5 ppb → 4.3 ppm: 50/4.4 × 4.3 → 49.
    # NO2 100 at 24 (1-h): 53.14 ppb → 53 → 50. SO2 100 at 24 (1-h): 38.16 ppb → 38: 49/39 × 2 + 51 → 54.
    # PM10 100 at 24 only: 1 of 24 hours, no 24-h mean.
    rows = [bronze_row(h, co=5000.0) for h in range(17, 24)]
    rows += [bronze_row(24, co=5000.0, no2=100.0, so2=100.0, pm10=100.0)]
    row = silver_rows(spark, rows)["lyon", 24]
    assert (row.aqi_co, row.aqi_no2, row.aqi_so2, row.aqi_pm10, row.aqi_pm25) == (49, 50, 54, None, None)
    assert (row.aqi, row.aqi_category, row.dominant_pollutant) == (54, "moderate", "so2")
    assert row.so2_24h is None  # 1 of 24 hours


def test_completeness_and_time_keys(spark):
    full = {c: 1.0 for c in POLLUTANT_CODES}
    rows = [bronze_row(24, **full), bronze_row(37, **dict(full, pm25=None, dust=None, co2=None))]
    rows += [bronze_row(47, pm10=5.0)]
    out = silver_rows(spark, rows, start=24, end=48)
    assert [out["lyon", h].data_completeness for h in (24, 37, 47)] == [100.0, 70.0, 10.0]
    # h24 = 2024-03-02 00:00, h37 = 2024-03-02 13:00, h47 = 2024-03-02 23:00 (UTC).
    assert [(out["lyon", h].date_key, out["lyon", h].time_key) for h in (24, 37, 47)] == [
        (20240302, 0), (20240302, 1300), (20240302, 2300),
    ]
    assert out["lyon", 47].date_utc == date(2024, 3, 2)


def test_range_must_be_on_the_hour_and_not_empty(spark):
    bronze = bronze_df(spark, [bronze_row(24)])
    with pytest.raises(DateRangeError):
        build_silver(bronze, naive(24) + timedelta(minutes=30), naive(25), RUN_ID)
    with pytest.raises(DateRangeError):
        build_silver(bronze, naive(25), naive(25), RUN_ID)
