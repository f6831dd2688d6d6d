"""A real PostgreSQL server for the tests: initdb and postgres from Debian's packages, in a temp directory.

:func:`start_postgres` makes a cluster in a directory, starts ``postgres`` on a free port of 127.0.0.1
(and a unix socket in that directory) with fsync off, and waits until it takes connections. Postgres
refuses to run as root: when the tests run as root (here and in CI) the server runs as the ``postgres``
system user (Debian's package makes it) and the directory is handed to it; otherwise it runs as the
current user. Clients log in as ``mss`` with a password over TCP (so a wrong password is a real
authentication failure); :meth:`PgServer.create_database` gives each test a database of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg

__all__ = ["PASSWORD", "USER", "PgServer", "pg_bin", "postgres_in_a_temp_dir", "start_postgres"]

USER = "mss"
PASSWORD = "mss-test-secret"

#: Seconds a start (initdb excluded) or a stop may take before the test fails with the server's log.
START_TIMEOUT = 30.0
STOP_TIMEOUT = 15.0

#: Free ports tried when another process takes the one picked between the pick and postgres's bind.
PORT_ATTEMPTS = 3


def pg_bin() -> Path:
    """The newest installed PostgreSQL's bin directory (Debian: /usr/lib/postgresql/<version>/bin)."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    if not found:
        raise RuntimeError(
            "PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/initdb): run tests/run.sh, which"
            " installs Debian's postgresql package"
        )
    return Path(found[-1]).parent


@dataclass
class PgServer:
    """A running postgres: its address, its files, and how to stop it."""

    directory: Path
    port: int
    process: subprocess.Popen[bytes]
    log: Path
    bin: Path
    owner: tuple[int, int] | None = None  # (uid, gid) the server runs as; None: this process's

    def dsn(self, database: str = "postgres") -> str:
        """A libpq URL for ``database`` over TCP on 127.0.0.1."""
        return f"postgresql://{USER}:{PASSWORD}@127.0.0.1:{self.port}/{database}"

    def create_database(self) -> str:
        """A new, empty database with a unique name; returns its DSN (outside an event loop)."""
        return asyncio.run(self.acreate_database())

    async def acreate_database(self) -> str:
        """:meth:`create_database` inside an event loop."""
        name = f"t_{uuid.uuid4().hex[:16]}"
        conn = await asyncpg.connect(self.dsn(), timeout=10)
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()
        return self.dsn(name)

    def running(self) -> bool:
        return self.process.poll() is None

    def stop(self) -> None:
        """Fast shutdown (SIGINT: clients are disconnected, what was committed stays); bounded wait."""
        if not self.running():
            return
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.kill()

    def kill(self) -> None:
        """SIGKILL the postmaster and its backends, as a crash of the server's host would."""
        children = _children(self.process.pid)
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.process.pid, signal.SIGKILL)
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(STOP_TIMEOUT)

    def start_again(self) -> None:
        """Start the stopped (or killed) server again on the same port, with the same data."""
        if self.running():
            return
        self.process = _launch(self.bin, self.directory, self.port, self.log, self.owner)
        _wait_ready(self)

    def pids(self) -> list[int]:
        """The postmaster and its backends (for the CPU figures of the bench)."""
        if not self.running():
            return []
        return [self.process.pid, *_children(self.process.pid)]


def _children(pid: int) -> list[int]:
    """Direct children of ``pid`` (postgres's backends and helpers)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # the fields after the command name, which is in parentheses and may hold spaces
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            found.append(int(entry.name))
    return found


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _launch(
    bin_dir: Path, directory: Path, port: int, log: Path, owner: tuple[int, int] | None
) -> subprocess.Popen[bytes]:
    uid, gid = owner or (None, None)
    with log.open("ab") as out:
        return subprocess.Popen(
            [
                str(bin_dir / "postgres"), "-D", str(directory / "data"), "-p", str(port),
                "-k", str(directory), "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off",
                "-c", "full_page_writes=off", "-c", "max_connections=60", "-c", "shared_buffers=16MB",
            ],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=directory,
            start_new_session=True, user=uid, group=gid, extra_groups=[] if owner else None,
        )


def _wait_ready(server: PgServer) -> None:
    """Until ``pg_isready`` says yes (bounded); a clear error with the server's log otherwise."""
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if not server.running():
            break
        ready = subprocess.run(
            [str(server.bin / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(server.port), "-t", "1"],
            check=False, timeout=10,
        )
        if ready.returncode == 0:
            return
        time.sleep(0.1)
    server.kill()
    tail = server.log.read_text(errors="replace")[-3000:]
    raise RuntimeError(f"postgres did not start on 127.0.0.1:{server.port}; its log ends:\n{tail}")


def start_postgres(directory: Path) -> PgServer:
    """Make a cluster in ``directory`` (empty; its parents must be traversable by the server's user)
    and start postgres on a free port of 127.0.0.1, returning once it takes connections."""
    bin_dir = pg_bin()
    owner: tuple[int, int] | None = None
    if os.getuid() == 0:
        try:
            user = pwd.getpwnam("postgres")
        except KeyError:
            raise RuntimeError("running as root and there is no postgres user to run the server as") from None
        owner = (user.pw_uid, user.pw_gid)
    pwfile = directory / "pwfile"
    pwfile.write_text(PASSWORD + "\n")
    if owner:
        os.chown(directory, *owner)
        os.chown(pwfile, *owner)
    os.chmod(directory, 0o700)
    uid, gid = owner or (None, None)
    log = directory / "postgres.log"
    init = subprocess.run(
        [str(bin_dir / "initdb"), "-D", str(directory / "data"), f"--username={USER}",
         f"--pwfile={pwfile}", "--auth-local=trust", "--auth-host=scram-sha-256", "--encoding=UTF8",
         "--locale=C", "--no-sync"],
        capture_output=True, cwd=directory, timeout=120, check=False,
        user=uid, group=gid, extra_groups=[] if owner else None,
    )
    if init.returncode != 0:
        raise RuntimeError(f"initdb failed ({init.returncode}): {init.stderr.decode(errors='replace')}")
    last: RuntimeError | None = None
    for _ in range(PORT_ATTEMPTS):
        port = _free_port()
        process = _launch(bin_dir, directory, port, log, owner)
        server = PgServer(directory=directory, port=port, process=process, log=log, bin=bin_dir, owner=owner)
        try:
            _wait_ready(server)
        except RuntimeError as exc:
            last = exc
            continue
        return server
    assert last is not None
    raise last


@contextlib.contextmanager
def postgres_in_a_temp_dir() -> Iterator[PgServer]:
    """A server in a directory of its own, stopped and removed afterwards. Not pytest's tmp_path:
    its parents are private to the user running the tests, and the server runs as the postgres user
    when that user is root."""
    directory = Path(tempfile.mkdtemp(prefix="mss-pg-"))
    try:
        server = start_postgres(directory)
        try:
            yield server
        finally:
            server.stop()
    finally:
        shutil.rmtree(directory, ignore_errors=True)
