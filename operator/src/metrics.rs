//! The operator's metrics, in one registry served on /metrics.
use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};

#[derive(Clone)]
pub struct Metrics {
    pub registry: Registry,
    /// Reconciles started, by kind.
    pub reconciles: IntCounterVec,
    /// Reconcile failures, by kind and cause.
    pub reconcile_errors: IntCounterVec,
    /// Reconcile duration, by kind.
    pub reconcile_duration: HistogramVec,
    /// Mutating API calls, by kind of the object written; an idle operator keeps it flat.
    pub api_writes: IntCounterVec,
    /// 1 while this replica holds the leader lease.
    pub leader: IntGauge,
    /// Ready and desired agents per mesh, for alerting.
    pub mesh_ready_nodes: IntGaugeVec,
    pub mesh_desired_nodes: IntGaugeVec,
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let counter = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
            registry
                .register(Box::new(c.clone()))
                .expect("metric registered once");
            c
        };
        let gauge_vec = |name: &str, help: &str| {
            let g = IntGaugeVec::new(Opts::new(name, help), &["namespace", "mesh"]).expect("valid metric");
            registry
                .register(Box::new(g.clone()))
                .expect("metric registered once");
            g
        };
        let reconciles = counter("x0_reconciles_total", "Reconciles started, by kind", &["kind"]);
        let reconcile_errors = counter(
            "x0_reconcile_errors_total",
            "Reconcile failures, by kind and cause",
            &["kind", "cause"],
        );
        let api_writes = counter(
            "x0_api_writes_total",
            "Mutating API calls, by kind of object written",
            &["kind"],
        );
        let reconcile_duration = HistogramVec::new(
            HistogramOpts::new("x0_reconcile_duration_seconds", "Reconcile duration, by kind")
                .buckets(vec![0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0]),
            &["kind"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(reconcile_duration.clone()))
            .expect("metric registered once");
        let leader = IntGauge::new(
            "x0_operator_leader",
            "1 while this replica holds the leader lease",
        )
        .expect("valid metric");
        registry
            .register(Box::new(leader.clone()))
            .expect("metric registered once");
        let mesh_ready_nodes = gauge_vec("x0_mesh_ready_nodes", "Agents ready, per mesh");
        let mesh_desired_nodes = gauge_vec("x0_mesh_desired_nodes", "Nodes selected, per mesh");
        Self {
            registry,
            reconciles,
            reconcile_errors,
            reconcile_duration,
            api_writes,
            leader,
            mesh_ready_nodes,
            mesh_desired_nodes,
        }
    }
}

impl Metrics {
    /// Counts a reconcile of `kind` and times it until the returned guard drops.
    pub fn reconcile_started(&self, kind: &str) -> prometheus::HistogramTimer {
        self.reconciles.with_label_values(&[kind]).inc();
        self.reconcile_duration.with_label_values(&[kind]).start_timer()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
