"""The callback desk: admission, ACK order, RESPONSE routing, CANCEL, recovery; no sockets."""

from __future__ import annotations

import contextlib
import logging
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from mss.config import PeerServer
from mss.desk import Callback, CallbackDesk, Outcome, Sender
from mss.errors import IIFError
from mss.iif import CallbackRequest, Cancel
from mss.journal import Cdr, Journal, NewCallback
from mss.load import LoadGauge
from tests.helpers import FakeClock


class Outlet:
    """A TCP connection to an AS that records what is written to it."""

    def __init__(self, peer: str, on_write: Callable[[bytes], None] | None = None) -> None:
        self.peer = peer
        self.open = True
        self.written: list[bytes] = []
        self.trials = 0  # trial_started() calls
        self._on_write = on_write

    def write(self, data: bytes) -> bool:
        if not self.open:
            return False
        if self._on_write is not None:
            self._on_write(data)
        self.written.append(data)
        return True

    def trial_started(self) -> None:
        self.trials += 1

    @property
    def wire(self) -> bytes:
        return b"".join(self.written)

    def __repr__(self) -> str:
        return f"Outlet({self.peer!r}, {self.wire!r})"


class Engine:
    """Places nothing: remembers what it was asked, finishes callbacks when the test says."""

    def __init__(self) -> None:
        self.desk: CallbackDesk | None = None
        self.reason: str | None = None
        self.pending: list[int] = []  # what refusal() was told was taken earlier in the batch
        self.started: list[Callback] = []
        self.cancelled: list[int] = []
        self.released_all = 0

    def refusal(self, pending: int) -> str | None:
        self.pending.append(pending)
        return self.reason

    def start(self, callback: Callback) -> None:
        self.started.append(callback)

    def cancel(self, seq: int) -> None:
        self.cancelled.append(seq)

    def release_all(self) -> None:
        self.released_all += 1

    def finish(
        self, cb_id: str, real_duration: int = 0, result: str = "answered", code: int = 0,
        cdr: Cdr | None = None,
    ) -> None:
        assert self.desk is not None
        (callback,) = [c for c in self.desk.active.values() if c.id == cb_id]
        outcome = Outcome(real_duration=real_duration, result=result, code=code, cdr=cdr)
        self.desk.finish(callback.seq, outcome)


class Harness:
    def __init__(
        self, path: Path, *, max_calls: int = 1000, extended: bool = False,
        peers: tuple[PeerServer, ...] = (), group: bool = False, journal: type[Journal] = Journal,
    ) -> None:
        self.clock = FakeClock()
        self.journal = journal(path)
        self.datagrams: list[tuple[bytes, tuple[str, int]]] = []
        self.scheduled: list[Callable[[], None]] = []  # group commit: what the loop would call soon
        self.desk = CallbackDesk(
            self.journal,
            max_calls=max_calls,
            extended_response=extended,
            udp_send=lambda data, addr: self.datagrams.append((data, addr)),
            wall_clock=self.clock,
            peers=peers,
            clock=self.clock,
            schedule=self.scheduled.append if group else None,
        )
        self.engine = Engine()
        self.engine.desk = self.desk
        self.desk.engine = self.engine

    def iteration(self) -> None:
        """The end of an event-loop iteration: run what was scheduled in it."""
        scheduled, self.scheduled[:] = list(self.scheduled), []
        for function in scheduled:
            function()

    def connect(self, peer: str = "as1") -> Outlet:
        outlet = Outlet(peer)
        self.desk.open_outlet(outlet)
        return outlet

    def come_back(self, peer: str = "as1") -> Outlet:
        """The AS's next connection: it stays open the hold time, takes what it is owed and keeps the
        connection open until the adapter confirms the delivery."""
        outlet = self.connect(peer)
        self.desk.outlet_held(outlet)
        self.desk.confirm_trial(outlet)
        return outlet

    def send(self, outlet: Outlet, *messages: CallbackRequest | Cancel | IIFError) -> None:
        self.desk.handle(list(messages), Sender(peer=outlet.peer, transport="tcp", outlet=outlet))

    def send_udp(
        self, addr: tuple[str, int], *messages: CallbackRequest | Cancel | IIFError, peer: str = "as1"
    ) -> None:
        self.desk.handle(list(messages), Sender(peer=peer, transport="udp", reply_addr=addr))


@pytest.fixture
def h(tmp_path: Path) -> Iterator[Harness]:
    harness = Harness(tmp_path / "journal.sqlite3")
    yield harness
    harness.journal.close()


def req(cb_id: str, duration: int = 60) -> CallbackRequest:
    return CallbackRequest(id=cb_id, user1="100", user2="101", duration=duration)


def ack(cb_id: str, ok: bool = True) -> bytes:
    return f"ACK: id={cb_id};code={'ok' if ok else 'fail'};\r\n".encode()


def resp(cb_id: str, real_duration: int = 0) -> bytes:
    return f"RESPONSE: id={cb_id};real_duration={real_duration};\r\n".encode()


# --- admission ------------------------------------------------------------------------------------

def test_request_taken(h: Harness) -> None:
    out = h.connect()
    h.send(out, req("a", 90))
    assert out.wire == ack("a")
    (cb,) = h.engine.started
    assert (cb.id, cb.user1, cb.user2, cb.duration, cb.received_at) == ("a", "100", "101", 90, 1000.0)
    assert cb.origin.outlet is out
    assert h.desk.active == {cb.seq: cb}
    assert [c.id for c in h.journal.interrupted()] == ["a"]  # recorded


def test_ack_ok_only_after_the_journal_has_the_request(tmp_path: Path) -> None:
    h = Harness(tmp_path / "j.sqlite3")
    seen: list[list[str]] = []
    out = Outlet("as1", on_write=lambda _data: seen.append([c.id for c in h.journal.interrupted()]))
    h.desk.open_outlet(out)
    h.send(out, req("a"), req("b"))
    assert out.wire == ack("a") + ack("b")
    assert seen == [["a", "b"]]
    assert [c.id for c in h.engine.started] == ["a", "b"]
    h.journal.close()


def test_engine_started_after_the_acks_are_written(h: Harness) -> None:
    out = h.connect()
    written_at_start: list[bytes] = []
    h.engine.start = lambda cb: written_at_start.append(out.wire)  # type: ignore[method-assign]
    h.send(out, req("a"), req("b"))
    assert written_at_start == [ack("a") + ack("b")] * 2


def test_duplicate_id_in_progress(h: Harness) -> None:
    out = h.connect()
    h.send(out, req("a"))
    h.send(out, req("a"))
    other = h.connect("as2")
    h.send(other, req("a"))  # ids are global
    assert out.wire == ack("a") + ack("a", ok=False)
    assert other.wire == ack("a", ok=False)
    assert len(h.engine.started) == 1
    h.engine.finish("a")
    h.send(out, req("a"))  # finished: the id is free again
    assert out.wire.endswith(resp("a") + ack("a"))
    assert len(h.engine.started) == 2


def test_duplicate_id_within_one_batch(h: Harness) -> None:
    out = h.connect()
    h.send(out, req("a"), req("b"), req("a"))
    assert out.wire == ack("a") + ack("b") + ack("a", ok=False)
    assert [c.id for c in h.engine.started] == ["a", "b"]
    assert [c.id for c in h.journal.interrupted()] == ["a", "b"]


def test_max_calls(tmp_path: Path) -> None:
    h = Harness(tmp_path / "j.sqlite3", max_calls=2)
    out = h.connect()
    h.send(out, req("a"), req("b"), req("c"))
    assert out.wire == ack("a") + ack("b") + ack("c", ok=False)
    h.send(out, req("d"))
    assert out.wire.endswith(ack("d", ok=False))
    h.engine.finish("a")
    h.send(out, req("d"), req("e"))
    assert out.wire.endswith(resp("a") + ack("d") + ack("e", ok=False))
    assert len(h.desk.active) == 2
    h.journal.close()


def test_engine_told_what_the_batch_already_took(h: Harness) -> None:
    # Pipelined REQUESTs: the engine's resources (relay sessions) must count the batch's earlier takes.
    room = 2

    def refusal(pending: int) -> str | None:
        h.engine.pending.append(pending)
        return "no RTP ports left" if len(h.desk.active) + pending >= room else None

    h.engine.refusal = refusal  # type: ignore[method-assign]
    out = h.connect()
    h.send(out, req("a"), req("b"), req("c"), req("d"))
    assert out.wire == ack("a") + ack("b") + ack("c", ok=False) + ack("d", ok=False)
    assert h.engine.pending == [0, 1, 2, 2]
    assert [c.id for c in h.engine.started] == ["a", "b"]
    assert h.desk.refusals == {("as1", "engine"): 2}


def test_peer_max_calls(tmp_path: Path) -> None:
    peers = (PeerServer(name="as1", host="127.0.0.1", max_calls=2), PeerServer(name="as2", host="127.0.0.2"))
    h = Harness(tmp_path / "j.sqlite3", peers=peers)
    one, two = h.connect("as1"), h.connect("as2")
    h.send(one, req("a"), req("b"), req("c"))
    h.send(two, req("x"), req("y"), req("z"))  # the other peer is not limited by as1's limit
    assert one.wire == ack("a") + ack("b") + ack("c", ok=False)
    assert two.wire == ack("x") + ack("y") + ack("z")
    h.engine.finish("a")
    h.send(one, req("c"), req("d"))
    assert one.wire.endswith(resp("a") + ack("c") + ack("d", ok=False))
    assert h.desk.refusals == {("as1", "peer_max_calls"): 2}
    h.journal.close()


def test_peer_max_rate(tmp_path: Path) -> None:
    peers = (PeerServer(name="as1", host="127.0.0.1", max_rate=2.0),)
    h = Harness(tmp_path / "j.sqlite3", peers=peers)
    out = h.connect()
    # A burst of one second's worth (2), then 2 a second.
    h.send(out, *[req(f"r{i}") for i in range(4)])
    assert out.wire == ack("r0") + ack("r1") + ack("r2", ok=False) + ack("r3", ok=False)
    h.clock.advance(0.5)  # one token back
    h.send(out, req("r4"), req("r5"))
    assert out.wire.endswith(ack("r4") + ack("r5", ok=False))
    h.clock.advance(10)  # saved up to the burst only
    h.send(out, *[req(f"s{i}") for i in range(3)])
    assert out.wire.endswith(ack("s0") + ack("s1") + ack("s2", ok=False))
    # A refused REQUEST (duplicate id) spends no token.
    h.clock.advance(0.5)
    h.send(out, req("s0"), req("t0"))
    assert out.wire.endswith(ack("s0", ok=False) + ack("t0"))
    assert h.desk.refusals == {("as1", "peer_max_rate"): 4, ("as1", "duplicate_id"): 1}
    h.journal.close()


def test_a_flood_of_bad_lines_writes_a_bounded_log(h: Harness, caplog: pytest.LogCaptureFixture) -> None:
    """250,000 refused lines from an allowed peer: a few log lines, each saying how many it stands for."""
    caplog.set_level(logging.INFO, logger="mss.desk")
    out = h.connect()
    h.send(out, req("live"))
    total = 250_000
    kinds = [
        IIFError("missing parameter 'user1'", iif_id="m"),
        req("live"),  # duplicate id
        Cancel(id="nobody"),
    ]
    batch = 500
    for start in range(0, total, batch):
        h.send(out, *[kinds[(start + i) % 3] for i in range(batch)])
        h.clock.advance(0.05)  # 250,000 lines over 25 s of the fake clock
    assert out.wire.count(b"code=fail") == total
    assert sum(h.desk.refusals.values()) == total
    assert h.desk.refusals == {
        ("as1", "malformed"): 83_334, ("as1", "duplicate_id"): 83_333, ("as1", "cancel_unknown"): 83_333
    }
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    # One line per peer and kind at once, then at most one per LOG_INTERVAL (10 s) each.
    assert 3 <= len(warnings) <= 3 * 4, warnings
    counted = [w for w in warnings if "more since the last report" in w]
    assert counted, warnings
    reported = sum(int(w.rsplit("(", 1)[1].split()[0]) for w in counted) + len(warnings)
    assert reported <= total
    assert reported > total * 0.5  # the counts stand for the lines left out


def test_draining_refuses_requests_but_takes_cancels(h: Harness) -> None:
    out = h.connect()
    h.send(out, req("a"))
    h.desk.accepting = False
    h.send(out, req("b"), Cancel(id="a"))
    assert out.wire == ack("a") + ack("b", ok=False) + ack("a")
    assert [c.id for c in h.engine.started] == ["a"]
    assert h.engine.cancelled == [h.engine.started[0].seq]


def test_engine_refusal(h: Harness) -> None:
    out = h.connect()
    h.engine.reason = "the external line is not registered"
    h.send(out, req("a"))
    h.engine.reason = None
    h.send(out, req("b"))
    assert out.wire == ack("a", ok=False) + ack("b")
    assert [c.id for c in h.journal.interrupted()] == ["b"]


def test_an_overloaded_loop_refuses_requests_at_once(h: Harness) -> None:
    gauge = LoadGauge()
    h.desk.load = gauge
    out = h.connect()
    gauge.overloaded, gauge.lag = True, 0.2
    h.send(out, req("a"), Cancel(id="zz"))
    gauge.overloaded = False
    h.send(out, req("b"))
    assert out.wire == ack("a", ok=False) + ack("zz", ok=False) + ack("b")
    assert [c.id for c in h.engine.started] == ["b"]
    assert h.desk.refusals["as1", "overload"] == 1


def test_no_engine_refuses(tmp_path: Path) -> None:
    h = Harness(tmp_path / "j.sqlite3")
    h.desk.engine = None
    out = h.connect()
    h.send(out, req("a"))
    assert out.wire == ack("a", ok=False)
    h.journal.close()


def test_journal_failure_refuses_the_batch(h: Harness) -> None:
    out = h.connect()
    h.send(out, req("a"))
    h.journal.close()  # from now on every journal call fails
    h.send(out, req("b"), IIFError("missing parameter 'user1'", iif_id="x"), req("c"))
    assert out.wire == ack("a") + ack("b", ok=False) + ack("x", ok=False) + ack("c", ok=False)
    assert [c.id for c in h.engine.started] == ["a"]
    assert [c.id for c in h.desk.active.values()] == ["a"]
    # The callback taken before still gets its RESPONSE, even unrecorded.
    h.engine.finish("a", real_duration=7)
    assert out.wire.endswith(resp("a", 7))
    assert h.desk.active == {}


def test_refused_messages_answered_in_order(h: Harness) -> None:
    out = h.connect()
    h.send(
        out,
        IIFError("no METHOD: at the start of the message"),
        req("a"),
        IIFError("missing parameter 'user2'", iif_id="q"),
        req("a"),
        req("b"),
    )
    assert out.wire == ack("", ok=False) + ack("a") + ack("q", ok=False) + ack("a", ok=False) + ack("b")


def test_pipelined_batches_keep_their_order(h: Harness) -> None:
    out = h.connect()
    expected = b""
    for batch in range(5):
        messages: list[CallbackRequest | Cancel | IIFError] = [req(f"b{batch}-{i}") for i in range(20)]
        h.send(out, *messages)
        expected += b"".join(ack(f"b{batch}-{i}") for i in range(20))
    assert out.wire == expected
    assert [c.id for c in h.engine.started] == [f"b{b}-{i}" for b in range(5) for i in range(20)]


# --- RESPONSE routing -----------------------------------------------------------------------------

def test_response_on_the_same_connection(h: Harness) -> None:
    first, second = h.connect(), h.connect()
    h.send(first, req("a"))
    h.send(second, req("b"))
    h.engine.finish("b", real_duration=12)
    h.engine.finish("a", real_duration=3)
    assert first.wire == ack("a") + resp("a", 3)
    assert second.wire == ack("b") + resp("b", 12)
    assert h.journal.undelivered() == []  # both marked delivered


def test_response_on_the_peers_newest_connection(h: Harness) -> None:
    old = h.connect()
    h.send(old, req("a"))
    older, newer, silent = h.connect(), h.connect(), h.connect()
    h.send(older, Cancel(id="x"))  # each has shown it is the AS
    h.send(newer, Cancel(id="y"))
    other_peer = h.connect("as2")
    h.send(other_peer, Cancel(id="z"))
    old.open = False
    h.desk.close_outlet(old)
    h.engine.finish("a", real_duration=5)
    assert newer.wire == ack("y", ok=False) + resp("a", 5)
    assert older.wire == ack("x", ok=False)
    assert silent.wire == b""  # newest, but it has sent nothing: maybe a probe
    assert other_peer.wire == ack("z", ok=False)
    assert h.journal.undelivered() == []


def test_response_kept_until_the_peers_next_connection(h: Harness) -> None:
    out = h.connect()
    h.send(out, req("a"), req("b"))
    out.open = False
    h.desk.close_outlet(out)
    h.engine.finish("b", real_duration=2)
    h.clock.advance(1)
    h.engine.finish("a", real_duration=1)
    assert h.desk.owed == 2
    assert [p.id for p in h.journal.undelivered()] == ["b", "a"]
    stranger = h.come_back("as2")
    assert stranger.wire == b"" and h.desk.owed == 2
    back = h.connect()
    assert back.wire == b""  # a new connection that has sent nothing gets nothing before the hold time
    h.desk.outlet_held(back)
    assert back.wire == resp("b", 2) + resp("a", 1)
    assert h.desk.owed == 2 and h.desk.on_trial(back) == 2  # written, not yet confirmed
    assert back.trials == 2
    assert [p.id for p in h.journal.undelivered()] == ["b", "a"]
    h.desk.confirm_trial(back)
    assert h.desk.owed == 0
    assert h.journal.undelivered() == []
    again = h.come_back()
    assert again.wire == b""  # delivered once


def test_response_kept_when_the_write_fails(h: Harness) -> None:
    # The connection died but its close was not reported yet: write() says False.
    out = h.connect()
    h.send(out, req("a"))
    out.open = False
    h.engine.finish("a", real_duration=4)
    assert h.desk.owed == 1
    h.desk.close_outlet(out)
    assert h.come_back().wire == resp("a", 4)


def test_a_probe_that_connects_and_closes_takes_nothing(h: Harness) -> None:
    out = h.connect()
    h.send(out, req("a"))
    out.open = False
    h.desk.close_outlet(out)
    h.engine.finish("a", real_duration=7)
    for _ in range(3):  # health checks: open, close before the hold time, never a byte
        probe = h.connect()
        probe.open = False
        h.desk.close_outlet(probe)
        assert probe.wire == b""
    assert h.desk.owed == 1 and [p.id for p in h.journal.undelivered()] == ["a"]
    assert h.come_back().wire == resp("a", 7)
    assert h.desk.owed == 0 and h.journal.undelivered() == []


def test_unconfirmed_responses_are_kept_again_and_go_out_once_more(h: Harness) -> None:
    out = h.connect()
    h.send(out, req("a"), req("b"))
    out.open = False
    h.desk.close_outlet(out)
    h.engine.finish("a", real_duration=1)
    h.engine.finish("b", real_duration=2)
    probe = h.connect()
    h.desk.outlet_held(probe)  # a probe that stayed open the hold time without reading
    assert probe.wire == resp("a", 1) + resp("b", 2)
    probe.open = False
    h.desk.close_outlet(probe)  # reset, not confirmed: kept again, in their order
    assert h.desk.owed == 2 and [p.id for p in h.journal.undelivered()] == ["a", "b"]
    back = h.connect()
    h.send(back, Cancel(id="zz"))  # the AS speaks: delivered at once on this connection
    assert back.wire == resp("a", 1) + resp("b", 2) + ack("zz", ok=False)
    assert h.desk.owed == 0 and h.journal.undelivered() == []


def test_a_message_from_a_held_connection_confirms_its_trial(h: Harness) -> None:
    out = h.connect()
    h.send(out, req("a"))
    out.open = False
    h.desk.close_outlet(out)
    h.engine.finish("a", real_duration=3)
    back = h.connect()
    h.desk.outlet_held(back)
    assert back.wire == resp("a", 3) and h.desk.owed == 1
    h.send(back, req("b"))
    assert h.desk.owed == 0 and h.journal.undelivered() == []
    h.engine.finish("b", real_duration=4)  # and the normal path on it is immediate
    assert back.wire == resp("a", 3) + ack("b") + resp("b", 4)
    assert h.journal.undelivered() == []


def test_a_new_response_waits_for_a_connection_that_showed_itself(h: Harness) -> None:
    out = h.connect()
    h.send(out, req("a"))
    out.open = False
    h.desk.close_outlet(out)
    fresh = h.connect()  # connected, nothing sent, hold time not over
    h.engine.finish("a", real_duration=2)
    assert fresh.wire == b"" and h.desk.owed == 1
    h.desk.outlet_held(fresh)
    assert fresh.wire == resp("a", 2)
    h.desk.confirm_trial(fresh)
    assert h.journal.undelivered() == []


def test_udp_answers_go_to_the_reply_address(h: Harness) -> None:
    h.send_udp(("127.0.0.1", 7000), req("a"))
    h.send_udp(("127.0.0.1", 7001), req("a"))  # duplicate
    assert h.datagrams == [(ack("a"), ("127.0.0.1", 7000)), (ack("a", ok=False), ("127.0.0.1", 7001))]
    tcp = h.connect()  # a TCP connection of the same peer does not take a UDP RESPONSE
    h.engine.finish("a", real_duration=9)
    assert h.datagrams[-1] == (resp("a", 9), ("127.0.0.1", 7000))
    assert tcp.wire == b""
    assert h.journal.undelivered() == []


def test_exactly_one_response_per_acked_request(h: Harness) -> None:
    out = h.connect()
    h.send(out, req("a"), req("b"), req("a"))
    seq_a = h.engine.started[0].seq
    h.engine.finish("a")
    h.desk.finish(seq_a, Outcome(real_duration=99, result="answered"))  # a second end is ignored
    h.desk.finish(12345, Outcome(real_duration=0, result="answered"))  # never started
    h.engine.finish("b")
    assert out.wire == ack("a") + ack("b") + ack("a", ok=False) + resp("a") + resp("b")
    assert out.wire.count(b"RESPONSE: id=a;") == 1


def test_extended_response(tmp_path: Path) -> None:
    h = Harness(tmp_path / "j.sqlite3", extended=True)
    out = h.connect()
    h.send(out, req("a"), req("b"))
    h.engine.finish("a", real_duration=0, result="user2_busy", code=486)
    h.engine.finish("b", real_duration=61, result="answered", code=0)
    assert out.wire == (
        ack("a") + ack("b")
        + b"RESPONSE: id=a;real_duration=0;result=user2_busy;code=486;\r\n"
        + b"RESPONSE: id=b;real_duration=61;result=answered;code=0;\r\n"
    )
    h.journal.close()


def test_plain_response_hides_the_cause(h: Harness) -> None:
    out = h.connect()
    h.send(out, req("a"))
    h.engine.finish("a", real_duration=0, result="user1_busy", code=486)
    assert out.wire == ack("a") + resp("a", 0)


def test_cdr_recorded_with_the_response(h: Harness) -> None:
    out = h.connect()
    h.send(out, req("a"))
    h.clock.advance(30)
    cdr = Cdr(
        caller="mss", released_at=h.clock(), released_by="user1", result="answered", reason="user1 hung up"
    )
    h.engine.finish("a", real_duration=20, cdr=cdr)
    row = h.journal.cdr("a")
    assert row is not None
    assert (row["requested_at"], row["released_at"], row["real_duration"]) == (1000.0, 1030.0, 20)


def test_on_idle_when_the_last_callback_ends(h: Harness) -> None:
    calls: list[int] = []
    h.desk.on_idle = lambda: calls.append(len(h.desk.active))
    out = h.connect()
    h.send(out, req("a"), req("b"))
    h.engine.finish("a")
    assert calls == []
    h.engine.finish("b")
    assert calls == [0]


# --- CANCEL ---------------------------------------------------------------------------------------

def test_cancel_ok(h: Harness) -> None:
    out = h.connect()
    h.send(out, req("a"))
    h.send(out, Cancel(id="a"))
    assert out.wire == ack("a") + ack("a")
    assert h.engine.cancelled == [h.engine.started[0].seq]
    # The RESPONSE follows as usual, when the engine ends the callback.
    h.engine.finish("a", result="cancelled")
    assert out.wire == ack("a") + ack("a") + resp("a")


def test_cancel_unknown_id_fails(h: Harness) -> None:
    out = h.connect()
    h.send(out, Cancel(id="ghost"))
    h.send(out, req("a"))
    h.engine.finish("a")
    h.send(out, Cancel(id="a"))  # already over
    assert out.wire == ack("ghost", ok=False) + ack("a") + resp("a") + ack("a", ok=False)
    assert h.engine.cancelled == []


def test_cancel_of_another_peers_callback_fails(h: Harness) -> None:
    mine, theirs = h.connect("as1"), h.connect("as2")
    h.send(mine, req("a"))
    h.send(theirs, Cancel(id="a"))
    h.send_udp(("127.0.0.1", 9), Cancel(id="a"), peer="as2")
    assert theirs.wire == ack("a", ok=False)
    assert h.datagrams == [(ack("a", ok=False), ("127.0.0.1", 9))]
    assert h.engine.cancelled == []
    other_connection_same_peer = h.connect("as1")
    h.send(other_connection_same_peer, Cancel(id="a"))
    assert other_connection_same_peer.wire == ack("a")


def test_cancel_pipelined_behind_its_request(h: Harness) -> None:
    out = h.connect()
    h.send(out, req("a"), req("b"), Cancel(id="a"), req("c"), Cancel(id="c"), Cancel(id="zz"))
    assert out.wire == ack("a") + ack("b") + ack("a") + ack("c") + ack("c") + ack("zz", ok=False)
    started = {c.id: c.seq for c in h.engine.started}
    assert h.engine.cancelled == [started["a"], started["c"]]


# --- recovery after a restart ---------------------------------------------------------------------

def test_recover_answers_interrupted_callbacks_and_queues_undelivered(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite3"
    before = Journal(path)
    talking, _udp, delivered, owed = before.record_requests(
        [
            NewCallback(id="talking", peer="as1", transport="tcp", reply_addr=None, user1="1", user2="2",
                        duration=600, received_at=900.0),
            NewCallback(id="udp", peer="as2", transport="udp", reply_addr=("127.0.0.1", 7100), user1="1",
                        user2="2", duration=600, received_at=900.0),
            NewCallback(id="delivered", peer="as1", transport="tcp", reply_addr=None, user1="1", user2="2",
                        duration=600, received_at=900.0),
            NewCallback(id="owed", peer="as1", transport="tcp", reply_addr=None, user1="1", user2="2",
                        duration=600, received_at=900.0),
        ]
    )
    from mss.iif import CallbackResponse

    before.mark_bridged(talking, 950.0)
    before.record_response(delivered, CallbackResponse(id="delivered", real_duration=1), 960.0)
    before.mark_delivered(delivered, 960.0)
    before.record_response(owed, CallbackResponse(id="owed", real_duration=2), 961.0)
    before.heartbeat(995.0)
    before.close()  # the process died with "talking" and "udp" in progress

    h = Harness(path, extended=True)
    h.desk.recover()
    # UDP goes at once; TCP waits for the peer.
    assert h.datagrams == [
        (b"RESPONSE: id=udp;real_duration=0;result=shutdown;code=0;\r\n", ("127.0.0.1", 7100))
    ]
    assert h.desk.owed == 2
    assert h.journal.interrupted() == []
    out = h.come_back()
    assert out.wire == (
        b"RESPONSE: id=owed;real_duration=2;\r\n"
        + b"RESPONSE: id=talking;real_duration=45;result=shutdown;code=0;\r\n"
    )
    assert h.journal.undelivered() == []
    h.journal.close()


def test_cancel_ack_before_a_response_the_engine_sends_at_once(h: Harness) -> None:
    # An engine that ends a cancelled callback inside cancel(): the RESPONSE still follows the ACK.
    h.engine.cancel = lambda seq: h.engine.finish(  # type: ignore[method-assign]
        next(c.id for c in h.desk.active.values() if c.seq == seq), result="cancelled"
    )
    out = h.connect()
    h.send(out, req("a"))
    h.send(out, Cancel(id="a"), req("b"))
    h.send(out, req("c"), Cancel(id="c"), Cancel(id="c"))
    assert out.wire == (
        ack("a") + ack("a") + resp("a") + ack("b") + ack("c") + ack("c") + resp("c") + ack("c", ok=False)
    )


def test_response_follows_its_ack_when_the_engine_ends_a_callback_in_start(h: Harness) -> None:
    h.engine.start = lambda cb: h.desk.finish(  # type: ignore[method-assign]
        cb.seq, Outcome(real_duration=0, result="user1_failed")
    )
    out = h.connect()
    h.send(out, req("a"), req("b"))
    assert out.wire == ack("a") + ack("b") + resp("a") + resp("b")


def test_recover_leaves_alone_what_this_process_took(tmp_path: Path) -> None:
    # A REQUEST taken (and a RESPONSE kept) before recover() ran: neither is mistaken for a crash's leftover.
    path = tmp_path / "j.sqlite3"
    before = Journal(path)
    (old,) = before.record_requests(
        [NewCallback(id="old", peer="as1", transport="tcp", reply_addr=None, user1="1", user2="2",
                     duration=60, received_at=900.0)]
    )
    before.close()

    h = Harness(path)
    out = h.connect()
    h.send(out, req("early"), req("kept"))
    out.open = False
    h.desk.close_outlet(out)
    h.engine.finish("kept", real_duration=3)
    assert h.desk.owed == 1
    h.desk.recover()
    assert [c.id for c in h.desk.active.values()] == ["early"]
    assert h.desk.owed == 2  # "kept" once, and "old" cut by the crash
    back = h.come_back()
    assert back.wire == resp("kept", 3) + resp("old", 0)
    h.engine.finish("early", real_duration=9)
    assert back.wire.endswith(resp("early", 9))
    assert back.wire.count(b"RESPONSE: id=early;") == 1
    assert old not in h.desk.active
    h.journal.close()


def test_udp_response_not_sent_stays_owed_for_the_next_start(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite3"
    h = Harness(path)
    sent: list[bytes] = []
    udp_open = True

    def udp_send(data: bytes, addr: tuple[str, int]) -> bool:
        if udp_open:
            sent.append(data)
        return udp_open

    h.desk._udp_send = udp_send
    h.send_udp(("127.0.0.1", 7000), req("a"))
    udp_open = False  # the UDP socket closed (late in a shutdown)
    h.engine.finish("a", real_duration=6)
    assert sent == [ack("a")]
    assert [p.id for p in h.journal.undelivered()] == ["a"]
    h.journal.close()

    after = Harness(path)
    after.desk.recover()
    assert after.datagrams == [(resp("a", 6), ("127.0.0.1", 7000))]
    assert after.journal.undelivered() == []
    after.journal.close()


# --- group commit: one journal transaction per event-loop iteration -------------------------------

def committed(path: Path, table: str = "callbacks", column: str = "id") -> list[object]:
    """What another connection sees in the journal: only what was committed."""
    with contextlib.closing(sqlite3.connect(path)) as other:
        return [row[0] for row in other.execute(f"SELECT {column} FROM {table} ORDER BY seq")]


class FailingCommit:
    """Wraps the journal's sqlite3 connection: the next COMMIT fails (as a full disk would make it)."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db
        self.fail = True

    def execute(self, sql: str, *args: object) -> object:
        if sql == "COMMIT" and self.fail:
            self.fail = False
            raise sqlite3.OperationalError("database or disk is full")
        return self._db.execute(sql, *args)  # type: ignore[arg-type]

    def __getattr__(self, name: str) -> object:
        return getattr(self._db, name)


def test_group_commit_acks_every_connection_after_one_commit(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite3"
    h = Harness(path, group=True)
    seen: list[list[object]] = []  # what was committed when each ACK was written
    outs = [Outlet("as1", on_write=lambda _data: seen.append(committed(path))) for _ in range(3)]
    for i, out in enumerate(outs):
        h.desk.open_outlet(out)
        h.send(out, req(f"t{i}"))
    h.send_udp(("127.0.0.1", 7000), req("u"))
    # Recorded in one open group: nothing written, started or committed yet; one flush asked for.
    assert [out.wire for out in outs] == [b""] * 3 and h.datagrams == [] and h.engine.started == []
    assert committed(path) == [] and len(h.scheduled) == 1
    commits = h.journal.commits
    h.iteration()
    assert h.journal.commits == commits + 1
    assert [out.wire for out in outs] == [ack("t0"), ack("t1"), ack("t2")]
    assert h.datagrams == [(ack("u"), ("127.0.0.1", 7000))]
    assert seen == [["t0", "t1", "t2", "u"]] * 3
    assert [c.id for c in h.engine.started] == ["t0", "t1", "t2", "u"]
    h.journal.close()


def test_group_commit_failure_refuses_every_request_in_the_group(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "j.sqlite3"
    h = Harness(path, group=True)
    first = h.connect()
    h.send(first, req("a"))
    h.iteration()
    b_out, c_out = h.connect(), h.connect("as2")
    h.engine.finish("a", real_duration=4)  # its RESPONSE joins the group that fails
    h.send(b_out, req("b1"), req("b2"))
    h.send(c_out, req("c"))
    h.journal._db = FailingCommit(h.journal._db)  # type: ignore[assignment]
    with caplog.at_level(logging.ERROR, "mss.desk"):
        h.iteration()
    assert "journal: cannot commit 3 write(s): database or disk is full" in caplog.text
    assert b_out.wire == ack("b1", ok=False) + ack("b2", ok=False)
    assert c_out.wire == ack("c", ok=False)
    assert first.wire == ack("a") + resp("a", 4)  # never lost
    assert [c.id for c in h.engine.started] == ["a"] and h.desk.active == {}
    assert h.desk.refusals["as1", "journal"] == 2 and h.desk.refusals["as2", "journal"] == 1
    assert committed(path) == ["a"]
    # The next group is a new one.
    h.iteration()
    h.send(b_out, req("b1"))
    h.iteration()
    assert b_out.wire.endswith(ack("b1")) and committed(path) == ["a", "b1"]
    h.journal.close()


def test_group_commit_holds_a_response_until_it_is_committed(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite3"
    h = Harness(path, group=True)
    out = h.connect()
    h.send(out, req("a"))
    h.iteration()
    h.engine.finish("a", real_duration=5)
    assert out.wire == ack("a") and h.desk.owed == 1 and committed(path, "responses") == []
    h.iteration()
    assert out.wire == ack("a") + resp("a", 5) and h.desk.owed == 0
    assert committed(path, "responses") == ["a"]
    # The delivery mark goes with the next group (it asks for none): it may lag, never lead.
    assert committed(path, "responses", "delivered_at") == [None] and h.scheduled == []
    h.journal.heartbeat(1001.0)  # the next write, the heartbeat's at the latest
    h.iteration()
    assert committed(path, "responses", "delivered_at") == [1000.0]
    h.journal.close()


def test_group_commit_keeps_answers_in_order_and_counts_held_requests(tmp_path: Path) -> None:
    h = Harness(tmp_path / "j.sqlite3", max_calls=2, group=True)
    out, other = h.connect(), h.connect()
    h.send(out, req("a"))
    h.send(out, IIFError("missing parameter 'user1'", iif_id="x"))  # behind a held batch: waits its turn
    h.send(other, req("a"), req("b"), req("c"))  # "a" is held: a duplicate; "a" and "b" fill max_calls
    assert out.wire == b"" and other.wire == b""
    assert h.engine.pending == [0, 1]  # the engine counted the held "a" for "b"
    h.iteration()
    assert out.wire == ack("a") + ack("x", ok=False)
    assert other.wire == ack("a", ok=False) + ack("b") + ack("c", ok=False)
    assert h.desk.refusals["as1", "duplicate_id"] == 1 and h.desk.refusals["as1", "max_calls"] == 1
    h.journal.close()


def test_group_commit_cancel_of_a_held_request_commits_it_first(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite3"
    h = Harness(path, group=True)
    out = h.connect()
    h.send(out, req("a"))
    acks_at_cancel: list[bytes] = []
    h.engine.cancel = lambda seq: acks_at_cancel.append(out.wire)  # type: ignore[method-assign]
    h.send(out, Cancel(id="a"), req("b"))
    assert acks_at_cancel == [ack("a") + ack("a")] and committed(path) == ["a"]
    assert [c.id for c in h.engine.started] == ["a"]
    h.iteration()
    assert out.wire == ack("a") + ack("a") + ack("b")
    h.journal.close()


def test_group_commit_a_failing_start_costs_the_rest_of_the_group_nothing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    h = Harness(tmp_path / "j.sqlite3", group=True, extended=True)
    first = h.connect()
    h.send(first, req("a"))
    h.iteration()
    broken, fine = h.connect(), h.connect()
    h.engine.finish("a", real_duration=2)
    h.send(broken, req("boom"), req("after"))
    h.send(fine, req("b"))
    started = h.engine.start

    def start(callback: Callback) -> None:
        if callback.id == "boom":
            raise RuntimeError("engine bug")
        started(callback)

    h.engine.start = start  # type: ignore[method-assign]
    with caplog.at_level(logging.ERROR, "mss.desk"):
        h.iteration()
    assert first.wire == ack("a") + b"RESPONSE: id=a;real_duration=2;result=answered;code=0;\r\n"
    assert broken.wire == ack("boom") + ack("after") and fine.wire == ack("b")
    assert [c.id for c in h.engine.started] == ["a", "after", "b"]
    assert "callback boom: the engine could not start it" in caplog.text
    assert "RuntimeError: engine bug" in caplog.text
    h.iteration()  # "boom" ended at once: its RESPONSE, not a callback left hanging
    assert broken.wire.endswith(b"RESPONSE: id=boom;real_duration=0;result=user1_failed;code=0;\r\n")
    assert [c.id for c in h.desk.active.values()] == ["after", "b"]
    h.journal.close()


# --- EVENT lines ------------------------------------------------------------------------------------

def test_events_go_to_peers_that_asked_between_ack_and_response(tmp_path: Path) -> None:
    peers = (PeerServer(name="as1", host="127.0.0.1", events=True), PeerServer(name="as2", host="127.0.0.2"))
    h = Harness(tmp_path / "j.sqlite3", peers=peers)
    out1, out2 = h.connect("as1"), h.connect("as2")
    h.send(out1, req("a"))
    h.send(out2, req("b"))
    a, b = h.engine.started
    assert h.desk.wants_events(a) and not h.desk.wants_events(b)
    for state in ("user1_ringing", "user1_answered", "user2_ringing", "bridged"):
        h.desk.progress(a.seq, state)  # type: ignore[arg-type]
        h.desk.progress(b.seq, state)  # type: ignore[arg-type]
    h.engine.finish("a", real_duration=3)
    h.desk.progress(a.seq, "bridged")  # after the RESPONSE: nothing
    assert out1.wire == ack("a") + b"".join(
        f"EVENT: id=a;state={s};\r\n".encode()
        for s in ("user1_ringing", "user1_answered", "user2_ringing", "bridged")
    ) + resp("a", 3)
    assert out2.wire == ack("b")
    assert h.desk.events_sent == 4


def test_events_follow_the_as_to_its_newest_proven_connection_and_never_go_over_udp(tmp_path: Path) -> None:
    peers = (PeerServer(name="as1", host="127.0.0.1", events=True),)
    h = Harness(tmp_path / "j.sqlite3", peers=peers)
    first = h.connect()
    h.send(first, req("a"))
    h.send_udp(("127.0.0.1", 7000), req("u"))
    a, u = h.engine.started
    first.open = False
    h.desk.close_outlet(first)
    h.desk.progress(a.seq, "user1_ringing")  # no connection at all: dropped, not kept
    silent = h.connect()  # has sent nothing: not known to be the AS
    h.desk.progress(a.seq, "user1_answered")
    second = h.connect()
    h.send(second, Cancel(id="zz"))  # proves it is the AS
    h.desk.progress(a.seq, "user2_ringing")
    h.desk.progress(u.seq, "user2_ringing")
    assert silent.wire == b""
    assert second.wire == ack("zz", ok=False) + b"EVENT: id=a;state=user2_ringing;\r\n"
    assert all(not data.startswith(b"EVENT") for data, _ in h.datagrams)
