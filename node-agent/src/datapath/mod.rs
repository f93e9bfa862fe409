//! The eBPF datapath in the agent (`ebpfMode: tc`): attaches the classifiers to the interfaces
//! that carry the mesh traffic, reads their per-peer counters every second, feeds them to the
//! routing's link metric (through the mesh actor), to Prometheus and to the MeshNode record, and
//! holds in the kernel's fault map what the chaos executor plans (`crate::chaos`).
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
//! With `--fault-api 127.0.0.1:PORT` the agent serves, on that loopback address, the kernel's
//! counters and fault map (`GET /datapath`, JSON) beside the faults set by hand
//! (`/chaos/faults`, see `crate::chaos::by_hand`).
mod endpoint;
mod faults;
mod interfaces;
mod metrics;
mod poller;
mod state;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::Router;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use x0tta6bl4_datapath::{Datapath, DatapathConfig, DatapathError, DatapathMaps, monotonic_now_ns};

pub use endpoint::inspection;
pub use faults::reconcile_faults;
pub use interfaces::peer_addresses;
pub use metrics::DatapathMetrics;
pub use poller::Poller;
pub use state::{Availability, DatapathState};

use crate::chaos::{DatapathAck, DatapathPort};
use crate::clock::unix_micros;
use crate::mesh::MeshHandle;
use crate::peers::PeerEndpoint;
use endpoint::{Shared, serve_endpoint, unavailable_inspection};
use interfaces::{AutoInterfaces, publish_interfaces};

/// How often the counters are read and fed to the link metric.
pub const POLL_EVERY: Duration = Duration::from_secs(1);

/// What the agent needs to run the datapath.
pub struct DatapathSetup {
    /// `ebpfMode` is `tc`.
    pub enabled: bool,
    /// The interfaces given (`--interface`); none: those the peers are routed through.
    pub interfaces: Vec<String>,
    pub ports: Vec<u16>,
    /// The fault endpoint (`--fault-api`): its address (loopback only) and the routes of the
    /// faults set by hand; the datapath adds `GET /datapath`.
    pub endpoint: Option<(SocketAddr, Router)>,
    /// The endpoints the agent dials: their routes pick the interfaces when none are given.
    pub peers: watch::Receiver<BTreeSet<PeerEndpoint>>,
    /// Gets each reading's counters and fault map: the linkTelemetry dataset's rates and labels.
    pub telemetry: crate::links::SharedRecorder,
    /// The chaos executor's plan of kernel fault entries, and what the datapath holds of it.
    pub chaos: Option<DatapathPort>,
    /// Where the datapath says whether it runs, its totals and interfaces.
    pub state: DatapathState,
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

/// Starts the datapath if enabled; the returned task reads it until `shutdown`, then detaches.
/// Never fails the agent: an unavailable datapath is reported, not fatal.
pub async fn run(
    mut setup: DatapathSetup,
    metrics: DatapathMetrics,
    mesh: MeshHandle,
    shutdown: CancellationToken,
) {
    let mut chaos = setup.chaos.take();
    let state = setup.state.clone();
    let endpoint = setup.endpoint.take();
    let api_shutdown = shutdown.child_token();
    let unavailable = |chaos: Option<DatapathPort>, why: String| {
        if let Some((address, routes)) = endpoint.clone() {
            let routes = routes.merge(unavailable_inspection(why.clone()));
            let shutdown = shutdown.clone();
            tokio::spawn(async move { serve_endpoint(address, routes, shutdown).await });
        }
        if let Some(port) = chaos {
            port.ack.send_replace(DatapathAck {
                ready: true,
                unavailable: Some(why),
                ..DatapathAck::default()
            });
        }
    };
    if !setup.enabled {
        state.set_availability(true, "Disabled", "ebpfMode is off".to_owned());
        unavailable(chaos, "ebpfMode is off".to_owned());
        return;
    }
    let datapath = match attach(&setup) {
        Ok(datapath) => datapath,
        Err(error) => {
            tracing::warn!(%error, reason = error.reason(), "eBPF datapath unavailable; using userspace link metrics only");
            metrics.unavailable.with_label_values(&[error.reason()]).set(1);
            state.set_availability(true, error.reason(), error.to_string());
            unavailable(chaos, format!("{}: {error}", error.reason()));
            return;
        }
    };
    let interfaces = datapath.interfaces();
    tracing::info!(?interfaces, "eBPF datapath loaded");
    metrics.up.set(1);
    publish_interfaces(interfaces, &metrics, &state);
    let maps: Shared<Datapath> = Arc::new(Mutex::new(datapath));
    let mut auto = setup
        .interfaces
        .is_empty()
        .then(|| AutoInterfaces::new(setup.peers.clone()));

    if let Some((address, routes)) = endpoint {
        let routes = routes.merge(inspection(Arc::clone(&maps), state.clone()));
        tokio::spawn(serve_endpoint(address, routes, api_shutdown.clone()));
    }

    let mut poller = Poller::new(state.clone());
    let mut ticks = tokio::time::interval(POLL_EVERY);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut owned = BTreeSet::new();
    loop {
        let plan_changed = async {
            match chaos.as_mut() {
                Some(port) => {
                    if port.plan.changed().await.is_err() {
                        std::future::pending::<()>().await;
                    }
                }
                None => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            () = shutdown.cancelled() => break,
            _ = ticks.tick() => {}
            () = plan_changed => {
                // A new plan goes into the kernel at once; counters wait for the next tick.
                if let Some(port) = chaos.as_mut() {
                    let plan = port.plan.borrow_and_update().clone();
                    let mut maps = maps.lock().unwrap_or_else(PoisonError::into_inner);
                    let ack = reconcile_faults(&mut *maps, &plan, &mut owned, monotonic_now_ns(), unix_micros());
                    port.ack.send_replace(ack);
                }
                continue;
            }
        }
        if let Some(port) = chaos.as_mut() {
            let plan = port.plan.borrow_and_update().clone();
            let mut maps = maps.lock().unwrap_or_else(PoisonError::into_inner);
            let ack = reconcile_faults(&mut *maps, &plan, &mut owned, monotonic_now_ns(), unix_micros());
            port.ack.send_if_modified(|held| {
                let changed = *held != ack;
                *held = ack;
                changed
            });
        }
        if let Some(auto) = auto.as_mut()
            && auto.refresh(&maps, &mesh).await
        {
            let interfaces = maps.lock().unwrap_or_else(PoisonError::into_inner).interfaces();
            publish_interfaces(interfaces, &metrics, &state);
        }
        // The series name the peers by node: the mesh's sessions say which is at an address.
        let names = mesh.peer_names().await;
        let counters = {
            let mut maps = maps.lock().unwrap_or_else(PoisonError::into_inner);
            if let Err(error) = maps.sweep_expired(monotonic_now_ns()) {
                tracing::warn!(%error, "could not remove expired faults");
            }
            let counters = poller.poll(&*maps, &metrics, &names);
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
