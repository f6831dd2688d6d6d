"""Workers: each worker's share of the config, the restart backoff, and the journal they share (two
Journal objects on one file are two workers: sqlite's locking is the real one)."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from mss.config import check_text
from mss.iif import CallbackResponse
from mss.journal import Cdr, Journal, NewCallback
from mss.quality import LegQuality
from mss.workers import Backoff, rtp_slice, worker_config, worker_socket

CONFIG = """
[callback]
listen_port = 5080
external_line_mode = no
default_caller = 5550100
workers = {workers}
[sip]
local_port = 5070
pss_host = 127.0.0.1
[rtp]
port_min = 30000
port_max = 30103
[peer_servers]
as1 = 127.0.0.1
[metrics]
listen = 127.0.0.1:9100
[control]
socket = /run/mss/mss.sock
"""


def new(cb_id: str, peer: str = "as1") -> NewCallback:
    return NewCallback(id=cb_id, peer=peer, transport="tcp", reply_addr=None, user1="100", user2="101",
                       duration=60, received_at=1000.0)


def test_rtp_slices_are_even_disjoint_and_cover_the_range() -> None:
    slices = [rtp_slice(30000, 30103, i, 3) for i in range(3)]
    assert slices == [(30000, 30033), (30034, 30067), (30068, 30103)]
    assert all(low % 2 == 0 for low, _ in slices)
    assert rtp_slice(30000, 30103, 0, 1) == (30000, 30103)
    with pytest.raises(ValueError, match="worker 3 is not one of 3"):
        rtp_slice(30000, 30103, 3, 3)


def test_worker_config_moves_sip_rtp_control_and_metrics() -> None:
    config = check_text(CONFIG.format(workers=2)).config
    assert config is not None
    one = worker_config(config, 1)
    assert one.sip.local_port == 5071
    assert (one.rtp.port_min, one.rtp.port_max) == (30052, 30103)
    assert one.operations.control_socket == worker_socket("/run/mss/mss.sock", 1) == "/run/mss/mss.sock.1"
    assert one.operations.metrics_listen == ("127.0.0.1", 9101)
    assert one.callback == config.callback and one.journal == config.journal  # shared
    zero = worker_config(config, 0)
    assert zero.sip.local_port == 5070 and (zero.rtp.port_min, zero.rtp.port_max) == (30000, 30051)
    single = check_text(CONFIG.format(workers=1)).config
    assert single is not None and worker_config(single, 0) is single


def test_workers_config_is_checked() -> None:
    result = check_text(CONFIG.format(workers=0))
    assert any(e.key == "workers" for e in result.errors)
    crowded = CONFIG.format(workers=2).replace("port_max = 30103", "port_max = 30005")
    result = check_text(crowded)
    assert [str(e) for e in result.errors if e.key == "workers"] == [
        "[callback] workers: 2 workers cannot each have a relay session in [rtp] 30000..30005 "
        "(4 ports a session)"
    ]
    high = CONFIG.format(workers=2).replace("local_port = 5070", "local_port = 65535")
    assert any("beyond 65535" in str(e) for e in check_text(high).errors)


def test_backoff_doubles_while_dying_young_and_starts_over_after_a_healthy_run() -> None:
    backoff = Backoff(first=0.5, ceiling=4.0, healthy=30.0)
    assert [backoff.delay(0.0, 1.0) for _ in range(5)] == [0.5, 1.0, 2.0, 4.0, 4.0]
    assert backoff.delay(100.0, 131.0) == 0.5


@pytest.fixture
def two(tmp_path: Path) -> Iterator[tuple[Journal, Journal]]:
    path = tmp_path / "journal.sqlite3"
    a, b = Journal(path, worker=0, workers=2), Journal(path, worker=1, workers=2)
    yield a, b
    a.close()
    b.close()


def test_a_worker_settles_only_its_own_interrupted_callbacks(two: tuple[Journal, Journal]) -> None:
    a, b = two
    (sa,) = a.record_requests([new("a1")])
    (sb,) = b.record_requests([new("b1")])
    a.mark_bridged(sa, 2000.0)
    b.mark_bridged(sb, 2000.0)
    a.heartbeat(2010.0)
    b.heartbeat(2030.0)  # each talk time up to its own worker's heartbeat
    assert [(c.id, c.real_duration) for c in a.interrupted()] == [("a1", 10)]
    assert [(c.id, c.real_duration) for c in b.interrupted()] == [("b1", 30)]


def test_worker_zero_also_settles_workers_that_no_longer_exist(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite3"
    gone = Journal(path, worker=2, workers=3)
    gone.record_requests([new("left")])
    gone.close()
    zero, one = Journal(path, worker=0, workers=2), Journal(path, worker=1, workers=2)
    try:
        assert [c.id for c in zero.interrupted()] == ["left"]
        assert one.interrupted() == []
    finally:
        zero.close()
        one.close()


def test_claims_let_one_worker_write_a_kept_response(two: tuple[Journal, Journal]) -> None:
    a, b = two
    (seq,) = a.record_requests([new("x")])
    a.record_response(seq, CallbackResponse(id="x", real_duration=3), 2000.0, claim=True)
    assert b.owed_to("as1", 10) == []  # born claimed by worker 0
    assert not b.claim_response(seq)
    a.release_response(seq)  # worker 0 keeps it: no connection of as1 there
    (owed,) = b.owed_to("as1", 10)
    assert owed.seq == seq and owed.line == "RESPONSE: id=x;real_duration=3;"
    assert b.claim_response(seq)
    assert not a.claim_response(seq)  # exactly one wins
    assert a.owed_to("as1", 10) == []
    b.mark_delivered(seq, 2001.0)
    b.release_response(seq)  # a delivered row stays as it is
    assert not a.claim_response(seq) and a.owed_to("as1", 10) == []


def test_a_restarted_worker_releases_the_claims_of_its_dead_process(two: tuple[Journal, Journal]) -> None:
    a, b = two
    seqs = b.record_requests([new("p"), new("q")])
    for seq, cb_id in zip(seqs, "pq", strict=True):
        b.record_response(seq, CallbackResponse(id=cb_id, real_duration=0), 2000.0, claim=True)
    assert a.owed_to("as1", 10) == []
    assert b.release_claims() == 2
    assert [p.id for p in a.owed_to("as1", 10)] == ["p", "q"]
    assert [p.id for p in a.owed_to("as1", 1)] == ["p"]  # bounded
    assert a.owed_to("as2", 10) == []


def _rows(path: Path, sql: str) -> list[tuple[object, ...]]:
    with sqlite3.connect(path) as db:
        return db.execute(sql).fetchall()


def test_a_workers_group_holds_no_lock_until_its_flush(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite3"
    a, b = Journal(path, worker=0, workers=2), Journal(path, worker=1, workers=2)
    try:
        flushes: list[int] = []
        a.on_queued = lambda: flushes.append(1)
        s1, s2 = a.record_requests([new("g1"), new("g2")])
        a.mark_bridged(s1, 2000.0)
        assert flushes == [1] and a.pending
        assert _rows(path, "SELECT id FROM callbacks") == []  # queued, not written
        (sb,) = b.record_requests([new("b1")])  # b writes meanwhile: a holds no lock
        assert len({s1, s2, sb}) == 3  # each worker takes keys from its own block
        a.flush()
        assert not a.pending and a.commits >= 1
        assert _rows(path, "SELECT id, worker, bridged_at FROM callbacks ORDER BY id") == [
            ("b1", 1, None), ("g1", 0, 2000.0), ("g2", 0, None)]
        # A RESPONSE queued, then a claim: the claim commits the queue first, so it sees the row.
        a.record_response(s2, CallbackResponse(id="g2", real_duration=0), 2001.0)
        assert a.claim_response(s2)
        assert _rows(path, f"SELECT claimed_by, line FROM responses WHERE seq = {s2}") == [
            (0, "RESPONSE: id=g2;real_duration=0;")]
        a.release_response(s2)
        a.flush()
        assert [p.id for p in b.owed_to("as1", 10)] == ["g2"]
    finally:
        a.close()
        b.close()


def test_a_workers_cdr_is_the_single_process_one(tmp_path: Path) -> None:
    quality = LegQuality(packets_in=50, bytes_in=8600, packets_out=51, bytes_out=8772, lost=1,
                         jitter_mean_ms=0.25, jitter_max_ms=0.5, mos=4.4)
    cdr = Cdr(caller="mss", leg1_call_id="c1", leg2_call_id="c2", leg1_code=200, leg2_code=200,
              codec="PCMU", leg1_answered_at=1001.0, leg2_answered_at=1002.0, released_at=1010.0,
              released_by="user2", result="answered", reason="BYE", leg1=quality, leg2=None)
    rows = []
    for name, worker in (("single", None), ("worker", 1)):
        journal = Journal(tmp_path / f"{name}.sqlite3", worker=worker, workers=2)
        try:
            journal.on_queued = lambda: None
            (seq,) = journal.record_requests([new("c")])
            journal.flush()
            journal.record_response(seq, CallbackResponse(id="c", real_duration=8), 1010.0, cdr)
            journal.flush()
            row = journal.cdr("c")
            assert row is not None
            rows.append({k: v for k, v in row.items() if k != "seq"})
        finally:
            journal.close()
    assert rows[0] == rows[1]
    assert rows[1]["leg1_mos"] == 4.4 and rows[1]["leg2_mos"] is None and rows[1]["requested_at"] == 1000.0


def test_single_process_journal_makes_no_claims(tmp_path: Path) -> None:
    j = Journal(tmp_path / "journal.sqlite3")
    try:
        assert j.worker is None
        (seq,) = j.record_requests([new("s")])
        j.record_response(seq, CallbackResponse(id="s", real_duration=0), 2000.0)
        (owed,) = j.undelivered()
        assert owed.seq == seq
        assert [c.id for c in j.interrupted()] == []
    finally:
        j.close()


def test_a_workers_log_lines_name_it() -> None:
    import json
    import logging

    from mss.cli import WORKER_LOG_FORMAT, LogFormatter, _WorkerField
    from mss.logjson import JsonFormatter

    record = logging.LogRecord("mss.desk", logging.INFO, __file__, 1, "callback %s ended", ("x",), None)
    assert _WorkerField(1).filter(record)
    text = LogFormatter(WORKER_LOG_FORMAT).format(record)
    assert text.endswith(" INFO worker=1 mss.desk: callback x ended")
    line = json.loads(JsonFormatter().format(record))
    assert (line["worker"], line["callback"], line["msg"]) == (1, "x", "callback x ended")
