"""Shared test helpers: a fake clock and feeding bytes three ways (whole, byte by byte, with a tail)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Protocol

__all__ = ["FakeClock", "Timed", "chunkings", "feed_three_ways", "run_timers"]


@dataclass
class FakeClock:
    """A clock the test moves by hand; sans-IO code takes ``now`` from it."""

    now: float = 1000.0

    def advance(self, seconds: float) -> float:
        self.now += seconds
        return self.now

    def __call__(self) -> float:
        return self.now


class Timed(Protocol):
    """A sans-IO machine with timers: when the next one is due, and run what is due."""

    def get_timer(self) -> float | None: ...

    def handle_timer(self, now: float) -> object: ...


def run_timers(machine: Timed, clock: FakeClock, seconds: float) -> None:
    """Move ``clock`` on by ``seconds``, running each of ``machine``'s timers at its deadline (a timer
    that stays due, e.g. a lookup waiting for its answer, is run a bounded number of times)."""
    end = clock.now + seconds
    for _ in range(10_000):
        t = machine.get_timer()
        if t is None or t > end:
            break
        clock.now = max(clock.now, t)
        machine.handle_timer(clock.now)
    clock.now = end


def chunkings(data: bytes) -> Iterator[tuple[str, list[bytes]]]:
    """The ways a stream may arrive: whole, one byte at a time, and split in two at every third byte."""
    yield "whole", [data]
    yield "bytewise", [data[i : i + 1] for i in range(len(data))]
    for cut in range(1, len(data), 3):
        yield f"split@{cut}", [data[:cut], data[cut:]]


def feed_three_ways(
    make: Callable[[], object],
    feed: Callable[[object, bytes], list[object]],
    data: bytes,
    trailing: bytes = b"",
) -> list[object]:
    """Feed ``data`` to a fresh parser whole, byte by byte, and followed by ``trailing`` bytes.

    ``make`` builds a parser, ``feed(parser, chunk)`` returns the events that chunk completed. Every way
    must yield the same events for ``data``; the trailing bytes must not change them (they belong to
    the next message). Returns the events.
    """
    results = []
    for _name, chunks in chunkings(data):
        parser = make()
        events: list[object] = []
        for chunk in chunks:
            events.extend(feed(parser, chunk))
        results.append(events)
    with_tail_parser = make()
    with_tail = feed(with_tail_parser, data + trailing)
    first = results[0]
    for other in results[1:]:
        assert other == first, f"chunked feeding differs: {other!r} != {first!r}"
    assert with_tail[: len(first)] == first, f"trailing bytes changed the events: {with_tail!r}"
    return first
