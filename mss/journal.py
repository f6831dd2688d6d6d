"""The journal: the durable record that keeps mss's promise to the AS.

Every REQUEST acknowledged ``ok`` gets exactly one RESPONSE, even across a crash:

1. :meth:`Journal.record_requests` stores the REQUEST (state ``active``), committed *before* ``ACK code=ok``
   is written;
2. :meth:`Journal.mark_bridged` stores when the legs were bridged, and :meth:`Journal.heartbeat` says once a
   second that the process is alive, so the talk time known up to a crash can be computed afterwards;
3. :meth:`Journal.record_response` stores the RESPONSE line (and ends the callback), committed *before* it
   is sent; :meth:`Journal.mark_delivered` records that it was written to the AS;
4. at start, :meth:`Journal.interrupted` lists callbacks that were in progress when the process died
   (they get a RESPONSE with the talk time known up to the last heartbeat), and
   :meth:`Journal.undelivered` the RESPONSEs still owed to each peer.

sqlite3 in WAL mode with ``synchronous=NORMAL``: a commit survives the process being killed (the
promise is to the AS about mss crashes, not power loss of the host). Calls are synchronous and short
(tens of microseconds). A new file has :data:`PAGE_SIZE` pages (a commit appends each page it changed
to the WAL).

Group commit: a transaction (BEGIN, COMMIT, the WAL pages it appends) costs more than the one or two
statements of a write, so the service commits many writes at once. With :attr:`Journal.on_queued`
set, the first write after a commit opens a *group* (one transaction) and calls it; every later write
joins the group (REQUESTs, RESPONSEs, bridges, deliveries, heartbeats, relay ports, from any
connection or callback) until :meth:`Journal.flush` commits it, which the service does once per
event-loop iteration, or every few milliseconds while the journal is busy. Writes return at once (a
REQUEST's key, a RESPONSE's line) and reads see the group's writes, but nothing is durable before
:meth:`Journal.flush` returns: the caller holds back what depends on it (an ``ACK code=ok``, a
RESPONSE). A group is all or nothing: a write that fails (or
a failed commit) rolls the whole group back, later writes fail until :meth:`Journal.flush`, which
raises the error. Without :attr:`Journal.on_queued` every write is a transaction of its own.

Lazy writes: nothing waits for a bridge, a relay-port record or a delivery mark (what reads them is a
restart after a crash, or the retention), so they open no group of their own (a transaction each cost
more than their statements): each joins the open group, or waits for the next group another write
opens (a REQUEST's, a RESPONSE's, at the latest the heartbeat's a second later), which runs it first,
in order. Any :meth:`Journal.flush` commits them too, and reads see them. What a crash can cost is said
at each (:meth:`Journal.mark_bridged`, :meth:`Journal.record_ports`, :meth:`Journal.mark_delivered`).

CDRs: :meth:`Journal.record_response` writes a callback's CDR (:class:`Cdr`) with its RESPONSE, each
answered leg's media quality included (:class:`mss.quality.LegQuality`, the ``leg1_*`` and ``leg2_*``
columns of :data:`CDR_COLUMNS`). A journal made before those columns existed gets them when it is
opened (``ALTER TABLE ... ADD COLUMN``; its old rows read NULL there). :func:`read_cdrs` reads CDRs
without writing anything, while mss runs or not (the export, :mod:`mss.cdr`).

Workers (``[callback] workers``): the worker processes of one ``mss run`` share the file (WAL: readers
never wait; one writer at a time, the others wait up to the busy timeout). Each callback row names the
worker that owns it (``callbacks.worker``), each worker beats its own heartbeat, and at start a worker
settles only its own interrupted callbacks (:meth:`Journal.interrupted`): another worker's callbacks
in progress are not cut. A kept RESPONSE is written by whichever worker holds a connection from its
AS, exactly once per attempt: the worker first claims the row (:meth:`Journal.claim_response`, one
``UPDATE ... WHERE claimed_by IS NULL`` in a write transaction, so two workers can never both win),
releases the claim when it keeps it again (:meth:`Journal.release_response`), and a worker starting
again releases every claim its dead predecessor held (:meth:`Journal.release_claims`). With one
process (``worker`` None) no claim is ever made and the queries are those of before.

A worker's group is *deferred*: its writes are queued in memory and :meth:`Journal.flush` runs them
in one short transaction. The single process holds its group's transaction (and with it sqlite's one
write lock) from the group's first write to the flush, an event-loop iteration or a few ms; with workers the
other processes' writes would wait that long, their own loops stopped in sqlite's busy wait (measured:
350 ms loop lag at 350 callbacks/s on two workers). Deferred, the lock is held for the flush alone.
A worker's REQUEST keys come from a block of :data:`SEQ_BLOCK` it reserves at once, its RESPONSE
rows copy their callback's columns inside the INSERT, and a write that must answer at once (a
claim, a prune) first commits what is queued, then runs in a transaction of its own.

Retention (``[journal] keep_days``): :meth:`Journal.prune` deletes callbacks whose RESPONSE was
delivered more than that long ago, with their RESPONSE and CDR, :data:`PRUNE_BATCH` at a time; the
service calls it from a timer, never on the REQUEST path. Undelivered RESPONSEs and callbacks in
progress are never deleted. New files use ``auto_vacuum = INCREMENTAL`` and each prune returns up to
:data:`VACUUM_PAGES` free pages to the file system; in older files the free pages are reused, so under
steady traffic the file stops growing either way. The WAL file is truncated to
:data:`WAL_SIZE_LIMIT` after checkpoints.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from operator import attrgetter, is_, is_not
from pathlib import Path
from typing import Protocol

from mss.errors import JournalError
from mss.iif import CallbackResponse, serialize
from mss.quality import LegQuality

__all__ = [
    "CDR_COLUMNS",
    "CDR_READ_BATCH",
    "PAGE_SIZE",
    "PRUNE_BATCH",
    "SEQ_BLOCK",
    "VACUUM_PAGES",
    "WAL_SIZE_LIMIT",
    "Cdr",
    "InterruptedCallback",
    "Journal",
    "JournalStore",
    "NewCallback",
    "PendingResponse",
    "Takeover",
    "read_cdrs",
]

#: Callbacks deleted in one prune transaction: a few milliseconds of work, so the event loop that
#: runs it is never held up long.
PRUNE_BATCH = 200

#: Bytes of a page in a journal file made by this mss (an older file keeps its 4 KiB).
PAGE_SIZE = 1024

#: Free pages handed back to the file system after a prune (:data:`PAGE_SIZE` each): bounded work per
#: call.
VACUUM_PAGES = 256

#: REQUEST keys a worker reserves at once (one short transaction per this many REQUESTs).
SEQ_BLOCK = 1000

#: Bytes the WAL file is truncated to after a checkpoint (sqlite's journal_size_limit).
WAL_SIZE_LIMIT = 4 << 20

_SCHEMA = """
CREATE TABLE IF NOT EXISTS callbacks (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL,             -- the AS's id
    peer TEXT NOT NULL,           -- [peer_servers] name of the AS
    transport TEXT NOT NULL,      -- tcp or udp
    reply_host TEXT,              -- where a UDP RESPONSE goes
    reply_port INTEGER,
    user1 TEXT NOT NULL,
    user2 TEXT NOT NULL,
    duration INTEGER NOT NULL,
    received_at REAL NOT NULL,    -- wall clock (epoch seconds)
    bridged_at REAL,              -- wall clock of user2's 200 OK, NULL when never bridged
    state TEXT NOT NULL,          -- active | done
    worker INTEGER NOT NULL DEFAULT 0  -- the worker process that owns it ([callback] workers)
);
CREATE INDEX IF NOT EXISTS callbacks_active ON callbacks(state) WHERE state = 'active';
CREATE TABLE IF NOT EXISTS responses (
    seq INTEGER PRIMARY KEY REFERENCES callbacks(seq),
    id TEXT NOT NULL,
    peer TEXT NOT NULL,
    transport TEXT NOT NULL,
    reply_host TEXT,
    reply_port INTEGER,
    line TEXT NOT NULL,           -- the RESPONSE exactly as it is written, CRLF excluded
    created_at REAL NOT NULL,
    delivered_at REAL,
    claimed_by INTEGER            -- the worker writing it now (workers only); NULL: free to take
);
CREATE INDEX IF NOT EXISTS responses_owed ON responses(peer) WHERE delivered_at IS NULL;
CREATE INDEX IF NOT EXISTS responses_delivered ON responses(delivered_at) WHERE delivered_at IS NOT NULL;
CREATE TABLE IF NOT EXISTS cdrs (
    seq INTEGER PRIMARY KEY REFERENCES callbacks(seq),
    id TEXT NOT NULL,
    user1 TEXT NOT NULL,
    user2 TEXT NOT NULL,
    caller TEXT NOT NULL,
    leg1_call_id TEXT,
    leg2_call_id TEXT,
    leg1_code INTEGER,
    leg2_code INTEGER,
    codec TEXT,
    requested_at REAL NOT NULL,
    leg1_answered_at REAL,
    leg2_answered_at REAL,
    released_at REAL NOT NULL,
    released_by TEXT NOT NULL,    -- user1 | user2 | mss | as
    result TEXT NOT NULL,         -- the RESPONSE's result (answered, user1_busy, ...)
    reason TEXT NOT NULL,         -- a sentence for the operator
    real_duration INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value REAL NOT NULL
);
"""

# Each answered leg's media quality (mss.quality.LegQuality), added to the cdrs table when missing so
# that a journal made by an older mss keeps working: (LegQuality field, column type).
_QUALITY_FIELDS: tuple[tuple[str, str], ...] = (
    ("packets_in", "INTEGER"),      # RTP packets received from the leg's phone
    ("bytes_in", "INTEGER"),        # their bytes (UDP payload, RTP header included)
    ("packets_out", "INTEGER"),     # RTP packets sent to the leg's phone (ringback included)
    ("bytes_out", "INTEGER"),
    ("lost", "INTEGER"),            # sequence gaps in the phone's stream
    ("jitter_mean_ms", "REAL"),     # RFC 3550 interarrival jitter: mean of the samples
    ("jitter_max_ms", "REAL"),      # and the largest
    ("mos", "REAL"),                # estimated MOS of the phone's stream (mss.quality)
)
_QUALITY_COLUMNS: tuple[tuple[str, str], ...] = tuple(
    (f"{leg}_{name}", kind) for leg in ("leg1", "leg2") for name, kind in _QUALITY_FIELDS
)

#: The columns of a CDR, in the order the export writes them.
CDR_COLUMNS: tuple[str, ...] = (
    "seq", "id", "user1", "user2", "caller", "leg1_call_id", "leg2_call_id", "leg1_code", "leg2_code",
    "codec", "requested_at", "leg1_answered_at", "leg2_answered_at", "released_at", "released_by",
    "result", "reason", "real_duration", *(name for name, _kind in _QUALITY_COLUMNS),
)

#: CDRs read per read transaction by :func:`read_cdrs`: a short snapshot each, so an export to a
#: slow reader never holds back the WAL checkpoints of a running mss.
CDR_READ_BATCH = 500

# SQL texts one statement keeps, one per pattern of NULL parameters (:class:`_NullsInline`): a
# handful occur (a leg answered or not, a call ID or codec missing); past this, NULLs are bound as usual.
_MAX_NULL_PATTERNS = 64


_is_not_none = partial(is_not, None)


class _NullsInline:
    """A statement whose None parameters are written as NULL in its SQL instead of being bound.

    sqlite3 binds a None through its adaptation lookup, about 0.4 us each: more than an INSERT's own
    work per column, and a CDR of an unanswered call has twenty of them. ``template`` holds ``{}`` for
    each parameter that may be None and ``?`` for the others (given after them).
    """

    def __init__(self, template: str, optional: int) -> None:
        self._template = template
        self.plain = template.format(*("?" * optional))
        """The SQL with every parameter bound."""
        self._nones = (None,) * optional
        self._by_nulls: dict[tuple[bool, ...], str] = {}

    def __call__(
        self, values: tuple[object, ...], rest: tuple[object, ...] = ()
    ) -> tuple[str, tuple[object, ...]]:
        """The SQL and parameters for ``values`` (the optional parameters) followed by ``rest``."""
        if None not in values:
            return self.plain, values + rest
        nulls = tuple(map(is_, values, self._nones))  # True where a value is None
        sql = self._by_nulls.get(nulls)
        if sql is None:
            if len(self._by_nulls) >= _MAX_NULL_PATTERNS:
                return self.plain, values + rest
            sql = self._template.format(*("NULL" if null else "?" for null in nulls))
            self._by_nulls[nulls] = sql
        return sql, (*filter(_is_not_none, values), *rest)


# The statements of a callback's life, written once here (sqlite3 prepares each once per connection).
_INSERT_REQUEST = (  # (reply_host, reply_port: UDP only), the rest
    "INSERT INTO callbacks (reply_host, reply_port, id, peer, transport, user1, user2, duration, received_at,"
    " state, worker) VALUES ({}, ?, ?, ?, ?, ?, ?, ?, 'active', ?)"
)
_INSERT_REQUEST_UDP = _INSERT_REQUEST.format("?, ?")
_INSERT_REQUEST_TCP = _INSERT_REQUEST.format("NULL, NULL")  # None binds slowly (see _NullsInline)
_INSERT_REQUEST_KEYED = (  # workers: the key comes from the block reserved
    "INSERT INTO callbacks (reply_host, reply_port, seq, id, peer, transport, user1, user2, duration,"
    " received_at, state, worker) VALUES ({}, ?, ?, ?, ?, ?, ?, ?, ?, 'active', ?)"
)
_INSERT_REQUEST_KEYED_UDP = _INSERT_REQUEST_KEYED.format("?, ?")
_INSERT_REQUEST_KEYED_TCP = _INSERT_REQUEST_KEYED.format("NULL, NULL")
_NO_ADDR = ()  # a TCP REQUEST's reply address, in the parameters of the statements above
_MARK_BRIDGED = "UPDATE callbacks SET bridged_at = ? WHERE seq = ?"
_MARK_DELIVERED = "UPDATE responses SET delivered_at = ? WHERE seq = ?"
# (claimed_by: claimed only), line, created_at, seq: the rest copied from the callback, still active
_INSERT_RESPONSE = (
    "INSERT INTO responses (claimed_by, seq, id, peer, transport, reply_host, reply_port, line, created_at)"
    " SELECT {}, seq, id, peer, transport, reply_host, reply_port, ?, ? FROM callbacks"
    " WHERE seq = ? AND state = 'active'"
)
_INSERT_RESPONSE_CLAIMED = _INSERT_RESPONSE.format("?")
_INSERT_RESPONSE_FREE = _INSERT_RESPONSE.format("NULL")
# CDR_COLUMNS in order: the callback's own columns where it has them (seq, id, user1, user2,
# received_at as requested_at), a parameter for every other one (any may be NULL), then the seq
_INSERT_CDR_FROM_CALLBACK = _NullsInline(
    f"INSERT INTO cdrs ({', '.join(CDR_COLUMNS)})"
    " SELECT seq, id, user1, user2, {}, {}, {}, {}, {}, {}, received_at,"
    f" {', '.join(['{}'] * (len(CDR_COLUMNS) - 11))}"
    " FROM callbacks WHERE seq = ? AND state = 'active'",
    len(CDR_COLUMNS) - 5,
)
_END_CALLBACK = "UPDATE callbacks SET state = 'done' WHERE seq = ?"
_FORGET_PORTS = "DELETE FROM relay_ports WHERE seq = ? AND quarantined_until IS NULL"


def _key(cursor: sqlite3.Cursor) -> int:
    """The key of the row an INSERT made."""
    assert cursor.lastrowid is not None
    return cursor.lastrowid

# The relay's ports of each callback, so that after a crash a restarted process keeps the ports of
# the calls it cut out of use for a while (their phones may still be sending to them).
_PORTS_SCHEMA = """
CREATE TABLE IF NOT EXISTS relay_ports (
    seq INTEGER PRIMARY KEY REFERENCES callbacks(seq),
    ports TEXT NOT NULL,          -- the callback's relay RTP ports (RTCP = RTP + 1), space-separated
    quarantined_until REAL        -- wall clock: out of use until then (a crash cut the callback)
);
CREATE INDEX IF NOT EXISTS relay_ports_quarantined ON relay_ports(quarantined_until)
    WHERE quarantined_until IS NOT NULL;
"""

@dataclass(frozen=True, slots=True, kw_only=True)
class NewCallback:
    """A REQUEST to record before it is acknowledged."""

    id: str
    """The AS's id."""
    peer: str
    """[peer_servers] name of the AS."""
    transport: str
    """``tcp`` or ``udp``: how the RESPONSE goes back."""
    reply_addr: tuple[str, int] | None
    """UDP only: where the RESPONSE goes."""
    user1: str
    """Called first."""
    user2: str
    """Called second."""
    duration: int
    """Seconds allowed from user1's answer."""
    received_at: float
    """Wall clock when the REQUEST arrived."""


@dataclass(frozen=True, slots=True, kw_only=True)
class InterruptedCallback:
    """A callback that was in progress when the process (or, with a shared journal, the node) died."""

    seq: int
    """Journal key."""
    id: str
    """The AS's id."""
    real_duration: int
    """Talk time known up to the last heartbeat before the crash."""
    peer: str | None = None
    """[peer_servers] name of its AS (None: not read; the RESPONSE is then found through the journal)."""
    transport: str = "tcp"
    """``tcp`` or ``udp``: how its RESPONSE goes."""
    reply_addr: tuple[str, int] | None = None
    """UDP only: where its RESPONSE goes."""


@dataclass(frozen=True, slots=True, kw_only=True)
class PendingResponse:
    """A RESPONSE recorded but not yet delivered."""

    seq: int
    """Journal key."""
    id: str
    """The AS's id."""
    peer: str
    """[peer_servers] name it is owed to."""
    transport: str
    """``tcp`` or ``udp``."""
    reply_addr: tuple[str, int] | None
    """UDP only: where it goes."""
    line: str
    """The message, CRLF excluded."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Takeover:
    """What a node took over from a dead one (a shared journal): the callbacks it had in progress,
    now this node's to answer, and the RESPONSEs it had recorded for UDP but not sent, now claimed by
    this node to send (its TCP ones are freed for whichever node the AS is connected to)."""

    node: str
    """The dead node's name."""
    cut: list[InterruptedCallback]
    """Its callbacks in progress, with the talk time known up to its last heartbeat."""
    owed: list[PendingResponse]
    """Its undelivered UDP RESPONSEs, claimed by this node."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Cdr:
    """Call detail record of one callback (written with its RESPONSE)."""

    caller: str
    """Number presented in From on both legs."""
    leg1_call_id: str | None = None
    """SIP Call-ID of user1's leg."""
    leg2_call_id: str | None = None
    """SIP Call-ID of user2's leg."""
    leg1_code: int | None = None
    """Final SIP status of user1's INVITE."""
    leg2_code: int | None = None
    """Final SIP status of user2's INVITE."""
    codec: str | None = None
    """Codec negotiated with user1 and passed to user2."""
    leg1_answered_at: float | None = None
    """Wall clock of user1's answer."""
    leg2_answered_at: float | None = None
    """Wall clock of user2's answer (the bridge)."""
    released_at: float
    """Wall clock of the release."""
    released_by: str
    """``user1``, ``user2``, ``mss`` (timer, failure, shutdown) or ``as`` (CANCEL)."""
    result: str
    """Outcome (answered, user1_busy, ...)."""
    reason: str
    """What happened, for the operator."""
    leg1: LegQuality | None = None
    """Media quality of user1's leg (relay leg ``a``); None when it was not answered."""
    leg2: LegQuality | None = None
    """Media quality of user2's leg (relay leg ``b``); None when it was not answered."""


_NO_QUALITY: tuple[None, ...] = (None,) * len(_QUALITY_FIELDS)
_quality_of = attrgetter(*(name for name, _kind in _QUALITY_FIELDS))  # a LegQuality's fields, as a tuple


def _quality_values(leg: LegQuality | None) -> tuple[int | float | None, ...]:
    """A leg's quality columns, in :data:`_QUALITY_FIELDS` order (NULLs when there is none)."""
    if leg is None:
        return _NO_QUALITY
    values: tuple[int | float | None, ...] = _quality_of(leg)
    return values


def _add_quality_columns(db: sqlite3.Connection) -> None:
    """Give a cdrs table made by an older mss the quality columns (its old rows read NULL there)."""
    have = {row[1] for row in db.execute("PRAGMA table_info(cdrs)")}
    missing = [(name, kind) for name, kind in _QUALITY_COLUMNS if name not in have]
    if not missing:
        return
    db.execute("BEGIN IMMEDIATE")
    try:
        for name, kind in missing:
            db.execute(f"ALTER TABLE cdrs ADD COLUMN {name} {kind}")
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise


def _add_worker_columns(db: sqlite3.Connection) -> None:
    """Give a journal made before workers the owner and claim columns (old rows: worker 0, unclaimed)."""
    wanted = (("callbacks", "worker", "INTEGER NOT NULL DEFAULT 0"), ("responses", "claimed_by", "INTEGER"))
    db.execute("BEGIN IMMEDIATE")  # two workers opening an old file at once: one adds, the other sees it
    try:
        for table, column, kind in wanted:
            if column not in {row[1] for row in db.execute(f"PRAGMA table_info({table})")}:
                db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise


class JournalStore(Protocol):
    """What the desk and the service use of a journal, whichever the backend: :class:`Journal` (sqlite)
    or :class:`mss.aio.journal_pg.PgJournal` (PostgreSQL, shared by nodes). Every call is synchronous and
    short; a backend that talks to a server queues its writes and commits them in the background
    (:meth:`commit`), and answers the rest from what it loaded or claimed ahead."""

    @property
    def worker(self) -> int | None: ...  # read-only here: PgJournal's is always an int
    on_queued: Callable[[], None] | None
    on_owed: Callable[[str], None] | None
    on_takeover: Callable[[Takeover], None] | None

    @property
    def pending(self) -> bool: ...
    def commit(self, done: Callable[[JournalError | None], None]) -> None: ...
    def record_requests(self, callbacks: Iterable[NewCallback]) -> list[int]: ...
    def mark_bridged(self, seq: int, at: float) -> None: ...
    def heartbeat(self, at: float) -> None: ...
    def record_response(
        self, seq: int, response: CallbackResponse, at: float, cdr: Cdr | None = None, *, claim: bool = False
    ) -> str: ...
    def mark_delivered(self, seq: int, at: float) -> None: ...
    def interrupted(self) -> list[InterruptedCallback]: ...
    def undelivered(self) -> list[PendingResponse]: ...
    def claim_response(self, seq: int) -> bool: ...
    def release_response(self, seq: int) -> None: ...
    def release_claims(self) -> int: ...
    def owed_to(self, peer: str, limit: int) -> list[PendingResponse]: ...
    def prune(self, before: float, limit: int = PRUNE_BATCH) -> int: ...
    def size(self) -> int: ...
    def record_ports(self, seq: int, ports: Iterable[int]) -> None: ...
    def quarantined_ports(self, now: float, window: float) -> list[tuple[int, float]]: ...


_Statements = list[tuple[str, tuple[object, ...]]]  # (SQL, parameters), run in order


def _heartbeat_key(worker: int) -> str:
    """The meta row of a worker's heartbeat (worker 0's is the single process's, as before workers)."""
    return "heartbeat" if worker == 0 else f"heartbeat.{worker}"


class Journal:
    """The sqlite3 journal; one per process, used from the event loop thread.

    ``worker``: this process's worker number under a supervisor (``[callback] workers`` > 1), of
    ``workers`` in all; None for the single process. Worker 0 also settles the callbacks of workers
    that no longer exist (a config that went from 3 workers to 2).
    """

    def __init__(self, path: str | Path, *, worker: int | None = None, workers: int = 1) -> None:
        self.path = str(path)
        self.worker = worker
        """This worker's number, or None for the single process (no claims)."""
        self.workers = workers
        """Workers of the supervisor (1: the single process)."""
        self._me = 0 if worker is None else worker
        try:
            self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            # Only a file without tables takes these; an older file keeps its page size and reuses free
            # pages. Small pages: a commit appends each page it changed to the WAL, a few per callback
            # (rows of a few hundred bytes), so 1 KiB pages make a commit's writes a quarter of 4 KiB
            # ones (measured: 16 -> 9 us a commit).
            self._db.execute(f"PRAGMA page_size={PAGE_SIZE}")
            self._db.execute("PRAGMA auto_vacuum=INCREMENTAL")
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(f"PRAGMA journal_size_limit={WAL_SIZE_LIMIT}")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA busy_timeout=5000")
            self._db.executescript(_SCHEMA)
            self._db.executescript(_PORTS_SCHEMA)
            _add_quality_columns(self._db)
            _add_worker_columns(self._db)
        except sqlite3.Error as exc:
            raise JournalError(f"cannot open journal {self.path}: {exc}") from exc
        self.on_queued: Callable[[], None] | None = None
        """Group commit: called when a write opens a group; :meth:`flush` must follow soon (the service
        calls it once per event-loop iteration, or a few ms later while the journal is busy). None:
        every write commits on its own."""
        self.on_owed: Callable[[str], None] | None = None
        """Never called here: one file needs no notice of RESPONSEs claimed in the background."""
        self.on_takeover: Callable[[Takeover], None] | None = None
        """Never called here: the processes sharing a file are one node's (a restart settles them)."""
        self.commits = 0
        """Transactions committed so far (a group counts once)."""
        self._group = 0  # writes in the open group; 0: no group open
        self._lost: JournalError | None = None  # why the group was rolled back, until flush() says so
        self._queued: list[tuple[str, tuple[object, ...]]] = []  # a deferred group's statements
        # lazy writes waiting for the next group: SQL -> (what, the parameters of each, in order)
        self._lazy: dict[str, tuple[str, list[tuple[object, ...]]]] = {}
        self._next_seq = 0  # workers: the next REQUEST key of the block reserved ...
        self._seq_end = 0  # ... and the first one past it

    @property
    def _defers(self) -> bool:
        """Group commit of a worker: writes are queued and run together at :meth:`flush`."""
        return self.worker is not None and self.on_queued is not None

    @property
    def pending(self) -> bool:
        """A group is open (or was lost): :meth:`flush` is owed and decides whether its writes are kept."""
        return self._group > 0 or self._lost is not None

    @contextmanager
    def _transaction(self, what: str) -> Iterator[sqlite3.Connection]:
        """One write: in the open group (:attr:`on_queued` set) or a transaction of its own (a worker's
        deferred group is committed first, so that this write comes after it)."""
        if self._defers and self._queued:
            self._commit_queued()
        if self.on_queued is not None and not self._defers:
            self._join_group(what)
            try:
                yield self._db
            except BaseException as exc:
                self._fail_in_group(what, exc)
                raise
            return
        try:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
                self._db.execute("COMMIT")
                self.commits += 1
            except BaseException:
                # Also when COMMIT itself failed: a transaction left open would refuse every later BEGIN.
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            raise JournalError(f"journal: cannot {what}: {exc}") from exc

    def _fail_in_group(self, what: str, exc: BaseException) -> None:
        """A write in the group raised ``exc``: a check of ours (a :class:`JournalError`, made before
        anything was written) keeps the group; anything else may have left part of the write in it, so
        the group goes, all of it (an sqlite error is raised as a :class:`JournalError`)."""
        if isinstance(exc, JournalError):
            return
        error = JournalError(f"journal: cannot {what}: {exc}")
        self._roll_back(error)
        if isinstance(exc, sqlite3.Error):
            raise error from exc

    def _join_group(self, what: str) -> None:
        """Count a write into the open group; open one (and call :attr:`on_queued`) when there is none."""
        if self._group:
            self._group += 1
            return
        if self._lost is not None:
            raise JournalError(f"journal: cannot {what}: the group was rolled back ({self._lost})")
        self._begin_group(what, notify=True)

    def _begin_group(self, what: str, *, notify: bool) -> None:
        """BEGIN a group (``notify``: and call :attr:`on_queued`), then run the lazy writes that waited
        for it, first: each statement's rows in one ``executemany``, in the order they were made (the
        statements of different lazy writes touch different rows, so only that order matters)."""
        try:
            self._db.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise JournalError(f"journal: cannot {what}: {exc}") from exc
        self._group = 1
        if notify:
            assert self.on_queued is not None
            self.on_queued()
        lazy, self._lazy = self._lazy, {}
        for sql, (lazy_what, rows) in lazy.items():
            try:
                self._db.executemany(sql, rows)
            except sqlite3.Error as exc:
                error = JournalError(f"journal: cannot {lazy_what}: {exc}")
                self._roll_back(error)
                raise error from exc
            self._group += len(rows)

    def _see_lazy(self) -> None:
        """Before a read: run the lazy writes waiting for a group, so that the read sees them (a
        worker's: commit them, when they are all its deferred group holds; the rest of a deferred
        group is seen once :meth:`flush` has committed it)."""
        if self._group or self._lost is not None:
            return
        if self._lazy:
            self._join_group("run the writes waiting for a commit")
        elif self._defers and self._queued:
            self._commit_queued()

    def _write(self, what: str, statements: _Statements, *, lazy: bool = False) -> None:
        """Writes that answer nothing: in the group (a worker's: queued), else a transaction of their own.

        ``lazy``: nothing waits for this write, so it opens no group of its own: it joins the open group,
        or the next one any other write opens (the heartbeat's at the latest, within a second). For
        writes whose only reader is a restart after a crash (each says what a crash can cost).
        """
        if self.on_queued is None:
            with self._transaction(what) as db:
                for sql, params in statements:
                    db.execute(sql, params)
            return
        if self._lost is not None:
            raise JournalError(f"journal: cannot {what}: the group was rolled back ({self._lost})")
        if self._defers:
            self._queued.extend(statements)  # in order: lazy ones just ask for no flush
            if not lazy:
                self._group += 1
                if self._group == 1:
                    self.on_queued()
            return
        if lazy and not self._group:
            for sql, params in statements:
                waiting = self._lazy.get(sql)
                if waiting is None:
                    self._lazy[sql] = (what, [params])
                else:
                    waiting[1].append(params)
            return
        self._join_group(what)
        try:
            for sql, params in statements:
                self._db.execute(sql, params)
        except BaseException as exc:
            self._fail_in_group(what, exc)
            raise

    def _commit_queued(self) -> None:
        """Run a deferred group's statements in one transaction; a failure keeps nothing and is raised
        by the next :meth:`flush` (later writes of the group are refused until then)."""
        queued, self._queued = self._queued, []
        writes, self._group = self._group or len(queued), 0  # lazy writes alone: count their statements
        try:
            self._db.execute("BEGIN IMMEDIATE")
            for sql, params in queued:
                self._db.execute(sql, params)
            self._db.execute("COMMIT")
        except sqlite3.Error as exc:
            if self._db.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    self._db.execute("ROLLBACK")
            self._lost = JournalError(f"journal: cannot commit {writes} write(s): {exc}")
            return
        self.commits += 1

    def _reserve_seqs(self, count: int) -> None:
        """Workers: reserve the next block of REQUEST keys (at least ``count``) for this process."""
        block = max(count, SEQ_BLOCK)
        with self._transaction("reserve request keys") as db:
            row = db.execute(
                "SELECT max(coalesce((SELECT value FROM meta WHERE key = 'seq_reserved'), 0),"
                " coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'callbacks'), 0),"
                " coalesce((SELECT max(seq) FROM callbacks), 0))"
            ).fetchone()
            top = int(row[0])
            db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('seq_reserved', ?)", (top + block,))
        self._next_seq, self._seq_end = top + 1, top + block + 1

    def _roll_back(self, lost: JournalError | None) -> None:
        """End the open group without keeping anything; ``lost``: what :meth:`flush` will raise."""
        self._group = 0
        self._lost = lost
        if self._db.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                self._db.execute("ROLLBACK")

    def flush(self) -> None:
        """Commit the open group and the lazy writes (nothing to do when there are none).

        Raises :class:`JournalError` when the group is lost (a write in it or the commit failed): none of
        its writes are kept. The next write opens a new group either way.
        """
        if self._defers and self._queued:
            self._commit_queued()
        lost, self._lost = self._lost, None
        if lost is not None:
            raise lost
        if not self._group:
            if not self._lazy:
                return
            try:
                self._begin_group("write what waited for a commit", notify=False)
            except JournalError:
                self._lost = None  # raised here, once
                raise
            self._group -= 1  # BEGIN counts the write that opens a group: this one has only lazy ones
        writes = self._group
        try:
            self._db.execute("COMMIT")
        except sqlite3.Error as exc:
            self._roll_back(None)
            raise JournalError(f"journal: cannot commit {writes} write(s): {exc}") from exc
        self._group = 0
        self.commits += 1

    def commit(self, done: Callable[[JournalError | None], None]) -> None:
        """Commit the open group and the lazy writes, then call ``done`` with None, or with the error
        that lost the group.

        The surface the desk uses with either backend: sqlite commits at once, so ``done`` is called
        before this returns (the PostgreSQL journal calls it when its transaction has ended).
        """
        try:
            self.flush()
        except JournalError as exc:
            done(exc)
            return
        done(None)

    def record_requests(self, callbacks: Iterable[NewCallback]) -> list[int]:
        """Record REQUESTs in one transaction; returns their keys, in order."""
        if self.worker is not None:
            return self._worker_requests(list(callbacks))
        rows = [
            (_INSERT_REQUEST_TCP if cb.reply_addr is None else _INSERT_REQUEST_UDP,
             (*(cb.reply_addr or _NO_ADDR), cb.id, cb.peer, cb.transport, cb.user1, cb.user2, cb.duration,
              cb.received_at, self._me))
            for cb in callbacks
        ]
        if self.on_queued is None:
            with self._transaction("record a request") as db:
                return [_key(db.execute(*row)) for row in rows]
        self._join_group("record a request")
        try:
            return [_key(self._db.execute(*row)) for row in rows]
        except BaseException as exc:
            self._fail_in_group("record a request", exc)
            raise

    def _worker_requests(self, callbacks: list[NewCallback]) -> list[int]:
        """Workers: REQUESTs with keys of this process's reserved block (queued in a deferred group)."""
        if self._lost is not None:
            raise JournalError(f"journal: cannot record a request: the group was rolled back ({self._lost})")
        if self._next_seq + len(callbacks) > self._seq_end:
            self._reserve_seqs(len(callbacks))
        seqs = list(range(self._next_seq, self._next_seq + len(callbacks)))
        self._next_seq += len(callbacks)
        self._write("record a request", [
            (_INSERT_REQUEST_KEYED_TCP if cb.reply_addr is None else _INSERT_REQUEST_KEYED_UDP,
             (*(cb.reply_addr or _NO_ADDR), seq, cb.id, cb.peer, cb.transport, cb.user1, cb.user2,
              cb.duration, cb.received_at, self._me))
            for seq, cb in zip(seqs, callbacks, strict=True)
        ])
        return seqs

    def mark_bridged(self, seq: int, at: float) -> None:
        """The legs of callback ``seq`` were bridged at wall time ``at``.

        A lazy write (committed with the next group): its only reader is :meth:`interrupted`, whose
        talk time runs from the bridge to the last heartbeat committed. A heartbeat committed after
        the bridge commits the bridge with it (or before it), so a bridge lost in a crash is one no
        committed heartbeat followed, whose talk time is 0 either way.
        """
        self._write("record a bridge", [(_MARK_BRIDGED, (at, seq))], lazy=True)

    def heartbeat(self, at: float) -> None:
        """The process is alive at wall time ``at`` (bounds the talk time of calls cut by a crash).

        Commits the lazy writes made before it (a group of its own when nothing else opened one).
        """
        self._write("write the heartbeat", [
            ("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (_heartbeat_key(self._me), at))
        ])

    def record_response(
        self, seq: int, response: CallbackResponse, at: float, cdr: Cdr | None = None, *, claim: bool = False
    ) -> str:
        """Record the RESPONSE owed for callback ``seq`` (and its CDR) and end the callback.

        ``claim`` (workers): the row is born claimed by this worker, so no other worker takes it while
        this one writes it (release it with :meth:`release_response` when it is kept instead).
        Returns the line to write (CRLF excluded), exactly as it is kept for redelivery.

        The RESPONSE and CDR rows copy their callback's columns inside their INSERTs (no read first); a
        worker's are queued, a callback ended already then getting nothing more, while the single
        process finds a callback missing or ended by the RESPONSE's INSERT writing no row, and raises.
        """
        line = serialize(response).decode("ascii").rstrip("\r\n")
        statements: _Statements = [
            (_INSERT_RESPONSE_CLAIMED, (self._me, line, at, seq)) if claim
            else (_INSERT_RESPONSE_FREE, (line, at, seq))
        ]
        if cdr is not None:
            statements.append(_INSERT_CDR_FROM_CALLBACK((
                cdr.caller, cdr.leg1_call_id, cdr.leg2_call_id, cdr.leg1_code, cdr.leg2_code, cdr.codec,
                cdr.leg1_answered_at, cdr.leg2_answered_at, cdr.released_at, cdr.released_by, cdr.result,
                cdr.reason, response.real_duration, *_quality_values(cdr.leg1), *_quality_values(cdr.leg2),
            ), (seq,)))
        # ended; its relay ports are no longer needed after a crash (unless in quarantine)
        statements += [(_END_CALLBACK, (seq,)), (_FORGET_PORTS, (seq,))]
        if self._defers:
            self._write("record a response", statements)  # queued: nothing to check
        elif self.on_queued is None:
            with self._transaction("record a response") as db:
                self._run_response(db, seq, statements)
        else:
            self._join_group("record a response")
            try:
                self._run_response(self._db, seq, statements)
            except BaseException as exc:
                self._fail_in_group("record a response", exc)
                raise
        return line

    def _run_response(self, db: sqlite3.Connection, seq: int, statements: _Statements) -> None:
        """Run :meth:`record_response`'s statements; raises (nothing written) when the callback is
        missing or has its RESPONSE already."""
        if db.execute(*statements[0]).rowcount != 1:
            raise self._no_response(seq)
        for sql, params in statements[1:]:
            db.execute(sql, params)

    def _no_response(self, seq: int) -> JournalError:
        """Why callback ``seq`` cannot take a RESPONSE: there is none, or it has one."""
        row = self._db.execute("SELECT id FROM callbacks WHERE seq = ?", (seq,)).fetchone()
        if row is None:
            return JournalError(f"journal: no callback {seq}")
        return JournalError(f"journal: callback {row[0]} (#{seq}) already has its RESPONSE")

    def mark_delivered(self, seq: int, at: float) -> None:
        """The RESPONSE of callback ``seq`` was written to the AS at wall time ``at``.

        A lazy write (committed with the next group, the heartbeat's at the latest): lost in a crash,
        the RESPONSE is written again after the restart (at least once across a crash).
        """
        self._write("mark a response delivered", [(_MARK_DELIVERED, (at, seq))], lazy=True)

    def interrupted(self) -> list[InterruptedCallback]:
        """Callbacks left active by a previous process, with the talk time known up to its last heartbeat.

        Call once at start, before taking new REQUESTs. A worker sees only its own (and worker 0 those of
        workers beyond ``workers``): the others' are in progress in live processes.
        """
        self._see_lazy()
        try:
            beats = dict(
                self._db.execute("SELECT key, value FROM meta WHERE key LIKE 'heartbeat%'").fetchall()
            )
            rows = self._db.execute(
                "SELECT seq, id, bridged_at, duration, worker, peer, transport, reply_host, reply_port"
                f" FROM callbacks WHERE state = 'active' AND {self._mine} ORDER BY seq",
                self._mine_args,
            ).fetchall()
        except sqlite3.Error as exc:
            raise JournalError(f"journal: cannot read interrupted callbacks: {exc}") from exc
        result = []
        for seq, cb_id, bridged_at, duration, worker, peer, transport, host, port in rows:
            beat = beats.get(_heartbeat_key(worker))
            talk = 0
            if bridged_at is not None and beat is not None:
                talk = round(max(0.0, min(beat, bridged_at + duration) - bridged_at))
            result.append(InterruptedCallback(
                seq=seq, id=cb_id, real_duration=talk, peer=peer, transport=transport,
                reply_addr=(host, port) if host is not None else None,
            ))
        return result

    def undelivered(self) -> list[PendingResponse]:
        """RESPONSEs recorded but not yet written to their AS, oldest first (a worker: those of its own
        callbacks; the others' are found by :meth:`owed_to` when their AS connects here)."""
        mine = "" if self.worker is None else f" AND seq IN (SELECT seq FROM callbacks WHERE {self._mine})"
        self._see_lazy()
        try:
            rows = self._db.execute(
                "SELECT seq, id, peer, transport, reply_host, reply_port, line FROM responses"
                f" WHERE delivered_at IS NULL{mine} ORDER BY created_at, seq",
                self._mine_args,
            ).fetchall()
        except sqlite3.Error as exc:
            raise JournalError(f"journal: cannot read undelivered responses: {exc}") from exc
        return [
            PendingResponse(
                seq=seq,
                id=cb_id,
                peer=peer,
                transport=transport,
                reply_addr=(host, port) if host is not None else None,
                line=line,
            )
            for seq, cb_id, peer, transport, host, port, line in rows
        ]

    # --- workers: who writes a kept RESPONSE --------------------------------------------------

    @property
    def _mine(self) -> str:
        """SQL condition on ``callbacks.worker``: the rows this process settles after a crash."""
        if self.worker is None:
            return "1"
        if self.worker == 0:
            return "(worker = ? OR worker >= ?)"
        return "worker = ?"

    @property
    def _mine_args(self) -> tuple[int, ...]:
        if self.worker is None:
            return ()
        if self.worker == 0:
            return (0, self.workers)
        return (self.worker,)

    def claim_response(self, seq: int) -> bool:
        """Take the undelivered, unclaimed RESPONSE ``seq`` for this worker before writing it; False when
        another worker holds it or it was delivered (then it must not be written)."""
        with self._transaction("claim a response") as db:
            cur = db.execute(
                "UPDATE responses SET claimed_by = ? WHERE seq = ? AND delivered_at IS NULL"
                " AND claimed_by IS NULL",
                (self._me, seq),
            )
        return cur.rowcount == 1

    def release_response(self, seq: int) -> None:
        """Give up this worker's claim on RESPONSE ``seq`` (kept again: another worker may write it)."""
        self._write("release a response", [(
            "UPDATE responses SET claimed_by = NULL WHERE seq = ? AND claimed_by = ?"
            " AND delivered_at IS NULL",
            (seq, self._me),
        )])

    def release_claims(self) -> int:
        """At start: release every claim this worker's previous process held (worker 0: and the claims
        of workers that no longer exist); returns how many."""
        cond = "claimed_by = ?" if self._me != 0 else "(claimed_by = 0 OR claimed_by >= ?)"
        args = (self._me,) if self._me != 0 else (self.workers,)
        with self._transaction("release the claims of a previous process") as db:
            cur = db.execute(
                f"UPDATE responses SET claimed_by = NULL WHERE {cond} AND delivered_at IS NULL", args
            )
        return cur.rowcount

    def owed_to(self, peer: str, limit: int) -> list[PendingResponse]:
        """Up to ``limit`` TCP RESPONSEs owed to ``peer`` that no worker holds, oldest first (workers: a
        worker with a connection from ``peer`` looks for those another worker kept)."""
        self._see_lazy()
        try:
            rows = self._db.execute(
                "SELECT seq, id, peer, transport, reply_host, reply_port, line FROM responses"
                " WHERE peer = ? AND delivered_at IS NULL AND claimed_by IS NULL AND transport = 'tcp'"
                " ORDER BY created_at, seq LIMIT ?",
                (peer, limit),
            ).fetchall()
        except sqlite3.Error as exc:
            raise JournalError(f"journal: cannot read the responses owed to {peer}: {exc}") from exc
        return [
            PendingResponse(seq=seq, id=cb_id, peer=p, transport=transport,
                            reply_addr=(host, port) if host is not None else None, line=line)
            for seq, cb_id, p, transport, host, port, line in rows
        ]

    def prune(self, before: float, limit: int = PRUNE_BATCH) -> int:
        """Delete up to ``limit`` callbacks whose RESPONSE was delivered before wall time ``before``, with
        their RESPONSE and CDR; returns how many. Nothing undelivered or in progress is touched."""
        with self._transaction("prune old callbacks") as db:
            seqs = [
                row[0]
                for row in db.execute(
                    "SELECT seq FROM responses WHERE delivered_at IS NOT NULL AND delivered_at < ?"
                    " ORDER BY delivered_at LIMIT ?",
                    (before, limit),
                )
            ]
            if seqs:
                marks = ",".join("?" * len(seqs))
                db.execute(f"DELETE FROM cdrs WHERE seq IN ({marks})", seqs)
                db.execute(f"DELETE FROM responses WHERE seq IN ({marks})", seqs)
                db.execute(f"DELETE FROM callbacks WHERE seq IN ({marks}) AND state = 'done'", seqs)
                db.execute(f"PRAGMA incremental_vacuum({VACUUM_PAGES})").fetchall()
        return len(seqs)

    def size(self) -> int:
        """Bytes the journal takes on disk: the database file and its WAL."""
        total = 0
        for suffix in ("", "-wal"):
            with contextlib.suppress(OSError):
                total += os.path.getsize(self.path + suffix)
        return total

    def cdr(self, cb_id: str) -> dict[str, object] | None:
        """The latest CDR of callback ``cb_id`` as a column → value mapping (for operators and tests)."""
        self._see_lazy()
        try:
            cur = self._db.execute("SELECT * FROM cdrs WHERE id = ? ORDER BY seq DESC LIMIT 1", (cb_id,))
            row = cur.fetchone()
        except sqlite3.Error as exc:
            raise JournalError(f"journal: cannot read a CDR: {exc}") from exc
        if row is None:
            return None
        return {d[0]: value for d, value in zip(cur.description, row, strict=True)}

    # --- relay ports: the restart quarantine ----------------------------------------------------

    def record_ports(self, seq: int, ports: Iterable[int]) -> None:
        """Record the relay's RTP ports of callback ``seq`` (when its media session opens).

        The table holds about the callbacks in progress and no more: :meth:`record_response` deletes
        the row of the callback it ends (unless in quarantine), and :meth:`quarantined_ports` (at
        start) every row no longer needed. Each is one indexed statement, whatever the number of
        calls in progress (a sweep here used to scan every call in progress when nothing was left to
        forget).

        A lazy write (:meth:`_write`): committed with the next group, the heartbeat's at the latest, a
        second after the callback started. What a crash in that second costs: the ports of a call
        still calling its first leg are not kept out of use after the restart.
        """
        text = " ".join(map(str, map(int, ports)))
        self._write("record relay ports", [("INSERT OR REPLACE INTO relay_ports (seq, ports) VALUES (?, ?)",
                                            (seq, text))], lazy=True)

    def quarantined_ports(self, now: float, window: float) -> list[tuple[int, float]]:
        """RTP ports to keep out of use at start, each with the wall time it may be used again.

        The ports of callbacks a crash left active are marked out of use until ``now + window``
        (unless the last heartbeat is more than ``window`` old: their phones have given up since);
        the result is every port so marked and not yet due, so a process that dies soon after its
        start passes the quarantine on to the next one. Call at start, before :meth:`interrupted`
        callbacks get their RESPONSE (which ends them).
        """
        with self._transaction("read the relay ports of interrupted callbacks") as db:
            beat_row = db.execute(
                "SELECT value FROM meta WHERE key = ?", (_heartbeat_key(self._me),)
            ).fetchone()
            if beat_row is None or now - beat_row[0] < window:
                db.execute(
                    "UPDATE relay_ports SET quarantined_until = ? WHERE seq IN"
                    f" (SELECT seq FROM callbacks WHERE state = 'active' AND {self._mine})",
                    (now + window, *self._mine_args),
                )
            db.execute(
                "UPDATE relay_ports SET quarantined_until = NULL WHERE quarantined_until <= ?", (now,)
            )
            # rows no longer needed: callbacks ended (or deleted) and not in quarantine
            db.execute(
                "DELETE FROM relay_ports WHERE quarantined_until IS NULL"
                " AND seq NOT IN (SELECT seq FROM callbacks WHERE state = 'active')"
            )
            rows = db.execute(
                "SELECT ports, quarantined_until FROM relay_ports WHERE quarantined_until IS NOT NULL"
            ).fetchall()
        return [(int(port), until) for ports, until in rows for port in ports.split() if port.isdigit()]

    def close(self) -> None:
        """Commit the open group and the lazy writes, then close the database (idempotent).

        Raises :class:`JournalError` when the group cannot be committed (it is closed all the same).
        """
        try:
            if self._group or self._lazy or self._queued:
                self.flush()
        finally:
            self._group, self._lost, self._lazy = 0, None, {}
            try:
                self._db.close()
            except sqlite3.Error as exc:
                raise JournalError(f"journal: cannot close: {exc}") from exc



def read_cdrs(
    path: str | Path, *, since: float | None = None, batch: int = CDR_READ_BATCH
) -> Iterator[dict[str, object]]:
    """The CDRs of the journal at ``path``, oldest first, as :data:`CDR_COLUMNS` → value mappings.

    ``since``: only callbacks received at or after this wall-clock time (epoch seconds). The file is
    opened read-only and nothing is written to it, so this works while mss runs (WAL: readers and
    the writer do not wait for each other) and when it does not. Rows are read ``batch`` at a time,
    each batch one short read transaction. A journal written by an older mss reads NULL in the
    columns it did not have. Raises :class:`JournalError` when the file is missing or is not a
    journal.
    """
    if batch < 1:
        raise JournalError(f"journal: a CDR batch must hold at least one row, not {batch}")
    where = Path(path)
    if not where.is_file():
        raise JournalError(f"journal {where} does not exist (is [journal] path right?)")
    try:
        db = sqlite3.connect(f"{where.resolve().as_uri()}?mode=ro", uri=True, isolation_level=None,
                             timeout=5.0)
    except sqlite3.Error as exc:
        raise JournalError(f"cannot open journal {where} read-only: {exc}") from exc
    try:
        try:
            have = {row[1] for row in db.execute("PRAGMA table_info(cdrs)")}
        except sqlite3.Error as exc:
            raise JournalError(f"cannot read journal {where}: {exc}") from exc
        if not have:
            raise JournalError(f"{where} holds no CDR table: not an mss journal")
        picks = ", ".join(name if name in have else f"NULL AS {name}" for name in CDR_COLUMNS)
        sql = f"SELECT {picks} FROM cdrs WHERE seq > ?"
        if since is not None:
            sql += " AND requested_at >= ?"
        sql += " ORDER BY seq LIMIT ?"
        last = 0
        while True:
            args: tuple[float, ...] = (last, since, batch) if since is not None else (last, batch)
            try:
                rows = db.execute(sql, args).fetchall()
            except sqlite3.Error as exc:
                raise JournalError(f"cannot read the CDRs of journal {where}: {exc}") from exc
            for row in rows:
                yield dict(zip(CDR_COLUMNS, row, strict=True))
            if len(rows) < batch:
                return
            last = rows[-1][0]
    finally:
        db.close()
