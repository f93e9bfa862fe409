//! The mesh routing state machine of one node agent, sans IO: fed with the session events,
//! hellos and advertisements its neighbours send, and the current time (a `Duration` since an
//! arbitrary epoch); it returns what to send ([`Output`]). No sockets, no clock, no crypto: the
//! signature check is a trait ([`OriginatorVerifier`]) the crypto crate implements.
//!
//! # How it routes
//!
//! - **Neighbours.** A hello to each neighbour every `hello_interval` (100 ms). A neighbour
//!   silent for `neighbour_timeout` (300 ms: three missed hellos) is dead
//!   ([`Output::NeighbourDead`]) and every route through it is withdrawn at once.
//! - **Link cost.** `256 + w_loss × loss% + w_rtt × RTT ms + w_drops × drop%`, saturating,
//!   [`INFINITY`] for a dead link. Loss: gaps in the peer's hello sequence numbers over the last
//!   64. RTT: each hello echoes the peer's last hello and how long it was held; an EWMA (1/8)
//!   of the samples. Drops: the eBPF counters ([`Router::on_link_counters`]).
//! - **Advertisements.** Each node periodically ([`Output::OriginateDue`] → [`Router::originate`])
//!   floods a signed [`x0tta6bl4_wire::Originator`]. A receiver checks, in this order: the
//!   envelope (hop limit), the dedup cache (an exact duplicate is not verified again; a
//!   different body under a verified `(originator, seq)` is an equivocation), the signature, and
//!   the replay window (64 sequence numbers per originator, after the signature).
//! - **Routes.** Distance vector over those advertisements, with Babel's feasibility condition
//!   (RFC 8966 §3.5.1): per destination a feasibility distance `(seq, metric)`, the smallest
//!   metric this node advertised for the newest seqno. A neighbour's offer is feasible if its
//!   seqno is newer, or the same with an advertised metric strictly below that distance; only
//!   feasible offers are selected, so no selection can close a loop, even during
//!   convergence. A route's metric is the envelope's `path_cost` plus our link cost to the
//!   neighbour it came from; the lowest wins. A node re-advertises (forwards the same signed
//!   bytes with its own envelope) at once when its route gets a newer seqno, and retracts it
//!   (infinite `path_cost`) at once when it has none left; under the same seqno, another next
//!   hop at no higher metric or a metric lower by more than an eighth is a *triggered
//!   update*, sent at most once per `update_gap` (1 s) per destination, so a flood's copies
//!   arriving over cheaper paths do not each become a new flood (a higher metric waits for the
//!   next seqno: heard under the same one, it could push a neighbour's route above its
//!   feasibility distance). It tells its next hop an infinite cost (poisoned
//!   reverse). The periodic advertisement refreshes; what changes is carried by triggered
//!   updates and seqno requests (below), so the originator interval can be long.
//!
//! # How long rerouting takes
//!
//! When a neighbour dies, the best remaining *feasible* route is selected in the same
//! [`Router::on_tick`] that detects it, and retractions reach the nodes behind at one link
//! latency per hop. When no feasible route is left but a neighbour still offers an unfeasible
//! one, the node sends that neighbour a **seqno request** (RFC 8966 §3.8.1.2, wire type 5):
//! whoever has an advertisement of the destination with a newer sequence number answers with
//! it, anyone else passes the request on along its selected route, and the destination itself
//! advertises afresh (as soon as its last advertisement is a hello interval old). So the time
//! from the failure to the new route is about
//!
//! `neighbour_timeout + round trip to the destination (or to a node with a newer seqno)`,
//!
//! with the defaults (300 ms timeout) about 0.3 s plus the round trip. Without requests
//! (`RouterConfig::seqno_requests` off, or a neighbour running an agent that predates them and
//! skips their frames as `unknown_type`) the node waits for the destination's next periodic
//! advertisement: at most one `originator_interval` (1 s), 1.3 s in the worst case. Requests
//! are bounded: each node sends or passes on at most one per destination and sequence number
//! per originator interval, and a destination advertises on request at most once per
//! neighbour timeout, whoever asks.
//!
//! Sequence numbers are `u64` and never wrap; a restarted agent must seed its own with
//! [`Router::set_sequence_floor`] (for example from the wall clock).
#![forbid(unsafe_code)]

mod config;
mod dedup;
pub mod healing;
mod metric;
mod router;
mod window;

pub use config::RouterConfig;
pub use metric::{BASE_LINK_COST, INFINITY, LinkCounters, LinkQuality, MetricWeights};
pub use router::{
    Candidate, DataDecision, NeighbourStatus, OriginateError, OriginatorSigner, OriginatorVerifier, Output,
    RejectReason, Route, Router, RouterCounters, SeqnoOutcome, SignError, VerifyError,
};
pub use window::REPLAY_WINDOW;
pub use x0tta6bl4_wire::NodeId;

#[cfg(test)]
mod testkit;
