"""Admission on measured load: is the event loop keeping up?

Past its capacity a single-threaded server does not fail cleanly by itself: every REQUEST still gets
``code=ok``, the ACKs come later and later, SIP retransmissions pile on, and callbacks fail late
(timeouts, lost answers) after the AS was told they were taken. The desk instead refuses new
REQUESTs with ``code=fail`` while the loop is measurably behind, so an overload costs the AS a quick
refusal it can retry elsewhere, never a callback that was taken and then lost.

The measure is the event loop's *lag*: how late a timer armed every :data:`PROBE_INTERVAL` runs.
Work queued faster than the loop can run it shows up there first, whatever its cause (CPU, a slow
disk under the journal, another process on the core). :class:`LoadGauge` smooths the samples
(exponentially, over about :data:`SMOOTHING` seconds, so a single garbage-collection pause or a
burst does not refuse anything) and keeps a hysteresis between :data:`OVERLOAD_LAG` and
:data:`RECOVER_LAG`. It is sans-IO: the adapter (:mod:`mss.aio.loop_probe`) feeds it.
"""

from __future__ import annotations

import math

__all__ = ["MAX_SAMPLE_SPAN", "OVERLOAD_LAG", "PROBE_INTERVAL", "RECOVER_LAG", "SMOOTHING", "LoadGauge"]

#: Seconds between two lag samples: often enough to see an overload within a few hundred ms, rare
#: enough to cost nothing (40 timers a second).
PROBE_INTERVAL = 0.025

#: Time constant of the smoothing, in seconds: a stall shorter than this moves the mean only in part.
SMOOTHING = 0.25

#: Probe periods one sample counts for at most (:meth:`LoadGauge.sample`).
MAX_SAMPLE_SPAN = 2

#: Smoothed lag at which REQUESTs start being refused. A loop that stays this late is past its
#: capacity: measured with bench/load, callbacks start failing late (durations running out during
#: setup, legs piling up) while the smoothed lag sits between 40 and 80 ms, and a lone pause (a
#: garbage collection of 20 ms) moves the mean by a few ms only.
OVERLOAD_LAG = 0.040

#: Smoothed lag below which REQUESTs are taken again (well below :data:`OVERLOAD_LAG`, so the gauge
#: does not flap at the boundary).
RECOVER_LAG = 0.010


class LoadGauge:
    """Smoothed event-loop lag with an overload flag (hysteresis between two thresholds)."""

    __slots__ = ("_last", "lag", "max_lag", "overload_lag", "overloaded", "recover_lag", "samples",
                 "smoothing", "times_overloaded")

    def __init__(self, *, overload_lag: float = OVERLOAD_LAG, recover_lag: float = RECOVER_LAG,
                 smoothing: float = SMOOTHING) -> None:
        if not 0 <= recover_lag < overload_lag:
            raise ValueError("recover_lag must be below overload_lag")
        self.overload_lag = overload_lag
        self.recover_lag = recover_lag
        self.smoothing = smoothing
        self.lag = 0.0
        """Smoothed lag, in seconds."""
        self.max_lag = 0.0
        """Largest single sample seen, in seconds."""
        self.samples = 0
        """Samples taken."""
        self.overloaded = False
        """True while REQUESTs are to be refused."""
        self.times_overloaded = 0
        """How many times the gauge went from normal to overloaded."""
        self._last: float | None = None

    def sample(self, lag: float, now: float) -> None:
        """One measurement: a timer due at ``now - lag`` ran at ``now`` (monotonic seconds)."""
        lag = max(0.0, lag)
        # The weight of a sample grows with the time it covers, so the smoothing is in seconds
        # whatever the probe's period, up to two periods: a lone long stall counts like two late
        # samples, not like the whole time it lasted.
        covered = PROBE_INTERVAL + lag if self._last is None else max(0.0, now - self._last)
        elapsed = min(covered, MAX_SAMPLE_SPAN * PROBE_INTERVAL)
        self._last = now
        weight = 1.0 - math.exp(-elapsed / self.smoothing) if self.smoothing > 0 else 1.0
        self.lag += (lag - self.lag) * weight
        self.max_lag = max(self.max_lag, lag)
        self.samples += 1
        if not self.overloaded and self.lag >= self.overload_lag:
            self.overloaded = True
            self.times_overloaded += 1
        elif self.overloaded and self.lag < self.recover_lag:
            self.overloaded = False

    def refusal(self) -> str | None:
        """Why a REQUEST is refused now (the loop is overloaded), or None."""
        if not self.overloaded:
            return None
        return (f"overloaded: the event loop runs {self.lag * 1000:.0f} ms late "
                f"(refusing from {self.overload_lag * 1000:.0f} ms until below "
                f"{self.recover_lag * 1000:.0f} ms)")
