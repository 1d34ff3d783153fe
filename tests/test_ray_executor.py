"""The Ray executor end to end: real Ray, real RayDP sessions in fresh processes, real Iceberg."""

from __future__ import annotations

import json
import signal
import threading
import time
from pathlib import Path

import psutil
import pytest
from pyspark.sql import functions as F

from jobs.tables import BRONZE, FACT_DAILY, SILVER
from tests.helpers import (
    attach_catalog,
    checksums,
    java_and_workers,
    our_processes,
    read_ledger,
    run_cli,
    run_id_from,
    wait_gone,
)

pytestmark = [pytest.mark.ray, pytest.mark.spark, pytest.mark.integration, pytest.mark.slow]

RANGE = ["--start-date", "2024-01-01", "--end-date", "2024-03-31"]
LOCS = ["--locations", "hanoi,hcmc,danang"]


@pytest.fixture(scope="module")
def ray_run(tmp_path_factory):
    """One real Ray backfill on RayDP: 3 monthly chunks, parallelism 2, synthetic source."""
    warehouse = tmp_path_factory.mktemp("ray-run") / "wh"
    before = java_and_workers()
    done = run_cli("run", *RANGE, *LOCS, "--warehouse", str(warehouse), "--parallelism", "2",
                   "--catalog-name", "rayrun")
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

    catalog = attach_catalog(spark, warehouse, "rayrun")
    silver = spark.table(SILVER.qualified(catalog))
    bronze_keys = spark.table(BRONZE.qualified(catalog)).select("location_key", "ts_utc").distinct().count()
    # one row per location-hour the source delivered (it leaves a few hours out entirely)
    assert silver.count() == bronze_keys > 3 * 91 * 24 * 0.98
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
                  "--spark-mode", "local", "--catalog-name", "seqrun")
    assert seq.returncode == 0, seq.stdout[-3000:] + seq.stderr[-3000:]
    ray_sums = checksums(spark, attach_catalog(spark, warehouse, "rayrun"))
    seq_sums = checksums(spark, attach_catalog(spark, seq_wh, "seqrun"))
    assert ray_sums == seq_sums
    assert int(ray_sums["air_quality_hourly_clean"].split(":")[0]) > 3 * 91 * 24 * 0.98


def test_timeout_and_failure_are_retried_and_a_permanent_failure_blocks_silver_until_resume(spark, tmp_path):
    warehouse = tmp_path / "wh"
    faults = {
        "bronze-2024-01": {"sleep_before_write": 600},  # first attempt hangs: the timeout must fire
        "bronze-2024-02": {"fail_attempts": 1},          # first attempt raises: the retry succeeds
        "bronze-2024-03": {"always_fail": True},         # fails for good: the barrier holds
    }
    args = ["run", "--start-date", "2024-01-01", "--end-date", "2024-03-31", "--locations", "hanoi",
            "--warehouse", str(warehouse), "--spark-mode", "local", "--parallelism", "2", "--retries", "1",
            "--chunk-timeout", "45", "--catalog-name", "failrun"]
    before = java_and_workers()
    failed = run_cli(*args, env={"RAY_BACKFILL_FAULTS": json.dumps(faults)})
    assert failed.returncode == 1, failed.stdout[-3000:] + failed.stderr[-3000:]
    run_id = run_id_from(failed.stdout)
    tasks = {t["task_id"]: t for t in read_ledger(warehouse, run_id)["tasks"]}
    assert "bronze-2024-01: attempt 1 failed (timed out after 45s)" in failed.stdout
    assert tasks["bronze-2024-01"]["status"] == "succeeded" and tasks["bronze-2024-01"]["attempts"] == 2
    assert tasks["bronze-2024-02"]["status"] == "succeeded" and tasks["bronze-2024-02"]["attempts"] == 2
    assert tasks["bronze-2024-03"]["status"] == "failed" and tasks["bronze-2024-03"]["attempts"] == 2
    assert "injected failure in bronze-2024-03 attempt 2" in tasks["bronze-2024-03"]["error"]
    assert tasks["silver"]["status"] == "pending" and tasks["gold"]["status"] == "pending"
    assert "bronze-2024-03: failed after 2 attempt(s): RuntimeError: injected failure" in failed.stdout
    resume_line = next(line for line in failed.stdout.splitlines() if line.startswith("resume with: "))
    assert resume_line == f"resume with: ray-backfill resume {run_id} --warehouse {warehouse}"
    assert not wait_gone(java_and_workers() - before, timeout=20), "the timed-out attempt left processes"
    catalog = attach_catalog(spark, warehouse, "failrun")
    assert spark.table(SILVER.qualified(catalog)).count() == 0, "silver must not run past a failed chunk"
    bronze_months = {r[0] for r in spark.table(BRONZE.qualified(catalog)).select(F.month("ts_utc")).distinct().collect()}
    assert bronze_months == {1, 2}

    resumed = run_cli("resume", run_id, "--warehouse", str(warehouse))
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    ledger = read_ledger(warehouse, run_id)
    tasks = {t["task_id"]: t for t in ledger["tasks"]}
    assert ledger["outcome"] == "succeeded"
    assert tasks["bronze-2024-01"]["attempts"] == 2, "a succeeded chunk is not run again"
    assert tasks["bronze-2024-03"]["status"] == "succeeded" and tasks["bronze-2024-03"]["attempts"] == 3
    assert spark.table(SILVER.qualified(catalog)).select(F.month("ts_utc")).distinct().count() == 3
    status = run_cli("status", run_id, "--warehouse", str(warehouse))
    assert status.returncode == 0 and "bronze-2024-03" in status.stdout and "succeeded" in status.stdout


def test_ctrl_c_cancels_in_flight_chunks_and_resume_finishes(spark, tmp_path):
    warehouse = tmp_path / "wh"
    args = [*CLI_ARGS_2M, "--warehouse", str(warehouse), "--spark-mode", "local", "--parallelism", "2",
            "--catalog-name", "cancelrun"]
    before = java_and_workers()
    driver, output = _start_driver(args, {"bronze-2024-02": {"sleep_before_write": 600}})
    _wait_for_worker("bronze-2024-02", output)
    _wait_for_line("bronze-2024-01: succeeded", output)
    driver.send_signal(signal.SIGINT)
    driver.wait(timeout=120)
    driver.reader.join(timeout=10)
    text = "".join(output)
    assert driver.returncode == 130, text[-3000:]
    run_id = run_id_from(text)
    ledger = read_ledger(warehouse, run_id)
    tasks = {t["task_id"]: t for t in ledger["tasks"]}
    assert ledger["outcome"] == "cancelled"
    assert tasks["bronze-2024-01"]["status"] == "succeeded"
    assert tasks["bronze-2024-02"]["status"] == "cancelled"
    assert f"resume with: ray-backfill resume {run_id}" in text
    leftover = wait_gone(java_and_workers() - before, timeout=20)
    assert not leftover, "cancel left JVMs or chunk processes behind"
    catalog = attach_catalog(spark, warehouse, "cancelrun")
    months = {r[0] for r in spark.table(BRONZE.qualified(catalog)).select(F.month("ts_utc")).distinct().collect()}
    assert months == {1}, "the committed chunk stays, the cancelled one left nothing"
    resumed = run_cli("resume", run_id, "--warehouse", str(warehouse))
    assert resumed.returncode == 0, resumed.stdout[-3000:]
    assert read_ledger(warehouse, run_id)["outcome"] == "succeeded"


def _start_driver(args, faults):
    import os
    import subprocess

    from tests.helpers import CLI, ROOT

    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["RAY_BACKFILL_FAULTS"] = json.dumps(faults)
    driver = subprocess.Popen([*CLI, *args], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True)
    output: list[str] = []

    def read() -> None:
        with driver.stdout:
            output.extend(driver.stdout)

    driver.reader = threading.Thread(target=read, daemon=True)
    driver.reader.start()
    return driver, output


def _wait_for_line(fragment: str, output: list[str], timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if fragment in "".join(output):
            return
        time.sleep(0.5)
    raise AssertionError(f"{fragment!r} never printed:\n{''.join(output)[-3000:]}")


def _wait_for_worker(task_id: str, output: list[str], timeout: float = 240) -> psutil.Process:
    """The chunk process of `task_id`, once it is holding mid-chunk (before its commit)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for proc in our_processes("ray_backfill.worker"):
            try:
                task = json.loads(Path(proc.cmdline()[-1]).read_text())["task"]
            except (OSError, ValueError, KeyError, psutil.Error):
                continue
            if task["task_id"] == task_id:
                return proc
        time.sleep(0.5)
    raise AssertionError(f"no worker for {task_id}:\n{''.join(output)[-3000:]}")


def test_sigkilled_chunk_leaves_no_partial_data_and_is_retried(spark, tmp_path):
    warehouse = tmp_path / "wh"
    args = [*CLI_ARGS_2M, "--warehouse", str(warehouse), "--spark-mode", "local", "--parallelism", "2",
            "--catalog-name", "killrun"]
    driver, output = _start_driver(args, {"bronze-2024-02": {"sleep_before_write": 600}})
    victim = _wait_for_worker("bronze-2024-02", output)
    time.sleep(8)  # let it reach the hold: session up, rows fetched, nothing committed
    victim.send_signal(signal.SIGKILL)
    driver.wait(timeout=600)
    driver.reader.join(timeout=10)
    text = "".join(output)
    assert driver.returncode == 0, text[-4000:]
    assert "bronze-2024-02: attempt 1 failed (chunk process killed by signal 9)" in text
    run_id = run_id_from(text)
    tasks = {t["task_id"]: t for t in read_ledger(warehouse, run_id)["tasks"]}
    assert tasks["bronze-2024-02"]["attempts"] == 2 and tasks["bronze-2024-02"]["status"] == "succeeded"
    catalog = attach_catalog(spark, warehouse, "killrun")
    bronze = spark.table(BRONZE.qualified(catalog))
    per_month = dict(bronze.groupBy(F.month("ts_utc")).count().collect())
    assert set(per_month) == {1, 2} and per_month[2] > 29 * 24 * 0.95
    # one commit per chunk: the killed attempt added no snapshot
    snapshots = spark.sql(f"SELECT count(*) FROM {BRONZE.qualified(catalog)}.snapshots").first()[0]
    assert snapshots == 2
    assert not wait_gone({p.pid for p in our_processes(str(warehouse))}, timeout=20)


CLI_ARGS_2M = ["run", "--start-date", "2024-01-01", "--end-date", "2024-02-29", "--locations", "hanoi"]
