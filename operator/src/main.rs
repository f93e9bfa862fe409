//! `x0tta6bl4-operator run`: elects a leader, waits for the CRDs, and runs the controllers.
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use x0tta6bl4_operator::context::Context;
use x0tta6bl4_operator::leader::LeaderElector;
use x0tta6bl4_operator::mesh::build::BuildOptions;
use x0tta6bl4_operator::metrics::Metrics;
use x0tta6bl4_operator::{controllers, startup};
use x0tta6bl4_telemetry::{LogFormat, Readiness};

#[derive(Parser)]
#[command(
    name = "x0tta6bl4-operator",
    version,
    about = "Kubernetes operator of x0tta6bl4 meshes"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the controllers (only the replica holding the leader lease reconciles).
    Run(RunArgs),
    /// Verify the hash chain of a federated job's round records (from its round ConfigMaps).
    VerifyChain(VerifyChainArgs),
    /// Write a federated job's model (the final one, or the one with --digest) to a file,
    /// checked against its digest and the sealed record that names it.
    GetModel(GetModelArgs),
    /// Revoke a node's key: add it to the mesh's spec.identity.revokedKeys (the operator signs
    /// the list; every agent closes the key's sessions and refuses it, and the node makes a
    /// new key, which is endorsed).
    RevokeKey(RevokeKeyArgs),
}

#[derive(clap::Args)]
struct RevokeKeyArgs {
    /// Namespace of the MeshNetwork (default: the kubeconfig context's, as kubectl does).
    #[arg(long, short = 'n')]
    namespace: Option<String>,
    /// Name of the MeshNetwork.
    #[arg(long)]
    mesh: String,
    /// The Kubernetes node whose agent key is revoked.
    #[arg(long)]
    node: String,
    /// The key epoch revoked, with every earlier one; default: the epoch endorsed now (the
    /// Epoch column of `kubectl get meshnode`).
    #[arg(long)]
    epoch: Option<i64>,
    /// Why, recorded with the entry.
    #[arg(long, default_value = "")]
    reason: String,
}

#[derive(clap::Args)]
struct GetModelArgs {
    /// Namespace of the FLTrainingRound (default: the kubeconfig context's, as kubectl does).
    #[arg(long, short = 'n')]
    namespace: Option<String>,
    /// Name of the FLTrainingRound.
    name: String,
    /// SHA-256 (hex) of the model wanted; default: the job's current model (status.modelDigest).
    #[arg(long)]
    digest: Option<String>,
    /// Where to write the parameters (little-endian f32).
    #[arg(long, short = 'o')]
    output: std::path::PathBuf,
}

#[derive(clap::Args)]
struct VerifyChainArgs {
    /// Namespace of the FLTrainingRound (default: the kubeconfig context's, as kubectl does).
    #[arg(long, short = 'n')]
    namespace: Option<String>,
    /// Name of the FLTrainingRound.
    name: String,
}

#[derive(clap::Args)]
struct RunArgs {
    /// Address of /metrics, /healthz and /readyz.
    #[arg(long, default_value = "0.0.0.0:8080", env = "X0_METRICS_ADDR")]
    metrics_addr: SocketAddr,
    /// Log format: text or json.
    #[arg(long, default_value = "text", env = "X0_LOG_FORMAT")]
    log_format: LogFormat,
    /// Disable leader election (only for a single replica run by hand).
    #[arg(long)]
    no_leader_election: bool,
    /// Namespace of the leader Lease.
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    leader_election_namespace: String,
    /// Name of the leader Lease.
    #[arg(long, default_value = "x0tta6bl4-operator")]
    leader_election_id: String,
    /// This replica's identity in the Lease (the pod name in a cluster).
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
    /// Agent image for MeshNetworks that keep the default spec.agent.image.
    #[arg(long, env = "X0_AGENT_IMAGE")]
    agent_image: Option<String>,
    /// The collector the agents export their spans to (their OTEL_EXPORTER_OTLP_ENDPOINT);
    /// agents export nothing without it.
    #[arg(long, env = "X0_AGENT_OTLP_ENDPOINT")]
    agent_otlp_endpoint: Option<String>,
    #[command(flatten)]
    traces: x0tta6bl4_telemetry::TraceArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = match Cli::parse().command {
        Command::Run(args) => args,
        Command::VerifyChain(args) => {
            let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
            return verify_chain(args).await;
        }
        Command::RevokeKey(args) => {
            let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
            let said = x0tta6bl4_operator::revoke_key::revoke(x0tta6bl4_operator::revoke_key::Request {
                namespace: args.namespace.as_deref(),
                mesh: &args.mesh,
                node: &args.node,
                epoch: args.epoch,
                reason: &args.reason,
            })
            .await?;
            println!("{said}");
            return Ok(());
        }
        Command::GetModel(args) => {
            let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
            return get_model(args).await;
        }
    };
    // One TLS provider for the whole process (the API client and anything else), chosen here
    // rather than inferred from crate features, which other workspace crates can change.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let identity = args
        .identity
        .clone()
        .unwrap_or_else(|| format!("operator-{}", std::process::id()));
    let _traces = x0tta6bl4_telemetry::init(
        args.log_format,
        x0tta6bl4_operator::DEFAULT_LOG_FILTER,
        &args.traces.config("x0tta6bl4-operator", identity.clone(), vec![]),
    )
    .context("--otlp-endpoint")?;
    if let Some(endpoint) = &args.agent_otlp_endpoint {
        x0tta6bl4_telemetry::traces::traces_url(endpoint)
            .map_err(|e| anyhow::anyhow!("--agent-otlp-endpoint: {e}"))?;
    }

    let metrics = Metrics::new();
    let readiness = Readiness::new("waiting for leadership and CRDs");
    let server = tokio::spawn(x0tta6bl4_telemetry::serve(
        args.metrics_addr,
        metrics.registry.clone(),
        readiness.clone(),
    ));

    let client = kube::Client::try_default()
        .await
        .context("cannot build a Kubernetes client (KUBECONFIG or in-cluster)")?;
    let elector = (!args.no_leader_election).then(|| {
        LeaderElector::new(
            client.clone(),
            &args.leader_election_namespace,
            &args.leader_election_id,
            &identity,
        )
    });

    let run = async {
        if let Some(elector) = &elector {
            readiness.set_not_ready("standing by for the leader lease").await;
            elector.acquire().await?;
        }
        metrics.leader.set(1);
        startup::wait_for_crds(&client, &readiness).await?;
        let build_options = BuildOptions {
            default_agent_image: args.agent_image.clone(),
            agent_otlp_endpoint: args.agent_otlp_endpoint.clone(),
        };
        let ctx = Arc::new(Context::new(
            client.clone(),
            metrics.clone(),
            &identity,
            build_options,
        ));
        let controllers = controllers::run(ctx, readiness.clone(), shutdown_signal());
        match &elector {
            Some(elector) => tokio::select! {
                () = controllers => Ok(()),
                error = elector.hold() => Err(error),
            },
            None => {
                controllers.await;
                Ok(())
            }
        }
    };
    let outcome: Result<(), x0tta6bl4_operator::error::Error> = tokio::select! {
        outcome = run => outcome,
        () = shutdown_signal() => Ok(()),
        served = server => {
            anyhow::bail!("the metrics server stopped: {served:?}");
        }
    };
    metrics.leader.set(0);
    if let Some(elector) = &elector {
        elector.release().await;
    }
    outcome.context("operator stopped")?;
    tracing::info!("shut down cleanly");
    Ok(())
}

/// Resolves on SIGTERM (the kubelet) or SIGINT (a terminal).
async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        () = terminate => {},
    }
}

/// A federated job and its round ConfigMaps, for the commands that read them.
async fn job_and_rounds(
    namespace: Option<&str>,
    name: &str,
) -> anyhow::Result<(
    x0tta6bl4_api::FLTrainingRound,
    Vec<k8s_openapi::api::core::v1::ConfigMap>,
)> {
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::api::{Api, ListParams};
    use x0tta6bl4_api::FLTrainingRound;
    use x0tta6bl4_api::fl_protocol::JOB_LABEL;

    let client = kube::Client::try_default()
        .await
        .context("cannot build a Kubernetes client (KUBECONFIG or in-cluster)")?;
    let namespace = namespace.unwrap_or(client.default_namespace()).to_owned();
    let namespace = namespace.as_str();
    let job = Api::<FLTrainingRound>::namespaced(client.clone(), namespace)
        .get(name)
        .await
        .with_context(|| format!("reading FLTrainingRound {namespace}/{name}"))?;
    let maps = Api::<ConfigMap>::namespaced(client, namespace)
        .list(&ListParams::default().labels(&format!("{JOB_LABEL}={name}")))
        .await
        .context("listing the round ConfigMaps")?;
    Ok((job, maps.items))
}

/// Reads every sealed record of a job and checks the chain end to end; prints the head.
async fn verify_chain(args: VerifyChainArgs) -> anyhow::Result<()> {
    use x0tta6bl4_api::fl_protocol::SEALED_KEY;
    use x0tta6bl4_api::fl_record::{GENESIS, RoundRecord, verify_chain};

    let (job, maps) = job_and_rounds(args.namespace.as_deref(), &args.name).await?;
    let mut records = Vec::new();
    for map in maps {
        let name = map.metadata.name.clone().unwrap_or_default();
        if let Some(sealed) = map.data.as_ref().and_then(|d| d.get(SEALED_KEY)) {
            let record: RoundRecord = serde_json::from_str(sealed)
                .with_context(|| format!("{name}: {SEALED_KEY} is not a round record"))?;
            records.push(record);
        }
    }
    records.sort_by_key(|record| record.round);
    let head = verify_chain(&records, 1, GENESIS).context("the chain does not verify")?;
    let status_head = job.status.map(|s| s.chain_head).unwrap_or_default();
    anyhow::ensure!(
        head == status_head || records.is_empty(),
        "the chain ends at {head}, the FLTrainingRound status names {status_head}"
    );
    println!("{} rounds verified; chain head {head}", records.len());
    Ok(())
}

/// Finds the round whose sealed record names the model's digest, reads the model from that
/// round's ConfigMap, recomputes the digest and writes the parameters out only if it matches.
async fn get_model(args: GetModelArgs) -> anyhow::Result<()> {
    use x0tta6bl4_api::fl_protocol::{MODEL_KEY, SEALED_KEY};
    use x0tta6bl4_api::fl_record::RoundRecord;
    use x0tta6bl4_crypto::model_digest::{model_digest, params_from_le_bytes};

    let (job, maps) = job_and_rounds(args.namespace.as_deref(), &args.name).await?;
    let wanted = match args.digest {
        Some(digest) => digest.to_ascii_lowercase(),
        None => job.status.map(|s| s.model_digest).unwrap_or_default(),
    };
    anyhow::ensure!(
        !wanted.is_empty(),
        "the job has no model yet (status.modelDigest is empty)"
    );
    let (round, map) = maps
        .iter()
        .find_map(|map| {
            let sealed = map.data.as_ref()?.get(SEALED_KEY)?;
            let record: RoundRecord = serde_json::from_str(sealed).ok()?;
            (record.model_digest == wanted).then_some((record.round, map))
        })
        .with_context(|| format!("no sealed round of {} names model {wanted}", args.name))?;
    let bytes = map
        .binary_data
        .as_ref()
        .and_then(|d| d.get(MODEL_KEY))
        .with_context(|| format!("round {round}'s ConfigMap has no {MODEL_KEY}"))?;
    let params = params_from_le_bytes(&bytes.0)
        .with_context(|| format!("round {round}'s {MODEL_KEY} is not a whole number of f32s"))?;
    let found = hex::encode(model_digest(&params));
    anyhow::ensure!(
        found == wanted,
        "round {round}'s {MODEL_KEY} hashes to {found}, its sealed record names {wanted}: refusing it"
    );
    std::fs::write(&args.output, &bytes.0).with_context(|| format!("writing {}", args.output.display()))?;
    println!(
        "round {round}: {} parameters, SHA-256 {found}, written to {}",
        params.len(),
        args.output.display()
    );
    Ok(())
}
