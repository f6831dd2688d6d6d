"""Typed surface of the relay's data plane (``mss/_rtp.pyx``); ``mss.relay`` is its only user.

Legs are 0 (a) and 1 (b); kinds are 0 (RTP) and 1 (RTCP). Addresses are 16 bytes (IPv6; an IPv4
address as ``::ffff:a.b.c.d``); the sockets are ``AF_INET`` for an IPv4 host, else ``AF_INET6``.
Every method takes the packet loop's mutex with the GIL released.
"""


import numpy as np
import numpy.typing as npt

#: Counter names, in the order of the counters array's last axis.
FIELDS: tuple[str, ...]

class Engine:
    """One native packet-loop thread and a fixed table of ``capacity`` session slots.

    ``counters`` is a C-contiguous ``uint64`` array of shape ``(capacity, 2, len(FIELDS))`` that
    the loop writes into; the caller keeps it and may read it at any time. ``backend`` is
    ``"auto"``, ``"io_uring"`` or ``"epoll"``; ``gather_us`` (0..100000) is how long a busy loop
    lets work gather before it wakes. ``learn_ms`` (0..60000) and ``learn_packets`` (1..1000) rule
    endpoint learning: a source other than a leg's signalled remote latches only once ``learn_ms``
    has passed since the leg's first such packet and it has sent ``learn_packets`` packets in a row
    (one SSRC, consecutive sequence numbers); until then its packets are dropped and counted in
    ``drop_learning``. The constructor starts the thread and raises ``OSError`` when the requested
    back end cannot start, ``ValueError`` for bad arguments.
    """

    def __init__(
        self,
        host: str,
        capacity: int,
        backend: str,
        gather_us: int,
        counters: npt.NDArray[np.uint64],
        learn_ms: int,
        learn_packets: int,
    ) -> None: ...
    @property
    def backend(self) -> str:
        """``"io_uring"`` or ``"epoll"``: the I/O the loop runs on."""
    @property
    def wakeups(self) -> int:
        """Times the loop has woken up."""
    @property
    def rearms(self) -> int:
        """Multishot receives that ended (out of buffers, an error) and were armed again."""
    @property
    def loop_errors(self) -> int:
        """Unexpected system-call failures in the loop (0 in a healthy relay)."""
    def bind_leg(self, port: int) -> tuple[int, int, int]:
        """Bind one leg's sockets: RTP on ``host:port`` (two, ``SO_REUSEPORT``: the one that is
        connected once the leg latches, bound first without it so that the bind fails when anybody
        holds the port, and the one for every other source) and RTCP on ``host:port+1``. Returns
        ``(rtp, rtcp, rtp_any)``; raises ``OSError`` (with the errno of the failing bind) and leaves
        nothing open.
        """
    def close_fd(self, fd: int) -> None:
        """Close an fd from :meth:`bind_leg` that was not attached."""
    def attach(
        self,
        slot: int,
        a_port: int,
        a_fds: tuple[int, int, int],
        b_port: int,
        b_fds: tuple[int, int, int],
        a_to_b: bool,
        b_to_a: bool,
    ) -> None:
        """Make ``slot`` a session over these legs' fds, bound on these RTP ports (the engine owns
        the fds from now on). The loop arms their receives within ``COMMAND_MS`` (10 ms); it is
        woken for it only when it would sleep longer. A slot still closing (:meth:`detach`) is
        waited for."""
    def detach(self, slot: int) -> None:
        """End ``slot``'s session: from the return on nothing is forwarded or counted for it (its
        counters row is final) and nothing is in the kernel for it. Its sockets are closed by the
        loop on its next turn (io_uring; within ``COMMAND_MS``, woken only when it would sleep
        longer) or here (epoll); until then the slot is not free and the ports stay bound."""
    def wait_closed(self) -> None:
        """Return once every detached session's sockets are closed (the loop is woken for it)."""
    @property
    def closing(self) -> int:
        """Sessions detached whose sockets the loop has not closed yet."""
    def set_remote(
        self, slot: int, leg: int, ip: bytes, port: int, rtcp_port: int, rtcp_pinned: bool
    ) -> None:
        """Signal ``leg``'s remote, RTP on ``port`` and RTCP on ``rtcp_port``: where it sends until a
        packet latches it, and the source that latches at once (and takes over a learned latch).
        No-op for a kind latched there already; another address restarts learning.

        ``rtcp_pinned`` keeps the RTCP remote from being derived from the RTP source.
        """
    def relatch(self, slot: int, leg: int) -> None:
        """Unlatch ``leg``'s RTP and RTCP and restart endpoint learning."""
    def set_forwarding(self, slot: int, a_to_b: bool, b_to_a: bool) -> None:
        """Forward leg a's packets to leg b, and leg b's to leg a."""
    def set_pt_map(self, slot: int, leg: int, table: bytes) -> None:
        """Payload-type map (128 bytes) for RTP received on ``leg`` and forwarded (the map it has
        already changes nothing)."""
    def play(
        self,
        slot: int,
        leg: int,
        frames: bytes,
        frame_bytes: int,
        payload_type: int,
        ptime_ms: int,
        samples: int,
        ssrc: int,
        seq: int,
        timestamp: int,
    ) -> None:
        """Loop ``frames`` into ``leg`` as RTP every ``ptime_ms`` until :meth:`stop_play`. The first
        frame leaves when the loop comes by within ``COMMAND_MS`` (at once if it sleeps longer: it
        is woken). The same ``frames`` object handed over again (a codec's ringback) is kept once
        and played from where it is (16 such objects, 256 KiB each at most); others are copied."""
    def stop_play(self, slot: int, leg: int) -> None:
        """Stop playing into ``leg``."""
    def playing(self, slot: int, leg: int) -> bool:
        """True while frames are played into ``leg``."""
    def snapshot(self, slot: int, out: npt.NDArray[np.uint64]) -> None:
        """Copy ``slot``'s counters into ``out`` (shape ``(2, len(FIELDS))``) under the mutex."""
    def stats(
        self, slot: int
    ) -> tuple[
        tuple[int, ...],
        tuple[int, ...],
        tuple[bytes, int, bool] | None,
        tuple[bytes, int, bool] | None,
    ]:
        """``(a, b, a_remote, b_remote)``: each leg's counters (in :data:`FIELDS` order, what the
        kernel fast path counted merged first) and :meth:`remote` of its RTP, read together."""
    def remote(self, slot: int, leg: int, kind: int) -> tuple[bytes, int, bool] | None:
        """``(ip, port, latched)`` where ``leg`` sends ``kind`` now, or None."""
    def kernel_enable(self, map_fd: int) -> None:
        """Hand bridged directions to the kernel fast path whose map is ``map_fd`` (see
        ``mss/bpf/kfwd.h``): from now on each direction that is latched, forwarding and has a
        destination gets an entry, taken out again before any verb changes it and when its session
        ends. The fd must stay open until :meth:`kernel_disable` or :meth:`close`."""
    def kernel_disable(self) -> None:
        """Take every entry out of the map (counters merged) and forward in userspace only."""
    def kernel_sync(self) -> None:
        """Merge every entry's counters into the counters array now (the loop does it every
        second by itself)."""
    def kernel_entries(self, slot: int) -> tuple[int, int, int, int]:
        """Which of ``slot``'s directions are in the kernel: (a RTP, a RTCP, b RTP, b RTCP), each
        the direction of what that leg receives."""
    @property
    def kernel_stats(self) -> dict[str, int]:
        """``entries``, ``installs``, ``removals``, ``errors`` and ``install_ns`` of the kernel
        fast path."""
    def close(self) -> None:
        """Stop and join the thread, close every socket, free the memory. Idempotent."""
