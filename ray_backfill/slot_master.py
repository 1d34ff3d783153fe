"""RayDP's app master, kept for a slot of a run (docs/operations.md#master-per-slot).

A RayDP session is three things: the Spark driver (the chunk's own JVM), its executors (Ray Java
actors), and RayDP's app master, a cluster manager: a gateway JVM that joins Ray as a Java driver
and a `RayAppMaster` Java actor that creates the executors an application asks for. The driver and
the executors are the chunk's isolated session and serve one chunk only. The master holds no chunk
data; like Spark standalone's master it outlives applications, so a slot keeps one for the run and
each chunk's driver registers with it (`spark.master = ray://…`). That spares every chunk a master
JVM, a Java Ray driver and a Ray job of its own (CPU and the GCS's per-job records).

The master serves one application at a time (a registration replaces the last), and it neither
ends nor names apart an ended application's executors (Ray actors named `raydp-executor-<n>`,
numbered from 0 for every application, restarted by Ray when they die): `end_application` kills
them after each attempt, before the next may register. It is restarted when its memory passes
`MASTER_RSS_LIMIT_MB`, or when it died; an attempt in flight when it dies fails and is retried.

Runs inside the slot's supervisor actor (ray_backfill/executors/ray.py): the gateway JVM is a
child of that process and ends with it (its stdin is a pipe from it).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shlex
import shutil
import struct
import subprocess
import tempfile
import time
from pathlib import Path

log = logging.getLogger(__name__)

MASTER_ACTOR = "RAY_APP_MASTER"  # RayAppMaster.ACTOR_NAME, fixed per namespace
EXECUTOR_PREFIX = "raydp-executor-"  # RayExecutorUtils.createExecutorActor
# Restart the master when its two JVMs (gateway and actor) hold more than this: measured at ~420 MiB
# together after start and flat over a run (docs/operations.md#master-per-slot).
MASTER_RSS_LIMIT_MB = 900.0
# ... and after this many applications. The master's actor owns every executor actor it created, and
# Ray keeps a dead actor's owner-side reference, and a call from the GCS waiting for it to go, until
# the owner ends (one per executor: 173 waiting calls after 173 soak chunks); a fresh master frees them.
MASTER_MAX_APPLICATIONS = 50
GATEWAY_START_TIMEOUT_S = 120.0
EXECUTOR_GONE_TIMEOUT_S = 30.0


def master_configs(jars: list[str], java_options: str) -> dict[str, str]:
    """The settings RayDP's master starts with: its own JVM options, and the class path its
    executors start on (the run's jars, then RayDP's, Spark's and Ray's, as RayDP orders them).

    Only what the master reads: it hands every other setting to its actor's JVM as `-Dkey=value`,
    and reads `spark.executor.instances` as a cap on executors for every application it serves
    (each application asks for its own number). No catalog setting, so no secret, ever.
    """
    from raydp import versions
    from raydp.spark.ray_cluster_master import (
        RAY_LOG4J_CONFIG_FILE_NAME,
        SPARK_JAVAAGENT,
        SPARK_LOG4J_CONFIG_FILE_NAME,
        SPARK_RAY_LOG4J_FACTORY_CLASS_KEY,
    )

    return {
        SPARK_JAVAAGENT: raydp_agent_jar(),
        SPARK_RAY_LOG4J_FACTORY_CLASS_KEY: versions.RAY_LOG4J_VERSION,
        SPARK_LOG4J_CONFIG_FILE_NAME: os.environ.get("SPARK_LOG4J_CONFIG_FILE_NAME",
                                                     versions.SPARK_LOG4J_CONFIG_FILE_NAME_DEFAULT),
        RAY_LOG4J_CONFIG_FILE_NAME: os.environ.get("RAY_LOG4J_CONFIG_FILE_NAME",
                                                   versions.RAY_LOG4J_CONFIG_FILE_NAME_DEFAULT),
        "spark.ray.raydp_app_master.extraJavaOptions": java_options,
        "raydp.executor.extraClassPath": ":".join(jars),
    }


def raydp_agent_jar() -> str:
    """RayDP's Java agent (every RayDP JVM starts with it: it routes their logging)."""
    import glob

    import raydp

    return glob.glob(os.path.join(os.path.dirname(raydp.__file__), "jars", "raydp-agent*.jar"))[0]


class SlotMaster:
    """One RayDP app master in the Ray namespace `namespace` (one per slot: the actor's name is fixed)."""

    def __init__(self, namespace: str, configs: dict[str, str], log_path: Path | None = None,
                 rss_limit_mb: float = MASTER_RSS_LIMIT_MB,
                 max_applications: int = MASTER_MAX_APPLICATIONS) -> None:
        self.namespace = namespace
        self.configs = dict(configs)
        self.log_path = log_path
        self.rss_limit_mb = rss_limit_mb
        self.max_applications = max_applications
        self.starts = 0  # how many times a master was started (a restart counts)
        self.served = 0  # applications the running master was handed out for (ensure)
        self.url: str | None = None
        self._master = None  # raydp's RayDPSparkMaster, run in this process
        self._actor_pid: int | None = None
        self._last_driver_port: int | None = None

    # --- life cycle -------------------------------------------------------------------------
    def ensure(self) -> tuple[str, str]:
        """The master's URL for one more application, starting it when there is none, it died, it
        outgrew its memory bound or served its number of applications; and why it was (re)started
        ("" when it was kept)."""
        why = ""
        if self._master is None:
            why = "start"
        elif not self.alive():
            why = "its master had died"
        elif self.served >= self.max_applications:
            why = f"its master served {self.served} applications"
        else:
            rss = self.rss_mb()
            if rss > self.rss_limit_mb:
                why = f"its master held {rss:.0f} MiB, over {self.rss_limit_mb:.0f}"
        if why:
            self.stop()
            self._start()
            self.served = 0
        self.served += 1
        return self.url, why

    def _start(self) -> None:
        import ray
        from raydp.spark.ray_cluster_master import RayDPSparkMaster

        namespace, log_path = self.namespace, self.log_path

        class Master(RayDPSparkMaster.__ray_metadata__.modified_class):
            def _generate_ray_configs(self):
                options = json.loads(super()._generate_ray_configs())
                options["ray.job.namespace"] = namespace  # the slot's own: the master's actor name is fixed
                return json.dumps(options)

            def _launch_gateway(self, class_path, popen_kwargs=None):
                return _launch_gateway(self._configs, class_path, log_path)

        master = Master(self.configs)
        try:
            master.start_up()
            self.url = master.get_master_url()
        except BaseException:
            with contextlib.suppress(Exception):
                _stop_master(master)
            raise
        self._master = master
        self.starts += 1
        self._actor_pid = None
        with contextlib.suppress(Exception):
            info = _actor_info(ray.get_actor(MASTER_ACTOR, namespace=namespace))
            if info.get("Address", {}).get("NodeID") == ray.get_runtime_context().get_node_id():
                self._actor_pid = info.get("Pid") or None  # measured only where it runs on this node

    def alive(self) -> bool:
        """Whether the gateway JVM runs and the master actor is alive."""
        if self._master is None or self._master._gateway is None:
            return False
        if self._master._gateway.proc.poll() is not None:
            return False
        import ray

        try:
            handle = ray.get_actor(MASTER_ACTOR, namespace=self.namespace)
        except ValueError:
            return False
        return _actor_info(handle).get("State") == "ALIVE"

    def stop(self) -> None:
        """Stop the master: its actor, the gateway JVM (and with that JVM's job, any executor left);
        then its processes' Ray log files on this node go (ray_backfill/logs.py)."""
        pids = self.pids()
        master, self._master, self.url = self._master, None, None
        if master is None:
            return
        import ray

        from ray_backfill.logs import tidy_ray_logs

        logs_dir = Path(ray._private.worker._global_node.get_logs_dir_path())
        # its gateway's Ray log file is named after its job: java-core-driver-<job>ff…_<pid>.log
        jobs = [f.name[len("java-core-driver-"):][:8] for pid in pids[:1]
                for f in logs_dir.glob(f"java-core-driver-*_{pid}.log")]
        _stop_master(master)
        tidy_ray_logs(logs_dir, jobs, pids, keep=False)

    # --- between applications ---------------------------------------------------------------
    def driver_port(self) -> int:
        """A free port for the next application's driver, never the last one's: the master ignores
        a registration from the address it already serves (RayAppMaster.registerApplication)."""
        import socket

        while True:
            with socket.socket() as probe:
                probe.bind(("", 0))
                port = probe.getsockname()[1]
            if port != self._last_driver_port:
                self._last_driver_port = port
                return port

    def end_application(self, most: int = 64) -> list[int]:
        """Kill the executors the last application left (a stopped Spark driver leaves its executor
        actors alive, idle and holding their CPUs); wait until their names are free. Their pids."""
        import ray

        killed, pids = [], []
        misses = 0
        for n in range(most):
            name = f"{EXECUTOR_PREFIX}{n}"
            try:
                handle = ray.get_actor(name, namespace=self.namespace)
            except ValueError:
                misses += 1
                if misses >= 4:  # ids count up from 0 per application; a restarted one takes the next
                    break
                continue
            misses = 0
            info = _actor_info(handle)
            if info.get("Pid"):
                pids.append(int(info["Pid"]))
            with contextlib.suppress(Exception):
                ray.kill(handle, no_restart=True)
            killed.append(name)
        deadline = time.monotonic() + EXECUTOR_GONE_TIMEOUT_S
        for name in killed:
            while time.monotonic() < deadline:
                try:
                    ray.get_actor(name, namespace=self.namespace)
                except ValueError:
                    break
                time.sleep(0.1)
        return pids

    def rss_mb(self) -> float:
        """The master's memory on this node: its gateway JVM and, when it runs here, its actor's JVM."""
        import psutil

        total = 0.0
        for pid in self.pids():
            with contextlib.suppress(psutil.Error):
                total += psutil.Process(pid).memory_info().rss / 2**20
        return total

    def pids(self) -> list[int]:
        """The master's processes on this node (its gateway JVM, its actor's JVM when it runs here)."""
        out = [self._master._gateway.proc.pid] if self._master is not None and self._master._gateway else []
        return out + ([self._actor_pid] if self._actor_pid else [])


def _actor_info(handle) -> dict:
    """The GCS's record of an actor (its state and pid), {} when there is none."""
    import ray

    with contextlib.suppress(Exception):
        return ray._private.state.actors(handle._actor_id.hex()) or {}
    return {}


def _stop_master(master) -> None:
    """RayDP's own stop (the actor, then the gateway's Ray connection), then the gateway JVM reaped."""
    gateway = getattr(master._gateway, "proc", None)
    with contextlib.suppress(Exception):
        master.stop(cleanup_data=False)  # True would end this process (ray.actor.exit_actor)
    if gateway is not None:
        with contextlib.suppress(Exception):
            gateway.stdin.close()
        with contextlib.suppress(Exception):
            gateway.wait(timeout=15)
        if gateway.poll() is None:
            gateway.kill()
            gateway.wait(timeout=5)


def _launch_gateway(configs: dict[str, str], class_path: str, log_path: Path | None):
    """RayDP's gateway JVM (raydp/spark/ray_cluster_master.py `_launch_gateway`), started without a
    `preexec_fn`: in a Ray actor, CPython's at-fork handlers would close its gRPC connections. Its
    own session instead keeps a terminal's Ctrl-C from it; its output goes to `log_path`."""
    import ray
    from py4j.java_gateway import GatewayParameters, JavaGateway
    from raydp import versions
    from raydp.spark.ray_cluster_master import (
        RAY_LOG4J_CONFIG_FILE_NAME,
        RAYDP_APPMASTER_EXTRA_JAVA_OPTIONS,
        SPARK_JAVAAGENT,
        SPARK_RAY_LOG4J_FACTORY_CLASS_KEY,
    )

    logging_dir = ray._private.worker._global_node.get_logs_dir_path()
    command = [shutil.which("java") or "java", *shlex.split(configs.get(RAYDP_APPMASTER_EXTRA_JAVA_OPTIONS, ""))]
    command += [f"-javaagent:{configs[SPARK_JAVAAGENT]}", f"-Dray.logging.dir={logging_dir}",
                f"-D{SPARK_RAY_LOG4J_FACTORY_CLASS_KEY}={configs[SPARK_RAY_LOG4J_FACTORY_CLASS_KEY]}",
                f"-D{versions.RAY_LOG4J_CONFIG_FILE_NAME_KEY}={configs[RAY_LOG4J_CONFIG_FILE_NAME]}",
                "-cp", class_path, "org.apache.spark.deploy.raydp.AppMasterEntryPoint"]
    conn_dir = tempfile.mkdtemp(prefix="rbf-master-")
    out = open(log_path, "a", encoding="utf-8") if log_path else subprocess.DEVNULL  # noqa: SIM115
    try:
        conn_file = os.path.join(conn_dir, "conn.info")
        env = {**os.environ, "_RAYDP_APPMASTER_CONN_INFO_PATH": conn_file}
        proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=out, stderr=subprocess.STDOUT, env=env,
                                start_new_session=True)
        deadline = time.monotonic() + GATEWAY_START_TIMEOUT_S
        while proc.poll() is None and not os.path.isfile(conn_file) and time.monotonic() < deadline:
            time.sleep(0.1)
        if not os.path.isfile(conn_file):
            with contextlib.suppress(Exception):
                proc.kill()
                proc.wait(timeout=5)
            raise RuntimeError("RayDP's master gateway JVM " + (
                f"exited with code {proc.returncode}" if proc.poll() is not None else "did not start in time")
                + (f" (its output: {log_path})" if log_path else ""))
        with open(conn_file, "rb") as info:
            port = struct.unpack("!i", info.read(4))[0]
    finally:
        shutil.rmtree(conn_dir, ignore_errors=True)
        if log_path:
            out.close()
    gateway = JavaGateway(gateway_parameters=GatewayParameters(port=port, auto_convert=True))
    gateway.proc = proc
    return gateway
