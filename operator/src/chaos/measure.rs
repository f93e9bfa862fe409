//! Time to detect, time to recover, reachability, the abort guards and the verdict, from the
//! agents' reports (pure).
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use x0tta6bl4_api::chaos::{ActionType, AgentChaosReport, revert_cause};
use x0tta6bl4_api::{ChaosExperimentSpec, ChaosExperimentStatus, duration};

use super::plan::{DEFAULT_RECOVER_AFTER, elapsed, format_precise, names, reason, verdict};
use super::targets::Agent;

/// What the agents' reports on one experiment show.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Measurement {
    /// When the fault went in: the earliest appliedAt of the targets' reports, or injectedAt.
    pub reference: Option<Timestamp>,
    /// The earliest detection by an untargeted agent since then, and "node: what it saw".
    pub detection: Option<(Duration, String)>,
    /// Time until every live untargeted agent routed around the targets (within the window);
    /// for keyRevocation, until a target first had a session again (with a new key).
    pub recovery: Option<Duration>,
    /// keyRevocation: time until every live untargeted agent refused the revoked keys.
    pub detected_by_all: Option<Duration>,
    /// Share of pairs of live untargeted agents that reach each other, in percent.
    pub reachable_percent: Option<i32>,
    /// The most the reference's clock (the first target's) can differ from any live untargeted
    /// agent's; None for kills (the operator's clock) or where the agents' bounds do not
    /// connect them.
    pub clock_skew_bound: Option<Duration>,
    /// Untargeted nodes accused of lying about their links by an untargeted agent, as
    /// "accused (by accuser)".
    pub false_accusations: BTreeSet<String>,
}

/// Measures from the agents' reports. `window_end` (the revert, once there is one) bounds the
/// recovery: routes that avoid the targets only after the fault ended were not a recovery.
pub fn measure(
    status: &ChaosExperimentStatus,
    agents: &BTreeMap<String, Agent>,
    targets: &BTreeSet<String>,
    window_end: Option<Timestamp>,
) -> Measurement {
    // A kill starts the fault when it is made; entries when the first target installs them.
    let first_kill = status
        .kills
        .iter()
        .filter_map(|kill| kill.killed_at.as_ref().map(|t| t.0))
        .min();
    let first_applied = agents
        .iter()
        .filter(|(node, _)| targets.contains(*node))
        .filter_map(|(node, agent)| Some((agent.report.as_ref()?.applied_at.as_ref()?.0, node)))
        .min();
    // keyExpiry: the fault is the key running out, not the short endorsement going out.
    let expired_at = status
        .expiring_endorsements
        .iter()
        .filter_map(|e| e.not_after.as_ref().map(|t| t.0))
        .min();
    let reference = first_kill
        .or(expired_at)
        .or_else(|| first_applied.map(|(at, _)| at))
        .or_else(|| status.injected_at.as_ref().map(|t| t.0));
    let untargeted: Vec<(&String, &Agent)> = agents
        .iter()
        .filter(|(node, _)| !targets.contains(*node))
        .collect();
    let false_accusations = untargeted
        .iter()
        .filter_map(|(node, agent)| Some((node, agent.report.as_ref()?)))
        .flat_map(|(node, report)| {
            report
                .accused
                .iter()
                .filter(|accused| !targets.contains(*accused))
                .map(move |accused| format!("{accused} (by {node})"))
        })
        .collect();
    let Some(reference) = reference else {
        return Measurement {
            false_accusations,
            ..Measurement::default()
        };
    };
    let detection = untargeted
        .iter()
        .filter_map(|(node, agent)| {
            let report = agent.report.as_ref()?;
            let at = report.detected_at.as_ref()?.0;
            (at >= reference).then(|| (at, format!("{node}: {}", report.detection)))
        })
        .min()
        .map(|(at, by)| (elapsed(reference, at), by));
    let live: Vec<&AgentChaosReport> = untargeted
        .iter()
        .filter(|(_, agent)| agent.live)
        .filter_map(|(_, agent)| agent.report.as_ref())
        .collect();
    let live_count = untargeted.iter().filter(|(_, a)| a.live).count();
    let revocation = !status.revoked_keys.is_empty();
    // Every live untargeted agent reports having refused a target's key: the revocation
    // reached the whole mesh.
    let detected_by_all = (revocation && live_count > 0 && live.len() == live_count)
        .then(|| {
            live.iter()
                .map(|r| r.detected_at.as_ref().map(|t| t.0).filter(|at| *at >= reference))
                .collect::<Option<Vec<Timestamp>>>()
        })
        .flatten()
        .and_then(|times| times.into_iter().max())
        .map(|at| elapsed(reference, at));
    let rejoined = untargeted
        .iter()
        .filter_map(|(_, agent)| agent.report.as_ref()?.rejoined_at.as_ref().map(|t| t.0))
        .filter(|at| *at >= reference)
        .min()
        .map(|at| elapsed(reference, at));
    let recovery = if revocation || expired_at.is_some() {
        rejoined
    } else if live_count > 0 && live.len() == live_count {
        live.iter()
            .map(|r| match &r.avoiding_since {
                Some(since) if r.reachable >= r.peers => Some(since.0.max(reference)),
                _ => None,
            })
            .collect::<Option<Vec<Timestamp>>>()
            .and_then(|times| times.into_iter().max())
            .filter(|at| window_end.is_none_or(|end| *at <= end))
            .map(|at| elapsed(reference, at))
    } else {
        None
    };
    let (reachable, peers) = live
        .iter()
        .filter(|r| r.peers > 0)
        .fold((0i64, 0i64), |(reached, peers), r| {
            (
                reached + i64::from(r.reachable.clamp(0, r.peers)),
                peers + i64::from(r.peers),
            )
        });
    let reachable_percent = if peers > 0 {
        Some(i32::try_from(reachable * 100 / peers).unwrap_or(100))
    } else if live_count <= 1 && !live.is_empty() {
        // A lone untargeted agent has nobody to reach.
        Some(100)
    } else {
        None
    };
    let clock_skew_bound = match (first_kill, first_applied) {
        (None, Some((_, origin))) => {
            let ends: Vec<&String> = untargeted
                .iter()
                .filter(|(_, agent)| agent.live)
                .map(|(node, _)| *node)
                .collect();
            skew_bound(agents, origin, &ends)
        }
        _ => None,
    };
    Measurement {
        reference: Some(reference),
        detection,
        recovery,
        detected_by_all,
        reachable_percent,
        clock_skew_bound,
        false_accusations,
    }
}

/// The most `origin`'s clock can differ from the clock of any of `ends`: per pair, the least
/// sum of the agents' neighbour bounds along a path between them (a link's bound is the
/// tighter of its two ends' estimates). None if an end is not connected by bounds.
pub fn skew_bound(agents: &BTreeMap<String, Agent>, origin: &str, ends: &[&String]) -> Option<Duration> {
    let mut links: BTreeMap<(&str, &str), u64> = BTreeMap::new();
    for (node, agent) in agents {
        for (neighbour, bound) in &agent.clock_bounds {
            let key = if node.as_str() < neighbour.as_str() {
                (node.as_str(), neighbour.as_str())
            } else {
                (neighbour.as_str(), node.as_str())
            };
            links
                .entry(key)
                .and_modify(|held| *held = (*held).min(*bound))
                .or_insert(*bound);
        }
    }
    let mut adjacent: BTreeMap<&str, Vec<(&str, u64)>> = BTreeMap::new();
    for ((a, b), bound) in links {
        adjacent.entry(a).or_default().push((b, bound));
        adjacent.entry(b).or_default().push((a, bound));
    }
    // Dijkstra from the origin.
    let mut best: BTreeMap<&str, u64> = BTreeMap::from([(origin, 0)]);
    let mut frontier = std::collections::BinaryHeap::from([std::cmp::Reverse((0u64, origin))]);
    while let Some(std::cmp::Reverse((distance, node))) = frontier.pop() {
        if best.get(node).is_some_and(|known| *known < distance) {
            continue;
        }
        for (next, bound) in adjacent.get(node).into_iter().flatten() {
            let through = distance.saturating_add(*bound);
            if best.get(next).is_none_or(|known| through < *known) {
                best.insert(next, through);
                frontier.push(std::cmp::Reverse((through, next)));
            }
        }
    }
    ends.iter()
        .map(|end| best.get(end.as_str()).copied())
        .collect::<Option<Vec<u64>>>()
        .map(|bounds| Duration::from_micros(bounds.into_iter().max().unwrap_or(0)))
}

/// Keeps what was measured: the earliest detection so far, the first recovery, and, while the
/// fault is injected, the latest reachability.
pub(super) fn record(status: &mut ChaosExperimentStatus, measured: &Measurement, injected: bool) {
    if let Some((time_to_detect, by)) = &measured.detection {
        let earlier = duration::parse(&status.time_to_detect).map_or(true, |known| *time_to_detect < known);
        if earlier {
            status.time_to_detect = format_precise(*time_to_detect);
            status.detected_by = by.clone();
        }
    }
    // A killed agent comes back (its DaemonSet restarts it) and routes through it are right
    // again: once the mesh routed around the kill, later reachability is not the fault's. The
    // measurement that first shows the recovery still counts: it is the state routed around.
    let settled_kill = !status.kills.is_empty() && !status.time_to_recover.is_empty();
    if status.time_to_recover.is_empty()
        && let Some(time_to_recover) = measured.recovery
    {
        status.time_to_recover = format_precise(time_to_recover);
    }
    if injected
        && !settled_kill
        && let Some(percent) = measured.reachable_percent
    {
        status.reachable_percent = Some(percent);
    }
    if status.time_to_detect_by_all.is_empty()
        && let Some(all) = measured.detected_by_all
    {
        status.time_to_detect_by_all = format_precise(all);
    }
    if let Some(bound) = measured.clock_skew_bound {
        status.clock_skew_bound = duration::format(bound);
    }
    // An accusation stays on the books: the accuser forgets it when its report is gone.
    let mut accusations: BTreeSet<String> = status.false_accusations.iter().cloned().collect();
    accusations.extend(measured.false_accusations.iter().cloned());
    status.false_accusations = accusations.into_iter().collect();
}

/// The abort guards, checked while the fault is injected: more untargeted agents silent than
/// abort.maxSilentAgents, or, once abort.recoverAfter has passed since injection, fewer pairs of
/// untargeted agents reachable than abort.minReachablePercent. Returns the guard and the value.
pub(super) fn abort_guard(
    spec: &ChaosExperimentSpec,
    status: &ChaosExperimentStatus,
    agents: &BTreeMap<String, Agent>,
    targets: &BTreeSet<String>,
    measured: &Measurement,
    now: Timestamp,
) -> Option<String> {
    if let Some(limit) = spec.abort.max_silent_agents {
        // The untargeted agents live when the window opened are the targets' peers.
        let silent: Vec<String> = status
            .assignments
            .iter()
            .flat_map(|a| a.entries.iter().map(|e| e.peer.clone()))
            .filter(|peer| !targets.contains(peer))
            .collect::<BTreeSet<String>>()
            .into_iter()
            .filter(|peer| agents.get(peer).is_none_or(|agent| !agent.live))
            .collect();
        if silent.len() > usize::try_from(limit).unwrap_or(0) {
            return Some(format!(
                "aborted by abort.maxSilentAgents: {} untargeted agents stopped reporting ({}), the limit is {limit}",
                silent.len(),
                names(&silent)
            ));
        }
    }
    if let (Some(limit), Some(injected_at), Some(percent)) = (
        spec.abort.min_reachable_percent,
        status.injected_at.as_ref().map(|t| t.0),
        measured.reachable_percent,
    ) {
        let grace = spec
            .abort
            .recover_after
            .as_deref()
            .and_then(|text| duration::parse(text).ok())
            .unwrap_or(DEFAULT_RECOVER_AFTER);
        let since = elapsed(injected_at, now);
        if since >= grace && percent < limit {
            return Some(format!(
                "aborted by abort.minReachablePercent: {percent}% of pairs of untargeted agents reachable {} after injection, the limit is {limit}%",
                format_precise(since)
            ));
        }
    }
    None
}

/// A verdict with its condition reason and the why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Judgement {
    pub verdict: &'static str,
    pub reason: &'static str,
    pub message: String,
}

/// Judges a reverted experiment: Failed when aborted or an expectation does not hold,
/// Inconclusive when the agents' reports cannot tell, Passed otherwise.
pub fn judge(
    spec: &ChaosExperimentSpec,
    status: &ChaosExperimentStatus,
    agents: &BTreeMap<String, Agent>,
    targets: &BTreeSet<String>,
) -> Judgement {
    let judgement = |verdict, reason, message: String| Judgement {
        verdict,
        reason,
        message,
    };
    if status.revert_cause == revert_cause::ABORT {
        let why = if status.verdict_message.is_empty() {
            "aborted".to_owned()
        } else {
            status.verdict_message.clone()
        };
        return judgement(verdict::FAILED, reason::ABORTED, why);
    }
    let inconclusive = |why: String| judgement(verdict::INCONCLUSIVE, reason::INCONCLUSIVE, why);
    let target_reports: Vec<(&String, &AgentChaosReport)> = agents
        .iter()
        .filter(|(node, _)| targets.contains(*node))
        .filter_map(|(node, agent)| Some((node, agent.report.as_ref()?)))
        .collect();
    if let Some((node, report)) = target_reports.iter().find(|(_, r)| !r.refused.is_empty()) {
        return inconclusive(format!(
            "target {node} could not install its fault entries: {}",
            report.refused
        ));
    }
    let revocation = spec.action.type_ == ActionType::KeyRevocation;
    if revocation && status.revoked_keys.is_empty() {
        return inconclusive("no key was revoked".into());
    }
    let expiry = spec.action.type_ == ActionType::KeyExpiry;
    if expiry && status.expiring_endorsements.is_empty() {
        return inconclusive(
            "no target's key was endorsed when the window opened: nothing was let expire".into(),
        );
    }
    if !revocation && status.kills.is_empty() && !target_reports.iter().any(|(_, r)| r.applied_at.is_some()) {
        return inconclusive("no target reported installing its fault entries".into());
    }
    if !status.kills.is_empty()
        && !status
            .kills
            .iter()
            .any(|k| k.killed_at.is_some() && !k.pod.is_empty())
    {
        return inconclusive("no agent pod was killed".into());
    }
    let untargeted_reported = agents
        .iter()
        .any(|(node, agent)| !targets.contains(node) && agent.report.is_some());
    if !untargeted_reported {
        return inconclusive("no untargeted agent reported on the experiment".into());
    }
    let Some(reachable) = status.reachable_percent else {
        return inconclusive("no untargeted agent reported reachability while the fault was injected".into());
    };
    let parse = |text: &Option<String>| text.as_deref().and_then(|t| duration::parse(t).ok());
    let detected = duration::parse(&status.time_to_detect).ok();
    let recovered = duration::parse(&status.time_to_recover).ok();
    let mut failures = Vec::new();
    if let Some(limit) = parse(&spec.expectations.max_time_to_detect) {
        match detected {
            Some(took) if took > limit => failures.push(format!(
                "timeToDetect {} exceeds expectations.maxTimeToDetect {}",
                status.time_to_detect,
                format_precise(limit)
            )),
            Some(_) => {}
            None => failures.push(format!(
                "no untargeted agent detected the fault; expectations.maxTimeToDetect is {}",
                format_precise(limit)
            )),
        }
    }
    if let Some(limit) = parse(&spec.expectations.max_time_to_recover) {
        match recovered {
            Some(took) if took > limit => failures.push(format!(
                "timeToRecover {} exceeds expectations.maxTimeToRecover {}",
                status.time_to_recover,
                format_precise(limit)
            )),
            Some(_) => {}
            None => failures.push(format!(
                "the untargeted agents did not route around the targets while the fault was injected; expectations.maxTimeToRecover is {}",
                format_precise(limit)
            )),
        }
    }
    if expiry && status.time_to_detect.is_empty() {
        failures.push("no agent refused the target's key after it ran out".into());
    }
    if revocation && status.time_to_detect_by_all.is_empty() {
        let unaware: Vec<&String> = agents
            .iter()
            .filter(|(node, agent)| !targets.contains(*node) && agent.live)
            .filter(|(_, agent)| agent.report.as_ref().is_none_or(|r| r.detected_at.is_none()))
            .map(|(node, _)| node)
            .collect();
        failures.push(format!(
            "not every agent refused the revoked keys while the window was open: {} did not",
            names(&unaware)
        ));
    }
    if (revocation || expiry) && status.time_to_recover.is_empty() {
        failures
            .push("no target rejoined the mesh with a new, endorsed key while the window was open".into());
    }
    if spec.action.type_ == ActionType::FalseMetric && !status.false_accusations.is_empty() {
        failures.push(format!(
            "honest agents were accused of lying about their links: {}",
            names(&status.false_accusations)
        ));
    }
    // A forger of advertisements (or of its own signatures) still forwards the others'
    // genuine ones: routes through it are not a failure of the mesh unless the spec says so.
    // A revoked node that rejoined with a new key rightly carries traffic again.
    let forger = matches!(
        spec.action.type_,
        ActionType::ForgedBeacon
            | ActionType::ReplayedBeacon
            | ActionType::SignatureFailure
            | ActionType::KeyRevocation
            | ActionType::KeyExpiry
    );
    let least = spec
        .expectations
        .min_reachable_percent
        .unwrap_or(if forger { 0 } else { 100 });
    if reachable < least {
        failures.push(format!(
            "reachablePercent {reachable}% is below expectations.minReachablePercent {least}%"
        ));
    }
    if !failures.is_empty() {
        return judgement(verdict::FAILED, reason::EXPECTATION_FAILED, failures.join("; "));
    }
    let detection = match detected {
        Some(_) => format!(
            "detected after {} by {}",
            status.time_to_detect, status.detected_by
        ),
        None => "not detected".to_owned(),
    };
    let recovery = match recovered {
        Some(_) if revocation => format!(
            "every agent refused the revoked keys after {}; the target rejoined with a new key after {}",
            status.time_to_detect_by_all, status.time_to_recover
        ),
        Some(_) if expiry => format!(
            "the target rejoined with a new key {} after its key ran out",
            status.time_to_recover
        ),
        Some(_) => format!("recovered after {}", status.time_to_recover),
        None => "no recovery needed".to_owned(),
    };
    judgement(
        verdict::PASSED,
        reason::PASSED,
        format!(
            "{detection}; {recovery}; {reachable}% of pairs of untargeted agents reachable at the end of the fault"
        ),
    )
}

/// nodeKill: each kill's time to detect, from the first detection of its node by an untargeted
/// agent at or after the kill.
pub(super) fn measure_kills(
    status: &mut ChaosExperimentStatus,
    agents: &BTreeMap<String, Agent>,
    targets: &BTreeSet<String>,
) {
    for kill in status.kills.iter_mut().filter(|k| k.time_to_detect.is_empty()) {
        let Some(killed_at) = kill.killed_at.as_ref().map(|t| t.0) else {
            continue;
        };
        let first = agents
            .iter()
            .filter(|(node, _)| !targets.contains(*node))
            .filter_map(|(node, agent)| {
                let report = agent.report.as_ref()?;
                let seen = report.detections.iter().find(|d| d.node == kill.node)?;
                let at = seen.at.as_ref()?.0;
                (at >= killed_at).then(|| (at, format!("{node}: {}", seen.what)))
            })
            .min();
        if let Some((at, by)) = first {
            kill.time_to_detect = format_precise(elapsed(killed_at, at));
            kill.detected_by = by;
        }
    }
    let killed: Vec<(String, Timestamp)> = status
        .kills
        .iter()
        .filter_map(|k| Some((k.node.clone(), k.killed_at.as_ref()?.0)))
        .collect();
    for kill in status.kills.iter_mut().filter(|k| k.time_to_recover.is_empty()) {
        let Some(killed_at) = kill.killed_at.as_ref().map(|t| t.0) else {
            continue;
        };
        // The reports that already account for every node killed up to this one.
        let so_far: Vec<&String> = killed
            .iter()
            .filter(|(_, at)| *at <= killed_at)
            .map(|(node, _)| node)
            .collect();
        if let Some(recovered) = avoided_since(agents, targets, &so_far) {
            kill.time_to_recover = format_precise(elapsed(killed_at, recovered.max(killed_at)));
        }
    }
}

/// When every live untargeted agent's routes last came to avoid `faulty` (as their reports say,
/// each accounting for all of `faulty`), or `None` while one does not.
fn avoided_since(
    agents: &BTreeMap<String, Agent>,
    targets: &BTreeSet<String>,
    faulty: &[&String],
) -> Option<Timestamp> {
    let mut latest: Option<Timestamp> = None;
    for agent in agents
        .iter()
        .filter(|(node, agent)| agent.live && !targets.contains(*node))
        .map(|(_, agent)| agent)
    {
        let report = agent.report.as_ref()?;
        let since = report.avoiding_since.as_ref()?.0;
        let accounts = faulty.iter().all(|f| report.faulty.contains(f));
        if !accounts || report.reachable < report.peers {
            return None;
        }
        latest = Some(latest.map_or(since, |l| l.max(since)));
    }
    latest
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mk_agents(links: &[(&str, &str, u64)]) -> BTreeMap<String, Agent> {
        let mut agents: BTreeMap<String, Agent> = BTreeMap::new();
        for (node, neighbour, bound) in links {
            agents
                .entry((*node).to_owned())
                .or_default()
                .clock_bounds
                .insert((*neighbour).to_owned(), *bound);
        }
        agents
    }

    fn micro(seconds: i64) -> k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime {
        k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime(
            Timestamp::from_millisecond(1_800_000_000_000 + seconds * 1000).unwrap(),
        )
    }

    /// A live untargeted agent that refused the key at `detected` (seconds) and had the target
    /// back at `rejoined`.
    fn refusing(detected: Option<i64>, rejoined: Option<i64>) -> Agent {
        Agent {
            live: true,
            report: Some(AgentChaosReport {
                detected_at: detected.map(micro),
                detection: "n3 revoked (key epochs up to 2)".into(),
                rejoined_at: rejoined.map(micro),
                reachable: 3,
                peers: 3,
                ..AgentChaosReport::default()
            }),
            ..Agent::default()
        }
    }

    #[test]
    fn a_revocation_passes_when_every_agent_refused_the_key_and_the_target_rejoined() {
        let spec: ChaosExperimentSpec = serde_norway::from_str(
            "{target: {meshRef: {name: demo}}, action: {type: keyRevocation}, duration: 20s}",
        )
        .unwrap();
        let mut status = ChaosExperimentStatus {
            injected_at: Some(micro(0)),
            revoked_keys: vec![x0tta6bl4_api::mesh_network::RevokedKey {
                node_name: "n3".into(),
                through_key_epoch: 2,
                reason: String::new(),
            }],
            ..ChaosExperimentStatus::default()
        };
        let targets = BTreeSet::from(["n3".to_owned()]);
        let mut agents = BTreeMap::from([
            ("n1".to_owned(), refusing(Some(1), None)),
            ("n2".to_owned(), refusing(None, None)),
            (
                "n3".to_owned(),
                Agent {
                    live: true,
                    ..Agent::default()
                },
            ),
            ("n4".to_owned(), refusing(Some(2), Some(5))),
        ]);
        let measured = measure(&status, &agents, &targets, None);
        assert_eq!(measured.detected_by_all, None, "n2 has not refused the key yet");
        record(&mut status, &measured, true);
        let failed = judge(&spec, &status, &agents, &targets);
        assert_eq!(failed.verdict, verdict::FAILED);
        assert!(failed.message.contains("n2 did not"), "{}", failed.message);

        agents.insert("n2".to_owned(), refusing(Some(3), None));
        let measured = measure(&status, &agents, &targets, None);
        assert_eq!(measured.detected_by_all, Some(Duration::from_secs(3)));
        assert_eq!(
            measured.recovery,
            Some(Duration::from_secs(5)),
            "TTR is the rejoin"
        );
        record(&mut status, &measured, true);
        let passed = judge(&spec, &status, &agents, &targets);
        assert_eq!(passed.verdict, verdict::PASSED, "{}", passed.message);
        assert!(
            passed
                .message
                .contains("every agent refused the revoked keys after 3s"),
            "{}",
            passed.message
        );
    }

    #[test]
    fn the_skew_bound_is_the_tightest_path_sum_to_the_farthest_end() {
        // a-b 100 µs (b says 300: the tighter end counts), b-c 50, a-c 400: a to c is 150 via b.
        let agents = mk_agents(&[("a", "b", 100), ("b", "a", 300), ("b", "c", 50), ("c", "a", 400)]);
        let (b, c) = ("b".to_owned(), "c".to_owned());
        assert_eq!(skew_bound(&agents, "a", &[&b]), Some(Duration::from_micros(100)));
        assert_eq!(
            skew_bound(&agents, "a", &[&b, &c]),
            Some(Duration::from_micros(150))
        );
        let lonely = "d".to_owned();
        assert_eq!(
            skew_bound(&agents, "a", &[&b, &lonely]),
            None,
            "no bound reaches d: nothing can be said"
        );
    }
}
