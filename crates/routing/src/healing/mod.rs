//! The self-healing loop (MAPE-K) over one router, sans IO like the router itself.
//!
//! - **Monitor**: each run reads every live neighbour's link cost, RTT, loss and what the
//!   neighbour claims its link to us costs (its hellos).
//! - **Analyze**: per link, an adaptive baseline (EWMA mean and deviation, [`baseline`]) of its
//!   cost. A link is *degraded* when its cost leaves `mean + k·deviation` (k from
//!   `anomaly_sigma`) or passes the fixed loss / RTT ceilings. A neighbour *contradicts* what
//!   we see when it claims the link costs less than the least recent round trip alone costs by
//!   our own measurement: both ends time the same round trip, and loss, queueing and
//!   retransmissions can only add to a cost, so an honest peer never claims less than that
//!   floor (beyond the floor's own jitter). This is the
//!   lie that attracts traffic; claiming more only repels it, and is what asymmetric loss
//!   looks like, so it is not counted.
//! - **Plan**: a newly degraded link → reroute around it now (ignoring the re-selection
//!   hysteresis); `quarantine_after` contradictions within `incident_window` → quarantine the
//!   peer for `quarantine_duration`; an expired quarantine → release. Key rotation is planned
//!   by the agent's key schedule, not here.
//! - **Execute**: on the router ([`Router::reroute_around`], [`Router::set_quarantined`]),
//!   only when `enabled`; otherwise the plan is recorded as not executed.
//! - **Knowledge**: [`Knowledge`], a bounded incident log with lifetime counts.
mod baseline;
mod knowledge;

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

pub use baseline::Baseline;
pub use knowledge::{Incident, Knowledge};
use x0tta6bl4_wire::NodeId;

use crate::metric::{BASE_LINK_COST, LinkQuality};
use crate::{OriginatorVerifier, Output, Router};

/// Knobs of the loop; [`Default`] matches the MeshNetwork defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct HealingConfig {
    /// Act on findings (`true`) or only record them.
    pub enabled: bool,
    /// A link losing at least this share of hellos is degraded whatever its history.
    pub loss_threshold_percent: u32,
    /// A link with at least this RTT is degraded whatever its history.
    pub rtt_threshold: Duration,
    /// k of `mean + k·deviation`.
    pub anomaly_sigma: f64,
    /// Contradictions within `incident_window` that quarantine a peer.
    pub quarantine_after: u32,
    pub quarantine_duration: Duration,
    pub incident_window: Duration,
    /// How often the loop runs.
    pub period: Duration,
    /// Runs of a link before its baseline is trusted.
    pub warm_up: u32,
    /// Incidents kept.
    pub knowledge_capacity: usize,
}

impl Default for HealingConfig {
    fn default() -> Self {
        HealingConfig {
            enabled: false,
            loss_threshold_percent: 20,
            rtt_threshold: Duration::from_millis(50),
            anomaly_sigma: 3.0,
            quarantine_after: 3,
            quarantine_duration: Duration::from_secs(300),
            incident_window: Duration::from_secs(30),
            period: Duration::from_secs(1),
            warm_up: 5,
            knowledge_capacity: 256,
        }
    }
}

/// What the analysis found about one link.
#[derive(Debug, Clone, PartialEq)]
pub enum Finding {
    /// The link's cost left what its own history allows (or passed a fixed ceiling).
    Degraded { cost: u32, expected: u32, limit: u32 },
    /// The peer claims the link costs less than the round trip we measure on it.
    Contradiction {
        claimed: u32,
        floor: u32,
        tolerance: u32,
    },
    /// A quarantine ran its course.
    QuarantineOver,
}

impl Finding {
    pub fn kind(&self) -> &'static str {
        match self {
            Finding::Degraded { .. } => "degraded",
            Finding::Contradiction { .. } => "contradiction",
            Finding::QuarantineOver => "quarantine_over",
        }
    }
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Finding::Degraded {
                cost,
                expected,
                limit,
            } => {
                write!(f, "link cost {cost} above its limit {limit} (usually {expected})")
            }
            Finding::Contradiction {
                claimed,
                floor,
                tolerance,
            } => write!(
                f,
                "claims link cost {claimed}, below the {floor} its round trip alone costs (tolerance {tolerance})"
            ),
            Finding::QuarantineOver => f.write_str("quarantine over"),
        }
    }
}

/// What the loop decided to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Re-select every route through the peer now.
    Reroute,
    /// Exclude the peer from routing until then.
    Quarantine { until: Duration },
    /// Admit the peer again.
    Release,
}

impl Action {
    pub fn kind(&self) -> &'static str {
        match self {
            Action::Reroute => "reroute",
            Action::Quarantine { .. } => "quarantine",
            Action::Release => "release",
        }
    }
}

/// A peer excluded from routing.
#[derive(Debug, Clone, PartialEq)]
pub struct Quarantined {
    pub peer: NodeId,
    pub until: Duration,
    /// The finding that led to it.
    pub reason: String,
    /// Whether the router excludes it (`false`: the loop only reports).
    pub enforced: bool,
}

/// What one run found and did.
#[derive(Debug, Default)]
pub struct Cycle {
    /// The incidents recorded in this run.
    pub incidents: Vec<Incident>,
    /// What the router wants sent after the executed actions.
    pub outputs: Vec<Output>,
}

#[derive(Debug)]
struct LinkWatch {
    cost: Baseline,
    floor: Option<Baseline>,
    degraded: bool,
}

/// The loop's state: per-link baselines, quarantines and the knowledge.
#[derive(Debug)]
pub struct SelfHealing {
    config: HealingConfig,
    links: BTreeMap<NodeId, LinkWatch>,
    quarantined: BTreeMap<NodeId, Quarantined>,
    knowledge: Knowledge,
    next_due: Duration,
}

/// Margin of an adaptive limit over the mean when a link has no jitter: an eighth of a hop.
const MIN_MARGIN: f64 = BASE_LINK_COST as f64 / 8.0;

impl SelfHealing {
    pub fn new(config: HealingConfig, now: Duration) -> Self {
        SelfHealing {
            knowledge: Knowledge::new(config.knowledge_capacity),
            next_due: now + config.period,
            config,
            links: BTreeMap::new(),
            quarantined: BTreeMap::new(),
        }
    }

    pub fn config(&self) -> &HealingConfig {
        &self.config
    }

    /// When [`SelfHealing::run`] is next due.
    pub fn next_due(&self) -> Duration {
        self.next_due
    }

    pub fn knowledge(&self) -> &Knowledge {
        &self.knowledge
    }

    /// The peers under quarantine now.
    pub fn quarantined(&self) -> impl Iterator<Item = &Quarantined> {
        self.quarantined.values()
    }

    /// One pass of monitor, analyze, plan, execute and record.
    pub fn run<V: OriginatorVerifier>(&mut self, router: &mut Router<V>, now: Duration) -> Cycle {
        self.next_due = now + self.config.period;
        let mut cycle = Cycle::default();
        self.release_expired(router, now, &mut cycle);
        let weights = router.config().weights;
        let neighbours = router.neighbours();
        self.links
            .retain(|peer, _| neighbours.iter().any(|n| n.peer == *peer && n.alive));
        for neighbour in neighbours.into_iter().filter(|n| n.alive) {
            let peer = neighbour.peer;
            // A quarantine outlives the session: a liar cannot shed it by reconnecting.
            if let Some(quarantine) = self.quarantined.get(&peer)
                && quarantine.enforced
                && !neighbour.quarantined
            {
                cycle.outputs.extend(router.set_quarantined(peer, true, now));
            }
            // The floor is what the path's least recent round trip costs: the smoothed RTT
            // swells with every retransmission under loss, and the two ends' estimates swell
            // at different moments, so an honest peer's claim can sit below our smoothed
            // figure; it can never sit below the path's own delay.
            let floor = neighbour.quality.rtt_min.map(|rtt| {
                LinkQuality {
                    rtt: Some(rtt),
                    ..LinkQuality::default()
                }
                .cost(&weights)
            });
            let claimed = router.claimed_vs_measured(&peer).map(|(claimed, _)| claimed);
            let findings = self.analyze(peer, neighbour.cost, &neighbour.quality, floor, claimed);
            for finding in findings {
                let action = self.plan(peer, &finding, now);
                self.execute(router, peer, finding, action, now, &mut cycle);
            }
        }
        cycle
    }

    fn analyze(
        &mut self,
        peer: NodeId,
        cost: u32,
        quality: &LinkQuality,
        floor: Option<u32>,
        claimed: Option<u32>,
    ) -> Vec<Finding> {
        let config = &self.config;
        let watch = self.links.entry(peer).or_insert_with(|| LinkWatch {
            cost: Baseline::new(f64::from(cost)),
            floor: None,
            degraded: false,
        });
        let mut findings = Vec::new();
        let warm = watch.cost.samples() >= config.warm_up;
        let limit = watch.cost.upper_limit(config.anomaly_sigma, MIN_MARGIN);
        let over_ceiling = quality.loss_percent >= config.loss_threshold_percent
            || quality.rtt.is_some_and(|rtt| rtt >= config.rtt_threshold);
        let degraded = over_ceiling || (warm && f64::from(cost) > limit);
        if degraded && !watch.degraded {
            findings.push(Finding::Degraded {
                cost,
                expected: watch.cost.mean().round() as u32,
                limit: limit.round() as u32,
            });
        }
        watch.degraded = degraded;
        watch.cost.update(f64::from(cost), degraded);

        if let Some(floor) = floor {
            let baseline = watch.floor.get_or_insert_with(|| Baseline::new(f64::from(floor)));
            // The floor's own jitter, and at least an eighth of it (RTT estimates of the two
            // ends are taken at different moments).
            let tolerance = (config.anomaly_sigma * baseline.deviation())
                .max(MIN_MARGIN)
                .max(f64::from(floor) / 8.0);
            if baseline.samples() >= config.warm_up
                && let Some(claimed) = claimed
                && f64::from(claimed) + tolerance < f64::from(floor)
            {
                findings.push(Finding::Contradiction {
                    claimed,
                    floor,
                    tolerance: tolerance.round() as u32,
                });
            }
            baseline.update(f64::from(floor), false);
        }
        findings
    }

    fn plan(&self, peer: NodeId, finding: &Finding, now: Duration) -> Option<Action> {
        match finding {
            Finding::Degraded { .. } => Some(Action::Reroute),
            Finding::Contradiction { .. } => {
                let since = now.saturating_sub(self.config.incident_window);
                // This finding is not recorded yet: it counts as one.
                let count = self.knowledge.count_since(&peer, finding.kind(), since) + 1;
                (count >= self.config.quarantine_after as usize && !self.quarantined.contains_key(&peer))
                    .then(|| Action::Quarantine {
                        until: now + self.config.quarantine_duration,
                    })
            }
            Finding::QuarantineOver => Some(Action::Release),
        }
    }

    fn execute<V: OriginatorVerifier>(
        &mut self,
        router: &mut Router<V>,
        peer: NodeId,
        finding: Finding,
        action: Option<Action>,
        now: Duration,
        cycle: &mut Cycle,
    ) {
        let enabled = self.config.enabled;
        match &action {
            Some(Action::Reroute) if enabled => cycle.outputs.extend(router.reroute_around(peer, now)),
            Some(Action::Quarantine { until }) => {
                self.quarantined.insert(
                    peer,
                    Quarantined {
                        peer,
                        until: *until,
                        reason: finding.to_string(),
                        enforced: enabled,
                    },
                );
                if enabled {
                    cycle.outputs.extend(router.set_quarantined(peer, true, now));
                }
            }
            Some(Action::Release) => {
                self.quarantined.remove(&peer);
                if enabled {
                    cycle.outputs.extend(router.set_quarantined(peer, false, now));
                }
            }
            _ => {}
        }
        let incident = Incident {
            at: now,
            peer,
            finding,
            executed: enabled && action.is_some(),
            action,
        };
        self.knowledge.record(incident.clone());
        cycle.incidents.push(incident);
    }

    fn release_expired<V: OriginatorVerifier>(
        &mut self,
        router: &mut Router<V>,
        now: Duration,
        cycle: &mut Cycle,
    ) {
        let expired: Vec<NodeId> = self
            .quarantined
            .values()
            .filter(|q| q.until <= now)
            .map(|q| q.peer)
            .collect();
        for peer in expired {
            self.execute(
                router,
                peer,
                Finding::QuarantineOver,
                Some(Action::Release),
                now,
                cycle,
            );
        }
    }
}

#[cfg(test)]
mod tests;
