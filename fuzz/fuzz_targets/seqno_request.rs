//! Any bytes as a seqno request body: no panic, and an accepted body is its own canonical
//! encoding.
#![no_main]

use libfuzzer_sys::fuzz_target;
use x0tta6bl4_wire::SeqnoRequest;

fuzz_target!(|bytes: &[u8]| {
    if let Ok(request) = SeqnoRequest::decode(bytes) {
        let mut out = Vec::new();
        request
            .encode_body(&mut out)
            .expect("a decoded seqno request re-encodes");
        assert_eq!(out, bytes);
    }
});
