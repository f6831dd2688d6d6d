"""The user agent on IPv6, in memory with a fake clock: Via sent-by, Contact, Call-ID and the
Request-URI write ``[::1]`` (RFC 3261 §25.1 IPv6reference, RFC 5118 §4), the PSS is reached at
``::1``, and responses whose Via carries our bracketed sent-by are ours (not dropped as misrouted).
"""

from __future__ import annotations

import random

from mss.sip.events import LegAnswered, LegEnded
from mss.sip.message import Request, Response, make_response, parse_message
from mss.sip.settings import UASettings
from mss.sip.ua import UserAgent
from mss.sip.uri import parse_uri
from tests.helpers import FakeClock

PSS = ("::1", 5060)
RR = "<sip:[::1]:5060;lr;ftag=x>"
PHONE_CONTACT = "<sip:100@[::1]:5062>"
OFFER = b"v=0\r\no=mss 1 1 IN IP6 ::1\r\ns=-\r\nc=IN IP6 ::1\r\nt=0 0\r\nm=audio 30000 RTP/AVP 0\r\n"
ANSWER = b"v=0\r\no=ph 5 5 IN IP6 ::1\r\ns=-\r\nc=IN IP6 ::1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n"

SETTINGS = UASettings(
    local_host="::1",
    local_port=5070,
    transport="udp",
    pss_host="::1",
    pss_port=5060,
    caller="mss",
    domain="[::1]",
    register=False,
    auth_user="mss",
    password="secret",
)


def _sent(ua: UserAgent) -> list[tuple[Request | Response, tuple[str, int]]]:
    return [(parse_message(data, exact=True), dest) for data, dest in ua.data_to_send()]


def _reply(req: Request, status: int, body: bytes = b"") -> Response:
    headers = [("Record-Route", RR), ("Contact", PHONE_CONTACT)]
    if body:
        headers.append(("Content-Type", "application/sdp"))
    return make_response(req, status, to_tag="ph1", headers=headers, body=body)


def test_contact_host_is_bracketed_for_ipv6_only() -> None:
    assert SETTINGS.contact_host == "[::1]"
    assert UASettings(**{**_fields(SETTINGS), "local_host": "127.0.0.1"}).contact_host == "127.0.0.1"
    advertised = UASettings(**{**_fields(SETTINGS), "advertised_host": "2001:db8::5"})
    assert advertised.contact_host == "[2001:db8::5]"


def _fields(settings: UASettings) -> dict[str, object]:
    return {name: getattr(settings, name) for name in settings.__dataclass_fields__}


def test_a_call_over_ipv6() -> None:
    clock = FakeClock()
    ua = UserAgent(SETTINGS, rng=random.Random(7))
    ua.invite("L1", "100", OFFER, clock.now)
    [(inv, dest)] = _sent(ua)
    assert isinstance(inv, Request) and dest == PSS
    assert str(inv.uri) == "sip:100@[::1]"
    assert inv.from_.uri == parse_uri("sip:mss@[::1]")
    assert inv.top_via.host == "[::1]" and inv.top_via.port == 5070
    assert (inv.headers.get("Via") or "").startswith("SIP/2.0/UDP [::1]:5070;branch=")
    assert inv.headers.get("Contact") == "<sip:mss@[::1]:5070>"
    assert inv.call_id.endswith("@[::1]")

    ua.receive_data(_reply(inv, 200, ANSWER).encode(), PSS, clock.now)
    assert ua.counters.get("misrouted", 0) == 0
    [(ack, dest)] = _sent(ua)
    assert isinstance(ack, Request) and ack.method == "ACK" and dest == PSS
    assert str(ack.uri) == "sip:100@[::1]:5062"
    assert ack.headers.get_all("Route") == [RR]
    events = []
    while (event := ua.next_event()) is not None:
        events.append(event)
    assert events == [LegAnswered(leg_id="L1", sdp=ANSWER, call_id=inv.call_id)]

    ua.hangup("L1", clock.now)
    [(bye, dest)] = _sent(ua)
    assert isinstance(bye, Request) and bye.method == "BYE" and dest == PSS
    ua.receive_data(make_response(bye, 200).encode(), PSS, clock.now)
    assert ua.next_event() == LegEnded(leg_id="L1", by_remote=False, reason="hangup", answered=True)
