//! The agent under test as a child process (standalone file mode): its files, its start, its
//! /status over plain HTTP, and what /proc says about its memory and CPU time. The process is
//! killed and reaped when the handle drops, so every exit path of the harness (an error, a
//! panic, a signal that ends `main`) takes it down.
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context as _, bail};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use x0tta6bl4_crypto::SigningKey;
use x0tta6bl4_crypto::keyfile::{self, StoredKey};

use crate::synthetic::{self, AGENT_NAME, MESH, NAMESPACE, TRUST_DOMAIN};

pub const SESSION_PORT: u16 = 7946;
pub const METRICS_PORT: u16 = 9090;

/// The agent configuration, as `Scratch::config` in the agent's own tests renders it (the
/// defaults of a MeshNetwork: hellos every 100 ms, dead after 300 ms, originators every 1 s,
/// post-quantum required); self-healing reports but does not act.
fn config_yaml() -> String {
    format!(
        r#"version: 1
mesh: {MESH}
namespace: {NAMESPACE}
udpPort: 7945
tcpPort: {SESSION_PORT}
metricsPort: {METRICS_PORT}
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
requirePostQuantum: true
trustDomain: {TRUST_DOMAIN}
ebpfMode: "off"
selfHealing: {{enabled: false, lossThresholdPercent: 20, rttThreshold: 50ms, anomalyDeciSigma: 30, quarantineAfter: 3, quarantineDuration: 5m}}
"#
    )
}

/// What `authority init`, `keys init` and `endorse` would have written, made in-process.
pub struct AgentFiles {
    pub config: PathBuf,
    pub state_dir: PathBuf,
    pub endorsement: PathBuf,
    pub authority_public_key: PathBuf,
}

impl AgentFiles {
    /// Writes the agent's key (0600, as the key-file module requires), its endorsement by
    /// `authority`, the authority's public key and the configuration under `dir`.
    pub fn write(dir: &Path, authority: &SigningKey, node_key: &StoredKey) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let state_dir = dir.join("state");
        keyfile::save(&state_dir.join("node.key"), node_key).context("saving the agent's key")?;
        let endorsement = dir.join("agent.endorsement");
        let endorsed = synthetic::endorse(authority, AGENT_NAME, &node_key.key, synthetic::unix_seconds())?;
        std::fs::write(&endorsement, endorsed.encode()?).context("writing the endorsement")?;
        let authority_public_key = dir.join("authority.pub");
        std::fs::write(&authority_public_key, authority.verifying_key().as_bytes())
            .context("writing the authority's public key")?;
        let config = dir.join("agent.yaml");
        std::fs::write(&config, config_yaml()).context("writing the agent configuration")?;
        Ok(AgentFiles {
            config,
            state_dir,
            endorsement,
            authority_public_key,
        })
    }
}

/// A running agent; killed and reaped on drop.
pub struct AgentProcess {
    child: Child,
    pub pid: u32,
    pub sessions: SocketAddr,
    pub metrics: SocketAddr,
    pub log: PathBuf,
}

impl AgentProcess {
    pub fn spawn(binary: &Path, files: &AgentFiles, address: IpAddr, log: PathBuf) -> anyhow::Result<Self> {
        let sessions = SocketAddr::new(address, SESSION_PORT);
        let metrics = SocketAddr::new(address, METRICS_PORT);
        let log_file = std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let child = Command::new(binary)
            .arg("--config")
            .arg(&files.config)
            .args(["--node-name", AGENT_NAME])
            .arg("--state-dir")
            .arg(&files.state_dir)
            .arg("--endorsement-file")
            .arg(&files.endorsement)
            .arg("--authority-public-key")
            .arg(&files.authority_public_key)
            .args(["--listen-addr", &sessions.to_string()])
            .args(["--metrics-addr", &metrics.to_string()])
            .args(["--advertise-address", &address.to_string()])
            .args(["--log-format", "json"])
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file)
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        Ok(AgentProcess {
            pid: child.id(),
            child,
            sessions,
            metrics,
            log,
        })
    }

    /// Fails if the agent has exited.
    pub fn check_alive(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!(
                "the agent exited ({status}); its log ends with:\n{}",
                self.log_tail(30)
            );
        }
        Ok(())
    }

    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    pub fn memory(&self) -> anyhow::Result<Memory> {
        Memory::of(self.pid)
    }

    pub fn cpu_ticks(&self) -> anyhow::Result<u64> {
        cpu_ticks(self.pid)
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// VmRSS and VmHWM of a process, in KiB.
#[derive(Debug, Clone, Copy, Default)]
pub struct Memory {
    pub rss_kib: u64,
    pub hwm_kib: u64,
}

impl Memory {
    pub fn of(pid: u32) -> anyhow::Result<Self> {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
            .with_context(|| format!("reading /proc/{pid}/status"))?;
        let field = |name: &str| -> anyhow::Result<u64> {
            status
                .lines()
                .find_map(|line| line.strip_prefix(name))
                .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
                .with_context(|| format!("no {name} in /proc/{pid}/status"))
        };
        Ok(Memory {
            rss_kib: field("VmRSS:")?,
            hwm_kib: field("VmHWM:")?,
        })
    }
}

/// User plus system CPU time of a process (all its threads), in clock ticks.
pub fn cpu_ticks(pid: u32) -> anyhow::Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    // The command name (field 2) may contain spaces: fields are counted after its ')'.
    let after = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .context("malformed /proc/<pid>/stat")?;
    let fields: Vec<&str> = after.split_whitespace().collect();
    // Field 3 (state) is fields[0]; utime and stime are fields 14 and 15.
    let utime: u64 = fields.get(11).and_then(|f| f.parse().ok()).context("no utime")?;
    let stime: u64 = fields.get(12).and_then(|f| f.parse().ok()).context("no stime")?;
    Ok(utime + stime)
}

/// `sysconf(_SC_CLK_TCK)` through `getconf` (no unsafe FFI in this workspace); 100 on Linux
/// if that fails.
pub fn clock_ticks_per_second() -> u64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .and_then(|text| text.trim().parse().ok())
        .unwrap_or(100)
}

/// A GET over plain HTTP/1.1 (the agent's metrics server): `(status code, body)`.
pub async fn http_get(address: SocketAddr, path: &str) -> anyhow::Result<(u16, String)> {
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(address).await?;
        let request = format!("GET {path} HTTP/1.1\r\nHost: agent\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await?;
        anyhow::Ok(response)
    };
    let response = tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .context("GET timed out")??;
    let text = String::from_utf8_lossy(&response);
    let (head, body) = text.split_once("\r\n\r\n").context("no HTTP header")?;
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .context("no HTTP status")?;
    Ok((code, body.to_owned()))
}

/// `/status` as JSON.
pub async fn status(address: SocketAddr) -> anyhow::Result<serde_json::Value> {
    match http_get(address, "/status").await? {
        (200, body) => serde_json::from_str(&body).context("/status is not JSON"),
        (code, _) => bail!("/status answered {code}"),
    }
}

/// Counter value from a status (`labels` exactly as the agent joins them, `""` for none).
pub fn counter(status: &serde_json::Value, name: &str, labels: &str) -> f64 {
    status["counters"][name][labels].as_f64().unwrap_or(0.0)
}

/// Neighbours the status shows alive.
pub fn alive_neighbours(status: &serde_json::Value) -> usize {
    status["neighbours"]
        .as_array()
        .map(|n| n.iter().filter(|n| n["alive"].as_bool() == Some(true)).count())
        .unwrap_or(0)
}

pub fn routes(status: &serde_json::Value) -> usize {
    status["routes"].as_array().map_or(0, Vec::len)
}
