//! The `pullguard.io/mode` annotation of a CronJob, for the Jobs it creates. The CronJob
//! controller copies only the job template's metadata into a Job, so the annotation a user put on
//! the CronJob never reaches the Jobs: without this, a CronJob admitted in warn mode would have
//! every Job it starts denied. (A Deployment's annotations are copied to its ReplicaSets by the
//! Deployment controller, so those need no read.)
//!
//! Cached, coalesced GETs of the object's metadata only, as for pull secrets: `get` on cronjobs
//! and no watch.

use std::time::Duration;

use k8s_openapi::api::batch::v1::CronJob;
use kube::Api;
use moka::future::Cache;
use pullguard_core::config::MODE_KEY;

/// A changed annotation is seen within this long.
const TTL: Duration = Duration::from_secs(30);

#[derive(Clone)]
pub struct OwnerModes {
    client: kube::Client,
    cronjobs: Cache<(String, String), Option<String>>,
}

impl OwnerModes {
    pub fn new(client: kube::Client) -> OwnerModes {
        OwnerModes { client, cronjobs: Cache::builder().max_capacity(10_000).time_to_live(TTL).build() }
    }

    /// The CronJob's `pullguard.io/mode` annotation; `None` when it has none, does not exist, or
    /// cannot be read (then the Job's own metadata decides, as without an owner). A failed read
    /// is not remembered: one API blip must not put the CronJob's Jobs in the configured mode for
    /// the cache's whole life.
    pub async fn cronjob_mode(&self, namespace: &str, name: &str) -> Option<String> {
        let read = async {
            let api: Api<CronJob> = Api::namespaced(self.client.clone(), namespace);
            let cronjob = api.get_metadata_opt(name).await?;
            Ok::<_, kube::Error>(cronjob.and_then(|cronjob| cronjob.metadata.annotations?.remove(MODE_KEY)))
        };
        self.cronjobs.try_get_with((namespace.to_string(), name.to_string()), read).await.ok().flatten()
    }
}
