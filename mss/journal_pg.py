"""The journal on PostgreSQL, shared by several mss nodes: its schema, statements and bookkeeping.

``[journal] backend = postgresql``: every node (``[cluster] node``, and each worker of a node as
``<node>.<i>``) writes its REQUESTs, RESPONSEs, heartbeats and CDRs into one database. The promise is
that of :mod:`mss.journal` (every REQUEST acknowledged ``ok`` gets exactly one RESPONSE); what the
shared database adds:

* callbacks belong to a node (``callbacks.node``); each node's row in ``nodes`` carries its last
  heartbeat (its *lease*). A node silent longer than ``[cluster] lease`` is taken over by one survivor
  in one transaction (its row locked ``FOR UPDATE SKIP LOCKED`` and marked ``taken_by``): its active
  callbacks become the survivor's, each keeping the dead node's last beat (``callbacks.beat``) so the
  talk time is known up to it (:func:`talk_time`, the sqlite journal's rule), and the survivor records
  their RESPONSEs as a restarted node would. A node that starts again with its name learns who settled
  what for it. Leases compare wall clocks: the nodes' clocks must agree (NTP) to well within a lease;
* a RESPONSE owed on a TCP connection another node holds is *claimed* (``responses.claimed_by``) by
  one statement, ``UPDATE ... WHERE seq IN (SELECT ... FOR UPDATE SKIP LOCKED)``: one node writes it.
  A node that keeps a RESPONSE again releases its claim and sends ``NOTIFY`` on :data:`CHANNEL` with
  the peer's name, so the nodes that have a connection from that AS fetch it;
* REQUEST keys come from a sequence that hands out blocks of :data:`SEQ_BLOCK` (``INCREMENT BY``),
  so a node numbers its REQUESTs without asking the server each time.

The I/O (asyncpg connections, the write-behind commits, the background claims and the lease watch)
is :class:`mss.aio.journal_pg.PgJournal`. This
module holds what needs no server: the schema, the statements, the order a commit runs its writes in
(:data:`PHASES`), the key blocks (:class:`KeyBlocks`) and the talk-time rule.
"""

from __future__ import annotations

from collections import deque
from urllib.parse import urlsplit, urlunsplit

from mss.errors import JournalError
from mss.journal import _QUALITY_COLUMNS, CDR_COLUMNS, SEQ_BLOCK

__all__ = [
    "ADVISORY_LOCK",
    "CHANNEL",
    "PHASES",
    "SCHEMA",
    "KeyBlocks",
    "redact",
    "talk_time",
]

#: The NOTIFY channel: its payload is the name of a peer whose RESPONSEs are free to take.
CHANNEL = "mss_owed"

#: pg_advisory_xact_lock key serializing schema creation (two nodes starting together): "mss" + 1.
ADVISORY_LOCK = 0x6D737301

_PG_TYPES = {"INTEGER": "BIGINT", "REAL": "DOUBLE PRECISION"}  # byte counters outgrow 32 bits

#: Statements creating what is missing (run under :data:`ADVISORY_LOCK`). Wall-clock values are
#: float epoch seconds, as in the sqlite journal.
SCHEMA: tuple[str, ...] = (
    f"CREATE SEQUENCE IF NOT EXISTS callbacks_seq INCREMENT BY {SEQ_BLOCK}",
    """CREATE TABLE IF NOT EXISTS nodes (
        name TEXT PRIMARY KEY,            -- [cluster] node (workers: <node>.<i>)
        beat DOUBLE PRECISION NOT NULL,   -- its last heartbeat: the lease
        taken_by TEXT,                    -- the survivor that settled its callbacks while it was down
        taken_at DOUBLE PRECISION,
        settled_while_down INTEGER NOT NULL DEFAULT 0
    )""",
    """CREATE TABLE IF NOT EXISTS callbacks (
        seq BIGINT PRIMARY KEY,           -- from callbacks_seq, a block per node
        id TEXT NOT NULL,
        peer TEXT NOT NULL,
        transport TEXT NOT NULL,
        reply_host TEXT,
        reply_port INTEGER,
        user1 TEXT NOT NULL,
        user2 TEXT NOT NULL,
        duration INTEGER NOT NULL,
        received_at DOUBLE PRECISION NOT NULL,
        bridged_at DOUBLE PRECISION,
        state TEXT NOT NULL,              -- active | done
        node TEXT NOT NULL,               -- the node that owns it (a survivor after a takeover)
        beat DOUBLE PRECISION             -- taken over: the dead owner's last heartbeat
    )""",
    "CREATE INDEX IF NOT EXISTS callbacks_active ON callbacks(node) WHERE state = 'active'",
    """CREATE TABLE IF NOT EXISTS responses (
        seq BIGINT PRIMARY KEY REFERENCES callbacks(seq),
        id TEXT NOT NULL,
        peer TEXT NOT NULL,
        transport TEXT NOT NULL,
        reply_host TEXT,
        reply_port INTEGER,
        line TEXT NOT NULL,
        created_at DOUBLE PRECISION NOT NULL,
        delivered_at DOUBLE PRECISION,
        claimed_by TEXT                   -- the node writing it now; NULL: free to take
    )""",
    "CREATE INDEX IF NOT EXISTS responses_owed ON responses(peer, created_at) WHERE delivered_at IS NULL",
    "CREATE INDEX IF NOT EXISTS responses_delivered ON responses(delivered_at)"
    " WHERE delivered_at IS NOT NULL",
    f"""CREATE TABLE IF NOT EXISTS cdrs (
        seq BIGINT PRIMARY KEY REFERENCES callbacks(seq),
        id TEXT NOT NULL,
        user1 TEXT NOT NULL,
        user2 TEXT NOT NULL,
        caller TEXT NOT NULL,
        leg1_call_id TEXT,
        leg2_call_id TEXT,
        leg1_code INTEGER,
        leg2_code INTEGER,
        codec TEXT,
        requested_at DOUBLE PRECISION NOT NULL,
        leg1_answered_at DOUBLE PRECISION,
        leg2_answered_at DOUBLE PRECISION,
        released_at DOUBLE PRECISION NOT NULL,
        released_by TEXT NOT NULL,
        result TEXT NOT NULL,
        reason TEXT NOT NULL,
        real_duration INTEGER NOT NULL,
        {", ".join(f"{name} {_PG_TYPES[kind]}" for name, kind in _QUALITY_COLUMNS)}
    )""",
    "CREATE INDEX IF NOT EXISTS cdrs_id ON cdrs(id)",
    """CREATE TABLE IF NOT EXISTS relay_ports (
        seq BIGINT PRIMARY KEY REFERENCES callbacks(seq),
        node TEXT NOT NULL,               -- whose relay the ports are on
        ports TEXT NOT NULL,              -- space-separated RTP ports (RTCP = RTP + 1)
        quarantined_until DOUBLE PRECISION
    )""",
    "CREATE INDEX IF NOT EXISTS relay_ports_node ON relay_ports(node)",
)

#: Tables whose bytes :meth:`PgJournal.size` reports.
TABLES: tuple[str, ...] = ("callbacks", "responses", "cdrs", "relay_ports", "nodes")

# --- writes: each a phase and a statement; a commit runs them phase by phase -------------------

INSERT_CALLBACK = (
    "INSERT INTO callbacks (seq, id, peer, transport, reply_host, reply_port, user1, user2, duration,"
    " received_at, state, node) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, 'active', $11)"
)
MARK_BRIDGED = "UPDATE callbacks SET bridged_at = $2 WHERE seq = $1"
RECORD_PORTS = (
    "INSERT INTO relay_ports (seq, node, ports) VALUES ($1, $2, $3)"
    " ON CONFLICT (seq) DO UPDATE SET node = excluded.node, ports = excluded.ports"
)
# A RESPONSE ends its callback in ONE statement (a round trip, atomic without a transaction of its
# own): the RESPONSE row (and the CDR row) take the callback's columns, the callback is done, its
# relay ports are forgotten (unless in quarantine). Data-modifying CTEs all see the callback as it
# was before the statement, so a callback ended already, or owned by another node (taken over while
# this one was cut off), gets nothing more. Arguments: seq, line, created_at, claimed_by, node, and
# with a CDR its values after the callback's own columns (CDR_COLUMNS order).
_CDR_VALUES = len(CDR_COLUMNS) - 5  # all but seq, id, user1, user2, requested_at (from the callback)


def _record_response(cdr: bool) -> str:
    parts = [
        "WITH cb AS (SELECT seq, id, peer, transport, reply_host, reply_port, user1, user2, received_at"
        " FROM callbacks WHERE seq = $1 AND state = 'active' AND node = $5),",
        " response AS (INSERT INTO responses (seq, id, peer, transport, reply_host, reply_port, line,"
        " created_at, claimed_by)"
        " SELECT seq, id, peer, transport, reply_host, reply_port, $2, $3, $4 FROM cb),",
    ]
    if cdr:
        values = [f"${i}" for i in range(6, 6 + _CDR_VALUES)]
        parts.append(
            f" cdr AS (INSERT INTO cdrs ({', '.join(CDR_COLUMNS)}) SELECT seq, id, user1, user2,"
            f" {', '.join(values[:6])}, received_at, {', '.join(values[6:])} FROM cb),"
        )
    parts += [
        " ended AS (UPDATE callbacks SET state = 'done' WHERE seq IN (SELECT seq FROM cb))",
        " DELETE FROM relay_ports WHERE seq IN (SELECT seq FROM cb) AND node = $5"
        " AND quarantined_until IS NULL",
    ]
    return "".join(parts)


RECORD_RESPONSE = _record_response(cdr=False)
RECORD_RESPONSE_CDR = _record_response(cdr=True)
RELEASE_RESPONSE = (
    "UPDATE responses SET claimed_by = NULL WHERE seq = $1 AND claimed_by = $2 AND delivered_at IS NULL"
)
# NOTIFY is sent when the transaction commits, so other nodes look only once the row is free.
NOTIFY_RESPONSE = (
    f"SELECT pg_notify('{CHANNEL}', peer) FROM responses WHERE seq = $1 AND delivered_at IS NULL"
    " AND claimed_by IS NULL"
)
MARK_DELIVERED = "UPDATE responses SET delivered_at = $2, claimed_by = NULL WHERE seq = $1"
QUARANTINE = "UPDATE relay_ports SET quarantined_until = $2 WHERE seq = ANY($1::bigint[])"
UNQUARANTINE = "UPDATE relay_ports SET quarantined_until = NULL WHERE node = $1 AND quarantined_until <= $2"
FORGET_NODE_PORTS = (
    "DELETE FROM relay_ports rp WHERE rp.node = $1 AND rp.quarantined_until IS NULL AND NOT EXISTS"
    " (SELECT 1 FROM callbacks c WHERE c.seq = rp.seq AND c.state = 'active' AND c.node = $1)"
)
# The lease renewed; returns who had taken this node over meanwhile (its lease expired while it was
# alive: a stall longer than the lease), and clears that, so that the node can be taken over again.
HEARTBEAT = (
    "UPDATE nodes n SET beat = $2, taken_by = NULL, taken_at = NULL, settled_while_down = 0"
    " FROM (SELECT name, taken_by FROM nodes WHERE name = $1 FOR UPDATE) AS before"
    " WHERE n.name = before.name RETURNING before.taken_by"
)

#: The order a commit runs its writes in, one pipelined ``executemany`` per run of one statement. A
#: callback's writes come in this order in life (REQUEST, bridge, ports, RESPONSE, delivery), so
#: running the group phase by phase changes nothing and saves a round trip per write. A commit of one
#: run needs no BEGIN and COMMIT: one statement, or one executemany, is atomic.
PHASES: tuple[str, ...] = (
    INSERT_CALLBACK, MARK_BRIDGED, RECORD_PORTS, RECORD_RESPONSE_CDR, RECORD_RESPONSE, RELEASE_RESPONSE,
    NOTIFY_RESPONSE, MARK_DELIVERED, QUARANTINE, UNQUARANTINE, FORGET_NODE_PORTS, HEARTBEAT,
)
PHASE = {sql: index for index, sql in enumerate(PHASES)}

# --- reads and claims ---------------------------------------------------------------------------

PENDING_COLUMNS = "seq, id, peer, transport, reply_host, reply_port, line"

FETCH_OWED = (
    f"UPDATE responses SET claimed_by = $1 WHERE seq IN (SELECT seq FROM responses WHERE peer = $2"
    " AND delivered_at IS NULL AND claimed_by IS NULL AND transport = 'tcp' ORDER BY created_at, seq"
    f" LIMIT $3 FOR UPDATE SKIP LOCKED) RETURNING {PENDING_COLUMNS}, created_at"
)
CLAIM = (
    f"UPDATE responses SET claimed_by = $1 WHERE seq = $2 AND delivered_at IS NULL AND claimed_by IS NULL"
    f" RETURNING {PENDING_COLUMNS}, created_at"
)


def talk_time(beat: float | None, bridged_at: float | None, duration: int) -> int:
    """Talk time of a callback cut at the last heartbeat ``beat``: from the bridge to that beat, at most
    ``duration``, rounded; 0 when it was never bridged (or no beat is known)."""
    if bridged_at is None or beat is None:
        return 0
    return round(max(0.0, min(beat, bridged_at + duration) - bridged_at))


def redact(dsn: str) -> str:
    """``dsn`` without its password, for log lines and errors."""
    try:
        parts = urlsplit(dsn)
    except ValueError:
        return "<unparsable dsn>"
    if parts.password is None:
        return dsn
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc}"))


class KeyBlocks:
    """REQUEST keys of the blocks reserved from the sequence: taken in order, refilled at half.

    ``callbacks_seq`` counts by ``size`` (:data:`SEQ_BLOCK` when the schema was made); a value ``v``
    reserves the keys ``v`` to ``v + size - 1``. Sans-IO: the owner fetches a block when
    :attr:`wants_more` says so and hands it to :meth:`add`.
    """

    def __init__(self, size: int = SEQ_BLOCK) -> None:
        if size < 1:
            raise JournalError(f"journal: REQUEST keys come in blocks of at least 1, not {size}")
        self.size = size
        """Keys per block: what the sequence counts by."""
        self._blocks: deque[range] = deque()
        self.refilling = False
        """A block is being fetched (set and cleared by the owner): ask for one at a time."""

    @property
    def left(self) -> int:
        """Keys left in the reserved blocks."""
        return sum(len(block) for block in self._blocks)

    @property
    def wants_more(self) -> bool:
        """Less than half a block left and none being fetched."""
        return not self.refilling and self.left < self.size // 2

    def add(self, start: int) -> None:
        """A block reserved: the sequence's value ``start``."""
        self._blocks.append(range(start, start + self.size))

    def take(self, count: int) -> list[int]:
        """``count`` keys, in order; :class:`JournalError` (and none taken) when the blocks ran dry."""
        if count > self.left:
            raise JournalError(
                f"journal: no REQUEST key left ({self.left} reserved, {count} needed): the journal's"
                " server did not answer the reservation of the next block"
            )
        keys: list[int] = []
        while len(keys) < count:
            block = self._blocks[0]
            n = min(count - len(keys), len(block))
            keys.extend(block[:n])
            if n == len(block):
                self._blocks.popleft()
            else:
                self._blocks[0] = block[n:]
        return keys
