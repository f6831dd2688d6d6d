"""One callback as a sans-IO state machine: leg events and timers in, commands out.

::

    CALLING_USER1 ──user1 answers──▶ CALLING_USER2 ──user2 answers──▶ BRIDGED
          │                               │                             │
          └────────── failure, timer, hangup, CANCEL, shutdown ─────────┴──▶ RELEASING ──▶ DONE

Rules (SPEC.md "The job" and the decisions below it):

* user1 is offered ``audio_codecs`` (in order) plus telephone-event; user2 only the codec user1 chose
  (plus telephone-event), so media passes through the relay untouched.
* The duration timer starts at user1's answer. ``ring_timeout`` holds per leg from its INVITE, 18x or
  not. While user2 rings, user1 hears ringback: user2's early media once a 183 with SDP arrives,
  else a tone played by the relay.
* Release: a hangup on one side hangs up the other; the duration timer hangs up both (cancelling a
  ringing user2, ``real_duration=0``); no RTP on a bridged leg for ``inactivity_timeout`` releases
  both; an AS CANCEL or shutdown releases whatever is up.
* ``real_duration`` is the bridged time from user2's answer to the release (the first BYE sent or
  received), rounded to the nearest second; 0 when never bridged. The :class:`SendResponse`
  command goes out at the release itself: the AS does not wait for the BYE transactions.
* A far-end re-INVITE/UPDATE is answered (RFC 3264 §6.1 directions); a new media address makes the
  relay learn the source again; new payload-type numbers update the relay's rewrite; hold and resume
  are reflected to the other leg with a re-INVITE offering only the codec that leg agreed on.
* SRTP passthrough (``srtp``): every SDP is RTP/SAVP and each a=crypto (SDES, RFC 4568) is the key its
  phone sends with. user1 is offered a placeholder key; user2 is offered user1's key and user1's
  payload-type numbers (the relay must not rewrite an authenticated packet); once user2 answers,
  user1 is re-INVITEd with user2's key, and a failure of that re-INVITE releases the call. A key
  that changes later (a phone's offer or answer) is passed to the other phone in a re-INVITE. No
  ringback and no early media: the relay can neither encrypt a tone nor give user1 user2's key early.

Inputs are the leg events (:class:`Progress`, :class:`Answered`, :class:`Failed`, :class:`Ended`,
:class:`OfferReceived`: what the engine makes of the SIP user agent's ``Leg*`` events, named apart
from them) and :meth:`CallbackCall.handle_timer`; every method returns the commands to carry out,
in order. ``now`` is monotonic seconds. Legs are named for the party they call (:data:`User`); the
relay's own leg names are the engine's business (:data:`mss.engine.RELAY_LEG`).
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Literal

from mss import sdp
from mss.errors import LocalProtocolError, SdpError
from mss.frozen import trusted
from mss.iif import CallbackState, Result

__all__ = [
    "USERS",
    "AnswerOffer",
    "Answered",
    "CallSettings",
    "CallState",
    "CallbackCall",
    "Command",
    "Ended",
    "Failed",
    "Finished",
    "Hangup",
    "Invite",
    "LegEvent",
    "MarkBridged",
    "Notify",
    "OfferReceived",
    "Progress",
    "Reinvite",
    "ReinviteResult",
    "RelayBridge",
    "RelayForward",
    "RelayPlay",
    "RelayRemote",
    "RelayStopPlay",
    "ReleasedBy",
    "RemoteAnswer",
    "Result",
    "SendResponse",
    "Timer",
    "User",
]

#: Seconds a release may wait for the legs' final SIP exchanges before the call is dropped anyway
#: (a BYE transaction times out after 64*T1 = 32 s).
RELEASE_GUARD = 40.0

User = Literal["user1", "user2"]
"""A leg of the callback, named for the party it calls (the REQUEST's ``user1`` and ``user2``)."""

#: Both legs, user1 first.
USERS: tuple[User, ...] = ("user1", "user2")


ReleasedBy = Literal["user1", "user2", "mss", "as"]
"""Who released the callback: a party hanging up, mss (a timer, a failure, shutdown) or the AS."""

_LegOutcome = Literal["busy", "no_answer", "rejected", "failed"]
_LEG_RESULT: dict[User, dict[_LegOutcome, Result]] = {
    "user1": {"busy": "user1_busy", "no_answer": "user1_no_answer", "rejected": "user1_rejected",
              "failed": "user1_failed"},
    "user2": {"busy": "user2_busy", "no_answer": "user2_no_answer", "rejected": "user2_rejected",
              "failed": "user2_failed"},
}
_OTHER: dict[User, User] = {"user1": "user2", "user2": "user1"}
_NULL_ADDRESSES = frozenset({"0.0.0.0", "::"})


class Timer(enum.StrEnum):
    """The call's timers (:meth:`CallbackCall.get_timer` returns the earliest deadline)."""

    DURATION = "duration"
    """The REQUEST's ``duration``, from user1's answer."""
    RING_USER1 = "ring_user1"
    """``ring_timeout`` of user1's INVITE."""
    RING_USER2 = "ring_user2"
    """``ring_timeout`` of user2's INVITE."""
    MEDIA = "media"
    """``inactivity_timeout`` of a bridged call."""
    RELEASE = "release"
    """:data:`RELEASE_GUARD` of a release waiting for its legs."""
    REOFFER_USER1 = "reoffer_user1"
    """Our re-INVITE to user1 met a glare (491) or could not be sent: try it again."""
    REOFFER_USER2 = "reoffer_user2"
    """The same for user2."""


_RING_TIMER: dict[User, Timer] = {"user1": Timer.RING_USER1, "user2": Timer.RING_USER2}
_RINGING: dict[Timer, User] = {timer: user for user, timer in _RING_TIMER.items()}
_REOFFER_TIMER: dict[User, Timer] = {"user1": Timer.REOFFER_USER1, "user2": Timer.REOFFER_USER2}
_REOFFERING: dict[Timer, User] = {timer: user for user, timer in _REOFFER_TIMER.items()}

#: Final statuses to our re-INVITE after which it is sent again: 491 (RFC 3261 §14.1: the two ends
#: offered at once) and 503 (the SIP side could not send it, e.g. while an earlier one was pending).
_RETRY_REOFFER = frozenset({491, 503})

#: Tries of one re-offer after such statuses, before the leg's media is left as it is.
MAX_REOFFER_RETRIES = 3

#: Re-INVITEs a call sends to carry a changed SRTP key to the other phone: two phones that made a
#: new key in every answer would otherwise pass keys back and forth for ever.
MAX_KEY_CHANGES = 8


# --- input events ---------------------------------------------------------------------------------

def _check_leg(leg: str) -> None:
    if leg not in USERS:
        raise LocalProtocolError(f"unknown leg {leg!r}")


@dataclass(frozen=True, slots=True, kw_only=True)
class Progress:
    """A provisional response (180, 183) on a leg's INVITE."""

    leg: User
    """``user1`` or ``user2``."""
    status: int
    """101-199."""
    sdp: bytes | None = None
    """The early-media answer, when the response carried one."""

    def __post_init__(self) -> None:
        _check_leg(self.leg)
        if not 101 <= self.status <= 199:
            raise LocalProtocolError(f"{self.status} is not a provisional status")


@dataclass(frozen=True, slots=True, kw_only=True)
class Answered:
    """A 2xx to a leg's INVITE."""

    leg: User
    """``user1`` or ``user2``."""
    sdp: bytes | None
    """The SDP answer (None when the 2xx had no body: the leg then fails with 488)."""
    call_id: str = ""
    """The leg's SIP Call-ID (for the CDR)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Failed:
    """A leg's INVITE ended without a 2xx (final response, timeout, transport failure)."""

    leg: User
    """``user1`` or ``user2``."""
    status: int
    """The final status (408 for a timeout, 503 for a transport failure)."""
    reason: str = ""
    """Reason phrase or what went wrong."""
    call_id: str = ""
    """The leg's SIP Call-ID (for the CDR)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Ended:
    """An established (or cancelled) leg is over: BYE received, or our BYE/CANCEL completed."""

    leg: User
    """``user1`` or ``user2``."""
    by_remote: bool
    """True when the far end sent BYE."""


@dataclass(frozen=True, slots=True, kw_only=True)
class OfferReceived:
    """The far end of an established leg made an SDP offer (re-INVITE or UPDATE)."""

    leg: User
    """``user1`` or ``user2``."""
    sdp: bytes
    """The offer."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ReinviteResult:
    """The far end's final answer to our own re-INVITE (a :class:`Reinvite`) on a leg."""

    leg: User
    """``user1`` or ``user2``."""
    status: int
    """The final status (2xx: accepted; 503 when it could not be sent)."""
    sdp: bytes | None = None
    """The far end's SDP answer on 2xx, else None."""

    def __post_init__(self) -> None:
        _check_leg(self.leg)
        if not 200 <= self.status <= 699:
            raise LocalProtocolError(f"{self.status} is not a final status")


@dataclass(frozen=True, slots=True, kw_only=True)
class RemoteAnswer:
    """The far end answered, in its ACK, the offer the SIP side put in its 2xx to an offerless
    re-INVITE (the last SDP we had sent on that leg)."""

    leg: User
    """``user1`` or ``user2``."""
    sdp: bytes
    """The answer."""

    def __post_init__(self) -> None:
        _check_leg(self.leg)


LegEvent = Progress | Answered | Failed | Ended | OfferReceived | ReinviteResult | RemoteAnswer


# --- output commands ------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True, kw_only=True)
class Invite:
    """Send an INVITE to ``user`` through the PSS on ``leg``."""

    leg: User
    """``user1`` or ``user2``."""
    user: str
    """The number to call (the REQUEST's user1 or user2)."""
    sdp: bytes
    """Our offer."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Hangup:
    """End ``leg``: CANCEL when it is not answered, BYE when it is."""

    leg: User
    """``user1`` or ``user2``."""


@dataclass(frozen=True, slots=True, kw_only=True)
class AnswerOffer:
    """Answer the far end's offer on ``leg`` with ``sdp`` (488 when ``sdp`` is None)."""

    leg: User
    """``user1`` or ``user2``."""
    sdp: bytes | None
    """Our answer, or None to refuse the offer."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Reinvite:
    """Send our own re-INVITE on ``leg`` (hold or resume reflected from the other leg)."""

    leg: User
    """``user1`` or ``user2``."""
    sdp: bytes
    """Our new offer."""


@dataclass(frozen=True, slots=True, kw_only=True)
class RelayRemote:
    """Tell the relay where a leg's media is (and to learn the source again)."""

    leg: User
    """The leg whose media this is."""
    host: str
    """The phone's media address."""
    port: int
    """Its RTP port."""
    rtcp_port: int
    """Its RTCP port."""


@dataclass(frozen=True, slots=True, kw_only=True)
class RelayPlay:
    """Play ringback into relay leg ``leg`` in ``codec`` with ``payload_type`` every ``ptime`` ms."""

    leg: User
    """The leg that hears it."""
    codec: str
    """``PCMU``, ``PCMA`` or ``G729`` (silent where mss was built without bcg729)."""
    payload_type: int
    """The payload type the phone expects for the codec (from its SDP)."""
    ptime: int
    """Milliseconds of audio per packet."""


@dataclass(frozen=True, slots=True, kw_only=True)
class RelayStopPlay:
    """Stop playing into relay leg ``leg``."""

    leg: User
    """The leg that hears it."""


@dataclass(frozen=True, slots=True, kw_only=True)
class RelayForward:
    """Set the relay's forwarding per direction."""

    a_to_b: bool
    """Forward what user1 sends to user2."""
    b_to_a: bool
    """Forward what user2 sends to user1."""


@dataclass(frozen=True, slots=True, kw_only=True)
class RelayBridge:
    """Bridge the legs with these payload-type rewrites (only numbers that change)."""

    a_to_b: dict[int, int]
    """Payload types rewritten on packets from user1 to user2."""
    b_to_a: dict[int, int]
    """Payload types rewritten on packets from user2 to user1."""
    srtp: bool = False
    """SRTP passthrough: the packets are authenticated, so the maps must be empty (no rewrite)."""

    def __post_init__(self) -> None:
        if self.srtp and (self.a_to_b or self.b_to_a):
            raise LocalProtocolError(
                f"SRTP packets cannot be rewritten, yet the bridge maps {self.a_to_b} and {self.b_to_a}"
            )


@dataclass(frozen=True, slots=True, kw_only=True)
class MarkBridged:
    """The talk time starts now (journal it: a crash must not lose it)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class SendResponse:
    """The callback's result is known: send the RESPONSE now."""

    real_duration: int
    """Bridged seconds, rounded to the nearest."""
    result: Result
    """The outcome."""
    code: int
    """Deciding SIP status, 0 when none."""
    released_by: ReleasedBy
    """Who released the callback."""
    reason: str
    """What happened, for the log and the CDR."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Notify:
    """Tell the AS how far the callback has come (an EVENT line; only with ``progress_events``)."""

    state: CallbackState
    """``user1_ringing``, ``user1_answered``, ``user2_ringing`` or ``bridged``."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Finished:
    """Both legs are over: close the relay session and forget the call."""


Command = (
    Invite | Hangup | AnswerOffer | Reinvite | RelayRemote | RelayPlay | RelayStopPlay | RelayForward
    | RelayBridge | MarkBridged | Notify | SendResponse | Finished
)

# The commands that every call gives alike, made once (they are immutable).
_STOP_RINGBACK = RelayStopPlay(leg="user1")
_FORWARD: dict[tuple[bool, bool], RelayForward] = {
    (a_to_b, b_to_a): RelayForward(a_to_b=a_to_b, b_to_a=b_to_a)
    for a_to_b in (False, True)
    for b_to_a in (False, True)
}
_FORWARD_NONE = _FORWARD[False, False]
_HANGUP: dict[User, Hangup] = {user: Hangup(leg=user) for user in USERS}
_NOTIFY: dict[CallbackState, Notify] = {
    state: Notify(state=state) for state in ("user1_ringing", "user1_answered", "user2_ringing", "bridged")
}
_MARK_BRIDGED = MarkBridged()
_FINISHED = Finished()

# The commands whose fields the call flow knows valid (its own legs, a checked SDP's address and
# ports, bytes it made) are built without the generated __init__, which sets a frozen dataclass's
# fields one by one through object.__setattr__: the same objects, a few times cheaper.
_invite = trusted(Invite)
_relay_remote = trusted(RelayRemote)
_relay_play = trusted(RelayPlay)
_send_response = trusted(SendResponse)
_relay_bridge = trusted(RelayBridge)


# --- the state machine ----------------------------------------------------------------------------

def _same_key(a: str | None, b: str | None) -> bool:
    """Two a=crypto values carry the same key and parameters (the tag aside: each offer numbers its own)."""
    if a is None or b is None:
        return a == b
    return a.partition(" ")[2] == b.partition(" ")[2]


def _answered_key(answer: sdp.SessionDescription) -> str | None:
    """The a=crypto value of our answer's audio stream (the one line an SRTP answer carries)."""
    for media in answer.media:
        if media.port != 0:
            return media.attribute("crypto")
    return None


class CallState(enum.Enum):
    # Members are singletons, so they hash by identity (Enum's own __hash__, of the name, is a
    # Python-level call on every look-up in _TRANSITIONS).
    __hash__ = object.__hash__

    CALLING_USER1 = "calling user1"
    CALLING_USER2 = "calling user2"
    BRIDGED = "bridged"
    RELEASING = "releasing"
    DONE = "done"


_TRANSITIONS: dict[CallState, frozenset[CallState]] = {
    CallState.CALLING_USER1: frozenset({CallState.CALLING_USER2, CallState.RELEASING, CallState.DONE}),
    CallState.CALLING_USER2: frozenset({CallState.BRIDGED, CallState.RELEASING, CallState.DONE}),
    CallState.BRIDGED: frozenset({CallState.RELEASING, CallState.DONE}),
    CallState.RELEASING: frozenset({CallState.DONE}),
    CallState.DONE: frozenset(),
}

_BUSY = frozenset({486, 600})
_REJECTED = frozenset({403, 603, 606})
_NO_ANSWER_AFTER_RINGING = frozenset({408, 480, 487})


@dataclass(frozen=True, slots=True, kw_only=True)
class CallSettings:
    """What a call needs from config.ini and the relay."""

    codecs: Sequence[str]
    """``[callback] audio_codecs``."""
    ring_timeout: float
    """Seconds a leg may ring."""
    inactivity_timeout: float
    """Seconds without RTP on a bridged leg before release; 0: never."""
    media_host: str
    """The relay's address written into SDP."""
    a_port: int
    """Relay RTP port facing user1."""
    b_port: int
    """Relay RTP port facing user2."""
    session_id: int
    """o= session id of our SDPs."""
    progress_events: bool = False
    """Say how far the call has come with :class:`Notify` commands (the AS's ``events = yes``)."""
    srtp: bool = False
    """``[rtp] srtp = passthrough``: RTP/SAVP legs with the phones' SDES keys passed between them."""


@dataclass(slots=True)
class _LegState:
    """What the call knows of one leg."""

    invited_at: float | None = None
    ringing: bool = False
    answered_at: float | None = None
    ended: bool = True  # no SIP dialog or transaction to wait for
    hung_up: bool = False  # we sent CANCEL/BYE
    offer: sdp.SessionDescription | None = None
    negotiated: sdp.Negotiated | None = None
    early_media: bool = False
    code: int | None = None
    call_id: str = ""
    local: sdp.LocalSdp | None = None
    wants: sdp.Direction = sdp.Direction.SENDRECV
    """The direction the party itself asks for: what its own offers say, and what its answers to ours
    say where our offer left it free. mss offers each party the other's wish (holds from both sides
    merge) and forwards media in a direction only when the sender sends and the receiver receives."""
    reoffer_at: float | None = None
    """When our re-offer is sent again (after a glare), None when none waits."""
    reoffer_tries: int = 0
    """Re-offers sent again in a row on this leg (bounded by :data:`MAX_REOFFER_RETRIES`)."""
    given_key: str | None = None
    """SRTP: the a=crypto value mss last gave this phone (the other phone's key), None before."""
    keying: bool = False
    """SRTP: our re-INVITE carrying user2's key to user1 is under way; its failure ends the call."""


class CallbackCall:
    """One callback: user1, then user2, bridged, released."""

    __slots__ = (
        "_duration_deadline", "_forward", "_key_changes", "_last_media", "_pt_maps", "_release_deadline",
        "bridged_at",
        "duration",
        "legs", "released_at", "result", "settings", "state", "user1", "user2",
    )

    def __init__(self, *, user1: str, user2: str, duration: int, settings: CallSettings) -> None:
        self.user1 = user1
        self.user2 = user2
        self.duration = duration
        self.settings = settings
        self.state = CallState.CALLING_USER1
        self.legs: dict[User, _LegState] = {"user1": _LegState(), "user2": _LegState()}
        self.bridged_at: float | None = None
        self.released_at: float | None = None
        self.result: SendResponse | None = None
        self._duration_deadline: float | None = None
        self._release_deadline: float | None = None
        self._last_media: dict[User, float] = {"user1": 0.0, "user2": 0.0}
        self._pt_maps: tuple[dict[int, int], dict[int, int]] = ({}, {})
        self._forward = (False, False)  # the relay's forwarding (a to b, b to a) while bridged
        self._key_changes = 0  # SRTP: re-INVITEs sent to carry a changed key (MAX_KEY_CHANGES)

    # --- state -----------------------------------------------------------------------------------

    def _set_state(self, new: CallState) -> None:
        if new not in _TRANSITIONS[self.state]:
            raise LocalProtocolError(f"callback call cannot go from {self.state.value} to {new.value}")
        self.state = new

    @property
    def codec(self) -> str | None:
        """The codec user1 chose, once known."""
        n = self.legs["user1"].negotiated
        return n.codec.name if n else None

    # --- start -----------------------------------------------------------------------------------

    def start(self, now: float) -> list[Command]:
        """Call user1."""
        s = self.settings
        # Made with the o= line LocalSdp stamps first (version = the numeric session id, as pjmedia
        # does), so that stamping it copies nothing.
        crypto = [sdp.placeholder_crypto().value] if s.srtp else []
        offer = sdp.make_offer(
            host=s.media_host, port=s.a_port, codecs=s.codecs, session_id=s.session_id, version=s.session_id,
            crypto=crypto,
        )
        self.legs["user1"].given_key = crypto[0] if crypto else None
        return self._invite("user1", self.user1, offer, now)

    def _invite(self, leg: User, user: str, offer: sdp.SessionDescription, now: float) -> list[Command]:
        state = self.legs[leg]
        state.local = sdp.LocalSdp(session_id=self.settings.session_id)
        state.offer = state.local.stamp(offer)
        state.invited_at = now
        state.ended = False
        return [_invite(leg=leg, user=user, sdp=bytes(state.offer))]

    # --- events ----------------------------------------------------------------------------------

    def handle(self, event: LegEvent, now: float) -> list[Command]:
        """Feed one leg event; returns the commands it calls for.

        An event for a leg that was never invited cannot come from the SIP side: it raises
        :class:`~mss.errors.LocalProtocolError` and changes nothing.
        """
        if self.legs[event.leg].invited_at is None:
            raise LocalProtocolError(f"{event.leg} was never invited")
        if isinstance(event, Progress):
            return self._progress(event)
        if isinstance(event, Answered):
            return self._answered(event, now)
        if isinstance(event, Failed):
            return self._failed(event, now)
        if isinstance(event, Ended):
            return self._ended(event, now)
        if isinstance(event, ReinviteResult):
            return self._reinvite_result(event, now)
        if isinstance(event, RemoteAnswer):
            return self._answer_to_us(event.leg, event.sdp, now)
        return self._offer(event, now)

    def _progress(self, event: Progress) -> list[Command]:
        leg = self.legs[event.leg]
        if self.state in (CallState.RELEASING, CallState.DONE) or leg.answered_at is not None:
            return []
        commands: list[Command] = []
        if not leg.ringing and self.settings.progress_events:
            commands.append(_NOTIFY["user1_ringing" if event.leg == "user1" else "user2_ringing"])
        leg.ringing = True
        if event.leg != "user2" or event.sdp is None or self.state is not CallState.CALLING_USER2:
            return commands
        if self.settings.srtp:
            return commands  # user1 cannot decrypt user2's early media: it has not user2's key yet
        assert leg.offer is not None
        try:
            early = sdp.read_answer(leg.offer, sdp.parse_sdp(event.sdp))
        except SdpError:
            return commands  # unusable early media: keep the local ringback
        commands.append(self._remote("user2", early))
        if not leg.early_media:
            leg.early_media = True
            # user2's early media replaces our ringback (SPEC.md "The job", 3).
            commands += [_STOP_RINGBACK, _FORWARD[False, True]]
        return commands

    def _answered(self, event: Answered, now: float) -> list[Command]:
        leg = self.legs[event.leg]
        if leg.answered_at is not None:
            # A 2xx retransmission (RFC 6026 passes them up) or another fork's 2xx: the SIP side
            # ACKs (and ends) it; the call already has its answer.
            return []
        leg.call_id = event.call_id or leg.call_id
        leg.code = 200
        leg.answered_at = now
        leg.ended = False
        if self.state in (CallState.RELEASING, CallState.DONE) or leg.hung_up:
            # Answered after we gave up on it (the 2xx crossed our CANCEL): hang it up.
            leg.hung_up = True
            return [_HANGUP[event.leg]]
        assert leg.offer is not None
        try:
            if event.sdp is None:
                raise SdpError("the 2xx carries no SDP answer")
            negotiated = sdp.read_answer(leg.offer, sdp.parse_sdp(event.sdp))
        except SdpError as exc:
            leg.code = 488
            return self._release(
                now, result=_LEG_RESULT[event.leg]["failed"], code=488, by="mss",
                reason=f"{event.leg} answered with unusable SDP: {exc.reason}",
            )
        leg.negotiated = negotiated
        leg.wants = negotiated.remote_direction
        if event.leg == "user1":
            return self._user1_answered(negotiated, now)
        return self._user2_answered(negotiated, now)

    def _user1_answered(self, n1: sdp.Negotiated, now: float) -> list[Command]:
        self._set_state(CallState.CALLING_USER2)
        self._duration_deadline = now + self.duration
        s = self.settings
        commands: list[Command] = [_NOTIFY["user1_answered"]] if s.progress_events else []
        commands.append(self._remote("user1", n1))
        ptime = n1.ptime if n1.ptime in (10, 20, 30, 40) else 20
        # No ringback on SRTP: the relay cannot encrypt a tone (user1 hears silence while user2 rings).
        if n1.codec.name.upper() in ("PCMU", "PCMA", "G729") and not s.srtp:  # G.729: silent without bcg729
            commands.append(_relay_play(leg="user1", codec=n1.codec.name.upper(), payload_type=n1.remote_pt,
                                      ptime=ptime))
        crypto = [] if n1.crypto is None else [n1.crypto]
        offer = sdp.make_bridge_offer(n1, host=s.media_host, port=s.b_port, session_id=s.session_id,
                                      version=s.session_id, crypto=crypto)
        self.legs["user2"].given_key = n1.crypto
        return commands + self._invite("user2", self.user2, offer, now)

    def _user2_answered(self, n2: sdp.Negotiated, now: float) -> list[Command]:
        n1 = self.legs["user1"].negotiated
        assert n1 is not None
        try:
            a_to_b, b_to_a = sdp.pt_mapping(n1, n2)
        except SdpError as exc:
            self.legs["user2"].code = 488
            return self._release(now, result="user2_failed", code=488, by="mss",
                                 reason=f"user2 answered another codec: {exc.reason}")
        srtp = self.settings.srtp
        if srtp and (a_to_b or b_to_a):
            self.legs["user2"].code = 488
            return self._release(now, result="user2_failed", code=488, by="mss",
                                 reason=f"user2 answered payload types other than user1's ({b_to_a}); SRTP "
                                        "packets cannot be rewritten")
        self._set_state(CallState.BRIDGED)
        self.bridged_at = now
        self._last_media = {"user1": now, "user2": now}
        self._pt_maps = a_to_b, b_to_a
        self._forward = (True, True)
        commands: list[Command] = [
            self._remote("user2", n2),
            _STOP_RINGBACK,
            _relay_bridge(a_to_b=a_to_b, b_to_a=b_to_a, srtp=srtp),  # maps checked just above
            *self._forwarding(),  # a party that answered on hold
            _MARK_BRIDGED,
        ]
        if self.settings.progress_events:
            commands.append(_NOTIFY["bridged"])
        if srtp:
            # user1 has only mss's placeholder key for what it receives: give it user2's.
            self.legs["user1"].keying = True
            commands.append(Reinvite(leg="user1", sdp=self._reoffer("user1", self.legs["user2"].wants)))
            if not _same_key(self.legs["user2"].given_key, n1.crypto):  # user1 changed its key meanwhile
                commands.append(Reinvite(leg="user2", sdp=self._reoffer("user2", self.legs["user1"].wants)))
        return commands

    def _failed(self, event: Failed, now: float) -> list[Command]:
        leg = self.legs[event.leg]
        leg.call_id = event.call_id or leg.call_id
        leg.ended = True
        if leg.code is None:
            leg.code = event.status
        if self.state in (CallState.RELEASING, CallState.DONE):
            return self._maybe_done()
        status = event.status
        kind: _LegOutcome
        if status in _BUSY:
            kind = "busy"
        elif status in _REJECTED:
            kind = "rejected"
        elif leg.ringing and status in _NO_ANSWER_AFTER_RINGING:
            kind = "no_answer"
        else:
            kind = "failed"
        what = f"{event.leg} {status} {event.reason}".rstrip()
        return self._release(now, result=_LEG_RESULT[event.leg][kind], code=status, by=event.leg,
                             reason=f"{what}")

    def _ended(self, event: Ended, now: float) -> list[Command]:
        leg = self.legs[event.leg]
        was_ended = leg.ended
        leg.ended = True
        if self.state in (CallState.RELEASING, CallState.DONE):
            return self._maybe_done()
        if was_ended:
            return []
        result: Result = "answered" if self.state is CallState.BRIDGED else _LEG_RESULT[event.leg]["failed"]
        if self.state is CallState.CALLING_USER2 and event.leg == "user1":
            result = "cancelled"  # user1 gave up while user2 rang
        return self._release(now, result=result, code=0, by=event.leg,
                             reason=f"{event.leg} hung up" if event.by_remote else f"{event.leg} ended")

    def _offer(self, event: OfferReceived, now: float) -> list[Command]:
        leg = self.legs[event.leg]
        live = self.state in (CallState.CALLING_USER2, CallState.BRIDGED)
        if leg.answered_at is None or leg.negotiated is None or not live:
            if leg.local is not None and leg.local.last is not None and self.state is not CallState.DONE:
                return [AnswerOffer(leg=event.leg, sdp=bytes(leg.local.last))]
            return [AnswerOffer(leg=event.leg, sdp=None)]
        s = self.settings
        port = s.a_port if event.leg == "user1" else s.b_port
        before = leg.negotiated
        # While user2 still rings only user1 is up: its offer moves its own media, nothing else.
        bridged = self.state is CallState.BRIDGED
        other = self.legs[_OTHER[event.leg]]
        try:
            answer, negotiated = sdp.make_answer(
                sdp.parse_sdp(event.sdp), host=s.media_host, port=port, codecs=[before.codec.name],
                session_id=s.session_id, version=1,
                # What the other party wants is what mss can do on this leg (holds merge).
                direction=other.wants if bridged else sdp.Direction.SENDRECV,
                # SRTP: our answer carries the key the other phone sends with (mss's placeholder
                # while user2 rings: nothing reaches user1 then); an RTP/AVP offer gets 488.
                crypto=leg.given_key if s.srtp else None,
            )
            pt_maps = self._pt_mapping(event.leg, negotiated) if bridged else None
        except SdpError:
            return [AnswerOffer(leg=event.leg, sdp=None)]
        assert leg.local is not None
        if s.srtp:
            leg.given_key = _answered_key(answer)
        commands: list[Command] = [AnswerOffer(leg=event.leg, sdp=bytes(leg.local.stamp(answer)))]
        return commands + self._renegotiated(event.leg, negotiated, pt_maps, negotiated.remote_direction, now)

    def _reinvite_result(self, event: ReinviteResult, now: float) -> list[Command]:
        """The far end's final answer to our re-INVITE on a leg."""
        leg = self.legs[event.leg]
        if self.state is not CallState.BRIDGED:
            return []
        if 200 <= event.status < 300:
            leg.reoffer_tries = 0
            keying, leg.keying = leg.keying, False
            if keying and event.sdp is None:
                return self._keying_failed(event.leg, event.status, "the 2xx carries no SDP answer", now)
            return [] if event.sdp is None else self._answer_to_us(event.leg, event.sdp, now, keying=keying)
        if event.status in _RETRY_REOFFER and leg.reoffer_tries < MAX_REOFFER_RETRIES:
            # RFC 3261 §14.1: "If the UAC is the owner of the Call-ID of the dialog ID (meaning it
            # generated the value), T has a randomly chosen value between 2.1 and 4 seconds". mss made
            # both dialogs; the session id spreads the calls over that range.
            leg.reoffer_tries += 1
            leg.reoffer_at = now + 2.1 + (self.settings.session_id % 1901) / 1000
            return []
        # RFC 3261 §14.1: after another non-2xx "the session parameters MUST remain unchanged": the
        # leg keeps its media as it was; the relay's forwarding already follows both parties' wishes.
        leg.reoffer_tries = 0
        if leg.keying:
            leg.keying = False
            return self._keying_failed(event.leg, event.status, "the re-INVITE was refused", now)
        return []

    def _keying_failed(self, name: User, status: int, what: str, now: float) -> list[Command]:
        """user1 could not be given user2's SRTP key: it would never decrypt user2, so release."""
        self.legs[name].code = status
        return self._release(now, result=_LEG_RESULT[name]["failed"], code=status, by="mss",
                             reason=f"SRTP keys could not be passed to {name}: {status}, {what}")

    def _answer_to_us(self, name: User, body: bytes, now: float, *, keying: bool = False) -> list[Command]:
        """The far end answered our last offer on leg ``name`` (in a 2xx to our re-INVITE, or in the
        ACK of an offerless re-INVITE): move the relay as the answer says."""
        leg = self.legs[name]
        ours = leg.local.last if leg.local is not None else None
        if self.state is not CallState.BRIDGED or leg.negotiated is None or ours is None:
            return []
        try:
            negotiated = sdp.read_answer(ours, sdp.parse_sdp(body))
            pt_maps = self._pt_mapping(name, negotiated)
            if self.settings.srtp and (pt_maps[0] or pt_maps[1]):
                raise SdpError(f"payload types {pt_maps} would need a rewrite of SRTP packets")
        except SdpError as exc:
            if keying:
                return self._keying_failed(name, 488, f"unusable answer: {exc.reason}", now)
            return []  # an unusable answer changes nothing: the leg keeps its media as it was
        # Where our offer left the party free (a direction we would take), its answer says what it
        # wants; where it did not, its answer says nothing of its own wish.
        free = negotiated.local_direction.reverse()
        said = negotiated.remote_direction
        wants = sdp.Direction.from_flags(
            send=said.sends if free.sends else leg.wants.sends,
            receive=said.receives if free.receives else leg.wants.receives,
        )
        return self._renegotiated(name, negotiated, pt_maps, wants, now)

    def _pt_mapping(self, name: User, negotiated: sdp.Negotiated) -> tuple[dict[int, int], dict[int, int]]:
        """The relay's payload-type rewrites once leg ``name`` agreed on ``negotiated``."""
        legs = {name: negotiated, _OTHER[name]: self.legs[_OTHER[name]].negotiated}
        n1, n2 = legs["user1"], legs["user2"]
        assert n1 is not None and n2 is not None
        return sdp.pt_mapping(n1, n2)

    def _renegotiated(
        self, name: User, negotiated: sdp.Negotiated, pt_maps: tuple[dict[int, int], dict[int, int]] | None,
        wants: sdp.Direction, now: float,
    ) -> list[Command]:
        """Leg ``name`` agreed on ``negotiated`` anew and its party wants ``wants``: move the relay's
        remote, rewrites and forwarding, and offer the other party the new wish."""
        leg = self.legs[name]
        before = leg.negotiated
        assert before is not None
        was_held = self._held()
        was_wants = leg.wants
        leg.negotiated = negotiated
        leg.wants = wants
        commands: list[Command] = []
        where = negotiated.remote_address, negotiated.remote_port
        moved = where != (before.remote_address, before.remote_port)
        if moved and negotiated.remote_address not in _NULL_ADDRESSES:
            # An RFC 2543 hold (c=0.0.0.0) is a direction, not a place: sending there would reach
            # this host itself, so the relay keeps the old remote.
            commands.append(self._remote(name, negotiated))
        if pt_maps is None:
            return commands
        if pt_maps != self._pt_maps:
            # The phone numbered its payload types (telephone-event, typically) anew: RTP it sends
            # now carries the numbers of our SDP (RFC 3264 §5.1), so rewrite them.
            self._pt_maps = pt_maps
            commands.append(RelayBridge(a_to_b=pt_maps[0], b_to_a=pt_maps[1]))
            self._forward = (True, True)  # what a bridge does
        commands += self._forwarding()
        if self._held() != was_held:
            # No RTP was due while on hold: count the inactivity afresh from the change.
            self._last_media = {"user1": now, "user2": now}
        other_leg = self.legs[_OTHER[name]]
        rekey = self.settings.srtp and not _same_key(other_leg.given_key, negotiated.crypto)
        if rekey:
            # The phone sends with a new key now: the other phone must have it to decrypt.
            self._key_changes += 1
            if self._key_changes > MAX_KEY_CHANGES:
                return commands + self._release(
                    now, result="answered", code=0, by="mss",
                    reason=f"the phones changed their SRTP keys more than {MAX_KEY_CHANGES} times",
                )
        if wants != was_wants or rekey:
            # Offer the other party the new wish so its media follows (RFC 3264 §8.4).
            other = _OTHER[name]
            self.legs[other].reoffer_at = None  # this offer supersedes one waiting to be sent again
            self.legs[other].reoffer_tries = 0
            commands.append(Reinvite(leg=other, sdp=self._reoffer(other, wants)))
        return commands

    def _forwarding(self) -> list[Command]:
        """A :class:`RelayForward` when the parties' wishes change what the relay should forward: a
        direction flows only when its sender sends and its receiver receives."""
        w1, w2 = self.legs["user1"].wants, self.legs["user2"].wants
        forward = (w1.sends and w2.receives, w2.sends and w1.receives)
        if forward == self._forward:
            return []
        self._forward = forward
        return [_FORWARD[forward]]

    def _reoffer(self, name: User, direction: sdp.Direction) -> bytes:
        """Our new offer on established leg ``name``: only the codec and telephone-event it agreed on,
        under our numbers, with ``direction``.

        Not our first offer again: that one lists every ``audio_codecs`` entry for user1, and the
        other leg's codec is fixed (media passes untouched), so this leg must not pick another.
        """
        state = self.legs[name]
        n = state.negotiated
        assert n is not None and state.local is not None
        ours = replace(n, remote_pt=n.local_pt, remote_te_pt=n.local_te_pt)
        s = self.settings
        # SRTP: the key the other phone sends with, verbatim, so that this one decrypts it.
        key = self.legs[_OTHER[name]].negotiated
        crypto = [key.crypto] if s.srtp and key is not None and key.crypto is not None else []
        offer = sdp.make_bridge_offer(
            ours, host=s.media_host, port=s.a_port if name == "user1" else s.b_port,
            session_id=s.session_id, version=1, direction=direction, crypto=crypto,
        )
        if crypto:
            state.given_key = crypto[0]
        return bytes(state.local.stamp(offer))

    def _remote(self, leg: User, n: sdp.Negotiated) -> RelayRemote:
        return _relay_remote(leg=leg, host=n.remote_address, port=n.remote_port,
                           rtcp_port=n.remote_rtcp_port)

    # --- the AS, shutdown and media ------------------------------------------------------------

    def cancel(self, now: float) -> list[Command]:
        """The AS sent CANCEL."""
        if self.state in (CallState.RELEASING, CallState.DONE):
            return []
        return self._release(now, result="cancelled", code=0, by="as", reason="cancelled by the AS")

    def shutdown(self, now: float) -> list[Command]:
        """mss is stopping and the drain grace is over."""
        if self.state in (CallState.RELEASING, CallState.DONE):
            return []
        return self._release(now, result="shutdown", code=0, by="mss", reason="mss shut down")

    def media_seen(self, last_rx: dict[User, float | None]) -> None:
        """The relay's last receive time (monotonic) per leg, read while bridged when a timer of the call is
        due."""
        for leg, at in last_rx.items():
            if at is not None and at > self._last_media[leg]:
                self._last_media[leg] = at

    # --- timers ----------------------------------------------------------------------------------

    def get_timer(self) -> float | None:
        """The next time :meth:`handle_timer` must run, or None."""
        # Read after every step (the adapter re-arms the call's timer): the earliest of _deadlines(),
        # without the dict (tests/test_callflow.py checks that the two agree).
        state = self.state
        if state is CallState.DONE:
            return None
        if state is CallState.RELEASING:
            return self._release_deadline
        earliest = self._duration_deadline
        bridged = state is CallState.BRIDGED
        for leg in self.legs.values():
            if leg.invited_at is not None and leg.answered_at is None and not leg.ended:
                at = leg.invited_at + self.settings.ring_timeout
                if earliest is None or at < earliest:
                    earliest = at
            if bridged and leg.reoffer_at is not None and (earliest is None or leg.reoffer_at < earliest):
                earliest = leg.reoffer_at
        if bridged and self.settings.inactivity_timeout > 0 and not self._held():
            at = min(self._last_media.values()) + self.settings.inactivity_timeout
            if earliest is None or at < earliest:
                earliest = at
        return earliest

    def _deadlines(self) -> dict[Timer, float | None]:
        # Read by handle_timer (get_timer finds the earliest alone): plain loops and locals.
        state = self.state
        if state is CallState.DONE:
            return {}
        if state is CallState.RELEASING:
            return {Timer.RELEASE: self._release_deadline}
        d: dict[Timer, float | None] = {Timer.DURATION: self._duration_deadline}
        bridged = state is CallState.BRIDGED
        ring_timeout = self.settings.ring_timeout
        for name, leg in self.legs.items():
            if leg.invited_at is not None and leg.answered_at is None and not leg.ended:
                d[_RING_TIMER[name]] = leg.invited_at + ring_timeout
            if bridged and leg.reoffer_at is not None:
                d[_REOFFER_TIMER[name]] = leg.reoffer_at
        if bridged and self.settings.inactivity_timeout > 0 and not self._held():
            d[Timer.MEDIA] = min(self._last_media.values()) + self.settings.inactivity_timeout
        return d

    def _held(self) -> bool:
        # A held leg may legitimately send nothing; so may the leg facing it, and any party that said
        # it does not send (recvonly, inactive).
        for state in self.legs.values():
            n = state.negotiated
            if n is not None and (n.hold or not n.remote_direction.sends):
                return True
        return False

    def handle_timer(self, now: float) -> list[Command]:
        """Run whatever timer is due.

        A release by a timer counts the talk time up to the timer's deadline, not up to ``now``: a loop
        running late must not lengthen (or, for a short call, zero) ``real_duration``.
        """
        due = sorted((d, name) for name, d in self._deadlines().items() if d is not None and d <= now)
        if not due:
            return []
        deadline, name = due[0]
        if name is Timer.RELEASE:
            for leg in self.legs.values():
                leg.ended = True
            return self._maybe_done()
        if name is Timer.DURATION:
            if self.state is CallState.BRIDGED:
                return self._release(now, result="answered", code=0, by="mss",
                                     reason=f"duration of {self.duration}s reached", talk_end=deadline)
            result: Result = "user2_no_answer" if self.state is CallState.CALLING_USER2 else "user1_no_answer"
            return self._release(now, result=result, code=0, by="mss",
                                 reason=f"duration of {self.duration}s reached before user2 answered")
        again = _REOFFERING.get(name)
        if again is not None:
            self.legs[again].reoffer_at = None
            return [Reinvite(leg=again, sdp=self._reoffer(again, self.legs[_OTHER[again]].wants))]
        who = _RINGING.get(name)
        if who is not None:
            return self._release(now, result=_LEG_RESULT[who]["no_answer"], code=0, by="mss",
                                 reason=f"{who} did not answer in {self.settings.ring_timeout:g}s")
        silent = min(self._last_media, key=lambda leg: self._last_media[leg])
        return self._release(now, result="media_timeout", code=0, by="mss",
                             reason=f"no RTP from {silent} for {self.settings.inactivity_timeout:g}s",
                             talk_end=deadline)

    # --- release ---------------------------------------------------------------------------------

    def _release(
        self, now: float, *, result: Result, code: int, by: ReleasedBy, reason: str,
        talk_end: float | None = None,
    ) -> list[Command]:
        """Hang up every leg still up, send the RESPONSE, wait for the legs to end.

        The talk time runs from the bridge to ``talk_end`` (a due timer's deadline), else to ``now``.
        """
        self.released_at = now
        talk = 0
        if self.bridged_at is not None:
            end = now if talk_end is None else min(now, talk_end)
            talk = max(0, int(end - self.bridged_at + 0.5))
        self.result = _send_response(real_duration=talk, result=result, code=code, released_by=by,
                                   reason=reason)
        commands: list[Command] = []
        for name in ("user2", "user1"):
            leg = self.legs[name]
            if not leg.ended and not leg.hung_up:
                leg.hung_up = True
                commands.append(_HANGUP[name])
        commands += [_FORWARD_NONE, _STOP_RINGBACK, self.result]
        if self._all_ended():
            self._set_state(CallState.DONE)
            commands.append(_FINISHED)
        else:
            self._set_state(CallState.RELEASING)
            self._release_deadline = now + RELEASE_GUARD
        return commands

    def _all_ended(self) -> bool:
        legs = self.legs  # the two legs, named (a generator over them costs more than the test)
        return legs["user1"].ended and legs["user2"].ended

    def _maybe_done(self) -> list[Command]:
        if self.state is CallState.RELEASING and self._all_ended():
            self._set_state(CallState.DONE)
            return [_FINISHED]
        return []
