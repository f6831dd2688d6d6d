"""mss under systemd: the notify protocol (a real datagram socket the test binds), a real ``mss run``
telling it READY/RELOADING/STOPPING/WATCHDOG, SIGHUP re-reading the config, and the unit file checked
by ``systemd-analyze verify``."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from mss.aio.sdnotify import MAX_STATUS, Notifier
from mss_peers.net import free_port

ROOT = Path(__file__).parent.parent
UNIT = ROOT / "packaging" / "systemd" / "mss.service"

#: Seconds a test waits for one notification at most.
WAIT = 15.0


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[socket.socket]:
    """The service manager's end: a datagram socket bound at a path."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(tmp_path / "notify"))
    sock.settimeout(WAIT)
    yield sock
    sock.close()


def _fields(sock: socket.socket) -> dict[str, str]:
    data = sock.recv(4096).decode()
    return dict(line.split("=", 1) for line in data.split("\n"))


def test_notifications_reach_a_path_socket(listener: socket.socket) -> None:
    notifier = Notifier({"NOTIFY_SOCKET": listener.getsockname()})
    assert notifier.enabled
    assert notifier.ready("serving:\n 0 callbacks")
    assert _fields(listener) == {"READY": "1", "STATUS": "serving: 0 callbacks"}
    assert notifier.stopping("x" * 500)
    stopping = _fields(listener)
    assert stopping["STOPPING"] == "1" and len(stopping["STATUS"]) == MAX_STATUS
    assert notifier.reloading("re-reading")
    reloading = _fields(listener)
    assert reloading["RELOADING"] == "1" and int(reloading["MONOTONIC_USEC"]) > 0
    assert notifier.watchdog()
    assert _fields(listener) == {"WATCHDOG": "1"}
    notifier.close()


def test_an_abstract_socket_name() -> None:
    name = f"mss-test-{os.getpid()}-{time.monotonic_ns()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(WAIT)
        notifier = Notifier({"NOTIFY_SOCKET": "@" + name})
        assert notifier.status("hello")
        assert _fields(sock) == {"STATUS": "hello"}
        notifier.close()


def test_without_a_manager_nothing_is_sent(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    assert not Notifier({}).enabled and not Notifier({}).ready("x")
    relative = Notifier({"NOTIFY_SOCKET": "notify"})
    assert not relative.enabled and "neither a path nor an @abstract name" in caplog.text
    gone = Notifier({"NOTIFY_SOCKET": str(tmp_path / "nobody-listens")})
    with caplog.at_level(logging.WARNING):
        assert gone.ready("x") is False  # never raises
    assert "cannot notify the service manager" in caplog.text
    gone.close()


def test_watchdog_interval() -> None:
    me = str(os.getpid())
    assert Notifier({"WATCHDOG_USEC": "20000000"}).watchdog_interval == 10.0
    assert Notifier({"WATCHDOG_USEC": "20000000", "WATCHDOG_PID": me}).watchdog_interval == 10.0
    assert Notifier({"WATCHDOG_USEC": "20000000", "WATCHDOG_PID": "1"}).watchdog_interval is None
    assert Notifier({"WATCHDOG_USEC": "0"}).watchdog_interval is None
    assert Notifier({"WATCHDOG_USEC": "soon"}).watchdog_interval is None
    assert Notifier({}).watchdog_interval is None


# --- a real mss process ---------------------------------------------------------------------------


def _config(tmp_path: Path, level: str) -> Path:
    rtp = 16000 + (free_port() % 50) * 100
    path = tmp_path / "config.ini"
    path.write_text(
        "[callback]\nlisten_host = 127.0.0.1\n"
        f"listen_port = {free_port()}\nexternal_line_mode = no\ndefault_caller = 5550100\n"
        f"[sip]\nlocal_host = 127.0.0.1\nlocal_port = {free_port()}\npss_host = 127.0.0.1\n"
        f"pss_port = {free_port()}\n"
        f"[rtp]\nhost = 127.0.0.1\nport_min = {rtp}\nport_max = {rtp + 19}\n"
        "[peer_servers]\nas1 = 127.0.0.1\n[journal]\npath = journal.sqlite3\n"
        f"[log]\nlevel = {level}\n"
    )
    return path


def _until(sock: socket.socket, key: str) -> dict[str, str]:
    """The next notification carrying ``key`` (others, e.g. WATCHDOG=1 or STATUS=, are skipped)."""
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        fields = _fields(sock)
        if key in fields:
            return fields
    raise AssertionError(f"no {key} within {WAIT}s")


def test_mss_run_tells_systemd_ready_reloading_and_stopping(tmp_path: Path, listener: socket.socket) -> None:
    config = _config(tmp_path, "info")
    log = (tmp_path / "mss.log").open("wb")
    env = {**os.environ, "NOTIFY_SOCKET": listener.getsockname(), "WATCHDOG_USEC": "1000000",
           "WATCHDOG_PID": ""}
    process = subprocess.Popen([sys.executable, "-m", "mss", "run", "--config", str(config)],
                               cwd=tmp_path, env=env, stdout=log, stderr=log)
    log.close()
    try:
        ready = _until(listener, "READY")
        assert ready["STATUS"] == "serving: 0 callback(s) in progress"  # server-to-server: no line
        assert _until(listener, "WATCHDOG") == {"WATCHDOG": "1"}
        assert (tmp_path / "mss.sock").exists()

        config.write_text(config.read_text().replace("level = info", "level = debug")
                          .replace("[journal]\npath = journal.sqlite3", "[journal]\npath = other.sqlite3"))
        process.send_signal(signal.SIGHUP)
        assert _until(listener, "RELOADING")["RELOADING"] == "1"
        assert _until(listener, "READY")["READY"] == "1"

        process.send_signal(signal.SIGTERM)
        stopping = _until(listener, "STOPPING")
        assert stopping["STATUS"].startswith("draining: 0 callback(s)")
        assert process.wait(WAIT) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(5)
    text = (tmp_path / "mss.log").read_text()
    assert "SIGHUP: log level debug (was info)" in text
    assert "SIGHUP: [journal] changed in" in text and "takes effect after a restart" in text
    assert not (tmp_path / "mss.sock").exists()


def test_a_bad_config_on_sighup_changes_nothing(tmp_path: Path, listener: socket.socket) -> None:
    config = _config(tmp_path, "info")
    log = (tmp_path / "mss.log").open("wb")
    env = {**os.environ, "NOTIFY_SOCKET": listener.getsockname()}
    process = subprocess.Popen([sys.executable, "-m", "mss", "run", "--config", str(config)],
                               cwd=tmp_path, env=env, stdout=log, stderr=log)
    log.close()
    try:
        _until(listener, "READY")
        config.write_text(config.read_text().replace("level = info", "level = loud"))
        process.send_signal(signal.SIGHUP)
        _until(listener, "RELOADING")
        _until(listener, "READY")
        status = subprocess.run([sys.executable, "-m", "mss", "status", "--config", str(config)],
                                capture_output=True, text=True, timeout=30)
        # The file is invalid now, so the command refuses it; mss itself keeps running.
        assert status.returncode == 2 and "level" in status.stderr
        assert process.poll() is None
        process.send_signal(signal.SIGTERM)
        assert process.wait(WAIT) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(5)
    text = (tmp_path / "mss.log").read_text()
    assert f"SIGHUP: {config} not applied:" in text
    assert "DEBUG" not in text


# --- the unit file --------------------------------------------------------------------------------


def test_the_unit_file_verifies(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed (Debian package systemd)")
    text = UNIT.read_text()
    assert "Type=notify" in text and "ExecReload=/bin/kill -HUP $MAINPID" in text
    # The unit names where a production install puts mss; verify checks the command exists, so point
    # it at this environment's mss.
    mss = Path(sys.executable).parent / "mss"
    assert mss.exists(), "the mss command of this environment"
    unit = tmp_path / "mss.service"
    unit.write_text(text.replace("/opt/mss/bin/mss", str(mss)))
    done = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60)
    # verify exits 0 after some problems (an unknown directive, a bad value): any word from it is one.
    assert done.returncode == 0 and done.stderr.strip() == "" and done.stdout.strip() == "", done


def test_the_stop_timeout_covers_the_drain() -> None:
    from mss.aio.calls import CLOSE_WAIT
    from mss.aio.service import FLUSH_WAIT, RELEASE_WAIT
    from mss.config import CallbackConfig

    fields = dict(line.split("=", 1) for line in UNIT.read_text().splitlines() if "=" in line
                  and not line.startswith("#"))
    drain = CallbackConfig.__dataclass_fields__["drain_grace"].default
    assert isinstance(drain, int)
    assert int(fields["TimeoutStopSec"]) > drain + RELEASE_WAIT + FLUSH_WAIT + CLOSE_WAIT


def test_sighup_applies_peer_limits_to_the_next_requests(tmp_path: Path) -> None:
    """[peer.as1] max_rate added by a reload: REQUESTs beyond it get code=fail from then on, while
    the callbacks already taken go on."""
    from mss_peers.server import AsClient

    config = _config(tmp_path, "info")
    text = config.read_text().replace("external_line_mode = no", "external_line_mode = no\ndrain_grace = 0")
    config.write_text(text)
    iif_port = int(text.split("listen_port = ")[1].split("\n")[0])
    log = (tmp_path / "mss.log").open("wb")
    process = subprocess.Popen([sys.executable, "-m", "mss", "run", "--config", str(config)],
                               cwd=tmp_path, stdout=log, stderr=log)
    log.close()
    try:
        _wait_log(tmp_path / "mss.log", "mss ready")
        with AsClient(("127.0.0.1", iif_port)) as as1:
            before = [as1.request(f"b{n}", "100", "101", 60) for n in range(2)]
            config.write_text(text + "[peer.as1]\nmax_rate = 0.001\n")
            process.send_signal(signal.SIGHUP)
            _wait_log(tmp_path / "mss.log", "SIGHUP: peer limits now as1: max_calls -, max_rate 0.001/s")
            after = [as1.request(f"a{n}", "100", "101", 60) for n in range(2)]
        process.send_signal(signal.SIGTERM)
        assert process.wait(WAIT) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(5)
    assert before == ["ACK: id=b0;code=ok;", "ACK: id=b1;code=ok;"]
    assert after == ["ACK: id=a0;code=ok;", "ACK: id=a1;code=fail;"]  # a burst of one, then the rate
    assert "changed in" not in (tmp_path / "mss.log").read_text()  # nothing left for a restart


def _wait_log(path: Path, needle: str) -> None:
    deadline = time.monotonic() + WAIT
    while needle not in path.read_text(errors="replace"):
        if time.monotonic() > deadline:
            raise AssertionError(f"no {needle!r} in the log within {WAIT}s:\n{path.read_text()}")
        time.sleep(0.02)
