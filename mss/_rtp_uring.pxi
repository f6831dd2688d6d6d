# The io_uring back end of mss/_rtp.pyx, included there (one module, one namespace); what it does
# is told in that module's docstring.
#
# A socket's multishot receive is a plain recv on a connected SK_RTP (no source address to copy
# out) and a recvmsg on the others. A forwarded datagram is sent from the buffer it was received
# into; the buffer goes back to the kernel once the send has been submitted (``uring_recycle``).
# The verbs run on Python's side and never touch the ring: they queue commands (arm, close, re-arm
# as a plain recv) that the loop carries out in ``uring_commands``.

cdef io_uring_sqe* uring_sqe(Core* c) noexcept nogil:
    """A submission slot, flushing the queue to the kernel first when it is full."""
    cdef io_uring_sqe* sqe = mss_uring_get_sqe(&c.ring)
    if sqe == NULL:
        flush_sends(c)
        sqe = mss_uring_get_sqe(&c.ring)
    return sqe


cdef inline void uring_queue_send(Core* c, uint32_t i) noexcept nogil:
    cdef io_uring_sqe* sqe = uring_sqe(c)
    if sqe == NULL:
        c.loop_errors += 1
        return
    if c.out_mm[i].msg_hdr.msg_name == NULL:
        mss_uring_prep_send(sqe, c.out_fd[i], c.out_iov[i].iov_base, <unsigned>c.out_iov[i].iov_len,
                            c.out_ud[i])
    else:
        mss_uring_prep_sendmsg(sqe, c.out_fd[i], &c.out_mm[i].msg_hdr, c.out_ud[i])
    if c.fixed:                                 # no per-send file lookup
        sqe.fd = c.out_fix[i]
        sqe.flags |= IOSQE_FIXED_FILE


cdef void uring_recycle(Core* c) noexcept nogil:
    """Everything queued has reached the kernel: give the sent datagrams' buffers back."""
    cdef uint32_t i
    if mss_uring_unsubmitted(&c.ring):
        return
    for i in range(c.n_out):
        if c.out_bid[i] >= 0:
            mss_uring_buf_give(&c.ring, <unsigned>c.out_bid[i])
    c.n_out = 0
    c.n_scratch = 0


cdef void uring_flush(Core* c) noexcept nogil:
    cdef int tries = 0
    while mss_uring_unsubmitted(&c.ring) and tries < 8:
        if mss_uring_enter(&c.ring, 0, -1, 0) < 0:
            tries += 1
    uring_recycle(c)
    if c.n_out:
        # the kernel refused the submission: lose these sends rather than grow without bound
        c.loop_errors += 1


cdef inline uint64_t recv_ud(Session* s, uint32_t slot, int li, int sk) noexcept nogil:
    """user_data of a socket's live receive; the rtcp bit marks a plain recv."""
    return make_ud(OP_RECV, slot, s.gen, li, sk, s.leg[li].sock[sk].plain, 0)


cdef void uring_arm(Core* c, uint32_t slot, int li, int sk) noexcept nogil:
    """Arm a multishot receive: plain recv on a connected SK_RTP, else recvmsg (with source)."""
    cdef Session* s = &c.sessions[slot]
    cdef Sock* so = &s.leg[li].sock[sk]
    cdef io_uring_sqe* sqe = uring_sqe(c)
    if sqe == NULL:
        c.loop_errors += 1
        return
    so.plain = sk == SK_RTP and s.leg[li].ep[KIND_RTP].connected
    if so.plain:
        mss_uring_prep_recv_multi(sqe, so.fd, recv_ud(s, slot, li, sk))
    else:
        mss_uring_prep_recvmsg_multi(sqe, so.fd, &c.recv_tmpl, recv_ud(s, slot, li, sk))
    so.armed = 1
    so.cancelling = 0


cdef void uring_register_files(Core* c, uint32_t slot, int clear) noexcept nogil:
    """Put the session's sockets in the registered table (or take them out, before closing)."""
    cdef int fds[6]
    cdef int k
    for k in range(2 * N_SOCKS):
        fds[k] = -1 if clear else c.sessions[slot].leg[k // N_SOCKS].sock[k % N_SOCKS].fd
    if mss_uring_files_set(&c.ring, <unsigned>fixed_index(slot, 0, 0), fds, 2 * N_SOCKS) < 0:
        c.loop_errors += 1


cdef void uring_attach(Core* c, uint32_t slot) noexcept nogil:
    """A session was attached: have the loop register its sockets and arm their receives."""
    cdef Session* s = &c.sessions[slot]
    s.state = S_OPENING
    s.queued_arm = 1
    c.arm_q[c.n_arm] = slot
    c.n_arm += 1


cdef void uring_queue_close(Core* c, uint32_t slot) noexcept nogil:
    """Close a session: have the loop cancel its receives; the last one to end frees the slot."""
    cdef Session* s = &c.sessions[slot]
    if s.state != S_CLOSING:
        c.n_closing += 1
    s.state = S_CLOSING
    if not s.queued_disarm:
        s.queued_disarm = 1
        c.disarm_q[c.n_disarm] = slot
        c.n_disarm += 1


cdef void uring_queue_plain(Core* c, uint32_t slot, Leg* leg) noexcept nogil:
    """The leg's SK_RTP was connected: have the loop re-arm its receive as a plain recv."""
    cdef Session* s = &c.sessions[slot]
    if not leg.sock[SK_RTP].plain and not s.queued_rearm:
        s.queued_rearm = 1
        c.rearm_q[c.n_rearm] = slot
        c.n_rearm += 1


cdef void uring_commands(Core* c) noexcept nogil:
    """Carry out the queued commands (in the loop, lock held)."""
    cdef uint32_t i, slot
    cdef int li, k, live
    cdef Session* s
    cdef Sock* so
    cdef io_uring_sqe* sqe
    for i in range(c.n_arm):
        slot = c.arm_q[i]
        s = &c.sessions[slot]
        s.queued_arm = 0
        if s.state == S_OPENING:
            if c.fixed:
                uring_register_files(c, slot, 0)
            for li in range(2):
                for k in range(N_SOCKS):
                    uring_arm(c, slot, li, k)
            s.state = S_ACTIVE
    c.n_arm = 0
    for i in range(c.n_disarm):
        slot = c.disarm_q[i]
        s = &c.sessions[slot]
        s.queued_disarm = 0
        if s.state != S_CLOSING:
            continue
        live = 0
        for li in range(2):
            for k in range(N_SOCKS):
                if s.leg[li].sock[k].armed:
                    live += 1
                    sqe = uring_sqe(c)
                    if sqe != NULL:
                        mss_uring_prep_cancel(sqe, recv_ud(s, slot, li, k),
                                              make_ud(OP_CANCEL, slot, s.gen, li, k, 0, 0))
        if live == 0:
            finish_close(c, slot)
    c.n_disarm = 0
    for i in range(c.n_rearm):
        slot = c.rearm_q[i]
        s = &c.sessions[slot]
        s.queued_rearm = 0
        if s.state != S_ACTIVE:
            continue
        for li in range(2):
            so = &s.leg[li].sock[SK_RTP]
            if so.armed and not so.cancelling and not so.plain \
                    and s.leg[li].ep[KIND_RTP].connected:
                sqe = uring_sqe(c)
                if sqe != NULL:                 # its end re-arms it as a plain recv
                    mss_uring_prep_cancel(sqe, recv_ud(s, slot, li, SK_RTP),
                                          make_ud(OP_CANCEL, slot, s.gen, li, SK_RTP, 0, 0))
                    so.cancelling = 1
    c.n_rearm = 0


cdef void uring_on_recv(Core* c, io_uring_cqe* cqe, uint64_t now) noexcept nogil:
    cdef uint64_t ud = cqe.user_data
    cdef uint32_t slot = ud_slot(ud)
    cdef Session* s = session_of(c, ud)
    cdef int li = ud_leg(ud), sk = ud_sock(ud), k, live
    cdef int has_buf = (cqe.flags & IORING_CQE_F_BUFFER) != 0
    cdef unsigned bid = cqe.flags >> IORING_CQE_BUFFER_SHIFT
    cdef unsigned char* buf
    cdef io_uring_recvmsg_out* out
    cdef Pkt p
    cdef int kept = 0
    cdef int plain = ud_rtcp(ud)
    if not (cqe.flags & IORING_CQE_F_MORE) and s != NULL:
        # this receive has ended (cancelled, out of buffers, error): re-arm or finish closing
        s.leg[li].sock[sk].armed = 0
        if s.state == S_ACTIVE:
            if not s.leg[li].sock[sk].cancelling:
                c.rearms += 1                   # not one we ended on purpose
            uring_arm(c, slot, li, sk)
        elif s.state == S_CLOSING:
            live = 0
            for k in range(2 * N_SOCKS):
                live += s.leg[k // N_SOCKS].sock[k % N_SOCKS].armed
            if live == 0:
                finish_close(c, slot)
                s = NULL
    if plain and cqe.res == 0 and s != NULL and s.state == S_ACTIVE:
        s.leg[li].ctr[DROP_SHORT] += 1          # an empty datagram
    if cqe.res <= 0 or not has_buf:
        if has_buf:
            mss_uring_buf_give(&c.ring, bid)
        return
    if s == NULL or s.state != S_ACTIVE:
        mss_uring_buf_give(&c.ring, bid)
        return
    buf = mss_uring_buf(&c.ring, bid)
    p.leg = &s.leg[li]
    if plain:
        # a connected socket: the source is the remote it is connected to; MSG_TRUNC makes res the
        # datagram's full length
        if <uint32_t>cqe.res > RX_BUF:
            p.leg.ctr[DROP_MALFORMED] += 1
            mss_uring_buf_give(&c.ring, bid)
            return
        p.src = &p.leg.ep[KIND_RTP].dest
        p.data = buf
        p.length = <uint32_t>cqe.res
    else:
        out = <io_uring_recvmsg_out*>buf
        if (out.flags & MSG_TRUNC) or out.namelen < sizeof(sockaddr_in) \
                or out.payloadlen > RX_BUF - sizeof(io_uring_recvmsg_out) - c.recv_tmpl.msg_namelen:
            p.leg.ctr[DROP_MALFORMED] += 1
            mss_uring_buf_give(&c.ring, bid)
            return
        p.src = <const sockaddr_in6*>(buf + sizeof(io_uring_recvmsg_out))
        p.data = buf + sizeof(io_uring_recvmsg_out) + c.recv_tmpl.msg_namelen
        p.length = out.payloadlen
    p.core = c
    p.s = s
    p.peer = &s.leg[1 - li]
    p.slot = slot
    p.li = li
    p.sock = sk
    p.kind = kind_of(sk)
    p.rtcp = 0
    p.bid = <int32_t>bid
    kept = handle_packet(&p, now)
    if not kept:
        mss_uring_buf_give(&c.ring, bid)


cdef unsigned uring_drain(Core* c, uint64_t now) noexcept nogil:
    """Handle every completion there is; returns how many."""
    cdef unsigned n, i, total = 0
    cdef io_uring_cqe* cqe
    cdef uint32_t op
    cdef uint64_t junk
    n = mss_uring_cq_ready(&c.ring)
    while n:
        for i in range(n):
            cqe = mss_uring_cqe_at(&c.ring, i)
            op = ud_op(cqe.user_data)
            if op == OP_RECV:
                uring_on_recv(c, cqe, now)
            elif op == OP_SEND:
                if cqe.res < 0:
                    send_failed(c, cqe.user_data)
            elif op == OP_WAKE:
                read(c.efd, &junk, 8)
                if not (cqe.flags & IORING_CQE_F_MORE):
                    uring_arm_wake(c)
        mss_uring_cq_advance(&c.ring, n)
        total += n
        n = mss_uring_cq_ready(&c.ring)
    return total


cdef void uring_arm_wake(Core* c) noexcept nogil:
    cdef io_uring_sqe* sqe = uring_sqe(c)
    if sqe != NULL:
        mss_uring_prep_poll_wake(sqe, c.efd, make_ud(OP_WAKE, 0, 0, 0, 0, 0, 0))


cdef int uring_setup(Core* c) noexcept nogil:
    cdef int err = mss_uring_init(&c.ring, URING_SQ, URING_CQ)
    if err < 0:
        return err
    err = mss_uring_setup_buffers(&c.ring, URING_BUFS, RX_BUF)
    if err < 0:
        mss_uring_exit(&c.ring)
        return err
    memset(&c.recv_tmpl, 0, sizeof(msghdr))
    c.recv_tmpl.msg_namelen = c.addrlen   # room for the source: sockaddr_in or sockaddr_in6
    # a registered file table saves a file lookup per send; without one (too many files for
    # RLIMIT_NOFILE, an old kernel) sends name their fd
    c.fixed = mss_uring_files_sparse(&c.ring, c.capacity * 2 * N_SOCKS) == 0
    c.abs_timer = mss_uring_has_abs_timer(&c.ring)
    return 0


cdef void uring_wait(Core* c, long long timeout, uint64_t until) noexcept nogil:
    """Submit what is queued (the last batch's sends leave first), then take completions.

    ``until`` > 0 (work came in the last batch): sleep until that CLOCK_MONOTONIC time, or until
    URING_DRAIN socket wake-ups are pending, then take them all; datagrams arriving meanwhile do not
    wake the loop (deferred task work only wakes a waiter once its count is reached), and neither
    does a verb: a busy loop answers verbs within ``gather_us``. ``until`` = 0 (idle): sleep until
    the first completion or the timer (``timeout`` ns from now, < 0: none).
    """
    cdef int ret
    cdef uint64_t now
    if c.n_out > URING_HELD:
        # a big batch (a backlog): free its buffers before the kernel receives into them again,
        # or the receives run out of buffers and end (and must all be armed again)
        uring_flush(c)
        mss_uring_buf_publish(&c.ring)
    if until:
        if timeout >= 0 and mono_ns() + <uint64_t>timeout < until:
            until = mono_ns() + <uint64_t>timeout
        if c.abs_timer:                         # one system call: submit, sleep, take
            ret = mss_uring_enter(&c.ring, URING_DRAIN, <long long>until, 1)
        else:                                   # the sends' time must not stretch the sleep
            mss_uring_enter(&c.ring, 0, -1, 0)
            now = mono_ns()
            ret = mss_uring_enter(&c.ring, URING_DRAIN,
                                  <long long>(until - now) if until > now else 0, 0)
    else:
        ret = mss_uring_enter(&c.ring, 1, timeout, 0)
    if ret < 0 and ret != -ETIME and ret != -EINTR and ret != -EBUSY and ret != -EAGAIN:
        c.loop_errors += 1
    c.wakeups += 1
    uring_flush(c)                              # anything the kernel did not take, and recycle

cdef void uring_shutdown(Core* c) noexcept nogil:
    """Cancel every receive and wait (bounded) for the kernel to end them, so the ports are free
    when close() returns. Called with the lock held; the lock is kept."""
    cdef uint32_t slot
    cdef uint64_t deadline = mono_ns() + <uint64_t>SHUTDOWN_MS * 1000000
    cdef int live = 0, li, k
    cdef Session* s
    for slot in range(c.capacity):
        s = &c.sessions[slot]
        if s.state == S_OPENING or s.state == S_ACTIVE:
            uring_queue_close(c, slot)
    c.n_arm = 0
    uring_commands(c)
    while mono_ns() < deadline:
        live = 0
        for slot in range(c.capacity):
            s = &c.sessions[slot]
            if s.state == S_CLOSING:
                for li in range(2):
                    for k in range(N_SOCKS):
                        live += s.leg[li].sock[k].armed
        if live == 0:
            break
        mss_uring_enter(&c.ring, 1, 10000000, 0)
        uring_recycle(c)
        uring_drain(c, mono_ns())
        mss_uring_buf_publish(&c.ring)


cdef void uring_loop(Core* c) noexcept nogil:
    cdef long long timeout
    cdef uint64_t now = 0, started = 0, until
    cdef unsigned got = 0
    pthread_mutex_lock(&c.mu)
    uring_arm_wake(c)
    while True:
        now = mono_ns()
        timeout = next_timeout_ns(c, now)
        until = 0
        if c.n_arm or c.n_disarm or c.n_rearm:
            until = now                         # verbs to carry out: no sleeping
        elif got and not c.n_closing:
            # a busy loop gathers until gather_us after the start of the last batch; a backlog
            # (the last batch took all it could) or a longer batch means no sleep at all
            until = started + c.gather_ns
            if got >= URING_DRAIN or until < now:
                until = now
        c.wait_until = wait_end(now, timeout)
        if until and until < c.wait_until:
            c.wait_until = until
        unlock_notify(c)
        uring_wait(c, timeout, until)
        now = mono_ns()
        started = now
        pthread_mutex_lock(&c.mu)
        c.now = now
        if c.stop:
            break
        uring_commands(c)
        got = uring_drain(c, now)
        run_timers(c, now)
        mss_uring_buf_publish(&c.ring)
    uring_shutdown(c)
    unlock_notify(c)
