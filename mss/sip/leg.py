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
- In-dialog requests from the far end: BYE → 200; re-INVITE/UPDATE with an offer → LegOffer and
  the call flow's answer (or the last local SDP after ``offer_timeout``); a refresh with the same
  SDP is answered at once; re-INVITE without SDP → 200 with the last local SDP, the answer comes
  in the ACK; 491 while an offer of ours is pending (RFC 3261 §14.2); our 2xx to a re-INVITE is
  retransmitted T1…T2 until the ACK, and after 64·T1 without one the dialog is ended with BYE
  (§13.3.1.4).
- Session timers (RFC 4028 §10): the refresher refreshes at half the interval (UPDATE when the
  far end allows it, else re-INVITE with the last local SDP); the other side ends the session with
  BYE when ``interval - min(32, interval/3)`` passes without a refresh; a refresh that gets 408/481
  or times out ends the dialog.
- A finished leg lingers 64·T1 to re-ACK late 2xx copies and answer late requests, then goes.
"""

from __future__ import annotations

import contextlib
import enum
import random
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, Protocol

from mss.errors import LocalProtocolError, SipError
from mss.sip._grammar import parse_number
from mss.sip.auth import Authenticator
from mss.sip.dialog import Dialog
from mss.sip.events import (
    LegAnswered,
    LegEnded,
    LegFailed,
    LegId,
    LegOffer,
    LegReinviteResult,
    LegRemoteAnswer,
    LegRinging,
    LegTrying,
    UAEvent,
)
from mss.sip.message import Headers, Request, Response, make_response
from mss.sip.uri import NameAddr, get_param, parse_params

if TYPE_CHECKING:
    from mss.sip.settings import UASettings

__all__ = ["Core", "Leg", "LegState", "parse_session_expires"]


class LegState(enum.Enum):
    """Where a leg is (see the module docstring for the moves)."""

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

#: RFC 4028 §4: a session interval is at least 90 s.
MIN_SE_FLOOR = 90

#: RFC 3261 §14.1: after a 491 the owner of the Call-ID retries after 2.1 to 4 s.
GLARE_RETRY = (2.1, 4.0)


class Core(Protocol):
    """What a leg needs from the user agent."""

    settings: UASettings

    def new_branch(self) -> str:
        """A fresh RFC 3261 branch."""
        ...

    def via(self, branch: str) -> str:
        """Our Via value with ``branch``."""
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

    def send_ack(self, ack: Request) -> None:
        """Send an ACK of a 2xx (no transaction)."""
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

    def clear_timer(self, owner: Leg, name: str) -> None:
        """Disarm a leg timer."""
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


def parse_session_expires(value: str) -> tuple[int, str | None]:
    """``Session-Expires: delta;refresher=uac|uas`` → (seconds, refresher or None)."""
    delta, _, rest = value.partition(";")
    seconds = parse_number(delta, "Session-Expires")
    params = parse_params(";" + rest, "Session-Expires") if rest else ()
    refresher = get_param(params, "refresher")
    return seconds, (refresher.lower() if refresher else None)


@dataclass(slots=True)
class _Pending:
    """An in-dialog client request of ours and what its answer is for."""

    purpose: Literal["prack", "bye", "reinvite", "refresh", "fork_bye", "cancel"]
    request: Request
    auth: Authenticator
    dialog: Dialog | None


@dataclass(slots=True)
class _Offer:
    """A far-end offer waiting for the call flow's answer."""

    key: str
    request: Request
    kind: Literal["reinvite", "update"]


@dataclass(slots=True)
class _Accepted:
    """Our 2xx to a far-end re-INVITE, retransmitted until its ACK."""

    key: str
    response: Response
    seq: int
    offered: bool
    interval: float


@dataclass(slots=True)
class _SessionTimer:
    interval: int
    we_refresh: bool


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
    invite_key: str | None = None
    dialog: Dialog | None = None
    remote_sdp: bytes | None = None
    answered: bool = False
    hangup_requested: bool = False
    finished: bool = False
    _auth: Authenticator | None = None
    _early: dict[str, _Early] = field(default_factory=dict)
    _ack: Request | None = None
    _forks: dict[str, Request] = field(default_factory=dict)
    _pending: dict[str, _Pending] = field(default_factory=dict)
    _got_provisional: bool = False
    _cancel_sent: bool = False
    _trying_sent: bool = False
    _session_expires: int = 0
    _min_se_retry: bool = False
    _session: _SessionTimer | None = None
    _offer: _Offer | None = None
    _offer_session: list[tuple[str, str]] = field(default_factory=list)
    _accepted: _Accepted | None = None
    _own_reinvite: str | None = None
    _queued_reinvite: bytes | None = None
    _glare_sdp: bytes | None = None
    _bye_key: str | None = None
    _end_reason: str = ""
    _rng: random.Random = field(default_factory=random.Random)

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

    def _timer(self, name: str, deadline: float) -> None:
        self.core.set_timer(self, name, deadline)

    def _clear(self, *names: str) -> None:
        for name in names:
            self.core.clear_timer(self, name)

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
            self.core.emit(
                LegEnded(leg_id=self.leg_id, by_remote=by_remote, reason=reason, answered=self.answered)
            )
            self.core.leg_finished(self)
        self._terminate(now)

    def _terminate(self, now: float) -> None:
        self._set_state(L.TERMINATED)
        for name in ("cancel_guard", "session_refresh", "session_expiry", "offer", "2xx_retx", "2xx_giveup",
                     "glare"):  # fmt: skip
            self._clear(name)
        if self._offer is not None:
            self._respond_safely(self._offer.key, make_response(self._offer.request, 487), now)
            self._offer = None
        self._timer("linger", now + 64 * self.t1)

    def _respond_safely(self, key: str, response: Response, now: float) -> None:
        with contextlib.suppress(LocalProtocolError):  # the transaction is over or answered already
            self.core.respond(key, response, now)

    # -- the INVITE ---------------------------------------------------------------------------

    def start(self, invite: Request, now: float) -> None:
        """Send the first INVITE (built by the UA)."""
        s = self.core.settings
        self._session_expires = s.session_expires
        self._auth = Authenticator(s.auth_user or s.caller, s.password or "", self.core.make_cnonce)
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
        invite = self.invite
        assert invite is not None
        status = response.status
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
        self.core.emit(
            LegRinging(leg_id=self.leg_id, status=response.status, reason=response.reason,
                       sdp=response.body or None)
        )  # fmt: skip

    def _on_invite_2xx(self, response: Response, now: float) -> None:
        assert self.invite is not None
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
        early = self._early.get(tag)
        if early is not None:
            dialog = early.dialog
            dialog.confirm(self.invite, response)
        else:
            dialog = Dialog.from_response(self.invite, response)
        dialog.local_seq = max(
            dialog.local_seq, max((e.dialog.local_seq for e in self._early.values()), default=0)
        )
        self.dialog = dialog
        self._early.clear()
        self._ack = self._make_ack(dialog, self.invite)
        self.core.send_ack(self._ack)
        self._clear("cancel_guard")
        if self.hangup_requested:
            # The 2xx crossed our CANCEL: the call is up, and we end it (RFC 3261 §9.1).
            self._set_state(L.TERMINATING)
            self._send_bye(now)
            return
        self._set_state(L.CONFIRMED)
        self.answered = True
        if response.body:
            self.remote_sdp = response.body
        self._setup_session_timer(response, we_are_uac=True, now=now)
        self.core.emit(LegAnswered(leg_id=self.leg_id, sdp=self.remote_sdp or b"", call_id=self.call_id))

    def _make_ack(self, dialog: Dialog, invite: Request) -> Request:
        auth = [(n, v) for n, v in invite.headers if n in ("Authorization", "Proxy-Authorization")]
        return dialog.create_request(
            "ACK",
            via=self.core.via(self.core.new_branch()),
            cseq=invite.cseq.seq,
            headers=auth,
        )

    def _ack_and_bye_fork(self, response: Response, now: float) -> None:
        assert self.invite is not None
        tag = response.to.tag or ""
        ack = self._forks.get(tag)
        if ack is not None:
            self.core.send_ack(ack)
            return
        try:
            fork = Dialog.from_response(self.invite, response)
        except SipError:
            return
        ack = self._make_ack(fork, self.invite)
        self._forks[tag] = ack
        self.core.send_ack(ack)
        self._send_in_dialog("BYE", "fork_bye", fork, now)

    def _on_invite_failure(self, response: Response, now: float) -> None:
        assert self.invite is not None and self._auth is not None
        status = response.status
        if status in (401, 407) and not self.hangup_requested and self.core.settings.password is not None:
            extra = self._auth.headers_for(
                response, method="INVITE", uri=str(self.invite.uri), body=self.invite.body
            )
            if extra is not None:
                retry = self._retry(self.invite, cseq=self.invite.cseq.seq + 1, extra=extra)
                self._send_invite(retry, now)
                return
        if status == 422 and not self.hangup_requested and not self._min_se_retry:
            try:
                min_se = parse_number((response.headers.get("Min-SE") or "").partition(";")[0], "Min-SE")
            except SipError:
                min_se = 0  # unreadable: the 422 is a final failure like any other
            if min_se >= MIN_SE_FLOOR:
                self._min_se_retry = True
                self._session_expires = max(min_se, self._session_expires)
                extra = [
                    ("Session-Expires", str(self._session_expires)),
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
        if self.invite is not None and response.cseq.seq == self.invite.cseq.seq:
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
            self._pending[key] = _Pending("cancel", cancel, self._new_auth(), None)
        self._timer("cancel_guard", now + 64 * self.t1)

    def _send_bye(self, now: float) -> None:
        assert self.dialog is not None
        if self._offer is not None:
            self._respond_safely(self._offer.key, make_response(self._offer.request, 487), now)
            self._offer = None
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
            self._pending[key] = _Pending(purpose, request, self._new_auth(), dialog)
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
                    self.core.send_ack(self._make_ack(pending.dialog, pending.request))
                pending.dialog.refresh_target(response)
                self._setup_session_timer(response, we_are_uac=True, now=now)
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
                self._end_dialog(
                    now, reason="refresh failed" if purpose == "refresh" else f"re-INVITE got {status}"
                )
                return
            elif status == 491 and self.state is L.CONFIRMED:
                self._glare_sdp = pending.request.body if purpose == "reinvite" else None
                self._timer("glare", now + self._rng.uniform(*GLARE_RETRY))
                if purpose == "reinvite":
                    return  # the result comes with the retry
            elif purpose == "reinvite":
                self.core.emit(LegReinviteResult(leg_id=self.leg_id, status=status, reason=reason, sdp=None))
            self._maybe_send_queued(now)

    # -- requests from the far end ------------------------------------------------------------

    def on_request(self, key: str, request: Request, now: float) -> None:
        """An in-dialog request from the far end (already past the UAS checks)."""
        method = request.method
        dialog = self.dialog
        if dialog is None or not dialog.matches(request, incoming_request=True):
            early = self._early.get(request.from_.tag or "")
            if method == "UPDATE" and early is not None and self.state is L.EARLY:
                self._on_update(key, request, early.dialog, now)
                return
            self._respond_safely(key, make_response(request, 481), now)
            return
        try:
            dialog.check_remote_cseq(request)
        except SipError as exc:
            self._respond_safely(key, make_response(request, exc.status, exc.reason), now)
            return
        if method == "BYE":
            self._respond_safely(key, self._ok(request), now)
            if self.state is L.CONFIRMED:
                self._clear("2xx_retx", "2xx_giveup")
                self._accepted = None
                self._finish(now, by_remote=True, reason="BYE")
            return
        if self.state is not L.CONFIRMED:
            self._respond_safely(key, make_response(request, 481), now)
            return
        if method == "INVITE":
            self._on_reinvite(key, request, dialog, now)
        elif method == "UPDATE":
            self._on_update(key, request, dialog, now)
        elif method == "OPTIONS":
            self._respond_safely(key, self._ok(request), now)
        else:
            self._respond_safely(key, make_response(request, 481), now)

    def _ok(
        self, request: Request, *, body: bytes = b"", extra: list[tuple[str, str]] | None = None
    ) -> Response:
        s = self.core.settings
        headers = (
            [("Contact", str(self.core.contact(s.caller)))] if request.method in ("INVITE", "UPDATE") else []
        )
        headers += [("User-Agent", s.user_agent), *(extra or [])]
        if body:
            headers.append(("Content-Type", "application/sdp"))
        return make_response(request, 200, to_tag=self.local_tag, headers=headers, body=body)

    def _busy_with_offer(self) -> bool:
        return self._own_reinvite is not None or self._offer is not None

    def _session_headers(self, request: Request, now: float) -> list[tuple[str, str]] | Response:
        """Apply RFC 4028 to a far-end refresh; the headers for our 2xx, or a 422 to send."""
        value = request.headers.get("Session-Expires")
        if value is None:
            self._set_session(None, now)
            return []
        try:
            interval, refresher = parse_session_expires(value)
        except SipError as exc:
            return make_response(request, 400, exc.reason, to_tag=self.local_tag)
        min_se = self.core.settings.min_se
        if interval < min_se:
            return make_response(request, 422, to_tag=self.local_tag, headers=[("Min-SE", str(min_se))])
        refresher = refresher or "uac"
        self._set_session(_SessionTimer(interval, we_refresh=refresher == "uas"), now)
        out = [("Session-Expires", f"{interval};refresher={refresher}")]
        if "timer" in request.headers.tokens("Supported"):
            out.append(("Require", "timer"))
        return out

    def _on_reinvite(self, key: str, request: Request, dialog: Dialog, now: float) -> None:
        if self._own_reinvite is not None:
            self._respond_safely(key, make_response(request, 491, to_tag=self.local_tag), now)
            return
        if self._offer is not None or (self._accepted is not None and self._accepted.offered):
            retry = str(self._rng.randint(0, 10))
            self._respond_safely(
                key, make_response(request, 500, to_tag=self.local_tag, headers=[("Retry-After", retry)]), now
            )
            return
        session = self._session_headers(request, now)
        if isinstance(session, Response):
            self._respond_safely(key, session, now)
            return
        dialog.refresh_target(request)
        dialog.note_allow(request)
        if not request.body:
            # Offerless re-INVITE: our offer goes in the 2xx, their answer comes in the ACK.
            self._accept_reinvite(key, request, self.local_sdp, now, offered=True, extra=session)
            return
        if request.body == self.remote_sdp:
            # A session refresh with the same SDP: same answer, no need to ask the call flow.
            self._accept_reinvite(key, request, self.local_sdp, now, offered=False, extra=session)
            return
        self._offer = _Offer(key, request, "reinvite")
        self._offer_session = session
        self._timer("offer", now + self.core.settings.offer_timeout)
        self.core.emit(LegOffer(leg_id=self.leg_id, sdp=request.body, kind="reinvite"))

    def _accept_reinvite(
        self,
        key: str,
        request: Request,
        sdp: bytes,
        now: float,
        *,
        offered: bool,
        extra: list[tuple[str, str]],
    ) -> None:
        if not offered:
            self.remote_sdp = request.body
        self.local_sdp = sdp
        response = self._ok(request, body=sdp, extra=extra)
        self._respond_safely(key, response, now)
        self._accepted = _Accepted(key, response, request.cseq.seq, offered, self.t1)
        self._timer("2xx_retx", now + self.t1)
        self._timer("2xx_giveup", now + 64 * self.t1)

    def _on_update(self, key: str, request: Request, dialog: Dialog, now: float) -> None:
        if request.body and self._busy_with_offer():
            self._respond_safely(key, make_response(request, 491, to_tag=self.local_tag), now)
            return
        session = self._session_headers(request, now) if self.state is L.CONFIRMED else []
        if isinstance(session, Response):
            self._respond_safely(key, session, now)
            return
        dialog.refresh_target(request)
        if not request.body:
            self._respond_safely(key, self._ok(request, extra=session), now)
            return
        if request.body == self.remote_sdp:
            self._respond_safely(key, self._ok(request, body=self.local_sdp, extra=session), now)
            return
        self._offer = _Offer(key, request, "update")
        self._offer_session = session
        self._timer("offer", now + self.core.settings.offer_timeout)
        self.core.emit(LegOffer(leg_id=self.leg_id, sdp=request.body, kind="update"))

    def answer_offer(self, sdp: bytes, now: float) -> None:
        """The call flow's answer to the pending LegOffer."""
        offer = self._offer
        if offer is None or (self.state is not L.CONFIRMED and offer.kind == "reinvite"):
            return
        self._offer = None
        self._clear("offer")
        if offer.kind == "reinvite":
            self._accept_reinvite(
                offer.key, offer.request, sdp, now, offered=False, extra=self._offer_session
            )
        else:
            self.remote_sdp = offer.request.body
            self.local_sdp = sdp
            self._respond_safely(offer.key, self._ok(offer.request, body=sdp, extra=self._offer_session), now)
        self._maybe_send_queued(now)

    def reject_offer(self, status: int, now: float) -> None:
        """Refuse the pending LegOffer (488 Not Acceptable Here by default)."""
        offer = self._offer
        if offer is None:
            return
        self._offer = None
        self._clear("offer")
        self._respond_safely(offer.key, make_response(offer.request, status, to_tag=self.local_tag), now)
        self._maybe_send_queued(now)

    def on_cancel(self, invite_key: str, now: float) -> bool:
        """A CANCEL for a far-end re-INVITE; True when it matched one still waiting for our answer."""
        offer = self._offer
        if offer is None or offer.key != invite_key:
            return False
        self._offer = None
        self._clear("offer")
        self._respond_safely(offer.key, make_response(offer.request, 487, to_tag=self.local_tag), now)
        return True

    def on_ack(self, ack: Request, now: float) -> None:
        """An ACK for a 2xx of ours (to a far-end re-INVITE)."""
        accepted = self._accepted
        if accepted is None or ack.cseq.seq != accepted.seq:
            return
        self._accepted = None
        self._clear("2xx_retx", "2xx_giveup")
        if accepted.offered and ack.body and self.state is L.CONFIRMED:
            self.remote_sdp = ack.body
            self.core.emit(LegRemoteAnswer(leg_id=self.leg_id, sdp=ack.body))

    # -- our re-INVITE ------------------------------------------------------------------------

    def reinvite(self, sdp: bytes, now: float) -> None:
        """Send our own offer (e.g. to reflect hold from the other leg); queued while one is pending."""
        if self.state is not L.CONFIRMED or self.hangup_requested:
            return
        if self._busy_with_offer() or (self._accepted is not None and self._accepted.offered):
            self._queued_reinvite = sdp
            return
        self._send_reinvite(sdp, now, purpose="reinvite")

    def _send_reinvite(self, sdp: bytes, now: float, *, purpose: Literal["reinvite", "refresh"]) -> None:
        assert self.dialog is not None
        self.local_sdp = sdp
        headers = [("Supported", "100rel, timer")]
        if self._session is not None:
            headers.append(("Session-Expires", f"{self._session.interval};refresher=uac"))
            headers.append(("Min-SE", str(self.core.settings.min_se)))
        self._own_reinvite = self._send_in_dialog(
            "INVITE", purpose, self.dialog, now, headers=headers, body=sdp
        )
        if self._own_reinvite is None and purpose == "reinvite":
            self.core.emit(
                LegReinviteResult(leg_id=self.leg_id, status=503, reason="Service Unavailable", sdp=None)
            )

    def _maybe_send_queued(self, now: float) -> None:
        if self._queued_reinvite is not None and not self._busy_with_offer() and self.state is L.CONFIRMED:
            sdp, self._queued_reinvite = self._queued_reinvite, None
            self._send_reinvite(sdp, now, purpose="reinvite")

    # -- session timers -----------------------------------------------------------------------

    def _setup_session_timer(self, response: Response, *, we_are_uac: bool, now: float) -> None:
        value = response.headers.get("Session-Expires")
        if value is None:
            self._set_session(None, now)
            return
        try:
            interval, refresher = parse_session_expires(value)
        except SipError:
            self._set_session(None, now)
            return
        interval = max(interval, MIN_SE_FLOOR)
        we_refresh = (refresher or "uac") == ("uac" if we_are_uac else "uas")
        self._set_session(_SessionTimer(interval, we_refresh), now)

    def _set_session(self, session: _SessionTimer | None, now: float) -> None:
        self._session = session
        self._clear("session_refresh", "session_expiry")
        if session is None:
            return
        if session.we_refresh:
            self._timer("session_refresh", now + session.interval / 2)
        else:
            self._timer("session_expiry", now + session.interval - min(32, session.interval / 3))

    def _refresh(self, now: float) -> None:
        dialog = self.dialog
        if dialog is None or self._session is None or self.state is not L.CONFIRMED:
            return
        if self._busy_with_offer():
            self._timer("session_refresh", now + 2.0)  # try again when the exchange is over
            return
        interval = self._session.interval
        # The refresh is also bounded: if it never succeeds, the session ends at its expiry.
        self._timer("session_expiry", now + interval / 2)
        if "UPDATE" in dialog.remote_allow:
            self._own_reinvite = self._send_in_dialog(
                "UPDATE",
                "refresh",
                dialog,
                now,
                headers=[("Session-Expires", f"{interval};refresher=uac"), ("Supported", "timer"),
                         ("Min-SE", str(self.core.settings.min_se))],
            )  # fmt: skip
        else:
            self._send_reinvite(self.local_sdp, now, purpose="refresh")

    # -- dialog death ---------------------------------------------------------------------------

    def _end_dialog(self, now: float, *, reason: str) -> None:
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
        elif name == "offer":
            if self._offer is not None:
                self.answer_offer(self.local_sdp, now)
        elif name == "2xx_retx":
            accepted = self._accepted
            if accepted is not None and self.state is L.CONFIRMED:
                self._respond_safely(accepted.key, accepted.response, now)
                accepted.interval = min(2 * accepted.interval, self.core.settings.timer_values.t2)
                self._timer("2xx_retx", now + accepted.interval)
        elif name == "2xx_giveup":
            if self._accepted is not None:
                self._accepted = None
                self._clear("2xx_retx")
                self._end_dialog(now, reason="no ACK")
        elif name == "session_refresh":
            self._refresh(now)
        elif name == "session_expiry":
            self._end_dialog(now, reason="session expired")
        elif name == "glare" and self.state is L.CONFIRMED:
            sdp = self._glare_sdp
            self._glare_sdp = None
            if sdp is not None:
                self._send_reinvite(sdp, now, purpose="reinvite")
            else:
                self._refresh(now)
