"""/metrics and /healthz: the families read from the desk, the HTTP responder on a real socket, and the
SIP message kinds. The whole path with real callbacks is tests/e2e/test_operations.py."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from prometheus_client.parser import text_string_to_metric_families

from mss.aio import metrics as metrics_module
from mss.aio.metrics import DROP_REASONS, MAX_CONNECTIONS, MAX_REQUEST, RESULTS, MetricsServer, ServiceView
from mss.errors import IIFError
from mss.iif import CallbackRequest, Cancel
from mss.sipkind import KINDS, METHODS, message_kind
from tests.test_desk import Harness

T = TypeVar("T")

FAMILIES = {
    "mss_callbacks": "counter", "mss_callbacks_active": "gauge", "mss_iif_messages": "counter",
    "mss_sip_messages": "counter", "mss_registration_up": "gauge", "mss_relay_packets": "counter",
    "mss_relay_bytes": "counter", "mss_relay_drops": "counter", "mss_relay_sessions_active": "gauge",
    "mss_callback_setup_seconds": "histogram", "mss_loop_lag_seconds": "histogram",
}


class State:
    """What the service would expose: a real desk (test_desk's harness), a drain flag."""

    def __init__(self, harness: Harness, *, external_line: bool = False) -> None:
        self.harness = harness
        self.draining = False
        self.ready = True
        self.view = ServiceView(desk=lambda: harness.desk, engine=lambda: None,
                                draining=lambda: self.draining, ready=lambda: self.ready,
                                external_line=external_line, peers=("as1", "as2"))


@pytest.fixture
def h(tmp_path: Path) -> Iterator[Harness]:
    harness = Harness(tmp_path / "journal.sqlite3")
    yield harness
    harness.journal.close()


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_every_family_of_the_spec_with_its_type(h: Harness) -> None:
    server = MetricsServer(State(h).view)
    families = {f.name: f.type for f in text_string_to_metric_families(server.render().decode())}
    assert {name: kind for name, kind in families.items() if name.startswith("mss_")} == FAMILIES
    assert {"process_cpu_seconds", "process_resident_memory_bytes", "process_open_fds"} <= set(families)
    samples = _samples(server.render().decode())
    for result in RESULTS:  # every result exists from the start, at 0
        assert samples["mss_callbacks_total", (("result", result),)] == 0
    for reason in DROP_REASONS:
        assert samples["mss_relay_drops_total", (("reason", reason),)] == 0
    assert set(DROP_REASONS) == {"short", "malformed", "source", "learning", "no_remote", "disabled", "send"}
    # Server-to-server mode: no registration to report.
    assert not any(name == "mss_registration_up" for name, _ in samples)


def test_desk_counts_become_iif_and_callback_samples(h: Harness) -> None:
    state = State(h)
    server = MetricsServer(state.view)
    as1 = h.connect("as1")
    h.send(as1, CallbackRequest(id="a", user1="1", user2="2", duration=5),
           CallbackRequest(id="b", user1="1", user2="2", duration=5))
    h.send(as1, CallbackRequest(id="a", user1="1", user2="2", duration=5))  # duplicate: fail
    h.send(as1, IIFError("missing user2", iif_id="c"))  # unreadable as a REQUEST: invalid
    h.send(as1, Cancel(id="b"), Cancel(id="zz"))  # one taken, one unknown
    h.engine.finish("a", real_duration=3, result="answered")
    h.engine.finish("b", result="cancelled")
    h.engine.reason = "the external line is not registered"
    as2 = h.connect("as2")
    h.send(as2, CallbackRequest(id="d", user1="1", user2="2", duration=5))  # refused by the engine
    server.setup_seconds.observe(2.5)  # what desk.on_bridged feeds in the service

    samples = _samples(server.render().decode())

    def iif(peer: str, method: str, code: str) -> float:
        labels = (("code", code), ("method", method), ("peer", peer))
        return samples.get(("mss_iif_messages_total", labels), -1)

    assert iif("as1", "REQUEST", "ok") == 2
    assert iif("as1", "REQUEST", "fail") == 1
    assert iif("as1", "invalid", "fail") == 1
    assert iif("as1", "CANCEL", "ok") == 1
    assert iif("as1", "CANCEL", "fail") == 1
    assert iif("as2", "REQUEST", "ok") == 0 and iif("as2", "REQUEST", "fail") == 1
    assert samples["mss_callbacks_total", (("result", "answered"),)] == 1
    assert samples["mss_callbacks_total", (("result", "cancelled"),)] == 1
    assert samples["mss_callbacks_active", ()] == 0
    assert samples["mss_callback_setup_seconds_count", ()] == 1


def test_the_desk_reports_each_bridge_with_its_setup_time(h: Harness) -> None:
    seen: list[float] = []
    h.desk.on_bridged = seen.append
    as1 = h.connect("as1")
    h.send(as1, CallbackRequest(id="a", user1="1", user2="2", duration=5))
    h.clock.advance(4.25)
    (callback,) = h.desk.active.values()
    h.desk.bridged(callback.seq)
    assert seen == [pytest.approx(4.25)]


def test_health(h: Harness) -> None:
    state = State(h)
    state.ready = False
    assert metrics_module.health(state.view) == (503, "starting")
    state.ready = True
    assert metrics_module.health(state.view) == (200, "ok")
    state.draining = True
    assert metrics_module.health(state.view) == (503, "draining")
    line = State(h, external_line=True)  # no engine has registered the line
    assert metrics_module.health(line.view) == (503, "external line not registered")


# --- HTTP on a real socket ----------------------------------------------------------------------


def _serve(state: State, body: Callable[[int], Awaitable[T]]) -> T:
    async def main() -> T:
        server = MetricsServer(state.view)
        await server.start("127.0.0.1", 0)
        try:
            return await body(server.address[1])
        finally:
            await server.close()

    return asyncio.run(main())


async def _http(port: int, data: bytes, *, eof: bool = True) -> tuple[int, dict[str, str], bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    if eof:
        writer.write_eof()
    raw = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *lines = head.decode().split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    return int(status_line.split()[1]), headers, body


def _get(path: str, method: str = "GET") -> bytes:
    return f"{method} {path} HTTP/1.1\r\nHost: mss\r\n\r\n".encode()


def test_http_answers(h: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(metrics_module, "REQUEST_TIMEOUT", 0.2)
    state = State(h)

    async def body(port: int) -> dict[str, Any]:
        out: dict[str, Any] = {}
        out["metrics"] = await _http(port, _get("/metrics?x=1"))
        out["head"] = await _http(port, _get("/metrics", "HEAD"))
        out["health"] = await _http(port, _get("/healthz"))
        state.draining = True
        out["draining"] = await _http(port, _get("/healthz"))
        out["404"] = await _http(port, _get("/"))
        out["405"] = await _http(port, _get("/metrics", "POST"))
        out["400"] = await _http(port, b"hello\r\n\r\n")
        out["431"] = await _http(port, b"GET /metrics HTTP/1.1\r\nX: " + b"y" * MAX_REQUEST + b"\r\n\r\n")
        out["408"] = await _http(port, b"GET /metrics HTTP/1.1\r\n", eof=False)
        out["cut"] = await _http(port, b"GET /metrics HTTP/1.1\r\n")
        return out

    out = _serve(state, body)
    status, headers, text = out["metrics"]
    assert status == 200 and headers["content-type"].startswith("text/plain; version=")
    assert int(headers["content-length"]) == len(text) and headers["connection"] == "close"
    assert set(FAMILIES) <= {f.name for f in text_string_to_metric_families(text.decode())}
    status, headers, empty = out["head"]
    assert status == 200 and empty == b"" and int(headers["content-length"]) > 0
    assert out["health"][0] == 200 and out["health"][2] == b"ok\n"
    assert out["draining"][0] == 503 and out["draining"][2] == b"draining\n"
    assert out["404"][0] == 404
    assert out["405"][0] == 405 and out["405"][1]["allow"] == "GET, HEAD"
    assert out["400"][0] == 400
    assert out["431"][0] == 431
    assert out["408"][0] == 408
    assert out["cut"][0] == 400


def test_connections_beyond_the_bound_are_closed(h: Harness) -> None:
    async def body(port: int) -> tuple[bytes, int]:
        idle = [await asyncio.open_connection("127.0.0.1", port) for _ in range(MAX_CONNECTIONS)]
        await asyncio.sleep(0.1)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        refused = await asyncio.wait_for(reader.read(), 10)
        writer.close()
        for _, w in idle:
            w.close()
        await asyncio.sleep(0.1)
        status, _, _ = await _http(port, _get("/healthz"))
        return refused, status

    refused, status = _serve(State(h), body)
    assert refused == b""
    assert status == 200


def test_listen_failure_is_a_clear_error(h: Harness) -> None:
    async def main() -> str:
        first = MetricsServer(State(h).view)
        await first.start("127.0.0.1", 0)
        try:
            second = MetricsServer(State(h).view)
            with pytest.raises(Exception) as caught:
                await second.start("127.0.0.1", first.address[1])
            return str(caught.value)
        finally:
            await first.close()

    assert "[metrics] listen: cannot listen on 127.0.0.1:" in asyncio.run(main())


# --- SIP message kinds ----------------------------------------------------------------------------


@pytest.mark.parametrize(("data", "kind"), [
    (b"INVITE sip:100@pss SIP/2.0\r\n", "INVITE"),
    (b"ACK sip:100@pss SIP/2.0\r\n", "ACK"),
    (b"REGISTER sip:pss SIP/2.0\r\n", "REGISTER"),
    (b"SIP/2.0 100 Trying\r\n", "1xx"),
    (b"SIP/2.0 200 OK\r\n", "2xx"),
    (b"SIP/2.0 407 Proxy Authentication Required\r\n", "4xx"),
    (b"SIP/2.0 603 Decline\r\n", "6xx"),
    (b"SIP/2.0 999 Odd\r\n", "other"),
    (b"PUBLISH sip:x SIP/2.0\r\n", "other"),
    (b"PUB", "other"),
    (b"invite sip:x SIP/2.0\r\n", "other"),
    (b"", "other"),
    (b" INVITE", "other"),
])
def test_message_kinds_are_bounded(data: bytes, kind: str) -> None:
    assert message_kind(data) == kind
    assert kind in KINDS


def test_every_method_is_told_by_its_first_four_bytes() -> None:
    assert len({(m + " ")[:4] for m in METHODS}) == len(METHODS)
    for method in METHODS:
        assert message_kind(f"{method} sip:x SIP/2.0\r\n".encode()) == method


def test_a_real_mss_answers_503_while_it_drains(tmp_path: Path) -> None:
    """``mss run`` with a callback in progress (its PSS swallows the INVITE): after SIGTERM /healthz
    says 503 draining and ``mss status`` says draining, until the drain ends."""
    import json
    import signal
    import socket
    import subprocess
    import sys
    import urllib.error
    import urllib.request

    from mss_peers.net import free_port, wait_until
    from mss_peers.server import AsClient

    pss = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # a PSS that never answers
    pss.bind(("127.0.0.1", 0))
    ports = {name: free_port() for name in ("iif", "sip", "metrics")}
    config = tmp_path / "config.ini"
    config.write_text(
        f"[callback]\nlisten_port = {ports['iif']}\nexternal_line_mode = no\ndefault_caller = 5550100\n"
        "drain_grace = 30\n"
        f"[sip]\nlocal_port = {ports['sip']}\npss_host = 127.0.0.1\npss_port = {pss.getsockname()[1]}\n"
        "[rtp]\nport_min = 16940\nport_max = 16959\n[peer_servers]\nas1 = 127.0.0.1\n"
        f"[journal]\npath = journal.sqlite3\n[metrics]\nlisten = 127.0.0.1:{ports['metrics']}\n"
    )

    def health() -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{ports['metrics']}/healthz", timeout=5) as answer:
                return int(answer.status), answer.read()
        except urllib.error.HTTPError as exc:
            return int(exc.code), exc.read()
        except OSError:
            return 0, b""

    def status() -> dict[str, Any]:
        done = subprocess.run([sys.executable, "-m", "mss", "status", "--json", "--config", str(config)],
                              capture_output=True, text=True, timeout=30)
        return dict(json.loads(done.stdout))

    log = (tmp_path / "mss.log").open("wb")
    process = subprocess.Popen([sys.executable, "-m", "mss", "run", "--config", str(config)],
                               cwd=tmp_path, stdout=log, stderr=log)
    log.close()
    try:
        wait_until(lambda: health()[0] == 200, 15.0)
        with AsClient(("127.0.0.1", ports["iif"])) as as1:
            assert as1.request("d1", "100", "101", 60) == "ACK: id=d1;code=ok;"
            pss.settimeout(10)
            assert pss.recv(65536).startswith(b"INVITE ")  # the callback is in progress
            process.send_signal(signal.SIGTERM)
            wait_until(lambda: health() == (503, b"draining\n"), 10.0)
            assert status()["state"] == "draining" and status()["calls"] == 1
    finally:
        process.kill()
        process.wait(10)
        pss.close()
