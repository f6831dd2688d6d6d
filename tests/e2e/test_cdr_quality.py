"""CDR quality against the phones: a real callback through Kamailio between two pjsua2 phones, and
the CDR that ``mss cdr`` exports (read beside the running mss) holds, per leg, the packets each
phone says it sent and received (pjsua2's own RTCP statistics), no loss, small jitter and a MOS
above 4 for G.711; with a phone that loses packets on the way, the loss both the relay and the
far phone count, and a lower MOS."""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from typing import Any

import pytest

from mss.cdr import export
from mss.config import load
from mss.quality import estimate_mos
from mss_peers.kamailio import Kamailio
from mss_peers.phone import Phone
from mss_peers.server import MssServer

pytestmark = pytest.mark.e2e

#: Packets a count of the relay and a phone's may differ by: the phone's first packets can reach
#: the relay before mss has its 200 OK (and are not taken from an address not yet signalled), and
#: a phone's last ones can pass after the CDR's counters were read at the release. Both are a few
#: 20 ms packets on loopback; 0.2 s of audio is the bound.
SLACK_PACKETS = 10

#: RTP header bytes: the relay counts whole RTP packets, pjsua2 their payload only.
RTP_HEADER = 12


def near(relay: object, phone: int, what: str, per_packet: int = 1) -> None:
    assert isinstance(relay, int), f"{what}: {relay!r}"
    assert abs(relay - phone) <= SLACK_PACKETS * per_packet, f"{what}: the relay {relay}, the phone {phone}"


def callback(
    kamailio: Callable[..., Kamailio], phone: Callable[..., Phone], mss: Callable[..., MssServer],
    free_port: Callable[..., int], peer_logs: Callable[[], str], **user1: Any,
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """A 4 s callback between two G.711 phones (``user1``: more of user1's phone's options); its CDR
    as ``mss cdr`` exports it beside the running mss, and each phone's own stream statistics."""
    pss = kamailio("auth", users={"100": "pw100", "101": "pw101"}, mss=("127.0.0.1", free_port()))
    user1_phone = phone("100", pss, tone_hz=440.0, codecs=["PCMU"], **user1)
    user2_phone = phone("101", pss, tone_hz=1000.0, codecs=["PCMU"])
    server = mss(pss)
    server.wait_log("external line registered")
    with server.client() as as1:
        assert as1.request("q1", "100", "101", 4) == "ACK: id=q1;code=ok;"
        response = as1.response("q1", timeout=20)
    assert response["result"] == "answered", peer_logs()
    ended1 = user1_phone.wait_event("disconnected", timeout=10)
    ended2 = user2_phone.wait_event("disconnected", timeout=10)
    assert ended1["stream_stat"] is not None and ended2["stream_stat"] is not None, (ended1, ended2)

    out = io.StringIO()
    assert export(load(server.config_path), None, "jsonl", out) == 1
    cdr: dict[str, Any] = json.loads(out.getvalue())
    assert (cdr["id"], cdr["codec"], cdr["result"]) == ("q1", "PCMU", "answered")
    # a 4 s callback: some 200 packets each way
    assert min(ended1["stream_stat"]["tx_packets"], ended2["stream_stat"]["tx_packets"]) > 100
    return cdr, ended1["stream_stat"], ended2["stream_stat"]


def test_cdr_quality_matches_what_the_phones_measured(
    kamailio: Callable[..., Kamailio], phone: Callable[..., Phone], mss: Callable[..., MssServer],
    free_port: Callable[..., int], peer_logs: Callable[[], str],
) -> None:
    cdr, seen1, seen2 = callback(kamailio, phone, mss, free_port, peer_logs)
    # user1's leg: what the phone sent reached the relay; the ringback and user2's audio reached it
    near(cdr["leg1_packets_in"], seen1["tx_packets"], "packets from user1")
    near(cdr["leg1_packets_out"], seen1["rx_packets"], "packets to user1")
    near(cdr["leg1_bytes_in"], seen1["tx_bytes"] + RTP_HEADER * seen1["tx_packets"], "bytes from user1", 172)
    near(cdr["leg1_bytes_out"], seen1["rx_bytes"] + RTP_HEADER * seen1["rx_packets"], "bytes to user1", 172)
    # user2's leg likewise (no ringback towards it)
    near(cdr["leg2_packets_in"], seen2["tx_packets"], "packets from user2")
    near(cdr["leg2_packets_out"], seen2["rx_packets"], "packets to user2")
    near(cdr["leg2_bytes_in"], seen2["tx_bytes"] + RTP_HEADER * seen2["tx_packets"], "bytes from user2", 172)
    near(cdr["leg2_bytes_out"], seen2["rx_bytes"] + RTP_HEADER * seen2["rx_packets"], "bytes to user2", 172)
    # loopback loses nothing, in the relay's count and in the phones'
    assert (cdr["leg1_lost"], cdr["leg2_lost"]) == (0, 0)
    assert (seen1["rx_loss"], seen2["rx_loss"]) == (0, 0), (seen1, seen2)
    # jitter is small both at the relay (phone to relay) and at the phones (relay to phone)
    for leg in ("leg1", "leg2"):
        mean, peak = cdr[f"{leg}_jitter_mean_ms"], cdr[f"{leg}_jitter_max_ms"]
        assert mean is not None and peak is not None and 0 <= mean <= peak < 10, cdr
    assert max(seen1["rx_jitter_mean_ms"], seen2["rx_jitter_mean_ms"]) < 10, (seen1, seen2)
    # G.711 without loss on loopback: R = 93.2, MOS 4.41
    assert cdr["leg1_mos"] > 4.0 and cdr["leg2_mos"] > 4.0, cdr


def test_packets_lost_on_the_way_to_the_relay_are_counted_and_lower_the_mos(
    kamailio: Callable[..., Kamailio], phone: Callable[..., Phone], mss: Callable[..., MssServer],
    free_port: Callable[..., int], peer_logs: Callable[[], str],
) -> None:
    """user1's phone drops some 5 % of what it sends after counting it sent: the relay counts the
    gaps as user1's lost packets, user2's phone (which gets the stream as the relay got it) counts
    the same loss, and user1's MOS falls below user2's."""
    cdr, seen1, seen2 = callback(kamailio, phone, mss, free_port, peer_logs, tx_drop_pct=5)
    lost = cdr["leg1_lost"]
    assert lost > 0 and cdr["leg2_lost"] == 0, cdr
    # every packet user1's phone counted as sent either reached the relay or is missing there
    near(cdr["leg1_packets_in"] + lost, seen1["tx_packets"], "packets from user1, received or lost")
    # user2's phone sees the same gaps (before the bridge user1's packets reach nobody)
    assert abs(seen2["rx_loss"] - lost) <= 3, (cdr, seen2)
    assert seen1["rx_loss"] == 0, seen1
    # the MOS is the E-model's for the counts in the CDR, and below the clean leg's
    expected = estimate_mos("PCMU", lost=lost, received=cdr["leg1_packets_in"],
                            jitter_ms=cdr["leg1_jitter_mean_ms"])
    assert expected is not None and abs(cdr["leg1_mos"] - expected) <= 0.01, cdr
    assert cdr["leg1_mos"] < cdr["leg2_mos"], cdr
