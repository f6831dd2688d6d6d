"""Far-end SDP offers on one leg, sans-IO: re-INVITE (RFC 3261 §14.2) and UPDATE (RFC 3311) from the
far end, answered by the call flow.

The leg (:mod:`mss.sip.leg`) owns a :class:`FarEndOffers` and hands it the far end's re-INVITEs,
UPDATEs, their CANCELs and the ACKs of our 2xx; the call flow answers through
:meth:`FarEndOffers.answer` / :meth:`FarEndOffers.reject`. What it needs from the leg is
:class:`OfferLeg`, passed to every method: it keeps no reference to its leg, so a finished leg is
freed by reference counting, with no cycle left for the garbage collector.

- An offer is reported as :class:`~mss.sip.events.LegOffer`; without the call flow's answer within
  ``offer_timeout`` it is answered with the last local SDP.
- A refresh with the same SDP is answered at once with the same answer; a re-INVITE without SDP
  gets 200 with the last local SDP and the answer comes in the ACK
  (:class:`~mss.sip.events.LegRemoteAnswer`).
- A re-INVITE while an offer of ours is pending gets 491, while one of theirs is pending 500 with
  ``Retry-After`` (§14.2); an UPDATE with an offer then gets 491 (RFC 3311 §5.2).
- Our 2xx to a re-INVITE is retransmitted T1…T2 until the ACK; after 64·T1 without one the dialog
  is ended with BYE (§13.3.1.4).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Protocol

from mss.sip.dialog import Dialog
from mss.sip.events import LegId, LegOffer, LegRemoteAnswer
from mss.sip.message import Request, Response, make_response

if TYPE_CHECKING:
    from mss.sip.leg import Core

__all__ = ["OFFER_TIMERS", "FarEndOffers", "OfferLeg", "OfferTimerName"]

#: The leg timers far-end offers run: the call flow's answer, and our 2xx until its ACK.
OfferTimerName = Literal["offer", "2xx_retx", "2xx_giveup"]
OFFER_TIMERS: tuple[OfferTimerName, ...] = ("offer", "2xx_retx", "2xx_giveup")


class OfferLeg(Protocol):
    """What far-end offer handling needs from its leg."""

    core: Core
    leg_id: LegId
    local_tag: str
    local_sdp: bytes
    remote_sdp: bytes | None

    @property
    def t1(self) -> float:
        """RFC 3261 T1."""
        ...

    @property
    def confirmed(self) -> bool:
        """True while the dialog is confirmed (answered, not ending)."""
        ...

    @property
    def offering(self) -> bool:
        """True while an offer of ours (re-INVITE or UPDATE) waits for its answer."""
        ...

    def timer(self, name: OfferTimerName, deadline: float) -> None:
        """Arm a leg timer."""
        ...

    def clear(self, *names: str) -> None:
        """Disarm leg timers."""
        ...

    def respond_safely(self, key: str, response: Response, now: float) -> None:
        """Answer in server transaction ``key`` unless it is over or answered."""
        ...

    def ok(
        self, request: Request, *, body: bytes = b"", extra: list[tuple[str, str]] | None = None
    ) -> Response:
        """Our 200 to an in-dialog request."""
        ...

    def session_answer(self, request: Request, now: float) -> list[tuple[str, str]] | Response:
        """RFC 4028 applied to a far-end request: headers for our 2xx, or the refusal to send."""
        ...

    def end_dialog(self, now: float, *, reason: str) -> None:
        """End the confirmed dialog ourselves (BYE) and report it."""
        ...

    def send_queued_reinvite(self, now: float) -> None:
        """Send our queued re-INVITE now that no offer is pending."""
        ...


@dataclass(slots=True)
class _Offer:
    """A far-end offer waiting for the call flow's answer."""

    key: str
    request: Request
    kind: Literal["reinvite", "update"]
    session: list[tuple[str, str]]
    """The RFC 4028 headers of our 2xx to it."""


@dataclass(slots=True)
class _Accepted:
    """Our 2xx to a far-end re-INVITE, retransmitted until its ACK."""

    key: str
    response: Response
    seq: int
    offered: bool
    interval: float


class FarEndOffers:
    """The far end's offers on one leg (see the module docstring)."""

    __slots__ = ("_accepted", "_offer")

    def __init__(self) -> None:
        self._offer: _Offer | None = None
        self._accepted: _Accepted | None = None

    @property
    def pending(self) -> bool:
        """True while an offer of theirs waits for the call flow's answer."""
        return self._offer is not None

    @property
    def answer_in_ack(self) -> bool:
        """True while our 2xx to an offerless re-INVITE (our offer in it) waits for its ACK."""
        return self._accepted is not None and self._accepted.offered

    def abandon(self, leg: OfferLeg, now: float) -> None:
        """The leg is ending: a pending offer gets 487."""
        if self._offer is not None:
            leg.respond_safely(self._offer.key, make_response(self._offer.request, 487), now)
            self._offer = None

    def forget_accepted(self, leg: OfferLeg) -> None:
        """The far end hung up: stop retransmitting our 2xx."""
        leg.clear("2xx_retx", "2xx_giveup")
        self._accepted = None

    # -- requests from the far end ---------------------------------------------------------------

    def on_reinvite(self, leg: OfferLeg, key: str, request: Request, dialog: Dialog, now: float) -> None:
        """A re-INVITE in the confirmed dialog."""
        if leg.offering:
            leg.respond_safely(key, make_response(request, 491, to_tag=leg.local_tag), now)
            return
        if self._offer is not None or self.answer_in_ack:
            retry = str(leg.core.rng.randint(0, 10))
            leg.respond_safely(
                key, make_response(request, 500, to_tag=leg.local_tag, headers=[("Retry-After", retry)]), now
            )
            return
        session = leg.session_answer(request, now)
        if isinstance(session, Response):
            leg.respond_safely(key, session, now)
            return
        dialog.refresh_target(request)
        dialog.note_allow(request)
        if not request.body:
            # Offerless re-INVITE: our offer goes in the 2xx, their answer comes in the ACK.
            self._accept_reinvite(leg, key, request, leg.local_sdp, now, offered=True, extra=session)
            return
        if request.body == leg.remote_sdp:
            # A session refresh with the same SDP: same answer, no need to ask the call flow.
            self._accept_reinvite(leg, key, request, leg.local_sdp, now, offered=False, extra=session)
            return
        self._take(leg, _Offer(key, request, "reinvite", session), now)

    def on_update(self, leg: OfferLeg, key: str, request: Request, dialog: Dialog, now: float) -> None:
        """An UPDATE in the confirmed dialog or an early one."""
        if request.body and (leg.offering or self._offer is not None):
            leg.respond_safely(key, make_response(request, 491, to_tag=leg.local_tag), now)
            return
        session = leg.session_answer(request, now) if leg.confirmed else []
        if isinstance(session, Response):
            leg.respond_safely(key, session, now)
            return
        dialog.refresh_target(request)
        if not request.body:
            leg.respond_safely(key, leg.ok(request, extra=session), now)
            return
        if request.body == leg.remote_sdp:
            leg.respond_safely(key, leg.ok(request, body=leg.local_sdp, extra=session), now)
            return
        self._take(leg, _Offer(key, request, "update", session), now)

    def _take(self, leg: OfferLeg, offer: _Offer, now: float) -> None:
        self._offer = offer
        leg.timer("offer", now + leg.core.settings.offer_timeout)
        leg.core.emit(LegOffer(leg_id=leg.leg_id, sdp=offer.request.body, kind=offer.kind))

    def _accept_reinvite(
        self,
        leg: OfferLeg,
        key: str,
        request: Request,
        sdp: bytes,
        now: float,
        *,
        offered: bool,
        extra: list[tuple[str, str]],
    ) -> None:
        if not offered:
            leg.remote_sdp = request.body
        leg.local_sdp = sdp
        response = leg.ok(request, body=sdp, extra=extra)
        leg.respond_safely(key, response, now)
        self._accepted = _Accepted(key, response, request.cseq.seq, offered, leg.t1)
        leg.timer("2xx_retx", now + leg.t1)
        leg.timer("2xx_giveup", now + 64 * leg.t1)

    # -- the call flow's answer ------------------------------------------------------------------

    def answer(self, leg: OfferLeg, sdp: bytes, now: float) -> None:
        """The call flow's answer to the pending LegOffer."""
        offer = self._offer
        if offer is None or (not leg.confirmed and offer.kind == "reinvite"):
            return
        self._offer = None
        leg.clear("offer")
        if offer.kind == "reinvite":
            self._accept_reinvite(leg, offer.key, offer.request, sdp, now, offered=False, extra=offer.session)
        else:
            leg.remote_sdp = offer.request.body
            leg.local_sdp = sdp
            leg.respond_safely(offer.key, leg.ok(offer.request, body=sdp, extra=offer.session), now)
        leg.send_queued_reinvite(now)

    def reject(self, leg: OfferLeg, status: int, now: float) -> None:
        """Refuse the pending LegOffer (488 Not Acceptable Here by default)."""
        offer = self._offer
        if offer is None:
            return
        self._offer = None
        leg.clear("offer")
        leg.respond_safely(offer.key, make_response(offer.request, status, to_tag=leg.local_tag), now)
        leg.send_queued_reinvite(now)

    def on_cancel(self, leg: OfferLeg, invite_key: str, now: float) -> bool:
        """A CANCEL for a far-end re-INVITE; True when it matched one still waiting for our answer."""
        offer = self._offer
        if offer is None or offer.key != invite_key:
            return False
        self._offer = None
        leg.clear("offer")
        leg.respond_safely(offer.key, make_response(offer.request, 487, to_tag=leg.local_tag), now)
        return True

    def on_ack(self, leg: OfferLeg, ack: Request, now: float) -> None:
        """An ACK for a 2xx of ours (to a far-end re-INVITE)."""
        accepted = self._accepted
        if accepted is None or ack.cseq.seq != accepted.seq:
            return
        self._accepted = None
        leg.clear("2xx_retx", "2xx_giveup")
        if accepted.offered and ack.body and leg.confirmed:
            leg.remote_sdp = ack.body
            leg.core.emit(LegRemoteAnswer(leg_id=leg.leg_id, sdp=ack.body))

    # -- timers ----------------------------------------------------------------------------------

    def on_timer(self, leg: OfferLeg, name: OfferTimerName, now: float) -> None:
        """One of :data:`OFFER_TIMERS` fired."""
        if name == "offer":
            if self._offer is not None:
                self.answer(leg, leg.local_sdp, now)
        elif name == "2xx_retx":
            accepted = self._accepted
            if accepted is not None and leg.confirmed:
                leg.respond_safely(accepted.key, accepted.response, now)
                accepted.interval = min(2 * accepted.interval, leg.core.settings.timer_values.t2)
                leg.timer("2xx_retx", now + accepted.interval)
        elif self._accepted is not None:  # 2xx_giveup
            self._accepted = None
            leg.clear("2xx_retx")
            leg.end_dialog(now, reason="no ACK")
