//! The run mode: wires the identity, the mesh actor, the listener, the dialler and the HTTP
//! endpoints together, and stops them all on SIGTERM or SIGINT.
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock, RwLock};
use std::time::Duration;

use anyhow::Context as _;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use x0tta6bl4_api::agent_config::AgentConfig;
use x0tta6bl4_api::duration;
use x0tta6bl4_crypto::endorsement::TrustStore;
use x0tta6bl4_routing::Router;
use x0tta6bl4_session::binding::Identity;
use x0tta6bl4_session::tls::TlsKey;
use x0tta6bl4_telemetry::Readiness;

use crate::cli::RunArgs;
use crate::clock::{Clock, unix_micros, unix_seconds};
use crate::identity::{self, FileIdentity, IdentityRequest, IdentitySource, Unconfigured};
use crate::kube_source::{KubeIdentity, KubePeers};
use crate::mesh::{AgentFacts, Mesh, MeshParts, TrustVerifier};
use crate::metrics::Metrics;
use crate::peers::{PeerSource, StaticPeers};
use crate::rotation::{CurrentIdentity, KeyVersion, Rotation};
use crate::session::SessionContext;
use crate::status::MeshCell;
use crate::{dialer, settings, status};

/// How long tasks get to finish after a shutdown signal.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);

/// Resolves on SIGTERM or SIGINT.
async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM; only SIGINT stops the agent");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        () = terminate => tracing::info!("SIGTERM: shutting down"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: shutting down"),
    }
}

/// Runs the agent from its command line until a shutdown signal.
pub async fn run(args: RunArgs) -> anyhow::Result<()> {
    let config_path = args.config.clone().context("--config is required")?;
    let node_name = args.node_name.clone().context("--node-name is required")?;
    let text = std::fs::read_to_string(&config_path)
        .with_context(|| format!("cannot read the agent configuration {}", config_path.display()))?;
    let config = AgentConfig::parse(&text).map_err(anyhow::Error::msg)?;
    x0tta6bl4_telemetry::init_logging(args.log_format, &config.log_level);
    match (&args.endorsement_file, &args.authority_public_key) {
        // Standalone mode: identity from files, peers from --peer.
        (Some(endorsement_file), Some(authority_public_key_file)) => {
            let source = FileIdentity {
                endorsement_file: endorsement_file.clone(),
                authority_public_key_file: authority_public_key_file.clone(),
            };
            let peers = StaticPeers::new(args.peers.clone());
            run_mesh(args, config, node_name, &source, &peers, |_, _| {}).await
        }
        // In a cluster (in-cluster credentials or KUBECONFIG): the MeshNode records.
        _ if in_cluster() => {
            let client = kube::Client::try_default()
                .await
                .context("cannot build a Kubernetes client")?;
            let endpoint = args
                .advertise_address
                .map(|ip| std::net::SocketAddr::new(ip, config.tcp_port).to_string())
                .context("--advertise-address (or NODE_IP) is required in a cluster: peers dial it")?;
            let source = KubeIdentity {
                client: client.clone(),
                namespace: config.namespace.clone(),
                mesh: config.mesh.clone(),
                authority_public_key: config.authority_public_key.clone(),
                endpoint,
            };
            let stop_watch = CancellationToken::new();
            let peers = KubePeers::start(
                client.clone(),
                &config.namespace,
                &config.mesh,
                &config.trust_domain,
                &node_name,
                stop_watch.clone(),
            );
            let record = crate::kube_source::record_name(&config.mesh, &node_name);
            let namespace = config.namespace.clone();
            let outcome = run_mesh(args, config, node_name, &source, &peers, move |mesh, shutdown| {
                crate::kube_source::start_reporting(client, namespace, record, mesh, shutdown)
            })
            .await;
            stop_watch.cancel();
            outcome
        }
        _ => {
            let peers = StaticPeers::new(args.peers.clone());
            run_mesh(args, config, node_name, &Unconfigured, &peers, |_, _| {}).await
        }
    }
}

/// Whether Kubernetes credentials are at hand (a pod's service account, or KUBECONFIG).
fn in_cluster() -> bool {
    std::env::var_os("KUBERNETES_SERVICE_HOST").is_some() || std::env::var_os("KUBECONFIG").is_some()
}

/// The agent, from its configuration, identity source and peer source.
pub async fn run_mesh(
    args: RunArgs,
    config: AgentConfig,
    node_name: String,
    identity_source: &(impl IdentitySource + Clone + 'static),
    peers: &impl PeerSource,
    on_running: impl FnOnce(crate::mesh::MeshHandle, CancellationToken),
) -> anyhow::Result<()> {
    let policy = settings::key_exchange_policy(&config, args.test_key_exchange);
    let listen = args
        .listen_addr
        .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], config.tcp_port)));
    let endpoint = args
        .advertise_address
        .map(|ip| SocketAddr::new(ip, listen.port()).to_string())
        .unwrap_or_default();
    let mut router_config = settings::router_config(&config, endpoint.clone())?;
    if let Some(cost) = args.test_misreport_link_cost {
        tracing::warn!(cost, "test mode: this agent lies about its link costs");
        router_config.misreport_link_cost = Some(cost);
    }
    let healing = settings::healing_config(&config)?;
    let state_dir: PathBuf = args
        .state_dir
        .clone()
        .unwrap_or_else(|| settings::default_state_dir(&config));
    let spiffe_id = identity::spiffe_id(&config.trust_domain, &config.namespace, &config.mesh, &node_name);
    let self_id = identity::node_id(&spiffe_id);

    let metrics = Arc::new(Metrics::new());
    metrics
        .info
        .with_label_values(&[
            &config.mesh,
            &config.namespace,
            &node_name,
            &config.key_exchange,
            &config.signature,
        ])
        .set(1);
    let readiness = Readiness::new("waiting for the node's endorsement");
    let shutdown = CancellationToken::new();
    let mut tasks = JoinSet::new();
    {
        let shutdown = shutdown.clone();
        tasks.spawn(async move {
            tokio::select! {
                () = shutdown_signal() => shutdown.cancel(),
                () = shutdown.cancelled() => {}
            }
        });
    }

    // Probes and metrics answer from the start; /status and /ping once the mesh runs.
    let mesh_cell: MeshCell = Arc::new(OnceLock::new());
    let http_addr = args
        .metrics_addr
        .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], config.metrics_port)));
    let http_listener = TcpListener::bind(http_addr)
        .await
        .with_context(|| format!("cannot listen for /metrics and /status on {http_addr}"))?;
    let app = x0tta6bl4_telemetry::router(metrics.registry.clone(), readiness.clone())
        .merge(status::router(Arc::clone(&mesh_cell)));
    {
        let shutdown = shutdown.clone();
        tasks.spawn(async move {
            let served = axum::serve(http_listener, app)
                .with_graceful_shutdown(shutdown.cancelled_owned())
                .await;
            if let Err(error) = served {
                tracing::error!(%error, "HTTP server failed");
            }
        });
    }
    tracing::info!(%http_addr, "serving /metrics, /healthz, /readyz, /status and /ping");

    let (stored, created) = identity::load_or_create_node_key(&state_dir)
        .with_context(|| format!("node key in {}", state_dir.display()))?;
    tracing::info!(
        state_dir = %state_dir.display(),
        created,
        key_epoch = stored.epoch,
        %spiffe_id,
        node_id = %self_id,
        "node key ready"
    );
    tracing::info!(source = %identity_source.describe(), "obtaining the node's endorsement");
    let request = IdentityRequest {
        spiffe_id: &spiffe_id,
        node_name: &node_name,
        public_key: stored.key.verifying_key(),
        key_epoch: stored.epoch,
    };
    let material = tokio::select! {
        material = identity_source.obtain(request) => material?,
        () = shutdown.cancelled() => return drain(tasks).await,
    };
    let mut trust = TrustStore::new(&config.trust_domain, material.authorities);
    trust
        .admit(&material.endorsement, unix_seconds())
        .context("this node's own endorsement is not accepted by the mesh authority")?;
    let key_version = KeyVersion {
        epoch: stored.epoch,
        created_unix: stored.created_unix,
    };
    let identity = CurrentIdentity::new(Identity {
        key: stored.key,
        endorsement: material.endorsement,
    });
    let trust = Arc::new(RwLock::new(trust));
    let rotation_interval = duration::parse(&config.key_rotation_interval)
        .ok()
        .filter(|interval| !interval.is_zero())
        .with_context(|| {
            format!(
                "keyRotationInterval '{}' is not a positive duration",
                config.key_rotation_interval
            )
        })?;

    let clock = Clock::start();
    let mut router = Router::new(
        router_config,
        self_id,
        TrustVerifier {
            trust: Arc::clone(&trust),
        },
        clock.now(),
    );
    // A restarted agent's advertisements must be newer than its last run's.
    router.set_sequence_floor(unix_micros());
    // Link windows for the linkTelemetry dataset: sampled by the mesh, counters and faults from
    // the datapath, read by federated training.
    let telemetry = crate::fl::telemetry::SharedRecorder::default();
    let (mesh, inbox, inputs, deliveries, connected) = Mesh::new(MeshParts {
        self_id,
        facts: AgentFacts {
            spiffe_id: spiffe_id.clone(),
            node_name: node_name.clone(),
            mesh: config.mesh.clone(),
            namespace: config.namespace.clone(),
            endpoint,
            require_post_quantum: config.require_post_quantum,
        },
        router,
        identity: identity.clone(),
        trust: Arc::clone(&trust),
        metrics: Arc::clone(&metrics),
        clock,
        healing,
        telemetry: telemetry.clone(),
        key_created_unix: stored.created_unix,
    });
    on_running(crate::mesh::MeshHandle::new(inbox.clone()), shutdown.clone());
    tasks.spawn(mesh.run(inputs, shutdown.clone()));
    // The eBPF datapath: optional and never fatal; why it is not running goes on the record.
    tasks.spawn(crate::datapath::run(
        crate::datapath::DatapathSetup {
            enabled: config.ebpf() == x0tta6bl4_api::mesh_network::EbpfMode::Tc,
            interfaces: args.interfaces.clone(),
            ports: vec![config.tcp_port, config.udp_port],
            fault_api: args.fault_api,
            peers: peers.subscribe(),
            telemetry: telemetry.clone(),
        },
        crate::datapath::DatapathMetrics::register(&metrics.registry),
        crate::mesh::MeshHandle::new(inbox.clone()),
        shutdown.clone(),
    ));
    let rotation = Rotation {
        interval: rotation_interval,
        state_dir: state_dir.clone(),
        source: Arc::new(identity_source.clone()),
        spiffe_id: spiffe_id.clone(),
        node_name: node_name.clone(),
        trust: Arc::clone(&trust),
        mesh: crate::mesh::MeshHandle::new(inbox.clone()),
        metrics: Arc::clone(&metrics),
    };
    tasks.spawn(rotation.run(key_version, shutdown.clone()));
    // Payloads for this agent: federated learning's, others logged.
    tasks.spawn(crate::fl::run(
        crate::fl::FlSetup {
            args: args.fl.clone(),
            in_cluster: args.endorsement_file.is_none() && in_cluster(),
            node_name: node_name.clone(),
            self_id,
            trust_domain: config.trust_domain.clone(),
            namespace: config.namespace.clone(),
            mesh_name: config.mesh.clone(),
            identity: identity.clone(),
            trust: Arc::clone(&trust),
            mesh: crate::mesh::MeshHandle::new(inbox.clone()),
            registry: metrics.registry.clone(),
            telemetry,
        },
        deliveries,
        shutdown.clone(),
    ));

    let tls_key = TlsKey::generate()?;
    let ctx = Arc::new(SessionContext::new(
        self_id,
        identity::mesh_prefix(&config.trust_domain, &config.namespace, &config.mesh),
        identity,
        trust,
        policy,
        &tls_key,
        Arc::clone(&metrics),
        inbox.clone(),
    )?);
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen for neighbour sessions on {listen}"))?;
    // /status answers once sessions can be accepted, so "status up" means "reachable".
    let _ = mesh_cell.set(crate::mesh::MeshHandle::new(inbox));
    tasks.spawn(dialer::accept(Arc::clone(&ctx), listener, shutdown.clone()));
    tasks.spawn(dialer::dial_peers(
        ctx,
        peers.subscribe(),
        connected,
        shutdown.clone(),
    ));
    readiness.set_ready().await;
    tracing::info!(
        %listen,
        ?policy,
        peers = args.peers.len(),
        "mesh running"
    );
    shutdown.cancelled().await;
    drain(tasks).await
}

/// Waits (bounded) for the tasks to finish after shutdown.
async fn drain(mut tasks: JoinSet<()>) -> anyhow::Result<()> {
    let all_done = async { while tasks.join_next().await.is_some() {} };
    if tokio::time::timeout(SHUTDOWN_GRACE, all_done).await.is_err() {
        tracing::warn!("some tasks did not stop in time");
    }
    tracing::info!("stopped");
    Ok(())
}
