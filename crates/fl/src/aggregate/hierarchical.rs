//! Hierarchical aggregation for large meshes: each zone aggregates its own participants'
//! updates with the zone rule, then the global rule combines the zones' aggregates as if each
//! zone were one participant whose example count is the zone's total. With FedAvg at both
//! levels this equals flat FedAvg; with a robust zone rule, a zone's Byzantine participants
//! are filtered before their updates leave the zone.
use super::{Aggregate, AggregationError, Contribution, Outcome, Rule, Verdict, aggregate};

/// One zone's verified updates.
#[derive(Debug, Clone, PartialEq)]
pub struct Zone<'a> {
    pub name: &'a str,
    pub contributions: Vec<Contribution<'a>>,
}

/// The global aggregate with per-participant outcomes (in zone order, then input order), and
/// what the global rule made of each zone.
#[derive(Debug, Clone, PartialEq)]
pub struct HierarchicalAggregate {
    pub aggregate: Aggregate,
    pub zones: Vec<Outcome>,
}

pub fn aggregate_hierarchical(
    zones: &[Zone],
    zone_rule: &Rule,
    global_rule: &Rule,
    center: Option<&[f32]>,
) -> Result<HierarchicalAggregate, AggregationError> {
    if zones.is_empty() {
        return Err(AggregationError::Empty);
    }
    let mut zone_results = Vec::with_capacity(zones.len());
    for zone in zones {
        let result =
            aggregate(zone_rule, &zone.contributions, center).map_err(|e| AggregationError::Zone {
                zone: zone.name.to_string(),
                source: Box::new(e),
            })?;
        zone_results.push(result);
    }
    let zone_contributions: Vec<Contribution> = zones
        .iter()
        .zip(&zone_results)
        .map(|(zone, result)| Contribution {
            participant: zone.name,
            examples: zone.contributions.iter().map(|c| c.examples).sum(),
            values: &result.values,
        })
        .collect();
    let global = aggregate(global_rule, &zone_contributions, center)?;
    let mut outcomes = Vec::new();
    for ((zone, result), zone_outcome) in zones.iter().zip(&zone_results).zip(&global.outcomes) {
        let zone_weight = zone_outcome.verdict.weight();
        for o in &result.outcomes {
            let weight = o.verdict.weight() * zone_weight;
            let verdict = match (&zone_outcome.verdict, &o.verdict) {
                (Verdict::Rejected { reason }, _) => Verdict::Rejected {
                    reason: format!("zone {} rejected: {reason}", zone.name),
                },
                (_, Verdict::Rejected { reason }) => Verdict::Rejected {
                    reason: reason.clone(),
                },
                (_, Verdict::DownWeighted { reason, .. }) => Verdict::DownWeighted {
                    weight,
                    reason: reason.clone(),
                },
                (Verdict::DownWeighted { reason, .. }, Verdict::Accepted { .. }) => Verdict::DownWeighted {
                    weight,
                    reason: format!("zone {} down-weighted: {reason}", zone.name),
                },
                (Verdict::Accepted { .. }, Verdict::Accepted { .. }) => Verdict::Accepted { weight },
            };
            outcomes.push(Outcome {
                participant: o.participant.clone(),
                verdict,
            });
        }
    }
    Ok(HierarchicalAggregate {
        aggregate: Aggregate {
            values: global.values,
            outcomes,
        },
        zones: global.outcomes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregate::fedavg;
    use crate::aggregate::test_support::assert_close;

    fn zone<'a>(name: &'a str, members: &'a [(&'a str, u64, Vec<f32>)]) -> Zone<'a> {
        Zone {
            name,
            contributions: members
                .iter()
                .map(|(p, e, v)| Contribution {
                    participant: p,
                    examples: *e,
                    values: v,
                })
                .collect(),
        }
    }

    #[test]
    fn median_per_zone_then_fedavg_hand_worked() {
        // Zone a: 1, 2, 100 → median 2 (a3's 100 never used). Zone b: 3, 4, 5 → 4.
        // Both zones hold 3 examples, so FedAvg weighs them 1/2 each: (2 + 4) / 2 = 3.
        let a = [("a1", 1, vec![1.0]), ("a2", 1, vec![2.0]), ("a3", 1, vec![100.0])];
        let b = [("b1", 1, vec![3.0]), ("b2", 1, vec![4.0]), ("b3", 1, vec![5.0])];
        let result = aggregate_hierarchical(
            &[zone("a", &a), zone("b", &b)],
            &Rule::Median { f: 1 },
            &Rule::FedAvg,
            None,
        )
        .unwrap();
        assert_close(&result.aggregate.values, &[3.0]);
        assert_eq!(result.zones[0].verdict, Verdict::Accepted { weight: 0.5 });
        let a3 = &result.aggregate.outcomes[2];
        assert_eq!(a3.participant, "a3");
        assert!(a3.verdict.is_rejected());
        assert_eq!(
            result.aggregate.outcomes[1].verdict,
            Verdict::Accepted { weight: 0.5 }
        );
    }

    #[test]
    fn fedavg_at_both_levels_is_flat_fedavg() {
        let a = [("a1", 10, vec![1.0, 0.0]), ("a2", 30, vec![2.0, 1.0])];
        let b = [("b1", 20, vec![-1.0, 4.0])];
        let zones = [zone("a", &a), zone("b", &b)];
        let nested = aggregate_hierarchical(&zones, &Rule::FedAvg, &Rule::FedAvg, None).unwrap();
        let flat: Vec<Contribution> = zones.iter().flat_map(|z| z.contributions.clone()).collect();
        let flat = fedavg(&flat).unwrap();
        assert_close(&nested.aggregate.values, &flat.values);
        for (n, f) in nested.aggregate.outcomes.iter().zip(&flat.outcomes) {
            assert!((n.verdict.weight() - f.verdict.weight()).abs() < 1e-12);
        }
    }

    #[test]
    fn a_zone_too_small_for_its_rule_is_named() {
        let a = [("a1", 1, vec![1.0]), ("a2", 1, vec![2.0])];
        let err =
            aggregate_hierarchical(&[zone("a", &a)], &Rule::Krum { f: 1 }, &Rule::FedAvg, None).unwrap_err();
        assert_eq!(
            err.to_string(),
            "zone a: krum with f = 1 needs n > 2f + 2, but only n = 2 updates are available"
        );
    }
}
