//! Reconciler for kinds whose real logic lands in later issues (ChaosExperiment): it validates the spec, checks that the referenced objects exist, and
//! reports the outcome as conditions, writing only when something changed.
use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::Api;
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::{Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use x0tta6bl4_api::condition::{self, Condition, DEGRADED, Desired, PROGRESSING, READY, Status};
use x0tta6bl4_api::{ChaosExperiment, ChaosExperimentStatus, FLTrainingRound, FieldError, MeshNetwork};

use crate::context::Context;
use crate::error::{Error, Result};
use crate::mesh::apply::apply_status;

/// How often a missing reference is looked up again; slow enough never to storm.
const MISSING_REFERENCE_RETRY: Duration = Duration::from_secs(30);

/// An object another object refers to, which must exist in the same namespace.
pub enum Reference<'a> {
    Mesh(&'a str),
    Round(&'a str),
}

/// What the generic reconciler needs of a kind.
pub trait Reconciled:
    Resource<Scope = NamespaceResourceScope, DynamicType = ()>
    + Clone
    + DeserializeOwned
    + Serialize
    + Debug
    + Send
    + Sync
    + 'static
{
    type Status: Serialize + Clone + PartialEq + Default + Debug + Send + Sync;
    const KIND: &'static str;
    /// What this kind does once its issue lands, for the NotImplemented message.
    const PENDING_WORK: &'static str;
    fn validate_spec(&self) -> Result<(), Vec<FieldError>>;
    fn reference(&self) -> Option<Reference<'_>>;
    fn current_status(&self) -> Option<&Self::Status>;
    fn conditions(status: &mut Self::Status) -> &mut Vec<Condition>;
    fn set_phase(&self, status: &mut Self::Status, phase: &str, generation: Option<i64>);
}

impl Reconciled for ChaosExperiment {
    type Status = ChaosExperimentStatus;
    const KIND: &'static str = "ChaosExperiment";
    const PENDING_WORK: &'static str = "fault injection";
    fn validate_spec(&self) -> Result<(), Vec<FieldError>> {
        self.spec.validate()
    }
    fn reference(&self) -> Option<Reference<'_>> {
        match (&self.spec.target.mesh_ref, &self.spec.target.round_ref) {
            (Some(mesh), _) => Some(Reference::Mesh(&mesh.name)),
            (None, Some(round)) => Some(Reference::Round(&round.name)),
            (None, None) => None,
        }
    }
    fn current_status(&self) -> Option<&Self::Status> {
        self.status.as_ref()
    }
    fn conditions(status: &mut Self::Status) -> &mut Vec<Condition> {
        &mut status.conditions
    }
    fn set_phase(&self, status: &mut Self::Status, phase: &str, generation: Option<i64>) {
        status.phase = phase.to_owned();
        status.observed_generation = generation;
    }
}

pub async fn reconcile<K: Reconciled>(object: Arc<K>, ctx: Arc<Context>) -> Result<Action> {
    let _timer = ctx.metrics.reconcile_started(K::KIND);
    if object.meta().deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let namespace = object
        .namespace()
        .ok_or(Error::MissingObjectKey("metadata.namespace"))?;
    let (conditions, phase, action) = match object.validate_spec() {
        Err(errors) => {
            let message = x0tta6bl4_api::join_field_errors(&errors);
            (blocked("InvalidSpec", message), "Failed", Action::await_change())
        }
        Ok(()) => match missing_reference(&ctx, &namespace, object.reference()).await? {
            Some(message) => (
                blocked("ReferenceNotFound", message),
                "Pending",
                Action::requeue(MISSING_REFERENCE_RETRY),
            ),
            None => {
                let message = format!(
                    "spec is valid; {} is not implemented in this release yet",
                    K::PENDING_WORK
                );
                (
                    vec![
                        Desired::new(READY, Status::False, "NotImplemented", message),
                        Desired::new(PROGRESSING, Status::False, "NotImplemented", "nothing to run yet"),
                        Desired::new(DEGRADED, Status::False, "AsExpected", "spec is valid"),
                    ],
                    "Pending",
                    Action::await_change(),
                )
            }
        },
    };
    let generation = object.meta().generation;
    let now = Time(k8s_openapi::jiff::Timestamp::now());
    let mut status = object.current_status().cloned().unwrap_or_default();
    let transitions = condition::set_all(K::conditions(&mut status), conditions, generation, &now);
    object.set_phase(&mut status, phase, generation);
    if object.current_status() != Some(&status) {
        apply_status(&ctx, object.as_ref(), &status).await?;
    }
    ctx.publish_transitions(&object.object_ref(&()), &transitions)
        .await;
    ctx.reset_backoff(&ObjectRef::from_obj(object.as_ref()));
    Ok(action)
}

fn blocked(reason: &'static str, message: String) -> Vec<Desired> {
    vec![
        Desired::new(READY, Status::False, reason, message.clone()),
        Desired::new(
            PROGRESSING,
            Status::False,
            reason,
            "waiting for the problem to be fixed",
        ),
        Desired::new(DEGRADED, Status::True, reason, message),
    ]
}

async fn missing_reference(
    ctx: &Context,
    namespace: &str,
    reference: Option<Reference<'_>>,
) -> Result<Option<String>> {
    let found = match reference {
        None => return Ok(None),
        Some(Reference::Mesh(name)) => Api::<MeshNetwork>::namespaced(ctx.client.clone(), namespace)
            .get_metadata_opt(name)
            .await
            .map_err(Error::kube(format!("reading MeshNetwork {namespace}/{name}")))?
            .map(|_| ())
            .ok_or_else(|| format!("MeshNetwork {name} not found in namespace {namespace}")),
        Some(Reference::Round(name)) => Api::<FLTrainingRound>::namespaced(ctx.client.clone(), namespace)
            .get_metadata_opt(name)
            .await
            .map_err(Error::kube(format!("reading FLTrainingRound {namespace}/{name}")))?
            .map(|_| ())
            .ok_or_else(|| format!("FLTrainingRound {name} not found in namespace {namespace}")),
    };
    Ok(found.err())
}
