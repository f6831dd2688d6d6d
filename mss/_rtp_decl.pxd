# The C declarations of mss/_rtp.pyx: the system headers it calls into, the raw io_uring
# binding of _rtp_uring.h and the kernel fast path's map operations of _rtp_kfwd.h. Declarations
# only (no code, no mss types): it is cimported at compile time and nothing of it is imported when
# the extension runs.

from libc.stdint cimport int32_t, uint8_t, uint16_t, uint32_t, uint64_t

# ---------------------------------------------------------------------------------------------
# POSIX and Linux: time, threads, sockets, epoll
# ---------------------------------------------------------------------------------------------

cdef extern from "<errno.h>" nogil:
    enum:
        EAGAIN
        EWOULDBLOCK
        EINTR
        ENOBUFS
        ECANCELED
        ETIME
        EBUSY
        EINVAL
        ENOSYS
        ENOENT

cdef extern from "<time.h>" nogil:
    ctypedef long time_t
    struct timespec:
        time_t tv_sec
        long tv_nsec
    enum:
        CLOCK_MONOTONIC
    int clock_gettime(int clk, timespec* ts)
    int nanosleep(const timespec* req, timespec* rem)

cdef extern from "<unistd.h>" nogil:
    int close(int fd)
    long read(int fd, void* buf, size_t n)
    long write(int fd, const void* buf, size_t n)

cdef extern from "<signal.h>" nogil:
    ctypedef struct sigset_t:
        pass
    int sigfillset(sigset_t* s)
    enum:
        SIG_BLOCK

cdef extern from "<sys/prctl.h>" nogil:
    enum:
        PR_SET_NAME
        PR_SET_TIMERSLACK
    int prctl(int option, unsigned long a2, unsigned long a3, unsigned long a4, unsigned long a5)

cdef extern from "<poll.h>" nogil:
    struct pollfd:
        int fd
        short events
        short revents
    enum:
        POLLIN
    int ppoll(pollfd* fds, unsigned long nfds, const timespec* timeout, const sigset_t* sigmask)

cdef extern from "<sys/uio.h>" nogil:
    struct iovec:
        void* iov_base
        size_t iov_len

cdef extern from "<netinet/in.h>" nogil:
    struct in_addr:
        uint32_t s_addr
    struct sockaddr_in:
        unsigned short sin_family
        uint16_t sin_port
        in_addr sin_addr
    struct in6_addr:
        uint8_t s6_addr[16]
    struct sockaddr_in6:
        unsigned short sin6_family
        uint16_t sin6_port
        uint32_t sin6_flowinfo
        in6_addr sin6_addr
        uint32_t sin6_scope_id
    enum:
        AF_INET
        AF_INET6
        AF_UNSPEC
        IPPROTO_IPV6
        IPV6_V6ONLY
    uint16_t htons(uint16_t)
    uint16_t ntohs(uint16_t)
    uint32_t htonl(uint32_t)
    uint32_t ntohl(uint32_t)

cdef extern from "<sys/socket.h>" nogil:
    ctypedef uint32_t socklen_t
    struct sockaddr:
        unsigned short sa_family
    struct msghdr:
        void* msg_name
        socklen_t msg_namelen
        iovec* msg_iov
        size_t msg_iovlen
        void* msg_control
        size_t msg_controllen
        int msg_flags
    struct mmsghdr:
        msghdr msg_hdr
        unsigned int msg_len
    enum:
        SOCK_DGRAM
        SOCK_NONBLOCK
        SOCK_CLOEXEC
        MSG_DONTWAIT
        MSG_TRUNC
        SOL_SOCKET
        SO_REUSEPORT
    int socket(int domain, int type, int protocol)
    int bind(int fd, const sockaddr* addr, socklen_t len)
    int connect(int fd, const sockaddr* addr, socklen_t len)
    int getsockname(int fd, sockaddr* addr, socklen_t* len)
    int setsockopt(int fd, int level, int name, const void* value, socklen_t len)
    int sendmmsg(int fd, mmsghdr* msgs, unsigned int vlen, int flags)
    int recvmmsg(int fd, mmsghdr* msgs, unsigned int vlen, int flags, timespec* timeout)

cdef extern from "<sys/epoll.h>" nogil:
    ctypedef union epoll_data_t:
        void* ptr
        int fd
        uint32_t u32
        uint64_t u64
    struct epoll_event:
        uint32_t events
        epoll_data_t data
    enum:
        EPOLLIN
        EPOLL_CTL_ADD
        EPOLL_CLOEXEC
    int epoll_create1(int flags)
    int epoll_ctl(int epfd, int op, int fd, epoll_event* ev)
    int epoll_wait(int epfd, epoll_event* events, int maxevents, int timeout)

cdef extern from "<sys/eventfd.h>" nogil:
    enum:
        EFD_NONBLOCK
        EFD_CLOEXEC
    int eventfd(unsigned int initval, int flags)

cdef extern from "<pthread.h>" nogil:
    ctypedef unsigned long pthread_t
    ctypedef struct pthread_mutex_t:
        pass
    ctypedef struct pthread_cond_t:
        pass
    ctypedef void* (*thread_main_t)(void*) noexcept nogil
    int pthread_create(pthread_t* t, const void* attr, thread_main_t fn, void* arg)
    int pthread_join(pthread_t t, void** ret)
    int pthread_mutex_init(pthread_mutex_t* m, const void* attr)
    int pthread_mutex_destroy(pthread_mutex_t* m)
    int pthread_mutex_lock(pthread_mutex_t* m)
    int pthread_mutex_unlock(pthread_mutex_t* m)
    int pthread_cond_init(pthread_cond_t* c, const void* attr)
    int pthread_cond_destroy(pthread_cond_t* c)
    int pthread_cond_wait(pthread_cond_t* c, pthread_mutex_t* m)
    int pthread_cond_broadcast(pthread_cond_t* c)
    int pthread_sigmask(int how, const sigset_t* s, sigset_t* old)

# ---------------------------------------------------------------------------------------------
# io_uring: the kernel's structures and _rtp_uring.h (raw system calls, no liburing)
# ---------------------------------------------------------------------------------------------

cdef extern from "<linux/io_uring.h>" nogil:
    struct io_uring_sqe:
        int32_t fd
        uint8_t flags
    struct io_uring_cqe:
        uint64_t user_data
        int32_t res
        uint32_t flags
    struct io_uring_recvmsg_out:
        uint32_t namelen
        uint32_t controllen
        uint32_t payloadlen
        uint32_t flags
    enum:
        IOSQE_FIXED_FILE
        IORING_CQE_F_BUFFER
        IORING_CQE_F_MORE
        IORING_CQE_BUFFER_SHIFT

cdef extern from "_rtp_uring.h" nogil:
    ctypedef struct mss_uring:
        int fd
        unsigned features
        unsigned setup_flags
    int mss_uring_init(mss_uring* r, unsigned entries, unsigned cq_entries)
    void mss_uring_exit(mss_uring* r)
    int mss_uring_setup_buffers(mss_uring* r, unsigned count, unsigned size)
    int mss_uring_files_sparse(mss_uring* r, unsigned nr)
    int mss_uring_files_set(mss_uring* r, unsigned offset, const int* fds, unsigned nr)
    unsigned char* mss_uring_buf(mss_uring* r, unsigned bid)
    void mss_uring_buf_give(mss_uring* r, unsigned bid)
    void mss_uring_buf_publish(mss_uring* r)
    io_uring_sqe* mss_uring_get_sqe(mss_uring* r)
    unsigned mss_uring_unsubmitted(mss_uring* r)
    int mss_uring_enter(mss_uring* r, unsigned wait_nr, long long timeout_ns, int absolute)
    int mss_uring_has_abs_timer(mss_uring* r)
    unsigned mss_uring_cq_ready(mss_uring* r)
    io_uring_cqe* mss_uring_cqe_at(mss_uring* r, unsigned i)
    void mss_uring_cq_advance(mss_uring* r, unsigned n)
    void mss_uring_prep_recvmsg_multi(io_uring_sqe* sqe, int fd, msghdr* tmpl, uint64_t user_data)
    void mss_uring_prep_recv_multi(io_uring_sqe* sqe, int fd, uint64_t user_data)
    void mss_uring_prep_sendmsg(io_uring_sqe* sqe, int fd, msghdr* msg, uint64_t user_data)
    void mss_uring_prep_send(io_uring_sqe* sqe, int fd, void* buf, unsigned length,
                             uint64_t user_data)
    void mss_uring_prep_poll_multi(io_uring_sqe* sqe, int fd, unsigned events, uint64_t user_data)
    void mss_uring_prep_poll_wake(io_uring_sqe* sqe, int fd, uint64_t user_data)
    void mss_uring_prep_cancel(io_uring_sqe* sqe, uint64_t target, uint64_t user_data)

# the kernel fast path's map (mss/bpf/kfwd.h) through the bpf() system call
cdef extern from "_rtp_kfwd.h" nogil:
    ctypedef struct kf_key:
        uint8_t family
        uint16_t port
        uint8_t addr[16]
    ctypedef struct kf_entry:
        uint8_t src[16]
        uint8_t out_src[16]
        uint8_t out_dst[16]
        uint16_t src_port
        uint16_t out_sport
        uint16_t out_dport
        uint8_t rtcp
        uint8_t pt_rewrite
        uint32_t cookie
        uint64_t packets
        uint64_t bytes
        uint64_t last_ns
        uint64_t seq_gaps
        uint64_t jitter_q4
        uint32_t ssrc
        int32_t transit
        uint16_t max_seq
        uint8_t seq_valid
        uint8_t transit_valid
        uint64_t mux_packets
        uint64_t mux_bytes
        uint64_t mux_last_ns
        uint8_t pt_map[128]
    int kf_put(int fd, const kf_key* key, const kf_entry* value)
    int kf_take(int fd, const kf_key* key, kf_entry* value)
    int kf_get(int fd, const kf_key* key, kf_entry* value)
    int kf_batch(int fd, int has_token, uint32_t* token, kf_key* keys, kf_entry* values,
                 uint32_t* count)
