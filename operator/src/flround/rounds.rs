//! The aggregator's round ConfigMaps as the plan reads them (pure): each round's result, and
//! the rounds the aggregator reported as failed.
use k8s_openapi::api::core::v1::ConfigMap;
use kube::ResourceExt;
use x0tta6bl4_api::fl_protocol::{ERROR_KEY, RECORD_KEY, ROUND_LABEL, SEALED_KEY};
use x0tta6bl4_api::fl_record::RoundRecord;

use super::chain::RoundResult;

/// The round results in `maps`, and the rounds reported as failed (round, why). A result that
/// cannot be read is skipped (and logged) rather than stopping the chain behind it forever.
pub fn parse(maps: &[ConfigMap]) -> (Vec<RoundResult>, Vec<(i32, String)>) {
    let mut results = Vec::new();
    let mut failures = Vec::new();
    for map in maps {
        let config_map = map.name_any();
        let round = map.labels().get(ROUND_LABEL).and_then(|r| r.parse::<i32>().ok());
        let data = map.data.clone().unwrap_or_default();
        let Some(record) = data.get(RECORD_KEY) else {
            if let (Some(round), Some(why)) = (round, data.get(ERROR_KEY)) {
                failures.push((round, why.clone()));
            }
            continue;
        };
        match serde_json::from_str::<RoundRecord>(record) {
            Ok(record) => results.push(RoundResult {
                config_map,
                record,
                sealed: data.get(SEALED_KEY).and_then(|s| serde_json::from_str(s).ok()),
            }),
            Err(error) => tracing::warn!(%config_map, %error, "round record unreadable; skipped"),
        }
    }
    (results, failures)
}

#[cfg(test)]
mod tests {
    use super::super::plan::tests::mk_round;
    use super::*;

    #[test]
    fn results_and_failures_are_read_and_an_unreadable_record_is_skipped() {
        let mut garbage = mk_round(3, None);
        garbage
            .data
            .get_or_insert_default()
            .insert(RECORD_KEY.into(), "{not json".into());
        let maps = [mk_round(1, None), mk_round(2, Some("too few updates")), garbage];
        let (results, failures) = parse(&maps);
        let rounds: Vec<(i32, &str)> = results
            .iter()
            .map(|r| (r.record.round, r.config_map.as_str()))
            .collect();
        assert_eq!(rounds, [(1, "job-round-1")]);
        assert_eq!(results[0].sealed, None);
        assert_eq!(failures, [(2, "too few updates".to_owned())]);
    }
}
