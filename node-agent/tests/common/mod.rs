//! Helpers of the agent's process-level tests: identities made with the admin subcommands,
//! agents run as child processes (optionally inside a network namespace), /status read over a
//! plain HTTP/1.1 GET, and polling with a deadline (never a bare sleep as synchronisation).
#![allow(dead_code)]

pub mod ebpf_ring;

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_x0tta6bl4-node-agent");
pub const TRUST_DOMAIN: &str = "x0.test";
pub const NAMESPACE: &str = "it";

/// A loopback address of its own for agent `agent` of test `test` (each test file picks its
/// own number), so tests and concurrent runs never share a port.
pub fn loopback(test: u8, agent: usize) -> String {
    let run = u8::try_from(std::process::id() % 200).unwrap_or(0) + 20;
    format!("127.{run}.{test}.{}", agent + 10)
}

/// Where that agent serves /status and /metrics.
pub fn loopback_metrics(test: u8, agent: usize) -> SocketAddr {
    format!("{}:9090", loopback(test, agent))
        .parse()
        .expect("a socket address")
}

/// Network-namespace tests run only as root and when asked to (X0_NETNS_TESTS=1).
pub fn netns_enabled() -> bool {
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).trim() == "0");
    root && std::env::var("X0_NETNS_TESTS").as_deref() == Ok("1")
}

/// Whether a network-namespace test must skip itself (see [`netns_enabled`]); says so.
pub fn netns_skipped() -> bool {
    let skipped = !netns_enabled();
    if skipped {
        eprintln!("skipped: needs root and X0_NETNS_TESTS=1 (run `make netns`)");
    }
    skipped
}

/// Runs `ip` with `args`, panicking with its error output on failure.
pub fn ip(args: &[&str]) {
    let output = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        output.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Network namespaces of one run, made afresh (a namespace left over under the same name is
/// deleted first) with `lo` up, and deleted on drop: with them go the veth ends inside, their
/// peers, and any filter on them.
pub struct Namespaces(Vec<String>);

impl Namespaces {
    pub fn create(names: Vec<String>) -> Namespaces {
        for namespace in &names {
            let _ = Command::new("ip").args(["netns", "del", namespace]).output();
        }
        // Owned before the first `ip netns add`, so that a failure part way still cleans up.
        let namespaces = Namespaces(names);
        for namespace in &namespaces.0 {
            ip(&["netns", "add", namespace]);
            ip(&["-n", namespace, "link", "set", "lo", "up"]);
        }
        namespaces
    }
}

impl std::ops::Deref for Namespaces {
    type Target = [String];

    fn deref(&self) -> &[String] {
        &self.0
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for namespace in &self.0 {
            let _ = Command::new("ip").args(["netns", "del", namespace]).output();
        }
    }
}

/// A veth pair between two namespaces, both ends up: `right` in `here` with the /30 address
/// `right_address`, `left` in `there` with `left_address`.
pub fn veth_link(here: &str, there: &str, right_address: &str, left_address: &str) {
    ip(&[
        "-n", here, "link", "add", "right", "type", "veth", "peer", "name", "left", "netns", there,
    ]);
    ip(&[
        "-n",
        here,
        "addr",
        "add",
        &format!("{right_address}/30"),
        "dev",
        "right",
    ]);
    ip(&[
        "-n",
        there,
        "addr",
        "add",
        &format!("{left_address}/30"),
        "dev",
        "left",
    ]);
    ip(&["-n", here, "link", "set", "right", "up"]);
    ip(&["-n", there, "link", "set", "left", "up"]);
}

/// A management veth from the host into `namespace`, both ends up: `host_end` on the host with
/// the /30 address `host_address`, `mgmt` in the namespace with `inside_address`.
pub fn management_veth(host_end: &str, namespace: &str, host_address: &str, inside_address: &str) {
    ip(&[
        "link", "add", host_end, "type", "veth", "peer", "name", "mgmt", "netns", namespace,
    ]);
    ip(&["addr", "add", &format!("{host_address}/30"), "dev", host_end]);
    ip(&[
        "-n",
        namespace,
        "addr",
        "add",
        &format!("{inside_address}/30"),
        "dev",
        "mgmt",
    ]);
    ip(&["link", "set", host_end, "up"]);
    ip(&["-n", namespace, "link", "set", "mgmt", "up"]);
}

pub fn unix_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Runs an admin subcommand, panicking with its output on failure.
pub fn admin(args: &[&str]) -> String {
    let output = Command::new(BIN)
        .args(args)
        .output()
        .expect("run the agent binary");
    assert!(
        output.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

/// A scratch directory, removed on drop.
pub struct Scratch {
    pub dir: PathBuf,
}

impl Scratch {
    pub fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("x0-agent-it-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create the scratch directory");
        Scratch { dir }
    }

    /// `authority init`; returns the authority's directory.
    pub fn authority(&self, name: &str) -> PathBuf {
        let dir = self.dir.join(name);
        admin(&["authority", "init", "--out", dir.to_str().unwrap()]);
        dir
    }

    /// `keys init` and `endorse` for one node of `mesh`; returns its files.
    pub fn node(&self, authority: &Path, mesh: &str, name: &str) -> NodeFiles {
        let state_dir = self.dir.join("state").join(name);
        let public_key = admin(&["keys", "init", "--state-dir", state_dir.to_str().unwrap()]);
        let endorsement = self.dir.join(format!("{name}.endorsement"));
        let spiffe_id = format!("spiffe://{TRUST_DOMAIN}/ns/{NAMESPACE}/mesh/{mesh}/node/{name}");
        admin(&[
            "endorse",
            "--authority",
            authority.join("authority.key").to_str().unwrap(),
            "--public-key",
            &public_key,
            "--spiffe-id",
            &spiffe_id,
            "--epoch",
            "1",
            "--valid-for",
            "2h",
            "--out",
            endorsement.to_str().unwrap(),
        ]);
        NodeFiles {
            name: name.to_owned(),
            state_dir,
            endorsement,
            authority_public_key: authority.join("authority.pub"),
        }
    }

    /// A rendered agent configuration for `mesh`.
    pub fn config(&self, mesh: &str, require_post_quantum: bool) -> PathBuf {
        self.config_with(mesh, require_post_quantum, false)
    }

    /// A rendered configuration, with the self-healing loop acting (`true`) or only reporting.
    pub fn config_with(&self, mesh: &str, require_post_quantum: bool, self_healing: bool) -> PathBuf {
        let path = self
            .dir
            .join(format!("{mesh}-{require_post_quantum}-{self_healing}.yaml"));
        let text = format!(
            r#"version: 1
mesh: {mesh}
namespace: {NAMESPACE}
udpPort: 7945
tcpPort: 7946
metricsPort: 9090
logLevel: info
helloInterval: 100ms
originatorInterval: 1s
neighbourTimeout: 300ms
maxHops: 16
metricWeights: {{loss: 24, rtt: 16, ebpfDrops: 24}}
keyExchange: X25519MLKEM768
signature: ML-DSA-65
keyRotationInterval: 24h
keyOverlap: 1h
requirePostQuantum: {require_post_quantum}
trustDomain: {TRUST_DOMAIN}
ebpfMode: "off"
selfHealing: {{enabled: {self_healing}, lossThresholdPercent: 20, rttThreshold: 50ms, anomalyDeciSigma: 30, quarantineAfter: 3, quarantineDuration: 5m}}
"#
        );
        std::fs::write(&path, text).expect("write the agent configuration");
        path
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The files of one node's identity.
#[derive(Debug, Clone)]
pub struct NodeFiles {
    pub name: String,
    pub state_dir: PathBuf,
    pub endorsement: PathBuf,
    pub authority_public_key: PathBuf,
}

/// How to start one agent.
pub struct AgentSpec<'a> {
    pub node: &'a NodeFiles,
    pub config: &'a Path,
    /// Sessions are accepted on `<listen>:7946`; probes and /status on `<metrics>:9090`.
    pub listen: &'a str,
    pub metrics: SocketAddr,
    pub advertise: Option<&'a str>,
    pub peers: Vec<String>,
    pub extra: Vec<&'a str>,
    /// Run inside this network namespace.
    pub netns: Option<&'a str>,
    pub log_dir: &'a Path,
}

impl<'a> AgentSpec<'a> {
    /// An agent in network namespace `netns`, taking sessions on every address there,
    /// advertising `advertise` and serving /status on `metrics`, with no extra arguments.
    pub fn in_netns(
        node: &'a NodeFiles,
        config: &'a Path,
        netns: &'a str,
        advertise: &'a str,
        metrics: SocketAddr,
        peers: Vec<String>,
        log_dir: &'a Path,
    ) -> AgentSpec<'a> {
        AgentSpec {
            node,
            config,
            listen: "0.0.0.0",
            metrics,
            advertise: Some(advertise),
            peers,
            extra: Vec::new(),
            netns: Some(netns),
            log_dir,
        }
    }
}

/// Starts one agent per node of `nodes`, in order, each on its own loopback address of test
/// `test` (advertised as such, /status on [`loopback_metrics`]), dialling the agents whose
/// indices `peers[i]` lists, with the extra arguments `extra(i)`.
pub fn start_on_loopback<'e>(
    scratch: &Scratch,
    test: u8,
    nodes: &[NodeFiles],
    config: &Path,
    peers: &[&[usize]],
    extra: impl Fn(usize) -> Vec<&'e str>,
) -> Vec<Agent> {
    assert_eq!(peers.len(), nodes.len(), "one peer list per node");
    let listen: Vec<String> = (0..nodes.len()).map(|i| loopback(test, i)).collect();
    (0..nodes.len())
        .map(|i| {
            Agent::start(&AgentSpec {
                node: &nodes[i],
                config,
                listen: &listen[i],
                metrics: loopback_metrics(test, i),
                advertise: Some(&listen[i]),
                peers: peers[i].iter().map(|&j| format!("{}:7946", listen[j])).collect(),
                extra: extra(i),
                netns: None,
                log_dir: &scratch.dir,
            })
        })
        .collect()
}

/// A running agent, killed on drop.
pub struct Agent {
    pub name: String,
    pub metrics: SocketAddr,
    pub log: PathBuf,
    child: Child,
}

impl Agent {
    pub fn start(spec: &AgentSpec<'_>) -> Agent {
        let log = spec.log_dir.join(format!("{}.log", spec.node.name));
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("open the agent log");
        let mut command = match spec.netns {
            Some(netns) => {
                let mut command = Command::new("ip");
                command.args(["netns", "exec", netns, BIN]);
                command
            }
            None => Command::new(BIN),
        };
        command
            .args(["--config", spec.config.to_str().unwrap()])
            .args(["--node-name", &spec.node.name])
            .args(["--state-dir", spec.node.state_dir.to_str().unwrap()])
            .args(["--endorsement-file", spec.node.endorsement.to_str().unwrap()])
            .args([
                "--authority-public-key",
                spec.node.authority_public_key.to_str().unwrap(),
            ])
            .args(["--listen-addr", &format!("{}:7946", spec.listen)])
            .args(["--metrics-addr", &spec.metrics.to_string()])
            .args(["--log-format", "json"])
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().expect("clone the log handle"))
            .stderr(log_file);
        if let Some(advertise) = spec.advertise {
            command.args(["--advertise-address", advertise]);
        }
        for peer in &spec.peers {
            command.args(["--peer", peer]);
        }
        command.args(&spec.extra);
        let child = command.spawn().expect("start an agent");
        Agent {
            name: spec.node.name.clone(),
            metrics: spec.metrics,
            log,
            child,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL, and reap it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then wait at most `deadline` for the exit; returns whether it exited cleanly.
    pub fn terminate(&mut self, deadline: Duration) -> bool {
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status();
        let start = Instant::now();
        while start.elapsed() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.success();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    pub fn status(&self) -> Option<Value> {
        status(self.metrics)
    }

    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A GET over plain HTTP/1.1: `(status code, body)`.
pub fn get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_millis(500)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: agent\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    let code = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((code, body.to_owned()))
}

/// `/status` as JSON, once the mesh runs.
pub fn status(addr: SocketAddr) -> Option<Value> {
    match get(addr, "/status")? {
        (200, body) => serde_json::from_str(&body).ok(),
        _ => None,
    }
}

/// `/ping?to=...&count=...`: the answered results.
pub fn ping(addr: SocketAddr, to: &str, count: u32) -> Vec<Value> {
    let Some((200, body)) = get(addr, &format!("/ping?to={to}&count={count}&timeout_ms=2000")) else {
        return Vec::new();
    };
    let report: Value = serde_json::from_str(&body).unwrap_or_default();
    report["results"]
        .as_array()
        .map(|results| {
            results
                .iter()
                .filter(|r| r.get("rtt_ms").is_some())
                .cloned()
                .collect()
        })
        .unwrap_or_default()
}

/// Polls `check` every `every` until it returns `Some`, failing at `deadline` with `what` and
/// the last diagnosis.
pub fn wait_for<T>(
    what: &str,
    deadline: Duration,
    every: Duration,
    mut check: impl FnMut() -> Result<T, String>,
) -> T {
    let start = Instant::now();
    let mut last = String::new();
    while start.elapsed() < deadline {
        match check() {
            Ok(value) => return value,
            Err(why) => last = why,
        }
        std::thread::sleep(every);
    }
    panic!("timed out after {deadline:?} waiting for {what}: {last}");
}

/// Counter value from a status (`name` with the exact label set, e.g. `reason=foo`).
pub fn counter(status: &Value, name: &str, labels: &str) -> f64 {
    status["counters"][name][labels].as_f64().unwrap_or(0.0)
}

/// Node names this status has a route to, and their next hops and hop counts.
pub fn routes(status: &Value) -> Vec<(String, String, u64)> {
    status["routes"]
        .as_array()
        .map(|routes| {
            routes
                .iter()
                .map(|route| {
                    (
                        route["destination_name"].as_str().unwrap_or("?").to_owned(),
                        route["next_hop_name"].as_str().unwrap_or("?").to_owned(),
                        route["hop_count"].as_u64().unwrap_or(0),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Neighbour names alive in a status.
pub fn alive_neighbours(status: &Value) -> Vec<String> {
    status["neighbours"]
        .as_array()
        .map(|neighbours| {
            neighbours
                .iter()
                .filter(|n| n["alive"].as_bool() == Some(true))
                .filter_map(|n| n["node_name"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// The link cost to neighbour `name` in a status, while that neighbour is alive.
pub fn neighbour_cost(status: &Value, name: &str) -> Option<u64> {
    status["neighbours"]
        .as_array()?
        .iter()
        .find(|n| n["node_name"] == name && n["alive"] == true)?["cost"]
        .as_u64()
}
