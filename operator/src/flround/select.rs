//! Who takes part in a federated job (pure): the live agents of the mesh whose nodes match the
//! selector, sampled by `participants.fractionPercent` but never fewer than `minimum`, and one
//! of them as the aggregator. A job whose rule cannot hold with the participants available is
//! refused with the arithmetic, never silently run with a weaker rule.
use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use x0tta6bl4_api::fl_round::{AggregationRule, FLTrainingRoundSpec, HierarchicalSpec};

use crate::ranking::rank;

/// An agent that could take part.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// Node name.
    pub node: String,
    /// Labels of its Node.
    pub labels: BTreeMap<String, String>,
    /// Its agent reported within the staleness bound.
    pub live: bool,
}

/// The participants of a job and its aggregator (one of them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selection {
    pub participants: Vec<String>,
    pub aggregator: String,
    /// Hierarchical jobs: each participant's zone; empty otherwise.
    pub zones: BTreeMap<String, String>,
    /// Hierarchical jobs: each zone's aggregator (its first participant in the job's seeded
    /// order); empty otherwise.
    pub zone_aggregators: BTreeMap<String, String>,
}

/// The zone of a participant whose node lacks the zone label.
pub const UNZONED: &str = "unzoned";

/// Why no selection can be made now.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectError {
    #[error("{eligible} live agents match spec.participants, spec.participants.minimum is {minimum}")]
    TooFew { eligible: usize, minimum: usize },
    #[error(
        "spec.aggregation.rule {rule} with spec.aggregation.byzantine {byzantine} needs {needed} participants, {available} available"
    )]
    RuleCannotHold {
        rule: &'static str,
        byzantine: usize,
        needed: usize,
        available: usize,
    },
    #[error(
        "zone {zone}: spec.aggregation.rule {rule} with spec.aggregation.byzantine {byzantine} needs {needed} participants per zone, the zone has {available}"
    )]
    ZoneCannotHold {
        zone: String,
        rule: &'static str,
        byzantine: usize,
        needed: usize,
        available: usize,
    },
    #[error(
        "spec.aggregation.hierarchical.globalRule {rule} with globalByzantine {byzantine} needs {needed} zones, the participants are in {available}"
    )]
    TooFewZones {
        rule: &'static str,
        byzantine: usize,
        needed: usize,
        available: usize,
    },
    #[error(
        "spec.aggregation.rule {rule} with spec.aggregation.byzantine {byzantine} needs {needed} updates, spec.quorumPercent makes a round aggregate with {quorum} of {participants}"
    )]
    QuorumCannotHold {
        rule: &'static str,
        byzantine: usize,
        needed: usize,
        quorum: usize,
        participants: usize,
    },
    #[error("spec.participants.selector: {0}")]
    BadSelector(String),
}

/// Participants needed by `rule` to tolerate `f` Byzantine ones (the papers' bounds).
pub fn needed_for(rule: AggregationRule, f: usize) -> (&'static str, usize) {
    match rule {
        AggregationRule::Fedavg => ("fedavg", 1),
        AggregationRule::CenteredClipping => ("centeredClipping", 1),
        AggregationRule::Median => ("median", 2 * f + 1),
        AggregationRule::TrimmedMean => ("trimmedMean", 2 * f + 1),
        AggregationRule::Krum => ("krum", 2 * f + 3),
        AggregationRule::MultiKrum => ("multiKrum", 2 * f + 3),
        AggregationRule::Bulyan => ("bulyan", 4 * f + 3),
    }
}

/// Whether `labels` match `selector` (matchLabels and the four matchExpressions operators).
pub fn matches(selector: &LabelSelector, labels: &BTreeMap<String, String>) -> Result<bool, String> {
    let by_label = selector
        .match_labels
        .iter()
        .flatten()
        .all(|(key, value)| labels.get(key) == Some(value));
    let mut by_expression = true;
    for expression in selector.match_expressions.iter().flatten() {
        let value = labels.get(&expression.key);
        let values = expression.values.as_deref().unwrap_or_default();
        let holds = match expression.operator.as_str() {
            "In" => value.is_some_and(|v| values.contains(v)),
            "NotIn" => value.is_none_or(|v| !values.contains(v)),
            "Exists" => value.is_some(),
            "DoesNotExist" => value.is_none(),
            other => {
                return Err(format!(
                    "operator '{other}' is not In, NotIn, Exists or DoesNotExist"
                ));
            }
        };
        by_expression &= holds;
    }
    Ok(by_label && by_expression)
}

/// Chooses the participants of a job: `seed` (the job's UID) fixes the sample, so every
/// reconcile of the same job chooses the same agents.
pub fn select(
    spec: &FLTrainingRoundSpec,
    candidates: &[Candidate],
    seed: &str,
) -> Result<Selection, SelectError> {
    let mut eligible = Vec::new();
    for candidate in candidates.iter().filter(|c| c.live) {
        let selected = match &spec.participants.selector {
            Some(selector) => matches(selector, &candidate.labels).map_err(SelectError::BadSelector)?,
            None => true,
        };
        if selected {
            eligible.push(candidate.node.clone());
        }
    }
    let minimum = usize::try_from(spec.participants.minimum).unwrap_or(1).max(1);
    if eligible.len() < minimum {
        return Err(SelectError::TooFew {
            eligible: eligible.len(),
            minimum,
        });
    }
    let fraction = usize::try_from(spec.participants.fraction_percent)
        .unwrap_or(100)
        .clamp(1, 100);
    let count = (eligible.len() * fraction)
        .div_ceil(100)
        .max(minimum)
        .min(eligible.len());
    let byzantine = usize::try_from(spec.aggregation.byzantine).unwrap_or(0);
    let (rule, needed) = needed_for(spec.aggregation.rule, byzantine);
    // A hierarchical job's rule holds per zone (checked once the sample is drawn). A round
    // may aggregate with only its quorum, so the quorum must be enough for the rule.
    if spec.aggregation.hierarchical.is_none() && count < needed {
        return Err(SelectError::RuleCannotHold {
            rule,
            byzantine,
            needed,
            available: count,
        });
    }
    if spec.aggregation.hierarchical.is_none() && spec.quorum(count) < needed {
        return Err(SelectError::QuorumCannotHold {
            rule,
            byzantine,
            needed,
            quorum: spec.quorum(count),
            participants: count,
        });
    }
    // A seeded shuffle: order by SHA-256(seed, node), take the first `count`.
    eligible.sort_by_cached_key(|node| rank(seed, node));
    eligible.truncate(count);
    let aggregator = eligible[0].clone();
    let zones = match &spec.aggregation.hierarchical {
        Some(hierarchical) => zones_of(spec, hierarchical, &eligible, candidates)?,
        None => BTreeMap::new(),
    };
    // `eligible` is still in seeded order: each zone's first member aggregates it.
    let mut zone_aggregators = BTreeMap::new();
    for node in &eligible {
        if let Some(zone) = zones.get(node) {
            zone_aggregators
                .entry(zone.clone())
                .or_insert_with(|| node.clone());
        }
    }
    eligible.sort();
    Ok(Selection {
        participants: eligible,
        aggregator,
        zones,
        zone_aggregators,
    })
}

/// Each participant's zone, checked against the rule inside each zone and the global rule
/// across zones.
fn zones_of(
    spec: &FLTrainingRoundSpec,
    hierarchical: &HierarchicalSpec,
    participants: &[String],
    candidates: &[Candidate],
) -> Result<BTreeMap<String, String>, SelectError> {
    let zones: BTreeMap<String, String> = participants
        .iter()
        .map(|node| {
            let zone = candidates
                .iter()
                .find(|c| c.node == *node)
                .and_then(|c| c.labels.get(&hierarchical.zone_label))
                .map_or(UNZONED, String::as_str);
            (node.clone(), zone.to_owned())
        })
        .collect();
    let mut sizes: BTreeMap<&str, usize> = BTreeMap::new();
    for zone in zones.values() {
        *sizes.entry(zone).or_default() += 1;
    }
    let byzantine = usize::try_from(spec.aggregation.byzantine).unwrap_or(0);
    let (rule, needed) = needed_for(spec.aggregation.rule, byzantine);
    if let Some((zone, available)) = sizes.iter().find(|(_, size)| **size < needed) {
        return Err(SelectError::ZoneCannotHold {
            zone: (*zone).to_owned(),
            rule,
            byzantine,
            needed,
            available: *available,
        });
    }
    let global_byzantine = usize::try_from(hierarchical.global_byzantine).unwrap_or(0);
    let (global_rule, global_needed) = needed_for(hierarchical.global_rule, global_byzantine);
    if sizes.len() < global_needed {
        return Err(SelectError::TooFewZones {
            rule: global_rule,
            byzantine: global_byzantine,
            needed: global_needed,
            available: sizes.len(),
        });
    }
    Ok(zones)
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    use super::*;

    fn spec(yaml: &str) -> FLTrainingRoundSpec {
        serde_norway::from_str(yaml).unwrap()
    }

    fn candidates(n: usize) -> Vec<Candidate> {
        (0..n)
            .map(|i| Candidate {
                node: format!("node-{i}"),
                labels: BTreeMap::from([("zone".to_owned(), if i % 2 == 0 { "a" } else { "b" }.to_owned())]),
                live: true,
            })
            .collect()
    }

    const BASE: &str = "meshRef: {name: demo}\nmodel: {kind: logisticRegression, inputDim: 4, classes: 3}\n";

    #[test]
    fn every_live_agent_takes_part_by_default_and_the_choice_is_stable() {
        let mut all = candidates(5);
        all[4].live = false;
        let first = select(&spec(BASE), &all, "uid-1").unwrap();
        assert_eq!(first.participants, vec!["node-0", "node-1", "node-2", "node-3"]);
        assert!(first.participants.contains(&first.aggregator));
        assert_eq!(select(&spec(BASE), &all, "uid-1").unwrap(), first);
    }

    #[test]
    fn a_fraction_samples_but_never_below_the_minimum() {
        let yaml = format!("{BASE}participants: {{minimum: 3, fractionPercent: 50}}\n");
        let ten = select(&spec(&yaml), &candidates(10), "uid").unwrap();
        assert_eq!(ten.participants.len(), 5, "half of ten");
        let four = select(&spec(&yaml), &candidates(4), "uid").unwrap();
        assert_eq!(
            four.participants.len(),
            3,
            "half of four is below the minimum of three"
        );
        let other = select(&spec(&yaml), &candidates(10), "another-uid").unwrap();
        assert_ne!(
            ten.participants, other.participants,
            "the sample depends on the job"
        );
    }

    #[test]
    fn too_few_agents_or_a_rule_that_cannot_hold_is_refused_with_the_numbers() {
        let yaml = format!("{BASE}participants: {{minimum: 4}}\n");
        assert_eq!(
            select(&spec(&yaml), &candidates(3), "uid")
                .unwrap_err()
                .to_string(),
            "3 live agents match spec.participants, spec.participants.minimum is 4"
        );
        let krum = format!("{BASE}participants: {{minimum: 3}}\naggregation: {{rule: krum, byzantine: 1}}\n");
        let error = select(&spec(&krum), &candidates(4), "uid").unwrap_err();
        assert_eq!(
            error,
            SelectError::RuleCannotHold {
                rule: "krum",
                byzantine: 1,
                needed: 5,
                available: 4
            }
        );
        assert!(select(&spec(&krum), &candidates(5), "uid").is_ok());
        let bulyan =
            format!("{BASE}participants: {{minimum: 3}}\naggregation: {{rule: bulyan, byzantine: 2}}\n");
        assert!(matches!(
            select(&spec(&bulyan), &candidates(10), "uid"),
            Err(SelectError::RuleCannotHold { needed: 11, .. })
        ));
    }

    #[test]
    fn a_hierarchical_job_records_zones_and_checks_the_rule_per_zone() {
        let yaml = format!(
            "{BASE}participants: {{minimum: 3}}\naggregation: {{rule: median, byzantine: 1, hierarchical: {{zoneLabel: zone, globalRule: median}}}}\n"
        );
        // Six agents, alternating zones a and b: three per zone, enough for median with f = 1.
        let six = select(&spec(&yaml), &candidates(6), "uid").unwrap();
        assert_eq!(six.zones["node-0"], "a");
        assert_eq!(six.zones["node-1"], "b");
        assert_eq!(six.zones.len(), 6);
        assert_eq!(six.zone_aggregators.len(), 2);
        for (zone, node) in &six.zone_aggregators {
            assert_eq!(
                &six.zones[node], zone,
                "a zone's aggregator is one of its members"
            );
        }
        assert_eq!(
            select(&spec(&yaml), &candidates(6), "uid").unwrap(),
            six,
            "stable"
        );
        // Five agents: zone b has two, which median cannot hold with f = 1, though five could.
        assert_eq!(
            select(&spec(&yaml), &candidates(5), "uid").unwrap_err(),
            SelectError::ZoneCannotHold {
                zone: "b".into(),
                rule: "median",
                byzantine: 1,
                needed: 3,
                available: 2
            }
        );
        // A node without the label is in the zone "unzoned"; median across zones needs three
        // zones to tolerate one Byzantine zone.
        let mut unlabelled = candidates(6);
        unlabelled[5].labels.clear();
        let global = yaml.replace("globalRule: median", "globalRule: median, globalByzantine: 1");
        assert!(matches!(
            select(&spec(&global), &candidates(6), "uid"),
            Err(SelectError::TooFewZones {
                needed: 3,
                available: 2,
                ..
            })
        ));
        let loose = yaml.replace("rule: median, byzantine: 1", "rule: fedavg");
        let zones = select(&spec(&loose), &unlabelled, "uid").unwrap().zones;
        assert_eq!(zones["node-5"], UNZONED);
        assert!(
            select(&spec(BASE), &candidates(3), "uid")
                .unwrap()
                .zones
                .is_empty()
        );
    }

    #[test]
    fn a_quorum_too_small_for_the_rule_is_refused() {
        let yaml = format!(
            "{BASE}participants: {{minimum: 3}}\naggregation: {{rule: median, byzantine: 2}}\nquorumPercent: 50\n"
        );
        // Ten agents: median with f = 2 needs 5 updates; half of ten is 5, half of nine is 5.
        assert!(select(&spec(&yaml), &candidates(10), "uid").is_ok());
        assert_eq!(
            select(&spec(&yaml), &candidates(8), "uid")
                .unwrap_err()
                .to_string(),
            "spec.aggregation.rule median with spec.aggregation.byzantine 2 needs 5 updates, spec.quorumPercent makes a round aggregate with 4 of 8"
        );
        assert_eq!(spec(&yaml).quorum(9), 5);
        assert_eq!(spec(BASE).quorum(7), 7, "every participant by default");
    }

    #[test]
    fn the_selector_matches_labels_and_expressions() {
        let yaml = format!("{BASE}participants: {{minimum: 1, selector: {{matchLabels: {{zone: a}}}}}}\n");
        let zone_a = select(&spec(&yaml), &candidates(6), "uid").unwrap();
        assert_eq!(zone_a.participants, vec!["node-0", "node-2", "node-4"]);
        let selector = LabelSelector {
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: "zone".into(),
                operator: "NotIn".into(),
                values: Some(vec!["a".into()]),
            }]),
            ..LabelSelector::default()
        };
        assert!(!matches(&selector, &candidates(1)[0].labels).unwrap());
        assert!(
            matches(&selector, &BTreeMap::new()).unwrap(),
            "NotIn holds without the label"
        );
        let bad = LabelSelector {
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: "zone".into(),
                operator: "Near".into(),
                values: None,
            }]),
            ..LabelSelector::default()
        };
        assert!(matches(&bad, &BTreeMap::new()).unwrap_err().contains("Near"));
    }
}
