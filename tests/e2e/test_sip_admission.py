"""Steady traffic against mss's own SIP tables, with a real mss, Kamailio and pjsua2 phones.

Finished dialogs linger 64·T1 to absorb retransmissions; they must not count against the limits
that admit new callbacks. With ``max_calls = 2`` the third sequential callback used to fail with
``user1_failed;code=503`` ("dialog limit") while the first two dialogs still lingered; and the
requests of a live call are served whatever fills the tables.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Callable

import pytest

from mss_peers.kamailio import Kamailio
from mss_peers.phone import Phone
from mss_peers.server import MssServer

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_sequential_callbacks_with_max_calls_2_are_all_answered(
    kamailio: Callable[..., Kamailio],
    phone: Callable[..., Phone],
    mss: Callable[..., MssServer],
    free_port: Callable[..., int],
    transport: str,
) -> None:
    pss = kamailio("auth", users={"100": "pw100", "101": "pw101"}, mss=("127.0.0.1", free_port()))
    user1 = phone("100", pss)
    user2 = phone("101", pss)
    server = mss(pss, transport=transport, callback={"max_calls": 2})
    server.wait_log("external line registered")
    with server.client() as as1:
        for n in range(6):  # each waits for the previous RESPONSE: one callback at a time
            cb = f"seq{n}"
            assert as1.request(cb, "100", "101", 1) == f"ACK: id={cb};code=ok;"
            response = as1.response(cb, timeout=20)
            assert response["result"] == "answered", (n, response, server.log_tail(40))
    assert len(user1.events("confirmed")) == 6 and len(user2.events("confirmed")) == 6


def test_options_flood_from_the_pss_address_then_a_bye_still_releases_the_call(
    kamailio: Callable[..., Kamailio],
    phone: Callable[..., Phone],
    mss: Callable[..., MssServer],
    free_port: Callable[..., int],
) -> None:
    """OPTIONS from the PSS's address used to fill the transaction table (answered ones linger
    64·T1): the BYE of a live call then got 503 and the call was not released."""
    pss = kamailio("auth", users={"100": "pw100", "101": "pw101"}, mss=("127.0.0.1", free_port()))
    user1 = phone("100", pss)
    user2 = phone("101", pss)
    server = mss(pss, callback={"max_calls": 2})
    server.wait_log("external line registered")
    with server.client() as as1:
        assert as1.request("flood", "100", "101", 60) == "ACK: id=flood;code=ok;"
        user1.wait_event("confirmed", timeout=10)
        user2.wait_event("confirmed", timeout=10)
        answered = 0
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("127.0.0.1", 0))  # the PSS's address (another port): not a stranger
            s.settimeout(2.0)
            for n in range(300):
                s.sendto(_options(n, s.getsockname()[1]), ("127.0.0.1", server.sip_port))
                with contextlib.suppress(TimeoutError):
                    answered += s.recv(65535).startswith(b"SIP/2.0 200 OK\r\n")
        user2.hangup()  # a BYE through Kamailio to mss
        response = as1.response("flood", timeout=5)
    assert response["result"] == "answered", response
    assert answered == 300  # out-of-dialog requests have their own budget: none was refused
    user1.wait_event("disconnected", timeout=10)


def _options(n: int, port: int) -> bytes:
    return (
        "OPTIONS sip:mss@127.0.0.1 SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bKfl{n};rport\r\n"
        f"From: <sip:pss@127.0.0.1>;tag=f{n}\r\nTo: <sip:mss@127.0.0.1>\r\nCall-ID: flood-{n}\r\n"
        "CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    ).encode()
