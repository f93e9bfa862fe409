//! What every reconciler gets: the client, metrics, events and per-object backoff.
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;

use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::ObjectRef;
use kube::{Client, Resource, ResourceExt};
use rand::Rng;
use x0tta6bl4_api::condition::{DEGRADED, Desired, Status};

use crate::error::Error;
use crate::mesh::build::BuildOptions;
use crate::metrics::Metrics;

/// The single field manager of every server-side apply, so ownership of fields is unambiguous.
pub const FIELD_MANAGER: &str = "x0tta6bl4-operator";

pub struct Context {
    /// Client of the API server.
    pub client: Client,
    /// Counters and histograms served on /metrics.
    pub metrics: Metrics,
    /// Publishes Events on condition transitions.
    pub recorder: Recorder,
    /// Options from flags that shape the desired children.
    pub build_options: BuildOptions,
    /// Consecutive failures per object, for exponential backoff with jitter.
    failures: Mutex<HashMap<String, u32>>,
}

impl Context {
    pub fn new(client: Client, metrics: Metrics, identity: &str, build_options: BuildOptions) -> Self {
        let reporter = Reporter {
            controller: FIELD_MANAGER.into(),
            instance: Some(identity.to_owned()),
        };
        Self {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            metrics,
            build_options,
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// Backoff after a failure: 1 s doubling to 5 min, with ±50% jitter so that many objects
    /// failing together (an API server restart) do not retry in lockstep.
    pub fn backoff<K: kube::Resource>(&self, object: &ObjectRef<K>) -> Duration {
        let mut failures = self.failures.lock().expect("backoff map lock");
        let count = failures.entry(object.to_string()).or_insert(0);
        *count = count.saturating_add(1);
        let base = Duration::from_secs(1u64 << (*count - 1).min(8)).min(Duration::from_secs(300));
        base.mul_f64(rand::rng().random_range(0.5..1.5))
    }

    /// Forgets the failures of an object after a successful reconcile.
    pub fn reset_backoff<K: kube::Resource>(&self, object: &ObjectRef<K>) {
        self.failures
            .lock()
            .expect("backoff map lock")
            .remove(&object.to_string());
    }

    /// Publishes one Event per condition transition; a failure to publish is logged, not fatal.
    pub async fn publish_transitions(
        &self,
        reference: &k8s_openapi::api::core::v1::ObjectReference,
        transitions: &[Desired],
    ) {
        for transition in transitions {
            let event = Event {
                // Warnings are for what needs a person: a spec to fix, or agents lost.
                type_: if transition.reason == "InvalidSpec"
                    || (transition.type_ == DEGRADED && transition.status == Status::True)
                {
                    EventType::Warning
                } else {
                    EventType::Normal
                },
                reason: transition.reason.to_owned(),
                note: Some(format!(
                    "{} is {}: {}",
                    transition.type_,
                    transition.status.as_str(),
                    transition.message
                )),
                action: format!("Set{}", transition.type_),
                secondary: None,
            };
            self.metrics.api_writes.with_label_values(&["Event"]).inc();
            if let Err(error) = self.recorder.publish(&event, reference).await {
                tracing::warn!(%error, "could not publish event");
            }
        }
    }
}

/// Shared error policy of every controller: count the failure by cause, then back off with
/// jitter. An invalid spec never reaches here; it is a condition, not an error.
pub fn error_policy<K: Resource<DynamicType = ()>>(
    object: Arc<K>,
    error: &Error,
    ctx: Arc<Context>,
) -> Action {
    let kind = K::kind(&());
    ctx.metrics
        .reconcile_errors
        .with_label_values(&[kind.as_ref(), error.cause()])
        .inc();
    let delay = ctx.backoff(&ObjectRef::from_obj(object.as_ref()));
    tracing::warn!(%kind, name = %object.name_any(), %error, retry_in = ?delay, "reconcile failed");
    Action::requeue(delay)
}
