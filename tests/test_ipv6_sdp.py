"""SDP across IP versions: mss has one media address, so a remote c= of the other IP version is
refused as unusable (no ANAT, no ICE) instead of reaching a relay that cannot send there; an
RFC 2543 hold (``c=IN IP4 0.0.0.0``) is a direction and passes."""

from __future__ import annotations

import re

import pytest

from mss.errors import SdpError
from mss.sdp.offer_answer import make_answer, make_offer, read_answer
from mss.sdp.syntax import parse_sdp


def _sdp(addrtype: str, address: str, port: int = 4000) -> bytes:
    return (f"v=0\r\no=ph 1 1 IN {addrtype} {address}\r\ns=-\r\nc=IN {addrtype} {address}\r\nt=0 0\r\n"
            f"m=audio {port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n").encode()


def _offer(host: str):  # type: ignore[no-untyped-def]
    return make_offer(host=host, port=30000, codecs=["PCMU"], session_id=1, version=1)


def test_an_ipv6_answer_to_an_ipv6_offer() -> None:
    offer = _offer("::1")
    assert "c=IN IP6 ::1\r\n" in bytes(offer).decode()
    negotiated = read_answer(offer, parse_sdp(_sdp("IP6", "::1")))
    assert (negotiated.remote_address, negotiated.remote_port) == ("::1", 4000)


@pytest.mark.parametrize(("ours", "theirs", "addrtype", "words"), [
    ("::1", "127.0.0.1", "IP4", "c= address '127.0.0.1' is IP4; mss's media address ::1 is IP6"),
    ("127.0.0.1", "::1", "IP6", "c= address '::1' is IP6; mss's media address 127.0.0.1 is IP4"),
])  # fmt: skip
def test_an_answer_of_the_other_ip_version_is_unusable(
    ours: str, theirs: str, addrtype: str, words: str
) -> None:
    with pytest.raises(SdpError, match=f"^{re.escape(words)}$"):
        read_answer(_offer(ours), parse_sdp(_sdp(addrtype, theirs)))


def test_a_far_end_offer_of_the_other_ip_version_is_unusable() -> None:
    with pytest.raises(SdpError, match=r"^c= address '127\.0\.0\.1' is IP4; mss's media address ::1 is IP6$"):
        make_answer(parse_sdp(_sdp("IP4", "127.0.0.1")), host="::1", port=30000, codecs=["PCMU"],
                    session_id=1, version=2)
    answer, negotiated = make_answer(parse_sdp(_sdp("IP6", "::1")), host="::1", port=30000, codecs=["PCMU"],
                                     session_id=1, version=2)
    assert "c=IN IP6 ::1\r\n" in bytes(answer).decode() and negotiated.remote_address == "::1"


def test_an_rfc_2543_hold_passes_in_either_version() -> None:
    negotiated = read_answer(_offer("::1"), parse_sdp(_sdp("IP4", "0.0.0.0")))
    assert negotiated.hold
