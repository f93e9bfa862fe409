//! The x0tta6bl4 operator: reconcilers for MeshNetwork, FLTrainingRound and ChaosExperiment.
#![forbid(unsafe_code)]

/// The log filter when `RUST_LOG` is unset (the chart always sets it, from `logLevel`).
/// kube's own crates log at warn, except kube-runtime: its `reconciling object` span (at
/// info) carries `object.ref` and `object.reason`, and every line a reconciler logs is shown
/// inside it, so the object a line is about is never lost.
pub const DEFAULT_LOG_FILTER: &str = "info,kube=warn,kube_runtime=info";

pub mod agent_pods;
pub mod agent_report;
pub mod chaos;
pub mod context;
pub mod controllers;
pub mod crds;
pub mod error;
pub mod flround;
pub mod leader;
pub mod mesh;
pub mod meshnode;
pub mod metrics;
pub mod ranking;
pub mod revoke_key;
pub mod startup;
pub mod status_write;
#[cfg(test)]
mod testing;
pub mod traces;

#[cfg(test)]
mod log_filter_tests {
    //! The default filter against the span kube-runtime opens around every reconcile
    //! (`kube_runtime::controller`, `info_span!("reconciling object", "object.ref" = ..,
    //! object.reason = ..)`), in both log formats of the operator.
    use std::sync::{Arc, Mutex};

    use tracing_subscriber::EnvFilter;

    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buffer {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// What a reconcile logs under `filter`: kube-runtime's span around a line of ours, and
    /// an info line of kube's client.
    fn logged(filter: &str, json: bool) -> String {
        let buffer = Buffer::default();
        let writer = buffer.clone();
        let builder = tracing_subscriber::fmt()
            .with_env_filter(EnvFilter::new(filter))
            .with_target(true)
            .with_ansi(false)
            .with_writer(move || writer.clone());
        let emit = || {
            let span = tracing::info_span!(
                target: "kube_runtime::controller",
                "reconciling object",
                "object.ref" = %"MeshNetwork.v1alpha1.x0tta6bl4.io/demo.default",
                object.reason = %"object updated"
            );
            span.in_scope(|| {
                tracing::info!(target: "x0tta6bl4_operator::mesh::apply", kind = "DaemonSet", "applied");
            });
            tracing::info!(target: "kube_client::client", "a kube client line");
        };
        if json {
            tracing::subscriber::with_default(builder.json().flatten_event(true).finish(), emit);
        } else {
            tracing::subscriber::with_default(builder.finish(), emit);
        }
        String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap()
    }

    #[test]
    fn the_default_filter_keeps_the_object_of_each_reconcile() {
        let text = logged(super::DEFAULT_LOG_FILTER, false);
        assert!(
            text.contains(
                "reconciling object{object.ref=MeshNetwork.v1alpha1.x0tta6bl4.io/demo.default object.reason=object updated}: x0tta6bl4_operator::mesh::apply: applied kind=\"DaemonSet\""
            ),
            "{text}"
        );
        assert!(!text.contains("a kube client line"), "{text}");
        let json = logged(super::DEFAULT_LOG_FILTER, true);
        let line: serde_json::Value = serde_json::from_str(json.lines().next().unwrap()).unwrap();
        assert_eq!(line["message"], "applied");
        assert_eq!(line["span"]["name"], "reconciling object");
        assert_eq!(
            line["span"]["object.ref"],
            "MeshNetwork.v1alpha1.x0tta6bl4.io/demo.default"
        );
        assert_eq!(json.lines().count(), 1, "{json}");
    }

    /// kube-runtime's own Controller, on a mock API server that lists one ConfigMap: the
    /// reconciler's line is logged inside the controller's span, which names the object.
    #[tokio::test]
    async fn a_controller_logs_each_reconcile_with_the_object_it_is_about() {
        use futures::StreamExt as _;
        use k8s_openapi::api::core::v1::ConfigMap;
        use kube::runtime::controller::{Action, Controller};

        let (client, _api) = crate::testing::MockApi::serve_suffixes(vec![(
            "/configmaps",
            serde_json::json!({"apiVersion": "v1", "kind": "ConfigMapList",
                "metadata": {"resourceVersion": "1"},
                "items": [{"metadata": {"name": "demo-agent-config", "namespace": "ns", "resourceVersion": "1"}}]}),
        )]);
        let buffer = Buffer::default();
        let writer = buffer.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_env_filter(EnvFilter::new(super::DEFAULT_LOG_FILTER))
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        let _default = tracing::subscriber::set_default(subscriber);
        let controller = Controller::new(
            kube::Api::<ConfigMap>::namespaced(client, "ns"),
            kube::runtime::watcher::Config::default(),
        )
        .run(
            |_map, _ctx| async {
                tracing::info!(target: "x0tta6bl4_operator::mesh::apply", "reconciled by the test");
                Ok::<_, std::convert::Infallible>(Action::await_change())
            },
            |_map, _error, _ctx| Action::await_change(),
            std::sync::Arc::new(()),
        );
        // The mock answers the watch with a list, which the watcher reports as an error (and
        // lists again): the first Ok is the reconcile.
        let mut outcomes = controller.boxed();
        let reconciled = tokio::time::timeout(std::time::Duration::from_secs(10), async {
            while let Some(outcome) = outcomes.next().await {
                if outcome.is_ok() {
                    return true;
                }
            }
            false
        })
        .await;
        assert_eq!(reconciled, Ok(true));
        let text = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
        assert!(
            text.contains("reconciling object{object.ref=ConfigMap.v1./demo-agent-config.ns object.reason="),
            "{text}"
        );
        assert!(text.contains("reconciled by the test"), "{text}");
    }

    #[test]
    fn the_former_default_lost_the_object() {
        // "kube=warn" matches kube_runtime by prefix, and the span went with it.
        let text = logged("info,kube=warn", false);
        assert!(text.contains("applied"), "{text}");
        assert!(!text.contains("object.ref"), "{text}");
    }
}
