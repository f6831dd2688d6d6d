"""Journal cost per callback: one transaction per write against group commit (pytest-benchmark; not part
of the test suite).

Run: .venv/bin/pytest bench/test_bench_journal.py --benchmark-only --benchmark-columns=median,ops

Each measured round is ``k`` callbacks' journal work through the real desk and journal (sqlite3 in WAL on
the file system of the temporary directory), in the five event-loop iterations a callback's writes fall
in: the REQUESTs (one per TCP connection) are recorded and ACKed, the engine records each one's relay
ports on start (as the call engine does), the legs are bridged, the callbacks end (RESPONSE and CDR),
and the delivery marks follow. ``per-write`` is the desk without ``schedule``: every write commits on
its own, as before group commit (five transactions a callback). ``group`` is the desk as the service
runs it: one transaction per iteration that has a write something waits for (a REQUEST's, a
RESPONSE's); the relay ports, the bridge and the delivery marks are lazy writes that join the next
one, so ``k`` callbacks an iteration share two transactions (``transactions_per_callback`` in the
extra info). A round's median divided by ``k`` is the journal's cost per callback; ``k`` is how many
callbacks' writes meet in one iteration (at 500 callbacks/s with iterations about a millisecond apart,
1 or 2; in a burst, many more).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from mss.desk import Callback, CallbackDesk, Outcome, Sender
from mss.iif import CallbackRequest
from mss.journal import Cdr, Journal
from mss.quality import LegQuality

#: Callbacks whose writes meet in one event-loop iteration.
PER_ITERATION = (1, 4, 16, 64)


class _Outlet:
    """A TCP connection to the AS that takes every write."""

    def __init__(self) -> None:
        self.peer = "as1"
        self.written = 0

    def write(self, data: bytes) -> bool:
        self.written += len(data)
        return True

    def trial_started(self) -> None:
        pass


class _Engine:
    """Starts a callback as the call engine does as far as the journal goes: records its relay ports."""

    def __init__(self, journal: Journal) -> None:
        self.journal = journal
        self.started: list[Callback] = []

    def refusal(self, pending: int) -> str | None:
        return None

    def start(self, callback: Callback) -> None:
        self.journal.record_ports(callback.seq, (30000 + 4 * (callback.seq % 1000), 30002))
        self.started.append(callback)

    def cancel(self, seq: int) -> None:
        pass

    def release_all(self) -> None:
        pass


class _Bench:
    def __init__(self, path: Path, group: bool) -> None:
        self.journal = Journal(path)
        self.scheduled: list[Callable[[], None]] = []
        self.now = 1_700_000_000.0
        grouping: dict[str, Any] = {"schedule": self.scheduled.append} if group else {}
        self.desk = CallbackDesk(
            self.journal, max_calls=100_000, extended_response=True, udp_send=lambda data, addr: True,
            wall_clock=lambda: self.now, **grouping,  # without: runs against a desk older than group commit
        )
        self.engine = _Engine(self.journal)
        self.desk.engine = self.engine
        self.outlets = [_Outlet() for _ in range(max(PER_ITERATION))]
        for outlet in self.outlets:
            self.desk.open_outlet(outlet)
        self.serial = 0

    def iteration(self) -> None:
        """The end of an event-loop iteration: what it scheduled runs (the desk's flush)."""
        scheduled, self.scheduled[:] = list(self.scheduled), []
        for function in scheduled:
            function()

    def callbacks(self, k: int, quality: LegQuality | None = None) -> None:
        """``k`` callbacks from REQUEST to delivered RESPONSE (``quality``: each leg's, in the CDR)."""
        first = len(self.engine.started)
        for outlet in self.outlets[:k]:
            self.serial += 1
            request = CallbackRequest(id=f"b{self.serial}", user1="+4930123456", user2="+4930654321",
                                      duration=60)
            self.desk.handle([request], Sender(peer="as1", transport="tcp", outlet=outlet))
        self.iteration()  # committed: ACKs written, callbacks started (their ports recorded: lazy,
        # like the bridges and delivery marks below, they ride with the next group that commits)
        started = self.engine.started[first:]
        assert len(started) == k
        for callback in started:
            self.desk.bridged(callback.seq)
        self.iteration()
        for callback in started:
            cdr = Cdr(caller="5551000", leg1_call_id="a@mss", leg2_call_id="b@mss", leg1_code=200,
                      leg2_code=200, codec="PCMU", leg1_answered_at=self.now, leg2_answered_at=self.now,
                      released_at=self.now, released_by="user1", result="answered", reason="user1 hung up",
                      leg1=quality, leg2=quality)
            self.desk.finish(callback.seq, Outcome(real_duration=60, result="answered", code=200, cdr=cdr))
        self.iteration()  # RESPONSEs committed, then written (delivered)


@pytest.fixture(params=["per-write", "group"])
def bench(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[_Bench]:
    b = _Bench(tmp_path / "journal.sqlite3", group=request.param == "group")
    yield b
    b.journal.close()


@pytest.mark.parametrize("k", PER_ITERATION)
def test_journal_per_callback(benchmark: Any, bench: _Bench, k: int) -> None:
    benchmark.group = f"journal: {k} callback(s) per loop iteration"
    counting = hasattr(bench.journal, "commits")  # a journal older than group commit does not count
    commits = bench.journal.commits if counting else 0
    benchmark(bench.callbacks, k)
    assert bench.journal.undelivered() == [] and bench.journal.interrupted() == []
    assert bench.desk.active == {}
    benchmark.extra_info["callbacks_per_round"] = k
    if counting:
        per_callback = (bench.journal.commits - commits) / len(bench.engine.started)
        benchmark.extra_info["transactions_per_callback"] = round(per_callback, 3)


#: A leg's media quality as the relay reports it for an answered call (every CDR column set).
QUALITY = LegQuality(packets_in=3000, bytes_in=516000, packets_out=3010, bytes_out=517720, lost=2,
                     jitter_mean_ms=0.4, jitter_max_ms=2.5, mos=4.38)


@pytest.mark.parametrize("k", (1, 16))
def test_journal_per_callback_with_quality(benchmark: Any, tmp_path: Path, k: int) -> None:
    """The group round with every callback's CDR carrying both legs' media quality, as an answered
    call's does (the round above writes CDRs without it)."""
    benchmark.group = f"journal with media quality in the CDR: {k} callback(s) per loop iteration"
    bench = _Bench(tmp_path / "journal.sqlite3", group=True)
    try:
        benchmark(bench.callbacks, k, QUALITY)
        assert bench.journal.undelivered() == [] and bench.desk.active == {}
        row = bench.journal.cdr(f"b{bench.serial}")
        assert row is not None and row["leg2_mos"] == QUALITY.mos
    finally:
        bench.journal.close()
