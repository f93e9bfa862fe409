//! Map keys and values exactly as `ebpf/mesh_datapath.h` lays them out. The layout test below
//! pins every size and offset, so the C header and these structs cannot drift apart silently.
use std::net::{IpAddr, Ipv6Addr};

pub const DIR_INGRESS: u32 = 0;
pub const DIR_EGRESS: u32 = 1;

pub const FLAG_FAULTS: u32 = 1;
pub const FLAG_EDT: u32 = 2;

pub const FROM_PEER: u8 = 1 << DIR_INGRESS;
pub const TO_PEER: u8 = 1 << DIR_EGRESS;

pub const MAX_PORTS: usize = 4;

/// Map names in the object (the kernel keeps at most 15 characters).
pub const PEER_STATS_MAP: &str = "x0_peer_stats";
pub const FAULTS_MAP: &str = "x0_faults";
pub const CONFIG_MAP: &str = "x0_config";
pub const UNTRACKED_MAP: &str = "x0_untracked";

/// Program names: also the names of the tc filters, which is how a new agent finds the
/// filters a killed one left behind.
pub const INGRESS_PROGRAM: &str = "x0_mesh_ingress";
pub const EGRESS_PROGRAM: &str = "x0_mesh_egress";
pub const EMPTY_PROGRAM: &str = "x0_empty";

#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct PeerKey {
    pub addr: [u8; 16],
    pub direction: u32,
}

#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PeerStats {
    pub packets: u64,
    pub bytes: u64,
    pub drops: u64,
}

#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct FaultKey {
    pub addr: [u8; 16],
}

#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Fault {
    pub expires_ns: u64,
    pub drop_threshold: u32,
    pub corrupt_threshold: u32,
    pub delay_us: u32,
    pub partition: u8,
    pub directions: u8,
    pub pad: [u8; 2],
}

#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Config {
    /// Network byte order, as the programs compare them with the packet's ports.
    pub ports: [u16; MAX_PORTS],
    pub flags: u32,
}

// SAFETY: each type is #[repr(C)], made only of integers and integer arrays, with every
// padding byte spelled out as a field, so any bit pattern is a valid value and no byte of a
// value is uninitialised when aya copies it to or from a map.
#[allow(unsafe_code)]
mod pod {
    unsafe impl aya::Pod for super::PeerKey {}
    unsafe impl aya::Pod for super::PeerStats {}
    unsafe impl aya::Pod for super::FaultKey {}
    unsafe impl aya::Pod for super::Fault {}
    unsafe impl aya::Pod for super::Config {}
}

/// The map encoding of an address: IPv6 as is, IPv4 mapped (`::ffff:a.b.c.d`).
pub fn encode_addr(addr: IpAddr) -> [u8; 16] {
    match addr {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    }
}

/// The inverse of [`encode_addr`]: mapped addresses come back as IPv4.
pub fn decode_addr(addr: [u8; 16]) -> IpAddr {
    let v6 = Ipv6Addr::from(addr);
    match v6.to_ipv4_mapped() {
        Some(v4) => IpAddr::V4(v4),
        None => IpAddr::V6(v6),
    }
}

/// A probability as the programs' threshold against a random u32 (`u32::MAX`: always).
pub fn threshold(probability: f64) -> u32 {
    if probability >= 1.0 {
        u32::MAX
    } else if probability > 0.0 {
        // In (0, 2^32): the cast cannot saturate except for p within 2^-32 of 1.
        (probability * 4_294_967_296.0) as u32
    } else {
        0
    }
}

/// The probability a threshold stands for.
pub fn probability(threshold: u32) -> f64 {
    if threshold == u32::MAX {
        1.0
    } else {
        f64::from(threshold) / 4_294_967_296.0
    }
}

#[cfg(test)]
mod tests {
    use std::mem::{align_of, offset_of, size_of};

    use super::*;

    #[test]
    fn layouts_match_the_c_header() {
        assert_eq!(size_of::<PeerKey>(), 20);
        assert_eq!(align_of::<PeerKey>(), 4);
        assert_eq!(offset_of!(PeerKey, addr), 0);
        assert_eq!(offset_of!(PeerKey, direction), 16);

        assert_eq!(size_of::<PeerStats>(), 24);
        assert_eq!(offset_of!(PeerStats, packets), 0);
        assert_eq!(offset_of!(PeerStats, bytes), 8);
        assert_eq!(offset_of!(PeerStats, drops), 16);

        assert_eq!(size_of::<FaultKey>(), 16);

        assert_eq!(size_of::<Fault>(), 24);
        assert_eq!(offset_of!(Fault, expires_ns), 0);
        assert_eq!(offset_of!(Fault, drop_threshold), 8);
        assert_eq!(offset_of!(Fault, corrupt_threshold), 12);
        assert_eq!(offset_of!(Fault, delay_us), 16);
        assert_eq!(offset_of!(Fault, partition), 20);
        assert_eq!(offset_of!(Fault, directions), 21);
        assert_eq!(offset_of!(Fault, pad), 22);

        assert_eq!(size_of::<Config>(), 12);
        assert_eq!(offset_of!(Config, ports), 0);
        assert_eq!(offset_of!(Config, flags), 8);
    }

    #[test]
    fn the_header_defines_the_same_constants() {
        let header = include_str!("../../../ebpf/mesh_datapath.h");
        for (name, value) in [
            ("X0_DIR_INGRESS", DIR_INGRESS),
            ("X0_DIR_EGRESS", DIR_EGRESS),
            ("X0_FLAG_FAULTS", FLAG_FAULTS),
            ("X0_FLAG_EDT", FLAG_EDT),
            ("X0_MAX_PORTS", MAX_PORTS as u32),
        ] {
            let line = header
                .lines()
                .find(|line| line.starts_with(&format!("#define {name} ")))
                .unwrap_or_else(|| panic!("{name} missing from the header"));
            let defined = line.split_whitespace().nth(2).unwrap().trim_end_matches('u');
            assert_eq!(defined.parse::<u32>().unwrap(), value, "{name}");
        }
    }

    #[test]
    fn ipv4_addresses_are_mapped_and_come_back_as_ipv4() {
        let v4: IpAddr = "198.18.0.2".parse().unwrap();
        let encoded = encode_addr(v4);
        assert_eq!(&encoded[..12], &[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff]);
        assert_eq!(&encoded[12..], &[198, 18, 0, 2]);
        assert_eq!(decode_addr(encoded), v4);
        let v6: IpAddr = "2001:db8::1".parse().unwrap();
        assert_eq!(decode_addr(encode_addr(v6)), v6);
    }

    #[test]
    fn probabilities_round_trip_through_thresholds() {
        assert_eq!(threshold(0.0), 0);
        assert_eq!(threshold(-1.0), 0);
        assert_eq!(threshold(1.0), u32::MAX);
        assert_eq!(threshold(0.5), 1 << 31);
        assert!((probability(threshold(0.3)) - 0.3).abs() < 1e-9);
        assert_eq!(probability(u32::MAX), 1.0);
    }
}
