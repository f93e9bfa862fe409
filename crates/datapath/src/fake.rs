//! An in-memory [`DatapathMaps`]: the agent's and the chaos logic's tests drive it instead of a
//! kernel, recording traffic by hand and reading back the faults they set.
use std::collections::BTreeMap;
use std::net::IpAddr;

use crate::model::{DatapathMaps, Direction, Fault, PeerTraffic};
use crate::{DatapathError, abi};

#[derive(Debug, Default)]
pub struct FakeMaps {
    traffic: BTreeMap<(IpAddr, Direction), abi::PeerStats>,
    faults: BTreeMap<IpAddr, Fault>,
    /// Whether delay faults are accepted (the kernel one accepts them only with fq).
    pub edt: bool,
    /// The clock `set_fault` checks expiries against.
    pub now_ns: u64,
    /// When set, every call fails with a kernel error (to test the callers' error paths).
    pub failing: bool,
}

impl FakeMaps {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds traffic as the programs would count it.
    pub fn record(&mut self, peer: IpAddr, direction: Direction, packets: u64, bytes: u64, drops: u64) {
        let stats = self.traffic.entry((peer, direction)).or_default();
        stats.packets += packets;
        stats.bytes += bytes;
        stats.drops += drops;
    }

    fn check(&self) -> Result<(), DatapathError> {
        if self.failing {
            return Err(DatapathError::Kernel {
                op: "fake map access",
                detail: "failing on purpose".to_owned(),
            });
        }
        Ok(())
    }
}

impl DatapathMaps for FakeMaps {
    fn traffic(&self) -> Result<Vec<PeerTraffic>, DatapathError> {
        self.check()?;
        Ok(self
            .traffic
            .iter()
            .map(|(&(peer, direction), stats)| PeerTraffic {
                peer,
                direction,
                packets: stats.packets,
                bytes: stats.bytes,
                drops: stats.drops,
            })
            .collect())
    }

    fn set_fault(&mut self, peer: IpAddr, fault: Fault) -> Result<(), DatapathError> {
        self.check()?;
        fault.validate(self.now_ns, self.edt)?;
        // Through the map encoding, so callers read back what the kernel would hold.
        self.faults.insert(peer, Fault::from_abi(fault.to_abi()));
        Ok(())
    }

    fn clear_fault(&mut self, peer: IpAddr) -> Result<(), DatapathError> {
        self.check()?;
        self.faults.remove(&peer);
        Ok(())
    }

    fn faults(&self) -> Result<Vec<(IpAddr, Fault)>, DatapathError> {
        self.check()?;
        Ok(self.faults.iter().map(|(&peer, &fault)| (peer, fault)).collect())
    }

    fn sweep_expired(&mut self, now_ns: u64) -> Result<usize, DatapathError> {
        self.check()?;
        let before = self.faults.len();
        self.faults.retain(|_, fault| fault.expires_at_ns > now_ns);
        Ok(before - self.faults.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fake_keeps_traffic_and_sweeps_only_expired_faults() {
        let peer: IpAddr = "198.18.0.2".parse().unwrap();
        let other: IpAddr = "198.18.0.3".parse().unwrap();
        let mut maps = FakeMaps::new();
        maps.record(peer, Direction::ToPeer, 10, 1000, 2);
        maps.record(peer, Direction::ToPeer, 1, 100, 0);
        let traffic = maps.traffic().unwrap();
        assert_eq!(traffic.len(), 1);
        assert_eq!(
            (traffic[0].packets, traffic[0].bytes, traffic[0].drops),
            (11, 1100, 2)
        );

        maps.set_fault(
            peer,
            Fault {
                drop_probability: 0.3,
                ..Fault::until(100)
            },
        )
        .unwrap();
        maps.set_fault(
            other,
            Fault {
                drop_probability: 1.0,
                ..Fault::until(300)
            },
        )
        .unwrap();
        assert_eq!(maps.sweep_expired(200).unwrap(), 1);
        let left = maps.faults().unwrap();
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].0, other);
    }

    #[test]
    fn the_fake_refuses_what_the_kernel_refuses() {
        let mut maps = FakeMaps {
            now_ns: 50,
            ..FakeMaps::new()
        };
        let peer: IpAddr = "198.18.0.2".parse().unwrap();
        let expired = Fault {
            drop_probability: 0.3,
            ..Fault::until(10)
        };
        assert!(maps.set_fault(peer, expired).is_err());
        assert!(maps.faults().unwrap().is_empty());
    }
}
