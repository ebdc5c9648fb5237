// XDP fast path for the firewall's deny rules, compiled and loaded with bcc in a child process
// (ebpf/compile.py), driven from the controller through libbpf (ebpf/xdp.py).
//
// Every lookup is one longest-prefix match in an LPM trie, so the cost per packet does not grow
// with the number of rules:
//   blocked4/6  source prefix                      -> rule id   (blocked_ips, "deny any from")
//   ports4/6    protocol | port | source prefix    -> rule id   (tcp/udp ports, icmp types)
//   protos4/6   protocol | source prefix           -> rule id   (a protocol, any port)
// A hit is dropped and counted in a per-CPU slot of `counters` indexed by the rule id (the rule's
// OpenFlow priority). Anything else, and anything this parser is not sure of, passes untouched.
// Rules change by map updates only; the program is never reloaded for them.

#include <uapi/linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>

#define MAX_ENTRIES 65536
#define IP_FRAGMENT_OFFSET 0x1FFF

struct vlan_hdr {
    __be16 tci;
    __be16 proto;
};

struct blocked4_key { u32 prefixlen; u8 addr[4]; };
struct blocked6_key { u32 prefixlen; u8 addr[16]; };
struct ports4_key { u32 prefixlen; u8 data[8]; };    // proto, port (2), source (4)
struct ports6_key { u32 prefixlen; u8 data[20]; };   // proto, port (2), source (16)
struct protos4_key { u32 prefixlen; u8 data[8]; };   // proto, source (4)
struct protos6_key { u32 prefixlen; u8 data[20]; };  // proto, source (16)
struct counter { u64 packets; u64 bytes; };

// The maps live in bpffs under PIN_DIR, where the controller opens them (ebpf/compile.py sets
// it); maps already pinned there are reused, so scripts/xdp_fw.py keeps its rules.
#ifndef PIN_DIR
#error "PIN_DIR (a bpffs directory) must be defined: the maps are pinned there"
#endif
#define TRIE(name, key) \
    BPF_TABLE_PINNED("lpm_trie", key, u32, name, MAX_ENTRIES, PIN_DIR "/" #name, BPF_F_NO_PREALLOC)
BPF_TABLE_PINNED("percpu_array", u32, struct counter, counters, MAX_ENTRIES, PIN_DIR "/counters");

TRIE(blocked4, struct blocked4_key);
TRIE(blocked6, struct blocked6_key);
TRIE(ports4, struct ports4_key);
TRIE(ports6, struct ports6_key);
TRIE(protos4, struct protos4_key);
TRIE(protos6, struct protos6_key);

static __always_inline int drop(u32 rule, u64 len) {
    struct counter *c = counters.lookup(&rule);
    if (c) {
        c->packets += 1;
        c->bytes += len;
    }
    return XDP_DROP;
}

// The port that rules match: the destination port of TCP/UDP, the type of ICMP; -1 if none.
static __always_inline int l4_port(u8 proto, void *l4, void *end) {
    if (proto == IPPROTO_TCP || proto == IPPROTO_UDP) {
        if (l4 + 4 > end)
            return -1;
        return ((u8 *)l4)[2] << 8 | ((u8 *)l4)[3];
    }
    if (proto == IPPROTO_ICMP || proto == IPPROTO_ICMPV6) {
        if (l4 + 1 > end)
            return -1;
        return ((u8 *)l4)[0];
    }
    return -1;
}

static __always_inline int ipv4(void *cur, void *end, u64 len) {
    struct iphdr *ip = cur;
    if ((void *)(ip + 1) > end)
        return XDP_PASS;
    u32 ihl = ip->ihl * 4;
    if (ihl < sizeof(*ip) || ihl > 60)
        return XDP_PASS;

    struct blocked4_key b = {.prefixlen = 32};
    __builtin_memcpy(b.addr, &ip->saddr, 4);
    u32 *rule = blocked4.lookup(&b);
    if (rule)
        return drop(*rule, len);

    u8 proto = ip->protocol;
    if (!(ip->frag_off & bpf_htons(IP_FRAGMENT_OFFSET))) {  // later fragments carry no ports
        int port = l4_port(proto, cur + ihl, end);
        if (port >= 0) {
            struct ports4_key k = {.prefixlen = 56};
            k.data[0] = proto;
            k.data[1] = port >> 8;
            k.data[2] = port & 0xff;
            __builtin_memcpy(&k.data[3], &ip->saddr, 4);
            rule = ports4.lookup(&k);
            if (rule)
                return drop(*rule, len);
        }
    }
    struct protos4_key p = {.prefixlen = 40};
    p.data[0] = proto;
    __builtin_memcpy(&p.data[1], &ip->saddr, 4);
    rule = protos4.lookup(&p);
    if (rule)
        return drop(*rule, len);
    return XDP_PASS;
}

static __always_inline int ipv6(void *cur, void *end, u64 len) {
    struct ipv6hdr *ip6 = cur;
    if ((void *)(ip6 + 1) > end)
        return XDP_PASS;

    struct blocked6_key b = {.prefixlen = 128};
    __builtin_memcpy(b.addr, &ip6->saddr, 16);
    u32 *rule = blocked6.lookup(&b);
    if (rule)
        return drop(*rule, len);

    u8 proto = ip6->nexthdr;  // extension headers are not walked: such packets meet only
    int port = l4_port(proto, (void *)(ip6 + 1), end);  // the blocked and protocol tries
    if (port >= 0) {
        struct ports6_key k = {.prefixlen = 152};
        k.data[0] = proto;
        k.data[1] = port >> 8;
        k.data[2] = port & 0xff;
        __builtin_memcpy(&k.data[3], &ip6->saddr, 16);
        rule = ports6.lookup(&k);
        if (rule)
            return drop(*rule, len);
    }
    struct protos6_key p = {.prefixlen = 136};
    p.data[0] = proto;
    __builtin_memcpy(&p.data[1], &ip6->saddr, 16);
    rule = protos6.lookup(&p);
    if (rule)
        return drop(*rule, len);
    return XDP_PASS;
}

int xdp_firewall(struct xdp_md *ctx) {
    void *data = (void *)(long)ctx->data;
    void *end = (void *)(long)ctx->data_end;
    struct ethhdr *eth = data;
    if ((void *)(eth + 1) > end)
        return XDP_PASS;
    u64 len = end - data;
    u16 proto = eth->h_proto;
    void *cur = eth + 1;
#pragma unroll
    for (int i = 0; i < 2; i++) {  // up to two VLAN tags (802.1Q, 802.1ad)
        if (proto == bpf_htons(ETH_P_8021Q) || proto == bpf_htons(ETH_P_8021AD)) {
            struct vlan_hdr *vlan = cur;
            if ((void *)(vlan + 1) > end)
                return XDP_PASS;
            proto = vlan->proto;
            cur = vlan + 1;
        }
    }
    if (proto == bpf_htons(ETH_P_IP))
        return ipv4(cur, end, len);
    if (proto == bpf_htons(ETH_P_IPV6))
        return ipv6(cur, end, len);
    return XDP_PASS;
}

// The limit the benchmark compares against: drop everything, counting into slot 0.
int xdp_drop_all(struct xdp_md *ctx) {
    return drop(0, (long)ctx->data_end - (long)ctx->data);
}
