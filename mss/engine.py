"""The call engine's pure part, sans-IO: what ties the SIP user agent, the call flow and the relay
together. :mod:`mss.aio.calls` keeps the sockets, the timers and the relay handle, and calls this.

- :class:`LegRef` names one leg of one callback in the user agent (its ``leg_id``);
  :data:`RELAY_LEG` is the one map from a call-flow leg to the relay's leg facing it.
- :func:`flow_event` turns a user-agent event into a call-flow event; :func:`call_settings` makes a
  call's settings from the config and its relay ports.
- :func:`carry_out_sip` and :func:`carry_out_relay` carry out the call flow's commands on the
  (sans-IO) user agent and on a relay session; :class:`CallRecord` keeps what the CDR needs (answer
  times, jitter samples) and builds the callback's :class:`~mss.desk.Outcome` once, with each
  answered leg's media quality (:mod:`mss.quality`) from the relay session's last statistics.

``now`` is monotonic seconds (the call flow's and the user agent's clock); ``wall`` is
:func:`time.time` (the CDR's clock). Both are arguments.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, SupportsInt

from mss import callflow as cf
from mss import quality, tones
from mss.callflow import USERS, User
from mss.desk import Outcome
from mss.errors import LocalProtocolError
from mss.frozen import trusted
from mss.journal import Cdr
from mss.ratelog import RateLimitedLog
from mss.sip import events as ua

if TYPE_CHECKING:
    from mss.config import Config
    from mss.relay import LegName as RelayLeg
    from mss.relay import SessionStats
    from mss.sip.ua import UserAgent

__all__ = [
    "RELAY_LEG",
    "CallRecord",
    "LegRef",
    "RelayCommand",
    "RelayVerbs",
    "SipCommand",
    "call_settings",
    "carry_out_relay",
    "carry_out_sip",
    "flow_event",
    "jitter_ms",
    "last_rx",
]

# A failure while the CDR's media quality is worked out costs the CDR its quality, never the
# callback its RESPONSE; said at most once per interval (a bug would hit every callback).
_quality_log = RateLimitedLog(logging.getLogger("mss.call"))

#: The relay leg facing each party: ``a`` faces user1, ``b`` user2 (the relay's counter rows are in
#: this order too).
RELAY_LEG: Mapping[User, RelayLeg] = {"user1": "a", "user2": "b"}

#: The call flow's commands for the SIP user agent.
SipCommand = cf.Invite | cf.Hangup | cf.AnswerOffer | cf.Reinvite

#: The call flow's commands for the relay.
RelayCommand = cf.RelayRemote | cf.RelayPlay | cf.RelayStopPlay | cf.RelayForward | cf.RelayBridge


@dataclass(frozen=True, slots=True, kw_only=True)
class LegRef:
    """One leg of one callback: the ``leg_id`` the engine gives the SIP user agent."""

    seq: int
    """The callback's journal sequence number (:attr:`mss.desk.Callback.seq`)."""
    leg: User
    """Which of its legs."""

    def __post_init__(self) -> None:
        if self.seq < 0:
            raise LocalProtocolError(f"LegRef.seq must not be negative, not {self.seq}")
        if self.leg not in USERS:
            raise LocalProtocolError(f"LegRef.leg must be user1 or user2, not {self.leg!r}")

    def __str__(self) -> str:
        return f"{self.seq}.{self.leg}"


# --- SIP side -------------------------------------------------------------------------------------


# The call-flow events made from the user agent's: their fields are the user agent's, checked when
# its events were built (a leg of a LegRef, a 1xx other than 100, a final status of 200-699), so
# they are built without the generated __init__ (one object.__setattr__ per field).
_progress = trusted(cf.Progress)
_answered = trusted(cf.Answered)
_failed = trusted(cf.Failed)
_ended = trusted(cf.Ended)
_offer = trusted(cf.OfferReceived)
_reinvite_result = trusted(cf.ReinviteResult)
_remote_answer = trusted(cf.RemoteAnswer)


def _from_progress(leg: User, event: ua.LegProgress) -> cf.LegEvent | None:
    if event.status == 100:
        return None  # the PSS took the INVITE; nothing for the call flow
    return _progress(leg=leg, status=event.status, sdp=event.sdp)


def _from_answered(leg: User, event: ua.LegAnswered) -> cf.LegEvent:
    return _answered(leg=leg, sdp=event.sdp or None, call_id=event.call_id)


def _from_failed(leg: User, event: ua.LegFailed) -> cf.LegEvent:
    return _failed(leg=leg, status=event.status, reason=event.reason, call_id=event.call_id)


def _from_ended(leg: User, event: ua.LegEnded) -> cf.LegEvent:
    return _ended(leg=leg, by_remote=event.by_remote)


def _from_offer(leg: User, event: ua.LegOffer) -> cf.LegEvent:
    return _offer(leg=leg, sdp=event.sdp)


def _from_reinvite_result(leg: User, event: ua.LegReinviteResult) -> cf.LegEvent:
    return _reinvite_result(leg=leg, status=event.status, sdp=event.sdp)


def _from_remote_answer(leg: User, event: ua.LegRemoteAnswer) -> cf.LegEvent:
    return _remote_answer(leg=leg, sdp=event.sdp)


#: The call-flow event of each user-agent event of a leg (one look-up per event, not a chain of
#: isinstance tests).
_TO_FLOW: dict[type, Callable[[User, Any], cf.LegEvent | None]] = {
    ua.LegProgress: _from_progress,
    ua.LegAnswered: _from_answered,
    ua.LegFailed: _from_failed,
    ua.LegEnded: _from_ended,
    ua.LegOffer: _from_offer,
    ua.LegReinviteResult: _from_reinvite_result,
    ua.LegRemoteAnswer: _from_remote_answer,
}


def _to_flow(kind: type) -> Callable[[User, Any], cf.LegEvent | None] | None:
    """The entry of :data:`_TO_FLOW` for ``kind`` or the class it derives from (LegRinging is a
    LegProgress); None for an event that means nothing to a call."""
    for base in kind.__mro__:
        found = _TO_FLOW.get(base)
        if found is not None:
            _TO_FLOW[kind] = found  # a subclass: found at once next time (a handful of classes)
            return found
    return None


def flow_event(event: ua.UAEvent) -> tuple[LegRef, cf.LegEvent] | None:
    """The call-flow event a user-agent event means, with the leg it is for; None when it means
    nothing to a call (registration events, 100 Trying, a leg the engine did not name)."""
    to_flow = _TO_FLOW.get(type(event)) or _to_flow(type(event))
    if to_flow is None:
        return None
    ref = event.leg_id  # type: ignore[union-attr]  # every event of _TO_FLOW has one
    if not isinstance(ref, LegRef):
        return None
    flow = to_flow(ref.leg, event)
    return None if flow is None else (ref, flow)


_leg_ref = trusted(LegRef)


def carry_out_sip(agent: UserAgent, seq: int, command: SipCommand, now: float) -> None:
    """Carry out a SIP command of callback ``seq``'s call flow on the user agent."""
    if seq < 0:  # LegRef's own check; the leg is a command's (a User), so that check cannot fail
        raise LocalProtocolError(f"LegRef.seq must not be negative, not {seq}")
    ref = _leg_ref(seq=seq, leg=command.leg)
    if isinstance(command, cf.Invite):
        agent.invite(ref, command.user, command.sdp, now)
    elif isinstance(command, cf.Hangup):
        agent.hangup(ref, now)
    elif isinstance(command, cf.AnswerOffer):
        if command.sdp is None:
            agent.reject_offer(ref, now)
        else:
            agent.answer_offer(ref, command.sdp, now)
    else:
        agent.reinvite(ref, command.sdp, now)


# --- relay side -----------------------------------------------------------------------------------


class RelayVerbs(Protocol):
    """The verbs of a relay session the call flow's commands use (:class:`mss.relay.RelaySession`)."""

    @property
    def closed(self) -> bool:
        """True once the session is closed."""
        ...

    def set_remote(self, leg: RelayLeg, host: str, port: int, rtcp_port: int | None = None) -> None:
        """Where ``leg``'s media goes (and comes from)."""
        ...

    def relatch(self, leg: RelayLeg) -> None:
        """Learn ``leg``'s source again."""
        ...

    def play(
        self,
        leg: RelayLeg,
        frames: bytes,
        *,
        frame_bytes: int,
        payload_type: int,
        ptime_ms: int,
        samples_per_frame: int,
    ) -> None:
        """Play ``frames`` into ``leg`` as RTP, looping."""
        ...

    def stop_play(self, leg: RelayLeg) -> None:
        """Stop playing into ``leg``."""
        ...

    def set_forwarding(self, *, a_to_b: bool, b_to_a: bool) -> None:
        """Forwarding per direction."""
        ...

    def set_pt_rewrite(self, from_leg: RelayLeg, mapping: dict[int, int]) -> None:
        """Payload types rewritten on packets from ``from_leg``."""
        ...

    def bridge(self) -> None:
        """Forward both ways."""
        ...


def last_rx(row: Iterable[SupportsInt]) -> dict[User, float | None]:
    """Each party's last RTP receive time (monotonic seconds, None before the first packet) from
    the relay's ``last_rx_ns`` counters of a session: one per relay leg, in :data:`RELAY_LEG`'s
    order, 0 before the first packet."""
    return {user: int(ns) / 1e9 if ns else None for user, ns in zip(RELAY_LEG, row, strict=True)}


#: The relay keeps RFC 3550's jitter estimate as ``J * 16`` (A.8) in 8 kHz timestamp units, 8 a
#: millisecond: one unit of its counter is 1/128 ms.
_JITTER_Q4_PER_MS = 16 * 8


def jitter_ms(row: Iterable[SupportsInt]) -> dict[User, float]:
    """Each party's RFC 3550 jitter estimate in milliseconds from the relay's ``jitter_q4`` counters
    of a session (one per relay leg, in :data:`RELAY_LEG`'s order)."""
    return {user: int(q4) / _JITTER_Q4_PER_MS for user, q4 in zip(RELAY_LEG, row, strict=True)}


def carry_out_relay(session: RelayVerbs, command: RelayCommand) -> None:
    """Carry out a relay command of the call flow on ``session`` (nothing once it is closed)."""
    if session.closed:
        return
    if isinstance(command, cf.RelayRemote):
        leg = RELAY_LEG[command.leg]
        session.set_remote(leg, command.host, command.port, command.rtcp_port)
        session.relatch(leg)
    elif isinstance(command, cf.RelayPlay):
        frames, size = tones.ringback_play(command.codec, command.ptime)
        if frames:
            samples = command.ptime * tones.SAMPLE_RATE // 1000  # the RTP clock: 8 kHz, G.711 and G.729
            session.play(RELAY_LEG[command.leg], frames, frame_bytes=size, payload_type=command.payload_type,
                         ptime_ms=command.ptime, samples_per_frame=samples)
    elif isinstance(command, cf.RelayStopPlay):
        session.stop_play(RELAY_LEG[command.leg])
    elif isinstance(command, cf.RelayForward):
        session.set_forwarding(a_to_b=command.a_to_b, b_to_a=command.b_to_a)
    else:
        session.set_pt_rewrite(RELAY_LEG["user1"], command.a_to_b)
        session.set_pt_rewrite(RELAY_LEG["user2"], command.b_to_a)
        session.bridge()


# --- a call ---------------------------------------------------------------------------------------


_call_settings = trusted(cf.CallSettings)


def call_settings(
    config: Config, *, a_port: int, b_port: int, session_id: int, progress_events: bool = False
) -> cf.CallSettings:
    """A call's settings: ``[callback]`` and ``[rtp]`` of ``config``, its relay ports, and whether its
    AS takes EVENT lines."""
    # Values of a checked config and of the relay (CallSettings checks nothing in __init__).
    return _call_settings(
        codecs=config.callback.audio_codecs,
        ring_timeout=config.callback.ring_timeout,
        inactivity_timeout=config.rtp.inactivity_timeout,
        media_host=config.rtp.advertised_host or config.rtp.host,
        a_port=a_port,
        b_port=b_port,
        session_id=session_id,
        progress_events=progress_events,
        srtp=config.rtp.srtp == "passthrough",
    )


# A callback's outcome and CDR, of fields the call flow and the engine made (neither class checks
# anything in __init__): built without the frozen __init__'s object.__setattr__ per field.
_cdr = trusted(Cdr)
_outcome = trusted(Outcome)


@dataclass(slots=True)
class CallRecord:
    """What the engine keeps of one callback beside its call flow: the answer times for the CDR,
    and whether the AS has its outcome (exactly one per callback)."""

    flow: cf.CallbackCall
    """The callback's call flow."""
    caller: str
    """The number presented in From (for the CDR)."""
    answered_wall: dict[User, float] = field(default_factory=dict)
    """Wall-clock time of each leg's answer."""
    reported: bool = False
    """True once :meth:`outcome` has made the callback's outcome."""
    jitter: dict[User, quality.JitterSamples] = field(
        default_factory=lambda: {user: quality.JitterSamples() for user in USERS}
    )
    """Samples of each party's jitter estimate (:meth:`sample_jitter`), for the CDR's mean and max."""

    def sample_jitter(self, jitter_q4: Iterable[SupportsInt], last_rx_ns: Iterable[SupportsInt]) -> None:
        """Take a sample of each party's jitter estimate from the relay's ``jitter_q4`` and
        ``last_rx_ns`` counters of the call's session (one per relay leg, in :data:`RELAY_LEG`'s
        order); a party that has sent nothing yet is not sampled.

        The engine calls it when the call's timer reads the relay while bridged (no poll of its
        own), and :meth:`outcome` takes a last sample from the session's final statistics.
        """
        seen = last_rx(last_rx_ns)
        for user, ms in jitter_ms(jitter_q4).items():
            if seen[user] is not None:
                self.jitter[user].add(ms)

    def _quality(self, user: User, stats: SessionStats | None) -> quality.LegQuality | None:
        """The CDR quality of ``user``'s leg: None when it was never answered or nothing is known."""
        if stats is None or user not in self.answered_wall:
            return None
        leg = stats.leg(RELAY_LEG[user])
        samples = self.jitter[user]
        if leg.rtp_packets_in:
            samples.add(leg.jitter_ms)  # the estimate at the release
        return quality.leg_quality(
            self.flow.codec,
            packets_in=leg.rtp_packets_in,
            bytes_in=leg.rtp_bytes_in,
            packets_out=leg.rtp_packets_out,
            bytes_out=leg.rtp_bytes_out,
            lost=leg.seq_gaps,
            jitter=samples,
        )

    def handle(self, event: cf.LegEvent, now: float, wall: float) -> list[cf.Command]:
        """Feed a leg event to the call flow (noting an answer's wall-clock time)."""
        if isinstance(event, cf.Answered):
            self.answered_wall[event.leg] = wall
        return self.flow.handle(event, now)

    def outcome(
        self, command: cf.SendResponse, wall: float, stats: SessionStats | None = None
    ) -> Outcome | None:
        """The callback's outcome with its CDR, released at ``wall``; None once it was made.

        ``stats``: the relay session's statistics read at the release, for each answered leg's
        quality (None: the CDR has no quality, as for unanswered legs).
        """
        if self.reported:
            return None
        self.reported = True
        try:
            leg1, leg2 = self._quality("user1", stats), self._quality("user2", stats)
        except Exception as exc:  # a bug here must not cost the AS its RESPONSE
            _quality_log.error("quality", "a CDR goes without media quality (%s: %s)",
                               type(exc).__name__, exc)
            leg1 = leg2 = None
        legs = self.flow.legs
        cdr = _cdr(
            caller=self.caller,
            leg1_call_id=legs["user1"].call_id or None,
            leg2_call_id=legs["user2"].call_id or None,
            leg1_code=legs["user1"].code,
            leg2_code=legs["user2"].code,
            codec=self.flow.codec,
            leg1_answered_at=self.answered_wall.get("user1"),
            leg2_answered_at=self.answered_wall.get("user2"),
            released_at=wall,
            released_by=command.released_by,
            result=command.result,
            reason=command.reason,
            leg1=leg1,
            leg2=leg2,
        )
        return _outcome(real_duration=command.real_duration, result=command.result, code=command.code,
                        cdr=cdr)
