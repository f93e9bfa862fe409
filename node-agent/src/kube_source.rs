//! The agent inside a cluster: its MeshNode record is where it publishes its key (and gets it
//! endorsed by the operator), where it finds its peers, and where it reports its state.
//!
//! The API server lets an agent write only the record of the node its pod-bound token names
//! (admission policy in the chart), so what the operator endorses really is that node's key.
use std::collections::BTreeSet;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use futures::StreamExt;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::{WatchStreamExt, watcher};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use x0tta6bl4_api::MeshNode;
use x0tta6bl4_crypto::VerifyingKey;
use x0tta6bl4_crypto::endorsement::Endorsement;

use crate::identity::{self, IdentityError, IdentityRequest, IdentitySource, TrustMaterial};
use crate::mesh::MeshHandle;
use crate::peers::{PeerEndpoint, PeerSource};
use crate::status::StatusReport;

/// Field manager of everything the agent writes, distinct from the operator's.
const FIELD_MANAGER: &str = "x0tta6bl4-agent";
/// How often the endorsement is looked for while the operator has not written it yet.
const ENDORSEMENT_POLL: Duration = Duration::from_secs(1);
/// Status is written at most this often, and only when it changed (1000 agents → ≤ 200 writes/s
/// in the worst case, far fewer in steady state).
const REPORT_EVERY: Duration = Duration::from_secs(5);
/// An unchanged status is rewritten this often, as a heartbeat the operator checks.
const HEARTBEAT: Duration = Duration::from_secs(30);

pub fn record_name(mesh: &str, node: &str) -> String {
    format!("{mesh}-{node}")
}

/// Endorsement from the operator, through the MeshNode record; trust anchor from the config.
#[derive(Clone)]
pub struct KubeIdentity {
    pub client: kube::Client,
    pub namespace: String,
    pub mesh: String,
    /// The mesh authority's public key from the agent configuration (base64).
    pub authority_public_key: String,
    pub endpoint: String,
}

impl KubeIdentity {
    fn records(&self) -> Api<MeshNode> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }
}

fn cluster_error(what: &str, error: impl std::fmt::Display) -> IdentityError {
    IdentityError::Source(format!("{what}: {error}"))
}

impl IdentitySource for KubeIdentity {
    fn describe(&self) -> String {
        format!("MeshNode records of mesh {}/{}", self.namespace, self.mesh)
    }

    async fn obtain(&self, request: IdentityRequest<'_>) -> Result<TrustMaterial, IdentityError> {
        let authority = STANDARD
            .decode(&self.authority_public_key)
            .map_err(|e| cluster_error("authorityPublicKey in the agent configuration", e))
            .and_then(|bytes| {
                VerifyingKey::from_bytes(&bytes)
                    .map_err(|e| cluster_error("authorityPublicKey in the agent configuration", e))
            })?;
        let name = record_name(&self.mesh, request.node_name);
        let record = serde_json::json!({
            "apiVersion": "x0tta6bl4.io/v1alpha1",
            "kind": "MeshNode",
            "metadata": {"name": name, "labels": {"x0tta6bl4.io/mesh": self.mesh}},
            "spec": {
                "meshName": self.mesh,
                "nodeName": request.node_name,
                "publicKey": STANDARD.encode(request.public_key.as_bytes()),
                "keyEpoch": request.key_epoch,
            },
        });
        self.records()
            .patch(
                &name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&record),
            )
            .await
            .map_err(|e| {
                cluster_error(
                    &format!("publishing the key in MeshNode {}/{name}", self.namespace),
                    e,
                )
            })?;
        // The endpoint goes out at once so that peers can dial while we wait.
        let status = serde_json::json!({
            "apiVersion": "x0tta6bl4.io/v1alpha1", "kind": "MeshNode",
            "status": {"endpoint": self.endpoint, "spiffeId": request.spiffe_id},
        });
        self.records()
            .patch_status(
                &name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&status),
            )
            .await
            .map_err(|e| {
                cluster_error(
                    &format!("publishing the endpoint in MeshNode {}/{name}", self.namespace),
                    e,
                )
            })?;
        tracing::info!(record = %name, "published the node key; waiting for the operator's endorsement");
        loop {
            let current = self
                .records()
                .get(&name)
                .await
                .map_err(|e| cluster_error(&format!("reading MeshNode {}/{name}", self.namespace), e))?;
            let endorsement = current
                .status
                .as_ref()
                .filter(|s| !s.endorsement.is_empty())
                .and_then(|s| STANDARD.decode(&s.endorsement).ok())
                .and_then(|bytes| Endorsement::decode(&bytes).ok());
            if let Some(endorsement) = endorsement
                && identity::check_endorsement(&endorsement, &request).is_ok()
            {
                tracing::info!(
                    epoch = endorsement.key_epoch,
                    until = endorsement.not_after,
                    "endorsed by the mesh authority"
                );
                return Ok(TrustMaterial {
                    endorsement,
                    authorities: vec![authority],
                });
            }
            tokio::time::sleep(ENDORSEMENT_POLL).await;
        }
    }
}

/// Peers from the MeshNode records of the same mesh that published an endpoint.
pub struct KubePeers {
    endpoints: watch::Sender<BTreeSet<PeerEndpoint>>,
}

impl KubePeers {
    /// Starts watching; the watch ends with `shutdown`.
    pub fn start(
        client: kube::Client,
        namespace: &str,
        mesh: &str,
        trust_domain: &str,
        own_node: &str,
        shutdown: CancellationToken,
    ) -> Self {
        let (sender, _) = watch::channel(BTreeSet::new());
        let records: Api<MeshNode> = Api::namespaced(client, namespace);
        let config = watcher::Config::default().fields(&format!("spec.meshName={mesh}"));
        let publish = sender.clone();
        let (namespace, mesh, trust_domain, own_node) = (
            namespace.to_owned(),
            mesh.to_owned(),
            trust_domain.to_owned(),
            own_node.to_owned(),
        );
        tokio::spawn(async move {
            let (reader, writer) = kube::runtime::reflector::store::<MeshNode>();
            let mut stream = std::pin::pin!(
                watcher(records, config)
                    .default_backoff()
                    .reflect(writer)
                    .touched_objects()
            );
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    event = stream.next() => match event {
                        None => return,
                        Some(Err(error)) => tracing::warn!(%error, "MeshNode watch failed; retrying"),
                        Some(Ok(_)) => {
                            let endpoints = reader
                                .state()
                                .iter()
                                .filter(|record| record.spec.node_name != own_node)
                                .filter_map(|record| {
                                    let endpoint = record.status.as_ref()?.endpoint.clone();
                                    (!endpoint.is_empty()).then(|| PeerEndpoint {
                                        address: endpoint,
                                        node: Some(identity::node_id(&identity::spiffe_id(
                                            &trust_domain,
                                            &namespace,
                                            &mesh,
                                            &record.spec.node_name,
                                        ))),
                                    })
                                })
                                .collect();
                            publish.send_if_modified(|current| {
                                let changed = *current != endpoints;
                                *current = endpoints;
                                changed
                            });
                        }
                    }
                }
            }
        });
        Self { endpoints: sender }
    }
}

impl PeerSource for KubePeers {
    fn subscribe(&self) -> watch::Receiver<BTreeSet<PeerEndpoint>> {
        self.endpoints.subscribe()
    }
}

/// A key age in whole minutes for the first hour, whole hours after: the record is written
/// only when its status changes, and an age in seconds would change it every time.
fn coarse_age(age: Duration) -> Duration {
    let unit = if age < Duration::from_secs(3600) { 60 } else { 3600 };
    Duration::from_secs(age.as_secs() / unit * unit)
}

/// A packet count rounded down to two significant digits (1234 → 1200): the record is written
/// only when its status changes, and a count growing by tens a second would change it at every
/// chance. Rounded, a steadily growing count changes about 90 times per power of ten, ever more
/// rarely: every 5 s at first, every few minutes after an hour.
pub fn coarse_count(count: u64) -> i64 {
    let mut unit = 1u64;
    while count / unit >= 100 {
        unit *= 10;
    }
    i64::try_from(count / unit * unit).unwrap_or(i64::MAX)
}

/// The status fields the agent owns in its MeshNode record, from its /status report and the
/// eBPF datapath's per-peer totals.
pub fn record_status(report: &StatusReport) -> serde_json::Value {
    record_status_with(report, crate::datapath::peer_totals)
}

fn record_status_with(
    report: &StatusReport,
    ebpf_totals: impl Fn(std::net::IpAddr) -> Option<x0tta6bl4_datapath::PeerTotals>,
) -> serde_json::Value {
    let alive: Vec<_> = report.neighbours.iter().filter(|n| n.alive).collect();
    let (mut ebpf_packets, mut ebpf_drops, mut ebpf_seen) = (0u64, 0u64, false);
    let neighbours: Vec<_> = alive
        .iter()
        .map(|n| {
            let mut entry = serde_json::json!({
                "node": n.node_name.clone().unwrap_or_else(|| n.node_id.clone()),
                "cost": n.cost,
                "rttMicros": n.rtt_ms.map(|ms| (ms * 1000.0) as i64).unwrap_or(0),
                "lossPercent": n.loss_percent,
                "keyExchange": n.key_exchange.clone().unwrap_or_default(),
            });
            // The datapath counts by address: the session's remote address names the peer.
            let totals = n
                .remote_address
                .as_deref()
                .and_then(|address| address.parse::<std::net::SocketAddr>().ok())
                .and_then(|address| ebpf_totals(address.ip()));
            if let Some(totals) = totals {
                entry["ebpfTxPackets"] = serde_json::json!(coarse_count(totals.tx_packets));
                entry["ebpfRxPackets"] = serde_json::json!(coarse_count(totals.rx_packets));
                entry["ebpfDrops"] = serde_json::json!(coarse_count(totals.drops));
                ebpf_packets = ebpf_packets
                    .saturating_add(totals.tx_packets)
                    .saturating_add(totals.rx_packets);
                ebpf_drops = ebpf_drops.saturating_add(totals.drops);
                ebpf_seen = true;
            }
            entry
        })
        .collect();
    let mut status = serde_json::json!({
        "endpoint": report.endpoint,
        "spiffeId": report.spiffe_id,
        "neighbourCount": alive.len(),
        "routeCount": report.routes.len(),
        "pqSessions": report.post_quantum_sessions,
        "classicalSessions": report.sessions.saturating_sub(report.post_quantum_sessions),
        "neighbours": neighbours,
        "quarantined": report
            .quarantined
            .iter()
            .map(|q| format!("{}: {}", q.node_name.clone().unwrap_or_else(|| q.node_id.clone()), q.reason))
            .collect::<Vec<_>>(),
    });
    // Totals only where the datapath runs: absent says "not counted", 0 would claim silence.
    let datapath_running = crate::datapath::availability().is_some_and(|a| !a.unavailable);
    if ebpf_seen || datapath_running {
        status["ebpfPackets"] = serde_json::json!(coarse_count(ebpf_packets));
        status["ebpfDrops"] = serde_json::json!(coarse_count(ebpf_drops));
    }
    let key_age = Duration::from_micros(report.now_unix_us.saturating_sub(report.key_since_unix_us));
    status["keyAge"] = serde_json::json!(x0tta6bl4_api::duration::format(coarse_age(key_age)));
    if let Some(condition) = crate::datapath::condition_json() {
        status["conditions"] = serde_json::json!([condition]);
    }
    if let Some(episode) = report.last_settled_convergence.as_ref() {
        let at = episode
            .last_change_at_unix_us
            .unwrap_or(episode.started_at_unix_us);
        if let Ok(time) = k8s_openapi::jiff::Timestamp::from_microsecond(at as i64) {
            status["lastConvergenceTime"] = serde_json::json!(time.to_string());
        }
        if episode.trigger.kind == "neighbour_lost" {
            let duration = Duration::from_micros((episode.duration_ms * 1000.0) as u64);
            status["lastRerouteDuration"] = serde_json::json!(x0tta6bl4_api::duration::format(duration));
        }
    }
    status
}

/// Writes the agent's status into its record, rate-limited and only on change.
pub fn start_reporting(
    client: kube::Client,
    namespace: String,
    name: String,
    mesh: MeshHandle,
    shutdown: CancellationToken,
) {
    tokio::spawn(async move {
        let records: Api<MeshNode> = Api::namespaced(client, &namespace);
        let mut last_sent: Option<(serde_json::Value, tokio::time::Instant)> = None;
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(REPORT_EVERY) => {}
            }
            let Some(report) = mesh.status().await else { return };
            let status = record_status(&report);
            if last_sent
                .as_ref()
                .is_some_and(|(sent, at)| *sent == status && at.elapsed() < HEARTBEAT)
            {
                continue;
            }
            let mut written = status.clone();
            written["lastReportTime"] = serde_json::json!(k8s_openapi::jiff::Timestamp::now().to_string());
            let body = serde_json::json!({"apiVersion": "x0tta6bl4.io/v1alpha1", "kind": "MeshNode", "status": written});
            match records
                .patch_status(
                    &name,
                    &PatchParams::apply(FIELD_MANAGER).force(),
                    &Patch::Apply(&body),
                )
                .await
            {
                Ok(_) => last_sent = Some((status, tokio::time::Instant::now())),
                Err(error) => tracing::warn!(%error, record = %name, "could not report status"),
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::NeighbourReport;
    use x0tta6bl4_datapath::PeerTotals;

    fn neighbour(name: &str, remote: Option<&str>) -> NeighbourReport {
        NeighbourReport {
            node_id: format!("id-{name}"),
            node_name: Some(name.to_owned()),
            spiffe_id: None,
            alive: true,
            quarantined: false,
            cost: 300,
            loss_percent: 0,
            rtt_ms: Some(0.25),
            key_exchange: Some("X25519MLKEM768".to_owned()),
            post_quantum: true,
            direction: Some("outbound"),
            remote_address: remote.map(str::to_owned),
            session_since_unix_us: Some(1),
        }
    }

    fn report(neighbours: Vec<NeighbourReport>) -> StatusReport {
        StatusReport {
            node_id: "id-self".to_owned(),
            spiffe_id: "spiffe://x0/ns/n/mesh/m/node/self".to_owned(),
            node_name: "self".to_owned(),
            mesh: "m".to_owned(),
            namespace: "n".to_owned(),
            endpoint: "198.18.251.1:7946".to_owned(),
            require_post_quantum: true,
            key_epoch: 1,
            key_since_unix_us: 0,
            now_unix_us: 0,
            started_unix_us: 0,
            sessions: neighbours.len(),
            post_quantum_sessions: neighbours.len(),
            known_nodes: 3,
            neighbours,
            routes: Vec::new(),
            counters: Default::default(),
            last_topology_event: None,
            last_convergence: None,
            last_settled_convergence: None,
            events: Vec::new(),
            quarantined: Vec::new(),
            incidents: Vec::new(),
        }
    }

    #[test]
    fn counts_keep_two_significant_digits() {
        let coarse: Vec<i64> = [0, 7, 99, 100, 109, 1234, 56_789, 1_000_001]
            .into_iter()
            .map(coarse_count)
            .collect();
        assert_eq!(coarse, [0, 7, 99, 100, 100, 1200, 56_000, 1_000_000]);
        assert_eq!(
            coarse_count(u64::MAX),
            i64::MAX,
            "saturates where the CRD's integer ends"
        );
    }

    #[test]
    fn each_neighbour_carries_its_ebpf_counts_found_by_its_session_address() {
        let report = report(vec![
            neighbour("node-1", Some("198.18.251.2:7946")),
            neighbour("node-2", Some("198.18.251.3:40112")),
            neighbour("node-3", None),
        ]);
        let totals = |peer: std::net::IpAddr| match peer.to_string().as_str() {
            "198.18.251.2" => Some(PeerTotals {
                tx_packets: 1234,
                rx_packets: 987,
                drops: 0,
                ..PeerTotals::default()
            }),
            "198.18.251.3" => Some(PeerTotals {
                tx_packets: 70,
                rx_packets: 100,
                drops: 31,
                ..PeerTotals::default()
            }),
            _ => None,
        };
        let status = record_status_with(&report, totals);
        let neighbours = status["neighbours"].as_array().unwrap();
        assert_eq!(
            (
                &neighbours[0]["ebpfTxPackets"],
                &neighbours[0]["ebpfRxPackets"],
                &neighbours[0]["ebpfDrops"]
            ),
            (
                &serde_json::json!(1200),
                &serde_json::json!(980),
                &serde_json::json!(0)
            )
        );
        assert_eq!(neighbours[1]["ebpfDrops"], 31);
        assert!(
            neighbours[2].get("ebpfTxPackets").is_none(),
            "not counted is absent, not zero: {}",
            neighbours[2]
        );
        // Sums of the exact counts, rounded once: 1234 + 987 + 70 + 100 = 2391.
        assert_eq!(status["ebpfPackets"], 2300);
        assert_eq!(status["ebpfDrops"], 31);
        // What the API server keeps: the CRD type has every field the agent writes.
        let typed: x0tta6bl4_api::mesh_node::MeshNodeStatus = serde_json::from_value(status).unwrap();
        assert_eq!(typed.neighbours[1].ebpf_tx_packets, Some(70));
        assert_eq!((typed.ebpf_packets, typed.ebpf_drops), (Some(2300), Some(31)));
    }

    #[test]
    fn a_status_without_counts_carries_no_ebpf_fields_and_parses_as_the_crd_type() {
        let status = record_status_with(
            &report(vec![neighbour("node-1", Some("198.18.251.2:7946"))]),
            |_| None,
        );
        assert!(status["neighbours"][0].get("ebpfRxPackets").is_none());
        let typed: x0tta6bl4_api::mesh_node::MeshNodeStatus = serde_json::from_value(status).unwrap();
        assert_eq!(typed.neighbours[0].ebpf_rx_packets, None);
    }
}
