"""Per-message log lines that a flood cannot turn into a flood of log lines.

Anything logged once per received message (a refused stranger, a malformed IIF line, a SIP message
dropped) goes through a :class:`RateLimitedLog`: the first line for a key is written at once, later
ones at most once per interval, each carrying how many were left out since the previous one.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Hashable

__all__ = ["LOG_INTERVAL", "MAX_KEYS", "RateLimitedLog"]

#: Seconds between two log lines for the same key.
LOG_INTERVAL = 10.0

#: Keys remembered at most: bounds the memory a scan from many sources can take.
MAX_KEYS = 10_000


class RateLimitedLog:
    """Log a key's first message at once and later ones at most once per ``interval``, with the
    count of those left out in between."""

    def __init__(
        self,
        logger: logging.Logger,
        interval: float = LOG_INTERVAL,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._log = logger
        self._interval = interval
        self._clock = clock
        self._seen: dict[Hashable, list[float]] = {}  # key -> [time of the last line, left out since]
        self.suppressed = 0
        """Messages left out so far (all keys)."""

    def log(self, level: int, key: Hashable, message: str, *args: object) -> bool:
        """Note one event for ``key``; log ``message % args`` at ``level`` unless a line for ``key``
        was written less than an interval ago. Returns True when the line was written."""
        now = self._clock()
        entry = self._seen.get(key)
        if entry is not None and now - entry[0] < self._interval:
            entry[1] += 1
            self.suppressed += 1
            return False
        if len(self._seen) >= MAX_KEYS:
            self._seen.clear()
        self._seen[key] = [now, 0]
        if entry is not None and entry[1]:
            message += f" ({int(entry[1])} more since the last report)"
        self._log.log(level, message, *args)
        return True

    def warning(self, key: Hashable, message: str, *args: object) -> bool:
        """:meth:`log` at WARNING."""
        return self.log(logging.WARNING, key, message, *args)

    def info(self, key: Hashable, message: str, *args: object) -> bool:
        """:meth:`log` at INFO."""
        return self.log(logging.INFO, key, message, *args)

    def error(self, key: Hashable, message: str, *args: object) -> bool:
        """:meth:`log` at ERROR."""
        return self.log(logging.ERROR, key, message, *args)
