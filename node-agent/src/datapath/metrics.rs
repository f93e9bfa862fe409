//! The datapath's Prometheus series, in the agent's registry. The per-peer counters carry the
//! peer's address (`peer`, as the kernel counts) and its node name (`peer_node`).
use prometheus::{IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};

/// The series.
#[derive(Clone)]
pub struct DatapathMetrics {
    pub(super) packets: IntCounterVec,
    pub(super) bytes: IntCounterVec,
    pub(super) drops: IntCounterVec,
    pub(super) up: IntGauge,
    pub(super) interfaces: IntGauge,
    pub(super) unavailable: IntGaugeVec,
}

impl DatapathMetrics {
    /// Removes the series of one peer address, node and direction.
    pub(super) fn remove(&self, peer: std::net::IpAddr, node: &str, direction: &str) {
        let peer = peer.to_string();
        let labels = [peer.as_str(), node, direction];
        let _ = self.packets.remove_label_values(&labels);
        let _ = self.bytes.remove_label_values(&labels);
        let _ = self.drops.remove_label_values(&labels);
    }

    pub fn register(registry: &Registry) -> Self {
        let counter = |name: &str, help: &str| {
            let vec = IntCounterVec::new(Opts::new(name, help), &["peer", "peer_node", "direction"])
                .expect("valid metric");
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
