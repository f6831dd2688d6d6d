"""The Kamailio edge of docs/deploy/ in front of two mss nodes, towards a provider that accepts one
trunk address.

Real parts: the provider is the test PSS in trunk mode trusting only the edge's provider-side
address; the edge is Kamailio running docs/deploy/kamailio-edge.cfg with its placeholders filled;
two mss processes in server-to-server mode send through the edge (``[sip] outbound_proxy``);
pjsua2 phones registered at the provider answer, play tones and record (a third only rings).

Checked: a callback through each node completes with audio both ways; the far end's BYE reaches
the node that owns the dialog; a CANCEL and its 487 cross the edge; the provider sees requests
from the trunk address only; a stranger gets 403; a request dispatched to a node that just died
fails over to the other, the dead node is marked inactive and its return active again; with no
node alive the provider's keepalive gets 503.

Addresses: the provider, the phones and the nodes live on 127.0.0.1; the edge faces the provider
from 127.0.0.2 and the nodes from 127.0.0.1 on a port of its own, so a request the provider saw
from 127.0.0.1 on a node's port would have bypassed the edge.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from mss_peers.audio import tone_fraction
from mss_peers.kamailio import Kamailio, KamailioError
from mss_peers.net import WaitTimeout, wait_until
from mss_peers.phone import Phone
from mss_peers.rawsip import RawSipClient
from mss_peers.server import MssServer

pytestmark = pytest.mark.e2e

EDGE_CFG = Path(__file__).resolve().parents[2] / "docs" / "deploy" / "kamailio-edge.cfg"
PROVIDER_HOST = "127.0.0.1"
EDGE_PROVIDER_HOST = "127.0.0.2"  # the trunk address the provider sees
EDGE_NODES_HOST = "127.0.0.1"
STRANGER_HOST = "127.0.0.3"
USERS = {"100": "pw100", "101": "pw101", "102": "pw102"}
PHONE_URIS = ("sip:100@", "sip:101@", "sip:102@")
TONE1 = 440.0
TONE2 = 1000.0
# Bound on the dispatcher's view changing: a 2 s probe interval plus its 3 s timeout, twice.
STATE_TIMEOUT = 12.0


class Edge(Kamailio):
    """Kamailio with the edge configuration of docs/deploy/, its placeholders filled in.

    ``host``/``port`` are the provider-side (trunk) address, which the harness's readiness ping
    uses: a ping to the trunk is dispatched to a node, so the nodes must be up first.
    """

    def __init__(
        self,
        workdir: Path,
        *,
        port: int,
        nodes_port: int,
        provider: tuple[str, int],
        nodes: list[tuple[str, int]],
    ) -> None:
        super().__init__("trunk", host=EDGE_PROVIDER_HOST, port=port, tcp=False, workdir=workdir)
        self.nodes_address = (EDGE_NODES_HOST, nodes_port)
        self.provider = provider
        self.nodes = nodes
        self.list_path = self.workdir / "dispatcher.list"

    def __repr__(self) -> str:
        return f"<Kamailio edge {self.host}:{self.port}>"

    def render_config(self) -> str:
        """docs/deploy/kamailio-edge.cfg with every placeholder filled (and the node list written)."""
        self.list_path.write_text(
            "".join(f"1 sip:{host}:{port} 0 0 duid=node{i}\n" for i, (host, port) in enumerate(self.nodes, 1))
        )
        values = {
            "EDGE_PROVIDER_HOST": self.host,
            "EDGE_PROVIDER_PORT": str(self.port),
            "EDGE_NODES_HOST": self.nodes_address[0],
            "EDGE_NODES_PORT": str(self.nodes_address[1]),
            "PROVIDER_HOST": self.provider[0],
            "PROVIDER_PORT": str(self.provider[1]),
            "DISPATCHER_LIST": str(self.list_path),
            "CTL_SOCKET": str(self.ctl_socket),
        }
        text = EDGE_CFG.read_text()
        for name, value in values.items():
            text = text.replace(f"@{name}@", value)
        left = re.findall(r"@[A-Z_]+@", text)
        if left:
            raise KamailioError(f"unfilled placeholders in {EDGE_CFG.name}: {sorted(set(left))}")
        return text

    def node_states(self) -> dict[str, str]:
        """The dispatcher's view: node URI -> FLAGS (``AP`` active, ``IP`` inactive, probing)."""
        out = self.kamcmd("dispatcher.list")
        return dict(re.findall(r"URI:\s*(\S+)\s+FLAGS:\s*(\S+)", out))


@pytest.fixture
def nodes(add_peer: Callable[[Any], None], tmp_path: Path) -> Iterator[Callable[..., MssServer]]:
    """Factory: ``nodes(name, provider, edge_nodes_port, sip_port)`` starts an mss node in
    server-to-server mode (workdir ``name``) whose every request goes through the edge's nodes
    side; stopped at teardown."""
    started: list[MssServer] = []

    def make(name: str, provider: tuple[str, int], edge_nodes_port: int, sip_port: int) -> MssServer:
        server = MssServer(
            tmp_path / name,
            pss=provider,
            external_line=None,
            sip_port=sip_port,
            sip={"outbound_proxy": f"{EDGE_NODES_HOST}:{edge_nodes_port}"},
        )
        started.append(server)
        add_peer(server)
        return server.start()

    yield make
    for server in started:
        server.stop()


@pytest.fixture
def edge(add_peer: Callable[[Any], None], tmp_path: Path) -> Iterator[Callable[..., Edge]]:
    """Factory: ``edge(**kwargs)`` starts an ``Edge``; stopped at teardown."""
    started: list[Edge] = []

    def make(**kwargs: Any) -> Edge:
        instance = Edge(tmp_path / "edge", **kwargs)
        started.append(instance)
        add_peer(instance)
        instance.start()
        return instance

    yield make
    for instance in started:
        instance.stop()


def _requests_seen(pss: Kamailio) -> list[tuple[str, str, str, str]]:
    """(method, request URI, source host, source port) of every request the provider received."""
    return re.findall(r"<- (\w+) (\S+) from \w+:([\d.]+):(\d+)", pss.log_text())


def _callback(
    server: MssServer, cb_id: str, p1: Phone, p2: Phone, *, far_end_hangs_up: bool
) -> dict[str, str]:
    """Order a callback on ``server``; user2 hangs up after 2 s of talk, or the 3 s duration
    expires. Returns the RESPONSE once both phones are disconnected."""
    with server.client() as as1:
        duration = 60 if far_end_hangs_up else 3
        assert as1.request(cb_id, "100", "101", duration) == f"ACK: id={cb_id};code=ok;"
        p1.wait_event("confirmed", timeout=10)
        p2.wait_event("confirmed", timeout=10)
        if far_end_hangs_up:
            time.sleep(2.0)
            p2.hangup()
        response = as1.response(cb_id, timeout=15)
    p1.wait_event("disconnected", timeout=10)
    p2.wait_event("disconnected", timeout=10)
    return response


def test_edge_fronts_two_nodes_with_one_trunk_address(
    kamailio: Callable[..., Kamailio], phone: Callable[..., Phone], nodes: Callable[..., MssServer],
    edge: Callable[..., Edge], free_port: Callable[..., int], peer_logs: Callable[[], str],
) -> None:
    edge_port = free_port(EDGE_PROVIDER_HOST)
    edge_nodes_port = free_port(EDGE_NODES_HOST)
    node_ports = [free_port(), free_port()]
    # The provider trusts the edge's trunk address only.
    pss = kamailio("trunk", users=USERS, mss=(EDGE_PROVIDER_HOST, edge_port))
    p1 = phone("100", pss, tone_hz=TONE1, record=True)
    p2 = phone("101", pss, tone_hz=TONE2, record=True)
    ringing = phone("102", pss, behaviour="ring")
    node1 = nodes("node1", pss.address, edge_nodes_port, node_ports[0])
    node2 = nodes("node2", pss.address, edge_nodes_port, node_ports[1])
    front = edge(port=edge_port, nodes_port=edge_nodes_port, provider=pss.address,
                 nodes=[("127.0.0.1", port) for port in node_ports])
    uris = [f"sip:127.0.0.1:{port}" for port in node_ports]
    # Both nodes answer the dispatcher's probes.
    _wait_states(front, {uri: "AP" for uri in uris}, peer_logs)

    # A callback through each node: both legs bridged with audio both ways.
    first = _callback(node1, "via1", p1, p2, far_end_hangs_up=False)
    assert first["result"] == "answered", first
    assert tone_fraction(p1.recording_path(), TONE2, skip_s=0.5) > 0.8
    assert tone_fraction(p2.recording_path(), TONE1, skip_s=0.5) > 0.8
    edge_log_before = len(front.log_text())
    second = _callback(node2, "via2", p1, p2, far_end_hangs_up=True)
    assert second["result"] == "answered", second
    assert 1 <= int(second["real_duration"]) <= 4, second
    assert tone_fraction(p1.recording_path(), TONE2, skip_s=0.5) > 0.8
    assert tone_fraction(p2.recording_path(), TONE1, skip_s=0.5) > 0.8

    # The far end's BYE came from the provider to the edge and went on to node 2, the dialog's owner.
    edge_log = front.log_text()[edge_log_before:]
    from_provider = rf"<- BYE \S+ from udp:{PROVIDER_HOST}:{pss.port} on {EDGE_PROVIDER_HOST}:{edge_port}"
    assert re.search(from_provider, edge_log), edge_log
    assert re.search(rf"-> BYE to \S*:{node_ports[1]}\b", edge_log), edge_log
    assert not re.search(rf"-> BYE to \S*:{node_ports[0]}\b", edge_log), edge_log

    # A CANCEL crosses the edge too: the AS cancels while user2 rings; the provider's 487 comes back.
    with node2.client() as as1:
        assert as1.request("ring", "100", "102", 60) == "ACK: id=ring;code=ok;"
        p1.wait_event("confirmed", timeout=10)
        ringing.wait_event("incoming", timeout=10)
        assert as1.cancel("ring") == "ACK: id=ring;code=ok;"
        cancelled = as1.response("ring", timeout=10)
    assert cancelled["result"] == "cancelled", cancelled
    assert ringing.wait_event("disconnected", timeout=10)["code"] == 487
    p1.wait_event("disconnected", timeout=10)

    # The provider saw the nodes' requests from the trunk address only.
    seen = _requests_seen(pss)
    methods = ("INVITE", "ACK", "BYE", "CANCEL")
    to_phones = [r for r in seen if r[0] in methods and r[1].startswith(PHONE_URIS)]
    assert len([r for r in to_phones if r[0] == "INVITE"]) >= 6, seen  # two legs per callback
    assert [r for r in to_phones if r[0] == "CANCEL"], seen
    assert {(host, int(port)) for _, _, host, port in to_phones} == {(EDGE_PROVIDER_HOST, edge_port)}, seen
    assert not [r for r in seen if int(r[3]) in node_ports], seen

    # A stranger on the provider's side is refused by the edge.
    with RawSipClient(EDGE_PROVIDER_HOST, edge_port, local_host=STRANGER_HOST) as sip:
        refused = sip.request("OPTIONS", f"sip:trunk@{EDGE_PROVIDER_HOST}:{edge_port}", from_user="x")
    assert refused.status == 403, refused.raw

    # Node 1 dies. The provider's OPTIONS towards the trunk, sent at once (before a probe can
    # notice), are answered by node 2: of two in a row, round robin sends one to node 1, which
    # fails over to node 2 after the node timeout and marks node 1 inactive.
    node1.kill()
    assert [_trunk_options(front, f"failover-{i}") for i in range(2)] == [node_ports[1]] * 2
    assert f"node sip:127.0.0.1:{node_ports[0]} did not answer OPTIONS: marked inactive" in front.log_text()
    # The probes keep it inactive; new requests go straight to node 2.
    _wait_states(front, {uris[0]: "IP", uris[1]: "AP"}, peer_logs)
    assert [_trunk_options(front, f"after-{i}") for i in range(2)] == [node_ports[1]] * 2
    # Node 1 back: one answered probe makes it active again, and round robin uses it.
    node1.start()
    _wait_states(front, {uri: "AP" for uri in uris}, peer_logs)
    assert {_trunk_options(front, f"back-{i}") for i in range(2)} == set(node_ports)
    # No node alive: the provider's keepalive gets 503, the trunk is down.
    node1.kill()
    node2.kill()
    _wait_states(front, {uri: "IP" for uri in uris}, peer_logs)
    with RawSipClient(front.host, front.port, local_host=PROVIDER_HOST) as sip:
        down = sip.request("OPTIONS", f"sip:{front.host}:{front.port}", from_user="provider")
    assert (down.status, down.reason) == (503, "No node available"), down.raw


def _trunk_options(front: Edge, call_id: str) -> int:
    """An OPTIONS from the provider's host to the trunk, answered 200 by a node: that node's port
    (the edge's log says where the answer came from)."""
    trunk = f"sip:trunk@{front.host}:{front.port}"
    # Longer than the edge's node timeout (3 s), after which it fails over to the next node.
    with RawSipClient(front.host, front.port, local_host=PROVIDER_HOST, timeout=8.0) as sip:
        answer = sip.request("OPTIONS", trunk, from_user="provider", call_id=call_id)
    assert answer.status == 200, answer.raw
    answered = rf"{re.escape(call_id)}\}}.*<- 200 OK for OPTIONS from udp:[\d.]+:(\d+)"
    found = re.search(answered, front.log_text())
    assert found, front.log_tail()
    return int(found.group(1))


def _wait_states(front: Edge, states: dict[str, str], peer_logs: Callable[[], str]) -> None:
    """Wait until the edge's dispatcher shows ``states`` (probes every 2 s time out after 3 s)."""
    try:
        wait_until(lambda: front.node_states() == states, STATE_TIMEOUT, interval=0.5)
    except WaitTimeout:
        raise AssertionError(f"dispatcher: {front.node_states()}, not {states}\n{peer_logs()}") from None
