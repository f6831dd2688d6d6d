"""The user agent end to end in memory: a scripted PSS/phone on one side, a fake clock, no sockets."""

from __future__ import annotations

import random
from dataclasses import replace

import pytest

from mss.errors import ConfigError, LocalProtocolError
from mss.sip.events import (
    LegAnswered,
    LegEnded,
    LegFailed,
    LegOffer,
    LegReinviteResult,
    LegRemoteAnswer,
    LegRinging,
    LegTrying,
    Registered,
    RegistrationFailed,
    UAEvent,
    Unregistered,
)
from mss.sip.message import Headers, Request, Response, make_response, parse_message
from mss.sip.registration import RegState
from mss.sip.settings import UASettings
from mss.sip.ua import UserAgent
from mss.sip.uri import parse_uri
from tests.helpers import FakeClock, run_timers

PSS = ("127.0.0.1", 5060)
STRANGER = ("127.0.0.9", 5060)
PHONE_CONTACT = "<sip:100@127.0.0.1:5062>"
RR = "<sip:127.0.0.1:5060;lr;ftag=x>"
OFFER = (
    b"v=0\r\no=mss 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 30000 RTP/AVP 0\r\n"
)
ANSWER = (
    b"v=0\r\no=ph 5 5 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n"
)
ANSWER2 = ANSWER.replace(b"5 5", b"5 6").replace(b"4000", b"4002")

SETTINGS = UASettings(
    local_host="127.0.0.1",
    local_port=5070,
    transport="udp",
    pss_host="127.0.0.1",
    pss_port=5060,
    caller="mss",
    domain="127.0.0.1",
    register=False,
    auth_user="mss",
    password="secret",
)


class Net:
    """The UA with a fake clock; the test plays the PSS (and the phones behind it)."""

    def __init__(self, settings: UASettings = SETTINGS) -> None:
        self.clock = FakeClock()
        self.ua = UserAgent(settings, rng=random.Random(7))

    @property
    def now(self) -> float:
        return self.clock.now

    def sent(self, *, unique: bool = False) -> list[Request | Response]:
        """What the UA sent since the last call; ``unique``: UDP retransmissions counted once."""
        out = []
        seen: set[bytes] = set()
        for data, dest in self.ua.data_to_send():
            assert dest[0].startswith("127."), dest
            if unique and data in seen:
                continue
            seen.add(data)
            out.append(parse_message(data, exact=True))
        return out

    def sent_raw(self) -> list[tuple[bytes, tuple[str, int]]]:
        return self.ua.data_to_send()

    def requests(self, method: str | None = None, *, unique: bool = False) -> list[Request]:
        msgs = self.sent(unique=unique)
        return [m for m in msgs if isinstance(m, Request) and (method is None or m.method == method)]

    def one(self, method: str) -> Request:
        msgs = self.sent(unique=True)
        reqs = [m for m in msgs if isinstance(m, Request) and m.method == method]
        assert len(reqs) == 1, msgs
        return reqs[0]

    def deliver(
        self, msg: Request | Response | bytes, source: tuple[str, int] = PSS, stream: object = None
    ) -> None:
        data = msg if isinstance(msg, bytes) else msg.encode()
        self.ua.receive_data(data, source, self.clock.now, stream=stream)

    def events(self) -> list[UAEvent]:
        """Events since the last call (LegFailed with its call_id blanked, kept in ``raw_events``)."""
        out: list[UAEvent] = []
        self.raw_events: list[UAEvent] = []
        while (e := self.ua.next_event()) is not None:
            self.raw_events.append(e)
            out.append(replace(e, call_id="") if isinstance(e, LegFailed) else e)
        return out

    def advance(self, seconds: float) -> None:
        """Run every timer up to now + seconds."""
        run_timers(self.ua, self.clock, seconds)


def reply(
    req: Request,
    status: int,
    *,
    tag: str | None = "ph1",
    body: bytes = b"",
    contact: str | None = PHONE_CONTACT,
    rr: str | None = RR,
    extra: list[tuple[str, str]] | None = None,
) -> Response:
    headers: list[tuple[str, str]] = []
    if rr is not None and status > 100 and req.method == "INVITE":
        headers.append(("Record-Route", rr))
    if contact is not None and status > 100 and req.method in ("INVITE", "UPDATE", "REGISTER"):
        headers.append(("Contact", contact))
    headers += extra or []
    if body:
        headers.append(("Content-Type", "application/sdp"))
    return make_response(req, status, to_tag=tag, headers=headers, body=body)


def in_dialog(
    method: str,
    ack_or_invite: Request,
    seq: int,
    *,
    body: bytes = b"",
    branch: str = "z9hG4bKfar1",
    extra: list[tuple[str, str]] | None = None,
) -> Request:
    """A request from the phone in the dialog ``ack_or_invite`` (a request of ours) belongs to."""
    h = Headers(
        [
            ("Via", f"SIP/2.0/UDP 127.0.0.1:5060;branch={branch}"),
            ("Via", "SIP/2.0/UDP 127.0.0.1:5062;branch=z9hG4bKphone;rport=5062"),
            ("Max-Forwards", "69"),
            ("From", ack_or_invite.headers.get("To") or ""),
            ("To", ack_or_invite.headers.get("From") or ""),
            ("Call-ID", ack_or_invite.call_id),
            ("CSeq", f"{seq} {method}"),
            ("Contact", PHONE_CONTACT),
            *(extra or []),
        ]
    )
    if body:
        h.add("Content-Type", "application/sdp")
    return Request(method, parse_uri("sip:mss@127.0.0.1:5070"), h, body)


def answered_call(
    net: Net, leg: str = "L1", *, extra: list[tuple[str, str]] | None = None
) -> tuple[Request, Request]:
    """Set up an answered leg; return (INVITE, ACK)."""
    net.ua.invite(leg, "100", OFFER, net.now)
    inv = net.one("INVITE")
    net.deliver(reply(inv, 200, body=ANSWER, extra=extra))
    ack = net.one("ACK")
    assert [type(e) for e in net.events()] == [LegAnswered]
    return inv, ack


# --- a plain call ----------------------------------------------------------------------------------


def test_invite_answered_and_hung_up_by_us() -> None:
    net = Net()
    net.ua.invite("L1", "100", OFFER, net.now)
    inv = net.one("INVITE")
    assert str(inv.uri) == "sip:100@127.0.0.1"
    assert inv.from_.uri == parse_uri("sip:mss@127.0.0.1") and inv.from_.tag
    assert inv.to.tag is None and str(inv.cseq) == "1 INVITE"
    assert inv.top_via.transport == "UDP" and inv.top_via.param("rport") == ""
    assert inv.headers.get("Contact") == "<sip:mss@127.0.0.1:5070>"
    assert inv.headers.tokens("Supported") == ["100rel", "timer"]
    assert inv.headers.get("Session-Expires") == "1800" and inv.headers.get("Min-SE") == "90"
    assert inv.content_type == "application/sdp" and inv.body == OFFER
    assert net.ua.leg_state("L1") == "calling"

    net.deliver(reply(inv, 100, tag=None))
    assert net.events() == [LegTrying(leg_id="L1")]
    net.deliver(reply(inv, 180))
    assert net.events() == [LegRinging(leg_id="L1", status=180, reason="Ringing", sdp=None)]
    assert net.ua.leg_state("L1") == "early"
    ok = reply(inv, 200, body=ANSWER)
    net.deliver(ok)
    ack = net.one("ACK")
    assert str(ack.uri) == "sip:100@127.0.0.1:5062"  # the remote target
    assert ack.headers.get_all("Route") == [RR]  # the route set
    assert str(ack.cseq) == "1 ACK" and ack.to.tag == "ph1"
    assert ack.top_via.branch != inv.top_via.branch
    assert net.events() == [LegAnswered(leg_id="L1", sdp=ANSWER, call_id=inv.call_id)]
    # a retransmitted 200 gets the same ACK again
    net.deliver(ok)
    assert [m.encode() for m in net.sent()] == [ack.encode()]
    assert net.events() == []

    net.ua.hangup("L1", net.now)
    bye = net.one("BYE")
    assert str(bye.uri) == "sip:100@127.0.0.1:5062" and str(bye.cseq) == "2 BYE"
    assert bye.headers.get_all("Route") == [RR] and bye.to.tag == "ph1"
    assert net.events() == []  # LegEnded waits for the BYE's answer
    net.ua.hangup("L1", net.now)  # no-op
    assert net.sent() == []
    net.deliver(reply(bye, 200))
    assert net.events() == [LegEnded(leg_id="L1", by_remote=False, reason="hangup", answered=True)]
    assert net.ua.leg_state("L1") is None
    assert net.ua.counters["dialogs"] == 1  # lingering for late 2xx copies
    net.advance(40)
    assert net.ua.counters["dialogs"] == 0
    assert net.ua.counters["transactions"] == 0


def test_bye_from_the_phone() -> None:
    net = Net()
    _inv, ack = answered_call(net)
    bye = in_dialog("BYE", ack, 101)
    net.deliver(bye)
    [ok] = net.sent()
    assert isinstance(ok, Response) and ok.status == 200 and str(ok.cseq) == "101 BYE"
    assert net.events() == [LegEnded(leg_id="L1", by_remote=True, reason="BYE", answered=True)]
    net.deliver(bye)  # a retransmission is answered by the transaction
    [again] = net.sent()
    assert isinstance(again, Response) and again.status == 200
    assert net.events() == []
    net.ua.hangup("L1", net.now)  # already over: nothing
    assert net.sent() == []


def test_bye_timeout_still_ends_the_leg() -> None:
    net = Net()
    answered_call(net)
    net.ua.hangup("L1", net.now)
    net.one("BYE")
    net.advance(31)
    assert net.events() == []
    net.advance(2)
    assert net.events() == [LegEnded(leg_id="L1", by_remote=False, reason="hangup", answered=True)]


def test_bye_challenged_is_answered_with_credentials() -> None:
    net = Net()
    answered_call(net)
    net.ua.hangup("L1", net.now)
    bye = net.one("BYE")
    net.deliver(reply(bye, 407, extra=[("Proxy-Authenticate", 'Digest realm="pss", nonce="n1", qop="auth"')]))
    bye2 = net.one("BYE")
    assert str(bye2.cseq) == "3 BYE" and "Proxy-Authorization" in bye2.headers
    net.deliver(reply(bye2, 200))
    assert [type(e) for e in net.events()] == [LegEnded]


# --- failures --------------------------------------------------------------------------------------


@pytest.mark.parametrize(("status", "reason"), [(486, "Busy Here"), (480, "Temporarily Unavailable"),
                                                (404, "Not Found"), (603, "Decline")])  # fmt: skip
def test_final_failures(status: int, reason: str) -> None:
    net = Net()
    net.ua.invite("L1", "100", OFFER, net.now)
    inv = net.one("INVITE")
    net.deliver(reply(inv, 180))
    net.events()
    net.deliver(reply(inv, status))
    ack = net.one("ACK")
    assert ack.top_via.branch == inv.top_via.branch  # the transaction's ACK
    assert net.events() == [LegFailed(leg_id="L1", status=status, reason=reason)]
    assert net.raw_events == [LegFailed(leg_id="L1", status=status, reason=reason, call_id=inv.call_id)]
    net.ua.hangup("L1", net.now)
    assert net.sent() == [] and net.events() == []


def test_no_answer_at_all_is_408_after_timer_b() -> None:
    net = Net()
    net.ua.invite("L1", "100", OFFER, net.now)
    net.advance(31.9)
    assert len(net.requests("INVITE")) == 7  # the first and 6 retransmissions
    net.advance(0.2)
    assert net.events() == [LegFailed(leg_id="L1", status=408, reason="Request Timeout")]


def test_transport_failure_is_503() -> None:
    net = Net(replace(SETTINGS, transport="tcp"))
    net.ua.invite("L1", "100", OFFER, net.now)
    net.sent()
    net.ua.transport_failed(PSS, net.now)
    assert net.events() == [
        LegFailed(leg_id="L1", status=503, reason="Service Unavailable (transport failure)")
    ]


# --- digest on INVITE ---------------------------------------------------------------------------


def test_invite_407_answered_then_answered_call_acks_with_credentials() -> None:
    net = Net()
    net.ua.invite("L1", "100", OFFER, net.now)
    inv = net.one("INVITE")
    challenge = 'Digest realm="127.0.0.1", nonce="abc", qop="auth", algorithm=MD5'
    net.deliver(reply(inv, 407, extra=[("Proxy-Authenticate", challenge)]))
    msgs = net.sent()
    assert [m.method for m in msgs if isinstance(m, Request)] == ["ACK", "INVITE"]
    inv2 = msgs[1]
    assert isinstance(inv2, Request)
    assert str(inv2.cseq) == "2 INVITE" and inv2.call_id == inv.call_id
    assert inv2.from_.tag == inv.from_.tag and inv2.top_via.branch != inv.top_via.branch
    auth = inv2.headers.get("Proxy-Authorization") or ""
    assert 'username="mss"' in auth and 'realm="127.0.0.1"' in auth and 'uri="sip:100@127.0.0.1"' in auth
    assert net.events() == []
    net.deliver(reply(inv2, 200, body=ANSWER))
    ack = net.one("ACK")
    assert str(ack.cseq) == "2 ACK" and ack.headers.get("Proxy-Authorization") == auth
    assert [type(e) for e in net.events()] == [LegAnswered]


def test_wrong_password_gives_up_without_a_flood() -> None:
    net = Net()
    net.ua.invite("L1", "100", OFFER, net.now)
    inv = net.one("INVITE")
    net.deliver(reply(inv, 407, extra=[("Proxy-Authenticate", 'Digest realm="r", nonce="n1"')]))
    inv2 = net.requests("INVITE")[0]
    net.deliver(reply(inv2, 407, extra=[("Proxy-Authenticate", 'Digest realm="r", nonce="n2"')]))
    assert net.requests("INVITE") == []
    assert net.events() == [LegFailed(leg_id="L1", status=407, reason="Proxy Authentication Required")]


def test_trunk_mode_without_credentials_fails_on_a_challenge() -> None:
    net = Net(replace(SETTINGS, auth_user=None, password=None))
    net.ua.invite("L1", "100", OFFER, net.now)
    inv = net.one("INVITE")
    net.deliver(reply(inv, 401, extra=[("WWW-Authenticate", 'Digest realm="r", nonce="n1"')]))
    assert net.requests("INVITE") == []  # no credentials: nothing to answer with
    assert net.events() == [LegFailed(leg_id="L1", status=401, reason="Unauthorized")]


def test_422_retried_with_min_se() -> None:
    net = Net()
    net.ua.invite("L1", "100", OFFER, net.now)
    inv = net.one("INVITE")
    net.deliver(reply(inv, 422, extra=[("Min-SE", "3600")]))
    inv2 = net.requests("INVITE")[0]
    assert inv2.headers.get("Session-Expires") == "3600" and inv2.headers.get("Min-SE") == "3600"
    net.deliver(reply(inv2, 422, extra=[("Min-SE", "7200")]))
    assert net.events() == [LegFailed(leg_id="L1", status=422, reason="Session Interval Too Small")]


# --- CANCEL --------------------------------------------------------------------------------------


def test_cancel_a_ringing_leg() -> None:
    net = Net()
    net.ua.invite("L1", "100", OFFER, net.now)
    inv = net.one("INVITE")
    net.deliver(reply(inv, 180))
    net.events()
    net.ua.hangup("L1", net.now)
    cancel = net.one("CANCEL")
    assert str(cancel.uri) == str(inv.uri) and str(cancel.cseq) == "1 CANCEL"
    assert cancel.headers.get_all("Via") == [inv.headers.get("Via")]
    assert cancel.to.tag is None and cancel.from_ == inv.from_ and cancel.call_id == inv.call_id
    assert net.ua.leg_state("L1") == "cancelling"
    net.deliver(reply(cancel, 200))
    net.deliver(reply(inv, 180))  # late provisional: no event after hangup
    assert net.events() == []
    net.deliver(reply(inv, 487))
    assert [m.method for m in net.sent() if isinstance(m, Request)] == ["ACK"]
    assert net.events() == [LegEnded(leg_id="L1", by_remote=False, reason="cancelled", answered=False)]


def test_cancel_waits_for_a_provisional_response() -> None:
    net = Net()
    net.ua.invite("L1", "100", OFFER, net.now)
    inv = net.one("INVITE")
    net.ua.hangup("L1", net.now)
    assert net.sent() == []  # no CANCEL before a provisional response (RFC 3261 §9.1)
    net.deliver(reply(inv, 100, tag=None))
    cancel = net.one("CANCEL")
    assert net.events() == []
    net.deliver(reply(cancel, 200))
    net.deliver(reply(inv, 487))
    assert net.events() == [LegEnded(leg_id="L1", by_remote=False, reason="cancelled", answered=False)]


def test_cancel_without_any_response_ends_on_timer_b() -> None:
    net = Net()
    net.ua.invite("L1", "100", OFFER, net.now)
    net.ua.hangup("L1", net.now)
    net.advance(33)
    assert [r.method for r in net.requests()] == ["INVITE"] * 7
    assert net.events() == [LegEnded(leg_id="L1", by_remote=False, reason="cancelled", answered=False)]


def test_cancel_guard_when_no_final_response_follows() -> None:
    net = Net()
    net.ua.invite("L1", "100", OFFER, net.now)
    inv = net.one("INVITE")
    net.deliver(reply(inv, 183))
    net.ua.hangup("L1", net.now)
    cancel = net.one("CANCEL")
    net.deliver(reply(cancel, 200))
    net.events()
    net.advance(31)
    assert net.events() == []
    net.advance(2)
    assert net.events() == [LegEnded(leg_id="L1", by_remote=False, reason="cancelled", answered=False)]


def test_2xx_crossing_the_cancel_is_acked_and_byed() -> None:
    net = Net()
    net.ua.invite("L1", "100", OFFER, net.now)
    inv = net.one("INVITE")
    net.deliver(reply(inv, 180))
    net.ua.hangup("L1", net.now)
    cancel = net.one("CANCEL")
    net.deliver(reply(inv, 200, body=ANSWER))
    msgs = net.requests()
    assert [m.method for m in msgs] == ["ACK", "BYE"]
    net.deliver(reply(cancel, 200))
    net.deliver(reply(msgs[1], 200))
    events = net.events()
    assert events[-1] == LegEnded(leg_id="L1", by_remote=False, reason="cancelled", answered=False)
    assert not any(isinstance(e, LegAnswered) for e in events)


# --- forks and late 2xx -----------------------------------------------------------------------------


def test_second_fork_2xx_is_acked_and_byed() -> None:
    net = Net()
    inv, _ack = answered_call(net)
    net.deliver(reply(inv, 200, tag="ph2", body=ANSWER2, contact="<sip:100@127.0.0.1:5064>"))
    msgs = net.requests()
    assert [m.method for m in msgs] == ["ACK", "BYE"]
    assert all(m.to.tag == "ph2" for m in msgs)
    assert str(msgs[1].uri) == "sip:100@127.0.0.1:5064"
    assert net.events() == []


def test_late_2xx_after_the_transaction_is_reacked() -> None:
    net = Net()
    inv, ack = answered_call(net)
    net.advance(40)  # Timer M ended the INVITE transaction
    net.deliver(reply(inv, 200, body=ANSWER))
    [again] = net.requests()
    assert again.encode() == ack.encode()


# --- 100rel ----------------------------------------------------------------------------------------


def test_reliable_provisional_is_pracked_once() -> None:
    net = Net()
    net.ua.invite("L1", "100", OFFER, net.now)
    inv = net.one("INVITE")
    p183 = reply(inv, 183, body=ANSWER, extra=[("Require", "100rel"), ("RSeq", "7")])
    net.deliver(p183)
    prack = net.one("PRACK")
    assert prack.headers.get("RAck") == "7 1 INVITE"
    assert str(prack.cseq) == "2 PRACK" and prack.to.tag == "ph1"
    assert str(prack.uri) == "sip:100@127.0.0.1:5062" and prack.headers.get_all("Route") == [RR]
    assert net.events() == [LegRinging(leg_id="L1", status=183, reason="Session Progress", sdp=ANSWER)]
    net.deliver(p183)  # a copy: no second PRACK, no event
    assert net.sent() == [] and net.events() == []
    net.deliver(reply(inv, 183, extra=[("Require", "100rel"), ("RSeq", "9")]))  # out of order
    assert net.sent() == [] and net.events() == []
    net.deliver(reply(prack, 200))
    p180 = reply(inv, 180, extra=[("Require", "100rel"), ("RSeq", "8")])
    net.deliver(p180)
    prack2 = net.one("PRACK")
    assert prack2.headers.get("RAck") == "8 1 INVITE" and str(prack2.cseq) == "3 PRACK"
    net.events()
    net.deliver(reply(inv, 200))  # no SDP: the answer was in the reliable 183
    ack = net.one("ACK")
    assert str(ack.cseq) == "1 ACK"
    assert net.events() == [LegAnswered(leg_id="L1", sdp=ANSWER, call_id=inv.call_id)]
    net.ua.hangup("L1", net.now)
    assert str(net.one("BYE").cseq) == "4 BYE"


# --- requests from the far end -----------------------------------------------------------------------


def test_reinvite_offer_answered_by_the_call_flow_and_2xx_retransmitted_until_ack() -> None:
    net = Net()
    _inv, ack = answered_call(net)
    reinv = in_dialog("INVITE", ack, 102, body=ANSWER2)
    net.deliver(reinv)
    assert net.events() == [LegOffer(leg_id="L1", sdp=ANSWER2, kind="reinvite")]
    assert net.sent() == []
    new_local = OFFER.replace(b"1 1", b"1 2")
    net.ua.answer_offer("L1", new_local, net.now)
    [ok] = net.sent()
    assert isinstance(ok, Response) and ok.status == 200 and ok.body == new_local
    assert ok.headers.get("Contact") == "<sip:mss@127.0.0.1:5070>" and ok.to.tag is not None
    net.advance(1.6)  # retransmitted at 0.5 and 1.5
    assert [m.encode() for m in net.sent()] == [ok.encode(), ok.encode()]
    far_ack = in_dialog("ACK", ack, 102, branch="z9hG4bKfarack")
    net.deliver(far_ack)
    net.advance(10)
    assert net.sent() == [] and net.events() == []


def test_reinvite_offer_without_answer_gets_the_last_local_sdp() -> None:
    net = Net()
    _inv, ack = answered_call(net)
    net.deliver(in_dialog("INVITE", ack, 102, body=ANSWER2))
    assert [type(e) for e in net.events()] == [LegOffer]
    net.advance(0.3)
    [trying] = net.sent()  # 100 Trying after 200 ms
    assert isinstance(trying, Response) and trying.status == 100
    net.advance(0.8)
    [ok] = net.sent()
    assert isinstance(ok, Response) and ok.status == 200 and ok.body == OFFER


def test_reinvite_refresh_with_the_same_sdp_is_answered_at_once() -> None:
    net = Net()
    _inv, ack = answered_call(net)
    net.deliver(in_dialog("INVITE", ack, 102, body=ANSWER))
    [ok] = net.sent()
    assert isinstance(ok, Response) and ok.status == 200 and ok.body == OFFER
    assert net.events() == []


def test_offerless_reinvite_gets_our_offer_and_the_answer_comes_in_the_ack() -> None:
    net = Net()
    _inv, ack = answered_call(net)
    net.deliver(in_dialog("INVITE", ack, 102))
    [ok] = net.sent()
    assert isinstance(ok, Response) and ok.status == 200 and ok.body == OFFER
    net.deliver(in_dialog("ACK", ack, 102, body=ANSWER2, branch="z9hG4bKa2"))
    assert net.events() == [LegRemoteAnswer(leg_id="L1", sdp=ANSWER2)]


def test_no_ack_for_our_2xx_ends_the_dialog() -> None:
    net = Net()
    _inv, ack = answered_call(net)
    net.deliver(in_dialog("INVITE", ack, 102, body=ANSWER))
    net.sent()
    net.advance(31)
    assert all(isinstance(m, Response) and m.status == 200 for m in net.sent())
    assert net.events() == []
    net.advance(2)
    assert [m.method for m in net.requests(unique=True)] == ["BYE"]
    assert net.events() == [LegEnded(leg_id="L1", by_remote=False, reason="no ACK", answered=True)]


def test_update_offer_and_update_refresh() -> None:
    net = Net()
    _inv, ack = answered_call(net)
    net.deliver(in_dialog("UPDATE", ack, 102, body=ANSWER2))
    assert net.events() == [LegOffer(leg_id="L1", sdp=ANSWER2, kind="update")]
    net.ua.answer_offer("L1", OFFER, net.now)
    [ok] = net.sent()
    assert isinstance(ok, Response) and ok.status == 200 and ok.body == OFFER
    net.deliver(in_dialog("UPDATE", ack, 103, branch="z9hG4bKu2"))
    [ok2] = net.sent()
    assert isinstance(ok2, Response) and ok2.status == 200 and not ok2.body


def test_reject_offer() -> None:
    net = Net()
    _inv, ack = answered_call(net)
    net.deliver(in_dialog("UPDATE", ack, 102, body=ANSWER2))
    net.events()
    net.ua.reject_offer("L1", net.now)
    [resp] = net.sent()
    assert isinstance(resp, Response) and resp.status == 488


def test_old_cseq_is_refused_with_500() -> None:
    net = Net()
    _inv, ack = answered_call(net)
    net.deliver(in_dialog("INVITE", ack, 102, body=ANSWER))
    net.sent()
    net.deliver(in_dialog("UPDATE", ack, 101, branch="z9hG4bKold"))
    [resp] = net.sent()
    assert isinstance(resp, Response) and resp.status == 500


def test_far_end_cancel_of_its_pending_reinvite() -> None:
    net = Net()
    _inv, ack = answered_call(net)
    reinv = in_dialog("INVITE", ack, 102, body=ANSWER2)
    net.deliver(reinv)
    net.events()
    cancel = in_dialog("CANCEL", ack, 102)
    net.deliver(cancel)
    statuses = sorted((m.status, m.cseq.method) for m in net.sent() if isinstance(m, Response))
    assert statuses == [(200, "CANCEL"), (487, "INVITE")]


# --- our re-INVITE -----------------------------------------------------------------------------------


def test_our_reinvite_and_glare() -> None:
    net = Net()
    _inv, ack = answered_call(net)
    hold = OFFER.replace(b"t=0 0\r\n", b"t=0 0\r\na=sendonly\r\n")
    net.ua.reinvite("L1", hold, net.now)
    reinv = net.one("INVITE")
    assert str(reinv.cseq) == "2 INVITE" and reinv.body == hold and reinv.to.tag == "ph1"
    # the phone sends its own re-INVITE meanwhile: 491
    net.deliver(in_dialog("INVITE", ack, 102, body=ANSWER2))
    [resp] = net.sent()
    assert isinstance(resp, Response) and resp.status == 491
    net.deliver(reply(reinv, 491))
    assert [m.method for m in net.requests()] == ["ACK"]  # the transaction ACKs the 491
    net.advance(4.1)
    retry = net.one("INVITE")
    assert str(retry.cseq) == "3 INVITE" and retry.body == hold
    net.deliver(reply(retry, 200, body=ANSWER2))
    ack2 = net.one("ACK")
    assert str(ack2.cseq) == "3 ACK"
    assert net.events() == [LegReinviteResult(leg_id="L1", status=200, reason="OK", sdp=ANSWER2)]


def test_our_reinvite_481_ends_the_dialog() -> None:
    net = Net()
    answered_call(net)
    net.ua.reinvite("L1", OFFER, net.now)
    reinv = net.one("INVITE")
    net.deliver(reply(reinv, 481))
    assert [m.method for m in net.requests()] == ["ACK", "BYE"]
    assert net.events() == [
        LegReinviteResult(leg_id="L1", status=481, reason="Call/Transaction Does Not Exist", sdp=None),
        LegEnded(leg_id="L1", by_remote=False, reason="re-INVITE got 481", answered=True),
    ]


# --- session timers -----------------------------------------------------------------------------------


def test_session_timer_we_refresh_with_update_when_allowed() -> None:
    net = Net()
    answered_call(net, extra=[("Session-Expires", "90;refresher=uac"), ("Require", "timer"),
                              ("Allow", "INVITE, ACK, BYE, UPDATE")])  # fmt: skip
    net.advance(44)
    assert net.sent() == []
    net.advance(2)
    upd = net.one("UPDATE")
    assert upd.headers.get("Session-Expires") == "90;refresher=uac" and not upd.body
    net.deliver(reply(upd, 200, extra=[("Session-Expires", "90;refresher=uac")]))
    net.advance(44)
    assert net.sent() == []
    net.advance(2)
    assert net.one("UPDATE")
    assert net.events() == []


def test_session_timer_we_refresh_with_reinvite_otherwise() -> None:
    net = Net()
    answered_call(net, extra=[("Session-Expires", "120;refresher=uac")])
    net.advance(61)
    reinv = net.one("INVITE")
    assert reinv.body == OFFER and reinv.headers.get("Session-Expires") == "120;refresher=uac"
    net.deliver(reply(reinv, 200, body=ANSWER, extra=[("Session-Expires", "120;refresher=uac")]))
    assert [m.method for m in net.requests()] == ["ACK"]
    assert net.events() == []  # a refresh is not reported


def test_session_timer_refresh_failure_ends_the_call() -> None:
    net = Net()
    answered_call(net, extra=[("Session-Expires", "90;refresher=uac")])
    net.advance(46)
    reinv = net.one("INVITE")
    net.deliver(reply(reinv, 408))
    assert [m.method for m in net.requests()] == ["ACK", "BYE"]
    assert net.events() == [LegEnded(leg_id="L1", by_remote=False, reason="refresh failed", answered=True)]


def test_session_timer_far_end_refreshes_or_we_hang_up() -> None:
    net = Net()
    _inv, ack = answered_call(net, extra=[("Session-Expires", "90;refresher=uas")])
    net.advance(50)
    net.deliver(in_dialog("UPDATE", ack, 102, extra=[("Session-Expires", "90;refresher=uac"),
                                                      ("Supported", "timer")]))  # fmt: skip
    [ok] = net.sent()
    assert isinstance(ok, Response) and ok.headers.get("Session-Expires") == "90;refresher=uac"
    assert ok.headers.get("Require") == "timer"
    net.advance(59)  # 90 - min(32, 30) = 60 s after the refresh
    assert net.sent() == [] and net.events() == []
    net.advance(2)
    assert [m.method for m in net.requests(unique=True)] == ["BYE"]
    assert net.events() == [LegEnded(leg_id="L1", by_remote=False, reason="session expired", answered=True)]


def test_session_interval_too_small_from_the_far_end() -> None:
    net = Net()
    _inv, ack = answered_call(net)
    net.deliver(in_dialog("UPDATE", ack, 102, extra=[("Session-Expires", "30")]))
    [resp] = net.sent()
    assert isinstance(resp, Response) and resp.status == 422 and resp.headers.get("Min-SE") == "90"


# --- out-of-dialog requests and security ------------------------------------------------------------


def options(branch: str = "z9hG4bKopt", to_tag: str | None = None) -> Request:
    to = "<sip:mss@127.0.0.1>" + (f";tag={to_tag}" if to_tag else "")
    h = Headers(
        [
            ("Via", f"SIP/2.0/UDP 127.0.0.1:5060;branch={branch}"),
            ("From", "<sip:pss@127.0.0.1>;tag=p"),
            ("To", to),
            ("Call-ID", "opt-1"),
            ("CSeq", "1 OPTIONS"),
            ("Max-Forwards", "70"),
        ]
    )
    return Request("OPTIONS", parse_uri("sip:mss@127.0.0.1:5070"), h)


def test_options_answered_200() -> None:
    net = Net()
    net.deliver(options())
    [ok] = net.sent()
    assert isinstance(ok, Response) and ok.status == 200
    assert "INVITE" in (ok.headers.get("Allow") or "") and ok.headers.get("Accept") == "application/sdp"
    net.deliver(options("z9hG4bKopt2", to_tag="unknown"))
    [ok2] = net.sent()
    assert isinstance(ok2, Response) and ok2.status == 200


def test_new_invite_from_outside_is_refused() -> None:
    net = Net()
    opt = options()
    h = opt.headers.copy()
    h.set("CSeq", "1 INVITE")
    h.add("Content-Type", "application/sdp")
    net.deliver(Request("INVITE", opt.uri, h, OFFER))
    [resp] = net.sent()
    assert isinstance(resp, Response) and resp.status == 403
    assert net.ua.counters["refused_invites"] == 1
    assert net.events() == []


def test_sip_from_a_stranger_is_dropped_and_counted() -> None:
    net = Net()
    net.deliver(options(), source=STRANGER)
    assert net.sent() == [] and net.ua.counters["dropped_strangers"] == 1
    answered_call(net)
    assert net.ua.counters["dropped_strangers"] == 1


def test_unknown_dialog_is_481_and_unknown_method_405() -> None:
    net = Net()
    opt = options()
    h = opt.headers.copy()
    h.set("CSeq", "1 BYE")
    h.set("To", "<sip:mss@127.0.0.1>;tag=nope")
    net.deliver(Request("BYE", opt.uri, h))
    h2 = opt.headers.copy()
    h2.set("CSeq", "1 MESSAGE")
    h2.set("Via", "SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKmsg")
    net.deliver(Request("MESSAGE", opt.uri, h2))
    assert [m.status for m in net.sent() if isinstance(m, Response)] == [481, 405]


def test_malformed_request_gets_400_with_the_reason() -> None:
    net = Net()
    bad = options().encode().replace(b"CSeq: 1 OPTIONS", b"CSeq: 1 INVITE")
    net.deliver(bad)
    [(data, dest)] = net.sent_raw()
    assert dest == PSS
    assert data.startswith(b"SIP/2.0 400 Bad Request\r\n")
    assert b'Warning: 399 mss "CSeq method INVITE does not match the request method OPTIONS"' in data
    assert net.ua.counters["parse_errors"] == 1
    net.deliver(b"garbage\r\n\r\n")
    assert net.sent_raw() == [] and net.ua.counters["parse_errors"] == 2


def test_response_not_for_us_is_dropped() -> None:
    net = Net()
    net.ua.invite("L1", "100", OFFER, net.now)
    inv = net.one("INVITE")
    resp = reply(inv, 180)
    h = resp.headers.copy()
    h.set("Via", "SIP/2.0/UDP 127.0.0.1:5999;branch=" + (inv.top_via.branch or ""))
    net.deliver(Response(180, "Ringing", h))
    assert net.events() == [] and net.ua.counters["misrouted"] == 1


def test_dialog_limit() -> None:
    net = Net(replace(SETTINGS, max_dialogs=1))
    net.ua.invite("L1", "100", OFFER, net.now)
    net.ua.invite("L2", "101", OFFER, net.now)
    assert net.events() == [LegFailed(leg_id="L2", status=503, reason="Service Unavailable (dialog limit)")]
    assert len(net.requests("INVITE")) == 1
    with pytest.raises(LocalProtocolError, match="already exists"):
        net.ua.invite("L1", "102", OFFER, net.now)


def test_transaction_limit_answers_503_statelessly() -> None:
    net = Net(replace(SETTINGS, max_transactions=1))
    net.ua.invite("L1", "100", OFFER, net.now)
    net.sent()
    net.deliver(options())
    [resp] = net.sent()
    assert isinstance(resp, Response) and resp.status == 503 and resp.headers.get("Retry-After") == "5"
    assert net.ua.counters["overload_503"] == 1


def test_bad_user_is_refused() -> None:
    net = Net()
    with pytest.raises(LocalProtocolError, match="bad user"):
        net.ua.invite("L1", "1 00", OFFER, net.now)


# --- TCP ----------------------------------------------------------------------------------------------


def test_tcp_framing_keepalive_and_connection_reuse_addressing() -> None:
    net = Net(replace(SETTINGS, transport="tcp"))
    net.ua.invite("L1", "100", OFFER, net.now)
    [(data, dest)] = net.sent_raw()
    assert dest == PSS
    inv = parse_message(data)
    assert isinstance(inv, Request)
    assert inv.top_via.transport == "TCP" and inv.top_via.param("rport") is None
    assert inv.headers.get("Contact") == "<sip:mss@127.0.0.1:5070;transport=tcp>"
    conn = object()
    source = ("127.0.0.1", 41000)
    stream = reply(inv, 180).encode() + b"\r\n\r\n" + reply(inv, 200, body=ANSWER).encode()
    for i in range(0, len(stream), 7):  # arrives in small pieces
        net.deliver(stream[i : i + 7], source=source, stream=conn)
    sent = net.sent_raw()
    assert sent[0] == (b"\r\n", source)  # the pong goes back on the connection
    ack = parse_message(sent[1][0])
    assert isinstance(ack, Request) and ack.method == "ACK" and sent[1][1] == PSS
    assert [type(e) for e in net.events()] == [LegRinging, LegAnswered]
    # a request on the connection is answered on it
    net.deliver(in_dialog("BYE", ack, 50), source=source, stream=conn)
    [(_d, back)] = net.sent_raw()
    assert back == source
    net.ua.stream_closed(conn, net.now)


def test_tcp_broken_framing_closes_the_stream() -> None:
    net = Net(replace(SETTINGS, transport="tcp"))
    conn = object()
    net.deliver(b"OPTIONS sip:x SIP/2.0\r\nVia: x\r\n\r\n", source=("127.0.0.1", 41000), stream=conn)
    assert net.ua.streams_to_close() == [conn]
    assert net.ua.counters["broken_streams"] == 1
    stranger = object()
    net.deliver(b"OPTIONS", source=STRANGER, stream=stranger)
    assert net.ua.streams_to_close() == [stranger]


# --- registration -----------------------------------------------------------------------------------

REG = replace(SETTINGS, register=True, line_user="line1", caller="5551000", expires=120, domain="pss.test")


def test_register_with_auth_refresh_and_unregister() -> None:
    net = Net(REG)
    assert [net.ua.registered] == [False]
    net.ua.start(net.now)
    reg = net.one("REGISTER")
    assert str(reg.uri) == "sip:pss.test" and str(reg.to.uri) == "sip:line1@pss.test"
    assert reg.from_.uri == reg.to.uri and reg.from_.tag
    assert reg.headers.get("Contact") == "<sip:line1@127.0.0.1:5070>" and reg.headers.get("Expires") == "120"
    net.deliver(
        reply(reg, 401, extra=[("WWW-Authenticate", 'Digest realm="pss.test", nonce="n1", qop="auth"')])
    )
    reg2 = net.one("REGISTER")
    assert str(reg2.cseq) == "2 REGISTER" and reg2.call_id == reg.call_id
    auth = reg2.headers.get("Authorization") or ""
    assert 'username="mss"' in auth and 'uri="sip:pss.test"' in auth
    net.deliver(reply(reg2, 200, contact="<sip:line1@127.0.0.1:5070>;expires=100"))
    assert net.events() == [Registered(expires=100)]
    assert net.ua.registered
    net.advance(69)
    assert net.sent() == []
    net.advance(2)  # refresh at max(50, 100 - 30) = 70 s
    reg3 = net.one("REGISTER")
    assert str(reg3.cseq) == "3 REGISTER" and "Authorization" not in reg3.headers
    net.deliver(reply(reg3, 200, contact=None, extra=[("Expires", "60")]))
    assert net.events() == [Registered(expires=60)]
    net.ua.shutdown(net.now)
    unreg = net.one("REGISTER")
    assert unreg.headers.get("Expires") == "0" and str(unreg.cseq) == "4 REGISTER"
    net.deliver(reply(unreg, 200, contact=None))
    assert net.events() == [Unregistered()]
    assert [net.ua.registered] == [False]
    net.advance(1000)
    assert net.sent() == []


def test_register_wrong_password_backs_off_without_a_flood() -> None:
    net = Net(REG)
    net.ua.start(net.now)
    t0 = net.now
    for expected_delay in (5, 10, 20, 40):
        reg = net.one("REGISTER")
        net.deliver(reply(reg, 401, extra=[("WWW-Authenticate", f'Digest realm="r", nonce="{net.now}"')]))
        reg2 = net.one("REGISTER")
        net.deliver(reply(reg2, 401, extra=[("WWW-Authenticate", f'Digest realm="r", nonce="x{net.now}"')]))
        assert net.events() == [
            RegistrationFailed(status=401, reason="Unauthorized", retry_at=net.now + expected_delay)
        ]
        assert net.sent() == []
        net.advance(expected_delay - 0.1)
        assert net.sent() == []
        net.advance(0.1)
    assert net.now - t0 == pytest.approx(75)
    assert net.ua.counters["transactions"] <= 2


def test_register_423_interval_too_brief() -> None:
    net = Net(REG)
    net.ua.start(net.now)
    reg = net.one("REGISTER")
    net.deliver(reply(reg, 423, extra=[("Min-Expires", "600")]))
    reg2 = net.one("REGISTER")
    assert reg2.headers.get("Expires") == "600"
    net.deliver(reply(reg2, 200, contact="<sip:line1@127.0.0.1:5070>;expires=600"))
    assert net.events() == [Registered(expires=600)]


def test_register_timeout_and_recovery() -> None:
    net = Net(REG)
    net.ua.start(net.now)
    net.advance(33)
    events = net.events()
    assert len(events) == 1 and isinstance(events[0], RegistrationFailed) and events[0].status == 408
    net.sent()
    net.advance(5)
    reg = net.one("REGISTER")
    net.deliver(reply(reg, 200))
    assert net.events() == [Registered(expires=120)]
    assert net.ua._reg.failures == 0 and net.ua._reg.state is RegState.REGISTERED


def test_shutdown_during_register_waits_for_it() -> None:
    net = Net(REG)
    net.ua.start(net.now)
    reg = net.one("REGISTER")
    net.ua.shutdown(net.now)
    assert net.sent() == []
    net.deliver(reply(reg, 200))
    unreg = net.one("REGISTER")
    assert unreg.headers.get("Expires") == "0"
    net.advance(33)  # no answer: stop anyway
    assert net.events() == [Unregistered()]


def test_trunk_mode_never_registers() -> None:
    net = Net()
    assert net.ua.registered
    net.ua.start(net.now)
    assert net.sent() == []
    net.ua.shutdown(net.now)
    assert net.events() == [Unregistered()]


# --- settings ------------------------------------------------------------------------------------------


def test_settings_validation() -> None:
    with pytest.raises(ConfigError, match="not udp, tcp or tls"):
        replace(SETTINGS, transport="sctp")
    with pytest.raises(ConfigError, match="registration needs"):
        replace(SETTINGS, register=True, password=None)
    with pytest.raises(ConfigError, match="Min-SE"):
        replace(SETTINGS, session_expires=60)


def test_settings_from_config() -> None:
    from mss.config import check_text

    text = """
[callback]
listen_port = 5080
[sip]
pss_host = 127.0.0.1
transport = tcp
[external_line]
username = line1
auth_username = authuser
password = pw
number = 5551000
expires = 120
[peer_servers]
as1 = 127.0.0.1
"""
    result = check_text(text)
    assert result.config is not None, result.errors
    s = UASettings.from_config(result.config)
    assert (s.caller, s.line_user, s.auth_user, s.password, s.domain, s.register, s.transport) == (
        "5551000", "line1", "authuser", "pw", "127.0.0.1", True, "tcp")  # fmt: skip


def test_mutated_in_dialog_traffic_never_breaks_the_ua() -> None:
    """A seeded mutation fuzz of a live dialog: no exception escapes the UA, whatever arrives."""
    rng = random.Random(3261)
    alphabet = b' \t\r\n:;,<>"@=?%/\\[]0123456789abcSIPVia'
    for _ in range(40):
        net = Net()
        inv, ack = answered_call(net)
        seeds = [
            in_dialog("INVITE", ack, 102, body=ANSWER2).encode(),
            in_dialog("BYE", ack, 103).encode(),
            in_dialog(
                "UPDATE", ack, 104, body=ANSWER2, extra=[("Session-Expires", "90;refresher=uas")]
            ).encode(),
            reply(inv, 200, body=ANSWER, extra=[("Session-Expires", "90;refresher=uac")]).encode(),
            in_dialog("ACK", ack, 102).encode(),
            in_dialog("CANCEL", ack, 102).encode(),
        ]
        for _ in range(40):
            data = bytearray(rng.choice(seeds))
            for _ in range(rng.randint(0, 4)):
                pos = rng.randrange(len(data) + 1)
                op = rng.random()
                if op < 0.4:
                    del data[pos : pos + rng.randint(1, 6)]
                elif op < 0.85:
                    data[pos:pos] = bytes(rng.choice(alphabet) for _ in range(rng.randint(1, 3)))
                else:
                    data[pos:pos] = rng.randbytes(rng.randint(1, 3))
            net.deliver(bytes(data))
            net.ua.data_to_send()
            net.events()
            if rng.random() < 0.1:
                net.advance(rng.choice([0.5, 2, 40]))
            if rng.random() < 0.05:
                net.ua.hangup("L1", net.now)
            if rng.random() < 0.05:
                net.ua.answer_offer("L1", OFFER, net.now)


def test_update_in_the_early_dialog() -> None:
    net = Net()
    net.ua.invite("L1", "100", OFFER, net.now)
    inv = net.one("INVITE")
    net.deliver(reply(inv, 183, body=ANSWER, extra=[("Require", "100rel"), ("RSeq", "1")]))
    prack = net.one("PRACK")
    net.deliver(reply(prack, 200))
    net.events()
    upd = in_dialog("UPDATE", inv, 50, body=ANSWER2)
    upd.headers.set("From", str(inv.to.with_tag("ph1")))
    net.deliver(upd)
    assert net.events() == [LegOffer(leg_id="L1", sdp=ANSWER2, kind="update")]
    net.ua.answer_offer("L1", OFFER, net.now)
    [ok] = net.sent()
    assert isinstance(ok, Response) and ok.status == 200 and ok.body == OFFER


def test_hangup_with_an_offer_pending_answers_it_487_then_byes() -> None:
    net = Net()
    _inv, ack = answered_call(net)
    net.deliver(in_dialog("INVITE", ack, 102, body=ANSWER2))
    net.events()
    net.ua.hangup("L1", net.now)
    msgs = net.sent()
    assert [(type(m).__name__, getattr(m, "status", getattr(m, "method", ""))) for m in msgs] == [
        ("Response", 487),
        ("Request", "BYE"),
    ]


def test_our_reinvite_waits_for_a_pending_far_end_offer() -> None:
    net = Net()
    _inv, ack = answered_call(net)
    net.deliver(in_dialog("UPDATE", ack, 102, body=ANSWER2))
    net.events()
    hold = OFFER.replace(b"t=0 0\r\n", b"t=0 0\r\na=sendonly\r\n")
    net.ua.reinvite("L1", hold, net.now)
    assert net.sent() == []
    net.ua.answer_offer("L1", OFFER, net.now)
    msgs = net.sent()
    assert isinstance(msgs[0], Response) and msgs[0].status == 200
    assert isinstance(msgs[1], Request) and msgs[1].method == "INVITE" and msgs[1].body == hold


def test_behind_a_nat_via_and_contact_carry_the_advertised_address() -> None:
    net = Net(replace(SETTINGS, advertised_host="198.51.100.7"))
    inv, ack = answered_call(net)  # the 200 OK's top Via is ours as we wrote it: taken, not misrouted
    for request in (inv, ack):
        via = request.top_via
        assert (via.host, via.port) == ("198.51.100.7", 5070)
    assert [c.uri.host for c in inv.contacts] == ["198.51.100.7"]
    assert net.ua.counters["misrouted"] == 0
    # A response whose Via names the bound address, not the advertised one, is not ours.
    net.ua.invite("L2", "101", OFFER, net.now)
    inv2 = net.one("INVITE")
    stray = reply(inv2, 180).encode().replace(b"198.51.100.7:5070", b"127.0.0.1:5070")
    net.deliver(stray)
    assert net.ua.counters["misrouted"] == 1


def test_the_legs_light_event_builders_make_the_same_events_with_the_same_checks() -> None:
    from mss.sip.events import LegAnswered, LegEnded, LegRinging, leg_answered, leg_ended, leg_ringing

    assert leg_ringing("a", 183, "Session Progress", b"v=0") == LegRinging(
        leg_id="a", status=183, reason="Session Progress", sdp=b"v=0"
    )
    assert leg_answered("a", b"", "cid") == LegAnswered(leg_id="a", sdp=b"", call_id="cid")
    ended = LegEnded(leg_id="a", by_remote=True, reason="BYE", answered=True)
    assert leg_ended("a", True, "BYE", True) == ended
    for build in (lambda: leg_ringing("", 180, "Ringing", None), lambda: leg_answered(None, b"", "c"),
                  lambda: leg_ended("", False, "hangup", False)):  # fmt: skip
        with pytest.raises(LocalProtocolError, match="leg_id must not be empty"):
            build()
    with pytest.raises(LocalProtocolError, match=r"LegRinging.status 100 is not 101..199"):
        leg_ringing("a", 100, "Trying", None)
