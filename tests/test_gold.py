"""Gold transforms on tiny inline silver DataFrames, with hand-checked expectations."""

from __future__ import annotations

import hashlib
from datetime import date, datetime, timedelta, timezone

import pytest

from jobs.config import PipelineConfig
from jobs.errors import ConfigError, DateRangeError
from jobs.gold import (
    build_dim_date,
    build_dim_location,
    build_dim_pollutant,
    build_dim_time,
    build_episodes,
    build_fact_daily,
    build_fact_hourly,
    episodes_touching,
    rule_code,
)
from jobs.inputs import Location, Pollutant
from jobs.tables import (
    DIM_DATE,
    DIM_LOCATION,
    DIM_POLLUTANT,
    DIM_TIME,
    FACT_DAILY,
    FACT_EPISODE,
    FACT_HOURLY,
    SILVER,
)

pytestmark = pytest.mark.spark

DAY = datetime(2024, 3, 1, tzinfo=timezone.utc)
_BANDS = ((50, "good"), (100, "moderate"), (150, "usg"), (200, "unhealthy"), (300, "very_unhealthy"))


def at(hour: int, day: datetime = DAY) -> datetime:
    """An aware UTC timestamp `hour` hours after midnight of `day` (hours past 23 roll over)."""
    return day + timedelta(hours=hour)


def collected(ts: datetime) -> datetime:
    """`ts` as collect() returns it: naive, in the Python process's local time zone."""
    return ts.astimezone().replace(tzinfo=None)


def category(aqi: int | None) -> str | None:
    """The aqi_category bands of docs/tables.md#aqi, so test rows stay consistent with their aqi."""
    if aqi is None:
        return None
    return next((name for top, name in _BANDS if aqi <= top), "hazardous")


def silver_row(location_key: str = "lyon", ts: datetime = DAY, aqi: int | None = None, **values) -> dict:
    """One silver row; keys follow from `ts`, aqi_category from `aqi`, everything else NULL."""
    row = {
        "location_key": location_key,
        "ts_utc": ts,
        "date_utc": ts.date(),
        "date_key": int(ts.strftime("%Y%m%d")),
        "time_key": ts.hour * 100,
        "aqi": aqi,
        "aqi_category": category(aqi),
        "dominant_pollutant": None if aqi is None else "pm25",
        "dq_flags": [],
        "_run_id": "silver-run",
    }
    unknown = set(values) - set(SILVER.column_names)
    assert not unknown, f"not silver columns: {unknown}"
    row.update(values)
    return row


def silver_df(spark, rows: list[dict]):
    return spark.createDataFrame(
        [tuple(row.get(name) for name in SILVER.column_names) for row in rows], SILVER.ddl()
    )


def assert_matches_spec(spark, df, spec) -> None:
    """Same column names, order and types as the table's DDL."""
    expected = spark.createDataFrame([], spec.ddl()).schema
    assert [(f.name, f.dataType) for f in df.schema] == [(f.name, f.dataType) for f in expected]


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


# --- dimensions -----------------------------------------------------------------------------


def test_dim_location_keeps_extra_fields_as_sorted_json(spark):
    locations = [
        # latitude given as a JSON integer must still land in the DOUBLE column
        Location("lyon", "Lyon", 45, 4.85, "Europe/Paris", extra={"zone": "urban", "country": "FR"}),
        Location("oslo", "Oslo", 59.91, 10.75, "Europe/Oslo"),
    ]
    df = build_dim_location(spark, locations)

    assert_matches_spec(spark, df, DIM_LOCATION)
    rows = {r.location_key: r for r in df.collect()}
    # keys sorted: country before zone, whatever order `extra` had
    assert rows["lyon"].attributes == '{"country":"FR","zone":"urban"}'
    assert rows["lyon"].latitude == 45.0
    # no unknown fields -> NULL, not "{}"
    assert rows["oslo"].attributes is None


def test_dim_pollutant_rows_and_nullable_fields(spark):
    pollutants = [
        Pollutant("pm25", "PM2.5", "µg/m³", "24h", 15),
        Pollutant("uv_index", "UV index", "", None),
    ]
    df = build_dim_pollutant(spark, pollutants)

    assert_matches_spec(spark, df, DIM_POLLUTANT)
    rows = {r.pollutant_code: r for r in df.collect()}
    assert rows["pm25"].who_guideline_24h == 15.0
    assert (rows["uv_index"].aqi_timespan, rows["uv_index"].who_guideline_24h) == (None, None)


def test_dim_time_has_24_hours_and_shift_boundaries(spark):
    df = build_dim_time(spark)

    assert_matches_spec(spark, df, DIM_TIME)
    rows = {r.hour: r for r in df.collect()}
    assert sorted(rows) == list(range(24))
    assert (rows[7].time_key, rows[7].time_label) == (700, "07:00")
    assert (rows[0].time_key, rows[0].time_label, rows[23].time_label) == (0, "00:00", "23:00")
    # each boundary: last hour of one shift, first hour of the next
    shifts = {h: rows[h].work_shift for h in (0, 5, 6, 11, 12, 17, 18, 23)}
    assert shifts == {
        0: "night", 5: "night",
        6: "morning", 11: "morning",
        12: "afternoon", 17: "afternoon",
        18: "evening", 23: "evening",
    }  # fmt: skip


def test_dim_date_is_continuous_with_iso_weekdays_and_weeks(spark):
    first, last = date(2024, 2, 27), date(2025, 1, 1)
    df = build_dim_date(spark, first, last)

    assert_matches_spec(spark, df, DIM_DATE)
    rows = {r.date_value: r for r in df.collect()}
    # continuous, both ends included: Feb 27-29 (a leap year) + 306 days of Mar-Dec + Jan 1
    assert len(rows) == df.count() == (last - first).days + 1 == 3 + 306 + 1
    assert min(rows) == first and max(rows) == last

    def view(d):
        r = rows[d]
        return (r.date_key, r.day_of_month, r.day_of_week, r.week_of_year, r.month, r.month_name,
                r.quarter, r.year, r.is_weekend)  # fmt: skip

    # leap day, a Thursday in ISO week 9 (2024-01-01 is a Monday, day 60 -> week 9)
    assert view(date(2024, 2, 29)) == (20240229, 29, 4, 9, 2, "February", 1, 2024, False)
    # Saturday and Sunday are the weekend, Sunday is 7 (Spark's dayofweek would say 1)
    assert view(date(2024, 3, 2))[2:] == (6, 9, 3, "March", 1, 2024, True)
    assert view(date(2024, 3, 3))[2:] == (7, 9, 3, "March", 1, 2024, True)
    assert rows[date(2024, 3, 4)].day_of_week == 1 and not rows[date(2024, 3, 4)].is_weekend
    # Sunday 2024-12-29 closes ISO week 52; Monday 2024-12-30 already opens week 1 of 2025
    assert view(date(2024, 12, 29))[2:4] == (7, 52)
    assert view(date(2024, 12, 30)) == (20241230, 30, 1, 1, 12, "December", 4, 2024, False)
    assert view(date(2025, 1, 1)) == (20250101, 1, 3, 1, 1, "January", 1, 2025, False)


def test_dim_date_iso_week_53_and_bounds(spark):
    rows = {r.date_value: r for r in build_dim_date(spark, date(2021, 1, 3), date(2021, 1, 4)).collect()}
    # 2021-01-03 is the Sunday ending ISO week 53 of 2020; the Monday after starts week 1
    assert (rows[date(2021, 1, 3)].week_of_year, rows[date(2021, 1, 3)].day_of_week) == (53, 7)
    assert (rows[date(2021, 1, 4)].week_of_year, rows[date(2021, 1, 4)].day_of_week) == (1, 1)
    # a single day is a valid range; a reversed one is refused
    assert build_dim_date(spark, date(2024, 2, 29), date(2024, 2, 29)).count() == 1
    with pytest.raises(DateRangeError, match="2024-03-02..2024-03-01"):
        build_dim_date(spark, date(2024, 3, 2), date(2024, 3, 1))


# --- fact_air_quality_hourly ------------------------------------------------------------------


def test_fact_hourly_ids_are_deterministic_and_columns_match(spark):
    silver = silver_df(
        spark,
        [
            silver_row("lyon", at(5), aqi=80, pm25=20.5, source_aqi=77),
            silver_row("lyon", at(6), aqi=60),
            silver_row("oslo", at(5), aqi=30),
        ],
    )
    first = build_fact_hourly(silver, "gold-1")
    second = build_fact_hourly(silver, "gold-2")

    assert_matches_spec(spark, first, FACT_HOURLY)
    ids = {(r.location_key, r.time_key): r.record_id for r in first.collect()}
    # the documented key string, so anyone can recompute an id outside Spark
    assert ids[("lyon", 500)] == sha256("lyon|2024-03-01T05:00:00Z")
    # another hour or another location gives another id; a rebuild gives the same ids
    assert len(set(ids.values())) == 3
    assert {(r.location_key, r.time_key): r.record_id for r in second.collect()} == ids
    row = first.where("location_key = 'lyon' AND time_key = 500").first()
    # silver values pass through; _run_id is the gold run's, not silver's
    assert (row.aqi, row.pm25, row.source_aqi, row.aqi_category) == (80, 20.5, 77, "moderate")
    assert row._run_id == "gold-1"
    assert row.ts_utc == collected(at(5))


# --- fact_city_daily ------------------------------------------------------------------------

# lyon on 2024-03-01: hours 0-17 have an aqi, hour 18 has a row without one, 19-23 are missing.
# Three hours tie at the day's highest aqi 320; their dominants are chosen so that "earliest"
# (pm10) differs from both the alphabetically first (no2) and the latest (pm25).
LYON_DAY = [  # (hour, aqi, dominant_pollutant)
    (0, 40, "pm25"), (1, 40, "pm25"), (2, 120, "o3"), (3, 320, "pm10"), (4, 40, "pm25"),
    (5, 75, "pm25"), (6, 75, "pm25"), (7, 160, "pm25"), (8, 250, "o3"), (9, 320, "no2"),
    (10, 40, "pm25"), (11, 40, "pm25"), (12, 75, "pm25"), (13, 120, "o3"), (14, 320, "pm25"),
    (15, 40, "pm25"), (16, 40, "pm25"), (17, 40, "pm25"), (18, None, None),
]  # fmt: skip
# pm25 on three hours only: 15.0 sits exactly on the WHO guideline, 15.5 and 32.5 exceed it.
LYON_PM25 = {0: 15.0, 1: 15.5, 2: 32.5}


def daily_silver(spark):
    rows = [
        silver_row(
            "lyon", at(h), aqi=aqi, dominant_pollutant=dom, pm25=LYON_PM25.get(h), co=0.5 if h == 7 else None
        )
        for h, aqi, dom in LYON_DAY
    ]
    rows.append(silver_row("lyon", at(24 + 9), aqi=55, dominant_pollutant="o3"))  # next day, one hour
    rows += [silver_row("oslo", at(h), aqi=10) for h in range(24)]  # a complete day
    rows.append(silver_row("nice", at(3)))  # a day whose only row has no aqi
    return silver_df(spark, rows)


def test_fact_daily_aggregates_one_day(spark):
    df = build_fact_daily(daily_silver(spark), "gold-1")

    assert_matches_spec(spark, df, FACT_DAILY)
    rows = {(r.location_key, r.date_utc): r for r in df.collect()}
    # grain: one row per location and UTC day
    assert len(rows) == 4
    lyon = rows[("lyon", date(2024, 3, 1))]
    assert (lyon.daily_id, lyon.date_key, lyon._run_id) == (sha256("lyon|2024-03-01"), 20240301, "gold-1")
    # 320 at hours 3, 9 and 14: the earliest (hour 3, pm10) decides
    assert (lyon.aqi_daily_max, lyon.dominant_pollutant_daily) == (320, "pm10")
    # NULLs skipped: mean (15.0 + 15.5 + 32.5) / 3 = 21.0, not 63 / 19; all-NULL so2 stays NULL
    assert (lyon.pm25_mean, lyon.pm25_max) == (21.0, 32.5)
    assert (lyon.co_mean, lyon.co_max, lyon.so2_mean, lyon.so2_max) == (0.5, 0.5, None, None)
    # good 0,1,4,10,11,15,16,17; moderate 5,6,12; usg 2,13; unhealthy 7; very 8; hazardous 3,9,14
    cats = ("good", "moderate", "usg", "unhealthy", "very_unhealthy", "hazardous")
    assert [lyon[f"hours_in_cat_{c}"] for c in cats] == [8, 3, 2, 1, 1, 3]
    # 15.0 is not above 15 (strictly greater): only 15.5 and 32.5 count
    assert lyon.hours_above_who_pm25 == 2
    # 19 rows but the NULL-aqi hour is not measured: 18 / 24 * 100
    assert (lyon.hours_measured, lyon.data_completeness) == (18, 75.0)


def test_fact_daily_other_days_and_who_parameter(spark):
    silver = daily_silver(spark)
    rows = {(r.location_key, r.date_utc): r for r in build_fact_daily(silver, "gold-1").collect()}

    oslo = rows[("oslo", date(2024, 3, 1))]
    assert (oslo.hours_measured, oslo.data_completeness, oslo.hours_in_cat_good) == (24, 100.0, 24)
    next_day = rows[("lyon", date(2024, 3, 2))]
    assert (next_day.aqi_daily_max, next_day.dominant_pollutant_daily) == (55, "o3")
    assert next_day.date_key == 20240302
    assert next_day.data_completeness == pytest.approx(100 / 24)
    assert next_day.daily_id != rows[("lyon", date(2024, 3, 1))].daily_id
    # no aqi at all: no peak hour, nothing measured
    nice = rows[("nice", date(2024, 3, 1))]
    assert (nice.aqi_daily_max, nice.dominant_pollutant_daily) == (None, None)
    assert (nice.hours_measured, nice.data_completeness) == (0, 0.0)
    # a lower guideline also counts the 15.0 hour
    stricter = build_fact_daily(silver, "gold-1", who_pm25=10.0)
    assert stricter.where("location_key = 'lyon' AND date_key = 20240301").first().hours_above_who_pm25 == 3


# --- fact_episode ---------------------------------------------------------------------------


def episode_silver(spark):
    lyon = [
        # 00-04 five hours at 160, 05 has no row at all, 06-08 three more hours at 160: the
        # missing hour splits them (runs over rows would report one 8-hour episode)
        *[silver_row("lyon", at(h), aqi=160) for h in (0, 1, 2, 3, 4, 6, 7, 8)],
        silver_row("lyon", at(9), aqi=100),
        # 10-13 exactly four hours at 170, 14 present but aqi NULL, then 15-17 three hours
        *[silver_row("lyon", at(h), aqi=170) for h in (10, 11, 12, 13)],
        silver_row("lyon", at(14)),
        *[silver_row("lyon", at(h), aqi=170) for h in (15, 16, 17)],
    ]
    # oslo 00-05: the threshold itself (151) qualifies; 200 at hours 1 (o3) and 3 (no2) tie, the
    # earliest wins (alphabetical would give no2); 150 at 06 ends the run
    oslo = [
        silver_row("oslo", at(h), aqi=aqi, dominant_pollutant=dom)
        for h, aqi, dom in [(0, 155, "pm25"), (1, 200, "o3"), (2, 180, "pm25"), (3, 200, "no2"),
                            (4, 151, "pm25"), (5, 160, "pm25"), (6, 150, "pm25")]
    ]  # fmt: skip
    # nice 22:00 on 1 March to 01:00 on 2 March: clock hours stay consecutive across midnight
    nice = [silver_row("nice", at(h), aqi=210) for h in (22, 23, 24, 25)]
    return silver_df(spark, lyon + oslo + nice)


def test_rule_code_formats_parameters():
    assert rule_code(151, 4) == "AQI>=151_4h"
    assert rule_code(201, 2) == "AQI>=201_2h"


def test_episodes_split_on_missing_and_null_hours(spark):
    df = build_episodes(episode_silver(spark), threshold=151, min_hours=4, run_id="gold-1")

    assert_matches_spec(spark, df, FACT_EPISODE)
    got = sorted(
        (r.location_key, r.start_ts_utc, r.end_ts_utc, r.duration_hours, r.peak_aqi) for r in df.collect()
    )
    assert got == sorted([
        # 00-04 kept; 06-08 is only 3 hours after the missing 05 and dropped
        ("lyon", collected(at(0)), collected(at(4)), 5, 160),
        # 10-13 is exactly min_hours and kept; 15-17 after the NULL-aqi hour is min_hours - 1
        ("lyon", collected(at(10)), collected(at(13)), 4, 170),
        ("oslo", collected(at(0)), collected(at(5)), 6, 200),
        ("nice", collected(at(22)), collected(at(25)), 4, 210),
    ])  # fmt: skip


def test_episode_peak_dates_ids_and_rule(spark):
    silver = episode_silver(spark)

    def ids(df):
        return {(r.location_key, r.start_ts_utc): r.episode_id for r in df.collect()}

    episodes = build_episodes(silver, 151, 4, "gold-1")
    rows = {r.location_key: r for r in episodes.where("location_key IN ('oslo', 'nice')").collect()}
    oslo, nice = rows["oslo"], rows["nice"]
    # peak 200 at hours 1 (o3) and 3 (no2): the earlier hour's pollutant
    assert (oslo.peak_aqi, oslo.dominant_pollutant) == (200, "o3")
    assert (oslo.rule_code, oslo._run_id) == ("AQI>=151_4h", "gold-1")
    # start_date_utc is the start's day even when the episode ends the next day
    assert (nice.start_date_utc, nice.end_ts_utc) == (date(2024, 3, 1), collected(at(25)))

    # the documented key string; four episodes, four ids, the same on a rebuild
    assert oslo.episode_id == sha256("oslo|2024-03-01T00:00:00Z|AQI>=151_4h")
    first_ids = ids(episodes)
    assert len(set(first_ids.values())) == 4
    assert ids(build_episodes(silver, 151, 4, "gold-2")) == first_ids
    # a shorter rule also finds the two 3-hour runs, and gives the same starts other ids
    looser = ids(build_episodes(silver, 151, 3, "gold-1"))
    lyon_starts = sorted(start for loc, start in looser if loc == "lyon")
    assert lyon_starts == [collected(at(h)) for h in (0, 6, 10, 15)]
    assert looser[("oslo", collected(at(0)))] != oslo.episode_id


def test_episodes_empty_when_nothing_qualifies(spark):
    silver = silver_df(spark, [silver_row("lyon", at(h), aqi=150) for h in range(6)])
    df = build_episodes(silver, 151, 4, "gold-1")

    assert_matches_spec(spark, df, FACT_EPISODE)
    assert df.count() == 0


def test_ids_refuse_a_session_outside_utc(spark):
    silver = silver_df(spark, [silver_row("lyon", at(5), aqi=80)])
    # ids and dates are rendered in the session time zone: elsewhere they would silently change
    spark.conf.set("spark.sql.session.timeZone", "Europe/Paris")
    try:
        with pytest.raises(ConfigError, match="Europe/Paris"):
            build_fact_hourly(silver, "gold-1")
        with pytest.raises(ConfigError, match="Europe/Paris"):
            build_episodes(silver, 151, 4, "gold-1")
    finally:
        spark.conf.set("spark.sql.session.timeZone", "UTC")


# --- episodes of a run's hours: whole, and replacing what they overlap ---------------------


def naive_utc(ts: datetime) -> datetime:
    """`ts` as episodes_touching returns its span: naive UTC."""
    return ts.astimezone(timezone.utc).replace(tzinfo=None)


def stored_episodes(spark, spans: list[tuple[str, datetime, datetime]]):
    """fact_episode rows with only location and first and last hour set."""
    rows = [
        tuple({"location_key": key, "start_ts_utc": first, "end_ts_utc": last}.get(name)
              for name in FACT_EPISODE.column_names)
        for key, first, last in spans
    ]
    return spark.createDataFrame(rows, FACT_EPISODE.ddl())


def touching(spark, silver_rows: list[dict], stored: list[tuple[str, datetime, datetime]], start: int, end: int):
    """episodes_touching for hours [at(start), at(end)): the episodes found, and the span they replace."""
    episodes, lo, hi = episodes_touching(
        silver_df(spark, silver_rows), stored_episodes(spark, stored), naive_utc(at(start)), naive_utc(at(end)),
        PipelineConfig(), "gold-1",
    )
    found = sorted((r.location_key, r.start_ts_utc, r.end_ts_utc, r.duration_hours) for r in episodes.collect())
    return found, lo, hi


def test_episodes_touching_the_hours_are_read_whole_past_both_edges(spark):
    # The hours are 2 March (24-48). lyon is at 160 from 27 Feb 12:00 (-60) to 5 March 04:00 (100),
    # further on both sides than the first 2-day margin; oslo's episode lies inside the hours;
    # nice's lies before lyon's, touching nothing, so it is neither found nor replaced.
    lyon = [silver_row("lyon", at(h), aqi=100 if h in (-61, 101) else 160) for h in range(-61, 102)]
    oslo = [silver_row("oslo", at(h), aqi=200) for h in range(30, 36)]
    nice = [silver_row("nice", at(h), aqi=200) for h in range(-100, -94)]
    found, lo, hi = touching(spark, lyon + oslo + nice, [], 24, 48)

    assert found == [
        ("lyon", collected(at(-60)), collected(at(100)), 161),
        ("oslo", collected(at(30)), collected(at(35)), 6),
    ]
    # the span of starts replaced reaches from lyon's first hour to after its last
    assert (lo, hi) == (naive_utc(at(-60)), naive_utc(at(101)))


def test_stored_episodes_overlapping_the_hours_are_replaced_whole(spark):
    # The table holds lyon 10-30, from silver that has since changed: hour 23 is now below the
    # threshold. It overlaps the hours 24-48, so its first hour (10) joins the span replaced and
    # the run 10-22 is found again under the same start, hence the same episode_id. It also holds
    # nice from -200 (further back than the first rows read) to 26, of which silver holds nothing
    # any more: its start joins the span, so the replace drops it.
    lyon = [silver_row("lyon", at(h), aqi=100 if h in (9, 23, 28) else 160) for h in range(9, 29)]
    found, lo, hi = touching(spark, lyon, [("lyon", at(10), at(30)), ("nice", at(-200), at(26))], 24, 48)

    assert found == [
        ("lyon", collected(at(10)), collected(at(22)), 13),
        ("lyon", collected(at(24)), collected(at(27)), 4),
    ]
    assert (lo, hi) == (naive_utc(at(-200)), naive_utc(at(48)))
