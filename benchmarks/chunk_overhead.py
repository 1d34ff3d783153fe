"""Per-chunk fixed cost: a fresh process starts a session, runs a first tiny job, stops, exits.

`python -m benchmarks.chunk_overhead [--modes local,raydp] [--repeat 3]` measures each Spark
mode with and without the driver's class-data-sharing archive (ray_backfill/cds.py), each
repetition in a fresh process, the way every chunk runs, and splits the time into phases:
interpreter + imports, Ray connect (RayDP only), session up, first job (a tiny Iceberg commit
and read), session stop, process exit. The machine should be idle. Results go to
benchmarks/results/chunk_overhead.json and a markdown table on stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ray_backfill.jvm import QUICK_START_JVM  # stdlib only: the child's start-up stays honest

RESULTS = Path(__file__).resolve().parent / "results"
PHASES = ("imports", "ray_connect", "session_up", "first_job", "session_stop", "exit")


def child(mode: str, cds: bool, warehouse: str, t0: float, java_options: str = "") -> dict:
    """One chunk's life in this fresh process; wall-clock marks relative to the parent's t0."""
    marks = {"start": time.time() - t0}

    from jobs.config import CatalogConfig, Settings, SparkConfig
    from ray_backfill.sessions import spark_session

    marks["imports"] = time.time() - t0
    if mode == "raydp":
        import uuid

        import ray

        ray.init(address=os.environ["RAY_ADDRESS"], namespace=f"overhead-{uuid.uuid4().hex[:8]}",
                 include_dashboard=False, log_to_driver=False)
    marks["ray_connect"] = time.time() - t0
    settings = Settings(catalog=CatalogConfig(name="oh", warehouse=warehouse),
                        spark=SparkConfig(mode=mode, class_data_sharing=cds, driver_java_options=java_options))
    with spark_session(settings, f"overhead-{mode}") as spark:
        marks["session_up"] = time.time() - t0
        spark.sql("CREATE NAMESPACE IF NOT EXISTS oh.probe")
        table = "oh.probe.overhead"
        spark.sql(f"CREATE TABLE IF NOT EXISTS {table} (id BIGINT) USING iceberg")
        spark.range(100).writeTo(table).overwritePartitions()
        assert spark.table(table).count() == 100
        marks["first_job"] = time.time() - t0
    marks["session_stop"] = time.time() - t0
    if mode == "raydp":
        ray.shutdown()
    return marks


def measure(mode: str, cds: bool, warehouse: str, env: dict, java_options: str = "") -> dict:
    t0 = time.time()
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.chunk_overhead", "--child", mode, "--cds", str(int(cds)),
         "--warehouse", warehouse, "--t0", repr(t0), f"--java-options={java_options}"],
        capture_output=True, text=True, env=env, timeout=600, cwd=Path(__file__).resolve().parent.parent,
    )
    total = time.time() - t0
    if done.returncode != 0:
        raise RuntimeError(f"{mode} child failed: {done.stderr[-2000:]}")
    marks = json.loads(done.stdout.strip().splitlines()[-1])
    marks["exit"] = total
    phases, previous = {}, 0.0
    for name in PHASES:
        phases[name] = round(marks[name] - previous, 2)
        previous = marks[name]
    return {"mode": mode, "cds": cds, "total_s": round(total, 2), "phases": phases}


# (label, class-data sharing, extra driver JVM options): what each Spark mode is measured with.
# Local: the driver's dynamic archive; RayDP: one static archive for its four JVMs (ray_backfill/cds.py).
VARIANTS = {
    "local": [("plain", False, ""), ("cds", True, ""), ("cds + quick-start", True, QUICK_START_JVM)],
    "raydp": [("plain", False, ""), ("quick-start", False, QUICK_START_JVM), ("cds", True, ""),
              ("cds + quick-start", True, QUICK_START_JVM)],
}


def summarize(runs: list[dict]) -> list[dict]:
    """Median per (mode, variant) of the total and of each phase; an archive-writing run apart."""
    rows = []
    for mode in sorted({r["mode"] for r in runs}):
        for variant in dict.fromkeys(r["variant"] for r in runs if r["mode"] == mode):
            mine = [r for r in runs if r["mode"] == mode and r["variant"] == variant and not r.get("warmup")]
            if not mine:
                continue
            rows.append({
                "mode": mode, "variant": variant, "n": len(mine),
                "total_s": round(statistics.median(r["total_s"] for r in mine), 2),
                "phases": {p: round(statistics.median(r["phases"][p] for r in mine), 2) for p in PHASES},
            })
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--modes", default="local,raydp")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--out", type=Path, default=RESULTS / "chunk_overhead.json")
    parser.add_argument("--child", choices=("local", "raydp"), help=argparse.SUPPRESS)
    parser.add_argument("--cds", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--warehouse", help=argparse.SUPPRESS)
    parser.add_argument("--t0", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--java-options", default="", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, bool(args.cds), args.warehouse, args.t0, args.java_options)))
        return 0

    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    import ray

    if "raydp" in modes:
        os.environ.pop("RAY_ADDRESS", None)
        ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
    # after ray.init: it sets RAY_AUTH_MODE for the token-authenticated cluster it started
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    if ray.is_initialized():
        env["RAY_ADDRESS"] = ray.get_runtime_context().gcs_address
    runs = []
    try:
        with tempfile.TemporaryDirectory(prefix="overhead-") as tmp:
            for mode in modes:
                for variant, cds, java_options in VARIANTS[mode]:
                    # the first run with a new archive key writes the archive: a warm-up, reported apart
                    for i in range(args.repeat + int(cds)):
                        run = measure(mode, cds, str(Path(tmp) / f"wh-{mode}"), env, java_options)
                        run["variant"] = variant
                        run["warmup"] = cds and i == 0
                        runs.append(run)
                        print(f"{mode:6} {variant:18} run {i + 1}: {run['total_s']:.1f}s {run['phases']}", flush=True)
    finally:
        if ray.is_initialized():
            ray.shutdown()
    from benchmarks import (
        report,  # matplotlib comes with it: not in the measured child processes
    )

    rows = summarize(runs)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"machine": report.machine(), "runs": runs, "summary": rows}, indent=1))
    print(report.overhead_markdown(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
