"""When the callback desk's journal group is committed: at once when the journal is quiet, at most
every :data:`COMMIT_SPACING` seconds when it is busy.

The desk asks for one flush per group (``schedule``); every write made before the flush runs joins
that group, and the ACKs of its REQUESTs are written once it is committed. Committing once per
event-loop iteration costs a BEGIN/COMMIT (and a write of the changed pages) for nearly every
REQUEST and every RESPONSE at a few hundred callbacks a second, each alone in its iteration. Spacing
the commits of a busy journal lets the writes of a few milliseconds share one: a first write after a
quiet spell is still committed in the same loop iteration, so an ACK waits longer only when REQUESTs
come faster than one per spacing, and then by less than the spacing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

#: Seconds between two commits of a busy journal at least: at 500 callbacks/s (a REQUEST and a
#: RESPONSE group each every 2 ms) about four groups share one commit, for at most 4 ms more on an
#: ACK (the capacity target's ACK p99 is 20 ms).
COMMIT_SPACING = 0.004


class CommitPacer:
    """The desk's ``schedule``: runs a flush in this loop iteration, or when the spacing has passed.

    :meth:`cancel` drops a flush still waiting (a stop flushes the desk itself).
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, spacing: float = COMMIT_SPACING) -> None:
        self._loop = loop
        self._spacing = spacing
        self._last = float("-inf")  # loop time of the last flush run
        self._waiting: asyncio.TimerHandle | asyncio.Handle | None = None

    def __call__(self, flush: Callable[[], None]) -> None:
        if self._waiting is not None:
            return  # the flush that waits takes this group too
        due = self._last + self._spacing
        now = self._loop.time()
        if now >= due:
            self._waiting = self._loop.call_soon(self._run, flush)
        else:
            self._waiting = self._loop.call_at(due, self._run, flush)

    def _run(self, flush: Callable[[], None]) -> None:
        self._waiting = None
        self._last = self._loop.time()
        flush()

    def cancel(self) -> None:
        """Drop the flush that waits, if any (its writes are committed by whoever flushes next)."""
        if self._waiting is not None:
            self._waiting.cancel()
            self._waiting = None
