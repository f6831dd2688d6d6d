"""A real ``mss run`` with ``[callback] workers = 2`` (server-to-server, no PSS needed to start): the
supervisor under a service manager (a datagram socket the test binds), its control socket, each
worker's metrics port, SIGHUP passed on, a stuck worker killed by the watchdog and started again,
SIGTERM."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from mss_peers.net import free_port

#: Seconds a test waits for one notification or log line at most.
WAIT = 20.0


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[socket.socket]:
    """The service manager's end: a datagram socket bound at a path."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(tmp_path / "notify"))
    sock.settimeout(WAIT)
    yield sock
    sock.close()


def _until(sock: socket.socket, key: str) -> dict[str, str]:
    """The next notification carrying ``key``."""
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        data = sock.recv(4096).decode()
        fields = dict(line.split("=", 1) for line in data.split("\n"))
        if key in fields:
            return fields
    raise AssertionError(f"no {key} within {WAIT}s")


def _config(tmp_path: Path, metrics: int) -> Path:
    rtp = 16000 + (free_port() % 50) * 100
    sip = free_port()
    path = tmp_path / "config.ini"
    path.write_text(
        "[callback]\nlisten_host = 127.0.0.1\n"
        f"listen_port = {free_port()}\nexternal_line_mode = no\ndefault_caller = 5550100\nworkers = 2\n"
        f"[sip]\nlocal_host = 127.0.0.1\nlocal_port = {sip}\npss_host = 127.0.0.1\npss_port = {free_port()}\n"
        f"[rtp]\nhost = 127.0.0.1\nport_min = {rtp}\nport_max = {rtp + 39}\nkernel_forwarding = no\n"
        "[peer_servers]\nas1 = 127.0.0.1\n[journal]\npath = journal.sqlite3\n"
        f"[metrics]\nlisten = 127.0.0.1:{metrics}\n[log]\nlevel = info\n"
    )
    return path


def _wait_log(path: Path, pattern: str) -> re.Match[str]:
    deadline = time.monotonic() + WAIT
    while True:
        found = re.search(pattern, path.read_text(errors="replace"))
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"no {pattern!r} in the log within {WAIT}s:\n{path.read_text()}")
        time.sleep(0.02)


def _mss(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mss", *args, "--config", str(config)],
                          capture_output=True, text=True, timeout=30, check=False)


def _healthz(port: int) -> int:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as answer:
        status: int = answer.status
        return status


def test_the_supervisor_under_a_service_manager(tmp_path: Path, listener: socket.socket) -> None:
    metrics = free_port()
    config = _config(tmp_path, metrics)
    log_path = tmp_path / "mss.log"
    log = log_path.open("wb")
    env = {**os.environ, "NOTIFY_SOCKET": listener.getsockname(), "WATCHDOG_USEC": "1000000",
           "WATCHDOG_PID": ""}
    process = subprocess.Popen([sys.executable, "-m", "mss", "run", "--config", str(config)],
                               cwd=tmp_path, env=env, stdout=log, stderr=log)
    log.close()
    try:
        ready = _until(listener, "READY")
        assert ready["STATUS"] == "serving: 2 workers"
        text = log_path.read_text()
        assert "worker 0 ready" in text and "worker 1 ready" in text  # both before READY=1
        assert _until(listener, "WATCHDOG") == {"WATCHDOG": "1"}
        # Each worker serves /metrics on its own port; the control socket sums them up.
        assert _healthz(metrics) == 200 and _healthz(metrics + 1) == 200
        status = json.loads(_mss(config, "status", "--json").stdout)
        assert status["state"] == "serving" and status["pid"] == process.pid
        assert [(w["worker"], w["state"]) for w in status["workers"]] == [(0, "serving"), (1, "serving")]
        assert status["max_calls"] == 2000 and status["registration"] == "n/a"
        assert json.loads(_mss(config, "calls", "--json").stdout) == []
        hangup = _mss(config, "hangup", "nosuch")
        assert hangup.returncode == 1 and "no callback nosuch in progress" in hangup.stderr
        # SIGHUP reaches both workers.
        process.send_signal(signal.SIGHUP)
        _wait_log(log_path, r"worker=0 mss: SIGHUP: \S+ re-read")
        _wait_log(log_path, r"worker=1 mss: SIGHUP: \S+ re-read")
        # A worker whose loop stops: no WATCHDOG=1 for WatchdogSec, killed and started again.
        stuck = int(re.findall(r"worker 1 started \(pid (\d+)\)", log_path.read_text())[-1])
        os.kill(stuck, signal.SIGSTOP)
        _wait_log(log_path, rf"worker 1 \(pid {stuck}\) sent no WATCHDOG=1 for \d+s: its loop is stuck")
        _wait_log(log_path, rf"worker 1 \(pid {stuck}\) killed by SIGKILL")
        _wait_log(log_path, r"worker 1 started \(pid (?!{stuck}\))\d+\)".replace("{stuck}", str(stuck)))
        _wait_log(log_path, r"(?s)worker 1 ready.*worker 1 ready")
        # SIGTERM: both drain, STOPPING=1 goes out, exit 0, the control sockets are gone.
        process.send_signal(signal.SIGTERM)
        assert _until(listener, "STOPPING")["STATUS"] == "draining"
        assert process.wait(WAIT) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(5)
    text = log_path.read_text()
    assert "worker=0 mss: mss stopped" in text and "worker=1 mss: mss stopped" in text
    assert not list(tmp_path.glob("mss.sock*"))


def test_a_worker_number_beyond_workers_is_refused(tmp_path: Path) -> None:
    config = _config(tmp_path, free_port())
    done = subprocess.run([sys.executable, "-m", "mss", "run", "--config", str(config), "--worker", "2"],
                          capture_output=True, text=True, timeout=30, check=False)
    assert done.returncode == 2
    assert "--worker 2: [callback] workers = 2" in done.stderr


def test_a_worker_that_cannot_start_stops_mss(tmp_path: Path) -> None:
    config = _config(tmp_path, free_port())
    sip = int(re.search(r"local_port = (\d+)", config.read_text()).group(1))  # type: ignore[union-attr]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", sip + 1))  # worker 1's SIP port
        done = subprocess.run([sys.executable, "-m", "mss", "run", "--config", str(config)], cwd=tmp_path,
                              capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 1, done.stderr
    assert re.search(r"worker 1 \(pid \d+\) could not start \(exit status 1\); stopping mss", done.stderr)
    assert "mss.supervisor: mss stopped" in done.stderr  # worker 0 stopped too, however far it got
    assert not list(tmp_path.glob("mss.sock*"))
