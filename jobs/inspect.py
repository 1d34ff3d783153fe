"""What the lakehouse holds: row counts and time span per table, for summaries and checks."""

from __future__ import annotations

from dataclasses import dataclass

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from jobs.config import CatalogConfig
from jobs.tables import ALL_TABLES, VOLATILE_COLUMNS


@dataclass(frozen=True)
class TableSummary:
    """Rows, span and content checksum of one table."""

    name: str
    rows: int
    first: str | None
    last: str | None
    checksum: str | None = None

    def to_json(self) -> dict:
        return {"table": self.name, "rows": self.rows, "first": self.first, "last": self.last}

    @classmethod
    def from_json(cls, data: dict) -> "TableSummary":
        return cls(data["table"], int(data["rows"]), data.get("first"), data.get("last"))


def table_checksum(df) -> str:
    """Order-independent checksum of every row, ignoring columns that differ between runs."""
    columns = sorted(c for c in df.columns if c not in VOLATILE_COLUMNS)
    row_hash = F.xxhash64(*[F.coalesce(F.col(c).cast("string"), F.lit("\u2400")) for c in columns])
    # Sum of 64-bit row hashes (as decimal, no overflow) and the count: any changed, missing
    # or extra row changes it, whatever the physical order.
    agg = df.agg(F.count(F.lit(1)).alias("n"), F.sum(row_hash.cast("decimal(38,0)")).alias("s")).first()
    return f"{agg['n']}:{agg['s'] or 0}"


def summarize(spark: SparkSession, catalog: CatalogConfig, checksums: bool = False) -> list[TableSummary]:
    """One summary per lakehouse table, in pipeline order; checksums cost one more scan each."""
    out = []
    for spec in ALL_TABLES:
        df = spark.table(spec.qualified(catalog))
        span = spec.time_column
        if span:
            row = df.agg(F.count(F.lit(1)), F.min(span).cast("string"), F.max(span).cast("string")).first()
            rows, first, last = row[0], row[1], row[2]
        else:
            rows, first, last = df.count(), None, None
        checksum = table_checksum(df) if checksums else None
        out.append(TableSummary(spec.full_name, rows, first, last, checksum))
    return out


def format_summaries(summaries: list[dict]) -> str:
    """A small aligned table of `TableSummary.to_json()` rows."""
    width = max(len(s["table"]) for s in summaries)
    lines = [f"{'table':<{width}}  {'rows':>9}  span"]
    for s in summaries:
        span = f"{s['first']} .. {s['last']}" if s["first"] else ""
        lines.append(f"{s['table']:<{width}}  {s['rows']:>9,}  {span}")
    return "\n".join(lines)
