//! The fault executor: the one place where faults enter the agent.
//!
//! The agent watches the ChaosExperiments of its namespace and its own MeshNetwork (read-only)
//! and decides for itself, from what the operator wrote into each experiment's status, which
//! fault entries it must carry now ([`desired`]). It hands them to the mechanisms ([`plan`]):
//! the eBPF datapath, whose kernel entries expire at the experiment's deadline on their own,
//! and the send path (`crate::mesh::send_delay`) for latency. It reports, per experiment, what it
//! installed and removed and what it saw of the fault ([`observe`], [`ledger`]) in its MeshNode
//! record, where the operator measures time to detect and time to recover.
//!
//! Nothing here needs the operator to be alive: the deadline, suspension, deletion and the
//! mesh's kill switch (`spec.chaos.paused`) are all read from the API server by the agent.
//!
//! Faults set by hand on the agent's loopback fault endpoint ([`by_hand`]) come in here too,
//! as one-peer experiments: in a cluster beside the experiments, and without one alone
//! ([`run_standalone`]).
pub mod behaviour;
pub mod by_hand;
pub mod desired;
pub mod ledger;
pub mod observe;
pub mod plan;

use std::collections::{BTreeMap, BTreeSet};

use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use kube::api::Api;
use kube::runtime::reflector::Store;
use kube::runtime::watcher;
use prometheus::{IntCounterVec, IntGauge, Opts, Registry};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use x0tta6bl4_api::chaos::AgentChaosReport;
use x0tta6bl4_api::{ChaosExperiment, MeshNetwork, MeshNode};

use self::by_hand::HandFaults;
use self::desired::ExperimentView;
use self::ledger::{Carried, Ledger, Seen, Transition};
use self::plan::{FaultPlan, Mechanism};
use crate::clock::unix_micros;
use crate::mesh::MeshHandle;
use crate::mesh::send_delay::DelayLine;
use crate::watch_cache;

/// How often the executor re-decides without a watch event (deadlines pass without one).
const STEP_EVERY: Duration = Duration::from_millis(250);
/// A MeshNode record silent for longer belongs to a dead agent (as the operator counts it).
const LIVE_WITHIN: Duration = Duration::from_secs(90);

/// What the datapath holds of the executor's plan, as it reports back.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DatapathAck {
    /// The datapath has decided: it is running and has read a plan, or it is unavailable.
    pub ready: bool,
    /// The kernel part of the plan this answers. Until the datapath has answered the current
    /// plan nothing is known of its entries (a restarted agent's are re-applied as soon as it
    /// has), so nothing is reported applied or reverted.
    pub reconciled: BTreeMap<std::net::IpAddr, plan::KernelFault>,
    /// Why the datapath cannot carry kernel faults (None: it can, or it has not started yet).
    pub unavailable: Option<String>,
    /// Kernel entries installed now, per experiment UID.
    pub installed: BTreeMap<String, usize>,
    /// Entries the kernel refused, per experiment UID.
    pub errors: BTreeMap<String, Vec<String>>,
}

/// The two ends between the executor and the datapath.
pub struct DatapathPort {
    pub plan: watch::Receiver<FaultPlan>,
    pub ack: watch::Sender<DatapathAck>,
}

/// The executor's reports, read by the MeshNode status writer (which writes them out soon
/// after each change).
pub type Reports = watch::Sender<Vec<AgentChaosReport>>;

/// The executor's Prometheus series.
#[derive(Clone)]
pub struct ChaosMetrics {
    active_entries: IntGauge,
    applied: IntCounterVec,
    reverts: IntCounterVec,
}

impl ChaosMetrics {
    pub fn register(registry: &Registry) -> Self {
        let active_entries = IntGauge::new(
            "x0_agent_chaos_active_entries",
            "Fault entries of chaos experiments this agent carries now",
        )
        .expect("valid metric");
        let applied = IntCounterVec::new(
            Opts::new(
                "x0_agent_chaos_applied_total",
                "Injection windows this agent opened, by mechanism",
            ),
            &["mechanism"],
        )
        .expect("valid metric");
        let reverts = IntCounterVec::new(
            Opts::new(
                "x0_agent_chaos_reverts_total",
                "Fault entries this agent removed, by cause (deadline, deleted, suspended, killSwitch, aborted, roundEnded, kernelExpiry)",
            ),
            &["cause"],
        )
        .expect("valid metric");
        for collector in [
            Box::new(active_entries.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(applied.clone()),
            Box::new(reverts.clone()),
        ] {
            if let Err(error) = registry.register(collector) {
                tracing::error!(%error, "metric registration failed");
            }
        }
        ChaosMetrics {
            active_entries,
            applied,
            reverts,
        }
    }
}

/// Everything the executor needs.
pub struct ChaosSetup {
    pub client: kube::Client,
    pub namespace: String,
    pub mesh: String,
    pub node: String,
    pub trust_domain: String,
    /// This agent's MeshNode record, whose status holds the reports of a previous run.
    pub record: String,
    pub mesh_handle: MeshHandle,
    pub links: ChaosLinks,
}

/// The executor's ends of the links to what carries faults out (the datapath, the send path),
/// of its reports and of the faults set by hand.
pub struct ChaosLinks {
    pub plan: watch::Sender<FaultPlan>,
    pub ack: watch::Receiver<DatapathAck>,
    pub delays: DelayLine,
    pub reports: Reports,
    pub metrics: ChaosMetrics,
    /// The faults set by hand on the fault endpoint.
    pub by_hand: watch::Sender<HandFaults>,
    /// The adversarial behaviour the agent acts out (the test faults until experiments set it).
    pub behaviour: behaviour::BehaviourLines,
}

/// Hands the views' entries to the mechanisms: the kernel's to the datapath (which answers on
/// the ack), the send path's to the delay line.
fn hand_over(plan: &watch::Sender<FaultPlan>, delays: &DelayLine, views: &[ExperimentView]) -> plan::Planned {
    let planned = plan::plan(views);
    delays.set(planned.plan.delays.clone());
    plan.send_if_modified(|current| {
        let changed = *current != planned.plan;
        *current = planned.plan.clone();
        changed
    });
    planned
}

/// The faults set by hand now, the long-expired ones forgotten.
fn hand_views(
    by_hand: &watch::Sender<HandFaults>,
    node: &str,
    paused: bool,
    now_us: u64,
) -> Vec<ExperimentView> {
    by_hand.send_if_modified(|faults| by_hand::forget_expired(faults, now_us));
    by_hand::views(&by_hand.borrow(), node, paused, now_us)
}

/// Without a cluster: carries out the faults set by hand, until `shutdown`.
pub async fn run_standalone(
    node: String,
    plan: watch::Sender<FaultPlan>,
    delays: DelayLine,
    by_hand: watch::Sender<HandFaults>,
    shutdown: CancellationToken,
) {
    let mut changes = by_hand.subscribe();
    let mut ticks = tokio::time::interval(STEP_EVERY);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            _ = ticks.tick() => {}
            _ = changes.changed() => {}
        }
        let views = hand_views(&by_hand, &node, false, unix_micros());
        hand_over(&plan, &delays, &views);
    }
    delays.set(BTreeMap::new());
}

/// Runs the executor until `shutdown`.
pub async fn run(setup: ChaosSetup, shutdown: CancellationToken) {
    let records: Api<MeshNode> = Api::namespaced(setup.client.clone(), &setup.namespace);
    let previous = match records.get_opt(&setup.record).await {
        Ok(record) => record.and_then(|r| r.status).map(|s| s.chaos).unwrap_or_default(),
        Err(error) => {
            tracing::warn!(%error, "could not read this agent's previous chaos reports");
            Vec::new()
        }
    };
    let mut ledger = Ledger::resume(previous);
    let (experiments, mut experiment_changes) = watch_cache::reflect(
        "ChaosExperiments",
        Api::<ChaosExperiment>::namespaced(setup.client.clone(), &setup.namespace),
        watcher::Config::default(),
        shutdown.clone(),
    );
    let (meshes, mut mesh_changes) = watch_cache::reflect(
        "MeshNetwork",
        Api::<MeshNetwork>::namespaced(setup.client.clone(), &setup.namespace),
        watcher::Config::default().fields(&format!("metadata.name={}", setup.mesh)),
        shutdown.clone(),
    );
    let (nodes, _) = watch_cache::reflect(
        "MeshNode records",
        records,
        watcher::Config::default().fields(&format!("spec.meshName={}", setup.mesh)),
        shutdown.clone(),
    );
    // Nothing is decided from an empty cache: a restarted agent would take its experiments
    // for deleted and its mesh's kill switch for off.
    tokio::select! {
        () = shutdown.cancelled() => return,
        ready = async { tokio::try_join!(experiments.wait_until_ready(), meshes.wait_until_ready()) } => {
            if let Err(error) = ready {
                tracing::warn!(%error, "chaos executor: the watches ended before their first list");
                return;
            }
        }
    }
    let mut ack = setup.links.ack.clone();
    let mut by_hand_changes = setup.links.by_hand.subscribe();
    let mut ticks = tokio::time::interval(STEP_EVERY);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tracing::info!(mesh = %setup.mesh, "chaos executor watching the mesh's experiments");
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            _ = ticks.tick() => {}
            _ = experiment_changes.changed() => {}
            _ = mesh_changes.changed() => {}
            _ = ack.changed() => {}
            _ = by_hand_changes.changed() => {}
        }
        let paused = meshes
            .state()
            .iter()
            .find(|mesh| mesh.metadata.name.as_deref() == Some(setup.mesh.as_str()))
            .is_some_and(|mesh| mesh.spec.chaos.paused);
        let now = Timestamp::now();
        let now_us = unix_micros();
        let mut views: Vec<ExperimentView> = experiments
            .state()
            .iter()
            .filter_map(|experiment| desired::view(experiment, &setup.mesh, &setup.node, paused, now))
            .collect();
        views.extend(hand_views(&setup.links.by_hand, &setup.node, paused, now_us));
        let planned = hand_over(&setup.links.plan, &setup.links.delays, &views);
        setup.links.behaviour.set_experiments(&planned.plan.behaviour);
        let datapath = ack.borrow_and_update().clone();
        let report = setup.mesh_handle.status().await;
        let live = live_names(&nodes, now);
        let mut transitions = Vec::new();
        for view in &views {
            let mechanism = plan::mechanism(view.action);
            let caught_up = datapath.unavailable.is_some()
                || (datapath.ready && datapath.reconciled == planned.plan.kernel);
            if mechanism == Mechanism::Ebpf && !caught_up {
                continue;
            }
            let planned_entries = planned.entries.get(&view.uid).copied().unwrap_or(0);
            let mut refused = planned.refused.get(&view.uid).cloned().unwrap_or_default();
            refused.extend(view.unusable.iter().cloned());
            let entries = match mechanism {
                Mechanism::SendPath | Mechanism::Behaviour | Mechanism::Revocation => planned_entries,
                Mechanism::Ebpf => {
                    if planned_entries > 0
                        && let Some(why) = &datapath.unavailable
                    {
                        refused.push(format!("the eBPF datapath is unavailable: {why}"));
                    }
                    refused.extend(datapath.errors.get(&view.uid).cloned().unwrap_or_default());
                    datapath.installed.get(&view.uid).copied().unwrap_or(0)
                }
            };
            let carried = Carried {
                entries,
                mechanism: mechanism.label(),
                refused,
            };
            let seen = match (&report, view.window_start_us) {
                (Some(report), Some(since)) if !view.is_target => {
                    let ids = target_ids(&setup, &view.targets);
                    Seen {
                        detections: observe::detections(report, &ids, since),
                        reach: Some(observe::reach(report, &live, &view.targets)),
                        accused: observe::accusations(report, &ids, since),
                        rejoined: observe::rejoined(report, &ids, since),
                    }
                }
                _ => Seen::default(),
            };
            transitions.extend(ledger.step(view, &carried, seen, now_us));
        }
        let present: Vec<String> = views.iter().map(|v| v.uid.clone()).collect();
        transitions.extend(ledger.forget_missing(&present, now_us));
        for transition in &transitions {
            match transition {
                Transition::Applied { uid, entries } => {
                    let mechanism = views
                        .iter()
                        .find(|v| &v.uid == uid)
                        .map_or("ebpf", |v| plan::mechanism(v.action).label());
                    setup.links.metrics.applied.with_label_values(&[mechanism]).inc();
                    tracing::warn!(experiment = %uid, entries, mechanism, "chaos: fault entries installed");
                }
                Transition::Reverted { uid, cause } => {
                    setup.links.metrics.reverts.with_label_values(&[cause]).inc();
                    tracing::info!(experiment = %uid, cause, "chaos: fault entries removed");
                    if let Some(report) = ledger.report(uid) {
                        record_injection_window(report);
                    }
                }
            }
        }
        setup
            .links
            .metrics
            .active_entries
            .set(i64::try_from(ledger.active_entries()).unwrap_or(i64::MAX));
        let reports = ledger.reports();
        setup.links.reports.send_if_modified(|held| {
            let changed = *held != reports;
            *held = reports;
            changed
        });
    }
    // The kernel entries expire at their deadlines by themselves; the send path stops now.
    setup.links.delays.set(BTreeMap::new());
}

/// The node IDs of the targets, as events name nodes.
fn target_ids(setup: &ChaosSetup, targets: &BTreeSet<String>) -> observe::TargetIds {
    targets
        .iter()
        .map(|name| {
            let spiffe_id =
                crate::identity::spiffe_id(&setup.trust_domain, &setup.namespace, &setup.mesh, name);
            (crate::identity::node_id(&spiffe_id).to_string(), name.clone())
        })
        .collect()
}

/// Nodes whose agent reported within [`LIVE_WITHIN`].
fn live_names(nodes: &Store<MeshNode>, now: Timestamp) -> BTreeSet<String> {
    nodes
        .state()
        .iter()
        .filter(|record| {
            record
                .status
                .as_ref()
                .and_then(|s| s.last_report_time.as_ref())
                .is_some_and(|at| {
                    now.duration_since(at.0)
                        .try_into()
                        .is_ok_and(|age: Duration| age <= LIVE_WITHIN)
                        || at.0 > now
                })
        })
        .map(|record| record.spec.node_name.clone())
        .collect()
}

/// The fault's window on this agent, from the entries going in to their removal, as a span of
/// the experiment's trace (the operator records its root when the verdict is in).
fn record_injection_window(report: &x0tta6bl4_api::chaos::AgentChaosReport) {
    let (Some(trace), Some(applied), Some(reverted)) = (
        x0tta6bl4_telemetry::ObjectTrace::for_uid(&report.uid),
        &report.applied_at,
        &report.reverted_at,
    ) else {
        return;
    };
    trace.record_child(
        "chaos.injection",
        std::time::SystemTime::from(applied.0),
        std::time::SystemTime::from(reverted.0),
        &[
            ("chaos.experiment", report.experiment.clone()),
            ("chaos.mechanism", report.mechanism.clone()),
            ("chaos.revert_cause", report.revert_cause.clone()),
            ("chaos.refused", report.refused.clone()),
        ],
    );
}
