//! One reconcile of a ChaosExperiment: read (the experiment afresh with the other experiments
//! of its namespace, its FLTrainingRound for a round's experiment, its MeshNetwork, the mesh's
//! MeshNode records and, with a node selector, the nodes' labels) → [`plan`] (pure) → write the status with server-side apply → Events and
//! metrics.
//!
//! There is no finalizer: deleting an experiment needs nothing from the operator. Every agent
//! removes the entries of an experiment that is gone or being deleted by itself, and the
//! kernel expires them at the deadline even when no agent is left to do it.
use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Node, ObjectReference, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, DeleteParams, ListParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType};
use kube::runtime::reflector::ObjectRef;
use kube::{Resource, ResourceExt};
use x0tta6bl4_api::chaos::{ActionType, phase};
use x0tta6bl4_api::{ChaosExperiment, FLTrainingRound, MeshNetwork, MeshNode};

use super::plan::{self, ClusterView, Notice, Outcome};
use crate::agent_pods;
use crate::context::Context;
use crate::error::{Error, Result};
use crate::metrics::Metrics;
use crate::status_write::apply_status;

const KIND: &str = "ChaosExperiment";
/// events.k8s.io/v1 refuses a note longer than 1 kB.
const NOTE_LIMIT: usize = 1024;

pub async fn reconcile(experiment: Arc<ChaosExperiment>, ctx: Arc<Context>) -> Result<Action> {
    let _timer = ctx.metrics.reconcile_started(KIND);
    if experiment.meta().deletion_timestamp.is_some() || plan::is_settled(&experiment) {
        return Ok(Action::await_change());
    }
    let namespace = experiment
        .namespace()
        .ok_or(Error::MissingObjectKey("metadata.namespace"))?;
    // Planned from a fresh read rather than the watch cache: a cache that has not yet seen the
    // status written last could make this plan open a second window.
    let all = Api::<ChaosExperiment>::namespaced(ctx.client.clone(), &namespace)
        .list(&ListParams::default())
        .await
        .map_err(Error::kube(format!(
            "listing the ChaosExperiments of namespace {namespace}"
        )))?
        .items;
    let uid = experiment.uid();
    let Some(current) = all.iter().find(|e| e.uid() == uid) else {
        return Ok(Action::await_change());
    };
    if current.meta().deletion_timestamp.is_some() || plan::is_settled(current) {
        return Ok(Action::await_change());
    }
    let others: Vec<ChaosExperiment> = all.iter().filter(|e| e.uid() != uid).cloned().collect();
    // A round's experiment reads its job, and the namespace's other jobs for a reference run.
    let jobs = match &current.spec.target.round_ref {
        Some(_) => {
            Api::<FLTrainingRound>::namespaced(ctx.client.clone(), &namespace)
                .list(&ListParams::default())
                .await
                .map_err(Error::kube(format!(
                    "listing the FLTrainingRounds of namespace {namespace}"
                )))?
                .items
        }
        None => Vec::new(),
    };
    let round = current
        .spec
        .target
        .round_ref
        .as_ref()
        .and_then(|reference| {
            jobs.iter()
                .find(|job| job.metadata.name.as_deref() == Some(reference.name.as_str()))
        })
        .cloned();
    // A round's experiment acts on the mesh its job runs on.
    let mesh_name = match (&current.spec.target.mesh_ref, &round) {
        (Some(reference), _) => Some(reference.name.as_str()),
        (None, Some(round)) => Some(round.spec.mesh_ref.name.as_str()),
        (None, None) => None,
    };
    let (mesh, records) = match mesh_name {
        Some(name) => mesh_and_records(&ctx, &namespace, name).await?,
        None => (None, Vec::new()),
    };
    let node_labels = if needs_node_labels(current) {
        node_labels(&ctx).await?
    } else {
        BTreeMap::new()
    };

    let pods = match (&current.spec.target.mesh_ref, current.spec.action.type_) {
        (Some(reference), ActionType::NodeKill) => agent_pods(&ctx, &namespace, &reference.name).await?,
        _ => BTreeMap::new(),
    };

    let now = Time(k8s_openapi::jiff::Timestamp::now());
    let view = ClusterView {
        mesh: mesh.as_ref(),
        records: &records,
        node_labels: &node_labels,
        others: &others,
        pods: &pods,
        round: round.as_ref(),
        jobs: &jobs,
    };
    let mut planned = plan::plan(current, &view, &now);
    // keyExpiry: the short endorsements go out with the status that opens the window.
    if current.spec.action.type_ == ActionType::KeyExpiry
        && planned.status.phase == x0tta6bl4_api::chaos::phase::INJECTING
        && planned.status.expiring_endorsements.is_empty()
        && let Some(mesh) = &mesh
    {
        let authority = crate::mesh::authority::ensure(&ctx, mesh).await?;
        let now_unix = u64::try_from(now.0.as_second()).unwrap_or(0);
        planned.status.expiring_endorsements = super::key_expiry::issue(
            &authority,
            mesh,
            &namespace,
            &records,
            &planned.status.targets,
            now_unix,
        );
    }
    if current.status.as_ref() != Some(&planned.status) {
        apply_status(&ctx, current, &planned.status).await?;
        if let Some(verdict) = planned.outcome.verdict {
            let status = &planned.status;
            crate::traces::record_finished(
                KIND,
                current,
                &status.phase,
                vec![
                    ("chaos.verdict", verdict.to_owned()),
                    ("chaos.verdict_message", status.verdict_message.clone()),
                    ("chaos.targets", status.targets.join(",")),
                    ("chaos.time_to_detect", status.time_to_detect.clone()),
                    ("chaos.time_to_recover", status.time_to_recover.clone()),
                ],
            );
        }
    }
    // Only now that the kills are on record: a restart after this point finds them made and
    // never kills again; one before it kills them then.
    for (node, pod) in &planned.outcome.pod_deletions {
        delete_pod(&ctx, &namespace, node, pod).await;
    }
    let before = current.status.as_ref().map_or("", |s| s.phase.as_str());
    if before != planned.status.phase {
        tracing::info!(
            %namespace,
            name = %current.name_any(),
            from = before,
            to = %planned.status.phase,
            "chaos experiment moved"
        );
    }
    publish(&ctx, &current.object_ref(&()), &planned.events).await;
    count(&ctx.metrics, &planned.outcome);
    ctx.reset_backoff(&ObjectRef::from_obj(experiment.as_ref()));
    Ok(planned.requeue.map_or_else(Action::await_change, Action::requeue))
}

/// The MeshNetwork (`None` when missing) and its MeshNode records.
async fn mesh_and_records(
    ctx: &Context,
    namespace: &str,
    mesh: &str,
) -> Result<(Option<MeshNetwork>, Vec<MeshNode>)> {
    let network = Api::<MeshNetwork>::namespaced(ctx.client.clone(), namespace)
        .get_opt(mesh)
        .await
        .map_err(Error::kube(format!("reading MeshNetwork {namespace}/{mesh}")))?;
    if network.is_none() {
        return Ok((None, Vec::new()));
    }
    let records = crate::agent_report::mesh_records(ctx, namespace, mesh).await?;
    Ok((network, records))
}

/// The running agent pod of the mesh's DaemonSet on each node.
async fn agent_pods(ctx: &Context, namespace: &str, mesh: &str) -> Result<BTreeMap<String, String>> {
    let selector = agent_pods::selector(mesh);
    let pods = Api::<Pod>::namespaced(ctx.client.clone(), namespace)
        .list(&ListParams::default().labels(&selector))
        .await
        .map_err(Error::kube(format!(
            "listing the agent pods of {namespace}/{mesh}"
        )))?;
    Ok(pods
        .items
        .into_iter()
        .filter(|pod| pod.metadata.deletion_timestamp.is_none())
        .filter_map(|pod| {
            let node = pod.spec.as_ref()?.node_name.clone()?;
            Some((node, pod.name_any()))
        })
        .collect())
}

/// Deletes a killed agent's pod (its DaemonSet starts a new one). Gone already counts as done;
/// a failure is logged and shows as no detection in the experiment, never retried: a kill is
/// made at most once.
async fn delete_pod(ctx: &Context, namespace: &str, node: &str, pod: &str) {
    let api = Api::<Pod>::namespaced(ctx.client.clone(), namespace);
    ctx.metrics.api_writes.with_label_values(&["Pod"]).inc();
    match api.delete(pod, &DeleteParams::default()).await {
        Ok(_) => tracing::warn!(%namespace, %node, %pod, "chaos: agent pod deleted (nodeKill)"),
        Err(kube::Error::Api(status)) if status.code == 404 => {
            tracing::info!(%namespace, %node, %pod, "chaos: agent pod already gone");
        }
        Err(error) => {
            tracing::error!(%namespace, %node, %pod, %error, "chaos: could not delete the agent pod")
        }
    }
}

/// Node labels matter only while targets are still to be chosen.
fn needs_node_labels(experiment: &ChaosExperiment) -> bool {
    let status = experiment.status.clone().unwrap_or_default();
    !experiment.spec.target.node_selector.is_empty()
        && status.phase != phase::INJECTING
        && status.phase != phase::RECOVERING
        && status.remaining.is_empty()
}

/// Every node's labels, in one list of metadata.
async fn node_labels(ctx: &Context) -> Result<BTreeMap<String, BTreeMap<String, String>>> {
    let nodes = Api::<Node>::all(ctx.client.clone())
        .list_metadata(&ListParams::default())
        .await
        .map_err(Error::kube("listing the labels of the nodes"))?;
    Ok(nodes
        .items
        .into_iter()
        .map(|node| (node.name_any(), node.metadata.labels.unwrap_or_default()))
        .collect())
}

/// Publishes the plan's Events; a failure to publish is logged, not fatal.
async fn publish(ctx: &Context, reference: &ObjectReference, notices: &[Notice]) {
    for notice in notices {
        let event = Event {
            type_: if notice.warning {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: notice.reason.to_owned(),
            note: Some(truncated(&notice.note, NOTE_LIMIT)),
            action: notice.action.clone(),
            secondary: None,
        };
        ctx.metrics.api_writes.with_label_values(&["Event"]).inc();
        if let Err(error) = ctx.recorder.publish(&event, reference).await {
            tracing::warn!(%error, "could not publish event");
        }
    }
}

fn truncated(text: &str, limit: usize) -> String {
    if text.len() <= limit {
        return text.to_owned();
    }
    let mut end = limit.saturating_sub('…'.len_utf8());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

/// Counts a plan's reverts and verdicts, once each: a plan reports them only in the step
/// whose status write made them happen.
fn count(metrics: &Metrics, outcome: &Outcome) {
    if let Some(cause) = outcome.reverted {
        metrics.chaos_reverts.with_label_values(&[cause]).inc();
    }
    if let Some(verdict) = outcome.verdict {
        metrics.chaos_verdicts.with_label_values(&[verdict]).inc();
        if let Some(took) = outcome.time_to_detect {
            metrics.chaos_time_to_detect.observe(took.as_secs_f64());
        }
        if let Some(took) = outcome.time_to_recover {
            metrics.chaos_time_to_recover.observe(took.as_secs_f64());
        }
    }
}

#[cfg(test)]
mod tests {
    //! One reconcile against a mock API server that records every request. The real behaviour
    //! against kube-apiserver and agents is the e2e suite's.
    use serde_json::{Value, json};

    use super::*;
    use crate::testing::{self, MockApi};

    fn mk_experiment(status: Value) -> ChaosExperiment {
        serde_json::from_value(json!({
            "apiVersion": "x0tta6bl4.io/v1alpha1", "kind": "ChaosExperiment",
            "metadata": {"name": "cut", "namespace": "team", "uid": "uid-1", "generation": 1},
            "spec": {
                "target": {"meshRef": {"name": "demo"}, "nodeSelector": {"chaos": "victim"}},
                "action": {"type": "partition"}, "duration": "60s"
            },
            "status": status
        }))
        .unwrap()
    }

    /// A mesh of three live agents, converged or not; only node-2 carries chaos=victim.
    fn mk_cluster(now: &str, converged: bool) -> (Value, Value, Value) {
        let (status, reason) = if converged {
            ("True", "AllRoutesKnown")
        } else {
            ("False", "RoutesMissing")
        };
        let mesh = json!({
            "apiVersion": "x0tta6bl4.io/v1alpha1", "kind": "MeshNetwork",
            "metadata": {"name": "demo", "namespace": "team"}, "spec": {},
            "status": {"conditions": [{"type": "Converged", "status": status, "reason": reason,
                "message": "", "lastTransitionTime": now}]}
        });
        let record = |i: usize| {
            let neighbours: Vec<Value> = (0..3usize)
                .filter(|j| *j != i)
                .map(|j| {
                    json!({"node": format!("node-{j}"), "cost": 256, "rttMicros": 100,
                        "lossPercent": 0, "keyExchange": "X25519MLKEM768"})
                })
                .collect();
            json!({
                "apiVersion": "x0tta6bl4.io/v1alpha1", "kind": "MeshNode",
                "metadata": {"name": format!("demo-node-{i}"), "namespace": "team"},
                "spec": {"meshName": "demo", "nodeName": format!("node-{i}")},
                "status": {"endpoint": format!("198.18.251.{}:5000/5001", i + 1), "routeCount": 2,
                    "lastReportTime": now, "neighbours": neighbours}
            })
        };
        let records = json!({"apiVersion": "x0tta6bl4.io/v1alpha1", "kind": "MeshNodeList",
            "metadata": {}, "items": [record(0), record(1), record(2)]});
        let items: Vec<Value> = (0..3usize)
            .map(|i| {
                let labels = if i == 2 {
                    json!({"chaos": "victim"})
                } else {
                    json!({})
                };
                json!({"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata",
                    "metadata": {"name": format!("node-{i}"), "labels": labels}})
            })
            .collect();
        let nodes = json!({"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadataList",
            "metadata": {}, "items": items});
        (mesh, records, nodes)
    }

    /// Serves the experiment (alone in its namespace) and the cluster of [`mk_cluster`].
    fn mock_api(experiment: &ChaosExperiment, converged: bool) -> (kube::Client, MockApi) {
        let now = k8s_openapi::jiff::Timestamp::now().to_string();
        let (mesh, records, nodes) = mk_cluster(&now, converged);
        let experiment = serde_json::to_value(experiment).unwrap();
        MockApi::serve_suffixes(vec![
            ("/chaosexperiments/cut/status", experiment.clone()),
            (
                "/chaosexperiments",
                testing::list("x0tta6bl4.io/v1alpha1", "ChaosExperimentList", &[experiment]),
            ),
            ("/meshnetworks/demo", mesh),
            ("/meshnodes", records),
            ("/nodes", nodes),
        ])
    }

    const STATUS_PATH: &str = "/apis/x0tta6bl4.io/v1alpha1/namespaces/team/chaosexperiments/cut/status";
    const LIST_EXPERIMENTS: &str = "GET /apis/x0tta6bl4.io/v1alpha1/namespaces/team/chaosexperiments";
    const GET_MESH: &str = "GET /apis/x0tta6bl4.io/v1alpha1/namespaces/team/meshnetworks/demo";
    const LIST_RECORDS: &str = "GET /apis/x0tta6bl4.io/v1alpha1/namespaces/team/meshnodes";
    const LIST_NODES: &str = "GET /api/v1/nodes";

    #[tokio::test]
    async fn an_experiment_ready_to_inject_is_written_once_and_announced() {
        let experiment = mk_experiment(Value::Null);
        let (client, api) = mock_api(&experiment, true);
        let ctx = testing::context(client);
        let action = reconcile(Arc::new(experiment), ctx.clone())
            .await
            .expect("reconcile succeeds");
        assert_eq!(action, Action::requeue(plan::INJECTING_EVERY));
        let writes = api.writes();
        assert_eq!(
            api.write_lines(),
            [
                format!("PATCH {STATUS_PATH}"),
                "POST /apis/events.k8s.io/v1/namespaces/team/events".to_owned(),
            ]
        );
        let status = &writes[0].body["status"];
        assert_eq!(status["phase"], "Injecting");
        assert_eq!(status["targets"], json!(["node-2"]));
        assert_eq!(status["assignments"][0]["entries"].as_array().unwrap().len(), 2);
        assert!(status["deadline"].is_string() && status["injectedAt"].is_string());
        assert_eq!(writes[1].body["reason"], "Injected");
        assert_eq!(
            ctx.metrics
                .api_writes
                .with_label_values(&["ChaosExperiment/status"])
                .get(),
            1
        );
    }

    /// Reconciles `experiment` once; returns the action and the mock API.
    async fn reconcile_once(experiment: ChaosExperiment, converged: bool) -> (Action, MockApi) {
        let (client, api) = mock_api(&experiment, converged);
        let action = reconcile(Arc::new(experiment), testing::context(client))
            .await
            .expect("reconcile succeeds");
        (action, api)
    }

    #[tokio::test]
    async fn a_steady_experiment_is_read_again_but_never_rewritten() {
        // Pending on a mesh that has not converged, and Injecting within its window: the first
        // reconcile writes the status; the experiment as the API server then serves it is read
        // again and planned again, and nothing is written (no status, no Event).
        let cases = [
            (
                false,
                "Pending",
                vec![LIST_EXPERIMENTS, GET_MESH, LIST_RECORDS, LIST_NODES],
            ),
            (true, "Injecting", vec![LIST_EXPERIMENTS, GET_MESH, LIST_RECORDS]),
        ];
        for (converged, phase, reads) in cases {
            let (_, first) = reconcile_once(mk_experiment(Value::Null), converged).await;
            let written = first.writes()[0].body["status"].clone();
            assert_eq!(written["phase"], phase);
            let (action, api) = reconcile_once(mk_experiment(written), converged).await;
            assert_eq!(api.write_lines(), Vec::<String>::new(), "{phase}");
            assert_eq!(api.read_lines(), reads, "{phase}");
            assert_ne!(action, Action::await_change(), "{phase} is looked at again");
        }
    }

    #[tokio::test]
    async fn a_finished_experiment_is_not_even_read_again() {
        let refused = mk_experiment(json!({
            "phase": "Failed", "observedGeneration": 1,
            "conditions": [{"type": "Ready", "status": "False", "reason": "InvalidSpec",
                "message": "spec.duration: invalid", "lastTransitionTime": "2025-01-01T00:00:00Z"}]
        }));
        let completed = mk_experiment(json!({
            "phase": "Completed", "observedGeneration": 1, "injectedFor": "1m0s", "verdict": "Passed"
        }));
        for experiment in [completed, refused] {
            let (action, api) = reconcile_once(experiment, true).await;
            assert_eq!(action, Action::await_change());
            assert_eq!(api.requests(), Vec::new());
        }
    }

    #[test]
    fn a_long_note_is_cut_at_a_character_boundary_within_the_limit() {
        let long = "é".repeat(600);
        let cut = truncated(&long, NOTE_LIMIT);
        assert!(cut.len() <= NOTE_LIMIT, "{}", cut.len());
        assert!(cut.ends_with('…'));
        assert_eq!(truncated("short", NOTE_LIMIT), "short");
    }
}
