"""Two workers' desks on one journal file: a RESPONSE one worker keeps is written by the other, once
(claims in the real sqlite journal, group commit as the service runs it); no sockets."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from mss.desk import CallbackDesk, Sender
from mss.journal import Journal
from tests.helpers import FakeClock
from tests.test_desk import Engine, Outlet, ack, req, resp


class Worker:
    """One worker's desk and journal, driven as its event loop would."""

    def __init__(self, path: Path, index: int, clock: FakeClock) -> None:
        self.journal = Journal(path, worker=index, workers=2)
        self.scheduled: list[Callable[[], None]] = []
        self.desk = CallbackDesk(
            self.journal, max_calls=100, extended_response=False, udp_send=lambda data, addr: True,
            wall_clock=clock, clock=clock, schedule=self.scheduled.append,
        )
        self.engine = Engine()
        self.engine.desk = self.desk
        self.desk.engine = self.engine
        self.desk.recover()

    def iteration(self) -> None:
        """Event-loop iterations until nothing is scheduled (a flush may schedule the next one)."""
        for _ in range(10):
            if not self.scheduled:
                return
            scheduled, self.scheduled[:] = list(self.scheduled), []
            for function in scheduled:
                function()
        raise AssertionError("the desk keeps scheduling flushes")

    def connect(self) -> Outlet:
        outlet = Outlet("as1")
        self.desk.open_outlet(outlet)
        return outlet

    def proven(self) -> Outlet:
        """A connection the AS sent a message on (a CANCEL of nothing: ACK code=fail)."""
        from mss.iif import Cancel

        outlet = self.connect()
        self.desk.handle([Cancel(id="hello")], Sender(peer="as1", transport="tcp", outlet=outlet))
        self.iteration()
        assert ack("hello", ok=False) in outlet.wire
        return outlet

    def order(self, outlet: Outlet, cb_id: str) -> None:
        self.desk.handle([req(cb_id)], Sender(peer="as1", transport="tcp", outlet=outlet))
        self.iteration()
        assert outlet.wire.endswith(ack(cb_id))

    def close(self) -> None:
        self.journal.close()


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[tuple[Worker, Worker]]:
    clock = FakeClock()
    path = tmp_path / "journal.sqlite3"
    pair = (Worker(path, 0, clock), Worker(path, 1, clock))
    yield pair
    for worker in pair:
        worker.close()


def _kept_by(worker: Worker, cb_id: str) -> None:
    """``cb_id`` ordered at ``worker``, its connection gone, then ended: the RESPONSE is kept there."""
    outlet = worker.proven()
    worker.order(outlet, cb_id)
    worker.desk.close_outlet(outlet)
    outlet.open = False
    worker.engine.finish(cb_id, real_duration=7)
    worker.iteration()
    assert worker.desk.owed == 1


def test_a_kept_response_goes_out_through_the_other_worker_once(workers: tuple[Worker, Worker]) -> None:
    zero, one = workers
    _kept_by(zero, "a")
    there = one.proven()  # found at once: the connection became proven
    assert there.wire.count(resp("a", 7)) == 1
    one.desk.poll_owed()
    one.iteration()
    assert there.wire.count(resp("a", 7)) == 1  # not twice
    late = zero.proven()  # worker 0 still has it queued: its claim is lost, it writes nothing
    zero.desk.poll_owed()
    zero.iteration()
    assert resp("a", 7) not in late.wire and zero.journal.undelivered() == []


def test_two_workers_reaching_for_one_response_write_it_once(workers: tuple[Worker, Worker]) -> None:
    zero, one = workers
    _kept_by(zero, "b")
    here = zero.connect()
    there = one.connect()
    zero.desk.outlet_held(here)  # on trial here ...
    one.desk.outlet_held(there)  # ... while the other worker holds a connection too
    zero.iteration()
    one.iteration()
    assert sorted([here.wire, there.wire]) == [b"", resp("b", 7)]


def test_an_unconfirmed_trial_is_released_for_the_other_worker(workers: tuple[Worker, Worker]) -> None:
    zero, one = workers
    _kept_by(zero, "c")
    probe = one.connect()
    one.desk.outlet_held(probe)
    one.iteration()
    assert probe.wire == resp("c", 7)  # written on trial ...
    one.desk.close_outlet(probe)  # ... and the connection went before the confirmation
    one.iteration()
    back = zero.proven()
    assert back.wire.count(resp("c", 7)) == 1
    assert zero.journal.undelivered() == []


def test_a_restarted_worker_frees_what_its_dead_process_held(tmp_path: Path) -> None:
    clock = FakeClock()
    path = tmp_path / "journal.sqlite3"
    zero, one = Worker(path, 0, clock), Worker(path, 1, clock)
    try:
        _kept_by(zero, "d")
        probe = one.connect()
        one.desk.outlet_held(probe)
        one.iteration()
        assert probe.wire == resp("d", 7)  # on trial at worker 1, which then dies
        one.close()
        survivor = zero.proven()
        assert resp("d", 7) not in survivor.wire  # still claimed by the dead process
        one = Worker(path, 1, clock)  # started again: recover() releases the claim
        zero.desk.poll_owed()
        zero.iteration()
        assert survivor.wire.count(resp("d", 7)) == 1
    finally:
        zero.close()
        one.close()


def test_a_worker_settles_only_its_own_cut_callbacks(tmp_path: Path) -> None:
    clock = FakeClock()
    path = tmp_path / "journal.sqlite3"
    zero, one = Worker(path, 0, clock), Worker(path, 1, clock)
    try:
        zero.order(zero.proven(), "alive")
        one.order(one.proven(), "cut")
        one.close()  # worker 1 dies with its callback in progress
        one = Worker(path, 1, clock)
        assert [p.id for p in one.journal.undelivered()] == ["cut"]
        assert [c.id for c in zero.desk.active.values()] == ["alive"]
        zero.engine.finish("alive")
        zero.iteration()
        assert zero.journal.undelivered() == []  # "alive" went on its connection; "cut" is worker 1's
        assert [p.id for p in one.journal.undelivered()] == ["cut"]
        assert zero.desk.owed == 0 and one.desk.owed == 1  # kept by its own worker only
    finally:
        zero.close()
        one.close()
