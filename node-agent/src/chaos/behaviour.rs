//! Adversarial behaviours: faults an agent acts out in its own protocols rather than on its
//! links (`byzantineUpdate`: the FL updates it sends are poisoned; `falseMetric`: it understates
//! the link costs it uses and advertises). The executor owns them: the FL participant and the
//! mesh read the current [`Behaviour`] from the executor's channel and never from a flag of
//! their own, and nothing else switches them on.
//!
//! Today the only source is a test's `--test-fault ACTION=VALUE` (hidden, repeatable), in the
//! API's vocabulary; the adversarial ChaosExperiments feed the same channel when they land.
//!
//! A forged FL update (the FL part of a signature failure) is a one-off rather than a state:
//! the executor hands a [`ForgeRequest`] to the FL participant, which sends it and answers.
use tokio::sync::{mpsc, oneshot, watch};
use x0tta6bl4_api::chaos::{ByzantineAttack, ByzantineSpec};

/// What this agent acts out now. The default is an honest agent.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Behaviour {
    /// byzantineUpdate: how the FL updates this agent sends are poisoned.
    pub byzantine_update: Option<ByzantineSpec>,
    /// falseMetric: the share of each measured link cost this agent uses and advertises, in
    /// percent.
    pub false_metric_percent: Option<u32>,
}

impl Behaviour {
    pub fn is_honest(&self) -> bool {
        *self == Behaviour::default()
    }
}

/// The executor's ends, one channel per consumer: the FL participant holds the receiver of
/// `byzantine_update`, the mesh that of `false_metric_percent`, and neither depends on the
/// executor.
pub struct BehaviourLines {
    pub byzantine_update: watch::Sender<Option<ByzantineSpec>>,
    pub false_metric_percent: watch::Sender<Option<u32>>,
}

impl BehaviourLines {
    pub fn new(behaviour: &Behaviour) -> Self {
        BehaviourLines {
            byzantine_update: watch::channel(behaviour.byzantine_update.clone()).0,
            false_metric_percent: watch::channel(behaviour.false_metric_percent).0,
        }
    }

    /// Switches the consumers to `behaviour`.
    pub fn set(&self, behaviour: &Behaviour) {
        self.byzantine_update
            .send_replace(behaviour.byzantine_update.clone());
        self.false_metric_percent
            .send_replace(behaviour.false_metric_percent);
    }
}

/// How a forged update fails its signature check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forgery {
    /// No signature at all.
    Unsigned,
    /// Signed, then one value changed.
    Tampered,
}

/// An update in this agent's name for round `round` of FL job `job`, that its aggregator must
/// refuse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForgedUpdate {
    pub job: String,
    pub round: u32,
    pub forgery: Forgery,
}

/// Why a forged update was not sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ForgeRefusal {
    NoJob(String),
    NotRunning,
    Failed(String),
    Unreachable(String),
}

impl std::fmt::Display for ForgeRefusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ForgeRefusal::NoJob(job) => write!(f, "no FL job {job:?} on this agent's mesh"),
            ForgeRefusal::NotRunning => write!(f, "the job is not running"),
            ForgeRefusal::Failed(why) => write!(f, "cannot build the update: {why}"),
            ForgeRefusal::Unreachable(why) => write!(f, "cannot reach the aggregator: {why}"),
        }
    }
}

/// A forged update to send, and where to answer.
pub struct ForgeRequest {
    pub update: ForgedUpdate,
    pub reply: oneshot::Sender<Result<String, ForgeRefusal>>,
}

/// The executor's end of the forgeries; the FL participant receives them.
pub type ForgeLine = mpsc::Sender<ForgeRequest>;

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
            TestFault::ByzantineUpdate(spec) => behaviour.byzantine_update = Some(spec.clone()),
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
        assert_eq!(
            behaviour.byzantine_update.map(|spec| spec.attack),
            Some(ByzantineAttack::SignFlip)
        );
        assert_eq!(behaviour.false_metric_percent, Some(1));
        assert!(Behaviour::default().is_honest());
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
