"""No cross-talk after a crash: the phones of a call cut by ``kill -9`` keep sending to its relay
ports, and a new callback after the restart must hear its own phones, not them."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from mss_peers.audio import tone_fraction
from mss_peers.kamailio import Kamailio
from mss_peers.phone import Phone
from mss_peers.server import MssServer

pytestmark = pytest.mark.e2e

OLD1, OLD2 = 500.0, 800.0  # the phones of the call the crash cut
NEW1, NEW2 = 1300.0, 2100.0  # the phones of the callback after the restart


def test_new_callback_after_kill_9_hears_its_own_phones(
    add_peer: Callable[[Any], None], tmp_path: Path, kamailio: Callable[..., Kamailio],
    phone: Callable[..., Phone], free_port: Callable[..., int],
) -> None:
    pss = kamailio("trunk", users={u: f"pw{u}" for u in ("100", "101", "102", "103")},
                   mss=("127.0.0.1", free_port()))
    old1, old2 = phone("100", pss, tone_hz=OLD1), phone("101", pss, tone_hz=OLD2)
    new1 = phone("102", pss, tone_hz=NEW1, record=True)
    new2 = phone("103", pss, tone_hz=NEW2, record=True)
    # 4 port pairs, room for 2 calls: without a quarantine the new call may get the old call's
    # ports back (and ports handed out in order from port_min always did)
    low = 10000 + (free_port() % 50) * 100  # the harness's RTP ranges: 10000..14999
    server = MssServer(tmp_path / "mss", pss=pss.address, sip_port=pss.mss[1], external_line=None,
                       rtp={"port_min": low, "port_max": low + 7})
    add_peer(server)
    try:
        server.start()
        with server.client() as as1:
            assert as1.request("old", "100", "101", 60) == "ACK: id=old;code=ok;"
            old1.wait_event("confirmed", timeout=10)
            old2.wait_event("confirmed", timeout=10)
            time.sleep(1.0)
            server.kill()  # the old phones are never told: they keep sending to the old ports
        server.start()
        server.wait_log(r"2 RTP port pair\(s\) of callbacks cut by a crash kept out of use")
        with server.client() as as1:
            assert as1.response("old", timeout=10)["result"] == "shutdown"
            assert as1.request("new", "102", "103", 4) == "ACK: id=new;code=ok;"
            new1.wait_event("confirmed", timeout=10)
            new2.wait_event("confirmed", timeout=10)
            response = as1.response("new", timeout=15)
        new1.wait_event("disconnected", timeout=10)
        new2.wait_event("disconnected", timeout=10)
    finally:
        server.stop()
    assert response["result"] == "answered"
    heard1, heard2 = new1.recording_path(), new2.recording_path()
    assert tone_fraction(heard1, NEW2, skip_s=0.5) > 0.8  # each new phone hears the other one
    assert tone_fraction(heard2, NEW1, skip_s=0.5) > 0.8
    for heard in (heard1, heard2):  # and never the old call's phones
        assert tone_fraction(heard, OLD1) < 0.05
        assert tone_fraction(heard, OLD2) < 0.05
