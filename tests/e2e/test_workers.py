"""Workers: two mss processes under one ``mss run`` (real processes), Kamailio and phones.

The kernel spreads the AS's connections over the workers (SO_REUSEPORT): a test learns which worker
took a connection from the log line of a REQUEST taken there (``worker=i ... callback ID taken``),
ordering cheap probe callbacks (user1 unknown to Kamailio: a 404, a RESPONSE at once) on new
connections until it holds one connection on each worker.
"""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from mss_peers.kamailio import Kamailio
from mss_peers.net import free_port
from mss_peers.phone import Phone
from mss_peers.server import AsClient, MssServer

pytestmark = pytest.mark.e2e

#: Connections tried at most to find one on each worker (each lands on worker 0 or 1 by a hash:
#: all 24 on one worker has a chance of 2^-23).
MAX_PROBES = 24


def _setup(
    tmp_path: Path, kamailio: Callable[..., Kamailio], phone: Callable[..., Phone],
    add_peer: Callable[[Any], None], kernel_forwarding: str = "no",
) -> tuple[MssServer, list[Phone]]:
    users = ("100", "101")
    pss = kamailio("auth", users={u: f"pw{u}" for u in users})
    phones = [phone(u, pss, tone_hz=440 + 100 * i) for i, u in enumerate(users)]
    server = MssServer(tmp_path / "mss", pss=pss.address, callback={"workers": 2, "drain_grace": 3},
                       rtp={"kernel_forwarding": kernel_forwarding})
    add_peer(server)
    server.start(timeout=40)  # every worker's first REGISTER answered
    return server, phones


def _taken_by(server: MssServer, cb_id: str) -> int:
    """The worker whose log says it took callback ``cb_id``."""
    match = server.wait_log(rf"worker=(\d) mss\.desk: as1: callback {re.escape(cb_id)} taken")
    return int(match.group(1))


def _one_per_worker(server: MssServer) -> tuple[dict[int, AsClient], dict[int, int]]:
    """A proven connection on each worker (a probe REQUEST taken there, its RESPONSE read), and the
    source port of each (connecting from it again lands on that worker: the kernel hashes the
    addresses and ports)."""
    held: dict[int, AsClient] = {}
    ports: dict[int, int] = {}
    for n in range(MAX_PROBES):
        port = free_port()
        client = AsClient(("127.0.0.1", server.iif_port), source_port=port)
        cb_id = f"probe{n}"
        assert client.request(cb_id, "999", "101", 5) == f"ACK: id={cb_id};code=ok;"
        assert client.response(cb_id, timeout=10)["result"] == "user1_failed"
        worker = _taken_by(server, cb_id)
        if worker in held:
            client.close()
        else:
            held[worker], ports[worker] = client, port
        if len(held) == 2:
            return held, ports
    raise AssertionError(f"{MAX_PROBES} connections all landed on worker {list(held)}")


def _worker_pid(server: MssServer, worker: int) -> int:
    starts = re.findall(rf"worker {worker} started \(pid (\d+)\)", server.log_text())
    return int(starts[-1])


def _delivered_at(server: MssServer, cb_id: str) -> float | None:
    """When the RESPONSE of ``cb_id`` was recorded delivered, once committed: a delivery mark goes
    with the journal's next commit, within a second (the heartbeat's at the latest)."""
    deadline = time.monotonic() + 3.0
    while True:
        with sqlite3.connect(server.workdir / "journal.sqlite3") as db:
            row = db.execute("SELECT delivered_at FROM responses WHERE id = ?", (cb_id,)).fetchone()
        assert row is not None, f"no RESPONSE of {cb_id} in the journal"
        if row[0] is not None or time.monotonic() > deadline:
            return row[0] if row[0] is None else float(row[0])
        time.sleep(0.05)


def _mss_json(server: MssServer, command: str) -> Any:
    """``mss status --json`` (or ``calls``), as an operator runs it."""
    argv = [sys.executable, "-m", "mss", command, "--json", "--config", str(server.config_path)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=True)
    return json.loads(done.stdout)


def _no_more_lines(clients: list[AsClient], cb_id: str, wait: float) -> None:
    """Nothing more about ``cb_id`` arrives on any of ``clients`` within ``wait`` seconds."""
    for client in clients:
        with pytest.raises(AssertionError, match="no line matching"):
            client.wait_line(rf"^RESPONSE: id={re.escape(cb_id)};", wait)
    assert not any(f"id={cb_id};" in line for c in clients for line in c.lines)


def test_two_workers_take_callbacks_and_hand_kept_responses_to_each_other(
    add_peer: Callable[[Any], None], tmp_path: Path, kamailio: Callable[..., Kamailio],
    phone: Callable[..., Phone],
) -> None:
    # Each worker's relay attaches its own kernel fast path where the kernel allows it (auto).
    server, (p1, p2) = _setup(tmp_path, kamailio, phone, add_peer, kernel_forwarding="auto")
    try:
        held, ports = _one_per_worker(server)
        # A whole callback on each worker, on the connection it came on.
        for worker, client in sorted(held.items()):
            cb_id = f"call{worker}"
            assert client.request(cb_id, "100", "101", 1) == f"ACK: id={cb_id};code=ok;"
            assert _taken_by(server, cb_id) == worker
            response = client.response(cb_id, timeout=20)
            assert response["result"] == "answered", response
            assert int(response["real_duration"]) == 1
        # A RESPONSE worker 0 keeps (the AS has no connection left) goes out once, through worker 1,
        # on the AS's next connection: opened from worker 1's source port again, it lands there.
        keeper, other = held[0], held[1]
        other.close()
        assert keeper.request("kept", "100", "101", 1) == "ACK: id=kept;code=ok;"
        p1.wait_event("confirmed", timeout=10)
        keeper.close()
        server.wait_log(r"worker=0 mss\.desk: callback kept: peer as1 not connected", timeout=15)
        other = AsClient(("127.0.0.1", server.iif_port), source_port=ports[1])
        other.send("CANCEL: id=hello;")  # the AS speaks first on it: a proven connection
        response = other.response("kept", timeout=15)
        assert response["result"] == "answered"
        server.wait_log(r"worker=1 mss\.desk: delivered 1 kept RESPONSE\(s\) to peer as1")
        assert _delivered_at(server, "kept") is not None
        late = server.client()  # a connection opened afterwards is owed nothing
        _no_more_lines([other, late], "kept", 2.0)
        late.close()
        # mss status sums the workers up through the supervisor's control socket.
        status = _mss_json(server, "status")
        assert status["state"] == "serving" and status["registration"] == "registered"
        assert [w["worker"] for w in status["workers"]] == [0, 1]
        assert status["max_calls"] == sum(w["max_calls"] for w in status["workers"])
        # SIGTERM: both workers drain, a callback in progress gets its RESPONSE, mss exits 0.
        assert other.request("drained", "100", "101", 60) == "ACK: id=drained;code=ok;"
        p2.wait_event("confirmed", timeout=10)
        calls = _mss_json(server, "calls")  # every worker's callbacks, through the supervisor
        assert [(c["id"], c["worker"], c["state"]) for c in calls] == [("drained", 1, "bridged")]
        assert server.process is not None
        server.process.send_signal(signal.SIGTERM)
        response = other.response("drained", timeout=15)
        assert response["result"] == "shutdown"
        assert server.process.wait(20) == 0
    finally:
        server.stop()
    log = server.log_text()
    for worker in (0, 1):
        assert f"worker={worker} mss: stopping: no new requests" in log
        assert f"worker={worker} mss: mss stopped" in log
    assert "mss.supervisor: mss stopped" in log


def test_a_worker_killed_mid_call_is_restarted_and_its_callback_answered_once(
    add_peer: Callable[[Any], None], tmp_path: Path, kamailio: Callable[..., Kamailio],
    phone: Callable[..., Phone],
) -> None:
    server, (p1, p2) = _setup(tmp_path, kamailio, phone, add_peer)
    try:
        held, _ports = _one_per_worker(server)
        victim, survivor = held[1], held[0]
        assert victim.request("cut", "100", "101", 60) == "ACK: id=cut;code=ok;"
        assert _taken_by(server, "cut") == 1
        p1.wait_event("confirmed", timeout=10)
        p2.wait_event("confirmed", timeout=10)
        time.sleep(2.2)  # talk time the heartbeats record
        pid = _worker_pid(server, 1)
        survivor_pid = _worker_pid(server, 0)
        os.kill(pid, signal.SIGKILL)
        server.wait_log(rf"worker 1 \(pid {pid}\) killed by SIGKILL")
        server.wait_log(r"(?s)worker=1 mss: worker 1 of 2.*worker=1 mss: worker 1 of 2", timeout=20)  # again
        assert _worker_pid(server, 1) != pid and _worker_pid(server, 0) == survivor_pid
        response = survivor.response("cut", timeout=15)  # the restarted worker settled it; worker 0 sends it
        assert response["result"] == "shutdown"
        assert 1 <= int(response["real_duration"]) <= 4, response
        _no_more_lines([survivor], "cut", 2.0)
        assert _delivered_at(server, "cut") is not None
        # worker 0's callbacks were not cut: it takes and completes one after the restart.
        assert survivor.request("after", "100", "101", 1) == "ACK: id=after;code=ok;"
        assert survivor.response("after", timeout=20)["result"] == "answered"
    finally:
        server.stop()
    log = server.log_text()
    assert re.search(r"worker=1 mss\.desk: callback cut was in progress when mss stopped", log)
    assert not re.search(r"worker=0 mss\.desk: callback \S+ was in progress when mss stopped", log)
