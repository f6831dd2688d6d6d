"""IPv6 end to end: mss speaks SIP to Kamailio over ``[::1]`` and takes IIF on a dual-stack ``::``
listener, while the pjsua2 phones stay on IPv4 (127.0.0.1) and Kamailio bridges the families.

What this covers: mss registers its external line and sends INVITE/ACK/BYE over IPv6 (Via sent-by
``[::1]:port``, Request-URI and Contact with ``[::1]``, RFC 5118), follows a Record-Route set that
Kamailio doubles across the families, and the AS, connecting over IPv4 to ``::``, is matched as its
IPv4 [peer_servers] entry. The media stays IPv4 here (the phones have no IPv6 media); SDP
``c=IN IP6`` and the relay on IPv6, with a leg on each family, are tested on ``::1`` sockets in
tests/test_ipv6_relay.py and tests/test_sdp.py.
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

pytestmark = pytest.mark.e2e

USERS = {"100": "pw100", "101": "pw101"}


def test_a_callback_with_mss_on_ipv6(
    kamailio: Callable[..., Kamailio], phone: Callable[..., Phone], free_port: Callable[..., int],
    add_peer: Callable[[Any], None], tmp_path: Path,
) -> None:  # fmt: skip
    sip_port = free_port()
    pss = kamailio("auth", users=USERS, host6="::1", mss=("::1", sip_port))
    p1 = phone("100", pss, tone_hz=TONE1, record=True)
    p2 = phone("101", pss, tone_hz=TONE2, record=True)
    server = MssServer(tmp_path / "mss", pss=("::1", pss.port), sip_port=sip_port,
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
