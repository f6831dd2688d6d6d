"""SDP parsing, serialization and offer/answer against golden fixtures in tests/data/sdp."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mss.errors import LocalProtocolError, SdpError
from mss.sdp import (
    MAX_SDP_SIZE,
    Attribute,
    Codec,
    Connection,
    Direction,
    LocalSdp,
    MediaDescription,
    Negotiated,
    Origin,
    SessionDescription,
    make_answer,
    make_bridge_offer,
    make_offer,
    parse_sdp,
    pt_mapping,
    read_answer,
    with_direction,
)

DATA = Path(__file__).parent / "data" / "sdp"
VALID = sorted(p.name for p in DATA.glob("*.sdp"))
ALL_CODECS = ("PCMU", "PCMA", "G729")


def load(name: str) -> bytes:
    return (DATA / name).read_bytes()


def sdp(name: str) -> SessionDescription:
    return parse_sdp(load(name))


def our_offer(codecs: tuple[str, ...] = ALL_CODECS, **kw: Any) -> SessionDescription:
    args: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": 30000,
        "codecs": codecs,
        "session_id": 3921400000,
        "version": 3921400000,
    }
    args.update(kw)
    return make_offer(**args)


def answer_to(
    name: str, codecs: tuple[str, ...] = ALL_CODECS, **kw: Any
) -> tuple[SessionDescription, Negotiated]:
    args: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": 30000,
        "codecs": codecs,
        "session_id": 3921400000,
        "version": 3921400001,
    }
    args.update(kw)
    return make_answer(sdp(name), **args)


# --------------------------------------------------------------------------------------------------
# Parsed fields
# --------------------------------------------------------------------------------------------------


def test_pjsua2_offer_fields() -> None:
    sd = sdp("pjsua2_offer.sdp")
    assert sd.origin == Origin(session_id="3921304958", version=3921304958, address="127.0.0.1")
    assert sd.session_name == "pjmedia"
    assert sd.bandwidths == ("AS:84",)
    assert sd.connection is None
    assert sd.attributes == (Attribute(name="X-nat", value="0"),)
    (audio,) = sd.media
    assert (audio.media, audio.port, audio.proto) == ("audio", 4000, "RTP/AVP")
    assert audio.formats == ("96", "97", "98", "99", "3", "0", "8", "9", "120", "121", "122")
    assert audio.connection == Connection(address="127.0.0.1")
    assert audio.bandwidths == ("TIAS:64000",)
    assert audio.rtcp == (4001, "127.0.0.1")
    assert audio.direction is Direction.SENDRECV
    assert sd.direction_of(audio) is Direction.SENDRECV
    codecs = audio.codecs
    assert list(codecs) == [96, 97, 98, 99, 3, 0, 8, 9, 120, 121, 122]
    assert codecs[96] == Codec(name="speex", clock_rate=16000)
    assert codecs[99] == Codec(name="iLBC", clock_rate=8000, fmtp="mode=30")
    assert codecs[0] == Codec(name="PCMU", clock_rate=8000)
    assert codecs[121] == Codec(name="telephone-event", clock_rate=8000, fmtp="0-16")
    assert codecs[121].is_telephone_event
    assert audio.attribute("ssrc") == "1932174416 cname:3c6f4e1e7b1a2d05"
    assert audio.ptime is None


def test_pjsua2_answer_fields() -> None:
    sd = sdp("pjsua2_answer_pcmu.sdp")
    (audio,) = sd.media
    assert audio.port == 4002
    assert audio.codecs == {
        0: Codec(name="PCMU", clock_rate=8000),
        101: Codec(name="telephone-event", clock_rate=8000, fmtp="0-16"),
    }
    assert audio.rtcp == (4003, "127.0.0.1")


def test_carrier_g729_offer_fields() -> None:
    sd = sdp("carrier_g729_offer.sdp")
    assert sd.origin.username == "carrier"
    assert sd.connection == Connection(address="127.0.0.3")
    (audio,) = sd.media
    assert audio.connection is None
    assert sd.connection_for(audio) == Connection(address="127.0.0.3")
    assert audio.codecs[18] == Codec(name="G729", clock_rate=8000, fmtp="annexb=no")
    assert audio.ptime == 20
    assert audio.maxptime == 40
    assert audio.rtcp is None


def test_static_payload_types_without_rtpmap_and_lf_line_ends() -> None:
    sd = sdp("static_pt_lf.sdp")
    assert sd.session_name == "-"  # tolerated: no s= and no t=
    (audio,) = sd.media
    assert audio.codecs == {
        18: Codec(name="G729", clock_rate=8000),
        0: Codec(name="PCMU", clock_rate=8000),
        8: Codec(name="PCMA", clock_rate=8000),
        101: Codec(name="telephone-event", clock_rate=8000),
    }
    assert audio.direction is None
    assert sd.direction_of(audio) is Direction.SENDRECV  # RFC 3264 §5.1 default


def test_all_optional_session_lines_and_ipv6() -> None:
    sd = sdp("ipv6_session_attributes.sdp")
    assert sd.origin.addrtype == "IP6"
    assert sd.information == "A call back"
    assert sd.uri == "http://www.example.com/seminars/sdp.pdf"
    assert sd.emails == ("noc@example.com (NOC)",)
    assert sd.phones == ("+1 617 555-6011",)
    assert sd.bandwidths == ("CT:128",)
    assert len(sd.times) == 1
    assert sd.times[0].value == "2873397496 2873404696"
    assert sd.times[0].repeats == ("7d 1h 0 25h",)
    assert sd.timezone == "2882844526 -1h 2898848070 0"
    assert sd.direction is Direction.SENDONLY
    (audio,) = sd.media
    assert audio.information == "the voice"
    assert audio.connection == Connection(addrtype="IP6", address="2001:db8::2")
    assert audio.direction is None
    assert sd.direction_of(audio) is Direction.SENDONLY  # inherited from the session level
    assert audio.ptime == 30


def test_multi_stream_fields() -> None:
    sd = sdp("pjsua2_audio_video.sdp")
    assert [(m.media, m.port) for m in sd.media] == [("audio", 4000), ("video", 4002)]
    assert sd.media[1].codecs == {
        97: Codec(name="H264", clock_rate=90000, fmtp="profile-level-id=42e01e; packetization-mode=1")
    }
    assert sd.media[1].attribute("rtcp-fb") == "* nack pli"


# --------------------------------------------------------------------------------------------------
# Round trips
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", VALID)
def test_round_trip_is_stable(name: str) -> None:
    data = load(name)
    sd = parse_sdp(data)
    again = parse_sdp(bytes(sd))
    assert again == sd
    assert bytes(again) == bytes(sd) == sd.to_bytes()


@pytest.mark.parametrize("name", [n for n in VALID if n != "static_pt_lf.sdp"])
def test_canonical_bodies_come_back_byte_for_byte(name: str) -> None:
    data = load(name)
    assert bytes(parse_sdp(data)) == data


@pytest.mark.parametrize("name", VALID)
def test_lf_and_crlf_parse_alike(name: str) -> None:
    data = load(name)
    lf = data.replace(b"\r\n", b"\n")
    crlf = lf.replace(b"\n", b"\r\n")
    assert parse_sdp(lf) == parse_sdp(crlf) == parse_sdp(data)


def test_lf_body_is_written_with_crlf() -> None:
    out = bytes(sdp("static_pt_lf.sdp"))
    assert out == (
        b"v=0\r\no=- 42 42 IN IP4 127.0.0.6\r\ns=-\r\nt=0 0\r\n"
        b"m=audio 20000 RTP/AVP 18 0 8 101\r\nc=IN IP4 127.0.0.6\r\n"
        b"a=rtpmap:101 telephone-event/8000\r\n"
    )


def test_blank_lines_and_non_utf8_text_are_kept() -> None:
    data = b"v=0\r\n\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=Caf\xe9\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\r\n"
    sd = parse_sdp(data)
    assert bytes(sd) == data.replace(b"\r\n\r\n", b"\r\n")
    assert sd.media == ()


def test_out_of_order_lines_are_written_in_rfc_order() -> None:
    data = (
        b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\nt=0 0\r\ns=-\r\nc=IN IP4 127.0.0.1\r\n"
        b"m=audio 4000 RTP/AVP 0\r\na=sendrecv\r\nc=IN IP4 127.0.0.2\r\n"
    )
    out = bytes(parse_sdp(data))
    assert out == (
        b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
        b"m=audio 4000 RTP/AVP 0\r\nc=IN IP4 127.0.0.2\r\na=sendrecv\r\n"
    )


# --------------------------------------------------------------------------------------------------
# Invalid bodies: the exact message
# --------------------------------------------------------------------------------------------------

INVALID = [
    ("bad_ptime.sdp", "line 7: bad a=ptime value 'twenty': expected milliseconds"),
    ("bad_rtcp.sdp", "line 7: bad a=rtcp value 'port': expected <port> [IN <IP4|IP6> <address>]"),
    (
        "bad_rtpmap.sdp",
        "line 7: bad a=rtpmap value '0 PCMU': expected <payload type 0-127> <encoding>/<clock rate>"
        "[/<channels>]",
    ),
    ("c_bad_addrtype.sdp", "line 4: bad c= line 'c=IN IP5 127.0.0.1': address type 'IP5' is not IP4 or IP6"),
    (
        "c_bad_nettype.sdp",
        "line 4: bad c= line 'c=ATM NSAP 47.0005.80.ffe100': network type 'ATM' is not IN",
    ),
    ("c_too_short.sdp", "line 4: bad c= line 'c=IN IP4': expected IN <IP4|IP6> <address>"),
    ("empty.sdp", "empty SDP body"),
    (
        "m_bad_payload_type.sdp",
        "line 6: bad m= line 'm=audio 4000 RTP/AVP 0 200': payload type '200' is not a number 0-127",
    ),
    ("m_port_not_a_number.sdp", "line 6: bad m= line 'm=audio abc RTP/AVP 0': port 'abc' is not a number"),
    ("m_port_out_of_range.sdp", "line 6: bad m= line 'm=audio 70000 RTP/AVP 0': port 70000 is out of range"),
    (
        "m_too_short.sdp",
        "line 6: bad m= line 'm=audio 4000 RTP/AVP': expected <media> <port> <proto> <format> ...",
    ),
    ("missing_c.sdp", "line 5: no c= line for the m=audio stream, nor at session level"),
    ("no_origin.sdp", "the SDP body has no o= line"),
    ("no_version.sdp", "line 1: an SDP body begins with v=0, not 'o=- 1 1 IN IP4 127.0.0.1'"),
    ("not_a_line.sdp", "line 7: 'hello world' is not a <type>=<value> line"),
    (
        "o_bad_version.sdp",
        "line 2: bad o= line 'o=- 1 one IN IP4 127.0.0.1': session version 'one' is not a number",
    ),
    ("t_in_media.sdp", "line 6: t= is not allowed in a media section"),
    ("two_directions.sdp", "line 8: a=inactive after a=sendonly: two direction attributes"),
    ("two_origins.sdp", "line 4: a second o= line"),
    ("unknown_line_type.sdp", "line 6: unknown SDP line type 'x'"),
]


def test_every_invalid_fixture_is_listed() -> None:
    assert sorted(p.name for p in (DATA / "invalid").glob("*.sdp")) == sorted(n for n, _ in INVALID)


@pytest.mark.parametrize(("name", "message"), INVALID)
def test_invalid_bodies(name: str, message: str) -> None:
    with pytest.raises(SdpError) as info:
        parse_sdp((DATA / "invalid" / name).read_bytes())
    assert info.value.reason == message
    assert str(info.value) == message
    assert info.value.status == 488


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            b"v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\na=tool:x\ry\r\n",
            "a=tool value 'x\\ry' contains a CR, LF or NUL",
        ),
        (b"v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\nr=1d\r\n", "line 3: r= line without a t= line before it"),
        (b"v=0\r\nv=0\r\no=- 1 1 IN IP4 1.2.3.4\r\n", "line 2: a second v= line"),
        (
            b"v=0\r\no=- 1 IN IP4 1.2.3.4\r\n",
            "line 2: bad o= line 'o=- 1 IN IP4 1.2.3.4': expected "
            "<username> <sess-id> <sess-version> <nettype> <addrtype> <address>",
        ),
        (b"v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\na=sendrecv:yes\r\n", "line 3: a=sendrecv takes no value"),
        (
            b"v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\na=foo bar\r\n",
            "line 3: bad a= line 'a=foo bar': expected <name>[:<value>]",
        ),
        (
            b"v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\na=:x\r\n",
            "line 3: bad a= line 'a=:x': expected <name>[:<value>]",
        ),
        (
            b"v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\nc=IN IP4 1.2.3.4\r\nm=audio 4000/0 RTP/AVP 0\r\n",
            "line 4: bad m= line 'm=audio 4000/0 RTP/AVP 0': number of ports is 0",
        ),
        (
            b"v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\nc=IN IP4 1.2.3.4\r\nc=IN IP4 1.2.3.5\r\n",
            "line 4: a second session-level c= line",
        ),
        (b"v=1\r\n", "line 1: an SDP body begins with v=0, not 'v=1'"),
    ],
)
def test_invalid_lines(data: bytes, message: str) -> None:
    with pytest.raises(SdpError) as info:
        parse_sdp(data)
    assert info.value.reason == message


def test_oversized_body() -> None:
    data = b"v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\n" + b"a=x\r\n" * (MAX_SDP_SIZE // 5)
    with pytest.raises(SdpError, match=rf"^SDP body of {len(data)} bytes is over the limit of 16384$"):
        parse_sdp(data)


def test_rejected_stream_needs_no_address() -> None:
    sd = parse_sdp(b"v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\ns=-\r\nt=0 0\r\nm=video 0 RTP/AVP 97\r\n")
    assert sd.media[0].port == 0


def test_non_rtp_formats_are_tokens() -> None:
    sd = parse_sdp(
        b"v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\ns=-\r\nc=IN IP4 1.2.3.4\r\nt=0 0\r\n"
        b"m=application 9 TCP/MRCPv2 1\r\nm=image 4000 udptl t38\r\n"
    )
    assert sd.media[1].formats == ("t38",)
    assert sd.media[1].codecs == {}


# --------------------------------------------------------------------------------------------------
# Construction guards: nothing invalid can be written
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: Attribute(name="tool", value="a\r\nm=video 1 RTP/AVP 0"), "contains a CR, LF or NUL"),
        (lambda: Attribute(name="a b"), "is not a single token"),
        (lambda: Attribute(name="a:b"), "contains a colon"),
        (lambda: Connection(addrtype="IP5", address="x"), "is not IP4 or IP6"),
        (lambda: Connection(nettype="ATM", address="x"), "is not IN"),
        (lambda: Origin(session_id="1", version=-1, address="x"), "is negative"),
        (lambda: MediaDescription(port=70000, formats=("0",)), "is not a port number"),
        (lambda: MediaDescription(port=4000, formats=()), "at least one format"),
        (lambda: Codec(name="PCMU/8000", clock_rate=8000), "contains a slash"),
        (lambda: Codec(name="PCMU", clock_rate=0), "is not valid"),
        (
            lambda: SessionDescription(version=1, origin=Origin(session_id="1", version=1, address="x")),
            "not 0",
        ),
    ],
)
def test_invalid_construction(build: object, message: str) -> None:
    with pytest.raises(LocalProtocolError, match=message):
        build()  # type: ignore[operator]


def test_direction_helpers() -> None:
    assert Direction.SENDONLY.reverse() is Direction.RECVONLY
    assert Direction.RECVONLY.reverse() is Direction.SENDONLY
    assert Direction.SENDRECV.reverse() is Direction.SENDRECV
    assert Direction.INACTIVE.reverse() is Direction.INACTIVE
    for d in Direction:
        assert Direction.from_flags(send=d.sends, receive=d.receives) is d


# --------------------------------------------------------------------------------------------------
# Our offer and the answer to it (user1 leg)
# --------------------------------------------------------------------------------------------------


def test_offer_is_golden() -> None:
    assert bytes(our_offer()) == load("mss_offer.sdp")


def test_offer_options() -> None:
    offer = our_offer(
        ("G729", "PCMA"),
        telephone_event_pt=None,
        ptime=None,
        direction=Direction.SENDONLY,
        fmtp={"g729": "annexb=no"},
        host="::1",
    )
    assert bytes(offer) == (
        b"v=0\r\no=- 3921400000 3921400000 IN IP6 ::1\r\ns=mss\r\nc=IN IP6 ::1\r\nt=0 0\r\n"
        b"m=audio 30000 RTP/AVP 18 8\r\na=rtpmap:18 G729/8000\r\na=fmtp:18 annexb=no\r\n"
        b"a=rtpmap:8 PCMA/8000\r\na=sendonly\r\n"
    )


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"codecs": "PCMU"}, "codecs must be a non-empty sequence of names, not 'PCMU'"),
        ({"codecs": ()}, "codecs must be a non-empty sequence of names, not ()"),
        ({"codecs": ("GSM",)}, "codec 'GSM' is not one mss relays (PCMU, PCMA, G729)"),
        ({"codecs": ("PCMU", "pcmu")}, "codec 'pcmu' is listed twice"),
        ({"telephone_event_pt": 18}, "telephone-event payload type 18 is not dynamic (96-127)"),
        ({"host": "mss.example.net"}, "local media host 'mss.example.net' is not an IP address"),
        ({"port": 65536}, "local media port 65536 is not a port number (0-65535)"),
        ({"ptime": 0}, "ptime 0 is not positive"),
    ],
)
def test_offer_refuses_bad_arguments(kw: dict[str, Any], message: str) -> None:
    with pytest.raises(LocalProtocolError) as info:
        our_offer(**kw)
    assert str(info.value) == message


def test_read_pjsua2_answer() -> None:
    offer = our_offer()
    n = read_answer(offer, sdp("pjsua2_answer_pcmu.sdp"))
    assert n == Negotiated(
        codec=Codec(name="PCMU", clock_rate=8000),
        local_pt=0,
        remote_pt=0,
        local_te_pt=101,
        remote_te_pt=101,
        remote_address="127.0.0.1",
        remote_port=4002,
        remote_rtcp_address="127.0.0.1",
        remote_rtcp_port=4003,
        local_direction=Direction.SENDRECV,
        remote_direction=Direction.SENDRECV,
        hold=False,
        ptime=None,
        stream_index=0,
    )
    assert n.send and n.receive


def test_read_answer_choosing_pcma() -> None:
    n = read_answer(our_offer(), sdp("pjsua2_answer_pcma.sdp"))
    assert (n.codec.name, n.local_pt, n.remote_pt) == ("PCMA", 8, 8)
    assert (n.remote_address, n.remote_port, n.remote_rtcp_port) == ("127.0.0.2", 4004, 4005)


def test_read_answer_with_other_telephone_event_number_and_no_rtcp_attribute() -> None:
    n = read_answer(our_offer(), sdp("trunk_answer_pcmu_te96.sdp"))
    assert (n.local_te_pt, n.remote_te_pt) == (101, 96)
    assert (n.remote_rtcp_address, n.remote_rtcp_port) == ("127.0.0.3", 16389)  # RFC 3550 §11: port + 1
    assert n.ptime == 20


def test_read_answer_without_telephone_event() -> None:
    answer = parse_sdp(
        b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
        b"m=audio 4002 RTP/AVP 18\r\n"
    )
    n = read_answer(our_offer(), answer)
    assert n.codec == Codec(name="G729", clock_rate=8000)
    assert n.local_te_pt is None and n.remote_te_pt is None


def test_read_answer_on_hold() -> None:
    held = with_direction(sdp("pjsua2_answer_pcmu.sdp"), Direction.SENDONLY)
    n = read_answer(our_offer(), held)
    assert n.hold
    assert n.remote_direction is Direction.SENDONLY
    assert n.receive and not n.send
    n = read_answer(our_offer(), with_direction(held, Direction.INACTIVE))
    assert n.hold and not n.receive and not n.send
    # recvonly is not hold: the remote still takes our media, it only sends none.
    n = read_answer(our_offer(), with_direction(held, Direction.RECVONLY))
    assert not n.hold and n.send and not n.receive


def test_read_answer_with_null_address() -> None:
    answer = parse_sdp(load("pjsua2_answer_pcmu.sdp").replace(b"c=IN IP4 127.0.0.1", b"c=IN IP4 0.0.0.0"))
    n = read_answer(our_offer(), answer)
    assert n.hold
    assert n.remote_direction is Direction.SENDONLY  # RFC 3264 §8.4: 0.0.0.0 does not receive
    assert n.remote_rtcp_address == "127.0.0.1"  # a=rtcp names its own address


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        ("answer_rejected.sdp", "the answer rejected the audio stream (port 0)"),
        (
            "answer_unoffered_codec.sdp",
            "the answer chose no codec of the offer (offered PCMU/8000, PCMA/8000, G729/8000; "
            "answered GSM/8000, telephone-event/8000)",
        ),
        ("answer_fqdn.sdp", "c= address 'media.example.net' is not an IP address"),
        ("pjsua2_audio_video.sdp", "the answer has 2 m= lines for the 1 of the offer"),
        ("offer_video_only.sdp", "the answer's stream 1 is m=video RTP/AVP, not m=audio RTP/AVP"),
    ],
)
def test_unusable_answers(answer: str, message: str) -> None:
    with pytest.raises(SdpError) as info:
        read_answer(our_offer(), sdp(answer))
    assert info.value.reason == message
    assert info.value.status == 488


def test_answer_address_family_must_match() -> None:
    answer = parse_sdp(load("pjsua2_answer_pcmu.sdp").replace(b"c=IN IP4 127.0.0.1", b"c=IN IP6 127.0.0.1"))
    with pytest.raises(SdpError, match=r"^c= address '127.0.0.1' is not an IP6 address$"):
        read_answer(our_offer(), answer)


def test_read_answer_of_a_sendonly_offer() -> None:
    offer = our_offer(direction=Direction.SENDONLY)
    n = read_answer(offer, with_direction(sdp("pjsua2_answer_pcmu.sdp"), Direction.RECVONLY))
    assert n.local_direction is Direction.SENDONLY
    assert n.send and not n.receive


# --------------------------------------------------------------------------------------------------
# The offer to user2 and the relay's payload-type map
# --------------------------------------------------------------------------------------------------


def test_bridge_offer_is_golden() -> None:
    first = read_answer(our_offer(), sdp("pjsua2_answer_pcmu.sdp"))
    offer = make_bridge_offer(first, host="127.0.0.1", port=30002, session_id=3921400001, version=3921400001)
    assert bytes(offer) == load("mss_bridge_offer.sdp")


def test_bridge_offer_keeps_the_first_legs_numbers_and_fmtp() -> None:
    first = read_answer(our_offer(), sdp("trunk_answer_pcmu_te96.sdp"))
    offer = make_bridge_offer(first, host="127.0.0.1", port=30002, session_id=1, version=1)
    assert offer.media[0].formats == ("0", "96")
    g729_leg = dataclasses.replace(
        first, codec=Codec(name="G729", clock_rate=8000, fmtp="annexb=no"), remote_pt=18
    )
    offer = make_bridge_offer(g729_leg, host="127.0.0.1", port=30002, session_id=1, version=1, ptime=None)
    assert offer.media[0].codecs == {
        18: Codec(name="G729", clock_rate=8000, fmtp="annexb=no"),
        96: Codec(name="telephone-event", clock_rate=8000, fmtp="0-16"),
    }


def test_bridge_offer_without_telephone_event_on_the_first_leg() -> None:
    first = dataclasses.replace(
        read_answer(our_offer(), sdp("pjsua2_answer_pcmu.sdp")), local_te_pt=None, remote_te_pt=None
    )
    offer = make_bridge_offer(first, host="127.0.0.1", port=30002, session_id=1, version=1)
    assert offer.media[0].formats == ("0", "101")


def test_two_pjsua2_legs_need_no_rewrite() -> None:
    leg_a = read_answer(our_offer(), sdp("pjsua2_answer_pcmu.sdp"))
    offer_b = make_bridge_offer(leg_a, host="127.0.0.1", port=30002, session_id=1, version=1)
    answer_b = parse_sdp(load("pjsua2_answer_pcmu.sdp").replace(b"4002", b"4006"))
    leg_b = read_answer(offer_b, answer_b)
    assert pt_mapping(leg_a, leg_b) == ({}, {})


def test_telephone_event_numbers_differ_between_legs() -> None:
    # user1 answered telephone-event as 96 to our 101; user2 (pjsua2) mirrors our 96 offer.
    leg_a = read_answer(our_offer(), sdp("trunk_answer_pcmu_te96.sdp"))
    offer_b = make_bridge_offer(leg_a, host="127.0.0.1", port=30002, session_id=1, version=1)
    answer_b = parse_sdp(load("pjsua2_answer_pcmu.sdp").replace(b"101", b"96"))
    leg_b = read_answer(offer_b, answer_b)
    assert (leg_b.local_te_pt, leg_b.remote_te_pt) == (96, 96)
    a_to_b, b_to_a = pt_mapping(leg_a, leg_b)
    assert a_to_b == {101: 96}  # user1 sends our 101; user2 expects 96
    assert b_to_a == {}  # user2 sends 96; user1 expects 96


def test_mapping_when_our_numbers_differ_on_both_legs() -> None:
    leg_a = read_answer(our_offer(), sdp("pjsua2_answer_pcmu.sdp"))
    offer_b = make_bridge_offer(
        leg_a, host="127.0.0.1", port=30002, session_id=1, version=1, telephone_event_pt=110
    )
    answer_b = parse_sdp(load("pjsua2_answer_pcmu.sdp").replace(b"101", b"110"))
    leg_b = read_answer(offer_b, answer_b)
    assert pt_mapping(leg_a, leg_b) == ({101: 110}, {110: 101})


def test_mapping_tolerates_a_sender_using_its_own_numbers() -> None:
    leg_a = dataclasses.replace(
        read_answer(our_offer(), sdp("pjsua2_answer_pcmu.sdp")), local_te_pt=101, remote_te_pt=97
    )
    leg_b = dataclasses.replace(leg_a, local_te_pt=101, remote_te_pt=101)
    a_to_b, b_to_a = pt_mapping(leg_a, leg_b)
    assert a_to_b == {97: 101}  # leg A should send 101 (ours) but may send its own 97
    assert b_to_a == {101: 97}


def test_mapping_refuses_different_codecs() -> None:
    leg_a = read_answer(our_offer(), sdp("pjsua2_answer_pcmu.sdp"))
    leg_b = read_answer(our_offer(), sdp("pjsua2_answer_pcma.sdp"))
    with pytest.raises(SdpError) as info:
        pt_mapping(leg_a, leg_b)
    assert (
        info.value.reason == "the legs use different codecs (PCMU/8000 and PCMA/8000); mss does not transcode"
    )


# --------------------------------------------------------------------------------------------------
# Answers to far-end offers (re-INVITE, UPDATE)
# --------------------------------------------------------------------------------------------------


def test_answer_to_pjsua2_offer_is_golden() -> None:
    answer, n = answer_to("pjsua2_offer.sdp")
    assert bytes(answer) == load("mss_answer_pjsua2_offer.sdp")
    assert n.codec == Codec(name="PCMU", clock_rate=8000)
    assert (n.local_pt, n.remote_pt) == (0, 0)
    assert (n.local_te_pt, n.remote_te_pt) == (121, 121)  # the 8000 Hz one, not 120 or 122
    assert (n.remote_address, n.remote_port, n.remote_rtcp_port) == ("127.0.0.1", 4000, 4001)
    assert not n.hold


def test_answer_picks_the_offers_first_allowed_codec() -> None:
    _, n = answer_to("pjsua2_offer.sdp", ("PCMA", "PCMU"))
    assert n.codec.name == "PCMU"  # the offer's order decides, not ours
    _, n = answer_to("pjsua2_offer.sdp", ("PCMA",))
    assert (n.codec.name, n.local_pt) == ("PCMA", 8)


def test_answer_to_hold_is_golden() -> None:
    answer, n = answer_to("pjsua2_hold_sendonly.sdp", ("PCMU",), version=3921400002)
    assert bytes(answer) == load("mss_answer_hold.sdp")
    assert n.hold
    assert n.remote_direction is Direction.SENDONLY
    assert n.local_direction is Direction.RECVONLY
    assert n.receive and not n.send


def test_answer_to_inactive() -> None:
    answer, n = answer_to("pjsua2_hold_inactive.sdp", ("PCMU",))
    assert answer.direction_of(answer.media[0]) is Direction.INACTIVE
    assert n.hold and not n.send and not n.receive


def test_answer_to_rfc2543_hold() -> None:
    answer, n = answer_to("rfc2543_hold.sdp")
    assert n.hold
    assert n.remote_address == "0.0.0.0"
    assert n.remote_direction is Direction.SENDONLY
    assert answer.media[0].direction is Direction.RECVONLY
    assert n.local_te_pt == 101
    assert answer.media[0].codecs[101].fmtp == "0-15"  # the offer's events, mirrored


def test_answer_to_resume_at_a_new_address() -> None:
    _, n = answer_to("pjsua2_resume_new_address.sdp", ("PCMU",))
    assert not n.hold
    assert (n.remote_address, n.remote_port) == ("127.0.0.5", 4010)
    assert (n.remote_rtcp_address, n.remote_rtcp_port) == ("127.0.0.5", 4011)
    assert n.send and n.receive


def test_answer_to_recvonly_offer() -> None:
    offer = with_direction(sdp("pjsua2_offer.sdp"), Direction.RECVONLY)
    answer, n = make_answer(offer, host="127.0.0.1", port=30000, codecs=["PCMU"], session_id=1, version=1)
    assert answer.media[0].direction is Direction.SENDONLY
    assert not n.hold and n.send and not n.receive


def test_answer_when_mss_itself_holds() -> None:
    answer, _ = answer_to("pjsua2_offer.sdp", direction=Direction.INACTIVE)
    assert answer.media[0].direction is Direction.INACTIVE
    answer, _ = answer_to("pjsua2_offer.sdp", direction=Direction.SENDONLY)
    assert answer.media[0].direction is Direction.SENDONLY


def test_answer_inherits_session_level_direction() -> None:
    answer, n = answer_to("ipv6_session_attributes.sdp", host="::1")  # an IPv6 offer needs an IPv6 relay
    assert n.remote_direction is Direction.SENDONLY and n.hold
    assert answer.media[0].direction is Direction.RECVONLY
    assert (n.remote_address, n.ptime) == ("2001:db8::2", 30)
    assert n.remote_rtcp_port == 49171


def test_answer_rejects_other_streams_with_port_zero() -> None:
    answer, n = answer_to("pjsua2_audio_video.sdp", ("PCMU", "PCMA"))
    assert bytes(answer) == load("mss_answer_audio_video.sdp")
    assert len(answer.media) == 2
    assert n.stream_index == 0


def test_answer_uses_the_first_plain_rtp_audio_stream() -> None:
    answer, n = answer_to("srtp_then_rtp.sdp")
    assert [(m.port, m.proto) for m in answer.media] == [(0, "RTP/SAVP"), (30000, "RTP/AVP")]
    assert answer.media[0].formats == ("8", "0", "101")
    assert answer.media[0].attributes == ()
    assert n.stream_index == 1
    assert (n.codec.name, n.remote_port) == ("PCMA", 4002)


def test_answer_to_carrier_g729_mirrors_fmtp() -> None:
    answer, n = answer_to("carrier_g729_offer.sdp", ptime=20)
    assert n.codec == Codec(name="G729", clock_rate=8000, fmtp="annexb=no")
    assert (n.local_te_pt, n.ptime) == (101, 20)
    assert [str(a) for a in answer.media[0].attributes] == [
        "rtpmap:18 G729/8000",
        "fmtp:18 annexb=no",
        "rtpmap:101 telephone-event/8000",
        "fmtp:101 0-15",
        "ptime:20",
        "sendrecv",
    ]


def test_answer_without_telephone_event() -> None:
    answer, n = answer_to("pjsua2_offer.sdp", telephone_event=False)
    assert answer.media[0].formats == ("0",)
    assert n.local_te_pt is None


@pytest.mark.parametrize(
    ("offer", "codecs", "message"),
    [
        (
            "offer_wideband_only.sdp",
            ALL_CODECS,
            "no codec in common: the offer has speex/16000, G722/8000, GSM/8000; "
            "mss takes PCMU/8000, PCMA/8000, G729/8000",
        ),
        (
            "carrier_g729_offer.sdp",
            ("PCMU", "PCMA"),
            "no codec in common: the offer has G729/8000; mss takes PCMU/8000, PCMA/8000",
        ),
        ("offer_video_only.sdp", ALL_CODECS, "the offer has no RTP/AVP audio stream with a port"),
        ("answer_rejected.sdp", ALL_CODECS, "the offer has no RTP/AVP audio stream with a port"),
        ("answer_fqdn.sdp", ALL_CODECS, "c= address 'media.example.net' is not an IP address"),
    ],
)
def test_unusable_offers(offer: str, codecs: tuple[str, ...], message: str) -> None:
    with pytest.raises(SdpError) as info:
        answer_to(offer, codecs)
    assert info.value.reason == message
    assert info.value.status == 488


def test_our_offer_answered_by_ourselves() -> None:
    offer = our_offer(("PCMA", "G729"))
    answer, theirs = make_answer(
        offer, host="127.0.0.9", port=40000, codecs=["G729"], session_id=7, version=7
    )
    ours = read_answer(offer, answer)
    assert ours.codec.name == theirs.codec.name == "G729"
    assert (ours.remote_address, ours.remote_port) == ("127.0.0.9", 40000)
    assert (theirs.remote_address, theirs.remote_port) == ("127.0.0.1", 30000)
    assert pt_mapping(ours, theirs) == ({}, {})


# --------------------------------------------------------------------------------------------------
# Versions (RFC 3264 §8) and re-offers
# --------------------------------------------------------------------------------------------------


def test_local_sdp_versions() -> None:
    leg = LocalSdp(session_id=3921400000)
    first = leg.stamp(our_offer(session_id=1, version=1))
    assert first.origin.session_id == "3921400000"
    assert first.origin.version == 3921400000
    # A refresh with the same content keeps the version ...
    same = leg.stamp(our_offer(session_id=5, version=9))
    assert same == first
    # ... a change increments it by one and keeps the rest of the o= line.
    held = leg.stamp(with_direction(first, Direction.SENDONLY))
    assert held.origin == dataclasses.replace(first.origin, version=3921400001)
    assert held.media[0].direction is Direction.SENDONLY
    resumed = leg.stamp(with_direction(held, Direction.SENDRECV))
    assert resumed.origin.version == 3921400002
    assert leg.last is resumed
    moved = leg.stamp(our_offer(host="127.0.0.2"))
    assert moved.origin.version == 3921400003
    assert moved.origin.address == "127.0.0.1"  # RFC 3264 §8: the o= line stays identical


def test_local_sdp_first_version() -> None:
    assert LocalSdp(session_id="abc").stamp(our_offer()).origin.version == 1
    assert LocalSdp(session_id=5, version=0).stamp(our_offer()).origin.version == 0


def test_with_direction_replaces_in_place_and_drops_session_level() -> None:
    sd = sdp("ipv6_session_attributes.sdp")
    changed = with_direction(sd, Direction.INACTIVE)
    assert changed.direction is None
    assert changed.media[0].attributes[-1] == Attribute(name="inactive")
    pjsua = sdp("pjsua2_offer.sdp")
    held = with_direction(pjsua, Direction.SENDONLY)
    names = [a.name for a in pjsua.media[0].attributes]
    assert names[:2] == ["rtcp", "sendrecv"]
    assert [a.name for a in held.media[0].attributes] == ["rtcp", "sendonly", *names[2:]]


def test_with_direction_needs_audio() -> None:
    with pytest.raises(LocalProtocolError):
        with_direction(sdp("offer_video_only.sdp"), Direction.SENDONLY)


def test_refresh_compares_equal() -> None:
    # A session refresh repeats the SDP (same version): nothing to renegotiate.
    assert sdp("pjsua2_hold_sendonly.sdp") == sdp("pjsua2_hold_sendonly.sdp")
    assert sdp("pjsua2_hold_sendonly.sdp") != sdp("pjsua2_hold_inactive.sdp")


# --------------------------------------------------------------------------------------------------
# Properties
# --------------------------------------------------------------------------------------------------

_token = st.text(
    alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.", min_size=1, max_size=12
)
_text = st.text(alphabet=st.characters(exclude_characters="\r\n\0", exclude_categories=["Cs"]), max_size=20)
_attributes = st.lists(
    st.builds(
        Attribute,
        name=_token.filter(
            lambda s: (
                s
                not in {"rtpmap", "rtcp", "ptime", "maxptime", "sendrecv", "sendonly", "recvonly", "inactive"}
            )
        ),
        value=st.none() | _text,
    ),
    max_size=5,
).map(tuple)


@given(
    codecs=st.lists(st.sampled_from(ALL_CODECS), min_size=1, max_size=3, unique=True),
    te=st.none() | st.integers(96, 127),
    port=st.integers(1, 65535),
    direction=st.sampled_from(list(Direction)),
    extra=_attributes,
    session_attrs=_attributes,
    name=_text,
)
def test_any_description_round_trips(
    codecs: list[str],
    te: int | None,
    port: int,
    direction: Direction,
    extra: tuple[Attribute, ...],
    session_attrs: tuple[Attribute, ...],
    name: str,
) -> None:
    offer = our_offer(tuple(codecs), telephone_event_pt=te, port=port, direction=direction)
    media = dataclasses.replace(offer.media[0], attributes=offer.media[0].attributes + extra)
    sd = dataclasses.replace(offer, media=(media,), attributes=session_attrs, session_name=name)
    again = parse_sdp(bytes(sd))
    assert again == sd
    assert bytes(again) == bytes(sd)


@given(
    offered=st.lists(st.sampled_from(ALL_CODECS), min_size=1, max_size=3, unique=True),
    allowed=st.lists(st.sampled_from(ALL_CODECS), min_size=1, max_size=3, unique=True),
    te=st.none() | st.integers(96, 127),
    direction=st.sampled_from(list(Direction)),
    answerer=st.sampled_from(list(Direction)),
)
def test_offer_answer_agree(
    offered: list[str], allowed: list[str], te: int | None, direction: Direction, answerer: Direction
) -> None:
    offer = our_offer(tuple(offered), telephone_event_pt=te, direction=direction)
    common = [c for c in offered if c in allowed]
    if not common:
        with pytest.raises(SdpError):
            make_answer(offer, host="127.0.0.2", port=4000, codecs=allowed, session_id=1, version=1)
        return
    answer, theirs = make_answer(
        offer, host="127.0.0.2", port=4000, codecs=allowed, session_id=1, version=1, direction=answerer
    )
    ours = read_answer(offer, parse_sdp(bytes(answer)))
    assert ours.codec.name == theirs.codec.name == common[0]
    assert ours.local_te_pt == ours.remote_te_pt == theirs.local_te_pt == te
    # RFC 3264 §6.1: the answer's direction is the offer's, reversed, within what the answerer wants.
    assert ours.remote_direction is theirs.local_direction
    assert not (theirs.local_direction.sends and not direction.receives)
    assert not (theirs.local_direction.receives and not direction.sends)
    assert ours.send == theirs.receive and ours.receive == theirs.send
    assert pt_mapping(ours, theirs) == ({}, {})


# --- huge and non-ASCII numbers ------------------------------------------------------------------

#: One digit past the 4,300 that int() converts (sys.get_int_max_str_digits()): unguarded, int()
#: raises ValueError instead of SdpError.
HUGE = "9" * 4301

_FIELDS = {
    "o": "- 1 1 IN IP4 127.0.0.1",
    "b": "AS:84",
    "t": "0 0",
    "r": "7d 1h 0 25h",
    "m": "4000 RTP/AVP 0 101",
    "rtpmap": "101 telephone-event/8000",
    "fmtp": "101 0-16",
    "ptime": "20",
    "maxptime": "40",
    "rtcp": "4001",
}


def _body(**fields: str) -> bytes:
    f = {**_FIELDS, **fields}
    return (
        f"v=0\r\no={f['o']}\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nb={f['b']}\r\nt={f['t']}\r\nr={f['r']}\r\n"
        f"m=audio {f['m']}\r\na=rtpmap:{f['rtpmap']}\r\na=fmtp:{f['fmtp']}\r\na=ptime:{f['ptime']}\r\n"
        f"a=maxptime:{f['maxptime']}\r\na=rtcp:{f['rtcp']}\r\n"
    ).encode()


def _cut(text: str) -> str:
    """How an error message quotes a long piece of input."""
    return f"{text[:80]!r}... ({len(text)} characters)"


_RTPMAP_EXPECTED = "expected <payload type 0-127> <encoding>/<clock rate>[/<channels>]"


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        (
            "o",
            f"- 1 {HUGE} IN IP4 127.0.0.1",
            f"line 2: bad o= line {_cut(f'o=- 1 {HUGE} IN IP4 127.0.0.1')}: session version of 4301 "
            "digits is longer than 20 (RFC 3264 §5: a 64-bit integer)",
        ),
        (
            "m",
            f"{HUGE} RTP/AVP 0",
            f"line 8: bad m= line {_cut(f'm=audio {HUGE} RTP/AVP 0')}: port {_cut(HUGE)} is not a number",
        ),
        (
            "m",
            f"4000/{HUGE} RTP/AVP 0",
            f"line 8: bad m= line {_cut(f'm=audio 4000/{HUGE} RTP/AVP 0')}: port {_cut('4000/' + HUGE)} "
            "is not a number",
        ),
        (
            "m",
            f"4000 RTP/AVP 0 {HUGE}",
            f"line 8: bad m= line {_cut(f'm=audio 4000 RTP/AVP 0 {HUGE}')}: payload type {_cut(HUGE)} "
            "is not a number 0-127",
        ),
        ("rtpmap", f"{HUGE} PCMU/8000", f"line 9: bad a=rtpmap value {_cut(HUGE + ' PCMU/8000')}: "
         + _RTPMAP_EXPECTED),
        ("rtpmap", f"0 PCMU/{HUGE}", f"line 9: bad a=rtpmap value {_cut('0 PCMU/' + HUGE)}: "
         + _RTPMAP_EXPECTED),
        ("rtpmap", f"0 PCMU/8000/{HUGE}", f"line 9: bad a=rtpmap value {_cut('0 PCMU/8000/' + HUGE)}: "
         + _RTPMAP_EXPECTED),
        ("ptime", HUGE, f"line 11: bad a=ptime value {_cut(HUGE)}: expected milliseconds"),
        ("ptime", f"20.{HUGE}", f"line 11: bad a=ptime value {_cut('20.' + HUGE)}: expected milliseconds"),
        ("maxptime", HUGE, f"line 12: bad a=maxptime value {_cut(HUGE)}: expected milliseconds"),
        ("rtcp", HUGE, f"line 13: bad a=rtcp value {_cut(HUGE)}: expected <port> [IN <IP4|IP6> <address>]"),
        (
            "rtcp",
            f"{HUGE} IN IP4 127.0.0.1",
            f"line 13: bad a=rtcp value {_cut(HUGE + ' IN IP4 127.0.0.1')}: "
            "expected <port> [IN <IP4|IP6> <address>]",
        ),
    ],
)
def test_huge_numbers_are_refused_with_a_clear_error(field: str, value: str, message: str) -> None:
    # Every number mss converts has its length bounded first: the parser's SdpError (488), with the
    # hostile line cut short in the message, never a ValueError from int().
    with pytest.raises(SdpError) as info:
        parse_sdp(_body(**{field: value}))
    assert info.value.reason == message
    assert info.value.status == 488


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("o", f"- {HUGE} 1 IN IP4 127.0.0.1"),  # sess-id: an identifier, compared as written
        ("b", f"AS:{HUGE}"),
        ("t", f"{HUGE} {HUGE[:4000]}"),
        ("r", f"{HUGE} 1h 0"),
        ("fmtp", f"101 0-{HUGE}"),
    ],
)
def test_huge_numbers_mss_never_converts_are_kept_as_written(field: str, value: str) -> None:
    # b=, t=, r=, fmtp and the session id are carried as text (nothing in mss computes with them),
    # so a huge number there parses, round-trips and negotiates.
    body = _body(**{field: value})
    sd = parse_sdp(body)
    assert value.encode() in bytes(sd)
    assert parse_sdp(bytes(sd)) == sd
    answer, negotiated = make_answer(
        sd, host="127.0.0.2", port=5000, codecs=["PCMU"], session_id=1, version=1
    )
    assert negotiated.codec.name == "PCMU"
    assert negotiated.remote_te_pt == 101
    assert parse_sdp(bytes(answer)).media[0].port == 5000


def test_longest_session_version_is_taken() -> None:
    sd = parse_sdp(_body(o="- 1 18446744073709551615 IN IP4 127.0.0.1"))
    assert sd.origin.version == 2**64 - 1


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        # '²' is str.isdigit() but not a digit int() reads: unguarded, it raised ValueError.
        ("o", "- 1 ² IN IP4 127.0.0.1", "line 2: bad o= line 'o=- 1 ² IN IP4 127.0.0.1': session version "
         "'²' is not a number"),
        # Arabic-Indic 4000: int() reads it, but the SDP grammar's DIGIT is ASCII only.
        ("m", "٤٠٠٠ RTP/AVP 0", "line 8: bad m= line 'm=audio ٤٠٠٠ RTP/AVP 0': port '٤٠٠٠' is not a number"),
        ("m", "4000 RTP/AVP ٨", "line 8: bad m= line 'm=audio 4000 RTP/AVP ٨': payload type '٨' is not a "
         "number 0-127"),
        ("ptime", "٢٠", "line 11: bad a=ptime value '٢٠': expected milliseconds"),
    ],
)
def test_numbers_are_ascii_digits(field: str, value: str, message: str) -> None:
    with pytest.raises(SdpError) as info:
        parse_sdp(_body(**{field: value}))
    assert info.value.reason == message


def test_local_sdp_with_an_overlong_numeric_session_id_starts_at_version_1() -> None:
    assert LocalSdp(session_id=HUGE).first_version == 1
    assert LocalSdp(session_id="3921400000").first_version == 3921400000


def test_an_out_of_range_port_on_a_long_m_line_is_quoted_cut_short() -> None:
    # The port is read before the formats, so a long list of them after a port over 65535 was
    # quoted whole in the error (every other m= error already cut it).
    value = "70000 RTP/AVP " + " ".join(["0"] * 4000)
    with pytest.raises(SdpError) as info:
        parse_sdp(_body(m=value))
    assert info.value.reason == (
        f"line 8: bad m= line {_cut('m=audio ' + value)}: port 70000 is out of range"
    )


def test_the_package_is_the_syntax_and_offer_answer_modules() -> None:
    # mss.sdp re-exports both modules' surfaces, and the syntax knows nothing of offer/answer.
    import ast

    import mss.sdp
    from mss.sdp import crypto, offer_answer, syntax

    assert sorted(mss.sdp.__all__) == sorted([*syntax.__all__, *offer_answer.__all__, *crypto.__all__])
    for module in (syntax, offer_answer, crypto):
        for name in module.__all__:
            assert getattr(mss.sdp, name) is getattr(module, name)
    tree = ast.parse((Path(mss.sdp.__file__).parent / "syntax.py").read_text(encoding="utf-8"))
    imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert imported == {"__future__", "collections.abc", "dataclasses", "mss.errors", "mss.frozen"}
