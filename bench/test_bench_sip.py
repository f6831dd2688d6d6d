"""SIP parse + serialize cost per message: ``.venv/bin/pytest bench/test_bench_sip.py --benchmark-only``.

Each benchmark parses one typical message from bytes (all the fields mss relies on are validated:
Via, From, To, Call-ID, CSeq, Contact, Route/Record-Route, Max-Forwards, Content-Length) and
serializes it back (``parse_serialize``), or parses it alone (``parse_only``), or parses it and reads
the fields the user agent and dialog layers read of every message they take (``parse_fields``: top
Via and its branch, From and To tags, Call-ID, CSeq, Contact, Record-Route), which builds the values
the parser only validated.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from mss.sip.message import Request, Response, parse_message

SDP = (
    b"v=0\r\n"
    b"o=mss 1700000000 1 IN IP4 127.0.0.1\r\n"
    b"s=mss\r\n"
    b"c=IN IP4 127.0.0.1\r\n"
    b"t=0 0\r\n"
    b"m=audio 30000 RTP/AVP 0 8 18 101\r\n"
    b"a=rtpmap:0 PCMU/8000\r\n"
    b"a=rtpmap:8 PCMA/8000\r\n"
    b"a=rtpmap:18 G729/8000\r\n"
    b"a=fmtp:18 annexb=no\r\n"
    b"a=rtpmap:101 telephone-event/8000\r\n"
    b"a=fmtp:101 0-16\r\n"
    b"a=ptime:20\r\n"
    b"a=sendrecv\r\n"
)


def _with_body(head: bytes, body: bytes) -> bytes:
    return head.replace(b"@LEN@", str(len(body)).encode()) + body


INVITE = _with_body(
    b"INVITE sip:100@pss.example.net SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK5f8a3c1e9b2d4f60;rport\r\n"
    b"Max-Forwards: 70\r\n"
    b'From: "5551000" <sip:5551000@pss.example.net>;tag=6a1f0c9e2b7d\r\n'
    b"To: <sip:100@pss.example.net>\r\n"
    b"Call-ID: 9c1d2e3f4a5b6c7d8e9f0a1b@127.0.0.1\r\n"
    b"CSeq: 2 INVITE\r\n"
    b"Contact: <sip:5551000@127.0.0.1:5070>\r\n"
    b"Allow: INVITE, ACK, BYE, CANCEL, OPTIONS, PRACK, UPDATE\r\n"
    b"Supported: 100rel, timer\r\n"
    b"Session-Expires: 1800\r\n"
    b"Min-SE: 90\r\n"
    b'Proxy-Authorization: Digest username="mss", realm="pss.example.net", nonce="Z3p4YmZ6a2N0eHJ5'
    b'Z3p4YmZ6", uri="sip:100@pss.example.net", response="0c9c4b8a0d1f2e3a4b5c6d7e8f901234", '
    b'algorithm=MD5, cnonce="1f2e3d4c5b6a7988", qop=auth, nc=00000001\r\n'
    b"User-Agent: mss/0.1\r\n"
    b"Content-Type: application/sdp\r\n"
    b"Content-Length: @LEN@\r\n"
    b"\r\n",
    SDP,
)

OK_WITH_SDP = _with_body(
    b"SIP/2.0 200 OK\r\n"
    b"Via: SIP/2.0/UDP 127.0.0.1:5070;received=127.0.0.1;branch=z9hG4bK5f8a3c1e9b2d4f60;rport=5070\r\n"
    b"Record-Route: <sip:127.0.0.1:5060;lr;ftag=6a1f0c9e2b7d;did=a41.1b2>\r\n"
    b'From: "5551000" <sip:5551000@pss.example.net>;tag=6a1f0c9e2b7d\r\n'
    b"To: <sip:100@pss.example.net>;tag=pjx8Qk3mN1\r\n"
    b"Call-ID: 9c1d2e3f4a5b6c7d8e9f0a1b@127.0.0.1\r\n"
    b"CSeq: 2 INVITE\r\n"
    b"Contact: <sip:100@127.0.0.1:5062;ob>\r\n"
    b"Allow: PRACK, INVITE, ACK, BYE, CANCEL, UPDATE, INFO, SUBSCRIBE, NOTIFY, REFER, MESSAGE, OPTIONS\r\n"
    b"Supported: replaces, 100rel, timer, norefersub\r\n"
    b"Session-Expires: 1800;refresher=uac\r\n"
    b"Require: timer\r\n"
    b"Content-Type: application/sdp\r\n"
    b"Content-Length: @LEN@\r\n"
    b"\r\n",
    SDP.replace(b"mss 1700000000", b"- 3900000000").replace(b"30000", b"4000"),
)

BYE = (
    b"BYE sip:100@127.0.0.1:5062;ob SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK77aa12bc34de56f0;rport\r\n"
    b"Max-Forwards: 70\r\n"
    b'From: "5551000" <sip:5551000@pss.example.net>;tag=6a1f0c9e2b7d\r\n'
    b"To: <sip:100@pss.example.net>;tag=pjx8Qk3mN1\r\n"
    b"Call-ID: 9c1d2e3f4a5b6c7d8e9f0a1b@127.0.0.1\r\n"
    b"CSeq: 3 BYE\r\n"
    b"Route: <sip:127.0.0.1:5060;lr;ftag=6a1f0c9e2b7d;did=a41.1b2>\r\n"
    b"User-Agent: mss/0.1\r\n"
    b"Content-Length: 0\r\n"
    b"\r\n"
)


def _parse_and_serialize(data: bytes) -> Callable[[], bytes]:
    def run() -> bytes:
        return parse_message(data).encode()

    return run


@pytest.mark.parametrize(
    ("name", "data"),
    [("INVITE", INVITE), ("200 OK with SDP", OK_WITH_SDP), ("BYE", BYE)],
    ids=["invite", "ok_sdp", "bye"],
)
def test_parse_serialize(benchmark: Callable[..., bytes], name: str, data: bytes) -> None:
    out = benchmark(_parse_and_serialize(data))
    again = parse_message(out)
    assert again.encode() == out, name


@pytest.mark.parametrize("data", [INVITE, OK_WITH_SDP, BYE], ids=["invite", "ok_sdp", "bye"])
def test_parse_only(benchmark: Callable[..., object], data: bytes) -> None:
    benchmark(parse_message, data)


def _read_fields(msg: Request | Response) -> object:
    return (
        msg.top_via.branch,
        msg.from_.tag,
        msg.to.tag,
        msg.call_id,
        msg.cseq.seq,
        msg.contacts,
        msg.record_route,
    )


@pytest.mark.parametrize("data", [INVITE, OK_WITH_SDP, BYE], ids=["invite", "ok_sdp", "bye"])
def test_parse_fields(benchmark: Callable[..., object], data: bytes) -> None:
    benchmark(lambda: _read_fields(parse_message(data)))
