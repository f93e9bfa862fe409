//! Command line: the default run mode (what the operator's DaemonSet starts, `--config PATH`)
//! and the admin subcommands that set up identities for tests and standalone meshes.
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use x0tta6bl4_telemetry::LogFormat;

#[derive(Parser, Debug)]
#[command(
    name = "x0tta6bl4-node-agent",
    version,
    about = "x0tta6bl4 node agent",
    subcommand_negates_reqs = true,
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub run: RunArgs,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Manage a mesh authority key (the key that endorses node keys).
    Authority {
        #[command(subcommand)]
        command: AuthorityCommand,
    },
    /// Manage this node's key.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Endorse a node's public key with an authority key.
    Endorse(EndorseArgs),
}

#[derive(Subcommand, Debug)]
pub enum AuthorityCommand {
    /// Create an authority key pair: DIR/authority.key (0600) and DIR/authority.pub (raw public key).
    Init {
        /// Directory to write into (created 0700 if missing).
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(Subcommand, Debug)]
pub enum KeysCommand {
    /// Create the node key in the state directory (kept if it exists) and print the path of
    /// its public key.
    Init {
        /// The agent's state directory (the same `--state-dir` the agent runs with).
        #[arg(long)]
        state_dir: PathBuf,
    },
}

#[derive(Args, Debug)]
pub struct EndorseArgs {
    /// The authority's key file (from `authority init`).
    #[arg(long)]
    pub authority: PathBuf,
    /// The node's raw ML-DSA-65 public key (from `keys init`).
    #[arg(long)]
    pub public_key: PathBuf,
    /// The node's SPIFFE ID: spiffe://<trustDomain>/ns/<namespace>/mesh/<mesh>/node/<nodeName>.
    #[arg(long)]
    pub spiffe_id: String,
    /// Key epoch the endorsement covers.
    #[arg(long, default_value_t = 1)]
    pub epoch: u32,
    /// How long the endorsement holds, from now (a duration like 24h or 90m).
    #[arg(long, default_value = "24h")]
    pub valid_for: String,
    /// Where to write the endorsement (the bytes the agent reads with `--endorsement-file`).
    #[arg(long)]
    pub out: PathBuf,
}

#[derive(Args, Debug)]
pub struct RunArgs {
    /// The rendered agent configuration (mounted from the mesh's ConfigMap).
    #[arg(long, env = "X0_AGENT_CONFIG", required = true)]
    pub config: Option<PathBuf>,
    /// Name of the node this agent runs on.
    #[arg(long, env = "NODE_NAME", required = true)]
    pub node_name: Option<String>,
    /// Address to serve /metrics, /healthz, /readyz, /status and /ping on; defaults to the
    /// config's metricsPort on all interfaces.
    #[arg(long, env = "X0_METRICS_ADDR")]
    pub metrics_addr: Option<SocketAddr>,
    /// Address to accept neighbour sessions on; defaults to the config's tcpPort on all
    /// interfaces.
    #[arg(long, env = "X0_LISTEN_ADDR")]
    pub listen_addr: Option<SocketAddr>,
    /// Address neighbours reach this agent at, advertised in its routing messages (with the
    /// config's tcpPort).
    #[arg(long, env = "X0_ADVERTISE_ADDRESS")]
    pub advertise_address: Option<IpAddr>,
    /// The SPIFFE Workload API socket (a path or unix:// URI) to take this agent's X.509-SVID
    /// from; overrides the mesh's spec.identity.workloadApiSocket (for agents that share a
    /// host but not a SPIRE agent, as in the demo).
    #[arg(long, env = "SPIFFE_ENDPOINT_SOCKET")]
    pub workload_api_socket: Option<String>,
    /// Directory of the node key; defaults to /var/lib/x0tta6bl4/<namespace>/<mesh>.
    #[arg(long, env = "X0_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
    /// This node's endorsement (the bytes `endorse` writes). Standalone mode: with
    /// `--authority-public-key`.
    #[arg(long, env = "X0_ENDORSEMENT_FILE", requires = "authority_public_key")]
    pub endorsement_file: Option<PathBuf>,
    /// The mesh authority's raw ML-DSA-65 public key (the `authority.pub` of `authority init`).
    #[arg(long, env = "X0_AUTHORITY_PUBLIC_KEY", requires = "endorsement_file")]
    pub authority_public_key: Option<PathBuf>,
    /// A peer to dial, HOST:PORT (repeatable). Standalone mode.
    #[arg(long = "peer", value_name = "HOST:PORT")]
    pub peers: Vec<String>,
    /// An interface the eBPF datapath attaches to (ebpfMode tc); repeatable, or comma-separated
    /// in X0_INTERFACE. By default, every interface the kernel routes a peer's address through
    /// (looked up again as peers come and go), never loopback.
    #[arg(long = "interface", env = "X0_INTERFACE", value_delimiter = ',')]
    pub interfaces: Vec<String>,
    /// Serve faults by hand (/chaos/faults) and the eBPF datapath's counters and fault map
    /// (/datapath) on this loopback address.
    #[arg(long, env = "X0_FAULT_API")]
    pub fault_api: Option<SocketAddr>,
    /// Log format: text or json.
    #[arg(long, default_value = "json", env = "X0_LOG_FORMAT")]
    pub log_format: LogFormat,
    /// Test builds only (the `test-faults` feature): faults set by hand; none in production.
    #[command(flatten)]
    pub test: crate::test_faults::TestArgs,
    /// Federated learning (jobs, results, the injection endpoint).
    #[command(flatten)]
    pub fl: crate::fl::FlArgs,
    /// Spans exported over OTLP (off unless an endpoint is given).
    #[command(flatten)]
    pub traces: x0tta6bl4_telemetry::TraceArgs,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("x0tta6bl4-node-agent").chain(args.iter().copied()))
    }

    #[test]
    fn the_daemonset_command_line_still_parses_as_the_run_mode() {
        let cli = parse(&["--config", "/etc/x0/agent.yaml", "--node-name", "n1"]).unwrap();
        assert!(cli.command.is_none());
        assert_eq!(cli.run.config, Some(PathBuf::from("/etc/x0/agent.yaml")));
    }

    #[test]
    fn the_run_mode_requires_a_config() {
        assert!(parse(&["--node-name", "n1"]).is_err());
    }

    #[test]
    fn admin_subcommands_need_no_config() {
        let cli = parse(&["authority", "init", "--out", "/tmp/a"]).unwrap();
        assert!(matches!(
            cli.command,
            Some(Command::Authority {
                command: AuthorityCommand::Init { .. }
            })
        ));
        let cli = parse(&[
            "endorse",
            "--authority",
            "a.key",
            "--public-key",
            "n.pub",
            "--spiffe-id",
            "spiffe://td/ns/x/mesh/m/node/n",
            "--epoch",
            "3",
            "--valid-for",
            "24h",
            "--out",
            "n.endorsement",
        ])
        .unwrap();
        let Some(Command::Endorse(endorse)) = cli.command else {
            panic!("endorse expected");
        };
        assert_eq!(endorse.epoch, 3);
    }

    #[test]
    fn interfaces_repeat_and_split_on_commas() {
        let cli = parse(&[
            "--config",
            "c",
            "--node-name",
            "n",
            "--interface",
            "left",
            "--interface",
            "right,mgmt",
        ])
        .unwrap();
        assert_eq!(cli.run.interfaces, ["left", "right", "mgmt"]);
        let none = parse(&["--config", "c", "--node-name", "n"]).unwrap();
        assert!(none.run.interfaces.is_empty(), "automatic by default");
    }

    #[test]
    fn an_endorsement_file_needs_the_authority_key_too() {
        assert!(parse(&["--config", "c", "--node-name", "n", "--endorsement-file", "e"]).is_err());
    }
}
