// SPDX-License-Identifier: (MIT OR GPL-2.0)
/*
 * The mesh datapath: tc (clsact) classifiers on the interface that carries the mesh traffic.
 * They count each peer's mesh packets per direction and apply the faults the agent (or, later,
 * a chaos experiment) put in the fault map. Only packets whose TCP/UDP source or destination
 * port is one of the configured mesh ports are looked at further: everything else on a
 * host-network node passes untouched, at the cost of the header parse.
 *
 * Built by crates/datapath/build.rs with Debian's clang: -target bpf -O2 -g (BTF).
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "mesh_datapath.h"

/* Enough for every peer of a large mesh in both directions; a full map is counted below. */
#define X0_MAX_PEER_KEYS 8192
#define X0_MAX_FAULTS 1024

#define X0_IP_OFFSET_MASK 0x1fff
#define X0_TCP_HEADER_MIN 20
#define X0_UDP_HEADER 8

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, X0_MAX_PEER_KEYS);
	__type(key, struct x0_peer_key);
	__type(value, struct x0_peer_stats);
} x0_peer_stats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, X0_MAX_FAULTS);
	__type(key, struct x0_fault_key);
	__type(value, struct x0_fault);
} x0_faults SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct x0_config);
} x0_config SEC(".maps");

/* Mesh packets that could not be counted because x0_peer_stats was full. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} x0_untracked SEC(".maps");

static __always_inline int is_mesh_port(const struct x0_config *cfg, __u16 sport, __u16 dport)
{
#pragma unroll
	for (int i = 0; i < X0_MAX_PORTS; i++) {
		__u16 port = cfg->ports[i];
		if (port && (port == sport || port == dport))
			return 1;
	}
	return 0;
}

static __always_inline int chance(__u32 threshold)
{
	/* 0xffffffff is "always": the strict comparison alone would let 1 in 2^32 through. */
	return threshold == 0xffffffff || (threshold && bpf_get_prandom_u32() < threshold);
}

/*
 * Flips the lowest bit of the packet's last byte, and only when that byte is payload: a
 * corrupted header would turn the fault into a routing or parsing failure instead. Checksums
 * are left as they are, as a faulty link would: a receiver that verifies them drops the
 * packet, one that trusts an offloaded checksum (veth) hands it to TLS, whose record MAC fails.
 */
static __always_inline void corrupt_payload(struct __sk_buff *skb, __u32 l4_off, __u8 proto)
{
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	__u32 header = X0_UDP_HEADER;
	if (proto == IPPROTO_TCP) {
		__u8 *l4 = data + l4_off;
		if ((void *)(l4 + X0_TCP_HEADER_MIN) > end)
			return;
		header = (l4[12] >> 4) * 4;
	}
	if (skb->len <= l4_off + header)
		return;
	__u8 last;
	if (bpf_skb_load_bytes(skb, skb->len - 1, &last, 1))
		return;
	last ^= 1;
	bpf_skb_store_bytes(skb, skb->len - 1, &last, 1, 0);
}

static __always_inline int classify(struct __sk_buff *skb, __u32 direction)
{
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	if ((void *)(eth + 1) > end)
		return TC_ACT_OK;

	struct x0_peer_key key = {.direction = direction};
	__u32 l4_off;
	__u8 proto;
	if (eth->h_proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip = (void *)(eth + 1);
		if ((void *)(ip + 1) > end)
			return TC_ACT_OK;
		/* Later fragments carry no ports: they cannot be told apart from other traffic. */
		if (ip->frag_off & bpf_htons(X0_IP_OFFSET_MASK))
			return TC_ACT_OK;
		proto = ip->protocol;
		l4_off = sizeof(*eth) + ip->ihl * 4;
		__u32 peer = direction == X0_DIR_EGRESS ? ip->daddr : ip->saddr;
		key.addr[10] = 0xff;
		key.addr[11] = 0xff;
		__builtin_memcpy(&key.addr[12], &peer, 4);
	} else if (eth->h_proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = (void *)(eth + 1);
		if ((void *)(ip6 + 1) > end)
			return TC_ACT_OK;
		/* Extension headers are not walked: the mesh sends none. */
		proto = ip6->nexthdr;
		l4_off = sizeof(*eth) + sizeof(*ip6);
		if (direction == X0_DIR_EGRESS)
			__builtin_memcpy(key.addr, &ip6->daddr, 16);
		else
			__builtin_memcpy(key.addr, &ip6->saddr, 16);
	} else {
		return TC_ACT_OK;
	}
	if (proto != IPPROTO_TCP && proto != IPPROTO_UDP)
		return TC_ACT_OK;
	/* TCP and UDP both start with the source and destination ports. */
	__u16 *ports = data + l4_off;
	if ((void *)(ports + 2) > end)
		return TC_ACT_OK;

	__u32 zero = 0;
	struct x0_config *cfg = bpf_map_lookup_elem(&x0_config, &zero);
	if (!cfg || !is_mesh_port(cfg, ports[0], ports[1]))
		return TC_ACT_OK;

	int drop = 0;
	if (cfg->flags & X0_FLAG_FAULTS) {
		struct x0_fault *fault = bpf_map_lookup_elem(&x0_faults, key.addr);
		/*
		 * The expiry is checked here, not by the agent, so a fault ends on time even when
		 * the agent and the operator are both gone. Expired entries are left for the agent
		 * to remove: deleting here could race with the agent replacing the same key.
		 * The coarse clock (CLOCK_MONOTONIC_COARSE: the same timeline, a tick's
		 * resolution) costs a fraction of the precise one, and a fault ending a few
		 * milliseconds late does not matter.
		 */
		if (fault && bpf_ktime_get_coarse_ns() < fault->expires_ns) {
			__u8 bit = 1u << direction;
			if (fault->partition & bit) {
				drop = 1;
			} else if (fault->directions & bit) {
				if (chance(fault->drop_threshold)) {
					drop = 1;
				} else {
					if (chance(fault->corrupt_threshold))
						corrupt_payload(skb, l4_off, proto);
					/* Earliest departure time: fq holds the packet until then. */
					if (direction == X0_DIR_EGRESS && fault->delay_us &&
					    (cfg->flags & X0_FLAG_EDT)) {
						__u64 at = bpf_ktime_get_ns() + (__u64)fault->delay_us * 1000;
						if (skb->tstamp < at)
							skb->tstamp = at;
					}
				}
			}
		}
	}

	struct x0_peer_stats *stats = bpf_map_lookup_elem(&x0_peer_stats, &key);
	if (!stats) {
		struct x0_peer_stats fresh = {};
		bpf_map_update_elem(&x0_peer_stats, &key, &fresh, BPF_NOEXIST);
		stats = bpf_map_lookup_elem(&x0_peer_stats, &key);
	}
	if (stats) {
		/* Per-CPU values: no other CPU writes this slot, so no atomics are needed. */
		if (drop) {
			stats->drops += 1;
		} else {
			stats->packets += 1;
			stats->bytes += skb->len;
		}
	} else {
		__u64 *untracked = bpf_map_lookup_elem(&x0_untracked, &zero);
		if (untracked)
			*untracked += 1;
	}
	return drop ? TC_ACT_SHOT : TC_ACT_OK;
}

SEC("classifier")
int x0_mesh_ingress(struct __sk_buff *skb)
{
	return classify(skb, X0_DIR_INGRESS);
}

SEC("classifier")
int x0_mesh_egress(struct __sk_buff *skb)
{
	return classify(skb, X0_DIR_EGRESS);
}

/* The benchmark's baseline: what running any classifier at all costs. */
SEC("classifier")
int x0_empty(struct __sk_buff *skb)
{
	return TC_ACT_OK;
}

char LICENSE[] SEC("license") = "Dual MIT/GPL";
