//! Which peers to dial. A [`PeerSource`] publishes the set of endpoints; the dialer keeps one
//! dialling loop per endpoint of the latest set. Standalone mode lists them on the command line
//! ([`StaticPeers`]); in a cluster they come from the mesh's MeshNode records.
use std::collections::BTreeSet;

use tokio::sync::watch;
use x0tta6bl4_wire::NodeId;

/// One address to dial, and the node expected there when known (a cluster source knows it
/// from the MeshNode record; then the dialer does not dial while a session with that node
/// exists, whichever side opened it).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PeerEndpoint {
    /// `host:port`, resolved at every dial.
    pub address: String,
    pub node: Option<NodeId>,
}

impl PeerEndpoint {
    pub fn address(address: impl Into<String>) -> Self {
        PeerEndpoint {
            address: address.into(),
            node: None,
        }
    }
}

/// A source of endpoints to dial, now and as they change.
pub trait PeerSource: Send + Sync {
    /// The current set; a new value replaces the whole set (endpoints no longer in it are not
    /// redialled).
    fn subscribe(&self) -> watch::Receiver<BTreeSet<PeerEndpoint>>;

    /// Whether the set names every node this agent keeps sessions with (a cluster source
    /// applying the mesh's peering rule): the mesh then closes a session with any node that
    /// stays outside it. A static list bounds nothing: every session is kept.
    fn bounds_sessions(&self) -> bool {
        false
    }
}

/// A fixed list (`--peer HOST:PORT`, repeatable).
#[derive(Debug)]
pub struct StaticPeers {
    endpoints: watch::Sender<BTreeSet<PeerEndpoint>>,
}

impl StaticPeers {
    pub fn new(addresses: impl IntoIterator<Item = String>) -> Self {
        let set = addresses.into_iter().map(PeerEndpoint::address).collect();
        StaticPeers {
            endpoints: watch::Sender::new(set),
        }
    }
}

impl PeerSource for StaticPeers {
    fn subscribe(&self) -> watch::Receiver<BTreeSet<PeerEndpoint>> {
        self.endpoints.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_static_list_is_deduplicated_and_published_once() {
        let peers = StaticPeers::new(["198.18.0.2:7946".to_owned(), "198.18.0.2:7946".to_owned()]);
        let receiver = peers.subscribe();
        assert_eq!(receiver.borrow().len(), 1);
        assert!(
            receiver
                .borrow()
                .contains(&PeerEndpoint::address("198.18.0.2:7946"))
        );
    }
}
