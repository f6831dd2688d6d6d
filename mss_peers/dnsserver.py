"""A small authoritative DNS server on loopback (dnslib's server) for tests of pss_host as a name.

``ZoneServer(address)`` answers UDP queries on ``address:53`` (a resolv.conf names nameservers by
address, on port 53: root binds it here) from records the test sets and may change while it runs::

    with ZoneServer("127.0.0.153") as dns:
        dns.set("_sip._udp.pss.test", "SRV", [(10, 1, 5060, "a.pss.test")], ttl=5)
        dns.set("a.pss.test", "A", ["127.0.0.5"], ttl=5)
        conf = dns.write_resolv_conf(tmp_path / "resolv.conf")  # for MSS_RESOLV_CONF

A name with no record of the type asked gets an empty answer (NOERROR, no data); a name with no
record at all gets NXDOMAIN. ``asked`` lists the questions seen (``"SRV _sip._udp.pss.test"``),
``log_path`` (when given) gets one line per question for failure reports.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from dnslib import AAAA, QTYPE, RCODE, RR, A, DNSRecord  # type: ignore[import-untyped]
from dnslib import SRV as SRV_RDATA
from dnslib.server import BaseResolver, DNSLogger, DNSServer  # type: ignore[import-untyped]

from mss_peers.net import check_loopback

__all__ = ["ZoneServer"]

#: Questions remembered in ``asked`` (a test makes a handful; the bound keeps a loop in check).
MAX_ASKED = 10_000


class _Resolver(BaseResolver):  # type: ignore[misc]
    def __init__(self, owner: ZoneServer) -> None:
        self._owner = owner

    def resolve(self, request: DNSRecord, handler: Any) -> DNSRecord:
        reply = request.reply()
        qname = str(request.q.qname).rstrip(".").lower()
        qtype = QTYPE[request.q.qtype]
        self._owner.note(f"{qtype} {qname}")
        records = self._owner.lookup(qname)
        if records is None:
            reply.header.rcode = RCODE.NXDOMAIN
            return reply
        values, ttl = records.get(qtype, ([], 0))
        for value in values:
            if qtype == "SRV":
                priority, weight, port, target = value
                rdata = SRV_RDATA(priority=priority, weight=weight, port=port, target=target + ".")
            elif qtype == "AAAA":
                rdata = AAAA(value)
            else:
                rdata = A(value)
            reply.add_answer(RR(request.q.qname, request.q.qtype, rdata=rdata, ttl=ttl))
        return reply


class ZoneServer:
    """See the module docstring."""

    def __init__(self, address: str, *, log_path: Path | None = None) -> None:
        self.address = check_loopback(address)
        self.log_path = log_path
        self.asked: list[str] = []
        """Questions seen, in order (``"A a.pss.test"``)."""
        self._zone: dict[str, dict[str, tuple[list[Any], int]]] = {}
        self._lock = threading.Lock()
        self._server: DNSServer | None = None

    def set(self, name: str, rtype: str, values: Sequence[Any], *, ttl: int = 60) -> None:
        """Serve ``values`` for ``name``/``rtype`` (SRV values are (priority, weight, port, target));
        an empty ``values`` leaves the name existing with no such record."""
        with self._lock:
            self._zone.setdefault(name.lower(), {})[rtype] = (list(values), ttl)

    def remove(self, name: str) -> None:
        """Forget ``name``: NXDOMAIN from now on."""
        with self._lock:
            self._zone.pop(name.lower(), None)

    def lookup(self, name: str) -> dict[str, tuple[list[Any], int]] | None:
        """The records of ``name`` (None: no such name)."""
        with self._lock:
            found = self._zone.get(name)
            return dict(found) if found is not None else None

    def note(self, question: str) -> None:
        """Remember (and log) one question."""
        with self._lock:
            if len(self.asked) < MAX_ASKED:
                self.asked.append(question)
        if self.log_path is not None:
            with self.log_path.open("a") as log:
                log.write(question + "\n")

    def write_resolv_conf(self, path: Path) -> Path:
        """A resolv.conf naming this server alone; returns ``path``."""
        path.write_text(f"nameserver {self.address}\noptions timeout:1 attempts:1\n")
        return path

    def start(self) -> ZoneServer:
        """Bind ``address:53`` (UDP) and serve in a thread."""
        quiet = DNSLogger("-request,-reply,-truncated,-error", False)
        self._server = DNSServer(_Resolver(self), address=self.address, port=53, logger=quiet)
        self._server.start_thread()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket."""
        if self._server is not None:
            self._server.stop()
            self._server.server.server_close()
            self._server = None

    def __enter__(self) -> ZoneServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"<ZoneServer {self.address}:53>"

    def describe(self) -> str:
        """The questions seen, for failure reports."""
        return f"--- {self!r} questions ---\n" + "\n".join(self.asked[-100:])
