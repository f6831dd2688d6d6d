"""The journal's commit pacing on a real uvloop loop: at once when quiet, spaced when busy."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import uvloop

from mss.aio.commit_pacer import CommitPacer

SPACING = 0.05


def _run(body: Callable[[asyncio.AbstractEventLoop], Awaitable[None]]) -> None:
    async def main() -> None:
        await body(asyncio.get_running_loop())

    uvloop.run(main())


def test_a_quiet_journal_is_flushed_in_the_same_loop_iteration() -> None:
    async def body(loop: asyncio.AbstractEventLoop) -> None:
        pacer = CommitPacer(loop, SPACING)
        ran: list[float] = []
        pacer(lambda: ran.append(loop.time()))
        await asyncio.sleep(0)
        assert len(ran) == 1

    _run(body)


def test_a_busy_journal_waits_for_the_spacing_and_one_flush_takes_every_ask() -> None:
    async def body(loop: asyncio.AbstractEventLoop) -> None:
        pacer = CommitPacer(loop, SPACING)
        ran: list[float] = []

        def flush() -> None:
            ran.append(loop.time())

        pacer(flush)
        await asyncio.sleep(0)
        pacer(flush)  # right after a flush: waits
        pacer(flush)  # joins the flush that waits
        await asyncio.sleep(0)
        assert len(ran) == 1
        await asyncio.sleep(SPACING * 2)
        assert len(ran) == 2
        # libuv's timers count whole milliseconds
        assert ran[1] - ran[0] >= SPACING - 0.002

    _run(body)


def test_after_a_quiet_spell_a_flush_runs_at_once_again() -> None:
    async def body(loop: asyncio.AbstractEventLoop) -> None:
        pacer = CommitPacer(loop, SPACING)
        ran: list[float] = []
        pacer(lambda: ran.append(loop.time()))
        await asyncio.sleep(SPACING * 1.5)
        pacer(lambda: ran.append(loop.time()))
        await asyncio.sleep(0)
        assert len(ran) == 2

    _run(body)


def test_cancel_drops_the_flush_that_waits_and_the_next_ask_schedules_again() -> None:
    async def body(loop: asyncio.AbstractEventLoop) -> None:
        pacer = CommitPacer(loop, SPACING)
        ran: list[str] = []
        pacer(lambda: ran.append("first"))
        await asyncio.sleep(0)
        pacer(lambda: ran.append("dropped"))
        pacer.cancel()
        await asyncio.sleep(SPACING * 2)
        assert ran == ["first"]
        pacer(lambda: ran.append("again"))
        await asyncio.sleep(0)
        assert ran == ["first", "again"]

    _run(body)
