//! Verified-originator throughput of the routing pipeline (decode-free path: dedup cache,
//! ML-DSA-65 verification through the trust store, replay window, route selection), as a ratio
//! to raw liboqs ML-DSA-65 verification of the same messages measured in the same run.
//! Run: `cargo bench -p x0tta6bl4-routing --bench pipeline` (single thread = per core).
use std::hint::black_box;
use std::time::{Duration, Instant};

use x0tta6bl4_crypto::endorsement::{Endorsement, TrustStore};
use x0tta6bl4_crypto::{SigningContext, SigningKey};
use x0tta6bl4_routing::{OriginatorVerifier, Router, RouterConfig, VerifyError};
use x0tta6bl4_wire::{Envelope, NodeId, Originator, OriginatorBody};

const ORIGINATORS: usize = 50;
const ROUNDS: u64 = 40;
const DOMAIN: &str = "x0tta6bl4.local";
const NOW: u64 = 1_800_000_000;

struct TrustVerifier(TrustStore);

impl OriginatorVerifier for TrustVerifier {
    fn verify(
        &self,
        originator: &NodeId,
        key_epoch: u32,
        signed: &[u8],
        signature: &[u8],
    ) -> Result<(), VerifyError> {
        self.0
            .verify(
                SigningContext::Originator,
                originator,
                key_epoch,
                signed,
                signature,
                NOW,
            )
            .map_err(|_| VerifyError::BadSignature)
    }
}

fn main() {
    let authority = SigningKey::generate().unwrap();
    let mut trust = TrustStore::new(DOMAIN, vec![authority.verifying_key().clone()]);
    let mut messages = Vec::new();
    let mut raw = Vec::new();
    let keys: Vec<(SigningKey, NodeId)> = (0..ORIGINATORS)
        .map(|i| {
            let key = SigningKey::generate().unwrap();
            let spiffe = format!("spiffe://{DOMAIN}/ns/bench/mesh/bench/node/n{i}");
            let endorsement =
                Endorsement::issue(&authority, &spiffe, 1, key.verifying_key(), NOW - 10, NOW + 3600)
                    .unwrap();
            let id = trust.admit(&endorsement, NOW).unwrap();
            (key, id)
        })
        .collect();
    for seq in 1..=ROUNDS {
        for (key, id) in &keys {
            let body = OriginatorBody {
                originator: *id,
                seq,
                issued_at_micros: seq * 1_000_000,
                key_epoch: 1,
                endpoint: "198.18.0.1:47101".to_owned(),
                neighbours: vec![(NodeId([7; 32]), 256)],
            };
            let signed = body.signed_bytes().unwrap();
            let signature = key.sign(SigningContext::Originator, &signed).unwrap().0;
            raw.push((key.verifying_key().clone(), signed.clone(), signature.clone()));
            messages.push(
                Originator::new(
                    body,
                    signature,
                    Envelope {
                        hop_count: 1,
                        path_cost: 0,
                    },
                )
                .unwrap(),
            );
        }
    }
    let total = messages.len();

    // Baseline: raw ML-DSA-65 verification of exactly these messages.
    let started = Instant::now();
    for (key, signed, signature) in &raw {
        key.verify(SigningContext::Originator, black_box(signed), signature)
            .unwrap();
    }
    let raw_rate = total as f64 / started.elapsed().as_secs_f64();

    // The pipeline: each message arrives from a neighbour, is deduplicated, verified once,
    // replay-checked and fed to route selection; then every message arrives again from a second
    // neighbour (a duplicate: no second verification).
    let neighbour_a = NodeId([1; 32]);
    let neighbour_b = NodeId([2; 32]);
    let mut router = Router::new(
        RouterConfig::default(),
        NodeId([9; 32]),
        TrustVerifier(trust),
        Duration::ZERO,
    );
    let now = Duration::from_millis(1);
    router.on_session_up(neighbour_a, now);
    router.on_session_up(neighbour_b, now);
    let started = Instant::now();
    for message in &messages {
        black_box(router.on_originator(neighbour_a, message.clone(), now));
    }
    let first_copies = started.elapsed();
    let started_dupes = Instant::now();
    for message in &messages {
        black_box(router.on_originator(neighbour_b, message.clone(), now));
    }
    let duplicates = started_dupes.elapsed();
    let pipeline_rate = total as f64 / first_copies.as_secs_f64();
    let verified = router.verifications_performed();
    assert_eq!(
        verified as usize, total,
        "each (originator, seq) verified exactly once"
    );
    println!(
        "messages: {total} distinct (originator, seq) pairs from {ORIGINATORS} originators, each received twice"
    );
    println!("raw ML-DSA-65 verify:            {raw_rate:>9.0} /s");
    println!(
        "pipeline, first copies:          {pipeline_rate:>9.0} /s  (ratio {:.3} of raw verify)",
        pipeline_rate / raw_rate
    );
    println!(
        "pipeline, both copies:           {:>9.0} /s  (duplicates cost {:.1} µs each, no verification)",
        (2 * total) as f64 / (first_copies + duplicates).as_secs_f64(),
        duplicates.as_secs_f64() * 1e6 / total as f64
    );
    println!(
        "verifications performed: {verified} for {} messages received",
        2 * total
    );
}
