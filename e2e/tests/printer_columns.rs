//! `kubectl get` shows health at a glance through the printer columns.
#![cfg(feature = "e2e")]

use std::time::Duration;

use x0tta6bl4_e2e::*;

#[tokio::test]
async fn kubectl_get_prints_the_health_columns() {
    let client = client().await;
    let ns = TestNamespace::new(&client, "e2e-columns").await;
    let operator = Operator::start("columns", "x0-e2e-columns").await.unwrap();
    operator.wait_ready(Duration::from_secs(60)).await;
    for example in ["meshnetwork.yaml", "flround.yaml", "chaos-loss.yaml"] {
        let path = repo_root().join("examples").join(example);
        kubectl_ok(&["apply", "-n", &ns.name, "-f", path.to_str().unwrap()]);
    }
    let expected = [
        (
            "mesh",
            "demo",
            vec!["NAME", "READY NODES", "CONVERGED", "PQ", "AGE"],
        ),
        (
            "flrounds",
            "demo-round",
            vec![
                "NAME", "MESH", "ROUND", "PHASE", "ACCEPTED", "REJECTED", "ACCURACY", "AGE",
            ],
        ),
        (
            "chaos",
            "loss-30",
            vec!["NAME", "ACTION", "PHASE", "DETECT", "RECOVER", "VERDICT", "AGE"],
        ),
    ];
    for (resource, name, columns) in expected {
        // Wait for the operator's status so the columns show values, not just headers.
        let output = wait_until(
            &format!("kubectl get {resource} with status"),
            Duration::from_secs(60),
            || async { kubectl_ok(&["get", resource, "-n", &ns.name]) },
            |out| {
                out.contains(name)
                    && (resource != "mesh" || out.contains("required:X25519MLKEM768/ML-DSA-65"))
            },
        )
        .await;
        let header = output.lines().next().unwrap_or_default();
        let mut position = 0;
        for column in &columns {
            let found = header[position..]
                .find(column)
                .unwrap_or_else(|| panic!("{resource}: no {column} in {header:?}"));
            position += found + column.len();
        }
        println!("$ kubectl get {resource}\n{output}");
    }
    let wide = kubectl_ok(&["get", "meshnetworks,flrounds,chaos", "-n", &ns.name, "-o", "wide"]);
    assert!(wide.contains("READY"), "{wide}");
    ns.delete_and_wait().await;
}
