"""The Ray executor end to end: real Ray, real RayDP sessions in fresh processes, real Iceberg."""

from __future__ import annotations

import json
import signal
import threading
import time

import psutil
import pytest
from pyspark.sql import functions as F

from jobs.tables import BRONZE, FACT_DAILY, SILVER
from tests.helpers import (
    attach_catalog, checksums, java_and_workers, our_processes, read_ledger, run_cli, run_id_from, wait_gone,
)

pytestmark = [pytest.mark.ray, pytest.mark.spark, pytest.mark.integration, pytest.mark.slow]

RANGE = ["--start-date", "2024-01-01", "--end-date", "2024-03-31"]
LOCS = ["--locations", "hanoi,hcmc,danang"]


@pytest.fixture(scope="module")
def ray_run(tmp_path_factory):
    """One real Ray backfill on RayDP: 3 monthly chunks, parallelism 2, synthetic source."""
    warehouse = tmp_path_factory.mktemp("ray-run") / "wh"
    before = java_and_workers()
    done = run_cli("run", *RANGE, *LOCS, "--warehouse", str(warehouse), "--parallelism", "2")
    after = java_and_workers()
    return warehouse, done, before, after


def test_ray_backfill_writes_every_table_and_leaves_no_process(ray_run, spark):
    warehouse, done, before, after = ray_run
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    run_id = run_id_from(done.stdout)
    ledger = read_ledger(warehouse, run_id)
    assert ledger["outcome"] == "succeeded"
    tasks = {t["task_id"]: t for t in ledger["tasks"]}
    assert sorted(tasks) == ["bronze-2024-01", "bronze-2024-02", "bronze-2024-03", "gold", "prepare", "silver"]
    assert all(t["status"] == "succeeded" and t["attempts"] == 1 for t in tasks.values())
    assert all(t["peak_rss_mb"] and t["peak_rss_mb"] > 100 for t in tasks.values())
    # 3 cities x 91 days x 24 h, give or take the synthetic source's gaps and duplicates
    assert 6000 < sum(tasks[f"bronze-2024-0{m}"]["rows"] for m in (1, 2, 3)) < 7000
    report = json.loads((warehouse / "_ray_backfill" / "runs" / run_id / "report.json").read_text())
    assert {"bronze", "silver", "gold", "total"} <= set(report["stage_seconds"])
    assert "succeeded" in done.stdout and "resume" not in done.stdout

    catalog = attach_catalog(spark, warehouse)
    silver = spark.table(SILVER.qualified(catalog))
    assert silver.count() == 3 * 91 * 24
    assert silver.select("location_key", "ts_utc").distinct().count() == silver.count()
    daily = spark.table(FACT_DAILY.qualified(catalog))
    assert daily.count() == 3 * 91
    assert spark.table(BRONZE.qualified(catalog)).select("_chunk_id").distinct().count() == 3

    leftover = wait_gone(after - before, timeout=20)
    assert not leftover, f"processes left behind: {[psutil.Process(p).cmdline() for p in leftover]}"
    assert not our_processes(str(warehouse))


def test_sequential_baseline_gives_identical_tables(ray_run, spark, tmp_path):
    warehouse, done, _, _ = ray_run
    assert done.returncode == 0
    seq_wh = tmp_path / "seq"
    seq = run_cli("run", *RANGE, *LOCS, "--warehouse", str(seq_wh), "--executor", "sequential",
                  "--spark-mode", "local")
    assert seq.returncode == 0, seq.stdout[-3000:] + seq.stderr[-3000:]
    ray_sums = checksums(spark, attach_catalog(spark, warehouse))
    seq_sums = checksums(spark, attach_catalog(spark, seq_wh))
    assert ray_sums == seq_sums
    assert int(ray_sums["air_quality_hourly_clean"].split(":")[0]) == 3 * 91 * 24
