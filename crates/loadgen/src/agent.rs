//! The agent under test as a child process (standalone file mode): its files, written
//! in-process because the harness holds the mesh authority's key, and what /proc says about its
//! memory and CPU time. Its configuration, its start and its /status come from
//! `x0tta6bl4-testsupport`; the process is killed and reaped when the handle drops, so every
//! exit path of the harness (an error, a panic, a signal that ends `main`) takes it down.
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context as _;
use x0tta6bl4_crypto::SigningKey;
use x0tta6bl4_crypto::keyfile::{self, StoredKey};
use x0tta6bl4_testsupport::{Agent, AgentSpec, NodeFiles, TestConfig};

use crate::synthetic::{self, AGENT_NAME, MESH, NAMESPACE, TRUST_DOMAIN};

/// What `authority init`, `keys init` and `endorse` would have written, made in-process, and
/// the agent's configuration: the tests' defaults (hellos every 100 ms, dead after 300 ms,
/// originators every 1 s, post-quantum required, self-healing reporting only) for this mesh.
pub struct AgentFiles {
    pub node: NodeFiles,
    pub config: PathBuf,
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
        TestConfig::new(MESH)
            .namespace(NAMESPACE)
            .trust_domain(TRUST_DOMAIN)
            .write(&config)
            .context("writing the agent configuration")?;
        Ok(AgentFiles {
            node: NodeFiles {
                name: AGENT_NAME.to_owned(),
                state_dir,
                endorsement,
                authority_public_key,
            },
            config,
        })
    }

    /// Starts `binary` with these files on `address` (sessions, advertised, /status), logging
    /// to `log`.
    pub fn spawn(&self, binary: &Path, address: IpAddr, log: PathBuf) -> anyhow::Result<Agent> {
        AgentSpec::standalone(binary, &self.node, &self.config, log)
            .on(address)
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))
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
