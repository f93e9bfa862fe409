//! Turns the kernel's cumulative counters into the routing's link counters and metric
//! increments. The series carry the peer's address and its node name (`peer_node`, from the
//! mesh's sessions), and exist while a session names the address: a peer without a session
//! has none (its traffic is kept and shown when a session names it), a gone peer's are removed.
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use x0tta6bl4_datapath::{DatapathError, DatapathMaps, PeerTraffic, totals_by_peer};
use x0tta6bl4_routing::LinkCounters;

use super::metrics::DatapathMetrics;
use super::state::DatapathState;

/// One peer address and direction as counted by this agent.
#[derive(Debug, Default)]
struct Counted {
    /// Counted since the agent started (or since another node took the address).
    packets: u64,
    bytes: u64,
    drops: u64,
    /// The node name the series carry now (none: no series).
    labelled: Option<String>,
    /// The node last seen at this address, kept while its session is down.
    last_node: Option<String>,
}

/// Turns successive cumulative readings into metric increments and link counters. Sans IO:
/// tested with the fake maps.
pub struct Poller {
    last: BTreeMap<(IpAddr, &'static str), PeerTraffic>,
    counted: BTreeMap<(IpAddr, &'static str), Counted>,
    /// Gets each reading's per-peer totals, for the MeshNode record.
    state: DatapathState,
}

impl Poller {
    pub fn new(state: DatapathState) -> Self {
        Poller {
            last: BTreeMap::new(),
            counted: BTreeMap::new(),
            state,
        }
    }

    /// Reads the maps once: per-peer link counters for the routing, and metric increments on
    /// the series of the peers `names` names (node names by canonical address).
    pub fn poll(
        &mut self,
        maps: &(impl DatapathMaps + ?Sized),
        metrics: &DatapathMetrics,
        names: &BTreeMap<IpAddr, String>,
    ) -> Result<Vec<(IpAddr, LinkCounters)>, DatapathError> {
        let traffic = maps.traffic()?;
        let mut seen = BTreeSet::new();
        for reading in &traffic {
            let direction = reading.direction.label();
            let previous = self.last.insert((reading.peer, direction), *reading);
            let (packets, bytes, drops) = previous.map_or((0, 0, 0), |p| (p.packets, p.bytes, p.drops));
            // The kernel's counters only grow while the maps live; a smaller value means new maps.
            let delta = |now: u64, before: u64| now.checked_sub(before).unwrap_or(now);
            let deltas = (
                delta(reading.packets, packets),
                delta(reading.bytes, bytes),
                delta(reading.drops, drops),
            );
            seen.insert((reading.peer, direction));
            let name = names.get(&reading.peer.to_canonical());
            let counted = self.counted.entry((reading.peer, direction)).or_default();
            count(counted, reading.peer, direction, name, deltas, metrics);
        }
        // An address gone from the maps: its series go too.
        self.counted.retain(|(peer, direction), counted| {
            let keep = seen.contains(&(*peer, *direction));
            if !keep && let Some(node) = counted.labelled.take() {
                metrics.remove(*peer, &node, direction);
            }
            keep
        });
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
        self.state.set_totals(totals);
        Ok(counters)
    }
}

/// Adds one reading's increments to what `counted` holds, and to the series of the node now at
/// the address: the same node's series grow by the increments; a node newly named gets a
/// series with all that was counted for it; one no longer named loses its series.
fn count(
    counted: &mut Counted,
    peer: IpAddr,
    direction: &str,
    name: Option<&String>,
    (packets, bytes, drops): (u64, u64, u64),
    metrics: &DatapathMetrics,
) {
    if let Some(name) = name
        && counted.last_node.as_ref().is_some_and(|last| last != name)
    {
        // Another node at this address: what was counted was not its traffic.
        counted.packets = 0;
        counted.bytes = 0;
        counted.drops = 0;
    }
    counted.packets = counted.packets.saturating_add(packets);
    counted.bytes = counted.bytes.saturating_add(bytes);
    counted.drops = counted.drops.saturating_add(drops);
    let peer_label = peer.to_string();
    let (add_packets, add_bytes, add_drops) = match (&counted.labelled, name) {
        (Some(held), Some(name)) if held == name => (packets, bytes, drops),
        (held, _) => {
            if let Some(held) = held {
                metrics.remove(peer, held, direction);
            }
            (counted.packets, counted.bytes, counted.drops)
        }
    };
    counted.labelled = name.cloned();
    if let Some(name) = name {
        counted.last_node = Some(name.clone());
        let labels = [peer_label.as_str(), name.as_str(), direction];
        metrics.packets.with_label_values(&labels).inc_by(add_packets);
        metrics.bytes.with_label_values(&labels).inc_by(add_bytes);
        metrics.drops.with_label_values(&labels).inc_by(add_drops);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus::Registry;
    use x0tta6bl4_datapath::{Direction, FakeMaps};

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
        let state = DatapathState::default();
        let mut poller = Poller::new(state.clone());
        let names = BTreeMap::from([(peer, "node-2".to_owned())]);
        let counters = poller.poll(&maps, &metrics, &names).unwrap();
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
        poller.poll(&maps, &metrics, &names).unwrap();
        let tx = metrics
            .packets
            .with_label_values(&["198.18.0.2", "node-2", "tx"])
            .get();
        let drops = metrics
            .drops
            .with_label_values(&["198.18.0.2", "node-2", "tx"])
            .get();
        assert_eq!(
            (tx, drops),
            (75, 31),
            "counters follow the totals, not the sum of readings"
        );
        assert_eq!(state.peer_totals(peer).map(|t| t.rx_packets), Some(100));
    }

    /// The `x0_agent_ebpf_packets_total` samples: (peer, peer_node, direction) -> value.
    fn packet_series(registry: &Registry) -> BTreeMap<(String, String, String), f64> {
        let mut series = BTreeMap::new();
        for family in registry.gather() {
            if family.name() != "x0_agent_ebpf_packets_total" {
                continue;
            }
            for metric in family.get_metric() {
                let label = |name: &str| {
                    metric
                        .get_label()
                        .iter()
                        .find(|pair| pair.name() == name)
                        .map(|pair| pair.value().to_owned())
                        .unwrap_or_default()
                };
                series.insert(
                    (label("peer"), label("peer_node"), label("direction")),
                    metric.get_counter().get_value(),
                );
            }
        }
        series
    }

    fn key(peer: &str, node: &str, direction: &str) -> (String, String, String) {
        (peer.to_owned(), node.to_owned(), direction.to_owned())
    }

    #[test]
    fn the_series_carry_the_node_at_the_address_and_go_with_its_session() {
        let (registry, metrics) = mk_metrics();
        let peer: IpAddr = "198.18.0.2".parse().unwrap();
        let mut maps = FakeMaps::new();
        let mut poller = Poller::new(DatapathState::default());
        let named = |node: &str| BTreeMap::from([(peer, node.to_owned())]);

        // Handshake traffic before the session: counted, not shown (no node to join on).
        maps.record(peer, Direction::ToPeer, 3, 300, 0);
        poller.poll(&maps, &metrics, &BTreeMap::new()).unwrap();
        assert!(packet_series(&registry).is_empty());

        // The session names the address: the series shows all that was counted.
        maps.record(peer, Direction::ToPeer, 7, 700, 0);
        poller.poll(&maps, &metrics, &named("node-2")).unwrap();
        assert_eq!(
            packet_series(&registry),
            BTreeMap::from([(key("198.18.0.2", "node-2", "tx"), 10.0)])
        );

        // The session goes: so does the series; the same node back continues its count.
        maps.record(peer, Direction::ToPeer, 5, 500, 0);
        poller.poll(&maps, &metrics, &BTreeMap::new()).unwrap();
        assert!(packet_series(&registry).is_empty(), "no stale series");
        maps.record(peer, Direction::ToPeer, 1, 100, 0);
        poller.poll(&maps, &metrics, &named("node-2")).unwrap();
        assert_eq!(
            packet_series(&registry),
            BTreeMap::from([(key("198.18.0.2", "node-2", "tx"), 16.0)])
        );

        // Another node at the address starts from its own traffic, and the first one's series
        // is gone.
        maps.record(peer, Direction::ToPeer, 2, 200, 0);
        poller.poll(&maps, &metrics, &named("node-9")).unwrap();
        assert_eq!(
            packet_series(&registry),
            BTreeMap::from([(key("198.18.0.2", "node-9", "tx"), 2.0)])
        );
    }

    #[test]
    fn an_address_gone_from_the_maps_loses_its_series() {
        let (registry, metrics) = mk_metrics();
        let (one, two): (IpAddr, IpAddr) = ("198.18.0.2".parse().unwrap(), "198.18.0.3".parse().unwrap());
        let names = BTreeMap::from([(one, "node-2".to_owned()), (two, "node-3".to_owned())]);
        let mut poller = Poller::new(DatapathState::default());
        let mut maps = FakeMaps::new();
        maps.record(one, Direction::FromPeer, 4, 400, 0);
        maps.record(two, Direction::FromPeer, 6, 600, 0);
        poller.poll(&maps, &metrics, &names).unwrap();
        assert_eq!(packet_series(&registry).len(), 2);
        let mut fresh = FakeMaps::new();
        fresh.record(two, Direction::FromPeer, 3, 300, 0);
        poller.poll(&fresh, &metrics, &names).unwrap();
        assert_eq!(
            packet_series(&registry),
            BTreeMap::from([(key("198.18.0.3", "node-3", "rx"), 9.0)]),
            "node-2's series removed; node-3's adds the new maps' 3 packets (a reset) to its 6"
        );
    }

    #[test]
    fn the_routing_cost_moves_when_loss_is_injected() {
        // The same arithmetic the router applies to two readings (see routing's metric.rs):
        // 30% of the packets dropped since the last reading raise the link's cost.
        use x0tta6bl4_routing::{LinkQuality, MetricWeights};
        let (_registry, metrics) = mk_metrics();
        let peer: IpAddr = "198.18.0.9".parse().unwrap();
        let mut maps = FakeMaps::new();
        let mut poller = Poller::new(DatapathState::default());
        maps.record(peer, Direction::ToPeer, 100, 0, 0);
        let before = poller.poll(&maps, &metrics, &BTreeMap::new()).unwrap()[0].1;
        maps.record(peer, Direction::ToPeer, 70, 0, 30);
        let after = poller.poll(&maps, &metrics, &BTreeMap::new()).unwrap()[0].1;
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
}
