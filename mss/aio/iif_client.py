"""The AS side of IIF, behind ``mss callback``: order one callback, print what comes back."""

from __future__ import annotations

import asyncio
import os
import sys
import time

import uvloop

from mss.errors import IIFError
from mss.iif import (
    Ack,
    CallbackRequest,
    CallbackResponse,
    Event,
    IIFConnection,
    Role,
    parse_datagram,
    serialize,
)

__all__ = ["new_callback_id", "order_callback", "run_callback"]


def new_callback_id() -> str:
    """A fresh id: time-ordered and unique enough for an operator's manual orders."""
    return f"cli-{int(time.time() * 1000):x}-{os.urandom(3).hex()}"


def _print(event: Event) -> None:
    print(serialize(event).decode("ascii").rstrip("\r\n"), flush=True)


async def order_callback(
    host: str,
    port: int,
    user1: str,
    user2: str,
    duration: int,
    *,
    callback_id: str | None = None,
    udp: bool = False,
    timeout: float,
) -> int:
    """Send a REQUEST, print the ACK and the RESPONSE; exit status 0 on ``code=ok`` and a RESPONSE."""
    try:
        request = CallbackRequest(
            id=callback_id or new_callback_id(), user1=user1, user2=user2, duration=duration
        )
    except Exception as exc:
        print(f"mss callback: {exc}", file=sys.stderr)
        return 2
    try:
        if udp:
            return await asyncio.wait_for(_over_udp(host, port, request), timeout)
        return await asyncio.wait_for(_over_tcp(host, port, request), timeout)
    except TimeoutError:
        print(f"mss callback: no RESPONSE within {timeout:.0f}s", file=sys.stderr)
    except OSError as exc:
        reason = exc.strerror or (os.strerror(exc.errno) if exc.errno else str(exc))
        print(f"mss callback: {host}:{port}: {reason}", file=sys.stderr)
    return 1


def run_callback(
    host: str,
    port: int,
    user1: str,
    user2: str,
    duration: int,
    *,
    callback_id: str | None = None,
    udp: bool = False,
    timeout: float,
) -> int:
    """:func:`order_callback` on a fresh uvloop event loop (what ``mss callback`` runs)."""
    return uvloop.run(
        order_callback(host, port, user1, user2, duration, callback_id=callback_id, udp=udp, timeout=timeout)
    )


def _verdict(event: Event, request: CallbackRequest, acked: bool) -> int | None:
    """Exit status once our ACK (fail) or RESPONSE arrived, else None to keep waiting."""
    if isinstance(event, Ack) and event.id == request.id:
        return None if event.ok else 1
    if isinstance(event, CallbackResponse) and event.id == request.id and acked:
        return 0
    return None


async def _over_tcp(host: str, port: int, request: CallbackRequest) -> int:
    reader, writer = await asyncio.open_connection(host, port)
    conn = IIFConnection(Role.CLIENT)
    writer.write(conn.send(request))
    acked = False
    try:
        while True:
            data = await reader.read(65536)
            if not data:
                print("mss callback: the server closed the connection", file=sys.stderr)
                return 1
            conn.receive_data(data, time.monotonic())
            while True:
                try:
                    event = conn.next_event()
                except IIFError as exc:
                    print(f"mss callback: unreadable message from the server: {exc}", file=sys.stderr)
                    continue
                if event is None:
                    break
                _print(event)
                acked = acked or (isinstance(event, Ack) and event.id == request.id and event.ok)
                status = _verdict(event, request, acked)
                if status is not None:
                    return status
    finally:
        writer.close()


class _Datagrams(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.queue: asyncio.Queue[bytes | OSError] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.queue.put_nowait(data)

    def error_received(self, exc: Exception) -> None:
        # On a connected UDP socket an ICMP port unreachable arrives as ConnectionRefusedError.
        if isinstance(exc, OSError):
            self.queue.put_nowait(exc)


async def _over_udp(host: str, port: int, request: CallbackRequest) -> int:
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.create_datagram_endpoint(_Datagrams, remote_addr=(host, port))
    try:
        transport.sendto(serialize(request))
        acked = False
        while True:
            data = await protocol.queue.get()
            if isinstance(data, OSError):
                raise data
            try:
                event = parse_datagram(data, role=Role.CLIENT)
            except IIFError as exc:
                print(f"mss callback: unreadable message from the server: {exc}", file=sys.stderr)
                continue
            _print(event)
            acked = acked or (isinstance(event, Ack) and event.id == request.id and event.ok)
            status = _verdict(event, request, acked)
            if status is not None:
                return status
    finally:
        transport.close()
