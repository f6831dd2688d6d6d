"""The same journal behaviours on both backends: sqlite (:class:`mss.journal.Journal`) and PostgreSQL
(:class:`mss.aio.journal_pg.PgJournal` on a real server).

A tiny adapter (:class:`Backend`) hides what differs by design: PostgreSQL commits in the background
(``commit(done)``) and claims, fetches and prunes in background tasks whose results are picked up
later; sqlite does each at once. Two "nodes" are two journals on one database (sqlite: two workers of
one file).
"""

from __future__ import annotations

import abc
import asyncio
import sqlite3
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from mss.aio.journal_pg import PgJournal
from mss.errors import JournalError
from mss.iif import CallbackResponse
from mss.journal import Cdr, Journal, NewCallback, PendingResponse
from mss.quality import LegQuality

WORKER = {"a": 0, "b": 1}  # sqlite: the node names of the tests as worker numbers


def new(
    cb_id: str, *, peer: str = "as1", udp: tuple[str, int] | None = None, duration: int = 60
) -> NewCallback:
    return NewCallback(
        id=cb_id, peer=peer, transport="udp" if udp else "tcp", reply_addr=udp, user1="100", user2="101",
        duration=duration, received_at=1000.0,
    )


def answered(cb_id: str, talk: int = 0) -> CallbackResponse:
    return CallbackResponse(id=cb_id, real_duration=talk)


class Backend(abc.ABC):
    """One backend's way to open, commit, claim, fetch, prune and peek."""

    name: str

    @abc.abstractmethod
    async def open(self, node: str = "a") -> Any: ...
    @abc.abstractmethod
    async def close(self, journal: Any) -> None: ...
    @abc.abstractmethod
    async def claim(self, journal: Any, seq: int) -> bool: ...
    @abc.abstractmethod
    async def owed(self, journal: Any, peer: str, limit: int = 10) -> list[PendingResponse]: ...
    @abc.abstractmethod
    async def prune(self, journal: Any, before: float, limit: int = 200) -> int: ...
    @abc.abstractmethod
    async def cdr(self, journal: Any, cb_id: str) -> dict[str, object] | None: ...
    @abc.abstractmethod
    async def value(self, sql: str) -> object: ...

    async def commit(self, journal: Any) -> JournalError | None:
        """Commit what ``journal`` queued; the error of a failed commit (nothing kept), else None."""
        finished: asyncio.Future[JournalError | None] = asyncio.get_running_loop().create_future()
        journal.commit(finished.set_result)
        return await asyncio.wait_for(finished, 30)


class Sqlite(Backend):
    name = "sqlite"

    def __init__(self, path: Path) -> None:
        self.path = path

    async def open(self, node: str = "a") -> Journal:
        journal = Journal(self.path, worker=WORKER[node], workers=2)
        journal.on_queued = lambda: None  # grouped, as the desk runs it: committed by commit()
        return journal

    async def close(self, journal: Journal) -> None:
        journal.close()

    async def claim(self, journal: Journal, seq: int) -> bool:
        return journal.claim_response(seq)

    async def owed(self, journal: Journal, peer: str, limit: int = 10) -> list[PendingResponse]:
        return [p for p in journal.owed_to(peer, limit) if journal.claim_response(p.seq)]

    async def prune(self, journal: Journal, before: float, limit: int = 200) -> int:
        return journal.prune(before, limit)

    async def cdr(self, journal: Journal, cb_id: str) -> dict[str, object] | None:
        return journal.cdr(cb_id)

    async def value(self, sql: str) -> object:
        db = sqlite3.connect(self.path, timeout=5)
        try:
            with db:
                row = db.execute(sql).fetchone()
        finally:
            db.close()
        return None if row is None else row[0]


class Postgres(Backend):
    name = "postgresql"

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn

    async def open(self, node: str = "a") -> PgJournal:
        return await PgJournal.open(self.dsn, node=node, lease=60.0)

    async def close(self, journal: PgJournal) -> None:
        await journal.aclose()

    async def claim(self, journal: PgJournal, seq: int) -> bool:
        if journal.claim_response(seq):
            return True
        await journal.drain()  # the claim attempt in the background
        return journal.claim_response(seq)

    async def owed(self, journal: PgJournal, peer: str, limit: int = 10) -> list[PendingResponse]:
        ready = journal.owed_to(peer, limit)  # claimed already (a NOTIFY's fetch); starts a fetch-and-claim
        await journal.drain()
        return ready + journal.owed_to(peer, limit - len(ready))

    async def prune(self, journal: PgJournal, before: float, limit: int = 200) -> int:
        journal.prune(before, limit)  # one batch in the background
        await journal.drain()
        deleted = journal.prune(0.0, limit)  # its count (this batch deletes nothing)
        await journal.drain()
        return deleted

    async def cdr(self, journal: PgJournal, cb_id: str) -> dict[str, object] | None:
        return await journal.fetch_cdr(cb_id)

    async def value(self, sql: str) -> object:
        db = await asyncpg.connect(self.dsn, timeout=10)
        try:
            return await db.fetchval(sql)
        finally:
            await db.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    if request.param == "sqlite":
        return Sqlite(tmp_path / "journal.sqlite3")
    return Postgres(request.getfixturevalue("pg_dsn"))


def run(test: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(test(), 120))


def test_request_response_delivered(backend: Backend) -> None:
    async def go() -> None:
        j = await backend.open()
        seqs = j.record_requests([new("r1"), new("r2"), new("r3", udp=("127.0.0.1", 9000))])
        assert len(set(seqs)) == 3 and seqs == sorted(seqs)
        assert await backend.commit(j) is None
        line = j.record_response(seqs[0], answered("r1", 12), 2000.0)
        assert line == "RESPONSE: id=r1;real_duration=12;"
        j.record_response(seqs[2], answered("r3"), 2000.0)
        assert await backend.commit(j) is None
        j.mark_delivered(seqs[0], 2001.0)
        assert await backend.commit(j) is None
        assert await backend.value(f"SELECT delivered_at FROM responses WHERE seq = {seqs[0]}") == 2001.0
        assert await backend.value("SELECT count(*) FROM callbacks WHERE state = 'active'") == 1
        await backend.close(j)

        # after a restart: r2 was cut (still active), r3's RESPONSE is owed (UDP, to its source)
        j = await backend.open()
        assert [c.id for c in j.interrupted()] == ["r2"]
        assert [(p.id, p.transport, p.reply_addr, p.line) for p in j.undelivered()] == [
            ("r3", "udp", ("127.0.0.1", 9000), "RESPONSE: id=r3;real_duration=0;")
        ]
        await backend.close(j)

    run(go)


def test_interrupted_talk_time_up_to_the_last_heartbeat(backend: Backend) -> None:
    async def go() -> None:
        j = await backend.open()
        bridged, never, capped = j.record_requests([new("b"), new("n"), new("c", duration=5)])
        j.mark_bridged(bridged, 1000.0)
        j.mark_bridged(capped, 1000.0)
        j.heartbeat(1000.4)
        j.heartbeat(1007.4)  # the last beat before the crash
        assert await backend.commit(j) is None
        await backend.close(j)

        j = await backend.open()
        cut = {c.id: c.real_duration for c in j.interrupted()}
        assert cut == {"b": 7, "n": 0, "c": 5}  # rounded; never bridged: 0; at most the duration
        assert [c.seq for c in j.interrupted()] == [bridged, never, capped]
        await backend.close(j)

    run(go)


def test_undelivered_after_reopen_only_the_nodes_own(backend: Backend) -> None:
    async def go() -> None:
        a, b = await backend.open("a"), await backend.open("b")
        (sa,) = a.record_requests([new("of-a")])
        (sb,) = b.record_requests([new("of-b")])
        assert await backend.commit(a) is None and await backend.commit(b) is None
        a.record_response(sa, answered("of-a", 3), 1100.0)
        b.record_response(sb, answered("of-b", 4), 1100.0)
        assert await backend.commit(a) is None and await backend.commit(b) is None
        await backend.close(a)
        a = await backend.open("a")
        assert [(p.seq, p.id, p.peer, p.line) for p in a.undelivered()] == [
            (sa, "of-a", "as1", "RESPONSE: id=of-a;real_duration=3;")
        ]
        assert a.interrupted() == []
        await backend.close(a)
        await backend.close(b)

    run(go)


def test_claims_only_one_wins_and_a_release_lets_the_other_take_it(backend: Backend) -> None:
    async def go() -> None:
        a, b = await backend.open("a"), await backend.open("b")
        (seq,) = a.record_requests([new("kept")])
        assert await backend.commit(a) is None
        a.record_response(seq, answered("kept"), 1100.0)  # kept: no connection from as1 on a
        assert await backend.commit(a) is None

        assert await backend.claim(b, seq) is True
        assert await backend.claim(a, seq) is False  # b writes it; a must not
        assert await backend.owed(a, "as1") == []
        b.release_response(seq)  # b's connection went: kept again
        assert await backend.commit(b) is None
        taken = await backend.owed(a, "as1")
        assert [p.seq for p in taken] == [seq]  # claimed by a now
        assert await backend.claim(b, seq) is False
        a.mark_delivered(seq, 1200.0)
        assert await backend.commit(a) is None
        assert await backend.owed(b, "as1") == []
        assert await backend.value(f"SELECT delivered_at FROM responses WHERE seq = {seq}") == 1200.0
        await backend.close(a)
        await backend.close(b)

    run(go)


def test_a_failed_commit_keeps_none_of_its_writes(backend: Backend) -> None:
    async def go() -> None:
        j = await backend.open()
        (old,) = j.record_requests([new("old")])
        assert await backend.commit(j) is None
        # Another writer recorded a RESPONSE for it meanwhile: ours will hit a duplicate key, for real.
        await backend.value(
            "INSERT INTO responses (seq, id, peer, transport, line, created_at)"
            f" VALUES ({old}, 'old', 'as1', 'tcp', 'RESPONSE: id=old;real_duration=9;', 1050.0)"
        )
        (fresh,) = j.record_requests([new("fresh")])
        j.mark_bridged(old, 1001.0)
        j.record_response(old, answered("old", 1), 1100.0)
        error = await backend.commit(j)
        assert isinstance(error, JournalError) and "cannot commit" in str(error)
        assert await backend.value("SELECT count(*) FROM callbacks WHERE id = 'fresh'") == 0
        assert await backend.value(f"SELECT bridged_at FROM callbacks WHERE seq = {old}") is None
        assert await backend.value(f"SELECT state FROM callbacks WHERE seq = {old}") == "active"
        # the next group is a group of its own
        (later,) = j.record_requests([new("later")])
        assert await backend.commit(j) is None
        assert await backend.value(f"SELECT id FROM callbacks WHERE seq = {later}") == "later"
        assert fresh != later
        await backend.close(j)

    run(go)


def test_prune_keeps_undelivered_and_in_progress(backend: Backend) -> None:
    async def go() -> None:
        j = await backend.open()
        old, owed, active, recent = j.record_requests([new("old"), new("owed"), new("active"), new("recent")])
        assert await backend.commit(j) is None
        cdr = Cdr(caller="1000", released_at=1100.0, released_by="user1", result="answered", reason="bye")
        for seq, cb_id in ((old, "old"), (owed, "owed"), (recent, "recent")):
            j.record_response(seq, answered(cb_id), 1100.0, cdr)
        j.mark_delivered(old, 1200.0)
        j.mark_delivered(recent, 5000.0)
        assert await backend.commit(j) is None
        assert await backend.prune(j, before=3000.0) == 1
        assert await backend.value("SELECT count(*) FROM callbacks") == 3
        assert await backend.value(f"SELECT count(*) FROM callbacks WHERE seq = {old}") == 0
        assert await backend.value(f"SELECT count(*) FROM cdrs WHERE seq = {old}") == 0
        assert await backend.value(f"SELECT count(*) FROM responses WHERE seq = {owed}") == 1
        assert await backend.value(f"SELECT state FROM callbacks WHERE seq = {active}") == "active"
        assert await backend.prune(j, before=3000.0) == 0
        await backend.close(j)

    run(go)


def test_relay_ports_of_a_cut_callback_are_quarantined(backend: Backend) -> None:
    async def go() -> None:
        j = await backend.open()
        cut, ended = j.record_requests([new("cut"), new("ended")])
        j.record_ports(cut, [40000, 40002])
        j.record_ports(ended, [40004])
        j.heartbeat(time.time())
        assert await backend.commit(j) is None
        j.record_response(ended, answered("ended"), 1100.0)  # its ports are forgotten
        assert await backend.commit(j) is None
        await backend.close(j)

        j = await backend.open()
        now = time.time()
        assert sorted(j.quarantined_ports(now, 30.0)) == [(40000, now + 30.0), (40002, now + 30.0)]
        assert await backend.commit(j) is None
        assert await backend.value(f"SELECT count(*) FROM relay_ports WHERE seq = {ended}") == 0
        until = await backend.value(f"SELECT quarantined_until FROM relay_ports WHERE seq = {cut}")
        assert until == now + 30.0
        await backend.close(j)

        # started again after the quarantine: nothing left out of use
        j = await backend.open()
        assert j.quarantined_ports(now + 31.0, 30.0) == []
        assert await backend.commit(j) is None
        await backend.close(j)

    run(go)


def test_cdr_with_quality_columns(backend: Backend) -> None:
    async def go() -> None:
        j = await backend.open()
        (seq,) = j.record_requests([new("q")])
        assert await backend.commit(j) is None
        leg = LegQuality(packets_in=500, bytes_in=86_000, packets_out=501, bytes_out=86_172, lost=3,
                         jitter_mean_ms=1.5, jitter_max_ms=4.25, mos=4.3)
        cdr = Cdr(caller="1000", leg1_call_id="c1", leg2_call_id="c2", leg1_code=200, leg2_code=200,
                  codec="PCMU", leg1_answered_at=1001.0, leg2_answered_at=1003.0, released_at=1013.0,
                  released_by="user2", result="answered", reason="user2 hung up", leg1=leg, leg2=None)
        j.record_response(seq, answered("q", 10), 1013.0, cdr)
        assert await backend.commit(j) is None
        row = await backend.cdr(j, "q")
        assert row is not None
        assert {k: row[k] for k in ("seq", "id", "user1", "user2", "caller", "codec", "requested_at",
                                    "released_by", "result", "real_duration")} == {
            "seq": seq, "id": "q", "user1": "100", "user2": "101", "caller": "1000", "codec": "PCMU",
            "requested_at": 1000.0, "released_by": "user2", "result": "answered", "real_duration": 10,
        }
        assert (row["leg1_packets_in"], row["leg1_bytes_out"], row["leg1_lost"], row["leg1_mos"]) == (
            500, 86_172, 3, 4.3)
        assert (row["leg1_jitter_mean_ms"], row["leg1_jitter_max_ms"]) == (1.5, 4.25)
        assert row["leg2_packets_in"] is None and row["leg2_mos"] is None
        assert await backend.cdr(j, "nope") is None
        await backend.close(j)

    run(go)
