"""Where a run's files are kept: the `RunStore` interface the ledger is written through.

A store holds bytes under (run id, name) — `ledger.json`, `report.json`, `report.html`,
`cancel.json` — and one append-only log per run (the ledger's events). Two implement it:

  LocalStore  (local_store.py)  a folder on this machine or a mount all nodes share (NFS);
  ArrowStore  (arrow_store.py)  a folder on a pyarrow file system named by a URI: s3://, s3a://
                                (S3, MinIO) or file://.

A third (S3 through its own client, a REST service, HDFS) implements the same methods; nothing
else in the ledger knows which store it writes to. What each method must guarantee:

  write   the file is replaced whole or not at all: a reader sees the old bytes or the new ones;
  create  the file is written only if it does not exist yet, as one atomic step (two writers racing
          on one name: exactly one gets True); what a lease or a fencing token is built on. A store
          that cannot do that raises AtomicCreateUnsupported and says so in `atomic_create`,
          rather than check-then-write, which two writers could both pass;
  append  one line (an event) is added to a run's log; a torn last line may be left by a crash
          (the reader skips it: codec.parse_events).
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol, runtime_checkable

from jobs.errors import ConfigError

JSON = "application/json"


class AtomicCreateUnsupported(ConfigError):
    """The store cannot create a file only if it is absent in one atomic step."""


@runtime_checkable
class RunStore(Protocol):
    """A run ledger's storage, keyed by (run id, name); see the module's docstring."""

    @property
    def root(self) -> Path | str:
        """The ledger dir: a local Path, or a URI."""

    @property
    def atomic_create(self) -> bool:
        """Whether `create` is atomic here (else it raises AtomicCreateUnsupported)."""

    def where(self, run_id: str, name: str) -> Path | str:
        """The file's address as users see it (a Path, or a URI under `root`)."""

    def read(self, run_id: str, name: str) -> bytes | None:
        """The file's bytes, or None when there is no such file."""

    def exists(self, run_id: str, name: str) -> bool:
        ...

    def write(self, run_id: str, name: str, data: bytes, content_type: str = JSON) -> None:
        """Create or replace the file, whole or not at all."""

    def create(self, run_id: str, name: str, data: bytes, content_type: str = JSON) -> bool:
        """Write the file only if it does not exist, atomically: True if this call created it, False
        if it was there already (it is left as it was). AtomicCreateUnsupported where it cannot."""

    def delete(self, run_id: str, name: str) -> None:
        """Remove the file; nothing when there is none."""

    def run_ids(self, having: str) -> list[str]:
        """The runs (in no order) that hold a file named `having`."""

    def append(self, run_id: str, log: str, seq: int, line: bytes) -> None:
        """Add `line`, the `seq`-th of the run's log `log`, after the lines before it."""

    def read_log(self, run_id: str, log: str) -> list[bytes]:
        """The log's lines, oldest first ([] when it has none)."""

    def clear_log(self, run_id: str, log: str) -> None:
        """Drop the log's lines."""
