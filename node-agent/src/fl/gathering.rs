//! What one round of a job gathers (updates of a flat job, zone reports of a hierarchical
//! one) and what the gathering gave, shared by the aggregator and the zones' reports.
use x0tta6bl4_api::fl_record::Rejection;
use x0tta6bl4_fl::aggregate::Verdict;

use super::Incoming;
use super::stragglers::OpenRounds;

/// Refusals listed per round at most (times the participants, plus a margin): unauthenticated
/// senders must not grow a record without bound; the rest are counted in one line.
pub(super) const LISTED_PER_PARTICIPANT: usize = 4;

/// What one round gathers: updates (flat jobs) or zone reports (hierarchical ones).
pub(super) trait Gatherer {
    /// The round this message claims, if it is of this job (a later one is held for it).
    fn claim(&self, message: &Incoming) -> Option<u32>;
    /// Judges one message of this job (`claimed`: the round it claims).
    fn take(&mut self, message: Incoming, claimed: Option<u32>, open: &mut OpenRounds);
    /// The round has what it waits for.
    fn complete(&self) -> bool;
    /// Participants the training request is sent again to.
    fn waiting(&self) -> Vec<String>;
}

/// What a round's gathering gave: the step to apply and who was used, refused or weighted down.
pub(super) struct Gathered {
    pub step: Vec<f32>,
    pub accepted: Vec<String>,
    pub rejected: Vec<Rejection>,
    pub down_weighted: Vec<Rejection>,
}

impl Gathered {
    /// Files one participant's verdict under the rule that gave it.
    pub(super) fn record(&mut self, participant: &str, verdict: &Verdict, rule: &str) {
        match verdict {
            Verdict::Rejected { reason } => self.rejected.push(Rejection {
                participant: participant.to_owned(),
                reason: format!("{rule}: {reason}"),
            }),
            Verdict::DownWeighted { reason, .. } => {
                self.accepted.push(participant.to_owned());
                self.down_weighted.push(Rejection {
                    participant: participant.to_owned(),
                    reason: format!("{rule}: {reason}"),
                });
            }
            Verdict::Accepted { .. } => self.accepted.push(participant.to_owned()),
        }
    }
}
