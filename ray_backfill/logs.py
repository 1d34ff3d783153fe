"""Bounded logs (docs/operations.md#logs): an attempt's log keeps its first and last part up to a
cap, a run's attempt logs have a total cap, and Ray's per-process log files of a finished attempt
are removed (kept, cut to their first and last part, when the attempt failed).
Standard library only: supervisors import it.
"""

from __future__ import annotations

import collections
import contextlib
import os
import tempfile
import re
import time
from pathlib import Path
from typing import Iterable, Sequence, TextIO

ATTEMPT_HEAD_BYTES = 256 * 1024  # an attempt log's first part: how it started, its settings, the first errors
ATTEMPT_TAIL_BYTES = 256 * 1024  # and its last part: how it ended
RUN_LOG_CAP_BYTES = 256 * 1024 * 1024  # all attempt logs of one run
RAY_LOG_KEEP_BYTES = 64 * 1024  # of each Ray log file of a failed attempt: first and last part each


class CappedLog:
    """A log file that keeps the first `head` bytes as they come and, past them, only the last
    `tail` bytes, written with a line saying what was cut when it is closed."""

    def __init__(self, out: TextIO, head: int = ATTEMPT_HEAD_BYTES, tail: int = ATTEMPT_TAIL_BYTES):
        self.out, self.head, self.tail = out, head, tail
        self.written = 0
        self.kept: collections.deque[str] = collections.deque()
        self.kept_bytes = 0
        self.cut_lines = self.cut_bytes = 0
        self.overflowed = False  # past the first part: every later line is kept for the last part

    def write(self, line: str) -> bool:
        """Write or keep `line`; True when it went to the file now."""
        size = len(line.encode("utf-8", "replace"))
        if not self.overflowed and self.written + size <= self.head:
            self.out.write(line)
            self.written += size
            return True
        self.overflowed = True
        self.kept.append(line)
        self.kept_bytes += size
        while self.kept_bytes > self.tail and self.kept:
            dropped = self.kept.popleft()
            self.kept_bytes -= len(dropped.encode("utf-8", "replace"))
            self.cut_lines += 1
            self.cut_bytes += len(dropped.encode("utf-8", "replace"))
        return False

    def close(self) -> None:
        """Write the kept last part, after a line saying what was cut."""
        if self.cut_lines:
            self.out.write(f"[ray-backfill: {self.cut_lines} lines ({self.cut_bytes:,} bytes) cut here: "
                           f"an attempt log keeps its first {self.head // 1024} KiB and last {self.tail // 1024} KiB]\n")
        self.out.writelines(self.kept)
        self.kept.clear()
        self.out.flush()


def cut_file(path: Path, keep: int = RAY_LOG_KEEP_BYTES) -> None:
    """Cut a file to its first and last `keep` bytes, with a line between saying so."""
    try:
        size = path.stat().st_size
        if size <= 2 * keep + 200:
            return
        with open(path, "rb") as f:
            head = f.read(keep)
            f.seek(size - keep)
            tail = f.read(keep)
        note = f"\n[ray-backfill: {size - 2 * keep:,} bytes cut here]\n".encode()
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(head + note + tail)
            os.replace(tmp, path)
        except OSError:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
    except OSError:
        pass


def pid_alive(pid: int) -> bool:
    """Whether a process `pid` exists on this host (one of another user's counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# files that name a worker's job and pid: Java workers' logs, every worker's stdout and stderr
_JOB_FILE = re.compile(r"^(?:(?:java|raydp-java)-worker-([0-9a-f]{8})-(\d+)\.log"
                       r"|worker-[0-9a-f]+-([0-9a-f]{8})-(\d+)\.(?:out|err))$")
_PID_SUFFIX = re.compile(r"[-_](\d+)\.(?:log|out|err)$")
# the per-process files a pid names (not the daemons', whose names may end in a port)
_PER_PROCESS = ("python-core-driver-", "java-core-driver-", "python-core-worker-", "java-core-worker-",
                "java-worker-", "raydp-java-worker-", "worker-", "slf4j-")


def ray_log_files(logs_dir: Path, jobs: Iterable[str], pids: Iterable[int]) -> list[Path]:
    """Ray's per-process log files on this node of the Ray jobs `jobs` (8-hex-digit ids) and of the
    processes `pids`: drivers, workers, their core-worker, stdout/stderr, slf4j and event files
    (the caller leaves out those of processes still alive)."""
    jobs = {j.lower() for j in jobs if j}
    pids = {int(p) for p in pids}
    try:
        names = os.listdir(logs_dir)
    except OSError:
        return []
    for name in names:  # the jobs' Java workers (RayDP's app master, its executors): their pids
        m = _JOB_FILE.match(name)
        if m and (m.group(1) or m.group(3)) in jobs:
            pids.add(int(m.group(2) or m.group(4)))
    found = []
    for name in names:
        m = _PID_SUFFIX.search(name) if name.startswith(_PER_PROCESS) else None
        driver = name.startswith(("python-core-driver-", "java-core-driver-")) and name.split("-")[3][:8] in jobs
        if driver or (m and int(m.group(1)) in pids):
            found.append(logs_dir / name)
    events = logs_dir / "events"
    found += [events / f"event_CORE_WORKER_{pid}.log" for pid in pids
              if (events / f"event_CORE_WORKER_{pid}.log").is_file()]
    return found


def _wait_ended(pids: set[int], grace_s: float) -> None:
    """Wait up to `grace_s` for `pids` to exit (a session's Ray workers end just after its process)."""
    deadline = time.monotonic() + grace_s
    while any(pid_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.2)


def tidy_ray_logs(logs_dir: str | Path | None, jobs: Iterable[str], pids: Iterable[int], keep: bool,
                  grace_s: float = 5.0) -> int:
    """After an attempt: remove the Ray log files of its jobs and processes that have ended, or with
    `keep` (a failed attempt) cut each to its first and last part. The number of files handled."""
    if not logs_dir:
        return 0
    files = ray_log_files(Path(logs_dir), jobs, pids)
    _wait_ended({int(m.group(1)) for m in map(_PID_SUFFIX.search, (p.name for p in files)) if m}, grace_s)
    done = 0
    for path in files:
        m = _PID_SUFFIX.search(path.name)
        if m and pid_alive(int(m.group(1))):
            continue  # still writing (a Ray worker the pool kept for reuse)
        if keep:
            cut_file(path)
        else:
            try:
                path.unlink()
            except OSError:
                continue
        done += 1
    return done


def enforce_run_cap(folder: Path | None, finished: Sequence[str], cap: int = RUN_LOG_CAP_BYTES) -> list[Path]:
    """Keep a run's attempt logs under `cap` bytes in all by removing finished attempts' logs, in
    the order `finished` names them (the caller puts failed attempts' last); a log still being
    written is never named there. The removed."""
    if folder is None:
        return []
    try:
        total = sum(p.stat().st_size for p in folder.glob("*.log") if p.is_file())
    except OSError:
        return []
    removed = []
    for name in finished:
        if total <= cap:
            break
        path = folder / name
        try:
            size = path.stat().st_size
            path.unlink()
        except OSError:
            continue
        total -= size
        removed.append(path)
    return removed
