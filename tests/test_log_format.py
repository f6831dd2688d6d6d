"""mss run's log lines: the cached-date formatter writes exactly what logging's own formatter writes."""

from __future__ import annotations

import json
import logging
import re
import signal
import subprocess
import sys
from pathlib import Path

from mss.cli import LOG_DATE_FORMAT, LOG_FORMAT, LogFormatter
from mss_peers.net import free_port


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


# --- [log] format = json ----------------------------------------------------------------------------


def test_json_lines_carry_the_fields_and_the_callback() -> None:
    from mss.logjson import JsonFormatter

    formatter = JsonFormatter()
    line = formatter.format(_record(1_796_000_000.25))
    assert json.loads(line) == {
        "ts": "2026-11-30T00:53:20.250Z", "level": "info", "logger": "mss.call",
        "msg": "callback p406: calling 5551001 (user1)", "callback": "p406",
    }
    second = logging.LogRecord("mss.desk", logging.INFO, __file__, 1, "%s: %d%% callback %s taken",
                               ("as1", 5, "cb-3"), None)
    assert json.loads(formatter.format(second))["callback"] == "cb-3"
    prose = logging.LogRecord("mss", logging.ERROR, __file__, 1, "callback call cannot go from %s", ("x",),
                              None)
    assert "callback" not in json.loads(formatter.format(prose))
    plain = logging.LogRecord("mss", logging.WARNING, __file__, 1, "late by %d ms", (12,), None)
    assert set(json.loads(formatter.format(plain))) == {"ts", "level", "logger", "msg"}
    given = logging.LogRecord("mss.desk", logging.INFO, __file__, 1, "taken", (), None)
    given.callback = "cb-9"
    given.worker = 2
    assert json.loads(formatter.format(given))["callback"] == "cb-9"
    assert json.loads(formatter.format(given))["worker"] == 2


def test_json_lines_stay_one_line_with_a_traceback() -> None:
    from mss.logjson import JsonFormatter

    try:
        raise ValueError("bad\nthing")
    except ValueError:
        record = logging.LogRecord("mss", logging.ERROR, __file__, 1, "failed:\n%s", ("two lines",),
                                   sys.exc_info())
    line = JsonFormatter().format(record)
    assert "\n" not in line
    parsed = json.loads(line)
    assert parsed["msg"] == "failed:\ntwo lines"
    assert parsed["exc"].startswith("Traceback") and "ValueError: bad\nthing" in parsed["exc"]


def test_mss_run_logs_json_lines_when_configured(tmp_path: Path) -> None:
    """A real ``mss run`` with ``[log] format = json``: every line it writes is one JSON object."""
    config = tmp_path / "config.ini"
    ports = [free_port() for _ in range(3)]
    config.write_text(
        f"[callback]\nlisten_port = {ports[0]}\nexternal_line_mode = no\ndefault_caller = 5550100\n"
        f"[sip]\nlocal_port = {ports[1]}\npss_host = 127.0.0.1\npss_port = {ports[2]}\n"
        "[rtp]\nport_min = 16900\nport_max = 16919\n"
        "[peer_servers]\nas1 = 127.0.0.1\n[journal]\npath = journal.sqlite3\n[control]\nsocket =\n"
        "[log]\nformat = json\n"
    )
    process = subprocess.Popen([sys.executable, "-m", "mss", "run", "--config", str(config)],
                               cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert process.stderr is not None
        lines = []
        for _ in range(50):  # bounded: start-up writes about ten lines
            line = process.stderr.readline()
            if not line:
                break
            lines.append(line)
            if "mss ready" in line:
                break
        process.send_signal(signal.SIGTERM)
        _, rest = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(5)
    records = [json.loads(line) for line in [*lines, *rest.splitlines()] if line.strip()]
    assert process.returncode == 0
    assert {"mss ready", "mss stopped"} <= {r["msg"] for r in records}
    for record in records:
        assert {"ts", "level", "logger", "msg"} <= set(record)
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", record["ts"])
