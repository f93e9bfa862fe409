//! Agents as processes on loopback addresses (no privileges needed): a line of three routes
//! across two hops and answers pings; a classical-only peer is refused under
//! requirePostQuantum, and a key endorsed by another authority gets no session; both are
//! counted.
mod common;

use std::time::Duration;

use common::loopback::loopback_sessions;
use common::status::{metric_sum, metric_sum_with};
use common::{
    alive_neighbours, counter, get, loopback_metrics, ping, routes, scratch, start_on_loopback, wait_for,
};

const DEADLINE: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(50);

#[test]
fn three_agents_in_a_line_route_and_ping_across_two_hops() {
    const TEST: u8 = 1;
    let scratch = scratch("line");
    let authority = scratch.authority("authority");
    let config = scratch.config("line", true);
    let names = ["a", "b", "c"];
    let nodes: Vec<_> = names
        .iter()
        .map(|name| scratch.node(&authority, "line", name))
        .collect();
    // a and c dial b, b dials both.
    let peers: [&[usize]; 3] = [&[1], &[0, 2], &[1]];
    let mut agents = start_on_loopback(&scratch, TEST, &nodes, &config, &peers, |_| Vec::new());

    wait_for("a and c to route to each other through b", DEADLINE, POLL, || {
        let a = agents[0].status().ok_or("a has no status yet")?;
        let c = agents[2].status().ok_or("c has no status yet")?;
        let a_to_c = routes(&a).contains(&("c".to_owned(), "b".to_owned(), 2));
        let c_to_a = routes(&c).contains(&("a".to_owned(), "b".to_owned(), 2));
        if a_to_c && c_to_a {
            Ok(())
        } else {
            Err(format!("a: {:?}, c: {:?}", routes(&a), routes(&c)))
        }
    });

    let answered = ping(agents[0].metrics, "c", 3);
    assert_eq!(answered.len(), 3, "every ping answered: {answered:?}");
    for result in &answered {
        assert_eq!(result["hops_there"], 2);
        assert_eq!(result["hops_back"], 2);
    }

    let b = agents[1].status().unwrap();
    assert_eq!(b["sessions"], 2, "one session per neighbour");
    assert_eq!(b["post_quantum_sessions"], 2);
    for neighbour in b["neighbours"].as_array().unwrap() {
        assert_eq!(neighbour["key_exchange"], "X25519MLKEM768");
    }
    assert_eq!(b["known_nodes"], 3, "every endorsement reached b");
    assert!(counter(&b, "x0_agent_originator_verifications_total", "") >= 2.0);

    // b's /metrics: its links named by the neighbours' node names, its handshakes timed,
    // convergence episodes, its key's expiry, the build and the process.
    let metrics_of_b = agents[1].metrics;
    let scrape_b = || {
        get(metrics_of_b, "/metrics")
            .filter(|(code, _)| *code == 200)
            .map(|(_, body)| body)
    };
    let body = wait_for(
        "b's link series for a and c, with RTTs, and a settled convergence episode",
        DEADLINE,
        POLL,
        || {
            let body = scrape_b().ok_or("no /metrics")?;
            let missing: Vec<String> = ["a", "c"]
                .iter()
                .flat_map(|peer| {
                    [
                        "x0_agent_link_cost",
                        "x0_agent_link_loss_percent",
                        "x0_agent_link_rtt_seconds",
                    ]
                    .map(|name| format!("{name}{{peer_node=\"{peer}\"}}"))
                })
                .filter(|series| !body.lines().any(|line| line.starts_with(series.as_str())))
                .collect();
            let episodes = metric_sum(&body, "x0_agent_convergence_duration_seconds_count");
            if missing.is_empty() && episodes >= 1.0 {
                Ok(body)
            } else {
                Err(format!("missing {missing:?}, {episodes} convergence episodes"))
            }
        },
    );
    assert!(
        metric_sum_with(
            &body,
            "x0_agent_session_handshake_duration_seconds_count",
            "outcome=\"established\""
        ) >= 2.0,
        "b's handshakes with a and c are timed"
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let key_expiry = metric_sum(&body, "x0_agent_key_expiry_timestamp_seconds");
    let endorsement_expiry = metric_sum(&body, "x0_agent_endorsement_expiry_timestamp_seconds");
    assert!(
        now < key_expiry && key_expiry <= endorsement_expiry,
        "key due at {key_expiry}, endorsement ends at {endorsement_expiry}, now {now}"
    );
    assert_eq!(
        metric_sum_with(
            &body,
            "x0_agent_build_info",
            &format!("version=\"{}\"", env!("CARGO_PKG_VERSION"))
        ),
        1.0
    );
    assert!(metric_sum(&body, "process_resident_memory_bytes") > 0.0);

    // A clean stop: SIGTERM ends the process with success, and b reroutes at once.
    assert!(
        agents[2].terminate(Duration::from_secs(5)),
        "c stops cleanly on SIGTERM"
    );
    wait_for("a to lose its route to c", DEADLINE, POLL, || {
        let a = agents[0].status().ok_or("no status")?;
        let b = agents[1].status().ok_or("no status")?;
        let gone = !routes(&a).iter().any(|(d, _, _)| d == "c") && alive_neighbours(&b) == ["a"];
        gone.then_some(()).ok_or_else(|| format!("a: {:?}", routes(&a)))
    });
    wait_for("c's link series to leave b's /metrics", DEADLINE, POLL, || {
        let body = scrape_b().ok_or("no /metrics")?;
        let stale: Vec<&str> = body
            .lines()
            .filter(|line| line.starts_with("x0_agent_link_") && line.contains("peer_node=\"c\""))
            .collect();
        let kept = body.contains("x0_agent_link_cost{peer_node=\"a\"}");
        (stale.is_empty() && kept)
            .then_some(())
            .ok_or_else(|| format!("stale: {stale:?}, a's kept: {kept}"))
    });
    for agent in &mut agents[..2] {
        assert!(
            agent.terminate(Duration::from_secs(5)),
            "{} stops cleanly",
            agent.name
        );
    }
}

#[test]
fn a_classical_peer_and_an_unendorsed_key_get_no_session_and_are_counted() {
    const TEST: u8 = 2;
    let scratch = scratch("refusals");
    let authority = scratch.authority("authority");
    let other_authority = scratch.authority("other-authority");
    let strict = scratch.config("refusals", true);
    let lenient = scratch.config("refusals", false);
    let pq = scratch.node(&authority, "refusals", "pq");
    let classical = scratch.node(&authority, "refusals", "classical");
    let stranger = scratch.node(&other_authority, "refusals", "stranger");
    let hybrid = scratch.node(&authority, "refusals", "hybrid");
    let endpoint = |i: usize| loopback_sessions(TEST, i).to_string();
    let start = |i: usize, node, config, peers: Vec<String>, extra: Vec<&'static str>| {
        scratch
            .agent(node, config)
            .listen(loopback_sessions(TEST, i))
            .metrics(loopback_metrics(TEST, i))
            .peers(peers)
            .args(extra)
            .start()
    };
    // The strict agent dials both offenders and both dial it.
    let pq_agent = start(0, &pq, &strict, vec![endpoint(1), endpoint(2)], vec![]);
    let classical_agent = start(
        1,
        &classical,
        &lenient,
        vec![endpoint(0), endpoint(3)],
        vec!["--test-key-exchange", "classical"],
    );
    let stranger_agent = start(2, &stranger, &strict, vec![endpoint(0)], vec![]);
    // An agent whose mesh does not require post-quantum accepts the classical one.
    let hybrid_agent = start(3, &hybrid, &lenient, vec![], vec![]);

    let refused = wait_for(
        "the strict agent to refuse both offenders",
        DEADLINE,
        POLL,
        || {
            let status = pq_agent.status().ok_or("no status")?;
            let classical = counter(
                &status,
                "x0_agent_session_refusals_total",
                "reason=classical_key_exchange",
            );
            let unendorsed = counter(
                &status,
                "x0_agent_session_refusals_total",
                "reason=unendorsed_key",
            );
            if classical >= 1.0 && unendorsed >= 1.0 {
                Ok(status)
            } else {
                Err(format!(
                    "refusals so far: {}",
                    status["counters"]["x0_agent_session_refusals_total"]
                ))
            }
        },
    );
    assert_eq!(refused["sessions"], 0, "no session with either offender");

    let hybrid_session = wait_for(
        "the lenient agent to accept the classical one",
        DEADLINE,
        POLL,
        || {
            let status = hybrid_agent.status().ok_or("no status")?;
            let neighbour = status["neighbours"]
                .as_array()
                .and_then(|n| n.first().cloned())
                .ok_or("no neighbour yet")?;
            Ok(neighbour)
        },
    );
    assert_eq!(hybrid_session["key_exchange"], "X25519");
    assert_eq!(hybrid_session["post_quantum"], false);

    let stranger_status = stranger_agent.status().unwrap();
    assert_eq!(stranger_status["sessions"], 0);
    let classical_status = classical_agent.status().unwrap();
    let strict_sessions = classical_status["neighbours"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["node_name"] == "pq")
        .count();
    assert_eq!(
        strict_sessions, 0,
        "the classical agent has no session with the strict one"
    );
    drop(stranger_agent);
    drop(classical_agent);
    drop(pq_agent);
}

/// An authenticated peer that sends garbage: every bad frame is dropped and counted by
/// reason, a broken framing closes its session, and the agent keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_from_an_authenticated_peer_is_counted_and_never_crashes_the_agent() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    use x0tta6bl4_session::binding::{self, Identity, Role};
    use x0tta6bl4_session::tls::{self, KeyExchangePolicy, TlsKey};

    const TEST: u8 = 3;
    let scratch = scratch("garbage");
    let authority = scratch.authority("authority");
    let config = scratch.config("garbage", true);
    let victim = scratch.node(&authority, "garbage", "victim");
    let rogue = scratch.node(&authority, "garbage", "rogue");
    let agent = scratch
        .agent(&victim, &config)
        .listen(loopback_sessions(TEST, 0))
        .metrics(loopback_metrics(TEST, 0))
        .start();
    let probe = agent.metrics;
    tokio::task::spawn_blocking(move || {
        wait_for("the victim to run", DEADLINE, POLL, || {
            common::status(probe)
                .map(|_| ())
                .ok_or_else(|| "no status".to_owned())
        })
    })
    .await
    .unwrap();

    // The rogue completes TLS and the binding like any endorsed agent.
    let identity = Identity {
        key: x0tta6bl4_crypto::keyfile::load(&rogue.state_dir.join("node.key"))
            .unwrap()
            .key,
        endorsement: x0tta6bl4_crypto::endorsement::Endorsement::decode(
            &std::fs::read(&rogue.endorsement).unwrap(),
        )
        .unwrap(),
    };
    let tcp = tokio::net::TcpStream::connect(agent.listen).await.unwrap();
    let connector = tokio_rustls::TlsConnector::from(
        tls::client_config(&TlsKey::generate().unwrap(), KeyExchangePolicy::PostQuantumOnly).unwrap(),
    );
    let mut stream = connector.connect(tls::server_name(), tcp).await.unwrap();
    let exporter = binding::exporter(stream.get_ref().1).unwrap();
    let ours = binding::binding_message(&identity, Role::Client, &exporter).unwrap();
    stream
        .write_all(&u32::try_from(ours.len()).unwrap().to_be_bytes())
        .await
        .unwrap();
    stream.write_all(&ours).await.unwrap();
    stream.flush().await.unwrap();
    let mut len = [0u8; 4];
    stream.read_exact(&mut len).await.unwrap();
    let mut theirs = vec![0u8; usize::try_from(u32::from_be_bytes(len)).unwrap()];
    stream.read_exact(&mut theirs).await.unwrap();

    // Then garbage: an unknown type, a truncated hello body, an oversized announcement, and
    // finally a header that is not ours.
    let garbage: [&[u8]; 4] = [
        b"X0\x01\x7f\x00\x00\x00\x02ab",
        b"X0\x01\x01\x00\x00\x00\x03abc",
        b"X0\x01\x06\x00\x00\x00\x02\xff\xff",
        b"Y0\x01\x01\x00\x00\x00\x00",
    ];
    for frame in garbage {
        stream.write_all(frame).await.unwrap();
    }
    stream.flush().await.unwrap();

    let status = tokio::task::spawn_blocking(move || {
        wait_for("the garbage to be counted", DEADLINE, POLL, || {
            let status = common::status(probe).ok_or("no status")?;
            let dropped = |reason: &str| {
                counter(
                    &status,
                    "x0_agent_frames_dropped_total",
                    &format!("reason={reason}"),
                )
            };
            let all = ["unknown_type", "malformed", "oversized", "bad_magic"]
                .iter()
                .all(|reason| dropped(reason) >= 1.0);
            if all && status["sessions"] == 0 {
                Ok(status)
            } else {
                Err(format!("{}", status["counters"]["x0_agent_frames_dropped_total"]))
            }
        })
    })
    .await
    .unwrap();
    assert_eq!(
        counter(
            &status,
            "x0_agent_sessions_established_total",
            "direction=inbound,key_exchange=X25519MLKEM768"
        ),
        1.0,
        "the rogue was authenticated, then cut off for breaking the framing"
    );
    assert_eq!(common::get(probe, "/healthz").map(|(code, _)| code), Some(200));
    drop(agent);
}
