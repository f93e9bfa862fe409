//! What the rest of the agent sees of the datapath: per-peer traffic and faults, in plain Rust
//! types, behind [`DatapathMaps`].
use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use crate::DatapathError;
use crate::abi;

/// A way traffic flows, seen from this node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Direction {
    /// Received from the peer (tc ingress).
    FromPeer,
    /// Sent to the peer (tc egress).
    ToPeer,
}

impl Direction {
    /// The Prometheus label value.
    pub fn label(self) -> &'static str {
        match self {
            Direction::FromPeer => "rx",
            Direction::ToPeer => "tx",
        }
    }

    pub(crate) fn abi(self) -> u32 {
        match self {
            Direction::FromPeer => abi::DIR_INGRESS,
            Direction::ToPeer => abi::DIR_EGRESS,
        }
    }

    pub(crate) fn from_abi(direction: u32) -> Option<Self> {
        match direction {
            abi::DIR_INGRESS => Some(Direction::FromPeer),
            abi::DIR_EGRESS => Some(Direction::ToPeer),
            _ => None,
        }
    }
}

/// A set of directions (a partition can cut one way or both).
#[derive(Clone, Copy, PartialEq, Eq, Default)]
pub struct Directions(u8);

impl Directions {
    pub const NONE: Directions = Directions(0);
    pub const FROM_PEER: Directions = Directions(abi::FROM_PEER);
    pub const TO_PEER: Directions = Directions(abi::TO_PEER);
    pub const BOTH: Directions = Directions(abi::FROM_PEER | abi::TO_PEER);

    pub fn contains(self, direction: Direction) -> bool {
        self.0 & (1 << direction.abi()) != 0
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub(crate) fn bits(self) -> u8 {
        self.0
    }

    pub(crate) fn from_bits(bits: u8) -> Self {
        Directions(bits & (abi::FROM_PEER | abi::TO_PEER))
    }
}

impl fmt::Debug for Directions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match *self {
            Directions::NONE => "none",
            Directions::FROM_PEER => "from-peer",
            Directions::TO_PEER => "to-peer",
            _ => "both",
        })
    }
}

impl std::str::FromStr for Directions {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "none" => Ok(Directions::NONE),
            "from-peer" | "ingress" | "rx" => Ok(Directions::FROM_PEER),
            "to-peer" | "egress" | "tx" => Ok(Directions::TO_PEER),
            "both" => Ok(Directions::BOTH),
            other => Err(format!(
                "{other:?} is not a direction: none, from-peer, to-peer or both"
            )),
        }
    }
}

/// Cumulative mesh traffic of one peer in one direction (summed over CPUs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerTraffic {
    pub peer: IpAddr,
    pub direction: Direction,
    /// Packets that passed.
    pub packets: u64,
    pub bytes: u64,
    /// Packets the datapath dropped (faults).
    pub drops: u64,
}

/// One peer's traffic both ways: what the routing's link metric consumes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PeerTotals {
    pub tx_packets: u64,
    pub rx_packets: u64,
    pub tx_bytes: u64,
    pub rx_bytes: u64,
    pub drops: u64,
}

/// Folds per-direction readings into one total per peer.
pub fn totals_by_peer(traffic: &[PeerTraffic]) -> BTreeMap<IpAddr, PeerTotals> {
    let mut totals: BTreeMap<IpAddr, PeerTotals> = BTreeMap::new();
    for reading in traffic {
        let total = totals.entry(reading.peer).or_default();
        match reading.direction {
            Direction::ToPeer => {
                total.tx_packets = total.tx_packets.saturating_add(reading.packets);
                total.tx_bytes = total.tx_bytes.saturating_add(reading.bytes);
            }
            Direction::FromPeer => {
                total.rx_packets = total.rx_packets.saturating_add(reading.packets);
                total.rx_bytes = total.rx_bytes.saturating_add(reading.bytes);
            }
        }
        total.drops = total.drops.saturating_add(reading.drops);
    }
    totals
}

/// A fault on one peer's mesh traffic, until `expires_at_ns` (CLOCK_MONOTONIC; the programs
/// compare it with the coarse reading of the same clock, so a fault may outlive its expiry by
/// up to one scheduler tick).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Fault {
    /// Probability of dropping each packet, in [0, 1].
    pub drop_probability: f64,
    /// Probability of flipping a payload bit of each packet that is not dropped, in [0, 1].
    pub corrupt_probability: f64,
    /// Extra delay of packets sent to the peer (needs fq: see [`DatapathError::DelayUnsupported`]).
    pub delay: Duration,
    /// Ways in which every packet is dropped.
    pub partition: Directions,
    /// Ways in which loss, corruption and delay apply.
    pub directions: Directions,
    pub expires_at_ns: u64,
}

impl Fault {
    /// No effect yet, expiring at `expires_at_ns`: fill in the effects wanted.
    pub fn until(expires_at_ns: u64) -> Self {
        Fault {
            drop_probability: 0.0,
            corrupt_probability: 0.0,
            delay: Duration::ZERO,
            partition: Directions::NONE,
            directions: Directions::BOTH,
            expires_at_ns,
        }
    }

    /// The checks both implementations make, so the fake refuses what the kernel would.
    pub fn validate(&self, now_ns: u64, edt: bool) -> Result<(), DatapathError> {
        let invalid = |what: String| Err(DatapathError::InvalidFault(what));
        for (name, p) in [
            ("drop", self.drop_probability),
            ("corruption", self.corrupt_probability),
        ] {
            if !(0.0..=1.0).contains(&p) {
                return invalid(format!("{name} probability {p} is outside [0, 1]"));
            }
        }
        if u32::try_from(self.delay.as_micros()).is_err() {
            return invalid(format!("delay {:?} is too long", self.delay));
        }
        if self.expires_at_ns <= now_ns {
            return invalid("it has already expired".to_owned());
        }
        let effects = self.drop_probability > 0.0 || self.corrupt_probability > 0.0 || !self.delay.is_zero();
        let applies = effects && !self.directions.is_empty();
        if self.partition.is_empty() && !applies {
            return invalid(
                "it has no effect (no partition, and no loss, corruption or delay in any direction)"
                    .to_owned(),
            );
        }
        if !self.delay.is_zero() && !edt {
            return Err(DatapathError::DelayUnsupported);
        }
        Ok(())
    }

    pub(crate) fn to_abi(self) -> abi::Fault {
        abi::Fault {
            expires_ns: self.expires_at_ns,
            drop_threshold: abi::threshold(self.drop_probability),
            corrupt_threshold: abi::threshold(self.corrupt_probability),
            delay_us: u32::try_from(self.delay.as_micros()).unwrap_or(u32::MAX),
            partition: self.partition.bits(),
            directions: self.directions.bits(),
            pad: [0; 2],
        }
    }

    pub(crate) fn from_abi(fault: abi::Fault) -> Self {
        Fault {
            drop_probability: abi::probability(fault.drop_threshold),
            corrupt_probability: abi::probability(fault.corrupt_threshold),
            delay: Duration::from_micros(u64::from(fault.delay_us)),
            partition: Directions::from_bits(fault.partition),
            directions: Directions::from_bits(fault.directions),
            expires_at_ns: fault.expires_ns,
        }
    }
}

/// The datapath's maps, as the agent uses them.
pub trait DatapathMaps {
    /// Every peer's cumulative mesh traffic per direction.
    fn traffic(&self) -> Result<Vec<PeerTraffic>, DatapathError>;
    /// Sets (or replaces) the fault on `peer`'s mesh traffic.
    fn set_fault(&mut self, peer: IpAddr, fault: Fault) -> Result<(), DatapathError>;
    /// Removes the fault on `peer`, if any.
    fn clear_fault(&mut self, peer: IpAddr) -> Result<(), DatapathError>;
    /// The faults in the map, expired ones included until [`DatapathMaps::sweep_expired`].
    fn faults(&self) -> Result<Vec<(IpAddr, Fault)>, DatapathError>;
    /// Removes faults that expired by `now_ns` (the programs already ignore them: this only
    /// frees their slots); returns how many went.
    fn sweep_expired(&mut self, now_ns: u64) -> Result<usize, DatapathError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mk_loss(p: f64) -> Fault {
        Fault {
            drop_probability: p,
            ..Fault::until(2_000)
        }
    }

    #[test]
    fn a_fault_round_trips_through_the_map_encoding() {
        let fault = Fault {
            corrupt_probability: 0.25,
            delay: Duration::from_millis(5),
            partition: Directions::FROM_PEER,
            directions: Directions::TO_PEER,
            ..mk_loss(0.5)
        };
        assert_eq!(Fault::from_abi(fault.to_abi()), fault);
    }

    #[test]
    fn faults_outside_their_ranges_are_refused() {
        assert!(matches!(
            mk_loss(1.5).validate(1_000, false),
            Err(DatapathError::InvalidFault(_))
        ));
        assert!(matches!(
            mk_loss(0.3).validate(2_000, false),
            Err(DatapathError::InvalidFault(_))
        ));
        assert!(matches!(
            mk_loss(0.0).validate(1_000, false),
            Err(DatapathError::InvalidFault(_))
        ));
        let no_direction = Fault {
            directions: Directions::NONE,
            ..mk_loss(0.3)
        };
        assert!(no_direction.validate(1_000, false).is_err());
        assert!(mk_loss(0.3).validate(1_000, false).is_ok());
    }

    #[test]
    fn delay_is_refused_without_earliest_departure_time() {
        let delayed = Fault {
            delay: Duration::from_millis(10),
            ..Fault::until(2_000)
        };
        assert!(matches!(
            delayed.validate(1_000, false),
            Err(DatapathError::DelayUnsupported)
        ));
        assert!(delayed.validate(1_000, true).is_ok());
    }

    #[test]
    fn totals_fold_both_directions_and_all_drops_per_peer() {
        let peer: IpAddr = "198.18.0.2".parse().unwrap();
        let other: IpAddr = "198.18.0.3".parse().unwrap();
        let traffic = [
            PeerTraffic {
                peer,
                direction: Direction::ToPeer,
                packets: 7,
                bytes: 700,
                drops: 3,
            },
            PeerTraffic {
                peer,
                direction: Direction::FromPeer,
                packets: 5,
                bytes: 500,
                drops: 1,
            },
            PeerTraffic {
                peer: other,
                direction: Direction::FromPeer,
                packets: 1,
                bytes: 60,
                drops: 0,
            },
        ];
        let totals = totals_by_peer(&traffic);
        assert_eq!(
            totals[&peer],
            PeerTotals {
                tx_packets: 7,
                rx_packets: 5,
                tx_bytes: 700,
                rx_bytes: 500,
                drops: 4
            }
        );
        assert_eq!(totals[&other].rx_packets, 1);
    }

    #[test]
    fn directions_parse_from_their_names() {
        assert_eq!("both".parse::<Directions>().unwrap(), Directions::BOTH);
        assert_eq!("to-peer".parse::<Directions>().unwrap(), Directions::TO_PEER);
        assert!("sideways".parse::<Directions>().is_err());
    }
}
