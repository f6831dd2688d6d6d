"""The DNS adapter (mss.aio.dns) against a real authoritative server on loopback, and SipTransport
resolving pss_host through it: SRV then A, TTLs, NXDOMAIN, a silent nameserver, a missing
resolv.conf. The server (mss_peers.dnsserver) binds 127.0.0.153:53 (tests run as root)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from mss.aio.dns import Resolver
from mss.aio.sip_transport import SipTransport
from mss.errors import TransportError
from mss.sip.settings import UASettings
from mss.sip.targets import NEGATIVE_TTL, DnsAnswer, DnsFailure, DnsQuery, Srv
from mss_peers.dnsserver import ZoneServer
from mss_peers.net import free_port

DNS_ADDRESS = "127.0.0.153"
SILENT = "127.0.0.154"  # nothing listens there: the nameserver is refused


@pytest.fixture
def zone(tmp_path: Path) -> Iterator[ZoneServer]:
    with ZoneServer(DNS_ADDRESS, log_path=tmp_path / "dns.log") as server:
        server.set("_sip._udp.pss.test", "SRV", [(20, 1, 5062, "b.pss.test"), (10, 1, 5060, "a.pss.test")],
                   ttl=30)  # fmt: skip
        server.set("a.pss.test", "A", ["127.0.0.5"], ttl=40)
        server.set("b.pss.test", "A", ["127.0.0.6", "127.0.0.16"], ttl=50)
        server.set("nosrv.test", "A", ["127.0.0.7"], ttl=60)
        yield server


def resolver(tmp_path: Path, zone: ZoneServer) -> Resolver:
    return Resolver(str(zone.write_resolv_conf(tmp_path / "resolv.conf")))


def test_srv_and_a_answers_with_their_ttls(tmp_path: Path, zone: ZoneServer) -> None:
    dns = resolver(tmp_path, zone)
    got = asyncio.run(dns.lookup(DnsQuery("_sip._udp.pss.test", "SRV")))
    assert isinstance(got, DnsAnswer)
    assert got.ttl == 30
    assert sorted(got.srv, key=lambda r: r.priority) == [
        Srv(priority=10, weight=1, port=5060, target="a.pss.test"),
        Srv(priority=20, weight=1, port=5062, target="b.pss.test"),
    ]
    got = asyncio.run(dns.lookup(DnsQuery("b.pss.test", "A")))
    assert got == DnsAnswer(ttl=50, addresses=("127.0.0.6", "127.0.0.16"))
    assert zone.asked == ["SRV _sip._udp.pss.test", "A b.pss.test"]


def test_no_record_and_no_name_are_answers(tmp_path: Path, zone: ZoneServer) -> None:
    dns = resolver(tmp_path, zone)
    assert asyncio.run(dns.lookup(DnsQuery("_sip._udp.nosrv.test", "SRV"))) == DnsAnswer(ttl=NEGATIVE_TTL)
    assert asyncio.run(dns.lookup(DnsQuery("nosrv.test", "AAAA"))) == DnsAnswer(ttl=NEGATIVE_TTL)


def test_a_silent_nameserver_and_a_missing_resolv_conf_are_failures(tmp_path: Path) -> None:
    conf = tmp_path / "resolv.conf"
    conf.write_text(f"nameserver {SILENT}\noptions timeout:1 attempts:1\n")
    got = asyncio.run(Resolver(str(conf)).lookup(DnsQuery("a.pss.test", "A")))
    assert isinstance(got, DnsFailure)
    got = asyncio.run(Resolver(str(tmp_path / "absent.conf")).lookup(DnsQuery("a.pss.test", "A")))
    assert isinstance(got, DnsFailure) and got.reason.startswith(f"cannot read {tmp_path / 'absent.conf'}")


def test_the_environment_names_the_resolv_conf(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MSS_RESOLV_CONF", str(tmp_path / "resolv.conf"))
    assert Resolver().path == str(tmp_path / "resolv.conf")
    monkeypatch.delenv("MSS_RESOLV_CONF")
    assert Resolver().path == "/etc/resolv.conf"


def _settings(pss_host: str, **kwargs: object) -> UASettings:
    return UASettings(local_host="127.0.0.1", local_port=free_port(), transport="udp", pss_host=pss_host,
                      pss_port=5070, caller="mss", domain="pss.test", register=False, **kwargs)  # fmt: skip


def test_transport_resolves_the_name_before_it_starts(tmp_path: Path, zone: ZoneServer) -> None:
    async def run() -> tuple[list[tuple[str, int]], bool, bool]:
        sip = SipTransport(_settings("pss.test"), on_event=lambda e: None, resolver=resolver(tmp_path, zone))
        await sip.open()
        try:
            now = time.monotonic()
            return sorted(sip.ua.candidates(now)), sip.ua.accepts("127.0.0.16"), sip.ua.accepts("127.0.0.9")
        finally:
            await sip.close(unregister=False)

    candidates, known, stranger = asyncio.run(run())
    assert candidates == [("127.0.0.16", 5062), ("127.0.0.5", 5060), ("127.0.0.6", 5062)]
    assert known and not stranger
    assert zone.asked[0] == "SRV _sip._udp.pss.test"
    assert sorted(zone.asked[1:]) == ["A a.pss.test", "A b.pss.test"]


def test_a_name_without_srv_uses_pss_port(tmp_path: Path, zone: ZoneServer) -> None:
    async def run() -> list[tuple[str, int]]:
        sip = SipTransport(_settings("nosrv.test"), on_event=lambda e: None,
                           resolver=resolver(tmp_path, zone))  # fmt: skip
        await sip.open()
        try:
            return sip.ua.candidates(time.monotonic())
        finally:
            await sip.close(unregister=False)

    assert asyncio.run(run()) == [("127.0.0.7", 5070)]


def test_transport_refuses_to_start_without_an_address(tmp_path: Path, zone: ZoneServer) -> None:
    async def run(pss_host: str, **kwargs: object) -> None:
        sip = SipTransport(_settings(pss_host, **kwargs), on_event=lambda e: None,
                           resolver=resolver(tmp_path, zone))  # fmt: skip
        await sip.open()
        await sip.close(unregister=False)

    with pytest.raises(TransportError, match=r"cannot resolve the PSS 'gone\.test': no address found"):
        asyncio.run(run("gone.test"))
    with pytest.raises(TransportError, match=r"cannot resolve the outbound proxy 'gone\.test:5060'"):
        asyncio.run(run("127.0.0.5", outbound_proxy="gone.test:5060"))


def test_a_list_with_one_name_failing_still_starts(tmp_path: Path, zone: ZoneServer) -> None:
    async def run() -> list[tuple[str, int]]:
        sip = SipTransport(_settings("gone.test:5060, a.pss.test:5080"), on_event=lambda e: None,
                           resolver=resolver(tmp_path, zone))  # fmt: skip
        await sip.open()
        try:
            return sip.ua.candidates(time.monotonic())
        finally:
            await sip.close(unregister=False)

    assert asyncio.run(run()) == [("127.0.0.5", 5080)]


def test_an_expired_answer_is_looked_up_again_while_running(tmp_path: Path, zone: ZoneServer) -> None:
    """The SRV answer's TTL (5 s, the shortest honoured) runs out: the transport asks again on its
    own and takes the new targets."""
    zone.set("_sip._udp.pss.test", "SRV", [(10, 1, 5060, "a.pss.test")], ttl=5)

    async def run() -> list[tuple[str, int]]:
        sip = SipTransport(_settings("pss.test"), on_event=lambda e: None, resolver=resolver(tmp_path, zone))
        await sip.open()
        try:
            assert sip.ua.candidates(time.monotonic()) == [("127.0.0.5", 5060)]
            zone.set("_sip._udp.pss.test", "SRV", [(10, 1, 5062, "b.pss.test")], ttl=5)
            for _ in range(100):  # bounded: 10 s
                await asyncio.sleep(0.1)
                if sip.ua.candidates(time.monotonic())[0][1] == 5062:
                    break
            return sorted(sip.ua.candidates(time.monotonic()))
        finally:
            await sip.close(unregister=False)

    assert asyncio.run(run()) == [("127.0.0.16", 5062), ("127.0.0.6", 5062)]
