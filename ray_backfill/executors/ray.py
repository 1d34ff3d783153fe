"""The Ray executor: every task attempt runs in a fresh process, supervised by its slot's Ray actor.

A run keeps one supervisor actor per slot (`slot-0`, `slot-1`, …, visible in the dashboard; its log
says which attempt it runs). The actor holds no CPU — the chunk's Spark executors need them
(docs/operations.md#raydp: supervisors with CPUs deadlock a small cluster). For each attempt it
starts `python -m ray_backfill.worker` on its node, which builds one fresh Spark session and ends
with it; in RayDP mode that session's driver registers with the slot's RayDP app master
(ray_backfill/slot_master.py), which the actor keeps for the run. The actor
enforces the timeout, measures the process tree's peak RSS, kills the tree on timeout or cancel,
and after each attempt ends its executors and removes what it left. The worker also dies with its
actor (PR_SET_PDEATHSIG, set by the worker), and its JVMs with it (pyspark's gateway exits when
its parent goes); the master's gateway JVM too (its stdin is a pipe from the actor).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from jobs.config import Settings, secret_env, settings_to_dict
from jobs.tasks import Task
from ray_backfill.executors.base import Executor, TaskResult, tree_rss_mb
from ray_backfill.ledger import run_log_dir
from ray_backfill.limiter import lease_holder, queued_seconds
from ray_backfill.leftovers import remove_app_dir, remove_session_files, sweep_native_copies
from ray_backfill.logs import CappedLog, enforce_run_cap, tidy_ray_logs
from ray_backfill.ray_bounds import DAEMON_ENV, SYSTEM_CONFIG
from ray_backfill.sessions import check_cluster_catalog
from ray_backfill.slot_master import SlotMaster
from ray_backfill.worker import FACTS_FILE, PHASE_FILE, QUEUE_FILE, STANDBY_FLAG, SUPERVISOR_PID_ENV

log = logging.getLogger(__name__)

CHUNK_MEMORY_MB = 1800  # measured ≈ 1.5 GiB per RayDP chunk session (docs/operations.md#raydp) plus headroom


def _tree(pid: int):
    import psutil

    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def _kill_tree(proc: subprocess.Popen, grace_s: float = 5.0) -> None:
    """SIGTERM the worker (it stops its session), then SIGKILL whatever of its tree is left."""
    import psutil

    procs = _tree(proc.pid)
    for p in procs[:1]:
        with contextlib.suppress(psutil.Error):
            p.terminate()
    gone, alive = psutil.wait_procs(procs, timeout=grace_s)
    for p in alive:
        with contextlib.suppress(psutil.Error):
            p.kill()
    psutil.wait_procs(alive, timeout=5)
    with contextlib.suppress(Exception):
        proc.wait(timeout=5)


def attempt_log(payload: dict) -> Path:
    """The attempt's log file: under the payload's `log_dir` (the run's folder next to its local
    ledger), else under this node's Ray log folder; `<task>.attempt<N>.log`."""
    task = payload["task"]
    if payload.get("log_dir"):
        folder = Path(payload["log_dir"])
    else:
        node = getattr(ray._private.worker, "_global_node", None)
        base = Path(node.get_logs_dir_path()) if node is not None else Path(tempfile.gettempdir())
        folder = base / "ray-backfill" / task["run_id"]
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"{task['task_id']}.attempt{task['attempt']}.log"


def _note(log_path: Path | None, line: str) -> None:
    """A line of the supervisor's own in the attempt's log (its header, how the attempt started)."""
    if log_path is None:
        return
    with contextlib.suppress(OSError), open(log_path, "a", encoding="utf-8") as log_file:
        log_file.write(line + "\n")


def _pump(stream, log_path: Path) -> None:
    """Copy the attempt's output (its Python logging, Spark's and the JVMs') to its log file, first
    and last part up to a cap (ray_backfill/logs.py); never to the driver's console, nor to the
    slot actor's own log, which lives for the run (it says which attempt started and where its log is)."""
    with open(log_path, "a", encoding="utf-8", buffering=1) as out:
        capped = CappedLog(out)
        try:
            for line in stream:
                capped.write(line)
        finally:
            capped.close()


MASTER_WATCH_S = 2.0  # how often a running RayDP attempt's supervisor checks that its slot's master lives
END_SWEEP_WAIT_S = 15.0  # Ray ends a stopped session's executor actors within a second or two


def _clean_after(payload: dict | None, pid: int | None, failed: bool, master: SlotMaster | None,
                 log_path: Path | None = None) -> None:
    """What an ended attempt left on this node outside the warehouse and its log: its Spark
    executors (the slot's master leaves them alive), its application's work folder, Ray's
    native-library copies no process maps, and Ray's log files of its processes (cut to their first
    and last part when it failed); then its own folder."""
    if not payload or not payload.get("result_path"):
        return
    facts_file = Path(payload["result_path"]).with_name(FACTS_FILE)
    try:
        facts = json.loads(facts_file.read_text())
    except (OSError, ValueError):
        facts = {}
    _remove_workdir(payload)  # first: the attempt's temporary files (its JVMs' too), whatever happens after
    executors = master.end_application() if master is not None and payload.get("master") else []
    node = getattr(ray._private.worker, "_global_node", None)
    if remove_app_dir(facts.get("session_dir") or (node.get_session_dir_path() if node is not None else None),
                      facts.get("app_id")):
        _note(log_path, f"# removed its Spark application's work folder {facts['app_id']} on this node")
    sweep_native_copies()
    pids = [*facts.get("pids", []), *executors, *([pid] if pid else [])]
    logs_dir = facts.get("logs_dir") or (node.get_logs_dir_path() if node is not None else None)
    tidy_ray_logs(logs_dir, facts.get("ray_jobs", []), pids, keep=failed)


def _needs_master(payload: dict) -> bool:
    """Whether the attempt's session is a RayDP one (prepare's is local: ray_backfill/worker.py)."""
    return payload["settings"]["spark"]["mode"] == "raydp" and payload["task"]["stage"] != "prepare"


@ray.remote(num_cpus=0, max_concurrency=3)
class SlotSupervisor:
    """One slot of a run: its task attempts, one at a time, each in a fresh child process on this
    actor's node, started cold or as a standby; in RayDP mode the slot's app master, kept for the run.

    A standby (`standby()`) is the attempt's process started ahead of its turn: its session comes up
    and waits; `run()` gives it the go-ahead. The process serves this one attempt and exits; if it
    died while waiting, `run()` starts the attempt cold instead.
    """

    def __init__(self, slot: str, namespace: str, master_configs: dict | None, log_dir: str | None) -> None:
        self._slot = slot
        self._proc: subprocess.Popen | None = None
        self._payload: dict | None = None
        self._spawned = 0.0
        self._cancelled = threading.Event()
        self._lock = threading.Lock()
        self._log: Path | None = None
        self._pumping: threading.Thread | None = None
        master_log = Path(log_dir) / f"{slot}.master.log" if log_dir else None
        self._master = SlotMaster(namespace, master_configs, master_log) if master_configs else None

    def _master_for(self, payload: dict) -> dict | None:
        """The slot's master for this attempt's session ((re)started when needed), or None."""
        if self._master is None or not _needs_master(payload):
            return None
        began = time.monotonic()
        url, why = self._master.ensure()
        if why:
            _note(self._log, f"# {self._slot}: RayDP master {'started' if why == 'start' else 'restarted: ' + why} "
                             f"in {time.monotonic() - began:.1f}s")
        node = ray._private.worker._global_node
        return {"url": url, "node_ip": node.node_ip_address, "logs_dir": node.get_logs_dir_path(),
                "driver_port": self._master.driver_port()}

    def _spawn(self, payload: dict, env: dict, standby: bool) -> None:
        task = payload["task"]
        workdir = Path(tempfile.mkdtemp(prefix=f"rbf-{task['task_id']}-"))
        payload = {**payload, "result_path": str(workdir / "result.json")}
        self._payload, self._proc = payload, None
        self._log = attempt_log(payload)
        _note(self._log, f"# ray-backfill run {task['run_id']}, {task['task_id']} attempt {task['attempt']}"
                         f"{' (standby)' if standby else ''}, started {time.strftime('%Y-%m-%dT%H:%M:%S%z')} "
                         f"on {os.uname().nodename}, {self._slot}")
        payload["master"] = self._master_for(payload)
        (workdir / "task.json").write_text(json.dumps(payload))
        # No preexec_fn: with one, CPython runs the at-fork handlers, and gRPC's close this actor's
        # connections (seen: "ActorUnavailableError ... Socket closed"). The worker arranges to die
        # with this process itself (ray_backfill.worker.die_with_parent).
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "ray_backfill.worker", *([STANDBY_FLAG] if standby else []),
             str(workdir / "task.json")],
            # TMPDIR: what the chunk's process and its JVMs put in the temp folder goes in the
            # attempt's own folder, removed after the attempt however it ends
            env={**os.environ, **env, SUPERVISOR_PID_ENV: str(os.getpid()), "TMPDIR": str(workdir)},
            start_new_session=True, stdin=subprocess.PIPE if standby else subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, encoding="utf-8", errors="replace",
        )
        self._pumping = threading.Thread(target=_pump, args=(self._proc.stdout, self._log), daemon=True)
        self._pumping.start()
        self._payload, self._spawned = payload, time.monotonic()

    def _end(self, failed: bool) -> None:
        """The slot's last attempt is over: its leftovers go, the slot is free for the next."""
        proc, payload = self._proc, self._payload
        self._proc, self._payload = None, None
        _clean_after(payload, proc.pid if proc is not None else None, failed, self._master, self._log)

    def standby(self, payload: dict, env: dict) -> int | None:
        """Start the attempt's process ahead of its turn; its pid (None if it could not start)."""
        with self._lock:
            self._cancelled.clear()
            if self._proc is None:
                try:
                    self._spawn(payload, env, standby=True)
                except Exception as exc:  # its turn starts it cold, and says why then
                    _note(self._log, f"# standby not started: {type(exc).__name__}: {exc}")
                    self._end(failed=True)
                    return None
            return self._proc.pid

    def run(self, payload: dict, env: dict, timeout_s: float | None) -> TaskResult:
        task = payload["task"]
        node_id = ray.get_runtime_context().get_node_id()
        with self._lock:
            self._cancelled.clear()
            proc = self._proc
            standby = proc is not None and proc.poll() is None and self._payload["task"] == task
            if standby:
                try:
                    proc.stdin.write("go\n")  # the standby's turn: its task begins
                    proc.stdin.close()
                except OSError:  # it died just now
                    standby = False
            if not standby:
                if proc is not None:
                    died = proc.poll() is not None  # its session start failed: keep why, cut
                    _kill_tree(proc)
                    self._end(failed=died)
                try:
                    self._spawn(payload, env, standby=False)
                except Exception as exc:  # the slot's master did not start: this attempt fails, is retried
                    self._end(failed=True)
                    return TaskResult(ok=False, error=f"{self._slot} could not start: {type(exc).__name__}: {exc}",
                                      node_id=node_id)
            proc, payload = self._proc, self._payload
        how = f"its standby (up {time.monotonic() - self._spawned:.0f}s)" if standby else "a new process"
        line = (f"[{task['task_id']}] attempt {task['attempt']} starting on node {node_id[:12]} in {how}, "
                f"{self._slot}")
        print(line, flush=True)
        _note(self._log, line)
        started = time.monotonic()
        queue_file = Path(payload["result_path"]).with_name(QUEUE_FILE)
        peak, sampled, watched = 0.0, 0.0, time.monotonic()
        outcome = None
        watch_master = self._master is not None and payload.get("master") is not None
        while proc.poll() is None:
            if time.monotonic() - sampled >= 1.0:  # memory changes slowly; reading a process tree costs CPU
                peak, sampled = max(peak, tree_rss_mb(proc.pid)), time.monotonic()
            if watch_master and time.monotonic() - watched >= MASTER_WATCH_S:
                watched = time.monotonic()
                if not self._master.alive():  # its executors died with it: Spark would wait for new ones forever
                    outcome = f"{self._slot}'s RayDP master died"
            if self._cancelled.is_set():
                outcome = "cancelled"
            elif not outcome and timeout_s and time.monotonic() - started > timeout_s:
                # the timeout counts the chunk's own work, not its time held up at the source limiter
                queued = queued_seconds(queue_file)
                if time.monotonic() - started - queued > timeout_s:
                    outcome = f"timed out after {timeout_s:.0f}s" + (
                        f" of work (and {queued:.0f}s queued at the source limiter)" if queued >= 1 else "")
            if outcome:
                _kill_tree(proc)
                break
            time.sleep(0.25)
        result_file = Path(payload["result_path"])
        if outcome:
            result = TaskResult(ok=False, error=outcome, cancelled=outcome == "cancelled")
        elif result_file.is_file():
            result = TaskResult.from_json(json.loads(result_file.read_text()))
        else:
            code = proc.returncode
            why = f"killed by signal {-code}" if code < 0 else f"exited with code {code} and no result"
            result = TaskResult(ok=False, error=f"chunk process {why}")
        result.node_id, result.peak_rss_mb = node_id, round(peak, 1)
        result.seconds = round(time.monotonic() - started, 2)
        result.worker_pid, result.standby = proc.pid, standby
        if self._pumping is not None:  # the output's last lines, before the result names the file
            self._pumping.join(timeout=5)
        result.log_path = str(self._log)
        with self._lock:
            if self._proc is proc:
                self._end(failed=not result.ok)  # the task and result files: read, no longer needed
        print(f"[{task['task_id']}] attempt {task['attempt']} {'succeeded' if result.ok else 'failed'} "
              f"in {result.seconds:.1f}s, log {self._log}", flush=True)
        return result

    @ray.method(enable_task_events=False)  # asked every second or so: kept out of the GCS's task events
    def phase(self) -> str:
        """What the attempt is doing now (the worker's last checkpoint), for the live progress."""
        payload = self._payload
        if payload is None or not payload.get("result_path"):
            return "starting"
        try:
            return Path(payload["result_path"]).with_name(PHASE_FILE).read_text() or "starting"
        except OSError:
            return "starting"

    def cancel(self) -> None:
        """Stop the attempt: a running one ends as cancelled; a waiting standby is torn down."""
        self._cancelled.set()
        with self._lock:
            if self._proc is not None and self._proc.poll() is None and self._proc.stdin is not None \
                    and not self._proc.stdin.closed:
                _kill_tree(self._proc)  # a standby that never got its turn
                self._end(failed=False)

    def shutdown(self) -> None:
        """The run is over: any attempt's process is ended and the slot's master stopped."""
        self._cancelled.set()
        with self._lock:
            if self._proc is not None:
                _kill_tree(self._proc)
                self._end(failed=False)
            if self._master is not None:
                self._master.stop()


def _remove_workdir(payload: dict | None) -> None:
    """Remove an attempt's temporary folder (its task and result files)."""
    if payload and payload.get("result_path"):
        shutil.rmtree(Path(payload["result_path"]).parent, ignore_errors=True)


@dataclass(eq=False)
class _Slot:
    """A supervisor actor of the run and what it holds now: nothing, a running attempt or a standby."""

    name: str
    actor: object
    node_id: str | None
    task: Task | None = None
    running: bool = False


@dataclass(eq=False)
class _Attempt:
    task: Task
    slot: _Slot
    ref: object

    @property
    def actor(self):
        return self.slot.actor

    @property
    def node_id(self) -> str | None:
        return self.slot.node_id


class RayExecutor(Executor[_Attempt]):
    """Fans task attempts out to the run's slot supervisors; at most `slots` attempts in flight."""

    name = "ray"

    def __init__(self, settings: Settings, run_id: str, *, address: str | None, parallelism: int | None,
                 chunk_timeout_s: float | None, standby: int | None = None, echo=print):
        self.settings = settings
        self.run_id = run_id
        self.address = address
        self.requested_parallelism = parallelism
        self.chunk_timeout_s = chunk_timeout_s
        self.echo = echo
        self.slots = 1
        self.requested_standby = standby
        self.standby = 0  # attempts started ahead beyond the free slots; --standby 0 starts none ahead at all
        self._pool: list[_Slot] = []  # the run's supervisors, created as attempts need them
        self._made = 0  # supervisors created (a lost one's successor takes the next number)
        self._master_configs: dict | None = None
        self._running = 0
        self._started_ray = False
        self._gcs = None
        self._metrics = None
        self._limiter = None
        self._limiter_ref: dict | None = None
        self._in_flight: Counter[str] = Counter()  # this run's attempts per node, now
        self._started: Counter[str] = Counter()  # and in all
        self.log_dir = run_log_dir(settings.catalog, run_id)
        self._phase_asked: dict[_Attempt, object] = {}  # an attempt's phase() call not yet answered
        self._phases: dict[_Attempt, str] = {}
        self._entered_at: float | None = None  # when the run's executor started (epoch s)
        self._finished_logs: list[str] = []  # attempt logs no longer written, oldest first
        self._failed_logs: list[str] = []

    def __enter__(self) -> "RayExecutor":
        dashboard = None
        self._entered_at = time.time()
        if not ray.is_initialized():
            # the attempts' output goes to their log files and their actors' logs (the dashboard),
            # not to this console; nor does the notice that a local cluster has token auth (Ray's default)
            notice = logging.getLogger("ray._private.authentication.authentication_token_setup")
            level, _ = notice.level, notice.setLevel(logging.ERROR)
            address = self.address or os.environ.get("RAY_ADDRESS") or None
            bounds = {}
            if not address:  # a local cluster of this run's: Ray's state bounded (ray_backfill/ray_bounds.py)
                bounds["_system_config"] = dict(SYSTEM_CONFIG)
                for key, value in DAEMON_ENV.items():
                    os.environ.setdefault(key, value)  # read by the daemons ray.init starts
            try:
                context = ray.init(address=address, namespace=f"rbf-{self.run_id}", log_to_driver=False,
                                   include_dashboard=None, logging_level=logging.WARNING, **bounds)
            finally:
                notice.setLevel(level)
            dashboard = getattr(context, "dashboard_url", None)
            self._started_ray = True
        try:  # before any chunk: a catalog or warehouse the nodes' hosts cannot share is refused
            check_cluster_catalog(self.settings.catalog, node_hosts())
        except BaseException:
            self.__exit__()
            raise
        self._gcs = ray.get_runtime_context().gcs_address
        self.slots, why = self.default_parallelism()
        if self.requested_parallelism:
            if self.requested_parallelism > self.slots:
                self.echo(f"warning: --parallelism {self.requested_parallelism} is more than the cluster holds; "
                          f"capped to {self.slots} ({why})")
            else:
                self.slots, why = self.requested_parallelism, "--parallelism"
        self.standby, standby_why = self.default_standby() if self.requested_standby is None else (
            self.requested_standby, "--standby")
        shown = f", dashboard http://{dashboard}" if dashboard else ""
        ahead = "no standby sessions" if self.requested_standby == 0 else (
            f"standby sessions in free slots + {self.standby} ({standby_why})")
        self.echo(f"ray cluster {self._gcs}{shown}: parallelism {self.slots} ({why}), {ahead}")
        if self.settings.spark.mode == "raydp":
            self._master_configs = _master_configs(self.settings)
        source = self.settings.source
        if source.kind == "open-meteo" and not source.limits.is_unlimited:
            from ray_backfill.limiter import start_limiter

            # a lease outlives no request: the HTTP timeout plus a margin, then it is reclaimed
            self._limiter, name = start_limiter(self.run_id, source.limits, lease_ttl_s=source.timeout_s + 30)
            self._limiter_ref = {"name": name, "namespace": ray.get_runtime_context().namespace}
            self.echo(f"source limiter {name}: {source.limits.describe()}")
        return self

    def __exit__(self, *exc) -> None:
        self.upcoming([])
        self._close_pool()
        if self._limiter is not None:
            with contextlib.suppress(Exception):
                ray.kill(self._limiter)
        if self._started_ray:
            session_dir = _session_dir()
            ray.shutdown()
            # the local cluster this run started is gone: what it kept on disk but its logs goes too
            remove_session_files(session_dir)
        # the last sessions' executors end a moment after their sessions: wait for their copies too
        sweep_native_copies(wait_s=END_SWEEP_WAIT_S, since=self._entered_at)

    def default_parallelism(self) -> tuple[int, str]:
        """Chunks in flight: the cluster's CPUs ÷ executor cores, capped by memory; also the most
        `--parallelism` may ask for (more would queue JVMs for CPUs or run the nodes out of memory)."""
        cpus, mem_mb = _cluster_cpus_and_memory_mb()
        by_cpu = max(1, cpus // self.settings.spark.executor_cores)
        by_mem = max(1, int(mem_mb // CHUNK_MEMORY_MB)) if mem_mb else by_cpu
        n = min(by_cpu, by_mem)
        return n, (f"{cpus} CPUs / {self.settings.spark.executor_cores} executor cores, {mem_mb / 1024:.0f} GiB "
                   f"/ {CHUNK_MEMORY_MB / 1024:.1f} GiB per chunk")

    def default_standby(self) -> tuple[int, str]:
        """Standbys beyond the free slots: one per slot where the cluster's CPUs would otherwise idle.

        Starting a session ahead only pays with spare cores; on a cluster whose CPUs the running
        chunks already fill, it would slow them down (docs/operations.md#standby-sessions). Standbys
        count against the memory cap like running chunks.
        """
        cpus, mem_mb = _cluster_cpus_and_memory_mb()
        room = max(0, int(mem_mb // CHUNK_MEMORY_MB) - self.slots) if mem_mb else self.slots
        needed = 2 * self.slots * self.settings.spark.executor_cores
        if cpus < needed:
            return 0, f"{cpus} CPUs, fewer than {needed} to start ahead"
        return min(self.slots, room), f"{cpus} CPUs"

    def upcoming(self, tasks: list[Task]) -> None:
        """Keep standbys for the next attempts that fit: free slots plus `standby`; drop the rest."""
        room = 0 if self.requested_standby == 0 else max(0, self.slots + self.standby - self._running)
        wanted = {t.task_id: t for t in tasks[:room]}
        for slot in self._pool:
            if slot.task is not None and not slot.running and wanted.get(slot.task.task_id) != slot.task:
                self._drop_standby(slot)
        held = {slot.task.task_id for slot in self._pool if slot.task is not None and not slot.running}
        for task in wanted.values():
            if task.task_id not in held:
                slot = self._free_slot()
                if slot is None:
                    break
                slot.task = task
                self._in_flight[slot.node_id] += 1
                slot.actor.standby.remote(self._task_payload(task), self._env())

    def _drop_standby(self, slot: _Slot) -> None:
        """A standby whose turn will not come: its process and folder go; its slot is free again."""
        try:
            ray.get(slot.actor.cancel.remote(), timeout=30)
        except Exception:  # the supervisor is gone or stuck: a fresh one will take its place
            self._retire(slot)
        self._done_on(slot.node_id)
        slot.task = None

    def _free_slot(self) -> _Slot | None:
        """A supervisor holding nothing, on the node with fewest of the run's attempts; a new one
        while the run has fewer than its slots plus standbys; else None."""
        free = [slot for slot in self._pool if slot.task is None]
        if free:
            return min(free, key=lambda slot: (self._in_flight.get(slot.node_id, 0), self._started.get(slot.node_id, 0)))
        if len(self._pool) >= self.slots + self.standby:
            return None
        return self._new_supervisor()

    def _new_supervisor(self) -> _Slot:
        """A supervisor actor for a slot, named after it, on the node with fewest of this run's attempts."""
        name = f"slot-{self._made}"
        self._made += 1
        # The chunk's process (its Spark driver) runs where its supervisor runs: spread the supervisors
        # over the nodes ourselves. Measured on Ray 2.60 with num_cpus=0 actors: SPREAD often put two
        # actors created together on one node, and soft node affinity was ignored for about half the
        # actors; hard affinity is exact. A node lost takes its supervisors with it: their attempts
        # fail and are retried on successors created among the nodes alive then.
        on_nodes = Counter(slot.node_id for slot in self._pool)
        node = pick_node(_cpu_nodes(), on_nodes, self._started)
        strategy = NodeAffinitySchedulingStrategy(node, soft=False) if node else "SPREAD"
        actor = SlotSupervisor.options(name=name, lifetime="non_detached", scheduling_strategy=strategy).remote(
            name, f"rbf-{self.run_id}-{name}", self._master_configs, str(self.log_dir) if self.log_dir else None)
        slot = _Slot(name, actor, node)
        self._pool.append(slot)
        return slot

    def _retire(self, slot: _Slot) -> None:
        """Take a supervisor out of the run (it died, or the run is stopping): its actor is killed."""
        with contextlib.suppress(Exception):
            ray.kill(slot.actor)
        if slot in self._pool:
            self._pool.remove(slot)

    def _close_pool(self) -> None:
        """The run is over: each supervisor ends its attempt and its master, then goes."""
        asked = []
        for slot in self._pool:
            with contextlib.suppress(Exception):
                asked.append(slot.actor.shutdown.remote())
        with contextlib.suppress(Exception):
            ray.wait(asked, num_returns=len(asked), timeout=60)
        for slot in list(self._pool):
            self._retire(slot)
        # the supervisors' own Ray log files on this node, now that they have ended
        node = getattr(ray._private.worker, "_global_node", None)
        if node is not None:
            tidy_ray_logs(node.get_logs_dir_path(), [ray.get_runtime_context().get_job_id()], [], keep=False)

    def observe(self, record, task) -> None:
        """Export progress with ray.util.metrics: tasks by state, rows written, task seconds."""
        if self._metrics is None:
            self._metrics = _Metrics()
        self._metrics.observe(self.run_id, record, task)

    def _task_payload(self, task: Task) -> dict:
        return {"task": task.to_json(), "settings": settings_to_dict(self.settings), "limiter": self._limiter_ref,
                "log_dir": str(self.log_dir) if self.log_dir else None}

    def phases(self, handles: list[_Attempt]) -> dict[str, str]:
        """Each attempt's phase as its supervisor last told it (task id -> phase); asks again
        without waiting, so the answer is at most one call old."""
        for h in list(self._phase_asked):
            if h not in handles:
                self._phase_asked.pop(h)
                self._phases.pop(h, None)
        asked = {ref: h for h, ref in self._phase_asked.items()}
        if asked:
            ready, _ = ray.wait(list(asked), num_returns=len(asked), timeout=0)
            for ref in ready:
                h = asked[ref]
                with contextlib.suppress(Exception):
                    self._phases[h] = ray.get(ref)
                del self._phase_asked[h]
        for h in handles:
            if h not in self._phase_asked:
                with contextlib.suppress(Exception):
                    self._phase_asked[h] = h.actor.phase.remote()
        return {h.task.task_id: self._phases.get(h, "starting") for h in handles}

    def limiter_snapshot(self) -> dict | None:
        """The shared limiter's limits and counters, for the run report."""
        if self._limiter is None:
            return None
        return ray.get(self._limiter.snapshot.remote(), timeout=30)

    def _env(self) -> dict:
        env = {"RAY_ADDRESS": self._gcs, **secret_env(self.settings)}
        for var in ("RAY_BACKFILL_FAULTS", "RAY_BACKFILL_FAULT_DRILLS", "RAY_AUTH_MODE", "PYTHONPATH"):
            if os.environ.get(var):
                env[var] = os.environ[var]
        return env

    def start(self, task: Task) -> _Attempt:
        slot = next((slot for slot in self._pool if slot.task == task and not slot.running), None)
        if slot is None:
            for other in self._pool:  # a standby held for an earlier try of this task
                if other.task is not None and not other.running and other.task.task_id == task.task_id:
                    self._drop_standby(other)
            slot = self._free_slot()
            if slot is None:  # every slot holds a standby for a later task: the latest gives way
                self._drop_standby(next(s for s in reversed(self._pool) if not s.running))
                slot = self._free_slot()
            slot.task = task
            self._in_flight[slot.node_id] += 1
        slot.running = True
        self._started[slot.node_id] += 1
        self._running += 1
        # Not `.options(name=task_id)`: Ray keeps a metric series per task name (`ray_tasks{Name=…}` in
        # the driver, the process title in the node's agent), one more per chunk for the run's life
        ref = slot.actor.run.remote(self._task_payload(task), self._env(), self.chunk_timeout_s)
        return _Attempt(task, slot, ref)

    def _done_on(self, node_id: str | None) -> None:
        if node_id and self._in_flight[node_id] > 0:
            self._in_flight[node_id] -= 1

    def _done(self, attempt: _Attempt) -> None:
        self._running = max(0, self._running - 1)
        self._done_on(attempt.node_id)
        attempt.slot.task, attempt.slot.running = None, False

    def wait(self, handles: list[_Attempt], timeout_s: float) -> list[tuple[_Attempt, TaskResult]]:
        if not handles:
            return []
        by_ref = {h.ref: h for h in handles}
        ready, _ = ray.wait(list(by_ref), num_returns=len(by_ref), timeout=timeout_s)
        out = []
        for ref in ready:
            attempt = by_ref[ref]
            try:
                result = ray.get(ref)
            except Exception as exc:  # the supervisor itself died (node lost, killed)
                result = TaskResult(ok=False, error=f"{attempt.slot.name}, supervising {attempt.task.task_id}, "
                                                    f"died: {type(exc).__name__}")
                self._retire(attempt.slot)
            self._done(attempt)
            if self._limiter is not None and not result.ok:
                # a chunk that died mid-request holds leases nobody will release
                self._limiter.release_holder.remote(lease_holder(attempt.task.task_id, attempt.task.attempt))
            if result.log_path:
                (self._finished_logs if result.ok else self._failed_logs).append(Path(result.log_path).name)
            out.append((attempt, result))
        if ready:  # the run's attempt logs in all stay under their cap: finished ones only, failed ones last
            enforce_run_cap(self.log_dir, [*self._finished_logs, *self._failed_logs])
        return out

    def cancel(self, handles: list[_Attempt]) -> None:
        """Ask each supervisor to kill its attempt's process tree, wait for it, then remove the actors."""
        for h in handles:
            with contextlib.suppress(Exception):
                h.actor.cancel.remote()
        with contextlib.suppress(Exception):
            ray.wait([h.ref for h in handles], num_returns=len(handles), timeout=20)
        for h in handles:
            self._done(h)
            self._retire(h.slot)


# The master's two JVMs (gateway and actor) hold no data: without a bound, the actor's heap grew
# from ~300 to ~370 MiB over a 500-chunk soak (a JVM's default heap is a quarter of the machine)
MASTER_HEAP = "-Xmx256m"


def _master_configs(settings: Settings) -> dict:
    """The settings each slot's RayDP master starts with (ray_backfill/slot_master.py): the run's
    jars for its executors; its JVM's options as every session JVM's, quick start, a bounded heap,
    and the RayDP class-data archive when one exists (ray_backfill/cds.py)."""
    from ray_backfill import cds
    from ray_backfill.jars import manifest_jars
    from ray_backfill.jvm import EVERY_JVM, QUICK_START_JVM
    from ray_backfill.slot_master import master_configs

    jars = manifest_jars()
    options = f"{EVERY_JVM} {QUICK_START_JVM} {MASTER_HEAP}"
    if settings.spark.class_data_sharing:
        options += f" {cds.shared_archive_options('raydp', cds.raydp_classpath(jars))}"
    return master_configs(jars, options.strip())


class _Metrics:
    """The run's metrics on this node's metrics port (the dashboard charts them with Prometheus)."""

    def __init__(self) -> None:
        from ray.util.metrics import Counter, Gauge, Histogram

        tags = ("run_id", "stage")
        self.tasks = Gauge("ray_backfill_tasks", "tasks of a run by stage and state", tag_keys=(*tags, "state"))
        self.rows = Counter("ray_backfill_rows_written", "rows committed by succeeded tasks", tag_keys=tags)
        self.seconds = Histogram("ray_backfill_task_seconds", "seconds per task attempt",
                                 boundaries=[5, 10, 20, 40, 80, 160, 320, 640, 1280], tag_keys=tags)

    def observe(self, run_id: str, record, task) -> None:
        from ray_backfill.ledger import ChunkStatus

        for stage in {t.stage for t in record.tasks}:
            for state in ChunkStatus:
                n = sum(1 for t in record.tasks if t.stage == stage and t.status == state)
                self.tasks.set(n, tags={"run_id": run_id, "stage": stage, "state": state.value})
        if task.status.is_terminal() or task.status == ChunkStatus.PENDING and task.attempts:
            self.seconds.observe(task.seconds, tags={"run_id": run_id, "stage": task.stage})
        if task.status == ChunkStatus.SUCCEEDED and task.rows:
            self.rows.inc(task.rows, tags={"run_id": run_id, "stage": task.stage})


def pick_node(nodes: Sequence[str], in_flight: Mapping[str, int], started: Mapping[str, int]) -> str | None:
    """The node for the next attempt: fewest of the run's attempts in flight, then fewest started.

    Ties go to the earlier node in `nodes`; None when there is no node to choose from.
    """
    return min(nodes, key=lambda node: (in_flight.get(node, 0), started.get(node, 0)), default=None)


def _session_dir() -> str | None:
    """The session folder of the Ray cluster this process started (not one it joined), if any."""
    node = getattr(ray._private.worker, "_global_node", None)
    return node.get_session_dir_path() if node is not None and node.head else None


def _cluster_cpus_and_memory_mb() -> tuple[int, float]:
    """The connected cluster's CPUs and memory (MiB; 0 when Ray reports none)."""
    res = ray.cluster_resources()
    return int(res.get("CPU", 1)), res.get("memory", 0) / 2**20


def _cpu_nodes() -> list[str]:
    """Alive nodes with CPUs, by id: a node without CPUs is one its operator keeps free of work."""
    return sorted(n["NodeID"] for n in ray.nodes() if n.get("Alive") and n.get("Resources", {}).get("CPU", 0) > 0)


def node_hosts() -> list[str]:
    """The address of every alive node of the connected cluster (several nodes may share one)."""
    return [node["NodeManagerAddress"] for node in ray.nodes() if node.get("Alive")]
