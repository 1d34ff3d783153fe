"""A throwaway PostgreSQL server for tests: its own data folder, 127.0.0.1 only, password auth.

`cluster/postgres.sh install` (run by `make test`) puts PostgreSQL on the machine; this starts a
private server from its binaries. PostgreSQL refuses to run as root, so under root the server
runs as the `postgres` OS user (`runuser`), in a folder under /tmp it owns (pytest's tmp folders
are private to root).
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.helpers import ROOT

SCRIPT = ROOT / "cluster" / "postgres.sh"


@dataclass(frozen=True)
class PostgresServer:
    """A running server: connect with `user`/`password` over TCP on 127.0.0.1:`port` to `database`."""

    home: Path  # data, socket and log live here
    bindir: Path
    port: int
    database: str
    user: str
    password: str = field(repr=False)
    os_user: str | None  # the OS user the server runs as (None: this process's user)

    @property
    def data(self) -> Path:
        return self.home / "data"

    @property
    def jdbc_uri(self) -> str:
        return f"jdbc:postgresql://127.0.0.1:{self.port}/{self.database}"

    def psql(self, sql: str, *, superuser: bool = False) -> str:
        """Run `sql` with psql; our role over TCP with its password, or the superuser on the socket."""
        if superuser:
            args = ["-h", str(self.home), "-U", "postgres", "-d", "postgres"]
            env = {}
        else:
            args = ["-h", "127.0.0.1", "-U", self.user, "-d", self.database]
            env = {"PGPASSWORD": self.password}
        done = subprocess.run(
            [str(self.bindir / "psql"), *args, "-p", str(self.port), "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1",
             "-c", sql],
            env={**os.environ, **env}, capture_output=True, text=True, timeout=60,
        )
        if done.returncode != 0:
            raise RuntimeError(f"psql failed ({done.returncode}): {done.stderr.strip()}")
        return done.stdout

    def server_pids(self) -> set[int]:
        """The postmaster and its children (checkpointer, walwriter, backends …)."""
        pid_file = self.data / "postmaster.pid"
        try:
            postmaster = int(pid_file.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            postmaster = None
        pids = set()
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            if str(self.data) in cmdline or (postmaster and int(entry.name) == postmaster) or (
                    postmaster and ppid == postmaster):
                pids.add(int(entry.name))
        return pids


def bindir() -> Path:
    """PostgreSQL's binaries, found by cluster/postgres.sh; fails saying how to install them."""
    done = subprocess.run([str(SCRIPT), "bindir"], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{done.stderr.strip()} (or `make services`)")
    return Path(done.stdout.strip())


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _as_server_user(os_user: str | None, argv: list[str], **kwargs) -> subprocess.CompletedProcess:
    prefix = ["runuser", "-u", os_user, "--"] if os_user else []
    return subprocess.run([*prefix, *argv], capture_output=True, text=True, timeout=120, **kwargs)


def start_postgres() -> PostgresServer:
    """initdb a fresh cluster, start it on 127.0.0.1 and a free port, create a role and a database."""
    bins = bindir()
    os_user = "postgres" if os.geteuid() == 0 else None
    home = Path(tempfile.mkdtemp(prefix="rbf-pg-"))  # short: the socket path has a 107-byte limit
    if os_user:
        shutil.chown(home, user=os_user, group=os_user)
    password = secrets.token_urlsafe(18)
    server = PostgresServer(home=home, bindir=bins, port=_free_port(), database="lakehouse", user="backfill",
                            password=password, os_user=os_user)
    # Socket connections (only from this folder's owner, and root) trust; TCP needs a password.
    init = _as_server_user(os_user, [str(bins / "initdb"), "-D", str(server.data), "-U", "postgres", "-E", "UTF8",
                                     "--auth-local=trust", "--auth-host=scram-sha-256", "--no-sync"])
    if init.returncode != 0:
        raise RuntimeError(f"initdb failed: {init.stderr.strip()}")
    options = (f"-c listen_addresses=127.0.0.1 -p {server.port} -c unix_socket_directories={home} "
               "-c password_encryption=scram-sha-256 -c fsync=off -c synchronous_commit=off -c max_connections=60")
    start = _as_server_user(os_user, [str(bins / "pg_ctl"), "-D", str(server.data), "-l", str(home / "server.log"),
                                      "-o", options, "-w", "-t", "60", "start"])
    if start.returncode != 0:
        log = (home / "server.log").read_text() if (home / "server.log").exists() else ""
        raise RuntimeError(f"pg_ctl start failed: {start.stderr.strip()} {log[-2000:]}")
    server.psql(f"CREATE ROLE {server.user} LOGIN PASSWORD '{password}'", superuser=True)
    server.psql(f"CREATE DATABASE {server.database} OWNER {server.user}", superuser=True)
    return server


def stop_postgres(server: PostgresServer, timeout: float = 30) -> set[int]:
    """Stop the server (fast mode: ends sessions, then a clean shutdown); returns pids left alive."""
    pids = server.server_pids()
    _as_server_user(server.os_user, [str(server.bindir / "pg_ctl"), "-D", str(server.data), "-m", "fast", "-w",
                                     "-t", str(int(timeout)), "stop"])
    deadline = time.monotonic() + timeout
    alive = pids | server.server_pids()
    while alive and time.monotonic() < deadline:
        alive = {p for p in alive if Path(f"/proc/{p}").exists() and not _is_zombie(p)}
        time.sleep(0.2)
    if not alive:
        shutil.rmtree(server.home, ignore_errors=True)
    return alive


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return True
