//! The configuration the operator renders into the agents' ConfigMap and the agent reads at
//! start. It lives here, not in the operator, because the agent must not depend on the operator.
use serde::{Deserialize, Serialize};

use crate::mesh_network::{EbpfMode, MeshNetworkSpec};

/// File name of the rendered configuration inside the ConfigMap and the agent's config volume.
pub const CONFIG_FILE: &str = "agent.yaml";

/// Everything an agent needs to join its mesh; durations are kept as the user wrote them.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AgentConfig {
    /// Format version of this file, so an agent refuses a config it cannot understand.
    pub version: u32,
    pub mesh: String,
    pub namespace: String,
    pub udp_port: u16,
    pub tcp_port: u16,
    pub metrics_port: u16,
    pub log_level: String,
    pub hello_interval: String,
    pub originator_interval: String,
    pub neighbour_timeout: String,
    pub max_hops: u32,
    pub metric_weights: Weights,
    pub key_exchange: String,
    pub signature: String,
    pub key_rotation_interval: String,
    pub key_overlap: String,
    pub require_post_quantum: bool,
    pub trust_domain: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload_api_socket: Option<String>,
    pub ebpf_mode: String,
    pub self_healing: SelfHealing,
    /// The mesh authority's ML-DSA-65 public key (base64): the only key whose endorsements
    /// this agent trusts. Empty outside a cluster, where it comes from a file instead.
    #[serde(default)]
    pub authority_public_key: String,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Weights {
    pub loss: u32,
    pub rtt: u32,
    pub ebpf_drops: u32,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SelfHealing {
    pub enabled: bool,
    pub loss_threshold_percent: u32,
    pub rtt_threshold: String,
    pub anomaly_deci_sigma: u32,
    pub quarantine_after: u32,
    pub quarantine_duration: String,
}

/// The current format version.
pub const CONFIG_VERSION: u32 = 1;

impl AgentConfig {
    /// Renders the configuration of one mesh. The schema bounds every integer it converts.
    pub fn render(mesh: &str, namespace: &str, spec: &MeshNetworkSpec, authority_public_key: &str) -> Self {
        let port = |p: i32| u16::try_from(p).unwrap_or_default();
        let count = |n: i32| u32::try_from(n).unwrap_or_default();
        Self {
            version: CONFIG_VERSION,
            mesh: mesh.to_owned(),
            namespace: namespace.to_owned(),
            udp_port: port(spec.agent.udp_port),
            tcp_port: port(spec.agent.tcp_port),
            metrics_port: port(spec.agent.metrics_port),
            log_level: spec.agent.log_level.clone(),
            hello_interval: spec.routing.hello_interval.clone(),
            originator_interval: spec.routing.originator_interval.clone(),
            neighbour_timeout: spec.routing.neighbour_timeout.clone(),
            max_hops: count(spec.routing.max_hops),
            metric_weights: Weights {
                loss: count(spec.routing.metric_weights.loss),
                rtt: count(spec.routing.metric_weights.rtt),
                ebpf_drops: count(spec.routing.metric_weights.ebpf_drops),
            },
            key_exchange: spec.crypto.key_exchange.as_str().to_owned(),
            signature: spec.crypto.signature.as_str().to_owned(),
            key_rotation_interval: spec.crypto.key_rotation_interval.clone(),
            key_overlap: spec.crypto.key_overlap.clone(),
            require_post_quantum: spec.crypto.require_post_quantum,
            trust_domain: spec.identity.trust_domain.clone(),
            workload_api_socket: spec.identity.workload_api_socket.clone(),
            ebpf_mode: spec.ebpf.mode.as_str().to_owned(),
            self_healing: SelfHealing {
                enabled: spec.self_healing.enabled,
                loss_threshold_percent: count(spec.self_healing.loss_threshold_percent),
                rtt_threshold: spec.self_healing.rtt_threshold.clone(),
                anomaly_deci_sigma: count(spec.self_healing.anomaly_deci_sigma),
                quarantine_after: count(spec.self_healing.quarantine_after),
                quarantine_duration: spec.self_healing.quarantine_duration.clone(),
            },
            authority_public_key: authority_public_key.to_owned(),
        }
    }

    /// Parses a rendered file (JSON or YAML), refusing unknown fields and versions with a
    /// message that says which.
    pub fn parse(text: &str) -> Result<Self, String> {
        let config: Self =
            serde_yaml::from_str(text).map_err(|e| format!("invalid agent configuration: {e}"))?;
        if config.version != CONFIG_VERSION {
            return Err(format!(
                "agent configuration version {} is not supported (this agent reads version {CONFIG_VERSION})",
                config.version
            ));
        }
        Ok(config)
    }

    /// The eBPF mode as a typed value.
    pub fn ebpf(&self) -> EbpfMode {
        if self.ebpf_mode == "off" {
            EbpfMode::Off
        } else {
            EbpfMode::Tc
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rendered_config_parses_back_identically() {
        let spec: MeshNetworkSpec = serde_yaml::from_str("agent: {udpPort: 5000}").unwrap();
        let config = AgentConfig::render("demo", "ns1", &spec, "QUJD");
        assert_eq!(config.udp_port, 5000);
        let text = serde_json::to_string_pretty(&config).unwrap();
        assert_eq!(AgentConfig::parse(&text), Ok(config));
    }

    #[test]
    fn an_unknown_version_or_field_is_refused_with_a_reason() {
        let spec = MeshNetworkSpec::minimal();
        let mut value = serde_json::to_value(AgentConfig::render("demo", "ns1", &spec, "QUJD")).unwrap();
        value["version"] = 2.into();
        assert!(
            AgentConfig::parse(&value.to_string())
                .unwrap_err()
                .contains("version 2")
        );
        value["version"] = 1.into();
        value["surprise"] = true.into();
        assert!(
            AgentConfig::parse(&value.to_string())
                .unwrap_err()
                .contains("surprise")
        );
    }
}
