"""The benchmark: the same backfill with the sequential baseline and the Ray executor.

    python -m benchmarks.run                      # RW-22: self-hosted and free, Ray at 1 and 2 + local at 2
    python -m benchmarks.run --workload small --profiles self-hosted --parallelism 2

Each profile gets a fake Open-Meteo server on 127.0.0.1 with that profile's real limits
(latency, requests in flight, weighted calls per minute/hour/day, answered with the real 429s)
and the same limits in the run's shared limiter. Every run is a fresh `ray-backfill run` process
against a fresh warehouse; the server's quota windows are reset between runs, so each run starts
with a full quota, as on a new day. While a run goes, its memory is sampled: the driver's
process tree, every chunk process tree, and the machine. At the end one Spark session checksums
every table of every run; the benchmark fails (exit 1) unless all runs hold identical tables.

Writes under benchmarks/results/: results.json, results.md, wall_time.png, memory.png,
timeline.png (and keeps chunk_overhead.json from benchmarks/chunk_overhead.py in results.md).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

from benchmarks import report
from jobs.config import DATA_DIR
from jobs.dates import DateRange
from jobs.inputs import load_locations
from jobs.limits import PROFILES
from jobs.sources import HOURLY_VARIABLES
from jobs.sources.fake_server import FakeOpenMeteoServer
from jobs.sources.openmeteo import request_weight
from ray_backfill.plan import plan_chunks

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"


@dataclass(frozen=True)
class Workload:
    name: str
    start: dt.date
    end: dt.date
    locations: tuple[str, ...] | None  # None: every location in data/locations.jsonl


WORKLOADS = {
    # the old tool's backfill: 22 monthly chunks, 24 locations, all 17 variables
    "rw22": Workload("RW-22", dt.date(2024, 1, 1), dt.date(2025, 10, 16), None),
    "small": Workload("small", dt.date(2024, 1, 1), dt.date(2024, 2, 29), ("hanoi", "hcmc")),
    # the test suite's smoke run of this script
    "tiny": Workload("tiny", dt.date(2024, 1, 1), dt.date(2024, 1, 31), ("hanoi",)),
}
# Locations per request: on the free tier one request in flight at 0.4 s cannot reach 600 calls/min
# with one location per request (≈ 3.8 calls each), so both executors batch 4 there.
BATCH_SIZE = {"free": 4, "self-hosted": 1, "unlimited": 1}


@dataclass(frozen=True)
class Config:
    executor: str
    parallelism: int
    spark_mode: str

    @property
    def label(self) -> str:
        if self.executor == "sequential":
            return f"sequential ({self.spark_mode})"
        return f"ray p={self.parallelism} ({self.spark_mode})"

    @property
    def slug(self) -> str:
        return re.sub(r"[^a-z0-9]+", "_", self.label.lower()).strip("_")


class MemorySampler(threading.Thread):
    """Samples RSS every `every_s`: the CLI and its own JVMs, each chunk's process tree, the machine."""

    def __init__(self, pid: int, every_s: float = 0.5):
        super().__init__(daemon=True, name="memory-sampler")
        self.pid, self.every_s = pid, every_s
        self.t0 = time.monotonic()
        # version 2: the driver is the CLI and its own JVMs (version 1 also counted every JVM under its local Ray)
        self.data: dict = {"sampler": 2, "t": [], "driver_mb": [], "machine_used_mb": [], "chunks": {}}
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            self.sample()
            self._stop_event.wait(self.every_s)

    def stop(self) -> dict:
        self._stop_event.set()
        self.join(10)
        return self.data

    def sample(self) -> None:
        t = round(time.monotonic() - self.t0, 2)
        # the CLI and the JVMs it started itself (the baseline's session), not those under its local Ray
        driver = _rss_mb([self.pid]) + sum(_rss_mb([c.pid]) for c in _direct_children(self.pid) if _name(c) == "java")
        vm = psutil.virtual_memory()
        self.data["t"].append(t)
        self.data["driver_mb"].append(round(driver, 1))
        self.data["machine_used_mb"].append(round((vm.total - vm.available) / 2**20, 1))
        # only this run's chunk processes: the local Ray cluster the CLI starts is its own descendant
        for proc in _children(self.pid):
            try:
                cmd = " ".join(proc.cmdline())
            except psutil.Error:
                continue
            if "ray_backfill.worker" not in cmd:
                continue
            found = re.search(r"rbf-(.+?)-[a-z0-9_]{8}/task\.json", cmd)
            name = found.group(1) if found else str(proc.pid)
            tree = [proc.pid] + [c.pid for c in _children(proc.pid)]
            series = self.data["chunks"].setdefault(name, {"t": [], "rss_mb": []})
            series["t"].append(t)
            series["rss_mb"].append(round(_rss_mb(tree), 1))


def _children(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return []


def _direct_children(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=False)
    except psutil.Error:
        return []


def _name(proc: psutil.Process) -> str:
    try:
        return proc.name()
    except psutil.Error:
        return ""


def _rss_mb(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            total += psutil.Process(pid).memory_info().rss
        except psutil.Error:
            pass
    return total / 2**20


def run_one(workload: Workload, profile: str, config: Config, server: FakeOpenMeteoServer, workdir: Path,
            timeout_s: float) -> dict:
    """One `ray-backfill run` in a fresh process against a fresh warehouse; its report and counters."""
    server.reset()
    warehouse = workdir / f"{profile.replace('-', '_')}_{config.slug}"
    catalog = f"b_{profile.replace('-', '_')}_{config.slug}"
    cmd = [sys.executable, "-m", "ray_backfill.cli", "run",
           "--start-date", workload.start.isoformat(), "--end-date", workload.end.isoformat(),
           "--warehouse", str(warehouse), "--catalog-name", catalog,
           "--executor", config.executor, "--parallelism", str(config.parallelism), "--spark-mode", config.spark_mode,
           "--source", "open-meteo", "--api-url", server.url, "--source-profile", profile,
           "--batch-size", str(BATCH_SIZE.get(profile, 1))]
    if workload.locations:
        cmd += ["--locations", ",".join(workload.locations)]
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    print(f"[{profile}] {config.label}: running", flush=True)
    started = time.monotonic()
    log_path = workdir / f"{profile}_{config.slug}.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, text=True)
        sampler = MemorySampler(proc.pid)
        sampler.start()
        try:
            code = proc.wait(timeout=timeout_s)
        except BaseException:
            proc.terminate()
            proc.wait(60)
            raise
        finally:
            memory = sampler.stop()
    wall = time.monotonic() - started
    output = log_path.read_text()
    if code != 0:
        raise RuntimeError(f"{config.label} on {profile} failed (exit {code}); last lines:\n{output[-3000:]}")
    run_id = next(line.split()[1].rstrip(":") for line in output.splitlines() if line.startswith("run "))
    run_dir = warehouse / "_ray_backfill" / "runs" / run_id
    stats = server.stats
    result = {
        "label": config.label, "executor": config.executor, "parallelism": config.parallelism,
        "spark_mode": config.spark_mode, "profile": profile, "warehouse": str(warehouse), "catalog": catalog,
        "wall_s": round(wall, 1), "report": json.loads((run_dir / "report.json").read_text()),
        "server": {"requests": stats.requests, "weighted_calls": stats.weighted_calls,
                   "by_status": {str(k): v for k, v in stats.by_status.items()}, "max_in_flight": stats.max_in_flight},
        "memory": memory, "command": " ".join(cmd[1:]),
    }
    print(f"[{profile}] {config.label}: {result['report']['stage_seconds'].get('total', wall):.1f}s, "
          f"{stats.requests} requests, 429s {stats.by_status.get(429, 0)}", flush=True)
    return result


def checksum_all(runs: list[dict]) -> dict[str, dict[str, str]]:
    """Order-independent checksum of every table of every run, in one local Spark session."""
    from jobs.config import CatalogConfig, Settings, SparkConfig
    from jobs.inspect import table_checksum
    from jobs.tables import ALL_TABLES
    from ray_backfill.sessions import catalog_conf, spark_session

    first = runs[0]
    settings = Settings(catalog=CatalogConfig(name=first["catalog"], warehouse=first["warehouse"]),
                        spark=SparkConfig(mode="local", executor_cores=2, driver_memory="2g"))
    out = {}
    with spark_session(settings, "bench-checksums") as spark:
        for run in runs:
            catalog = CatalogConfig(name=run["catalog"], warehouse=run["warehouse"])
            for key, value in catalog_conf(catalog).items():
                spark.conf.set(key, value)
            out[f"{run['profile']}/{run['label']}"] = {
                spec.name: table_checksum(spark.table(spec.qualified(catalog))) for spec in ALL_TABLES}
    return out


def request_weights(workload: Workload, profile: str) -> list[list[float]]:
    """Per chunk, the weight of each request the workload makes."""
    n_locations = len(workload.locations) if workload.locations else len(load_locations(DATA_DIR / "locations.jsonl"))
    batch = BATCH_SIZE.get(profile, 1)
    sizes = [min(batch, n_locations - i) for i in range(0, n_locations, batch)]
    return [[request_weight(n, len(HOURLY_VARIABLES), c.days) for n in sizes]
            for c in plan_chunks(DateRange(workload.start, workload.end), "monthly")]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Sequential baseline vs the Ray executor, against the fake source.")
    parser.add_argument("--workload", choices=sorted(WORKLOADS), default="rw22")
    parser.add_argument("--profiles", default="self-hosted,free", help="source profiles, comma-separated")
    parser.add_argument("--parallelism", default="1,2", help="Ray executor parallelism levels, comma-separated")
    parser.add_argument("--spark-modes", default="raydp",
                        help="Spark modes for the Ray executor runs, comma-separated (raydp, local)")
    parser.add_argument("--local-also-at", type=int, default=2,
                        help="add one Ray run in local Spark mode at this parallelism (0: none)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--timeout", type=float, default=3600, help="seconds per run before it is stopped")
    parser.add_argument("--from-json", type=Path, default=None,
                        help="redo the report and plots from a results.json of an earlier benchmark, running nothing")
    args = parser.parse_args(argv)
    if args.from_json:
        results = json.loads(args.from_json.read_text())
        workload = next(w for w in WORKLOADS.values() if w.name == results["workload"]["name"])
        return _finish(results, workload, list(results["profiles"]), args.out)

    workload = WORKLOADS[args.workload]
    profiles = [p.strip() for p in args.profiles.split(",") if p.strip()]
    for p in profiles:
        if p not in PROFILES:
            parser.error(f"--profiles: {p!r} is not one of {', '.join(PROFILES)}")
    levels = [int(v) for v in args.parallelism.split(",") if v.strip()]
    modes = [m.strip() for m in args.spark_modes.split(",") if m.strip()]
    locations = load_locations(DATA_DIR / "locations.jsonl")
    args.out.mkdir(parents=True, exist_ok=True)
    results: dict = {"machine": report.machine(), "command": "python -m benchmarks.run " + " ".join(argv or sys.argv[1:]),
                     "started_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                     "workload": {"name": workload.name, "start": workload.start.isoformat(),
                                  "end": workload.end.isoformat(),
                                  "locations": len(workload.locations or locations), "variables": len(HOURLY_VARIABLES)},
                     "profiles": {}}
    with tempfile.TemporaryDirectory(prefix="rbf-bench-") as tmp:
        workdir = Path(tmp)
        for profile in profiles:
            limits = PROFILES[profile]
            configs = [Config("sequential", 1, "local")]
            configs += [Config("ray", p, mode) for mode in modes for p in levels]
            if args.local_also_at and "local" not in modes:
                configs.append(Config("ray", args.local_also_at, "local"))
            with FakeOpenMeteoServer(locations=locations, latency_s=limits.latency_s,
                                     max_in_flight=limits.max_in_flight, calls_per_minute=limits.per_minute,
                                     calls_per_hour=limits.per_hour, calls_per_day=limits.per_day) as server:
                runs = [run_one(workload, profile, c, server, workdir, args.timeout) for c in configs]
            results["profiles"][profile] = {"limits": limits.to_json(), "batch_size": BATCH_SIZE.get(profile, 1),
                                            "runs": runs}
        all_runs = [r for block in results["profiles"].values() for r in block["runs"]]
        sums = checksum_all(all_runs)
    distinct = {json.dumps(v, sort_keys=True) for v in sums.values()}
    results["checksums"] = sums
    results["checksums_identical"] = len(distinct) == 1
    (args.out / "results.json").write_text(json.dumps(results, indent=1))  # the raw runs, before any analysis
    return _finish(results, workload, profiles, args.out)


def _finish(results: dict, workload: Workload, profiles: list[str], out: Path) -> int:
    report.conclude(results, workload_weights={p: request_weights(workload, p) for p in profiles})
    written = report.write(results, out)
    print(report.markdown(results))
    print("wrote " + ", ".join(str(p) for p in written))
    write_costs_from(out, results["command"])
    if not results["checksums_identical"]:
        print("error: the runs' tables differ (see checksums in results.json)", file=sys.stderr)
        return 1
    return 0


def write_costs_from(out: Path, command: str) -> None:
    """The constants of `ray-backfill plan`'s estimate (ray_backfill/costs.json), from the results in
    the repository's results folder (a run with --out elsewhere leaves them alone)."""
    if out.resolve() != RESULTS.resolve():
        return
    from ray_backfill.estimate import COSTS_FILE, write_costs

    try:
        written = write_costs(out, command.strip())
    except ValueError as exc:  # the measurements stay; the estimate keeps its earlier constants
        print(f"warning: {COSTS_FILE} not rewritten: {exc}", file=sys.stderr)
        return
    print(f"wrote {COSTS_FILE}: the plan's estimate constants (worst error {written['worst_error'] or 0:.0%} "
          f"over the {len(written['validation'])} measured runs)")


if __name__ == "__main__":
    sys.exit(main())
