"""Admission on measured load: the gauge's smoothing, thresholds and hysteresis (sans-IO)."""

from __future__ import annotations

import math
import re

import pytest

from mss.load import OVERLOAD_LAG, PROBE_INTERVAL, RECOVER_LAG, SMOOTHING, LoadGauge


def feed(gauge: LoadGauge, lag: float, seconds: float, start: float) -> float:
    """Samples of ``lag`` as a probe would take them for ``seconds``; returns the time reached."""
    now = start
    while now < start + seconds:
        now += PROBE_INTERVAL + lag
        gauge.sample(lag, now)
    return now


def test_an_idle_loop_is_not_overloaded() -> None:
    gauge = LoadGauge()
    feed(gauge, 0.001, 10.0, 0.0)
    assert not gauge.overloaded
    assert gauge.refusal() is None
    assert gauge.lag == pytest.approx(0.001)


def test_one_long_stall_refuses_nothing() -> None:
    # A 150 ms pause (a full garbage collection, a slow fsync) between normal samples.
    gauge = LoadGauge()
    now = feed(gauge, 0.001, 1.0, 0.0)
    gauge.sample(0.150, now + 0.175)
    assert not gauge.overloaded
    assert gauge.max_lag == 0.150
    feed(gauge, 0.001, 1.0, now + 0.175)
    assert not gauge.overloaded


def test_a_loop_that_stays_late_is_overloaded_then_recovers_below_the_lower_threshold() -> None:
    gauge = LoadGauge()
    now = feed(gauge, 0.120, 1.0, 0.0)
    assert gauge.overloaded and gauge.times_overloaded == 1
    reason = gauge.refusal()
    assert reason is not None and re.match(r"overloaded: the event loop runs \d+ ms late", reason)
    assert f"refusing from {OVERLOAD_LAG * 1000:.0f} ms until below {RECOVER_LAG * 1000:.0f} ms" in reason
    # Between the thresholds: still refusing (no flapping at the boundary).
    now = feed(gauge, (OVERLOAD_LAG + RECOVER_LAG) / 2, 3.0, now)
    assert gauge.overloaded
    feed(gauge, 0.002, 2.0, now)
    assert not gauge.overloaded and gauge.times_overloaded == 1


def test_a_sample_counts_for_the_time_it_covers_up_to_two_probe_periods() -> None:
    fast, slower, stalled = LoadGauge(), LoadGauge(), LoadGauge()
    t = 0.0
    for _ in range(40):  # 1 s of samples every probe period
        t += PROBE_INTERVAL
        fast.sample(0.03, t)
    t = 0.0
    for _ in range(20):  # the same second in samples covering two periods each
        t += 2 * PROBE_INTERVAL
        slower.sample(0.03, t)
    assert fast.lag == pytest.approx(slower.lag, rel=0.02)
    t = 0.0
    for _ in range(4):  # samples covering ten periods each count as two
        t += 10 * PROBE_INTERVAL
        stalled.sample(0.03, t)
    # four samples of weight 1 - exp(-2 periods / SMOOTHING) each, from 0
    assert stalled.lag == pytest.approx(0.03 * (1 - math.exp(-8 * PROBE_INTERVAL / SMOOTHING)))


def test_thresholds_must_be_ordered() -> None:
    with pytest.raises(ValueError, match="recover_lag must be below overload_lag"):
        LoadGauge(overload_lag=0.02, recover_lag=0.05)
