"""Events of the SIP user agent (:class:`~mss.sip.ua.UserAgent`) for the call engine and the service.

Every leg (one outgoing INVITE and its dialog) ends with exactly one terminal event:

- :class:`LegFailed` when it was never answered and mss did not hang it up (a final non-2xx
  response, a timeout → 408, a transport failure → 503, a local limit → 503);
- :class:`LegEnded` otherwise: the far end sent BYE (``by_remote=True``), or mss hung up and the
  exchange is over (its BYE answered or timed out, its CANCEL answered by the INVITE's final
  response), or the dialog died (no ACK for a 2xx, session timer expired, a refresh got 408/481).

After :meth:`~mss.sip.ua.UserAgent.hangup` the only event left for that leg is its
``LegEnded(by_remote=False)``. Validation runs at construction: an invalid event cannot be built.

A leg is named by its caller's :data:`LegId`, which the user agent keeps and hands back without
reading it. These are the SIP layer's events; the call flow has its own, named apart
(:mod:`mss.callflow`), and :mod:`mss.engine` translates one into the other.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass
from typing import Literal

from mss.errors import LocalProtocolError
from mss.frozen import trusted

__all__ = [
    "LegAnswered",
    "LegEnded",
    "LegFailed",
    "LegId",
    "LegOffer",
    "LegProgress",
    "LegReinviteResult",
    "LegRemoteAnswer",
    "LegRinging",
    "LegTrying",
    "Registered",
    "RegistrationFailed",
    "UAEvent",
    "Unregistered",
    "leg_answered",
    "leg_ended",
    "leg_ringing",
]


def _check(ok: bool, what: str) -> None:
    if not ok:
        raise LocalProtocolError(what)


LegId = Hashable
"""The caller's key for a leg: any hashable value, handed back in every event of the leg
(mss's engine uses :class:`mss.engine.LegRef`, the tests short strings)."""


def _check_leg(leg_id: LegId) -> None:
    _check(leg_id is not None and leg_id != "", "leg_id must not be empty")


# --- registration (external line mode) ----------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Registered:
    """The line is registered (first time, or a refresh succeeded)."""

    expires: int
    """Seconds the registrar granted."""

    def __post_init__(self) -> None:
        _check(self.expires > 0, f"Registered.expires must be positive, not {self.expires}")


@dataclass(frozen=True, slots=True, kw_only=True)
class RegistrationFailed:
    """A REGISTER failed; the line is not registered until a retry succeeds."""

    status: int
    """SIP status (401/403/...), 408 on timeout, 503 on transport failure."""
    reason: str
    """Reason phrase or a description."""
    retry_at: float
    """When the next attempt is made (on the UA's clock)."""

    def __post_init__(self) -> None:
        _check(300 <= self.status <= 699, f"RegistrationFailed.status {self.status} is not 300..699")


@dataclass(frozen=True, slots=True, kw_only=True)
class Unregistered:
    """Shutdown is complete: the registration was removed (or there was none)."""


# --- legs ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class LegProgress:
    """A provisional response: :class:`LegTrying` (100) or :class:`LegRinging` (101..199)."""

    leg_id: LegId
    """The caller's id of the leg."""
    status: int
    """100..199."""
    reason: str
    """Reason phrase."""
    sdp: bytes | None = None
    """The SDP of the provisional response (early media), None without one."""

    def __post_init__(self) -> None:
        _check_leg(self.leg_id)
        _check(100 <= self.status <= 199, f"{type(self).__name__}.status {self.status} is not 1xx")


@dataclass(frozen=True, slots=True, kw_only=True)
class LegTrying(LegProgress):
    """The PSS took the INVITE (100 Trying); reported once."""

    status: int = 100
    """Always 100."""
    reason: str = "Trying"
    """Reason phrase."""

    def __post_init__(self) -> None:
        _check_leg(self.leg_id)
        _check(self.status == 100, "LegTrying.status must be 100")


@dataclass(frozen=True, slots=True, kw_only=True)
class LegRinging(LegProgress):
    """A 180/181/182/183 arrived (with the far end's SDP when it sends early media)."""

    def __post_init__(self) -> None:
        _check_leg(self.leg_id)
        _check(101 <= self.status <= 199, f"LegRinging.status {self.status} is not 101..199")


@dataclass(frozen=True, slots=True, kw_only=True)
class LegAnswered:
    """The far end answered (2xx, ACKed)."""

    leg_id: LegId
    """The caller's id of the leg."""
    sdp: bytes
    """The SDP answer (from the 2xx, else from a reliable 18x); empty when none came."""
    call_id: str
    """The dialog's Call-ID (for logs)."""

    def __post_init__(self) -> None:
        _check_leg(self.leg_id)


@dataclass(frozen=True, slots=True, kw_only=True)
class LegFailed:
    """The leg ended without being answered, and not because mss hung it up."""

    leg_id: LegId
    """The caller's id of the leg."""
    status: int
    """The final status (300..699): 408 for a timeout, 503 for a transport failure or a limit."""
    reason: str
    """Reason phrase or a description."""
    call_id: str = ""
    """The INVITE's Call-ID (for logs); empty when no INVITE was sent."""

    def __post_init__(self) -> None:
        _check_leg(self.leg_id)
        _check(300 <= self.status <= 699, f"LegFailed.status {self.status} is not 300..699")


@dataclass(frozen=True, slots=True, kw_only=True)
class LegEnded:
    """The leg is over: BYE received, or mss's hangup finished, or the dialog died."""

    leg_id: LegId
    """The caller's id of the leg."""
    by_remote: bool
    """True when the far end hung up (BYE received)."""
    reason: str
    """``BYE``, ``hangup``, ``cancelled``, ``no ACK``, ``session expired``, ``refresh failed``..."""
    answered: bool
    """True when the leg had been answered (LegAnswered was emitted)."""

    def __post_init__(self) -> None:
        _check_leg(self.leg_id)


@dataclass(frozen=True, slots=True, kw_only=True)
class LegOffer:
    """The far end made an SDP offer; answer it with ``answer_offer`` (or ``reject_offer``).

    If no answer comes within ``UASettings.offer_timeout`` the UA answers with the last local SDP.
    """

    leg_id: LegId
    """The caller's id of the leg."""
    sdp: bytes
    """The offer."""
    kind: Literal["reinvite", "update"]
    """Which request carried it."""

    def __post_init__(self) -> None:
        _check_leg(self.leg_id)
        _check(bool(self.sdp), "LegOffer.sdp must not be empty")


@dataclass(frozen=True, slots=True, kw_only=True)
class LegRemoteAnswer:
    """The far end answered the SDP offer mss put in its 200 to an offerless re-INVITE (in the ACK)."""

    leg_id: LegId
    """The caller's id of the leg."""
    sdp: bytes
    """The answer."""

    def __post_init__(self) -> None:
        _check_leg(self.leg_id)


@dataclass(frozen=True, slots=True, kw_only=True)
class LegReinviteResult:
    """The outcome of mss's own re-INVITE (``UserAgent.reinvite``)."""

    leg_id: LegId
    """The caller's id of the leg."""
    status: int
    """The final status (2xx: accepted)."""
    reason: str
    """Reason phrase."""
    sdp: bytes | None
    """The far end's answer on 2xx, else None."""

    def __post_init__(self) -> None:
        _check_leg(self.leg_id)
        _check(200 <= self.status <= 699, f"LegReinviteResult.status {self.status} is not final")


# --- events built from values known valid ---------------------------------------------------------
#
# The leg's most frequent events skip the generated ``__init__``, which sets a frozen dataclass's
# fields one by one through ``object.__setattr__`` and then runs ``__post_init__``: these make the
# same checks inline and set the slots directly (:func:`mss.frozen.trusted`). The same objects.

_make_ringing = trusted(LegRinging)
_make_answered = trusted(LegAnswered)
_make_ended = trusted(LegEnded)


def leg_ringing(leg_id: LegId, status: int, reason: str, sdp: bytes | None) -> LegRinging:
    """``LegRinging`` for a provisional response of 101..199."""
    _check_leg(leg_id)
    if not 101 <= status <= 199:
        raise LocalProtocolError(f"LegRinging.status {status} is not 101..199")
    return _make_ringing(leg_id=leg_id, status=status, reason=reason, sdp=sdp)


def leg_answered(leg_id: LegId, sdp: bytes, call_id: str) -> LegAnswered:
    """``LegAnswered``, built as :func:`leg_ringing` builds its event."""
    _check_leg(leg_id)
    return _make_answered(leg_id=leg_id, sdp=sdp, call_id=call_id)


def leg_ended(leg_id: LegId, by_remote: bool, reason: str, answered: bool) -> LegEnded:
    """``LegEnded``, built as :func:`leg_ringing` builds its event."""
    _check_leg(leg_id)
    return _make_ended(leg_id=leg_id, by_remote=by_remote, reason=reason, answered=answered)


#: Everything :meth:`~mss.sip.ua.UserAgent.next_event` returns.
UAEvent = (
    Registered
    | RegistrationFailed
    | Unregistered
    | LegProgress
    | LegAnswered
    | LegFailed
    | LegEnded
    | LegOffer
    | LegRemoteAnswer
    | LegReinviteResult
)
