"""A queue of named deadlines for many owners (transactions, legs), soonest first.

Setting a timer again replaces it; stale heap entries are skipped lazily, so setting and clearing
are O(log n) and :meth:`TimerQueue.next_deadline` is O(1) amortised.

A stale heap entry holds no reference to its owner: entries point at the owner's :class:`_Slot`,
which lets go of the owner as soon as its last timer is cleared. A finished transaction or leg is
then freed at once, not when the deadline of a timer it had armed (a session refresh, 15 minutes
away) comes round. The heap is rebuilt when stale entries outnumber the armed ones
(:data:`COMPACT_RATIO`), so it stays proportional to what is armed.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Hashable

__all__ = ["COMPACT_RATIO", "TimerQueue"]

#: The heap is rebuilt when it holds more than this many entries per armed timer (and more than
#: :data:`_COMPACT_MIN`): re-arming a timer leaves its old entry behind, and without a bound a busy
#: queue's heap would grow with every re-arm until the old deadlines pass.
COMPACT_RATIO = 4

#: Heaps this small are never rebuilt: the work would cost more than the entries.
_COMPACT_MIN = 256


class _Slot:
    """One owner's armed timers; ``owner`` is None once none is left (its heap entries are stale)."""

    __slots__ = ("names", "owner")

    def __init__(self, owner: Hashable) -> None:
        self.owner: Hashable | None = owner
        self.names: dict[str, float] = {}


class TimerQueue:
    """Deadlines keyed by ``(owner, name)``; an owner is any hashable (compared by identity or value)."""

    __slots__ = ("_armed", "_heap", "_live", "_seq")

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, _Slot, str]] = []
        self._live: dict[Hashable, _Slot] = {}
        self._seq = itertools.count()
        self._armed = 0

    def __len__(self) -> int:
        return self._armed

    def set(self, owner: Hashable, name: str, deadline: float) -> None:
        """Arm (or re-arm) timer ``name`` of ``owner`` for ``deadline``."""
        slot = self._live.get(owner)
        if slot is None:
            slot = self._live[owner] = _Slot(owner)
        if name not in slot.names:
            self._armed += 1
        slot.names[name] = deadline
        heap = self._heap
        heapq.heappush(heap, (deadline, next(self._seq), slot, name))
        if len(heap) > _COMPACT_MIN and len(heap) > COMPACT_RATIO * self._armed:
            self._compact()

    def _compact(self) -> None:
        """Drop the stale entries from the heap."""
        self._heap = [entry for entry in self._heap if self._is_live(entry[0], entry[2], entry[3])]
        heapq.heapify(self._heap)

    def clear(self, owner: Hashable, *names: str) -> None:
        """Disarm timers ``names`` of ``owner`` (no error for one that is not armed)."""
        slot = self._live.get(owner)
        if slot is None:
            return
        armed = slot.names
        for name in names:
            if armed.pop(name, None) is not None:
                self._armed -= 1
        if not armed:
            del self._live[owner]
            slot.owner = None

    def clear_owner(self, owner: Hashable) -> None:
        """Disarm every timer of ``owner``."""
        slot = self._live.pop(owner, None)
        if slot is not None:
            self._armed -= len(slot.names)
            slot.names.clear()
            slot.owner = None

    def deadline(self, owner: Hashable, name: str) -> float | None:
        """When timer ``name`` of ``owner`` fires, None when it is not armed."""
        slot = self._live.get(owner)
        return None if slot is None else slot.names.get(name)

    @staticmethod
    def _is_live(deadline: float, slot: _Slot, name: str) -> bool:
        return slot.owner is not None and slot.names.get(name) == deadline

    def next_deadline(self) -> float | None:
        """The soonest armed deadline, None when nothing is armed."""
        heap = self._heap
        while heap:
            deadline, _seq, slot, name = heap[0]
            if slot.owner is not None and slot.names.get(name) == deadline:  # _is_live, inlined
                return deadline
            heapq.heappop(heap)
        return None

    def pop_due(self, now: float) -> list[tuple[Hashable, str]]:
        """Disarm and return the timers due at ``now``, soonest first."""
        heap = self._heap
        due: list[tuple[Hashable, str]] = []
        while heap and heap[0][0] <= now:
            deadline, _seq, slot, name = heapq.heappop(heap)
            owner = slot.owner
            if owner is not None and slot.names.get(name) == deadline:
                self.clear(owner, name)
                due.append((owner, name))
        return due
