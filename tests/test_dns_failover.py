"""Failover between PSS addresses (RFC 3263 §4.3) and the outbound proxy, in the user agent:
the test plays two PSS servers, a stranger and the DNS, with a fake clock; no sockets."""

from __future__ import annotations

import random
from dataclasses import replace

from mss.sip.events import LegAnswered, LegEnded, LegFailed, LegRinging, Registered, UAEvent
from mss.sip.message import Request, Response, make_response, parse_message
from mss.sip.registration import RegState
from mss.sip.settings import UASettings
from mss.sip.targets import DnsAnswer, DnsFailure, DnsQuery, Srv
from mss.sip.ua import DOWN_TIME, MAX_TRIES, UserAgent
from tests.helpers import FakeClock, run_timers

A = ("127.0.0.5", 5060)
B = ("127.0.0.6", 5060)
C = ("127.0.0.8", 5060)
PROXY = ("127.0.0.7", 5080)
STRANGER = ("127.0.0.9", 5060)
SDP = (
    b"v=0\r\no=mss 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 30000 RTP/AVP 0\r\n"
)

TRUNK = UASettings(
    local_host="127.0.0.1", local_port=5070, transport="udp", pss_host="127.0.0.5, 127.0.0.6",
    pss_port=5060, caller="mss", domain="pss.test", register=False,
)  # fmt: skip
LINE = replace(TRUNK, register=True, auth_user="mss", password="secret", expires=120)


class Net:
    """The UA, a fake clock, and what it sent, by destination."""

    def __init__(self, settings: UASettings = TRUNK) -> None:
        self.clock = FakeClock()
        self.ua = UserAgent(settings, rng=random.Random(11))

    def sent(self) -> list[tuple[Request | Response, tuple[str, int]]]:
        """Everything sent since the last call (UDP retransmissions once), with its destination."""
        out: list[tuple[Request | Response, tuple[str, int]]] = []
        seen: set[tuple[bytes, tuple[str, int]]] = set()
        for data, dest in self.ua.data_to_send():
            if (data, dest) not in seen:
                seen.add((data, dest))
                out.append((parse_message(data, exact=True), dest))
        return out

    def one(self, method: str, *, besides: tuple[str, int] | None = None) -> tuple[Request, tuple[str, int]]:
        """The one ``method`` request sent (to anyone but ``besides``: its retransmissions)."""
        found = [(m, d) for m, d in self.sent()
                 if isinstance(m, Request) and m.method == method and d != besides]  # fmt: skip
        assert len(found) == 1, found
        return found[0]

    def deliver(self, msg: Request | Response, source: tuple[str, int]) -> None:
        self.ua.receive_data(msg.encode(), source, self.clock.now)

    def events(self) -> list[UAEvent]:
        out = []
        while (e := self.ua.next_event()) is not None:
            out.append(replace(e, call_id="") if isinstance(e, LegFailed | LegAnswered) else e)
        return out

    def notices(self) -> list[str]:
        return [text for _kind, _ip, text in self.ua.notices()]

    def advance(self, seconds: float) -> None:
        run_timers(self.ua, self.clock, seconds)


def answer(req: Request, status: int, *, extra: list[tuple[str, str]] | None = None) -> Response:
    headers = [("Contact", "<sip:100@127.0.0.20:5062>")] if status > 100 else []
    if req.method == "INVITE" and 100 < status < 300:
        headers.append(("Content-Type", "application/sdp"))
    body = SDP if req.method == "INVITE" and 200 <= status < 300 else b""
    return make_response(req, status, to_tag="far" if status > 100 else None, headers=headers + (extra or []),
                         body=body)  # fmt: skip


def test_invite_fails_over_after_timer_b_with_a_new_branch() -> None:
    net = Net()
    net.ua.invite("L1", "100", SDP, net.clock.now)
    first, dest = net.one("INVITE")
    assert dest == A
    net.advance(32.0)  # 64·T1: Timer B
    retry, dest = net.one("INVITE", besides=A)
    assert dest == B
    assert retry.top_via.branch != first.top_via.branch
    assert (retry.call_id, retry.cseq, retry.from_.tag, retry.body) == (
        first.call_id, first.cseq, first.from_.tag, first.body)  # fmt: skip
    assert net.notices() == ["PSS 127.0.0.5:5060 did not answer INVITE in 32 s; trying 127.0.0.6:5060"]
    assert net.events() == []  # the leg saw nothing of the first try
    assert net.ua.counters["failovers"] == 1
    net.deliver(answer(retry, 180), B)
    net.deliver(answer(retry, 200), B)
    assert [type(e) for e in net.events()] == [LegRinging, LegAnswered]
    _ack, dest = net.one("ACK")
    assert dest == B  # the leg's requests follow the address that answered
    net.ua.hangup("L1", net.clock.now)
    bye, dest = net.one("BYE")
    assert dest == B
    net.deliver(answer(bye, 200), B)
    assert net.events() == [LegEnded(leg_id="L1", by_remote=False, reason="hangup", answered=True)]


def test_503_fails_over_at_once_and_the_address_is_tried_last_for_a_while() -> None:
    net = Net()
    net.ua.invite("L1", "100", SDP, net.clock.now)
    first, _ = net.one("INVITE")
    net.deliver(answer(first, 503, extra=[("Retry-After", "90 (maintenance);duration=10")]), A)
    sent = net.sent()
    assert [(m.method if isinstance(m, Request) else m, d) for m, d in sent if isinstance(m, Request)] == [
        ("ACK", A), ("INVITE", B)]  # fmt: skip  # the 503 is ACKed by its transaction
    assert net.notices() == ["PSS 127.0.0.5:5060 answered 503 to INVITE; trying 127.0.0.6:5060"]
    assert net.events() == []
    # A new leg starts at B while A is down (90 s, its Retry-After) ...
    net.ua.invite("L2", "101", SDP, net.clock.now)
    assert net.one("INVITE")[1] == B
    net.advance(91.0)
    net.sent()
    # ... and at A again afterwards.
    net.ua.invite("L3", "102", SDP, net.clock.now)
    assert net.one("INVITE")[1] == A


def test_every_address_failing_ends_the_leg_with_the_last_answer() -> None:
    net = Net(replace(TRUNK, pss_host="127.0.0.5, 127.0.0.6, 127.0.0.8"))
    net.ua.invite("L1", "100", SDP, net.clock.now)
    invite, _ = net.one("INVITE")
    net.deliver(answer(invite, 503), A)
    invite = next(m for m, d in net.sent() if isinstance(m, Request) and m.method == "INVITE" and d == B)
    net.advance(32.0)
    invite, dest = net.one("INVITE", besides=B)
    assert dest == C
    net.deliver(answer(invite, 503), C)
    assert net.notices()[-1] == (
        "PSS 127.0.0.8:5060 answered 503 to INVITE; no other address to try "
        "(tried 127.0.0.5:5060, 127.0.0.6:5060, 127.0.0.8:5060)"
    )
    assert net.events() == [LegFailed(leg_id="L1", status=503, reason="Service Unavailable")]


def test_tries_are_bounded() -> None:
    hosts = ", ".join(f"127.0.0.{n}" for n in range(10, 10 + MAX_TRIES + 2))
    net = Net(replace(TRUNK, pss_host=hosts))
    net.ua.invite("L1", "100", SDP, net.clock.now)
    dests = []
    for _ in range(MAX_TRIES + 2):
        for msg, dest in net.sent():
            if isinstance(msg, Request) and msg.method == "INVITE":
                dests.append(dest)
                net.deliver(answer(msg, 503), dest)
    assert len(dests) == MAX_TRIES
    assert net.events() == [LegFailed(leg_id="L1", status=503, reason="Service Unavailable")]


def test_no_failover_for_a_leg_being_hung_up_and_no_failover_after_a_provisional() -> None:
    net = Net()
    net.ua.invite("L1", "100", SDP, net.clock.now)
    net.one("INVITE")
    net.ua.hangup("L1", net.clock.now)  # no 1xx yet: the CANCEL waits, Timer B ends it
    net.advance(32.0)
    assert [d for m, d in net.sent() if isinstance(m, Request) and m.method == "INVITE" and d != A] == []
    assert net.events() == [LegEnded(leg_id="L1", by_remote=False, reason="cancelled", answered=False)]
    # A try that a server has taken (1xx) is not sent elsewhere: a 503 after ringing ends the leg.
    net.ua.invite("L2", "100", SDP, net.clock.now)
    invite, dest = net.one("INVITE")
    net.deliver(answer(invite, 180), dest)
    net.deliver(answer(invite, 503), dest)
    assert [type(e) for e in net.events()] == [LegRinging, LegFailed]


def test_cancel_after_a_failover_goes_with_the_live_try() -> None:
    net = Net()
    net.ua.invite("L1", "100", SDP, net.clock.now)
    first, _ = net.one("INVITE")
    net.deliver(answer(first, 503), A)
    retry = next(m for m, d in net.sent() if isinstance(m, Request) and m.method == "INVITE")
    net.deliver(answer(retry, 180), B)
    net.events()
    net.ua.hangup("L1", net.clock.now)
    cancel, dest = net.one("CANCEL")
    assert dest == B
    assert cancel.top_via.branch == retry.top_via.branch  # RFC 3261 §9.1: the INVITE's Via
    net.deliver(answer(cancel, 200), B)
    net.deliver(answer(retry, 487), B)
    assert net.events() == [LegEnded(leg_id="L1", by_remote=False, reason="cancelled", answered=False)]


def test_sip_from_every_pss_address_is_read_and_from_others_dropped() -> None:
    net = Net()

    def options(source: tuple[str, int]) -> bytes:
        return (
            "OPTIONS sip:mss@127.0.0.1:5070 SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {source[0]}:5060;branch=z9hG4bK{source[0]}\r\n"
            "From: <sip:pss@pss.test>;tag=1\r\nTo: <sip:mss@127.0.0.1>\r\nCall-ID: o1\r\nCSeq: 1 OPTIONS\r\n"
            "Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
        ).encode()

    for source in (A, B):
        net.ua.receive_data(options(source), source, net.clock.now)
        ok = [(m, d) for m, d in net.sent() if isinstance(m, Response)]
        assert [(m.status, d) for m, d in ok] == [(200, source)]
    net.ua.receive_data(options(STRANGER), STRANGER, net.clock.now)
    assert net.sent() == []
    assert net.ua.counters["dropped_strangers"] == 1
    assert net.ua.accepts("127.0.0.6") and not net.ua.accepts("127.0.0.9")


def _register(net: Net, at: tuple[str, int], reg: Request | None = None) -> None:
    if reg is None:
        reg, dest = net.one("REGISTER")
        assert dest == at
    net.deliver(answer(reg, 401, extra=[("WWW-Authenticate", 'Digest realm="pss.test", nonce="n1"')]), at)
    reg2, dest = net.one("REGISTER")
    assert dest == at and reg2.headers.get("Authorization")
    net.deliver(answer(reg2, 200, extra=[("Expires", "120")]), at)
    assert net.events() == [Registered(expires=120)]


def test_register_fails_over_after_timer_f_and_calls_follow_the_registration() -> None:
    net = Net(LINE)
    net.ua.start(net.clock.now)
    reg, dest = net.one("REGISTER")
    assert dest == A
    net.advance(32.0)  # Timer F
    reg, dest = net.one("REGISTER", besides=A)
    assert dest == B
    assert net.notices() == ["PSS 127.0.0.5:5060 did not answer REGISTER in 32 s; trying 127.0.0.6:5060"]
    _register(net, B, reg)
    # A new call starts where the line is registered, and so does the refresh.
    net.advance(DOWN_TIME + 1)  # A is no longer marked down
    net.ua.invite("L1", "100", SDP, net.clock.now)
    assert net.one("INVITE")[1] == B
    net.advance(60.0)
    assert net.one("REGISTER")[1] == B


def test_registration_moves_when_its_address_fails_a_call() -> None:
    net = Net(LINE)
    net.ua.start(net.clock.now)
    _register(net, A)
    assert net.ua._reg.state is RegState.REGISTERED
    net.ua.invite("L1", "100", SDP, net.clock.now)
    invite, dest = net.one("INVITE")
    assert dest == A
    net.deliver(answer(invite, 503), A)
    sent = [(m.method, d) for m, d in net.sent() if isinstance(m, Request)]
    assert ("INVITE", B) in sent and ("REGISTER", B) in sent  # the call and the line move to B
    assert "registration moves from 127.0.0.5:5060 to 127.0.0.6:5060" in net.notices()


def test_outbound_proxy_gets_every_request_with_a_loose_route() -> None:
    net = Net(replace(LINE, pss_host="127.0.0.5", outbound_proxy="127.0.0.7:5080"))
    net.ua.start(net.clock.now)
    reg, dest = net.one("REGISTER")
    assert dest == PROXY
    assert reg.headers.get_all("Route") == ["<sip:127.0.0.7:5080;lr>"]
    assert str(reg.uri) == "sip:pss.test"
    net.deliver(answer(reg, 200, extra=[("Expires", "120")]), PROXY)
    assert net.events() == [Registered(expires=120)]
    net.ua.invite("L1", "100", SDP, net.clock.now)
    invite, dest = net.one("INVITE")
    assert dest == PROXY and invite.headers.get_all("Route") == ["<sip:127.0.0.7:5080;lr>"]
    assert str(invite.uri) == "sip:100@pss.test"
    net.deliver(answer(invite, 200), PROXY)
    _ack, dest = net.one("ACK")
    assert dest == PROXY
    # the proxy and the PSS are read; nobody else
    assert net.ua.accepts("127.0.0.7") and net.ua.accepts("127.0.0.5") and not net.ua.accepts("127.0.0.9")


def test_outbound_proxy_over_tcp_says_so_in_the_route() -> None:
    ua = UserAgent(replace(TRUNK, transport="tcp", outbound_proxy="proxy.example.net"))
    assert ua.dns_queries(0.0) == [DnsQuery("_sip._tcp.proxy.example.net", "SRV")]
    ua.invite("L1", "100", SDP, 0.0)
    invite = parse_message(ua.data_to_send()[0][0]) if ua.data_to_send() else None
    assert invite is None  # no proxy address known yet: nothing sent, the leg fails
    assert [type(e) for e in iter(ua.next_event, None)] == [LegFailed]


def test_a_name_is_resolved_through_the_adapter_and_refreshed_at_its_ttl() -> None:
    net = Net(replace(TRUNK, pss_host="pss.test"))
    ua = net.ua
    srv_q = DnsQuery("_sip._udp.pss.test", "SRV")
    assert ua.dns_queries(net.clock.now) == [srv_q]
    assert ua.dns_queries(net.clock.now) == []
    records = (Srv(priority=10, weight=1, port=5060, target="a.pss.test"),
               Srv(priority=20, weight=1, port=5062, target="b.pss.test"))  # fmt: skip
    ua.dns_answer(srv_q, DnsAnswer(ttl=300, srv=records), net.clock.now)
    assert ua.dns_queries(net.clock.now) == [DnsQuery("a.pss.test", "A"), DnsQuery("b.pss.test", "A")]
    assert not ua.dns_settled
    ua.dns_answer(DnsQuery("a.pss.test", "A"), DnsAnswer(ttl=60, addresses=("127.0.0.5",)), net.clock.now)
    ua.dns_answer(DnsQuery("b.pss.test", "A"), DnsFailure(reason="SERVFAIL"), net.clock.now)
    assert ua.dns_settled
    assert ua.candidates(net.clock.now) == [("127.0.0.5", 5060)]
    assert ua.accepts("127.0.0.5") and not ua.accepts("127.0.0.6")
    net.advance(30.0)  # the failure's retry is due
    assert ua.dns_queries(net.clock.now) == [DnsQuery("b.pss.test", "A")]
    ua.dns_answer(DnsQuery("b.pss.test", "A"), DnsAnswer(ttl=60, addresses=("127.0.0.6",)), net.clock.now)
    assert ua.candidates(net.clock.now) == [("127.0.0.5", 5060), ("127.0.0.6", 5062)]
    assert ua.accepts("127.0.0.6")
    net.advance(30.0)  # a's TTL ran out: asked again, and the old answer serves meanwhile
    assert ua.dns_queries(net.clock.now) == [DnsQuery("a.pss.test", "A")]
    ua.invite("L1", "100", SDP, net.clock.now)
    assert net.one("INVITE")[1] == ("127.0.0.5", 5060)


def test_a_refused_tcp_connection_fails_over_at_once() -> None:
    net = Net(replace(TRUNK, transport="tcp"))
    net.ua.invite("L1", "100", SDP, net.clock.now)
    assert net.one("INVITE")[1] == A
    net.ua.transport_failed(A, net.clock.now)  # what the adapter says when the connect is refused
    retry, dest = net.one("INVITE")
    assert dest == B and retry.top_via.transport == "TCP"
    assert net.notices() == ["PSS 127.0.0.5:5060 could not be reached for INVITE; trying 127.0.0.6:5060"]
    assert net.events() == []


def test_a_2xx_copy_after_a_failover_is_acked_again() -> None:
    net = Net()
    net.ua.invite("L1", "100", SDP, net.clock.now)
    first, _ = net.one("INVITE")
    net.deliver(answer(first, 503), A)
    retry = next(m for m, d in net.sent() if isinstance(m, Request) and m.method == "INVITE")
    ok = answer(retry, 200)
    net.deliver(ok, B)
    assert [type(e) for e in net.events()] == [LegAnswered]
    assert net.one("ACK")[1] == B
    net.deliver(ok, B)  # the 200 again: its ACK was lost
    assert net.one("ACK")[1] == B


def test_a_call_keeps_its_server_when_the_dns_stops_naming_it() -> None:
    net = Net(replace(TRUNK, pss_host="pss.test:5060"))
    ua = net.ua
    query = DnsQuery("pss.test", "A")
    assert ua.dns_queries(net.clock.now) == [query]
    ua.dns_answer(query, DnsAnswer(ttl=60, addresses=("127.0.0.5",)), net.clock.now)
    ua.invite("L1", "100", SDP, net.clock.now)
    invite, _ = net.one("INVITE")
    net.deliver(answer(invite, 200), A)
    net.events()
    net.advance(60.0)
    assert ua.dns_queries(net.clock.now) == [query]
    ua.dns_answer(query, DnsAnswer(ttl=60, addresses=("127.0.0.6",)), net.clock.now)
    assert ua.candidates(net.clock.now) == [B]
    assert ua.accepts("127.0.0.5")  # the call's server may still send its BYE
    ua.hangup("L1", net.clock.now)
    assert net.one("BYE")[1] == A


def test_each_call_acks_and_ends_at_its_own_server() -> None:
    net = Net()
    net.ua.invite("L1", "100", SDP, net.clock.now)
    first, _ = net.one("INVITE")
    net.deliver(answer(first, 503, extra=[("Retry-After", "5")]), A)
    on_b = next(m for m, d in net.sent() if isinstance(m, Request) and m.method == "INVITE")
    net.advance(6.0)  # A is up again: the next call goes there
    net.sent()
    net.ua.invite("L2", "101", SDP, net.clock.now)
    on_a, dest = net.one("INVITE")
    assert dest == A
    net.deliver(answer(on_b, 200), B)
    net.deliver(answer(on_a, 200), A)
    acks = {(m.call_id, d) for m, d in net.sent() if isinstance(m, Request) and m.method == "ACK"}
    assert acks == {(on_b.call_id, B), (on_a.call_id, A)}
    net.deliver(answer(on_b, 200), B)  # a copy: ACKed again, to B
    assert net.one("ACK")[1] == B
    net.ua.hangup("L1", net.clock.now)
    net.ua.hangup("L2", net.clock.now)
    byes = {(m.call_id, d) for m, d in net.sent() if isinstance(m, Request) and m.method == "BYE"}
    assert byes == {(on_b.call_id, B), (on_a.call_id, A)}
