//! The agent inside a cluster: its MeshNode record is where it publishes its key (and gets it
//! endorsed by the operator), where it finds its peers, and where it reports its state.
//!
//! The API server lets an agent write only the record of the node its pod-bound token names
//! (admission policy in the chart), so what the operator endorses really is that node's key.
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::watcher;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use x0tta6bl4_api::MeshNode;
use x0tta6bl4_api::chaos::AgentChaosReport;
use x0tta6bl4_api::mesh_node::{MESH_LABEL, MeshNodeSpec, MeshNodeStatus, NeighbourStatus};
use x0tta6bl4_api::peering::Peering;
use x0tta6bl4_crypto::VerifyingKey;
use x0tta6bl4_crypto::endorsement::Endorsement;

use crate::datapath::DatapathState;
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
/// A changed chaos report is written at most this often.
const CHAOS_REPORT_EVERY: Duration = Duration::from_secs(1);
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
        let record = key_record(&self.mesh, &request);
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
        // The endpoint goes out at once so that peers can dial while we wait. The apply drops
        // what a previous run of this agent reported (it looks dead until its first report,
        // as it should), except its chaos reports, which the new run resumes from.
        let previous_chaos = self
            .records()
            .get_opt(&name)
            .await
            .ok()
            .flatten()
            .and_then(|record| record.status)
            .map(|status| status.chaos)
            .unwrap_or_default();
        let status = MeshNodeStatus {
            endpoint: self.endpoint.clone(),
            spiffe_id: request.spiffe_id.to_owned(),
            chaos: previous_chaos,
            ..MeshNodeStatus::default()
        };
        self.records()
            .patch_status(
                &name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&status.apply_patch()),
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

/// Peers from the MeshNode records of the same mesh that published an endpoint: the bounded
/// set the mesh's peering rule gives this node (`x0tta6bl4_api::peering`), never all of them.
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
        peering: Peering,
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
        let (reader, mut changes) =
            crate::watch_cache::reflect("MeshNode records", records, config, shutdown.clone());
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    changed = changes.changed() => match changed {
                        Err(_) => return,
                        Ok(()) => {
                            let records = reader.state();
                            // Members: the records with an endpoint to dial.
                            let members: BTreeMap<&str, &str> = records
                                .iter()
                                .filter_map(|record| {
                                    let endpoint = record.status.as_ref()?.endpoint.as_str();
                                    (!endpoint.is_empty())
                                        .then_some((record.spec.node_name.as_str(), endpoint))
                                })
                                .collect();
                            let chosen = peering.peers_of(&own_node, members.keys().copied());
                            let endpoints: BTreeSet<PeerEndpoint> = chosen
                                .iter()
                                .filter_map(|name| {
                                    Some(PeerEndpoint {
                                        address: (*members.get(name.as_str())?).to_owned(),
                                        node: Some(identity::node_id(&identity::spiffe_id(
                                            &trust_domain,
                                            &namespace,
                                            &mesh,
                                            name,
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

    fn bounds_sessions(&self) -> bool {
        true
    }
}

/// A key age in whole minutes for the first hour, whole hours after: the record is written
/// only when its status changes, and an age in seconds would change it every time.
fn coarse_age(age: Duration) -> Duration {
    let unit = if age < Duration::from_secs(3600) { 60 } else { 3600 };
    Duration::from_secs(age.as_secs() / unit * unit)
}

/// The agent's part of its MeshNode record: the key it asks the operator to endorse.
fn key_record(mesh: &str, request: &IdentityRequest<'_>) -> MeshNode {
    let mut record = MeshNode::new(
        &record_name(mesh, request.node_name),
        MeshNodeSpec {
            mesh_name: mesh.to_owned(),
            node_name: request.node_name.to_owned(),
            public_key: STANDARD.encode(request.public_key.as_bytes()),
            key_epoch: i64::from(request.key_epoch),
        },
    );
    record.metadata.labels = Some([(MESH_LABEL.to_owned(), mesh.to_owned())].into());
    record
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

/// The status fields the agent owns in its MeshNode record, from its /status report, the
/// eBPF datapath's per-peer totals and the chaos executor's reports: the API's own type, so
/// what the agent writes is what the CRD declares.
pub fn record_status(
    report: &StatusReport,
    chaos: &[AgentChaosReport],
    datapath: &DatapathState,
) -> MeshNodeStatus {
    let mut status = datapath_status(report, datapath);
    status.chaos = chaos.to_vec();
    status
}

fn micro_time(at_unix_us: u64) -> Option<k8s_openapi::jiff::Timestamp> {
    k8s_openapi::jiff::Timestamp::from_microsecond(i64::try_from(at_unix_us).ok()?).ok()
}

fn to_i32(value: usize) -> i32 {
    i32::try_from(value).unwrap_or(i32::MAX)
}

/// The record's status without the chaos reports.
fn datapath_status(report: &StatusReport, datapath: &DatapathState) -> MeshNodeStatus {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, Time};

    let alive: Vec<_> = report.neighbours.iter().filter(|n| n.alive).collect();
    let (mut ebpf_packets, mut ebpf_drops, mut ebpf_seen) = (0u64, 0u64, false);
    let neighbours: Vec<NeighbourStatus> = alive
        .iter()
        .map(|n| {
            // The datapath counts by address: the session's remote address names the peer.
            let totals = n
                .remote_address
                .as_deref()
                .and_then(|address| address.parse::<std::net::SocketAddr>().ok())
                .and_then(|address| datapath.peer_totals(address.ip()));
            if let Some(totals) = totals {
                ebpf_packets = ebpf_packets
                    .saturating_add(totals.tx_packets)
                    .saturating_add(totals.rx_packets);
                ebpf_drops = ebpf_drops.saturating_add(totals.drops);
                ebpf_seen = true;
            }
            NeighbourStatus {
                node: n.node_name.clone().unwrap_or_else(|| n.node_id.clone()),
                cost: i64::from(n.cost),
                rtt_micros: n.rtt_ms.map_or(0, |ms| (ms * 1000.0) as i64),
                loss_percent: i32::try_from(n.loss_percent).unwrap_or(i32::MAX),
                key_exchange: n.key_exchange.clone().unwrap_or_default(),
                ebpf_tx_packets: totals.map(|t| coarse_count(t.tx_packets)),
                ebpf_rx_packets: totals.map(|t| coarse_count(t.rx_packets)),
                ebpf_drops: totals.map(|t| coarse_count(t.drops)),
                clock_bound_micros: n
                    .clock_offset
                    .map(|offset| i64::try_from(offset.bound_us).unwrap_or(i64::MAX)),
            }
        })
        .collect();
    // Totals only where the datapath runs: absent says "not counted", 0 would claim silence.
    let datapath_running = datapath.availability().is_some_and(|a| !a.unavailable);
    let counted = ebpf_seen || datapath_running;
    let key_age = Duration::from_micros(report.now_unix_us.saturating_sub(report.key_since_unix_us));
    let last_route_change = report
        .events
        .iter()
        .filter(|event| event.kind == "route_changed")
        .map(|event| event.at_unix_us)
        .max()
        .and_then(micro_time);
    let settled = report.last_settled_convergence.as_ref();
    MeshNodeStatus {
        conditions: datapath.condition().into_iter().collect(),
        endpoint: report.endpoint.clone(),
        spiffe_id: report.spiffe_id.clone(),
        neighbour_count: to_i32(alive.len()),
        route_count: to_i32(report.routes.len()),
        pq_sessions: to_i32(report.post_quantum_sessions),
        classical_sessions: to_i32(report.sessions.saturating_sub(report.post_quantum_sessions)),
        neighbours,
        ebpf_packets: counted.then(|| coarse_count(ebpf_packets)),
        ebpf_drops: counted.then(|| coarse_count(ebpf_drops)),
        quarantined: report
            .quarantined
            .iter()
            .map(|q| {
                format!(
                    "{}: {}",
                    q.node_name.clone().unwrap_or_else(|| q.node_id.clone()),
                    q.reason
                )
            })
            .collect(),
        key_age: x0tta6bl4_api::duration::format(coarse_age(key_age)),
        last_route_change_time: last_route_change.map(MicroTime),
        last_convergence_time: settled
            .and_then(|episode| {
                micro_time(
                    episode
                        .last_change_at_unix_us
                        .unwrap_or(episode.started_at_unix_us),
                )
            })
            .map(Time),
        last_reroute_duration: settled
            .filter(|episode| episode.trigger.kind == "neighbour_lost")
            .map(|episode| {
                x0tta6bl4_api::duration::format(Duration::from_micros((episode.duration_ms * 1000.0) as u64))
            })
            .unwrap_or_default(),
        ..MeshNodeStatus::default()
    }
}

/// Writes the agent's status into its record, rate-limited and only on change.
/// What the record reports besides the mesh's own status.
pub struct RecordSources {
    pub chaos: tokio::sync::watch::Receiver<Vec<AgentChaosReport>>,
    pub datapath: DatapathState,
    pub svid: Option<std::sync::Arc<x0tta6bl4_session::svid::SvidCredentials>>,
    /// The serial of the mesh's revocation list in force.
    pub revocation_serial: tokio::sync::watch::Receiver<Option<u64>>,
}

pub fn start_reporting(
    client: kube::Client,
    namespace: String,
    name: String,
    mesh: MeshHandle,
    sources: RecordSources,
    shutdown: CancellationToken,
) {
    let RecordSources {
        mut chaos,
        datapath,
        svid,
        revocation_serial,
    } = sources;
    tokio::spawn(async move {
        let records: Api<MeshNode> = Api::namespaced(client, &namespace);
        let mut last_sent: Option<(MeshNodeStatus, tokio::time::Instant)> = None;
        let mut next = tokio::time::Instant::now() + REPORT_EVERY;
        loop {
            // A chaos report that changed goes out within CHAOS_REPORT_EVERY (the operator
            // measures and judges experiments from it); everything else every REPORT_EVERY.
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep_until(next) => {}
                changed = chaos.changed() => {
                    if changed.is_err() {
                        // No executor (standalone): reports on the timer only.
                        tokio::select! {
                            () = shutdown.cancelled() => return,
                            () = tokio::time::sleep_until(next) => {}
                        }
                    }
                    let earliest = last_sent.as_ref().map_or_else(tokio::time::Instant::now, |(_, at)| *at + CHAOS_REPORT_EVERY);
                    tokio::select! {
                        () = shutdown.cancelled() => return,
                        () = tokio::time::sleep_until(earliest.min(next)) => {}
                    }
                }
            }
            next = tokio::time::Instant::now() + REPORT_EVERY;
            let Some(report) = mesh.status().await else { return };
            let reports = chaos.borrow_and_update().clone();
            let mut status = record_status(&report, &reports, &datapath);
            status.revocation_serial = (*revocation_serial.borrow()).and_then(|s| i64::try_from(s).ok());
            if let Some(credentials) = &svid {
                crate::workload_api::report(credentials, &mut status, std::time::SystemTime::now());
            }
            if last_sent
                .as_ref()
                .is_some_and(|(sent, at)| *sent == status && at.elapsed() < HEARTBEAT)
            {
                continue;
            }
            let mut written = status.clone();
            written.last_report_time = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                k8s_openapi::jiff::Timestamp::now(),
            ));
            let body = written.apply_patch();
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
            clock_offset: Some(crate::clock::ClockOffset {
                estimate_us: -40,
                bound_us: 90,
            }),
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
        let datapath = DatapathState::default();
        datapath.set_totals(
            [
                (
                    "198.18.251.2".parse().unwrap(),
                    PeerTotals {
                        tx_packets: 1234,
                        rx_packets: 987,
                        drops: 0,
                        ..PeerTotals::default()
                    },
                ),
                (
                    "198.18.251.3".parse().unwrap(),
                    PeerTotals {
                        tx_packets: 70,
                        rx_packets: 100,
                        drops: 31,
                        ..PeerTotals::default()
                    },
                ),
            ]
            .into(),
        );
        let status = datapath_status(&report, &datapath);
        let neighbours = &status.neighbours;
        assert_eq!(
            (
                neighbours[0].ebpf_tx_packets,
                neighbours[0].ebpf_rx_packets,
                neighbours[0].ebpf_drops
            ),
            (Some(1200), Some(980), Some(0))
        );
        assert_eq!(neighbours[1].ebpf_drops, Some(31));
        assert_eq!(neighbours[1].ebpf_tx_packets, Some(70));
        assert_eq!(neighbours[1].clock_bound_micros, Some(90));
        assert_eq!(
            neighbours[2].ebpf_tx_packets, None,
            "not counted is absent, not zero"
        );
        // Sums of the exact counts, rounded once: 1234 + 987 + 70 + 100 = 2391.
        assert_eq!((status.ebpf_packets, status.ebpf_drops), (Some(2300), Some(31)));
        // As written: camelCase fields of the CRD, absent ones left out.
        let written = serde_json::to_value(&status).unwrap();
        assert_eq!(written["neighbours"][0]["ebpfTxPackets"], 1200);
        assert!(
            written["neighbours"][2].get("ebpfTxPackets").is_none(),
            "{written}"
        );
        assert_eq!(written["neighbourCount"], 3);
    }

    #[test]
    fn the_key_record_applies_only_the_agents_fields() {
        let key = x0tta6bl4_crypto::SigningKey::generate().unwrap();
        let request = IdentityRequest {
            spiffe_id: "spiffe://x0.local/ns/ns1/mesh/demo/node/n1",
            node_name: "n1",
            public_key: key.verifying_key(),
            key_epoch: 3,
        };
        let applied = serde_json::to_value(key_record("demo", &request)).unwrap();
        assert_eq!(applied["apiVersion"], "x0tta6bl4.io/v1alpha1");
        assert_eq!(applied["kind"], "MeshNode");
        assert_eq!(applied["metadata"]["name"], record_name("demo", "n1"));
        assert_eq!(applied["metadata"]["labels"][MESH_LABEL], "demo");
        assert_eq!(applied["spec"]["meshName"], "demo");
        assert_eq!(applied["spec"]["nodeName"], "n1");
        assert_eq!(applied["spec"]["keyEpoch"], 3);
        assert_eq!(
            applied["spec"]["publicKey"].as_str().map(str::len),
            Some(STANDARD.encode(key.verifying_key().as_bytes()).len())
        );
        assert!(
            applied.get("status").is_none(),
            "the status is written apart: {applied}"
        );
    }

    #[test]
    fn a_status_without_counts_carries_no_ebpf_fields() {
        let status = datapath_status(
            &report(vec![neighbour("node-1", Some("198.18.251.2:7946"))]),
            &DatapathState::default(),
        );
        assert_eq!(status.neighbours[0].ebpf_rx_packets, None);
        let written = serde_json::to_value(&status).unwrap();
        assert!(
            written["neighbours"][0].get("ebpfRxPackets").is_none(),
            "{written}"
        );
    }
}
