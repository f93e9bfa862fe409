//! Any bytes as a participant's signed model update: no panic, and an accepted update is its
//! own canonical encoding (its signed part re-encodes to the bytes received, the whole update
//! to all of them).
#![no_main]

use libfuzzer_sys::fuzz_target;
use x0tta6bl4_fl::update::SignedUpdate;

fuzz_target!(|bytes: &[u8]| {
    if let Ok((signed, signed_len)) = SignedUpdate::decode(bytes) {
        let prefix = signed.update.signed_bytes().expect("a decoded update re-encodes");
        assert_eq!(prefix, bytes[..signed_len]);
        assert_eq!(signed.encode().expect("a decoded update re-encodes"), bytes);
    }
});
