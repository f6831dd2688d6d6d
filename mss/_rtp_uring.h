/*
 * A minimal io_uring binding for the relay's packet loop: raw system calls over <linux/io_uring.h>,
 * no library. One ring is owned by one thread (the packet loop); nothing here locks.
 *
 * What the loop uses:
 *   - one submission queue, filled by mss_uring_get_sqe() and published by mss_uring_enter();
 *   - one completion queue, read with mss_uring_cqe_at() and released with mss_uring_cq_advance();
 *   - one provided-buffer ring (group 0): the kernel picks a buffer for each received datagram and
 *     the loop gives it back with mss_uring_buf_give() + mss_uring_buf_publish().
 *
 * Kernel features newer than some installed headers are defined here by value (they are ABI).
 */
#ifndef MSS_RTP_URING_H
#define MSS_RTP_URING_H

#include <errno.h>
#include <linux/io_uring.h>
#include <linux/time_types.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#ifndef IORING_SETUP_SUBMIT_ALL
#define IORING_SETUP_SUBMIT_ALL (1U << 7)
#endif
#ifndef IORING_SETUP_COOP_TASKRUN
#define IORING_SETUP_COOP_TASKRUN (1U << 8)
#endif
#ifndef IORING_SETUP_SINGLE_ISSUER
#define IORING_SETUP_SINGLE_ISSUER (1U << 12)
#endif
#ifndef IORING_SETUP_DEFER_TASKRUN
#define IORING_SETUP_DEFER_TASKRUN (1U << 13)
#endif
#ifndef IORING_ENTER_GETEVENTS
#define IORING_ENTER_GETEVENTS (1U << 0)
#endif
#ifndef IORING_ENTER_EXT_ARG
#define IORING_ENTER_EXT_ARG (1U << 3)
#endif
#ifndef IORING_FEAT_EXT_ARG
#define IORING_FEAT_EXT_ARG (1U << 8)
#endif
/* Linux 6.12 added IORING_ENTER_ABS_TIMER (the wait timeout is a CLOCK_MONOTONIC deadline) and,
 * in the same release, IORING_FEAT_MIN_TIMEOUT, the feature bit taken here as its sign. */
#define MSS_FEAT_MIN_TIMEOUT (1U << 15)
#define MSS_ENTER_ABS_TIMER (1U << 5)
#ifndef IORING_POLL_ADD_MULTI
#define IORING_POLL_ADD_MULTI (1U << 0)
#endif

typedef struct mss_uring {
    int fd;
    unsigned features;
    unsigned setup_flags;
    /* submission queue */
    unsigned *sq_head;
    unsigned *sq_tail;
    unsigned *sq_array;
    unsigned sq_mask;
    unsigned sq_entries;
    unsigned sq_pending_tail; /* our tail, published at the next enter */
    unsigned sq_submitted_tail;
    struct io_uring_sqe *sqes;
    /* completion queue */
    unsigned *cq_head;
    unsigned *cq_tail;
    unsigned cq_mask;
    struct io_uring_cqe *cqes;
    /* mappings */
    void *sq_ptr;
    size_t sq_len;
    void *cq_ptr;
    size_t cq_len;
    size_t sqes_len;
    /* provided buffers, group 0 */
    struct io_uring_buf_ring *br;
    size_t br_len;
    unsigned br_mask;
    uint16_t br_tail;
    unsigned char *bufs;
    size_t bufs_len;
    unsigned buf_size;
} mss_uring;

static inline int mss_sys_uring_setup(unsigned entries, struct io_uring_params *p) {
    return (int)syscall(__NR_io_uring_setup, entries, p);
}

static inline int mss_sys_uring_enter(int fd, unsigned to_submit, unsigned min_complete,
                                      unsigned flags, void *arg, size_t argsz) {
    return (int)syscall(__NR_io_uring_enter, fd, to_submit, min_complete, flags, arg, argsz);
}

static inline int mss_sys_uring_register(int fd, unsigned opcode, void *arg, unsigned nr) {
    return (int)syscall(__NR_io_uring_register, fd, opcode, arg, nr);
}

static inline void mss_uring_unmap(mss_uring *r) {
    if (r->bufs) munmap(r->bufs, r->bufs_len);
    if (r->br) munmap(r->br, r->br_len);
    if (r->sqes) munmap(r->sqes, r->sqes_len);
    if (r->cq_ptr && r->cq_ptr != r->sq_ptr) munmap(r->cq_ptr, r->cq_len);
    if (r->sq_ptr) munmap(r->sq_ptr, r->sq_len);
    r->bufs = NULL;
    r->br = NULL;
    r->sqes = NULL;
    r->cq_ptr = NULL;
    r->sq_ptr = NULL;
}

/* Close the ring and free every mapping; safe on a zeroed or half-built ring (fd < 0). */
static inline void mss_uring_exit(mss_uring *r) {
    mss_uring_unmap(r);
    if (r->fd >= 0) close(r->fd);
    r->fd = -1;
}

/*
 * Set up a ring with `entries` submission slots and `cq_entries` completion slots, trying the
 * cheapest task-run mode first (deferred task work, single issuer), then cooperative, then plain.
 * Returns 0 or -errno (the ring is then left closed).
 */
static inline int mss_uring_init(mss_uring *r, unsigned entries, unsigned cq_entries) {
    static const unsigned modes[3] = {
        IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN,
        IORING_SETUP_COOP_TASKRUN,
        0,
    };
    struct io_uring_params p;
    int fd = -1, i, err = 0;

    memset(r, 0, sizeof(*r));
    r->fd = -1;
    for (i = 0; i < 3; i++) {
        memset(&p, 0, sizeof(p));
        p.flags = modes[i] | IORING_SETUP_CQSIZE | IORING_SETUP_SUBMIT_ALL;
        p.cq_entries = cq_entries;
        fd = mss_sys_uring_setup(entries, &p);
        if (fd >= 0) {
            r->setup_flags = p.flags;
            break;
        }
        err = errno;
        if (err != EINVAL) return -err;
    }
    if (fd < 0) return -err;
    r->fd = fd;
    r->features = p.features;
    if (!(p.features & IORING_FEAT_EXT_ARG)) {
        mss_uring_exit(r);
        return -ENOSYS;
    }

    r->sq_len = p.sq_off.array + p.sq_entries * sizeof(unsigned);
    r->cq_len = p.cq_off.cqes + p.cq_entries * sizeof(struct io_uring_cqe);
    if (p.features & IORING_FEAT_SINGLE_MMAP) {
        if (r->cq_len > r->sq_len) r->sq_len = r->cq_len;
        r->cq_len = r->sq_len;
    }
    r->sq_ptr = mmap(NULL, r->sq_len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd,
                     IORING_OFF_SQ_RING);
    if (r->sq_ptr == MAP_FAILED) {
        r->sq_ptr = NULL;
        err = errno;
        mss_uring_exit(r);
        return -err;
    }
    if (p.features & IORING_FEAT_SINGLE_MMAP) {
        r->cq_ptr = r->sq_ptr;
    } else {
        r->cq_ptr = mmap(NULL, r->cq_len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd,
                         IORING_OFF_CQ_RING);
        if (r->cq_ptr == MAP_FAILED) {
            r->cq_ptr = NULL;
            err = errno;
            mss_uring_exit(r);
            return -err;
        }
    }
    r->sqes_len = p.sq_entries * sizeof(struct io_uring_sqe);
    r->sqes = (struct io_uring_sqe *)mmap(NULL, r->sqes_len, PROT_READ | PROT_WRITE,
                                          MAP_SHARED | MAP_POPULATE, fd, IORING_OFF_SQES);
    if (r->sqes == MAP_FAILED) {
        r->sqes = NULL;
        err = errno;
        mss_uring_exit(r);
        return -err;
    }
    r->sq_head = (unsigned *)((char *)r->sq_ptr + p.sq_off.head);
    r->sq_tail = (unsigned *)((char *)r->sq_ptr + p.sq_off.tail);
    r->sq_array = (unsigned *)((char *)r->sq_ptr + p.sq_off.array);
    r->sq_mask = *(unsigned *)((char *)r->sq_ptr + p.sq_off.ring_mask);
    r->sq_entries = p.sq_entries;
    /* The index array maps ring slot i to sqe i once and for all. */
    for (unsigned k = 0; k < p.sq_entries; k++) r->sq_array[k] = k;
    r->sq_pending_tail = r->sq_submitted_tail = *r->sq_tail;
    r->cq_head = (unsigned *)((char *)r->cq_ptr + p.cq_off.head);
    r->cq_tail = (unsigned *)((char *)r->cq_ptr + p.cq_off.tail);
    r->cq_mask = *(unsigned *)((char *)r->cq_ptr + p.cq_off.ring_mask);
    r->cqes = (struct io_uring_cqe *)((char *)r->cq_ptr + p.cq_off.cqes);
    return 0;
}

/*
 * Register `count` (a power of two) provided buffers of `size` bytes each as group 0.
 * Returns 0 or -errno.
 */
static inline int mss_uring_setup_buffers(mss_uring *r, unsigned count, unsigned size) {
    struct io_uring_buf_reg reg;
    int err;

    r->br_len = (size_t)count * sizeof(struct io_uring_buf);
    r->br = (struct io_uring_buf_ring *)mmap(NULL, r->br_len, PROT_READ | PROT_WRITE,
                                             MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (r->br == MAP_FAILED) {
        r->br = NULL;
        return -errno;
    }
    r->bufs_len = (size_t)count * size;
    r->bufs = (unsigned char *)mmap(NULL, r->bufs_len, PROT_READ | PROT_WRITE,
                                    MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (r->bufs == MAP_FAILED) {
        r->bufs = NULL;
        return -errno;
    }
    /* Huge pages where the system allows them: every datagram lands in another buffer, and with
     * 4 KiB pages each would cost a TLB miss to the kernel's copy and to the loop. */
    madvise(r->bufs, r->bufs_len, MADV_HUGEPAGE);
    memset(r->bufs, 0, r->bufs_len);
    memset(&reg, 0, sizeof(reg));
    reg.ring_addr = (uint64_t)(uintptr_t)r->br;
    reg.ring_entries = count;
    reg.bgid = 0;
    if (mss_sys_uring_register(r->fd, IORING_REGISTER_PBUF_RING, &reg, 1) < 0) {
        err = errno;
        return -err;
    }
    r->br_mask = count - 1;
    r->buf_size = size;
    r->br_tail = 0;
    for (unsigned bid = 0; bid < count; bid++) {
        struct io_uring_buf *b = &r->br->bufs[(r->br_tail + bid) & r->br_mask];
        b->addr = (uint64_t)(uintptr_t)(r->bufs + (size_t)bid * size);
        b->len = size;
        b->bid = (uint16_t)bid;
    }
    r->br_tail = (uint16_t)(r->br_tail + count);
    __atomic_store_n(&r->br->tail, r->br_tail, __ATOMIC_RELEASE);
    return 0;
}

/* A table of `nr` registered files, all empty; requests name them by index (IOSQE_FIXED_FILE). */
static inline int mss_uring_files_sparse(mss_uring *r, unsigned nr) {
    struct io_uring_rsrc_register reg;
    memset(&reg, 0, sizeof(reg));
    reg.nr = nr;
    reg.flags = IORING_RSRC_REGISTER_SPARSE;
    if (mss_sys_uring_register(r->fd, IORING_REGISTER_FILES2, &reg, sizeof(reg)) < 0)
        return -errno;
    return 0;
}

/* Put `nr` fds at `offset` of the registered table (-1 empties an entry). */
static inline int mss_uring_files_set(mss_uring *r, unsigned offset, const int *fds, unsigned nr) {
    struct io_uring_rsrc_update2 up;
    memset(&up, 0, sizeof(up));
    up.offset = offset;
    up.data = (uint64_t)(uintptr_t)fds;
    up.nr = nr;
    if (mss_sys_uring_register(r->fd, IORING_REGISTER_FILES_UPDATE2, &up, sizeof(up)) < 0)
        return -errno;
    return 0;
}

static inline unsigned char *mss_uring_buf(mss_uring *r, unsigned bid) {
    return r->bufs + (size_t)bid * r->buf_size;
}

/* Hand buffer `bid` back to the kernel; it becomes visible at the next mss_uring_buf_publish(). */
static inline void mss_uring_buf_give(mss_uring *r, unsigned bid) {
    struct io_uring_buf *b = &r->br->bufs[r->br_tail & r->br_mask];
    b->addr = (uint64_t)(uintptr_t)(r->bufs + (size_t)bid * r->buf_size);
    b->len = r->buf_size;
    b->bid = (uint16_t)bid;
    r->br_tail++;
}

static inline void mss_uring_buf_publish(mss_uring *r) {
    __atomic_store_n(&r->br->tail, r->br_tail, __ATOMIC_RELEASE);
}

/* Submission slots still free before the next enter. */
static inline unsigned mss_uring_sq_space(mss_uring *r) {
    unsigned head = __atomic_load_n(r->sq_head, __ATOMIC_ACQUIRE);
    return r->sq_entries - (r->sq_pending_tail - head);
}

/* A zeroed submission entry, or NULL when the queue is full (call mss_uring_enter first). */
static inline struct io_uring_sqe *mss_uring_get_sqe(mss_uring *r) {
    unsigned head = __atomic_load_n(r->sq_head, __ATOMIC_ACQUIRE);
    struct io_uring_sqe *sqe;
    if (r->sq_pending_tail - head >= r->sq_entries) return NULL;
    sqe = &r->sqes[r->sq_pending_tail & r->sq_mask];
    r->sq_pending_tail++;
    memset(sqe, 0, sizeof(*sqe));
    return sqe;
}

static inline unsigned mss_uring_unsubmitted(mss_uring *r) {
    return r->sq_pending_tail - r->sq_submitted_tail;
}

/* The kernel takes absolute wait deadlines (see mss_uring_enter). */
static inline int mss_uring_has_abs_timer(mss_uring *r) {
    return (r->features & MSS_FEAT_MIN_TIMEOUT) != 0;
}

/*
 * Submit every pending entry and wait for completions: `wait_nr` of them, at most `timeout_ns`
 * (< 0: no limit; with `absolute`, a CLOCK_MONOTONIC deadline in ns, which only kernels with
 * mss_uring_has_abs_timer() take). Returns the number of entries the kernel consumed or -errno
 * (-ETIME and -EINTR are normal wake-ups).
 */
static inline int mss_uring_enter(mss_uring *r, unsigned wait_nr, long long timeout_ns,
                                  int absolute) {
    struct io_uring_getevents_arg arg;
    struct __kernel_timespec ts;
    unsigned submit = r->sq_pending_tail - r->sq_submitted_tail;
    unsigned flags = 0;
    int ret;

    __atomic_store_n(r->sq_tail, r->sq_pending_tail, __ATOMIC_RELEASE);
    memset(&arg, 0, sizeof(arg));
    if (wait_nr) {
        flags |= IORING_ENTER_GETEVENTS | IORING_ENTER_EXT_ARG;
        if (timeout_ns >= 0) {
            ts.tv_sec = timeout_ns / 1000000000LL;
            ts.tv_nsec = timeout_ns % 1000000000LL;
            arg.ts = (uint64_t)(uintptr_t)&ts;
        }
        if (absolute && timeout_ns >= 0) flags |= MSS_ENTER_ABS_TIMER;
    } else if (!submit) {
        return 0;
    }
    ret = mss_sys_uring_enter(r->fd, submit, wait_nr, flags, wait_nr ? &arg : NULL,
                              wait_nr ? sizeof(arg) : 0);
    if (ret < 0) return -errno;
    r->sq_submitted_tail += (unsigned)ret;
    return ret;
}

/* Completions ready to read. */
static inline unsigned mss_uring_cq_ready(mss_uring *r) {
    return __atomic_load_n(r->cq_tail, __ATOMIC_ACQUIRE) - *r->cq_head;
}

/* The i-th unread completion (i < mss_uring_cq_ready()). */
static inline struct io_uring_cqe *mss_uring_cqe_at(mss_uring *r, unsigned i) {
    return &r->cqes[(*r->cq_head + i) & r->cq_mask];
}

static inline void mss_uring_cq_advance(mss_uring *r, unsigned n) {
    __atomic_store_n(r->cq_head, *r->cq_head + n, __ATOMIC_RELEASE);
}

/* Multishot receive with a provided buffer per datagram: name, then payload, in each buffer. */
static inline void mss_uring_prep_recvmsg_multi(struct io_uring_sqe *sqe, int fd,
                                                struct msghdr *tmpl, uint64_t user_data) {
    sqe->opcode = IORING_OP_RECVMSG;
    sqe->fd = fd;
    sqe->addr = (uint64_t)(uintptr_t)tmpl;
    sqe->ioprio = IORING_RECV_MULTISHOT;
    sqe->flags = IOSQE_BUFFER_SELECT;
    sqe->buf_group = 0;
    sqe->user_data = user_data;
}

/* Multishot plain receive (a connected socket): payload only in each buffer; with MSG_TRUNC the
 * completion's res is the datagram's full length, so a datagram larger than a buffer shows. */
static inline void mss_uring_prep_recv_multi(struct io_uring_sqe *sqe, int fd, uint64_t user_data) {
    sqe->opcode = IORING_OP_RECV;
    sqe->fd = fd;
    sqe->ioprio = IORING_RECV_MULTISHOT;
    sqe->flags = IOSQE_BUFFER_SELECT;
    sqe->buf_group = 0;
    sqe->msg_flags = MSG_TRUNC;
    sqe->user_data = user_data;
}

/* One datagram; never waits (a full socket completes with -EAGAIN); no completion on success. */
static inline void mss_uring_prep_sendmsg(struct io_uring_sqe *sqe, int fd, struct msghdr *msg,
                                          uint64_t user_data) {
    sqe->opcode = IORING_OP_SENDMSG;
    sqe->fd = fd;
    sqe->addr = (uint64_t)(uintptr_t)msg;
    sqe->len = 1;
    sqe->msg_flags = MSG_DONTWAIT;
    sqe->flags = IOSQE_CQE_SKIP_SUCCESS;
    sqe->user_data = user_data;
}

/* One datagram on a connected socket; never waits; no completion on success. */
static inline void mss_uring_prep_send(struct io_uring_sqe *sqe, int fd, void *buf, unsigned len,
                                       uint64_t user_data) {
    sqe->opcode = IORING_OP_SEND;
    sqe->fd = fd;
    sqe->addr = (uint64_t)(uintptr_t)buf;
    sqe->len = len;
    sqe->msg_flags = MSG_DONTWAIT;
    sqe->flags = IOSQE_CQE_SKIP_SUCCESS;
    sqe->user_data = user_data;
}

static inline void mss_uring_prep_poll_multi(struct io_uring_sqe *sqe, int fd, unsigned events,
                                             uint64_t user_data) {
    sqe->opcode = IORING_OP_POLL_ADD;
    sqe->fd = fd;
    sqe->len = IORING_POLL_ADD_MULTI;
    sqe->poll32_events = events;
    sqe->user_data = user_data;
}

/*
 * One-shot readiness of a wake-up fd. EPOLLEXCLUSIVE makes the kernel wake a waiting
 * mss_uring_enter() at once, where datagram receives only count towards its wait_nr.
 */
static inline void mss_uring_prep_poll_wake(struct io_uring_sqe *sqe, int fd, uint64_t user_data) {
    sqe->opcode = IORING_OP_POLL_ADD;
    sqe->fd = fd;
    sqe->poll32_events = POLLIN | (1U << 28); /* EPOLLEXCLUSIVE */
    sqe->user_data = user_data;
}

/* Cancel the request submitted with `target` as user_data; it ends with a -ECANCELED completion. */
static inline void mss_uring_prep_cancel(struct io_uring_sqe *sqe, uint64_t target,
                                         uint64_t user_data) {
    sqe->opcode = IORING_OP_ASYNC_CANCEL;
    sqe->fd = -1;
    sqe->addr = target;
    sqe->user_data = user_data;
}

#endif /* MSS_RTP_URING_H */
