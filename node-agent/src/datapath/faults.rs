//! The kernel's fault map made to hold the chaos executor's plan.
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::Duration;

use x0tta6bl4_datapath::{DatapathMaps, Directions, Fault};

use crate::chaos::DatapathAck;
use crate::chaos::plan::FaultPlan;

/// Makes the fault map hold the executor's plan: sets what is planned and not there (or
/// different), removes what it set before and no longer planned, and leaves anything else
/// alone (a previous run's entries, until the plan takes them over or the kernel expires them). The plan's deadlines are Unix times; the kernel compares monotonic ones,
/// so each is converted at `now` (an expiry moved by less than [`EXPIRY_SLACK_NS`] by clock
/// drift is not rewritten). Returns what the map holds of the plan afterwards.
pub fn reconcile_faults(
    maps: &mut (impl DatapathMaps + ?Sized),
    plan: &FaultPlan,
    owned: &mut BTreeSet<IpAddr>,
    now_mono_ns: u64,
    now_unix_us: u64,
) -> DatapathAck {
    let mut ack = DatapathAck {
        ready: true,
        reconciled: plan.kernel.clone(),
        ..DatapathAck::default()
    };
    let current: BTreeMap<IpAddr, Fault> = match maps.faults() {
        Ok(faults) => faults
            .into_iter()
            .map(|(peer, f)| (peer.to_canonical(), f))
            .collect(),
        Err(error) => {
            ack.unavailable = Some(format!("cannot read the fault map: {error}"));
            return ack;
        }
    };
    for (peer, planned) in &plan.kernel {
        let Some(left_us) = planned
            .deadline_us
            .checked_sub(now_unix_us)
            .filter(|left| *left > 0)
        else {
            continue;
        };
        let directions = match (planned.to_peer, planned.from_peer) {
            (true, true) => Directions::BOTH,
            (true, false) => Directions::TO_PEER,
            (false, true) => Directions::FROM_PEER,
            (false, false) => Directions::NONE,
        };
        let fault = Fault {
            drop_probability: planned.drop_probability,
            corrupt_probability: planned.corrupt_probability,
            delay: Duration::ZERO,
            partition: if planned.partition {
                directions
            } else {
                Directions::NONE
            },
            directions,
            expires_at_ns: now_mono_ns.saturating_add(left_us.saturating_mul(1000)),
        };
        let same = current.get(peer).is_some_and(|held| same_fault(held, &fault));
        if !same && let Err(error) = maps.set_fault(*peer, fault) {
            ack.errors
                .entry(planned.uid.clone())
                .or_default()
                .push(format!("{peer}: {error}"));
            continue;
        }
        owned.insert(*peer);
        *ack.installed.entry(planned.uid.clone()).or_default() += 1;
    }
    let stale: Vec<IpAddr> = owned
        .iter()
        .filter(|peer| !ack_holds(plan, &ack, peer))
        .copied()
        .collect();
    for peer in stale {
        match maps.clear_fault(peer) {
            Ok(()) => {
                owned.remove(&peer);
            }
            Err(error) => tracing::warn!(%peer, %error, "could not remove a chaos fault entry"),
        }
    }
    ack
}

/// A clock drift below this does not rewrite an entry's expiry.
const EXPIRY_SLACK_NS: u64 = 50_000_000;

/// The same effects, and expiries within the slack (the map keeps probabilities as thresholds,
/// so they come back within 2^-32 of what was set).
fn same_fault(held: &Fault, wanted: &Fault) -> bool {
    let close = |a: f64, b: f64| (a - b).abs() < 1e-6;
    held.expires_at_ns.abs_diff(wanted.expires_at_ns) < EXPIRY_SLACK_NS
        && close(held.drop_probability, wanted.drop_probability)
        && close(held.corrupt_probability, wanted.corrupt_probability)
        && held.delay == wanted.delay
        && held.partition == wanted.partition
        && held.directions == wanted.directions
}

fn ack_holds(plan: &FaultPlan, ack: &DatapathAck, peer: &IpAddr) -> bool {
    plan.kernel
        .get(peer)
        .is_some_and(|planned| ack.installed.contains_key(&planned.uid))
}

#[cfg(test)]
mod tests {
    use super::*;
    use x0tta6bl4_datapath::FakeMaps;

    fn mk_plan(entries: &[(&str, &str, bool, f64, u64)]) -> FaultPlan {
        let mut plan = FaultPlan::default();
        for (peer, uid, partition, drop, deadline_us) in entries {
            plan.kernel.insert(
                peer.parse().unwrap(),
                crate::chaos::plan::KernelFault {
                    uid: (*uid).to_owned(),
                    partition: *partition,
                    drop_probability: *drop,
                    corrupt_probability: 0.0,
                    to_peer: true,
                    from_peer: true,
                    deadline_us: *deadline_us,
                },
            );
        }
        plan
    }

    #[test]
    fn the_fault_map_follows_the_plan_with_the_deadline_as_kernel_expiry() {
        let mut maps = FakeMaps::new();
        let mut owned = BTreeSet::new();
        let plan = mk_plan(&[
            ("198.18.251.1", "cut", true, 0.0, 10_000_000),
            ("198.18.251.3", "cut", true, 0.0, 10_000_000),
        ]);
        // Monotonic 5 s, Unix 4 s: the deadline is 6 s away, so the kernel expiry is 11 s.
        let ack = reconcile_faults(&mut maps, &plan, &mut owned, 5_000_000_000, 4_000_000);
        assert_eq!(ack.installed["cut"], 2);
        let faults = maps.faults().unwrap();
        assert_eq!(faults.len(), 2);
        assert!(
            faults
                .iter()
                .all(|(_, f)| f.expires_at_ns == 11_000_000_000 && f.partition == Directions::BOTH)
        );
        // The plan without the entries: they go at once, long before their expiry.
        let ack = reconcile_faults(
            &mut maps,
            &FaultPlan::default(),
            &mut owned,
            6_000_000_000,
            5_000_000,
        );
        assert!(ack.installed.is_empty());
        assert!(maps.faults().unwrap().is_empty());
        assert!(owned.is_empty());
    }

    #[test]
    fn entries_the_plan_did_not_set_are_left_alone_and_past_deadlines_are_not_installed() {
        let mut maps = FakeMaps::new();
        // A previous run's entry, expiring by itself.
        let mut previous = Fault::until(60_000_000_000);
        previous.drop_probability = 0.3;
        maps.set_fault("198.18.251.9".parse().unwrap(), previous).unwrap();
        let mut owned = BTreeSet::new();
        let plan = mk_plan(&[("198.18.251.1", "late", false, 0.3, 1_000)]);
        let ack = reconcile_faults(&mut maps, &plan, &mut owned, 1_000, 2_000);
        assert!(
            ack.installed.is_empty(),
            "the window closed before the entry could go in"
        );
        reconcile_faults(&mut maps, &FaultPlan::default(), &mut owned, 1_000, 2_000);
        assert_eq!(maps.faults().unwrap().len(), 1, "the previous run's entry stays");
    }

    #[test]
    fn an_unchanged_plan_does_not_rewrite_its_entries_for_clock_drift() {
        let mut maps = FakeMaps::new();
        let mut owned = BTreeSet::new();
        let plan = mk_plan(&[("198.18.251.1", "loss", false, 0.3, 10_000_000)]);
        reconcile_faults(&mut maps, &plan, &mut owned, 5_000_000_000, 4_000_000);
        // 10 ms later by the monotonic clock, 20 ms by the wall clock: under the slack.
        reconcile_faults(&mut maps, &plan, &mut owned, 5_010_000_000, 4_020_000);
        assert_eq!(maps.faults().unwrap()[0].1.expires_at_ns, 11_000_000_000);
    }
}
