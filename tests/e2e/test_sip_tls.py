"""SIP over TLS end to end: mss with ``[sip] transport = tls`` registers to Kamailio's TLS listener
and places a callback between two pjsua2 phones (they stay on UDP to Kamailio, which bridges the
transports); the far end's BYE comes to mss over a TLS connection Kamailio opens to mss's Contact.
A PSS whose certificate another CA signed is refused with one clear log line, and REQUESTs get
code=fail since the line is not registered. The certificates are made by the test (openssl CLI).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from mss_peers.kamailio import Kamailio
from mss_peers.phone import Phone
from mss_peers.server import MssServer
from tests.e2e.test_callback import TONE1, TONE2, _bridge, _tail_tone
from tests.test_sip_tls import Pki, make_pki

pytestmark = pytest.mark.e2e

USERS = {"100": "pw100", "101": "pw101"}


def _mss_over_tls(tmp_path: Path, pss: Kamailio, sip_port: int, mss_pki: Pki, ca: Path,
                  add_peer: Callable[[Any], None]) -> MssServer:  # fmt: skip
    """An mss process speaking TLS to ``pss``'s TLS listener, trusting ``ca``, showing ``mss_pki``'s
    certificate on the connections Kamailio opens to it."""
    sip = {"tls_cert": mss_pki.cert, "tls_key": mss_pki.key, "tls_ca": ca, "tls_verify": "yes"}
    server = MssServer(tmp_path / "mss", pss=pss.tls_address, sip_port=sip_port, transport="tls", sip=sip,
                       rtp={"kernel_forwarding": "no"})  # fmt: skip
    add_peer(server)
    return server.start()


def test_a_callback_with_mss_on_tls(
    kamailio: Callable[..., Kamailio], phone: Callable[..., Phone], free_port: Callable[..., int],
    add_peer: Callable[[Any], None], tmp_path: Path,
) -> None:  # fmt: skip
    pki = make_pki(tmp_path / "pki")
    sip_port = free_port()
    pss = kamailio("auth", users=USERS, mss=("127.0.0.1", sip_port), tls=(pki.cert, pki.key))
    p1 = phone("100", pss, tone_hz=TONE1, record=True)
    p2 = phone("101", pss, tone_hz=TONE2, record=True)
    server = _mss_over_tls(tmp_path, pss, sip_port, pki, pki.ca, add_peer)
    try:
        server.wait_log("external line registered")
        [contact] = pss.wait_registered("mss", timeout=5)
        assert contact.endswith(";transport=tls"), contact
        with server.client() as as1:
            assert as1.request("tls1", "100", "101", 60) == "ACK: id=tls1;code=ok;"
            incoming = p1.wait_event("incoming", timeout=10)
            assert "RTP/AVP" in incoming["invite"]  # SRTP is not part of this
            _bridge(p1, p2)
            time.sleep(2.0)
            p2.hangup()  # Kamailio opens a TLS connection to mss's Contact for this BYE
            response = as1.response("tls1", timeout=10)  # the duration is 60 s: the BYE reached mss
        assert response["result"] == "answered"
        p1.wait_event("disconnected", timeout=10)
        assert _tail_tone(p1.recording_path(), TONE2, 1.5) > 0.7
        assert _tail_tone(p2.recording_path(), TONE1, 1.5) > 0.7
        log = pss.log_text()
        assert "<- REGISTER sip:127.0.0.1 from tls:127.0.0.1:" in log
        assert "<- INVITE sip:100@127.0.0.1 from tls:127.0.0.1:" in log
        assert f"<- 200 OK for BYE from tls:127.0.0.1:{sip_port}" in log  # on mss's TLS listener
        assert "certificate verify failed" not in server.log_text()
    finally:
        server.stop()


def test_a_pss_certificate_from_another_ca_is_refused(
    kamailio: Callable[..., Kamailio], free_port: Callable[..., int], add_peer: Callable[[Any], None],
    tmp_path: Path,
) -> None:  # fmt: skip
    ours, theirs = make_pki(tmp_path / "ours", "ours"), make_pki(tmp_path / "theirs", "theirs")
    sip_port = free_port()
    pss = kamailio("auth", users=USERS, mss=("127.0.0.1", sip_port), tls=(theirs.cert, theirs.key))
    server = _mss_over_tls(tmp_path, pss, sip_port, ours, ours.ca, add_peer)
    try:
        host, port = pss.tls_address
        server.wait_log(rf"TLS to {host}:{port}: certificate verify failed: unable to get local issuer")
        with server.client() as as1:
            assert as1.request("tls2", "100", "101", 5) == "ACK: id=tls2;code=fail;"
        assert not pss.registered("mss")
        assert server.log_text().count("certificate verify failed") == 1
    finally:
        server.stop()
