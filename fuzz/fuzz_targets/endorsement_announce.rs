//! Any bytes as an endorsement announcement body: no panic, and an accepted body is its own
//! canonical encoding.
#![no_main]

use libfuzzer_sys::fuzz_target;
use x0tta6bl4_wire::EndorsementAnnounce;

fuzz_target!(|bytes: &[u8]| {
    if let Ok(announce) = EndorsementAnnounce::decode(bytes) {
        let mut out = Vec::new();
        announce
            .encode_body(&mut out)
            .expect("a decoded announcement re-encodes");
        assert_eq!(out, bytes);
    }
});
