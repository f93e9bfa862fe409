//! `--test-fault ACTION=VALUE`: an adversarial behaviour in the API's vocabulary, acted out
//! from the agent's start as the base the executor overlays experiments on.
use x0tta6bl4_api::chaos::{ByzantineAttack, ByzantineSpec};

use crate::chaos::behaviour::{Behaviour, Poisoning};

/// One `--test-fault`.
#[derive(Debug, Clone, PartialEq)]
pub enum TestFault {
    ByzantineUpdate(ByzantineSpec),
    FalseMetric(u32),
}

/// The strength a test's byzantineUpdate uses (the API's default).
const TEST_STRENGTH_PERCENT: i32 = 1000;

/// Parses `byzantineUpdate=signFlip|scaling|noise|labelFlip|alie|ipm` or
/// `falseMetric=PERCENT` (1 to 100).
pub fn parse_test_fault(text: &str) -> Result<TestFault, String> {
    let (action, value) = text.split_once('=').ok_or_else(|| {
        format!("{text:?}: expected ACTION=VALUE (byzantineUpdate=signFlip, falseMetric=1)")
    })?;
    match action {
        "byzantineUpdate" => {
            let attack: ByzantineAttack = serde_json::from_value(serde_json::json!(value)).map_err(|_| {
                format!("byzantineUpdate={value:?}: the attack is signFlip, scaling, noise, labelFlip, alie or ipm")
            })?;
            Ok(TestFault::ByzantineUpdate(ByzantineSpec {
                attack,
                strength_percent: TEST_STRENGTH_PERCENT,
            }))
        }
        "falseMetric" => match value.parse::<u32>() {
            Ok(percent) if (1..=100).contains(&percent) => Ok(TestFault::FalseMetric(percent)),
            _ => Err(format!("falseMetric={value:?}: a whole percentage from 1 to 100")),
        },
        other => Err(format!(
            "{other:?} is not an adversarial action a test can set (byzantineUpdate, falseMetric)"
        )),
    }
}

/// The behaviour the test faults make.
pub fn from_test_faults(faults: &[TestFault]) -> Behaviour {
    let mut behaviour = Behaviour::default();
    for fault in faults {
        match fault {
            TestFault::ByzantineUpdate(spec) => {
                behaviour.byzantine_update = Some(Poisoning {
                    job_uid: None,
                    spec: spec.clone(),
                })
            }
            TestFault::FalseMetric(percent) => behaviour.false_metric_percent = Some(*percent),
        }
    }
    behaviour
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_faults_speak_the_apis_words() {
        let faults = [
            parse_test_fault("byzantineUpdate=signFlip").unwrap(),
            parse_test_fault("falseMetric=1").unwrap(),
        ];
        let behaviour = from_test_faults(&faults);
        let poisoning = behaviour.byzantine_update.unwrap();
        assert_eq!(poisoning.spec.attack, ByzantineAttack::SignFlip);
        assert!(
            poisoning.attack_on("any-job").is_some(),
            "a test fault poisons every job"
        );
        assert_eq!(behaviour.false_metric_percent, Some(1));
        assert!(from_test_faults(&[]).is_honest());
    }

    #[test]
    fn bad_test_faults_name_what_is_wrong() {
        assert!(
            parse_test_fault("byzantineUpdate=sign-flip")
                .unwrap_err()
                .contains("signFlip, scaling")
        );
        assert!(
            parse_test_fault("falseMetric=0")
                .unwrap_err()
                .contains("1 to 100")
        );
        assert!(
            parse_test_fault("partition=1")
                .unwrap_err()
                .contains("not an adversarial action")
        );
        assert!(
            parse_test_fault("falseMetric")
                .unwrap_err()
                .contains("ACTION=VALUE")
        );
    }
}
