"""Dialogs: creation from responses, route sets (loose and strict), in-dialog requests, CSeq order."""

from __future__ import annotations

import pytest

from mss.errors import SipError
from mss.sip.dialog import Dialog
from mss.sip.message import Headers, Request, make_response
from mss.sip.uri import NameAddr, SipUri, parse_name_addr, parse_uri

VIA = "SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKnew;rport"


def invite() -> Request:
    h = Headers(
        [
            ("Via", "SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK1;rport"),
            ("Max-Forwards", "70"),
            ("From", '"mss" <sip:mss@example.com>;tag=local1'),
            ("To", "<sip:100@example.com>"),
            ("Call-ID", "cid-1"),
            ("CSeq", "7 INVITE"),
            ("Contact", "<sip:mss@127.0.0.1:5070>"),
        ]
    )
    return Request("INVITE", parse_uri("sip:100@example.com"), h, b"v=0\r\n")


def answer(status: int = 200, record_route: list[str] | None = None, contact: str | None = None) -> Dialog:
    req = invite()
    extra = [("Record-Route", rr) for rr in (record_route or [])]
    if contact is not None:
        extra.append(("Contact", contact))
    resp = make_response(req, status, to_tag="remote1", headers=extra)
    return Dialog.from_response(req, resp)


def test_dialog_from_2xx() -> None:
    d = answer(
        record_route=["<sip:p1.example.com;lr>", "<sip:p2.example.com;lr>"],
        contact="<sip:100@10.0.0.5:5062;transport=udp>",
    )
    assert d.key == ("cid-1", "local1", "remote1")
    assert d.confirmed and d.local_seq == 7 and d.remote_seq is None
    assert str(d.remote_target) == "sip:100@10.0.0.5:5062;transport=udp"
    # route set = Record-Route reversed (RFC 3261 §12.1.2)
    assert [str(r.uri) for r in d.route_set] == ["sip:p2.example.com;lr", "sip:p1.example.com;lr"]
    assert d.local_uri == NameAddr(SipUri(host="example.com", user="mss"), "mss")
    assert d.remote_uri == NameAddr(SipUri(host="example.com", user="100"))


def test_early_dialog_from_1xx_then_confirmed_with_a_new_route_set() -> None:
    req = invite()
    ringing = make_response(
        req, 180, to_tag="remote1", headers=[("Record-Route", "<sip:p1;lr>"), ("Contact", "<sip:100@a>")]
    )
    d = Dialog.from_response(req, ringing)
    assert [d.confirmed] == [False] and [str(r.uri) for r in d.route_set] == ["sip:p1;lr"]
    ok = make_response(
        req,
        200,
        to_tag="remote1",
        headers=[("Record-Route", "<sip:p9;lr>"), ("Contact", "<sip:100@b>"), ("Allow", "INVITE, UPDATE")],
    )
    d.confirm(req, ok)
    assert d.confirmed and [str(r.uri) for r in d.route_set] == ["sip:p9;lr"]
    assert str(d.remote_target) == "sip:100@b"
    assert d.remote_allow == {"INVITE", "UPDATE"}


def test_no_to_tag_no_dialog() -> None:
    req = invite()
    with pytest.raises(SipError, match="To tag"):
        Dialog.from_response(req, make_response(req, 180))


def test_loose_routing_request() -> None:
    d = answer(record_route=["<sip:proxy.example.com;lr>"], contact="<sip:100@10.0.0.5:5062>")
    bye = d.create_request("BYE", via=VIA)
    assert str(bye.uri) == "sip:100@10.0.0.5:5062"
    assert bye.headers.get_all("Route") == ["<sip:proxy.example.com;lr>"]
    assert str(bye.cseq) == "8 BYE" and d.local_seq == 8
    assert bye.from_.tag == "local1" and bye.to.tag == "remote1" and bye.call_id == "cid-1"
    assert bye.from_.display == "mss"
    ack = d.create_request("ACK", via=VIA, cseq=7)
    assert str(ack.cseq) == "7 ACK" and d.local_seq == 8


def test_strict_routing_request() -> None:
    # RFC 3261 §12.2.1.1: first route without lr → it becomes the Request-URI (minus method/ttl
    # params), the remote target goes last in Route.
    d = answer(
        record_route=["<sip:p2.example.com>", "<sip:p1.example.com;method=INVITE;transport=tcp>"],
        contact="<sip:100@10.0.0.5>",
    )
    req = d.create_request("BYE", via=VIA)
    assert str(req.uri) == "sip:p1.example.com;transport=tcp"
    assert req.headers.get_all("Route") == ["<sip:p2.example.com>", "<sip:100@10.0.0.5>"]


def test_no_route_set_goes_to_the_remote_target() -> None:
    d = answer(contact="<sip:100@10.0.0.5>")
    req = d.create_request("INFO", via=VIA, contact=parse_name_addr("<sip:mss@127.0.0.1:5070>"))
    assert str(req.uri) == "sip:100@10.0.0.5" and "Route" not in req.headers
    assert req.headers.get("Contact") == "<sip:mss@127.0.0.1:5070>"


def test_missing_contact_falls_back_to_the_request_uri() -> None:
    d = answer()
    assert str(d.remote_target) == "sip:100@example.com"


def test_remote_cseq_order() -> None:
    d = answer(contact="<sip:100@a>")
    req = invite()

    def incoming(seq: int, method: str = "INVITE") -> Request:
        h = Headers(
            [
                ("Via", "SIP/2.0/UDP a;branch=z9hG4bKx"),
                ("From", "<sip:100@example.com>;tag=remote1"),
                ("To", "<sip:mss@example.com>;tag=local1"),
                ("Call-ID", "cid-1"),
                ("CSeq", f"{seq} {method}"),
            ]
        )
        return Request(method, req.uri, h)

    first = incoming(100)
    assert d.matches(first, incoming_request=True)
    d.check_remote_cseq(first)
    assert d.remote_seq == 100
    d.check_remote_cseq(incoming(100, "ACK"))
    d.check_remote_cseq(incoming(101, "BYE"))
    with pytest.raises(SipError) as info:
        d.check_remote_cseq(incoming(50, "BYE"))
    assert info.value.status == 500
    assert not d.matches(incoming(200), incoming_request=False)


def test_target_refresh() -> None:
    d = answer(contact="<sip:100@a>")
    req = invite()
    refresh = make_response(req, 200, to_tag="remote1", headers=[("Contact", "<sip:100@b:5080>")])
    d.refresh_target(refresh)
    assert str(d.remote_target) == "sip:100@b:5080"


@pytest.mark.parametrize(
    "record_route",
    [[], ["<sip:p1.example.com;lr>", "<sip:p2.example.com;lr>"], ["<sip:strict.example.com>"]],
)
@pytest.mark.parametrize(
    "auth",
    [(), (("Proxy-Authorization", 'Digest username="mss", nonce="n"'),), (("Content-Length", "5"),)],
)
def test_an_ack_written_directly_is_the_request_encoded(
    record_route: list[str], auth: tuple[tuple[str, str], ...]
) -> None:
    d = answer(record_route=record_route, contact="<sip:100@10.0.0.5:5062>")
    expected = d.create_request("ACK", via=VIA, cseq=7, headers=auth).encode()
    assert d.encode_ack(via=VIA, cseq=7, headers=auth) == expected
    assert d.local_seq == 7  # an ACK takes no CSeq number of its own
