//! The self-healing loop inside the mesh actor: runs [`SelfHealing`] when it is due, sends
//! what its actions make the router say, and logs and counts every finding and action. Each
//! pass also hands what it monitored of every live link to the link-telemetry recorder.
use x0tta6bl4_routing::healing::{Action, Incident};

use super::report::{IncidentReport, QuarantineReport};
use super::{Mesh, short};
use crate::clock::unix_micros;
use crate::convergence::Event;
use crate::links::LinkReading;

/// Incidents shown in /status (the knowledge keeps more).
const INCIDENTS_REPORTED: usize = 32;

impl Mesh {
    /// One MAPE-K pass if it is due.
    pub(super) fn heal_if_due(&mut self) {
        let now = self.clock.now();
        if self.healing.next_due() > now {
            return;
        }
        let cycle = self.healing.run(&mut self.router, now);
        for incident in &cycle.incidents {
            self.record_incident(incident);
        }
        self.metrics.quarantined_peers.set(
            i64::try_from(self.healing.quarantined().filter(|q| q.enforced).count()).unwrap_or(i64::MAX),
        );
        self.dispatch(cycle.outputs);
        self.record_links();
    }

    /// One sample of every live link for the linkTelemetry dataset (the recorder keeps at
    /// most one a second).
    fn record_links(&self) {
        let live: Vec<LinkReading> = self
            .router
            .neighbours()
            .into_iter()
            .filter(|n| n.alive)
            .map(|n| LinkReading {
                peer: n.peer,
                address: self.sessions.get(&n.peer).and_then(|s| s.remote).map(|r| r.ip()),
                loss_percent: n.quality.loss_percent,
                rtt: n.quality.rtt,
            })
            .collect();
        // The fault map's clock, so a fault's expiry is compared on the clock that set it.
        self.telemetry
            .lock()
            .sample(x0tta6bl4_datapath::monotonic_now_ns(), &live);
    }

    fn record_incident(&mut self, incident: &Incident) {
        let kind = incident.finding.kind();
        self.metrics.healing_findings.with_label_values(&[kind]).inc();
        let action = incident.action.as_ref().map_or("none", Action::kind);
        let executed = if incident.executed { "true" } else { "false" };
        if incident.action.is_some() {
            self.metrics
                .healing_actions
                .with_label_values(&[action, executed])
                .inc();
        }
        let peer = self
            .name_of(&incident.peer)
            .unwrap_or_else(|| short(&incident.peer));
        match incident.action {
            Some(Action::Quarantine { .. }) | Some(Action::Release) => {
                tracing::warn!(%peer, finding = %incident.finding, action, executed = incident.executed, "self-healing");
                self.convergence.on_topology(Event {
                    at_unix_us: unix_micros(),
                    kind: if matches!(incident.action, Some(Action::Release)) {
                        "quarantine_released"
                    } else {
                        "peer_quarantined"
                    },
                    node: Some(incident.peer.to_string()),
                    detail: Some(incident.finding.to_string()),
                });
            }
            _ => {
                tracing::info!(%peer, finding = %incident.finding, action, executed = incident.executed, "self-healing")
            }
        }
    }

    /// Quarantined peers and the newest incidents, for /status.
    pub(super) fn healing_report(&self) -> (Vec<QuarantineReport>, Vec<IncidentReport>) {
        let now = self.clock.now();
        let now_unix = unix_micros();
        let at_unix = |at: std::time::Duration| {
            let ago = u64::try_from(now.saturating_sub(at).as_micros()).unwrap_or(u64::MAX);
            now_unix.saturating_sub(ago)
        };
        let quarantined = self
            .healing
            .quarantined()
            .map(|q| QuarantineReport {
                node_id: q.peer.to_string(),
                node_name: self.name_of(&q.peer),
                reason: q.reason.clone(),
                enforced: q.enforced,
                remaining_s: q.until.saturating_sub(now).as_secs(),
            })
            .collect();
        let incidents = self
            .healing
            .knowledge()
            .incidents()
            .rev()
            .take(INCIDENTS_REPORTED)
            .map(|incident| IncidentReport {
                at_unix_us: at_unix(incident.at),
                node_id: incident.peer.to_string(),
                node_name: self.name_of(&incident.peer),
                finding: incident.finding.kind(),
                detail: incident.finding.to_string(),
                action: incident.action.as_ref().map(Action::kind),
                executed: incident.executed,
            })
            .collect();
        (quarantined, incidents)
    }
}
