"""Each stage runs on its own: `ray-backfill stage <stage>`, in a fresh session that leaves no JVM."""

from __future__ import annotations

import subprocess

import pytest

from jobs.tables import BRONZE, FACT_DAILY, SILVER
from tests.helpers import CLI, ROOT, attach_catalog, java_and_workers, wait_gone

pytestmark = [pytest.mark.spark, pytest.mark.integration, pytest.mark.slow]


def _stage(stage: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, "stage", stage, *args], cwd=ROOT, capture_output=True, text=True, timeout=600)


def test_stages_run_standalone_in_order(spark, tmp_path):
    warehouse = tmp_path / "wh"
    common = ["--start-date", "2024-03-01", "--end-date", "2024-03-03", "--locations", "hanoi,danang",
              "--warehouse", str(warehouse), "--catalog-name", "standalone", "--spark-mode", "local"]
    before = java_and_workers()
    bronze = _stage("bronze", *common, "--run-id", "standalone")
    assert bronze.returncode == 0, bronze.stderr[-3000:]
    # the last line is the summary (the JVM may print its own lines before it)
    assert bronze.stdout.strip().splitlines()[-1].startswith(
        "bronze 2024-03-01..2024-03-03 run standalone: bronze.open_meteo_hourly")
    for stage in ("silver", "gold"):
        done = _stage(stage, *common, "--run-id", "standalone")
        assert done.returncode == 0, done.stderr[-3000:]
        assert done.stdout.strip().splitlines()[-1].startswith(f"{stage} 2024-03-01..2024-03-03 run standalone:")
    assert not wait_gone(java_and_workers() - before, timeout=20), "a stage left a JVM or worker behind"

    catalog = attach_catalog(spark, warehouse, "standalone")
    assert spark.table(BRONZE.qualified(catalog)).select("location_key").distinct().count() == 2
    silver = spark.table(SILVER.qualified(catalog))
    assert 2 * 3 * 24 * 0.95 < silver.count() <= 2 * 3 * 24
    assert spark.table(FACT_DAILY.qualified(catalog)).count() == 2 * 3
