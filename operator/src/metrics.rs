//! The operator's metrics, in one registry served on /metrics.
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use prometheus::core::Collector;
use prometheus::{
    GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry,
};
use x0tta6bl4_api::chaos::phase;
use x0tta6bl4_api::fl_record::{Rejection, RoundRecord};
use x0tta6bl4_api::{ChaosExperiment, FLTrainingRound};

/// Distinct `reason` labels of `x0_fl_round_update_reasons_total` before further reasons are
/// counted as `other`: the reasons come from an agent's round record, and a misbehaving
/// aggregator must not be able to grow the operator's series without bound.
const MAX_FL_REASONS: usize = 32;

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
    /// ChaosExperiments per namespace and phase, recounted from the watch cache on every change.
    pub chaos_experiments: IntGaugeVec,
    /// Experiments judged, by verdict (Passed, Failed, Inconclusive).
    pub chaos_verdicts: IntCounterVec,
    /// Time from injection until the first untargeted agent noticed, per judged experiment.
    pub chaos_time_to_detect: Histogram,
    /// Time from injection until the untargeted agents routed around the targets.
    pub chaos_time_to_recover: Histogram,
    /// Faults reverted, by cause (duration, suspend, abort, killSwitch).
    pub chaos_reverts: IntCounterVec,
    /// 1 while a mesh's Converged condition is True, else 0; beside ready/desired nodes.
    pub mesh_converged: IntGaugeVec,
    /// Judged ChaosExperiments per namespace and verdict, recounted like the phases.
    pub chaos_experiment_verdicts: GaugeVec,
    /// Per FLTrainingRound (namespace, job), recounted from the watch cache on every change
    /// ([`Metrics::record_fl_jobs`]), so a deleted job's series go with it.
    pub fl_job_phase: GaugeVec,
    pub fl_job_rounds: GaugeVec,
    pub fl_job_completed_rounds: GaugeVec,
    pub fl_job_accuracy: GaugeVec,
    pub fl_job_last_round_duration: GaugeVec,
    pub fl_job_last_round_updates: GaugeVec,
    /// Rounds the operator sealed into a job's chain, and their wall time.
    pub fl_rounds_sealed: IntCounter,
    pub fl_round_duration: Histogram,
    /// Updates of the sealed rounds, by outcome (accepted, rejected, down_weighted).
    pub fl_round_updates: IntCounterVec,
    /// Rejected and down-weighted updates of the sealed rounds, by outcome and reason code.
    pub fl_round_update_reasons: IntCounterVec,
    fl_reasons_seen: Arc<Mutex<BTreeSet<String>>>,
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
        let mesh_converged = gauge_vec(
            "x0_mesh_converged",
            "1 while the mesh's Converged condition is True (every agent routes to every other), else 0",
        );
        let float_gauges = |name: &str, help: &str, labels: &[&str]| {
            let g = GaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
            registry
                .register(Box::new(g.clone()))
                .expect("metric registered once");
            g
        };
        let chaos_experiment_verdicts = float_gauges(
            "x0_chaos_experiment_verdicts",
            "Judged ChaosExperiments that exist, per namespace and verdict",
            &["namespace", "verdict"],
        );
        let job = &["namespace", "fl_job"];
        let fl_job_phase = float_gauges(
            "x0_fl_job_phase",
            "1 for the phase an FLTrainingRound is in (Pending, Running, Completed, Failed)",
            &["namespace", "fl_job", "phase"],
        );
        let fl_job_rounds = float_gauges("x0_fl_job_rounds", "Rounds an FLTrainingRound asks for", job);
        let fl_job_completed_rounds = float_gauges(
            "x0_fl_job_completed_rounds",
            "Rounds of an FLTrainingRound completed and sealed",
            job,
        );
        let fl_job_accuracy = float_gauges(
            "x0_fl_job_accuracy_ratio",
            "Test accuracy (0 to 1) of an FLTrainingRound's global model after its last sealed round",
            job,
        );
        let fl_job_last_round_duration = float_gauges(
            "x0_fl_job_last_round_duration_seconds",
            "Wall time of an FLTrainingRound's last sealed round, as its aggregator recorded it",
            job,
        );
        let fl_job_last_round_updates = float_gauges(
            "x0_fl_job_last_round_updates",
            "Updates of an FLTrainingRound's last sealed round, by outcome (accepted, rejected, down_weighted)",
            &["namespace", "fl_job", "outcome"],
        );
        let fl_rounds_sealed = IntCounter::new(
            "x0_fl_rounds_sealed_total",
            "Federated rounds the operator sealed into a job's hash chain",
        )
        .expect("valid metric");
        registry
            .register(Box::new(fl_rounds_sealed.clone()))
            .expect("metric registered once");
        let fl_round_duration = Histogram::with_opts(
            HistogramOpts::new(
                "x0_fl_round_duration_seconds",
                "Wall time of each sealed federated round, as its aggregator recorded it",
            )
            .buckets(vec![
                0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
            ]),
        )
        .expect("valid metric");
        registry
            .register(Box::new(fl_round_duration.clone()))
            .expect("metric registered once");
        let fl_round_updates = counter(
            "x0_fl_round_updates_total",
            "Updates of the sealed federated rounds, by outcome (accepted, rejected, down_weighted)",
            &["outcome"],
        );
        let fl_round_update_reasons = counter(
            "x0_fl_round_update_reasons_total",
            "Rejected and down-weighted updates of the sealed federated rounds, by outcome and reason code",
            &["outcome", "reason"],
        );
        x0tta6bl4_telemetry::register_build_info(
            &registry,
            "x0_operator_build_info",
            env!("CARGO_PKG_VERSION"),
        )
        .expect("metric registered once");
        x0tta6bl4_telemetry::register_process_metrics(&registry).expect("metric registered once");
        let chaos_experiments = IntGaugeVec::new(
            Opts::new(
                "x0_chaos_experiments",
                "ChaosExperiments, per namespace and phase",
            ),
            &["namespace", "phase"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(chaos_experiments.clone()))
            .expect("metric registered once");
        let chaos_verdicts = counter(
            "x0_chaos_verdicts_total",
            "Chaos experiments judged, by verdict",
            &["verdict"],
        );
        let chaos_reverts = counter(
            "x0_chaos_reverts_total",
            "Chaos faults reverted, by cause",
            &["cause"],
        );
        let seconds = |name: &str, help: &str| {
            let h = Histogram::with_opts(HistogramOpts::new(name, help).buckets(vec![
                0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0,
            ]))
            .expect("valid metric");
            registry
                .register(Box::new(h.clone()))
                .expect("metric registered once");
            h
        };
        let chaos_time_to_detect = seconds(
            "x0_chaos_time_to_detect_seconds",
            "Time from injection until an untargeted agent noticed the fault, per judged experiment",
        );
        let chaos_time_to_recover = seconds(
            "x0_chaos_time_to_recover_seconds",
            "Time from injection until the untargeted agents routed around the targets, per judged experiment",
        );
        Self {
            registry,
            reconciles,
            reconcile_errors,
            reconcile_duration,
            api_writes,
            leader,
            mesh_ready_nodes,
            mesh_desired_nodes,
            chaos_experiments,
            chaos_verdicts,
            chaos_time_to_detect,
            chaos_time_to_recover,
            chaos_reverts,
            mesh_converged,
            chaos_experiment_verdicts,
            fl_job_phase,
            fl_job_rounds,
            fl_job_completed_rounds,
            fl_job_accuracy,
            fl_job_last_round_duration,
            fl_job_last_round_updates,
            fl_rounds_sealed,
            fl_round_duration,
            fl_round_updates,
            fl_round_update_reasons,
            fl_reasons_seen: Arc::default(),
        }
    }
}

impl Metrics {
    /// Counts a reconcile of `kind` and times it until the returned guard drops.
    pub fn reconcile_started(&self, kind: &str) -> prometheus::HistogramTimer {
        self.reconciles.with_label_values(&[kind]).inc();
        self.reconcile_duration.with_label_values(&[kind]).start_timer()
    }

    /// Recounts `x0_chaos_experiments` from every experiment there is (the watch cache), so
    /// that deleted experiments leave the count and a restart starts from the truth rather
    /// than from zero. An experiment with no phase yet counts as Pending.
    pub fn count_chaos_phases<'a>(&self, experiments: impl IntoIterator<Item = &'a ChaosExperiment>) {
        let mut counts: BTreeMap<(String, String), i64> = BTreeMap::new();
        let mut verdicts: BTreeMap<Vec<String>, f64> = BTreeMap::new();
        for experiment in experiments {
            let namespace = experiment.metadata.namespace.clone().unwrap_or_default();
            if let Some(verdict) = experiment
                .status
                .as_ref()
                .map(|s| s.verdict.as_str())
                .filter(|v| !v.is_empty())
            {
                *verdicts
                    .entry(vec![namespace.clone(), verdict.to_owned()])
                    .or_default() += 1.0;
            }
            let phase = experiment
                .status
                .as_ref()
                .map(|s| s.phase.as_str())
                .filter(|p| !p.is_empty())
                .unwrap_or(phase::PENDING);
            *counts.entry((namespace, phase.to_owned())).or_default() += 1;
        }
        self.chaos_experiments.reset();
        for ((namespace, phase), count) in counts {
            self.chaos_experiments
                .with_label_values(&[&namespace, &phase])
                .set(count);
        }
        replace_series(
            &self.chaos_experiment_verdicts,
            &["namespace", "verdict"],
            &verdicts,
        );
    }

    /// Sets the per-job FL gauges from every FLTrainingRound there is (the watch cache), and
    /// removes the series of jobs that are gone, so no panel or alert shows a deleted job.
    pub fn record_fl_jobs<'a>(&self, jobs: impl IntoIterator<Item = &'a FLTrainingRound>) {
        let mut phase: BTreeMap<Vec<String>, f64> = BTreeMap::new();
        let mut rounds = BTreeMap::new();
        let mut completed = BTreeMap::new();
        let mut accuracy = BTreeMap::new();
        let mut duration = BTreeMap::new();
        let mut updates = BTreeMap::new();
        for job in jobs {
            let key = vec![
                job.metadata.namespace.clone().unwrap_or_default(),
                job.metadata.name.clone().unwrap_or_default(),
            ];
            let with = |extra: &str| {
                let mut key = key.clone();
                key.push(extra.to_owned());
                key
            };
            rounds.insert(key.clone(), f64::from(job.spec.rounds));
            let status = job.status.clone().unwrap_or_default();
            let current = Some(status.phase.as_str())
                .filter(|p| !p.is_empty())
                .unwrap_or(crate::flround::plan::PENDING);
            phase.insert(with(current), 1.0);
            completed.insert(key.clone(), f64::from(status.completed_rounds));
            let last = status.records.last();
            let percent = last.map_or(status.accuracy.as_str(), |r| r.accuracy.as_str());
            if let Ok(percent) = percent.trim().trim_end_matches('%').parse::<f64>() {
                accuracy.insert(key.clone(), percent / 100.0);
            }
            if let Some(last) = last {
                duration.insert(key.clone(), last.duration_ms as f64 / 1000.0);
                updates.insert(with("accepted"), last.accepted.len() as f64);
                updates.insert(with("rejected"), last.rejected.len() as f64);
                updates.insert(with("down_weighted"), last.down_weighted.len() as f64);
            }
        }
        let job = &["namespace", "fl_job"];
        replace_series(&self.fl_job_phase, &["namespace", "fl_job", "phase"], &phase);
        replace_series(&self.fl_job_rounds, job, &rounds);
        replace_series(&self.fl_job_completed_rounds, job, &completed);
        replace_series(&self.fl_job_accuracy, job, &accuracy);
        replace_series(&self.fl_job_last_round_duration, job, &duration);
        replace_series(
            &self.fl_job_last_round_updates,
            &["namespace", "fl_job", "outcome"],
            &updates,
        );
    }

    /// Counts rounds the operator has just sealed (once each: a round sealed before, by this
    /// or an earlier operator, is not sealed again).
    pub fn rounds_sealed<'a>(&self, records: impl IntoIterator<Item = &'a RoundRecord>) {
        for record in records {
            self.fl_rounds_sealed.inc();
            self.fl_round_duration
                .observe(record.duration_ms.max(0) as f64 / 1000.0);
            let count = |outcome: &str, n: usize| {
                self.fl_round_updates
                    .with_label_values(&[outcome])
                    .inc_by(n as u64);
            };
            count("accepted", record.accepted.len());
            count("rejected", record.rejected.len());
            count("down_weighted", record.down_weighted.len());
            for (outcome, list) in [
                ("rejected", &record.rejected),
                ("down_weighted", &record.down_weighted),
            ] {
                for Rejection { reason, .. } in list {
                    let reason = self.bounded_reason(reason_code(reason));
                    self.fl_round_update_reasons
                        .with_label_values(&[outcome, reason.as_str()])
                        .inc();
                }
            }
        }
    }

    /// `code` if it is one of the first [`MAX_FL_REASONS`] codes seen, else `other`.
    fn bounded_reason(&self, code: &str) -> String {
        let mut seen = self.fl_reasons_seen.lock().expect("reason set lock");
        if seen.contains(code) || seen.len() < MAX_FL_REASONS {
            seen.insert(code.to_owned());
            code.to_owned()
        } else {
            "other".to_owned()
        }
    }
}

/// The code a round record's reason starts with: the aggregator writes "<Code>: details"
/// (`BadSignature: ...`, `NoUpdate: ...`, `krum: ...`, `Stale: ...`), zone aggregation prefixes
/// "zone <zone>: ", and a global rule over zones "<rule> across zones ...". Anything else is
/// `other`.
pub fn reason_code(reason: &str) -> &str {
    let mut rest = reason.trim();
    while let Some(inner) = rest
        .strip_prefix("zone ")
        .and_then(|r| r.split_once(": ").map(|(_, inner)| inner))
    {
        rest = inner.trim_start();
    }
    let end = rest.find([':', ' ']).unwrap_or(rest.len());
    let code = &rest[..end];
    let identifier = code.len() <= 32
        && code.starts_with(|c: char| c.is_ascii_alphabetic())
        && code.chars().all(|c| c.is_ascii_alphanumeric());
    if identifier { code } else { "other" }
}

/// The values of `names` of every series `collector` holds (labels absent read as "").
fn series_labels(collector: &dyn Collector, names: &[&str]) -> Vec<Vec<String>> {
    collector
        .collect()
        .iter()
        .flat_map(|family| family.get_metric())
        .map(|metric| {
            names
                .iter()
                .map(|name| {
                    metric
                        .get_label()
                        .iter()
                        .find(|pair| pair.name() == *name)
                        .map(|pair| pair.value().to_owned())
                        .unwrap_or_default()
                })
                .collect()
        })
        .collect()
}

/// Makes `gauge` hold exactly `wanted` (label values in the order of `names`): the series not
/// wanted are removed, the others set. Unlike a reset, no scrape in between sees them missing.
fn replace_series(gauge: &GaugeVec, names: &[&str], wanted: &BTreeMap<Vec<String>, f64>) {
    for labels in series_labels(gauge, names) {
        if !wanted.contains_key(&labels) {
            let _ = gauge.remove_label_values(&labels);
        }
    }
    for (labels, value) in wanted {
        gauge.with_label_values(labels).set(*value);
    }
}

impl Metrics {
    /// Removes the per-mesh series of meshes that no longer exist (`live`: the watch cache's
    /// meshes, as namespace and name), so that no alert fires for a deleted mesh.
    pub fn forget_deleted_meshes(&self, live: &BTreeSet<(String, String)>) {
        for gauge in [
            &self.mesh_ready_nodes,
            &self.mesh_desired_nodes,
            &self.mesh_converged,
        ] {
            for labels in series_labels(gauge, &["namespace", "mesh"]) {
                if !live.contains(&(labels[0].clone(), labels[1].clone())) {
                    // Absent already is fine: another event removed it.
                    let _ = gauge.remove_label_values(&labels);
                }
            }
        }
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mk_experiment_in(namespace: &str, name: &str, phase: &str) -> ChaosExperiment {
        let mut experiment: ChaosExperiment = serde_norway::from_str(&format!(
            "apiVersion: x0tta6bl4.io/v1alpha1\nkind: ChaosExperiment\nmetadata: {{name: {name}, namespace: {namespace}}}\nspec: {{target: {{meshRef: {{name: demo}}}}, action: {{type: partition}}}}"
        ))
        .unwrap();
        if !phase.is_empty() {
            experiment.status = Some(x0tta6bl4_api::ChaosExperimentStatus {
                phase: phase.into(),
                ..Default::default()
            });
        }
        experiment
    }

    #[test]
    fn the_series_of_a_deleted_mesh_disappear() {
        let metrics = Metrics::new();
        for mesh in ["kept", "deleted"] {
            metrics.mesh_ready_nodes.with_label_values(&["ns1", mesh]).set(2);
            metrics
                .mesh_desired_nodes
                .with_label_values(&["ns1", mesh])
                .set(3);
            metrics.mesh_converged.with_label_values(&["ns1", mesh]).set(1);
        }
        metrics.forget_deleted_meshes(&[("ns1".to_owned(), "kept".to_owned())].into());
        let text = prometheus::TextEncoder::new()
            .encode_to_string(&metrics.registry.gather())
            .unwrap();
        assert!(
            text.contains(r#"x0_mesh_ready_nodes{mesh="kept",namespace="ns1"} 2"#),
            "{text}"
        );
        assert!(
            text.contains(r#"x0_mesh_desired_nodes{mesh="kept",namespace="ns1"} 3"#),
            "{text}"
        );
        assert!(
            text.contains(r#"x0_mesh_converged{mesh="kept",namespace="ns1"} 1"#),
            "{text}"
        );
        assert!(!text.contains("deleted"), "{text}");
    }

    fn scrape(metrics: &Metrics) -> String {
        prometheus::TextEncoder::new()
            .encode_to_string(&metrics.registry.gather())
            .unwrap()
    }

    #[test]
    fn build_info_and_process_series_are_served() {
        let text = scrape(&Metrics::new());
        let version = env!("CARGO_PKG_VERSION");
        assert!(
            text.contains(&format!(r#"x0_operator_build_info{{version="{version}"}} 1"#)),
            "{text}"
        );
        assert!(text.contains("process_resident_memory_bytes "), "{text}");
        assert!(text.contains("process_cpu_seconds_total "), "{text}");
    }

    fn mk_job(namespace: &str, name: &str, rounds: i32) -> FLTrainingRound {
        serde_norway::from_str(&format!(
            "apiVersion: x0tta6bl4.io/v1alpha1\nkind: FLTrainingRound\nmetadata: {{name: {name}, namespace: {namespace}}}\nspec: {{meshRef: {{name: demo}}, model: {{kind: logisticRegression, inputDim: 4, classes: 3}}, rounds: {rounds}}}"
        ))
        .unwrap()
    }

    fn mk_record(round: i32, accuracy: &str, rejected: &[&str], down_weighted: &[&str]) -> RoundRecord {
        let reasons = |list: &[&str]| {
            list.iter()
                .enumerate()
                .map(|(i, reason)| Rejection {
                    participant: format!("p{i}"),
                    reason: (*reason).to_owned(),
                })
                .collect()
        };
        RoundRecord {
            round,
            participants: vec!["a".into(), "b".into(), "c".into()],
            accepted: vec!["a".into(), "b".into()],
            rejected: reasons(rejected),
            down_weighted: reasons(down_weighted),
            loss: "0.5".into(),
            accuracy: accuracy.into(),
            duration_ms: 1500,
            model_digest: String::new(),
            previous: String::new(),
            hash: String::new(),
        }
    }

    #[test]
    fn the_fl_job_gauges_follow_the_jobs_and_leave_with_them() {
        let metrics = Metrics::new();
        let mut running = mk_job("ns", "running", 5);
        running.status = Some(x0tta6bl4_api::FLTrainingRoundStatus {
            phase: "Running".into(),
            completed_rounds: 2,
            accuracy: "87.5%".into(),
            records: vec![
                mk_record(1, "80", &[], &[]),
                mk_record(2, "87.5", &["BadSignature: forged"], &["Stale: old model"]),
            ],
            ..Default::default()
        });
        let fresh = mk_job("other", "fresh", 3);
        metrics.record_fl_jobs([&running, &fresh]);
        let text = scrape(&metrics);
        for line in [
            r#"x0_fl_job_phase{fl_job="running",namespace="ns",phase="Running"} 1"#,
            r#"x0_fl_job_phase{fl_job="fresh",namespace="other",phase="Pending"} 1"#,
            r#"x0_fl_job_rounds{fl_job="running",namespace="ns"} 5"#,
            r#"x0_fl_job_completed_rounds{fl_job="running",namespace="ns"} 2"#,
            r#"x0_fl_job_completed_rounds{fl_job="fresh",namespace="other"} 0"#,
            r#"x0_fl_job_accuracy_ratio{fl_job="running",namespace="ns"} 0.875"#,
            r#"x0_fl_job_last_round_duration_seconds{fl_job="running",namespace="ns"} 1.5"#,
            r#"x0_fl_job_last_round_updates{fl_job="running",namespace="ns",outcome="accepted"} 2"#,
            r#"x0_fl_job_last_round_updates{fl_job="running",namespace="ns",outcome="rejected"} 1"#,
            r#"x0_fl_job_last_round_updates{fl_job="running",namespace="ns",outcome="down_weighted"} 1"#,
        ] {
            assert!(text.contains(line), "{line} missing from\n{text}");
        }
        // No round yet: no accuracy, duration or updates to show.
        assert!(
            !text.contains(r#"x0_fl_job_accuracy_ratio{fl_job="fresh""#),
            "{text}"
        );

        // The job moves on: its old phase series goes; the deleted job's series all go.
        running.status.as_mut().unwrap().phase = "Completed".into();
        metrics.record_fl_jobs([&running]);
        let text = scrape(&metrics);
        assert!(
            text.contains(r#"x0_fl_job_phase{fl_job="running",namespace="ns",phase="Completed"} 1"#),
            "{text}"
        );
        assert!(!text.contains(r#"phase="Running""#), "{text}");
        assert!(!text.contains("fresh"), "{text}");
        metrics.record_fl_jobs([]);
        assert!(!scrape(&metrics).contains("x0_fl_job_"), "every job gone");
    }

    #[test]
    fn sealed_rounds_are_counted_with_their_reasons() {
        let metrics = Metrics::new();
        metrics.rounds_sealed(&[
            mk_record(
                1,
                "80",
                &[
                    "BadSignature: forged",
                    "NoUpdate: none within the quorum timeout (60s)",
                ],
                &[],
            ),
            mk_record(
                2,
                "81",
                &[
                    "zone a: krum: score 3.2 among the highest",
                    "(more) 3 further refused",
                ],
                &[
                    "Stale: trained on round 1's model",
                    "zone b: trimmedMean: trimmed",
                ],
            ),
        ]);
        assert_eq!(metrics.fl_rounds_sealed.get(), 2);
        assert_eq!(metrics.fl_round_duration.get_sample_count(), 2);
        assert!((metrics.fl_round_duration.get_sample_sum() - 3.0).abs() < 1e-9);
        let updates = |outcome: &str| metrics.fl_round_updates.with_label_values(&[outcome]).get();
        assert_eq!(
            (updates("accepted"), updates("rejected"), updates("down_weighted")),
            (4, 4, 2)
        );
        let reason = |outcome: &str, reason: &str| {
            metrics
                .fl_round_update_reasons
                .with_label_values(&[outcome, reason])
                .get()
        };
        assert_eq!(reason("rejected", "BadSignature"), 1);
        assert_eq!(reason("rejected", "NoUpdate"), 1);
        assert_eq!(reason("rejected", "krum"), 1);
        assert_eq!(reason("rejected", "other"), 1);
        assert_eq!(reason("down_weighted", "Stale"), 1);
        assert_eq!(reason("down_weighted", "trimmedMean"), 1);
    }

    #[test]
    fn reason_codes_are_bounded() {
        assert_eq!(reason_code("WrongRoundUID: round uid x"), "WrongRoundUID");
        assert_eq!(reason_code("zone eu-1: zone eu-2: Duplicate: twice"), "Duplicate");
        assert_eq!(reason_code("median across zones rejected zone a: far"), "median");
        assert_eq!(
            reason_code("NoZoneReport: zone a's aggregator n1 sent none"),
            "NoZoneReport"
        );
        assert_eq!(reason_code("12 further refused updates"), "other");
        assert_eq!(reason_code(""), "other");
        let metrics = Metrics::new();
        let many: Vec<String> = (0..MAX_FL_REASONS + 5).map(|i| format!("Code{i}: x")).collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        metrics.rounds_sealed(&[mk_record(1, "1", &many, &[])]);
        let text = scrape(&metrics);
        let series = text
            .lines()
            .filter(|l| l.starts_with("x0_fl_round_update_reasons_total{"))
            .count();
        assert_eq!(series, MAX_FL_REASONS + 1, "{text}");
        assert!(
            text.contains(r#"x0_fl_round_update_reasons_total{outcome="rejected",reason="other"} 5"#),
            "{text}"
        );
    }

    #[test]
    fn the_verdict_gauge_is_recounted_with_the_phases() {
        let metrics = Metrics::new();
        let judged = |name: &str, verdict: &str| {
            let mut experiment = mk_experiment_in("a", name, "Completed");
            experiment.status.as_mut().unwrap().verdict = verdict.into();
            experiment
        };
        let all = [
            judged("one", "Passed"),
            judged("two", "Passed"),
            judged("three", "Failed"),
        ];
        metrics.count_chaos_phases(&all);
        let text = scrape(&metrics);
        assert!(
            text.contains(r#"x0_chaos_experiment_verdicts{namespace="a",verdict="Passed"} 2"#),
            "{text}"
        );
        metrics.count_chaos_phases(&all[..1]);
        let text = scrape(&metrics);
        assert!(
            text.contains(r#"x0_chaos_experiment_verdicts{namespace="a",verdict="Passed"} 1"#),
            "{text}"
        );
        assert!(!text.contains(r#"verdict="Failed""#), "{text}");
    }

    #[test]
    fn the_phase_gauge_is_recounted_so_deleted_experiments_leave_it() {
        let metrics = Metrics::new();
        let all = [
            mk_experiment_in("a", "one", "Injecting"),
            mk_experiment_in("a", "two", "Injecting"),
            mk_experiment_in("b", "three", ""),
        ];
        metrics.count_chaos_phases(&all);
        let gauge = |ns: &str, phase: &str| metrics.chaos_experiments.with_label_values(&[ns, phase]).get();
        assert_eq!(gauge("a", "Injecting"), 2);
        assert_eq!(gauge("b", "Pending"), 1);
        metrics.count_chaos_phases(&all[..1]);
        assert_eq!(gauge("a", "Injecting"), 1);
        assert_eq!(gauge("b", "Pending"), 0);
    }
}
