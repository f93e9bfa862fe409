//! Per experiment, what this agent did and saw, as its MeshNode record reports it (pure: the
//! time is passed in). Installing and removing are transitions: `appliedAt` and `revertedAt`
//! move only when the entries really go in or come out.
use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use x0tta6bl4_api::chaos::{ActionType, AgentChaosReport, TargetDetection};

use super::desired::{ExperimentView, Inactive};

/// How long the report of an experiment that is gone stays in the record.
const FORGET_AFTER_US: u64 = 300_000_000;

/// What happened on this agent at one step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transition {
    Applied { uid: String, entries: usize },
    Reverted { uid: String, cause: &'static str },
}

/// What the mechanisms hold for one experiment now.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Carried {
    /// Entries installed now.
    pub entries: usize,
    pub mechanism: &'static str,
    /// Why some or all entries are not installed.
    pub refused: Vec<String>,
}

/// What an untargeted agent saw of the experiment at one step (nothing, for a target).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Seen {
    /// The earliest detection of each target since the window opened, by target name.
    pub detections: BTreeMap<String, (u64, String)>,
    /// (untargeted agents reached around the targets, untargeted agents).
    pub reach: Option<(usize, usize)>,
    /// Untargeted nodes this agent accused of lying since the window opened.
    pub accused: BTreeSet<String>,
    /// keyRevocation: when a target whose key this agent revoked had a session with it again.
    pub rejoined: Option<u64>,
}

#[derive(Debug, Default)]
struct Record {
    report: AgentChaosReport,
    /// When the experiment was last seen, Unix µs.
    seen_us: u64,
    gone: bool,
}

#[derive(Debug, Default)]
pub struct Ledger {
    records: BTreeMap<String, Record>,
}

fn time(us: u64) -> Option<MicroTime> {
    Timestamp::from_microsecond(i64::try_from(us).ok()?)
        .ok()
        .map(MicroTime)
}

impl Ledger {
    /// Starts from the reports a previous run of this agent left in its record, so a restart
    /// neither forgets when entries went in nor reports them applied anew.
    pub fn resume(reports: Vec<AgentChaosReport>) -> Self {
        let records = reports
            .into_iter()
            .map(|report| {
                (
                    report.uid.clone(),
                    Record {
                        report,
                        seen_us: 0,
                        gone: false,
                    },
                )
            })
            .collect();
        Ledger { records }
    }

    /// Records one step for an experiment that exists: what is carried, what was seen.
    pub fn step(
        &mut self,
        view: &ExperimentView,
        carried: &Carried,
        seen: Seen,
        now_us: u64,
    ) -> Vec<Transition> {
        let Seen {
            detections,
            reach,
            accused,
            rejoined,
        } = seen;
        let record = self.records.entry(view.uid.clone()).or_default();
        record.seen_us = now_us;
        record.gone = false;
        let report = &mut record.report;
        report.experiment = view.name.clone();
        report.uid = view.uid.clone();
        report.target = view.is_target;
        let same_faulty = report.faulty.iter().eq(view.targets.iter());
        if !view.is_target {
            report.faulty = view.targets.iter().cloned().collect();
        }
        let mut transitions = Vec::new();
        let was_active = report.active_entries > 0;
        let entries = i32::try_from(carried.entries).unwrap_or(i32::MAX);
        if carried.entries > 0 && (!was_active || report.reverted_at.is_some()) {
            // A new window (first injection, or resumed after a suspension).
            if report.applied_at.is_none() || report.reverted_at.is_some() {
                report.applied_at = time(now_us);
            }
            report.reverted_at = None;
            report.revert_cause.clear();
            transitions.push(Transition::Applied {
                uid: view.uid.clone(),
                entries: carried.entries,
            });
        } else if carried.entries == 0 && was_active {
            let cause = match &view.state {
                Err(inactive) => inactive.label(),
                // Still inside the window but nothing holds: the kernel let the entries expire.
                Ok(_) => "kernelExpiry",
            };
            report.reverted_at = time(now_us);
            report.revert_cause = cause.to_owned();
            transitions.push(Transition::Reverted {
                uid: view.uid.clone(),
                cause,
            });
        }
        report.active_entries = entries;
        if !carried.mechanism.is_empty() {
            report.mechanism = carried.mechanism.to_owned();
        }
        report.refused = carried.refused.join("; ");
        // Kept once made: the accusation is what the experiment judges, not the quarantine.
        let mut all: BTreeSet<String> = std::mem::take(&mut report.accused).into_iter().collect();
        all.extend(accused);
        report.accused = all.into_iter().collect();
        if report.rejoined_at.is_none() {
            report.rejoined_at = rejoined.and_then(time);
        }
        // The first detection of each target is kept; the earliest of them is the detection.
        for (node, (at, what)) in detections {
            if report.detections.iter().any(|d| d.node == node) {
                continue;
            }
            report.detections.push(TargetDetection {
                node,
                at: time(at),
                what,
            });
        }
        if let Some(first) = report
            .detections
            .iter()
            .filter(|d| d.at.is_some())
            .min_by_key(|d| d.at.as_ref().map(|t| t.0))
            && report.detected_at.is_none()
        {
            report.detected_at = first.at.clone();
            report.detection = first.what.clone();
        }
        // A killed agent comes back (its DaemonSet starts a new one) and routes through it are
        // right again, often within a second: for a kill the report keeps the moment its routes
        // first avoided every node killed so far, with the reach then, until the next kill.
        let routed_around_kill = view.action == ActionType::NodeKill.as_str()
            && same_faulty
            && report.avoiding_since.is_some()
            && report.reachable >= report.peers;
        match reach {
            _ if routed_around_kill => {}
            Some((reached, peers)) => {
                report.reachable = i32::try_from(reached).unwrap_or(i32::MAX);
                report.peers = i32::try_from(peers).unwrap_or(i32::MAX);
                if reached == peers {
                    if report.avoiding_since.is_none() {
                        report.avoiding_since = time(now_us);
                    }
                } else {
                    report.avoiding_since = None;
                }
            }
            None => report.avoiding_since = None,
        }
        transitions
    }

    /// Experiments that disappeared: anything still installed was removed with them.
    pub fn forget_missing(&mut self, present: &[String], now_us: u64) -> Vec<Transition> {
        let mut transitions = Vec::new();
        for (uid, record) in &mut self.records {
            if present.contains(uid) {
                continue;
            }
            if !record.gone {
                record.gone = true;
                record.seen_us = now_us;
                if record.report.active_entries > 0 {
                    record.report.active_entries = 0;
                    record.report.reverted_at = time(now_us);
                    record.report.revert_cause = Inactive::Deleted.label().to_owned();
                    transitions.push(Transition::Reverted {
                        uid: uid.clone(),
                        cause: Inactive::Deleted.label(),
                    });
                }
            }
        }
        self.records
            .retain(|_, record| !record.gone || now_us.saturating_sub(record.seen_us) < FORGET_AFTER_US);
        transitions
    }

    /// Every report, for the MeshNode record.
    pub fn reports(&self) -> Vec<AgentChaosReport> {
        self.records.values().map(|r| r.report.clone()).collect()
    }

    /// Entries installed now, over every experiment.
    /// The report of one experiment, while it is kept.
    pub fn report(&self, uid: &str) -> Option<&AgentChaosReport> {
        self.records.get(uid).map(|record| &record.report)
    }

    pub fn active_entries(&self) -> usize {
        self.records
            .values()
            .map(|r| usize::try_from(r.report.active_entries).unwrap_or(0))
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::chaos::desired::Active;

    fn mk_view(state: Result<Active, Inactive>) -> ExperimentView {
        ExperimentView {
            uid: "u".into(),
            name: "cut".into(),
            action: "partition",
            targets: BTreeSet::from(["node-1".to_owned()]),
            is_target: true,
            window_start_us: Some(1_000),
            state,
            unusable: Vec::new(),
        }
    }

    fn carried(entries: usize) -> Carried {
        Carried {
            entries,
            mechanism: "ebpf",
            refused: Vec::new(),
        }
    }

    fn detected(node: &str, at: u64, what: &str) -> Seen {
        Seen {
            detections: BTreeMap::from([(node.to_owned(), (at, what.to_owned()))]),
            ..Seen::default()
        }
    }

    fn reaching(reach: (usize, usize)) -> Seen {
        Seen {
            reach: Some(reach),
            ..Seen::default()
        }
    }

    fn active() -> Result<Active, Inactive> {
        Ok(Active {
            deadline_us: 9_000_000,
            entries: Vec::new(),
            behaviour: Default::default(),
        })
    }

    #[test]
    fn applied_and_reverted_move_only_on_transitions_with_the_cause() {
        let mut ledger = Ledger::default();
        assert_eq!(
            ledger.step(&mk_view(active()), &carried(4), Seen::default(), 2_000),
            [Transition::Applied {
                uid: "u".into(),
                entries: 4
            }]
        );
        assert!(
            ledger
                .step(&mk_view(active()), &carried(4), Seen::default(), 3_000)
                .is_empty()
        );
        let report = &ledger.reports()[0];
        assert_eq!(report.applied_at, time(2_000), "a later step does not move it");
        assert_eq!(
            ledger.step(
                &mk_view(Err(Inactive::Suspended)),
                &carried(0),
                Seen::default(),
                4_000
            ),
            [Transition::Reverted {
                uid: "u".into(),
                cause: "suspended"
            }]
        );
        let report = &ledger.reports()[0];
        assert_eq!(
            (report.reverted_at.clone(), report.revert_cause.as_str()),
            (time(4_000), "suspended")
        );
        assert_eq!(ledger.active_entries(), 0);
    }

    #[test]
    fn an_accusation_is_kept_after_the_accuser_stops_seeing_it() {
        let mut ledger = Ledger::default();
        let view = mk_view(active());
        let accusing = Seen {
            accused: BTreeSet::from(["node-3".to_owned()]),
            ..Seen::default()
        };
        ledger.step(&view, &carried(0), accusing, 2_000);
        ledger.step(&view, &carried(0), Seen::default(), 3_000);
        assert_eq!(ledger.reports()[0].accused, ["node-3"]);
    }

    #[test]
    fn entries_gone_inside_the_window_were_expired_by_the_kernel() {
        let mut ledger = Ledger::default();
        ledger.step(&mk_view(active()), &carried(2), Seen::default(), 2_000);
        let transitions = ledger.step(&mk_view(active()), &carried(0), Seen::default(), 3_000);
        assert_eq!(
            transitions,
            [Transition::Reverted {
                uid: "u".into(),
                cause: "kernelExpiry"
            }]
        );
    }

    #[test]
    fn a_deleted_experiment_is_reported_reverted_then_forgotten() {
        let mut ledger = Ledger::default();
        ledger.step(&mk_view(active()), &carried(2), Seen::default(), 2_000);
        assert_eq!(
            ledger.forget_missing(&[], 3_000),
            [Transition::Reverted {
                uid: "u".into(),
                cause: "deleted"
            }]
        );
        assert_eq!(ledger.reports().len(), 1);
        ledger.forget_missing(&[], 3_000 + FORGET_AFTER_US);
        assert!(ledger.reports().is_empty());
    }

    #[test]
    fn detection_is_kept_once_and_avoidance_holds_since_it_last_became_true() {
        let mut ledger = Ledger::default();
        let view = mk_view(active());
        ledger.step(
            &view,
            &carried(0),
            Seen {
                reach: Some((2, 3)),
                ..detected("node-1", 1_500, "neighbour node-1 lost")
            },
            2_000,
        );
        ledger.step(
            &view,
            &carried(0),
            Seen {
                reach: Some((3, 3)),
                ..detected("node-1", 1_800, "later")
            },
            3_000,
        );
        ledger.step(&view, &carried(0), reaching((3, 3)), 4_000);
        let report = &ledger.reports()[0];
        assert_eq!(report.detected_at, time(1_500));
        assert_eq!(report.detection, "neighbour node-1 lost");
        assert_eq!(report.avoiding_since, time(3_000));
        assert_eq!((report.reachable, report.peers), (3, 3));
    }

    #[test]
    fn a_kills_avoidance_is_kept_when_the_killed_agent_returns_until_the_next_kill() {
        let mut ledger = Ledger::default();
        let mut view = mk_view(active());
        (view.action, view.is_target) = ("nodeKill", false);
        let step = |ledger: &mut Ledger, view: &ExperimentView, reach, now| {
            ledger.step(view, &carried(0), reaching(reach), now);
            let report = ledger.reports()[0].clone();
            (report.avoiding_since, report.reachable, report.peers)
        };
        assert_eq!(step(&mut ledger, &view, (2, 3), 2_000), (None, 2, 3));
        assert_eq!(step(&mut ledger, &view, (3, 3), 3_000), (time(3_000), 3, 3));
        assert_eq!(
            step(&mut ledger, &view, (2, 3), 4_000),
            (time(3_000), 3, 3),
            "node-1 is back and carries a route again: that is not the kill's"
        );
        view.targets.insert("node-2".into());
        assert_eq!(
            step(&mut ledger, &view, (1, 2), 5_000),
            (None, 1, 2),
            "a second kill"
        );
        let mut partition = mk_view(active());
        (partition.uid, partition.is_target) = ("p".into(), false);
        ledger.step(&partition, &carried(0), reaching((3, 3)), 6_000);
        ledger.step(&partition, &carried(0), reaching((2, 3)), 7_000);
        let report = ledger.reports().into_iter().find(|r| r.uid == "p").unwrap();
        assert_eq!(
            report.avoiding_since, None,
            "a partition's avoidance is only the current one"
        );
    }

    #[test]
    fn a_restarted_agent_keeps_the_applied_time_of_its_previous_run() {
        let previous = AgentChaosReport {
            uid: "u".into(),
            experiment: "cut".into(),
            active_entries: 2,
            applied_at: time(1_200),
            ..AgentChaosReport::default()
        };
        let mut ledger = Ledger::resume(vec![previous]);
        assert!(
            ledger
                .step(&mk_view(active()), &carried(2), Seen::default(), 5_000)
                .is_empty()
        );
        assert_eq!(ledger.reports()[0].applied_at, time(1_200));
    }
}
