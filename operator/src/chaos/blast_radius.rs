//! The blast-radius checks made before anything is injected (pure).
use std::collections::{BTreeMap, BTreeSet};

use x0tta6bl4_api::ChaosExperimentSpec;
use x0tta6bl4_api::chaos::{ActionSpec, ActionType};

use super::plan::{describe_action, names};
use super::targets::Agent;

/// The two blast-radius checks, each `Ok(what holds)` or `Err(why it is refused)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlastRadiusCheck {
    /// The share of live agents targeted against spec.blastRadius.maxTargetPercent.
    pub share: Result<String, String>,
    /// Whether the untargeted agents stay connected without the targets.
    pub connectivity: Result<String, String>,
}

impl BlastRadiusCheck {
    /// Why the experiment must not run, if it must not.
    pub fn refusal(&self) -> Option<String> {
        let refusals: Vec<&str> = [&self.share, &self.connectivity]
            .into_iter()
            .filter_map(|check| check.as_ref().err().map(String::as_str))
            .collect();
        (!refusals.is_empty()).then(|| refusals.join("; "))
    }
}

/// Whether a fault cuts the targets' links (rather than degrading them): a partition, or loss
/// or corruption of every packet. Only these can split the untargeted agents.
fn cuts_links(action: &ActionSpec) -> bool {
    match action.type_ {
        ActionType::Partition | ActionType::NodeKill => true,
        ActionType::Loss | ActionType::Corrupt => action.probability_percent.is_some_and(|p| p >= 100),
        _ => false,
    }
}

/// The blast-radius checks, before anything is injected: the targets may be at most
/// maxTargetPercent of the live agents, and a fault that cuts links must not split the
/// untargeted agents (the graph of the live agents' neighbour links, a link where either side
/// lists the other) into more parts than they were in, unless allowDisconnect.
pub fn blast_radius(
    spec: &ChaosExperimentSpec,
    targets: &[String],
    agents: &BTreeMap<String, Agent>,
) -> BlastRadiusCheck {
    let live: BTreeSet<&str> = agents
        .iter()
        .filter(|(_, a)| a.live)
        .map(|(n, _)| n.as_str())
        .collect();
    let limit = usize::try_from(spec.blast_radius.max_target_percent).unwrap_or(0);
    let percent = (targets.len() * 100).checked_div(live.len()).unwrap_or(100);
    let numbers = format!(
        "{} of {} live agents targeted ({percent}%), spec.blastRadius.maxTargetPercent is {limit}",
        targets.len(),
        live.len()
    );
    let share = if targets.len() * 100 > limit * live.len() {
        Err(numbers)
    } else {
        Ok(numbers)
    };

    let connectivity = if !cuts_links(&spec.action) {
        Ok(format!(
            "a {} fault degrades links without cutting them",
            describe_action(&spec.action)
        ))
    } else {
        let mut links: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
        for (node, agent) in agents.iter().filter(|(n, _)| live.contains(n.as_str())) {
            for neighbour in agent.neighbours.iter().filter(|n| live.contains(n.as_str())) {
                links.entry(node).or_default().insert(neighbour);
                links.entry(neighbour).or_default().insert(node);
            }
        }
        let targeted: BTreeSet<&str> = targets.iter().map(String::as_str).collect();
        let untargeted: BTreeSet<&str> = live.difference(&targeted).copied().collect();
        let before = parts(&live, &links)
            .into_iter()
            .filter(|part| part.iter().any(|n| untargeted.contains(n.as_str())))
            .count();
        let after = parts(&untargeted, &links);
        if after.len() <= before {
            Ok(format!(
                "the {} untargeted agents stay connected without the targets",
                untargeted.len()
            ))
        } else {
            let listed: Vec<String> = after.iter().map(|part| format!("{{{}}}", names(part))).collect();
            let split = format!(
                "without {} the {} untargeted agents split into {} parts: {}",
                names(targets),
                untargeted.len(),
                after.len(),
                listed.join(", ")
            );
            if spec.blast_radius.allow_disconnect {
                Ok(format!("{split}, allowed by spec.blastRadius.allowDisconnect"))
            } else {
                Err(format!("{split}; spec.blastRadius.allowDisconnect is false"))
            }
        }
    };
    BlastRadiusCheck { share, connectivity }
}

/// The connected parts of the graph `links` restricted to `nodes`.
fn parts<'a>(nodes: &BTreeSet<&'a str>, links: &BTreeMap<&'a str, BTreeSet<&'a str>>) -> Vec<Vec<String>> {
    let mut seen: BTreeSet<&str> = BTreeSet::new();
    let mut found = Vec::new();
    for &start in nodes {
        if !seen.insert(start) {
            continue;
        }
        let mut part = vec![start.to_owned()];
        let mut frontier = vec![start];
        while let Some(node) = frontier.pop() {
            for &next in links.get(node).into_iter().flatten() {
                if nodes.contains(next) && seen.insert(next) {
                    part.push(next.to_owned());
                    frontier.push(next);
                }
            }
        }
        part.sort();
        found.push(part);
    }
    found
}
