//! Post-quantum costs measured in one run, so they can be read as ratios: liboqs' ML-DSA-65 and
//! ML-KEM-768 operations, and a full mutually authenticated hybrid session setup (TLS 1.3 with
//! X25519MLKEM768 plus both ML-DSA-65 bindings and their verification). Single-threaded, so a
//! setup time t means 1/t setups per second per core. Run: `make bench` or
//! `cargo bench -p x0tta6bl4-session --bench pq`.
use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use x0tta6bl4_crypto::endorsement::{Endorsement, TrustStore};
use x0tta6bl4_crypto::{SigningContext, SigningKey, mlkem};
use x0tta6bl4_session::binding::Identity;
use x0tta6bl4_session::in_memory::{self, End};
use x0tta6bl4_session::tls::{self, KeyExchangePolicy, TlsKey};

const NOW: u64 = 1_800_000_000;

fn identity(authority: &SigningKey, node: &str) -> Identity {
    let key = SigningKey::generate().unwrap();
    let spiffe = format!("spiffe://x0tta6bl4.local/ns/default/mesh/bench/node/{node}");
    let endorsement =
        Endorsement::issue(authority, &spiffe, 1, key.verifying_key(), NOW - 60, NOW + 3600).unwrap();
    Identity { key, endorsement }
}

fn primitives(c: &mut Criterion) {
    let key = SigningKey::generate().unwrap();
    let message = [0x5au8; 256];
    let signature = key.sign(SigningContext::Originator, &message).unwrap();
    let mut group = c.benchmark_group("ml_dsa_65");
    group.bench_function("keygen", |b| b.iter(|| SigningKey::generate().unwrap()));
    group.bench_function("sign", |b| {
        b.iter(|| key.sign(SigningContext::Originator, black_box(&message)).unwrap())
    });
    group.bench_function("verify", |b| {
        b.iter(|| {
            key.verifying_key()
                .verify(SigningContext::Originator, black_box(&message), &signature.0)
                .unwrap()
        })
    });
    group.finish();

    let (public, secret) = mlkem::keypair().unwrap();
    let (ciphertext, _) = mlkem::encapsulate(&public).unwrap();
    let mut group = c.benchmark_group("ml_kem_768");
    group.bench_function("keygen", |b| b.iter(|| mlkem::keypair().unwrap()));
    group.bench_function("encapsulate", |b| {
        b.iter(|| mlkem::encapsulate(black_box(&public)).unwrap())
    });
    group.bench_function("decapsulate", |b| {
        b.iter(|| mlkem::decapsulate(&secret, black_box(&ciphertext)).unwrap())
    });
    group.finish();
}

fn session_setup(c: &mut Criterion) {
    let authority = SigningKey::generate().unwrap();
    let (a, b) = (identity(&authority, "a"), identity(&authority, "b"));
    let trust = || TrustStore::new("x0tta6bl4.local", vec![authority.verifying_key().clone()]);
    let (mut trust_a, mut trust_b) = (trust(), trust());
    // Each agent makes its TLS key and configurations once per process, not per session.
    let client_config =
        tls::client_config(&TlsKey::generate().unwrap(), KeyExchangePolicy::PostQuantumOnly).unwrap();
    let server_config =
        tls::server_config(&TlsKey::generate().unwrap(), KeyExchangePolicy::PostQuantumOnly).unwrap();
    let mut group = c.benchmark_group("session");
    group.bench_function("hybrid_mutual_setup", |bench| {
        bench.iter(|| {
            let outcome = in_memory::establish(
                End {
                    identity: &a,
                    trust: &mut trust_a,
                    config: client_config.clone(),
                },
                End {
                    identity: &b,
                    trust: &mut trust_b,
                    config: server_config.clone(),
                },
                NOW,
                &mut |_, _| {},
            )
            .unwrap();
            assert!(outcome.server_saw.is_ok() && outcome.client_saw.is_ok());
        })
    });
    group.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(30)
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1))
}

criterion_group! { name = benches; config = config(); targets = primitives, session_setup }
criterion_main!(benches);
