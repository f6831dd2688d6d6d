"""One leg of a callback: an outgoing INVITE and the dialog it creates, as a state machine.

The leg is the layer above the transactions and the dialog: it takes transaction events
(responses, in-dialog requests, timeouts) and the call flow's commands (hangup, answer an offer,
re-INVITE) and produces UA events (:mod:`mss.sip.events`) and requests/responses through its
:class:`Core` (the :class:`~mss.sip.ua.UserAgent`).

States and moves (``_set_state`` refuses any other)::

    CALLING ──1xx──> EARLY ──2xx──> CONFIRMED ──our BYE──> TERMINATING ──BYE done──> TERMINATED
       │               │               └──their BYE / dialog death──────────────────> TERMINATED
       │               └──hangup──> CANCELLING ──final (487...)─────────────────────> TERMINATED
       └──hangup (CANCEL waits for a 1xx)──┘  └──2xx after all: ACK + BYE──> TERMINATING
    CALLING/EARLY ──final non-2xx / timeout / transport failure──> TERMINATED (LegFailed)

Rules, with their RFC:

- INVITE carries ``Supported: 100rel, timer`` and, unless disabled, ``Session-Expires`` (RFC 4028);
  401/407 are answered by the :class:`~mss.sip.auth.Authenticator` (new CSeq, same Call-ID and
  From tag, RFC 3261 §22.2); 422 is retried once with the Min-SE it names (RFC 4028 §7.4).
- A reliable provisional response (``Require: 100rel`` + ``RSeq``) is PRACKed once; a copy or an
  out-of-order one is ignored entirely (RFC 3262 §4).
- CANCEL is sent only after a provisional response (RFC 3261 §9.1); if no final response follows
  within 64·T1 the INVITE is given up. A 2xx that crosses the CANCEL is ACKed and BYEd (§9.1).
- Every 2xx of the INVITE is ACKed, retransmissions with the same ACK (§13.2.2.4); a 2xx from a
  second fork is ACKed and BYEd.
- In-dialog requests from the far end: BYE → 200, OPTIONS → 200; re-INVITE and UPDATE go to the
  leg's :class:`~mss.sip.offers.FarEndOffers` (offers, their answers, 491/500 on glare, our 2xx
  retransmitted until its ACK, RFC 3261 §14.2 and §13.3.1.4, RFC 3311).
- Our own re-INVITE (``reinvite``) is queued while an offer is pending and retried after a 491
  within :data:`GLARE_RETRY` (RFC 3261 §14.1).
- Session timers (RFC 4028): the leg's :class:`~mss.sip.session_timer.SessionTimer` says what was
  agreed and which timer runs; the leg refreshes at half the interval (UPDATE when the far end
  allows it, else re-INVITE with the last local SDP), ends the session with BYE when the far end's
  refresh is overdue, and ends the dialog when a refresh gets 408/481 or times out.
- A finished leg lingers 64·T1 to re-ACK late 2xx copies and answer late requests, then goes.
"""

from __future__ import annotations

import contextlib
import enum
import random
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, Protocol

from mss.errors import LocalProtocolError, SipError
from mss.sip._grammar import parse_number
from mss.sip.auth import Authenticator
from mss.sip.dialog import Dialog
from mss.sip.events import (
    LegFailed,
    LegId,
    LegReinviteResult,
    LegTrying,
    UAEvent,
    leg_answered,
    leg_ended,
    leg_ringing,
)
from mss.sip.message import Headers, Request, Response, make_response
from mss.sip.offers import OFFER_TIMERS, FarEndOffers, OfferTimerName
from mss.sip.session_timer import (  # parse_session_expires: also imported from here by older code
    SessionRefusal,
    SessionTimer,
    SessionTimerName,
    parse_session_expires,
)
from mss.sip.uri import NameAddr

if TYPE_CHECKING:
    from mss.sip.settings import UASettings

__all__ = ["Core", "Leg", "LegState", "LegTimerName", "parse_session_expires"]


class LegState(enum.Enum):
    """Where a leg is (see the module docstring for the moves)."""

    # Hashed by identity (members are singletons, compared by identity): Enum's own __hash__ is a
    # Python function, and the state tables are read on every message.
    __hash__ = object.__hash__

    CALLING = "calling"
    EARLY = "early"
    CONFIRMED = "confirmed"
    CANCELLING = "cancelling"
    TERMINATING = "terminating"
    TERMINATED = "terminated"


L = LegState
_MOVES: dict[LegState, frozenset[LegState]] = {
    L.CALLING: frozenset({L.EARLY, L.CONFIRMED, L.CANCELLING, L.TERMINATED}),
    L.EARLY: frozenset({L.CONFIRMED, L.CANCELLING, L.TERMINATED}),
    L.CONFIRMED: frozenset({L.TERMINATING, L.TERMINATED}),
    L.CANCELLING: frozenset({L.TERMINATING, L.TERMINATED}),
    L.TERMINATING: frozenset({L.TERMINATED}),
    L.TERMINATED: frozenset(),
}

#: RFC 3261 §14.1: after a 491 the owner of the Call-ID retries after 2.1 to 4 s.
GLARE_RETRY = (2.1, 4.0)

#: A leg's timers: its linger, the CANCEL's guard, the glare back-off, and those of its session
#: timer and of far-end offers.
LegTimerName = Literal["linger", "cancel_guard", "glare"] | SessionTimerName | OfferTimerName
_OFFER_TIMERS: dict[str, OfferTimerName] = {name: name for name in OFFER_TIMERS}
#: The timers an ended leg disarms: all but its linger.
_ENDED_TIMERS = ("cancel_guard", "session_refresh", "session_expiry", *OFFER_TIMERS, "glare")


class Core(Protocol):
    """What a leg needs from the user agent."""

    settings: UASettings
    rng: random.Random
    """Randomness for back-offs (glare, Retry-After): shared by every leg, none kept per leg."""

    def new_branch(self) -> str:
        """A fresh RFC 3261 branch."""
        ...

    def via(self, branch: str) -> str:
        """Our Via value with ``branch``."""
        ...

    def ack_via(self) -> str:
        """Our Via value with a fresh branch, for an ACK of a 2xx (its text alone)."""
        ...

    def contact(self, user: str) -> NameAddr:
        """Our Contact for ``user``."""
        ...

    def make_cnonce(self) -> str:
        """A fresh digest client nonce."""
        ...

    def send_request(self, owner: Leg, request: Request, now: float) -> str | None:
        """Send in a new client transaction; the key, or None when no transaction is left."""
        ...

    def send_ack(self, ack: bytes) -> None:
        """Send an ACK of a 2xx (no transaction), encoded."""
        ...

    def respond(self, key: str, response: Response, now: float) -> None:
        """Answer in server transaction ``key``."""
        ...

    def give_up_invite(self, key: str) -> None:
        """Stop waiting for the final response of client INVITE transaction ``key``."""
        ...

    def set_timer(self, owner: Leg, name: str, deadline: float) -> None:
        """Arm a leg timer."""
        ...

    def clear_timer(self, owner: Leg, *names: str) -> None:
        """Disarm leg timers."""
        ...

    def emit(self, event: UAEvent) -> None:
        """Queue an event for the call flow."""
        ...

    def leg_finished(self, leg: Leg) -> None:
        """The leg reported its end: its leg_id is free."""
        ...

    def leg_gone(self, leg: Leg) -> None:
        """The leg's linger is over: forget it."""
        ...


@dataclass(slots=True)
class _Pending:
    """An in-dialog client request of ours and what its answer is for."""

    purpose: Literal["prack", "bye", "reinvite", "refresh", "fork_bye", "cancel"]
    request: Request
    auth: Authenticator | None
    """Made at the first challenge (most requests never get one), then kept for the retries."""
    dialog: Dialog | None


@dataclass(slots=True)
class _Early:
    dialog: Dialog
    last_rseq: int | None = None


@dataclass(eq=False, slots=True)
class Leg:
    """An outgoing call leg; see the module docstring."""

    core: Core
    leg_id: LegId
    user: str
    local_sdp: bytes
    call_id: str
    local_tag: str
    state: LegState = LegState.CALLING
    invite: Request | None = None
    """Our INVITE, until the call is answered: a fork's 2xx after that is answered from the dialog
    (:attr:`invite_seq`, :attr:`invite_auth`), so the request is not kept for the life of the call."""
    invite_seq: int = 0
    """The CSeq number of our (last) INVITE, once answered."""
    invite_auth: tuple[tuple[str, str], ...] = ()
    """The credentials our answered INVITE carried (its ACKs carry them too)."""
    invite_key: str | None = None
    dialog: Dialog | None = None
    remote_sdp: bytes | None = None
    answered: bool = False
    hangup_requested: bool = False
    finished: bool = False
    _auth: Authenticator | None = None
    _early: dict[str, _Early] = field(default_factory=dict)
    _ack: bytes | None = None
    """The ACK of our 2xx, encoded: sent again for each 2xx copy (kept as bytes, a third of the
    parsed request's memory, for the life of the call)."""
    _forks: dict[str, bytes] = field(default_factory=dict)
    _pending: dict[str, _Pending] = field(default_factory=dict)
    _got_provisional: bool = False
    _cancel_sent: bool = False
    _trying_sent: bool = False
    _own_reinvite: str | None = None
    _queued_reinvite: bytes | None = None
    _glare_sdp: bytes | None = None
    _bye_key: str | None = None
    session: SessionTimer = field(init=False)
    """RFC 4028 session timer (:mod:`mss.sip.session_timer`)."""
    offers: FarEndOffers = field(init=False)
    """The far end's re-INVITE/UPDATE offers (:mod:`mss.sip.offers`)."""

    def __post_init__(self) -> None:
        s = self.core.settings
        self.session = SessionTimer(requested=s.session_expires, min_se=s.min_se)
        self.offers = FarEndOffers()

    # -- state -----------------------------------------------------------------------------

    def _set_state(self, new: LegState) -> None:
        if new is self.state:
            return
        if new not in _MOVES[self.state]:
            raise LocalProtocolError(f"leg {self.leg_id}: illegal move {self.state.value} -> {new.value}")
        self.state = new

    @property
    def t1(self) -> float:
        """RFC 3261 T1 of the settings."""
        return self.core.settings.timer_values.t1

    @property
    def confirmed(self) -> bool:
        """True while the dialog is confirmed (answered, not ending)."""
        return self.state is L.CONFIRMED

    @property
    def offering(self) -> bool:
        """True while an offer of ours (re-INVITE or refreshing UPDATE) waits for its answer."""
        return self._own_reinvite is not None

    def timer(self, name: LegTimerName, deadline: float) -> None:
        """Arm leg timer ``name``."""
        self.core.set_timer(self, name, deadline)

    def clear(self, *names: str) -> None:
        """Disarm leg timers."""
        self.core.clear_timer(self, *names)

    # -- terminal events ----------------------------------------------------------------------

    def _fail(self, status: int, reason: str, now: float) -> None:
        """Unanswered and not hung up by us: LegFailed, then linger."""
        if self.hangup_requested:
            self._finish(now, by_remote=False, reason="cancelled")
            return
        if not self.finished:
            self.finished = True
            self.core.emit(LegFailed(leg_id=self.leg_id, status=status, reason=reason, call_id=self.call_id))
            self.core.leg_finished(self)
        self._terminate(now)

    def _finish(self, now: float, *, by_remote: bool, reason: str) -> None:
        """Report LegEnded once, then linger."""
        if not self.finished:
            self.finished = True
            self.core.emit(leg_ended(self.leg_id, by_remote, reason, self.answered))
            self.core.leg_finished(self)
        self._terminate(now)

    def _terminate(self, now: float) -> None:
        self._set_state(L.TERMINATED)
        self.clear(*_ENDED_TIMERS)
        self.offers.abandon(self, now)
        self.timer("linger", now + 64 * self.t1)

    def respond_safely(self, key: str, response: Response, now: float) -> None:
        """Answer in server transaction ``key`` unless it is over or answered."""
        with contextlib.suppress(LocalProtocolError):  # the transaction is over or answered already
            self.core.respond(key, response, now)

    # -- the INVITE ---------------------------------------------------------------------------

    def start(self, invite: Request, now: float) -> None:
        """Send the first INVITE (built by the UA)."""
        self._send_invite(invite, now)

    def _send_invite(self, invite: Request, now: float) -> None:
        self.invite = invite
        key = self.core.send_request(self, invite, now)
        if key is None:
            self._fail(503, "Service Unavailable (transaction limit)", now)
            return
        self.invite_key = key

    def _retry(self, request: Request, *, cseq: int, extra: list[tuple[str, str]]) -> Request:
        """A copy of ``request`` with a new branch and CSeq and ``extra`` headers replacing theirs."""
        h = Headers()
        names = {n.lower() for n, _v in extra}
        for name, value in request.headers:
            lname = name.lower()
            if lname == "via":
                continue
            if lname in ("authorization", "proxy-authorization") or lname in names:
                continue
            if lname == "cseq":
                value = f"{cseq} {request.method}"
            h.add(name, value)
        fresh = Headers([("Via", self.core.via(self.core.new_branch()))])
        for name, value in h:
            fresh.add(name, value)
        for name, value in extra:
            fresh.add(name, value)
        return Request(request.method, request.uri, fresh, request.body)

    def on_invite_response(self, response: Response, now: float) -> None:
        """A response of the INVITE client transaction (1xx, final, 2xx copies)."""
        status = response.status
        if self.invite is None:  # answered: only 2xx copies and other forks' 2xx matter
            if 200 <= status < 300:
                self._on_invite_2xx(response, now)
            return
        if status < 200:
            self._on_provisional(response, now)
        elif status < 300:
            self._on_invite_2xx(response, now)
        else:
            self._on_invite_failure(response, now)

    def _on_provisional(self, response: Response, now: float) -> None:
        assert self.invite is not None
        self._got_provisional = True
        if self.state not in (L.CALLING, L.EARLY, L.CANCELLING):
            return
        if self.hangup_requested and not self._cancel_sent:
            self._send_cancel(now)
        if response.status == 100:
            if not self._trying_sent and not self.hangup_requested:
                self._trying_sent = True
                self.core.emit(LegTrying(leg_id=self.leg_id))
            return
        tag = response.to.tag
        if tag is not None:
            early = self._early.get(tag)
            if early is None:
                try:
                    early = _Early(Dialog.from_response(self.invite, response))
                except SipError:
                    return
                self._early[tag] = early
            else:
                early.dialog.refresh_target(response)
            if "100rel" in response.headers.tokens("Require"):
                try:  # RFC 3262 §7.1: RSeq is 1 .. 2**31-1
                    rseq = parse_number(response.headers.get("RSeq") or "", "RSeq", 2**31 - 1)
                except SipError:
                    return  # not a usable reliable provisional: no PRACK, not processed
                if early.last_rseq is not None and rseq != early.last_rseq + 1:
                    return  # a copy or out of order: no PRACK, not processed (RFC 3262 §4)
                early.last_rseq = rseq
                self._send_in_dialog(
                    "PRACK",
                    "prack",
                    early.dialog,
                    now,
                    headers=[("RAck", f"{rseq} {self.invite.cseq.seq} INVITE")],
                )
        if response.body:
            self.remote_sdp = response.body
        if self.hangup_requested:
            return
        if self.state is L.CALLING:
            self._set_state(L.EARLY)
        self.core.emit(leg_ringing(self.leg_id, response.status, response.reason, response.body or None))

    def _on_invite_2xx(self, response: Response, now: float) -> None:
        tag = response.to.tag
        if tag is None:
            return  # not a valid 2xx for a dialog
        if self.dialog is not None:
            if tag == self.dialog.remote_tag:
                if self._ack is not None:
                    self.core.send_ack(self._ack)  # a retransmission: the same ACK again
            else:
                self._ack_and_bye_fork(response, now)
            return
        if self.state is L.TERMINATED:
            self._ack_and_bye_fork(response, now)
            return
        assert self.invite is not None  # no dialog yet: the INVITE is kept
        early = self._early.get(tag)
        if early is not None:
            dialog = early.dialog
            dialog.confirm(self.invite, response)
        else:
            dialog = Dialog.from_response(self.invite, response)
        if self._early and (early is None or len(self._early) > 1):
            # Other early dialogs may have sent requests (PRACK) of their own: CSeq goes on from them.
            dialog.local_seq = max(dialog.local_seq, *(e.dialog.local_seq for e in self._early.values()))
        self.dialog = dialog
        self._early.clear()
        self.invite_seq = self.invite.cseq.seq
        # Only an INVITE sent again for a challenge carries credentials (its authenticator made them).
        self.invite_auth = self._credentials(self.invite) if self._auth is not None else ()
        self.invite = None  # the dialog holds what is needed from here on
        self._ack = self._make_ack(dialog, self.invite_seq, self.invite_auth)
        self.core.send_ack(self._ack)
        if self._cancel_sent:  # the guard is armed with the CANCEL only
            self.clear("cancel_guard")
        if self.hangup_requested:
            # The 2xx crossed our CANCEL: the call is up, and we end it (RFC 3261 §9.1).
            self._set_state(L.TERMINATING)
            self._send_bye(now)
            return
        self._set_state(L.CONFIRMED)
        self.answered = True
        if response.body:
            self.remote_sdp = response.body
        self._session_from(response, now)
        self.core.emit(leg_answered(self.leg_id, self.remote_sdp or b"", self.call_id))

    def _make_ack(self, dialog: Dialog, seq: int, auth: Iterable[tuple[str, str]]) -> bytes:
        """The ACK, encoded, of a 2xx in ``dialog`` to the INVITE with CSeq ``seq`` that carried the
        credentials ``auth``."""
        return dialog.encode_ack(via=self.core.ack_via(), cseq=seq, headers=auth)

    @staticmethod
    def _credentials(request: Request) -> tuple[tuple[str, str], ...]:
        return tuple(request.headers.named("Authorization", "Proxy-Authorization"))

    def _ack_and_bye_fork(self, response: Response, now: float) -> None:
        tag = response.to.tag or ""
        ack = self._forks.get(tag)
        if ack is not None:
            self.core.send_ack(ack)
            return
        try:
            if self.invite is not None:
                fork = Dialog.from_response(self.invite, response)
                ack = self._make_ack(fork, self.invite.cseq.seq, self._credentials(self.invite))
            else:
                assert self.dialog is not None  # the INVITE goes only once the dialog is there
                fork = self.dialog.fork(response, invite_seq=self.invite_seq)
                ack = self._make_ack(fork, self.invite_seq, self.invite_auth)
        except SipError:
            return
        self._forks[tag] = ack
        self.core.send_ack(ack)
        self._send_in_dialog("BYE", "fork_bye", fork, now)

    def _on_invite_failure(self, response: Response, now: float) -> None:
        assert self.invite is not None
        status = response.status
        if status in (401, 407) and not self.hangup_requested and self.core.settings.password is not None:
            if self._auth is None:  # the first challenge: one authenticator for the INVITE and its retries
                self._auth = self._new_auth()
            extra = self._auth.headers_for(
                response, method="INVITE", uri=str(self.invite.uri), body=self.invite.body
            )
            if extra is not None:
                retry = self._retry(self.invite, cseq=self.invite.cseq.seq + 1, extra=extra)
                self._send_invite(retry, now)
                return
        if status == 422 and not self.hangup_requested:
            min_se = self.session.retry_after_422(response)  # RFC 4028 §7.4, once
            if min_se is not None:
                extra = [
                    ("Session-Expires", str(self.session.requested)),
                    ("Min-SE", str(min_se)),
                    *[
                        (n, v)
                        for n, v in self.invite.headers
                        if n in ("Authorization", "Proxy-Authorization")
                    ],
                ]
                retry = self._retry(self.invite, cseq=self.invite.cseq.seq + 1, extra=extra)
                self._send_invite(retry, now)
                return
        if self.state in (L.CALLING, L.EARLY, L.CANCELLING):
            self._fail(status, response.reason, now)

    def on_invite_timeout(self, now: float, *, transport: bool) -> None:
        """Timer B fired or the transport failed before a final response."""
        if self.state in (L.CALLING, L.EARLY, L.CANCELLING):
            if transport:
                self._fail(503, "Service Unavailable (transport failure)", now)
            else:
                self._fail(408, "Request Timeout", now)

    def on_stray_2xx(self, response: Response, now: float) -> None:
        """A 2xx of our INVITE after its transaction ended."""
        seq = self.invite.cseq.seq if self.invite is not None else self.invite_seq
        if (self.invite is not None or self.dialog is not None) and response.cseq.seq == seq:
            self._on_invite_2xx(response, now)

    # -- hangup and CANCEL --------------------------------------------------------------------

    def hangup(self, now: float) -> None:
        """End the leg: CANCEL before an answer, BYE after; nothing when it is already ending."""
        if self.hangup_requested or self.state in (L.TERMINATING, L.TERMINATED):
            return
        self.hangup_requested = True
        if self.state in (L.CALLING, L.EARLY):
            self._set_state(L.CANCELLING)
            if self._got_provisional:
                self._send_cancel(now)
            # else: the CANCEL waits for the first provisional response (RFC 3261 §9.1); Timer B
            # bounds the wait.
            return
        if self.state is L.CONFIRMED:
            self._set_state(L.TERMINATING)
            self._send_bye(now)

    def _send_cancel(self, now: float) -> None:
        invite = self.invite
        assert invite is not None
        self._cancel_sent = True
        h = Headers()
        h.add("Via", invite.headers.get_list("Via")[0])
        for route in invite.headers.get_all("Route"):
            h.add("Route", route)
        h.add("Max-Forwards", "70")
        h.add("From", invite.headers.get("From") or "")
        h.add("To", invite.headers.get("To") or "")
        h.add("Call-ID", invite.call_id)
        h.add("CSeq", f"{invite.cseq.seq} CANCEL")
        h.add("User-Agent", self.core.settings.user_agent)
        cancel = Request("CANCEL", invite.uri, h)
        key = self.core.send_request(self, cancel, now)
        if key is not None:
            self._pending[key] = _Pending("cancel", cancel, None, None)
        self.timer("cancel_guard", now + 64 * self.t1)

    def _send_bye(self, now: float) -> None:
        assert self.dialog is not None
        self.offers.abandon(self, now)
        self._bye_key = self._send_in_dialog("BYE", "bye", self.dialog, now)
        if self._bye_key is None:
            self._finish(now, by_remote=False, reason="hangup")

    # -- in-dialog requests of ours -----------------------------------------------------------

    def _new_auth(self) -> Authenticator:
        s = self.core.settings
        return Authenticator(s.auth_user or s.caller, s.password or "", self.core.make_cnonce)

    def _send_in_dialog(
        self,
        method: str,
        purpose: Literal["prack", "bye", "reinvite", "refresh", "fork_bye"],
        dialog: Dialog,
        now: float,
        *,
        headers: list[tuple[str, str]] | None = None,
        body: bytes = b"",
    ) -> str | None:
        s = self.core.settings
        extra = [("User-Agent", s.user_agent), *(headers or [])]
        if body:
            extra.append(("Content-Type", "application/sdp"))
        contact = self.core.contact(s.caller) if method in ("INVITE", "UPDATE") else None
        request = dialog.create_request(
            method, via=self.core.via(self.core.new_branch()), contact=contact, headers=extra, body=body
        )
        key = self.core.send_request(self, request, now)
        if key is not None:
            self._pending[key] = _Pending(purpose, request, None, dialog)
        return key

    def on_response(self, key: str, response: Response, now: float) -> None:
        """A response to one of our in-dialog requests (or to the CANCEL)."""
        pending = self._pending.get(key)
        if pending is None:
            return
        if response.status < 200:
            return
        del self._pending[key]
        if (
            response.status in (401, 407)
            and pending.dialog is not None
            and self.core.settings.password is not None
        ):
            request = pending.request
            if pending.auth is None:
                pending.auth = self._new_auth()
            extra = pending.auth.headers_for(response, method=request.method, uri=str(request.uri),
                                             body=request.body)  # fmt: skip
            if extra is not None:
                retry = self._retry(request, cseq=pending.dialog.next_seq(), extra=extra)
                new_key = self.core.send_request(self, retry, now)
                if new_key is not None:
                    self._pending[new_key] = _Pending(pending.purpose, retry, pending.auth, pending.dialog)
                    if pending.purpose == "bye":
                        self._bye_key = new_key
                    if key == self._own_reinvite:
                        self._own_reinvite = new_key
                    return
        self._on_final(pending, key, response, now)

    def on_request_timeout(self, key: str, now: float, *, transport: bool) -> None:
        """One of our in-dialog requests (or the CANCEL) got no final response."""
        pending = self._pending.pop(key, None)
        if pending is None:
            return
        status, reason = (503, "Service Unavailable") if transport else (408, "Request Timeout")
        self._on_final(pending, key, None, now, status=status, reason=reason)

    def _on_final(
        self,
        pending: _Pending,
        key: str,
        response: Response | None,
        now: float,
        *,
        status: int = 0,
        reason: str = "",
    ) -> None:
        if response is not None:
            status, reason = response.status, response.reason
        purpose = pending.purpose
        if purpose == "bye":
            if key == self._bye_key:
                self._finish(now, by_remote=False, reason="cancelled" if not self.answered else "hangup")
            return
        if purpose in ("reinvite", "refresh"):
            if key == self._own_reinvite:
                self._own_reinvite = None
            if 200 <= status < 300 and response is not None and pending.dialog is not None:
                if pending.request.method == "INVITE":
                    request = pending.request
                    self.core.send_ack(self._make_ack(pending.dialog, request.cseq.seq,
                                                      self._credentials(request)))
                pending.dialog.refresh_target(response)
                self._session_from(response, now)
                if purpose == "reinvite":
                    if response.body:
                        self.remote_sdp = response.body
                    self.core.emit(LegReinviteResult(leg_id=self.leg_id, status=status, reason=reason,
                                                     sdp=response.body or None))  # fmt: skip
            elif status in (408, 481) and self.state is L.CONFIRMED:
                if purpose == "reinvite":
                    self.core.emit(
                        LegReinviteResult(leg_id=self.leg_id, status=status, reason=reason, sdp=None)
                    )
                self.end_dialog(
                    now, reason="refresh failed" if purpose == "refresh" else f"re-INVITE got {status}"
                )
                return
            elif status == 491 and self.state is L.CONFIRMED:
                self._glare_sdp = pending.request.body if purpose == "reinvite" else None
                self.timer("glare", now + self.core.rng.uniform(*GLARE_RETRY))
                if purpose == "reinvite":
                    return  # the result comes with the retry
            elif purpose == "reinvite":
                self.core.emit(LegReinviteResult(leg_id=self.leg_id, status=status, reason=reason, sdp=None))
            self.send_queued_reinvite(now)

    # -- requests from the far end ------------------------------------------------------------

    def on_request(self, key: str, request: Request, now: float) -> None:
        """An in-dialog request from the far end (already past the UAS checks)."""
        method = request.method
        dialog = self.dialog
        if dialog is None or not dialog.matches(request, incoming_request=True):
            early = self._early.get(request.from_.tag or "")
            if method == "UPDATE" and early is not None and self.state is L.EARLY:
                self.offers.on_update(self, key, request, early.dialog, now)
                return
            self.respond_safely(key, make_response(request, 481), now)
            return
        try:
            dialog.check_remote_cseq(request)
        except SipError as exc:
            self.respond_safely(key, make_response(request, exc.status, exc.reason), now)
            return
        if method == "BYE":
            self.respond_safely(key, self.ok(request), now)
            if self.state is L.CONFIRMED:
                self.offers.forget_accepted(self)
                self._finish(now, by_remote=True, reason="BYE")
            return
        if self.state is not L.CONFIRMED:
            self.respond_safely(key, make_response(request, 481), now)
            return
        if method == "INVITE":
            self.offers.on_reinvite(self, key, request, dialog, now)
        elif method == "UPDATE":
            self.offers.on_update(self, key, request, dialog, now)
        elif method == "OPTIONS":
            self.respond_safely(key, self.ok(request), now)
        else:
            self.respond_safely(key, make_response(request, 481), now)

    def ok(
        self, request: Request, *, body: bytes = b"", extra: list[tuple[str, str]] | None = None
    ) -> Response:
        """Our 200 to an in-dialog request (Contact on INVITE and UPDATE)."""
        s = self.core.settings
        headers = (
            [("Contact", str(self.core.contact(s.caller)))] if request.method in ("INVITE", "UPDATE") else []
        )
        headers += [("User-Agent", s.user_agent), *(extra or [])]
        if body:
            headers.append(("Content-Type", "application/sdp"))
        return make_response(request, 200, to_tag=self.local_tag, headers=headers, body=body)

    def _busy_with_offer(self) -> bool:
        return self.offering or self.offers.pending

    def session_answer(self, request: Request, now: float) -> list[tuple[str, str]] | Response:
        """Apply RFC 4028 to a far-end refresh; the headers for our 2xx, or a 400/422 to send."""
        answer = self.session.on_request(request)
        if isinstance(answer, SessionRefusal):
            return make_response(request, answer.status, answer.reason, to_tag=self.local_tag,
                                 headers=answer.headers)  # fmt: skip
        self._arm_session(now)
        return answer

    def answer_offer(self, sdp: bytes, now: float) -> None:
        """The call flow's answer to the pending LegOffer."""
        self.offers.answer(self, sdp, now)

    def reject_offer(self, status: int, now: float) -> None:
        """Refuse the pending LegOffer (488 Not Acceptable Here by default)."""
        self.offers.reject(self, status, now)

    def on_cancel(self, invite_key: str, now: float) -> bool:
        """A CANCEL for a far-end re-INVITE; True when it matched one still waiting for our answer."""
        return self.offers.on_cancel(self, invite_key, now)

    def on_ack(self, ack: Request, now: float) -> None:
        """An ACK for a 2xx of ours (to a far-end re-INVITE)."""
        self.offers.on_ack(self, ack, now)

    # -- our re-INVITE ------------------------------------------------------------------------

    def reinvite(self, sdp: bytes, now: float) -> None:
        """Send our own offer (e.g. to reflect hold from the other leg); queued while one is pending."""
        if self.state is not L.CONFIRMED or self.hangup_requested:
            return
        if self._busy_with_offer() or self.offers.answer_in_ack:
            self._queued_reinvite = sdp
            return
        self._send_reinvite(sdp, now, purpose="reinvite")

    def _send_reinvite(self, sdp: bytes, now: float, *, purpose: Literal["reinvite", "refresh"]) -> None:
        assert self.dialog is not None
        self.local_sdp = sdp
        headers = [("Supported", "100rel, timer"), *self.session.refresh_headers()]
        self._own_reinvite = self._send_in_dialog(
            "INVITE", purpose, self.dialog, now, headers=headers, body=sdp
        )
        if self._own_reinvite is None and purpose == "reinvite":
            self.core.emit(
                LegReinviteResult(leg_id=self.leg_id, status=503, reason="Service Unavailable", sdp=None)
            )

    def send_queued_reinvite(self, now: float) -> None:
        """Send our queued re-INVITE once no offer is pending."""
        if self._queued_reinvite is not None and not self._busy_with_offer() and self.state is L.CONFIRMED:
            sdp, self._queued_reinvite = self._queued_reinvite, None
            self._send_reinvite(sdp, now, purpose="reinvite")

    # -- session timers -----------------------------------------------------------------------

    def _session_from(self, response: Response, now: float) -> None:
        """A 2xx to our INVITE, re-INVITE or UPDATE sets the session timer (RFC 4028 §7.2)."""
        self.session.on_response(response, we_are_uac=True)
        self._arm_session(now)

    def _arm_session(self, now: float) -> None:
        self.clear("session_refresh", "session_expiry")
        due = self.session.next_timer(now)
        if due is not None:
            self.timer(*due)

    def _refresh(self, now: float) -> None:
        dialog = self.dialog
        interval = self.session.interval
        if dialog is None or interval is None or self.state is not L.CONFIRMED:
            return
        if self._busy_with_offer():
            self.timer("session_refresh", now + 2.0)  # try again when the exchange is over
            return
        # The refresh is also bounded: if it never succeeds, the session ends at its expiry.
        self.timer("session_expiry", now + interval / 2)
        if "UPDATE" in dialog.remote_allow:
            self._own_reinvite = self._send_in_dialog(
                "UPDATE",
                "refresh",
                dialog,
                now,
                headers=[("Session-Expires", f"{interval};refresher=uac"), ("Supported", "timer"),
                         ("Min-SE", str(self.session.min_se))],
            )  # fmt: skip
        else:
            self._send_reinvite(self.local_sdp, now, purpose="refresh")

    # -- dialog death ---------------------------------------------------------------------------

    def end_dialog(self, now: float, *, reason: str) -> None:
        """End a confirmed dialog ourselves (no ACK, session expired, refresh failed): BYE and report."""
        if self.state is not L.CONFIRMED:
            return
        assert self.dialog is not None
        self._send_in_dialog("BYE", "fork_bye", self.dialog, now)
        self._finish(now, by_remote=False, reason=reason)

    # -- timers -------------------------------------------------------------------------------

    def on_timer(self, name: str, now: float) -> None:
        """A leg timer fired."""
        if name == "linger":
            self.core.leg_gone(self)
        elif name == "cancel_guard":
            if self.state is L.CANCELLING and self.invite_key is not None:
                self.core.give_up_invite(self.invite_key)
                self._finish(now, by_remote=False, reason="cancelled")
        elif name in _OFFER_TIMERS:
            self.offers.on_timer(self, _OFFER_TIMERS[name], now)
        elif name == "session_refresh":
            self._refresh(now)
        elif name == "session_expiry":
            self.end_dialog(now, reason="session expired")
        elif name == "glare" and self.state is L.CONFIRMED:
            sdp = self._glare_sdp
            self._glare_sdp = None
            if sdp is not None:
                self._send_reinvite(sdp, now, purpose="reinvite")
            else:
                self._refresh(now)
