"""The AS side of the load benchmark: an asyncio IIF driver that orders callbacks on a schedule.

Two kinds of traffic, which may run together on one ``Driver``:

* **paced** (open loop): REQUEST ``i`` is written at ``t0 + i / rate`` whatever has been answered,
  round-robin over ``connections`` TCP connections; a driver that falls behind sends at once and
  records how late it was (``send_lag``), so the schedule is never silently stretched.
* **sequential**: one more connection; each REQUEST waits for the previous callback's RESPONSE
  (or its ``ACK code=fail``), the pattern that finds state left behind by finished calls.

Every line mss writes is matched to its callback by id. Per callback the driver records when the
REQUEST went out, the ACK (time, code, how many), and the RESPONSE (time, ``real_duration``,
``result`` and ``code`` of an extended RESPONSE, how many). :func:`summarize` turns the records into
the figures of a run: ACK latency, RESPONSE lateness = arrival − (ACK + duration), every check of
the IIF promise (an ACK per REQUEST, exactly one RESPONSE per ``ACK code=ok``, ``real_duration``
within a second of ``duration`` for an answered call, and how often it is not exactly equal), and
the results tallied, with the failures that mss's own limits caused (``ACK code=fail``,
``user1_failed``/``user2_failed`` with code 503) apart.

Bounded: a fixed count of REQUESTs per kind and an absolute deadline for everything.
"""

from __future__ import annotations

import asyncio
import collections
import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Callback", "Driver", "parse_line", "peak_concurrency", "percentile", "summarize"]

# A line mss writes is at most 1024 bytes (SPEC.md); the reader refuses longer ones.
MAX_LINE = 4096
# Unsent bytes a connection may hold before the sender waits for the socket to drain.
WRITE_HIGH_WATER = 256 * 1024
# Results of an extended RESPONSE that mean mss itself refused the leg when the code is 503.
OWN_LIMIT_RESULTS = frozenset({"user1_failed", "user2_failed"})
OWN_LIMIT_CODE = 503
# real_duration of an answered callback may differ from its duration by this much (seconds) before
# it counts as a broken promise: the duration timer runs from user1's answer and the talk time from
# user2's, and a loop stall delays the release; an inexact value is still counted and reported.
REAL_DURATION_SLACK = 1
# The users of every callback: the far end answers any.
USER1 = "5551001"
USER2 = "5551002"


@dataclass(slots=True)
class Callback:
    """What happened to one REQUEST, as the AS saw it (times from ``time.monotonic``)."""

    id: str
    """The callback id."""
    kind: str
    """``paced`` or ``sequential``."""
    duration: int
    """The ``duration`` asked for, seconds."""
    scheduled: float
    """When the schedule wanted the REQUEST sent."""
    sent: float | None = None
    """When it was written."""
    ack_at: float | None = None
    """When the (first) ACK arrived."""
    ack_code: str | None = None
    """``ok`` or ``fail``."""
    acks: int = 0
    """ACKs received for this id (1 is right)."""
    response_at: float | None = None
    """When the (first) RESPONSE arrived."""
    responses: int = 0
    """RESPONSEs received for this id (1 after ``code=ok``, 0 after ``code=fail``)."""
    real_duration: int | None = None
    """``real_duration`` of the first RESPONSE."""
    result: str | None = None
    """``result`` of the first RESPONSE (extended responses)."""
    code: int | None = None
    """``code`` of the first RESPONSE (extended responses)."""
    waiter: asyncio.Future[None] | None = field(default=None, repr=False)
    """Resolved when the callback is over (sequential traffic waits on it)."""

    @property
    def finished(self) -> bool:
        """Over as far as the AS knows: refused, or its RESPONSE is in."""
        return self.ack_code == "fail" or self.responses > 0


def parse_line(line: str) -> tuple[str, dict[str, str]]:
    """``"ACK: id=1;code=ok;"`` → ``("ACK", {"id": "1", "code": "ok"})``; ValueError if not IIF."""
    method, sep, rest = line.partition(":")
    if not sep or not method.isupper():
        raise ValueError(f"not an IIF line: {line!r}")
    params: dict[str, str] = {}
    for item in rest.strip().split(";"):
        if not item:
            continue
        name, eq, value = item.partition("=")
        if not eq:
            raise ValueError(f"parameter {item!r} has no '=' in {line!r}")
        params[name.strip()] = value.strip()
    return method, params


class Driver:
    """An AS with several TCP connections to mss's IIF port; see the module docstring."""

    def __init__(self, address: tuple[str, int], *, connections: int = 4, tag: str = "") -> None:
        if not 1 <= connections <= 64:
            raise ValueError(f"connections must be 1..64, not {connections}")
        self.address = address
        self.connections = connections
        self.tag = tag
        self.callbacks: dict[str, Callback] = {}
        self.unexpected: list[str] = []
        """Lines that matched no callback, or were not IIF at all (kept up to a bound)."""
        self.unexpected_count = 0
        self.connection_errors: list[str] = []
        self._writers: list[asyncio.StreamWriter] = []
        self._readers: list[asyncio.Task[None]] = []
        self._open = 0
        self._interval_acks = 0
        self._interval_ack_max = 0.0
        self._idle = asyncio.Event()
        self._idle.set()

    # ---- connections ----

    async def open(self) -> None:
        """Open the paced connections and one for sequential traffic."""
        for _ in range(self.connections + 1):
            reader, writer = await asyncio.open_connection(*self.address, limit=MAX_LINE)
            self._writers.append(writer)
            self._readers.append(asyncio.create_task(self._read(reader)))

    async def close(self) -> None:
        """Close every connection (RESPONSEs still owed stay with mss)."""
        for writer in self._writers:
            writer.close()
        for task in self._readers:
            task.cancel()
        await asyncio.gather(*self._readers, return_exceptions=True)
        for writer in self._writers:
            try:
                await writer.wait_closed()
            except (ConnectionError, OSError):
                continue
        self._writers.clear()
        self._readers.clear()

    async def _read(self, reader: asyncio.StreamReader) -> None:
        while True:
            try:
                raw = await reader.readline()
            except (ConnectionError, asyncio.LimitOverrunError, ValueError) as exc:
                self.connection_errors.append(f"read: {type(exc).__name__}: {exc}")
                return
            if not raw:
                return
            self._on_line(raw.decode("ascii", "replace").strip(), time.monotonic())

    def _unexpected(self, line: str) -> None:
        self.unexpected_count += 1
        if len(self.unexpected) < 20:
            self.unexpected.append(line)

    def _on_line(self, line: str, now: float) -> None:
        if not line:
            return
        try:
            method, params = parse_line(line)
        except ValueError:
            self._unexpected(line)
            return
        cb = self.callbacks.get(params.get("id", ""))
        if cb is None or method not in ("ACK", "RESPONSE"):
            self._unexpected(line)
            return
        was_finished = cb.finished
        if method == "ACK":
            cb.acks += 1
            if cb.acks == 1:
                cb.ack_at = now
                cb.ack_code = params.get("code")
                if cb.sent is not None:
                    self._interval_acks += 1
                    self._interval_ack_max = max(self._interval_ack_max, now - cb.sent)
        else:
            cb.responses += 1
            if cb.responses == 1:
                cb.response_at = now
                cb.real_duration = _int(params.get("real_duration"))
                cb.result = params.get("result")
                cb.code = _int(params.get("code"))
        if cb.finished and not was_finished:
            self._open -= 1
            if self._open == 0:
                self._idle.set()
            if cb.waiter is not None and not cb.waiter.done():
                cb.waiter.set_result(None)

    async def _send(self, cb: Callback, conn: int) -> None:
        writer = self._writers[conn]
        line = f"REQUEST: id={cb.id};user1={USER1};user2={USER2};duration={cb.duration};\r\n"
        self.callbacks[cb.id] = cb
        self._open += 1
        self._idle.clear()
        cb.sent = time.monotonic()
        writer.write(line.encode("ascii"))
        if writer.transport.get_write_buffer_size() > WRITE_HIGH_WATER:
            await writer.drain()

    # ---- traffic ----

    async def paced(self, *, rate: float, count: int, durations: Sequence[int], deadline: float) -> None:
        """Send ``count`` REQUESTs at ``rate`` per second (durations taken in turn); stop at
        ``deadline`` (monotonic) if the schedule runs past it."""
        if rate <= 0 or count < 0 or not durations:
            raise ValueError("rate must be positive, count not negative, durations not empty")
        t0 = time.monotonic()
        for i in range(count):
            target = t0 + i / rate
            if target >= deadline:
                break
            delay = target - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            cb = Callback(id=f"p{self.tag}{i}", kind="paced", duration=durations[i % len(durations)],
                          scheduled=target)
            await self._send(cb, i % self.connections)

    async def sequential(self, *, duration: int, until: float, deadline: float, max_count: int) -> None:
        """One callback after another until ``until`` (monotonic; no new REQUEST after it), each
        waiting for the previous one to finish (and, when that one was not answered, until its
        ``duration`` has passed), at most ``max_count``; a callback still open at ``deadline``
        ends the loop."""
        loop = asyncio.get_running_loop()
        for i in range(max_count):
            now = time.monotonic()
            if now >= until:
                break
            cb = Callback(id=f"s{self.tag}{i}", kind="sequential", duration=duration, scheduled=now,
                          waiter=loop.create_future())
            await self._send(cb, self.connections)
            assert cb.waiter is not None
            try:
                await asyncio.wait_for(cb.waiter, max(0.0, deadline - time.monotonic()))
            except TimeoutError:
                return
            if cb.result != "answered":
                # Refused or failed fast: pause for its duration so a failing mss is not flooded.
                await asyncio.sleep(max(0.0, min(until, cb.scheduled + duration) - time.monotonic()))

    async def settle(self, deadline: float) -> bool:
        """Wait until every callback is finished, or ``deadline`` (monotonic); True when all are."""
        try:
            await asyncio.wait_for(self._idle.wait(), max(0.0, deadline - time.monotonic()))
        except TimeoutError:
            return False
        return True

    def take_interval(self) -> dict[str, float | int]:
        """ACKs received since the previous call, and the slowest of them (ms); then start over."""
        figures = {"acks": self._interval_acks, "ack_max_ms": round(self._interval_ack_max * 1000, 2)}
        self._interval_acks = 0
        self._interval_ack_max = 0.0
        return figures

    @property
    def finished_count(self) -> int:
        """Callbacks over so far (refused, or RESPONSE in)."""
        return len(self.callbacks) - self._open


def _int(text: str | None) -> int | None:
    if text is None:
        return None
    try:
        return int(text)
    except ValueError:
        return None


def percentile(values: Sequence[float], q: float) -> float | None:
    """The ``q``-th percentile (0..100, nearest rank) of ``values``; None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def _ms(values: Iterable[float]) -> dict[str, float | None]:
    data = [v * 1000 for v in values]
    return {
        "n": len(data),
        "p50": percentile(data, 50),
        "p90": percentile(data, 90),
        "p99": percentile(data, 99),
        "max": max(data) if data else None,
    }


def peak_concurrency(callbacks: Iterable[Callback]) -> int:
    """The most callbacks in progress at once: from ``ACK code=ok`` to the RESPONSE (or to the
    end, for one never answered)."""
    edges: list[tuple[float, int]] = []
    for cb in callbacks:
        if cb.ack_code == "ok" and cb.ack_at is not None:
            edges.append((cb.ack_at, 1))
            edges.append((cb.response_at if cb.response_at is not None else math.inf, -1))
    peak = current = 0
    for _, step in sorted(edges, key=lambda e: (e[0], e[1])):  # an end before a start at one instant
        current += step
        peak = max(peak, current)
    return peak


def summarize(callbacks: Iterable[Callback]) -> dict[str, Any]:
    """The figures and checks of a run (see the module docstring); plain data, JSON-ready."""
    cbs = list(callbacks)
    outcomes: collections.Counter[str] = collections.Counter()
    problems: collections.Counter[str] = collections.Counter()
    own_limit = 0
    answered = 0
    duration_off: collections.Counter[str] = collections.Counter()
    for cb in cbs:
        if cb.acks == 0:
            problems["no ACK"] += 1
            outcomes["no ACK"] += 1
            continue
        if cb.acks > 1:
            problems["more than one ACK"] += 1
        if cb.ack_code == "fail":
            outcomes["ACK code=fail"] += 1
            own_limit += 1
            if cb.responses:
                problems["RESPONSE after ACK code=fail"] += 1
            continue
        if cb.ack_code != "ok":
            problems[f"ACK code={cb.ack_code}"] += 1
            continue
        if cb.responses == 0:
            outcomes["no RESPONSE (yet)"] += 1
            problems["no RESPONSE"] += 1
            continue
        if cb.responses > 1:
            problems["more than one RESPONSE"] += 1
        outcomes[f"{cb.result} code={cb.code}"] += 1
        if cb.result in OWN_LIMIT_RESULTS and cb.code == OWN_LIMIT_CODE:
            own_limit += 1
        if cb.result == "answered":
            answered += 1
            if cb.real_duration != cb.duration:
                duration_off[f"{cb.real_duration} for {cb.duration}"] += 1
                if cb.real_duration is None or abs(cb.real_duration - cb.duration) > REAL_DURATION_SLACK:
                    problems[f"real_duration off by more than {REAL_DURATION_SLACK} s"] += 1
    ack_latency = [cb.ack_at - cb.sent for cb in cbs if cb.ack_at is not None and cb.sent is not None]
    lateness = [
        cb.response_at - (cb.ack_at + cb.duration)
        for cb in cbs
        if cb.result == "answered" and cb.response_at is not None and cb.ack_at is not None
    ]
    send_lag = [cb.sent - cb.scheduled for cb in cbs if cb.sent is not None and cb.kind == "paced"]
    return {
        "requests": len(cbs),
        "by_kind": dict(collections.Counter(cb.kind for cb in cbs)),
        "answered": answered,
        "peak_concurrent": peak_concurrency(cbs),
        "own_limit_failures": own_limit,
        "outcomes": dict(outcomes.most_common()),
        "problems": dict(problems.most_common()),
        "real_duration_inexact": sum(duration_off.values()),
        "real_duration_off": dict(duration_off.most_common()),
        "ack_latency_ms": _ms(ack_latency),
        "response_lateness_ms": _ms(lateness),
        "send_lag_ms": _ms(send_lag),
    }
