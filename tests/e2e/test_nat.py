"""mss behind a 1:1 NAT: the addresses it writes (Via, Contact, SDP ``c=``) are the advertised ones.

The NAT is nftables on loopback addresses: mss binds a private address; packets to the public one
are translated to it (DNAT), packets from it leave as the public one (SNAT), and the private address
cannot be reached directly, as behind a real NAT. (Kamailio and the pjsua2 phones stay on 127.0.0.1:
the phones only speak to loopback, so the address plan is made with loopback addresses rather than
a network namespace.) Without ``advertised_host`` the phones' RTP and the in-dialog BYE would go to
the private address and be refused; with it the call is heard both ways and hung up from the far end.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator

import pytest

from tests.e2e.test_callback import TONE1, TONE2, _bridge, _start, _tail_tone

pytestmark = pytest.mark.e2e

PRIVATE = "127.0.0.82"
PUBLIC = "127.0.0.83"


def _nft(script: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["nft", "-f", "-"], input=script, capture_output=True, text=True, timeout=10)


@pytest.fixture
def nat() -> Iterator[None]:
    """A 1:1 NAT of PUBLIC to PRIVATE on loopback, for the test's duration."""
    if shutil.which("nft") is None:
        pytest.fail("nft (Debian nftables) is not installed")
    table = f"mss_nat_test_{os.getpid()}"
    loaded = _nft(f"""
table ip {table} {{
  chain out_nat {{ type nat hook output priority -100; ip daddr {PUBLIC} dnat to {PRIVATE}; }}
  chain post_nat {{ type nat hook postrouting priority 100; ip saddr {PRIVATE} snat to {PUBLIC}; }}
  chain out_filter {{
    type filter hook output priority 0;
    ip daddr {PRIVATE} ct status & (snat | dnat) == 0 drop;
  }}
}}
""")
    if loaded.returncode != 0:
        pytest.skip(f"nftables cannot load a NAT table here: {loaded.stderr.strip()}")
    try:
        yield
    finally:
        _nft(f"delete table ip {table}\n")


def test_a_callback_through_a_1_to_1_nat(kamailio, phone, mss, free_port, nat) -> None:  # type: ignore[no-untyped-def]
    _, p1, p2, server = _start(
        kamailio, phone, mss, free_port,
        sip={"local_host": PRIVATE, "advertised_host": PUBLIC},
        rtp={"host": PRIVATE, "advertised_host": PUBLIC, "kernel_forwarding": "no"},
    )
    with server.client() as as1:
        assert as1.request("nat", "100", "101", 60) == "ACK: id=nat;code=ok;"
        incoming = p1.wait_event("incoming", timeout=10)
        assert PRIVATE not in incoming["invite"] and f"c=IN IP4 {PUBLIC}" in incoming["invite"]
        _bridge(p1, p2)
        time.sleep(2.0)
        p2.hangup()  # the BYE reaches mss at its Contact: the public address
        response = as1.response("nat", timeout=10)
    assert response["result"] == "answered"
    assert response.get("code") == "0"
    p1.wait_event("disconnected", timeout=10)
    assert _tail_tone(p1.recording_path(), TONE2, 1.5) > 0.7
    assert _tail_tone(p2.recording_path(), TONE1, 1.5) > 0.7
