//! Opening sessions: one dialling loop per peer endpoint (with backoff), and the listener that
//! accepts the sessions others open.
//!
//! Two agents that both dial each other end up with one session: the mesh keeps the session
//! dialled by the lower NodeId. A dialler whose session was the one dropped, or that learnt
//! which node lives at its address, does not dial again while a session with that node is up.
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio_util::sync::CancellationToken;
use x0tta6bl4_wire::NodeId;

use crate::mesh::Direction;
use crate::peers::PeerEndpoint;
use crate::session::{self, Refusal, SessionContext, SessionEnd};

/// Handshakes in progress at once on the listener; more connections are closed at once.
const MAX_PENDING_HANDSHAKES: usize = 64;
/// A session that lasted this long resets the backoff.
const STABLE_SESSION: Duration = Duration::from_secs(10);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Exponential backoff with jitter: 100 ms, 200 ms, ... up to 2 s (a dead neighbour that comes
/// back is redialled within about 2 s; it dials us at once anyway).
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    current: Duration,
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration) -> Self {
        Backoff {
            initial,
            max,
            current: initial,
        }
    }

    /// The next delay (±20 % jitter, so agents restarted together do not dial in lockstep).
    pub fn next_delay(&mut self) -> Duration {
        let delay = self.current;
        self.current = (self.current * 2).min(self.max);
        delay.mul_f64(0.8 + 0.4 * rand::random::<f64>())
    }

    pub fn reset(&mut self) {
        self.current = self.initial;
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff::new(Duration::from_millis(100), Duration::from_secs(2))
    }
}

/// Accepts sessions until shutdown.
pub async fn accept(ctx: Arc<SessionContext>, listener: TcpListener, shutdown: CancellationToken) {
    let permits = Arc::new(Semaphore::new(MAX_PENDING_HANDSHAKES));
    loop {
        let accepted = tokio::select! {
            () = shutdown.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let (tcp, remote) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                // Out of file descriptors and the like: wait rather than spin.
                tracing::warn!(%error, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else {
            ctx.metrics.refused("too_many_handshakes");
            continue;
        };
        let ctx = Arc::clone(&ctx);
        tokio::spawn(async move {
            let established = session::handshake(&ctx, tcp, Direction::Inbound, None).await;
            drop(permit);
            match established {
                Ok(established) => {
                    session::run(ctx, established).await;
                }
                Err(refusal) => refused(&ctx, &refusal, &remote.to_string(), Direction::Inbound),
            }
        });
    }
}

fn refused(ctx: &SessionContext, refusal: &Refusal, remote: &str, direction: Direction) {
    ctx.metrics.refused(refusal.reason());
    tracing::warn!(
        remote,
        direction = direction.label(),
        reason = refusal.reason(),
        error = %refusal,
        "session refused"
    );
}

/// Keeps one dialling loop per endpoint of the latest set from `peers`, until shutdown.
pub async fn dial_peers(
    ctx: Arc<SessionContext>,
    mut peers: watch::Receiver<BTreeSet<PeerEndpoint>>,
    connected: watch::Receiver<BTreeSet<NodeId>>,
    shutdown: CancellationToken,
) {
    let mut dialling: HashMap<PeerEndpoint, CancellationToken> = HashMap::new();
    loop {
        let wanted = peers.borrow_and_update().clone();
        dialling.retain(|endpoint, stop| {
            let keep = wanted.contains(endpoint);
            if !keep {
                stop.cancel();
            }
            keep
        });
        for endpoint in wanted {
            if dialling.contains_key(&endpoint) {
                continue;
            }
            let stop = shutdown.child_token();
            dialling.insert(endpoint.clone(), stop.clone());
            tokio::spawn(dial_loop(Arc::clone(&ctx), endpoint, connected.clone(), stop));
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            changed = peers.changed() => if changed.is_err() {
                // The source is gone: keep dialling what it last said.
                shutdown.cancelled().await;
                return;
            },
        }
    }
}

/// Waits until no session with `peer` is up; `false` on stop.
async fn until_disconnected(
    connected: &mut watch::Receiver<BTreeSet<NodeId>>,
    peer: NodeId,
    stop: &CancellationToken,
) -> bool {
    loop {
        if !connected.borrow_and_update().contains(&peer) {
            return true;
        }
        tokio::select! {
            () = stop.cancelled() => return false,
            changed = connected.changed() => if changed.is_err() { return false },
        }
    }
}

/// What one dial attempt came to.
enum Attempt {
    Session(SessionEnd),
    Refused(Refusal),
    Unreachable,
}

/// `expected`: the node the MeshNode records place at `address`, if known; with SPIFFE, its
/// SVID must name that node.
async fn dial_once(ctx: &Arc<SessionContext>, address: &str, expected: Option<NodeId>) -> Attempt {
    let connect = async {
        let mut last_error = None;
        for target in tokio::net::lookup_host(address).await? {
            match TcpStream::connect(target).await {
                Ok(tcp) => return Ok(tcp),
                Err(error) => last_error = Some(error),
            }
        }
        Err(last_error.unwrap_or_else(|| std::io::Error::other("the address resolves to nothing")))
    };
    let tcp = match tokio::time::timeout(CONNECT_TIMEOUT, connect).await {
        Ok(Ok(tcp)) => tcp,
        Ok(Err(error)) => {
            ctx.metrics.dial_failures.with_label_values(&["connect"]).inc();
            tracing::debug!(address, %error, "dial failed");
            return Attempt::Unreachable;
        }
        Err(_) => {
            ctx.metrics
                .dial_failures
                .with_label_values(&["connect_timeout"])
                .inc();
            return Attempt::Unreachable;
        }
    };
    match session::handshake(ctx, tcp, Direction::Outbound, expected).await {
        Ok(established) => Attempt::Session(session::run(Arc::clone(ctx), established).await),
        Err(refusal) => Attempt::Refused(refusal),
    }
}

/// Dials one endpoint, again and again, until stopped.
async fn dial_loop(
    ctx: Arc<SessionContext>,
    endpoint: PeerEndpoint,
    mut connected: watch::Receiver<BTreeSet<NodeId>>,
    stop: CancellationToken,
) {
    let address = endpoint.address;
    let recorded = endpoint.node;
    let mut known = recorded;
    let mut backoff = Backoff::default();
    loop {
        if let Some(peer) = known
            && !until_disconnected(&mut connected, peer, &stop).await
        {
            return;
        }
        if stop.is_cancelled() {
            return;
        }
        if let Some(mode) = &ctx.svid {
            // Without an SVID there is nothing to authenticate with: wait for one, not refusals.
            tokio::select! {
                () = stop.cancelled() => return,
                () = mode.until_usable() => {}
            }
        }
        let delay = match dial_once(&ctx, &address, recorded).await {
            Attempt::Session(SessionEnd::MeshGone) => return,
            Attempt::Session(SessionEnd::Duplicate(peer)) => {
                known = Some(peer);
                backoff.reset();
                continue;
            }
            Attempt::Session(SessionEnd::Closed { peer, lasted }) => {
                known = Some(peer);
                if lasted >= STABLE_SESSION {
                    backoff.reset();
                }
                backoff.next_delay()
            }
            Attempt::Refused(Refusal::SelfConnection) => {
                tracing::info!(address, "not dialling this address again: it is this agent");
                return;
            }
            Attempt::Refused(refusal) => {
                refused(&ctx, &refusal, &address, Direction::Outbound);
                backoff.next_delay()
            }
            Attempt::Unreachable => backoff.next_delay(),
        };
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(delay) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_its_cap_with_bounded_jitter_and_resets() {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_millis(400));
        let delays: Vec<Duration> = (0..5).map(|_| backoff.next_delay()).collect();
        let nominal = [100, 200, 400, 400, 400];
        for (delay, nominal) in delays.iter().zip(nominal) {
            let nominal = Duration::from_millis(nominal);
            assert!(
                *delay >= nominal.mul_f64(0.8) && *delay <= nominal.mul_f64(1.2),
                "{delay:?}"
            );
        }
        backoff.reset();
        assert!(backoff.next_delay() <= Duration::from_millis(120));
    }
}
