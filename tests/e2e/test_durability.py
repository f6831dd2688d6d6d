"""The promise to the AS across a crash and a shutdown: every ACKed REQUEST gets one RESPONSE."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from mss_peers.kamailio import Kamailio
from mss_peers.phone import Phone
from mss_peers.server import MssServer

pytestmark = pytest.mark.e2e


def _trunk(kamailio: Callable[..., Kamailio], free_port: Callable[..., int]) -> Kamailio:
    return kamailio("trunk", users={"100": "pw100", "101": "pw101"}, mss=("127.0.0.1", free_port()))


def test_response_after_kill_9_and_restart(
    add_peer: Callable[[Any], None], tmp_path: Path, kamailio: Callable[..., Kamailio],
    phone: Callable[..., Phone], free_port: Callable[..., int],
) -> None:
    pss = _trunk(kamailio, free_port)
    p1, p2 = phone("100", pss, tone_hz=440), phone("101", pss, tone_hz=1000)
    server = MssServer(tmp_path / "mss", pss=pss.address, sip_port=pss.mss[1], external_line=None)
    add_peer(server)
    try:
        server.start()
        with server.client() as as1:
            assert as1.request("crash", "100", "101", 60) == "ACK: id=crash;code=ok;"
            p1.wait_event("confirmed", timeout=10)
            p2.wait_event("confirmed", timeout=10)
            time.sleep(3.2)
            server.kill()  # SIGKILL: no chance to answer
            with pytest.raises(AssertionError):
                as1.response("crash", timeout=0.5)
        server.start()
        with server.client() as as1:
            response = as1.response("crash", timeout=10)
    finally:
        server.stop()
    assert response["result"] == "shutdown"
    # The talk time known up to the crash: the heartbeat is written every second.
    assert 2 <= int(response["real_duration"]) <= 4, response
    assert "in progress when mss stopped" in server.log_text()


def test_sigterm_drains_calls_then_releases(
    add_peer: Callable[[Any], None], tmp_path: Path, kamailio: Callable[..., Kamailio],
    phone: Callable[..., Phone], free_port: Callable[..., int],
) -> None:
    pss = kamailio("trunk", users={"100": "pw100", "101": "pw101", "102": "pw102", "103": "pw103"},
                   mss=("127.0.0.1", free_port()))
    phones = [phone(u, pss, tone_hz=440) for u in ("100", "101", "102", "103")]
    server = MssServer(tmp_path / "mss", pss=pss.address, sip_port=pss.mss[1], external_line=None,
                       callback={"drain_grace": 3})
    add_peer(server)
    server.start()
    assert server.process is not None
    with server.client() as as1:
        assert as1.request("short", "100", "101", 2) == "ACK: id=short;code=ok;"  # ends within the grace
        assert as1.request("long", "102", "103", 60) == "ACK: id=long;code=ok;"   # released by the grace
        for device in phones:
            device.wait_event("confirmed", timeout=10)
        server.process.terminate()
        time.sleep(0.3)
        assert as1.request("late", "100", "101", 5) == "ACK: id=late;code=fail;"
        short = as1.response("short", timeout=10)
        long = as1.response("long", timeout=10)
    assert server.process.wait(10) == 0
    assert short["result"] == "answered"
    assert long["result"] == "shutdown"
    assert 2 <= int(long["real_duration"]) <= 5
    for device in phones:
        device.wait_event("disconnected", timeout=10)
