"""Numbers on the wire: every header number is bounded in length before it is converted.

Python's ``int()`` refuses strings of more than 4,300 digits with ValueError; a number that long in
any header must end as the layer's parse error (400 for a request, a discarded response), never as
an exception out of the user agent.
"""

from __future__ import annotations

import re
from dataclasses import replace

import pytest

from mss.errors import SipError
from mss.sip._grammar import MAX_NUMBER_DIGITS, parse_number
from mss.sip.events import LegAnswered, LegFailed, LegRinging, Registered, RegistrationFailed
from mss.sip.framing import StreamFramer
from mss.sip.message import Request, Response, parse_message
from tests.test_sip_ua import ANSWER, OFFER, REG, SETTINGS, Net, answered_call, in_dialog, options, reply

HUGE = "9" * 5000


def test_parse_number_bounds_the_length_before_converting() -> None:
    assert parse_number(" 70 ", "Max-Forwards", 255) == 70
    assert parse_number("0" * 30 + "42", "Expires") == 42  # leading zeros are not significant
    assert parse_number("4294967295", "Expires") == 2**32 - 1
    with pytest.raises(SipError, match=r"^Expires has 5000 digits \(at most 10\)$"):
        parse_number(HUGE, "Expires")
    with pytest.raises(SipError, match=r"^Expires 4294967296 is larger than 4294967295$"):
        parse_number("4294967296", "Expires")
    with pytest.raises(SipError, match=r"^RSeq '１２' is not a number$"):
        parse_number("１２", "RSeq")  # other scripts' digits: int() would read them, the grammar does not
    with pytest.raises(SipError, match=r"^Min-SE '' is not a number$"):
        parse_number("", "Min-SE")
    assert len(str(2**32 - 1)) == MAX_NUMBER_DIGITS


OPTIONS = options().encode()


def _with(old: bytes, new: bytes) -> bytes:
    assert old in OPTIONS
    return OPTIONS.replace(old, new)


HUGE_REQUESTS = {
    "Max-Forwards": (_with(b"Max-Forwards: 70", f"Max-Forwards: {HUGE}".encode()),
                     "Max-Forwards has 5000 digits (at most 10)"),
    "Content-Length": (_with(b"Content-Length: 0", f"Content-Length: {HUGE}".encode()),
                       "Content-Length has 5000 digits (at most 10)"),
    "CSeq": (_with(b"CSeq: 1 OPTIONS", f"CSeq: {HUGE} OPTIONS".encode()),
             f"CSeq '{HUGE[:60]}...': the sequence number is larger than 2**31-1"),
    "Expires": (_with(b"Max-Forwards: 70", f"Max-Forwards: 70\r\nExpires: {HUGE}".encode()),
                "Expires has 5000 digits (at most 10)"),
}  # fmt: skip


@pytest.mark.parametrize("header", sorted(HUGE_REQUESTS))
def test_huge_number_in_a_request_is_answered_400_with_the_reason(header: str) -> None:
    data, reason = HUGE_REQUESTS[header]
    with pytest.raises(SipError, match="^" + re.escape(reason) + "$"):
        parse_message(data)
    net = Net()
    net.deliver(data)
    [(answer, _dest)] = net.sent_raw()
    assert answer.startswith(b"SIP/2.0 400 Bad Request\r\n")
    assert f'Warning: 399 mss "{reason}"'.encode() in answer
    assert net.ua.counters["parse_errors"] == 1


def test_huge_content_length_breaks_a_stream() -> None:
    framer = StreamFramer()
    with pytest.raises(SipError, match=r"^Content-Length has 5000 digits \(at most 10\)$"):
        framer.feed(OPTIONS.replace(b"Content-Length: 0", f"Content-Length: {HUGE}".encode()))
    net = Net(replace(SETTINGS, transport="tcp"))
    conn = object()
    net.deliver(OPTIONS.replace(b"Content-Length: 0", f"l: {HUGE}".encode()), stream=conn)
    assert net.ua.streams_to_close() == [conn] and net.ua.counters["broken_streams"] == 1


@pytest.mark.parametrize(
    ("old", "new"),
    [
        (b"CSeq: 1 INVITE", f"CSeq: {HUGE} INVITE".encode()),
        (b"Content-Length: 0", f"Content-Length: {HUGE}".encode()),
    ],
)
def test_huge_number_in_a_response_discards_it(old: bytes, new: bytes) -> None:
    net = Net()
    net.ua.invite("L1", "100", OFFER, net.now)
    inv = net.one("INVITE")
    wire = reply(inv, 180).encode()
    assert old in wire
    net.deliver(wire.replace(old, new, 1))
    assert net.events() == [] and net.sent() == []
    assert net.ua.counters["parse_errors"] == 1
    net.deliver(reply(inv, 180))  # the leg goes on with the next good message
    assert [type(e) for e in net.events()] == [LegRinging]


@pytest.mark.parametrize("header", ["Max-Forwards", "Expires"])
def test_200_ok_with_a_huge_number_in_a_header_it_does_not_need_is_answered(header: str) -> None:
    # Max-Forwards and Expires decide nothing in an INVITE's answer: a 2xx carrying a huge one was once
    # discarded whole, and the answered call ended as no answer.
    net = Net()
    net.ua.invite("L1", "100", OFFER, net.now)
    inv = net.one("INVITE")
    net.deliver(reply(inv, 200, body=ANSWER, extra=[(header, HUGE)]))
    assert str(net.one("ACK").cseq) == "1 ACK"
    assert net.events() == [LegAnswered(leg_id="L1", sdp=ANSWER, call_id=inv.call_id)]
    assert net.ua.counters["parse_errors"] == 0


def test_200_ok_with_a_huge_session_expires_is_answered_without_session_timer() -> None:
    net = Net()
    net.ua.invite("L1", "100", OFFER, net.now)
    inv = net.one("INVITE")
    net.deliver(reply(inv, 200, body=ANSWER, extra=[("Session-Expires", f"{HUGE};refresher=uac")]))
    ack = net.one("ACK")
    assert str(ack.cseq) == "1 ACK"
    assert net.events() == [LegAnswered(leg_id="L1", sdp=ANSWER, call_id=inv.call_id)]
    net.advance(3600)  # no refresh and no expiry: the unreadable interval started no session timer
    assert net.sent() == [] and net.ua.leg_state("L1") == "confirmed"


def test_reliable_183_with_a_huge_rseq_is_not_pracked() -> None:
    net = Net()
    net.ua.invite("L1", "100", OFFER, net.now)
    inv = net.one("INVITE")
    net.deliver(reply(inv, 183, body=ANSWER, extra=[("Require", "100rel"), ("RSeq", HUGE)]))
    assert net.sent() == [] and net.events() == []
    net.deliver(reply(inv, 183, body=ANSWER, extra=[("Require", "100rel"), ("RSeq", "1")]))
    assert net.one("PRACK").headers.get("RAck") == "1 1 INVITE"


def test_422_with_a_huge_min_se_is_a_final_failure() -> None:
    net = Net()
    net.ua.invite("L1", "100", OFFER, net.now)
    inv = net.one("INVITE")
    net.deliver(reply(inv, 422, extra=[("Min-SE", HUGE)]))
    assert [m.method for m in net.requests()] == ["ACK"]
    assert net.events() == [LegFailed(leg_id="L1", status=422, reason="Session Interval Too Small")]


def test_in_dialog_requests_with_huge_numbers_get_400() -> None:
    net = Net()
    _inv, ack = answered_call(net)
    reinvite = in_dialog("INVITE", ack, 10, body=ANSWER, extra=[("Session-Expires", HUGE)])
    net.deliver(reinvite)
    [resp] = net.sent(unique=True)
    assert isinstance(resp, Response) and resp.status == 400
    assert resp.reason == "Session-Expires has 5000 digits (at most 10)"
    # Headers mss does not read may carry any number: the request is served.
    for n, name in enumerate(["RAck", "Retry-After", "Min-SE", "RSeq"]):
        net.deliver(in_dialog("OPTIONS", ack, 20 + n, branch=f"z9hG4bKo{n}", extra=[(name, HUGE)]))
        [ok] = net.sent(unique=True)
        assert isinstance(ok, Response) and ok.status == 200, name
    net.deliver(in_dialog("BYE", ack, 30, branch="z9hG4bKbye"))
    [ok] = net.sent(unique=True)
    assert isinstance(ok, Response) and ok.status == 200


def test_register_with_huge_numbers_in_its_answers() -> None:
    net = Net(REG)
    net.ua.start(net.now)
    reg = net.one("REGISTER")
    net.deliver(reply(reg, 423, contact=None, extra=[("Min-Expires", HUGE)]))
    [event] = net.events()
    assert isinstance(event, RegistrationFailed) and event.status == 423
    net.advance(event.retry_at - net.now)
    reg2 = net.one("REGISTER")
    contact = f"<sip:line1@127.0.0.1:5070>;expires={HUGE}"
    net.deliver(reply(reg2, 200, contact=contact, extra=[("Expires", "90")]))
    assert net.events() == [Registered(expires=90)]  # the unreadable contact expires: Expires decides


def test_huge_numbers_never_escape_the_user_agent() -> None:
    """Every numeric header of a request and of a response, huge: no exception, a bounded answer."""
    net = Net()
    _inv, ack = answered_call(net)
    names = ["CSeq", "Max-Forwards", "Content-Length", "Expires", "RSeq", "RAck", "Min-SE", "Session-Expires",
             "Retry-After", "Min-Expires"]  # fmt: skip
    for n, name in enumerate(names):
        req = in_dialog("UPDATE", ack, 40 + n, branch=f"z9hG4bKu{n}")
        wire = req.encode()
        if name in ("CSeq", "Content-Length", "Max-Forwards"):
            wire = re.sub(f"{name}: [0-9]+".encode(), f"{name}: {HUGE}".encode(), wire)
        else:
            wire = wire.replace(b"Content-Length:", f"{name}: {HUGE}\r\nContent-Length:".encode())
        assert HUGE.encode() in wire
        net.deliver(wire)
        answers = net.sent_raw()
        assert len(answers) == 1, name
        assert answers[0][0].split(b" ", 2)[1] in (b"200", b"400"), (name, answers[0][0][:40])
    assert isinstance(parse_message(ack.encode()), Request)
