"""G.729 ringback end to end: user1 answers with G.729 only and hears mss's ring tone while user2 rings.

pjsua2 has no G.729, so both phones are small raw SIP phones written here: each registers to
Kamailio with the digest helpers of ``mss_peers.rawsip``. user1 answers mss's INVITE with a G.729-only
SDP and records the RTP that reaches its UDP socket; user2 rings (a pjsua2 phone would answer the
G.729-only offer with 488 at once) until mss's ``ring_timeout`` cancels it. What user1 received is
decoded with mss's own bcg729 binding and must carry 425 Hz in the 1 s on / 4 s off cadence.
"""

from __future__ import annotations

import itertools
import secrets
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from mss import tones
from mss_peers.kamailio import Kamailio
from mss_peers.rawsip import RawSipClient, digest_authorization
from mss_peers.server import MssServer
from tests.test_g729 import requires_bcg729

pytestmark = pytest.mark.e2e

#: Largest datagram read (SIP over UDP and RTP both stay far below it).
MAX_DATAGRAM = 65535
#: The most RTP packets user1 keeps: a minute of 20 ms packets, far more than a ring timeout.
MAX_RTP_PACKETS = 3000
#: How long the raw phone's threads may live at most, whatever the test does.
PHONE_LIFETIME = 120.0
#: ring_timeout of the test: long enough for two bursts of the 5 s cadence.
RING_TIMEOUT = 8

# RFC 3261 §7.3.3 compact forms, as Kamailio may pass them on.
_COMPACT = {"v": "via", "f": "from", "t": "to", "i": "call-id", "m": "contact", "l": "content-length",
            "c": "content-type", "k": "supported"}


@dataclass(frozen=True, slots=True)
class SipRequest:
    """A request as the raw phone received it."""

    method: str
    headers: list[tuple[str, str]]
    body: str
    source: tuple[str, int]

    def values(self, name: str) -> list[tuple[str, str]]:
        """(name as sent, value) of every header called ``name`` (full or compact form)."""
        return [(n, v) for n, v in self.headers if _COMPACT.get(n.lower(), n.lower()) == name]

    def header(self, name: str) -> str:
        return self.values(name)[0][1]


def parse_request(data: bytes, source: tuple[str, int]) -> SipRequest | None:
    """A request, or None for a response (the raw phone sends no request that needs one)."""
    head, _, body = data.decode(errors="replace").partition("\r\n\r\n")
    lines = head.split("\r\n")
    if lines[0].startswith("SIP/2.0"):
        return None
    fields = (line.partition(":") for line in lines[1:])
    headers = [(name.strip(), value.strip()) for name, _, value in fields]
    return SipRequest(method=lines[0].split(" ", 1)[0], headers=headers, body=body, source=source)


class RawG729Phone:
    """A registered UDP SIP phone that speaks G.729 only and records the RTP it receives.

    One thread answers SIP: an INVITE gets 180, then 200 with a G.729-only SDP when ``answer``
    (a repeated INVITE gets the same answer again), else it rings until a CANCEL (200, then 487 to
    the INVITE); BYE and anything else get 200, ACK is noted. Another thread keeps every RTP packet.
    """

    def __init__(self, user: str, password: str, pss: Kamailio, *, answer: bool = True) -> None:
        self.user = user
        self.answer = answer
        self._invites: dict[str, tuple[SipRequest, str]] = {}  # Call-ID -> the INVITE and our To tag
        self.sip = RawSipClient(pss.host, pss.port, transport="udp", timeout=2.0)
        self.rtp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.rtp.bind(("127.0.0.1", 0))
        self.rtp_port = self.rtp.getsockname()[1]
        self.requests: list[SipRequest] = []
        self.packets: list[bytes] = []
        self._answers: dict[tuple[str, str], str] = {}  # (Call-ID, CSeq) -> the 200 sent
        self._stop = threading.Event()
        self._register(pss, password)
        self._threads = [threading.Thread(target=self._serve_sip, daemon=True),
                         threading.Thread(target=self._record_rtp, daemon=True)]
        for thread in self._threads:
            thread.start()

    def _register(self, pss: Kamailio, password: str) -> None:
        uri = f"sip:{pss.host}:{pss.port}"
        first = self.sip.request("REGISTER", uri, from_user=self.user, headers={"Expires": "300"})
        assert first.status == 401, first.raw
        auth = digest_authorization(first.header("WWW-Authenticate"), "REGISTER", uri, self.user, password)
        second = self.sip.request("REGISTER", uri, from_user=self.user, call_id=first.call_id, cseq=2,
                                  headers={"Expires": "300", "Authorization": auth})
        assert second.status == 200, second.raw

    def sdp(self) -> str:
        session = secrets.randbelow(10**9)
        return (
            f"v=0\r\no=- {session} {session} IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
            f"m=audio {self.rtp_port} RTP/AVP 18\r\na=rtpmap:18 G729/8000\r\na=fmtp:18 annexb=no\r\n"
            "a=ptime:20\r\na=sendrecv\r\n"
        )

    def _respond(self, request: SipRequest, status: int, reason: str, *, tag: str, body: str = "") -> str:
        host, port = self.sip.local
        lines = [f"SIP/2.0 {status} {reason}"]
        for name, value in request.headers:
            kind = _COMPACT.get(name.lower(), name.lower())
            if kind in ("via", "record-route", "from", "call-id", "cseq"):
                lines.append(f"{name}: {value}")
            elif kind == "to":
                lines.append(f"{name}: {value}" if ";tag=" in value.lower() else f"{name}: {value};tag={tag}")
        lines.append(f"Contact: <sip:{self.user}@{host}:{port};transport=udp>")
        if body:
            lines.append("Content-Type: application/sdp")
        lines.append(f"Content-Length: {len(body.encode())}")
        text = "\r\n".join(lines) + "\r\n\r\n" + body
        self.sip.sock.sendto(text.encode(), request.source)
        return text

    def _handle(self, request: SipRequest) -> None:
        self.requests.append(request)
        call_id = request.header("call-id")
        key = (call_id, request.header("cseq"))
        tag = secrets.token_hex(4)
        if request.method == "INVITE":
            if key in self._answers:  # a retransmission: the same answer again
                self.sip.sock.sendto(self._answers[key].encode(), request.source)
                return
            self._invites.setdefault(call_id, (request, tag))
            self._answers[key] = self._respond(request, 180, "Ringing", tag=tag)
            if self.answer:
                self._answers[key] = self._respond(request, 200, "OK", tag=tag, body=self.sdp())
        elif request.method == "CANCEL" and call_id in self._invites:
            self._respond(request, 200, "OK", tag=tag)
            invite, invite_tag = self._invites[call_id]
            self._respond(invite, 487, "Request Terminated", tag=invite_tag)
        elif request.method != "ACK":
            self._respond(request, 200, "OK", tag=tag)

    def _serve_sip(self) -> None:
        self.sip.sock.settimeout(0.2)
        deadline = time.monotonic() + PHONE_LIFETIME
        while not self._stop.is_set() and time.monotonic() < deadline:
            try:
                data, source = self.sip.sock.recvfrom(MAX_DATAGRAM)
            except TimeoutError:
                continue
            except OSError:
                return
            request = parse_request(data, source)
            if request is not None:
                self._handle(request)

    def _record_rtp(self) -> None:
        self.rtp.settimeout(0.2)
        deadline = time.monotonic() + PHONE_LIFETIME
        while not self._stop.is_set() and time.monotonic() < deadline and len(self.packets) < MAX_RTP_PACKETS:
            try:
                self.packets.append(self.rtp.recv(MAX_DATAGRAM))
            except TimeoutError:
                continue
            except OSError:
                return

    def methods(self) -> list[str]:
        return [r.method for r in self.requests]

    def close(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=2.0)
        self.sip.close()
        self.rtp.close()


def _received_pcm(packets: list[bytes]) -> tuple[list[tuple[int, int, int, int]], np.ndarray]:
    """The RTP headers (marker+PT byte, sequence, timestamp, SSRC) in sequence order and the
    decoded audio, one decoder over the whole stream as a phone would."""
    ordered = sorted(packets, key=lambda p: struct.unpack("!H", p[2:4])[0])
    headers = [struct.unpack("!xBHII", p[:12]) for p in ordered]
    return headers, tones.decode_g729(b"".join(p[12:] for p in ordered))


def _runs(flags: list[bool]) -> list[tuple[bool, int, int]]:
    """(value, first index, length) of each run of equal flags."""
    runs: list[tuple[bool, int, int]] = []
    for i, flag in enumerate(flags):
        if runs and runs[-1][0] == flag:
            runs[-1] = (flag, runs[-1][1], runs[-1][2] + 1)
        else:
            runs.append((flag, i, 1))
    return runs


def _ring_a_g729_user1(
    kamailio: Callable[..., Kamailio], mss: Callable[..., MssServer], free_port: Callable[..., int],
    peer_logs: Callable[[], str], ring_timeout: int,
) -> tuple[MssServer, RawG729Phone]:
    """One callback where user1 answers with G.729 and user2 rings until ``ring_timeout``: the mss
    process and user1 (closed, with what it received)."""
    pss = kamailio("auth", users={"100": "pw100", "101": "pw101"}, mss=("127.0.0.1", free_port()))
    user1 = RawG729Phone("100", "pw100", pss)
    user2: RawG729Phone | None = None
    try:
        assert pss.wait_registered("100", timeout=5)
        user2 = RawG729Phone("101", "pw101", pss, answer=False)
        server = mss(pss, callback={"ring_timeout": ring_timeout})
        server.wait_log("external line registered")
        with server.client() as as1:
            assert as1.request("g729", "100", "101", 60) == "ACK: id=g729;code=ok;"
            response = as1.response("g729", timeout=ring_timeout + 15)
        assert response["result"] == "user2_no_answer", peer_logs()
        deadline = time.monotonic() + 10  # the BYE and the CANCEL may still be on their way
        while time.monotonic() < deadline and ("BYE" not in user1.methods()
                                               or "CANCEL" not in user2.methods()):
            time.sleep(0.1)
        assert user1.methods()[:2] == ["INVITE", "ACK"] and "BYE" in user1.methods(), user1.methods()
        assert user2.methods()[:2] == ["INVITE", "CANCEL"], user2.methods()  # rang until cancelled
    finally:
        user1.close()
        if user2 is not None:
            user2.close()
    assert "a=rtpmap:18 G729/8000" in user1.requests[0].body  # mss offered G.729, user1 took it alone
    return server, user1


@requires_bcg729
def test_user1_on_g729_hears_425_hz_ringback_while_user2_rings(
    kamailio: Callable[..., Kamailio], mss: Callable[..., MssServer], free_port: Callable[..., int],
    peer_logs: Callable[[], str],
) -> None:
    server, user1 = _ring_a_g729_user1(kamailio, mss, free_port, peer_logs, RING_TIMEOUT)
    assert "G.729 ringback is off" not in server.log_text()
    headers, pcm = _received_pcm(user1.packets)
    # About RING_TIMEOUT seconds of 20 ms packets of two 10-byte G.729 frames, one stream.
    assert len(headers) > (RING_TIMEOUT - 2) * 50, (len(headers), peer_logs())
    assert all(len(p) == 12 + 20 for p in user1.packets)
    assert headers[0][0] == 0x80 | 18 and all(h[0] == 18 for h in headers[1:])
    assert len({h[3] for h in headers}) == 1
    seqs = [h[1] for h in headers]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), "packets lost or repeated on loopback"
    assert all((b[2] - a[2]) % 2**32 == 160 for a, b in itertools.pairwise(headers))

    # 50 ms blocks: loud ones carry 425 Hz, and they come as 1 s bursts every 5 s.
    blocks = pcm[: pcm.size // 400 * 400].reshape(-1, 400).astype(np.float64)
    loud = [bool(x) for x in np.sqrt(np.mean(blocks**2, axis=1)) > 300]
    in_tone = [abs(tones.dominant_frequency(b) - 425) < 25 for b, on in zip(blocks, loud, strict=True) if on]
    assert sum(in_tone) >= 0.95 * len(in_tone) and len(in_tone) >= 30, (len(in_tone), sum(in_tone))
    bursts = [(start, length) for on, start, length in _runs(loud) if on]
    assert len(bursts) >= 2, _runs(loud)
    assert bursts[0][0] == 0  # the tone starts with the first packet
    assert all(abs(length - 20) <= 1 for _, length in bursts[:-1]), bursts  # the last may be cut short
    assert [b - a for (a, _), (b, _) in itertools.pairwise(bursts)] == [100] * (len(bursts) - 1)
    burst = pcm[400 : 19 * 400]
    assert abs(tones.dominant_frequency(burst) - 425) < 2


#: A ``sitecustomize`` that makes ``import mss._g729`` fail, as in an mss built without bcg729.
WITHOUT_BCG729 = 'import sys\nsys.modules["mss._g729"] = None  # type: ignore[assignment]\n'


def test_without_bcg729_mss_says_so_once_and_user1_hears_silence(
    kamailio: Callable[..., Kamailio], mss: Callable[..., MssServer], free_port: Callable[..., int],
    peer_logs: Callable[[], str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    site = tmp_path / "without-bcg729"
    site.mkdir()
    (site / "sitecustomize.py").write_text(WITHOUT_BCG729)
    monkeypatch.setenv("PYTHONPATH", str(site))  # read by the mss process the fixture starts
    server, user1 = _ring_a_g729_user1(kamailio, mss, free_port, peer_logs, 3)
    log = server.log_text()
    assert log.count("G.729 ringback is off (mss was built without bcg729") == 1, log
    assert user1.packets == []  # nothing is sent rather than made-up frames; the call still ends well
