"""Silver transforms: bronze rows → one clean, AQI-scored row per (location_key, ts_utc).

The rules are those of docs/tables.md (silver.air_quality_hourly_clean, Silver rules); the AQI
itself lives in jobs/aqi.py. Hours are handled as epoch seconds, so nothing here depends on the
session time zone.
"""

from __future__ import annotations

import datetime as dt
import math
from datetime import datetime, timedelta, timezone

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from jobs.aqi import (
    aqi_category_col,
    dominant_pollutant_col,
    o3_index_col,
    overall_aqi_col,
    so2_index_col,
    sub_index_col,
    to_aqi_unit_col,
)
from jobs.errors import DateRangeError
from jobs.tables import (
    AQI_COLUMNS,
    AQI_POLLUTANTS,
    BRONZE,
    POLLUTANT_CODES,
    SILVER,
    VOLATILE_COLUMNS,
)
from jobs.writes import literal_ts, replace_range

# The longest mean (24 h) at `start` reaches back to start − 23 h: read bronze from there. The
# other way round, the means of the 23 hours after `end` reach back into [start, end).
LOOKBACK = timedelta(hours=23)

# Largest physically plausible hourly value (µg/m³; aod unitless; uv_index; co2 ppm). Each sits
# above the worst real readings (dust storms, Delhi smog, wildfire smoke, volcanic plumes) and
# above the concentration at which the AQI reaches 500, so only impossible values — unit mix-ups,
# sentinels — are nulled and the top of the AQI scale stays reachable.
CEILINGS = {
    "pm25": 3000.0,  # AQI 500 at 325.4; hourly records ~1,500–2,000
    "pm10": 20000.0,  # AQI 500 at 604; Middle-East/Saharan dust storms reach ~10,000
    "o3": 2000.0,  # ≈ 1.0 ppm; AQI 500 at 0.604 ppm (1,186 µg/m³); record ~0.68 ppm
    "no2": 4000.0,  # ≈ 2,130 ppb; AQI 500 at 2,049 ppb (3,856 µg/m³)
    "so2": 10000.0,  # ≈ 3,800 ppb; AQI 500 at 1,004 ppb (2,631 µg/m³); volcanic plumes
    "co": 100000.0,  # ≈ 87 ppm; AQI 500 at 50.4 ppm (57,740 µg/m³)
    "aod": 10.0,  # extreme smoke/dust plumes stay below ~7
    "dust": 20000.0,  # as pm10, of which it is a part
    "uv_index": 50.0,  # highest ever measured ~43 (Andes, 2003)
    "co2": 5000.0,  # ppm; ambient ~420, street-level peaks ~1,000
}

# (mean column, hourly column, hours) of the averaged AQI inputs.
ROLLING_MEANS = (("pm25_24h", "pm25", 24), ("pm10_24h", "pm10", 24), ("o3_8h", "o3", 8), ("co_8h", "co", 8),
                 ("so2_24h", "so2", 24))
MIN_SHARE = 0.75  # an N-h mean needs values in at least 75 % of its N clock hours

_KEY = ("location_key", "ts_utc")
# The stable last tie-break: every value column, but not the key nor the volatile columns
# (_ingested_at, _run_id, _chunk_id), so the same data picks the same row in every run.
_HASHED = tuple(c for c in BRONZE.column_names if c not in (*_KEY, *VOLATILE_COLUMNS))


def build_silver(bronze: DataFrame, start: datetime, end: datetime, run_id: str) -> DataFrame:
    """Silver rows for start <= ts_utc < end from bronze rows reaching back LOOKBACK before start.

    `start` and `end` are UTC on the hour (naive means UTC). Exactly one row per
    (location_key, ts_utc), SILVER's columns in order; look-back rows feed the means only.
    """
    first, stop = _epoch_range(start, end)
    return (
        bronze.transform(dedupe)
        .transform(null_implausible)
        .transform(add_rolling_means)
        .transform(add_aqi)
        .transform(add_completeness)
        .transform(add_time_keys)
        .where(F.col("ts_utc").cast("long").between(first, stop - 1))
        .transform(select_silver, run_id)
    )


def winner_order() -> tuple[Column, ...]:
    """Of several bronze rows for one key, the first in this order wins (dedupe, and bronze keeping
    the columns a narrower --pollutants re-run did not ask for)."""
    return (F.col("_ingested_at").desc_nulls_last(), F.col("_chunk_id").desc_nulls_last(),
            F.xxhash64(*_HASHED).desc())


def dedupe(bronze: DataFrame) -> DataFrame:
    """One row per key, flagged `dup` when there were several.

    The winner has the latest `_ingested_at`, then the greatest `_chunk_id`, then the greatest
    xxhash64 of all other columns: an order of values, never of physical rows.
    """
    copies = Window.partitionBy(*_KEY)
    ranked = copies.orderBy(*winner_order())
    return (
        bronze.withColumn("_rank", F.row_number().over(ranked))
        .withColumn("_copies", F.count(F.lit(1)).over(copies))
        .where(F.col("_rank") == 1)
        .transform(_add_flags, {"dup": F.col("_copies") > 1})
        .drop("_rank", "_copies")
    )


def null_implausible(df: DataFrame) -> DataFrame:
    """NaN, negative and above-ceiling concentrations become NULL, flagged nan_/neg_/max_<column>."""
    flags = {}
    for name, ceiling in CEILINGS.items():
        value = F.col(name)
        flags[f"nan_{name}"] = F.isnan(value)
        flags[f"neg_{name}"] = value < 0
        # Spark orders NaN above every number, so it must not count as above the ceiling too.
        flags[f"max_{name}"] = ~F.isnan(value) & (value > ceiling)
    kept = {
        name: F.when(~F.isnan(name) & F.col(name).between(0, ceiling), F.col(name))
        for name, ceiling in CEILINGS.items()
    }
    return df.transform(_add_flags, flags).withColumns(kept)


def add_rolling_means(df: DataFrame) -> DataFrame:
    """N-h means over clock hours t−N+1 … t per location; NULL unless 75 % of those hours have a value."""
    # A range over epoch seconds, not a row count: a missing hour is a missing value.
    hours = Window.partitionBy("location_key").orderBy(F.col("ts_utc").cast("long"))
    means = {}
    for mean, hourly, n in ROLLING_MEANS:
        frame = hours.rangeBetween(-(n - 1) * 3600, 0)
        means[mean] = F.when(F.count(hourly).over(frame) >= math.ceil(MIN_SHARE * n), F.avg(hourly).over(frame))
    return df.withColumns(means)


def add_aqi(df: DataFrame) -> DataFrame:
    """Our sub-indexes, `aqi`, category and dominant pollutant; the source's own AQI kept as source_aqi."""
    def unit(pollutant: str, column: str) -> Column:
        return to_aqi_unit_col(pollutant, F.col(column))

    sub_indexes = {
        "aqi_pm25": sub_index_col("pm25", F.col("pm25_24h")),
        "aqi_pm10": sub_index_col("pm10", F.col("pm10_24h")),
        "aqi_o3": o3_index_col(unit("o3", "o3_8h"), unit("o3", "o3")),
        "aqi_no2": sub_index_col("no2", unit("no2", "no2")),
        "aqi_so2": so2_index_col(unit("so2", "so2"), unit("so2", "so2_24h")),
        "aqi_co": sub_index_col("co", unit("co", "co_8h")),
    }
    ours = {p: F.col(f"aqi_{p}") for p in AQI_POLLUTANTS}
    return (
        df.withColumnRenamed("aqi", "source_aqi")
        .drop(*(c for c in AQI_COLUMNS if c != "aqi"))
        .withColumns(sub_indexes)
        .withColumn("aqi", overall_aqi_col(ours))
        .withColumns(
            {"aqi_category": aqi_category_col(F.col("aqi")), "dominant_pollutant": dominant_pollutant_col(ours)}
        )
    )


def add_completeness(df: DataFrame) -> DataFrame:
    """data_completeness: % of the ten concentrations that are non-null after cleaning."""
    present = sum(F.col(c).isNotNull().cast("int") for c in POLLUTANT_CODES)
    return df.withColumn("data_completeness", F.lit(100.0) * present / len(POLLUTANT_CODES))


def add_time_keys(df: DataFrame) -> DataFrame:
    """date_utc, date_key (yyyyMMdd) and time_key (hour × 100) from ts_utc's epoch seconds."""
    seconds = F.col("ts_utc").cast("long")
    date = F.date_from_unix_date(F.floor(seconds / 86400).cast("int"))
    return df.withColumns(
        {
            "date_utc": date,
            "date_key": F.year(date) * 10000 + F.month(date) * 100 + F.dayofmonth(date),
            "time_key": F.floor(F.pmod(seconds, F.lit(86400)) / 3600) * 100,
        }
    )


def select_silver(df: DataFrame, run_id: str) -> DataFrame:
    """SILVER's columns, in order and cast to their types, stamped with `run_id`."""
    df = df.withColumn("_run_id", F.lit(run_id))
    return SILVER.conform(df)


def _add_flags(df: DataFrame, conditions: dict[str, Column]) -> DataFrame:
    """Append the codes whose condition holds to `dq_flags` (created if absent), kept sorted."""
    candidates = F.array(*(F.when(cond, F.lit(code)) for code, cond in conditions.items()))
    raised = F.filter(candidates, lambda code: code.isNotNull())
    current = F.col("dq_flags") if "dq_flags" in df.columns else F.array().cast("array<string>")
    return df.withColumn("dq_flags", F.array_sort(F.concat(current, raised)))


def _epoch_range(start: datetime, end: datetime) -> tuple[int, int]:
    """[start, end) as epoch seconds; both on the hour, start before end."""
    seconds = []
    for name, moment in (("start", start), ("end", end)):
        moment = moment.replace(tzinfo=timezone.utc) if moment.tzinfo is None else moment.astimezone(timezone.utc)
        if (moment.minute, moment.second, moment.microsecond) != (0, 0, 0):
            raise DateRangeError(f"silver {name} {moment.isoformat()} is not on the hour")
        seconds.append(int(moment.timestamp()))
    if seconds[0] >= seconds[1]:
        raise DateRangeError(f"silver range {start.isoformat()} … {end.isoformat()} is empty; end must follow start")
    return seconds[0], seconds[1]


# --- entrypoint: read bronze, write silver -------------------------------------------------


def rewritten_span(chunk) -> tuple[datetime, datetime]:
    """The hours [start, end) a silver run over `chunk` rewrites: the chunk's and the LOOKBACK after it.

    The means of an hour up to LOOKBACK after the chunk reach back into it, so they change when
    the chunk's bronze does: a run over the earlier of two adjacent ranges, after the later one,
    must redo them. Where bronze has no hours after the chunk yet there is nothing to redo.
    """
    start = dt.datetime.combine(chunk.start, dt.time())
    return start, dt.datetime.combine(chunk.end, dt.time()) + LOOKBACK


def run(spark, settings, chunk, inputs, run_id: str) -> dict[str, int]:
    """Rebuild silver for `chunk`'s rewritten span and the run's locations from bronze; one commit."""
    start, end = rewritten_span(chunk)
    keys = inputs.location_keys
    bronze = spark.table(BRONZE.qualified(settings.catalog)).where(
        (F.col("ts_utc") >= literal_ts(start - LOOKBACK)) & (F.col("ts_utc") < literal_ts(end))
        & F.col("location_key").isin(keys)
    )
    silver = build_silver(bronze, start, end, run_id).persist()
    try:
        rows = silver.count()
        replace_range(
            spark, SILVER.qualified(settings.catalog), silver, column="ts_utc", start=start, end=end,
            alignment="month", scope=F.col("location_key").isin(keys),
        )
    finally:
        silver.unpersist()
    return {"silver.air_quality_hourly_clean": rows}
