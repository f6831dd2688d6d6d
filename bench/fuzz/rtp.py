"""Fuzzing the relay's RTP/RTCP packet path (C inside ``mss/_rtp.pyx``) through real sockets.

A real :class:`mss.relay.Relay` on 127.0.0.1 with one bridged session; two phones (UDP sockets) are
the signalled remotes of its legs. The phones take turns: one sends a batch of mutated datagrams to
its leg's RTP and RTCP ports, then a valid RTP probe. After every batch:

* **the stream still flows**: the probe reaches the other phone (and every few batches a probe
  crosses each way);
* **nothing is altered**: every datagram the other phone receives is byte for byte one that was
  sent in the batch (there is no payload-type rewrite in this session);
* **the counters add up**: every datagram sent is counted on the sender's leg, either accepted
  (``rtp_packets_in``/``rtcp_packets_in``) or dropped before counting (``short``, ``malformed``,
  ``source``, ``learning``); every accepted one is forwarded (the other leg's ``*_packets_out``
  plus its ``send`` drops) or dropped for routing (``no_remote``, ``disabled``); the other phone
  receives exactly that leg's ``*_packets_out``;
* the packet loop reports no unexpected system-call error.

A broken check is a crash; the batch is saved: the sending leg (``a`` or ``b``), then each datagram
as a 2-byte length, a kind byte ``0`` for the RTP port or ``1`` for the RTCP port, and the bytes.
"""

from __future__ import annotations

import dataclasses
import random
import socket
import struct
import time
from collections import Counter

from bench.fuzz.mutate import Mutator
from bench.fuzz.run import Crash, Stats
from mss.relay import Relay, RelaySession, SessionStats

__all__ = ["BATCH", "fuzz_relay", "seeds"]

HOST = "127.0.0.1"
#: Datagrams per batch: few enough that the phones' socket buffers never overflow.
BATCH = 64
#: Largest datagram made: above the relay's receive buffer, so that bound is exercised.
MAX_DATAGRAM = 4096
#: Seconds a probe or the counters may take to arrive / settle before it is a finding.
SETTLE = 1.0
#: Batches between probes from B to A.
REVERSE_EVERY = 8

RTP, RTCP = 0, 1


def _rtp(seq: int, *, pt: int = 0, payload: bytes = b"\xd5" * 160, ssrc: int = 0x11223344,
         csrcs: tuple[int, ...] = (), extension: bytes | None = None, padding: int = 0,
         marker: bool = False) -> bytes:
    b0 = 0x80 | len(csrcs) | (0x10 if extension is not None else 0) | (0x20 if padding else 0)
    head = struct.pack("!BBHII", b0, (0x80 if marker else 0) | pt, seq & 0xFFFF, seq * 160, ssrc)
    head += b"".join(struct.pack("!I", c) for c in csrcs)
    if extension is not None:
        head += struct.pack("!HH", 0xBEDE, len(extension) // 4) + extension
    pad = (b"\x00" * (padding - 1) + bytes([padding])) if padding else b""
    return head + payload + pad


def seeds() -> list[tuple[bytes, int]]:
    """Valid RTP and RTCP of the shapes phones send: codecs, CSRCs, extensions, padding, compound
    RTCP, RTCP multiplexed on the RTP port (RFC 5761)."""
    sr = struct.pack("!BBHIIIIII", 0x80, 200, 6, 0x11223344, 1, 2, 3, 4, 5)
    rr = struct.pack("!BBHI", 0x81, 201, 7, 0x11223344) + struct.pack("!IIIIII", 0x55, 0, 9, 0, 0, 0)
    sdes = struct.pack("!BBHI", 0x81, 202, 3, 0x11223344) + b"\x01\x04abcd\x00\x00"
    bye = struct.pack("!BBHI", 0x81, 203, 1, 0x11223344)
    app = struct.pack("!BBHI", 0x80, 204, 3, 0x11223344) + b"name" + b"data"
    return [
        (_rtp(1), RTP),
        (_rtp(2, pt=8, payload=bytes(range(160))), RTP),
        (_rtp(3, pt=18, payload=bytes(20)), RTP),
        (_rtp(4, pt=101, payload=b"\x05\x8a\x03\x20", marker=True), RTP),
        (_rtp(5, csrcs=(1, 2, 3)), RTP),
        (_rtp(6, extension=b"\x10\xab\x00\x00"), RTP),
        (_rtp(7, padding=4), RTP),
        (_rtp(8, csrcs=(9,), extension=b"\x22\x01\x02\x00", padding=1, payload=b""), RTP),
        (sr, RTCP),
        (sr + sdes, RTCP),
        (rr + sdes + bye, RTCP),
        (app, RTCP),
        (sr + sdes, RTP),  # RFC 5761 multiplexing
        (b"", RTP),
    ]


class _Phone:
    """One leg's far end: an RTP socket and an RTCP socket."""

    def __init__(self) -> None:
        self.rtp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.rtcp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        for sock in (self.rtp, self.rtcp):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 21)
            sock.bind((HOST, 0))
        self.port = self.rtp.getsockname()[1]
        self.rtcp_port = self.rtcp.getsockname()[1]

    def close(self) -> None:
        self.rtp.close()
        self.rtcp.close()

    def drain(self, sock: socket.socket) -> list[bytes]:
        """Everything already queued on ``sock`` (bounded: a batch's worth and some)."""
        got: list[bytes] = []
        sock.setblocking(False)
        try:
            for _ in range(BATCH * 4):
                got.append(sock.recv(65536))
        except BlockingIOError:
            pass
        finally:
            sock.setblocking(True)
        return got

    def wait_for(self, wanted: bytes, timeout: float) -> tuple[bool, list[bytes]]:
        """Receive on the RTP socket until ``wanted`` arrives; what arrived before it."""
        got: list[bytes] = []
        deadline = time.monotonic() + timeout
        for _ in range(BATCH * 4):
            left = deadline - time.monotonic()
            if left <= 0:
                break
            self.rtp.settimeout(left)
            try:
                data = self.rtp.recv(65536)
            except TimeoutError:
                break
            if data == wanted:
                return True, got
            got.append(data)
        return False, got


def _totals(st: SessionStats, src: str) -> dict[str, int]:
    """The counters that must add up when leg ``src`` receives and the other leg sends."""
    a, b = st.leg(src), st.leg("b" if src == "a" else "a")
    drops = dataclasses.asdict(a.drops)
    return {
        "in": a.rtp_packets_in + a.rtcp_packets_in,
        "dropped_before": sum(drops.get(k, 0) for k in ("short", "malformed", "source", "learning")),
        "routing": drops.get("no_remote", 0) + drops.get("disabled", 0),
        "out": b.rtp_packets_out + b.rtcp_packets_out,
        "send_drops": b.drops.send,
    }


def _pack(batch: list[tuple[bytes, int]]) -> bytes:
    return b"".join(len(d).to_bytes(2, "big") + bytes([k]) + d for d, k in batch)


def fuzz_relay(inputs: int, seconds: float, rng: random.Random) -> Stats:
    """Up to ``inputs`` datagrams, for at most ``seconds``."""
    stats = Stats("rtp")
    corpus = seeds()
    datagrams = [d for d, _ in corpus if d]
    mutator = Mutator(rng, MAX_DATAGRAM)
    base = 40000 + rng.randrange(0, 2000) * 4
    a, b = _Phone(), _Phone()
    start = time.monotonic()
    try:
        with Relay(HOST, base, base + 63) as relay:
            session = relay.open_session()
            session.set_remote("a", HOST, a.port, a.rtcp_port)
            session.set_remote("b", HOST, b.port, b.rtcp_port)
            run = _Run(stats, relay, session, a, b)
            run.check_flow(0)
            deadline = start + seconds
            while stats.inputs < inputs and time.monotonic() < deadline:
                batch: list[tuple[bytes, int]] = []
                for _ in range(min(BATCH, inputs - stats.inputs)):
                    seed, kind = rng.choice(corpus)
                    if rng.random() < 0.1:
                        kind = 1 - kind
                    batch.append((mutator.mutate(seed, datagrams), kind))
                run.batch(batch)
                stats.inputs += len(batch)
            print(f"  rtp: {run.forwarded} of {stats.inputs} datagrams forwarded, {stats.refused} dropped "
                  f"and counted, {run.batches} batches", flush=True)
    finally:
        a.close()
        b.close()
    stats.seconds = time.monotonic() - start
    stats.corpus = len(corpus)
    return stats


class _Run:
    """The session under fuzz and the bookkeeping between batches."""

    def __init__(self, stats: Stats, relay: Relay, session: RelaySession, a: _Phone, b: _Phone) -> None:
        self.stats = stats
        self.relay = relay
        self.s = session
        self.a = a
        self.b = b
        self.seq = 1000
        self.batches = 0
        self.forwarded = 0
        """Fuzzed datagrams that crossed the relay (valid enough to be RTP or RTCP)."""
        self.errors = relay.loop_stats()["errors"]

    def probe(self, ssrc: int) -> bytes:
        self.seq += 1
        return _rtp(self.seq, ssrc=ssrc, payload=b"probe" + self.seq.to_bytes(4, "big") + bytes(151))

    def check_flow(self, batches: int) -> bool:
        """A valid packet crosses a → b (and b → a every few batches)."""
        ok = True
        p = self.probe(0xA)
        self.a.rtp.sendto(p, (HOST, self.s.a_port))
        arrived, _ = self.b.wait_for(p, SETTLE)
        ok = ok and arrived
        if batches % REVERSE_EVERY == 0:
            q = self.probe(0xB)
            self.b.rtp.sendto(q, (HOST, self.s.b_port))
            back, _ = self.a.wait_for(q, SETTLE)
            ok = ok and back
        return ok

    def batch(self, batch: list[tuple[bytes, int]]) -> None:
        """Send ``batch`` from one phone (they take turns) and check what came out of the other."""
        self.batches += 1
        if self.batches % 2:
            src, sender, receiver, port = "a", self.a, self.b, self.s.a_port
        else:
            src, sender, receiver, port = "b", self.b, self.a, self.s.b_port
        dst = "b" if src == "a" else "a"
        before = _totals(self.s.stats(), src)
        for data, kind in batch:
            if kind == RTP:
                sender.rtp.sendto(data, (HOST, port))
            else:
                sender.rtcp.sendto(data, (HOST, port + 1))
        probe = self.probe(0xA if src == "a" else 0xB)
        sender.rtp.sendto(probe, (HOST, port))
        arrived, got = receiver.wait_for(probe, SETTLE)
        if not arrived:
            self.finding("RelayStalled", f"a valid RTP probe did not cross {src} -> {dst} after the batch",
                         batch, src)
            self._resync()
            return
        sent = len(batch) + 1
        after = self._settled(before, sent, src)
        got += receiver.drain(receiver.rtp)
        got_rtcp = receiver.drain(receiver.rtcp)
        received = len(got) + len(got_rtcp) + 1  # the probe
        d = {k: after[k] - before[k] for k in after}
        self.stats.refused += d["dropped_before"] + d["routing"]
        self.forwarded += received - 1
        if d["in"] + d["dropped_before"] != sent:
            self.finding("CountersDisagree", f"{sent} datagrams sent, leg {src} counted {d}", batch, src)
        elif d["in"] != d["out"] + d["send_drops"] + d["routing"]:
            self.finding("CountersDisagree", f"{src} -> {dst}: accepted and forwarded differ: {d}",
                         batch, src)
        elif received != d["out"]:
            self.finding("CountersDisagree", f"{received} datagrams reached {dst}'s phone, leg {dst} "
                         f"counted {d}", batch, src)
        unsent = Counter(data for data, _ in batch)
        altered = []
        for g in (*got, *got_rtcp):
            if unsent[g] > 0:
                unsent[g] -= 1
            else:
                altered.append(g)
        if altered:
            self.finding("BytesChanged", f"{dst}'s phone received {len(altered)} datagrams never sent: "
                         f"{altered[0][:40]!r}", batch, src)
        errors = self.relay.loop_stats()["errors"]
        if errors != self.errors:
            self.finding("LoopError", f"the packet loop counted {errors - self.errors} errors", batch, src)
            self.errors = errors
        if self.batches % REVERSE_EVERY == 0 and not self.check_flow(self.batches):
            self.finding("RelayStalled", "a valid probe did not cross the relay", batch, src)
            self._resync()

    def _settled(self, before: dict[str, int], sent: int, src: str) -> dict[str, int]:
        """The counters once every datagram of the batch is counted (or after :data:`SETTLE`)."""
        deadline = time.monotonic() + SETTLE
        after = _totals(self.s.stats(), src)
        while time.monotonic() < deadline:
            counted = sum(after[k] - before[k] for k in ("in", "dropped_before"))
            if counted >= sent:
                break
            time.sleep(0.001)
            after = _totals(self.s.stats(), src)
        return after

    def _resync(self) -> None:
        time.sleep(SETTLE)
        for sock in (self.a.rtp, self.a.rtcp, self.b.rtp, self.b.rtcp):
            self.a.drain(sock)

    def finding(self, kind: str, message: str, batch: list[tuple[bytes, int]], src: str) -> None:
        key = (kind, "mss/_rtp.pyx")
        found = self.stats.crashes.get(key)
        if found is not None:
            found.count += 1
            return
        where = "mss/_rtp.pyx (relay packet path)"
        self.stats.crashes[key] = Crash("rtp", kind, where, message, src.encode() + _pack(batch))
        print(f"  CRASH rtp: {kind}: {message}", flush=True)

