//! Test doubles (a keyed-hash "signature") and a tiny deterministic mesh: routers wired
//! in memory, every message encoded and decoded through the wire format, delivered after a
//! fixed link latency in simulated time.

use std::cell::Cell;
use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};
use std::rc::Rc;
use std::time::Duration;

use sha2::{Digest as _, Sha256};
use x0tta6bl4_wire::{Envelope, Message, NodeId, Originator, OriginatorBody, decode_frame};

use crate::{OriginatorSigner, OriginatorVerifier, Output, Router, RouterConfig, SignError, VerifyError};

pub(crate) const MS: Duration = Duration::from_millis(1);

pub(crate) fn mk_id(n: u8) -> NodeId {
    NodeId([n; 32])
}

/// A stand-in for ML-DSA: the "signature" is a hash of the originator and the signed bytes.
pub(crate) fn fake_signature(originator: &NodeId, signed_bytes: &[u8]) -> Vec<u8> {
    let mut hash = Sha256::new();
    hash.update(b"fake-signature");
    hash.update(originator.0);
    hash.update(signed_bytes);
    hash.finalize().to_vec()
}

/// Accepts exactly the fake signatures, and counts how often it was asked.
#[derive(Debug, Default)]
pub(crate) struct FakeVerifier {
    pub(crate) calls: Cell<u64>,
}

impl OriginatorVerifier for FakeVerifier {
    fn verify(
        &self,
        originator: &NodeId,
        _: u32,
        signed_bytes: &[u8],
        signature: &[u8],
    ) -> Result<(), VerifyError> {
        self.calls.set(self.calls.get() + 1);
        if fake_signature(originator, signed_bytes) == signature {
            Ok(())
        } else {
            Err(VerifyError::BadSignature)
        }
    }
}

pub(crate) struct FakeSigner(pub(crate) NodeId);

impl OriginatorSigner for FakeSigner {
    fn key_epoch(&self) -> u32 {
        1
    }

    fn sign(&self, signed_bytes: &[u8]) -> Result<Vec<u8>, SignError> {
        Ok(fake_signature(&self.0, signed_bytes))
    }
}

pub(crate) fn mk_config() -> RouterConfig {
    RouterConfig {
        endpoint: "198.18.0.1:7946".to_owned(),
        dedup_cache_size: 1024,
        ..RouterConfig::default()
    }
}

pub(crate) fn mk_body(origin: NodeId, seq: u64) -> OriginatorBody {
    OriginatorBody {
        originator: origin,
        seq,
        issued_at_micros: seq * 1000,
        key_epoch: 1,
        endpoint: "198.18.0.9:7946".to_owned(),
        neighbours: Vec::new(),
    }
}

/// A validly signed advertisement of `origin`, as received with `envelope`.
pub(crate) fn mk_originator(origin: NodeId, seq: u64, envelope: Envelope) -> Originator {
    mk_signed(mk_body(origin, seq), envelope)
}

pub(crate) fn mk_signed(body: OriginatorBody, envelope: Envelope) -> Originator {
    let signature = fake_signature(&body.originator, &body.signed_bytes().unwrap());
    Originator::new(body, signature, envelope).unwrap()
}

/// The same advertisement with a signature by the wrong key.
pub(crate) fn mk_forged(origin: NodeId, seq: u64, envelope: Envelope) -> Originator {
    let body = mk_body(origin, seq);
    let signature = fake_signature(&mk_id(0xEE), &body.signed_bytes().unwrap());
    Originator::new(body, signature, envelope).unwrap()
}

/// A message in flight: delivery time, send order (ties), receiver, sender, frame.
type InFlight = Reverse<(Duration, u64, NodeId, NodeId, Vec<u8>)>;

/// Why following next hops from one node to another failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PathError {
    NoRoute { at: NodeId },
    Loop { path: Vec<NodeId> },
}

/// Routers wired in memory with simulated time.
pub(crate) struct Net {
    pub(crate) now: Duration,
    pub(crate) routers: BTreeMap<NodeId, Router<Rc<FakeVerifier>>>,
    pub(crate) verifier: Rc<FakeVerifier>,
    links: BTreeSet<(NodeId, NodeId)>,
    dead: BTreeSet<NodeId>,
    queue: BinaryHeap<InFlight>,
    sent: u64,
    pub(crate) latency: Duration,
    /// Every `n`th frame sent is held this much longer (as a TCP retransmission holds a frame
    /// under loss); `None`: none is.
    pub(crate) straggler: Option<(u64, Duration)>,
    /// Every output other than a send, with when and where it happened.
    pub(crate) log: Vec<(Duration, NodeId, Output)>,
    /// Seqno requests delivered to a node configured without them, which stands for an agent
    /// that predates them: it skips their frames (`unknown_type`), as such an agent does.
    pub(crate) skipped_requests: u64,
}

fn link(a: NodeId, b: NodeId) -> (NodeId, NodeId) {
    (a.min(b), a.max(b))
}

impl Net {
    /// Nodes `1..=n` wired along `edges`, sessions up at time 0.
    pub(crate) fn new(n: u8, edges: &[(u8, u8)], config: &RouterConfig) -> Net {
        Net::new_with(n, edges, |_| config.clone())
    }

    /// Like [`Net::new`], with node `i` configured by `config_of(i)`.
    pub(crate) fn new_with(n: u8, edges: &[(u8, u8)], config_of: impl Fn(u8) -> RouterConfig) -> Net {
        let verifier = Rc::new(FakeVerifier::default());
        let routers = (1..=n)
            .map(|i| {
                (
                    mk_id(i),
                    Router::new(config_of(i), mk_id(i), Rc::clone(&verifier), Duration::ZERO),
                )
            })
            .collect();
        let mut net = Net {
            now: Duration::ZERO,
            routers,
            verifier,
            links: edges.iter().map(|&(a, b)| link(mk_id(a), mk_id(b))).collect(),
            dead: BTreeSet::new(),
            queue: BinaryHeap::new(),
            sent: 0,
            latency: MS,
            straggler: None,
            log: Vec::new(),
            skipped_requests: 0,
        };
        for &(a, b) in edges {
            for (me, peer) in [(a, b), (b, a)] {
                let outputs = net.router(me).on_session_up(mk_id(peer), Duration::ZERO);
                net.handle(mk_id(me), outputs);
            }
        }
        net
    }

    pub(crate) fn router(&mut self, i: u8) -> &mut Router<Rc<FakeVerifier>> {
        self.routers.get_mut(&mk_id(i)).expect("a node of this net")
    }

    pub(crate) fn kill(&mut self, i: u8) {
        self.dead.insert(mk_id(i));
    }

    /// The node's agent starts again with fresh state, its advertisements numbered from
    /// `sequence_floor`, and its sessions are set up again (both ends see a new session).
    pub(crate) fn restart(&mut self, i: u8, sequence_floor: u64, config: &RouterConfig) {
        let id = mk_id(i);
        self.dead.remove(&id);
        let mut router = Router::new(config.clone(), id, Rc::clone(&self.verifier), self.now);
        router.set_sequence_floor(sequence_floor);
        self.routers.insert(id, router);
        let peers: Vec<NodeId> = self
            .links
            .iter()
            .filter_map(|&(a, b)| {
                if a == id {
                    Some(b)
                } else if b == id {
                    Some(a)
                } else {
                    None
                }
            })
            .collect();
        for peer in peers {
            for (me, other) in [(id, peer), (peer, id)] {
                let now = self.now;
                let outputs = self
                    .routers
                    .get_mut(&me)
                    .expect("a node of this net")
                    .on_session_up(other, now);
                self.handle(me, outputs);
            }
        }
    }

    /// The link stops carrying anything, silently (no session event).
    pub(crate) fn cut(&mut self, a: u8, b: u8) {
        self.links.remove(&link(mk_id(a), mk_id(b)));
    }

    pub(crate) fn handle(&mut self, node: NodeId, outputs: Vec<Output>) {
        for output in outputs {
            match output {
                Output::SendHello { peer, hello } => self.send(node, peer, Message::Hello(hello)),
                Output::Forward { peer, originator } => {
                    self.send(node, peer, Message::Originator(originator))
                }
                Output::SendSeqnoRequest { peer, request } => {
                    self.send(node, peer, Message::SeqnoRequest(request))
                }
                Output::OriginateDue => {
                    let now = self.now;
                    let router = self.routers.get_mut(&node).expect("a node of this net");
                    let outputs = router.originate(now, &FakeSigner(node)).expect("signs");
                    self.handle(node, outputs);
                }
                other => self.log.push((self.now, node, other)),
            }
        }
    }

    fn send(&mut self, from: NodeId, to: NodeId, message: Message) {
        if self.links.contains(&link(from, to)) && !self.dead.contains(&from) {
            let frame = message.to_frame().expect("encodes");
            self.sent += 1;
            let held = match self.straggler {
                Some((every, extra)) if self.sent.is_multiple_of(every) => extra,
                _ => Duration::ZERO,
            };
            self.queue.push(Reverse((
                self.now + self.latency + held,
                self.sent,
                to,
                from,
                frame,
            )));
        }
    }

    fn next_event(&self) -> Option<Duration> {
        let next_delivery = self.queue.peek().map(|Reverse((at, ..))| *at);
        let next_tick = self
            .routers
            .iter()
            .filter(|(id, _)| !self.dead.contains(id))
            .map(|(_, router)| router.next_deadline())
            .min();
        next_delivery.into_iter().chain(next_tick).min()
    }

    /// Runs the earliest event at or before `until`; false when there is none.
    pub(crate) fn step(&mut self, until: Duration) -> bool {
        let Some(next) = self.next_event().filter(|next| *next <= until) else {
            self.now = self.now.max(until);
            return false;
        };
        self.now = self.now.max(next);
        if let Some(Reverse((at, ..))) = self.queue.peek()
            && *at <= self.now
        {
            let Some(Reverse((_, _, to, from, frame))) = self.queue.pop() else {
                return true;
            };
            let delivered = self.links.contains(&link(from, to))
                && !self.dead.contains(&to)
                && !self.dead.contains(&from);
            if delivered {
                let (message, _) = decode_frame(&frame).expect("decodes");
                let now = self.now;
                let router = self.routers.get_mut(&to).expect("a node of this net");
                let outputs = match message {
                    Message::Hello(hello) => router.on_hello(from, hello, now),
                    Message::Originator(originator) => router.on_originator(from, originator, now),
                    Message::SeqnoRequest(_) if !router.config().seqno_requests => {
                        self.skipped_requests += 1;
                        Vec::new()
                    }
                    Message::SeqnoRequest(request) => router.on_seqno_request(from, request, now),
                    Message::Data(_) | Message::EndorsementAnnounce(_) | Message::SvidUpdate(_) => Vec::new(),
                };
                self.handle(to, outputs);
            }
            return true;
        }
        let due: Vec<NodeId> = self
            .routers
            .iter()
            .filter(|(id, router)| !self.dead.contains(id) && router.next_deadline() <= self.now)
            .map(|(id, _)| *id)
            .collect();
        for node in due {
            let now = self.now;
            let outputs = self
                .routers
                .get_mut(&node)
                .expect("a node of this net")
                .on_tick(now);
            self.handle(node, outputs);
        }
        true
    }

    pub(crate) fn run_until(&mut self, until: Duration) {
        while self.step(until) {}
    }

    /// Runs until `until`, calling `check` after every event.
    pub(crate) fn run_checking(&mut self, until: Duration, mut check: impl FnMut(&Net)) {
        while self.step(until) {
            check(self);
        }
    }

    pub(crate) fn next_hop(&self, at: u8, destination: u8) -> Option<u8> {
        let hop = self.routers.get(&mk_id(at))?.next_hop(&mk_id(destination))?;
        Some(hop.0[0])
    }

    /// Follows next hops from `from` to `to`.
    pub(crate) fn path(&self, from: u8, to: u8) -> Result<Vec<u8>, PathError> {
        let mut path = vec![from];
        let mut at = from;
        while at != to {
            let next = self
                .next_hop(at, to)
                .ok_or(PathError::NoRoute { at: mk_id(at) })?;
            if path.contains(&next) {
                path.push(next);
                return Err(PathError::Loop {
                    path: path.iter().map(|&i| mk_id(i)).collect(),
                });
            }
            path.push(next);
            at = next;
        }
        Ok(path)
    }

    /// Every `NeighbourDead` logged, as `(when, at, peer, silent_for)`.
    pub(crate) fn deaths(&self) -> Vec<(Duration, u8, u8, Duration)> {
        self.log
            .iter()
            .filter_map(|(when, at, output)| match output {
                Output::NeighbourDead { peer, silent_for } => Some((*when, at.0[0], peer.0[0], *silent_for)),
                _ => None,
            })
            .collect()
    }
}
