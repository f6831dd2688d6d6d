"""The scenario of ``mss demo``: one whole callback on this machine, with real peers, and what happened.

``mss demo`` (``mss/demo.py``) finds this package in the source tree and calls :func:`main`.

It starts Kamailio as the provider's SIP server (registrar and proxy with digest auth), two pjsua2
phones that register there (user1 plays 440 Hz, user2 plays 1000 Hz and answers after a couple of
seconds so user1 hears ringback), and mss in external line mode; then it orders a callback as an AS
would, prints the timeline and checks the audio that crossed the relay in both directions.
"""

from __future__ import annotations

import importlib.util
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mss_peers.audio import tone_fraction
from mss_peers.kamailio import Kamailio, KamailioError, find_binary
from mss_peers.net import free_port
from mss_peers.phone import Phone
from mss_peers.server import MssServer

__all__ = ["main"]

TONE1 = 440.0
TONE2 = 1000.0
RINGBACK = 425.0
#: How long user2 rings before it answers (so that user1 hears ringback).
USER2_RINGS_S = 2.0
#: A heard tone counts when it is the loudest frequency in this share of the frames.
AUDIO_PASS = 0.8


@dataclass
class _Line:
    at: float
    what: str


def _missing() -> str | None:
    try:
        find_binary("kamailio")
        find_binary("kamcmd")
    except KamailioError:
        return ("Kamailio is not installed. On Debian or Ubuntu: sudo apt-get install kamailio "
                "(bash tests/run.sh installs it too).")
    if importlib.util.find_spec("pjsua2") is None:
        return ("The pjsua2 phones are not installed: pip install 'pjsua2-python==2.15.1.post1' "
                "(CPython 3.10 to 3.12; bash tests/run.sh installs it into .venv).")
    return None


def main(*, duration: int = 5, transport: str = "udp", keep: bool = False) -> int:
    """Run the demo; exit status 0 when the callback and the audio check both succeed."""
    problem = _missing()
    if problem is not None:
        print(f"mss demo: {problem}", file=sys.stderr)
        return 2
    workdir = Path(tempfile.mkdtemp(prefix="mss-demo-"))
    try:
        return _run(workdir, duration, transport)
    finally:
        if keep:
            print(f"\nlogs and recordings kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


def _run(workdir: Path, duration: int, transport: str) -> int:
    sip_port = free_port()
    print("starting Kamailio (the PSS), two phones and mss on 127.0.0.1 ...")
    with Kamailio("auth", users={"100": "pw100", "101": "pw101"}, mss=("127.0.0.1", sip_port),
                  workdir=workdir / "pss") as pss:
        user1 = Phone("100", "pw100", pss.address, tone_hz=TONE1, workdir=workdir / "user1",
                      transport=transport)
        user2 = Phone("101", "pw101", pss.address, tone_hz=TONE2, behaviour=f"answer_after:{USER2_RINGS_S}",
                      workdir=workdir / "user2", transport=transport)
        server = MssServer(workdir / "mss", pss=pss.address, sip_port=sip_port, transport=transport,
                           callback={"extended_response": "yes"})
        try:
            for device in (user1, user2):
                device.start()
                device.wait_registered()
            server.start()
            server.wait_log("external line registered")
            print(f"  PSS {pss.host}:{pss.port}, mss IIF 127.0.0.1:{server.iif_port}, "
                  f"SIP 127.0.0.1:{sip_port}, phones 100 and 101 registered\n")
            return _callback(server, user1, user2, duration)
        finally:
            for device in (user1, user2):
                device.begin_stop()
            for device in (user1, user2):
                device.stop()
            server.stop()


def _callback(server: MssServer, user1: Phone, user2: Phone, duration: int) -> int:
    timeline: list[_Line] = []
    request = f"REQUEST: id=demo-1;user1=100;user2=101;duration={duration};"
    with server.client() as as1:
        start = time.time()
        as1.send(request)
        timeline.append(_Line(start, f"AS -> mss   {request}"))
        ack = as1.wait_line(r"^ACK: id=demo-1;", 10)
        timeline.append(_Line(time.time(), f"mss -> AS   {ack}"))
        if ack != "ACK: id=demo-1;code=ok;":
            _print(timeline, start)
            print(f"\nthe callback was refused; mss log:\n{server.log_tail(30)}")
            return 1
        wait = duration + 30.0
        response = as1.wait_line(r"^RESPONSE: id=demo-1;", wait)
        timeline.append(_Line(time.time(), f"mss -> AS   {response}"))
    for device, who in ((user1, "user1 (100)"), (user2, "user2 (101)")):
        device.wait_event("disconnected", timeout=10)
        timeline += _phone_lines(device, who)
    _print(timeline, start)
    if not (user1.events("confirmed") and user2.events("confirmed")):
        # The duration runs from user1's answer: one shorter than user2's ringing ends the callback
        # before user2 answers.
        print("\nthe callback did not bridge the phones, so there is no audio to check "
              f"(user2 answers after {USER2_RINGS_S:g} s of ringing; the duration runs from user1's answer)")
        return 1
    return _audio_check(user1, user2)


def _phone_lines(device: Phone, who: str) -> list[_Line]:
    said = {
        "incoming": "ringing (INVITE from {from_user})",
        "confirmed": "answered ({codec})",
        "disconnected": "released ({reason})",
    }
    lines = []
    for event in device.events():
        template = said.get(event["event"])
        if template is not None:
            fields: dict[str, Any] = {"from_user": "?", "codec": "?", "reason": "?", **event}
            lines.append(_Line(float(event["time"]), f"{who:12}{template.format(**fields)}"))
    return lines


def _print(timeline: list[_Line], start: float) -> None:
    print("timeline (seconds from the REQUEST):")
    for line in sorted(timeline, key=lambda item: item.at):
        print(f"  {line.at - start:6.2f}  {line.what}")


def _audio_check(user1: Phone, user2: Phone) -> int:
    answered1 = user1.events("confirmed")[0]["time"]
    bridged = user2.events("confirmed")[0]["time"]
    ring_s = max(0.0, bridged - answered1)
    heard1 = user1.recording_path()
    heard2 = user2.recording_path()
    checks = [
        ("user1 heard mss's ringback", tone_fraction(heard1, RINGBACK, skip_s=0.2, until_s=ring_s - 0.2),
         RINGBACK),
        ("user1 heard user2's tone", tone_fraction(heard1, TONE2, skip_s=ring_s + 0.5), TONE2),
        ("user2 heard user1's tone", tone_fraction(heard2, TONE1, skip_s=0.5), TONE1),
    ]
    print("\naudio (dominant frequency per 50 ms frame of what each phone recorded):")
    ok = True
    for what, fraction, hz in checks:
        passed = fraction >= AUDIO_PASS
        ok = ok and passed
        print(f"  {what:28} {hz:6.0f} Hz in {fraction:4.0%} of frames  {'ok' if passed else 'FAILED'}")
    print("\nthe callback worked end to end" if ok else "\nthe audio check failed")
    return 0 if ok else 1
