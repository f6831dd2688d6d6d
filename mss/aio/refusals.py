"""Logging refused strangers without letting a scan flood the log."""

from __future__ import annotations

import logging
import time
from collections.abc import Hashable

__all__ = ["RefusalLog"]

#: Seconds between two log lines about the same refused address.
REFUSAL_LOG_INTERVAL = 10.0

#: Addresses remembered at most: bounds the memory a scan of many sources can take.
MAX_REMEMBERED = 10_000


class RefusalLog:
    """The first refusal of a key is logged at once; later ones at most once per interval, with how
    many were not logged in between."""

    def __init__(self, logger: logging.Logger, interval: float = REFUSAL_LOG_INTERVAL) -> None:
        self._log = logger
        self._interval = interval
        self._seen: dict[Hashable, list[float]] = {}  # key -> [time of the last line, refusals since]

    def refused(self, key: Hashable, message: str, *args: object) -> None:
        """Note one refusal of ``key``; log ``message % args`` unless one was logged lately."""
        now = time.monotonic()
        entry = self._seen.get(key)
        if entry is not None and now - entry[0] < self._interval:
            entry[1] += 1
            return
        if len(self._seen) >= MAX_REMEMBERED:
            self._seen.clear()
        self._seen[key] = [now, 0]
        if entry is not None and entry[1]:
            message += f" ({int(entry[1])} more since the last report)"
        self._log.warning(message, *args)
