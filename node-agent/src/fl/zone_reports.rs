//! The job aggregator's side of a hierarchical round: it waits for one [`ZoneReport`] per
//! zone (from the zone's aggregator named in the status), verifies each before use (signature
//! under that aggregator's endorsed key, job, round, base model, dimension, finite values),
//! combines the zones' aggregates with the global rule, each zone weighing its examples, and
//! lists every participant with what its zone and the global rule made of it.
use std::collections::BTreeMap;

use x0tta6bl4_api::FLTrainingRound;
use x0tta6bl4_api::fl_protocol::ZONE_FLOW;
use x0tta6bl4_api::fl_record::Rejection;
use x0tta6bl4_crypto::SigningContext;
use x0tta6bl4_fl::aggregate::{Contribution, Rule, Verdict, aggregate};
use x0tta6bl4_fl::codec::zone_report::{MemberVerdict, ZoneReport};

use super::gathering::{Gathered, Gatherer};
use super::stragglers::OpenRounds;
use super::{FlContext, Incoming, job};

pub(super) struct ZoneReports<'a> {
    ctx: &'a FlContext,
    job: &'a FLTrainingRound,
    round: u32,
    base_digest: [u8; 32],
    dim: usize,
    zone_aggregators: &'a BTreeMap<String, String>,
    reports: BTreeMap<String, ZoneReport>,
    refused: Vec<Rejection>,
}

impl<'a> ZoneReports<'a> {
    pub fn new(
        ctx: &'a FlContext,
        job: &'a FLTrainingRound,
        round: u32,
        base_digest: [u8; 32],
        dim: usize,
        zone_aggregators: &'a BTreeMap<String, String>,
    ) -> Self {
        Self {
            ctx,
            job,
            round,
            base_digest,
            dim,
            zone_aggregators,
            reports: BTreeMap::new(),
            refused: Vec::new(),
        }
    }

    /// Why a decoded report of this round cannot be used, if it cannot.
    fn check(&self, report: &ZoneReport, signed: &[u8], signature: &[u8]) -> Result<(), String> {
        match self.zone_aggregators.get(&report.zone) {
            Some(expected) if *expected == report.zone_aggregator => {}
            Some(expected) => {
                return Err(format!(
                    "UnknownZoneAggregator: {} is not zone {}'s aggregator ({expected})",
                    report.zone_aggregator, report.zone
                ));
            }
            None => return Err(format!("UnknownZone: {} is not a zone of the job", report.zone)),
        }
        let node = self.ctx.node_id(&report.zone_aggregator);
        self.ctx
            .trust
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .verify(
                SigningContext::FlControl,
                &node,
                report.key_epoch,
                signed,
                signature,
                crate::clock::unix_seconds(),
            )
            .map_err(|refusal| format!("BadSignature: {}", refusal.reason()))?;
        if report.base_digest != self.base_digest {
            return Err("WrongBaseModel: aggregated from another model than this round's".into());
        }
        if report.error.is_empty() {
            if report.values.len() != self.dim {
                return Err(format!(
                    "WrongDimension: {} values, the model has {}",
                    report.values.len(),
                    self.dim
                ));
            }
            if report.values.iter().any(|v| !v.is_finite()) {
                return Err("NonFinite: the zone's aggregate has NaN or infinite values".into());
            }
        }
        if self.reports.contains_key(&report.zone) {
            return Err("Duplicate: the zone already reported this round".into());
        }
        Ok(())
    }

    /// The participants of `zone`, in the job's order.
    fn members(&self, zone: &str) -> Vec<String> {
        job::zone_members(self.job, zone)
    }

    /// Combines the zones' aggregates with the global rule and lists every participant.
    pub fn finish(self, global: &Rule, center: Option<&[f32]>, timed_out: bool) -> Result<Gathered, String> {
        let mut gathered = Gathered {
            step: Vec::new(),
            accepted: Vec::new(),
            rejected: self.refused.clone(),
            down_weighted: Vec::new(),
        };
        let usable: Vec<&ZoneReport> = self.reports.values().filter(|r| r.error.is_empty()).collect();
        let contributions: Vec<Contribution> = usable
            .iter()
            .map(|r| Contribution {
                participant: &r.zone,
                examples: r.examples,
                values: &r.values,
            })
            .collect();
        let result = aggregate(global, &contributions, center).map_err(|e| {
            format!(
                "{} across zones refused with {} zone aggregate(s) of {}: {e}",
                global.name(),
                contributions.len(),
                self.zone_aggregators.len()
            )
        })?;
        let zone_verdicts: BTreeMap<&str, &Verdict> = result
            .outcomes
            .iter()
            .map(|o| (o.participant.as_str(), &o.verdict))
            .collect();
        for (zone, aggregator) in self.zone_aggregators {
            let Some(report) = self.reports.get(zone) else {
                let why = if timed_out {
                    "within the quorum timeout"
                } else {
                    "before the round ended"
                };
                for member in self.members(zone) {
                    gathered.rejected.push(Rejection {
                        participant: member,
                        reason: format!(
                            "NoZoneReport: zone {zone}'s aggregator {aggregator} sent none {why}"
                        ),
                    });
                }
                continue;
            };
            let mut listed = Vec::new();
            for outcome in &report.outcomes {
                listed.push(outcome.participant.clone());
                let zone_verdict = zone_verdicts.get(zone.as_str()).copied();
                match (&outcome.verdict, zone_verdict) {
                    (MemberVerdict::Rejected(reason), _) => gathered.rejected.push(Rejection {
                        participant: outcome.participant.clone(),
                        reason: format!("zone {zone}: {reason}"),
                    }),
                    (_, Some(Verdict::Rejected { reason })) => gathered.rejected.push(Rejection {
                        participant: outcome.participant.clone(),
                        reason: format!("{} across zones rejected zone {zone}: {reason}", global.name()),
                    }),
                    (verdict, zone_verdict) => {
                        gathered.accepted.push(outcome.participant.clone());
                        if let MemberVerdict::DownWeighted(reason) = verdict {
                            gathered.down_weighted.push(Rejection {
                                participant: outcome.participant.clone(),
                                reason: format!("zone {zone}: {reason}"),
                            });
                        }
                        if let Some(Verdict::DownWeighted { reason, .. }) = zone_verdict {
                            gathered.down_weighted.push(Rejection {
                                participant: outcome.participant.clone(),
                                reason: format!(
                                    "{} across zones down-weighted zone {zone}: {reason}",
                                    global.name()
                                ),
                            });
                        }
                    }
                }
            }
            if !report.error.is_empty() {
                for member in self.members(zone).into_iter().filter(|m| !listed.contains(m)) {
                    gathered.rejected.push(Rejection {
                        participant: member,
                        reason: format!("zone {zone}: {}", report.error),
                    });
                }
            }
        }
        // The record lists participants in the job's order, whatever order the zones took.
        let order = |p: &String| {
            job::participants(self.job)
                .iter()
                .position(|q| q == p)
                .unwrap_or(usize::MAX)
        };
        gathered.accepted.sort_by_key(order);
        gathered.step = result.values;
        Ok(gathered)
    }
}

impl Gatherer for ZoneReports<'_> {
    fn claim(&self, message: &Incoming) -> Option<u32> {
        if message.flow != ZONE_FLOW {
            return None;
        }
        ZoneReport::decode(&message.bytes)
            .ok()
            .filter(|(report, _, _)| report.job_uid == job::uid(self.job))
            .map(|(report, _, _)| report.round)
    }

    fn take(&mut self, message: Incoming, claimed: Option<u32>, _open: &mut OpenRounds) {
        let metrics = &self.ctx.metrics;
        if message.flow != ZONE_FLOW {
            // Updates of a hierarchical job go to the zones' aggregators, not here.
            return metrics.drop("update_outside_its_zone");
        }
        if claimed != Some(self.round) {
            return metrics.drop("zone_report_for_another_round");
        }
        let Ok((report, signed_len, signature)) = ZoneReport::decode(&message.bytes) else {
            return metrics.drop("malformed_zone_report");
        };
        match self.check(&report, &message.bytes[..signed_len], signature) {
            Ok(()) => {
                metrics.updates.with_label_values(&["zone_report"]).inc();
                self.reports.insert(report.zone.clone(), report);
            }
            Err(reason) => {
                metrics.updates.with_label_values(&["zone_report_refused"]).inc();
                if self.refused.len() < 4 * self.zone_aggregators.len() + 16 {
                    self.refused.push(Rejection {
                        participant: format!("zone {} ({})", report.zone, message.source),
                        reason,
                    });
                }
            }
        }
    }

    fn complete(&self) -> bool {
        self.reports.len() >= self.zone_aggregators.len()
    }

    fn waiting(&self) -> Vec<String> {
        self.zone_aggregators
            .keys()
            .filter(|zone| !self.reports.contains_key(*zone))
            .flat_map(|zone| self.members(zone))
            .filter(|member| *member != self.ctx.node_name)
            .collect()
    }
}
