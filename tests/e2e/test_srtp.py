"""SRTP passthrough end to end: mss with ``[rtp] srtp = passthrough`` between two pjsua2 phones that
require SRTP keyed by SDES (a=crypto over plain SIP, and over TLS between mss and Kamailio).

Each phone plays its own tone and records what it decrypts: each must hear the other's tone, which
only happens when the keys crossed (user1's in the offer to user2, user2's in mss's re-INVITE of
user1) and the relay forwarded the packets untouched. The relay's counters show packets of SRTP's
size (the 80-bit authentication tag after the payload), and packets captured on the loopback on
their way out of the relay (where the capture is allowed) carry no audible tone. A phone without
SRTP as user2 makes a clear failure RESPONSE.
"""

from __future__ import annotations

import io
import json
import socket
import struct
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from mss import tones
from mss.cdr import export
from mss.config import load
from mss_peers.kamailio import Kamailio
from mss_peers.phone import Phone
from mss_peers.server import MssServer
from tests.e2e.test_callback import TONE1, TONE2, _tail_tone
from tests.test_sip_tls import make_pki

pytestmark = pytest.mark.e2e

USERS = {"100": "pw100", "101": "pw101"}
SRTP = {"srtp": "passthrough"}  # the kernel forwards bridged legs where it can (kernel_forwarding = auto)
#: The relay's userspace path, where a packet socket on the loopback sees what the relay sends.
SRTP_USERSPACE = {**SRTP, "kernel_forwarding": "no"}

#: An SRTP packet of 20 ms of G.711: RTP header, 160 bytes of (encrypted) payload, the 80-bit tag
#: of AES_CM_128_HMAC_SHA1_80 (RFC 3711 §4.2, RFC 4568 §6.2.1).
SRTP_G711_PACKET = 12 + 160 + 10

#: Packets the loopback capture keeps at most (some 10 s of both directions), and how long it runs.
MAX_CAPTURED = 1000
CAPTURE_LIFETIME = 20.0

ETH_P_ALL = 0x0003


class RelayCapture:
    """Datagrams leaving the relay's RTP ports (even ports of ``rtp_range``) on the loopback,
    captured with a packet socket; ``available`` is False where the capture is not allowed."""

    def __init__(self, rtp_range: tuple[int, int]) -> None:
        self.rtp_range = rtp_range
        self.packets: list[bytes] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.available = True
        try:
            self._sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
            self._sock.bind(("lo", 0))
            self._sock.settimeout(0.2)
        except (OSError, AttributeError):  # no CAP_NET_RAW here
            self.available = False

    def __enter__(self) -> RelayCapture:
        if self.available:
            self._thread = threading.Thread(target=self._run, name="relay capture", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2.0)
        if self.available:
            self._sock.close()

    def _run(self) -> None:
        deadline = time.monotonic() + CAPTURE_LIFETIME
        while not self._stop.is_set() and time.monotonic() < deadline and len(self.packets) < MAX_CAPTURED:
            try:
                frame, where = self._sock.recvfrom(65535)
            except TimeoutError:
                continue
            except OSError:
                return
            if where[2] == socket.PACKET_OUTGOING:
                continue  # loopback shows each frame twice: keep the incoming copy
            payload = self._udp_from_relay(frame[14:])
            if payload is not None:
                self.packets.append(payload)

    def _udp_from_relay(self, ip: bytes) -> bytes | None:
        if len(ip) < 28 or ip[0] >> 4 != 4 or ip[9] != socket.IPPROTO_UDP:
            return None
        header = (ip[0] & 0x0F) * 4
        source_port = struct.unpack("!H", ip[header:header + 2])[0]
        low, high = self.rtp_range
        if not low <= source_port <= high or source_port % 2:
            return None
        return ip[header + 8:]


def _cdr(server: MssServer) -> dict[str, Any]:
    out = io.StringIO()
    assert export(load(server.config_path), None, "jsonl", out) == 1
    cdr: dict[str, Any] = json.loads(out.getvalue())
    return cdr


def _srtp_phones(phone: Callable[..., Phone], pss: Kamailio, **user2: Any) -> tuple[Phone, Phone]:
    p1 = phone("100", pss, tone_hz=TONE1, record=True, codecs=["PCMU"], srtp="mandatory")
    p2 = phone("101", pss, **{"tone_hz": TONE2, "record": True, "codecs": ["PCMU"], "srtp": "mandatory",
                              **user2})
    return p1, p2


def _talk(server: MssServer, p1: Phone, p2: Phone, cb_id: str, seconds: float, *,
          hangup: bool = True) -> dict[str, str]:  # fmt: skip
    """A callback that user2 hangs up after ``seconds`` of talk (``hangup``), else one whose
    ``duration`` of ``seconds`` mss ends; its RESPONSE."""
    with server.client() as as1:
        duration = 60 if hangup else int(seconds)
        assert as1.request(cb_id, "100", "101", duration) == f"ACK: id={cb_id};code=ok;"
        p1.wait_event("confirmed", timeout=10)
        p2.wait_event("confirmed", timeout=10)
        if hangup:
            time.sleep(seconds)
            p2.hangup()
        response = as1.response(cb_id, timeout=10)
    p1.wait_event("disconnected", timeout=10)
    p2.wait_event("disconnected", timeout=10)
    return response


def _heard_each_other(p1: Phone, p2: Phone) -> None:
    assert _tail_tone(p1.recording_path(), TONE2, 1.5) > 0.8, "user1 did not decrypt user2's tone"
    assert _tail_tone(p2.recording_path(), TONE1, 1.5) > 0.8, "user2 did not decrypt user1's tone"


def test_srtp_passthrough_between_two_sdes_phones(
    kamailio: Callable[..., Kamailio], phone: Callable[..., Phone], mss: Callable[..., MssServer],
    free_port: Callable[..., int], peer_logs: Callable[[], str],
) -> None:
    pss = kamailio("auth", users=USERS, mss=("127.0.0.1", free_port()))
    p1, p2 = _srtp_phones(phone, pss)
    server = mss(pss, rtp=SRTP_USERSPACE)
    server.wait_log("external line registered")
    with RelayCapture(server.rtp_range) as capture:
        response = _talk(server, p1, p2, "s1", 3.0)
    assert response["result"] == "answered", peer_logs()
    _heard_each_other(p1, p2)
    # user1 was re-INVITEd with user2's key; the INVITEs were RTP/SAVP with the phones' own keys.
    invite1 = p1.events("incoming")[0]["invite"]
    invite2 = p2.events("incoming")[0]["invite"]
    assert "RTP/SAVP" in invite1 and "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:" in invite1
    assert "RTP/SAVP" in invite2 and "a=crypto:" in invite2
    log = server.log_text()
    assert "SRTP passthrough" in log and "no ringback to user1 on SRTP" in log

    # The relay forwarded what it received, packet for packet, and every packet has SRTP's size.
    cdr = _cdr(server)
    assert (cdr["leg1_lost"], cdr["leg2_lost"]) == (0, 0), cdr
    for leg in ("leg1", "leg2"):
        for way in ("in", "out"):
            packets, size = cdr[f"{leg}_packets_{way}"], cdr[f"{leg}_bytes_{way}"]
            assert packets > 100 and size == packets * SRTP_G711_PACKET, cdr
    # No ringback: nothing reached user1 that user2 did not send.
    assert cdr["leg1_packets_out"] <= cdr["leg2_packets_in"], cdr

    if capture.available:
        assert len(capture.packets) > 100, len(capture.packets)
        # A plain G.711 packet of either tone would decode to 440 or 1000 Hz, every one of them; these
        # are noise, whose strongest frequency falls within 30 Hz of a tone by chance in about 3 % of
        # packets: 5 % failed now and then; a quarter still tells noise from a leak.
        audible = 0
        for packet in capture.packets:
            assert len(packet) == SRTP_G711_PACKET and packet[1] & 0x7F == 0, packet[:12].hex()
            hz = tones.dominant_frequency(tones.decode_ulaw(packet[12:172]))
            audible += abs(hz - TONE1) < 30 or abs(hz - TONE2) < 30
        assert audible < len(capture.packets) * 0.25, (audible, len(capture.packets))


def test_srtp_passthrough_with_mss_on_tls(
    kamailio: Callable[..., Kamailio], phone: Callable[..., Phone], free_port: Callable[..., int],
    add_peer: Callable[[Any], None], tmp_path: Path, peer_logs: Callable[[], str],
) -> None:
    # Where SDES keys belong in production: the signalling between mss and its provider on TLS.
    pki = make_pki(tmp_path / "pki")
    sip_port = free_port()
    pss = kamailio("auth", users=USERS, mss=("127.0.0.1", sip_port), tls=(pki.cert, pki.key))
    p1, p2 = _srtp_phones(phone, pss)
    sip = {"tls_cert": pki.cert, "tls_key": pki.key, "tls_ca": pki.ca, "tls_verify": "yes"}
    server = MssServer(tmp_path / "mss", pss=pss.tls_address, sip_port=sip_port, transport="tls", sip=sip,
                       rtp=SRTP)  # fmt: skip
    add_peer(server)
    with server:
        server.wait_log("external line registered")
        # mss ends the call (duration): its BYEs go on its own connection to Kamailio.
        response = _talk(server, p1, p2, "s2", 4.0, hangup=False)
        assert response["result"] == "answered", peer_logs()
        _heard_each_other(p1, p2)


def test_a_user2_without_srtp_is_a_clear_failure(
    kamailio: Callable[..., Kamailio], phone: Callable[..., Phone], mss: Callable[..., MssServer],
    free_port: Callable[..., int], peer_logs: Callable[[], str],
) -> None:
    pss = kamailio("auth", users=USERS, mss=("127.0.0.1", free_port()))
    p1, p2 = _srtp_phones(phone, pss, srtp="no")
    server = mss(pss, rtp=SRTP)
    server.wait_log("external line registered")
    with server.client() as as1:
        assert as1.request("s3", "100", "101", 60) == "ACK: id=s3;code=ok;"
        response = as1.response("s3", timeout=15)
    assert response["result"] == "user2_failed", (response, peer_logs())
    # The phone refuses the RTP/SAVP offer at once (488), before it shows a call.
    assert response["code"] == "488", response
    p1.wait_event("disconnected", timeout=10)  # user1 was hung up: nothing hangs
    assert not p2.events("confirmed")
    assert "user2 488" in server.log_text()


def test_hold_and_resume_on_an_srtp_call_keep_the_keys_crossing(
    kamailio: Callable[..., Kamailio], phone: Callable[..., Phone], mss: Callable[..., MssServer],
    free_port: Callable[..., int], peer_logs: Callable[[], str],
) -> None:
    # user2's re-INVITEs (hold, resume) carry its a=crypto: mss answers with user1's key and passes
    # user2's line on to user1 in the reflected offer.
    pss = kamailio("auth", users=USERS, mss=("127.0.0.1", free_port()))
    p1, p2 = _srtp_phones(phone, pss)
    server = mss(pss, rtp=SRTP)
    server.wait_log("external line registered")
    with server.client() as as1:
        assert as1.request("s4", "100", "101", 60) == "ACK: id=s4;code=ok;"
        p1.wait_event("confirmed", timeout=10)
        p2.wait_event("confirmed", timeout=10)
        time.sleep(1.0)
        mark1, mark2 = p1.mark(), p2.mark()
        p2.hold()
        p2.wait_event("media", status="local_hold", since=mark2, timeout=10)
        p1.wait_event("media", status="remote_hold", since=mark1, timeout=10)
        mark1, mark2 = p1.mark(), p2.mark()
        p2.unhold()
        p2.wait_event("media", status="active", since=mark2, timeout=10)
        p1.wait_event("media", status="active", since=mark1, timeout=10)
        time.sleep(2.0)
        p1.hangup()
        response = as1.response("s4", timeout=10)
    assert response["result"] == "answered", peer_logs()
    p1.wait_event("disconnected", timeout=10)
    p2.wait_event("disconnected", timeout=10)
    _heard_each_other(p1, p2)
