//! The knobs of one node's routing.

use std::time::Duration;

use crate::{LinkQuality, MetricWeights};

/// Routing configuration of one node; [`Default`] gives the documented defaults. Intervals
/// shorter than 1 ms are raised to 1 ms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouterConfig {
    /// How often a hello goes to each neighbour. Default 100 ms. Also the minimum gap between
    /// two advertisements triggered by neighbour changes.
    pub hello_interval: Duration,
    /// A neighbour not heard for this long is dead. Default 300 ms (3 missed hellos).
    pub neighbour_timeout: Duration,
    /// How often this node advertises itself (an originator message) when nothing changes.
    /// Default 1 s. Bounds how long a node with no feasible route waits for a newer sequence
    /// number (see the crate documentation).
    pub originator_interval: Duration,
    /// A route not refreshed by an advertisement for this long is dropped. Default 4 s
    /// (four originator intervals).
    pub route_expiry: Duration,
    /// Advertisements that travelled more hops are dropped, and none is forwarded past it.
    /// Default 128 (a 2000-node grid is about 90 hops across).
    pub max_hops: u8,
    /// Weights of loss, RTT and eBPF drops in the link cost.
    pub weights: MetricWeights,
    /// How many verified `(originator, seq)` are remembered to drop duplicates without
    /// verifying them. Default 8192 (eight rounds of advertisements of a 1000-node mesh).
    pub dedup_cache_size: usize,
    /// Where this node accepts neighbour sessions (`host:port`, at most 255 bytes), carried in
    /// its advertisements.
    pub endpoint: String,
    /// Misbehaviour, for chaos experiments only (action `falseMetric`): use and advertise this
    /// share, in percent, of the cost measured on every live link (a peer that understates its
    /// link metric to attract traffic). `None` in production.
    pub false_metric_percent: Option<u32>,
    /// The least time between two updates of one destination under the same sequence number
    /// (another next hop at no higher metric, or a metric lower by more than an eighth; a
    /// higher one waits for the next sequence number). Default 1 s. A newer sequence number
    /// and a retraction are sent at once, whatever the gap.
    pub update_gap: Duration,
    /// Ask for a newer sequence number when a route is lost and only unfeasible offers are
    /// left, instead of waiting for the destination's next advertisement. Default on; off
    /// only to measure what the requests save (the simulator's baseline).
    pub seqno_requests: bool,
}

impl RouterConfig {
    /// The cost this node uses and advertises for a link of `quality`.
    pub(crate) fn link_cost(&self, quality: &LinkQuality) -> u32 {
        let measured = quality.cost(&self.weights);
        match self.false_metric_percent {
            Some(percent) => {
                let claimed = u64::from(measured) * u64::from(percent) / 100;
                u32::try_from(claimed).unwrap_or(u32::MAX).max(1)
            }
            None => measured,
        }
    }
}

impl Default for RouterConfig {
    fn default() -> Self {
        RouterConfig {
            hello_interval: Duration::from_millis(100),
            neighbour_timeout: Duration::from_millis(300),
            originator_interval: Duration::from_secs(1),
            route_expiry: Duration::from_secs(4),
            max_hops: 128,
            weights: MetricWeights::default(),
            dedup_cache_size: 8192,
            endpoint: String::new(),
            false_metric_percent: None,
            seqno_requests: true,
            update_gap: Duration::from_secs(1),
        }
    }
}
