//! The node agent. In this release it reads the configuration the operator rendered, reports
//! what it will join, and serves /metrics, /healthz and /readyz; the mesh protocol follows.
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::Parser;
use x0tta6bl4_api::agent_config::AgentConfig;
use x0tta6bl4_telemetry::{LogFormat, Readiness};

#[derive(Parser)]
#[command(name = "x0tta6bl4-node-agent", version, about = "x0tta6bl4 node agent")]
struct Args {
    /// The rendered agent configuration (mounted from the mesh's ConfigMap).
    #[arg(long, env = "X0_AGENT_CONFIG")]
    config: PathBuf,
    /// Name of the node this agent runs on.
    #[arg(long, env = "NODE_NAME")]
    node_name: String,
    /// Address to serve probes and metrics on; defaults to the config's metricsPort on all interfaces.
    #[arg(long, env = "X0_METRICS_ADDR")]
    metrics_addr: Option<SocketAddr>,
    /// Log format: text or json.
    #[arg(long, default_value = "json", env = "X0_LOG_FORMAT")]
    log_format: LogFormat,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let text = std::fs::read_to_string(&args.config)
        .with_context(|| format!("cannot read the agent configuration {}", args.config.display()))?;
    let config = AgentConfig::parse(&text).map_err(anyhow::Error::msg)?;
    x0tta6bl4_telemetry::init_logging(args.log_format, &config.log_level);

    let registry = prometheus::Registry::new();
    let info = prometheus::IntGaugeVec::new(
        prometheus::Opts::new("x0_agent_info", "Mesh this agent serves, with its policy"),
        &["mesh", "namespace", "node", "key_exchange", "signature"],
    )?;
    registry.register(Box::new(info.clone()))?;
    info.with_label_values(&[
        &config.mesh,
        &config.namespace,
        &args.node_name,
        &config.key_exchange,
        &config.signature,
    ])
    .set(1);

    tracing::info!(
        mesh = %config.mesh,
        namespace = %config.namespace,
        node = %args.node_name,
        udp_port = config.udp_port,
        tcp_port = config.tcp_port,
        hello_interval = %config.hello_interval,
        neighbour_timeout = %config.neighbour_timeout,
        key_exchange = %config.key_exchange,
        signature = %config.signature,
        require_post_quantum = config.require_post_quantum,
        trust_domain = %config.trust_domain,
        ebpf_mode = %config.ebpf_mode,
        "would join mesh (the mesh protocol is not in this release)"
    );

    let addr = args
        .metrics_addr
        .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], config.metrics_port)));
    let readiness = Readiness::new("starting");
    readiness.set_ready().await;
    tokio::select! {
        served = x0tta6bl4_telemetry::serve(addr, registry, readiness) => served,
        _ = tokio::signal::ctrl_c() => Ok(()),
    }
}
