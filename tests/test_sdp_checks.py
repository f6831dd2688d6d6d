"""The SDP checks made cheaper (a token's characters by one regex search, a message made only when a
check fails, the IP version of a media address and our own c= line cached) refuse and accept exactly
what they did, with the same messages, however often the same input comes."""

from __future__ import annotations

import pytest

from mss.errors import LocalProtocolError, SdpError
from mss.sdp import Attribute, Origin, make_offer, parse_sdp, read_answer

ORIGIN = {"username": "-", "session_id": "1", "version": 1, "nettype": "IN", "addrtype": "IP4",
          "address": "127.0.0.1"}


@pytest.mark.parametrize("field", ["username", "session_id", "nettype", "addrtype", "address"])
@pytest.mark.parametrize("bad", ["", "a b", "a\tb", "a\rb", "a\nb"])
def test_every_origin_token_is_checked_and_named(field: str, bad: str) -> None:
    with pytest.raises(LocalProtocolError, match=rf"^o= {field} .* is not a single token$"):
        Origin(**{**ORIGIN, field: bad})
    assert str(Origin(**ORIGIN)) == "- 1 1 IN IP4 127.0.0.1"


@pytest.mark.parametrize("bad", ["a\rb", "a\nb", "a\0b"])
def test_an_attribute_value_with_a_line_break_is_refused_with_its_name(bad: str) -> None:
    with pytest.raises(LocalProtocolError, match=r"^a=tool value .* contains a CR, LF or NUL$"):
        Attribute(name="tool", value=bad)
    assert str(Attribute(name="tool", value="a b:c")) == "tool:a b:c"


def _answer(addrtype: str, address: str) -> bytes:
    return (f"v=0\r\no=- 2 2 IN {addrtype} {address}\r\ns=-\r\nc=IN {addrtype} {address}\r\nt=0 0\r\n"
            "m=audio 40000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n").encode()


def test_the_answers_address_is_checked_every_time() -> None:
    offer = make_offer(host="127.0.0.1", port=30000, codecs=["PCMU"], session_id=1, version=1)
    for _ in range(2):  # the second time from the cache
        assert read_answer(offer, parse_sdp(_answer("IP4", "127.0.0.2"))).remote_address == "127.0.0.2"
        with pytest.raises(SdpError, match=r"^c= address '127.0.0.2' is not an IP6 address$"):
            read_answer(offer, parse_sdp(_answer("IP6", "127.0.0.2")))
        with pytest.raises(SdpError, match=r"^c= address 'media.example' is not an IP address$"):
            read_answer(offer, parse_sdp(_answer("IP4", "media.example")))
    for _ in range(2):
        with pytest.raises(LocalProtocolError, match=r"^local media host 'mss.example' is not an IP addr"):
            make_offer(host="mss.example", port=30000, codecs=["PCMU"], session_id=1, version=1)


_PHONE = (
    "v=0\r\no=- 3921305012 3921305012 IN IP4 127.0.0.1\r\ns=pjmedia\r\nb=AS:84\r\nt=0 0\r\na=X-nat:0\r\n"
    "m=audio 4002 RTP/AVP 0 101\r\nc=IN IP4 127.0.0.1\r\nb=TIAS:64000\r\na=rtcp:4003 IN IP4 127.0.0.1\r\n"
    "a=sendrecv\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\n"
)


def test_line_ends_and_the_checking_path_make_the_same_description() -> None:
    # CRLF lines are split at once, LF or mixed ones line by line; a body with a NUL (here in the
    # o= username, which SDP allows) is built through the dataclasses' checks: the same values.
    crlf = parse_sdp(_PHONE.encode())
    for body in (_PHONE.replace("\r\n", "\n"), _PHONE.replace("\r\n", "\n", 3), "\r\n" + _PHONE + "\n\n"):
        assert parse_sdp(body.encode()) == crlf
    checked = parse_sdp(_PHONE.replace("o=- ", "o=a\0b ").encode())
    assert checked.origin.username == "a\0b"
    assert checked.media == crlf.media and checked.media[0].codecs == crlf.media[0].codecs


@pytest.mark.parametrize("bad", ["a=tool:x\ry", "a=tool:x\0y", "i=x\ry", "b=AS:1\0"])
def test_a_cr_or_nul_inside_a_line_is_refused_however_often_it_comes(bad: str) -> None:
    body = _PHONE.replace("a=X-nat:0", bad).encode()
    messages = set()
    for _ in range(2):  # the second time with the line's neighbours already known
        with pytest.raises(SdpError, match=r"contains a CR, LF or NUL$") as info:
            parse_sdp(body)
        messages.add(info.value.reason)
    assert len(messages) == 1


def test_long_lines_are_read_as_short_ones_are() -> None:
    # Short a= values are kept once read; long ones are read every time: the same descriptions.
    long_value = "x" * 300
    body = _PHONE.replace("a=X-nat:0", f"a=tool:{long_value}").replace("0-16", "0-15," + "1" * 200)
    first, second = parse_sdp(body.encode()), parse_sdp(body.encode())
    assert first == second and first.attributes[0].value == long_value
    assert first.media[0].codecs[101].fmtp == "0-15," + "1" * 200
