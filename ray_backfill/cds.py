"""Class-data sharing (Java 17 AppCDS) for the Spark driver JVM each fresh session starts.

Most of a fresh session's start-up is the driver JVM loading and verifying ~15k classes
(docs/operations.md#session-start-up-cost). A dynamic CDS archive maps them ready-made: the first session of a given Java,
Spark, mode and jar set writes the archive when its JVM exits (`-XX:ArchiveClassesAtExit`),
every later one starts from it (`-XX:SharedArchiveFile`). Each JVM is still a fresh JVM: the
archive holds class metadata only, no state. A stale or mismatched archive is ignored by the
JVM (`-Xshare:auto`), never an error. Writers race safely: each writes its own temporary file
and the last atomic rename wins.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from ray_backfill.jars import JARS_DIR

CDS_DIR = Path(os.environ.get("RAY_BACKFILL_CDS_DIR") or JARS_DIR.parent / "cds")
CLAIM_STALE_S = 600.0


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
    claim = archive.with_suffix(".creating")
    try:
        if claim.exists() and time.time() - claim.stat().st_mtime > CLAIM_STALE_S:
            claim.unlink(missing_ok=True)  # its writer died long ago
        fd = os.open(claim, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        os.close(fd)
    except OSError:
        return None
    pending = cds_dir / f".{archive.name}.{os.getpid()}.tmp"
    return CdsPlan(f"-XX:ArchiveClassesAtExit={pending}", archive, pending)


def _mtime(path: str) -> float:
    try:
        return os.stat(path).st_mtime
    except OSError:
        return 0.0
