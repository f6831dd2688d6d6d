"""The `mss` command: check-config (exit 0 / 2, naming section, key and reason), run's start-up failures,
callback's usage errors; `python -m mss` and the installed `mss` script are the same program."""

from __future__ import annotations

import csv
import io
import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from mss import __version__
from mss.cli import main
from tests.test_iif_server import LOCAL, config_text, free_port

ROOT = Path(__file__).parent.parent
SCRIPT = Path(sys.executable).parent / "mss"


def mss(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mss", *args], capture_output=True, text=True, timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


# --- check-config ---------------------------------------------------------------------------------

def test_check_config_bundled_example() -> None:
    done = mss("check-config", "--config", str(ROOT / "config.ini"))
    assert (done.returncode, done.stdout, done.stderr) == (0, f"{ROOT / 'config.ini'}: ok\n", "")


def test_check_config_installed_script() -> None:
    assert SCRIPT.exists()
    done = subprocess.run([str(SCRIPT), "check-config", "--config", "config.ini"], cwd=ROOT,
                          capture_output=True, text=True, timeout=30)
    assert (done.returncode, done.stdout) == (0, "config.ini: ok\n")


def test_check_config_default_path_is_config_ini(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["check-config"]) == 2
    assert capsys.readouterr().err == (
        "config.ini: error: [file]: cannot read config.ini: No such file or directory\n"
    )
    (tmp_path / "config.ini").write_text((ROOT / "config.ini").read_text())
    assert main(["check-config"]) == 0
    assert capsys.readouterr().out == "config.ini: ok\n"


def test_check_config_error_exit_2(tmp_path: Path) -> None:
    text = (ROOT / "config.ini").read_text().replace("listen_port = 5080", "listen_port = 99999")
    path = tmp_path / "bad.ini"
    path.write_text(text)
    done = mss("check-config", "--config", str(path))
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr == f"{path}: error: [callback] listen_port: 99999 is outside 1..65535\n"


@pytest.mark.parametrize(
    ("old", "new", "error"),
    [
        ("listen_port = 5080 ", "listen_port = ", "[callback] listen_port: is required"),
        ("listen_port = 5080", "listen_port = 0", "[callback] listen_port: 0 is outside 1..65535"),
        ("audio_codecs = PCMU, PCMA, G729", "audio_codecs = PCMU, G722",
         "[callback] audio_codecs: unknown codec 'G722' (known: PCMU, PCMA, G729)"),
        ("audio_codecs = PCMU, PCMA, G729", "audio_codecs = G729, PCMU, G729",
         "[callback] audio_codecs: a codec is listed twice"),
        ("external_line_mode = yes", "external_line_mode = no",
         "[callback] default_caller: is required when external_line_mode = no"),
        ("port_min = 30000", "port_min = 50000",
         "[rtp] port_max: port_min..port_max (50000..40000) must hold at least one session (4 ports)"),
        ("port_min = 30000", "port_min = 30001", "[rtp] port_min: 30001 is odd (RTP ports are even)"),
        ("as1 = 127.0.0.1 ", "; as1 = 127.0.0.1 ",
         "[peer_servers]: no peer server listed: nobody could order a callback"),
        ("as1 = 127.0.0.1 ", "as1 = as.example.net ",
         "[peer_servers] as1: 'as.example.net' is not an IP address"),
        ("extended_response = no", "extended_response = perhaps",
         "[callback] extended_response: 'perhaps' is not yes or no"),
        ("[external_line]", "[line_not_used]",
         "[external_line]: is required when external_line_mode = yes"),
        ("[peer.as1]", "[peer.as7]", "[peer.as7]: 'as7' is not in [peer_servers] (listed: as1)"),
        ("max_rate =   ", "max_rate = lots", "[peer.as1] max_rate: 'lots' is not a decimal number"),
        ("events = no", "event = no", "[peer.as1] event: unknown key (known: max_calls, max_rate, events)"),
        ("keep_days = 30", "keep_days = -3", "[journal] keep_days: '-3' is not a decimal number"),
    ],
)
def test_check_config_documented_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], old: str, new: str, error: str
) -> None:
    text = (ROOT / "config.ini").read_text()
    assert old in text
    path = tmp_path / "c.ini"
    path.write_text(text.replace(old, new, 1))
    assert main(["check-config", "--config", str(path)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert f"{path}: error: {error}\n" in captured.err


def test_check_config_lists_every_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = (ROOT / "config.ini").read_text()
    text = text.replace("transport = udp", "transport = sctp").replace("expires = 300", "expires = 5")
    path = tmp_path / "c.ini"
    path.write_text(text)
    assert main(["check-config", "--config", str(path)]) == 2
    assert capsys.readouterr().err == (
        f"{path}: error: [sip] transport: 'sctp' is not udp, tcp or tls\n"
        f"{path}: error: [external_line] expires: 5 is outside 60..86400\n"
    )


def test_check_config_unreadable_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check-config", "--config", str(tmp_path / "nope.ini")]) == 2
    assert capsys.readouterr().err == (
        f"{tmp_path / 'nope.ini'}: error: [file]: cannot read {tmp_path / 'nope.ini'}:"
        " No such file or directory\n"
    )
    assert main(["check-config", "--config", str(tmp_path)]) == 2
    assert "Is a directory" in capsys.readouterr().err


def test_check_config_warnings_exit_0(tmp_path: Path) -> None:
    text = (ROOT / "config.ini").read_text() + "\n[stats]\nport = 9100\n"
    text = text.replace("[sip]", "[sip]\nkeepalive = 30", 1)
    path = tmp_path / "c.ini"
    path.write_text(text)
    done = mss("check-config", "--config", str(path))
    assert done.returncode == 0
    assert done.stdout == f"{path}: ok\n"
    assert done.stderr == (
        f"{path}: warning: [sip] keepalive: unknown key, ignored\n"
        f"{path}: warning: [stats]: unknown section, ignored\n"
    )


# --- run: what stops it from starting -------------------------------------------------------------

def test_run_invalid_config_exit_2(tmp_path: Path) -> None:
    path = tmp_path / "c.ini"
    path.write_text((ROOT / "config.ini").read_text().replace("pss_host = 127.0.0.1", "pss_host ="))
    done = mss("run", "--config", str(path))
    assert done.returncode == 2
    assert f"ERROR mss: {path}: [sip] pss_host: is required" in done.stderr


def test_run_journal_cannot_open_exit_1(tmp_path: Path) -> None:
    path = tmp_path / "c.ini"
    path.write_text(config_text(free_port(), tmp_path / "missing-dir" / "j.sqlite3"))
    done = mss("run", "--config", str(path))
    assert done.returncode == 1
    assert "cannot open journal" in done.stderr and "missing-dir" in done.stderr


def test_run_port_in_use_exit_1(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as busy:
        busy.bind((LOCAL, 0))
        busy.listen()
        port = busy.getsockname()[1]
        path = tmp_path / "c.ini"
        path.write_text(config_text(port, tmp_path / "j.sqlite3"))
        done = mss("run", "--config", str(path))
    assert done.returncode == 1
    assert f"ERROR mss: cannot listen for IIF on {LOCAL}:{port}: Address already in use\n" in done.stderr


# --- callback: usage ------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--server", "localhost", "100", "101", "30"],
         "mss callback: --server 'localhost' is not HOST:PORT"),
        (["--server", "127.0.0.1:http", "100", "101", "30"],
         "mss callback: --server '127.0.0.1:http' is not HOST:PORT"),
        (["--server", "127.0.0.1:1", "100", "1 01", "30"], "mss callback: invalid IIF user '1 01'"),
        (["--server", "127.0.0.1:1", "100", "101", "0"], "mss callback: invalid IIF duration 0"),
        (["--server", "127.0.0.1:1", "--id", "a;b", "100", "101", "5"], "mss callback: invalid IIF id 'a;b'"),
    ],
)
def test_callback_usage_exit_2(args: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["callback", *args]) == 2
    captured = capsys.readouterr()
    assert captured.err == message + "\n"
    assert captured.out == ""


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["callback", "--server", "127.0.0.1:1", "100", "101", "soon"], "invalid int value: 'soon'"),
        (["callback", "--server", "127.0.0.1:1", "100", "101"],
         "the following arguments are required: duration"),
        (["callback", "100", "101", "5"], "the following arguments are required: --server"),
        ([], "the following arguments are required: COMMAND"),
        (["serve"], "invalid choice: 'serve'"),
        (["run", "--log-level", "loud"], "invalid choice: 'loud'"),
    ],
)
def test_argparse_usage_exit_2(args: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(args)
    assert info.value.code == 2
    assert message in capsys.readouterr().err


def test_python_dash_m_is_the_same_program() -> None:
    done = mss("--version")
    assert (done.returncode, done.stdout) == (0, f"mss {__version__}\n")
    done = mss()
    assert done.returncode == 2
    assert "usage: mss" in done.stderr


# --- status, calls, hangup: against a real mss, and when there is none ----------------------------

def _ops_config(tmp_path: Path, extra: str = "") -> Path:
    path = tmp_path / "mss.ini"
    path.write_text(config_text(free_port(), tmp_path / "j.sqlite3") + extra)
    return path


def test_status_calls_and_hangup_against_a_running_mss(tmp_path: Path) -> None:
    from tests.test_iif_server import mss_process

    with mss_process(tmp_path, _ops_config(tmp_path).read_text()) as process:
        config = str(process.config)
        status = mss("status", "--config", config)
        assert status.returncode == 0, status.stderr
        lines = status.stdout.splitlines()
        assert lines[0].startswith(f"mss:          {__version__} (pid ") and lines[0].endswith("), serving")
        assert "registration: n/a" in lines
        assert "calls:        0 in progress (max 1000), 0 relay sessions" in lines
        as_json = json.loads(mss("status", "--config", config, "--json").stdout)
        assert as_json["state"] == "serving" and as_json["calls"] == 0 and as_json["uptime"] >= 0
        calls = mss("calls", "--config", config)
        assert (calls.returncode, calls.stdout) == (0, "no callbacks in progress\n")
        assert json.loads(mss("calls", "--config", config, "--json").stdout) == []
        hangup = mss("hangup", "cb-1", "--config", config)
        assert (hangup.returncode, hangup.stdout) == (1, "")
        assert hangup.stderr == "mss hangup: no callback cb-1 in progress\n"


def test_control_commands_when_mss_is_not_running(tmp_path: Path) -> None:
    config = str(_ops_config(tmp_path))
    for command in (["status"], ["calls"], ["hangup", "cb-1"]):
        done = mss(*command, "--config", config)
        assert done.returncode == 1 and done.stdout == ""
        socket_path = tmp_path / "mss.sock"
        assert done.stderr == f"mss {command[0]}: mss is not running: no control socket at {socket_path}\n"


def test_control_commands_usage_and_config_errors(tmp_path: Path) -> None:
    off = _ops_config(tmp_path, "[control]\nsocket =\n")
    done = mss("status", "--config", str(off))
    assert done.returncode == 2
    assert done.stderr == f"mss status: the control socket is off in {off} ([control] socket is empty)\n"
    done = mss("calls", "--config", str(tmp_path / "missing.ini"))
    assert done.returncode == 2 and "cannot read" in done.stderr
    done = mss("hangup", "a;b", "--config", str(_ops_config(tmp_path)))
    assert done.returncode == 2 and "hangup needs a callback id" in done.stderr


# --- cdr --------------------------------------------------------------------------------------------

def test_cdr_exports_the_journal(tmp_path: Path) -> None:
    from mss.journal import Cdr, Journal
    from tests.test_cdr_export import CONFIG, QUALITY, T9, add, config_in

    config = config_in(tmp_path)
    journal = Journal(config.journal.path)
    for n, cb_id in enumerate(("early", "late")):
        add(journal, cb_id, T9 + n * 3600, Cdr(
            caller="4930100", leg1_call_id=f"c{n}", leg2_call_id=f"d{n}", leg1_code=200, leg2_code=200,
            codec="PCMU", leg1_answered_at=T9 + n * 3600 + 2, leg2_answered_at=T9 + n * 3600 + 5,
            released_at=T9 + n * 3600 + 35, released_by="user2", result="answered", reason="user2 hung up",
            leg1=QUALITY, leg2=QUALITY,
        ), real_duration=30)
    journal.close()
    path = tmp_path / "config.ini"
    path.write_text(CONFIG)  # the same file config_in read: its journal beside it

    every = mss("cdr", "--config", str(path))
    assert every.returncode == 0, every.stderr
    rows = list(csv.DictReader(io.StringIO(every.stdout)))
    assert [r["id"] for r in rows] == ["early", "late"]
    late = mss("cdr", "--config", str(path), "--since", "2026-12-06T09:30:00Z", "--format", "jsonl")
    assert late.returncode == 0, late.stderr
    (record,) = [json.loads(line) for line in late.stdout.splitlines()]
    assert record["id"] == "late" and record["result"] == "answered"


def test_cdr_errors(tmp_path: Path) -> None:
    done = mss("cdr", "--since", "yesterday", "--config", str(ROOT / "config.ini"))
    assert done.returncode == 2 and "mss cdr: --since 'yesterday' is not an ISO 8601" in done.stderr
    path = tmp_path / "c.ini"
    path.write_text(config_text(free_port(), tmp_path / "no-journal-here.sqlite3"))
    done = mss("cdr", "--config", str(path))
    assert done.returncode == 1 and done.stdout == "" and done.stderr.startswith("mss cdr: ")
    done = mss("cdr", "--format", "xml", "--config", str(path))
    assert done.returncode == 2 and "invalid choice: 'xml'" in done.stderr


def test_run_a_second_mss_on_the_same_config_exit_1(tmp_path: Path) -> None:
    """Its control socket answers: the second one stops before it binds or registers anything, and
    leaves the first one's socket alone."""
    from tests.test_iif_server import mss_process

    with mss_process(tmp_path, _ops_config(tmp_path).read_text()) as first:
        done = mss("run", "--config", str(first.config))
        assert done.returncode == 1
        assert f"[control] socket {tmp_path / 'mss.sock'}: another mss answers there" in done.stderr
        assert mss("status", "--config", str(first.config)).returncode == 0


def test_run_metrics_port_in_use_exit_1(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as busy:
        busy.bind((LOCAL, 0))
        busy.listen()
        port = busy.getsockname()[1]
        path = _ops_config(tmp_path, f"[metrics]\nlisten = {LOCAL}:{port}\n")
        done = mss("run", "--config", str(path))
    assert done.returncode == 1
    error = f"ERROR mss: [metrics] listen: cannot listen on {LOCAL}:{port}: Address already in use\n"
    assert error in done.stderr
    assert not (tmp_path / "mss.sock").exists()  # the control socket it had opened is gone again
