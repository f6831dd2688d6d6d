# The epoll back end of mss/_rtp.pyx, included there (one module, one namespace); what it does is
# told in that module's docstring.
#
# Used where io_uring is not allowed (an old kernel, a seccomp policy) or when asked for. Datagrams
# are read into the back end's own buffers (RX_BATCH of RX_BUF bytes) and sent from there before
# the next read. The verbs register and close sockets themselves: epoll needs no loop turn for it.

cdef void epoll_flush(Core* c) noexcept nogil:
    """sendmmsg each run of sends that leave by the same socket; failures become send drops."""
    cdef uint32_t i = 0, j, k
    cdef int sent
    while i < c.n_out:
        j = i + 1
        while j < c.n_out and c.out_fd[j] == c.out_fd[i]:
            j += 1
        while i < j:
            sent = sendmmsg(c.out_fd[i], &c.out_mm[i], j - i, MSG_DONTWAIT)
            if sent < 0:
                if errno == EINTR:
                    continue
                send_failed(c, c.out_ud[i])     # this one failed; try the rest
                i += 1
            else:
                i += <uint32_t>sent
                if i < j and sent == 0:
                    send_failed(c, c.out_ud[i])
                    i += 1
        i = j
    c.n_out = 0
    c.n_scratch = 0


cdef void epoll_read(Core* c, uint64_t ud, uint64_t now) noexcept nogil:
    cdef Session* s = session_of(c, ud)
    cdef int li = ud_leg(ud), sk = ud_sock(ud), n, i
    cdef Pkt p
    if s == NULL or s.state != S_ACTIVE:
        return
    n = recvmmsg(s.leg[li].sock[sk].fd, c.rx_msgs, RX_BATCH, MSG_DONTWAIT, NULL)
    if n <= 0:
        return
    p.core = c
    p.s = s
    p.leg = &s.leg[li]
    p.peer = &s.leg[1 - li]
    p.slot = ud_slot(ud)
    p.li = li
    p.sock = sk
    p.kind = kind_of(sk)
    p.bid = -1
    for i in range(n):
        if c.rx_msgs[i].msg_hdr.msg_flags & MSG_TRUNC:
            p.leg.ctr[DROP_MALFORMED] += 1
            continue
        p.rtcp = 0
        p.data = c.rx_bufs + <size_t>i * RX_BUF
        p.length = c.rx_msgs[i].msg_len
        p.src = &c.rx_names[i]
        handle_packet(&p, now)
    epoll_flush(c)
    for i in range(n):                              # recvmmsg writes these back
        c.rx_msgs[i].msg_hdr.msg_namelen = sizeof(sockaddr_in6)
        c.rx_msgs[i].msg_hdr.msg_flags = 0


cdef int epoll_setup(Core* c) noexcept nogil:
    cdef epoll_event ev
    cdef int i
    c.epfd = epoll_create1(EPOLL_CLOEXEC)
    if c.epfd < 0:
        return -errno
    c.events = <epoll_event*>calloc(EPOLL_EVENTS, sizeof(epoll_event))
    c.rx_msgs = <mmsghdr*>calloc(RX_BATCH, sizeof(mmsghdr))
    c.rx_iov = <iovec*>calloc(RX_BATCH, sizeof(iovec))
    c.rx_names = <sockaddr_in6*>calloc(RX_BATCH, sizeof(sockaddr_in6))
    c.rx_bufs = <unsigned char*>malloc(<size_t>RX_BATCH * RX_BUF)
    if c.events == NULL or c.rx_msgs == NULL or c.rx_iov == NULL or c.rx_names == NULL \
            or c.rx_bufs == NULL:
        return -12
    for i in range(RX_BATCH):
        c.rx_iov[i].iov_base = c.rx_bufs + <size_t>i * RX_BUF
        c.rx_iov[i].iov_len = RX_BUF
        c.rx_msgs[i].msg_hdr.msg_name = &c.rx_names[i]
        c.rx_msgs[i].msg_hdr.msg_namelen = sizeof(sockaddr_in6)
        c.rx_msgs[i].msg_hdr.msg_iov = &c.rx_iov[i]
        c.rx_msgs[i].msg_hdr.msg_iovlen = 1
    ev.events = EPOLLIN
    ev.data.u64 = make_ud(OP_WAKE, 0, 0, 0, 0, 0, 0)
    if epoll_ctl(c.epfd, EPOLL_CTL_ADD, c.efd, &ev) < 0:
        return -errno
    return 0


cdef int epoll_attach(Core* c, uint32_t slot) noexcept nogil:
    """Register the session's six sockets for reading; 0, or the errno of a failed registration."""
    cdef Session* s = &c.sessions[slot]
    cdef epoll_event ev
    cdef int i, err = 0
    s.state = S_ACTIVE
    for i in range(2 * N_SOCKS):
        ev.events = EPOLLIN
        ev.data.u64 = make_ud(OP_RECV, slot, s.gen, i // N_SOCKS, i % N_SOCKS, 0, 0)
        if epoll_ctl(c.epfd, EPOLL_CTL_ADD, s.leg[i // N_SOCKS].sock[i % N_SOCKS].fd, &ev) < 0:
            err = errno
        s.leg[i // N_SOCKS].sock[i % N_SOCKS].armed = 1
    return err


cdef void epoll_free(Core* c) noexcept nogil:
    """Release what ``epoll_setup`` made (all of it, or the part it got before failing)."""
    if c.epfd >= 0:
        close(c.epfd)
    free(c.events)
    free(c.rx_msgs)
    free(c.rx_iov)
    free(c.rx_names)
    free(c.rx_bufs)


cdef void gather(Core* c, uint64_t started) noexcept nogil:
    """Let work gather: sleep until ``started + gather_ns`` (or the next timer) unless a verb wakes
    the loop. Called and returns with the lock held; the lock is free while it sleeps."""
    cdef uint64_t now = mono_ns()
    cdef uint64_t until = started + c.gather_ns
    cdef timespec ts
    cdef pollfd pfd
    if c.gather_ns == 0 or c.n_closing or c.n_arm or c.n_disarm or c.n_rearm or c.stop:
        return
    if c.n_heap and c.heap[0].due < until:
        until = c.heap[0].due
    if until <= now + 1000:
        return
    ts.tv_sec = <time_t>((until - now) // 1000000000ULL)
    ts.tv_nsec = <long>((until - now) % 1000000000ULL)
    pfd.fd = c.efd
    pfd.events = POLLIN
    pfd.revents = 0
    c.wait_until = until
    unlock_notify(c)
    ppoll(&pfd, 1, &ts, NULL)                   # the wake-up fd is read by the next wait, not here
    pthread_mutex_lock(&c.mu)


cdef void epoll_loop(Core* c) noexcept nogil:
    cdef long long timeout
    cdef int n, i, ms
    cdef uint64_t now, ud, junk
    pthread_mutex_lock(&c.mu)
    while True:
        now = mono_ns()
        timeout = next_timeout_ns(c, now)
        ms = -1 if timeout < 0 else <int>((timeout + 999999) // 1000000)
        c.wait_until = wait_end(now, -1 if ms < 0 else <long long>ms * 1000000)
        unlock_notify(c)
        n = epoll_wait(c.epfd, c.events, EPOLL_EVENTS, ms)
        now = mono_ns()
        c.wakeups += 1
        pthread_mutex_lock(&c.mu)
        c.now = now
        if c.stop:
            break
        for i in range(n if n > 0 else 0):
            ud = c.events[i].data.u64
            if ud_op(ud) == OP_WAKE:
                read(c.efd, &junk, 8)
            else:
                epoll_read(c, ud, now)
        run_timers(c, now)
        epoll_flush(c)
        gather(c, now)
    unlock_notify(c)
