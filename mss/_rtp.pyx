# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""The relay's data plane: one native thread forwards RTP and RTCP between the two legs of each session.

Python (``mss/relay.py``) decides; this module carries out a handful of verbs on C structures:
bind a leg's ports, attach a session, set a leg's remote, re-latch, set forwarding and payload-type
maps, play frames into a leg, read counters, detach.

GIL rule: the packet loop never touches Python. It holds ``Core.mu`` while it processes a batch and
releases it while it waits; every verb takes ``Core.mu`` (with the GIL released) to write control
state, so the loop sees each change whole. Counters live in a numpy array owned by Python, written by
the loop only.

Packet path, per datagram (``handle_packet``): parse -> check_source (latch, or learn) -> count ->
route -> rewrite -> forward. A send that would block is dropped and counted, never queued.

Endpoint learning (``check_source``, ``learn``), after rtpengine's ``endpoint-learning=heuristic``
and Asterisk's ``strictrtp`` probation. A leg that has not latched accepts, in this order:
1. its signalled remote (``set_remote``, the SDP's address AND port): latched on its first packet;
2. RTCP from the address the leg's RTP latched on (RTCP has no sequence numbers to learn from);
3. an RTP candidate: one from the signalled address with another port (a NAT that changed the port)
   is preferred to any other source; a candidate latches only once ``learn_ns`` has passed since
   the leg's first learning packet AND it has sent ``learn_packets`` packets in a row (one SSRC,
   consecutive sequence numbers). A leg with no signalled remote learns every source this way.
   A leg keeps one candidate per preference: another source of the same kind starts the run over.
   The signalled address alone does not latch at once: every phone behind a carrier's SBC shares
   that address, so the phones of another (or a crashed) call would pass for the right one.
Until then a candidate's packets are dropped and counted (``DROP_LEARNING``), never forwarded: a
stranger's audio must not reach the other phone, and a late start of a NATed phone's audio is the
price. A latched leg accepts only its source, except that the signalled remote takes over a leg
that latched on a learned source (it is the better match, and a stranger that won the learning
while the phone was still ringing must not keep the leg). ``relatch`` restarts learning. None of
this costs anything once a leg has latched: the first test of ``check_source`` accepts the source.

Sockets, per leg: SK_RTP and SK_ANY share the RTP port (SO_REUSEPORT); SK_RTP is connected to the
leg's remote as soon as it has one (signalled or latched), so the kernel hands it that source only,
sends on it need no address, and with io_uring it receives with a plain recv. Every other source
reaches SK_ANY (and is latched or counted as a stray there). SK_RTCP is the RTCP port.

Back ends, each in its own file included below (``include`` is textual: still one module):
- io_uring (``_rtp_uring.pxi``), the default when the kernel allows it: multishot receives into
  provided buffers; the batch's sends go into the same system call that waits for the next batch; a
  busy loop sleeps until ``gather_us`` after the start of its last batch (datagrams arriving
  meanwhile do not wake it: deferred task work), so one wake-up and one system call serve tens of
  datagrams; sends name their socket in a registered file table.
- epoll (``_rtp_epoll.pxi``): level-triggered readiness, recvmmsg per ready socket (at most
  RX_BATCH, so no socket starves the others), sendmmsg per run of sends through one socket, and the
  same gathering.
A back end receives datagrams into a ``Pkt``, runs ``handle_packet`` on it and flushes the sends it
queued; the packet path, the send queue, played frames and teardown are shared.

Waking the loop: a verb that leaves it work (arm a session's receives, a play's first frame, close a
session's sockets) writes its eventfd only when the loop's current wait ends more than COMMAND_MS
from now (``loop_comes_by``): while sessions are open the loop waits COMMAND_MS at most, and a busy
one comes by every gather_us, so at 100 calls/s the verbs of a call cost no wake-up at all.

Closing (``detach``) does not wait for the loop: the session is S_CLOSING from then on (nothing is
forwarded or counted for it, its kernel entries are out, its counters row is final) and the loop
ends its receives and closes its sockets on its next turn, with the other sessions closing then
(io_uring; epoll closes them in ``detach`` itself). Until then its ports stay bound (a new bind of
them fails and the caller takes other ports) and its slot is not free: ``attach`` on a closing slot
waits for it (waking the loop), and ``wait_closed`` waits for every close.

Kernel fast path (``kernel_enable``): a latched, forwarding direction is handed to the BPF program
of ``mss/bpf/`` as an entry of its map (through the bpf() system call, ``_rtp_kfwd.h``); the
program forwards that source's packets in the kernel and this loop sees only what it passes up.
Verbs take the affected entries out before they change anything, a latch judges them again, and
the loop merges the program's counts into the counters array every ``KSYNC_MS`` (see "The kernel
fast path" below).

Files: this one holds the bounds, the structures, the packet path, the thread and ``Engine``;
``_rtp_decl.pxd`` the C declarations (system headers, ``_rtp_uring.h``: raw io_uring system
calls, and ``_rtp_kfwd.h``: the kernel path's map operations); ``_rtp.pyi`` the typed surface.
The compiler directives are on this file's first line only.
"""

from libc.stdint cimport int32_t, int64_t, uint8_t, uint16_t, uint32_t, uint64_t, uintptr_t
from libc.stdlib cimport calloc, free, malloc, realloc
from libc.string cimport memcmp, memcpy, memset, strerror
from libc.errno cimport errno

# the C declarations: every name cimported here is a system call, type or constant, or part of
# the raw io_uring binding; mss's own types are below
from mss._rtp_decl cimport *

# ---------------------------------------------------------------------------------------------
# Bounds and constants
# ---------------------------------------------------------------------------------------------

cdef enum:
    RX_BUF = 2048            # bytes per receive buffer; a larger datagram is dropped as malformed
    URING_BUFS = 8192        # provided receive buffers (power of two): datagrams held between waits
    URING_SQ = 2048          # submission slots: sends, re-arms and cancels queued per wait
    URING_CQ = 16384         # completion slots; the kernel keeps overflow, so this only sizes a batch
    OUT_CAP = 1024           # sends queued before they are flushed to the kernel
    URING_DRAIN = 128        # socket wake-ups the kernel turns into receives per wait (32 datagrams
                             # at most each): with URING_HELD, a backlog cannot take every buffer
    URING_HELD = 2048        # receive buffers queued sends may hold into a wait; more are freed first
    PLAY_SCRATCH = 256       # played packets built per flush
    MAX_FRAME = 1400         # largest injected payload frame (fits one Ethernet MTU with headers)
    RX_BATCH = 32            # epoll: datagrams read from one socket per wake-up (fairness bound)
    EPOLL_EVENTS = 1024      # epoll: ready sockets handled per wake-up
    MAX_SLOTS = 1 << 20      # sessions addressable by the 20-bit slot in user_data
    CLOCK_RATE = 8000        # RTP clock of the 8 kHz audio payload types the jitter is kept for
    GEN_MASK = 0xFFFFF       # 20-bit session generation in user_data
    SHUTDOWN_MS = 200        # how long close() waits for the kernel to end the receives
    MAX_LEARN_MS = 60000     # endpoint learning window: a minute of a phone's audio is the most to lose
    MAX_LEARN_PACKETS = 1000 # packets in a row a candidate must send (20 s of 20 ms packets)
    KSYNC_MS = 1000          # kernel path: its counters reach the counters array at most this late
                             # (inactivity is judged in seconds; stats() reads a session at once)
    KSYNC_BATCH = 256        # kernel path: entries read per bpf() call of a sync (64 KiB of buffer)
    HANDOFF_US = 2000        # kernel path: a packet still unread in its socket when the entry went
                             # in reaches the loop within this (its next turn: gather_us); a phone
                             # sends every 10-20 ms, so a stream the kernel passes up for good does
                             # not put the entry in again for each packet
    COMMAND_MS = 10          # a verb's work for the loop (arm a session's receives, start playing) is
                             # done within this: the loop, while sessions are open, sleeps no longer,
                             # so such a verb wakes it (a system call and a context switch) only when
                             # its current wait ends later (an idle relay); never past a ptime
    PLAY_SHARED = 16         # frame buffers (ringback: one per codec and ptime) kept for every play
                             # that hands over the same bytes object; others are copied per play
    PLAY_SHARED_BYTES = 1 << 18  # the largest kept (32 s of G.711; a ringback cadence is 6 s)

# Counter fields: the last axis of the counters array, named in FIELDS below.
cdef enum:
    RTP_PACKETS_IN = 0
    RTP_BYTES_IN = 1
    RTP_PACKETS_OUT = 2
    RTP_BYTES_OUT = 3
    RTCP_PACKETS_IN = 4
    RTCP_BYTES_IN = 5
    RTCP_PACKETS_OUT = 6
    RTCP_BYTES_OUT = 7
    PLAYED_PACKETS = 8
    DROP_SHORT = 9
    DROP_MALFORMED = 10
    DROP_SOURCE = 11
    DROP_NO_REMOTE = 12
    DROP_DISABLED = 13
    DROP_SEND = 14
    DROP_LEARNING = 15
    LAST_RX_NS = 16
    LAST_RTCP_RX_NS = 17
    SSRC = 18
    SEQ_GAPS = 19
    JITTER_Q4 = 20
    N_FIELDS = 21

FIELDS = (
    "rtp_packets_in", "rtp_bytes_in", "rtp_packets_out", "rtp_bytes_out",
    "rtcp_packets_in", "rtcp_bytes_in", "rtcp_packets_out", "rtcp_bytes_out",
    "played_packets", "drop_short", "drop_malformed", "drop_source", "drop_no_remote",
    "drop_disabled", "drop_send", "drop_learning", "last_rx_ns", "last_rtcp_rx_ns", "ssrc", "seq_gaps",
    "jitter_q4",
)
assert len(FIELDS) == N_FIELDS

cdef enum:
    KIND_RTP = 0
    KIND_RTCP = 1

    # a leg's sockets; RTP has two on the same port (SO_REUSEPORT): once the leg has latched,
    # SK_RTP is connected to the remote (cheaper sends, the kernel filters its input) and SK_ANY
    # gets datagrams from everyone else, so they are still counted
    SK_RTP = 0
    SK_RTCP = 1
    SK_ANY = 2
    N_SOCKS = 3

    EP_NONE = 0        # no destination known
    EP_EXPECTED = 1    # destination from signalling (or derived), source not learned yet
    EP_LATCHED = 2     # destination learned from the source of a packet; only that source is accepted

    # endpoint-learning candidates of a leg's RTP, best first
    CAND_ADDR = 0      # from the signalled address, another port (a NAT changed the port)
    CAND_OTHER = 1     # from anywhere else (every source, when nothing was signalled)
    N_CAND = 2

    S_FREE = 0
    S_OPENING = 1      # attached, receive not armed yet (io_uring)
    S_ACTIVE = 2
    S_CLOSING = 3      # detached (io_uring): nothing forwarded or counted; the loop ends the
                       # receives and closes the sockets (finish_close), then the slot is free

    OP_RECV = 1
    OP_SEND = 2
    OP_WAKE = 3
    OP_CANCEL = 4

    BACKEND_URING = 1
    BACKEND_EPOLL = 2

# ---------------------------------------------------------------------------------------------
# Structures
# ---------------------------------------------------------------------------------------------

ctypedef struct Sock:
    int fd
    uint8_t armed              # io_uring: a multishot receive is live; epoll: registered
    uint8_t plain              # io_uring: that receive is a plain recv (the socket is connected)
    uint8_t cancelling         # io_uring: it is being cancelled, to be armed again differently

ctypedef struct Endpoint:
    uint8_t state
    uint8_t connected          # RTP: SK_RTP is connected to dest
    uint8_t has_sig            # a remote was signalled (set_remote)
    uint8_t exact              # latched on the signalled remote itself (nothing takes it over)
    sockaddr_in6 dest
    sockaddr_in6 sig            # the signalled remote, kept while dest follows the latched source

ctypedef struct Candidate:     # a source learning to be a leg's RTP remote
    sockaddr_in6 src
    uint64_t last_ns           # its last packet
    uint32_t ssrc
    uint16_t seq               # its last sequence number
    uint16_t run               # packets in a row: one SSRC, consecutive sequence numbers (0: none)

ctypedef struct Play:
    unsigned char* frames      # owned (freed with the Play), or a buffer the Engine keeps (PLAY_SHARED)
    uint8_t owned
    uint32_t frame_bytes
    uint32_t nframes
    uint32_t index
    uint32_t ssrc
    uint32_t timestamp
    uint32_t samples
    uint16_t seq
    uint8_t pt
    uint8_t marker
    uint64_t period_ns
    uint32_t serial

ctypedef struct Leg:
    Sock sock[3]
    uint16_t port              # the leg's RTP port (RTCP: port + 1)
    uint8_t kin[2]             # per kind: what this leg receives is forwarded by the kernel
    uint64_t kpackets[2]       # per kind: what of the kernel entry's counts is merged already
    uint64_t kbytes[2]
    uint64_t kin_ns[2]         # per kind: when the entry went in (CLOCK_MONOTONIC)
    uint64_t kgaps
    uint64_t kmux_packets      # the RTP entry's RTCP multiplexed on the RTP port, likewise
    uint64_t kmux_bytes
    sockaddr_in6 ksrc[2]        # per kind: the entry's source and destination as installed
    sockaddr_in6 kdst[2]
    Endpoint ep[2]
    uint8_t forward            # forward what this leg receives to the other leg
    uint8_t rtcp_pinned        # the RTCP destination came from signalling
    uint8_t seq_valid
    uint8_t transit_valid
    uint16_t max_seq
    uint32_t ssrc
    int32_t transit
    uint32_t play_serial
    uint64_t learn_start       # the first packet learned from since learning (re)started, 0: none
    Candidate cand[2]          # N_CAND, by preference
    Play* play
    uint64_t* ctr
    uint8_t pt_map[128]

ctypedef struct Session:
    Leg leg[2]
    uint32_t gen
    uint8_t state
    uint8_t queued_arm
    uint8_t queued_disarm
    uint8_t queued_rearm

ctypedef struct Timer:
    uint64_t due
    uint32_t slot
    uint32_t gen
    uint32_t serial
    uint8_t leg

ctypedef struct Core:
    pthread_mutex_t mu
    pthread_cond_t cv
    pthread_t thread
    int thread_running
    int stopped                # the loop thread has returned
    int ready
    int start_err
    int stop
    int backend
    int want_backend
    uint8_t host[16]           # the address the legs bind on; IPv4 as ::ffff:a.b.c.d
    int family                 # of every leg socket: AF_INET for an IPv4 host, else AF_INET6
    socklen_t addrlen          # the size of that family's socket address
    uint32_t capacity
    Session* sessions
    uint64_t* counters
    int efd
    uint64_t gather_ns
    uint64_t learn_ns          # endpoint learning: window from the first packet of a candidate
    uint32_t learn_packets     # endpoint learning: packets in a row a candidate must send
    uint64_t now
    uint64_t wakeups
    uint64_t rearms            # io_uring: multishot receives that ended and were armed again
    uint64_t loop_errors
    uint32_t n_closing         # sessions in S_CLOSING
    uint32_t n_sessions        # sessions not S_FREE: while there are any, the loop waits COMMAND_MS at most
    int notify                 # a session was freed: wake the verbs waiting for it (unlock_notify)
    uint64_t wait_until        # the loop's current wait ends by this CLOCK_MONOTONIC ns (set before it
                               # releases the mutex to wait; UINT64_MAX: no bound)
    # the kernel fast path (kfd < 0: off)
    int kfd                    # the BPF map of mss/bpf/kfwd.h
    uint32_t kentries          # entries in it now
    uint64_t ksync_due
    uint64_t kinstalls
    uint64_t kremovals
    uint64_t kerrors           # failed map operations (a full map: that direction stays here)
    uint64_t kinstall_ns       # time spent in installing system calls
    kf_key* kkeys              # KSYNC_BATCH each: the sync's buffers
    kf_entry* kvals
    # io_uring
    mss_uring ring
    msghdr recv_tmpl
    int fixed                  # sends name sockets by their index in a registered table
    int abs_timer              # waits take an absolute deadline
    # epoll
    int epfd
    epoll_event* events
    mmsghdr* rx_msgs
    iovec* rx_iov
    sockaddr_in6* rx_names
    unsigned char* rx_bufs
    # control commands for the loop (io_uring)
    uint32_t* arm_q
    uint32_t n_arm
    uint32_t* disarm_q
    uint32_t n_disarm
    uint32_t* rearm_q          # sessions whose connected RTP socket should switch to plain recv
    uint32_t n_rearm
    # play timers: a binary min-heap on due
    Timer* heap
    uint32_t n_heap
    uint32_t heap_cap
    # queued sends
    mmsghdr* out_mm
    iovec* out_iov
    sockaddr_in6* out_dst
    int* out_fd
    int32_t* out_fix
    int32_t* out_bid
    uint64_t* out_ud
    uint32_t n_out
    unsigned char* scratch
    uint32_t n_scratch

ctypedef struct Pkt:
    Core* core
    Session* s
    Leg* leg
    Leg* peer
    uint32_t slot
    int li
    int sock                   # socket it came on: SK_RTP, SK_RTCP or SK_ANY
    int kind                   # KIND_RTP or KIND_RTCP, after the socket
    int rtcp                   # it is RTCP (on the RTCP socket, or multiplexed on the RTP one)
    unsigned char* data
    uint32_t length
    const sockaddr_in6* src
    int32_t bid                # io_uring buffer holding it, or -1
    int latched                # it latched its leg: the kernel entries are judged again

# ---------------------------------------------------------------------------------------------
# Small helpers
# ---------------------------------------------------------------------------------------------

cdef inline uint64_t mono_ns() noexcept nogil:
    cdef timespec ts
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return <uint64_t>ts.tv_sec * 1000000000ULL + <uint64_t>ts.tv_nsec

cdef inline uint64_t make_ud(uint32_t op, uint32_t slot, uint32_t gen, int leg, int sock,
                             int rtcp, uint32_t length) noexcept nogil:
    """Pack what a completion must name: op | leg | socket | rtcp | length | slot | generation."""
    return (<uint64_t>op | (<uint64_t>(leg & 1) << 4) | (<uint64_t>(sock & 3) << 5)
            | (<uint64_t>(rtcp & 1) << 7) | (<uint64_t>(length & 0xFFFF) << 8)
            | (<uint64_t>(slot & 0xFFFFF) << 24) | (<uint64_t>(gen & GEN_MASK) << 44))

cdef inline uint32_t ud_op(uint64_t ud) noexcept nogil:
    return <uint32_t>(ud & 0xF)

cdef inline int ud_leg(uint64_t ud) noexcept nogil:
    return <int>((ud >> 4) & 1)

cdef inline int ud_sock(uint64_t ud) noexcept nogil:
    return <int>((ud >> 5) & 3)

cdef inline int ud_rtcp(uint64_t ud) noexcept nogil:
    return <int>((ud >> 7) & 1)

cdef inline uint32_t ud_len(uint64_t ud) noexcept nogil:
    return <uint32_t>((ud >> 8) & 0xFFFF)

cdef inline uint32_t ud_slot(uint64_t ud) noexcept nogil:
    return <uint32_t>((ud >> 24) & 0xFFFFF)

cdef inline uint32_t ud_gen(uint64_t ud) noexcept nogil:
    return <uint32_t>((ud >> 44) & GEN_MASK)

cdef inline int kind_of(int sock) noexcept nogil:
    return KIND_RTCP if sock == SK_RTCP else KIND_RTP

cdef inline int sock_of(int kind) noexcept nogil:
    return SK_RTCP if kind == KIND_RTCP else SK_RTP

cdef inline Session* session_of(Core* c, uint64_t ud) noexcept nogil:
    """The live session a user_data names, or NULL when it has been detached since."""
    cdef uint32_t slot = ud_slot(ud)
    cdef Session* s
    if slot >= c.capacity:
        return NULL
    s = &c.sessions[slot]
    if (s.gen & GEN_MASK) != ud_gen(ud) or s.state == S_FREE:
        return NULL
    return s

cdef inline void wake_loop(Core* c) noexcept nogil:
    cdef uint64_t one = 1
    write(c.efd, &one, 8)


cdef inline int loop_comes_by(Core* c, uint64_t now) noexcept nogil:
    """The loop will carry out queued work within COMMAND_MS without a wake-up: its current wait
    ends by then (a busy loop gathering, a play timer, or the tick it keeps while sessions are open).
    Called with the mutex held, so the loop is waiting, or about to, or about to take the mutex."""
    return c.wait_until <= now + <uint64_t>COMMAND_MS * 1000000

# 8 kHz static audio payload types (RFC 3551 table 4): jitter is computed for these only, since
# telephone-event and other dynamic types hold one timestamp over several packets.
cdef const char* THREAD_NAME = "mss-relay"

cdef uint8_t JITTER_PT[128]
memset(JITTER_PT, 0, 128)
for _pt in (0, 3, 4, 5, 7, 8, 9, 12, 13, 15, 18):
    JITTER_PT[_pt] = 1

# ---------------------------------------------------------------------------------------------
# The packet path
# ---------------------------------------------------------------------------------------------

cdef inline int parse(Pkt* p) noexcept nogil:
    """Check the datagram is RTP (or RTCP); 0 or the drop counter to bump."""
    cdef unsigned char* d = p.data
    cdef uint32_t n = p.length
    cdef uint32_t hdr
    cdef uint8_t pt
    if n < 8:
        return DROP_SHORT
    if (d[0] >> 6) != 2:
        return DROP_MALFORMED
    pt = d[1] & 0x7F
    # RFC 5761 §4: RTCP packet types 192-223 read as RTP payload types 64-95 (marker set or not)
    if p.kind == KIND_RTCP or (pt >= 64 and pt <= 95):
        if d[1] < 192 or d[1] > 223:
            return DROP_MALFORMED
        p.rtcp = 1
        return 0
    if n < 12:
        return DROP_SHORT
    hdr = 12 + 4 * (d[0] & 0x0F)                    # CSRC list
    if d[0] & 0x10:                                 # header extension: 4 bytes + length words
        if hdr + 4 > n:
            return DROP_MALFORMED
        hdr += 4 + 4 * ((<uint32_t>d[hdr + 2] << 8) | d[hdr + 3])
    if hdr > n:
        return DROP_MALFORMED
    if d[0] & 0x20:                                 # padding: count in the last byte
        if d[n - 1] == 0 or d[n - 1] > n - hdr:
            return DROP_MALFORMED
    p.rtcp = 0
    return 0


cdef void connect_rtp(Core* c, uint32_t slot, Leg* leg) noexcept nogil:
    """Connect the leg's SK_RTP socket to its RTP remote: the kernel then hands it that source
    only (everyone else reaches SK_ANY) and sends on it need no address. With io_uring its receive
    becomes a plain recv (no source address to copy out), re-armed by the loop."""
    leg.ep[KIND_RTP].connected = connect(leg.sock[SK_RTP].fd,
                                         <const sockaddr*>&leg.ep[KIND_RTP].dest,
                                         c.addrlen) == 0
    if c.backend == BACKEND_URING and leg.ep[KIND_RTP].connected:
        uring_queue_plain(c, slot, leg)


# Addresses: every one is held in a sockaddr_in6's room, in the family of the engine's sockets. An
# IPv4 host gets AF_INET sockets and sockaddr_in addresses (the port at the same offset): IPv4-mapped
# AF_INET6 sockets would serve too, at some 5-10 % more CPU per packet measured. An IPv6 host gets
# AF_INET6 sockets; on :: (dual-stack) an IPv4 remote is its IPv4-mapped form ::ffff:a.b.c.d
# (RFC 4291 §2.5.5.2, RFC 3493 §3.7), so a session's legs may face different families.

cdef inline int same_host(const sockaddr_in6* a, const sockaddr_in6* b) noexcept nogil:
    if a.sin6_family != b.sin6_family:
        return 0
    if a.sin6_family == AF_INET:
        return (<const sockaddr_in*>a).sin_addr.s_addr == (<const sockaddr_in*>b).sin_addr.s_addr
    return memcmp(&a.sin6_addr, &b.sin6_addr, 16) == 0


cdef inline int same_addr(const sockaddr_in6* a, const sockaddr_in6* b) noexcept nogil:
    return a.sin6_port == b.sin6_port and same_host(a, b)


cdef inline int is_v4mapped(const uint8_t* a) noexcept nogil:
    """``a`` (16 bytes) is ::ffff:a.b.c.d: an IPv4 address."""
    cdef int i
    for i in range(10):
        if a[i]:
            return 0
    return a[10] == 0xFF and a[11] == 0xFF


cdef inline void kernel_addr(uint8_t* out, const uint8_t* a) noexcept nogil:
    """An address as the kernel map holds it (IPv4: the first 4 bytes; ``out`` is zeroed)."""
    if is_v4mapped(a):
        memcpy(out, a + 12, 4)
    else:
        memcpy(out, a, 16)


cdef inline int is_v4(const sockaddr_in6* a) noexcept nogil:
    """``a`` is an IPv4 address (AF_INET, or IPv4-mapped)."""
    return a.sin6_family == AF_INET or is_v4mapped(<const uint8_t*>&a.sin6_addr)


cdef inline void kernel_sockaddr(uint8_t* out, const sockaddr_in6* a) noexcept nogil:
    """A socket address's host as the kernel map holds it."""
    if a.sin6_family == AF_INET:
        memcpy(out, &(<const sockaddr_in*>a).sin_addr.s_addr, 4)
    else:
        kernel_addr(out, <const uint8_t*>&a.sin6_addr)


cdef inline void copy_source(sockaddr_in6* dst, const sockaddr_in6* src) noexcept nogil:
    """``dst`` becomes ``src`` (a packet's source), an IPv6 flow label dropped."""
    dst[0] = src[0]
    if dst.sin6_family == AF_INET6:
        dst.sin6_flowinfo = 0


cdef inline void restart_learning(Leg* leg) noexcept nogil:
    """Forget the candidates: the next packets start learning afresh."""
    memset(leg.cand, 0, sizeof(Candidate) * N_CAND)
    leg.learn_start = 0


cdef inline void latch(Pkt* p, Endpoint* ep) noexcept nogil:
    """Make the packet's source the endpoint's remote: from now on only it is accepted."""
    cdef Endpoint* rtcp
    cdef int moved = not same_addr(&ep.dest, p.src)   # p.src may be &ep.dest (a plain recv)
    if moved and p.core.kfd >= 0:
        # Entries naming the old remote (the source that latched before, as the signalled phone
        # takes over) go now, before this packet is forwarded: else the kernel would still pass
        # the old source's packets until the refresh after the send. The refresh installs anew.
        kernel_unload(p.core, p.slot)
    ep.exact = ep.has_sig and same_addr(&ep.sig, p.src)
    if moved:
        copy_source(&ep.dest, p.src)
    ep.state = EP_LATCHED
    p.latched = 1
    if p.kind == KIND_RTP and (moved or not ep.connected):
        connect_rtp(p.core, p.slot, p.leg)
    if p.kind == KIND_RTP and not p.leg.rtcp_pinned:
        rtcp = &p.leg.ep[KIND_RTCP]
        if rtcp.state != EP_LATCHED:            # RTCP goes to RTP + 1 until it speaks for itself
            copy_source(&rtcp.dest, p.src)
            rtcp.dest.sin6_port = htons(<uint16_t>(ntohs(p.src.sin6_port) + 1))
            rtcp.state = EP_EXPECTED


cdef inline int learn(Pkt* p, Endpoint* ep, uint64_t now) noexcept nogil:
    """An RTP packet from a source that is not the signalled remote: note it as a candidate; latch
    it once the learning window has passed and it has sent ``learn_packets`` in a row (and no
    better candidate is still sending in a row). 0 when it latched, else DROP_LEARNING."""
    cdef Leg* leg = p.leg
    cdef Core* c = p.core
    cdef unsigned char* d = p.data
    cdef uint16_t seq = <uint16_t>((d[2] << 8) | d[3])
    cdef uint32_t ssrc = ((<uint32_t>d[8] << 24) | (<uint32_t>d[9] << 16) | (<uint32_t>d[10] << 8)
                          | d[11])
    cdef int k = CAND_OTHER
    cdef Candidate* cand
    cdef Candidate* better
    if ep.has_sig and same_host(&ep.sig, p.src):
        k = CAND_ADDR
    cand = &leg.cand[k]
    if (cand.run and same_addr(&cand.src, p.src) and ssrc == cand.ssrc
            and seq == <uint16_t>(cand.seq + 1)):
        if cand.run < 0xFFFF:
            cand.run += 1
    else:                                       # a new candidate, or a break in its sequence
        copy_source(&cand.src, p.src)
        cand.ssrc = ssrc
        cand.run = 1
    cand.seq = seq
    cand.last_ns = now
    if leg.learn_start == 0:
        leg.learn_start = now
    if cand.run < c.learn_packets or now - leg.learn_start < c.learn_ns:
        return DROP_LEARNING
    if k == CAND_OTHER:
        better = &leg.cand[CAND_ADDR]
        if better.run >= c.learn_packets and now - better.last_ns < c.learn_ns:
            return DROP_LEARNING                # one from the signalled address is still sending
    latch(p, ep)
    return 0


cdef inline int check_source(Pkt* p, uint64_t now) noexcept nogil:
    """Symmetric RTP with endpoint learning (see the module docstring); 0 or the drop counter."""
    cdef Endpoint* ep = &p.leg.ep[p.kind]
    cdef Endpoint* rtp
    if ep.state == EP_LATCHED:
        if same_addr(&ep.dest, p.src):
            return 0
        if ep.has_sig and not ep.exact and same_addr(&ep.sig, p.src):
            latch(p, ep)                        # the signalled remote takes over a learned latch
            return 0
        return DROP_SOURCE
    if ep.has_sig and same_addr(&ep.sig, p.src):
        latch(p, ep)
        return 0
    if p.rtcp:                                  # no sequence numbers: follow the RTP latch
        rtp = &p.leg.ep[KIND_RTP]
        if (p.kind == KIND_RTCP and rtp.state == EP_LATCHED
                and same_host(&rtp.dest, p.src)):
            latch(p, ep)
            return 0
        return DROP_LEARNING
    return learn(p, ep, now)


cdef inline void count(Pkt* p, uint64_t now) noexcept nogil:
    """Receive counters and RFC 3550 A.1/A.8 statistics: sequence gaps and interarrival jitter."""
    cdef uint64_t* ctr = p.leg.ctr
    cdef Leg* leg = p.leg
    cdef unsigned char* d = p.data
    cdef uint16_t seq, delta
    cdef uint32_t ssrc, ts, arrival
    cdef int32_t transit, dt
    cdef uint8_t pt
    if p.rtcp:
        ctr[RTCP_PACKETS_IN] += 1
        ctr[RTCP_BYTES_IN] += p.length
        ctr[LAST_RTCP_RX_NS] = now
        return
    ctr[RTP_PACKETS_IN] += 1
    ctr[RTP_BYTES_IN] += p.length
    ctr[LAST_RX_NS] = now
    seq = <uint16_t>((d[2] << 8) | d[3])
    ts = (<uint32_t>d[4] << 24) | (<uint32_t>d[5] << 16) | (<uint32_t>d[6] << 8) | d[7]
    ssrc = (<uint32_t>d[8] << 24) | (<uint32_t>d[9] << 16) | (<uint32_t>d[10] << 8) | d[11]
    pt = d[1] & 0x7F
    if not leg.seq_valid or ssrc != leg.ssrc:
        leg.ssrc = ssrc
        leg.seq_valid = 1
        leg.max_seq = seq
        leg.transit_valid = 0
        ctr[SSRC] = ssrc
    else:
        delta = <uint16_t>(seq - leg.max_seq)
        if delta != 0 and delta < 3000:             # RFC 3550 A.1 MAX_DROPOUT
            ctr[SEQ_GAPS] += delta - 1
            leg.max_seq = seq
        elif delta >= 3000 and delta < 0x8000:      # a jump: start over from here
            leg.max_seq = seq
    if JITTER_PT[pt]:
        arrival = <uint32_t>(now // (1000000000ULL // CLOCK_RATE))
        transit = <int32_t>(arrival - ts)
        if leg.transit_valid:
            dt = transit - leg.transit
            if dt < 0:
                dt = -dt
            ctr[JITTER_Q4] += <uint64_t>dt
            ctr[JITTER_Q4] -= (ctr[JITTER_Q4] + 8) >> 4
        leg.transit = transit
        leg.transit_valid = 1


cdef inline int route(Pkt* p) noexcept nogil:
    """0 when the packet goes to the other leg, else the drop counter to bump."""
    if not p.leg.forward or p.peer.play != NULL:
        return DROP_DISABLED
    if p.peer.ep[p.kind].state == EP_NONE:
        return DROP_NO_REMOTE
    return 0


cdef inline void rewrite(Pkt* p) noexcept nogil:
    """Per-direction payload-type map; the marker bit and everything else stay as they came."""
    if not p.rtcp:
        p.data[1] = (p.data[1] & 0x80) | p.leg.pt_map[p.data[1] & 0x7F]


cdef inline int forward(Pkt* p) noexcept nogil:
    """Queue the datagram out of the other leg's socket of the same kind; 1 if the buffer is kept."""
    cdef Endpoint* out = &p.peer.ep[p.kind]
    cdef int sk = sock_of(p.kind)
    cdef uint64_t* ctr = p.peer.ctr
    if p.rtcp:
        ctr[RTCP_PACKETS_OUT] += 1
        ctr[RTCP_BYTES_OUT] += p.length
    else:
        ctr[RTP_PACKETS_OUT] += 1
        ctr[RTP_BYTES_OUT] += p.length
    queue_send(p.core, p.peer.sock[sk].fd, fixed_index(p.slot, 1 - p.li, sk),
               NULL if out.connected else &out.dest, p.data, p.length, p.bid,
               make_ud(OP_SEND, p.slot, p.s.gen, 1 - p.li, sk, p.rtcp, p.length))
    return p.bid >= 0


cdef inline int handle_packet(Pkt* p, uint64_t now) noexcept nogil:
    """One datagram through the path; returns 1 when a queued send now owns its buffer."""
    cdef int kept
    cdef uint64_t handoff
    cdef int drop = parse(p)
    p.latched = 0
    if drop == 0:
        drop = check_source(p, now)
    if drop:
        p.leg.ctr[drop] += 1
        return 0
    count(p, now)
    drop = route(p)
    if drop:
        p.leg.ctr[drop] += 1
        kept = 0
    else:
        rewrite(p)
        kept = forward(p)
    if p.core.kfd >= 0 and (p.latched or p.leg.kin[p.kind]):
        # The kernel takes this source's packets from the latch on (or has taken them: this one was
        # read after the handoff). The entry goes in before the latching packet leaves, so a peer
        # that answers that packet reaches the kernel; what this loop forwarded leaves at once, so
        # a stream is reordered at the handoff only by a packet arriving within those microseconds
        # or one still unread in the socket when the entry went in (a phone sends every 20 ms).
        # Such an unread packet moved this leg's sequence state on, not the entry's: the entry is
        # put in again from here (its counts merged first), or the kernel would count it a gap;
        # only within HANDOFF_US of the entry going in, so the packets the program always passes
        # up (IP options, fragments) cost no system calls.
        if p.latched:
            kernel_refresh(p.core, p.slot)      # after count(): the entry starts from this packet
        elif not p.rtcp and now < p.leg.kin_ns[p.kind] + <uint64_t>HANDOFF_US * 1000:
            handoff = p.leg.kin_ns[p.kind]
            kernel_remove(p.core, p.slot, p.li, p.kind)
            kernel_refresh(p.core, p.slot)
            if p.leg.kin[p.kind]:
                # the window runs from the handoff, not from this re-install: a stream the program
                # always passes up would otherwise be put in again for every packet
                p.leg.kin_ns[p.kind] = handoff
        flush_sends(p.core)
    return kept

# ---------------------------------------------------------------------------------------------
# Sends: queued during a batch, flushed by the back end
# ---------------------------------------------------------------------------------------------

cdef void send_failed(Core* c, uint64_t ud) noexcept nogil:
    """A send that did not leave (full socket buffer, unreachable): count it as a send drop."""
    cdef Session* s = session_of(c, ud)
    cdef uint64_t* ctr
    if s == NULL or s.state != S_ACTIVE:
        return                                  # a closing session's counters are final
    ctr = s.leg[ud_leg(ud)].ctr
    if ud_rtcp(ud):
        ctr[RTCP_PACKETS_OUT] -= 1
        ctr[RTCP_BYTES_OUT] -= ud_len(ud)
    else:
        ctr[RTP_PACKETS_OUT] -= 1
        ctr[RTP_BYTES_OUT] -= ud_len(ud)
    ctr[DROP_SEND] += 1


cdef inline int32_t fixed_index(uint32_t slot, int li, int sk) noexcept nogil:
    """Where a session's socket sits in the registered file table."""
    return <int32_t>(slot * (2 * N_SOCKS) + li * N_SOCKS + sk)


cdef inline void queue_send(Core* c, int fd, int32_t fix, const sockaddr_in6* dst,
                            unsigned char* data, uint32_t length, int32_t bid,
                            uint64_t ud) noexcept nogil:
    cdef uint32_t i
    if c.n_out >= OUT_CAP:
        flush_sends(c)
    i = c.n_out
    c.n_out += 1
    c.out_iov[i].iov_base = data
    c.out_iov[i].iov_len = length
    if dst != NULL:
        c.out_dst[i] = dst[0]
        c.out_mm[i].msg_hdr.msg_name = &c.out_dst[i]
        c.out_mm[i].msg_hdr.msg_namelen = c.addrlen
    else:                                       # a connected socket
        c.out_mm[i].msg_hdr.msg_name = NULL
        c.out_mm[i].msg_hdr.msg_namelen = 0
    c.out_mm[i].msg_hdr.msg_iov = &c.out_iov[i]
    c.out_mm[i].msg_hdr.msg_iovlen = 1
    c.out_mm[i].msg_hdr.msg_control = NULL
    c.out_mm[i].msg_hdr.msg_controllen = 0
    c.out_mm[i].msg_hdr.msg_flags = 0
    c.out_fd[i] = fd
    c.out_fix[i] = fix
    c.out_bid[i] = bid
    c.out_ud[i] = ud
    if c.backend == BACKEND_URING:
        uring_queue_send(c, i)


cdef void flush_sends(Core* c) noexcept nogil:
    """Hand the queued sends to the kernel (the back end's way) and empty the queue."""
    if c.backend == BACKEND_URING:
        uring_flush(c)
    else:
        epoll_flush(c)

# ---------------------------------------------------------------------------------------------
# Played frames (ringback): a timer per playing leg
# ---------------------------------------------------------------------------------------------

cdef int heap_push(Core* c, uint64_t due, uint32_t slot, uint32_t gen, int leg,
                   uint32_t serial) noexcept nogil:
    cdef uint32_t i, parent
    cdef Timer t
    cdef Timer* grown
    if c.n_heap == c.heap_cap:
        grown = <Timer*>realloc(c.heap, sizeof(Timer) * c.heap_cap * 2)
        if grown == NULL:
            return -1
        c.heap = grown
        c.heap_cap *= 2
    t.due = due
    t.slot = slot
    t.gen = gen
    t.leg = <uint8_t>leg
    t.serial = serial
    i = c.n_heap
    c.n_heap += 1
    while i > 0:
        parent = (i - 1) >> 1
        if c.heap[parent].due <= due:
            break
        c.heap[i] = c.heap[parent]
        i = parent
    c.heap[i] = t
    return 0


cdef void heap_pop(Core* c) noexcept nogil:
    cdef uint32_t i = 0, child
    cdef Timer last
    c.n_heap -= 1
    if c.n_heap == 0:
        return
    last = c.heap[c.n_heap]
    while True:
        child = 2 * i + 1
        if child >= c.n_heap:
            break
        if child + 1 < c.n_heap and c.heap[child + 1].due < c.heap[child].due:
            child += 1
        if c.heap[child].due >= last.due:
            break
        c.heap[i] = c.heap[child]
        i = child
    c.heap[i] = last


cdef void send_played(Core* c, uint32_t slot, int li) noexcept nogil:
    """Build one RTP packet from the leg's next frame and queue it to the leg's remote."""
    cdef Session* s = &c.sessions[slot]
    cdef Leg* leg = &s.leg[li]
    cdef Play* pl = leg.play
    cdef Endpoint* ep = &leg.ep[KIND_RTP]
    cdef unsigned char* b
    cdef uint32_t length = 12 + pl.frame_bytes
    if ep.state == EP_NONE:
        leg.ctr[DROP_NO_REMOTE] += 1
    else:
        if c.n_scratch >= PLAY_SCRATCH:
            flush_sends(c)
        b = c.scratch + <size_t>c.n_scratch * (12 + MAX_FRAME)
        c.n_scratch += 1
        b[0] = 0x80
        b[1] = (pl.marker << 7) | pl.pt
        b[2] = pl.seq >> 8
        b[3] = pl.seq & 0xFF
        b[4] = pl.timestamp >> 24
        b[5] = (pl.timestamp >> 16) & 0xFF
        b[6] = (pl.timestamp >> 8) & 0xFF
        b[7] = pl.timestamp & 0xFF
        b[8] = pl.ssrc >> 24
        b[9] = (pl.ssrc >> 16) & 0xFF
        b[10] = (pl.ssrc >> 8) & 0xFF
        b[11] = pl.ssrc & 0xFF
        memcpy(b + 12, pl.frames + <size_t>pl.index * pl.frame_bytes, pl.frame_bytes)
        leg.ctr[PLAYED_PACKETS] += 1
        leg.ctr[RTP_PACKETS_OUT] += 1
        leg.ctr[RTP_BYTES_OUT] += length
        queue_send(c, leg.sock[SK_RTP].fd, fixed_index(slot, li, SK_RTP),
                   NULL if ep.connected else &ep.dest, b, length, -1,
                   make_ud(OP_SEND, slot, s.gen, li, SK_RTP, 0, length))
    pl.marker = 0
    pl.seq = <uint16_t>(pl.seq + 1)
    pl.timestamp += pl.samples
    pl.index += 1
    if pl.index == pl.nframes:
        pl.index = 0


cdef void run_timers(Core* c, uint64_t now) noexcept nogil:
    cdef Timer t
    cdef Session* s
    cdef Leg* leg
    cdef uint64_t due
    while c.n_heap and c.heap[0].due <= now:
        t = c.heap[0]
        heap_pop(c)
        s = &c.sessions[t.slot]
        if s.state != S_ACTIVE or s.gen != t.gen:
            continue
        leg = &s.leg[t.leg]
        if leg.play == NULL or leg.play.serial != t.serial:
            continue                            # stopped or restarted since: a stale timer
        send_played(c, t.slot, t.leg)
        due = t.due + leg.play.period_ns
        if due + 5 * leg.play.period_ns < now:  # the loop stalled: resume from now, don't burst
            due = now + leg.play.period_ns
        heap_push(c, due, t.slot, t.gen, t.leg, t.serial)
    if c.kfd >= 0 and c.kentries and c.ksync_due <= now:
        kernel_sync(c)
        c.ksync_due = now + <uint64_t>KSYNC_MS * 1000000


cdef inline long long next_timeout_ns(Core* c, uint64_t now) noexcept nogil:
    cdef long long t = -1, k
    if c.n_heap:
        t = 0 if c.heap[0].due <= now else <long long>(c.heap[0].due - now)
    if c.kfd >= 0 and c.kentries:               # the kernel path's counters are due
        k = 0 if c.ksync_due <= now else <long long>(c.ksync_due - now)
        if t < 0 or k < t:
            t = k
    if c.n_sessions and (t < 0 or t > <long long>COMMAND_MS * 1000000):
        t = <long long>COMMAND_MS * 1000000     # the tick that lets verbs leave the loop asleep
    return t


cdef inline uint64_t wait_end(uint64_t now, long long timeout) noexcept nogil:
    """When a wait of ``timeout`` ns from ``now`` ends (< 0: never)."""
    return 0xFFFFFFFFFFFFFFFFULL if timeout < 0 else now + <uint64_t>timeout


cdef void free_play(Leg* leg) noexcept nogil:
    if leg.play != NULL:
        if leg.play.owned:
            free(leg.play.frames)
        free(leg.play)
        leg.play = NULL

# ---------------------------------------------------------------------------------------------
# The kernel fast path: bridged directions handed to the BPF program of mss/bpf/
# ---------------------------------------------------------------------------------------------
#
# An entry per direction and kind (what leg li receives as RTP or RTCP, forwarded to the other
# leg) is in the kernel's map exactly while kernel_want() holds: the session is active, that
# direction forwards, the other leg is not playing, leg li has latched (the entry's strict source)
# and the other leg has a remote. The packet path calls kernel_refresh() after a latch; every verb
# that changes any of this removes the session's entries first (kernel_unload) and refreshes
# after; finish_close() removes them before the sockets close. Entries are taken out with their
# last counters, which are merged into the counters array (kernel_merge), as kernel_sync() does
# every KSYNC_MS for all of them.

cdef inline void kernel_key(Core* c, Leg* leg, int kind, kf_key* key) noexcept nogil:
    memset(key, 0, sizeof(kf_key))
    key.family = 4 if is_v4mapped(c.host) else 6
    key.port = htons(<uint16_t>(leg.port + kind))
    kernel_addr(key.addr, c.host)


cdef inline int kernel_want(Core* c, Session* s, int li, int kind) noexcept nogil:
    cdef Leg* leg = &s.leg[li]
    cdef Leg* peer = &s.leg[1 - li]
    return (s.state == S_ACTIVE and leg.forward and peer.play == NULL
            and leg.ep[kind].state == EP_LATCHED and peer.ep[kind].state != EP_NONE
            and leg.port != 0 and peer.port != 0
            # the program rewrites addresses, not IP versions: a direction that changes family
            # (a dual-stack relay) stays in userspace
            and is_v4(&leg.ep[kind].dest) == is_v4mapped(c.host)
            and is_v4(&peer.ep[kind].dest) == is_v4mapped(c.host))


cdef void kernel_merge(Session* s, int li, int kind, const kf_entry* v) noexcept nogil:
    """Add what the kernel counted since the last merge to the legs' counters."""
    cdef Leg* leg = &s.leg[li]
    cdef Leg* peer = &s.leg[1 - li]
    cdef uint64_t dp = v.packets - leg.kpackets[kind]
    cdef uint64_t db = v.bytes - leg.kbytes[kind]
    cdef uint64_t dm = v.mux_packets - leg.kmux_packets
    if kind == KIND_RTP and dm:
        leg.ctr[RTCP_PACKETS_IN] += dm
        leg.ctr[RTCP_BYTES_IN] += v.mux_bytes - leg.kmux_bytes
        peer.ctr[RTCP_PACKETS_OUT] += dm
        peer.ctr[RTCP_BYTES_OUT] += v.mux_bytes - leg.kmux_bytes
        if v.mux_last_ns > leg.ctr[LAST_RTCP_RX_NS]:
            leg.ctr[LAST_RTCP_RX_NS] = v.mux_last_ns
        leg.kmux_packets = v.mux_packets
        leg.kmux_bytes = v.mux_bytes
    if dp == 0:
        return
    leg.kpackets[kind] = v.packets
    leg.kbytes[kind] = v.bytes
    if kind == KIND_RTCP:
        leg.ctr[RTCP_PACKETS_IN] += dp
        leg.ctr[RTCP_BYTES_IN] += db
        peer.ctr[RTCP_PACKETS_OUT] += dp
        peer.ctr[RTCP_BYTES_OUT] += db
        if v.last_ns > leg.ctr[LAST_RTCP_RX_NS]:
            leg.ctr[LAST_RTCP_RX_NS] = v.last_ns
        return
    leg.ctr[RTP_PACKETS_IN] += dp
    leg.ctr[RTP_BYTES_IN] += db
    peer.ctr[RTP_PACKETS_OUT] += dp
    peer.ctr[RTP_BYTES_OUT] += db
    if v.last_ns > leg.ctr[LAST_RX_NS]:
        leg.ctr[LAST_RX_NS] = v.last_ns
    leg.ctr[SEQ_GAPS] += v.seq_gaps - leg.kgaps
    leg.kgaps = v.seq_gaps
    leg.ctr[SSRC] = v.ssrc
    leg.ctr[JITTER_Q4] = v.jitter_q4
    # the sequence and jitter state goes on from the kernel's (packets it passed up use it)
    leg.ssrc = v.ssrc
    leg.seq_valid = v.seq_valid
    leg.max_seq = v.max_seq
    leg.transit = v.transit
    leg.transit_valid = v.transit_valid


cdef void kernel_install(Core* c, uint32_t slot, int li, int kind) noexcept nogil:
    cdef Session* s = &c.sessions[slot]
    cdef Leg* leg = &s.leg[li]
    cdef Leg* peer = &s.leg[1 - li]
    cdef kf_key key
    cdef kf_entry e
    cdef uint64_t t0
    cdef int i, err
    kernel_key(c, leg, kind, &key)
    memset(&e, 0, sizeof(kf_entry))
    kernel_sockaddr(e.src, &leg.ep[kind].dest)
    e.src_port = leg.ep[kind].dest.sin6_port
    kernel_addr(e.out_src, c.host)
    e.out_sport = htons(<uint16_t>(peer.port + kind))
    kernel_sockaddr(e.out_dst, &peer.ep[kind].dest)
    e.out_dport = peer.ep[kind].dest.sin6_port
    e.rtcp = <uint8_t>kind
    e.cookie = (slot << 2) | <uint32_t>(li << 1) | <uint32_t>kind
    if kind == KIND_RTP:
        for i in range(128):
            e.pt_map[i] = leg.pt_map[i]
            if leg.pt_map[i] != i:
                e.pt_rewrite = 1
        e.ssrc = leg.ssrc                       # go on with the relay's sequence and jitter state
        e.seq_valid = leg.seq_valid
        e.max_seq = leg.max_seq
        e.transit = leg.transit
        e.transit_valid = leg.transit_valid
        e.jitter_q4 = leg.ctr[JITTER_Q4]
    t0 = mono_ns()
    err = kf_put(c.kfd, &key, &e)
    c.kinstall_ns += mono_ns() - t0
    if err:
        c.kerrors += 1                          # the map is full: this direction stays here
        return
    leg.kin[kind] = 1
    leg.kin_ns[kind] = t0
    leg.kpackets[kind] = 0
    leg.kbytes[kind] = 0
    if kind == KIND_RTP:
        leg.kgaps = 0
        leg.kmux_packets = 0
        leg.kmux_bytes = 0
    leg.ksrc[kind] = leg.ep[kind].dest
    leg.kdst[kind] = peer.ep[kind].dest
    c.kentries += 1
    c.kinstalls += 1


cdef void kernel_remove(Core* c, uint32_t slot, int li, int kind) noexcept nogil:
    cdef Session* s = &c.sessions[slot]
    cdef Leg* leg = &s.leg[li]
    cdef kf_key key
    cdef kf_entry v
    if not leg.kin[kind]:
        return
    kernel_key(c, leg, kind, &key)
    if kf_take(c.kfd, &key, &v) == 0:
        kernel_merge(s, li, kind, &v)
    else:
        c.kerrors += 1
    leg.kin[kind] = 0
    c.kentries -= 1
    c.kremovals += 1


cdef void kernel_unload(Core* c, uint32_t slot) noexcept nogil:
    """Take the session's entries out of the kernel (their counters merged)."""
    cdef int li, kind
    if c.kfd < 0:
        return
    for li in range(2):
        for kind in range(2):
            kernel_remove(c, slot, li, kind)


cdef void kernel_unload_kind(Core* c, uint32_t slot, int kind) noexcept nogil:
    """Take out the session's entries of one kind (both directions): what a leg's remote of that
    kind decides (the leg's own source, the other direction's destination)."""
    if c.kfd < 0:
        return
    kernel_remove(c, slot, 0, kind)
    kernel_remove(c, slot, 1, kind)


cdef void kernel_refresh(Core* c, uint32_t slot) noexcept nogil:
    """Make the session's entries what kernel_want() says, with the current remotes."""
    cdef Session* s = &c.sessions[slot]
    cdef Leg* leg
    cdef int li, kind, want
    if c.kfd < 0:
        return
    for li in range(2):
        leg = &s.leg[li]
        for kind in range(2):
            want = kernel_want(c, s, li, kind)
            if leg.kin[kind] and (not want or not same_addr(&leg.ksrc[kind], &leg.ep[kind].dest)
                                  or not same_addr(&leg.kdst[kind], &s.leg[1 - li].ep[kind].dest)):
                kernel_remove(c, slot, li, kind)
            if want and not leg.kin[kind]:
                kernel_install(c, slot, li, kind)


cdef void kernel_sync_session(Core* c, uint32_t slot) noexcept nogil:
    """Merge one session's entries now (for a consistent snapshot)."""
    cdef Session* s = &c.sessions[slot]
    cdef kf_key key
    cdef kf_entry v
    cdef int li, kind
    if c.kfd < 0:
        return
    for li in range(2):
        for kind in range(2):
            if s.leg[li].kin[kind]:
                kernel_key(c, &s.leg[li], kind, &key)
                if kf_get(c.kfd, &key, &v) == 0:
                    kernel_merge(s, li, kind, &v)


cdef void kernel_sync(Core* c) noexcept nogil:
    """Merge every entry's counters, read from the map in batches."""
    cdef uint32_t token = 0, n, i, slot, rounds
    cdef int err, first = 1, li, kind
    cdef Session* s
    for rounds in range(c.capacity * 4 // KSYNC_BATCH + 2):   # bounded: the map's size
        n = KSYNC_BATCH
        err = kf_batch(c.kfd, not first, &token, c.kkeys, c.kvals, &n)
        first = 0
        if err and err != ENOENT:
            c.kerrors += 1
            return
        for i in range(n):
            slot = c.kvals[i].cookie >> 2
            li = (c.kvals[i].cookie >> 1) & 1
            kind = c.kvals[i].cookie & 1
            if slot < c.capacity:
                s = &c.sessions[slot]
                if s.leg[li].kin[kind]:
                    kernel_merge(s, li, kind, &c.kvals[i])
        if err == ENOENT:
            return

# ---------------------------------------------------------------------------------------------
# Verbs' work on a session (mutex held)
# ---------------------------------------------------------------------------------------------

cdef void signal_remote(Core* c, uint32_t slot, Leg* leg, int kind,
                        const sockaddr_in6* sig) noexcept nogil:
    """The leg's remote of ``kind`` from signalling: where it sends until a packet latches it, and
    the source that latches at once (see the module docstring)."""
    cdef Endpoint* ep = &leg.ep[kind]
    cdef int changed = not (ep.has_sig and same_addr(&ep.sig, sig))
    ep.sig = sig[0]
    ep.has_sig = 1
    if ep.state == EP_LATCHED and (not changed or same_addr(&ep.dest, &ep.sig)):
        # the same remote again (a session refresh): the leg stays, and so do its entries
        ep.exact = same_addr(&ep.dest, &ep.sig)
        return
    if not (ep.state == EP_EXPECTED and same_addr(&ep.dest, &ep.sig)):
        kernel_unload_kind(c, slot, kind)       # it moves: its entries go first
    if kind == KIND_RTP and changed:
        restart_learning(leg)                   # candidates were judged against another remote
    ep.dest = ep.sig
    ep.state = EP_EXPECTED
    ep.exact = 0
    if kind == KIND_RTP:                        # SK_RTP follows the remote; others reach SK_ANY
        connect_rtp(c, slot, leg)
    kernel_refresh(c, slot)

# ---------------------------------------------------------------------------------------------
# Session teardown (shared)
# ---------------------------------------------------------------------------------------------

cdef void finish_close(Core* c, uint32_t slot) noexcept nogil:
    """Close the six sockets and free the slot; a verb waiting for it (wait_closing) is woken once
    the mutex is released (unlock_notify)."""
    cdef Session* s = &c.sessions[slot]
    cdef int li, k
    kernel_unload(c, slot)                      # the entries never outlive their session
    if s.state == S_CLOSING:
        c.n_closing -= 1
    if s.state != S_FREE:
        c.n_sessions -= 1
    if c.backend == BACKEND_URING and c.fixed and c.thread_running and not c.stopped:
        uring_register_files(c, slot, 1)        # the table holds references: drop them first
    for li in range(2):
        free_play(&s.leg[li])
        for k in range(N_SOCKS):
            if s.leg[li].sock[k].fd >= 0:
                close(s.leg[li].sock[k].fd)
                s.leg[li].sock[k].fd = -1
            s.leg[li].sock[k].armed = 0
        s.leg[li].ep[KIND_RTP].connected = 0
    s.state = S_FREE
    s.gen += 1
    c.notify = 1                                # a verb waiting for it: see unlock_notify()


cdef void wait_closing(Core* c, int slot) noexcept nogil:
    """Wait (mutex held) until ``slot``'s session is closed, or every closing session when ``slot``
    is -1. The loop is woken for it: a caller waits, so it must not wait for the loop's tick. A loop
    that has stopped leaves what it did not close to core_free(); ``slot`` is closed here then."""
    wake_loop(c)
    while not c.stopped and (c.n_closing > 0 if slot < 0
                             else c.sessions[slot].state == S_CLOSING):
        pthread_cond_wait(&c.cv, &c.mu)
    if slot >= 0 and c.sessions[slot].state == S_CLOSING:
        finish_close(c, <uint32_t>slot)


cdef inline void unlock_notify(Core* c) noexcept nogil:
    """Release the mutex, then wake the verbs waiting for a session to close (finish_close): woken
    after the release, they find the mutex free, where woken under it they would wait for it once
    more (a second sleep and wake-up per close). Safe: the state they wait for changed under the
    mutex, and they test it under the mutex before they wait."""
    cdef int notify = c.notify
    c.notify = 0
    pthread_mutex_unlock(&c.mu)
    if notify:
        pthread_cond_broadcast(&c.cv)

# ---------------------------------------------------------------------------------------------
# The back ends
# ---------------------------------------------------------------------------------------------

include "_rtp_uring.pxi"
include "_rtp_epoll.pxi"

# ---------------------------------------------------------------------------------------------
# The thread
# ---------------------------------------------------------------------------------------------

cdef void* loop_main(void* arg) noexcept nogil:
    cdef Core* c = <Core*>arg
    cdef sigset_t all_signals
    cdef int err = -ENOSYS
    sigfillset(&all_signals)
    pthread_sigmask(SIG_BLOCK, &all_signals, NULL)   # signals belong to the Python main thread
    prctl(PR_SET_NAME, <unsigned long><uintptr_t>THREAD_NAME, 0, 0, 0)
    prctl(PR_SET_TIMERSLACK, 1000, 0, 0, 0)           # wake-ups within 1 µs of the gather time
    if c.want_backend != BACKEND_EPOLL:
        err = uring_setup(c)
        if err == 0:
            c.backend = BACKEND_URING
    if c.backend == 0 and c.want_backend != BACKEND_URING:
        err = epoll_setup(c)
        if err == 0:
            c.backend = BACKEND_EPOLL
    pthread_mutex_lock(&c.mu)
    c.ready = 1
    c.start_err = err if c.backend == 0 else 0
    pthread_cond_broadcast(&c.cv)
    pthread_mutex_unlock(&c.mu)
    if c.backend == BACKEND_URING:
        uring_loop(c)
    elif c.backend == BACKEND_EPOLL:
        epoll_loop(c)
    pthread_mutex_lock(&c.mu)
    c.stopped = 1
    pthread_mutex_unlock(&c.mu)
    pthread_cond_broadcast(&c.cv)                   # a verb waiting for a close (wait_closing)
    return NULL


cdef void core_free(Core* c) noexcept nogil:
    cdef uint32_t slot
    if c.thread_running:
        pthread_mutex_lock(&c.mu)
        c.stop = 1
        pthread_mutex_unlock(&c.mu)
        wake_loop(c)
        pthread_join(c.thread, NULL)
        c.thread_running = 0
    if c.sessions != NULL:
        for slot in range(c.capacity):
            if c.sessions[slot].state != S_FREE:
                finish_close(c, slot)
    pthread_cond_broadcast(&c.cv)
    if c.backend == BACKEND_URING:
        mss_uring_exit(&c.ring)             # ends every request still in flight
    epoll_free(c)
    if c.efd >= 0:
        close(c.efd)
    free(c.sessions)
    free(c.arm_q)
    free(c.disarm_q)
    free(c.rearm_q)
    free(c.heap)
    free(c.out_mm)
    free(c.out_iov)
    free(c.out_dst)
    free(c.out_fd)
    free(c.out_fix)
    free(c.out_bid)
    free(c.out_ud)
    free(c.scratch)
    free(c.kkeys)
    free(c.kvals)
    pthread_cond_destroy(&c.cv)
    pthread_mutex_destroy(&c.mu)
    free(c)

# ---------------------------------------------------------------------------------------------
# The Python surface
# ---------------------------------------------------------------------------------------------

def _os_error(int err, str what):
    return OSError(err, f"{what}: {strerror(err).decode()}")


cdef object endpoint_remote(const Endpoint* ep):
    """``(ip, port, latched)`` of where an endpoint sends (16 bytes, IPv4 mapped), or None."""
    if ep.state == EP_NONE:
        return None
    if ep.dest.sin6_family == AF_INET:
        return (b"\0" * 10 + b"\xff\xff" + (<char*>&(<sockaddr_in*>&ep.dest).sin_addr.s_addr)[:4],
                ntohs(ep.dest.sin6_port), ep.state == EP_LATCHED)
    return ((<char*>&ep.dest.sin6_addr)[:16], ntohs(ep.dest.sin6_port), ep.state == EP_LATCHED)


cdef class Engine:
    """The packet loop and its sessions; see ``_rtp.pyi`` for the documented surface."""

    cdef Core* c
    cdef object _counters
    cdef uint64_t[:, :, ::1] _view
    cdef dict _shared                  # frames played from where they are (PLAY_SHARED at most)

    def __cinit__(self, str host, int capacity, str backend, int gather_us, object counters,
                  int learn_ms, int learn_packets):
        cdef Core* c
        cdef int err = 0
        cdef bytes packed
        cdef uint32_t slot
        cdef int k
        if capacity < 1 or capacity > MAX_SLOTS:
            raise ValueError(f"capacity must be 1..{MAX_SLOTS}")
        if backend not in ("auto", "io_uring", "epoll"):
            raise ValueError("backend must be 'auto', 'io_uring' or 'epoll'")
        if gather_us < 0 or gather_us > 100000:
            raise ValueError("gather_us must be 0..100000")
        if learn_ms < 0 or learn_ms > MAX_LEARN_MS:
            raise ValueError(f"learn_ms must be 0..{MAX_LEARN_MS}")
        if learn_packets < 1 or learn_packets > MAX_LEARN_PACKETS:
            raise ValueError(f"learn_packets must be 1..{MAX_LEARN_PACKETS}")
        import ipaddress as _ipaddress
        try:
            address = _ipaddress.ip_address(host)
        except ValueError:
            raise ValueError(f"not an IP address: {host!r}") from None
        if address.version == 4:
            address = _ipaddress.IPv6Address("::ffff:" + str(address))
        packed = address.packed
        self._counters = counters
        self._view = counters
        self._shared = {}
        if self._view.shape[0] < capacity or self._view.shape[1] != 2 \
                or self._view.shape[2] != N_FIELDS:
            raise ValueError("counters must be uint64 of shape (capacity, 2, N_FIELDS)")
        c = <Core*>calloc(1, sizeof(Core))
        if c == NULL:
            raise MemoryError()
        self.c = c
        c.efd = -1
        c.epfd = -1
        c.kfd = -1
        c.ring.fd = -1
        pthread_mutex_init(&c.mu, NULL)
        pthread_cond_init(&c.cv, NULL)
        memcpy(c.host, <const char*>packed, 16)
        c.family = AF_INET if is_v4mapped(c.host) else AF_INET6
        c.addrlen = sizeof(sockaddr_in) if c.family == AF_INET else sizeof(sockaddr_in6)
        c.capacity = <uint32_t>capacity
        c.counters = &self._view[0, 0, 0]
        c.gather_ns = <uint64_t>gather_us * 1000
        c.learn_ns = <uint64_t>learn_ms * 1000000
        c.learn_packets = <uint32_t>learn_packets
        c.want_backend = BACKEND_URING if backend == "io_uring" else (
            BACKEND_EPOLL if backend == "epoll" else 0)
        c.sessions = <Session*>calloc(capacity, sizeof(Session))
        c.arm_q = <uint32_t*>calloc(capacity, sizeof(uint32_t))
        c.disarm_q = <uint32_t*>calloc(capacity, sizeof(uint32_t))
        c.rearm_q = <uint32_t*>calloc(capacity, sizeof(uint32_t))
        c.heap_cap = 64
        c.heap = <Timer*>calloc(c.heap_cap, sizeof(Timer))
        c.out_mm = <mmsghdr*>calloc(OUT_CAP, sizeof(mmsghdr))
        c.out_iov = <iovec*>calloc(OUT_CAP, sizeof(iovec))
        c.out_dst = <sockaddr_in6*>calloc(OUT_CAP, sizeof(sockaddr_in6))
        c.out_fd = <int*>calloc(OUT_CAP, sizeof(int))
        c.out_fix = <int32_t*>calloc(OUT_CAP, sizeof(int32_t))
        c.out_bid = <int32_t*>calloc(OUT_CAP, sizeof(int32_t))
        c.out_ud = <uint64_t*>calloc(OUT_CAP, sizeof(uint64_t))
        c.scratch = <unsigned char*>malloc(<size_t>PLAY_SCRATCH * (12 + MAX_FRAME))
        if (c.sessions == NULL or c.arm_q == NULL or c.disarm_q == NULL or c.rearm_q == NULL
                or c.heap == NULL
                or c.out_mm == NULL or c.out_iov == NULL or c.out_dst == NULL or c.out_fd == NULL
                or c.out_fix == NULL
                or c.out_bid == NULL or c.out_ud == NULL or c.scratch == NULL):
            raise MemoryError()
        for slot in range(c.capacity):
            for k in range(2 * N_SOCKS):
                c.sessions[slot].leg[k // N_SOCKS].sock[k % N_SOCKS].fd = -1
        c.efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)
        if c.efd < 0:
            raise _os_error(errno, "eventfd")
        with nogil:
            err = pthread_create(&c.thread, NULL, loop_main, c)
            if err == 0:
                c.thread_running = 1
                pthread_mutex_lock(&c.mu)
                while not c.ready:
                    pthread_cond_wait(&c.cv, &c.mu)
                err = c.start_err
                pthread_mutex_unlock(&c.mu)
        if err:
            if err < 0:
                err = -err
            raise _os_error(err, f"relay back end {backend}")

    def __dealloc__(self):
        if self.c != NULL:
            with nogil:
                core_free(self.c)
            self.c = NULL

    cdef Core* _core(self) except NULL:
        if self.c == NULL:
            raise RuntimeError("the relay is closed")
        return self.c

    cdef Session* _session(self, int slot) except NULL:
        cdef Core* c = self._core()
        if slot < 0 or <uint32_t>slot >= c.capacity:
            raise ValueError(f"no such slot: {slot}")
        if c.sessions[slot].state == S_FREE:
            raise ValueError(f"slot {slot} is not attached")
        return &c.sessions[slot]

    @property
    def backend(self):
        cdef Core* c = self._core()
        return "io_uring" if c.backend == BACKEND_URING else "epoll"

    @property
    def wakeups(self):
        return self._core().wakeups

    @property
    def rearms(self):
        return self._core().rearms

    @property
    def loop_errors(self):
        return self._core().loop_errors

    def bind_leg(self, int port):
        cdef Core* c = self._core()
        cdef int fds[3]
        cdef int k, err = 0, failed = port, one = 1, zero = 0
        cdef sockaddr_in6 addr
        if port < 1 or port > 65534 or port % 2:
            raise ValueError(f"RTP port must be even and below 65535: {port}")
        fds[0] = -1
        fds[1] = -1
        fds[2] = -1
        memset(&addr, 0, sizeof(addr))
        if c.family == AF_INET:
            addr.sin6_family = AF_INET
            memcpy(&(<sockaddr_in*>&addr).sin_addr.s_addr, c.host + 12, 4)
        else:
            addr.sin6_family = AF_INET6
            memcpy(&addr.sin6_addr, c.host, 16)
        with nogil:
            # The two RTP sockets share their port through SO_REUSEPORT, which another socket of
            # the same user could join; so SK_RTP binds first without it, an exclusive bind that
            # fails when anybody holds the port (another relay instance on an overlapping range
            # does the same and skips it), and takes SO_REUSEPORT only then, for SK_ANY to join.
            for k in range(N_SOCKS):                # SK_RTP, SK_RTCP, SK_ANY
                failed = port + (1 if k == SK_RTCP else 0)
                fds[k] = socket(c.family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0)
                if fds[k] < 0:
                    err = errno
                    break
                # dual-stack: :: then takes both families
                if c.family == AF_INET6 and setsockopt(fds[k], IPPROTO_IPV6, IPV6_V6ONLY, &zero,
                                                       sizeof(int)) < 0:
                    err = errno
                    break
                if k == SK_ANY and setsockopt(fds[k], SOL_SOCKET, SO_REUSEPORT, &one,
                                              sizeof(int)) < 0:
                    err = errno
                    break
                addr.sin6_port = htons(<uint16_t>failed)
                if bind(fds[k], <sockaddr*>&addr, c.addrlen) < 0:
                    err = errno
                    break
                if k == SK_RTP and setsockopt(fds[k], SOL_SOCKET, SO_REUSEPORT, &one,
                                              sizeof(int)) < 0:
                    err = errno
                    break
            if err:
                for k in range(N_SOCKS):
                    if fds[k] >= 0:
                        close(fds[k])
        if err:
            raise _os_error(err, f"bind port {failed}")
        return fds[0], fds[1], fds[2]

    def close_fd(self, int fd):
        if fd >= 0:
            with nogil:
                close(fd)

    def attach(self, int slot, int a_port, tuple a_fds, int b_port, tuple b_fds, bint a_to_b,
               bint b_to_a):
        cdef Core* c = self._core()
        cdef Session* s
        cdef int fds[6]
        cdef uint16_t ports[2]
        cdef int li, k, i, err = 0, wake = 0
        if slot < 0 or <uint32_t>slot >= c.capacity:
            raise ValueError(f"no such slot: {slot}")
        if len(a_fds) != N_SOCKS or len(b_fds) != N_SOCKS:
            raise ValueError("a leg is three sockets, as bind_leg() returns them")
        if not (0 < a_port < 65535 and 0 < b_port < 65535):
            raise ValueError("bad RTP port")
        ports[0] = <uint16_t>a_port
        ports[1] = <uint16_t>b_port
        for k in range(N_SOCKS):
            fds[k] = a_fds[k]
            fds[N_SOCKS + k] = b_fds[k]
        with nogil:
            pthread_mutex_lock(&c.mu)
            s = &c.sessions[slot]
            if s.state == S_CLOSING:
                wait_closing(c, slot)               # its sockets are closed on the loop's turn
            if s.state != S_FREE:
                err = -1
                for i in range(2 * N_SOCKS):
                    close(fds[i])
            else:
                memset(&c.counters[<size_t>slot * 2 * N_FIELDS], 0,
                       sizeof(uint64_t) * 2 * N_FIELDS)
                for li in range(2):
                    memset(&s.leg[li], 0, sizeof(Leg))
                    s.leg[li].ctr = &c.counters[(<size_t>slot * 2 + li) * N_FIELDS]
                    for i in range(128):
                        s.leg[li].pt_map[i] = <uint8_t>i
                    for k in range(N_SOCKS):
                        s.leg[li].sock[k].fd = fds[li * N_SOCKS + k]
                    s.leg[li].port = ports[li]
                s.leg[0].forward = a_to_b
                s.leg[1].forward = b_to_a
                c.n_sessions += 1
                if c.backend == BACKEND_URING:
                    uring_attach(c, <uint32_t>slot)     # the loop arms the receives
                    wake = not loop_comes_by(c, mono_ns())
                else:
                    err = epoll_attach(c, <uint32_t>slot)
            pthread_mutex_unlock(&c.mu)
            if wake:
                wake_loop(c)
        if err == -1:
            raise ValueError(f"slot {slot} is in use")
        if err:
            self.detach(slot)
            raise _os_error(err, "epoll_ctl")

    def detach(self, int slot):
        cdef Core* c = self._core()
        cdef Session* s
        cdef int wake = 0
        if slot < 0 or <uint32_t>slot >= c.capacity:
            raise ValueError(f"no such slot: {slot}")
        with nogil:
            pthread_mutex_lock(&c.mu)
            s = &c.sessions[slot]
            if s.state != S_FREE and s.state != S_CLOSING:
                kernel_unload(c, <uint32_t>slot)    # first: nothing forwarded while it closes
                if c.backend == BACKEND_URING and c.thread_running and not c.stop:
                    # S_CLOSING from here on: the loop neither forwards nor counts for the session
                    # (its counters row is final), and closes its sockets on its next turn
                    uring_queue_close(c, <uint32_t>slot)
                    wake = not loop_comes_by(c, mono_ns())
                else:
                    finish_close(c, slot)
            pthread_mutex_unlock(&c.mu)
            if wake:
                wake_loop(c)

    def wait_closed(self):
        cdef Core* c = self._core()
        with nogil:
            pthread_mutex_lock(&c.mu)
            if c.n_closing:
                wait_closing(c, -1)
            pthread_mutex_unlock(&c.mu)

    @property
    def closing(self):
        return self._core().n_closing

    def set_remote(self, int slot, int leg, bytes ip, int port, int rtcp_port, bint rtcp_pinned):
        cdef Core* c = self._core()
        cdef Session* s = self._session(slot)
        cdef sockaddr_in6 sig[2]
        cdef int kind
        if leg not in (0, 1) or port < 1 or port > 65535 or rtcp_port < 1 or rtcp_port > 65535:
            raise ValueError("bad leg or port")
        if len(ip) != 16:
            raise ValueError("ip must be 16 bytes (IPv4 as ::ffff:a.b.c.d)")
        for kind in range(2):
            memset(&sig[kind], 0, sizeof(sockaddr_in6))
            sig[kind].sin6_port = htons(<uint16_t>(rtcp_port if kind == KIND_RTCP else port))
            if c.family == AF_INET:             # an IPv4 relay: ::ffff:a.b.c.d, or :: (a hold)
                sig[kind].sin6_family = AF_INET
                if is_v4mapped(<const uint8_t*><const char*>ip):
                    memcpy(&(<sockaddr_in*>&sig[kind]).sin_addr.s_addr, (<const char*>ip) + 12, 4)
            else:
                sig[kind].sin6_family = AF_INET6
                memcpy(&sig[kind].sin6_addr, <const char*>ip, 16)
        with nogil:
            pthread_mutex_lock(&c.mu)
            s.leg[leg].rtcp_pinned = rtcp_pinned
            for kind in range(2):
                signal_remote(c, <uint32_t>slot, &s.leg[leg], kind, &sig[kind])
            pthread_mutex_unlock(&c.mu)
        # No wake-up: the re-arm as a plain recv (io_uring) only saves copying out the source
        # address; until the loop's next turn (the leg's first packet wakes it) the recvmsg
        # receives from the connected remote just as well. Waking here cost a context switch
        # per call of this verb (two a leg).

    def relatch(self, int slot, int leg):
        cdef Core* c = self._core()
        cdef Session* s = self._session(slot)
        cdef int k
        if leg not in (0, 1):
            raise ValueError("bad leg")
        with nogil:
            pthread_mutex_lock(&c.mu)
            kernel_unload(c, <uint32_t>slot)
            for k in range(2):
                if s.leg[leg].ep[k].state == EP_LATCHED:
                    s.leg[leg].ep[k].state = EP_EXPECTED
                s.leg[leg].ep[k].exact = 0
            restart_learning(&s.leg[leg])
            kernel_refresh(c, <uint32_t>slot)
            pthread_mutex_unlock(&c.mu)

    def set_forwarding(self, int slot, bint a_to_b, bint b_to_a):
        cdef Core* c = self._core()
        cdef Session* s = self._session(slot)
        with nogil:
            pthread_mutex_lock(&c.mu)
            kernel_unload(c, <uint32_t>slot)
            s.leg[0].forward = a_to_b
            s.leg[1].forward = b_to_a
            kernel_refresh(c, <uint32_t>slot)
            pthread_mutex_unlock(&c.mu)

    def set_pt_map(self, int slot, int leg, bytes table):
        cdef Core* c = self._core()
        cdef Session* s = self._session(slot)
        cdef const unsigned char* t = table
        cdef int i
        if leg not in (0, 1) or len(table) != 128:
            raise ValueError("a payload-type map is 128 bytes of values 0..127")
        for i in range(128):
            if t[i] > 127:
                raise ValueError("a payload-type map is 128 bytes of values 0..127")
        with nogil:
            pthread_mutex_lock(&c.mu)
            if memcmp(s.leg[leg].pt_map, t, 128) != 0:   # the same map again changes nothing
                kernel_unload(c, <uint32_t>slot)
                memcpy(s.leg[leg].pt_map, t, 128)
                kernel_refresh(c, <uint32_t>slot)
            pthread_mutex_unlock(&c.mu)

    def play(self, int slot, int leg, bytes frames, int frame_bytes, int payload_type,
             int ptime_ms, int samples, uint32_t ssrc, int seq, uint32_t timestamp):
        cdef Core* c = self._core()
        cdef Session* s = self._session(slot)
        cdef Play* pl
        cdef Py_ssize_t n = len(frames)
        cdef int err = 0, wake = 0
        cdef uint64_t now
        cdef bytes kept
        if leg not in (0, 1):
            raise ValueError("bad leg")
        if frame_bytes < 1 or frame_bytes > MAX_FRAME:
            raise ValueError(f"frame_bytes must be 1..{MAX_FRAME}")
        if n == 0 or n % frame_bytes:
            raise ValueError("frames must be a whole, non-zero number of frame_bytes frames")
        if payload_type < 0 or payload_type > 127:
            raise ValueError("payload_type must be 0..127")
        if ptime_ms < 1 or ptime_ms > 1000:
            raise ValueError("ptime_ms must be 1..1000")
        if samples < 0 or samples > 65535 or seq < 0 or seq > 65535:
            raise ValueError("samples and seq must be 0..65535")
        pl = <Play*>calloc(1, sizeof(Play))
        if pl == NULL:
            raise MemoryError()
        # The same frames object comes with every call (a codec's ringback, cached by mss.tones):
        # kept once and played from where it is (bytes are immutable, and a kept object stays
        # referenced until the engine is freed, so its id names it alone); others are copied for
        # the play alone.
        kept = self._shared.get(id(frames))
        if kept is None and len(self._shared) < PLAY_SHARED and n <= PLAY_SHARED_BYTES:
            self._shared[id(frames)] = kept = frames
        if kept is not None:
            pl.frames = <unsigned char*><const char*>kept
        else:
            pl.frames = <unsigned char*>malloc(n)
            if pl.frames == NULL:
                free(pl)
                raise MemoryError()
            memcpy(pl.frames, <const char*>frames, n)
            pl.owned = 1
        pl.frame_bytes = <uint32_t>frame_bytes
        pl.nframes = <uint32_t>(n // frame_bytes)
        pl.pt = <uint8_t>payload_type
        pl.marker = 1
        pl.ssrc = ssrc
        pl.seq = <uint16_t>seq
        pl.timestamp = timestamp
        pl.samples = <uint32_t>samples
        pl.period_ns = <uint64_t>ptime_ms * 1000000
        with nogil:
            pthread_mutex_lock(&c.mu)
            kernel_unload(c, <uint32_t>slot)        # nothing is forwarded into a playing leg
            free_play(&s.leg[leg])
            s.leg[leg].play_serial += 1
            pl.serial = s.leg[leg].play_serial
            now = mono_ns()
            if loop_comes_by(c, now):
                # the first frame is due when the loop comes by anyway (within COMMAND_MS)
                now = c.wait_until if c.wait_until > now else now
            else:
                wake = 1
            if heap_push(c, now, <uint32_t>slot, s.gen, leg, pl.serial) < 0:
                err = 1
                if pl.owned:
                    free(pl.frames)
                free(pl)
            else:
                s.leg[leg].play = pl
            kernel_refresh(c, <uint32_t>slot)
            pthread_mutex_unlock(&c.mu)
            if wake:
                wake_loop(c)
        if err:
            raise MemoryError()

    def stop_play(self, int slot, int leg):
        cdef Core* c = self._core()
        cdef Session* s = self._session(slot)
        if leg not in (0, 1):
            raise ValueError("bad leg")
        with nogil:
            pthread_mutex_lock(&c.mu)
            kernel_unload(c, <uint32_t>slot)
            free_play(&s.leg[leg])
            kernel_refresh(c, <uint32_t>slot)
            pthread_mutex_unlock(&c.mu)

    def playing(self, int slot, int leg):
        cdef Session* s = self._session(slot)
        return s.leg[leg & 1].play != NULL

    def snapshot(self, int slot, object out):
        """Copy the slot's counters (2 x N_FIELDS uint64) into ``out`` under the lock."""
        cdef Core* c = self._core()
        cdef uint64_t[:, ::1] dst = out
        cdef uint64_t* d = &dst[0, 0]
        if slot < 0 or <uint32_t>slot >= c.capacity or dst.shape[0] != 2 \
                or dst.shape[1] != N_FIELDS:
            raise ValueError("bad slot or output shape")
        with nogil:
            pthread_mutex_lock(&c.mu)
            if c.sessions[slot].state != S_FREE:
                kernel_sync_session(c, <uint32_t>slot)
            memcpy(d, &c.counters[<size_t>slot * 2 * N_FIELDS], sizeof(uint64_t) * 2 * N_FIELDS)
            pthread_mutex_unlock(&c.mu)

    def stats(self, int slot):
        """``(a, b, a_remote, b_remote)``: each leg's counters (a tuple in FIELDS order) and
        :meth:`remote` of its RTP, read together under the mutex."""
        cdef Core* c = self._core()
        cdef Session* s = self._session(slot)
        cdef uint64_t v[2 * N_FIELDS]
        cdef Endpoint ep[2]
        cdef int i
        with nogil:
            pthread_mutex_lock(&c.mu)
            kernel_sync_session(c, <uint32_t>slot)
            memcpy(v, &c.counters[<size_t>slot * 2 * N_FIELDS], sizeof(uint64_t) * 2 * N_FIELDS)
            ep[0] = s.leg[0].ep[KIND_RTP]
            ep[1] = s.leg[1].ep[KIND_RTP]
            pthread_mutex_unlock(&c.mu)
        return (tuple([v[i] for i in range(N_FIELDS)]),
                tuple([v[N_FIELDS + i] for i in range(N_FIELDS)]),
                endpoint_remote(&ep[0]), endpoint_remote(&ep[1]))

    def remote(self, int slot, int leg, int kind):
        """``(ip, port, latched)`` of where the leg's socket of ``kind`` sends, or None."""
        cdef Core* c = self._core()
        cdef Session* s = self._session(slot)
        cdef Endpoint ep
        with nogil:
            pthread_mutex_lock(&c.mu)
            ep = s.leg[leg & 1].ep[kind & 1]
            pthread_mutex_unlock(&c.mu)
        return endpoint_remote(&ep)

    def kernel_enable(self, int map_fd):
        cdef Core* c = self._core()
        cdef uint32_t slot
        if map_fd < 0:
            raise ValueError("map_fd must be an open BPF map")
        if c.kkeys == NULL:
            c.kkeys = <kf_key*>calloc(KSYNC_BATCH, sizeof(kf_key))
            c.kvals = <kf_entry*>calloc(KSYNC_BATCH, sizeof(kf_entry))
            if c.kkeys == NULL or c.kvals == NULL:
                raise MemoryError()
        with nogil:
            pthread_mutex_lock(&c.mu)
            c.kfd = map_fd
            for slot in range(c.capacity):      # sessions bridged already go to the kernel too
                if c.sessions[slot].state != S_FREE:
                    kernel_refresh(c, slot)
            pthread_mutex_unlock(&c.mu)

    def kernel_disable(self):
        cdef Core* c = self._core()
        cdef uint32_t slot
        with nogil:
            pthread_mutex_lock(&c.mu)
            if c.kfd >= 0:
                for slot in range(c.capacity):
                    if c.sessions[slot].state != S_FREE:
                        kernel_unload(c, slot)
            c.kfd = -1
            pthread_mutex_unlock(&c.mu)

    def kernel_sync(self):
        cdef Core* c = self._core()
        with nogil:
            pthread_mutex_lock(&c.mu)
            if c.kfd >= 0 and c.kentries:
                kernel_sync(c)
            pthread_mutex_unlock(&c.mu)

    def kernel_entries(self, int slot):
        cdef Session* s = self._session(slot)
        return (s.leg[0].kin[0], s.leg[0].kin[1], s.leg[1].kin[0], s.leg[1].kin[1])

    @property
    def kernel_stats(self):
        cdef Core* c = self._core()
        return {"entries": c.kentries, "installs": c.kinstalls, "removals": c.kremovals,
                "errors": c.kerrors, "install_ns": c.kinstall_ns}

    def close(self):
        if self.c != NULL:
            with nogil:
                core_free(self.c)
            self.c = NULL
            self._shared.clear()                # nothing plays from them any more
