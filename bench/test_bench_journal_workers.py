"""Journal cost per callback of a worker (``[callback] workers`` > 1: a deferred group, its writes run
in one short transaction at the flush) against the single process's group (pytest-benchmark; not part
of the test suite). The round is bench/test_bench_journal.py's: ``k`` callbacks' journal work through
the real desk and journal, in the five event-loop iterations a callback's writes fall in.

Run: .venv/bin/pytest bench/test_bench_journal_workers.py --benchmark-only --benchmark-columns=median,ops
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_bench_journal import PER_ITERATION, _Bench, _Engine, _Outlet  # pytest puts bench/ on the path

from mss.desk import CallbackDesk
from mss.journal import Journal


class _WorkerBench(_Bench):
    """The same desk and round, on the journal of worker 0 of 2."""

    def __init__(self, path: Path) -> None:
        self.journal = Journal(path, worker=0, workers=2)
        self.scheduled = []
        self.now = 1_700_000_000.0
        self.desk = CallbackDesk(
            self.journal, max_calls=100_000, extended_response=True, udp_send=lambda data, addr: True,
            wall_clock=lambda: self.now, schedule=self.scheduled.append,
        )
        self.engine = _Engine(self.journal)
        self.desk.engine = self.engine
        self.outlets = [_Outlet() for _ in range(max(PER_ITERATION))]
        for outlet in self.outlets:
            self.desk.open_outlet(outlet)
        self.serial = 0


@pytest.fixture(params=["single", "worker"])
def bench(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[_Bench]:
    path = tmp_path / "journal.sqlite3"
    b = _Bench(path, group=True) if request.param == "single" else _WorkerBench(path)
    yield b
    b.journal.close()


@pytest.mark.parametrize("k", PER_ITERATION)
def test_journal_per_callback(benchmark: Any, bench: _Bench, k: int) -> None:
    benchmark.group = f"journal: {k} callback(s) per loop iteration"
    commits = bench.journal.commits
    benchmark(bench.callbacks, k)
    assert bench.journal.undelivered() == [] and bench.journal.interrupted() == []
    assert bench.desk.active == {}
    benchmark.extra_info["transactions_per_callback"] = round(
        (bench.journal.commits - commits) / len(bench.engine.started), 3)
