"""One task in its own process: `python -m ray_backfill.worker [--standby] PAYLOAD.json`.

The process builds one fresh Spark session; when the process ends, so do its JVMs. In a run's
RayDP mode its driver registers with its slot's app master (the payload's `master`,
docs/operations.md#master-per-slot), whose executors serve this session only; without one it
starts a master of its own as its own Ray driver, in a namespace of its own (RayDP's actor names
are fixed per namespace). It joins Ray itself only for the run's source limiter. It writes a
`TaskResult` JSON to the payload's `result_path` and exits 0, or 1 on failure. With `--standby` it
starts its session first and waits for a line on stdin before the task begins (a standby,
ray_backfill/executors/ray.py).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

# Stdlib only at import: the process first arranges to die with its supervisor (die_with_parent),
# and benchmarks import it without paying for pyspark.
if TYPE_CHECKING:
    from jobs.config import Settings
    from jobs.limits import Throttle
    from jobs.tasks import Task, TaskOutcome

FAULTS_ENV = "RAY_BACKFILL_FAULTS"
# the drills act only where this is also set to 1 (tests, an operator's rehearsal): a stray
# RAY_BACKFILL_FAULTS in a production environment does nothing
FAULTS_ENABLED_ENV = "RAY_BACKFILL_FAULT_DRILLS"
STANDBY_FLAG = "--standby"
QUEUE_FILE = "queued.json"  # next to the result file: the chunk's time held up at the source limiter
PHASE_FILE = "phase"  # next to the result file: what the task is doing now, for the live progress
FACTS_FILE = "session.json"  # next to the result file: what the session leaves on the node (sessions.spark_session)
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


def _inject(task: "Task", point: str) -> None:
    """Fault drills for tests and operators: RAY_BACKFILL_FAULTS='{"<task_id>": {...}}', only
    with RAY_BACKFILL_FAULT_DRILLS=1.

    Keys: "fail_attempts": N (raise in attempts 1..N), "always_fail": true,
    "sleep_before_write": seconds (hold the FIRST attempt mid-run, after its fetch and session start
    and before its commit, e.g. to kill it there).
    """
    if os.environ.get(FAULTS_ENABLED_ENV) != "1":
        return
    faults = json.loads(os.environ.get(FAULTS_ENV) or "{}").get(task.task_id)
    if not faults:
        return
    if point == "start" and (faults.get("always_fail") or task.attempt <= faults.get("fail_attempts", 0)):
        raise RuntimeError(f"injected failure in {task.task_id} attempt {task.attempt}")
    if point == "before_write" and faults.get("sleep_before_write") and task.attempt == 1:
        print(f"[{task.task_id}] fault drill: holding before the write for {faults['sleep_before_write']}s",
              flush=True)
        time.sleep(float(faults["sleep_before_write"]))


# the task's checkpoints, as the live progress names its phases
# ("before_write": a bronze chunk writes what it fetched; silver, gold and maintain read, compute, write)
PHASES = {"start": "session start", "stop": "session stop"}


def write_phase(payload: dict, phase: str) -> None:
    """Tell the supervisor the task's phase (it reads the file when the driver asks); best effort."""
    if not payload.get("result_path"):
        return
    path = Path(payload["result_path"]).with_name(PHASE_FILE)
    try:
        tmp = path.with_suffix(".tmp")
        tmp.write_text(phase)
        os.replace(tmp, path)
    except OSError:
        pass


def _checkpoint(payload: dict, task: "Task"):
    def checkpoint(point: str) -> None:
        if point == "before_write":
            write_phase(payload, "write" if task.stage == "bronze" else "work")
        else:
            write_phase(payload, PHASES.get(point, point))
        _inject(task, point)
    return checkpoint


def _connect_throttle(payload: dict, task: "Task") -> "Throttle | None":
    """The run's shared source limiter, if the run has one; this process joins Ray for it."""
    ref = payload.get("limiter")
    if not ref:
        return None
    import uuid

    import ray

    from ray_backfill.limiter import QueueClock, RayThrottle, lease_holder

    if not ray.is_initialized():
        # the same kind of driver the RayDP session would start: its own namespace
        ray.init(address=os.environ.get("RAY_ADDRESS") or None, namespace=f"rbf-{uuid.uuid4().hex[:12]}",
                 include_dashboard=False, log_to_driver=False)
    # the supervisor leaves time held up at the limiter out of the chunk's timeout
    clock = QueueClock(Path(payload["result_path"]).with_name(QUEUE_FILE)) if payload.get("result_path") else None
    return RayThrottle.connect(ref["name"], ref["namespace"], lease_holder(task.task_id, task.attempt), clock)


def task_settings(settings: "Settings", stage: str) -> "Settings":
    """The settings a task's own session runs with."""
    if stage == "bronze":
        # A bronze chunk's JVMs live for one small write: they start quick (ray_backfill/jvm.py);
        # silver and gold keep the tiered JIT and G1 for their longer jobs.
        settings = settings.replace(spark=dataclasses.replace(settings.spark, quick_start=True))
    if stage == "prepare":
        # Creating tables is catalog work only: a local JVM does it without RayDP's actors.
        settings = settings.replace(spark=dataclasses.replace(settings.spark, mode="local", executor_cores=1))
    return settings


def run(payload: dict, standby: TextIO | None = None) -> "TaskOutcome | None":
    """Run the payload's task in a fresh session of its own.

    As a standby (`standby` is the stream the go-ahead comes on), the session starts and runs a
    first small job before the task may begin; then the process waits for a line on `standby`.
    End of stream instead (the run was cancelled, the task went elsewhere): the session is torn
    down and nothing runs (None). Either way the session serves this one task only.
    """
    from jobs.config import settings_from_dict
    from jobs.context import load_inputs
    from jobs.tasks import Task, run_task
    from ray_backfill.sessions import spark_session

    task = Task.from_json(payload["task"])
    settings = task_settings(settings_from_dict(payload["settings"]), task.stage)
    throttle = _connect_throttle(payload, task) if task.stage == "bronze" else None
    inputs = load_inputs(settings.pipeline)
    facts = Path(payload["result_path"]).with_name(FACTS_FILE) if payload.get("result_path") else None
    master = payload.get("master")  # the slot's RayDP app master (ray_backfill/slot_master.py), if any

    def session():
        return spark_session(settings, task.task_id, facts_path=facts, master=master)

    if standby is None:
        return run_task(task, settings, inputs, session, throttle=throttle, checkpoint=_checkpoint(payload, task))
    import contextlib

    began, started = time.time(), time.monotonic()
    write_phase(payload, "standby, session start")
    with session() as spark:
        # a first job loads the scheduler's and the executor's classes before the task's own job; a
        # JVM-only RDD, not a DataFrame: no code generation and no Python worker, so little CPU
        spark.sparkContext._jsc.sc().range(0, 1, 1, 1).count()
        ready_s, ready_at = round(time.monotonic() - started, 2), time.time()
        print(f"[{task.task_id}] standby: session up in {ready_s:.1f}s, waiting for its turn", flush=True)
        write_phase(payload, "standby, session up")
        if not standby.readline():
            print(f"[{task.task_id}] standby: not needed, stopping its session", flush=True)
            return None
        outcome = run_task(task, settings, inputs, lambda: contextlib.nullcontext(spark),
                           throttle=throttle, checkpoint=_checkpoint(payload, task))
        stop_began, stop_started = time.time(), time.monotonic()
    # the session started before the task's turn and stops after its work: say so in its phases
    outcome.session_seconds = ready_s
    outcome.phases["session_start"] = [round(began, 3), round(ready_at, 3)]
    outcome.stop_seconds = round(time.monotonic() - stop_started, 2)
    outcome.phases["session_stop"] = [round(stop_began, 3), round(time.time(), 3)]
    return outcome


def main(argv: list[str] | None = None) -> int:
    die_with_parent()
    argv = sys.argv[1:] if argv is None else argv
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from ray_backfill.executors.base import TaskResult, error_line, is_permanent

    standby = argv[0] == STANDBY_FLAG
    payload = json.loads(Path(argv[-1]).read_text())
    result_path = Path(payload["result_path"])
    try:
        outcome = run(payload, sys.stdin if standby else None)
        if outcome is None:
            return 0  # a standby that was not needed: no result
        result = TaskResult(ok=True, outcome=outcome)
        code = 0
    except BaseException as exc:  # the supervisor reads the one-line error from the result file
        result = TaskResult(ok=False, error=error_line(exc), permanent=is_permanent(exc))
        logging.getLogger(__name__).exception("task %s failed", payload["task"]["task_id"])
        code = 1
    tmp = result_path.with_suffix(".tmp")
    tmp.write_text(json.dumps(result.to_json()))
    os.replace(tmp, result_path)
    return code


if __name__ == "__main__":
    sys.exit(main())
