"""Where SIP requests go: the PSS's addresses from ``pss_host`` (RFC 3263 §4), sans-IO.

``pss_host`` is one entry or a comma-separated list of entries ``host[:port]``, tried in order:

- an IP literal (``192.0.2.1``, ``[2001:db8::1]``): that address, its port or ``pss_port``;
- a name with a port: its A/AAAA records with that port (RFC 3263 §4.2);
- a name without a port: its SRV records ``_sip._udp.NAME``, ``_sip._tcp.NAME`` or
  ``_sips._tcp.NAME`` (by transport),
  ordered by priority and, within a priority, weighted at random (RFC 2782), each target's A/AAAA
  records with the SRV port; no SRV record at all: the name's A/AAAA records with ``pss_port``
  (5060 unless configured otherwise). An SRV target ``.`` means "no service here".

:class:`TargetList` keeps the DNS answers it was given, each until its TTL runs out. It does no
I/O: :meth:`TargetList.queries` says which lookups are due (never made, or expired), the adapter
makes them and hands back a :class:`DnsAnswer` or a :class:`DnsFailure`. An expired answer is used
until a new one replaces it, and a failed lookup keeps the last good answer (retried after
:data:`FAILURE_RETRY`), so a DNS outage never takes the PSS away. :meth:`TargetList.candidates`
gives the addresses in order; :meth:`TargetList.addresses` every address known, for the stranger
filter. NAPTR (RFC 3263 §4.1) is not used: the transport is configured.
"""

from __future__ import annotations

import ipaddress
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal

__all__ = [
    "FAILURE_RETRY",
    "MAX_ENTRIES",
    "MAX_RECORDS",
    "MAX_TTL",
    "MIN_TTL",
    "NEGATIVE_TTL",
    "Addr",
    "DnsAnswer",
    "DnsFailure",
    "DnsQuery",
    "HostEntry",
    "Srv",
    "TargetList",
    "families_for",
    "format_addr",
    "order_srv",
    "parse_host_list",
    "parse_hostport",
]

Addr = tuple[str, int]
RecordType = Literal["SRV", "A", "AAAA"]

#: Entries of a comma-separated pss_host: a provider names two or three servers, not dozens.
MAX_ENTRIES = 8
#: Records of one answer used (SRV targets or addresses); the rest are ignored: a failover list
#: longer than this would outlast any transaction's bound anyway.
MAX_RECORDS = 16
#: Shortest TTL honoured, seconds: a TTL of 0 must not turn into a lookup per request.
MIN_TTL = 5.0
#: Longest TTL honoured, seconds: a moved server is found within a day at worst.
MAX_TTL = 86400.0
#: How long "no such record" is believed, seconds (RFC 2308 negative caching, without the SOA).
NEGATIVE_TTL = 60.0
#: Seconds before a failed lookup (timeout, SERVFAIL) is tried again; the last good answer is
#: used meanwhile.
FAILURE_RETRY = 30.0


@dataclass(frozen=True, slots=True, kw_only=True)
class HostEntry:
    """One entry of ``pss_host``."""

    host: str
    """A name or an IP address (without brackets)."""
    port: int | None = None
    """The entry's own port; None: SRV for a name, ``pss_port`` for an address."""

    def __post_init__(self) -> None:
        if not self.host:
            raise ValueError("empty host")
        if self.port is not None and not 1 <= self.port <= 65535:
            raise ValueError(f"{self.port} is not a port")

    @property
    def literal(self) -> bool:
        """True for an IP address."""
        return _is_ip(self.host)

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port is None else f"{host}:{self.port}"


@dataclass(frozen=True, slots=True, kw_only=True)
class Srv:
    """One SRV record (RFC 2782)."""

    priority: int
    """Lower is tried first."""
    weight: int
    """Relative share within a priority; 0 is chosen rarely."""
    port: int
    """The server's port."""
    target: str
    """The server's name (no trailing dot); ``.`` for "no service"."""


@dataclass(frozen=True, slots=True)
class DnsQuery:
    """A lookup the adapter makes for the list."""

    name: str
    """The name asked about (no trailing dot)."""
    rtype: RecordType
    """``SRV``, ``A`` or ``AAAA``."""

    def __str__(self) -> str:
        return f"{self.rtype} {self.name}"


@dataclass(frozen=True, slots=True, kw_only=True)
class DnsAnswer:
    """What the DNS said: records (maybe none: the name or the record does not exist) and a TTL."""

    ttl: float
    """Seconds the answer may be kept."""
    srv: tuple[Srv, ...] = ()
    """SRV records (for an SRV query)."""
    addresses: tuple[str, ...] = ()
    """IP addresses (for an A or AAAA query)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class DnsFailure:
    """The lookup failed (timeout, no nameserver answered, SERVFAIL): the last answer is kept."""

    reason: str
    """Why, for the log."""


@dataclass(slots=True)
class _Cached:
    answer: DnsAnswer | None = None
    expires: float = 0.0
    """When the answer (or the failure's retry) is due again."""
    in_flight: bool = False


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _valid_name(name: str) -> bool:
    labels = name.rstrip(".").split(".")
    return len(name) <= 253 and all(
        0 < len(label) <= 63 and all(c.isalnum() or c in "-_" for c in label) for label in labels
    )


def parse_hostport(text: str) -> HostEntry:
    """``host``, ``host:port``, ``[v6]`` or ``[v6]:port`` (a bare IPv6 address too); ValueError
    with the reason when it is none of them."""
    text = text.strip()
    port_text = ""
    if text.startswith("["):
        host, bracket, rest = text[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")) or not _is_ip(host):
            raise ValueError(f"{text!r} is not host[:port] ([IPv6 address][:port])")
        port_text = rest[1:] if rest else ""
        if rest and not port_text:
            raise ValueError(f"{text!r}: the port is missing after ':'")
    elif text.count(":") > 1:
        host = text  # a bare IPv6 address: no port
        if not _is_ip(host):
            raise ValueError(f"{text!r} is not host[:port] (an IPv6 address goes in brackets)")
    else:
        host, colon, port_text = text.partition(":")
        if colon and not port_text:
            raise ValueError(f"{text!r}: the port is missing after ':'")
    if not host or any(c.isspace() for c in host):
        raise ValueError(f"{text!r} is not host[:port]")
    if not _is_ip(host) and not _valid_name(host):
        raise ValueError(f"{text!r}: {host!r} is not a host name or IP address")
    port = None
    if port_text:
        if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
            raise ValueError(f"{text!r}: {port_text!r} is not a port (1..65535)")
        port = int(port_text)
    return HostEntry(host=host.rstrip(".").lower() if not _is_ip(host) else host, port=port)


def parse_host_list(text: str) -> tuple[HostEntry, ...]:
    """A comma-separated list of ``host[:port]`` (at most :data:`MAX_ENTRIES`); ValueError names
    the bad entry."""
    parts = [part.strip() for part in text.split(",")]
    if not text.strip() or any(not part for part in parts):
        raise ValueError(f"{text!r}: an empty entry in the list")
    if len(parts) > MAX_ENTRIES:
        raise ValueError(f"{len(parts)} entries: at most {MAX_ENTRIES}")
    return tuple(parse_hostport(part) for part in parts)


def families_for(local_host: str) -> tuple[RecordType, ...]:
    """The address records worth asking for, given the address mss binds: an IPv4 socket reaches
    only IPv4 (A), one bound to a given IPv6 address only IPv6 (AAAA), ``::`` both."""
    try:
        ip = ipaddress.ip_address(local_host)
    except ValueError:
        return ("A", "AAAA")
    if ip.version == 4:
        return ("A",)
    return ("AAAA", "A") if ip.is_unspecified else ("AAAA",)


def order_srv(records: Iterable[Srv], rng: random.Random) -> list[Srv]:
    """RFC 2782's order: by priority; within one, repeatedly pick a record with probability in
    proportion to its weight (weight-0 records first in the running list, so they are picked
    only when the sum allows it)."""
    out: list[Srv] = []
    usable = [r for r in records if r.target != "."]
    for priority in sorted({r.priority for r in usable}):
        group = [r for r in usable if r.priority == priority]
        group.sort(key=lambda r: r.weight != 0)  # "all those with weight 0 placed at the beginning"
        while group:
            total = sum(r.weight for r in group)
            pick = rng.randint(0, total)
            running = 0
            for index, record in enumerate(group):
                running += record.weight
                if running >= pick:
                    out.append(group.pop(index))
                    break
    return out


@dataclass(eq=False, slots=True)
class TargetList:
    """The ordered addresses of ``pss_host`` and their DNS answers; see the module docstring."""

    entries: tuple[HostEntry, ...]
    """The configured entries, in order."""
    default_port: int = 5060
    """Port of an entry with none when no SRV applies (``pss_port``)."""
    transport: str = "udp"
    """``udp``, ``tcp`` or ``tls``: which SRV service is asked for."""
    families: tuple[RecordType, ...] = ("A",)
    """Address records asked for (see :func:`families_for`)."""
    rng: random.Random = field(default_factory=random.SystemRandom)
    """Randomness for the SRV weights."""
    _cache: dict[DnsQuery, _Cached] = field(default_factory=dict)
    _failures: dict[DnsQuery, str] = field(default_factory=dict)
    _memo: list[Addr] | None = None
    """The candidates without a draw, until the next answer (None: to be computed)."""
    _draws: bool = False
    """Some SRV priority holds several records: each ordered :meth:`candidates` draws anew."""

    @classmethod
    def parse(
        cls, text: str, *, default_port: int = 5060, transport: str = "udp",
        families: tuple[RecordType, ...] = ("A",), rng: random.Random | None = None,
    ) -> TargetList:  # fmt: skip
        """The list for a ``pss_host`` value (ValueError when it is not one)."""
        return cls(parse_host_list(text), default_port=default_port, transport=transport,
                   families=families, rng=rng or random.SystemRandom())  # fmt: skip

    # -- what to ask ------------------------------------------------------------------------------

    def _srv_name(self, host: str) -> str:
        # RFC 3263 §4.1: the service of each transport (TLS is SIPS over TCP).
        service = {"tcp": "_sip._tcp", "tls": "_sips._tcp"}.get(self.transport, "_sip._udp")
        return f"{service}.{host}"

    def _needed(self) -> list[DnsQuery]:
        """Every lookup the current answers call for, in the order they matter."""
        out: list[DnsQuery] = []
        for entry in self.entries:
            if entry.literal:
                continue
            hosts = [entry.host]
            if entry.port is None:
                query = DnsQuery(self._srv_name(entry.host), "SRV")
                out.append(query)
                answer = self._answer(query)
                if answer is None:
                    continue  # the SRV answer decides which names to look up
                if answer.srv:
                    hosts = [r.target for r in answer.srv[:MAX_RECORDS] if r.target != "."]
            for host in hosts:
                if _is_ip(host):
                    continue
                out.extend(DnsQuery(host, rtype) for rtype in self.families)
        return list(dict.fromkeys(out))

    def _answer(self, query: DnsQuery) -> DnsAnswer | None:
        cached = self._cache.get(query)
        return cached.answer if cached is not None else None

    def queries(self, now: float) -> list[DnsQuery]:
        """The lookups due now (never made, or expired), marked in flight: each must be answered
        with :meth:`answer`."""
        due = []
        for query in self._needed():
            cached = self._cache.setdefault(query, _Cached())
            if not cached.in_flight and (cached.answer is None or cached.expires <= now):
                if cached.answer is None and query in self._failures and cached.expires > now:
                    continue  # failed, no answer yet: wait for the retry
                cached.in_flight = True
                due.append(query)
        return due

    def answer(self, query: DnsQuery, result: DnsAnswer | DnsFailure, now: float) -> None:
        """The outcome of ``query``: a new answer replaces the old; a failure keeps it. The outcome of
        a lookup the list does not need (any more) is dropped."""
        cached = self._cache.get(query)
        if cached is not None:
            cached.in_flight = False
        if query not in self._needed():
            self._forget_unneeded()
            return
        cached = self._cache.setdefault(query, _Cached())
        if isinstance(result, DnsFailure):
            self._failures[query] = result.reason
            cached.expires = now + FAILURE_RETRY
            return
        self._failures.pop(query, None)
        cached.answer = result
        cached.expires = now + min(MAX_TTL, max(MIN_TTL, result.ttl))
        self._memo = None
        self._forget_unneeded()

    def _forget_unneeded(self) -> None:
        needed = set(self._needed())
        for query in [q for q in self._cache if q not in needed and not self._cache[q].in_flight]:
            del self._cache[query]
            self._failures.pop(query, None)

    def get_timer(self) -> float | None:
        """When the next lookup falls due (an answer expires or a failure is retried)."""
        if not self._cache:  # the PSS named by IP address: nothing is looked up (read after every message)
            return None
        times = [c.expires for c in self._cache.values() if not c.in_flight]
        return min(times) if times else None

    @property
    def settled(self) -> bool:
        """True when every lookup needed has had an outcome (answer or failure)."""
        return all(
            q in self._cache and not self._cache[q].in_flight
            and (self._cache[q].answer is not None or q in self._failures)
            for q in self._needed()
        )  # fmt: skip

    def failures(self) -> dict[str, str]:
        """Lookups whose last try failed, and why (for the log)."""
        return {str(q): reason for q, reason in self._failures.items()}

    # -- where to send --------------------------------------------------------------------------

    def _addresses_of(self, host: str) -> list[str]:
        if _is_ip(host):
            return [host]
        out: list[str] = []
        for rtype in self.families:
            answer = self._answer(DnsQuery(host, rtype))
            if answer is not None:
                out.extend(answer.addresses[:MAX_RECORDS])
        return out

    def candidates(self, *, ordered: bool = True) -> list[Addr]:
        """Every known address in the order to try (SRV weights drawn anew at each call;
        ``ordered=False``: by priority, records of one priority as the DNS gave them, no draw)."""
        if self._memo is None:
            self._memo = self._compute(ordered=False)
            self._draws = any(
                len(group) > 1
                for answer in (c.answer for c in self._cache.values())
                if answer is not None and answer.srv
                for group in _priority_groups(answer.srv[:MAX_RECORDS])
            )
        if not ordered or not self._draws:
            return list(self._memo)
        return self._compute(ordered=True)

    def _compute(self, *, ordered: bool) -> list[Addr]:
        out: list[Addr] = []
        for entry in self.entries:
            if entry.literal:
                out.append((entry.host, entry.port or self.default_port))
                continue
            if entry.port is not None:
                out.extend((ip, entry.port) for ip in self._addresses_of(entry.host))
                continue
            srv = self._answer(DnsQuery(self._srv_name(entry.host), "SRV"))
            if srv is None:
                continue
            if not srv.srv:  # no SRV records: the name itself (RFC 3263 §4.2)
                out.extend((ip, self.default_port) for ip in self._addresses_of(entry.host))
                continue
            records = srv.srv[:MAX_RECORDS]
            by_priority = sorted(records, key=lambda r: r.priority)
            for record in order_srv(records, self.rng) if ordered else by_priority:
                out.extend((ip, record.port) for ip in self._addresses_of(record.target))
        return list(dict.fromkeys(out))

    def addresses(self) -> frozenset[str]:
        """Every IP address of the list (current answers, expired ones still in use included)."""
        return frozenset(ip for ip, _port in self.candidates(ordered=False))

    def describe(self, addrs: Sequence[Addr] | None = None) -> str:
        """``a:5060, b:5060`` for the log (the candidates when ``addrs`` is None)."""
        addrs = self.candidates() if addrs is None else addrs
        return ", ".join(format_addr(a) for a in addrs) or "no address"


def _priority_groups(records: Sequence[Srv]) -> list[list[Srv]]:
    groups: dict[int, list[Srv]] = {}
    for record in records:
        if record.target != ".":
            groups.setdefault(record.priority, []).append(record)
    return list(groups.values())


def format_addr(addr: Addr) -> str:
    """``host:port`` for a log line, an IPv6 address in brackets."""
    host, port = addr
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
