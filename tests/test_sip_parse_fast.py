"""The SIP parse fast path agrees with the general parsers, and a parsed message's fields never raise.

``parse_message`` validates each header mss uses by one regex of its common shape and builds the
value only when a property reads it; other shapes take the general parser at once. These tests check
the contract that makes this safe: a fast-shape match always stands for a value the general parser
accepts, equal to what it returns (properties over generated header values, valid and broken), and a
message ``parse_message`` accepted has fields that read without an error. Then: the header section
cut in C (mss/sip/_head.pyx) is what the Python cuts, on every fixture and on arbitrary bytes; and
the TCP framer finds Content-Length as the line-by-line rule does.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mss.errors import SipError
from mss.sip import framing, message
from mss.sip._grammar import SIP_URI_FAST_RE
from mss.sip.message import (
    CSeq,
    Headers,
    Request,
    Response,
    _name_cache,
    _parse_cseq,
    _parse_cseq_general,
    _split_head_py,
    parse_message,
)
from mss.sip.uri import (
    NameAddr,
    SipUri,
    Via,
    _parse_name_addr,
    _parse_uri_slow,
    _parse_via,
    match_name_addr,
    match_via,
    name_addr_from_match,
    parse_name_addr,
    parse_uri,
    parse_via,
    via_from_match,
)

# Pieces that sit at the edges of the grammar: delimiters, escapes (good and broken), white space,
# quotes, non-ASCII, ports out of range, uppercase schemes.
_BITS = [
    "a", "Z", "0", "9", "-", ".", "_", "!", "~", "*", "'", "(", ")", "&", "=", "+", "$", ",", ";",
    "?", "/", ":", "@", "%", "%41", "%4", "%zz", "[", "]", "<", ">", '"', "\\", " ", "\t", "#", "é",
    "sip:", "SIP:", "tel:", "5060", "65536", "0", "lr", "tag", "x",
]  # fmt: skip
_text = st.lists(st.sampled_from(_BITS), max_size=8).map("".join)


def _pick(good: list[str], bad: list[str]) -> st.SearchStrategy[str]:
    """Mostly one of the ``good`` forms, sometimes a ``bad`` one or arbitrary pieces."""
    forms = st.sampled_from(good * 12 + bad)
    return st.integers(0, 19).flatmap(lambda i: _text if i == 19 else forms)


def _some(good: list[str], bad: list[str]) -> st.SearchStrategy[str]:
    """Zero to three of them, joined."""
    return st.lists(_pick(good, bad), max_size=3).map("".join)


_scheme = _pick(["sip:", "sips:"], ["SIP:", "Sips:", "tel:", "sip"])
_user = _pick(
    ["", "100@", "alice@", "*31%23555@", "a;b=c@", "u:pw@", "u:@", "+1-555@"], ["@", "a b@", "%4@", "u:p:w@"]
)
_host = _pick(
    ["h", "127.0.0.1", "pss.example.net", "[::1]", "[2001:db8::1]", "a_b.c", "a."], ["a-", "-a", "[::1", ""]
)
_port = _pick(["", ":5060", ":0", ":65535", ":05060"], [":65536", ":99999", ":", ":x"])
_uparams = _some([";lr", ";transport=tcp", ";ob", ";maddr=[::1]", ";x=%41"], [";=x", ";", ";a b", ";x=%4"])
_uheaders = _pick(["", "?Subject=hi", "?a=b&c=", "?a=%3C"], ["?x", "?", "?a=b&"])
_hparams = _some(
    [";tag=6a1f", ";expires=60", ";q=0.5", ";lr", ";p=[::1]"], [';p="a;b"', " ;x=1", ";;", ";t=a b", ";t="]
)
_display = _pick(
    ["", '"5551000" ', '"A B"', '""', "Bob ", "Bob"], ['"x\\"y" ', "Bob Smith ", "\t", '"x', "a,b "]
)


@st.composite
def _uris(draw: st.DrawFn) -> str:
    return draw(_scheme) + draw(_user) + draw(_host) + draw(_port) + draw(_uparams) + draw(_uheaders)


@st.composite
def _name_addrs(draw: st.DrawFn) -> str:
    uri = draw(_uris())
    if draw(st.integers(0, 4)):
        return draw(_display) + "<" + uri + ">" + draw(_hparams)
    return uri + draw(_hparams)  # the addr-spec form


@st.composite
def _vias(draw: st.DrawFn) -> str:
    proto = draw(_pick(["SIP/2.0/"], ["SIP / 2.0 / ", "sip/2.0/", "SIP/2.1/"]))
    transport = draw(_pick(["UDP", "tcp", "TLS"], ["", "U-P"]))
    sep = draw(_pick([" "], ["  ", "\t", ""]))
    params = draw(
        _some([";branch=z9hG4bK1", ";rport", ";received=1.2.3.4", ";rport=5070"], [" ; x = 1", ";", ';b="q"'])
    )
    return proto + transport + sep + draw(_host) + draw(_port) + params


def _general(parse: Callable[[str], object], value: str) -> object:
    """What a general parser gives for ``value``: its value, or the SipError's reason."""
    try:
        return parse(value)
    except SipError as exc:
        return ("error", exc.reason)


_SETTINGS = settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@_SETTINGS
@given(st.one_of(_name_addrs(), _text))
def test_a_name_addr_fast_match_is_what_the_general_parser_gives(value: str) -> None:
    m = match_name_addr(value)
    general = _general(lambda v: _parse_name_addr(v, "To"), value)
    if m is not None:
        assert name_addr_from_match(m) == general
    assert _general(lambda v: parse_name_addr(v, "To"), value) == general


@_SETTINGS
@given(st.one_of(_vias(), _text))
def test_a_via_fast_match_is_what_the_general_parser_gives(value: str) -> None:
    m = match_via(value)
    general = _general(_parse_via, value)
    if m is not None:
        assert via_from_match(m) == general
    assert _general(parse_via, value) == general


@_SETTINGS
@given(st.one_of(_uris(), _text))
def test_a_request_uri_fast_match_parses_and_is_written_back_as_is(value: str) -> None:
    m = SIP_URI_FAST_RE.fullmatch(value)
    if m is not None and m.group(7) is None and (m.group(5) is None or int(m.group(5)) <= 65535):
        assert _parse_uri_slow(value) == parse_uri(value)
        assert str(parse_uri(value)) == value


@_SETTINGS
@given(
    st.one_of(
        st.builds(
            lambda n, m: f"{n} {m}", st.integers(0, 2**32), _pick(["INVITE", "BYE"], ["x y", "", "IN\\x00"])
        ),
        st.builds(lambda z, n: "0" * z + str(n) + " ACK", st.integers(0, 12), st.integers(0, 2**31)),
        _text,
    )
)
def test_a_cseq_fast_match_is_what_the_general_parser_gives(value: str) -> None:
    assert _general(_parse_cseq, value) == _general(_parse_cseq_general, value)


def _message(via: str, from_: str, to: str, contact: str, route: str, ruri: str) -> bytes:
    return (
        f"OPTIONS {ruri} SIP/2.0\r\nVia: {via}\r\nFrom: {from_}\r\nTo: {to}\r\nCall-ID: c1\r\n"
        f"CSeq: 7 OPTIONS\r\nContact: {contact}\r\nRoute: {route}\r\nRecord-Route: {route}\r\n"
        f"Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    ).encode("utf-8", "surrogateescape")


def _or(usual: str, values: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    """``usual`` two times in three, else a generated value (so most messages have one or two)."""
    return st.integers(0, 2).flatmap(lambda i: st.just(usual) if i else values)


@_SETTINGS
@given(
    _or("SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK1", _vias()),
    _or('"A" <sip:a@h>;tag=1', _name_addrs()),
    _or("<sip:b@h>", _name_addrs()),
    _or("<sip:a@127.0.0.1:5070>", _name_addrs()),
    _or("<sip:127.0.0.1;lr>", _name_addrs()),
    _or("sip:b@h", _uris()),
)
def test_an_accepted_message_has_fields_that_read_without_error(
    via: str, from_: str, to: str, contact: str, route: str, ruri: str
) -> None:
    if any(c in v for v in (via, from_, to, contact, route, ruri) for c in "\r\n"):
        return
    data = _message(via, from_, to, contact, route, ruri)
    try:
        msg = parse_message(data)
    except SipError:
        return
    assert isinstance(msg, Request)
    # Every field reads (the general parsers agree) and the message writes back and reads again.
    assert msg.via == [parse_via(v) for v in msg.headers.get_list("Via")]
    assert msg.top_via == msg.via[0]
    assert msg.from_ == parse_name_addr(from_, "From")
    assert msg.to == parse_name_addr(to, "To")
    contacts = msg.headers.get_list("Contact")
    assert msg.contacts == ([] if contacts == ["*"] else [parse_name_addr(c) for c in contacts])
    assert msg.route == msg.record_route == [parse_name_addr(r) for r in msg.headers.get_list("Route")]
    assert msg.uri == parse_uri(ruri)
    assert (msg.call_id, msg.cseq) == ("c1", CSeq(7, "OPTIONS"))
    again = parse_message(msg.encode())
    assert again == msg and again.encode() == msg.encode()


INVITE = (
    b"INVITE sip:100@pss.example.net SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK5f8a;rport\r\n"
    b"v: SIP/2.0/TCP 10.0.0.1;branch=z9hG4bK0, SIP/2.0/UDP [::1]:5062;branch=z9hG4bK9\r\n"
    b"Max-Forwards: 70\r\n"
    b'From: "5551000" <sip:5551000@pss.example.net>;tag=6a1f\r\n'
    b"To: <sip:100@pss.example.net>\r\n"
    b"Call-ID: 9c1d@127.0.0.1\r\n"
    b"CSeq: 2 INVITE\r\n"
    b"Contact: <sip:5551000@127.0.0.1:5070>\r\n"
    b"Record-Route: <sip:127.0.0.1;lr;ftag=6a1f>\r\n"
    b"Record-Route: <sip:10.0.0.1;lr>, <sip:[::2];lr>\r\n"
    b"Supported: timer\r\n"
    b"Content-Length: 0\r\n"
    b"\r\n"
)


def test_fields_are_built_when_read_and_kept() -> None:
    msg = parse_message(INVITE)
    assert isinstance(msg, Request)
    assert [v.host for v in msg.via] == ["127.0.0.1", "10.0.0.1", "[::1]"]
    assert msg.via is not msg.via and msg.via == msg.via  # a copy each time: the caller may change it
    assert msg.top_via is msg.top_via and msg.top_via.branch == "z9hG4bK5f8a"
    assert msg.from_ is msg.from_ and msg.from_.tag == "6a1f" and msg.from_.display == "5551000"
    assert [str(r.uri) for r in msg.record_route] == [
        "sip:127.0.0.1;lr;ftag=6a1f",
        "sip:10.0.0.1;lr",
        "sip:[::2];lr",
    ]
    assert msg.uri is msg.uri and msg.uri == SipUri(host="pss.example.net", user="100")
    assert msg.cseq is msg.cseq
    assert msg.encode() == INVITE.replace(b"\r\nv: ", b"\r\nVia: ")


def test_the_header_index_follows_changes() -> None:
    msg = parse_message(INVITE)
    h = msg.headers
    assert h.get("v") == "SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK5f8a;rport"  # the first line
    assert h.get_all("Record-Route") == ["<sip:127.0.0.1;lr;ftag=6a1f>", "<sip:10.0.0.1;lr>, <sip:[::2];lr>"]
    assert "k" in h and "Require" not in h
    h.set("Supported", "100rel")
    h.add("Require", "timer")
    assert (h.get("Supported"), h.get("Require"), "Require" in h) == ("100rel", "timer", True)
    h.remove("Via")
    assert h.get("Via") is None and "Via" not in h
    copy = parse_message(INVITE).headers.copy()
    copy.add("X-A", "1")
    assert copy.get("X-A") == "1"


def test_locally_built_messages_parse_their_headers_when_read() -> None:
    h = Headers([("Via", "SIP/2.0/UDP h;branch=z9hG4bK1"), ("From", "<sip:a@h>;tag=1"), ("To", "bad <"),
                 ("Call-ID", "x"), ("CSeq", "1 OPTIONS"), ("Content-Length", "9"), ("l", "3")])  # fmt: skip
    req = Request("OPTIONS", parse_uri("sip:h"), h)
    assert req.from_ == NameAddr(uri=SipUri(host="h", user="a"), params=(("tag", "1"),))
    assert req.top_via == Via(transport="UDP", host="h", params=(("branch", "z9hG4bK1"),))
    try:
        req.to  # noqa: B018 - the property raises: the header was written wrong
    except SipError as exc:
        assert exc.reason == "To: '<' without '>'"
    else:  # pragma: no cover
        raise AssertionError("a bad To read without an error")
    # Content-Length comes from the body, once, where the first one was.
    wire = req.encode()
    assert wire.count(b"Content-Length") == 1 and b"\r\nContent-Length: 0\r\n\r\n" in wire
    resp = Response(200, "OK", Headers([("Via", "SIP/2.0/UDP h")]), b"abc")
    assert resp.encode().endswith(b"\r\nContent-Length: 3\r\n\r\nabc")


def test_a_repeated_single_header_is_refused_whatever_the_spelling() -> None:
    data = INVITE.replace(b"Call-ID: 9c1d@127.0.0.1\r\n", b"Call-ID: 9c1d@127.0.0.1\r\ni: other\r\n")
    try:
        parse_message(data)
    except SipError as exc:
        assert exc.reason == "Call-ID appears 2 times"
    else:  # pragma: no cover
        raise AssertionError("two Call-IDs accepted")


# --- the header section cut in C (mss/sip/_head.pyx) gives what the Python gives ------------------

FIXTURES = sorted((Path(__file__).parent / "data" / "sip").rglob("*.sip"))


def _outcome(parse: Callable[[], object]) -> object:
    try:
        return parse()
    except SipError as exc:
        return ("error", exc.status, exc.reason)


def _both_ways(data: bytes) -> tuple[object, object]:
    """parse_message's outcome with the C cutter and with the Python alone, and the cutters' own."""
    with_c = _outcome(lambda: parse_message(data))
    saved = message._split_head
    message._split_head = None
    try:
        python = _outcome(lambda: parse_message(data))
    finally:
        message._split_head = saved
    return with_c, python


def _check_cutter(data: bytes) -> None:
    split_head = pytest.importorskip("mss.sip._head").split_head
    cut = split_head(data, _name_cache)
    if cut is not None:
        assert cut == _split_head_py(data)
    with_c, python = _both_ways(data)
    assert with_c == python
    if isinstance(with_c, Request | Response):
        assert isinstance(python, Request | Response) and with_c.encode() == python.encode()


def _variants(data: bytes) -> Iterator[bytes]:
    yield data
    yield b"\r\n\r\n" + data  # leading CRLFs
    yield data.replace(b"\r\n", b"\n")  # bare LFs
    yield data.replace(b"\r\nTo:", b"\r\n To:")  # a folded line
    yield data.replace(b"\r\nCall-ID:", b"\r\nCall-ID :")  # a name the cache has not seen
    yield data.replace(b"\r\nCSeq:", b"\r\nCSeq \xe9:")
    yield data.replace(b"\r\nFrom:", b"\r\nFrom")  # no colon
    yield data.split(b"\r\n\r\n")[0]  # no end of the header section


@pytest.mark.parametrize("path", FIXTURES, ids=[p.stem for p in FIXTURES])
def test_the_c_cutter_gives_what_the_python_gives_for_every_fixture(path: Path) -> None:
    for data in _variants(path.read_bytes()):
        _check_cutter(data)


def test_the_c_cutter_takes_the_common_form() -> None:
    split_head = pytest.importorskip("mss.sip._head").split_head
    parse_message(INVITE)  # the names are in the cache
    cut = split_head(INVITE, _name_cache)
    assert cut is not None and cut[0] == "INVITE sip:100@pss.example.net SIP/2.0" and not cut[3]
    assert cut[2]["via"] == "SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK5f8a;rport" and cut[4] == b""
    assert split_head(b"\xff" * 70000, _name_cache) is None  # larger than a message: Python says so


_FLOOD_FIRST = """
from mss.errors import SipError
from mss.sip._head import split_head
from mss.sip.message import _name_cache, parse_message
from tests.test_sip_parse_fast import INVITE
for i in range(2000):  # odd names before any usual message: more than the cache takes
    try:
        parse_message(b"OPTIONS sip:h SIP/2.0\\r\\nX-Odd-%d: 1\\r\\n\\r\\n" % i)
    except SipError:  # no Via
        pass
assert len(_name_cache) == 1024, len(_name_cache)
print(split_head(INVITE, _name_cache) is not None)
"""


def test_the_known_names_stay_cut_fast_after_a_flood_of_odd_ones() -> None:
    pytest.importorskip("mss.sip._head")
    root = Path(__file__).parent.parent
    done = subprocess.run(
        [sys.executable, "-c", _FLOOD_FIRST], cwd=root, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "True"


@_SETTINGS
@given(
    st.binary(max_size=300),
    st.sampled_from([INVITE, b"SIP/2.0 200 OK\r\nVia: x\r\n\r\n"]),
    st.integers(0, 400),
)
def test_the_c_cutter_gives_what_the_python_gives_for_any_bytes(junk: bytes, base: bytes, at: int) -> None:
    _check_cutter(junk)
    _check_cutter(base[:at] + junk + base[at:])


# --- TCP framing: the Content-Length of a header section -------------------------------------------


def _content_length_by_lines(head: bytes) -> object:
    """The framer's rule line by line, as it was written before one regex found the lines."""
    found: int | None = None
    for line in head.split(b"\r\n")[1:]:
        if line[:1] in (b" ", b"\t"):
            continue
        name, colon, value = line.partition(b":")
        if colon and name.rstrip(b" \t").lower() in (b"content-length", b"l"):
            text = value.strip(b" \t")
            if not text.isdigit():
                return ("error", f"Content-Length {text[:20]!r} is not a number")
            if found is not None:
                return ("error", "Content-Length appears twice")
            found = int(text) if len(text) <= 10 else -1
    return ("error", "a message on a stream has no Content-Length") if found is None else found


def _content_length_now(head: bytes) -> object:
    try:
        return framing._content_length(head)
    except SipError as exc:
        return ("error", exc.reason)


_HEAD_BITS = [b"\r\n", b"\n", b"\r", b" ", b"\t", b":", b"l", b"L", b"Content-Length", b"content-LENGTH",
              b"Content-Lengthx", b"xl", b"5", b"12", b"007", b"-1", b"\xff", b"v: x"]  # fmt: skip


@_SETTINGS
@given(st.lists(st.sampled_from(_HEAD_BITS), max_size=20).map(b"".join))
def test_the_framer_finds_content_length_lines_as_the_line_by_line_rule(junk: bytes) -> None:
    for head in (b"INVITE sip:h SIP/2.0" + junk, junk, b"SIP/2.0 200 OK\r\nl: 3" + junk):
        expected = _content_length_by_lines(head)
        got = _content_length_now(head)
        if expected == -1 or (isinstance(expected, int) and expected > 65535):
            assert isinstance(got, tuple)  # too large: parse_number refuses it
        else:
            assert got == expected
