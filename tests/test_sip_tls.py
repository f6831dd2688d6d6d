"""SIP over TLS: [sip] tls_* config errors, Via/Contact over TLS, and the adapter on loopback TLS
sockets against a scripted PSS (certificates made here with the openssl CLI)."""

from __future__ import annotations

import asyncio
import functools
import logging
import shutil
import ssl
import subprocess
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
import uvloop

from mss.aio import sip_tls
from mss.config import check_text
from mss.sip.events import LegAnswered, LegFailed
from mss.sip.message import parse_message
from mss.sip.settings import UASettings
from mss.sip.targets import DnsAnswer, DnsQuery, Srv, TargetList
from mss.sip.ua import UserAgent
from mss_peers.net import free_port
from tests.test_config import render
from tests.test_sip_transport import HOST, SDP, Events, TcpPss, running, settings


def uv(scenario: Callable[..., Coroutine[Any, Any, None]]) -> Callable[..., None]:
    """Run an async test (with its fixtures) on uvloop, the loop mss runs on."""

    @functools.wraps(scenario)
    def test(**fixtures: Any) -> None:
        uvloop.run(asyncio.wait_for(scenario(**fixtures), 30))

    return test


@dataclass(frozen=True)
class Pki:
    """A test CA and one certificate it signed (for 127.0.0.1 and ``pss.test``)."""

    ca: Path
    cert: Path
    key: Path


def make_pki(directory: Path, name: str = "pss") -> Pki:
    """A fresh CA in ``directory`` and a server/client certificate (EC P-256) signed by it, whose
    subjectAltName holds IP 127.0.0.1 and DNS ``pss.test``."""
    if shutil.which("openssl") is None:
        pytest.fail("the openssl CLI (Debian openssl) is needed to make the test certificates")
    directory.mkdir(parents=True, exist_ok=True)
    ca, ca_key = directory / f"{name}-ca.crt", directory / f"{name}-ca.key"
    cert, key, csr = directory / f"{name}.crt", directory / f"{name}.key", directory / f"{name}.csr"
    ext = directory / f"{name}.ext"
    ext.write_text("subjectAltName = IP:127.0.0.1, DNS:pss.test\nbasicConstraints = CA:FALSE\n"
                   "keyUsage = digitalSignature\nextendedKeyUsage = serverAuth, clientAuth\n")  # fmt: skip
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    for command in (
        ["req", "-x509", *ec, "-keyout", ca_key, "-out", ca, "-days", "2", "-subj", f"/CN={name} test CA",
         "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign"],
        ["req", *ec, "-keyout", key, "-out", csr, "-subj", "/CN=127.0.0.1"],
        ["x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial", "-out", cert,
         "-days", "2", "-extfile", ext],
    ):  # fmt: skip
        subprocess.run(["openssl", *map(str, command)], check=True, capture_output=True, timeout=30)
    return Pki(ca=ca, cert=cert, key=key)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def other_pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("other-pki"), "other")


# -- config --------------------------------------------------------------------------------------


def errors(text: str, base_dir: Path) -> list[str]:
    return [str(e) for e in check_text(text, base_dir=base_dir).errors]


def test_tls_keys_are_read_with_paths_relative_to_the_config(pki: Pki) -> None:
    keys = {"transport": "TLS", "tls_cert": pki.cert.name, "tls_key": pki.key.name, "tls_ca": pki.ca.name,
            "tls_verify": "no"}  # fmt: skip
    text = render(*(("sip", key, value) for key, value in keys.items()))
    config = check_text(text, base_dir=pki.cert.parent).config
    assert config is not None
    sip = config.sip
    assert (sip.transport, sip.tls_cert, sip.tls_key, sip.tls_ca, sip.tls_verify) == (
        "tls", str(pki.cert), str(pki.key), str(pki.ca), False
    )
    ua = UASettings.from_config(config)
    assert ua.reliable and ua.tls_ca == str(pki.ca) and not ua.tls_verify


def test_tls_defaults_verify_with_the_system_cas() -> None:
    config = check_text(render(("sip", "transport", "tls"))).config
    assert config is not None
    assert (config.sip.tls_cert, config.sip.tls_key, config.sip.tls_ca, config.sip.tls_verify) == (
        None, None, None, True
    )


def test_tls_file_errors_are_config_errors(pki: Pki, other_pki: Pki, tmp_path: Path) -> None:
    (tmp_path / "junk.pem").write_text("not a certificate\n")
    base = pki.cert.parent
    loading = "[sip] tls_cert: cannot load"
    cases = [
        ([("sip", "tls_cert", str(pki.cert))], "[sip] tls_key: tls_cert and tls_key go together"),
        ([("sip", "tls_key", str(pki.key))], "[sip] tls_cert: tls_cert and tls_key go together"),
        ([("sip", "tls_cert", "missing.crt"), ("sip", "tls_key", str(pki.key))],
         f"{loading} {base / 'missing.crt'} with {pki.key}: No such file or directory"),
        ([("sip", "tls_cert", str(pki.cert)), ("sip", "tls_key", str(other_pki.key))],
         f"{loading} {pki.cert} with {other_pki.key}: the key does not match the certificate"),
        ([("sip", "tls_cert", str(tmp_path / "junk.pem")), ("sip", "tls_key", str(pki.key))],
         f"{loading} {tmp_path / 'junk.pem'} with {pki.key}: not PEM (a certificate, then its key)"),
        ([("sip", "tls_ca", str(tmp_path / "junk.pem"))],
         f"[sip] tls_ca: cannot load {tmp_path / 'junk.pem'}: no PEM certificate in it"),
        ([("sip", "tls_ca", "nowhere/ca.pem")],
         f"[sip] tls_ca: cannot load {base / 'nowhere/ca.pem'}: No such file or directory"),
        ([("sip", "tls_verify", "maybe")], "[sip] tls_verify: 'maybe' is not yes or no"),
    ]  # fmt: skip
    for edits, expected in cases:
        assert errors(render(("sip", "transport", "tls"), *edits), base) == [expected], edits


# -- the user agent ------------------------------------------------------------------------------


def test_via_contact_and_route_say_tls() -> None:
    s = UASettings(local_host=HOST, local_port=5071, transport="tls", pss_host=HOST, pss_port=5061,
                   caller="mss", domain=HOST, register=False, outbound_proxy="127.0.0.2:5061")  # fmt: skip
    ua = UserAgent(s)
    assert ua.via("z9hG4bKx") == f"SIP/2.0/TLS {HOST}:5071;branch=z9hG4bKx"
    assert str(ua.contact("mss")) == f"<sip:mss@{HOST}:5071;transport=tls>"
    ua.invite("L1", "100", SDP, 0.0)
    [(data, dest)] = ua.data_to_send()
    invite = parse_message(data, exact=True)
    assert dest == ("127.0.0.2", 5061)
    assert invite.headers.get("Route") == "<sip:127.0.0.2:5061;transport=tls;lr>"


# -- the adapter on TLS sockets ------------------------------------------------------------------


def server_ssl(pki: Pki) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(pki.cert, pki.key)
    return context


@uv
async def test_tls_calls_share_one_verified_connection(pki: Pki) -> None:
    events, pss, port = Events(), TcpPss(), free_port(HOST)
    server = await asyncio.start_server(pss.handle, HOST, port, ssl=server_ssl(pki))
    try:
        async with running(settings(port, "tls", tls_ca=str(pki.ca)), events) as sip:
            for leg in ("L1", "L2"):
                sip.ua.invite(leg, "100", SDP, time.monotonic())
                sip.flush()
                await events.wait_for(LegAnswered)
            assert pss.connections == 1 and len(pss.invites) == 2
            assert pss.invites[0].top_via.transport == "TLS"
            assert str(pss.invites[0].headers.get("Contact")).endswith(";transport=tls>")
            [conn] = sip.connections.values()
            assert conn.transport is not None and conn.transport.get_extra_info("ssl_object") is not None
    finally:
        server.close()
        await server.wait_closed()


@uv
async def test_a_certificate_from_another_ca_fails_the_legs_and_is_logged_once(
    pki: Pki, other_pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    events, pss, port = Events(), TcpPss(), free_port(HOST)
    server = await asyncio.start_server(pss.handle, HOST, port, ssl=server_ssl(other_pki))
    caplog.set_level(logging.WARNING, "mss.sip")
    try:
        async with running(settings(port, "tls", tls_ca=str(pki.ca)), events) as sip:
            for leg in ("L1", "L2"):
                sip.ua.invite(leg, "100", SDP, time.monotonic())
                sip.flush()
                failed = await events.wait_for(LegFailed)
                assert isinstance(failed, LegFailed) and failed.status == 503
            assert pss.invites == []
    finally:
        server.close()
        await server.wait_closed()
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("TLS to")]
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"TLS to {HOST}:{port}: certificate verify failed: unable to get local issuer")


@uv
async def test_tls_verify_no_takes_any_certificate(pki: Pki, other_pki: Pki) -> None:
    events, pss, port = Events(), TcpPss(), free_port(HOST)
    server = await asyncio.start_server(pss.handle, HOST, port, ssl=server_ssl(other_pki))
    try:
        async with running(settings(port, "tls", tls_ca=str(pki.ca), tls_verify=False), events) as sip:
            sip.ua.invite("L1", "100", SDP, time.monotonic())
            sip.flush()
            await events.wait_for(LegAnswered)
    finally:
        server.close()
        await server.wait_closed()


@uv
async def test_the_pss_may_open_a_tls_connection_to_mss(pki: Pki) -> None:
    """With tls_cert/tls_key mss's SIP port speaks TLS: an OPTIONS from the PSS's address gets 200
    on a connection verified against the test CA (as 127.0.0.1)."""
    events = Events()
    s = settings(free_port(HOST), "tls", tls_ca=str(pki.ca), tls_cert=str(pki.cert), tls_key=str(pki.key))
    async with running(s, events):
        client = ssl.create_default_context(cafile=str(pki.ca))
        reader, writer = await asyncio.open_connection(HOST, s.local_port, ssl=client, server_hostname=HOST)
        try:
            options = (f"OPTIONS sip:mss@{HOST}:{s.local_port};transport=tls SIP/2.0\r\n"
                       f"Via: SIP/2.0/TLS {HOST}:5061;branch=z9hG4bKtls1\r\nFrom: <sip:pss@{HOST}>;tag=1\r\n"
                       f"To: <sip:mss@{HOST}>\r\nCall-ID: tls1\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\n"
                       "Content-Length: 0\r\n\r\n")  # fmt: skip
            writer.write(options.encode())
            async with asyncio.timeout(5):
                head = await reader.readuntil(b"\r\n\r\n")
            assert head.startswith(b"SIP/2.0 200 "), head
        finally:
            writer.close()


def _tls_in_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith("TLS from")]


async def _listener_failure(pki: Pki, caplog: pytest.LogCaptureFixture,
                            client: Callable[[int], Coroutine[Any, Any, None]]) -> list[str]:
    """Run ``client(port)`` against mss's TLS listener; the failure lines logged. The connection
    never becomes a stream of the UA, and a good client is served afterwards."""
    caplog.set_level(logging.WARNING, "mss.sip")
    s = settings(free_port(HOST), "tls", tls_ca=str(pki.ca), tls_cert=str(pki.cert), tls_key=str(pki.key))
    async with running(s, Events()) as sip:
        await client(s.local_port)
        async with asyncio.timeout(5):
            while sip.counters["tls_failed"] < 1:
                await asyncio.sleep(0.01)
        assert not sip.connections
        trusted = ssl.create_default_context(cafile=str(pki.ca))
        _reader, good = await asyncio.open_connection(HOST, s.local_port, ssl=trusted, server_hostname=HOST)
        async with asyncio.timeout(5):
            while not sip.connections:
                await asyncio.sleep(0.01)
        good.close()
        assert sip.counters["tls_failed"] == 1
    return _tls_in_lines(caplog)


@uv
async def test_a_pss_refusing_mss_certificate_is_logged_with_its_alert(
    pki: Pki, other_pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    async def distrusting(port: int) -> None:  # the openssl CLI sends its alert, as a PSS's TLS does
        done = await asyncio.create_subprocess_exec(
            "openssl", "s_client", "-connect", f"{HOST}:{port}", "-CAfile", str(other_pki.ca),
            "-verify_return_error", stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        async with asyncio.timeout(10):
            assert await done.wait() != 0

    lines = await _listener_failure(pki, caplog, distrusting)
    assert len(lines) == 1 and lines[0].startswith(f"TLS from {HOST}:"), lines
    assert lines[0].endswith(": handshake refused by the peer: unknown ca (TLSV1_ALERT_UNKNOWN_CA)"), lines


@uv
async def test_a_client_speaking_no_tls_is_logged(pki: Pki, caplog: pytest.LogCaptureFixture) -> None:
    async def plain(port: int) -> None:
        reader, writer = await asyncio.open_connection(HOST, port)
        writer.write(b"OPTIONS sip:mss@127.0.0.1 SIP/2.0\r\nContent-Length: 0\r\n\r\n")
        async with asyncio.timeout(5):
            await reader.read()  # mss answers with its alert and closes
        writer.close()

    lines = await _listener_failure(pki, caplog, plain)
    assert len(lines) == 1 and "handshake failed: " in lines[0], lines


@uv
async def test_a_client_closing_during_the_handshake_is_logged(
    pki: Pki, other_pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    async def gone(port: int) -> None:  # Python's client drops the connection without an alert
        distrust = ssl.create_default_context(cafile=str(other_pki.ca))
        with pytest.raises(ssl.SSLCertVerificationError):
            await asyncio.open_connection(HOST, port, ssl=distrust, server_hostname=HOST)

    lines = await _listener_failure(pki, caplog, gone)
    assert lines == [lines[0]] and lines[0].endswith(": closed during the handshake"), lines


@uv
async def test_a_silent_connection_on_the_listener_is_closed_after_the_handshake_time(
    pki: Pki, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mss.aio import sip_transport

    monkeypatch.setattr(sip_transport, "CONNECT_TIMEOUT", 0.3)
    caplog.set_level(logging.WARNING, "mss.sip")
    s = settings(free_port(HOST), "tls", tls_ca=str(pki.ca), tls_cert=str(pki.cert), tls_key=str(pki.key))
    async with running(s, Events()) as sip:
        reader, writer = await asyncio.open_connection(HOST, s.local_port)  # connects, says nothing
        async with asyncio.timeout(5):
            assert await reader.read() == b""  # closed by mss
        writer.close()
        assert sip.counters["tls_failed"] == 1 and not sip.connections
    assert _tls_in_lines(caplog) == [f"TLS from {HOST}:{writer.get_extra_info('sockname')[1]}: "
                                     "no handshake within 0.3s"]  # fmt: skip


@uv
async def test_without_a_certificate_mss_listens_for_no_stream() -> None:
    s = settings(free_port(HOST), "tls")
    async with running(s, Events()):
        with pytest.raises(OSError):
            await asyncio.open_connection(HOST, s.local_port)


@uv
async def test_a_certificate_for_another_address_is_refused(
    pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    """The certificate names 127.0.0.1; the PSS configured as 127.0.0.2 must not be taken for it."""
    other = "127.0.0.2"
    events, pss, port = Events(), TcpPss(), free_port(other)
    server = await asyncio.start_server(pss.handle, other, port, ssl=server_ssl(pki))
    caplog.set_level(logging.WARNING, "mss.sip")
    try:
        s = replace(settings(port, "tls", tls_ca=str(pki.ca)), pss_host=other, domain=other)
        async with running(s, events) as sip:
            sip.ua.invite("L1", "100", SDP, time.monotonic())
            sip.flush()
            failed = await events.wait_for(LegFailed)
            assert isinstance(failed, LegFailed) and failed.status == 503
    finally:
        server.close()
        await server.wait_closed()
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("TLS to")]
    assert lines == [f"TLS to {other}:{port}: certificate verify failed: IP address mismatch, certificate is "
                     f"not valid for '{other}'."]  # fmt: skip


def test_the_name_to_verify_is_the_configured_entry_not_the_srv_target() -> None:
    """RFC 5922 §4: an address reached through ``example.net``'s SRV record must show a certificate
    for ``example.net``; a literal entry is checked as that address; an unknown address as itself."""
    targets = TargetList.parse("192.0.2.1:5061, example.net, other.example.org:5061", transport="tls")
    answers = {
        DnsQuery("_sips._tcp.example.net", "SRV"): DnsAnswer(
            ttl=60, srv=(Srv(priority=10, weight=1, port=5061, target="a.example.net"),)
        ),
        DnsQuery("a.example.net", "A"): DnsAnswer(ttl=60, addresses=("192.0.2.2",)),
        DnsQuery("other.example.org", "A"): DnsAnswer(ttl=60, addresses=("192.0.2.3",)),
    }
    for query in targets.queries(0.0):
        targets.answer(query, answers[query], 0.0)
    for query in targets.queries(0.0):  # the SRV target's address, asked once the SRV is known
        targets.answer(query, answers[query], 0.0)
    lists = (None, targets)
    assert sip_tls.server_name(("192.0.2.1", 5061), lists) == "192.0.2.1"
    assert sip_tls.server_name(("192.0.2.2", 5061), lists) == "example.net"
    assert sip_tls.server_name(("192.0.2.3", 5061), lists) == "other.example.org"
    assert sip_tls.server_name(("192.0.2.9", 5061), lists) == "192.0.2.9"
