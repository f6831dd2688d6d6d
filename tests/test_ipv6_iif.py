"""IIF over IPv6 on real sockets: a listener on ``::1`` and a dual-stack one on ``::``.

An IPv4 AS reaching a ``::`` listener is seen as ``::ffff:a.b.c.d`` and must still be its IPv4
[peer_servers] entry; an IPv6 AS matches an IPv6 entry; a stranger of either family gets nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from pathlib import Path

import pytest

from mss.aio.iif_client import order_callback
from tests.test_iif_server import LOCAL, STRANGER, ack, lines, live, request, run

pytestmark = pytest.mark.timeout(60)

V6 = "::1"


def _ipv6_works() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as probe:
            probe.bind((V6, 0))
    except OSError:
        return False
    return True


requires_ipv6 = pytest.mark.skipif(not _ipv6_works(), reason="no IPv6 loopback on this host")


async def _refused(host: str, port: int, source: str) -> None:
    """The connection from ``source`` is closed before anything is read."""
    reader, writer = await asyncio.open_connection(host, port, local_addr=(source, 0))
    writer.write(request("stranger"))
    with contextlib.suppress(ConnectionResetError):  # closed with data unread: a RST
        assert await asyncio.wait_for(reader.read(), 5) == b""
    writer.close()


@requires_ipv6
def test_ipv6_peer_on_an_ipv6_listener(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with live(tmp_path, listen_host=V6, peers={"as6": V6}) as mss:  # type: ignore[arg-type]
            reader, writer = await asyncio.open_connection(V6, mss.port)
            writer.write(request("v6"))
            assert await lines(reader, 1) == [ack("v6")]
            assert mss.engine.held["v6"].origin.peer == "as6"
            mss.engine.finish("v6", 4)
            assert await lines(reader, 1) == [b"RESPONSE: id=v6;real_duration=4;"]
            writer.close()

    run(scenario)


@requires_ipv6
def test_dual_stack_listener_matches_ipv4_and_ipv6_entries(tmp_path: Path) -> None:
    async def scenario() -> None:
        peers = {"as4": LOCAL, "as6": V6}
        async with live(tmp_path, listen_host="::", peers=peers) as mss:  # type: ignore[arg-type]
            # an IPv4 AS through the dual-stack socket: seen as ::ffff:127.0.0.1, matched as 127.0.0.1
            reader4, writer4 = await asyncio.open_connection(LOCAL, mss.port)
            writer4.write(request("four"))
            assert await lines(reader4, 1) == [ack("four")]
            assert mss.engine.held["four"].origin.peer == "as4"
            reader6, writer6 = await asyncio.open_connection(V6, mss.port)
            writer6.write(request("six"))
            assert await lines(reader6, 1) == [ack("six")]
            assert mss.engine.held["six"].origin.peer == "as6"
            mss.engine.finish("four", 1)
            mss.engine.finish("six", 2)
            assert await lines(reader4, 1) == [b"RESPONSE: id=four;real_duration=1;"]
            assert await lines(reader6, 1) == [b"RESPONSE: id=six;real_duration=2;"]
            writer4.close()
            writer6.close()
            await _refused(LOCAL, mss.port, STRANGER)  # an IPv4 stranger, mapped, still a stranger
            assert "stranger" not in mss.engine.started

    run(scenario)


@requires_ipv6
def test_dual_stack_udp_answers_an_ipv4_peer_in_its_family(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with live(tmp_path, listen_host="::", peers={"as4": LOCAL}) as mss:  # type: ignore[arg-type]
            loop = asyncio.get_running_loop()
            received: asyncio.Queue[bytes] = asyncio.Queue()

            class Client(asyncio.DatagramProtocol):
                def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
                    received.put_nowait(data)

            transport, _ = await loop.create_datagram_endpoint(Client, local_addr=(LOCAL, 0))
            try:
                transport.sendto(request("u4"), (LOCAL, mss.port))
                assert await asyncio.wait_for(received.get(), 5) == ack("u4") + b"\r\n"
                assert mss.engine.held["u4"].origin.peer == "as4"
                mss.engine.finish("u4", 6)
                assert await asyncio.wait_for(received.get(), 5) == b"RESPONSE: id=u4;real_duration=6;\r\n"
            finally:
                transport.close()

    run(scenario)


@requires_ipv6
def test_ipv4_entry_does_not_admit_ipv6_loopback(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with live(tmp_path, listen_host="::", peers={"as4": LOCAL}) as mss:  # type: ignore[arg-type]
            await _refused(V6, mss.port, V6)
            assert mss.engine.started == []

    run(scenario)


@requires_ipv6
@pytest.mark.parametrize("udp", [False, True])
def test_mss_callback_orders_over_ipv6(tmp_path: Path, udp: bool) -> None:
    # what `mss callback --host ::1` runs, against an IPv6 listener and an IPv6 peer entry
    async def scenario() -> None:
        async with live(tmp_path, auto=True, listen_host=V6, peers={"as6": V6}) as mss:  # type: ignore[arg-type]
            status = await order_callback(V6, mss.port, "100", "101", 30, callback_id="cli6", udp=udp,
                                          timeout=10)
            assert status == 0
            assert mss.engine.started == ["cli6"]

    run(scenario)
