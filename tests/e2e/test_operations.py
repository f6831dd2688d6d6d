"""Operations end to end: a real mss with Kamailio and two phones, watched through /metrics and
driven with ``mss status``, ``mss calls`` and ``mss hangup`` as an operator runs them.

One test, two callbacks (one ends by its duration, one is hung up from the control socket) and a
refused CANCEL; then the scrape, parsed with prometheus_client's own parser, must count exactly
those.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from mss_peers.kamailio import Kamailio
from mss_peers.net import wait_until
from mss_peers.phone import Phone
from mss_peers.server import MssServer

pytestmark = pytest.mark.e2e


def _mss(server: MssServer, *args: str) -> subprocess.CompletedProcess[str]:
    """Run ``mss ARGS --config <its config>`` as an operator would."""
    return subprocess.run([sys.executable, "-m", "mss", *args, "--config", str(server.config_path)],
                          capture_output=True, text=True, timeout=30)


def _scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of /metrics by (name, sorted labels), read with prometheus_client's parser."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
        text = answer.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def _notification(sock: socket.socket, field: str) -> str:
    """The first notification carrying ``field`` (bounded: a few STATUS lines come first at most)."""
    for _ in range(20):
        text = sock.recv(4096).decode()
        if field in text.split("\n"):
            return text
    raise AssertionError(f"no {field} among 20 notifications")


def _health(port: int) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def test_metrics_status_calls_and_hangup(
    kamailio: Callable[..., Kamailio], phone: Callable[..., Phone], mss: Callable[..., MssServer],
    free_port: Callable[..., int], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    pss = kamailio("auth", users={"100": "pw100", "101": "pw101"}, mss=("127.0.0.1", free_port()))
    p1 = phone("100", pss, tone_hz=440.0)
    p2 = phone("101", pss, tone_hz=1000.0)
    port = free_port()
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as manager:  # systemd's end of sd_notify
        manager.bind(str(tmp_path / "notify"))
        manager.settimeout(15)
        monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "notify"))
        server = mss(pss, extra=f"[metrics]\nlisten = 127.0.0.1:{port}")
        monkeypatch.delenv("NOTIFY_SOCKET")
        # READY=1 waits for the first REGISTER's answer: its status line says the line is registered.
        ready = _notification(manager, "READY=1")
    assert "STATUS=serving: 0 callback(s) in progress, line registered" in ready
    server.wait_log("external line registered")
    wait_until(lambda: _health(port) == 200, 5.0)

    status = _mss(server, "status", "--json")
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["registration"] == "registered"

    with server.client() as as1:
        # 1: ends by its duration.
        assert as1.request("op1", "100", "101", 2) == "ACK: id=op1;code=ok;"
        assert as1.response("op1", timeout=20)["result"] == "answered"
        p1.wait_event("disconnected", timeout=10)
        p2.wait_event("disconnected", timeout=10)

        # 2: listed while it is bridged, then hung up from the control socket.
        mark1, mark2 = p1.mark(), p2.mark()
        assert as1.request("op2", "100", "101", 60) == "ACK: id=op2;code=ok;"
        p2.wait_event("confirmed", timeout=15)

        def listed_with_audio() -> dict[str, Any] | None:
            done = _mss(server, "calls", "--json")
            assert done.returncode == 0, done.stderr
            calls = {c["id"]: c for c in json.loads(done.stdout)}
            call = calls.get("op2")
            if call and call["state"] == "bridged" and call["packets_from_user1"] > 0 \
                    and call["packets_from_user2"] > 0 and call["packets_to_user2"] > 0:
                return call
            return None

        call = wait_until(listed_with_audio, 10.0)
        assert call["peer"] == "as1" and (call["user1"], call["user2"]) == ("100", "101")
        low, high = server.rtp_range
        assert all(low <= p <= high for p in call["ports"])
        table = _mss(server, "calls")
        assert table.returncode == 0 and "op2" in table.stdout and "bridged" in table.stdout, table

        hung = _mss(server, "hangup", "op2")
        assert hung.returncode == 0, hung.stderr
        assert as1.response("op2", timeout=10)["result"] == "cancelled"
        p1.wait_event("disconnected", timeout=10, since=mark1)
        p2.wait_event("disconnected", timeout=10, since=mark2)
        again = _mss(server, "hangup", "op2")
        assert again.returncode == 1 and "no callback op2 in progress" in again.stderr

        # A CANCEL of nothing: refused.
        assert as1.cancel("op9") == "ACK: id=op9;code=fail;"

    samples = _scrape(port)

    def value(name: str, **labels: str) -> float:
        return samples[name, tuple(sorted(labels.items()))]

    assert value("mss_callbacks_total", result="answered") == 1
    assert value("mss_callbacks_total", result="cancelled") == 1
    assert sum(v for (name, _), v in samples.items() if name == "mss_callbacks_total") == 2
    assert value("mss_callbacks_active") == 0
    assert value("mss_iif_messages_total", peer="as1", method="REQUEST", code="ok") == 2
    assert value("mss_iif_messages_total", peer="as1", method="REQUEST", code="fail") == 0
    assert value("mss_iif_messages_total", peer="as1", method="CANCEL", code="fail") == 1
    assert value("mss_registration_up") == 1
    # Each leg's INVITE is challenged once (407) and sent again: 4 INVITEs a callback at least.
    assert value("mss_sip_messages_total", direction="out", kind="INVITE") >= 8
    assert value("mss_sip_messages_total", direction="out", kind="REGISTER") >= 1
    assert value("mss_sip_messages_total", direction="in", kind="2xx") >= 5
    # Both callbacks are over: the relay's totals come from the closed sessions' running sum.
    assert value("mss_relay_sessions_active") == 0
    assert value("mss_relay_packets_total", direction="in") > 100
    assert value("mss_relay_packets_total", direction="out") > 100
    assert value("mss_relay_bytes_total", direction="in") > value("mss_relay_packets_total", direction="in")
    assert value("mss_callback_setup_seconds_count") == 2
    assert 0 < value("mss_callback_setup_seconds_sum") < 30
    assert value("mss_loop_lag_seconds_count") > 0
    assert _health(port) == 200

    # The process's own view agrees; at exit the control socket goes, and the commands say so.
    status = _mss(server, "status", "--json")
    assert json.loads(status.stdout)["calls"] == 0
    assert server.stop() == 0
    assert not (server.workdir / "mss.sock").exists()
    gone = _mss(server, "status")
    assert gone.returncode == 1 and "mss is not running" in gone.stderr


def test_a_refused_line_is_ready_but_unhealthy(
    kamailio: Callable[..., Kamailio], mss: Callable[..., MssServer], free_port: Callable[..., int],
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The PSS refuses the line's password: systemd still hears READY=1 once that first REGISTER is
    answered, while /healthz, the registration gauge and mss status say the line is down."""
    pss = kamailio("auth", users={"100": "pw100"}, mss=("127.0.0.1", free_port()))
    port = free_port()
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as manager:
        manager.bind(str(tmp_path / "notify"))
        manager.settimeout(15)
        monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "notify"))
        server = mss(pss, external_line=("mss", "not-the-password"),
                     extra=f"[metrics]\nlisten = 127.0.0.1:{port}")
        monkeypatch.delenv("NOTIFY_SOCKET")
        ready = _notification(manager, "READY=1")
    assert "STATUS=serving: 0 callback(s) in progress, line not registered" in ready
    assert _health(port) == 503
    assert _scrape(port)["mss_registration_up", ()] == 0
    status = _mss(server, "status", "--json")
    assert json.loads(status.stdout)["registration"] == "not registered"
