// SPDX-License-Identifier: (MIT OR GPL-2.0)
/* mss's kernel fast path: a tcx ingress program that forwards a bridged call's RTP and RTCP.
 *
 * A UDP packet to the relay's address and port (the key of kf_entries) from exactly the source the
 * relay latched on (strict source) is rewritten in place: it leaves from the relay's other leg
 * (source address and port) towards that leg's remote (destination address and port), with the
 * IPv4 header checksum and the UDP checksum (pseudo header included) mended by the checksum
 * helpers, its TTL that of a send of the relay's, and optionally its RTP payload type mapped. On
 * loopback the packet then goes on to the destination socket as if the relay had sent it; arrived
 * on a network interface, it is redirected out by the relay's route (deliver()).
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
#define LOOPBACK_IFINDEX 1                                  /* lo is the first device of every netns */
#define RELAY_TTL 64                                        /* what the relay's own sends carry */
#define FIB_AF_INET 2                                       /* AF_INET and AF_INET6 (no libc here) */
#define FIB_AF_INET6 10
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

enum { KF_UP = -1, KF_RTP = 0, KF_MUX = 1, KF_RTCP = 2 };

/* The relay's parse(): what it would forward, the kernel forwards (so a stream's packets never
 * overtake each other between the two paths); anything it would drop goes up to be counted there.
 * KF_RTP, KF_MUX (RTCP on the RTP port), KF_RTCP (an RTCP entry's packet) or KF_UP. Only the
 * first 8 bytes of the payload are known to be there; parse() reads no further than RTCP needs
 * until it has seen the length an RTP header needs. */
static __always_inline int parse(struct __sk_buff *skb, const struct kf_entry *e, const __u8 *h,
                                 __u32 len, __u32 payload_off)
{
    if (len > KF_MAX_PAYLOAD || len < RTCP_HDR || (h[0] >> 6) != 2)
        return KF_UP;
    __u8 pt = h[1] & 0x7F;
    if (e->rtcp || (pt >= 64 && pt <= 95))                  /* RFC 5761 section 4 */
        return (h[1] >= 192 && h[1] <= 223) ? (e->rtcp ? KF_RTCP : KF_MUX) : KF_UP;
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
    if (kind != KF_RTP)                                     /* an RTCP entry's packet */
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

/* The payload type after the entry's map (RTP only; RTCP and multiplexed RTCP pass as they came). */
static __always_inline __u8 mapped_b1(const struct kf_entry *e, const __u8 *h, int kind)
{
    if (!e->pt_rewrite || e->rtcp || kind != KF_RTP)
        return h[1];
    return (h[1] & 0x80) | (e->pt_map[h[1] & 0x7F] & 0x7F);
}

/* Headers read and written in place (direct packet access); the checksums mended afterwards from
 * differences computed on copies, each with one helper call: the IPv4 header checksum and the UDP
 * checksum's pseudo header for the addresses, the UDP checksum for the ports and the RTP header's
 * second byte (on a CHECKSUM_PARTIAL loopback packet the helper leaves that one to the final sum,
 * as it should). The program never gives up half way: every check is done before the first write. */

struct words {                                             /* what a rewrite changes outside the IP addresses */
    __be16 sport;
    __be16 dport;
    __u8 rtp01[2];                                         /* the RTP header's first two bytes */
    __u8 pad[2];
};

static __always_inline int fix_udp(struct __sk_buff *skb, __u32 check_off, struct words *old,
                                   struct words *new, __s64 addr_diff)
{
    __s64 diff = bpf_csum_diff((__be32 *)old, sizeof(*old), (__be32 *)new, sizeof(*new), 0);
    if (addr_diff < 0 || diff < 0)
        return -1;
    if (bpf_l4_csum_replace(skb, check_off, 0, addr_diff, BPF_F_PSEUDO_HDR | BPF_F_MARK_MANGLED_0))
        return -1;
    return bpf_l4_csum_replace(skb, check_off, 0, diff, BPF_F_MARK_MANGLED_0);
}

/* Where the rewritten packet goes. On loopback it simply goes on up the stack to the destination
 * socket. Arrived on another interface, it leaves by the route the relay's own send would take,
 * through the neighbour table: the FIB names the interface (an output lookup), or, where the
 * interface does not forward (bpf_fib_lookup insists on that even for output lookups), it leaves by
 * the interface it came in on, the usual case of a relay with one interface, with the route and
 * neighbour looked up there by bpf_redirect_neigh itself. */
static __always_inline int deliver(struct __sk_buff *skb, struct bpf_fib_lookup *fib)
{
    if (skb->ingress_ifindex == LOOPBACK_IFINDEX)
        return TC_ACT_OK;
    __u32 in = skb->ingress_ifindex;
    fib->ifindex = in;
    fib->l4_protocol = IPPROTO_UDP;
    long rc = bpf_fib_lookup(skb, fib, sizeof(*fib), BPF_FIB_LOOKUP_OUTPUT);
    if (rc == BPF_FIB_LKUP_RET_SUCCESS || rc == BPF_FIB_LKUP_RET_NO_NEIGH)
        return bpf_redirect_neigh(fib->ifindex, NULL, 0, 0);
    if (rc == BPF_FIB_LKUP_RET_FWD_DISABLED)
        return bpf_redirect_neigh(in, NULL, 0, 0);
    if (rc == BPF_FIB_LKUP_RET_NOT_FWDED)
        return TC_ACT_OK;                                   /* the destination is local */
    return TC_ACT_SHOT;                                     /* no route: as a send that failed */
}

static __always_inline int forward4(struct __sk_buff *skb)
{
    void *data = (void *)(long)skb->data, *end = (void *)(long)skb->data_end;
    struct iphdr *ip = data + IP_OFF;
    struct udphdr *udp = (void *)(ip + 1);
    __u8 *h = (void *)(udp + 1);
    struct kf_key key = {.family = 4};

    if ((void *)(h + RTCP_HDR) > end)                       /* short, or headers not linear: up */
        return TC_ACT_UNSPEC;
    if (ip->ihl != 5 || ip->protocol != IPPROTO_UDP || (ip->frag_off & bpf_htons(0x3FFF)))
        return TC_ACT_UNSPEC;
    key.port = udp->dest;
    __builtin_memcpy(key.addr, &ip->daddr, 4);
    struct kf_entry *e = bpf_map_lookup_elem(&kf_entries, &key);
    if (!e)
        return TC_ACT_UNSPEC;
    if (udp->source != e->src_port || ip->saddr != *(__be32 *)e->src)
        return TC_ACT_UNSPEC;                               /* strict source: the relay judges it */
    __u32 len = bpf_ntohs(udp->len);
    if (len < sizeof(struct udphdr) || UDP4_OFF + len > skb->len)
        return TC_ACT_UNSPEC;
    len -= sizeof(struct udphdr);
    int kind = parse(skb, e, h, len, UDP4_OFF + sizeof(struct udphdr));
    if (kind == KF_UP)
        return TC_ACT_UNSPEC;
    /* parse() may have called a helper: the packet pointers are taken again */
    data = (void *)(long)skb->data;
    end = (void *)(long)skb->data_end;
    ip = data + IP_OFF;
    udp = (void *)(ip + 1);
    h = (void *)(udp + 1);
    if ((void *)(h + RTCP_HDR) > end || (kind == KF_RTP && (void *)(h + RTP_HDR) > end))
        return TC_ACT_UNSPEC;
    count(e, h, len, kind, bpf_ktime_get_ns());

    __be16 ip_len = ip->tot_len;
    __be32 old_addrs[2] = {ip->saddr, ip->daddr};
    __be32 new_addrs[2] = {*(__be32 *)e->out_src, *(__be32 *)e->out_dst};
    __be16 old_ttl[2] = {*(__be16 *)&ip->ttl, 0};           /* TTL and protocol: one 16-bit word */
    ip->ttl = RELAY_TTL;
    __be16 new_ttl[2] = {*(__be16 *)&ip->ttl, 0};
    struct words old = {.sport = udp->source, .dport = udp->dest, .rtp01 = {h[0], h[1]}};
    struct words new = {.sport = e->out_sport, .dport = e->out_dport, .rtp01 = {h[0], mapped_b1(e, h, kind)}};
    ip->saddr = new_addrs[0];
    ip->daddr = new_addrs[1];
    udp->source = new.sport;
    udp->dest = new.dport;
    h[1] = new.rtp01[1];
    __s64 addr_diff = bpf_csum_diff(old_addrs, 8, new_addrs, 8, 0);
    __s64 ttl_diff = bpf_csum_diff((__be32 *)old_ttl, 4, (__be32 *)new_ttl, 4, addr_diff);
    if (addr_diff < 0 || ttl_diff < 0 ||
        bpf_l3_csum_replace(skb, IP_OFF + offsetof(struct iphdr, check), 0, ttl_diff, 0) ||
        fix_udp(skb, UDP4_OFF + offsetof(struct udphdr, check), &old, &new, addr_diff))
        return TC_ACT_SHOT;                                 /* rewritten with a bad checksum: never deliver it */
    struct bpf_fib_lookup fib = {.family = FIB_AF_INET, .tot_len = bpf_ntohs(ip_len)};
    fib.ipv4_src = new_addrs[0];
    fib.ipv4_dst = new_addrs[1];
    return deliver(skb, &fib);
}

static __always_inline int forward6(struct __sk_buff *skb)
{
    void *data = (void *)(long)skb->data, *end = (void *)(long)skb->data_end;
    struct ipv6hdr *ip = data + IP_OFF;
    struct udphdr *udp = (void *)(ip + 1);
    __u8 *h = (void *)(udp + 1);
    struct kf_key key = {.family = 6};

    if ((void *)(h + RTCP_HDR) > end)
        return TC_ACT_UNSPEC;
    if (ip->nexthdr != IPPROTO_UDP)
        return TC_ACT_UNSPEC;
    key.port = udp->dest;
    __builtin_memcpy(key.addr, &ip->daddr, 16);
    struct kf_entry *e = bpf_map_lookup_elem(&kf_entries, &key);
    if (!e)
        return TC_ACT_UNSPEC;
    if (udp->source != e->src_port || !same16((__u8 *)&ip->saddr, e->src, 16))
        return TC_ACT_UNSPEC;
    __u32 len = bpf_ntohs(udp->len);
    if (len < sizeof(struct udphdr) || UDP6_OFF + len > skb->len)
        return TC_ACT_UNSPEC;
    len -= sizeof(struct udphdr);
    int kind = parse(skb, e, h, len, UDP6_OFF + sizeof(struct udphdr));
    if (kind == KF_UP)
        return TC_ACT_UNSPEC;
    data = (void *)(long)skb->data;
    end = (void *)(long)skb->data_end;
    ip = data + IP_OFF;
    udp = (void *)(ip + 1);
    h = (void *)(udp + 1);
    if ((void *)(h + RTCP_HDR) > end || (kind == KF_RTP && (void *)(h + RTP_HDR) > end))
        return TC_ACT_UNSPEC;
    count(e, h, len, kind, bpf_ktime_get_ns());

    __u32 old_addrs[8], new_addrs[8];
    __builtin_memcpy(old_addrs, &ip->saddr, 32);            /* saddr and daddr are adjacent */
    __builtin_memcpy(new_addrs, e->out_src, 16);
    __builtin_memcpy(&new_addrs[4], e->out_dst, 16);
    struct words old = {.sport = udp->source, .dport = udp->dest, .rtp01 = {h[0], h[1]}};
    struct words new = {.sport = e->out_sport, .dport = e->out_dport, .rtp01 = {h[0], mapped_b1(e, h, kind)}};
    __builtin_memcpy(&ip->saddr, new_addrs, 32);
    ip->hop_limit = RELAY_TTL;
    __be16 payload_len = ip->payload_len;
    udp->source = new.sport;
    udp->dest = new.dport;
    h[1] = new.rtp01[1];
    if (fix_udp(skb, UDP6_OFF + offsetof(struct udphdr, check), &old, &new,
                bpf_csum_diff(old_addrs, 32, new_addrs, 32, 0)))
        return TC_ACT_SHOT;
    struct bpf_fib_lookup fib = {.family = FIB_AF_INET6, .tot_len = bpf_ntohs(payload_len) + sizeof(struct ipv6hdr)};
    __builtin_memcpy(fib.ipv6_src, new_addrs, 16);
    __builtin_memcpy(fib.ipv6_dst, &new_addrs[4], 16);
    return deliver(skb, &fib);
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
