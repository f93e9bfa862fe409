//! The channels between the chaos executor and what carries its faults out (the eBPF
//! datapath, the mesh's send path, the FL participant, the fault endpoint), made in one place
//! so that each side gets only its own end; and the executor each run mode starts.
use std::net::SocketAddr;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::chaos::behaviour::BehaviourLines;
use crate::chaos::by_hand::{self, HandFaults};
use crate::chaos::plan::FaultPlan;
use crate::chaos::{ChaosLinks, ChaosMetrics, DatapathAck, DatapathPort, Reports};
use crate::datapath::DatapathState;
use crate::mesh::MeshHandle;
use crate::mesh::send_delay::DelayLine;

/// Every link, before each end goes to its owner.
pub struct ChaosWiring {
    pub executor: ChaosLinks,
    /// The datapath's end of the kernel fault plan.
    pub datapath: DatapathPort,
    /// The fault endpoint (`--fault-api`): its address and routes, served by the datapath.
    pub fault_endpoint: Option<(SocketAddr, axum::Router)>,
    /// Forged-update requests from the fault endpoint (test builds), answered by the FL
    /// participant.
    pub forgery_requests: crate::test_faults::ForgeryRequests,
}

impl ChaosWiring {
    pub fn new(
        fault_api: Option<SocketAddr>,
        behaviour: BehaviourLines,
        registry: &prometheus::Registry,
    ) -> Self {
        let (plan, plan_receiver) = watch::channel(FaultPlan::default());
        let (ack_sender, ack) = watch::channel(DatapathAck::default());
        let (by_hand, _) = watch::channel(HandFaults::new());
        #[cfg(feature = "test-faults")]
        let (forgeries, forgery_requests) = tokio::sync::mpsc::channel(8);
        #[cfg(not(feature = "test-faults"))]
        let forgery_requests = crate::test_faults::ForgeryRequests;
        let fault_endpoint = fault_api.map(|address| {
            let routes = by_hand::routes(by_hand::Endpoint {
                faults: by_hand.clone(),
                plan: plan.subscribe(),
                ack: ack.clone(),
            });
            #[cfg(feature = "test-faults")]
            let routes = routes.merge(crate::test_faults::forgery::routes(forgeries));
            (address, routes)
        });
        ChaosWiring {
            executor: ChaosLinks {
                plan,
                ack,
                delays: DelayLine::default(),
                reports: Reports::new(Vec::new()),
                metrics: ChaosMetrics::register(registry),
                by_hand,
                behaviour,
            },
            datapath: DatapathPort {
                plan: plan_receiver,
                ack: ack_sender,
            },
            fault_endpoint,
            forgery_requests,
        }
    }
}

/// What a run mode's executor gets once the mesh runs.
pub struct Running {
    pub mesh: MeshHandle,
    /// The trust store and the identity in use, for the mesh's revocation list.
    pub trust: std::sync::Arc<std::sync::RwLock<x0tta6bl4_crypto::endorsement::TrustStore>>,
    pub identity: crate::identity::CurrentIdentity,
    /// Key rotation's wake-up when this agent's key is revoked.
    pub rotate_now: std::sync::Arc<tokio::sync::Notify>,
    pub registry: prometheus::Registry,
    pub shutdown: CancellationToken,
    pub chaos: ChaosLinks,
    /// The datapath's state, for the MeshNode record.
    pub datapath: DatapathState,
    /// This agent's SVID (meshes that take identities from SPIFFE), for the MeshNode record.
    pub svid: Option<std::sync::Arc<x0tta6bl4_session::svid::SvidCredentials>>,
}

/// Without a cluster, the chaos executor carries out only the faults set by hand.
pub fn standalone(node: String) -> impl FnOnce(Running) {
    move |Running { shutdown, chaos, .. }| {
        tokio::spawn(crate::chaos::run_standalone(
            node,
            chaos.plan,
            chaos.delays,
            chaos.by_hand,
            shutdown,
        ));
    }
}

/// Where the agent's MeshNode record is, in a cluster.
pub struct ClusterRecord {
    pub client: kube::Client,
    pub namespace: String,
    pub mesh: String,
    pub node: String,
    pub trust_domain: String,
}

/// In a cluster, the executor watches the mesh's experiments, and the agent's reports (the
/// executor's among them) go to its MeshNode record.
pub fn in_cluster(record: ClusterRecord) -> impl FnOnce(Running) {
    move |Running {
              mesh,
              trust,
              identity,
              rotate_now,
              registry,
              shutdown,
              chaos,
              datapath,
              svid,
          }| {
        let name = crate::kube_source::record_name(&record.mesh, &record.node);
        // The mesh's revoked keys, from the list the operator signs into the MeshNetwork.
        let (serial, revocation_serial) = watch::channel(None);
        tokio::spawn(
            crate::revocations::Follower {
                client: record.client.clone(),
                namespace: record.namespace.clone(),
                mesh: record.mesh.clone(),
                trust,
                identity,
                mesh_handle: mesh.clone(),
                rotate_now,
                serial,
                metrics: crate::revocations::RevocationMetrics::register(&registry),
            }
            .run(shutdown.clone()),
        );
        let reports = chaos.reports.subscribe();
        tokio::spawn(crate::chaos::run(
            crate::chaos::ChaosSetup {
                client: record.client.clone(),
                namespace: record.namespace.clone(),
                mesh: record.mesh,
                node: record.node,
                trust_domain: record.trust_domain,
                record: name.clone(),
                mesh_handle: mesh.clone(),
                links: chaos,
            },
            shutdown.clone(),
        ));
        crate::kube_source::start_reporting(
            record.client,
            record.namespace,
            name,
            mesh,
            crate::kube_source::RecordSources {
                chaos: reports,
                datapath,
                svid,
                revocation_serial,
            },
            shutdown,
        )
    }
}
