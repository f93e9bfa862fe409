//! The event loop in simulated time: sessions coming up, router ticks, deliveries, and what
//! the routers ask for in return (sends, advertisements), with the bookkeeping of each.

use std::time::{Duration, Instant};

use x0tta6bl4_routing::{NodeId, Output};
use x0tta6bl4_wire::{Message, decode_frame, encode_frame};

use super::Mesh;
use super::traffic::{SLICE, Slice};
use crate::memory::process_memory;
use crate::rng::Rng;

pub(super) enum Event {
    SessionUp(u32, u32),
    /// A deferred advertisement (see [`Mesh::desync_phases`]).
    Originate(u32),
    Deliver {
        to: u32,
        from: u32,
        slot: u32,
    },
    Tick(u32),
}

impl Mesh {
    /// Stop [`Mesh::run_until`] once the wall clock passes `deadline`.
    pub fn set_wall_deadline(&mut self, deadline: Option<Instant>) {
        self.wall_deadline = deadline;
    }

    /// Stop [`Mesh::run_until`] once the process's resident memory passes `bytes`.
    pub fn set_memory_limit(&mut self, bytes: Option<u64>) {
        self.memory_limit = bytes;
    }

    /// Moves every agent's advertisement phase to a random point of the interval: the next time
    /// its router asks to advertise, the agent does so after a delay drawn uniformly from
    /// `[0, interval)` (the router tolerates a late `originate`; its next periodic one follows
    /// an interval after the actual one). This stands in for the timer jitter the routing crate
    /// lacks: without it, the phases of agents started together stay locked together.
    pub fn desync_phases(&mut self, interval: Duration, seed: u64) {
        for agent in &mut self.agents {
            agent.defer_next_advertisement = true;
        }
        self.desync_rng = Rng::new(seed, 6);
        self.desync_interval = interval;
    }

    /// Print progress to stderr every `every` of wall-clock time.
    pub fn set_progress(&mut self, every: Option<Duration>) {
        self.progress = every.map(|every| (every, Instant::now()));
    }

    /// Processes every event up to and including `until`. Returns false if the wall-clock
    /// deadline stopped it first.
    pub fn run_until(&mut self, until: Duration) -> bool {
        while let Some(at) = self.queue.peek_time() {
            if at > until {
                break;
            }
            if at > self.now {
                self.advance_to(at);
            }
            let Some((at, event)) = self.queue.pop() else {
                break;
            };
            self.now = self.now.max(at);
            self.events += 1;
            match event {
                Event::SessionUp(a, b) => self.session_up(a as usize, b as usize),
                Event::Originate(agent) => {
                    if self.agents[agent as usize].alive {
                        self.originate(agent as usize);
                        self.reschedule(agent as usize);
                    }
                }
                Event::Deliver { to, from, slot } => self.deliver(to as usize, from as usize, slot),
                Event::Tick(agent) => self.tick(agent as usize, at),
            }
            if self.events.is_multiple_of(1 << 16) {
                let wall = Instant::now();
                if self.wall_deadline.is_some_and(|deadline| wall > deadline) {
                    self.stopped_by = Some("wall-clock limit");
                    return false;
                }
                if let Some(limit) = self.memory_limit
                    && process_memory("VmRSS:").is_some_and(|rss| rss > limit)
                {
                    self.stopped_by = Some("memory limit");
                    return false;
                }
                if let Some((every, last)) = &mut self.progress
                    && wall.duration_since(*last) >= *every
                {
                    *last = wall;
                    eprintln!(
                        "  … {:.3} s simulated, {:.1} M events, {} messages in flight",
                        self.now.as_secs_f64(),
                        self.events as f64 / 1e6,
                        self.queue.len()
                    );
                }
            }
        }
        self.advance_to(until.max(self.now));
        true
    }

    /// Time moves on: every event at the current instant has run, so the affected paths can
    /// be checked.
    fn advance_to(&mut self, next: Duration) {
        self.check_reroutes_if_due();
        self.now = next;
    }

    fn session_up(&mut self, a: usize, b: usize) {
        for (me, peer) in [(a, b), (b, a)] {
            if !self.agents[me].alive {
                continue;
            }
            let peer_id = self.agents[peer].id;
            let now = self.now;
            let agent = &mut self.agents[me];
            let started = Instant::now();
            let outputs = agent.router.on_session_up(peer_id, now);
            agent.busy += started.elapsed();
            self.handle(me, outputs);
            self.reschedule(me);
        }
    }

    fn tick(&mut self, agent: usize, at: Duration) {
        let state = &mut self.agents[agent];
        if !state.alive || state.tick_at != Some(at) {
            return; // superseded by an earlier tick, or dead
        }
        state.tick_at = None;
        let started = Instant::now();
        let outputs = state.router.on_tick(self.now);
        let elapsed = started.elapsed();
        state.busy += elapsed;
        self.timings.tick.record_duration(elapsed);
        self.handle(agent, outputs);
        self.reschedule(agent);
    }

    fn deliver(&mut self, to: usize, from: usize, slot: u32) {
        let Some(message) = self.in_flight.get_mut(slot as usize).and_then(Option::take) else {
            return;
        };
        self.free_slots.push(slot);
        if !self.agents[to].alive {
            self.undeliverable += 1;
            return;
        }
        let from_id = self.agents[from].id;
        let now = self.now;
        let outputs = match message {
            Message::Hello(hello) => {
                let agent = &mut self.agents[to];
                let started = Instant::now();
                let outputs = agent.router.on_hello(from_id, hello, now);
                let elapsed = started.elapsed();
                agent.busy += elapsed;
                self.timings.hello.record_duration(elapsed);
                outputs
            }
            Message::Originator(originator) => {
                let (requested, performed) = (
                    self.agents[to].router.verifications_performed(),
                    self.cache.performed(to),
                );
                let agent = &mut self.agents[to];
                let started = Instant::now();
                let outputs = agent.router.on_originator(from_id, originator, now);
                let elapsed = started.elapsed();
                agent.busy += elapsed;
                let histogram = if self.cache.performed(to) > performed {
                    &mut self.timings.originator_verified
                } else if agent.router.verifications_performed() > requested {
                    &mut self.timings.originator_cached
                } else {
                    &mut self.timings.originator_duplicate
                };
                histogram.record_duration(elapsed);
                outputs
            }
            Message::SeqnoRequest(request) => {
                let agent = &mut self.agents[to];
                let started = Instant::now();
                let outputs = agent.router.on_seqno_request(from_id, request, now);
                agent.busy += started.elapsed();
                outputs
            }
            // Data and any other message type: not routing's business here.
            _ => Vec::new(),
        };
        self.agents[to].traffic.received += 1;
        self.handle(to, outputs);
        self.reschedule(to);
    }

    fn reschedule(&mut self, agent: usize) {
        let state = &mut self.agents[agent];
        if !state.alive {
            return;
        }
        let deadline = state.router.next_deadline().max(self.now);
        if state.tick_at.is_none_or(|queued| deadline < queued) {
            state.tick_at = Some(deadline);
            self.queue.push(deadline, Event::Tick(agent as u32));
        }
    }

    fn handle(&mut self, agent: usize, outputs: Vec<Output>) {
        for output in outputs {
            match output {
                Output::SendHello { peer, hello } => self.send(agent, peer, Message::Hello(hello)),
                Output::Forward { peer, originator } => {
                    self.send(agent, peer, Message::Originator(originator))
                }
                Output::SendSeqnoRequest { peer, request } => {
                    self.send(agent, peer, Message::SeqnoRequest(request))
                }
                Output::NeighbourDead { peer, .. } => {
                    if let Some(&peer) = self.index.get(&peer) {
                        self.deaths.push((self.now, agent as u32, peer));
                    }
                }
                Output::RouteChanged {
                    destination,
                    old_next_hop,
                    new_next_hop,
                } => self.route_changed(agent, destination, old_next_hop.is_some(), new_next_hop.is_some()),
                Output::Rejected { reason, .. } => {
                    *self.rejections.entry(reason.label()).or_default() += 1;
                }
                Output::OriginateDue => {
                    if std::mem::take(&mut self.agents[agent].defer_next_advertisement) {
                        let micros = self.desync_interval.as_micros() as u64;
                        let delay = Duration::from_micros(self.desync_rng.below(micros.max(1)));
                        self.queue.push(self.now + delay, Event::Originate(agent as u32));
                    } else {
                        self.originate(agent);
                    }
                }
            }
        }
    }

    fn originate(&mut self, agent: usize) {
        let now = self.now;
        let state = &mut self.agents[agent];
        let started = Instant::now();
        let result = state.router.originate(now, &state.signer);
        let elapsed = started.elapsed();
        state.busy += elapsed;
        self.slice().originated += 1;
        self.timings.originate.record_duration(elapsed);
        match result {
            Ok(outputs) => self.handle(agent, outputs),
            Err(_) => self.originate_errors += 1,
        }
    }

    fn slice(&mut self) -> &mut Slice {
        let index = (self.now.as_micros() / SLICE.as_micros()) as usize;
        if self.timeline.len() <= index {
            self.timeline.resize(index + 1, Slice::default());
        }
        &mut self.timeline[index]
    }

    fn route_changed(&mut self, agent: usize, destination: NodeId, had: bool, has: bool) {
        let slice = self.slice();
        slice.route_changes += 1;
        if had && !has {
            slice.route_losses += 1;
        }
        let everyone = self.agents.len() as u32 - 1;
        let state = &mut self.agents[agent];
        match (had, has) {
            (false, true) => {
                state.reachable += 1;
                if state.reachable == everyone {
                    self.complete += 1;
                    if self.complete == self.agents.len() {
                        if self.converged_at.is_none() {
                            self.converged_at = Some(self.now);
                            self.sent_before_convergence = Some(Slice::total(&self.timeline));
                        }
                        self.complete_since = Some(self.now);
                    }
                }
            }
            (true, false) => {
                if state.reachable == everyone {
                    self.complete -= 1;
                    self.complete_since = None;
                }
                state.reachable -= 1;
                self.route_losses += 1;
            }
            _ => {}
        }
        self.note_next_hop_change(agent, &destination);
    }

    fn send(&mut self, from: usize, to: NodeId, message: Message) {
        let Some(&to) = self.index.get(&to) else {
            self.undeliverable += 1;
            return;
        };
        let Some(link) = self.agents[from]
            .links
            .iter()
            .find(|link| link.peer == to)
            .copied()
        else {
            self.undeliverable += 1; // no such link: the router addressed a non-neighbour
            return;
        };
        self.scratch.clear();
        if encode_frame(&message, &mut self.scratch).is_err() {
            self.decode_errors += 1;
            return;
        }
        let len = self.scratch.len() as u64;
        self.sent += 1;
        if self.sent.is_multiple_of(self.decode_every) {
            let started = Instant::now();
            let decoded = decode_frame(&self.scratch);
            let elapsed = started.elapsed();
            self.decode_checks += 1;
            let is_originator = matches!(message, Message::Originator(_));
            match decoded {
                Ok((decoded, used)) if decoded == message && used == self.scratch.len() => {
                    if is_originator {
                        self.timings.decode_originator.record_duration(elapsed);
                    }
                }
                _ => self.decode_errors += 1,
            }
        }
        let traffic = &mut self.agents[from].traffic;
        match message {
            Message::Hello(_) => {
                traffic.hello_messages += 1;
                traffic.hello_bytes += len;
            }
            Message::SeqnoRequest(_) => {
                traffic.request_messages += 1;
                traffic.request_bytes += len;
            }
            _ => {
                traffic.originator_messages += 1;
                traffic.originator_bytes += len;
            }
        }
        let infinite = matches!(&message, Message::Originator(o) if o.envelope.path_cost == u32::MAX);
        if let Message::Originator(_) = &message {
            let slice = self.slice();
            slice.adverts += 1;
            slice.advert_bytes += len;
            slice.infinite += u64::from(infinite);
        }
        if self.loss > 0.0 && self.loss_rng.next_f64() < self.loss {
            self.lost_messages += 1;
            return;
        }
        let slot = match self.free_slots.pop() {
            Some(slot) => {
                self.in_flight[slot as usize] = Some(message);
                slot
            }
            None => {
                self.in_flight.push(Some(message));
                (self.in_flight.len() - 1) as u32
            }
        };
        self.queue.push(
            self.now + link.latency,
            Event::Deliver {
                to,
                from: from as u32,
                slot,
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mesh::PathEnd;
    use crate::mesh::testing::mk_mesh;
    use crate::topology::Topology;

    #[test]
    fn a_small_grid_converges_with_real_signatures_verified_once_per_advertisement() {
        let topology = Topology::grid(9);
        let mut mesh = mk_mesh(&topology, Duration::from_millis(200));
        assert!(mesh.run_until(Duration::from_secs(3)));
        let converged = mesh.converged_at.expect("converges");
        assert!(converged < Duration::from_secs(2), "{converged:?}");
        assert_eq!(mesh.complete_agents(), 9);
        assert_eq!(mesh.decode_errors + mesh.originate_errors, 0);
        assert!(
            mesh.decode_checks > 1000,
            "every frame was decoded again and matched"
        );
        // Every agent asked for verifications; the mesh performed each distinct one once.
        let cache = mesh.cache();
        assert!((0..9).all(|agent| cache.requested(agent) == mesh.router(agent).verifications_performed()));
        assert!(cache.total_performed() < cache.total_requested());
        // And every path is loop-free and complete.
        let none = vec![false; 9];
        for destination in 0..9 {
            for source in 0..9 {
                assert_eq!(mesh.follow(source, destination, &none), PathEnd::Reached);
            }
            mesh.clear_memo();
        }
    }

    #[test]
    fn agents_started_together_advertise_together_until_their_phases_are_spread() {
        let topology = Topology::grid(16);
        let mut mesh = mk_mesh(&topology, Duration::ZERO);
        assert!(mesh.run_until(Duration::from_millis(2500)));
        let busy_slices = |mesh: &Mesh, from: usize, to: usize| {
            mesh.timeline[from..to.min(mesh.timeline.len())]
                .iter()
                .filter(|slice| slice.originated > 0)
                .count()
        };
        // Locked together by the cold start (neighbours appearing within 100 ms): at most two
        // 100 ms slices of each second.
        assert!(busy_slices(&mesh, 5, 15) <= 2, "{:?}", &mesh.timeline[5..15]);
        mesh.desync_phases(Duration::from_secs(1), 1);
        assert!(mesh.run_until(Duration::from_secs(4)));
        assert!(busy_slices(&mesh, 30, 40) >= 6, "{:?}", &mesh.timeline[30..40]);
    }

    #[test]
    fn frames_are_counted_at_their_encoded_size() {
        let topology = Topology::grid(2);
        let mut mesh = mk_mesh(&topology, Duration::ZERO);
        assert!(mesh.run_until(Duration::from_secs(2)));
        let traffic = mesh.traffic(0);
        assert!(traffic.originator_messages > 0);
        // A frame header, the envelope and lengths, the signed body, a 3309-byte signature.
        let per_message = traffic.originator_bytes / traffic.originator_messages;
        assert!(
            (3309 + 8 + 9 + 55..3309 + 8 + 9 + 55 + 36 * 2 + 32).contains(&per_message),
            "{per_message}"
        );
    }
}
