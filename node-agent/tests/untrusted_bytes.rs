//! Whatever bytes a peer sends before or after authentication, the agent's parsers answer with
//! an error, never a panic: binding messages, endorsement announcements, ping payloads, and the
//! revocation list an agent reads from its MeshNetwork's status.
use proptest::collection::vec;
use proptest::prelude::*;
use x0tta6bl4_crypto::SigningKey;
use x0tta6bl4_crypto::endorsement::TrustStore;
use x0tta6bl4_node_agent::endorsements::{EndorsementBook, Verdict};
use x0tta6bl4_node_agent::ping;
use x0tta6bl4_node_agent::revocations::{InForce, Outcome};
use x0tta6bl4_session::binding::{self, Role};

fn mk_store() -> TrustStore {
    TrustStore::new(
        "x0.test",
        vec![SigningKey::generate().unwrap().verifying_key().clone()],
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn any_binding_message_is_refused_without_panicking(bytes in vec(any::<u8>(), 0..9000)) {
        let mut trust = mk_store();
        prop_assert!(binding::verify_binding(&bytes, Role::Client, &[7; 32], &mut trust, 100).is_err());
    }

    #[test]
    fn a_binding_message_with_a_valid_header_and_garbage_is_refused(
        endorsement_len in 0u16..8000,
        tail in vec(any::<u8>(), 0..9000),
    ) {
        let mut bytes = b"X0SA\x01".to_vec();
        bytes.extend(endorsement_len.to_be_bytes());
        bytes.extend(tail);
        let mut trust = mk_store();
        prop_assert!(binding::verify_binding(&bytes, Role::Server, &[7; 32], &mut trust, 100).is_err());
    }

    #[test]
    fn any_revocation_list_that_is_not_the_authoritys_is_refused(bytes in vec(any::<u8>(), 0..8192)) {
        use base64::Engine as _;
        let authority = SigningKey::generate().unwrap();
        let mut in_force = InForce::default();
        let status = x0tta6bl4_api::mesh_network::RevocationStatus {
            list: base64::engine::general_purpose::STANDARD.encode(&bytes),
            ..Default::default()
        };
        let mut header = b"X0REV\x01".to_vec();
        header.extend(&bytes);
        let framed = x0tta6bl4_api::mesh_network::RevocationStatus {
            list: base64::engine::general_purpose::STANDARD.encode(&header),
            ..Default::default()
        };
        for offered in [&status, &framed] {
            let outcome = in_force.offer(Some(offered), "ns/demo", &[authority.verifying_key().clone()]);
            prop_assert!(matches!(outcome, Outcome::Refused(_)), "{:?}", outcome);
        }
        prop_assert_eq!(in_force.serial(), None);
    }

    #[test]
    fn any_endorsement_announcement_is_refused_or_a_duplicate(bytes in vec(any::<u8>(), 0..8192)) {
        let mut trust = mk_store();
        let mut book = EndorsementBook::new();
        prop_assert!(matches!(book.offer(&bytes, &mut trust, 100), Verdict::Refused(_)));
        prop_assert_eq!(book.offer(&bytes, &mut trust, 100), Verdict::Duplicate);
        prop_assert!(trust.is_empty());
    }

    #[test]
    fn any_ping_payload_decodes_or_is_ignored(bytes in vec(any::<u8>(), 0..64)) {
        let _ = ping::decode_request(&bytes);
        let _ = ping::decode_reply(&bytes);
    }
}
