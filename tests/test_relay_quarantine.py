"""The restart quarantine: the journal keeps each callback's relay ports, and a restarted call engine
keeps the ports of the callbacks a crash cut out of use for a while (their phones may still be
sending to them, and a new call given those ports would hear them)."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

import pytest

from mss.aio.calls import RESTART_QUARANTINE, CallEngine
from mss.config import load
from mss.desk import CallbackDesk
from mss.errors import PortsExhausted
from mss.iif import CallbackResponse
from mss.journal import Journal, NewCallback
from mss_peers.net import free_port

NOW = 1_800_000_000.0  # a wall-clock time


def _request(i: int, at: float) -> NewCallback:
    return NewCallback(id=f"c{i}", peer="as1", transport="tcp", reply_addr=None, user1="100",
                       user2="101", duration=60, received_at=at)


def test_ports_of_callbacks_cut_by_a_crash_stay_quarantined_across_a_second_restart(
    tmp_path: Path,
) -> None:
    journal = Journal(tmp_path / "journal.sqlite3")
    try:
        seqs = journal.record_requests([_request(i, NOW) for i in range(3)])
        for i, seq in enumerate(seqs):
            journal.record_ports(seq, (30000 + 4 * i, 30002 + 4 * i))
        journal.record_response(seqs[0], CallbackResponse(id="c0", real_duration=5), NOW)  # ended: BYE sent
        journal.heartbeat(NOW + 1)  # then the process was killed
        cut = [30004, 30006, 30008, 30010]
        held = journal.quarantined_ports(NOW + 5, 60)  # the restart, 4 s later
        assert sorted(held) == [(port, NOW + 65) for port in cut]
        for i, seq in enumerate(seqs[1:], 1):  # it answers them (recover), and is killed 10 s later
            journal.record_response(seq, CallbackResponse(id=f"c{i}", real_duration=0), NOW + 5)
        journal.heartbeat(NOW + 15)
        assert sorted(journal.quarantined_ports(NOW + 16, 60)) == [(port, NOW + 65) for port in cut]
        assert journal.quarantined_ports(NOW + 65, 60) == []  # the period is over
    finally:
        journal.close()


def test_no_quarantine_after_a_clean_stop_or_a_long_outage(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "journal.sqlite3")
    try:
        done, cut = journal.record_requests([_request(0, NOW), _request(1, NOW)])
        journal.record_ports(done, (30000, 30002))
        journal.record_ports(cut, (30004, 30006))
        journal.record_response(done, CallbackResponse(id="c0", real_duration=5), NOW)
        journal.heartbeat(NOW + 1)
        # mss was down longer than the period: the phones of the cut call gave up long ago
        assert journal.quarantined_ports(NOW + 1 + 61, 60) == []
    finally:
        journal.close()


def test_the_ports_table_forgets_finished_callbacks(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "journal.sqlite3")
    try:
        live = journal.record_requests([_request(0, NOW)])[0]
        journal.record_ports(live, (30000, 30002))
        for i in range(1, 200):
            seq = journal.record_requests([_request(i, NOW)])[0]
            journal.record_ports(seq, (30004, 30006))
            journal.record_response(seq, CallbackResponse(id=f"c{i}", real_duration=1), NOW)
        rows = journal._db.execute("SELECT seq FROM relay_ports ORDER BY seq").fetchall()
        assert len(rows) <= 3 and rows[0][0] == live  # a call in progress is never forgotten
    finally:
        journal.close()


def _steps_of_recording_ports(journal: Journal, in_progress: int, first: int) -> int:
    """sqlite VM steps of one record_ports() with ``in_progress`` callbacks active (each with its
    ports recorded) and as many ended."""
    for i in range(first, first + in_progress):
        ended, live = journal.record_requests([_request(2 * i, NOW), _request(2 * i + 1, NOW)])
        journal.record_ports(ended, (30000, 30002))
        journal.record_ports(live, (30004, 30006))
        journal.record_response(ended, CallbackResponse(id=f"c{2 * i}", real_duration=1), NOW)
    seq = journal.record_requests([_request(2 * (first + in_progress), NOW)])[0]
    steps = [0]

    def count() -> int:
        steps[0] += 1
        return 0

    journal._db.set_progress_handler(count, 1)
    try:
        journal.record_ports(seq, (30008, 30010))
    finally:
        journal._db.set_progress_handler(None, 1)
    return steps[0]


def test_recording_ports_costs_the_same_with_many_calls_in_progress(tmp_path: Path) -> None:
    """record_ports() runs once a callback: its work must not grow with the calls in progress (a
    sweep for rows to forget scanned every one of them when there was nothing to forget). The
    table still forgets every ended callback."""
    journal = Journal(tmp_path / "journal.sqlite3")
    try:
        few = _steps_of_recording_ports(journal, 10, 0)
        many = _steps_of_recording_ports(journal, 600, 10)
        assert many < few * 2
        rows = journal._db.execute("SELECT count(*) FROM relay_ports").fetchone()[0]
        assert rows == 610 + 2  # the calls in progress (and the two measured), no ended one
    finally:
        journal.close()


def test_a_restart_forgets_the_ports_no_longer_needed(tmp_path: Path) -> None:
    """Rows whose quarantine is over, of callbacks that have ended since, go at the next start."""
    journal = Journal(tmp_path / "journal.sqlite3")
    try:
        cut = journal.record_requests([_request(0, NOW)])[0]
        journal.record_ports(cut, (30000, 30002))
        journal.heartbeat(NOW)
        assert journal.quarantined_ports(NOW + 1, 60) == [(30000, NOW + 61), (30002, NOW + 61)]
        journal.record_response(cut, CallbackResponse(id="c0", real_duration=0), NOW + 1)
        assert journal._db.execute("SELECT count(*) FROM relay_ports").fetchone()[0] == 1  # quarantined
        assert journal.quarantined_ports(NOW + 62, 60) == []
        assert journal._db.execute("SELECT count(*) FROM relay_ports").fetchone()[0] == 0
    finally:
        journal.close()


def _config(tmp_path: Path, port_min: int, port_max: int) -> Path:
    path = tmp_path / "config.ini"
    path.write_text(
        "[callback]\nlisten_host = 127.0.0.1\nlisten_port = 5080\nexternal_line_mode = no\n"
        "default_caller = 5550000\n"
        f"[sip]\nlocal_host = 127.0.0.1\nlocal_port = {free_port()}\npss_host = 127.0.0.1\n"
        f"pss_port = {free_port()}\n"
        f"[rtp]\nhost = 127.0.0.1\nport_min = {port_min}\nport_max = {port_max}\n"
        "[peer_servers]\nas1 = 127.0.0.1\n"
        f"[journal]\npath = {tmp_path / 'journal.sqlite3'}\n"
    )
    return path


def test_a_restarted_engine_keeps_the_cut_calls_ports_out_of_use(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    asyncio.run(_restart(tmp_path, caplog))


async def _restart(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    base = 24000 + (int(time.time() * 1000) % 2000) // 16 * 16
    cfg = load(_config(tmp_path, base, base + 15))  # 8 pairs: 4 sessions
    journal = Journal(cfg.journal.path)
    cut = journal.record_requests([_request(0, time.time() - 10)])[0]
    journal.record_ports(cut, (base + 4, base + 10))  # the previous process was killed mid-call
    journal.heartbeat(time.time() - 2)
    desk = CallbackDesk(journal, max_calls=10, extended_response=False, udp_send=lambda d, a: None,
                        wall_clock=time.time)
    engine = CallEngine(cfg, desk)
    desk.engine = engine
    caplog.set_level(logging.WARNING, logger="mss.call")
    try:
        await engine.open()
        desk.recover()  # what the service does next: the cut callback gets its RESPONSE
        assert engine.relay is not None
        assert engine.relay.quarantined == 2
        assert engine.relay.available == 3 and engine.refusal(2) is None and engine.refusal(3)
        assert any("2 RTP port pair(s)" in r.getMessage() for r in caplog.records)
        sessions = [engine.relay.open_session() for _ in range(3)]
        used = {port for s in sessions for port in (s.a_port, s.b_port)}
        assert used == {base, base + 2, base + 6, base + 8, base + 12, base + 14}
        with pytest.raises(PortsExhausted):
            engine.relay.open_session()
        assert engine.refusal(0) == "no RTP ports left (4 relay sessions)"  # admission knows
        assert RESTART_QUARANTINE >= 30  # long enough for a phone's user to give up on silence
    finally:
        await engine.close()
        journal.close()
