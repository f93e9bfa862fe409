//! A watched, cached view of some objects in the API server: a kube reflector fed by its
//! watcher in a task of its own, and a counter that moves at every change so a consumer can
//! wait for one. Used for the mesh's MeshNode records (peers) and by the chaos executor.
use futures::StreamExt;
use kube::api::Api;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// A reflector over `api` with `config`, fed until `shutdown`; `what` names it in logs.
pub fn reflect<K>(
    what: &'static str,
    api: Api<K>,
    config: watcher::Config,
    shutdown: CancellationToken,
) -> (Store<K>, watch::Receiver<u64>)
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    let (reader, writer) = reflector::store::<K>();
    let (changed, changes) = watch::channel(0u64);
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(
            watcher(api, config)
                .default_backoff()
                .reflect(writer)
                .touched_objects()
        );
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                event = stream.next() => match event {
                    None => return,
                    Some(Err(error)) => tracing::warn!(%error, watch = what, "watch failed; retrying"),
                    Some(Ok(_)) => { changed.send_modify(|n| *n = n.wrapping_add(1)); }
                }
            }
        }
    });
    (reader, changes)
}
