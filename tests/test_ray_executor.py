"""The Ray executor when attempts end badly: real Ray, real chunk processes and Spark sessions, real
Iceberg (local sessions: these tests are about processes, not RayDP; tests/test_raydp_backfill.py
runs the default mode end to end)."""

from __future__ import annotations

import json
import re
import signal
import threading
import time
from pathlib import Path

import psutil
import pytest
from pyspark.sql import functions as F

from jobs.tables import BRONZE, SILVER
from tests.helpers import (
    attach_catalog,
    attempt_logs,
    java_and_workers,
    our_processes,
    read_ledger,
    run_cli,
    run_id_from,
    wait_gone,
)

pytestmark = [pytest.mark.ray, pytest.mark.spark, pytest.mark.integration, pytest.mark.slow]

_DRIVERS: list = []  # the drivers a test started (_start_driver)


@pytest.fixture(autouse=True)
def _no_driver_outlives_its_test():
    """A test that fails before its driver ends (one held by a fault drill waits 600 s) stops it as
    `ray job stop` would (SIGTERM: the run cancels, its chunks and JVMs end), then kills it."""
    yield
    while _DRIVERS:
        driver = _DRIVERS.pop()
        if driver.poll() is None:
            driver.terminate()
            try:
                driver.wait(timeout=60)
            except Exception:
                driver.kill()
                driver.wait(timeout=10)


def test_killed_and_timed_out_attempts_are_retried_a_permanent_failure_holds_silver_until_resume(spark, tmp_path):
    """One real run through every way an attempt ends badly; the loop's rules are in test_loop.py."""
    warehouse = tmp_path / "wh"
    faults = {
        "bronze-2024-01": {"sleep_before_write": 600},  # first attempt hangs: the timeout must fire
        "bronze-2024-02": {"sleep_before_write": 600},  # first attempt hangs until this test SIGKILLs it
        "bronze-2024-03": {"always_fail": True},         # fails for good: the barrier holds
    }
    args = ["run", "--start-date", "2024-01-01", "--end-date", "2024-03-31", "--locations", "hanoi",
            "--warehouse", str(warehouse), "--spark-mode", "local", "--parallelism", "2", "--retries", "1",
            "--chunk-timeout", "45", "--standby", "1", "--catalog-name", "failrun"]
    before = java_and_workers()
    driver, output = _start_driver(args, faults, tmp := _short_tmp())
    victim = _wait_for_worker("bronze-2024-02", output)
    # held mid-chunk: session up, rows fetched, nothing committed
    _wait_for_line("[bronze-2024-02] fault drill: holding before the write", output, warehouse)
    # meanwhile the next chunk's standby is up and waits for its turn; it dies before it comes
    standby = _wait_for_worker("bronze-2024-03", output)
    assert "--standby" in standby.cmdline()
    _wait_for_line("[bronze-2024-03] standby: session up", output, warehouse)
    standby.send_signal(signal.SIGKILL)
    victim.send_signal(signal.SIGKILL)
    text = _output_at_exit(driver, output, timeout=600)
    assert driver.returncode == 1, text[-4000:]
    run_id = run_id_from(text)
    tasks = {t["task_id"]: t for t in read_ledger(warehouse, run_id)["tasks"]}
    assert "bronze-2024-01: attempt 1 failed (timed out after 45s)" in text
    # the dead standby's chunk started afresh in a new process, and no process served two attempts;
    # the console showed none of the chunks' own output, their log files hold it
    logs = attempt_logs(warehouse)
    assert re.search(r"\[bronze-2024-03\] attempt 1 starting on node \w+ in a new process", logs), logs[-4000:]
    assert "in its standby" in logs
    assert "fault drill" not in text and "standby: session up" not in text
    assert "bronze-2024-02: attempt 1 failed (chunk process killed by signal 9)" in text
    assert tasks["bronze-2024-01"]["status"] == "succeeded" and tasks["bronze-2024-01"]["attempts"] == 2
    assert tasks["bronze-2024-02"]["status"] == "succeeded" and tasks["bronze-2024-02"]["attempts"] == 2
    assert tasks["bronze-2024-03"]["status"] == "failed" and tasks["bronze-2024-03"]["attempts"] == 2
    assert "injected failure in bronze-2024-03 attempt 2" in tasks["bronze-2024-03"]["error"]
    assert tasks["silver"]["status"] == "pending" and tasks["gold"]["status"] == "pending"
    assert "bronze-2024-03: failed after 2 attempt(s): RuntimeError: injected failure" in text
    resume_line = next(line for line in text.splitlines() if line.startswith("resume with: "))
    assert resume_line == f"resume with: ray-backfill resume {run_id} --warehouse {warehouse}"
    assert not wait_gone(java_and_workers() - before, timeout=20), "a killed or timed-out attempt left processes"
    assert not list(tmp.glob("rbf-*")), "an attempt's temporary folder was left behind"
    catalog = attach_catalog(spark, warehouse, "failrun")
    assert spark.table(SILVER.qualified(catalog)).count() == 0, "silver must not run past a failed chunk"
    bronze = spark.table(BRONZE.qualified(catalog))
    per_month = dict(bronze.groupBy(F.month("ts_utc")).count().collect())
    # the killed and the timed-out attempts left nothing half-written: their retries wrote whole months
    assert set(per_month) == {1, 2} and per_month[1] > 31 * 24 * 0.95 and per_month[2] > 29 * 24 * 0.95
    assert bronze.count() == tasks["bronze-2024-01"]["rows"] + tasks["bronze-2024-02"]["rows"]

    resumed = run_cli("resume", run_id, "--warehouse", str(warehouse))
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    ledger = read_ledger(warehouse, run_id)
    tasks = {t["task_id"]: t for t in ledger["tasks"]}
    assert ledger["outcome"] == "succeeded"
    # the resume's silver and gold started ahead (silver's behind the barrier), each in a process of its own
    assert tasks["silver"]["metrics"].get("standby") and tasks["gold"]["metrics"].get("standby"), tasks
    pids = [t["metrics"]["worker_pid"] for t in tasks.values()]
    assert len(set(pids)) == len(pids) and standby.pid not in pids, "a process served two attempts"
    assert tasks["bronze-2024-01"]["attempts"] == 2, "a succeeded chunk is not run again"
    assert tasks["bronze-2024-03"]["status"] == "succeeded" and tasks["bronze-2024-03"]["attempts"] == 3
    assert spark.table(SILVER.qualified(catalog)).select(F.month("ts_utc")).distinct().count() == 3
    status = run_cli("status", run_id, "--warehouse", str(warehouse))
    assert status.returncode == 0 and status.stdout.startswith(f"run {run_id}: succeeded")
    rows = {line.split()[0]: line.split()[1:3] for line in status.stdout.splitlines()[3:] if line.strip()}
    assert rows["bronze-2024-03"] == ["succeeded", "3"] and rows["gold"] == ["succeeded", "1"], status.stdout


def test_ctrl_c_cancels_in_flight_chunks_and_standbys_keeps_committed_ones_and_leaves_no_process(spark, tmp_path):
    warehouse = tmp_path / "wh"
    # more than the 2 CPUs of this machine's Ray hold: capped to 2, with a warning
    args = [*CLI_ARGS_2M, "--warehouse", str(warehouse), "--spark-mode", "local", "--parallelism", "1000",
            "--standby", "1", "--catalog-name", "cancelrun"]
    before = java_and_workers()
    driver, output = _start_driver(args, {"bronze-2024-02": {"sleep_before_write": 600}}, tmp := _short_tmp())
    _wait_for_worker("bronze-2024-02", output)
    _wait_for_line("bronze-2024-01: succeeded", output, warehouse)
    # the last bronze chunk holds: silver's standby starts its session and waits behind the barrier
    _wait_for_worker("silver", output)
    _wait_for_line("[silver] standby: session up", output, warehouse)
    driver.send_signal(signal.SIGINT)
    text = _output_at_exit(driver, output, timeout=120)
    assert driver.returncode == 130, text[-3000:]
    assert "warning: --parallelism 1000 is more than the cluster holds; capped to 2 (2 CPUs / 1 executor cores" in text
    run_id = run_id_from(text)
    ledger = read_ledger(warehouse, run_id)
    tasks = {t["task_id"]: t for t in ledger["tasks"]}
    assert ledger["outcome"] == "cancelled"
    assert tasks["bronze-2024-01"]["status"] == "succeeded"
    assert tasks["bronze-2024-02"]["status"] == "cancelled"
    assert tasks["silver"]["status"] == "cancelled" and tasks["silver"]["attempts"] == 0
    assert f"resume with: ray-backfill resume {run_id}" in text
    leftover = wait_gone(java_and_workers() - before, timeout=20)
    assert not leftover, "cancel left JVMs, chunk processes or standbys behind"
    assert not list(tmp.glob("rbf-*")), "a cancelled attempt or standby left its temporary folder"
    catalog = attach_catalog(spark, warehouse, "cancelrun")
    months = {r[0] for r in spark.table(BRONZE.qualified(catalog)).select(F.month("ts_utc")).distinct().collect()}
    assert months == {1}, "the committed chunk stays, the cancelled one left nothing"
    assert spark.table(SILVER.qualified(catalog)).count() == 0, "silver's standby never read past the barrier"


def test_a_slots_raydp_master_serves_its_chunks_and_one_that_dies_fails_only_the_chunk_in_flight(spark, tmp_path):
    """RayDP mode, one slot: its master starts with the first RayDP chunk; killed mid-chunk, that
    chunk fails at once, its retry runs on a fresh master, and that master serves the next chunk.
    Bronze only: silver and gold on RayDP run in tests/test_raydp_backfill.py."""
    warehouse = tmp_path / "wh"
    args = [*CLI_ARGS_2M, "--warehouse", str(warehouse), "--parallelism", "1", "--standby", "0", "--retries", "1",
            "--catalog-name", "masterrun", "--skip-silver", "--skip-gold"]
    before = java_and_workers()
    driver, output = _start_driver(args, {"bronze-2024-01": {"sleep_before_write": 600}}, tmp := _short_tmp())
    _wait_for_worker("bronze-2024-01", output)
    _wait_for_line("[bronze-2024-01] fault drill: holding before the write", output, warehouse)
    new = [psutil.Process(pid) for pid in java_and_workers() - before if psutil.pid_exists(pid)]
    commands = {proc: " ".join(proc.cmdline()) for proc in new}
    gateways = [p for p, cmd in commands.items() if "AppMasterEntryPoint" in cmd]
    # RayDP starts an executor's JVM with -Xms and -Xmx its memory; the master's has no -Xms
    masters = [p for p, cmd in commands.items() if "io.ray.runtime.runner.worker.DefaultWorker" in cmd and "-Xms" not in cmd]
    assert len(gateways) == 1 and len(masters) == 1, commands
    masters[0].kill()
    text = _output_at_exit(driver, output, timeout=600)
    assert driver.returncode == 0, text[-4000:]
    assert "bronze-2024-01: attempt 1 failed (slot-0's RayDP master died)" in text, text[-4000:]
    run_id = run_id_from(text)
    tasks = {t["task_id"]: t for t in read_ledger(warehouse, run_id)["tasks"]}
    assert sorted(tasks) == ["bronze-2024-01", "bronze-2024-02", "prepare"], tasks
    assert all(t["status"] == "succeeded" for t in tasks.values()), tasks
    assert tasks["bronze-2024-01"]["attempts"] == 2 and tasks["bronze-2024-02"]["attempts"] == 1
    folder = warehouse / "_ray_backfill" / "runs" / run_id / "logs"
    said = {f.name: [line for line in f.read_text().splitlines() if "RayDP master" in line] for f in folder.glob("*.log")}
    first = said["bronze-2024-01.attempt1.log"]
    assert len(first) == 1 and first[0].startswith("# slot-0: RayDP master started in "), said
    # the next attempt on the slot (the retry, or the next chunk: the loop decides) starts a fresh
    # master, and that master serves the other one too
    after = sorted([line.split(" in ")[0] for line in said[name]]
                   for name in ("bronze-2024-01.attempt2.log", "bronze-2024-02.attempt1.log"))
    assert after == [[], ["# slot-0: RayDP master restarted: its master had died"]], said
    # each chunk's own driver: no process served two attempts
    pids = [t["metrics"]["worker_pid"] for t in tasks.values()]
    assert len(set(pids)) == len(pids)
    assert not wait_gone(java_and_workers() - before, timeout=20), "the run left a master, an executor or a chunk"
    assert not list(tmp.glob("rbf-*"))
    catalog = attach_catalog(spark, warehouse, "masterrun")
    bronze = spark.table(BRONZE.qualified(catalog))
    assert bronze.count() == 60 * 24 == tasks["bronze-2024-01"]["rows"] + tasks["bronze-2024-02"]["rows"]


def _short_tmp() -> Path:
    """A temp folder of the test's own for the run (TMPDIR), short for Ray's socket paths; removed at exit."""
    import atexit
    import shutil
    import tempfile

    tmp = Path(tempfile.mkdtemp(prefix="rbf-t-", dir="/tmp"))
    atexit.register(shutil.rmtree, tmp, True)
    return tmp


def _start_driver(args, faults, tmpdir: Path | None = None):
    import os
    import subprocess

    from tests.helpers import CLI, ROOT

    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    if tmpdir is not None:  # every temporary folder of the run (the attempts' too) lands here
        env["TMPDIR"] = str(tmpdir)
    env["RAY_BACKFILL_FAULTS"], env["RAY_BACKFILL_FAULT_DRILLS"] = json.dumps(faults), "1"
    driver = subprocess.Popen([*CLI, *args], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True)
    _DRIVERS.append(driver)
    output: list[str] = []

    def read() -> None:
        with driver.stdout:
            output.extend(driver.stdout)

    driver.reader = threading.Thread(target=read, daemon=True)
    driver.reader.start()
    return driver, output


def _output_at_exit(driver, output: list[str], timeout: float) -> str:
    """Everything the driver printed, once it has exited."""
    driver.wait(timeout=timeout)
    driver.reader.join(timeout=10)
    return "".join(output)


def _wait_for_line(fragment: str, output: list[str], warehouse: Path, timeout: float = 240) -> None:
    """Until the driver printed `fragment`, or an attempt wrote it to its log (a chunk's own output)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if fragment in "".join(output) or fragment in attempt_logs(warehouse):
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


CLI_ARGS_2M = ["run", "--start-date", "2024-01-01", "--end-date", "2024-02-29", "--locations", "hanoi"]
