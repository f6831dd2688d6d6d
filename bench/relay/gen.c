/*
 * RTP load generator for the relay benchmark.
 *
 * Plays both phones of N calls: one UDP socket per leg (so a latching relay learns each leg from
 * its own source), every leg sending one RTP packet per 1/pps seconds with the phases of all legs
 * spread evenly over the period. Each payload starts with the send time (CLOCK_REALTIME ns), the
 * sending leg and a sequence number; a packet's one-way latency is the kernel receive timestamp
 * (SO_TIMESTAMPNS, taken when the relay's send reached the phone socket) minus that send time, so
 * the generator's own scheduling does not enter into it.
 *
 * Phases: warm-up (not counted), measure (counted: packets sent, received, latency, per-stream
 * delivery; the relay's CPU time is read from /proc at both ends), drain (no sends; late packets
 * of the measure phase still count; it ends after `drain` seconds without a packet, 10 s at most). Optionally a flood during the measure phase: junk RTP from a
 * stray source (another loopback address) at a fixed rate towards leg a of the first F calls.
 *
 * Protocol with the driver: prints "PORTS p0 p1 ..." (the 2N phone ports, leg a then b of each
 * call), reads N lines "a_port b_port" (where to send each leg), runs, prints one JSON object.
 *
 * I/O is io_uring (the same raw binding as mss's relay, mss/_rtp_uring.h): every send of a tick
 * goes in one system call, receives are multishot into provided buffers, so the generator stays
 * cheap enough to drive 2000 calls from one core. Every loop is bounded by the phase times; the
 * whole run ends by itself.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "_rtp_uring.h"

#define MAX_CALLS 20000
#define URING_BUFS 32768          /* receive buffers: 160 ms of 2000 calls between two ticks */
#define BUF_SIZE 512              /* header, timestamp and a 172-byte G.711 packet fit */
#define OP_RECV 1ULL
#define OP_SEND 2ULL
#define OP_FLOOD 3ULL
#define TICK_NS 100000LL            /* the generator wakes every 100 µs */
#define HIST_FINE 10000             /* 1 µs buckets up to 10 ms */
#define HIST_COARSE 9900            /* then 100 µs buckets up to 1 s */
#define FLOOD_BATCH 64
#define PAYLOAD_MAX 1200
#define META 16                     /* send time u64, leg u32, seq u32 */
#define FLOOD_LEG 0xFFFFFFFFu

typedef struct {
    int fd;
    uint16_t port;
    struct sockaddr_in dst;
    uint32_t seq;
    unsigned char tx[12 + PAYLOAD_MAX];
    struct iovec iov;
    struct msghdr msg;
    uint64_t rx_measured;           /* packets from the other leg sent in the measure window */
    uint64_t sent_measured;
    int64_t last_rx_ns;             /* receive time of the last counted packet */
    int64_t max_silence_ns;         /* longest gap between counted packets */
} Leg;

#define RX_BINS 70000              /* 10 ms bins: up to 700 s */
static uint32_t rx_bins[RX_BINS];
static Leg *legs;
static int nlegs;
static uint32_t hist[HIST_FINE + HIST_COARSE + 1];
static uint64_t hist_n;

static int64_t clock_ns(clockid_t c) {
    struct timespec ts;
    clock_gettime(c, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void die(const char *what) {
    perror(what);
    exit(2);
}

/* On-CPU time of every thread of `pid`, in ns (from /proc/<pid>/task/<tid>/schedstat). */
static int64_t proc_cpu_ns(int pid) {
    char path[64], line[256];
    int64_t total = 0;
    DIR *d;
    struct dirent *e;
    if (pid <= 0) return 0;
    snprintf(path, sizeof path, "/proc/%d/task", pid);
    d = opendir(path);
    if (!d) return -1;
    while ((e = readdir(d))) {
        FILE *f;
        char p[320];
        if (e->d_name[0] == '.') continue;
        snprintf(p, sizeof p, "/proc/%d/task/%s/schedstat", pid, e->d_name);
        f = fopen(p, "r");
        if (!f) continue;
        if (fgets(line, sizeof line, f)) total += strtoll(line, NULL, 10);
        fclose(f);
    }
    closedir(d);
    return total;
}

/* On-CPU time of every thread of each pid of a comma-separated list (--also-pids), in ns. */
static int64_t pids_cpu_ns(const char *pids) {
    int64_t total = 0;
    const char *p = pids;
    for (int n = 0; p && *p && n < 256; n++) {   /* bounded: a few ksoftirqd threads */
        int pid = atoi(p);
        int64_t t = proc_cpu_ns(pid);
        if (t > 0) total += t;
        p = strchr(p, ',');
        if (p) p++;
    }
    return total;
}

/* Busy and total jiffies of one CPU from /proc/stat. */
static void cpu_jiffies(int cpu, long long *busy, long long *total) {
    char line[256], name[16];
    FILE *f = fopen("/proc/stat", "r");
    *busy = *total = 0;
    if (!f) return;
    snprintf(name, sizeof name, "cpu%d ", cpu);
    while (fgets(line, sizeof line, f)) {
        if (strncmp(line, name, strlen(name)) == 0) {
            long long v[10] = {0};
            sscanf(line + strlen(name), "%lld %lld %lld %lld %lld %lld %lld %lld %lld %lld", &v[0],
                   &v[1], &v[2], &v[3], &v[4], &v[5], &v[6], &v[7], &v[8], &v[9]);
            for (int i = 0; i < 8; i++) *total += v[i];
            *busy = *total - v[3] - v[4];
            break;
        }
    }
    fclose(f);
}

static void hist_add(int64_t ns) {
    int64_t us = ns / 1000;
    size_t b;
    if (us < 0) us = 0;
    if (us < HIST_FINE)
        b = (size_t)us;
    else if (us < HIST_FINE + (int64_t)HIST_COARSE * 100)
        b = HIST_FINE + (size_t)((us - HIST_FINE) / 100);
    else
        b = HIST_FINE + HIST_COARSE;
    hist[b]++;
    hist_n++;
}

/* The q-quantile of the latency histogram, in µs (bucket upper bound). */
static double hist_q(double q) {
    uint64_t want, acc = 0;
    if (!hist_n) return -1;
    want = (uint64_t)(q * (double)hist_n);
    if (want >= hist_n) want = hist_n - 1;
    for (size_t b = 0; b <= HIST_FINE + HIST_COARSE; b++) {
        acc += hist[b];
        if (acc > want) {
            if (b < HIST_FINE) return (double)b + 1;
            return HIST_FINE + (double)(b - HIST_FINE + 1) * 100;
        }
    }
    return -1;
}

static int udp_socket(const char *host, int port, int rcvbuf) {
    struct sockaddr_in a;
    int one = 1;
    int fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) die("socket");
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons((uint16_t)port);
    inet_pton(AF_INET, host, &a.sin_addr);
    if (bind(fd, (struct sockaddr *)&a, sizeof a) < 0) die("bind");
    if (setsockopt(fd, SOL_SOCKET, SO_TIMESTAMPNS, &one, sizeof one) < 0) die("SO_TIMESTAMPNS");
    if (rcvbuf) setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
    return fd;
}

static uint16_t local_port(int fd) {
    struct sockaddr_in a;
    socklen_t n = sizeof a;
    getsockname(fd, (struct sockaddr *)&a, &n);
    return ntohs(a.sin_port);
}

static void put32(unsigned char *p, uint32_t v) {
    p[0] = v >> 24;
    p[1] = v >> 16;
    p[2] = v >> 8;
    p[3] = v;
}

static void build_rtp(unsigned char *b, int pt, uint32_t seq, uint32_t ssrc, int payload) {
    b[0] = 0x80;
    b[1] = (unsigned char)pt;
    b[2] = (seq >> 8) & 0xFF;
    b[3] = seq & 0xFF;
    put32(b + 4, seq * 160);
    put32(b + 8, ssrc);
    memset(b + 12 + META, 0xD5, (size_t)(payload - META));
}

static mss_uring ring;
static struct msghdr recv_tmpl;

static struct io_uring_sqe *sqe_or_flush(void) {
    struct io_uring_sqe *sqe = mss_uring_get_sqe(&ring);
    if (!sqe) {
        mss_uring_enter(&ring, 0, -1, 0);
        sqe = mss_uring_get_sqe(&ring);
    }
    if (!sqe) {
        fprintf(stderr, "submission queue stuck\n");
        exit(1);
    }
    return sqe;
}

static void arm_recv(int li) {
    mss_uring_prep_recvmsg_multi(sqe_or_flush(), legs[li].fd, &recv_tmpl,
                                 OP_RECV | ((uint64_t)li << 8));
}

int main(int argc, char **argv) {
    int calls = 0, pps = 50, payload = 160, pt = 0, relay_pid = 0, relay_cpu = 0;
    int flood_calls = 0, flood_pps = 0;
    double warmup = 2, measure = 5, drain = 0.3;
    const char *src = "127.0.0.2", *dst = "127.0.0.1", *flood_src = "127.0.0.3", *also_pids = "";
    struct rlimit rl;
    int flood_fd = -1, err;

    for (int i = 1; i + 1 < argc; i += 2) {
        const char *k = argv[i], *v = argv[i + 1];
        if (!strcmp(k, "--calls")) calls = atoi(v);
        else if (!strcmp(k, "--pps")) pps = atoi(v);
        else if (!strcmp(k, "--payload")) payload = atoi(v);
        else if (!strcmp(k, "--pt")) pt = atoi(v);
        else if (!strcmp(k, "--warmup")) warmup = atof(v);
        else if (!strcmp(k, "--measure")) measure = atof(v);
        else if (!strcmp(k, "--drain")) drain = atof(v);
        else if (!strcmp(k, "--relay-pid")) relay_pid = atoi(v);
        else if (!strcmp(k, "--relay-cpu")) relay_cpu = atoi(v);
        else if (!strcmp(k, "--src")) src = v;
        else if (!strcmp(k, "--dst")) dst = v;
        else if (!strcmp(k, "--flood-src")) flood_src = v;
        else if (!strcmp(k, "--also-pids")) also_pids = v;
        else if (!strcmp(k, "--flood-calls")) flood_calls = atoi(v);
        else if (!strcmp(k, "--flood-pps")) flood_pps = atoi(v);
        else {
            fprintf(stderr, "unknown option %s\n", k);
            return 2;
        }
    }
    if (calls < 1 || calls > MAX_CALLS || pps < 1 || pps > 1000 || payload < META ||
        payload > PAYLOAD_MAX || warmup < 0 || measure <= 0 || measure > 600 || drain < 0 ||
        drain > 10 || flood_calls > calls || flood_pps < 0 || flood_pps > 10000000) {
        fprintf(stderr, "bad arguments\n");
        return 2;
    }
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    err = mss_uring_init(&ring, 4096, 65536);
    if (!err) err = mss_uring_setup_buffers(&ring, URING_BUFS, BUF_SIZE);
    if (err) {
        errno = -err;
        die("io_uring");
    }
    memset(&recv_tmpl, 0, sizeof recv_tmpl);
    recv_tmpl.msg_controllen = CMSG_SPACE(sizeof(struct timespec));

    nlegs = 2 * calls;
    legs = calloc((size_t)nlegs, sizeof(Leg));
    if (!legs) die("calloc");
    printf("PORTS");
    for (int i = 0; i < nlegs; i++) {
        legs[i].fd = udp_socket(src, 0, 0);
        legs[i].port = local_port(legs[i].fd);
        printf(" %u", legs[i].port);
    }
    printf("\n");
    fflush(stdout);
    for (int c = 0; c < calls; c++) {
        int a, b;
        if (scanf("%d %d", &a, &b) != 2) {
            fprintf(stderr, "expected %d lines of relay ports\n", calls);
            return 2;
        }
        for (int k = 0; k < 2; k++) {
            Leg *l = &legs[2 * c + k];
            l->dst.sin_family = AF_INET;
            l->dst.sin_port = htons((uint16_t)(k ? b : a));
            inet_pton(AF_INET, dst, &l->dst.sin_addr);
            l->iov.iov_base = l->tx;
            l->iov.iov_len = (size_t)(12 + payload);
            l->msg.msg_name = &l->dst;
            l->msg.msg_namelen = sizeof l->dst;
            l->msg.msg_iov = &l->iov;
            l->msg.msg_iovlen = 1;
            /* A phone talks to one relay port only: connect, so its sends skip the route lookup
             * and what the relay sends back is delivered by the early-demux path. This is the
             * loopback-only part of a relay's cost (a real phone's packets leave by a NIC), and
             * it is the same for every relay under test. */
            if (connect(l->fd, (struct sockaddr *)&l->dst, sizeof l->dst) < 0) die("connect");
        }
    }
    for (int i = 0; i < nlegs; i++) arm_recv(i);
    if (flood_calls && flood_pps) flood_fd = udp_socket(flood_src, 0, 0);

    /* --- run --- */
    const int64_t period = 1000000000LL / pps;
    const int64_t t_start = clock_ns(CLOCK_MONOTONIC) + 10000000LL;
    const int64_t t_measure = t_start + (int64_t)(warmup * 1e9);
    const int64_t t_stop = t_measure + (int64_t)(measure * 1e9);
    const int64_t quiet_end = (int64_t)(drain * 1e9);   /* drain ends after this long silence */
    const int64_t t_end = t_stop + 10000000000LL;         /* and in any case by then */
    int64_t last_rx_mono = 0;
    /* realtime = monotonic + offset, for comparing embedded send times with kernel timestamps */
    const int64_t rt_off = clock_ns(CLOCK_REALTIME) - clock_ns(CLOCK_MONOTONIC);
    const int64_t rt_measure = t_measure + rt_off, rt_stop = t_stop + rt_off;

    unsigned char floodbuf[FLOOD_BATCH][12 + 64];
    struct iovec fiov[FLOOD_BATCH];
    struct mmsghdr fmsg[FLOOD_BATCH];
    struct sockaddr_in fdst[FLOOD_BATCH];
    uint64_t k = 0, sent_total = 0, sent_measured = 0, rx_total = 0, rx_measured = 0;
    uint64_t rx_in_window = 0, rx_foreign = 0, flood_sent = 0, flood_forwarded = 0;
    uint64_t send_errors = 0, late_sends = 0, rx_truncated = 0, rearms = 0, rx_no_ts = 0;
    int64_t relay_cpu0 = 0, relay_cpu1 = 0, gen_cpu0 = 0, gen_cpu1 = 0, also_cpu0 = 0, also_cpu1 = 0;
    long long core_busy0 = 0, core_total0 = 0, core_busy1 = 0, core_total1 = 0;
    int measuring = 0, stopped = 0;
    int64_t t_measure_real = 0, window_ns = 0;
    double flood_credit = 0;
    int64_t last_tick = t_start, next_tick = t_start;
    uint32_t flood_seq = 0;
    int flood_next = 0;

    memset(fmsg, 0, sizeof fmsg);
    for (int i = 0; i < FLOOD_BATCH; i++) {
        build_rtp(floodbuf[i], pt, 0, 0xBADBAD, 64);
        memset(floodbuf[i] + 12, 0xFF, META);
        fiov[i].iov_base = floodbuf[i];
        fiov[i].iov_len = 12 + 64;
        fmsg[i].msg_hdr.msg_iov = &fiov[i];
        fmsg[i].msg_hdr.msg_iovlen = 1;
        fmsg[i].msg_hdr.msg_name = &fdst[i];
        fmsg[i].msg_hdr.msg_namelen = sizeof fdst[i];
    }

    for (;;) {
        int64_t now;
        /* submit this tick's sends, sleep to the next tick, take what arrived meanwhile */
        {
            long long wait = next_tick - clock_ns(CLOCK_MONOTONIC);
            int r;
            if (wait < 1000) wait = 1000;
            r = mss_uring_enter(&ring, 1u << 30, wait, 0);
            if (r < 0 && r != -ETIME && r != -EINTR && r != -EBUSY) {
                errno = -r;
                die("io_uring_enter");
            }
        }
        now = clock_ns(CLOCK_MONOTONIC);
        next_tick = now + TICK_NS;
        /* completions: received datagrams, failed sends */
        unsigned ncqe = mss_uring_cq_ready(&ring);
        for (unsigned c = 0; c < ncqe; c++) {
            struct io_uring_cqe *cqe = mss_uring_cqe_at(&ring, c);
            uint64_t op = cqe->user_data & 0xFF;
            int li = (int)(cqe->user_data >> 8);
            if (op == OP_SEND) {
                if (cqe->res < 0) send_errors++;
                continue;
            }
            if (op != OP_RECV) continue;
            if (!(cqe->flags & IORING_CQE_F_MORE)) {
                arm_recv(li); /* out of buffers or an error: keep receiving */
                rearms++;
            }
            if (cqe->res < 0 || !(cqe->flags & IORING_CQE_F_BUFFER)) continue;
            unsigned bid = cqe->flags >> IORING_CQE_BUFFER_SHIFT;
            unsigned char *buf = mss_uring_buf(&ring, bid);
            struct io_uring_recvmsg_out *o = (struct io_uring_recvmsg_out *)buf;
            unsigned char *ctl = buf + sizeof *o + recv_tmpl.msg_namelen;
            unsigned char *b = ctl + recv_tmpl.msg_controllen;
            int64_t sent_rt, rx_rt = 0;
            uint32_t from;
            if (o->flags & MSG_TRUNC) rx_truncated++;
            if (o->payloadlen < 12 + META) {
                rx_foreign++;
                mss_uring_buf_give(&ring, bid);
                continue;
            }
            if (o->controllen >= sizeof(struct cmsghdr)) {
                struct cmsghdr *cm = (struct cmsghdr *)ctl;
                if (cm->cmsg_level == SOL_SOCKET && cm->cmsg_type == SCM_TIMESTAMPNS) {
                    struct timespec ts;
                    memcpy(&ts, CMSG_DATA(cm), sizeof ts);
                    rx_rt = (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
                }
            }
            memcpy(&sent_rt, b + 12, 8);
            memcpy(&from, b + 20, 4);
            mss_uring_buf_give(&ring, bid);
            if (from == FLOOD_LEG) {
                flood_forwarded++;
                continue;
            }
            if (from != (uint32_t)(li ^ 1)) {
                rx_foreign++;
                continue;
            }
            if (!rx_rt) {
                rx_rt = clock_ns(CLOCK_REALTIME);
                rx_no_ts++;
            }
            last_rx_mono = now;
            rx_total++;
            if (rx_rt >= rt_measure) {     /* by receive time, in 10 ms bins from t_measure */
                int64_t bin = (rx_rt - rt_measure) / 10000000LL;
                if (bin < RX_BINS) rx_bins[bin]++;
            }
            if (sent_rt >= rt_measure && sent_rt < rt_stop) {
                Leg *l = &legs[li];
                rx_measured++;
                l->rx_measured++;
                hist_add(rx_rt - sent_rt);
                if (l->last_rx_ns && rx_rt - l->last_rx_ns > l->max_silence_ns)
                    l->max_silence_ns = rx_rt - l->last_rx_ns;
                l->last_rx_ns = rx_rt;
            }
        }
        mss_uring_cq_advance(&ring, ncqe);
        mss_uring_buf_publish(&ring);

        if (!stopped && now >= t_stop) {
            stopped = 1;
            relay_cpu1 = proc_cpu_ns(relay_pid);
            gen_cpu1 = proc_cpu_ns(getpid());
            also_cpu1 = pids_cpu_ns(also_pids);
            cpu_jiffies(relay_cpu, &core_busy1, &core_total1);
            window_ns = now - t_measure_real;
        }
        if (stopped && (now >= t_end || now - (last_rx_mono > t_stop ? last_rx_mono : t_stop) >
                                            quiet_end))
            break;
        if (!measuring && now >= t_measure) {
            measuring = 1;
            t_measure_real = now;
            relay_cpu0 = proc_cpu_ns(relay_pid);
            gen_cpu0 = proc_cpu_ns(getpid());
            also_cpu0 = pids_cpu_ns(also_pids);
            cpu_jiffies(relay_cpu, &core_busy0, &core_total0);
        }
        /* sends that are due: leg k % nlegs at t_start + (k / nlegs) * period + phase */
        while (!stopped) {
            int li = (int)(k % (uint64_t)nlegs);
            int64_t due = t_start + (int64_t)(k / (uint64_t)nlegs) * period +
                          (int64_t)li * period / nlegs;
            Leg *l = &legs[li];
            int64_t rt;
            struct io_uring_sqe *sqe;
            if (due > now || due >= t_stop) break;
            if (now - due > 2 * TICK_NS) late_sends++;
            build_rtp(l->tx, pt, l->seq, (uint32_t)li, payload);
            rt = clock_ns(CLOCK_REALTIME);
            memcpy(l->tx + 12, &rt, 8);
            memcpy(l->tx + 20, &li, 4);
            memcpy(l->tx + 24, &l->seq, 4);
            sqe = sqe_or_flush();
            mss_uring_prep_send(sqe, l->fd, l->tx, (unsigned)(12 + payload),
                                OP_SEND | ((uint64_t)li << 8));
            sent_total++;
            if (rt >= rt_measure && rt < rt_stop) {
                sent_measured++;
                l->sent_measured++;
            }
            l->seq++;
            k++;
        }
        /* flood: junk at a fixed rate from a stray source, on calls that have latched already */
        if (flood_fd >= 0 && measuring && !stopped) {
            flood_credit += (double)(now - last_tick) * flood_pps / 1e9;
            if (flood_credit > 4 * FLOOD_BATCH) flood_credit = 4 * FLOOD_BATCH;
            while (flood_credit >= 1) {
                int n = flood_credit < FLOOD_BATCH ? (int)flood_credit : FLOOD_BATCH;
                for (int i = 0; i < n; i++) {
                    fdst[i] = legs[2 * flood_next].dst;
                    flood_next = (flood_next + 1) % flood_calls;
                    floodbuf[i][2] = (flood_seq >> 8) & 0xFF;
                    floodbuf[i][3] = flood_seq & 0xFF;
                    flood_seq++;
                }
                int sent = sendmmsg(flood_fd, fmsg, (unsigned)n, MSG_DONTWAIT);
                if (sent <= 0) break;
                flood_sent += (uint64_t)sent;
                flood_credit -= sent;
            }
        }
        last_tick = now;
    }

    /* forwarded in the window the CPU time was taken over */
    for (int64_t b = (t_measure_real - t_measure) / 10000000LL;
         b < (t_measure_real - t_measure + window_ns) / 10000000LL && b < RX_BINS; b++)
        rx_in_window += b >= 0 ? rx_bins[b] : 0;

    /* per-stream delivery: every leg's share of what the other leg sent in the window */
    double worst_ratio = 1.0, sum_ratio = 0;
    int streams_below_half = 0, streams_silent = 0;
    int64_t worst_silence = 0;
    for (int i = 0; i < nlegs; i++) {
        uint64_t expect = legs[i ^ 1].sent_measured;
        double r = expect ? (double)legs[i].rx_measured / (double)expect : 1.0;
        if (r < worst_ratio) worst_ratio = r;
        sum_ratio += r;
        if (r < 0.5) streams_below_half++;
        if (expect && legs[i].rx_measured == 0) streams_silent++;
        if (legs[i].max_silence_ns > worst_silence) worst_silence = legs[i].max_silence_ns;
    }
    double core_util = core_total1 > core_total0
                           ? (double)(core_busy1 - core_busy0) / (double)(core_total1 - core_total0)
                           : -1;
    printf("{\"calls\": %d, \"pps\": %d, \"payload\": %d, \"measure_s\": %.3f, "
           "\"sent_total\": %llu, \"sent_measured\": %llu, \"rx_total\": %llu, "
           "\"rx_measured\": %llu, \"rx_in_window\": %llu, \"rx_foreign\": %llu, "
           "\"send_errors\": %llu, \"late_sends\": %llu, \"rx_truncated\": %llu, \"rearms\": %llu, \"rx_no_ts\": %llu, "
           "\"loss\": %.6g, \"lat_p50_us\": %.1f, \"lat_p90_us\": %.1f, \"lat_p99_us\": %.1f, "
           "\"lat_p999_us\": %.1f, \"lat_max_us\": %.1f, "
           "\"relay_cpu_s\": %.6f, \"gen_cpu_s\": %.6f, \"also_cpu_s\": %.6f, \"relay_core_util\": %.4f, "
           "\"flood_sent\": %llu, \"flood_forwarded\": %llu, \"streams\": %d, "
           "\"worst_stream_ratio\": %.4f, \"mean_stream_ratio\": %.4f, "
           "\"streams_below_half\": %d, \"streams_silent\": %d, \"worst_silence_ms\": %.1f}\n",
           calls, pps, payload, (double)window_ns / 1e9, (unsigned long long)sent_total,
           (unsigned long long)sent_measured, (unsigned long long)rx_total,
           (unsigned long long)rx_measured, (unsigned long long)rx_in_window,
           (unsigned long long)rx_foreign, (unsigned long long)send_errors,
           (unsigned long long)late_sends, (unsigned long long)rx_truncated,
           (unsigned long long)rearms, (unsigned long long)rx_no_ts,
           sent_measured ? 1.0 - (double)rx_measured / (double)sent_measured : 0.0,
           hist_q(0.5), hist_q(0.9), hist_q(0.99), hist_q(0.999), hist_q(1.0),
           (double)(relay_cpu1 - relay_cpu0) / 1e9, (double)(gen_cpu1 - gen_cpu0) / 1e9,
           (double)(also_cpu1 - also_cpu0) / 1e9, core_util,
           (unsigned long long)flood_sent, (unsigned long long)flood_forwarded, nlegs, worst_ratio,
           nlegs ? sum_ratio / nlegs : 0, streams_below_half, streams_silent,
           (double)worst_silence / 1e6);
    return 0;
}
