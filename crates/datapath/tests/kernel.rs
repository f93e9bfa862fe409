//! The datapath in the real kernel: programs run with BPF_PROG_TEST_RUN, and attached to veth
//! pairs between network namespaces this test creates (addresses from 198.18.0.0/15 only).
//!
//! Needs root and `X0_NETNS_TESTS=1` (`make ebpf-test`); a plain `cargo test` lists each test
//! as ignored, with that reason. Every wait polls a condition with a deadline; loops are bounded; namespaces (and
//! with them the veths and any filter left on them) are removed on exit, even on failure.
use std::collections::BTreeMap;
use std::io::{BufRead as _, BufReader};
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::fd::AsFd as _;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use x0tta6bl4_datapath::bench::{TC_ACT_OK, TC_ACT_SHOT, TestBed, packets};
use x0tta6bl4_datapath::{
    Datapath, DatapathConfig, DatapathError, DatapathMaps, Direction, Directions, Fault, PeerTraffic,
    monotonic_now_ns,
};
use x0tta6bl4_testsupport::netns::{ip, require_netns};

const BIN: &str = env!("CARGO_BIN_EXE_x0-datapath");
const MESH_TCP: u16 = 7000;
const MESH_UDP: u16 = 7001;
const OTHER_PORT: u16 = 9999;
const LOCAL: &str = "198.18.0.1";

/// These tests are `#[ignore]`d with the reason, so a plain `cargo test` lists them as ignored;
/// `make ebpf-test` runs them (`--ignored`, as root, with X0_NETNS_TESTS=1). Run any other way
/// they fail with what is missing rather than pass without running.
#[track_caller]
fn require_kernel() {
    require_netns("make ebpf-test");
}

fn addr(text: &str) -> IpAddr {
    text.parse().expect("a valid address")
}

fn hour_from_now() -> u64 {
    monotonic_now_ns() + 3_600_000_000_000
}

/// Polls `condition` every 10 ms until it holds or `timeout` passes.
#[track_caller]
fn wait_for(what: &str, timeout: Duration, mut condition: impl FnMut() -> bool) {
    x0tta6bl4_testsupport::wait_for(what, timeout, Duration::from_millis(10), || {
        condition().then_some(()).ok_or_else(|| "not yet".to_owned())
    });
}

/// Two namespaces joined by a veth: `here` (198.18.0.1/24 on `x0a`) and `peers` (the given
/// addresses on `x0b`); optionally a third, `beyond`, behind a second veth of `here`
/// (198.18.1.1/24 on `x0c`, its peers on `x0d`). Every namespace is deleted on drop.
struct Pair {
    here: String,
    peers: String,
    beyond: Option<String>,
}

impl Pair {
    fn create(test: &str, peer_addresses: &[&str]) -> Pair {
        let id = std::process::id();
        let pair = Pair {
            here: format!("x0dp-{test}-a-{id}"),
            peers: format!("x0dp-{test}-b-{id}"),
            beyond: None,
        };
        ip(&["netns", "add", &pair.here]);
        ip(&["netns", "add", &pair.peers]);
        ip(&[
            "-n",
            &pair.here,
            "link",
            "add",
            "x0a",
            "type",
            "veth",
            "peer",
            "name",
            "x0b",
            "netns",
            &pair.peers,
        ]);
        ip(&[
            "-n",
            &pair.here,
            "addr",
            "add",
            &format!("{LOCAL}/24"),
            "dev",
            "x0a",
        ]);
        for address in peer_addresses {
            ip(&[
                "-n",
                &pair.peers,
                "addr",
                "add",
                &format!("{address}/24"),
                "dev",
                "x0b",
            ]);
        }
        for (ns, dev) in [(&pair.here, "x0a"), (&pair.peers, "x0b")] {
            ip(&["-n", ns, "link", "set", dev, "up"]);
            ip(&["-n", ns, "link", "set", "lo", "up"]);
        }
        pair
    }

    /// Adds the namespace `beyond`, joined to `here` by a second veth (`x0c` here, `x0d`
    /// there, 198.18.1.0/24): a node whose peers sit behind two different interfaces.
    fn with_second_link(mut self, peer_addresses: &[&str]) -> Pair {
        let beyond = self.here.replacen("-a-", "-c-", 1);
        ip(&["netns", "add", &beyond]);
        self.beyond = Some(beyond.clone());
        ip(&[
            "-n", &self.here, "link", "add", "x0c", "type", "veth", "peer", "name", "x0d", "netns", &beyond,
        ]);
        ip(&["-n", &self.here, "addr", "add", "198.18.1.1/24", "dev", "x0c"]);
        for address in peer_addresses {
            ip(&[
                "-n",
                &beyond,
                "addr",
                "add",
                &format!("{address}/24"),
                "dev",
                "x0d",
            ]);
        }
        for (ns, dev) in [(&self.here, "x0c"), (&beyond, "x0d"), (&beyond, "lo")] {
            ip(&["-n", ns, "link", "set", dev, "up"]);
        }
        self
    }

    /// Our filters on `x0a` (one line per filter named like ours), by direction.
    fn our_filters(&self) -> (usize, usize) {
        self.our_filters_on("x0a")
    }

    /// Our filters on `dev` of `here`, by direction.
    fn our_filters_on(&self, dev: &str) -> (usize, usize) {
        our_filters(&self.here, dev)
    }
}

/// Filters named like ours on `dev` in namespace `ns` (one line per filter), by direction.
fn our_filters(ns: &str, dev: &str) -> (usize, usize) {
    let count = |direction: &str| {
        let mut tc = Command::new("ip");
        tc.args(["netns", "exec", ns, "tc", "filter", "show", "dev", dev, direction]);
        x0tta6bl4_testsupport::run(&mut tc, "tc")
            .lines()
            .filter(|line| line.contains("x0_mesh_"))
            .count()
    };
    (count("ingress"), count("egress"))
}

impl Drop for Pair {
    fn drop(&mut self) {
        for ns in [Some(&self.here), Some(&self.peers), self.beyond.as_ref()]
            .into_iter()
            .flatten()
        {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

/// Runs `f` on a thread that entered network namespace `ns` (setns affects only the calling
/// thread). Sockets made there stay in `ns` wherever they are used later.
fn in_netns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let path = format!("/var/run/netns/{ns}");
    std::thread::spawn(move || {
        let file = std::fs::File::open(&path).expect("open the namespace");
        nix::sched::setns(file.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
        f()
    })
    .join()
    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}

fn udp(ns: &str, address: &str, port: u16) -> UdpSocket {
    let bind = SocketAddr::new(addr(address), port);
    let socket = in_netns(ns, move || UdpSocket::bind(bind).expect("bind"));
    socket.set_nonblocking(true).expect("non-blocking");
    socket
}

/// Datagrams waiting on `socket`, by sender.
fn drain(socket: &UdpSocket, into: &mut BTreeMap<IpAddr, usize>) {
    let mut buffer = [0u8; 2048];
    while let Ok((_, from)) = socket.recv_from(&mut buffer) {
        *into.entry(from.ip()).or_default() += 1;
    }
}

fn send(socket: &UdpSocket, to: &str, port: u16, count: usize) {
    let target = SocketAddr::new(addr(to), port);
    for _ in 0..count {
        socket.send_to(&[0x5a; 100], target).expect("send");
    }
}

fn reading(traffic: &[PeerTraffic], peer: &str, direction: Direction) -> Option<PeerTraffic> {
    traffic
        .iter()
        .copied()
        .find(|t| t.peer == addr(peer) && t.direction == direction)
}

fn attach_here() -> Datapath {
    Datapath::attach(&DatapathConfig {
        interfaces: vec!["x0a".to_owned()],
        ports: vec![MESH_TCP, MESH_UDP],
        edt: false,
    })
    .expect("attach the datapath")
}

// ----- programs alone (BPF_PROG_TEST_RUN) -------------------------------------------------------

#[test]
#[ignore = "needs root and X0_NETNS_TESTS=1: run with `make ebpf-test`"]
fn the_programs_count_mesh_packets_per_peer_both_families_and_ignore_other_ports() {
    require_kernel();
    let mut bed = TestBed::load(&[MESH_UDP]).expect("load");
    let v4 = packets::frame(
        packets::UDP,
        addr("198.18.0.2"),
        MESH_UDP,
        addr(LOCAL),
        40_000,
        100,
    );
    let v6 = packets::frame(
        packets::UDP,
        addr("2001:db8::1"),
        40_000,
        addr("2001:db8::2"),
        MESH_UDP,
        10,
    );
    let other = packets::frame(packets::TCP, addr("198.18.0.2"), 443, addr(LOCAL), 40_000, 100);
    assert_eq!(bed.run("x0_mesh_ingress", &v4, 3).unwrap().0, TC_ACT_OK);
    assert_eq!(bed.run("x0_mesh_egress", &v6, 2).unwrap().0, TC_ACT_OK);
    assert_eq!(bed.run("x0_mesh_ingress", &other, 5).unwrap().0, TC_ACT_OK);
    let traffic = bed.maps().traffic().unwrap();
    assert_eq!(traffic.len(), 2, "{traffic:?}");
    let from_v4 = reading(&traffic, "198.18.0.2", Direction::FromPeer).expect("IPv4 peer counted");
    assert_eq!(
        (from_v4.packets, from_v4.bytes, from_v4.drops),
        (3, 3 * v4.len() as u64, 0)
    );
    let to_v6 = reading(&traffic, "2001:db8::2", Direction::ToPeer).expect("IPv6 peer counted");
    assert_eq!((to_v6.packets, to_v6.bytes), (2, 2 * v6.len() as u64));
}

#[test]
#[ignore = "needs root and X0_NETNS_TESTS=1: run with `make ebpf-test`"]
fn a_partition_verdict_is_shot_and_an_expired_fault_is_ignored_by_the_program() {
    require_kernel();
    let mut bed = TestBed::load(&[MESH_UDP]).expect("load");
    let peer = addr("198.18.0.2");
    let to_peer = packets::frame(packets::UDP, addr(LOCAL), 40_000, peer, MESH_UDP, 10);
    let from_peer = packets::frame(packets::UDP, peer, MESH_UDP, addr(LOCAL), 40_000, 10);
    let expires = monotonic_now_ns() + 200_000_000;
    bed.maps()
        .set_fault(
            peer,
            Fault {
                partition: Directions::TO_PEER,
                ..Fault::until(expires)
            },
        )
        .unwrap();
    assert_eq!(bed.run("x0_mesh_egress", &to_peer, 1).unwrap().0, TC_ACT_SHOT);
    assert_eq!(bed.run("x0_mesh_ingress", &from_peer, 1).unwrap().0, TC_ACT_OK);
    // The program reads the coarse clock, up to a tick (at most 10 ms) behind this one.
    wait_for("the fault's expiry", Duration::from_secs(2), || {
        monotonic_now_ns() > expires + 20_000_000
    });
    // Still in the map (nobody swept it), yet the program no longer applies it.
    assert_eq!(bed.maps().faults().unwrap().len(), 1);
    assert_eq!(bed.run("x0_mesh_egress", &to_peer, 1).unwrap().0, TC_ACT_OK);
    let traffic = bed.maps().traffic().unwrap();
    let egress = reading(&traffic, "198.18.0.2", Direction::ToPeer).unwrap();
    assert_eq!((egress.packets, egress.drops), (1, 1));
    assert_eq!(bed.maps().sweep_expired(monotonic_now_ns()).unwrap(), 1);
    assert!(bed.maps().faults().unwrap().is_empty());
}

#[test]
#[ignore = "needs root and X0_NETNS_TESTS=1: run with `make ebpf-test`"]
fn corruption_flips_a_payload_bit_and_never_a_header() {
    require_kernel();
    let mut bed = TestBed::load(&[MESH_TCP]).expect("load");
    let peer = addr("198.18.0.2");
    bed.maps()
        .set_fault(
            peer,
            Fault {
                corrupt_probability: 1.0,
                directions: Directions::TO_PEER,
                ..Fault::until(hour_from_now())
            },
        )
        .unwrap();
    let with_payload = packets::frame(packets::TCP, addr(LOCAL), 40_000, peer, MESH_TCP, 50);
    let (verdict, out) = bed.run_once("x0_mesh_egress", &with_payload).unwrap();
    assert_eq!(verdict, TC_ACT_OK);
    assert_eq!(out.len(), with_payload.len());
    let last = with_payload.len() - 1;
    assert_eq!(
        out[..last],
        with_payload[..last],
        "headers and the rest of the payload untouched"
    );
    assert_eq!(out[last], with_payload[last] ^ 1);
    // A pure ACK has no payload to corrupt.
    let ack = packets::frame(packets::TCP, addr(LOCAL), 40_000, peer, MESH_TCP, 0);
    assert_eq!(bed.run_once("x0_mesh_egress", &ack).unwrap().1, ack);
    // The other direction is not under the fault.
    let inbound = packets::frame(packets::TCP, peer, MESH_TCP, addr(LOCAL), 40_000, 50);
    assert_eq!(bed.run_once("x0_mesh_ingress", &inbound).unwrap().1, inbound);
}

// ----- attached, with real traffic ---------------------------------------------------------------

#[test]
#[ignore = "needs root and X0_NETNS_TESTS=1: run with `make ebpf-test`"]
fn counters_equal_the_packets_sent_per_peer_and_direction() {
    require_kernel();
    let pair = Pair::create("count", &["198.18.0.2", "198.18.0.3"]);
    let peer2 = udp(&pair.peers, "198.18.0.2", MESH_UDP);
    let peer3 = udp(&pair.peers, "198.18.0.3", MESH_UDP);
    let peer2_other = udp(&pair.peers, "198.18.0.2", OTHER_PORT);
    let here = udp(&pair.here, LOCAL, MESH_UDP);
    let here_other = udp(&pair.here, LOCAL, OTHER_PORT);
    let traffic = in_netns(&pair.here, move || {
        let datapath = attach_here();
        send(&here, "198.18.0.2", MESH_UDP, 50);
        send(&here, "198.18.0.3", MESH_UDP, 30);
        send(&here_other, "198.18.0.2", OTHER_PORT, 40);
        send(&peer2, LOCAL, MESH_UDP, 20);
        send(&peer3, LOCAL, MESH_UDP, 10);
        let mut at_peers = BTreeMap::new();
        let mut at_here = BTreeMap::new();
        let mut other = BTreeMap::new();
        wait_for("every datagram to arrive", Duration::from_secs(10), || {
            drain(&peer2, &mut at_peers);
            drain(&peer3, &mut at_peers);
            drain(&here, &mut at_here);
            drain(&peer2_other, &mut other);
            at_peers.values().sum::<usize>() == 80
                && at_here.values().sum::<usize>() == 30
                && other.values().sum::<usize>() == 40
        });
        let traffic = datapath.traffic().expect("read the counters");
        datapath.detach().expect("detach");
        traffic
    });
    // Each datagram: 14 (Ethernet) + 20 (IPv4) + 8 (UDP) + 100 bytes at the tc hook.
    let frame = 142;
    for (peer, direction, packets) in [
        ("198.18.0.2", Direction::ToPeer, 50),
        ("198.18.0.3", Direction::ToPeer, 30),
        ("198.18.0.2", Direction::FromPeer, 20),
        ("198.18.0.3", Direction::FromPeer, 10),
    ] {
        let counted =
            reading(&traffic, peer, direction).unwrap_or_else(|| panic!("{peer} {direction:?} counted"));
        assert_eq!(
            (counted.packets, counted.bytes, counted.drops),
            (packets, packets * frame, 0),
            "{peer} {direction:?}"
        );
    }
    assert_eq!(traffic.len(), 4, "only mesh traffic is counted: {traffic:?}");
    assert_eq!(pair.our_filters(), (0, 0), "detached");
}

#[test]
#[ignore = "needs root and X0_NETNS_TESTS=1: run with `make ebpf-test`"]
fn loss_of_thirty_percent_drops_thirty_percent_of_mesh_packets_and_no_other_packet() {
    require_kernel();
    const PACKETS: usize = 10_000;
    const BATCH: usize = 250;
    let pair = Pair::create("loss", &["198.18.0.2"]);
    let mesh_rx = udp(&pair.peers, "198.18.0.2", MESH_UDP);
    let other_rx = udp(&pair.peers, "198.18.0.2", OTHER_PORT);
    let here = udp(&pair.here, LOCAL, MESH_UDP);
    let here_other = udp(&pair.here, LOCAL, OTHER_PORT);
    let (mesh_received, other_received, egress) = in_netns(&pair.here, move || {
        let mut datapath = attach_here();
        datapath
            .set_fault(
                addr("198.18.0.2"),
                Fault {
                    drop_probability: 0.3,
                    directions: Directions::TO_PEER,
                    ..Fault::until(hour_from_now())
                },
            )
            .expect("set the fault");
        let (mut mesh, mut other) = (BTreeMap::new(), BTreeMap::new());
        // In batches, each received in full before the next, so no socket or backlog queue
        // overflows and every missing packet is one the datapath dropped.
        for batch in 0..PACKETS / BATCH {
            send(&here, "198.18.0.2", MESH_UDP, BATCH);
            send(&here_other, "198.18.0.2", OTHER_PORT, BATCH);
            let sent = (batch + 1) * BATCH;
            wait_for("the batch to arrive", Duration::from_secs(10), || {
                drain(&mesh_rx, &mut mesh);
                drain(&other_rx, &mut other);
                let counted = reading(&datapath.traffic().unwrap(), "198.18.0.2", Direction::ToPeer);
                let passed = counted.map_or(0, |c| c.packets) as usize;
                let decided = counted.map_or(0, |c| c.packets + c.drops) as usize;
                decided == sent
                    && mesh.values().sum::<usize>() == passed
                    && other.values().sum::<usize>() == sent
            });
        }
        let egress = reading(&datapath.traffic().unwrap(), "198.18.0.2", Direction::ToPeer).unwrap();
        datapath.detach().expect("detach");
        (
            mesh.values().sum::<usize>(),
            other.values().sum::<usize>(),
            egress,
        )
    });
    eprintln!("loss 0.3: {} of {PACKETS} mesh packets dropped", egress.drops);
    assert_eq!(egress.packets + egress.drops, PACKETS as u64);
    assert!(
        (2_700..=3_300).contains(&egress.drops),
        "{} dropped",
        egress.drops
    );
    assert_eq!(mesh_received as u64, egress.packets);
    assert_eq!(other_received, PACKETS, "packets on other ports are untouched");
}

#[test]
#[ignore = "needs root and X0_NETNS_TESTS=1: run with `make ebpf-test`"]
fn a_partition_blocks_only_the_chosen_peers_and_directions() {
    require_kernel();
    const EACH: usize = 20;
    let peers = ["198.18.0.2", "198.18.0.3", "198.18.0.4"];
    let pair = Pair::create("part", &peers);
    let peer_sockets: Vec<UdpSocket> = peers.iter().map(|p| udp(&pair.peers, p, MESH_UDP)).collect();
    let here = udp(&pair.here, LOCAL, MESH_UDP);
    let (at_peers, at_here, traffic) = in_netns(&pair.here, move || {
        let mut datapath = attach_here();
        let until = hour_from_now();
        // .2 cannot reach us, we cannot reach .3, .4 is left alone.
        for (peer, partition) in [
            ("198.18.0.2", Directions::FROM_PEER),
            ("198.18.0.3", Directions::TO_PEER),
        ] {
            datapath
                .set_fault(
                    addr(peer),
                    Fault {
                        partition,
                        ..Fault::until(until)
                    },
                )
                .expect("set the partition");
        }
        for (socket, peer) in peer_sockets.iter().zip(peers) {
            send(&here, peer, MESH_UDP, EACH);
            send(socket, LOCAL, MESH_UDP, EACH);
        }
        let (mut at_peers, mut at_here) = (BTreeMap::new(), BTreeMap::new());
        // Wait until the datapath decided on all 120 packets, then for what passed to arrive.
        wait_for(
            "every packet to be passed or dropped",
            Duration::from_secs(10),
            || {
                let traffic = datapath.traffic().unwrap();
                traffic.iter().map(|t| t.packets + t.drops).sum::<u64>() == (6 * EACH) as u64
            },
        );
        wait_for("the passed packets to arrive", Duration::from_secs(10), || {
            for socket in &peer_sockets {
                drain(socket, &mut at_peers);
            }
            drain(&here, &mut at_here);
            at_peers.values().sum::<usize>() == 2 * EACH && at_here.values().sum::<usize>() == 2 * EACH
        });
        let traffic = datapath.traffic().unwrap();
        datapath.detach().expect("detach");
        (at_peers, at_here, traffic)
    });
    let received_from =
        |map: &BTreeMap<IpAddr, usize>, peer: &str| map.get(&addr(peer)).copied().unwrap_or(0);
    // Sent to the peers: only .3 is cut.
    assert_eq!(received_from(&at_peers, LOCAL), 2 * EACH);
    assert_eq!(
        reading(&traffic, "198.18.0.3", Direction::ToPeer).unwrap().drops,
        EACH as u64
    );
    assert_eq!(
        reading(&traffic, "198.18.0.2", Direction::ToPeer).unwrap().drops,
        0
    );
    // Received from the peers: only .2 is cut.
    assert_eq!(received_from(&at_here, "198.18.0.2"), 0);
    assert_eq!(received_from(&at_here, "198.18.0.3"), EACH);
    assert_eq!(received_from(&at_here, "198.18.0.4"), EACH);
    for (peer, direction, drops) in [
        ("198.18.0.2", Direction::FromPeer, EACH),
        ("198.18.0.3", Direction::FromPeer, 0),
        ("198.18.0.4", Direction::FromPeer, 0),
        ("198.18.0.4", Direction::ToPeer, 0),
    ] {
        assert_eq!(
            reading(&traffic, peer, direction).unwrap().drops,
            drops as u64,
            "{peer} {direction:?}"
        );
    }
}

// ----- lifecycle ---------------------------------------------------------------------------------

/// `x0-datapath hold` in the namespace, once it printed `ready`: the expiry of its fault, if any.
struct Holder {
    child: Child,
    fault_expires_at_ns: Option<u64>,
}

impl Holder {
    fn start(ns: &str, extra: &[&str]) -> Holder {
        let mut child = Command::new("ip")
            .args(["netns", "exec", ns, BIN, "hold", "--interface", "x0a", "--port"])
            .arg(MESH_UDP.to_string())
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start x0-datapath hold");
        let stdout = child.stdout.take().expect("piped stdout");
        let (lines, received) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if lines.send(line).is_err() {
                    return;
                }
            }
        });
        let mut fault_expires_at_ns = None;
        loop {
            match received.recv_timeout(Duration::from_secs(20)) {
                Ok(line) if line == "ready" => break,
                Ok(line) => {
                    if let Some(value) = line.strip_prefix("fault expires_at_ns=") {
                        fault_expires_at_ns = value.parse().ok();
                    }
                }
                Err(error) => {
                    let _ = child.kill();
                    panic!("x0-datapath hold never became ready: {error}");
                }
            }
        }
        Holder {
            child,
            fault_expires_at_ns,
        }
    }

    fn kill_hard(mut self) {
        self.child.kill().expect("SIGKILL");
        self.child.wait().expect("reap");
    }

    fn stop(mut self) -> std::process::ExitStatus {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .expect("SIGTERM");
        x0tta6bl4_testsupport::wait_for(
            "hold to stop on SIGTERM",
            Duration::from_secs(10),
            Duration::from_millis(10),
            || {
                self.child
                    .try_wait()
                    .expect("wait")
                    .ok_or_else(|| "still running".to_owned())
            },
        )
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
#[ignore = "needs root and X0_NETNS_TESTS=1: run with `make ebpf-test`"]
fn a_fault_stops_applying_at_its_expiry_with_its_loader_killed() {
    require_kernel();
    let pair = Pair::create("expiry", &["198.18.0.2"]);
    let peer = udp(&pair.peers, "198.18.0.2", MESH_UDP);
    let here = udp(&pair.here, LOCAL, MESH_UDP);
    let holder = Holder::start(
        &pair.here,
        &[
            "--fault-peer",
            "198.18.0.2",
            "--partition",
            "both",
            "--fault-ms",
            "1500",
        ],
    );
    let expires_at = holder.fault_expires_at_ns.expect("the fault's expiry");
    holder.kill_hard();
    assert_eq!(
        pair.our_filters(),
        (1, 1),
        "the killed loader's filters stay, and with them the fault"
    );

    // One datagram every 20 ms until one gets through: the first to arrive must have been
    // sent after the expiry (nothing passed before it), and soon after it.
    let mut buffer = [0u8; 256];
    let mut first_arrival = None;
    for _ in 0..500 {
        let sent_at = monotonic_now_ns();
        here.send_to(&[1; 32], SocketAddr::new(addr("198.18.0.2"), MESH_UDP))
            .expect("send");
        std::thread::sleep(Duration::from_millis(20));
        if peer.recv_from(&mut buffer).is_ok() {
            first_arrival = Some(sent_at);
            break;
        }
        assert!(
            sent_at < expires_at + 3_000_000_000,
            "the fault still applies 3 s after its expiry"
        );
    }
    let first = first_arrival.expect("a packet got through after the expiry");
    // A packet sent before the expiry may be the one that gets through when it was still in
    // flight at the expiry: allow the 20 ms between sends.
    assert!(
        first + 20_000_000 >= expires_at,
        "a packet passed {} ms before the expiry",
        (expires_at - first) / 1_000_000
    );
}

#[test]
#[ignore = "needs root and X0_NETNS_TESTS=1: run with `make ebpf-test`"]
fn killing_the_loader_and_starting_another_leaves_exactly_one_set_of_filters() {
    require_kernel();
    let pair = Pair::create("restart", &["198.18.0.2"]);
    assert_eq!(pair.our_filters(), (0, 0));
    let first = Holder::start(&pair.here, &[]);
    assert_eq!(pair.our_filters(), (1, 1));
    first.kill_hard();
    assert_eq!(pair.our_filters(), (1, 1), "a killed loader leaves its filters");
    let second = Holder::start(&pair.here, &[]);
    assert_eq!(pair.our_filters(), (1, 1), "the new loader replaced them");
    let third = Holder::start(&pair.here, &[]);
    assert_eq!(
        pair.our_filters(),
        (1, 1),
        "and so does the next one, while the last one runs"
    );
    drop(second);
    let status = third.stop();
    assert!(status.success(), "hold exits cleanly on SIGTERM: {status}");
    assert_eq!(pair.our_filters(), (0, 0), "a clean shutdown detaches");
}

#[test]
#[ignore = "needs root and X0_NETNS_TESTS=1: run with `make ebpf-test`"]
fn loading_a_broken_object_fails_with_a_clear_error_and_attaches_nothing() {
    require_kernel();
    let pair = Pair::create("broken", &["198.18.0.2"]);
    let config = DatapathConfig {
        interfaces: vec!["x0a".to_owned()],
        ports: vec![MESH_UDP],
        edt: false,
    };
    let (truncated, rejected) = in_netns(&pair.here, move || {
        let object = x0tta6bl4_datapath::object();
        let truncated = Datapath::attach_object(&object[..object.len() / 2], &config).err();
        let rejected = Datapath::attach_object(x0tta6bl4_datapath::rejected_object(), &config).err();
        (truncated, rejected)
    });
    let truncated = truncated.expect("a truncated object must not load");
    assert!(matches!(truncated, DatapathError::BrokenObject(_)), "{truncated}");
    assert!(
        truncated.to_string().contains("eBPF object is broken"),
        "{truncated}"
    );
    let rejected = rejected.expect("a program the verifier rejects must not load");
    let message = rejected.to_string();
    assert!(matches!(rejected, DatapathError::BrokenObject(_)), "{message}");
    assert!(
        message.contains("verifier rejected program x0_mesh_"),
        "{message}"
    );
    assert!(
        message.contains("invalid access to packet"),
        "the verifier's reason: {message}"
    );
    assert_eq!(pair.our_filters(), (0, 0));
}

#[test]
#[ignore = "needs root and X0_NETNS_TESTS=1: run with `make ebpf-test`"]
fn the_interface_of_an_address_is_found() {
    require_kernel();
    let pair = Pair::create("ifaddr", &["198.18.0.2"]);
    let found = in_netns(&pair.here, || {
        (
            x0tta6bl4_datapath::interface_with_address(addr(LOCAL)),
            x0tta6bl4_datapath::interface_with_address(addr("198.18.0.2")),
        )
    });
    assert_eq!(found, (Some("x0a".to_owned()), None));
}

#[test]
#[ignore = "needs root and X0_NETNS_TESTS=1: run with `make ebpf-test`"]
fn a_missing_interface_is_named_in_the_error() {
    require_kernel();
    let error = Datapath::attach(&DatapathConfig {
        interfaces: vec!["x0-nonexistent".to_owned()],
        ports: vec![MESH_UDP],
        edt: false,
    })
    .err()
    .expect("no such interface");
    assert_eq!(error.reason(), "NoSuchInterface");
    assert!(error.to_string().contains("x0-nonexistent"));
}

// ----- several interfaces -------------------------------------------------------------------------

#[test]
#[ignore = "needs root and X0_NETNS_TESTS=1: run with `make ebpf-test`"]
fn one_datapath_on_two_interfaces_counts_and_faults_the_peers_behind_each() {
    require_kernel();
    let pair = Pair::create("two", &["198.18.0.2"]).with_second_link(&["198.18.1.2"]);
    let beyond = pair.beyond.clone().expect("the second link");
    let near = udp(&pair.peers, "198.18.0.2", MESH_UDP);
    let far = udp(&beyond, "198.18.1.2", MESH_UDP);
    let here_near = udp(&pair.here, LOCAL, MESH_UDP);
    let here_far = udp(&pair.here, "198.18.1.1", MESH_UDP);
    let (counted, during_fault, interfaces, reattached) = in_netns(&pair.here, move || {
        let mut datapath = Datapath::attach(&DatapathConfig {
            interfaces: vec!["x0a".to_owned(), "x0c".to_owned()],
            ports: vec![MESH_TCP, MESH_UDP],
            edt: false,
        })
        .expect("attach to both interfaces");
        let reattached = datapath.attach_interface("x0c").expect("attach again");
        send(&here_near, "198.18.0.2", MESH_UDP, 50);
        send(&here_far, "198.18.1.2", MESH_UDP, 70);
        send(&far, "198.18.1.1", MESH_UDP, 30);
        let (mut at_near, mut at_far, mut at_here) = (BTreeMap::new(), BTreeMap::new(), BTreeMap::new());
        wait_for("every datagram to arrive", Duration::from_secs(10), || {
            drain(&near, &mut at_near);
            drain(&far, &mut at_far);
            drain(&here_far, &mut at_here);
            at_near.values().sum::<usize>() == 50
                && at_far.values().sum::<usize>() == 70
                && at_here.values().sum::<usize>() == 30
        });
        let counted = datapath.traffic().expect("read the counters");
        // A partition of the peer behind the second interface, towards it only.
        datapath
            .set_fault(
                addr("198.18.1.2"),
                Fault {
                    partition: Directions::TO_PEER,
                    ..Fault::until(hour_from_now())
                },
            )
            .expect("set the fault");
        send(&here_far, "198.18.1.2", MESH_UDP, 20);
        send(&here_near, "198.18.0.2", MESH_UDP, 20);
        let mut near_after = BTreeMap::new();
        wait_for("the datagrams to the other peer", Duration::from_secs(10), || {
            drain(&near, &mut near_after);
            near_after.values().sum::<usize>() == 20
        });
        let mut far_after = BTreeMap::new();
        drain(&far, &mut far_after);
        let during_fault = (
            near_after.values().sum::<usize>(),
            far_after.values().sum::<usize>(),
            reading(&datapath.traffic().unwrap(), "198.18.1.2", Direction::ToPeer).map(|t| t.drops),
        );
        let interfaces = datapath.interfaces();
        datapath.detach().expect("detach");
        (counted, during_fault, interfaces, reattached)
    });
    assert_eq!(interfaces, ["x0a", "x0c"]);
    assert!(!reattached, "attaching to an interface twice is a no-op");
    for (peer, direction, packets) in [
        ("198.18.0.2", Direction::ToPeer, 50),
        ("198.18.1.2", Direction::ToPeer, 70),
        ("198.18.1.2", Direction::FromPeer, 30),
    ] {
        let reading = reading(&counted, peer, direction).unwrap_or_else(|| panic!("{peer} {direction:?}"));
        assert_eq!(reading.packets, packets, "{peer} {direction:?}: {counted:?}");
    }
    assert_eq!(counted.len(), 3, "{counted:?}");
    // The datagrams to the far peer were dropped on x0c, by the program the fault map drives;
    // the near peer's, on x0a, passed.
    assert_eq!(during_fault, (20, 0, Some(20)));
    assert_eq!(pair.our_filters_on("x0a"), (0, 0), "detached from x0a");
    assert_eq!(pair.our_filters_on("x0c"), (0, 0), "detached from x0c");
}

#[test]
#[ignore = "needs root and X0_NETNS_TESTS=1: run with `make ebpf-test`"]
fn a_restart_leaves_exactly_one_set_of_filters_on_every_interface() {
    require_kernel();
    let pair = Pair::create("restart2", &["198.18.0.2"]).with_second_link(&["198.18.1.2"]);
    let both = ["--interface", "x0c"];
    let first = Holder::start(&pair.here, &both);
    assert_eq!(
        (pair.our_filters_on("x0a"), pair.our_filters_on("x0c")),
        ((1, 1), (1, 1))
    );
    first.kill_hard();
    assert_eq!(
        (pair.our_filters_on("x0a"), pair.our_filters_on("x0c")),
        ((1, 1), (1, 1)),
        "a killed loader leaves its filters on both"
    );
    let second = Holder::start(&pair.here, &both);
    assert_eq!(
        (pair.our_filters_on("x0a"), pair.our_filters_on("x0c")),
        ((1, 1), (1, 1)),
        "its successor replaced them on both"
    );
    let status = second.stop();
    assert!(status.success(), "hold exits cleanly on SIGTERM: {status}");
    assert_eq!(
        (pair.our_filters_on("x0a"), pair.our_filters_on("x0c")),
        ((0, 0), (0, 0)),
        "a clean shutdown detaches from every interface"
    );
}

#[test]
#[ignore = "needs root and X0_NETNS_TESTS=1: run with `make ebpf-test`"]
fn a_missing_interface_among_several_attaches_nothing() {
    require_kernel();
    let pair = Pair::create("missing2", &["198.18.0.2"]);
    let error = in_netns(&pair.here, || {
        Datapath::attach(&DatapathConfig {
            interfaces: vec!["x0a".to_owned(), "x0-nonexistent".to_owned()],
            ports: vec![MESH_UDP],
            edt: false,
        })
        .err()
    })
    .expect("no such interface");
    assert_eq!(error.reason(), "NoSuchInterface");
    assert!(error.to_string().contains("x0-nonexistent"), "{error}");
    assert_eq!(
        pair.our_filters(),
        (0, 0),
        "nothing left on the interface that exists"
    );
}

#[test]
#[ignore = "needs root and X0_NETNS_TESTS=1: run with `make ebpf-test`"]
fn the_route_lookup_names_the_interface_each_peer_is_reached_through() {
    require_kernel();
    let pair = Pair::create("route", &["198.18.0.2"]).with_second_link(&["198.18.1.2"]);
    // A host route through the second link's peer, as the demo's ring has.
    ip(&[
        "-n",
        &pair.here,
        "route",
        "add",
        "198.18.200.7/32",
        "via",
        "198.18.1.2",
        "dev",
        "x0c",
    ]);
    let found = in_netns(&pair.here, || {
        [
            "198.18.0.2",
            "198.18.1.2",
            "198.18.200.7",
            "::ffff:198.18.1.2",
            LOCAL,
            "198.18.99.1",
        ]
        .map(|peer| x0tta6bl4_datapath::route_interface(addr(peer)).expect("route lookup"))
    });
    let name = |s: &str| Some(s.to_owned());
    assert_eq!(
        found,
        [name("x0a"), name("x0c"), name("x0c"), name("x0c"), None, None],
        "direct, direct, via a gateway, IPv4-mapped, local, unroutable"
    );
}

#[test]
#[ignore = "needs root and X0_NETNS_TESTS=1: run with `make ebpf-test`"]
fn an_interface_recreated_under_the_same_name_is_attached_again() {
    require_kernel();
    let pair = Pair::create("recreate", &["198.18.0.2"]);
    let here = pair.here.clone();
    let dummy = move |add: bool| {
        if add {
            // A veth with both ends here (this kernel may have no dummy devices).
            ip(&[
                "-n", &here, "link", "add", "x0e", "type", "veth", "peer", "name", "x0f",
            ]);
            ip(&["-n", &here, "link", "set", "x0e", "up"]);
        } else {
            ip(&["-n", &here, "link", "del", "x0e"]);
        }
    };
    let filters = {
        let here = pair.here.clone();
        move || our_filters(&here, "x0e")
    };
    dummy(true);
    let (first, after_recreate, again, on_new, interfaces) = in_netns(&pair.here, move || {
        let mut datapath = attach_here();
        let first = datapath.attach_interface("x0e").expect("attach to x0e");
        assert_eq!(filters(), (1, 1));
        dummy(false);
        dummy(true);
        let after_recreate = filters();
        let again = datapath.attach_interface("x0e").expect("attach to the new x0e");
        let on_new = filters();
        let interfaces = datapath.interfaces();
        datapath.detach().expect("detach");
        (first, after_recreate, again, on_new, interfaces)
    });
    assert!(first);
    assert_eq!(after_recreate, (0, 0), "the filters went with the old interface");
    assert!(
        again,
        "a new interface under the old name is attached, not skipped"
    );
    assert_eq!(on_new, (1, 1));
    assert_eq!(interfaces, ["x0a", "x0e"]);
    assert_eq!((pair.our_filters(), pair.our_filters_on("x0e")), ((0, 0), (0, 0)));
}
