//! Any bytes as a hello body: no panic, and an accepted body is its own canonical encoding.
#![no_main]

use libfuzzer_sys::fuzz_target;
use x0tta6bl4_wire::Hello;

fuzz_target!(|bytes: &[u8]| {
    if let Ok(hello) = Hello::decode(bytes) {
        let mut out = Vec::new();
        hello.encode_body(&mut out).expect("a decoded hello re-encodes");
        assert_eq!(out, bytes);
    }
});
