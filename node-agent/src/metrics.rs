//! Every Prometheus metric of the agent, in one registry (served on /metrics, and summed into
//! the counters of /status), with the registry's `x0_agent_build_info` and `process_*` series.
//! Series about a peer carry its node name (`peer_node`), as the peer's MeshNode and the other
//! agents' `x0_agent_info{node}` name it, so they join by node.
use std::collections::{BTreeMap, BTreeSet};

use prometheus::{
    Gauge, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry,
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
    /// Seqno requests sent, received and passed on, by outcome.
    pub seqno_requests: IntCounterVec,
    /// Advertisements this agent forged for a chaos experiment, by kind.
    pub forged_advertisements: IntCounterVec,
    pub endorsements: IntCounterVec,
    pub routes: IntGauge,
    pub neighbours: IntGauge,
    /// Peers the mesh's peering rule gives this agent (in a cluster).
    pub peers_wanted: IntGauge,
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
    /// TLS handshake and binding, by direction and outcome (established, refused, timeout).
    pub handshake_seconds: HistogramVec,
    /// Settled convergence episodes (the durations `last_convergence_seconds` shows).
    pub convergence_seconds: Histogram,
    /// When the key in use is due for replacement: its rotation time, or its endorsement's
    /// end if that comes first.
    pub key_expiry: Gauge,
    /// The end of the validity of the key in use (its endorsement's `not_after`).
    pub endorsement_expiry: Gauge,
    /// The notAfter of the X.509-SVID in use (meshes that take identities from SPIFFE).
    pub svid_expiry: Gauge,
    /// SVIDs: this agent's from the Workload API (`received`), and peers' rotated SVIDs on open
    /// sessions (`peer_accepted`, or the refusal reason).
    pub svid_updates: IntCounterVec,
    /// Sessions closed because an SVID ran out: the peer's (`peer_svid_expired`) or this
    /// agent's own (`own_svid_expired`).
    pub svid_session_closes: IntCounterVec,
}

/// One live link's gauges: the peer's node name, cost, hello loss and smoothed RTT.
#[derive(Debug, Clone, PartialEq)]
pub struct LinkSample {
    pub peer_node: String,
    pub cost: u32,
    pub loss_percent: u32,
    pub rtt_seconds: Option<f64>,
}

/// Buckets of the session handshake (TLS 1.3 with ML-KEM, then the ML-DSA binding): about a
/// millisecond on loopback, up to the 5 s handshake timeout.
const HANDSHAKE_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];
/// Buckets of a convergence episode (trigger to last route change).
const CONVERGENCE_BUCKETS: &[f64] = &[0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];

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
        let metrics = Metrics {
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
            seqno_requests: counter_vec(
                r,
                "x0_agent_seqno_requests_total",
                "Seqno requests (asking for a newer advertisement of a destination when only unfeasible routes are left), by outcome: sent, originated, answered, forwarded, or dropped (duplicate, rate_limited, no_route, hop_limit, not_neighbour)",
                &["outcome"],
            ),
            forged_advertisements: counter_vec(
                r,
                "x0_agent_chaos_forged_advertisements_total",
                "Advertisements this agent sent forged for a chaos experiment (impersonation, replay, spoiled_signature), one per neighbour",
                &["kind"],
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
            peers_wanted: register(
                r,
                IntGauge::new(
                    "x0_agent_peers_wanted",
                    "Peers the mesh's peering rule gives this agent (bounded peering; 0 outside a cluster)",
                )
                .expect("valid metric definition"),
            ),
            link_cost: gauge_vec(
                r,
                "x0_agent_link_cost",
                "Routing cost of the link to each neighbour (256 is a perfect link)",
                &["peer_node"],
            ),
            link_rtt_seconds: register(
                r,
                GaugeVec::new(
                    Opts::new(
                        "x0_agent_link_rtt_seconds",
                        "Smoothed round-trip time to each neighbour",
                    ),
                    &["peer_node"],
                )
                .expect("valid metric definition"),
            ),
            link_loss_percent: gauge_vec(
                r,
                "x0_agent_link_loss_percent",
                "Hello loss on the link to each neighbour",
                &["peer_node"],
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
            handshake_seconds: register(
                r,
                HistogramVec::new(
                    HistogramOpts::new(
                        "x0_agent_session_handshake_duration_seconds",
                        "Neighbour session setup (TLS handshake and ML-DSA binding), by direction and outcome (established, refused, timeout)",
                    )
                    .buckets(HANDSHAKE_BUCKETS.to_vec()),
                    &["direction", "outcome"],
                )
                .expect("valid metric definition"),
            ),
            convergence_seconds: register(
                r,
                Histogram::with_opts(
                    HistogramOpts::new(
                        "x0_agent_convergence_duration_seconds",
                        "Settled convergence episodes, trigger to last route change",
                    )
                    .buckets(CONVERGENCE_BUCKETS.to_vec()),
                )
                .expect("valid metric definition"),
            ),
            key_expiry: register(
                r,
                Gauge::new(
                    "x0_agent_key_expiry_timestamp_seconds",
                    "When the node key in use is due for replacement (Unix seconds): its rotation time, or its endorsement's end if sooner",
                )
                .expect("valid metric definition"),
            ),
            endorsement_expiry: register(
                r,
                Gauge::new(
                    "x0_agent_endorsement_expiry_timestamp_seconds",
                    "When the endorsement of the node key in use ends (not_after, Unix seconds)",
                )
                .expect("valid metric definition"),
            ),
            svid_expiry: register(
                r,
                Gauge::new(
                    "x0_agent_svid_expiry_timestamp_seconds",
                    "When the X.509-SVID in use expires (Unix seconds); 0 without SPIFFE or before the first SVID",
                )
                .expect("valid metric definition"),
            ),
            svid_updates: counter_vec(
                r,
                "x0_agent_svid_updates_total",
                "X.509-SVIDs: this agent's from the Workload API (received) and peers' rotations on open sessions (peer_accepted or the refusal reason)",
                &["outcome"],
            ),
            svid_session_closes: counter_vec(
                r,
                "x0_agent_svid_session_closes_total",
                "Sessions closed because an SVID ran out (peer_svid_expired, own_svid_expired)",
                &["reason"],
            ),
            registry,
        };
        if let Err(error) =
            x0tta6bl4_telemetry::register_build_info(&metrics.registry, "x0_agent_build_info", BUILD_VERSION)
        {
            tracing::error!(%error, "build_info registration failed");
        }
        if let Err(error) = x0tta6bl4_telemetry::register_process_metrics(&metrics.registry) {
            tracing::error!(%error, "process metrics registration failed");
        }
        metrics
    }

    /// Sets the gauges of the live links and removes the series of the links in `previous`
    /// that are not live any more; returns the peers now labelled (the next call's `previous`).
    pub fn set_links(&self, links: &[LinkSample], previous: &BTreeSet<String>) -> BTreeSet<String> {
        let mut labelled = BTreeSet::new();
        for link in links {
            let label = [link.peer_node.as_str()];
            self.link_cost.with_label_values(&label).set(i64::from(link.cost));
            self.link_loss_percent
                .with_label_values(&label)
                .set(i64::from(link.loss_percent));
            match link.rtt_seconds {
                Some(rtt) => self.link_rtt_seconds.with_label_values(&label).set(rtt),
                None => {
                    let _ = self.link_rtt_seconds.remove_label_values(&label);
                }
            }
            labelled.insert(link.peer_node.clone());
        }
        for gone in previous.difference(&labelled) {
            let _ = self.link_cost.remove_label_values(&[gone]);
            let _ = self.link_loss_percent.remove_label_values(&[gone]);
            let _ = self.link_rtt_seconds.remove_label_values(&[gone]);
        }
        labelled
    }

    /// Records the endorsement of the key now in use.
    pub fn endorsement_valid_until(&self, not_after_unix: u64) {
        self.endorsement_expiry.set(not_after_unix as f64);
    }

    /// Records when the key in use is due for rotation (capped at its endorsement's end).
    pub fn key_due(&self, rotation_due_unix: u64) {
        let endorsement = self.endorsement_expiry.get();
        self.key_expiry.set(key_expiry(rotation_due_unix, endorsement));
    }

    /// Times one session handshake.
    pub fn handshake(&self, direction: &str, outcome: &str, seconds: f64) {
        self.handshake_seconds
            .with_label_values(&[direction, outcome])
            .observe(seconds);
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
            // The agent's own: process_cpu_seconds_total is no business of the MeshNode record.
            if family.get_field_type() != prometheus::proto::MetricType::COUNTER
                || !family.name().starts_with("x0_agent_")
            {
                continue;
            }
            let entry: &mut BTreeMap<String, f64> = counters.entry(family.name().to_owned()).or_default();
            for metric in family.get_metric() {
                entry.insert(label_set(metric), metric.get_counter().get_value());
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

/// A sample's labels as `name=value,...` (empty without labels), the key `/status` uses.
fn label_set(metric: &prometheus::proto::Metric) -> String {
    metric
        .get_label()
        .iter()
        .map(|pair| format!("{}={}", pair.name(), pair.value()))
        .collect::<Vec<_>>()
        .join(",")
}

/// The version in `x0_agent_build_info{version}` (the crate's).
pub const BUILD_VERSION: &str = env!("CARGO_PKG_VERSION");

/// When a key is due: its rotation time, or its endorsement's end if that comes first (an
/// endorsement end of 0: not known yet).
pub fn key_expiry(rotation_due_unix: u64, endorsement_not_after: f64) -> f64 {
    let due = rotation_due_unix as f64;
    if endorsement_not_after > 0.0 {
        due.min(endorsement_not_after)
    } else {
        due
    }
}

/// The metric label of a message type.
pub fn message_label(message: &Message) -> &'static str {
    match message {
        Message::Hello(_) => "hello",
        Message::Originator(_) => "originator",
        Message::Data(_) => "data",
        Message::EndorsementAnnounce(_) => "endorsement",
        Message::SvidUpdate(_) => "svid",
        Message::SeqnoRequest(_) => "seqno_request",
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
        assert!(
            counters.keys().all(|name| name.starts_with("x0_agent_")),
            "the process's own counters stay out of the status: {:?}",
            counters.keys()
        );
    }

    /// The samples of one gauge family: `name=value,...` -> value.
    fn gauge_samples(metrics: &Metrics, name: &str) -> BTreeMap<String, f64> {
        metrics
            .registry
            .gather()
            .iter()
            .filter(|family| family.name() == name)
            .flat_map(|family| family.get_metric())
            .map(|metric| (label_set(metric), metric.get_gauge().get_value()))
            .collect()
    }

    fn link(peer_node: &str, cost: u32, rtt_seconds: Option<f64>) -> LinkSample {
        LinkSample {
            peer_node: peer_node.to_owned(),
            cost,
            loss_percent: 5,
            rtt_seconds,
        }
    }

    #[test]
    fn link_series_are_named_by_peer_node_and_go_with_the_link() {
        let metrics = Metrics::new();
        let held = metrics.set_links(
            &[link("node-2", 256, Some(0.002)), link("node-3", 512, None)],
            &BTreeSet::new(),
        );
        assert_eq!(
            gauge_samples(&metrics, "x0_agent_link_cost"),
            BTreeMap::from([
                ("peer_node=node-2".to_owned(), 256.0),
                ("peer_node=node-3".to_owned(), 512.0)
            ])
        );
        assert_eq!(
            gauge_samples(&metrics, "x0_agent_link_rtt_seconds"),
            BTreeMap::from([("peer_node=node-2".to_owned(), 0.002)]),
            "no RTT measured yet: no series"
        );
        // node-2 is lost: its three series go, node-3's stay.
        let held = metrics.set_links(&[link("node-3", 300, Some(0.004))], &held);
        assert_eq!(held, BTreeSet::from(["node-3".to_owned()]));
        for name in [
            "x0_agent_link_cost",
            "x0_agent_link_loss_percent",
            "x0_agent_link_rtt_seconds",
        ] {
            let samples = gauge_samples(&metrics, name);
            assert_eq!(samples.keys().collect::<Vec<_>>(), ["peer_node=node-3"], "{name}");
        }
        metrics.set_links(&[], &held);
        assert!(gauge_samples(&metrics, "x0_agent_link_cost").is_empty());
    }

    #[test]
    fn the_registry_has_build_info_and_the_process_series() {
        let metrics = Metrics::new();
        assert_eq!(
            gauge_samples(&metrics, "x0_agent_build_info"),
            BTreeMap::from([(format!("version={}", env!("CARGO_PKG_VERSION")), 1.0)])
        );
        let names: BTreeSet<String> = metrics
            .registry
            .gather()
            .iter()
            .map(|family| family.name().to_owned())
            .collect();
        #[cfg(target_os = "linux")]
        for name in [
            "process_cpu_seconds_total",
            "process_resident_memory_bytes",
            "process_open_fds",
        ] {
            assert!(names.contains(name), "{name} missing from {names:?}");
        }
        for name in [
            "x0_agent_key_expiry_timestamp_seconds",
            "x0_agent_endorsement_expiry_timestamp_seconds",
        ] {
            assert!(names.contains(name), "{name} missing from {names:?}");
        }
    }

    #[test]
    fn convergence_episodes_feed_the_histogram() {
        let metrics = Metrics::new();
        for seconds in [0.02, 0.3, 7.0] {
            metrics.convergence_seconds.observe(seconds);
        }
        assert_eq!(metrics.convergence_seconds.get_sample_count(), 3);
        let family = metrics
            .registry
            .gather()
            .into_iter()
            .find(|f| f.name() == "x0_agent_convergence_duration_seconds")
            .expect("registered");
        let buckets = family.get_metric()[0].get_histogram().get_bucket();
        let le = |bound: f64| {
            buckets
                .iter()
                .find(|b| b.upper_bound() == bound)
                .map(|b| b.cumulative_count())
        };
        assert_eq!((le(0.05), le(0.5), le(10.0)), (Some(1), Some(2), Some(3)));
    }
}
