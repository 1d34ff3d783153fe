"""Gold transforms: the four dimensions and the hourly, daily and episode facts.

Every builder returns exactly its TableSpec's columns, in order, cast to their types. Ids are the
SHA-256 hex digest (64 chars) of the natural key joined with "|", timestamps written as
`yyyy-MM-ddTHH:mm:ssZ` and dates as `yyyy-MM-dd`, so a rebuild gives the same ids (not uuid()):
  record_id  = sha256("<location_key>|<ts_utc>")                e.g. "lyon|2024-03-01T05:00:00Z"
  daily_id   = sha256("<location_key>|<date_utc>")              e.g. "lyon|2024-03-01"
  episode_id = sha256("<location_key>|<start_ts_utc>|<rule>")   e.g. "lyon|2024-03-01T05:00:00Z|AQI>=151_4h"
"""

from __future__ import annotations

import datetime as dt
import json
from datetime import date
from typing import Sequence

from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from jobs.errors import ConfigError, DateRangeError
from jobs.inputs import Location, Pollutant
from jobs.silver import rewritten_span
from jobs.tables import (
    AQI_POLLUTANTS,
    CATEGORIES,
    DIM_DATE,
    DIM_LOCATION,
    DIM_POLLUTANT,
    DIM_TIME,
    FACT_DAILY,
    FACT_EPISODE,
    FACT_HOURLY,
    SILVER,
)
from jobs.writes import literal_date, literal_ts, replace_range, replace_table

_ISO_TS = "yyyy-MM-dd'T'HH:mm:ss'Z'"
_SHIFTS = ((6, "night"), (12, "morning"), (18, "afternoon"), (24, "evening"))  # (end hour, shift)
# How far around its hours a run first reads silver for the episodes that reach out of them;
# ×4 while a run of qualifying hours reaches the edge of what was read.
EPISODE_MARGIN = dt.timedelta(days=2)


def rule_code(threshold: int, min_hours: int) -> str:
    """The episode rule as stored in fact_episode.rule_code, e.g. `AQI>=151_4h`."""
    return f"AQI>={threshold}_{min_hours}h"


# --- dimensions -----------------------------------------------------------------------------


def build_dim_location(spark: SparkSession, locations: Sequence[Location]) -> DataFrame:
    """dim_location; `attributes` is the unknown fields as sorted-key JSON, NULL when there are none."""
    rows = [
        (
            loc.location_key,
            loc.location_name,
            # A JSON integer coordinate arrives as int, which a DOUBLE column refuses.
            float(loc.latitude),
            float(loc.longitude),
            loc.timezone,
            _attributes_json(loc.extra),
        )
        for loc in locations
    ]
    return spark.createDataFrame(rows, DIM_LOCATION.ddl())


def build_dim_pollutant(spark: SparkSession, pollutants: Sequence[Pollutant]) -> DataFrame:
    """dim_pollutant, one row per pollutant."""
    rows = [
        (
            p.pollutant_code,
            p.display_name,
            p.unit_default,
            p.aqi_timespan,
            None if p.who_guideline_24h is None else float(p.who_guideline_24h),
        )
        for p in pollutants
    ]
    return spark.createDataFrame(rows, DIM_POLLUTANT.ddl())


def _work_shift(hour: int) -> str:
    """The shift of an hour of the day: night 0–5, morning 6–11, afternoon 12–17, evening 18–23."""
    return next(shift for end, shift in _SHIFTS if hour < end)


def build_dim_time(spark: SparkSession) -> DataFrame:
    """dim_time: the 24 hours of a day, time_key = hour × 100."""
    rows = [(hour * 100, f"{hour:02d}:00", hour, _work_shift(hour)) for hour in range(24)]
    return spark.createDataFrame(rows, DIM_TIME.ddl())


def build_dim_date(spark: SparkSession, first: date, last: date) -> DataFrame:
    """dim_date: every calendar day from `first` to `last`, both included."""
    if last < first:
        raise DateRangeError(f"dim_date range {first}..{last} ends before it starts; pass first <= last")
    d = F.col("date_value")
    # Spark's dayofweek counts Sun=1; weekday is Mon=0, so +1 gives ISO. weekofyear is already ISO.
    day_of_week = F.weekday(d) + 1
    days = spark.range(1).select(F.explode(F.sequence(F.lit(first), F.lit(last))).alias("date_value"))
    return DIM_DATE.conform(
        days.select(
            _date_key(d).alias("date_key"),
            d,
            F.dayofmonth(d).alias("day_of_month"),
            day_of_week.alias("day_of_week"),
            F.weekofyear(d).alias("week_of_year"),
            F.month(d).alias("month"),
            # Spark's datetime formatter uses Locale.US, so names are English whatever the JVM locale.
            F.date_format(d, "MMMM").alias("month_name"),
            F.quarter(d).alias("quarter"),
            F.year(d).alias("year"),
            (day_of_week >= 6).alias("is_weekend"),
        )
    )


# --- facts ----------------------------------------------------------------------------------


def build_fact_hourly(silver: DataFrame, run_id: str) -> DataFrame:
    """fact_air_quality_hourly: silver's rows with a deterministic record_id, grain (location_key, ts_utc)."""
    _require_utc(silver.sparkSession)
    return FACT_HOURLY.conform(
        silver.withColumns(
            {
                "record_id": _key_hash(F.col("location_key"), F.date_format("ts_utc", _ISO_TS)),
                "_run_id": F.lit(run_id),
            }
        )
    )


def build_fact_daily(silver: DataFrame, run_id: str, who_pm25: float = 15.0) -> DataFrame:
    """fact_city_daily from whole UTC days of silver, grain (location_key, date_utc)."""
    aggregates = [_peak_hour().alias("peak"), F.count("aqi").alias("hours_measured")]
    for p in AQI_POLLUTANTS:
        # avg and max skip NULLs: the statistics are over the hours that have a value.
        aggregates += [F.avg(p).alias(f"{p}_mean"), F.max(p).alias(f"{p}_max")]
    for cat in CATEGORIES:
        aggregates.append(F.count(F.when(F.col("aqi_category") == cat, 1)).alias(f"hours_in_cat_{cat}"))
    aggregates.append(F.count(F.when(F.col("pm25") > who_pm25, 1)).alias("hours_above_who_pm25"))

    daily = silver.groupBy("location_key", "date_utc").agg(*aggregates)
    return FACT_DAILY.conform(
        daily.withColumns(
            {
                # A DATE cast to string is yyyy-MM-dd and, unlike date_format, ignores the time zone.
                "daily_id": _key_hash(F.col("location_key"), F.col("date_utc").cast("string")),
                "date_key": _date_key(F.col("date_utc")),
                "aqi_daily_max": F.col("peak.aqi"),
                "dominant_pollutant_daily": F.col("peak.pollutant"),
                "data_completeness": F.col("hours_measured") / 24 * 100,
                "_run_id": F.lit(run_id),
            }
        )
    )


def build_episodes(silver: DataFrame, threshold: int, min_hours: int, run_id: str) -> DataFrame:
    """fact_episode: runs of >= min_hours consecutive clock hours of a location with aqi >= threshold.

    Only episodes whose every hour lies in `silver` are found; an episode cut by the edge of the
    rows is reported as its inside part, so the caller reads enough hours around its range.
    """
    code = rule_code(threshold, min_hours)
    episodes = qualifying_runs(silver, threshold).where(F.col("duration_hours") >= min_hours)
    return FACT_EPISODE.conform(
        episodes.withColumns(
            {
                "episode_id": _key_hash(
                    F.col("location_key"), F.date_format("start_ts_utc", _ISO_TS), F.lit(code)
                ),
                "start_date_utc": F.to_date("start_ts_utc"),
                "peak_aqi": F.col("peak.aqi"),
                "dominant_pollutant": F.col("peak.pollutant"),
                "rule_code": F.lit(code),
                "_run_id": F.lit(run_id),
            }
        )
    )


def qualifying_runs(silver: DataFrame, threshold: int) -> DataFrame:
    """Every run of consecutive clock hours of a location with aqi >= threshold, however short.

    Columns location_key, start_ts_utc, end_ts_utc, duration_hours and peak (struct of aqi and
    pollutant); a run cut by the edge of the rows is reported as its inside part.
    """
    _require_utc(silver.sparkSession)
    # NULL >= threshold is NULL, so NULL-aqi hours drop out here just like missing ones.
    qualifying = silver.where(F.col("aqi") >= threshold).withColumn(
        "epoch_hour", F.floor(F.unix_seconds(F.col("ts_utc")) / 3600)
    )
    # Gaps and islands: along consecutive clock hours epoch_hour and row_number rise together, so
    # their difference is constant; any missing or non-qualifying hour shifts it to a new island.
    by_location = Window.partitionBy("location_key").orderBy("ts_utc")
    islands = qualifying.withColumn("island", F.col("epoch_hour") - F.row_number().over(by_location))
    return (
        islands.groupBy("location_key", "island")
        .agg(
            F.min("ts_utc").alias("start_ts_utc"),
            F.max("ts_utc").alias("end_ts_utc"),
            F.count(F.lit(1)).alias("duration_hours"),
            _peak_hour().alias("peak"),
        )
        .drop("island")
    )


# --- helpers --------------------------------------------------------------------------------


def _attributes_json(extra: dict) -> str | None:
    """Compact JSON with sorted keys, so the same fields always give the same string; None if empty."""
    if not extra:
        return None
    return json.dumps(extra, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _peak_hour() -> Column:
    """Aggregate: struct(aqi, pollutant) of the hour with the highest aqi, the earliest among equals."""
    # Structs compare field by field: highest aqi first, then the smallest ts (largest -ts).
    # Hours without aqi are left out, so a day with none gives NULL rather than a NULL-aqi hour.
    return F.max(
        F.when(
            F.col("aqi").isNotNull(),
            F.struct(
                F.col("aqi").alias("aqi"),
                (-F.unix_seconds(F.col("ts_utc"))).alias("neg_ts"),
                F.col("dominant_pollutant").alias("pollutant"),
            ),
        )
    )


def _key_hash(*parts: Column) -> Column:
    """SHA-256 hex of the parts joined with "|"; parts must be non-null (concat_ws skips NULLs)."""
    return F.sha2(F.concat_ws("|", *parts), 256)


def _date_key(d: Column) -> Column:
    """yyyyMMdd as an int, by arithmetic so no string parsing or time zone is involved."""
    return F.year(d) * 10000 + F.month(d) * 100 + F.dayofmonth(d)


def _require_utc(spark: SparkSession) -> None:
    """Refuse a session whose time zone is not UTC: ids and dates would silently shift."""
    tz = spark.conf.get("spark.sql.session.timeZone")
    if tz not in ("UTC", "Etc/UTC", "Z", "+00:00"):
        raise ConfigError(f"gold needs spark.sql.session.timeZone=UTC, the session has {tz!r}")


# --- entrypoint: read silver, write gold ---------------------------------------------------


def run(spark, settings, chunk, inputs, run_id: str) -> dict[str, int]:
    """Rebuild gold for `chunk` and the run's locations from silver; one commit per table.

    Silver's run over the chunk also redid the means of the hours just after it
    (`jobs.silver.rewritten_span`), so gold redoes those hours too, every day that holds one,
    and every episode that touches one of them, however far it reaches outside the chunk.
    """
    cat = settings.catalog
    start, end = rewritten_span(chunk)
    end_day = (end - dt.timedelta(microseconds=1)).date() + dt.timedelta(days=1)
    in_keys = F.col("location_key").isin(inputs.location_keys)
    silver = spark.table(SILVER.qualified(cat))
    written: dict[str, int] = {}

    def put(spec, frame, **range_args) -> None:
        frame = frame.persist()
        try:
            written[f"gold.{spec.name}"] = frame.count()
            if range_args:
                replace_range(spark, spec.qualified(cat), frame, scope=in_keys, **range_args)
            else:
                replace_table(spec.qualified(cat), frame)
        finally:
            frame.unpersist()

    # Dimensions are small and replaced whole; dim_date spans every date in silver.
    put(DIM_LOCATION, build_dim_location(spark, inputs.all_locations))
    put(DIM_POLLUTANT, build_dim_pollutant(spark, inputs.all_pollutants))
    put(DIM_TIME, build_dim_time(spark))
    first, last = silver.agg(F.min("date_utc"), F.max("date_utc")).first()
    if first is not None:
        put(DIM_DATE, build_dim_date(spark, first, last))

    hours = silver.where((F.col("ts_utc") >= literal_ts(start)) & (F.col("ts_utc") < literal_ts(end)) & in_keys)
    put(FACT_HOURLY, build_fact_hourly(hours, run_id), column="ts_utc", start=start, end=end, alignment="month")
    days = silver.where(
        (F.col("date_utc") >= literal_date(chunk.start)) & (F.col("date_utc") < literal_date(end_day)) & in_keys
    )
    put(FACT_DAILY, build_fact_daily(days, run_id), column="date_utc", start=chunk.start, end=end_day,
        alignment="year", date_column=True)
    existing = spark.table(FACT_EPISODE.qualified(cat)).where(in_keys)
    episodes, lo, hi = episodes_touching(silver.where(in_keys), existing, start, end, settings.pipeline, run_id)
    put(FACT_EPISODE, episodes, column="start_ts_utc", start=lo, end=hi, alignment="table")
    return written


def episodes_touching(
    silver: DataFrame, existing: DataFrame, start: dt.datetime, end: dt.datetime, pipeline, run_id: str
) -> tuple[DataFrame, dt.datetime, dt.datetime]:
    """The episodes to write for the hours [start, end), and the span [lo, hi) of starts they replace.

    [lo, hi) holds [start, end), every run of qualifying hours in `silver` that overlaps it and
    every episode in `existing` (the table's rows in scope) that overlaps it; the episodes
    returned are those of `silver` that start in [lo, hi), each computed whole. So replacing the
    table's episodes that start in [lo, hi) by them continues an episode an earlier run cut at
    its range's edge, and drops one that silver no longer holds, whatever ran before.
    """
    threshold, min_hours = pipeline.episode_threshold, pipeline.episode_min_hours
    hour = dt.timedelta(hours=1)
    lo, hi, margin = start, end, EPISODE_MARGIN
    while True:
        read_lo, read_hi = lo - margin, hi + margin
        read = silver.where((F.col("ts_utc") >= literal_ts(read_lo)) & (F.col("ts_utc") < literal_ts(read_hi)))
        # A run that reaches an edge of the rows read may go on beyond it.
        runs = qualifying_runs(read, threshold).select(
            "start_ts_utc", "end_ts_utc",
            ((F.col("start_ts_utc") == literal_ts(read_lo))
             | (F.col("end_ts_utc") == literal_ts(read_hi - hour))).alias("at_edge"),
        )
        stored = existing.where(
            (F.col("start_ts_utc") < literal_ts(read_hi)) & (F.col("end_ts_utc") >= literal_ts(read_lo))
        ).select("start_ts_utc", "end_ts_utc", F.lit(False).alias("at_edge"))
        # Runs and episodes that lie inside [lo, hi) cannot widen it; the others are a few per location.
        outside = runs.unionByName(stored).where(
            (F.col("start_ts_utc") < literal_ts(lo)) | (F.col("end_ts_utc") >= literal_ts(hi))
        )
        # Epoch seconds: collected timestamps would come back in the Python process's time zone.
        spans = [
            (_naive_utc(first), _naive_utc(last) + hour, at_edge)
            for first, last, at_edge in outside.select(
                F.unix_seconds("start_ts_utc"), F.unix_seconds("end_ts_utc"), "at_edge"
            ).collect()
        ]
        wider_lo, wider_hi, cut = _widen(lo, hi, spans)
        lo, hi = wider_lo, wider_hi
        # Done unless a run it overlaps may go on beyond the rows read, or it outgrew them.
        if not cut and read_lo <= lo and hi <= read_hi:
            break
        margin *= 4
    episodes = build_episodes(read, threshold, min_hours, run_id)
    in_span = (F.col("start_ts_utc") >= literal_ts(lo)) & (F.col("start_ts_utc") < literal_ts(hi))
    return episodes.where(in_span), lo, hi


def _widen(
    lo: dt.datetime, hi: dt.datetime, spans: list[tuple[dt.datetime, dt.datetime, bool]]
) -> tuple[dt.datetime, dt.datetime, bool]:
    """[lo, hi) widened over every span [first, after_last) that overlaps it, until none reaches out.

    Also says whether a span it overlaps is flagged (a run at the edge of the rows read).
    """
    cut = False
    widened = True
    while widened:
        widened = False
        for first, after_last, flagged in spans:
            if first < hi and after_last > lo:
                cut = cut or flagged
                if first < lo or after_last > hi:
                    lo, hi, widened = min(lo, first), max(hi, after_last), True
    return lo, hi, cut


def _naive_utc(epoch_seconds: int) -> dt.datetime:
    """Epoch seconds as a naive UTC datetime, the form literal_ts and replace_range take."""
    return dt.datetime.fromtimestamp(epoch_seconds, dt.timezone.utc).replace(tzinfo=None)
