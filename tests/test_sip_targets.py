"""The PSS target list (RFC 3263 §4, RFC 2782): entries, SRV order and weights with a seeded random,
TTL expiry, the last good answer kept when the DNS fails. No sockets: the test answers the lookups."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from mss.sip.targets import (
    FAILURE_RETRY,
    MIN_TTL,
    NEGATIVE_TTL,
    DnsAnswer,
    DnsFailure,
    DnsQuery,
    HostEntry,
    Srv,
    TargetList,
    families_for,
    order_srv,
    parse_host_list,
    parse_hostport,
)


def srv(priority: int, weight: int, port: int, target: str) -> Srv:
    return Srv(priority=priority, weight=weight, port=port, target=target)


def test_entries_parse() -> None:
    assert parse_host_list("pss.example.net") == (HostEntry(host="pss.example.net"),)
    assert parse_host_list("A.Example.NET., 192.0.2.1:5080 ,[2001:db8::1]:5062,2001:db8::2") == (
        HostEntry(host="a.example.net"),
        HostEntry(host="192.0.2.1", port=5080),
        HostEntry(host="2001:db8::1", port=5062),
        HostEntry(host="2001:db8::2"),
    )
    assert str(parse_hostport("[2001:db8::1]:5062")) == "[2001:db8::1]:5062"
    assert parse_hostport("192.0.2.1").literal and not parse_hostport("pss.example.net").literal


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "'': an empty entry in the list"),
        ("a.example.net,", "'a.example.net,': an empty entry in the list"),
        ("a.example.net:0", "'a.example.net:0': '0' is not a port (1..65535)"),
        ("a.example.net:x", "'a.example.net:x': 'x' is not a port (1..65535)"),
        ("a.example.net:", "'a.example.net:': the port is missing after ':'"),
        ("[2001:db8::1", "'[2001:db8::1' is not host[:port] ([IPv6 address][:port])"),
        ("bad_host!", "'bad_host!': 'bad_host!' is not a host name or IP address"),
        ("a b", "'a b' is not host[:port]"),
        (",".join(["h"] * 9), "9 entries: at most 8"),
    ],
)
def test_bad_entries(text: str, message: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_host_list(text)
    assert str(caught.value) == message


def test_families_follow_the_bound_address() -> None:
    assert families_for("127.0.0.1") == ("A",)
    assert families_for("::1") == ("AAAA",)
    assert families_for("::") == ("AAAA", "A")


def test_literals_need_no_dns() -> None:
    targets = TargetList.parse("192.0.2.1, 192.0.2.2:5080", default_port=5070)
    assert targets.queries(0.0) == []
    assert targets.settled
    assert targets.candidates() == [("192.0.2.1", 5070), ("192.0.2.2", 5080)]
    assert targets.addresses() == {"192.0.2.1", "192.0.2.2"}
    assert targets.get_timer() is None


def test_name_with_port_is_a_and_aaaa_only() -> None:
    targets = TargetList.parse("pss.example.net:5080", families=("A", "AAAA"))
    assert targets.queries(0.0) == [DnsQuery("pss.example.net", "A"), DnsQuery("pss.example.net", "AAAA")]
    assert not targets.settled
    targets.answer(DnsQuery("pss.example.net", "A"), DnsAnswer(ttl=300, addresses=("192.0.2.1",)), 0.0)
    targets.answer(DnsQuery("pss.example.net", "AAAA"), DnsAnswer(ttl=300, addresses=("2001:db8::1",)), 0.0)
    assert targets.settled
    assert targets.candidates() == [("192.0.2.1", 5080), ("2001:db8::1", 5080)]


def test_srv_then_addresses_of_each_target() -> None:
    targets = TargetList.parse("pss.example.net", transport="udp", rng=random.Random(1))
    srv_q = DnsQuery("_sip._udp.pss.example.net", "SRV")
    assert targets.queries(0.0) == [srv_q]
    assert targets.queries(0.0) == []  # in flight: not asked twice
    targets.answer(srv_q, DnsAnswer(ttl=600, srv=(srv(20, 0, 5062, "b.example.net"),
                                                  srv(10, 0, 5060, "a.example.net"))), 0.0)  # fmt: skip
    assert targets.queries(0.0) == [DnsQuery("b.example.net", "A"), DnsQuery("a.example.net", "A")]
    assert targets.candidates() == []  # no address yet
    both = DnsAnswer(ttl=60, addresses=("192.0.2.1", "192.0.2.3"))
    targets.answer(DnsQuery("a.example.net", "A"), both, 0.0)
    targets.answer(DnsQuery("b.example.net", "A"), DnsAnswer(ttl=60, addresses=("192.0.2.2",)), 0.0)
    assert targets.settled
    # priority 10 first, each target's addresses with the SRV port
    assert targets.candidates() == [("192.0.2.1", 5060), ("192.0.2.3", 5060), ("192.0.2.2", 5062)]


def test_each_transport_asks_for_its_service() -> None:
    for transport, service in (("udp", "_sip._udp"), ("tcp", "_sip._tcp"), ("tls", "_sips._tcp")):
        targets = TargetList.parse("pss.example.net", transport=transport)
        assert targets.queries(0.0) == [DnsQuery(f"{service}.pss.example.net", "SRV")]


def test_no_srv_records_fall_back_to_the_name_with_the_default_port() -> None:
    targets = TargetList.parse("pss.example.net", default_port=5070)
    targets.answer(DnsQuery("_sip._udp.pss.example.net", "SRV"), DnsAnswer(ttl=NEGATIVE_TTL), 0.0)
    assert targets.queries(0.0) == [DnsQuery("pss.example.net", "A")]
    targets.answer(DnsQuery("pss.example.net", "A"), DnsAnswer(ttl=60, addresses=("192.0.2.9",)), 0.0)
    assert targets.candidates() == [("192.0.2.9", 5070)]


def test_srv_dot_target_means_no_service() -> None:
    targets = TargetList.parse("pss.example.net")
    no_service = DnsAnswer(ttl=60, srv=(srv(0, 0, 0, "."),))
    targets.answer(DnsQuery("_sip._udp.pss.example.net", "SRV"), no_service, 0.0)
    assert targets.queries(0.0) == []
    assert targets.candidates() == []


def test_list_entries_keep_their_order() -> None:
    targets = TargetList.parse("b.example.net:5060, 192.0.2.1, a.example.net:5060")
    for name, ip in (("b.example.net", "192.0.2.2"), ("a.example.net", "192.0.2.3")):
        targets.answer(DnsQuery(name, "A"), DnsAnswer(ttl=60, addresses=(ip,)), 0.0)
    assert targets.candidates() == [("192.0.2.2", 5060), ("192.0.2.1", 5060), ("192.0.2.3", 5060)]


def test_srv_weights_with_a_seeded_random() -> None:
    """RFC 2782: within a priority a record is first with probability weight / sum; weight 0
    is first only rarely; a lower priority always comes first."""
    records = [srv(10, 60, 1, "a"), srv(10, 30, 2, "b"), srv(10, 10, 3, "c"), srv(10, 0, 4, "z"),
               srv(5, 1, 9, "first")]  # fmt: skip
    rng = random.Random(2026)
    firsts: Counter[str] = Counter()
    for _ in range(10_000):
        order = order_srv(records, rng)
        assert order[0].target == "first"
        assert sorted(r.target for r in order) == ["a", "b", "c", "first", "z"]
        firsts[order[1].target] += 1
    assert 5700 <= firsts["a"] <= 6300
    assert 2700 <= firsts["b"] <= 3300
    assert 800 <= firsts["c"] <= 1200
    assert 50 <= firsts["z"] <= 160  # first only when the draw is 0: 1 in 101
    # the same seed gives the same order
    assert order_srv(records, random.Random(5)) == order_srv(records, random.Random(5))


def test_all_weights_zero_still_orders_everything() -> None:
    order = order_srv([srv(1, 0, 1, "a"), srv(1, 0, 2, "b")], random.Random(3))
    assert sorted(r.target for r in order) == ["a", "b"]


def test_ttl_expiry_asks_again_and_a_new_answer_replaces_the_old() -> None:
    targets = TargetList.parse("pss.example.net:5060")
    query = DnsQuery("pss.example.net", "A")
    assert targets.queries(0.0) == [query]
    targets.answer(query, DnsAnswer(ttl=120, addresses=("192.0.2.1",)), 0.0)
    assert targets.get_timer() == 120.0
    assert targets.queries(119.0) == []
    assert targets.queries(120.0) == [query]
    assert targets.candidates() == [("192.0.2.1", 5060)]  # still used while the lookup runs
    targets.answer(query, DnsAnswer(ttl=120, addresses=("192.0.2.7",)), 120.5)
    assert targets.candidates() == [("192.0.2.7", 5060)]
    assert targets.addresses() == {"192.0.2.7"}


def test_tiny_ttls_are_raised_to_the_minimum() -> None:
    targets = TargetList.parse("pss.example.net:5060")
    query = DnsQuery("pss.example.net", "A")
    targets.answer(query, DnsAnswer(ttl=0, addresses=("192.0.2.1",)), 10.0)
    assert targets.get_timer() == 10.0 + MIN_TTL


def test_a_failed_lookup_keeps_the_last_good_answer() -> None:
    targets = TargetList.parse("pss.example.net:5060")
    query = DnsQuery("pss.example.net", "A")
    targets.answer(query, DnsAnswer(ttl=30, addresses=("192.0.2.1",)), 0.0)
    assert targets.queries(30.0) == [query]
    targets.answer(query, DnsFailure(reason="no answer within 5 s"), 35.0)
    assert targets.candidates() == [("192.0.2.1", 5060)]
    assert targets.failures() == {"A pss.example.net": "no answer within 5 s"}
    assert targets.queries(36.0) == []  # retried later, not at every turn
    assert targets.get_timer() == 35.0 + FAILURE_RETRY
    assert targets.queries(35.0 + FAILURE_RETRY) == [query]
    targets.answer(query, DnsAnswer(ttl=30, addresses=("192.0.2.1",)), 66.0)
    assert targets.failures() == {}


def test_a_failure_before_any_answer_is_retried_later() -> None:
    targets = TargetList.parse("pss.example.net:5060")
    query = DnsQuery("pss.example.net", "A")
    assert targets.queries(0.0) == [query]
    targets.answer(query, DnsFailure(reason="SERVFAIL"), 0.0)
    assert targets.settled and targets.candidates() == []
    assert targets.queries(1.0) == []
    assert targets.queries(FAILURE_RETRY) == [query]


def test_srv_targets_that_left_are_forgotten() -> None:
    targets = TargetList.parse("pss.example.net")
    srv_q = DnsQuery("_sip._udp.pss.example.net", "SRV")
    targets.answer(srv_q, DnsAnswer(ttl=60, srv=(srv(1, 0, 5060, "a.example.net"),)), 0.0)
    targets.answer(DnsQuery("a.example.net", "A"), DnsAnswer(ttl=600, addresses=("192.0.2.1",)), 0.0)
    targets.answer(srv_q, DnsAnswer(ttl=60, srv=(srv(1, 0, 5060, "b.example.net"),)), 60.0)
    assert targets.candidates() == []  # b not looked up yet; a is not a target any more
    assert targets.queries(60.0) == [DnsQuery("b.example.net", "A")]
    assert "a.example.net" not in {q for q in targets.failures()}
    assert targets.addresses() == frozenset()


def test_equal_priorities_are_drawn_for_each_request_and_new_answers_count() -> None:
    targets = TargetList.parse("pss.example.net", rng=random.Random(4))
    srv_q = DnsQuery("_sip._udp.pss.example.net", "SRV")
    targets.answer(srv_q, DnsAnswer(ttl=60, srv=(srv(10, 50, 5060, "a.example.net"),
                                                 srv(10, 50, 5060, "b.example.net"))), 0.0)  # fmt: skip
    targets.answer(DnsQuery("a.example.net", "A"), DnsAnswer(ttl=60, addresses=("192.0.2.1",)), 0.0)
    targets.answer(DnsQuery("b.example.net", "A"), DnsAnswer(ttl=60, addresses=("192.0.2.2",)), 0.0)
    firsts = Counter(targets.candidates()[0][0] for _ in range(1000))
    assert 400 <= firsts["192.0.2.1"] <= 600 and firsts["192.0.2.1"] + firsts["192.0.2.2"] == 1000
    targets.answer(srv_q, DnsAnswer(ttl=60, srv=(srv(10, 50, 5060, "a.example.net"),
                                                 srv(20, 50, 5060, "b.example.net"))), 60.0)  # fmt: skip
    assert {tuple(targets.candidates()) for _ in range(50)} == {(("192.0.2.1", 5060), ("192.0.2.2", 5060))}


def test_an_outcome_the_list_does_not_need_is_dropped() -> None:
    """A lookup made for another list (the outbound proxy's) or for a target that left: neither its
    answer nor its failure stays (a stale failure would keep the timer in the past)."""
    targets = TargetList.parse("pss.example.net:5060")
    targets.answer(DnsQuery("proxy.example.net", "A"), DnsFailure(reason="SERVFAIL"), 0.0)
    targets.answer(DnsQuery("other.example.net", "A"), DnsAnswer(ttl=60, addresses=("192.0.2.9",)), 0.0)
    assert targets.failures() == {} and targets.get_timer() is None
    assert targets.addresses() == frozenset()
