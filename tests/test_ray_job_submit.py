"""`ray job submit` against a real `ray start --head` on this machine, with chunk actors visible."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import ROOT, java_and_workers, read_ledger, wait_gone

pytestmark = [pytest.mark.ray, pytest.mark.integration, pytest.mark.slow]

BIN = Path(sys.executable).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def head(tmp_path):
    """A Ray head started the way an operator would; stopped (with everything on it) afterwards."""
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", "RAY_AUTH_MODE": "token"}
    env.pop("RAY_ADDRESS", None)
    port, dash = _free_port(), _free_port()
    temp = Path("/tmp") / f"rbf-head-{os.getpid()}"
    # Output to a file, not a pipe: the daemons `ray start` leaves behind inherit it, and a raylet
    # writing into a pipe whose reader has gone dies of SIGPIPE without a word.
    with open(tmp_path / "ray-start.log", "w") as log:
        subprocess.run(
            [str(BIN / "ray"), "start", "--head", "--node-ip-address=127.0.0.1", f"--port={port}",
             "--dashboard-host=127.0.0.1", f"--dashboard-port={dash}", "--num-cpus=2", "--include-dashboard=true",
             f"--temp-dir={temp}", "--disable-usage-stats"],
            env=env, check=True, stdout=log, stderr=subprocess.STDOUT, timeout=120,
        )
    try:
        yield env, f"http://127.0.0.1:{dash}", f"127.0.0.1:{port}"
    finally:
        with open(tmp_path / "ray-stop.log", "w") as log:
            subprocess.run([str(BIN / "ray"), "stop", "--force"], env=env, stdout=log, stderr=subprocess.STDOUT,
                           timeout=120)


def _ray(env, *args, timeout=60) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "ray"), *args], env=env, capture_output=True, text=True, timeout=timeout, cwd=ROOT)


def test_job_submit_runs_a_backfill_to_succeeded_with_named_chunk_actors(head, tmp_path):
    env, dashboard, _ = head
    warehouse = tmp_path / "wh"
    before = java_and_workers()
    submitted = _ray(env, "job", "submit", "--address", dashboard, "--working-dir", str(ROOT), "--no-wait", "--",
                     "python", "-m", "ray_backfill.cli", "run", "--start-date", "2024-01-01", "--end-date", "2024-02-29",
                     "--locations", "hanoi", "--warehouse", str(warehouse))
    assert submitted.returncode == 0, submitted.stdout + submitted.stderr
    # The CLI colours its output, and the id is followed by a colour code: take it by pattern
    job_id = re.search(r"raysubmit_[A-Za-z0-9]+", submitted.stdout + submitted.stderr).group(0)

    seen_actors: dict[str, str] = {}
    status = "UNKNOWN"
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        listed = _ray(env, "list", "actors", "--address", dashboard, "--format", "json", "--limit", "500")
        if listed.returncode == 0:
            for actor in json.loads(listed.stdout or "[]"):
                if actor.get("name"):
                    seen_actors[actor["name"]] = actor.get("class_name", "")
        # `ray job status` words a finished job differently from a running one; the state API's JSON does not
        jobs = _ray(env, "list", "jobs", "--address", dashboard, "--format", "json")
        if jobs.returncode == 0:
            status = next((j["status"] for j in json.loads(jobs.stdout or "[]") if j.get("submission_id") == job_id),
                          status)
        if status in ("SUCCEEDED", "FAILED", "STOPPED"):
            break
        time.sleep(2)
    logs = _ray(env, "job", "logs", "--address", dashboard, job_id).stdout
    assert status == "SUCCEEDED", logs[-4000:]
    chunk_actors = {n for n, cls in seen_actors.items() if cls.endswith("ChunkSupervisor")}
    assert {"bronze-2024-01", "bronze-2024-02"} <= chunk_actors, seen_actors
    run_id = next(line.split()[1].rstrip(":") for line in logs.splitlines() if line.startswith("run "))
    ledger = read_ledger(warehouse, run_id)
    assert ledger["outcome"] == "succeeded"
    assert all(t["node_id"] for t in ledger["tasks"])
    assert not wait_gone(java_and_workers() - before, timeout=30)
