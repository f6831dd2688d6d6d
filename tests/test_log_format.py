"""mss run's log lines: the cached-date formatter writes exactly what logging's own formatter writes."""

from __future__ import annotations

import logging
import re
import subprocess
import sys

from mss.cli import LOG_DATE_FORMAT, LOG_FORMAT, LogFormatter


def _record(created: float, msg: str = "callback %s: calling %s (user1)") -> logging.LogRecord:
    record = logging.LogRecord("mss.call", logging.INFO, __file__, 1, msg, ("p406", "5551001"), None)
    record.created = created
    record.msecs = int((created - int(created)) * 1000)
    return record


def test_cached_date_lines_equal_the_standard_formatters() -> None:
    """Within a second, across seconds, and when the clock steps back: the same text as
    logging.Formatter with the same format gives."""
    ours = LogFormatter()
    reference = logging.Formatter(LOG_FORMAT, LOG_DATE_FORMAT)
    base = 1_796_000_000.0
    for created in (base + 0.001, base + 0.5, base + 0.999, base + 1.0, base + 61.25, base + 3600.7,
                    base + 0.25, base - 86400.0):
        record = _record(created)
        assert ours.format(record) == reference.format(_record(created))


def test_mss_run_logging_writes_the_documented_line() -> None:
    """The handler mss run installs: ``YYYY-MM-DD HH:MM:SS.mmm LEVEL logger: message`` on stderr."""
    code = (
        "import logging; from mss.cli import _setup_logging; _setup_logging('info');"
        "log = logging.getLogger('mss.desk'); log.info('callback %s taken', 'p1');"
        "log.debug('hidden'); log.warning('late by %d ms', 12)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=True)
    lines = out.stderr.splitlines()
    stamp = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}"
    assert len(lines) == 2
    assert re.fullmatch(stamp + r" INFO mss\.desk: callback p1 taken", lines[0])
    assert re.fullmatch(stamp + r" WARNING mss\.desk: late by 12 ms", lines[1])
