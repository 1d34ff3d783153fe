"""Where the CPU of a run goes: every process on the machine sampled from /proc, grouped by role.

A `CpuSampler` thread reads each process's user + system time every `every_s` seconds and keeps
the last value it saw, so a process that lives between two samples is missed and one that exits
loses at most its last interval; the machine-wide busy time from /proc/stat is kept beside it as
the check. Processes are grouped by what they are in a ray-backfill run (the chunk's Python
process, its Spark driver JVM, RayDP's gateway JVM, Ray's Java workers, the actors' Python
workers, Ray's daemons), found from their command lines.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field

import psutil

TICKS = os.sysconf("SC_CLK_TCK")

ROLES = (
    "driver (ray-backfill CLI)",
    "chunk process (python)",
    "Spark driver JVM",
    "RayDP gateway JVM",
    "Ray Java worker: Spark executor",
    "Ray Java worker: RayDP app master",
    "actor: SlotSupervisor",
    "actor: RayDPSparkMaster",
    "actor: other Python",
    "Ray daemons",
    "other",
)


@dataclass
class Seen:
    """One process as sampled: its role, first and last CPU seconds, first and last sighting."""

    pid: int
    ppid: int
    cmd: str
    name: str
    cpu_first: float
    cpu_last: float
    t_first: float
    t_last: float
    existed_before: bool


CPUACCT = "/sys/fs/cgroup/cpuacct"  # cgroup v1 CPU accounting, where this machine has it
CPU = "/sys/fs/cgroup/cpu"  # cgroup v1 CPU scheduling


def take_the_cpu_first() -> bool:
    """Move this process (and so what it starts later) into a cgroup with the most CPU shares.

    Work running beside a benchmark then gets CPU only when the benchmark leaves some: a best
    effort at an idle machine (caches and memory bandwidth are still shared). Ray starts its
    workers at nice 15, which the nice 19 of other work does not outrank by much. False where the
    cgroup cannot be made (not root, no v1 cpu hierarchy).
    """
    group = os.path.join(CPU, "rbf-bench")
    try:
        os.makedirs(group, exist_ok=True)
        with open(os.path.join(group, "cpu.shares"), "w") as handle:
            handle.write("262144")
        with open(os.path.join(group, "cgroup.procs"), "w") as handle:
            handle.write(str(os.getpid()))
    except OSError:
        return False
    return True


class CgroupCpu:
    """CPU-seconds of one command and everything it starts (Ray's daemons, workers, JVMs), exactly.

    A cgroup (v1 cpuacct) of its own that the command joins before exec; its descendants stay in
    it even when they daemonize, and other work on the machine is not counted. `available()` is
    False without a writable cpuacct hierarchy (not root, cgroup v2 only): then use
    `machine_busy_seconds` on an idle machine.
    """

    def __init__(self, name: str):
        self.path = os.path.join(CPUACCT, f"rbf-bench-{os.getpid()}-{name}")

    @staticmethod
    def available() -> bool:
        return os.path.isdir(CPUACCT) and os.access(CPUACCT, os.W_OK)

    def __enter__(self) -> "CgroupCpu":
        os.makedirs(self.path, exist_ok=True)
        return self

    def join(self) -> None:
        """Move the calling process in (a subprocess's preexec_fn)."""
        with open(os.path.join(self.path, "cgroup.procs"), "w") as handle:
            handle.write(str(os.getpid()))

    def seconds(self) -> float:
        with open(os.path.join(self.path, "cpuacct.usage")) as handle:
            return int(handle.read()) / 1e9

    def __exit__(self, *exc) -> None:
        try:
            os.rmdir(self.path)  # fails while a process is left in it: the caller sees that in ps
        except OSError:
            pass


def machine_busy_seconds() -> float:
    """CPU-seconds the machine spent busy since boot (all cores), from /proc/stat."""
    with open("/proc/stat") as handle:
        parts = handle.readline().split()[1:]
    values = [int(v) for v in parts]
    idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
    return (sum(values[:8]) - idle) / TICKS


@dataclass(eq=False)
class CpuSampler(threading.Thread):
    """Samples every process's CPU time until `stop()`; `driver_pid` marks the run's own CLI process."""

    driver_pid: int | None = None
    every_s: float = 0.2
    seen: dict[tuple[int, float], Seen] = field(default_factory=dict)
    busy_first: float = 0.0
    busy_last: float = 0.0
    wall_s: float = 0.0

    def __post_init__(self) -> None:
        threading.Thread.__init__(self, daemon=True)
        self._stop_event = threading.Event()
        self._started_at = 0.0

    def run(self) -> None:
        self._started_at = time.monotonic()
        self.busy_first = machine_busy_seconds()
        self._sample(first=True)
        while not self._stop_event.wait(self.every_s):
            self._sample(first=False)
        self._sample(first=False)
        self.busy_last = machine_busy_seconds()
        self.wall_s = time.monotonic() - self._started_at

    def stop(self) -> "CpuSampler":
        self._stop_event.set()
        self.join(30)
        return self

    def _sample(self, first: bool) -> None:
        now = time.monotonic() - self._started_at
        own = os.getpid()
        for proc in psutil.process_iter(["pid", "ppid", "name", "cmdline", "create_time", "cpu_times"]):
            info = proc.info
            if info["pid"] == own or info["cpu_times"] is None:
                continue
            cpu = info["cpu_times"].user + info["cpu_times"].system
            key = (info["pid"], info["create_time"])
            seen = self.seen.get(key)
            if seen is None:
                cmd = " ".join(info["cmdline"] or [])
                self.seen[key] = Seen(info["pid"], info["ppid"] or 0, cmd, info["name"] or "",
                                      cpu if first else 0.0, cpu, now, now, first)
            else:
                seen.cpu_last, seen.t_last = cpu, now
                # Ray's Java workers start as `python setup_worker.py` and exec java in the same process
                seen.cmd, seen.name = " ".join(info["cmdline"] or []) or seen.cmd, info["name"] or seen.name

    def by_role(self) -> dict[str, dict]:
        """CPU-seconds, process count and summed lifetime per role, over the sampled span."""
        pids = {s.pid: s for s in self.seen.values()}
        out = {role: {"cpu_s": 0.0, "processes": 0, "alive_s": 0.0} for role in ROLES}
        for s in self.seen.values():
            used = s.cpu_last - s.cpu_first
            if used <= 0 and s.existed_before:
                continue
            role = classify(s, pids, self.driver_pid)
            out[role]["cpu_s"] += used
            out[role]["processes"] += 1
            out[role]["alive_s"] += s.t_last - s.t_first
        total = sum(r["cpu_s"] for r in out.values())
        for r in out.values():
            r["cpu_s"], r["alive_s"] = round(r["cpu_s"], 2), round(r["alive_s"], 1)
        out["all sampled processes"] = {"cpu_s": round(total, 2), "processes": sum(r["processes"] for r in out.values()),
                                        "alive_s": None}
        out["machine (/proc/stat)"] = {"cpu_s": round(self.busy_last - self.busy_first, 2), "processes": None,
                                       "alive_s": round(self.wall_s, 1)}
        return out


def classify(s: Seen, pids: dict[int, Seen], driver_pid: int | None) -> str:
    """The role of one process in a run, from its command line and its parent's."""
    cmd, parent = s.cmd, pids.get(s.ppid)
    if driver_pid is not None and s.pid == driver_pid:
        return "driver (ray-backfill CLI)"
    if "ray_backfill.worker" in cmd and "java" not in s.name:
        return "chunk process (python)"
    if s.name == "java" or cmd.split(" ", 1)[0].endswith("/java"):
        if "AppMasterEntryPoint" in cmd:
            return "RayDP gateway JVM"
        if "io.ray.runtime.runner.worker.DefaultWorker" in cmd or "raydp-java-worker" in cmd:
            # RayDP gives the executor's JVM its memory (-Xms and -Xmx), the app master's at most a cap (-Xmx)
            return "Ray Java worker: Spark executor" if "-Xms" in cmd else "Ray Java worker: RayDP app master"
        if parent is not None and "ray_backfill.worker" in parent.cmd:
            return "Spark driver JVM"
        if driver_pid is not None and s.ppid == driver_pid:
            return "Spark driver JVM"
        return "other"
    if cmd.startswith("ray::SlotSupervisor"):
        return "actor: SlotSupervisor"
    if cmd.startswith("ray::RayDPSparkMaster"):
        return "actor: RayDPSparkMaster"
    if cmd.startswith("ray::"):
        return "actor: other Python"
    if any(daemon in cmd for daemon in ("raylet", "gcs_server", "dashboard", "log_monitor", "runtime_env",
                                        "monitor.py", "ray/_private")):
        return "Ray daemons"
    return "other"
