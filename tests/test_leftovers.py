"""What attempts leave on a node and the bounded logs, on real files and processes (no Ray, no JVM):
ray_backfill/leftovers.py and ray_backfill/logs.py. The real run's footprint: test_raydp_backfill.py."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ray_backfill.leftovers import (NATIVE_LIB, drop_native_copy, remove_app_dir, remove_session_files,
                                    sweep_native_copies)
from ray_backfill.logs import CappedLog, cut_file, enforce_run_cap, ray_log_files, tidy_ray_logs


def _aged(path: Path, seconds: float = 600) -> Path:
    then = time.time() - seconds
    os.utime(path, (then, then))
    return path


def _old_file(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return _aged(path)


def _native_folder(root: Path, name: str) -> Path:
    folder = root / name
    folder.mkdir(parents=True)
    (folder / NATIVE_LIB).write_bytes(b"\x7fELF" + b"\0" * 4096)
    (folder / "file_lock").write_bytes(b"")
    return _aged(folder)


@pytest.fixture
def mapper():
    """A live process that maps a file, as a JVM maps a native library it loaded."""
    procs = []

    def start(path: Path) -> subprocess.Popen:
        code = ("import mmap, sys, time; f = open(sys.argv[1], 'rb'); "
                "m = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ); print('ok', flush=True); time.sleep(60)")
        proc = subprocess.Popen([sys.executable, "-c", code, str(path)], stdout=subprocess.PIPE, text=True)
        assert proc.stdout.readline().strip() == "ok"
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        proc.kill()
        proc.wait()
        proc.stdout.close()


@pytest.mark.process
def test_the_sweep_removes_unmapped_old_copies_and_keeps_mapped_new_and_locked_ones(tmp_path, mapper):
    root, temp = tmp_path / "ray", tmp_path / "tmp"
    temp.mkdir()
    stale = _native_folder(root, "1796651714462")
    mapped = _native_folder(root, "1796651739555")
    fresh = _native_folder(root, "1796651764350")
    os.utime(fresh, None)  # just made: its JVM may not have taken the lock yet
    locked = _native_folder(root, "1796651781952")
    session = root / "session_2026-12-07_13-55-05_086594_3224"
    session.mkdir()
    lz4_stale = _old_file(temp / "liblz4-java-11328262693751876100.so", b"x")
    _old_file(temp / "liblz4-java-11328262693751876100.so.lck", b"")
    lz4_mapped = _old_file(temp / "liblz4-java-239307298367705823.so", b"x" * 4096)
    other = _old_file(temp / "notes.so", b"")
    mapper(mapped / NATIVE_LIB)
    mapper(lz4_mapped)
    holder = subprocess.Popen([sys.executable, "-c", (  # a JVM extracting right now holds the folder's lock
        "import fcntl, sys, time; f = open(sys.argv[1], 'r+b'); fcntl.lockf(f, fcntl.LOCK_EX); "
        "print('ok', flush=True); time.sleep(60)"), str(locked / "file_lock")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "ok"
        removed = sweep_native_copies(root=root, temp=temp)
    finally:
        holder.kill()
        holder.wait()
        holder.stdout.close()
    assert set(removed) == {stale, lz4_stale}
    assert not stale.exists() and not lz4_stale.exists()
    assert not (temp / "liblz4-java-11328262693751876100.so.lck").exists()
    assert mapped.exists() and fresh.exists() and locked.exists() and session.exists()
    assert lz4_mapped.exists() and other.exists()


@pytest.mark.process
def test_a_copy_being_written_or_just_made_stays_and_the_end_sweep_waits_for_a_dying_executor(tmp_path, mapper):
    root, temp = tmp_path / "ray", tmp_path / "tmp"
    root.mkdir()
    temp.mkdir()
    writing = _old_file(temp / "liblz4-java-1.so", b"x")
    young = temp / "liblz4-java-2.so"
    young.write_bytes(b"x")  # made a moment ago: not yet opened by the JVM that made it
    writer = subprocess.Popen([sys.executable, "-c", (  # a JVM copying the library out holds it open
        "import sys, time; f = open(sys.argv[1], 'ab'); print('ok', flush=True); time.sleep(60)"), str(writing)],
        stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout.readline().strip() == "ok"
        assert sweep_native_copies(root=root, temp=temp) == []
    finally:
        writer.kill()
        writer.wait()
        writer.stdout.close()
    assert young.exists()
    assert sweep_native_copies(root=root, temp=temp) == [writing]
    young.unlink()

    # the end of a run: the last executor still maps its copy and is ended a moment later
    started = time.time() - 1
    last = temp / "liblz4-java-3.so"
    last.write_bytes(b"x" * 4096)
    os.utime(last, (started + 0.5, started + 0.5))
    executor = mapper(last)
    assert sweep_native_copies(root=root, temp=temp, min_age_s=0) == []  # mapped: it stays
    killer = subprocess.Popen([sys.executable, "-c", f"import os, time; time.sleep(1.5); os.kill({executor.pid}, 9)"])
    try:
        removed = sweep_native_copies(root=root, temp=temp, min_age_s=0, wait_s=10, since=started)
    finally:
        killer.wait()
    assert removed == [last] and not last.exists()


@pytest.mark.process
def test_a_live_process_copy_goes_at_once_and_stays_usable(tmp_path, mapper, monkeypatch):
    import ray_backfill.leftovers as leftovers

    monkeypatch.setattr(leftovers, "NATIVE_ROOT", tmp_path)
    folder = _native_folder(tmp_path, "1796651788058")
    proc = mapper(folder / NATIVE_LIB)
    assert drop_native_copy(proc.pid) == [folder]
    assert not folder.exists()
    assert proc.poll() is None  # the mapping outlives the file
    assert drop_native_copy(proc.pid) == []  # a deleted mapping names no folder to remove
    shared = _native_folder(tmp_path, "1796651788059")  # two JVMs started in the same millisecond
    first, second = mapper(shared / NATIVE_LIB), mapper(shared / NATIVE_LIB)
    assert drop_native_copy(first.pid) == [] and shared.exists()  # the other still maps it: the sweep's


def test_an_application_folder_and_a_stopped_session_folder_go_but_their_logs(tmp_path):
    session = tmp_path / "session_2026-12-07_14-02-44_083213_9992"
    app = session / "app-20261207135523189" / "0" / "spark-ee60"
    app.mkdir(parents=True)
    (app / "x_cache").write_bytes(b"x" * 1000)
    (session / "logs").mkdir()
    (session / "logs" / "raylet.out").write_text("kept")
    (session / "sockets").mkdir()
    (session / NATIVE_LIB).write_bytes(b"x")
    assert not remove_app_dir(session, "../logs")  # not an application id: nothing removed
    assert not remove_app_dir(session, None)
    assert remove_app_dir(session, "app-20261207135523189")
    assert not (session / "app-20261207135523189").exists()
    remove_session_files(tmp_path / "not-a-session")  # refused: not a Ray session folder
    remove_session_files(session)
    assert sorted(p.name for p in session.iterdir()) == ["logs"]
    assert (session / "logs" / "raylet.out").read_text() == "kept"


def test_an_attempt_log_keeps_its_first_and_last_part():
    out = io.StringIO()
    log = CappedLog(out, head=100, tail=60)
    lines = [f"line {i:03d} ..........\n" for i in range(50)]  # 20 bytes each
    written = [log.write(line) for line in lines]
    log.close()
    text = out.getvalue()
    assert written[:5] == [True] * 5 and not any(written[5:])
    assert text.startswith("".join(lines[:5]))
    assert text.endswith("".join(lines[-3:]))
    assert "42 lines (840 bytes) cut here" in text
    short = io.StringIO()
    small = CappedLog(short, head=1000, tail=100)
    for line in lines[:3]:
        small.write(line)
    small.close()
    assert short.getvalue() == "".join(lines[:3])  # under the cap: as it came, nothing added
    # a line larger than the last part does not reopen the first part for the lines after it
    out = io.StringIO()
    log = CappedLog(out, head=100, tail=60)
    assert [log.write(line) for line in (lines[0], "y" * 200 + "\n", lines[1])] == [True, False, False]
    log.close()
    assert out.getvalue().startswith(lines[0] + "[ray-backfill: 1 lines") and out.getvalue().endswith(lines[1])


def test_a_file_is_cut_to_its_first_and_last_part(tmp_path):
    path = tmp_path / "java-worker-03000000-3823.log"
    path.write_bytes(b"a" * 5000 + b"b" * 5000 + b"c" * 5000)
    cut_file(path, keep=1000)
    data = path.read_bytes()
    assert data.startswith(b"a" * 1000) and data.endswith(b"c" * 1000)
    assert b"13,000 bytes cut here" in data and b"bb" not in data
    small = tmp_path / "small.log"
    small.write_bytes(b"x" * 100)
    cut_file(small, keep=1000)
    assert small.read_bytes() == b"x" * 100


def _ray_logs(folder: Path, dead: list[int], alive: int) -> dict[str, Path]:
    """Ray's log files of an attempt whose chunk driver, gateway and executor were `dead[0..2]`."""
    names = {
        "chunk_driver": f"python-core-driver-02000000ffffffffffffffffffffffffffffffffffffffffffffffff_{dead[0]}.log",
        "gateway": f"java-core-driver-03000000ffffffffffffffffffffffffffffffffffffffffffffffff_{dead[1]}.log",
        "executor": f"java-worker-03000000-{dead[2]}.log",
        "executor_raydp": f"raydp-java-worker-03000000-{dead[2]}.log",
        "executor_core": f"java-core-worker-0d62c44c5a80fbe3ee9376b2981446c35a4b2f58ad052864f42d85ec_{dead[2]}.log",
        "executor_out": f"worker-0d62c44c5a80fbe3ee9376b2981446c35a4b2f58ad052864f42d85ec-03000000-{dead[2]}.out",
        "slf4j": f"slf4j-{dead[1]}.log",
        "run_driver": f"python-core-driver-01000000ffffffffffffffffffffffffffffffffffffffffffffffff_{alive}.log",
        "other_job": f"java-worker-05000000-{dead[3]}.log",
        "raylet": "raylet.out",
    }
    folder.mkdir(parents=True, exist_ok=True)
    for name in names.values():
        (folder / name).write_bytes(b"x" * 300_000)
    (folder / "events").mkdir(exist_ok=True)
    (folder / "events" / f"event_CORE_WORKER_{dead[2]}.log").write_text("")
    return {key: folder / name for key, name in names.items()}


def _dead_pids(n: int = 4) -> list[int]:
    """Pids of processes that have exited (not reused soon: Linux hands pids out in turn)."""
    procs = [subprocess.Popen([sys.executable, "-c", "pass"]) for _ in range(n)]
    for proc in procs:
        proc.wait()
    return [proc.pid for proc in procs]


@pytest.mark.process
def test_an_attempts_ray_logs_are_found_by_its_jobs_and_processes_and_removed(tmp_path):
    dead = _dead_pids()
    files = _ray_logs(tmp_path / "logs", dead, os.getpid())
    found = set(ray_log_files(tmp_path / "logs", ["02000000", "03000000"], [dead[1]]))
    ours = {files[k] for k in ("chunk_driver", "gateway", "executor", "executor_raydp", "executor_core",
                               "executor_out", "slf4j")}
    assert ours | {tmp_path / "logs" / "events" / f"event_CORE_WORKER_{dead[2]}.log"} == found
    assert tidy_ray_logs(tmp_path / "logs", ["02000000", "03000000"], [dead[1]], keep=False, grace_s=0) == 8
    assert not any(p.exists() for p in ours)
    assert files["other_job"].exists() and files["raylet"].exists() and files["run_driver"].exists()
    # a live process's file stays even when its job is named (the run's own driver)
    assert tidy_ray_logs(tmp_path / "logs", ["01000000"], [], keep=False, grace_s=0) == 0
    assert files["run_driver"].stat().st_size == 300_000


@pytest.mark.process
def test_a_failed_attempts_ray_logs_are_kept_cut(tmp_path):
    dead = _dead_pids()
    files = _ray_logs(tmp_path / "logs", dead, os.getpid())
    tidy_ray_logs(tmp_path / "logs", ["03000000"], [], keep=True, grace_s=0)
    assert files["executor"].exists() and files["executor"].stat().st_size < 140_000
    assert files["chunk_driver"].stat().st_size == 300_000  # not the attempt's


def test_a_runs_attempt_logs_stay_under_their_cap_finished_ones_only_failed_ones_last(tmp_path):
    names = [f"bronze-2024-{i + 1:02d}.attempt1.log" for i in range(10)]
    for name in names:
        (tmp_path / name).write_bytes(b"x" * 1000)
    running = names[1]  # still being written: never named as finished, never removed
    finished = [n for n in names[2:] if n != running] + [names[0]]  # the failed attempt's last
    removed = enforce_run_cap(tmp_path, finished, cap=4500)
    assert [p.name for p in removed] == names[2:8]
    assert (tmp_path / names[0]).exists() and (tmp_path / running).exists()
    assert sum(p.stat().st_size for p in tmp_path.iterdir()) <= 4500
    assert enforce_run_cap(tmp_path, finished, cap=4500) == []
    assert enforce_run_cap(None, finished) == []
