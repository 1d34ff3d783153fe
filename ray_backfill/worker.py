"""One task in its own process: `python -m ray_backfill.worker TASK.json`.

The process is its own Ray driver in a namespace of its own (RayDP's actor names are fixed per
namespace, see FACTS.md) and builds one fresh Spark session; when the process ends, so do its
JVMs and RayDP actors. It writes a result JSON next to the task file and exits 0, or 1 on failure.
Bronze fetches from the source while the session starts.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import logging
import os
import sys
import time
from pathlib import Path

FAULTS_ENV = "RAY_BACKFILL_FAULTS"
QUICK_START_JVM = "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC"
SUPERVISOR_PID_ENV = "RAY_BACKFILL_SUPERVISOR_PID"


def die_with_parent() -> None:
    """Get SIGKILLed when the supervising process dies (Linux PR_SET_PDEATHSIG).

    Set here rather than in a preexec_fn of the supervisor (see executors/ray.py); if the
    supervisor died before this line ran, exit at once.
    """
    expected = os.environ.get(SUPERVISOR_PID_ENV)
    if not expected or not sys.platform.startswith("linux"):
        return
    import ctypes
    import signal

    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG
    if os.getppid() != int(expected):
        os._exit(1)


def _inject(task: dict, point: str) -> None:
    """Fault drills for tests and operators: RAY_BACKFILL_FAULTS='{"<task_id>": {...}}'.

    Keys: "fail_attempts": N (raise in attempts 1..N), "always_fail": true,
    "sleep_before_write": seconds (hold the FIRST attempt mid-run, after its fetch and session start
    and before its commit, e.g. to kill it there).
    """
    faults = json.loads(os.environ.get(FAULTS_ENV) or "{}").get(task["task_id"])
    if not faults:
        return
    if point == "start" and (faults.get("always_fail") or task["attempt"] <= faults.get("fail_attempts", 0)):
        raise RuntimeError(f"injected failure in {task['task_id']} attempt {task['attempt']}")
    if point == "before_write" and faults.get("sleep_before_write") and task["attempt"] == 1:
        time.sleep(float(faults["sleep_before_write"]))


def _connect_throttle(task: dict):
    """The run's shared source limiter, if the run has one; this process joins Ray for it."""
    ref = task.get("limiter")
    if not ref:
        return None
    import uuid

    import ray

    from ray_backfill.limiter import RayThrottle, lease_holder

    if not ray.is_initialized():
        # the same kind of driver the RayDP session would start: its own namespace
        ray.init(address=os.environ.get("RAY_ADDRESS") or None, namespace=f"rbf-{uuid.uuid4().hex[:12]}",
                 include_dashboard=False, log_to_driver=False)
    return RayThrottle.connect(ref["name"], ref["namespace"], lease_holder(task["task_id"], task["attempt"]))


def run_task(task: dict) -> dict:
    """Run one task (prepare, a bronze chunk, silver or gold) in a fresh session."""
    from jobs import bronze
    from jobs.context import load_inputs
    from jobs.inspect import summarize
    from jobs.stages import build_source, run_stage_range
    from jobs.tables import ensure_tables
    from ray_backfill.config import settings_from_dict
    from ray_backfill.plan import Chunk
    from ray_backfill.sessions import spark_session

    settings = settings_from_dict(task["settings"])
    if task["stage"] == "bronze" and not settings.spark.driver_java_options:
        # A bronze chunk's JVM lives for one small write: C1 alone and the serial collector start
        # faster than the tiered JIT and G1 (benchmarks/chunk_overhead.py); silver and gold keep them.
        settings = settings.replace(spark=dataclasses.replace(settings.spark, driver_java_options=QUICK_START_JVM))
    if task["stage"] == "prepare":
        # Creating tables is catalog work only: a local JVM does it without RayDP's actors.
        settings = settings.replace(spark=dataclasses.replace(settings.spark, mode="local", executor_cores=1))
    chunk = Chunk.from_json(task["chunk"])
    inputs = load_inputs(settings.pipeline)
    stage, run_id = task["stage"], task["run_id"]
    _inject(task, "start")
    started = time.monotonic()
    began = time.time()
    result: dict = {"rows": 0}
    # wall-clock [start, end] of each phase, for the benchmark's per-chunk timeline
    phases: dict[str, list[float]] = result.setdefault("phases", {})
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        fetching = source = None
        if stage == "bronze":
            source = build_source(settings.source, _connect_throttle(task))
            domain = settings.source.domains if source.name == "open-meteo" else source.name
            fetching = pool.submit(
                bronze.fetch_chunk, source, chunk, inputs.locations, inputs.variables, model_domain=domain
            )
        with spark_session(settings, f"{task['task_id']}") as spark:
            result["session_seconds"] = round(time.monotonic() - started, 2)
            phases["session_start"] = [round(began, 3), round(time.time(), 3)]
            if stage == "prepare":
                ensure_tables(spark, settings.catalog)
            elif stage == "bronze":
                fetched = fetching.result()
                result["fetch_seconds"] = round(fetched.fetch_seconds, 2)
                phases["fetch"] = [round(began, 3), round(began + fetched.fetch_seconds, 3)]
                write_began = time.time()
                _inject(task, "before_write")
                written = bronze.write_chunk(spark, settings, fetched, inputs.location_keys, run_id)
                result["rows"] = written.rows
                result["write_seconds"] = round(written.write_seconds, 2)
                phases["write"] = [round(write_began, 3), round(time.time(), 3)]
            else:
                _inject(task, "before_write")
                work_began = time.time()
                rows = run_stage_range(stage, spark, settings, chunk, inputs, run_id)
                result["rows"] = sum(rows.values())
                result["tables"] = rows
                phases["work"] = [round(work_began, 3), round(time.time(), 3)]
                if stage == "gold":  # the last stage tells what the lakehouse now holds
                    result["summary"] = [s.to_json() for s in summarize(spark, settings.catalog)]
            stop_started, stop_began = time.monotonic(), time.time()
    result["stop_seconds"] = round(time.monotonic() - stop_started, 2)
    phases["session_stop"] = [round(stop_began, 3), round(time.time(), 3)]
    if source is not None and hasattr(source, "stats"):
        result["source_stats"] = dataclasses.asdict(source.stats)
        source.close()
    result["seconds"] = round(time.monotonic() - started, 2)
    return result


def main(argv: list[str] | None = None) -> int:
    die_with_parent()
    argv = sys.argv[1:] if argv is None else argv
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    task_path = Path(argv[0])
    task = json.loads(task_path.read_text())
    result_path = Path(task["result_path"])
    try:
        result = {"ok": True, **run_task(task)}
        code = 0
    except BaseException as exc:  # the supervisor reads the one-line error from the result file
        from ray_backfill.errors import BackfillError

        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if not isinstance(exc, BackfillError):
            message = f"{type(exc).__name__}: {message}"
        result = {"ok": False, "error": message[:500]}
        logging.getLogger(__name__).exception("task %s failed", task.get("task_id"))
        code = 1
    tmp = result_path.with_suffix(".tmp")
    tmp.write_text(json.dumps(result))
    os.replace(tmp, result_path)
    return code


if __name__ == "__main__":
    sys.exit(main())
