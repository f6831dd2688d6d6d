"""The IIF server: TCP and UDP adapters between sockets, :mod:`mss.iif` and the callback desk.

Strangers never get a byte: a TCP connection from an address not in ``[peer_servers]`` is closed in
``connection_made`` before anything is read, a UDP datagram from one is dropped; each refusal is
logged (rate-limited per address so a scan cannot flood the log).

Kept RESPONSEs and probes (the desk's rule, :mod:`mss.desk`): a peer's new connection that has sent no
message is told to the desk as *held* only after :data:`PROBE_HOLD` seconds open; what the desk then
writes on trial counts as delivered once the kernel's send queue for it has drained (``SIOCOUTQ``) and
the connection stayed open :data:`CONFIRM_HOLD` more seconds, or the AS closed it in order (a FIN:
RFC 1122 §4.2.2.13, a host that closes with data unread sends a RST instead), or the AS sends a
message. A reset or a close before that leaves them kept.
"""

from __future__ import annotations

import asyncio
import fcntl
import ipaddress
import logging
import os
import socket
import struct
import termios
import time
from collections.abc import Sequence
from typing import cast

from mss.config import PeerServer
from mss.desk import CallbackDesk, Sender
from mss.errors import IIFError, TransportError
from mss.iif import CallbackRequest, Cancel, IIFConnection, Role, parse_datagram
from mss.ratelog import RateLimitedLog

__all__ = ["MAX_CONNECTIONS", "IIFServer", "PeerTable"]

log = logging.getLogger("mss.iif")

#: Open IIF TCP connections at most (all peers together): an AS needs a handful; this bounds sockets.
MAX_CONNECTIONS = 256

#: Bytes queued for a slow AS before mss stops reading its requests (resumes when it drains).
WRITE_HIGH_WATER = 1 << 20

#: Datagrams held while the server is bound but not yet serving (start-up takes milliseconds).
MAX_EARLY_DATAGRAMS = 256

#: Seconds a new connection that has sent nothing must stay open before kept RESPONSEs are written to
#: it: health checks and port probes close within milliseconds, an AS keeps its connection.
PROBE_HOLD = 0.5

#: Seconds a connection must stay open after the kernel sent (and the peer acknowledged) a kept
#: RESPONSE before it counts as delivered: a probe that did not read resets the connection on close.
CONFIRM_HOLD = 1.0

#: Seconds between two looks at the kernel's send queue while a kept RESPONSE is on trial.
SEND_QUEUE_POLL = 0.05


def _plain_address(host: str) -> str:
    """``host`` as [peer_servers] writes it: an IPv4 peer seen through a dual-stack (``::``) socket
    as ``::ffff:a.b.c.d`` (RFC 4291 §2.5.5.2) is ``a.b.c.d``; an IPv6 address in its compressed
    form (RFC 5952) without a zone."""
    try:
        address = ipaddress.ip_address(host.partition("%")[0])
    except ValueError:
        return host
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(address)


def _is_ipv6_any(host: str) -> bool:
    """True for ``::``, the IPv6 (and, dual-stack, IPv4) wildcard."""
    try:
        return ipaddress.ip_address(host) == ipaddress.IPv6Address("::")
    except ValueError:
        return False


def _dual_stack_socket(kind: socket.SocketKind, port: int, reuse_port: bool) -> socket.socket:
    """A non-blocking socket bound on ``[::]:port`` that also takes IPv4 (``IPV6_V6ONLY`` off)."""
    sock = socket.socket(socket.AF_INET6, kind)
    try:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        if kind == socket.SOCK_STREAM:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as asyncio does for TCP
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.setblocking(False)
        sock.bind(("::", port))
    except OSError:
        sock.close()
        raise
    return sock


def _for_socket(addr: tuple[str, int], transport: asyncio.BaseTransport) -> tuple[str, int]:
    """``addr`` in the UDP socket's family: an IPv4 peer through a dual-stack socket is reached at
    ``::ffff:a.b.c.d`` (uvloop does not map it by itself)."""
    sock = transport.get_extra_info("socket")
    if sock is not None and sock.family == socket.AF_INET6 and "." in addr[0] and ":" not in addr[0]:
        return ("::ffff:" + addr[0], addr[1])
    return addr


class PeerTable:
    """Which configured peer an address is (SPEC.md, [peer_servers]); IPv4 peers match whether they
    reach an IPv4 socket or a dual-stack IPv6 one."""

    def __init__(self, peers: Sequence[PeerServer]) -> None:
        # Entries with a port first: they are the more specific match.
        self._peers = sorted(peers, key=lambda p: p.port is None)
        self._hosts = [_plain_address(p.host) for p in self._peers]
        # (host, transport) -> [when last logged, refusals not logged since]
        self._refusals = RateLimitedLog(log)

    def match(self, host: str, port: int, transport: str) -> PeerServer | None:
        """The peer at ``host:port``; on UDP the source port is not checked (replies use the config)."""
        host = _plain_address(host)
        for peer, peer_host in zip(self._peers, self._hosts, strict=True):
            if peer_host == host and (peer.port is None or transport == "udp" or peer.port == port):
                return peer
        return None

    def log_refusal(self, host: str, port: int, transport: str) -> None:
        """Log a stranger (rate-limited per address and transport)."""
        self._refusals.warning((host, transport), "refused IIF %s from %s:%d: not a configured peer server",
                               transport, host, port)


class _StreamProtocol(asyncio.Protocol):
    """One IIF TCP connection: feed, drain events, answer, re-arm the idle timer."""

    def __init__(self, server: IIFServer) -> None:
        self._server = server
        self._conn = IIFConnection(Role.SERVER, max_duration=server.max_duration)
        self._transport: asyncio.Transport | None = None
        self._timer: asyncio.TimerHandle | None = None
        self.peer = ""
        self._origin: Sender | None = None
        self._closing = False  # the AS ended the stream: nothing more is routed here
        self._trial_timer: asyncio.TimerHandle | None = None  # the probe hold, then the delivery check
        self._drained_at: float | None = None  # when the send queue was first seen empty on trial

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)  # uvloop's classes do not subclass asyncio's
        host, port = transport.get_extra_info("peername")[:2]
        peer = self._server.peers.match(host, port, "tcp")
        if peer is None:
            self._server.peers.log_refusal(host, port, "tcp")
            transport.abort()
            return
        if len(self._server.connections) >= MAX_CONNECTIONS:
            self._server.conn_log.warning(
                (peer.name, "full"), "refused IIF tcp from %s:%d: %d connections open", host, port,
                MAX_CONNECTIONS,
            )
            transport.abort()
            return
        self._transport = transport
        transport.set_write_buffer_limits(high=WRITE_HIGH_WATER)
        self.peer = peer.name
        self._origin = Sender(peer=peer.name, transport="tcp", outlet=self)
        self._server.connections.add(self)
        self._server.conn_log.info((peer.name, "open"), "IIF connection from %s (%s:%d)", peer.name, host,
                                   port)
        self._server.desk.open_outlet(self)
        self._trial_timer = asyncio.get_running_loop().call_later(PROBE_HOLD, self._on_held)

    def data_received(self, data: bytes) -> None:
        self._conn.receive_data(data, time.monotonic())
        self._drain()

    def eof_received(self) -> bool:
        # The AS is done with this connection. A FIN cannot be told from a full close, and a RESPONSE
        # written to a closed socket is lost: answer what arrived, then let RESPONSEs wait for the
        # peer's next connection. Returning False closes the transport once the ACKs are written.
        desk = self._server.desk
        if desk.on_trial(self) and self._unsent() == 0:
            # An orderly close after the peer's kernel acknowledged everything: the AS read it all
            # (RFC 1122 §4.2.2.13: closing with data unread sends a RST, not a FIN).
            desk.confirm_trial(self)
        # Gone for RESPONSEs before the last messages are handled: their ACKs are still written, but
        # nothing kept (or ended at once) is routed into a connection the AS has ended.
        desk.close_outlet(self)
        self._conn.receive_data(b"", time.monotonic())
        self._drain()
        desk.flush()  # the last ACKs are written before the transport closes (group commit holds them)
        self._closing = True
        return False

    def _drain(self) -> None:
        messages: list[CallbackRequest | Cancel | IIFError] = []
        while True:
            try:
                event = self._conn.next_event()
            except IIFError as exc:
                messages.append(exc)
                continue
            if event is None:
                break
            assert isinstance(event, CallbackRequest | Cancel)
            messages.append(event)
        if messages and self._origin is not None:
            self._server.desk.handle(messages, self._origin)
        self._arm_timer()

    def _arm_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        deadline = self._conn.get_timer()
        if deadline is not None:
            loop = asyncio.get_running_loop()
            self._timer = loop.call_at(loop.time() + max(0.0, deadline - time.monotonic()), self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._conn.handle_timer(time.monotonic())
        self._drain()

    # --- kept RESPONSEs on trial --------------------------------------------------------------------

    def _on_held(self) -> None:
        """Open :data:`PROBE_HOLD` seconds: the desk may write what the peer is owed, on trial."""
        self._trial_timer = None
        if self._transport is None or self._closing or self._transport.is_closing():
            return
        self._server.desk.outlet_held(self)  # what it writes on trial calls trial_started()

    def trial_started(self) -> None:
        """Outlet: RESPONSEs were written on trial; watch for their confirmation."""
        self._drained_at = None  # the hold starts again: the new bytes must drain and be held too
        if self._trial_timer is None and self._transport is not None:
            self._trial_timer = asyncio.get_running_loop().call_later(0, self._watch_trial)

    def _watch_trial(self) -> None:
        """Confirm what is on trial once the send queue drained and :data:`CONFIRM_HOLD` passed."""
        self._trial_timer = None
        if self._transport is None or self._closing or not self._server.desk.on_trial(self):
            self._drained_at = None
            return
        now = time.monotonic()
        if self._unsent() > 0:
            self._drained_at = None
        elif self._drained_at is None:
            self._drained_at = now
        elif now - self._drained_at >= CONFIRM_HOLD:
            self._drained_at = None
            self._server.desk.confirm_trial(self)
            return
        delay = SEND_QUEUE_POLL if self._drained_at is None else CONFIRM_HOLD - (now - self._drained_at)
        self._trial_timer = asyncio.get_running_loop().call_later(max(delay, 0.0), self._watch_trial)

    def _unsent(self) -> int:
        """Bytes written to this connection that the peer's kernel has not acknowledged yet: asyncio's
        buffer plus the kernel's send queue (SIOCOUTQ, which Linux names TIOCOUTQ for sockets)."""
        if self._transport is None:
            return 0
        queued = self._transport.get_write_buffer_size()
        sock = self._transport.get_extra_info("socket")
        if sock is None:
            return queued
        try:
            raw = fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0\0\0\0")
        except OSError:
            return queued + 1  # unknown: not drained
        return queued + int(struct.unpack("i", raw)[0])

    def write(self, data: bytes) -> bool:
        """Outlet: write to the AS; False when the connection is closed or the AS ended it."""
        if self._transport is None or self._closing or self._transport.is_closing():
            return False
        self._transport.write(data)
        return True

    def pending_bytes(self) -> int:
        """Bytes written but not yet handed to the kernel."""
        if self._transport is None or self._transport.is_closing():
            return 0
        return self._transport.get_write_buffer_size()

    def pause_writing(self) -> None:
        # The AS does not read its answers: stop reading its orders until it catches up.
        if self._transport is not None:
            self._transport.pause_reading()

    def resume_writing(self) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if self._trial_timer is not None:
            self._trial_timer.cancel()
            self._trial_timer = None
        if self._transport is None:
            return
        self._server.connections.discard(self)
        self._server.desk.close_outlet(self)
        self._server.conn_log.info((self.peer, "close"), "IIF connection from %s closed%s", self.peer,
                                   f": {exc}" if exc else "")
        self._transport = None

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()


class _DatagramProtocol(asyncio.DatagramProtocol):
    """IIF over UDP: one message per datagram."""

    def __init__(self, server: IIFServer) -> None:
        self._server = server
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if not self._server.serving:
            # Bound but not yet serving (start-up recovery runs first): hold a few, drop a flood.
            if len(self._server.early_datagrams) < MAX_EARLY_DATAGRAMS:
                self._server.early_datagrams.append((data, addr))
            return
        host, port = addr[:2]
        peer = self._server.peers.match(host, port, "udp")
        if peer is None:
            self._server.peers.log_refusal(host, port, "udp")
            return
        message: CallbackRequest | Cancel | IIFError
        try:
            event = parse_datagram(data, max_duration=self._server.max_duration)
            assert isinstance(event, CallbackRequest | Cancel)
            message = event
        except IIFError as exc:
            message = exc
        reply = (peer.host, peer.port) if peer.port is not None else (host, port)
        self._server.desk.handle([message], Sender(peer=peer.name, transport="udp", reply_addr=reply))

    def error_received(self, exc: Exception) -> None:
        self._server.conn_log.warning(("udp", type(exc).__name__), "IIF udp: %s", exc)


class IIFServer:
    """Listens for IIF on TCP and UDP at one address."""

    def __init__(self, desk: CallbackDesk, peers: Sequence[PeerServer], *, max_duration: int) -> None:
        self.desk = desk
        self.peers = PeerTable(peers)
        self.max_duration = max_duration
        self.connections: set[_StreamProtocol] = set()
        self.conn_log = RateLimitedLog(log)  # a peer reconnecting in a loop must not flood the log
        self._tcp: asyncio.Server | None = None
        self._udp: _DatagramProtocol | None = None
        self.serving = False
        self.early_datagrams: list[tuple[bytes, tuple[str, int]]] = []

    async def start(self, host: str, port: int, *, reuse_port: bool = False) -> None:
        """Bind TCP and UDP on ``host:port`` without serving yet (see :meth:`serve`).

        ``reuse_port``: SO_REUSEPORT on both, so that the workers of one ``mss run`` share the port
        (the kernel spreads connections and datagrams over them). Raises :class:`TransportError` when
        it cannot bind.
        """
        loop = asyncio.get_running_loop()
        try:
            if _is_ipv6_any(host):
                # asyncio makes an IPv6 listener IPv6-only: bind ``::`` ourselves to take IPv4 too
                tcp_sock = _dual_stack_socket(socket.SOCK_STREAM, port, reuse_port)
                self._tcp = await loop.create_server(
                    lambda: _StreamProtocol(self), sock=tcp_sock, start_serving=False
                )
                _, protocol = await loop.create_datagram_endpoint(
                    lambda: _DatagramProtocol(self),
                    sock=_dual_stack_socket(socket.SOCK_DGRAM, port, reuse_port),
                )
            else:
                self._tcp = await loop.create_server(
                    lambda: _StreamProtocol(self), host, port, reuse_address=True, start_serving=False,
                    reuse_port=reuse_port or None,
                )
                _, protocol = await loop.create_datagram_endpoint(
                    lambda: _DatagramProtocol(self), local_addr=(host, port), reuse_port=reuse_port or None
                )
        except OSError as exc:
            if self._tcp is not None:
                self._tcp.close()
            reason = os.strerror(exc.errno) if exc.errno else str(exc)  # uvloop sets errno, not strerror
            raise TransportError(f"cannot listen for IIF on {host}:{port}: {reason}") from exc
        self._udp = protocol
        self._address = (host, port)

    async def serve(self) -> None:
        """Start taking connections and datagrams (after start-up recovery)."""
        assert self._tcp is not None and self._udp is not None
        self.serving = True
        await self._tcp.start_serving()
        early, self.early_datagrams = self.early_datagrams, []
        for data, addr in early:
            self._udp.datagram_received(data, addr)
        host, port = self._address
        log.info("IIF listening on %s:%d (tcp and udp)", f"[{host}]" if ":" in host else host, port)

    def send_datagram(self, data: bytes, addr: tuple[str, int]) -> bool:
        """Send an IIF datagram (ACK or RESPONSE over UDP); False when the UDP socket is closed."""
        if self._udp is not None and self._udp.transport is not None and not self._udp.transport.is_closing():
            self._udp.transport.sendto(data, _for_socket(addr, self._udp.transport))
            return True
        self.conn_log.error(("udp", "closed"), "IIF udp is closed; %r to %s:%d not sent", data, *addr)
        return False

    def stop_listening(self) -> None:
        """Stop taking new connections and datagrams; open connections stay for their RESPONSEs."""
        if self._tcp is not None:
            self._tcp.close()

    async def close(self) -> None:
        """Close everything, letting queued writes go out first."""
        self.stop_listening()
        for conn in list(self.connections):
            conn.close()
        if self._udp is not None and self._udp.transport is not None:
            self._udp.transport.close()
        if self._tcp is not None:
            await self._tcp.wait_closed()
