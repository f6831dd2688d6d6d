"""The callback desk: takes IIF orders, keeps the journal, routes every RESPONSE home.

The desk is where mss's promise to the AS is kept. It does no socket I/O itself: the IIF adapters hand
it parsed messages with an :class:`Sender` (who sent them, how to answer), and it writes through
:class:`Outlet` objects and a UDP send function they provide. It decides:

* admission: ``ACK code=ok`` only when the id is not in progress, there is capacity (``max_calls``),
  mss is not draining, the engine can place calls (e.g. the external line is registered), and the
  REQUEST is recorded in the journal;
* admission on measured load: while the event loop runs late (:mod:`mss.load`), REQUESTs get
  ``code=fail`` at once instead of being taken and failing late;
* per-peer limits (``[peer.NAME] max_calls`` and ``max_rate``, a toll-fraud guard); every refusal is
  counted in :attr:`CallbackDesk.refusals` by peer and kind and logged rate-limited;
* RESPONSE routing: back on the TCP connection the REQUEST came on; if that one is gone, on the
  peer's newest connection that has shown it is the AS; if none, kept (in the journal) until one does.
  UDP RESPONSEs go to the REQUEST's source (the peer's configured port when one is set).

Kept RESPONSEs and probes: a health check or port scan from the AS's address opens a connection and
closes it without reading. A kept RESPONSE written into it would be lost, so delivery must be
confirmed by something the AS does. A connection is *proven* once the AS sent an IIF message on it:
what is written there counts as delivered at once (the normal path: the RESPONSE on the connection its
REQUEST came on). A new connection that has sent nothing gets kept RESPONSEs only after the adapter
reports it stayed open a hold time (:meth:`CallbackDesk.outlet_held`); they are then *on trial* until
the adapter confirms them (:meth:`CallbackDesk.confirm_trial`: the kernel's send queue drained and the
connection stayed open, or the AS closed it in order) or the connection goes (they are kept again).
Kept RESPONSEs are therefore delivered at least once: an AS that read one but whose connection broke
before the confirmation gets it again.

Group commit: given a ``schedule`` function, the desk makes the journal group its writes
(:mod:`mss.journal`) and holds back what depends on them: the ACKs of a batch that took a REQUEST
(and every later answer, so that they stay in order) and each RESPONSE. The adapter calls
:meth:`CallbackDesk.flush` once per event-loop iteration, or every few milliseconds while the journal
is busy (``schedule`` is :class:`mss.aio.commit_pacer.CommitPacer`), which commits the group and
then, in the order they were made, writes the ACKs (``code=ok`` for the
REQUESTs committed; ``code=fail`` for every REQUEST of the group when the commit failed) and starts
their callbacks, and routes the RESPONSEs (sent even when the commit failed: the AS must not wait
forever). Delivery marks join the next group: after a crash a RESPONSE may be sent again (at least
once, the rule for kept RESPONSEs). Without ``schedule`` every write is committed before the call
that made it returns.

Workers (``[callback] workers`` > 1, the journal naming this process's worker): the AS's
connections are spread over the worker processes by the kernel, so a RESPONSE kept by one worker may
be owed on a connection another one holds. Every write of a RESPONSE is then preceded by a claim of its
journal row (:meth:`mss.journal.Journal.claim_response`; a RESPONSE just recorded is born claimed):
a claim lost means another worker writes it (or did), and this one drops it. A RESPONSE kept again
(no connection here, a write that failed, a trial not confirmed) has its claim released. A worker with
a proven or held connection of a peer looks in the journal for that peer's unclaimed RESPONSEs when
the connection becomes proven or held and then every :data:`OWED_POLL_INTERVAL` seconds
(:meth:`CallbackDesk.poll_owed`, called by the service), :data:`OWED_POLL_LIMIT` at a time. The
single process makes no claim and no such look-up.

The call itself is the :class:`Engine`'s business: the desk starts it, may cancel it, and is told
its :class:`Outcome` exactly once through :meth:`CallbackDesk.finish`.
"""

from __future__ import annotations

import logging
import time
import traceback
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Protocol

from mss.config import PeerServer
from mss.errors import IIFError, JournalError
from mss.frozen import trusted
from mss.iif import (
    Ack,
    CallbackRequest,
    CallbackResponse,
    CallbackState,
    Cancel,
    ProgressEvent,
    Result,
    serialize,
)
from mss.journal import Cdr, InterruptedCallback, JournalStore, NewCallback, PendingResponse, Takeover
from mss.load import LoadGauge
from mss.ratelog import RateLimitedLog

__all__ = [
    "OWED_POLL_INTERVAL",
    "OWED_POLL_LIMIT",
    "Callback",
    "CallbackDesk",
    "Engine",
    "Outcome",
    "Outlet",
    "Sender",
]

log = logging.getLogger("mss.desk")

#: Seconds between two look-ups of RESPONSEs other workers kept, while this worker has a connection
#: from their peer: one indexed query per such peer, and at most this long for such a RESPONSE to go.
OWED_POLL_INTERVAL = 0.5

#: RESPONSEs taken into a worker's queue per peer and look-up: bounds the memory and the time of one.
OWED_POLL_LIMIT = 500


class Outlet(Protocol):
    """A way back to an AS: one TCP connection."""

    peer: str
    """[peer_servers] name of the AS at the other end."""

    def write(self, data: bytes) -> bool:
        """Write ``data``; False when the connection is already closed."""
        ...

    def trial_started(self) -> None:
        """RESPONSEs were written here on trial: call :meth:`CallbackDesk.confirm_trial` once the AS has
        taken them (the connection closing first keeps them, through :meth:`CallbackDesk.close_outlet`)."""
        ...


@dataclass(frozen=True, slots=True, kw_only=True)
class Sender:
    """Who sent a batch of IIF messages and how to answer them."""

    peer: str
    """[peer_servers] name."""
    transport: str
    """``tcp`` or ``udp``."""
    outlet: Outlet | None = None
    """TCP: the connection the messages came on."""
    reply_addr: tuple[str, int] | None = None
    """UDP: where answers go."""


@dataclass(slots=True, kw_only=True)
class Callback:
    """A callback the desk acknowledged and the engine is working on."""

    seq: int
    """Journal key (unique for the life of the journal)."""
    id: str
    """The AS's id."""
    user1: str
    """Called first."""
    user2: str
    """Called second."""
    duration: int
    """Seconds allowed from user1's answer."""
    origin: Sender
    """Where the RESPONSE goes."""
    received_at: float
    """Wall clock of the REQUEST."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Outcome:
    """How a callback ended, as the engine reports it."""

    real_duration: int
    """Bridged talk time in whole seconds; 0 when never bridged."""
    result: Result
    """The callback's outcome."""
    code: int = 0
    """The deciding SIP status, 0 when none."""
    cdr: Cdr | None = None
    """The call detail record, when there was a call."""


# What the desk builds for every callback from fields known valid (a REQUEST's, checked when it was
# parsed; the desk's own keys and clock; a line the journal made) skips the generated __init__ of
# these frozen dataclasses (an object.__setattr__ per field, a check of the id): the same values.
_new_callback = trusted(NewCallback)
_pending_response = trusted(PendingResponse)
_ack = trusted(Ack)


class Engine(Protocol):
    """What places and releases calls; the desk drives it."""

    def refusal(self, pending: int) -> str | None:
        """Why one more callback cannot be placed now (e.g. line not registered, no relay ports), or None.

        ``pending`` callbacks were already taken in the same batch and are not started yet: they will
        need their resources too (pipelined REQUESTs must not all pass a check meant for one).
        """
        ...

    def start(self, callback: Callback) -> None:
        """Begin the callback; report its end with :meth:`CallbackDesk.finish`."""
        ...

    def cancel(self, seq: int) -> None:
        """The AS cancelled callback ``seq``: release whatever is up."""
        ...

    def release_all(self) -> None:
        """Shutdown: release every callback now (each still ends through :meth:`CallbackDesk.finish`)."""
        ...


@dataclass(slots=True)
class _Peer:
    """A peer's open connections (newest last) and what the desk knows of each."""

    outlets: list[Outlet] = field(default_factory=list)
    proven: list[Outlet] = field(default_factory=list)
    """Connections the AS sent a message on: writing there is delivering."""
    held: list[Outlet] = field(default_factory=list)
    """Connections that stayed open the hold time without sending: kept RESPONSEs go there on trial."""


@dataclass(slots=True, kw_only=True)
class _Answers:
    """A batch's answers to one sender, written once the REQUESTs it took are committed."""

    origin: Sender
    answers: list[Ack | None]
    """In message order; None: a REQUEST taken (``code=ok`` once committed)."""
    taken: list[tuple[int, CallbackRequest, int]]
    """(index in ``answers``, the REQUEST, its journal key) for each REQUEST recorded."""
    received_at: float
    held: bool = False
    """Held for a group's commit: its REQUESTs count in the desk's held ids and per-peer counts."""


@dataclass(slots=True, kw_only=True)
class _Reply:
    """A RESPONSE recorded in the journal's group, routed once the group is committed."""

    pending: PendingResponse
    outlet: Outlet | None
    """The connection its REQUEST came on."""


@dataclass(frozen=True, slots=True, kw_only=True)
class _Later:
    """The rest of a batch, from a CANCEL of a REQUEST whose group is being committed: handled once
    that group's answers are written."""

    messages: list[CallbackRequest | Cancel | IIFError]
    origin: Sender


_Held = _Answers | _Reply | _Later


@dataclass(slots=True)
class _TokenBucket:
    """``rate`` tokens a second, at most ``burst`` saved up; a REQUEST taken spends one."""

    rate: float
    burst: float
    tokens: float
    last: float

    def take(self, now: float) -> bool:
        self.tokens = min(self.burst, self.tokens + max(0.0, now - self.last) * self.rate)
        self.last = now
        if self.tokens < 1.0:
            return False
        self.tokens -= 1.0
        return True


class CallbackDesk:
    """Admission, journal and RESPONSE routing for every callback."""

    def __init__(
        self,
        journal: JournalStore,
        *,
        max_calls: int,
        extended_response: bool,
        udp_send: Callable[[bytes, tuple[str, int]], bool | None],
        wall_clock: Callable[[], float],
        peers: Iterable[PeerServer] = (),
        clock: Callable[[], float] = time.monotonic,
        schedule: Callable[[Callable[[], None]], object] | None = None,
    ) -> None:
        self.journal = journal
        self.shared = journal.worker is not None
        """True under a supervisor: kept RESPONSEs are claimed in the journal before they are written."""
        self._claimed: set[int] = set()  # RESPONSEs this worker holds a claim on (shared only)
        self._schedule = schedule
        self._flush_asked = False  # a flush is scheduled
        self._unsettled = 0  # groups given to the journal's commit whose answers are not written yet
        if schedule is not None:
            # Group commit: the first write of a group asks for one flush (the adapter: CommitPacer).
            journal.on_queued = self._ask_flush
        journal.on_owed = self.owed_ready
        journal.on_takeover = self.settle_taken_over
        self.engine: Engine | None = None
        self.load: LoadGauge | None = None
        """Admission on measured load: while it says overloaded, REQUESTs get ``code=fail``."""
        self.max_calls = max_calls
        """Concurrent callbacks at most (the service may lower [callback] max_calls to what fits)."""
        self.extended_response = extended_response
        self._udp_send = udp_send
        self._wall = wall_clock
        self._clock = clock  # monotonic: per-peer rates
        self.accepting = True
        self.active: dict[int, Callback] = {}
        self._by_id: dict[str, int] = {}
        self._peer_limits: dict[str, PeerServer] = {}
        self._events: frozenset[str] = frozenset()  # peers taking EVENT lines
        self._buckets: dict[str, _TokenBucket] = {}
        self.set_peer_limits(peers)
        self.events_sent = 0
        """EVENT lines written (best effort: a closed connection's are not counted)."""
        # Callbacks in progress (and REQUESTs held for a commit, below) per peer. A peer's entry stays
        # at 0 when it has none: the peers are the configured ones, and a Counter deletes in Python.
        self._active_by_peer: Counter[str] = Counter()
        self._peers: dict[str, _Peer] = {}
        self._owed: dict[str, list[PendingResponse]] = {}  # TCP responses waiting for a connection
        self._trial: dict[Outlet, list[PendingResponse]] = {}  # written, delivery not yet confirmed
        self.refusals: Counter[tuple[str, str]] = Counter()
        """Messages refused, by (peer, kind): malformed, shutting_down, duplicate_id, max_calls,
        peer_max_calls, overload, peer_max_rate, engine, journal, cancel_unknown, cancel_not_owner."""
        self.accepted: Counter[tuple[str, str]] = Counter()
        """Messages answered ``code=ok``, by (peer, method): REQUEST, CANCEL (for the metrics)."""
        self.results: Counter[str] = Counter()
        """Callbacks ended, by result (for the metrics)."""
        self.on_bridged: Callable[[float], None] | None = None
        """Called with the seconds from a callback's REQUEST to its bridge (for the metrics)."""
        self._log = RateLimitedLog(log, clock=clock)
        self._held: list[_Held] = []  # waiting for the journal's group to be committed
        self._held_ids: set[str] = set()  # ids of the REQUESTs recorded and not yet answered
        self._held_by_peer: Counter[str] = Counter()
        self.on_idle: Callable[[], None] | None = None  # called when the last active callback ends

    def set_peer_limits(self, peers: Iterable[PeerServer]) -> None:
        """Take each peer's ``[peer.NAME]`` limits and ``events`` (at start, and again on a reload).

        They hold for the next REQUESTs; callbacks in progress are kept even beyond a lowered
        ``max_calls``. A peer whose ``max_rate`` is unchanged keeps its bucket as it is; a new or
        changed rate starts with a full bucket.
        """
        self._peer_limits = {p.name: p for p in peers}
        self._events = frozenset(p.name for p in self._peer_limits.values() if p.events)
        buckets = {}
        for p in self._peer_limits.values():
            if p.max_rate is None:
                continue
            bucket = self._buckets.get(p.name)
            if bucket is None or bucket.rate != p.max_rate:
                # A burst of one second's worth (at least one REQUEST), starting full.
                burst = max(1.0, p.max_rate)
                bucket = _TokenBucket(rate=p.max_rate, burst=burst, tokens=burst, last=self._clock())
            buckets[p.name] = bucket
        self._buckets = buckets

    # --- start: what a previous process left --------------------------------------------------

    def recover(self) -> None:
        """Answer callbacks a crash cut short, then queue every undelivered RESPONSE.

        Call once at start, before any connection is accepted. Callbacks this process took already (a
        REQUEST that slipped in first) are not mistaken for cut ones, and nothing is queued twice.
        Raises :class:`JournalError` when the journal cannot record their RESPONSEs (sqlite: at once).
        """
        self.flush()  # REQUESTs taken already are active, not cut
        if self.shared:
            released = self.journal.release_claims()
            if released:
                log.warning("released %d RESPONSE claim(s) of this worker's previous process", released)
        cuts = [cut for cut in self.journal.interrupted() if cut.seq not in self.active]
        replies = self._record_cuts(cuts, "was in progress when mss stopped")

        def route(error: JournalError | None) -> None:
            if error is not None:
                raise error
            queued = {p.seq for kept in [*self._owed.values(), *self._trial.values()] for p in kept}
            queued.update(reply.seq for reply in replies)
            for pending in self.journal.undelivered():  # the older ones first
                if pending.seq not in queued:
                    self._route(pending)
            for pending in replies:
                self._route(pending)

        self.journal.commit(route)  # committed before any of them is sent

    def settle_taken_over(self, takeover: Takeover) -> None:
        """The journal took over a dead node (its lease expired): answer its callbacks in progress as a
        restart answers its own (:meth:`recover`), and send the UDP RESPONSEs it had not sent, from
        this node."""
        why = "was in progress on a node that stopped (its lease expired)"
        replies = self._record_cuts(takeover.cut, why)
        for pending in takeover.owed:  # recorded already, claimed for this node by the takeover
            if self.shared:
                self._claimed.add(pending.seq)

        def route(error: JournalError | None) -> None:
            for pending in takeover.owed:
                self._route(pending)
            if error is not None:
                # They stay this node's callbacks in progress: the next start (or survivor) settles them.
                self._log.error("takeover", "%d taken-over RESPONSE(s) not recorded: %s", len(replies), error)
                return
            for pending in replies:
                self._route(pending)

        self.journal.commit(route)

    def _record_cuts(self, cuts: list[InterruptedCallback], why: str) -> list[PendingResponse]:
        """Record each cut callback's RESPONSE (``result=shutdown``, the talk time known up to its
        process's last heartbeat); returns those to route once committed. With a shared journal they
        are born claimed by this process (kept ones are released for the others by :meth:`_keep`)."""
        replies = []
        for cut in cuts:
            response = self._response(cut.id, cut.real_duration, "shutdown", 0)
            routed = cut.peer is not None
            line = self.journal.record_response(cut.seq, response, self._wall(), claim=self.shared and routed)
            log.warning("callback %s %s; RESPONSE real_duration=%d owed", cut.id, why, cut.real_duration)
            if cut.peer is None:
                continue  # the journal did not say where it goes: found by owed_to like any kept one
            if self.shared:
                self._claimed.add(cut.seq)
            replies.append(PendingResponse(
                seq=cut.seq, id=cut.id, peer=cut.peer, transport=cut.transport, reply_addr=cut.reply_addr,
                line=line,
            ))
        return replies

    def owed_ready(self, peer_name: str) -> None:
        """The journal claimed RESPONSEs owed to ``peer_name`` in the background: write them if it is
        connected here (else they stay with the journal, which frees them for the other nodes)."""
        peer = self._peers.get(peer_name)
        if peer is None or not (peer.proven or peer.held):
            return
        self._look_up_owed(peer_name)
        self._flush(peer_name)

    # --- connections ---------------------------------------------------------------------------

    def open_outlet(self, outlet: Outlet) -> None:
        """A peer connected over TCP. Nothing kept is written yet: the connection has to show it is the
        AS (:meth:`handle` of a message from it) or stay open the hold time (:meth:`outlet_held`)."""
        self._peers.setdefault(outlet.peer, _Peer()).outlets.append(outlet)

    def outlet_held(self, outlet: Outlet) -> None:
        """``outlet`` stayed open the hold time without sending: write it what its peer is owed, on trial."""
        peer = self._peers.get(outlet.peer)
        if peer is None or outlet not in peer.outlets or outlet in peer.proven or outlet in peer.held:
            return
        peer.held.append(outlet)
        if self.shared:
            self._look_up_owed(outlet.peer)
        self._flush(outlet.peer)

    def on_trial(self, outlet: Outlet) -> int:
        """RESPONSEs written to ``outlet`` whose delivery is not confirmed yet."""
        return len(self._trial.get(outlet, ()))

    def confirm_trial(self, outlet: Outlet) -> None:
        """The AS has taken what was written to ``outlet`` on trial: record it delivered."""
        confirmed = self._trial.pop(outlet, [])
        for pending in confirmed:
            self._delivered(pending)
        if confirmed:
            log.info("delivered %d kept RESPONSE(s) to peer %s", len(confirmed), outlet.peer)

    def close_outlet(self, outlet: Outlet) -> None:
        """A peer's TCP connection is gone (or the AS ended it): what it had on trial is kept again."""
        peer = self._peers.get(outlet.peer)
        if peer is not None:
            for members in (peer.outlets, peer.proven, peer.held):
                if outlet in members:
                    members.remove(outlet)
        unconfirmed = self._trial.pop(outlet, [])
        if unconfirmed:
            self._log.info(
                (outlet.peer, "unconfirmed"),
                "%d RESPONSE(s) written to peer %s not confirmed before its connection went; kept",
                len(unconfirmed), outlet.peer,
            )
            owed = self._owed.setdefault(outlet.peer, [])
            owed[:0] = unconfirmed  # oldest first, as they were
            for pending in unconfirmed:
                self._release(pending)
            self._flush(outlet.peer)

    def _proven(self, outlet: Outlet) -> None:
        """The AS sent a message on ``outlet``: what is on trial there is delivered, and it may take
        what its peer is owed."""
        peer = self._peers.get(outlet.peer)
        if peer is None or outlet not in peer.outlets or outlet in peer.proven:
            return
        peer.proven.append(outlet)
        if outlet in peer.held:
            peer.held.remove(outlet)
        self.confirm_trial(outlet)
        if self.shared:
            self._look_up_owed(outlet.peer)
        self._flush(outlet.peer)

    def _flush(self, peer_name: str) -> None:
        """Write what ``peer_name`` is owed: delivered on its newest proven connection, else on trial on
        its newest held one, else kept."""
        owed = self._owed.get(peer_name)
        peer = self._peers.get(peer_name)
        if not owed or peer is None:
            return
        del self._owed[peer_name]
        if peer.proven:
            outlet = peer.proven[-1]
            for pending in owed:
                self._deliver_tcp(pending, outlet)
            if not self._owed.get(peer_name):
                log.info("delivered %d kept RESPONSE(s) to peer %s", len(owed), peer_name)
        elif peer.held:
            for pending in owed:
                self._try_tcp(pending, peer.held[-1])
        else:
            self._owed[peer_name] = owed

    # --- orders --------------------------------------------------------------------------------

    def handle(self, messages: list[CallbackRequest | Cancel | IIFError], origin: Sender) -> None:
        """Answer a batch of messages from one origin, in order; start the callbacks taken.

        The REQUESTs of a batch are recorded in one journal write; their ACKs are written once it is
        committed (with group commit: by :meth:`flush`). A CANCEL of a REQUEST not committed yet commits
        (and starts) it first, and a CANCEL taken writes its ACK before the engine is told (its RESPONSE
        may follow at once). ACKs go out in message order.
        """
        if origin.outlet is not None and not all(isinstance(m, IIFError) for m in messages):
            # The AS spoke on this connection (before the batch: a RESPONSE may follow its ACK at once).
            self._proven(origin.outlet)
        answers: list[Ack | None] = []  # None: a REQUEST whose ACK waits for the journal
        taken: list[tuple[int, CallbackRequest]] = []
        taken_ids: set[str] = set()
        for index, message in enumerate(messages):
            if isinstance(message, IIFError):
                self._refused(origin.peer, "malformed", "refused a message: %s", message.reason)
                answers.append(Ack(id=message.iif_id, ok=False))
            elif isinstance(message, Cancel):
                if message.id in taken_ids or message.id in self._held_ids:
                    # Its REQUEST is not committed yet: record, commit and start it first.
                    self._commit(answers, taken, origin)
                    self.flush()
                    answers, taken, taken_ids = [], [], set()
                    if message.id in self._held_ids:
                        # The journal commits in the background: the rest of the batch waits for it.
                        self._hold(_Later(messages=messages[index:], origin=origin))
                        return
                answer, seq = self._cancel(message, origin)
                answers.append(answer)
                if seq is not None:
                    # The RESPONSE may follow at once: the ACKs so far, this one included, go first.
                    self._commit(answers, taken, origin)
                    self.flush()
                    answers, taken, taken_ids = [], [], set()
                    assert self.engine is not None
                    self.engine.cancel(seq)
            else:
                refusal = self._refusal(message, origin.peer, len(taken), taken_ids)
                if refusal is None:
                    taken.append((len(answers), message))
                    taken_ids.add(message.id)
                    answers.append(None)
                else:
                    kind, reason = refusal
                    self._refused(origin.peer, kind, "REQUEST id=%s refused: %s", message.id, reason)
                    answers.append(Ack(id=message.id, ok=False))
        self._commit(answers, taken, origin)

    def flush(self) -> None:
        """Commit the journal's group, then write what waited for it, in the order it was made.

        A batch's ACKs: ``code=ok`` for its REQUESTs when the group was committed (and the callbacks are
        started), ``code=fail`` for all of them when it was not. RESPONSEs are routed either way (one
        not recorded is logged). The adapter calls this once per event-loop iteration (a few ms later
        while the journal is busy) when the journal asks (``schedule``); with nothing held it costs
        next to nothing. sqlite commits at once; a journal on a server commits in the background, and
        what is held meanwhile waits for the next flush (groups are committed, and their answers
        written, in order).
        """
        self._flush_asked = False
        held, self._held = self._held, []
        self._unsettled += 1
        self.journal.commit(lambda error: self._settle_held(held, error))

    def _settle_held(self, held: list[_Held], error: JournalError | None) -> None:
        """A group's commit ended (``error``: lost): write what waited for it, in order."""
        self._unsettled -= 1
        if error is not None:
            self._log.error("group", "%s (nothing of that group was kept)", error)
        for item in held:
            try:
                if isinstance(item, _Answers):
                    self._settle_answers(item, error)
                elif isinstance(item, _Reply):
                    self._settle_reply(item, error)
                else:
                    self.handle(item.messages, item.origin)
            except Exception:
                # A bug (the engine's, say) must not cost the rest of the group its ACKs and RESPONSEs.
                kind = {_Answers: "ACKs", _Reply: "RESPONSE"}.get(type(item), "messages")
                self._log.error(("settle", kind), "a journal group's %s failed: %s", kind,
                                traceback.format_exc())

    @property
    def settling(self) -> bool:
        """Answers wait for a journal commit (held, or given to a commit not ended yet)."""
        return bool(self._held or self._unsettled)

    def _ask_flush(self) -> None:
        """Have :meth:`flush` run once soon (group commit only)."""
        if self._schedule is not None and not self._flush_asked:
            self._flush_asked = True
            self._schedule(self.flush)

    def _hold(self, item: _Held) -> bool:
        """Hold ``item`` for :meth:`flush` when the journal has a group open or being committed (or
        something is held already: answers keep their order); False: settle it now."""
        if self._held or self._unsettled or self.journal.pending:
            self._held.append(item)
            self._ask_flush()
            return True
        return False

    def _refused(self, peer: str, kind: str, message: str, *args: object) -> None:
        """Count a refusal and log it, at most once per interval for each peer and kind (with the count
        of those left out): a flood of bad lines must not become a flood of log lines."""
        self.refusals[peer, kind] += 1
        self._log.warning((peer, kind), "%s: " + message, peer, *args)

    def _commit(
        self, answers: list[Ack | None], taken: list[tuple[int, CallbackRequest]], origin: Sender
    ) -> None:
        """Record the REQUESTs taken; then (now, or at :meth:`flush` with group commit) write ``answers``
        in order and start the callbacks."""
        batch = _Answers(origin=origin, answers=answers, taken=[], received_at=0.0)
        if taken:
            batch.received_at = self._wall()
            records = [
                _new_callback(
                    id=req.id, peer=origin.peer, transport=origin.transport, reply_addr=origin.reply_addr,
                    user1=req.user1, user2=req.user2, duration=req.duration, received_at=batch.received_at,
                )
                for _, req in taken
            ]
            try:
                seqs = self.journal.record_requests(records)
            except JournalError as exc:
                self._refuse_unrecorded(origin.peer, answers, taken, exc)
            else:
                batch.taken = [(index, req, seq) for (index, req), seq in zip(taken, seqs, strict=True)]
        if not answers:
            return
        if self._hold(batch):
            batch.held = True
            self._held_ids.update(req.id for _, req, _ in batch.taken)
            self._held_by_peer[origin.peer] += len(batch.taken)
        else:
            self._settle_answers(batch, None)

    def _refuse_unrecorded(
        self, peer: str, answers: list[Ack | None], taken: list[tuple[int, CallbackRequest]],
        exc: JournalError,
    ) -> None:
        """The journal lost the REQUESTs ``taken``: each gets ``code=fail``."""
        self.refusals[peer, "journal"] += len(taken)
        self._log.error((peer, "journal"), "%s: %d REQUEST(s) refused: %s", peer, len(taken), exc)
        for index, req in taken:
            answers[index] = Ack(id=req.id, ok=False)

    def _settle_answers(self, batch: _Answers, error: JournalError | None) -> None:
        """Write a batch's answers in order (its REQUESTs taken, unless ``error`` lost them), then start
        the callbacks."""
        origin, answers = batch.origin, batch.answers
        callbacks: list[Callback] = []
        if batch.held and batch.taken:
            self._held_ids.difference_update(req.id for _, req, _ in batch.taken)
            self._held_by_peer[origin.peer] -= len(batch.taken)
        if error is not None and batch.taken:
            self._refuse_unrecorded(origin.peer, answers, [(i, req) for i, req, _ in batch.taken], error)
        else:
            for index, req, seq in batch.taken:
                answers[index] = _ack(id=req.id, ok=True)
                callback = Callback(
                    seq=seq, id=req.id, user1=req.user1, user2=req.user2, duration=req.duration,
                    origin=origin, received_at=batch.received_at,
                )
                self.active[seq] = callback
                self._by_id[req.id] = seq
                self._active_by_peer[origin.peer] += 1
                callbacks.append(callback)
            self.accepted[origin.peer, "REQUEST"] += len(callbacks)
        self._answer(origin, b"".join(serialize(a) for a in answers if a is not None))
        for callback in callbacks:
            log.info(
                "%s: callback %s taken: user1=%s user2=%s duration=%d",
                origin.peer, callback.id, callback.user1, callback.user2, callback.duration,
            )
            assert self.engine is not None
            try:
                self.engine.start(callback)
            except Exception:
                # A bug in the engine: the callbacks after this one still start, and this one ends with
                # its RESPONSE instead of hanging.
                self._log.error(("start", callback.origin.peer),
                                "callback %s: the engine could not start it: %s", callback.id,
                                traceback.format_exc())
                if callback.seq in self.active:
                    self.finish(callback.seq, Outcome(real_duration=0, result="user1_failed"))

    def _refusal(
        self, req: CallbackRequest, peer: str, pending: int, pending_ids: set[str]
    ) -> tuple[str, str] | None:
        """Why ``req`` is refused, as (kind, reason), or None. ``pending`` REQUESTs (``pending_ids``) were
        taken earlier in the same batch: they count against every limit as if already active, and so do
        the REQUESTs of earlier batches waiting for the journal's group to be committed."""
        if not self.accepting:
            return "shutting_down", "mss is shutting down"
        if req.id in self._by_id or req.id in pending_ids or req.id in self._held_ids:
            return "duplicate_id", "id already in progress"
        held = len(self._held_ids)
        if len(self.active) + held + pending >= self.max_calls:
            return "max_calls", f"no capacity left (max_calls = {self.max_calls})"
        limits = self._peer_limits.get(peer)
        peer_calls = limits.max_calls if limits is not None else None
        if (peer_calls is not None  # (the counts are looked up only for a peer with a limit)
                and self._active_by_peer[peer] + self._held_by_peer[peer] + pending >= peer_calls):
            return "peer_max_calls", f"peer {peer} holds its max_calls = {peer_calls}"
        if self.load is not None:
            overloaded = self.load.refusal()
            if overloaded is not None:
                return "overload", overloaded
        if self.engine is None:
            return "engine", "no call engine"
        reason = self.engine.refusal(held + pending)
        if reason is not None:
            return "engine", reason
        bucket = self._buckets.get(peer)
        if bucket is not None and not bucket.take(self._clock()):
            # Last: a token is spent only by a REQUEST that would otherwise be taken.
            return "peer_max_rate", f"peer {peer} is over its max_rate = {bucket.rate:g}/s"
        return None

    def _cancel(self, message: Cancel, origin: Sender) -> tuple[Ack, int | None]:
        """The answer to a CANCEL, and the callback to cancel once it is written (None: refused)."""
        seq = self._by_id.get(message.id)
        if seq is None:
            self._refused(origin.peer, "cancel_unknown", "CANCEL id=%s: no such callback in progress",
                          message.id)
            return Ack(id=message.id, ok=False), None
        callback = self.active[seq]
        if callback.origin.peer != origin.peer:
            self._refused(origin.peer, "cancel_not_owner", "CANCEL id=%s refused: ordered by peer %s",
                          message.id, callback.origin.peer)
            return Ack(id=message.id, ok=False), None
        log.info("%s: CANCEL id=%s", origin.peer, message.id)
        self.accepted[origin.peer, "CANCEL"] += 1
        return Ack(id=message.id, ok=True), seq

    def _answer(self, origin: Sender, data: bytes) -> None:
        if not data:
            return
        if origin.outlet is not None:
            origin.outlet.write(data)
        elif origin.reply_addr is not None:
            self._udp_send(data, origin.reply_addr)

    # --- the end of a callback -----------------------------------------------------------------

    def bridged(self, seq: int) -> None:
        """The engine bridged callback ``seq``'s legs (the talk time starts now)."""
        now = self._wall()
        try:
            self.journal.mark_bridged(seq, now)
        except JournalError as exc:
            log.error("callback #%d: %s", seq, exc)
        callback = self.active.get(seq)
        if callback is not None and self.on_bridged is not None:
            self.on_bridged(max(0.0, now - callback.received_at))

    def progress(self, seq: int, state: CallbackState) -> None:
        """Callback ``seq`` came to ``state``: an EVENT line to its AS when the peer has ``events = yes``.

        Best effort and not journaled: on the connection the REQUEST came on, else on the peer's newest
        connection that has shown it is the AS, else nowhere. Never before the ACK (the engine starts
        a callback once its ACK is written) and never after the RESPONSE (a finished callback is no
        longer :attr:`active`).
        """
        callback = self.active.get(seq)
        if callback is None or callback.origin.transport != "tcp" or callback.origin.peer not in self._events:
            return
        peer = self._peers.get(callback.origin.peer)
        if peer is None:
            return
        outlet = callback.origin.outlet
        if outlet not in peer.outlets:
            outlet = peer.proven[-1] if peer.proven else None
        if outlet is not None and outlet.write(serialize(ProgressEvent(id=callback.id, state=state))):
            self.events_sent += 1

    def wants_events(self, callback: Callback) -> bool:
        """True when ``callback``'s AS takes EVENT lines (``events = yes``, over TCP)."""
        return callback.origin.transport == "tcp" and callback.origin.peer in self._events

    def finish(self, seq: int, outcome: Outcome) -> None:
        """Callback ``seq`` ended: record its RESPONSE, then send it (exactly once)."""
        callback = self.active.pop(seq, None)
        if callback is None:
            log.error("callback #%d finished twice or never started; ignored", seq)
            return
        del self._by_id[callback.id]
        self.results[outcome.result] += 1
        self._active_by_peer[callback.origin.peer] -= 1
        response = self._response(callback.id, outcome.real_duration, outcome.result, outcome.code)
        try:
            line = self.journal.record_response(seq, response, self._wall(), outcome.cdr, claim=self.shared)
            if self.shared:
                self._claimed.add(seq)
        except JournalError as exc:
            # The journal is broken: still answer, the AS must not wait forever.
            self._log.error("unrecorded", "callback %s: RESPONSE not recorded: %s", callback.id, exc)
            line = serialize(response).decode("ascii").rstrip("\r\n")
        # The one INFO line of a callback's end (the steps between are DEBUG: at hundreds of
        # callbacks a second, a line per step costs more CPU than the SIP parsing of the call).
        if outcome.cdr is not None and outcome.cdr.reason:
            log.info("callback %s ended: %s (%s; released by %s: %s)", callback.id, line, outcome.result,
                     outcome.cdr.released_by, outcome.cdr.reason)
        else:
            log.info("callback %s ended: %s (%s)", callback.id, line, outcome.result)
        pending = _pending_response(
            seq=seq, id=callback.id, peer=callback.origin.peer, transport=callback.origin.transport,
            reply_addr=callback.origin.reply_addr, line=line,
        )
        reply = _Reply(pending=pending, outlet=callback.origin.outlet)
        if not self._hold(reply):
            self._settle_reply(reply, None)

    def _settle_reply(self, reply: _Reply, error: JournalError | None) -> None:
        """Route a RESPONSE (recorded, unless ``error`` lost it: sent all the same)."""
        if error is not None:
            self._log.error("unrecorded", "callback %s: RESPONSE not recorded: %s", reply.pending.id, error)
        self._route(reply.pending, reply.outlet)
        if not self.active and self.on_idle is not None:
            self.on_idle()

    def _route(self, pending: PendingResponse, outlet: Outlet | None = None) -> None:
        """Send a RESPONSE: UDP to its address; TCP on ``outlet`` if still open, else the peer's newest
        proven connection, else on trial on its newest held one, else keep it for the peer."""
        if pending.transport == "udp" and pending.reply_addr is not None:
            self._deliver_udp(pending)
            return
        peer = self._peers.get(pending.peer)
        if outlet is not None and peer is not None and outlet in peer.proven:
            self._deliver_tcp(pending, outlet)
        elif peer is not None and peer.proven:
            self._deliver_tcp(pending, peer.proven[-1])
        elif peer is not None and peer.held:
            self._try_tcp(pending, peer.held[-1])
        else:
            log.info("callback %s: peer %s not connected; RESPONSE kept", pending.id, pending.peer)
            self._keep(pending)

    def _response(self, cb_id: str, real_duration: int, result: str, code: int) -> CallbackResponse:
        if self.extended_response:
            return CallbackResponse(id=cb_id, real_duration=real_duration, result=result, code=code)
        return CallbackResponse(id=cb_id, real_duration=real_duration)

    def _deliver_tcp(self, pending: PendingResponse, outlet: Outlet) -> None:
        """Write on a proven connection: delivered once written."""
        if not self._claim(pending):
            return
        if outlet.write(pending.line.encode("ascii") + b"\r\n"):
            self._delivered(pending)
        else:
            self._keep(pending)

    def _try_tcp(self, pending: PendingResponse, outlet: Outlet) -> None:
        """Write on a held connection: on trial until :meth:`confirm_trial` (or kept again)."""
        if not self._claim(pending):
            return
        if outlet.write(pending.line.encode("ascii") + b"\r\n"):
            self._trial.setdefault(outlet, []).append(pending)
            outlet.trial_started()
        else:
            self._keep(pending)

    def _keep(self, pending: PendingResponse) -> None:
        """Keep ``pending`` for its peer's next connection (workers: free for another worker's too)."""
        self._owed.setdefault(pending.peer, []).append(pending)
        self._release(pending)

    def _claim(self, pending: PendingResponse) -> bool:
        """Workers: hold the journal's claim on ``pending`` before writing it; False: another worker has
        it (or delivered it), so it is dropped here. Always True for the single process."""
        if not self.shared or pending.seq in self._claimed:
            return True
        try:
            won = self.journal.claim_response(pending.seq)
        except JournalError as exc:
            # Not written now: kept (unclaimed) for the next try.
            self._log.error("claim", "callback %s: RESPONSE not claimed, kept: %s", pending.id, exc)
            self._owed.setdefault(pending.peer, []).append(pending)
            return False
        if not won:
            log.debug("callback %s: RESPONSE taken by another worker", pending.id)
            return False
        self._claimed.add(pending.seq)
        return True

    def _release(self, pending: PendingResponse) -> None:
        """Workers: give up the claim on a RESPONSE kept again."""
        if pending.seq not in self._claimed:
            return
        self._claimed.discard(pending.seq)
        try:
            self.journal.release_response(pending.seq)
        except JournalError as exc:
            # Held until this worker starts again (or writes it itself on its next connection).
            self._log.error("release", "callback %s: RESPONSE claim not released: %s", pending.id, exc)

    def poll_owed(self) -> None:
        """Workers: take what other workers kept for every peer connected here (the service calls this
        every :data:`OWED_POLL_INTERVAL` seconds)."""
        for name, peer in list(self._peers.items()):
            if peer.proven or peer.held:
                self._look_up_owed(name)
                self._flush(name)

    def _look_up_owed(self, peer_name: str) -> None:
        """Queue ``peer_name``'s unclaimed RESPONSEs from the journal that are not queued here yet."""
        try:
            found = self.journal.owed_to(peer_name, OWED_POLL_LIMIT)
        except JournalError as exc:
            self._log.error(("owed", peer_name), "%s", exc)
            return
        if not found:
            return
        queued = self._claimed | {p.seq for p in self._owed.get(peer_name, ())}
        fresh = [p for p in found if p.seq not in queued]
        if fresh:
            self._owed.setdefault(peer_name, []).extend(fresh)

    def _deliver_udp(self, pending: PendingResponse) -> None:
        assert pending.reply_addr is not None
        if not self._claim(pending):
            return
        if self._udp_send(pending.line.encode("ascii") + b"\r\n", pending.reply_addr) is False:
            # Not sent (the UDP socket is closed): left undelivered in the journal for the next start.
            log.warning("callback %s: UDP RESPONSE not sent; kept for the next start", pending.id)
            return
        self._delivered(pending)

    def _delivered(self, pending: PendingResponse) -> None:
        self._claimed.discard(pending.seq)
        try:
            self.journal.mark_delivered(pending.seq, self._wall())
        except JournalError as exc:
            log.error("callback %s: delivery not recorded (it may be sent again): %s", pending.id, exc)

    @property
    def owed(self) -> int:
        """RESPONSEs not yet confirmed delivered: kept for peers, written on trial, or waiting for the
        journal's group to be committed."""
        held = sum(isinstance(item, _Reply) for item in self._held)
        return held + sum(len(v) for v in self._owed.values()) + sum(len(v) for v in self._trial.values())
