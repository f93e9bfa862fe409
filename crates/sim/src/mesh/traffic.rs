//! What the mesh counts: messages and bytes per agent, the wall time of router calls, and
//! mesh-wide totals per slice of simulated time.

use std::time::Duration;

use crate::stats::Histogram;

/// Messages and bytes one agent sent (frames, header included).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Traffic {
    pub hello_messages: u64,
    pub hello_bytes: u64,
    pub originator_messages: u64,
    pub originator_bytes: u64,
    /// Seqno requests (sent or passed on).
    pub request_messages: u64,
    pub request_bytes: u64,
    /// Messages handed to the router (not lost, not to a dead agent).
    pub received: u64,
}

impl Traffic {
    pub fn messages(&self) -> u64 {
        self.hello_messages + self.originator_messages + self.request_messages
    }

    pub fn bytes(&self) -> u64 {
        self.hello_bytes + self.originator_bytes + self.request_bytes
    }

    pub fn minus(&self, earlier: &Traffic) -> Traffic {
        Traffic {
            hello_messages: self.hello_messages - earlier.hello_messages,
            hello_bytes: self.hello_bytes - earlier.hello_bytes,
            originator_messages: self.originator_messages - earlier.originator_messages,
            originator_bytes: self.originator_bytes - earlier.originator_bytes,
            request_messages: self.request_messages - earlier.request_messages,
            request_bytes: self.request_bytes - earlier.request_bytes,
            received: self.received - earlier.received,
        }
    }
}

/// Wall time of each router call, by kind (nanoseconds).
#[derive(Debug, Clone, Default)]
pub struct Timings {
    pub hello: Histogram,
    /// Advertisements for which the router asked for no verification (duplicates).
    pub originator_duplicate: Histogram,
    /// Advertisements for which the router asked for a verification that the shared cache
    /// already had: the router's own work, without the signature check.
    pub originator_cached: Histogram,
    /// Advertisements verified for real inside the call: what a real agent spends on the first
    /// copy of every `(originator, seq)`.
    pub originator_verified: Histogram,
    pub tick: Histogram,
    /// `Router::originate`, including the real ML-DSA-65 signature.
    pub originate: Histogram,
    /// Decoding an advertisement's frame (outside the router, as a real agent's session
    /// does), on the sampled frames.
    pub decode_originator: Histogram,
}

/// What happened in one slice of simulated time, mesh-wide.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Slice {
    /// Advertisements sent (originated or forwarded).
    pub adverts: u64,
    /// Of which with an infinite path cost (a retraction, or poisoned reverse).
    pub infinite: u64,
    pub advert_bytes: u64,
    /// Advertisements originated (new sequence numbers).
    pub originated: u64,
    pub route_changes: u64,
    pub route_losses: u64,
}

impl Slice {
    /// The sum of `slices`.
    pub fn total<'a>(slices: impl IntoIterator<Item = &'a Slice>) -> Slice {
        slices.into_iter().fold(Slice::default(), |sum, slice| Slice {
            adverts: sum.adverts + slice.adverts,
            infinite: sum.infinite + slice.infinite,
            advert_bytes: sum.advert_bytes + slice.advert_bytes,
            originated: sum.originated + slice.originated,
            route_changes: sum.route_changes + slice.route_changes,
            route_losses: sum.route_losses + slice.route_losses,
        })
    }
}

/// The width of a [`Slice`].
pub const SLICE: Duration = Duration::from_millis(100);
