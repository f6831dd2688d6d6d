"""Two mss nodes on one PostgreSQL journal: a node killed mid-call loses no RESPONSE.

Real parts only: a PostgreSQL server (tests/pg.py), Kamailio as the provider, pjsua2 phones that
answer, and two ``mss run`` processes with ``[journal] backend = postgresql`` and their own
``[cluster] node``. Node 1 takes the callbacks and is killed with SIGKILL while they are bridged; the
AS then connects to node 2, which takes node 1 over once its lease expired and writes every owed
RESPONSE, once; node 1 started again learns what was settled for it and writes nothing twice.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from mss_peers.kamailio import Kamailio
from mss_peers.phone import Phone
from mss_peers.server import AsClient, MssServer

pytestmark = pytest.mark.e2e

#: [cluster] lease of both nodes (seconds): short, so the test waits little for the takeover.
LEASE = 2

#: The issue's bound: every owed RESPONSE within this many seconds of the lease expiring.
DELIVERY_BOUND = 10.0


def _node(tmp_path: Path, name: str, pss: Kamailio, dsn: str) -> MssServer:
    return MssServer(
        tmp_path / name, pss=pss.address, callback={"drain_grace": 2},
        journal={"backend": "postgresql", "dsn": dsn},
        extra=f"[cluster]\nnode = {name}\nlease = {LEASE}\n",
    )


def _two_nodes(
    tmp_path: Path, kamailio: Callable[..., Kamailio], phone: Callable[..., Phone],
    add_peer: Callable[[Any], None], dsn: str, users: tuple[str, ...],
) -> tuple[list[Phone], MssServer, MssServer]:
    """Kamailio with ``users``' phones registered, and nodes n1 and n2 on one database, started."""
    pss = kamailio("auth", users={u: f"pw{u}" for u in users})
    phones = [phone(u, pss, tone_hz=440 + 100 * i) for i, u in enumerate(users)]
    one, two = _node(tmp_path, "n1", pss, dsn), _node(tmp_path, "n2", pss, dsn)
    add_peer(one)
    add_peer(two)
    try:
        one.start(timeout=20)
        two.start(timeout=20)
    except BaseException:
        one.stop()
        two.stop()
        raise
    return phones, one, two


def _responses(client: AsClient) -> list[str]:
    return [line for line in client.history if line.startswith("RESPONSE:")]


def test_a_node_killed_mid_call_has_its_responses_delivered_by_the_other(
    tmp_path: Path, kamailio: Callable[..., Kamailio], phone: Callable[..., Phone],
    add_peer: Callable[[Any], None], pg_dsn: str,
) -> None:
    phones, one, two = _two_nodes(tmp_path, kamailio, phone, add_peer, pg_dsn, ("100", "101", "102", "103"))
    try:
        with one.client() as as1:
            assert as1.request("a", "100", "101", 60) == "ACK: id=a;code=ok;"
            assert as1.request("b", "102", "103", 60) == "ACK: id=b;code=ok;"
            for device in phones:
                device.wait_event("confirmed", timeout=10)
            for cb_id in ("a", "b"):
                one.wait_log(rf"callback {cb_id}: bridged", timeout=10)
            time.sleep(2.2)  # talk time, heartbeats written every second
            one.kill()  # SIGKILL: node 1 answers nothing more
            killed = time.monotonic()
        with AsClient(("127.0.0.1", two.iif_port)) as as1:
            got = {cb_id: as1.response(cb_id, timeout=LEASE + DELIVERY_BOUND) for cb_id in ("a", "b")}
            delivered = time.monotonic() - killed
            time.sleep(1.0)  # anything doubled would come now
            said = _responses(as1)
            assert sorted(line.split(";")[0] for line in said) == ["RESPONSE: id=a", "RESPONSE: id=b"], said
        assert delivered <= LEASE + DELIVERY_BOUND
        for response in got.values():
            assert response["result"] == "shutdown"
            # the talk time known up to node 1's last heartbeat: about 2 s of it
            assert 1 <= int(response["real_duration"]) <= 4, response
        assert "taken over" in two.log_text() or "lease expired" in two.log_text()

        one.start(timeout=20)  # the same name again: it learns what node 2 settled
        assert "node n1: n2 settled 2 callback(s) of this node while it was down" in one.log_text()
        with one.client() as as1:
            time.sleep(1.5)
            assert _responses(as1) == []  # nothing written twice
    finally:
        one.stop()
        two.stop()


def test_a_response_kept_by_one_node_is_written_by_the_node_the_as_is_connected_to(
    tmp_path: Path, kamailio: Callable[..., Kamailio], phone: Callable[..., Phone],
    add_peer: Callable[[Any], None], pg_dsn: str,
) -> None:
    phones, one, two = _two_nodes(tmp_path, kamailio, phone, add_peer, pg_dsn, ("100", "101"))
    try:
        with one.client() as as1:  # ordered on node 1, whose connection the AS then closes
            assert as1.request("kept", "100", "101", 3) == "ACK: id=kept;code=ok;"
            for device in phones:
                device.wait_event("confirmed", timeout=10)
        with AsClient(("127.0.0.1", two.iif_port)) as as1:  # the AS is on node 2 when the call ends
            response = as1.response("kept", timeout=15)
            time.sleep(1.0)
            assert len(_responses(as1)) == 1, _responses(as1)
        with one.client() as again:  # node 1 has nothing left to write
            time.sleep(1.5)
            assert _responses(again) == []
    finally:
        one.stop()
        two.stop()
    assert response["result"] == "answered" and response["real_duration"] == "3", response
    assert "RESPONSE kept" in one.log_text()


def test_workers_on_postgresql_are_nodes_of_their_own(
    tmp_path: Path, kamailio: Callable[..., Kamailio], phone: Callable[..., Phone],
    add_peer: Callable[[Any], None], pg_dsn: str,
) -> None:
    pss = kamailio("auth", users={"100": "pw100", "101": "pw101"})
    phone("100", pss, tone_hz=440)
    phone("101", pss, tone_hz=540)
    server = MssServer(tmp_path / "box", pss=pss.address, callback={"workers": 2, "drain_grace": 2},
                       journal={"backend": "postgresql", "dsn": pg_dsn},
                       extra=f"[cluster]\nnode = box\nlease = {LEASE}\n")
    add_peer(server)
    try:
        server.start(timeout=40)
        log = server.log_text()
        assert "journal: PostgreSQL, node box.0" in log and "journal: PostgreSQL, node box.1" in log
        with server.client() as as1:
            assert as1.request("w", "100", "101", 2) == "ACK: id=w;code=ok;"
            response = as1.response("w", timeout=20)
    finally:
        assert server.stop() == 0
    assert response["result"] == "answered" and response["real_duration"] == "2", response
