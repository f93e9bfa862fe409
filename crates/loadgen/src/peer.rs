//! One neighbour session to the agent, opened as an endorsed synthetic node would: TLS 1.3 with
//! X25519MLKEM768 only, then the ML-DSA-65 binding of the TLS exporter both ways (the agent's
//! binding is verified too), then frames. Three tasks per session: a reader that decodes
//! everything the agent sends (it must be drained, and its hellos are echoed), a hello ticker
//! (every 100 ms, with the echo fields the agent measures RTT from), and a writer that puts
//! hellos ahead of the queued bulk traffic (endorsements, advertisements), so that frames
//! queued in the harness never delay liveness: a hello that reaches the agent late was held up
//! by the agent itself.
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::{Context as _, bail};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _, ReadHalf, WriteHalf};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_util::sync::CancellationToken;
use x0tta6bl4_crypto::endorsement::TrustStore;
use x0tta6bl4_session::binding::{self, Identity, MAX_BINDING_LEN, Role};
use x0tta6bl4_session::tls;
use x0tta6bl4_wire::{FrameReader, Hello, Message, NodeId};

/// Hello interval of the mesh (the config's `helloInterval`).
pub const HELLO_INTERVAL: Duration = Duration::from_millis(100);
/// Frames waiting for the writer. A round is about 1000 advertisements per session; the pacer
/// waits when the queue is full, so a slow agent shows up as rounds that take longer.
const BULK_QUEUE: usize = 2048;
/// Bytes written per write call at most (the agent's writer batches the same way).
const WRITE_BATCH: usize = 64 * 1024;
const READ_CHUNK: usize = 32 * 1024;

/// What one session saw, for the report.
#[derive(Default)]
pub struct SessionStats {
    pub hellos_in: AtomicU64,
    pub originators_in: AtomicU64,
    pub endorsements_in: AtomicU64,
    pub other_in: AtomicU64,
    pub decode_errors: AtomicU64,
    pub bytes_in: AtomicU64,
    pub hellos_out: AtomicU64,
    pub hellos_not_queued: AtomicU64,
    pub closed: AtomicBool,
    pub error: Mutex<Option<String>>,
}

impl SessionStats {
    fn fail(&self, why: String) {
        self.closed.store(true, Ordering::Relaxed);
        let mut error = self.error.lock().unwrap_or_else(PoisonError::into_inner);
        error.get_or_insert(why);
    }

    pub fn error(&self) -> Option<String> {
        self.error.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }
}

/// TLS and binding with the agent at `address` as `identity`; checks that the other end is the
/// agent (`expected`), endorsed by the mesh authority in `trust`.
pub async fn connect(
    address: SocketAddr,
    connector: &TlsConnector,
    identity: &Identity,
    trust: &mut TrustStore,
    expected: NodeId,
    now_unix: u64,
) -> anyhow::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(address)
        .await
        .with_context(|| format!("connecting to {address}"))?;
    tcp.set_nodelay(true)?;
    let mut stream = connector
        .connect(tls::server_name(), tcp)
        .await
        .context("TLS handshake")?;
    let connection = stream.get_ref().1;
    let group = connection.negotiated_key_exchange_group().map(|g| g.name());
    tls::check_key_exchange(group, tls::KeyExchangePolicy::PostQuantumOnly)?;
    let exporter = binding::exporter(connection)?;
    let ours = binding::binding_message(identity, Role::Client, &exporter)?;
    stream
        .write_all(&u32::try_from(ours.len())?.to_be_bytes())
        .await?;
    stream.write_all(&ours).await?;
    stream.flush().await?;
    let mut len = [0u8; 4];
    stream
        .read_exact(&mut len)
        .await
        .context("reading the agent's binding")?;
    let len = usize::try_from(u32::from_be_bytes(len))?;
    if len > MAX_BINDING_LEN {
        bail!("the agent's binding message has {len} bytes");
    }
    let mut theirs = vec![0u8; len];
    stream.read_exact(&mut theirs).await?;
    let peer = binding::verify_binding(&theirs, Role::Server, &exporter, trust, now_unix)
        .context("the agent's binding")?;
    if peer.node != expected {
        bail!("the session reached {} instead of the agent", peer.spiffe_id);
    }
    Ok(stream)
}

/// A running session: queue frames on `bulk`; everything stops when `cancel` fires.
pub struct Session {
    pub bulk: mpsc::Sender<Vec<u8>>,
    pub stats: Arc<SessionStats>,
}

impl Session {
    /// Starts the session's tasks in `tasks`. `advertised_costs` is what its hellos claim
    /// about its links (the synthetic node's neighbours, the agent among them).
    pub fn start(
        stream: TlsStream<TcpStream>,
        advertised_costs: Vec<(NodeId, u32)>,
        cancel: &CancellationToken,
        tasks: &mut JoinSet<()>,
    ) -> Session {
        let stats = Arc::new(SessionStats::default());
        let (read_half, write_half) = tokio::io::split(stream);
        let (bulk, bulk_rx) = mpsc::channel(BULK_QUEUE);
        // A hello that cannot be queued is dropped (counted): the next one follows 100 ms later.
        let (hellos, hellos_rx) = mpsc::channel(4);
        // The agent's last hello (seq, when received), for the echo fields.
        let last_hello = Arc::new(Mutex::new(None::<(u32, Instant)>));
        tasks.spawn(read_loop(
            read_half,
            Arc::clone(&stats),
            Arc::clone(&last_hello),
            cancel.clone(),
        ));
        tasks.spawn(hello_loop(
            hellos,
            advertised_costs,
            last_hello,
            Arc::clone(&stats),
            cancel.clone(),
        ));
        tasks.spawn(write_loop(
            write_half,
            hellos_rx,
            bulk_rx,
            Arc::clone(&stats),
            cancel.clone(),
        ));
        Session { bulk, stats }
    }
}

async fn read_loop(
    mut stream: ReadHalf<TlsStream<TcpStream>>,
    stats: Arc<SessionStats>,
    last_hello: Arc<Mutex<Option<(u32, Instant)>>>,
    cancel: CancellationToken,
) {
    let mut reader = FrameReader::new();
    let mut chunk = vec![0u8; READ_CHUNK];
    loop {
        let read = tokio::select! {
            () = cancel.cancelled() => return,
            read = stream.read(&mut chunk) => read,
        };
        let n = match read {
            Ok(0) => return stats.fail("the agent closed the session".to_owned()),
            Ok(n) => n,
            Err(error) => return stats.fail(format!("read: {error}")),
        };
        stats.bytes_in.fetch_add(n as u64, Ordering::Relaxed);
        for frame in reader.feed(&chunk[..n]) {
            let counter = match frame {
                Ok(Message::Hello(hello)) => {
                    *last_hello.lock().unwrap_or_else(PoisonError::into_inner) =
                        Some((hello.seq, Instant::now()));
                    &stats.hellos_in
                }
                Ok(Message::Originator(_)) => &stats.originators_in,
                Ok(Message::EndorsementAnnounce(_)) => &stats.endorsements_in,
                Ok(Message::Data(_) | Message::SvidUpdate(_) | Message::SeqnoRequest(_)) => &stats.other_in,
                Err(_) => &stats.decode_errors,
            };
            counter.fetch_add(1, Ordering::Relaxed);
        }
        if let Some(error) = reader.failure() {
            return stats.fail(format!("the agent's stream broke its framing: {error}"));
        }
    }
}

async fn hello_loop(
    hellos: mpsc::Sender<Vec<u8>>,
    advertised_costs: Vec<(NodeId, u32)>,
    last_hello: Arc<Mutex<Option<(u32, Instant)>>>,
    stats: Arc<SessionStats>,
    cancel: CancellationToken,
) {
    let epoch = Instant::now();
    let mut ticker = tokio::time::interval(HELLO_INTERVAL);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    for seq in 1u32.. {
        tokio::select! {
            () = cancel.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let now = Instant::now();
        let echo = *last_hello.lock().unwrap_or_else(PoisonError::into_inner);
        let (echo_seq, echo_delay_micros) = echo.map_or((0, 0), |(seq, at)| {
            let held = u32::try_from(now.duration_since(at).as_micros()).unwrap_or(u32::MAX);
            (seq, held)
        });
        let hello = Hello {
            seq,
            sent_at_micros: u64::try_from(now.duration_since(epoch).as_micros()).unwrap_or(u64::MAX),
            echo_seq,
            echo_delay_micros,
            advertised_costs: advertised_costs.clone(),
        };
        let Ok(frame) = Message::Hello(hello).to_frame() else {
            return stats.fail("a hello did not encode".to_owned());
        };
        match hellos.try_send(frame) {
            Ok(()) => stats.hellos_out.fetch_add(1, Ordering::Relaxed),
            Err(mpsc::error::TrySendError::Full(_)) => {
                stats.hellos_not_queued.fetch_add(1, Ordering::Relaxed)
            }
            Err(mpsc::error::TrySendError::Closed(_)) => return,
        };
    }
}

async fn write_loop(
    mut stream: WriteHalf<TlsStream<TcpStream>>,
    mut hellos: mpsc::Receiver<Vec<u8>>,
    mut bulk: mpsc::Receiver<Vec<u8>>,
    stats: Arc<SessionStats>,
    cancel: CancellationToken,
) {
    let mut batch = Vec::with_capacity(WRITE_BATCH + 8 * 1024);
    loop {
        batch.clear();
        tokio::select! {
            biased;
            () = cancel.cancelled() => return,
            Some(frame) = hellos.recv() => batch.extend_from_slice(&frame),
            Some(frame) = bulk.recv() => batch.extend_from_slice(&frame),
            else => return,
        }
        // Whatever else is ready goes in the same write, hellos first.
        while batch.len() < WRITE_BATCH {
            if let Ok(frame) = hellos.try_recv() {
                batch.extend_from_slice(&frame);
            } else if let Ok(frame) = bulk.try_recv() {
                batch.extend_from_slice(&frame);
            } else {
                break;
            }
        }
        let written = tokio::select! {
            () = cancel.cancelled() => return,
            written = async {
                stream.write_all(&batch).await?;
                stream.flush().await
            } => written,
        };
        if let Err(error) = written {
            return stats.fail(format!("write: {error}"));
        }
    }
}
