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
from mss_peers.audio import duration, tone_fraction
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
    """The entries of this mss process's kernel path (other tests' mss may run meanwhile)."""
    assert server.process is not None
    low, high = server.rtp_range
    return [e for e in _kfwd.entries(server.process.pid) if low <= e.port <= high]


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


def test_hold_and_resume_leave_and_return_to_the_kernel(
    kamailio: Callable[..., Kamailio], phone: Callable[..., Phone], mss: Callable[..., MssServer],
    free_port: Callable[..., int],
) -> None:
    """A re-INVITE puts user1 on hold and takes it off again: the relay's verbs take the call's
    entries out and the loop hands the directions back once media flows again, so after the resume
    the kernel carries the audio and each phone hears the other to the end."""
    sip_port = free_port()
    pss = kamailio("auth", users={"100": "pw100", "101": "pw101"}, mss=("127.0.0.1", sip_port))
    user1 = phone("100", pss, tone_hz=TONE1, record=True)
    user2 = phone("101", pss, tone_hz=TONE2, record=True)
    server = mss(pss, rtp={"kernel_forwarding": "yes"})
    server.wait_log("external line registered")
    with server.client() as as1:
        assert as1.request("k2", "100", "101", 60) == "ACK: id=k2;code=ok;"
        user1.wait_event("confirmed", timeout=10)
        user2.wait_event("confirmed", timeout=10)
        time.sleep(1.0)
        mark1, mark2 = user1.mark(), user2.mark()
        user1.hold()
        user1.wait_event("media", status="local_hold", since=mark1, timeout=10)
        user2.wait_event("media", status="remote_hold", since=mark2, timeout=10)
        time.sleep(1.0)
        mark1, mark2 = user1.mark(), user2.mark()
        user1.unhold()
        user1.wait_event("media", status="active", since=mark1, timeout=10)
        user2.wait_event("media", status="active", since=mark2, timeout=10)
        before = {e.port: e.packets for e in _in_range(server) if not e.rtcp}
        time.sleep(2.0)
        after = {e.port: e.packets for e in _in_range(server) if not e.rtcp}
        user1.hangup()
        response = as1.response("k2", timeout=10)
    assert response["result"] == "answered"
    assert len(after) == 2, after
    assert all(after[port] - before.get(port, 0) >= 60 for port in after), (before, after)  # 2 s each way
    user2.wait_event("disconnected", timeout=10)
    wait_until(lambda: not _in_range(server), 5.0)
    assert _tail_tone(user1, TONE2) > 0.7 and _tail_tone(user2, TONE1) > 0.7


def _tail_tone(who: Phone, hz: float, seconds: float = 1.5) -> float:
    """Fraction of the last ``seconds`` of a phone's recording that carries ``hz``."""
    path = who.recording_path()
    return tone_fraction(path, hz, skip_s=max(0.0, duration(path) - seconds))
