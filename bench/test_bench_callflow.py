"""SDP offer/answer and call-flow costs (pytest-benchmark; not part of the test suite).

Run: .venv/bin/pytest bench/test_bench_callflow.py --benchmark-only --benchmark-columns=median,min,rounds

- SDP: the offer to user1, reading user1's answer (a pjsua2 phone's, parsed from bytes), the offer to
  user2, each as the call flow does it; ``sdp_callback`` is all the SDP work of one callback.
- Call flow: the step that costs most (user1 answers: its answer is read, the ringback starts, user2
  is invited) and a whole callback's events from the REQUEST to the last leg ending, with the
  commands the engine would carry out (no SIP, no relay: the call flow alone).
- Engine: the same callback through :mod:`mss.engine` as the adapter drives it: the user agent's
  events turned into call-flow events, the commands carried out on a user agent and a relay session
  that do nothing, the call's timer read after every step, the outcome with its CDR.
- Desk: the callback desk's own work for a loop iteration's callbacks, from REQUEST to delivered
  RESPONSE, with a journal that keeps nothing (``test_bench_journal.py`` has the same with sqlite).
"""

from __future__ import annotations

from typing import Any

from mss import engine, sdp
from mss.callflow import (
    Answered,
    CallbackCall,
    CallSettings,
    Command,
    Ended,
    Finished,
    Invite,
    Progress,
    SendResponse,
)
from mss.sip import events as ua

SESSION = 1_700_000_000
SETTINGS = CallSettings(codecs=("PCMU", "PCMA", "G729"), ring_timeout=45.0, inactivity_timeout=60.0,
                        media_host="127.0.0.1", a_port=30000, b_port=30002, session_id=SESSION)


def _crlf(text: str) -> bytes:
    return "".join(f"{line}\r\n" for line in text.strip().splitlines()).encode()


def phone_answer(port: int, pt: int = 0) -> bytes:
    """What a pjsua2 phone answers to mss's offer (PCMU and telephone-event, its own RTCP port)."""
    return _crlf(f"""
v=0
o=- 3921305012 3921305012 IN IP4 127.0.0.1
s=pjmedia
b=AS:84
t=0 0
a=X-nat:0
m=audio {port} RTP/AVP {pt} 101
c=IN IP4 127.0.0.1
b=TIAS:64000
a=rtcp:{port + 1} IN IP4 127.0.0.1
a=sendrecv
a=rtpmap:{pt} PCMU/8000
a=rtpmap:101 telephone-event/8000
a=fmtp:101 0-16
a=ssrc:840713942 cname:5d1a7f2c0b6e4a39
""")


ANSWER_USER1 = phone_answer(4002)
ANSWER_USER2 = phone_answer(4004)


def offer_user1() -> bytes:
    offer = sdp.make_offer(host="127.0.0.1", port=30000, codecs=SETTINGS.codecs, session_id=SESSION,
                           version=1)
    return bytes(sdp.LocalSdp(session_id=SESSION).stamp(offer))


def test_sdp_offer_user1(benchmark: Any) -> None:
    assert benchmark(offer_user1).startswith(b"v=0\r\n")


def test_sdp_read_answer_user1(benchmark: Any) -> None:
    offer = sdp.parse_sdp(offer_user1())

    def read() -> sdp.Negotiated:
        return sdp.read_answer(offer, sdp.parse_sdp(ANSWER_USER1))

    negotiated = benchmark(read)
    assert (negotiated.codec.name, negotiated.remote_port) == ("PCMU", 4002)


def test_sdp_offer_user2(benchmark: Any) -> None:
    user1 = sdp.read_answer(sdp.parse_sdp(offer_user1()), sdp.parse_sdp(ANSWER_USER1))

    def offer() -> bytes:
        bridge = sdp.make_bridge_offer(user1, host="127.0.0.1", port=30002, session_id=SESSION, version=1)
        return bytes(sdp.LocalSdp(session_id=SESSION).stamp(bridge))

    assert b"m=audio 30002 RTP/AVP 0 101\r\n" in benchmark(offer)


def test_sdp_callback(benchmark: Any) -> None:
    """Every SDP step of one callback: two offers made, two answers parsed and read, the mapping."""

    def callback() -> tuple[dict[int, int], dict[int, int]]:
        offer1 = sdp.parse_sdp(offer_user1())
        user1 = sdp.read_answer(offer1, sdp.parse_sdp(ANSWER_USER1))
        bridge = sdp.make_bridge_offer(user1, host="127.0.0.1", port=30002, session_id=SESSION, version=1)
        offer2 = bytes(sdp.LocalSdp(session_id=SESSION).stamp(bridge))
        user2 = sdp.read_answer(sdp.parse_sdp(offer2), sdp.parse_sdp(ANSWER_USER2))
        return sdp.pt_mapping(user1, user2)

    assert benchmark(callback) == ({}, {})


def _answered_user1() -> tuple[CallbackCall, float]:
    call = CallbackCall(user1="100", user2="101", duration=60, settings=SETTINGS)
    now = 1000.0
    call.start(now)
    call.handle(Progress(leg="user1", status=180), now + 1)
    return call, now + 5


def test_callflow_user1_answers(benchmark: Any) -> None:
    """The heaviest step: user1's answer read, the ringback started, user2 invited with its offer."""

    def setup() -> tuple[tuple[CallbackCall, Answered, float], dict[str, Any]]:
        call, now = _answered_user1()
        return (call, Answered(leg="user1", sdp=ANSWER_USER1), now), {}

    def step(call: CallbackCall, event: Answered, now: float) -> list[Command]:
        return call.handle(event, now)

    commands = benchmark.pedantic(step, setup=setup, rounds=2000)
    assert isinstance(commands[-1], Invite) and commands[-1].leg == "user2"


def whole_callback() -> list[Command]:
    call = CallbackCall(user1="100", user2="101", duration=60, settings=SETTINGS)
    now = 1000.0
    out = call.start(now)
    out += call.handle(Progress(leg="user1", status=180), now + 1)
    out += call.handle(Answered(leg="user1", sdp=ANSWER_USER1), now + 5)
    out += call.handle(Progress(leg="user2", status=180), now + 6)
    out += call.handle(Answered(leg="user2", sdp=ANSWER_USER2), now + 10)
    out += call.handle(Ended(leg="user1", by_remote=True), now + 70)
    out += call.handle(Ended(leg="user2", by_remote=False), now + 70.1)
    return out


def test_callflow_whole_callback(benchmark: Any) -> None:
    commands = benchmark(whole_callback)
    response = next(c for c in commands if isinstance(c, SendResponse))
    assert (response.result, response.real_duration) == ("answered", 60)
    assert isinstance(commands[-1], Finished)


class _Agent:
    """A user agent that does nothing (the SIP side is measured in test_bench_sipcall.py)."""

    def invite(self, leg_id: object, user: str, sdp: bytes, now: float) -> None:
        pass

    def hangup(self, leg_id: object, now: float) -> None:
        pass


class _Session:
    """A relay session that does nothing (the relay is measured in test_bench_relay.py)."""

    closed = False

    def set_remote(self, leg: str, host: str, port: int, rtcp_port: int | None = None) -> None:
        pass

    def relatch(self, leg: str) -> None:
        pass

    def play(self, leg: str, frames: bytes, *, frame_bytes: int, payload_type: int, ptime_ms: int,
             samples_per_frame: int) -> None:
        pass

    def stop_play(self, leg: str) -> None:
        pass

    def set_forwarding(self, *, a_to_b: bool, b_to_a: bool) -> None:
        pass

    def set_pt_rewrite(self, from_leg: str, mapping: dict[int, int]) -> None:
        pass

    def bridge(self) -> None:
        pass


SEQ = 7
USER1, USER2 = engine.LegRef(seq=SEQ, leg="user1"), engine.LegRef(seq=SEQ, leg="user2")
#: The user agent's events of one callback, with their times.
UA_EVENTS: list[tuple[ua.UAEvent, float]] = [
    (ua.LegTrying(leg_id=USER1), 1000.1),
    (ua.LegRinging(leg_id=USER1, status=180, reason="Ringing"), 1001.0),
    (ua.LegAnswered(leg_id=USER1, sdp=ANSWER_USER1, call_id="c1"), 1005.0),
    (ua.LegTrying(leg_id=USER2), 1005.1),
    (ua.LegRinging(leg_id=USER2, status=180, reason="Ringing"), 1006.0),
    (ua.LegAnswered(leg_id=USER2, sdp=ANSWER_USER2, call_id="c2"), 1010.0),
    (ua.LegEnded(leg_id=USER1, by_remote=True, reason="BYE", answered=True), 1070.0),
    (ua.LegEnded(leg_id=USER2, by_remote=False, reason="hangup", answered=True), 1070.1),
]


def engine_callback() -> list[object]:
    record = engine.CallRecord(flow=CallbackCall(user1="100", user2="101", duration=60, settings=SETTINGS),
                               caller="200")
    agent, session = _Agent(), _Session()
    outcomes: list[object] = []

    def carry_out(commands: list[Command], now: float) -> None:
        for command in commands:
            if isinstance(command, engine.SipCommand):
                engine.carry_out_sip(agent, SEQ, command, now)  # type: ignore[arg-type]
            elif isinstance(command, engine.RelayCommand):
                engine.carry_out_relay(session, command)
            elif isinstance(command, SendResponse):
                outcomes.append(record.outcome(command, 1_700_000_000.0 + now))
        record.flow.get_timer()  # the adapter re-arms the call's timer after every step

    carry_out(record.flow.start(1000.0), 1000.0)
    for event, now in UA_EVENTS:
        found = engine.flow_event(event)
        if found is not None:
            carry_out(record.handle(found[1], now, 1_700_000_000.0 + now), now)
    return outcomes


def test_engine_whole_callback(benchmark: Any) -> None:
    outcomes = benchmark(engine_callback)
    assert [getattr(o, "result", None) for o in outcomes] == ["answered"]


# --- the desk -------------------------------------------------------------------------------------


class _NullJournal:
    """A journal that keeps nothing (its own cost is measured in test_bench_journal.py): group commit
    as the sqlite journal does it, so that the desk takes the path the service takes."""

    worker = None
    on_owed = None
    on_takeover = None

    def __init__(self) -> None:
        self.on_queued: Any = None
        self._group = 0
        self._seq = 0

    @property
    def pending(self) -> bool:
        return self._group > 0

    def _join(self) -> None:
        self._group += 1
        if self._group == 1 and self.on_queued is not None:
            self.on_queued()

    def commit(self, done: Any) -> None:
        self._group = 0
        done(None)

    def record_requests(self, callbacks: Any) -> list[int]:
        self._join()
        first = self._seq
        self._seq += len(callbacks)
        return list(range(first, self._seq))

    def record_response(self, seq: int, response: Any, at: float, cdr: Any = None, *,
                        claim: bool = False) -> str:
        self._join()
        return "RESPONSE"

    def mark_bridged(self, seq: int, at: float) -> None:
        pass

    def mark_delivered(self, seq: int, at: float) -> None:
        pass

    def record_ports(self, seq: int, ports: Any) -> None:
        pass


class _DeskOutlet:
    """A TCP connection to the AS that takes every write."""

    peer = "as1"

    def write(self, data: bytes) -> bool:
        return True

    def trial_started(self) -> None:
        pass


class _DeskEngine:
    """Starts nothing: the callbacks' ends are fed to the desk by the benchmark."""

    def __init__(self) -> None:
        self.started: list[Any] = []  # this round's (emptied by the benchmark each round)
        self.total = 0

    def refusal(self, pending: int) -> str | None:
        return None

    def start(self, callback: Any) -> None:
        self.started.append(callback)
        self.total += 1

    def cancel(self, seq: int) -> None:
        pass

    def release_all(self) -> None:
        pass


#: Callbacks whose writes meet in one event-loop iteration in the desk benchmark (as in
#: test_bench_journal.py's middle case).
DESK_PER_ITERATION = 16


def test_desk_callbacks(benchmark: Any) -> None:
    """The desk's own work for ``DESK_PER_ITERATION`` callbacks (a round's median divided by it is a
    callback's), with a journal that keeps nothing: each REQUEST taken on its own TCP connection and
    ACKed at the iteration's flush, the callbacks started, bridged, ended with a CDR, and their
    RESPONSEs delivered at the next flush. test_bench_journal.py measures the same with sqlite."""
    from mss.desk import CallbackDesk, Outcome, Sender
    from mss.iif import CallbackRequest
    from mss.journal import Cdr

    journal = _NullJournal()
    scheduled: list[Any] = []
    desk = CallbackDesk(journal, max_calls=100_000, extended_response=True,  # type: ignore[arg-type]
                        udp_send=lambda data, addr: True, wall_clock=lambda: 1_700_000_000.0,
                        schedule=scheduled.append)
    engine_ = _DeskEngine()
    desk.engine = engine_
    outlets = [_DeskOutlet() for _ in range(DESK_PER_ITERATION)]
    for outlet in outlets:
        desk.open_outlet(outlet)
    serial = [0]
    # The engine's outcome of every callback (made once: the engine's cost, not the desk's).
    cdr = Cdr(caller="5551000", leg1_call_id="a@mss", leg2_call_id="b@mss", leg1_code=200, leg2_code=200,
              codec="PCMU", leg1_answered_at=1.0, leg2_answered_at=1.0, released_at=2.0,
              released_by="user1", result="answered", reason="user1 hung up")
    outcome = Outcome(real_duration=60, result="answered", code=200, cdr=cdr)

    def iteration() -> None:
        run, scheduled[:] = list(scheduled), []
        for function in run:
            function()

    def callbacks() -> None:
        for outlet in outlets:
            serial[0] += 1
            request = CallbackRequest(id=f"b{serial[0]}", user1="+4930123456", user2="+4930654321",
                                      duration=60)
            desk.handle([request], Sender(peer="as1", transport="tcp", outlet=outlet))
        iteration()
        started, engine_.started = engine_.started, []
        for callback in started:
            desk.bridged(callback.seq)
        for callback in started:
            desk.finish(callback.seq, outcome)
        iteration()

    benchmark(callbacks)
    assert desk.active == {} and engine_.total == serial[0]
    benchmark.extra_info["callbacks_per_round"] = DESK_PER_ITERATION
