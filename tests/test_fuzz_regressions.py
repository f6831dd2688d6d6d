"""What fuzzing found (``python -m bench.fuzz``), kept: each crash's minimal input, and properties.

A parser of network input may refuse it only with its documented error (``mss/errors.py``): IIF with
:class:`~mss.errors.IIFError`, SIP with :class:`~mss.errors.SipError`, SDP with
:class:`~mss.errors.SdpError`. Anything else (a ValueError from ``int()``, an IndexError, a
RecursionError) escapes into the event loop: no answer, a connection closed, a call lost.

The first part holds the crashes the fuzzer found, each as the shrunk input that raised it; the
second part is hypothesis properties over arbitrary bytes and digit-inflated messages, with bounded
example counts so the whole file stays fast.
"""

from __future__ import annotations

import contextlib
import itertools
import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mss import iif, sdp
from mss.errors import IIFError, SdpError, SipError
from mss.sip import auth, framing, message, uri

DATA = Path(__file__).parent / "data"

#: One digit past the 4,300 that int() converts (sys.get_int_max_str_digits()).
HUGE = "9" * 4301

_FAST = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# --- reading everything a parser accepted ---------------------------------------------------------


def read_sip(msg: message.Request | message.Response) -> None:
    """Every parsed field, as the layers above read them (accessors parse lazily)."""
    for via in msg.via:
        _ = (via.branch, via.received, via.rport, str(via))
    _ = (msg.call_id, msg.cseq, msg.content_type)
    for addr in (msg.from_, msg.to, *msg.contacts, *msg.route, *msg.record_route):
        _ = (addr.tag, str(addr))
    for name in ("WWW-Authenticate", "Proxy-Authenticate"):
        for value in msg.headers.get_all(name):
            auth.parse_challenge(value, proxy=name.startswith("Proxy"))
    if isinstance(msg, message.Request) and msg.method != "ACK":
        message.make_response(msg, 200, to_tag="t")


def sip_accepts_or_refuses(data: bytes) -> None:
    try:
        msg = message.parse_message(data)
    except SipError:
        message.error_response(data, 400, "bad")
        return
    read_sip(msg)


def sdp_accepts_or_refuses(data: bytes) -> None:
    try:
        sd = sdp.parse_sdp(data)
    except SdpError:
        return
    for media in sd.media:
        for prop in ("codecs", "rtcp", "ptime", "maxptime"):
            with contextlib.suppress(SdpError):
                getattr(media, prop)
    assert sdp.parse_sdp(bytes(sd)) == sd or len(bytes(sd)) > sdp.MAX_SDP_SIZE
    with contextlib.suppress(SdpError):
        sdp.read_answer(OUR_OFFER, sd)
    with contextlib.suppress(SdpError):
        sdp.make_answer(sd, host="127.0.0.1", port=30002, codecs=["PCMU", "PCMA", "G729"],
                        session_id=1, version=1)


OUR_OFFER = sdp.make_offer(host="127.0.0.1", port=30000, codecs=["PCMU", "PCMA", "G729"],
                           session_id=1, version=1)


def iif_accepts_or_refuses(data: bytes, chunks: list[int] | None = None) -> None:
    for role in (iif.Role.SERVER, iif.Role.CLIENT):
        with contextlib.suppress(IIFError):
            iif.parse_datagram(data, role=role)
    conn = iif.IIFConnection()
    cuts = sorted({0, len(data), *(c % (len(data) + 1) for c in chunks or ())})
    now = 1000.0
    for start, end in itertools.pairwise(cuts):
        conn.receive_data(data[start:end], now)
        now += 0.01
    timer = conn.get_timer()
    if timer is not None:
        conn.handle_timer(timer)
    conn.receive_data(b"", now)
    for _ in range(len(data) + 8):
        try:
            if conn.next_event() is None:
                break
        except IIFError:
            continue
    else:
        pytest.fail("next_event() never ran dry")


# --- regressions: the crashes fuzzing found ---------------------------------------------------------


def test_via_port_of_non_ascii_digits_is_a_sip_error() -> None:
    # Found by bench.fuzz (sip-values): '²' is str.isdigit() but int() cannot read it, so
    # parse_via raised ValueError from int(); a Via header like it crashed parse_message.
    with pytest.raises(SipError, match="bad sent-by port"):
        uri.parse_via("SIP/2.0/UDP h : ²")
    with pytest.raises(SipError, match="bad sent-by port"):
        uri.parse_via("SIP/2.0/UDP h:٥٠٦٠")  # Arabic-Indic 5060: int() reads it, SIP does not
    request = (
        b"OPTIONS sip:mss@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1 : \xc2\xb2;branch=z9hG4bK1\r\n"
        b"From: <sip:a@127.0.0.1>;tag=1\r\nTo: <sip:mss@127.0.0.1>\r\nCall-ID: c\r\nCSeq: 1 OPTIONS\r\n\r\n"
    )
    with pytest.raises(SipError, match="bad sent-by port"):
        message.parse_message(request)


def test_cseq_with_thousands_of_leading_zeros_is_a_sip_error() -> None:
    # Found by test_sip_with_an_inflated_number: the length bound skipped leading zeros, then
    # int() of the whole 4,401-digit string raised ValueError. Zeros are no number's length.
    request = (
        "OPTIONS sip:mss@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1;branch=z9hG4bK1\r\n"
        "From: <sip:a@127.0.0.1>;tag=1\r\nTo: <sip:mss@127.0.0.1>\r\nCall-ID: c\r\n"
        f"CSeq: {'0' * 4400}1 OPTIONS\r\n\r\n"
    ).encode()
    assert message.parse_message(request).cseq.seq == 1
    with pytest.raises(SipError, match="larger than 2"):
        message.parse_message(request.replace(b"01 OPTIONS", b"02147483648 OPTIONS"))


def test_digest_challenge_with_a_realm_that_is_not_utf8_is_answered() -> None:
    # Found by bench.fuzz (sip-ua): a 407 whose realm held the byte 0xED reached the digest hash
    # as a surrogate (the parser decodes with surrogateescape) and raised UnicodeEncodeError out of
    # the UA's receive_data. The hash is over the octets that came, as RFC 7616 §3.4.1 computes it.
    import hashlib

    challenge = auth.parse_challenge(b'Digest realm="r\xed", nonce="n"'.decode("utf-8", "surrogateescape"),
                                     proxy=True)
    assert challenge is not None
    value = auth.authorization(challenge, username="u", password="p", method="INVITE", uri="sip:x",
                               cnonce="c")
    md5 = lambda b: hashlib.md5(b).hexdigest()  # noqa: E731
    expected = md5(f"{md5(b'u:r' + bytes([0xED]) + b':p')}:n:{md5(b'INVITE:sip:x')}".encode())
    assert f'response="{expected}"' in value


def test_a_407_with_a_realm_that_is_not_utf8_does_not_crash_the_ua() -> None:
    import random

    from mss.sip.settings import UASettings
    from mss.sip.ua import UserAgent

    settings = UASettings(local_host="127.0.0.1", local_port=5070, transport="udp", pss_host="127.0.0.1",
                          pss_port=5060, caller="mss", domain="127.0.0.1", register=False,
                          auth_user="mss", password="secret")
    ua = UserAgent(settings, rng=random.Random(7))
    ua.invite("L1", "100", b"v=0\r\n", 1000.0)
    invite = message.parse_message(ua.data_to_send()[0][0])
    assert isinstance(invite, message.Request)
    challenge = message.make_response(
        invite, 407, to_tag="t", headers=[("Proxy-Authenticate", 'Digest realm="r\udced", nonce="n"')]
    )
    ua.receive_data(challenge.encode(), ("127.0.0.1", 5060), 1000.1)
    sent = [message.parse_message(data) for data, _ in ua.data_to_send()]
    retry = [m for m in sent if isinstance(m, message.Request) and m.method == "INVITE"]
    assert len(retry) == 1
    assert b'realm="r\xed"' in retry[0].encode()


def test_an_sdp_of_repeat_lines_parses_in_linear_time() -> None:
    # Found by bench.fuzz (sdp, slowest input): every r= line rebuilt its t= line's tuple of
    # repeats, so a 16 kB body of 4,000 "r=1" lines took 0.8 s of the event loop (6 ms now).
    # Timed as a ratio (ten times the lines must cost far less than a hundred times the time, the
    # quadratic figure), the best of a few runs each, so a loaded machine does not decide it.
    import time

    def best(lines: int) -> float:
        body = b"v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\ns=-\r\nt=0 0\r\n" + b"r=1\n" * lines
        assert len(body) <= sdp.MAX_SDP_SIZE
        runs = []
        for _ in range(5):
            start = time.perf_counter()
            sd = sdp.parse_sdp(body)
            runs.append(time.perf_counter() - start)
        assert len(sd.times[0].repeats) == lines
        return min(runs)

    small, large = best(400), best(4000)
    assert large < 40 * small, f"{large / small:.0f}x the time for 10x the lines"


# --- properties: arbitrary bytes ------------------------------------------------------------------


@_FAST
@given(st.binary(max_size=600), st.lists(st.integers(0, 600), max_size=4))
def test_iif_arbitrary_bytes(data: bytes, chunks: list[int]) -> None:
    iif_accepts_or_refuses(data, chunks)


@_FAST
@given(st.binary(max_size=1500))
def test_sip_arbitrary_bytes(data: bytes) -> None:
    sip_accepts_or_refuses(data)
    framer = framing.StreamFramer()
    try:
        for frame in framer.feed(data):
            if isinstance(frame, bytes):
                with contextlib.suppress(SipError):
                    message.parse_message(frame, exact=True)
    except SipError:
        pass


_HEADER_TEXT = st.text(
    alphabet=st.sampled_from(list("sip:@;=,<>\"\\%[]/. \t?&0123456789abcXYZ²٥-_*#+")), max_size=80
)


@_FAST
@given(_HEADER_TEXT)
def test_sip_value_parsers_arbitrary_text(text: str) -> None:
    for parse in (
        lambda: uri.parse_uri(text),
        lambda: uri.parse_name_addr(text, "Contact"),
        lambda: uri.parse_via(text),
        lambda: uri.parse_params(text, "test"),
        lambda: auth.parse_challenge(text, proxy=False),
    ):
        try:
            value = parse()
        except SipError:
            continue
        if isinstance(value, uri.Via):
            _ = value.rport


@_FAST
@given(st.binary(max_size=800))
def test_sdp_arbitrary_bytes(data: bytes) -> None:
    sdp_accepts_or_refuses(b"v=0\r\n" + data)
    sdp_accepts_or_refuses(data)


# --- properties: real messages with one number inflated -----------------------------------------

_SIP = sorted((DATA / "sip").rglob("*.sip"))
_SDP = sorted((DATA / "sdp").glob("*.sdp"))
_IIF = [
    b"REQUEST: id=1234;user1=100;user2=101;duration=3600;\r\n",
    b"CANCEL: id=1234;\r\n",
    b"RESPONSE: id=1234;real_duration=180;result=answered;code=200;\r\n",
    b"ACK: id=1234;code=ok;\r\n",
]
_DIGITS = st.sampled_from([HUGE, "1" + "0" * 4400, "0" * 4400 + "1", "4294967296", "18446744073709551616"])


def inflate(data: bytes, which: int, digits: str) -> bytes:
    """``data`` with its ``which``-th run of digits (modulo their number) replaced by ``digits``."""
    runs = list(re.finditer(rb"[0-9]+", data))
    if not runs:
        return data
    run = runs[which % len(runs)]
    return data[: run.start()] + digits.encode() + data[run.end() :]


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(_SIP), st.integers(0, 200), _DIGITS)
def test_sip_with_an_inflated_number(path: Path, which: int, digits: str) -> None:
    sip_accepts_or_refuses(inflate(path.read_bytes(), which, digits))


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(_SDP), st.integers(0, 200), _DIGITS)
def test_sdp_with_an_inflated_number(path: Path, which: int, digits: str) -> None:
    sdp_accepts_or_refuses(inflate(path.read_bytes(), which, digits))


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(_IIF), st.integers(0, 10), _DIGITS)
def test_iif_with_an_inflated_number(line: bytes, which: int, digits: str) -> None:
    iif_accepts_or_refuses(inflate(line, which, digits), [7, 100])


@pytest.mark.parametrize("name", ["Max-Forwards", "Content-Length", "CSeq", "Expires"])
def test_each_numeric_sip_header_read_on_parsing_refuses_a_huge_number(name: str) -> None:
    value = f"{HUGE} OPTIONS" if name == "CSeq" else HUGE
    request = (
        "OPTIONS sip:mss@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1;branch=z9hG4bK1\r\n"
        "From: <sip:a@127.0.0.1>;tag=1\r\nTo: <sip:mss@127.0.0.1>\r\nCall-ID: c\r\n"
        + ("" if name == "CSeq" else "CSeq: 1 OPTIONS\r\n")
        + f"{name}: {value}\r\n\r\n"
    ).encode()
    with pytest.raises(SipError) as info:
        message.parse_message(request)
    assert info.value.status == 400
    assert len(str(info.value)) < 200  # the number is not echoed whole


def test_session_timer_numbers_refuse_a_huge_number() -> None:
    from mss.sip.leg import parse_session_expires

    with pytest.raises(SipError):
        parse_session_expires(f"{HUGE};refresher=uac")


# --- properties: the UA's handlers read numbers the parser does not ---------------------------------

_NUMBER_HEADERS = [
    "Session-Expires", "Min-SE", "RSeq", "Retry-After", "Expires", "Min-Expires", "Max-Forwards",
]


@settings(max_examples=150, deadline=None)
@given(
    st.sampled_from(_NUMBER_HEADERS),
    _DIGITS | st.sampled_from(["1800;refresher=" + HUGE, "²", "-1", ""]),
    st.sampled_from([180, 183, 200, 401, 422, 423, 486, 503]),
)
def test_ua_takes_answers_with_inflated_numbers(header: str, value: str, status: int) -> None:
    # A 2xx with a Session-Expires of 4,301 digits once escaped the UA as a ValueError: whatever the
    # number, receive_data and the timers raise nothing, and a 2xx is still acknowledged.
    import random

    from mss.sip.settings import UASettings
    from mss.sip.ua import UserAgent

    settings = UASettings(local_host="127.0.0.1", local_port=5070, transport="udp", pss_host="127.0.0.1",
                          pss_port=5060, caller="mss", domain="127.0.0.1", register=False,
                          auth_user="mss", password="secret")
    ua = UserAgent(settings, rng=random.Random(7))
    now = 1000.0
    ua.invite("L1", "100", b"v=0\r\n", now)
    invite = message.parse_message(ua.data_to_send()[0][0])
    assert isinstance(invite, message.Request)
    headers = [("Contact", "<sip:100@127.0.0.1:5062>"), (header, value)]
    if status in (180, 183):
        headers.append(("Require", "100rel"))
    if status == 401:
        headers.append(("WWW-Authenticate", 'Digest realm="x", nonce="n"'))
    answer = message.make_response(invite, status, to_tag="t", headers=headers)
    ua.receive_data(answer.encode(), ("127.0.0.1", 5060), now)
    sent = [message.parse_message(data) for data, _ in ua.data_to_send()]
    while ua.next_event() is not None:
        pass
    if status == 200:
        assert any(isinstance(m, message.Request) and m.method in ("ACK", "BYE") for m in sent)
    for _ in range(50):
        deadline = ua.get_timer()
        if deadline is None:
            break
        now = max(now, deadline)
        ua.handle_timer(now)
        ua.data_to_send()
        while ua.next_event() is not None:
            pass
