"""RateLimitedLog: one line per key per interval, with the count of the lines left out."""

from __future__ import annotations

import logging

import pytest

from mss.ratelog import MAX_KEYS, RateLimitedLog


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_first_line_at_once_then_one_per_interval_with_count(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    rl = RateLimitedLog(logging.getLogger("t.ratelog"), 10.0, clock=clock)
    with caplog.at_level(logging.INFO, logger="t.ratelog"):
        assert rl.warning("k", "bad line from %s", "as1")
        for _ in range(99_999):
            clock.now += 0.0001
            rl.warning("k", "bad line from %s", "as1")
        clock.now = 10.5
        assert rl.warning("k", "bad line from %s", "as1")
    lines = [r.getMessage() for r in caplog.records]
    assert lines == ["bad line from as1", "bad line from as1 (99999 more since the last report)"]
    assert rl.suppressed == 99_999


def test_keys_are_independent_and_levels_kept(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    rl = RateLimitedLog(logging.getLogger("t.ratelog2"), 10.0, clock=clock)
    with caplog.at_level(logging.INFO, logger="t.ratelog2"):
        rl.info("a", "one")
        rl.error("b", "two")
        rl.info("a", "one")
    assert [(r.levelno, r.getMessage()) for r in caplog.records] == [
        (logging.INFO, "one"),
        (logging.ERROR, "two"),
    ]


def test_memory_bounded_by_max_keys() -> None:
    rl = RateLimitedLog(logging.getLogger("t.ratelog3"), 10.0, clock=Clock())
    for key in range(3 * MAX_KEYS):
        rl.info(key, "x")
    assert len(rl._seen) <= MAX_KEYS
