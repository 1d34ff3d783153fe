"""The benchmark's arithmetic (lower bound, source use, N-node projection) and one real smoke run."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from benchmarks import analysis
from jobs.sources.limits import SourceLimits
from tests.helpers import ROOT


def chunk(start=10.0, write=5.0, stop=1.0, weights=(1.0,), concurrency=8):
    return analysis.ChunkModel(start, write, stop, tuple(weights), concurrency)


def test_projection_packs_chunks_into_waves_of_the_cluster_slots():
    unlimited = SourceLimits()
    chunks = [chunk() for _ in range(8)]
    # 8 chunks of 16 s on 2 slots: 4 waves; on 2 nodes 2 waves; on 8 nodes one wave and idle slots
    assert analysis.project(chunks, unlimited, 1, 2, after_s=30, latency_s=0.4) == pytest.approx(4 * 16 + 30)
    assert analysis.project(chunks, unlimited, 2, 2, after_s=30, latency_s=0.4) == pytest.approx(2 * 16 + 30)
    assert analysis.project(chunks, unlimited, 8, 2, after_s=30, latency_s=0.4) == pytest.approx(16 + 30)


def test_projection_stops_gaining_where_the_source_limit_binds():
    # each chunk asks 10 requests of 60 calls: 600 calls, the whole minute of the free tier
    free = SourceLimits(per_minute=600, max_in_flight=1)
    chunks = [chunk(start=5, write=2, stop=0.5, weights=[60.0] * 10, concurrency=1) for _ in range(4)]
    one = analysis.project(chunks, free, 1, 2, after_s=0, latency_s=0.4)
    many = analysis.project(chunks, free, 16, 2, after_s=0, latency_s=0.4)
    # four minutes of quota: the 4th chunk's calls can start only after 3 full windows
    assert many == pytest.approx(one) and many >= 3 * 60


def _run(total, tasks, stages, server=None, limiter=None, executor="ray"):
    return {"executor": executor, "label": executor, "parallelism": 2,
            "report": {"stage_seconds": {"total": total, **stages}, "tasks": tasks,
                       "source": {"limiter": limiter} if limiter else None},
            "server": server or {"requests": 0, "weighted_calls": 0, "by_status": {}, "max_in_flight": 0}}


def _task(seconds, write, fetch=0.0, session=None):
    metrics = {"fetch_seconds": fetch, "stop_seconds": 0.5}
    if write is not None:
        metrics["write_seconds"] = write
    return {"stage": "bronze", "status": "succeeded", "seconds": seconds, "session_seconds": session,
            "metrics": metrics}


def test_lower_bound_is_source_time_plus_cpu_work_per_core_plus_silver_and_gold():
    baseline = _run(100, [_task(12, 4), _task(12, 6)], {"silver": 10, "gold": 20}, executor="sequential")
    limits = SourceLimits(max_in_flight=2, latency_s=0.5)
    bound = analysis.lower_bound(baseline, [[1.0] * 4, [1.0] * 4], limits, cores=2)
    assert bound == {"source_s": 2.0, "cpu_work_s": 10.0, "cores": 2, "cpu_work": "measured",
                     "silver_gold_s": 30, "total_s": 37.0}


def test_without_recorded_writes_the_cpu_work_is_the_chunk_time_minus_its_one_at_a_time_fetch():
    tasks = [_task(12, None), _task(14, None)]
    baseline = _run(100, tasks, {"silver": 10, "gold": 20}, executor="sequential")
    # 4 requests one at a time at 0.5 s: 2 s of fetch in each chunk
    bound = analysis.lower_bound(baseline, [[1.0] * 4, [1.0] * 4], SourceLimits(max_in_flight=2, latency_s=0.5),
                                 cores=2)
    assert bound["cpu_work"] == "derived" and bound["cpu_work_s"] == pytest.approx(10 + 12)


def test_source_use_compares_the_calls_with_what_the_limit_let_through():
    run = _run(300, [], {}, server={"requests": 100, "weighted_calls": 1080.0, "by_status": {"200": 100},
                                    "max_in_flight": 1},
               limiter={"first_grant": 1000.0, "last_grant": 1120.0})
    use = analysis.source_use(run, SourceLimits(per_minute=600, max_in_flight=1))
    # 1080 calls from the first to the last request, 120 s apart: 540 a minute, 90 % of 600
    assert use["share_of_limit"] == 0.9 and use["calls_per_minute"] == 540.0 and use["responses_429"] == 0


@pytest.mark.spark
@pytest.mark.ray
@pytest.mark.integration
@pytest.mark.slow
def test_the_benchmark_command_runs_both_executors_and_writes_its_report(tmp_path):
    # its own process, as a user runs it: its checksum session must not meet this process's shared one
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.run", "--workload", "tiny", "--profiles", "self-hosted",
         "--parallelism", "1", "--spark-modes", "local", "--out", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=900,
        env={k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"},
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["checksums_identical"] is True
    runs = results["profiles"]["self-hosted"]["runs"]
    assert [r["label"] for r in runs] == ["sequential (local)", "ray p=1 (local)"]
    assert all(r["source_use"]["responses_429"] == 0 and r["server"]["requests"] == 1 for r in runs)
    assert results["profiles"]["self-hosted"]["lower_bound"]["total_s"] > 0
    assert set(results["profiles"]["self-hosted"]["projection"]["seconds"]) == {"1", "2", "4", "8", "16"}
    # the chunk's own process was sampled, and the driver's
    ray_mem = runs[1]["memory"]
    assert "bronze-2024-01" in ray_mem["chunks"] and max(ray_mem["driver_mb"]) > 50
    markdown = (tmp_path / "results.md").read_text()
    assert "Lower bound" in markdown and "ray p=1 (local)" in markdown
    for name in ("wall_time.png", "memory.png", "timeline.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# --- the per-process CPU sampler (benchmarks/cpu.py) ------------------------------------------------


def test_the_cpu_sampler_charges_a_busy_process_to_its_role_and_agrees_with_the_machine():
    from benchmarks.cpu import CpuSampler

    sampler = CpuSampler(every_s=0.05)
    sampler.start()
    # a stand-in for a chunk process: its command line names the worker module, and it burns ~1 CPU-s
    busy = subprocess.run([sys.executable, "-c", "import time\nt = time.process_time()\n"
                           "while time.process_time() - t < 1.0: pass", "ray_backfill.worker"], timeout=60)
    sampler.stop()
    assert busy.returncode == 0
    roles = sampler.by_role()
    assert 0.8 <= roles["chunk process (python)"]["cpu_s"] <= 1.5
    assert roles["chunk process (python)"]["processes"] == 1
    # what the sampler saw is part of what the machine was busy with
    assert roles["all sampled processes"]["cpu_s"] <= roles["machine (/proc/stat)"]["cpu_s"] + 0.5


@pytest.mark.parametrize("cmd, name, parent_cmd, expected", [
    ("python -m ray_backfill.worker /tmp/rbf-x/task.json", "python", "ray::ChunkSupervisor", "chunk process (python)"),
    ("/usr/bin/java -cp x org.apache.spark.deploy.SparkSubmit pyspark-shell", "java",
     "python -m ray_backfill.worker /tmp/t.json", "Spark driver JVM"),
    ("java -cp x org.apache.spark.deploy.raydp.AppMasterEntryPoint", "java", "ray::RayDPSparkMaster",
     "RayDP gateway JVM"),
    ("java -cp x org.apache.spark.deploy.raydp.AppMasterEntryPoint", "java", "python -m ray_backfill.worker /t.json",
     "RayDP gateway JVM"),  # RayDP's master in the chunk's own process (ray_backfill/sessions.py)
    ("java -Xms768M -Xmx768M -cp x io.ray.runtime.runner.worker.DefaultWorker", "java", "raylet",
     "Ray Java worker: Spark executor"),
    ("java -cp x io.ray.runtime.runner.worker.DefaultWorker", "java", "raylet", "Ray Java worker: RayDP app master"),
    ("ray::RayDPSparkMaster.start_up", "python", "raylet", "actor: RayDPSparkMaster"),
    ("/x/raylet --raylet_socket_name=/tmp/ray/s", "raylet", "", "Ray daemons"),
])
def test_processes_are_told_apart_by_their_command_lines(cmd, name, parent_cmd, expected):
    from benchmarks.cpu import Seen, classify

    parent = Seen(1, 0, parent_cmd, "", 0, 0, 0, 0, False)
    assert classify(Seen(2, 1, cmd, name, 0, 1, 0, 1, False), {1: parent}, driver_pid=None) == expected


def test_the_sweep_fit_recovers_fixed_per_chunk_and_per_row_costs_and_the_crossover():
    from benchmarks import sweep

    def runs(fixed, per_chunk, per_10k, mode):
        shapes = [(3, 52_000), (6, 104_000), (12, 209_000), (22, 377_000), (94, 377_000), (6, 416_000)]
        return [{"mode": mode, "chunks": c, "rows": r, "wall_s": fixed + per_chunk * c + per_10k * r / 1e4,
                 "cpu_s": 2 * (fixed + per_chunk * c + per_10k * r / 1e4)} for c, r in shapes]

    results = {"runs": runs(20, 2.0, 1.0, "sequential") + runs(40, 6.0, 0.5, "ray local p=2")
               + runs(60, 12.0, 1.5, "ray raydp p=2")}
    sweep.conclude(results)
    wall = results["fits"]["ray local p=2"]["wall"]
    assert (wall["fixed_s"], wall["per_chunk_s"], wall["per_10k_rows_s"]) == (40.0, 6.0, 0.5)
    assert results["fits"]["sequential"]["cpu"]["per_chunk_s"] == 4.0
    # local pays 4 s more per chunk and saves 0.5 s per 10k rows: even above 80k rows per chunk
    assert results["crossover_rows_per_chunk"]["ray local p=2"] == pytest.approx(80_000)
    assert results["crossover_rows_per_chunk"]["ray raydp p=2"] is None  # dearer per chunk and per row
    assert "never beats the baseline" in sweep.markdown({**results, "runs": [], "started_at": "t", "command": "c"})


def test_the_sweep_locations_are_distinct_and_load(tmp_path):
    from benchmarks import sweep
    from jobs.inputs import load_locations

    locations = load_locations(sweep.locations_file(96, tmp_path))
    assert len(locations) == 96 and len({(loc.latitude, loc.longitude) for loc in locations}) == 96
