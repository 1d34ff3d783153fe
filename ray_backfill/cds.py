"""Class-data sharing (Java 17 AppCDS) for the JVMs each fresh Spark session starts.

Most of a fresh session's start-up is its JVMs loading and verifying classes (~15k for the driver,
docs/operations.md#session-start-up-cost); an archive maps them ready-made. Local sessions: a
dynamic archive of the driver (below). RayDP sessions: one static archive for all four JVMs
(`plan_shared_cds`, further down).

Local mode: a dynamic CDS archive maps the driver's classes: the first session of a given Java,
Spark, mode and jar set writes the archive when its JVM exits (`-XX:ArchiveClassesAtExit`),
every later one starts from it (`-XX:SharedArchiveFile`). Each JVM is still a fresh JVM: the
archive holds class metadata only, no state. A stale or mismatched archive is ignored by the
JVM (`-Xshare:auto`), never an error. Writers race safely: each writes its own temporary file
and the last atomic rename wins.
"""

from __future__ import annotations

import glob
import hashlib
import os
import re
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from ray_backfill.jars import JARS_DIR

CDS_DIR = Path(os.environ.get("RAY_BACKFILL_CDS_DIR") or JARS_DIR.parent / "cds")
CLAIM_STALE_S = 600.0
# Unified logging's `file=` cannot hold these (its option syntax splits on ':' and ',')
_UNSAFE_PATH = re.compile(r"[\s:,=\"']")


@dataclass(frozen=True)
class CdsPlan:
    """The JVM options for one driver, and what to do once that JVM has exited."""

    java_options: str
    archive: Path
    pending: Path | None  # the archive this JVM writes at exit, to be renamed into place

    def finish(self) -> bool:
        """After the JVM exited: move a freshly written archive into place. True if one was."""
        if self.pending is None:
            return False
        try:
            if self.pending.is_file() and self.pending.stat().st_size > 0:
                os.replace(self.pending, self.archive)
                return True
            self.pending.unlink(missing_ok=True)
            return False
        finally:
            self.archive.with_suffix(".creating").unlink(missing_ok=True)


def archive_key(mode: str, jars: list[str], java_options: str) -> str:
    """What an archive depends on: the java binary, pyspark and where it is, the mode, the jars, JVM options."""
    import pyspark

    java = shutil.which("java") or "java"
    java_real = os.path.realpath(java)
    # pyspark's folder: its jars are on the classpath, and an archive only fits the classpath it was made with
    parts = [java_real, str(_mtime(java_real)), pyspark.__version__, os.path.dirname(pyspark.__file__), mode,
             *jars, java_options]
    return hashlib.sha1("\n".join(parts).encode()).hexdigest()[:16]


def plan_driver_cds(mode: str, jars: list[str], java_options: str, cds_dir: Path = CDS_DIR) -> CdsPlan | None:
    """JVM options that use (or, the first time, create) the driver's archive; None if unusable.

    Local mode only: RayDP starts its driver with a -javaagent, and no archive came out of that
    JVM when tried (benchmarks/chunk_overhead.py measures both modes).
    """
    if mode != "local":
        return None
    try:
        cds_dir.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None
    archive = cds_dir / f"driver-{mode}-{archive_key(mode, jars, java_options)}.jsa"
    if archive.is_file():
        return CdsPlan(f"-XX:SharedArchiveFile={archive} -Xshare:auto", archive, None)
    # Writing the archive costs its JVM ~10 s at exit: one session does it, the others start plain.
    if not _claim(archive.with_suffix(".creating")):
        return None
    pending = cds_dir / f".{archive.name}.{os.getpid()}.tmp"
    # the dump's warnings (hundreds of "Skipping ...", "Preload Warning ...") go to a file, not the console
    quiet = "-Xlog:cds*=off:stdout" + ("" if _UNSAFE_PATH.search(str(cds_dir)) else
                                       f" -Xlog:cds*=warning:file={archive.with_suffix('.dump.log')}::filecount=0")
    return CdsPlan(f"-XX:ArchiveClassesAtExit={pending} {quiet}", archive, pending)


def _mtime(path: str) -> float:
    try:
        return os.stat(path).st_mtime
    except OSError:
        return 0.0


# --- One static archive for every JVM of a RayDP session -------------------------------------------
#
# RayDP starts four JVMs per session (its py4j gateway, the app master and the executor as Ray Java
# workers, and Spark's driver), all on one class path (raydp_classpath), and the driver runs RayDP's
# java agent, which rules out a dynamic archive. A static archive does not mind the agent and only
# needs the classes' names: the first RayDP session on a machine records what its JVMs load
# (-Xlog:class+load, one file per JVM: the Java workers are killed, not exited, so nothing can be
# written "at exit"); once its JVMs are gone, `java -Xshare:dump` turns the union into an archive
# (~30 CPU-seconds, once) and every later session's JVMs map it. A JVM whose class path or java
# does not match the archive ignores it (-Xshare:auto).

DUMP_TIMEOUT_S = 300.0


def raydp_classpath(jars: list[str]) -> str:
    """The class path RayDP gives its gateway, app master and executors (raydp/spark/ray_cluster_master.py).

    The driver's is the same with pyspark's conf folder appended. Globs in the same order as RayDP's,
    so the archive's recorded class path is a prefix of every JVM's.
    """
    raydp_jars = glob.glob(os.path.join(_package_dir("raydp"), "jars", "*"))
    spark_jars = os.path.join(_package_dir("pyspark"), "jars", "*")
    ray_jars = glob.glob(os.path.join(_package_dir("ray"), "jars", "*"))
    return os.pathsep.join([*jars, *raydp_jars, spark_jars, *ray_jars])


def _package_dir(name: str) -> str:
    """Where an installed package lives, without importing it (importing ray or raydp costs seconds)."""
    import importlib.util

    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(f"package {name} is not installed")
    return os.path.abspath(next(iter(spec.submodule_search_locations)))


@dataclass(frozen=True)
class SharedCdsPlan:
    """JVM options for every JVM of a session on one class path, and what to do once they are gone."""

    java_options: str
    archive: Path
    classpath: str
    recording: Path | None  # where this session's JVMs log their classes; None when the archive exists

    def finish(self, log_path: Path | None = None) -> bool:
        """After the session's JVMs ended: build the archive from what they loaded. True if one was built.

        The dump's own output (thousands of "Skipping ..." lines) goes to `log_path`, never the console.
        """
        if self.recording is None:
            return False
        claim = self.archive.with_suffix(".creating")
        try:
            classes = recorded_classes(self.recording)
            if not classes:
                return False
            class_list = self.recording / "classes.lst"
            class_list.write_text("\n".join(classes) + "\n")
            return dump_archive(class_list, self.classpath, self.archive,
                                log_path or self.archive.with_suffix(".dump.log"))
        finally:
            shutil.rmtree(self.recording, ignore_errors=True)
            claim.unlink(missing_ok=True)


def recorded_classes(folder: Path) -> list[str]:
    """Every class the recorded JVMs loaded from the JDK or a jar, as a class list (a/b/C names).

    Hidden classes (lambdas, proxies: a '/' in the logged name) cannot come from a class list.
    """
    pattern = re.compile(r"\]\s(\S+) source: (?:jrt:/|file:\S+\.jar$|shared objects file)")
    names: set[str] = set()
    for path in folder.glob("*.log"):
        with open(path, errors="replace") as handle:
            for line in handle:
                match = pattern.search(line.rstrip("\n"))
                if match and "/" not in match.group(1):
                    names.add(match.group(1).replace(".", "/"))
    return sorted(names)


def dump_archive(class_list: Path, classpath: str, archive: Path, log_path: Path) -> bool:
    """`java -Xshare:dump` of `class_list` on `classpath` into `archive` (atomically). True if it was."""
    import subprocess

    pending = archive.with_name(f".{archive.name}.{os.getpid()}.tmp")
    java = shutil.which("java") or "java"
    try:
        with open(log_path, "w") as out:
            code = subprocess.run(
                [java, "-Xshare:dump", f"-XX:SharedClassListFile={class_list}", f"-XX:SharedArchiveFile={pending}",
                 "-cp", classpath],
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, timeout=DUMP_TIMEOUT_S,
            ).returncode
        if code == 0 and pending.is_file() and pending.stat().st_size > 0:
            os.replace(pending, archive)
            return True
        return False
    except (OSError, subprocess.SubprocessError):
        return False
    finally:
        pending.unlink(missing_ok=True)


def plan_shared_cds(name: str, classpath: str, cds_dir: Path = CDS_DIR) -> SharedCdsPlan | None:
    """Options that map (or, the first time, record for) the static archive of JVMs on `classpath`.

    None when neither is possible: the folder is not writable, its path does not fit a JVM option,
    or another session is recording right now (this one starts plain).
    """
    if _UNSAFE_PATH.search(str(cds_dir)):
        return None
    try:
        cds_dir.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None
    archive = _shared_archive(name, classpath, cds_dir)
    if archive.is_file():
        return SharedCdsPlan(f"-XX:SharedArchiveFile={archive} -Xshare:auto", archive, classpath, None)
    if not _claim(archive.with_suffix(".creating")):
        return None
    for stale in cds_dir.glob(f".record-{name}-*"):  # left by a session killed while recording
        if time.time() - _mtime(str(stale)) > CLAIM_STALE_S:
            shutil.rmtree(stale, ignore_errors=True)
    recording = Path(tempfile.mkdtemp(prefix=f".record-{name}-", dir=cds_dir))
    # one file per JVM (%p), no rotation
    option = f"-Xlog:class+load=info:file={recording}/%p.log::filecount=0"
    return SharedCdsPlan(option, archive, classpath, recording)


def _shared_archive(name: str, classpath: str, cds_dir: Path) -> Path:
    """Where the static archive of JVMs on `classpath` lives."""
    # a jar replaced in place (ray_dist.jar has no version in its name) makes the JVM ignore the archive
    stamps = [f"{entry}@{_mtime(entry)}" for entry in classpath.split(os.pathsep) if not entry.endswith("*")]
    return cds_dir / f"{name}-{archive_key(name, stamps, '')}.jsa"


def shared_archive_options(name: str, classpath: str, cds_dir: Path = CDS_DIR) -> str:
    """Options that map the static archive of JVMs on `classpath` if it exists, else none: for a
    JVM that lives long (a slot's RayDP master) and so neither records nor waits for one."""
    if _UNSAFE_PATH.search(str(cds_dir)):
        return ""
    archive = _shared_archive(name, classpath, cds_dir)
    return f"-XX:SharedArchiveFile={archive} -Xshare:auto" if archive.is_file() else ""


def _claim(path: Path) -> bool:
    """Create `path` exclusively (a stale one, from a writer that died long ago, is taken over)."""
    try:
        if path.exists() and time.time() - path.stat().st_mtime > CLAIM_STALE_S:
            path.unlink(missing_ok=True)
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        return True
    except OSError:
        return False
