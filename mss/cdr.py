"""The CDR export behind ``mss cdr``: the journal's call detail records as CSV or JSON lines.

One row per callback that got its RESPONSE, oldest first, with the columns of
:data:`mss.journal.CDR_COLUMNS` (docs/cdr.md says what each holds). Times are ISO 8601 in UTC with
milliseconds (``2026-12-06T09:35:51.123+00:00``); a missing value is an empty CSV field or a JSON
``null``. The journal is read, never written (:func:`mss.journal.read_cdrs`, or
:func:`mss.aio.journal_pg.read_cdrs` for ``[journal] backend = postgresql``), so an export runs
beside a running mss as well as after it stopped.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from itertools import chain
from typing import TextIO

from mss.config import Config
from mss.errors import MssError
from mss.journal import CDR_COLUMNS, read_cdrs

__all__ = ["FORMATS", "TIME_COLUMNS", "export", "parse_since"]

#: Output formats: CSV with a header row, or one JSON object per line.
FORMATS = ("csv", "jsonl")

#: Columns holding a wall-clock time (epoch seconds in the journal, ISO 8601 in the export).
TIME_COLUMNS = frozenset({"requested_at", "leg1_answered_at", "leg2_answered_at", "released_at"})


def parse_since(text: str) -> datetime:
    """``--since``: an ISO 8601 date or date and time, with or without a timezone (naive means UTC).

    Raises :class:`MssError` saying what is wrong.
    """
    try:
        return datetime.fromisoformat(text.strip())
    except ValueError:
        raise MssError(
            f"--since {text!r} is not an ISO 8601 date or time (e.g. 2026-12-06 or 2026-12-06T09:30:00+01:00)"
        ) from None


def _epoch(since: datetime) -> float:
    """Epoch seconds of ``since``; a naive time is UTC."""
    return (since if since.tzinfo is not None else since.replace(tzinfo=UTC)).timestamp()


def _iso(epoch: object) -> object:
    """An epoch time as ISO 8601 in UTC, milliseconds; anything else (None) as it is."""
    if isinstance(epoch, int | float):
        return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds")
    return epoch


def _readable(row: dict[str, object]) -> dict[str, object]:
    return {name: _iso(value) if name in TIME_COLUMNS else value for name, value in row.items()}


def export(config: Config, since: datetime | None, fmt: str, out: TextIO) -> int:
    """Write the CDRs of ``config``'s journal to ``out``; returns how many rows were written.

    ``since``: only callbacks received at or after it (naive means UTC). ``fmt``: ``"csv"`` (a
    header row, then one row per CDR) or ``"jsonl"`` (one JSON object per line). Raises
    :class:`MssError` for an unknown format and :class:`~mss.errors.JournalError` (before anything
    is written) when the journal is missing or is not a journal.
    """
    if fmt not in FORMATS:
        raise MssError(f"unknown CDR format {fmt!r}: use {' or '.join(FORMATS)}")
    after = None if since is None else _epoch(since)
    if config.journal.backend == "postgresql":
        from mss.aio.journal_pg import read_cdrs as read_pg_cdrs  # asyncpg only where it is used

        assert config.journal.dsn is not None  # the config checked
        rows = read_pg_cdrs(config.journal.dsn, since=after)
    else:
        rows = read_cdrs(config.journal.path, since=after)
    first = next(rows, None)  # opens and checks the journal before anything is written
    every: Iterator[dict[str, object]] = rows if first is None else chain([first], rows)
    count = 0
    if fmt == "csv":
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(CDR_COLUMNS)
        for row in every:
            writer.writerow(["" if value is None else value for value in _readable(row).values()])
            count += 1
    else:
        for row in every:
            out.write(json.dumps(_readable(row), ensure_ascii=False, separators=(",", ":")) + "\n")
            count += 1
    return count
