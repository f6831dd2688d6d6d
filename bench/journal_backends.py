"""The journal's cost per callback: PostgreSQL (:class:`mss.aio.journal_pg.PgJournal`) against sqlite.

A callback's journal work is four writes: its REQUEST (:meth:`record_requests`), the bridge
(:meth:`mark_bridged`), its RESPONSE (:meth:`record_response`, with a CDR) and the delivery
(:meth:`mark_delivered`). The desk groups the writes of one event-loop iteration into one commit, and a
callback's four writes fall in four iterations; so one round here is ``k`` callbacks, each phase of
the ``k`` committed together (4 commits per round, a heartbeat once a second as the service beats),
for k = 1, 16, 64, on uvloop as the service runs. Reported per callback: the CPU
of this process (mss's side, ``time.process_time``), the CPU of the PostgreSQL server's processes
(utime + stime from /proc, the postmaster and all its children) and the wall time, with the commits
waited for one after the other (a latency-bound figure: the desk does not wait, it goes on while a
commit is in flight).

The server is a real one started for the run (tests/pg.py: initdb + postgres on 127.0.0.1, fsync off
as in the tests); ``postgresql+fsync`` turns fsync and synchronous_commit back on (a server's defaults;
the WAL is flushed at each commit). sqlite runs in the same directory: the single process's group
(``sqlite``) and a worker's deferred group (``sqlite-worker``).

Run (under a minute): .venv/bin/python -m bench.journal_backends [--callbacks N]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncpg
import uvloop

from mss.aio.journal_pg import PgJournal
from mss.errors import JournalError
from mss.iif import CallbackResponse
from mss.journal import Cdr, Journal, NewCallback
from tests.pg import PgServer, start_postgres

GROUPS = (1, 16, 64)
TICK = os.sysconf("SC_CLK_TCK")


def server_cpu(server: PgServer | None) -> float:
    """Seconds of CPU the server's processes used so far (those alive now)."""
    if server is None:
        return 0.0
    total = 0
    for pid in server.pids():
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
    return total / TICK


async def commit(journal: Any) -> None:
    finished: asyncio.Future[JournalError | None] = asyncio.get_running_loop().create_future()
    journal.commit(finished.set_result)
    error = await finished
    if error is not None:
        raise error


async def rounds(journal: Any, k: int, callbacks: int, claim: bool) -> None:
    """``callbacks`` callbacks' journal work, ``k`` per commit, phase by phase."""
    now = time.time()
    cdr = Cdr(caller="1000", released_at=now, released_by="user2", result="answered", reason="user2 hung up")
    next_beat = 0.0
    for r in range(callbacks // k):
        seqs = journal.record_requests([
            NewCallback(id=f"r{r}.{i}", peer="as1", transport="tcp", reply_addr=None, user1="100",
                        user2="101", duration=60, received_at=now)
            for i in range(k)
        ])
        await commit(journal)
        for seq in seqs:
            journal.mark_bridged(seq, now)
        if time.monotonic() >= next_beat:  # the service beats once a second, whatever the load
            journal.heartbeat(time.time())
            next_beat = time.monotonic() + 1.0
        await commit(journal)
        for i, seq in enumerate(seqs):
            journal.record_response(seq, CallbackResponse(id=f"r{r}.{i}", real_duration=10), now, cdr,
                                    claim=claim)
        await commit(journal)
        for seq in seqs:
            journal.mark_delivered(seq, now)
        await commit(journal)


async def measure(
    name: str, opener: Callable[[], Any], closer: Callable[[Any], Any], server: PgServer | None,
    callbacks: int, claim: bool,
) -> None:
    for k in GROUPS:
        journal = await opener()
        await rounds(journal, k, 64, claim)  # warm up: connections, statement caches, pages
        n = max(k, callbacks // k * k) if k > 1 else callbacks // 4
        cpu, pg, wall = time.process_time(), server_cpu(server), time.perf_counter()
        await rounds(journal, k, n, claim)
        cpu, pg, wall = time.process_time() - cpu, server_cpu(server) - pg, time.perf_counter() - wall
        await closer(journal)
        print(f"{name:16} k={k:<3} {n:6} callbacks  mss CPU {cpu / n * 1e6:8.1f} µs  server CPU"
              f" {pg / n * 1e6:8.1f} µs  wall {wall / n * 1e6:8.1f} µs  per callback", flush=True)


async def main(callbacks: int) -> None:
    directory = Path(tempfile.mkdtemp(prefix="mss-bench-pg-"))
    server = start_postgres(directory)
    sqlite_dir = Path(tempfile.mkdtemp(prefix="mss-bench-sqlite-"))
    try:
        serial = iter(range(1_000_000))

        async def sqlite_single() -> Journal:
            journal = Journal(sqlite_dir / f"single{next(serial)}.sqlite3")
            journal.on_queued = lambda: None
            return journal

        async def sqlite_worker() -> Journal:
            journal = Journal(sqlite_dir / f"worker{next(serial)}.sqlite3", worker=0, workers=2)
            journal.on_queued = lambda: None
            return journal

        async def sqlite_close(journal: Journal) -> None:
            journal.close()

        async def pg_close(journal: PgJournal) -> None:
            await journal.aclose()

        await measure("sqlite", sqlite_single, sqlite_close, None, callbacks, False)
        await measure("sqlite-worker", sqlite_worker, sqlite_close, None, callbacks, True)
        for fsync in (False, True):
            dsn = await server.acreate_database()
            if fsync:
                db = await asyncpg.connect(dsn)
                await db.execute("ALTER SYSTEM SET fsync = on")
                await db.execute("ALTER SYSTEM SET synchronous_commit = on")
                await db.execute("SELECT pg_reload_conf()")
                await db.close()

            async def pg_open(dsn: str = dsn) -> PgJournal:
                return await PgJournal.open(dsn, node=f"bench{next(serial)}", lease=60)

            await measure("postgresql+fsync" if fsync else "postgresql", pg_open, pg_close, server,
                          callbacks, True)
    finally:
        server.stop()
        shutil.rmtree(directory, ignore_errors=True)
        shutil.rmtree(sqlite_dir, ignore_errors=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--callbacks", type=int, default=2048, help="callbacks per measurement")
    uvloop.run(main(parser.parse_args().callbacks))  # the service's event loop
