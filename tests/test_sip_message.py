"""SIP messages: RFC 4475 torture messages, round trips, headers, URIs, framing."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mss.errors import LocalProtocolError, SipError
from mss.sip.checks import check_request
from mss.sip.framing import KeepAlive, StreamFramer
from mss.sip.message import (
    MAX_MESSAGE_SIZE,
    CSeq,
    Headers,
    Request,
    Response,
    make_response,
    parse_message,
)
from mss.sip.uri import (
    AbsoluteUri,
    NameAddr,
    SipUri,
    Via,
    parse_name_addr,
    parse_uri,
    parse_via,
    split_commas,
    unescape,
)
from tests.helpers import feed_three_ways

DATA = Path(__file__).parent / "data" / "sip"
RFC4475 = DATA / "rfc4475"


def load(kind: str, name: str) -> bytes:
    return (RFC4475 / kind / f"{name}.sip").read_bytes()


def roundtrip(msg: Request | Response) -> None:
    """Serialising and parsing again gives the same message, and serialising that the same bytes."""
    wire = msg.encode()
    again = parse_message(wire, exact=True)
    assert type(again) is type(msg)
    if isinstance(msg, Request):
        assert isinstance(again, Request)
        assert (again.method, again.uri) == (msg.method, msg.uri)
    else:
        assert isinstance(again, Response)
        assert (again.status, again.reason) == (msg.status, msg.reason)
    strip_cl = [(n, v) for n, v in msg.headers if n != "Content-Length"]
    assert [(n, v) for n, v in again.headers if n != "Content-Length"] == strip_cl
    assert again.body == msg.body
    assert again.encode() == wire
    assert (again.via, again.from_, again.to, again.call_id, again.cseq) == (
        msg.via,
        msg.from_,
        msg.to,
        msg.call_id,
        msg.cseq,
    )


# --- RFC 4475 §3.1.1 (valid), §3.2, §3.4 ---------------------------------------------------------

VALID: dict[str, dict[str, Any]] = {
    "wsinv": {
        "method": "INVITE",
        "uri": "sip:vivekg@chair-dnrc.example.com;unknownparam",
        "call_id": "wsinv.ndaksdj@192.0.2.1",
        "cseq": CSeq(9, "INVITE"),
        "vias": [("UDP", "192.0.2.2", "390skdjuw"), ("TCP", "spindle.example.com", "z9hG4bK9ikj8"),
                 ("UDP", "192.168.255.111", "z9hG4bK30239")],
        "from": ('J Rosenberg \\"', "sip:jdrosen@example.com", "98asjd8"),
        "to": (None, "sip:vivekg@chair-dnrc.example.com", "1918181833n"),
        "body": 150,
    },
    "intmeth": {
        "method": "!interesting-Method0123456789_*+`.%indeed'~",
        "uri": "sip:1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*:&it+has=1,weird!*pas$wo~d_too"
        ".(doesn't-it)@example.com",
        "call_id": "intmeth.word%ZK-!.*_+'@word`~)(><:\\/\"][?}{",
        "cseq": CSeq(139122385, "!interesting-Method0123456789_*+`.%indeed'~"),
        "vias": [("TCP", "host1.example.com", "z9hG4bK-.!%66*_+`'~")],
        "from": ("token1~` token2'+_ token3*%!.-", "sip:mundane@example.com", "_token~1'+`*%!-."),
        "to": ("BEL:\x07 NUL:\x00 DEL:\x7f",
               "sip:1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*@example.com", None),
        "body": 0,
    },
    "esc01": {
        "method": "INVITE",
        "uri": "sip:sips%3Auser%40example.com@example.net",
        "call_id": "esc01.239409asdfakjkn23onasd0-3234",
        "cseq": CSeq(234234, "INVITE"),
        "vias": [("UDP", "host5.example.net", "z9hG4bKkdjuw")],
        "from": (None, "sip:I%20have%20spaces@example.net", "938"),
        "to": (None, "sip:%75se%72@example.com", None),
        "body": 150,
    },
    "escnull": {
        "method": "REGISTER",
        "uri": "sip:example.com",
        "call_id": "escnull.39203ndfvkjdasfkq3w4otrq0adsfdfnavd",
        "cseq": CSeq(14398234, "REGISTER"),
        "vias": [("UDP", "host5.example.com", "z9hG4bKkdjuw")],
        "from": (None, "sip:null-%00-null@example.com", "839923423"),
        "to": (None, "sip:null-%00-null@example.com", None),
        "body": 0,
    },
    "esc02": {
        "method": "RE%47IST%45R",
        "uri": "sip:registrar.example.com",
        "call_id": "esc02.asdfnqwo34rq23i34jrjasdcnl23nrlknsdf",
        "cseq": CSeq(29344, "RE%47IST%45R"),
        "vias": [("TCP", "host.example.com", "z9hG4bK209asdjkwevjkl")],
        "from": ("%Z%45", "sip:resource@example.com", "f232jadfj23"),
        "to": ("%Z%45", "sip:resource@example.com", None),
        "body": 0,
    },
    "lwsdisp": {
        "method": "OPTIONS",
        "uri": "sip:user@example.com",
        "call_id": "lwsdisp.1234abcd@funky.example.com",
        "cseq": CSeq(60, "OPTIONS"),
        "vias": [("UDP", "funky.example.com", "z9hG4bKkdjuw")],
        "from": ("caller", "sip:caller@example.com", "323"),
        "to": (None, "sip:user@example.com", None),
        "body": 0,
    },
    "longreq": {
        "method": "INVITE",
        "uri": "sip:user@example.com",
        "cseq": CSeq(3882340, "INVITE"),
        "via_count": 34,
        "body": 150,
    },
    "dblreq": {  # a datagram with a second message after the first: only the first counts
        "method": "REGISTER",
        "uri": "sip:example.com",
        "call_id": "dblreq.0ha0isndaksdj99sdfafnl3lk233412",
        "cseq": CSeq(8, "REGISTER"),
        "vias": [("UDP", "192.0.2.125", "z9hG4bKkdjuw23492")],
        "body": 0,
    },
    "semiuri": {
        "method": "OPTIONS",
        "uri": "sip:user;par=u%40example.net@example.com",
        "user": "user;par=u%40example.net",
        "cseq": CSeq(8, "OPTIONS"),
        "body": 0,
    },
    "transports": {
        "method": "OPTIONS",
        "vias": [("UDP", "t1.example.com", "z9hG4bKkdjuw"), ("SCTP", "t2.example.com", "z9hG4bKklasjdhf"),
                 ("TLS", "t3.example.com", "z9hG4bK2980unddj"),
                 ("UNKNOWN", "t4.example.com", "z9hG4bKasd0f3en"),
                 ("TCP", "t5.example.com", "z9hG4bK0a9idfnee")],
        "body": 0,
    },
    "mpart01": {
        "method": "MESSAGE",
        "cseq": CSeq(1, "MESSAGE"),
        "content_type": "multipart/mixed",
        "body": 351,
    },
    "unreason": {
        "status": 200,
        "reason": "= 2**3 * 5**2 но сто девяносто девять - простое",
        "cseq": CSeq(35, "INVITE"),
        "to": (None, "sip:user@example.edu", "2229"),
        "body": 154,
    },
    "noreason": {
        "status": 100,
        "reason": "",
        "cseq": CSeq(35, "INVITE"),
        "body": 0,
    },
    "badbranch": {  # §3.2.1: a branch that is only the magic cookie is still a branch
        "method": "OPTIONS",
        "vias": [("UDP", "192.0.2.1", "z9hG4bK")],
        "body": 0,
    },
    "inv2543": {  # §3.4.1: RFC 2543 syntax: no branch, no tags, no Max-Forwards, no Content-Length
        "method": "INVITE",
        "uri": "sip:UserB@example.com",
        "vias": [("UDP", "iftgw.example.com", None)],
        "from": (None, "sip:+13035551111@ift.client.example.net;user=phone", None),
        "to": (None, "sip:+16505552222@ss1.example.net", None),
        "body": 150,
    },
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(VALID))
def test_rfc4475_valid_messages_parse(name: str) -> None:
    expected = VALID[name]
    msg = parse_message(load("valid", name))
    if "method" in expected:
        assert isinstance(msg, Request)
        assert msg.method == expected["method"]
    else:
        assert isinstance(msg, Response)
        assert msg.status == expected["status"]
        assert msg.reason == expected["reason"]
    if "uri" in expected:
        assert isinstance(msg, Request)
        assert str(msg.uri) == expected["uri"]
    if "user" in expected:
        assert isinstance(msg, Request) and isinstance(msg.uri, SipUri)
        assert msg.uri.user == expected["user"]
    if "call_id" in expected:
        assert msg.call_id == expected["call_id"]
    if "cseq" in expected:
        assert msg.cseq == expected["cseq"]
    if "vias" in expected:
        assert [(v.transport, v.host, v.branch) for v in msg.via] == expected["vias"]
    if "via_count" in expected:
        assert len(msg.via) == expected["via_count"]
    for field in ("from", "to"):
        if field in expected:
            na = msg.from_ if field == "from" else msg.to
            assert (na.display, str(na.uri), na.tag) == expected[field]
    if "content_type" in expected:
        assert msg.content_type == expected["content_type"]
    assert len(msg.body) == expected["body"]
    roundtrip(msg)


def test_wsinv_details() -> None:
    msg = parse_message(load("valid", "wsinv"))
    assert msg.headers.get("Subject") == ""
    assert msg.headers.get("NewFangledHeader") == "newfangled value continued newfangled value"
    assert msg.headers.get("UnknownHeaderWithUnusualValue") == ";;,,;;,;"
    assert msg.headers.get("max-forwards") == "0068"
    [route] = msg.route
    assert isinstance(route.uri, SipUri)
    assert route.uri.param("lr") == ""
    assert route.uri.param("unknownwith") == "value"
    [contact] = msg.contacts
    assert contact.display == 'Quoted string ""'
    assert contact.params == (("newparam", "newvalue"), ("secondparam", None), ("q", "0.33"))
    # compact forms are written back in full, unknown names as they were spelled
    names = [n for n, _v in msg.headers]
    assert names[:3] == ["To", "From", "Max-Forwards"]
    assert "Contact" in names and "NewFangledHeader" in names


def test_esc01_unescaped_parts() -> None:
    msg = parse_message(load("valid", "esc01"))
    assert isinstance(msg, Request) and isinstance(msg.uri, SipUri)
    assert unescape(msg.uri.user or "") == "sips:user@example.com"
    assert isinstance(msg.to.uri, SipUri)
    assert unescape(msg.to.uri.user or "") == "user"
    [contact] = msg.contacts
    assert isinstance(contact.uri, SipUri)
    assert contact.uri.params == (("%6C%72", None), ("n%61me", "v%61lue%25%34%31"))
    assert unescape("v%61lue%25%34%31") == "value%41"


def test_escnull_keeps_the_escaped_nul() -> None:
    msg = parse_message(load("valid", "escnull"))
    assert [str(c.uri) for c in msg.contacts] == [
        "sip:%00@host5.example.com",
        "sip:%00%00@host5.example.com",
    ]
    assert unescape("null-%00-null") == "null-\x00-null"


def test_esc02_percent_in_tokens() -> None:
    msg = parse_message(load("valid", "esc02"))
    assert msg.headers.get("C%6Fntact") == "<sip:alias2@host2.example.com>"
    assert len(msg.contacts) == 2  # C%6Fntact is an extension header, not Contact
    assert msg.top_via.param("rport") == ""


def test_dblreq_second_message_is_ignored_on_udp_and_refused_when_exact() -> None:
    data = load("valid", "dblreq")
    assert isinstance(parse_message(data), Request)
    with pytest.raises(SipError, match="bytes after the body"):
        parse_message(data, exact=True)


def test_semiuri_accept_list_folded() -> None:
    msg = parse_message(load("valid", "semiuri"))
    assert msg.headers.get_list("Accept") == [
        "application/sdp",
        "application/pkcs7-mime",
        "multipart/mixed",
        "multipart/signed",
        "message/sip",
        "message/sipfrag",
    ]


def test_mpart01_binary_body_is_kept_exactly() -> None:
    data = load("valid", "mpart01")
    msg = parse_message(data)
    assert data.endswith(msg.body)
    assert b"\x00\xfe\xfd" in msg.body


def test_inv2543_old_syntax() -> None:
    msg = parse_message(load("valid", "inv2543"))
    assert msg.to.params == (("user", "phone"),)  # addr-spec form: ;user=phone is a header param
    assert msg.headers.get("Max-Forwards") is None
    [rr] = msg.record_route
    assert isinstance(rr.uri, SipUri) and rr.uri.param("maddr") == "ss1.example.com"
    assert b"Content-Length: 150\r\n" in msg.encode()


# --- RFC 4475 §3.1.2 (invalid) and the fields the parser requires (§3.3.1, §3.3.8, §3.3.9) ------

INVALID: dict[str, tuple[int, str]] = {
    "badinv01": (400, "empty parameter in Via 'SIP/2.0/UDP 192.0.2.15;;'"),
    "clerr": (400, "Content-Length 9999 is larger than the 154 bytes of body"),
    "ncl": (400, "Content-Length '-999' is not a number"),
    "scalar02": (400, "CSeq '36893488147419103232 REGISTER': the sequence number is larger than 2**31-1"),
    "scalarlg": (400, "CSeq '9292394834772304023312 OPTIONS': the sequence number is larger than 2**31-1"),
    "quotbal": (400, "unterminated quoted string in To"),
    "ltgtruri": (400, "the Request-URI must not be enclosed in <>"),
    "lwsruri": (400, "white space inside the Request-URI"),
    "lwsstart": (400, "request-line elements must be separated by single spaces"),
    "trws": (400, "white space at the end of the request line"),
    "escruri": (400, "the Request-URI must not carry headers ('?...')"),
    "baddate": (400, "bad Date 'Fri, 01 Jan 2010 16:00:00 EST' (RFC 1123 date in GMT expected)"),
    "regbadct": (400, "Contact: a URI with '?' or ',' must be enclosed in <>"),
    "badaspec": (400, "To: white space inside < sip:t.watson@example.org >"),
    "baddn": (400, "From: display name 'Bell, Alexander' must be quoted"),
    "badvers": (505, "SIP version 'SIP/7.0' is not supported"),
    "mismatch01": (400, "CSeq method INVITE does not match the request method OPTIONS"),
    "mismatch02": (400, "CSeq method INVITE does not match the request method NEWMETHOD"),
    "bigcode": (400, "status code '4294967301' is not three digits"),
    "insuf": (400, "no From header"),
    "multi01": (400, "Call-ID appears 2 times"),
    "mcl01": (400, "Content-Length appears 2 times"),
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(INVALID))
def test_rfc4475_invalid_messages_are_refused(name: str) -> None:
    status, reason = INVALID[name]
    with pytest.raises(SipError) as info:
        parse_message(load("invalid", name))
    assert (info.value.status, info.value.reason) == (status, reason)


def test_every_fixture_is_listed() -> None:
    on_disk = {p.stem for p in (RFC4475 / "valid").glob("*.sip")}
    assert on_disk == set(VALID)
    assert {p.stem for p in (RFC4475 / "invalid").glob("*.sip")} == set(INVALID)
    assert {p.stem for p in (RFC4475 / "semantic").glob("*.sip")} == set(SEMANTIC)


# --- RFC 4475 §3.3 (application layer): they parse; the UAS checks answer them -----------------

SEMANTIC: dict[str, tuple[int | None, dict[str, str]]] = {
    "unkscm": (416, {}),
    "novelsc": (416, {}),
    "unksm2": (405, {"Allow": "INVITE, ACK, BYE, CANCEL, OPTIONS, PRACK, UPDATE"}),
    "bext01": (420, {"Unsupported": "nothingSupportsThis, nothingSupportsThisEither"}),
    "invut": (415, {"Accept": "application/sdp"}),
    "regaut01": (405, {}),
    "zeromf": (None, {}),  # a UAS answers OPTIONS whatever Max-Forwards says
    "cparam01": (405, {}),
    "cparam02": (405, {}),
    "regescrt": (405, {}),
    "sdp01": (406, {}),
    "bcast": (None, {}),  # a response: no check; the transaction layer drops it (no transaction)
}


@pytest.mark.parametrize("name", sorted(SEMANTIC))
def test_rfc4475_semantic_cases(name: str) -> None:
    status, headers = SEMANTIC[name]
    msg = parse_message(load("semantic", name))
    roundtrip(msg)
    if isinstance(msg, Response):
        assert status is None
        return
    answer = check_request(msg, to_tag="t1")
    if status is None:
        assert answer is None
        return
    assert answer is not None
    assert answer.status == status
    assert answer.to.tag == "t1"
    assert answer.call_id == msg.call_id
    for name_, value in headers.items():
        assert answer.headers.get(name_) == value


def test_unknown_schemes_in_headers_parse() -> None:
    msg = parse_message(load("semantic", "unksm2"))
    assert msg.to.uri == AbsoluteUri("isbn", "2983792873")
    assert msg.from_.uri == AbsoluteUri("http", "//www.example.com")
    assert [str(c.uri) for c in msg.contacts] == ["name:John_Smith"]


def test_contact_params_in_both_forms() -> None:
    [c1] = parse_message(load("semantic", "cparam01")).contacts
    [c2] = parse_message(load("semantic", "cparam02")).contacts
    assert c1.params == (("unknownparam", None),)
    assert isinstance(c2.uri, SipUri) and c2.uri.params == (("unknownparam", None),)
    [c3] = parse_message(load("semantic", "regescrt")).contacts
    assert isinstance(c3.uri, SipUri) and c3.uri.headers == (("Route", "%3Csip:sip.example.com%3E"),)


# --- building, headers, errors -----------------------------------------------------------------

INVITE = (
    b"INVITE sip:100@127.0.0.1 SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKabc;rport\r\n"
    b"Max-Forwards: 70\r\n"
    b"From: <sip:mss@127.0.0.1>;tag=f1\r\n"
    b"To: <sip:100@127.0.0.1>\r\n"
    b"Call-ID: c1@127.0.0.1\r\n"
    b"CSeq: 1 INVITE\r\n"
    b"Contact: <sip:mss@127.0.0.1:5070>\r\n"
    b"Supported: 100rel, timer\r\n"
    b"Content-Type: application/sdp\r\n"
    b"Content-Length: 4\r\n"
    b"\r\n"
    b"v=0\n"
)


def test_make_response_copies_the_transaction_fields() -> None:
    req = parse_message(INVITE)
    assert isinstance(req, Request)
    resp = make_response(req, 180, to_tag="tt", headers=[("Contact", "<sip:100@127.0.0.1:5062>")])
    assert resp.reason == "Ringing"
    assert resp.headers.get_all("Via") == req.headers.get_all("Via")
    assert resp.to.tag == "tt"
    assert resp.from_ == req.from_
    assert (resp.call_id, resp.cseq) == (req.call_id, req.cseq)
    trying = make_response(req, 100, to_tag="tt")
    assert trying.to.tag is None
    roundtrip(resp)


def test_encode_writes_content_length_from_the_body() -> None:
    req = parse_message(INVITE)
    assert isinstance(req, Request)
    changed = Request(req.method, req.uri, req.headers.copy(), b"v=0\r\no=x\r\n")
    wire = changed.encode()
    assert b"Content-Length: 10\r\n" in wire
    headers = Headers([("Via", "SIP/2.0/UDP h;branch=z9hG4bK1"), ("From", "<sip:a@h>;tag=1"),
                       ("To", "<sip:b@h>"), ("Call-ID", "x"), ("CSeq", "1 OPTIONS")])  # fmt: skip
    assert Request("OPTIONS", parse_uri("sip:h"), headers).encode().endswith(b"Content-Length: 0\r\n\r\n")


def test_encode_refuses_an_oversized_message() -> None:
    req = parse_message(INVITE)
    assert isinstance(req, Request)
    big = Request(req.method, req.uri, req.headers, b"x" * MAX_MESSAGE_SIZE)
    with pytest.raises(LocalProtocolError, match="exceeds"):
        big.encode()


def test_headers_container() -> None:
    h = Headers([("v", "SIP/2.0/UDP a"), ("Supported", "timer"), ("VIA", "SIP/2.0/UDP b, SIP/2.0/TCP c")])
    assert h.get_all("Via") == ["SIP/2.0/UDP a", "SIP/2.0/UDP b, SIP/2.0/TCP c"]
    assert h.get_list("via") == ["SIP/2.0/UDP a", "SIP/2.0/UDP b", "SIP/2.0/TCP c"]
    assert "k" in h and "Supported" in h and "Require" not in h
    h.set("Supported", "100rel")
    h.add("X-Custom", "1")
    h.set("Via", "SIP/2.0/UDP z")
    assert list(h) == [("Via", "SIP/2.0/UDP z"), ("Supported", "100rel"), ("X-Custom", "1")]
    h.remove("x-custom")
    assert h.get("X-Custom") is None and len(h) == 2
    assert h == Headers([("via", "SIP/2.0/UDP z"), ("k", "100rel")])


def _mutate(old: bytes, new: bytes) -> bytes:
    assert old in INVITE
    return INVITE.replace(old, new)


@pytest.mark.parametrize(
    ("data", "status", "reason"),
    [
        (_mutate(b"CSeq: 1 INVITE", b"CSeq: x INVITE"), 400,
         "CSeq 'x INVITE': the sequence number is not a number"),
        (_mutate(b"Max-Forwards: 70", b"Max-Forwards: 256"), 400, "Max-Forwards 256 is larger than 255"),
        (_mutate(b"Via: SIP/2.0/UDP 127.0.0.1:5070", b"Via: SIP/2.0/UDP 127.0.0.1:70000"), 400,
         "Via 'SIP/2.0/UDP 127.0.0.1:70000;branch=z9hG4bKabc;rport': bad sent-by port"),
        (_mutate(b"Via: SIP/2.0/UDP", b"Via: SIP/2.0/UDP\t"), None, None),
        (_mutate(b"Call-ID: c1@127.0.0.1", b"Call-ID: c1@127.0.0.1@x"), 400,
         "bad Call-ID 'c1@127.0.0.1@x'"),
        (_mutate(b"To: <sip:100@127.0.0.1>", b"To: <sip:100@127.0.0.1"), 400, "To: '<' without '>'"),
        (_mutate(b"To: <sip:100@127.0.0.1>", b"To: <sip:100@bad host>"), 400,
         "To: white space inside <sip:100@bad host>"),
        (_mutate(b"To: <sip:100@127.0.0.1>", b"To: <sip:100@127.0.0.1:port>"), 400,
         "bad port ':port' in URI 'sip:100@127.0.0.1:port'"),
        (_mutate(b"Max-Forwards: 70\r\n", b"Max-Forwards 70\r\n"), 400,
         "header line without a colon: 'Max-Forwards 70'"),
        (_mutate(b"Max-Forwards: 70\r\n", b"Max Forwards: 70\r\n"), 400, "bad header name 'Max Forwards'"),
        (_mutate(b"SIP/2.0\r\n", b"SIP/2.1\r\n"), 505, "SIP version 'SIP/2.1' is not supported"),
        (_mutate(b"SIP/2.0\r\n", b"HTTP/1.1\r\n"), 400, "bad SIP version 'HTTP/1.1'"),
        (_mutate(b"INVITE sip", b"INV\x01TE sip"), 400, "bad method 'INV\\x01TE'"),
        (INVITE.replace(b"\r\n\r\n", b"\r\n"), 400, "the header section does not end (no empty line)"),
        (b"\r\n\r\n" + INVITE, None, None),  # leading CRLFs are skipped (RFC 3261 §7.5)
        (INVITE.replace(b"\r\n", b"\n"), None, None),  # bare LF line ends are tolerated
        (_mutate(b"Via: SIP", b" Via: SIP"), None, None),  # a continuation of the request line? no:
    ],
)  # fmt: skip
def test_malformed_messages(data: bytes, status: int | None, reason: str | None) -> None:
    if data.startswith(b"INVITE") and b"\r\n Via" in data:
        # a header line starting with white space continues the previous one (here the start
        # line has no header before it): refused
        with pytest.raises(SipError, match="continuation"):
            parse_message(data)
        return
    if status is None:
        msg = parse_message(data)
        assert msg.cseq == CSeq(1, "INVITE")
        return
    with pytest.raises(SipError) as info:
        parse_message(data)
    assert (info.value.status, info.value.reason) == (status, reason)


def test_too_large_is_513() -> None:
    with pytest.raises(SipError) as info:
        parse_message(INVITE + b"x" * MAX_MESSAGE_SIZE)
    assert info.value.status == 513


def test_status_line_forms() -> None:
    base = load("valid", "noreason")
    for line, status, reason in [
        (b"SIP/2.0 100 ", 100, ""),
        (b"SIP/2.0 100", 100, ""),
        (b"SIP/2.0 699 x y  z", 699, "x y  z"),
    ]:
        msg = parse_message(base.replace(b"SIP/2.0 100 ", line, 1))
        assert isinstance(msg, Response)
        assert (msg.status, msg.reason) == (status, reason)
    with pytest.raises(SipError, match=r"status code 99 is outside 100\.\.699"):
        parse_message(base.replace(b"SIP/2.0 100 ", b"SIP/2.0 099 x", 1))


# --- URIs, name-addr, Via ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "sip:127.0.0.1",
        "sip:100@127.0.0.1:5060",
        "sips:alice:secret@example.com;transport=tcp;lr?Subject=hi&Priority=urgent",
        "sip:[2001:db8::1]:5070;maddr=[2001:db8::2]",
        "sip:+15551234567;phone-context=example.com@gw.example.com;user=phone",
        "sip:a%40b@host-1.example.com.",
    ],
)
def test_uri_roundtrip_examples(text: str) -> None:
    uri = parse_uri(text)
    assert str(uri) == text
    assert parse_uri(str(uri)) == uri


def test_uri_fields() -> None:
    uri = parse_uri("SIP:alice@Example.com:5070;transport=TCP;lr")
    assert uri == SipUri(host="Example.com", user="alice", port=5070,
                         params=(("transport", "TCP"), ("lr", None)))  # fmt: skip
    assert uri.hostport == ("Example.com", 5070)
    assert uri.param("LR") == "" and uri.param("maddr") is None
    assert str(uri.with_param("transport", "udp")) == "sip:alice@Example.com:5070;lr;transport=udp"
    assert parse_uri("sips:x").hostport == ("x", 5061)  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("127.0.0.1", "'127.0.0.1' is not a URI (no scheme)"),
        ("sip:a b@c", "bad user part 'a b' in URI 'sip:a b@c'"),
        ("sip:@c", "bad user part '' in URI 'sip:@c'"),
        ("sip:c:99999", "port 99999 out of range in URI 'sip:c:99999'"),
        ("sip:c;=x", "bad URI parameter '=x' in 'sip:c;=x'"),
        ("sip:c?x", "bad URI header 'x' in 'sip:c?x'"),
        ("sip:exa mple.com", "bad host 'exa mple.com' in URI 'sip:exa mple.com'"),
        ("tel:+1 555", "'tel:+1 555' is not a URI"),
    ],
)
def test_bad_uris(text: str, reason: str) -> None:
    with pytest.raises(SipError) as info:
        parse_uri(text)
    assert info.value.reason == reason


def test_name_addr_forms() -> None:
    a = parse_name_addr('"Alice \\"A\\"" <sip:alice@h>;tag=1')
    assert a == NameAddr(uri=SipUri(host="h", user="alice"), display='Alice "A"', params=(("tag", "1"),))
    assert str(a) == '"Alice \\"A\\"" <sip:alice@h>;tag=1'
    b = parse_name_addr("Bob   Smith<sip:bob@h;transport=tcp>;tag=2 ;q=0.5")
    assert b.display == "Bob Smith" and b.tag == "2" and b.param("q") == "0.5"
    c = parse_name_addr("sip:carol@h;tag=3")
    assert c.display is None and c.tag == "3" and isinstance(c.uri, SipUri) and not c.uri.params
    assert parse_name_addr('<sip:h>;p="a;b=c"').params == (("p", '"a;b=c"'),)
    assert c.with_tag("9").tag == "9"
    with pytest.raises(SipError, match="must be followed by <URI>"):
        parse_name_addr('"x" sip:h')


def test_via_fields() -> None:
    v = parse_via("SIP / 2.0 / udp 10.0.0.1 : 5060 ; branch = z9hG4bK1 ; rport = 4000 ; received=1.2.3.4")
    assert (v.transport, v.host, v.port, v.branch, v.rport, v.received) == (
        "UDP", "10.0.0.1", 5060, "z9hG4bK1", 4000, "1.2.3.4")  # fmt: skip
    assert str(v) == "SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK1;rport=4000;received=1.2.3.4"
    v6 = parse_via("SIP/2.0/TCP [2001:db8::1]:5070;branch=z9hG4bK2;rport")
    assert v6.host == "[2001:db8::1]" and v6.port == 5070 and v6.rport is None
    assert v6.with_param("rport", "5").rport == 5
    for bad, reason in [
        ("SIP/2.0/UDP", "Via 'SIP/2.0/UDP': no white space before sent-by"),
        ("SIP/2.0 UDP h", "Via 'SIP/2.0 UDP h': bad sent-protocol"),
        ("HTTP/1.1/TCP h", "Via 'HTTP/1.1/TCP h': protocol is not SIP"),
        ("SIP/2.0/UDP h;branch", None),
        ("SIP/2.0/UDP h;;branch=x", "empty parameter in Via 'SIP/2.0/UDP h;;branch=x'"),
        ("SIP/2.0/UDP h x", "unexpected 'x' in Via 'SIP/2.0/UDP h x'"),
    ]:
        if reason is None:
            assert parse_via(bad).param("branch") == ""
            continue
        with pytest.raises(SipError) as info:
            parse_via(bad)
        assert info.value.reason == reason


def test_split_commas_respects_quotes_and_brackets() -> None:
    assert split_commas('"a, b" <sip:x>, <sip:y?h=1,2>;p="c,d" , sip:z') == [
        '"a, b" <sip:x>',
        '<sip:y?h=1,2>;p="c,d"',
        "sip:z",
    ]


# hypothesis: str() and parse are inverses
_ALNUM = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
_TOKEN = _ALNUM + "-.!%*_+`'~"
_USER = _ALNUM + "-_.!~*'()&=+$,;?/"
_PARAM = _ALNUM + "-_.!~*'()[]/:&+$"
_HNV = _ALNUM + "-_.!~*'()[]/?:+$"

labels = st.text(_ALNUM, min_size=1, max_size=8)
hosts = st.one_of(
    st.lists(labels, min_size=1, max_size=4).map(".".join),
    st.tuples(*[st.integers(0, 255)] * 4).map(lambda t: ".".join(map(str, t))),
    st.just("[2001:db8::1]"),
)
ports = st.none() | st.integers(1, 65535)
uri_params = st.lists(
    st.tuples(st.text(_PARAM, min_size=1, max_size=8), st.none() | st.text(_PARAM, min_size=1, max_size=8)),
    max_size=3,
).map(tuple)
uri_headers = st.lists(
    st.tuples(st.text(_HNV, min_size=1, max_size=6), st.text(_HNV, max_size=6)), max_size=2
).map(tuple)
sip_uris = st.builds(
    SipUri,
    host=hosts,
    user=st.none() | st.text(_USER, min_size=1, max_size=10),
    port=ports,
    params=uri_params,
    headers=uri_headers,
    scheme=st.sampled_from(["sip", "sips"]),
)
tokens = st.text(_TOKEN, min_size=1, max_size=8)
gen_values = tokens | st.text(st.characters(blacklist_categories=["Cc", "Cs"]), max_size=8).map(
    lambda s: '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'
)
header_params = st.lists(st.tuples(tokens, st.none() | gen_values), max_size=3).map(tuple)


@given(sip_uris)
def test_uri_str_parse_inverse(uri: SipUri) -> None:
    assert parse_uri(str(uri)) == uri


@given(
    st.builds(
        NameAddr,
        uri=sip_uris,
        display=st.none() | st.text(st.characters(blacklist_categories=["Cc", "Cs"]), max_size=12),
        params=header_params,
    )
)
def test_name_addr_str_parse_inverse(na: NameAddr) -> None:
    assert parse_name_addr(str(na)) == na


@given(
    st.builds(
        Via,
        transport=st.sampled_from(["UDP", "TCP", "TLS", "SCTP", "WS"]),
        host=hosts,
        port=ports,
        params=header_params,
    )
)
def test_via_str_parse_inverse(via: Via) -> None:
    assert parse_via(str(via)) == via


@given(
    st.lists(st.tuples(st.sampled_from(["X-A", "Subject", "Supported", "X-B"]),
                       st.text(_TOKEN + " ,;=", max_size=20).map(str.strip)), max_size=6),
    st.binary(max_size=64),
)  # fmt: skip
def test_message_roundtrip_with_arbitrary_extra_headers(extra: list[tuple[str, str]], body: bytes) -> None:
    req = parse_message(INVITE)
    assert isinstance(req, Request)
    headers = req.headers.copy()
    for name, value in extra:
        headers.add(name, value)
    roundtrip(Request(req.method, req.uri, headers, body))


# --- framing ------------------------------------------------------------------------------------


def _framer_feed(framer: object, chunk: bytes) -> list[object]:
    assert isinstance(framer, StreamFramer)
    return list(framer.feed(chunk))


def test_stream_framing_three_ways() -> None:
    second = load("valid", "noreason")
    stream = INVITE + b"\r\n\r\n" + second
    events = feed_three_ways(StreamFramer, _framer_feed, stream, trailing=b"OPTIONS sip:x SIP/2.0\r\n")
    assert events == [INVITE, KeepAlive(), second]
    assert isinstance(parse_message(INVITE, exact=True), Request)


def test_stream_pong_is_skipped() -> None:
    f = StreamFramer()
    assert f.feed(b"\r\n") == []
    assert f.feed(INVITE) == [INVITE]
    assert f.buffered == 0


def test_stream_without_content_length_breaks_it() -> None:
    f = StreamFramer()
    data = INVITE.replace(b"Content-Length: 4\r\n", b"")
    with pytest.raises(SipError, match="has no Content-Length"):
        f.feed(data)
    with pytest.raises(SipError, match="broken"):
        f.feed(INVITE)


def test_stream_bounds() -> None:
    f = StreamFramer(max_size=1000)
    with pytest.raises(SipError, match="header section longer than 1000 bytes"):
        f.feed(b"INVITE sip:x SIP/2.0\r\nX: " + b"a" * 1000)
    f = StreamFramer(max_size=1000)
    with pytest.raises(SipError, match=r"message of 1[0-9]+ bytes is larger than 1000"):
        f.feed(INVITE.replace(b"Content-Length: 4", b"Content-Length: 900"))
    f = StreamFramer()
    with pytest.raises(SipError, match="Content-Length b'x' is not a number"):
        f.feed(INVITE.replace(b"Content-Length: 4", b"l: x"))


# --- captured from the real peers (Kamailio 5.6 as the PSS, pjsua2 2.15 behind it) ----------------

CAPTURED = DATA / "captured"


def captured(name: str) -> Request | Response:
    return parse_message((CAPTURED / f"{name}.sip").read_bytes(), exact=True)


def test_captured_kamailio_challenges() -> None:
    from mss.sip.auth import parse_challenge

    reg = captured("kamailio_401_register")
    inv = captured("kamailio_407_invite")
    assert isinstance(reg, Response) and isinstance(inv, Response)
    assert (reg.status, inv.status) == (401, 407)
    www = parse_challenge(reg.headers.get("WWW-Authenticate") or "", proxy=False)
    proxy = parse_challenge(inv.headers.get("Proxy-Authenticate") or "", proxy=True)
    assert www is not None and proxy is not None
    assert (www.realm, www.qop, www.algorithm) == ("127.0.0.1", ("auth",), "MD5")
    assert proxy.proxy and proxy.supported
    # Kamailio fills in rport and received, and tags its stateless answers
    assert reg.top_via.rport is not None and reg.top_via.received == "127.0.0.1"
    assert inv.to.tag


def test_captured_register_200_grants_the_contact() -> None:
    ok = captured("kamailio_200_register")
    [contact] = ok.contacts
    assert contact.param("expires") == "300"
    assert isinstance(contact.uri, SipUri) and contact.uri.user == "mss"


def test_captured_pjsua_responses() -> None:
    p183 = captured("pjsua_183_100rel_sdp")
    ok = captured("pjsua_200_invite_sdp")
    assert isinstance(p183, Response) and isinstance(ok, Response)
    assert p183.headers.tokens("Require") == ["100rel"] and (p183.headers.get("RSeq") or "").isdigit()
    assert p183.content_type == "application/sdp" and p183.body.startswith(b"v=0\r\n")
    [rr] = p183.record_route
    assert isinstance(rr.uri, SipUri) and rr.uri.param("lr") == "" and rr.uri.param("ftag")
    assert ok.headers.get("Session-Expires") == "1800;refresher=uac"
    assert ok.body == b""  # the answer was in the reliable 183
    assert p183.headers.get("Content-Length") == "309"  # pjsua pads the value with spaces


def test_captured_pjsua_requests_through_kamailio() -> None:
    reinvite = captured("pjsua_reinvite_hold")
    bye = captured("pjsua_bye")
    assert isinstance(reinvite, Request) and isinstance(bye, Request)
    assert [v.host for v in reinvite.via] == ["127.0.0.1", "127.0.0.1"] and len(bye.via) == 2
    assert reinvite.headers.get("Session-Expires") == "1800;refresher=uas"
    assert b"a=sendonly" in reinvite.body
    assert reinvite.to.tag == bye.to.tag and reinvite.call_id == bye.call_id


@pytest.mark.parametrize("path", sorted(CAPTURED.glob("*.sip")), ids=lambda p: p.stem)
def test_captured_round_trip(path: Path) -> None:
    roundtrip(parse_message(path.read_bytes(), exact=True))


def test_mutated_fixtures_raise_only_sip_error() -> None:
    """A seeded mutation fuzz: whatever the bytes, the parser and the framer fail with SipError."""
    import random

    from mss.sip.message import error_response

    fixtures = [p.read_bytes() for p in sorted(DATA.glob("**/*.sip"))]
    rng = random.Random(4475)
    alphabet = b' \t\r\n:;,<>"@=?%/\\[]0123456789abcSIPVia'
    for _ in range(3000):
        data = bytearray(rng.choice(fixtures))
        for _ in range(rng.randint(1, 6)):
            pos = rng.randrange(len(data) + 1)
            op = rng.random()
            if op < 0.4:
                del data[pos : pos + rng.randint(1, 8)]
            elif op < 0.8:
                data[pos:pos] = bytes(rng.choice(alphabet) for _ in range(rng.randint(1, 4)))
            else:
                data[pos:pos] = rng.randbytes(rng.randint(1, 4))
        raw = bytes(data)
        with contextlib.suppress(SipError):
            parse_message(raw)
        with contextlib.suppress(SipError):
            parse_message(raw, exact=True)
        with contextlib.suppress(SipError):
            StreamFramer().feed(raw)
        error_response(raw, 400, "x")  # never raises


def test_with_param_copies_equal_the_dataclass_built_values() -> None:
    """with_param()/with_tag() build their copy by setting the slots (no dataclass __init__): the copy
    equals what the constructor gives for the same fields, replaces an existing parameter in place of
    adding a second one, hashes alike, and leaves the original as it was."""
    uri = parse_uri("sip:a%20b@example.com:5080;transport=tcp;Lr?Subject=x")
    assert isinstance(uri, SipUri)
    copy = uri.with_param("lr")
    assert copy == SipUri(uri.host, uri.user, uri.password, uri.port,
                          (("transport", "tcp"), ("lr", None)), uri.headers, uri.scheme)
    assert hash(copy) == hash(parse_uri(str(copy))) and copy == parse_uri(str(copy))
    assert uri.params == (("transport", "tcp"), ("Lr", None))
    addr = parse_name_addr('"Bob" <sip:bob@example.com>;tag=old;x=1', "To")
    tagged = addr.with_tag("new")
    assert tagged == NameAddr(addr.uri, "Bob", (("x", "1"), ("tag", "new")))
    assert tagged.tag == "new" and addr.tag == "old"
    assert tagged == parse_name_addr(str(tagged), "To")
    via = parse_via("SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK1;rport")
    filled = via.with_param("rport", "5062").with_param("received", "127.0.0.2")
    assert filled == Via("UDP", "127.0.0.1", 5060,
                         (("branch", "z9hG4bK1"), ("rport", "5062"), ("received", "127.0.0.2")))
    assert filled.rport == 5062 and via.rport is None
    assert filled == parse_via(str(filled))


def test_name_addr_values_are_built_once_per_text_and_the_cache_is_bounded() -> None:
    """A From/To/Contact text seen before gives the value built then (frozen, so shared), equal to
    what the general parser gives; a text of another shape or a bad one never comes from the cache;
    ever new texts keep the cache within NAME_ADDR_CACHE."""
    from mss.sip import uri as uri_module

    first = parse_message(INVITE)
    seen = (first.from_, first.to, first.contacts)  # read: built, and kept by their text
    second = parse_message(INVITE.replace(b"branch=z9hG4bKabc", b"branch=z9hG4bKdef"))
    assert (second.from_, second.to, second.contacts) == seen
    assert second.from_ is first.from_ and second.to is first.to
    assert second.contacts[0] is first.contacts[0]
    assert first.from_ == NameAddr(SipUri("127.0.0.1", "mss"), None, (("tag", "f1"),))
    assert second.contacts == [parse_name_addr("<sip:mss@127.0.0.1:5070>")]
    quoted = b'From: "A \\"B\\"" <sip:mss@127.0.0.1>'
    odd = parse_message(INVITE.replace(b"From: <sip:mss@127.0.0.1>", quoted))
    assert odd.from_.display == 'A "B"' and odd.from_.tag == "f1"
    with pytest.raises(SipError):
        parse_message(INVITE.replace(b"To: <sip:100@127.0.0.1>", b"To: <sip:100@127.0.0.1"))
    for i in range(uri_module.NAME_ADDR_CACHE + 10):
        parse_name_addr(f"<sip:{i}@example.com>;tag={i}")
        assert len(uri_module._known_addrs) <= uri_module.NAME_ADDR_CACHE
    again = parse_message(INVITE)
    assert again.from_ == first.from_ and again.to == first.to
