"""RFC 4028 session timers of a leg, on their own: what is asked, agreed, refused and armed."""

from __future__ import annotations

import pytest

from mss.sip.message import Headers, Request, Response
from mss.sip.session_timer import MIN_SE_FLOOR, SessionRefusal, SessionTimer, parse_session_expires
from mss.sip.uri import parse_uri

NOW = 1000.0


def response(*headers: tuple[str, str], status: int = 200) -> Response:
    return Response(status, "OK" if status == 200 else "Session Interval Too Small", Headers(list(headers)))


def request(*headers: tuple[str, str]) -> Request:
    return Request("UPDATE", parse_uri("sip:mss@127.0.0.1:5070"), Headers(list(headers)))


def test_no_timer_until_one_is_agreed() -> None:
    timer = SessionTimer(requested=1800, min_se=90)
    assert not timer.active and timer.next_timer(NOW) is None and timer.refresh_headers() == []


@pytest.mark.parametrize(
    ("value", "we_refresh", "due"),
    [
        ("1800;refresher=uac", True, ("session_refresh", NOW + 900)),
        ("1800;refresher=uas", False, ("session_expiry", NOW + 1800 - 32)),
        ("1800", True, ("session_refresh", NOW + 900)),  # no refresher: the UAC (mss) refreshes
        ("120;refresher=uas", False, ("session_expiry", NOW + 120 - 32)),
        ("30;refresher=uac", True, ("session_refresh", NOW + MIN_SE_FLOOR / 2)),  # below the floor: 90
    ],
)
def test_a_2xx_agrees_the_timer(value: str, we_refresh: bool, due: tuple[str, float]) -> None:
    timer = SessionTimer(requested=1800, min_se=90)
    timer.on_response(response(("Session-Expires", value)), we_are_uac=True)
    assert timer.we_refresh is we_refresh
    assert timer.next_timer(NOW) == due


def test_a_2xx_without_or_with_an_unreadable_session_expires_stops_the_timer() -> None:
    timer = SessionTimer(requested=1800, min_se=90)
    timer.on_response(response(("Session-Expires", "1800")), we_are_uac=True)
    timer.on_response(response(), we_are_uac=True)
    assert not timer.active
    timer.on_response(response(("Session-Expires", "1800")), we_are_uac=True)
    timer.on_response(response(("Session-Expires", "9" * 40)), we_are_uac=True)
    assert not timer.active


def test_a_422_is_retried_once_with_its_min_se() -> None:
    timer = SessionTimer(requested=100, min_se=90)
    assert timer.retry_after_422(response(("Min-SE", "600"), status=422)) == 600
    assert timer.requested == 600
    assert timer.retry_after_422(response(("Min-SE", "900"), status=422)) is None  # only once


@pytest.mark.parametrize("min_se", ["", "60", "abc", "9" * 5000])
def test_a_422_without_a_usable_min_se_is_final(min_se: str) -> None:
    timer = SessionTimer(requested=1800, min_se=90)
    assert timer.retry_after_422(response(("Min-SE", min_se), status=422)) is None
    assert timer.requested == 1800 and not timer.retried_422


def test_a_far_end_refresh_is_answered_or_refused() -> None:
    timer = SessionTimer(requested=1800, min_se=120)
    assert timer.on_request(request(("Session-Expires", "90"))) == SessionRefusal(
        status=422, headers=(("Min-SE", "120"),)
    )
    assert not timer.active  # a refusal changes nothing
    refused = timer.on_request(request(("Session-Expires", "x;refresher=uac")))
    assert isinstance(refused, SessionRefusal) and refused.status == 400
    assert timer.on_request(request(("Session-Expires", "600"), ("Supported", "timer"))) == [
        ("Session-Expires", "600;refresher=uac"),
        ("Require", "timer"),
    ]
    assert timer.next_timer(NOW) == ("session_expiry", NOW + 600 - 32)  # the far end (UAC) refreshes
    assert timer.on_request(request(("Session-Expires", "600;refresher=uas"))) == [
        ("Session-Expires", "600;refresher=uas")
    ]
    assert timer.next_timer(NOW) == ("session_refresh", NOW + 300)
    assert timer.refresh_headers() == [("Session-Expires", "600;refresher=uac"), ("Min-SE", "120")]
    assert timer.on_request(request()) == [] and not timer.active


def test_parse_session_expires() -> None:
    assert parse_session_expires("1800;refresher=UAS") == (1800, "uas")
    assert parse_session_expires("90") == (90, None)
