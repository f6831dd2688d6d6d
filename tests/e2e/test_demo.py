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
