use std::time::Duration;

use x0tta6bl4_wire::{Data, Envelope, Hello};

use super::*;
use crate::testkit::*;
use crate::{BASE_LINK_COST, INFINITY, RouterConfig};

const ME: u8 = 1;
const ORIGIN: u8 = 9;

fn mk_router_with(config: RouterConfig, verifier: &FakeVerifier) -> Router<&FakeVerifier> {
    Router::new(config, mk_id(ME), verifier, Duration::ZERO)
}

fn mk_hello(seq: u32) -> Hello {
    Hello {
        seq,
        ..Hello::default()
    }
}

fn mk_envelope(hop_count: u8, path_cost: u32) -> Envelope {
    Envelope { hop_count, path_cost }
}

/// Brings each peer up as a live neighbour (session plus one hello).
fn with_live_neighbours<V: OriginatorVerifier>(router: &mut Router<V>, peers: &[u8], now: Duration) {
    for &peer in peers {
        router.on_session_up(mk_id(peer), now);
        router.on_hello(mk_id(peer), mk_hello(1), now);
    }
}

fn rejected(outputs: &[Output]) -> Vec<RejectReason> {
    outputs
        .iter()
        .filter_map(|output| match output {
            Output::Rejected { reason, .. } => Some(*reason),
            _ => None,
        })
        .collect()
}

fn forwards(outputs: &[Output]) -> Vec<(u8, Envelope)> {
    outputs
        .iter()
        .filter_map(|output| match output {
            Output::Forward { peer, originator } => Some((peer.0[0], originator.envelope)),
            _ => None,
        })
        .collect()
}

// ----- the verification pipeline ---------------------------------------------------------

#[test]
fn duplicate_originator_messages_are_verified_once() {
    let verifier = FakeVerifier::default();
    let mut router = mk_router_with(mk_config(), &verifier);
    with_live_neighbours(&mut router, &[2, 3, 4], Duration::ZERO);

    for (peer, path_cost) in [(2, 256), (3, 512), (4, 768)] {
        let copy = mk_originator(mk_id(ORIGIN), 5, mk_envelope(2, path_cost));
        router.on_originator(mk_id(peer), copy, MS);
    }

    assert_eq!(verifier.calls.get(), 1);
    assert_eq!(router.verifications_performed(), 1);
    assert_eq!(router.rejections(RejectReason::Duplicate), 2);
    // The duplicates still tell which neighbours offer a path.
    assert_eq!(router.candidates(&mk_id(ORIGIN)).len(), 3);
    assert_eq!(router.next_hop(&mk_id(ORIGIN)), Some(mk_id(2)));
}

#[test]
fn a_different_body_under_a_verified_sequence_number_is_rejected_as_equivocation_unverified() {
    let verifier = FakeVerifier::default();
    let mut router = mk_router_with(mk_config(), &verifier);
    with_live_neighbours(&mut router, &[2, 3], Duration::ZERO);
    router.on_originator(mk_id(2), mk_originator(mk_id(ORIGIN), 5, mk_envelope(1, 0)), MS);

    let other_body = OriginatorBody {
        endpoint: "203.0.113.66:1".to_owned(),
        ..mk_body(mk_id(ORIGIN), 5)
    };
    let outputs = router.on_originator(mk_id(3), mk_signed(other_body, mk_envelope(1, 0)), MS);

    assert_eq!(rejected(&outputs), [RejectReason::Equivocation]);
    assert_eq!(verifier.calls.get(), 1);
    assert_eq!(router.rejections(RejectReason::Equivocation), 1);
    assert!(forwards(&outputs).is_empty());
}

#[test]
fn a_replay_of_an_old_sequence_number_is_rejected_after_its_signature_is_verified() {
    let verifier = FakeVerifier::default();
    let mut router = mk_router_with(mk_config(), &verifier);
    with_live_neighbours(&mut router, &[2], Duration::ZERO);
    router.on_originator(mk_id(2), mk_originator(mk_id(ORIGIN), 100, mk_envelope(1, 0)), MS);

    let outputs = router.on_originator(
        mk_id(2),
        mk_originator(mk_id(ORIGIN), 10, mk_envelope(1, 0)),
        2 * MS,
    );

    assert_eq!(rejected(&outputs), [RejectReason::Replayed]);
    assert_eq!(verifier.calls.get(), 2, "verified first, then found replayed");
    assert_eq!(router.route(&mk_id(ORIGIN)).map(|route| route.seq), Some(100));
}

#[test]
fn a_replay_forgotten_by_the_dedup_cache_is_still_caught_by_the_sequence_window() {
    let verifier = FakeVerifier::default();
    let mut router = mk_router_with(
        RouterConfig {
            dedup_cache_size: 1,
            ..mk_config()
        },
        &verifier,
    );
    with_live_neighbours(&mut router, &[2], Duration::ZERO);
    let advertisement = mk_originator(mk_id(ORIGIN), 7, mk_envelope(1, 0));
    router.on_originator(mk_id(2), advertisement.clone(), MS);
    // Another originator's advertisement pushes it out of the one-entry cache.
    router.on_originator(mk_id(2), mk_originator(mk_id(8), 1, mk_envelope(1, 0)), MS);

    let outputs = router.on_originator(mk_id(2), advertisement, 2 * MS);

    assert_eq!(rejected(&outputs), [RejectReason::Replayed]);
    assert_eq!(verifier.calls.get(), 3);
}

#[test]
fn a_stale_copy_still_in_the_dedup_cache_is_a_replay_not_a_duplicate() {
    let verifier = FakeVerifier::default();
    let mut router = mk_router_with(mk_config(), &verifier);
    with_live_neighbours(&mut router, &[2, 3], Duration::ZERO);
    let old = mk_originator(mk_id(ORIGIN), 7, mk_envelope(1, 0));
    router.on_originator(mk_id(2), old.clone(), MS);
    router.on_originator(
        mk_id(2),
        mk_originator(mk_id(ORIGIN), 8, mk_envelope(1, 0)),
        2 * MS,
    );
    let late = router.on_originator(mk_id(3), old.clone(), 3 * MS);
    assert_eq!(
        rejected(&late),
        [RejectReason::Duplicate],
        "one behind: a late copy of a flood"
    );
    router.on_originator(
        mk_id(2),
        mk_originator(mk_id(ORIGIN), 9, mk_envelope(1, 0)),
        4 * MS,
    );

    let outputs = router.on_originator(mk_id(3), old, 5 * MS);

    assert_eq!(rejected(&outputs), [RejectReason::Replayed]);
    assert_eq!(router.route(&mk_id(ORIGIN)).map(|route| route.seq), Some(9));
    assert_eq!(verifier.calls.get(), 3, "found in the cache: not verified again");
}

#[test]
fn a_forged_message_is_rejected_counted_and_does_not_block_the_genuine_one() {
    let verifier = FakeVerifier::default();
    let mut router = mk_router_with(mk_config(), &verifier);
    with_live_neighbours(&mut router, &[2, 3], Duration::ZERO);

    let outputs = router.on_originator(mk_id(2), mk_forged(mk_id(ORIGIN), 5, mk_envelope(1, 0)), MS);

    assert_eq!(
        rejected(&outputs),
        [RejectReason::Unverified(VerifyError::BadSignature)]
    );
    assert_eq!(
        router.rejections(RejectReason::Unverified(VerifyError::BadSignature)),
        1
    );
    assert_eq!(
        RejectReason::Unverified(VerifyError::BadSignature).label(),
        "bad_signature"
    );
    assert_eq!(router.next_hop(&mk_id(ORIGIN)), None);
    assert!(forwards(&outputs).is_empty());

    // The forgery was not remembered: the genuine advertisement is neither a duplicate nor an
    // equivocation of it.
    let outputs = router.on_originator(mk_id(3), mk_originator(mk_id(ORIGIN), 5, mk_envelope(1, 0)), MS);
    assert!(rejected(&outputs).is_empty());
    assert_eq!(router.next_hop(&mk_id(ORIGIN)), Some(mk_id(3)));
}

#[test]
fn a_message_beyond_max_hops_is_dropped_unverified_and_one_at_the_limit_is_not_forwarded() {
    let verifier = FakeVerifier::default();
    let mut router = mk_router_with(
        RouterConfig {
            max_hops: 3,
            ..mk_config()
        },
        &verifier,
    );
    with_live_neighbours(&mut router, &[2, 3], Duration::ZERO);

    let outputs = router.on_originator(mk_id(2), mk_originator(mk_id(ORIGIN), 5, mk_envelope(4, 768)), MS);
    assert_eq!(rejected(&outputs), [RejectReason::HopLimit]);
    assert_eq!(verifier.calls.get(), 0);

    let outputs = router.on_originator(mk_id(2), mk_originator(mk_id(ORIGIN), 6, mk_envelope(3, 512)), MS);
    assert!(rejected(&outputs).is_empty());
    assert_eq!(router.next_hop(&mk_id(ORIGIN)), Some(mk_id(2)));
    assert!(
        forwards(&outputs).is_empty(),
        "a fourth hop would exceed the limit"
    );
}

#[test]
fn our_own_advertisement_coming_back_is_dropped() {
    let verifier = FakeVerifier::default();
    let mut router = mk_router_with(mk_config(), &verifier);
    with_live_neighbours(&mut router, &[2], Duration::ZERO);
    let outputs = router.on_originator(mk_id(2), mk_originator(mk_id(ME), 1, mk_envelope(2, 256)), MS);
    assert_eq!(rejected(&outputs), [RejectReason::OwnAdvertisement]);
    assert_eq!(verifier.calls.get(), 0);
}

#[test]
fn messages_from_a_peer_without_a_session_are_dropped() {
    let verifier = FakeVerifier::default();
    let mut router = mk_router_with(mk_config(), &verifier);
    let outputs = router.on_originator(mk_id(2), mk_originator(mk_id(ORIGIN), 1, mk_envelope(1, 0)), MS);
    assert_eq!(rejected(&outputs), [RejectReason::NotNeighbour]);
    assert_eq!(
        rejected(&router.on_hello(mk_id(2), mk_hello(1), MS)),
        [RejectReason::NotNeighbour]
    );
}

// ----- forwarding -------------------------------------------------------------------------

#[test]
fn an_accepted_advertisement_is_forwarded_with_the_envelope_advanced_and_poisoned_back() {
    let verifier = FakeVerifier::default();
    let mut router = mk_router_with(mk_config(), &verifier);
    with_live_neighbours(&mut router, &[2, 3], Duration::ZERO);

    let received = mk_originator(mk_id(ORIGIN), 5, mk_envelope(2, 300));
    let outputs = router.on_originator(mk_id(2), received.clone(), MS);

    let metric = 300 + BASE_LINK_COST;
    assert_eq!(
        forwards(&outputs),
        [(2, mk_envelope(3, INFINITY)), (3, mk_envelope(3, metric))]
    );
    for output in &outputs {
        if let Output::Forward { originator, .. } = output {
            assert_eq!(originator.signed_bytes(), received.signed_bytes());
            assert_eq!(originator.signature(), received.signature());
        }
    }
    assert_eq!(
        router.route(&mk_id(ORIGIN)),
        Some(Route {
            destination: mk_id(ORIGIN),
            next_hop: mk_id(2),
            metric,
            seq: 5,
            hop_count: 2
        })
    );
}

#[test]
fn a_duplicate_is_not_forwarded_again_and_a_better_one_is_used_now_and_advertised_after_the_update_gap() {
    let verifier = FakeVerifier::default();
    let config = mk_config();
    let mut router = mk_router_with(config.clone(), &verifier);
    with_live_neighbours(&mut router, &[2, 3, 4], Duration::ZERO);
    let first = router.on_originator(mk_id(2), mk_originator(mk_id(ORIGIN), 5, mk_envelope(3, 600)), MS);
    assert_eq!(forwards(&first).len(), 3, "a new seqno is flooded at once");

    let worse = router.on_originator(mk_id(3), mk_originator(mk_id(ORIGIN), 5, mk_envelope(3, 900)), MS);
    assert!(forwards(&worse).is_empty());

    // A cheaper copy of the same seqno: data takes it at once, but it is no new flood: the
    // neighbours hear of it once the update gap since the last update has passed.
    let better = router.on_originator(mk_id(4), mk_originator(mk_id(ORIGIN), 5, mk_envelope(2, 100)), MS);
    assert_eq!(router.next_hop(&mk_id(ORIGIN)), Some(mk_id(4)));
    assert!(forwards(&better).is_empty(), "{better:?}");
    let metric = router.route(&mk_id(ORIGIN)).unwrap().metric;
    assert!(metric < 600);
    let mut swept = Vec::new();
    let mut now = MS;
    let mut hello_seq = 1;
    while now <= MS + config.update_gap + config.hello_interval {
        now += 10 * MS;
        if now.as_millis() % 100 == 1 {
            // The neighbours stay alive.
            hello_seq += 1;
            for peer in [2, 3, 4] {
                router.on_hello(mk_id(peer), mk_hello(hello_seq), now);
            }
        }
        let outputs = router.on_tick(now);
        if !forwards(&outputs).is_empty() {
            swept.push((now, forwards(&outputs)));
        }
    }
    let [(sent_at, sent)] = swept.as_slice() else {
        panic!("one paced update: {swept:?}")
    };
    assert!(*sent_at >= MS + config.update_gap, "{sent_at:?}");
    assert_eq!(
        *sent,
        [
            (2, mk_envelope(3, metric)),
            (3, mk_envelope(3, metric)),
            (4, mk_envelope(3, INFINITY))
        ]
    );

    // Past the gap, a small change under the same seqno is no news; another next hop goes out
    // at once.
    let later = now + config.update_gap;
    let jitter = router.on_originator(
        mk_id(3),
        mk_originator(mk_id(ORIGIN), 5, mk_envelope(2, 90)),
        later,
    );
    assert!(forwards(&jitter).is_empty(), "{jitter:?}");
    assert_eq!(
        router.next_hop(&mk_id(ORIGIN)),
        Some(mk_id(4)),
        "within the switch margin"
    );
    let moved = router.on_session_down(mk_id(4), later);
    let rerouted = router.route(&mk_id(ORIGIN)).unwrap();
    assert_eq!(rerouted.next_hop, mk_id(3));
    assert_eq!(
        forwards(&moved),
        [
            (2, mk_envelope(3, rerouted.metric)),
            (3, mk_envelope(3, INFINITY))
        ]
    );
}

#[test]
fn originate_signs_a_new_sequence_number_above_the_floor_and_sends_it_to_live_neighbours() {
    let verifier = FakeVerifier::default();
    let mut router = mk_router_with(mk_config(), &verifier);
    with_live_neighbours(&mut router, &[2, 3], Duration::ZERO);
    router.set_sequence_floor(1_700_000_000_000_000);

    let outputs = router.originate(10 * MS, &FakeSigner(mk_id(ME))).unwrap();

    assert_eq!(
        forwards(&outputs),
        [(2, mk_envelope(1, 0)), (3, mk_envelope(1, 0))]
    );
    let Some(Output::Forward { originator, .. }) = outputs.first() else {
        panic!("{outputs:?}")
    };
    let body = originator.body();
    assert_eq!((body.originator, body.seq), (mk_id(ME), 1_700_000_000_000_001));
    assert_eq!(
        body.neighbours,
        [(mk_id(2), BASE_LINK_COST), (mk_id(3), BASE_LINK_COST)]
    );
    assert_eq!(body.endpoint, mk_config().endpoint);
    assert!(
        verifier
            .verify(
                &mk_id(ME),
                body.key_epoch,
                originator.signed_bytes(),
                originator.signature()
            )
            .is_ok()
    );
}

// ----- neighbours and links ---------------------------------------------------------------

#[test]
fn a_session_starts_with_a_hello_and_hellos_follow_every_interval() {
    let verifier = FakeVerifier::default();
    let mut router = mk_router_with(mk_config(), &verifier);
    let outputs = router.on_session_up(mk_id(2), Duration::ZERO);
    assert!(matches!(outputs.as_slice(), [Output::SendHello { hello, .. }] if hello.seq == 1));
    assert_eq!(
        router.next_deadline(),
        Duration::ZERO,
        "the first advertisement is due"
    );
    router.on_tick(Duration::ZERO);
    assert_eq!(router.next_deadline(), 100 * MS);
    let outputs = router.on_tick(100 * MS);
    assert!(
        outputs
            .iter()
            .any(|o| matches!(o, Output::SendHello { hello, .. } if hello.seq == 2))
    );
}

#[test]
fn a_neighbour_silent_for_three_hello_intervals_is_declared_dead_and_its_routes_withdrawn() {
    let verifier = FakeVerifier::default();
    let mut router = mk_router_with(mk_config(), &verifier);
    with_live_neighbours(&mut router, &[2], Duration::ZERO);
    router.on_originator(mk_id(2), mk_originator(mk_id(ORIGIN), 1, mk_envelope(1, 0)), MS);

    assert!(
        !router
            .on_tick(299 * MS)
            .iter()
            .any(|o| matches!(o, Output::NeighbourDead { .. }))
    );
    let outputs = router.on_tick(300 * MS);

    assert!(outputs.contains(&Output::NeighbourDead {
        peer: mk_id(2),
        silent_for: 300 * MS
    }));
    assert!(outputs.contains(&Output::RouteChanged {
        destination: mk_id(ORIGIN),
        old_next_hop: Some(mk_id(2)),
        new_next_hop: None
    }));
    assert_eq!(router.link_cost(&mk_id(2)), INFINITY);
    assert!(
        outputs.contains(&Output::OriginateDue),
        "a lost neighbour is advertised at once"
    );
}

#[test]
fn the_rtt_comes_from_the_echo_of_our_hello() {
    let verifier = FakeVerifier::default();
    let mut router = mk_router_with(mk_config(), &verifier);
    router.on_session_up(mk_id(2), Duration::ZERO); // our hello 1 leaves at 0
    // The peer got it at 2 ms, held it 5 ms, and its echo arrives at 9 ms: RTT 4 ms.
    let echo = Hello {
        seq: 1,
        echo_seq: 1,
        echo_delay_micros: 5000,
        ..Hello::default()
    };
    router.on_hello(mk_id(2), echo, 9 * MS);
    let status = router.neighbours().into_iter().next().unwrap();
    assert_eq!(status.quality.rtt, Some(4 * MS));
    assert_eq!(status.cost, BASE_LINK_COST + 16 * 4);
}

#[test]
fn claimed_and_measured_costs_of_the_same_link_are_reported_side_by_side() {
    let verifier = FakeVerifier::default();
    let mut router = mk_router_with(mk_config(), &verifier);
    router.on_session_up(mk_id(2), Duration::ZERO);
    assert_eq!(router.claimed_vs_measured(&mk_id(2)), None);
    let lying = Hello {
        seq: 1,
        advertised_costs: vec![(mk_id(ME), 40), (mk_id(7), 300)],
        ..Hello::default()
    };
    router.on_hello(mk_id(2), lying, MS);
    assert_eq!(router.claimed_vs_measured(&mk_id(2)), Some((40, BASE_LINK_COST)));
    assert_eq!(router.advertised_costs(&mk_id(2)).map(<[_]>::len), Some(2));
}

#[test]
fn ebpf_drops_raise_the_link_cost_and_can_move_the_route() {
    let verifier = FakeVerifier::default();
    let mut router = mk_router_with(mk_config(), &verifier);
    with_live_neighbours(&mut router, &[2, 3], Duration::ZERO);
    router.on_originator(mk_id(2), mk_originator(mk_id(ORIGIN), 1, mk_envelope(1, 0)), MS);
    router.on_originator(mk_id(3), mk_originator(mk_id(ORIGIN), 1, mk_envelope(2, 200)), MS);
    assert_eq!(router.next_hop(&mk_id(ORIGIN)), Some(mk_id(2)));

    router.on_link_counters(
        mk_id(2),
        LinkCounters {
            tx_packets: 0,
            rx_packets: 0,
            drops: 0,
        },
        MS,
    );
    let outputs = router.on_link_counters(
        mk_id(2),
        LinkCounters {
            tx_packets: 50,
            rx_packets: 30,
            drops: 20,
        },
        2 * MS,
    );

    assert_eq!(router.link_cost(&mk_id(2)), BASE_LINK_COST + 24 * 20);
    assert_eq!(router.next_hop(&mk_id(ORIGIN)), Some(mk_id(3)));
    assert!(outputs.iter().any(|o| matches!(o, Output::RouteChanged { .. })));
}

#[test]
fn data_is_delivered_forwarded_with_a_decremented_ttl_or_dropped() {
    let verifier = FakeVerifier::default();
    let mut router = mk_router_with(mk_config(), &verifier);
    with_live_neighbours(&mut router, &[2], Duration::ZERO);
    router.on_originator(mk_id(2), mk_originator(mk_id(ORIGIN), 1, mk_envelope(2, 256)), MS);
    let mk_data = |destination: u8, ttl: u8| Data {
        destination: mk_id(destination),
        ttl,
        ..Data::default()
    };

    assert!(matches!(
        router.route_data(Some(mk_id(2)), mk_data(ME, 1)),
        DataDecision::Deliver(_)
    ));
    assert!(matches!(
        router.route_data(Some(mk_id(2)), mk_data(ORIGIN, 5)),
        DataDecision::Forward { next_hop, data } if next_hop == mk_id(2) && data.ttl == 4
    ));
    assert!(matches!(
        router.route_data(None, mk_data(ORIGIN, 1)),
        DataDecision::Forward { .. }
    ));
    assert!(matches!(
        router.route_data(Some(mk_id(2)), mk_data(ORIGIN, 1)),
        DataDecision::Drop {
            reason: "ttl_expired",
            ..
        }
    ));
    assert!(matches!(
        router.route_data(None, mk_data(42, 9)),
        DataDecision::Drop {
            reason: "no_route",
            ..
        }
    ));
}

// ----- whole meshes -----------------------------------------------------------------------

const SETTLED: Duration = Duration::from_secs(3);

fn mk_line(n: u8) -> Vec<(u8, u8)> {
    (1..n).map(|i| (i, i + 1)).collect()
}

fn mk_ring(n: u8) -> Vec<(u8, u8)> {
    (1..=n).map(|i| (i, i % n + 1)).collect()
}

fn assert_no_loop(net: &Net, nodes: u8) {
    for from in 1..=nodes {
        for to in 1..=nodes {
            if let Err(PathError::Loop { path }) = net.path(from, to) {
                panic!("loop at {:?} from {from} to {to}: {path:?}", net.now);
            }
        }
    }
}

#[test]
fn a_line_of_five_converges_to_a_route_between_every_pair_with_the_right_next_hop() {
    let mut net = Net::new(5, &mk_line(5), &mk_config());
    net.run_checking(SETTLED, |net| assert_no_loop(net, 5));

    for from in 1..=5u8 {
        for to in (1..=5u8).filter(|&to| to != from) {
            let toward = if to > from { from + 1 } else { from - 1 };
            assert_eq!(net.next_hop(from, to), Some(toward), "{from} -> {to}");
            let route = net.routers[&mk_id(from)].route(&mk_id(to)).unwrap();
            assert_eq!(u32::from(route.hop_count), u32::from(from.abs_diff(to)));
        }
    }
    // One verification per advertisement per node, however many copies arrived.
    let advertisements: u64 = net.routers.values().map(|router| router.own_seq).sum();
    let verified: u64 = net.routers.values().map(Router::verifications_performed).sum();
    assert_eq!(
        verified,
        advertisements * 4,
        "every node verifies each of the others' advertisements once"
    );
    assert_eq!(net.verifier.calls.get(), verified);
}

#[test]
fn killing_the_middle_node_is_detected_within_three_hellos_and_routes_through_it_disappear() {
    let config = mk_config();
    let mut net = Net::new(5, &mk_line(5), &config);
    net.run_until(SETTLED);
    let killed_at = SETTLED + 37 * MS;
    net.run_until(killed_at);
    net.kill(3);
    net.run_until(killed_at + 3 * config.hello_interval + 20 * MS);

    let deaths = net.deaths();
    for neighbour in [2, 4] {
        let (when, _, _, silent_for) = *deaths
            .iter()
            .find(|(_, at, peer, _)| *at == neighbour && *peer == 3)
            .unwrap_or_else(|| panic!("{neighbour} did not detect 3: {deaths:?}"));
        assert!(
            when - killed_at <= 3 * config.hello_interval,
            "detected {:?} after the kill",
            when - killed_at
        );
        assert!(silent_for <= config.neighbour_timeout);
    }
    for at in [1, 2, 4, 5] {
        for to in 1..=5 {
            assert_ne!(
                net.next_hop(at, to),
                Some(3),
                "{at} still routes to {to} via the dead node"
            );
        }
    }
    for (side, other_side) in [([1, 2], [3, 4, 5]), ([4, 5], [1, 2, 3])] {
        for at in side {
            for to in other_side {
                let offers = net.routers[&mk_id(at)].candidates(&mk_id(to));
                assert_eq!(net.next_hop(at, to), None, "{at} -> {to}: {offers:?}");
            }
        }
    }
}

/// Cuts link 1-2 of a settled ring of six just after a round of advertisements (so that nodes
/// needing a newer seqno would wait a whole interval for it: the worst case), and returns when
/// the cut happened and when each pair's route last became one avoiding the cut, checking for
/// loops after every event.
fn ring_reroute_after_cut(config: &RouterConfig) -> (Net, Duration, BTreeMap<(u8, u8), Duration>) {
    ring_reroute_after_cut_with(config, |_| config.clone())
}

/// [`ring_reroute_after_cut`] with node `i` configured by `config_of(i)`.
fn ring_reroute_after_cut_with(
    config: &RouterConfig,
    config_of: impl Fn(u8) -> RouterConfig,
) -> (Net, Duration, BTreeMap<(u8, u8), Duration>) {
    let mut net = Net::new_with(6, &mk_ring(6), config_of);
    net.run_until(SETTLED);
    assert_eq!(net.path(1, 2), Ok(vec![1, 2]));
    let last_round = net
        .routers
        .values()
        .filter_map(|router| router.last_originated_at)
        .max()
        .unwrap();
    let cut_at = last_round + config.originator_interval + 10 * MS;
    net.run_until(cut_at);
    net.cut(1, 2);

    let avoids_the_cut = |path: &[u8]| {
        !path
            .windows(2)
            .any(|w| (w[0], w[1]) == (1, 2) || (w[0], w[1]) == (2, 1))
    };
    let mut rerouted_at: BTreeMap<(u8, u8), Duration> = BTreeMap::new();
    net.run_checking(cut_at + 2 * config.originator_interval, |net| {
        assert_no_loop(net, 6);
        for from in 1..=6 {
            for to in (1..=6).filter(|&to| to != from) {
                match net.path(from, to) {
                    Ok(path) if avoids_the_cut(&path) => {
                        rerouted_at.entry((from, to)).or_insert(net.now);
                    }
                    _ => {
                        rerouted_at.remove(&(from, to));
                    }
                }
            }
        }
    });
    assert_eq!(net.path(1, 2), Ok(vec![1, 6, 5, 4, 3, 2]));
    assert_eq!(net.path(2, 1), Ok(vec![2, 3, 4, 5, 6, 1]));
    assert_eq!(rerouted_at.len(), 30, "every pair has a route avoiding the cut");
    (net, cut_at, rerouted_at)
}

#[test]
fn without_seqno_requests_a_ring_of_six_reroutes_within_one_advertisement_interval() {
    let config = RouterConfig {
        seqno_requests: false,
        ..mk_config()
    };
    let (net, cut_at, rerouted_at) = ring_reroute_after_cut(&config);
    let propagation = 6 * net.latency;
    // The ends of the dead link advertise themselves at once, so routes to them come back
    // after detection plus one flood.
    let to_the_ends = rerouted_at
        .iter()
        .filter(|((_, to), _)| [1, 2].contains(to))
        .map(|(_, at)| *at);
    let fast_bound = config.neighbour_timeout + config.hello_interval + propagation;
    assert!(
        to_the_ends.clone().all(|at| at - cut_at <= fast_bound),
        "{:?}",
        to_the_ends.max()
    );
    // Other routes wait at most one advertisement interval for a newer seqno.
    let slow_bound =
        config.neighbour_timeout + config.originator_interval + propagation + config.hello_interval;
    let slowest = rerouted_at.values().max().copied().unwrap();
    assert!(
        slowest - cut_at > config.originator_interval / 2,
        "the test exercises waiting for a seqno"
    );
    assert!(
        slowest - cut_at <= slow_bound,
        "rerouted after {:?}",
        slowest - cut_at
    );
    let sent: u64 = net
        .routers
        .values()
        .map(|r| r.seqno_requests(SeqnoOutcome::Sent))
        .sum();
    assert_eq!(sent, 0);
}

/// Every pair rerouted within the detection plus a round trip across the ring (a request
/// travels to the destination and its fresh advertisement floods back), far below the
/// advertisement interval.
fn assert_rerouted_within_a_round_trip(
    config: &RouterConfig,
    net: &Net,
    cut_at: Duration,
    rerouted_at: &BTreeMap<(u8, u8), Duration>,
) {
    let round_trip = 2 * 6 * net.latency;
    let bound = config.neighbour_timeout + config.hello_interval + round_trip + 10 * MS;
    let slowest = rerouted_at.values().max().copied().unwrap();
    assert!(
        slowest - cut_at <= bound,
        "rerouted after {:?}, bound {bound:?}",
        slowest - cut_at
    );
}

#[test]
fn with_seqno_requests_every_route_of_the_ring_comes_back_without_waiting_for_the_next_round() {
    let config = mk_config();
    let (net, cut_at, rerouted_at) = ring_reroute_after_cut(&config);
    assert_rerouted_within_a_round_trip(&config, &net, cut_at, &rerouted_at);
    let total = |outcome| -> u64 { net.routers.values().map(|r| r.seqno_requests(outcome)).sum() };
    assert!(
        total(SeqnoOutcome::Sent) > 0,
        "a node left with an unfeasible offer asked"
    );
    assert!(
        total(SeqnoOutcome::Originated) > 0,
        "a request reached its destination, which advertised afresh"
    );
    assert_eq!(total(SeqnoOutcome::NotNeighbour), 0);
}

#[test]
fn with_a_thirty_second_advertisement_interval_the_ring_still_reroutes_without_waiting_for_it() {
    // Refresh rarely, update on change: seqno requests and same-seqno updates carry a failure,
    // not the periodic advertisement.
    let config = RouterConfig {
        originator_interval: Duration::from_secs(30),
        route_expiry: Duration::from_secs(120),
        ..mk_config()
    };
    let (net, cut_at, rerouted_at) = ring_reroute_after_cut(&config);
    assert_rerouted_within_a_round_trip(&config, &net, cut_at, &rerouted_at);
}

#[test]
fn a_ring_where_some_agents_predate_seqno_requests_still_reroutes_within_one_advertisement_interval() {
    // A rolling upgrade half done: 4 and 5, on the way from 3 to 1, skip request frames (and
    // send none). Requests that reach them go no further; the periodic advertisement does.
    let config = mk_config();
    let old = RouterConfig {
        seqno_requests: false,
        ..mk_config()
    };
    let (net, cut_at, rerouted_at) = ring_reroute_after_cut_with(&config, |i| {
        if [4, 5].contains(&i) {
            old.clone()
        } else {
            config.clone()
        }
    });
    let slow_bound =
        config.neighbour_timeout + config.originator_interval + 6 * net.latency + config.hello_interval;
    let slowest = rerouted_at.values().max().copied().unwrap();
    assert!(
        slowest - cut_at <= slow_bound,
        "rerouted after {:?}",
        slowest - cut_at
    );
    assert!(net.skipped_requests > 0, "an old agent was asked and skipped it");
}

#[test]
fn the_feasibility_condition_prevents_counting_to_infinity_in_a_triangle_whose_exit_breaks() {
    // 1 hangs off 2; 2, 3 and 4 form a triangle. When 1-2 breaks, plain distance vector has 3
    // and 4 each route to 1 through the other, counting up to infinity.
    let config = mk_config();
    let mut net = Net::new(4, &[(1, 2), (2, 3), (2, 4), (3, 4)], &config);
    net.run_until(SETTLED);
    assert_eq!(net.next_hop(3, 1), Some(2));
    assert_eq!(net.next_hop(4, 1), Some(2));
    net.cut(1, 2);

    let mut refused_a_loop = false;
    // Well within the route expiry: the feasibility condition, not a timer, must do this.
    net.run_checking(SETTLED + config.neighbour_timeout + 200 * MS, |net| {
        assert_no_loop(net, 4);
        for (at, via) in [(3, 4), (4, 3)] {
            let offers = net.routers[&mk_id(at)].candidates(&mk_id(1));
            refused_a_loop |= offers
                .iter()
                .any(|c| c.via == mk_id(via) && c.metric != INFINITY && !c.feasible);
        }
    });

    assert!(
        refused_a_loop,
        "3 or 4 was offered the path through the other and refused it"
    );
    for at in [2, 3, 4] {
        assert_eq!(
            net.next_hop(at, 1),
            None,
            "{at} still has a route to the cut-off node"
        );
    }
}

#[test]
fn a_restarted_node_rejoins_and_every_route_comes_back() {
    let config = mk_config();
    let mut net = Net::new(5, &mk_line(5), &config);
    net.run_until(SETTLED);
    net.kill(3);
    net.run_until(SETTLED + 500 * MS);
    assert_eq!(net.next_hop(1, 5), None);

    // A restarted agent numbers its advertisements above anything it sent before (for example
    // from the wall clock), or its neighbours would reject them as replays.
    let restarted_at = net.now;
    net.restart(3, 1_000_000, &config);
    net.run_until(restarted_at + config.neighbour_timeout);

    for from in 1..=5u8 {
        for to in (1..=5u8).filter(|&to| to != from) {
            let toward = if to > from { from + 1 } else { from - 1 };
            assert_eq!(net.next_hop(from, to), Some(toward), "{from} -> {to}");
        }
    }
}

/// A ring of ten with a 30 s advertisement interval: node 1 dies, routes go the long way,
/// node 1 comes back. Returns the path from 3 to 9 `wait` after the restart (the short way is
/// 3-2-1-10-9, through the restarted node, under 9's same sequence number: 9 is no neighbour
/// of 1, so it does not advertise afresh when 1 comes back).
fn ring_path_after_a_restart(update_gap: Duration, wait: Duration) -> Vec<u8> {
    let config = RouterConfig {
        originator_interval: Duration::from_secs(30),
        route_expiry: Duration::from_secs(120),
        update_gap,
        ..mk_config()
    };
    let mut net = Net::new(10, &mk_ring(10), &config);
    net.run_until(SETTLED);
    assert_eq!(net.path(3, 9), Ok(vec![3, 2, 1, 10, 9]));
    net.kill(1);
    net.run_until(SETTLED + 2 * config.neighbour_timeout);
    assert_eq!(net.path(3, 9), Ok(vec![3, 4, 5, 6, 7, 8, 9]));
    let restarted_at = net.now;
    net.restart(1, 1_000_000, &config);
    net.run_checking(restarted_at + wait, |net| assert_no_loop(net, 10));
    net.path(3, 9).unwrap()
}

#[test]
fn a_shorter_path_under_the_same_seqno_spreads_by_triggered_updates_not_the_next_advertisement() {
    let wait = Duration::from_secs(3);
    // Node 2 switches to the short way at once and tells 3 once its update gap has passed.
    assert_eq!(
        ring_path_after_a_restart(Duration::from_secs(1), wait),
        [3, 2, 1, 10, 9]
    );
    // Without same-seqno updates, 3 keeps the long way until 9's next advertisement.
    assert_eq!(
        ring_path_after_a_restart(Duration::from_secs(3600), wait),
        [3, 4, 5, 6, 7, 8, 9]
    );
}

#[test]
fn a_next_hop_is_replaced_only_by_a_clearly_cheaper_one() {
    let verifier = FakeVerifier::default();
    let mut router = mk_router_with(mk_config(), &verifier);
    with_live_neighbours(&mut router, &[2, 3], Duration::ZERO);
    router.on_originator(
        mk_id(2),
        mk_originator(mk_id(ORIGIN), 5, mk_envelope(3, 1000)),
        MS,
    );
    assert_eq!(router.next_hop(&mk_id(ORIGIN)), Some(mk_id(2)));
    // Slightly cheaper through 3 (newer seqno, so feasible): not worth a flip.
    router.on_originator(
        mk_id(3),
        mk_originator(mk_id(ORIGIN), 6, mk_envelope(3, 990)),
        2 * MS,
    );
    router.on_originator(
        mk_id(2),
        mk_originator(mk_id(ORIGIN), 6, mk_envelope(3, 1000)),
        2 * MS,
    );
    assert_eq!(
        router.next_hop(&mk_id(ORIGIN)),
        Some(mk_id(2)),
        "10 cheaper is within the margin"
    );
    // Clearly cheaper: switch.
    router.on_originator(
        mk_id(3),
        mk_originator(mk_id(ORIGIN), 7, mk_envelope(3, 700)),
        3 * MS,
    );
    assert_eq!(router.next_hop(&mk_id(ORIGIN)), Some(mk_id(3)));
}
