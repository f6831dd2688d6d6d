"""The SIP user agent's cost for one callback's signalling (pytest-benchmark; not part of the suite).

Run: .venv/bin/pytest bench/test_bench_sipcall.py --benchmark-only --benchmark-columns=median,min,rounds

Sans-IO and in memory, as the load benchmark's far end answers (Kamailio stateless: 180 then 200
with SDP): both legs of one callback invited, answered and ACKed, then hung up by mss (BYE, 200),
with every event read. The bytes are parsed and built exactly as on the wire; no sockets, no call
flow, no relay: what the SIP stack alone costs a callback.

The step benchmarks time one step of one leg each, the far end's work done in their setup: the
INVITE built and sent (``invite``), a 180 and a 200 received (``receive_180``, ``receive_200``; the
200's includes building and sending the ACK), the BYE built and sent (``hangup``).
"""

from __future__ import annotations

import random
from typing import Any

from mss.sip.events import LegAnswered, LegEnded, UAEvent
from mss.sip.message import Request, make_response, parse_message
from mss.sip.settings import UASettings
from mss.sip.ua import UserAgent

PSS = ("127.0.0.1", 5060)
_SDP = "v=0\r\no={o} IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio {port} RTP/AVP 0\r\n"
OFFER = _SDP.format(o="mss 1 1", port=30000).encode()
ANSWER = _SDP.format(o="ph 5 5", port=4000).encode()
CONTACT = ("Contact", "<sip:100@127.0.0.1:5062>")
SETTINGS = UASettings(local_host="127.0.0.1", local_port=5070, transport="udp", pss_host="127.0.0.1",
                      pss_port=5060, caller="mss", domain="127.0.0.1", register=False)


def _far_end(ua: UserAgent, now: float) -> int:
    """Answer what the UA sent as a stateless far end does; returns the messages it answered."""
    answered = 0
    for data, _dest in ua.data_to_send():
        msg = parse_message(data)
        if not isinstance(msg, Request) or msg.method == "ACK":
            continue
        answered += 1
        if msg.method == "INVITE":
            ringing = make_response(msg, 180, to_tag="far1", headers=[CONTACT])
            ua.receive_data(ringing.encode(), PSS, now)
            ok = make_response(msg, 200, to_tag="far1", body=ANSWER,
                               headers=[CONTACT, ("Content-Type", "application/sdp")])
            ua.receive_data(ok.encode(), PSS, now)
        else:
            ua.receive_data(make_response(msg, 200).encode(), PSS, now)
    return answered


def one_callback(ua: UserAgent, n: int, now: float) -> int:
    """Both legs of callback ``n`` answered, then hung up; returns the events the UA gave."""
    seen: list[UAEvent] = []
    for leg in (f"{n}a", f"{n}b"):
        ua.invite(leg, "100", OFFER, now)
        _far_end(ua, now)
        _far_end(ua, now)  # the ACK (nothing to answer)
    for leg in (f"{n}a", f"{n}b"):
        ua.hangup(leg, now)
        _far_end(ua, now)
    while (event := ua.next_event()) is not None:
        seen.append(event)
    answered = sum(isinstance(e, LegAnswered) for e in seen)
    ended = sum(isinstance(e, LegEnded) for e in seen)
    assert (answered, ended) == (2, 2), seen
    return len(seen)


def test_sip_stack_per_callback(benchmark: Any) -> None:
    ua = UserAgent(SETTINGS, rng=random.Random(1))
    count = iter(range(10**9))
    now = 1000.0

    def run() -> int:
        return one_callback(ua, next(count), now)

    assert benchmark(run) >= 4  # each leg answered and ended (checked in one_callback)


# --- one step of one leg --------------------------------------------------------------------------

STEP_ROUNDS = 2000
#: Room for every leg a step benchmark leaves up (no leg is refused for the dialog limit).
STEP_SETTINGS = UASettings(local_host="127.0.0.1", local_port=5070, transport="udp", pss_host="127.0.0.1",
                           pss_port=5060, caller="mss", domain="127.0.0.1", register=False,
                           max_dialogs=50_000, max_transactions=100_000)  # fmt: skip


class _Steps:
    """A UA and its legs, each brought to the step before the one timed."""

    def __init__(self) -> None:
        self.ua = UserAgent(STEP_SETTINGS, rng=random.Random(1))
        self.n = 0

    def invited(self) -> tuple[str, bytes, bytes]:
        """A new leg invited: its id, and the far end's 180 and 200 to its INVITE."""
        self.n += 1
        leg = f"s{self.n}"
        self.ua.invite(leg, "100", OFFER, 1000.0)
        (data, _dest), = self.ua.data_to_send()
        msg = parse_message(data)
        assert isinstance(msg, Request)
        ringing = make_response(msg, 180, to_tag="far1", headers=[CONTACT]).encode()
        ok = make_response(msg, 200, to_tag="far1", body=ANSWER,
                           headers=[CONTACT, ("Content-Type", "application/sdp")]).encode()  # fmt: skip
        return leg, ringing, ok

    def drain(self) -> None:
        self.ua.data_to_send()
        while self.ua.next_event() is not None:
            pass


def test_step_invite(benchmark: Any) -> None:
    steps = _Steps()

    def setup() -> tuple[tuple[str], dict[str, Any]]:
        steps.drain()
        steps.n += 1
        return (f"i{steps.n}",), {}

    def run(leg: str) -> None:
        steps.ua.invite(leg, "100", OFFER, 1000.0)
        assert len(steps.ua.data_to_send()) == 1  # the INVITE

    benchmark.pedantic(run, setup=setup, rounds=STEP_ROUNDS)


def test_step_receive_180(benchmark: Any) -> None:
    steps = _Steps()

    def setup() -> tuple[tuple[bytes], dict[str, Any]]:
        steps.drain()
        _leg, ringing, _ok = steps.invited()
        return (ringing,), {}

    def run(ringing: bytes) -> None:
        steps.ua.receive_data(ringing, PSS, 1000.0)
        assert steps.ua.next_event() is not None  # the leg rings

    benchmark.pedantic(run, setup=setup, rounds=STEP_ROUNDS)


def test_step_receive_200(benchmark: Any) -> None:
    steps = _Steps()

    def setup() -> tuple[tuple[bytes], dict[str, Any]]:
        steps.drain()
        _leg, ringing, ok = steps.invited()
        steps.ua.receive_data(ringing, PSS, 1000.0)
        return (ok,), {}

    def run(ok: bytes) -> None:
        steps.ua.receive_data(ok, PSS, 1000.0)
        assert len(steps.ua.data_to_send()) == 1  # the ACK

    benchmark.pedantic(run, setup=setup, rounds=STEP_ROUNDS)


def test_step_hangup(benchmark: Any) -> None:
    steps = _Steps()

    def setup() -> tuple[tuple[str], dict[str, Any]]:
        steps.drain()
        leg, ringing, ok = steps.invited()
        steps.ua.receive_data(ringing, PSS, 1000.0)
        steps.ua.receive_data(ok, PSS, 1000.0)
        steps.drain()
        return (leg,), {}

    def run(leg: str) -> None:
        steps.ua.hangup(leg, 1000.0)
        assert len(steps.ua.data_to_send()) == 1  # the BYE

    benchmark.pedantic(run, setup=setup, rounds=STEP_ROUNDS)
