//! Watch caches (kube reflectors) shared by the controller and the agent.

use futures::StreamExt;
use kube::api::Api;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};

/// A cache of `api`'s objects: the store, the stream that fills it (applied objects, for a
/// controller's trigger), and a flag set once its first complete listing is in. Managed fields
/// are dropped: nothing reads them, and they are a good part of each object's size.
pub fn cached<K>(
    api: Api<K>,
    wc: watcher::Config,
) -> (
    Store<K>,
    impl futures::Stream<Item = Result<K, watcher::Error>> + Send + 'static,
    tokio::sync::watch::Receiver<bool>,
)
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
    let (ready_tx, ready_rx) = tokio::sync::watch::channel(false);
    let stream = reflector::reflector(
        writer,
        watcher::watcher(api, wc).modify(|o| o.meta_mut().managed_fields = None),
    )
    .inspect(move |event| {
        if matches!(event, Ok(watcher::Event::InitDone)) {
            ready_tx.send_replace(true);
        }
    })
    .applied_objects();
    (reader, stream, ready_rx)
}
