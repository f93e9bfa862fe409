//! What the cargo-fuzz targets `fl_train_request`, `fl_signed_update`, `fl_zone_report` and
//! `fl_chunk` (in `fuzz/`) check, run on stable with a fixed seed: every decoder of `codec` answers random bytes and
//! mutated valid messages with an error or a value, never a panic, and whatever decodes
//! re-encodes to the same bytes (one encoding per value).
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use x0tta6bl4_fl::codec::chunks::{
    CHUNK_BYTES, ChunkHeader, Fed, HEADER_LEN, MAX_MESSAGE_BYTES, PARTIAL_BYTES, Reassembler, split,
};
use x0tta6bl4_fl::codec::train_request::{self, JobDataset, TraceContext, TrainRequest};
use x0tta6bl4_fl::codec::update as signed_update;
use x0tta6bl4_fl::codec::zone_report::{self, MemberOutcome, MemberVerdict, ZoneReport};
use x0tta6bl4_fl::dataset::DatasetName;
use x0tta6bl4_fl::model::{ModelKind, ModelShape};
use x0tta6bl4_fl::update::{ModelUpdate, SignedUpdate};
use x0tta6bl4_wire::NodeId;

const CASES: usize = 4000;

/// A signed message's bytes with a made-up signature (decoding does not verify).
fn with_signature(mut signed: Vec<u8>, signature: &[u8]) -> Vec<u8> {
    signed.extend_from_slice(&u16::try_from(signature.len()).unwrap().to_be_bytes());
    signed.extend_from_slice(signature);
    signed
}

fn train_requests() -> Vec<Vec<u8>> {
    let request = |kind, dataset, participants: &[&str], values: Vec<f32>| TrainRequest {
        job_uid: "3f1c-uid".into(),
        round: 2,
        aggregator: "node-a".into(),
        key_epoch: 1,
        base_digest: [0x5a; 32],
        shape: ModelShape::new(kind, 4, 3),
        dataset,
        local_epochs: 3,
        batch_size: 16,
        learning_rate: 0.25,
        seed: 0xdead_beef,
        // One traced, one not: both layouts are fed to the decoder.
        trace: (participants.len() > 1).then_some(TraceContext {
            trace_id: [0x11; 16],
            span_id: [0x22; 8],
            flags: 1,
        }),
        participants: participants.iter().map(|p| (*p).to_owned()).collect(),
        values,
    };
    [
        request(
            ModelKind::LogisticRegression,
            JobDataset::Shipped(DatasetName::Iris),
            &["node-a", "node-b", "node-c"],
            vec![0.5; 15],
        ),
        request(
            ModelKind::Mlp { hidden: 2 },
            JobDataset::LinkTelemetry,
            &["n"],
            vec![-1.0, 0.0, f32::NAN, 3.5],
        ),
    ]
    .iter()
    .map(|r| with_signature(r.signed_bytes().unwrap(), &[1, 2, 3, 4]))
    .collect()
}

fn signed_updates() -> Vec<Vec<u8>> {
    let update = |values: Vec<f32>, signature: Vec<u8>| SignedUpdate {
        update: ModelUpdate {
            round_uid: "3f1c-uid".into(),
            round: 3,
            participant: "node-c".into(),
            base_digest: [0x3c; 32],
            examples: 96,
            values,
        },
        signature,
    };
    [
        update(vec![0.125, -2.0, f32::NAN, f32::INFINITY, 0.0, -0.0], vec![7; 6]),
        update(vec![], vec![]),
    ]
    .iter()
    .map(|u| u.encode().unwrap())
    .collect()
}

fn zone_reports() -> Vec<Vec<u8>> {
    let report = |values: Vec<f32>, error: &str| ZoneReport {
        job_uid: "3f1c-uid".into(),
        round: 4,
        zone: "zone-b".into(),
        zone_aggregator: "node-b".into(),
        key_epoch: 2,
        base_digest: [0xa5; 32],
        examples: 640,
        error: error.into(),
        outcomes: vec![
            MemberOutcome {
                participant: "node-b".into(),
                verdict: MemberVerdict::Accepted,
            },
            MemberOutcome {
                participant: "node-d".into(),
                verdict: MemberVerdict::Rejected("norm above the bound".into()),
            },
        ],
        values,
    };
    [report(vec![0.25; 6], ""), report(vec![], "median refused")]
        .iter()
        .map(|r| with_signature(r.signed_bytes().unwrap(), &[9; 5]))
        .collect()
}

/// Chunks of messages of one chunk and of several (each chunk a valid input on its own).
fn chunks() -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for (id, len) in [(1, 0), (2, 37), (3, CHUNK_BYTES), (4, 2 * CHUNK_BYTES + 11)] {
        let message: Vec<u8> = (0..len).map(|i| (i % 253) as u8).collect();
        out.extend(split(id, &message).unwrap());
    }
    out
}

/// Random bytes, sometimes behind `prefix` (a magic and version, so the decoder reads further).
fn random_input(rng: &mut StdRng, prefix: &[u8]) -> Vec<u8> {
    let len = rng.random_range(0..300);
    let mut bytes: Vec<u8> = (0..len).map(|_| rng.random()).collect();
    if rng.random_bool(0.5) {
        bytes.splice(0..0, prefix.iter().copied());
    }
    bytes
}

/// One to four mutations: a bit flipped, a byte replaced (by a random or an edge value), a
/// byte inserted or removed, or the tail cut. `hot` bytes at the front get most of them.
fn mutate(rng: &mut StdRng, mut bytes: Vec<u8>, hot: usize) -> Vec<u8> {
    for _ in 0..rng.random_range(1..=4) {
        if bytes.is_empty() {
            break;
        }
        let at = if rng.random_bool(0.7) {
            rng.random_range(0..bytes.len().min(hot))
        } else {
            rng.random_range(0..bytes.len())
        };
        match rng.random_range(0..6) {
            0 => bytes[at] ^= 1 << rng.random_range(0..8),
            1 => bytes[at] = rng.random(),
            2 => bytes[at] = [0, 1, 0x7f, 0x80, 0xff][rng.random_range(0..5)],
            3 => bytes.insert(at, rng.random()),
            4 => {
                bytes.remove(at);
            }
            _ => bytes.truncate(at),
        }
    }
    bytes
}

fn inputs(seed: u64, valid: &[Vec<u8>], prefix: &[u8], hot: usize) -> impl Iterator<Item = Vec<u8>> {
    let mut rng = StdRng::seed_from_u64(seed);
    let valid = valid.to_vec();
    let prefix = prefix.to_vec();
    (0..CASES).map(move |i| {
        if i % 3 == 0 {
            random_input(&mut rng, &prefix)
        } else {
            let base = valid[rng.random_range(0..valid.len())].clone();
            mutate(&mut rng, base, hot)
        }
    })
}

fn prefix(magic: [u8; 4], version: u8) -> Vec<u8> {
    let mut prefix = magic.to_vec();
    prefix.push(version);
    prefix
}

#[test]
fn train_requests_never_panic_and_decode_canonically() {
    let valid = train_requests();
    for bytes in &valid {
        assert!(TrainRequest::decode(bytes).is_ok());
    }
    let mut decoded = 0;
    let magic = prefix(train_request::MAGIC, train_request::VERSION);
    for bytes in inputs(0xf1_7a1e, &valid, &magic, 100) {
        if let Ok((request, signed_len, signature)) = TrainRequest::decode(&bytes) {
            decoded += 1;
            assert_eq!(request.signed_bytes().unwrap(), bytes[..signed_len]);
            assert_eq!(with_signature(bytes[..signed_len].to_vec(), signature), bytes);
        }
    }
    assert!(decoded > 0, "no mutation decoded: the round trip never ran");
}

#[test]
fn signed_updates_never_panic_and_decode_canonically() {
    let valid = signed_updates();
    for bytes in &valid {
        assert!(SignedUpdate::decode(bytes).is_ok());
    }
    let mut decoded = 0;
    let magic = prefix(signed_update::MAGIC, signed_update::VERSION);
    for bytes in inputs(0x05e9_da7e, &valid, &magic, 80) {
        if let Ok((signed, signed_len)) = SignedUpdate::decode(&bytes) {
            decoded += 1;
            assert_eq!(signed.update.signed_bytes().unwrap(), bytes[..signed_len]);
            assert_eq!(signed.encode().unwrap(), bytes);
        }
    }
    assert!(decoded > 0, "no mutation decoded: the round trip never ran");
}

#[test]
fn zone_reports_never_panic_and_decode_canonically() {
    let valid = zone_reports();
    for bytes in &valid {
        assert!(ZoneReport::decode(bytes).is_ok());
    }
    let mut decoded = 0;
    let magic = prefix(zone_report::MAGIC, zone_report::VERSION);
    for bytes in inputs(0x20_2e_e9, &valid, &magic, 100) {
        if let Ok((report, signed_len, signature)) = ZoneReport::decode(&bytes) {
            decoded += 1;
            assert_eq!(report.signed_bytes().unwrap(), bytes[..signed_len]);
            assert_eq!(with_signature(bytes[..signed_len].to_vec(), signature), bytes);
        }
    }
    assert!(decoded > 0, "no mutation decoded: the round trip never ran");
}

#[test]
fn chunks_never_panic_decode_canonically_and_reassembly_stays_bounded() {
    let valid = chunks();
    for bytes in &valid {
        assert!(ChunkHeader::decode(bytes).is_ok());
    }
    let mut decoded = 0;
    let mut reassembler = Reassembler::new();
    let mut now = Instant::now();
    let mut rng = StdRng::seed_from_u64(0xc4_0c5);
    for bytes in inputs(0x0c_4a_4c, &valid, b"X0FC", HEADER_LEN) {
        if let Ok((header, piece)) = ChunkHeader::decode(&bytes) {
            decoded += 1;
            assert_eq!(header.encode(piece), bytes);
        }
        // The same input fed to a reassembler, from one of a few sources, time moving on.
        let source = NodeId([rng.random_range(0..3); 32]);
        now += Duration::from_millis(rng.random_range(0..200));
        if let Fed::Complete(message) = reassembler.feed(source, 1, &bytes, now, |_| {}) {
            assert!(message.len() <= MAX_MESSAGE_BYTES);
        }
        assert!(reassembler.held_bytes() <= PARTIAL_BYTES);
    }
    assert!(decoded > 0, "no mutation decoded: the round trip never ran");
}
