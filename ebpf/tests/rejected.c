// SPDX-License-Identifier: (MIT OR GPL-2.0)
/*
 * A classifier the verifier must reject: it reads the packet without checking the length.
 * The datapath's tests load it under the real program names to check that the agent reports
 * a broken object clearly (with the verifier's words) instead of attaching half a datapath.
 */
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>

#include "mesh_datapath.h"

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, 16);
	__type(key, struct x0_peer_key);
	__type(value, struct x0_peer_stats);
} x0_peer_stats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16);
	__type(key, struct x0_fault_key);
	__type(value, struct x0_fault);
} x0_faults SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct x0_config);
} x0_config SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} x0_untracked SEC(".maps");

static __always_inline int unchecked(struct __sk_buff *skb)
{
	__u8 *data = (void *)(long)skb->data;
	return data[20] == 6 ? TC_ACT_SHOT : TC_ACT_OK;
}

SEC("classifier")
int x0_mesh_ingress(struct __sk_buff *skb)
{
	return unchecked(skb);
}

SEC("classifier")
int x0_mesh_egress(struct __sk_buff *skb)
{
	return unchecked(skb);
}

char LICENSE[] SEC("license") = "Dual MIT/GPL";
