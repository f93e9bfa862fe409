//! The built-in ping: a data message to a destination, answered by its agent, so tests and
//! the demo measure end-to-end reachability, round-trip time and path length across the mesh.
//! Sans IO: the payload formats and the table of pings in flight.
use std::collections::HashMap;
use std::time::Duration;

use serde::Serialize;
use tokio::sync::oneshot;

/// Flows at and above this are the agent's own; applications cannot send on them.
pub const RESERVED_FLOWS: u32 = 0xFFFF_FF00;
/// A ping request.
pub const PING_FLOW: u32 = 0xFFFF_FFF0;
/// A ping reply.
pub const PONG_FLOW: u32 = 0xFFFF_FFF1;

const REQUEST_MAGIC: &[u8; 4] = b"X0PI";
const REPLY_MAGIC: &[u8; 4] = b"X0PO";
/// Most pings in flight; older ones are forgotten first.
const MAX_IN_FLIGHT: usize = 1024;

/// Request payload: `"X0PI" | id u64 | initial ttl u8`.
pub fn encode_request(id: u64, initial_ttl: u8) -> Vec<u8> {
    let mut out = Vec::with_capacity(13);
    out.extend_from_slice(REQUEST_MAGIC);
    out.extend_from_slice(&id.to_be_bytes());
    out.push(initial_ttl);
    out
}

/// `(id, initial ttl)` of a request payload.
pub fn decode_request(payload: &[u8]) -> Option<(u64, u8)> {
    let rest = payload.strip_prefix(REQUEST_MAGIC)?;
    let (id, rest) = rest.split_first_chunk::<8>()?;
    match rest {
        [ttl] => Some((u64::from_be_bytes(*id), *ttl)),
        _ => None,
    }
}

/// What the answering agent echoes back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Echo {
    pub id: u64,
    /// TTL the request started with, and had when it arrived: the forward path length.
    pub request_initial_ttl: u8,
    pub request_arrival_ttl: u8,
    /// TTL the reply starts with (the backward path length is read on arrival).
    pub reply_initial_ttl: u8,
}

/// Reply payload: `"X0PO" | id u64 | request initial ttl u8 | request arrival ttl u8 | reply
/// initial ttl u8`.
pub fn encode_reply(echo: Echo) -> Vec<u8> {
    let mut out = Vec::with_capacity(15);
    out.extend_from_slice(REPLY_MAGIC);
    out.extend_from_slice(&echo.id.to_be_bytes());
    out.extend_from_slice(&[
        echo.request_initial_ttl,
        echo.request_arrival_ttl,
        echo.reply_initial_ttl,
    ]);
    out
}

pub fn decode_reply(payload: &[u8]) -> Option<Echo> {
    let rest = payload.strip_prefix(REPLY_MAGIC)?;
    let (id, rest) = rest.split_first_chunk::<8>()?;
    match rest {
        [request_initial_ttl, request_arrival_ttl, reply_initial_ttl] => Some(Echo {
            id: u64::from_be_bytes(*id),
            request_initial_ttl: *request_initial_ttl,
            request_arrival_ttl: *request_arrival_ttl,
            reply_initial_ttl: *reply_initial_ttl,
        }),
        _ => None,
    }
}

/// Hops a message took: every forwarder decrements the TTL once, the source does not.
pub fn hops(initial_ttl: u8, arrival_ttl: u8) -> u8 {
    initial_ttl.saturating_sub(arrival_ttl).saturating_add(1)
}

/// An answered ping.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct PingResult {
    pub rtt_ms: f64,
    pub hops_there: u8,
    pub hops_back: u8,
}

/// Why a ping got no answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PingError {
    #[error("no route to the destination")]
    NoRoute,
    #[error("no answer in time")]
    Timeout,
    #[error("the agent is shutting down")]
    ShuttingDown,
}

impl PingError {
    pub fn label(self) -> &'static str {
        match self {
            PingError::NoRoute => "no_route",
            PingError::Timeout => "timeout",
            PingError::ShuttingDown => "shutting_down",
        }
    }
}

struct InFlight {
    sent_at: Duration,
    reply: oneshot::Sender<Result<PingResult, PingError>>,
}

/// Pings sent by this agent, waiting for their reply.
#[derive(Default)]
pub struct PingTable {
    next_id: u64,
    in_flight: HashMap<u64, InFlight>,
}

impl PingTable {
    /// Registers a ping sent at `now` and returns its id.
    pub fn start(&mut self, now: Duration, reply: oneshot::Sender<Result<PingResult, PingError>>) -> u64 {
        self.forget_abandoned();
        if self.in_flight.len() >= MAX_IN_FLIGHT
            && let Some(oldest) = self.in_flight.keys().min().copied()
        {
            self.in_flight.remove(&oldest);
        }
        self.next_id = self.next_id.wrapping_add(1);
        self.in_flight
            .insert(self.next_id, InFlight { sent_at: now, reply });
        self.next_id
    }

    /// A reply arrived at `now` with `arrival_ttl`: completes its ping. `false` if unknown
    /// (late, abandoned, or not ours).
    pub fn complete(&mut self, echo: Echo, arrival_ttl: u8, now: Duration) -> Option<PingResult> {
        let in_flight = self.in_flight.remove(&echo.id)?;
        let result = PingResult {
            rtt_ms: now.saturating_sub(in_flight.sent_at).as_secs_f64() * 1000.0,
            hops_there: hops(echo.request_initial_ttl, echo.request_arrival_ttl),
            hops_back: hops(echo.reply_initial_ttl, arrival_ttl),
        };
        in_flight.reply.send(Ok(result)).ok().map(|()| result)
    }

    /// Fails a ping at once (no route).
    pub fn fail(&mut self, id: u64, error: PingError) {
        if let Some(in_flight) = self.in_flight.remove(&id) {
            let _ = in_flight.reply.send(Err(error));
        }
    }

    /// Drops pings whose caller stopped waiting (timed out).
    pub fn forget_abandoned(&mut self) {
        self.in_flight.retain(|_, in_flight| !in_flight.reply.is_closed());
    }

    pub fn len(&self) -> usize {
        self.in_flight.len()
    }

    pub fn is_empty(&self) -> bool {
        self.in_flight.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_round_trip_and_anything_else_is_not_a_ping() {
        assert_eq!(decode_request(&encode_request(7, 64)), Some((7, 64)));
        let echo = Echo {
            id: 9,
            request_initial_ttl: 64,
            request_arrival_ttl: 63,
            reply_initial_ttl: 64,
        };
        assert_eq!(decode_reply(&encode_reply(echo)), Some(echo));
        assert_eq!(decode_request(b"X0PI"), None);
        assert_eq!(decode_reply(&encode_request(7, 64)), None);
        let mut long = encode_request(7, 64);
        long.push(0);
        assert_eq!(decode_request(&long), None);
    }

    #[test]
    fn hops_count_the_forwarders_plus_one() {
        assert_eq!(hops(64, 64), 1, "direct neighbour: nobody forwarded");
        assert_eq!(hops(64, 63), 2);
        assert_eq!(hops(3, 9), 1, "a TTL that grew is nonsense: at least one hop");
    }

    #[test]
    fn a_reply_completes_its_ping_with_rtt_and_path_lengths() {
        let mut table = PingTable::default();
        let (tx, mut rx) = oneshot::channel();
        let id = table.start(Duration::from_millis(100), tx);
        let echo = Echo {
            id,
            request_initial_ttl: 64,
            request_arrival_ttl: 63,
            reply_initial_ttl: 64,
        };
        let result = table.complete(echo, 62, Duration::from_millis(103)).unwrap();
        assert!((result.rtt_ms - 3.0).abs() < 1e-9);
        assert_eq!((result.hops_there, result.hops_back), (2, 3));
        assert_eq!(rx.try_recv().unwrap(), Ok(result));
        assert!(
            table.complete(echo, 62, Duration::from_millis(104)).is_none(),
            "once"
        );
    }

    #[test]
    fn abandoned_pings_are_forgotten() {
        let mut table = PingTable::default();
        let (tx, rx) = oneshot::channel();
        table.start(Duration::ZERO, tx);
        drop(rx);
        table.forget_abandoned();
        assert_eq!(table.len(), 0);
    }
}
