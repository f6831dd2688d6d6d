"""Live state against admission, lingering state apart (sans-IO, fake clock).

Finished dialogs linger 64·T1 and answered transactions wait for their timers; neither may count
against the limits that admit new calls, and requests within a live dialog are always served.
"""

from __future__ import annotations

import random
from dataclasses import replace

from mss.config import check_text
from mss.sip.events import LegAnswered, LegEnded, LegFailed
from mss.sip.message import Headers, Request, Response
from mss.sip.settings import UASettings
from mss.sip.transaction import LIVE_CEILING, RequestReceived, TransactionLayer
from mss.sip.ua import UserAgent
from mss.sip.uri import parse_uri
from tests.helpers import FakeClock
from tests.test_sip_ua import ANSWER, OFFER, PSS, SETTINGS, Net, in_dialog, options, reply


def settings_for(max_calls: int, transport: str = "udp") -> UASettings:
    """The UA settings the service builds for ``max_calls`` (trunk mode)."""
    text = f"""
[callback]
listen_port = 5080
external_line_mode = no
default_caller = 5551000
max_calls = {max_calls}
[sip]
pss_host = 127.0.0.1
transport = {transport}
[peer_servers]
as1 = 127.0.0.1
"""
    result = check_text(text)
    assert result.config is not None, result.errors
    return UASettings.from_config(result.config)


def net_for(settings: UASettings) -> Net:
    net = Net(settings)
    net.ua = UserAgent(settings, rng=random.Random(11))
    return net


def callback(net: Net, n: int, *, phone_hangs_up: bool) -> None:
    """One callback as the call flow drives it: user1 answers, user2 answers, a short talk, release."""
    legs = [f"{n}.user1", f"{n}.user2"]
    acks = []
    for leg in legs:
        net.ua.invite(leg, "100", OFFER, net.now)
        inv = net.one("INVITE")
        net.deliver(reply(inv, 180, tag=f"ph{n}"))
        net.deliver(reply(inv, 200, tag=f"ph{n}", body=ANSWER))
        acks.append(net.one("ACK"))
        events = net.events()
        assert [type(e) for e in events][-1] is LegAnswered, (n, leg, events)
    net.advance(1.0)
    if phone_hangs_up:
        net.deliver(in_dialog("BYE", acks[0], 100 + n, branch=f"z9hG4bKbye{n}"))
        [ok] = net.sent()
        assert isinstance(ok, Response) and ok.status == 200
        net.ua.hangup(legs[1], net.now)
        net.deliver(reply(net.one("BYE"), 200, tag=f"ph{n}"))
    else:
        for leg in legs:
            net.ua.hangup(leg, net.now)
            net.deliver(reply(net.one("BYE"), 200, tag=f"ph{n}"))
    ended = net.events()
    assert [type(e) for e in ended] == [LegEnded, LegEnded], (n, ended)
    net.advance(0.5)


def test_many_sequential_callbacks_with_max_calls_2_all_succeed() -> None:
    """The 5th sequential callback used to fail with 503 "dialog limit" (lingering dialogs counted)."""
    s = settings_for(2)
    assert (s.max_dialogs, s.max_transactions) == (8, 16)
    net = net_for(s)
    for n in range(40):
        callback(net, n, phone_hangs_up=n % 2 == 1)
    c = net.ua.counters
    assert c["legs"] == 0 and c["live_transactions"] == 0
    assert 0 < c["lingering_dialogs"] <= s.max_lingering_dialogs
    assert c["lingering_transactions"] <= s.max_lingering_transactions
    net.advance(40)  # 64·T1 later everything lingering is gone
    c = net.ua.counters
    assert (c["dialogs"], c["lingering_dialogs"], c["transactions"]) == (0, 0, 0)


def test_sequential_callbacks_over_tcp_with_max_calls_2() -> None:
    net = net_for(settings_for(2, "tcp"))
    for n in range(12):
        callback(net, n, phone_hangs_up=False)


def test_live_legs_still_bound_admission() -> None:
    net = net_for(settings_for(1))  # max_dialogs = 4: a callback's two legs and two still hanging up
    for leg in "abcd":
        net.ua.invite(leg, "100", OFFER, net.now)
    assert net.ua.leg_room == 0  # what the call engine's admission reads: a REQUEST now gets code=fail
    net.ua.invite("e", "102", OFFER, net.now)
    assert net.events() == [LegFailed(leg_id="e", status=503, reason="Service Unavailable (dialog limit)")]


def test_lingering_dialogs_are_bounded_and_the_oldest_is_dropped() -> None:
    net = net_for(replace(settings_for(2), max_lingering_dialogs=3))
    acks = []
    for n in range(3):
        net.ua.invite(f"L{n}", "100", OFFER, net.now)
        inv = net.one("INVITE")
        net.deliver(reply(inv, 200, tag=f"ph{n}", body=ANSWER))
        acks.append(net.one("ACK"))
        net.deliver(in_dialog("BYE", acks[-1], 10, branch=f"z9hG4bKb{n}"))
        net.sent()
    net.events()
    assert (net.ua.counters["lingering_dialogs"], net.ua.counters["evicted_dialogs"]) == (3, 0)
    net.ua.invite("L3", "100", OFFER, net.now)
    inv = net.one("INVITE")
    net.deliver(reply(inv, 200, tag="ph3", body=ANSWER))
    net.one("ACK")
    net.deliver(in_dialog("BYE", acks[0], 11, branch="z9hG4bKlate0"))
    [late] = net.sent()
    assert isinstance(late, Response) and late.status == 200  # L0 still lingers: its late BYE is served
    net.ua.hangup("L3", net.now)
    net.deliver(reply(net.one("BYE"), 200, tag="ph3"))
    c = net.ua.counters
    assert (c["lingering_dialogs"], c["evicted_dialogs"]) == (3, 1)
    net.deliver(in_dialog("BYE", acks[0], 12, branch="z9hG4bKlate1"))  # L0 was the oldest: dropped
    [gone] = net.sent()
    assert isinstance(gone, Response) and gone.status == 481
    net.deliver(in_dialog("BYE", acks[2], 12, branch="z9hG4bKlate2"))  # L2 still lingers
    [kept] = net.sent()
    assert isinstance(kept, Response) and kept.status == 200


def _options(n: int) -> Request:
    opt = options(f"z9hG4bKflood{n}")
    h = opt.headers.copy()
    h.set("Call-ID", f"flood-{n}")
    return Request("OPTIONS", opt.uri, h)


def test_options_flood_then_an_in_dialog_bye_gets_200_and_releases_the_leg() -> None:
    """OPTIONS from the PSS used to fill the transaction table; then a live call's BYE got 503."""
    s = settings_for(2)
    net = net_for(s)
    net.ua.invite("L1", "100", OFFER, net.now)
    inv = net.one("INVITE")
    net.deliver(reply(inv, 200, body=ANSWER))
    ack = net.one("ACK")
    net.events()
    for n in range(1000):  # over UDP each answered OPTIONS lingers 64·T1 (Timer J)
        net.deliver(_options(n))
        [ok] = net.sent()
        assert isinstance(ok, Response) and ok.status == 200, n
    c = net.ua.counters
    assert c["overload_503"] == 0
    assert c["lingering_transactions"] <= s.max_out_of_dialog + 1  # + the INVITE's (Accepted)
    net.deliver(in_dialog("BYE", ack, 101))
    [ok] = net.sent()
    assert isinstance(ok, Response) and ok.status == 200
    assert net.events() == [LegEnded(leg_id="L1", by_remote=True, reason="BYE", answered=True)]
    assert net.ua.leg_state("L1") is None


def test_overload_503_meets_only_new_out_of_dialog_requests() -> None:
    net = net_for(replace(SETTINGS, max_transactions=1))
    net.ua.invite("L1", "100", OFFER, net.now)
    inv = net.one("INVITE")
    net.deliver(reply(inv, 200, body=ANSWER))
    ack = net.one("ACK")
    net.ua.invite("L2", "101", OFFER, net.now)  # its INVITE is live: the layer is full for new work
    net.one("INVITE")
    net.events()
    net.deliver(options("z9hG4bKo1"))
    [busy] = net.sent()
    assert isinstance(busy, Response) and busy.status == 503 and busy.headers.get("Retry-After") == "5"
    for n, method in enumerate(["OPTIONS", "UPDATE", "INFO"]):  # within L1's dialog: served
        net.deliver(in_dialog(method, ack, 50 + n, branch=f"z9hG4bKd{n}"))
        [resp] = net.sent()
        assert isinstance(resp, Response) and resp.status != 503, (method, resp.status)
    net.deliver(in_dialog("BYE", ack, 60, branch="z9hG4bKbye"))
    [ok] = net.sent()
    assert isinstance(ok, Response) and ok.status == 200
    assert net.events() == [LegEnded(leg_id="L1", by_remote=True, reason="BYE", answered=True)]
    net.ua.hangup("L2", net.now)  # our own CANCEL/BYE is never refused for admission either
    assert net.ua.leg_state("L2") == "cancelling"
    assert net.ua.counters["overload_503"] == 1


# --- the transaction layer alone ----------------------------------------------------------------------


def _request(method: str, branch: str, call_id: str = "c1") -> Request:
    h = Headers(
        [
            ("Via", f"SIP/2.0/UDP 127.0.0.1:5060;branch={branch}"),
            ("From", "<sip:pss@127.0.0.1>;tag=p"),
            ("To", "<sip:mss@127.0.0.1>"),
            ("Call-ID", call_id),
            ("CSeq", f"1 {method}"),
        ]
    )
    return Request(method, parse_uri("sip:mss@127.0.0.1:5070"), h)


def _answer(layer: TransactionLayer, now: float) -> None:
    for event in layer.next_events():
        assert isinstance(event, RequestReceived)
        layer.respond(event.key, Response(200, "OK", event.request.headers.copy()), now)


def test_layer_counts_live_and_lingering_apart_and_drops_the_oldest_lingering() -> None:
    clock = FakeClock()
    layer = TransactionLayer(max_transactions=2, max_lingering=3, max_out_of_dialog=2)
    for n in range(5):  # in-dialog requests, answered at once: they linger (Timer J, 32 s)
        assert layer.receive(
            _request("BYE", f"z9hG4bKb{n}"), PSS, reliable=False, now=clock.now, in_dialog=True
        )
        _answer(layer, clock.now)
    assert (layer.live, layer.lingering, layer.evicted, layer.full) == (0, 3, 2, False)
    # The oldest were dropped: a copy of the first BYE is a new request again, the last is absorbed.
    assert layer.receive(_request("BYE", "z9hG4bKb4"), PSS, reliable=False, now=clock.now, in_dialog=True)
    assert layer.next_events() == [] and len(layer.data_to_send()) == 6  # 5 answers + the absorbed copy
    assert layer.receive(_request("BYE", "z9hG4bKb0"), PSS, reliable=False, now=clock.now, in_dialog=True)
    assert [type(e) for e in layer.next_events()] == [RequestReceived]


def test_layer_out_of_dialog_budget() -> None:
    clock = FakeClock()
    layer = TransactionLayer(max_transactions=10, max_out_of_dialog=2)
    for n in range(6):  # answered ones linger; the oldest lingering makes room for the next
        assert layer.receive(_request("OPTIONS", f"z9hG4bKo{n}", f"o{n}"), PSS, reliable=False, now=clock.now)
        _answer(layer, clock.now)
    assert (layer.live, layer.lingering, layer.evicted) == (0, 2, 4)
    # Two left unanswered (live) fill the budget: the next out-of-dialog request is refused ...
    for n in range(6, 8):
        assert layer.receive(_request("OPTIONS", f"z9hG4bKo{n}", f"o{n}"), PSS, reliable=False, now=clock.now)
    layer.next_events()
    assert not layer.receive(_request("OPTIONS", "z9hG4bKo8", "o8"), PSS, reliable=False, now=clock.now)
    # ... but not an in-dialog one, nor our own work.
    assert layer.receive(_request("BYE", "z9hG4bKbye"), PSS, reliable=False, now=clock.now, in_dialog=True)
    layer.send_request(_request("BYE", "z9hG4bKours"), PSS, reliable=False, now=clock.now, in_dialog=True)


def test_layer_live_ceiling_bounds_in_dialog_work() -> None:
    clock = FakeClock()
    layer = TransactionLayer(max_transactions=2)
    admitted = 0
    for n in range(10):  # never answered: all live
        admitted += layer.receive(
            _request("INFO", f"z9hG4bKi{n}"), PSS, reliable=False, now=clock.now, in_dialog=True
        )
    assert admitted == LIVE_CEILING * 2 and layer.live == admitted
