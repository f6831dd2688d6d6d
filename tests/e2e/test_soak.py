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

from bench.load.driver import Callback, parse_line, summarize
from bench.load.run import LoadSpec, run_load
from mss_peers.net import free_port

# 40 s at 40/s: past the point (~25 s) where lingering state would fill the default tables.
RATE = 40.0
SECONDS = 40.0


def _report(result: dict[str, Any]) -> str:
    names = ("summary", "failure_log", "mss_warnings", "mss_log_tail", "mss_cpu_ms_per_callback",
             "far_cpu_ms_per_callback", "unexpected_examples", "connection_errors")
    keep = {k: result.get(k) for k in names}
    return json.dumps(keep, indent=1, default=str)


@pytest.mark.e2e
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
        probe=False,  # mss exactly as `mss run` starts it
    )
    result = run_load(spec, tmp_path)
    summary = result["summary"]
    assert summary["requests"] >= RATE * SECONDS * 0.95, _report(result)
    assert summary["own_limit_failures"] == 0, _report(result)
    assert summary["problems"] == {}, _report(result)
    assert summary["answered"] == summary["requests"], _report(result)
    assert result["unexpected_lines"] == 0, _report(result)
    assert result["mss_alive_at_end"] and result["mss_exit"] == 0, _report(result)



@pytest.mark.e2e
@pytest.mark.timeout(90)
def test_sequential_callbacks_at_a_small_max_calls(tmp_path: Path) -> None:
    # max_calls = 2 and one callback at a time: a finished call's lingering dialogs and
    # transactions must not use up the room of the next one (the third used to get 503).
    base = 40000 + (free_port() % 20) * 1000
    spec = LoadSpec(
        seconds=12.0,
        sequential=True,
        sequential_duration=1,
        overrides={"callback": {"max_calls": 2}},
        rtp_range=(base, base + 99),
        probe=False,
    )
    result = run_load(spec, tmp_path)
    summary = result["summary"]
    assert summary["requests"] >= 8, _report(result)
    assert summary["own_limit_failures"] == 0, _report(result)
    assert summary["problems"] == {}, _report(result)
    assert summary["answered"] == summary["requests"], _report(result)

# ---- the checks the soak relies on: each catches what it is meant to (no processes) ----


def _cb(cb_id: str, **fields: Any) -> Callback:
    cb = Callback(id=cb_id, kind="paced", duration=2, scheduled=0.0, sent=0.0)
    for name, value in fields.items():
        setattr(cb, name, value)
    return cb


def _answered(cb_id: str, **fields: Any) -> Callback:
    values: dict[str, Any] = {
        "ack_at": 0.001, "ack_code": "ok", "acks": 1, "response_at": 2.01, "responses": 1,
        "real_duration": 2, "result": "answered", "code": 0,
    }
    values.update(fields)
    return _cb(cb_id, **values)


def test_parse_line_reads_ack_and_extended_response() -> None:
    assert parse_line("ACK: id=7;code=ok;") == ("ACK", {"id": "7", "code": "ok"})
    assert parse_line("RESPONSE: id=7;real_duration=2;result=answered;code=0") == (
        "RESPONSE", {"id": "7", "real_duration": "2", "result": "answered", "code": "0"})
    with pytest.raises(ValueError, match="not an IIF line"):
        parse_line("garbage")


def test_summary_of_a_clean_run_has_no_problem() -> None:
    summary = summarize([_answered("1"), _answered("2")])
    assert summary["answered"] == 2
    assert summary["own_limit_failures"] == 0
    assert summary["problems"] == {}
    assert summary["peak_concurrent"] == 2
    assert summary["ack_latency_ms"]["p99"] == pytest.approx(1.0)
    assert summary["response_lateness_ms"]["p50"] == pytest.approx(9.0)


def test_summary_counts_own_limit_failures_apart_from_other_failures() -> None:
    summary = summarize([
        _answered("1", result="user1_failed", code=503, real_duration=0),
        _answered("2", result="user2_busy", code=486, real_duration=0),
        _cb("3", ack_at=0.001, ack_code="fail", acks=1),
        _answered("4"),
    ])
    assert summary["own_limit_failures"] == 2  # the 503 of mss and the ACK code=fail
    assert summary["outcomes"] == {"user1_failed code=503": 1, "user2_busy code=486": 1, "ACK code=fail": 1,
                                   "answered code=0": 1}
    assert summary["problems"] == {}


def test_summary_flags_every_broken_promise() -> None:
    summary = summarize([
        _cb("no-ack"),
        _answered("twice", responses=2),
        _answered("never", responses=0, response_at=None, result=None),
        _answered("zero", real_duration=0),
        _answered("a-second-short", real_duration=1),
        _cb("fail-then-response", ack_at=0.001, ack_code="fail", acks=1, responses=1),
        _answered("two-acks", acks=2),
    ])
    assert summary["problems"] == {
        "no ACK": 1,
        "more than one RESPONSE": 1,
        "no RESPONSE": 1,
        "real_duration off by more than 1 s": 1,
        "RESPONSE after ACK code=fail": 1,
        "more than one ACK": 1,
    }
    assert summary["real_duration_off"] == {"0 for 2": 1, "1 for 2": 1}
    assert summary["real_duration_inexact"] == 2
