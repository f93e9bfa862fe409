//! Adversarial advertisements, sent only while a chaos experiment's window makes this agent act
//! them out (`crate::chaos::behaviour`): forgedBeacon, replayedBeacon and signatureFailure. Its
//! neighbours must reject every one of them (bad signature, replayed sequence number) and keep
//! their route tables free of them; that is what the experiments measure.
use std::collections::BTreeMap;

use x0tta6bl4_routing::{BASE_LINK_COST, OriginatorSigner, SignError};
use x0tta6bl4_wire::{Envelope, NodeId, Originator, OriginatorBody};

/// How an agent forges routing advertisements, besides sending its own honest ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BeaconFault {
    /// forgedBeacon: advertisements in another node's name (claiming that node's only link is
    /// to this agent), signed with this agent's own key.
    Impersonate,
    /// replayedBeacon: other nodes' advertisements captured during the window, sent again once
    /// they are stale.
    Replay,
}

/// Originators whose advertisements are captured, at most (the forgeries and replays go out
/// once per advertisement interval each).
const CAPTURE_LIMIT: usize = 64;

/// Signs, then spoils the signature: what a signatureFailure target signs with.
pub struct SpoiledSigner<'a, S>(pub &'a S);

impl<S: OriginatorSigner> OriginatorSigner for SpoiledSigner<'_, S> {
    fn key_epoch(&self) -> u32 {
        self.0.key_epoch()
    }

    fn sign(&self, signed_bytes: &[u8]) -> Result<Vec<u8>, SignError> {
        let mut signature = self.0.sign(signed_bytes)?;
        if let Some(first) = signature.first_mut() {
            *first ^= 0xff;
        }
        Ok(signature)
    }
}

/// The first advertisement of each other originator received while a beacon fault is on.
#[derive(Debug, Default)]
pub struct Captured {
    first: BTreeMap<NodeId, Originator>,
}

impl Captured {
    /// Keeps `originator` if it is the first of its originator (and there is room).
    pub fn observe(&mut self, originator: &Originator) {
        let origin = originator.body().originator;
        if self.first.len() < CAPTURE_LIMIT || self.first.contains_key(&origin) {
            self.first.entry(origin).or_insert_with(|| originator.clone());
        }
    }

    /// Forgets everything: the fault is over.
    pub fn clear(&mut self) {
        self.first.clear();
    }

    /// replayedBeacon: the captured advertisements as they were, forwarded as an honest
    /// forwarder would (one more hop, one more link's cost): the signature still verifies,
    /// the sequence number is what gives them away. The envelope is not where this fault
    /// lies (that is falseMetric's).
    pub fn replays(&self) -> Vec<Originator> {
        self.first
            .values()
            .map(|captured| {
                let mut replay = captured.clone();
                replay.envelope = Envelope {
                    hop_count: captured.envelope.hop_count.saturating_add(1),
                    path_cost: captured.envelope.path_cost.saturating_add(BASE_LINK_COST),
                };
                replay
            })
            .collect()
    }

    /// forgedBeacon: for each captured originator, an advertisement in its name, newer than
    /// anything it sent, that claims its only link is to `liar` at the lowest cost (so that
    /// its traffic would come to `liar`), signed with the liar's own key: it cannot verify
    /// under the impersonated node's key.
    pub fn impersonations(
        &self,
        liar: NodeId,
        issued_at_micros: u64,
        signer: &impl OriginatorSigner,
    ) -> Vec<Originator> {
        self.first
            .values()
            .filter_map(|captured| {
                let victim = captured.body();
                let body = OriginatorBody {
                    originator: victim.originator,
                    seq: victim.seq + 1_000_000,
                    issued_at_micros,
                    key_epoch: victim.key_epoch,
                    endpoint: victim.endpoint.clone(),
                    neighbours: vec![(liar, 1)],
                };
                let signature = signer.sign(&body.signed_bytes().ok()?).ok()?;
                Originator::new(
                    body,
                    signature,
                    Envelope {
                        hop_count: 1,
                        path_cost: 0,
                    },
                )
                .ok()
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixed;

    impl OriginatorSigner for Fixed {
        fn key_epoch(&self) -> u32 {
            3
        }

        fn sign(&self, _: &[u8]) -> Result<Vec<u8>, SignError> {
            Ok(vec![1, 2, 3])
        }
    }

    fn advert(origin: u8, seq: u64) -> Originator {
        Originator::new(
            OriginatorBody {
                originator: NodeId([origin; 32]),
                seq,
                issued_at_micros: 5,
                key_epoch: 1,
                endpoint: "198.18.251.9:7000".into(),
                neighbours: vec![(NodeId([9; 32]), 100)],
            },
            vec![7; 8],
            Envelope {
                hop_count: 3,
                path_cost: 300,
            },
        )
        .unwrap()
    }

    #[test]
    fn a_spoiled_signature_differs_from_the_real_one() {
        assert_eq!(SpoiledSigner(&Fixed).sign(b"x").unwrap(), [0xfe, 2, 3]);
        assert_eq!(SpoiledSigner(&Fixed).key_epoch(), 3);
    }

    #[test]
    fn the_first_copy_of_each_originator_is_replayed_as_captured() {
        let mut captured = Captured::default();
        captured.observe(&advert(1, 10));
        captured.observe(&advert(1, 11));
        captured.observe(&advert(2, 4));
        let replays = captured.replays();
        let seqs: Vec<u64> = replays.iter().map(|r| r.body().seq).collect();
        assert_eq!(seqs, [10, 4]);
        assert_eq!(
            replays[0].signature(),
            advert(1, 10).signature(),
            "the original signature"
        );
        assert_eq!(
            (replays[0].envelope.hop_count, replays[0].envelope.path_cost),
            (4, 300 + BASE_LINK_COST),
            "forwarded as an honest forwarder would"
        );
        captured.clear();
        assert!(captured.replays().is_empty());
    }

    #[test]
    fn an_impersonation_claims_the_victims_name_and_only_a_link_to_the_liar() {
        let mut captured = Captured::default();
        captured.observe(&advert(1, 10));
        let liar = NodeId([5; 32]);
        let forged = captured.impersonations(liar, 99, &Fixed);
        assert_eq!(forged.len(), 1);
        let body = forged[0].body();
        assert_eq!(body.originator, NodeId([1; 32]));
        assert!(body.seq > 10);
        assert_eq!(body.neighbours, [(liar, 1)]);
        assert_eq!(forged[0].signature(), [1, 2, 3], "signed by the liar's key");
    }
}
