//! Known-answer tests of liboqs' ML-DSA-65 and ML-KEM-768 against NIST ACVP vectors (FIPS 204
//! sigVer with context strings; FIPS 203 keyGen and decapsulation, including implicit rejection
//! of modified ciphertexts). The vectors are a subset of those liboqs ships in its test suite.

fn vectors(name: &str) -> serde_json::Value {
    let path = format!("{}/tests/vectors/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(&path).expect("vector file")).expect("vector JSON")
}

fn bytes(value: &serde_json::Value) -> Vec<u8> {
    hex::decode(value.as_str().expect("hex string")).expect("valid hex")
}

#[test]
fn ml_dsa_65_signature_verification_matches_nist_vectors() {
    let set = vectors("ml-dsa-65-sigver.json");
    let tests = set["tests"].as_array().unwrap();
    let mut accepted = 0;
    for test in tests {
        let outcome = x0tta6bl4_crypto::mldsa::verify_with_context(
            &bytes(&test["pk"]),
            &bytes(&test["context"]),
            &bytes(&test["message"]),
            &bytes(&test["signature"]),
        );
        let expected = test["testPassed"].as_bool().unwrap();
        assert_eq!(
            outcome.is_ok(),
            expected,
            "tcId {}: {}",
            test["tcId"],
            test["reason"]
        );
        accepted += usize::from(expected);
    }
    assert_eq!(
        (tests.len(), accepted),
        (15, 3),
        "the vector set covers valid and every kind of modified input"
    );
}

#[test]
fn ml_kem_768_key_generation_matches_nist_vectors() {
    let set = vectors("ml-kem-768-keygen.json");
    for test in set["tests"].as_array().unwrap() {
        // FIPS 203 ML-KEM.KeyGen_internal(d, z): the seed is d ‖ z.
        let mut seed = bytes(&test["d"]);
        seed.extend(bytes(&test["z"]));
        let (ek, dk) = x0tta6bl4_crypto::mlkem::keypair_from_seed(&seed).unwrap();
        assert_eq!(ek, bytes(&test["ek"]), "tcId {} encapsulation key", test["tcId"]);
        assert_eq!(
            dk.as_slice(),
            bytes(&test["dk"]).as_slice(),
            "tcId {} decapsulation key",
            test["tcId"]
        );
    }
}

#[test]
fn ml_kem_768_decapsulation_matches_nist_vectors_including_implicit_rejection() {
    let set = vectors("ml-kem-768-decap.json");
    let dk = bytes(&set["dk"]);
    let mut rejected = 0;
    for test in set["tests"].as_array().unwrap() {
        let shared = x0tta6bl4_crypto::mlkem::decapsulate(&dk, &bytes(&test["c"])).unwrap();
        assert_eq!(
            shared.as_slice(),
            bytes(&test["k"]).as_slice(),
            "tcId {}: {}",
            test["tcId"],
            test["reason"]
        );
        rejected += usize::from(test["reason"] == "modified ciphertext");
    }
    assert_eq!(rejected, 5);
}
