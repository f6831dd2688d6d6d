"""DNS lookups for :class:`~mss.sip.targets.TargetList`, over dnspython's asyncio resolver.

The nameservers are the system's, read from ``/etc/resolv.conf``; the environment variable
``MSS_RESOLV_CONF`` names another file in the same format (tests point mss at their own DNS
server this way; a resolv.conf names nameservers by address, port 53). dnspython's own cache is
off: the target list keeps the answers and their TTLs. Names are asked as absolute names (no
search list). Every lookup is bounded by :data:`LOOKUP_TIMEOUT`; its outcome is a
:class:`~mss.sip.targets.DnsAnswer` (records, or none: NXDOMAIN and "no such record" are answers
too, believed for :data:`~mss.sip.targets.NEGATIVE_TTL`) or a
:class:`~mss.sip.targets.DnsFailure` (timeout, no nameserver, SERVFAIL, an unreadable resolv.conf),
never an exception.
"""

from __future__ import annotations

import os

import dns.asyncresolver
import dns.exception
import dns.name
import dns.rdatatype
import dns.resolver
from dns.rdtypes.IN.SRV import SRV

from mss.sip.targets import NEGATIVE_TTL, DnsAnswer, DnsFailure, DnsQuery, Srv

__all__ = ["DEFAULT_RESOLV_CONF", "LOOKUP_TIMEOUT", "RESOLV_CONF_ENV", "Resolver"]

#: The environment variable naming a resolv.conf to use instead of the system's.
RESOLV_CONF_ENV = "MSS_RESOLV_CONF"
#: The system's resolver configuration.
DEFAULT_RESOLV_CONF = "/etc/resolv.conf"
#: Seconds one lookup may take, retries across nameservers included: a slow DNS must not hold a
#: refresh for long, and the last good answer is used meanwhile.
LOOKUP_TIMEOUT = 5.0


class Resolver:
    """Answers :class:`~mss.sip.targets.DnsQuery` lookups (see the module docstring)."""

    def __init__(self, resolv_conf: str | None = None) -> None:
        self.path = resolv_conf or os.environ.get(RESOLV_CONF_ENV) or DEFAULT_RESOLV_CONF
        """The resolv.conf read (at the first lookup)."""
        self._resolver: dns.asyncresolver.Resolver | None = None

    def _get(self) -> dns.asyncresolver.Resolver:
        if self._resolver is None:
            resolver = dns.asyncresolver.Resolver(filename=self.path)
            resolver.cache = None
            self._resolver = resolver
        return self._resolver

    async def lookup(self, query: DnsQuery) -> DnsAnswer | DnsFailure:
        """Ask ``query``; never raises (see the module docstring)."""
        try:
            resolver = self._get()
        except dns.exception.DNSException as exc:
            return DnsFailure(reason=f"cannot read {self.path}: {exc}")
        name = dns.name.from_text(query.name)  # absolute: no search list
        try:
            answer = await resolver.resolve(
                name, query.rtype, search=False, lifetime=LOOKUP_TIMEOUT, raise_on_no_answer=False
            )
        except dns.resolver.NXDOMAIN:
            return DnsAnswer(ttl=NEGATIVE_TTL)
        except dns.resolver.LifetimeTimeout:
            return DnsFailure(reason=f"no answer within {LOOKUP_TIMEOUT:.0f} s")
        except dns.resolver.NoNameservers as exc:
            return DnsFailure(reason=f"no nameserver answered ({_first_line(exc)})")
        except dns.exception.DNSException as exc:
            return DnsFailure(reason=_first_line(exc))
        rrset = answer.rrset
        if rrset is None:
            return DnsAnswer(ttl=NEGATIVE_TTL)
        if query.rtype == "SRV":
            records = tuple(
                Srv(priority=r.priority, weight=r.weight, port=r.port,
                    target=r.target.to_text(omit_final_dot=True).lower() or ".")
                for r in rrset
                if isinstance(r, SRV)
            )  # fmt: skip
            return DnsAnswer(ttl=float(rrset.ttl), srv=records)
        return DnsAnswer(ttl=float(rrset.ttl), addresses=tuple(str(r.address) for r in rrset))


def _first_line(exc: BaseException) -> str:
    return (str(exc).splitlines() or [type(exc).__name__])[0][:200]
