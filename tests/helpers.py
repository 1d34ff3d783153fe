"""Test helpers shared by the process-level tests: run the CLI, read the process table."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
CLI = [sys.executable, "-m", "ray_backfill.cli"]


def run_cli(*args: str, env: dict | None = None, timeout: float = 900) -> subprocess.CompletedProcess:
    """Run `ray-backfill ARGS` in a child process; output captured as text."""
    full_env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    full_env.update(env or {})
    return subprocess.run([*CLI, *args], cwd=ROOT, env=full_env, capture_output=True, text=True, timeout=timeout)


def our_processes(marker: str) -> list[psutil.Process]:
    """Live processes whose command line mentions `marker` (a warehouse path, a run id)."""
    found = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        try:
            if marker in " ".join(proc.info["cmdline"] or []) and proc.pid != os.getpid():
                found.append(proc)
        except psutil.Error:
            continue
    return found


def java_and_workers() -> set[int]:
    """Pids of JVMs and chunk worker processes now running."""
    pids = set()
    for proc in psutil.process_iter(["pid", "name", "cmdline"]):
        try:
            cmd = " ".join(proc.info["cmdline"] or [])
            if proc.info["name"] == "java" or "ray_backfill.worker" in cmd:
                pids.add(proc.pid)
        except psutil.Error:
            continue
    return pids


def wait_gone(pids: set[int], timeout: float = 30) -> set[int]:
    """Wait until none of `pids` is alive; return those still alive at the timeout."""
    deadline = time.monotonic() + timeout
    alive = set(pids)
    while alive and time.monotonic() < deadline:
        alive = {p for p in alive if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE}
        time.sleep(0.5)
    return alive


def read_ledger(warehouse: Path, run_id: str) -> dict:
    return json.loads((warehouse / "_ray_backfill" / "runs" / run_id / "ledger.json").read_text())


def run_id_from(output: str) -> str:
    for line in output.splitlines():
        if line.startswith("run ") and ":" in line:
            return line.split()[1].rstrip(":")
    raise AssertionError(f"no run id in output:\n{output}")


def attach_catalog(spark, warehouse: Path, name: str):
    """Register the SQLite catalog of `warehouse` on a running session; returns its CatalogConfig.

    Iceberg's JDBC catalog keys its tables by catalog name, so `name` must be the name the run
    used (`--catalog-name`); each test's run picks its own so they can share one session.
    """
    from ray_backfill.config import CatalogConfig
    from ray_backfill.sessions import catalog_conf

    catalog = CatalogConfig(name=name, warehouse=str(warehouse))
    for key, value in catalog_conf(catalog).items():
        spark.conf.set(key, value)
    return catalog


def checksums(spark, catalog) -> dict[str, str]:
    """Order-independent checksum of every lakehouse table, ignoring _ingested_at/_run_id/_chunk_id."""
    from jobs.inspect import table_checksum
    from jobs.tables import ALL_TABLES

    return {spec.name: table_checksum(spark.table(spec.qualified(catalog))) for spec in ALL_TABLES}
