"""The call engine's pure part: leg references, the relay map, the names shared by the layers, and a
callback driven through the real (sans-IO) user agent on a fake clock, the PSS played by the test."""

from __future__ import annotations

import ast
import os
import socket
import struct
import time
from pathlib import Path
from typing import get_args

import numpy as np
import pytest

from mss import callflow as cf
from mss import tones
from mss.callflow import CallbackCall
from mss.config import check_text
from mss.desk import Outcome
from mss.engine import (
    RELAY_LEG,
    CallRecord,
    LegRef,
    call_settings,
    carry_out_relay,
    carry_out_sip,
    flow_event,
    last_rx,
)
from mss.errors import LocalProtocolError
from mss.iif import RESULTS
from mss.journal import Cdr
from mss.relay import FIELDS, Relay
from mss.sip import events as ua
from mss.sip.message import Request, Response
from tests.test_callflow import T0, USER1, USER2, make_settings, phone_answer, sdp_fixture
from tests.test_sip_ua import Net, in_dialog, reply

#: Server-to-server mode with the call settings changed from their defaults.
CONFIG = """
[callback]
listen_port = 5080
external_line_mode = no
default_caller = 4930100
audio_codecs = PCMA, PCMU
ring_timeout = 20

[sip]
pss_host = 127.0.0.1

[rtp]
inactivity_timeout = 15

[peer_servers]
as1 = 192.0.2.10
"""


def test_results_are_the_iif_results() -> None:
    assert set(get_args(cf.Result)) == RESULTS


def test_call_flow_events_are_named_apart_from_the_user_agents() -> None:
    flow = {name for name in cf.__all__ if isinstance(getattr(cf, name), type)}
    sip = {name for name in ua.__all__ if isinstance(getattr(ua, name), type)}
    assert {"Answered", "Ended", "Failed", "OfferReceived", "Progress"} <= flow
    assert flow & sip == set()


def test_no_two_public_classes_in_mss_share_a_name() -> None:
    where: dict[str, list[str]] = {}
    root = Path(__file__).parent.parent / "mss"
    for path in sorted(root.rglob("*.py")):
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            if isinstance(node, ast.ClassDef) and not node.name.startswith("_"):
                where.setdefault(node.name, []).append(path.relative_to(root).as_posix())
    assert len(where) > 50
    assert {name: files for name, files in where.items() if len(files) > 1} == {}


def test_timers_are_named() -> None:
    assert [t.value for t in cf.Timer] == [
        "duration", "ring_user1", "ring_user2", "media", "release", "reoffer_user1", "reoffer_user2",
    ]


def test_leg_ref_is_a_value() -> None:
    ref = LegRef(seq=7, leg="user2")
    assert ref == LegRef(seq=7, leg="user2")
    assert ref != LegRef(seq=7, leg="user1")
    assert {ref: 1}[LegRef(seq=7, leg="user2")] == 1
    assert str(ref) == "7.user2"


@pytest.mark.parametrize(("seq", "leg"), [(-1, "user1"), (3, "user3"), (3, "a"), (3, "")])
def test_leg_ref_refuses_what_names_no_leg(seq: int, leg: str) -> None:
    with pytest.raises(LocalProtocolError):
        LegRef(seq=seq, leg=leg)  # type: ignore[arg-type]


def test_one_relay_leg_per_party() -> None:
    assert dict(RELAY_LEG) == {"user1": "a", "user2": "b"}
    assert tuple(RELAY_LEG) == cf.USERS


def test_last_rx_reads_the_relay_rows_per_party() -> None:
    assert last_rx([0, 0]) == {"user1": None, "user2": None}
    assert last_rx([2_500_000_000, 0]) == {"user1": 2.5, "user2": None}
    assert last_rx([0, 7_000_000_000]) == {"user1": None, "user2": 7.0}
    row = np.array([1_000_000_000, 0], dtype=np.uint64)  # as the relay's counters hold them
    assert last_rx(row) == {"user1": 1.0, "user2": None}


# --- a callback through the real (sans-IO) user agent, on a fake clock -----------------------------

SEQ = 42
WALL0 = 1_780_000_000.0  # the wall clock at T0


class Engine:
    """One callback: the call flow and its record, the user agent, the PSS played by the test."""

    def __init__(self) -> None:
        self.net = Net()
        self.flow = CallbackCall(user1=USER1, user2=USER2, duration=600, settings=make_settings())
        self.record = CallRecord(flow=self.flow, caller="mss")
        self.relay: list[cf.Command] = []
        self.outcomes: list[Outcome] = []
        self.flow_events: list[cf.LegEvent] = []
        self.run(self.flow.start(self.now))

    @property
    def now(self) -> float:
        return self.net.now

    def run(self, commands: list[cf.Command]) -> list[cf.Command]:
        for command in commands:
            if isinstance(command, cf.Invite | cf.Hangup | cf.AnswerOffer | cf.Reinvite):
                carry_out_sip(self.net.ua, SEQ, command, self.now)
            elif isinstance(command, cf.SendResponse):
                outcome = self.record.outcome(command, WALL0 + self.now - T0)
                assert outcome is not None
                self.outcomes.append(outcome)
            elif not isinstance(command, cf.MarkBridged | cf.Finished):
                self.relay.append(command)
        return commands

    def deliver(self, message: Request | Response) -> list[cf.Command]:
        """The PSS sends ``message``; the UA's events go to the call flow; its commands come back."""
        self.net.deliver(message)
        commands: list[cf.Command] = []
        for event in self.net.events():
            found = flow_event(event)
            if found is None:
                continue
            ref, flow = found
            assert ref.seq == SEQ
            self.flow_events.append(flow)
            commands += self.run(self.record.handle(flow, self.now, WALL0 + self.now - T0))
        return commands


def test_a_callback_through_the_user_agent_reaches_the_call_flow_and_builds_its_cdr() -> None:
    e = Engine()
    (inv1,) = e.net.requests("INVITE")
    assert inv1.uri.user == USER1
    e.deliver(reply(inv1, 100, tag=None))  # 100 Trying means nothing to the call flow
    e.deliver(reply(inv1, 180))
    e.net.clock.advance(3)
    commands = e.deliver(reply(inv1, 200, body=phone_answer(inv1.body, host="127.0.0.2", port=4002)))
    assert [type(c) for c in commands] == [cf.RelayRemote, cf.RelayPlay, cf.Invite]
    sent = e.net.requests()
    assert [r.method for r in sent] == ["ACK", "INVITE"]
    ack1, inv2 = sent
    assert inv2.uri.user == USER2
    e.net.clock.advance(5)
    e.deliver(reply(inv2, 200, tag="ph2", body=phone_answer(inv2.body, host="127.0.0.3", port=4004)))
    (ack2,) = e.net.requests("ACK")
    assert e.flow.state is cf.CallState.BRIDGED
    assert [type(ev) for ev in e.flow_events] == [cf.Progress, cf.Answered, cf.Answered]

    # user2's phone re-INVITEs without an offer: the UA offers our last SDP, the answer is in the ACK.
    e.deliver(in_dialog("INVITE", ack2, 2))
    (ok,) = [m for m in e.net.sent() if isinstance(m, Response)]
    assert ok.status == 200 and ok.body == inv2.body
    answer = phone_answer(inv2.body, host="127.0.0.3", port=4004, version=3921305013)
    assert e.deliver(in_dialog("ACK", ack2, 2, body=answer, branch="z9hG4bKfar2")) == []
    assert e.flow_events[-1] == cf.RemoteAnswer(leg="user2", sdp=answer)

    # user1 holds: answered, and reflected to user2 with our re-INVITE, whose result comes back.
    commands = e.deliver(in_dialog("INVITE", ack1, 2, body=sdp_fixture("pjsua2_hold_sendonly.sdp"),
                                    branch="z9hG4bKfar4"))
    assert (type(commands[0]), type(commands[-1])) == (cf.AnswerOffer, cf.Reinvite)
    reinvite = next(r for r in e.net.requests("INVITE") if r.call_id == inv2.call_id)
    held = phone_answer(reinvite.body, host="127.0.0.3", port=4004, direction="recvonly", version=3921305014)
    assert e.deliver(reply(reinvite, 200, tag="ph2", body=held)) == []
    assert e.flow_events[-1] == cf.ReinviteResult(leg="user2", status=200, sdp=held)
    assert e.flow.state is cf.CallState.BRIDGED

    # user1 hangs up 60 s after the bridge: BYE to user2, and the outcome with its CDR.
    e.net.clock.advance(60)
    e.deliver(in_dialog("BYE", ack1, 3, branch="z9hG4bKfar3"))
    assert [r.call_id for r in e.net.requests("BYE")] == [inv2.call_id]
    (outcome,) = e.outcomes
    assert (outcome.real_duration, outcome.result, outcome.code) == (60, "answered", 0)
    assert outcome.cdr == Cdr(
        caller="mss", leg1_call_id=inv1.call_id, leg2_call_id=inv2.call_id, leg1_code=200, leg2_code=200,
        codec="PCMU", leg1_answered_at=WALL0 + 3, leg2_answered_at=WALL0 + 8, released_at=WALL0 + 68,
        released_by="user1", result="answered", reason="user1 hung up",
    )
    assert e.record.outcome(cf.SendResponse(real_duration=0, result="shutdown", code=0, released_by="mss",
                                            reason="again"), WALL0) is None  # one outcome per callback


def test_user_agent_events_of_no_callback_leg_mean_nothing_to_the_call_flow() -> None:
    assert flow_event(ua.LegAnswered(leg_id="L1", sdp=b"", call_id="x")) is None
    assert flow_event(ua.Registered(expires=300)) is None
    assert flow_event(ua.LegTrying(leg_id=LegRef(seq=1, leg="user1"))) is None
    ref = LegRef(seq=1, leg="user2")
    assert flow_event(ua.LegAnswered(leg_id=ref, sdp=b"", call_id="c")) == (
        ref, cf.Answered(leg="user2", sdp=None, call_id="c")
    )


def test_call_settings_come_from_the_config() -> None:
    checked = check_text(CONFIG)
    assert checked.errors == [] and checked.config is not None
    config = checked.config
    s = call_settings(config, a_port=30010, b_port=30012, session_id=9)
    assert s == cf.CallSettings(codecs=("PCMA", "PCMU"), ring_timeout=20, inactivity_timeout=15,
                                media_host="127.0.0.1", a_port=30010, b_port=30012, session_id=9)


# --- relay commands on a real relay session (loopback) ----------------------------------------------


def test_relay_commands_on_a_real_session() -> None:
    base = 20000 + (os.getpid() * 13 % 9000) // 4 * 4
    with Relay("127.0.0.1", base, base + 39) as relay:
        session = relay.open_session(bridged=False)
        carry_out_relay(session, cf.RelayRemote(leg="user2", host="127.0.0.3", port=4004, rtcp_port=4005))
        stats = session.stats()
        assert (stats.a.remote, stats.b.remote) == (None, ("127.0.0.3", 4004))
        carry_out_relay(session, cf.RelayPlay(leg="user1", codec="PCMU", payload_type=0, ptime=20))
        assert session.playing("a") and not session.playing("b")
        carry_out_relay(session, cf.RelayStopPlay(leg="user1"))
        assert not session.playing("a")
        carry_out_relay(session, cf.RelayPlay(leg="user1", codec="G729", payload_type=18, ptime=20))
        assert session.playing("a") is (tones.g729_unavailable() is None)  # silent without bcg729
        carry_out_relay(session, cf.RelayForward(a_to_b=False, b_to_a=True))
        carry_out_relay(session, cf.RelayBridge(a_to_b={101: 96}, b_to_a={96: 101}))
        session.close()
        carry_out_relay(session, cf.RelayStopPlay(leg="user1"))  # a closed session: nothing to do


def test_last_rx_of_a_real_session_names_the_party_that_sent() -> None:
    base = 20000 + (os.getpid() * 17 % 9000) // 4 * 4
    phone = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with Relay("127.0.0.1", base, base + 39) as relay, phone:
        phone.bind(("127.0.0.1", 0))
        session = relay.open_session(bridged=False)
        host, port = phone.getsockname()
        carry_out_relay(session, cf.RelayRemote(leg="user2", host=host, port=port, rtcp_port=port + 1))
        column = FIELDS.index("last_rx_ns")
        assert last_rx(relay.counters[session.slot, :, column]) == {"user1": None, "user2": None}
        seen: dict[cf.User, float | None] = {}
        for seq in range(50):  # user2's phone speaks until the relay has counted a packet (a second at most)
            packet = struct.pack("!BBHII", 0x80, 0, seq, seq * 160, 0x1234) + bytes(160)  # PCMU, 20 ms
            phone.sendto(packet, ("127.0.0.1", session.b_port))
            time.sleep(0.02)
            seen = last_rx(relay.counters[session.slot, :, column])
            if seen["user2"] is not None:
                break
        assert seen["user1"] is None
        assert seen["user2"] is not None and abs(seen["user2"] - time.monotonic()) < 5


def test_the_ringback_handed_to_the_relay_is_made_once_per_codec_and_packet_time() -> None:
    for codec, ptime in (("PCMU", 20), ("PCMA", 30), ("G729", 20)):
        frames, size = tones.ringback_play(codec, ptime)
        assert frames == tones.ringback_frames(codec, ptime_ms=ptime)
        assert size == tones.frame_bytes(codec, ptime)
        assert tones.ringback_play(codec, ptime)[0] is frames
    with pytest.raises(LocalProtocolError, match=r"ptime 25 ms is not a multiple of G\.729's 10 ms frame"):
        tones.ringback_play("G729", 25)
