//! The root span of an object's trace, recorded when the object finishes: its trace id is the
//! object's UID, so the agents' spans for it (recorded earlier, as children of the same
//! derived root id) fall under it. See `x0tta6bl4_telemetry::ObjectTrace`.
use std::time::SystemTime;

use kube::{Resource, ResourceExt};
use x0tta6bl4_telemetry::ObjectTrace;

/// Records `object`'s root span, from its creation until now, named `kind`, with `phase` and
/// `attributes`. Nothing happens while traces are off or without a UID.
pub fn record_finished<K: Resource>(
    kind: &'static str,
    object: &K,
    phase: &str,
    attributes: Vec<(&'static str, String)>,
) {
    let Some(trace) = object.meta().uid.as_deref().and_then(ObjectTrace::for_uid) else {
        return;
    };
    let end = SystemTime::now();
    let start = object
        .meta()
        .creation_timestamp
        .as_ref()
        .map_or(end, |created| SystemTime::from(created.0));
    let mut all = vec![
        ("k8s.namespace.name", object.namespace().unwrap_or_default()),
        ("k8s.object.kind", kind.to_owned()),
        ("k8s.object.name", object.name_any()),
        ("phase", phase.to_owned()),
    ];
    all.extend(attributes);
    trace.record_root(kind, start, end, &all);
    tracing::info!(kind, name = %object.name_any(), trace_id = %trace.trace_id_hex(), %phase, "trace recorded");
}
