"""The event loop's lag, measured on the loop itself and fed to a :class:`~mss.load.LoadGauge`.

A timer is armed every :data:`~mss.load.PROBE_INTERVAL`; how late it runs is the lag. Each sample also
goes to the observers (the ``mss_loop_lag_seconds`` histogram), so one probe serves admission and
metrics.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from mss.load import PROBE_INTERVAL, LoadGauge

__all__ = ["LoopProbe"]


class LoopProbe:
    """Samples the running loop's lag into ``gauge`` until :meth:`stop`."""

    def __init__(self, gauge: LoadGauge, *, interval: float = PROBE_INTERVAL) -> None:
        self.gauge = gauge
        self.interval = interval
        self.observers: list[Callable[[float], None]] = []
        """Called with each lag sample, in seconds."""
        self._handle: asyncio.TimerHandle | None = None
        self._due = 0.0

    def start(self) -> None:
        """Start sampling (on the running loop)."""
        if self._handle is None:
            self._arm(asyncio.get_running_loop())

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _arm(self, loop: asyncio.AbstractEventLoop) -> None:
        self._due = loop.time() + self.interval
        self._handle = loop.call_at(self._due, self._fire, loop)

    def _fire(self, loop: asyncio.AbstractEventLoop) -> None:
        now = loop.time()
        lag = max(0.0, now - self._due)
        self.gauge.sample(lag, now)
        for observe in self.observers:
            observe(lag)
        self._arm(loop)
