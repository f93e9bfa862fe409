//! Federated learning on the node agent (the FLTrainingRound's agent side; the operator selects
//! participants and the aggregator, and seals the records).
//!
//! - every agent watches the jobs of its mesh ([`job`]); a [`messages::TrainRequest`] on
//!   `TRAIN_FLOW`, verified against the trust store as signed by the job's aggregator, makes it
//!   train its shard ([`participant`]) and send its signed update on `UPDATE_FLOW`;
//! - the job's aggregator runs the rounds ([`aggregator`]) and writes each round's unsealed
//!   record and model through a [`sink::ResultSink`];
//! - [`inject`] sends a bad update by hand, to see it refused.
//!
//! Bytes from the network are dropped and counted ([`metrics`]) unless they parse and verify.
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use x0tta6bl4_api::fl_protocol::{TRAIN_FLOW, UPDATE_FLOW, ZONE_FLOW};
use x0tta6bl4_crypto::SigningContext;
use x0tta6bl4_crypto::endorsement::TrustStore;
use x0tta6bl4_fl::byzantine::Attack;
use x0tta6bl4_fl::update::SignedUpdate;
use x0tta6bl4_wire::NodeId;

use crate::identity;
use crate::mesh::{Delivery, MeshHandle, SendError};
use crate::rotation::CurrentIdentity;

pub mod aggregator;
pub mod chunks;
pub mod inject;
pub mod job;
pub mod messages;
pub mod metrics;
pub mod participant;
pub mod sink;
pub mod stragglers;
pub mod telemetry;
pub mod zone;
pub mod zone_report;
pub mod zone_reports;

use job::{JobSource, Jobs};
use messages::TrainRequest;
use metrics::FlMetrics;
use sink::ResultSink;

/// The agent's federated-learning settings.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct FlArgs {
    /// Standalone: the FLTrainingRound (YAML or JSON, with its status) this agent takes part
    /// in; re-read when it changes, and removing it stops the job.
    #[arg(long, env = "X0_FL_JOB")]
    pub fl_job: Option<PathBuf>,
    /// Standalone: where the aggregator writes round results (default: `fl-results` next to
    /// the job file).
    #[arg(long, env = "X0_FL_RESULTS")]
    pub fl_results: Option<PathBuf>,
    /// Serve POST /fl/inject (a bad update sent by hand) on this loopback address.
    #[arg(long, env = "X0_FL_ADMIN")]
    pub fl_admin: Option<SocketAddr>,
    /// Test only: send attacked updates (sign-flip, scale, noise, label-flip, alie, ipm).
    #[arg(long, hide = true, value_parser = participant::parse_attack)]
    pub fl_byzantine: Option<Attack>,
    /// Test only: hold each trained update this long before sending it (a straggler).
    #[arg(long, hide = true, value_parser = humantime_millis)]
    pub fl_straggle: Option<std::time::Duration>,
}

fn humantime_millis(text: &str) -> Result<std::time::Duration, String> {
    x0tta6bl4_api::duration::parse(text).map_err(|e| e.to_string())
}

/// An update as it reaches the aggregator: its bytes and whom the mesh says sent it.
#[derive(Debug)]
pub struct Incoming {
    /// UPDATE_FLOW (a participant's update) or ZONE_FLOW (a zone aggregator's report).
    pub flow: u32,
    /// The sender's node name if it is a participant, else its node id (short hex).
    pub source: String,
    pub bytes: Vec<u8>,
}

/// What the federated parts share.
pub struct FlContext {
    pub node_name: String,
    pub self_id: NodeId,
    pub trust_domain: String,
    pub namespace: String,
    pub mesh_name: String,
    pub identity: CurrentIdentity,
    pub trust: Arc<RwLock<TrustStore>>,
    pub mesh: MeshHandle,
    pub metrics: FlMetrics,
    pub attack: Option<Attack>,
    /// This agent's link windows: what it trains on, and the aggregator tests on, for a
    /// linkTelemetry job.
    pub telemetry: telemetry::SharedRecorder,
    /// Test only: delay before each update is sent.
    pub straggle: Option<std::time::Duration>,
    /// Updates of this agent to itself (it is a participant and the aggregator).
    pub loopback: mpsc::Sender<Delivery>,
    /// The zone rounds this agent aggregates (hierarchical jobs).
    pub zone_rounds: zone::ZoneRounds,
}

impl FlContext {
    pub fn node_id(&self, node_name: &str) -> NodeId {
        identity::node_id(&identity::spiffe_id(
            &self.trust_domain,
            &self.namespace,
            &self.mesh_name,
            node_name,
        ))
    }

    /// Takes part in an authenticated round: aggregates its zone if it is the zone's
    /// aggregator, then trains and sends its update where the job says (its zone's aggregator
    /// or the job's).
    pub fn take_part(self: &Arc<Self>, job: &Arc<x0tta6bl4_api::FLTrainingRound>, request: TrainRequest) {
        zone::start(self, job, &request);
        let destination = job::update_destination(job, &self.node_name)
            .unwrap_or(&request.aggregator)
            .to_owned();
        self.train_and_submit(request, destination);
    }

    /// Trains the round on a blocking thread and sends the signed update to `destination`.
    fn train_and_submit(self: &Arc<Self>, request: TrainRequest, destination: String) {
        let ctx = Arc::clone(self);
        tokio::spawn(async move {
            let trained = {
                let ctx = Arc::clone(&ctx);
                let request = request.clone();
                tokio::task::spawn_blocking(move || {
                    // A snapshot: training must not hold the recorder the mesh samples into.
                    let recorded = match request.dataset {
                        job::JobDataset::LinkTelemetry => {
                            let windows = ctx.telemetry.lock().training_set(request.seed)?;
                            tracing::info!(
                                job = %request.job_uid, round = request.round, windows = windows.len(),
                                faulty = windows.class_counts()[1], "training on this agent's link telemetry"
                            );
                            Some(windows)
                        }
                        job::JobDataset::Shipped(_) => None,
                    };
                    let update =
                        participant::local_update_on(&request, &ctx.node_name, ctx.attack, recorded)?;
                    update
                        .sign(&ctx.identity.get().key)
                        .and_then(|signed| signed.encode())
                        .map_err(|e| e.to_string())
                })
                .await
            };
            let bytes = match trained {
                Ok(Ok(bytes)) => bytes,
                Ok(Err(error)) => {
                    ctx.metrics.trained.with_label_values(&["failed"]).inc();
                    tracing::warn!(job = %request.job_uid, round = request.round, %error, "local training failed");
                    return;
                }
                Err(error) => {
                    ctx.metrics.trained.with_label_values(&["failed"]).inc();
                    tracing::warn!(%error, "local training panicked");
                    return;
                }
            };
            if let Some(delay) = ctx.straggle {
                tracing::warn!(
                    ?delay,
                    round = request.round,
                    "test mode: holding the update back (straggler)"
                );
                tokio::time::sleep(delay).await;
            }
            ctx.metrics.trained.with_label_values(&["sent"]).inc();
            if let Err(error) = route_update(&ctx, &destination, bytes).await {
                tracing::warn!(%destination, %error, "cannot send the update");
            }
        });
    }
}

/// Sends update bytes to the aggregator: over the mesh, or through the loopback if it is us.
pub async fn route_update(ctx: &FlContext, aggregator: &str, bytes: Vec<u8>) -> Result<(), SendError> {
    send_message(ctx, aggregator, UPDATE_FLOW, &bytes).await
}

/// Attempts at a chunk while the next hop's writer queue is full (a large model is many
/// chunks queued at once), and the pause between them.
const QUEUE_FULL_ATTEMPTS: u32 = 100;
const QUEUE_FULL_BACKOFF: std::time::Duration = std::time::Duration::from_millis(20);

/// Sends a federated message (any size up to [`chunks::MAX_MESSAGE_BYTES`]) as chunks to
/// agent `to`: over the mesh, or through the loopback if it is this agent.
pub async fn send_message(ctx: &FlContext, to: &str, flow: u32, message: &[u8]) -> Result<(), SendError> {
    let chunks = chunks::split(rand::random(), message).map_err(|_| SendError::TooLarge)?;
    for chunk in chunks {
        if to == ctx.node_name {
            let delivery = Delivery {
                source: ctx.self_id,
                flow,
                payload: chunk,
            };
            ctx.loopback
                .send(delivery)
                .await
                .map_err(|_| SendError::ShuttingDown)?;
            continue;
        }
        let mut attempt = 0;
        loop {
            match ctx.mesh.send(ctx.node_id(to), flow, chunk.clone()).await {
                Err(SendError::QueueFull) if attempt < QUEUE_FULL_ATTEMPTS => {
                    attempt += 1;
                    tokio::time::sleep(QUEUE_FULL_BACKOFF).await;
                }
                result => {
                    result?;
                    break;
                }
            }
        }
    }
    Ok(())
}

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
    pub telemetry: telemetry::SharedRecorder,
}

/// Consumes the payloads delivered to this agent until `shutdown`: federated flows are
/// handled, other flows logged. Jobs come from `--fl-job` (standalone) or the API server.
pub async fn run(setup: FlSetup, deliveries: mpsc::Receiver<Delivery>, shutdown: CancellationToken) {
    let (loopback, loopback_rx) = mpsc::channel(64);
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
        attack: setup.args.fl_byzantine,
        telemetry: setup.telemetry,
        straggle: setup.args.fl_straggle,
        loopback,
        zone_rounds: zone::ZoneRounds::default(),
    });
    if let Some(attack) = ctx.attack {
        tracing::warn!(
            attack = attack.name(),
            "test mode: this agent sends Byzantine model updates"
        );
    }
    if let Some(path) = setup.args.fl_job.clone() {
        let results = setup.args.fl_results.clone().unwrap_or_else(|| {
            path.parent()
                .unwrap_or(std::path::Path::new("."))
                .join("fl-results")
        });
        let source = job::FileJobs::start(path, ctx.mesh_name.clone(), shutdown.clone());
        let sink = Arc::new(sink::FileSink { dir: results });
        serve(ctx, &setup.args, &source, sink, deliveries, loopback_rx, shutdown).await;
    } else if setup.in_cluster {
        match kube::Client::try_default().await {
            Ok(client) => {
                let source =
                    job::KubeJobs::start(client.clone(), &ctx.namespace, &ctx.mesh_name, shutdown.clone());
                let sink = Arc::new(sink::KubeSink {
                    client,
                    namespace: ctx.namespace.clone(),
                });
                serve(ctx, &setup.args, &source, sink, deliveries, loopback_rx, shutdown).await;
            }
            Err(error) => {
                tracing::warn!(%error, "no Kubernetes client: federated jobs are not watched");
                let source = NoJobs(watch::channel(Jobs::new()).0);
                let sink = Arc::new(sink::FileSink {
                    dir: std::env::temp_dir(),
                });
                serve(ctx, &setup.args, &source, sink, deliveries, loopback_rx, shutdown).await;
            }
        }
    } else {
        let source = NoJobs(watch::channel(Jobs::new()).0);
        let sink = Arc::new(sink::FileSink {
            dir: std::env::temp_dir(),
        });
        serve(ctx, &setup.args, &source, sink, deliveries, loopback_rx, shutdown).await;
    }
}

/// No jobs: a standalone agent without `--fl-job`.
struct NoJobs(watch::Sender<Jobs>);

impl JobSource for NoJobs {
    fn subscribe(&self) -> watch::Receiver<Jobs> {
        self.0.subscribe()
    }
}

/// A job this agent aggregates.
struct Aggregating {
    uid: String,
    cancel: CancellationToken,
    updates: mpsc::Sender<Incoming>,
    participants: Vec<String>,
}

/// Requests already answered, remembered to drop replays (bounded).
const HANDLED_CAPACITY: usize = 4096;
/// Updates waiting for a busy aggregator.
const UPDATE_QUEUE: usize = 256;

struct Dispatcher<S> {
    ctx: Arc<FlContext>,
    jobs: watch::Receiver<Jobs>,
    sink: Arc<S>,
    aggregating: HashMap<String, Aggregating>,
    /// (job, round, aggregator): a round asked for again by a new aggregator (the operator
    /// replaced one that stopped reporting) is trained again.
    handled: HashSet<(String, u32, String)>,
    reassembler: chunks::Reassembler,
}

async fn serve<S: ResultSink>(
    ctx: Arc<FlContext>,
    args: &FlArgs,
    source: &impl JobSource,
    sink: Arc<S>,
    mut deliveries: mpsc::Receiver<Delivery>,
    mut loopback: mpsc::Receiver<Delivery>,
    shutdown: CancellationToken,
) {
    let mut jobs = source.subscribe();
    if let Some(address) = args.fl_admin {
        tokio::spawn(inject::serve(
            address,
            Arc::clone(&ctx),
            jobs.clone(),
            shutdown.clone(),
        ));
    }
    let mut dispatcher = Dispatcher {
        ctx,
        jobs: jobs.clone(),
        sink,
        aggregating: HashMap::new(),
        handled: HashSet::new(),
        reassembler: chunks::Reassembler::new(),
    };
    dispatcher.reconcile();
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            changed = jobs.changed() => {
                if changed.is_err() {
                    break;
                }
                dispatcher.reconcile();
            }
            Some(delivery) = loopback.recv() => dispatcher.on_delivery(delivery),
            delivery = deliveries.recv() => match delivery {
                Some(delivery) => dispatcher.on_delivery(delivery),
                None => break,
            },
        }
    }
    for job in dispatcher.aggregating.values() {
        job.cancel.cancel();
    }
}

impl<S: ResultSink> Dispatcher<S> {
    /// Starts aggregating the running jobs that name this agent, stops the others.
    fn reconcile(&mut self) {
        let jobs = self.jobs.borrow().clone();
        self.ctx.zone_rounds.retain(|uid| {
            jobs.values()
                .any(|j| job::uid(j) == uid && job::running_aggregator(j).is_some())
        });
        let mine: HashMap<String, _> = jobs
            .values()
            .filter(|j| job::running_aggregator(j) == Some(self.ctx.node_name.as_str()))
            .map(|j| (job::uid(j).to_owned(), Arc::clone(j)))
            .collect();
        self.aggregating.retain(|uid, running| {
            let keep = mine.contains_key(uid) && !running.updates.is_closed();
            if !keep {
                tracing::info!(job = %uid, "federated job stopped here (deleted, finished or reassigned)");
                running.cancel.cancel();
            }
            keep
        });
        for (uid, job) in mine {
            if self.aggregating.contains_key(&uid) {
                continue;
            }
            let (updates, incoming) = mpsc::channel(UPDATE_QUEUE);
            let cancel = CancellationToken::new();
            self.aggregating.insert(
                uid.clone(),
                Aggregating {
                    uid: uid.clone(),
                    cancel: cancel.clone(),
                    updates,
                    participants: job::participants(&job).to_vec(),
                },
            );
            tokio::spawn(aggregator::run(
                Arc::clone(&self.ctx),
                job,
                self.jobs.clone(),
                Arc::clone(&self.sink),
                incoming,
                cancel,
            ));
        }
        self.ctx.metrics.aggregating.set(self.aggregating.len() as i64);
    }

    fn on_delivery(&mut self, mut delivery: Delivery) {
        if matches!(delivery.flow, TRAIN_FLOW | UPDATE_FLOW | ZONE_FLOW) {
            let metrics = &self.ctx.metrics;
            let fed = self.reassembler.feed(
                delivery.source,
                delivery.flow,
                &delivery.payload,
                std::time::Instant::now(),
                |reason| metrics.drop(reason),
            );
            match fed {
                chunks::Fed::Complete(message) => delivery.payload = message,
                chunks::Fed::Pending => return,
                chunks::Fed::Dropped(reason) => return metrics.drop(reason),
            }
        }
        match delivery.flow {
            TRAIN_FLOW => self.on_request(delivery),
            UPDATE_FLOW => self.on_update(delivery),
            ZONE_FLOW => self.on_zone_report(delivery),
            flow => {
                tracing::debug!(source = %delivery.source, flow, bytes = delivery.payload.len(), "payload delivered");
            }
        }
    }

    /// A training request: used only if it verifies as signed by the job's aggregator.
    fn on_request(&mut self, delivery: Delivery) {
        let metrics = &self.ctx.metrics;
        let Ok((request, signed_len, signature)) = TrainRequest::decode(&delivery.payload) else {
            return metrics.drop("malformed_request");
        };
        let job = self
            .jobs
            .borrow()
            .values()
            .find(|j| job::uid(j) == request.job_uid)
            .cloned();
        let Some(job) = job else {
            return metrics.drop("request_for_unknown_job");
        };
        if job::running_aggregator(&job) != Some(request.aggregator.as_str()) {
            return metrics.drop("request_not_from_the_aggregator");
        }
        let verified = self
            .ctx
            .trust
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .verify(
                SigningContext::FlControl,
                &x0tta6bl4_crypto::NodeId(self.ctx.node_id(&request.aggregator).0),
                request.key_epoch,
                &delivery.payload[..signed_len],
                signature,
                crate::clock::unix_seconds(),
            );
        if let Err(refusal) = verified {
            return metrics.drop(&format!("request_{}", refusal.reason()));
        }
        if request.participants != job::participants(&job) {
            return metrics.drop("request_participants_differ");
        }
        if self.handled.len() >= HANDLED_CAPACITY {
            self.handled.clear();
        }
        if !self
            .handled
            .insert((request.job_uid.clone(), request.round, request.aggregator.clone()))
        {
            return metrics.drop("request_repeated");
        }
        self.ctx.take_part(&job, request);
    }

    /// An update: handed to the task that verifies it, the zone round of a hierarchical job
    /// this agent aggregates a zone of, else the job's aggregator task.
    fn on_update(&mut self, delivery: Delivery) {
        let metrics = &self.ctx.metrics;
        let Ok((update, _)) = SignedUpdate::decode(&delivery.payload) else {
            return metrics.drop("malformed_update");
        };
        let zoned = self
            .jobs
            .borrow()
            .values()
            .find(|j| job::uid(j) == update.update.round_uid)
            .filter(|j| job::hierarchical(j))
            .map(|j| job::participants(j).to_vec());
        if let Some(participants) = zoned {
            let incoming = Incoming {
                flow: UPDATE_FLOW,
                source: self.name_of(&participants, delivery.source),
                bytes: delivery.payload,
            };
            let routed = self
                .ctx
                .zone_rounds
                .route(&update.update.round_uid, update.update.round, incoming);
            if let Err(reason) = routed {
                metrics.drop(reason);
            }
            return;
        }
        self.to_aggregator(&update.update.round_uid, UPDATE_FLOW, delivery);
    }

    /// A zone report: handed to the job's aggregator task, which verifies it.
    fn on_zone_report(&mut self, delivery: Delivery) {
        let Ok((report, _, _)) = zone_report::ZoneReport::decode(&delivery.payload) else {
            return self.ctx.metrics.drop("malformed_zone_report");
        };
        self.to_aggregator(&report.job_uid, ZONE_FLOW, delivery);
    }

    /// The node name of a participant, or the sender's short node id.
    fn name_of(&self, participants: &[String], source: NodeId) -> String {
        participants
            .iter()
            .find(|p| self.ctx.node_id(p) == source)
            .cloned()
            .unwrap_or_else(|| format!("node {}", hex::encode(&source.0[..8])))
    }

    fn to_aggregator(&self, uid: &str, flow: u32, delivery: Delivery) {
        let metrics = &self.ctx.metrics;
        let Some(running) = self.aggregating.get(uid) else {
            return metrics.drop("update_for_no_running_round");
        };
        debug_assert_eq!(running.uid, uid);
        let incoming = Incoming {
            flow,
            source: self.name_of(&running.participants, delivery.source),
            bytes: delivery.payload,
        };
        if running.updates.try_send(incoming).is_err() {
            metrics.drop("update_queue_full");
        }
    }
}
