"""The CDR export (``mss cdr``): CSV and JSON lines from a real journal file, filtered by the time the
callback was received, read-only, beside a writer that holds the journal open."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from mss.cdr import FORMATS, export, parse_since
from mss.config import Config, check_text
from mss.errors import JournalError, MssError
from mss.iif import CallbackResponse
from mss.journal import CDR_COLUMNS, Cdr, Journal, NewCallback
from mss.quality import LegQuality

CONFIG = """
[callback]
listen_port = 5080
external_line_mode = no
default_caller = 4930100

[sip]
pss_host = 127.0.0.1

[peer_servers]
as1 = 127.0.0.1

[journal]
path = cdr-test.sqlite3
"""

#: 2026-12-06T09:00:00Z, and the callbacks received 0, 1 and 2 hours later.
T9 = datetime(2026, 12, 6, 9, 0, tzinfo=UTC).timestamp()

QUALITY = LegQuality(packets_in=1500, bytes_in=258000, packets_out=1620, bytes_out=278640, lost=2,
                     jitter_mean_ms=0.75, jitter_max_ms=2.5, mos=4.4)


def config_in(tmp_path: Path) -> Config:
    checked = check_text(CONFIG, base_dir=tmp_path)
    assert checked.errors == [] and checked.config is not None
    return checked.config


def add(journal: Journal, cb_id: str, received_at: float, cdr: Cdr, real_duration: int = 0) -> None:
    (seq,) = journal.record_requests([NewCallback(
        id=cb_id, peer="as1", transport="tcp", reply_addr=None, user1="100", user2="101", duration=60,
        received_at=received_at,
    )])
    journal.record_response(seq, CallbackResponse(id=cb_id, real_duration=real_duration),
                            at=cdr.released_at, cdr=cdr)


@pytest.fixture
def config(tmp_path: Path) -> Iterator[Config]:
    """A journal with three CDRs: an answered call, a busy user1 and a cancelled one."""
    config = config_in(tmp_path)
    journal = Journal(config.journal.path)
    add(journal, "answered", T9, Cdr(
        caller="4930100", leg1_call_id="c1", leg2_call_id="c2", leg1_code=200, leg2_code=200, codec="PCMU",
        leg1_answered_at=T9 + 3, leg2_answered_at=T9 + 9.5, released_at=T9 + 39.5, released_by="user2",
        result="answered", reason="user2 hung up", leg1=QUALITY, leg2=QUALITY,
    ), real_duration=30)
    add(journal, "busy", T9 + 3600, Cdr(
        caller="4930100", leg1_code=486, released_at=T9 + 3602, released_by="user1", result="user1_busy",
        reason="486 Busy Here",
    ))
    add(journal, "cancelled", T9 + 7200, Cdr(
        caller="4930100", released_at=T9 + 7201, released_by="as", result="cancelled", reason="CANCEL; é",
    ))
    journal.close()
    yield config


def run(config: Config, fmt: str, since: datetime | None = None) -> tuple[int, str]:
    out = io.StringIO()
    count = export(config, since, fmt, out)
    return count, out.getvalue()


def test_csv_has_a_header_and_one_row_per_cdr(config: Config) -> None:
    count, text = run(config, "csv")
    rows = list(csv.reader(io.StringIO(text)))
    assert count == 3 and len(rows) == 4
    assert rows[0] == list(CDR_COLUMNS)
    first = dict(zip(rows[0], rows[1], strict=True))
    assert {k: first[k] for k in ("id", "user1", "user2", "caller", "codec", "result", "real_duration")} == {
        "id": "answered", "user1": "100", "user2": "101", "caller": "4930100", "codec": "PCMU",
        "result": "answered", "real_duration": "30",
    }
    assert (first["requested_at"], first["leg2_answered_at"], first["released_at"]) == (
        "2026-12-06T09:00:00.000+00:00", "2026-12-06T09:00:09.500+00:00", "2026-12-06T09:00:39.500+00:00"
    )
    quality = ("leg1_packets_in", "leg1_lost", "leg1_jitter_mean_ms", "leg2_mos")
    assert [first[k] for k in quality] == ["1500", "2", "0.75", "4.4"]
    busy = dict(zip(rows[0], rows[2], strict=True))
    assert [busy[k] for k in ("id", "leg1_code", "leg2_code", "leg1_answered_at")] == ["busy", "486", "", ""]
    assert busy["leg1_packets_in"] == busy["leg2_mos"] == ""  # unanswered legs: no quality
    assert [r[CDR_COLUMNS.index("id")] for r in rows[1:]] == ["answered", "busy", "cancelled"]


def test_jsonl_keeps_types_and_nulls(config: Config) -> None:
    count, text = run(config, "jsonl")
    lines = text.splitlines()
    assert count == 3 and len(lines) == 3 and text.endswith("\n")
    first, busy, cancelled = (json.loads(line) for line in lines)
    assert list(first) == list(CDR_COLUMNS)
    quality = ("real_duration", "leg1_packets_out", "leg1_mos", "leg2_jitter_max_ms")
    assert [first[k] for k in quality] == [30, 1620, 4.4, 2.5]
    assert first["requested_at"] == "2026-12-06T09:00:00.000+00:00"
    assert (busy["leg2_code"], busy["leg1_packets_in"], busy["leg1_mos"]) == (None, None, None)
    assert cancelled["reason"] == "CANCEL; é"


@pytest.mark.parametrize(
    ("since", "ids"),
    [
        (None, ["answered", "busy", "cancelled"]),
        (datetime(2026, 12, 6, 9, 0), ["answered", "busy", "cancelled"]),  # naive: UTC, inclusive
        (datetime(2026, 12, 6, 9, 0, 1), ["busy", "cancelled"]),
        (datetime(2026, 12, 6, 10, 0, tzinfo=UTC), ["busy", "cancelled"]),
        # 11:00 at UTC+01:00 is 10:00 UTC
        (datetime(2026, 12, 6, 11, 0, tzinfo=timezone(timedelta(hours=1))), ["busy", "cancelled"]),
        (datetime(2026, 12, 6, 11, 0), ["cancelled"]),
        (datetime(2026, 12, 7), []),
    ],
)
def test_since_filters_on_the_time_the_callback_was_received(
    config: Config, since: datetime | None, ids: list[str]
) -> None:
    count, text = run(config, "jsonl", since)
    assert count == len(ids)
    assert [json.loads(line)["id"] for line in text.splitlines()] == ids
    count, text = run(config, "csv", since)
    assert count == len(ids) and len(text.splitlines()) == len(ids) + 1  # the header even when empty


def test_parse_since_takes_iso_8601_and_says_what_is_wrong() -> None:
    assert parse_since("2026-12-06") == datetime(2026, 12, 6)
    assert parse_since("2026-12-06T09:30:00Z") == datetime(2026, 12, 6, 9, 30, tzinfo=UTC)
    assert parse_since(" 2026-12-06 10:30+01:00 ") == datetime(2026, 12, 6, 9, 30, tzinfo=UTC)
    with pytest.raises(MssError, match=r"^--since 'yesterday' is not an ISO 8601 date or time"):
        parse_since("yesterday")


def test_an_unknown_format_is_refused(config: Config) -> None:
    assert FORMATS == ("csv", "jsonl")
    with pytest.raises(MssError, match=r"^unknown CDR format 'xml': use csv or jsonl$"):
        run(config, "xml")


def test_a_missing_journal_is_a_clear_error_and_nothing_is_written(tmp_path: Path) -> None:
    config = config_in(tmp_path)
    out = io.StringIO()
    missing = r"cdr-test\.sqlite3 does not exist \(is \[journal\] path right\?\)"
    with pytest.raises(JournalError, match=missing):
        export(config, None, "csv", out)
    assert out.getvalue() == ""
    assert not Path(config.journal.path).exists()  # and none was made


def test_a_file_that_is_not_a_journal_is_a_clear_error(tmp_path: Path) -> None:
    config = config_in(tmp_path)
    db = sqlite3.connect(config.journal.path)
    db.execute("CREATE TABLE something (x)")
    db.close()
    with pytest.raises(JournalError, match="holds no CDR table: not an mss journal"):
        run(config, "csv")
    Path(config.journal.path).write_bytes(b"not a database at all, just some text " * 100)
    with pytest.raises(JournalError, match="cannot read journal"):
        run(config, "jsonl")


def test_an_empty_journal_exports_the_header_only(tmp_path: Path) -> None:
    config = config_in(tmp_path)
    Journal(config.journal.path).close()
    assert run(config, "csv") == (0, ",".join(CDR_COLUMNS) + "\n")
    assert run(config, "jsonl") == (0, "")


def test_the_export_writes_nothing_to_the_journal(config: Config) -> None:
    path = Path(config.journal.path)
    before = hashlib.sha256(path.read_bytes()).hexdigest()
    assert run(config, "csv")[0] == 3
    assert hashlib.sha256(path.read_bytes()).hexdigest() == before
    # sqlite's WAL reader makes the shared-memory index beside a journal left without one, and an
    # empty write-ahead log: nothing is written to either
    wal = path.with_name(path.name + "-wal")
    assert not wal.exists() or wal.stat().st_size == 0


def test_the_export_runs_beside_a_writer_holding_the_journal(config: Config) -> None:
    """As beside a running mss: its journal open in WAL mode with a write transaction in progress
    (an open group). The export is not held up and sees what was committed, not the open group."""
    journal = Journal(config.journal.path)
    try:
        journal.on_queued = lambda: None  # group commit, as the service runs it
        add(journal, "committed", T9 + 9000, Cdr(caller="4930100", released_at=T9 + 9001, released_by="as",
                                                 result="cancelled", reason="CANCEL"))
        journal.flush()
        add(journal, "in-flight", T9 + 9100, Cdr(caller="4930100", released_at=T9 + 9101, released_by="as",
                                                 result="cancelled", reason="CANCEL"))
        assert journal.pending  # the writer holds its write transaction open
        count, text = run(config, "jsonl")
        assert count == 4
        assert [json.loads(line)["id"] for line in text.splitlines()][-1] == "committed"
        journal.flush()
        assert [json.loads(line)["id"] for line in run(config, "jsonl")[1].splitlines()][-2:] == [
            "committed", "in-flight"
        ]
    finally:
        journal.close()


def test_many_cdrs_are_read_in_batches(tmp_path: Path) -> None:
    config = config_in(tmp_path)
    journal = Journal(config.journal.path)
    journal.on_queued = lambda: None
    for i in range(1234):  # more than two read batches
        add(journal, f"cb{i}", T9 + i, Cdr(caller="4930100", released_at=T9 + i + 1, released_by="user1",
                                           result="user1_busy", reason="486"))
    journal.flush()
    journal.close()
    count, text = run(config, "jsonl", datetime(2026, 12, 6, 9, 0, 34))
    ids = [json.loads(line)["id"] for line in text.splitlines()]
    assert count == 1200 and ids == [f"cb{i}" for i in range(34, 1234)]
