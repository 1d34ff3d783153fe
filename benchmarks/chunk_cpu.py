"""CPU-seconds per bronze chunk, by process: what one more chunk costs in each mode, and who pays it.

`python -m benchmarks.chunk_cpu [--modes raydp,local,sequential] [--repeat 3]` runs a bronze-only
backfill (24 locations, built-in source, parallelism 1) of 1 and of 3 monthly chunks per mode,
each a fresh `ray-backfill run` with its own local Ray, while `benchmarks.cpu.CpuSampler` reads
every process's CPU time. The marginal cost of a chunk is (3-chunk run − 1-chunk run) ÷ 2 of the
medians over the repetitions, per process role and machine-wide; wall seconds likewise. The
machine should be idle. Results: benchmarks/results/chunk_cpu.json and chunk_cpu.md.
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

from benchmarks.cpu import ROLES, CpuSampler

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
RANGES = {1: ("2024-01-01", "2024-01-31"), 3: ("2024-01-01", "2024-03-31")}
MODES = {  # label -> run flags
    "raydp": ["--executor", "ray", "--spark-mode", "raydp"],
    "local": ["--executor", "ray", "--spark-mode", "local"],
    "sequential": ["--executor", "sequential", "--spark-mode", "local"],
}


def run_once(mode: str, chunks: int, workdir: Path, extra: list[str]) -> dict:
    """One bronze-only run under the sampler; its wall seconds and CPU by role."""
    start, end = RANGES[chunks]
    cmd = [sys.executable, "-m", "ray_backfill.cli", "run", "--start-date", start, "--end-date", end,
           "--skip-silver", "--skip-gold", "--parallelism", "1", "--warehouse", str(workdir / f"{mode}-{chunks}"),
           *MODES[mode], *extra]
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    workdir.mkdir(parents=True, exist_ok=True)
    with open(workdir / f"{mode}-{chunks}.log", "w") as log:
        started = time.monotonic()
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            sampler = CpuSampler(driver_pid=proc.pid)
            sampler.start()
            code = proc.wait(timeout=1800)
        except BaseException:
            proc.terminate()  # the CLI stops its chunks and its local Ray on SIGTERM
            proc.wait(120)
            raise
        time.sleep(2)  # Ray's daemons and the last JVMs wind down: their CPU counts too
        sampler.stop()
        wall = time.monotonic() - started
    if code != 0:
        raise RuntimeError(f"{mode} with {chunks} chunks failed: see {workdir / f'{mode}-{chunks}.log'}")
    return {"mode": mode, "chunks": chunks, "wall_s": round(wall, 1), "roles": sampler.by_role()}


def marginal(ones: list[dict], threes: list[dict]) -> dict:
    """Per role: (3-chunk − 1-chunk) ÷ 2 of the medians over repetitions, the cost of one more chunk."""
    def median(runs: list[dict], role: str) -> float:
        return statistics.median(r["roles"][role]["cpu_s"] for r in runs)

    roles = {role: round((median(threes, role) - median(ones, role)) / 2, 2) for role in threes[0]["roles"]}
    wall = (statistics.median(r["wall_s"] for r in threes) - statistics.median(r["wall_s"] for r in ones)) / 2
    return {"wall_s": round(wall, 1), "cpu_s": roles, "repeat": len(ones)}


def markdown(results: dict) -> str:
    modes = list(results["marginal"])
    repeat = next(iter(results["marginal"].values()))["repeat"]
    lines = ["Marginal cost of one more bronze chunk (24 locations, monthly, parallelism 1); CPU-seconds by "
             f"process role: (3-chunk run − 1-chunk run) ÷ 2, medians of {repeat} runs each "
             "(`python -m benchmarks.chunk_cpu`).", "",
             "| role | " + " | ".join(modes) + " |", "|---|" + "---:|" * len(modes)]
    for role in (*ROLES, "all sampled processes", "machine (/proc/stat)"):
        values = [results["marginal"][m]["cpu_s"].get(role, 0.0) for m in modes]
        if any(abs(v) >= 0.05 for v in values):
            lines.append(f"| {role} | " + " | ".join(f"{v:.1f}" for v in values) + " |")
    lines.append("| **wall seconds** | " + " | ".join(f"{results['marginal'][m]['wall_s']:.1f}" for m in modes) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--modes", default="raydp,local,sequential")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--extra", default="", help="more `run` flags, e.g. '--locations hanoi'")
    args = parser.parse_args(argv)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    runs = []
    with tempfile.TemporaryDirectory(prefix="chunk-cpu-") as tmp:
        for i in range(args.repeat):
            for mode in modes:
                for chunks in (1, 3):
                    run = run_once(mode, chunks, Path(tmp) / str(i), args.extra.split())
                    runs.append(run)
                    print(f"{mode:10} {chunks} chunk(s), run {i + 1}: {run['wall_s']:.1f}s wall, "
                          f"{run['roles']['machine (/proc/stat)']['cpu_s']:.1f} CPU-s machine-wide", flush=True)
    results = {"runs": runs, "marginal": {}}
    for mode in modes:
        ones, threes = ([r for r in runs if r["mode"] == mode and r["chunks"] == n] for n in (1, 3))
        results["marginal"][mode] = marginal(ones, threes)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "chunk_cpu.json").write_text(json.dumps(results, indent=1))
    (args.out / "chunk_cpu.md").write_text(markdown(results) + "\n")
    print(markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
