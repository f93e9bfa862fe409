//! Link quality from what hellos reveal (loss from sequence gaps, RTT from echoes) and from
//! the eBPF counters, folded into one additive cost.

use std::time::Duration;

/// The cost of a dead link, and of a route through one; never selected.
pub const INFINITY: u32 = u32::MAX;
/// The cost of a perfect link: one hop. Weighted penalties are added to it.
pub const BASE_LINK_COST: u32 = 256;

/// How many hello sequence numbers the loss estimate looks back over.
const LOSS_WINDOW: u32 = 64;
/// How many of our own sent hellos are remembered to match echoes against.
const SENT_HISTORY: usize = 16;
/// How many recent round-trip samples the least one is taken over (3.2 s of 100 ms hellos).
const RTT_MIN_WINDOW: usize = 32;

/// Penalty weights of the link cost: `cost = 256 + loss × loss% + rtt × RTT ms + drops × drop%`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetricWeights {
    /// Per percent of hellos lost.
    pub loss: u32,
    /// Per millisecond of round-trip time.
    pub rtt: u32,
    /// Per percent of packets the eBPF programs saw dropped on the link.
    pub drops: u32,
}

impl Default for MetricWeights {
    /// 10% loss, 16 ms of RTT or 10% drops each cost about one extra hop (256).
    fn default() -> Self {
        MetricWeights {
            loss: 24,
            rtt: 16,
            drops: 24,
        }
    }
}

/// Cumulative packet counters of one link, read from the eBPF maps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LinkCounters {
    /// Packets sent to the peer.
    pub tx_packets: u64,
    /// Packets received from the peer.
    pub rx_packets: u64,
    /// Packets to or from the peer that were dropped.
    pub drops: u64,
}

/// What one link looks like now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LinkQuality {
    /// Share of the peer's recent hellos that never arrived, in percent.
    pub loss_percent: u32,
    /// Smoothed round-trip time, once one echo came back.
    pub rtt: Option<Duration>,
    /// The least round-trip time of the recent echoes: the path's own delay, which queueing
    /// and TCP's retransmissions under loss only add to (not part of the cost).
    pub rtt_min: Option<Duration>,
    /// Share of packets dropped between the last two counter readings, in percent.
    pub drop_percent: u32,
}

impl LinkQuality {
    /// The additive cost of the link: saturating, and always below [`INFINITY`] (which only a
    /// dead link has).
    pub fn cost(&self, weights: &MetricWeights) -> u32 {
        let rtt_micros = self
            .rtt
            .map_or(0, |rtt| u64::try_from(rtt.as_micros()).unwrap_or(u64::MAX));
        let penalty = u64::from(weights.loss)
            .saturating_mul(u64::from(self.loss_percent))
            .saturating_add(u64::from(weights.rtt).saturating_mul(rtt_micros) / 1000)
            .saturating_add(u64::from(weights.drops).saturating_mul(u64::from(self.drop_percent)));
        let cost = u64::from(BASE_LINK_COST).saturating_add(penalty);
        u32::try_from(cost).unwrap_or(INFINITY).min(INFINITY - 1)
    }
}

/// The measurements of one neighbour link.
#[derive(Debug, Clone, Default)]
pub(crate) struct LinkMetric {
    /// Highest hello seq received, and since when the window has been filling.
    highest_seq: Option<u32>,
    first_seq: u32,
    /// Bit `i` set: hello `highest_seq - i` arrived.
    received: u64,
    /// `(seq, sent at)` of our last hellos on this link, to time their echoes.
    sent: [(u32, Duration); SENT_HISTORY],
    next_sent_slot: usize,
    rtt_ewma_micros: Option<u64>,
    /// The last round-trip samples, µs (0: none yet), for the least of them.
    rtt_recent: [u64; RTT_MIN_WINDOW],
    next_rtt_slot: usize,
    counters: Option<LinkCounters>,
    drop_percent: u32,
}

impl LinkMetric {
    pub(crate) fn quality(&self) -> LinkQuality {
        LinkQuality {
            loss_percent: self.loss_percent(),
            rtt: self.rtt_ewma_micros.map(Duration::from_micros),
            rtt_min: self
                .rtt_recent
                .iter()
                .filter(|sample| **sample > 0)
                .min()
                .map(|least| Duration::from_micros(*least)),
            drop_percent: self.drop_percent,
        }
    }

    fn loss_percent(&self) -> u32 {
        let Some(highest) = self.highest_seq else { return 0 };
        let expected = highest
            .wrapping_sub(self.first_seq)
            .saturating_add(1)
            .min(LOSS_WINDOW);
        let mask = if expected >= 64 {
            u64::MAX
        } else {
            (1u64 << expected) - 1
        };
        let received = (self.received & mask).count_ones();
        expected.saturating_sub(received) * 100 / expected.max(1)
    }

    /// Records the arrival of the peer's hello `seq` (the peer numbers its hellos on this
    /// session from 1; a jump far back means it started counting again).
    pub(crate) fn on_hello_received(&mut self, seq: u32) {
        match self.highest_seq {
            Some(highest) if seq > highest => {
                let shift = seq - highest;
                self.received = if shift >= 64 { 0 } else { self.received << shift };
                self.received |= 1;
                self.highest_seq = Some(seq);
            }
            Some(highest) if highest - seq < LOSS_WINDOW => {
                self.received |= 1u64 << (highest - seq);
            }
            _ => {
                self.highest_seq = Some(seq);
                self.first_seq = seq;
                self.received = 1;
            }
        }
    }

    pub(crate) fn on_hello_sent(&mut self, seq: u32, now: Duration) {
        if let Some(slot) = self.sent.get_mut(self.next_sent_slot) {
            *slot = (seq, now);
        }
        self.next_sent_slot = (self.next_sent_slot + 1) % SENT_HISTORY;
    }

    /// The peer echoed our hello `echo_seq` after holding it for `held`: one RTT sample,
    /// folded into an EWMA with weight 1/8 (as TCP's SRTT).
    pub(crate) fn on_echo(&mut self, echo_seq: u32, held: Duration, now: Duration) {
        let Some(&(_, sent_at)) = self
            .sent
            .iter()
            .find(|(seq, _)| *seq == echo_seq && echo_seq != 0)
        else {
            return;
        };
        let sample = now.saturating_sub(sent_at).saturating_sub(held);
        let sample = u64::try_from(sample.as_micros()).unwrap_or(u64::MAX);
        self.rtt_recent[self.next_rtt_slot] = sample.max(1);
        self.next_rtt_slot = (self.next_rtt_slot + 1) % RTT_MIN_WINDOW;
        self.rtt_ewma_micros = Some(match self.rtt_ewma_micros {
            None => sample,
            Some(previous) => previous.saturating_mul(7).saturating_add(sample) / 8,
        });
    }

    /// A new reading of the link's cumulative eBPF counters: the drop share is computed over
    /// the interval since the previous reading. A counter that went backwards (map recreated)
    /// starts a new baseline.
    pub(crate) fn on_counters(&mut self, counters: LinkCounters) {
        if let Some(previous) = self.counters {
            let deltas = (
                counters.tx_packets.checked_sub(previous.tx_packets),
                counters.rx_packets.checked_sub(previous.rx_packets),
                counters.drops.checked_sub(previous.drops),
            );
            if let (Some(tx), Some(rx), Some(drops)) = deltas {
                let total = tx.saturating_add(rx).saturating_add(drops);
                if let Some(percent) = drops.saturating_mul(100).checked_div(total) {
                    self.drop_percent = u32::try_from(percent).unwrap_or(100);
                }
            }
        }
        self.counters = Some(counters);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn mk_metric_with_hellos(seqs: impl IntoIterator<Item = u32>) -> LinkMetric {
        let mut metric = LinkMetric::default();
        for seq in seqs {
            metric.on_hello_received(seq);
        }
        metric
    }

    #[test]
    fn a_perfect_link_costs_one_hop() {
        let metric = mk_metric_with_hellos(1..=100);
        assert_eq!(metric.quality().loss_percent, 0);
        assert_eq!(metric.quality().cost(&MetricWeights::default()), BASE_LINK_COST);
    }

    #[test]
    fn loss_counts_the_gaps_in_the_last_64_hellos() {
        // Every fourth hello of the last 64 missing: 25 %.
        let metric = mk_metric_with_hellos((1..=200).filter(|seq| seq % 4 != 0));
        assert_eq!(metric.quality().loss_percent, 25);
        // Only 10 hellos expected so far, 5 arrived.
        let early = mk_metric_with_hellos([1, 3, 5, 7, 9, 10]);
        assert_eq!(early.quality().loss_percent, 40);
    }

    #[test]
    fn a_late_hello_inside_the_window_fills_its_gap() {
        let mut metric = mk_metric_with_hellos([1, 2, 4]);
        assert_eq!(metric.quality().loss_percent, 25);
        metric.on_hello_received(3);
        assert_eq!(metric.quality().loss_percent, 0);
    }

    #[test]
    fn a_peer_that_restarts_its_count_starts_a_new_window() {
        let mut metric = mk_metric_with_hellos(1000..1100);
        metric.on_hello_received(1);
        assert_eq!(metric.quality().loss_percent, 0);
    }

    #[test]
    fn rtt_is_the_time_to_the_echo_minus_the_time_the_peer_held_it() {
        let mut metric = LinkMetric::default();
        metric.on_hello_sent(1, 100 * MS);
        metric.on_echo(1, 30 * MS, 150 * MS);
        assert_eq!(metric.quality().rtt, Some(20 * MS));
        // Later samples move the average by an eighth of the difference.
        metric.on_hello_sent(2, 200 * MS);
        metric.on_echo(2, Duration::ZERO, 228 * MS);
        assert_eq!(metric.quality().rtt, Some(21 * MS));
    }

    #[test]
    fn the_least_recent_round_trip_ignores_a_retransmission_and_forgets_old_samples() {
        let mut metric = LinkMetric::default();
        let mut at = Duration::ZERO;
        let mut echo = |metric: &mut LinkMetric, seq: u32, rtt: Duration| {
            metric.on_hello_sent(seq, at);
            metric.on_echo(seq, Duration::ZERO, at + rtt);
            at += 100 * MS;
        };
        echo(&mut metric, 1, 2 * MS);
        echo(&mut metric, 2, 200 * MS); // a hello behind a TCP retransmission
        let quality = metric.quality();
        assert_eq!(quality.rtt_min, Some(2 * MS));
        assert!(
            quality.rtt.unwrap() > 20 * MS,
            "the average swells: {:?}",
            quality.rtt
        );
        for seq in 3..(3 + RTT_MIN_WINDOW as u32) {
            echo(&mut metric, seq, 5 * MS);
        }
        assert_eq!(
            metric.quality().rtt_min,
            Some(5 * MS),
            "the 2 ms sample left the window"
        );
    }

    #[test]
    fn an_echo_of_an_unknown_hello_is_ignored() {
        let mut metric = LinkMetric::default();
        metric.on_hello_sent(1, MS);
        metric.on_echo(9, MS, 5 * MS);
        metric.on_echo(0, MS, 5 * MS);
        assert_eq!(metric.quality().rtt, None);
    }

    #[test]
    fn drop_rate_comes_from_counter_deltas() {
        let mut metric = LinkMetric::default();
        metric.on_counters(LinkCounters {
            tx_packets: 1000,
            rx_packets: 1000,
            drops: 500,
        });
        assert_eq!(metric.quality().drop_percent, 0);
        metric.on_counters(LinkCounters {
            tx_packets: 1040,
            rx_packets: 1050,
            drops: 510,
        });
        assert_eq!(metric.quality().drop_percent, 10);
        // A reset map starts a new baseline and keeps the last rate.
        metric.on_counters(LinkCounters::default());
        assert_eq!(metric.quality().drop_percent, 10);
    }

    #[test]
    fn cost_adds_the_weighted_penalties_and_saturates_below_infinity() {
        let quality = LinkQuality {
            loss_percent: 10,
            rtt: Some(2500 * Duration::from_micros(1)),
            rtt_min: Some(Duration::from_micros(2000)),
            drop_percent: 5,
        };
        let weights = MetricWeights {
            loss: 3,
            rtt: 4,
            drops: 2,
        };
        assert_eq!(quality.cost(&weights), 256 + 30 + 10 + 10);
        let awful = LinkQuality {
            loss_percent: 100,
            rtt: Some(Duration::from_secs(1 << 40)),
            rtt_min: None,
            drop_percent: 100,
        };
        assert_eq!(
            awful.cost(&MetricWeights {
                loss: u32::MAX,
                rtt: u32::MAX,
                drops: u32::MAX
            }),
            INFINITY - 1
        );
    }
}
