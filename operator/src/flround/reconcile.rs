//! The FLTrainingRound reconciler: validate, select participants and an aggregator once,
//! then follow the aggregator's round ConfigMaps, seal each record into the hash chain and
//! finish the job after `spec.rounds`. It never trains or aggregates itself: the agents do,
//! over the mesh (see `x0tta6bl4_api::fl_protocol`).
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Node};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::{Resource, ResourceExt};
use x0tta6bl4_api::condition::{self, DEGRADED, Desired, PROGRESSING, READY, Status};
use x0tta6bl4_api::fl_protocol::{ERROR_KEY, JOB_LABEL, RECORD_KEY, ROUND_LABEL, SEALED_KEY};
use x0tta6bl4_api::fl_record::RoundRecord;
use x0tta6bl4_api::{FLTrainingRound, FLTrainingRoundStatus, MeshNetwork, MeshNode};

use super::chain::{self, RoundResult};
use super::failover;
use super::select::{self, Candidate, SelectError};
use crate::context::Context;
use crate::context::FIELD_MANAGER;
use crate::error::{Error, Result};
use crate::mesh::apply::apply_status;
use crate::mesh::status::AgentReport;

const KIND: &str = "FLTrainingRound";
/// How often a job waiting for agents (or for a missing mesh) looks again.
const WAITING_RETRY: Duration = Duration::from_secs(15);
/// A running job looks at its rounds at least this often (round ConfigMaps also wake it).
const RUNNING_RETRY: Duration = Duration::from_secs(10);

pub const PENDING: &str = "Pending";
pub const RUNNING: &str = "Running";
pub const COMPLETED: &str = "Completed";
pub const FAILED: &str = "Failed";

fn waiting(reason: &'static str, message: String) -> Vec<Desired> {
    vec![
        Desired::new(READY, Status::False, reason, message.clone()),
        Desired::new(PROGRESSING, Status::False, reason, message.clone()),
        Desired::new(DEGRADED, Status::True, reason, message),
    ]
}

pub async fn reconcile(job: Arc<FLTrainingRound>, ctx: Arc<Context>) -> Result<Action> {
    let _timer = ctx.metrics.reconcile_started(KIND);
    if job.meta().deletion_timestamp.is_some() {
        // The round ConfigMaps are owned by the job; the agents stop when it is gone.
        return Ok(Action::await_change());
    }
    let namespace = job
        .namespace()
        .ok_or(Error::MissingObjectKey("metadata.namespace"))?;
    let name = job.name_any();
    let generation = job.meta().generation;
    let now = Time(k8s_openapi::jiff::Timestamp::now());
    let mut status = job.status.clone().unwrap_or_default();
    let (conditions, phase, action) = plan(&ctx, &job, &namespace, &name, &mut status, &now).await?;
    let transitions = condition::set_all(&mut status.conditions, conditions, generation, &now);
    status.phase = phase.to_owned();
    status.observed_generation = generation;
    status.round_text = format!("{}/{}", status.completed_rounds, job.spec.rounds);
    if job.status.as_ref() != Some(&status) {
        apply_status(&ctx, job.as_ref(), &status).await?;
    }
    ctx.publish_transitions(&job.object_ref(&()), &transitions).await;
    ctx.reset_backoff(&ObjectRef::from_obj(job.as_ref()));
    Ok(action)
}

/// Decides the conditions, the phase and when to look again, filling in `status`.
async fn plan(
    ctx: &Context,
    job: &FLTrainingRound,
    namespace: &str,
    name: &str,
    status: &mut FLTrainingRoundStatus,
    now: &Time,
) -> Result<(Vec<Desired>, &'static str, Action)> {
    if let Err(errors) = job.spec.validate() {
        let message = x0tta6bl4_api::join_field_errors(&errors);
        return Ok((waiting("InvalidSpec", message), FAILED, Action::await_change()));
    }
    if status.phase == COMPLETED || status.phase == FAILED {
        return Ok((current(status), phase_of(status), Action::await_change()));
    }
    let mesh = &job.spec.mesh_ref.name;
    if Api::<MeshNetwork>::namespaced(ctx.client.clone(), namespace)
        .get_metadata_opt(mesh)
        .await
        .map_err(Error::kube(format!("reading MeshNetwork {namespace}/{mesh}")))?
        .is_none()
    {
        let message = format!("MeshNetwork {mesh} not found in namespace {namespace}");
        return Ok((
            waiting("ReferenceNotFound", message),
            PENDING,
            Action::requeue(WAITING_RETRY),
        ));
    }
    let records = Api::<MeshNode>::namespaced(ctx.client.clone(), namespace)
        .list(&ListParams::default().fields(&format!("spec.meshName={mesh}")))
        .await
        .map_err(Error::kube(format!(
            "listing the MeshNode records of {namespace}/{mesh}"
        )))?
        .items;
    if status.participants.is_empty() {
        let candidates = candidates(ctx, &records, now).await?;
        let uid = job.uid().unwrap_or_default();
        return Ok(match select::select(&job.spec, &candidates, &uid) {
            Ok(selection) => {
                let message = format!(
                    "{} participants, aggregated by {}",
                    selection.participants.len(),
                    selection.aggregator
                );
                tracing::info!(job = %name, %message, "federated job started");
                status.participants = selection.participants;
                status.aggregator = selection.aggregator;
                status.zones = selection.zones;
                status.zone_aggregators = selection.zone_aggregators;
                (
                    running(status, job.spec.rounds),
                    RUNNING,
                    Action::requeue(RUNNING_RETRY),
                )
            }
            Err(SelectError::BadSelector(message)) => (
                waiting("InvalidSpec", format!("spec.participants.selector: {message}")),
                FAILED,
                Action::await_change(),
            ),
            Err(error @ SelectError::TooFew { .. }) => (
                waiting("InsufficientParticipants", error.to_string()),
                PENDING,
                Action::requeue(WAITING_RETRY),
            ),
            Err(
                error @ (SelectError::RuleCannotHold { .. }
                | SelectError::QuorumCannotHold { .. }
                | SelectError::ZoneCannotHold { .. }
                | SelectError::TooFewZones { .. }),
            ) => (
                waiting("RuleCannotHold", error.to_string()),
                PENDING,
                Action::requeue(WAITING_RETRY),
            ),
        });
    }

    let (results, failures) = round_results(ctx, namespace, name).await?;
    for seal in chain::advance(status, &results) {
        write_seal(ctx, namespace, &seal.config_map, &seal.sealed).await?;
        tracing::info!(job = %name, round = seal.sealed.round, hash = %seal.sealed.hash, "round sealed into the chain");
    }
    if status.completed_rounds >= job.spec.rounds {
        let message = format!(
            "{} rounds, final accuracy {}, model {} (chain head {})",
            status.completed_rounds, status.accuracy, status.model_config_map, status.chain_head
        );
        let conditions = vec![
            Desired::new(READY, Status::True, "Completed", message),
            Desired::new(PROGRESSING, Status::False, "Completed", "every round is done"),
            Desired::new(DEGRADED, Status::False, "AsExpected", "every round is done"),
        ];
        return Ok((conditions, COMPLETED, Action::await_change()));
    }
    if let Some((_, why)) = failures
        .iter()
        .find(|(round, _)| *round == status.completed_rounds + 1)
    {
        let message = format!("round {} failed: {why}", status.completed_rounds + 1);
        tracing::warn!(job = %name, %message, "federated job failed");
        let conditions = vec![
            Desired::new(READY, Status::False, "RoundFailed", message.clone()),
            Desired::new(PROGRESSING, Status::False, "RoundFailed", message.clone()),
            Desired::new(DEGRADED, Status::True, "RoundFailed", message),
        ];
        return Ok((conditions, FAILED, Action::await_change()));
    }
    let live: BTreeSet<String> = records
        .iter()
        .filter(|r| AgentReport::from_record(r, now).is_some())
        .map(|r| r.spec.node_name.clone())
        .collect();
    let uid = job.uid().unwrap_or_default();
    for change in failover::replace_dead_aggregators(status, &live, &uid) {
        tracing::warn!(job = %name, %change, "federated job: aggregator replaced");
    }
    let mut conditions = running(status, job.spec.rounds);
    let aggregator_live = live.contains(&status.aggregator);
    if !aggregator_live {
        conditions[2] = Desired::new(
            DEGRADED,
            Status::True,
            "AggregatorLost",
            format!(
                "the aggregator {} has not reported and no live participant can take over; rounds resume when one reports",
                status.aggregator
            ),
        );
    }
    Ok((conditions, RUNNING, Action::requeue(RUNNING_RETRY)))
}

fn running(status: &FLTrainingRoundStatus, rounds: i32) -> Vec<Desired> {
    let message = format!(
        "round {} of {rounds}, {} participants, aggregated by {}",
        status.completed_rounds + 1,
        status.participants.len(),
        status.aggregator
    );
    vec![
        Desired::new(READY, Status::False, "Running", message.clone()),
        Desired::new(PROGRESSING, Status::True, "Training", message),
        Desired::new(DEGRADED, Status::False, "AsExpected", "the aggregator reports"),
    ]
}

/// The conditions as they are (a finished job is not re-evaluated).
fn current(status: &FLTrainingRoundStatus) -> Vec<Desired> {
    let keep = |type_: &'static str| {
        condition::find(&status.conditions, type_).map(|c| {
            let status = match c.status.as_str() {
                "True" => Status::True,
                "False" => Status::False,
                _ => Status::Unknown,
            };
            Desired::new(type_, status, reason_of(&c.reason), c.message.clone())
        })
    };
    [READY, PROGRESSING, DEGRADED]
        .into_iter()
        .filter_map(keep)
        .collect()
}

/// The reasons this reconciler writes, as static strings.
fn reason_of(reason: &str) -> &'static str {
    [
        "Completed",
        "Failed",
        "AsExpected",
        "InvalidSpec",
        "Running",
        "Training",
    ]
    .into_iter()
    .find(|known| *known == reason)
    .unwrap_or("Finished")
}

fn phase_of(status: &FLTrainingRoundStatus) -> &'static str {
    if status.phase == COMPLETED {
        COMPLETED
    } else {
        FAILED
    }
}

/// The agents of the mesh with their node labels and liveness.
async fn candidates(ctx: &Context, records: &[MeshNode], now: &Time) -> Result<Vec<Candidate>> {
    let nodes: Api<Node> = Api::all(ctx.client.clone());
    let mut candidates = Vec::new();
    for record in records {
        let endorsed = record.status.as_ref().is_some_and(|s| !s.endorsement.is_empty());
        let labels: BTreeMap<String, String> = nodes
            .get_metadata_opt(&record.spec.node_name)
            .await
            .map_err(Error::kube(format!("reading Node {}", record.spec.node_name)))?
            .map(|node| node.labels().clone())
            .unwrap_or_default();
        candidates.push(Candidate {
            node: record.spec.node_name.clone(),
            labels,
            live: endorsed && AgentReport::from_record(record, now).is_some(),
        });
    }
    Ok(candidates)
}

/// The round results of a job, from its ConfigMaps, and the rounds the aggregator reported as
/// failed (round, why); a result that cannot be read is skipped (and logged) rather than
/// stopping the chain behind it forever.
async fn round_results(
    ctx: &Context,
    namespace: &str,
    job: &str,
) -> Result<(Vec<RoundResult>, Vec<(i32, String)>)> {
    let maps = Api::<ConfigMap>::namespaced(ctx.client.clone(), namespace)
        .list(&ListParams::default().labels(&format!("{JOB_LABEL}={job}")))
        .await
        .map_err(Error::kube(format!(
            "listing the round ConfigMaps of {namespace}/{job}"
        )))?;
    let mut results = Vec::new();
    let mut failures = Vec::new();
    for map in maps.items {
        let config_map = map.name_any();
        let round = map.labels().get(ROUND_LABEL).and_then(|r| r.parse::<i32>().ok());
        let data = map.data.unwrap_or_default();
        let Some(record) = data.get(RECORD_KEY) else {
            if let (Some(round), Some(why)) = (round, data.get(ERROR_KEY)) {
                failures.push((round, why.clone()));
            }
            continue;
        };
        match serde_json::from_str::<RoundRecord>(record) {
            Ok(record) => results.push(RoundResult {
                config_map,
                record,
                sealed: data.get(SEALED_KEY).and_then(|s| serde_json::from_str(s).ok()),
            }),
            Err(error) => tracing::warn!(%config_map, %error, "round record unreadable; skipped"),
        }
    }
    Ok((results, failures))
}

async fn write_seal(ctx: &Context, namespace: &str, config_map: &str, sealed: &RoundRecord) -> Result<()> {
    let text = serde_json::to_string(sealed).map_err(|source| Error::Serialization {
        what: "a sealed round record",
        source,
    })?;
    let patch = serde_json::json!({"data": {SEALED_KEY: text}});
    ctx.metrics.api_writes.with_label_values(&["ConfigMap"]).inc();
    Api::<ConfigMap>::namespaced(ctx.client.clone(), namespace)
        .patch(
            config_map,
            &PatchParams::apply(FIELD_MANAGER),
            &Patch::Merge(&patch),
        )
        .await
        .map_err(Error::kube(format!(
            "sealing round ConfigMap {namespace}/{config_map}"
        )))?;
    Ok(())
}
