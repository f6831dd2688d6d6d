"""A far end that answers with a 5,000-digit Session-Expires, through Kamailio, to a real mss.

Python's ``int()`` refuses more than 4,300 digits; the number reached it unguarded, the 200 OK was
lost in an exception, and a callback whose user2 answered was reported ``user2_no_answer``. user2
here is a scripted UAS on a raw UDP socket (pjsua2 cannot be made to send such a header); user1 is
a pjsua2 phone.
"""

from __future__ import annotations

import re
import socket
import threading
import time
from collections.abc import Callable

import pytest

from mss_peers.kamailio import Kamailio
from mss_peers.phone import Phone
from mss_peers.rawsip import RawSipClient, digest_authorization
from mss_peers.server import MssServer

pytestmark = pytest.mark.e2e

HUGE = "9" * 5000
#: Bound (seconds) of every wait of the scripted phone.
WAIT = 20.0


class ScriptedPhone:
    """User ``user`` on one UDP socket: registers, answers the first INVITE with 200 OK and
    ``extra`` headers, answers BYE with 200. ``log`` keeps what it saw."""

    def __init__(self, pss: Kamailio, user: str, password: str, extra: list[str]) -> None:
        self.client = RawSipClient(pss.host, pss.port, timeout=2.0)
        self.user, self.password, self.extra = user, password, extra
        self.registrar = f"sip:{pss.host}:{pss.port}"
        self.log: list[str] = []
        self.acked = threading.Event()
        self.byed = threading.Event()
        self.rtp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.rtp.bind(("127.0.0.1", 0))
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def register(self) -> None:
        c = self.client
        first = c.request("REGISTER", self.registrar, from_user=self.user, headers={"Expires": "60"})
        assert first.status == 401, first.raw
        auth = digest_authorization(first.header("WWW-Authenticate"), "REGISTER", self.registrar, self.user,
                                    self.password)  # fmt: skip
        ok = c.request("REGISTER", self.registrar, from_user=self.user, call_id=first.call_id,
                       headers={"Expires": "60", "Authorization": auth})  # fmt: skip
        assert ok.status == 200, ok.raw
        self._thread.start()

    def _serve(self) -> None:
        sock = self.client.sock
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline and not self.byed.is_set():
            try:
                data, source = sock.recvfrom(65535)
            except TimeoutError:
                continue
            text = data.decode(errors="replace")
            method = text.split(" ", 1)[0]
            self.log.append(text.split("\r\n", 1)[0])
            if method == "INVITE":
                sock.sendto(self._answer(text, 180).encode(), source)
                sock.sendto(self._answer(text, 200).encode(), source)
            elif method == "ACK":
                self.acked.set()
            elif method == "BYE":
                sock.sendto(self._answer(text, 200).encode(), source)
                self.byed.set()

    def _answer(self, request: str, status: int) -> str:
        head = request.split("\r\n\r\n", 1)[0].split("\r\n")
        method = head[0].split(" ", 1)[0]
        keep = ("via", "record-route", "from", "call-id", "cseq")
        lines = [f"SIP/2.0 {status} {'OK' if status == 200 else 'Ringing'}"]
        for line in head[1:]:
            name = line.split(":", 1)[0].strip().lower()
            if name in keep:
                lines.append(line)
            elif name == "to":
                lines.append(line if ";tag=" in line else line + ";tag=scripted1")
        host, port = self.client.local
        lines.append(f"Contact: <sip:{self.user}@{host}:{port}>")
        body = ""
        if method == "INVITE" and status == 200:
            rtp_port = self.rtp.getsockname()[1]
            body = (f"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
                    f"m=audio {rtp_port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=sendrecv\r\n")  # fmt: skip
            lines += self.extra
            lines.append("Content-Type: application/sdp")
        lines.append(f"Content-Length: {len(body)}")
        return "\r\n".join(lines) + "\r\n\r\n" + body

    def close(self) -> None:
        self.byed.set()
        if self._thread.is_alive():
            self._thread.join(3)
        self.client.close()
        self.rtp.close()


def test_user2_answering_with_a_huge_session_expires_is_answered(
    kamailio: Callable[..., Kamailio],
    phone: Callable[..., Phone],
    mss: Callable[..., MssServer],
    free_port: Callable[..., int],
) -> None:
    pss = kamailio("auth", users={"100": "pw100", "101": "pw101"}, mss=("127.0.0.1", free_port()))
    user1 = phone("100", pss)
    user2 = ScriptedPhone(pss, "101", "pw101", [f"Session-Expires: {HUGE};refresher=uac", "Require: timer"])
    try:
        user2.register()
        server = mss(pss)
        server.wait_log("external line registered")
        with server.client() as as1:
            assert as1.request("huge", "100", "101", 2) == "ACK: id=huge;code=ok;"
            assert user2.acked.wait(10), user2.log  # mss read the 200 OK and ACKed it
            response = as1.response("huge", timeout=15)
        assert response["result"] == "answered", (response, server.log_tail(30))
        assert 1 <= int(response["real_duration"]) <= 3, response
        assert user2.byed.wait(5), user2.log  # the duration timer released user2 with BYE
        user1.wait_event("disconnected", timeout=10)
        assert not re.search(r"Traceback|Exception in callback", server.log_text()), server.log_tail(40)
    finally:
        user2.close()
