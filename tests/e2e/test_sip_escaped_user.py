"""A callback to a user whose number has characters a SIP URI must escape, through Kamailio.

SPEC allows ``*`` and ``#`` in user1/user2 (``*31#555``: a service code). RFC 3261 §25.1 allows
``*`` raw in a URI user part but not ``#``, which must be written ``%23``. The phone registers as
``*31%23555`` (the user as it appears in its URI); mss must send the INVITE to
``sip:*31%23555@...`` for Kamailio to find the registration and route it. Written raw, the
Request-URI names a user nobody registered.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from mss_peers.kamailio import Kamailio
from mss_peers.phone import Phone
from mss_peers.server import MssServer

pytestmark = pytest.mark.e2e

SERVICE = "*31#555"
ESCAPED = "*31%23555"


def test_callback_to_a_user_with_hash_reaches_the_phone(
    kamailio: Callable[..., Kamailio],
    phone: Callable[..., Phone],
    mss: Callable[..., MssServer],
    free_port: Callable[..., int],
) -> None:
    pss = kamailio("auth", users={"100": "pw100", ESCAPED: "pwsvc"}, mss=("127.0.0.1", free_port()))
    user1 = phone("100", pss)
    service = phone(ESCAPED, pss)
    server = mss(pss)
    server.wait_log("external line registered")
    with server.client() as as1:
        assert as1.request("esc1", "100", SERVICE, 1) == "ACK: id=esc1;code=ok;"
        response = as1.response("esc1", timeout=20)
    assert response["result"] == "answered", (response, server.log_tail(30))
    incoming = service.wait_event("incoming", timeout=1)
    assert ESCAPED in str(incoming), incoming
    user1.wait_event("disconnected", timeout=10)
    service.wait_event("disconnected", timeout=10)
