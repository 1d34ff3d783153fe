"""The benchmark's arithmetic (lower bound, source use, N-node projection) and one real smoke run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import analysis
from jobs.limits import SourceLimits
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


@pytest.mark.process
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
    ("python -m ray_backfill.worker /tmp/rbf-x/task.json", "python", "ray::SlotSupervisor", "chunk process (python)"),
    ("/usr/bin/java -cp x org.apache.spark.deploy.SparkSubmit pyspark-shell", "java",
     "python -m ray_backfill.worker /tmp/t.json", "Spark driver JVM"),
    ("java -cp x org.apache.spark.deploy.raydp.AppMasterEntryPoint", "java", "ray::RayDPSparkMaster",
     "RayDP gateway JVM"),
    ("java -cp x org.apache.spark.deploy.raydp.AppMasterEntryPoint", "java", "python -m ray_backfill.worker /t.json",
     "RayDP gateway JVM"),  # RayDP's master in the chunk's own process (ray_backfill/sessions.py)
    ("java -cp x org.apache.spark.deploy.raydp.AppMasterEntryPoint", "java", "ray::SlotSupervisor",
     "RayDP gateway JVM"),  # the slot's master (ray_backfill/slot_master.py)
    ("ray::SlotSupervisor.run", "python", "raylet", "actor: SlotSupervisor"),
    ("java -Xms768M -Xmx768M -cp x io.ray.runtime.runner.worker.DefaultWorker", "java", "raylet",
     "Ray Java worker: Spark executor"),
    ("java -cp x io.ray.runtime.runner.worker.DefaultWorker", "java", "raylet", "Ray Java worker: RayDP app master"),
    ("java -Xmx256m -cp x io.ray.runtime.runner.worker.DefaultWorker", "java", "raylet",
     "Ray Java worker: RayDP app master"),  # a slot's master: its heap capped, no -Xms
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


# --- the soak (benchmarks/soak.py) ------------------------------------------------------------------


def _soak_rows(n=100, **series):
    rows = [{"chunk": i + 1} for i in range(n)]
    for key, value in series.items():
        for i, row in enumerate(rows):
            row[key] = value(i)
    return rows


def test_the_soak_verdict_compares_the_last_tenth_of_chunks_with_the_first():
    from benchmarks import soak

    rows = _soak_rows(
        chunk_s=lambda i: 5.0 + (0.3 if i % 2 else -0.3),  # noisy but flat
        cpu_s=lambda i: 1.0 + i / 100,  # grows by half: 1.05 -> 1.945 (medians of 10 chunks)
        driver_rss_mb=lambda i: 200.0 - i,  # falls: not an accumulation
        driver_fds=lambda i: 20 + (i > 50),  # one more fd: below the floor of 2
        # a native-library copy (40 MiB) there at some polls and not at others: flat at its peaks
        ray_run_mb=lambda i: 42.0 + (40.0 if i % 3 == 0 else 0.0) + (i >= 95) * 0.5,
        ray_logs_mb=lambda i: 1.0 + i,  # shown, not judged: logs count against the log cap
        tables_added_mb=lambda i: 0.0 if i < 90 else 0.05,  # from nothing to 50 KiB a chunk
        commit_s=lambda i: None if i < 50 else 2.0,  # measured only for the later half: medians of what there is
    )
    got = {v["measure"]: v for v in soak.verdict(rows)}
    assert got["chunk_s"]["status"] == "PASS" and got["chunk_s"]["first"] == pytest.approx(5.0)
    assert got["cpu_s"]["status"] == "FAIL" and got["cpu_s"]["last"] == pytest.approx(1.945)
    assert got["driver_rss_mb"]["status"] == "PASS" and got["driver_rss_mb"]["change"] < -0.1
    assert got["driver_fds"]["status"] == "PASS"
    assert got["ray_run_mb"]["status"] == "PASS" and got["ray_run_mb"]["first"] == pytest.approx(82.0)
    assert got["ray_run_mb"]["last"] == pytest.approx(82.5)
    assert "ray_run_added_mb" not in got and "ray_logs_mb" not in got
    assert got["tables_added_mb"]["status"] == "FAIL" and got["tables_added_mb"]["change"] is None
    assert got["commit_s"]["status"] == "PASS"
    assert got["long_lived_rss_mb"]["status"] == "n/a"  # no values at all
    assert "gap_s" not in got  # shown, not judged
    # one chunk: its own first and last tenth
    assert soak.edges([3.0]) == (3.0, 3.0) and soak.judge(3.0, 3.4, floor=0.1) == "FAIL"
    # a level that grows at its peaks fails even when its median stays put
    growing = [40.0 if i % 3 else 80.0 + i for i in range(100)]
    assert soak.edges(growing)[0] == soak.edges(growing)[1] == 40.0
    assert soak.judge(*soak.edges(growing, stat="peak"), floor=10.0) == "FAIL"


def test_the_soak_charges_what_the_run_used_between_completions_to_the_chunks_that_finished():
    from types import SimpleNamespace

    from benchmarks import soak

    # (started, CPU-s so far, chunks that finished) at each poll; before the first chunk nothing is charged
    polls = [(False, 10.0, []), (True, 14.0, []), (True, 20.0, ["a"]), (True, 22.0, []), (True, 30.0, ["b", "c"])]
    levels = iter([{"cpu_s": cpu, "tables_mb": cpu / 10, "logs_mb": 0.0, "ray_tmp_mb": 0.0, "ray_run_mb": None,
                    "driver_rss_mb": 99.0}
                   for _, cpu, _ in polls])
    finished = iter(polls)

    def watch_poll():
        started, _, done = next(finished)
        sampler.watch.bronze_started = started
        return [SimpleNamespace(task_id=t, start="2024-01-01", seconds=1.0, rows=24, attempts=1, peak_rss_mb=None,
                                metrics={"ended_at": 100.0 + i, "write_seconds": 0.5}) for i, t in enumerate(done)]

    sampler = soak.SoakSampler(SimpleNamespace(warehouse=Path("/nonexistent"), levels=lambda: next(levels)))
    sampler.watch = SimpleNamespace(poll=watch_poll, bronze_started=False, log_dir=None, run_id=None)
    for _ in polls:
        sampler.poll()
    assert [(r["task_id"], r["cpu_s"]) for r in sampler.rows] == [("a", 10.0), ("b", 5.0), ("c", 5.0)]
    assert [r["tables_added_mb"] for r in sampler.rows] == [1.0, 0.5, 0.5]
    assert [r["chunk"] for r in sampler.rows] == [1, 2, 3] and sampler.rows[0]["ray_run_added_mb"] is None
    assert sampler.rows[2]["driver_rss_mb"] == 99.0


def test_the_soak_fails_on_a_ray_mode_only_and_on_a_failed_run():
    from benchmarks import soak

    def run(mode, rows, code=0):
        return {"mode": mode, "label": mode, "exit_code": code, "wall_s": 100.0, "cpu_s": 150.0, "rows": rows,
                "report": None, "estimate": {"seconds": 90.0}, "warehouse_mb_end": 5.0, "cpu_from": "cgroup"}

    flat = _soak_rows(20, cpu_s=lambda i: 2.0)
    growing = _soak_rows(20, cpu_s=lambda i: 2.0 + i)
    results = {"runs": {"local": run("local", flat), "sequential": run("sequential", growing)}}
    assert soak.conclude(results) is True  # the baseline grows: shown, not a failure
    assert results["runs"]["local"]["summary"]["estimate"]["ok"] is True  # 100 s against 90 s: within 25 %
    results["runs"]["raydp"] = run("raydp", growing)
    assert soak.conclude(results) is False
    results["runs"]["raydp"] = run("raydp", flat, code=1)
    assert soak.conclude(results) is False
    assert any(line.startswith("FAIL raydp: the run ended with exit code 1") for line in soak.verdict_lines(results))


def test_the_soak_reads_the_plans_estimate_lines_when_there_are_any():
    from benchmarks import soak

    text = ("plan 2024-01-01 .. 2024-01-04: 4 daily chunks\n"
            "estimate: 1,234 s (21 min) with --executor ray --spark-mode local, p=2: run 40 s + bronze 1,100 s\n"
            "estimate constants: ray_backfill/costs.json, written 2026-12-07\n"
            "disk: 661.6 KiB for the warehouse: 96 rows x 15 B\n")
    got = soak.parse_estimate(text)
    assert got["seconds"] == 1234.0 and got["disk_mb"] == pytest.approx(661.6 / 1024)
    assert soak.parse_estimate("plan ...\nsource calls: 4 requests\n")["seconds"] is None
    assert soak.duration_seconds("1h 02m") == 3720.0 and soak.duration_seconds("0:12:34") == 754.0


@pytest.mark.spark
@pytest.mark.integration
@pytest.mark.slow
def test_the_soak_command_writes_one_row_per_chunk_and_a_plot_per_measure(tmp_path):
    from benchmarks import soak

    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.soak", "--modes", "sequential", "--start", "2024-01-01", "--days", "4",
         "--locations", "hanoi", "--bronze-only", "--every", "0.2", "--share-cpu", "--out", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
        env={k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"},
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "VERDICT: PASS" in done.stdout  # no Ray mode ran: nothing to fail
    results = json.loads((tmp_path / "soak.json").read_text())
    rows = results["runs"]["sequential"]["rows"]
    assert [r["chunk"] for r in rows] == [1, 2, 3, 4]
    assert [r["task_id"] for r in rows] == [f"bronze-2024-01-0{d}_2024-01-0{d}" for d in (1, 2, 3, 4)]
    keys = {"chunk_s", "cpu_s", "commit_s", "driver_rss_mb", "driver_fds", "long_lived_rss_mb", "long_lived_fds",
            "tables_added_mb", "ray_run_added_mb", "bronze_metadata_kb", "conflicts", "retries", "gap_s", "rows",
            "stray_procs", "held_deleted_mb"}
    assert all(keys <= set(r) for r in rows)
    assert all(r["rows"] == 24 and r["chunk_s"] > 0 and r["commit_s"] > 0 for r in rows)
    assert rows[0]["driver_rss_mb"] > 20 and "Spark JVM" in rows[0]["long_lived"]  # the baseline's one JVM
    assert rows[-1]["bronze_metadata_kb"] > rows[0]["bronze_metadata_kb"]  # a snapshot more per commit
    assert results["runs"]["sequential"]["processes_left"] == 0  # its JVM ended with it
    for measure in soak.MEASURES:
        assert (tmp_path / f"{measure.key}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "data:image/png;base64," in (tmp_path / "soak.html").read_text()
    assert "sequential baseline" in (tmp_path / "soak.md").read_text()


def test_the_ray_state_benchmark_tells_bounded_growth_from_growth_that_goes_on():
    from benchmarks import ray_state

    capped = [{"phase": "actors", "done": i * 100, "gcs_server": min(60.0 + 5 * i, 75.0), "driver": 200.0 + 2 * i}
              for i in range(9)]
    assert ray_state.growth(capped, "actors", "gcs_server") == (15.0, 0.0)  # grew to its cap, then stopped
    assert ray_state.growth(capped, "actors", "driver") == (8.0, 8.0)  # goes on
    assert ray_state.growth(capped, "jobs", "gcs_server") == (None, None)
    text = ray_state.table([{"bounds": True, "samples": capped}])
    assert "| run's bounds | actors | gcs_server | 15.0 | 0.0 |" in text
