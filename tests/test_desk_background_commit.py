"""The desk on a journal that commits in the background (as the PostgreSQL journal does): answers wait
for their group's commit to end, in order, and nothing taken in the meantime slips past the limits.

The journal here is the real sqlite one whose commit ends when the test says (the server's answer):
the rows are written at once, the ``done`` callbacks are held, so the desk sees exactly the timing a
journal on a server gives it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from mss.errors import JournalError
from mss.iif import CallbackResponse, Cancel
from mss.journal import InterruptedCallback, Journal, NewCallback, PendingResponse, Takeover
from tests.test_desk import Harness, ack, req


class BackgroundCommitJournal(Journal):
    """sqlite, with each commit's end reported when :meth:`answer` is called."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.in_flight: list[tuple[Callable[[JournalError | None], None], JournalError | None]] = []

    @property
    def pending(self) -> bool:
        return super().pending or bool(self.in_flight)

    def commit(self, done: Callable[[JournalError | None], None]) -> None:
        if not self.in_flight and not super().pending:
            done(None)  # nothing queued, nothing in flight: at once, as the interface says
            return
        error: JournalError | None = None
        try:
            self.flush()
        except JournalError as exc:
            error = exc
        self.in_flight.append((done, error))

    def answer(self, *, fail: bool = False) -> None:
        """The server answered the oldest commit in flight."""
        done, error = self.in_flight.pop(0)
        done(JournalError("journal: the server went away") if fail else error)


class BgHarness(Harness):
    def __init__(self, path: Path, *, max_calls: int = 1000, extended: bool = False) -> None:
        super().__init__(path, group=True, journal=BackgroundCommitJournal, max_calls=max_calls,
                         extended=extended)


@pytest.fixture
def bg(tmp_path: Path) -> Iterator[BgHarness]:
    harness = BgHarness(tmp_path / "journal.sqlite3")
    yield harness
    harness.journal.close()


def journal_of(h: BgHarness) -> BackgroundCommitJournal:
    assert isinstance(h.journal, BackgroundCommitJournal)
    return h.journal


def test_acks_wait_for_the_commit_and_keep_their_order(bg: BgHarness) -> None:
    out = bg.connect()
    bg.send(out, req("a"))
    bg.iteration()  # the flush: a commit starts
    bg.send(out, req("b"))  # taken while the first commit is in flight
    bg.iteration()
    assert out.wire == b""  # nothing before the server answered
    assert bg.engine.started == []
    journal_of(bg).answer()
    assert out.wire == ack("a")
    journal_of(bg).answer()
    assert out.wire == ack("a") + ack("b")
    assert [c.id for c in bg.engine.started] == ["a", "b"]


def test_a_refusal_during_a_commit_waits_its_turn_and_is_not_forgotten(bg: BgHarness) -> None:
    out = bg.connect()
    bg.send(out, req("a"))
    bg.iteration()
    bg.send(out, req("a"))  # the same id, its first REQUEST still in flight: refused...
    assert bg.scheduled, "a held answer asks for a flush even without a journal write"
    bg.iteration()
    journal_of(bg).answer()
    assert out.wire == ack("a")
    journal_of(bg).answer()  # the second flush's turn (nothing of its own to commit)
    assert out.wire == ack("a") + ack("a", ok=False)  # ... and written after the first one's ACK


def test_limits_count_the_requests_in_flight(tmp_path: Path) -> None:
    h = BgHarness(tmp_path / "j.sqlite3", max_calls=2)
    try:
        out = h.connect()
        h.send(out, req("a"), req("b"))
        h.iteration()
        h.send(out, req("c"))  # a and b are not active yet, but taken
        h.iteration()
        while journal_of(h).in_flight:
            journal_of(h).answer()
        assert out.wire == ack("a") + ack("b") + ack("c", ok=False)
    finally:
        h.journal.close()


def test_a_cancel_behind_its_request_in_flight_waits_for_it(bg: BgHarness) -> None:
    out = bg.connect()
    bg.send(out, req("a"), Cancel(id="a"), req("b"))
    assert bg.engine.cancelled == []  # "a" is being committed: the rest of the batch waits
    journal_of(bg).answer()
    bg.iteration()
    while journal_of(bg).in_flight:
        journal_of(bg).answer()
    assert out.wire == ack("a") + ack("a") + ack("b")
    started = {c.id: c.seq for c in bg.engine.started}
    assert bg.engine.cancelled == [started["a"]]


def test_a_lost_commit_refuses_its_requests(bg: BgHarness) -> None:
    out = bg.connect()
    bg.send(out, req("a"))
    bg.iteration()
    journal_of(bg).answer(fail=True)
    assert out.wire == ack("a", ok=False)
    assert bg.engine.started == []
    assert bg.desk.refusals["as1", "journal"] == 1


def test_a_response_waits_for_its_commit(bg: BgHarness) -> None:
    out = bg.connect()
    bg.send(out, req("a"))
    bg.iteration()
    journal_of(bg).answer()
    bg.engine.finish("a", real_duration=7)
    bg.iteration()
    assert out.wire == ack("a")
    journal_of(bg).answer()
    assert out.wire == ack("a") + b"RESPONSE: id=a;real_duration=7;\r\n"


def test_what_a_dead_node_left_is_answered_here(tmp_path: Path) -> None:
    # Rows another node left in progress, and a UDP RESPONSE it recorded and did not send, handed
    # over by the journal (on_takeover).
    h = BgHarness(tmp_path / "j.sqlite3", extended=True)
    try:
        tcp, udp, sent = h.journal.record_requests([
            NewCallback(id="t", peer="as1", transport="tcp", reply_addr=None, user1="1", user2="2",
                        duration=60, received_at=1.0),
            NewCallback(id="u", peer="as1", transport="udp", reply_addr=("127.0.0.1", 7100), user1="1",
                        user2="2", duration=60, received_at=1.0),
            NewCallback(id="s", peer="as1", transport="udp", reply_addr=("127.0.0.1", 7100), user1="1",
                        user2="2", duration=60, received_at=1.0),
        ])
        line = h.journal.record_response(sent, CallbackResponse(id="s", real_duration=4), 2.0)
        h.iteration()
        journal_of(h).answer()
        out = h.connect()
        h.desk.outlet_held(out)  # the AS reconnected (it has sent nothing yet: on trial)
        assert h.journal.on_takeover is not None
        h.journal.on_takeover(Takeover(
            node="dead",
            cut=[InterruptedCallback(seq=tcp, id="t", real_duration=12, peer="as1"),
                 InterruptedCallback(seq=udp, id="u", real_duration=0, peer="as1", transport="udp",
                                     reply_addr=("127.0.0.1", 7100))],
            owed=[PendingResponse(seq=sent, id="s", peer="as1", transport="udp",
                                  reply_addr=("127.0.0.1", 7100), line=line)],
        ))
        assert out.wire == b"" and h.datagrams == []  # the cut ones recorded first
        journal_of(h).answer()
        assert out.wire == b"RESPONSE: id=t;real_duration=12;result=shutdown;code=0;\r\n"
        assert h.datagrams == [
            (b"RESPONSE: id=s;real_duration=4;\r\n", ("127.0.0.1", 7100)),
            (b"RESPONSE: id=u;real_duration=0;result=shutdown;code=0;\r\n", ("127.0.0.1", 7100)),
        ]
        h.desk.confirm_trial(out)
        h.iteration()
        while journal_of(h).in_flight:
            journal_of(h).answer()
        assert h.journal.undelivered() == []
    finally:
        h.journal.close()


def test_the_sqlite_journal_commits_at_once(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j.sqlite3")
    try:
        said: list[JournalError | None] = []
        journal.on_queued = lambda: None
        journal.record_requests([NewCallback(id="a", peer="as1", transport="tcp", reply_addr=None,
                                             user1="1", user2="2", duration=1, received_at=1.0)])
        assert journal.pending
        journal.commit(said.append)
        assert said == [None] and not journal.pending
    finally:
        journal.close()
