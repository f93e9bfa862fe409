//! The agent's configuration for tests: the typed [`AgentConfig`] with test-friendly defaults
//! (a MeshNetwork's routing timers, post-quantum required, no eBPF, self-healing reporting but
//! not acting), changed with builder-style overrides and written as the file the agent reads,
//! so no test writes the file by hand.
use std::io;
use std::path::Path;
use std::time::Duration;

use x0tta6bl4_api::agent_config::{AgentConfig, CONFIG_VERSION, SelfHealing, Weights};
use x0tta6bl4_api::mesh_network::{EbpfMode, KeyExchange, SignatureAlgorithm};

/// The trust domain of the tests' identities and configurations.
pub const TRUST_DOMAIN: &str = "x0.test";
/// The namespace the tests' meshes live in.
pub const NAMESPACE: &str = "it";
/// Where an agent takes neighbour sessions (the configuration's `tcpPort`).
pub const SESSION_PORT: u16 = 7946;
/// Where an agent serves /status and /metrics (the configuration's `metricsPort`).
pub const METRICS_PORT: u16 = 9090;

/// An agent configuration being built: [`TestConfig::new`] and overrides, then
/// [`TestConfig::write`] (or [`TestConfig::build`] for the typed value).
#[derive(Debug, Clone, PartialEq)]
pub struct TestConfig(AgentConfig);

impl TestConfig {
    /// Mesh `mesh` in [`NAMESPACE`] and [`TRUST_DOMAIN`]: hellos every 100 ms, a neighbour dead
    /// after 300 ms, originators every 1 s, post-quantum key exchange required, keys rotated
    /// daily, eBPF off, self-healing reporting only.
    pub fn new(mesh: &str) -> Self {
        TestConfig(AgentConfig {
            version: CONFIG_VERSION,
            mesh: mesh.to_owned(),
            namespace: NAMESPACE.to_owned(),
            udp_port: 7945,
            tcp_port: SESSION_PORT,
            metrics_port: METRICS_PORT,
            log_level: "info".to_owned(),
            hello_interval: Duration::from_millis(100),
            originator_interval: Duration::from_secs(1),
            neighbour_timeout: Duration::from_millis(300),
            max_hops: 16,
            metric_weights: Weights {
                loss: 24,
                rtt: 16,
                ebpf_drops: 24,
            },
            peering: Default::default(),
            key_exchange: KeyExchange::X25519MLKEM768,
            signature: SignatureAlgorithm::MlDsa65,
            key_rotation_interval: Duration::from_secs(24 * 3600),
            key_overlap: Duration::from_secs(3600),
            require_post_quantum: true,
            trust_domain: TRUST_DOMAIN.to_owned(),
            workload_api_socket: None,
            ebpf_mode: EbpfMode::Off,
            self_healing: SelfHealing {
                enabled: false,
                loss_threshold_percent: 20,
                rtt_threshold: Duration::from_millis(50),
                anomaly_deci_sigma: 30,
                quarantine_after: 3,
                quarantine_duration: Duration::from_secs(300),
            },
            authority_public_key: String::new(),
        })
    }

    /// Whether a session must use the post-quantum key exchange (`requirePostQuantum`).
    pub fn require_post_quantum(mut self, required: bool) -> Self {
        self.0.require_post_quantum = required;
        self
    }

    /// Whether the self-healing loop acts (quarantines) or only reports.
    pub fn self_healing(mut self, acting: bool) -> Self {
        self.0.self_healing.enabled = acting;
        self
    }

    /// How often keys rotate, and how long the old key is still accepted.
    pub fn key_rotation(mut self, interval: Duration, overlap: Duration) -> Self {
        self.0.key_rotation_interval = interval;
        self.0.key_overlap = overlap;
        self
    }

    pub fn namespace(mut self, namespace: &str) -> Self {
        namespace.clone_into(&mut self.0.namespace);
        self
    }

    pub fn trust_domain(mut self, trust_domain: &str) -> Self {
        trust_domain.clone_into(&mut self.0.trust_domain);
        self
    }

    /// Any other change to the typed configuration.
    pub fn with(mut self, change: impl FnOnce(&mut AgentConfig)) -> Self {
        change(&mut self.0);
        self
    }

    pub fn build(self) -> AgentConfig {
        self.0
    }

    /// The mesh this configuration is for.
    pub fn mesh(&self) -> &str {
        &self.0.mesh
    }

    /// The file's text, as the agent reads it (YAML; durations as Go-style text).
    pub fn render(&self) -> String {
        serde_norway::to_string(&self.0).expect("an agent configuration serialises")
    }

    /// Writes [`TestConfig::render`] to `path`.
    pub fn write(&self, path: &Path) -> io::Result<()> {
        std::fs::write(path, self.render())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_are_a_fast_post_quantum_mesh_without_ebpf_whose_healing_only_reports() {
        let config = TestConfig::new("line").build();
        assert_eq!(
            (config.mesh.as_str(), config.namespace.as_str()),
            ("line", NAMESPACE)
        );
        assert_eq!(
            (config.tcp_port, config.metrics_port),
            (SESSION_PORT, METRICS_PORT)
        );
        assert_eq!(config.hello_interval, Duration::from_millis(100));
        assert_eq!(config.neighbour_timeout, Duration::from_millis(300));
        assert_eq!(config.originator_interval, Duration::from_secs(1));
        assert!(config.require_post_quantum);
        assert_eq!(config.trust_domain, TRUST_DOMAIN);
        assert_eq!(config.ebpf_mode, EbpfMode::Off);
        assert!(!config.self_healing.enabled);
    }

    #[test]
    fn a_rendered_configuration_is_read_back_by_the_agents_parser_with_its_overrides() {
        let config = TestConfig::new("rotation")
            .require_post_quantum(false)
            .self_healing(true)
            .key_rotation(Duration::from_secs(4), Duration::from_secs(2))
            .namespace("load")
            .trust_domain("x0.load")
            .with(|c| c.max_hops = 3);
        let text = config.render();
        assert!(text.contains("keyRotationInterval: 4s"), "{text}");
        let parsed = AgentConfig::parse(&text).unwrap();
        assert_eq!(parsed, config.clone().build());
        assert!(!parsed.require_post_quantum && parsed.self_healing.enabled);
        assert_eq!((parsed.namespace.as_str(), parsed.max_hops), ("load", 3));
        assert_eq!(config.mesh(), "rotation");
    }
}
