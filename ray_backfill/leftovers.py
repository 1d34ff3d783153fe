"""What a session leaves on its node outside the warehouse, and removing it (docs/operations.md#disk).

A RayDP session leaves three things behind unless removed:
- Ray's Java runtime, in a JVM that joins Ray as a driver (RayDP's gateway), extracts its native
  library (~40 MB) into a new folder `/tmp/ray/<epoch ms>/` (hard-coded in RayNativeRuntime.start,
  whatever Ray's temp dir) and never deletes it. Once the JVM has loaded it the file can go: the
  mapping stays valid. `drop_native_copy` removes a live gateway's copy; `sweep_native_copies`
  removes copies no process maps any more (a gateway killed before its copy was dropped).
- Each Spark application's executors work in `<Ray session dir>/<app id>/<executor id>/`;
  `remove_app_dir` removes it when the application has ended.
- Spark's executors unpack native libraries into the system temp folder (below) and leave them
  when Ray ends them; `sweep_native_copies` removes those no process maps.
- Ray's per-process log files: ray_backfill/logs.py.
Standard library only: supervisors import it.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import re
import shutil
import time
from pathlib import Path

log = logging.getLogger(__name__)

NATIVE_ROOT = Path("/tmp/ray")  # Ray's Java runtime writes here, not under `ray start --temp-dir`
NATIVE_LIB = "libcore_worker_library_java.so"
_NATIVE_FOLDER = re.compile(r"^\d{10,}$")  # System.currentTimeMillis()
_APP_ID = re.compile(r"^app-[0-9A-Za-z_-]+$")


def _native_copy_folder(line: str) -> Path | None:
    """The extraction folder named in one /proc/PID/maps line, if it maps a copy under NATIVE_ROOT."""
    if not line.rstrip().endswith(NATIVE_LIB):
        return None
    path = Path(line.split(None, 5)[-1].strip().removesuffix(" (deleted)"))
    folder = path.parent
    return folder if folder.parent == NATIVE_ROOT and _NATIVE_FOLDER.match(folder.name) else None


def _mapped_folders(pid: int | str) -> set[Path]:
    try:
        with open(f"/proc/{pid}/maps", encoding="utf-8", errors="replace") as maps:
            return {f for f in map(_native_copy_folder, maps) if f is not None}
    except OSError:  # gone, or not ours to read
        return set()


def drop_native_copy(pid: int) -> list[Path]:
    """Remove the native-library copies that the live process `pid` has loaded and no other process
    maps or is extracting (two JVMs started in the same millisecond share a folder); the removed."""
    removed = []
    for folder in _mapped_folders(pid):
        others = [p for p in os.listdir("/proc") if p.isdigit() and int(p) != pid and folder in _mapped_folders(p)]
        if others or _extracting(folder):
            continue  # the sweep takes it once nothing uses it
        shutil.rmtree(folder, ignore_errors=True)
        removed.append(folder)
    return removed


# Native libraries that Spark's executors unpack into the system temp folder (lz4's, for shuffle and
# broadcast compression) and delete only at a clean JVM exit, which a Ray worker killed by Ray
# never has. RayDP points an executor's java.io.tmpdir at its work folder too late: the JDK reads
# the setting once, at the JVM's first temporary file.
JAVA_TMP = Path("/tmp")  # a JVM's java.io.tmpdir unless told otherwise: it ignores TMPDIR
_TEMP_LIBS = re.compile(r"^(?:liblz4-java-|libzstd-jni-|snappy-)[\w.-]*\.so$")


def _pids() -> list[str]:
    """The live processes' ids, as /proc names them."""
    return [name for name in os.listdir("/proc") if name.isdigit()]


def _all_mapped() -> set[str]:
    """Every file some live process maps."""
    mapped: set[str] = set()
    for pid in _pids():
        try:
            with open(f"/proc/{pid}/maps", encoding="utf-8", errors="replace") as maps:
                for line in maps:
                    parts = line.split(None, 5)
                    if len(parts) == 6 and parts[5].startswith("/"):
                        mapped.add(parts[5].strip().removesuffix(" (deleted)"))
        except OSError:
            continue
    return mapped


FOLDER_MIN_AGE_S = 5.0  # a folder just made has no lock file yet


def _extracting(folder: Path) -> bool:
    """Whether a JVM is extracting into `folder` now: it holds the folder's `file_lock` (a POSIX
    record lock, Ray's BinaryFileUtil.getNativeFile) while it copies."""
    try:
        fd = os.open(folder / "file_lock", os.O_RDWR)
    except OSError:
        return False
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        fcntl.lockf(fd, fcntl.LOCK_UN)
        return False
    except OSError:
        return True
    finally:
        os.close(fd)


def _older_than(path: Path, seconds: float, now: float) -> bool:
    try:
        return now - path.stat().st_mtime >= seconds
    except OSError:
        return False


def _all_open() -> set[str]:
    """Every file some live process holds open (a JVM copying a library out has it open)."""
    held: set[str] = set()
    for pid in _pids():
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            with contextlib.suppress(OSError):
                held.add(os.readlink(f"/proc/{pid}/fd/{fd}"))
    return held


LIB_MIN_AGE_S = 5.0  # a copy is written and loaded within milliseconds: 5 s is far past that


def sweep_native_copies(min_age_s: float = LIB_MIN_AGE_S, root: Path = NATIVE_ROOT, temp: Path | None = None,
                        wait_s: float = 0.0, since: float | None = None) -> list[Path]:
    """Remove native-library copies that no live process maps or holds open and that are older
    than `min_age_s` (a JVM unpacking one right now may not have opened or mapped it yet): Ray's
    extraction folders under `root` and executors' unpacked libraries in the system temp folder
    `temp`; what was removed. With `wait_s`, sweep again for up to that long while a copy made
    since `since` (epoch seconds) is still there: the run's last executors, which Ray ends
    asynchronously after their session stopped, unmap theirs a moment later."""
    temp = JAVA_TMP if temp is None else temp
    deadline = time.monotonic() + wait_s
    removed = _sweep_once(min_age_s, root, temp)
    while wait_s > 0 and time.monotonic() < deadline and _pending(root, temp, since):
        time.sleep(0.5)
        removed += _sweep_once(min_age_s, root, temp)
    return removed


def _copies(root: Path, temp: Path) -> tuple[list[Path], list[Path]]:
    try:
        folders = [p for p in root.iterdir() if _NATIVE_FOLDER.match(p.name) and p.is_dir()]
    except OSError:
        folders = []
    try:
        libs = [p for p in temp.iterdir() if _TEMP_LIBS.match(p.name)]
    except OSError:
        libs = []
    return folders, libs


def _pending(root: Path, temp: Path, since: float | None) -> bool:
    """Whether a copy made since `since` is still there."""
    folders, libs = _copies(root, temp)
    return any(_modified_since(p, since) for p in (*folders, *libs))


def _modified_since(path: Path, since: float | None) -> bool:
    try:
        return since is None or path.stat().st_mtime >= since
    except OSError:
        return False


def _sweep_once(min_age_s: float, root: Path, temp: Path) -> list[Path]:
    now = time.time()
    folders, libs = _copies(root, temp)
    folders = [f for f in folders if _older_than(f, max(FOLDER_MIN_AGE_S, min_age_s), now)]
    libs = [f for f in libs if _older_than(f, min_age_s, now)]
    if not folders and not libs:
        return []
    mapped = _all_mapped()
    removed = [f for f in folders if str(f / NATIVE_LIB) not in mapped and not _extracting(f)]
    for folder in removed:
        shutil.rmtree(folder, ignore_errors=True)
    if libs:
        in_use = mapped | _all_open()
        for lib in libs:
            if str(lib) not in in_use:
                for each in (lib, lib.with_name(lib.name + ".lck")):
                    with contextlib.suppress(OSError):
                        each.unlink()
                removed.append(lib)
    return removed


def remove_app_dir(session_dir: str | Path | None, app_id: str | None) -> bool:
    """Remove a finished Spark application's executor work folder on this node; True if one was there."""
    if not session_dir or not app_id or not _APP_ID.match(app_id):
        return False
    folder = Path(session_dir) / app_id
    if not folder.is_dir():
        return False
    shutil.rmtree(folder, ignore_errors=True)
    return True


def remove_session_files(session_dir: str | Path | None) -> None:
    """Remove a stopped Ray cluster's session folder but its logs (Ray keeps it all after
    `ray.shutdown()`: sockets, runtime environments, metrics, its own native-library copy)."""
    if not session_dir or not Path(session_dir).name.startswith("session_"):
        return
    try:
        entries = list(Path(session_dir).iterdir())
    except OSError:
        return
    for entry in entries:
        if entry.name == "logs":
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                entry.unlink()
