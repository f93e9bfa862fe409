//! Neighbour sessions over TCP: TLS 1.3 with the mesh's key-exchange policy, then the ML-DSA
//! binding exchange (each side's endorsement and its signature over the TLS exporter, one
//! length-prefixed message each way), then wire frames both ways until either side closes.
//!
//! A session that fails any step is refused and counted by reason; bytes from the network
//! never panic the agent (every decode error is counted and the frame dropped, a broken
//! framing closes the session).
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use rustls::{NamedGroup, PeerIncompatible};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _, ReadHalf, WriteHalf};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tokio_rustls::{TlsAcceptor, TlsConnector, TlsStream};
use tracing::Instrument as _;
use x0tta6bl4_crypto::endorsement::TrustStore;
use x0tta6bl4_session::binding::{self, MAX_BINDING_LEN, Role};
use x0tta6bl4_session::svid::{self, SvidFacts, SvidRefusal};
use x0tta6bl4_session::tls::{self, KeyExchangePolicy};
use x0tta6bl4_wire::{FrameReader, Message, NodeId};

use crate::identity::CurrentIdentity;
use crate::mesh::{Admission, Direction, Input, SessionUp};
use crate::metrics::{Metrics, message_label};

mod svid_lifetime;

pub use svid_lifetime::SvidMode;
use svid_lifetime::{PeerSvid, SvidWatch};

/// Frames a session's writer queue holds; beyond it frames are dropped and counted, so a slow
/// peer never blocks the router. A new session is sent every known endorsement and every
/// route at once (two frames per node), so this bounds the mesh size a session start serves
/// without drops to about 4000 nodes; the queue allocates only what it holds.
pub const WRITER_QUEUE: usize = 8192;
/// Most bytes written in one go.
const WRITE_BATCH: usize = 64 * 1024;
/// Bytes read at once.
const READ_CHUNK: usize = 32 * 1024;

/// Everything sessions share.
pub struct SessionContext {
    pub self_id: NodeId,
    /// Every peer's SPIFFE ID must start with it (same mesh).
    pub mesh_prefix: String,
    pub identity: CurrentIdentity,
    pub trust: Arc<RwLock<TrustStore>>,
    pub policy: KeyExchangePolicy,
    pub connector: TlsConnector,
    pub acceptor: TlsAcceptor,
    /// What a kemDowngrade target offers instead: classical key exchange only.
    classical: (TlsConnector, TlsAcceptor),
    /// A chaos experiment's kemDowngrade is on (set by the executor; never in production).
    pub kem_downgrade: watch::Receiver<bool>,
    pub metrics: Arc<Metrics>,
    pub mesh: mpsc::Sender<Input>,
    pub handshake_timeout: Duration,
    /// Meshes that take identities from SPIFFE: this agent's SVID and the trust bundles.
    pub svid: Option<SvidMode>,
    next_id: AtomicU64,
}

impl SessionContext {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        self_id: NodeId,
        mesh_prefix: String,
        identity: CurrentIdentity,
        trust: Arc<RwLock<TrustStore>>,
        policy: KeyExchangePolicy,
        tls_key: &tls::TlsKey,
        svid: Option<SvidMode>,
        metrics: Arc<Metrics>,
        mesh: mpsc::Sender<Input>,
    ) -> Result<Self, x0tta6bl4_session::Error> {
        let ends = |policy| -> Result<(TlsConnector, TlsAcceptor), x0tta6bl4_session::Error> {
            Ok(match &svid {
                Some(mode) => (
                    TlsConnector::from(tls::svid_client_config(&mode.credentials, policy)?),
                    TlsAcceptor::from(tls::svid_server_config(&mode.credentials, policy)?),
                ),
                None => (
                    TlsConnector::from(tls::client_config(tls_key, policy)?),
                    TlsAcceptor::from(tls::server_config(tls_key, policy)?),
                ),
            })
        };
        let (connector, acceptor) = ends(policy)?;
        let classical = ends(KeyExchangePolicy::ClassicalOnly)?;
        Ok(SessionContext {
            self_id,
            mesh_prefix,
            identity,
            trust,
            policy,
            connector,
            acceptor,
            classical,
            // Never switched on unless the runtime hands over the executor's line.
            kem_downgrade: watch::channel(false).1,
            metrics,
            mesh,
            handshake_timeout: Duration::from_secs(5),
            svid,
            next_id: AtomicU64::new(1),
        })
    }

    /// The TLS ends and key-exchange policy of a handshake starting now: the mesh's, or the
    /// classical-only ones while a kemDowngrade experiment is on.
    fn tls_ends(&self) -> (&TlsConnector, &TlsAcceptor, KeyExchangePolicy) {
        if *self.kem_downgrade.borrow() {
            (
                &self.classical.0,
                &self.classical.1,
                KeyExchangePolicy::ClassicalOnly,
            )
        } else {
            (&self.connector, &self.acceptor, self.policy)
        }
    }

    /// Whether this agent may open or accept sessions: always without SPIFFE, with it only
    /// while it holds an unexpired SVID.
    pub fn can_authenticate(&self) -> bool {
        self.svid.as_ref().is_none_or(SvidMode::holds_usable_svid)
    }
}

/// Why a session was refused (each is a `reason` label of `x0_agent_session_refusals_total`).
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    #[error("TLS handshake failed: {0}")]
    Handshake(String),
    #[error("key exchange {0} is classical and the mesh requires post-quantum")]
    ClassicalKeyExchange(String),
    #[error("binding refused ({reason}): {detail}")]
    Binding { reason: &'static str, detail: String },
    #[error("peer {0} is outside this mesh")]
    ForeignMesh(String),
    #[error("the peer is this agent")]
    SelfConnection,
    #[error("handshake timed out")]
    Timeout,
    #[error("SVID refused: {0}")]
    Svid(SvidRefusal),
    #[error("this agent holds no valid X.509-SVID")]
    NoOwnSvid,
}

impl Refusal {
    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::Handshake(_) => "handshake",
            Refusal::ClassicalKeyExchange(_) => "classical_key_exchange",
            Refusal::Binding { reason, .. } => reason,
            Refusal::ForeignMesh(_) => "foreign_mesh",
            Refusal::SelfConnection => "self",
            Refusal::Timeout => "timeout",
            Refusal::Svid(refusal) => refusal.reason(),
            Refusal::NoOwnSvid => "no_own_svid",
        }
    }
}

/// A session that passed TLS and the binding.
pub struct Established {
    stream: TlsStream<TcpStream>,
    pub peer: NodeId,
    pub spiffe_id: String,
    /// The epoch of the node key the peer bound the session with (a revocation of it closes
    /// the session).
    pub key_epoch: u32,
    pub key_exchange: String,
    pub post_quantum: bool,
    pub remote: Option<SocketAddr>,
    pub direction: Direction,
    /// The peer's SVID (meshes that take identities from SPIFFE): the session ends at its expiry
    /// unless the peer sends a rotated one.
    pub peer_svid: Option<SvidFacts>,
}

/// How a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionEnd {
    /// Another session with the same peer is kept instead.
    Duplicate(NodeId),
    /// It ran and ended.
    Closed { peer: NodeId, lasted: Duration },
    /// The agent is shutting down.
    MeshGone,
}

fn group_name(group: Option<NamedGroup>) -> String {
    group.map_or_else(|| "none".to_owned(), |group| format!("{group:?}"))
}

/// Under `requirePostQuantum` a peer that offers only classical groups fails the handshake
/// with "no key-exchange group in common": that is a classical peer, counted as such.
fn handshake_refusal(error: std::io::Error, policy: KeyExchangePolicy) -> Refusal {
    let tls_error = error
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>());
    if let Some(refusal) = tls_error.and_then(svid::refusal_in) {
        return Refusal::Svid(refusal.clone());
    }
    if matches!(tls_error, Some(rustls::Error::NoCertificatesPresented)) {
        return Refusal::Svid(SvidRefusal::NoSvid);
    }
    if policy == KeyExchangePolicy::PostQuantumOnly
        && matches!(
            tls_error,
            Some(rustls::Error::PeerIncompatible(
                PeerIncompatible::NoKxGroupsInCommon
            ))
        )
    {
        return Refusal::ClassicalKeyExchange("offered by the peer".to_owned());
    }
    Refusal::Handshake(error.to_string())
}

fn binding_refusal(error: &x0tta6bl4_session::Error) -> &'static str {
    match error {
        x0tta6bl4_session::Error::Authentication("key not endorsed by the mesh authority") => {
            "unendorsed_key"
        }
        x0tta6bl4_session::Error::Authentication("key expired") => "expired_key",
        x0tta6bl4_session::Error::Authentication("key revoked by the mesh authority") => "revoked_key",
        x0tta6bl4_session::Error::Authentication("malformed binding message") => "malformed_binding",
        x0tta6bl4_session::Error::Authentication(_) => "bad_binding_signature",
        _ => "binding",
    }
}

/// Sends our binding message and reads the peer's, each as `length u32 | message`.
async fn exchange_binding<S>(stream: &mut S, ours: &[u8]) -> std::io::Result<Vec<u8>>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let len = u32::try_from(ours.len()).map_err(|_| std::io::Error::other("binding message too long"))?;
    let mut framed = Vec::with_capacity(4 + ours.len());
    framed.extend_from_slice(&len.to_be_bytes());
    framed.extend_from_slice(ours);
    stream.write_all(&framed).await?;
    stream.flush().await?;
    let mut len = [0u8; 4];
    stream.read_exact(&mut len).await?;
    let len = usize::try_from(u32::from_be_bytes(len)).unwrap_or(usize::MAX);
    if len > MAX_BINDING_LEN {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("binding message of {len} bytes exceeds {MAX_BINDING_LEN}"),
        ));
    }
    let mut theirs = vec![0u8; len];
    stream.read_exact(&mut theirs).await?;
    Ok(theirs)
}

/// TLS, key-exchange policy, binding: the peer is proven, or the session refused.
pub async fn handshake(
    ctx: &SessionContext,
    tcp: TcpStream,
    direction: Direction,
    expected: Option<NodeId>,
) -> Result<Established, Refusal> {
    let remote = tcp.peer_addr().ok();
    let _ = tcp.set_nodelay(true);
    let started = Instant::now();
    // A trace of its own per handshake: TLS with the hybrid key exchange, then the binding.
    let span = tracing::info_span!(
        "session.handshake",
        direction = direction.label(),
        remote = remote.map(|r| r.to_string()).unwrap_or_default(),
        outcome = tracing::field::Empty,
        peer = tracing::field::Empty,
        key_exchange = tracing::field::Empty,
        refusal = tracing::field::Empty,
    );
    let result = tokio::time::timeout(
        ctx.handshake_timeout,
        handshake_steps(ctx, tcp, direction, remote, expected),
    )
    .instrument(span.clone())
    .await
    .unwrap_or(Err(Refusal::Timeout));
    let outcome = handshake_outcome(&result);
    span.record("outcome", outcome);
    match &result {
        Ok(established) => {
            span.record("peer", established.spiffe_id.as_str());
            span.record("key_exchange", established.key_exchange.as_str());
        }
        Err(refusal) => {
            span.record("refusal", refusal.to_string());
        }
    }
    ctx.metrics
        .handshake(direction.label(), outcome, started.elapsed().as_secs_f64());
    result
}

/// The `outcome` label of `x0_agent_session_handshake_duration_seconds` (the refusal's reason
/// is in `x0_agent_session_refusals_total`).
fn handshake_outcome<T>(result: &Result<T, Refusal>) -> &'static str {
    match result {
        Ok(_) => "established",
        Err(Refusal::Timeout) => "timeout",
        Err(_) => "refused",
    }
}

async fn handshake_steps(
    ctx: &SessionContext,
    tcp: TcpStream,
    direction: Direction,
    remote: Option<SocketAddr>,
    expected: Option<NodeId>,
) -> Result<Established, Refusal> {
    if !ctx.can_authenticate() {
        return Err(Refusal::NoOwnSvid);
    }
    let exporter_failed = |e: x0tta6bl4_session::Error| Refusal::Handshake(e.to_string());
    let (connector, acceptor, policy) = ctx.tls_ends();
    let (mut stream, group, exporter, peer_svid) = match direction {
        Direction::Outbound => {
            let tls = connector
                .connect(tls::server_name(), tcp)
                .await
                .map_err(|e| handshake_refusal(e, policy))?;
            let connection = tls.get_ref().1;
            let group = connection.negotiated_key_exchange_group().map(|g| g.name());
            let exporter = binding::exporter(connection).map_err(exporter_failed)?;
            let svid = ctx.svid.as_ref().map(|_| tls::peer_svid(connection)).transpose();
            (
                TlsStream::Client(tls),
                group,
                exporter,
                svid.map_err(Refusal::Svid)?,
            )
        }
        Direction::Inbound => {
            let tls = acceptor
                .accept(tcp)
                .await
                .map_err(|e| handshake_refusal(e, policy))?;
            let connection = tls.get_ref().1;
            let group = connection.negotiated_key_exchange_group().map(|g| g.name());
            let exporter = binding::exporter(connection).map_err(exporter_failed)?;
            let svid = ctx.svid.as_ref().map(|_| tls::peer_svid(connection)).transpose();
            (
                TlsStream::Server(tls),
                group,
                exporter,
                svid.map_err(Refusal::Svid)?,
            )
        }
    };
    let post_quantum = tls::check_key_exchange(group, policy)
        .map_err(|_| Refusal::ClassicalKeyExchange(group_name(group)))?;
    let role = match direction {
        Direction::Outbound => Role::Client,
        Direction::Inbound => Role::Server,
    };
    let ours =
        binding::binding_message(&ctx.identity.get(), role, &exporter).map_err(|e| Refusal::Binding {
            reason: "binding",
            detail: e.to_string(),
        })?;
    let theirs = exchange_binding(&mut stream, &ours)
        .await
        .map_err(|e| Refusal::Binding {
            reason: "binding_io",
            detail: e.to_string(),
        })?;
    let peer = {
        let mut trust = ctx.trust.write().unwrap_or_else(PoisonError::into_inner);
        binding::verify_binding(
            &theirs,
            role.peer(),
            &exporter,
            &mut trust,
            crate::clock::unix_seconds(),
        )
    }
    .map_err(|e| Refusal::Binding {
        reason: binding_refusal(&e),
        detail: e.to_string(),
    })?;
    let node = peer.node;
    if node == ctx.self_id {
        return Err(Refusal::SelfConnection);
    }
    if !peer.spiffe_id.starts_with(&ctx.mesh_prefix) {
        return Err(Refusal::ForeignMesh(peer.spiffe_id));
    }
    if let Some(svid) = &peer_svid {
        svid::check_agreement(svid, &peer.spiffe_id, expected).map_err(Refusal::Svid)?;
    }
    Ok(Established {
        stream,
        peer: node,
        spiffe_id: peer.spiffe_id,
        key_epoch: peer.key_epoch,
        key_exchange: group_name(group),
        post_quantum,
        remote,
        direction,
        peer_svid,
    })
}

/// Registers an established session with the mesh and carries frames until it ends: the
/// mesh closes it (a duplicate, a dead neighbour, shutdown) or the peer does.
pub async fn run(ctx: Arc<SessionContext>, established: Established) -> SessionEnd {
    let id = ctx.next_id.fetch_add(1, Ordering::Relaxed);
    let peer = established.peer;
    let peer_svid = established
        .peer_svid
        .map(|facts| PeerSvid::new(facts, established.spiffe_id.clone()));
    let (writer, queue) = mpsc::channel(WRITER_QUEUE);
    let svid_writer = writer.clone();
    let (kill, killed) = oneshot::channel();
    let (reply, admission) = oneshot::channel();
    let up = SessionUp {
        id,
        peer,
        spiffe_id: established.spiffe_id,
        key_epoch: established.key_epoch,
        key_exchange: established.key_exchange,
        post_quantum: established.post_quantum,
        direction: established.direction,
        remote: established.remote,
        writer,
        kill,
        reply,
    };
    if ctx.mesh.send(Input::SessionUp(Box::new(up))).await.is_err() {
        return SessionEnd::MeshGone;
    }
    match admission.await {
        Ok(Admission::Accepted) => {}
        Ok(Admission::Duplicate) => return SessionEnd::Duplicate(peer),
        Ok(Admission::Revoked) => {
            return SessionEnd::Closed {
                peer,
                lasted: Duration::ZERO,
            };
        }
        Err(_) => return SessionEnd::MeshGone,
    }
    let started = Instant::now();
    let (read_half, write_half) = tokio::io::split(established.stream);
    let writer_task = tokio::spawn(write_frames(write_half, queue));
    let svid_watch = SvidWatch::new(ctx.svid.as_ref(), peer_svid.as_ref(), &ctx.metrics, svid_writer);
    let closed_because = tokio::select! {
        _ = killed => "closed_by_agent",
        reason = read_frames(&ctx, read_half, id, peer, peer_svid.as_ref()) => reason,
        reason = svid_watch.run() => reason,
    };
    writer_task.abort();
    tracing::debug!(peer = %peer, session = id, reason = closed_because, "session ended");
    if ctx.mesh.send(Input::SessionDown { id, peer }).await.is_err() {
        return SessionEnd::MeshGone;
    }
    SessionEnd::Closed {
        peer,
        lasted: started.elapsed(),
    }
}

/// Decodes frames and hands them to the mesh; returns why the stream ended.
async fn read_frames(
    ctx: &SessionContext,
    mut stream: ReadHalf<TlsStream<TcpStream>>,
    id: u64,
    peer: NodeId,
    peer_svid: Option<&PeerSvid>,
) -> &'static str {
    let mut reader = FrameReader::new();
    let mut chunk = vec![0u8; READ_CHUNK];
    loop {
        let len = match stream.read(&mut chunk).await {
            Ok(0) => return "eof",
            Ok(len) => len,
            Err(_) => return "read_error",
        };
        for item in reader.feed(chunk.get(..len).unwrap_or_default()) {
            match item {
                Ok(Message::SvidUpdate(update)) => {
                    ctx.metrics.frames_decoded.with_label_values(&["svid"]).inc();
                    svid_lifetime::on_peer_update(ctx, peer_svid, &update);
                }
                Ok(message) => {
                    ctx.metrics
                        .frames_decoded
                        .with_label_values(&[message_label(&message)])
                        .inc();
                    if ctx.mesh.send(Input::Frame { id, peer, message }).await.is_err() {
                        return "shutdown";
                    }
                }
                Err(error) => ctx.metrics.dropped(error.reason()),
            }
        }
        if reader.failure().is_some() {
            // Not framed by us any more: nothing after this can be trusted to align.
            return "broken_framing";
        }
    }
}

/// Writes queued frames, several per write when they pile up.
async fn write_frames(mut stream: WriteHalf<TlsStream<TcpStream>>, mut queue: mpsc::Receiver<Vec<u8>>) {
    let mut batch = Vec::with_capacity(WRITE_BATCH);
    while let Some(frame) = queue.recv().await {
        batch.clear();
        batch.extend_from_slice(&frame);
        while batch.len() < WRITE_BATCH {
            match queue.try_recv() {
                Ok(frame) => batch.extend_from_slice(&frame),
                Err(_) => break,
            }
        }
        if stream.write_all(&batch).await.is_err() || stream.flush().await.is_err() {
            break;
        }
    }
    let _ = stream.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handshakes_are_timed_by_direction_and_outcome() {
        let metrics = Metrics::new();
        let refused: Result<(), Refusal> = Err(Refusal::ForeignMesh("spiffe://other".into()));
        let outcomes = [
            handshake_outcome(&Ok::<(), Refusal>(())),
            handshake_outcome(&refused),
            handshake_outcome(&Err::<(), Refusal>(Refusal::Timeout)),
        ];
        assert_eq!(outcomes, ["established", "refused", "timeout"]);
        metrics.handshake(Direction::Inbound.label(), outcomes[0], 0.003);
        metrics.handshake(Direction::Inbound.label(), outcomes[0], 0.2);
        let established = metrics
            .handshake_seconds
            .with_label_values(&["inbound", "established"]);
        assert_eq!(established.get_sample_count(), 2);
        assert!((established.get_sample_sum() - 0.203).abs() < 1e-9);
        assert_eq!(
            metrics
                .handshake_seconds
                .with_label_values(&["outbound", "established"])
                .get_sample_count(),
            0
        );
    }

    #[test]
    fn binding_failures_are_labelled_by_cause() {
        use x0tta6bl4_session::Error;
        assert_eq!(
            binding_refusal(&Error::Authentication("key not endorsed by the mesh authority")),
            "unendorsed_key"
        );
        assert_eq!(
            binding_refusal(&Error::Authentication("key revoked by the mesh authority")),
            "revoked_key"
        );
        assert_eq!(
            binding_refusal(&Error::Authentication(
                "binding signature does not verify for this session"
            )),
            "bad_binding_signature"
        );
        assert_eq!(
            binding_refusal(&Error::ClassicalKeyExchange("X25519".into())),
            "binding"
        );
    }

    #[test]
    fn no_common_group_under_require_post_quantum_is_a_classical_peer() {
        let error = || {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                rustls::Error::PeerIncompatible(PeerIncompatible::NoKxGroupsInCommon),
            )
        };
        assert_eq!(
            handshake_refusal(error(), KeyExchangePolicy::PostQuantumOnly).reason(),
            "classical_key_exchange"
        );
        assert_eq!(
            handshake_refusal(error(), KeyExchangePolicy::PreferPostQuantum).reason(),
            "handshake"
        );
    }

    #[tokio::test]
    async fn the_binding_exchange_refuses_an_oversized_length_before_reading_it() {
        let (mut ours, mut theirs) = tokio::io::duplex(1024);
        let peer = tokio::spawn(async move {
            let mut len = [0u8; 4];
            theirs.read_exact(&mut len).await.unwrap();
            let mut message = vec![0u8; usize::try_from(u32::from_be_bytes(len)).unwrap()];
            theirs.read_exact(&mut message).await.unwrap();
            theirs.write_all(&u32::MAX.to_be_bytes()).await.unwrap();
            message
        });
        let error = exchange_binding(&mut ours, b"hello").await.unwrap_err();
        assert_eq!(error.kind(), std::io::ErrorKind::InvalidData);
        assert_eq!(peer.await.unwrap(), b"hello");
    }
}
