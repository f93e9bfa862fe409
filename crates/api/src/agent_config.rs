//! The configuration the operator renders into the agents' ConfigMap and the agent reads at
//! start. It lives here, not in the operator, because the agent must not depend on the operator.
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::mesh_network::{EbpfMode, KeyExchange, MeshNetworkSpec, SignatureAlgorithm};
use crate::peering::Peering;
use crate::{FieldError, duration};

/// File name of the rendered configuration inside the ConfigMap and the agent's config volume.
pub const CONFIG_FILE: &str = "agent.yaml";

/// Everything an agent needs to join its mesh, typed: durations and algorithms are parsed once,
/// when the operator renders the file from a validated spec and when the agent reads it (in
/// the file, durations are written as Go-style text and algorithms by their API names).
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
    #[serde(with = "duration::positive")]
    pub hello_interval: Duration,
    #[serde(with = "duration::positive")]
    pub originator_interval: Duration,
    #[serde(with = "duration::positive")]
    pub neighbour_timeout: Duration,
    pub max_hops: u32,
    pub metric_weights: Weights,
    /// Bounded peering; written only when not the default, so that an agent of an earlier
    /// version (which refuses unknown fields) still reads a default mesh's file.
    #[serde(default, skip_serializing_if = "Peering::is_default")]
    pub peering: Peering,
    pub key_exchange: KeyExchange,
    pub signature: SignatureAlgorithm,
    #[serde(with = "duration::positive")]
    pub key_rotation_interval: Duration,
    #[serde(with = "duration::text")]
    pub key_overlap: Duration,
    pub require_post_quantum: bool,
    pub trust_domain: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload_api_socket: Option<String>,
    pub ebpf_mode: EbpfMode,
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
    #[serde(with = "duration::positive")]
    pub rtt_threshold: Duration,
    pub anomaly_deci_sigma: u32,
    pub quarantine_after: u32,
    #[serde(with = "duration::positive")]
    pub quarantine_duration: Duration,
}

/// The current format version.
pub const CONFIG_VERSION: u32 = 1;

impl AgentConfig {
    /// Renders the configuration of one mesh from its spec, which [`MeshNetworkSpec::validate`]
    /// accepted (a duration it would refuse is refused here too, naming the field). The schema
    /// bounds every integer it converts.
    pub fn render(
        mesh: &str,
        namespace: &str,
        spec: &MeshNetworkSpec,
        authority_public_key: &str,
    ) -> Result<Self, FieldError> {
        let port = |p: i32| u16::try_from(p).unwrap_or_default();
        let count = |n: i32| u32::try_from(n).unwrap_or_default();
        let parse = |field: &str, text: &str| {
            duration::parse(text).map_err(|e| FieldError::new(format!("spec.{field}"), e.to_string()))
        };
        Ok(Self {
            version: CONFIG_VERSION,
            mesh: mesh.to_owned(),
            namespace: namespace.to_owned(),
            udp_port: port(spec.agent.udp_port),
            tcp_port: port(spec.agent.tcp_port),
            metrics_port: port(spec.agent.metrics_port),
            log_level: spec.agent.log_level.clone(),
            hello_interval: parse("routing.helloInterval", &spec.routing.hello_interval)?,
            originator_interval: parse("routing.originatorInterval", &spec.routing.originator_interval)?,
            neighbour_timeout: parse("routing.neighbourTimeout", &spec.routing.neighbour_timeout)?,
            max_hops: count(spec.routing.max_hops),
            metric_weights: Weights {
                loss: count(spec.routing.metric_weights.loss),
                rtt: count(spec.routing.metric_weights.rtt),
                ebpf_drops: count(spec.routing.metric_weights.ebpf_drops),
            },
            peering: spec.routing.peering.rule(),
            key_exchange: spec.crypto.key_exchange,
            signature: spec.crypto.signature,
            key_rotation_interval: parse("crypto.keyRotationInterval", &spec.crypto.key_rotation_interval)?,
            key_overlap: parse("crypto.keyOverlap", &spec.crypto.key_overlap)?,
            require_post_quantum: spec.crypto.require_post_quantum,
            trust_domain: spec.identity.trust_domain.clone(),
            workload_api_socket: spec.identity.workload_api_socket.clone(),
            ebpf_mode: spec.ebpf.mode,
            self_healing: SelfHealing {
                enabled: spec.self_healing.enabled,
                loss_threshold_percent: count(spec.self_healing.loss_threshold_percent),
                rtt_threshold: parse("selfHealing.rttThreshold", &spec.self_healing.rtt_threshold)?,
                anomaly_deci_sigma: count(spec.self_healing.anomaly_deci_sigma),
                quarantine_after: count(spec.self_healing.quarantine_after),
                quarantine_duration: parse(
                    "selfHealing.quarantineDuration",
                    &spec.self_healing.quarantine_duration,
                )?,
            },
            authority_public_key: authority_public_key.to_owned(),
        })
    }

    /// Parses a rendered file (JSON or YAML), refusing unknown fields and versions with a
    /// message that says which, and invalid durations and algorithms naming the field.
    pub fn parse(text: &str) -> Result<Self, String> {
        // The path of the field that failed goes first: a custom error (a duration that does
        // not parse) carries no location of its own.
        let config: Self = serde_path_to_error::deserialize(serde_norway::Deserializer::from_str(text))
            .map_err(|e| format!("invalid agent configuration: {}: {}", e.path(), e.inner()))?;
        if config.version != CONFIG_VERSION {
            return Err(format!(
                "agent configuration version {} is not supported (this agent reads version {CONFIG_VERSION})",
                config.version
            ));
        }
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rendered_config_parses_back_identically() {
        let spec: MeshNetworkSpec = serde_norway::from_str("agent: {udpPort: 5000}").unwrap();
        let config = AgentConfig::render("demo", "ns1", &spec, "QUJD").unwrap();
        assert_eq!(config.udp_port, 5000);
        let text = serde_json::to_string_pretty(&config).unwrap();
        assert_eq!(AgentConfig::parse(&text), Ok(config));
    }

    #[test]
    fn an_unknown_version_or_field_is_refused_with_a_reason() {
        let spec = MeshNetworkSpec::minimal();
        let mut value =
            serde_json::to_value(AgentConfig::render("demo", "ns1", &spec, "QUJD").unwrap()).unwrap();
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

    #[test]
    fn durations_and_algorithms_are_parsed_once_and_bad_ones_name_their_field() {
        let spec = MeshNetworkSpec::minimal();
        let config = AgentConfig::render("demo", "ns1", &spec, "QUJD").unwrap();
        let text = serde_json::to_string(&config).unwrap();
        assert!(
            text.contains(&format!(
                "\"helloInterval\":\"{}\"",
                duration::format(config.hello_interval)
            )),
            "{text}"
        );
        let mut value = serde_json::to_value(&config).unwrap();
        value["helloInterval"] = "0s".into();
        let error = AgentConfig::parse(&value.to_string()).unwrap_err();
        assert!(
            error.contains("helloInterval") && error.contains("positive"),
            "{error}"
        );
        value["helloInterval"] = "soon".into();
        assert!(
            AgentConfig::parse(&value.to_string())
                .unwrap_err()
                .contains("helloInterval")
        );
        value["helloInterval"] = "100ms".into();
        value["signature"] = "Ed25519".into();
        let error = AgentConfig::parse(&value.to_string()).unwrap_err();
        assert!(
            error.contains("signature") && error.contains("ML-DSA-65"),
            "{error}"
        );
        let mut bad = spec.clone();
        bad.routing.neighbour_timeout = "later".into();
        assert_eq!(
            AgentConfig::render("demo", "ns1", &bad, "QUJD")
                .unwrap_err()
                .field,
            "spec.routing.neighbourTimeout"
        );
    }
}
