"""The media relay end to end over real UDP sockets on 127.0.0.1, on both packet-loop back ends.

Each test plays the two phones itself: one socket per leg, RTP/RTCP packets built here, bytes
compared as they come out of the relay.
"""

from __future__ import annotations

import errno
import os
import select
import socket
import struct
import threading
import time
from collections.abc import Iterator

import pytest

from mss import _kfwd
from mss.errors import PortsExhausted, RelayError
from mss.relay import FIELDS, PortAllocator, Relay, RelaySession
from tests.helpers import FakeClock

HOST = "127.0.0.1"
STRANGER = "127.0.0.2"  # another loopback address: a host that is not the signalled phone
WAIT = 1.0  # seconds a phone waits for a datagram that must come
QUIET = 0.15  # seconds a phone listens to check that nothing comes
LEARN_MS = 300  # a short endpoint-learning window for the tests that wait it out
LEARN_PACKETS = 4

BACKENDS = ["io_uring", "epoll"]

#: Where bridged legs are forwarded: the packet loop alone, or the kernel fast path (mss/bpf/).
PATHS = ["userspace", "kernel"]


def _kernel_path_missing() -> str | None:
    """Why the kernel fast path cannot load on this machine, or None when it can."""
    try:
        _kfwd.load([socket.if_nametoindex("lo")], 1).close()
    except RelayError as exc:
        return str(exc)
    return None


KERNEL_MISSING = _kernel_path_missing()


@pytest.fixture(params=PATHS)
def path(request: pytest.FixtureRequest) -> str:
    if request.param == "kernel" and KERNEL_MISSING is not None:
        pytest.skip(f"the kernel fast path cannot load here: {KERNEL_MISSING}")
    return str(request.param)


def kf(path: str) -> str:
    """The ``kernel_forwarding`` argument of a path."""
    return "yes" if path == "kernel" else "no"


def assert_path(relay: Relay, s: RelaySession, *directions: str) -> None:
    """On the kernel path, these directions (``"a rtp"``, ...) are forwarded by the kernel now;
    on the userspace path, none is."""
    want = relay.kernel_forwarding_active
    assert {d: s.in_kernel()[d] for d in directions} == dict.fromkeys(directions, want)


def _port_base(worker_salt: int) -> int:
    # spread test relays over 20000..29999 so parallel runs rarely meet (bind conflicts are skipped)
    return 20000 + ((os.getpid() * 7 + worker_salt * 400) % 9000) // 4 * 4


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def relay(backend: str, path: str) -> Iterator[Relay]:
    base = _port_base(BACKENDS.index(backend))
    with Relay(HOST, base, base + 199, backend=backend, kernel_forwarding=kf(path)) as r:
        assert r.backend == backend
        assert r.kernel_forwarding_active == (path == "kernel")
        yield r


def rtp(
    seq: int,
    ts: int = 0,
    payload: bytes = b"\xd5" * 160,
    *,
    pt: int = 0,
    ssrc: int = 0x11223344,
    marker: bool = False,
    csrcs: tuple[int, ...] = (),
    extension: bytes | None = None,
) -> bytes:
    """An RTP packet (RFC 3550 §5.1)."""
    b0 = 0x80 | len(csrcs) | (0x10 if extension is not None else 0)
    head = struct.pack("!BBHII", b0, (0x80 if marker else 0) | pt, seq & 0xFFFF, ts, ssrc)
    head += b"".join(struct.pack("!I", c) for c in csrcs)
    if extension is not None:
        head += struct.pack("!HH", 0xBEDE, len(extension) // 4) + extension
    return head + payload


def rtcp_sr(ssrc: int = 0x11223344) -> bytes:
    """An RTCP sender report with no report blocks (RFC 3550 §6.4.1)."""
    return struct.pack("!BBHIIIIII", 0x80, 200, 6, ssrc, 1, 2, 3, 4, 5)


class Phone:
    """One leg's far end on ``host`` (IPv4 or IPv6), sending to the relay at ``relay_host``: an RTP
    socket and the RTCP socket above it (port + 1 when possible)."""

    def __init__(self, host: str = HOST, relay_host: str = HOST) -> None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.relay_host = relay_host
        self.rtp = socket.socket(family, socket.SOCK_DGRAM)
        self.rtcp = socket.socket(family, socket.SOCK_DGRAM)
        for _ in range(50):
            self.rtp.bind((host, 0))
            port = self.rtp.getsockname()[1]
            if port % 2 == 0 and port < 65535:
                try:
                    self.rtcp.bind((host, port + 1))
                    break
                except OSError:
                    pass
            self.rtp.close()
            self.rtp = socket.socket(family, socket.SOCK_DGRAM)
        else:
            self.rtcp.bind((host, 0))
        self.port = self.rtp.getsockname()[1]
        self.rtcp_port = self.rtcp.getsockname()[1]

    def close(self) -> None:
        self.rtp.close()
        self.rtcp.close()

    def send(self, relay_port: int, data: bytes) -> None:
        self.rtp.sendto(data, (self.relay_host, relay_port))

    def send_rtcp(self, relay_port: int, data: bytes) -> None:
        self.rtcp.sendto(data, (self.relay_host, relay_port + 1))

    def recv(self, timeout: float = WAIT, *, rtcp: bool = False) -> tuple[bytes, tuple[str, int]]:
        sock = self.rtcp if rtcp else self.rtp
        sock.settimeout(timeout)
        data, addr = sock.recvfrom(65536)
        return data, (addr[0], addr[1])  # an IPv6 source comes with flow info and scope id

    def recv_all(self, timeout: float = QUIET, *, rtcp: bool = False) -> list[bytes]:
        """Everything that arrives until ``timeout`` of silence."""
        got = []
        while True:
            try:
                got.append(self.recv(timeout, rtcp=rtcp)[0])
            except TimeoutError:
                return got

    def nothing(self, timeout: float = QUIET, *, rtcp: bool = False) -> bool:
        return not self.recv_all(timeout, rtcp=rtcp)


@pytest.fixture
def phones() -> Iterator[tuple[Phone, Phone]]:
    a, b = Phone(), Phone()
    yield a, b
    a.close()
    b.close()


def latch_both(s: RelaySession, a: Phone, b: Phone) -> None:
    """Each leg is told its phone (as SDP would) and the phone sends one packet, so both legs latch;
    b's packet has no destination (a's remote is signalled after it)."""
    s.set_remote("b", HOST, b.port)
    b.send(s.b_port, rtp(1, pt=0, ssrc=2))
    wait_for(lambda: s.stats().b.latched)
    s.set_remote("a", HOST, a.port)
    a.send(s.a_port, rtp(1, pt=0, ssrc=1))
    b.recv()


def wait_for(cond: object, timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    assert callable(cond)
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.002)


def stream(
    src: Phone,
    relay_port: int,
    dst: Phone,
    *,
    seconds: float,
    ssrc: int = 0x5EED,
    seq_step: int = 1,
    interval: float = 0.01,
) -> tuple[int, float] | None:
    """``src`` sends RTP to ``relay_port`` every ``interval`` for ``seconds`` (sequence numbers
    ``seq_step`` apart); returns which of them (1 for the first sent) ``dst`` got first and when,
    or None when none arrived."""
    first: tuple[int, float] | None = None
    deadline = time.monotonic() + seconds
    sent = 0
    while time.monotonic() < deadline:
        src.send(relay_port, rtp(100 + sent * seq_step, ssrc=ssrc))
        sent += 1
        until = time.monotonic() + interval
        while (left := until - time.monotonic()) > 0:
            ready, _, _ = select.select([dst.rtp], [], [], left)
            if ready:
                data = dst.rtp.recv(65536)
                if first is None and data[8:12] == struct.pack("!I", ssrc):
                    seq = struct.unpack("!H", data[2:4])[0]
                    first = ((seq - 100) // seq_step + 1, time.monotonic())
    return first


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


# --- passthrough ---------------------------------------------------------------------------------

CODECS = {
    "PCMU": (0, bytes(range(256))[:160]),
    "PCMA": (8, bytes(range(255, 95, -1))),
    "G729": (18, bytes(range(7, 27))),  # 20-byte frames: two 10 ms G.729 frames
    "telephone-event": (101, b"\x05\x8a\x03\x20"),  # RFC 4733: digit 5, end, volume 10, 800
}


@pytest.mark.parametrize("codec", CODECS)
def test_bytes_in_equal_bytes_out(relay: Relay, phones: tuple[Phone, Phone], codec: str) -> None:
    pt, payload = CODECS[codec]
    a, b = phones
    s = relay.open_session()
    latch_both(s, a, b)
    sent_ab = [rtp(100 + i, 160 * i, payload, pt=pt, marker=i == 0) for i in range(20)]
    sent_ba = [rtp(500 + i, 80 * i, payload, pt=pt, ssrc=0xCAFE) for i in range(20)]
    for pa, pb in zip(sent_ab, sent_ba, strict=True):
        a.send(s.a_port, pa)
        b.send(s.b_port, pb)
    got_b = [b.recv()[0] for _ in sent_ab]
    got_a = [a.recv()[0] for _ in sent_ba]
    assert got_b == sent_ab
    assert got_a == sent_ba
    assert_path(relay, s, "a rtp", "b rtp")


def test_headers_with_csrcs_extension_and_padding_pass_untouched(
    relay: Relay, phones: tuple[Phone, Phone]
) -> None:
    a, b = phones
    s = relay.open_session()
    latch_both(s, a, b)
    padded = bytearray(rtp(7, payload=b"\x01" * 20 + b"\x00\x00\x00\x04"))
    padded[0] |= 0x20
    packets = [
        rtp(2, csrcs=(1, 2, 3)),
        rtp(3, extension=b"\x10\xaa\x00\x00"),
        rtp(4, payload=b""),
        bytes(padded),
    ]
    for p in packets:
        a.send(s.a_port, p)
    assert [b.recv()[0] for _ in packets] == packets


def test_replies_come_from_the_relay_ports(relay: Relay, phones: tuple[Phone, Phone]) -> None:
    a, b = phones
    s = relay.open_session()
    latch_both(s, a, b)
    b.send(s.b_port, rtp(9))
    assert a.recv()[1] == (HOST, s.a_port)
    a.send(s.a_port, rtp(9))
    assert b.recv()[1] == (HOST, s.b_port)
    a.send_rtcp(s.a_port, rtcp_sr())
    assert b.recv(rtcp=True)[1] == (HOST, s.b_port + 1)


# --- RTCP ----------------------------------------------------------------------------------------


def test_rtcp_is_relayed_both_ways(relay: Relay, phones: tuple[Phone, Phone]) -> None:
    a, b = phones
    s = relay.open_session()
    latch_both(s, a, b)  # latching RTP points RTCP at RTP + 1, where each phone's RTCP socket is
    sr_a, sr_b = rtcp_sr(1), rtcp_sr(2) + struct.pack("!BBH", 0x81, 203, 1) + b"\x00\x00\x00\x02"
    for _ in range(2):  # the first latches each leg's RTCP, the second goes by the kernel path
        a.send_rtcp(s.a_port, sr_a)
        assert b.recv(rtcp=True)[0] == sr_a
        b.send_rtcp(s.b_port, sr_b)
        assert a.recv(rtcp=True)[0] == sr_b
    assert_path(relay, s, "a rtcp", "b rtcp")
    st = s.stats()
    assert (st.a.rtcp_packets_in, st.b.rtcp_packets_out) == (2, 2)
    assert (st.b.rtcp_packets_in, st.a.rtcp_packets_out) == (2, 2)
    assert st.a.rtcp_bytes_in == 2 * len(sr_a)
    assert st.a.last_rtcp_rx is not None


def test_rtcp_goes_to_the_signalled_rtcp_port(relay: Relay, phones: tuple[Phone, Phone]) -> None:
    a, b = phones
    other = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    other.bind((HOST, 0))
    other.settimeout(WAIT)
    try:
        s = relay.open_session()
        s.set_remote("b", HOST, b.port, rtcp_port=other.getsockname()[1])
        s.set_remote("a", HOST, a.port)
        a.send(s.a_port, rtp(1))
        assert b.recv()[0] == rtp(1)
        a.send_rtcp(s.a_port, rtcp_sr())
        assert other.recvfrom(100)[0] == rtcp_sr()
    finally:
        other.close()


def test_rtcp_multiplexed_on_the_rtp_port_is_relayed_untouched(
    relay: Relay, phones: tuple[Phone, Phone]
) -> None:
    a, b = phones
    s = relay.open_session()
    latch_both(s, a, b)
    s.set_pt_rewrite("a", {72: 0, 73: 0, 0: 8})  # must not touch RTCP types 200/201 (72/73 + M)
    sr = rtcp_sr()
    assert_path(relay, s, "a rtp")
    a.send(s.a_port, sr)
    assert b.recv()[0] == sr
    st = s.stats()
    assert st.a.rtcp_packets_in == 1 and st.b.rtcp_packets_out == 1
    assert st.a.rtp_packets_in == 1  # only the latching packet


# --- latching and strict source ------------------------------------------------------------------


def test_latches_first_source_then_drops_others(relay: Relay, phones: tuple[Phone, Phone]) -> None:
    a, b = phones
    intruder = Phone()
    try:
        s = relay.open_session()
        latch_both(s, a, b)
        a.send_rtcp(s.a_port, rtcp_sr())  # RTCP latches on its own first packet
        assert b.recv(rtcp=True)[0] == rtcp_sr()
        assert_path(relay, s, "a rtp", "a rtcp")
        intruder.send(s.a_port, rtp(50, payload=b"evil"))
        intruder.send_rtcp(s.a_port, rtcp_sr(666))
        a.send(s.a_port, rtp(2))
        assert b.recv()[0] == rtp(2)
        assert b.nothing()
        assert b.nothing(rtcp=True)
        st = s.stats()
        assert st.a.drops.source == 2
        assert st.a.remote == (HOST, a.port) and st.a.latched
        assert st.a.rtp_packets_in == 2 and st.a.rtcp_packets_in == 1
    finally:
        intruder.close()


def test_relatch_follows_the_media_when_signalling_says_so(
    relay: Relay, phones: tuple[Phone, Phone]
) -> None:
    a, b = phones
    moved = Phone()
    try:
        s = relay.open_session()
        latch_both(s, a, b)
        moved.send(s.a_port, rtp(3))
        assert b.nothing()
        s.set_remote("a", HOST, moved.port)  # a re-INVITE moved user1's media
        s.relatch("a")
        moved.send(s.a_port, rtp(4))
        assert b.recv()[0] == rtp(4)
        a.send(s.a_port, rtp(5))  # the old source is now the stranger
        assert b.nothing()
        b.send(s.b_port, rtp(6))  # and leg a's media goes to the new place
        assert moved.recv()[0] == rtp(6)
        st = s.stats().a
        assert st.drops.source == 2 and st.remote == (HOST, moved.port) and st.latched
        s.relatch("a")  # learning again: the signalled source latches at once, the old one learns
        a.send(s.a_port, rtp(7))
        moved.send(s.a_port, rtp(8))
        assert b.recv()[0] == rtp(8)
        assert b.nothing()
        assert s.stats().a.drops.learning == 1
    finally:
        moved.close()


def test_signalled_remote_is_used_until_a_packet_latches(backend: str, path: str) -> None:
    base = _port_base(21 + BACKENDS.index(backend))
    a, b = Phone(), Phone()
    natted = Phone()  # b's packets really come from here (a NAT changed the port), not from the SDP's
    try:
        with Relay(
            HOST, base, base + 99, backend=backend, learn_ms=LEARN_MS, kernel_forwarding=kf(path)
        ) as relay:
            s = relay.open_session()
            s.set_remote("b", HOST, b.port)
            s.set_remote("a", HOST, a.port)
            st = s.stats()
            assert st.b.remote == (HOST, b.port) and not st.b.latched
            a.send(s.a_port, rtp(1))
            assert b.recv()[0] == rtp(1)
            started = time.monotonic()
            got = stream(natted, s.b_port, a, seconds=LEARN_MS / 1000 + 0.3)
            # the address matches the SDP's, the port does not: it latches once the window passed
            assert got and got[0] >= LEARN_PACKETS
            assert got[1] - started >= LEARN_MS / 1000 - 0.02
            a.send(s.a_port, rtp(3))
            assert natted.recv()[0] == rtp(3)
            assert b.nothing()
            assert s.stats().b.remote == (HOST, natted.port)
            s.set_remote("b", HOST, b.port)  # the same SDP again (a refresh): the leg stays as it is
            assert s.stats().b.remote == (HOST, natted.port) and s.stats().b.latched
            s.set_remote("b", HOST, natted.port)  # the latched address: stays latched
            assert s.stats().b.latched
            s.set_remote("b", HOST, b.port)  # new address: the media moved, learn it again
            a.send(s.a_port, rtp(4))
            assert b.recv()[0] == rtp(4)
    finally:
        for p in (a, b, natted):
            p.close()


@pytest.mark.parametrize("where", ["another address", "another port"])
def test_a_stranger_sending_first_does_not_capture_the_leg(
    relay: Relay, phones: tuple[Phone, Phone], where: str
) -> None:
    a, b = phones
    stranger = Phone(STRANGER if where == "another address" else HOST)
    try:
        s = relay.open_session()
        s.set_remote("a", HOST, a.port)
        s.set_remote("b", HOST, b.port)
        for seq in range(10):  # a well-formed stream, before user1's phone says a word
            stranger.send(s.a_port, rtp(900 + seq, ssrc=0xBAD))
        stranger.send_rtcp(s.a_port, rtcp_sr(0xBAD))
        assert b.nothing()
        assert b.nothing(rtcp=True)
        for seq in range(1, 4):  # paced as a phone paces them (the kernel path takes over after the
            a.send(s.a_port, rtp(seq))  # first: a packet still unread then could be overtaken)
            stranger.send(s.a_port, rtp(910 + seq, ssrc=0xBAD))
            assert b.recv()[0] == rtp(seq)
        assert b.nothing()  # the phone is heard, the stranger never
        a.send_rtcp(s.a_port, rtcp_sr())
        stranger.send_rtcp(s.a_port, rtcp_sr(0xBAD))
        assert b.recv_all(rtcp=True) == [rtcp_sr()]
        b.send(s.b_port, rtp(50))  # and the phone is the one that hears user2
        assert a.recv()[0] == rtp(50)
        assert stranger.nothing()
        st = s.stats().a
        assert st.remote == (HOST, a.port) and st.latched
        assert st.drops.learning + st.drops.source == 15
        assert st.drops.learning >= 11  # what came before the phone's first packet
        assert st.rtp_packets_in == 3 and st.rtcp_packets_in == 1
    finally:
        stranger.close()


def test_a_spray_over_the_port_range_captures_no_leg(backend: str, path: str) -> None:
    base = _port_base(25 + BACKENDS.index(backend))
    sprayer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sprayer.bind((STRANGER, 0))
    with Relay(HOST, base, base + 99, backend=backend, kernel_forwarding=kf(path)) as relay:
        sessions = [relay.open_session() for _ in range(8)]
        pairs = [(Phone(), Phone()) for _ in sessions]
        try:
            for s, (a, b) in zip(sessions, pairs, strict=True):
                s.set_remote("a", HOST, a.port)
                s.set_remote("b", HOST, b.port)
            for round_ in range(6):  # every port of the range, in sequence, before the phones start
                for port in range(base, base + 100):
                    sprayer.sendto(rtp(round_, ssrc=port), (HOST, port))
                time.sleep(0.005)
            for i, (s, (a, b)) in enumerate(zip(sessions, pairs, strict=True)):
                a.send(s.a_port, rtp(1, ssrc=i))
                b.send(s.b_port, rtp(1, ssrc=100 + i))
            for i, (a, b) in enumerate(pairs):
                assert b.recv_all() == [rtp(1, ssrc=i)]  # each phone hears its peer, nothing else
                assert a.recv_all() == [rtp(1, ssrc=100 + i)]
            for s in sessions:
                st = s.stats()
                for leg in (st.a, st.b):
                    assert leg.latched and leg.drops.learning == 6
                    assert leg.rtp_packets_in == 1
        finally:
            sprayer.close()
            for a, b in pairs:
                a.close()
                b.close()


def test_an_unsignalled_source_latches_only_after_the_window_and_a_run(backend: str) -> None:
    base = _port_base(27 + BACKENDS.index(backend))
    a, b = Phone(STRANGER), Phone()  # a's SDP said nothing we can match (no remote signalled)
    try:
        with Relay(HOST, base, base + 99, backend=backend, learn_ms=LEARN_MS) as relay:
            s = relay.open_session()
            s.set_remote("b", HOST, b.port)
            started = time.monotonic()
            got = stream(a, s.a_port, b, seconds=LEARN_MS / 1000 + 0.3)
            assert got is not None
            assert got[1] - started >= LEARN_MS / 1000 - 0.02  # not before the window
            assert s.stats().a.remote == (STRANGER, a.port) and s.stats().a.latched
            first_drops = s.stats().a.drops.learning
            assert first_drops == got[0] - 1  # every packet before the latching one was held back

            s2 = relay.open_session()
            s2.set_remote("b", HOST, b.port)
            # past the window, but sequence numbers that skip: never a run, never latched
            assert stream(a, s2.a_port, b, seconds=LEARN_MS / 1000 + 0.2, seq_step=2) is None
            assert not s2.stats().a.latched
            # then in sequence: latched on the LEARN_PACKETS-th packet in a row
            got = stream(a, s2.a_port, b, seconds=0.2, ssrc=0xF00D)
            assert got is not None and got[0] == LEARN_PACKETS
            b.recv_all()
    finally:
        a.close()
        b.close()


def test_the_signalled_phone_takes_over_from_a_learned_stranger(backend: str, path: str) -> None:
    base = _port_base(29 + BACKENDS.index(backend))
    a, b = Phone(), Phone()
    stranger = Phone(STRANGER)
    try:
        with Relay(
            HOST, base, base + 99, backend=backend, learn_ms=LEARN_MS, kernel_forwarding=kf(path)
        ) as relay:
            s = relay.open_session()
            s.set_remote("a", HOST, a.port)
            s.set_remote("b", HOST, b.port)
            # user1 is still ringing; a stream from elsewhere outlasts the window and latches
            assert stream(stranger, s.a_port, b, seconds=LEARN_MS / 1000 + 0.2) is not None
            b.recv_all()
            a.send(s.a_port, rtp(1))  # the phone the SDP names answers: its first packet wins
            assert b.recv()[0] == rtp(1)
            stranger.send(s.a_port, rtp(5000, ssrc=0x5EED))
            assert b.nothing()
            b.send(s.b_port, rtp(2))
            assert a.recv()[0] == rtp(2)
            st = s.stats().a
            assert st.remote == (HOST, a.port) and st.latched and st.drops.source == 1
    finally:
        for p in (a, b, stranger):
            p.close()


def test_learning_arguments_are_checked() -> None:
    with pytest.raises(RelayError):
        Relay(HOST, 20000, 20100, learn_ms=-1)
    with pytest.raises(RelayError):
        Relay(HOST, 20000, 20100, learn_packets=0)


def test_nothing_forwarded_until_the_other_leg_has_a_remote(
    relay: Relay, phones: tuple[Phone, Phone]
) -> None:
    a, _ = phones
    s = relay.open_session()
    s.set_remote("a", HOST, a.port)
    a.send(s.a_port, rtp(1))
    wait_for(lambda: s.stats().a.drops.no_remote == 1)
    assert s.stats().a.rtp_packets_in == 1


# --- forwarding and payload types ----------------------------------------------------------------


def test_forwarding_per_direction(relay: Relay, phones: tuple[Phone, Phone]) -> None:
    a, b = phones
    s = relay.open_session(bridged=False)
    s.set_remote("a", HOST, a.port)
    s.set_remote("b", HOST, b.port)
    a.send(s.a_port, rtp(1))
    b.send(s.b_port, rtp(1))
    assert a.nothing() and b.nothing()
    s.set_forwarding(a_to_b=False, b_to_a=True)  # early media: only user2 -> user1
    a.send(s.a_port, rtp(2))
    b.send(s.b_port, rtp(2))
    assert a.recv()[0] == rtp(2)
    assert b.nothing()
    s.bridge()
    a.send(s.a_port, rtp(3))
    assert b.recv()[0] == rtp(3)
    s.unbridge()
    b.send(s.b_port, rtp(4))
    assert a.nothing()
    st = s.stats()
    assert st.a.drops.disabled == 2 and st.b.drops.disabled == 2


def test_payload_type_rewrite_per_direction(relay: Relay, phones: tuple[Phone, Phone]) -> None:
    a, b = phones
    s = relay.open_session()
    latch_both(s, a, b)
    s.set_pt_rewrite("a", {101: 96})  # user1 says telephone-event is 101, user2 says 96
    s.set_pt_rewrite("b", {96: 101})
    event = b"\x01\x0a\x00\xa0"
    a.send(s.a_port, rtp(10, pt=101, payload=event, marker=True))
    assert b.recv()[0] == rtp(10, pt=96, payload=event, marker=True)
    a.send(s.a_port, rtp(11, pt=0))  # unmapped types pass unchanged
    assert b.recv()[0] == rtp(11, pt=0)
    b.send(s.b_port, rtp(12, pt=96, payload=event))
    assert a.recv()[0] == rtp(12, pt=101, payload=event)
    s.set_pt_rewrite("a", {})
    a.send(s.a_port, rtp(13, pt=101, payload=event))
    assert b.recv()[0] == rtp(13, pt=101, payload=event)
    with pytest.raises(RelayError):
        s.set_pt_rewrite("a", {128: 0})


# --- played frames -------------------------------------------------------------------------------


def test_play_injects_paced_rtp_and_holds_forwarding(
    relay: Relay, phones: tuple[Phone, Phone]
) -> None:
    a, b = phones
    s = relay.open_session()
    latch_both(s, a, b)
    frames = b"".join(bytes([i]) * 160 for i in range(3))
    s.play("a", frames, frame_bytes=160, payload_type=8)
    assert s.playing("a")
    got = []
    times = []
    for _ in range(8):
        got.append(a.recv()[0])
        times.append(time.monotonic())
    b.send(s.b_port, rtp(77))  # while a plays, b's media is not forwarded into it
    more = [a.recv()[0] for _ in range(3)]
    s.stop_play("a")
    assert not s.playing("a")
    a.recv_all()
    heads = [struct.unpack("!BBHII", p[:12]) for p in got + more]
    assert all(h[0] == 0x80 for h in heads)
    assert heads[0][1] == 0x80 | 8 and all(h[1] == 8 for h in heads[1:])  # marker on the first
    assert {h[4] for h in heads} == {heads[0][4]}  # one SSRC
    assert all((heads[i + 1][2] - heads[i][2]) % 65536 == 1 for i in range(len(heads) - 1))
    assert all((heads[i + 1][3] - heads[i][3]) % 2**32 == 160 for i in range(len(heads) - 1))
    assert [p[12:] for p in got[:6]] == [bytes([i % 3]) * 160 for i in range(6)]
    assert 0.1 < times[-1] - times[0] < 0.25  # 7 intervals of 20 ms
    assert rtp(77) not in more
    st = s.stats()
    assert st.a.played_packets >= 11
    assert st.b.drops.disabled >= 1
    b.send(s.b_port, rtp(78))  # stopped: forwarding into a resumes
    assert a.recv()[0] == rtp(78)


def test_play_follows_the_signalled_remote_and_validates(
    relay: Relay, phones: tuple[Phone, Phone]
) -> None:
    a, _ = phones
    s = relay.open_session(bridged=False)
    s.set_remote("a", HOST, a.port)
    s.play("a", b"\x11" * 20, frame_bytes=20, payload_type=18, ptime_ms=10, samples_per_frame=80)
    p1, p2 = a.recv()[0], a.recv()[0]
    assert p1[1] == 0x80 | 18 and p1[12:] == b"\x11" * 20
    assert struct.unpack("!I", p2[4:8])[0] - struct.unpack("!I", p1[4:8])[0] == 80
    s.play("a", b"\x22" * 160, frame_bytes=160, payload_type=0)  # replaces the first
    wait_for(lambda: a.recv()[0][12:] == b"\x22" * 160)
    with pytest.raises(RelayError):
        s.play("a", b"\x00" * 161, frame_bytes=160, payload_type=0)
    with pytest.raises(RelayError):
        s.play("a", b"\x00" * 160, frame_bytes=160, payload_type=200)
    s.close()
    assert a.recv_all(0.1) is not None  # no crash when a session closes while it plays


# --- statistics ----------------------------------------------------------------------------------


def test_stats_count_everything(relay: Relay, phones: tuple[Phone, Phone]) -> None:
    a, b = phones
    s = relay.open_session()
    before = time.monotonic()
    latch_both(s, a, b)
    for seq in (2, 3, 6, 7):  # 4 and 5 lost: two gaps
        a.send(s.a_port, rtp(seq, ts=160 * seq, ssrc=1))
        b.recv()
    assert_path(relay, s, "a rtp")
    st = s.stats()
    assert st.a.rtp_packets_in == 5 and st.a.rtp_bytes_in == 5 * 172
    assert st.b.rtp_packets_out == 5 and st.b.rtp_bytes_out == 5 * 172
    assert st.b.rtp_packets_in == 1 and st.a.rtp_packets_out == 0  # it had nowhere to go
    assert st.a.ssrc == 1 and st.b.ssrc == 2
    assert st.a.seq_gaps == 2 and st.b.seq_gaps == 0
    assert st.a.last_rx is not None and before <= st.a.last_rx <= time.monotonic()
    assert st.a.jitter_ms >= 0.0
    assert st.b.drops.no_remote == 1 and st.b.drops.total == 1
    assert st.a.drops.total == 0
    assert st.leg("a") is st.a
    assert s.last_rx() == max(st.a.last_rx, st.b.last_rx or 0)
    row = relay.counters[s.slot]
    assert row.shape == (2, len(FIELDS))
    assert int(row[0, FIELDS.index("rtp_packets_in")]) == 5
    assert not relay.counters.flags.writeable


def test_jitter_follows_rfc3550(relay: Relay, phones: tuple[Phone, Phone]) -> None:
    a, b = phones
    s = relay.open_session()
    latch_both(s, a, b)
    # packets 20 ms apart in time but with timestamps saying 10 ms: each transit grows by 80 units
    for i in range(30):
        a.send(s.a_port, rtp(10 + i, ts=80 * i, ssrc=5))
        time.sleep(0.02)
    assert_path(relay, s, "a rtp")
    st = s.stats()
    assert 5.0 < st.a.jitter_ms < 12.0  # converges towards 10 ms
    assert st.b.jitter_ms == 0.0


def test_new_ssrc_restarts_sequence_tracking(relay: Relay, phones: tuple[Phone, Phone]) -> None:
    a, b = phones
    s = relay.open_session()
    latch_both(s, a, b)
    a.send(s.a_port, rtp(1000, ssrc=9))
    a.send(s.a_port, rtp(5, ssrc=10))
    a.send(s.a_port, rtp(6, ssrc=10))
    assert len([b.recv() for _ in range(3)]) == 3
    st = s.stats()
    assert st.a.ssrc == 10 and st.a.seq_gaps == 0


# --- bad traffic ---------------------------------------------------------------------------------


def test_bad_datagrams_are_counted_and_dropped(relay: Relay, phones: tuple[Phone, Phone]) -> None:
    a, b = phones
    s = relay.open_session()
    latch_both(s, a, b)
    bad_rtp = {
        b"": "short",
        b"\x80\x00\x00": "short",
        rtp(1)[:11]: "short",
        b"\x40" + rtp(1)[1:]: "malformed",  # version 1
        b"\x8f" + rtp(1, payload=b"")[1:]: "malformed",  # 15 CSRCs announced, none there
        b"\x90" + rtp(1, payload=b"")[1:]: "malformed",  # extension announced, none there
        b"\xa0" + rtp(1, payload=b"ab\x09")[1:]: "malformed",  # 9 bytes of padding in 3
        b"\xa0" + rtp(1, payload=b"ab\x00")[1:]: "malformed",  # zero padding count
        b"GET / HTTP/1.1\r\n\r\n": "malformed",
        rtp(1, payload=b"\x00" * 3000): "malformed",  # larger than a receive buffer
        bytes([0x80, 0x50]) + rtp(1)[2:]: "malformed",  # PT 80: RTCP range, not RTCP type
    }
    for round_ in range(2):  # just after latching, and once the relay has settled on the source
        for data in bad_rtp:
            a.send(s.a_port, data)
        a.send_rtcp(s.a_port, b"\x80\xc8\x00")  # short RTCP
        a.send_rtcp(s.a_port, rtp(1))  # RTP on the RTCP port: PT 0 is no RTCP type
        a.send(s.a_port, rtp(2 + round_))
        assert b.recv()[0] == rtp(2 + round_)  # good traffic still flows
        assert b.nothing()
        assert b.nothing(rtcp=True)
    st = s.stats()
    shorts = sum(1 for r in bad_rtp.values() if r == "short") + 1
    malformed = sum(1 for r in bad_rtp.values() if r == "malformed") + 1
    assert st.a.drops.short == 2 * shorts
    assert st.a.drops.malformed == 2 * malformed
    assert st.a.rtp_packets_in == 3  # the latching packet, rtp(2) and rtp(3)


def test_a_flood_on_one_leg_does_not_starve_the_others(backend: str) -> None:
    base = _port_base(5 + BACKENDS.index(backend))
    with Relay(HOST, base, base + 199, backend=backend) as relay:
        sessions = [relay.open_session() for _ in range(4)]
        pairs = [(Phone(), Phone()) for _ in sessions]
        flooder = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        flooder.setblocking(False)
        stop = threading.Event()

        def flood() -> None:
            junk = rtp(1, payload=b"\xff" * 100)
            targets = [(HOST, sessions[0].a_port), (HOST, sessions[1].b_port)]
            deadline = time.monotonic() + 3.0
            n = 0
            while not stop.is_set() and time.monotonic() < deadline:
                for t in targets:
                    try:
                        flooder.sendto(junk, t)
                    except BlockingIOError:
                        time.sleep(0.0005)
                n += 1
                if n % 2000 == 0:
                    time.sleep(0)  # let the test thread run

        try:
            for s, (a, b) in zip(sessions, pairs, strict=True):
                latch_both(s, a, b)
            th = threading.Thread(target=flood)
            th.start()
            received = [0] * len(sessions)
            try:
                time.sleep(0.05)
                for seq in range(20, 45):  # 25 packets per stream, 20 ms apart, both ways
                    for i, (s, (a, b)) in enumerate(zip(sessions, pairs, strict=True)):
                        a.send(s.a_port, rtp(seq, ssrc=i))
                        b.send(s.b_port, rtp(seq, ssrc=100 + i))
                    time.sleep(0.02)
                for i, (a, b) in enumerate(pairs):
                    received[i] = len(a.recv_all(0.1)) + len(b.recv_all(0.1))
            finally:
                stop.set()
                th.join()
            # every stream, flooded or not, keeps flowing (a flooded socket may lose some)
            assert received[2] == received[3] == 50
            assert received[0] >= 25 and received[1] >= 25
            assert sessions[0].stats().a.drops.source > 0
            assert sessions[1].stats().b.drops.source > 0
        finally:
            flooder.close()
            for a, b in pairs:
                a.close()
                b.close()


def test_a_flood_from_a_latched_phone_does_not_starve_the_others(backend: str, path: str) -> None:
    base = _port_base(17 + BACKENDS.index(backend))
    with Relay(HOST, base, base + 199, backend=backend, kernel_forwarding=kf(path)) as relay:
        sessions = [relay.open_session() for _ in range(3)]
        pairs = [(Phone(), Phone()) for _ in sessions]
        stop = threading.Event()
        loud = pairs[0][0]  # a latched phone gone wild: its storm is forwarded, it is its own
        flooded = [0]

        def storm() -> None:
            junk = rtp(1, payload=b"\xee" * 100, ssrc=0xBAD)
            loud.rtp.setblocking(False)
            deadline = time.monotonic() + 3.0
            while not stop.is_set() and time.monotonic() < deadline:
                try:
                    loud.rtp.sendto(junk, (HOST, sessions[0].a_port))
                    flooded[0] += 1
                except BlockingIOError:
                    time.sleep(0.0005)
                if flooded[0] % 2000 == 0:
                    time.sleep(0)

        try:
            for s, (a, b) in zip(sessions, pairs, strict=True):
                latch_both(s, a, b)
            th = threading.Thread(target=storm)
            th.start()
            legit = [[0, 0] for _ in sessions]  # packets a got, packets b got (storm left out)
            try:
                time.sleep(0.05)
                for seq in range(20, 45):
                    for i, (s, (a, b)) in enumerate(zip(sessions, pairs, strict=True)):
                        if i:
                            a.send(s.a_port, rtp(seq, ssrc=i))
                        b.send(s.b_port, rtp(seq, ssrc=100 + i))
                    time.sleep(0.02)
                for i, (a, b) in enumerate(pairs):
                    got_a = a.recv_all(0.1)
                    got_b = b.recv_all(0.1)
                    legit[i] = [len(got_a), sum(1 for p in got_b if p[8:12] != b"\x00\x00\x0b\xad")]
            finally:
                stop.set()
                th.join()
            assert legit[1] == legit[2] == [25, 25]  # the other calls do not notice
            assert legit[0][0] == 25  # and the loud call's other direction neither
            st = sessions[0].stats()
            assert st.a.rtp_packets_in > 1000 and flooded[0] > 1000
        finally:
            for a, b in pairs:
                a.close()
                b.close()


# --- ports and lifecycle -------------------------------------------------------------------------


def test_port_allocator_bounds() -> None:
    ports = PortAllocator(1001, 1010)  # even ports 1002..1008 with their odd RTCP ports
    assert ports.pairs == 4
    assert sorted(ports.take() for _ in range(4)) == [1002, 1004, 1006, 1008]
    with pytest.raises(PortsExhausted):
        ports.take()
    with pytest.raises(RelayError):
        PortAllocator(2000, 2002)
    with pytest.raises(RelayError):
        PortAllocator(5000, 70000)


def test_port_choice_is_random_not_sequential() -> None:
    first = PortAllocator(30000, 40000)
    second = PortAllocator(30000, 40000)
    taken = [first.take() for _ in range(50)]
    assert len(set(taken)) == 50 and all(p % 2 == 0 and 30000 <= p < 40000 for p in taken)
    assert taken != sorted(taken)  # not handed out in order from port_min
    assert max(taken) - min(taken) > 5000  # spread over the range, not a run
    assert [second.take() for _ in range(50)] != taken  # another process guesses nothing


def test_freed_pairs_are_reused_as_late_as_possible() -> None:
    ports = PortAllocator(2000, 2039)  # 20 pairs: up to 10 cool
    taken = [ports.take() for _ in range(10)]
    for port in taken:
        ports.give(port)
    fresh = [ports.take() for _ in range(10)]  # the 10 never used go first
    assert not set(fresh) & set(taken)
    ports.give(fresh[0])  # 11 cooling now: the one freed first is ready again
    assert ports.take() == taken[0]
    assert ports.free == 10  # nothing ready: the pairs freed longest ago go first
    assert [ports.take() for _ in range(10)] == [*taken[1:], fresh[0]]
    with pytest.raises(PortsExhausted):
        ports.take()


def test_quarantined_pairs_are_not_handed_out_until_the_period_ends() -> None:
    clock = FakeClock()
    ports = PortAllocator(3000, 3019, clock=clock)  # 10 pairs
    busy = ports.take()
    others = [p for p in range(3000, 3020, 2) if p != busy][:2]
    # odd, out of range and repeated ports are ignored; a pair in use goes in when given back
    assert ports.quarantine([*others, busy, 3001, 5000, others[0]], clock.now + 30) == 3
    assert ports.quarantined == 3 and ports.free == 7
    got = {ports.take() for _ in range(7)}
    assert not got & {*others, busy}
    ports.give(busy)
    with pytest.raises(PortsExhausted, match="3 in quarantine"):
        ports.take()
    for port in got:
        ports.give(port)
    clock.advance(29.9)
    assert not {ports.take() for _ in range(7)} & {*others, busy}
    clock.advance(0.1)
    assert {ports.take() for _ in range(3)} == {*others, busy}
    assert ports.quarantined == 0


def test_relay_quarantine_keeps_ports_out_of_use(backend: str) -> None:
    base = _port_base(23 + BACKENDS.index(backend))
    with Relay(HOST, base, base + 15, backend=backend) as relay:  # 8 pairs: 4 sessions
        assert relay.quarantine([base, base + 2, base + 4, base + 6], 0.4) == 4
        assert relay.quarantine([base + 8], 0) == 0  # no period: nothing kept
        s1, s2 = relay.open_session(), relay.open_session()
        assert {s1.a_port, s1.b_port, s2.a_port, s2.b_port} == {base + 8, base + 10, base + 12, base + 14}
        with pytest.raises(PortsExhausted):
            relay.open_session()
        time.sleep(0.45)
        s3 = relay.open_session()
        assert {s3.a_port, s3.b_port} <= {base, base + 2, base + 4, base + 6}


def test_port_exhaustion_is_a_clear_error(backend: str) -> None:
    base = _port_base(7 + BACKENDS.index(backend))
    with Relay(HOST, base, base + 7, backend=backend) as relay:  # 4 pairs: 2 sessions
        assert relay.capacity == 2
        s1 = relay.open_session()
        s2 = relay.open_session()
        assert {s1.a_port, s1.b_port, s2.a_port, s2.b_port} == {base, base + 2, base + 4, base + 6}
        with pytest.raises(PortsExhausted):
            relay.open_session()
        assert relay.session_count == 2
        s1.close()
        s3 = relay.open_session()
        assert relay.session_count == 2
        assert {s3.a_port, s3.b_port} == {s1.a_port, s1.b_port}
        s2.close()
        s3.close()


def test_ports_held_by_another_process_are_skipped(backend: str) -> None:
    base = _port_base(9 + BACKENDS.index(backend))
    squatters = []
    try:
        plain = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        squatters.append(plain)
        plain.bind((HOST, base + 3))  # the RTCP port of the second pair
        shared = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        squatters.append(shared)
        shared.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        shared.bind((HOST, base + 4))  # the RTP port of the third, open to sharing: not shared
    except OSError as exc:
        for sq in squatters:
            sq.close()
        pytest.skip(f"port taken: {exc}")
    try:
        with Relay(HOST, base, base + 15, backend=backend) as relay:  # 8 pairs
            sessions = [relay.open_session() for _ in range(3)]
            used = {p for s in sessions for p in (s.a_port, s.b_port)}
            assert used == {base, base + 6, base + 8, base + 10, base + 12, base + 14}
            with pytest.raises(PortsExhausted):  # base + 2 and base + 4 are still held
                relay.open_session()
    finally:
        for sq in squatters:
            sq.close()


def test_closed_session_and_relay_refuse_verbs(relay: Relay) -> None:
    s = relay.open_session()
    port = s.a_port
    s.close()
    s.close(wait=True)  # idempotent; waits for the packet loop to close the sockets
    with pytest.raises(RelayError):
        s.bridge()
    with pytest.raises(RelayError):
        s.stats()
    with pytest.raises(RelayError):
        relay.open_session().set_remote("c", HOST, 1000)  # type: ignore[arg-type]
    with pytest.raises(RelayError):
        relay.open_session().set_remote("a", "example.org", 1000)
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        probe.bind((HOST, port))  # close() gave the port back to the system
    finally:
        probe.close()
    relay.close()
    relay.close()  # idempotent
    assert relay.closed and relay.session_count == 0
    with pytest.raises(RelayError):
        relay.open_session()


def test_bad_constructor_arguments() -> None:
    with pytest.raises(RelayError):
        Relay("relay.example", 20000, 20100)  # an address, not a name (IPv6 is fine: test_ipv6_relay)
    with pytest.raises(RelayError):
        Relay(HOST, 20000, 20001)
    with pytest.raises(RelayError):
        Relay(HOST, 20000, 20100, backend="kqueue")


def test_open_close_cycles_leak_no_descriptors(backend: str) -> None:
    base = _port_base(11 + BACKENDS.index(backend))
    threads = threading.active_count()
    fds = open_fds()
    with Relay(HOST, base, base + 99, backend=backend) as relay:
        during = open_fds()
        for _ in range(100_000):
            relay.open_session().close()
        assert relay.session_count == 0
        relay.wait_closed()  # the packet loop closes the last sessions' sockets on its next turn
        assert open_fds() == during
        s = relay.open_session()  # still working afterwards
        a, b = Phone(), Phone()
        try:
            latch_both(s, a, b)
        finally:
            a.close()
            b.close()
    assert open_fds() == fds
    assert threading.active_count() == threads


def test_close_with_traffic_flowing(backend: str, path: str) -> None:
    base = _port_base(13 + BACKENDS.index(backend))
    fds = open_fds()
    relay = Relay(HOST, base, base + 199, backend=backend, kernel_forwarding=kf(path))
    sessions = [relay.open_session() for _ in range(20)]
    pairs = [(Phone(), Phone()) for _ in sessions]
    for s, (a, b) in zip(sessions, pairs, strict=True):  # bridged: forwarded (by the kernel) as it closes
        s.set_remote("a", HOST, a.port)
        s.set_remote("b", HOST, b.port)
    stop = threading.Event()
    sent = [0]

    def blast() -> None:
        deadline = time.monotonic() + 3.0
        seq = 0
        while not stop.is_set() and time.monotonic() < deadline:
            seq += 1
            for s, (a, b) in zip(sessions, pairs, strict=True):
                a.send(s.a_port, rtp(seq))
                b.send(s.b_port, rtp(seq))
                sent[0] += 2
            time.sleep(0.001)

    th = threading.Thread(target=blast)
    th.start()
    try:
        time.sleep(0.2)
        for s in sessions:
            assert_path(relay, s, "a rtp", "b rtp")
        for s in sessions[::2]:  # half of them close mid-stream
            s.close()
        time.sleep(0.1)
        relay.close()  # the rest go with the relay
    finally:
        stop.set()
        th.join()
    assert sent[0] > 0
    ports = [p for s in sessions for p in (s.a_port, s.a_port + 1, s.b_port, s.b_port + 1)]
    for p in ports:  # every port is free again
        probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            probe.bind((HOST, p))
        except OSError as exc:
            assert exc.errno != errno.EADDRINUSE, f"port {p} still bound"
            raise
        finally:
            probe.close()
    for a, b in pairs:
        a.close()
        b.close()
    assert open_fds() == fds
    assert all(s.closed for s in sessions)


def test_auto_backend_and_library_surface() -> None:
    base = _port_base(15)
    with Relay(host=HOST, port_min=base, port_max=base + 99) as relay:
        assert relay.backend in ("io_uring", "epoll")
        s = relay.open_session()
        assert s.a_port % 2 == 0 and s.b_port % 2 == 0
        a, b = Phone(), Phone()
        try:
            latch_both(s, a, b)
            b.send(s.b_port, rtp(2))
            assert a.recv()[0] == rtp(2)
        finally:
            a.close()
            b.close()
        assert s.stats().a.rtp_packets_in == 1
        s.close()
        assert relay.session_count == 0


def _write_syscalls() -> int:
    """write(2)-family system calls made so far by the calling thread (Linux /proc)."""
    with open("/proc/thread-self/io") as f:
        return int(next(line for line in f if line.startswith("syscw:")).split()[1])


def test_setting_remotes_does_not_wake_the_packet_loop(backend: str) -> None:
    """set_remote() is a verb of every call (RTP and RTCP, on both legs): it only writes state the
    loop reads on its next turn, so it must not write the loop's wake-up eventfd (a system call,
    and with the loop on the same CPU a context switch) each time. 25 idle sessions get both
    remotes: no write system call on the caller's thread. The remote still takes effect: a phone's
    packets reach the other phone through it afterwards."""
    base = _port_base(BACKENDS.index(backend) + 2)
    with Relay(HOST, base, base + 199, backend=backend, learn_ms=0, learn_packets=1) as r:
        sessions = [r.open_session() for _ in range(25)]
        time.sleep(0.05)
        before = _write_syscalls()
        for i, s in enumerate(sessions):
            s.set_remote("a", HOST, 40000 + 4 * i)
            s.set_remote("b", HOST, 40002 + 4 * i)
        assert _write_syscalls() - before == 0
        pa, pb = Phone(), Phone()
        try:
            s = sessions[0]
            s.set_remote("a", HOST, pa.port)
            s.set_remote("b", HOST, pb.port)
            pa.send(s.a_port, rtp(1))
            assert pb.recv()[0] == rtp(1)
            pb.send(s.b_port, rtp(2))
            assert pa.recv()[0] == rtp(2)
        finally:
            pa.close()
            pb.close()
