/* The map shared by the kernel fast path's BPF program (kfwd.bpf.c) and mss's relay (_rtp_kfwd.h).
 *
 * One entry per forwarded direction and kind: a packet sent to the relay's own address and port
 * (the key) from the latched source (strict source) leaves, rewritten, from the relay's other leg
 * towards that leg's remote. mss writes the match and the rewrite; the program writes the
 * statistics. Everything is in network byte order except the statistics and the cookie.
 */
#ifndef MSS_KFWD_H
#define MSS_KFWD_H

#include <linux/types.h>

#define KF_MAP_NAME "kf_entries"
#define KF_PROG_NAME "kf_ingress"

/* largest UDP payload forwarded in the kernel: the relay's receive buffer (RX_BUF in _rtp.pyx);
 * a larger datagram goes up to the relay, which drops it as malformed */
#define KF_MAX_PAYLOAD 2048

struct kf_key {
    __u8 family;       /* 4 or 6 */
    __u8 pad;
    __be16 port;       /* the relay's port the packet is sent to */
    __u8 addr[16];     /* the relay's address (IPv4: the first 4 bytes, the rest zero) */
};

struct kf_entry {
    /* written by mss */
    __u8 src[16];      /* the only source forwarded (the latched remote) */
    __u8 out_src[16];  /* the relay's address the packet leaves from */
    __u8 out_dst[16];  /* the other leg's remote */
    __be16 src_port;
    __be16 out_sport;  /* the relay's other leg's port */
    __be16 out_dport;
    __u8 rtcp;         /* 1: RTCP (no RTP header checks, no sequence statistics) */
    __u8 pt_rewrite;   /* 1: pt_map is not the identity */
    __u32 cookie;      /* mss's own name for the entry: slot << 2 | leg << 1 | kind */
    __u32 pad0;
    /* written by the program: what it forwarded */
    __u64 packets;
    __u64 bytes;       /* UDP payload bytes, as the relay counts them */
    __u64 last_ns;     /* CLOCK_MONOTONIC of the last packet (bpf_ktime_get_ns) */
    __u64 seq_gaps;    /* RFC 3550 A.1, as the relay counts them */
    __u64 jitter_q4;   /* RFC 3550 A.8, in 1/16 timestamp units */
    __u32 ssrc;        /* the last packet's */
    __s32 transit;
    __u16 max_seq;
    __u8 seq_valid;
    __u8 transit_valid;
    __u32 pad1;
    __u64 mux_packets; /* RTCP multiplexed on the RTP port (RFC 5761), forwarded as it came */
    __u64 mux_bytes;
    __u64 mux_last_ns;
    __u8 pt_map[128];  /* payload type rewrite (RTP only) */
};

#endif
