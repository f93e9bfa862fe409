//! Seqno requests (RFC 8966 §3.8.1.2 and §3.8.2.1): a node left with only unfeasible offers
//! for a destination asks for a newer sequence number instead of waiting for the
//! destination's next periodic advertisement, which cuts the worst reroute from
//! `neighbour_timeout + originator_interval` to about a round trip to the destination.
//!
//! A request claims nothing about routes, so it needs no signature: it comes from a
//! neighbour whose session is authenticated, and what answers it is an ordinary signed
//! advertisement, checked like every other. What a hostile neighbour can do with requests is
//! make nodes send and advertise more; both are bounded: every node sends or forwards at most
//! one request per destination and sequence number per originator interval, and a
//! destination advertises on request at most once per neighbour timeout.

use std::collections::BTreeMap;
use std::time::Duration;

use x0tta6bl4_wire::{Envelope, NodeId, SeqnoRequest};

use super::{Destination, OriginatorVerifier, Output, Router};
use crate::metric::INFINITY;

/// What became of a seqno request, sent or received; each has a metric label
/// ([`SeqnoOutcome::label`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SeqnoOutcome {
    /// This node lost its route and asked a neighbour (one that offers an unfeasible route, or
    /// any live one when none does).
    Sent,
    /// A request for this node: it advertises itself afresh.
    Originated,
    /// Answered with an advertisement of the requested sequence number or newer.
    Answered,
    /// Passed on towards the destination along the selected route.
    Forwarded,
    /// The same request (or one for a newer sequence number) went out less than an
    /// originator interval ago: dropped.
    Duplicate,
    /// A request for this node while the last advertisement on request is less than a
    /// neighbour timeout old: dropped (the one already made answers it).
    RateLimited,
    /// No route to pass it on (or only through the neighbour that asked).
    NoRoute,
    /// Its hop limit ran out before anyone could answer.
    HopLimit,
    /// From a peer without a live session.
    NotNeighbour,
}

impl SeqnoOutcome {
    /// A short, stable label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            SeqnoOutcome::Sent => "sent",
            SeqnoOutcome::Originated => "originated",
            SeqnoOutcome::Answered => "answered",
            SeqnoOutcome::Forwarded => "forwarded",
            SeqnoOutcome::Duplicate => "duplicate",
            SeqnoOutcome::RateLimited => "rate_limited",
            SeqnoOutcome::NoRoute => "no_route",
            SeqnoOutcome::HopLimit => "hop_limit",
            SeqnoOutcome::NotNeighbour => "not_neighbour",
        }
    }
}

/// The requests this node sent or forwarded lately, one per destination: what suppresses a
/// second copy of a request while the first is on its way.
#[derive(Debug, Default)]
pub(super) struct RequestLog {
    last: BTreeMap<NodeId, (u64, Duration)>,
    /// When this node last advertised itself because it was asked to.
    originated_on_request_at: Option<Duration>,
    /// Destinations whose route was lost with only unfeasible offers left, with the sequence
    /// number that would make an offer feasible; sent by the next input that knows the time.
    wanted: Vec<(NodeId, u64)>,
    /// Requests this node sent or passed on and not yet seen answered: the sequence number
    /// asked for, and when. While one is pending, route selection prefers the routes that
    /// carry it (see `Router::reselect`).
    pending: BTreeMap<NodeId, (u64, Duration)>,
}

impl RequestLog {
    /// Records a request for `(destination, seq)` going out now, unless one for the same or a
    /// newer sequence number went out within `window`.
    fn admit(&mut self, destination: NodeId, seq: u64, now: Duration, window: Duration) -> bool {
        let recent = self
            .last
            .get(&destination)
            .is_some_and(|&(last_seq, at)| last_seq >= seq && at + window > now);
        if !recent {
            self.last.insert(destination, (seq, now));
        }
        !recent
    }

    /// Forgets the requests that no longer suppress anything, and pending ones nobody
    /// answered within `window`.
    pub(super) fn prune(&mut self, now: Duration, window: Duration) {
        self.last.retain(|_, (_, at)| *at + window > now);
        self.pending.retain(|_, (_, at)| *at + window > now);
    }

    /// Notes a request for `(destination, seq)` sent or passed on.
    fn note_pending(&mut self, destination: NodeId, seq: u64, now: Duration) {
        let entry = self.pending.entry(destination).or_insert((seq, now));
        *entry = (entry.0.max(seq), now);
    }

    /// The sequence number a pending request for `destination` asks for.
    pub(super) fn pending_seq(&self, destination: &NodeId) -> Option<u64> {
        self.pending.get(destination).map(|(seq, _)| *seq)
    }

    /// The selected route carries `seq`: a pending request for it or older is answered.
    pub(super) fn answered(&mut self, destination: &NodeId, seq: u64) {
        if self
            .pending
            .get(destination)
            .is_some_and(|(wanted, _)| *wanted <= seq)
        {
            self.pending.remove(destination);
        }
    }
}

impl Destination {
    /// The sequence number that would make an offer feasible, when no feasible route is left
    /// to a destination this node has routed to (it has a feasibility distance).
    pub(super) fn missing_seqno(&self) -> Option<u64> {
        let (fd_seq, _) = self.feasibility?;
        Some(fd_seq.saturating_add(1))
    }
}

impl<V: OriginatorVerifier> Router<V> {
    /// A seqno request from a neighbour: answered if this node has what it asks for, turned
    /// into a fresh advertisement if it is for this node, passed on along the selected route
    /// otherwise.
    pub fn on_seqno_request(&mut self, from: NodeId, request: SeqnoRequest, now: Duration) -> Vec<Output> {
        let mut out = Vec::new();
        let outcome = self.handle_request(from, request, now, &mut out);
        self.count_request(outcome);
        self.send_wanted_requests(now, &mut out);
        out
    }

    /// Seqno requests sent, received and passed on so far, by outcome.
    pub fn seqno_requests(&self, outcome: SeqnoOutcome) -> u64 {
        self.counters.seqno_requests.get(&outcome).copied().unwrap_or(0)
    }

    fn handle_request(
        &mut self,
        from: NodeId,
        request: SeqnoRequest,
        now: Duration,
        out: &mut Vec<Output>,
    ) -> SeqnoOutcome {
        if !super::neighbour_alive(&self.neighbours, &from) {
            return SeqnoOutcome::NotNeighbour;
        }
        if request.destination == self.self_id {
            return self.answer_for_self(from, request.seq, now, out);
        }
        if !self.destinations.contains_key(&request.destination) {
            return SeqnoOutcome::NoRoute;
        }
        // Pending from now on: a route this node holds under the requested seqno (or gets
        // later) is preferred, selected, and so advertised to every neighbour, the asker too.
        self.requests.note_pending(request.destination, request.seq, now);
        let advertised_before = self.destinations[&request.destination].advertised.map(|a| a.seq);
        self.reselect(request.destination, out);
        let Some(dest) = self.destinations.get(&request.destination) else {
            return SeqnoOutcome::NoRoute;
        };
        let advertised_now = dest.advertised.map(|a| a.seq);
        if advertised_now != advertised_before && advertised_now.is_some_and(|seq| seq >= request.seq) {
            return SeqnoOutcome::Answered;
        }
        if let Some(advertised) = dest.advertised
            && advertised.metric != INFINITY
            && advertised.seq >= request.seq
            && advertised.next_hop != from
            && advertised.hop_count <= self.config.max_hops
            && let Some(message) = dest.messages.get(&advertised.seq)
        {
            out.push(Output::Forward {
                peer: from,
                originator: message.with_envelope(Envelope {
                    hop_count: advertised.hop_count,
                    path_cost: advertised.metric,
                }),
            });
            return SeqnoOutcome::Answered;
        }
        let Some(next_hop) = dest
            .selected
            .filter(|hop| *hop != from && super::neighbour_alive(&self.neighbours, hop))
        else {
            return SeqnoOutcome::NoRoute;
        };
        if request.hop_limit == 0 {
            return SeqnoOutcome::HopLimit;
        }
        if !self.requests.admit(
            request.destination,
            request.seq,
            now,
            self.config.originator_interval,
        ) {
            return SeqnoOutcome::Duplicate;
        }
        out.push(Output::SendSeqnoRequest {
            peer: next_hop,
            request: SeqnoRequest {
                hop_limit: request.hop_limit - 1,
                ..request
            },
        });
        SeqnoOutcome::Forwarded
    }

    /// A request for this node: a sequence number above the last one makes it advertise
    /// (soon, as after a neighbour change), at most once per neighbour timeout; for one it
    /// already advertised, the asker gets that advertisement again.
    fn answer_for_self(
        &mut self,
        from: NodeId,
        seq: u64,
        now: Duration,
        out: &mut Vec<Output>,
    ) -> SeqnoOutcome {
        if seq <= self.own_seq
            && let Some(own) = &self.own_latest
        {
            out.push(Output::Forward {
                peer: from,
                originator: own.clone(),
            });
            return SeqnoOutcome::Answered;
        }
        let spacing = self.config.neighbour_timeout;
        if self
            .requests
            .originated_on_request_at
            .is_some_and(|at| at + spacing > now)
        {
            return SeqnoOutcome::RateLimited;
        }
        self.requests.originated_on_request_at = Some(now);
        self.trigger_originate(now);
        SeqnoOutcome::Originated
    }

    /// Notes that `destination` has no feasible route left (called by route selection, which
    /// does not know the time).
    pub(super) fn want_seqno(&mut self, destination: NodeId, seq: u64) {
        if self.config.seqno_requests {
            self.requests.wanted.push((destination, seq));
        }
    }

    /// Asks, for every destination noted by [`Router::want_seqno`], each neighbour that offers
    /// an unfeasible route to it (a newer sequence number makes that offer usable), or, when
    /// none offers anything, every live neighbour: a neighbour that switched to another path
    /// under the same sequence number has not told us (a different next hop alone is no news,
    /// see `advertise`), and may still hold our poisoned reverse; its own route carries the
    /// request on to the destination.
    pub(super) fn send_wanted_requests(&mut self, now: Duration, out: &mut Vec<Output>) {
        let wanted = std::mem::take(&mut self.requests.wanted);
        for (destination, seq) in wanted {
            let Some(dest) = self.destinations.get(&destination) else {
                continue;
            };
            // Still without a route? A later input of the same call may have brought one.
            if dest.selected.is_some() {
                continue;
            }
            let live = |via: &NodeId| super::neighbour_alive(&self.neighbours, via) && *via != destination;
            let offering: Vec<NodeId> = dest
                .routes
                .iter()
                .filter(|(via, route)| route.path_cost != INFINITY && live(via))
                .map(|(via, _)| *via)
                .collect();
            let askers = if offering.is_empty() {
                self.neighbours
                    .keys()
                    .copied()
                    .filter(|peer| live(peer))
                    .collect()
            } else {
                offering
            };
            if askers.is_empty()
                || !self
                    .requests
                    .admit(destination, seq, now, self.config.originator_interval)
            {
                continue;
            }
            self.requests.note_pending(destination, seq, now);
            for peer in askers {
                self.count_request(SeqnoOutcome::Sent);
                out.push(Output::SendSeqnoRequest {
                    peer,
                    request: SeqnoRequest {
                        destination,
                        seq,
                        hop_limit: self.config.max_hops,
                    },
                });
            }
        }
    }

    fn count_request(&mut self, outcome: SeqnoOutcome) {
        *self.counters.seqno_requests.entry(outcome).or_default() += 1;
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use x0tta6bl4_wire::{Envelope, Hello, SeqnoRequest};

    use super::SeqnoOutcome;
    use crate::testkit::*;
    use crate::{INFINITY, Output, Router};

    const ME: u8 = 1;
    const ORIGIN: u8 = 9;

    fn mk_router<'v>(verifier: &'v FakeVerifier, peers: &[u8]) -> Router<&'v FakeVerifier> {
        let mut router = Router::new(mk_config(), mk_id(ME), verifier, Duration::ZERO);
        for &peer in peers {
            router.on_session_up(mk_id(peer), Duration::ZERO);
            let hello = Hello {
                seq: 1,
                ..Hello::default()
            };
            router.on_hello(mk_id(peer), hello, Duration::ZERO);
        }
        router
    }

    fn request(destination: u8, seq: u64, hop_limit: u8) -> SeqnoRequest {
        SeqnoRequest {
            destination: mk_id(destination),
            seq,
            hop_limit,
        }
    }

    fn sent_requests(outputs: &[Output]) -> Vec<(u8, SeqnoRequest)> {
        outputs
            .iter()
            .filter_map(|output| match output {
                Output::SendSeqnoRequest { peer, request } => Some((peer.0[0], *request)),
                _ => None,
            })
            .collect()
    }

    fn answers(outputs: &[Output]) -> Vec<(u8, u64, Envelope)> {
        outputs
            .iter()
            .filter_map(|output| match output {
                Output::Forward { peer, originator } => {
                    Some((peer.0[0], originator.body().seq, originator.envelope))
                }
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_request_for_this_node_makes_it_advertise_soon_at_most_once_per_neighbour_timeout() {
        let verifier = FakeVerifier::default();
        let mut router = mk_router(&verifier, &[2]);
        // Within the neighbour timeout of the hello at 0: the neighbour is alive throughout.
        let start = 10 * MS;
        router.originate(start, &FakeSigner(mk_id(ME))).unwrap();
        let own_seq = router.own_seq;

        let now = start + 10 * MS;
        router.on_seqno_request(mk_id(2), request(ME, own_seq + 1, 10), now);
        assert_eq!(router.seqno_requests(SeqnoOutcome::Originated), 1);
        // Due a hello interval after the last advertisement, as after a neighbour change (the
        // periodic one would be due a whole originator interval after it).
        let due = start + mk_config().hello_interval;
        assert!(!router.on_tick(due - MS).contains(&Output::OriginateDue));
        assert!(router.on_tick(due).contains(&Output::OriginateDue));

        router.on_seqno_request(mk_id(2), request(ME, own_seq + 1, 10), due + 10 * MS);
        assert_eq!(router.seqno_requests(SeqnoOutcome::RateLimited), 1);
    }

    #[test]
    fn a_request_for_a_sequence_number_already_advertised_gets_that_advertisement_again() {
        let verifier = FakeVerifier::default();
        let mut router = mk_router(&verifier, &[2]);
        router.originate(MS, &FakeSigner(mk_id(ME))).unwrap();
        let own_seq = router.own_seq;

        let outputs = router.on_seqno_request(mk_id(2), request(ME, own_seq, 10), 2 * MS);

        assert_eq!(
            answers(&outputs),
            [(
                2,
                own_seq,
                Envelope {
                    hop_count: 1,
                    path_cost: 0
                }
            )]
        );
        assert_eq!(router.seqno_requests(SeqnoOutcome::Answered), 1);
    }

    #[test]
    fn a_node_with_the_requested_sequence_number_answers_and_one_without_passes_it_on() {
        let verifier = FakeVerifier::default();
        let mut router = mk_router(&verifier, &[2, 3, 4]);
        let envelope = Envelope {
            hop_count: 2,
            path_cost: 300,
        };
        router.on_originator(mk_id(2), mk_originator(mk_id(ORIGIN), 5, envelope), MS);
        let metric = router.route(&mk_id(ORIGIN)).unwrap().metric;

        // Seqno 5 is what it has: answered, with the metric it advertises.
        let answered = router.on_seqno_request(mk_id(3), request(ORIGIN, 5, 10), 2 * MS);
        assert_eq!(
            answers(&answered),
            [(
                3,
                5,
                Envelope {
                    hop_count: 3,
                    path_cost: metric
                }
            )]
        );

        // Seqno 6 it does not have: passed on to its next hop, one hop fewer to go.
        let passed = router.on_seqno_request(mk_id(3), request(ORIGIN, 6, 10), 3 * MS);
        assert_eq!(sent_requests(&passed), [(2, request(ORIGIN, 6, 9))]);
        // The same request again while the first is on its way: dropped.
        let again = router.on_seqno_request(mk_id(4), request(ORIGIN, 6, 10), 4 * MS);
        assert!(sent_requests(&again).is_empty());
        // Never back to the neighbour that asked, nor further than its hop limit.
        router.on_seqno_request(mk_id(2), request(ORIGIN, 7, 10), 5 * MS);
        router.on_seqno_request(mk_id(3), request(ORIGIN, 8, 0), 6 * MS);
        // Nor for a destination it knows nothing of, nor from a peer without a session.
        router.on_seqno_request(mk_id(3), request(42, 1, 10), 7 * MS);
        router.on_seqno_request(mk_id(77), request(ORIGIN, 9, 10), 8 * MS);

        let counts: Vec<u64> = [
            SeqnoOutcome::Answered,
            SeqnoOutcome::Forwarded,
            SeqnoOutcome::Duplicate,
            SeqnoOutcome::NoRoute,
            SeqnoOutcome::HopLimit,
            SeqnoOutcome::NotNeighbour,
        ]
        .iter()
        .map(|outcome| router.seqno_requests(*outcome))
        .collect();
        assert_eq!(counts, [1, 1, 1, 2, 1, 1]);
    }

    #[test]
    fn losing_the_route_with_only_an_unfeasible_offer_left_asks_the_neighbour_offering_it() {
        let verifier = FakeVerifier::default();
        let mut router = mk_router(&verifier, &[2, 3]);
        let near = Envelope {
            hop_count: 2,
            path_cost: 256,
        };
        let far = Envelope {
            hop_count: 4,
            path_cost: 1024,
        };
        router.on_originator(mk_id(2), mk_originator(mk_id(ORIGIN), 5, near), MS);
        router.on_originator(mk_id(3), mk_originator(mk_id(ORIGIN), 5, far), MS);
        assert_eq!(router.next_hop(&mk_id(ORIGIN)), Some(mk_id(2)));

        let outputs = router.on_session_down(mk_id(2), 2 * MS);

        // 3's offer is above the feasibility distance: only seqno 6 can make it usable.
        assert_eq!(router.next_hop(&mk_id(ORIGIN)), None);
        assert!(router.candidates(&mk_id(ORIGIN)).iter().all(|c| !c.feasible));
        assert_eq!(
            sent_requests(&outputs),
            [(3, request(ORIGIN, 6, mk_config().max_hops))]
        );
        assert_eq!(router.seqno_requests(SeqnoOutcome::Sent), 1);
        // The answer (seqno 6 through 3) is feasible and selected.
        let answer = Envelope {
            hop_count: 4,
            path_cost: 1024,
        };
        router.on_originator(mk_id(3), mk_originator(mk_id(ORIGIN), 6, answer), 3 * MS);
        assert_eq!(router.next_hop(&mk_id(ORIGIN)), Some(mk_id(3)));
        assert_ne!(router.route(&mk_id(ORIGIN)).unwrap().metric, INFINITY);
    }

    #[test]
    fn a_node_asked_for_a_seqno_it_holds_only_on_a_costlier_route_switches_to_it_and_tells_everyone() {
        let verifier = FakeVerifier::default();
        let mut router = mk_router(&verifier, &[2, 3, 4]);
        let cheap = Envelope {
            hop_count: 2,
            path_cost: 256,
        };
        let costly = Envelope {
            hop_count: 5,
            path_cost: 1024,
        };
        router.on_originator(mk_id(2), mk_originator(mk_id(ORIGIN), 5, cheap), MS);
        // Seqno 6 arrives over a costlier path: the cheaper route under seqno 5 stays selected,
        // and seqno 6 is not news to anyone.
        let quiet = router.on_originator(mk_id(3), mk_originator(mk_id(ORIGIN), 6, costly), 2 * MS);
        assert!(answers(&quiet).is_empty());
        assert_eq!(router.route(&mk_id(ORIGIN)).unwrap().seq, 5);

        // 4 lost its route and asks for seqno 6: this node takes the route that carries it.
        let outputs = router.on_seqno_request(mk_id(4), request(ORIGIN, 6, 10), 3 * MS);

        let route = router.route(&mk_id(ORIGIN)).unwrap();
        assert_eq!((route.next_hop, route.seq), (mk_id(3), 6));
        let sent: Vec<(u8, u64)> = answers(&outputs)
            .iter()
            .map(|(peer, seq, _)| (*peer, *seq))
            .collect();
        assert_eq!(
            sent,
            [(2, 6), (3, 6), (4, 6)],
            "news to every neighbour, the asker too"
        );
        assert!(sent_requests(&outputs).is_empty(), "nothing left to pass on");
        assert_eq!(router.seqno_requests(SeqnoOutcome::Answered), 1);
    }

    #[test]
    fn an_answer_reaching_a_node_that_passed_the_request_on_is_selected_and_sent_on() {
        let verifier = FakeVerifier::default();
        let mut router = mk_router(&verifier, &[2, 3, 4]);
        let cheap = Envelope {
            hop_count: 2,
            path_cost: 256,
        };
        router.on_originator(mk_id(2), mk_originator(mk_id(ORIGIN), 5, cheap), MS);
        let passed = router.on_seqno_request(mk_id(4), request(ORIGIN, 6, 10), 2 * MS);
        assert_eq!(sent_requests(&passed), [(2, request(ORIGIN, 6, 9))]);

        // The answer comes back over a costlier path: selected anyway, and sent on to 4.
        let costly = Envelope {
            hop_count: 5,
            path_cost: 1024,
        };
        let outputs = router.on_originator(mk_id(3), mk_originator(mk_id(ORIGIN), 6, costly), 3 * MS);

        assert_eq!(router.route(&mk_id(ORIGIN)).unwrap().seq, 6);
        assert!(
            answers(&outputs)
                .iter()
                .any(|(peer, seq, _)| (*peer, *seq) == (4, 6))
        );
        // Answered: the next seqno 6 copy over the cheap path may be preferred again.
        router.on_originator(mk_id(2), mk_originator(mk_id(ORIGIN), 6, cheap), 4 * MS);
        assert_eq!(router.next_hop(&mk_id(ORIGIN)), Some(mk_id(2)));
    }

    #[test]
    fn losing_the_route_with_no_offer_at_all_asks_every_live_neighbour() {
        let verifier = FakeVerifier::default();
        let mut router = mk_router(&verifier, &[2, 3, 4]);
        let envelope = Envelope {
            hop_count: 2,
            path_cost: 256,
        };
        router.on_originator(mk_id(2), mk_originator(mk_id(ORIGIN), 5, envelope), MS);
        // 3 routes through us (poisoned reverse); 4 never told us about its own path.
        let poisoned = Envelope {
            hop_count: 3,
            path_cost: INFINITY,
        };
        router.on_originator(mk_id(3), mk_originator(mk_id(ORIGIN), 5, poisoned), MS);

        let outputs = router.on_session_down(mk_id(2), 2 * MS);

        let seq6 = request(ORIGIN, 6, mk_config().max_hops);
        assert_eq!(sent_requests(&outputs), [(3, seq6), (4, seq6)]);
        // Asked once: losing it again within the interval sends nothing more.
        router.on_originator(mk_id(3), mk_originator(mk_id(ORIGIN), 5, poisoned), 3 * MS);
        assert_eq!(router.seqno_requests(SeqnoOutcome::Sent), 2);
    }
}
