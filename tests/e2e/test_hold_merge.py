"""Holds from both sides, end to end: each phone sees the other's hold, no inactivity release while
both hold, and audio flows again only when both have resumed."""

from __future__ import annotations

import time

import pytest

from mss_peers.audio import duration, tone_fraction
from tests.e2e.test_callback import TONE1, TONE2, _bridge, _start

pytestmark = pytest.mark.e2e


def test_both_phones_hold_then_resume_one_by_one(kamailio, phone, mss, free_port) -> None:  # type: ignore[no-untyped-def]
    _, p1, p2, server = _start(kamailio, phone, mss, free_port, rtp={"inactivity_timeout": 3})
    with server.client() as as1:
        assert as1.request("both", "100", "101", 60) == "ACK: id=both;code=ok;"
        _bridge(p1, p2)
        time.sleep(1.0)
        mark1, mark2 = p1.mark(), p2.mark()
        p1.hold()
        p1.wait_event("media", status="local_hold", since=mark1, timeout=10)
        p2.wait_event("media", status="remote_hold", since=mark2, timeout=10)
        mark2 = p2.mark()
        p2.hold()
        p2.wait_event("media", status="local_hold", since=mark2, timeout=10)
        time.sleep(4.0)  # longer than inactivity_timeout: both on hold, nothing is released
        assert as1.lines == []
        # user1 resumes while user2 still holds: user1 is told it is held now.
        mark1 = p1.mark()
        p1.unhold()
        p1.wait_event("media", status="remote_hold", since=mark1, timeout=10)
        # user2 resumes: both sides active, audio flows both ways again.
        mark1, mark2 = p1.mark(), p2.mark()
        p2.unhold()
        p2.wait_event("media", status="active", since=mark2, timeout=10)
        p1.wait_event("media", status="active", since=mark1, timeout=10)
        time.sleep(2.0)
        p1.hangup()
        response = as1.response("both", timeout=10)
    assert response["result"] == "answered"
    p2.wait_event("disconnected", timeout=10)
    for recording, tone in ((p1.recording_path(), TONE2), (p2.recording_path(), TONE1)):
        assert tone_fraction(recording, tone, skip_s=max(0.0, duration(recording) - 1.5)) > 0.7
