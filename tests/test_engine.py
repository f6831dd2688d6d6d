"""The call engine's pure part: leg references, the relay map, and the names shared by the layers."""

from __future__ import annotations

from typing import get_args

import pytest

from mss import callflow as cf
from mss.engine import RELAY_LEG, LegRef
from mss.errors import LocalProtocolError
from mss.iif import RESULTS
from mss.sip import events as ua


def test_results_are_the_iif_results() -> None:
    assert set(get_args(cf.Result)) == RESULTS


def test_call_flow_events_are_named_apart_from_the_user_agents() -> None:
    flow = {name for name in cf.__all__ if isinstance(getattr(cf, name), type)}
    sip = {name for name in ua.__all__ if isinstance(getattr(ua, name), type)}
    assert {"Answered", "Ended", "Failed", "OfferReceived", "Progress"} <= flow
    assert flow & sip == set()


def test_timers_are_named() -> None:
    assert [t.value for t in cf.Timer] == ["duration", "ring_user1", "ring_user2", "media", "release"]


def test_leg_ref_is_a_value() -> None:
    ref = LegRef(seq=7, leg="user2")
    assert ref == LegRef(seq=7, leg="user2")
    assert ref != LegRef(seq=7, leg="user1")
    assert {ref: 1}[LegRef(seq=7, leg="user2")] == 1
    assert str(ref) == "7.user2"


@pytest.mark.parametrize(("seq", "leg"), [(-1, "user1"), (3, "user3"), (3, "a"), (3, "")])
def test_leg_ref_refuses_what_names_no_leg(seq: int, leg: str) -> None:
    with pytest.raises(LocalProtocolError):
        LegRef(seq=seq, leg=leg)  # type: ignore[arg-type]


def test_one_relay_leg_per_party() -> None:
    assert dict(RELAY_LEG) == {"user1": "a", "user2": "b"}
    assert tuple(RELAY_LEG) == cf.USERS
