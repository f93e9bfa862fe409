//! The K of MAPE-K: a bounded record of what was detected and what was done about it, for the
//! status report and for the decisions that depend on history (incidents within a window).
use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use x0tta6bl4_wire::NodeId;

use super::{Action, Finding};

/// One finding and the action it led to.
#[derive(Debug, Clone, PartialEq)]
pub struct Incident {
    pub at: Duration,
    pub peer: NodeId,
    pub finding: Finding,
    /// What was planned; `None` when the finding alone did not call for an action yet.
    pub action: Option<Action>,
    /// Whether the action was carried out (`false` when the loop only reports).
    pub executed: bool,
}

/// The newest incidents (oldest dropped first) and lifetime counts by kind.
#[derive(Debug, Clone)]
pub struct Knowledge {
    capacity: usize,
    incidents: VecDeque<Incident>,
    findings_total: BTreeMap<&'static str, u64>,
    actions_total: BTreeMap<&'static str, u64>,
}

impl Knowledge {
    pub fn new(capacity: usize) -> Self {
        Knowledge {
            capacity: capacity.max(1),
            incidents: VecDeque::new(),
            findings_total: BTreeMap::new(),
            actions_total: BTreeMap::new(),
        }
    }

    pub fn record(&mut self, incident: Incident) {
        *self.findings_total.entry(incident.finding.kind()).or_default() += 1;
        if let Some(action) = &incident.action
            && incident.executed
        {
            *self.actions_total.entry(action.kind()).or_default() += 1;
        }
        if self.incidents.len() == self.capacity {
            self.incidents.pop_front();
        }
        self.incidents.push_back(incident);
    }

    /// Findings of `kind` about `peer` since `since`.
    pub fn count_since(&self, peer: &NodeId, kind: &str, since: Duration) -> usize {
        self.incidents
            .iter()
            .rev()
            .take_while(|incident| incident.at >= since)
            .filter(|incident| incident.peer == *peer && incident.finding.kind() == kind)
            .count()
    }

    /// The kept incidents, oldest first.
    pub fn incidents(&self) -> impl DoubleEndedIterator<Item = &Incident> {
        self.incidents.iter()
    }

    /// Lifetime count of findings by kind.
    pub fn findings_total(&self) -> &BTreeMap<&'static str, u64> {
        &self.findings_total
    }

    /// Lifetime count of executed actions by kind.
    pub fn actions_total(&self) -> &BTreeMap<&'static str, u64> {
        &self.actions_total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn incident(at_ms: u64, peer: u8) -> Incident {
        Incident {
            at: Duration::from_millis(at_ms),
            peer: NodeId([peer; 32]),
            finding: Finding::Degraded {
                cost: 900,
                expected: 300,
                limit: 400,
            },
            action: Some(Action::Reroute),
            executed: true,
        }
    }

    #[test]
    fn keeps_the_newest_incidents_and_counts_every_one() {
        let mut knowledge = Knowledge::new(2);
        for at in 0..5 {
            knowledge.record(incident(at, 1));
        }
        let kept: Vec<u64> = knowledge.incidents().map(|i| i.at.as_millis() as u64).collect();
        assert_eq!(kept, vec![3, 4]);
        assert_eq!(knowledge.findings_total()["degraded"], 5);
        assert_eq!(knowledge.actions_total()["reroute"], 5);
    }

    #[test]
    fn counts_findings_per_peer_within_a_window() {
        let mut knowledge = Knowledge::new(16);
        for at in [100, 200, 300] {
            knowledge.record(incident(at, 1));
        }
        knowledge.record(incident(350, 2));
        assert_eq!(
            knowledge.count_since(&NodeId([1; 32]), "degraded", Duration::from_millis(150)),
            2
        );
        assert_eq!(
            knowledge.count_since(&NodeId([2; 32]), "degraded", Duration::ZERO),
            1
        );
        assert_eq!(
            knowledge.count_since(&NodeId([1; 32]), "contradiction", Duration::ZERO),
            0
        );
    }
}
