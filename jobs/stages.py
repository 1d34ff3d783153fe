"""One call per stage over a chunk, with a session handed in: what the executors and the
standalone entrypoints both use."""

from __future__ import annotations

from pyspark.sql import SparkSession

from jobs.context import StageInputs
from jobs.sources import Source
from jobs.sources.limits import Throttle
from ray_backfill.config import Settings, SourceConfig
from ray_backfill.plan import Chunk


def build_source(cfg: SourceConfig, throttle: Throttle | None = None) -> Source:
    """The configured source: the built-in synthetic one, or the Open-Meteo HTTP client that asks
    `throttle` (the run's shared limiter) before every request."""
    if cfg.kind == "synthetic":
        from jobs.sources.synthetic import SyntheticSource

        return SyntheticSource(seed=cfg.seed)
    from jobs.sources.openmeteo import OpenMeteoClient

    return OpenMeteoClient.from_config(cfg, throttle)


def run_stage_range(
    stage: str, spark: SparkSession, settings: Settings, chunk: Chunk, inputs: StageInputs, run_id: str
) -> dict[str, int]:
    """Run `stage` over `chunk`; returns rows written per table."""
    if stage == "bronze":
        from jobs import bronze

        result = bronze.run_chunk(
            spark, settings, build_source(settings.source), chunk, inputs.locations, inputs.variables, run_id
        )
        return {"bronze.open_meteo_hourly": result.rows}
    if stage == "silver":
        from jobs import silver

        return silver.run(spark, settings, chunk, inputs, run_id)
    if stage == "gold":
        from jobs import gold

        return gold.run(spark, settings, chunk, inputs, run_id)
    raise ValueError(f"unknown stage {stage!r}")
