//! The zone rounds this agent runs (hierarchical jobs), by job: where a member's update goes
//! (the running round, or held for one not started here yet) and which round runs. The rounds
//! themselves are [`super::zone`]'s; this is the table the context holds.
use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::incoming::Incoming;

/// Updates held per job for a zone round that has not started here yet (the request can
/// reach a member before its zone's aggregator), bounded against unauthenticated bytes.
const HELD_PER_JOB: usize = 64;

/// One job's zone round on this agent.
struct Slot {
    round: u32,
    updates: Option<mpsc::Sender<Incoming>>,
    cancel: CancellationToken,
    /// Updates for a round not started yet: (round, update).
    held: Vec<(u32, Incoming)>,
}

impl Slot {
    fn new() -> Self {
        Slot {
            round: 0,
            updates: None,
            cancel: CancellationToken::new(),
            held: Vec::new(),
        }
    }
}

/// The zone rounds this agent runs, by job UID.
#[derive(Default)]
pub struct ZoneRounds {
    slots: Mutex<HashMap<String, Slot>>,
}

impl ZoneRounds {
    fn slots(&self) -> std::sync::MutexGuard<'_, HashMap<String, Slot>> {
        self.slots.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Stops the zone rounds of jobs not in `running` (deleted, finished, failed).
    pub fn retain(&self, running: impl Fn(&str) -> bool) {
        self.slots().retain(|uid, slot| {
            let keep = running(uid);
            if !keep {
                slot.cancel.cancel();
            }
            keep
        });
    }

    /// Hands a member's update to the zone round it claims: now if that round runs, later if
    /// it has not started here yet; `Err` with the drop reason otherwise.
    pub fn route(&self, uid: &str, round: u32, update: Incoming) -> Result<(), &'static str> {
        let mut slots = self.slots();
        let slot = slots.entry(uid.to_owned()).or_insert_with(Slot::new);
        if round == slot.round {
            let Some(updates) = &slot.updates else {
                return Err("update_for_no_zone_round");
            };
            return updates.try_send(update).map_err(|_| "zone_queue_full");
        }
        if round < slot.round {
            return Err("update_for_closed_zone_round");
        }
        if slot.held.len() >= HELD_PER_JOB {
            return Err("zone_early_update_overflow");
        }
        slot.held.push((round, update));
        Ok(())
    }

    /// Starts the zone round `round` of job `uid` (stopping the job's previous one) and
    /// returns where its updates arrive, with the updates held for it already queued, and its
    /// cancellation; `None` if that round (or a later one) already runs here.
    pub fn begin(
        &self,
        uid: &str,
        round: u32,
        queue: usize,
    ) -> Option<(mpsc::Receiver<Incoming>, CancellationToken)> {
        let (updates, incoming) = mpsc::channel(queue);
        let cancel = CancellationToken::new();
        let mut slots = self.slots();
        let slot = slots.entry(uid.to_owned()).or_insert_with(Slot::new);
        if round <= slot.round && slot.updates.is_some() {
            return None;
        }
        slot.cancel.cancel();
        slot.round = round;
        slot.cancel = cancel.clone();
        let (now, later): (Vec<_>, Vec<_>) = std::mem::take(&mut slot.held)
            .into_iter()
            .filter(|(held_for, _)| *held_for >= round)
            .partition(|(held_for, _)| *held_for == round);
        slot.held = later;
        for (_, update) in now {
            let _ = updates.try_send(update);
        }
        slot.updates = Some(updates);
        Some((incoming, cancel))
    }
}
