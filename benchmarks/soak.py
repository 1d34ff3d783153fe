"""The soak: a long daily backfill, to show that the cost per chunk stays flat and nothing accumulates.

    python -m benchmarks.soak                          # 517 daily chunks x 3 locations, 3 modes (2 to 3 h on 2 cores)
    python -m benchmarks.soak --quick --modes local    # 40 daily chunks, one mode (a few minutes)

Each mode is a fresh `ray-backfill run --chunk daily` process against a fresh warehouse, with the
built-in synthetic source (offline: no server to start) at the `self-hosted` source profile: Ray
with a RayDP session per chunk at parallelism 2, Ray with a local session per chunk at parallelism 2,
and the sequential baseline (one long-lived local session). While a run goes, a sampler thread
polls every `--every` seconds: the run's ledger for chunks that finished, the run's CPU (its own
cgroup, cpuacct, or the machine's /proc/stat where no cgroup can be made), the RSS, open files and
deleted files held open of the driver and of each long-lived process under it (Ray's gcs_server,
raylet, dashboard and its agents; the baseline's JVM), processes naming the warehouse that no longer
descend from the driver, disk used under Ray's temp root and under the warehouse (tables, and the
ledger with its logs) and the size of bronze's current metadata file. Each finished chunk gets
one row: its own seconds, write+commit seconds, rows, attempts and peak RSS from the ledger, the
commit conflicts its attempt logs name, the levels at the poll that saw it finish, and its share
of what the CPU and the disks added since the previous poll that saw a chunk finish (split evenly
among the chunks finished in between: with 2 chunks in flight no chunk has the CPU to itself).

Verdict: per measure and mode, the median of the last 10 % of chunks against the first 10 %; more
than 10 % higher (and above a small absolute floor) fails. Exit 1 if a Ray mode fails a measure or
its run fails; the baseline's growth is shown beside them, not judged.

Writes under benchmarks/results/soak/ (--out): soak.json (every row), soak.md, one PNG per
measure, soak.html (the tables and the PNGs in one file).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import datetime as dt
import html
import json
import math
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import psutil

from benchmarks import analysis, report
from benchmarks.cpu import CgroupCpu, machine_busy_seconds, take_the_cpu_first
from jobs.errors import InputError
from jobs.tables import BRONZE

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results" / "soak"
RAY_ROOT = Path("/tmp/ray")  # Ray's temp root, and where its Java runtime copies its native library
START, END = dt.date(2023, 1, 1), dt.date(2024, 5, 31)  # 517 daily chunks
QUICK_DAYS = 40
LOCATIONS = "hanoi,hcmc,danang"
CONFLICT_LINE = "commit conflict on"  # jobs/writes.py, when Iceberg refuses a commit and the step is retried
TOLERANCE = 0.10
ESTIMATE_TOLERANCE = 0.25


@dataclass(frozen=True)
class Mode:
    key: str
    label: str
    flags: tuple[str, ...]


def modes(parallelism: int) -> dict[str, Mode]:
    """The three configurations, by the key `--modes` takes."""
    p = str(parallelism)
    return {
        "raydp": Mode("raydp", f"Ray, RayDP p={p}",
                      ("--executor", "ray", "--spark-mode", "raydp", "--parallelism", p)),
        "local": Mode("local", f"Ray, local Spark p={p}",
                      ("--executor", "ray", "--spark-mode", "local", "--parallelism", p)),
        "sequential": Mode("sequential", "sequential baseline", ("--executor", "sequential", "--spark-mode", "local")),
    }


@dataclass(frozen=True)
class Measure:
    key: str
    label: str
    unit: str
    floor: float | None  # None: shown, not judged; else growth up to this much (absolute) always passes
    stat: str = "median"  # of each tenth: "median", or "peak" for a level that comes and goes within a chunk


MEASURES = (
    Measure("chunk_s", "chunk seconds (ledger)", "s", 0.1),
    Measure("cpu_s", "CPU-s per chunk", "CPU-s", 0.1),
    Measure("commit_s", "write+commit seconds (ledger)", "s", 0.1),
    Measure("driver_rss_mb", "driver RSS", "MiB", 10.0),
    Measure("long_lived_rss_mb", "long-lived processes' RSS (sum)", "MiB", 10.0),
    Measure("chunk_peak_rss_mb", "chunk peak RSS (ledger)", "MiB", 10.0),
    Measure("driver_fds", "driver open fds", "fds", 2.0),
    Measure("long_lived_fds", "long-lived processes' open fds (sum)", "fds", 2.0),
    Measure("held_deleted_mb", "deleted files the driver and long-lived processes hold open", "MiB", 1.0),
    Measure("stray_procs", "processes naming the warehouse outside the driver's tree", "processes", 0.5),
    Measure("tables_added_mb", "warehouse tables: disk added per chunk", "MiB", 0.01),
    Measure("logs_added_mb", "ledger and logs: disk added per chunk", "MiB", 0.01),
    # a level, judged at its peaks: a native-library copy lives for a second of each session's start,
    # so a sample holds one or not by chance and "added per chunk" swings ±40 MiB between polls
    Measure("ray_run_mb", "the run's Ray session (logs aside) and native-library copies: disk in use", "MiB", 10.0,
            "peak"),
    Measure("ray_run_added_mb", "the run's Ray session (logs aside) and native-library copies: added per chunk",
            "MiB", None),
    Measure("ray_logs_mb", "the run's Ray logs (against the log cap, docs/operations.md#logs)", "MiB", None),
    Measure("gap_s", "seconds between completions", "s", None),
    Measure("bronze_metadata_kb", "bronze's current metadata.json", "KiB", None),
    Measure("warehouse_mb", "warehouse, total", "MiB", None),
    Measure("ray_tmp_added_mb", "Ray temp root (machine-wide): disk added per chunk", "MiB", None),
    Measure("ray_tmp_mb", "Ray temp root (machine-wide), total", "MiB", None),
    Measure("ray_session_mb", "the run's Ray session folder, total", "MiB", None),
    Measure("tree_procs", "processes under the driver", "processes", None),
    Measure("conflicts_total", "commit conflicts so far", "conflicts", None),
)
# Levels whose growth between two polls is shared among the chunks finished in between.
SHARED = {"cpu_s": "cpu_s", "tables_mb": "tables_added_mb", "logs_mb": "logs_added_mb",
          "ray_tmp_mb": "ray_tmp_added_mb", "ray_run_mb": "ray_run_added_mb"}


# --- what a poll reads ---------------------------------------------------------------------------


def role_of(name: str, cmd: str, ppid: int, driver_pid: int) -> str | None:
    """The long-lived process a process of the driver's tree is, or None for one that comes and goes."""
    if name == "gcs_server":
        return "gcs_server"
    if name == "raylet":
        return "raylet"
    if cmd.startswith("ray::DashboardAgent"):
        return "dashboard agent"
    if cmd.startswith("ray::RuntimeEnvAgent"):
        return "runtime env agent"
    if cmd.startswith("ray::SourceLimiterActor"):
        return "source limiter actor"
    if cmd.startswith("ray::SlotSupervisor"):
        return "slot supervisors"  # one per slot, for the run (ray_backfill/executors/ray.py)
    is_java = name == "java" or cmd.split(" ", 1)[0].endswith("/java")
    if is_java and "AppMasterEntryPoint" in cmd:
        return "RayDP master gateways"  # a slot's master (ray_backfill/slot_master.py)
    if is_java and "io.ray.runtime.runner.worker.DefaultWorker" in cmd and "-Xms" not in cmd:
        return "RayDP master actors"  # the executors are given their heap (-Xms, -Xmx) and live for one chunk
    if "dashboard/dashboard.py" in cmd:
        return "dashboard"
    if cmd.startswith("ray-dashboard-") or "multiprocessing.forkserver" in cmd \
            or "multiprocessing.resource_tracker" in cmd:
        return "dashboard modules"
    if "log_monitor.py" in cmd:
        return "log monitor"
    if "autoscaler/_private/monitor.py" in cmd:
        return "autoscaler monitor"
    if ppid == driver_pid and is_java:
        return "Spark JVM"  # the baseline's one session; the Ray modes' JVMs live under raylet
    return None


def dir_mb(path: Path) -> float:
    """Disk used under `path` (allocated blocks, as du), MiB; files that vanish mid-walk are skipped."""
    total, stack = 0, [str(path)]
    while stack:
        try:
            entries = os.scandir(stack.pop())
        except OSError:
            continue
        with entries:
            for entry in entries:
                try:
                    if entry.is_dir(follow_symlinks=False):
                        stack.append(entry.path)
                    else:
                        total += entry.stat(follow_symlinks=False).st_blocks * 512
                except OSError:
                    continue
    return total / 2**20


def newest_metadata_kb(table_dir: Path) -> float | None:
    """Size of the table's current metadata file: the highest-numbered `*.metadata.json`."""
    newest: tuple[int, str] | None = None
    try:
        for name in os.listdir(table_dir / "metadata"):
            found = re.match(r"^(\d+)-.*\.metadata\.json$", name)
            if found and (newest is None or int(found.group(1)) > newest[0]):
                newest = (int(found.group(1)), name)
        return None if newest is None else (table_dir / "metadata" / newest[1]).stat().st_size / 1024
    except OSError:
        return None


def _proc_facts(proc: psutil.Process) -> tuple[float, int, float] | None:
    """RSS MiB, open fds, and MiB of deleted files it holds open (their disk is not free until closed)."""
    try:
        return proc.memory_info().rss / 2**20, proc.num_fds(), deleted_open_mb(proc.pid)
    except psutil.Error:
        return None


def deleted_open_mb(pid: int) -> float:
    """MiB of the deleted files a process still holds open: disk a du walk no longer sees."""
    total, folder = 0, f"/proc/{pid}/fd"
    try:
        fds = os.listdir(folder)
    except OSError:
        return 0.0
    for fd in fds:
        try:
            if os.readlink(f"{folder}/{fd}").endswith(" (deleted)"):
                total += os.stat(f"{folder}/{fd}").st_blocks * 512
        except OSError:
            continue
    return total / 2**20


def process_levels(driver_pid: int) -> dict:
    """RSS and open fds of the driver and of each long-lived process under it; the Ray session it runs."""
    out: dict = {"driver_rss_mb": None, "driver_fds": None, "long_lived": {}, "tree_procs": 0, "session_dir": None,
                 "held_deleted_mb": None}
    try:
        driver = psutil.Process(driver_pid)
        children = driver.children(recursive=True)
    except psutil.Error:
        return out
    facts = _proc_facts(driver)
    if facts:
        out["driver_rss_mb"], out["driver_fds"], out["held_deleted_mb"] = round(facts[0], 1), facts[1], facts[2]
    out["tree_procs"] = len(children)
    for proc in children:
        try:
            name, cmd, ppid = proc.name(), " ".join(proc.cmdline()), proc.ppid()
        except psutil.Error:
            continue
        role = role_of(name, cmd, ppid, driver_pid)
        facts = _proc_facts(proc) if role else None
        if facts is None:
            continue
        entry = out["long_lived"].setdefault(role, {"rss_mb": 0.0, "fds": 0, "n": 0})
        entry["rss_mb"] = round(entry["rss_mb"] + facts[0], 1)
        entry["fds"] += facts[1]
        entry["n"] += 1
        out["held_deleted_mb"] = round((out["held_deleted_mb"] or 0.0) + facts[2], 3)
        session = re.search(r"(/\S+/session_\d{4}-\d\d-\d\d_[^/\s]+)", cmd)
        out["session_dir"] = out["session_dir"] or (session.group(1) if session else None)
    return out


def stray_processes(warehouse: Path, driver_pid: int) -> int:
    """Processes naming the warehouse (chunk JVMs do) that do not descend from the driver: left running."""
    needle, count = str(warehouse), 0
    for proc in psutil.process_iter(["pid", "cmdline"]):
        if proc.info["pid"] in (driver_pid, os.getpid()) or not any(needle in a for a in proc.info["cmdline"] or []):
            continue
        try:
            count += all(parent.pid != driver_pid for parent in proc.parents())
        except psutil.Error:
            continue
    return count


@dataclass
class Probe:
    """Reads the levels of one run: CPU so far, processes, disks, bronze's metadata file."""

    driver_pid: int
    warehouse: Path
    cpu_seconds: Callable[[], float]
    ray_root: Path = RAY_ROOT
    started_at: float = field(default_factory=time.time)
    session_dir: Path | None = None  # the run's Ray session, once seen (it outlives the run's processes)

    def levels(self) -> dict:
        procs = process_levels(self.driver_pid)
        total, ledger = dir_mb(self.warehouse), dir_mb(self.warehouse / "_ray_backfill")
        session = procs.pop("session_dir")
        self.session_dir = self.session_dir or (Path(session) if session else None)
        long_lived = procs["long_lived"]
        return {**procs, "cpu_s": self.cpu_seconds(), "stray_procs": stray_processes(self.warehouse, self.driver_pid),
                "warehouse_mb": total, "tables_mb": total - ledger, "logs_mb": ledger,
                "ray_tmp_mb": dir_mb(self.ray_root), **self._ray_levels(),
                "bronze_metadata_kb": newest_metadata_kb(self.warehouse / BRONZE.namespace / BRONZE.name),
                "long_lived_rss_mb": round(sum(v["rss_mb"] for v in long_lived.values()), 1) if long_lived else None,
                "long_lived_fds": sum(v["fds"] for v in long_lived.values()) if long_lived else None}

    def ray_run_mb(self) -> float:
        """MiB of the run's Ray session folder, its logs aside (they count against the log cap), and
        the native-library copies made since it started."""
        return self._ray_levels()["ray_run_mb"]

    def _ray_levels(self) -> dict:
        """The run's Ray session folder and its logs (once the session is known, each walked once),
        and `ray_run_mb`: the session less its logs, plus the native-library copies."""
        session_mb = dir_mb(self.session_dir) if self.session_dir else None
        logs_mb = dir_mb(self.session_dir / "logs") if self.session_dir else None
        return {"ray_session_mb": session_mb, "ray_logs_mb": logs_mb,
                "ray_run_mb": (session_mb or 0.0) - (logs_mb or 0.0) + self._copies_mb()}

    def _copies_mb(self) -> float:
        """MiB of the native-library copies made since the run started."""
        # copies are `/tmp/ray/<epoch ms>/` (ray_backfill/leftovers.py); other clusters' sessions are not ours
        total = 0.0
        with contextlib.suppress(OSError):
            for entry in os.scandir(self.ray_root):
                with contextlib.suppress(OSError):
                    if entry.name.isdigit() and int(entry.name) / 1000 >= self.started_at - 1:
                        total += dir_mb(Path(entry.path))
        return total


class LedgerWatch:
    """The run's ledger, read as `status` reads it: which bronze chunks have finished since the last look."""

    def __init__(self, warehouse: Path):
        from ray_backfill.ledger import RunLedger

        self.ledger = RunLedger.for_warehouse(warehouse)
        self.run_id: str | None = None
        self.seen: set[str] = set()
        self.bronze_started = False

    def poll(self) -> list:
        """The bronze tasks that succeeded since the last poll, in the order they ended."""
        if self.run_id is None:
            ids = self.ledger.run_ids()
            if not ids:
                return []
            self.run_id = ids[-1]
        try:
            record = self.ledger.load(self.run_id)
        except InputError:  # not written yet
            return []
        bronze = record.by_stage("bronze")
        self.bronze_started = self.bronze_started or any(t.attempts for t in bronze)
        new = [t for t in bronze if t.status.value == "succeeded" and t.task_id not in self.seen]
        self.seen.update(t.task_id for t in new)
        return sorted(new, key=lambda t: t.metrics.get("ended_at") or 0)

    @property
    def log_dir(self) -> Path | None:
        return Path(self.ledger.root) / self.run_id / "logs" if self.run_id else None


def count_conflicts(log_dir: Path | None, task_id: str) -> int:
    """Commit conflicts the chunk's attempt logs name (jobs/writes.py logs one line per retried commit)."""
    if log_dir is None:
        return 0
    count = 0
    for path in log_dir.glob(f"{task_id}.attempt*.log"):
        with contextlib.suppress(OSError), open(path, encoding="utf-8", errors="replace") as handle:
            count += sum(1 for line in handle if CONFLICT_LINE in line)
    return count


# --- the sampler -----------------------------------------------------------------------------------


class SoakSampler(threading.Thread):
    """Polls the run every `every_s`; one row per bronze chunk that finished, in completion order."""

    def __init__(self, probe: Probe, every_s: float = 1.0):
        super().__init__(daemon=True, name="soak-sampler")
        self.probe, self.every_s = probe, every_s
        self.watch = LedgerWatch(probe.warehouse)
        self.rows: list[dict] = []
        self.t0 = time.monotonic()
        self._base: dict | None = None  # the shared levels where the last attribution ended
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            self.poll()
            self._stop_event.wait(self.every_s)
        self.poll()  # chunks the last interval finished (the processes may be gone: levels are None)

    def stop(self) -> list[dict]:
        self._stop_event.set()
        self.join(60)
        return self.rows

    def poll(self) -> None:
        try:
            levels = self.probe.levels()
            done = self.watch.poll()
        except Exception as exc:  # a poll that fails must not end the soak: the next one tries again
            print(f"soak: a poll failed: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
            return
        if not self.watch.bronze_started or self._base is None:
            # until the first chunk starts, nothing is charged to chunks (Ray's start, prepare)
            self._base = {k: levels[k] for k in SHARED}
        if not done:
            return  # what this interval used goes to the chunks that finish next
        shares = {out: _share(levels[k], self._base[k], len(done)) for k, out in SHARED.items()}
        self._base = {k: levels[k] for k in SHARED}
        for task in done:
            self.rows.append(chunk_row(task, len(self.rows) + 1, levels, shares, self.watch.log_dir,
                                       round(time.monotonic() - self.t0, 2)))


def _share(now: float | None, before: float | None, n: int) -> float | None:
    if now is None or before is None or n == 0:
        return None
    return round((now - before) / n, 4)


def chunk_row(task, number: int, levels: dict, shares: dict, log_dir: Path | None, seen_at_s: float) -> dict:
    """One finished chunk: the ledger's figures, its share of CPU and disk, the levels when it was seen."""
    m = task.metrics
    row = {"chunk": number, "task_id": task.task_id, "day": task.start, "seen_at_s": seen_at_s,
           "started_at": m.get("started_at"), "ended_at": m.get("ended_at"), "chunk_s": task.seconds,
           "commit_s": m.get("write_seconds"), "rows": task.rows, "attempts": task.attempts,
           "retries": max(0, task.attempts - 1), "conflicts": count_conflicts(log_dir, task.task_id),
           "chunk_peak_rss_mb": task.peak_rss_mb, **shares}
    for key in ("driver_rss_mb", "driver_fds", "long_lived_rss_mb", "long_lived_fds", "tree_procs", "stray_procs",
                "held_deleted_mb",
                "warehouse_mb", "tables_mb", "logs_mb", "ray_tmp_mb", "ray_run_mb", "ray_session_mb", "ray_logs_mb",
                "bronze_metadata_kb"):
        value = levels.get(key)
        row[key] = round(value, 3) if isinstance(value, float) else value
    row["long_lived"] = levels.get("long_lived") or {}
    return row


def add_running_totals(rows: list[dict]) -> None:
    """Seconds between completions and conflicts so far, which need the rows before."""
    total, previous = 0, None
    for row in rows:
        total += row.get("conflicts") or 0
        row["conflicts_total"] = total
        ended = row.get("ended_at")
        row["gap_s"] = round(ended - previous, 3) if ended is not None and previous is not None else None
        previous = ended if ended is not None else previous


# --- one run ---------------------------------------------------------------------------------------


def cli_command(verb: str, mode: Mode, start: dt.date, end: dt.date, locations: str, warehouse: Path,
                bronze_only: bool) -> list[str]:
    """`ray-backfill plan|run` of one mode over the soak's range."""
    cmd = [sys.executable, "-m", "ray_backfill.cli", verb, "--start-date", start.isoformat(),
           "--end-date", end.isoformat(), "--chunk", "daily", "--warehouse", str(warehouse),
           "--source", "synthetic", "--source-profile", "self-hosted", "--locations", locations, *mode.flags]
    return cmd + (["--skip-silver", "--skip-gold"] if bronze_only else [])


_AMOUNT = r"\d[\d,]*(?:\.\d+)?"
_UNIT = r"(?:hours?|hrs?|h|minutes?|mins?|m|seconds?|secs?|s)\b"
_SIZE_UNITS = {"B": 2**-20, "KiB": 2**-10, "MiB": 1, "GiB": 2**10, "KB": 1e3 / 2**20, "MB": 1e6 / 2**20,
               "GB": 1e9 / 2**20}


def duration_seconds(text: str) -> float | None:
    """Seconds of the first duration in `text` (`1,234 s (21 min)`, `1h 02m`, `12 min`, `0:12:34`); None if none."""
    clock = re.search(r"\b(\d+):(\d{2}):(\d{2})\b", text)
    if clock:
        h, m, s = (int(v) for v in clock.groups())
        return float(h * 3600 + m * 60 + s)
    first = re.search(rf"(?:{_AMOUNT}\s*{_UNIT}\s*)+", text, re.I)  # `1h 02m` is one duration, `8 s ... 4 s` two
    if not first:
        return None
    units = {"h": 3600, "m": 60, "s": 1}
    parts = re.findall(rf"({_AMOUNT})\s*({_UNIT})", first.group(0), re.I)
    return float(sum(float(n.replace(",", "")) * units[u[0].lower()] for n, u in parts))


def size_mb(text: str) -> float | None:
    """MiB of the first size in `text` (`661.6 KiB`, `1.2 GiB`); None if none."""
    found = re.search(rf"({_AMOUNT})\s*(GiB|MiB|KiB|GB|MB|KB|B)\b", text)
    return float(found.group(1).replace(",", "")) * _SIZE_UNITS[found.group(2)] if found else None


def parse_estimate(plan_output: str) -> dict:
    """The plan's estimate lines, if it prints any: wall seconds (`estimate: …`) and warehouse MiB (`disk: …`)."""
    out: dict = {"line": None, "seconds": None, "disk_line": None, "disk_mb": None}
    for line in plan_output.splitlines():
        head, _, rest = line.strip().partition(":")
        if out["seconds"] is None and "estimat" in head.lower() and rest:
            seconds = duration_seconds(rest)
            if seconds is not None:
                out["line"], out["seconds"] = line.strip(), seconds
        elif out["disk_mb"] is None and head.lower() == "disk" and rest:
            out["disk_line"], out["disk_mb"] = line.strip(), size_mb(rest)
    return out


def plan_estimate(cmd: list[str], env: dict) -> dict:
    """What `ray-backfill plan` of the same run estimates, if it estimates anything."""
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    parsed = parse_estimate(done.stdout) if done.returncode == 0 else parse_estimate("")
    return {**parsed, "plan_exit": done.returncode}


@contextlib.contextmanager
def cpu_meter(name: str) -> Iterator[tuple[Callable[[], None] | None, Callable[[], float], str]]:
    """(preexec_fn, seconds so far, where from): the run's own cgroup where one can be made, else /proc/stat."""
    if CgroupCpu.available():
        with CgroupCpu(f"soak-{name}") as group:
            yield group.join, group.seconds, "cgroup (cpuacct: the run's processes only)"
        return
    yield None, machine_busy_seconds, "machine (/proc/stat: keep the machine idle)"


def _stop(proc: subprocess.Popen) -> None:
    # as Ctrl-C: the run records itself cancelled and stops its chunks; killed if it does not end
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signal.SIGINT)
    try:
        proc.wait(120)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(30)


def run_mode(mode: Mode, start: dt.date, end: dt.date, locations: str, workdir: Path, every_s: float,
             timeout_s: float, bronze_only: bool) -> dict:
    """One fresh `ray-backfill run` of a mode against a fresh warehouse, sampled; its rows and totals."""
    warehouse = workdir / f"warehouse_{mode.key}"
    shutil.rmtree(warehouse, ignore_errors=True)
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    estimate = plan_estimate(cli_command("plan", mode, start, end, locations, warehouse, bronze_only), env)
    cmd = cli_command("run", mode, start, end, locations, warehouse, bronze_only)
    log_path = workdir / f"{mode.key}.log"
    print(f"[{mode.label}] running {(end - start).days + 1} daily chunks", flush=True)
    ray_before = dir_mb(RAY_ROOT)
    with cpu_meter(mode.key) as (join, cpu_seconds, cpu_from), open(log_path, "w") as log:
        busy0, started = cpu_seconds(), time.monotonic()
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, preexec_fn=join)
        probe = Probe(proc.pid, warehouse, cpu_seconds)
        sampler = SoakSampler(probe, every_s)
        sampler.start()
        try:
            code = proc.wait(timeout=timeout_s)
        except BaseException:
            _stop(proc)
            raise
        finally:
            rows = sampler.stop()
        wall = time.monotonic() - started
        time.sleep(3)  # the last JVMs and Ray's daemons wind down: their CPU counts; one still there is left over
        cpu_total = cpu_seconds() - busy0
    add_running_totals(rows)
    output = log_path.read_text(errors="replace")
    result = {"mode": mode.key, "label": mode.label, "command": " ".join(cmd[1:]), "exit_code": code,
              "wall_s": round(wall, 1), "cpu_s": round(cpu_total, 1), "cpu_from": cpu_from, "estimate": estimate,
              "run_id": sampler.watch.run_id, "rows": rows, "report": _run_report(warehouse, sampler.watch.run_id),
              "conflicts_in_driver_log": output.count(CONFLICT_LINE), "output_tail": output[-3000:] if code else None,
              **left_behind(probe, ray_before)}
    print(f"[{mode.label}] exit {code}: {len(rows)} chunks, {wall:.0f}s wall, {cpu_total:.0f} CPU-s", flush=True)
    return result


def left_behind(probe: Probe, ray_before_mb: float) -> dict:
    """What the ended run left: warehouse size, processes naming it, its Ray disk, `/tmp/ray`'s growth."""
    return {"warehouse_mb_end": round(dir_mb(probe.warehouse), 2),
            "processes_left": stray_processes(probe.warehouse, probe.driver_pid),
            "ray_run_left_mb": round(probe.ray_run_mb(), 2),
            "ray_tmp_left_mb": round(dir_mb(RAY_ROOT) - ray_before_mb, 2)}


def _run_report(warehouse: Path, run_id: str | None) -> dict | None:
    """The run's own report.json, trimmed to its outcome and stage seconds."""
    if not run_id:
        return None
    try:
        data = json.loads((warehouse / "_ray_backfill" / "runs" / run_id / "report.json").read_text())
    except (OSError, ValueError):
        return None
    return {k: data.get(k) for k in ("outcome", "stage_seconds", "tables")}


# --- conclusions -----------------------------------------------------------------------------------


def edges(values: list[float | None], share: float = TOLERANCE,
          stat: str = "median") -> tuple[float | None, float | None]:
    """Medians (or with `stat="peak"` the highest) of the first and of the last `share` of the values
    (at least one each), Nones left out."""
    kept = [v for v in values if v is not None]
    if not kept:
        return None, None
    n = max(1, math.floor(len(kept) * share))
    of = max if stat == "peak" else statistics.median
    return of(kept[:n]), of(kept[-n:])


def judge(first: float | None, last: float | None, floor: float, tolerance: float = TOLERANCE) -> str:
    """PASS unless the last chunks' median is more than `tolerance` above the first's and by more than `floor`."""
    if first is None or last is None:
        return "n/a"
    grew = last - first
    return "FAIL" if grew > floor and grew > tolerance * abs(first) else "PASS"


def _judged(key: str, label: str, unit: str, values: list, floor: float, tolerance: float,
            stat: str = "median") -> dict:
    first, last = edges(values, stat=stat)
    change = (last - first) / abs(first) if first and last is not None else None
    return {"measure": key, "label": label, "unit": unit, "first": first, "last": last, "change": change,
            "status": judge(first, last, floor, tolerance)}


def verdict(rows: list[dict], tolerance: float = TOLERANCE) -> list[dict]:
    """Per judged measure and long-lived process: first and last 10 % medians, change, PASS / FAIL / n/a."""
    out = [_judged(m.key, m.label, m.unit, [r.get(m.key) for r in rows], m.floor, tolerance, m.stat)
           for m in MEASURES if m.floor is not None]
    # one by one too: a raylet growing by half would hide in the sum behind 900 MiB of dashboard modules
    roles = sorted({role for row in rows for role in row.get("long_lived") or {}})
    for role in roles:
        for field, what, unit, floor in (("rss_mb", "RSS", "MiB", 10.0), ("fds", "open fds", "fds", 2.0)):
            values = [((row.get("long_lived") or {}).get(role) or {}).get(field) for row in rows]
            out.append(_judged(f"{role}:{field}", f"{role}: {what}", unit, values, floor, tolerance))
    return out


def estimate_check(run: dict) -> dict:
    """The plan's estimates against the run: wall seconds of the process (within 25 % is ok), warehouse MiB."""
    est = run.get("estimate") or {}
    seconds, real = est.get("seconds"), run["wall_s"]
    disk, real_disk = est.get("disk_mb"), run.get("warehouse_mb_end")
    return {"line": est.get("line"), "seconds": seconds, "real_s": real,
            "ratio": round(real / seconds, 2) if seconds else None,
            "ok": abs(real - seconds) <= ESTIMATE_TOLERANCE * real if seconds else None,
            "disk_line": est.get("disk_line"), "disk_mb": disk, "real_disk_mb": real_disk,
            "disk_ratio": round(real_disk / disk, 2) if disk and real_disk is not None else None}


def summarize(run: dict) -> dict:
    """A mode's totals, the first and last 10 % of each measure, the verdict and the estimate check."""
    rows = run["rows"]
    stages = (run.get("report") or {}).get("stage_seconds") or {}
    last = rows[-1] if rows else {}
    return {
        "chunks": len(rows), "wall_s": run["wall_s"], "cpu_s": run["cpu_s"], "stage_seconds": stages,
        "outcome": (run.get("report") or {}).get("outcome") or f"exit {run['exit_code']}",
        "measures": {m.key: edges([r.get(m.key) for r in rows], stat=m.stat) for m in MEASURES},
        "metadata_kb_end": last.get("bronze_metadata_kb"),
        "commit_s_end": edges([r.get("commit_s") for r in rows])[1],
        "conflicts": sum(r.get("conflicts") or 0 for r in rows) + run.get("conflicts_in_driver_log", 0),
        "chunks_with_conflicts": sum(1 for r in rows if r.get("conflicts")),
        "retries": sum(r.get("retries") or 0 for r in rows),
        "estimate": estimate_check(run),
        "verdict": verdict(rows),
    }


def daily_estimates(results: dict) -> dict[str, dict]:
    """Per mode: the plan's model with daily constants fitted on this soak's first tenth of chunks
    (ray_backfill/estimate.py: derive_daily), against the whole run's wall seconds."""
    from ray_backfill import estimate

    try:
        costs = json.loads(estimate.COSTS_FILE.read_text())
        for mode, daily in estimate.derive_daily(results, costs["modes"]).items():
            costs["modes"][mode]["daily"] = daily
        checked = estimate.soak_validation(results, estimate.parse_costs(costs))
    except (OSError, ValueError, KeyError) as exc:
        print(f"no estimate with daily constants: {exc}", file=sys.stderr)
        return {}
    return {v["soak_run"]: v for v in checked}


def conclude(results: dict) -> bool:
    """Add each mode's summary; True when every Ray mode ran to the end and passed every measure."""
    passed = True
    daily = daily_estimates(results)
    for key, run in results["runs"].items():
        run["summary"] = summarize(run)
        run["summary"]["estimate"]["daily"] = daily.get(key)
        if run["mode"] != "sequential":
            failed = [v for v in run["summary"]["verdict"] if v["status"] == "FAIL"]
            passed = passed and run["exit_code"] == 0 and not failed and bool(run["rows"])
    results["passed"] = passed
    return passed


def verdict_lines(results: dict) -> list[str]:
    """One line per judged measure per mode, and each run's end."""
    lines = []
    for run in results["runs"].values():
        judged = "" if run["mode"] != "sequential" else "  (baseline: shown, not judged)"
        if run["exit_code"] != 0:
            lines.append(f"FAIL {run['label']}: the run ended with exit code {run['exit_code']}{judged}")
        for v in run["summary"]["verdict"]:
            first, last, change = v["first"], v["last"], v["change"]
            shown = "no values" if first is None else (
                f"first 10 % {first:,.3g} → last 10 % {last:,.3g} {v['unit']}"
                + (f" ({change:+.0%})" if change is not None else ""))
            lines.append(f"{v['status']:4} {run['label']:24} {v['label']:42} {shown}{judged}")
    return lines


def _fmt(value: float | None, digits: int = 2) -> str:
    return "–" if value is None else f"{value:,.{digits}f}"


def overview_rows(results: dict) -> list[list[str]]:
    """Per mode: chunks, wall, stage seconds, estimate, metadata and commit time at the end, conflicts."""
    out = []
    for run in results["runs"].values():
        s = run["summary"]
        st, est = s["stage_seconds"], s["estimate"]
        estimate = "no estimate line in `plan`" if est["seconds"] is None else (
            f"wall {est['seconds']:,.0f} s against {est['real_s']:,.0f} s: {'ok' if est['ok'] else 'off'} "
            f"(×{est['ratio']:.2f})")
        fitted = est.get("daily")
        if fitted:
            within = abs(fitted["estimated_s"] - fitted["measured_s"]) <= ESTIMATE_TOLERANCE * fitted["measured_s"]
            estimate += (f"; with daily constants from its first 10 %: {fitted['estimated_s']:,.0f} s, "
                         f"{'ok' if within else 'off'} (×{fitted['measured_s'] / fitted['estimated_s']:.2f})")
        if est.get("disk_mb") is not None and est.get("real_disk_mb") is not None:
            estimate += (f"; warehouse {est['disk_mb']:,.1f} MiB against {est['real_disk_mb']:,.1f} MiB "
                         f"(×{est['disk_ratio']:.2f})")
        out.append([run["label"], s["outcome"], str(s["chunks"]), _fmt(run["wall_s"], 0), _fmt(st.get("bronze"), 0),
                    _fmt((st.get("silver") or 0) + (st.get("gold") or 0), 0) if st else "–", _fmt(run["cpu_s"], 0),
                    estimate, _fmt(s["metadata_kb_end"], 0), _fmt(s["commit_s_end"]),
                    f"{s['conflicts']} in {s['chunks_with_conflicts']} chunks", str(s["retries"]),
                    f"{run.get('processes_left', '–')} processes; {_fmt(run.get('ray_run_left_mb'), 1)} MiB of its "
                    f"Ray session and copies; /tmp/ray {_fmt(run.get('ray_tmp_left_mb'), 1)} MiB"])
    return out


OVERVIEW_HEADER = ["mode", "outcome", "chunks", "wall s", "bronze s", "silver+gold s", "CPU-s (run)",
                   "plan's estimate (real ÷ estimate)", "bronze metadata.json at end KiB",
                   "write+commit s (last 10 %)",
                   "commit conflicts", "retries", "left after the run"]


def measure_rows(results: dict) -> list[list[str]]:
    """Per measure, per mode: first 10 % → last 10 % (medians), with the verdict where judged."""
    out = []
    for measure in MEASURES:
        if measure.key == "conflicts_total":
            continue
        cells = [f"{measure.label} ({measure.unit})"]
        for run in results["runs"].values():
            first, last = run["summary"]["measures"][measure.key]
            status = next((v["status"] for v in run["summary"]["verdict"] if v["measure"] == measure.key), "")
            tag = "" if not status or run["mode"] == "sequential" else f" **{status}**"
            cells.append("–" if first is None else f"{first:,.3g} → {last:,.3g}{tag}")
        out.append(cells)
    return out


def notes(results: dict) -> list[str]:
    """How each figure was taken, for the reader of the report."""
    cpu_from = {run["cpu_from"] for run in results["runs"].values()}
    return [
        f"CPU-s per chunk: the run's CPU from {', '.join(sorted(cpu_from))} between two polls that saw chunks "
        "finish, split evenly among those chunks (with 2 in flight, chunks overlap); the run's CPU before its "
        "first chunk started (Ray's start, prepare) is charged to no chunk.",
        "Chunk seconds, write+commit seconds (the bronze write phase: read the month partition, write it, "
        "commit), rows, attempts and chunk peak RSS are the ledger's; retries = attempts − 1.",
        "Levels (RSS, open fds, disk, metadata size, processes) are those of the poll that saw the chunk finish; "
        "disk added per chunk is shared like the CPU. Long-lived processes: those under the driver that live "
        "as long as the run (Ray's gcs_server, raylet, dashboard and its module processes, dashboard and "
        "runtime-env agents, monitors; the baseline's one Spark JVM). Stray processes: processes whose command "
        "line names the run's warehouse (chunk JVMs do) but that do not descend from the driver; after the "
        "run, the same count 3 s after it ended, and how much `/tmp/ray` grew from before it started.",
        f"Commit conflicts: lines `{CONFLICT_LINE}` (jobs/writes.py, a commit Iceberg refused and the step "
        "retried) in each chunk's attempt logs, and in the driver's output for the baseline. Retries inside "
        "one Iceberg commit (a catalog CommitFailedException Iceberg retries itself) are not observable: the "
        "sessions log Spark at ERROR.",
        f"Verdict: median of the last 10 % of chunks against the first 10 %; more than {TOLERANCE:.0%} higher "
        "fails unless the growth is below the measure's floor (0.1 s; 10 MiB of RSS; 2 fds; 0.01 MiB of disk a "
        "chunk; 1 MiB of deleted files held open; half a process); a fall passes. Each long-lived process's RSS "
        "and open fds are judged on their own too. Ray's temp root is machine-wide: another Ray on the machine "
        "counts in it.",
    ]


def markdown(results: dict) -> str:
    m, span = results["machine"], results["span"]
    lines = [f"# Soak: {span['days']} daily chunks ({span['start']} .. {span['end']}), {span['locations']}", "",
             f"Machine: {m['cpus']} CPUs, {m['memory_gib']} GiB, {m['java']}, Python {m['python']} "
             f"(load {m['load_1min_at_start']} at start). Command: `{results['command']}`. Started "
             f"{results['started_at']}. Synthetic source, `self-hosted` profile, every run a fresh process and "
             f"warehouse. Soak verdict (Ray modes): **{'PASS' if results.get('passed') else 'FAIL'}**.", "",
             analysis.markdown_table(OVERVIEW_HEADER, overview_rows(results)), "",
             "Per chunk, first 10 % → last 10 % of chunks (medians):", "",
             analysis.markdown_table(["measure", *(r["label"] for r in results["runs"].values())],
                                     measure_rows(results)), ""]
    lines += [f"- {n}" for n in notes(results)]
    lines += ["", "Verdict:", "", "```", *verdict_lines(results), "```"]
    return "\n".join(lines)


# --- files -----------------------------------------------------------------------------------------


def write_plots(results: dict, out: Path) -> list[Path]:
    """One PNG per measure, chunk number on x, one line per mode; and the long-lived processes one by one."""
    from benchmarks import plots

    runs = list(results["runs"].values())
    longest = max((len(r["rows"]) for r in runs), default=0)
    smooth = max(1, longest // 25)  # a rolling median where the raw values are too many to read
    paths = []
    for measure in MEASURES:
        lines = {r["label"]: _series(r["rows"], lambda row, key=measure.key: row.get(key)) for r in runs}
        noisy = measure.floor is not None or measure.key in ("gap_s", "ray_run_added_mb")
        paths.append(plots.per_chunk(lines, measure.label, measure.unit, out / f"{measure.key}.png",
                                     smooth=smooth if noisy else 1, peak=measure.stat == "peak"))
    by_process = {}
    for run in runs:
        roles = sorted({role for row in run["rows"] for role in row.get("long_lived", {})})
        for role in roles:
            x, y = _series(run["rows"],
                           lambda row, role=role: (row.get("long_lived", {}).get(role) or {}).get("rss_mb"))
            # growth, not size: a 30 MiB raylet and 900 MiB of dashboard modules on one scale hide each other
            by_process[f"{run['label']}: {role} (from {y[0]:,.0f} MiB)"] = (x, [v - y[0] for v in y])
    paths.append(plots.per_chunk(by_process, "long-lived processes, each: RSS growth since the first chunk",
                                 "MiB more than at the first chunk", out / "long_lived_by_process.png"))
    return paths


def _series(rows: list[dict], value: Callable[[dict], float | None]) -> tuple[list[int], list[float]]:
    pairs = [(row["chunk"], value(row)) for row in rows]
    kept = [(x, y) for x, y in pairs if y is not None]
    return [x for x, _ in kept], [y for _, y in kept]


def html_report(results: dict, pngs: list[Path]) -> str:
    """The report as one page: the two tables, the notes, the verdict, every plot inline."""
    def table(header: list[str], rows: list[list[str]]) -> str:
        head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
        body = "".join("<tr>" + "".join(f"<td>{html.escape(c).replace('**', '')}</td>" for c in row) + "</tr>"
                       for row in rows)
        return f"<table><tr>{head}</tr>{body}</table>"

    span = results["span"]
    images = "".join(
        f'<figure><img alt="{html.escape(p.stem)}" src="data:image/png;base64,'
        f'{base64.b64encode(p.read_bytes()).decode()}"></figure>' for p in pngs)
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>ray-backfill soak</title><style>"
        "body{font-family:sans-serif;margin:2em;max-width:1100px}table{border-collapse:collapse;margin:1em 0}"
        "td,th{border:1px solid #ccc;padding:3px 6px;font-size:13px;text-align:right}td:first-child{text-align:left}"
        "pre{background:#f6f6f6;padding:1em;font-size:12px}img{max-width:100%}</style></head><body>"
        f"<h1>Soak: {span['days']} daily chunks ({span['start']} .. {span['end']}), "
        f"{html.escape(span['locations'])}</h1>"
        f"<p>Command: <code>{html.escape(results['command'])}</code>; started {results['started_at']}; "
        f"{results['machine']['cpus']} CPUs, {results['machine']['memory_gib']} GiB. "
        f"Verdict (Ray modes): <b>{'PASS' if results.get('passed') else 'FAIL'}</b>.</p>"
        + table(OVERVIEW_HEADER, overview_rows(results))
        + "<p>Per chunk, first 10 % → last 10 % of chunks (medians):</p>"
        + table(["measure", *(r["label"] for r in results["runs"].values())], measure_rows(results))
        + "<ul>" + "".join(f"<li>{html.escape(n)}</li>" for n in notes(results)) + "</ul>"
        + f"<pre>{html.escape(chr(10).join(verdict_lines(results)))}</pre>" + images + "</body></html>")


def write(results: dict, out: Path) -> list[Path]:
    """soak.json, soak.md, the PNGs and soak.html."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "soak.json").write_text(json.dumps(results, indent=1))
    (out / "soak.md").write_text(markdown(results) + "\n")
    pngs = write_plots(results, out)
    (out / "soak.html").write_text(html_report(results, pngs))
    return [out / "soak.json", out / "soak.md", *pngs, out / "soak.html"]


# --- the command -----------------------------------------------------------------------------------


def _span(args: argparse.Namespace) -> tuple[dt.date, dt.date]:
    start = dt.date.fromisoformat(args.start)
    days = QUICK_DAYS if args.quick and not args.days else args.days
    if days:
        return start, start + dt.timedelta(days=days - 1)
    return start, dt.date.fromisoformat(args.end)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--modes", default="raydp,local,sequential", help="comma-separated: raydp, local, sequential")
    parser.add_argument("--start", default=START.isoformat(), help=f"first day ({START})")
    parser.add_argument("--end", default=END.isoformat(),
                        help=f"last day, inclusive ({END}: {(END - START).days + 1} days)")
    parser.add_argument("--days", type=int, default=None, help="this many daily chunks from --start (instead of --end)")
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_DAYS} days, a short try")
    parser.add_argument("--locations", default=LOCATIONS, help=f"location keys ({LOCATIONS})")
    parser.add_argument("--parallelism", type=int, default=2, help="chunks in flight in the Ray modes (2)")
    parser.add_argument("--every", type=float, default=1.0, help="seconds between polls (1)")
    parser.add_argument("--bronze-only", action="store_true", help="skip silver and gold (they run once, after)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--timeout", type=float, default=4 * 3600, help="seconds per run before it is stopped")
    parser.add_argument("--share-cpu", action="store_true",
                        help="do not take CPU priority over other work on the machine (benchmarks/cpu.py)")
    parser.add_argument("--resume", action="store_true",
                        help="keep the modes an interrupted soak saved in <out>/soak.partial.json, run the rest")
    parser.add_argument("--from-json", type=Path, default=None,
                        help="redo the report and plots from an earlier soak.json, running nothing")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.from_json:
        results = json.loads(args.from_json.read_text())
        return _finish(results, args.out)
    chosen = [m.strip() for m in args.modes.split(",") if m.strip()]
    known = modes(args.parallelism)
    for key in chosen:
        if key not in known:
            parser.error(f"--modes: {key!r} is not one of {', '.join(known)}")
    start, end = _span(args)
    if end < start:
        parser.error("--end is before --start")
    priority = False if args.share_cpu else take_the_cpu_first()
    results = _start_results(args, argv, start, end, priority)
    partial = args.out / "soak.partial.json"
    if args.resume and partial.exists():
        results = json.loads(partial.read_text())
        # the modes still to run cover the same days and locations as those kept
        span = results["span"]
        start, end = dt.date.fromisoformat(span["start"]), dt.date.fromisoformat(span["end"])
        args.locations = span["locations"]
        print(f"resuming: kept {', '.join(results['runs']) or 'nothing'} from {partial}; "
              f"{span['start']} to {span['end']}, {span['locations']}", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    # `kill` as Ctrl-C: the run in progress is stopped and the soak's temp folder removed on the way out
    signal.signal(signal.SIGTERM, _interrupted)
    with tempfile.TemporaryDirectory(prefix="rbf-soak-") as tmp:
        for key in chosen:
            if key in results["runs"]:
                continue
            results["runs"][key] = run_mode(known[key], start, end, args.locations, Path(tmp), args.every,
                                            args.timeout, args.bronze_only)
            partial.write_text(json.dumps(results))  # an interrupted soak keeps its finished modes
    code = _finish(results, args.out)
    partial.unlink(missing_ok=True)
    return code


def _interrupted(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def _start_results(args: argparse.Namespace, argv: list[str] | None, start: dt.date, end: dt.date,
                   priority: bool) -> dict:
    return {"machine": report.machine(), "command": "python -m benchmarks.soak " + " ".join(argv or sys.argv[1:]),
            "started_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "cpu_priority": "cgroup shares 262144" if priority else "none",
            "span": {"start": start.isoformat(), "end": end.isoformat(), "days": (end - start).days + 1,
                     "locations": args.locations, "parallelism": args.parallelism, "bronze_only": args.bronze_only,
                     "every_s": args.every},
            "runs": {}}


def _finish(results: dict, out: Path) -> int:
    passed = conclude(results)
    written = write(results, out)
    print(markdown(results))
    print("wrote " + ", ".join(str(p) for p in written[:2]) + f" and {len(written) - 2} more in {out}")
    print("VERDICT: " + ("PASS" if passed else "FAIL") + " (Ray modes; the baseline is shown, not judged)")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
