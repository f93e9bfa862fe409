//! Any bytes as a federated training request: no panic, and an accepted request is its own
//! canonical encoding (its signed part re-encodes to the bytes received, then the signature).
#![no_main]

use libfuzzer_sys::fuzz_target;
use x0tta6bl4_fl::codec::train_request::TrainRequest;

fuzz_target!(|bytes: &[u8]| {
    if let Ok((request, signed_len, signature)) = TrainRequest::decode(bytes) {
        let signed = request.signed_bytes().expect("a decoded request re-encodes");
        assert_eq!(signed, bytes[..signed_len]);
        let mut out = signed;
        out.extend_from_slice(&u16::try_from(signature.len()).unwrap().to_be_bytes());
        out.extend_from_slice(signature);
        assert_eq!(out, bytes);
    }
});
