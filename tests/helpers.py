"""Shared test helpers: a fake clock and feeding bytes three ways (whole, byte by byte, with a tail)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

__all__ = ["FakeClock", "chunkings", "feed_three_ways"]


@dataclass
class FakeClock:
    """A clock the test moves by hand; sans-IO code takes ``now`` from it."""

    now: float = 1000.0

    def advance(self, seconds: float) -> float:
        self.now += seconds
        return self.now

    def __call__(self) -> float:
        return self.now


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
