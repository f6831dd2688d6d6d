// SPDX-License-Identifier: (MIT OR GPL-2.0)
/* mss's kernel fast path: a tcx ingress program that forwards a bridged call's RTP and RTCP.
 *
 * A UDP packet to the relay's address and port (the key of kf_entries) from exactly the source the
 * relay latched on (strict source) is rewritten in place: it leaves from the relay's other leg
 * (source address and port) towards that leg's remote (destination address and port), with the
 * IPv4 header checksum and the UDP checksum (pseudo header included) mended by the checksum
 * helpers, and optionally its RTP payload type mapped. On loopback the packet then goes on to the
 * destination socket as if the relay had sent it: nothing more is needed.
 *
 * The program forwards what the relay would forward from that source (parse() holds the relay's
 * header checks: CSRCs, extension and padding are checked, RTCP multiplexed on the RTP port passes
 * as it is), so a stream's packets never overtake each other between the two paths. Anything else
 * goes up the stack unchanged (TC_ACT_UNSPEC: the next tcx program, then the relay's socket), so
 * the relay keeps its own rules for it: another source (counted as a source drop or learned), a
 * datagram the relay drops (short, malformed, too long), IP options, fragments and IPv6 extension
 * headers.
 *
 * The entry keeps what it forwarded: packets, bytes, the last packet's time and, for RTP, sequence
 * gaps, SSRC and interarrival jitter computed exactly as the relay computes them (RFC 3550 A.1 and
 * A.8); mss reads them in bulk. The read-modify-write of the sequence and jitter state is not
 * atomic: one phone's packets of one flow arrive one after another, so it is exact in practice.
 */

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/pkt_cls.h>
#include <linux/udp.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "kfwd.h"

/* sized by the loader before it loads: four entries a session (RTP and RTCP, each direction) */
struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(max_entries, 4096);
    __type(key, struct kf_key);
    __type(value, struct kf_entry);
} kf_entries SEC(".maps");

#define IP_OFF ETH_HLEN
#define UDP4_OFF (IP_OFF + sizeof(struct iphdr))            /* no IP options: anything else goes up */
#define UDP6_OFF (IP_OFF + sizeof(struct ipv6hdr))          /* no extension headers, likewise */
#define RTP_HDR 12
#define RTCP_HDR 8
#define CLOCK_NS_PER_SAMPLE 125000ULL                       /* 8 kHz RTP clock */
#define MAX_DROPOUT 3000                                    /* RFC 3550 A.1 */

/* 8 kHz static audio payload types (RFC 3551 table 4), as JITTER_PT in _rtp.pyx */
#define JITTER_PTS ((1ULL << 0) | (1ULL << 3) | (1ULL << 4) | (1ULL << 5) | (1ULL << 7) | (1ULL << 8) \
                    | (1ULL << 9) | (1ULL << 12) | (1ULL << 13) | (1ULL << 15) | (1ULL << 18))

static __always_inline int same16(const __u8 *a, const __u8 *b, int n)
{
    for (int i = 0; i < 16; i++)
        if (i < n && a[i] != b[i])
            return 0;
    return 1;
}

enum { KF_UP = -1, KF_RTP = 0, KF_MUX = 1 };

/* The relay's parse(): what it would forward, the kernel forwards (so a stream's packets never
 * overtake each other between the two paths); anything it would drop goes up to be counted there.
 * KF_RTP, KF_MUX (RTCP on the RTP port) or KF_UP. The entry's own kind for an RTCP entry. */
static __always_inline int parse(struct __sk_buff *skb, const struct kf_entry *e, const __u8 *h,
                                 __u32 len, __u32 payload_off)
{
    if (len > KF_MAX_PAYLOAD || len < RTCP_HDR || (h[0] >> 6) != 2)
        return KF_UP;
    __u8 pt = h[1] & 0x7F;
    if (e->rtcp || (pt >= 64 && pt <= 95))                  /* RFC 5761 section 4 */
        return (h[1] >= 192 && h[1] <= 223) ? (e->rtcp ? KF_RTP : KF_MUX) : KF_UP;
    if (len < RTP_HDR)
        return KF_UP;
    __u32 hdr = RTP_HDR + 4 * (h[0] & 0x0F);                /* CSRC list */
    if (h[0] & 0x10) {                                      /* extension: 4 bytes + length words */
        __u8 ext[4];
        if (hdr + 4 > len || bpf_skb_load_bytes(skb, payload_off + hdr, ext, 4) < 0)
            return KF_UP;
        hdr += 4 + 4 * (((__u32)ext[2] << 8) | ext[3]);
    }
    if (hdr > len)
        return KF_UP;
    if (h[0] & 0x20) {                                      /* padding: count in the last byte */
        __u8 pad;
        if (bpf_skb_load_bytes(skb, payload_off + len - 1, &pad, 1) < 0 || pad == 0 || pad > len - hdr)
            return KF_UP;
    }
    return KF_RTP;
}

static __always_inline void count(struct kf_entry *e, const __u8 *h, __u32 len, int kind, __u64 now)
{
    if (kind == KF_MUX) {
        __sync_fetch_and_add(&e->mux_packets, 1);
        __sync_fetch_and_add(&e->mux_bytes, len);
        e->mux_last_ns = now;
        return;
    }
    __sync_fetch_and_add(&e->packets, 1);
    __sync_fetch_and_add(&e->bytes, len);
    e->last_ns = now;
    if (e->rtcp)
        return;
    __u16 seq = ((__u16)h[2] << 8) | h[3];
    __u32 ts = ((__u32)h[4] << 24) | ((__u32)h[5] << 16) | ((__u32)h[6] << 8) | h[7];
    __u32 ssrc = ((__u32)h[8] << 24) | ((__u32)h[9] << 16) | ((__u32)h[10] << 8) | h[11];
    __u8 pt = h[1] & 0x7F;

    if (!e->seq_valid || ssrc != e->ssrc) {
        e->ssrc = ssrc;
        e->seq_valid = 1;
        e->max_seq = seq;
        e->transit_valid = 0;
    } else {
        __u16 delta = seq - e->max_seq;
        if (delta != 0 && delta < MAX_DROPOUT) {
            e->seq_gaps += delta - 1;
            e->max_seq = seq;
        } else if (delta >= MAX_DROPOUT && delta < 0x8000) {
            e->max_seq = seq;                               /* a jump: start over from here */
        }
    }
    if (pt < 64 && (JITTER_PTS >> pt) & 1) {
        __s32 transit = (__s32)((__u32)(now / CLOCK_NS_PER_SAMPLE) - ts);
        if (e->transit_valid) {
            __s32 d = transit - e->transit;
            __u64 dt = d < 0 ? -d : d;
            __u64 j = e->jitter_q4 + dt;
            e->jitter_q4 = j - ((j + 8) >> 4);
        }
        e->transit = transit;
        e->transit_valid = 1;
    }
}

/* The payload type map (fixed offset: the second byte of the UDP payload), checksum mended. */
static __always_inline int rewrite_pt(struct __sk_buff *skb, const struct kf_entry *e, const __u8 *h,
                                      int kind, __u32 udp_off)
{
    __u8 pt = h[1] & 0x7F;
    __u8 b1 = (h[1] & 0x80) | (e->pt_map[pt] & 0x7F);

    if (!e->pt_rewrite || e->rtcp || kind != KF_RTP || b1 == h[1])
        return 0;
    __be16 old = bpf_htons(((__u16)h[0] << 8) | h[1]);
    __be16 new = bpf_htons(((__u16)h[0] << 8) | b1);
    if (bpf_l4_csum_replace(skb, udp_off + offsetof(struct udphdr, check), old, new,
                            BPF_F_MARK_MANGLED_0 | 2))
        return -1;
    return bpf_skb_store_bytes(skb, udp_off + sizeof(struct udphdr) + 1, &b1, 1, 0);
}

static __always_inline int rewrite_ports(struct __sk_buff *skb, const struct kf_entry *e,
                                         const struct udphdr *udp, __u32 udp_off)
{
    __u32 check = udp_off + offsetof(struct udphdr, check);

    if (bpf_l4_csum_replace(skb, check, udp->source, e->out_sport, BPF_F_MARK_MANGLED_0 | 2) ||
        bpf_l4_csum_replace(skb, check, udp->dest, e->out_dport, BPF_F_MARK_MANGLED_0 | 2))
        return -1;
    if (bpf_skb_store_bytes(skb, udp_off + offsetof(struct udphdr, source), &e->out_sport, 2, 0) ||
        bpf_skb_store_bytes(skb, udp_off + offsetof(struct udphdr, dest), &e->out_dport, 2, 0))
        return -1;
    return 0;
}

static __always_inline int forward4(struct __sk_buff *skb)
{
    struct {
        struct iphdr ip;
        struct udphdr udp;
        __u8 rtp[RTP_HDR];
    } p;
    struct kf_key key = {.family = 4};

    if (bpf_skb_load_bytes(skb, IP_OFF, &p, sizeof(p)) < 0)
        return TC_ACT_UNSPEC;
    if (p.ip.ihl != 5 || p.ip.protocol != IPPROTO_UDP || (p.ip.frag_off & bpf_htons(0x3FFF)))
        return TC_ACT_UNSPEC;
    key.port = p.udp.dest;
    __builtin_memcpy(key.addr, &p.ip.daddr, 4);
    struct kf_entry *e = bpf_map_lookup_elem(&kf_entries, &key);
    if (!e)
        return TC_ACT_UNSPEC;
    if (p.udp.source != e->src_port || !same16((__u8 *)&p.ip.saddr, e->src, 4))
        return TC_ACT_UNSPEC;                               /* strict source: the relay judges it */
    __u32 len = bpf_ntohs(p.udp.len);
    if (len < sizeof(struct udphdr) || IP_OFF + sizeof(p.ip) + len > skb->len)
        return TC_ACT_UNSPEC;
    len -= sizeof(struct udphdr);
    int kind = parse(skb, e, p.rtp, len, UDP4_OFF + sizeof(struct udphdr));
    if (kind == KF_UP)
        return TC_ACT_UNSPEC;
    count(e, p.rtp, len, kind, bpf_ktime_get_ns());

    __be32 saddr, daddr;
    __builtin_memcpy(&saddr, e->out_src, 4);
    __builtin_memcpy(&daddr, e->out_dst, 4);
    __u32 ip_check = IP_OFF + offsetof(struct iphdr, check);
    __u32 udp_check = UDP4_OFF + offsetof(struct udphdr, check);
    if (bpf_l4_csum_replace(skb, udp_check, p.ip.saddr, saddr, BPF_F_PSEUDO_HDR | BPF_F_MARK_MANGLED_0 | 4) ||
        bpf_l4_csum_replace(skb, udp_check, p.ip.daddr, daddr, BPF_F_PSEUDO_HDR | BPF_F_MARK_MANGLED_0 | 4) ||
        bpf_l3_csum_replace(skb, ip_check, p.ip.saddr, saddr, 4) ||
        bpf_l3_csum_replace(skb, ip_check, p.ip.daddr, daddr, 4) ||
        bpf_skb_store_bytes(skb, IP_OFF + offsetof(struct iphdr, saddr), &saddr, 4, 0) ||
        bpf_skb_store_bytes(skb, IP_OFF + offsetof(struct iphdr, daddr), &daddr, 4, 0) ||
        rewrite_ports(skb, e, &p.udp, UDP4_OFF) || rewrite_pt(skb, e, p.rtp, kind, UDP4_OFF))
        return TC_ACT_SHOT;                                 /* half rewritten: never deliver it */
    return TC_ACT_OK;
}

static __always_inline int forward6(struct __sk_buff *skb)
{
    struct {
        struct ipv6hdr ip;
        struct udphdr udp;
        __u8 rtp[RTP_HDR];
    } p;
    struct kf_key key = {.family = 6};

    if (bpf_skb_load_bytes(skb, IP_OFF, &p, sizeof(p)) < 0)
        return TC_ACT_UNSPEC;
    if (p.ip.nexthdr != IPPROTO_UDP)
        return TC_ACT_UNSPEC;
    key.port = p.udp.dest;
    __builtin_memcpy(key.addr, &p.ip.daddr, 16);
    struct kf_entry *e = bpf_map_lookup_elem(&kf_entries, &key);
    if (!e)
        return TC_ACT_UNSPEC;
    if (p.udp.source != e->src_port || !same16((__u8 *)&p.ip.saddr, e->src, 16))
        return TC_ACT_UNSPEC;
    __u32 len = bpf_ntohs(p.udp.len);
    if (len < sizeof(struct udphdr) || IP_OFF + sizeof(p.ip) + len > skb->len)
        return TC_ACT_UNSPEC;
    len -= sizeof(struct udphdr);
    int kind = parse(skb, e, p.rtp, len, UDP6_OFF + sizeof(struct udphdr));
    if (kind == KF_UP)
        return TC_ACT_UNSPEC;
    count(e, p.rtp, len, kind, bpf_ktime_get_ns());

    __u32 addrs_old[8], addrs_new[8];
    __builtin_memcpy(addrs_old, &p.ip.saddr, 32);           /* saddr and daddr are adjacent */
    __builtin_memcpy(addrs_new, e->out_src, 16);
    __builtin_memcpy(&addrs_new[4], e->out_dst, 16);
    __s64 diff = bpf_csum_diff(addrs_old, 32, addrs_new, 32, 0);
    if (diff < 0)
        return TC_ACT_SHOT;
    if (bpf_l4_csum_replace(skb, UDP6_OFF + offsetof(struct udphdr, check), 0, diff, BPF_F_PSEUDO_HDR) ||
        bpf_skb_store_bytes(skb, IP_OFF + offsetof(struct ipv6hdr, saddr), addrs_new, 32, 0) ||
        rewrite_ports(skb, e, &p.udp, UDP6_OFF) || rewrite_pt(skb, e, p.rtp, kind, UDP6_OFF))
        return TC_ACT_SHOT;
    return TC_ACT_OK;
}

SEC("tc")
int kf_ingress(struct __sk_buff *skb)
{
    if (skb->protocol == bpf_htons(ETH_P_IP))
        return forward4(skb);
    if (skb->protocol == bpf_htons(ETH_P_IPV6))
        return forward6(skb);
    return TC_ACT_UNSPEC;
}

char LICENSE[] SEC("license") = "Dual MIT/GPL";
