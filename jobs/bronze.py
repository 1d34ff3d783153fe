"""Bronze: fetch a chunk of hourly rows from the source and replace exactly that chunk in
bronze.open_meteo_hourly, in one atomic commit.

Two halves so a task can overlap them with session start-up: `fetch_chunk` (no Spark, talks to
the source) and `write_chunk` (Spark, one commit); `jobs.tasks.run_task` runs both.

A chunk is written only when the source's answer is complete (`jobs.sources.check_complete`):
every requested location has every hour of the chunk up to now exactly once, and every
requested variable (values may be null).
"""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass
from typing import Sequence

import pandas as pd
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from jobs.config import Settings
from jobs.dates import Chunk
from jobs.inputs import Location
from jobs.sources import Source, check_complete, responses_to_frame
from jobs.tables import BRONZE, POLLUTANT_CODES, VOLATILE_COLUMNS
from jobs.writes import literal_ts, replace_range

# The columns the source delivers; bronze adds _ingested_at, _run_id and _chunk_id.
SOURCE_COLUMNS = [c for c in BRONZE.column_names if c not in VOLATILE_COLUMNS]


@dataclass(frozen=True)
class FetchedChunk:
    """The source's complete rows for one chunk, ready to write; `ingested_at` is naive UTC."""

    chunk: Chunk
    frame: pd.DataFrame
    ingested_at: dt.datetime
    fetch_seconds: float


@dataclass(frozen=True)
class BronzeResult:
    """What one bronze chunk wrote."""

    chunk_id: str
    rows: int
    fetch_seconds: float
    write_seconds: float


def fetch_chunk(
    source: Source,
    chunk: Chunk,
    locations: Sequence[Location],
    variables: Sequence[str],
    *,
    now: dt.datetime | None = None,
) -> FetchedChunk:
    """Ask the source for the chunk's days; hours outside the chunk or after `now` are dropped.

    Raises IncompleteChunkError (nothing written) unless every location has every hour of the
    chunk up to `now` exactly once and every variable asked for; a naive `now` is UTC.
    """
    started = time.monotonic()
    now = now or dt.datetime.now(dt.timezone.utc)
    responses = source.fetch(locations, chunk.start, chunk.last_day, variables)
    frame = responses_to_frame(responses, locations, source.name, now, source.model_domain)
    lo = pd.Timestamp(chunk.start, tz="UTC")
    hi = pd.Timestamp(chunk.end, tz="UTC")
    frame = frame[(frame["ts_utc"] >= lo) & (frame["ts_utc"] < hi)]
    check_complete(responses, frame, locations, variables, expected_hours(chunk, now), source.name, chunk.chunk_id)
    ingested = now.astimezone(dt.timezone.utc).replace(tzinfo=None, microsecond=0)
    return FetchedChunk(chunk, frame.reset_index(drop=True), ingested, time.monotonic() - started)


def expected_hours(chunk: Chunk, now: dt.datetime) -> pd.DatetimeIndex:
    """The hours a complete answer has: chunk start 00:00 to the last day's 23:00 UTC, none after `now`."""
    cutoff = pd.Timestamp(now)
    cutoff = cutoff.tz_localize("UTC") if cutoff.tzinfo is None else cutoff.tz_convert("UTC")
    last = min(pd.Timestamp(chunk.end, tz="UTC") - pd.Timedelta(hours=1), cutoff.floor("h"))
    return pd.date_range(pd.Timestamp(chunk.start, tz="UTC"), last, freq="h")


def to_spark(spark: SparkSession, fetched: FetchedChunk, run_id: str) -> DataFrame:
    """The fetched rows as a DataFrame with bronze's schema; NaN gaps become SQL NULL."""
    schema = BRONZE.ddl(exclude=VOLATILE_COLUMNS)
    frame = fetched.frame[SOURCE_COLUMNS]
    df = spark.createDataFrame(frame, schema=schema) if len(frame) else spark.createDataFrame([], schema)
    nan_to_null = [F.when(F.isnan(c), F.lit(None)).otherwise(F.col(c)).alias(c) for c in POLLUTANT_CODES]
    keep = [c for c in SOURCE_COLUMNS if c not in POLLUTANT_CODES]
    return df.select(*keep, *nan_to_null).select(
        *SOURCE_COLUMNS,
        literal_ts(fetched.ingested_at).alias("_ingested_at"),
        F.lit(run_id).alias("_run_id"),
        F.lit(fetched.chunk.chunk_id).alias("_chunk_id"),
    )


def write_chunk(
    spark: SparkSession,
    settings: Settings,
    fetched: FetchedChunk,
    location_keys: Sequence[str],
    run_id: str,
) -> BronzeResult:
    """Replace exactly the chunk's range for `location_keys`, in one commit.

    Other locations' rows are not touched; each location asked for has every hour of the chunk
    in `fetched` (`fetch_chunk` refuses an incomplete answer), so none loses stored hours.
    """
    started = time.monotonic()
    df = to_spark(spark, fetched, run_id)
    replace_range(
        spark, BRONZE.qualified(settings.catalog), df, column="ts_utc",
        start=fetched.chunk.start, end=fetched.chunk.end, alignment="month",
        scope=F.col("location_key").isin(sorted(location_keys)),
    )
    return BronzeResult(fetched.chunk.chunk_id, len(fetched.frame), fetched.fetch_seconds, time.monotonic() - started)
