"""The callback end to end: an AS orders it over IIF, mss calls two real phones through Kamailio.

Kamailio is the PSS (auth mode: mss registers as the external line and answers the 407 on each
INVITE; trunk mode: server-to-server with the default caller); pjsua2 phones in their own processes
answer, ring, refuse, play tones and record; the audio that crossed the relay is checked by FFT.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.mss_server import MssServer
from tests.peers.audio import tone_fraction
from tests.peers.kamailio import Kamailio
from tests.peers.phone import Phone

pytestmark = pytest.mark.e2e

TONE1 = 440.0
TONE2 = 1000.0


@pytest.fixture
def mss(tmp_path: Path) -> Iterator[Callable[..., MssServer]]:
    """Factory: ``mss(pss, **config)`` starts an mss process, stopped at teardown."""
    started: list[MssServer] = []

    def make(pss: Kamailio, **kwargs: Any) -> MssServer:
        server = MssServer(tmp_path / f"mss-{len(started)}", pss=pss.address, sip_port=pss.mss[1], **kwargs)
        started.append(server)
        return server.start()

    yield make
    for server in started:
        server.stop()


def _setup(kamailio: Callable[..., Kamailio], free_port: Callable[..., int], mode: str = "auth") -> Kamailio:
    sip_port = free_port()
    return kamailio(mode, users={"100": "pw100", "101": "pw101"}, mss=("127.0.0.1", sip_port))


def test_bridge_and_duration_expiry(
    kamailio: Callable[..., Kamailio], phone: Callable[..., Phone], mss: Callable[..., MssServer],
    free_port: Callable[..., int],
) -> None:
    pss = _setup(kamailio, free_port)
    user1 = phone("100", pss, tone_hz=TONE1, record=True)
    user2 = phone("101", pss, tone_hz=TONE2, record=True)
    server = mss(pss)
    server.wait_log("external line registered")
    with server.client() as as1:
        assert as1.request("cb1", "100", "101", 4) == "ACK: id=cb1;code=ok;"
        incoming = user1.wait_event("incoming", timeout=10)
        assert incoming["from_user"] == "mss"
        user1.wait_event("confirmed", timeout=10)
        user2.wait_event("incoming", timeout=10)
        answered_at = time.monotonic()
        user2.wait_event("confirmed", timeout=10)
        response = as1.response("cb1", timeout=15)
        ended = time.monotonic()
    assert response["result"] == "answered"
    # The duration timer runs from user1's answer, so the bridge lasts a little less than 4 s.
    assert abs(int(response["real_duration"]) - (ended - answered_at)) <= 1.5
    user1.wait_event("disconnected", timeout=10)
    user2.wait_event("disconnected", timeout=10)
    assert tone_fraction(user1.recording_path(), TONE2, skip_s=0.5) > 0.8
    assert tone_fraction(user2.recording_path(), TONE1, skip_s=0.5) > 0.8
