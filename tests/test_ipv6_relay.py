"""The media relay over IPv6 on real sockets: a relay on ``::1`` (both back ends, userspace and
kernel paths) and a dual-stack relay on ``::`` whose legs face different families.

The phones are sockets of this test; packets are built here and compared byte for byte as they
come out of the relay.
"""

from __future__ import annotations

import ipaddress
import socket
import struct
from collections.abc import Iterator

import pytest

from mss._kfwd import KernelPathUnavailable
from mss.errors import RelayError
from mss.relay import Relay, _interface_of
from tests.test_relay import BACKENDS, KERNEL_MISSING, PATHS, Phone, _port_base, rtcp_sr, rtp

pytestmark = pytest.mark.timeout(60)

V6 = "::1"
V4 = "127.0.0.1"


def _ipv6_works() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as probe:
            probe.bind((V6, 0))
    except OSError:
        return False
    return True


pytestmark = [pytestmark, pytest.mark.skipif(not _ipv6_works(), reason="no IPv6 loopback here")]


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(params=PATHS)
def path(request: pytest.FixtureRequest) -> str:
    if request.param == "kernel" and KERNEL_MISSING is not None:
        pytest.skip(f"the kernel fast path cannot load here: {KERNEL_MISSING}")
    return str(request.param)


@pytest.fixture
def relay6(backend: str, path: str) -> Iterator[Relay]:
    base = _port_base(20 + BACKENDS.index(backend))
    kernel = "yes" if path == "kernel" else "no"
    with Relay(V6, base, base + 99, backend=backend, kernel_forwarding=kernel, learn_ms=0) as r:
        assert r.kernel_forwarding_active == (path == "kernel")
        yield r


@pytest.fixture
def phones6() -> Iterator[tuple[Phone, Phone]]:
    a, b = Phone(V6, V6), Phone(V6, V6)
    yield a, b
    a.close()
    b.close()


def _talk(s_a_port: int, s_b_port: int, a: Phone, b: Phone, first: int, count: int) -> None:
    """``count`` RTP packets each way; each comes out unchanged, from the far leg's relay port."""
    for seq in range(first, first + count):
        a.send(s_a_port, rtp(seq, ts=seq * 160))
        data, source = b.recv()
        assert data == rtp(seq, ts=seq * 160)
        assert source[1] == s_b_port
        b.send(s_b_port, rtp(seq, ts=seq * 160, ssrc=0x55667788))
        data, source = a.recv()
        assert data == rtp(seq, ts=seq * 160, ssrc=0x55667788)
        assert source[1] == s_a_port


def test_ipv6_bytes_in_are_bytes_out_rtp_and_rtcp(relay6: Relay, phones6: tuple[Phone, Phone]) -> None:
    a, b = phones6
    s = relay6.open_session()
    s.set_remote("a", V6, a.port, rtcp_port=a.rtcp_port)
    s.set_remote("b", V6, b.port, rtcp_port=b.rtcp_port)
    _talk(s.a_port, s.b_port, a, b, 1, 3)
    # RTCP each way, from the RTCP ports the relay latched
    a.send_rtcp(s.a_port, rtcp_sr())
    assert b.recv(rtcp=True) == (rtcp_sr(), (V6, s.b_port + 1))
    b.send_rtcp(s.b_port, rtcp_sr(0x55667788))
    assert a.recv(rtcp=True) == (rtcp_sr(0x55667788), (V6, s.a_port + 1))
    # latched: on the kernel path the directions are the kernel's now, and still carry the bytes
    assert s.in_kernel() == dict.fromkeys(("a rtp", "a rtcp", "b rtp", "b rtcp"),
                                          relay6.kernel_forwarding_active)
    _talk(s.a_port, s.b_port, a, b, 4, 20)
    stats = s.stats()
    assert stats.a.remote == (V6, a.port) and stats.a.latched
    assert stats.b.remote == (V6, b.port) and stats.b.latched
    assert stats.a.rtp_packets_in == 23 and stats.b.rtp_packets_out == 23
    assert stats.a.rtp_bytes_in == 23 * len(rtp(1))
    assert stats.a.rtcp_packets_in == 1 and stats.b.rtcp_packets_in == 1
    s.close()


def test_ipv6_strict_source_after_the_latch(relay6: Relay, phones6: tuple[Phone, Phone]) -> None:
    a, b = phones6
    stranger = Phone(V6, V6)
    try:
        s = relay6.open_session()
        s.set_remote("a", V6, a.port)
        s.set_remote("b", V6, b.port)
        _talk(s.a_port, s.b_port, a, b, 1, 2)
        for seq in range(10):
            stranger.send(s.a_port, rtp(100 + seq, ssrc=0xBAD))
        assert b.nothing()
        a.send(s.a_port, rtp(3))
        assert b.recv()[0] == rtp(3)
        assert s.stats().a.drops.source == 10
    finally:
        stranger.close()


def test_ipv6_learning_a_source_on_another_port(relay6: Relay, phones6: tuple[Phone, Phone]) -> None:
    # user1's SDP says one port, its packets come from another (a NAT): learnt after a run of
    # learn_packets consecutive packets (learn_ms = 0 here), the first ones dropped
    a, b = phones6
    signalled = Phone(V6, V6)  # holds the port the SDP names; sends nothing
    try:
        s = relay6.open_session()
        s.set_remote("a", V6, signalled.port)
        s.set_remote("b", V6, b.port)
        for seq in range(1, 4):
            a.send(s.a_port, rtp(seq))
        assert b.nothing()
        a.send(s.a_port, rtp(4))
        assert b.recv()[0] == rtp(4)
        b.send(s.b_port, rtp(50))
        assert a.recv()[0] == rtp(50)  # user2 is heard at the learnt address, not the signalled one
        assert s.stats().a.remote == (V6, a.port)
        assert s.stats().a.drops.learning == 3
    finally:
        signalled.close()


def test_dual_stack_relay_one_leg_on_each_family(backend: str) -> None:
    base = _port_base(24 + BACKENDS.index(backend))
    a, b = Phone(V4, V4), Phone(V6, V6)  # user1 on IPv4, user2 on IPv6
    try:
        with Relay("::", base, base + 99, backend=backend) as relay:
            s = relay.open_session()
            s.set_remote("a", V4, a.port, rtcp_port=a.rtcp_port)
            s.set_remote("b", V6, b.port, rtcp_port=b.rtcp_port)
            for seq in range(1, 6):
                a.send(s.a_port, rtp(seq))
                assert b.recv() == (rtp(seq), (V6, s.b_port))
                b.send(s.b_port, rtp(seq, ssrc=7))
                assert a.recv() == (rtp(seq, ssrc=7), (V4, s.a_port))
            a.send_rtcp(s.a_port, rtcp_sr())
            assert b.recv(rtcp=True) == (rtcp_sr(), (V6, s.b_port + 1))
            b.send_rtcp(s.b_port, rtcp_sr(7))
            assert a.recv(rtcp=True) == (rtcp_sr(7), (V4, s.a_port + 1))
            stats = s.stats()
            assert stats.a.remote == (V4, a.port) and stats.b.remote == (V6, b.port)
            assert stats.a.latched and stats.b.latched
    finally:
        a.close()
        b.close()


def test_kernel_path_needs_the_relays_own_address() -> None:
    if KERNEL_MISSING is not None:
        pytest.skip(f"the kernel fast path cannot load here: {KERNEL_MISSING}")
    base = _port_base(28)
    with pytest.raises(KernelPathUnavailable, match="not ::"):
        Relay("::", base, base + 99, kernel_forwarding="yes")


def test_a_remote_of_a_family_the_relay_cannot_reach_is_refused() -> None:
    base = _port_base(29)
    with Relay(V6, base, base + 99) as relay, relay.open_session() as s, \
            pytest.raises(RelayError, match="cannot reach an IPv4 remote"):
        s.set_remote("a", V4, 4000)
    with Relay(V4, base, base + 99) as relay, relay.open_session() as s:
        with pytest.raises(RelayError, match="cannot reach an IPv6 remote"):
            s.set_remote("a", V6, 4000)
        s.set_remote("a", "::ffff:127.0.0.1", 4000)  # an IPv4-mapped address is IPv4
        assert s.stats().a.remote == (V4, 4000)


def test_ipv4_relay_sends_from_an_ipv4_address() -> None:
    # an IPv4 relay (AF_INET sockets) answers IPv4 phones from its IPv4 address and ports
    base = _port_base(30)
    a, b = Phone(V4, V4), Phone(V4, V4)
    try:
        with Relay(V4, base, base + 99) as relay, relay.open_session() as s:
            s.set_remote("a", V4, a.port)
            s.set_remote("b", V4, b.port)
            a.send(s.a_port, rtp(1))
            assert b.recv() == (rtp(1), (V4, s.b_port))
    finally:
        a.close()
        b.close()


def test_packed_length_is_checked() -> None:
    # the data plane takes 16 bytes; anything else is refused before it reaches the loop
    base = _port_base(31)
    with Relay(V6, base, base + 99) as relay, relay.open_session() as s:
        engine = relay._live()  # the data plane's own argument check
        with pytest.raises(ValueError, match="16 bytes"):
            engine.set_remote(s.slot, 0, struct.pack("!I", 0x7F000001), 4000, 4001, False)


def test_the_interface_of_an_ipv6_address() -> None:
    # where the kernel path's program goes for a relay on an IPv6 address (/proc/net/if_inet6)
    assert _interface_of(ipaddress.IPv6Address("::1")) == socket.if_nametoindex("lo")
    assert _interface_of(ipaddress.IPv6Address("2001:db8::dead")) is None
