//! Any bytes: `decode_frame` never panics, and whatever it accepts re-encodes to exactly the
//! bytes it consumed (one encoding per value).
#![no_main]

use libfuzzer_sys::fuzz_target;
use x0tta6bl4_wire::decode_frame;

fuzz_target!(|bytes: &[u8]| {
    if let Ok((message, consumed)) = decode_frame(bytes) {
        let frame = message.to_frame().expect("a decoded message re-encodes");
        assert_eq!(Some(frame.as_slice()), bytes.get(..consumed));
    }
});
