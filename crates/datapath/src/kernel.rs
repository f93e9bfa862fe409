//! The kernel implementation: loads the object with aya, attaches the classifiers as netlink tc
//! filters at a fixed priority and handle, and reads and writes the maps.
//!
//! One loaded object serves every interface the mesh traffic crosses: the same two programs
//! are attached to each, so they share one set of maps. A peer's counters are its traffic
//! whichever interface it took, and a fault on a peer applies on all of them (a node whose
//! neighbours sit behind different links, like the demo's ring, has no single "mesh
//! interface").
//!
//! Lifecycle. Netlink tc filters outlive the process that attached them, on purpose: a fault
//! set by an agent that is then killed keeps applying until its expiry, which the program
//! checks itself. The price is that a killed agent leaves its filters behind, so before
//! attaching to an interface the loader removes every filter named like ours there, then
//! attaches its own: exactly one set remains per interface. A clean shutdown detaches them
//! ([`Datapath::detach`], or drop). Nothing is pinned in bpffs, so nothing else outlives the
//! filters.
use std::net::IpAddr;
use std::os::fd::{AsFd as _, AsRawFd as _, RawFd};

use aya::maps::{Array, HashMap, MapData, PerCpuHashMap};
use aya::programs::tc::{NlOptions, SchedClassifierLinkId, TcAttachOptions, TcError, TcHandle};
use aya::programs::{ProgramError, SchedClassifier, TcAttachType};
use aya::{Ebpf, EbpfError, EbpfLoader};

use crate::DatapathError;
use crate::abi::{self, PeerKey, PeerStats};
use crate::error::chain;
use crate::model::{DatapathMaps, Direction, Fault, PeerTraffic};

/// tc priority of our filters: fixed, so `tc filter show` and a restarted agent find them.
pub const FILTER_PRIORITY: u16 = 1000;
/// tc handle of our filters ("x0").
pub const FILTER_HANDLE: u32 = 0x7830;

/// Where and how to attach.
#[derive(Debug, Clone)]
pub struct DatapathConfig {
    /// The interfaces that carry the mesh traffic (more can be added later with
    /// [`Datapath::attach_interface`]). None is allowed: the object is loaded and verified, and
    /// nothing is attached yet. Traffic that crosses two of them (a bridge and its port, a bond
    /// and its slave) is counted, and faulted, twice.
    pub interfaces: Vec<String>,
    /// The mesh's TCP and UDP ports (at most four): packets to or from them are mesh traffic.
    pub ports: Vec<u16>,
    /// The interface's root qdisc is fq, so delay faults may set an earliest departure time.
    pub edt: bool,
}

/// CLOCK_MONOTONIC in nanoseconds: the timeline of bpf_ktime_get_(coarse_)ns, which fault
/// expiries use.
pub fn monotonic_now_ns() -> u64 {
    match nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC) {
        Ok(now) => u64::try_from(now.tv_sec())
            .unwrap_or(0)
            .saturating_mul(1_000_000_000)
            .saturating_add(u64::try_from(now.tv_nsec()).unwrap_or(0)),
        // CLOCK_MONOTONIC exists on every Linux; were it missing, 0 makes every fault
        // look unexpired to validation, and the kernel still enforces the real expiry.
        Err(_) => 0,
    }
}

/// The interface that holds `address` (the agent's default: the one its advertised address is
/// on, which is the one the mesh traffic crosses).
pub fn interface_with_address(address: IpAddr) -> Option<String> {
    let addresses = nix::ifaddrs::getifaddrs().ok()?;
    for entry in addresses {
        let Some(storage) = entry.address else { continue };
        let found = match address {
            IpAddr::V4(v4) => storage.as_sockaddr_in().is_some_and(|a| a.ip() == v4),
            IpAddr::V6(v6) => storage.as_sockaddr_in6().is_some_and(|a| a.ip() == v6),
        };
        if found {
            return Some(entry.interface_name);
        }
    }
    None
}

/// The object loaded, its maps taken, its programs verified; nothing attached yet.
pub(crate) struct Loaded {
    pub(crate) ebpf: Ebpf,
    pub(crate) maps: KernelMaps,
}

pub(crate) struct KernelMaps {
    stats: PerCpuHashMap<MapData, PeerKey, PeerStats>,
    faults: HashMap<MapData, abi::FaultKey, abi::Fault>,
    config_map: Array<MapData, abi::Config>,
    untracked: aya::maps::PerCpuArray<MapData, u64>,
    config: abi::Config,
}

fn take_map<T>(ebpf: &mut Ebpf, name: &str) -> Result<T, DatapathError>
where
    T: TryFrom<aya::maps::Map, Error = aya::maps::MapError>,
{
    let map = ebpf
        .take_map(name)
        .ok_or_else(|| DatapathError::BrokenObject(format!("the object has no map {name}")))?;
    T::try_from(map).map_err(|error| DatapathError::BrokenObject(format!("map {name}: {}", chain(&error))))
}

fn load_error(error: EbpfError) -> DatapathError {
    match error {
        EbpfError::ParseError(_)
        | EbpfError::BtfError(_)
        | EbpfError::RelocationError(_)
        | EbpfError::BtfRelocationError(_)
        | EbpfError::NoBTF
        | EbpfError::UnexpectedPinningType { .. } => {
            DatapathError::BrokenObject(format!("cannot load it: {}", chain(&error)))
        }
        other => DatapathError::from_kernel("load the eBPF object", &other),
    }
}

/// Last lines of a verifier log: where it gave up and why, without pages of instructions.
fn log_tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().filter(|line| !line.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(6)..].join(" | ")
}

fn program_error(name: &str, error: ProgramError) -> DatapathError {
    match error {
        ProgramError::LoadError {
            io_error,
            verifier_log,
        } => {
            let log = verifier_log.to_string();
            if log.trim().is_empty() && matches!(io_error.raw_os_error(), Some(libc::EPERM)) {
                DatapathError::NotPermitted {
                    op: "load a program",
                    detail: io_error.to_string(),
                }
            } else {
                DatapathError::BrokenObject(format!(
                    "the verifier rejected program {name} ({io_error}): {}",
                    log_tail(&log)
                ))
            }
        }
        other => DatapathError::from_kernel("load a program", &other),
    }
}

/// Older kernels (before 5.11) charge BPF memory to RLIMIT_MEMLOCK, whose default is too
/// small for our maps; newer ones ignore it. Best effort: failing leaves the kernel to say no.
fn raise_memlock() {
    use nix::sys::resource::{RLIM_INFINITY, Resource, setrlimit};
    let _ = setrlimit(Resource::RLIMIT_MEMLOCK, RLIM_INFINITY, RLIM_INFINITY);
}

impl Loaded {
    /// Loads `object`, configures the mesh ports and verifies the named programs.
    pub(crate) fn load(
        object: &[u8],
        ports: &[u16],
        edt: bool,
        programs: &[&str],
    ) -> Result<Self, DatapathError> {
        if ports.is_empty() || ports.len() > abi::MAX_PORTS || ports.contains(&0) {
            return Err(DatapathError::Kernel {
                op: "configure the datapath",
                detail: format!(
                    "between 1 and {} non-zero mesh ports are needed, not {ports:?}",
                    abi::MAX_PORTS
                ),
            });
        }
        raise_memlock();
        let mut ebpf = EbpfLoader::new().load(object).map_err(load_error)?;
        let mut config = abi::Config::default();
        for (slot, port) in config.ports.iter_mut().zip(ports) {
            *slot = port.to_be();
        }
        if edt {
            config.flags |= abi::FLAG_EDT;
        }
        let mut maps = KernelMaps {
            stats: take_map(&mut ebpf, abi::PEER_STATS_MAP)?,
            faults: take_map(&mut ebpf, abi::FAULTS_MAP)?,
            config_map: take_map(&mut ebpf, abi::CONFIG_MAP)?,
            untracked: take_map(&mut ebpf, abi::UNTRACKED_MAP)?,
            config,
        };
        maps.write_config()?;
        for name in programs {
            let program: &mut SchedClassifier = ebpf
                .program_mut(name)
                .ok_or_else(|| DatapathError::BrokenObject(format!("the object has no program {name}")))?
                .try_into()
                .map_err(|error: ProgramError| {
                    DatapathError::BrokenObject(format!("program {name} is not a tc classifier: {error}"))
                })?;
            program.load().map_err(|error| program_error(name, error))?;
        }
        Ok(Loaded { ebpf, maps })
    }

    /// The file descriptor of a loaded program (for BPF_PROG_TEST_RUN).
    pub(crate) fn program_fd(&self, name: &str) -> Result<RawFd, DatapathError> {
        let program: &SchedClassifier = self
            .ebpf
            .program(name)
            .ok_or_else(|| DatapathError::BrokenObject(format!("the object has no program {name}")))?
            .try_into()
            .map_err(|error: ProgramError| DatapathError::BrokenObject(error.to_string()))?;
        let fd = program
            .fd()
            .map_err(|error| DatapathError::from_kernel("program fd", &error))?;
        Ok(fd.as_fd().as_raw_fd())
    }
}

impl KernelMaps {
    fn write_config(&mut self) -> Result<(), DatapathError> {
        self.config_map
            .set(0, self.config, 0)
            .map_err(|error| DatapathError::from_kernel("write the datapath config", &error))
    }

    fn set_faults_flag(&mut self, on: bool) -> Result<(), DatapathError> {
        let flags = if on {
            self.config.flags | abi::FLAG_FAULTS
        } else {
            self.config.flags & !abi::FLAG_FAULTS
        };
        if flags != self.config.flags {
            self.config.flags = flags;
            self.write_config()?;
        }
        Ok(())
    }

    fn fault_count(&self) -> usize {
        self.faults.keys().filter(Result::is_ok).count()
    }

    /// Mesh packets not counted because the stats map was full.
    pub(crate) fn untracked(&self) -> Result<u64, DatapathError> {
        let values = self
            .untracked
            .get(&0, 0)
            .map_err(|error| DatapathError::from_kernel("read x0_untracked", &error))?;
        Ok(values.iter().copied().fold(0u64, u64::saturating_add))
    }
}

impl DatapathMaps for KernelMaps {
    fn traffic(&self) -> Result<Vec<PeerTraffic>, DatapathError> {
        let mut traffic = Vec::new();
        for entry in self.stats.iter() {
            let (key, per_cpu) =
                entry.map_err(|error| DatapathError::from_kernel("read x0_peer_stats", &error))?;
            let Some(direction) = Direction::from_abi(key.direction) else {
                continue;
            };
            let mut reading = PeerTraffic {
                peer: abi::decode_addr(key.addr),
                direction,
                packets: 0,
                bytes: 0,
                drops: 0,
            };
            for cpu in per_cpu.iter() {
                reading.packets = reading.packets.saturating_add(cpu.packets);
                reading.bytes = reading.bytes.saturating_add(cpu.bytes);
                reading.drops = reading.drops.saturating_add(cpu.drops);
            }
            traffic.push(reading);
        }
        Ok(traffic)
    }

    fn set_fault(&mut self, peer: IpAddr, fault: Fault) -> Result<(), DatapathError> {
        fault.validate(monotonic_now_ns(), self.config.flags & abi::FLAG_EDT != 0)?;
        let key = abi::FaultKey {
            addr: abi::encode_addr(peer),
        };
        self.faults
            .insert(key, fault.to_abi(), 0)
            .map_err(|error| DatapathError::from_kernel("write x0_faults", &error))?;
        self.set_faults_flag(true)
    }

    fn clear_fault(&mut self, peer: IpAddr) -> Result<(), DatapathError> {
        let key = abi::FaultKey {
            addr: abi::encode_addr(peer),
        };
        match self.faults.remove(&key) {
            Ok(()) | Err(aya::maps::MapError::KeyNotFound) => {}
            Err(aya::maps::MapError::SyscallError(error))
                if error.io_error.raw_os_error() == Some(libc::ENOENT) => {}
            Err(error) => return Err(DatapathError::from_kernel("delete from x0_faults", &error)),
        }
        let any_left = self.fault_count() > 0;
        self.set_faults_flag(any_left)
    }

    fn faults(&self) -> Result<Vec<(IpAddr, Fault)>, DatapathError> {
        self.faults
            .iter()
            .map(|entry| {
                let (key, fault) =
                    entry.map_err(|error| DatapathError::from_kernel("read x0_faults", &error))?;
                Ok((abi::decode_addr(key.addr), Fault::from_abi(fault)))
            })
            .collect()
    }

    fn sweep_expired(&mut self, now_ns: u64) -> Result<usize, DatapathError> {
        let expired: Vec<IpAddr> = self
            .faults()?
            .into_iter()
            .filter(|(_, fault)| fault.expires_at_ns <= now_ns)
            .map(|(peer, _)| peer)
            .collect();
        for peer in &expired {
            self.clear_fault(*peer)?;
        }
        Ok(expired.len())
    }
}

/// The datapath: one loaded object, its programs attached to every interface in `interfaces`.
pub struct Datapath {
    loaded: Loaded,
    /// Interfaces in the order they were attached.
    interfaces: Vec<Attachment>,
}

struct Attachment {
    name: String,
    /// Told apart from a new interface that took the same name (a recreated veth).
    index: u32,
    /// The ingress and egress links.
    links: Vec<(&'static str, SchedClassifierLinkId)>,
}

const PROGRAMS: [(&str, TcAttachType); 2] = [
    (abi::INGRESS_PROGRAM, TcAttachType::Ingress),
    (abi::EGRESS_PROGRAM, TcAttachType::Egress),
];

fn classifier<'a>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut SchedClassifier, DatapathError> {
    ebpf.program_mut(name)
        .ok_or_else(|| DatapathError::BrokenObject(format!("the object has no program {name}")))?
        .try_into()
        .map_err(|error: ProgramError| DatapathError::BrokenObject(error.to_string()))
}

impl Datapath {
    /// Loads the embedded object and attaches it to each of `config.interfaces`.
    pub fn attach(config: &DatapathConfig) -> Result<Self, DatapathError> {
        Self::attach_object(crate::object(), config)
    }

    /// Loads `object` (which must define the datapath's programs and maps) and attaches it to
    /// each interface, replacing any filters of ours a killed agent left there. All or
    /// nothing: on an error, whatever was attached already is detached again.
    pub fn attach_object(object: &[u8], config: &DatapathConfig) -> Result<Self, DatapathError> {
        // Every name is checked before anything is loaded, so a typo costs no attach/detach.
        for interface in &config.interfaces {
            if nix::net::if_::if_nametoindex(interface.as_str()).is_err() {
                return Err(DatapathError::NoSuchInterface(interface.clone()));
            }
        }
        let programs: Vec<&str> = PROGRAMS.iter().map(|(name, _)| *name).collect();
        let loaded = Loaded::load(object, &config.ports, config.edt, &programs)?;
        let mut datapath = Datapath {
            loaded,
            interfaces: Vec::new(),
        };
        for interface in &config.interfaces {
            // On failure, dropping `datapath` detaches whatever was attached already.
            datapath.attach_interface(interface)?;
        }
        Ok(datapath)
    }

    /// Attaches the programs to one more interface (after removing filters of ours a killed
    /// agent left there). Returns false, doing nothing, if they are attached there already.
    pub fn attach_interface(&mut self, interface: &str) -> Result<bool, DatapathError> {
        let index = nix::net::if_::if_nametoindex(interface)
            .map_err(|_| DatapathError::NoSuchInterface(interface.to_owned()))?;
        if let Some(at) = self.interfaces.iter().position(|a| a.name == interface) {
            if self.interfaces[at].index == index {
                return Ok(false);
            }
            // The interface was deleted (taking our filters with it) and another took its
            // name: its links are gone, so errors detaching them mean nothing.
            let gone = self.interfaces.remove(at);
            let _ = self.detach_links(gone.links);
        }
        add_clsact(interface)?;
        remove_stale_filters(interface)?;
        let mut links = Vec::new();
        for (name, attach_type) in PROGRAMS {
            let options = TcAttachOptions::Netlink(NlOptions {
                priority: FILTER_PRIORITY,
                handle: TcHandle::from(FILTER_HANDLE),
                classid: None,
            });
            let attached = classifier(&mut self.loaded.ebpf, name).and_then(|program| {
                program
                    .attach_with_options(interface, attach_type, options)
                    .map_err(|error| DatapathError::from_kernel("attach a tc filter", &error))
            });
            match attached {
                Ok(link) => links.push((name, link)),
                Err(error) => {
                    // Half an interface (ingress without egress) would count one way only.
                    let _ = self.detach_links(links);
                    return Err(error);
                }
            }
        }
        self.interfaces.push(Attachment {
            name: interface.to_owned(),
            index,
            links,
        });
        Ok(true)
    }

    /// The interfaces the programs are attached to, in the order they were attached.
    pub fn interfaces(&self) -> Vec<String> {
        self.interfaces.iter().map(|a| a.name.clone()).collect()
    }

    /// Mesh packets not counted because the per-peer map was full.
    pub fn untracked(&self) -> Result<u64, DatapathError> {
        self.loaded.maps.untracked()
    }

    fn detach_links(
        &mut self,
        links: Vec<(&'static str, SchedClassifierLinkId)>,
    ) -> Result<(), DatapathError> {
        let mut first_error = None;
        for (name, link) in links {
            let detached = match self.loaded.ebpf.program_mut(name) {
                Some(program) => match <&mut SchedClassifier>::try_from(program) {
                    Ok(program) => program.detach(link),
                    Err(error) => Err(error),
                },
                None => continue,
            };
            if let Err(error) = detached {
                first_error.get_or_insert(DatapathError::from_kernel("detach a tc filter", &error));
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Detaches the filters from every interface, reporting the first failure (dropping the
    /// datapath detaches too, silently).
    pub fn detach(mut self) -> Result<(), DatapathError> {
        let mut first_error = None;
        for attachment in std::mem::take(&mut self.interfaces) {
            if let Err(error) = self.detach_links(attachment.links) {
                first_error.get_or_insert(error);
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

impl DatapathMaps for Datapath {
    fn traffic(&self) -> Result<Vec<PeerTraffic>, DatapathError> {
        self.loaded.maps.traffic()
    }
    fn set_fault(&mut self, peer: IpAddr, fault: Fault) -> Result<(), DatapathError> {
        self.loaded.maps.set_fault(peer, fault)
    }
    fn clear_fault(&mut self, peer: IpAddr) -> Result<(), DatapathError> {
        self.loaded.maps.clear_fault(peer)
    }
    fn faults(&self) -> Result<Vec<(IpAddr, Fault)>, DatapathError> {
        self.loaded.maps.faults()
    }
    fn sweep_expired(&mut self, now_ns: u64) -> Result<usize, DatapathError> {
        self.loaded.maps.sweep_expired(now_ns)
    }
}

/// Adds the clsact qdisc, which may already be there (ours from a previous run, or another
/// tool's: it is shared, so it is never removed).
fn add_clsact(interface: &str) -> Result<(), DatapathError> {
    match aya::programs::tc::qdisc_add_clsact(interface) {
        Ok(()) => Ok(()),
        Err(TcError::NetlinkError(error)) if error.raw_os_error() == Some(libc::EEXIST) => Ok(()),
        Err(TcError::AlreadyAttached) => Ok(()),
        Err(error) => Err(DatapathError::from_kernel("add the clsact qdisc", &error)),
    }
}

/// Removes filters named like ours: those a killed agent left behind.
fn remove_stale_filters(interface: &str) -> Result<(), DatapathError> {
    for (name, attach_type) in PROGRAMS {
        match aya::programs::tc::qdisc_detach_program(interface, attach_type, name) {
            Ok(()) => {}
            Err(TcError::IoError(error)) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => return Err(DatapathError::from_kernel("remove a stale tc filter", &error)),
        }
    }
    Ok(())
}
