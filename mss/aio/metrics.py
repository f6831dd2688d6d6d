"""``[metrics] listen``: Prometheus text at ``/metrics`` and a health check at ``/healthz``.

The families (SPEC.md, "Additions") are made by prometheus_client, in a registry of the service's
own. Most are read when scraped, from state mss keeps anyway (:class:`MssCollector`): the desk's
answers, refusals and results, the user agent's message counts, the registration, and the relay's
counter array summed in bulk (closed sessions from the engine's running sum, live ones from their
rows), so serving metrics adds no work per packet and one dict increment per message at most. The
two histograms are observed when their event happens: a callback bridged, a lag sample of the
loop probe.

``/healthz`` answers 200 while mss serves, 503 while it starts, while it drains, or while the
external line is not registered (server-to-server mode has no registration to wait for).

Beside them, prometheus_client's standard ``process_*`` families: CPU seconds, resident memory, open
file descriptors and their limit (each callback holds six).

The HTTP side is a small HTTP/1.1 responder on the service's event loop (no thread touches loop
state): GET or HEAD of ``/metrics`` and ``/healthz``, 404 for other paths, 405 for other methods,
one request per connection, every read bounded in size and time.
"""

from __future__ import annotations

import asyncio
import logging
import os
import typing
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Histogram,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from mss.aio.calls import CallEngine
from mss.aio.control import abort_connections
from mss.desk import CallbackDesk
from mss.errors import MssError
from mss.iif import Result
from mss.ratelog import RateLimitedLog
from mss.relay import FIELDS

__all__ = [
    "LOOP_LAG_BUCKETS",
    "MAX_CONNECTIONS",
    "MAX_REQUEST",
    "REQUEST_TIMEOUT",
    "SETUP_BUCKETS",
    "MetricsServer",
    "MssCollector",
    "ServiceView",
]

log = logging.getLogger("mss.metrics")

#: Bytes of a request head at most: a scraper's GET is a few hundred bytes.
MAX_REQUEST = 8192

#: Seconds a client gets to send its request head, and to take the answer.
REQUEST_TIMEOUT = 5.0

#: Scrape connections open at once at most: one Prometheus or two, and a health checker.
MAX_CONNECTIONS = 16

#: Buckets of ``mss_callback_setup_seconds``: REQUEST to bridged spans two phones ringing, so
#: seconds to a minute or more (ring_timeout applies to each leg).
SETUP_BUCKETS = (0.5, 1.0, 2.0, 3.0, 5.0, 7.5, 10.0, 15.0, 20.0, 30.0, 45.0, 60.0, 90.0, 120.0)

#: Buckets of ``mss_loop_lag_seconds``: a healthy loop runs timers within a millisecond or two;
#: admission on load refuses from 80 ms smoothed.
LOOP_LAG_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.08, 0.1, 0.25, 0.5, 1.0, 2.5)

#: Every callback result, so that each series exists (at 0) from the start.
RESULTS: tuple[str, ...] = typing.get_args(Result)

#: The desk's refusal kinds that answer a CANCEL (the others answer a REQUEST, but ``malformed``).
_CANCEL_REFUSALS = frozenset({"cancel_unknown", "cancel_not_owner"})

#: Label of messages that could not be read as a REQUEST or CANCEL.
_INVALID = "invalid"

#: Relay drop reasons (the ``drop_*`` counters, see :mod:`mss.relay`).
DROP_REASONS: tuple[str, ...] = tuple(f[len("drop_"):] for f in FIELDS if f.startswith("drop_"))

_F = {name: i for i, name in enumerate(FIELDS)}


def _refused_method(kind: str) -> str:
    """The IIF method a refusal of the desk's ``kind`` answered."""
    if kind == "malformed":
        return _INVALID
    return "CANCEL" if kind in _CANCEL_REFUSALS else "REQUEST"


@dataclass(frozen=True, slots=True, kw_only=True)
class ServiceView:
    """What the collector and ``/healthz`` read: the live parts of one service."""

    desk: Callable[[], CallbackDesk | None]
    """The desk, once made."""
    engine: Callable[[], object | None]
    """The call engine, once made (relay and SIP figures only from a :class:`CallEngine`)."""
    draining: Callable[[], bool]
    """True once the drain began."""
    ready: Callable[[], bool]
    """True once mss takes orders (the IIF listener is up)."""
    external_line: bool
    """True in external line mode (registration applies)."""
    peers: tuple[str, ...]
    """[peer_servers] names."""


def _registered(view: ServiceView) -> bool | None:
    """The line's registration: None in server-to-server mode (nothing to register)."""
    if not view.external_line:
        return None
    engine = view.engine()
    return isinstance(engine, CallEngine) and engine.registered


class MssCollector(Collector):
    """The families read at scrape time."""

    def __init__(self, view: ServiceView) -> None:
        self.view = view

    def collect(self) -> Iterable[CounterMetricFamily | GaugeMetricFamily]:
        desk = self.view.desk()
        engine = self.view.engine()
        yield from self._callbacks(desk)
        yield self._iif(desk)
        sip = CounterMetricFamily("mss_sip_messages", "SIP messages read (in) and written (out), by "
                                  "kind: the request method, or the response class (2xx ...)",
                                  labels=["direction", "kind"])
        if isinstance(engine, CallEngine) and engine.sip is not None:
            for (direction, kind), count in sorted(engine.sip.ua.messages.items()):
                sip.add_metric([direction, kind], count)
        yield sip
        registered = _registered(self.view)
        up = GaugeMetricFamily("mss_registration_up", "1 while the external line is registered, 0 while "
                               "not; no sample in server-to-server mode")
        if registered is not None:
            up.add_metric([], 1.0 if registered else 0.0)
        yield up
        yield from self._relay(engine if isinstance(engine, CallEngine) else None)

    def _callbacks(self, desk: CallbackDesk | None) -> Iterable[CounterMetricFamily | GaugeMetricFamily]:
        total = CounterMetricFamily("mss_callbacks", "Callbacks ended (RESPONSE sent), by result",
                                    labels=["result"])
        results = desk.results if desk is not None else {}
        for result in sorted({*RESULTS, *results}):
            total.add_metric([result], results.get(result, 0))
        yield total
        active = GaugeMetricFamily("mss_callbacks_active", "Callbacks in progress")
        active.add_metric([], len(desk.active) if desk is not None else 0)
        yield active

    def _iif(self, desk: CallbackDesk | None) -> CounterMetricFamily:
        family = CounterMetricFamily(
            "mss_iif_messages", "IIF messages from ASes, by peer, method (REQUEST, CANCEL; invalid: not "
            "readable as either) and the code mss answered", labels=["peer", "method", "code"])
        counts: dict[tuple[str, str, str], int] = {
            (peer, "REQUEST", code): 0 for peer in self.view.peers for code in ("ok", "fail")
        }
        if desk is not None:
            for (peer, method), n in desk.accepted.items():
                counts[peer, method, "ok"] = counts.get((peer, method, "ok"), 0) + n
            for (peer, kind), n in desk.refusals.items():
                method = _refused_method(kind)
                counts[peer, method, "fail"] = counts.get((peer, method, "fail"), 0) + n
        for labels, n in sorted(counts.items()):
            family.add_metric(list(labels), n)
        return family

    def _relay(self, engine: CallEngine | None) -> Iterable[CounterMetricFamily | GaugeMetricFamily]:
        totals = engine.relay_totals() if engine is not None else None

        def total(*fields: str) -> int:
            return 0 if totals is None else sum(int(totals[_F[f]]) for f in fields)

        packets = CounterMetricFamily("mss_relay_packets", "RTP and RTCP packets the relay took from the "
                                      "phones (in) and sent to them (out, ringback included)",
                                      labels=["direction"])
        packets.add_metric(["in"], total("rtp_packets_in", "rtcp_packets_in"))
        packets.add_metric(["out"], total("rtp_packets_out", "rtcp_packets_out"))
        yield packets
        octets = CounterMetricFamily("mss_relay_bytes", "UDP payload bytes of those packets",
                                     labels=["direction"])
        octets.add_metric(["in"], total("rtp_bytes_in", "rtcp_bytes_in"))
        octets.add_metric(["out"], total("rtp_bytes_out", "rtcp_bytes_out"))
        yield octets
        drops = CounterMetricFamily("mss_relay_drops", "Datagrams the relay dropped, by reason (see "
                                    "docs/operations.md)", labels=["reason"])
        for reason in DROP_REASONS:
            drops.add_metric([reason], total(f"drop_{reason}"))
        yield drops
        sessions = GaugeMetricFamily("mss_relay_sessions_active", "Relay sessions open")
        relay = engine.relay if engine is not None else None
        sessions.add_metric([], relay.session_count if relay is not None and not relay.closed else 0)
        yield sessions


def health(view: ServiceView) -> tuple[int, str]:
    """``/healthz``: (HTTP status, one line saying why)."""
    if not view.ready():
        return 503, "starting"
    if view.draining():
        return 503, "draining"
    if _registered(view) is False:
        return 503, "external line not registered"
    return 200, "ok"


_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
            408: "Request Timeout", 431: "Request Header Fields Too Large", 500: "Internal Server Error",
            503: "Service Unavailable"}


class MetricsServer:
    """The registry with mss's families, and the HTTP responder serving it."""

    def __init__(self, view: ServiceView) -> None:
        self.view = view
        # No ``*_created`` series: in the text format they are extra families of their own, and
        # Prometheus does not need them (the process's start is in mss status).
        disable_created_metrics()  # type: ignore[no-untyped-call]  # untyped in prometheus_client
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(MssCollector(view))
        # prometheus_client's process_* families (CPU, memory, open descriptors against the limit), read
        # from /proc when scraped.
        ProcessCollector(registry=self.registry)
        self.setup_seconds = Histogram(
            "mss_callback_setup_seconds", "Seconds from a callback's REQUEST to its legs bridged",
            buckets=SETUP_BUCKETS, registry=self.registry)
        self.loop_lag_seconds = Histogram(
            "mss_loop_lag_seconds", "How late the event loop ran a timer (sampled every 25 ms)",
            buckets=LOOP_LAG_BUCKETS, registry=self.registry)
        self._server: asyncio.Server | None = None
        self._open: set[asyncio.StreamWriter] = set()
        self._log = RateLimitedLog(log)

    @property
    def address(self) -> tuple[str, int]:
        """Where it listens (the port the kernel chose, when asked for 0)."""
        if self._server is None or not self._server.sockets:
            raise MssError("the metrics server is not listening")
        host, port = self._server.sockets[0].getsockname()[:2]
        return str(host), int(port)

    async def start(self, host: str, port: int) -> None:
        """Listen on ``host:port``; raises :class:`MssError` when it cannot."""
        try:
            self._server = await asyncio.start_server(self._serve, host, port, limit=MAX_REQUEST,
                                                      reuse_address=True)
        except OSError as exc:
            reason = os.strerror(exc.errno) if exc.errno else str(exc)  # uvloop's text names no errno
            raise MssError(f"[metrics] listen: cannot listen on {host}:{port}: {reason}") from exc
        log.info("metrics on http://%s:%d/metrics (and /healthz)", *self.address)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        await abort_connections(self._open)

    def render(self) -> bytes:
        """The exposition text of every family now."""
        return generate_latest(self.registry)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if len(self._open) >= MAX_CONNECTIONS:
            self._log.warning("busy", "metrics: %d connections open already; one refused", len(self._open))
            writer.close()
            return
        self._open.add(writer)
        try:
            status, ctype, body, head_only = await self._answer(reader)
            reason = _REASONS.get(status, "")
            headers = (f"HTTP/1.1 {status} {reason}\r\nContent-Type: {ctype}\r\n"
                       f"Content-Length: {len(body)}\r\nConnection: close\r\n")
            if status == 405:
                headers += "Allow: GET, HEAD\r\n"
            writer.write(headers.encode("ascii") + b"\r\n" + (b"" if head_only else body))
            await asyncio.wait_for(writer.drain(), REQUEST_TIMEOUT)
        except (OSError, TimeoutError):
            pass  # the client went away or stalled: nothing to answer
        finally:
            self._open.discard(writer)
            writer.close()

    async def _answer(self, reader: asyncio.StreamReader) -> tuple[int, str, bytes, bool]:
        """(status, content type, body, HEAD) for the request on ``reader``."""
        text = "text/plain; charset=utf-8"
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), REQUEST_TIMEOUT)
        except TimeoutError:
            return 408, text, b"request head not complete in time\n", False
        except asyncio.LimitOverrunError:
            return 431, text, f"request head longer than {MAX_REQUEST} bytes\n".encode(), False
        except asyncio.IncompleteReadError:
            return 400, text, b"request head not complete\n", False
        parts = head.split(b"\r\n", 1)[0].split(b" ")
        if len(parts) != 3 or not parts[2].startswith(b"HTTP/1."):
            return 400, text, b"not an HTTP/1.x request line\n", False
        method, target = parts[0], parts[1].split(b"?", 1)[0]
        if target not in (b"/metrics", b"/healthz"):
            return 404, text, b"not found: try /metrics or /healthz\n", False
        if method not in (b"GET", b"HEAD"):
            return 405, text, b"only GET and HEAD\n", False
        head_only = method == b"HEAD"
        if target == b"/healthz":
            status, why = health(self.view)
            return status, text, why.encode() + b"\n", head_only
        try:
            return 200, CONTENT_TYPE_LATEST, self.render(), head_only
        except Exception as exc:  # a bug in a collector: say so, keep serving
            self._log.error(("render", type(exc).__name__), "metrics: cannot render: %r", exc)
            return 500, text, b"metrics failed; see the log\n", head_only
