"""A real PostgreSQL server for tests: Debian's binaries, a throwaway cluster, a fresh database per test.

``initdb`` writes a cluster into a temporary directory and ``pg_ctl`` starts it on a free loopback port
for the whole session. PostgreSQL refuses to run as root, so when the tests run as root the cluster
belongs to (and runs as) the ``postgres`` system user, or ``nobody``. ``fsync`` is off for speed: a
killed or restarted *server* still loses nothing committed (the WAL is in the OS page cache); only a
machine crash would, and tests never need that. Tests skip with a clear message only when PostgreSQL
cannot be installed here (no binaries and no apt-get as root).
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def find_bindir() -> Path | None:
    """The newest installed PostgreSQL's bin directory, installing the Debian package when possible."""
    for attempt in range(2):
        found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
        if found:
            return Path(found[-1]).parent
        if attempt or os.geteuid() != 0 or shutil.which("apt-get") is None:
            return None
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-qq"], env=env, capture_output=True, timeout=600, check=False)
        subprocess.run(["apt-get", "install", "-y", "-qq", "postgresql"], env=env, capture_output=True, timeout=900, check=False)
    return None


@dataclass
class PostgresServer:
    """A running cluster: ``admin_url`` reaches the ``postgres`` database as superuser."""

    bindir: Path
    datadir: Path
    port: int
    run_as: str | None
    _dbs: list[str] = field(default_factory=list)

    @property
    def admin_url(self) -> str:
        return self.url("postgres")

    def url(self, database: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.bindir / args[0]), *args[1:]], user=self.run_as, capture_output=True, text=True,
            check=check, timeout=120, cwd=str(self.datadir.parent),
        )

    def start(self) -> None:
        log = self.datadir.parent / "server.log"
        opts = (f"-c listen_addresses=127.0.0.1 -p {self.port} -c unix_socket_directories='{self.datadir.parent}'"
                " -c fsync=off -c full_page_writes=off -c synchronous_commit=on -c max_connections=200")
        result = self._run("pg_ctl", "-D", str(self.datadir), "-l", str(log), "-o", opts, "-w", "-t", "60", "start",
                           check=False)
        if result.returncode != 0:
            tail = log.read_text()[-2000:] if log.exists() else ""
            raise RuntimeError(f"pg_ctl start failed: {result.stderr}\n{tail}")

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", str(self.datadir), "-m", mode, "-w", "stop", check=False)

    def restart(self, mode: str = "immediate") -> None:
        """Stop the server (``immediate`` = as if it crashed: no checkpoint) and start it again."""
        self.stop(mode)
        self.start()

    def create_database(self) -> str:
        """A fresh, empty database; returns its URL."""
        name = "t_" + uuid.uuid4().hex[:12]
        self._run("psql", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "-d", "postgres",
                  "-v", "ON_ERROR_STOP=1", "-q", "-c", f"CREATE DATABASE {name} TEMPLATE template0")
        self._dbs.append(name)
        return self.url(name)


def start_postgres(base: Path | None = None) -> PostgresServer:
    bindir = find_bindir()
    if bindir is None:
        pytest.skip("PostgreSQL is not installed and cannot be installed here (needs apt-get as root): "
                    "install the `postgresql` package to run the postgres tests")
    run_as: str | None = None
    if os.geteuid() == 0:
        for candidate in ("postgres", "nobody"):
            try:
                pwd.getpwnam(candidate)
            except KeyError:
                continue
            run_as = candidate
            break
    workdir = Path(tempfile.mkdtemp(prefix="gofannon-pg-", dir=str(base) if base else None))
    datadir = workdir / "data"
    if run_as is not None:
        entry = pwd.getpwnam(run_as)
        os.chown(workdir, entry.pw_uid, entry.pw_gid)
    server = PostgresServer(bindir=bindir, datadir=datadir, port=_free_port(), run_as=run_as)
    init = server._run("initdb", "-D", str(datadir), "-U", "postgres", "--auth=trust", "--encoding=UTF8",
                       "--locale=C", "--no-sync", check=False)
    if init.returncode != 0:
        raise RuntimeError(f"initdb failed: {init.stderr}")
    server.start()
    return server


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One PostgreSQL cluster for the whole test session."""
    server = start_postgres()
    try:
        yield server
    finally:
        server.stop("fast")
        shutil.rmtree(server.datadir.parent, ignore_errors=True)


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> str:
    """The URL of a fresh, empty database for one test."""
    return postgres_server.create_database()


__all__ = ["PostgresServer", "find_bindir", "postgres_server", "postgres_url", "start_postgres"]
