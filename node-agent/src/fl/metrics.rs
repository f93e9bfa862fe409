//! The federated-learning counters, registered next to the agent's own (so /metrics and the
//! counters of /status show them).
use prometheus::{GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts, Registry};
use x0tta6bl4_fl::aggregate::Verdict;

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
    /// Rounds this agent aggregated, start to result written (or to failure), by outcome.
    pub round_seconds: HistogramVec,
    /// The test accuracy of each aggregated job's last round, by job (FLTrainingRound name);
    /// removed when the aggregator of the job stops.
    pub accuracy: GaugeVec,
    /// The aggregation rule's verdicts on the admitted updates, by rule and verdict.
    pub verdicts: IntCounterVec,
}

/// Buckets of a round: a second on loopback, up to the quorum timeouts of minutes.
const ROUND_BUCKETS: &[f64] = &[
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
];

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
                "Local training runs for a round, by outcome (sent, poisoned: sent poisoned by a chaos experiment or test fault, failed)",
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
            round_seconds: {
                let histogram = HistogramVec::new(
                    HistogramOpts::new(
                        "x0_agent_fl_round_duration_seconds",
                        "Federated rounds this agent aggregated, from the training request to the result written (or the failure), by outcome",
                    )
                    .buckets(ROUND_BUCKETS.to_vec()),
                    &["outcome"],
                )
                .expect("valid metric definition");
                let _ = registry.register(Box::new(histogram.clone()));
                histogram
            },
            accuracy: {
                let gauge = GaugeVec::new(
                    Opts::new(
                        "x0_agent_fl_round_accuracy_ratio",
                        "Test accuracy (0 to 1) of the global model after the last round this agent aggregated, by job",
                    ),
                    &["fl_job"],
                )
                .expect("valid metric definition");
                let _ = registry.register(Box::new(gauge.clone()));
                gauge
            },
            verdicts: counter_vec(
                registry,
                "x0_agent_fl_aggregation_verdicts_total",
                "Verdicts of the aggregation rule on the updates admitted to a round (accepted, down_weighted, rejected), by rule",
                &["rule", "verdict"],
            ),
        }
    }

    pub fn drop(&self, reason: &str) {
        self.dropped.with_label_values(&[reason]).inc();
    }

    /// Counts one verdict of the aggregation rule.
    pub fn verdict(&self, rule: &str, verdict: &Verdict) {
        let label = match verdict {
            Verdict::Accepted { .. } => "accepted",
            Verdict::DownWeighted { .. } => "down_weighted",
            Verdict::Rejected { .. } => "rejected",
        };
        self.verdicts.with_label_values(&[rule, label]).inc();
    }

    /// The accuracy gauge of one job, removed when dropped (the job's aggregator stops).
    pub fn job_accuracy(&self, job: &str) -> JobAccuracy {
        JobAccuracy {
            gauge: self.accuracy.clone(),
            job: job.to_owned(),
        }
    }
}

/// A job's `x0_agent_fl_round_accuracy_ratio` series, for as long as this value lives.
pub struct JobAccuracy {
    gauge: GaugeVec,
    job: String,
}

impl JobAccuracy {
    pub fn set(&self, accuracy: f64) {
        self.gauge.with_label_values(&[self.job.as_str()]).set(accuracy);
    }
}

impl Drop for JobAccuracy {
    fn drop(&mut self) {
        let _ = self.gauge.remove_label_values(&[self.job.as_str()]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accuracy_series(registry: &Registry) -> Vec<(String, f64)> {
        registry
            .gather()
            .iter()
            .filter(|family| family.name() == "x0_agent_fl_round_accuracy_ratio")
            .flat_map(|family| family.get_metric())
            .map(|metric| {
                (
                    metric.get_label()[0].value().to_owned(),
                    metric.get_gauge().get_value(),
                )
            })
            .collect()
    }

    #[test]
    fn a_jobs_accuracy_series_lives_as_long_as_its_aggregator() {
        let registry = Registry::new();
        let metrics = FlMetrics::register(&registry);
        let first = metrics.job_accuracy("anomaly");
        let second = metrics.job_accuracy("other");
        first.set(0.5);
        first.set(0.9);
        second.set(0.7);
        assert_eq!(
            accuracy_series(&registry),
            vec![("anomaly".to_owned(), 0.9), ("other".to_owned(), 0.7)]
        );
        drop(first);
        assert_eq!(accuracy_series(&registry), vec![("other".to_owned(), 0.7)]);
    }

    #[test]
    fn verdicts_are_counted_by_rule_and_kind() {
        let registry = Registry::new();
        let metrics = FlMetrics::register(&registry);
        metrics.verdict("krum", &Verdict::Accepted { weight: 1.0 });
        metrics.verdict("krum", &Verdict::Rejected { reason: "far".into() });
        metrics.verdict(
            "krum",
            &Verdict::Rejected {
                reason: "farther".into(),
            },
        );
        let count = |verdict: &str| metrics.verdicts.with_label_values(&["krum", verdict]).get();
        assert_eq!(
            (count("accepted"), count("rejected"), count("down_weighted")),
            (1, 2, 0)
        );
    }
}
