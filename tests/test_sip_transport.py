"""The asyncio SIP adapter on loopback sockets, against a scripted PSS (UDP and TCP)."""

from __future__ import annotations

import asyncio
import functools
import socket
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from typing import Any, cast

import pytest
import uvloop

from mss.aio.sip_transport import SipTransport
from mss.errors import TransportError
from mss.peers.net import free_port
from mss.sip.events import LegAnswered, LegEnded, LegFailed, UAEvent
from mss.sip.message import Request, Response, make_response, parse_message
from mss.sip.settings import UASettings
from mss.sip.transaction import TimerValues

HOST = "127.0.0.1"
SDP = (
    b"v=0\r\no=mss 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 30000 RTP/AVP 0\r\n"
)
TIMEOUT = 5.0


def uv(scenario: Callable[[], Coroutine[Any, Any, None]]) -> Callable[[], None]:
    """Run an async test on uvloop, the loop mss runs on."""

    @functools.wraps(scenario)
    def test() -> None:
        uvloop.run(asyncio.wait_for(scenario(), 30))

    return test


def settings(pss_port: int, transport: str = "udp", **kw: object) -> UASettings:
    return UASettings(
        local_host=HOST,
        local_port=free_port(HOST),
        transport=transport,
        pss_host=HOST,
        pss_port=pss_port,
        caller="mss",
        domain=HOST,
        register=False,
        **kw,  # type: ignore[arg-type]
    )


@dataclass
class Events:
    items: list[UAEvent] = field(default_factory=list)
    signal: asyncio.Event = field(default_factory=asyncio.Event)

    def __call__(self, event: UAEvent) -> None:
        self.items.append(event)
        self.signal.set()

    async def wait_for(self, kind: type, timeout: float = TIMEOUT) -> UAEvent:
        async with asyncio.timeout(timeout):
            while True:
                for item in self.items:
                    if isinstance(item, kind):
                        self.items.remove(item)
                        return item
                self.signal.clear()
                await self.signal.wait()


def answer(req: Request, status: int, body: bytes = b"") -> bytes:
    headers = [("Contact", f"<sip:100@{HOST}:5999>")] if status > 100 else []
    if body:
        headers.append(("Content-Type", "application/sdp"))
    return make_response(req, status, to_tag="pss1", headers=headers, body=body).encode()


class UdpPss(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.queue: asyncio.Queue[tuple[Request | Response, tuple[str, int]]] = asyncio.Queue()
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)  # uvloop's is not a subclass

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.queue.put_nowait((parse_message(data), addr))

    async def next(self, method: str) -> tuple[Request, tuple[str, int]]:
        async with asyncio.timeout(TIMEOUT):
            while True:
                msg, addr = await self.queue.get()
                if isinstance(msg, Request) and msg.method == method:
                    return msg, addr


@asynccontextmanager
async def udp_pss() -> AsyncIterator[tuple[UdpPss, int]]:
    loop = asyncio.get_running_loop()
    port = free_port(HOST)
    transport, proto = await loop.create_datagram_endpoint(UdpPss, local_addr=(HOST, port))
    try:
        yield proto, port
    finally:
        transport.close()


@asynccontextmanager
async def running(s: UASettings, events: Callable[[UAEvent], None]) -> AsyncIterator[SipTransport]:
    sip = SipTransport(s, on_event=events)
    await sip.open()
    try:
        yield sip
    finally:
        await sip.close(timeout=0.5)


@uv
async def test_udp_call_answered_and_ended_by_bye() -> None:
    events = Events()
    async with udp_pss() as (pss, port), running(settings(port), events) as sip:
        sip.ua.invite("L1", "100", SDP, time.monotonic())
        sip.flush()
        inv, addr = await pss.next("INVITE")
        assert addr == (HOST, sip.ua.settings.local_port)
        assert pss.transport is not None
        pss.transport.sendto(answer(inv, 180), addr)
        pss.transport.sendto(answer(inv, 200, SDP), addr)
        answered = await events.wait_for(LegAnswered)
        assert isinstance(answered, LegAnswered) and answered.sdp == SDP
        ack, _ = await pss.next("ACK")
        assert str(ack.cseq) == "1 ACK"
        # the PSS sends BYE in the dialog
        bye = (
            f"BYE sip:mss@{HOST}:{addr[1]} SIP/2.0\r\nVia: SIP/2.0/UDP {HOST}:{port};branch=z9hG4bKb1\r\n"
            f"From: {ack.headers.get('To')}\r\nTo: {ack.headers.get('From')}\r\nCall-ID: {ack.call_id}\r\n"
            "CSeq: 5 BYE\r\nContent-Length: 0\r\n\r\n"
        ).encode()
        pss.transport.sendto(bye, addr)
        ended = await events.wait_for(LegEnded)
        assert isinstance(ended, LegEnded) and ended.by_remote
        msg, _ = await asyncio.wait_for(pss.queue.get(), TIMEOUT)
        assert isinstance(msg, Response) and msg.status == 200 and str(msg.cseq) == "5 BYE"


@uv
async def test_udp_retransmits_on_its_timer_and_fails_with_408() -> None:
    events = Events()
    fast = settings(0)
    async with udp_pss() as (pss, port):
        s = replace(fast, pss_port=port, timer_values=TimerValues(t1=0.02, t2=0.08, t4=0.1))
        async with running(s, events) as sip:
            sip.ua.invite("L1", "100", SDP, time.monotonic())
            sip.flush()
            failed = await events.wait_for(LegFailed)
            assert isinstance(failed, LegFailed) and failed.status == 408
            await asyncio.sleep(0.2)  # let the last retransmission arrive
            count = 0
            while not pss.queue.empty():
                msg, _ = pss.queue.get_nowait()
                count += isinstance(msg, Request) and msg.method == "INVITE"
            assert count == 7


@uv
async def test_strangers_are_dropped() -> None:
    events = Events()
    async with udp_pss() as (_pss, port), running(settings(port), events) as sip:
        local = sip.ua.settings.local_port
        stranger_host = "127.0.0.2"
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind((stranger_host, 0))
            s.sendto(b"OPTIONS sip:x SIP/2.0\r\n\r\n", (HOST, local))
        reader, writer = await asyncio.open_connection(HOST, local, local_addr=(stranger_host, 0))
        async with asyncio.timeout(TIMEOUT):
            assert await reader.read() == b""  # closed before anything is read
        writer.close()
        for _ in range(50):
            if sip.ua.counters["dropped_strangers"] >= 1:
                break
            await asyncio.sleep(0.01)
        assert sip.ua.counters["dropped_strangers"] == 1


class TcpPss:
    """A PSS that accepts TCP connections and answers INVITEs with 200."""

    def __init__(self) -> None:
        self.connections = 0
        self.invites: list[Request] = []
        self.acks: list[Request] = []
        self.writers: list[asyncio.StreamWriter] = []
        self.got = asyncio.Event()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.writers.append(writer)
        buf = b""
        try:
            while True:
                chunk = await reader.read(65536)
                if not chunk:
                    return
                buf += chunk
                while b"\r\n\r\n" in buf:
                    head, _, rest = buf.partition(b"\r\n\r\n")
                    length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
                    data, buf = head + b"\r\n\r\n" + rest[:length], rest[length:]
                    msg = parse_message(data, exact=True)
                    assert isinstance(msg, Request)
                    if msg.method == "INVITE":
                        self.invites.append(msg)
                        writer.write(answer(msg, 200, SDP))
                    elif msg.method == "ACK":
                        self.acks.append(msg)
                    elif msg.method == "BYE":
                        writer.write(answer(msg, 200))
                    self.got.set()
        finally:
            writer.close()


@uv
async def test_tcp_reuses_one_connection_and_reconnects_after_a_loss() -> None:
    events = Events()
    pss = TcpPss()
    port = free_port(HOST)
    server = await asyncio.start_server(pss.handle, HOST, port)
    try:
        async with running(settings(port, "tcp"), events) as sip:
            for leg in ("L1", "L2"):
                sip.ua.invite(leg, "100", SDP, time.monotonic())
                sip.flush()
                await events.wait_for(LegAnswered)
            assert pss.connections == 1 and len(pss.invites) == 2
            assert pss.invites[0].top_via.transport == "TCP"
            # the PSS drops the connection; the next request opens a new one
            for w in pss.writers:
                w.close()
            for _ in range(100):
                if not sip.connections:
                    break
                await asyncio.sleep(0.01)
            sip.ua.hangup("L1", time.monotonic())
            sip.flush()
            ended = await events.wait_for(LegEnded)
            assert isinstance(ended, LegEnded) and not ended.by_remote
            assert pss.connections == 2
    finally:
        server.close()
        await server.wait_closed()


@uv
async def test_tcp_connect_failure_fails_the_leg_with_503() -> None:
    events = Events()
    port = free_port(HOST)  # nobody listens there
    async with running(settings(port, "tcp"), events) as sip:
        sip.ua.invite("L1", "100", SDP, time.monotonic())
        sip.flush()
        failed = await events.wait_for(LegFailed)
        assert isinstance(failed, LegFailed) and failed.status == 503


@uv
async def test_bind_failure_is_a_transport_error() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind((HOST, 0))
        port = taken.getsockname()[1]
        s = settings(5060)
        sip = SipTransport(replace(s, local_port=port), on_event=lambda e: None)
        with pytest.raises(TransportError, match="cannot bind SIP"):
            await sip.open()
