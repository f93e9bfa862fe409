//! Any bytes as a data body: no panic, and an accepted body is its own canonical encoding.
#![no_main]

use libfuzzer_sys::fuzz_target;
use x0tta6bl4_wire::Data;

fuzz_target!(|bytes: &[u8]| {
    if let Ok(data) = Data::decode(bytes) {
        let mut out = Vec::new();
        data.encode_body(&mut out)
            .expect("a decoded data message re-encodes");
        assert_eq!(out, bytes);
    }
});
