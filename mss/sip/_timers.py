"""A queue of named deadlines for many owners (transactions, legs), soonest first.

Setting a timer again replaces it; stale heap entries are skipped lazily, so setting and clearing
are O(log n) and :meth:`TimerQueue.next_deadline` is O(1) amortised.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Hashable

__all__ = ["TimerQueue"]


class TimerQueue:
    """Deadlines keyed by ``(owner, name)``; an owner is any hashable (compared by identity or value)."""

    __slots__ = ("_heap", "_live", "_seq")

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Hashable, str]] = []
        self._live: dict[Hashable, dict[str, float]] = {}
        self._seq = itertools.count()

    def __len__(self) -> int:
        return sum(len(names) for names in self._live.values())

    def set(self, owner: Hashable, name: str, deadline: float) -> None:
        """Arm (or re-arm) timer ``name`` of ``owner`` for ``deadline``."""
        self._live.setdefault(owner, {})[name] = deadline
        heapq.heappush(self._heap, (deadline, next(self._seq), owner, name))

    def clear(self, owner: Hashable, name: str) -> None:
        """Disarm timer ``name`` of ``owner`` (no error when it is not armed)."""
        names = self._live.get(owner)
        if names is not None:
            names.pop(name, None)
            if not names:
                del self._live[owner]

    def clear_owner(self, owner: Hashable) -> None:
        """Disarm every timer of ``owner``."""
        self._live.pop(owner, None)

    def deadline(self, owner: Hashable, name: str) -> float | None:
        """When timer ``name`` of ``owner`` fires, None when it is not armed."""
        names = self._live.get(owner)
        return None if names is None else names.get(name)

    def _is_live(self, deadline: float, owner: Hashable, name: str) -> bool:
        names = self._live.get(owner)
        return names is not None and names.get(name) == deadline

    def next_deadline(self) -> float | None:
        """The soonest armed deadline, None when nothing is armed."""
        heap = self._heap
        while heap:
            deadline, _seq, owner, name = heap[0]
            if self._is_live(deadline, owner, name):
                return deadline
            heapq.heappop(heap)
        return None

    def pop_due(self, now: float) -> list[tuple[Hashable, str]]:
        """Disarm and return the timers due at ``now``, soonest first."""
        heap = self._heap
        due: list[tuple[Hashable, str]] = []
        while heap and heap[0][0] <= now:
            deadline, _seq, owner, name = heapq.heappop(heap)
            if self._is_live(deadline, owner, name):
                self.clear(owner, name)
                due.append((owner, name))
        return due
