"""SIP transactions (RFC 3261 §17, with the Accepted states of RFC 6026), sans-IO.

Four state machines, client and server × INVITE and non-INVITE, kept by a
:class:`TransactionLayer` that matches messages to them (§17.1.3, §17.2.3) and runs their timers on
the ``now`` it is given. The transaction user (the UA core) sends requests and responses through
the layer and reads :data:`TxEvent` events back; bytes to write come out of
:meth:`TransactionLayer.data_to_send`.

Timers (T1 = 0.5 s, T2 = 4 s, T4 = 5 s unless :class:`TimerValues` says otherwise). Retransmission
timers run over UDP only; over TCP the "wait" timers D, I, J, K are zero:

===== ======================= ============================ ===========================================
Timer Transaction             Value                        What it does
===== ======================= ============================ ===========================================
A     client INVITE           T1, doubling                 retransmit the INVITE (Calling)
B     client INVITE           64·T1                        give up: no response (Calling) → 408
D     client INVITE           32 s (UDP) / 0               absorb final-response retransmissions
E     client non-INVITE       T1, doubling up to T2        retransmit the request (T2 in Proceeding)
F     client non-INVITE       64·T1                        give up: no final response → 408
K     client non-INVITE       T4 (UDP) / 0                 absorb final-response retransmissions
M     client INVITE           64·T1                        RFC 6026 Accepted: pass 2xx retransmissions
G     server INVITE           T1, doubling up to T2        retransmit the non-2xx final response
H     server INVITE           64·T1                        give up waiting for the ACK
I     server INVITE           T4 (UDP) / 0                 absorb ACK retransmissions (Confirmed)
J     server non-INVITE       64·T1 (UDP) / 0              absorb request retransmissions
L     server INVITE           64·T1                        RFC 6026 Accepted: absorb INVITE copies
100   server INVITE           200 ms                       send 100 Trying if the TU has not answered
===== ======================= ============================ ===========================================

Live and lingering: a transaction is *live* while it waits for a final response (client: Calling,
Trying, Proceeding) or for the TU's answer (server: Trying, Proceeding); once answered it only
*lingers* (Completed, Confirmed, Accepted) to absorb retransmissions until its timer ends it. The
two are counted apart:

- admission (:attr:`TransactionLayer.full`, a new out-of-dialog request, a new call's INVITE) counts
  live transactions only, against ``max_transactions``;
- work within a dialog (``in_dialog=True``: the TU's BYE, CANCEL, PRACK, re-INVITE, REGISTER, and
  requests the far end sends in a dialog the TU knows) is never refused for admission; only
  :data:`LIVE_CEILING` times ``max_transactions`` live transactions stop it;
- new out-of-dialog requests from outside (OPTIONS, stray INVITEs) have a budget of their own,
  ``max_out_of_dialog``, live and lingering together, so they can never take the room calls need;
  when it is full the oldest lingering one is dropped first, and only when all are live is the
  request refused (the TU answers 503 statelessly);
- lingering transactions are bounded by ``max_lingering``: when full, the oldest is dropped (counted
  in :attr:`TransactionLayer.evicted`) rather than anything live refused. A dropped transaction only
  loses its retransmission absorption: a late copy is then handled like a new message.

Matching: a response goes to the client transaction with its top Via branch and CSeq method; a
request to the server transaction with its branch, sent-by and method (ACK matches INVITE). A
request without the RFC 3261 magic cookie is matched by Call-ID, From tag, CSeq and top Via
(§17.2.3, RFC 2543 compatibility). A 2xx retransmission after the client transaction is gone and
an ACK for a 2xx are not transaction matters: they come up as :class:`StrayResponse` and
:class:`StrayAck` for the dialog layer.
"""

from __future__ import annotations

import enum
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from mss.errors import LocalProtocolError
from mss.sip._timers import TimerQueue
from mss.sip.message import Headers, Request, Response, make_response

__all__ = [
    "LIVE_CEILING",
    "MAGIC_COOKIE",
    "Addr",
    "ClientTransaction",
    "RequestReceived",
    "ResponseReceived",
    "ServerTransaction",
    "StrayAck",
    "StrayResponse",
    "TimedOut",
    "TimerValues",
    "TransactionLayer",
    "TransportFailed",
    "TxEvent",
    "TxState",
    "ack_for_non2xx",
    "response_destination",
]

#: Branches of RFC 3261 elements start with this (§8.1.1.7).
MAGIC_COOKIE = "z9hG4bK"

#: A transport address: IP and port.
Addr = tuple[str, int]

#: Live transactions at most, as a multiple of ``max_transactions``, for work that admission never
#: refuses (in-dialog requests, the TU's own BYE/CANCEL/PRACK): each live leg holds a few at most, so
#: this is only reached by a peer that opens transactions faster than they end.
LIVE_CEILING = 2


@dataclass(frozen=True, slots=True)
class TimerValues:
    """RFC 3261 §17.1.1.1 timer bases, in seconds."""

    t1: float = 0.5
    """Round-trip estimate."""
    t2: float = 4.0
    """Longest retransmit interval for non-INVITE requests and INVITE responses."""
    t4: float = 5.0
    """Longest time a message stays in the network."""


class TxState(enum.Enum):
    """States of all four transaction machines (each uses a subset)."""

    # Hashed by identity (members are singletons, compared by identity): Enum's own __hash__ is a
    # Python function, and the state tables are read on every message.
    __hash__ = object.__hash__

    CALLING = "calling"
    TRYING = "trying"
    PROCEEDING = "proceeding"
    COMPLETED = "completed"
    CONFIRMED = "confirmed"
    ACCEPTED = "accepted"
    TERMINATED = "terminated"


S = TxState

# Legal moves of each machine (RFC 3261 Figures 5-8, RFC 6026 Figures 5 and 7).
_CLIENT_INVITE: dict[TxState, frozenset[TxState]] = {
    S.CALLING: frozenset({S.PROCEEDING, S.COMPLETED, S.ACCEPTED, S.TERMINATED}),
    S.PROCEEDING: frozenset({S.COMPLETED, S.ACCEPTED, S.TERMINATED}),
    S.COMPLETED: frozenset({S.TERMINATED}),
    S.ACCEPTED: frozenset({S.TERMINATED}),
    S.TERMINATED: frozenset(),
}
_CLIENT_NON_INVITE: dict[TxState, frozenset[TxState]] = {
    S.TRYING: frozenset({S.PROCEEDING, S.COMPLETED, S.TERMINATED}),
    S.PROCEEDING: frozenset({S.COMPLETED, S.TERMINATED}),
    S.COMPLETED: frozenset({S.TERMINATED}),
    S.TERMINATED: frozenset(),
}
_SERVER_INVITE: dict[TxState, frozenset[TxState]] = {
    S.PROCEEDING: frozenset({S.COMPLETED, S.ACCEPTED, S.TERMINATED}),
    S.COMPLETED: frozenset({S.CONFIRMED, S.TERMINATED}),
    S.CONFIRMED: frozenset({S.TERMINATED}),
    S.ACCEPTED: frozenset({S.TERMINATED}),
    S.TERMINATED: frozenset(),
}
_SERVER_NON_INVITE: dict[TxState, frozenset[TxState]] = {
    S.TRYING: frozenset({S.PROCEEDING, S.COMPLETED, S.TERMINATED}),
    S.PROCEEDING: frozenset({S.COMPLETED, S.TERMINATED}),
    S.COMPLETED: frozenset({S.TERMINATED}),
    S.TERMINATED: frozenset(),
}

#: States in which a transaction only waits for a timer to absorb retransmissions (it has been
#: answered): counted as lingering, not live.
_LINGERING = frozenset({S.COMPLETED, S.CONFIRMED, S.ACCEPTED})


# --- events to the transaction user ----------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class ResponseReceived:
    """A response for a client transaction (provisional, final, and 2xx copies in Accepted)."""

    key: str
    """The client transaction's key (from :meth:`TransactionLayer.send_request`)."""
    response: Response
    """The response."""


@dataclass(frozen=True, slots=True, kw_only=True)
class RequestReceived:
    """A new request: a server transaction was created for it; answer with ``respond``."""

    key: str
    """The server transaction's key."""
    request: Request
    """The request."""
    source: Addr
    """Where it came from."""


@dataclass(frozen=True, slots=True, kw_only=True)
class TimedOut:
    """Timer B, F (client: no final response) or H (server: no ACK) fired."""

    key: str
    """The transaction's key."""
    request: Request
    """Its request."""
    client: bool
    """True for a client transaction."""


@dataclass(frozen=True, slots=True, kw_only=True)
class TransportFailed:
    """The transport reported that the transaction's destination cannot be reached."""

    key: str
    """The client transaction's key."""
    request: Request
    """Its request."""


@dataclass(frozen=True, slots=True, kw_only=True)
class StrayResponse:
    """A response that matches no client transaction (e.g. a 2xx retransmission for a dialog)."""

    response: Response
    """The response."""
    source: Addr
    """Where it came from."""


@dataclass(frozen=True, slots=True, kw_only=True)
class StrayAck:
    """An ACK that matches no server transaction: the ACK of a 2xx, for the dialog layer."""

    request: Request
    """The ACK."""
    source: Addr
    """Where it came from."""


_SET_KEY, _SET_RESPONSE = (ResponseReceived.__dict__[name].__set__ for name in ("key", "response"))


def _response_received(key: str, response: Response) -> ResponseReceived:
    """``ResponseReceived`` with its slots set directly: the event of every response, and a frozen
    dataclass's generated ``__init__`` sets its fields one by one through ``object.__setattr__``."""
    event: ResponseReceived = object.__new__(ResponseReceived)
    _SET_KEY(event, key)
    _SET_RESPONSE(event, response)
    return event


#: Everything the layer reports to its user.
TxEvent = ResponseReceived | RequestReceived | TimedOut | TransportFailed | StrayResponse | StrayAck


# --- helpers ----------------------------------------------------------------------------------


def ack_for_non2xx(request: Request, response: Response) -> Request:
    """The ACK a client INVITE transaction sends for a 300-699 response (RFC 3261 §17.1.1.3)."""
    h = request.headers
    out = Headers()
    out.add("Via", h.get_list("Via")[0])
    for route in h.get_all("Route"):
        out.add("Route", route)
    out.add("Max-Forwards", "70")
    out.add("From", h.get("From") or "")
    out.add("To", response.headers.get("To") or "")
    out.add("Call-ID", request.call_id)
    out.add("CSeq", f"{request.cseq.seq} ACK")
    return Request("ACK", request.uri, out)


def response_destination(request: Request, source: Addr, reliable: bool) -> Addr:
    """Where responses to ``request`` go (RFC 3261 §18.2.2, RFC 3581 §4).

    Over a stream, back on the connection it came from (the adapter finds it by ``source``); over
    UDP, to the source address when the Via asked for ``rport``, else to the source IP at the
    sent-by port.
    """
    if reliable:
        return source
    via = request.top_via
    if via.param("rport") is not None:
        return source
    return source[0], via.port if via.port is not None else 5060


def _server_key(request: Request) -> str:
    via = request.top_via
    branch = via.branch or ""
    method = "INVITE" if request.method == "ACK" else request.method
    if branch.startswith(MAGIC_COOKIE) and len(branch) > len(MAGIC_COOKIE):
        return f"s|{branch}|{via.host}:{via.port}|{method}"
    # RFC 2543 compatible matching (§17.2.3): no usable branch.
    seq = request.cseq.seq
    return f"s2543|{request.call_id}|{request.from_.tag}|{seq}|{via}|{method}"


def _client_key(branch: str, method: str) -> str:
    return f"c|{branch}|{'INVITE' if method == 'ACK' else method}"


# --- the machines -----------------------------------------------------------------------------


class _Transaction:
    """What all four machines share: key, request, state with checked moves, timers, output."""

    __slots__ = ("_table", "dest", "in_dialog", "invite", "key", "layer", "reliable", "request", "state")

    invite: bool

    def __init__(
        self,
        layer: TransactionLayer,
        key: str,
        request: Request,
        dest: Addr,
        reliable: bool,
        table: dict[TxState, frozenset[TxState]],
        state: TxState,
        in_dialog: bool = True,
    ) -> None:
        self.layer = layer
        self.key = key
        self.request: Request | None = request
        """The request; None once the transaction is answered and cannot need it again, so that it
        is not kept while the transaction lingers (up to 64*T1). Only an INVITE's Completed keeps it:
        the client ACKs each copy of the non-2xx, the server reports Timer H with it."""
        self.dest = dest
        self.reliable = reliable
        self._table = table
        self.state = state
        self.in_dialog = in_dialog
        """False for a new out-of-dialog request from outside (its own budget)."""

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.key} {self.state.value}>"

    def _req(self) -> Request:
        assert self.request is not None, f"{self.key}: the request was let go in state {self.state.value}"
        return self.request

    def _set_state(self, new: TxState) -> None:
        if new not in self._table[self.state]:
            raise LocalProtocolError(
                f"{type(self).__name__} {self.key}: illegal move {self.state.value} -> {new.value}"
            )
        self.state = new
        if new is S.TERMINATED:
            self.layer._terminated(self)
        elif new in _LINGERING:
            self.layer._lingers(self)
            if not (self.invite and new is S.COMPLETED):
                self.request = None

    def _timer(self, name: str, delay: float, now: float) -> None:
        self.layer._timers.set(self, name, now + delay)

    def _clear(self, *names: str) -> None:
        self.layer._timers.clear(self, *names)

    def _send(self, data: bytes) -> None:
        self.layer._out.append((data, self.dest))

    def _emit(self, event: TxEvent) -> None:
        self.layer._events.append(event)

    def on_timer(self, name: str, now: float) -> None:
        """Timer ``name`` fired."""
        raise NotImplementedError


class ClientTransaction(_Transaction):
    """A client INVITE or non-INVITE transaction (RFC 3261 §17.1.1, §17.1.2; RFC 6026 §7.2)."""

    __slots__ = ("_give_up", "_interval", "_wire")

    def __init__(
        self, layer: TransactionLayer, key: str, request: Request, dest: Addr, reliable: bool
    ) -> None:
        self.invite = request.method == "INVITE"
        super().__init__(
            layer,
            key,
            request,
            dest,
            reliable,
            _CLIENT_INVITE if self.invite else _CLIENT_NON_INVITE,
            S.CALLING if self.invite else S.TRYING,
        )
        self._wire: bytes | None = request.encode()
        """The request as sent, kept for retransmissions until a response ends them (None after)."""
        self._interval = layer.timer_values.t1
        self._give_up = 0.0
        """When Timer B (INVITE) or F (non-INVITE) fires."""

    def start(self, now: float) -> None:
        """Send the request and arm A/B (INVITE) or E/F (non-INVITE)."""
        t = self.layer.timer_values
        assert self._wire is not None
        self._send(self._wire)
        self._give_up = now + 64 * t.t1
        if self.reliable:
            self._wire = None  # nothing is retransmitted over a stream
            self._arm_give_up()
        else:
            self._next_retransmission(t.t1, now)

    def _next_retransmission(self, delay: float, now: float) -> None:
        """Arm Timer A/E ``delay`` from ``now``, or B/F when that comes first. One timer is armed
        at a time, not two: the retransmissions end at B/F anyway (or at the response that clears
        both), so B/F need only be armed once no retransmission comes before it."""
        if now + delay < self._give_up:
            self._timer("A" if self.invite else "E", delay, now)
        else:
            self._arm_give_up()

    def _arm_give_up(self) -> None:
        """Arm Timer B (INVITE) or F (non-INVITE) for the transaction's give-up time."""
        self.layer._timers.set(self, "B" if self.invite else "F", self._give_up)

    def on_response(self, response: Response, now: float) -> None:
        """A response matched this transaction."""
        t = self.layer.timer_values
        st = self.state
        provisional = response.status < 200
        if self.invite:
            if st in (S.CALLING, S.PROCEEDING):
                self._wire = None  # Timer A stops at the first response
                if st is S.CALLING:  # A and B run in Calling only: the first response stops both
                    self._clear("A", "B")
                if provisional:
                    if st is S.CALLING:
                        self._set_state(S.PROCEEDING)
                elif response.status < 300:
                    self._set_state(S.ACCEPTED)
                    self._timer("M", 64 * t.t1, now)
                else:
                    self._set_state(S.COMPLETED)
                    self._send(ack_for_non2xx(self._req(), response).encode())
                    self._timer("D", 0.0 if self.reliable else 32.0, now)
                self._emit(_response_received(self.key, response))
            elif st is S.COMPLETED and response.status >= 300:
                self._send(ack_for_non2xx(self._req(), response).encode())
            elif st is S.ACCEPTED and 200 <= response.status < 300:
                self._emit(_response_received(self.key, response))
            return
        if st in (S.TRYING, S.PROCEEDING):
            if provisional:
                if st is S.TRYING:
                    self._set_state(S.PROCEEDING)
            else:
                self._wire = None
                self._clear("E", "F")
                self._set_state(S.COMPLETED)
                self._timer("K", 0.0 if self.reliable else t.t4, now)
            self._emit(_response_received(self.key, response))

    def on_timer(self, name: str, now: float) -> None:
        """Timer ``name`` fired: retransmit, give up, or end."""
        t = self.layer.timer_values
        st = self.state
        if name == "A" and st is S.CALLING and self._wire is not None:
            self._send(self._wire)
            self._interval *= 2
            self._next_retransmission(self._interval, now)
        elif name == "E" and st in (S.TRYING, S.PROCEEDING) and self._wire is not None:
            self._send(self._wire)
            self._interval = t.t2 if st is S.PROCEEDING else min(2 * self._interval, t.t2)
            self._next_retransmission(self._interval, now)
        elif (name == "B" and st is S.CALLING) or (name == "F" and st in (S.TRYING, S.PROCEEDING)):
            self._clear("A", "E")
            self._set_state(S.TERMINATED)
            self._emit(TimedOut(key=self.key, request=self._req(), client=True))
        elif name in ("D", "K", "M"):
            self._set_state(S.TERMINATED)

    def transport_failed(self) -> None:
        """The destination cannot be reached: end with TransportFailed unless already answered."""
        if self.state in (S.CALLING, S.TRYING, S.PROCEEDING):
            self._set_state(S.TERMINATED)
            self._emit(TransportFailed(key=self.key, request=self._req()))

    def cancel_timeout(self) -> None:
        """Stop waiting: the TU gives up on an INVITE in Proceeding (no final after CANCEL)."""
        if self.state is S.PROCEEDING:
            self._set_state(S.TERMINATED)


class ServerTransaction(_Transaction):
    """A server INVITE or non-INVITE transaction (RFC 3261 §17.2.1, §17.2.2; RFC 6026 §7.1)."""

    __slots__ = ("_interval", "_last", "source", "status")

    def __init__(
        self,
        layer: TransactionLayer,
        key: str,
        request: Request,
        source: Addr,
        reliable: bool,
        in_dialog: bool = True,
    ) -> None:
        self.invite = request.method == "INVITE"
        super().__init__(
            layer,
            key,
            request,
            response_destination(request, source, reliable),
            reliable,
            _SERVER_INVITE if self.invite else _SERVER_NON_INVITE,
            S.PROCEEDING if self.invite else S.TRYING,
            in_dialog,
        )
        self.source = source
        self._last: bytes | None = None
        self._interval = layer.timer_values.t1
        self.status = 0
        """The last status sent (0: none yet)."""

    def start(self, now: float) -> None:
        """Arm the 100 Trying timer of an INVITE."""
        if self.invite:
            self._timer("100", 0.2, now)

    def on_request(self, request: Request, now: float) -> None:
        """A retransmission of the request (or the ACK of a non-2xx final response)."""
        st = self.state
        if request.method == "ACK":
            if st is S.COMPLETED:
                self._clear("G", "H")
                self._set_state(S.CONFIRMED)
                self._timer("I", 0.0 if self.reliable else self.layer.timer_values.t4, now)
            elif st is S.ACCEPTED:
                # The ACK of our 2xx, sent by an older UA with the INVITE's branch: it is the
                # TU's (RFC 6026 §7.1), not the transaction's.
                self._emit(StrayAck(request=request, source=self.source))
            return
        if self._last is not None and st in (S.PROCEEDING, S.COMPLETED):
            self._send(self._last)

    def respond(self, response: Response, now: float) -> None:
        """The TU answers: send, and move on as the status says."""
        t = self.layer.timer_values
        st = self.state
        status = response.status
        if st is S.ACCEPTED and self.invite and 200 <= status < 300:
            self._send(response.encode())  # the TU's 2xx retransmission (RFC 6026 §7.1)
            return
        if st not in (S.PROCEEDING, S.TRYING):
            raise LocalProtocolError(
                f"{self.key}: cannot send {status} in state {st.value} (already answered {self.status})"
            )
        self._clear("100")
        data = response.encode()
        self._last = data
        self.status = status
        self._send(data)
        if status < 200:
            if st is S.TRYING:
                self._set_state(S.PROCEEDING)
            return
        if self.invite:
            if status < 300:
                self._set_state(S.ACCEPTED)
                self._timer("L", 64 * t.t1, now)
            else:
                self._set_state(S.COMPLETED)
                if not self.reliable:
                    self._timer("G", t.t1, now)
                self._timer("H", 64 * t.t1, now)
        else:
            self._set_state(S.COMPLETED)
            self._timer("J", 0.0 if self.reliable else 64 * t.t1, now)

    def on_timer(self, name: str, now: float) -> None:
        """Timer ``name`` fired: 100 Trying, retransmit, give up, or end."""
        t = self.layer.timer_values
        st = self.state
        if name == "100" and st is S.PROCEEDING and self.status == 0:
            trying = make_response(self._req(), 100)
            self._last = trying.encode()
            self.status = 100
            self._send(self._last)
        elif name == "G" and st is S.COMPLETED and self._last is not None:
            self._send(self._last)
            self._interval = min(2 * self._interval, t.t2)
            self._timer("G", self._interval, now)
        elif name == "H" and st is S.COMPLETED:
            self._clear("G")
            self._set_state(S.TERMINATED)
            self._emit(TimedOut(key=self.key, request=self._req(), client=False))
        elif name in ("I", "J", "L"):
            self._set_state(S.TERMINATED)


# --- the layer --------------------------------------------------------------------------------


class TransactionLayer:
    """Holds the transactions, matches messages to them, runs their timers.

    Live and lingering transactions are counted apart (see the module docstring): :attr:`full`
    tells the TU whether new work is admitted (live transactions only, against
    ``max_transactions``); in-dialog work goes on up to the :data:`LIVE_CEILING`; new out-of-dialog
    requests have their own ``max_out_of_dialog`` budget; lingering ones are bounded by
    ``max_lingering`` and the oldest is dropped when it is full. :meth:`receive` returns False for a
    new request it refused, so the TU can answer 503 statelessly.
    """

    def __init__(
        self,
        *,
        max_transactions: int = 4096,
        max_lingering: int | None = None,
        max_out_of_dialog: int | None = None,
        timer_values: TimerValues | None = None,
        on_terminated: Callable[[str], None] | None = None,
    ) -> None:
        self.max_transactions = max_transactions
        self.max_lingering = max_lingering if max_lingering is not None else max_transactions
        self.max_out_of_dialog = max_out_of_dialog if max_out_of_dialog is not None else max_transactions
        self.timer_values = timer_values or TimerValues()
        self._client: dict[str, ClientTransaction] = {}
        self._server: dict[str, ServerTransaction] = {}
        # Lingering transactions, oldest first: those of calls and those of out-of-dialog requests.
        # OrderedDicts: the oldest is found in O(1) (a dict's first entry, after many deletions at
        # its front, is found by skipping every deleted slot: microseconds per eviction when full).
        self._lingering: OrderedDict[str, _Transaction] = OrderedDict()
        self._lingering_ood: OrderedDict[str, _Transaction] = OrderedDict()
        self._ood = 0  # out-of-dialog server transactions, live and lingering
        self._timers = TimerQueue()
        self._events: list[TxEvent] = []
        self._out: list[tuple[bytes, Addr]] = []
        self._on_terminated = on_terminated
        self.evicted = 0
        """Lingering transactions dropped to make room (their retransmission absorption lost)."""

    # -- bookkeeping -------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._client) + len(self._server)

    @property
    def live(self) -> int:
        """Transactions waiting for a final response or for the TU's answer."""
        return len(self._client) + len(self._server) - len(self._lingering) - len(self._lingering_ood)

    @property
    def lingering(self) -> int:
        """Answered transactions kept only to absorb retransmissions until their timer."""
        return len(self._lingering) + len(self._lingering_ood)

    @property
    def full(self) -> bool:
        """True when new work (a new call, a new out-of-dialog request) is not admitted."""
        return self.live >= self.max_transactions

    @property
    def _at_ceiling(self) -> bool:
        return self.live >= LIVE_CEILING * self.max_transactions

    def _lingers(self, tx: _Transaction) -> None:
        pool = self._lingering if tx.in_dialog else self._lingering_ood
        if tx.key in pool:
            return  # Completed -> Confirmed: lingering already
        pool[tx.key] = tx
        if tx.in_dialog:
            while len(pool) > self.max_lingering:
                self._evict(next(iter(pool.values())))

    def _evict(self, tx: _Transaction) -> None:
        self.evicted += 1
        tx._set_state(S.TERMINATED)

    def _terminated(self, tx: _Transaction) -> None:
        self._timers.clear_owner(tx)
        if isinstance(tx, ClientTransaction):
            self._client.pop(tx.key, None)
        else:
            self._server.pop(tx.key, None)
        if tx.in_dialog:
            self._lingering.pop(tx.key, None)
        else:
            self._ood -= 1
            self._lingering_ood.pop(tx.key, None)
        if self._on_terminated is not None:
            self._on_terminated(tx.key)

    def live_for(self, peer: Addr) -> bool:
        """True when a live transaction's messages come from or go to ``peer`` (a TCP connection)."""
        lingering = self._lingering.keys() | self._lingering_ood.keys()
        for table in (self._server, self._client):
            for key, tx in table.items():
                if key not in lingering and (
                    tx.dest == peer or (isinstance(tx, ServerTransaction) and tx.source == peer)
                ):
                    return True
        return False

    def client(self, key: str) -> ClientTransaction | None:
        """The client transaction ``key``, None when it is over."""
        return self._client.get(key)

    def server(self, key: str) -> ServerTransaction | None:
        """The server transaction ``key``, None when it is over."""
        return self._server.get(key)

    # -- output --------------------------------------------------------------------------------

    def next_events(self) -> list[TxEvent]:
        """The events produced since the last call."""
        events, self._events = self._events, []
        return events

    def data_to_send(self) -> list[tuple[bytes, Addr]]:
        """Datagrams / stream writes produced since the last call, with their destinations."""
        out, self._out = self._out, []
        return out

    def get_timer(self) -> float | None:
        """When :meth:`handle_timer` must next run, None when no timer is armed."""
        return self._timers.next_deadline()

    def handle_timer(self, now: float) -> None:
        """Fire every timer due at ``now``."""
        for owner, name in self._timers.pop_due(now):
            assert isinstance(owner, _Transaction)
            owner.on_timer(name, now)

    # -- TU commands ---------------------------------------------------------------------------

    def send_request(
        self, request: Request, dest: Addr, *, reliable: bool, now: float, in_dialog: bool = False
    ) -> str:
        """Start a client transaction for ``request`` (not ACK); return its key.

        New work (``in_dialog`` False) needs room under ``max_transactions``; work for an existing
        dialog or registration only under the :data:`LIVE_CEILING`.
        """
        if request.method == "ACK":
            raise LocalProtocolError("an ACK is sent with send_stateless, not in a transaction")
        if self._at_ceiling if in_dialog else self.full:
            raise LocalProtocolError(f"no room for another transaction ({self.live} live)")
        branch = request.top_via.branch
        if not branch or not branch.startswith(MAGIC_COOKIE):
            raise LocalProtocolError(f"request without an RFC 3261 branch: {branch!r}")
        key = _client_key(branch, request.method)
        if key in self._client:
            raise LocalProtocolError(f"branch {branch} already in use")
        tx = ClientTransaction(self, key, request, dest, reliable)
        self._client[key] = tx
        tx.start(now)
        return key

    def send_stateless(self, message: Request | Response, dest: Addr) -> None:
        """Send without a transaction (the ACK of a 2xx, a 503 when full, a stray answer)."""
        self._out.append((message.encode(), dest))

    def send_raw(self, data: bytes, dest: Addr) -> None:
        """Queue bytes that are not a message (a keep-alive pong, a best-effort error answer)."""
        self._out.append((data, dest))

    def respond(self, key: str, response: Response, now: float) -> None:
        """Send ``response`` in server transaction ``key``."""
        tx = self._server.get(key)
        if tx is None:
            raise LocalProtocolError(f"no server transaction {key}")
        tx.respond(response, now)

    def transport_failed(self, dest: Addr) -> None:
        """The adapter could not reach ``dest``: fail the client transactions sent there."""
        for tx in list(self._client.values()):
            if tx.dest == dest:
                tx.transport_failed()

    def find_invite_for_cancel(self, cancel: Request) -> ServerTransaction | None:
        """The server INVITE transaction a CANCEL targets (RFC 3261 §9.2)."""
        key = _server_key(cancel)
        return self._server.get(key.rsplit("|", 1)[0] + "|INVITE")

    # -- input --------------------------------------------------------------------------------

    def receive(
        self,
        message: Request | Response,
        source: Addr,
        *,
        reliable: bool,
        now: float,
        in_dialog: bool = False,
    ) -> bool:
        """Route one parsed message; return False when a new request was refused.

        ``in_dialog``: the TU knows the dialog of this request, so it is served unless the
        :data:`LIVE_CEILING` is reached; a new out-of-dialog request is refused when the layer is
        :attr:`full` or its ``max_out_of_dialog`` budget holds only live transactions.
        """
        if isinstance(message, Response):
            branch = message.top_via.branch or ""
            method = message.cseq_method
            ctx = self._client.get(f"c|{branch}|{'INVITE' if method == 'ACK' else method}")  # _client_key
            if ctx is None:
                self._events.append(StrayResponse(response=message, source=source))
            else:
                ctx.on_response(message, now)
            return True
        key = _server_key(message)
        stx = self._server.get(key)
        if stx is not None:
            stx.on_request(message, now)
            return True
        if message.method == "ACK":
            self._events.append(StrayAck(request=message, source=source))
            return True
        if in_dialog:
            if self._at_ceiling:
                return False
        else:
            if self.full:
                return False
            if self._ood >= self.max_out_of_dialog:
                if not self._lingering_ood:
                    return False
                self._evict(next(iter(self._lingering_ood.values())))
            self._ood += 1
        stx = ServerTransaction(self, key, message, source, reliable, in_dialog)
        self._server[key] = stx
        stx.start(now)
        self._events.append(RequestReceived(key=key, request=message, source=source))
        return True
