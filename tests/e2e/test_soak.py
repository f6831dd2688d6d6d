"""Steady traffic at the default config: no callback fails because of mss's own limits.

A short run of the load benchmark's soak (the same code, ``bench/load``): an AS paces callbacks
over 4 TCP connections and runs one sequential stream beside them (each REQUEST after the previous
RESPONSE), mss runs as ``mss run`` with the default config (server-to-server towards the far end,
extended responses on), and Kamailio answers every INVITE statelessly with 180 + 200.

At 40 callbacks/s a finished call's dialogs and transactions, if they counted against mss's
admission limits while they linger (64·T1 = 32 s), would fill the default ``max_calls = 1000``
tables (2 dialogs per callback: 2,000 dialogs after ~25 s) and later callbacks would end as
``user1_failed code=503`` although mss has room. Every callback must be answered instead, each
with exactly one RESPONSE whose ``real_duration`` is the duration asked for.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from bench.load.run import LoadSpec, run_load
from mss.peers.net import free_port

pytestmark = pytest.mark.e2e

# 40 s at 40/s: past the point (~25 s) where lingering state would fill the default tables.
RATE = 40.0
SECONDS = 40.0


def _report(result: dict[str, Any]) -> str:
    names = ("summary", "failure_log", "mss_warnings", "mss_log_tail", "mss_cpu_ms_per_callback",
             "far_cpu_ms_per_callback", "unexpected_examples", "connection_errors")
    keep = {k: result.get(k) for k in names}
    return json.dumps(keep, indent=1, default=str)


@pytest.mark.timeout(150)
def test_steady_traffic_has_no_own_limit_failures(tmp_path: Path) -> None:
    # A slice of 1,000 RTP ports of its own (250 callbacks at once; ~50 are up at this rate).
    base = 40000 + (free_port() % 20) * 1000
    spec = LoadSpec(
        seconds=SECONDS,
        rate=RATE,
        durations=(1,),
        sequential=True,
        sequential_duration=1,
        rtp_range=(base, base + 999),
    )
    result = run_load(spec, tmp_path)
    summary = result["summary"]
    assert summary["requests"] >= RATE * SECONDS * 0.95, _report(result)
    assert summary["own_limit_failures"] == 0, _report(result)
    assert summary["problems"] == {}, _report(result)
    assert summary["answered"] == summary["requests"], _report(result)
    assert result["unexpected_lines"] == 0, _report(result)
    assert result["mss_alive_at_end"] and result["mss_exit"] == 0, _report(result)
