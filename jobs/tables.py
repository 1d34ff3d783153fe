"""Every table of the lakehouse: columns, partitioning, and the idempotent step that creates them.

Names follow ../shared/PIPELINE.md. Column lists are constants of this module (never user input),
so the DDL built from them is safe; catalog, namespace and table names are validated identifiers.
"""

from __future__ import annotations

from dataclasses import dataclass

from ray_backfill.config import CatalogConfig

# The ten concentrations, in PIPELINE.md's order, and the AQI sub-index pollutants.
CONCENTRATIONS = ("pm25", "pm10", "o3", "no2", "so2", "co", "aod", "dust", "uv_index", "co2")
AQI_POLLUTANTS = ("pm25", "pm10", "o3", "no2", "so2", "co")
SOURCE_AQI_COLUMNS = ("aqi", "aqi_pm25", "aqi_pm10", "aqi_no2", "aqi_o3", "aqi_so2", "aqi_co")
OUR_AQI_COLUMNS = ("aqi", "aqi_pm25", "aqi_pm10", "aqi_o3", "aqi_no2", "aqi_so2", "aqi_co")
CATEGORIES = ("good", "moderate", "usg", "unhealthy", "very_unhealthy", "hazardous")
# Columns that differ between two otherwise identical runs.
VOLATILE_COLUMNS = ("_ingested_at", "_run_id", "_chunk_id")

_conc = ", ".join(f"{c} DOUBLE" for c in CONCENTRATIONS)


@dataclass(frozen=True)
class TableSpec:
    """One Iceberg table: namespace, name, column DDL, partition transforms."""

    namespace: str
    name: str
    columns: str
    partitioned_by: str = ""

    def qualified(self, catalog: CatalogConfig) -> str:
        return catalog.table(self.namespace, self.name)

    @property
    def column_names(self) -> list[str]:
        return [part.strip().split()[0] for part in self.columns.split(",") if part.strip()]


BRONZE = TableSpec(
    "bronze",
    "open_meteo_hourly",
    "location_key STRING, ts_utc TIMESTAMP, date_utc DATE, latitude DOUBLE, longitude DOUBLE, "
    + ", ".join(f"{c} INT" for c in SOURCE_AQI_COLUMNS)
    + f", {_conc}, model_domain STRING, source STRING, "
    "_ingested_at TIMESTAMP, _run_id STRING, _chunk_id STRING",
    # A monthly chunk replaces exactly its own month's files; a month of 24 cities is ~18k rows.
    "months(ts_utc)",
)

SILVER = TableSpec(
    "silver",
    "air_quality_hourly_clean",
    "location_key STRING, ts_utc TIMESTAMP, date_utc DATE, date_key INT, time_key INT, "
    f"latitude DOUBLE, longitude DOUBLE, {_conc}, "
    "pm25_24h DOUBLE, pm10_24h DOUBLE, o3_8h DOUBLE, co_8h DOUBLE, so2_24h DOUBLE, "
    + ", ".join(f"{c} INT" for c in OUR_AQI_COLUMNS)
    + ", source_aqi INT, aqi_category STRING, dominant_pollutant STRING, data_completeness DOUBLE, "
    "dq_flags ARRAY<STRING>, model_domain STRING, source STRING, _ingested_at TIMESTAMP, _run_id STRING",
    "months(ts_utc)",
)

DIM_LOCATION = TableSpec(
    "gold",
    "dim_location",
    "location_key STRING, location_name STRING, latitude DOUBLE, longitude DOUBLE, timezone STRING, "
    "attributes STRING",
)
DIM_POLLUTANT = TableSpec(
    "gold",
    "dim_pollutant",
    "pollutant_code STRING, display_name STRING, unit_default STRING, aqi_timespan STRING, "
    "who_guideline_24h DOUBLE",
)
DIM_TIME = TableSpec("gold", "dim_time", "time_key INT, time_label STRING, hour INT, work_shift STRING")
DIM_DATE = TableSpec(
    "gold",
    "dim_date",
    "date_key INT, date_value DATE, day_of_month INT, day_of_week INT, week_of_year INT, month INT, "
    "month_name STRING, quarter INT, year INT, is_weekend BOOLEAN",
)
FACT_HOURLY = TableSpec(
    "gold",
    "fact_air_quality_hourly",
    "record_id STRING, location_key STRING, ts_utc TIMESTAMP, date_utc DATE, date_key INT, time_key INT, "
    + ", ".join(f"{c} INT" for c in OUR_AQI_COLUMNS)
    + f", source_aqi INT, {_conc}, dominant_pollutant STRING, aqi_category STRING, "
    "data_completeness DOUBLE, _run_id STRING",
    "months(ts_utc)",
)
FACT_DAILY = TableSpec(
    "gold",
    "fact_city_daily",
    "daily_id STRING, location_key STRING, date_utc DATE, date_key INT, aqi_daily_max INT, "
    "dominant_pollutant_daily STRING, "
    + ", ".join(f"{p}_mean DOUBLE, {p}_max DOUBLE" for p in AQI_POLLUTANTS)
    + ", "
    + ", ".join(f"hours_in_cat_{c} INT" for c in CATEGORIES)
    + ", hours_measured INT, hours_above_who_pm25 INT, data_completeness DOUBLE, _run_id STRING",
    "years(date_utc)",
)
FACT_EPISODE = TableSpec(
    "gold",
    "fact_episode",
    "episode_id STRING, location_key STRING, start_ts_utc TIMESTAMP, end_ts_utc TIMESTAMP, "
    "start_date_utc DATE, duration_hours INT, peak_aqi INT, dominant_pollutant STRING, rule_code STRING, "
    "_run_id STRING",
)

ALL_TABLES = (BRONZE, SILVER, DIM_LOCATION, DIM_POLLUTANT, DIM_TIME, DIM_DATE, FACT_HOURLY, FACT_DAILY, FACT_EPISODE)


def ensure_tables(spark, catalog: CatalogConfig) -> None:
    """Create the namespaces and tables that do not exist yet; existing ones are left alone."""
    for namespace in sorted({t.namespace for t in ALL_TABLES}):
        spark.sql(f"CREATE NAMESPACE IF NOT EXISTS {catalog.name}.{namespace}")
    props = (
        "'format-version'='2', 'write.distribution-mode'='hash', "
        f"'commit.retry.num-retries'='{int(catalog.commit_retries)}', "
        "'commit.retry.min-wait-ms'='200', 'commit.retry.max-wait-ms'='10000'"
    )
    for spec in ALL_TABLES:
        partition = f" PARTITIONED BY ({spec.partitioned_by})" if spec.partitioned_by else ""
        spark.sql(
            f"CREATE TABLE IF NOT EXISTS {spec.qualified(catalog)} ({spec.columns}) USING iceberg"
            f"{partition} TBLPROPERTIES ({props})"
        )
