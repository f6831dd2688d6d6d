"""PgJournal: the journal on PostgreSQL (asyncpg), shared by several nodes; its I/O side.

What the desk calls stays synchronous and never waits for the server:

* writes are queued in memory (write-behind) and :meth:`PgJournal.commit` runs everything queued in
  ONE transaction on the *writer* connection, after the commit in flight (commits never overlap and
  finish in the order asked), then calls its ``done`` from the event loop; a failed commit keeps none
  of its writes (the desk answers ``code=fail`` as with sqlite);
* what the desk reads at start (:meth:`PgJournal.interrupted`, :meth:`PgJournal.undelivered`, the
  relay-port quarantine) is loaded by :meth:`PgJournal.open`;
* claims, fetches of what another node kept, the lease watch, pruning and the size run as background
  tasks on a second connection (which also LISTENs); their results are picked up by the desk
  (:meth:`PgJournal.owed_to`, :attr:`PgJournal.on_owed`, :attr:`PgJournal.on_takeover`).

Two connections per process, whatever the load. A connection the server dropped is opened again by
the next commit (or background task) that needs it, once per attempt, within :data:`CONNECT_TIMEOUT`;
every statement is bounded by :data:`COMMAND_TIMEOUT`, so a server that stops answering yields a
:class:`JournalError`, not a hang. The schema, the statements and the rules are in :mod:`mss.journal_pg`.
"""

from __future__ import annotations

import asyncio
import logging
import time
import traceback
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

import asyncpg

from mss.errors import JournalError
from mss.iif import CallbackResponse, serialize
from mss.journal import (
    CDR_COLUMNS,
    CDR_READ_BATCH,
    PRUNE_BATCH,
    Cdr,
    InterruptedCallback,
    NewCallback,
    PendingResponse,
    Takeover,
    _quality_values,
)
from mss.journal_pg import (
    ADVISORY_LOCK,
    CHANNEL,
    CLAIM,
    FETCH_OWED,
    FORGET_NODE_PORTS,
    HEARTBEAT,
    INSERT_CALLBACK,
    MARK_BRIDGED,
    MARK_DELIVERED,
    NOTIFY_RESPONSE,
    PENDING_COLUMNS,
    PHASE,
    QUARANTINE,
    RECORD_PORTS,
    RECORD_RESPONSE,
    RECORD_RESPONSE_CDR,
    RELEASE_RESPONSE,
    SCHEMA,
    TABLES,
    UNQUARANTINE,
    KeyBlocks,
    redact,
    talk_time,
)
from mss.ratelog import RateLimitedLog

__all__ = ["COMMAND_TIMEOUT", "CONNECT_TIMEOUT", "NOTIFY_INTEREST", "READY_HOLD", "PgJournal", "read_cdrs"]

log = logging.getLogger(__name__)

#: Seconds to open a connection: a server that does not answer is an error, not a hang.
CONNECT_TIMEOUT = 5.0

#: Seconds any one statement may take (a commit of a large group is a few statements).
COMMAND_TIMEOUT = 10.0

#: Seconds after an :meth:`PgJournal.owed_to` for a peer during which a NOTIFY for that peer starts a
#: fetch: this node had a connection from that AS a moment ago.
NOTIFY_INTEREST = 10.0

#: Seconds a RESPONSE claimed by a fetch waits for :meth:`PgJournal.owed_to` before its claim is
#: released: a desk with a connection from the AS takes it at once (on_owed), so one left this long
#: means the AS went away meanwhile, and another node may deliver it.
READY_HOLD = 3.0

#: Seconds between two refreshes of :meth:`PgJournal.size` (a catalog query; the metric is coarse).
SIZE_REFRESH = 30.0

#: Dead nodes one survivor takes over in one round of the lease watch (a round stays short).
TAKEOVERS_PER_ROUND = 16

# What asyncpg raises when the server refuses, fails or is unreachable.
_DB_ERRORS = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError)

_T = TypeVar("_T")

_Row = Any  # asyncpg.Record


def _pending(row: _Row) -> PendingResponse:
    host, port = row["reply_host"], row["reply_port"]
    return PendingResponse(
        seq=row["seq"], id=row["id"], peer=row["peer"], transport=row["transport"],
        reply_addr=(host, port) if host is not None else None, line=row["line"],
    )


async def _connect(dsn: str) -> Any:
    """A connection to ``dsn``; :class:`JournalError` naming the server (never the password)."""
    try:
        return await asyncpg.connect(dsn, timeout=CONNECT_TIMEOUT, command_timeout=COMMAND_TIMEOUT)
    except (*_DB_ERRORS, ValueError) as exc:
        raise JournalError(
            f"cannot open the PostgreSQL journal {redact(dsn)}: {type(exc).__name__}: {exc}"
        ) from exc


@dataclass(slots=True)
class _Batch:
    """One transaction to run: the writes of the commits asked for it, and who waits, in order."""

    statements: list[tuple[str, tuple[object, ...]]]
    beat: float | None  # the newest heartbeat among them
    writes: int
    dones: list[Callable[[JournalError | None], None]]
    finished: asyncio.Future[None]

    def groups(self, node: str) -> list[tuple[str, list[tuple[object, ...]]]]:
        """The statements phase by phase (mss.journal_pg.PHASES), one run per statement; ``node``'s
        heartbeat last."""
        queued = sorted(self.statements, key=lambda item: PHASE[item[0]])
        if self.beat is not None:
            queued.append((HEARTBEAT, (node, self.beat)))
        groups: list[tuple[str, list[tuple[object, ...]]]] = []
        for sql, args in queued:
            if groups and groups[-1][0] == sql:
                groups[-1][1].append(args)
            else:
                groups.append((sql, [args]))
        return groups


@dataclass(slots=True)
class _Ready:
    """A RESPONSE this node claimed for a peer, waiting for :meth:`PgJournal.owed_to`."""

    pending: PendingResponse
    claimed_at: float  # monotonic


@dataclass(slots=True)
class _Loaded:
    """What :meth:`PgJournal.open` read for the desk's start."""

    previous_beat: float | None = None
    interrupted: list[InterruptedCallback] = field(default_factory=list)
    undelivered: list[PendingResponse] = field(default_factory=list)
    released: int = 0
    ports: list[tuple[int, str, float | None, bool]] = field(default_factory=list)  # seq, ports, until, cut


class PgJournal:
    """The journal on PostgreSQL, for one process of one node; use :meth:`open`."""

    backend = "postgresql"

    def __init__(self, dsn: str, *, node: str, lease: float, worker: int, writer: Any, reader: Any) -> None:
        self._dsn = dsn
        self.node = node
        """This process's node name (workers: ``<node>.<i>``): owner of its callbacks and claims."""
        self.lease = lease
        """Seconds of silence after which a node is taken over."""
        self.worker = worker
        """The worker number (0 for a single process); never None: RESPONSEs are claimed before writing."""
        self.on_queued: Callable[[], None] | None = None
        """Called by the first write after a commit was asked: :meth:`commit` should follow soon."""
        self.on_owed: Callable[[str], None] | None = None
        """Called with a peer's name when RESPONSEs claimed for it are ready in :meth:`owed_to`."""
        self.on_takeover: Callable[[Takeover], None] | None = None
        """Called with what this node took over from a dead one (record the RESPONSEs of its callbacks,
        send its UDP RESPONSEs)."""
        self.commits = 0
        """Transactions committed by :meth:`commit`."""
        self.taken_over_by: str | None = None
        """Set by :meth:`open`: the survivor that settled this node's callbacks while it was down."""
        self.settled_while_down = 0
        """... and how many it settled."""
        self._writer = writer  # the write-behind commits, one after the other
        self._reader = reader  # LISTEN and the background reads, claims and the lease watch
        self._reader_lock = asyncio.Lock()
        self._loop = asyncio.get_running_loop()
        self._log = RateLimitedLog(log)
        self._queue: list[tuple[str, tuple[object, ...]]] = []
        self._beat: float | None = None  # the newest heartbeat queued (one write however many)
        self._writes = 0  # writes queued since the last commit was asked
        self._batches: deque[_Batch] = deque()  # asked, not finished (the first is in flight)
        self._committer: asyncio.Task[None] | None = None
        self._watcher: asyncio.Task[None] | None = None  # the lease watch
        self._tasks: set[asyncio.Task[Any]] = set()
        self._keys = KeyBlocks()
        self._claims: set[int] = set()  # RESPONSEs this node holds a claim on
        self._claiming: set[int] = set()  # claim attempts in flight
        self._ready: dict[str, list[_Ready]] = {}
        self._fetching: set[str] = set()  # peers with a fetch in flight
        self._refetch: set[str] = set()  # ... and one more wanted after it
        self._asked: dict[str, tuple[float, int]] = {}  # peer -> (monotonic of its last owed_to, limit)
        self._loaded = _Loaded()
        self._pruning = False
        self._pruned = 0
        self._size = 0
        self._size_at: float | None = None  # monotonic of the last size refresh started
        self._closed = False
        self.watch_rounds = 0
        """Rounds of the lease watch so far (each looks for dead nodes once)."""

    # --- start and stop ---------------------------------------------------------------------------

    @classmethod
    async def open(cls, dsn: str, *, node: str, lease: float, worker: int = 0) -> PgJournal:
        """Connect, create the schema when missing, renew this node's lease, load what the desk's start
        needs, reserve REQUEST keys and LISTEN. :class:`JournalError` when the server is unreachable,
        refuses the login or the database, or fails."""
        if not node:
            raise JournalError("journal: the PostgreSQL journal needs a node name ([cluster] node)")
        if not lease > 0:
            raise JournalError(f"journal: [cluster] lease must be positive, not {lease}")
        writer = await _connect(dsn)
        try:
            reader = await _connect(dsn)
        except JournalError:
            writer.terminate()
            raise
        self = cls(dsn, node=node, lease=lease, worker=worker, writer=writer, reader=reader)
        try:
            await self._start()
        except _DB_ERRORS as exc:
            writer.terminate()
            reader.terminate()
            raise JournalError(f"cannot open the PostgreSQL journal {redact(dsn)}: {exc}") from exc
        self._watcher = self._spawn(self._watch())
        return self

    async def _start(self) -> None:
        db, me = self._writer, self.node
        async with db.transaction():
            # two nodes starting together on an empty database: one creates, the other waits and sees it
            await db.execute("SELECT pg_advisory_xact_lock($1)", ADVISORY_LOCK)
            for statement in SCHEMA:
                await db.execute(statement)
        loaded = self._loaded
        async with db.transaction():
            row = await db.fetchrow(
                "SELECT beat, taken_by, settled_while_down FROM nodes WHERE name = $1 FOR UPDATE", me
            )
            if row is not None:
                loaded.previous_beat = row["beat"]
                self.taken_over_by, self.settled_while_down = row["taken_by"], row["settled_while_down"]
            await db.execute(
                "INSERT INTO nodes (name, beat) VALUES ($1, $2) ON CONFLICT (name) DO UPDATE SET"
                " beat = excluded.beat, taken_by = NULL, taken_at = NULL, settled_while_down = 0",
                me, time.time(),
            )
            status = await db.execute(
                "UPDATE responses SET claimed_by = NULL WHERE claimed_by = $1 AND delivered_at IS NULL", me
            )
            loaded.released = int(status.split()[-1])
            for r in await db.fetch(
                "SELECT seq, id, peer, transport, reply_host, reply_port, bridged_at, duration, beat"
                " FROM callbacks WHERE state = 'active' AND node = $1 ORDER BY seq", me
            ):
                loaded.interrupted.append(self._cut(r, loaded.previous_beat))
            loaded.ports = [
                (r["seq"], r["ports"], r["quarantined_until"], r["cut"])
                for r in await db.fetch(
                    "SELECT rp.seq, rp.ports, rp.quarantined_until,"
                    " (c.node <> $1 OR c.state = 'active') AS cut"  # in progress, or taken over
                    " FROM relay_ports rp JOIN callbacks c ON c.seq = rp.seq WHERE rp.node = $1", me
                )
            ]
            loaded.undelivered = [
                _pending(r)
                for r in await db.fetch(
                    f"SELECT {', '.join('r.' + c for c in PENDING_COLUMNS.split(', '))} FROM responses r"
                    " JOIN callbacks c ON c.seq = r.seq WHERE c.node = $1 AND r.delivered_at IS NULL"
                    " AND r.claimed_by IS NULL ORDER BY r.created_at, r.seq", me
                )
            ]
            # the block is what the sequence counts by (made by whichever mss created the schema)
            self._keys = KeyBlocks(await db.fetchval(
                "SELECT increment_by FROM pg_sequences WHERE schemaname = current_schema()"
                " AND sequencename = 'callbacks_seq'"
            ))
            self._keys.add(await db.fetchval("SELECT nextval('callbacks_seq')"))
        await self._reader.add_listener(CHANNEL, self._notified)
        if self.taken_over_by is not None:
            log.warning("node %s: %s settled %d callback(s) of this node while it was down",
                        me, self.taken_over_by, self.settled_while_down)

    @staticmethod
    def _cut(row: _Row, beat: float | None) -> InterruptedCallback:
        """A callback a crash cut: talk time up to its own kept beat (taken over) or the node's."""
        host, port = row["reply_host"], row["reply_port"]
        return InterruptedCallback(
            seq=row["seq"], id=row["id"],
            real_duration=talk_time(row["beat"] if row["beat"] is not None else beat, row["bridged_at"],
                                    row["duration"]),
            peer=row["peer"], transport=row["transport"],
            reply_addr=(host, port) if host is not None else None,
        )

    async def aclose(self) -> None:
        """Commit what is queued, stop the background tasks and close the connections (idempotent).

        Raises :class:`JournalError` when the last commit failed (everything is closed all the same)."""
        if self._closed:
            return
        error: JournalError | None = None
        if self.pending:
            finished: asyncio.Future[JournalError | None] = self._loop.create_future()
            self.commit(finished.set_result)
            error = await finished
        self._closed = True
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for conn in (self._reader, self._writer):
            try:
                await asyncio.wait_for(conn.close(), CONNECT_TIMEOUT)
            except _DB_ERRORS:
                conn.terminate()
        if error is not None:
            raise error

    # --- write-behind ------------------------------------------------------------------------------

    @property
    def pending(self) -> bool:
        """Writes queued, or a commit in flight."""
        return self._writes > 0 or bool(self._batches)

    def _queue_write(self, what: str, statements: Iterable[tuple[str, tuple[object, ...]]]) -> None:
        if self._closed:
            raise JournalError(f"journal: cannot {what}: the journal is closed")
        self._queue.extend(statements)
        self._writes += 1
        if self._writes == 1 and self.on_queued is not None:
            self.on_queued()

    def commit(self, done: Callable[[JournalError | None], None]) -> None:
        """Commit everything queued in ONE transaction, after the commit in flight; then ``done(None)``
        (or ``done(error)``: none of its writes kept) from the event loop. Commits end in the order
        asked; one asked while another waits behind the one in flight joins the waiting transaction.
        Nothing queued and nothing in flight: ``done(None)`` at once."""
        if not self._writes and not self._batches:
            done(None)
            return
        if len(self._batches) >= 2:
            # One transaction in flight and one waiting for it: this commit joins the waiting one (a
            # server that lags gets bigger groups, never a longer queue); its done comes after theirs.
            waiting = self._batches[-1]
            waiting.statements += self._queue
            waiting.beat = self._beat if self._beat is not None else waiting.beat
            waiting.writes += self._writes
            waiting.dones.append(done)
        else:
            self._batches.append(
                _Batch(self._queue, self._beat, self._writes, [done], self._loop.create_future())
            )
        self._queue, self._beat, self._writes = [], None, 0
        if self._committer is None or self._committer.done():
            self._committer = self._spawn(self._run_commits())

    async def _run_commits(self) -> None:
        while self._batches:
            batch = self._batches[0]
            error = await self._commit_batch(batch) if batch.writes else None
            self._batches.popleft()
            batch.finished.set_result(None)
            for done in batch.dones:
                try:
                    done(error)
                except Exception:
                    # a bug of the caller's: logged (rate-limited), the next commits go on
                    self._log.error("done failed", "journal: a commit's done callback failed: %s",
                                    traceback.format_exc())

    async def _commit_batch(self, batch: _Batch) -> JournalError | None:
        taken_by = None
        try:
            if self._writer.is_closed():
                self._writer = await _connect(self._dsn)
            db = self._writer
            groups = batch.groups(self.node)
            if len(groups) == 1:  # atomic as it is: no BEGIN and COMMIT round trips
                taken_by = await self._run_group(db, *groups[0])
            else:
                async with db.transaction():
                    for sql, args in groups:
                        taken_by = await self._run_group(db, sql, args) or taken_by
        except (*_DB_ERRORS, JournalError) as exc:
            if not isinstance(exc, asyncpg.PostgresError | JournalError):
                self._writer.terminate()  # its state is unknown: the next commit opens a new one
            kind = type(exc).__name__
            return JournalError(f"journal: cannot commit {batch.writes} write(s): {kind}: {exc}")
        self.commits += 1
        if taken_by is not None:
            self._log.error(
                "taken over", "node %s was taken over by %s while it was running (no lease renewed for"
                " %.1f s: the event loop or the database stalled): its callbacks in progress then were"
                " settled there, and their AS may get a second RESPONSE from here", self.node, taken_by,
                self.lease,
            )
        return None

    @staticmethod
    async def _run_group(db: Any, sql: str, args: list[tuple[object, ...]]) -> str | None:
        """One run of one statement; the heartbeat's answer (who took this node over), else None."""
        if sql == HEARTBEAT:
            taken_by: str | None = await db.fetchval(sql, *args[0])
            return taken_by
        if len(args) == 1:
            await db.execute(sql, *args[0])
        else:
            await db.executemany(sql, args)
        return None

    def record_requests(self, callbacks: Iterable[NewCallback]) -> list[int]:
        """Queue REQUESTs; their keys come from the reserved block (:class:`JournalError` only when it
        ran dry because the server did not answer the reservation of the next one)."""
        cbs = list(callbacks)
        if self._closed:
            raise JournalError("journal: cannot record a request: the journal is closed")
        seqs = self._keys.take(len(cbs))
        if self._keys.wants_more:
            self._keys.refilling = True
            self._spawn(self._refill_keys())
        if cbs:
            self._queue_write("record a request", [
                (INSERT_CALLBACK, (seq, cb.id, cb.peer, cb.transport, *(cb.reply_addr or (None, None)),
                                   cb.user1, cb.user2, cb.duration, cb.received_at, self.node))
                for seq, cb in zip(seqs, cbs, strict=True)
            ])
        return seqs

    async def _refill_keys(self) -> None:
        try:
            start = await self._on_reader("reserve request keys",
                                          lambda db: db.fetchval("SELECT nextval('callbacks_seq')"))
            if start is not None:
                self._keys.add(start)
        finally:
            self._keys.refilling = False

    def mark_bridged(self, seq: int, at: float) -> None:
        """The legs of callback ``seq`` were bridged at wall time ``at``."""
        self._queue_write("record a bridge", [(MARK_BRIDGED, (seq, at))])

    def heartbeat(self, at: float) -> None:
        """This node is alive at wall time ``at``: renews its lease (its row's beat) at the next commit."""
        self._queue_write("write the heartbeat", ())  # one write however many beats: the newest counts
        self._beat = at

    def record_response(
        self, seq: int, response: CallbackResponse, at: float, cdr: Cdr | None = None, *, claim: bool = False
    ) -> str:
        """Queue the RESPONSE of callback ``seq`` (and its CDR) and end the callback; returns the line.

        ``claim``: the row is born claimed by this node. A callback ended already, or now owned by
        another node, gets nothing (the statements match no row)."""
        line = serialize(response).decode("ascii").rstrip("\r\n")
        head: tuple[object, ...] = (seq, line, at, self.node if claim else None, self.node)
        statement = (RECORD_RESPONSE, head)
        if cdr is not None:
            statement = (RECORD_RESPONSE_CDR, (
                *head, cdr.caller, cdr.leg1_call_id, cdr.leg2_call_id, cdr.leg1_code, cdr.leg2_code,
                cdr.codec, cdr.leg1_answered_at, cdr.leg2_answered_at, cdr.released_at, cdr.released_by,
                cdr.result, cdr.reason, response.real_duration, *_quality_values(cdr.leg1),
                *_quality_values(cdr.leg2),
            ))
        self._queue_write("record a response", [statement])
        if claim:
            self._claims.add(seq)
        return line

    def mark_delivered(self, seq: int, at: float) -> None:
        """The RESPONSE of callback ``seq`` was written to the AS at wall time ``at``."""
        self._queue_write("mark a response delivered", [(MARK_DELIVERED, (seq, at))])
        self._claims.discard(seq)

    def record_ports(self, seq: int, ports: Iterable[int]) -> None:
        """Record the relay RTP ports of callback ``seq`` (on this node's relay)."""
        text = " ".join(str(int(port)) for port in ports)
        self._queue_write("record relay ports", [(RECORD_PORTS, (seq, self.node, text))])

    # --- start: what open() loaded -----------------------------------------------------------------

    def interrupted(self) -> list[InterruptedCallback]:
        """This node's callbacks a crash cut, with the talk time known up to its last heartbeat."""
        return list(self._loaded.interrupted)

    def undelivered(self) -> list[PendingResponse]:
        """This node's own undelivered, unclaimed RESPONSEs at start, oldest first."""
        return list(self._loaded.undelivered)

    def release_claims(self) -> int:
        """How many claims of this node's previous process :meth:`open` released."""
        return self._loaded.released

    def quarantined_ports(self, now: float, window: float) -> list[tuple[int, float]]:
        """RTP ports of this node's relay to keep out of use at start, each with the wall time it may be
        used again (the sqlite journal's rule, on what :meth:`open` read); the marks are queued."""
        loaded = self._loaded
        rows = loaded.ports
        if loaded.previous_beat is None or now - loaded.previous_beat < window:
            seqs = [seq for seq, _ports, _until, cut in rows if cut]
            if seqs:
                self._queue_write("quarantine relay ports", [(QUARANTINE, (seqs, now + window))])
            rows = [(seq, ports, now + window if cut else until, cut) for seq, ports, until, cut in rows]
        self._queue_write("forget relay ports",
                          [(UNQUARANTINE, (self.node, now)), (FORGET_NODE_PORTS, (self.node,))])
        return [
            (int(port), until)
            for _seq, ports, until, _cut in rows
            if until is not None and until > now
            for port in ports.split()
            if port.isdigit()
        ]

    # --- claims: who writes a kept RESPONSE ------------------------------------------------------

    def claim_response(self, seq: int) -> bool:
        """True when this node holds the claim on RESPONSE ``seq``; else False, and a claim attempt
        starts: when it wins, the RESPONSE waits in :meth:`owed_to` and :attr:`on_owed` is called."""
        if seq in self._claims:
            return True
        if seq not in self._claiming and not self._closed:
            self._claiming.add(seq)
            self._spawn(self._claim(seq))
        return False

    async def _claim(self, seq: int) -> None:
        try:
            await self._committed()  # a RESPONSE recorded or released just now is in the database
            row = await self._on_reader("claim a response", lambda db: db.fetchrow(CLAIM, self.node, seq))
        finally:
            self._claiming.discard(seq)
        if row is not None:
            self._take([row])

    async def _committed(self) -> None:
        """Until the commits asked so far have finished."""
        if self._batches:
            await asyncio.shield(self._batches[-1].finished)

    def _take(self, rows: list[_Row]) -> None:
        """Rows claimed for this node: ready for owed_to, oldest first; tell the desk."""
        now = time.monotonic()
        peers = set()
        for row in sorted(rows, key=lambda r: (r["created_at"], r["seq"])):
            pending = _pending(row)
            self._claims.add(pending.seq)
            self._ready.setdefault(pending.peer, []).append(_Ready(pending, now))
            peers.add(pending.peer)
        for peer in sorted(peers):
            self._call(self.on_owed, peer)

    def release_response(self, seq: int) -> None:
        """Give up this node's claim on RESPONSE ``seq`` (queued; the commit NOTIFYs the other nodes)."""
        self._claims.discard(seq)
        for ready in self._ready.values():
            ready[:] = [r for r in ready if r.pending.seq != seq]
        self._queue_write("release a response",
                          [(RELEASE_RESPONSE, (seq, self.node)), (NOTIFY_RESPONSE, (seq,))])

    def owed_to(self, peer: str, limit: int) -> list[PendingResponse]:
        """Up to ``limit`` RESPONSEs claimed for ``peer`` by earlier fetches (oldest first, now the
        caller's to write or release); starts a fetch-and-claim of more (one in flight per peer)."""
        self._asked[peer] = (time.monotonic(), limit)
        ready = self._ready.get(peer, [])
        given, ready[:] = ready[:limit], ready[limit:]
        if not ready:
            self._ready.pop(peer, None)
        self._fetch(peer, limit)
        return [r.pending for r in given]

    def _fetch(self, peer: str, limit: int) -> None:
        if self._closed or len(self._ready.get(peer, ())) >= limit:
            return
        if peer in self._fetching:
            # that fetch may have read before what made this one wanted (a NOTIFY): one more after it
            self._refetch.add(peer)
            return
        self._fetching.add(peer)
        self._spawn(self._fetch_owed(peer, limit))

    async def _fetch_owed(self, peer: str, limit: int) -> None:
        try:
            await self._committed()
            rows = await self._on_reader(f"fetch the responses owed to {peer}",
                                         lambda db: db.fetch(FETCH_OWED, self.node, peer, limit))
        finally:
            self._fetching.discard(peer)
        if rows:
            self._take(rows)
        if peer in self._refetch:
            self._refetch.discard(peer)
            self._fetch(peer, limit)

    def _notified(self, _conn: object, pid: int, _channel: str, peer: str) -> None:
        """NOTIFY: ``peer``'s RESPONSEs are free to take; fetch them if its AS was connected here lately.

        Not this node's own NOTIFY: it released them because it has no connection from that AS now,
        and taking them back would keep them from the node that has one."""
        if not self._writer.is_closed() and pid == self._writer.get_server_pid():
            return
        asked = self._asked.get(peer)
        if asked is not None and time.monotonic() - asked[0] <= NOTIFY_INTEREST:
            self._fetch(peer, asked[1])

    def _release_stale(self) -> None:
        """Release RESPONSEs fetched for a peer that did not ask for them within :data:`READY_HOLD`."""
        cutoff = time.monotonic() - READY_HOLD
        for peer, ready in list(self._ready.items()):
            stale = [r for r in ready if r.claimed_at < cutoff]
            for r in stale:
                self.release_response(r.pending.seq)
            if stale:
                log.info("journal: released %d RESPONSE(s) for %s not taken within %.0f s",
                         len(stale), peer, READY_HOLD)

    # --- node loss: the lease watch -----------------------------------------------------------------

    async def _watch(self) -> None:
        """Every min(1, lease/3) s: take over nodes whose lease expired; release stale fetched claims."""
        interval = min(1.0, self.lease / 3)
        while True:
            await asyncio.sleep(interval)
            try:
                await self._watch_round()
            except Exception:
                self._log.error("watch failed", "journal: the lease watch of node %s failed a round: %s",
                                self.node, traceback.format_exc())

    async def _watch_round(self) -> None:
        self.watch_rounds += 1
        for _ in range(TAKEOVERS_PER_ROUND):
            taken = await self._on_reader("take over a dead node", self._take_over)
            if taken is None:
                break
            log.warning("node %s: took over node %s (lease of %.1f s expired): %d callback(s) in"
                        " progress settled here, %d UDP RESPONSE(s) it had not sent sent from here",
                        self.node, taken.node, self.lease, len(taken.cut), len(taken.owed))  # fmt: skip
            self._claims.update(p.seq for p in taken.owed)
            if taken.cut or taken.owed:
                if self.on_takeover is None:
                    log.error("node %s: nothing settles what was taken over (no on_takeover); it is"
                              " settled at this node's next start", self.node)  # fmt: skip
                else:
                    self._call(self.on_takeover, taken)
        self._release_stale()

    async def _take_over(self, db: Any) -> Takeover | None:
        """One dead node, in ONE transaction: its row locked (two survivors never take the same node),
        its active callbacks made this node's (keeping its last beat), its undelivered UDP RESPONSEs
        claimed by this node (it sends them), its other claims released, its peers' nodes told. None
        when no node is dead."""
        now = time.time()
        async with db.transaction():
            dead = await db.fetchrow(
                "SELECT name, beat FROM nodes WHERE name <> $1 AND taken_by IS NULL AND beat < $2"
                " ORDER BY beat LIMIT 1 FOR UPDATE SKIP LOCKED",
                self.node, now - self.lease,
            )
            if dead is None:
                return None
            rows = await db.fetch(
                "UPDATE callbacks SET node = $1, beat = coalesce(beat, $3)"
                " WHERE node = $2 AND state = 'active'"
                " RETURNING seq, id, peer, transport, reply_host, reply_port, bridged_at, duration, beat",
                self.node, dead["name"], dead["beat"],
            )
            await db.execute(
                "UPDATE nodes SET taken_by = $2, taken_at = $3, settled_while_down = settled_while_down + $4"
                " WHERE name = $1",
                dead["name"], self.node, now, len(rows),
            )
            udp = await db.fetch(
                "UPDATE responses SET claimed_by = $1 WHERE delivered_at IS NULL AND transport = 'udp'"
                " AND (claimed_by IS NULL OR claimed_by = $2)"
                " AND seq IN (SELECT seq FROM callbacks WHERE node = $2)"
                f" RETURNING {PENDING_COLUMNS}",
                self.node, dead["name"],
            )
            await db.execute(
                "UPDATE responses SET claimed_by = NULL WHERE claimed_by = $1 AND delivered_at IS NULL",
                dead["name"],
            )
            await db.execute(
                f"SELECT pg_notify('{CHANNEL}', peer) FROM (SELECT DISTINCT peer FROM responses"
                " WHERE delivered_at IS NULL AND claimed_by IS NULL) AS owed"
            )
        return Takeover(
            node=dead["name"],
            cut=[self._cut(r, dead["beat"]) for r in sorted(rows, key=lambda r: r["seq"])],
            owed=[_pending(r) for r in sorted(udp, key=lambda r: r["seq"])],
        )

    # --- retention, size, CDRs ------------------------------------------------------------------------

    def prune(self, before: float, limit: int = PRUNE_BATCH) -> int:
        """Start one background batch deleting up to ``limit`` callbacks delivered before ``before`` (with
        their RESPONSE, CDR and ports; never two batches at once); returns what the previous one deleted."""
        done, self._pruned = self._pruned, 0
        if not self._pruning and not self._closed:
            self._pruning = True
            self._spawn(self._prune(before, limit))
        return done

    async def _prune(self, before: float, limit: int) -> None:
        async def batch(db: Any) -> int:
            async with db.transaction():
                seqs = [r["seq"] for r in await db.fetch(
                    "SELECT seq FROM responses WHERE delivered_at IS NOT NULL AND delivered_at < $1"
                    " ORDER BY delivered_at LIMIT $2 FOR UPDATE SKIP LOCKED", before, limit,
                )]
                if seqs:
                    for table in ("cdrs", "relay_ports", "responses"):
                        await db.execute(f"DELETE FROM {table} WHERE seq = ANY($1::bigint[])", seqs)
                    await db.execute("DELETE FROM callbacks WHERE seq = ANY($1::bigint[]) AND state = 'done'",
                                     seqs)
            return len(seqs)

        try:
            self._pruned += await self._on_reader("prune old callbacks", batch) or 0
        finally:
            self._pruning = False

    def size(self) -> int:
        """Bytes of mss's tables (indexes included), as last read; refreshed in the background."""
        now = time.monotonic()
        if not self._closed and (self._size_at is None or now - self._size_at >= SIZE_REFRESH):
            self._size_at = now
            self._spawn(self._refresh_size())
        return self._size

    async def _refresh_size(self) -> None:
        sql = "SELECT " + " + ".join(f"pg_total_relation_size('{table}')" for table in TABLES)
        size = await self._on_reader("read the journal's size", lambda db: db.fetchval(sql))
        if size is not None:
            self._size = int(size)

    async def fetch_cdr(self, cb_id: str) -> dict[str, object] | None:
        """The latest CDR of callback ``cb_id`` as a column → value mapping (None: none)."""
        async with self._reader_lock:
            try:
                if self._reader.is_closed():
                    await self._reopen_reader()
                row = await self._reader.fetchrow(
                    "SELECT * FROM cdrs WHERE id = $1 ORDER BY seq DESC LIMIT 1", cb_id
                )
            except _DB_ERRORS as exc:
                raise JournalError(f"journal: cannot read a CDR: {exc}") from exc
        return None if row is None else dict(row.items())

    async def drain(self) -> None:
        """Until the commits asked and the background tasks started so far (claims, fetches, the key
        reservation, prune, size) have finished; the lease watch goes on."""
        await self._committed()
        for _ in range(8):  # a task may start another (a claim won starts none; a NOTIFY may): bounded
            busy = [t for t in self._tasks if t is not self._watcher and not t.done()]
            if not busy:
                return
            await asyncio.gather(*busy, return_exceptions=True)

    # --- plumbing --------------------------------------------------------------------------------------

    async def _reopen_reader(self) -> None:
        self._reader = await _connect(self._dsn)
        await self._reader.add_listener(CHANNEL, self._notified)

    async def _on_reader(self, what: str, run: Callable[[Any], Awaitable[_T]]) -> _T | None:
        """``run(connection)`` on the background connection, one at a time; None (and a log line) when
        the server fails or is unreachable (the next attempt opens a new connection)."""
        async with self._reader_lock:
            try:
                if self._reader.is_closed():
                    await self._reopen_reader()
                return await run(self._reader)
            except (*_DB_ERRORS, JournalError) as exc:
                if not isinstance(exc, asyncpg.PostgresError | JournalError):
                    self._reader.terminate()
                self._log.error(("background", what), "journal: cannot %s: %s: %s", what,
                                type(exc).__name__, exc)
                return None

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = self._loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _call(self, callback: Callable[[_T], None] | None, arg: _T) -> None:
        """A callback of the desk's; its failure is logged, never the end of a background task."""
        if callback is None:
            return
        try:
            callback(arg)
        except Exception:
            self._log.error(("callback failed", getattr(callback, "__name__", "?")),
                            "journal: a callback of node %s failed: %s", self.node, traceback.format_exc())


def read_cdrs(
    dsn: str, *, since: float | None = None, batch: int = CDR_READ_BATCH
) -> Iterator[dict[str, object]]:
    """The CDRs of the PostgreSQL journal at ``dsn``, oldest first, as :data:`CDR_COLUMNS` → value
    mappings (what :func:`mss.journal.read_cdrs` gives for a sqlite file; ``mss cdr``). ``since``: only
    callbacks received at or after this wall-clock time (epoch seconds). Reads ``batch`` rows per
    query on a connection of its own, writing nothing, beside running nodes or not. For a caller
    without an event loop running (the command line). Raises :class:`JournalError` when the server
    cannot be reached or holds no mss journal."""
    if batch < 1:
        raise JournalError(f"journal: a CDR batch must hold at least one row, not {batch}")
    sql = f"SELECT {', '.join(CDR_COLUMNS)} FROM cdrs WHERE seq > $1"
    if since is not None:
        sql += " AND requested_at >= $3"
    sql += " ORDER BY seq LIMIT $2"
    with asyncio.Runner() as runner:
        db = runner.run(_connect(dsn))
        try:
            last = 0
            while True:
                args: tuple[object, ...] = (last, batch) if since is None else (last, batch, since)
                try:
                    rows = runner.run(db.fetch(sql, *args))
                except asyncpg.UndefinedTableError as exc:
                    raise JournalError(f"{redact(dsn)} holds no CDR table: not an mss journal") from exc
                except _DB_ERRORS as exc:
                    raise JournalError(f"cannot read the CDRs of the journal {redact(dsn)}: {exc}") from exc
                for row in rows:
                    yield {name: row[name] for name in CDR_COLUMNS}
                if len(rows) < batch:
                    return
                last = rows[-1]["seq"]
        finally:
            runner.run(db.close())
