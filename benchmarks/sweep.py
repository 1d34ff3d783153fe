"""How cost grows with the work: wall and CPU seconds of each mode as chunks and locations grow.

    python -m benchmarks.sweep                       # the full grid (about an hour on 2 cores)
    python -m benchmarks.sweep --quick               # 3, 6, 12 monthly chunks and 96 locations (about 25 min)

Points (fake Open-Meteo server at the `self-hosted` profile, all 17 variables): 3, 6, 12 and 22
monthly chunks (2024-01-01 on; 22 is RW-22) at 24 locations; RW-22 in weekly chunks; 6 monthly
chunks at 96 and 240 locations (the 24 real ones and copies of them a few km off). Modes: the
sequential baseline (one warm local session), Ray with a local session per chunk and Ray with a
RayDP session per chunk, both at parallelism 2. Each run is a fresh `ray-backfill run`; its CPU
is the CPU time of the run's process and all it starts, from a cgroup of its own (cpuacct; where
that is not writable, the machine's busy time from /proc/stat over the run: keep the machine idle).

Per mode, a least-squares fit of `seconds = fixed + per_chunk × chunks + per_10k_rows × rows/10,000`,
for wall and CPU seconds; from it the chunk size (rows per chunk) above which a Ray mode beats the
baseline. Results: benchmarks/results/sweep.{json,md,png}.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from benchmarks import report
from benchmarks.cpu import CgroupCpu, machine_busy_seconds, take_the_cpu_first
from jobs.config import DATA_DIR
from jobs.inputs import load_locations
from jobs.limits import PROFILES
from jobs.sources.fake_server import FakeOpenMeteoServer

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"
PROFILE = "self-hosted"
MODES = {  # label -> run flags
    "sequential": ["--executor", "sequential", "--spark-mode", "local"],
    "ray local p=2": ["--executor", "ray", "--spark-mode", "local", "--parallelism", "2"],
    "ray raydp p=2": ["--executor", "ray", "--spark-mode", "raydp", "--parallelism", "2"],
}
RW22_END = dt.date(2025, 10, 16)


@dataclass(frozen=True)
class Point:
    label: str
    end: dt.date
    chunk: str
    locations: int
    series: str  # "chunks" or "locations": which sweep the point belongs to

    start = dt.date(2024, 1, 1)


def points(quick: bool) -> list[Point]:
    months = {3: dt.date(2024, 3, 31), 6: dt.date(2024, 6, 30), 12: dt.date(2024, 12, 31), 22: RW22_END}
    out = [Point(f"{n} monthly, 24 locations", end, "monthly", 24, "chunks") for n, end in months.items()
           if not (quick and n == 22)]
    if not quick:
        out.append(Point("RW-22 weekly, 24 locations", RW22_END, "weekly", 24, "chunks"))
    for n in (96,) if quick else (96, 240):
        out.append(Point(f"6 monthly, {n} locations", months[6], "monthly", n, "locations"))
    return out


def locations_file(n: int, folder: Path) -> Path:
    """`n` locations: the 24 real ones, then copies of them shifted a few km (distinct keys and cells)."""
    base = [json.loads(line) for line in (DATA_DIR / "locations.jsonl").read_text().splitlines() if line.strip()]
    rows = []
    for i in range(n):
        loc = dict(base[i % len(base)])
        copy = i // len(base)
        if copy:
            loc["location_key"] = f"{loc['location_key']}_{copy}"
            loc["location_name"] = f"{loc['location_name']} {copy}"
            loc["latitude"] = round(loc["latitude"] + 0.05 * copy, 4)
            loc["longitude"] = round(loc["longitude"] + 0.05 * copy, 4)
        rows.append(json.dumps(loc))
    path = folder / f"locations-{n}.jsonl"
    path.write_text("\n".join(rows) + "\n")
    return path


def run_one(point: Point, mode: str, server: FakeOpenMeteoServer, folder: Path, timeout_s: float) -> dict:
    server.reset()
    slug = f"{point.chunk}_{point.end:%Y%m}_{point.locations}_{mode.replace(' ', '_').replace('=', '')}"
    warehouse = folder / slug
    cmd = [sys.executable, "-m", "ray_backfill.cli", "run", "--start-date", point.start.isoformat(),
           "--end-date", point.end.isoformat(), "--chunk", point.chunk, "--warehouse", str(warehouse),
           "--source", "open-meteo", "--api-url", server.url, "--source-profile", PROFILE,
           "--locations-file", str(locations_file(point.locations, folder)), *MODES[mode]]
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    with contextlib.ExitStack() as stack:
        group = stack.enter_context(CgroupCpu(slug)) if CgroupCpu.available() else None
        busy, started = machine_busy_seconds(), time.monotonic()
        with open(folder / f"{slug}.log", "w") as log:
            code = subprocess.run(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, timeout=timeout_s,
                                  preexec_fn=group.join if group else None).returncode
        wall = time.monotonic() - started
        time.sleep(2)  # the last JVMs and Ray's daemons wind down: their CPU counts too
        cpu = group.seconds() if group else machine_busy_seconds() - busy
    if code != 0:
        raise RuntimeError(f"{point.label}, {mode} failed: see {folder / f'{slug}.log'}")
    runs_dir = warehouse / "_ray_backfill" / "runs"
    run_report = json.loads(next(runs_dir.glob("*/report.json")).read_text())
    bronze = [t for t in run_report["tasks"] if t["stage"] == "bronze"]
    return {"point": dataclasses.asdict(point) | {"start": point.start.isoformat(), "end": point.end.isoformat()},
            "mode": mode, "chunks": len(bronze), "rows": sum(t["rows"] for t in bronze),
            "wall_s": round(wall, 1), "cpu_s": round(cpu, 1),
            "cpu_from": "cgroup" if CgroupCpu.available() else "machine", "command": " ".join(cmd[3:])}


def fit(runs: list[dict], key: str) -> dict:
    """Least squares of `key` on [1, chunks, rows / 10,000]: fixed, per chunk, per 10k rows."""
    import numpy as np

    x = np.array([[1.0, r["chunks"], r["rows"] / 1e4] for r in runs])
    y = np.array([r[key] for r in runs])
    coef, *_ = np.linalg.lstsq(x, y, rcond=None)
    predicted = x @ coef
    worst = float(np.max(np.abs(predicted - y) / y))
    return {"fixed_s": round(float(coef[0]), 2), "per_chunk_s": round(float(coef[1]), 2),
            "per_10k_rows_s": round(float(coef[2]), 2), "worst_error": round(worst, 3)}


def crossover(ray: dict, baseline: dict) -> float | None:
    """Rows per chunk above which a mode's per-chunk wall cost is below the baseline's; None if never."""
    gain_per_row = baseline["per_10k_rows_s"] - ray["per_10k_rows_s"]
    extra_per_chunk = ray["per_chunk_s"] - baseline["per_chunk_s"]
    if extra_per_chunk <= 0:
        return 0.0
    if gain_per_row <= 0:
        return None
    return extra_per_chunk / gain_per_row * 1e4


def conclude(results: dict) -> None:
    results["fits"] = {}
    for mode in MODES:
        runs = [r for r in results["runs"] if r["mode"] == mode]
        if len(runs) >= 3:
            results["fits"][mode] = {"wall": fit(runs, "wall_s"), "cpu": fit(runs, "cpu_s")}
    base = results["fits"].get("sequential")
    results["crossover_rows_per_chunk"] = {
        mode: crossover(f["wall"], base["wall"])
        for mode, f in results["fits"].items() if base and mode != "sequential"}


def markdown(results: dict) -> str:
    lines = [f"Scaling sweep ({results['started_at']}, `{results['command']}`): fake Open-Meteo server at the "
             f"`{PROFILE}` profile, all variables; CPU = the run's process tree (cgroup cpuacct) or, where marked "
             "machine, the machine's busy time over the run.", "",
             "| point | mode | chunks | bronze rows | wall s | CPU-s |", "|---|---|---:|---:|---:|---:|"]
    for r in results["runs"]:
        lines.append(f"| {r['point']['label']} | {r['mode']} | {r['chunks']} | {r['rows']:,} | {r['wall_s']:.1f} | "
                     f"{r['cpu_s']:.1f} |")
    lines += ["", "Fit per mode, `seconds = fixed + per chunk × chunks + per 10k rows × rows / 10,000` "
              "(least squares over the points; worst = largest relative error of the fit):", "",
              "| mode | wall: fixed | per chunk | per 10k rows | worst "
              "| CPU: fixed | per chunk | per 10k rows | worst |",
              "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for mode, f in results["fits"].items():
        w, c = f["wall"], f["cpu"]
        lines.append(f"| {mode} | {w['fixed_s']:.1f} | {w['per_chunk_s']:.2f} | {w['per_10k_rows_s']:.2f} | "
                     f"{w['worst_error']:.0%} | {c['fixed_s']:.1f} | {c['per_chunk_s']:.2f} | "
                     f"{c['per_10k_rows_s']:.2f} | {c['worst_error']:.0%} |")
    lines.append("")
    for mode, rows in results["crossover_rows_per_chunk"].items():
        if rows is None:
            lines.append(f"- {mode}: never beats the baseline per chunk on this machine (its cost per row is "
                         "not lower).")
        else:
            monthly = rows / (30 * 24)
            lines.append(f"- {mode}: beats the baseline per chunk above about {rows:,.0f} rows per chunk "
                         f"(a monthly chunk of about {monthly:,.0f} locations).")
    return "\n".join(lines)


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for ax, key, title in ((axes[0], "wall_s", "wall seconds"), (axes[1], "cpu_s", "CPU-seconds")):
        for mode in MODES:
            for series, marker in (("chunks", "o"), ("locations", "s")):
                runs = sorted((r for r in results["runs"] if r["mode"] == mode and r["point"]["series"] == series),
                              key=lambda r: r["rows"])
                if runs:
                    ax.plot([r["rows"] for r in runs], [r[key] for r in runs], marker=marker,
                            label=f"{mode}, {'more chunks' if series == 'chunks' else 'more locations'}")
        ax.set_xlabel("bronze rows")
        ax.set_ylabel(title)
        ax.set_title(title)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="leave out RW-22 (monthly and weekly) and 240 locations")
    parser.add_argument("--modes", default=",".join(MODES), help="comma-separated: " + ", ".join(MODES))
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--timeout", type=float, default=3600, help="seconds per run before it fails")
    parser.add_argument("--resume", action="store_true",
                        help="keep the runs an interrupted sweep saved in <out>/sweep.partial.json, run the rest")
    args = parser.parse_args(argv)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    for mode in modes:
        if mode not in MODES:
            parser.error(f"--modes: {mode!r} is not one of {', '.join(MODES)}")
    limits = PROFILES[PROFILE]
    first = take_the_cpu_first()
    results: dict = {"machine": report.machine(), "cpu_priority": "cgroup shares 262144" if first else "none",
                     "command": "python -m benchmarks.sweep " + " ".join(argv or sys.argv[1:]),
                     "started_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "runs": []}
    partial = args.out / "sweep.partial.json"
    if args.resume and partial.exists():
        results = json.loads(partial.read_text())
        print(f"resuming: {len(results['runs'])} runs kept from {partial}", flush=True)
    done = {(r["point"]["label"], r["mode"]) for r in results["runs"]}
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="rbf-sweep-") as tmp:
        folder = Path(tmp)
        every = load_locations(locations_file(240, folder))
        with FakeOpenMeteoServer(locations=every, latency_s=limits.latency_s, max_in_flight=limits.max_in_flight,
                                 calls_per_minute=limits.per_minute, calls_per_hour=limits.per_hour,
                                 calls_per_day=limits.per_day) as server:
            for point in points(args.quick):
                for mode in modes:
                    if (point.label, mode) in done:
                        continue
                    run = run_one(point, mode, server, folder, args.timeout)
                    results["runs"].append(run)
                    partial.write_text(json.dumps(results, indent=1))  # an interrupted sweep keeps its runs
                    print(f"{point.label:28} {mode:14} {run['chunks']:3} chunks {run['rows']:>9,} rows "
                          f"{run['wall_s']:7.1f}s wall {run['cpu_s']:7.1f} CPU-s", flush=True)
    rows_by_point: dict[str, set[int]] = {}
    for r in results["runs"]:
        rows_by_point.setdefault(r["point"]["label"], set()).add(r["rows"])
    results["rows_identical"] = all(len(v) == 1 for v in rows_by_point.values())
    conclude(results)
    (args.out / "sweep.json").write_text(json.dumps(results, indent=1))
    (args.out / "sweep.md").write_text(markdown(results) + "\n")
    plot(results, args.out / "sweep.png")
    partial.unlink(missing_ok=True)
    print(markdown(results))
    from benchmarks.run import write_costs_from

    write_costs_from(args.out, results["command"])  # its per-row fits: the plan's estimate constants
    if not results["rows_identical"]:
        print("error: the modes wrote different bronze row counts at one point (see sweep.json)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
