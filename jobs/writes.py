"""Atomic replace of exactly a range of rows in an Iceberg table.

`replace_range` is one commit per call: rows in [start, end) (optionally only those matching
`scope`, e.g. the processed locations) are replaced by `rows`; everything else is kept. A `merge`
function may build the written rows from `rows` and the rows they replace (bronze keeps the
columns a re-run did not ask for).
Iceberg can only drop whole files, so the commit overwrites the partitions the range touches
(aligned to the table's month/year partitioning) and re-writes the rows of those partitions that
lie outside the range — read from one pinned snapshot, and validated against concurrent commits
to the same partitions (serializable isolation). On a conflict the whole step is retried.
"""

from __future__ import annotations

import datetime as dt
import logging
import random
import time
from typing import Callable, Literal

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

log = logging.getLogger(__name__)

Alignment = Literal["month", "year", "table"]
CONFLICT_MARKERS = ("ValidationException", "CommitFailedException", "Found conflicting files")


def literal_ts(value: dt.datetime | dt.date) -> Column:
    """A UTC timestamp literal that does not depend on the Python process's time zone."""
    if not isinstance(value, dt.datetime):
        value = dt.datetime(value.year, value.month, value.day)
    return F.lit(value.strftime("%Y-%m-%d %H:%M:%S")).cast("timestamp")


def literal_date(value: dt.date) -> Column:
    return F.lit(value.strftime("%Y-%m-%d")).cast("date")


def _align(start: dt.datetime, end: dt.datetime, alignment: Alignment) -> tuple[dt.datetime, dt.datetime]:
    if alignment == "month":
        lo = dt.datetime(start.year, start.month, 1)
        last = end - dt.timedelta(microseconds=1)
        hi = dt.datetime(last.year + last.month // 12, last.month % 12 + 1, 1)
    else:  # year
        lo = dt.datetime(start.year, 1, 1)
        hi = dt.datetime((end - dt.timedelta(microseconds=1)).year + 1, 1, 1)
    return lo, hi


def current_snapshot_id(spark: SparkSession, table: str) -> int | None:
    """The id of the table's current snapshot on `main`, or None for a table never written."""
    rows = spark.sql(f"SELECT snapshot_id FROM {table}.refs WHERE name = 'main'").collect()
    return int(rows[0][0]) if rows else None


def _is_conflict(exc: BaseException) -> bool:
    text = str(exc)
    return any(marker in text for marker in CONFLICT_MARKERS)


def replace_range(
    spark: SparkSession,
    table: str,
    rows: DataFrame,
    *,
    column: str,
    start: dt.datetime | dt.date,
    end: dt.datetime | dt.date,
    alignment: Alignment,
    scope: Column | None = None,
    date_column: bool = False,
    merge: Callable[[DataFrame, DataFrame], DataFrame] | None = None,
    attempts: int = 12,
) -> None:
    """Replace the rows of `table` with `start <= column < end` (and `scope`) by `rows`, atomically.

    `rows` must lie inside the range and scope; `date_column` says `column` is a DATE.
    Zero `rows` is a valid replace: the range is emptied in one commit.
    `merge(rows, replaced)`, when given, returns the rows to write instead; `replaced` are the
    table's rows in the range and scope, read from the snapshot the commit is validated against,
    so a concurrent change to them fails the commit (and the step is retried) rather than being lost.
    """
    to_lit = literal_date if date_column else literal_ts
    start_dt = start if isinstance(start, dt.datetime) else dt.datetime(start.year, start.month, start.day)
    end_dt = end if isinstance(end, dt.datetime) else dt.datetime(end.year, end.month, end.day)
    col = F.col(column)
    in_range = (col >= to_lit(start_dt)) & (col < to_lit(end_dt))
    in_scope = in_range if scope is None else (in_range & scope)
    if alignment == "table":
        partitions = F.lit(True)
    else:
        lo, hi = _align(start_dt, end_dt, alignment)
        partitions = (col >= to_lit(lo)) & (col < to_lit(hi))
    columns = spark.table(table).columns
    rows = rows.select(*columns)
    for attempt in range(1, attempts + 1):
        snapshot = current_snapshot_id(spark, table)
        writer_rows = rows
        if snapshot is not None:
            pinned = spark.read.format("iceberg").option("snapshot-id", str(snapshot)).load(table).where(partitions)
            if merge is not None:
                replaced = pinned.where(F.coalesce(in_scope, F.lit(False))).select(*columns)
                writer_rows = merge(rows, replaced).select(*columns)
            kept = pinned.where(~F.coalesce(in_scope, F.lit(False))).select(*columns)
            writer_rows = writer_rows.unionByName(kept)
        writer = writer_rows.sortWithinPartitions(*[c for c in ("location_key", column) if c in columns]).writeTo(table)
        if snapshot is not None:
            writer = writer.option("validate-from-snapshot-id", str(snapshot)).option("isolation-level", "serializable")
        try:
            writer.overwrite(partitions)
            return
        except Exception as exc:  # py4j wraps Iceberg's exceptions; only conflicts are retried
            if not _is_conflict(exc) or attempt == attempts:
                raise
            wait = min(10.0, 0.2 * 2 ** attempt) * random.uniform(0.5, 1.0)
            log.warning("commit conflict on %s (attempt %d/%d); retrying in %.1fs", table, attempt, attempts, wait)
            time.sleep(wait)


def replace_table(table: str, rows: DataFrame) -> None:
    """Replace a whole (dimension) table in one commit."""
    rows.writeTo(table).overwrite(F.lit(True))
