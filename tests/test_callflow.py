"""The callback call flow, driven as the SIP side would drive it, on a fake clock.

Every test feeds leg events with realistic phone SDP (pjsua2 and trunk answers to the offers the call
flow made) and asserts the exact commands that come back. Timers run as the engine runs them: each at
its deadline, in order, until the clock reaches the time asked for.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mss.callflow import (
    RELEASE_GUARD,
    Answered,
    AnswerOffer,
    CallbackCall,
    CallSettings,
    CallState,
    Command,
    Ended,
    Failed,
    Finished,
    Hangup,
    Invite,
    LegEvent,
    MarkBridged,
    Notify,
    OfferReceived,
    Progress,
    Reinvite,
    ReinviteResult,
    RelayBridge,
    RelayForward,
    RelayPlay,
    RelayRemote,
    RelayStopPlay,
    RemoteAnswer,
    SendResponse,
)
from mss.errors import LocalProtocolError, MssError
from mss.iif import RESULTS
from mss.sdp import Direction, parse_sdp
from tests.helpers import FakeClock

SDP_DATA = Path(__file__).parent / "data" / "sdp"

T0 = 1000.0
SESSION = 3921400000
USER1 = "79001234567"
USER2 = "79007654321"

#: What every release does to the relay after hanging up the legs: stop forwarding and the ringback.
RELAY_OFF: list[Command] = [RelayForward(a_to_b=False, b_to_a=False), RelayStopPlay(leg="user1")]


def sdp_fixture(name: str) -> bytes:
    return (SDP_DATA / name).read_bytes()


def crlf(text: str) -> bytes:
    return "".join(f"{line}\r\n" for line in text.strip().splitlines()).encode()


#: The offer to user1 with ``audio_codecs = PCMU, PCMA, G729``: every codec in order, telephone-event at
#: 101, the relay's a-port.
OFFER_USER1 = crlf(f"""
v=0
o=- {SESSION} {SESSION} IN IP4 127.0.0.1
s=mss
c=IN IP4 127.0.0.1
t=0 0
m=audio 30000 RTP/AVP 0 8 18 101
a=rtpmap:0 PCMU/8000
a=rtpmap:8 PCMA/8000
a=rtpmap:18 G729/8000
a=rtpmap:101 telephone-event/8000
a=fmtp:101 0-16
a=ptime:20
a=sendrecv
""")


def offer_user2(pt: int, rtpmap: str, *, te_pt: int = 101, fmtp: str | None = None) -> bytes:
    """The offer to user2: only user1's codec (its payload type and fmtp) plus telephone-event, b-port."""
    fmtp_line = "" if fmtp is None else f"a=fmtp:{pt} {fmtp}\n"
    return crlf(
        f"v=0\no=- {SESSION} {SESSION} IN IP4 127.0.0.1\ns=mss\nc=IN IP4 127.0.0.1\nt=0 0\n"
        f"m=audio 30002 RTP/AVP {pt} {te_pt}\na=rtpmap:{pt} {rtpmap}\n{fmtp_line}"
        f"a=rtpmap:{te_pt} telephone-event/8000\na=fmtp:{te_pt} 0-16\na=ptime:20\na=sendrecv\n"
    )


_RTPMAP = {"PCMU": "PCMU/8000", "PCMA": "PCMA/8000", "G729": "G729/8000"}


def phone_answer(
    offer: bytes,
    *,
    codec: str = "PCMU",
    host: str = "127.0.0.2",
    port: int = 4002,
    te_pt: int | None = 101,
    direction: str = "sendrecv",
    ptime: int | None = None,
    session: int = 3921305012,
    version: int | None = None,
    fmtp: str | None = None,
) -> bytes:
    """The answer a pjsua2 phone writes to ``offer``: ``codec`` under the offer's payload type,
    telephone-event at ``te_pt`` (None: the phone does not do RFC 4733), its own address and RTCP port."""
    offered = parse_sdp(offer).media[0].codecs
    pt = next(pt for pt, c in offered.items() if c.name == codec)
    formats = f"{pt}" if te_pt is None else f"{pt} {te_pt}"
    lines = [
        "v=0",
        f"o=- {session} {session if version is None else version} IN IP4 {host}",
        "s=pjmedia",
        "b=AS:84",
        "t=0 0",
        "a=X-nat:0",
        f"m=audio {port} RTP/AVP {formats}",
        f"c=IN IP4 {host}",
        "b=TIAS:64000",
        f"a=rtcp:{port + 1} IN IP4 {host}",
        f"a={direction}",
        f"a=rtpmap:{pt} {_RTPMAP[codec]}",
    ]
    if fmtp is not None:
        lines.append(f"a=fmtp:{pt} {fmtp}")
    if te_pt is not None:
        lines += [f"a=rtpmap:{te_pt} telephone-event/8000", f"a=fmtp:{te_pt} 0-16"]
    if ptime is not None:
        lines.append(f"a=ptime:{ptime}")
    lines.append("a=ssrc:840713942 cname:5d1a7f2c0b6e4a39")
    return crlf("\n".join(lines))


def make_settings(**kw: Any) -> CallSettings:
    args: dict[str, Any] = {
        "codecs": ("PCMU", "PCMA", "G729"),
        "ring_timeout": 45.0,
        "inactivity_timeout": 60.0,
        "media_host": "127.0.0.1",
        "a_port": 30000,
        "b_port": 30002,
        "session_id": SESSION,
    }
    args.update(kw)
    return CallSettings(**args)


class Harness:
    """One call, its fake clock, and the offers it made."""

    def __init__(self, *, duration: int = 600, **kw: Any) -> None:
        self.clock = FakeClock(T0)
        self.call = CallbackCall(user1=USER1, user2=USER2, duration=duration, settings=make_settings(**kw))
        self.offers: dict[str, bytes] = {}

    def _note(self, commands: list[Command]) -> list[Command]:
        for command in commands:
            if isinstance(command, Invite):
                self.offers[command.leg] = command.sdp
        # get_timer() works the earliest deadline out on its own (it runs after every step): it must
        # be the earliest of the timers handle_timer() runs.
        deadlines = [d for d in self.call._deadlines().values() if d is not None]
        assert self.call.get_timer() == (min(deadlines) if deadlines else None)
        return commands

    @property
    def now(self) -> float:
        return self.clock.now

    def start(self) -> list[Command]:
        return self._note(self.call.start(self.now))

    def feed(self, event: LegEvent) -> list[Command]:
        return self._note(self.call.handle(event, self.now))

    def run_until(self, t: float) -> list[Command]:
        """Move the clock to ``t``, running every timer that falls due on the way at its deadline."""
        commands: list[Command] = []
        for _ in range(100):
            deadline = self.call.get_timer()
            if deadline is None or deadline > t:
                break
            self.clock.now = max(self.clock.now, deadline)
            commands += self.call.handle_timer(self.clock.now)
        else:
            raise AssertionError("a timer keeps firing without moving on")
        self.clock.now = max(self.clock.now, t)
        return self._note(commands)

    def after(self, seconds: float) -> list[Command]:
        return self.run_until(self.now + seconds)

    def talk(self, seconds: float) -> list[Command]:
        """Both phones send RTP for ``seconds``; the engine polls the relay every second."""
        end = self.now + seconds
        commands: list[Command] = []
        while self.now < end:
            commands += self.run_until(min(self.now + 1.0, end))
            self.call.media_seen({"user1": self.now, "user2": self.now})
        return commands

    # --- the usual steps -------------------------------------------------------------------------

    def answer_user1(self, **kw: Any) -> list[Command]:
        """user1 rings for 10 s and answers (by default PCMU from 127.0.0.2:4002, telephone-event 101)."""
        assert self.start() and self.feed(Progress(leg="user1", status=180)) == []
        assert self.after(10) == []
        return self.feed(Answered(leg="user1", sdp=phone_answer(self.offers["user1"], **kw)))

    def bridge(self, user1: dict[str, Any] | None = None, **kw: Any) -> list[Command]:
        """user1 answers, user2 rings for 10 s and answers from 127.0.0.3:4004 (PCMU, telephone-event 101)."""
        self.answer_user1(**(user1 or {}))
        assert self.feed(Progress(leg="user2", status=180)) == []
        assert self.after(10) == []
        kw.setdefault("host", "127.0.0.3")
        kw.setdefault("port", 4004)
        codec = self.call.codec
        assert codec is not None
        kw.setdefault("codec", codec.upper())
        return self.feed(Answered(leg="user2", sdp=phone_answer(self.offers["user2"], **kw)))


def response_of(commands: list[Command]) -> SendResponse:
    found = [c for c in commands if isinstance(c, SendResponse)]
    assert len(found) == 1, commands
    return found[0]


# --------------------------------------------------------------------------------------------------
# Events and the state table
# --------------------------------------------------------------------------------------------------


def test_events_refuse_an_unknown_leg_and_a_final_status_as_progress() -> None:
    with pytest.raises(LocalProtocolError, match="unknown leg 'user3'"):
        Progress(leg="user3", status=180)
    with pytest.raises(LocalProtocolError, match="200 is not a provisional status"):
        Progress(leg="user1", status=200)
    with pytest.raises(LocalProtocolError, match="100 is not a provisional status"):
        Progress(leg="user1", status=100)



def test_events_are_checked() -> None:
    answer = phone_answer(OFFER_USER1)
    with pytest.raises(LocalProtocolError, match="100 is not a final status"):
        ReinviteResult(leg="user1", status=100)
    with pytest.raises(LocalProtocolError, match="unknown leg 'b'"):
        RemoteAnswer(leg="b", sdp=answer)  # type: ignore[arg-type]
    fresh = Harness()
    with pytest.raises(LocalProtocolError, match="user2 was never invited"):
        fresh.feed(RemoteAnswer(leg="user2", sdp=answer))


@pytest.mark.parametrize(
    ("start", "to", "message"),
    [
        (CallState.CALLING_USER1, CallState.BRIDGED, "from calling user1 to bridged"),
        (CallState.CALLING_USER1, CallState.CALLING_USER1, "from calling user1 to calling user1"),
        (CallState.BRIDGED, CallState.CALLING_USER2, "from bridged to calling user2"),
        (CallState.RELEASING, CallState.BRIDGED, "from releasing to bridged"),
        (CallState.DONE, CallState.RELEASING, "from done to releasing"),
    ],
)
def test_illegal_state_moves_name_both_states(start: CallState, to: CallState, message: str) -> None:
    call = Harness().call
    call.state = start
    with pytest.raises(LocalProtocolError, match=message):
        call._set_state(to)
    assert call.state is start


# --------------------------------------------------------------------------------------------------
# The happy path
# --------------------------------------------------------------------------------------------------


def test_happy_path_exact_commands() -> None:
    h = Harness()
    assert h.start() == [Invite(leg="user1", user=USER1, sdp=OFFER_USER1)]
    assert h.call.state is CallState.CALLING_USER1
    assert h.after(2) == []
    assert h.feed(Progress(leg="user1", status=180)) == []
    assert h.after(8) == []
    answer1 = phone_answer(OFFER_USER1, codec="PCMU", host="127.0.0.2", port=4002)
    assert h.feed(Answered(leg="user1", sdp=answer1, call_id="c1")) == [
        RelayRemote(leg="user1", host="127.0.0.2", port=4002, rtcp_port=4003),
        RelayPlay(leg="user1", codec="PCMU", payload_type=0, ptime=20),
        Invite(leg="user2", user=USER2, sdp=offer_user2(0, "PCMU/8000")),
    ]
    assert h.call.state is CallState.CALLING_USER2
    assert h.call.codec == "PCMU"
    assert h.after(2) == []
    assert h.feed(Progress(leg="user2", status=180)) == []
    assert h.after(8) == []
    answer2 = phone_answer(h.offers["user2"], host="127.0.0.3", port=4004, session=77)
    assert h.feed(Answered(leg="user2", sdp=answer2, call_id="c2")) == [
        RelayRemote(leg="user2", host="127.0.0.3", port=4004, rtcp_port=4005),
        RelayStopPlay(leg="user1"),
        RelayBridge(a_to_b={}, b_to_a={}),
        MarkBridged(),
    ]
    assert h.call.state is CallState.BRIDGED
    assert h.call.bridged_at == T0 + 20
    assert h.talk(180.4) == []
    assert h.feed(Ended(leg="user2", by_remote=True)) == [
        Hangup(leg="user1"),
        *RELAY_OFF,
        SendResponse(real_duration=180, result="answered", code=0, released_by="user2",
                     reason="user2 hung up"),
    ]
    assert h.call.state is CallState.RELEASING
    assert h.feed(Ended(leg="user1", by_remote=False)) == [Finished()]
    assert h.call.state is CallState.DONE
    assert h.call.get_timer() is None
    assert h.call.legs["user1"].call_id == "c1"
    assert h.call.legs["user2"].call_id == "c2"


def test_progress_events_mark_each_step_once() -> None:
    h = Harness(progress_events=True)
    h.start()
    assert h.feed(Progress(leg="user1", status=180)) == [Notify(state="user1_ringing")]
    assert h.feed(Progress(leg="user1", status=183)) == []  # once per leg
    commands = h.feed(Answered(leg="user1", sdp=phone_answer(h.offers["user1"])))
    assert commands[0] == Notify(state="user1_answered")
    assert [c for c in commands if isinstance(c, Notify)] == [Notify(state="user1_answered")]
    assert h.feed(Progress(leg="user2", status=180)) == [Notify(state="user2_ringing")]
    assert h.feed(Progress(leg="user2", status=180)) == []
    commands = h.feed(Answered(leg="user2", sdp=phone_answer(h.offers["user2"], host="127.0.0.3")))
    assert commands[-2:] == [MarkBridged(), Notify(state="bridged")]
    assert not any(isinstance(c, Notify) for c in h.feed(Ended(leg="user2", by_remote=True)))


def test_progress_events_when_a_leg_answers_without_ringing_and_user2_brings_early_media() -> None:
    h = Harness(progress_events=True)
    h.start()
    commands = h.feed(Answered(leg="user1", sdp=phone_answer(h.offers["user1"])))
    assert [c for c in commands if isinstance(c, Notify)] == [Notify(state="user1_answered")]
    early = phone_answer(h.offers["user2"], host="127.0.0.3", port=4004)
    commands = h.feed(Progress(leg="user2", status=183, sdp=early))
    assert commands[0] == Notify(state="user2_ringing")
    assert RelayForward(a_to_b=False, b_to_a=True) in commands


def test_a_release_before_the_answer_sends_no_later_event() -> None:
    h = Harness(progress_events=True)
    h.start()
    h.feed(Progress(leg="user1", status=180))
    h.call.cancel(h.now)
    assert h.feed(Progress(leg="user1", status=180)) == []
    assert not any(isinstance(c, Notify) for c in h.feed(Answered(leg="user1", sdp=None)))


def test_happy_path_with_the_fixture_answers_of_pjsua2() -> None:
    h = Harness()
    h.start()
    assert h.feed(Answered(leg="user1", sdp=sdp_fixture("pjsua2_answer_pcma.sdp"))) == [
        RelayRemote(leg="user1", host="127.0.0.2", port=4004, rtcp_port=4005),
        RelayPlay(leg="user1", codec="PCMA", payload_type=8, ptime=20),
        Invite(leg="user2", user=USER2, sdp=offer_user2(8, "PCMA/8000")),
    ]
    answer2 = phone_answer(h.offers["user2"], codec="PCMA", host="127.0.0.1", port=4002)
    assert h.feed(Answered(leg="user2", sdp=answer2))[:3] == [
        RelayRemote(leg="user2", host="127.0.0.1", port=4002, rtcp_port=4003),
        RelayStopPlay(leg="user1"),
        RelayBridge(a_to_b={}, b_to_a={}),
    ]


def test_the_offer_to_user1_follows_audio_codecs_order() -> None:
    h = Harness(codecs=("G729", "PCMA"))
    (invite,) = h.start()
    assert isinstance(invite, Invite)
    (audio,) = parse_sdp(invite.sdp).media
    assert audio.formats == ("18", "8", "101")
    assert audio.port == 30000
    assert [str(c) for c in audio.codecs.values()] == ["G729/8000", "PCMA/8000", "telephone-event/8000"]


@pytest.mark.parametrize(
    ("codec", "pt", "fmtp", "ringback"),
    [
        ("PCMU", 0, None, [RelayPlay(leg="user1", codec="PCMU", payload_type=0, ptime=20)]),
        ("PCMA", 8, None, [RelayPlay(leg="user1", codec="PCMA", payload_type=8, ptime=20)]),
        ("G729", 18, "annexb=no", [RelayPlay(leg="user1", codec="G729", payload_type=18, ptime=20)]),
    ],
)
def test_user1_codec_decides_ringback_and_the_offer_to_user2(
    codec: str, pt: int, fmtp: str | None, ringback: list[Command]
) -> None:
    h = Harness()
    commands = h.answer_user1(codec=codec, fmtp=fmtp)
    assert commands == [
        RelayRemote(leg="user1", host="127.0.0.2", port=4002, rtcp_port=4003),
        *ringback,
        Invite(leg="user2", user=USER2, sdp=offer_user2(pt, _RTPMAP[codec], fmtp=fmtp)),
    ]


@pytest.mark.parametrize(("ptime", "played"), [(None, 20), (20, 20), (30, 30), (10, 10), (25, 20)])
def test_ringback_follows_user1_ptime(ptime: int | None, played: int) -> None:
    h = Harness()
    commands = h.answer_user1(codec="PCMA", ptime=ptime)
    assert RelayPlay(leg="user1", codec="PCMA", payload_type=8, ptime=played) in commands


def test_telephone_event_numbers_that_differ_are_mapped() -> None:
    h = Harness()
    commands = h.bridge(te_pt=96)  # user1 kept our 101, user2 answers 96
    assert RelayBridge(a_to_b={101: 96}, b_to_a={96: 101}) in commands


def test_user2_is_offered_user1s_telephone_event_number() -> None:
    h = Harness()
    h.start()
    commands = h.feed(Answered(leg="user1", sdp=sdp_fixture("trunk_answer_pcmu_te96.sdp")))
    assert commands == [
        RelayRemote(leg="user1", host="127.0.0.3", port=16388, rtcp_port=16389),
        RelayPlay(leg="user1", codec="PCMU", payload_type=0, ptime=20),
        Invite(leg="user2", user=USER2, sdp=offer_user2(0, "PCMU/8000", te_pt=96)),
    ]
    commands = h.feed(Answered(leg="user2", sdp=phone_answer(h.offers["user2"], te_pt=96)))
    # user1 sends 101 (our number) and expects 96 (its own); user2 sends and expects 96.
    assert RelayBridge(a_to_b={101: 96}, b_to_a={}) in commands


def test_user1_without_telephone_event() -> None:
    h = Harness()
    commands = h.answer_user1(te_pt=None)
    assert commands[-1] == Invite(leg="user2", user=USER2, sdp=offer_user2(0, "PCMU/8000"))
    commands = h.feed(Answered(leg="user2", sdp=phone_answer(h.offers["user2"])))
    assert RelayBridge(a_to_b={}, b_to_a={}) in commands


@pytest.mark.parametrize(
    ("talk", "seconds"),
    [(180.4, 180), (180.5, 181), (180.75, 181), (0.25, 0), (0.5, 1), (59.49, 59), (3600.0, 3600)],
)
def test_real_duration_rounds_to_the_nearest_second(talk: float, seconds: int) -> None:
    h = Harness(duration=86400, inactivity_timeout=0)
    h.bridge()
    h.after(talk)
    commands = h.feed(Ended(leg="user1", by_remote=True))
    assert commands == [
        Hangup(leg="user2"),
        *RELAY_OFF,
        SendResponse(real_duration=seconds, result="answered", code=0, released_by="user1",
                     reason="user1 hung up"),
    ]


# --------------------------------------------------------------------------------------------------
# The duration timer
# --------------------------------------------------------------------------------------------------


def test_duration_counts_from_user1_answer_not_from_start() -> None:
    h = Harness(duration=30)
    assert h.start()
    assert h.call.get_timer() == T0 + 45  # user1's ring timeout only
    assert h.after(20) == []
    h.feed(Answered(leg="user1", sdp=phone_answer(h.offers["user1"])))
    assert h.call.get_timer() == T0 + 50
    assert h.after(5) == []
    h.feed(Answered(leg="user2", sdp=phone_answer(h.offers["user2"], host="127.0.0.3")))
    assert h.run_until(T0 + 49.9) == []
    assert h.run_until(T0 + 50) == [
        Hangup(leg="user2"),
        Hangup(leg="user1"),
        *RELAY_OFF,
        SendResponse(real_duration=25, result="answered", code=0, released_by="mss",
                     reason="duration of 30s reached"),
    ]
    assert h.now == T0 + 50
    assert h.call.get_timer() == T0 + 50 + RELEASE_GUARD
    assert h.feed(Ended(leg="user2", by_remote=False)) == []
    assert h.feed(Ended(leg="user1", by_remote=False)) == [Finished()]


@pytest.mark.parametrize("late", [0.0, 0.6, 1.7, 30.0])
def test_a_late_duration_timer_does_not_lengthen_real_duration(late: float) -> None:
    # An overloaded loop runs the duration timer late: the talk time still ends at the deadline.
    h = Harness(duration=12, inactivity_timeout=0)
    h.bridge()  # user1 answered 10 s before user2: 2 s of talk are left
    deadline = h.call.get_timer()
    assert deadline == h.now + 2
    h.clock.now = deadline + late
    response = response_of(h.call.handle_timer(h.now))
    assert (response.result, response.real_duration) == ("answered", 2)


def test_a_late_media_timer_counts_talk_up_to_its_deadline() -> None:
    h = Harness(duration=86400, inactivity_timeout=60)
    h.bridge()
    bridged = h.now
    h.talk(5)
    deadline = h.call.get_timer()
    assert deadline == h.now + 60
    h.clock.now = deadline + 7.3
    response = response_of(h.call.handle_timer(h.now))
    assert (response.result, response.real_duration) == ("media_timeout", round(deadline - bridged))


def test_duration_while_user2_rings_cancels_user2_and_hangs_up_user1() -> None:
    h = Harness(duration=30)
    h.answer_user1()
    h.feed(Progress(leg="user2", status=180))
    assert h.run_until(T0 + 40) == [
        Hangup(leg="user2"),
        Hangup(leg="user1"),
        *RELAY_OFF,
        SendResponse(real_duration=0, result="user2_no_answer", code=0, released_by="mss",
                     reason="duration of 30s reached before user2 answered"),
    ]
    assert h.feed(Failed(leg="user2", status=487, reason="Request Terminated")) == []
    assert h.feed(Ended(leg="user1", by_remote=False)) == [Finished()]


def test_a_2xx_that_crosses_the_cancel_is_hung_up_without_a_second_response() -> None:
    h = Harness(duration=30)
    h.answer_user1()
    response = response_of(h.run_until(T0 + 40))
    assert response.result == "user2_no_answer"
    late = phone_answer(h.offers["user2"], host="127.0.0.3")
    assert h.feed(Answered(leg="user2", sdp=late)) == [Hangup(leg="user2")]  # now a BYE
    assert h.call.state is CallState.RELEASING
    assert h.feed(Ended(leg="user1", by_remote=False)) == []
    assert h.feed(Ended(leg="user2", by_remote=False)) == [Finished()]
    assert h.call.result == response


# --------------------------------------------------------------------------------------------------
# Ring timeouts and the release guard
# --------------------------------------------------------------------------------------------------


def test_user1_ring_timeout_holds_after_a_183() -> None:
    h = Harness()
    h.start()
    h.after(1)
    assert h.feed(Progress(leg="user1", status=180)) == []
    h.after(4)
    early = phone_answer(h.offers["user1"], host="127.0.0.2")
    assert h.feed(Progress(leg="user1", status=183, sdp=early)) == []
    assert h.run_until(T0 + 44.9) == []
    assert h.run_until(T0 + 60) == [
        Hangup(leg="user1"),
        *RELAY_OFF,
        SendResponse(real_duration=0, result="user1_no_answer", code=0, released_by="mss",
                     reason="user1 did not answer in 45s"),
    ]
    assert h.call.released_at == T0 + 45
    assert h.feed(Failed(leg="user1", status=487)) == [Finished()]


def test_user2_ring_timeout_counts_from_its_own_invite() -> None:
    h = Harness(ring_timeout=30)
    h.answer_user1()  # user2 invited at T0 + 10
    h.feed(Progress(leg="user2", status=183))
    early = phone_answer(h.offers["user2"], host="127.0.0.3")
    h.after(5)
    assert h.feed(Progress(leg="user2", status=183, sdp=early))[0] == RelayRemote(
        leg="user2", host="127.0.0.3", port=4002, rtcp_port=4003
    )
    assert h.run_until(T0 + 39.9) == []
    assert h.run_until(T0 + 60) == [
        Hangup(leg="user2"),
        Hangup(leg="user1"),
        *RELAY_OFF,
        SendResponse(real_duration=0, result="user2_no_answer", code=0, released_by="mss",
                     reason="user2 did not answer in 30s"),
    ]
    assert h.call.released_at == T0 + 40


def test_release_guard_finishes_a_release_whose_legs_never_end() -> None:
    h = Harness()
    h.start()
    response_of(h.run_until(T0 + 45))
    assert h.call.state is CallState.RELEASING
    assert h.call.get_timer() == T0 + 45 + RELEASE_GUARD
    assert h.run_until(T0 + 45 + RELEASE_GUARD - 0.1) == []
    assert h.run_until(T0 + 200) == [Finished()]
    assert h.call.state is CallState.DONE
    assert h.call.get_timer() is None
    # The INVITE's final answer after the call was dropped changes nothing.
    assert h.feed(Failed(leg="user1", status=487)) == []


def test_release_guard_after_a_bridged_release() -> None:
    h = Harness()
    h.bridge()
    h.after(30)
    h.feed(Ended(leg="user1", by_remote=True))
    assert h.run_until(h.now + RELEASE_GUARD) == [Finished()]


# --------------------------------------------------------------------------------------------------
# Failures
# --------------------------------------------------------------------------------------------------

FAILURES = [
    # status, rang first, kind
    (486, True, "busy"),
    (486, False, "busy"),
    (600, False, "busy"),
    (603, True, "rejected"),
    (403, False, "rejected"),
    (404, False, "failed"),
    (503, False, "failed"),
    (408, False, "failed"),  # no answer at all from the network: it never rang
    (408, True, "no_answer"),
    (480, True, "no_answer"),
    (487, True, "no_answer"),
]


@pytest.mark.parametrize(("status", "rang", "kind"), FAILURES)
def test_user1_failure_classification(status: int, rang: bool, kind: str) -> None:
    h = Harness()
    h.start()
    if rang:
        h.feed(Progress(leg="user1", status=180))
    h.after(3)
    assert h.feed(Failed(leg="user1", status=status, reason="Why")) == [
        *RELAY_OFF,
        SendResponse(real_duration=0, result=f"user1_{kind}", code=status, released_by="user1",
                     reason=f"user1 {status} Why"),
        Finished(),
    ]
    assert h.call.state is CallState.DONE
    assert h.call.get_timer() is None


@pytest.mark.parametrize(("status", "rang", "kind"), FAILURES)
def test_user2_failure_classification_hangs_up_user1(status: int, rang: bool, kind: str) -> None:
    h = Harness()
    h.answer_user1()
    if rang:
        h.feed(Progress(leg="user2", status=180))
    h.after(3)
    assert h.feed(Failed(leg="user2", status=status, reason="")) == [
        Hangup(leg="user1"),
        *RELAY_OFF,
        SendResponse(real_duration=0, result=f"user2_{kind}", code=status, released_by="user2",
                     reason=f"user2 {status}"),
    ]
    assert h.feed(Ended(leg="user1", by_remote=False)) == [Finished()]


def test_a_183_counts_as_ringing_for_a_later_480() -> None:
    h = Harness()
    h.start()
    h.feed(Progress(leg="user1", status=183))
    assert response_of(h.feed(Failed(leg="user1", status=480))).result == "user1_no_answer"


@pytest.mark.parametrize(
    ("body", "why"),
    [
        (None, "the 2xx carries no SDP answer"),
        (sdp_fixture("answer_unoffered_codec.sdp"), "the answer chose no codec of the offer"),
        (sdp_fixture("answer_rejected.sdp"), "the answer rejected the audio stream"),
        (b"v=0\r\nthis is not SDP\r\n", "is not a <type>=<value> line"),
    ],
)
def test_user1_2xx_without_usable_sdp_is_a_488_failure_and_hung_up(body: bytes | None, why: str) -> None:
    h = Harness()
    h.start()
    commands = h.feed(Answered(leg="user1", sdp=body))
    assert commands[:3] == [Hangup(leg="user1"), *RELAY_OFF]
    assert len(commands) == 4
    response = response_of(commands)
    assert (response.real_duration, response.result, response.code, response.released_by) == (
        0, "user1_failed", 488, "mss",
    )
    assert response.reason.startswith("user1 answered with unusable SDP: ")
    assert why in response.reason
    assert h.feed(Ended(leg="user1", by_remote=False)) == [Finished()]


def test_user2_2xx_with_another_codec_is_a_488_failure() -> None:
    h = Harness()
    h.answer_user1(codec="PCMU")
    pcma = sdp_fixture("pjsua2_answer_pcma.sdp")  # user2 was offered PCMU only
    commands = h.feed(Answered(leg="user2", sdp=pcma))
    assert commands[:4] == [Hangup(leg="user2"), Hangup(leg="user1"), *RELAY_OFF]
    response = response_of(commands)
    assert (response.real_duration, response.result, response.code) == (0, "user2_failed", 488)
    assert h.feed(Ended(leg="user2", by_remote=False)) == []
    assert h.feed(Ended(leg="user1", by_remote=False)) == [Finished()]


def test_user2_2xx_without_sdp_is_a_488_failure() -> None:
    h = Harness()
    h.answer_user1()
    response = response_of(h.feed(Answered(leg="user2", sdp=None)))
    assert (response.result, response.code, response.released_by) == ("user2_failed", 488, "mss")


def test_never_bridged_means_real_duration_zero() -> None:
    h = Harness()
    h.answer_user1()
    h.after(30)
    response = response_of(h.feed(Failed(leg="user2", status=486, reason="Busy Here")))
    assert response == SendResponse(real_duration=0, result="user2_busy", code=486, released_by="user2",
                                    reason="user2 486 Busy Here")


# --------------------------------------------------------------------------------------------------
# Early media and user1 giving up
# --------------------------------------------------------------------------------------------------


def test_user2_early_media_replaces_the_ringback() -> None:
    h = Harness()
    h.answer_user1()
    early = phone_answer(h.offers["user2"], host="127.0.0.3", port=4010)
    assert h.feed(Progress(leg="user2", status=183, sdp=early)) == [
        RelayRemote(leg="user2", host="127.0.0.3", port=4010, rtcp_port=4011),
        RelayStopPlay(leg="user1"),
        RelayForward(a_to_b=False, b_to_a=True),
    ]
    moved = phone_answer(h.offers["user2"], host="127.0.0.4", port=4020)
    assert h.feed(Progress(leg="user2", status=183, sdp=moved)) == [
        RelayRemote(leg="user2", host="127.0.0.4", port=4020, rtcp_port=4021),
    ]
    assert h.feed(Progress(leg="user2", status=180)) == []
    final = phone_answer(h.offers["user2"], host="127.0.0.4", port=4020)
    assert h.feed(Answered(leg="user2", sdp=final)) == [
        RelayRemote(leg="user2", host="127.0.0.4", port=4020, rtcp_port=4021),
        RelayStopPlay(leg="user1"),
        RelayBridge(a_to_b={}, b_to_a={}),
        MarkBridged(),
    ]


@pytest.mark.parametrize(
    "bad",
    [
        sdp_fixture("answer_unoffered_codec.sdp"),
        sdp_fixture("answer_rejected.sdp"),
        b"v=0\r\no=broken\r\n",
    ],
)
def test_unusable_early_media_keeps_the_ringback(bad: bytes) -> None:
    h = Harness()
    h.answer_user1()
    assert h.feed(Progress(leg="user2", status=183, sdp=bad)) == []
    good = phone_answer(h.offers["user2"], host="127.0.0.3")
    assert h.feed(Progress(leg="user2", status=183, sdp=good)) == [
        RelayRemote(leg="user2", host="127.0.0.3", port=4002, rtcp_port=4003),
        RelayStopPlay(leg="user1"),
        RelayForward(a_to_b=False, b_to_a=True),
    ]


def test_early_media_from_user1_is_ignored() -> None:
    h = Harness()
    h.start()
    early = phone_answer(h.offers["user1"])
    assert h.feed(Progress(leg="user1", status=183, sdp=early)) == []


def test_user1_hangs_up_while_user2_rings() -> None:
    h = Harness()
    h.answer_user1()
    h.feed(Progress(leg="user2", status=180))
    h.after(7)
    assert h.feed(Ended(leg="user1", by_remote=True)) == [
        Hangup(leg="user2"),  # the SIP side sends CANCEL: user2 never answered
        *RELAY_OFF,
        SendResponse(real_duration=0, result="cancelled", code=0, released_by="user1",
                     reason="user1 hung up"),
    ]
    assert h.feed(Failed(leg="user2", status=487)) == [Finished()]


def test_user1_hangs_up_during_user2_early_media() -> None:
    h = Harness()
    h.answer_user1()
    h.feed(Progress(leg="user2", status=183, sdp=phone_answer(h.offers["user2"], host="127.0.0.3")))
    commands = h.feed(Ended(leg="user1", by_remote=True))
    assert commands[0] == Hangup(leg="user2")
    assert response_of(commands).result == "cancelled"


# --------------------------------------------------------------------------------------------------
# AS CANCEL and shutdown in every state
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "result", "by", "reason"),
    [("cancel", "cancelled", "as", "cancelled by the AS"), ("shutdown", "shutdown", "mss", "mss shut down")],
)
class TestCancelAndShutdown:
    def test_calling_user1(self, method: str, result: str, by: str, reason: str) -> None:
        h = Harness()
        h.start()
        h.feed(Progress(leg="user1", status=180))
        h.after(5)
        assert getattr(h.call, method)(h.now) == [
            Hangup(leg="user1"),
            *RELAY_OFF,
            SendResponse(real_duration=0, result=result, code=0, released_by=by, reason=reason),
        ]
        assert h.feed(Failed(leg="user1", status=487)) == [Finished()]

    def test_calling_user2(self, method: str, result: str, by: str, reason: str) -> None:
        h = Harness()
        h.answer_user1()
        assert getattr(h.call, method)(h.now) == [
            Hangup(leg="user2"),
            Hangup(leg="user1"),
            *RELAY_OFF,
            SendResponse(real_duration=0, result=result, code=0, released_by=by, reason=reason),
        ]
        assert h.feed(Ended(leg="user1", by_remote=False)) == []
        assert h.feed(Failed(leg="user2", status=487)) == [Finished()]

    def test_bridged(self, method: str, result: str, by: str, reason: str) -> None:
        h = Harness()
        h.bridge()
        h.after(42.2)
        assert getattr(h.call, method)(h.now) == [
            Hangup(leg="user2"),
            Hangup(leg="user1"),
            *RELAY_OFF,
            SendResponse(real_duration=42, result=result, code=0, released_by=by, reason=reason),
        ]

    def test_releasing_and_done_are_no_ops(self, method: str, result: str, by: str, reason: str) -> None:
        h = Harness()
        h.bridge()
        h.feed(Ended(leg="user2", by_remote=True))
        assert h.call.state is CallState.RELEASING
        assert getattr(h.call, method)(h.now) == []
        assert h.feed(Ended(leg="user1", by_remote=False)) == [Finished()]
        assert getattr(h.call, method)(h.now) == []
        assert h.call.result is not None and h.call.result.result == "answered"


# --------------------------------------------------------------------------------------------------
# Inactivity
# --------------------------------------------------------------------------------------------------


def test_media_keeps_a_bridged_call_alive() -> None:
    h = Harness()
    h.bridge()  # bridged at T0 + 20
    bridged = T0 + 20
    assert h.call.get_timer() == bridged + 60
    for _ in range(10):
        h.after(30)
        h.call.media_seen({"user1": h.now - 0.02, "user2": h.now - 0.01})
        assert h.call.state is CallState.BRIDGED
    assert h.call.get_timer() == pytest.approx(h.now - 0.02 + 60)
    # user2 goes silent, user1 keeps talking.
    last2 = h.now - 0.01
    for _ in range(2):
        assert h.after(20) == []
        h.call.media_seen({"user1": h.now, "user2": None})
    commands = h.run_until(last2 + 60)
    assert commands == [
        Hangup(leg="user2"),
        Hangup(leg="user1"),
        *RELAY_OFF,
        SendResponse(real_duration=round(last2 + 60 - bridged), result="media_timeout", code=0,
                     released_by="mss", reason="no RTP from user2 for 60s"),
    ]


def test_no_media_at_all_after_the_bridge() -> None:
    h = Harness()
    h.bridge()
    h.call.media_seen({"user1": T0 + 5, "user2": None})  # ringback-time packets do not count
    response = response_of(h.run_until(T0 + 80))
    assert (response.result, response.real_duration) == ("media_timeout", 60)
    assert h.call.released_at == T0 + 80


def test_inactivity_timeout_zero_disables_it() -> None:
    h = Harness(inactivity_timeout=0, duration=3600)
    h.bridge()
    assert h.call.get_timer() == T0 + 10 + 3600  # the duration only
    assert h.after(3000) == []
    assert response_of(h.run_until(T0 + 4000)).result == "answered"


def test_no_inactivity_release_while_a_leg_is_on_hold() -> None:
    h = Harness(duration=3600)
    h.bridge(user1={"host": "127.0.0.1", "port": 4000, "session": 3921304958})
    h.after(5)
    h.feed(OfferReceived(leg="user1", sdp=sdp_fixture("pjsua2_hold_sendonly.sdp")))
    assert h.call.get_timer() == T0 + 10 + 3600
    assert h.after(600) == []
    assert h.call.state is CallState.BRIDGED


def test_resume_after_a_long_hold_does_not_release_at_once() -> None:
    h = Harness(duration=3600)
    h.bridge(user1={"host": "127.0.0.1", "port": 4000, "session": 3921304958})
    h.feed(OfferReceived(leg="user1", sdp=sdp_fixture("pjsua2_hold_sendonly.sdp")))
    assert h.after(600) == []
    h.feed(OfferReceived(leg="user1", sdp=sdp_fixture("pjsua2_resume_new_address.sdp")))
    resumed = h.now
    assert h.call.get_timer() == resumed + 60
    assert h.after(59) == []
    h.call.media_seen({"user1": h.now, "user2": h.now})
    assert h.after(59) == []
    assert response_of(h.run_until(h.now + 60)).result == "media_timeout"


# --------------------------------------------------------------------------------------------------
# Re-INVITE from a bridged phone
# --------------------------------------------------------------------------------------------------

PJSUA2_USER1 = {"host": "127.0.0.1", "port": 4000, "session": 3921304958}


def _sdp_of(command: Command) -> bytes:
    assert isinstance(command, (AnswerOffer, Reinvite)), command
    assert command.sdp is not None
    return command.sdp


def _direction(body: bytes) -> Direction:
    sd = parse_sdp(body)
    return sd.direction_of(sd.media[0])


def test_hold_and_resume_from_user1_are_answered_and_reflected_to_user2() -> None:
    h = Harness()
    h.bridge(user1=PJSUA2_USER1)
    h.after(30)
    # pjsua2 puts the call on hold; its own re-offer names telephone-event 121.
    commands = h.feed(OfferReceived(leg="user1", sdp=sdp_fixture("pjsua2_hold_sendonly.sdp")))
    assert [type(c) for c in commands] == [AnswerOffer, RelayBridge, RelayForward, Reinvite]
    answer, bridge, forward, reinvite = commands
    # user1 sends (music on hold) and takes nothing: the relay stops forwarding to it.
    assert forward == RelayForward(a_to_b=True, b_to_a=False)
    assert isinstance(answer, AnswerOffer) and answer.leg == "user1"
    assert _sdp_of(answer) == crlf(f"""
v=0
o=- {SESSION} {SESSION + 1} IN IP4 127.0.0.1
s=mss
c=IN IP4 127.0.0.1
t=0 0
m=audio 30000 RTP/AVP 0 121
a=rtpmap:0 PCMU/8000
a=rtpmap:121 telephone-event/8000
a=fmtp:121 0-16
a=recvonly
""")
    # user1 now sends DTMF as 121 and expects 121; user2 still speaks 101.
    assert bridge == RelayBridge(a_to_b={121: 101}, b_to_a={101: 121})
    assert isinstance(reinvite, Reinvite) and reinvite.leg == "user2"
    held = _sdp_of(reinvite)
    assert b"a=sendonly\r\n" in held and b"a=sendrecv" not in held
    assert parse_sdp(held).origin.version == SESSION + 1  # user2's o= line moves on from its offer
    assert parse_sdp(held).media[0].formats == ("0", "101")

    commands = h.feed(OfferReceived(leg="user1", sdp=sdp_fixture("pjsua2_resume_new_address.sdp")))
    assert [type(c) for c in commands] == [AnswerOffer, RelayRemote, RelayForward, Reinvite]
    assert _direction(_sdp_of(commands[0])) is Direction.SENDRECV
    assert parse_sdp(_sdp_of(commands[0])).origin.version == SESSION + 2
    assert commands[1] == RelayRemote(leg="user1", host="127.0.0.5", port=4010, rtcp_port=4011)
    assert commands[2] == RelayForward(a_to_b=True, b_to_a=True)
    resumed = _sdp_of(commands[3])
    assert _direction(resumed) is Direction.SENDRECV
    assert parse_sdp(resumed).origin.version == SESSION + 2


def test_inactive_hold_is_reflected_as_inactive() -> None:
    h = Harness()
    h.bridge(user1=PJSUA2_USER1)
    commands = h.feed(OfferReceived(leg="user1", sdp=sdp_fixture("pjsua2_hold_inactive.sdp")))
    assert _direction(_sdp_of(commands[0])) is Direction.INACTIVE
    assert _direction(_sdp_of(commands[-1])) is Direction.INACTIVE


def test_hold_from_user2_is_reflected_to_user1() -> None:
    h = Harness()
    h.bridge()
    hold = phone_answer(h.offers["user2"], host="127.0.0.3", port=4004, direction="sendonly", version=2)
    commands = h.feed(OfferReceived(leg="user2", sdp=hold))
    assert [type(c) for c in commands] == [AnswerOffer, RelayForward, Reinvite]
    assert _direction(_sdp_of(commands[0])) is Direction.RECVONLY
    assert commands[1] == RelayForward(a_to_b=False, b_to_a=True)
    assert commands[2].leg == "user1"
    # Only the codec user1 agreed on: user2's codec is fixed, so user1 may not pick another.
    assert _sdp_of(commands[2]) == crlf(f"""
v=0
o=- {SESSION} {SESSION + 1} IN IP4 127.0.0.1
s=mss
c=IN IP4 127.0.0.1
t=0 0
m=audio 30000 RTP/AVP 0 101
a=rtpmap:0 PCMU/8000
a=rtpmap:101 telephone-event/8000
a=fmtp:101 0-16
a=ptime:20
a=sendonly
""")
    resume = phone_answer(h.offers["user2"], host="127.0.0.3", port=4004, version=3)
    commands = h.feed(OfferReceived(leg="user2", sdp=resume))
    assert [type(c) for c in commands] == [AnswerOffer, RelayForward, Reinvite]
    resumed = parse_sdp(_sdp_of(commands[2]))
    assert resumed.direction_of(resumed.media[0]) is Direction.SENDRECV
    assert resumed.origin.version == SESSION + 2


def test_hold_reflected_to_a_g729_user1_keeps_its_codec_and_numbers() -> None:
    h = Harness()
    h.bridge(user1={"codec": "G729", "fmtp": "annexb=no", "te_pt": 96})
    hold = phone_answer(h.offers["user2"], codec="G729", host="127.0.0.3", port=4004,
                        direction="inactive", version=2)
    commands = h.feed(OfferReceived(leg="user2", sdp=hold))
    reoffer = parse_sdp(_sdp_of(commands[-1]))
    (audio,) = reoffer.media
    # Our numbers on leg a: 18 and the telephone-event 101 we offered user1 (it answered 96).
    assert audio.formats == ("18", "101")
    assert audio.codecs[18].fmtp == "annexb=no"
    assert reoffer.direction_of(audio) is Direction.INACTIVE


def test_rfc2543_hold_keeps_the_relay_remote() -> None:
    h = Harness()
    h.bridge(user1={"host": "127.0.0.4", "port": 49170, "session": 2890844526})
    commands = h.feed(OfferReceived(leg="user1", sdp=sdp_fixture("rfc2543_hold.sdp")))
    # c=0.0.0.0: no RelayRemote (0.0.0.0 would reach this host), nothing forwarded to user1 (it
    # receives nothing there), hold reflected as sendonly.
    assert [type(c) for c in commands] == [AnswerOffer, RelayForward, Reinvite]
    assert _direction(_sdp_of(commands[0])) is Direction.RECVONLY
    assert commands[1] == RelayForward(a_to_b=True, b_to_a=False)
    assert _direction(_sdp_of(commands[2])) is Direction.SENDONLY
    assert h.call.get_timer() == T0 + 10 + 600  # on hold: no inactivity deadline
    resume = phone_answer(h.offers["user1"], host="127.0.0.4", port=49170, session=2890844526,
                          version=2890844528)
    commands = h.feed(OfferReceived(leg="user1", sdp=resume))
    assert commands[1] == RelayRemote(leg="user1", host="127.0.0.4", port=49170, rtcp_port=49171)
    assert _direction(_sdp_of(commands[-1])) is Direction.SENDRECV


def test_a_session_refresh_changes_nothing() -> None:
    h = Harness()
    h.bridge(user1=PJSUA2_USER1)
    same = phone_answer(h.offers["user1"], **PJSUA2_USER1)
    commands = h.feed(OfferReceived(leg="user1", sdp=same))
    assert [type(c) for c in commands] == [AnswerOffer]
    assert _direction(_sdp_of(commands[0])) is Direction.SENDRECV
    # Our answer differs from our offer (one codec), so its version moves on once ...
    assert parse_sdp(_sdp_of(commands[0])).origin.version == SESSION + 1
    # ... and a second identical refresh gets the identical answer, same version (RFC 3264 §8).
    assert h.feed(OfferReceived(leg="user1", sdp=same)) == commands


def test_a_new_media_address_from_user2_moves_the_relay() -> None:
    h = Harness()
    h.bridge()
    moved = phone_answer(h.offers["user2"], host="127.0.0.9", port=5000, version=3921305013)
    commands = h.feed(OfferReceived(leg="user2", sdp=moved))
    assert [type(c) for c in commands] == [AnswerOffer, RelayRemote]
    assert commands[1] == RelayRemote(leg="user2", host="127.0.0.9", port=5000, rtcp_port=5001)
    assert parse_sdp(_sdp_of(commands[0])).media[0].port == 30002


@pytest.mark.parametrize(
    "offer",
    [
        b"garbage",
        sdp_fixture("offer_video_only.sdp"),
        sdp_fixture("offer_wideband_only.sdp"),
        sdp_fixture("pjsua2_answer_pcma.sdp"),  # PCMA only, the call is PCMU
    ],
)
def test_an_unusable_reoffer_is_refused_and_changes_nothing(offer: bytes) -> None:
    h = Harness()
    h.bridge()
    before = h.call.legs["user1"].negotiated
    assert h.feed(OfferReceived(leg="user1", sdp=offer)) == [AnswerOffer(leg="user1", sdp=None)]
    assert h.call.legs["user1"].negotiated == before
    assert h.call.state is CallState.BRIDGED


def test_offers_before_the_bridge() -> None:
    h = Harness()
    h.answer_user1()
    # user1 is up while user2 rings: its offer gets a real answer (its codec only, o= version + 1)
    # and a new address moves the relay's leg a; user2 has nothing to be told yet.
    moved = phone_answer(h.offers["user1"], host="127.0.0.9")
    commands = h.feed(OfferReceived(leg="user1", sdp=moved))
    assert [type(c) for c in commands] == [AnswerOffer, RelayRemote]
    answer = commands[0].sdp
    assert answer is not None
    assert b" 3921400001 IN IP4" in answer and b"m=audio 30000 RTP/AVP 0 101\r\n" in answer
    assert commands[1] == RelayRemote(leg="user1", host="127.0.0.9", port=commands[1].port,
                                      rtcp_port=commands[1].rtcp_port)
    # user2 has not answered: an early offer is answered with our offer to it.
    update = phone_answer(h.offers["user2"], host="127.0.0.3")
    assert h.feed(OfferReceived(leg="user2", sdp=update)) == [
        AnswerOffer(leg="user2", sdp=offer_user2(0, "PCMU/8000"))
    ]
    assert h.call.state is CallState.CALLING_USER2


def test_offers_while_releasing_and_done() -> None:
    h = Harness()
    h.bridge()
    h.feed(Ended(leg="user2", by_remote=True))
    commands = h.feed(OfferReceived(leg="user1", sdp=phone_answer(h.offers["user1"])))
    assert [type(c) for c in commands] == [AnswerOffer]
    assert commands[0].sdp is not None
    h.feed(Ended(leg="user1", by_remote=False))
    assert h.feed(OfferReceived(leg="user1", sdp=phone_answer(h.offers["user1"]))) == [
        AnswerOffer(leg="user1", sdp=None)
    ]


# --------------------------------------------------------------------------------------------------
# Repeated and out-of-place events
# --------------------------------------------------------------------------------------------------


def test_a_repeated_2xx_is_ignored() -> None:
    h = Harness()
    h.start()
    answer1 = phone_answer(h.offers["user1"])
    h.feed(Answered(leg="user1", sdp=answer1))
    deadline = h.call.get_timer()
    h.after(3)
    assert h.feed(Answered(leg="user1", sdp=answer1)) == []
    assert h.call.get_timer() == deadline
    answer2 = phone_answer(h.offers["user2"], host="127.0.0.3")
    assert MarkBridged() in h.feed(Answered(leg="user2", sdp=answer2))
    assert h.feed(Answered(leg="user2", sdp=answer2)) == []
    assert h.feed(Answered(leg="user1", sdp=answer1)) == []
    assert h.call.state is CallState.BRIDGED
    assert h.call.bridged_at == T0 + 3
    h.feed(Ended(leg="user1", by_remote=True))
    assert h.feed(Answered(leg="user1", sdp=answer1)) == []  # no second BYE


@pytest.mark.parametrize(
    "event",
    [
        Answered(leg="user2", sdp=None),
        Failed(leg="user2", status=486),
        Progress(leg="user2", status=180),
        Ended(leg="user2", by_remote=True),
        OfferReceived(leg="user2", sdp=b"v=0\r\n"),
    ],
)
def test_events_for_a_leg_never_invited_are_our_bug(event: LegEvent) -> None:
    h = Harness()
    h.start()
    with pytest.raises(LocalProtocolError, match="user2 was never invited"):
        h.feed(event)
    assert h.call.state is CallState.CALLING_USER1
    assert h.call.result is None


# --------------------------------------------------------------------------------------------------
# Properties: any order of SIP events and timers
# --------------------------------------------------------------------------------------------------


@dataclass
class SipSide:
    """What the SIP side knows of each leg; it only sends what a real dialog could send."""

    legs: dict[str, str] = field(default_factory=lambda: {"user1": "idle", "user2": "idle"})
    offers: dict[str, bytes] = field(default_factory=dict)
    responses: list[tuple[float, SendResponse]] = field(default_factory=list)
    bridged_at: float | None = None
    finished: bool = False

    def apply(self, commands: list[Command], now: float, released_at: float | None = None) -> None:
        assert not self.finished, f"commands after Finished: {commands}"
        for command in commands:
            if isinstance(command, Invite):
                assert self.legs[command.leg] == "idle", f"second INVITE on {command.leg}"
                assert not self.responses, "INVITE after the RESPONSE"
                self.legs[command.leg] = "calling"
                self.offers[command.leg] = command.sdp
            elif isinstance(command, Hangup):
                state = self.legs[command.leg]
                assert state in ("calling", "early", "up"), f"Hangup of {command.leg} while {state}"
                self.legs[command.leg] = "cancelling" if state != "up" else "byeing"
            elif isinstance(command, Reinvite):
                assert self.legs[command.leg] == "up", f"re-INVITE on {command.leg} while not up"
                (audio,) = parse_sdp(command.sdp).media
                assert audio.port == (30000 if command.leg == "user1" else 30002)
                assert len([c for c in audio.codecs.values() if not c.is_telephone_event]) == 1
            elif isinstance(command, AnswerOffer):
                assert self.legs[command.leg] in ("early", "up"), f"answer on {command.leg}"
                if command.sdp is not None:
                    parse_sdp(command.sdp)
            elif isinstance(command, MarkBridged):
                assert self.bridged_at is None and not self.responses
                assert self.legs == {"user1": "up", "user2": "up"}
                self.bridged_at = now
            elif isinstance(command, (RelayPlay, RelayBridge)):
                assert not self.responses, f"{command} after the RESPONSE"
            elif isinstance(command, SendResponse):
                assert not self.responses, f"a second RESPONSE: {command}"
                self.responses.append((now, command))
                assert command.result in RESULTS
                assert 0 <= command.code <= 699
                if self.bridged_at is None:
                    assert command.real_duration == 0
                    assert command.result not in ("answered", "media_timeout")
                else:
                    assert command.result in ("answered", "cancelled", "shutdown", "media_timeout")
                    # Released at ``now``, or at a timer's deadline on the way to it.
                    released = released_at if released_at is not None else now
                    assert self.bridged_at <= released <= now
                    talk = released - self.bridged_at
                    assert abs(command.real_duration - talk) <= 0.5 + 1e-6
            elif isinstance(command, Finished):
                assert self.responses, "Finished before the RESPONSE"
                self.finished = True


#: What happens next, weighted: mostly the SIP side, sometimes time passes or media is seen, rarely
#: the AS cancels or mss shuts down (either ends the story early).
ACTIONS = ["sip"] * 24 + ["time"] * 6 + ["media"] * 4 + ["cancel", "shutdown"]

GOOD_STATUSES = [403, 404, 408, 480, 486, 487, 500, 503, 600, 603]


def _answer(side: SipSide, leg: str, data: st.DataObject) -> bytes | None:
    kind = data.draw(st.sampled_from(["good"] * 6 + ["none", "other codec"]))
    if kind == "none":
        return None
    offered = parse_sdp(side.offers[leg]).media[0].codecs
    names = [c.name for c in offered.values() if not c.is_telephone_event]
    if kind == "other codec":
        others = [n for n in ("PCMU", "PCMA", "G729") if n not in names]
        return sdp_fixture("answer_unoffered_codec.sdp") if not others else phone_answer(
            OFFER_USER1, codec=others[0]
        )
    return phone_answer(
        side.offers[leg],
        codec=data.draw(st.sampled_from(names)),
        te_pt=data.draw(st.sampled_from([101, 96, None])),
        host="127.0.0.2" if leg == "user1" else "127.0.0.3",
        ptime=data.draw(st.sampled_from([None, 20, 30])),
    )


def _reoffer(side: SipSide, leg: str, data: st.DataObject) -> bytes:
    kind = data.draw(st.sampled_from(["sendonly", "inactive", "sendrecv", "moved", "garbage"]))
    if kind == "garbage":
        return b"v=0\r\nm=\r\n"
    offered = parse_sdp(side.offers[leg]).media[0].codecs
    codec = next(c.name for c in offered.values() if not c.is_telephone_event)
    return phone_answer(
        side.offers[leg],
        codec=codec,
        direction="sendrecv" if kind == "moved" else kind,
        port=6000 if kind == "moved" else 4002,
        te_pt=data.draw(st.sampled_from([101, 121])),
    )


#: What the SIP side may report on a leg in each of its states, weighted.
_LEG_EVENTS = {
    "calling": ["180", "180", "183 sdp", "183 bad", "answer", "answer", "answer", "answer", "fail"],
    "early": ["180", "183 sdp", "183 bad", "answer", "answer", "answer", "answer", "fail", "update"],
    "cancelling": ["487", "answer", "180"],  # the 2xx crossed our CANCEL
    "up": ["bye", "reoffer", "reoffer", "reoffer"],
    "byeing": ["bye done", "bye"],  # our BYE completes, or theirs crossed it
}


def _sip_events(side: SipSide) -> list[tuple[str, str]]:
    """Every (leg, kind) of event the SIP side could send now."""
    return [(leg, kind) for leg, state in side.legs.items() for kind in _LEG_EVENTS.get(state, [])]


def _make_event(side: SipSide, leg: str, kind: str, data: st.DataObject) -> LegEvent:
    if kind in ("180", "183 bad"):
        return Progress(leg=leg, status=180) if kind == "180" else Progress(
            leg=leg, status=183, sdp=b"v=0\r\n"
        )
    if kind == "183 sdp":
        codecs = parse_sdp(side.offers[leg]).media[0].codecs.values()
        first = next(c.name for c in codecs if not c.is_telephone_event)
        early = phone_answer(side.offers[leg], codec=first, host="127.0.0.7", port=7000)
        return Progress(leg=leg, status=183, sdp=early)
    if kind == "answer":
        return Answered(leg=leg, sdp=_answer(side, leg, data))
    if kind in ("fail", "487"):
        status = 487 if kind == "487" else data.draw(st.sampled_from(GOOD_STATUSES))
        return Failed(leg=leg, status=status)
    if kind in ("update", "reoffer"):
        return OfferReceived(leg=leg, sdp=_reoffer(side, leg, data))
    return Ended(leg=leg, by_remote=kind == "bye")


def _feed(h: Harness, side: SipSide, event: LegEvent) -> None:
    state = side.legs[event.leg]
    if isinstance(event, Progress) and state == "calling":
        side.legs[event.leg] = "early"
    elif isinstance(event, Answered):
        side.legs[event.leg] = "up"
    elif isinstance(event, (Failed, Ended)):
        side.legs[event.leg] = "over"
    side.apply(h.feed(event), h.now)


def _check_timer(h: Harness) -> None:
    deadline = h.call.get_timer()
    if h.call.state is CallState.DONE:
        assert deadline is None
    else:
        assert deadline is not None, f"stuck in {h.call.state} with no timer"
        assert deadline > h.now - 1e-9 or deadline == h.now


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    data=st.data(),
    duration=st.sampled_from([1, 5, 30, 300, 3600]),
    ring_timeout=st.sampled_from([5.0, 45.0]),
    inactivity=st.sampled_from([0.0, 10.0, 60.0]),
)
def test_any_sip_history_gives_one_response_and_finishes(
    data: st.DataObject, duration: int, ring_timeout: float, inactivity: float
) -> None:
    h = Harness(duration=duration, ring_timeout=ring_timeout, inactivity_timeout=inactivity)
    side = SipSide()
    side.apply(h.start(), h.now)
    if data.draw(st.booleans(), label="bridge first"):
        # Half the histories start from a bridged call, where hold, media and the duration matter.
        for leg in ("user1", "user2"):
            _feed(h, side, Progress(leg=leg, status=180))
            _feed(h, side, Answered(leg=leg, sdp=phone_answer(side.offers[leg], codec="PCMA")))
        assert side.bridged_at is not None
    for _ in range(data.draw(st.integers(min_value=0, max_value=40), label="steps")):
        if side.finished:
            break
        events = _sip_events(side)
        action = data.draw(st.sampled_from(ACTIONS))
        if action == "sip" and events:
            leg, kind = data.draw(st.sampled_from(events))
            _feed(h, side, _make_event(side, leg, kind, data))
        elif action == "time":
            commands = h.after(data.draw(st.sampled_from([0.0, 0.5, 1.0, 4.5, 10.0, 30.0, 61.0])))
            side.apply(commands, h.now, h.call.released_at)
        elif action == "cancel":
            side.apply(h.call.cancel(h.now), h.now)
        elif action == "shutdown":
            side.apply(h.call.shutdown(h.now), h.now)
        elif action == "media":
            ago = st.one_of(st.none(), st.floats(0.0, 5.0))
            seen = {leg: data.draw(ago) for leg in ("user1", "user2")}
            h.call.media_seen({leg: None if a is None else h.now - a for leg, a in seen.items()})
        _check_timer(h)
    if side.finished:
        assert len(side.responses) == 1
        return
    # Wind down as the engine would: release if nothing has, then let the legs end (or not).
    if not side.responses:
        side.apply(h.call.shutdown(h.now), h.now)
    assert len(side.responses) == 1
    assert all(state in ("idle", "cancelling", "byeing", "over") for state in side.legs.values()), side.legs
    if data.draw(st.booleans(), label="legs end"):
        for leg, state in list(side.legs.items()):
            if state == "cancelling":
                _feed(h, side, Failed(leg=leg, status=487))
            elif state == "byeing":
                _feed(h, side, Ended(leg=leg, by_remote=False))
    else:
        side.apply(h.after(RELEASE_GUARD), h.now, h.call.released_at)
    assert side.finished
    assert h.call.state is CallState.DONE
    assert h.call.get_timer() is None
    assert len(side.responses) == 1


_ANY_SDP = st.sampled_from(
    [
        None,
        b"",
        b"garbage",
        sdp_fixture("pjsua2_answer_pcmu.sdp"),
        sdp_fixture("pjsua2_answer_pcma.sdp"),
        sdp_fixture("trunk_answer_pcmu_te96.sdp"),
        sdp_fixture("pjsua2_hold_sendonly.sdp"),
        sdp_fixture("answer_rejected.sdp"),
    ]
)
_LEGS = st.sampled_from(["user1", "user2"])
_ANY_EVENT = st.one_of(
    st.builds(Progress, leg=_LEGS, status=st.sampled_from([180, 183]), sdp=_ANY_SDP),
    st.builds(Answered, leg=_LEGS, sdp=_ANY_SDP),
    st.builds(Failed, leg=_LEGS, status=st.integers(300, 699)),
    st.builds(Ended, leg=_LEGS, by_remote=st.booleans()),
    st.builds(OfferReceived, leg=_LEGS, sdp=_ANY_SDP.map(lambda body: body or b"")),
)


@settings(max_examples=300, deadline=None)
@given(
    steps=st.lists(
        st.one_of(_ANY_EVENT, st.floats(0.0, 100.0), st.sampled_from(["cancel", "shutdown"])), max_size=25
    )
)
def test_any_event_order_raises_only_documented_errors(steps: list[LegEvent | float | str]) -> None:
    """Events in orders no SIP stack would produce: the call never sends two RESPONSEs and only ever
    raises :class:`LocalProtocolError` (an event the engine should not have fed)."""
    h = Harness(duration=100)
    responses = finished = 0
    commands = h.start()
    for step in steps:
        try:
            if isinstance(step, float):
                commands = h.after(step)
            elif step == "cancel":
                commands = h.call.cancel(h.now)
            elif step == "shutdown":
                commands = h.call.shutdown(h.now)
            else:
                assert not isinstance(step, str)
                commands = h.feed(step)
        except MssError as exc:
            assert isinstance(exc, LocalProtocolError)
            continue
        responses += sum(isinstance(c, SendResponse) for c in commands)
        finished += sum(isinstance(c, Finished) for c in commands)
        assert responses <= 1 and finished <= 1
    commands = h.call.shutdown(h.now) + h.after(RELEASE_GUARD + 1)
    responses += sum(isinstance(c, SendResponse) for c in commands)
    finished += sum(isinstance(c, Finished) for c in commands)
    assert responses == 1 and finished == 1
    assert h.call.state is CallState.DONE


# --------------------------------------------------------------------------------------------------
# Answers to our own re-INVITEs, and holds from both sides
# --------------------------------------------------------------------------------------------------


def _user1_holds(h: Harness) -> bytes:
    """user1 (pjsua2) puts the call on hold; returns our re-offer to user2 (sendonly)."""
    h.bridge(user1=PJSUA2_USER1)
    commands = h.feed(OfferReceived(leg="user1", sdp=sdp_fixture("pjsua2_hold_sendonly.sdp")))
    reinvite = commands[-1]
    assert isinstance(reinvite, Reinvite) and reinvite.leg == "user2"
    return reinvite.sdp


def test_a_renumbered_payload_type_in_the_answer_to_our_reinvite_reaches_the_relay() -> None:
    h = Harness()
    offer = _user1_holds(h)
    answer = phone_answer(offer, host="127.0.0.3", port=4004, te_pt=96, direction="recvonly", version=2)
    commands = h.feed(ReinviteResult(leg="user2", status=200, sdp=answer))
    # user2 now expects telephone-event as 96: user1's 121 is rewritten to it (and user2's 96 or our
    # 101 to user1's 121); the bridge that sets the rewrite forwards both ways, so the hold's
    # forwarding is set again after it.
    assert commands == [
        RelayBridge(a_to_b={121: 96}, b_to_a={101: 121, 96: 121}),
        RelayForward(a_to_b=True, b_to_a=False),
    ]
    assert h.call.legs["user2"].negotiated is not None
    assert h.call.legs["user2"].negotiated.remote_direction is Direction.RECVONLY


def test_a_new_address_in_the_answer_to_our_reinvite_moves_the_relay() -> None:
    h = Harness()
    offer = _user1_holds(h)
    answer = phone_answer(offer, host="127.0.0.8", port=5008, direction="recvonly", version=2)
    assert h.feed(ReinviteResult(leg="user2", status=200, sdp=answer)) == [
        RelayRemote(leg="user2", host="127.0.0.8", port=5008, rtcp_port=5009),
    ]


def test_a_refused_reflection_leaves_the_leg_as_it_was_and_the_relay_enforces_the_hold() -> None:
    h = Harness()
    _user1_holds(h)
    before = h.call.legs["user2"].negotiated
    assert h.feed(ReinviteResult(leg="user2", status=488)) == []
    assert h.call.legs["user2"].negotiated == before  # RFC 3261 §14.1: parameters unchanged
    assert h.call.state is CallState.BRIDGED
    assert h.call.get_timer() == h.call._duration_deadline  # no retry, no inactivity deadline on hold
    # The relay was told at the hold: user1 gets nothing from user2 whatever user2 does.
    assert h.call._forward == (True, False)


def test_a_glare_is_retried_after_2_1_to_4_s_with_the_current_wish_and_at_most_three_times() -> None:
    h = Harness()
    _user1_holds(h)
    t0 = h.now
    assert h.feed(ReinviteResult(leg="user2", status=491)) == []
    retry_at = h.call.get_timer()
    assert retry_at is not None and t0 + 2.1 <= retry_at <= t0 + 4.0
    commands = h.run_until(retry_at)
    assert [type(c) for c in commands] == [Reinvite]
    assert commands[0].leg == "user2" and _direction(_sdp_of(commands[0])) is Direction.SENDONLY
    for _ in range(2):
        assert h.feed(ReinviteResult(leg="user2", status=491)) == []
        assert [type(c) for c in h.after(4.0)] == [Reinvite]
    assert h.feed(ReinviteResult(leg="user2", status=491)) == []
    assert h.after(4.0) == []  # three tries spent: the leg keeps its media as it is


def test_a_resume_while_a_retry_waits_replaces_it() -> None:
    h = Harness()
    _user1_holds(h)
    h.feed(ReinviteResult(leg="user2", status=503))
    commands = h.feed(OfferReceived(leg="user1", sdp=phone_answer(h.offers["user1"], **PJSUA2_USER1)))
    assert _direction(_sdp_of(commands[-1])) is Direction.SENDRECV
    assert [c for c in h.after(4.0) if isinstance(c, Reinvite)] == []


def test_holds_from_both_sides_merge() -> None:
    h = Harness()
    offer = _user1_holds(h)
    answer = phone_answer(offer, host="127.0.0.3", port=4004, direction="recvonly", version=2)
    h.feed(ReinviteResult(leg="user2", status=200, sdp=answer))
    # user2 holds too: mss answers inactive (user1 takes nothing, user2 takes nothing) and offers
    # user1 user2's wish; the relay forwards nothing.
    hold2 = phone_answer(h.offers["user2"], host="127.0.0.3", port=4004, direction="sendonly", version=3)
    commands = h.feed(OfferReceived(leg="user2", sdp=hold2))
    assert _direction(_sdp_of(commands[0])) is Direction.INACTIVE
    assert RelayForward(a_to_b=False, b_to_a=False) in commands
    reoffer1 = commands[-1]
    assert isinstance(reoffer1, Reinvite) and reoffer1.leg == "user1"
    assert _direction(reoffer1.sdp) is Direction.SENDONLY
    # user1, still holding, answers inactive (telephone-event now under our 101): its own wish
    # (sendonly) stands, so nothing is offered again and the forwarding stays off.
    answer1 = phone_answer(reoffer1.sdp, **PJSUA2_USER1, direction="inactive", version=3921304960)
    commands = h.feed(ReinviteResult(leg="user1", status=200, sdp=answer1))
    # (Our re-offer carried user1's 121, which it sends; it now expects 101, as user2 does.)
    assert commands == [RelayBridge(a_to_b={121: 101}, b_to_a={}), RelayForward(a_to_b=False, b_to_a=False)]
    assert h.call.legs["user1"].wants is Direction.SENDONLY
    # user1 resumes: it hears user2's music (sendonly to it), user2 gets nothing it does not want,
    # and user2 is offered sendrecv; still holding, it answers sendonly and stays held.
    resume1 = phone_answer(h.offers["user1"], **PJSUA2_USER1, version=3921304961)
    commands = h.feed(OfferReceived(leg="user1", sdp=resume1))
    assert _direction(_sdp_of(commands[0])) is Direction.SENDONLY
    assert RelayForward(a_to_b=False, b_to_a=True) in commands
    reoffer2 = commands[-1]
    assert isinstance(reoffer2, Reinvite) and _direction(reoffer2.sdp) is Direction.SENDRECV
    answer2 = phone_answer(reoffer2.sdp, host="127.0.0.3", port=4004, direction="sendonly", version=4)
    assert h.feed(ReinviteResult(leg="user2", status=200, sdp=answer2)) == []
    assert h.call.get_timer() == h.call._duration_deadline  # still on hold: no inactivity deadline
    # user2 resumes at last: everything flows again.
    resume2 = phone_answer(h.offers["user2"], host="127.0.0.3", port=4004, version=5)
    commands = h.feed(OfferReceived(leg="user2", sdp=resume2))
    assert _direction(_sdp_of(commands[0])) is Direction.SENDRECV
    assert RelayForward(a_to_b=True, b_to_a=True) in commands


def test_the_answer_in_the_ack_of_an_offerless_reinvite_moves_the_relay() -> None:
    h = Harness()
    h.bridge()
    # user2 re-INVITEd without SDP; the SIP side offered our last SDP in its 2xx; the ACK answers.
    ours = h.call.legs["user2"].local
    assert ours is not None and ours.last is not None
    answer = phone_answer(bytes(ours.last), host="127.0.0.7", port=4070, version=2)
    assert h.feed(RemoteAnswer(leg="user2", sdp=answer)) == [
        RelayRemote(leg="user2", host="127.0.0.7", port=4070, rtcp_port=4071),
    ]
    assert h.feed(RemoteAnswer(leg="user2", sdp=b"garbage")) == []  # unusable: nothing moves


def test_answers_to_our_offers_outside_the_bridge_change_nothing() -> None:
    h = Harness()
    h.answer_user1()
    answer = phone_answer(h.offers["user1"])
    assert h.feed(ReinviteResult(leg="user1", status=200, sdp=answer)) == []
    assert h.feed(RemoteAnswer(leg="user1", sdp=answer)) == []
    assert h.feed(ReinviteResult(leg="user1", status=491)) == []
    assert h.call.legs["user1"].reoffer_at is None  # nothing is retried before the bridge
