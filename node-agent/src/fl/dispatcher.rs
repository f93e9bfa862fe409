//! The consumer of the payloads delivered to this agent: federated messages reassembled from
//! their chunks, a training request verified and taken part in once, an update or zone report
//! handed to the round that verifies it; an aggregator task started for each running job
//! this agent aggregates, and stopped when the job stops being its.
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use x0tta6bl4_api::fl_protocol::{TRAIN_FLOW, UPDATE_FLOW, ZONE_FLOW};
use x0tta6bl4_crypto::SigningContext;
use x0tta6bl4_fl::codec::train_request::TrainRequest;
use x0tta6bl4_fl::codec::{chunks, zone_report};
use x0tta6bl4_fl::update::SignedUpdate;
use x0tta6bl4_wire::NodeId;

use super::job::{self, JobSource, Jobs};
use super::sink::ResultSink;
use super::{FlContext, Incoming, aggregator};
use crate::mesh::Delivery;

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

pub(super) async fn serve<S: ResultSink>(
    ctx: Arc<FlContext>,
    source: &impl JobSource,
    sink: Arc<S>,
    mut deliveries: mpsc::Receiver<Delivery>,
    mut loopback: mpsc::Receiver<Delivery>,
    forgeries: crate::test_faults::ForgeryRequests,
    shutdown: CancellationToken,
) {
    let mut jobs = source.subscribe();
    #[cfg(feature = "test-faults")]
    tokio::spawn(super::forge::carry_out(
        Arc::clone(&ctx),
        jobs.clone(),
        forgeries,
        shutdown.clone(),
    ));
    #[cfg(not(feature = "test-faults"))]
    let crate::test_faults::ForgeryRequests = forgeries;
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
                &self.ctx.node_id(&request.aggregator),
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
