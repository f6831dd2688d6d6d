"""config.ini: the bundled example, every documented error (section, key, reason), warnings, defaults."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mss.config import (
    CODECS,
    CallbackConfig,
    Config,
    ExternalLineConfig,
    OperationsConfig,
    PeerServer,
    RtpConfig,
    SipConfig,
    check,
    check_text,
    load,
)
from mss.errors import ConfigError

ROOT = Path(__file__).parent.parent
DATA = Path(__file__).parent / "data" / "config"

# A valid config as sections of keys; each error case below changes one thing.
BASE: dict[str, dict[str, str]] = {
    "callback": {"listen_host": "127.0.0.1", "listen_port": "5080", "external_line_mode": "yes"},
    "sip": {"pss_host": "127.0.0.1"},
    "external_line": {"username": "mss", "password": "secret"},
    "rtp": {"port_min": "30000", "port_max": "40000"},
    "peer_servers": {"as1": "127.0.0.1"},
    "journal": {"path": "journal.sqlite3"},
}

Edit = tuple[
    str, str | None, str | None
]  # (section, key, value): value None deletes the key, key None the section


def render(*edits: Edit, base: dict[str, dict[str, str]] | None = None) -> str:
    sections = {name: dict(keys) for name, keys in (base or BASE).items()}
    for section, key, value in edits:
        if key is None:
            if value is None:
                sections.pop(section, None)
            else:
                sections.setdefault(section, {})
        elif value is None:
            sections[section].pop(key, None)
        else:
            sections.setdefault(section, {})[key] = value
    return "".join(
        f"[{name}]\n" + "".join(f"{k} = {v}\n" for k, v in keys.items()) + "\n"
        for name, keys in sections.items()
    )


_IN_BRACKETS = " (an IPv6 address goes in brackets)"


def errors_of(text: str) -> list[str]:
    return [str(e) for e in check_text(text).errors]


# --- valid files ----------------------------------------------------------------------------------


def test_bundled_config_ini_is_valid() -> None:
    result = check(ROOT / "config.ini")
    assert result.errors == []
    assert result.warnings == []
    cfg = result.config
    assert cfg is not None
    assert cfg.callback == CallbackConfig()  # the example spells out the defaults of SPEC.md
    assert cfg.sip == SipConfig()
    assert cfg.rtp == RtpConfig()
    assert cfg.external_line == ExternalLineConfig(username="mss", password="secret")
    assert cfg.peer_servers == (PeerServer(name="as1", host="127.0.0.1"),)
    assert cfg.journal.path == str(ROOT.resolve() / "mss-journal.sqlite3")
    assert cfg.log_level == "info"
    assert cfg.operations == OperationsConfig(control_socket=str(ROOT.resolve() / "mss.sock"))
    assert cfg.caller == "mss"


def test_every_key_read() -> None:
    cfg = load(DATA / "external_line.ini")
    assert cfg == Config(
        callback=CallbackConfig(
            listen_host="127.0.0.2",
            listen_port=15080,
            audio_codecs=("PCMA", "G729"),
            external_line_mode=True,
            default_caller=None,
            ring_timeout=30,
            max_duration=7200,
            max_calls=50,
            extended_response=True,
            drain_grace=5,
        ),
        sip=SipConfig(
            local_host="127.0.0.3",
            local_port=15070,
            transport="tcp",
            pss_host="pss.example.net",
            pss_port=15060,
            advertised_host="198.51.100.7",
        ),
        external_line=ExternalLineConfig(
            username="line7",
            auth_username="auth7",
            password="s3cret;not-a-comment",
            number="+4930555",
            domain="voip.example.net",
            expires=600,
        ),
        rtp=RtpConfig(host="127.0.0.4", port_min=20000, port_max=20099, inactivity_timeout=0,
                      kernel_forwarding="no", advertised_host="198.51.100.8"),
        peer_servers=(
            PeerServer(name="as1", host="127.0.0.1"),
            PeerServer(name="as2", host="10.0.0.2", port=7000),
            PeerServer(name="as3", host="::1"),
            PeerServer(name="as4", host="::1", port=7001),
        ),
        journal=cfg.journal,
        log_level="debug",
        operations=OperationsConfig(
            metrics_listen=("::1", 9100), control_socket="/run/mss/control.sock", log_format="json"
        ),
    )
    assert cfg.journal.path == str(DATA.resolve() / "state" / "journal.sqlite3")
    assert cfg.caller == "+4930555"
    assert cfg.external_line is not None
    assert cfg.external_line.digest_user == "auth7"


def test_server_to_server_defaults() -> None:
    cfg = load(DATA / "server_to_server.ini")
    assert cfg.external_line is None
    assert cfg.caller == "4930100"
    assert cfg.callback == CallbackConfig(external_line_mode=False, default_caller="4930100")
    assert cfg.sip == SipConfig(pss_host="10.1.1.1")
    assert cfg.rtp == RtpConfig()
    assert cfg.peer_servers == (PeerServer(name="as1", host="192.0.2.10"),)
    assert cfg.journal.path == str(DATA.resolve() / "mss-journal.sqlite3")


def test_caller_is_username_unless_number() -> None:
    cfg = load_text(render(("external_line", "number", "")))
    assert cfg.external_line is not None
    assert (cfg.caller, cfg.external_line.digest_user) == ("mss", "mss")


def test_empty_value_means_unset() -> None:
    text = render(
        ("callback", "ring_timeout", ""),
        ("callback", "audio_codecs", ""),
        ("callback", "extended_response", ""),
        ("rtp", "port_min", ""),
        ("rtp", "port_max", ""),
    )
    cfg = load_text(text)
    assert cfg.callback.ring_timeout == 45
    assert cfg.callback.audio_codecs == CODECS
    assert cfg.callback.extended_response is False
    assert (cfg.rtp.port_min, cfg.rtp.port_max) == (30000, 40000)


def test_external_line_may_stay_in_server_to_server_mode() -> None:
    cfg = load_text(render(("callback", "external_line_mode", "no"), ("callback", "default_caller", "100")))
    assert cfg.external_line is None  # present but unused


def test_absolute_journal_path_kept(tmp_path: Path) -> None:
    (tmp_path / "c.ini").write_text(render(("journal", "path", "/var/lib/mss/j.sqlite3")))
    assert load(tmp_path / "c.ini").journal.path == "/var/lib/mss/j.sqlite3"


@pytest.mark.parametrize("word", ["yes", "YES", "true", "on", "1"])
def test_bool_words_true(word: str) -> None:
    assert load_text(render(("callback", "extended_response", word))).callback.extended_response is True


@pytest.mark.parametrize("word", ["no", "No", "false", "off", "0"])
def test_bool_words_false(word: str) -> None:
    assert load_text(render(("callback", "extended_response", word))).callback.extended_response is False


def load_text(text: str) -> Config:
    result = check_text(text)
    assert result.errors == [], result.errors
    assert result.config is not None
    return result.config


# --- errors: section, key and reason --------------------------------------------------------------


@pytest.mark.parametrize(
    ("edits", "message"),
    [
        # a required key missing
        ([("callback", "listen_port", None)], "[callback] listen_port: is required"),
        ([("callback", "listen_port", "")], "[callback] listen_port: is required"),
        ([("sip", "pss_host", None)], "[sip] pss_host: is required"),
        ([("external_line", "username", None)], "[external_line] username: is required"),
        ([("external_line", "password", "")], "[external_line] password: is required"),
        # bad ports
        ([("callback", "listen_port", "70000")], "[callback] listen_port: 70000 is outside 1..65535"),
        ([("callback", "listen_port", "0")], "[callback] listen_port: 0 is outside 1..65535"),
        ([("callback", "listen_port", "http")], "[callback] listen_port: 'http' is not a whole number"),
        ([("sip", "pss_port", "5060.5")], "[sip] pss_port: '5060.5' is not a whole number"),
        ([("sip", "local_port", "-1")], "[sip] local_port: -1 is outside 1..65535"),
        # codecs
        (
            [("callback", "audio_codecs", "PCMU, OPUS")],
            "[callback] audio_codecs: unknown codec 'OPUS' (known: PCMU, PCMA, G729)",
        ),
        (
            [("callback", "audio_codecs", "PCMU, PCMA, pcmu")],
            "[callback] audio_codecs: a codec is listed twice",
        ),
        ([("callback", "audio_codecs", " , ,")], "[callback] audio_codecs: no codec listed"),
        # modes and callers
        (
            [("callback", "external_line_mode", "no")],
            "[callback] default_caller: is required when external_line_mode = no",
        ),
        (
            [("callback", "external_line_mode", "no"), ("callback", "default_caller", "")],
            "[callback] default_caller: is required when external_line_mode = no",
        ),
        (
            [("callback", "external_line_mode", "no"), ("callback", "default_caller", "sip:100@host")],
            "[callback] default_caller: 'sip:100@host' is not a valid user or number"
            " (letters, digits, + * # . _ -)",
        ),
        (
            [("external_line", None, None)],
            "[external_line]: is required when external_line_mode = yes",
        ),
        # booleans and words
        (
            [("callback", "external_line_mode", "maybe")],
            "[callback] external_line_mode: 'maybe' is not yes or no",
        ),
        ([("callback", "extended_response", "y")], "[callback] extended_response: 'y' is not yes or no"),
        ([("sip", "transport", "sctp")], "[sip] transport: 'sctp' is not udp, tcp or tls"),
        ([("log", "level", "verbose")], "[log] level: 'verbose' is not debug, info, warning or error"),
        # addresses
        (
            [("callback", "listen_host", "localhost")],
            "[callback] listen_host: 'localhost' is not an IP address",
        ),
        ([("rtp", "host", "127.0.0.256")], "[rtp] host: '127.0.0.256' is not an IP address"),
        (
            [("sip", "pss_host", "10.0.0.1:")],
            "[sip] pss_host: '10.0.0.1:': the port is missing after ':'",
        ),
        (
            [("sip", "pss_host", "pss1.example.net, ,10.0.0.2")],
            "[sip] pss_host: 'pss1.example.net, ,10.0.0.2': an empty entry in the list",
        ),
        (
            [("sip", "outbound_proxy", "proxy.example.net:70000")],
            "[sip] outbound_proxy: 'proxy.example.net:70000': '70000' is not a port (1..65535)",
        ),
        # numbers in range
        ([("callback", "ring_timeout", "0")], "[callback] ring_timeout: 0 is outside 1..3600"),
        ([("callback", "max_duration", "0")], "[callback] max_duration: 0 is outside 1..2678400"),
        ([("callback", "max_calls", "0")], "[callback] max_calls: 0 is outside 1..100000"),
        ([("callback", "drain_grace", "-1")], "[callback] drain_grace: -1 is outside 0..86400"),
        ([("external_line", "expires", "30")], "[external_line] expires: 30 is outside 60..86400"),
        # the RTP port range
        ([("rtp", "port_min", "30001")], "[rtp] port_min: 30001 is odd (RTP ports are even)"),
        (
            [("rtp", "port_min", "40000"), ("rtp", "port_max", "30000")],
            "[rtp] port_max: port_min..port_max (40000..30000) must hold at least one session (4 ports)",
        ),
        (
            [("rtp", "port_min", "30000"), ("rtp", "port_max", "30002")],
            "[rtp] port_max: port_min..port_max (30000..30002) must hold at least one session (4 ports)",
        ),
        ([("rtp", "port_min", "80")], "[rtp] port_min: 80 is outside 1024..65534"),
        # peers
        (
            [("peer_servers", "as1", None)],
            "[peer_servers]: no peer server listed: nobody could order a callback",
        ),
        (
            [("peer_servers", None, None)],
            "[peer_servers]: no peer server listed: nobody could order a callback",
        ),
        (
            [("peer_servers", "as1", "as.example.com")],
            "[peer_servers] as1: 'as.example.com' is not an IP address",
        ),
        ([("peer_servers", "as1", "127.0.0.1:99999")], "[peer_servers] as1: 99999 is outside 1..65535"),
        ([("peer_servers", "as1", "127.0.0.1:")], "[peer_servers] as1: '' is not a whole number"),
        ([("peer_servers", "as1", "[::1]5080")], "[peer_servers] as1: '[::1]5080' is not ip[:port]"),
        ([("peer_servers", "as1", "")], "[peer_servers] as1: '' is not an IP address"),
        # journal retention
        ([("journal", "keep_days", "-1")], "[journal] keep_days: '-1' is not a decimal number"),
        ([("journal", "keep_days", "1e3")], "[journal] keep_days: '1e3' is not a decimal number"),
        ([("journal", "keep_days", "nan")], "[journal] keep_days: 'nan' is not a decimal number"),
        ([("journal", "keep_days", "3.")], "[journal] keep_days: '3.' is not a decimal number"),
        ([("journal", "keep_days", "40000")], "[journal] keep_days: 40000 is outside 0..36500"),
        # shared journal and cluster
        ([("journal", "backend", "mysql")], "[journal] backend: 'mysql' is not sqlite or postgresql"),
        ([("journal", "backend", "postgresql"), ("cluster", "node", "n1")],
         "[journal] dsn: required with [journal] backend = postgresql"),
        ([("journal", "backend", "postgresql"), ("journal", "dsn", "postgresql://db/mss")],
         "[cluster] node: required with [journal] backend = postgresql"),
        ([("journal", "dsn", "db.example.com")],
         "[journal] dsn: must start with postgresql:// (postgresql://user:pass@host:port/db)"),
        ([("sip", "local_host", "::")], "[sip] advertised_host: is required when local_host is ::"),
        ([("sip", "local_host", "0.0.0.0")], "[sip] advertised_host: is required when local_host is 0.0.0.0"),
        ([("cluster", "node", "n 1")], "[cluster] node: use letters, digits, '-' and '_' only"),
        ([("cluster", "node", "n.1")], "[cluster] node: use letters, digits, '-' and '_' only"),
        ([("cluster", "node", "x" * 65)], "[cluster] node: longer than 64 characters"),
        ([("cluster", "lease", "0.5")], "[cluster] lease: 0.5 is outside 1..3600"),
        # operations
        ([("metrics", "listen", "9100")], f"[metrics] listen: '9100' is not host:port{_IN_BRACKETS}"),
        ([("metrics", "listen", "::1:9100")], f"[metrics] listen: '::1:9100' is not host:port{_IN_BRACKETS}"),
        ([("metrics", "listen", "[::1]9100")], "[metrics] listen: '[::1]9100' is not host:port"),
        ([("metrics", "listen", "localhost:9100")], "[metrics] listen: 'localhost' is not an IP address"),
        ([("metrics", "listen", "127.0.0.1:0")], "[metrics] listen: 0 is outside 1..65535"),
        ([("sip", "advertised_host", "nat.x")], "[sip] advertised_host: 'nat.x' is not an IP address"),
        ([("rtp", "advertised_host", "1.2.3")], "[rtp] advertised_host: '1.2.3' is not an IP address"),
        ([("log", "format", "xml")], "[log] format: 'xml' is not text or json"),
        ([("rtp", "kernel_forwarding", "maybe")], "[rtp] kernel_forwarding: 'maybe' is not auto, yes or no"),
        # per-peer limits
        ([("peer.as2", "max_calls", "5")], "[peer.as2]: 'as2' is not in [peer_servers] (listed: as1)"),
        (
            [("peer.as1", "max_call", "5")],
            "[peer.as1] max_call: unknown key (known: max_calls, max_rate, events)",
        ),
        ([("peer.as1", "max_calls", "0")], "[peer.as1] max_calls: 0 is outside 1..100000"),
        ([("peer.as1", "max_calls", "many")], "[peer.as1] max_calls: 'many' is not a whole number"),
        ([("peer.as1", "max_rate", "0")], "[peer.as1] max_rate: 0 is not above 0"),
        ([("peer.as1", "max_rate", "-2")], "[peer.as1] max_rate: '-2' is not a decimal number"),
        ([("peer.as1", "events", "sometimes")], "[peer.as1] events: 'sometimes' is not yes or no"),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_error(edits: list[Edit], message: str) -> None:
    result = check_text(render(*edits))
    assert [str(e) for e in result.errors] == [message]
    assert result.config is None


def test_a_cluster_node_on_postgresql() -> None:
    result = check_text(render(("journal", "backend", "postgresql"), ("journal", "dsn", "postgresql://u:p@db:5432/mss"),
                               ("cluster", "node", "east-1"), ("cluster", "lease", "3.5")))
    assert result.errors == [] and result.config is not None
    assert result.config.journal.backend == "postgresql"
    assert result.config.journal.dsn == "postgresql://u:p@db:5432/mss"
    assert (result.config.cluster.node, result.config.cluster.lease) == ("east-1", 3.5)
    assert check_text(render(("cluster", "leas", "5"))).warnings == ["[cluster] leas: unknown key, ignored"]


def test_error_fields() -> None:
    (error,) = check_text(render(("rtp", "port_min", "30001"))).errors
    assert (error.section, error.key, error.reason) == (
        "rtp",
        "port_min",
        "30001 is odd (RTP ports are even)",
    )


def test_every_error_is_reported_and_load_raises_the_first(tmp_path: Path) -> None:
    text = render(
        ("callback", "listen_port", "99999"),
        ("sip", "transport", "sctp"),
        ("peer_servers", "as1", "nowhere"),
    )
    assert errors_of(text) == [
        "[callback] listen_port: 99999 is outside 1..65535",
        "[sip] transport: 'sctp' is not udp, tcp or tls",
        "[peer_servers] as1: 'nowhere' is not an IP address",
    ]
    (tmp_path / "c.ini").write_text(text)
    with pytest.raises(ConfigError, match=r"^\[callback\] listen_port: 99999 is outside 1\.\.65535$"):
        load(tmp_path / "c.ini")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[callback]\nlisten_port = 1\nlisten_port = 2\n", "[callback] listen_port: given twice (line 3)"),
        ("[callback]\nlisten_port = 1\n[sip]\n[callback]\n", "[callback]: given twice (line 4)"),
        (
            "; top\nlisten_port = 1\n[callback]\n",
            "[file]: line 2: 'listen_port = 1' comes before any [section]",
        ),
        (
            "[callback]\nlisten_port = 1\nthis is not a key\n",
            "[file]: line 3: 'this is not a key' is not 'key = value' or '[section]'",
        ),
    ],
)
def test_syntax_errors_name_the_place(text: str, message: str) -> None:
    assert errors_of(text) == [message]


def test_unreadable_files(tmp_path: Path) -> None:
    missing = tmp_path / "missing.ini"
    assert [str(e) for e in check(missing).errors] == [
        f"[file]: cannot read {missing}: No such file or directory"
    ]
    assert [str(e) for e in check(tmp_path).errors] == [f"[file]: cannot read {tmp_path}: Is a directory"]
    latin1 = tmp_path / "latin1.ini"
    latin1.write_bytes(render().encode() + b"; caf\xe9\n")
    assert [str(e) for e in check(latin1).errors] == [f"[file]: {latin1} is not UTF-8 text"]
    with pytest.raises(ConfigError, match="No such file or directory"):
        load(missing)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_unreadable_permissions(tmp_path: Path) -> None:
    path = tmp_path / "secret.ini"
    path.write_text(render())
    path.chmod(0)
    assert [str(e) for e in check(path).errors] == [f"[file]: cannot read {path}: Permission denied"]


# --- warnings -------------------------------------------------------------------------------------


def test_unknown_keys_and_sections_are_warnings() -> None:
    result = check_text(
        render(("callback", "colour", "blue"), ("extras", "x", "1"), ("rtp", "Host", "1.2.3.4"))
    )
    assert result.errors == []
    assert result.config is not None
    assert result.warnings == [
        "[callback] colour: unknown key, ignored",
        "[rtp] Host: unknown key, ignored",  # keys are case-sensitive
        "[extras]: unknown section, ignored",
    ]
    assert result.config.rtp.host == "127.0.0.1"


def test_peer_names_are_free() -> None:
    cfg = load_text(render(("peer_servers", "Billing-AS_2", "10.0.0.9")))
    assert PeerServer(name="Billing-AS_2", host="10.0.0.9") in cfg.peer_servers


def test_ipv6_addresses_are_normalised() -> None:
    cfg = load_text(render(("peer_servers", "as1", "0:0:0:0:0:0:0:1"), ("peer_servers", "as2", "[::0:1]:80")))
    assert cfg.peer_servers == (
        PeerServer(name="as1", host="::1"),
        PeerServer(name="as2", host="::1", port=80),
    )


# --- [journal] keep_days and [peer.NAME] ----------------------------------------------------------


def test_keep_days_default_fraction_and_forever() -> None:
    assert load_text(render()).journal.keep_days == 30.0
    assert load_text(render(("journal", "keep_days", "0.25"))).journal.keep_days == 0.25
    assert load_text(render(("journal", "keep_days", "0"))).journal.keep_days == 0.0  # keep forever
    assert load_text(render(("journal", "keep_days", ""))).journal.keep_days == 30.0  # empty: unset


def test_peer_limits_read_and_applied_to_their_peer() -> None:
    cfg = load_text(
        render(
            ("peer_servers", "as2", "10.0.0.2:7000"),
            ("peer.as1", "max_calls", "10"),
            ("peer.as1", "max_rate", "2.5"),
            ("peer.as1", "events", "yes"),
            ("peer.as2", "max_calls", ""),  # empty: unset
        )
    )
    assert cfg.peer_servers == (
        PeerServer(name="as1", host="127.0.0.1", max_calls=10, max_rate=2.5, events=True),
        PeerServer(name="as2", host="10.0.0.2", port=7000),
    )


def test_peer_section_mistakes_are_errors_not_warnings() -> None:
    result = check_text(render(("peer.as9", "max_rate", "1"), ("peer.as1", "max_rate", "fast")))
    assert result.config is None
    assert result.warnings == []
    assert [str(e) for e in result.errors] == [
        "[peer.as9]: 'as9' is not in [peer_servers] (listed: as1)",
        "[peer.as1] max_rate: 'fast' is not a decimal number",
    ]
