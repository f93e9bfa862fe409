//! Federated learning on the node agent (the FLTrainingRound's agent side; the operator selects
//! participants and the aggregator, and seals the records).
//!
//! - every agent watches the jobs of its mesh ([`job`]); a [`TrainRequest`] on
//!   `TRAIN_FLOW`, verified against the trust store as signed by the job's aggregator, makes it
//!   train its shard ([`participant`]) and send its signed update on `UPDATE_FLOW`;
//! - the job's aggregator runs the rounds ([`aggregator`]) and writes each round's unsealed
//!   record and model through a [`sink::ResultSink`];
//! - [`forge`] sends a forged update when the chaos executor asks, to see it refused.
//!
//! Bytes from the network are dropped and counted ([`metrics`]) unless they parse and verify.
//!
//! Besides those: `args` (the command line), `context` (what the parts share), `dispatcher`
//! (what arrives, handed to what handles it), `training` (taking part in a round), `send`
//! (chunked sending), `spans` (the job's trace), and here [`run`], which sets them up. [`FlContext`], [`Incoming`],
//! [`send_message`] and [`route_update`] are re-exported here. The context holds the zone
//! rounds' table (`zone_rounds`, which knows nothing of the context), so [`zone`] can take a
//! context without a cycle.
//!
//! [`TrainRequest`]: x0tta6bl4_fl::codec::train_request::TrainRequest
use std::sync::{Arc, RwLock};

use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use x0tta6bl4_crypto::endorsement::TrustStore;
use x0tta6bl4_wire::NodeId;

use crate::chaos::behaviour::Poisoning;
use crate::identity::CurrentIdentity;
use crate::mesh::{Delivery, MeshHandle};

pub mod admission;
pub mod aggregator;
mod args;
mod context;
mod dispatcher;
#[cfg(feature = "test-faults")]
pub mod forge;
pub mod gathering;
mod incoming;
pub mod job;
pub mod metrics;
pub mod participant;
mod send;
pub mod sink;
mod spans;
pub mod stragglers;
mod training;
pub mod zone;
pub mod zone_reports;
mod zone_rounds;

pub use args::FlArgs;
pub use context::FlContext;
pub use incoming::Incoming;
pub use send::{route_update, send_message};

use job::{JobSource, Jobs};
use metrics::FlMetrics;

/// What the agent needs to take part in federated jobs.
pub struct FlSetup {
    pub args: FlArgs,
    /// Whether the agent runs in a cluster with a Kubernetes identity (jobs from the API).
    pub in_cluster: bool,
    pub node_name: String,
    pub self_id: NodeId,
    pub trust_domain: String,
    pub namespace: String,
    pub mesh_name: String,
    pub identity: CurrentIdentity,
    pub trust: Arc<RwLock<TrustStore>>,
    pub mesh: MeshHandle,
    pub registry: prometheus::Registry,
    /// The link windows the mesh and the datapath record.
    pub telemetry: crate::links::SharedRecorder,
    /// A chaos experiment's byzantineUpdate for this agent.
    pub byzantine_update: watch::Receiver<Option<Poisoning>>,
    /// A chaos experiment's signatureFailure: this agent's updates go out with spoiled
    /// signatures.
    pub signature_failure: watch::Receiver<bool>,
    /// A test build's straggler delay (`--fl-straggle`): each trained update is held this long.
    pub straggle: Option<Duration>,
    /// A test build's forged updates to send (`POST /chaos/forged-update`).
    pub forgeries: crate::test_faults::ForgeryRequests,
}

/// Consumes the payloads delivered to this agent until `shutdown`: federated flows are
/// handled, other flows logged. Jobs come from `--fl-job` (standalone) or the API server.
pub async fn run(setup: FlSetup, deliveries: mpsc::Receiver<Delivery>, shutdown: CancellationToken) {
    let (loopback, loopback_rx) = mpsc::channel(64);
    let forgeries = setup.forgeries;
    let ctx = Arc::new(FlContext {
        metrics: FlMetrics::register(&setup.registry),
        node_name: setup.node_name,
        self_id: setup.self_id,
        trust_domain: setup.trust_domain,
        namespace: setup.namespace,
        mesh_name: setup.mesh_name,
        identity: setup.identity,
        trust: setup.trust,
        mesh: setup.mesh,
        byzantine_update: setup.byzantine_update,
        signature_failure: setup.signature_failure,
        telemetry: setup.telemetry,
        straggle: setup.straggle,
        loopback,
        zone_rounds: zone_rounds::ZoneRounds::default(),
    });
    if let Some(path) = setup.args.fl_job.clone() {
        let results = setup.args.fl_results.clone().unwrap_or_else(|| {
            path.parent()
                .unwrap_or(std::path::Path::new("."))
                .join("fl-results")
        });
        let source = job::FileJobs::start(path, ctx.mesh_name.clone(), shutdown.clone());
        let sink = Arc::new(sink::FileSink { dir: results });
        dispatcher::serve(ctx, &source, sink, deliveries, loopback_rx, forgeries, shutdown).await;
    } else if setup.in_cluster {
        match kube::Client::try_default().await {
            Ok(client) => {
                let source =
                    job::KubeJobs::start(client.clone(), &ctx.namespace, &ctx.mesh_name, shutdown.clone());
                let sink = Arc::new(sink::KubeSink {
                    client,
                    namespace: ctx.namespace.clone(),
                });
                dispatcher::serve(ctx, &source, sink, deliveries, loopback_rx, forgeries, shutdown).await;
            }
            Err(error) => {
                tracing::warn!(%error, "no Kubernetes client: federated jobs are not watched");
                let source = NoJobs(watch::channel(Jobs::new()).0);
                let sink = Arc::new(sink::FileSink {
                    dir: std::env::temp_dir(),
                });
                dispatcher::serve(ctx, &source, sink, deliveries, loopback_rx, forgeries, shutdown).await;
            }
        }
    } else {
        let source = NoJobs(watch::channel(Jobs::new()).0);
        let sink = Arc::new(sink::FileSink {
            dir: std::env::temp_dir(),
        });
        dispatcher::serve(ctx, &source, sink, deliveries, loopback_rx, forgeries, shutdown).await;
    }
}

/// No jobs: a standalone agent without `--fl-job`.
struct NoJobs(watch::Sender<Jobs>);

impl JobSource for NoJobs {
    fn subscribe(&self) -> watch::Receiver<Jobs> {
        self.0.subscribe()
    }
}
