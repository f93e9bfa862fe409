//! Neighbour sessions end to end in memory (sans IO): the handshake bytes are moved between a
//! rustls client and server by the test, which can tamper with them.
use rustls::NamedGroup;
use x0tta6bl4_crypto::SigningKey;
use x0tta6bl4_crypto::endorsement::{Endorsement, TrustStore};
use x0tta6bl4_session::binding::{self, Identity, Role};
use x0tta6bl4_session::in_memory::{self, Direction, End, Outcome};
use x0tta6bl4_session::tls::{self, KeyExchangePolicy, TlsKey};

const NOW: u64 = 1_800_000_000;
const DOMAIN: &str = "x0tta6bl4.local";

fn mk_identity(authority: &SigningKey, node: &str) -> Identity {
    let key = SigningKey::generate().unwrap();
    let spiffe = format!("spiffe://{DOMAIN}/ns/default/mesh/demo/node/{node}");
    let endorsement =
        Endorsement::issue(authority, &spiffe, 1, key.verifying_key(), NOW - 60, NOW + 3600).unwrap();
    Identity { key, endorsement }
}

fn mk_trust(authority: &SigningKey) -> TrustStore {
    TrustStore::new(DOMAIN, vec![authority.verifying_key().clone()])
}

struct Side<'a> {
    identity: &'a Identity,
    trust: TrustStore,
    policy: KeyExchangePolicy,
}

fn establish(
    client: Side<'_>,
    server: Side<'_>,
    tamper: &mut dyn FnMut(Direction, &mut Vec<u8>),
) -> Result<Outcome, rustls::Error> {
    let (mut client_trust, mut server_trust) = (client.trust, server.trust);
    let outcome = in_memory::establish(
        End {
            identity: client.identity,
            trust: &mut client_trust,
            config: tls::client_config(&TlsKey::generate().unwrap(), client.policy).unwrap(),
        },
        End {
            identity: server.identity,
            trust: &mut server_trust,
            config: tls::server_config(&TlsKey::generate().unwrap(), server.policy).unwrap(),
        },
        NOW,
        tamper,
    )?;
    Ok(outcome)
}

fn no_tampering() -> impl FnMut(Direction, &mut Vec<u8>) {
    |_, _| {}
}

#[test]
fn two_endorsed_agents_establish_a_hybrid_post_quantum_session_and_learn_each_others_identity() {
    let authority = SigningKey::generate().unwrap();
    let (a, b) = (mk_identity(&authority, "a"), mk_identity(&authority, "b"));
    let outcome = establish(
        Side {
            identity: &a,
            trust: mk_trust(&authority),
            policy: KeyExchangePolicy::PostQuantumOnly,
        },
        Side {
            identity: &b,
            trust: mk_trust(&authority),
            policy: KeyExchangePolicy::PostQuantumOnly,
        },
        &mut no_tampering(),
    )
    .unwrap();
    assert_eq!(outcome.group, Some(NamedGroup::X25519MLKEM768));
    assert!(tls::check_key_exchange(outcome.group, KeyExchangePolicy::PostQuantumOnly).unwrap());
    assert!(outcome.server_saw.unwrap().spiffe_id.ends_with("/node/a"));
    assert!(outcome.client_saw.unwrap().spiffe_id.ends_with("/node/b"));
}

#[test]
fn a_classical_only_peer_is_refused_when_post_quantum_is_required() {
    let authority = SigningKey::generate().unwrap();
    let (a, b) = (mk_identity(&authority, "a"), mk_identity(&authority, "b"));
    let refused = establish(
        Side {
            identity: &a,
            trust: mk_trust(&authority),
            policy: KeyExchangePolicy::ClassicalOnly,
        },
        Side {
            identity: &b,
            trust: mk_trust(&authority),
            policy: KeyExchangePolicy::PostQuantumOnly,
        },
        &mut no_tampering(),
    );
    assert!(
        refused.is_err(),
        "a classical-only client completed a handshake with a PQ-only server"
    );
    // A mesh that only prefers PQ lets it in, and the session is counted as classical.
    let allowed = establish(
        Side {
            identity: &a,
            trust: mk_trust(&authority),
            policy: KeyExchangePolicy::ClassicalOnly,
        },
        Side {
            identity: &b,
            trust: mk_trust(&authority),
            policy: KeyExchangePolicy::PreferPostQuantum,
        },
        &mut no_tampering(),
    )
    .unwrap();
    assert_eq!(allowed.group, Some(NamedGroup::X25519));
    assert!(!tls::check_key_exchange(allowed.group, KeyExchangePolicy::PreferPostQuantum).unwrap());
    assert!(tls::check_key_exchange(allowed.group, KeyExchangePolicy::PostQuantumOnly).is_err());
}

/// Offset of the server's key_share in the first server flight (TLS record → ServerHello).
fn server_key_share_offset(flight: &[u8]) -> Option<usize> {
    let record = 5;
    let handshake = record + 4;
    if flight.first() != Some(&0x16) || flight.get(record) != Some(&0x02) {
        return None;
    }
    let mut at = handshake + 2 + 32;
    at += 1 + usize::from(*flight.get(at)?);
    at += 2 + 1;
    let extensions_end = at + 2 + usize::from(u16::from_be_bytes([*flight.get(at)?, *flight.get(at + 1)?]));
    at += 2;
    while at + 4 <= extensions_end {
        let kind = u16::from_be_bytes([flight[at], flight[at + 1]]);
        let len = usize::from(u16::from_be_bytes([flight[at + 2], flight[at + 3]]));
        if kind == 0x0033 {
            return Some(at + 4 + 2 + 2); // group, key_exchange length
        }
        at += 4 + len;
    }
    None
}

#[test]
fn a_tampered_ml_kem_ciphertext_leaves_no_session() {
    let authority = SigningKey::generate().unwrap();
    let (a, b) = (mk_identity(&authority, "a"), mk_identity(&authority, "b"));
    let mut tampered = false;
    let result = establish(
        Side {
            identity: &a,
            trust: mk_trust(&authority),
            policy: KeyExchangePolicy::PostQuantumOnly,
        },
        Side {
            identity: &b,
            trust: mk_trust(&authority),
            policy: KeyExchangePolicy::PostQuantumOnly,
        },
        &mut |direction, bytes| {
            if direction == Direction::ToClient
                && !tampered
                && let Some(offset) = server_key_share_offset(bytes)
            {
                // The hybrid share is the ML-KEM-768 ciphertext followed by the X25519 share:
                // flip a bit inside the ML-KEM part only.
                bytes[offset + 100] ^= 0x01;
                tampered = true;
            }
        },
    );
    assert!(tampered, "the test found the ServerHello key share");
    assert!(
        result.is_err(),
        "a session was established over a tampered ML-KEM ciphertext"
    );
}

#[test]
fn a_key_not_endorsed_by_the_mesh_authority_is_refused() {
    let authority = SigningKey::generate().unwrap();
    let rogue_authority = SigningKey::generate().unwrap();
    let honest = mk_identity(&authority, "a");
    let rogue = mk_identity(&rogue_authority, "b");
    let outcome = establish(
        Side {
            identity: &honest,
            trust: mk_trust(&authority),
            policy: KeyExchangePolicy::PostQuantumOnly,
        },
        Side {
            identity: &rogue,
            trust: mk_trust(&authority),
            policy: KeyExchangePolicy::PostQuantumOnly,
        },
        &mut no_tampering(),
    )
    .unwrap();
    let refused = outcome.client_saw.unwrap_err();
    assert_eq!(refused.reason(), "authentication");
    assert!(refused.to_string().contains("not endorsed"));
}

#[test]
fn a_binding_signature_cannot_be_relayed_into_another_session_or_reflected() {
    let authority = SigningKey::generate().unwrap();
    let victim = mk_identity(&authority, "victim");
    let exporter_of_other_session = [7u8; 32];
    let relayed = binding::binding_message(&victim, Role::Client, &exporter_of_other_session).unwrap();
    let this_session = [9u8; 32];
    let err = binding::verify_binding(
        &relayed,
        Role::Client,
        &this_session,
        &mut mk_trust(&authority),
        NOW,
    )
    .unwrap_err();
    assert!(err.to_string().contains("does not verify for this session"));
    // Reflection: the client's own message sent back as if from the server.
    let own = binding::binding_message(&victim, Role::Client, &this_session).unwrap();
    assert!(
        binding::verify_binding(&own, Role::Server, &this_session, &mut mk_trust(&authority), NOW).is_err()
    );
    // Garbage never panics.
    for garbage in [
        vec![],
        vec![0u8; 3],
        b"X0SA\x01\xff\xff".to_vec(),
        own[..own.len() - 1].to_vec(),
    ] {
        assert!(
            binding::verify_binding(
                &garbage,
                Role::Server,
                &this_session,
                &mut mk_trust(&authority),
                NOW
            )
            .is_err()
        );
    }
}
