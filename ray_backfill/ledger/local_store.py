"""`LocalStore`: a run ledger in a folder on this machine, or on a mount all nodes share (NFS).

  <root>/<run id>/<name>          write: temp file, fsync, os.replace (atomic on POSIX and NFS)
  <root>/<run id>/<log>.jsonl     append: one line, fsync

Atomic create: the bytes go to a temp file first, which `os.link` then gives the file's name;
link(2) fails with EEXIST when the name is taken, atomically also on NFS (where O_CREAT|O_EXCL
was not reliable before NFSv3), and a reader never sees a half-written file.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from ray_backfill.ledger.store import JSON


class LocalStore:
    """A `RunStore` in a local (or shared) folder."""

    atomic_create = True

    def __init__(self, root: Path):
        self.root = root

    def where(self, run_id: str, name: str) -> Path:
        return self.root / run_id / name

    def _temp(self, path: Path, data: bytes) -> str:
        """A temp file next to `path` holding `data`, flushed to disk."""
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=path.suffix)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        return tmp

    def write(self, run_id: str, name: str, data: bytes, content_type: str = JSON) -> None:
        path = self.where(run_id, name)
        os.replace(self._temp(path, data), path)

    def create(self, run_id: str, name: str, data: bytes, content_type: str = JSON) -> bool:
        path = self.where(run_id, name)
        tmp = self._temp(path, data)
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
        finally:
            os.unlink(tmp)
        return True

    def read(self, run_id: str, name: str) -> bytes | None:
        path = self.where(run_id, name)
        return path.read_bytes() if path.is_file() else None

    def exists(self, run_id: str, name: str) -> bool:
        return self.where(run_id, name).is_file()

    def delete(self, run_id: str, name: str) -> None:
        self.where(run_id, name).unlink(missing_ok=True)

    def run_ids(self, having: str) -> list[str]:
        if not self.root.is_dir():
            return []
        return [p.name for p in self.root.iterdir() if (p / having).is_file()]

    def append(self, run_id: str, log: str, seq: int, line: bytes) -> None:
        path = self.where(run_id, f"{log}.jsonl")
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "ab") as handle:
            handle.write(line)
            handle.flush()
            os.fsync(handle.fileno())

    def read_log(self, run_id: str, log: str) -> list[bytes]:
        path = self.where(run_id, f"{log}.jsonl")
        return path.read_bytes().splitlines() if path.is_file() else []

    def clear_log(self, run_id: str, log: str) -> None:
        self.where(run_id, f"{log}.jsonl").unlink(missing_ok=True)
