//! Adversarial behaviours: faults an agent acts out in its own protocols rather than on its
//! links (`byzantineUpdate`, `falseMetric`, `forgedBeacon`, `replayedBeacon`,
//! `signatureFailure`, `kemDowngrade`; see [`Behaviour`]). The executor owns them: the FL
//! participant, the mesh and the sessions read them from the executor's channels and never
//! from a flag of their own, and nothing else switches them on.
//!
//! One source in production: the ChaosExperiments of the agent's own mesh that target it (see
//! `plan::Mechanism::Behaviour`); with none, the agent is honest. Only a test build (the
//! `test-faults` feature, [`crate::test_faults`]) can set a base under them from its command
//! line.
use tokio::sync::watch;
use x0tta6bl4_api::chaos::ByzantineSpec;

/// What this agent acts out now. The default is an honest agent.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Behaviour {
    /// byzantineUpdate: how the FL updates this agent sends are poisoned.
    pub byzantine_update: Option<Poisoning>,
    /// falseMetric: the share of each measured link cost this agent uses and advertises, in
    /// percent.
    pub false_metric_percent: Option<u32>,
    /// forgedBeacon or replayedBeacon: the routing advertisements this agent forges.
    pub beacon: Option<BeaconFault>,
    /// signatureFailure: the signatures of this agent's advertisements and FL updates are
    /// corrupted after signing.
    pub signature_failure: bool,
    /// kemDowngrade: this agent offers only classical key exchange (X25519) on new sessions,
    /// and its sessions are closed when it starts and stops.
    pub kem_downgrade: bool,
    /// keyExpiry: an endorsement of this agent's key, signed by the mesh authority, that runs
    /// out seconds after the window opens: the agent announces and presents it, so its key
    /// expires at every peer.
    pub expiring_endorsement: Option<Vec<u8>>,
}

pub use crate::mesh::forgery::BeaconFault;

impl Behaviour {
    pub fn is_honest(&self) -> bool {
        *self == Behaviour::default()
    }

    /// Whether both act out a fault of the same kind (one agent holds one of each).
    pub fn overlaps(&self, other: &Behaviour) -> bool {
        (self.byzantine_update.is_some() && other.byzantine_update.is_some())
            || (self.false_metric_percent.is_some() && other.false_metric_percent.is_some())
            || (self.beacon.is_some() && other.beacon.is_some())
            || (self.signature_failure && other.signature_failure)
            || (self.kem_downgrade && other.kem_downgrade)
            || (self.expiring_endorsement.is_some() && other.expiring_endorsement.is_some())
    }

    /// Takes on what `other` acts out, where it acts something out.
    pub fn merge(&mut self, other: &Behaviour) {
        if other.byzantine_update.is_some() {
            self.byzantine_update.clone_from(&other.byzantine_update);
        }
        if other.false_metric_percent.is_some() {
            self.false_metric_percent = other.false_metric_percent;
        }
        if other.beacon.is_some() {
            self.beacon = other.beacon;
        }
        self.signature_failure |= other.signature_failure;
        self.kem_downgrade |= other.kem_downgrade;
        if other.expiring_endorsement.is_some() {
            self.expiring_endorsement.clone_from(&other.expiring_endorsement);
        }
    }
}

/// byzantineUpdate: how this agent poisons its updates, and to which job.
#[derive(Debug, Clone, PartialEq)]
pub struct Poisoning {
    /// The UID of the job whose updates are poisoned; `None`: every job's (a test fault).
    pub job_uid: Option<String>,
    pub spec: ByzantineSpec,
}

impl Poisoning {
    /// The attack on an update to the job of `job_uid`, if that job is attacked.
    pub fn attack_on(&self, job_uid: &str) -> Option<&ByzantineSpec> {
        self.job_uid
            .as_deref()
            .is_none_or(|attacked| attacked == job_uid)
            .then_some(&self.spec)
    }
}

/// The executor's ends, one channel per consumer: the FL participant holds the receiver of
/// `byzantine_update`, the mesh that of `false_metric_percent`, and neither depends on the
/// executor.
pub struct BehaviourLines {
    pub byzantine_update: watch::Sender<Option<Poisoning>>,
    pub false_metric_percent: watch::Sender<Option<u32>>,
    pub beacon: watch::Sender<Option<BeaconFault>>,
    /// Read by the mesh (advertisements) and the FL participant (updates).
    pub signature_failure: watch::Sender<bool>,
    /// Read by the sessions (which key exchange to offer) and the mesh (closes the sessions
    /// when it changes).
    pub kem_downgrade: watch::Sender<bool>,
    /// Read by the mesh, which announces and presents the endorsement.
    pub expiring_endorsement: watch::Sender<Option<Vec<u8>>>,
    /// What the agent acts out with no experiment active (the test faults; honest in
    /// production).
    base: Behaviour,
}

impl BehaviourLines {
    pub fn new(base: &Behaviour) -> Self {
        BehaviourLines {
            byzantine_update: watch::channel(base.byzantine_update.clone()).0,
            false_metric_percent: watch::channel(base.false_metric_percent).0,
            beacon: watch::channel(base.beacon).0,
            signature_failure: watch::channel(base.signature_failure).0,
            kem_downgrade: watch::channel(base.kem_downgrade).0,
            expiring_endorsement: watch::channel(base.expiring_endorsement.clone()).0,
            base: base.clone(),
        }
    }

    /// Switches the consumers to the base behaviour overlaid with what the active experiments
    /// make this agent act out; a consumer is woken only when its part changes.
    pub fn set_experiments(&self, experiments: &Behaviour) {
        let mut behaviour = self.base.clone();
        behaviour.merge(experiments);
        self.byzantine_update
            .send_if_modified(|held| replace_if_changed(held, behaviour.byzantine_update));
        self.false_metric_percent
            .send_if_modified(|held| replace_if_changed(held, behaviour.false_metric_percent));
        self.beacon
            .send_if_modified(|held| replace_if_changed(held, behaviour.beacon));
        self.signature_failure
            .send_if_modified(|held| replace_if_changed(held, behaviour.signature_failure));
        self.kem_downgrade
            .send_if_modified(|held| replace_if_changed(held, behaviour.kem_downgrade));
        self.expiring_endorsement
            .send_if_modified(|held| replace_if_changed(held, behaviour.expiring_endorsement));
    }

    /// What the consumers hold now.
    #[cfg(test)]
    pub fn current(&self) -> Behaviour {
        Behaviour {
            byzantine_update: self.byzantine_update.borrow().clone(),
            false_metric_percent: *self.false_metric_percent.borrow(),
            beacon: *self.beacon.borrow(),
            signature_failure: *self.signature_failure.borrow(),
            kem_downgrade: *self.kem_downgrade.borrow(),
            expiring_endorsement: self.expiring_endorsement.borrow().clone(),
        }
    }
}

fn replace_if_changed<T: PartialEq>(held: &mut T, new: T) -> bool {
    let changed = *held != new;
    *held = new;
    changed
}

#[cfg(test)]
mod tests {
    use x0tta6bl4_api::chaos::ByzantineAttack;

    use super::*;

    #[test]
    fn experiments_overlay_the_base_and_reverting_restores_it() {
        // A test build's base (`--test-fault byzantineUpdate=noise`); honest in production.
        let base = Behaviour {
            byzantine_update: Some(Poisoning {
                job_uid: None,
                spec: ByzantineSpec {
                    attack: ByzantineAttack::Noise,
                    strength_percent: 1000,
                },
            }),
            ..Behaviour::default()
        };
        let lines = BehaviourLines::new(&base);
        let mut metric = lines.false_metric_percent.subscribe();
        let lying = Behaviour {
            false_metric_percent: Some(10),
            ..Behaviour::default()
        };
        lines.set_experiments(&lying);
        assert!(metric.has_changed().unwrap());
        assert_eq!(*metric.borrow_and_update(), Some(10));
        assert_eq!(
            lines.current().byzantine_update.map(|p| p.spec.attack),
            Some(ByzantineAttack::Noise)
        );
        lines.set_experiments(&lying);
        assert!(!metric.has_changed().unwrap(), "no change, no wake-up");
        lines.set_experiments(&Behaviour::default());
        assert_eq!(lines.current(), base);
    }

    #[test]
    fn an_experiments_poisoning_spares_the_other_jobs() {
        let poisoning = Poisoning {
            job_uid: Some("job-1".into()),
            spec: ByzantineSpec {
                attack: ByzantineAttack::Ipm,
                strength_percent: 100,
            },
        };
        assert!(poisoning.attack_on("job-1").is_some());
        assert!(poisoning.attack_on("job-2").is_none());
    }
}
