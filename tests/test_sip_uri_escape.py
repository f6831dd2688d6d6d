"""SIP URI user parts are escaped on the way out (RFC 3261 §25.1) and compared unescaped (§19.1.4)."""

from __future__ import annotations

from dataclasses import replace

from hypothesis import given
from hypothesis import strategies as st

from mss.sip.events import Registered
from mss.sip.message import Request, parse_message
from mss.sip.uri import SipUri, escape_user, parse_name_addr, parse_uri
from tests.test_sip_ua import OFFER, REG, Net, reply


def test_user_characters_outside_the_grammar_are_escaped() -> None:
    uri = SipUri(host="127.0.0.1", user="*31#555")
    assert str(uri) == "sip:*31%23555@127.0.0.1"  # "#" is not user-unreserved; "*" is unreserved
    assert uri.user == "*31%23555" and uri.user_text == "*31#555"
    assert parse_uri(str(uri)) == uri
    assert str(SipUri(host="h", user="+1-555.0_1")) == "sip:+1-555.0_1@h"  # every SPEC user character
    assert str(SipUri(host="h", user="50%")) == "sip:50%25@h"  # "%" not starting an escape
    assert str(SipUri(host="h", user="a%41")) == "sip:a%41@h"  # an escape stays an escape
    assert str(SipUri(host="h", user="é #@")) == "sip:%C3%A9%20%23%40@h"
    assert str(SipUri(host="h", user="u", password="p#w")) == "sip:u:p%23w@h"
    assert escape_user("*31#555") == "*31%23555"
    # Parsed URIs are kept exactly as written; their users compare unescaped.
    a, b = parse_uri("sip:%2A31%23555@h"), parse_uri("sip:*31%23555@h")
    assert isinstance(a, SipUri) and isinstance(b, SipUri)
    assert str(a) == "sip:%2A31%23555@h" and a.user_text == b.user_text == "*31#555"


@given(st.text(st.characters(blacklist_categories=["Cs"]), min_size=1, max_size=12))
def test_any_user_is_written_as_a_valid_uri_and_reads_back(user: str) -> None:
    uri = SipUri(host="example.com", user=user.replace("%", "%25"))
    parsed = parse_uri(str(uri))
    assert parsed == uri
    assert isinstance(parsed, SipUri) and parsed.user_text == user
    assert parse_name_addr(f"<{uri}>;tag=1").uri == uri


def test_invite_to_a_user_with_hash_escapes_request_uri_and_to() -> None:
    net = Net()
    net.ua.invite("L1", "*31#555", OFFER, net.now)
    [(data, _dest)] = net.sent_raw()
    assert b"INVITE sip:*31%23555@127.0.0.1 SIP/2.0\r\n" in data
    assert b"\r\nTo: <sip:*31%23555@127.0.0.1>\r\n" in data
    assert b"#" not in data.split(b"\r\n\r\n")[0]
    inv = parse_message(data)
    assert isinstance(inv, Request) and isinstance(inv.uri, SipUri) and inv.uri.user_text == "*31#555"
    # A digest challenge is answered for the same (escaped) Request-URI.
    net.deliver(reply(inv, 407, extra=[("Proxy-Authenticate", 'Digest realm="r", nonce="n"')]))
    [retry] = net.requests("INVITE")
    assert 'uri="sip:*31%23555@127.0.0.1"' in (retry.headers.get("Proxy-Authorization") or "")


def test_registration_matches_its_contact_unescaped() -> None:
    net = Net(replace(REG, line_user="*31#555"))
    net.ua.start(net.now)
    reg = net.one("REGISTER")
    assert str(reg.to.uri) == "sip:*31%23555@pss.test"
    assert reg.headers.get("Contact") == "<sip:*31%23555@127.0.0.1:5070>"
    # The registrar writes the Contact back with "*" escaped too: still ours.
    net.deliver(
        reply(reg, 200, contact="<sip:%2A31%23555@127.0.0.1:5070>;expires=77", extra=[("Expires", "300")])
    )
    assert net.events() == [Registered(expires=77)]
