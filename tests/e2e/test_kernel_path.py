"""A callback with real phones whose bridged audio the kernel fast path forwards.

Kamailio is the PSS, two pjsua2 phones play tones; mss runs with ``[rtp] kernel_forwarding = yes``.
While the legs are bridged, the kernel's map holds entries for the call's relay ports with packets
counted on them (so the audio went by the BPF program, not the packet loop); once the callback has
ended, none is left. Skips with the reason where BPF cannot load.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from mss import _kfwd
from mss_peers.audio import tone_fraction
from mss_peers.kamailio import Kamailio
from mss_peers.net import wait_until
from mss_peers.phone import Phone
from mss_peers.server import MssServer
from tests.test_relay import KERNEL_MISSING

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(
        KERNEL_MISSING is not None, reason=f"the kernel fast path cannot load here: {KERNEL_MISSING}"
    ),
]

TONE1 = 440.0
TONE2 = 1000.0


def _in_range(server: MssServer) -> list[_kfwd.Entry]:
    low, high = server.rtp_range
    return [e for e in _kfwd.entries() if low <= e.port <= high]


def test_a_bridged_callback_is_forwarded_by_the_kernel(
    kamailio: Callable[..., Kamailio], phone: Callable[..., Phone], mss: Callable[..., MssServer],
    free_port: Callable[..., int],
) -> None:
    sip_port = free_port()
    pss = kamailio("auth", users={"100": "pw100", "101": "pw101"}, mss=("127.0.0.1", sip_port))
    user1 = phone("100", pss, tone_hz=TONE1, record=True)
    user2 = phone("101", pss, tone_hz=TONE2, record=True)
    server = mss(pss, rtp={"kernel_forwarding": "yes"})
    server.wait_log("bridged legs forwarded in the kernel")
    server.wait_log("external line registered")
    with server.client() as as1:
        assert as1.request("k1", "100", "101", 5) == "ACK: id=k1;code=ok;"
        user1.wait_event("confirmed", timeout=10)
        user2.wait_event("confirmed", timeout=10)
        time.sleep(2.0)  # both phones send 50 packets a second, latched and handed over by now
        during = _in_range(server)
        response = as1.response("k1", timeout=15)
    assert response["result"] == "answered"
    rtp = [e for e in during if not e.rtcp]
    assert len(rtp) == 2, during  # both directions of the call's RTP
    assert all(e.packets >= 40 for e in rtp), during  # more than a second of audio each way
    user1.wait_event("disconnected", timeout=10)
    user2.wait_event("disconnected", timeout=10)
    wait_until(lambda: not _in_range(server), 5.0)  # the entries went with the session
    assert tone_fraction(user1.recording_path(), TONE2, skip_s=0.5) > 0.8
    assert tone_fraction(user2.recording_path(), TONE1, skip_s=0.5) > 0.8
