"""Test helpers shared by the process-level tests: run the CLI, read the process table."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
CLI = [sys.executable, "-m", "ray_backfill.cli"]
# A test sets this in the environment of what it starts, to find every process that came of it.
MARKER_ENV = "RAY_BACKFILL_TEST_MARKER"


def run_cli(*args: str, env: dict | None = None, timeout: float = 900) -> subprocess.CompletedProcess:
    """Run `ray-backfill ARGS` in a child process; output captured as text."""
    full_env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    full_env.update(env or {})
    return subprocess.run([*CLI, *args], cwd=ROOT, env=full_env, capture_output=True, text=True, timeout=timeout)


def run_cli_marked(*args: str, marker: str, env: dict | None = None,
                   timeout: float = 900) -> tuple[subprocess.CompletedProcess, dict[int, str]]:
    """`run_cli` with MARKER_ENV=`marker`; also returns every marked process seen while it ran."""
    full_env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    full_env.update(env or {})
    full_env[MARKER_ENV] = marker
    seen: dict[int, str] = {}
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen([*CLI, *args], cwd=ROOT, env=full_env, stdout=out, stderr=err, text=True)
        deadline = time.monotonic() + timeout
        while proc.poll() is None:
            if time.monotonic() > deadline:
                proc.kill()
                proc.wait()
                break
            seen.update(marked_processes(marker))
            time.sleep(1)
        out.seek(0)
        err.seek(0)
        return subprocess.CompletedProcess(proc.args, proc.returncode, out.read(), err.read()), seen


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


def marked_processes(marker: str) -> dict[int, str]:
    """Live processes whose environment holds MARKER_ENV=`marker`, with their command lines.

    Whatever a test's run starts inherits the variable — Ray's daemons and workers, chunk processes,
    their JVMs — and keeps it when orphaned, where a search by parent or command line misses it.
    """
    needle = f"{MARKER_ENV}={marker}".encode()
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if needle not in (entry / "environ").read_bytes().split(b"\0"):
                continue
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        except (OSError, IndexError):
            continue
        if state != "Z":
            found[int(entry.name)] = cmdline
    return found


def wait_marked_gone(marker: str, timeout: float = 30) -> dict[int, str]:
    """Wait until no process carries `marker`; return those still alive at the timeout."""
    deadline = time.monotonic() + timeout
    left = marked_processes(marker)
    while left and time.monotonic() < deadline:
        time.sleep(0.5)
        left = marked_processes(marker)
    return left


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


def attempt_logs(warehouse: Path) -> str:
    """Every attempt log of every run on `warehouse`, one after another (the chunks' own output)."""
    return "".join(p.read_text(errors="replace") for p in sorted(warehouse.glob("_ray_backfill/runs/*/logs/*.log")))


def run_id_from(output: str) -> str:
    for line in output.splitlines():
        if line.startswith("run ") and ":" in line:
            return line.split()[1].rstrip(":")
    raise AssertionError(f"no run id in output:\n{output}")


def attach_catalog(spark, warehouse: Path, name: str, **catalog_fields):
    """Register the catalog of `warehouse` on a running session; returns its CatalogConfig.

    SQLite unless `catalog_fields` say otherwise (kind="postgres", uri=, user=, password=).
    Iceberg's JDBC catalog keys its tables by catalog name, so `name` must be the name the run
    used (`--catalog-name`); each test's run picks its own so they can share one session.
    """
    from jobs.config import CatalogConfig
    from ray_backfill.sessions import catalog_conf

    catalog = CatalogConfig(name=name, warehouse=str(warehouse), **catalog_fields)
    for key, value in catalog_conf(catalog).items():
        spark.conf.set(key, value)
    return catalog


def checksums(spark, catalog) -> dict[str, str]:
    """Order-independent checksum of every lakehouse table, ignoring _ingested_at/_run_id/_chunk_id."""
    from jobs.inspect import table_checksum
    from jobs.tables import ALL_TABLES

    return {spec.name: table_checksum(spark.table(spec.qualified(catalog))) for spec in ALL_TABLES}


_catalog_numbers = iter(range(1, 100_000))


def fresh_catalog(spark, settings, root: Path, prefix: str = "t"):
    """`settings` with a new, empty catalog under `root`, registered on the live session, tables made."""
    from jobs.config import CatalogConfig
    from jobs.tables import ensure_tables
    from ray_backfill.sessions import catalog_conf

    catalog = CatalogConfig(name=f"{prefix}{next(_catalog_numbers)}", warehouse=str(root / "warehouse"))
    catalog.warehouse_path.mkdir(parents=True)
    for key, value in catalog_conf(catalog).items():
        spark.conf.set(key, value)
    ensure_tables(spark, catalog)
    return settings.replace(catalog=catalog)


def disk_snapshot(roots: list[Path], skip: list[Path] = ()) -> dict[str, int]:
    """Every file under `roots` (but under `skip`) with its size; files that vanish mid-walk are left out."""
    import os

    skipped = tuple(str(s) for s in skip)
    sizes: dict[str, int] = {}
    for root in roots:
        for folder, dirs, files in os.walk(root, onerror=lambda e: None):
            dirs[:] = [d for d in dirs if not os.path.join(folder, d).startswith(skipped)]
            for name in files:
                path = os.path.join(folder, name)
                try:
                    st = os.lstat(path)
                except OSError:
                    continue
                sizes[path] = st.st_blocks * 512  # what it takes on disk (a sparse file takes less)
    return sizes


def disk_added(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    """Bytes each file added between two snapshots (new files whole, grown ones by their growth)."""
    return {p: size - before.get(p, 0) for p, size in after.items() if size > before.get(p, 0)}
