"""IPv6 end to end.

``test_a_callback_with_mss_on_ipv6``: mss speaks SIP to Kamailio over ``[::1]`` and takes IIF on a
dual-stack ``::`` listener, while the pjsua2 phones stay on IPv4 (127.0.0.1) and Kamailio bridges
the families. mss registers its external line and sends INVITE/ACK/BYE over IPv6 (Via sent-by
``[::1]:port``, Request-URI and Contact with ``[::1]``, RFC 5118), follows a Record-Route set that
Kamailio doubles across the families, and the AS, connecting over IPv4 to ``::``, is matched as its
IPv4 [peer_servers] entry. The media stays IPv4 there: the pjsua2 build the tests use has no IPv6
media (its accounts refuse ``ipv6Use``, a media socket on ``::1`` does not resolve).

``test_media_over_ipv6``: mss server-to-server with everything on ``::1``, towards two answering
phones of this test behind one SIP socket (a UAS written here, independent of mss's SIP stack):
mss's offers say ``c=IN IP6 ::1``, the phones answer ``c=IN IP6 ::1``, and RTP crosses mss's relay
on IPv6 byte for byte both ways. A call with one leg on each family is tested at the relay
(tests/test_ipv6_relay.py): mss has one media address, so its SDP cannot offer both families.
"""

from __future__ import annotations

import re
import socket
import struct
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from mss_peers.kamailio import Kamailio
from mss_peers.phone import Phone
from mss_peers.server import MssServer
from tests.e2e.test_callback import TONE1, TONE2, _bridge, _tail_tone

pytestmark = pytest.mark.e2e

USERS = {"100": "pw100", "101": "pw101"}


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_a_callback_with_mss_on_ipv6(
    kamailio: Callable[..., Kamailio], phone: Callable[..., Phone], free_port: Callable[..., int],
    add_peer: Callable[[Any], None], tmp_path: Path, transport: str,
) -> None:  # fmt: skip
    sip_port = free_port()
    pss = kamailio("auth", users=USERS, host6="::1", mss=("::1", sip_port))
    p1 = phone("100", pss, tone_hz=TONE1, record=True)
    p2 = phone("101", pss, tone_hz=TONE2, record=True)
    server = MssServer(tmp_path / "mss", pss=("::1", pss.port), sip_port=sip_port, transport=transport,
                       callback={"listen_host": "::"}, sip={"local_host": "::1"},
                       rtp={"kernel_forwarding": "no"})  # fmt: skip
    add_peer(server)
    server.start()
    try:
        server.wait_log("external line registered")
        [contact] = pss.wait_registered("mss", timeout=5)
        assert f"@[::1]:{sip_port}" in contact, contact
        with server.client() as as1:  # over IPv4 to the dual-stack listener
            assert as1.request("v6", "100", "101", 60) == "ACK: id=v6;code=ok;"
            p1.wait_event("incoming", timeout=10)
            _bridge(p1, p2)
            time.sleep(2.0)
            p2.hangup()  # the BYE reaches mss over IPv6 through Kamailio's Record-Route
            response = as1.response("v6", timeout=10)
        assert response["result"] == "answered"
        p1.wait_event("disconnected", timeout=10)
        assert _tail_tone(p1.recording_path(), TONE2, 1.5) > 0.7
        assert _tail_tone(p2.recording_path(), TONE1, 1.5) > 0.7
        log = pss.log_text()
        assert "<- REGISTER sip:[::1]" in log, log[-3000:]
        assert "<- INVITE sip:100@[::1]" in log, log[-3000:]
        mss_log = server.log_text()
        assert "IIF connection from as1 (::ffff:127.0.0.1:" in mss_log
    finally:
        server.stop()



class Ipv6Phones:
    """Users 100 and 101 behind one SIP socket on ``::1``: every INVITE (and re-INVITE) is answered
    200 with ``c=IN IP6 ::1`` and the user's own RTP socket; BYE and anything else 200; ACK nothing.
    Serves from a thread until :meth:`close` (bounded: one minute at most)."""

    USERS = ("100", "101")

    def __init__(self) -> None:
        self.sip = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        self.sip.bind(("::1", 0))
        self.sip.settimeout(0.05)
        self.port = int(self.sip.getsockname()[1])
        self.rtp: dict[str, socket.socket] = {}
        for user in self.USERS:
            self.rtp[user] = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
            self.rtp[user].bind(("::1", 0))
        self.offers: dict[str, str] = {}
        """The last SDP mss sent each user."""
        self.byes: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sip.close()
        for sock in self.rtp.values():
            sock.close()

    def relay_port(self, user: str) -> int:
        """The relay port mss's SDP gave ``user``."""
        match = re.search(r"^m=audio (\d+) ", self.offers[user], re.M)
        assert match, self.offers[user]
        return int(match.group(1))

    def _serve(self) -> None:
        deadline = time.monotonic() + 60
        while not self._stop.is_set() and time.monotonic() < deadline:
            try:
                data, addr = self.sip.recvfrom(65535)
            except TimeoutError:
                continue
            answer = self._answer(data)
            if answer is not None:
                self.sip.sendto(answer, addr)

    def _answer(self, data: bytes) -> bytes | None:
        head, _, body = data.partition(b"\r\n\r\n")
        start, *lines = head.decode().split("\r\n")
        if start.startswith("SIP/2.0"):
            return None  # a response: this UAS sends no requests
        method, uri, _ = start.split(" ", 2)
        match = re.match(r"sip:([^@;]+)@", uri)
        user = match.group(1) if match else ""
        if method == "ACK":
            return None
        out = ["SIP/2.0 200 OK"]
        for line in lines:
            name = line.partition(":")[0].strip().lower()
            if name == "to" and ";tag=" not in line:
                line += f";tag=ph{user}"
            if name in ("via", "from", "to", "call-id", "cseq"):
                out.append(line)
        sdp = b""
        if method == "INVITE" and user in self.rtp:
            self.offers[user] = body.decode()
            port = self.rtp[user].getsockname()[1]
            sdp = (f"v=0\r\no=ph{user} 1 1 IN IP6 ::1\r\ns=-\r\nc=IN IP6 ::1\r\nt=0 0\r\n"
                   f"m=audio {port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n").encode()
            out += [f"Contact: <sip:{user}@[::1]:{self.port}>", "Content-Type: application/sdp"]
        if method == "BYE":
            self.byes.append(user)
        out.append(f"Content-Length: {len(sdp)}")
        return ("\r\n".join(out) + "\r\n\r\n").encode() + sdp


def _rtp(seq: int, ssrc: int) -> bytes:
    return struct.pack("!BBHII", 0x80, 0, seq, seq * 160, ssrc) + bytes([seq & 0xFF]) * 160


def _heard(sock: socket.socket, packet: bytes, timeout: float = 2.0) -> tuple[str, int]:
    """Wait for ``packet`` on ``sock`` (ringback and earlier packets are skipped); its source."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            data, source = sock.recvfrom(65535)
        except TimeoutError:
            break
        if data == packet:
            return source[0], source[1]
    raise AssertionError(f"{packet[:12].hex()}... not heard")


def test_media_over_ipv6(add_peer: Callable[[Any], None], tmp_path: Path) -> None:
    phones = Ipv6Phones()
    server = MssServer(tmp_path / "mss", pss=("::1", phones.port), external_line=None,
                       callback={"listen_host": "::"}, sip={"local_host": "::1"}, rtp={"host": "::1"})
    add_peer(server)
    try:
        server.start()
        with server.client() as as1:
            assert as1.request("m6", "100", "101", 3) == "ACK: id=m6;code=ok;"
            server.wait_log(r"callback m6: bridged")
            for user in phones.USERS:
                assert "c=IN IP6 ::1\r\n" in phones.offers[user], phones.offers[user]
            a_port, b_port = phones.relay_port("100"), phones.relay_port("101")
            for seq in range(1, 6):
                packet = _rtp(seq, 0xA1)
                phones.rtp["100"].sendto(packet, ("::1", a_port))
                assert _heard(phones.rtp["101"], packet) == ("::1", b_port)
                packet = _rtp(seq, 0xB2)
                phones.rtp["101"].sendto(packet, ("::1", b_port))
                assert _heard(phones.rtp["100"], packet) == ("::1", a_port)
            response = as1.response("m6", timeout=10)  # the duration ends it: mss sends the BYEs
        assert response["result"] == "answered", response
        # the RESPONSE goes at the release itself, before the BYE transactions: wait for both BYEs
        deadline = time.monotonic() + 5
        while len(phones.byes) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert sorted(phones.byes) == ["100", "101"]
    finally:
        server.stop()
        phones.close()


class _Ipv4Answer(Ipv6Phones):
    """As :class:`Ipv6Phones`, but user 100 answers with an IPv4 address (a phone without IPv6)."""

    def _answer(self, data: bytes) -> bytes | None:
        out = super()._answer(data)
        if out is None or b"o=ph100 " not in out:
            return out
        head, _, body = out.partition(b"\r\n\r\n")
        body = body.replace(b"IN IP6 ::1", b"IN IP4 127.0.0.1")
        head = re.sub(rb"Content-Length: \d+", b"Content-Length: %d" % len(body), head)
        return head + b"\r\n\r\n" + body


def test_an_answer_mss_cannot_reach_fails_the_leg(add_peer: Callable[[Any], None], tmp_path: Path) -> None:
    # mss's relay is on ::1 only: user1's IPv4 answer is unusable SDP (488), said once in the log
    phones = _Ipv4Answer()
    server = MssServer(tmp_path / "mss", pss=("::1", phones.port), external_line=None,
                       callback={"listen_host": "::"}, sip={"local_host": "::1"}, rtp={"host": "::1"})
    add_peer(server)
    try:
        server.start()
        with server.client() as as1:
            assert as1.request("w6", "100", "101", 3) == "ACK: id=w6;code=ok;"
            response = as1.response("w6", timeout=10)
        assert (response["result"], response["code"]) == ("user1_failed", "488"), response
        assert "c= address '127.0.0.1' is IP4; mss's media address ::1 is IP6" in server.log_text()
        assert "Traceback" not in server.log_text()
        assert phones.byes == ["100"]  # the answered leg is hung up
    finally:
        server.stop()
        phones.close()
