"""EVENT lines end to end: a peer with ``events = yes`` hears each step of its callback, in order,
between the ACK and the RESPONSE; a peer without it sees exactly the original protocol."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest

from mss_peers.kamailio import Kamailio
from mss_peers.phone import Phone
from mss_peers.server import MssServer

pytestmark = pytest.mark.e2e

STEPS = ["user1_ringing", "user1_answered", "user2_ringing", "bridged"]


def _callback(
    kamailio: Callable[..., Kamailio], phone: Callable[..., Phone], mss: Callable[..., MssServer],
    free_port: Callable[..., int], *, events: bool,
) -> list[str]:
    """One callback (both phones ring a second, then answer; 2 s of talk): every line the AS got."""
    pss = kamailio("auth", users={"100": "pw100", "101": "pw101"}, mss=("127.0.0.1", free_port()))
    phone("100", pss, behaviour="answer_after:1", record=False)
    phone("101", pss, behaviour="answer_after:1", record=False)
    server = mss(pss, extra=f"[peer.as1]\nevents = {'yes' if events else 'no'}\n")
    server.wait_log("external line registered")
    with server.client() as as1:
        assert as1.request("ev1", "100", "101", 2) == "ACK: id=ev1;code=ok;"
        response = as1.response("ev1", timeout=20)
        assert response["result"] == "answered"
        as1.lines.clear()
        with pytest.raises(AssertionError, match="no line matching"):
            as1.wait_line(".", timeout=0.5)  # nothing comes after the RESPONSE
        return as1.history


def test_a_peer_with_events_hears_each_step_between_ack_and_response(kamailio, phone, mss, free_port) -> None:  # type: ignore[no-untyped-def]
    lines = _callback(kamailio, phone, mss, free_port, events=True)
    assert lines[0] == "ACK: id=ev1;code=ok;"
    assert lines[1:-1] == [f"EVENT: id=ev1;state={step};" for step in STEPS]
    assert re.fullmatch(r"RESPONSE: id=ev1;real_duration=[12];result=answered;code=0;", lines[-1])


def test_a_peer_without_events_sees_only_ack_and_response(kamailio, phone, mss, free_port) -> None:  # type: ignore[no-untyped-def]
    lines = _callback(kamailio, phone, mss, free_port, events=False)
    assert lines[0] == "ACK: id=ev1;code=ok;"
    assert len(lines) == 2 and lines[1].startswith("RESPONSE: id=ev1;")
