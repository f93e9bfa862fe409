//! The run mode: picks where the identity and the peers come from, then wires the identity,
//! the mesh actor, the listener, the dialler, the datapath, the chaos executor and federated
//! learning together, and stops them all on SIGTERM or SIGINT.
mod chaos_links;
mod enrolment;
mod http;
mod shutdown;

use std::sync::Arc;

use anyhow::Context as _;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use x0tta6bl4_api::agent_config::AgentConfig;
use x0tta6bl4_routing::Router;
use x0tta6bl4_session::svid::SvidCredentials;
use x0tta6bl4_session::tls::TlsKey;
use x0tta6bl4_telemetry::Readiness;

pub use chaos_links::Running;

use crate::chaos::behaviour::BehaviourLines;
use crate::cli::RunArgs;
use crate::clock::{Clock, unix_micros};
use crate::identity::{FileIdentity, IdentitySource, Unconfigured};
use crate::kube_source::{KubeIdentity, KubePeers};
use crate::mesh::{AgentFacts, Mesh, MeshHandle, MeshParts, TrustVerifier};
use crate::metrics::Metrics;
use crate::peers::{PeerSource, StaticPeers};
use crate::rotation::Rotation;
use crate::session::{SessionContext, SvidMode};
use crate::settings::RunSettings;
use crate::{dialer, identity};

/// Runs the agent from its command line until a shutdown signal.
pub async fn run(args: RunArgs) -> anyhow::Result<()> {
    let config_path = args.config.clone().context("--config is required")?;
    let node_name = args.node_name.clone().context("--node-name is required")?;
    let text = std::fs::read_to_string(&config_path)
        .with_context(|| format!("cannot read the agent configuration {}", config_path.display()))?;
    let config = AgentConfig::parse(&text).map_err(anyhow::Error::msg)?;
    let traces = args.traces.config(
        "x0tta6bl4-node-agent",
        node_name.clone(),
        vec![("k8s.node.name", node_name.clone())],
    );
    let _traces =
        x0tta6bl4_telemetry::init(args.log_format, &config.log_level, &traces).context("--otlp-endpoint")?;
    match (&args.endorsement_file, &args.authority_public_key) {
        // Standalone mode: identity from files, peers from --peer.
        (Some(endorsement_file), Some(authority_public_key_file)) => {
            let source = FileIdentity {
                endorsement_file: endorsement_file.clone(),
                authority_public_key_file: authority_public_key_file.clone(),
            };
            let peers = StaticPeers::new(args.peers.clone());
            let executor = chaos_links::standalone(node_name.clone());
            run_mesh(args, config, node_name, &source, &peers, executor).await
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
                config.peering,
                stop_watch.clone(),
            );
            let executor = chaos_links::in_cluster(chaos_links::ClusterRecord {
                client,
                namespace: config.namespace.clone(),
                mesh: config.mesh.clone(),
                node: node_name.clone(),
                trust_domain: config.trust_domain.clone(),
            });
            let outcome = run_mesh(args, config, node_name, &source, &peers, executor).await;
            stop_watch.cancel();
            outcome
        }
        _ => {
            let peers = StaticPeers::new(args.peers.clone());
            let executor = chaos_links::standalone(node_name.clone());
            run_mesh(args, config, node_name, &Unconfigured, &peers, executor).await
        }
    }
}

/// Whether Kubernetes credentials are at hand (a pod's service account, or KUBECONFIG).
fn in_cluster() -> bool {
    std::env::var_os("KUBERNETES_SERVICE_HOST").is_some() || std::env::var_os("KUBECONFIG").is_some()
}

/// The agent, from its configuration, identity source and peer source; `start_executor`
/// starts the run mode's chaos executor once the mesh runs.
pub async fn run_mesh(
    args: RunArgs,
    config: AgentConfig,
    node_name: String,
    identity_source: &(impl IdentitySource + Clone + 'static),
    peers: &impl PeerSource,
    start_executor: impl FnOnce(Running),
) -> anyhow::Result<()> {
    let settings = RunSettings::derive(&args, &config, &node_name);
    let behaviour = args.test.base_behaviour();
    if !behaviour.is_honest() {
        tracing::warn!(?behaviour, "test mode: this agent acts out adversarial faults");
    }
    let mut router_config = settings.router.clone();
    router_config.false_metric_percent = behaviour.false_metric_percent;
    let behaviour_lines = BehaviourLines::new(&behaviour);
    let fl_byzantine_update = behaviour_lines.byzantine_update.subscribe();
    let false_metric_percent = behaviour_lines.false_metric_percent.subscribe();
    let beacon = behaviour_lines.beacon.subscribe();
    let signature_failure = behaviour_lines.signature_failure.subscribe();
    let fl_signature_failure = behaviour_lines.signature_failure.subscribe();
    let kem_downgrade = behaviour_lines.kem_downgrade.subscribe();
    let expiring_endorsement = behaviour_lines.expiring_endorsement.subscribe();
    let rotate_now = Arc::new(tokio::sync::Notify::new());
    let session_kem_downgrade = behaviour_lines.kem_downgrade.subscribe();

    let metrics = Arc::new(Metrics::new());
    metrics
        .info
        .with_label_values(&[
            &config.mesh,
            &config.namespace,
            &node_name,
            config.key_exchange.as_str(),
            config.signature.as_str(),
        ])
        .set(1);
    let readiness = Readiness::new("waiting for the node's endorsement");
    let shutdown = CancellationToken::new();
    let mut tasks = JoinSet::new();
    shutdown::cancel_on_signal(&mut tasks, &shutdown);
    let mesh_cell = http::serve(settings.http, &metrics, &readiness, &mut tasks, &shutdown).await?;

    let applicant = enrolment::Applicant {
        state_dir: &settings.state_dir,
        spiffe_id: &settings.spiffe_id,
        node_name: &node_name,
        trust_domain: &config.trust_domain,
        node_id: settings.self_id,
    };
    let enrolled = tokio::select! {
        enrolled = enrolment::enrol(applicant, identity_source) => enrolled?,
        () = shutdown.cancelled() => return shutdown::drain(tasks).await,
    };

    let clock = Clock::start();
    let mut router = Router::new(
        router_config,
        settings.self_id,
        TrustVerifier {
            trust: Arc::clone(&enrolled.trust),
        },
        clock.now(),
    );
    // A restarted agent's advertisements must be newer than its last run's.
    router.set_sequence_floor(unix_micros());
    // Link windows for the linkTelemetry dataset: sampled by the mesh, counters and faults from
    // the datapath, read by federated training.
    let telemetry = crate::links::SharedRecorder::default();
    let chaos = chaos_links::ChaosWiring::new(args.fault_api, behaviour_lines, &metrics.registry);
    let (mesh, inbox, inputs, deliveries, connected) = Mesh::new(MeshParts {
        self_id: settings.self_id,
        facts: AgentFacts {
            spiffe_id: settings.spiffe_id.clone(),
            node_name: node_name.clone(),
            mesh: config.mesh.clone(),
            namespace: config.namespace.clone(),
            endpoint: settings.endpoint.clone(),
            require_post_quantum: config.require_post_quantum,
        },
        router,
        identity: enrolled.identity.clone(),
        trust: Arc::clone(&enrolled.trust),
        metrics: Arc::clone(&metrics),
        clock,
        healing: settings.healing.clone(),
        telemetry: telemetry.clone(),
        key_created_unix: enrolled.key_version.created_unix,
        delays: chaos.executor.delays.clone(),
        false_metric_percent,
        beacon,
        signature_failure,
        kem_downgrade,
        expiring_endorsement,
        rotate_now: Arc::clone(&rotate_now),
        peering: peers.bounds_sessions().then(|| peers.subscribe()),
    });
    let datapath = crate::datapath::DatapathState::default();
    // The SVID source starts before the record reporter, which shows its state.
    let svid = settings.workload_api_socket.as_deref().map(|socket| {
        let credentials = SvidCredentials::new(&config.trust_domain);
        let (updates, task) = crate::workload_api::follow(
            socket,
            Arc::clone(&credentials),
            Arc::clone(&metrics),
            shutdown.clone(),
        );
        tasks.spawn(async move {
            let _ = task.await;
        });
        SvidMode { credentials, updates }
    });
    start_executor(Running {
        mesh: MeshHandle::new(inbox.clone()),
        trust: Arc::clone(&enrolled.trust),
        identity: enrolled.identity.clone(),
        rotate_now: Arc::clone(&rotate_now),
        registry: metrics.registry.clone(),
        shutdown: shutdown.clone(),
        chaos: chaos.executor,
        datapath: datapath.clone(),
        svid: svid.as_ref().map(|mode| Arc::clone(&mode.credentials)),
    });
    tasks.spawn(mesh.run(inputs, shutdown.clone()));
    // The eBPF datapath: optional and never fatal; why it is not running goes on the record.
    tasks.spawn(crate::datapath::run(
        crate::datapath::DatapathSetup {
            enabled: config.ebpf_mode == x0tta6bl4_api::mesh_network::EbpfMode::Tc,
            interfaces: args.interfaces.clone(),
            ports: vec![config.tcp_port, config.udp_port],
            endpoint: chaos.fault_endpoint,
            peers: peers.subscribe(),
            telemetry: telemetry.clone(),
            chaos: Some(chaos.datapath),
            state: datapath,
        },
        crate::datapath::DatapathMetrics::register(&metrics.registry),
        MeshHandle::new(inbox.clone()),
        shutdown.clone(),
    ));
    let rotation = Rotation {
        interval: config.key_rotation_interval,
        state_dir: settings.state_dir.clone(),
        source: Arc::new(identity_source.clone()),
        spiffe_id: settings.spiffe_id.clone(),
        node_name: node_name.clone(),
        trust: Arc::clone(&enrolled.trust),
        mesh: MeshHandle::new(inbox.clone()),
        metrics: Arc::clone(&metrics),
        rotate_now,
    };
    tasks.spawn(rotation.run(enrolled.key_version, shutdown.clone()));
    // Payloads for this agent: federated learning's, others logged.
    tasks.spawn(crate::fl::run(
        crate::fl::FlSetup {
            args: args.fl.clone(),
            in_cluster: args.endorsement_file.is_none() && in_cluster(),
            node_name: node_name.clone(),
            self_id: settings.self_id,
            trust_domain: config.trust_domain.clone(),
            namespace: config.namespace.clone(),
            mesh_name: config.mesh.clone(),
            identity: enrolled.identity.clone(),
            trust: Arc::clone(&enrolled.trust),
            mesh: MeshHandle::new(inbox.clone()),
            registry: metrics.registry.clone(),
            telemetry,
            byzantine_update: fl_byzantine_update,
            signature_failure: fl_signature_failure,
            straggle: args.test.fl_straggle(),
            forgeries: chaos.forgery_requests,
        },
        deliveries,
        shutdown.clone(),
    ));

    let tls_key = TlsKey::generate()?;
    let mut ctx = SessionContext::new(
        settings.self_id,
        identity::mesh_prefix(&config.trust_domain, &config.namespace, &config.mesh),
        enrolled.identity,
        enrolled.trust,
        settings.key_exchange,
        &tls_key,
        svid,
        Arc::clone(&metrics),
        inbox.clone(),
    )?;
    ctx.kem_downgrade = session_kem_downgrade;
    let ctx = Arc::new(ctx);
    let listener = TcpListener::bind(settings.listen)
        .await
        .with_context(|| format!("cannot listen for neighbour sessions on {}", settings.listen))?;
    // /status answers once sessions can be accepted, so "status up" means "reachable".
    let _ = mesh_cell.set(MeshHandle::new(inbox));
    tasks.spawn(dialer::accept(Arc::clone(&ctx), listener, shutdown.clone()));
    tasks.spawn(dialer::dial_peers(
        ctx,
        peers.subscribe(),
        connected,
        shutdown.clone(),
    ));
    readiness.set_ready().await;
    tracing::info!(
        listen = %settings.listen,
        policy = ?settings.key_exchange,
        peers = args.peers.len(),
        "mesh running"
    );
    shutdown.cancelled().await;
    shutdown::drain(tasks).await
}
