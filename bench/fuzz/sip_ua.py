"""The ``sip-ua`` target: mutated SIP messages into a live :class:`~mss.sip.ua.UserAgent`.

The parsers alone accept many messages whose numbers only the handlers read (RSeq, Session-Expires
and Min-SE of a 2xx, Retry-After, a challenge, an in-dialog request's CSeq). Here a UA with a fixed
random seed (so its Call-ID, tags and branches are the same every time) sends one INVITE; an input
is a script of datagrams from the PSS, separated by :data:`SEPARATOR`: answers to that INVITE
and requests in its dialog, built from the INVITE itself, then mutated. The UA must take anything:
no exception may leave ``receive_data``, ``handle_timer`` or ``next_event`` (it answers bad
requests with 4xx and drops bad responses).
"""

from __future__ import annotations

import random
from dataclasses import replace

from mss.sip.message import Headers, Request, make_response, parse_message
from mss.sip.settings import UASettings
from mss.sip.ua import UserAgent
from mss.sip.uri import parse_uri

__all__ = ["SEPARATOR", "run_ua", "ua_seeds"]

#: Splits an input into the datagrams it stands for.
SEPARATOR = b"\n--next--\n"
#: An input that starts with this is a script for a registering UA (answers to its REGISTER).
REGISTER = b"REGISTER-MODE\n"
#: Most datagrams one input is split into (a mutation may repeat the separator).
MAX_DATAGRAMS = 16
#: Timer rounds run after the script (each jumps to the UA's next deadline).
MAX_TIMER_ROUNDS = 40

PSS = ("127.0.0.1", 5060)
SETTINGS = UASettings(
    local_host="127.0.0.1", local_port=5070, transport="udp", pss_host="127.0.0.1", pss_port=5060,
    caller="mss", domain="127.0.0.1", register=False, auth_user="mss", password="secret",
)
_SDP = "v=0\r\no={} 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio {} RTP/AVP 0\r\n"
OFFER = _SDP.format("mss", 30000).encode()
ANSWER = _SDP.format("ph", 4000).encode()
CONTACT = "<sip:100@127.0.0.1:5062>"


def _start(register: bool = False) -> tuple[UserAgent, float]:
    now = 1000.0
    if register:  # external line mode: the UA registers first
        ua = UserAgent(replace(SETTINGS, register=True), rng=random.Random(7))
        ua.start(now)
    else:
        ua = UserAgent(SETTINGS, rng=random.Random(7))
        ua.invite("L1", "100", OFFER, now)
    return ua, now


def _drain(ua: UserAgent) -> list[bytes]:
    sent = [data for data, _dest in ua.data_to_send()]
    for _ in range(1000):
        if ua.next_event() is None:
            break
    return sent


def run_ua(data: bytes) -> str:
    """Feed the script; what the UA sent back (status codes and methods) is the outcome."""
    register = data.startswith(REGISTER)
    ua, now = _start(register)
    _drain(ua)
    out: list[str] = []
    for datagram in data.removeprefix(REGISTER).split(SEPARATOR)[:MAX_DATAGRAMS]:
        ua.receive_data(datagram, PSS, now)
        now += 0.05
        out += [d[:12].decode("latin-1") for d in _drain(ua)]
    for _ in range(MAX_TIMER_ROUNDS):
        deadline = ua.get_timer()
        if deadline is None:
            break
        now = max(now, deadline)
        ua.handle_timer(now)
        _drain(ua)
    ua.shutdown(now)
    _drain(ua)
    return "|".join(sorted(set(out))) + "|ua"


def _reply(inv: Request, status: int, *, body: bytes = b"", extra: list[tuple[str, str]] | None = None,
           tag: str | None = "ph1") -> bytes:
    headers: list[tuple[str, str]] = []
    if status > 100:
        headers += [("Record-Route", "<sip:127.0.0.1:5060;lr;ftag=x>"), ("Contact", CONTACT)]
    headers += extra or []
    if body:
        headers.append(("Content-Type", "application/sdp"))
    return make_response(inv, status, to_tag=tag, headers=headers, body=body).encode()


def _in_dialog(method: str, inv: Request, seq: int, *, body: bytes = b"",
               extra: list[tuple[str, str]] | None = None) -> bytes:
    to = (inv.headers.get("To") or "") + ";tag=ph1"
    h = Headers([
        ("Via", f"SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKfar{seq}"),
        ("Max-Forwards", "69"), ("From", to), ("To", inv.headers.get("From") or ""),
        ("Call-ID", inv.call_id), ("CSeq", f"{seq} {method}"), ("Contact", CONTACT), *(extra or []),
    ])
    if body:
        h.add("Content-Type", "application/sdp")
    return Request(method, parse_uri("sip:mss@127.0.0.1:5070"), h, body).encode()


def ua_seeds() -> tuple[bytes, ...]:
    """Scripts: every kind of answer to the INVITE, and requests in the dialog once answered."""
    ua, _now = _start()
    inv = parse_message(_drain(ua)[0])
    assert isinstance(inv, Request) and inv.method == "INVITE"
    ok = _reply(inv, 200, body=ANSWER, extra=[("Session-Expires", "1800;refresher=uac"),
                                             ("Require", "timer"), ("Min-SE", "90")])
    rel = [("Require", "100rel"), ("RSeq", "1")]
    scripts = [
        [_reply(inv, 100, tag=None), _reply(inv, 180, extra=rel), ok],
        [_reply(inv, 183, body=ANSWER, extra=rel),
         _reply(inv, 183, body=ANSWER, extra=[*rel[:1], ("RSeq", "2")])],
        [ok, _in_dialog("BYE", inv, 1)],
        [ok, _in_dialog("INVITE", inv, 2, body=ANSWER, extra=[("Session-Expires", "90;refresher=uas")])],
        [ok, _in_dialog("UPDATE", inv, 3, body=ANSWER, extra=[("Session-Expires", "1800"),
                                                              ("Min-SE", "90")])],
        [ok, _in_dialog("OPTIONS", inv, 4), _in_dialog("INFO", inv, 5)],
        [_reply(inv, 401, extra=[("WWW-Authenticate", 'Digest realm="x", nonce="n1", qop="auth"')])],
        [_reply(inv, 407, extra=[("Proxy-Authenticate", 'Digest realm="x", nonce="n2", algorithm=MD5')])],
        [_reply(inv, 422, extra=[("Min-SE", "1800")])],
        [_reply(inv, 503, extra=[("Retry-After", "5")]), _reply(inv, 486)],
        [_reply(inv, 200, body=ANSWER), _reply(inv, 200, body=ANSWER, tag="ph2")],
    ]
    reg_ua, _now = _start(register=True)
    reg = parse_message(_drain(reg_ua)[0])
    assert isinstance(reg, Request) and reg.method == "REGISTER"
    challenge = [("WWW-Authenticate", 'Digest realm="x", nonce="n3", qop="auth"')]
    registering = [
        [_reply(reg, 200, extra=[("Contact", "<sip:mss@127.0.0.1:5070>;expires=3600"), ("Expires", "3600")])],
        [_reply(reg, 423, extra=[("Min-Expires", "7200")])],
        [_reply(reg, 401, extra=challenge), _reply(reg, 200, extra=[("Expires", "60")])],
        [_reply(reg, 503, extra=[("Retry-After", "30")])],
    ]
    return (
        *(SEPARATOR.join(parts) for parts in scripts),
        *(REGISTER + SEPARATOR.join(parts) for parts in registering),
    )

