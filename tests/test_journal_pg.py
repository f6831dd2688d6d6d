"""What only the PostgreSQL journal does, on a real server: write-behind commits that never block,
the lease and the takeover of a dead node, NOTIFY between nodes, a server that goes away."""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import asyncpg
import pytest

from mss.aio.journal_pg import PgJournal
from mss.desk import CallbackDesk, Sender
from mss.errors import JournalError
from mss.iif import CallbackResponse, Cancel
from mss.journal import CDR_COLUMNS, SEQ_BLOCK, Cdr, NewCallback, Takeover
from mss.journal_pg import (
    INSERT_CALLBACK,
    MARK_BRIDGED,
    MARK_DELIVERED,
    NOTIFY_RESPONSE,
    PHASES,
    RECORD_RESPONSE,
    RELEASE_RESPONSE,
    KeyBlocks,
    redact,
    talk_time,
)
from tests.pg import PASSWORD, PgServer, postgres_in_a_temp_dir
from tests.test_config import render
from tests.test_desk import Engine, Outlet, ack, req, resp

#: Seconds a test waits at most for something the background does (a bound, not a timing check).
PATIENCE = 20.0


def new(
    cb_id: str, *, peer: str = "as1", duration: int = 60, udp: tuple[str, int] | None = None
) -> NewCallback:
    return NewCallback(
        id=cb_id, peer=peer, transport="udp" if udp else "tcp", reply_addr=udp, user1="100", user2="101",
        duration=duration, received_at=time.time(),
    )


def run(test: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(test(), 120))


async def until(condition: Callable[[], bool], what: str) -> None:
    """Wait (bounded by :data:`PATIENCE`) until ``condition()`` holds."""
    deadline = time.monotonic() + PATIENCE
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {PATIENCE} s: {what}")
        await asyncio.sleep(0.02)


async def commit(journal: PgJournal) -> JournalError | None:
    finished: asyncio.Future[JournalError | None] = asyncio.get_running_loop().create_future()
    journal.commit(finished.set_result)
    return await asyncio.wait_for(finished, PATIENCE)


@contextlib.asynccontextmanager
async def beating(*journals: PgJournal) -> AsyncIterator[None]:
    """Renew the journals' leases every 0.3 s meanwhile, as the service's heartbeat does."""

    async def beat() -> None:
        while True:
            for j in journals:
                j.heartbeat(time.time())
                j.commit(lambda _error: None)
            await asyncio.sleep(0.3)

    task = asyncio.create_task(beat())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def value(dsn: str, sql: str, *args: object) -> object:
    db = await asyncpg.connect(dsn, timeout=10)
    try:
        return await db.fetchval(sql, *args)
    finally:
        await db.close()


def test_writes_queue_while_a_commit_is_in_flight_and_dones_come_in_order(pg_dsn: str) -> None:
    async def go() -> None:
        j = await PgJournal.open(pg_dsn, node="n1", lease=60)
        asked: list[str] = []
        j.on_queued = lambda: asked.append("queued")
        done: list[tuple[str, JournalError | None]] = []
        immediate: list[JournalError | None] = []
        j.commit(immediate.append)
        assert immediate == [None]  # nothing queued, nothing in flight: at once
        assert not j.pending

        first = j.record_requests([new(f"a{i}") for i in range(50)])
        j.record_requests([new("a50")])
        assert asked == ["queued"]  # the first write after a commit was asked, once
        j.commit(lambda e: done.append(("first", e)))
        assert j.pending and done == []  # in flight: nothing waited for the server
        second = j.record_requests([new("b0")])
        for seq in first:
            j.mark_bridged(seq, time.time())
        assert asked == ["queued", "queued"]
        j.commit(lambda e: done.append(("second", e)))
        j.commit(lambda e: done.append(("third", e)))  # nothing new: after the others all the same
        assert done == []
        await until(lambda: len(done) == 3, "three commits")
        assert done == [("first", None), ("second", None), ("third", None)]
        assert not j.pending
        assert j.commits == 2  # the third had nothing of its own
        assert await value(pg_dsn, "SELECT count(*) FROM callbacks WHERE bridged_at IS NOT NULL") == 50
        assert await value(pg_dsn, "SELECT id FROM callbacks WHERE seq = $1", second[0]) == "b0"
        await j.aclose()

    run(go)


def test_commits_asked_while_one_waits_join_it(pg_dsn: str) -> None:
    async def go() -> None:
        j = await PgJournal.open(pg_dsn, node="n1", lease=60)
        done: list[tuple[int, JournalError | None]] = []
        for i in range(5):  # the first in flight, the second waiting, the others join the second
            j.record_requests([new(f"c{i}")])
            j.commit(lambda e, i=i: done.append((i, e)))
        await until(lambda: len(done) == 5, "five commits")
        assert done == [(i, None) for i in range(5)]
        assert j.commits == 2
        assert await value(pg_dsn, "SELECT count(*) FROM callbacks") == 5
        await j.aclose()

    run(go)


def test_request_keys_come_from_blocks_refilled_in_the_background(pg_dsn: str) -> None:
    async def go() -> None:
        a = await PgJournal.open(pg_dsn, node="a", lease=60)
        b = await PgJournal.open(pg_dsn, node="b", lease=60)
        keys: list[int] = []
        for i in range(3 * SEQ_BLOCK // 100):
            keys += a.record_requests([new(f"a{i}.{k}") for k in range(50)])
            keys += b.record_requests([new(f"b{i}.{k}") for k in range(50)])
            await a.drain()  # a refill started at half a block has ended
            await b.drain()
        assert len(set(keys)) == len(keys) == 3 * SEQ_BLOCK  # three blocks: a few refills each
        assert await commit(a) is None and await commit(b) is None
        assert await value(pg_dsn, "SELECT count(*) FROM callbacks") == len(keys)
        await a.aclose()
        await b.aclose()

    run(go)


def test_key_blocks_follow_the_sequence_the_database_has(pg_dsn: str) -> None:
    async def go() -> None:
        # made by an mss with another block size: the blocks must not overlap all the same
        await value(pg_dsn, "CREATE SEQUENCE callbacks_seq INCREMENT BY 10")
        a = await PgJournal.open(pg_dsn, node="a", lease=60)
        b = await PgJournal.open(pg_dsn, node="b", lease=60)
        keys: list[int] = []
        for _ in range(6):
            keys += a.record_requests([new("a"), new("a"), new("a")])
            keys += b.record_requests([new("b"), new("b"), new("b")])
            await a.drain()
            await b.drain()
        assert len(set(keys)) == len(keys) == 36
        await a.aclose()
        await b.aclose()

    run(go)


def test_two_nodes_starting_together_on_an_empty_database(pg_dsn: str) -> None:
    async def go() -> None:
        a, b = await asyncio.gather(
            PgJournal.open(pg_dsn, node="a", lease=60), PgJournal.open(pg_dsn, node="b", lease=60)
        )
        assert await value(pg_dsn, "SELECT count(*) FROM nodes") == 2
        await a.aclose()
        await b.aclose()

    run(go)


def test_a_dead_node_is_taken_over_once_and_learns_it_when_it_comes_back(pg_dsn: str) -> None:
    async def go() -> None:
        a = await PgJournal.open(pg_dsn, node="a", lease=2)
        bridged, ringing, udp = a.record_requests([new("talking"), new("ringing"),
                                                   new("udp", udp=("127.0.0.1", 7100))])
        t0 = time.time()
        a.mark_bridged(bridged, t0 - 3.0)
        a.record_response(udp, CallbackResponse(id="udp", real_duration=1), t0, claim=True)
        a.heartbeat(t0)  # its last beat: 3 s of talk known
        assert await commit(a) is None
        await a.aclose()  # a is gone: two callbacks in progress, a UDP RESPONSE recorded and not sent

        b = await PgJournal.open(pg_dsn, node="b", lease=2)
        taken: list[Takeover] = []
        b.on_takeover = taken.append
        async with beating(b):
            await until(lambda: bool(taken), "b takes a over")
            assert taken[0].node == "a"
            assert [(c.seq, c.id, c.real_duration, c.peer, c.transport) for c in taken[0].cut] == [
                (bridged, "talking", 3, "as1", "tcp"),
                (ringing, "ringing", 0, "as1", "tcp"),
            ]
            # the UDP RESPONSE a had not sent is b's to send, claimed by b
            assert [(p.seq, p.line, p.reply_addr) for p in taken[0].owed] == [
                (udp, "RESPONSE: id=udp;real_duration=1;", ("127.0.0.1", 7100))
            ]
            assert b.claim_response(udp)
            # b settles them, as the desk does
            for cut in taken[0].cut:
                b.record_response(cut.seq, CallbackResponse(id=cut.id, real_duration=cut.real_duration),
                                  time.time(), claim=True)
            assert await commit(b) is None

            c = await PgJournal.open(pg_dsn, node="c", lease=2)
            again: list[Takeover] = []
            c.on_takeover = again.append
            async with beating(c):
                rounds = b.watch_rounds
                await until(lambda: c.watch_rounds >= 4 and b.watch_rounds >= rounds + 4, "watch rounds")
            assert again == [] and len(taken) == 1  # neither takes a again
            await c.aclose()

        assert await value(pg_dsn, "SELECT taken_by FROM nodes WHERE name = 'a'") == "b"
        assert await value(pg_dsn, "SELECT count(*) FROM responses WHERE claimed_by = 'b'") == 3
        assert await value(pg_dsn, "SELECT line FROM responses WHERE seq = $1", bridged) == (
            "RESPONSE: id=talking;real_duration=3;"
        )
        a = await PgJournal.open(pg_dsn, node="a", lease=2)
        assert (a.taken_over_by, a.settled_while_down) == ("b", 2)
        assert a.interrupted() == []  # they are b's: nothing to settle twice
        assert await value(pg_dsn, "SELECT taken_by FROM nodes WHERE name = 'a'") is None
        await a.aclose()
        await b.aclose()

    run(go)


def test_a_node_taken_over_while_running_says_so_at_its_next_beat(
    pg_dsn: str, caplog: pytest.LogCaptureFixture
) -> None:
    async def go() -> None:
        a = await PgJournal.open(pg_dsn, node="a", lease=2)
        (seq,) = a.record_requests([new("stalled")])
        assert await commit(a) is None
        b = await PgJournal.open(pg_dsn, node="b", lease=2)
        taken: list[Takeover] = []
        b.on_takeover = taken.append
        async with beating(b):  # a stalls: no beat for longer than the lease
            await until(lambda: bool(taken), "b takes a over")
        assert [c.seq for c in taken[0].cut] == [seq]
        a.heartbeat(time.time())
        assert await commit(a) is None
        assert "node a was taken over by b while it was running" in caplog.text
        assert await value(pg_dsn, "SELECT taken_by FROM nodes WHERE name = 'a'") is None  # takeable again
        await a.aclose()
        await b.aclose()

    run(go)


def test_a_released_response_is_fetched_by_the_node_its_as_is_connected_to(pg_dsn: str) -> None:
    async def go() -> None:
        a = await PgJournal.open(pg_dsn, node="a", lease=60)
        b = await PgJournal.open(pg_dsn, node="b", lease=60)
        owed: list[str] = []
        b.on_owed = owed.append
        (seq,) = a.record_requests([new("kept")])
        assert await commit(a) is None
        a.record_response(seq, CallbackResponse(id="kept", real_duration=7), time.time(), claim=True)
        assert await commit(a) is None
        assert a.claim_response(seq) is True  # born claimed

        assert b.owed_to("as1", 10) == []  # as1 is connected to b: b asks (a still holds it)
        await b.drain()
        assert owed == [] and b.claim_response(seq) is False
        await b.drain()  # that claim attempt lost too

        a.release_response(seq)  # a has no connection from as1: kept, free for the others
        assert await commit(a) is None
        await until(lambda: owed == ["as1"], "b hears the NOTIFY and claims it")
        assert b.claim_response(seq) is True
        given = b.owed_to("as1", 10)
        assert [(p.seq, p.line) for p in given] == [(seq, "RESPONSE: id=kept;real_duration=7;")]
        assert a.claim_response(seq) is False
        await a.drain()
        assert a.owed_to("as1", 10) == []
        b.mark_delivered(seq, time.time())
        assert await commit(b) is None
        assert await value(pg_dsn, "SELECT claimed_by IS NULL AND delivered_at IS NOT NULL FROM responses")
        await a.aclose()
        await b.aclose()

    run(go)


def test_a_fetched_response_nobody_takes_is_released_for_the_other_nodes(pg_dsn: str) -> None:
    async def go() -> None:
        a = await PgJournal.open(pg_dsn, node="a", lease=60)
        b = await PgJournal.open(pg_dsn, node="b", lease=60)
        owed: list[str] = []
        b.on_owed = owed.append

        def commit_soon() -> None:  # as the desk does
            asyncio.get_running_loop().call_soon(b.commit, lambda _error: None)

        b.on_queued = commit_soon
        (seq,) = a.record_requests([new("kept")])
        a.record_response(seq, CallbackResponse(id="kept", real_duration=1), time.time())
        assert await commit(a) is None
        assert b.owed_to("as1", 10) == []  # b had a connection from as1 ...
        await until(lambda: owed == ["as1"], "b claims it for as1")
        assert await value(pg_dsn, "SELECT claimed_by FROM responses WHERE seq = $1", seq) == "b"
        # ... which went before b's desk took it: after READY_HOLD the claim is let go
        deadline = time.monotonic() + PATIENCE
        while await value(pg_dsn, "SELECT claimed_by FROM responses WHERE seq = $1", seq) is not None:
            assert time.monotonic() < deadline, "b did not let it go"
            await asyncio.sleep(0.1)
        assert b.owed_to("as1", 10) == []  # not b's any more
        await a.aclose()
        await b.aclose()

    run(go)


def test_open_errors_are_clear_and_hide_the_password(postgres: PgServer, pg_dsn: str) -> None:
    async def go() -> None:
        with pytest.raises(JournalError, match="InvalidPasswordError") as wrong:
            await PgJournal.open(pg_dsn.replace(PASSWORD, "nope"), node="n", lease=5)
        assert "nope" not in str(wrong.value) and "mss:***@127.0.0.1" in str(wrong.value)
        down = f"postgresql://mss:{PASSWORD}@127.0.0.1:1/x"
        with pytest.raises(JournalError, match="cannot open the PostgreSQL journal") as refused:
            await PgJournal.open(down, node="n", lease=5)
        assert PASSWORD not in str(refused.value)
        with pytest.raises(JournalError, match="InvalidCatalogNameError"):
            await PgJournal.open(postgres.dsn("no_such_database"), node="n", lease=5)
        with pytest.raises(JournalError, match="cannot open the PostgreSQL journal"):
            await PgJournal.open("mysql://mss@127.0.0.1/x", node="n", lease=5)
        with pytest.raises(JournalError, match="lease must be positive"):
            await PgJournal.open(pg_dsn, node="n", lease=0)
        with pytest.raises(JournalError, match="node name"):
            await PgJournal.open(pg_dsn, node="", lease=5)
        assert redact("postgresql://u:secret@h:5/d") == "postgresql://u:***@h:5/d"

    run(go)


@pytest.fixture
def own_server() -> Iterator[PgServer]:
    """A server of this test alone: the test stops it."""
    with postgres_in_a_temp_dir() as server:
        yield server


def test_a_server_gone_mid_run_fails_the_commit_then_the_journal_works_again(own_server: PgServer) -> None:
    dsn = own_server.create_database()

    async def go() -> None:
        j = await PgJournal.open(dsn, node="n1", lease=60)
        (kept,) = j.record_requests([new("before")])
        assert await commit(j) is None
        own_server.stop()
        (lost,) = j.record_requests([new("during")])
        error = await commit(j)  # an error, not a hang
        assert isinstance(error, JournalError) and "cannot commit 1 write(s)" in str(error)
        assert not j.pending
        j.heartbeat(time.time())
        assert isinstance(await commit(j), JournalError)  # refused: connection refused, at once
        own_server.start_again()
        (after,) = j.record_requests([new("after")])
        assert await commit(j) is None  # a new connection
        ids = await value(dsn, "SELECT string_agg(id, ',' ORDER BY seq) FROM callbacks")
        assert ids == "before,after" and lost not in (kept, after)
        # the background connection comes back too
        assert await j.fetch_cdr("before") is None
        await j.aclose()

    run(go)


# --- the sans-IO parts (mss.journal_pg), no server ---------------------------------------------


def test_talk_time_is_the_sqlite_journals_rule() -> None:
    assert talk_time(1007.4, 1000.0, 60) == 7  # up to the last beat, rounded
    assert talk_time(1100.0, 1000.0, 30) == 30  # at most the duration
    assert talk_time(999.0, 1000.0, 30) == 0  # a beat before the bridge
    assert talk_time(1007.4, None, 60) == 0  # never bridged
    assert talk_time(None, 1000.0, 60) == 0  # no beat known


def test_key_blocks_hand_out_keys_in_order_and_refuse_when_dry() -> None:
    keys = KeyBlocks()
    assert keys.wants_more and keys.left == 0
    with pytest.raises(JournalError, match="no REQUEST key left"):
        keys.take(1)
    keys.add(1)
    assert keys.take(3) == [1, 2, 3] and keys.left == SEQ_BLOCK - 3
    assert not keys.wants_more
    keys.take(SEQ_BLOCK // 2)
    assert keys.wants_more
    keys.refilling = True
    assert not keys.wants_more  # one reservation at a time
    second = 1 + 5 * SEQ_BLOCK  # another node reserved the blocks between
    keys.add(second)
    left = keys.left
    with pytest.raises(JournalError):
        keys.take(left + 1)
    assert keys.left == left  # none taken by a refusal
    first = 4 + SEQ_BLOCK // 2
    rest_of_first = list(range(first, SEQ_BLOCK + 1))
    assert keys.take(SEQ_BLOCK) == [*rest_of_first, *range(second, second + SEQ_BLOCK - len(rest_of_first))]


def test_a_commit_runs_its_writes_phase_by_phase() -> None:
    # a callback's writes in the order of its life, so sorting a group by phase keeps each callback's order
    assert PHASES.index(INSERT_CALLBACK) < PHASES.index(MARK_BRIDGED) < PHASES.index(RECORD_RESPONSE)
    assert PHASES.index(RECORD_RESPONSE) < PHASES.index(RELEASE_RESPONSE) < PHASES.index(NOTIFY_RESPONSE)
    assert PHASES.index(NOTIFY_RESPONSE) < PHASES.index(MARK_DELIVERED)
    assert len(set(PHASES)) == len(PHASES)


# --- two nodes' desks on one database (the real desk and journal; no sockets) -------------------


class Node:
    """One node's desk on its PostgreSQL journal, scheduled on the running event loop as the service
    does."""

    def __init__(self, journal: PgJournal) -> None:
        self.journal = journal
        self.desk = CallbackDesk(
            journal, max_calls=100, extended_response=False, udp_send=lambda data, addr: True,
            wall_clock=time.time, schedule=asyncio.get_running_loop().call_soon,
        )
        self.engine = Engine()
        self.engine.desk = self.desk
        self.desk.engine = self.engine
        self.desk.recover()

    async def proven(self) -> Outlet:
        """A connection from as1 the AS sent a message on (a CANCEL of nothing: ACK code=fail)."""
        outlet = Outlet("as1")
        self.desk.open_outlet(outlet)
        self.desk.handle([Cancel(id="hello")], Sender(peer="as1", transport="tcp", outlet=outlet))
        await until(lambda: ack("hello", ok=False) in outlet.wire, "the ACK of the CANCEL")
        return outlet

    async def order(self, outlet: Outlet, cb_id: str) -> None:
        self.desk.handle([req(cb_id)], Sender(peer="as1", transport="tcp", outlet=outlet))
        await until(lambda: outlet.wire.endswith(ack(cb_id)), f"ACK of {cb_id} once committed")


def test_a_response_kept_on_one_node_goes_out_once_through_the_node_its_as_is_on(pg_dsn: str) -> None:
    async def go() -> None:
        a = Node(await PgJournal.open(pg_dsn, node="a", lease=60))
        b = Node(await PgJournal.open(pg_dsn, node="b", lease=60))
        there = await b.proven()  # the AS's connection is on b now
        here = await a.proven()
        await a.order(here, "x")
        a.desk.close_outlet(here)  # ... its connection to a went
        here.open = False
        a.engine.finish("x", real_duration=7)  # kept on a: released for the others, NOTIFY
        await until(lambda: resp("x", 7) in there.wire, "b writes the RESPONSE a kept")
        await until(lambda: not b.journal.pending, "the delivery mark committed")
        assert await value(pg_dsn, "SELECT count(*) FROM responses WHERE delivered_at IS NOT NULL") == 1
        late = await a.proven()  # the AS comes back to a, which still has it queued: its claim is lost
        b.desk.poll_owed()
        a.desk.poll_owed()
        await a.journal.drain()
        await b.journal.drain()
        assert there.wire.count(resp("x", 7)) == 1 and resp("x", 7) not in here.wire + late.wire
        assert a.desk.owed == 0 and b.desk.owed == 0
        await a.journal.aclose()
        await b.journal.aclose()

    run(go)


def test_a_survivors_desk_answers_the_callbacks_of_a_dead_node(pg_dsn: str) -> None:
    async def go() -> None:
        a = Node(await PgJournal.open(pg_dsn, node="a", lease=2))
        here = await a.proven()
        await a.order(here, "cut1")
        await a.order(here, "cut2")
        await a.journal.aclose()  # a dies with two callbacks in progress

        b = Node(await PgJournal.open(pg_dsn, node="b", lease=2))
        there = await b.proven()  # the AS reconnected to b
        await until(lambda: resp("cut1") in there.wire and resp("cut2") in there.wire,
                    "b answers a's callbacks once a's lease expired")
        assert there.wire.count(resp("cut1")) == 1 and there.wire.count(resp("cut2")) == 1
        await until(lambda: not b.journal.pending, "the delivery marks committed")
        assert await value(
            pg_dsn, "SELECT count(*) FROM responses WHERE delivered_at IS NOT NULL AND claimed_by IS NULL"
        ) == 2
        await b.journal.aclose()

    run(go)


def test_mss_cdr_exports_from_postgresql(pg_dsn: str, tmp_path: Path) -> None:
    """`mss cdr` with backend = postgresql reads the CDRs there, oldest first; --since filters them."""

    async def write() -> None:
        journal = await PgJournal.open(pg_dsn, node="a", lease=5)
        old, recent = journal.record_requests([new("old"), new("recent")])
        for seq, cb_id, talk in ((old, "old", 3), (recent, "recent", 5)):
            cdr = Cdr(caller="5550100", released_at=time.time(), released_by="user1", result="answered",
                      reason="user1 hung up")
            journal.record_response(seq, CallbackResponse(id=cb_id, real_duration=talk), time.time(), cdr)
        assert await commit(journal) is None
        await journal.aclose()

    run(write)
    config = tmp_path / "config.ini"
    config.write_text(render(("journal", "backend", "postgresql"), ("journal", "dsn", pg_dsn),
                             ("cluster", "node", "a")))
    done = subprocess.run([sys.executable, "-m", "mss", "cdr", "--config", str(config), "--format", "jsonl"],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    rows = [json.loads(line) for line in done.stdout.splitlines()]
    assert [(r["id"], r["real_duration"], r["result"], r["caller"]) for r in rows] == [
        ("old", 3, "answered", "5550100"), ("recent", 5, "answered", "5550100"),
    ]
    future = subprocess.run(
        [sys.executable, "-m", "mss", "cdr", "--config", str(config), "--since", "2999-01-01"],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert future.returncode == 0 and future.stdout.splitlines() == [",".join(CDR_COLUMNS)], future.stderr


def test_mss_cdr_says_clearly_when_the_database_holds_no_journal(postgres: PgServer, tmp_path: Path) -> None:
    config = tmp_path / "config.ini"
    dsn = postgres.create_database()  # empty: no mss ever ran on it
    config.write_text(render(("journal", "backend", "postgresql"), ("journal", "dsn", dsn),
                             ("cluster", "node", "a")))
    done = subprocess.run([sys.executable, "-m", "mss", "cdr", "--config", str(config)],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 1
    assert "holds no CDR table: not an mss journal" in done.stderr, done.stderr
    assert PASSWORD not in done.stderr
