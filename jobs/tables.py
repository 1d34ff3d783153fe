"""Every table of the lakehouse: typed columns, key, grain, partitioning, and the step that creates them.

The contract in words is docs/tables.md. Column lists are constants of this module (never user
input), so the DDL built from them is safe; catalog, namespace and table names are validated
identifiers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

if TYPE_CHECKING:  # the specs name tables in a catalog; they need no settings to exist
    from jobs.config import CatalogConfig

# The ten concentrations (docs/tables.md#source-variables), in the order every table uses.
POLLUTANT_CODES = ("pm25", "pm10", "o3", "no2", "so2", "co", "aod", "dust", "uv_index", "co2")
# The pollutants with a US AQI sub-index, and the AQI columns: the overall index, then one each.
AQI_POLLUTANTS = ("pm25", "pm10", "o3", "no2", "so2", "co")
AQI_COLUMNS = ("aqi", *(f"aqi_{p}" for p in AQI_POLLUTANTS))
CATEGORIES = ("good", "moderate", "usg", "unhealthy", "very_unhealthy", "hazardous")
# Columns that differ between two otherwise identical runs.
VOLATILE_COLUMNS = ("_ingested_at", "_run_id", "_chunk_id")
# The column that places a row in time, the first of these a table has; summaries show its span.
TIME_COLUMNS = ("ts_utc", "date_utc", "start_ts_utc", "date_value")


@dataclass(frozen=True)
class Field:
    """One column: its name and Spark SQL type."""

    name: str
    type: str

    @property
    def ddl(self) -> str:
        return f"{self.name} {self.type}"


def fields(sql_type: str, *names: str) -> tuple[Field, ...]:
    """Several columns of one type."""
    return tuple(Field(name, sql_type) for name in names)


def _columns(*groups: Field | tuple[Field, ...]) -> tuple[Field, ...]:
    out: list[Field] = []
    for group in groups:
        out.extend(group if isinstance(group, tuple) else (group,))
    return tuple(out)


@dataclass(frozen=True)
class TableSpec:
    """One Iceberg table: where it lives, its typed columns, key, grain and partition transforms."""

    namespace: str
    name: str
    fields: tuple[Field, ...]
    key: tuple[str, ...]
    grain: str
    partitioned_by: str = ""

    def __post_init__(self) -> None:
        names = self.column_names
        if len(set(names)) != len(names) or not set(self.key) <= set(names):
            raise ValueError(f"table {self.full_name}: duplicate columns or a key column it does not have")

    @property
    def full_name(self) -> str:
        """`namespace.name`, as the docs and summaries name it."""
        return f"{self.namespace}.{self.name}"

    def qualified(self, catalog: CatalogConfig) -> str:
        return catalog.table(self.namespace, self.name)

    @property
    def column_names(self) -> list[str]:
        return [f.name for f in self.fields]

    @property
    def time_column(self) -> str | None:
        """The column whose span is the time the table covers; None for the timeless dimensions."""
        return next((c for c in TIME_COLUMNS if c in self.column_names), None)

    def ddl(self, exclude: tuple[str, ...] = ()) -> str:
        """The columns as a DDL list (`a STRING, b INT`), e.g. a DataFrame schema."""
        return ", ".join(f.ddl for f in self.fields if f.name not in exclude)

    def conform(self, df: DataFrame) -> DataFrame:
        """Exactly this table's columns, in its order, cast to its types."""
        return df.select(*[F.col(f.name).cast(f.type).alias(f.name) for f in self.fields])


_CONC = fields("DOUBLE", *POLLUTANT_CODES)
_AQI = fields("INT", *AQI_COLUMNS)
# Bronze keeps the AQI columns in the source's variable order (NO2 before O3). Silver's duplicate
# tie-break hashes bronze's columns in table order, so another order would pick other winners.
_BRONZE_AQI = fields("INT", "aqi", "aqi_pm25", "aqi_pm10", "aqi_no2", "aqi_o3", "aqi_so2", "aqi_co")
_LINEAGE = fields("TIMESTAMP", "_ingested_at") + fields("STRING", "_run_id")

BRONZE = TableSpec(
    "bronze", "open_meteo_hourly",
    _columns(Field("location_key", "STRING"), Field("ts_utc", "TIMESTAMP"), Field("date_utc", "DATE"),
             fields("DOUBLE", "latitude", "longitude"), _BRONZE_AQI, _CONC, fields("STRING", "model_domain", "source"),
             _LINEAGE, Field("_chunk_id", "STRING")),
    key=("location_key", "ts_utc"), grain="one row per location and UTC hour, as the source sent it",
    # A monthly chunk replaces exactly its own month's files; a month of 24 cities is ~18k rows.
    partitioned_by="months(ts_utc)",
)

SILVER = TableSpec(
    "silver", "air_quality_hourly_clean",
    _columns(Field("location_key", "STRING"), Field("ts_utc", "TIMESTAMP"), Field("date_utc", "DATE"),
             fields("INT", "date_key", "time_key"), fields("DOUBLE", "latitude", "longitude"), _CONC,
             fields("DOUBLE", "pm25_24h", "pm10_24h", "o3_8h", "co_8h", "so2_24h"), _AQI,
             Field("source_aqi", "INT"), fields("STRING", "aqi_category", "dominant_pollutant"),
             Field("data_completeness", "DOUBLE"), Field("dq_flags", "ARRAY<STRING>"),
             fields("STRING", "model_domain", "source"), _LINEAGE),
    key=("location_key", "ts_utc"), grain="one clean, AQI-scored row per location and UTC hour",
    partitioned_by="months(ts_utc)",
)

DIM_LOCATION = TableSpec(
    "gold", "dim_location",
    _columns(fields("STRING", "location_key", "location_name"), fields("DOUBLE", "latitude", "longitude"),
             fields("STRING", "timezone", "attributes")),
    key=("location_key",), grain="one row per location of the locations file",
)
DIM_POLLUTANT = TableSpec(
    "gold", "dim_pollutant",
    _columns(fields("STRING", "pollutant_code", "display_name", "unit_default", "aqi_timespan"),
             Field("who_guideline_24h", "DOUBLE")),
    key=("pollutant_code",), grain="one row per pollutant of the pollutants file",
)
DIM_TIME = TableSpec(
    "gold", "dim_time",
    _columns(Field("time_key", "INT"), Field("time_label", "STRING"), Field("hour", "INT"), Field("work_shift", "STRING")),
    key=("time_key",), grain="one row per hour of the day (24 rows)",
)
DIM_DATE = TableSpec(
    "gold", "dim_date",
    _columns(Field("date_key", "INT"), Field("date_value", "DATE"),
             fields("INT", "day_of_month", "day_of_week", "week_of_year", "month"), Field("month_name", "STRING"),
             fields("INT", "quarter", "year"), Field("is_weekend", "BOOLEAN")),
    key=("date_key",), grain="one row per day from silver's first to its last date",
)
FACT_HOURLY = TableSpec(
    "gold", "fact_air_quality_hourly",
    _columns(fields("STRING", "record_id", "location_key"), Field("ts_utc", "TIMESTAMP"), Field("date_utc", "DATE"),
             fields("INT", "date_key", "time_key"), _AQI, Field("source_aqi", "INT"), _CONC,
             fields("STRING", "dominant_pollutant", "aqi_category"), Field("data_completeness", "DOUBLE"),
             Field("_run_id", "STRING")),
    key=("record_id",), grain="one row per location and UTC hour of silver",
    partitioned_by="months(ts_utc)",
)
FACT_DAILY = TableSpec(
    "gold", "fact_city_daily",
    _columns(fields("STRING", "daily_id", "location_key"), Field("date_utc", "DATE"),
             fields("INT", "date_key", "aqi_daily_max"), Field("dominant_pollutant_daily", "STRING"),
             *(fields("DOUBLE", f"{p}_mean", f"{p}_max") for p in AQI_POLLUTANTS),
             fields("INT", *(f"hours_in_cat_{c}" for c in CATEGORIES), "hours_measured", "hours_above_who_pm25"),
             Field("data_completeness", "DOUBLE"), Field("_run_id", "STRING")),
    key=("daily_id",), grain="one row per location and UTC day",
    partitioned_by="years(date_utc)",
)
FACT_EPISODE = TableSpec(
    "gold", "fact_episode",
    _columns(fields("STRING", "episode_id", "location_key"), fields("TIMESTAMP", "start_ts_utc", "end_ts_utc"),
             Field("start_date_utc", "DATE"), fields("INT", "duration_hours", "peak_aqi"),
             fields("STRING", "dominant_pollutant", "rule_code", "_run_id")),
    key=("episode_id",), grain="one row per run of consecutive hours at or above the episode threshold",
)

ALL_TABLES = (BRONZE, SILVER, DIM_LOCATION, DIM_POLLUTANT, DIM_TIME, DIM_DATE, FACT_HOURLY, FACT_DAILY, FACT_EPISODE)


def tables_markdown() -> str:
    """The tables for the README's "Reading the tables": grain, key and partitioning, then every
    table's columns with their types (a test keeps the README equal to this)."""
    lines = ["| table | grain | key | partitioned by | time column |", "|---|---|---|---|---|"]
    for spec in ALL_TABLES:
        key = ", ".join(f"`{k}`" for k in spec.key)
        part = f"`{spec.partitioned_by}`" if spec.partitioned_by else "-"
        time = f"`{spec.time_column}`" if spec.time_column else "-"
        lines.append(f"| `{spec.full_name}` | {spec.grain} | {key} | {part} | {time} |")
    lines.append("")
    for spec in ALL_TABLES:
        lines.append(f"- `{spec.full_name}`: " + ", ".join(f"`{f.name}` {f.type}" for f in spec.fields))
    return "\n".join(lines)


# Every commit writes a new metadata file, and Iceberg keeps the old ones by default (it lists the
# last 100 and deletes none): a long backfill commits once per chunk, so delete all but the last 20
# (docs/operations.md#long-runs-metadata). 20 outlasts any reader: one opens the file a pointer
# named milliseconds before, and 21 commits would have to land in between for it to be gone.
METADATA_PROPERTIES = {"write.metadata.delete-after-commit.enabled": "true",
                       "write.metadata.previous-versions-max": "20"}


def table_properties(catalog: CatalogConfig) -> dict[str, str]:
    """The properties every lakehouse table is created with (docs/tables.md#conventions)."""
    return {"format-version": "2", "write.distribution-mode": "hash",
            "commit.retry.num-retries": str(int(catalog.commit_retries)),
            "commit.retry.min-wait-ms": "200", "commit.retry.max-wait-ms": "10000", **METADATA_PROPERTIES}


def _properties_sql(properties: dict[str, str]) -> str:
    """`'k'='v', ...`: keys and values are this module's constants and integers, never user text."""
    return ", ".join(f"'{key}'='{value}'" for key, value in properties.items())


def ensure_tables(spark, catalog: CatalogConfig) -> None:
    """Create the namespaces and tables that do not exist yet; an existing table keeps its
    properties but gets METADATA_PROPERTIES (one commit, only where they differ)."""
    for namespace in sorted({t.namespace for t in ALL_TABLES}):
        spark.sql(f"CREATE NAMESPACE IF NOT EXISTS {catalog.name}.{namespace}")
    props = _properties_sql(table_properties(catalog))
    for spec in ALL_TABLES:
        name = spec.qualified(catalog)  # validated identifiers
        if spark.catalog.tableExists(name):
            _update_properties(spark, name, METADATA_PROPERTIES)
            continue
        partition = f" PARTITIONED BY ({spec.partitioned_by})" if spec.partitioned_by else ""
        spark.sql(f"CREATE TABLE IF NOT EXISTS {name} ({spec.ddl()}) USING iceberg{partition} TBLPROPERTIES ({props})")


def _update_properties(spark, name: str, wanted: dict[str, str]) -> None:
    """Set those of `wanted` that the table lacks or holds otherwise; nothing (no commit) when it has them all."""
    have = {row[0]: row[1] for row in spark.sql(f"SHOW TBLPROPERTIES {name}").collect()}
    missing = {key: value for key, value in wanted.items() if have.get(key) != value}
    if missing:
        spark.sql(f"ALTER TABLE {name} SET TBLPROPERTIES ({_properties_sql(missing)})")
