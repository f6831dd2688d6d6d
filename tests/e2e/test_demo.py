"""`mss demo` works as a new user runs it: Kamailio, two phones, mss, one callback, audio checked."""

from __future__ import annotations

import subprocess
import sys

import pytest

pytestmark = pytest.mark.e2e


def test_mss_demo() -> None:
    done = subprocess.run([sys.executable, "-m", "mss", "demo", "--duration", "3"],
                          capture_output=True, text=True, timeout=90)
    out = done.stdout
    assert done.returncode == 0, out + done.stderr
    for expected in ("ACK: id=demo-1;code=ok;", "user1 (100) ringing (INVITE from mss)",
                     "user2 (101) answered (PCMU)", "RESPONSE: id=demo-1;real_duration=",
                     "result=answered", "the callback worked end to end"):
        assert expected in out, out
    assert out.count(" ok\n") == 3, out


def test_mss_demo_whose_callback_ends_before_user2_answers_says_so() -> None:
    # user2 answers after 2 s of ringing and the duration runs from user1's answer: with 1 s the
    # callback ends unbridged. The demo crashed then (IndexError looking for user2's answer).
    done = subprocess.run([sys.executable, "-m", "mss", "demo", "--duration", "1"],
                          capture_output=True, text=True, timeout=90)
    out = done.stdout
    assert done.returncode == 1, out + done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    assert "result=user2_no_answer" in out, out
    assert "the callback did not bridge the phones, so there is no audio to check" in out, out
