//! Waits for the CRDs before the controllers start, naming the missing one, so an operator
//! installed before its CRDs says why it is not ready instead of crash-looping.
use std::time::Duration;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Client;
use kube::api::Api;
use x0tta6bl4_telemetry::Readiness;

use crate::error::{Error, Result};

const POLL: Duration = Duration::from_secs(5);

/// Returns once every CRD of the project is installed and established.
pub async fn wait_for_crds(client: &Client, readiness: &Readiness) -> Result<()> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let mut last_missing = None;
    loop {
        let mut missing = None;
        for name in crate::crds::names() {
            let established = api
                .get_opt(&name)
                .await
                .map_err(Error::kube(format!("reading CRD {name}")))?
                .and_then(|crd| crd.status)
                .and_then(|status| status.conditions)
                .is_some_and(|conditions| {
                    conditions
                        .iter()
                        .any(|c| c.type_ == "Established" && c.status == "True")
                });
            if !established {
                missing = Some(name);
                break;
            }
        }
        let Some(name) = missing else { return Ok(()) };
        if last_missing.as_ref() != Some(&name) {
            tracing::error!(crd = %name, "CRD {name} is not installed (or not established); install it with `kubectl apply -f crds/`");
        }
        readiness
            .set_not_ready(format!("CRD {name} is not installed"))
            .await;
        last_missing = Some(name);
        tokio::time::sleep(POLL).await;
    }
}
