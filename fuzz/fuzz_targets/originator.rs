//! Any bytes as an originator body, and as the signed part alone: no panic, an accepted body
//! is its own canonical encoding, and the signed bytes are kept exactly as received.
#![no_main]

use libfuzzer_sys::fuzz_target;
use x0tta6bl4_wire::{Originator, OriginatorBody};

fuzz_target!(|bytes: &[u8]| {
    if let Ok(originator) = Originator::decode(bytes) {
        let mut out = Vec::new();
        originator
            .encode_body(&mut out)
            .expect("a decoded originator re-encodes");
        assert_eq!(out, bytes);
        assert_eq!(
            originator.body().signed_bytes().expect("re-encodes"),
            originator.signed_bytes()
        );
    }
    if let Ok(body) = OriginatorBody::decode(bytes) {
        assert_eq!(body.signed_bytes().expect("a decoded body re-encodes"), bytes);
    }
});
