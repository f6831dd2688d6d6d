"""The callback end to end: an AS orders it over IIF, mss calls two real phones through Kamailio.

Kamailio is the PSS (auth mode: mss registers as the external line and answers the 407 on each
INVITE; trunk mode: server-to-server with the default caller); pjsua2 phones in their own processes
answer, ring, refuse, play tones and record; the audio that crossed the relay is checked by FFT.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from mss_peers.audio import duration, tone_fraction
from mss_peers.kamailio import Kamailio
from mss_peers.net import wait_until
from mss_peers.phone import Phone
from mss_peers.server import AsClient, MssServer

pytestmark = pytest.mark.e2e

TONE1 = 440.0
TONE2 = 1000.0


def _setup(kamailio: Callable[..., Kamailio], free_port: Callable[..., int], mode: str = "auth") -> Kamailio:
    sip_port = free_port()
    return kamailio(mode, users={"100": "pw100", "101": "pw101"}, mss=("127.0.0.1", sip_port))


def test_bridge_and_duration_expiry(
    kamailio: Callable[..., Kamailio], phone: Callable[..., Phone], mss: Callable[..., MssServer],
    free_port: Callable[..., int],
) -> None:
    pss = _setup(kamailio, free_port)
    user1 = phone("100", pss, tone_hz=TONE1, record=True)
    user2 = phone("101", pss, tone_hz=TONE2, record=True)
    server = mss(pss)
    server.wait_log("external line registered")
    with server.client() as as1:
        assert as1.request("cb1", "100", "101", 4) == "ACK: id=cb1;code=ok;"
        incoming = user1.wait_event("incoming", timeout=10)
        assert incoming["from_user"] == "mss"
        user1.wait_event("confirmed", timeout=10)
        user2.wait_event("incoming", timeout=10)
        answered_at = time.monotonic()
        user2.wait_event("confirmed", timeout=10)
        response = as1.response("cb1", timeout=15)
        ended = time.monotonic()
    assert response["result"] == "answered"
    # The duration timer runs from user1's answer, so the bridge lasts a little less than 4 s.
    assert abs(int(response["real_duration"]) - (ended - answered_at)) <= 1.5
    user1.wait_event("disconnected", timeout=10)
    user2.wait_event("disconnected", timeout=10)
    assert tone_fraction(user1.recording_path(), TONE2, skip_s=0.5) > 0.8
    assert tone_fraction(user2.recording_path(), TONE1, skip_s=0.5) > 0.8


def _tail_tone(path: Path, hz: float, seconds: float) -> float:
    """Fraction of the last ``seconds`` of a recording that carries ``hz``."""
    return tone_fraction(path, hz, skip_s=max(0.0, duration(path) - seconds))


def _start(
    kamailio: Callable[..., Kamailio], phone: Callable[..., Phone], mss: Callable[..., MssServer],
    free_port: Callable[..., int], *, mode: str = "auth", user1: dict[str, Any] | None = None,
    user2: dict[str, Any] | None = None, **mss_kwargs: Any,
) -> tuple[Kamailio, Phone, Phone, MssServer]:
    pss = _setup(kamailio, free_port, mode)
    p1 = phone("100", pss, **{"tone_hz": TONE1, "record": True, **(user1 or {})})
    p2 = phone("101", pss, **{"tone_hz": TONE2, "record": True, **(user2 or {})})
    if mode == "trunk":
        mss_kwargs.setdefault("external_line", None)
    server = mss(pss, **mss_kwargs)
    if mode == "auth":
        server.wait_log("external line registered")
    return pss, p1, p2, server


def _ports_freed(server: MssServer) -> None:
    """Every RTP port of the callbacks is closed again (checked by binding each one)."""
    wait_until(lambda: not server.rtp_ports_held(), 5.0)


def _bridge(p1: Phone, p2: Phone) -> float:
    """Wait until both legs are up; the wall time user2's answer took effect."""
    p1.wait_event("confirmed", timeout=10)
    return float(p2.wait_event("confirmed", timeout=10)["time"])


def _close_to(real_duration: str | int, talked: float) -> bool:
    """real_duration is the talk time measured by the phones, to within a second either way."""
    return abs(int(real_duration) - talked) <= 1.0


def test_user2_hangs_up(kamailio, phone, mss, free_port) -> None:  # type: ignore[no-untyped-def]
    _, p1, p2, server = _start(kamailio, phone, mss, free_port)
    with server.client() as as1:
        assert as1.request("h2", "100", "101", 60) == "ACK: id=h2;code=ok;"
        bridged = _bridge(p1, p2)
        time.sleep(2.0)
        talked = time.time() - bridged
        p2.hangup()
        response = as1.response("h2", timeout=10)
    assert response["result"] == "answered"
    assert _close_to(response["real_duration"], talked), (response, talked)
    p1.wait_event("disconnected", timeout=10)  # mss sent BYE to user1
    assert _tail_tone(p1.recording_path(), TONE2, 1.5) > 0.8


def test_user1_hangs_up_after_bridge(kamailio, phone, mss, free_port) -> None:  # type: ignore[no-untyped-def]
    _, p1, p2, server = _start(kamailio, phone, mss, free_port)
    with server.client() as as1:
        assert as1.request("h1", "100", "101", 60) == "ACK: id=h1;code=ok;"
        bridged = _bridge(p1, p2)
        time.sleep(1.0)
        talked = time.time() - bridged
        p1.hangup()
        response = as1.response("h1", timeout=10)
    assert response["result"] == "answered"
    assert _close_to(response["real_duration"], talked), (response, talked)
    p2.wait_event("disconnected", timeout=10)
    _ports_freed(server)


def test_user1_busy(kamailio, phone, mss, free_port) -> None:  # type: ignore[no-untyped-def]
    _, _p1, p2, server = _start(kamailio, phone, mss, free_port, user1={"behaviour": "busy"})
    with server.client() as as1:
        assert as1.request("busy", "100", "101", 60) == "ACK: id=busy;code=ok;"
        response = as1.response("busy", timeout=10)
    assert response == {"id": "busy", "real_duration": "0", "result": "user1_busy", "code": "486"}
    assert not p2.events("incoming")
    _ports_freed(server)


def test_user2_no_answer_ring_timeout_and_ringback(kamailio, phone, mss, free_port) -> None:  # type: ignore[no-untyped-def]
    _, p1, p2, server = _start(kamailio, phone, mss, free_port, user2={"behaviour": "ring"},
                               callback={"ring_timeout": 3})
    with server.client() as as1:
        assert as1.request("noans", "100", "101", 60) == "ACK: id=noans;code=ok;"
        p1.wait_event("confirmed", timeout=10)
        p2.wait_event("incoming", timeout=10)
        started = time.monotonic()
        response = as1.response("noans", timeout=10)
        rang = time.monotonic() - started
    assert response == {"id": "noans", "real_duration": "0", "result": "user2_no_answer", "code": "0"}
    assert 2.0 < rang < 5.0
    assert p2.wait_event("disconnected", timeout=10)["code"] == 487  # CANCELled
    p1.wait_event("disconnected", timeout=10)
    # user1 heard mss's ringback (425 Hz) while user2 rang.
    assert tone_fraction(p1.recording_path(), 425.0, skip_s=0.3) > 0.8


def test_user1_hangs_up_while_user2_rings(kamailio, phone, mss, free_port) -> None:  # type: ignore[no-untyped-def]
    _, p1, p2, server = _start(kamailio, phone, mss, free_port, user2={"behaviour": "ring"})
    with server.client() as as1:
        assert as1.request("giveup", "100", "101", 60) == "ACK: id=giveup;code=ok;"
        p1.wait_event("confirmed", timeout=10)
        p2.wait_event("incoming", timeout=10)
        p1.hangup()
        response = as1.response("giveup", timeout=10)
    assert response["result"] == "cancelled" and response["real_duration"] == "0"
    assert p2.wait_event("disconnected", timeout=10)["code"] == 487


@pytest.mark.parametrize("state", ["calling_user1", "calling_user2", "bridged"])
def test_as_cancel(kamailio, phone, mss, free_port, state: str) -> None:  # type: ignore[no-untyped-def]
    ring = {"behaviour": "ring"}
    _, p1, p2, server = _start(kamailio, phone, mss, free_port,
                               user1=ring if state == "calling_user1" else None,
                               user2=ring if state == "calling_user2" else None)
    with server.client() as as1:
        assert as1.request("c1", "100", "101", 60) == "ACK: id=c1;code=ok;"
        if state == "calling_user1":
            p1.wait_event("incoming", timeout=10)
        elif state == "calling_user2":
            p1.wait_event("confirmed", timeout=10)
            p2.wait_event("incoming", timeout=10)
        else:
            bridged = _bridge(p1, p2)
            time.sleep(1.0)
            talked = time.time() - bridged
        assert as1.cancel("c1") == "ACK: id=c1;code=ok;"
        response = as1.response("c1", timeout=10)
        assert as1.cancel("c1") == "ACK: id=c1;code=fail;"  # over: no such callback any more
    assert response["result"] == "cancelled"
    if state == "bridged":
        assert _close_to(response["real_duration"], talked), (response, talked)
    else:
        assert response["real_duration"] == "0"
    p1.wait_event("disconnected", timeout=10)
    if state != "calling_user1":
        p2.wait_event("disconnected", timeout=10)


def test_user2_not_registered(kamailio, phone, mss, free_port) -> None:  # type: ignore[no-untyped-def]
    _, p1, p2, server = _start(kamailio, phone, mss, free_port)
    p2.set_registration(False)
    p2.wait_unregistered()
    with server.client() as as1:
        assert as1.request("unreg", "100", "101", 60) == "ACK: id=unreg;code=ok;"
        response = as1.response("unreg", timeout=10)
    assert response["result"] == "user2_failed" and response["code"] == "480"
    p1.wait_event("disconnected", timeout=10)


def test_sip_over_tcp(kamailio, phone, mss, free_port) -> None:  # type: ignore[no-untyped-def]
    _, p1, p2, server = _start(kamailio, phone, mss, free_port, transport="tcp",
                               user2={"transport": "tcp"})
    with server.client() as as1:
        assert as1.request("tcp", "100", "101", 2) == "ACK: id=tcp;code=ok;"
        _bridge(p1, p2)
        response = as1.response("tcp", timeout=10)
    assert response["result"] == "answered"
    assert tone_fraction(p1.recording_path(), TONE2, skip_s=0.5) > 0.8


def test_server_to_server_default_caller(kamailio, phone, mss, free_port) -> None:  # type: ignore[no-untyped-def]
    _, p1, p2, server = _start(kamailio, phone, mss, free_port, mode="trunk", default_caller="5550123")
    with server.client() as as1:
        assert as1.request("s2s", "100", "101", 2) == "ACK: id=s2s;code=ok;"
        assert p1.wait_event("incoming", timeout=10)["from_user"] == "5550123"
        assert p2.wait_event("incoming", timeout=10)["from_user"] == "5550123"
        response = as1.response("s2s", timeout=10)
    assert response["result"] == "answered"


def test_hold_and_resume(kamailio, phone, mss, free_port) -> None:  # type: ignore[no-untyped-def]
    _, p1, p2, server = _start(kamailio, phone, mss, free_port)
    with server.client() as as1:
        assert as1.request("hold", "100", "101", 60) == "ACK: id=hold;code=ok;"
        _bridge(p1, p2)
        time.sleep(1.0)
        mark1, mark2 = p1.mark(), p2.mark()
        p1.hold()
        p1.wait_event("media", status="local_hold", since=mark1, timeout=10)
        p2.wait_event("media", status="remote_hold", since=mark2, timeout=10)
        time.sleep(1.0)
        _resume_and_finish(as1, "hold", p1, p2, resumer=p1)


def test_both_phones_hold_then_resume_one_by_one(kamailio, phone, mss, free_port) -> None:  # type: ignore[no-untyped-def]
    # Holds from both sides merge: each phone sees the other's hold, nothing is released for
    # inactivity while both hold, and audio flows again only once both have resumed.
    _, p1, p2, server = _start(kamailio, phone, mss, free_port, rtp={"inactivity_timeout": 3})
    with server.client() as as1:
        assert as1.request("both", "100", "101", 60) == "ACK: id=both;code=ok;"
        _bridge(p1, p2)
        time.sleep(1.0)
        mark1, mark2 = p1.mark(), p2.mark()
        p1.hold()
        p1.wait_event("media", status="local_hold", since=mark1, timeout=10)
        p2.wait_event("media", status="remote_hold", since=mark2, timeout=10)
        mark2 = p2.mark()
        p2.hold()
        p2.wait_event("media", status="local_hold", since=mark2, timeout=10)
        time.sleep(4.0)  # longer than inactivity_timeout: both on hold, nothing is released
        assert as1.lines == []
        mark1 = p1.mark()
        p1.unhold()  # user2 still holds: user1 is told it is held now
        p1.wait_event("media", status="remote_hold", since=mark1, timeout=10)
        _resume_and_finish(as1, "both", p1, p2, resumer=p2)


def _resume_and_finish(as1: AsClient, cb_id: str, p1: Phone, p2: Phone, *, resumer: Phone) -> None:
    """``resumer`` takes the call off hold: both phones are active, they talk 2 s, user1 hangs up; the
    callback was answered and each phone heard the other's tone at the end."""
    mark1, mark2 = p1.mark(), p2.mark()
    resumer.unhold()
    p1.wait_event("media", status="active", since=mark1, timeout=10)
    p2.wait_event("media", status="active", since=mark2, timeout=10)
    time.sleep(2.0)
    p1.hangup()
    response = as1.response(cb_id, timeout=10)
    assert response["result"] == "answered"
    p2.wait_event("disconnected", timeout=10)
    assert _tail_tone(p1.recording_path(), TONE2, 1.5) > 0.7
    assert _tail_tone(p2.recording_path(), TONE1, 1.5) > 0.7


def test_rfc4733_digits_cross(kamailio, phone, mss, free_port) -> None:  # type: ignore[no-untyped-def]
    _, p1, p2, server = _start(kamailio, phone, mss, free_port)
    with server.client() as as1:
        assert as1.request("dtmf", "100", "101", 60) == "ACK: id=dtmf;code=ok;"
        _bridge(p1, p2)
        time.sleep(0.5)
        p1.send_dtmf("159#")
        assert p2.wait_dtmf("159#", timeout=10) == "159#"
        p2.send_dtmf("*0")
        assert p1.wait_dtmf("*0", timeout=10) == "*0"
        p2.hangup()
        as1.response("dtmf", timeout=10)


def test_user2_early_media_reaches_user1(kamailio, phone, mss, free_port) -> None:  # type: ignore[no-untyped-def]
    _, p1, p2, server = _start(kamailio, phone, mss, free_port,
                               user2={"behaviour": "answer_after:2.5", "early_media": True})
    with server.client() as as1:
        assert as1.request("early", "100", "101", 60) == "ACK: id=early;code=ok;"
        p1.wait_event("confirmed", timeout=10)
        p2.wait_event("confirmed", timeout=10)
        p1.hangup()
        response = as1.response("early", timeout=10)
    assert response["result"] == "answered"
    p1.wait_event("disconnected", timeout=10)
    # Before user2 answered, user1 heard user2's own tone (its early media), not mss's 425 Hz ringback.
    assert tone_fraction(p1.recording_path(), TONE2, skip_s=0.5) > 0.8
    assert tone_fraction(p1.recording_path(), 425.0) < 0.1


def test_codec_mismatch_is_a_clean_failure(kamailio, phone, mss, free_port) -> None:  # type: ignore[no-untyped-def]
    _, _p1, p2, server = _start(kamailio, phone, mss, free_port, user1={"codecs": ["G722"]})
    with server.client() as as1:
        assert as1.request("g722", "100", "101", 60) == "ACK: id=g722;code=ok;"
        response = as1.response("g722", timeout=10)
    assert response["result"] == "user1_failed" and response["code"] == "488"
    assert not p2.events("incoming")


def test_pss_down_in_trunk_mode(tmp_path: Path, free_port: Callable[..., int]) -> None:
    # Nothing listens at the PSS address: the INVITE times out (Timer B) or the TCP connect fails.
    dead_pss = ("127.0.0.1", free_port())
    with MssServer(tmp_path / "mss", pss=dead_pss, external_line=None, transport="tcp") as server, \
            server.client() as as1:
        assert as1.request("down", "100", "101", 60) == "ACK: id=down;code=ok;"
        response = as1.response("down", timeout=40)
    assert response["result"] == "user1_failed"
    assert response["code"] in ("408", "503")


def test_relay_ports_exhausted_refuses_at_once(kamailio, phone, mss, free_port) -> None:  # type: ignore[no-untyped-def]
    # A range with room for one session: the second REQUEST gets code=fail, the first is unharmed.
    base = 2 * (free_port() // 2)
    _, p1, _p2, server = _start(kamailio, phone, mss, free_port, rtp={"port_min": base, "port_max": base + 3})
    with server.client() as as1:
        assert as1.request("one", "100", "101", 3) == "ACK: id=one;code=ok;"
        p1.wait_event("incoming", timeout=10)
        assert as1.request("two", "100", "101", 3) == "ACK: id=two;code=fail;"
        assert as1.response("one", timeout=15)["result"] == "answered"
    assert "no RTP ports left" in server.log_text()


def test_cdr_is_written(kamailio, phone, mss, free_port) -> None:  # type: ignore[no-untyped-def]
    _, p1, p2, server = _start(kamailio, phone, mss, free_port)
    with server.client() as as1:
        assert as1.request("cdr", "100", "101", 60) == "ACK: id=cdr;code=ok;"
        bridged = _bridge(p1, p2)
        time.sleep(1.0)
        talked = time.time() - bridged
        p2.hangup()
        response = as1.response("cdr", timeout=10)
    server.stop()
    with sqlite3.connect(server.workdir / "journal.sqlite3") as db:
        db.row_factory = sqlite3.Row
        row = db.execute("SELECT * FROM cdrs WHERE id = 'cdr'").fetchone()
    assert row["user1"] == "100" and row["user2"] == "101" and row["caller"] == "mss"
    assert row["leg1_code"] == 200 and row["leg2_code"] == 200
    assert row["codec"] == "PCMU" and row["released_by"] == "user2" and row["result"] == "answered"
    assert row["leg1_call_id"] and row["leg2_call_id"] and row["leg1_call_id"] != row["leg2_call_id"]
    assert row["requested_at"] <= row["leg1_answered_at"] <= row["leg2_answered_at"] <= row["released_at"]
    assert str(row["real_duration"]) == response["real_duration"] and _close_to(row["real_duration"], talked)


def test_twenty_callbacks_in_parallel_on_one_connection(kamailio, phone, mss, free_port) -> None:  # type: ignore[no-untyped-def]
    # Five pairs of phones, four callbacks each (a pjsua2 phone here takes four calls at once).
    pairs = [(f"2{i:02d}", f"3{i:02d}") for i in range(5)]
    users = {u: f"pw{u}" for pair in pairs for u in pair}
    pss = kamailio("trunk", users=users, mss=("127.0.0.1", free_port()))
    phones = {u: phone(u, pss, tone_hz=TONE1 if u.startswith("2") else TONE2) for u in users}
    server = mss(pss, external_line=None)
    ids = [f"par{i}" for i in range(20)]
    with server.client() as as1:
        as1.send("\r\n".join(
            f"REQUEST: id={cb};user1={pairs[i % 5][0]};user2={pairs[i % 5][1]};duration=3;"
            for i, cb in enumerate(ids)
        ))
        acks = [as1.wait_line(rf"^ACK: id={cb};", 10) for cb in ids]
        responses = [as1.response(cb, timeout=40) for cb in ids]
    assert acks == [f"ACK: id={cb};code=ok;" for cb in ids]
    assert all(r["result"] == "answered" for r in responses), responses
    # The duration timer starts at each user1's answer; on a loaded machine a release may come late,
    # and real_duration then counts the longer talk (it is measured, not assumed).
    assert all(1 <= int(r["real_duration"]) <= 6 for r in responses), responses
    for user, device in phones.items():
        assert len(device.events("incoming")) == 4, user
    _ports_freed(server)


@pytest.mark.parametrize(
    ("leg", "behaviour", "result", "code"),
    [
        ("user1", "reject:603", "user1_rejected", "603"),
        ("user1", "ring", "user1_no_answer", "0"),
        ("user1", "reject:503", "user1_failed", "500"),  # a proxy turns 503 into 500 (RFC 3261 §16.7)
        ("user2", "busy", "user2_busy", "486"),
        ("user2", "reject:603", "user2_rejected", "603"),
    ],
)
def test_failure_paths_end_cleanly(kamailio, phone, mss, free_port, leg, behaviour, result, code) -> None:  # type: ignore[no-untyped-def]
    kwargs = {"behaviour": behaviour}
    _, p1, p2, server = _start(kamailio, phone, mss, free_port, callback={"ring_timeout": 2},
                               user1=kwargs if leg == "user1" else None,
                               user2=kwargs if leg == "user2" else None)
    with server.client() as as1:
        assert as1.request("fail", "100", "101", 60) == "ACK: id=fail;code=ok;"
        response = as1.response("fail", timeout=15)
    assert response == {"id": "fail", "real_duration": "0", "result": result, "code": code}
    if leg == "user2":
        p1.wait_event("disconnected", timeout=10)  # user1 is hung up, not left in silence
    else:
        assert not p2.events("incoming")
    _ports_freed(server)
