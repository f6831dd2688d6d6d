"""The callback desk: takes IIF orders, keeps the journal, routes every RESPONSE home.

The desk is where mss's promise to the AS is kept. It does no socket I/O itself: the IIF adapters hand
it parsed messages with an :class:`Origin` (who sent them, how to answer), and it writes through
:class:`Outlet` objects and a UDP send function they provide. It decides:

* admission: ``ACK code=ok`` only when the id is not in progress, there is capacity (``max_calls``),
  mss is not draining, the engine can place calls (e.g. the external line is registered), and the
  REQUEST is recorded in the journal;
* RESPONSE routing: back on the TCP connection the REQUEST came on; if that one is gone, on the
  peer's newest open connection; if none, kept (in the journal) until the peer's next connection.
  UDP RESPONSEs go to the REQUEST's source (the peer's configured port when one is set).

The call itself is the :class:`Engine`'s business: the desk starts it, may cancel it, and is told
its :class:`Outcome` exactly once through :meth:`CallbackDesk.finish`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from mss.errors import IIFError, JournalError
from mss.iif import Ack, Cancel, Request, Response, serialize
from mss.journal import Cdr, Journal, NewCallback, PendingResponse

__all__ = [
    "Callback",
    "CallbackDesk",
    "Engine",
    "Origin",
    "Outcome",
    "Outlet",
]

log = logging.getLogger("mss.desk")


class Outlet(Protocol):
    """A way back to an AS: one TCP connection."""

    peer: str
    """[peer_servers] name of the AS at the other end."""

    def write(self, data: bytes) -> bool:
        """Write ``data``; False when the connection is already closed."""
        ...


@dataclass(frozen=True, slots=True, kw_only=True)
class Origin:
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
    origin: Origin
    """Where the RESPONSE goes."""
    received_at: float
    """Wall clock of the REQUEST."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Outcome:
    """How a callback ended, as the engine reports it."""

    real_duration: int
    """Bridged talk time in whole seconds; 0 when never bridged."""
    result: str
    """One of :data:`mss.iif.RESULTS`."""
    code: int = 0
    """The deciding SIP status, 0 when none."""
    cdr: Cdr | None = None
    """The call detail record, when there was a call."""


class Engine(Protocol):
    """What places and releases calls; the desk drives it."""

    def refusal(self) -> str | None:
        """Why a new callback cannot be placed now (e.g. line not registered), or None."""
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
    """A peer's open connections (newest last)."""

    outlets: list[Outlet] = field(default_factory=list)


class CallbackDesk:
    """Admission, journal and RESPONSE routing for every callback."""

    def __init__(
        self,
        journal: Journal,
        *,
        max_calls: int,
        extended_response: bool,
        udp_send: Callable[[bytes, tuple[str, int]], bool | None],
        wall_clock: Callable[[], float],
    ) -> None:
        self.journal = journal
        self.engine: Engine | None = None
        self.max_calls = max_calls
        self.extended_response = extended_response
        self._udp_send = udp_send
        self._wall = wall_clock
        self.accepting = True
        self.active: dict[int, Callback] = {}
        self._by_id: dict[str, int] = {}
        self._peers: dict[str, _Peer] = {}
        self._owed: dict[str, list[PendingResponse]] = {}  # TCP responses waiting for a connection
        self.on_idle: Callable[[], None] | None = None  # called when the last active callback ends

    # --- start: what a previous process left --------------------------------------------------

    def recover(self) -> None:
        """Answer callbacks a crash cut short, then queue every undelivered RESPONSE.

        Call once at start, before any connection is accepted. Callbacks this process took already (a
        REQUEST that slipped in first) are not mistaken for cut ones, and nothing is queued twice.
        """
        for cut in self.journal.interrupted():
            if cut.seq in self.active:
                continue
            response = self._response(cut.id, cut.real_duration, "shutdown", 0)
            self.journal.record_response(cut.seq, response, self._wall())
            log.warning(
                "callback %s was in progress when mss stopped; RESPONSE real_duration=%d owed",
                cut.id,
                cut.real_duration,
            )
        queued = {pending.seq for kept in self._owed.values() for pending in kept}
        for pending in self.journal.undelivered():
            if pending.seq not in queued:
                self._route(pending)

    # --- connections ---------------------------------------------------------------------------

    def open_outlet(self, outlet: Outlet) -> None:
        """A peer connected over TCP: it may now receive what it is owed."""
        self._peers.setdefault(outlet.peer, _Peer()).outlets.append(outlet)
        owed = self._owed.pop(outlet.peer, [])
        for pending in owed:
            self._deliver_tcp(pending, outlet)
        if owed:
            log.info("delivered %d kept RESPONSE(s) to peer %s", len(owed), outlet.peer)

    def close_outlet(self, outlet: Outlet) -> None:
        """A peer's TCP connection is gone."""
        peer = self._peers.get(outlet.peer)
        if peer is not None and outlet in peer.outlets:
            peer.outlets.remove(outlet)

    # --- orders --------------------------------------------------------------------------------

    def handle(self, messages: list[Request | Cancel | IIFError], origin: Origin) -> None:
        """Answer a batch of messages from one origin, in order; start the callbacks taken.

        The REQUESTs of a batch are recorded in one journal transaction. A CANCEL of a REQUEST earlier in
        the batch commits that REQUEST first, and a CANCEL taken writes its ACK before the engine is told
        (its RESPONSE may follow at once). ACKs go out in message order.
        """
        answers: list[Ack | None] = []  # None: a REQUEST whose ACK waits for the journal
        taken: list[tuple[int, Request]] = []
        for message in messages:
            if isinstance(message, IIFError):
                log.warning("%s: refused a message: %s", origin.peer, message.reason)
                answers.append(Ack(id=message.iif_id, ok=False))
            elif isinstance(message, Cancel):
                if any(req.id == message.id for _, req in taken):
                    # Its REQUEST came earlier in this batch: record and start it first.
                    self._commit(answers, taken, origin)
                    answers, taken = [], []
                answer, seq = self._cancel(message, origin)
                answers.append(answer)
                if seq is not None:
                    # The RESPONSE may follow at once: the ACKs so far, this one included, go first.
                    self._commit(answers, taken, origin)
                    answers, taken = [], []
                    assert self.engine is not None
                    self.engine.cancel(seq)
            else:
                reason = self._refusal(message, len(taken), {r.id for _, r in taken})
                if reason is None:
                    taken.append((len(answers), message))
                    answers.append(None)
                else:
                    log.warning("%s: REQUEST id=%s refused: %s", origin.peer, message.id, reason)
                    answers.append(Ack(id=message.id, ok=False))
        self._commit(answers, taken, origin)

    def _commit(self, answers: list[Ack | None], taken: list[tuple[int, Request]], origin: Origin) -> None:
        """Record the REQUESTs taken, write ``answers`` in order, then start the callbacks."""
        callbacks: list[Callback] = []
        if taken:
            now = self._wall()
            records = [
                NewCallback(
                    id=req.id, peer=origin.peer, transport=origin.transport, reply_addr=origin.reply_addr,
                    user1=req.user1, user2=req.user2, duration=req.duration, received_at=now,
                )
                for _, req in taken
            ]
            try:
                seqs = self.journal.record_requests(records)
            except JournalError as exc:
                log.error("%s: %d REQUEST(s) refused: %s", origin.peer, len(taken), exc)
                for index, req in taken:
                    answers[index] = Ack(id=req.id, ok=False)
            else:
                for (index, req), seq in zip(taken, seqs, strict=True):
                    answers[index] = Ack(id=req.id, ok=True)
                    callback = Callback(
                        seq=seq, id=req.id, user1=req.user1, user2=req.user2, duration=req.duration,
                        origin=origin, received_at=now,
                    )
                    self.active[seq] = callback
                    self._by_id[req.id] = seq
                    callbacks.append(callback)

        self._answer(origin, b"".join(serialize(a) for a in answers if a is not None))
        for callback in callbacks:
            log.info(
                "%s: callback %s taken: user1=%s user2=%s duration=%d",
                origin.peer, callback.id, callback.user1, callback.user2, callback.duration,
            )
            assert self.engine is not None
            self.engine.start(callback)

    def _refusal(self, req: Request, batch_taken: int, batch_ids: set[str]) -> str | None:
        if not self.accepting:
            return "mss is shutting down"
        if req.id in self._by_id or req.id in batch_ids:
            return "id already in progress"
        if len(self.active) + batch_taken >= self.max_calls:
            return f"no capacity left (max_calls = {self.max_calls})"
        if self.engine is None:
            return "no call engine"
        return self.engine.refusal()

    def _cancel(self, message: Cancel, origin: Origin) -> tuple[Ack, int | None]:
        """The answer to a CANCEL, and the callback to cancel once it is written (None: refused)."""
        seq = self._by_id.get(message.id)
        if seq is None:
            log.warning("%s: CANCEL id=%s: no such callback in progress", origin.peer, message.id)
            return Ack(id=message.id, ok=False), None
        callback = self.active[seq]
        if callback.origin.peer != origin.peer:
            log.warning("%s: CANCEL id=%s refused: ordered by peer %s", origin.peer, message.id,
                        callback.origin.peer)
            return Ack(id=message.id, ok=False), None
        log.info("%s: CANCEL id=%s", origin.peer, message.id)
        return Ack(id=message.id, ok=True), seq

    def _answer(self, origin: Origin, data: bytes) -> None:
        if not data:
            return
        if origin.outlet is not None:
            origin.outlet.write(data)
        elif origin.reply_addr is not None:
            self._udp_send(data, origin.reply_addr)

    # --- the end of a callback -----------------------------------------------------------------

    def bridged(self, seq: int) -> None:
        """The engine bridged callback ``seq``'s legs (the talk time starts now)."""
        try:
            self.journal.mark_bridged(seq, self._wall())
        except JournalError as exc:
            log.error("callback #%d: %s", seq, exc)

    def finish(self, seq: int, outcome: Outcome) -> None:
        """Callback ``seq`` ended: record its RESPONSE, then send it (exactly once)."""
        callback = self.active.pop(seq, None)
        if callback is None:
            log.error("callback #%d finished twice or never started; ignored", seq)
            return
        del self._by_id[callback.id]
        response = self._response(callback.id, outcome.real_duration, outcome.result, outcome.code)
        try:
            line = self.journal.record_response(seq, response, self._wall(), outcome.cdr)
        except JournalError as exc:
            # The journal is broken: still answer, the AS must not wait forever.
            log.error("callback %s: RESPONSE not recorded: %s", callback.id, exc)
            line = serialize(response).decode("ascii").rstrip("\r\n")
        log.info("callback %s ended: %s (%s)", callback.id, line, outcome.result)
        pending = PendingResponse(
            seq=seq, id=callback.id, peer=callback.origin.peer, transport=callback.origin.transport,
            reply_addr=callback.origin.reply_addr, line=line,
        )
        self._route(pending, callback.origin.outlet)
        if not self.active and self.on_idle is not None:
            self.on_idle()

    def _route(self, pending: PendingResponse, outlet: Outlet | None = None) -> None:
        """Send a RESPONSE: UDP to its address; TCP on ``outlet`` if still open, else the peer's newest
        connection, else keep it for the peer's next connection."""
        if pending.transport == "udp" and pending.reply_addr is not None:
            self._deliver_udp(pending)
            return
        peer = self._peers.get(pending.peer)
        if outlet is None or peer is None or outlet not in peer.outlets:
            outlet = peer.outlets[-1] if peer and peer.outlets else None
        if outlet is None:
            log.info("callback %s: peer %s not connected; RESPONSE kept", pending.id, pending.peer)
            self._owed.setdefault(pending.peer, []).append(pending)
        else:
            self._deliver_tcp(pending, outlet)

    def _response(self, cb_id: str, real_duration: int, result: str, code: int) -> Response:
        if self.extended_response:
            return Response(id=cb_id, real_duration=real_duration, result=result, code=code)
        return Response(id=cb_id, real_duration=real_duration)

    def _deliver_tcp(self, pending: PendingResponse, outlet: Outlet) -> None:
        if outlet.write(pending.line.encode("ascii") + b"\r\n"):
            self._delivered(pending)
        else:
            self._owed.setdefault(pending.peer, []).append(pending)

    def _deliver_udp(self, pending: PendingResponse) -> None:
        assert pending.reply_addr is not None
        if self._udp_send(pending.line.encode("ascii") + b"\r\n", pending.reply_addr) is False:
            # Not sent (the UDP socket is closed): left undelivered in the journal for the next start.
            log.warning("callback %s: UDP RESPONSE not sent; kept for the next start", pending.id)
            return
        self._delivered(pending)

    def _delivered(self, pending: PendingResponse) -> None:
        try:
            self.journal.mark_delivered(pending.seq, self._wall())
        except JournalError as exc:
            log.error("callback %s: delivery not recorded (it may be sent again): %s", pending.id, exc)

    @property
    def owed(self) -> int:
        """RESPONSEs kept for peers that are not connected."""
        return sum(len(v) for v in self._owed.values())
