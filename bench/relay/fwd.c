/*
 * The plain-syscall reference forwarder of the relay benchmark: what a latching UDP relay costs
 * with nothing but epoll + recvmmsg + sendmmsg.
 *
 * Binds N port pairs (RTP only: leg a, leg b) on one address; each leg latches onto the source of
 * its first datagram; whatever a leg receives goes out of the other leg's socket to that leg's
 * latched source (dropped while it has none). One thread, level-triggered epoll, no gathering.
 *
 * Usage: fwd HOST PORT_MIN CALLS -- binds CALLS pairs of even ports from PORT_MIN (skipping ports
 * in use), prints "PAIRS a b a b ...", and forwards until stdin closes.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#define BATCH 64
#define EVENTS 1024

typedef struct {
    int fd;
    int latched;
    struct sockaddr_in peer;
} Leg;

static int bind_udp(const char *host, int port) {
    struct sockaddr_in a;
    int fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons((uint16_t)port);
    inet_pton(AF_INET, host, &a.sin_addr);
    if (bind(fd, (struct sockaddr *)&a, sizeof a) < 0) {
        close(fd);
        return -1;
    }
    return fd;
}

int main(int argc, char **argv) {
    struct rlimit rl;
    int calls, port, ep, nlegs;
    Leg *legs;
    static unsigned char bufs[BATCH][2048];
    struct iovec iov[BATCH], oiov[BATCH];
    struct sockaddr_in names[BATCH];
    struct mmsghdr in[BATCH], out[BATCH];
    struct epoll_event events[EVENTS], ev;

    if (argc != 4) {
        fprintf(stderr, "usage: fwd HOST PORT_MIN CALLS\n");
        return 2;
    }
    calls = atoi(argv[3]);
    port = atoi(argv[2]);
    if (calls < 1 || calls > 16000 || port < 1024) return 2;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    nlegs = 2 * calls;
    legs = calloc((size_t)nlegs, sizeof(Leg));
    ep = epoll_create1(EPOLL_CLOEXEC);
    /* stdin closing is the signal to stop */
    ev.events = EPOLLIN;
    ev.data.u32 = UINT32_MAX;
    epoll_ctl(ep, EPOLL_CTL_ADD, 0, &ev);
    printf("PAIRS");
    for (int i = 0; i < nlegs; i++) {
        int fd = -1;
        while (fd < 0 && port < 65534) {
            fd = bind_udp(argv[1], port);
            port += 2;
        }
        if (fd < 0) {
            fprintf(stderr, "out of ports\n");
            return 1;
        }
        legs[i].fd = fd;
        ev.events = EPOLLIN;
        ev.data.u32 = (uint32_t)i;
        epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
        printf(" %d", port - 2);
    }
    printf("\n");
    fflush(stdout);

    memset(in, 0, sizeof in);
    memset(out, 0, sizeof out);
    for (int i = 0; i < BATCH; i++) {
        iov[i].iov_base = bufs[i];
        iov[i].iov_len = sizeof bufs[i];
        in[i].msg_hdr.msg_iov = &iov[i];
        in[i].msg_hdr.msg_iovlen = 1;
        in[i].msg_hdr.msg_name = &names[i];
        out[i].msg_hdr.msg_iov = &oiov[i];
        out[i].msg_hdr.msg_iovlen = 1;
        out[i].msg_hdr.msg_namelen = sizeof(struct sockaddr_in);
    }
    for (;;) {
        int n = epoll_wait(ep, events, EVENTS, -1);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) return 1;
        for (int e = 0; e < n; e++) {
            uint32_t li = events[e].data.u32;
            Leg *l, *o;
            int got, nout = 0;
            if (li == UINT32_MAX) return 0; /* stdin readable: EOF or a line, either way stop */
            l = &legs[li];
            o = &legs[li ^ 1];
            for (int i = 0; i < BATCH; i++) in[i].msg_hdr.msg_namelen = sizeof names[i];
            got = recvmmsg(l->fd, in, BATCH, MSG_DONTWAIT, NULL);
            for (int i = 0; i < got; i++) {
                if (!l->latched) {
                    l->peer = names[i];
                    l->latched = 1;
                } else if (names[i].sin_port != l->peer.sin_port ||
                           names[i].sin_addr.s_addr != l->peer.sin_addr.s_addr) {
                    continue; /* strict source */
                }
                if (!o->latched) continue;
                oiov[nout].iov_base = bufs[i];
                oiov[nout].iov_len = in[i].msg_len;
                out[nout].msg_hdr.msg_name = &o->peer;
                nout++;
            }
            if (nout) sendmmsg(o->fd, out, (unsigned)nout, MSG_DONTWAIT);
        }
    }
}
