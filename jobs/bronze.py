"""Bronze: fetch a chunk of hourly rows from the source and replace exactly that chunk in
bronze.open_meteo_hourly, in one atomic commit.

Two halves so a task can overlap them with session start-up: `fetch_chunk` (no Spark, talks to
the source) and `write_chunk` (Spark, one commit); `jobs.tasks.run_task` runs both.

A chunk is written only when the source's answer is complete (`jobs.sources.check_complete`):
every requested location has every hour of the chunk up to now exactly once, and every
requested variable (values may be null). A run that asks for fewer variables (`--pollutants`)
replaces only their columns: the others keep the values the chunk's rows already had.
"""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass
from functools import partial
from typing import Sequence

import pandas as pd
from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from jobs.config import Settings
from jobs.dates import Chunk
from jobs.errors import ConfigError
from jobs.inputs import Location
from jobs.sources import VARIABLE_TO_COLUMN, Source, check_complete, responses_to_frame
from jobs.tables import AQI_COLUMNS, BRONZE, POLLUTANT_CODES, VOLATILE_COLUMNS
from jobs.silver import winner_order
from jobs.writes import literal_ts, replace_range

# The columns the source delivers; bronze adds _ingested_at, _run_id and _chunk_id.
SOURCE_COLUMNS = [c for c in BRONZE.column_names if c not in VOLATILE_COLUMNS]
# The columns one hourly variable each fills, in table order.
VALUE_COLUMNS = tuple(c for c in BRONZE.column_names if c in AQI_COLUMNS + POLLUTANT_CODES)
# The columns silver's last de-duplication tie-break hashes: all but the key and the volatile ones.


@dataclass(frozen=True)
class FetchedChunk:
    """The source's complete rows for one chunk, ready to write; `ingested_at` is naive UTC."""

    chunk: Chunk
    frame: pd.DataFrame
    ingested_at: dt.datetime
    fetch_seconds: float
    # the hourly variables asked for; the other value columns of `frame` are NULL
    variables: tuple[str, ...]
    model_domain: str
    source: str

    @property
    def unrequested_columns(self) -> tuple[str, ...]:
        """The value columns this fetch did not ask for, in table order."""
        asked = {VARIABLE_TO_COLUMN[v] for v in self.variables}
        return tuple(c for c in VALUE_COLUMNS if c not in asked)


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
    return FetchedChunk(chunk, frame.reset_index(drop=True), ingested, time.monotonic() - started,
                        tuple(variables), source.model_domain, source.name)


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
    in `fetched` (`fetch_chunk` refuses an incomplete answer), so none loses stored hours. When
    the fetch asked for fewer variables than bronze has columns, each new row takes the
    unrequested columns from the row it replaces (same location and hour, read in the commit's
    own snapshot); an hour with no stored row gets NULL.
    """
    started = time.monotonic()
    df = to_spark(spark, fetched, run_id)
    carried = fetched.unrequested_columns
    replace_range(
        spark, BRONZE.qualified(settings.catalog), df, column="ts_utc",
        start=fetched.chunk.start, end=fetched.chunk.end, alignment="month",
        scope=F.col("location_key").isin(sorted(location_keys)),
        merge=partial(keep_columns, columns=carried, fetched=fetched) if carried else None,
    )
    return BronzeResult(fetched.chunk.chunk_id, len(fetched.frame), fetched.fetch_seconds, time.monotonic() - started)


def keep_columns(rows: DataFrame, replaced: DataFrame, *, columns: Sequence[str], fetched: FetchedChunk) -> DataFrame:
    """`rows` with `columns` taken from the `replaced` row of the same location and hour (NULL if none).

    Of several stored rows for one hour (written before bronze refused repeated hours) the one
    silver's de-duplication picks wins: latest `_ingested_at`, then `_chunk_id`, then the greatest
    hash of the other columns. Stored rows of another source or model domain are refused
    (ConfigError): their values would be labelled with this fetch's source.
    """
    same = (F.col("source").eqNullSafe(F.lit(fetched.source))
            & F.col("model_domain").eqNullSafe(F.lit(fetched.model_domain)))
    other = replaced.where(~same).select("location_key", "source", "model_domain").limit(1).collect()
    if other:
        key, source, domain = other[0]
        raise ConfigError(
            f"bronze chunk {fetched.chunk.chunk_id} holds rows of source {source!r} (domain {domain!r}) for "
            f"location {key!r}: --pollutants keeps their other columns, which must come from this run's source "
            f"{fetched.source!r} (domain {fetched.model_domain!r}); re-run this range without --pollutants"
        )
    key = list(BRONZE.key)
    latest = Window.partitionBy(*key).orderBy(*winner_order())
    stored = (
        replaced.withColumn("_rank", F.row_number().over(latest))
        .where(F.col("_rank") == 1)
        .select(*key, *columns)
    )
    return rows.drop(*columns).join(stored, on=key, how="left")
