//! What the agent derives from its rendered configuration (pure: tested without IO).
use std::net::SocketAddr;
use std::path::PathBuf;
use x0tta6bl4_api::agent_config::AgentConfig;
use x0tta6bl4_routing::healing::HealingConfig;
use x0tta6bl4_routing::{MetricWeights, RouterConfig};
use x0tta6bl4_session::tls::KeyExchangePolicy;

use crate::cli::RunArgs;
use crate::identity;
use crate::test_faults::TestKeyExchange;

/// Routes are dropped when not refreshed for this many originator intervals.
const ROUTE_EXPIRY_INTERVALS: u32 = 4;

/// The routing configuration: intervals, hop limit and metric weights from the config (parsed
/// and checked when it was read), and the endpoint this node advertises. The config's key
/// exchange and signature are the only ones its types admit, so nothing is left to refuse.
pub fn router_config(config: &AgentConfig, endpoint: String) -> RouterConfig {
    RouterConfig {
        hello_interval: config.hello_interval,
        neighbour_timeout: config.neighbour_timeout,
        originator_interval: config.originator_interval,
        route_expiry: config.originator_interval.saturating_mul(ROUTE_EXPIRY_INTERVALS),
        max_hops: u8::try_from(config.max_hops).unwrap_or(u8::MAX),
        weights: MetricWeights {
            loss: config.metric_weights.loss,
            rtt: config.metric_weights.rtt,
            drops: config.metric_weights.ebpf_drops,
        },
        endpoint,
        ..RouterConfig::default()
    }
}

/// The self-healing loop's knobs from `selfHealing` (anomalyDeciSigma is k × 10).
pub fn healing_config(config: &AgentConfig) -> HealingConfig {
    let healing = &config.self_healing;
    HealingConfig {
        enabled: healing.enabled,
        loss_threshold_percent: healing.loss_threshold_percent,
        rtt_threshold: healing.rtt_threshold,
        anomaly_sigma: f64::from(healing.anomaly_deci_sigma) / 10.0,
        quarantine_after: healing.quarantine_after.max(1),
        quarantine_duration: healing.quarantine_duration,
        ..HealingConfig::default()
    }
}

/// `requirePostQuantum` → only X25519MLKEM768; otherwise it is preferred and X25519 accepted.
pub fn key_exchange_policy(
    config: &AgentConfig,
    test_override: Option<TestKeyExchange>,
) -> KeyExchangePolicy {
    match test_override {
        Some(TestKeyExchange::Classical) => KeyExchangePolicy::ClassicalOnly,
        None if config.require_post_quantum => KeyExchangePolicy::PostQuantumOnly,
        None => KeyExchangePolicy::PreferPostQuantum,
    }
}

/// Everything a run derives from its command line and configuration before it starts a task.
#[derive(Debug)]
pub struct RunSettings {
    pub spiffe_id: String,
    pub self_id: x0tta6bl4_wire::NodeId,
    pub state_dir: PathBuf,
    /// Where neighbour sessions are accepted.
    pub listen: SocketAddr,
    /// Where /metrics, the probes, /status and /ping are served.
    pub http: SocketAddr,
    /// The endpoint this node advertises (empty when no address was given).
    pub endpoint: String,
    pub key_exchange: KeyExchangePolicy,
    pub router: RouterConfig,
    pub healing: HealingConfig,
    /// Where the X.509-SVID comes from (SPIFFE Workload API); None: the operator-endorsed keys
    /// alone, with self-signed TLS certificates.
    pub workload_api_socket: Option<String>,
}

impl RunSettings {
    pub fn derive(args: &RunArgs, config: &AgentConfig, node_name: &str) -> Self {
        let listen = args
            .listen_addr
            .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], config.tcp_port)));
        let endpoint = args
            .advertise_address
            .map(|ip| SocketAddr::new(ip, listen.port()).to_string())
            .unwrap_or_default();
        let spiffe_id = identity::spiffe_id(&config.trust_domain, &config.namespace, &config.mesh, node_name);
        RunSettings {
            self_id: identity::node_id(&spiffe_id),
            spiffe_id,
            state_dir: args
                .state_dir
                .clone()
                .unwrap_or_else(|| default_state_dir(config)),
            listen,
            http: args
                .metrics_addr
                .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], config.metrics_port))),
            router: router_config(config, endpoint.clone()),
            endpoint,
            key_exchange: key_exchange_policy(config, args.test.key_exchange()),
            healing: healing_config(config),
            workload_api_socket: args
                .workload_api_socket
                .clone()
                .or_else(|| config.workload_api_socket.clone())
                .filter(|socket| !socket.is_empty()),
        }
    }
}

/// `/var/lib/x0tta6bl4/<namespace>/<mesh>`.
pub fn default_state_dir(config: &AgentConfig) -> PathBuf {
    PathBuf::from("/var/lib/x0tta6bl4")
        .join(&config.namespace)
        .join(&config.mesh)
}

#[cfg(test)]
pub(crate) mod tests {
    use std::time::Duration;

    use super::*;

    /// A rendered configuration as the operator writes it (fields this agent does not read
    /// yet are left at their defaults by serde).
    pub(crate) fn mk_config() -> AgentConfig {
        AgentConfig::parse(
            r#"
version: 1
mesh: demo
namespace: ns1
udpPort: 7945
tcpPort: 7946
metricsPort: 9090
logLevel: info
helloInterval: 100ms
originatorInterval: 1s
neighbourTimeout: 300ms
maxHops: 300
metricWeights: {loss: 24, rtt: 16, ebpfDrops: 8}
keyExchange: X25519MLKEM768
signature: ML-DSA-65
keyRotationInterval: 24h
keyOverlap: 1h
requirePostQuantum: true
trustDomain: x0.local
ebpfMode: "off"
selfHealing: {enabled: false, lossThresholdPercent: 20, rttThreshold: 50ms, anomalyDeciSigma: 30, quarantineAfter: 3, quarantineDuration: 5m}
"#,
        )
        .unwrap()
    }

    #[test]
    fn the_router_takes_intervals_hops_and_weights_from_the_config() {
        let router = router_config(&mk_config(), "198.18.0.1:7946".to_owned());
        assert_eq!(router.hello_interval, Duration::from_millis(100));
        assert_eq!(router.neighbour_timeout, Duration::from_millis(300));
        assert_eq!(router.originator_interval, Duration::from_secs(1));
        assert_eq!(router.route_expiry, Duration::from_secs(4));
        assert_eq!(router.max_hops, 255, "clamped to what the wire carries");
        assert_eq!(router.weights.drops, 8);
        assert_eq!(router.endpoint, "198.18.0.1:7946");
    }

    fn run_args(args: &[&str]) -> RunArgs {
        use clap::Parser as _;
        let base = ["x0tta6bl4-node-agent", "--config", "c", "--node-name", "n1"];
        crate::cli::Cli::try_parse_from(base.iter().chain(args))
            .unwrap()
            .run
    }

    #[test]
    fn a_run_listens_and_serves_on_the_configured_ports_unless_told_otherwise() {
        let settings = RunSettings::derive(&run_args(&[]), &mk_config(), "n1");
        assert_eq!(settings.listen, "0.0.0.0:7946".parse().unwrap());
        assert_eq!(settings.http, "0.0.0.0:9090".parse().unwrap());
        assert_eq!(settings.endpoint, "", "nothing to advertise without an address");
        assert_eq!(settings.spiffe_id, "spiffe://x0.local/ns/ns1/mesh/demo/node/n1");
        assert_eq!(settings.self_id, identity::node_id(&settings.spiffe_id));
        assert_eq!(settings.state_dir, PathBuf::from("/var/lib/x0tta6bl4/ns1/demo"));

        let given = RunSettings::derive(
            &run_args(&[
                "--listen-addr",
                "127.0.0.2:7000",
                "--metrics-addr",
                "127.0.0.2:9000",
                "--advertise-address",
                "198.18.0.7",
                "--state-dir",
                "/tmp/s",
            ]),
            &mk_config(),
            "n1",
        );
        assert_eq!(given.listen, "127.0.0.2:7000".parse().unwrap());
        assert_eq!(given.http, "127.0.0.2:9000".parse().unwrap());
        assert_eq!(
            given.endpoint, "198.18.0.7:7000",
            "advertised with the listening port"
        );
        assert_eq!(given.router.endpoint, given.endpoint);
        assert_eq!(given.state_dir, PathBuf::from("/tmp/s"));
    }

    #[test]
    fn self_healing_takes_its_thresholds_from_the_config() {
        let healing = healing_config(&mk_config());
        assert!(!healing.enabled);
        assert_eq!(healing.anomaly_sigma, 3.0);
        assert_eq!(healing.rtt_threshold, Duration::from_millis(50));
        assert_eq!(healing.quarantine_after, 3);
        assert_eq!(healing.quarantine_duration, Duration::from_secs(300));
    }

    #[test]
    fn require_post_quantum_allows_only_the_hybrid_group() {
        let mut config = mk_config();
        assert_eq!(
            key_exchange_policy(&config, None),
            KeyExchangePolicy::PostQuantumOnly
        );
        config.require_post_quantum = false;
        assert_eq!(
            key_exchange_policy(&config, None),
            KeyExchangePolicy::PreferPostQuantum
        );
        assert_eq!(
            key_exchange_policy(&config, Some(TestKeyExchange::Classical)),
            KeyExchangePolicy::ClassicalOnly
        );
        assert_eq!(
            default_state_dir(&config),
            PathBuf::from("/var/lib/x0tta6bl4/ns1/demo")
        );
    }
}
