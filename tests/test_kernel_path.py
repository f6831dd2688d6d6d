"""The kernel fast path on its own: loading, falling back, IPv6 in the program, nothing left behind.

The relay's cases on the kernel path are in test_relay.py (its ``path`` parameter); here is what is
the kernel path's alone. Real BPF on ``lo``: the tests skip, with the reason, where it cannot load.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from mss import _kfwd
from mss.errors import RelayError
from mss.relay import FIELDS, KernelPathUnavailable, Relay
from tests.test_relay import KERNEL_MISSING, Phone, latch_both, rtcp_sr, rtp, wait_for

ROOT = Path(__file__).parent.parent

needs_kernel_path = pytest.mark.skipif(
    KERNEL_MISSING is not None, reason=f"the kernel fast path cannot load here: {KERNEL_MISSING}"
)

# struct kf_key and struct kf_entry of mss/bpf/kfwd.h (native order, no padding: laid out by hand)
KEY = struct.Struct("=BB2s16s")
ENTRY = struct.Struct("=16s16s16s2s2s2sBBII5QIiHBBI3Q128s")
assert ENTRY.size == 272


def _port(n: int) -> bytes:
    return struct.pack("!H", n)


def _base(salt: int) -> int:
    return 20000 + ((os.getpid() * 7 + salt * 400) % 9000) // 4 * 4


def test_kernel_forwarding_takes_three_values() -> None:
    with pytest.raises(RelayError, match="kernel_forwarding must be 'no', 'yes' or 'auto'"):
        Relay("127.0.0.1", 20000, 20100, kernel_forwarding="maybe")


def test_yes_refuses_what_it_cannot_forward_and_auto_falls_back(caplog: pytest.LogCaptureFixture) -> None:
    # 192.0.2.1 (TEST-NET-1) is never bound here: the relay binds at open_session, not before
    refusal = r"kernel_forwarding = yes: no interface holds 192\.0\.2\.1"
    with pytest.raises(KernelPathUnavailable, match=refusal):
        Relay("192.0.2.1", 20000, 20100, kernel_forwarding="yes")
    with caplog.at_level(logging.WARNING, logger="mss.relay"), Relay(
        "192.0.2.1", 20000, 20100, kernel_forwarding="auto"
    ) as relay:
        assert not relay.kernel_forwarding_active
    assert "kernel forwarding unavailable, forwarding in userspace: no interface holds" in caplog.text


_WITHOUT_CAPS = textwrap.dedent(
    """
    import json, socket
    from mss.relay import FIELDS, KernelPathUnavailable, Relay
    from tests.test_relay import Phone, latch_both, rtp
    out = {}
    try:
        Relay("127.0.0.1", BASE, BASE + 99, kernel_forwarding="yes")
    except KernelPathUnavailable as exc:
        out["yes"] = str(exc)
    with Relay("127.0.0.1", BASE, BASE + 99, kernel_forwarding="auto") as relay:
        out["auto_active"] = relay.kernel_forwarding_active
        a, b = Phone(), Phone()
        s = relay.open_session()
        latch_both(s, a, b)
        a.send(s.a_port, rtp(2))
        out["forwarded"] = b.recv()[0] == rtp(2)
    print(json.dumps(out))
    """
)


@needs_kernel_path
def test_without_bpf_privileges_yes_fails_clearly_and_auto_runs_in_userspace() -> None:
    """A real loading failure: the same process, without CAP_BPF, CAP_NET_ADMIN, CAP_SYS_ADMIN and
    CAP_PERFMON (dropped from the bounding set, so not even root has them after exec)."""
    if os.geteuid() != 0:
        pytest.skip("dropping capabilities from the bounding set needs root")
    drop = "-bpf,-net_admin,-sys_admin,-perfmon"
    code = _WITHOUT_CAPS.replace("BASE", str(_base(31)))
    result = subprocess.run(
        ["setpriv", f"--bounding-set={drop}", sys.executable, "-c", code],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
    )
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["yes"].startswith("kernel_forwarding = yes: load: not permitted (needs CAP_BPF")
    assert out["auto_active"] is False and out["forwarded"] is True
    assert "kernel forwarding unavailable, forwarding in userspace: load: not permitted" in result.stderr


@needs_kernel_path
def test_the_program_forwards_ipv6_with_strict_source() -> None:
    """The relay binds IPv4 only; the program's IPv6 half, through an entry written here: a packet
    to [::1]:X from phone a's exact address leaves from [::1]:Y to phone b, anything else reaches
    X's own socket untouched."""
    kp = _kfwd.load([socket.if_nametoindex("lo")], 1)
    sockets: list[socket.socket] = []

    def udp6() -> socket.socket:
        s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        s.bind(("::1", 0))
        s.settimeout(1.0)
        sockets.append(s)
        return s

    try:
        relay_x, relay_y, a, b, stranger = (udp6() for _ in range(5))
        x, y = relay_x.getsockname()[1], relay_y.getsockname()[1]
        loop6 = socket.inet_pton(socket.AF_INET6, "::1")
        key = KEY.pack(6, 0, _port(x), loop6)
        pt_map = bytes(range(128))
        kp.put(key, ENTRY.pack(loop6, loop6, loop6, _port(a.getsockname()[1]), _port(y),
                               _port(b.getsockname()[1]), 0, 0, 7, 0, 0, 0, 0, 0, 0,
                               0, 0, 0, 0, 0, 0, 0, 0, 0, pt_map))
        packets = [rtp(seq, ts=160 * seq, ssrc=0xABC) for seq in (1, 2, 4)]
        for p in packets:
            a.sendto(p, ("::1", x))
            data, src = b.recvfrom(2048)
            assert data == p and src[:2] == ("::1", y)
        stranger.sendto(rtp(9), ("::1", x))
        data, src = relay_x.recvfrom(2048)  # not the latched source: up to the relay's socket
        assert data == rtp(9) and src[1] == stranger.getsockname()[1]
        raw = kp.get(key, ENTRY.size)
        assert raw is not None
        entry = ENTRY.unpack(raw)
        packets_, bytes_, _, gaps = entry[10:14]
        assert (packets_, bytes_, gaps) == (3, 3 * 172, 1)
        assert entry[15] == 0xABC  # ssrc
    finally:
        kp.close()
        for s in sockets:
            s.close()


_HOLDER = textwrap.dedent(
    """
    import sys, time
    from mss.relay import Relay
    relay = Relay("127.0.0.1", BASE, BASE + 99, kernel_forwarding="yes")
    print(relay._kernel.link_ids[0], flush=True)
    time.sleep(60)
    """
)


@needs_kernel_path
def test_a_killed_process_leaves_no_program_attached() -> None:
    """The tcx link belongs to the process (no pinning): SIGKILL, and the link is gone with it."""
    child = subprocess.Popen(
        [sys.executable, "-c", _HOLDER.replace("BASE", str(_base(33)))],
        cwd=ROOT, stdout=subprocess.PIPE, text=True,
    )
    try:
        assert child.stdout is not None
        link_id = int(child.stdout.readline())
        assert _kfwd.link_alive(link_id)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=10)
    # the kernel releases the link when the dead process's files are closed (at exit, done by now)
    assert not _kfwd.link_alive(link_id)


@needs_kernel_path
def test_setup_and_release_of_a_bridged_call_keep_the_map_exact() -> None:
    """Entries are installed on latching, taken out by every verb that changes the session and
    never outlive it; the kernel's counts reach the counters array without a stats() call."""
    base = _base(35)
    with Relay("127.0.0.1", base, base + 99, kernel_forwarding="yes") as relay:
        a, b = Phone(), Phone()
        try:
            s = relay.open_session()
            latch_both(s, a, b)
            a.send(s.a_port, rtp(2))
            b.recv()
            assert s.in_kernel() == {"a rtp": True, "a rtcp": False, "b rtp": True, "b rtcp": False}
            installs = relay.kernel_stats()["installs"]
            s.set_remote("a", "127.0.0.1", a.port)  # a session refresh: the same remote again
            assert relay.kernel_stats()["installs"] == installs and s.in_kernel()["a rtp"]
            s.play("b", b"\x00" * 160, frame_bytes=160, payload_type=0)  # ringback into b
            assert s.in_kernel()["a rtp"] is False and s.in_kernel()["b rtp"] is True
            s.stop_play("b")
            assert s.in_kernel()["a rtp"] is True
            s.unbridge()
            assert not any(s.in_kernel().values())
            s.bridge()
            s.relatch("a")
            assert s.in_kernel() == {"a rtp": False, "a rtcp": False, "b rtp": True, "b rtcp": False}
            a.send(s.a_port, rtp(3))  # the signalled phone latches again at once
            b.recv_all()
            assert s.in_kernel()["a rtp"] is True
            for seq in range(4, 14):
                a.send(s.a_port, rtp(seq))
                b.recv()
            relay._live().kernel_sync()  # what the loop does every second by itself
            col = relay.counters[s.slot, 0]
            assert int(col[FIELDS.index("rtp_packets_in")]) == 13
            stats = relay.kernel_stats()
            s.close()
            after = relay.kernel_stats()
            assert stats["entries"] == 2 and after["entries"] == 0 and after["errors"] == 0
        finally:
            a.close()
            b.close()


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def _udp4(src: tuple[str, int], dst: tuple[str, int], payload: bytes, *, corrupt: bool = False) -> bytes:
    """An IPv4 UDP datagram with a full, correct UDP checksum (``corrupt``: a wrong one)."""
    length = 8 + len(payload)
    saddr, daddr = socket.inet_aton(src[0]), socket.inet_aton(dst[0])
    pseudo = saddr + daddr + struct.pack("!BBH", 0, socket.IPPROTO_UDP, length)
    check = _checksum(pseudo + struct.pack("!HHHH", src[1], dst[1], length, 0) + payload) or 0xFFFF
    if corrupt:
        check ^= 0x0F0F
    udp = struct.pack("!HHHH", src[1], dst[1], length, check) + payload
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + length, 1, 0, 64, socket.IPPROTO_UDP, 0, saddr, daddr)
    return ip[:10] + struct.pack("!H", _checksum(ip)) + ip[12:] + udp


@needs_kernel_path
def test_the_rewritten_checksums_are_right() -> None:
    """A datagram sent with a full UDP checksum (a raw socket: nothing leaves it to the hardware,
    so the receiving stack verifies it) comes through the kernel path with its addresses, ports and
    payload type rewritten and is accepted by the phone's socket; one whose checksum was wrong
    before the relay is still refused there: the program mends checksums, it does not recompute
    them."""
    if os.geteuid() != 0:
        pytest.skip("raw sockets need root")
    base = _base(37)
    raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    with Relay("127.0.0.1", base, base + 99, kernel_forwarding="yes") as relay:
        a, b = Phone(), Phone()
        try:
            s = relay.open_session()
            latch_both(s, a, b)
            s.set_pt_rewrite("a", {0: 8})
            assert s.in_kernel()["a rtp"]
            for seq in (2, 3):
                raw.sendto(_udp4(("127.0.0.1", a.port), ("127.0.0.1", s.a_port), rtp(seq)), ("127.0.0.1", 0))
                data, src = b.recv()
                assert data == rtp(seq, pt=8) and src == ("127.0.0.1", s.b_port)
            bad = _udp4(("127.0.0.1", a.port), ("127.0.0.1", s.a_port), rtp(4), corrupt=True)
            raw.sendto(bad, ("127.0.0.1", 0))
            assert b.nothing()
            assert s.stats().a.rtp_packets_in == 4  # forwarded (and counted) by the kernel path
        finally:
            raw.close()
            a.close()
            b.close()


@needs_kernel_path
def test_the_loop_merges_the_kernels_counts_by_itself() -> None:
    """Inactivity release polls the counters array without stats(): what the kernel forwards must
    reach it on its own (the loop merges every KSYNC_MS), receive time included."""
    base = _base(39)
    with Relay("127.0.0.1", base, base + 99, kernel_forwarding="yes") as relay:
        a, b = Phone(), Phone()
        try:
            s = relay.open_session()
            latch_both(s, a, b)
            latched_at = int(relay.counters[s.slot, 0, FIELDS.index("last_rx_ns")])
            for seq in range(2, 12):
                a.send(s.a_port, rtp(seq))
                b.recv()
            assert s.in_kernel()["a rtp"]
            row = relay.counters[s.slot, 0]
            wait_for(lambda: int(row[FIELDS.index("rtp_packets_in")]) == 11, timeout=5.0)
            assert int(row[FIELDS.index("last_rx_ns")]) > latched_at
            assert int(relay.counters[s.slot, 1, FIELDS.index("rtp_packets_out")]) == 11
        finally:
            a.close()
            b.close()



_RELAY_IN_NS = textwrap.dedent(
    """
    import json, sys
    from mss.relay import Relay
    with Relay("10.77.0.1", 30000, 30099, kernel_forwarding="yes") as relay:
        s = relay.open_session()
        print("PORTS", s.a_port, s.b_port, flush=True)
        pa, pb = (int(x) for x in sys.stdin.readline().split())
        s.set_remote("a", "10.77.0.2", pa)
        s.set_remote("b", "10.77.0.3", pb)
        print("READY", flush=True)
        sys.stdin.readline()
        st = s.stats()
        print(json.dumps({"in_kernel": s.in_kernel(), "a_in": st.a.rtp_packets_in,
                          "b_out": st.b.rtp_packets_out, "b_in": st.b.rtp_packets_in}), flush=True)
    """
)

_PHONES_IN_NS = textwrap.dedent(
    """
    import json, socket, sys
    from tests.test_kernel_path import _udp4
    from tests.test_relay import rtp
    a = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); a.bind(("10.77.0.2", 0)); a.settimeout(2)
    b = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); b.bind(("10.77.0.3", 0)); b.settimeout(2)
    print("PHONES", a.getsockname()[1], b.getsockname()[1], flush=True)
    ra, rb = (int(x) for x in sys.stdin.readline().split())
    out = {"a_got": [], "b_got": []}
    a.sendto(rtp(1), ("10.77.0.1", ra)); out["b_got"].append(b.recvfrom(2048))   # latches leg a
    b.sendto(rtp(1), ("10.77.0.1", rb)); out["a_got"].append(a.recvfrom(2048))   # and leg b
    for seq in range(2, 22):
        a.sendto(rtp(seq), ("10.77.0.1", ra)); out["b_got"].append(b.recvfrom(2048))
        b.sendto(rtp(seq), ("10.77.0.1", rb)); out["a_got"].append(a.recvfrom(2048))
    raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    raw.sendto(_udp4(("10.77.0.2", a.getsockname()[1]), ("10.77.0.1", ra), rtp(99)), ("10.77.0.1", 0))
    out["b_got"].append(b.recvfrom(2048))       # a full checksum, verified by b's stack
    print(json.dumps({k: [(d.hex(), list(src)) for d, src in v] for k, v in out.items()}), flush=True)
    """
)


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True, timeout=10)


@needs_kernel_path
def test_a_relay_on_a_network_interface_sends_the_packets_out_by_its_route() -> None:
    """Off loopback: the relay in a network namespace with one interface (10.77.0.1), both phones
    behind it in another (10.77.0.2 and .3). The program rewrites what arrives on the interface's
    ingress and sends it back out by the relay's route (a FIB lookup, a redirect through the
    neighbour table): the phones get each other's packets from the relay's ports, a datagram with a
    full UDP checksum passes the phone's checksum check, and the kernel counted them."""
    if os.geteuid() != 0 or not shutil.which("ip"):
        pytest.skip("network namespaces need root and iproute2")
    tag = f"{os.getpid() % 100000}"
    ns_relay, ns_phones = f"mss-kf-r{tag}", f"mss-kf-p{tag}"
    procs: list[subprocess.Popen[str]] = []
    try:
        try:
            _ip("netns", "add", ns_relay)
            _ip("netns", "add", ns_phones)
            _ip("link", "add", f"kfr{tag}", "netns", ns_relay, "type", "veth", "peer", "name", f"kfp{tag}",
                "netns", ns_phones)
        except subprocess.CalledProcessError as exc:
            pytest.skip(f"cannot make network namespaces here: {exc.stderr.strip()}")
        _ip("-n", ns_relay, "addr", "add", "10.77.0.1/24", "dev", f"kfr{tag}")
        _ip("-n", ns_phones, "addr", "add", "10.77.0.2/24", "dev", f"kfp{tag}")
        _ip("-n", ns_phones, "addr", "add", "10.77.0.3/24", "dev", f"kfp{tag}")
        for ns, dev in ((ns_relay, f"kfr{tag}"), (ns_phones, f"kfp{tag}")):
            _ip("-n", ns, "link", "set", dev, "up")
            _ip("-n", ns, "link", "set", "lo", "up")

        def start(ns: str, code: str) -> subprocess.Popen[str]:
            proc = subprocess.Popen(
                ["ip", "netns", "exec", ns, sys.executable, "-c", code], cwd=ROOT, text=True,
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            )
            procs.append(proc)
            return proc

        def line(proc: subprocess.Popen[str]) -> str:
            assert proc.stdout is not None
            text = proc.stdout.readline()
            assert text, proc.stderr.read() if proc.stderr else ""
            return text

        def say(proc: subprocess.Popen[str], text: str) -> None:
            assert proc.stdin is not None
            proc.stdin.write(text + "\n")
            proc.stdin.flush()

        relay = start(ns_relay, _RELAY_IN_NS)
        ra, rb = (int(x) for x in line(relay).split()[1:])
        phones = start(ns_phones, _PHONES_IN_NS)
        pa, pb = (int(x) for x in line(phones).split()[1:])
        say(relay, f"{pa} {pb}")
        assert line(relay).startswith("READY")
        say(phones, f"{ra} {rb}")
        got = json.loads(line(phones))
        entries = [e for e in _kfwd.entries(relay.pid) if e.address == "10.77.0.1"]
        say(relay, "done")
        stats = json.loads(line(relay))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=10)
        for ns in (ns_relay, ns_phones):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False, timeout=10)
    assert [bytes.fromhex(d) for d, _ in got["b_got"]] == [rtp(seq) for seq in range(1, 22)] + [rtp(99)]
    assert [bytes.fromhex(d) for d, _ in got["a_got"]] == [rtp(seq) for seq in range(1, 22)]
    assert {tuple(src) for _, src in got["b_got"]} == {("10.77.0.1", rb)}
    assert {tuple(src) for _, src in got["a_got"]} == {("10.77.0.1", ra)}
    assert stats["in_kernel"]["a rtp"] and stats["in_kernel"]["b rtp"]
    assert stats["a_in"] == 22 and stats["b_out"] == 22 and stats["b_in"] == 21
    by_port = {e.port: e.packets for e in entries if not e.rtcp}
    assert by_port[ra] >= 20 and by_port[rb] >= 19  # the kernel carried all but the latching ones


_AS_SERVICE_USER = textwrap.dedent(
    """
    import json
    from mss.relay import Relay
    from tests.test_relay import Phone, latch_both, rtp
    with Relay("127.0.0.1", BASE, BASE + 99, kernel_forwarding="yes") as relay:
        a, b = Phone(), Phone()
        s = relay.open_session()
        latch_both(s, a, b)
        a.send(s.a_port, rtp(2))
        forwarded = b.recv()[0] == rtp(2)
        print(json.dumps({"in_kernel": s.in_kernel()["a rtp"], "forwarded": forwarded}))
    """
)


@needs_kernel_path
def test_a_service_user_with_cap_bpf_and_cap_net_admin_loads_it() -> None:
    """What the systemd unit gives mss (packaging/systemd: User=mss with CAP_BPF and CAP_NET_ADMIN
    as ambient capabilities) is enough: an unprivileged user with those two loads, attaches and
    hands a call to the kernel."""
    if os.geteuid() != 0:
        pytest.skip("changing user and capabilities needs root")
    caps = "+bpf,+net_admin"
    result = subprocess.run(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", f"--inh-caps={caps}",
         f"--ambient-caps={caps}", sys.executable, "-c", _AS_SERVICE_USER.replace("BASE", str(_base(41)))],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1]) == {"in_kernel": True, "forwarded": True}


@needs_kernel_path
def test_sessions_handed_over_and_closed_leave_nothing() -> None:
    """Calls come and go through the kernel path: no entry, descriptor or link outlives them."""
    base = _base(43)
    fds = len(os.listdir("/proc/self/fd"))
    a, b = Phone(), Phone()
    try:
        with Relay("127.0.0.1", base, base + 99, kernel_forwarding="yes") as relay:
            assert relay._kernel is not None
            links = relay._kernel.link_ids
            for _ in range(200):
                s = relay.open_session()
                latch_both(s, a, b)
                a.send(s.a_port, rtp(2))
                b.recv()
                assert s.in_kernel()["a rtp"]
                s.close()
                assert relay.kernel_stats()["entries"] == 0
            stats = relay.kernel_stats()
            assert stats["installs"] == stats["removals"] == 400 and stats["errors"] == 0
    finally:
        a.close()
        b.close()
    assert len(os.listdir("/proc/self/fd")) == fds
    assert not any(_kfwd.link_alive(link) for link in links)


@needs_kernel_path
def test_the_shortest_rtcp_goes_by_the_kernel_too() -> None:
    """An RTCP receiver report with no report blocks is 8 bytes: still the kernel's to forward once
    the leg's RTCP is latched (the relay would forward it, so the kernel does, in order)."""
    base = _base(45)
    with Relay("127.0.0.1", base, base + 99, kernel_forwarding="yes") as relay:
        a, b = Phone(), Phone()
        try:
            s = relay.open_session()
            latch_both(s, a, b)
            a.send_rtcp(s.a_port, rtcp_sr())  # latches a's RTCP
            assert b.recv(rtcp=True)[0] == rtcp_sr()
            assert s.in_kernel()["a rtcp"]
            rr = struct.pack("!BBHI", 0x80, 201, 1, 0x11223344)
            before = {e.port: e.packets for e in _kfwd.entries(os.getpid()) if e.rtcp}.get(s.a_port + 1, 0)
            for _ in range(3):
                a.send_rtcp(s.a_port, rr)
                assert b.recv(rtcp=True) == (rr, ("127.0.0.1", s.b_port + 1))
            after = {e.port: e.packets for e in _kfwd.entries(os.getpid()) if e.rtcp}[s.a_port + 1]
            assert after - before == 3
            assert s.stats().a.rtcp_packets_in == 4
        finally:
            a.close()
            b.close()


@needs_kernel_path
def test_packets_unread_at_the_handoff_count_no_sequence_gaps() -> None:
    """A burst: its first packet latches the leg and hands the direction to the kernel, the rest
    are mostly still in the socket then and reach the loop after the handoff. They move the leg's
    sequence state on, so the entry is put in again from it: the packets the kernel forwards next
    are not counted as gaps (they were, when the entry kept the state of the latching packet)."""
    base = _base(47)
    with Relay("127.0.0.1", base, base + 99, kernel_forwarding="yes") as relay:
        for _ in range(5):
            a, b = Phone(), Phone()
            try:
                s = relay.open_session()
                s.set_remote("b", "127.0.0.1", b.port)
                s.set_remote("a", "127.0.0.1", a.port)
                for seq in range(1, 9):
                    a.send(s.a_port, rtp(seq, ssrc=7))
                assert [b.recv()[0] for _ in range(8)] == [rtp(seq, ssrc=7) for seq in range(1, 9)]
                for seq in range(9, 13):  # by the kernel
                    a.send(s.a_port, rtp(seq, ssrc=7))
                    assert b.recv()[0] == rtp(seq, ssrc=7)
                assert s.in_kernel()["a rtp"]
                st = s.stats().a
                assert (st.rtp_packets_in, st.seq_gaps) == (12, 0)
                s.close()
            finally:
                a.close()
                b.close()


@needs_kernel_path
def test_a_stream_the_program_passes_up_is_not_put_in_again_for_every_packet() -> None:
    """Packets with IP options always reach the loop (the program takes plain IPv4 only); read
    within HANDOFF_US of the handoff they put the entry in again, but the window runs from the
    handoff, so a fast stream of them costs a bounded number of bpf() calls, not one a packet."""
    base = _base(48)
    with Relay("127.0.0.1", base, base + 99, kernel_forwarding="yes") as relay:
        a, b = Phone(), Phone()
        try:
            s = relay.open_session()
            latch_both(s, a, b)
            assert s.in_kernel()["a rtp"]
            installs = relay.kernel_stats()["installs"]
            a.rtp.setsockopt(socket.IPPROTO_IP, socket.IP_OPTIONS, b"\x01\x01\x01\x00")  # NOPs + EOL
            for seq in range(100, 140):  # every ~1 ms for ~40 ms, the first right after the handoff
                a.send(s.a_port, rtp(seq))
                time.sleep(0.001)
            for _ in range(40):
                b.recv()
            # those read within 2 ms of the handoff, not one per packet (40 when each re-install
            # started the window again)
            assert relay.kernel_stats()["installs"] - installs <= 6
        finally:
            a.close()
            b.close()


def test_a_missing_program_is_reported_as_such(tmp_path: Path) -> None:
    """A build without clang has no BPF object: loading says so (and `auto` then runs userspace)."""
    with pytest.raises(KernelPathUnavailable, match="the BPF program was not built"):
        _kfwd.load([1], 1, path=tmp_path / "kfwd.bpf.o")
