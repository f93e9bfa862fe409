//! Property tests of the wire formats: every message round-trips, encodings are canonical,
//! the frame reader is indifferent to how a stream is chunked, and no input makes a decoder
//! panic or mislabel a truncation.

use proptest::collection::vec;
use proptest::prelude::*;
use x0tta6bl4_wire::{
    Data, DecodeError, EndorsementAnnounce, Envelope, FrameReader, HEADER_LEN, Hello, MAX_BODY_LEN,
    MAX_ENDORSEMENT_LEN, MAX_SVID_CHAIN, Message, NodeId, Originator, OriginatorBody, SeqnoRequest,
    SvidUpdate, decode_frame,
};

fn node_id() -> impl Strategy<Value = NodeId> {
    any::<[u8; 32]>().prop_map(NodeId)
}

fn costs() -> impl Strategy<Value = Vec<(NodeId, u32)>> {
    vec((node_id(), any::<u32>()), 0..12)
}

fn hello() -> impl Strategy<Value = Hello> {
    (any::<u32>(), any::<u64>(), any::<u32>(), any::<u32>(), costs()).prop_map(
        |(seq, sent_at_micros, echo_seq, echo_delay_micros, advertised_costs)| Hello {
            seq,
            sent_at_micros,
            echo_seq,
            echo_delay_micros,
            advertised_costs,
        },
    )
}

fn originator_body() -> impl Strategy<Value = OriginatorBody> {
    (
        node_id(),
        any::<u64>(),
        any::<u64>(),
        any::<u32>(),
        "\\PC{0,60}",
        costs(),
    )
        .prop_map(
            |(originator, seq, issued_at_micros, key_epoch, endpoint, neighbours)| OriginatorBody {
                originator,
                seq,
                issued_at_micros,
                key_epoch,
                endpoint,
                neighbours,
            },
        )
}

fn signature() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![vec(any::<u8>(), 0..64), vec(any::<u8>(), 3309..=3309)]
}

fn originator() -> impl Strategy<Value = Originator> {
    (originator_body(), signature(), any::<u8>(), any::<u32>()).prop_map(
        |(body, signature, hop_count, path_cost)| {
            Originator::new(body, signature, Envelope { hop_count, path_cost }).expect("within limits")
        },
    )
}

fn data() -> impl Strategy<Value = Data> {
    (
        node_id(),
        node_id(),
        any::<u8>(),
        any::<u32>(),
        vec(any::<u8>(), 0..512),
    )
        .prop_map(|(source, destination, ttl, flow, payload)| Data {
            source,
            destination,
            ttl,
            flow,
            payload,
        })
}

fn endorsement_announce() -> impl Strategy<Value = EndorsementAnnounce> {
    // Real endorsements are about 5.3 KB; short ones exercise the length handling.
    prop_oneof![vec(any::<u8>(), 0..64), vec(any::<u8>(), 5000..5400)]
        .prop_map(|endorsement| EndorsementAnnounce { endorsement })
}

fn svid_update() -> impl Strategy<Value = SvidUpdate> {
    vec(vec(any::<u8>(), 0..1200), 1..=MAX_SVID_CHAIN).prop_map(|chain| SvidUpdate { chain })
}

fn seqno_request() -> impl Strategy<Value = SeqnoRequest> {
    (node_id(), any::<u64>(), any::<u8>()).prop_map(|(destination, seq, hop_limit)| SeqnoRequest {
        destination,
        seq,
        hop_limit,
    })
}

fn message() -> impl Strategy<Value = Message> {
    prop_oneof![
        hello().prop_map(Message::Hello),
        originator().prop_map(Message::Originator),
        data().prop_map(Message::Data),
        endorsement_announce().prop_map(Message::EndorsementAnnounce),
        svid_update().prop_map(Message::SvidUpdate),
        seqno_request().prop_map(Message::SeqnoRequest),
    ]
}

fn body_of(message: &Message) -> Vec<u8> {
    let frame = message.to_frame().expect("within limits");
    frame[HEADER_LEN..].to_vec()
}

/// Decodes a body with the decoder of its type and re-wraps it.
fn decode_body_as(message: &Message, body: &[u8]) -> Result<Message, DecodeError> {
    match message {
        Message::Hello(_) => Hello::decode(body).map(Message::Hello),
        Message::Originator(_) => Originator::decode(body).map(Message::Originator),
        Message::Data(_) => Data::decode(body).map(Message::Data),
        Message::EndorsementAnnounce(_) => {
            EndorsementAnnounce::decode(body).map(Message::EndorsementAnnounce)
        }
        Message::SvidUpdate(_) => SvidUpdate::decode(body).map(Message::SvidUpdate),
        Message::SeqnoRequest(_) => SeqnoRequest::decode(body).map(Message::SeqnoRequest),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn every_hello_round_trips(hello in hello()) {
        let mut body = Vec::new();
        hello.encode_body(&mut body).unwrap();
        prop_assert_eq!(Hello::decode(&body), Ok(hello));
    }

    #[test]
    fn every_originator_round_trips_with_its_signed_bytes_intact(originator in originator()) {
        let mut body = Vec::new();
        originator.encode_body(&mut body).unwrap();
        let decoded = Originator::decode(&body).unwrap();
        let signed = originator.body().signed_bytes().unwrap();
        prop_assert_eq!(decoded.signed_bytes(), signed.as_slice());
        let reparsed = OriginatorBody::decode(decoded.signed_bytes());
        prop_assert_eq!(reparsed.as_ref(), Ok(originator.body()));
        prop_assert_eq!(decoded, originator);
    }

    #[test]
    fn every_data_message_round_trips(data in data()) {
        let mut body = Vec::new();
        data.encode_body(&mut body).unwrap();
        prop_assert_eq!(Data::decode(&body), Ok(data));
    }

    #[test]
    fn every_endorsement_announcement_round_trips(announce in endorsement_announce()) {
        let mut body = Vec::new();
        announce.encode_body(&mut body).unwrap();
        prop_assert_eq!(EndorsementAnnounce::decode(&body), Ok(announce));
    }

    #[test]
    fn every_frame_round_trips_and_reports_its_length(message in message(), tail in vec(any::<u8>(), 0..16)) {
        let mut bytes = message.to_frame().unwrap();
        let len = bytes.len();
        bytes.extend(&tail);
        prop_assert_eq!(decode_frame(&bytes), Ok((message, len)));
    }

    #[test]
    fn every_truncation_of_a_valid_frame_is_truncated(message in message()) {
        let frame = message.to_frame().unwrap();
        for cut in 0..frame.len() {
            prop_assert_eq!(decode_frame(&frame[..cut]), Err(DecodeError::Truncated), "cut at {}", cut);
        }
    }

    #[test]
    fn every_truncation_of_a_valid_body_is_truncated(message in message()) {
        let body = body_of(&message);
        for cut in 0..body.len() {
            prop_assert_eq!(decode_body_as(&message, &body[..cut]), Err(DecodeError::Truncated), "cut at {}", cut);
        }
    }

    #[test]
    fn the_reader_yields_the_same_messages_however_the_stream_is_chunked(
        messages in vec(message(), 1..6),
        cuts in vec(any::<prop::sample::Index>(), 0..24),
    ) {
        let stream: Vec<u8> = messages.iter().flat_map(|m| m.to_frame().unwrap()).collect();
        let mut cut_points: Vec<usize> = cuts.iter().map(|i| i.index(stream.len() + 1)).collect();
        cut_points.push(0);
        cut_points.push(stream.len());
        cut_points.sort_unstable();
        let mut reader = FrameReader::new();
        let mut got = Vec::new();
        for pair in cut_points.windows(2) {
            for item in reader.feed(&stream[pair[0]..pair[1]]) {
                got.push(item.unwrap());
            }
            prop_assert!(reader.buffered_len() <= HEADER_LEN + MAX_BODY_LEN);
        }
        prop_assert_eq!(got, messages);
        prop_assert_eq!(reader.buffered_len(), 0);
    }

    #[test]
    fn arbitrary_bytes_never_panic_any_decoder(bytes in vec(any::<u8>(), 0..2048)) {
        let _ = decode_frame(&bytes);
        let _ = Hello::decode(&bytes);
        let _ = Originator::decode(&bytes);
        let _ = OriginatorBody::decode(&bytes);
        let _ = Data::decode(&bytes);
        let _ = EndorsementAnnounce::decode(&bytes);
        let mut reader = FrameReader::new();
        for chunk in bytes.chunks(7) {
            for _ in reader.feed(chunk) {}
        }
    }

    #[test]
    fn arbitrary_bodies_behind_a_valid_header_never_panic_and_decode_canonically(
        message_type in 0u8..8,
        body in vec(any::<u8>(), 0..512),
    ) {
        let mut frame = b"X0\x01".to_vec();
        frame.push(message_type);
        frame.extend(u32::try_from(body.len()).unwrap().to_be_bytes());
        frame.extend(&body);
        if let Ok((message, consumed)) = decode_frame(&frame) {
            prop_assert_eq!(consumed, frame.len());
            prop_assert_eq!(message.to_frame().unwrap(), frame);
        }
    }

    #[test]
    fn a_mutated_frame_either_fails_or_is_the_canonical_encoding_of_what_it_decodes_to(
        message in message(),
        position in any::<prop::sample::Index>(),
        value in any::<u8>(),
    ) {
        let mut frame = message.to_frame().unwrap();
        let at = position.index(frame.len());
        frame[at] = value;
        if let Ok((decoded, consumed)) = decode_frame(&frame) {
            prop_assert_eq!(decoded.to_frame().unwrap(), frame[..consumed].to_vec());
        }
    }
}

#[test]
fn the_largest_messages_fit_and_round_trip() {
    let costs: Vec<(NodeId, u32)> = (0..1024u32).map(|i| (NodeId([i as u8; 32]), i)).collect();
    let body = OriginatorBody {
        originator: NodeId([1; 32]),
        seq: u64::MAX,
        issued_at_micros: u64::MAX,
        key_epoch: u32::MAX,
        endpoint: "e".repeat(255),
        neighbours: costs.clone(),
    };
    let largest = [
        Message::Originator(
            Originator::new(
                body,
                vec![0xAB; 4627],
                Envelope {
                    hop_count: 255,
                    path_cost: u32::MAX,
                },
            )
            .unwrap(),
        ),
        Message::Hello(Hello {
            advertised_costs: costs,
            ..Hello::default()
        }),
        Message::Data(Data {
            payload: vec![1; x0tta6bl4_wire::MAX_DATA_PAYLOAD_LEN],
            ..Data::default()
        }),
        Message::EndorsementAnnounce(EndorsementAnnounce {
            endorsement: vec![2; MAX_ENDORSEMENT_LEN],
        }),
    ];
    for message in largest {
        let frame = message.to_frame().unwrap();
        assert!(frame.len() <= HEADER_LEN + MAX_BODY_LEN);
        assert_eq!(decode_frame(&frame), Ok((message, frame.len())));
    }
}
