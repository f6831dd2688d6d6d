"""What the SIP user agent needs to know: :class:`UASettings`, built by the service from mss.config."""

from __future__ import annotations

from dataclasses import dataclass, field

from mss.config import Config
from mss.errors import ConfigError
from mss.sip.targets import parse_host_list, parse_hostport
from mss.sip.transaction import TimerValues

__all__ = ["UASettings"]


@dataclass(frozen=True, slots=True, kw_only=True)
class UASettings:
    """Settings of :class:`~mss.sip.ua.UserAgent` (invalid values raise ConfigError for [sip])."""

    local_host: str
    """Address mss binds (and writes in Via and Contact unless ``advertised_host`` is set)."""
    local_port: int
    """Port mss binds (UDP and TCP)."""
    transport: str
    """``udp``, ``tcp`` or ``tls`` towards the PSS."""
    pss_host: str
    """The PSS: an IP address, a DNS name (RFC 3263: SRV, then A/AAAA) or a comma-separated list
    of ``host[:port]`` tried in order (:mod:`mss.sip.targets`). SIP from any address but its
    addresses (and the outbound proxy's) is dropped."""
    pss_port: int
    """The port of a pss_host entry without one, when no SRV record gives it."""
    caller: str
    """User part of From for both legs (line number, username or default_caller)."""
    domain: str
    """Host of From, To and Request-URIs (external_line.domain, else pss_host)."""
    register: bool
    """True in external line mode: REGISTER to the PSS."""
    line_user: str | None = None
    """User of the registered address of record (external_line.username); None: ``caller``."""
    auth_user: str | None = None
    """Digest user name (auth_username, else username); None: no credentials."""
    password: str | None = None
    """Digest password; None: challenges are not answered."""
    expires: int = 300
    """Registration lifetime asked for, in seconds."""
    user_agent: str = "mss/0.1"
    """User-Agent header value."""
    max_dialogs: int = 2000
    """Live legs at once (two per callback); beyond it ``invite`` fails with 503."""
    max_transactions: int = 8000
    """Live transactions for new work; beyond it ``invite`` fails and new out-of-dialog requests
    are answered 503 (in-dialog requests are still served)."""
    max_lingering_dialogs: int = 2000
    """Finished legs kept 64·T1 for late retransmissions; beyond it the oldest is forgotten."""
    max_lingering_transactions: int = 8000
    """Answered transactions kept for retransmissions; beyond it the oldest is dropped."""
    max_out_of_dialog: int = 256
    """Out-of-dialog requests from the PSS (OPTIONS, stray INVITEs) held at once, live and lingering."""
    tcp_idle_timeout: float = 90.0
    """Seconds without a byte either way after which an accepted SIP TCP connection is closed
    (unless a live transaction uses it); connections mss opened to the PSS are kept."""
    max_connections_per_source: int = 16
    """Accepted SIP TCP connections from one address at once; beyond it new ones are closed."""
    session_expires: int = 1800
    """Session-Expires asked for in INVITEs (RFC 4028); 0: do not ask for session timers."""
    min_se: int = 90
    """Smallest session interval mss accepts (Min-SE, RFC 4028 minimum is 90)."""
    offer_timeout: float = 1.0
    """Seconds to wait for ``answer_offer`` before answering a far-end offer with the last local SDP."""
    timer_values: TimerValues = field(default_factory=TimerValues)
    """RFC 3261 T1/T2/T4."""
    outbound_proxy: str | None = None
    """``host[:port]``: every request is sent there first, with a loose-route Route header
    (RFC 3261 §8.1.2); None: straight to the PSS."""
    advertised_host: str | None = None
    """The address the PSS reaches mss at, written in Via and Contact, when mss is behind a 1:1 NAT
    (``[sip] advertised_host``); None: ``local_host``."""
    tls_cert: str | None = None
    """With ``transport = tls``: PEM certificate for the TLS connections the PSS opens to mss's
    port (with ``tls_key``); None: that port accepts no connection."""
    tls_key: str | None = None
    """PEM private key of ``tls_cert``."""
    tls_ca: str | None = None
    """PEM bundle that verifies the PSS's certificate; None: the system's CAs."""
    tls_verify: bool = True
    """True: the PSS's certificate must verify and name the PSS; False: any certificate is taken."""

    def __post_init__(self) -> None:
        if self.transport not in ("udp", "tcp", "tls"):
            raise ConfigError("sip", "transport", f"{self.transport!r} is not udp, tcp or tls")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ConfigError("sip", "tls_key", "tls_cert and tls_key go together")
        for key, text in (("pss_host", self.pss_host), ("outbound_proxy", self.outbound_proxy)):
            try:
                if key == "pss_host":
                    parse_host_list(text or "")
                elif text is not None:
                    parse_hostport(text)
            except ValueError as exc:
                raise ConfigError("sip", key, str(exc)) from None
        for key in ("local_port", "pss_port"):
            port = getattr(self, key)
            if not 0 <= port <= 65535:
                raise ConfigError("sip", key, f"{port} is not a port")
        if not self.caller:
            raise ConfigError("sip", "caller", "is empty")
        if self.register and (not self.password or not self.auth_user):
            raise ConfigError("external_line", "password", "registration needs a user and a password")
        if self.expires < 1:
            raise ConfigError("external_line", "expires", f"{self.expires} is not positive")
        if self.session_expires and self.session_expires < self.min_se:
            raise ConfigError("sip", "session_expires", f"smaller than Min-SE {self.min_se}")
        for key in ("max_dialogs", "max_transactions", "max_lingering_dialogs", "max_lingering_transactions",
                    "max_out_of_dialog", "max_connections_per_source"):  # fmt: skip
            if getattr(self, key) < 1:
                raise ConfigError("sip", key, "limits must be positive")
        if not self.tcp_idle_timeout > 0:
            raise ConfigError("sip", "tcp_idle_timeout", f"{self.tcp_idle_timeout} is not positive")

    @property
    def contact_host(self) -> str:
        """The address written in Via and Contact (and expected in the Via of responses); an IPv6
        address in brackets, as sent-by and URIs write it (RFC 3261 §25.1, RFC 5118 §4.1)."""
        host = self.advertised_host or self.local_host
        return f"[{host}]" if ":" in host else host

    @property
    def reliable(self) -> bool:
        """True for TCP and TLS (a stream: no retransmissions, Content-Length framing)."""
        return self.transport in ("tcp", "tls")

    @property
    def pss(self) -> tuple[str, int]:
        """The first pss_host entry and its port (``pss_port`` when it names none), for logs."""
        entry = parse_host_list(self.pss_host)[0]
        return (entry.host, entry.port or self.pss_port)

    @property
    def aor_user(self) -> str:
        """User part of the registered address of record."""
        return self.line_user or self.caller

    @classmethod
    def from_config(
        cls, config: Config, *, pss_ip: str | None = None, max_calls: int | None = None
    ) -> UASettings:
        """Settings for ``config``. ``pss_ip``: replaces pss_host (an address or a list, as there)."""
        sip = config.sip
        line = config.external_line
        calls = max_calls if max_calls is not None else config.callback.max_calls
        return cls(
            local_host=sip.local_host,
            local_port=sip.local_port,
            advertised_host=sip.advertised_host,
            transport=sip.transport,
            pss_host=pss_ip or sip.pss_host,
            pss_port=sip.pss_port,
            caller=config.caller,
            # A list's first entry (host alone) names the domain unless [external_line] domain does.
            domain=(line.domain if line is not None and line.domain else _first_host(sip.pss_host)),
            register=line is not None,
            line_user=line.username if line is not None else None,
            auth_user=line.digest_user if line is not None else None,
            password=line.password if line is not None else None,
            expires=line.expires if line is not None else 300,
            # Two legs per callback, and as many again for the legs of callbacks already answered
            # to the AS that are still hanging up (their BYE in flight): under load they add up.
            max_dialogs=max(4, 4 * calls),
            max_transactions=max(16, 8 * calls),
            # Lingering state is kept apart from live state: 64·T1 of finished legs and answered
            # transactions at the full call rate; the oldest goes first when more arrive.
            max_lingering_dialogs=max(64, 2 * calls),
            max_lingering_transactions=max(256, 8 * calls),
            max_out_of_dialog=max(64, calls // 4),
            outbound_proxy=sip.outbound_proxy,
            tls_cert=sip.tls_cert,
            tls_key=sip.tls_key,
            tls_ca=sip.tls_ca,
            tls_verify=sip.tls_verify,
        )


def _first_host(pss_host: str) -> str:
    """The host of pss_host's first entry (IPv6 in brackets, as in a URI)."""
    try:
        host = parse_host_list(pss_host)[0].host
    except ValueError:
        return pss_host  # reported by UASettings itself
    return f"[{host}]" if ":" in host else host
