//! Runs the classifiers on crafted packets with the kernel's BPF_PROG_TEST_RUN, without
//! attaching them anywhere: the benchmark (per-packet cost against the empty classifier, in
//! the same rounds) and the kernel tests of the programs' decisions both use it.
use std::net::IpAddr;

use crate::DatapathError;
use crate::abi;
use crate::kernel::{KernelMaps, Loaded};
use crate::model::DatapathMaps;

/// tc verdicts the programs return.
pub const TC_ACT_OK: u32 = 0;
pub const TC_ACT_SHOT: u32 = 2;

/// The datapath object loaded (maps and the three programs), nothing attached.
pub struct TestBed {
    loaded: Loaded,
}

impl TestBed {
    /// Loads the embedded object with `ports` as the mesh ports.
    pub fn load(ports: &[u16]) -> Result<Self, DatapathError> {
        let programs = [abi::INGRESS_PROGRAM, abi::EGRESS_PROGRAM, abi::EMPTY_PROGRAM];
        Ok(TestBed {
            loaded: Loaded::load(crate::object(), ports, false, &programs)?,
        })
    }

    /// The maps the programs use.
    pub fn maps(&mut self) -> &mut impl DatapathMaps {
        &mut self.loaded.maps
    }

    /// Runs `program` `repeat` times on `packet`: its verdict and the kernel's mean time per
    /// run, in nanoseconds.
    pub fn run(&self, program: &str, packet: &[u8], repeat: u32) -> Result<(u32, u32), DatapathError> {
        test_run(self.loaded.program_fd(program)?, packet, repeat)
    }

    /// Runs `program` once on `packet`: its verdict and the packet as the program left it.
    pub fn run_once(&self, program: &str, packet: &[u8]) -> Result<(u32, Vec<u8>), DatapathError> {
        let mut out = vec![0u8; packet.len() + 256];
        let (verdict, _, size) = test_run_into(self.loaded.program_fd(program)?, packet, 1, &mut out)?;
        out.truncate(size);
        Ok((verdict, out))
    }

    pub(crate) fn kernel_maps(&mut self) -> &mut KernelMaps {
        &mut self.loaded.maps
    }
}

/// `union bpf_attr`'s member for BPF_PROG_TEST_RUN, as in linux/bpf.h.
#[repr(C)]
#[derive(Default)]
struct TestRunAttr {
    prog_fd: u32,
    retval: u32,
    data_size_in: u32,
    data_size_out: u32,
    data_in: u64,
    data_out: u64,
    repeat: u32,
    duration: u32,
    ctx_size_in: u32,
    ctx_size_out: u32,
    ctx_in: u64,
    ctx_out: u64,
    flags: u32,
    cpu: u32,
    batch_size: u32,
    pad: u32,
}

const BPF_PROG_TEST_RUN: libc::c_long = 10;

fn test_run(fd: std::os::fd::RawFd, packet: &[u8], repeat: u32) -> Result<(u32, u32), DatapathError> {
    let (verdict, ns, _) = test_run_into(fd, packet, repeat, &mut [])?;
    Ok((verdict, ns))
}

/// BPF_PROG_TEST_RUN: verdict, mean ns per run, and the output packet's size (copied into
/// `out` when it is not empty).
fn test_run_into(
    fd: std::os::fd::RawFd,
    packet: &[u8],
    repeat: u32,
    out: &mut [u8],
) -> Result<(u32, u32, usize), DatapathError> {
    let mut attr = TestRunAttr {
        prog_fd: u32::try_from(fd).map_err(|_| DatapathError::Kernel {
            op: "BPF_PROG_TEST_RUN",
            detail: "negative program fd".to_owned(),
        })?,
        data_size_in: u32::try_from(packet.len()).unwrap_or(u32::MAX),
        data_in: packet.as_ptr() as u64,
        data_size_out: u32::try_from(out.len()).unwrap_or(u32::MAX),
        data_out: if out.is_empty() {
            0
        } else {
            out.as_mut_ptr() as u64
        },
        repeat,
        ..TestRunAttr::default()
    };
    // SAFETY: `attr` is a valid, fully initialised BPF_PROG_TEST_RUN attribute of the size we
    // pass; `data_in` points at `packet`, which outlives the call and which the kernel only
    // reads; the kernel writes at most `data_size_out` bytes to `data_out`, which is `out`
    // (or null with size 0), borrowed mutably for the call.
    #[allow(unsafe_code)]
    let result = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_TEST_RUN,
            &mut attr as *mut TestRunAttr,
            std::mem::size_of::<TestRunAttr>(),
        )
    };
    if result < 0 {
        let error = std::io::Error::last_os_error();
        return Err(DatapathError::from_kernel("BPF_PROG_TEST_RUN", &error));
    }
    Ok((
        attr.retval,
        attr.duration,
        (attr.data_size_out as usize).min(out.len()),
    ))
}

/// Crafted frames (Ethernet + IP + TCP/UDP), for the test runs.
pub mod packets {
    use std::net::IpAddr;

    const ETH_P_IP: u16 = 0x0800;
    const ETH_P_IPV6: u16 = 0x86dd;
    pub const TCP: u8 = 6;
    pub const UDP: u8 = 17;

    /// A frame from `src:sport` to `dst:dport` with `payload` bytes of payload. Checksums are
    /// left zero: the classifiers never look at them.
    pub fn frame(proto: u8, src: IpAddr, sport: u16, dst: IpAddr, dport: u16, payload: usize) -> Vec<u8> {
        let l4_len = if proto == TCP { 20 } else { 8 } + payload;
        let mut frame = vec![0x02, 0, 0, 0, 0, 0x02, 0x02, 0, 0, 0, 0, 0x01];
        match (src, dst) {
            (IpAddr::V4(src), IpAddr::V4(dst)) => {
                frame.extend_from_slice(&ETH_P_IP.to_be_bytes());
                let total = u16::try_from(20 + l4_len).unwrap_or(u16::MAX);
                frame.extend_from_slice(&[0x45, 0]);
                frame.extend_from_slice(&total.to_be_bytes());
                frame.extend_from_slice(&[0, 0, 0x40, 0, 64, proto, 0, 0]);
                frame.extend_from_slice(&src.octets());
                frame.extend_from_slice(&dst.octets());
            }
            (src, dst) => {
                let to_v6 = |addr: IpAddr| match addr {
                    IpAddr::V4(v4) => v4.to_ipv6_mapped(),
                    IpAddr::V6(v6) => v6,
                };
                frame.extend_from_slice(&ETH_P_IPV6.to_be_bytes());
                frame.extend_from_slice(&[0x60, 0, 0, 0]);
                frame.extend_from_slice(&u16::try_from(l4_len).unwrap_or(u16::MAX).to_be_bytes());
                frame.extend_from_slice(&[proto, 64]);
                frame.extend_from_slice(&to_v6(src).octets());
                frame.extend_from_slice(&to_v6(dst).octets());
            }
        }
        frame.extend_from_slice(&sport.to_be_bytes());
        frame.extend_from_slice(&dport.to_be_bytes());
        if proto == TCP {
            // seq, ack, data offset 5 words, ACK flag, window; then checksum and urgent pointer.
            frame.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 1, 0x50, 0x10, 0xff, 0xff, 0, 0, 0, 0]);
        } else {
            frame.extend_from_slice(&u16::try_from(l4_len).unwrap_or(u16::MAX).to_be_bytes());
            frame.extend_from_slice(&[0, 0]);
        }
        frame.extend(std::iter::repeat_n(0xa5, payload));
        frame
    }
}

/// One measured case.
#[derive(Debug, Clone)]
pub struct Measurement {
    pub case: &'static str,
    pub program: &'static str,
    /// Median over the rounds of the kernel's mean ns per run.
    pub program_ns: u32,
    pub empty_ns: u32,
    /// `program_ns - empty_ns`: what the classifier adds to a packet.
    pub added_ns: i64,
    pub verdict: u32,
}

fn median(mut values: Vec<u32>) -> u32 {
    values.sort_unstable();
    values.get(values.len() / 2).copied().unwrap_or(0)
}

/// Measures every case: `rounds` rounds, each running the empty program and then the case's
/// program `repeat` times on the same packet.
pub fn run(repeat: u32, rounds: usize) -> Result<Vec<Measurement>, DatapathError> {
    const MESH_PORT: u16 = 7001;
    let local: IpAddr = "198.18.0.1".parse().unwrap_or(IpAddr::from([198, 18, 0, 1]));
    let peer: IpAddr = "198.18.0.2".parse().unwrap_or(IpAddr::from([198, 18, 0, 2]));
    let other_peer: IpAddr = "198.18.0.3".parse().unwrap_or(IpAddr::from([198, 18, 0, 3]));
    let local6: IpAddr = "2001:db8::1".parse().unwrap_or(local);
    let peer6: IpAddr = "2001:db8::2".parse().unwrap_or(peer);
    let mut bed = TestBed::load(&[MESH_PORT, MESH_PORT + 1])?;

    use packets::{TCP, UDP, frame};
    let from_peer_udp = frame(UDP, peer, MESH_PORT, local, MESH_PORT, 64);
    let to_peer_tcp = frame(TCP, local, 40_000, peer, MESH_PORT + 1, 1200);
    let from_peer6 = frame(UDP, peer6, MESH_PORT, local6, MESH_PORT, 64);
    let other_port = frame(TCP, peer, 443, local, 40_001, 1200);

    enum Faults {
        None,
        OtherPeer,
        ThisPeerLoss,
    }
    let cases: [(&'static str, &'static str, &[u8], Faults); 6] = [
        (
            "mesh UDP/IPv4 from a peer, counted",
            abi::INGRESS_PROGRAM,
            &from_peer_udp,
            Faults::None,
        ),
        (
            "mesh TCP/IPv4 to a peer, counted",
            abi::EGRESS_PROGRAM,
            &to_peer_tcp,
            Faults::None,
        ),
        (
            "mesh UDP/IPv6 from a peer, counted",
            abi::INGRESS_PROGRAM,
            &from_peer6,
            Faults::None,
        ),
        (
            "other traffic (TCP 443), passed untouched",
            abi::INGRESS_PROGRAM,
            &other_port,
            Faults::None,
        ),
        (
            "mesh TCP/IPv4 to a peer, a fault set on another peer",
            abi::EGRESS_PROGRAM,
            &to_peer_tcp,
            Faults::OtherPeer,
        ),
        (
            "mesh TCP/IPv4 to a peer under 30% loss",
            abi::EGRESS_PROGRAM,
            &to_peer_tcp,
            Faults::ThisPeerLoss,
        ),
    ];
    let mut results = Vec::new();
    for (case, program, packet, faults) in cases {
        let until = crate::monotonic_now_ns().saturating_add(3_600 * 1_000_000_000);
        let maps = bed.kernel_maps();
        for p in [peer, other_peer] {
            maps.clear_fault(p)?;
        }
        match faults {
            Faults::None => {}
            Faults::OtherPeer => maps.set_fault(
                other_peer,
                crate::Fault {
                    drop_probability: 0.3,
                    ..crate::Fault::until(until)
                },
            )?,
            Faults::ThisPeerLoss => maps.set_fault(
                peer,
                crate::Fault {
                    drop_probability: 0.3,
                    ..crate::Fault::until(until)
                },
            )?,
        }
        let mut empty = Vec::with_capacity(rounds);
        let mut measured = Vec::with_capacity(rounds);
        let mut verdict = TC_ACT_OK;
        for _ in 0..rounds {
            empty.push(bed.run(abi::EMPTY_PROGRAM, packet, repeat)?.1);
            let (retval, ns) = bed.run(program, packet, repeat)?;
            verdict = retval;
            measured.push(ns);
        }
        let (program_ns, empty_ns) = (median(measured), median(empty));
        results.push(Measurement {
            case,
            program,
            program_ns,
            empty_ns,
            added_ns: i64::from(program_ns) - i64::from(empty_ns),
            verdict,
        });
    }
    Ok(results)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crafted_frames_have_the_lengths_their_headers_claim() {
        let v4: IpAddr = "198.18.0.1".parse().unwrap();
        let frame = packets::frame(packets::UDP, v4, 1, v4, 2, 10);
        assert_eq!(frame.len(), 14 + 20 + 8 + 10);
        assert_eq!(u16::from_be_bytes([frame[16], frame[17]]), 20 + 8 + 10);
        let v6: IpAddr = "2001:db8::1".parse().unwrap();
        let frame = packets::frame(packets::TCP, v6, 1, v6, 2, 0);
        assert_eq!(frame.len(), 14 + 40 + 20);
        assert_eq!(frame[14 + 6], packets::TCP);
    }

    #[test]
    fn the_median_ignores_outliers() {
        assert_eq!(median(vec![9, 1, 5, 1000, 4]), 5);
    }
}
