/* SPDX-License-Identifier: (MIT OR GPL-2.0) */
/*
 * Map key and value layouts shared with the agent. crates/datapath/src/abi.rs mirrors every
 * struct with #[repr(C)] and a unit test pins sizes and offsets, so a change here that is not
 * made there too fails the build's tests instead of corrupting map reads.
 */
#ifndef X0_MESH_DATAPATH_H
#define X0_MESH_DATAPATH_H

#include <linux/types.h>

/* Traffic direction as seen from this node: received from the peer, or sent to it. */
#define X0_DIR_INGRESS 0
#define X0_DIR_EGRESS 1

/* Bits of x0_config.flags. */
/* Set by the agent while the fault map may hold entries: lets packets skip its lookup. */
#define X0_FLAG_FAULTS 1u
/* Set by the agent when the interface's root qdisc is fq, which honours skb->tstamp (EDT). */
#define X0_FLAG_EDT 2u

/* Bits of x0_fault.partition and x0_fault.directions: 1 << X0_DIR_*. */
#define X0_FROM_PEER (1u << X0_DIR_INGRESS)
#define X0_TO_PEER (1u << X0_DIR_EGRESS)

#define X0_MAX_PORTS 4

/* Peer address: IPv6, or IPv4 mapped into IPv6 (::ffff:a.b.c.d), so one key fits both. */
struct x0_peer_key {
	__u8 addr[16];
	__u32 direction; /* X0_DIR_* */
};

/* One CPU's share of a peer's traffic in one direction (BPF_MAP_TYPE_PERCPU_HASH value). */
struct x0_peer_stats {
	__u64 packets; /* mesh packets passed */
	__u64 bytes;   /* their length at the tc hook (L2 header included) */
	__u64 drops;   /* mesh packets this program dropped (faults) */
};

/* Key of the fault map: the peer address alone (same encoding as x0_peer_key.addr). */
struct x0_fault_key {
	__u8 addr[16];
};

/*
 * A fault on the mesh traffic of one peer. Probabilities are thresholds against
 * bpf_get_prandom_u32(): p * 2^32, with 0xffffffff meaning "every packet".
 */
struct x0_fault {
	__u64 expires_ns;        /* CLOCK_MONOTONIC ns; ignored from then on (coarse clock) */
	__u32 drop_threshold;    /* random loss */
	__u32 corrupt_threshold; /* flip one payload bit */
	__u32 delay_us;          /* egress only, and only with X0_FLAG_EDT */
	__u8 partition;          /* X0_FROM_PEER | X0_TO_PEER: drop everything that way */
	__u8 directions;         /* which ways loss, corruption and delay apply */
	__u8 pad[2];
};

/* The single entry of the config array. */
struct x0_config {
	__u16 ports[X0_MAX_PORTS]; /* mesh ports in network byte order; 0 = unused slot */
	__u32 flags;               /* X0_FLAG_* */
};

#endif
