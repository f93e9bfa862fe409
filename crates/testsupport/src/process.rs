//! A node agent as a child process: how to start it ([`AgentSpec`]: identity files or cluster
//! credentials, configuration, addresses, peers, extra arguments, an optional network namespace,
//! a log file) and the running process ([`Agent`]), killed and reaped on drop so every exit path
//! of a test (an assertion, a panic) takes it down.
use std::ffi::OsString;
use std::fs::OpenOptions;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::config::{METRICS_PORT, SESSION_PORT};
use crate::identity::{NodeFiles, path_str};
use crate::wait::try_wait_for;

/// Lines of the log [`Agent::log_tail`] shows.
pub const LOG_TAIL_LINES: usize = 30;

/// How to start one agent. Built with [`AgentSpec::standalone`] (identity from files) or
/// [`AgentSpec::new`] (e.g. cluster mode, credentials from the environment), then overrides.
#[derive(Debug, Clone)]
pub struct AgentSpec {
    pub binary: PathBuf,
    /// `--node-name`.
    pub name: String,
    pub config: PathBuf,
    pub state_dir: PathBuf,
    /// Standalone mode: the endorsement file and the authority's public key.
    pub endorsement: Option<(PathBuf, PathBuf)>,
    /// Where it takes neighbour sessions (default: every address, [`SESSION_PORT`]).
    pub listen: SocketAddr,
    /// The address it advertises to its neighbours, if set.
    pub advertise: Option<String>,
    /// Where it serves /status and /metrics (default: 127.0.0.1, [`METRICS_PORT`]).
    pub metrics: SocketAddr,
    /// `--peer HOST:PORT`, dialled at start.
    pub peers: Vec<String>,
    /// Further arguments, after all the others.
    pub args: Vec<String>,
    pub env: Vec<(String, OsString)>,
    /// Run inside this network namespace (`ip netns exec`; root only).
    pub netns: Option<String>,
    /// Standard output and error go here.
    pub log: PathBuf,
    /// Append to the log (a restarted agent keeps its earlier lines) rather than truncate it.
    pub append_log: bool,
}

impl AgentSpec {
    /// Agent `name` run from `binary` with `config`, its key in `state_dir`, logging to `log`
    /// (truncated), with no identity files.
    pub fn new(
        binary: impl Into<PathBuf>,
        name: &str,
        config: &Path,
        state_dir: PathBuf,
        log: PathBuf,
    ) -> Self {
        AgentSpec {
            binary: binary.into(),
            name: name.to_owned(),
            config: config.to_owned(),
            state_dir,
            endorsement: None,
            listen: SocketAddr::from((Ipv4Addr::UNSPECIFIED, SESSION_PORT)),
            advertise: None,
            metrics: SocketAddr::from((Ipv4Addr::LOCALHOST, METRICS_PORT)),
            peers: Vec::new(),
            args: Vec::new(),
            env: Vec::new(),
            netns: None,
            log,
            append_log: false,
        }
    }

    /// Node `node`'s agent in standalone mode (its key, endorsement and authority from files),
    /// appending to `log`.
    pub fn standalone(binary: impl Into<PathBuf>, node: &NodeFiles, config: &Path, log: PathBuf) -> Self {
        let mut spec = AgentSpec::new(binary, &node.name, config, node.state_dir.clone(), log);
        spec.endorsement = Some((node.endorsement.clone(), node.authority_public_key.clone()));
        spec.append_log = true;
        spec
    }

    pub fn listen(mut self, listen: SocketAddr) -> Self {
        self.listen = listen;
        self
    }

    pub fn advertise(mut self, address: impl Into<String>) -> Self {
        self.advertise = Some(address.into());
        self
    }

    pub fn metrics(mut self, metrics: SocketAddr) -> Self {
        self.metrics = metrics;
        self
    }

    /// Sessions on `address`:[`SESSION_PORT`], advertised, and /status on
    /// `address`:[`METRICS_PORT`]: an agent with an address of its own (e.g. on loopback).
    pub fn on(self, address: std::net::IpAddr) -> Self {
        self.listen(SocketAddr::new(address, SESSION_PORT))
            .advertise(address.to_string())
            .metrics(SocketAddr::new(address, METRICS_PORT))
    }

    /// Inside network namespace `netns`, taking sessions on every address there, advertising
    /// `advertise` and serving /status on `metrics`.
    pub fn in_netns(self, netns: &str, advertise: &str, metrics: SocketAddr) -> Self {
        let mut spec = self
            .listen(SocketAddr::from((Ipv4Addr::UNSPECIFIED, SESSION_PORT)))
            .advertise(advertise)
            .metrics(metrics);
        spec.netns = Some(netns.to_owned());
        spec
    }

    pub fn peers<S: Into<String>>(mut self, peers: impl IntoIterator<Item = S>) -> Self {
        self.peers.extend(peers.into_iter().map(Into::into));
        self
    }

    pub fn args<S: Into<String>>(mut self, args: impl IntoIterator<Item = S>) -> Self {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    pub fn env(mut self, name: &str, value: impl Into<OsString>) -> Self {
        self.env.push((name.to_owned(), value.into()));
        self
    }

    /// Starts the agent; panics if it cannot be started (for tests).
    pub fn start(&self) -> Agent {
        self.spawn()
            .unwrap_or_else(|error| panic!("start agent {} ({}): {error}", self.name, self.binary.display()))
    }

    /// Starts the agent.
    pub fn spawn(&self) -> io::Result<Agent> {
        let log_file = OpenOptions::new()
            .create(true)
            .write(true)
            .append(self.append_log)
            .truncate(!self.append_log)
            .open(&self.log)?;
        let mut command = match &self.netns {
            Some(netns) => {
                let mut command = Command::new("ip");
                command.args(["netns", "exec", netns]).arg(&self.binary);
                command
            }
            None => Command::new(&self.binary),
        };
        command
            .args(["--config", path_str(&self.config)])
            .args(["--node-name", &self.name])
            .args(["--state-dir", path_str(&self.state_dir)])
            .args(["--listen-addr", &self.listen.to_string()])
            .args(["--metrics-addr", &self.metrics.to_string()])
            .args(["--log-format", "json"])
            // X0_AGENT_LOG (a RUST_LOG filter) to debug a test's agents.
            .env(
                "RUST_LOG",
                std::env::var("X0_AGENT_LOG").unwrap_or_else(|_| "info".to_owned()),
            )
            .envs(self.env.iter().map(|(name, value)| (name, value)))
            .stdin(Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file);
        if let Some((endorsement, authority_public_key)) = &self.endorsement {
            command
                .args(["--endorsement-file", path_str(endorsement)])
                .args(["--authority-public-key", path_str(authority_public_key)]);
        }
        if let Some(advertise) = &self.advertise {
            command.args(["--advertise-address", advertise]);
        }
        for peer in &self.peers {
            command.args(["--peer", peer]);
        }
        command.args(&self.args);
        Ok(Agent {
            name: self.name.clone(),
            listen: self.listen,
            metrics: self.metrics,
            log: self.log.clone(),
            child: command.spawn()?,
        })
    }
}

/// A running agent, killed and reaped on drop.
#[derive(Debug)]
pub struct Agent {
    pub name: String,
    /// Where it takes neighbour sessions.
    pub listen: SocketAddr,
    /// Where it serves /status and /metrics.
    pub metrics: SocketAddr,
    pub log: PathBuf,
    child: Child,
}

impl Agent {
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
        try_wait_for(
            "the agent to exit",
            deadline,
            Duration::from_millis(20),
            || match self.child.try_wait() {
                Ok(Some(status)) => Ok(status.success()),
                _ => Err("still running".to_owned()),
            },
        )
        .unwrap_or(false)
    }

    /// Fails, with its exit status and the end of its log, if the agent has exited.
    pub fn check_running(&mut self) -> io::Result<()> {
        match self.child.try_wait()? {
            None => Ok(()),
            Some(status) => Err(io::Error::other(format!(
                "the agent exited ({status}); its log ends with:\n{}",
                self.log_tail()
            ))),
        }
    }

    /// Its /status, once it serves one.
    pub fn status(&self) -> Option<Value> {
        crate::status::status(self.metrics)
    }

    /// The last [`LOG_TAIL_LINES`] lines of its log.
    pub fn log_tail(&self) -> String {
        log_tail(&self.log, LOG_TAIL_LINES)
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The last `lines` lines of the file at `path` (empty if it cannot be read).
pub fn log_tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
