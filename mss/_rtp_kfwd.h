/* The relay's side of the kernel fast path: the map of mss/bpf/kfwd.h through the bpf() system call.
 *
 * Only map operations on an fd the loader (mss/_kfwd.py, through libbpf) hands over: the relay
 * needs no libbpf to build, and each verb is one system call. Every function returns 0 or an errno.
 */
#ifndef MSS_RTP_KFWD_H
#define MSS_RTP_KFWD_H

#include <errno.h>
#include <stdint.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <linux/bpf.h>

#include "bpf/kfwd.h"

typedef struct kf_key kf_key;
typedef struct kf_entry kf_entry;

static inline int kf_sys(int cmd, union bpf_attr *attr)
{
    return syscall(__NR_bpf, cmd, attr, sizeof(*attr)) < 0 ? errno : 0;
}

/* Insert or replace the entry of key. */
static inline int kf_put(int fd, const kf_key *key, const kf_entry *value)
{
    union bpf_attr a;
    memset(&a, 0, sizeof(a));
    a.map_fd = fd;
    a.key = (uint64_t)(uintptr_t)key;
    a.value = (uint64_t)(uintptr_t)value;
    a.flags = BPF_ANY;
    return kf_sys(BPF_MAP_UPDATE_ELEM, &a);
}

/* Remove the entry of key, copying its last value out (one step: no packet counted in between). */
static inline int kf_take(int fd, const kf_key *key, kf_entry *value)
{
    union bpf_attr a;
    memset(&a, 0, sizeof(a));
    a.map_fd = fd;
    a.key = (uint64_t)(uintptr_t)key;
    a.value = (uint64_t)(uintptr_t)value;
    return kf_sys(BPF_MAP_LOOKUP_AND_DELETE_ELEM, &a);
}

/* Copy the entry of key out. */
static inline int kf_get(int fd, const kf_key *key, kf_entry *value)
{
    union bpf_attr a;
    memset(&a, 0, sizeof(a));
    a.map_fd = fd;
    a.key = (uint64_t)(uintptr_t)key;
    a.value = (uint64_t)(uintptr_t)value;
    return kf_sys(BPF_MAP_LOOKUP_ELEM, &a);
}

/* Up to *count entries from where *token says (start: has_token 0); *count becomes how many came.
 * ENOENT: that was the last of them (the entries that came are valid). */
static inline int kf_batch(int fd, int has_token, uint32_t *token, kf_key *keys, kf_entry *values,
                           uint32_t *count)
{
    union bpf_attr a;
    int err;
    memset(&a, 0, sizeof(a));
    a.batch.map_fd = fd;
    a.batch.in_batch = has_token ? (uint64_t)(uintptr_t)token : 0;
    a.batch.out_batch = (uint64_t)(uintptr_t)token;
    a.batch.keys = (uint64_t)(uintptr_t)keys;
    a.batch.values = (uint64_t)(uintptr_t)values;
    a.batch.count = *count;
    err = kf_sys(BPF_MAP_LOOKUP_BATCH, &a);
    *count = (err == 0 || err == ENOENT) ? a.batch.count : 0;
    return err;
}

#endif
