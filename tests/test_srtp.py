"""SRTP passthrough, sans-IO: SDES a=crypto lines (RFC 4568) and the call flow that carries them
between the phones, on a fake clock."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mss import sdp
from mss.callflow import (
    MAX_KEY_CHANGES,
    Answered,
    AnswerOffer,
    Command,
    Invite,
    MarkBridged,
    OfferReceived,
    Progress,
    Reinvite,
    ReinviteResult,
    RelayBridge,
    RelayPlay,
    RelayRemote,
    RelayStopPlay,
    SendResponse,
)
from mss.errors import LocalProtocolError, SdpError
from tests.test_callflow import Harness, crlf, response_of

K1 = "1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz"
K2 = "1 AES_CM_128_HMAC_SHA1_80 inline:d0RmdmcmVCspeEc3QGZiNWpVLFJhQX1cfHAwJSoj"
K1_NEW = "1 AES_CM_128_HMAC_SHA1_80 inline:QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNk|2^20|1:4"


def srtp_answer(
    offer: bytes, *, key: str | None = K1, host: str = "127.0.0.2", port: int = 4002,
    proto: str = "RTP/SAVP", te_pt: int = 101, direction: str = "sendrecv", version: int = 1,
) -> bytes:
    """What a pjsua2 phone with SRTP mandatory answers: the offer's first codec and payload type, its
    own key under the offered tag."""
    media = sdp.parse_sdp(offer).media[0]
    pt = next(pt for pt, c in media.codecs.items() if not c.is_telephone_event)
    codec = media.codecs[pt]
    lines = [
        "v=0", f"o=- 77 {version} IN IP4 {host}", "s=pjmedia", "t=0 0",
        f"m=audio {port} {proto} {pt} {te_pt}", f"c=IN IP4 {host}", f"a=rtcp:{port + 1}",
        f"a=rtpmap:{pt} {codec}", f"a=rtpmap:{te_pt} telephone-event/8000", f"a=fmtp:{te_pt} 0-16",
        f"a={direction}",
    ]
    if key is not None:
        lines.append(f"a=crypto:{key}")
    return crlf("\n".join(lines))


def crypto_of(body: bytes) -> list[str]:
    return [line.value for line in sdp.crypto_lines(sdp.parse_sdp(body).media[0])]


def proto_of(body: bytes) -> str:
    return sdp.parse_sdp(body).media[0].proto


class SrtpCall(Harness):
    def __init__(self, **kw: Any) -> None:
        super().__init__(srtp=True, **kw)

    def up(self, **user2: Any) -> list[Command]:
        """user1 answers with K1, user2 rings and answers with K2."""
        self.start()
        self.feed(Progress(leg="user1", status=180))
        self.after(3)
        self.feed(Answered(leg="user1", sdp=srtp_answer(self.offers["user1"])))
        self.feed(Progress(leg="user2", status=180))
        self.after(3)
        user2.setdefault("key", K2)
        return self.feed(Answered(leg="user2", sdp=srtp_answer(self.offers["user2"], host="127.0.0.3",
                                                               port=4004, **user2)))


# --- a=crypto lines -------------------------------------------------------------------------------


def test_a_crypto_line_is_read_as_tag_suite_and_its_value_verbatim() -> None:
    line = sdp.CryptoLine.parse(K1_NEW)
    assert (line.tag, line.suite, line.value) == (1, "AES_CM_128_HMAC_SHA1_80", K1_NEW)
    assert line.with_tag(3).value == "3" + K1_NEW[1:]


@pytest.mark.parametrize(
    ("value", "why"),
    [
        ("", "is not <tag>"),
        ("x AES_CM_128_HMAC_SHA1_80 inline:abc", "is not <tag>"),
        ("1234567890 AES_CM_128_HMAC_SHA1_80 inline:abc", "is not <tag>"),  # tag is 1*9DIGIT
        ("1 AES-CM inline:abc", "is not <tag>"),  # suite: ALPHA, DIGIT, "_"
        ("1 AES_CM_128_HMAC_SHA1_80", "is not <tag>"),  # no key
        ("1 AES_CM_128_HMAC_SHA1_80 abc", "is not <tag>"),  # key-method ":" key-info
        ("1  AES_CM_128_HMAC_SHA1_80 inline:abc", "is not <tag>"),
        ("1 AES_CM_128_HMAC_SHA1_80 inline:abc\x00", "is not <tag>"),
        ("1 AES_CM_128_HMAC_SHA1_80 inline:" + "A" * 600, "is over 512"),
    ],
)
def test_a_malformed_crypto_line_is_a_clear_sdp_error(value: str, why: str) -> None:
    with pytest.raises(SdpError, match=why):
        sdp.CryptoLine.parse(value)


@given(st.text(max_size=600))
def test_any_crypto_value_is_read_or_refused_with_an_sdp_error(value: str) -> None:
    try:
        line = sdp.CryptoLine.parse(value)
    except SdpError:
        return
    assert line.value == value and len(value) <= sdp.MAX_CRYPTO_VALUE
    assert not any(ch in value for ch in "\r\n\0\t")


def test_crypto_lines_are_bounded_and_their_tags_distinct() -> None:
    def media(*values: str) -> sdp.MediaDescription:
        attrs = tuple(sdp.Attribute(name="crypto", value=v) for v in values)
        return sdp.MediaDescription(port=4000, proto="RTP/SAVP", formats=("0",), attributes=attrs)

    assert [c.tag for c in sdp.crypto_lines(media(K1, "2" + K2[1:]))] == [1, 2]
    with pytest.raises(SdpError, match="tag 1 appears twice"):
        sdp.crypto_lines(media(K1, K2))
    many = [f"{i} AES_CM_128_HMAC_SHA1_80 inline:abc" for i in range(1, sdp.MAX_CRYPTO_LINES + 2)]
    with pytest.raises(SdpError, match=f"more than {sdp.MAX_CRYPTO_LINES} a=crypto lines"):
        sdp.crypto_lines(media(*many))


def test_a_cr_or_lf_in_a_crypto_line_cannot_reach_an_sdp_of_ours() -> None:
    with pytest.raises(LocalProtocolError, match="our SDP's a=crypto"):
        sdp.make_offer(host="127.0.0.1", port=30000, codecs=["PCMU"], session_id=1, version=1,
                       crypto=[K1 + "\r\na=inactive"])


def test_the_placeholder_is_a_fresh_30_byte_key_of_the_mandatory_suite() -> None:
    import base64

    a, b = sdp.placeholder_crypto(), sdp.placeholder_crypto()
    assert a.suite == "AES_CM_128_HMAC_SHA1_80" and a.tag == 1
    assert a.value != b.value
    assert len(base64.b64decode(a.value.split("inline:")[1])) == 30


def test_without_srtp_an_rtp_savp_offer_is_refused_as_before() -> None:
    offer = crlf(srtp_answer(crlf("v=0\no=- 1 1 IN IP4 127.0.0.1\ns=-\nc=IN IP4 127.0.0.1\nt=0 0\n"
                                  "m=audio 4000 RTP/AVP 0 101\na=rtpmap:101 telephone-event/8000"),
                             ).decode())
    with pytest.raises(SdpError, match="no RTP/AVP audio stream"):
        sdp.make_answer(sdp.parse_sdp(offer), host="127.0.0.1", port=30000, codecs=["PCMU"],
                        session_id=1, version=1)


# --- the call flow --------------------------------------------------------------------------------


def test_user1_is_offered_rtp_savp_with_a_placeholder_key_and_user2_user1s_key_and_numbers() -> None:
    h = SrtpCall()
    h.start()
    assert proto_of(h.offers["user1"]) == "RTP/SAVP"
    [placeholder] = crypto_of(h.offers["user1"])
    assert placeholder.startswith("1 AES_CM_128_HMAC_SHA1_80 inline:")
    commands = h.feed(Answered(leg="user1", sdp=srtp_answer(h.offers["user1"])))
    # No ringback: the relay cannot encrypt a tone.
    assert not [c for c in commands if isinstance(c, RelayPlay)]
    [invite] = [c for c in commands if isinstance(c, Invite)]
    assert invite.leg == "user2"
    offer2 = sdp.parse_sdp(invite.sdp).media[0]
    assert offer2.proto == "RTP/SAVP" and offer2.formats == ("0", "101")
    assert crypto_of(invite.sdp) == [K1]


def test_after_user2_answers_user1_is_reinvited_with_user2s_key_and_the_bridge_rewrites_nothing() -> None:
    h = SrtpCall()
    commands = h.up()
    assert [type(c) for c in commands] == [
        RelayRemote, RelayStopPlay, RelayBridge, MarkBridged, Reinvite,
    ]
    assert commands[2] == RelayBridge(a_to_b={}, b_to_a={}, srtp=True)
    reinvite = commands[4]
    assert isinstance(reinvite, Reinvite) and reinvite.leg == "user1"
    assert proto_of(reinvite.sdp) == "RTP/SAVP" and crypto_of(reinvite.sdp) == [K2]
    assert sdp.parse_sdp(reinvite.sdp).media[0].formats == ("0", "101")
    # user1 accepts, with the key it had: nothing more to do.
    assert h.feed(ReinviteResult(leg="user1", status=200, sdp=srtp_answer(reinvite.sdp, version=2))) == []
    assert h.call.result is None


@pytest.mark.parametrize(("status", "body"), [(488, None), (500, None), (200, b"")])
def test_a_failed_key_reinvite_to_user1_releases_the_call(status: int, body: bytes | None) -> None:
    h = SrtpCall()
    h.up()
    commands = h.feed(ReinviteResult(leg="user1", status=status, sdp=body))
    response = response_of(commands)
    assert response.result == "user1_failed"
    assert response.reason.startswith("SRTP keys could not be passed to user1")


def test_a_glare_on_the_key_reinvite_is_retried_then_fails() -> None:
    h = SrtpCall()
    h.up()
    for _ in range(3):
        assert h.feed(ReinviteResult(leg="user1", status=491)) == []
        [again] = h.after(5)
        assert isinstance(again, Reinvite) and crypto_of(again.sdp) == [K2]
    response = response_of(h.feed(ReinviteResult(leg="user1", status=491)))
    assert response.result == "user1_failed" and "SRTP keys" in response.reason


@pytest.mark.parametrize(
    ("kw", "why"),
    [({"key": None}, "no a=crypto line"), ({"proto": "RTP/AVP"}, "not m=audio RTP/SAVP"),
     ({"key": "2 AES_CM_128_HMAC_SHA1_80 inline:abc"}, "tag 2"),
     ({"key": "1 AES_CM_128_HMAC_SHA1_80 inline:abc\tdef"}, "line")],
)
def test_an_answer_without_a_usable_key_fails_the_leg(kw: dict[str, Any], why: str) -> None:
    h = SrtpCall()
    h.start()
    response = response_of(h.feed(Answered(leg="user1", sdp=srtp_answer(h.offers["user1"], **kw))))
    assert response.result == "user1_failed" and response.code == 488 and why in response.reason
    h2 = SrtpCall()
    response = response_of(h2.up(**kw))
    assert response.result == "user2_failed" and why in response.reason


def test_user2_renumbering_payload_types_on_srtp_fails_it() -> None:
    h = SrtpCall()
    response = response_of(h.up(te_pt=96))
    assert response.result == "user2_failed" and "SRTP packets cannot be rewritten" in response.reason


def test_a_bridge_rewriting_srtp_cannot_be_built() -> None:
    with pytest.raises(LocalProtocolError, match="SRTP packets cannot be rewritten"):
        RelayBridge(a_to_b={101: 96}, b_to_a={}, srtp=True)


def test_user2s_early_media_is_not_relayed_on_srtp() -> None:
    h = SrtpCall()
    h.start()
    h.feed(Answered(leg="user1", sdp=srtp_answer(h.offers["user1"])))
    early = srtp_answer(h.offers["user2"], key=K2, host="127.0.0.3", port=4004)
    assert h.feed(Progress(leg="user2", status=183, sdp=early)) == []


def test_a_phone_offering_a_new_key_gets_the_other_key_and_the_other_phone_gets_the_new_one() -> None:
    h = SrtpCall()
    reinvite = h.up()[-1]
    assert isinstance(reinvite, Reinvite)
    h.feed(ReinviteResult(leg="user1", status=200, sdp=srtp_answer(reinvite.sdp, version=2)))
    # user2 re-INVITEs with two lines, a new key first.
    offer = srtp_answer(h.offers["user2"], key=K1_NEW, host="127.0.0.3", port=4004, version=3)
    offer = offer.replace(b"a=crypto:", b"a=crypto:2 AES_CM_128_HMAC_SHA1_32 inline:abc\r\na=crypto:", 1)
    commands = h.feed(OfferReceived(leg="user2", sdp=offer))
    answer, reflected = commands[0], commands[-1]
    assert isinstance(answer, AnswerOffer) and answer.sdp is not None
    # Our answer carries user1's key under the tag of the offered line of the same suite.
    assert crypto_of(answer.sdp) == [K1]
    assert isinstance(reflected, Reinvite) and reflected.leg == "user1"
    assert crypto_of(reflected.sdp) == [K1_NEW]


def test_an_rtp_avp_offer_on_an_srtp_call_is_refused() -> None:
    h = SrtpCall()
    h.up()
    offer = srtp_answer(h.offers["user2"], key=None, proto="RTP/AVP", host="127.0.0.3", port=4004, version=3)
    assert h.feed(OfferReceived(leg="user2", sdp=offer)) == [AnswerOffer(leg="user2", sdp=None)]


def test_a_key_changed_in_an_answer_is_passed_on_and_endless_changes_are_bounded() -> None:
    h = SrtpCall()
    reinvite = h.up()[-1]
    assert isinstance(reinvite, Reinvite)
    keys = [f"1 AES_CM_128_HMAC_SHA1_80 inline:{chr(65 + i) * 40}" for i in range(MAX_KEY_CHANGES + 1)]
    leg, version = "user1", 2
    response: SendResponse | None = None
    for key in keys:
        commands = h.feed(ReinviteResult(leg=leg, status=200,  # type: ignore[arg-type]
                                         sdp=srtp_answer(reinvite.sdp, key=key, version=version)))
        found = [c for c in commands if isinstance(c, SendResponse)]
        if found:
            response = found[0]
            break
        reinvite = commands[-1]
        assert isinstance(reinvite, Reinvite) and reinvite.leg != leg and crypto_of(reinvite.sdp) == [key]
        leg, version = reinvite.leg, version + 1
    assert response is not None and "more than" in response.reason
