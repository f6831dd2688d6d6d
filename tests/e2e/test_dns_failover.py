"""pss_host as a DNS name, end to end: an authoritative DNS server on loopback (mss_peers.dnsserver)
names two Kamailio instances by SRV (priority 10: A on 127.0.0.5, priority 20: B on 127.0.0.6);
mss, configured with the name alone and pointed at that server by MSS_RESOLV_CONF, registers at A
and calls through it; A is stopped mid-test; the next callback's INVITE gets no answer from A
(over UDP: Timer B, 32 s; over TCP: the connection is refused at once), goes to B with a new
branch, the registration moves to B, and the callback completes; the one after goes straight to B.

The two instances do not share registrations (each has its own location table), so each phone
user has a phone registered at each instance: the callbacks through A ring A's phones, those
through B ring B's. Both run in auth mode with the realm ``pss.test`` (the domain mss writes).

Also here: a first target answering 503 (a small UDP server of the test) moves the call at once,
and ``[sip] outbound_proxy`` takes every request.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from mss_peers.dnsserver import ZoneServer
from mss_peers.kamailio import Kamailio
from mss_peers.net import free_port as loopback_port
from mss_peers.phone import Phone
from mss_peers.server import MssServer

pytestmark = pytest.mark.e2e

DNS_ADDRESS = "127.0.0.155"
HOST_A = "127.0.0.5"
HOST_B = "127.0.0.6"
USERS = {"100": "pw100", "101": "pw101"}
#: Timer B (64·T1) plus what a callback takes: the callback that fails over waits this long.
FAILOVER_WAIT = 32 + 20


@pytest.fixture
def zone(tmp_path: Path, add_peer: Callable[[Any], None]) -> Iterator[ZoneServer]:
    with ZoneServer(DNS_ADDRESS, log_path=tmp_path / "dns.log") as server:
        add_peer(server)
        yield server


class BusyServer:
    """A SIP server on UDP that answers every request but ACK ``503`` with ``Retry-After: 1``
    (a provider's server in maintenance), counting what it got."""

    def __init__(self, host: str) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((host, loopback_port(host)))
        self.sock.settimeout(0.2)
        self.address: tuple[str, int] = self.sock.getsockname()
        self.got: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():  # bounded by stop(): 0.2 s per idle turn
            try:
                data, source = self.sock.recvfrom(65535)
            except TimeoutError:
                continue
            head = data.decode("utf-8", "replace").split("\r\n\r\n")[0].split("\r\n")
            method = head[0].split(" ")[0]
            self.got.append(method)
            if method in ("ACK", "SIP/2.0"):
                continue
            copied = [line for line in head[1:] if line.split(":")[0].strip().lower()
                      in ("via", "from", "to", "call-id", "cseq")]  # fmt: skip
            answer = "\r\n".join(["SIP/2.0 503 Service Unavailable", *copied, "Retry-After: 1",
                                   "Content-Length: 0", "", ""])  # fmt: skip
            self.sock.sendto(answer.encode(), source)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sock.close()

    def __repr__(self) -> str:
        return f"<BusyServer {self.address[0]}:{self.address[1]}>"

    def describe(self) -> str:
        """What it got, for failure reports."""
        return f"--- {self!r} got --- {self.got}"


def _callback(server: MssServer, cb_id: str, user1: Phone, user2: Phone, timeout: float) -> dict[str, str]:
    with server.client() as as1:
        assert as1.request(cb_id, "100", "101", 2) == f"ACK: id={cb_id};code=ok;"
        user1.wait_event("confirmed", timeout=timeout)
        user2.wait_event("confirmed", timeout=20)
        response = as1.response(cb_id, timeout=20)
    user1.wait_event("disconnected", timeout=10)
    user2.wait_event("disconnected", timeout=10)
    return response


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_callbacks_fail_over_to_the_next_srv_target(
    kamailio: Callable[..., Kamailio], phone: Callable[..., Phone], free_port: Callable[..., int],
    zone: ZoneServer, add_peer: Callable[[Any], None], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    transport: str,
) -> None:  # fmt: skip
    sip_port = free_port()
    pss_a = kamailio("auth", users=USERS, host=HOST_A, realm="pss.test", mss=("127.0.0.1", sip_port))
    pss_b = kamailio("auth", users=USERS, host=HOST_B, realm="pss.test", mss=("127.0.0.1", sip_port))
    srv = [(10, 1, pss_a.port, "a.pss.test"), (20, 1, pss_b.port, "b.pss.test")]
    zone.set(f"_sip._{transport}.pss.test", "SRV", srv, ttl=300)
    zone.set("a.pss.test", "A", [HOST_A], ttl=300)
    zone.set("b.pss.test", "A", [HOST_B], ttl=300)
    a1, a2 = phone("100", pss_a, record=False), phone("101", pss_a, record=False)
    b1, b2 = phone("100", pss_b, record=False), phone("101", pss_b, record=False)

    monkeypatch.setenv("MSS_RESOLV_CONF", str(zone.write_resolv_conf(tmp_path / "resolv.conf")))
    server = MssServer(tmp_path / "mss", pss=("pss.test", 5060), sip_port=sip_port, transport=transport,
                       callback={"ring_timeout": 60})  # fmt: skip
    add_peer(server)
    try:
        server.start()
        server.wait_log(rf"PSS pss\.test is {HOST_A}:{pss_a.port}, {HOST_B}:{pss_b.port}")
        server.wait_log("external line registered")
        pss_a.wait_registered("mss", timeout=5)
        assert zone.asked[0] == f"SRV _sip._{transport}.pss.test"

        # Through A while it is up.
        assert _callback(server, "cb1", a1, a2, timeout=10)["result"] == "answered"
        assert b1.events("incoming") == [] and b2.events("incoming") == []

        # A goes away: the next callback waits Timer B at A, then goes to B.
        pss_a.stop()
        assert _callback(server, "cb2", b1, b2, timeout=FAILOVER_WAIT)["result"] == "answered"
        why = "did not answer INVITE in 32 s" if transport == "udp" else "could not be reached for INVITE"
        server.wait_log(rf"PSS {HOST_A}:{pss_a.port} {why}; trying {HOST_B}:{pss_b.port}")
        server.wait_log(rf"registration moves from {HOST_A}:{pss_a.port} to {HOST_B}:{pss_b.port}")
        pss_b.wait_registered("mss", timeout=10)

        # The next one goes straight to B (A is marked down, the line is registered at B).
        assert _callback(server, "cb3", b1, b2, timeout=10)["result"] == "answered"
    finally:
        server.stop()


def test_every_request_goes_through_the_outbound_proxy(
    kamailio: Callable[..., Kamailio], phone: Callable[..., Phone], free_port: Callable[..., int],
    zone: ZoneServer, add_peer: Callable[[Any], None], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """[sip] outbound_proxy: the REGISTER and the INVITEs go to the proxy (Kamailio, which drops
    the preloaded Route and serves the realm) although pss.test's own address is elsewhere
    (127.0.0.66, where nothing listens); the callback completes through the proxy."""
    sip_port = free_port()
    proxy = kamailio("auth", users=USERS, host=HOST_A, realm="pss.test", mss=("127.0.0.1", sip_port))
    zone.set("pss.test", "A", ["127.0.0.66"], ttl=300)  # no SRV: the name's address, pss_port
    user1, user2 = phone("100", proxy, record=False), phone("101", proxy, record=False)
    monkeypatch.setenv("MSS_RESOLV_CONF", str(zone.write_resolv_conf(tmp_path / "resolv.conf")))
    server = MssServer(tmp_path / "mss", pss=("pss.test", 5060), sip_port=sip_port)
    config = server.config_path.read_text()
    server.config_path.write_text(
        config.replace("pss_port = 5060\n", f"pss_port = 5060\noutbound_proxy = {HOST_A}:{proxy.port}\n")
    )
    add_peer(server)
    try:
        server.start()
        server.wait_log(rf"outbound proxy {HOST_A}:{proxy.port}")
        server.wait_log(rf"registered as mss@pss\.test at {HOST_A}:{proxy.port}")
        proxy.wait_registered("mss", timeout=5)
        assert _callback(server, "cb1", user1, user2, timeout=10)["result"] == "answered"
    finally:
        server.stop()


def test_a_503_moves_the_call_to_the_next_target_at_once(
    kamailio: Callable[..., Kamailio], phone: Callable[..., Phone], free_port: Callable[..., int],
    zone: ZoneServer, add_peer: Callable[[Any], None], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """Server to server: the first SRV target answers 503 (Retry-After: 1) to everything; the
    callback's INVITE goes there first, gets the 503 (which mss acknowledges) and is sent to
    Kamailio at once, with a new branch, and the callback completes."""
    sip_port = free_port()
    busy = BusyServer(HOST_A)
    add_peer(busy)
    try:
        pss_b = kamailio("trunk", users=USERS, host=HOST_B, realm="pss.test", mss=("127.0.0.1", sip_port))
        srv = [(10, 1, busy.address[1], "a.pss.test"), (20, 1, pss_b.port, "b.pss.test")]
        zone.set("_sip._udp.pss.test", "SRV", srv, ttl=300)
        zone.set("a.pss.test", "A", [HOST_A], ttl=300)
        zone.set("b.pss.test", "A", [HOST_B], ttl=300)
        user1, user2 = phone("100", pss_b, record=False), phone("101", pss_b, record=False)
        monkeypatch.setenv("MSS_RESOLV_CONF", str(zone.write_resolv_conf(tmp_path / "resolv.conf")))
        server = MssServer(tmp_path / "mss", pss=("pss.test", 5060), sip_port=sip_port, external_line=None)
        add_peer(server)
        try:
            server.start()
            assert _callback(server, "cb1", user1, user2, timeout=10)["result"] == "answered"
            server.wait_log(
                rf"PSS {HOST_A}:{busy.address[1]} answered 503 to INVITE; trying {HOST_B}:{pss_b.port}"
            )
            assert busy.got[:2] == ["INVITE", "ACK"]  # the 503 was acknowledged (RFC 3261 §17.1.1.3)
        finally:
            server.stop()
    finally:
        busy.stop()
