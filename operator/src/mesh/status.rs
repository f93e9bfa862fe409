//! MeshNetwork status computed from what was observed (pure, no IO).
use k8s_openapi::api::apps::v1::DaemonSetStatus;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use x0tta6bl4_api::MeshNetworkStatus;

use crate::agent_report::AgentReport;
use x0tta6bl4_api::PeeringStatus;
use x0tta6bl4_api::condition::{self, CONVERGED, DEGRADED, Desired, PROGRESSING, READY, Status};
use x0tta6bl4_api::peering::{self, Peering};

/// What the reconciler saw of the mesh's children and agents.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Observed {
    /// The DaemonSet's status, if the DaemonSet exists and the controller has seen it.
    pub daemon_set: Option<DaemonSetStatus>,
    /// Whether the DaemonSet controller has caught up with the latest DaemonSet spec.
    pub daemon_set_current: bool,
    /// What the agents of this mesh report in their MeshNode records.
    pub agents: Vec<AgentReport>,
    /// The node names the agents apply the peering rule to (records with an endpoint).
    pub peering_members: Vec<String>,
    /// The peering rule in force (`spec.routing.peering`).
    pub peering: Peering,
    /// Hash of the agent configuration just applied.
    pub config_hash: String,
    /// The PQ summary of the spec.
    pub post_quantum: String,
}

/// Converged when every agent reports a route to every other reporting agent and every
/// selected node reports; also the share of agent pairs that can reach each other.
fn convergence(agents: &[AgentReport], desired: i32) -> (Desired, i32) {
    let n = agents.len() as i64;
    if n == 0 {
        let message = format!("0/{desired} agents published a MeshNode record");
        return (
            Desired::new(CONVERGED, Status::Unknown, "AwaitingAgentReports", message),
            0,
        );
    }
    let others = n - 1;
    let reachable: i64 = agents
        .iter()
        .map(|a| i64::from(a.route_count).clamp(0, others))
        .sum();
    let percent = if others == 0 {
        100
    } else {
        (reachable * 100 / (n * others)) as i32
    };
    let lacking = agents
        .iter()
        .filter(|a| i64::from(a.route_count) < others)
        .count();
    let condition = if lacking == 0 && n >= i64::from(desired) {
        Desired::new(
            CONVERGED,
            Status::True,
            "AllRoutesKnown",
            format!("each of {n} agents has a route to the other {others}"),
        )
    } else if lacking == 0 {
        Desired::new(
            CONVERGED,
            Status::False,
            "AwaitingAgentReports",
            format!("{n}/{desired} agents report; those reporting reach each other"),
        )
    } else {
        Desired::new(
            CONVERGED,
            Status::False,
            "PartialReachability",
            format!("{lacking} of {n} agents lack routes; {percent}% of agent pairs reachable"),
        )
    };
    (condition, percent)
}

/// A condition that flipped, for an Event.
pub type Transition = Desired;

/// Computes the status of a valid mesh.
pub fn compute(
    current: Option<&MeshNetworkStatus>,
    generation: Option<i64>,
    observed: &Observed,
    now: &Time,
) -> (MeshNetworkStatus, Vec<Transition>) {
    let ds = observed.daemon_set.clone().unwrap_or_default();
    let desired = ds.desired_number_scheduled;
    let ready = ds.number_ready;
    let updated = ds.updated_number_scheduled.unwrap_or(0);
    let unavailable = ds.number_unavailable.unwrap_or(0);
    let rolled_out = observed.daemon_set_current && updated >= desired && ready >= desired;

    let ready_condition = if observed.daemon_set.is_none() || !observed.daemon_set_current {
        Desired::new(
            READY,
            Status::False,
            "Applying",
            "waiting for the DaemonSet controller to pick up the agent DaemonSet",
        )
    } else if desired == 0 {
        Desired::new(
            READY,
            Status::False,
            "NoNodes",
            "no node matches spec.nodeSelector and tolerates the agent",
        )
    } else if rolled_out {
        Desired::new(
            READY,
            Status::True,
            "AllNodesReady",
            format!("{ready}/{desired} agents ready"),
        )
    } else {
        Desired::new(
            READY,
            Status::False,
            "AgentsNotReady",
            format!("{ready}/{desired} agents ready, {updated} updated"),
        )
    };
    let progressing = if rolled_out {
        Desired::new(
            PROGRESSING,
            Status::False,
            "RolloutComplete",
            format!("{updated}/{desired} agents run the current spec"),
        )
    } else {
        Desired::new(
            PROGRESSING,
            Status::True,
            "RollingOut",
            format!("{updated}/{desired} agents updated, {ready} ready"),
        )
    };
    // Degraded means "was serving, and agents went down". Agents still starting after a create
    // or a rollout are progress, not degradation.
    let was_serving = current.is_some_and(|s| {
        condition::is_true(&s.conditions, READY)
            || condition::find(&s.conditions, DEGRADED)
                .is_some_and(|c| c.status == "True" && c.reason == "AgentsUnavailable")
    });
    let degraded = if was_serving && observed.daemon_set_current && updated >= desired && unavailable > 0 {
        Desired::new(
            DEGRADED,
            Status::True,
            "AgentsUnavailable",
            format!("{unavailable} of {desired} agents unavailable"),
        )
    } else {
        Desired::new(
            DEGRADED,
            Status::False,
            "AsExpected",
            "no agent of the current spec is unavailable",
        )
    };
    let (converged, reachable_pairs_percent) = convergence(&observed.agents, desired);

    let mut status = ours(current);
    let transitions = condition::set_all(
        &mut status.conditions,
        [ready_condition, progressing, degraded, converged],
        generation,
        now,
    );
    status.observed_generation = generation;
    status.desired_nodes = desired;
    status.ready_nodes = ready;
    status.updated_nodes = updated;
    status.reporting_nodes = observed.agents.len() as i32;
    status.reachable_pairs_percent = reachable_pairs_percent;
    status.pq_sessions = observed.agents.iter().map(|a| a.pq_sessions).sum();
    status.classical_sessions = observed.agents.iter().map(|a| a.classical_sessions).sum();
    status.last_reroute_duration = observed
        .agents
        .iter()
        .filter_map(|a| a.last_reroute)
        .max()
        .map(x0tta6bl4_api::duration::format)
        .unwrap_or_default();
    status.ready_nodes_text = format!("{ready}/{desired}");
    status.post_quantum = observed.post_quantum.clone();
    status.config_hash = observed.config_hash.clone();
    status.peering = peering_status(observed);
    (status, transitions)
}

/// The graph the peering rule gives the members, and the sessions the live agents report
/// against it; `None` before any agent published an endpoint.
fn peering_status(observed: &Observed) -> Option<PeeringStatus> {
    if observed.peering_members.is_empty() {
        return None;
    }
    let mut members: Vec<&str> = observed.peering_members.iter().map(String::as_str).collect();
    members.sort_unstable();
    members.dedup();
    let summary = peering::summarise(&observed.peering.graph(&members));
    let count = |n: usize| i32::try_from(n).unwrap_or(i32::MAX);
    let reported: i32 = observed
        .agents
        .iter()
        .map(|a| a.pq_sessions + a.classical_sessions)
        .sum();
    // Both ends of a session report it.
    let sessions = reported / 2;
    let wanted = count(summary.links);
    Some(PeeringStatus {
        members: count(summary.members),
        wanted_sessions: wanted,
        sessions,
        sessions_text: format!("{sessions}/{wanted}"),
        min_peers: count(summary.min_peers),
        max_peers: count(summary.max_peers),
        connected: summary.connected,
        diameter_hops: summary.diameter.map(count),
    })
}

/// The part of the status this reconciler writes: everything but `revocation`, which the
/// revocation controller owns under its own field manager (a server-side apply that carried
/// a stale copy would take it over and overwrite a newer list).
fn ours(current: Option<&MeshNetworkStatus>) -> MeshNetworkStatus {
    MeshNetworkStatus {
        revocation: None,
        ..current.cloned().unwrap_or_default()
    }
}

/// Whether `new` differs from what this reconciler last wrote of `current`.
pub fn changed(current: Option<&MeshNetworkStatus>, new: &MeshNetworkStatus) -> bool {
    current.is_none() || ours(current) != *new
}

/// Status of a mesh whose spec the schema admitted but the operator cannot act on.
pub fn invalid(
    current: Option<&MeshNetworkStatus>,
    generation: Option<i64>,
    message: String,
    now: &Time,
) -> (MeshNetworkStatus, Vec<Transition>) {
    let mut status = ours(current);
    let conditions = [
        Desired::new(READY, Status::False, "InvalidSpec", message.clone()),
        Desired::new(
            PROGRESSING,
            Status::False,
            "InvalidSpec",
            "nothing is rolled out until the spec is fixed",
        ),
        Desired::new(DEGRADED, Status::True, "InvalidSpec", message),
    ];
    let transitions = condition::set_all(&mut status.conditions, conditions, generation, now);
    status.observed_generation = generation;
    (status, transitions)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::jiff::Timestamp;

    fn at(s: i64) -> Time {
        Time(Timestamp::from_second(s).unwrap())
    }

    fn observed(desired: i32, ready: i32, updated: i32) -> Observed {
        Observed {
            daemon_set: Some(DaemonSetStatus {
                desired_number_scheduled: desired,
                number_ready: ready,
                updated_number_scheduled: Some(updated),
                number_unavailable: Some(desired - ready),
                ..Default::default()
            }),
            daemon_set_current: true,
            agents: vec![],
            peering_members: vec![],
            peering: Peering::default(),
            config_hash: "abc".into(),
            post_quantum: "required:X25519MLKEM768/ML-DSA-65".into(),
        }
    }

    fn reason<'a>(status: &'a MeshNetworkStatus, type_: &str) -> (&'a str, &'a str) {
        let c = condition::find(&status.conditions, type_).unwrap();
        (c.status.as_str(), c.reason.as_str())
    }

    #[test]
    fn all_agents_ready_makes_the_mesh_ready_with_node_counts() {
        let (status, transitions) = compute(None, Some(1), &observed(3, 3, 3), &at(1));
        assert_eq!(reason(&status, READY), ("True", "AllNodesReady"));
        assert_eq!(reason(&status, PROGRESSING), ("False", "RolloutComplete"));
        assert_eq!(reason(&status, DEGRADED), ("False", "AsExpected"));
        assert_eq!(status.ready_nodes_text, "3/3");
        assert_eq!(status.observed_generation, Some(1));
        assert_eq!(transitions.len(), 4, "every new condition is a transition");
    }

    #[test]
    fn a_rollout_in_progress_is_progressing_not_degraded() {
        let (status, _) = compute(None, Some(2), &observed(3, 2, 1), &at(1));
        assert_eq!(reason(&status, READY), ("False", "AgentsNotReady"));
        assert_eq!(reason(&status, PROGRESSING), ("True", "RollingOut"));
        assert_eq!(reason(&status, DEGRADED).0, "False");
    }

    #[test]
    fn agents_that_go_down_after_the_mesh_was_ready_are_degraded() {
        let (ready, _) = compute(None, Some(1), &observed(3, 3, 3), &at(1));
        let (status, transitions) = compute(Some(&ready), Some(1), &observed(3, 1, 3), &at(2));
        assert_eq!(reason(&status, DEGRADED), ("True", "AgentsUnavailable"));
        assert_eq!(reason(&status, READY), ("False", "AgentsNotReady"));
        assert!(transitions.iter().any(|t| t.type_ == DEGRADED));
    }

    #[test]
    fn agents_still_starting_after_a_create_are_not_degraded() {
        let (status, _) = compute(None, Some(1), &observed(3, 0, 3), &at(1));
        assert_eq!(reason(&status, DEGRADED).0, "False");
        assert_eq!(reason(&status, PROGRESSING), ("True", "RollingOut"));
    }

    #[test]
    fn the_peering_graph_of_the_members_is_reported_with_the_sessions_up() {
        let mut seen = observed(10, 10, 10);
        assert_eq!(compute(None, Some(1), &seen, &at(1)).0.peering, None);
        seen.peering_members = (0..10).map(|i| format!("x0-peer-{i}")).collect();
        seen.peering = Peering {
            near_peers: 1,
            long_links: 1,
        };
        // Nine agents report two sessions each, one agent is missing.
        seen.agents = (0..9).map(|_| report(9, None)).collect();

        let (status, _) = compute(None, Some(1), &seen, &at(1));

        let peering = status.peering.unwrap();
        let names: Vec<&str> = seen.peering_members.iter().map(String::as_str).collect();
        let graph = seen.peering.graph(&names);
        let wanted = graph.iter().map(|peers| peers.len()).sum::<usize>() / 2;
        assert_eq!(peering.members, 10);
        assert_eq!(peering.wanted_sessions as usize, wanted);
        assert!(peering.wanted_sessions >= 10, "at least the ring");
        assert_eq!(peering.sessions, 9);
        assert_eq!(peering.sessions_text, format!("9/{wanted}"));
        assert!(peering.connected);
        assert!(peering.min_peers >= 2);
        assert!(peering.diameter_hops.is_some_and(|hops| (1..=5).contains(&hops)));
    }

    fn report(routes: i32, reroute_ms: Option<u64>) -> AgentReport {
        AgentReport {
            route_count: routes,
            pq_sessions: 2,
            classical_sessions: 0,
            last_reroute: reroute_ms.map(std::time::Duration::from_millis),
        }
    }

    #[test]
    fn the_mesh_converges_when_every_agent_reaches_every_other() {
        let mut seen = observed(3, 3, 3);
        seen.agents = vec![report(2, None), report(2, Some(420)), report(2, Some(180))];
        let (status, _) = compute(None, Some(1), &seen, &at(1));
        assert_eq!(reason(&status, CONVERGED), ("True", "AllRoutesKnown"));
        assert_eq!(status.reachable_pairs_percent, 100);
        assert_eq!(status.pq_sessions, 6);
        assert_eq!(status.last_reroute_duration, "420ms");
    }

    #[test]
    fn a_record_silent_for_too_long_is_a_dead_agents() {
        let mut record: x0tta6bl4_api::MeshNode = serde_norway::from_str(
            "apiVersion: x0tta6bl4.io/v1alpha1\nkind: MeshNode\nmetadata: {name: m-n}\nspec: {meshName: m, nodeName: n}",
        )
        .unwrap();
        assert_eq!(AgentReport::from_record(&record, &at(100)), None, "no report yet");
        record.status = Some(x0tta6bl4_api::MeshNodeStatus {
            route_count: 2,
            last_report_time: Some(at(100)),
            ..Default::default()
        });
        assert_eq!(
            AgentReport::from_record(&record, &at(150)).unwrap().route_count,
            2
        );
        assert_eq!(AgentReport::from_record(&record, &at(191)), None);
    }

    #[test]
    fn partial_reachability_is_reported_with_the_share_of_pairs() {
        let mut seen = observed(4, 4, 4);
        seen.agents = vec![report(3, None), report(3, None), report(1, None), report(1, None)];
        let (status, _) = compute(None, Some(1), &seen, &at(1));
        assert_eq!(reason(&status, CONVERGED), ("False", "PartialReachability"));
        assert_eq!(status.reachable_pairs_percent, 66);
    }

    #[test]
    fn no_matching_node_says_so() {
        let (status, _) = compute(None, Some(1), &observed(0, 0, 0), &at(1));
        assert_eq!(reason(&status, READY), ("False", "NoNodes"));
    }

    #[test]
    fn recomputing_an_unchanged_mesh_changes_nothing_and_emits_no_transition() {
        let (first, _) = compute(None, Some(1), &observed(3, 3, 3), &at(1));
        let (second, transitions) = compute(Some(&first), Some(1), &observed(3, 3, 3), &at(99));
        assert_eq!(first, second);
        assert!(transitions.is_empty());
    }

    #[test]
    fn an_invalid_spec_is_not_ready_with_reason_invalid_spec_and_recovers_on_fix() {
        let (status, transitions) = invalid(None, Some(4), "spec.agent.image: bad".into(), &at(1));
        assert_eq!(reason(&status, READY), ("False", "InvalidSpec"));
        assert_eq!(status.observed_generation, Some(4));
        assert!(transitions.iter().any(|t| t.type_ == READY));
        let (fixed, transitions) = compute(Some(&status), Some(5), &observed(3, 3, 3), &at(2));
        assert_eq!(reason(&fixed, READY), ("True", "AllNodesReady"));
        assert!(
            transitions
                .iter()
                .any(|t| t.type_ == READY && t.status == Status::True)
        );
    }
}
