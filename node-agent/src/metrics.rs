//! Every Prometheus metric of the agent, in one registry (served on /metrics, and summed into
//! the counters of /status).
use std::collections::BTreeMap;

use prometheus::{
    Gauge, GaugeVec, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry,
};
use x0tta6bl4_wire::Message;

/// The agent's metrics. Label values are bounded: reasons and types are fixed strings, and
/// per-neighbour series are removed when the neighbour goes.
pub struct Metrics {
    pub registry: Registry,
    pub info: IntGaugeVec,
    pub sessions: IntGaugeVec,
    pub sessions_established: IntCounterVec,
    pub session_refusals: IntCounterVec,
    pub dial_failures: IntCounterVec,
    pub frames_decoded: IntCounterVec,
    pub frames_sent: IntCounterVec,
    pub frames_dropped: IntCounterVec,
    pub originator_verifications: IntCounter,
    pub routing_rejections: IntCounterVec,
    pub endorsements: IntCounterVec,
    pub routes: IntGauge,
    pub neighbours: IntGauge,
    pub link_cost: IntGaugeVec,
    pub link_rtt_seconds: GaugeVec,
    pub link_loss_percent: IntGaugeVec,
    pub route_changes: IntCounter,
    pub neighbour_losses: IntCounterVec,
    pub data_messages: IntCounterVec,
    pub pings: IntCounterVec,
    pub ping_rtt_seconds: Histogram,
    pub last_convergence_seconds: Gauge,
    pub healing_findings: IntCounterVec,
    pub healing_actions: IntCounterVec,
    pub quarantined_peers: IntGauge,
    pub key_rotations: IntCounterVec,
}

fn register<T: prometheus::core::Collector + Clone + 'static>(registry: &Registry, collector: T) -> T {
    // Names are fixed and unique within this registry: registration cannot fail.
    if let Err(error) = registry.register(Box::new(collector.clone())) {
        tracing::error!(%error, "metric registration failed");
    }
    collector
}

fn counter_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    register(
        registry,
        IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric definition"),
    )
}

fn gauge_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    register(
        registry,
        IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric definition"),
    )
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let r = &registry;
        Metrics {
            info: gauge_vec(
                r,
                "x0_agent_info",
                "Mesh this agent serves, with its policy",
                &["mesh", "namespace", "node", "key_exchange", "signature"],
            ),
            sessions: gauge_vec(
                r,
                "x0_agent_sessions",
                "Neighbour sessions up, by key-exchange group",
                &["key_exchange"],
            ),
            sessions_established: counter_vec(
                r,
                "x0_agent_sessions_established_total",
                "Neighbour sessions authenticated and admitted",
                &["direction", "key_exchange"],
            ),
            session_refusals: counter_vec(
                r,
                "x0_agent_session_refusals_total",
                "Sessions refused, by reason (handshake, classical_key_exchange, unendorsed_key, ...)",
                &["reason"],
            ),
            dial_failures: counter_vec(
                r,
                "x0_agent_dial_failures_total",
                "Dials that did not reach a TLS handshake",
                &["reason"],
            ),
            frames_decoded: counter_vec(
                r,
                "x0_agent_frames_decoded_total",
                "Frames received and decoded, by message type",
                &["type"],
            ),
            frames_sent: counter_vec(
                r,
                "x0_agent_frames_sent_total",
                "Frames queued to a neighbour, by message type",
                &["type"],
            ),
            frames_dropped: counter_vec(
                r,
                "x0_agent_frames_dropped_total",
                "Frames dropped, by reason (decode errors, full writer queue, ...)",
                &["reason"],
            ),
            originator_verifications: register(
                r,
                IntCounter::new(
                    "x0_agent_originator_verifications_total",
                    "ML-DSA-65 verifications of originator messages",
                )
                .expect("valid metric definition"),
            ),
            routing_rejections: counter_vec(
                r,
                "x0_agent_routing_rejections_total",
                "Routing messages rejected by the router, by reason",
                &["reason"],
            ),
            endorsements: counter_vec(
                r,
                "x0_agent_endorsements_total",
                "Endorsement announcements received, by outcome",
                &["result"],
            ),
            routes: register(
                r,
                IntGauge::new("x0_agent_routes", "Destinations with a selected route")
                    .expect("valid metric definition"),
            ),
            neighbours: register(
                r,
                IntGauge::new("x0_agent_neighbours", "Neighbours alive").expect("valid metric definition"),
            ),
            link_cost: gauge_vec(
                r,
                "x0_agent_link_cost",
                "Routing cost of the link to each neighbour (256 is a perfect link)",
                &["peer"],
            ),
            link_rtt_seconds: register(
                r,
                GaugeVec::new(
                    Opts::new(
                        "x0_agent_link_rtt_seconds",
                        "Smoothed round-trip time to each neighbour",
                    ),
                    &["peer"],
                )
                .expect("valid metric definition"),
            ),
            link_loss_percent: gauge_vec(
                r,
                "x0_agent_link_loss_percent",
                "Hello loss on the link to each neighbour",
                &["peer"],
            ),
            route_changes: register(
                r,
                IntCounter::new("x0_agent_route_changes_total", "Next-hop changes")
                    .expect("valid metric definition"),
            ),
            neighbour_losses: counter_vec(
                r,
                "x0_agent_neighbour_losses_total",
                "Neighbours lost, by cause (hello_timeout, session_closed)",
                &["cause"],
            ),
            data_messages: counter_vec(
                r,
                "x0_agent_data_messages_total",
                "Data messages, by outcome (sent, forwarded, delivered, dropped_*)",
                &["result"],
            ),
            pings: counter_vec(
                r,
                "x0_agent_pings_total",
                "Built-in pings, by outcome (sent, answered, replied, timeout, no_route)",
                &["result"],
            ),
            ping_rtt_seconds: register(
                r,
                Histogram::with_opts(
                    HistogramOpts::new(
                        "x0_agent_ping_rtt_seconds",
                        "Round-trip time of answered pings across the mesh",
                    )
                    .buckets(vec![
                        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
                    ]),
                )
                .expect("valid metric definition"),
            ),
            last_convergence_seconds: register(
                r,
                Gauge::new(
                    "x0_agent_last_convergence_seconds",
                    "Duration of the last settled convergence episode (trigger to last route change)",
                )
                .expect("valid metric definition"),
            ),
            healing_findings: counter_vec(
                r,
                "x0_agent_healing_findings_total",
                "Findings of the self-healing loop, by kind (degraded, contradiction, quarantine_over)",
                &["kind"],
            ),
            healing_actions: counter_vec(
                r,
                "x0_agent_healing_actions_total",
                "Actions the self-healing loop planned, by action and whether it carried them out",
                &["action", "executed"],
            ),
            quarantined_peers: register(
                r,
                IntGauge::new(
                    "x0_agent_quarantined_peers",
                    "Neighbours excluded from routing by the self-healing loop",
                )
                .expect("valid metric definition"),
            ),
            key_rotations: counter_vec(
                r,
                "x0_agent_key_rotations_total",
                "Node key rotations, by result (done, failed)",
                &["result"],
            ),
            registry,
        }
    }

    /// Counts a refused session.
    pub fn refused(&self, reason: &str) {
        self.session_refusals.with_label_values(&[reason]).inc();
    }

    /// Counts a dropped frame.
    pub fn dropped(&self, reason: &str) {
        self.frames_dropped.with_label_values(&[reason]).inc();
    }

    /// Every counter (`*_total`), by name and label set (`k=v,...`, empty without labels).
    pub fn counters(&self) -> BTreeMap<String, BTreeMap<String, f64>> {
        let mut counters = BTreeMap::new();
        for family in self.registry.gather() {
            if family.get_field_type() != prometheus::proto::MetricType::COUNTER {
                continue;
            }
            let entry: &mut BTreeMap<String, f64> = counters.entry(family.name().to_owned()).or_default();
            for metric in family.get_metric() {
                let labels = metric
                    .get_label()
                    .iter()
                    .map(|pair| format!("{}={}", pair.name(), pair.value()))
                    .collect::<Vec<_>>()
                    .join(",");
                entry.insert(labels, metric.get_counter().get_value());
            }
        }
        counters
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// The metric label of a message type.
pub fn message_label(message: &Message) -> &'static str {
    match message {
        Message::Hello(_) => "hello",
        Message::Originator(_) => "originator",
        Message::Data(_) => "data",
        Message::EndorsementAnnounce(_) => "endorsement",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_summarised_by_name_and_labels() {
        let metrics = Metrics::new();
        metrics.refused("classical_key_exchange");
        metrics.refused("classical_key_exchange");
        metrics.originator_verifications.inc();
        let counters = metrics.counters();
        assert_eq!(
            counters["x0_agent_session_refusals_total"]["reason=classical_key_exchange"],
            2.0
        );
        assert_eq!(counters["x0_agent_originator_verifications_total"][""], 1.0);
        assert!(
            !counters.contains_key("x0_agent_routes"),
            "gauges are not counters"
        );
    }
}
