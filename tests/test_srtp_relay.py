"""The relay under an SRTP passthrough bridge: SRTP and SRTCP datagrams cross it byte for byte.

The bridge is the one the call flow orders for an SRTP call (``RelayBridge(srtp=True)``, carried out
by the engine as mss does), on every relay backend and forwarding path of tests/test_relay.py.
"""

from __future__ import annotations

import os
import struct

from mss import engine
from mss.callflow import RelayBridge, RelayForward
from mss.relay import Relay
from tests.test_relay import (  # noqa: F401  (fixtures: relay, backend, path, phones)
    Phone,
    assert_path,
    backend,
    latch_both,
    path,
    phones,
    relay,
    rtp,
)

#: The 80-bit authentication tag of AES_CM_128_HMAC_SHA1_80 (RFC 3711 §4.2).
TAG = 10


def srtp(seq: int, ssrc: int) -> bytes:
    """An SRTP packet as a phone sends it: a clear RTP header, 160 encrypted bytes, the tag."""
    return rtp(seq, 160 * seq, os.urandom(160 + TAG), pt=0, ssrc=ssrc)


def srtcp(ssrc: int, index: int) -> bytes:
    """An SRTCP sender report (RFC 3711 §3.4): the clear first 8 bytes, the encrypted rest, the
    E flag with the SRTCP index, the tag."""
    return struct.pack("!BBHI", 0x80, 200, 6, ssrc) + os.urandom(20) + struct.pack("!I", 0x80000000 | index) \
        + os.urandom(TAG)


def test_srtp_and_srtcp_cross_the_bridge_untouched(relay: Relay, phones: tuple[Phone, Phone]) -> None:  # noqa: F811
    a, b = phones
    s = relay.open_session()
    latch_both(s, a, b)
    engine.carry_out_relay(s, RelayBridge(a_to_b={}, b_to_a={}, srtp=True))
    engine.carry_out_relay(s, RelayForward(a_to_b=True, b_to_a=True))
    sent_ab = [srtp(100 + i, 0x1234) for i in range(20)]
    sent_ba = [srtp(700 + i, 0xCAFE) for i in range(20)]
    for pa, pb in zip(sent_ab, sent_ba, strict=True):
        a.send(s.a_port, pa)
        b.send(s.b_port, pb)
    assert [b.recv()[0] for _ in sent_ab] == sent_ab
    assert [a.recv()[0] for _ in sent_ba] == sent_ba
    reports = [srtcp(0x1234, i) for i in range(3)]
    for report in reports:
        a.send_rtcp(s.a_port, report)
    assert [b.recv(rtcp=True)[0] for _ in reports] == reports
    assert_path(relay, s, "a rtp", "b rtp")
