//! What the agent derives from its rendered configuration (pure: tested without IO).
use std::path::PathBuf;
use std::time::Duration;

use x0tta6bl4_api::agent_config::AgentConfig;
use x0tta6bl4_api::duration;
use x0tta6bl4_routing::healing::HealingConfig;
use x0tta6bl4_routing::{MetricWeights, RouterConfig};
use x0tta6bl4_session::tls::KeyExchangePolicy;

use crate::cli::TestKeyExchange;

/// The only algorithms this agent speaks.
const KEY_EXCHANGE: &str = "X25519MLKEM768";
const SIGNATURE: &str = "ML-DSA-65";

/// A configuration the agent cannot run with.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("{field}: {source}")]
    Duration {
        field: &'static str,
        source: duration::DurationError,
    },
    #[error("{field} must be positive")]
    Zero { field: &'static str },
    #[error("{field} '{value}' is not supported (this agent speaks {supported})")]
    Unsupported {
        field: &'static str,
        value: String,
        supported: &'static str,
    },
}

fn positive(config_value: &str, field: &'static str) -> Result<Duration, SettingsError> {
    let value = duration::parse(config_value).map_err(|source| SettingsError::Duration { field, source })?;
    if value.is_zero() {
        return Err(SettingsError::Zero { field });
    }
    Ok(value)
}

/// Routes are dropped when not refreshed for this many originator intervals.
const ROUTE_EXPIRY_INTERVALS: u32 = 4;

/// The routing configuration: intervals, hop limit and metric weights from the config, and the
/// endpoint this node advertises.
pub fn router_config(config: &AgentConfig, endpoint: String) -> Result<RouterConfig, SettingsError> {
    if config.key_exchange != KEY_EXCHANGE {
        return Err(SettingsError::Unsupported {
            field: "keyExchange",
            value: config.key_exchange.clone(),
            supported: KEY_EXCHANGE,
        });
    }
    if config.signature != SIGNATURE {
        return Err(SettingsError::Unsupported {
            field: "signature",
            value: config.signature.clone(),
            supported: SIGNATURE,
        });
    }
    let originator_interval = positive(&config.originator_interval, "originatorInterval")?;
    Ok(RouterConfig {
        hello_interval: positive(&config.hello_interval, "helloInterval")?,
        neighbour_timeout: positive(&config.neighbour_timeout, "neighbourTimeout")?,
        originator_interval,
        route_expiry: originator_interval.saturating_mul(ROUTE_EXPIRY_INTERVALS),
        max_hops: u8::try_from(config.max_hops).unwrap_or(u8::MAX),
        weights: MetricWeights {
            loss: config.metric_weights.loss,
            rtt: config.metric_weights.rtt,
            drops: config.metric_weights.ebpf_drops,
        },
        endpoint,
        ..RouterConfig::default()
    })
}

/// The self-healing loop's knobs from `selfHealing` (anomalyDeciSigma is k × 10).
pub fn healing_config(config: &AgentConfig) -> Result<HealingConfig, SettingsError> {
    let healing = &config.self_healing;
    Ok(HealingConfig {
        enabled: healing.enabled,
        loss_threshold_percent: healing.loss_threshold_percent,
        rtt_threshold: positive(&healing.rtt_threshold, "selfHealing.rttThreshold")?,
        anomaly_sigma: f64::from(healing.anomaly_deci_sigma) / 10.0,
        quarantine_after: healing.quarantine_after.max(1),
        quarantine_duration: positive(&healing.quarantine_duration, "selfHealing.quarantineDuration")?,
        ..HealingConfig::default()
    })
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

/// `/var/lib/x0tta6bl4/<namespace>/<mesh>`.
pub fn default_state_dir(config: &AgentConfig) -> PathBuf {
    PathBuf::from("/var/lib/x0tta6bl4")
        .join(&config.namespace)
        .join(&config.mesh)
}

#[cfg(test)]
pub(crate) mod tests {
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
        let router = router_config(&mk_config(), "198.18.0.1:7946".to_owned()).unwrap();
        assert_eq!(router.hello_interval, Duration::from_millis(100));
        assert_eq!(router.neighbour_timeout, Duration::from_millis(300));
        assert_eq!(router.originator_interval, Duration::from_secs(1));
        assert_eq!(router.route_expiry, Duration::from_secs(4));
        assert_eq!(router.max_hops, 255, "clamped to what the wire carries");
        assert_eq!(router.weights.drops, 8);
        assert_eq!(router.endpoint, "198.18.0.1:7946");
    }

    #[test]
    fn self_healing_takes_its_thresholds_from_the_config() {
        let mut config = mk_config();
        let healing = healing_config(&config).unwrap();
        assert!(!healing.enabled);
        assert_eq!(healing.anomaly_sigma, 3.0);
        assert_eq!(healing.rtt_threshold, Duration::from_millis(50));
        assert_eq!(healing.quarantine_after, 3);
        assert_eq!(healing.quarantine_duration, Duration::from_secs(300));
        config.self_healing.rtt_threshold = "fast".to_owned();
        assert!(
            healing_config(&config)
                .unwrap_err()
                .to_string()
                .contains("selfHealing.rttThreshold")
        );
    }

    #[test]
    fn a_zero_or_malformed_interval_or_unknown_algorithm_is_refused() {
        let mut config = mk_config();
        config.hello_interval = "0s".to_owned();
        assert!(matches!(
            router_config(&config, String::new()),
            Err(SettingsError::Zero {
                field: "helloInterval"
            })
        ));
        config.hello_interval = "soon".to_owned();
        assert!(router_config(&config, String::new()).is_err());
        let mut config = mk_config();
        config.signature = "Ed25519".to_owned();
        assert!(
            router_config(&config, String::new())
                .unwrap_err()
                .to_string()
                .contains("Ed25519")
        );
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
