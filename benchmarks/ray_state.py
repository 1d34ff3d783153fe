"""What Ray keeps per finished actor and per finished driver job, with and without the run's bounds.

`python -m benchmarks.ray_state [--actors 1000] [--jobs 60]` starts a local Ray cluster twice, once
with Ray's defaults and once with the bounds a run gives a cluster it starts
(ray_backfill/ray_bounds.py), and in each does what a long backfill does to Ray, only faster:
creates a named actor per "chunk" (as the run's supervisor per attempt is), calls it, kills it;
then connects and disconnects short-lived drivers (as each chunk's process and its RayDP gateway
join the cluster as a Ray job). It samples the RSS of the GCS, the raylet and this driver along
the way. A growth that stops at a cap is bounded; one that goes on with the actors or jobs done is
not. The machine should be idle. Results go to benchmarks/results/ray_state.json and a table on
stdout.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def _rss_mb(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/status", encoding="utf-8") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        return None
    return None


def _daemons(root_pid: int) -> dict[str, int]:
    """The pids of the GCS and the raylet this process's cluster runs (its descendants)."""
    import psutil

    found = {}
    for proc in psutil.Process(root_pid).children(recursive=True):
        try:
            name = proc.name()
        except psutil.Error:
            continue
        if name in ("gcs_server", "raylet"):
            found[name] = proc.pid
    return found


def child(bounds: bool, actors: int, jobs: int, every: int) -> dict:
    """One cluster's life in this process: the samples, each {phase, done, gcs_server, raylet, driver}."""
    import ray

    from ray_backfill.ray_bounds import DAEMON_ENV, SYSTEM_CONFIG

    if bounds:
        os.environ.update(DAEMON_ENV)
    ray.init(_system_config=dict(SYSTEM_CONFIG) if bounds else {}, include_dashboard=False,
             logging_level=logging.ERROR, num_cpus=2, namespace="ray-state")
    daemons = _daemons(os.getpid())
    samples = []

    def sample(phase: str, done: int) -> None:
        time.sleep(0.5)  # let the GCS take in the last deaths
        samples.append({"phase": phase, "done": done, "driver": _rss_mb(os.getpid()),
                        **{name: _rss_mb(pid) for name, pid in daemons.items()}})

    @ray.remote(num_cpus=0.1)
    class Supervisor:
        def __init__(self, payload: dict):
            self.payload = payload

        def run(self) -> int:
            return len(self.payload["settings"])

    payload = {"settings": "x" * 4000, "task": "bronze-2024-01-01_2024-01-01"}  # a chunk's payload's size
    sample("actors", 0)
    for i in range(1, actors + 1):
        actor = Supervisor.options(name=f"bronze-{i}").remote(payload)
        ray.get(actor.run.remote())
        ray.kill(actor)
        del actor
        if i % every == 0:
            sample("actors", i)
    address = ray.get_runtime_context().gcs_address
    code = f"import logging, ray; ray.init(address={address!r}, logging_level=logging.ERROR); ray.shutdown()"
    for j in range(1, jobs + 1):
        subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, timeout=120)
        if j % max(1, every // 10) == 0:
            sample("jobs", j)
    ray.shutdown()
    return {"bounds": bounds, "samples": samples}


def growth(samples: list[dict], phase: str, key: str) -> tuple[float | None, float | None]:
    """MiB grown over the phase's first half and over its second half: bounded growth slows to nothing."""
    series = [s for s in samples if s["phase"] == phase and s.get(key) is not None]
    if len(series) < 3:
        return None, None
    mid = series[len(series) // 2]
    return round(mid[key] - series[0][key], 1), round(series[-1][key] - mid[key], 1)


def table(results: list[dict]) -> str:
    lines = ["| cluster | phase | process | MiB, first half | MiB, second half |", "|---|---|---|---:|---:|"]
    for result in results:
        label = "run's bounds" if result["bounds"] else "Ray's defaults"
        for phase in ("actors", "jobs"):
            for key in ("gcs_server", "raylet", "driver"):
                first, second = growth(result["samples"], phase, key)
                lines.append(f"| {label} | {phase} | {key} | {first} | {second} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--actors", type=int, default=1000, help="actors created, called and killed (1000)")
    parser.add_argument("--jobs", type=int, default=60, help="short-lived drivers connected (60)")
    parser.add_argument("--every", type=int, default=100, help="actors between samples (100)")
    parser.add_argument("--out", type=Path, default=RESULTS / "ray_state.json")
    parser.add_argument("--child", choices=("bounds", "defaults"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child == "bounds", args.actors, args.jobs, args.every)))
        return 0
    results = []
    for which in ("defaults", "bounds"):  # each in a fresh process: one cluster, one driver
        env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
        done = subprocess.run([sys.executable, "-m", "benchmarks.ray_state", "--child", which,
                               "--actors", str(args.actors), "--jobs", str(args.jobs), "--every", str(args.every)],
                              capture_output=True, text=True, env=env, timeout=7200)
        if done.returncode != 0:
            print(f"the {which} cluster failed: {done.stderr.strip().splitlines()[-1:]}", file=sys.stderr)
            return 1
        results.append(json.loads(done.stdout.strip().splitlines()[-1]))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"actors": args.actors, "jobs": args.jobs, "runs": results}, indent=1))
    print(table(results))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
