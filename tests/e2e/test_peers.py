"""The real-peer harness proves itself: phones call each other through Kamailio.

Nothing of mss runs here. These tests pin down what the other end-to-end tests rely on: both
Kamailio modes route calls between UDP and TCP phones, the digest auth of the mss line works,
the trunk trusts mss's address only, errors come back as the right SIP status (404, 480, 486,
487), and the phones really carry audio, RFC 4733 digits, hold/resume, early media, PRACK and
UPDATE.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from mss_peers import audio
from mss_peers.kamailio import Kamailio
from mss_peers.phone import Phone
from mss_peers.rawsip import RawSipClient, digest_authorization, parse_challenge

pytestmark = pytest.mark.e2e

USERS = {"100": "pw100", "101": "pw101", "102": "pw102"}
TONE_A, TONE_B = 440.0, 1000.0
# Seconds of conversation whose audio is checked.
TALK_SECONDS = 2.0
# Share of the loud frames of a recording that must carry the far end's tone.
MIN_TONE_FRACTION = 0.9

KamailioFactory = Callable[..., Kamailio]
PhoneFactory = Callable[..., Phone]


def connect(a: Phone, b: Phone, target: str = "101") -> dict[str, object]:
    """A calls ``target``; returns B's incoming event once both sides are confirmed."""
    a.call(target)
    incoming = b.wait_event("incoming")
    a.wait_event("confirmed")
    b.wait_event("confirmed")
    return incoming


def hang_up(by: Phone, other: Phone) -> tuple[dict[str, object], dict[str, object]]:
    """``by`` sends BYE; returns both disconnected events (recordings are complete then)."""
    by.hangup()
    return by.wait_event("disconnected"), other.wait_event("disconnected")


def assert_tone(phone: Phone, hz: float, peer_logs: Callable[[], str], skip_s: float = 0.0) -> None:
    path = phone.recording_path()
    fraction = audio.tone_fraction(path, hz, skip_s=skip_s)
    assert fraction >= MIN_TONE_FRACTION, (
        f"{phone.name} should hear {hz:g} Hz: {audio.describe(path, hz, skip_s=skip_s)}\n{peer_logs()}"
    )


@pytest.mark.parametrize(
    ("mode", "transport_a", "transport_b"),
    [
        ("auth", "udp", "udp"),
        ("auth", "tcp", "tcp"),
        ("auth", "udp", "tcp"),
        ("trunk", "udp", "udp"),
        ("trunk", "tcp", "tcp"),
        ("trunk", "tcp", "udp"),
    ],
)
def test_call_carries_tones_both_ways(
    kamailio: KamailioFactory,
    phone: PhoneFactory,
    peer_logs: Callable[[], str],
    mode: str,
    transport_a: str,
    transport_b: str,
) -> None:
    pss = kamailio(mode, USERS)
    a = phone("100", pss, transport=transport_a, tone_hz=TONE_A)
    b = phone("101", pss, transport=transport_b, tone_hz=TONE_B)
    contact = pss.wait_registered("101")[0]
    if transport_b == "tcp":  # RFC 5626 outbound: the connection's port, ;transport=tcp;ob
        assert ";transport=tcp" in contact.lower(), peer_logs()
    else:
        assert contact == f"sip:101@{b.info_ready['sip_address']}", peer_logs()

    incoming = connect(a, b)
    assert incoming["from_user"] == "100", peer_logs()
    assert a.info()["codec"] == b.info()["codec"] == "PCMU", peer_logs()
    time.sleep(TALK_SECONDS)  # the conversation whose audio is checked below
    bye_side, other_side = hang_up(a, b)
    assert bye_side["code"] == 200 and other_side["role"] == "callee", peer_logs()

    assert_tone(a, TONE_B, peer_logs)
    assert_tone(b, TONE_A, peer_logs)


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_mss_line_registers_with_digest(
    kamailio: KamailioFactory, peer_logs: Callable[[], str], transport: str
) -> None:
    """What the SIP stack relies on in external-line mode: 401 qop=auth, then 200 with a
    correct RFC 2617 digest; a wrong password is challenged again; a number registered with
    another digest user (``aors``); an INVITE needs 407 auth."""
    pss = kamailio("auth", USERS, mss_line=("mss", "secret"), aors={"5551000": "mss"})
    uri = pss.uri
    with RawSipClient(pss.host, pss.port, transport=transport) as sip:
        first = sip.request("REGISTER", uri, from_user="mss", headers={"Expires": "60"})
        assert first.status == 401, first.raw
        challenge = parse_challenge(first.header("WWW-Authenticate"))
        assert challenge["realm"] == pss.realm and "auth" in challenge["qop"], first.raw

        wrong = digest_authorization(first.header("WWW-Authenticate"), "REGISTER", uri, "mss", "x")
        again = sip.request(
            "REGISTER",
            uri,
            from_user="mss",
            call_id=first.call_id,
            headers={"Expires": "60", "Authorization": wrong},
        )
        assert again.status == 401, again.raw

        right = digest_authorization(first.header("WWW-Authenticate"), "REGISTER", uri, "mss", "secret")
        ok = sip.request(
            "REGISTER",
            uri,
            from_user="mss",
            call_id=first.call_id,
            headers={"Expires": "60", "Authorization": right},
        )
        assert ok.status == 200, f"{ok.raw}\n{peer_logs()}"
        assert any(f":{sip.local[1]}" in c for c in ok.header_all("Contact")), ok.raw
        assert pss.registered("mss"), peer_logs()

        # A line whose number differs from its auth user registers the number (port-less URI).
        domain_uri = f"sip:{pss.host}"
        first = sip.request("REGISTER", domain_uri, from_user="5551000", domain=pss.host)
        auth = digest_authorization(first.header("WWW-Authenticate"), "REGISTER", domain_uri, "mss", "secret")
        number = sip.request(
            "REGISTER",
            domain_uri,
            from_user="5551000",
            domain=pss.host,
            call_id=first.call_id,
            headers={"Authorization": auth},
        )
        assert number.status == 200 and pss.registered("5551000"), f"{number.raw}\n{peer_logs()}"

        invite = sip.request("INVITE", pss.user_uri("101"), from_user="mss", to_user="101")
        assert invite.status == 407, invite.raw
        assert "auth" in parse_challenge(invite.header("Proxy-Authenticate"))["qop"], invite.raw


def test_trunk_trusts_only_the_mss_address(
    kamailio: KamailioFactory,
    phone: PhoneFactory,
    free_port: Callable[..., int],
    peer_logs: Callable[[], str],
) -> None:
    """Trunk mode: an INVITE from mss's host:port reaches the phone without auth (here its
    486 comes back); the same INVITE from another port is challenged (407)."""
    mss_port = free_port()
    pss = kamailio("trunk", USERS, mss=("127.0.0.1", mss_port))
    b = phone("101", pss, behaviour="busy")
    with RawSipClient(pss.host, pss.port, local_port=mss_port) as trusted:
        # mss may address the domain without a port (SPEC: domain defaults to pss_host).
        text = trusted.build("INVITE", f"sip:101@{pss.host}", from_user="5550100", to_user="101")
        trusted.send(text)
        answer = trusted.final_response()
        trusted.ack(text, answer)
        assert answer.status == 486, f"{answer.raw}\n{peer_logs()}"
    assert b.wait_event("incoming")["from_user"] == "5550100", peer_logs()
    with RawSipClient(pss.host, pss.port) as stranger:
        text = stranger.build("INVITE", pss.user_uri("101"), from_user="5550100", to_user="101")
        stranger.send(text)
        answer = stranger.final_response()
        stranger.ack(text, answer)
        assert answer.status == 407, f"{answer.raw}\n{peer_logs()}"


@pytest.mark.parametrize(
    ("target", "code"),
    [("999", 404), ("102", 480)],
    ids=["unknown-user-404", "not-registered-480"],
)
def test_routing_errors(
    kamailio: KamailioFactory,
    phone: PhoneFactory,
    peer_logs: Callable[[], str],
    target: str,
    code: int,
) -> None:
    pss = kamailio("auth", USERS)
    a = phone("100", pss)
    a.call(target)
    assert a.wait_event("disconnected")["code"] == code, peer_logs()


def test_busy_callee_gives_486(
    kamailio: KamailioFactory, phone: PhoneFactory, peer_logs: Callable[[], str]
) -> None:
    pss = kamailio("auth", USERS)
    a = phone("100", pss)
    b = phone("101", pss, transport="tcp", behaviour="busy")
    a.call("101")
    b.wait_event("incoming")
    assert a.wait_event("disconnected")["code"] == 486, peer_logs()


def test_reject_code_and_codec_preference(
    kamailio: KamailioFactory, phone: PhoneFactory, peer_logs: Callable[[], str]
) -> None:
    """Any final code passes through (603); a PCMA-only callee gets PCMA from a PCMU-first
    caller; a callee that does not answer by itself is answered by hand, with silence."""
    pss = kamailio("auth", USERS)
    a = phone("100", pss)
    b = phone("101", pss, behaviour="reject:603")
    c = phone("102", pss, codecs=["PCMA"], behaviour="ignore", tone_hz=None)
    a.call("101")
    assert a.wait_event("disconnected")["code"] == 603, peer_logs()
    assert b.wait_event("disconnected")["code"] == 603, peer_logs()
    a.call("102")
    c.wait_event("incoming")
    c.answer(200)
    assert a.wait_event("confirmed")["codec"] == "PCMA", peer_logs()
    assert c.wait_event("confirmed")["codec"] == "PCMA", peer_logs()
    hang_up(c, a)
    assert audio.silence_fraction(a.recording_path()) == 1.0, audio.describe(a.recording_path())


def test_cancel_while_ringing_gives_487(
    kamailio: KamailioFactory, phone: PhoneFactory, peer_logs: Callable[[], str]
) -> None:
    pss = kamailio("trunk", USERS)
    a = phone("100", pss, transport="tcp")
    b = phone("101", pss, behaviour="ring")
    a.call("101")
    b.wait_event("incoming")
    assert a.wait_event("early")["code"] == 180, peer_logs()
    a.hangup()  # CANCEL
    assert b.wait_event("disconnected")["code"] == 487, peer_logs()  # its INVITE was cancelled
    assert a.wait_event("disconnected")["code"] == 487, peer_logs()


def test_rfc4733_digits_both_ways(
    kamailio: KamailioFactory, phone: PhoneFactory, peer_logs: Callable[[], str]
) -> None:
    pss = kamailio("auth", USERS)
    a = phone("100", pss)
    b = phone("101", pss, transport="tcp")
    connect(a, b)
    a.send_dtmf("123#")
    b.send_dtmf("*0")
    assert b.wait_dtmf("123#") == "123#", peer_logs()
    assert a.wait_dtmf("*0") == "*0", peer_logs()
    assert {e["method"] for e in b.events("dtmf")} == {"rfc4733"}, peer_logs()
    hang_up(b, a)


def test_hold_and_resume_both_directions(
    kamailio: KamailioFactory, phone: PhoneFactory, peer_logs: Callable[[], str]
) -> None:
    """re-INVITEs route in-dialog from caller and callee, across UDP and TCP."""
    pss = kamailio("auth", USERS)
    a = phone("100", pss, transport="udp")
    b = phone("101", pss, transport="tcp")
    connect(a, b)
    for holder, held in ((a, b), (b, a)):
        holder.hold()
        holder.wait_event("media", status="local_hold")
        held.wait_event("media", status="remote_hold")
        marks = holder.mark(), held.mark()
        holder.unhold()
        holder.wait_event("media", status="active", since=marks[0])
        held.wait_event("media", status="active", since=marks[1])
    reinvites = [e for e in b.events("sip") if e["first_line"].startswith("INVITE ")]
    assert len(reinvites) == 2, peer_logs()  # A's hold and resume
    hang_up(a, b)


def test_early_media_prack_and_update(
    kamailio: KamailioFactory, phone: PhoneFactory, peer_logs: Callable[[], str]
) -> None:
    """183 with SDP (reliable, so PRACK) plays the callee's tone before the answer; UPDATEs in
    both directions and the callee's BYE route in-dialog."""
    pss = kamailio("trunk", USERS)
    a = phone("100", pss, transport="udp", tone_hz=TONE_A)
    b = phone(
        "101",
        pss,
        transport="tcp",
        tone_hz=TONE_B,
        early_media=True,
        prack="mandatory",
        behaviour="answer_after:1.0",
    )
    a.call("101")
    early = a.wait_event("early")
    assert early["code"] == 183, peer_logs()
    a.wait_event("media", status="active")
    b.wait_sip("PRACK", timeout=3)
    a.wait_event("confirmed", timeout=3)
    b.wait_event("confirmed")
    mark = a.mark()
    a.update()
    b.wait_sip("UPDATE")
    a.wait_sip(200, since=mark)  # the answer to the UPDATE
    mark = b.mark()
    b.update()  # and the other way
    a.wait_sip("UPDATE")
    b.wait_sip(200, since=mark)
    hang_up(b, a)
    # The first second of A's recording is B's early media.
    path = a.recording_path()
    assert audio.duration(path) >= 0.9, audio.describe(path)
    assert_tone(a, TONE_B, peer_logs)
