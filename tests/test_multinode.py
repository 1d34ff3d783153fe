"""A two-node Ray cluster on this machine, a backfill submitted to it with `ray job submit` as an
operator would: chunks spread over both nodes as named actors, the ledger says where.

The nodes are started the way an operator starts them (`ray start --block`, one process group
each) and stopped by ending those groups — never `ray stop`, which stops every Ray on the machine.
They advertise loopback addresses (127.0.0.x): Ray replaces 127.0.0.1 itself by the machine's
routable address (services.resolve_ip_for_localhost), other 127.x addresses it keeps.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from jobs.tables import BRONZE, FACT_DAILY, SILVER
from tests.helpers import (
    MARKER_ENV,
    ROOT,
    attach_catalog,
    marked_processes,
    read_ledger,
    run_cli_marked,
    run_id_from,
    wait_marked_gone,
)

pytestmark = [pytest.mark.ray, pytest.mark.spark, pytest.mark.integration, pytest.mark.slow]

BIN = Path(sys.executable).parent
HOST = "127.0.0.2"  # both nodes: one host
OTHER_HOST = "127.0.0.3"  # a node that counts as a second host
RANGE = ["--start-date", "2024-01-01", "--end-date", "2024-02-29"]  # two monthly chunks


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class LocalCluster:
    """Ray nodes on this machine, each a `ray start --block` process leading its own process group."""

    root: Path
    marker: str  # in the environment of every process the cluster starts
    env: dict
    address: str = ""
    dashboard: str = ""  # the head's dashboard (and job API) URL
    nodes: dict[str, subprocess.Popen] = field(default_factory=dict)  # node name -> `ray start`
    node_info: dict[str, dict] = field(default_factory=dict)  # node name -> id, ip, raylet socket

    def start_node(self, name: str, ip: str, cpus: int, head: bool = False) -> None:
        temp = self.root / name
        ports = [f"--dashboard-agent-listen-port={_free_port()}", f"--metrics-export-port={_free_port()}"]
        if head:
            port = _free_port()
            self.address = f"{ip}:{port}"
            self.dashboard = f"http://{ip}:{_free_port()}"
            role = ["--head", f"--port={port}", "--include-dashboard=true", f"--dashboard-host={ip}",
                    f"--dashboard-port={self.dashboard.rsplit(':', 1)[1]}", f"--ray-client-server-port={_free_port()}"]
        else:
            role = [f"--address={self.address}"]
        # Output to a file, not a pipe: a daemon writing into a pipe nobody reads dies of SIGPIPE.
        with open(self.root / f"{name}.log", "w") as log:
            self.nodes[name] = subprocess.Popen(
                [str(BIN / "ray"), "start", "--block", *role, f"--node-ip-address={ip}", f"--num-cpus={cpus}",
                 f"--temp-dir={temp}", "--object-store-memory=150000000", "--disable-usage-stats", *ports],
                env=self.env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
            )

    def ray(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        """The `ray` command line against this cluster's dashboard, as an operator runs it."""
        return subprocess.run([str(BIN / "ray"), *args], env=self.env, capture_output=True, text=True,
                              timeout=timeout, cwd=ROOT)

    def api(self, path: str, **params) -> object:
        """The head's dashboard over HTTP, with the cluster's token: the state and job APIs the
        `ray list` and `ray job` commands call, without a Python process per call beside the run."""
        query = urllib.parse.urlencode(params, doseq=True)
        request = urllib.request.Request(f"{self.dashboard}{path}{'?' + query if query else ''}",
                                         headers={"Authorization": f"Bearer {self.env['RAY_AUTH_TOKEN']}"})
        with urllib.request.urlopen(request, timeout=30) as answer:
            return json.loads(answer.read())

    def listed(self, resource: str, **filters: str) -> list[dict]:
        """`ray list <resource>` as data: actors, tasks (filters: key=value)."""
        body = self.api(f"/api/v0/{resource}", limit=1000, filter_keys=list(filters),
                        filter_predicates=["="] * len(filters), filter_values=list(filters.values()))
        return body["data"]["result"]["result"]

    def job_status(self, job_id: str) -> str:
        return next((j["status"] for j in self.api("/api/jobs/") if j.get("submission_id") == job_id), "UNKNOWN")

    def job_logs(self, job_id: str) -> str:
        return self.api(f"/api/jobs/{job_id}/logs")["logs"]

    def alive_nodes(self) -> list[dict]:
        """The cluster's alive nodes as seen by a fresh driver process: id, address, temp dir."""
        probe = ("import json, ray; ray.init(address=%r, logging_level='ERROR'); "
                 "print(json.dumps([{'id': n['NodeID'], 'ip': n['NodeManagerAddress'], "
                 "'socket': n['RayletSocketName']} for n in ray.nodes() if n['Alive']]))") % self.address
        done = subprocess.run([sys.executable, "-c", probe], env=self.env, capture_output=True, text=True, timeout=60)
        if done.returncode != 0:
            return []
        return json.loads(done.stdout.strip().splitlines()[-1])

    def wait_for(self, count: int, timeout: float = 90) -> dict[str, dict]:
        """Wait until `count` nodes are alive; returns them by node name (their temp dir's name)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for name, proc in self.nodes.items():
                if proc.poll() is not None:
                    raise AssertionError(f"ray node {name} exited: {(self.root / f'{name}.log').read_text()[-3000:]}")
            nodes = self.alive_nodes()
            if len(nodes) == count:
                return {Path(n["socket"]).relative_to(self.root).parts[0]: n for n in nodes}
            time.sleep(1)
        raise AssertionError(f"{count} nodes not alive after {timeout}s: {self.alive_nodes()}")

    def stop_node(self, name: str, grace: float = 20) -> None:
        """End a node's process group: SIGTERM (the node stops its processes), SIGKILL after `grace`."""
        proc = self.nodes.pop(name)
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                proc.wait(timeout=grace)
                break
            except subprocess.TimeoutExpired:
                continue
        proc.wait(timeout=10)

    def leftovers(self, timeout: float = 30) -> dict[int, str]:
        """Processes of this cluster still alive: by marker, and by temp dir in the command line."""
        left = wait_marked_gone(self.marker, timeout=timeout)
        for entry in Path("/proc").iterdir():
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if entry.name.isdigit() and str(self.root) in cmdline:
                left[int(entry.name)] = cmdline
        return left


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A head and a second node, 2 CPUs each, both on HOST."""
    marker = uuid.uuid4().hex
    # the cluster's own token, in the environment only: nothing written to ~/.ray
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", "RAY_AUTH_MODE": "token", MARKER_ENV: marker,
           "RAY_AUTH_TOKEN": uuid.uuid4().hex + uuid.uuid4().hex,
           # SIGTERM stops a node at once instead of draining it for 30 s first
           "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0"}
    env.pop("RAY_ADDRESS", None)
    # Ray's socket paths must stay under 107 bytes: a short folder, not pytest's tmp_path
    root = Path(f"/tmp/rbf-nodes-{marker[:8]}")
    root.mkdir()
    cluster = LocalCluster(root=root, marker=marker, env=env)
    try:
        cluster.start_node("head", HOST, cpus=2, head=True)
        cluster.start_node("second", HOST, cpus=2)
        cluster.node_info = cluster.wait_for(2)
        yield cluster
    finally:
        for name in list(cluster.nodes):
            cluster.stop_node(name)
        if not cluster.leftovers(timeout=30):
            shutil.rmtree(root, ignore_errors=True)


@dataclass
class JobRun:
    """A backfill submitted as a Ray job: its status, its driver's log, the named actors and actor
    tasks seen meanwhile."""

    warehouse: Path
    status: str
    logs: str
    actors: dict[str, str]  # actor name -> class
    tasks: dict[str, str]  # actor task name -> its function


@pytest.fixture(scope="module")
def spread_run(cluster, tmp_path_factory) -> JobRun:
    """`ray job submit` of a backfill: 2 monthly chunks in parallel, 1 location, RayDP sessions."""
    warehouse = tmp_path_factory.mktemp("multinode") / "wh"
    submitted = cluster.ray("job", "submit", "--address", cluster.dashboard, "--working-dir", str(ROOT), "--no-wait",
                            "--", "python", "-m", "ray_backfill.cli", "run", *RANGE, "--locations", "hanoi",
                            "--warehouse", str(warehouse), "--parallelism", "2", "--catalog-name", "multinode",
                            # the two nodes declare CPUs that one 2-core host backs: no sessions ahead
                            "--standby", "0", timeout=120)
    assert submitted.returncode == 0, submitted.stdout + submitted.stderr
    # the CLI colours its output, and a colour code follows the id: take it by pattern
    job_id = re.search(r"raysubmit_[A-Za-z0-9]+", submitted.stdout + submitted.stderr).group(0)
    actors: dict[str, str] = {}
    tasks: dict[str, str] = {}
    status = "UNKNOWN"
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and status not in ("SUCCEEDED", "FAILED", "STOPPED"):
        try:
            actors.update({a["name"]: a.get("class_name", "") for a in cluster.listed("actors") if a.get("name")})
            tasks.update({t["name"]: t.get("func_or_class_name", "")
                          for t in cluster.listed("tasks", type="ACTOR_TASK") if t.get("name")})
            status = cluster.job_status(job_id)
        except OSError:  # the dashboard busy for a moment: ask again
            pass
        time.sleep(2)
    logs = cluster.job_logs(job_id)
    return JobRun(warehouse, status, logs, actors, tasks)


def test_the_submitted_job_succeeds_with_a_named_supervisor_per_slot(spread_run):
    assert spread_run.status == "SUCCEEDED", spread_run.logs[-4000:]
    supervisors = {name for name, cls in spread_run.actors.items() if cls.endswith("SlotSupervisor")}
    assert supervisors == {"slot-0", "slot-1"}, spread_run.actors  # parallelism 2, no standby beyond the slots
    # the attempts are the slots' `run` tasks, under the method's own name: one name, whatever the chunk
    # (a name per chunk would be a metric series per chunk: docs/operations.md#master-per-slot)
    runs = {name for name, func in spread_run.tasks.items() if func.endswith("SlotSupervisor.run")}
    assert runs == {"SlotSupervisor.run"}, spread_run.tasks


def test_chunks_run_on_both_nodes_and_the_ledger_says_which(cluster, spread_run, spark):
    warehouse, logs = spread_run.warehouse, spread_run.logs
    assert spread_run.status == "SUCCEEDED", logs[-4000:]
    assert f"ray cluster {cluster.address}" in logs
    run_id = run_id_from(logs)
    ledger = read_ledger(warehouse, run_id)
    assert ledger["outcome"] == "succeeded"
    tasks = {t["task_id"]: t for t in ledger["tasks"]}
    node_ids = {n["id"] for n in cluster.node_info.values()}
    assert {tasks[c]["node_id"] for c in ("bronze-2024-01", "bronze-2024-02")} == node_ids
    assert {t["node_id"] for t in tasks.values()} == node_ids
    report = json.loads((warehouse / "_ray_backfill" / "runs" / run_id / "report.json").read_text())
    assert {t["task_id"]: t["node_id"] for t in report["tasks"]} == {k: t["node_id"] for k, t in tasks.items()}

    catalog = attach_catalog(spark, warehouse, "multinode")
    bronze = spark.table(BRONZE.qualified(catalog))
    assert bronze.count() == tasks["bronze-2024-01"]["rows"] + tasks["bronze-2024-02"]["rows"]
    assert bronze.count() == 60 * 24
    silver = spark.table(SILVER.qualified(catalog))
    assert silver.count() == bronze.select("location_key", "ts_utc").distinct().count()
    assert spark.table(FACT_DAILY.qualified(catalog)).count() == 60
    assert bronze.select("_chunk_id").distinct().count() == 2


def test_status_needs_only_the_warehouse(spread_run):
    warehouse = spread_run.warehouse
    run_id = run_id_from(spread_run.logs)
    tasks = read_ledger(warehouse, run_id)["tasks"]
    # a process that sees the warehouse and no cluster: RAY_ADDRESS points nowhere, and ray is never imported
    code = ("import sys; from ray_backfill.cli import main; code = main(sys.argv[1:]); "
            "assert 'ray' not in sys.modules, 'status imported ray'; sys.exit(code)")
    status = subprocess.run([sys.executable, "-c", code, "status", run_id, "--warehouse", str(warehouse)],
                            cwd=ROOT, env={**os.environ, "RAY_ADDRESS": "127.0.0.1:9"}, capture_output=True,
                            text=True, timeout=60)
    assert status.returncode == 0, status.stdout + status.stderr
    lines = status.stdout.splitlines()
    assert lines[0].startswith(f"run {run_id}: succeeded")
    header = next(line for line in lines if line.startswith("task"))
    assert header.split()[1:] == ["state", "tries", "rows", "seconds", "peak", "MiB", "node"]
    for task in tasks:
        row = next(line.split() for line in lines if line.startswith(task["task_id"] + " "))
        assert row[1:4] == ["succeeded", str(task["attempts"]), f"{task['rows']:,}"]
        assert row[4] == f"{task['seconds']:.1f}"
        assert row[-1] == task["node_id"][:12]


def test_a_cluster_on_two_hosts_refuses_a_local_catalog_before_any_chunk(cluster, tmp_path):
    cluster.start_node("other-host", OTHER_HOST, cpus=1)
    try:
        hosts = {n["ip"] for n in cluster.wait_for(3).values()}
        assert hosts == {HOST, OTHER_HOST}
        warehouse = tmp_path / "wh"
        done, _ = run_cli_marked("run", *RANGE, "--locations", "hanoi", "--warehouse", str(warehouse),
                                 "--address", cluster.address, "--catalog-name", "refused",
                                 marker=cluster.marker,
                                 env={k: cluster.env[k] for k in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN")})
    finally:
        cluster.stop_node("other-host")
    assert done.returncode == 1, done.stdout[-3000:] + done.stderr[-3000:]
    errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert errors == [
        f"error: the Ray cluster spans 2 hosts ({HOST}, {OTHER_HOST}) but the sqlite catalog and the local "
        f"warehouse path {warehouse} are on one host only: use the postgres JDBC catalog (--catalog postgres) "
        "or a REST catalog, and an hdfs:// or s3a:// --warehouse"
    ], done.stderr[-3000:]
    assert "running" not in done.stdout
    assert not (warehouse / "_ray_backfill").exists(), "a refused run records nothing"


def test_ray_job_stop_ends_the_run_cancelled_and_leaves_no_chunk_process(cluster, spread_run, tmp_path):
    """`ray job stop` SIGTERMs the driver and SIGKILLs it 3 s later (RAY_JOB_STOP_WAIT_TIME_S): the
    ledger says cancelled by then, and the chunk's supervisor, process and JVM go with the driver."""
    warehouse = tmp_path / "wh"
    drills = {"RAY_BACKFILL_FAULT_DRILLS": "1",
              "RAY_BACKFILL_FAULTS": json.dumps({"bronze-2024-01": {"sleep_before_write": 600}})}
    submitted = cluster.ray("job", "submit", "--address", cluster.dashboard, "--working-dir", str(ROOT), "--no-wait",
                            "--runtime-env-json", json.dumps({"env_vars": drills}),
                            "--", "python", "-m", "ray_backfill.cli", "run", "--start-date", "2024-01-01",
                            "--end-date", "2024-01-31", "--locations", "hanoi", "--warehouse", str(warehouse),
                            "--spark-mode", "local", "--parallelism", "1", "--standby", "0",
                            "--catalog-name", "stopped", timeout=120)
    assert submitted.returncode == 0, submitted.stdout + submitted.stderr
    job_id = re.search(r"raysubmit_[A-Za-z0-9]+", submitted.stdout + submitted.stderr).group(0)
    logs, held, deadline = "", "", time.monotonic() + 300
    # mid-chunk, nothing committed: the attempt's own log file says so (the job's log has the driver's lines only)
    while "[bronze-2024-01] fault drill: holding before the write" not in held:
        assert time.monotonic() < deadline, logs[-3000:] + held[-3000:]
        time.sleep(2)
        logs = cluster.job_logs(job_id)
        attempt_log = warehouse / "_ray_backfill" / "runs" / (re.findall(r"^run (\S+):", logs, re.M) or ["-"])[0] / \
            "logs" / "bronze-2024-01.attempt1.log"
        held = attempt_log.read_text() if attempt_log.is_file() else ""
    chunk = [p for p, cmd in marked_processes(cluster.marker).items() if "ray_backfill.worker" in cmd]
    assert len(chunk) == 1
    stopped = cluster.ray("job", "stop", "--address", cluster.dashboard, job_id, timeout=120)
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    ledger = read_ledger(warehouse, run_id_from(logs))
    tasks = {t["task_id"]: t for t in ledger["tasks"]}
    assert ledger["outcome"] == "cancelled", ledger
    assert tasks["bronze-2024-01"]["status"] == "cancelled" and tasks["silver"]["status"] == "cancelled"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        left = {p: cmd for p, cmd in marked_processes(cluster.marker).items()
                if "ray_backfill.worker" in cmd or str(warehouse) in cmd or "SlotSupervisor" in cmd or "AppMasterEntryPoint" in cmd}
        alive = [a.get("class_name") for a in cluster.listed("actors", state="ALIVE")]
        ours = {"SlotSupervisor", "SourceLimiterActor"} & set(alive)
        left.update({0: f"alive actors {sorted(ours)}"} if ours else {})
        if not left:
            break
        time.sleep(1)
    assert not left, left


def test_stopping_the_nodes_leaves_no_process(cluster, spread_run):
    for name in list(cluster.nodes):
        cluster.stop_node(name)
    left = cluster.leftovers(timeout=30)
    assert not left, left
    assert not marked_processes(cluster.marker)
