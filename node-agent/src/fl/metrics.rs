//! The federated-learning counters, registered next to the agent's own (so /metrics and the
//! counters of /status show them).
use prometheus::{IntCounterVec, IntGauge, Opts, Registry};

#[derive(Clone)]
pub struct FlMetrics {
    /// Messages from the network dropped before use, by reason.
    pub dropped: IntCounterVec,
    /// Updates the aggregator received, by outcome (admitted, or the rejection code).
    pub updates: IntCounterVec,
    /// Rounds this agent aggregated, by outcome.
    pub rounds: IntCounterVec,
    /// Local training runs, by outcome.
    pub trained: IntCounterVec,
    /// Jobs this agent is aggregating now (0 once a deleted job has stopped).
    pub aggregating: IntGauge,
}

fn counter_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let counter = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric definition");
    // Registered once per agent; a second registration (tests) keeps the first.
    let _ = registry.register(Box::new(counter.clone()));
    counter
}

impl FlMetrics {
    pub fn register(registry: &Registry) -> Self {
        FlMetrics {
            dropped: counter_vec(
                registry,
                "x0_agent_fl_dropped_total",
                "Federated-learning messages dropped before use (malformed, unauthenticated, unknown job, ...)",
                &["reason"],
            ),
            updates: counter_vec(
                registry,
                "x0_agent_fl_updates_total",
                "Model updates received by this aggregator, by outcome",
                &["outcome"],
            ),
            rounds: counter_vec(
                registry,
                "x0_agent_fl_rounds_total",
                "Federated rounds this agent aggregated, by outcome",
                &["outcome"],
            ),
            trained: counter_vec(
                registry,
                "x0_agent_fl_trained_total",
                "Local training runs for a round, by outcome",
                &["outcome"],
            ),
            aggregating: {
                let gauge = IntGauge::new(
                    "x0_agent_fl_jobs_aggregating",
                    "Federated jobs this agent is aggregating now",
                )
                .expect("valid metric definition");
                let _ = registry.register(Box::new(gauge.clone()));
                gauge
            },
        }
    }

    pub fn drop(&self, reason: &str) {
        self.dropped.with_label_values(&[reason]).inc();
    }
}
