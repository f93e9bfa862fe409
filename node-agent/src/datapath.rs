//! The eBPF datapath in the agent (`ebpfMode: tc`): attaches the classifiers to the interfaces
//! that carry the mesh traffic, reads their per-peer counters every second, feeds them to the
//! routing's link metric (through the mesh actor), to Prometheus and to the MeshNode record, and
//! serves fault injection by hand on a loopback-only endpoint.
//!
//! Which interfaces: those given with `--interface`, else every interface the kernel routes a
//! peer's address through (the peers the agent dials and those it has sessions with), looked up
//! again when the peer set changes and every few seconds, so a peer that appears later, or a
//! route that moves, gets its interface instrumented. Loopback never is: a local address is not
//! routed out of any interface.
//!
//! When the datapath cannot run (no CAP_BPF/CAP_NET_ADMIN, an old kernel, a broken object), the
//! agent goes on without it, on the userspace metrics (hello loss and RTT), and its MeshNode
//! record says why in condition `EbpfUnavailable`.
//!
//! Fault injection (needs `--fault-api 127.0.0.1:PORT`):
//! ```text
//! curl -X POST 'http://127.0.0.1:PORT/datapath/faults?peer=198.18.0.2&drop=0.3&seconds=120'
//! curl -X POST 'http://127.0.0.1:PORT/datapath/faults?peer=198.18.0.2&partition=both&seconds=30'
//! curl -X DELETE 'http://127.0.0.1:PORT/datapath/faults?peer=198.18.0.2'
//! curl 'http://127.0.0.1:PORT/datapath'        # counters and faults, JSON
//! ```
use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use prometheus::{IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};
use serde::Serialize;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use x0tta6bl4_datapath::{
    Datapath, DatapathConfig, DatapathError, DatapathMaps, Fault, PeerTraffic, monotonic_now_ns,
    route_interface, totals_by_peer,
};
use x0tta6bl4_routing::LinkCounters;

use crate::mesh::MeshHandle;
use crate::peers::PeerEndpoint;

/// How often the counters are read and fed to the link metric.
pub const POLL_EVERY: Duration = Duration::from_secs(1);
/// The longest fault the hand-operated endpoint sets: it is for experiments, not policy.
const MAX_FAULT: Duration = Duration::from_secs(3600);
/// How often the peers' routes are looked up again without a change of the peer set (routes
/// move, sessions arrive from peers the agent does not dial). One rtnetlink round trip per
/// distinct peer address: a few milliseconds for a thousand peers.
const RESCAN_EVERY: Duration = Duration::from_secs(5);

/// Whether the datapath runs, as the MeshNode record reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Availability {
    /// `EbpfUnavailable` is True.
    pub unavailable: bool,
    /// One CamelCase word: Loaded, Disabled, NotPermitted, KernelUnsupported, BrokenObject, ...
    pub reason: String,
    pub message: String,
    /// RFC 3339, when `unavailable` last changed.
    pub since: String,
}

/// The agent's datapath state: one agent per process, so process-wide, which keeps the record
/// writer free of one more parameter.
static AVAILABILITY: RwLock<Option<Availability>> = RwLock::new(None);
/// Latest per-peer totals, for the record's neighbours.
static TOTALS: RwLock<BTreeMap<IpAddr, x0tta6bl4_datapath::PeerTotals>> = RwLock::new(BTreeMap::new());
/// The interfaces the classifiers are attached to, for /datapath.
static INTERFACES: RwLock<Vec<String>> = RwLock::new(Vec::new());

fn set_availability(unavailable: bool, reason: &str, message: String) {
    let mut current = AVAILABILITY.write().unwrap_or_else(PoisonError::into_inner);
    let since = match current.as_ref() {
        Some(previous) if previous.unavailable == unavailable => previous.since.clone(),
        _ => k8s_openapi::jiff::Timestamp::now().to_string(),
    };
    *current = Some(Availability {
        unavailable,
        reason: reason.to_owned(),
        message,
        since,
    });
}

/// The datapath's state, once the agent decided it.
pub fn availability() -> Option<Availability> {
    AVAILABILITY
        .read()
        .unwrap_or_else(PoisonError::into_inner)
        .clone()
}

/// The condition for the MeshNode record (server-side-apply JSON), once decided.
pub fn condition_json() -> Option<serde_json::Value> {
    let state = availability()?;
    Some(serde_json::json!({
        "type": "EbpfUnavailable",
        "status": if state.unavailable { "True" } else { "False" },
        "reason": state.reason,
        "message": state.message,
        "lastTransitionTime": state.since,
    }))
}

/// eBPF packet counts to and from `peer`, for the record (None without the datapath, or before
/// it saw the peer's traffic).
pub fn peer_totals(peer: IpAddr) -> Option<x0tta6bl4_datapath::PeerTotals> {
    TOTALS
        .read()
        .unwrap_or_else(PoisonError::into_inner)
        .get(&peer.to_canonical())
        .copied()
}

/// The datapath's Prometheus series, in the agent's registry.
#[derive(Clone)]
pub struct DatapathMetrics {
    packets: IntCounterVec,
    bytes: IntCounterVec,
    drops: IntCounterVec,
    up: IntGauge,
    interfaces: IntGauge,
    unavailable: IntGaugeVec,
}

impl DatapathMetrics {
    pub fn register(registry: &Registry) -> Self {
        let counter = |name: &str, help: &str| {
            let vec =
                IntCounterVec::new(Opts::new(name, help), &["peer", "direction"]).expect("valid metric");
            if let Err(error) = registry.register(Box::new(vec.clone())) {
                tracing::error!(%error, "metric registration failed");
            }
            vec
        };
        let up =
            IntGauge::new("x0_agent_ebpf_up", "1 while the eBPF datapath is attached").expect("valid metric");
        let interfaces = IntGauge::new(
            "x0_agent_ebpf_interfaces",
            "Interfaces the eBPF classifiers are attached to",
        )
        .expect("valid metric");
        let unavailable = IntGaugeVec::new(
            Opts::new(
                "x0_agent_ebpf_unavailable",
                "1 with the reason the eBPF datapath is not running",
            ),
            &["reason"],
        )
        .expect("valid metric");
        for collector in [
            Box::new(up.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(interfaces.clone()),
            Box::new(unavailable.clone()),
        ] {
            if let Err(error) = registry.register(collector) {
                tracing::error!(%error, "metric registration failed");
            }
        }
        DatapathMetrics {
            packets: counter(
                "x0_agent_ebpf_packets_total",
                "Mesh packets to (tx) or from (rx) a peer, counted by the eBPF datapath",
            ),
            bytes: counter("x0_agent_ebpf_bytes_total", "Mesh bytes to or from a peer (eBPF)"),
            drops: counter(
                "x0_agent_ebpf_drops_total",
                "Mesh packets to or from a peer the eBPF datapath dropped (faults)",
            ),
            up,
            interfaces,
            unavailable,
        }
    }
}

/// Turns successive cumulative readings into metric increments and link counters. Sans IO:
/// tested with the fake maps.
#[derive(Default)]
pub struct Poller {
    last: BTreeMap<(IpAddr, &'static str), PeerTraffic>,
}

impl Poller {
    /// Reads the maps once: per-peer link counters for the routing, and metric increments.
    pub fn poll(
        &mut self,
        maps: &(impl DatapathMaps + ?Sized),
        metrics: &DatapathMetrics,
    ) -> Result<Vec<(IpAddr, LinkCounters)>, DatapathError> {
        let traffic = maps.traffic()?;
        for reading in &traffic {
            let direction = reading.direction.label();
            let peer = reading.peer.to_string();
            let labels = [peer.as_str(), direction];
            let previous = self.last.insert((reading.peer, direction), *reading);
            let (packets, bytes, drops) = previous.map_or((0, 0, 0), |p| (p.packets, p.bytes, p.drops));
            // The kernel's counters only grow while the maps live; a smaller value means new maps.
            let delta = |now: u64, before: u64| now.checked_sub(before).unwrap_or(now);
            metrics
                .packets
                .with_label_values(&labels)
                .inc_by(delta(reading.packets, packets));
            metrics
                .bytes
                .with_label_values(&labels)
                .inc_by(delta(reading.bytes, bytes));
            metrics
                .drops
                .with_label_values(&labels)
                .inc_by(delta(reading.drops, drops));
        }
        let totals = totals_by_peer(&traffic);
        let counters = totals
            .iter()
            .map(|(peer, t)| {
                (
                    *peer,
                    LinkCounters {
                        tx_packets: t.tx_packets,
                        rx_packets: t.rx_packets,
                        drops: t.drops,
                    },
                )
            })
            .collect();
        *TOTALS.write().unwrap_or_else(PoisonError::into_inner) = totals;
        Ok(counters)
    }
}

/// The maps, shared by the poller and the fault endpoint (each holds the lock only briefly,
/// never across an await).
type Shared<M> = Arc<Mutex<M>>;

/// A fault request of the hand-operated endpoint (`peer=IP&drop=P&corrupt=P&partition=DIR&
/// directions=DIR&seconds=S`).
#[derive(Debug, PartialEq)]
pub struct FaultRequest {
    pub peer: IpAddr,
    pub fault: Fault,
}

/// Parses a fault request, its expiry taken from `now_ns`.
pub fn parse_fault_request(query: &str, now_ns: u64) -> Result<FaultRequest, String> {
    let mut peer = None;
    let mut fault = Fault::until(0);
    let mut seconds = 60.0f64;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let number = || {
            value
                .parse::<f64>()
                .map_err(|_| format!("{key}={value:?} is not a number"))
        };
        match key {
            "peer" => {
                peer = Some(
                    value
                        .parse::<IpAddr>()
                        .map_err(|_| format!("peer={value:?} is not an IP address"))?,
                )
            }
            "drop" => fault.drop_probability = number()?,
            "corrupt" => fault.corrupt_probability = number()?,
            "delay_ms" => fault.delay = Duration::from_secs_f64(number()?.max(0.0) / 1000.0),
            "partition" => fault.partition = value.parse()?,
            "directions" => fault.directions = value.parse()?,
            "seconds" => seconds = number()?,
            other => return Err(format!("unknown parameter {other:?}")),
        }
    }
    let peer = peer.ok_or("peer=IP is required")?;
    if !(seconds > 0.0 && seconds <= MAX_FAULT.as_secs_f64()) {
        return Err(format!("seconds must be in (0, {}]", MAX_FAULT.as_secs()));
    }
    fault.expires_at_ns = now_ns.saturating_add(Duration::from_secs_f64(seconds).as_nanos() as u64);
    Ok(FaultRequest { peer, fault })
}

#[derive(Serialize)]
struct FaultView {
    peer: String,
    drop_probability: f64,
    corrupt_probability: f64,
    delay_ms: f64,
    partition: String,
    directions: String,
    expires_in_seconds: f64,
}

#[derive(Serialize)]
struct TrafficView {
    peer: String,
    direction: &'static str,
    packets: u64,
    bytes: u64,
    drops: u64,
}

fn view(maps: &dyn DatapathMaps) -> Result<serde_json::Value, DatapathError> {
    let now = monotonic_now_ns();
    let traffic: Vec<TrafficView> = maps
        .traffic()?
        .into_iter()
        .map(|t| TrafficView {
            peer: t.peer.to_string(),
            direction: t.direction.label(),
            packets: t.packets,
            bytes: t.bytes,
            drops: t.drops,
        })
        .collect();
    let faults: Vec<FaultView> = maps
        .faults()?
        .into_iter()
        .map(|(peer, f)| FaultView {
            peer: peer.to_string(),
            drop_probability: f.drop_probability,
            corrupt_probability: f.corrupt_probability,
            delay_ms: f.delay.as_secs_f64() * 1000.0,
            partition: format!("{:?}", f.partition),
            directions: format!("{:?}", f.directions),
            expires_in_seconds: f.expires_at_ns.saturating_sub(now) as f64 / 1e9,
        })
        .collect();
    let interfaces = INTERFACES.read().unwrap_or_else(PoisonError::into_inner).clone();
    Ok(serde_json::json!({ "interfaces": interfaces, "traffic": traffic, "faults": faults }))
}

fn error_response(error: &DatapathError) -> Response {
    let status = match error {
        DatapathError::InvalidFault(_) | DatapathError::DelayUnsupported => StatusCode::BAD_REQUEST,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    (status, format!("{error}\n")).into_response()
}

async fn show<M: DatapathMaps + Send + 'static>(State(maps): State<Shared<M>>) -> Response {
    let maps = maps.lock().unwrap_or_else(PoisonError::into_inner);
    match view(&*maps) {
        Ok(body) => (
            StatusCode::OK,
            [(axum::http::header::CONTENT_TYPE, "application/json")],
            body.to_string(),
        )
            .into_response(),
        Err(error) => error_response(&error),
    }
}

async fn set_fault<M: DatapathMaps + Send + 'static>(
    State(maps): State<Shared<M>>,
    RawQuery(query): RawQuery,
) -> Response {
    let request = match parse_fault_request(query.as_deref().unwrap_or(""), monotonic_now_ns()) {
        Ok(request) => request,
        Err(message) => return (StatusCode::BAD_REQUEST, format!("{message}\n")).into_response(),
    };
    let mut maps = maps.lock().unwrap_or_else(PoisonError::into_inner);
    match maps.set_fault(request.peer, request.fault) {
        Ok(()) => {
            tracing::warn!(peer = %request.peer, fault = ?request.fault, "fault injected by hand");
            (StatusCode::OK, "fault set\n").into_response()
        }
        Err(error) => error_response(&error),
    }
}

async fn clear_fault<M: DatapathMaps + Send + 'static>(
    State(maps): State<Shared<M>>,
    RawQuery(query): RawQuery,
) -> Response {
    let peer = query
        .as_deref()
        .unwrap_or("")
        .split('&')
        .find_map(|pair| pair.strip_prefix("peer="))
        .and_then(|value| value.parse::<IpAddr>().ok());
    let Some(peer) = peer else {
        return (StatusCode::BAD_REQUEST, "peer=IP is required\n").into_response();
    };
    let mut maps = maps.lock().unwrap_or_else(PoisonError::into_inner);
    match maps.clear_fault(peer) {
        Ok(()) => {
            tracing::info!(%peer, "fault cleared by hand");
            (StatusCode::OK, "fault cleared\n").into_response()
        }
        Err(error) => error_response(&error),
    }
}

/// `/datapath` (GET) and `/datapath/faults` (POST, DELETE).
pub fn fault_api<M: DatapathMaps + Send + 'static>(maps: Shared<M>) -> Router {
    Router::new()
        .route("/datapath", get(show::<M>))
        .route(
            "/datapath/faults",
            axum::routing::post(set_fault::<M>).delete(clear_fault::<M>),
        )
        .with_state(maps)
}

/// What the agent needs to run the datapath.
pub struct DatapathSetup {
    /// `ebpfMode` is `tc`.
    pub enabled: bool,
    /// The interfaces given (`--interface`); none: those the peers are routed through.
    pub interfaces: Vec<String>,
    pub ports: Vec<u16>,
    /// Serve the fault endpoint here (loopback only).
    pub fault_api: Option<SocketAddr>,
    /// The endpoints the agent dials: their routes pick the interfaces when none are given.
    pub peers: watch::Receiver<BTreeSet<PeerEndpoint>>,
    /// Gets each reading's counters and fault map: the linkTelemetry dataset's rates and labels.
    pub telemetry: crate::fl::telemetry::SharedRecorder,
}

fn attach(setup: &DatapathSetup) -> Result<Datapath, DatapathError> {
    let mut interfaces = setup.interfaces.clone();
    interfaces.sort_unstable();
    interfaces.dedup();
    let mut ports = setup.ports.clone();
    ports.sort_unstable();
    ports.dedup();
    // With no interface given, this loads and verifies the programs (so a host without BPF is
    // found out at once) and attaches nothing until a peer's route is known.
    Datapath::attach(&DatapathConfig {
        interfaces,
        ports,
        // fq is not detected yet: delay faults are refused with the reason (see BENCHMARKS).
        edt: false,
    })
}

/// The peer addresses whose routes decide the interfaces: the endpoints dialled (IP literals;
/// a host name is resolved by the dialer at each dial, and its sessions cover it) and the
/// remote addresses of the sessions up.
pub fn peer_addresses(endpoints: &BTreeSet<PeerEndpoint>, sessions: &[IpAddr]) -> BTreeSet<IpAddr> {
    endpoints
        .iter()
        .filter_map(|endpoint| endpoint.address.parse::<SocketAddr>().ok())
        .map(|address| address.ip())
        .chain(sessions.iter().copied())
        .map(|address| address.to_canonical())
        .collect()
}

/// Attaches the datapath to the interfaces the peers are routed through, as they become known.
struct AutoInterfaces {
    peers: watch::Receiver<BTreeSet<PeerEndpoint>>,
    last_scan: Option<Instant>,
    /// Interfaces that failed to attach, so each failure is logged once, not every scan.
    failed: BTreeSet<String>,
}

impl AutoInterfaces {
    /// Looks the routes up if the peers changed or a rescan is due; true if an interface was
    /// attached.
    async fn refresh(&mut self, datapath: &Shared<Datapath>, mesh: &MeshHandle) -> bool {
        let peers_changed = self.peers.has_changed().unwrap_or(false);
        let due = self.last_scan.is_none_or(|at| at.elapsed() >= RESCAN_EVERY);
        if !peers_changed && !due {
            return false;
        }
        self.last_scan = Some(Instant::now());
        let endpoints = self.peers.borrow_and_update().clone();
        let sessions: Vec<IpAddr> = match mesh.status().await {
            Some(report) => report
                .neighbours
                .iter()
                .filter_map(|n| n.remote_address.as_deref()?.parse::<SocketAddr>().ok())
                .map(|address| address.ip())
                .collect(),
            None => Vec::new(),
        };
        let mut wanted: BTreeMap<String, IpAddr> = BTreeMap::new();
        for peer in peer_addresses(&endpoints, &sessions) {
            match route_interface(peer) {
                Ok(Some(interface)) => {
                    wanted.entry(interface).or_insert(peer);
                }
                // No route (yet), or a local address: nothing to instrument for it.
                Ok(None) => {}
                Err(error) => tracing::debug!(%peer, %error, "route lookup failed"),
            }
        }
        let mut attached = false;
        let mut datapath = datapath.lock().unwrap_or_else(PoisonError::into_inner);
        for (interface, peer) in wanted {
            match datapath.attach_interface(&interface) {
                Ok(true) => {
                    tracing::info!(%interface, %peer, "eBPF datapath attached (the route to this peer leaves here)");
                    self.failed.remove(&interface);
                    attached = true;
                }
                Ok(false) => {}
                Err(error) => {
                    if self.failed.insert(interface.clone()) {
                        tracing::warn!(%interface, %peer, %error, "cannot attach the eBPF datapath to the interface of this peer's route");
                    }
                }
            }
        }
        attached
    }
}

/// Publishes the attached interfaces: /datapath, the gauge and the condition's message.
fn publish_interfaces(interfaces: Vec<String>, metrics: &DatapathMetrics) {
    metrics
        .interfaces
        .set(i64::try_from(interfaces.len()).unwrap_or(i64::MAX));
    let message = if interfaces.is_empty() {
        "loaded; attached to no interface yet (none routes to a peer so far)".to_owned()
    } else {
        format!("tc classifiers attached to {}", interfaces.join(", "))
    };
    set_availability(false, "Loaded", message);
    *INTERFACES.write().unwrap_or_else(PoisonError::into_inner) = interfaces;
}

/// Starts the datapath if enabled; the returned task reads it until `shutdown`, then detaches.
/// Never fails the agent: an unavailable datapath is reported, not fatal.
pub async fn run(
    setup: DatapathSetup,
    metrics: DatapathMetrics,
    mesh: MeshHandle,
    shutdown: CancellationToken,
) {
    if !setup.enabled {
        set_availability(true, "Disabled", "ebpfMode is off".to_owned());
        return;
    }
    let datapath = match attach(&setup) {
        Ok(datapath) => datapath,
        Err(error) => {
            tracing::warn!(%error, reason = error.reason(), "eBPF datapath unavailable; using userspace link metrics only");
            metrics.unavailable.with_label_values(&[error.reason()]).set(1);
            set_availability(true, error.reason(), error.to_string());
            return;
        }
    };
    let interfaces = datapath.interfaces();
    tracing::info!(?interfaces, "eBPF datapath loaded");
    metrics.up.set(1);
    publish_interfaces(interfaces, &metrics);
    let maps: Shared<Datapath> = Arc::new(Mutex::new(datapath));
    let mut auto = setup.interfaces.is_empty().then(|| AutoInterfaces {
        peers: setup.peers.clone(),
        last_scan: None,
        failed: BTreeSet::new(),
    });

    let api_shutdown = shutdown.child_token();
    if let Some(address) = setup.fault_api {
        serve_fault_api(address, Arc::clone(&maps), api_shutdown.clone()).await;
    }

    let mut poller = Poller::default();
    let mut ticks = tokio::time::interval(POLL_EVERY);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            _ = ticks.tick() => {}
        }
        if let Some(auto) = auto.as_mut()
            && auto.refresh(&maps, &mesh).await
        {
            let interfaces = maps.lock().unwrap_or_else(PoisonError::into_inner).interfaces();
            publish_interfaces(interfaces, &metrics);
        }
        let counters = {
            let mut maps = maps.lock().unwrap_or_else(PoisonError::into_inner);
            if let Err(error) = maps.sweep_expired(monotonic_now_ns()) {
                tracing::warn!(%error, "could not remove expired faults");
            }
            let counters = poller.poll(&*maps, &metrics);
            if let (Ok(counters), Ok(faults)) = (&counters, maps.faults()) {
                let faults = faults
                    .into_iter()
                    .map(|(peer, fault)| (peer, fault.expires_at_ns));
                setup.telemetry.lock().observe_datapath(counters, faults);
            }
            counters
        };
        match counters {
            Ok(counters) => mesh.link_counters(counters).await,
            Err(error) => tracing::warn!(%error, "could not read the eBPF counters"),
        }
    }
    api_shutdown.cancel();
    metrics.up.set(0);
    // Dropping the datapath detaches its filters (on this thread's network namespace, the
    // agent's). The endpoint's handlers hold the maps only while serving a request.
    drop(maps);
    tracing::info!("eBPF datapath detached");
}

async fn serve_fault_api(address: SocketAddr, maps: Shared<Datapath>, shutdown: CancellationToken) {
    if !address.ip().is_loopback() {
        tracing::error!(%address, "the fault endpoint must listen on a loopback address; not serving it");
        return;
    }
    let listener = match tokio::net::TcpListener::bind(address).await {
        Ok(listener) => listener,
        Err(error) => {
            tracing::error!(%error, %address, "cannot listen for the fault endpoint");
            return;
        }
    };
    tracing::info!(%address, "serving /datapath and /datapath/faults (loopback only)");
    tokio::spawn(async move {
        let served = axum::serve(listener, fault_api(maps))
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await;
        if let Err(error) = served {
            tracing::error!(%error, "fault endpoint failed");
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use x0tta6bl4_datapath::{Direction, Directions, FakeMaps};

    fn mk_metrics() -> (Registry, DatapathMetrics) {
        let registry = Registry::new();
        let metrics = DatapathMetrics::register(&registry);
        (registry, metrics)
    }

    #[test]
    fn polling_turns_cumulative_counters_into_link_counters_and_metric_increments() {
        let (_registry, metrics) = mk_metrics();
        let peer: IpAddr = "198.18.0.2".parse().unwrap();
        let mut maps = FakeMaps::new();
        maps.record(peer, Direction::ToPeer, 70, 7000, 30);
        maps.record(peer, Direction::FromPeer, 100, 9000, 0);
        let mut poller = Poller::default();
        let counters = poller.poll(&maps, &metrics).unwrap();
        assert_eq!(
            counters,
            vec![(
                peer,
                LinkCounters {
                    tx_packets: 70,
                    rx_packets: 100,
                    drops: 30
                }
            )]
        );
        maps.record(peer, Direction::ToPeer, 5, 500, 1);
        poller.poll(&maps, &metrics).unwrap();
        let tx = metrics.packets.with_label_values(&["198.18.0.2", "tx"]).get();
        let drops = metrics.drops.with_label_values(&["198.18.0.2", "tx"]).get();
        assert_eq!(
            (tx, drops),
            (75, 31),
            "counters follow the totals, not the sum of readings"
        );
        assert_eq!(peer_totals(peer).map(|t| t.rx_packets), Some(100));
    }

    #[test]
    fn the_routing_cost_moves_when_loss_is_injected() {
        // The same arithmetic the router applies to two readings (see routing's metric.rs):
        // 30% of the packets dropped since the last reading raise the link's cost.
        use x0tta6bl4_routing::{LinkQuality, MetricWeights};
        let (_registry, metrics) = mk_metrics();
        let peer: IpAddr = "198.18.0.9".parse().unwrap();
        let mut maps = FakeMaps::new();
        let mut poller = Poller::default();
        maps.record(peer, Direction::ToPeer, 100, 0, 0);
        let before = poller.poll(&maps, &metrics).unwrap()[0].1;
        maps.record(peer, Direction::ToPeer, 70, 0, 30);
        let after = poller.poll(&maps, &metrics).unwrap()[0].1;
        let dropped = after.drops - before.drops;
        let total = (after.tx_packets + after.rx_packets + after.drops)
            - (before.tx_packets + before.rx_packets + before.drops);
        let quality = LinkQuality {
            drop_percent: (dropped * 100 / total) as u32,
            ..LinkQuality::default()
        };
        let clean = LinkQuality::default().cost(&MetricWeights::default());
        assert_eq!(quality.drop_percent, 30);
        assert!(quality.cost(&MetricWeights::default()) > clean);
    }

    #[test]
    fn the_interfaces_follow_the_dialled_ip_endpoints_and_the_sessions() {
        let endpoints: BTreeSet<PeerEndpoint> = [
            "198.18.251.2:7946",
            "[::ffff:198.18.251.3]:7946",
            "[2001:db8::5]:7946",
            "agent-4.example:7946",
            "198.18.251.2:7947",
        ]
        .into_iter()
        .map(PeerEndpoint::address)
        .collect();
        let sessions = ["198.18.251.9".parse().unwrap(), "198.18.251.2".parse().unwrap()];
        let addresses: Vec<String> = peer_addresses(&endpoints, &sessions)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            addresses,
            ["198.18.251.2", "198.18.251.3", "198.18.251.9", "2001:db8::5"],
            "IPv4-mapped as IPv4, one entry per address, host names left to their sessions"
        );
    }

    #[test]
    fn a_fault_request_is_parsed_with_its_expiry() {
        let request = parse_fault_request("peer=198.18.0.2&drop=0.3&seconds=2", 1_000).unwrap();
        assert_eq!(request.peer, "198.18.0.2".parse::<IpAddr>().unwrap());
        assert_eq!(request.fault.drop_probability, 0.3);
        assert_eq!(request.fault.expires_at_ns, 1_000 + 2_000_000_000);
        let partition = parse_fault_request("peer=::1&partition=to-peer", 0).unwrap();
        assert_eq!(partition.fault.partition, Directions::TO_PEER);
        assert!(parse_fault_request("drop=0.3", 0).is_err(), "a peer is required");
        assert!(parse_fault_request("peer=198.18.0.2&seconds=99999", 0).is_err());
        assert!(parse_fault_request("peer=198.18.0.2&bogus=1", 0).is_err());
    }

    #[test]
    fn a_parsed_request_sets_a_fault_the_fake_holds_and_invalid_ones_are_refused() {
        let mut maps = FakeMaps::new();
        let request = parse_fault_request("peer=198.18.0.2&drop=0.3&seconds=5", 10).unwrap();
        maps.set_fault(request.peer, request.fault).unwrap();
        assert_eq!(maps.faults().unwrap().len(), 1);
        let delayed = parse_fault_request("peer=198.18.0.2&delay_ms=20", 10).unwrap();
        assert!(matches!(
            maps.set_fault(delayed.peer, delayed.fault),
            Err(DatapathError::DelayUnsupported)
        ));
        let view = view(&maps).unwrap();
        assert_eq!(view["faults"][0]["peer"], "198.18.0.2");
    }

    #[test]
    fn the_condition_keeps_its_transition_time_until_the_status_flips() {
        set_availability(true, "NotPermitted", "no CAP_BPF".to_owned());
        let first = condition_json().unwrap();
        assert_eq!(first["status"], "True");
        assert_eq!(first["reason"], "NotPermitted");
        set_availability(true, "KernelUnsupported", "old kernel".to_owned());
        let second = condition_json().unwrap();
        assert_eq!(second["lastTransitionTime"], first["lastTransitionTime"]);
        assert_eq!(second["reason"], "KernelUnsupported");
    }
}
