"""A finished callback is freed by reference counting: no reference cycle on the call path.

CPython's cyclic garbage collector is what stalls the event loop under load (a full collection over
hundreds of thousands of live objects takes 100-800 ms and, on a call path without cycles, frees
nothing). These tests run callbacks through the real stack, the sans-IO user agent, the call flow
and the engine's record on a fake clock (the PSS and the phones played by the test), and through
the asyncio engine on loopback (a UDP PSS played by the test), and assert that the collector finds
nothing of theirs to collect; and that what a finished leg armed does not keep it alive.
"""

from __future__ import annotations

import asyncio
import gc
import os
import socket
import struct
import time
import tracemalloc
import weakref
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

from mss import callflow as cf
from mss.aio.calls import CallEngine
from mss.callflow import CallbackCall, User
from mss.config import load
from mss.desk import CallbackDesk, Sender
from mss.engine import CallRecord, LegRef, carry_out_sip, flow_event
from mss.iif import CallbackRequest
from mss.journal import Journal
from mss.sip._timers import COMPACT_RATIO, TimerQueue
from mss.sip.events import LegAnswered
from mss.sip.leg import Leg
from mss.sip.message import Request, Response, make_response, parse_message
from mss.sip.transaction import ClientTransaction, RequestReceived, ServerTransaction, TransactionLayer
from tests.test_callflow import USER1, USER2, make_settings, phone_answer
from tests.test_sip_ua import Net, in_dialog, reply

#: A far end that asks for a session timer refreshed by mss: the leg arms a refresh 15 minutes away.
SESSION_TIMER = [("Session-Expires", "1800;refresher=uac"), ("Require", "timer")]


@contextmanager
def saved_garbage() -> Iterator[list[object]]:
    """Collect first; within, no automatic collection; at the end, what a collection found
    unreachable (kept by DEBUG_SAVEALL instead of freed)."""
    gc.collect()
    was_enabled = gc.isenabled()
    gc.disable()
    found: list[object] = []
    try:
        yield found
        gc.set_debug(gc.DEBUG_SAVEALL)
        gc.collect()
        found += gc.garbage
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        if was_enabled:
            gc.enable()


def of_mss(objects: list[object]) -> dict[str, int]:
    """The cyclic garbage made of mss's own classes, by class name."""
    out: dict[str, int] = {}
    for obj in objects:
        module = type(obj).__module__
        if module.startswith("mss.") or module == "mss":
            name = type(obj).__qualname__
            out[name] = out.get(name, 0) + 1
    return out


def alive(kind: type) -> int:
    """Objects of ``kind`` still alive (without collecting)."""
    return sum(1 for obj in gc.get_objects() if type(obj) is kind)


# --- callbacks through the sans-IO stack on a fake clock ----------------------------------------


class Stack:
    """One user agent for many callbacks; each with its call flow and record, as the engine runs them.
    The test plays the PSS: :meth:`settle` answers what mss sent as the scenario of its callback says."""

    def __init__(self) -> None:
        self.net = Net()
        self.records: dict[int, CallRecord] = {}
        self.scenario: dict[str, str] = {}  # Call-ID -> what the phone behind it does
        self.outcomes: list[str] = []

    @property
    def now(self) -> float:
        return self.net.now

    def start(self, seq: int, scenario: str) -> None:
        flow = CallbackCall(user1=USER1, user2=USER2, duration=600, settings=make_settings())
        self.records[seq] = CallRecord(flow=flow, caller="mss")
        self.pending_scenario = scenario
        self.run(seq, flow.start(self.now))

    def run(self, seq: int, commands: list[cf.Command]) -> None:
        for command in commands:
            if isinstance(command, cf.Invite | cf.Hangup | cf.AnswerOffer | cf.Reinvite):
                carry_out_sip(self.net.ua, seq, command, self.now)
            elif isinstance(command, cf.SendResponse):
                outcome = self.records[seq].outcome(command, 0.0)
                assert outcome is not None
                self.outcomes.append(outcome.result)
            elif isinstance(command, cf.Finished):
                del self.records[seq]

    def events(self) -> None:
        for event in self.net.events():
            found = flow_event(event)
            if found is not None and found[0].seq in self.records:
                ref, flow = found
                self.run(ref.seq, self.records[ref.seq].handle(flow, self.now, 0.0))

    def deliver(self, message: Request | Response) -> None:
        self.net.deliver(message)
        self.events()

    def settle(self) -> None:
        """Answer everything mss sent, as the phones of each callback's scenario would."""
        for _ in range(50):
            sent = self.net.sent(unique=True)
            if not sent:
                return
            for msg in sent:
                if isinstance(msg, Request):
                    self.answer(msg)
        raise AssertionError("mss kept sending")

    def answer(self, req: Request) -> None:
        if req.method == "INVITE" and req.to.tag is None:
            scenario = self.scenario.setdefault(req.call_id, self.pending_scenario)
            user2 = getattr(req.uri, "user", None) == USER2
            tag = "ph2" if user2 else "ph1"
            if scenario == "busy" and not user2:
                self.deliver(reply(req, 486))
                return
            self.deliver(reply(req, 180, tag=tag))
            if scenario == "cancelled" and user2:
                return  # rings until the AS cancels
            host, port = ("127.0.0.3", 4004) if user2 else ("127.0.0.2", 4002)
            answer = phone_answer(req.body, host=host, port=port)
            self.deliver(reply(req, 200, tag=tag, body=answer, extra=SESSION_TIMER))
        elif req.method == "ACK":
            return
        elif req.method == "CANCEL":
            self.deliver(reply(req, 200, tag="ph2"))
        elif req.method in ("BYE", "INVITE", "UPDATE", "PRACK"):
            body = b""
            if req.method == "INVITE" and req.body:
                body = phone_answer(req.body, host="127.0.0.2", port=4002, version=3921305014)
            self.deliver(reply(req, 200, tag=req.to.tag, body=body))


def leg_of(stack: Stack, seq: int, user: User) -> Leg:
    """The user agent's leg of callback ``seq`` calling ``user``."""
    return stack.net.ua._legs[LegRef(seq=seq, leg=user)]


def run_callbacks(stack: Stack, count: int) -> None:
    """``count`` callbacks of four kinds through the stack, every one to its end."""
    kinds = ("answered", "offer", "busy", "cancelled")
    for seq in range(count):
        kind = kinds[seq % len(kinds)]
        stack.start(seq, kind)
        stack.settle()
        record = stack.records.get(seq)
        if kind == "busy":
            assert record is None  # user1 busy: over at once
            continue
        assert record is not None
        flow = record.flow
        if kind == "cancelled":
            assert flow.state is cf.CallState.CALLING_USER2
            stack.run(seq, flow.cancel(stack.now))
            invite2 = leg_of(stack, seq, "user2").invite
            assert invite2 is not None
            sent = [r for r in stack.net.sent(unique=True) if isinstance(r, Request)]
            assert sorted(r.method for r in sent) == ["BYE", "CANCEL"]
            for request in sent:
                stack.answer(request)
                if request.method == "CANCEL":
                    stack.deliver(reply(invite2, 487, tag="ph2"))
            stack.settle()
            continue
        assert flow.state is cf.CallState.BRIDGED
        leg1, leg2 = leg_of(stack, seq, "user1"), leg_of(stack, seq, "user2")
        assert leg1._ack is not None and leg2._ack is not None
        ack1, ack2 = parse_message(leg1._ack), parse_message(leg2._ack)
        assert isinstance(ack1, Request) and isinstance(ack2, Request)
        if kind == "offer":
            # user2's phone holds: its re-INVITE reaches the call flow, which answers and re-INVITEs user1.
            assert leg2.local_sdp is not None
            hold = phone_answer(leg2.local_sdp, host="127.0.0.3", port=4004, direction="sendonly",
                                version=3921305013)
            stack.deliver(in_dialog("INVITE", ack2, 2, body=hold, branch=f"z9hG4bKhold{seq}"))
            stack.settle()
            stack.deliver(in_dialog("ACK", ack2, 2, branch=f"z9hG4bKhold{seq}"))
        # user1 hangs up; mss ends user2 with a BYE the PSS answers.
        stack.deliver(in_dialog("BYE", ack1, 3, branch=f"z9hG4bKbye{seq}"))
        stack.settle()
        assert seq not in stack.records, record.flow.state


def test_finished_callbacks_leave_no_cyclic_garbage() -> None:
    stack = Stack()
    with saved_garbage() as garbage:
        run_callbacks(stack, 24)
        assert stack.records == {}
        assert sorted(set(stack.outcomes)) == ["answered", "cancelled", "user1_busy"]
        stack.net.advance(60)  # every leg's linger and every transaction's timer is over
        stack.settle()
        counters = stack.net.ua.counters
        assert (counters["legs"], counters["dialogs"], counters["transactions"]) == (0, 0, 0)
    assert of_mss(garbage) == {}


def test_a_finished_leg_is_freed_after_its_linger_not_when_its_old_timers_were_due() -> None:
    stack = Stack()
    gc.collect()
    gc.disable()
    try:
        run_callbacks(stack, 8)
        assert alive(Leg) > 0  # lingering
        stack.net.advance(60)  # the linger (64*T1) is over; the session refresh was due in 900 s
        stack.settle()
        assert stack.net.ua.get_timer() is None
        assert (alive(Leg), alive(ClientTransaction), alive(ServerTransaction)) == (0, 0, 0)
    finally:
        gc.enable()


#: What a bridged callback may hold in the sans-IO stack (user agent with its legs, dialogs and lingering
#: INVITE transactions, call flow, record), in bytes: about 15 KiB measured, 39 KiB before the INVITE and
#: ACK were let go once answered, the per-leg Random dropped, the transactions' last responses and request
#: bytes no longer kept and the timer queue's stale entries no longer holding their owners.
BRIDGED_CALL_BYTES = 18 * 1024


def test_a_bridged_callback_holds_little_memory() -> None:
    stack = Stack()
    stack.start(0, "answered")  # one first: caches, interned strings
    stack.settle()
    count = 100
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for seq in range(1, count + 1):
            stack.start(seq, "answered")
            stack.settle()
        stack.net.advance(1)
        stack.settle()
        gc.collect()
        held = (tracemalloc.get_traced_memory()[0] - before) / count
    finally:
        tracemalloc.stop()
    assert all(record.flow.state is cf.CallState.BRIDGED for record in stack.records.values())
    assert len(stack.records) == count + 1
    assert held < BRIDGED_CALL_BYTES, f"{held:.0f} bytes per bridged callback"


# --- the timer queue holds no finished owner ------------------------------------------------------


class _Owner:
    """A timer owner that can be watched with a weak reference."""


def test_a_cleared_owner_is_not_kept_by_its_stale_heap_entries() -> None:
    timers = TimerQueue()
    owner, other = _Owner(), _Owner()
    watch = weakref.ref(owner)
    timers.set(owner, "refresh", 900.0)
    timers.set(owner, "linger", 32.0)
    timers.set(other, "x", 5.0)
    timers.clear(owner, "refresh")
    timers.clear_owner(owner)
    del owner
    assert watch() is None
    assert timers.next_deadline() == 5.0
    assert timers.pop_due(1000.0) == [(other, "x")]
    assert len(timers) == 0 and timers.next_deadline() is None


def test_re_arming_keeps_the_heap_proportional_to_what_is_armed() -> None:
    timers = TimerQueue()
    owners = [_Owner() for _ in range(10)]
    for i in range(20_000):
        timers.set(owners[i % 10], "retx", 100.0 + i)
    assert len(timers) == 10
    assert len(timers._heap) <= max(256, COMPACT_RATIO * len(timers)) + 1
    assert timers.pop_due(1e9) == [(owners[i % 10], "retx") for i in range(19_990, 20_000)]


# --- callbacks through the asyncio engine on loopback ---------------------------------------------


class _Pss(asyncio.DatagramProtocol):
    """The PSS and its phones over UDP: every INVITE rings and is answered, every BYE gets 200. The
    phones' media is at ``media``."""

    transport: asyncio.DatagramTransport

    def __init__(self, media: tuple[str, int]) -> None:
        self.media = media

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # a datagram endpoint's

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        msg = parse_message(data)
        if not isinstance(msg, Request) or msg.method == "ACK":
            return
        if msg.method == "INVITE" and msg.to.tag is None:
            tag = "ph2" if getattr(msg.uri, "user", None) == USER2 else "ph1"
            self.transport.sendto(reply(msg, 180, tag=tag).encode(), addr)
            answer = phone_answer(msg.body, host=self.media[0], port=self.media[1])
            self.transport.sendto(reply(msg, 200, tag=tag, body=answer).encode(), addr)
        else:
            self.transport.sendto(reply(msg, 200, tag=msg.to.tag).encode(), addr)


def _config(tmp_path: Path, rtp: str = "") -> Path:
    from mss_peers.net import free_port

    base = 12000 + (os.getpid() * 131 + int(time.time())) % 6000 // 128 * 128  # below the load bench's range
    pss_port = free_port()
    path = tmp_path / "config.ini"
    path.write_text(
        "[callback]\nlisten_host = 127.0.0.1\nlisten_port = 5080\nexternal_line_mode = no\n"
        "default_caller = 5550000\n"
        f"[sip]\nlocal_host = 127.0.0.1\nlocal_port = {free_port()}\npss_host = 127.0.0.1\n"
        f"pss_port = {pss_port}\n"
        f"[rtp]\nhost = 127.0.0.1\nport_min = {base}\nport_max = {base + 127}\n{rtp}"
        "[peer_servers]\nas1 = 127.0.0.1\n"
        f"[journal]\npath = {tmp_path / 'journal.sqlite3'}\n"
    )
    return path


@asynccontextmanager
async def running_engine(
    tmp_path: Path, max_calls: int, rtp: str = "", media: tuple[str, int] = ("127.0.0.2", 4002)
) -> AsyncIterator[tuple[CallbackDesk, CallEngine, list[bytes]]]:
    """A desk and a call engine on loopback, the PSS played by :class:`_Pss`; what the desk sent
    the AS (over UDP) is collected in the list."""
    cfg = load(_config(tmp_path, rtp))
    journal = Journal(cfg.journal.path)
    sent: list[bytes] = []

    def udp_send(data: bytes, addr: tuple[str, int]) -> bool:
        sent.append(data)
        return True

    desk = CallbackDesk(journal, max_calls=max_calls, extended_response=True,
                        udp_send=udp_send, wall_clock=time.time)
    engine = CallEngine(cfg, desk)
    desk.engine = engine
    loop = asyncio.get_running_loop()
    pss, _ = await loop.create_datagram_endpoint(lambda: _Pss(media),
                                                 local_addr=("127.0.0.1", cfg.sip.pss_port))
    try:
        await engine.open()
        yield desk, engine, sent
    finally:
        await engine.close()
        pss.close()
        journal.close()


def order(desk: CallbackDesk, count: int, duration: int) -> None:
    """The AS orders ``count`` callbacks over UDP."""
    origin = Sender(peer="as1", transport="udp", reply_addr=("127.0.0.1", 9))
    desk.handle([CallbackRequest(id=f"g{i}", user1=USER1, user2=USER2, duration=duration)
                 for i in range(count)], origin)


async def _engine_callbacks(tmp_path: Path, count: int) -> tuple[list[str], dict[str, int]]:
    async with running_engine(tmp_path, count) as (desk, engine, sent):
        with saved_garbage() as garbage:
            order(desk, count, duration=1)
            for _ in range(400):  # 1 s of talk, then the BYEs: 4 s at most
                if not desk.active and not engine.calls:
                    break
                await asyncio.sleep(0.01)
            assert not desk.active and not engine.calls
        return [line.decode() for line in sent if line.startswith(b"RESPONSE")], of_mss(garbage)


def test_callbacks_through_the_asyncio_engine_leave_no_cyclic_garbage(tmp_path: Path) -> None:
    responses, garbage = asyncio.run(_engine_callbacks(tmp_path, 12))
    assert len(responses) == 12
    assert all("result=answered" in line for line in responses), responses
    assert garbage == {}


# --- no pass over every call: the relay's receive times are read when a call's timer is due -------


async def bridged(engine: CallEngine, count: int) -> None:
    for _ in range(300):
        if len(engine.calls) == count and all(c.flow.state is cf.CallState.BRIDGED
                                              for c in engine.calls.values()):
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the callbacks were not bridged")


async def _timers_while_bridged(tmp_path: Path, count: int) -> tuple[int, int]:
    async with running_engine(tmp_path, count) as (desk, engine, _sent):
        order(desk, count, duration=600)
        await bridged(engine, count)
        before = {seq: call.timer for seq, call in engine.calls.items()}
        assert len(before) == count and None not in before.values()
        await asyncio.sleep(2.5)
        kept = sum(engine.calls[seq].timer is timer for seq, timer in before.items())
        engine.release_all()
        return kept, count


def test_bridged_calls_keep_their_loop_timers(tmp_path: Path) -> None:
    """A poll of the relay every second fed every bridged call its receive times and armed it a new
    loop timer: at 2,000 calls, thousands of timers a second, in one callback that stalled the loop."""
    kept, count = asyncio.run(_timers_while_bridged(tmp_path, 8))
    assert kept == count


def _rtp(seq: int) -> bytes:
    return struct.pack("!BBHII", 0x80, 0, seq, seq * 160, 0x1234) + bytes(160)  # PCMU, 20 ms


async def _inactivity(tmp_path: Path) -> tuple[bool, float, list[bytes]]:
    phone = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    phone.bind(("127.0.0.1", 0))
    media = phone.getsockname()
    one_second = "inactivity_timeout = 1\n"
    async with running_engine(tmp_path, 1, rtp=one_second, media=media) as (desk, engine, sent):
        order(desk, 1, duration=600)
        await bridged(engine, 1)
        (call,) = engine.calls.values()
        with phone:
            for i in range(60):  # 3 s of RTP from both phones: three times the inactivity timeout
                for port in (call.session.a_port, call.session.b_port):
                    phone.sendto(_rtp(i), ("127.0.0.1", port))
                await asyncio.sleep(0.05)
            up_while_sending = bool(engine.calls)
            silent_at = time.monotonic()
            for _ in range(400):
                if not engine.calls:
                    break
                await asyncio.sleep(0.01)
        return up_while_sending, time.monotonic() - silent_at, sent


def test_inactivity_is_measured_from_the_last_packet(tmp_path: Path) -> None:
    up_while_sending, released_after, sent = asyncio.run(_inactivity(tmp_path))
    assert up_while_sending
    assert 0.5 < released_after < 2.5
    (response,) = [line for line in sent if line.startswith(b"RESPONSE")]
    assert b"result=media_timeout" in response


def test_the_garbage_check_sees_a_cycle() -> None:
    """The check itself: a cycle of mss objects made inside it is reported."""
    with saved_garbage() as garbage:
        for _ in range(3):
            flow = CallbackCall(user1=USER1, user2=USER2, duration=60, settings=make_settings())
            flow.result = flow  # type: ignore[assignment]  # a cycle, on purpose
            del flow
    assert of_mss(garbage)["CallbackCall"] == 3


# --- mss run's collector policy ---------------------------------------------------------------------

_POLICY = """
import gc, json
from mss.aio.service import tune_gc
tune_gc()
full = gc.get_stats()[2]["collections"]
keep = [[i] for i in range(300_000)]  # survivors enough to set off full collections at the defaults
stats = gc.get_stats()
print(json.dumps({"frozen": gc.get_freeze_count(), "threshold": gc.get_threshold(),
                  "full": stats[2]["collections"] - full, "young": stats[0]["collections"]}))
"""


def test_mss_run_freezes_start_up_and_leaves_full_collections_to_the_loop() -> None:
    import json
    import subprocess
    import sys

    from mss.aio.service import GC_GEN0_THRESHOLD, GC_GEN1_THRESHOLD, GC_GEN2_THRESHOLD

    out = subprocess.run([sys.executable, "-c", _POLICY], capture_output=True, text=True, check=True,
                         timeout=60)
    found = json.loads(out.stdout)
    assert found["frozen"] > 10_000  # the modules mss imported, and what they made
    assert tuple(found["threshold"]) == (GC_GEN0_THRESHOLD, GC_GEN1_THRESHOLD, GC_GEN2_THRESHOLD)
    assert found["young"] > 100 and found["full"] == 0


# --- an answered leg keeps no INVITE, and still answers forks and late copies ---------------------------


def test_an_answered_leg_acks_forks_and_late_copies_from_its_dialog() -> None:
    from tests.test_sip_ua import ANSWER, OFFER

    net = Net()
    net.ua.invite("L1", "100", OFFER, net.now)
    inv = net.one("INVITE")
    challenge = 'Digest realm="127.0.0.1", nonce="abc", qop="auth", algorithm=MD5'
    net.deliver(reply(inv, 407, extra=[("Proxy-Authenticate", challenge)]))
    inv2 = next(m for m in net.sent() if isinstance(m, Request) and m.method == "INVITE")
    auth = inv2.headers.get("Proxy-Authorization")
    assert auth
    net.deliver(reply(inv2, 200, body=ANSWER))
    ack = net.one("ACK")
    (leg,) = net.ua._legs.values()
    assert leg.invite is None  # not kept for the life of the call

    # A second fork answers while the INVITE transaction is in Accepted: ACKed (credentials too), BYEd.
    net.deliver(reply(inv2, 200, tag="ph9", body=ANSWER, contact="<sip:100@127.0.0.1:5064>"))
    fork_ack, fork_bye = net.requests()
    assert (fork_ack.method, str(fork_ack.cseq), fork_ack.to.tag) == ("ACK", "2 ACK", "ph9")
    assert fork_ack.headers.get("Proxy-Authorization") == auth
    assert (fork_bye.method, str(fork_bye.cseq)) == ("BYE", "3 BYE")
    assert str(fork_bye.uri) == "sip:100@127.0.0.1:5064"
    assert fork_bye.headers.get_all("Route") == ack.headers.get_all("Route")

    # After the transaction: a late copy of the answer gets the same ACK; another fork's, ACK and BYE.
    net.advance(40)
    net.sent()
    net.deliver(reply(inv2, 200, body=ANSWER))
    (again,) = net.requests()
    assert again.encode() == ack.encode()
    net.deliver(reply(inv2, 200, tag="ph8", body=ANSWER))
    assert [(r.method, r.to.tag) for r in net.requests()] == [("ACK", "ph8"), ("BYE", "ph8")]
    assert [type(e) for e in net.events()] == [LegAnswered]


async def _full_collections(tmp_path: Path) -> list[int]:
    from mss.aio.service import GC_FULL_IDLE_CALLS, GC_FULL_MAX_INTERVAL, Service
    from mss.desk import Callback

    cfg = load(_config(tmp_path))
    journal = Journal(cfg.journal.path)
    desk = CallbackDesk(journal, max_calls=100, extended_response=False, udp_send=lambda d, a: True,
                        wall_clock=time.time)
    service = Service(cfg)
    origin = Sender(peer="as1", transport="udp", reply_addr=("127.0.0.1", 9))
    ran: list[int] = []

    def check() -> None:
        before = gc.get_stats()[2]["collections"]
        service._full_gc(desk)
        assert service._gc_timer is not None
        service._gc_timer.cancel()
        ran.append(gc.get_stats()[2]["collections"] - before)

    try:
        service._last_full_gc = time.monotonic()
        check()  # idle: one
        for seq in range(GC_FULL_IDLE_CALLS + 1):
            desk.active[seq] = Callback(seq=seq, id=f"b{seq}", user1=USER1, user2=USER2, duration=60,
                                        origin=origin, received_at=0.0)
        check()  # busy: none
        service._last_full_gc = time.monotonic() - GC_FULL_MAX_INTERVAL
        check()  # busy, but the last one is an hour ago: one
        check()  # and not again at once
    finally:
        journal.close()
    return ran


def test_full_collections_run_when_idle_or_overdue(tmp_path: Path) -> None:
    assert asyncio.run(_full_collections(tmp_path)) == [1, 0, 1, 0]


# --- answered transactions linger without their requests -----------------------------------------

_FAR_BYE = (
    "BYE sip:mss@127.0.0.1:5070 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK{n}\r\n"
    "Via: SIP/2.0/UDP 127.0.0.1:5062;branch=z9hG4bKphone;rport=5062\r\nMax-Forwards: 69\r\n"
    "From: <sip:100@127.0.0.1>;tag=ph1\r\nTo: <sip:mss@127.0.0.1>;tag=abc\r\nCall-ID: c{n}@127.0.0.1\r\n"
    "CSeq: 3 BYE\r\nContent-Length: 0\r\n\r\n"
)

#: What an answered BYE from the far end may hold while its server transaction lingers (64*T1 over
#: UDP, to answer copies): its answer's bytes and the transaction; 4.4 KiB when it kept the parsed BYE.
LINGERING_BYE_BYTES = 2048


def test_an_answered_transaction_lingers_without_its_request() -> None:
    layer = TransactionLayer()

    def far_end_bye(n: int) -> None:
        message = parse_message(_FAR_BYE.format(n=n).encode())
        layer.receive(message, ("127.0.0.1", 5060), reliable=False, now=0.0, in_dialog=True)
        for event in layer.next_events():
            assert isinstance(event, RequestReceived)
            layer.respond(event.key, make_response(event.request, 200, to_tag="abc"), 0.0)
        layer.data_to_send()

    far_end_bye(0)
    count = 300
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for n in range(1, count + 1):
            far_end_bye(n)
        gc.collect()
        held = (tracemalloc.get_traced_memory()[0] - before) / count
    finally:
        tracemalloc.stop()
    assert layer.lingering == count + 1
    assert held < LINGERING_BYE_BYTES, f"{held:.0f} bytes per lingering BYE"
    # A copy of the BYE is still answered from the transaction.
    layer.receive(parse_message(_FAR_BYE.format(n=7).encode()), ("127.0.0.1", 5060), reliable=False,
                  now=1.0, in_dialog=True)
    ((data, _dest),) = layer.data_to_send()
    assert data.startswith(b"SIP/2.0 200 OK\r\n")
