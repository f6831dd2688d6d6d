"""UDP and TCP adapters for the SIP user agent (:class:`~mss.sip.ua.UserAgent`).

:class:`SipTransport` binds UDP and TCP on ``local_host:local_port``, feeds what it reads to the
user agent, writes what the user agent produces, arms one loop timer for the user agent's next
deadline, and hands every UA event to ``on_event``. Each callback does four things: feed, drain
events, transmit, re-arm (:meth:`SipTransport.flush`). The user agent runs on ``time.monotonic()``.

Where bytes go: to an open TCP connection with that peer address when there is one (replies to
requests that came on a connection, our requests on the reused connection to the PSS); else, with
``transport = tcp``, over a new connection to that address (reconnecting after a loss; a failed
connect is reported to the UA as a transport failure); else as a UDP datagram.

TLS (``transport = tls``, :mod:`mss.aio.sip_tls`): the connections to the PSS are TLS connections,
reused as TCP ones are; with ``tls_cert``/``tls_key`` the stream listener on local_port is a TLS
one (without them there is none: a plain TCP connection could not carry what a ``transport=tls``
Contact asks for). A failed handshake is logged once per peer and interval, e.g. ``TLS to
127.0.0.1:5061: certificate verify failed: ...``, and fails what was to be sent there (a
REGISTER: the line is not registered, callbacks get code=fail).

Strangers: a TCP connection from an address that is not the PSS's (any of its addresses, or the
outbound proxy's) is closed before anything is read; a datagram from one is dropped by the UA
(counted). Every refusal is logged, rate-limited.

DNS (:mod:`mss.sip.targets`, :mod:`mss.aio.dns`): :meth:`SipTransport.open` resolves pss_host (and
the outbound proxy) before the UA starts and refuses to start when no address is known; later the
UA's timer brings expired answers back into :meth:`UserAgent.dns_queries`, and each flush starts
those lookups as tasks (one per query at most) whose outcome goes back with
:meth:`UserAgent.dns_answer`. A change of addresses is logged, and so is a failed lookup (the last
good answer is kept).

TCP connections (RFC 3261 §18.3, RFC 5626 §3.5.1):

- at most :data:`MAX_CONNECTIONS` accepted connections, and at most ``max_connections_per_source``
  from one address; beyond either a new one is closed before anything is read;
- an accepted connection with no byte either way for ``tcp_idle_timeout`` seconds is closed, unless
  a live transaction uses it (its answer must go back on it). A closed connection costs the PSS
  only a reconnect for its next request. Connections mss opened to the PSS are not timed out: mss
  sends its own requests on them and keeps one per destination, so they are bounded already;
- a CRLFCRLF keep-alive is answered with CRLF (by the user agent) and counts as activity.

Nothing a handler raises on one message reaches the event loop: the input is dropped, counted in
:attr:`SipTransport.counters` and logged (rate-limited), and the next message is served as usual.
Every log line written per message or per connection goes through a
:class:`~mss.ratelog.RateLimitedLog`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import ssl
import sys
import time
from collections.abc import Callable
from typing import cast

from mss.aio import sip_tls
from mss.aio.dns import Resolver
from mss.errors import TransportError
from mss.ratelog import RateLimitedLog
from mss.sip.events import Registered, RegistrationFailed, UAEvent, Unregistered
from mss.sip.settings import UASettings
from mss.sip.targets import FAILURE_RETRY, DnsAnswer, DnsFailure, DnsQuery
from mss.sip.ua import UserAgent

__all__ = [
    "IDLE_SWEEP_MAX",
    "MAX_CONNECTIONS",
    "MAX_PENDING_BYTES",
    "MAX_WRITE_BUFFER",
    "UDP_RECEIVE_BUFFER",
    "SipTransport",
]

log = logging.getLogger("mss.sip")

#: Open SIP TCP connections at most (only the PSS connects; it needs one or two).
MAX_CONNECTIONS = 32

#: Bytes queued for a connection that is still being opened; beyond it they are dropped.
MAX_PENDING_BYTES = 1 << 20

#: Bytes a slow connection may hold unwritten before it is closed.
MAX_WRITE_BUFFER = 4 << 20

#: Bytes asked for the SIP UDP socket's receive queue (the kernel's default is ~208 KiB): while the
#: loop is busy, datagrams wait there, and one dropped is costly (a stateless far end never sends its
#: 200 again, so a dropped answer leaves the leg ringing until ring_timeout). About 4,000 typical
#: messages. As root SO_RCVBUFFORCE passes net.core.rmem_max; otherwise the kernel caps it there.
UDP_RECEIVE_BUFFER = 8 << 20

#: Linux's SO_RCVBUFFORCE (asm-generic/socket.h), which the socket module does not name.
_SO_RCVBUFFORCE = 33 if sys.platform.startswith("linux") else None

#: Rounds of lookups at start: SRV, then the targets' A/AAAA (one more for a slow answer).
RESOLVE_ROUNDS = 4

#: Seconds to wait for a TCP connection to the PSS.
CONNECT_TIMEOUT = 5.0

#: Longest pause between two checks for idle TCP connections (a connection is closed at most this
#: long after its idle timeout; shorter timeouts are checked four times per timeout).
IDLE_SWEEP_MAX = 10.0

Addr = tuple[str, int]


#: Datagrams read from the SIP UDP socket at one wake-up besides the one uvloop hands over. libuv
#: reads at most 32 datagrams of a socket per loop iteration: when iterations are heavy with other
#: work (a core saturated), that fell behind the far end's answers until the receive queue overflowed
#: and callbacks failed after their ACK code=ok.
UDP_DRAIN_BATCH = 256

#: Largest UDP payload.
_MAX_DATAGRAM = 65535


class _Udp(asyncio.DatagramProtocol):
    def __init__(self, owner: SipTransport) -> None:
        self._owner = owner
        self._drain: socket.socket | None = None
        """The socket's own descriptor, duplicated: read until it is empty at each wake-up."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        sock = transport.get_extra_info("socket")
        if sock is not None:
            self._drain = socket.socket(fileno=os.dup(sock.fileno()))
            self._drain.setblocking(False)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._drain is not None:
            self._drain.close()
            self._drain = None

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        """Feed this datagram and those queued behind it (bounded), then drain, transmit, re-arm."""
        owner = self._owner
        self._take(data, addr)
        drain = self._drain
        if drain is not None:
            for _ in range(UDP_DRAIN_BATCH):
                try:
                    data, addr = drain.recvfrom(_MAX_DATAGRAM)
                except BlockingIOError:
                    break
                except OSError:  # an ICMP error for an earlier datagram: the timers handle the loss
                    continue
                self._take(data, addr)
        owner.flush()

    def _take(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        owner = self._owner
        source = (str(addr[0]), int(addr[1]))
        owner.feed(data, source, None)
        owner.note_stranger(source, "udp")

    def error_received(self, exc: Exception) -> None:
        """An ICMP error for an earlier datagram: the retransmission timers handle the loss."""
        self._owner.log.log(logging.DEBUG, ("udp_error", type(exc).__name__), "SIP UDP error: %s", exc)


class _Tcp(asyncio.Protocol):
    """One SIP TCP connection (accepted from the PSS, or opened to it); it is the UA's ``stream``."""

    def __init__(
        self, owner: SipTransport, *, outgoing: Addr | None = None, tls: ssl.SSLContext | None = None
    ) -> None:
        self._owner = owner
        self._context = tls  # accepted on the TLS listener: TLS runs here, after the checks
        self._tls: sip_tls.ServerTls | None = None
        self._handshake_timer: asyncio.TimerHandle | None = None
        self.transport: asyncio.Transport | None = None
        self.peer: Addr = outgoing or ("", 0)
        self.outgoing = outgoing is not None
        self.last_active = time.monotonic()
        """When a byte was last read or written (for the idle timeout)."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Refuse strangers and too many connections before reading anything."""
        transport = cast(asyncio.Transport, transport)  # uvloop's classes do not subclass asyncio's
        owner = self._owner
        name = transport.get_extra_info("peername")
        peer = (str(name[0]), int(name[1])) if name else self.peer
        if not self.outgoing:
            if not owner.ua.accepts(peer[0]):
                owner.log_refusal(peer, "tcp")
                transport.abort()
                return
            accepted = [c.peer[0] for c in owner.connections.values() if not c.outgoing]
            limit = owner.ua.settings.max_connections_per_source
            if len(accepted) >= MAX_CONNECTIONS or accepted.count(peer[0]) >= limit:
                owner.counters["refused_connections"] += 1
                owner.log.warning(
                    ("tcp_limit", peer[0]),
                    "refused SIP tcp from %s:%d: %d connections open (at most %d, %d per address)",
                    *peer, len(accepted), MAX_CONNECTIONS, limit,
                )  # fmt: skip
                transport.abort()
                return
        self.transport = transport
        self.peer = peer
        if self._context is not None:
            # Registered once the handshake is done; one that fails is logged (a stranger was
            # refused above, before it cost a handshake).
            self._tls = sip_tls.ServerTls(self._context)
            self._handshake_timer = asyncio.get_running_loop().call_later(
                CONNECT_TIMEOUT, self._tls_failed, f"no handshake within {CONNECT_TIMEOUT:g}s"
            )
            return
        owner.connections[peer] = self

    def _tls_failed(self, why: str) -> None:
        owner = self._owner
        owner.counters["tls_failed"] += 1
        owner.log.warning(("tls_in", self.peer[0]), "TLS from %s:%d: %s", *self.peer, why)
        transport, self.transport = self.transport, None
        if transport is not None:
            transport.abort()

    def _tls_receive(self, tls: sip_tls.ServerTls, data: bytes) -> bytes | None:
        """Decrypt ``data`` (None: the connection failed and is closed); the handshake's replies and
        alerts go out at once."""
        assert self.transport is not None
        handshaking = not tls.established
        try:
            plain = tls.receive(data)
        except ssl.SSLError as exc:
            self.transport.write(tls.pending())  # the alert, so the peer learns why
            self._tls_failed(sip_tls.describe_failure(exc))
            return None
        self.transport.write(tls.pending())
        if handshaking and tls.established:
            if self._handshake_timer is not None:
                self._handshake_timer.cancel()
            self._owner.connections[self.peer] = self
        if tls.closed:
            self.transport.close()
        return plain

    def data_received(self, data: bytes) -> None:
        """Feed, drain, transmit, re-arm."""
        owner = self._owner
        self.last_active = time.monotonic()
        if self.transport is None:
            return  # refused, or its TLS failed: closing
        if self._tls is not None:
            plain = self._tls_receive(self._tls, data)
            if not plain:
                return
            data = plain
        owner.feed(data, self.peer, self)
        owner.flush()

    def connection_lost(self, exc: Exception | None) -> None:
        """Forget the connection; the next request to its peer opens a new one."""
        owner = self._owner
        if self._handshake_timer is not None:
            self._handshake_timer.cancel()
        if self._tls is not None and not self._tls.established and self.transport is not None:
            self._tls_failed("closed during the handshake")  # never a stream of the UA
            return
        if owner.connections.get(self.peer) is self:
            del owner.connections[self.peer]
        if self.transport is not None:
            self.transport = None
            owner.ua.stream_closed(self, time.monotonic())
            owner.flush()

    def write(self, data: bytes) -> None:
        """Write, and close a connection whose peer stopped reading."""
        transport = self.transport
        if transport is None:
            return
        if self._tls is not None:
            if not self._tls.established:
                return
            try:
                self._tls.send(data)
            except ssl.SSLError as exc:
                self._tls_failed(sip_tls.describe_failure(exc))
                return
            data = self._tls.pending()
        transport.write(data)
        self.last_active = time.monotonic()
        if transport.get_write_buffer_size() > MAX_WRITE_BUFFER:
            self._owner.log.warning(
                ("slow", self.peer[0]), "SIP tcp to %s:%d is not reading: closed", *self.peer
            )
            transport.abort()

    def abort(self) -> None:
        """Close at once."""
        if self.transport is not None:
            self.transport.abort()


class SipTransport:
    """The asyncio side of mss's SIP: sockets, the UA's timer, and its events to ``on_event``."""

    def __init__(
        self, settings: UASettings, *, on_event: Callable[[UAEvent], None], resolver: Resolver | None = None
    ) -> None:
        self.ua = UserAgent(settings)
        self.resolver = resolver or Resolver()
        """DNS lookups for pss_host and the outbound proxy (the system's resolv.conf by default)."""
        self._lookups: dict[DnsQuery, asyncio.Task[None]] = {}
        self.on_event = on_event
        self.connections: dict[Addr, _Tcp] = {}
        self._udp: asyncio.DatagramTransport | None = None
        self._server: asyncio.Server | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._armed: float | None = None
        self._connecting: dict[Addr, list[bytes]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._flushing = False
        self._again = False
        self._closed = False
        self._unregistered = asyncio.Event()
        self._tls: ssl.SSLContext | None = None
        """Context of the connections to the PSS with ``transport = tls`` (set by :meth:`open`)."""
        self._sweep: asyncio.TimerHandle | None = None
        self.log = RateLimitedLog(log)
        """Every per-message / per-connection log line of SIP goes through this."""
        self.counters = dict.fromkeys(
            ("handler_errors", "idle_closed", "refused_connections", "tls_failed"), 0
        )
        """Inputs dropped because a handler raised; idle TCP connections closed; connections refused;
        TLS handshakes of accepted connections that failed."""

    # -- lifetime -------------------------------------------------------------------------------

    async def open(self) -> None:
        """Bind UDP and TCP, then start the UA (REGISTER in external line mode)."""
        loop = asyncio.get_running_loop()
        await self._resolve_targets()
        s = self.ua.settings
        tls = s.transport == "tls"
        try:
            listen_tls = sip_tls.server_context(s) if tls else None
            self._tls = sip_tls.client_context(s) if tls else None
        except (OSError, ssl.SSLError) as exc:  # config.check loaded them; a file changed since
            raise TransportError(f"cannot load the SIP TLS files: {exc}") from exc
        try:
            udp, _ = await loop.create_datagram_endpoint(
                lambda: _Udp(self), local_addr=(s.local_host, s.local_port)
            )
            self._udp = udp
            self._grow_receive_buffer(udp.get_extra_info("socket"))
            if not tls or listen_tls is not None:
                self._server = await loop.create_server(
                    lambda: _Tcp(self, tls=listen_tls), s.local_host, s.local_port, reuse_address=True
                )
        except OSError as exc:
            await self.close(unregister=False)
            reason = exc.strerror or str(exc)
            raise TransportError(f"cannot bind SIP on {s.local_host}:{s.local_port}: {reason}") from exc
        proxy = f", outbound proxy {self.ua.proxy.describe()}" if self.ua.proxy is not None else ""
        streams = "tcp" if not tls else "tls" if listen_tls is not None else "no stream listener"
        log.info("SIP on %s:%d (udp+%s), PSS %s over %s%s", s.local_host, s.local_port, streams,
                 self.ua.targets.describe(), s.transport, proxy)  # fmt: skip
        if tls and listen_tls is None:
            log.warning("SIP over TLS without [sip] tls_cert/tls_key: the PSS cannot open a connection to"
                        " mss, only answer on mss's own")  # fmt: skip
        self.ua.start(time.monotonic())
        self.flush()
        self._arm_sweep()

    @staticmethod
    def _grow_receive_buffer(sock: socket.socket | None) -> None:
        """Ask for :data:`UDP_RECEIVE_BUFFER` bytes of receive queue; say what the kernel granted."""
        if sock is None:
            return
        for option in (_SO_RCVBUFFORCE, socket.SO_RCVBUF):
            if option is None:
                continue
            try:
                sock.setsockopt(socket.SOL_SOCKET, option, UDP_RECEIVE_BUFFER)
                break
            except OSError:  # SO_RCVBUFFORCE needs CAP_NET_ADMIN: the capped option then
                continue
        granted = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) // 2  # Linux reports twice the size
        if granted < UDP_RECEIVE_BUFFER:
            log.warning("SIP UDP receive buffer is %d KiB, not the %d KiB asked (net.core.rmem_max)",
                        granted >> 10, UDP_RECEIVE_BUFFER >> 10)

    async def _resolve_targets(self) -> None:
        """Look pss_host (and the outbound proxy) up before the UA starts; TransportError when
        mss would have nowhere to send."""
        ua = self.ua
        for _round in range(RESOLVE_ROUNDS):
            queries = ua.dns_queries(time.monotonic())
            if not queries:
                break
            results = await asyncio.gather(*(self.resolver.lookup(q) for q in queries))
            for query, result in zip(queries, results, strict=True):
                self._dns_result(query, result)
        s = ua.settings
        if ua.proxy is None and not ua.targets.candidates():
            failures = "; ".join(f"{q}: {why}" for q, why in ua.targets.failures().items())
            raise TransportError(f"cannot resolve the PSS {s.pss_host!r}: {failures or 'no address found'}")
        if ua.proxy is not None and not ua.proxy.candidates():
            failures = "; ".join(f"{q}: {why}" for q, why in ua.proxy.failures().items())
            raise TransportError(
                f"cannot resolve the outbound proxy {s.outbound_proxy!r}: {failures or 'no address found'}"
            )
        if any(not entry.literal for entry in ua.targets.entries):
            log.info("PSS %s is %s", s.pss_host, ua.targets.describe())

    def _dns_result(self, query: DnsQuery, result: DnsAnswer | DnsFailure) -> None:
        """Hand a lookup's outcome to the UA; log a failure and a change of addresses."""
        ua = self.ua
        before = (ua.targets.describe(), ua.proxy.describe() if ua.proxy is not None else "")
        ua.dns_answer(query, result, time.monotonic())
        if isinstance(result, DnsFailure):
            self.log.warning(
                ("dns", str(query)), "DNS lookup %s failed: %s; asked again in %.0f s (an earlier answer"
                " is kept meanwhile)", query, result.reason, FAILURE_RETRY,
            )  # fmt: skip
        after = (ua.targets.describe(), ua.proxy.describe() if ua.proxy is not None else "")
        if self._udp is not None and after != before:  # at start, open() says it once
            if after[0] != before[0]:
                log.info("PSS %s is now %s", ua.settings.pss_host, after[0])
            if after[1] != before[1]:
                log.info("outbound proxy %s is now %s", ua.settings.outbound_proxy, after[1])

    def _start_lookups(self) -> None:
        """Start the lookups the UA wants now, one task per query."""
        for query in self.ua.dns_queries(time.monotonic()):
            if query in self._lookups:
                continue
            self._lookups[query] = asyncio.get_running_loop().create_task(self._lookup(query))

    async def _lookup(self, query: DnsQuery) -> None:
        try:
            result = await self.resolver.lookup(query)
        finally:
            self._lookups.pop(query, None)
        if self._closed:
            return
        try:
            self._dns_result(query, result)
        except Exception as exc:
            self._handler_failed(exc, f"DNS answer to {query}")
        self.flush()

    async def close(self, *, unregister: bool = True, timeout: float = 3.0) -> None:
        """Un-REGISTER (waiting at most ``timeout`` s), then close every socket."""
        if self._closed:
            return
        if unregister and self._udp is not None:
            self.ua.shutdown(time.monotonic())
            self.flush()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._unregistered.wait(), timeout)
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._sweep is not None:
            self._sweep.cancel()
            self._sweep = None
        for task in [*self._tasks, *self._lookups.values()]:
            task.cancel()
        for conn in list(self.connections.values()):
            conn.abort()
        self.connections.clear()
        if self._udp is not None:
            self._udp.close()
            self._udp = None
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 1.0)
            self._server = None
        await asyncio.sleep(0)

    # -- the four steps -------------------------------------------------------------------------

    def feed(self, data: bytes, source: Addr, stream: _Tcp | None) -> None:
        """Feed one read to the UA. Whatever the UA raises on it is logged (rate-limited), counted,
        and the input dropped: it never reaches the event loop, and the UA serves the next one."""
        try:
            self.ua.receive_data(data, source, time.monotonic(), stream=stream)
        except Exception as exc:
            self._handler_failed(exc, f"SIP {'tcp' if stream else 'udp'} input from {source[0]}:{source[1]}")

    def _handler_failed(self, exc: Exception, what: str) -> None:
        self.counters["handler_errors"] += 1
        text = str(exc)[:200]
        self.log.error(("handler", type(exc).__name__), "%s dropped: %s: %s", what, type(exc).__name__, text)

    def flush(self) -> None:
        """Drain the UA's events to ``on_event``, transmit its output, re-arm its timer.

        Call it after issuing UA commands. Re-entrant: an ``on_event`` that issues commands and
        calls flush again only makes the running flush go round once more.
        """
        if self._flushing:
            self._again = True
            return
        self._flushing = True
        try:
            while True:
                self._again = False
                ua = self.ua
                while (event := ua.next_event()) is not None:
                    self._note(event)
                    try:
                        self.on_event(event)
                    except Exception as exc:
                        self._handler_failed(exc, f"SIP event {type(event).__name__}")
                for kind, source, text in ua.notices():
                    self.log.warning((kind, source), "%s", text)
                self._transmit()
                if not self._closed:
                    self._start_lookups()
                for stream in ua.streams_to_close():
                    if isinstance(stream, _Tcp):
                        stream.abort()
                if not self._again:
                    break
        finally:
            self._flushing = False
        self._arm()

    def _note(self, event: UAEvent) -> None:
        if isinstance(event, Registered):
            at = self.ua.registrar
            where = f"{at[0]}:{at[1]}" if at else "the PSS"
            log.info("registered as %s@%s at %s (expires %ds)", self.ua.settings.aor_user,
                     self.ua.settings.domain, where, event.expires)  # fmt: skip
        elif isinstance(event, RegistrationFailed):
            log.warning("registration failed: %d %s; retry in %.0fs", event.status, event.reason,
                        max(0.0, event.retry_at - time.monotonic()))  # fmt: skip
        elif isinstance(event, Unregistered):
            self._unregistered.set()
            log.info("unregistered")

    def _transmit(self) -> None:
        if self._closed:
            self.ua.data_to_send()
            return
        reliable = self.ua.settings.reliable
        for data, dest in self.ua.data_to_send():
            conn = self.connections.get(dest)
            if conn is not None and conn.transport is not None:
                conn.write(data)
            elif dest in self._connecting:
                self._queue(dest, data)
            elif reliable:
                self._connecting[dest] = []
                self._queue(dest, data)
                task = asyncio.get_running_loop().create_task(self._connect(dest))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
            elif self._udp is not None:
                self._udp.sendto(data, dest)

    def _queue(self, dest: Addr, data: bytes) -> None:
        queue = self._connecting[dest]
        if sum(len(d) for d in queue) + len(data) > MAX_PENDING_BYTES:
            self.log.warning(("queue_full", dest), "SIP tcp to %s:%d: queue full, message dropped", *dest)
            return
        queue.append(data)

    async def _connect(self, dest: Addr) -> None:
        loop = asyncio.get_running_loop()
        s = self.ua.settings
        name = sip_tls.server_name(dest, (self.ua.proxy, self.ua.targets)) if self._tls is not None else None
        try:
            _transport, proto = await asyncio.wait_for(
                loop.create_connection(lambda: _Tcp(self, outgoing=dest), dest[0], dest[1],
                                       local_addr=(s.local_host, 0), ssl=self._tls, server_hostname=name),
                CONNECT_TIMEOUT,
            )  # fmt: skip
        except (OSError, TimeoutError) as exc:
            self._connecting.pop(dest, None)
            if self._tls is not None:
                named = f" ({name})" if name != dest[0] else ""
                self.log.warning(("tls", dest), "TLS to %s:%d%s: %s", *dest, named,
                                 sip_tls.describe_failure(exc))  # fmt: skip
            else:
                self.log.warning(("connect", dest), "SIP tcp connect to %s:%d failed: %s", *dest, exc)
            self.ua.transport_failed(dest, time.monotonic())
            self.flush()
            return
        queued = self._connecting.pop(dest, [])
        for data in queued:
            proto.write(data)
        log.debug("SIP %s connection to %s:%d open", s.transport, *dest)

    def _arm(self) -> None:
        """Arm the loop timer for the UA's next deadline.

        A timer armed for an earlier deadline is kept (it fires, finds nothing due, and is armed
        again): most messages move the deadline later or not at all, and a re-arm is a cancel and
        a new loop timer each time.
        """
        if self._closed:
            return
        deadline = self.ua.get_timer()
        armed = self._armed if self._timer is not None else None
        if armed is not None and (deadline is None or armed <= deadline):
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._armed = deadline
        if deadline is not None:
            delay = max(0.0, deadline - time.monotonic())
            self._timer = asyncio.get_running_loop().call_later(delay, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._armed = None
        try:
            self.ua.handle_timer(time.monotonic())
        except Exception as exc:
            self._handler_failed(exc, "SIP timer")
        self.flush()

    # -- idle TCP connections -------------------------------------------------------------------

    def _arm_sweep(self) -> None:
        if self._closed:
            return
        every = min(IDLE_SWEEP_MAX, self.ua.settings.tcp_idle_timeout / 4)
        self._sweep = asyncio.get_running_loop().call_later(every, self._sweep_idle)

    def _sweep_idle(self) -> None:
        """Close accepted connections idle for ``tcp_idle_timeout`` that no live transaction uses."""
        self._sweep = None
        limit = self.ua.settings.tcp_idle_timeout
        now = time.monotonic()
        for conn in list(self.connections.values()):
            if conn.outgoing or now - conn.last_active < limit or self.ua.live_for(conn.peer):
                continue
            self.counters["idle_closed"] += 1
            self.log.info(("idle", conn.peer[0]), "SIP tcp from %s:%d idle for %.0fs: closed", *conn.peer,
                          now - conn.last_active)  # fmt: skip
            conn.abort()
        self._arm_sweep()

    # -- strangers ------------------------------------------------------------------------------

    def note_stranger(self, source: Addr, transport: str) -> None:
        """Log a datagram the UA dropped because it did not come from the PSS."""
        if not self.ua.accepts(source[0]):
            self.log_refusal(source, transport)

    def log_refusal(self, peer: Addr, transport: str) -> None:
        """Log a refused stranger (rate-limited per address)."""
        self.log.warning(("stranger", peer[0]), "dropped SIP %s from %s:%d: not the PSS", transport, *peer)
