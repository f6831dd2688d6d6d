"""config.ini: read once at start into typed, frozen objects.

:func:`check` reads the whole file and collects every problem (``mss check-config`` prints them all);
:func:`load` returns the :class:`Config` or raises the first :class:`~mss.errors.ConfigError`.
Unknown sections and keys are warnings, not errors, so a newer file still runs on an older mss.
An empty value means "unset"; the defaults below are those of SPEC.md.
"""

from __future__ import annotations

import configparser
import dataclasses
import ipaddress
import os
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from mss.errors import ConfigError
from mss.sip.targets import parse_host_list, parse_hostport

__all__ = [
    "CODECS",
    "CallbackConfig",
    "ClusterConfig",
    "Config",
    "ConfigCheck",
    "ExternalLineConfig",
    "JournalConfig",
    "OperationsConfig",
    "PeerServer",
    "RtpConfig",
    "SipConfig",
    "check",
    "check_text",
    "load",
]

#: Codecs mss passes through (never transcodes), by their SDP encoding names.
CODECS = ("PCMU", "PCMA", "G729")

T = TypeVar("T")


@dataclass(frozen=True, slots=True, kw_only=True)
class CallbackConfig:
    """[callback]: the IIF side and the rules of a callback."""

    listen_host: str = "127.0.0.1"
    """Address the IIF server listens on (TCP and UDP)."""
    listen_port: int = 5080
    """Port of the IIF server (TCP and UDP)."""
    audio_codecs: tuple[str, ...] = CODECS
    """Codecs offered to user1, in order of preference."""
    external_line_mode: bool = True
    """True: register to the PSS as the external line; False: server-to-server."""
    default_caller: str | None = None
    """Caller number in server-to-server mode."""
    ring_timeout: int = 45
    """Seconds a leg may ring (from its INVITE) before it is cancelled."""
    max_duration: int = 86400
    """Largest ``duration`` a REQUEST may ask for, in seconds."""
    max_calls: int = 1000
    """Concurrent callbacks; beyond it a REQUEST gets ``code=fail``."""
    extended_response: bool = False
    """True: a RESPONSE also carries ``result=`` and ``code=``."""
    drain_grace: int = 30
    """Seconds SIGTERM lets calls in progress run before releasing them."""
    workers: int = 1
    """Processes under one ``mss run`` (:mod:`mss.aio.supervisor`); 1: one process, as before workers."""


@dataclass(frozen=True, slots=True, kw_only=True)
class SipConfig:
    """[sip]: where mss speaks SIP and to whom."""

    local_host: str = "127.0.0.1"
    """Address mss binds for SIP (UDP and TCP)."""
    local_port: int = 5070
    """Port mss binds for SIP (UDP and TCP)."""
    transport: str = "udp"
    """``udp``, ``tcp`` or ``tls`` towards the PSS."""
    pss_host: str = "127.0.0.1"
    """The peer SIP server (the VoIP provider): an IP address, a DNS name (RFC 3263: SRV, then
    A/AAAA) or a comma-separated list of ``host[:port]`` tried in order."""
    pss_port: int = 5060
    """Port of the peer SIP server (of an entry without one, when no SRV record gives it)."""
    outbound_proxy: str | None = None
    """``host[:port]`` every request is sent to first (loose-route Route header); None: none."""
    advertised_host: str | None = None
    """Address written into Via and Contact instead of ``local_host`` (mss behind a 1:1 NAT); None:
    local_host."""
    tls_cert: str | None = None
    """PEM certificate (chain) mss shows on TLS connections the PSS opens to it (with ``tls_key``);
    None: the SIP port accepts no TLS connection."""
    tls_key: str | None = None
    """PEM private key of ``tls_cert``."""
    tls_ca: str | None = None
    """PEM bundle of the CAs that vouch for the PSS's certificate; None: the system's."""
    tls_verify: bool = True
    """True: the PSS's certificate must verify and name the PSS (its name, or its address)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ExternalLineConfig:
    """[external_line]: the line mss registers as, when ``external_line_mode = yes``."""

    username: str
    """Registered user; also the caller number unless ``number`` is set."""
    password: str
    """Digest password."""
    auth_username: str | None = None
    """Digest user when it differs from ``username``."""
    number: str | None = None
    """Caller number presented in From."""
    domain: str | None = None
    """SIP domain (defaults to the PSS host)."""
    expires: int = 300
    """Registration lifetime asked for, in seconds."""

    @property
    def digest_user(self) -> str:
        """The user name of digest authentication."""
        return self.auth_username or self.username

    @property
    def caller(self) -> str:
        """The caller number presented in From."""
        return self.number or self.username


@dataclass(frozen=True, slots=True, kw_only=True)
class RtpConfig:
    """[rtp]: the media relay."""

    host: str = "127.0.0.1"
    """Address the relay binds and writes into SDP."""
    port_min: int = 30000
    """Lowest RTP port (even; RTCP is RTP + 1)."""
    port_max: int = 40000
    """Highest port the relay may use."""
    inactivity_timeout: int = 60
    """Seconds without RTP on a bridged leg before the call is released (0: never)."""
    advertised_host: str | None = None
    """Address written into SDP ``c=`` instead of ``host`` (the relay behind a NAT); None: host."""
    kernel_forwarding: str = "auto"
    """``auto``, ``yes`` or ``no``: bridged legs forwarded by the kernel (eBPF) when it allows it."""
    # SRTP passthrough (docs/deploy.md, "SRTP"):
    srtp: str = "no"
    """``no`` (plain RTP/AVP only) or ``passthrough``: calls are RTP/SAVP with SDES keys (a=crypto)
    passed between the phones; mss never decrypts, rewrites or plays into the media."""


@dataclass(frozen=True, slots=True, kw_only=True)
class PeerServer:
    """One entry of [peer_servers]: an AS allowed to order callbacks."""

    name: str
    """The key in config.ini."""
    host: str
    """IP address the AS connects from."""
    port: int | None = None
    """Source port required on TCP, and where RESPONSEs go over UDP; None: any."""
    max_calls: int | None = None
    """[peer.NAME] max_calls: concurrent callbacks this peer may hold; None: only [callback] max_calls."""
    max_rate: float | None = None
    """[peer.NAME] max_rate: REQUESTs per second this peer may order; None: no limit."""
    events: bool = False
    """[peer.NAME] events: EVENT lines on this peer's TCP connections (after the ACK, before the RESPONSE)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class JournalConfig:
    """[journal]: the durable record of requests and responses."""

    path: str = "mss-journal.sqlite3"
    """sqlite3 file (relative paths are relative to config.ini's directory)."""
    keep_days: float = 30.0
    """Delivered RESPONSEs and CDRs older than this many days are deleted; 0 keeps them forever."""
    backend: str = "sqlite"
    """``sqlite`` (the file at :attr:`path`, one node) or ``postgresql`` (:attr:`dsn`, shared by nodes)."""
    dsn: str | None = None
    """PostgreSQL connection string (``postgresql://user:pass@host:port/db``); required with postgresql."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ClusterConfig:
    """[cluster]: this node among the nodes sharing a PostgreSQL journal."""

    node: str | None = None
    """This node's unique name; required with ``[journal] backend = postgresql``."""
    lease: float = 5.0
    """Seconds: a node whose heartbeat is older than this is taken over by a survivor."""


@dataclass(frozen=True, slots=True, kw_only=True)
class OperationsConfig:
    """[metrics], [control] and [log] format: how operators watch and drive mss."""

    metrics_listen: tuple[str, int] | None = None
    """[metrics] listen: host and port of /metrics and /healthz; None: off."""
    control_socket: str | None = None
    """[control] socket: path of the control unix socket; None: off."""
    log_format: str = "text"
    """[log] format: ``text`` or ``json`` (one JSON object per line)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Config:
    """The whole config.ini."""

    callback: CallbackConfig
    """[callback]"""
    sip: SipConfig
    """[sip]"""
    external_line: ExternalLineConfig | None
    """[external_line]; None in server-to-server mode."""
    rtp: RtpConfig
    """[rtp]"""
    peer_servers: tuple[PeerServer, ...]
    """[peer_servers]"""
    journal: JournalConfig
    """[journal]"""
    log_level: str = "info"
    """[log] level: debug, info, warning or error."""
    operations: OperationsConfig = OperationsConfig()
    """[metrics], [control] and [log] format."""
    cluster: ClusterConfig = ClusterConfig()
    """[cluster]"""

    @property
    def caller(self) -> str:
        """The number both legs present in From (SPEC.md, "Caller identity")."""
        if self.external_line is not None:
            return self.external_line.caller
        assert self.callback.default_caller is not None  # enforced by check()
        return self.callback.default_caller


@dataclass(slots=True)
class ConfigCheck:
    """What :func:`check` found: the config when valid, every error, every warning."""

    config: Config | None
    errors: list[ConfigError] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


# --- value parsers: each returns the value or raises ValueError with the reason -------------------

def max_workers() -> int:
    """Largest [callback] workers: four per CPU (more only adds processes waiting for a core)."""
    return (os.cpu_count() or 1) * 4


def _worker_room(callback: CallbackConfig, sip: SipConfig, rtp: RtpConfig) -> list[ConfigError]:
    """Workers take SIP ports local_port..local_port+workers-1 and a slice of the RTP range each."""
    n = callback.workers
    errors = []
    if n > 1 and sip.local_port + n - 1 > 65535:
        errors.append(ConfigError("callback", "workers", f"{n} workers need SIP ports {sip.local_port}.."
                                  f"{sip.local_port + n - 1} ([sip] local_port + worker), beyond 65535"))
    if n > 1 and (rtp.port_max - rtp.port_min + 1) // n < 4:
        errors.append(ConfigError("callback", "workers", f"{n} workers cannot each have a relay session in "
                                  f"[rtp] {rtp.port_min}..{rtp.port_max} (4 ports a session)"))
    return errors


def _int_in(low: int, high: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text, 10)
        except ValueError:
            raise ValueError(f"{text!r} is not a whole number") from None
        if not low <= value <= high:
            raise ValueError(f"{value} is outside {low}..{high}")
        return value

    return parse


_port = _int_in(1, 65535)

#: Longest decimal number read from config.ini: bounds float() and keeps values exact enough.
_MAX_DECIMAL_CHARS = 16


def _decimal_in(low: float, high: float, *, above_low: bool = False) -> Callable[[str], float]:
    """A plain decimal number (``30``, ``0.5``; no sign, exponent, inf or nan) within ``low..high``."""

    def parse(text: str) -> float:
        whole, dot, frac = text.partition(".")
        digits = whole + frac
        if (
            len(text) > _MAX_DECIMAL_CHARS
            or not digits.isascii()
            or not digits.isdigit()
            or not whole
            or (dot and not frac)
        ):
            raise ValueError(f"{text!r} is not a decimal number")
        value = float(text)
        if above_low and value == low:
            raise ValueError(f"{text} is not above {low:g}")
        if not low <= value <= high:
            raise ValueError(f"{text} is outside {low:g}..{high:g}")
        return value

    return parse


def _bool(text: str) -> bool:
    lowered = text.lower()
    if lowered in ("yes", "true", "on", "1"):
        return True
    if lowered in ("no", "false", "off", "0"):
        return False
    raise ValueError(f"{text!r} is not yes or no")


def _ip(text: str) -> str:
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        raise ValueError(f"{text!r} is not an IP address") from None


def _host(text: str) -> str:
    # A host name or an IP address; no spaces, no port.
    if not text or any(c.isspace() for c in text) or (":" in text and not _is_ipv6(text)):
        raise ValueError(f"{text!r} is not a host name or IP address")
    return text


def _pss_hosts(text: str) -> str:
    # [sip] pss_host: host[:port], or a comma-separated list of them (mss.sip.targets).
    parse_host_list(text)
    return ", ".join(part.strip() for part in text.split(","))


def _proxy(text: str) -> str:
    # [sip] outbound_proxy: one host[:port].
    return str(parse_hostport(text))


def _is_ipv6(text: str) -> bool:
    try:
        return ipaddress.ip_address(text).version == 6
    except ValueError:
        return False


def _sip_token(text: str) -> str:
    # A user part for From/To: digits, letters and the few marks a number may carry.
    allowed = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+*#._-")
    if not text or len(text) > 64 or not set(text) <= allowed:
        raise ValueError(f"{text!r} is not a valid user or number (letters, digits, + * # . _ -)")
    return text


def _codecs(text: str) -> tuple[str, ...]:
    names = [part.strip().upper() for part in text.split(",") if part.strip()]
    if not names:
        raise ValueError("no codec listed")
    for name in names:
        if name not in CODECS:
            raise ValueError(f"unknown codec {name!r} (known: {', '.join(CODECS)})")
    if len(set(names)) != len(names):
        raise ValueError("a codec is listed twice")
    return tuple(names)


def _transport(text: str) -> str:
    lowered = text.lower()
    if lowered not in ("udp", "tcp", "tls"):
        raise ValueError(f"{text!r} is not udp, tcp or tls")
    return lowered


#: Longest [cluster] node name: it is written into every journal row a node owns.
NODE_NAME_MAX = 64


def _node_name(value: str) -> str:
    """[cluster] node: letters, digits, ``-`` and ``_`` (workers add ``.i`` to it)."""
    if len(value) > NODE_NAME_MAX:
        raise ValueError(f"longer than {NODE_NAME_MAX} characters")
    if not value.replace("-", "").replace("_", "").isalnum() or not value.isascii():
        raise ValueError("use letters, digits, '-' and '_' only")
    return value


def _dsn(value: str) -> str:
    """[journal] dsn: a PostgreSQL URL (asyncpg checks the rest when it connects)."""
    if not value.startswith(("postgresql://", "postgres://")):
        raise ValueError("must start with postgresql:// (postgresql://user:pass@host:port/db)")
    return value


def _one_of(*choices: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        lowered = text.lower()
        if lowered not in choices:
            raise ValueError(f"{text!r} is not {', '.join(choices[:-1])} or {choices[-1]}")
        return lowered

    return parse


def _listen(text: str) -> tuple[str, int]:
    # host:port or [ipv6]:port
    if text.startswith("["):
        host, bracket, rest = text[1:].partition("]")
        if not bracket or not rest.startswith(":"):
            raise ValueError(f"{text!r} is not host:port")
        port_text = rest[1:]
    else:
        host, colon, port_text = text.rpartition(":")
        if not colon or ":" in host:
            raise ValueError(f"{text!r} is not host:port (an IPv6 address goes in brackets)")
    return _ip(host), _port(port_text)


def _log_level(text: str) -> str:
    lowered = text.lower()
    if lowered not in ("debug", "info", "warning", "error"):
        raise ValueError(f"{text!r} is not debug, info, warning or error")
    return lowered


def _peer(name: str, text: str) -> PeerServer:
    # ip, ip:port, or [ipv6]:port (an IPv6 address alone needs no brackets)
    port_text: str | None = None
    if text.startswith("["):
        host, bracket, rest = text[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            raise ValueError(f"{text!r} is not ip[:port]")
        port_text = rest[1:] if rest else None
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
    else:
        host = text
    return PeerServer(name=name, host=_ip(host), port=_port(port_text) if port_text is not None else None)


#: Keys of a [peer.NAME] section (SPEC.md, "Additions").
_PEER_KEYS = ("max_calls", "max_rate", "events")

#: Prefix of the per-peer sections.
_PEER_SECTION = "peer."


# --- the reader ---------------------------------------------------------------------------------

_KNOWN: dict[str, set[str]] = {
    "callback": set(CallbackConfig.__dataclass_fields__),
    "sip": set(SipConfig.__dataclass_fields__),
    "external_line": set(ExternalLineConfig.__dataclass_fields__),
    "rtp": set(RtpConfig.__dataclass_fields__),
    "journal": set(JournalConfig.__dataclass_fields__),
    "cluster": set(ClusterConfig.__dataclass_fields__),
    "log": {"level", "format"},
    "metrics": {"listen"},
    "control": {"socket"},
}

#: [control] socket when the key is absent (relative to config.ini's directory, like the journal).
DEFAULT_CONTROL_SOCKET = "mss.sock"


class _Reader:
    """Reads one section's keys, collecting errors instead of stopping at the first."""

    def __init__(self, parser: configparser.ConfigParser, errors: list[ConfigError]) -> None:
        self._parser = parser
        self.errors = errors

    def get(
        self, section: str, key: str, parse: Callable[[str], T], default: T, *, required: bool = False
    ) -> T:
        raw = self._parser.get(section, key, fallback="") if self._parser.has_section(section) else ""
        raw = raw.strip()
        if not raw:
            if required:
                self.errors.append(ConfigError(section, key, "is required"))
            return default
        try:
            return parse(raw)
        except ValueError as exc:
            self.errors.append(ConfigError(section, key, str(exc)))
            return default


def _syntax_error(exc: configparser.Error, text: str) -> ConfigError:
    """A ConfigError naming where the file cannot be read as sections of ``key = value``."""
    if isinstance(exc, configparser.DuplicateOptionError):
        return ConfigError(exc.section, exc.option, f"given twice (line {exc.lineno})")
    if isinstance(exc, configparser.DuplicateSectionError):
        return ConfigError(exc.section, None, f"given twice (line {exc.lineno})")
    lines = text.splitlines()
    if isinstance(exc, configparser.MissingSectionHeaderError):
        line = lines[exc.lineno - 1].strip() if 0 < exc.lineno <= len(lines) else ""
        return ConfigError("file", None, f"line {exc.lineno}: {line!r} comes before any [section]")
    if isinstance(exc, configparser.ParsingError) and exc.errors:
        lineno = exc.errors[0][0]
        line = lines[lineno - 1].strip() if 0 < lineno <= len(lines) else ""
        return ConfigError("file", None, f"line {lineno}: {line!r} is not 'key = value' or '[section]'")
    return ConfigError("file", None, str(exc).splitlines()[0])


def check_text(text: str, *, base_dir: Path | None = None) -> ConfigCheck:
    """Validate config.ini contents; relative journal paths resolve against ``base_dir``."""
    parser = configparser.ConfigParser(
        inline_comment_prefixes=(";", "#"), interpolation=None, strict=True, empty_lines_in_values=False
    )
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # keys are case-sensitive names
    result = ConfigCheck(config=None)
    try:
        parser.read_string(text)
    except configparser.Error as exc:
        result.errors.append(_syntax_error(exc, text))
        return result

    for section in parser.sections():
        if section == "peer_servers" or section.startswith(_PEER_SECTION):
            continue  # [peer.NAME] is checked with the peers: mistakes there are errors
        if section not in _KNOWN:
            result.warnings.append(f"[{section}]: unknown section, ignored")
            continue
        for key in parser.options(section):
            if key not in _KNOWN[section]:
                result.warnings.append(f"[{section}] {key}: unknown key, ignored")

    r = _Reader(parser, result.errors)
    d_cb, d_sip, d_rtp = CallbackConfig(), SipConfig(), RtpConfig()
    callback = CallbackConfig(
        listen_host=r.get("callback", "listen_host", _ip, d_cb.listen_host),
        listen_port=r.get("callback", "listen_port", _port, d_cb.listen_port, required=True),
        audio_codecs=r.get("callback", "audio_codecs", _codecs, d_cb.audio_codecs),
        external_line_mode=r.get("callback", "external_line_mode", _bool, d_cb.external_line_mode),
        default_caller=r.get("callback", "default_caller", _sip_token, None),
        ring_timeout=r.get("callback", "ring_timeout", _int_in(1, 3600), d_cb.ring_timeout),
        max_duration=r.get("callback", "max_duration", _int_in(1, 31 * 86400), d_cb.max_duration),
        max_calls=r.get("callback", "max_calls", _int_in(1, 100_000), d_cb.max_calls),
        extended_response=r.get("callback", "extended_response", _bool, d_cb.extended_response),
        drain_grace=r.get("callback", "drain_grace", _int_in(0, 86400), d_cb.drain_grace),
        workers=r.get("callback", "workers", _int_in(1, max_workers()), d_cb.workers),
    )
    caller_missing = not callback.external_line_mode and callback.default_caller is None
    if caller_missing and not any(e.key == "default_caller" for e in result.errors):
        result.errors.append(
            ConfigError("callback", "default_caller", "is required when external_line_mode = no")
        )

    sip = SipConfig(
        local_host=r.get("sip", "local_host", _ip, d_sip.local_host),
        local_port=r.get("sip", "local_port", _port, d_sip.local_port),
        transport=r.get("sip", "transport", _transport, d_sip.transport),
        pss_host=r.get("sip", "pss_host", _pss_hosts, d_sip.pss_host, required=True),
        pss_port=r.get("sip", "pss_port", _port, d_sip.pss_port),
        outbound_proxy=r.get("sip", "outbound_proxy", _proxy, None),
        advertised_host=r.get("sip", "advertised_host", _ip, None),
        **_tls_keys(r, base_dir),
    )
    if sip.advertised_host is None and ipaddress.ip_address(sip.local_host).is_unspecified:
        # a wildcard binds every address, but Via and Contact need one the provider can reach
        result.errors.append(
            ConfigError("sip", "advertised_host", f"is required when local_host is {sip.local_host}")
        )

    external_line: ExternalLineConfig | None = None
    if callback.external_line_mode:
        if not parser.has_section("external_line"):
            result.errors.append(
                ConfigError("external_line", None, "is required when external_line_mode = yes")
            )
        else:
            external_line = ExternalLineConfig(
                username=r.get("external_line", "username", _sip_token, "", required=True),
                password=r.get("external_line", "password", str, "", required=True),
                auth_username=r.get("external_line", "auth_username", _sip_token, None),
                number=r.get("external_line", "number", _sip_token, None),
                domain=r.get("external_line", "domain", _host, None),
                expires=r.get("external_line", "expires", _int_in(60, 86400), 300),
            )

    rtp = RtpConfig(
        host=r.get("rtp", "host", _ip, d_rtp.host),
        port_min=r.get("rtp", "port_min", _int_in(1024, 65534), d_rtp.port_min),
        port_max=r.get("rtp", "port_max", _int_in(1025, 65535), d_rtp.port_max),
        inactivity_timeout=r.get("rtp", "inactivity_timeout", _int_in(0, 86400), 60),
        advertised_host=r.get("rtp", "advertised_host", _ip, None),
        kernel_forwarding=r.get(
            "rtp", "kernel_forwarding", _one_of("auto", "yes", "no"), d_rtp.kernel_forwarding
        ),
        srtp=r.get("rtp", "srtp", _one_of("no", "passthrough"), d_rtp.srtp),
    )
    if rtp.advertised_host is None and ipaddress.ip_address(rtp.host).is_unspecified:
        # a wildcard (:: is dual-stack) binds, but SDP c= needs an address the phones can reach
        result.errors.append(ConfigError("rtp", "advertised_host", f"is required when host is {rtp.host}"))
    if rtp.port_min % 2:
        result.errors.append(ConfigError("rtp", "port_min", f"{rtp.port_min} is odd (RTP ports are even)"))
    if rtp.port_max - rtp.port_min < 3:
        result.errors.append(
            ConfigError(
                "rtp",
                "port_max",
                f"port_min..port_max ({rtp.port_min}..{rtp.port_max}) must hold at least one session "
                "(4 ports)",
            )
        )

    result.errors.extend(_worker_room(callback, sip, rtp))

    peers: list[PeerServer] = []
    if parser.has_section("peer_servers"):
        for name in parser.options("peer_servers"):
            value = parser.get("peer_servers", name).strip()
            try:
                peers.append(_peer(name, value))
            except ValueError as exc:
                result.errors.append(ConfigError("peer_servers", name, str(exc)))
    peers = _peer_limits(parser, r, peers)
    if not peers and not any(e.section == "peer_servers" for e in result.errors):
        result.errors.append(
            ConfigError("peer_servers", None, "no peer server listed: nobody could order a callback")
        )

    journal_path = r.get("journal", "path", str, JournalConfig().path)
    keep_days = r.get("journal", "keep_days", _decimal_in(0, 36500), JournalConfig().keep_days)
    if base_dir is not None and not Path(journal_path).is_absolute():
        journal_path = str(base_dir / journal_path)
    backend = r.get("journal", "backend", _one_of("sqlite", "postgresql"), JournalConfig().backend)
    dsn: str | None = r.get("journal", "dsn", _dsn, None)
    node: str | None = r.get("cluster", "node", _node_name, None)
    lease = r.get("cluster", "lease", _decimal_in(1, 3600), ClusterConfig().lease)
    required: tuple[tuple[str, str, str | None], ...] = (("journal", "dsn", dsn), ("cluster", "node", node))
    for where, key, given in required:
        said = any(e.section == where and e.key == key for e in result.errors)
        if backend == "postgresql" and given is None and not said:
            result.errors.append(ConfigError(where, key, "required with [journal] backend = postgresql"))
    log_level = r.get("log", "level", _log_level, "info")
    control_socket: str | None = DEFAULT_CONTROL_SOCKET
    if parser.has_section("control") and parser.has_option("control", "socket"):
        control_socket = r.get("control", "socket", str, None)  # present but empty: off
    if control_socket is not None and base_dir is not None and not Path(control_socket).is_absolute():
        control_socket = str(base_dir / control_socket)
    operations = OperationsConfig(
        metrics_listen=r.get("metrics", "listen", _listen, None),
        control_socket=control_socket,
        log_format=r.get("log", "format", _one_of("text", "json"), "text"),
    )

    if not result.errors:
        result.config = Config(
            callback=callback,
            sip=sip,
            external_line=external_line,
            rtp=rtp,
            peer_servers=tuple(peers),
            journal=JournalConfig(path=journal_path, keep_days=keep_days, backend=backend, dsn=dsn),
            cluster=ClusterConfig(node=node, lease=lease),
            log_level=log_level,
            operations=operations,
        )
    return result


def _tls_keys(r: _Reader, base_dir: Path | None) -> dict[str, Any]:
    """[sip] tls_*: paths resolved against config.ini's directory (like the journal), and the files
    loaded with :mod:`ssl` now, so a missing file or a key that does not match its certificate is
    a config error rather than a failed handshake later."""

    def path(key: str) -> str | None:
        text = r.get("sip", key, str, None)
        if text is not None and base_dir is not None and not Path(text).is_absolute():
            text = str(base_dir / text)
        return text

    cert, key, ca = path("tls_cert"), path("tls_key"), path("tls_ca")
    if (cert is None) != (key is None):
        r.errors.append(ConfigError("sip", "tls_key" if key is None else "tls_cert",
                                    "tls_cert and tls_key go together"))  # fmt: skip
    elif cert is not None and key is not None:
        try:
            ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(cert, key)
        except (OSError, ssl.SSLError) as exc:
            reason = f"cannot load {cert} with {key}: {_ssl_reason(exc)}"
            r.errors.append(ConfigError("sip", "tls_cert", reason))
    if ca is not None:
        try:
            ssl.create_default_context(cafile=ca)
        except (OSError, ssl.SSLError) as exc:
            r.errors.append(ConfigError("sip", "tls_ca", f"cannot load {ca}: {_ssl_reason(exc)}"))
    return {"tls_cert": cert, "tls_key": key, "tls_ca": ca,
            "tls_verify": r.get("sip", "tls_verify", _bool, True)}  # fmt: skip


def _ssl_reason(exc: OSError | ssl.SSLError) -> str:
    """What went wrong loading a PEM file, in words (``[SSL: KEY_VALUES_MISMATCH] ...`` -> its text)."""
    if isinstance(exc, ssl.SSLError):
        reason = exc.reason or ""
        words = {"KEY_VALUES_MISMATCH": "the key does not match the certificate",
                 "NO_CERTIFICATE_OR_CRL_FOUND": "no PEM certificate in it"}  # fmt: skip
        if not reason and "PEM lib" in str(exc):  # OpenSSL names no reason for unreadable PEM
            return "not PEM (a certificate, then its key)"
        return words.get(reason, exc.strerror or str(exc))
    return exc.strerror or str(exc)


def _peer_limits(parser: configparser.ConfigParser, r: _Reader, peers: list[PeerServer]) -> list[PeerServer]:
    """Apply each [peer.NAME] section to its [peer_servers] entry.

    A toll-fraud guard that silently does nothing is worse than none: a section for a name not in
    [peer_servers], or a key not known, is an error (not the warning other unknown keys get).
    """
    by_name = {peer.name: peer for peer in peers}
    for section in parser.sections():
        if not section.startswith(_PEER_SECTION):
            continue
        name = section[len(_PEER_SECTION) :]
        if name not in by_name:
            listed = ", ".join(by_name) or "none"
            reason = f"{name!r} is not in [peer_servers] (listed: {listed})"
            r.errors.append(ConfigError(section, None, reason))
            continue
        for key in parser.options(section):
            if key not in _PEER_KEYS:
                r.errors.append(ConfigError(section, key, f"unknown key (known: {', '.join(_PEER_KEYS)})"))
        by_name[name] = dataclasses.replace(
            by_name[name],
            max_calls=r.get(section, "max_calls", _int_in(1, 100_000), None),
            max_rate=r.get(section, "max_rate", _decimal_in(0, 100_000, above_low=True), None),
            events=r.get(section, "events", _bool, False),
        )
    return [by_name[peer.name] for peer in peers]


def check(path: str | Path) -> ConfigCheck:
    """Validate the config file at ``path``."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        reason = f"cannot read {p}: {exc.strerror}"
        return ConfigCheck(config=None, errors=[ConfigError("file", None, reason)])
    except UnicodeDecodeError:
        return ConfigCheck(config=None, errors=[ConfigError("file", None, f"{p} is not UTF-8 text")])
    return check_text(text, base_dir=p.resolve().parent)


def load(path: str | Path) -> Config:
    """Load and validate config.ini; raise the first :class:`ConfigError` when it is invalid."""
    result = check(path)
    if result.config is None:
        raise result.errors[0]
    return result.config
