"""SIP transactions: the RFC 3261 §17 timer tables driven by a fake clock."""

from __future__ import annotations

import pytest

from mss.errors import LocalProtocolError
from mss.sip.message import Headers, Request, Response, make_response, parse_message
from mss.sip.transaction import (
    RequestReceived,
    ResponseReceived,
    StrayAck,
    StrayResponse,
    TimedOut,
    TimerValues,
    TransactionLayer,
    TransportFailed,
    TxState,
    ack_for_non2xx,
    response_destination,
)
from mss.sip.uri import parse_uri
from tests.helpers import FakeClock

PSS = ("127.0.0.1", 5060)


def request(method: str = "INVITE", branch: str = "z9hG4bKaaa", seq: int = 1, rport: bool = True) -> Request:
    via = f"SIP/2.0/UDP 127.0.0.1:5070;branch={branch}" + (";rport" if rport else "")
    h = Headers(
        [
            ("Via", via),
            ("Max-Forwards", "70"),
            ("From", "<sip:mss@127.0.0.1>;tag=f1"),
            ("To", "<sip:100@127.0.0.1>"),
            ("Call-ID", "call-1"),
            ("CSeq", f"{seq} {method}"),
            ("Route", "<sip:127.0.0.1;lr>"),
        ]
    )
    return Request(method, parse_uri("sip:100@127.0.0.1"), h)


def reply(req: Request, status: int, tag: str = "t1") -> Response:
    return make_response(req, status, to_tag=tag)


def drive(layer: TransactionLayer, clock: FakeClock, until: float) -> list[float]:
    """Run the layer's timers up to ``clock.now + until``; return the times at which it sent."""
    end = clock.now + until
    sent: list[float] = []
    while True:
        deadline = layer.get_timer()
        if deadline is None or deadline > end:
            break
        clock.now = deadline
        layer.handle_timer(clock.now)
        sent += [round(clock.now - (end - until), 3) for _ in layer.data_to_send()]
    clock.now = end
    return sent


def wire(layer: TransactionLayer) -> list[bytes]:
    return [data for data, _dest in layer.data_to_send()]


# --- client INVITE ----------------------------------------------------------------------------


def test_client_invite_udp_retransmits_on_timer_a_and_times_out_on_b() -> None:
    clock = FakeClock()
    layer = TransactionLayer()
    req = request()
    key = layer.send_request(req, PSS, reliable=False, now=clock.now)
    assert wire(layer) == [req.encode()]
    assert drive(layer, clock, 40) == [0.5, 1.5, 3.5, 7.5, 15.5, 31.5]
    [event] = layer.next_events()
    assert event == TimedOut(key=key, request=req, client=True)
    assert layer.client(key) is None and len(layer) == 0


def test_client_invite_tcp_no_retransmission_timer_b_only() -> None:
    clock = FakeClock()
    layer = TransactionLayer()
    key = layer.send_request(request(), PSS, reliable=True, now=clock.now)
    wire(layer)
    assert drive(layer, clock, 31.9) == []
    assert layer.next_events() == []
    drive(layer, clock, 0.2)
    assert [type(e) for e in layer.next_events()] == [TimedOut]
    assert layer.client(key) is None


def test_client_invite_provisional_stops_retransmission_and_timer_b() -> None:
    clock = FakeClock()
    layer = TransactionLayer()
    req = request()
    key = layer.send_request(req, PSS, reliable=False, now=clock.now)
    wire(layer)
    clock.advance(0.7)
    layer.handle_timer(clock.now)  # A fired once at 0.5
    assert len(wire(layer)) == 1
    ringing = reply(req, 180)
    layer.receive(ringing, PSS, reliable=False, now=clock.now)
    assert layer.next_events() == [ResponseReceived(key=key, response=ringing)]
    tx = layer.client(key)
    assert tx is not None and tx.state is TxState.PROCEEDING
    assert drive(layer, clock, 300) == []  # proceeding: no timer at all (the TU cancels)
    assert layer.client(key) is tx


def test_client_invite_non2xx_acked_then_timer_d() -> None:
    clock = FakeClock()
    layer = TransactionLayer()
    req = request()
    key = layer.send_request(req, PSS, reliable=False, now=clock.now)
    wire(layer)
    busy = reply(req, 486)
    layer.receive(busy, PSS, reliable=False, now=clock.now)
    assert layer.next_events() == [ResponseReceived(key=key, response=busy)]
    [ack] = wire(layer)
    parsed = parse_message(ack)
    assert isinstance(parsed, Request) and parsed.method == "ACK"
    assert parsed.top_via.branch == "z9hG4bKaaa"  # same branch as the INVITE (§17.1.1.3)
    assert parsed.to.tag == "t1" and str(parsed.cseq) == "1 ACK"
    assert parsed.headers.get_all("Route") == ["<sip:127.0.0.1;lr>"]
    # a retransmitted 486 is ACKed again, not passed up
    clock.advance(1)
    layer.receive(busy, PSS, reliable=False, now=clock.now)
    assert layer.next_events() == [] and wire(layer) == [ack]
    tx = layer.client(key)
    assert tx is not None and tx.state is TxState.COMPLETED
    drive(layer, clock, 30.9)
    assert layer.client(key) is tx  # Timer D = 32 s after the first 486
    drive(layer, clock, 0.2)
    assert layer.client(key) is None


def test_client_invite_2xx_accepted_passes_retransmissions_then_timer_m() -> None:
    clock = FakeClock()
    layer = TransactionLayer()
    req = request()
    key = layer.send_request(req, PSS, reliable=False, now=clock.now)
    wire(layer)
    ok = reply(req, 200)
    layer.receive(ok, PSS, reliable=False, now=clock.now)
    layer.receive(ok, PSS, reliable=False, now=clock.now + 0.5)
    assert layer.next_events() == [ResponseReceived(key=key, response=ok)] * 2
    assert wire(layer) == []  # the TU ACKs a 2xx, not the transaction
    drive(layer, clock, 32.1)
    assert layer.client(key) is None
    layer.receive(ok, PSS, reliable=False, now=clock.now)
    assert layer.next_events() == [StrayResponse(response=ok, source=PSS)]


def test_client_transport_failure() -> None:
    clock = FakeClock()
    layer = TransactionLayer()
    req = request()
    key = layer.send_request(req, PSS, reliable=True, now=clock.now)
    layer.transport_failed(("127.0.0.9", 5060))
    assert layer.next_events() == []
    layer.transport_failed(PSS)
    assert layer.next_events() == [TransportFailed(key=key, request=req)]
    assert len(layer) == 0


# --- client non-INVITE ------------------------------------------------------------------------


def test_client_non_invite_timer_e_caps_at_t2_and_f_times_out() -> None:
    clock = FakeClock()
    layer = TransactionLayer()
    key = layer.send_request(request("BYE", seq=2), PSS, reliable=False, now=clock.now)
    wire(layer)
    sent = drive(layer, clock, 40)
    assert sent == [0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
    assert [type(e) for e in layer.next_events()] == [TimedOut]
    assert layer.client(key) is None


def test_client_non_invite_proceeding_retransmits_every_t2() -> None:
    clock = FakeClock()
    layer = TransactionLayer()
    req = request("BYE", seq=2)
    layer.send_request(req, PSS, reliable=False, now=clock.now)
    wire(layer)
    layer.receive(reply(req, 100), PSS, reliable=False, now=clock.now)
    assert drive(layer, clock, 10) == [0.5, 4.5, 8.5]


def test_client_non_invite_final_then_timer_k() -> None:
    clock = FakeClock()
    for reliable, k in ((False, 5.0), (True, 0.0)):
        layer = TransactionLayer()
        req = request("BYE", seq=2)
        key = layer.send_request(req, PSS, reliable=reliable, now=clock.now)
        ok = reply(req, 200)
        layer.receive(ok, PSS, reliable=reliable, now=clock.now)
        layer.receive(ok, PSS, reliable=reliable, now=clock.now)  # absorbed
        assert layer.next_events() == [ResponseReceived(key=key, response=ok)]
        assert layer.get_timer() == clock.now + k
        drive(layer, clock, k + 0.01)
        assert layer.client(key) is None


def test_custom_timer_values() -> None:
    clock = FakeClock()
    layer = TransactionLayer(timer_values=TimerValues(t1=0.1, t2=0.4, t4=0.5))
    layer.send_request(request("OPTIONS"), PSS, reliable=False, now=clock.now)
    wire(layer)
    assert drive(layer, clock, 7) == [0.1, 0.3, 0.7, 1.1, 1.5, 1.9, 2.3, 2.7, 3.1, 3.5, 3.9, 4.3, 4.7,
                                      5.1, 5.5, 5.9, 6.3]  # fmt: skip
    assert [type(e) for e in layer.next_events()] == [TimedOut]


# --- server INVITE ----------------------------------------------------------------------------


def test_server_invite_trying_after_200ms_then_non2xx_g_h() -> None:
    clock = FakeClock()
    layer = TransactionLayer()
    req = request("INVITE", branch="z9hG4bKin1", seq=5)
    layer.receive(req, PSS, reliable=False, now=clock.now)
    [event] = layer.next_events()
    assert isinstance(event, RequestReceived) and event.request is req
    key = event.key
    assert drive(layer, clock, 0.25) == [0.2]  # 100 Trying
    # a retransmitted INVITE gets the 100 again
    layer.receive(req, PSS, reliable=False, now=clock.now)
    assert len(wire(layer)) == 1 and layer.next_events() == []
    layer.respond(key, reply(req, 488), clock.now)
    assert len(wire(layer)) == 1
    assert drive(layer, clock, 40) == [0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
    assert layer.next_events() == [TimedOut(key=key, request=req, client=False)]
    assert layer.server(key) is None


def test_server_invite_ack_confirms_then_timer_i() -> None:
    clock = FakeClock()
    layer = TransactionLayer()
    req = request("INVITE", branch="z9hG4bKin2", seq=5)
    layer.receive(req, PSS, reliable=False, now=clock.now)
    [event] = layer.next_events()
    assert isinstance(event, RequestReceived)
    resp = reply(req, 491)
    layer.respond(event.key, resp, clock.now)
    wire(layer)
    ack = ack_for_non2xx(req, resp)
    layer.receive(ack, PSS, reliable=False, now=clock.now + 0.1)
    tx = layer.server(event.key)
    assert tx is not None and tx.state is TxState.CONFIRMED
    assert layer.next_events() == []  # the ACK is absorbed
    clock.advance(0.1)
    assert drive(layer, clock, 6) == []  # no more retransmissions of the 491
    assert layer.server(event.key) is None


def test_server_invite_2xx_accepted_absorbs_copies_and_lets_the_tu_retransmit() -> None:
    clock = FakeClock()
    layer = TransactionLayer()
    req = request("INVITE", branch="z9hG4bKin3", seq=5)
    layer.receive(req, PSS, reliable=False, now=clock.now)
    [event] = layer.next_events()
    assert isinstance(event, RequestReceived)
    ok = reply(req, 200)
    layer.respond(event.key, ok, clock.now)
    assert wire(layer) == [ok.encode()]
    layer.receive(req, PSS, reliable=False, now=clock.now + 0.3)  # INVITE copy: absorbed
    assert wire(layer) == [] and layer.next_events() == []
    layer.respond(event.key, ok, clock.now + 0.5)  # the TU's retransmission goes out
    assert wire(layer) == [ok.encode()]
    ack = Request("ACK", req.uri, req.headers.copy())
    ack.headers.set("Via", "SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKnewack")
    ack.headers.set("CSeq", "5 ACK")
    layer.receive(ack, PSS, reliable=False, now=clock.now + 0.6)
    assert layer.next_events() == [StrayAck(request=ack, source=PSS)]
    drive(layer, clock, 32.1)
    assert layer.server(event.key) is None


def test_server_invite_cannot_answer_twice() -> None:
    clock = FakeClock()
    layer = TransactionLayer()
    req = request("INVITE", branch="z9hG4bKin4")
    layer.receive(req, PSS, reliable=True, now=clock.now)
    [event] = layer.next_events()
    assert isinstance(event, RequestReceived)
    layer.respond(event.key, reply(req, 486), clock.now)
    with pytest.raises(LocalProtocolError, match="cannot send 200 in state completed"):
        layer.respond(event.key, reply(req, 200), clock.now)


def test_cancel_finds_its_invite() -> None:
    clock = FakeClock()
    layer = TransactionLayer()
    req = request("INVITE", branch="z9hG4bKin5")
    layer.receive(req, PSS, reliable=False, now=clock.now)
    [invite_event] = layer.next_events()
    assert isinstance(invite_event, RequestReceived)
    cancel = request("CANCEL", branch="z9hG4bKin5")
    layer.receive(cancel, PSS, reliable=False, now=clock.now)
    [cancel_event] = layer.next_events()
    assert isinstance(cancel_event, RequestReceived) and cancel_event.key != invite_event.key
    tx = layer.find_invite_for_cancel(cancel)
    assert tx is not None and tx.key == invite_event.key


# --- server non-INVITE ------------------------------------------------------------------------


def test_server_non_invite_retransmissions_and_timer_j() -> None:
    clock = FakeClock()
    layer = TransactionLayer()
    req = request("BYE", branch="z9hG4bKbye", seq=3)
    layer.receive(req, PSS, reliable=False, now=clock.now)
    [event] = layer.next_events()
    assert isinstance(event, RequestReceived)
    layer.receive(req, PSS, reliable=False, now=clock.now)  # Trying: absorbed, nothing to resend
    assert wire(layer) == [] and layer.next_events() == []
    ok = reply(req, 200)
    layer.respond(event.key, ok, clock.now)
    layer.receive(req, PSS, reliable=False, now=clock.now + 1)  # Completed: resend the 200
    assert wire(layer) == [ok.encode(), ok.encode()]
    drive(layer, clock, 31.9)
    assert layer.server(event.key) is not None
    drive(layer, clock, 0.2)
    assert layer.server(event.key) is None


def test_server_non_invite_over_tcp_ends_at_once() -> None:
    clock = FakeClock()
    layer = TransactionLayer()
    req = request("OPTIONS", branch="z9hG4bKopt")
    layer.receive(req, ("127.0.0.1", 40000), reliable=True, now=clock.now)
    [event] = layer.next_events()
    assert isinstance(event, RequestReceived)
    layer.respond(event.key, reply(req, 200), clock.now)
    assert [dest for _d, dest in layer.data_to_send()] == [("127.0.0.1", 40000)]
    layer.handle_timer(clock.now)
    assert len(layer) == 0


def test_rfc2543_requests_match_without_a_branch() -> None:
    clock = FakeClock()
    layer = TransactionLayer()
    req = request("OPTIONS", branch="1234")
    layer.receive(req, PSS, reliable=False, now=clock.now)
    layer.receive(req, PSS, reliable=False, now=clock.now)
    assert len(layer.next_events()) == 1 and len(layer) == 1


def test_response_destination_rules() -> None:
    with_rport = request("BYE")
    without = request("BYE", rport=False)
    assert response_destination(with_rport, ("127.0.0.1", 40000), False) == ("127.0.0.1", 40000)
    assert response_destination(without, ("127.0.0.1", 40000), False) == ("127.0.0.1", 5070)
    assert response_destination(without, ("127.0.0.1", 40000), True) == ("127.0.0.1", 40000)


# --- limits and misuse --------------------------------------------------------------------------


def test_layer_is_bounded() -> None:
    clock = FakeClock()
    layer = TransactionLayer(max_transactions=2)
    layer.send_request(request("OPTIONS", branch="z9hG4bK1"), PSS, reliable=False, now=clock.now)
    assert layer.receive(request("BYE", branch="z9hG4bK2"), PSS, reliable=False, now=clock.now)
    assert layer.full
    assert not layer.receive(request("BYE", branch="z9hG4bK3"), PSS, reliable=False, now=clock.now)
    with pytest.raises(LocalProtocolError, match="no room"):
        layer.send_request(request("OPTIONS", branch="z9hG4bK4"), PSS, reliable=False, now=clock.now)


def test_send_request_misuse() -> None:
    layer = TransactionLayer()
    with pytest.raises(LocalProtocolError, match="send_stateless"):
        layer.send_request(request("ACK"), PSS, reliable=False, now=0)
    with pytest.raises(LocalProtocolError, match="without an RFC 3261 branch"):
        layer.send_request(request("OPTIONS", branch="abc"), PSS, reliable=False, now=0)
    layer.send_request(request("OPTIONS"), PSS, reliable=False, now=0)
    with pytest.raises(LocalProtocolError, match="already in use"):
        layer.send_request(request("OPTIONS"), PSS, reliable=False, now=0)


def test_ack_of_a_2xx_with_the_invite_branch_goes_to_the_tu() -> None:
    clock = FakeClock()
    layer = TransactionLayer()
    req = request("INVITE", branch="z9hG4bKold", seq=5)
    layer.receive(req, PSS, reliable=False, now=clock.now)
    [event] = layer.next_events()
    assert isinstance(event, RequestReceived)
    layer.respond(event.key, reply(req, 200), clock.now)
    ack = Request("ACK", req.uri, req.headers.copy())
    ack.headers.set("CSeq", "5 ACK")
    layer.receive(ack, PSS, reliable=False, now=clock.now)
    assert layer.next_events() == [StrayAck(request=ack, source=PSS)]
