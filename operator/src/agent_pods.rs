//! The labels that select a mesh's agent pods: the DaemonSet's selector (the MeshNetwork
//! reconciler) and how the chaos controller finds the pod on a node to kill.
use std::collections::BTreeMap;

pub fn selector_labels(mesh: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (
            "app.kubernetes.io/name".to_owned(),
            "x0tta6bl4-node-agent".to_owned(),
        ),
        ("app.kubernetes.io/instance".to_owned(), mesh.to_owned()),
    ])
}

/// The same labels as a label selector (`key=value,...`).
pub fn selector(mesh: &str) -> String {
    selector_labels(mesh)
        .iter()
        .map(|(key, value)| format!("{key}={value}"))
        .collect::<Vec<_>>()
        .join(",")
}
