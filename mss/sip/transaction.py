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

Matching: a response goes to the client transaction with its top Via branch and CSeq method; a
request to the server transaction with its branch, sent-by and method (ACK matches INVITE). A
request without the RFC 3261 magic cookie is matched by Call-ID, From tag, CSeq and top Via
(§17.2.3, RFC 2543 compatibility). A 2xx retransmission after the client transaction is gone and
an ACK for a 2xx are not transaction matters: they come up as :class:`StrayResponse` and
:class:`StrayAck` for the dialog layer.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass

from mss.errors import LocalProtocolError
from mss.sip._timers import TimerQueue
from mss.sip.message import Headers, Request, Response, make_response

__all__ = [
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

    __slots__ = ("_table", "dest", "key", "layer", "reliable", "request", "state")

    def __init__(
        self,
        layer: TransactionLayer,
        key: str,
        request: Request,
        dest: Addr,
        reliable: bool,
        table: dict[TxState, frozenset[TxState]],
        state: TxState,
    ) -> None:
        self.layer = layer
        self.key = key
        self.request = request
        self.dest = dest
        self.reliable = reliable
        self._table = table
        self.state = state

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.key} {self.state.value}>"

    def _set_state(self, new: TxState) -> None:
        if new not in self._table[self.state]:
            raise LocalProtocolError(
                f"{type(self).__name__} {self.key}: illegal move {self.state.value} -> {new.value}"
            )
        self.state = new
        if new is S.TERMINATED:
            self.layer._terminated(self)

    def _timer(self, name: str, delay: float, now: float) -> None:
        self.layer._timers.set(self, name, now + delay)

    def _clear(self, *names: str) -> None:
        for name in names:
            self.layer._timers.clear(self, name)

    def _send(self, data: bytes) -> None:
        self.layer._out.append((data, self.dest))

    def _emit(self, event: TxEvent) -> None:
        self.layer._events.append(event)

    def on_timer(self, name: str, now: float) -> None:
        """Timer ``name`` fired."""
        raise NotImplementedError


class ClientTransaction(_Transaction):
    """A client INVITE or non-INVITE transaction (RFC 3261 §17.1.1, §17.1.2; RFC 6026 §7.2)."""

    __slots__ = ("_interval", "_wire", "invite", "last_response")

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
        self._wire = request.encode()
        self._interval = layer.timer_values.t1
        self.last_response: Response | None = None

    def start(self, now: float) -> None:
        """Send the request and arm A/B (INVITE) or E/F (non-INVITE)."""
        t = self.layer.timer_values
        self._send(self._wire)
        if self.invite:
            if not self.reliable:
                self._timer("A", t.t1, now)
            self._timer("B", 64 * t.t1, now)
        else:
            if not self.reliable:
                self._timer("E", t.t1, now)
            self._timer("F", 64 * t.t1, now)

    def on_response(self, response: Response, now: float) -> None:
        """A response matched this transaction."""
        t = self.layer.timer_values
        st = self.state
        provisional = response.status < 200
        if self.invite:
            if st in (S.CALLING, S.PROCEEDING):
                self.last_response = response
                if provisional:
                    if st is S.CALLING:
                        self._clear("A", "B")
                        self._set_state(S.PROCEEDING)
                elif response.status < 300:
                    self._clear("A", "B")
                    self._set_state(S.ACCEPTED)
                    self._timer("M", 64 * t.t1, now)
                else:
                    self._clear("A", "B")
                    self._set_state(S.COMPLETED)
                    self._send(ack_for_non2xx(self.request, response).encode())
                    self._timer("D", 0.0 if self.reliable else 32.0, now)
                self._emit(ResponseReceived(key=self.key, response=response))
            elif st is S.COMPLETED and response.status >= 300:
                self._send(ack_for_non2xx(self.request, response).encode())
            elif st is S.ACCEPTED and 200 <= response.status < 300:
                self._emit(ResponseReceived(key=self.key, response=response))
            return
        if st in (S.TRYING, S.PROCEEDING):
            self.last_response = response
            if provisional:
                if st is S.TRYING:
                    self._set_state(S.PROCEEDING)
            else:
                self._clear("E", "F")
                self._set_state(S.COMPLETED)
                self._timer("K", 0.0 if self.reliable else t.t4, now)
            self._emit(ResponseReceived(key=self.key, response=response))

    def on_timer(self, name: str, now: float) -> None:
        """Timer ``name`` fired: retransmit, give up, or end."""
        t = self.layer.timer_values
        st = self.state
        if name == "A" and st is S.CALLING:
            self._send(self._wire)
            self._interval *= 2
            self._timer("A", self._interval, now)
        elif name == "E" and st in (S.TRYING, S.PROCEEDING):
            self._send(self._wire)
            self._interval = t.t2 if st is S.PROCEEDING else min(2 * self._interval, t.t2)
            self._timer("E", self._interval, now)
        elif (name == "B" and st is S.CALLING) or (name == "F" and st in (S.TRYING, S.PROCEEDING)):
            self._clear("A", "E")
            self._set_state(S.TERMINATED)
            self._emit(TimedOut(key=self.key, request=self.request, client=True))
        elif name in ("D", "K", "M"):
            self._set_state(S.TERMINATED)

    def transport_failed(self) -> None:
        """The destination cannot be reached: end with TransportFailed unless already answered."""
        if self.state in (S.CALLING, S.TRYING, S.PROCEEDING):
            self._set_state(S.TERMINATED)
            self._emit(TransportFailed(key=self.key, request=self.request))

    def cancel_timeout(self) -> None:
        """Stop waiting: the TU gives up on an INVITE in Proceeding (no final after CANCEL)."""
        if self.state is S.PROCEEDING:
            self._set_state(S.TERMINATED)


class ServerTransaction(_Transaction):
    """A server INVITE or non-INVITE transaction (RFC 3261 §17.2.1, §17.2.2; RFC 6026 §7.1)."""

    __slots__ = ("_interval", "_last", "invite", "source", "status")

    def __init__(
        self,
        layer: TransactionLayer,
        key: str,
        request: Request,
        source: Addr,
        reliable: bool,
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
            trying = make_response(self.request, 100)
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
            self._emit(TimedOut(key=self.key, request=self.request, client=False))
        elif name in ("I", "J", "L"):
            self._set_state(S.TERMINATED)


# --- the layer --------------------------------------------------------------------------------


class TransactionLayer:
    """Holds the transactions, matches messages to them, runs their timers.

    At most ``max_transactions`` exist at once: :attr:`full` tells the TU before it sends a new
    request, and a new request that arrives when full is reported with ``overloaded`` set so the
    TU can answer 503 statelessly.
    """

    def __init__(
        self,
        *,
        max_transactions: int = 4096,
        timer_values: TimerValues | None = None,
        on_terminated: Callable[[str], None] | None = None,
    ) -> None:
        self.max_transactions = max_transactions
        self.timer_values = timer_values or TimerValues()
        self._client: dict[str, ClientTransaction] = {}
        self._server: dict[str, ServerTransaction] = {}
        self._timers = TimerQueue()
        self._events: list[TxEvent] = []
        self._out: list[tuple[bytes, Addr]] = []
        self._on_terminated = on_terminated

    # -- bookkeeping -------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._client) + len(self._server)

    @property
    def full(self) -> bool:
        """True when no new transaction may be created."""
        return len(self) >= self.max_transactions

    def _terminated(self, tx: _Transaction) -> None:
        self._timers.clear_owner(tx)
        if isinstance(tx, ClientTransaction):
            self._client.pop(tx.key, None)
        else:
            self._server.pop(tx.key, None)
        if self._on_terminated is not None:
            self._on_terminated(tx.key)

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

    def send_request(self, request: Request, dest: Addr, *, reliable: bool, now: float) -> str:
        """Start a client transaction for ``request`` (not ACK); return its key."""
        if request.method == "ACK":
            raise LocalProtocolError("an ACK is sent with send_stateless, not in a transaction")
        if self.full:
            raise LocalProtocolError(f"no room for another transaction ({self.max_transactions})")
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

    def receive(self, message: Request | Response, source: Addr, *, reliable: bool, now: float) -> bool:
        """Route one parsed message; return False when a new request was refused (layer full)."""
        if isinstance(message, Response):
            branch = message.top_via.branch or ""
            ctx = self._client.get(_client_key(branch, message.cseq.method))
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
        if self.full:
            return False
        stx = ServerTransaction(self, key, message, source, reliable)
        self._server[key] = stx
        stx.start(now)
        self._events.append(RequestReceived(key=key, request=message, source=source))
        return True
