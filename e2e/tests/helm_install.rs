//! `helm install` of the chart into the cluster: the operator Deployment comes up (on a fake
//! node: kwok reports the pod running) and the chart's RBAC lets its ServiceAccount do its job.
#![cfg(feature = "e2e")]

use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use kube::api::Api;
use x0tta6bl4_e2e::*;

#[tokio::test]
async fn helm_install_brings_the_operator_up_with_least_privilege() {
    let client = client().await;
    let ns = TestNamespace::new(&client, "e2e-helm").await;
    let chart = repo_root().join("charts/x0tta6bl4");
    let release = "x0";
    let out = helm(&[
        "upgrade",
        "--install",
        release,
        chart.to_str().unwrap(),
        "-n",
        &ns.name,
        "--set",
        "replicas=2",
        "--set-json",
        r#"tolerations=[{"key":"kwok.x-k8s.io/node","operator":"Exists","effect":"NoSchedule"}]"#,
        "--skip-crds",
        "--wait",
        "--timeout",
        "120s",
    ]);
    assert!(
        out.status.success(),
        "helm install failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns.name);
    let deployment = wait_until(
        "the operator Deployment available",
        Duration::from_secs(120),
        || async { deployments.list(&Default::default()).await.unwrap().items },
        |items| {
            items
                .iter()
                .any(|d| d.status.as_ref().and_then(|s| s.available_replicas) == Some(2))
        },
    )
    .await
    .into_iter()
    .next()
    .unwrap();
    let sa = deployment
        .spec
        .unwrap()
        .template
        .spec
        .unwrap()
        .service_account_name
        .unwrap();
    let user = format!("system:serviceaccount:{}:{sa}", ns.name);

    // What the operator needs, it has; what it does not need, it has not.
    let can = |verb: &str, resource: &str, extra: &[&str]| {
        let mut args = vec!["auth", "can-i", verb, resource, "--as", &user];
        args.extend_from_slice(extra);
        let out = kubectl(&args);
        String::from_utf8_lossy(&out.stdout).trim() == "yes"
    };
    assert!(can("create", "daemonsets.apps", &["-n", "anywhere"]));
    assert!(can(
        "patch",
        "meshnetworks.x0tta6bl4.io",
        &["-n", "anywhere", "--subresource=status"]
    ));
    assert!(can(
        "get",
        "customresourcedefinitions.apiextensions.k8s.io/meshnetworks.x0tta6bl4.io",
        &[]
    ));
    assert!(
        can("get", "secrets", &["-n", "anywhere"]),
        "the operator reads each mesh authority Secret"
    );
    assert!(
        !can("list", "secrets", &["-n", "anywhere"]),
        "the operator must not list secrets"
    );
    assert!(
        !can("update", "secrets", &["-n", "anywhere"]),
        "the operator never rewrites a mesh authority"
    );
    assert!(
        !can("patch", "meshnetworks.x0tta6bl4.io", &["-n", "anywhere"]),
        "the operator must not edit specs"
    );
    assert!(!can(
        "list",
        "customresourcedefinitions.apiextensions.k8s.io",
        &[]
    ));

    let out = helm(&["uninstall", release, "-n", &ns.name, "--wait"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    ns.delete_and_wait().await;
}
