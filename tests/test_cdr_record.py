"""A callback's CDR quality from a real relay session: the call flow (on a fake clock) drives the
session through the engine's relay verbs, two sockets play the phones, and the CDR the record
builds holds what the relay counted, with known sequence gaps as lost packets and a lower MOS."""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Iterator

import pytest

from mss import callflow as cf
from mss.callflow import CallbackCall
from mss.engine import CallRecord, carry_out_relay, jitter_ms
from mss.journal import Cdr
from mss.relay import FIELDS, Relay, RelaySession, SessionStats
from tests.test_callflow import T0, USER1, USER2, make_settings, phone_answer
from tests.test_relay import HOST, Phone, rtp, wait_for

WALL0 = 1_780_000_000.0
PAYLOAD = 160  # bytes of PCMU per 20 ms packet
SENT = 100  # packets each phone sends
SKIP_EVERY = 6  # user1's sequence numbers i with i % 6 == 3 are never sent: 20 gaps in 0..119
SETTLE = 2.0  # seconds the relay may take to count what was sent (loopback: milliseconds)


@pytest.fixture
def relay() -> Iterator[Relay]:
    base = 20000 + ((os.getpid() * 11 + 5000) % 9000) // 4 * 4
    with Relay(HOST, base, base + 39) as r:
        yield r


@pytest.fixture
def phones() -> Iterator[tuple[Phone, Phone]]:
    a, b = Phone(), Phone()
    yield a, b
    a.close()
    b.close()


class Callback:
    """A call flow and its record, carried out on a real relay session; the test plays the PSS."""

    def __init__(self, session: RelaySession) -> None:
        self.session = session
        self.now = T0
        settings = make_settings(a_port=session.a_port, b_port=session.b_port)
        self.record = CallRecord(flow=CallbackCall(user1=USER1, user2=USER2, duration=600, settings=settings),
                                 caller="mss")
        self.offers: dict[str, bytes] = {}
        self.responses: list[cf.SendResponse] = []
        self.run(self.record.flow.start(self.now))

    def run(self, commands: list[cf.Command]) -> None:
        for command in commands:
            if isinstance(command, cf.Invite):
                self.offers[command.leg] = command.sdp
            elif isinstance(command, cf.SendResponse):
                self.responses.append(command)
            elif isinstance(command, cf.RelayRemote | cf.RelayPlay | cf.RelayStopPlay | cf.RelayForward
                            | cf.RelayBridge):
                carry_out_relay(self.session, command)

    def feed(self, event: cf.LegEvent, after: float = 1.0) -> None:
        self.now += after
        self.run(self.record.handle(event, self.now, WALL0 + self.now - T0))

    def answer(self, leg: cf.User, phone: Phone) -> None:
        sdp = phone_answer(self.offers[leg], host=HOST, port=phone.port)
        self.feed(cf.Answered(leg=leg, sdp=sdp, call_id=f"{leg}@test"))

    def sample(self, relay: Relay) -> None:
        """What the engine does when the call's timer reads the relay while bridged."""
        counters = relay.counters[self.session.slot]
        self.record.sample_jitter(counters[:, FIELDS.index("jitter_q4")],
                                  counters[:, FIELDS.index("last_rx_ns")])

    def end(self, event: cf.LegEvent) -> Cdr:
        self.feed(event)
        (command,) = self.responses
        outcome = self.record.outcome(command, WALL0 + self.now - T0, self.session.stats())
        assert outcome is not None and outcome.cdr is not None
        return outcome.cdr


def talk(callback: Callback, relay: Relay, user1: Phone, user2: Phone) -> None:
    """Both phones send :data:`SENT` packets, 2 ms apart with timestamps to match; user1 skips one
    sequence number in every :data:`SKIP_EVERY`. The engine's timer read comes halfway."""
    seq1 = [i for i in range(SENT * SKIP_EVERY // (SKIP_EVERY - 1)) if i % SKIP_EVERY != 3]
    assert len(seq1) == SENT
    for i in range(SENT):
        user1.send(callback.session.a_port, rtp(seq1[i], ts=16 * seq1[i], ssrc=0x1111))
        user2.send(callback.session.b_port, rtp(i, ts=16 * i, ssrc=0x2222))
        if i == SENT // 2:
            callback.sample(relay)
        time.sleep(0.002)
    wait_for(lambda: min(callback.session.stats().a.rtp_packets_in,
                         callback.session.stats().b.rtp_packets_in) == SENT, SETTLE)


def test_a_bridged_call_with_gaps_from_user1(relay: Relay, phones: tuple[Phone, Phone]) -> None:
    user1, user2 = phones
    callback = Callback(relay.open_session(bridged=False))
    callback.feed(cf.Progress(leg="user1", status=180))
    callback.answer("user1", user1)  # user1 hears ringback from here on
    callback.feed(cf.Progress(leg="user2", status=180))
    wait_for(lambda: callback.session.stats().a.played_packets > 0, SETTLE)
    callback.answer("user2", user2)
    assert callback.record.flow.state is cf.CallState.BRIDGED
    talk(callback, relay, user1, user2)
    cdr = callback.end(cf.Ended(leg="user2", by_remote=True))
    heard1, heard2 = user1.recv_all(), user2.recv_all()
    stats = callback.session.stats()
    callback.session.close()

    assert cdr.leg1 is not None and cdr.leg2 is not None
    # what each phone sent, as the relay received it; user1's gaps are its lost packets
    assert (cdr.leg1.packets_in, cdr.leg1.bytes_in, cdr.leg1.lost) == (SENT, SENT * (12 + PAYLOAD), 20)
    assert (cdr.leg2.packets_in, cdr.leg2.bytes_in, cdr.leg2.lost) == (SENT, SENT * (12 + PAYLOAD), 0)
    # what each phone got: user1 the ringback and user2's packets, user2 user1's packets
    assert cdr.leg1.packets_out == len(heard1) == stats.a.played_packets + SENT
    assert cdr.leg1.bytes_out == sum(len(p) for p in heard1)
    assert cdr.leg2.packets_out == len(heard2) == SENT
    assert cdr.leg2.bytes_out == sum(len(p) for p in heard2)
    # jitter: the halfway sample and the one at the release
    assert [samples.count for samples in callback.record.jitter.values()] == [2, 2]
    for leg in (cdr.leg1, cdr.leg2):
        assert leg.jitter_mean_ms is not None and leg.jitter_max_ms is not None
        assert 0 <= leg.jitter_mean_ms <= leg.jitter_max_ms
    # 20 of 120 lost (16.7 %) pulls user1's MOS far below the clean stream's
    assert cdr.leg1.mos is not None and cdr.leg2.mos is not None
    assert cdr.leg2.mos > 4.0 and cdr.leg1.mos < 3.5
    assert (cdr.codec, cdr.result, cdr.released_by) == ("PCMU", "answered", "user2")


def test_an_unanswered_leg_has_no_quality(relay: Relay, phones: tuple[Phone, Phone]) -> None:
    user1, _ = phones
    callback = Callback(relay.open_session(bridged=False))
    callback.answer("user1", user1)
    wait_for(lambda: callback.session.stats().a.played_packets > 0, SETTLE)
    cdr = callback.end(cf.Failed(leg="user2", status=486, reason="Busy Here"))
    callback.session.close()
    assert cdr.result == "user2_busy" and cdr.leg2 is None
    # user1 answered, heard ringback and sent nothing: counts, but no jitter or MOS
    assert cdr.leg1 is not None
    assert (cdr.leg1.packets_in, cdr.leg1.lost, cdr.leg1.jitter_mean_ms, cdr.leg1.mos) == (0, 0, None, None)
    assert cdr.leg1.packets_out > 0


def test_jitter_ms_reads_the_relay_counters_as_the_relay_does(
    relay: Relay, phones: tuple[Phone, Phone]
) -> None:
    user1, _ = phones
    session = relay.open_session(bridged=False)
    session.set_remote("a", HOST, user1.port)
    for i in range(30):  # arrival spacing and timestamps disagree: jitter grows
        user1.send(session.a_port, rtp(i, ts=160 * i * (i % 3)))
    wait_for(lambda: session.stats().a.rtp_packets_in == 30)
    counters = relay.counters[session.slot]
    stats = session.stats()
    assert stats.a.jitter_ms > 0
    assert jitter_ms(counters[:, FIELDS.index("jitter_q4")]) == {"user1": stats.a.jitter_ms,
                                                                  "user2": stats.b.jitter_ms}
    assert jitter_ms([128, 16]) == {"user1": 1.0, "user2": 0.125}
    session.close()


def test_counters_that_make_no_sense_cost_the_cdr_its_quality_not_the_response(
    relay: Relay, phones: tuple[Phone, Phone], caplog: pytest.LogCaptureFixture
) -> None:
    user1, user2 = phones
    callback = Callback(relay.open_session(bridged=False))
    callback.answer("user1", user1)
    callback.answer("user2", user2)
    callback.feed(cf.Ended(leg="user1", by_remote=True))
    (command,) = callback.responses
    real = callback.session.stats()
    callback.session.close()
    broken = SessionStats(a=dataclasses.replace(real.a, rtp_packets_in=-1), b=real.b)
    outcome = callback.record.outcome(command, WALL0, broken)
    assert outcome is not None and outcome.cdr is not None
    assert (outcome.result, outcome.cdr.leg1, outcome.cdr.leg2) == ("answered", None, None)
    assert "a CDR goes without media quality (LocalProtocolError: packet counts must not be negative" in (
        caplog.text
    )
