//! Test support shared by the reconcilers' tests: a mock API server that serves canned objects
//! by request path and records every request, so that a test can count what one reconcile read
//! and wrote. The behaviour against a real kube-apiserver is the e2e suite's.
use std::sync::{Arc, Mutex};

use http::{Method, Request, Response, StatusCode};
use kube::client::Body;
use serde_json::{Value, json};

use crate::context::Context;
use crate::mesh::build::BuildOptions;
use crate::metrics::Metrics;

/// One request the mock API server received.
#[derive(Debug, Clone, PartialEq)]
pub struct Recorded {
    pub method: Method,
    pub path: String,
    /// The JSON body (`Null` when there is none).
    pub body: Value,
}

impl Recorded {
    /// "VERB path", as the tests compare requests.
    pub fn line(&self) -> String {
        format!("{} {}", self.method, self.path)
    }

    /// Whether the request can change something: anything but a GET (a read or a list).
    pub fn mutates(&self) -> bool {
        self.method != Method::GET
    }
}

/// A mock API server, stopped when dropped.
pub struct MockApi {
    requests: Arc<Mutex<Vec<Recorded>>>,
    server: tokio::task::JoinHandle<()>,
}

impl MockApi {
    /// Answers every request with `route(path)`, the object or list at that path (a write to a
    /// known path gets that object back, as the API server answers a status patch). A path it
    /// does not know (`None`) gets 404 Not Found for a read, and its own body back for a write,
    /// as an apply or a create answers.
    pub fn serve(route: impl Fn(&str) -> Option<Value> + Send + 'static) -> (kube::Client, Self) {
        Self::serve_answering(route, false)
    }

    /// An API server on which every object is gone: reads and writes both get 404 Not Found,
    /// as when an object is deleted while a reconcile of it runs.
    pub fn serve_gone() -> (kube::Client, Self) {
        Self::serve_answering(|_| None, true)
    }

    fn serve_answering(
        route: impl Fn(&str) -> Option<Value> + Send + 'static,
        unknown_writes_not_found: bool,
    ) -> (kube::Client, Self) {
        let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let recorded = requests.clone();
        let server = tokio::spawn(async move {
            while let Some((request, respond)) = handle.next_request().await {
                let method = request.method().clone();
                let path = request.uri().path().to_owned();
                let body: Value = request
                    .into_body()
                    .collect_bytes()
                    .await
                    .ok()
                    .and_then(|bytes| serde_json::from_slice(&bytes).ok())
                    .unwrap_or(Value::Null);
                let reply = match (route(&path), method == Method::GET || unknown_writes_not_found) {
                    (Some(object), _) => Ok(object),
                    (None, true) => Err(json!({
                        "apiVersion": "v1", "kind": "Status", "metadata": {}, "status": "Failure",
                        "reason": "NotFound", "message": format!("{path} not found"), "code": 404
                    })),
                    (None, false) => Ok(body.clone()),
                };
                recorded.lock().unwrap().push(Recorded { method, path, body });
                let (status, reply) = match reply {
                    Ok(object) => (StatusCode::OK, object),
                    Err(not_found) => (StatusCode::NOT_FOUND, not_found),
                };
                respond.send_response(
                    Response::builder()
                        .status(status)
                        .body(Body::from(serde_json::to_vec(&reply).unwrap()))
                        .unwrap(),
                );
            }
        });
        (kube::Client::new(service, "default"), Self { requests, server })
    }

    /// Answers with the object of the first route whose path ends with its suffix (see
    /// [`MockApi::serve`] for the rest).
    pub fn serve_suffixes(routes: Vec<(&'static str, Value)>) -> (kube::Client, Self) {
        Self::serve(move |path| {
            routes
                .iter()
                .find(|(suffix, _)| path.ends_with(suffix))
                .map(|(_, object)| object.clone())
        })
    }

    /// Every request so far, in order.
    pub fn requests(&self) -> Vec<Recorded> {
        self.requests.lock().unwrap().clone()
    }

    /// The requests that could change something, in order.
    pub fn writes(&self) -> Vec<Recorded> {
        self.requests().into_iter().filter(Recorded::mutates).collect()
    }

    /// "VERB path" of every write.
    pub fn write_lines(&self) -> Vec<String> {
        self.writes().iter().map(Recorded::line).collect()
    }

    /// "GET path" of every read (gets and lists), in order.
    pub fn read_lines(&self) -> Vec<String> {
        self.requests()
            .iter()
            .filter(|r| !r.mutates())
            .map(Recorded::line)
            .collect()
    }
}

impl Drop for MockApi {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// A list response of `items`.
pub fn list<T: serde::Serialize>(api_version: &str, kind: &str, items: &[T]) -> Value {
    json!({"apiVersion": api_version, "kind": kind, "metadata": {}, "items": items})
}

/// A reconciler's context on `client`, with fresh metrics and the default build options.
pub fn context(client: kube::Client) -> Arc<Context> {
    Arc::new(Context::new(
        client,
        Metrics::new(),
        "test",
        BuildOptions::default(),
    ))
}

/// FLTrainingRound "job" (UID "job-uid") on mesh "demo": `rounds` rounds of logistic
/// regression on the digits with `aggregation`; its status `phase` after `completed` rounds at
/// `accuracy` percent, with the round `records` and the `participants`.
pub fn fl_job(
    rounds: i32,
    aggregation: Value,
    phase: &str,
    completed: i32,
    accuracy: &str,
    participants: &[String],
    records: Vec<x0tta6bl4_api::fl_record::RoundRecord>,
) -> x0tta6bl4_api::FLTrainingRound {
    let mut round: x0tta6bl4_api::FLTrainingRound = serde_json::from_value(json!({
        "apiVersion": "x0tta6bl4.io/v1alpha1", "kind": "FLTrainingRound",
        "metadata": {"name": "job", "namespace": "default", "uid": "job-uid"},
        "spec": {
            "meshRef": {"name": "demo"},
            "model": {"kind": "logisticRegression", "inputDim": 64, "classes": 10, "dataset": "digits"},
            "rounds": rounds,
            "participants": {"minimum": participants.len()},
            "aggregation": aggregation
        }
    }))
    .expect("a valid FLTrainingRound");
    let status = round.status.get_or_insert_with(Default::default);
    status.phase = phase.into();
    status.completed_rounds = completed;
    status.accuracy = format!("{accuracy}%");
    status.participants = participants.to_vec();
    status.records = records;
    round
}

/// The record of `round`: each of `participants` asked, those in `rejected` refused, the
/// others accepted, the new model at `accuracy` percent.
pub fn round_record(
    round: i32,
    participants: &[String],
    rejected: &[&str],
    accuracy: &str,
) -> x0tta6bl4_api::fl_record::RoundRecord {
    use x0tta6bl4_api::fl_record::{Rejection, RoundRecord};
    RoundRecord {
        round,
        participants: participants.to_vec(),
        accepted: participants
            .iter()
            .filter(|p| !rejected.contains(&p.as_str()))
            .cloned()
            .collect(),
        rejected: rejected
            .iter()
            .map(|p| Rejection {
                participant: (*p).into(),
                reason: "refused by the rule".into(),
            })
            .collect(),
        down_weighted: Vec::new(),
        loss: "0.5".into(),
        accuracy: accuracy.into(),
        duration_ms: 10,
        model_digest: String::new(),
        previous: String::new(),
        hash: String::new(),
    }
}
