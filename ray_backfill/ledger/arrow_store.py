"""`ArrowStore`: a run ledger in a folder on a pyarrow file system, named by its URI (s3a://bucket/key,
s3://…, file:///path).

  <root>/<run id>/<name>                  write: one PUT on an object store (a new object appears
                                          whole or not at all); on pyarrow's local file system a
                                          temp file renamed over the old one
  <root>/<run id>/<log>/<seq:012d>.json   append: an object store cannot append, so one small
                                          object per line, named by its sequence number

No atomic create: pyarrow's file systems offer no conditional write (S3's `If-None-Match: *`,
an exclusive open), see https://github.com/apache/arrow/issues/44281. Checking for the file and
then writing it would let two writers both pass, so `create` raises AtomicCreateUnsupported instead
(`atomic_create` is False). What needs it (a lease, a fencing token) wants a ledger dir on a local
or shared path (LocalStore), or a store written through a client that sends conditional requests.
"""

from __future__ import annotations

import contextlib
import uuid
from typing import TYPE_CHECKING, Iterator
from urllib.parse import urlparse

from jobs.errors import WarehouseError
from ray_backfill.ledger.store import JSON, AtomicCreateUnsupported

if TYPE_CHECKING:
    from pyarrow.fs import FileInfo, FileSystem


class ArrowStore:
    """A `RunStore` on a pyarrow file system; its errors are WarehouseError naming the URI."""

    atomic_create = False

    def __init__(self, root: str, filesystem: FileSystem):
        self.root = root.rstrip("/")
        self.filesystem = filesystem
        parsed = urlparse(self.root)
        # pyarrow names S3 objects bucket/key and local files by their absolute path
        self._base = parsed.path if parsed.scheme == "file" else parsed.netloc + parsed.path

    def where(self, run_id: str, name: str) -> str:
        return f"{self.root}/{run_id}/{name}"

    def _path(self, uri: str) -> str:
        return self._base + uri[len(self.root):]

    @contextlib.contextmanager
    def _reporting(self, uri: str) -> Iterator[None]:
        try:
            yield
        except OSError as exc:
            raise WarehouseError(f"run ledger {uri}: {' '.join(str(exc).split())}") from None

    def _is_file(self, path: str) -> bool:
        from pyarrow.fs import FileType

        return self.filesystem.get_file_info(path).type == FileType.File

    def write(self, run_id: str, name: str, data: bytes, content_type: str = JSON) -> None:
        uri = self.where(run_id, name)
        path, fs = self._path(uri), self.filesystem
        with self._reporting(uri):
            if fs.type_name != "local":
                with fs.open_output_stream(path, metadata={"Content-Type": content_type}) as out:
                    out.write(data)
                return
            parent = path.rsplit("/", 1)[0]
            fs.create_dir(parent, recursive=True)
            tmp = f"{parent}/.tmp-{uuid.uuid4().hex}"
            with fs.open_output_stream(tmp) as out:
                out.write(data)
            fs.move(tmp, path)

    def create(self, run_id: str, name: str, data: bytes, content_type: str = JSON) -> bool:
        raise AtomicCreateUnsupported(
            f"run ledger {self.where(run_id, name)}: a {self.filesystem.type_name} file system reached through "
            "pyarrow cannot create a file only if it is absent (no conditional write: "
            "https://github.com/apache/arrow/issues/44281); give --ledger-dir a path all nodes share (e.g. NFS)")

    def read(self, run_id: str, name: str) -> bytes | None:
        uri = self.where(run_id, name)
        path = self._path(uri)
        with self._reporting(uri):
            if not self._is_file(path):
                return None
            with self.filesystem.open_input_stream(path) as handle:
                return handle.read()

    def exists(self, run_id: str, name: str) -> bool:
        uri = self.where(run_id, name)
        with self._reporting(uri):
            return self._is_file(self._path(uri))

    def delete(self, run_id: str, name: str) -> None:
        uri = self.where(run_id, name)
        with self._reporting(uri):
            if self._is_file(self._path(uri)):
                self.filesystem.delete_file(self._path(uri))

    def run_ids(self, having: str) -> list[str]:
        from pyarrow.fs import FileSelector, FileType

        with self._reporting(self.root):
            infos = self.filesystem.get_file_info(FileSelector(self._base, allow_not_found=True, recursive=True))
        ids = []
        for info in infos:
            parts = info.path[len(self._base):].strip("/").split("/")
            if info.type == FileType.File and len(parts) == 2 and parts[1] == having:
                ids.append(parts[0])
        return ids

    def append(self, run_id: str, log: str, seq: int, line: bytes) -> None:
        uri = self.where(run_id, f"{log}/{seq:012d}.json")
        path = self._path(uri)
        with self._reporting(uri):
            if self.filesystem.type_name == "local":  # an object store has no folders to make
                self.filesystem.create_dir(path.rsplit("/", 1)[0], recursive=True)
            with self.filesystem.open_output_stream(path) as out:
                out.write(line)

    def _log_infos(self, run_id: str, log: str) -> list[FileInfo]:
        from pyarrow.fs import FileSelector, FileType

        uri = self.where(run_id, log)
        with self._reporting(uri):
            infos = self.filesystem.get_file_info(FileSelector(self._path(uri), allow_not_found=True))
        return sorted((i for i in infos if i.type == FileType.File and i.path.endswith(".json")),
                      key=lambda i: i.path)

    def read_log(self, run_id: str, log: str) -> list[bytes]:
        lines = []
        for info in self._log_infos(run_id, log):
            with self._reporting(info.path), self.filesystem.open_input_stream(info.path) as handle:
                lines.append(handle.read())
        return lines

    def clear_log(self, run_id: str, log: str) -> None:
        for info in self._log_infos(run_id, log):
            with self._reporting(info.path):
                self.filesystem.delete_file(info.path)
