//! Aggregators that stop reporting are replaced (pure): a running job whose aggregator, or a
//! zone's aggregator, has no live agent gets the next live participant (of the zone) in the
//! job's seeded order. The new aggregator resumes after the last round written to the round
//! ConfigMaps; participants train a round again when a new aggregator asks for it.
use std::collections::BTreeSet;

use x0tta6bl4_api::FLTrainingRoundStatus;

use crate::ranking::rank;

/// Replaces dead aggregators in `status`; returns what changed, one sentence each.
pub fn replace_dead_aggregators(
    status: &mut FLTrainingRoundStatus,
    live: &BTreeSet<String>,
    seed: &str,
) -> Vec<String> {
    let mut changes = Vec::new();
    let successor = |candidates: Vec<&String>, current: &str| {
        candidates
            .into_iter()
            .filter(|node| *node != current && live.contains(*node))
            .min_by_key(|node| rank(seed, node))
            .cloned()
    };
    if !live.contains(&status.aggregator)
        && let Some(next) = successor(status.participants.iter().collect(), &status.aggregator)
    {
        changes.push(format!(
            "the aggregator {} stopped reporting; {next} aggregates from the last round written",
            status.aggregator
        ));
        status.aggregator = next;
    }
    let zones: Vec<(String, String)> = status
        .zone_aggregators
        .iter()
        .map(|(zone, node)| (zone.clone(), node.clone()))
        .collect();
    for (zone, current) in zones {
        if live.contains(&current) {
            continue;
        }
        let members: Vec<&String> = status
            .zones
            .iter()
            .filter(|(_, z)| **z == zone)
            .map(|(node, _)| node)
            .collect();
        if let Some(next) = successor(members, &current) {
            changes.push(format!(
                "zone {zone}'s aggregator {current} stopped reporting; {next} aggregates the zone"
            ));
            status.zone_aggregators.insert(zone, next);
        }
    }
    changes
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn status() -> FLTrainingRoundStatus {
        FLTrainingRoundStatus {
            participants: ["a", "b", "c", "d"].map(String::from).to_vec(),
            aggregator: "a".into(),
            zones: BTreeMap::from([
                ("a".into(), "z1".into()),
                ("b".into(), "z1".into()),
                ("c".into(), "z2".into()),
                ("d".into(), "z2".into()),
            ]),
            zone_aggregators: BTreeMap::from([("z1".into(), "a".into()), ("z2".into(), "c".into())]),
            ..FLTrainingRoundStatus::default()
        }
    }

    fn live(nodes: &[&str]) -> BTreeSet<String> {
        nodes.iter().map(|n| n.to_string()).collect()
    }

    #[test]
    fn live_aggregators_stay() {
        let mut s = status();
        assert!(replace_dead_aggregators(&mut s, &live(&["a", "b", "c", "d"]), "uid").is_empty());
        assert_eq!(s, status());
    }

    #[test]
    fn a_dead_aggregator_is_replaced_by_the_next_live_participant_in_seeded_order() {
        let mut s = status();
        let changes = replace_dead_aggregators(&mut s, &live(&["b", "c", "d"]), "uid");
        // "a" aggregated the job and zone z1: z1 can only go to "b"; the job to b, c or d,
        // whichever ranks first for this seed.
        assert_eq!(s.zone_aggregators["z1"], "b");
        assert_eq!(s.zone_aggregators["z2"], "c");
        let expected = ["b", "c", "d"]
            .into_iter()
            .min_by_key(|n| rank("uid", n))
            .unwrap();
        assert_eq!(s.aggregator, expected);
        assert_eq!(changes.len(), 2, "{changes:?}");
        assert!(changes[0].starts_with("the aggregator a stopped reporting"));
        // The same inputs choose the same successor.
        let mut again = status();
        replace_dead_aggregators(&mut again, &live(&["b", "c", "d"]), "uid");
        assert_eq!(again, s);
    }

    #[test]
    fn nobody_live_to_take_over_changes_nothing() {
        let mut s = status();
        s.zone_aggregators.clear();
        s.zones.clear();
        assert!(replace_dead_aggregators(&mut s, &live(&[]), "uid").is_empty());
        assert_eq!(s.aggregator, "a");
    }
}
