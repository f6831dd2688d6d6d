"""The media relay's control surface: Python decides, ``mss._rtp`` forwards.

A :class:`Relay` owns one native packet loop (started by the constructor) and a range of UDP ports.
Each :class:`RelaySession` holds two legs, ``a`` and ``b``; a leg is an even RTP port and the RTCP
port above it. What a leg receives is forwarded out of the other leg's socket of the same kind:

- **latching with endpoint learning** (symmetric RTP, as rtpengine's ``endpoint-learning=heuristic``
  and Asterisk's ``strictrtp``): a leg sends to the remote that signalling gave
  (:meth:`RelaySession.set_remote`) until it latches, then to the latched source, and from then on
  accepts only that source. The signalled address and port latch on their first packet (and take
  over a leg latched on a learned source); RTCP also latches on the address its RTP latched on; any
  other source (one from the signalled address with another port preferred, as behind a NAT) latches
  only after ``learn_ms`` from the leg's first learning packet AND ``learn_packets`` packets in a row
  (one SSRC, consecutive sequence numbers). Packets from a source that is still learning are dropped
  (``learning``), never forwarded: a stranger's audio must not reach the other phone, and a NATed
  phone losing the first ``learn_ms`` of its audio is the price. A leg with no signalled remote
  learns every source that way. :meth:`RelaySession.relatch` restarts learning;
- **forwarding** per direction (:meth:`set_forwarding`, :meth:`bridge`, :meth:`unbridge`);
- **payload-type rewrite** per direction (:meth:`set_pt_rewrite`): only the header's PT changes,
  payload bytes leave exactly as they arrived;
- **playing** frames into a leg (:meth:`play`, ringback): while a leg plays, nothing is forwarded
  into it;
- **statistics** (:meth:`stats`, :attr:`Relay.counters`): per leg packets and bytes in and out,
  drops by reason, last receive time, SSRC, sequence gaps, jitter.

Drop reasons (each a counter on the leg the packet arrived on, except ``send`` which is counted on
the leg it was sent to):

========== =========================================================================================
short      too short to be RTP (12 bytes) or RTCP (8 bytes)
malformed  not version 2, a header longer than the datagram, bad padding, an RTCP type outside
           192-223, or larger than a receive buffer
source     from another source than the latched one
learning   from a source that is not (yet) allowed to latch: still in its learning window, not in
           sequence, or RTCP before its RTP latched (see latching above)
no_remote  nowhere to send it yet: the other leg has no remote (signalled or latched)
disabled   forwarding is off in that direction, or the other leg is playing
send       the kernel refused the send (socket buffer full, ...): dropped, never queued
========== =========================================================================================

Ports: a session's pairs are chosen at random from the range (a stranger cannot predict the next
call's ports), among pairs not used recently (:class:`PortAllocator`); :meth:`Relay.quarantine`
keeps given pairs out of use for a while (the ports of calls cut by a crash, whose phones may still
be sending).

Sockets: IPv4 and IPv6, in the family of ``host``. A relay on an IPv4 address reaches IPv4 remotes
(``AF_INET`` sockets), one on an IPv6 address IPv6 remotes (``AF_INET6``); one on ``::`` is
dual-stack, an IPv4 remote being its IPv4-mapped form (``::ffff:a.b.c.d``, RFC 4291 §2.5.5.2), and
a session's legs may face different families (one leg IPv4, the other IPv6; such a direction stays
in userspace, the kernel path rewrites addresses, not IP versions). The data plane takes and gives
addresses as 16 bytes, IPv4 mapped.

A leg's RTP port has two sockets (``SO_REUSEPORT``, bound only after an exclusive bind showed
nobody else holds the port): as soon as the leg has a remote (signalled or
latched) one is connected to it (the kernel then hands it that source only and sends need no
address) and the other takes datagrams from everyone else, so they are latched or counted there.
The RTCP port has one socket.

Kernel fast path (``kernel_forwarding``): a tcx ingress BPF program (``mss/bpf/``, loaded by
``mss._kfwd``, on the interface that holds ``host`` and on ``lo``) forwards a bridged direction in
the kernel once the relay has latched it: on ``lo`` the rewritten packet goes up to the phone's
socket; from another interface it leaves by the relay's own route (a FIB lookup and a redirect
through the neighbour table). The packet loop hands a direction (RTP or RTCP, each way) to the
program's map as soon as its source is latched, it forwards, and the other leg has a remote and is
not playing, with **strict source** (only the latched address and port) and the payload-type map.
The program forwards exactly what the loop would forward from that source (the same header checks;
RTCP multiplexed on the RTP port passes as RTCP); anything else (another source, a datagram the
loop drops) comes up to the loop as before. Every verb that changes any of this (``set_remote``,
``relatch``, ``set_forwarding``, ``set_pt_rewrite``, ``play``, ``stop_play``, close) takes the
session's entries out first, and a latch in the packet loop judges them again. The program counts
what it forwards (packets, bytes, last receive time, SSRC, sequence gaps and jitter, as the loop
does); the loop merges those counts into :attr:`Relay.counters` every second (``KSYNC_MS``) and
when an entry is taken out, and :meth:`RelaySession.stats` reads its session's entries at once.
What stays in userspace: learning and latching, drops and their counters (the program drops
nothing), played frames (ringback); a delivery the kernel could not make (a full socket buffer of
the far phone) is counted in the kernel's UDP statistics, not as a ``send`` drop.

Threading: every verb holds one lock (:attr:`Relay.lock` on the Python side, and the packet loop's
own mutex on the C side); the packet loop never takes the GIL. The loop takes the mutex for each
batch, so a verb waits at most one batch. Work a verb leaves to the loop (arming an opened session's
receives with io_uring, a play's first frame) is done within 10 ms without waking it: while sessions
are open the loop sleeps no longer, and a busy one comes by every ``gather_us``; only an idle loop
is woken (a system call and a context switch). :meth:`RelaySession.close` is such a verb: the
session stops being forwarded, played and counted at once, and the loop closes its sockets on its
next turn (the ports stay bound until then: a new session binds others, and its slot is taken again
last); :meth:`Relay.wait_closed` (or ``close(wait=True)``) waits for that, :meth:`Relay.close` for
everything.
"""

from __future__ import annotations

import dataclasses
import errno
import fcntl
import functools
import heapq
import ipaddress
import logging
import os
import socket
import struct
import threading
import time
import typing
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from types import TracebackType
from typing import Literal

import numpy as np
import numpy.typing as npt

from mss import _kfwd, _rtp
from mss.errors import PortsExhausted, RelayError

__all__ = [
    "FIELDS",
    "Drops",
    "KernelPathUnavailable",
    "LegStats",
    "PortAllocator",
    "Relay",
    "RelaySession",
    "SessionStats",
]

log = logging.getLogger(__name__)

KernelPathUnavailable = _kfwd.KernelPathUnavailable

#: ``kernel_forwarding`` values: ``no`` (userspace only), ``yes`` (the kernel path or an error),
#: ``auto`` (the kernel path when it loads, else a log line and userspace).
KERNEL_FORWARDING = ("no", "yes", "auto")

LegName = Literal["a", "b"]

#: Names of the counters on the last axis of :attr:`Relay.counters`.
FIELDS: tuple[str, ...] = _rtp.FIELDS
_F = {name: i for i, name in enumerate(FIELDS)}

_LEGS: dict[str, int] = {"a": 0, "b": 1}

#: Bind errors that mean "this port is taken": skip to the next pair.
_PORT_TAKEN = frozenset({errno.EADDRINUSE, errno.EACCES, errno.EADDRNOTAVAIL})

#: RTP clock of the payload types the jitter is computed for (PCMU, PCMA, G.729, ...).
_CLOCK_RATE = 8000

#: Milliseconds of endpoint learning, from a leg's first packet that is not from its signalled
#: remote, before such a source may latch: long enough for the phone the SDP names to speak first
#: (rtpengine's heuristic learning waits 3 s), short enough that a NATed phone loses little audio.
LEARN_WINDOW_MS = 2000

#: Packets in a row (one SSRC, consecutive sequence numbers) a source must send before it may latch
#: as a leg's remote without matching the signalled one (Asterisk's strictrtp probation is 4): a
#: spray of single packets over the port range never qualifies.
LEARN_PACKETS = 4


def _leg_index(leg: str) -> int:
    try:
        return _LEGS[leg]
    except KeyError:
        raise RelayError(f"leg must be 'a' or 'b', not {leg!r}") from None


#: Remote addresses whose parsed form is kept (:func:`_address`): a carrier's media comes from a few
#: gateways and SBCs, so a small cache answers nearly every call; bounded, as remotes come from SDP.
ADDRESS_CACHE = 1024


@functools.lru_cache(maxsize=ADDRESS_CACHE)
def _address(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """``host`` as an address; an IPv4-mapped IPv6 address is its IPv4 address."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise RelayError(f"not an IP address: {host!r}") from None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _packed(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bytes:
    """The 16 bytes the data plane takes: IPv6, or IPv4 as ``::ffff:a.b.c.d``."""
    return address.packed if address.version == 6 else b"\0" * 10 + b"\xff\xff" + address.packed


@functools.lru_cache(maxsize=ADDRESS_CACHE)
def _remote(host: str) -> tuple[bytes, int, bool]:
    """``host`` as :meth:`RelaySession.set_remote` hands it over: the data plane's 16 bytes, the IP
    version, and whether it is unspecified (a hold); a remote is read once per call."""
    address = _address(host)
    return _packed(address), address.version, address.is_unspecified


@functools.lru_cache(maxsize=ADDRESS_CACHE)
def _unpacked(packed: bytes) -> str:
    """The data plane's 16 bytes as text: an IPv4-mapped address as IPv4 (cached as
    :func:`_address`: the stats of every call name one of a few remotes)."""
    address = ipaddress.IPv6Address(packed)
    return str(address.ipv4_mapped or address)


#: Bytes of system randomness read at once by :class:`_Random`: one getrandom() call serves about
#: a thousand port choices, where ``secrets`` makes one call per number.
RANDOM_BLOCK = 4096


class _Random:
    """Unpredictable numbers (port choices, a played stream's SSRC) from ``os.urandom``, read in
    blocks of :data:`RANDOM_BLOCK` bytes; each byte is used once."""

    __slots__ = ("_at", "_block")

    def __init__(self) -> None:
        self._block = b""
        self._at = 0

    def take(self, n: int) -> bytes:
        """``n`` random bytes (``n`` <= :data:`RANDOM_BLOCK`)."""
        at = self._at
        if at + n > len(self._block):
            self._block, at = os.urandom(RANDOM_BLOCK), 0
        self._at = at + n
        return self._block[at : at + n]

    def below(self, n: int) -> int:
        """A uniform integer in ``[0, n)``, ``0 < n <= 2**32`` (32-bit draws, rejection sampling as
        ``secrets.randbelow`` does with bits)."""
        limit = (1 << 32) - (1 << 32) % n  # the largest multiple of n that 32 bits hold
        while True:
            x = int.from_bytes(self.take(4), "big")
            if x < limit:
                return x % n


#: ``SIOCGIFADDR`` (<linux/sockios.h>): an interface's IPv4 address.
_SIOCGIFADDR = 0x8915


def _interface_of(host: ipaddress.IPv4Address | ipaddress.IPv6Address) -> int | None:
    """The index of the interface whose (primary) IPv4 address, or one of whose IPv6 addresses, is
    ``host``, or None."""
    if host.version == 6:
        return _interface_of_ipv6(host)
    packed = host.packed
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        for index, name in socket.if_nameindex():
            try:
                reply = fcntl.ioctl(probe.fileno(), _SIOCGIFADDR, struct.pack("256s", name.encode()))
            except OSError:
                continue  # no IPv4 address
            if reply[20:24] == packed:
                return index
    return None


def _interface_of_ipv6(host: ipaddress.IPv4Address | ipaddress.IPv6Address) -> int | None:
    # /proc/net/if_inet6: address (32 hex digits), interface index (hex), prefix, scope, flags, name
    try:
        with open("/proc/net/if_inet6") as table:
            for line in table:
                fields = line.split()
                if len(fields) >= 2 and fields[0] == host.packed.hex():
                    return int(fields[1], 16)
    except OSError:
        return None
    return None


#: Share of the range's pairs that a freed pair waits behind before it may be chosen again: with
#: half the range cooling, a pair is reused only after as many calls as half the range has pairs
#: have ended since (stray packets of an old call seldom reach a new one), or when nothing else is
#: free.
COOLING_SHARE = 0.5


# A played stream's random SSRC (32 bits), first sequence number (16) and timestamp (32): drawn
# with one read of the system's random source.
_PLAY_START = struct.Struct("!IHI")

# The payload-type map that rewrites nothing.
_PT_IDENTITY = bytes(range(128))


class PortAllocator:
    """Even RTP ports in ``[port_min, port_max]`` (RTCP = RTP + 1), chosen at random.

    :meth:`take` picks uniformly (system randomness) among the *ready* pairs (never used, or freed long
    ago), so the next call's ports cannot be guessed. A freed pair *cools*: it waits in a queue and
    becomes ready again only once the queue holds more than :data:`COOLING_SHARE` of the range, or
    when no ready pair is left (then the pair freed longest ago goes first), so a port is reused
    late. :meth:`quarantine` keeps pairs out of use until a time of ``clock``. Every operation is
    O(1), apart from quarantining (done at start) and its expiry (O(log n) per pair).
    """

    def __init__(
        self, port_min: int, port_max: int, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if not 1 <= port_min <= port_max <= 65535:
            raise RelayError(f"bad RTP port range {port_min}..{port_max}")
        first = port_min + (port_min % 2)
        self._ready: list[int] = list(range(first, port_max, 2))
        self._where: dict[int, int] = {port: i for i, port in enumerate(self._ready)}
        self._cooling: deque[int] = deque()
        self._taken: set[int] = set()
        self._held: dict[int, float] = {}  # quarantined port -> until
        self._expiry: list[tuple[float, int]] = []  # heap of (until, port), stale entries skipped
        self._clock = clock
        self._random = _Random()
        if len(self._ready) < 2:
            raise RelayError(f"RTP port range {port_min}..{port_max} holds no two port pairs")
        self.pairs = len(self._ready)
        """How many RTP/RTCP pairs the range holds."""
        self._cooling_max = int(self.pairs * COOLING_SHARE)

    def take(self) -> int:
        """A free even port, at random; raises :class:`PortsExhausted` when none is left."""
        self._expire()
        if self._ready:
            port = self._pop_ready(self._random.below(len(self._ready)))
        elif self._cooling:
            port = self._cooling.popleft()
        else:
            held = f", {len(self._held)} in quarantine" if self._held else ""
            raise PortsExhausted(f"all {self.pairs} RTP port pairs are in use{held}")
        self._taken.add(port)
        return port

    def give(self, port: int) -> None:
        """Return a pair taken with :meth:`take` (it cools before it is chosen again)."""
        self._taken.remove(port)
        if port not in self._held:  # quarantined while in use: it comes back when that ends
            self._cool(port)

    def quarantine(self, ports: Iterable[int], until: float) -> int:
        """Keep the pairs of these RTP ports out of use until ``until`` (a time of ``clock``).

        Ports outside the range or odd are ignored. A pair in use goes into quarantine when it is
        given back. Returns how many pairs of the range were named.
        """
        count = 0
        for port in set(ports):
            known = port in self._where or port in self._taken or port in self._held
            if not known and port not in self._cooling:
                continue
            count += 1
            if port in self._where:
                self._pop_ready(self._where[port])
            elif port in self._cooling:
                self._cooling.remove(port)
            if until > self._held.get(port, float("-inf")):
                self._held[port] = until
                heapq.heappush(self._expiry, (until, port))
        return count

    @property
    def free(self) -> int:
        """Pairs that :meth:`take` may hand out now (quarantined ones are not)."""
        self._expire()
        return len(self._ready) + len(self._cooling)

    @property
    def quarantined(self) -> int:
        """Pairs in quarantine now."""
        self._expire()
        return len(self._held)

    def _pop_ready(self, i: int) -> int:
        port = self._ready[i]
        last = self._ready.pop()
        if last != port:  # move the last one into the hole: O(1)
            self._ready[i] = last
            self._where[last] = i
        del self._where[port]
        return port

    def _cool(self, port: int) -> None:
        self._cooling.append(port)
        while len(self._cooling) > self._cooling_max:
            ready = self._cooling.popleft()
            self._where[ready] = len(self._ready)
            self._ready.append(ready)

    def _expire(self) -> None:
        if not self._expiry:
            return
        now = self._clock()
        while self._expiry and self._expiry[0][0] <= now:
            until, port = heapq.heappop(self._expiry)
            if self._held.get(port) != until:
                continue  # quarantined again for longer since
            del self._held[port]
            if port not in self._taken:
                self._cool(port)


@dataclass(frozen=True, slots=True, kw_only=True)
class Drops:
    """Datagrams dropped, by reason (see the module docstring)."""

    short: int
    """Too short to be RTP or RTCP."""
    malformed: int
    """Not RTP/RTCP version 2, inconsistent header, or too large."""
    source: int
    """From a source other than the latched one."""
    learning: int
    """From a source not (yet) allowed to latch: endpoint learning (see the module docstring)."""
    no_remote: int
    """The other leg had no destination yet."""
    disabled: int
    """Forwarding off in that direction, or the other leg was playing."""
    send: int
    """The kernel refused the send (counted on the leg it was for)."""

    @property
    def total(self) -> int:
        """All drops together."""
        return (
            self.short
            + self.malformed
            + self.source
            + self.learning
            + self.no_remote
            + self.disabled
            + self.send
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class LegStats:
    """One leg's counters at the time of :meth:`RelaySession.stats`."""

    rtp_packets_in: int
    """RTP packets accepted from the leg's remote."""
    rtp_bytes_in: int
    """Their UDP payload bytes (RTP header included)."""
    rtp_packets_out: int
    """RTP packets sent to the leg's remote: forwarded from the other leg, and played."""
    rtp_bytes_out: int
    """Their UDP payload bytes."""
    rtcp_packets_in: int
    """RTCP packets accepted."""
    rtcp_bytes_in: int
    """Their bytes."""
    rtcp_packets_out: int
    """RTCP packets sent to the leg's remote."""
    rtcp_bytes_out: int
    """Their bytes."""
    played_packets: int
    """RTP packets played into the leg (part of ``rtp_packets_out``)."""
    drops: Drops
    """Drops by reason."""
    last_rx: float | None
    """``time.monotonic()`` of the last RTP packet accepted (to within the gather time), or None."""
    last_rtcp_rx: float | None
    """``time.monotonic()`` of the last RTCP packet accepted, or None."""
    ssrc: int | None
    """SSRC of the last RTP packet accepted, or None before the first."""
    seq_gaps: int
    """Sequence numbers skipped (lost or still to come) since the SSRC was first seen."""
    jitter_ms: float
    """RFC 3550 interarrival jitter, in milliseconds (8 kHz audio payload types only)."""
    remote: tuple[str, int] | None
    """Where the leg's RTP goes: the latched source, else the signalled remote, else None."""
    latched: bool
    """The RTP remote was learned from a packet (only that source is accepted)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionStats:
    """Both legs' counters, read together."""

    a: LegStats
    """Leg a."""
    b: LegStats
    """Leg b."""

    def leg(self, name: str) -> LegStats:
        """The counters of leg ``"a"`` or ``"b"``."""
        return self.a if _leg_index(name) == 0 else self.b


def _seconds(ns: int) -> float | None:
    return ns / 1e9 if ns else None


_T = typing.TypeVar("_T")


def _builder(cls: type[_T]) -> Callable[..., _T]:
    """A positional constructor of the frozen, slotted dataclass ``cls`` (its fields in order) that
    stores each slot directly, for values made here from the data plane's counters.

    A frozen dataclass's ``__init__`` goes through ``object.__setattr__`` for every field (these have
    no checks to skip): generated as ``dataclasses`` generates ``__init__``, one slot store per field,
    it costs less than half. The objects are the same.
    """
    names = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]  # a dataclass
    namespace: dict[str, object] = {"_new": object.__new__, "_cls": cls}
    namespace |= {f"_set_{name}": getattr(cls, name).__set__ for name in names}
    stores = "".join(f"    _set_{name}(obj, {name})\n" for name in names)
    exec(f"def build({', '.join(names)}):\n    obj = _new(_cls)\n{stores}    return obj\n", namespace)
    return typing.cast(Callable[..., _T], namespace["build"])


_new_drops = _builder(Drops)
_new_leg_stats = _builder(LegStats)
_new_session_stats = _builder(SessionStats)

# The counters row as _leg_stats unpacks it: FIELDS of the data plane, in its order.
_ROW = (
    "rtp_packets_in", "rtp_bytes_in", "rtp_packets_out", "rtp_bytes_out",
    "rtcp_packets_in", "rtcp_bytes_in", "rtcp_packets_out", "rtcp_bytes_out",
    "played_packets", "drop_short", "drop_malformed", "drop_source", "drop_no_remote",
    "drop_disabled", "drop_send", "drop_learning", "last_rx_ns", "last_rtcp_rx_ns", "ssrc",
    "seq_gaps", "jitter_q4",
)
if FIELDS != _ROW:
    raise ImportError("mss._rtp counts other fields than mss.relay reads: rebuild the extension")

# RFC 3550 jitter is kept as J * 16 in RTP timestamp units: the factor to milliseconds.
_JITTER_Q4_TO_MS = 1000 / 16 / _CLOCK_RATE


def _leg_stats(row: tuple[int, ...], remote: tuple[bytes, int, bool] | None) -> LegStats:
    """A leg's :class:`LegStats` from its counters (a tuple in :data:`FIELDS` order) and remote."""
    (rtp_packets_in, rtp_bytes_in, rtp_packets_out, rtp_bytes_out,
     rtcp_packets_in, rtcp_bytes_in, rtcp_packets_out, rtcp_bytes_out,
     played_packets, drop_short, drop_malformed, drop_source, drop_no_remote,
     drop_disabled, drop_send, drop_learning, last_rx_ns, last_rtcp_rx_ns, ssrc,
     seq_gaps, jitter_q4) = row
    # positional, in the classes' field order
    drops = _new_drops(drop_short, drop_malformed, drop_source, drop_learning, drop_no_remote,
                       drop_disabled, drop_send)
    return _new_leg_stats(
        rtp_packets_in, rtp_bytes_in, rtp_packets_out, rtp_bytes_out,
        rtcp_packets_in, rtcp_bytes_in, rtcp_packets_out, rtcp_bytes_out,
        played_packets, drops,
        last_rx_ns / 1e9 if last_rx_ns else None,
        last_rtcp_rx_ns / 1e9 if last_rtcp_rx_ns else None,
        ssrc if rtp_packets_in else None,
        seq_gaps,
        jitter_q4 * _JITTER_Q4_TO_MS,
        None if remote is None else (_unpacked(remote[0]), remote[1]),
        remote is not None and remote[2],
    )


class RelaySession:
    """Two legs bridged through the relay; made by :meth:`Relay.open_session`."""

    __slots__ = ("_engine", "_relay", "_slot", "a_port", "b_port", "closed")

    def __init__(self, relay: Relay, engine: _rtp.Engine, slot: int, a_port: int, b_port: int):
        self._relay = relay
        self._engine = engine
        self._slot = slot
        self.a_port = a_port
        """Leg a's RTP port (even); its RTCP port is ``a_port + 1``."""
        self.b_port = b_port
        """Leg b's RTP port (even); its RTCP port is ``b_port + 1``."""
        self.closed = False
        """True once :meth:`close` has run."""

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        return f"<RelaySession a={self.a_port} b={self.b_port} {state}>"

    @property
    def slot(self) -> int:
        """Row of this session in :attr:`Relay.counters`."""
        return self._slot

    def _check(self) -> None:
        if self.closed:
            raise RelayError(f"relay session {self.a_port}/{self.b_port} is closed")

    def port(self, leg: LegName) -> int:
        """The RTP port of ``leg``."""
        return self.a_port if _leg_index(leg) == 0 else self.b_port

    def set_remote(self, leg: LegName, host: str, port: int, rtcp_port: int | None = None) -> None:
        """Send ``leg``'s media to ``host:port`` (RTCP to ``rtcp_port``, else ``port + 1``).

        This is the remote from SDP: used until the leg latches, and the source preferred by
        endpoint learning (its packets latch at once). A different address on a latched leg means
        the media moved: the leg learns again. The same address leaves the leg as it is.
        """
        li = _leg_index(leg)
        ip, version, unspecified = _remote(host)
        if not self._relay._reaches(version, unspecified):
            raise RelayError(
                f"the relay on {self._relay.host} cannot reach an IPv{version} remote ({host})"
            )
        if not 1 <= port <= 65535 or not (rtcp_port is None or 1 <= rtcp_port <= 65535):
            raise RelayError(f"bad remote port {port}/{rtcp_port}")
        with self._relay.lock:
            self._check()
            rtcp = rtcp_port if rtcp_port is not None else min(port + 1, 65535)
            self._engine.set_remote(self._slot, li, ip, port, rtcp, rtcp_port is not None)

    def relatch(self, leg: LegName) -> None:
        """Learn ``leg``'s source again: endpoint learning restarts (the signalled remote latches
        on its next packet, any other source only after the learning window and a run of packets)."""
        li = _leg_index(leg)
        with self._relay.lock:
            self._check()
            self._engine.relatch(self._slot, li)

    def set_forwarding(self, *, a_to_b: bool, b_to_a: bool) -> None:
        """Forward (or not) what leg a receives to leg b, and what leg b receives to leg a."""
        with self._relay.lock:
            self._check()
            self._engine.set_forwarding(self._slot, a_to_b, b_to_a)

    def bridge(self) -> None:
        """Forward both ways."""
        self.set_forwarding(a_to_b=True, b_to_a=True)

    def unbridge(self) -> None:
        """Forward neither way (packets are still received, counted and dropped as ``disabled``)."""
        self.set_forwarding(a_to_b=False, b_to_a=False)

    def set_pt_rewrite(self, from_leg: LegName, mapping: dict[int, int]) -> None:
        """Rewrite RTP payload types on packets received on ``from_leg`` and forwarded.

        ``mapping`` replaces the previous one; types not in it pass unchanged; ``{}`` clears it.
        """
        li = _leg_index(from_leg)
        table = _PT_IDENTITY  # no rewrite: what nearly every call asks
        if mapping:
            rewrite = bytearray(_PT_IDENTITY)
            for src, dst in mapping.items():
                if not (0 <= src <= 127 and 0 <= dst <= 127):
                    raise RelayError(f"payload types are 0..127: {src} -> {dst}")
                rewrite[src] = dst
            table = bytes(rewrite)
        with self._relay.lock:
            self._check()
            self._engine.set_pt_map(self._slot, li, table)

    def play(
        self,
        leg: LegName,
        frames: bytes,
        *,
        frame_bytes: int,
        payload_type: int,
        ptime_ms: int = 20,
        samples_per_frame: int = 160,
    ) -> None:
        """Send ``frames`` (``frame_bytes`` each) into ``leg`` as RTP, one every ``ptime_ms``, looping.

        The stream has its own random SSRC, sequence number and timestamp (the timestamp grows by
        ``samples_per_frame`` a frame); the first packet has the marker bit. It goes to the leg's
        remote (signalled or latched) and lasts until :meth:`stop_play` or another :meth:`play`.
        While it plays, nothing is forwarded into the leg.
        """
        li = _leg_index(leg)
        try:
            with self._relay.lock:
                self._check()
                self._engine.play(
                    self._slot,
                    li,
                    bytes(frames),
                    frame_bytes,
                    payload_type,
                    ptime_ms,
                    samples_per_frame,
                    *_PLAY_START.unpack(self._relay._random.take(_PLAY_START.size)),
                )
        except ValueError as exc:
            raise RelayError(str(exc)) from exc

    def stop_play(self, leg: LegName) -> None:
        """Stop playing into ``leg`` (forwarding into it resumes as set)."""
        li = _leg_index(leg)
        with self._relay.lock:
            self._check()
            self._engine.stop_play(self._slot, li)

    def playing(self, leg: LegName) -> bool:
        """True while frames are played into ``leg``."""
        li = _leg_index(leg)
        with self._relay.lock:
            self._check()
            return bool(self._engine.playing(self._slot, li))

    def stats(self) -> SessionStats:
        """A consistent snapshot of both legs' counters (a copy under the loop's lock)."""
        with self._relay.lock:
            self._check()
            a, b, a_remote, b_remote = self._engine.stats(self._slot)
        return _new_session_stats(_leg_stats(a, a_remote), _leg_stats(b, b_remote))

    def counters(self) -> npt.NDArray[np.uint64]:
        """Both legs' counter rows as they are now (2 x :data:`FIELDS`, a copy): what the kernel fast
        path counted is merged first, where :attr:`Relay.counters` has it up to a second late."""
        out = np.empty((2, len(FIELDS)), dtype=np.uint64)
        with self._relay.lock:
            self._check()
            self._engine.snapshot(self._slot, out)
        return out

    def in_kernel(self) -> dict[str, bool]:
        """Which directions the kernel fast path forwards now: ``"a rtp"``, ``"a rtcp"``, ``"b rtp"``
        and ``"b rtcp"``, each what that leg receives (all False without the kernel path)."""
        with self._relay.lock:
            self._check()
            flags = self._engine.kernel_entries(self._slot)
        return dict(zip(("a rtp", "a rtcp", "b rtp", "b rtcp"), map(bool, flags), strict=True))

    def last_rx(self) -> float | None:
        """``time.monotonic()`` of the last RTP packet received on either leg, or None."""
        with self._relay.lock:
            self._check()
            row = self._relay.counters[self._slot, :, _F["last_rx_ns"]]
            ns = int(row.max())
        return _seconds(ns)

    def close(self, *, wait: bool = False) -> None:
        """Stop forwarding and playing, and have the sockets closed and the ports freed. Idempotent.

        Forwarding, playing and counting stop at once (the counters row is final when this
        returns); the packet loop closes the sockets on its next turn, within 10 ms, without the
        caller waiting for it. ``wait`` waits for that, for every session closed so far (the ports
        are then free for anybody to bind), as :meth:`Relay.wait_closed` does; a new session of this
        relay never needs it.
        """
        self._relay._close_session(self, wait)

    def __enter__(self) -> RelaySession:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class Relay:
    """The media relay: a native packet loop and the sessions it forwards for.

    ``host`` is the IPv4 or IPv6 address every port is bound on (``::``: both families, see the
    module docstring); ``port_min..port_max`` the RTP/RTCP port
    range (a session takes two even ports and the odd ones above them). ``backend`` picks the
    packet loop's I/O: ``"io_uring"``, ``"epoll"``, or ``"auto"`` (io_uring when the kernel allows
    it). ``gather_us`` is how long a busy loop lets work gather before it wakes (latency traded for
    CPU; 0 wakes for every datagram). ``learn_ms`` and ``learn_packets`` are the endpoint-learning
    window and run (see the module docstring; 0 and 1 latch any first source at once, as a relay
    without learning would). ``kernel_forwarding`` is ``"no"``, ``"yes"`` (the kernel fast path,
    or :class:`KernelPathUnavailable` saying why not) or ``"auto"`` (the kernel fast path when it
    loads, else a warning in the log and userspace); :attr:`kernel_forwarding_active` tells.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port_min: int = 30000,
        port_max: int = 40000,
        *,
        backend: str = "auto",
        gather_us: int = 200,
        learn_ms: int = LEARN_WINDOW_MS,
        learn_packets: int = LEARN_PACKETS,
        kernel_forwarding: str = "no",
    ) -> None:
        self._address = _address(host)
        self._dual_stack = self._address == ipaddress.IPv6Address("::")
        self._random = _Random()
        if kernel_forwarding not in KERNEL_FORWARDING:
            raise RelayError(
                f"kernel_forwarding must be 'no', 'yes' or 'auto', not {kernel_forwarding!r}"
            )
        self._kernel: _kfwd.KernelPath | None = None
        self.host = host
        """Address the ports are bound on."""
        self.lock = threading.Lock()
        """Held by every verb; the packet loop never takes it."""
        self._ports = PortAllocator(port_min, port_max)
        capacity = self._ports.pairs // 2
        # oldest first: a slot freed by a close is taken again last, when the loop has long closed
        # its sockets (an attach that meets a slot still closing waits for it)
        self._free_slots: deque[int] = deque(range(capacity))
        self._sessions: dict[int, RelaySession] = {}
        self._counters: npt.NDArray[np.uint64] = np.zeros(
            (capacity, 2, len(FIELDS)), dtype=np.uint64
        )
        view = self._counters.view()
        view.flags.writeable = False
        self.counters: npt.NDArray[np.uint64] = view
        """Live counters, shape ``(capacity, 2, len(FIELDS))``: row ``session.slot``, leg 0 = a.

        Read-only and written by the packet loop as packets pass: cheap to poll in bulk (for
        example the ``last_rx_ns`` column for inactivity), each value whole but rows not a
        snapshot. What the kernel fast path forwards reaches it within a second (the loop merges
        the kernel's counts every ``KSYNC_MS``). :meth:`RelaySession.stats` gives a consistent,
        current copy.
        """
        try:
            self._engine: _rtp.Engine | None = _rtp.Engine(
                host, capacity, backend, gather_us, self._counters, learn_ms, learn_packets
            )
        except (OSError, ValueError) as exc:
            raise RelayError(f"cannot start the relay: {exc}") from exc
        if kernel_forwarding != "no":
            try:
                self._start_kernel_path(capacity)
            except KernelPathUnavailable as exc:
                if kernel_forwarding == "yes":
                    self.close()
                    raise KernelPathUnavailable(f"kernel_forwarding = yes: {exc}") from exc
                log.warning("relay: kernel forwarding unavailable, forwarding in userspace: %s", exc)

    def _start_kernel_path(self, capacity: int) -> None:
        # The program goes on the ingress of the interface that holds the relay's address (where
        # phones' packets arrive) and of lo (where a phone on this host sends them).
        try:
            lo = socket.if_nametoindex("lo")
        except OSError as exc:
            raise KernelPathUnavailable(f"no loopback interface: {exc}") from None
        host = self._address
        if host.is_unspecified:
            raise KernelPathUnavailable(f"the kernel path needs the relay's own address, not {host}")
        ifindex = lo if host.is_loopback else _interface_of(host)
        if ifindex is None:
            raise KernelPathUnavailable(f"no interface holds {self.host}")
        self._kernel = _kfwd.load([ifindex, lo], capacity)
        self._live().kernel_enable(self._kernel.map_fd)

    def _reaches(self, version: int, unspecified: bool) -> bool:
        """True when this relay's sockets can send to a remote of IP ``version``: the same family,
        or any family from ``::``; an unspecified address (an RFC 2543 hold, ``0.0.0.0``) is taken
        in either family (nothing reaches it anyway)."""
        return version == self._address.version or unspecified or self._dual_stack

    @property
    def kernel_forwarding_active(self) -> bool:
        """True when bridged legs are forwarded by the kernel fast path (see the module docstring)."""
        return self._kernel is not None and self._engine is not None

    def kernel_stats(self) -> dict[str, int]:
        """The kernel fast path's own counters: ``entries`` in the map now, ``installs``,
        ``removals``, ``errors`` (map operations that failed, e.g. a full map: that direction stays
        in userspace) and ``install_ns`` (control-plane time spent installing entries)."""
        stats: dict[str, int] = self._live().kernel_stats
        return stats

    @property
    def backend(self) -> str:
        """The packet loop's I/O: ``"io_uring"`` or ``"epoll"``."""
        return self._live().backend

    def loop_stats(self) -> dict[str, int]:
        """The packet loop's own counters: ``wakeups``, ``rearms`` (receives armed again after
        they ended, e.g. out of buffers) and ``errors`` (unexpected system-call failures)."""
        engine = self._live()
        return {"wakeups": engine.wakeups, "rearms": engine.rearms, "errors": engine.loop_errors}

    def quarantine(self, ports: Iterable[int], seconds: float) -> int:
        """Keep the pairs of these RTP ports out of use for ``seconds`` (a pair in use now goes into
        quarantine when its session closes); returns how many pairs of the range were named."""
        if not seconds > 0:
            return 0
        with self.lock:
            return self._ports.quarantine(ports, time.monotonic() + seconds)

    @property
    def available(self) -> int:
        """Sessions that can open now: a free slot and two free port pairs each (pairs in
        quarantine are not free; pairs another process holds show only when their bind fails)."""
        with self.lock:
            return min(len(self._free_slots), self._ports.free // 2)

    @property
    def quarantined(self) -> int:
        """Port pairs in quarantine now (see :meth:`quarantine`)."""
        with self.lock:
            return self._ports.quarantined

    @property
    def session_count(self) -> int:
        """Sessions open now."""
        return len(self._sessions)

    @property
    def capacity(self) -> int:
        """Sessions the port range can hold at most."""
        return self._ports.pairs // 2

    @property
    def closed(self) -> bool:
        """True once :meth:`close` has run."""
        return self._engine is None

    def _live(self) -> _rtp.Engine:
        if self._engine is None:
            raise RelayError("the relay is closed")
        return self._engine

    def _bind_free_pair(self, engine: _rtp.Engine) -> tuple[int, tuple[int, int, int]]:
        """Take a pair and bind it; pairs held by someone else are given back once one binds (so
        each free pair is tried at most once)."""
        refused: list[int] = []
        try:
            for _ in range(self._ports.free):
                port = self._ports.take()
                try:
                    fds = engine.bind_leg(port)
                except OSError as exc:
                    refused.append(port)
                    if exc.errno in _PORT_TAKEN:
                        continue
                    raise RelayError(f"cannot bind {self.host}:{port}: {exc.strerror}") from exc
                return port, fds
        finally:
            for port in refused:
                self._ports.give(port)
        raise PortsExhausted(
            f"no free RTP port pair on {self.host} ({self._ports.pairs} pairs in the range)"
        )

    def open_session(self, *, bridged: bool = True) -> RelaySession:
        """Open a session: two legs with their ports bound, receiving at once.

        ``bridged`` forwards both ways from the start; otherwise nothing is forwarded until
        :meth:`RelaySession.set_forwarding`. Raises :class:`PortsExhausted` when the range has no
        two free pairs left (pairs of sessions still closing are waited for first).
        """
        with self.lock:
            engine = self._live()
            if not self._free_slots:
                raise PortsExhausted(f"all {self.capacity} relay sessions are in use")
            closing = engine.closing  # only a close adds to it, under the lock held here
            try:
                a_port, a_fds, b_port, b_fds = self._bind_two_pairs(engine)
            except PortsExhausted:
                if not closing:
                    raise
                # the free ports were those of sessions the loop had not closed yet (a small range)
                engine.wait_closed()
                a_port, a_fds, b_port, b_fds = self._bind_two_pairs(engine)
            slot = self._free_slots.popleft()
            try:
                engine.attach(slot, a_port, a_fds, b_port, b_fds, bridged, bridged)
            except (OSError, ValueError) as exc:
                self._free_slots.append(slot)
                self._ports.give(a_port)
                self._ports.give(b_port)
                raise RelayError(f"cannot attach a session: {exc}") from exc
            session = RelaySession(self, engine, slot, a_port, b_port)
            self._sessions[slot] = session
            return session

    def _bind_two_pairs(
        self, engine: _rtp.Engine
    ) -> tuple[int, tuple[int, int, int], int, tuple[int, int, int]]:
        """Two pairs bound (:meth:`_bind_free_pair`): ``(a_port, a_fds, b_port, b_fds)``."""
        a_port, a_fds = self._bind_free_pair(engine)
        try:
            b_port, b_fds = self._bind_free_pair(engine)
        except BaseException:
            for fd in a_fds:
                engine.close_fd(fd)
            self._ports.give(a_port)
            raise
        return a_port, a_fds, b_port, b_fds

    def _close_session(self, session: RelaySession, wait: bool) -> None:
        with self.lock:
            if not session.closed:
                session.closed = True
                if self._engine is not None:
                    # The loop closes the sockets on its next turn: the ports go back now (a bind
                    # of one still bound fails, and another is taken), the slot to the end of the
                    # queue.
                    self._engine.detach(session.slot)
                    self._free_slots.append(session.slot)
                    self._ports.give(session.a_port)
                    self._ports.give(session.b_port)
                del self._sessions[session.slot]
            if wait and self._engine is not None:
                self._engine.wait_closed()

    def wait_closed(self) -> None:
        """Return once the sockets of every session closed so far are closed (their ports free for
        anybody to bind): :meth:`RelaySession.close` leaves that to the packet loop's next turn."""
        with self.lock:
            if self._engine is not None:
                self._engine.wait_closed()

    def close(self) -> None:
        """Stop the packet loop and close every session's sockets. Idempotent."""
        with self.lock:
            engine, self._engine = self._engine, None
            kernel, self._kernel = self._kernel, None
            for session in self._sessions.values():
                session.closed = True
            self._sessions.clear()
        if engine is not None:
            engine.close()  # takes every entry out of the map first
        if kernel is not None:
            kernel.close()

    def __enter__(self) -> Relay:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __del__(self) -> None:
        engine = getattr(self, "_engine", None)
        if engine is not None:
            engine.close()
        kernel = getattr(self, "_kernel", None)
        if kernel is not None:
            kernel.close()
