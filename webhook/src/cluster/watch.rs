//! One way to follow a kind of object: kube's watcher (with backoff on errors), each object
//! reduced to what pullguard reads of it, folded into the core's [`Watched`], and a snapshot
//! published whenever that changes. Nodes and Namespaces both go through here.

use std::{
    fmt::Debug,
    sync::{Arc, RwLock},
};

use futures::StreamExt;
use kube::{
    Api, Resource, ResourceExt,
    runtime::{WatchStreamExt, watcher},
};
use pullguard_core::watched::{WatchEvent, Watched};
use serde::de::DeserializeOwned;
use tokio::sync::watch;
use tracing::warn;

/// What admissions read: the latest snapshot (cheap to clone: an `Arc` of what was published),
/// and whether a first full list has arrived.
pub struct Followed<S> {
    snapshot: Arc<RwLock<S>>,
    synced: watch::Receiver<bool>,
}

impl<S> Clone for Followed<S> {
    fn clone(&self) -> Self {
        Followed { snapshot: self.snapshot.clone(), synced: self.synced.clone() }
    }
}

impl<S: Clone + Send + Sync + 'static> Followed<S> {
    /// Starts the watch; it runs for the life of the process. `reduce` keeps what is read of an
    /// object, `publish` makes the snapshot admissions read from the folded objects.
    pub fn start<K, V>(
        api: Api<K>,
        config: watcher::Config,
        what: &'static str,
        reduce: fn(&K) -> V,
        publish: fn(&Watched<V>) -> S,
    ) -> Followed<S>
    where
        K: Resource + Clone + DeserializeOwned + Debug + Send + 'static,
        V: PartialEq + Send + 'static,
    {
        let snapshot = Arc::new(RwLock::new(publish(&Watched::default())));
        let (synced_tx, synced) = watch::channel(false);
        let published = snapshot.clone();
        let stream = watcher(api, config).default_backoff();
        tokio::spawn(async move {
            let mut watched = Watched::default();
            futures::pin_mut!(stream);
            while let Some(event) = stream.next().await {
                let event = match event {
                    Ok(event) => reduced(event, reduce),
                    Err(error) => {
                        warn!(%error, "{what} watch failed; retrying");
                        continue;
                    }
                };
                if watched.apply(event) {
                    if let Ok(mut current) = published.write() {
                        *current = publish(&watched);
                    }
                    let _ = synced_tx.send_if_modified(|synced| !std::mem::replace(synced, true));
                }
            }
        });
        Followed { snapshot, synced }
    }

    /// Resolves once the first full list has arrived; false if the watch task ended first.
    pub async fn wait_until_ready(&self) -> bool {
        let mut synced = self.synced.clone();
        synced.wait_for(|synced| *synced).await.is_ok()
    }

    pub fn is_synced(&self) -> bool {
        *self.synced.borrow()
    }

    /// The snapshot as last published; cheap to take on every admission.
    pub fn current(&self) -> Option<S> {
        self.snapshot.read().ok().map(|current| current.clone())
    }
}

fn reduced<K: Resource, V>(event: watcher::Event<K>, reduce: fn(&K) -> V) -> WatchEvent<V> {
    match event {
        watcher::Event::Init => WatchEvent::RelistStarted,
        watcher::Event::InitApply(object) => WatchEvent::Listed(object.name_any(), reduce(&object)),
        watcher::Event::InitDone => WatchEvent::RelistDone,
        watcher::Event::Apply(object) => WatchEvent::Applied(object.name_any(), reduce(&object)),
        watcher::Event::Delete(object) => WatchEvent::Deleted(object.name_any()),
    }
}
