//! Registry facts: resolve an image reference to what its manifest says, with cached,
//! coalesced lookups.
//!
//! Request economy, which is what keeps Docker Hub's pull limit and a slow registry out of the
//! admission path:
//! - a tag never seen before costs one manifest GET (the body carries the digest), plus the config
//!   blob for a single-platform image (its platform lives there, never assumed to be linux/amd64);
//! - a tag seen before whose entry went stale is revalidated with a HEAD (not rate-limited on
//!   Docker Hub); an unchanged digest keeps the facts. A tag's entry outlives its freshness (it is
//!   kept as long as a digest) so that it can be revalidated, which keeps one entry per tag
//!   instead of a separate tag -> digest map;
//! - a manifest whose digest is already known reuses those facts (no config blob request);
//! - a 404 from HEAD is confirmed by a GET, and a 404 from GET by the tag list, before any
//!   "not found" finding;
//! - concurrent lookups of one key share one request (moka `try_get_with`, and for tags the
//!   per-key serialised `and_try_compute_with`, where a waiter finds the entry fresh); while a
//!   stale tag is being revalidated, other callers get its facts at once instead of waiting;
//! - cache keys carry the credential identity, so one tenant's answer never serves another.

pub mod address;
pub mod transport;

use std::{
    collections::HashSet,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use moka::{
    future::Cache,
    ops::compute::{CompResult, Op},
};
use pullguard_core::{
    config::Config,
    credentials::Credential,
    facts::{ImageFacts, ToRead, facts_of},
    lookup::LookupError,
    manifest::{self, ConfigPlatform, ImagePlatform},
    reference::ImageRef,
};
use sha2::{Digest, Sha256};

pub use self::transport::{Endpoint, Transport, TransportBuildError};
use crate::metrics::Metrics;

/// Every entry carries the end of its life (`dies_at`), checked on each read: moka's per-entry
/// expiry would add a timer-wheel node to every entry (one more allocation and about 40 bytes,
/// 3-4 MiB of RSS at 100,000 entries, close to a tenth of the cache). An entry past its life
/// reads as absent, is replaced by the next lookup of its key, and until then waits for the
/// capacity bound (`cache.maxEntries`) to evict it like any entry nobody asks for.
#[derive(Clone)]
enum Entry {
    /// `fresh_until` is `None` for digests (content never changes); a tag past it is revalidated.
    Found { facts: Arc<ImageFacts>, fresh_until: Option<Instant>, dies_at: Instant },
    /// Errors are boxed: they are rare, and inline they would double every entry's size.
    Missing { error: Box<LookupError>, dies_at: Instant },
    /// A tag whose lookup just failed for a passing reason (registry down, slow, 5xx). Until
    /// `retry_at` it answers the callers queued behind that attempt, and new ones, instead of
    /// each trying the registry again in turn; `stale` keeps what the tag resolved to before, so
    /// that the next attempt revalidates with a HEAD rather than starting over.
    Failed { error: Box<LookupError>, retry_at: Instant, stale: Option<Arc<ImageFacts>>, dies_at: Instant },
}

impl Entry {
    fn is_alive(&self) -> bool {
        match self {
            Entry::Found { dies_at, .. } | Entry::Missing { dies_at, .. } | Entry::Failed { dies_at, .. } => {
                Instant::now() < *dies_at
            }
        }
    }

    fn is_fresh(&self) -> bool {
        match self {
            Entry::Found { fresh_until: Some(until), .. } => Instant::now() < *until,
            Entry::Failed { retry_at, .. } => Instant::now() < *retry_at,
            // A miss is fresh for its whole (short) life.
            Entry::Found { fresh_until: None, .. } | Entry::Missing { .. } => true,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Ttls {
    tag: Duration,
    digest: Duration,
    miss: Duration,
}

/// Resolves images; cheap to share behind an `Arc`.
pub struct Registry {
    transport: Transport,
    lookups: Cache<Key, Entry>,
    /// Tags whose stale facts one caller is revalidating right now; callers arriving meanwhile
    /// are answered from those facts (as they would have been a moment earlier) instead of
    /// queueing behind the registry round trip.
    revalidating: Mutex<HashSet<Key>>,
    ttls: Ttls,
    metrics: Arc<Metrics>,
}

const MAX_SUGGESTIONS: usize = 3;
/// How long a passing failure of a tag lookup answers for the registry.
const FAILED_LOOKUP_ANSWERS_FOR: Duration = Duration::from_secs(2);

impl Registry {
    pub fn new(config: &Config, metrics: Arc<Metrics>) -> Result<Registry, TransportBuildError> {
        let lookups = Cache::builder().max_capacity(config.cache.max_entries).build();
        Ok(Registry {
            transport: Transport::new(config, metrics.clone())?,
            lookups,
            revalidating: Mutex::new(HashSet::new()),
            ttls: Ttls {
                tag: config.cache.tag_ttl.0,
                digest: config.cache.digest_ttl.0,
                miss: config.cache.miss_ttl.0,
            },
            metrics,
        })
    }

    pub fn cached_entries(&self) -> u64 {
        self.lookups.entry_count()
    }

    /// Facts about the image, from the cache or the registry.
    pub async fn resolve(
        &self,
        image: &ImageRef,
        credential: Option<&Credential>,
    ) -> Result<Arc<ImageFacts>, LookupError> {
        let endpoint = Endpoint {
            registry: image.registry(),
            api_host: image.api_host(),
            repository: image.repository(),
            credential,
        };
        match image.digest() {
            Some(digest) => self.by_digest(&endpoint, digest).await,
            None => self.by_tag(&endpoint, image.effective_tag().unwrap_or("latest")).await,
        }
    }

    async fn by_tag(&self, endpoint: &Endpoint<'_>, tag: &str) -> Result<Arc<ImageFacts>, LookupError> {
        let key = cache_key(endpoint, ":", tag);
        if let Some(entry) = self.lookups.get(&key).await.filter(Entry::is_alive) {
            if entry.is_fresh() {
                self.count_lookup(false);
                return from_entry(entry);
            }
            if let Entry::Found { facts, .. } = entry
                && self.is_revalidating(key)
            {
                self.count_lookup(false);
                return Ok(facts);
            }
        }
        let missed = AtomicBool::new(false);
        let computed = self
            .lookups
            .entry(key)
            .and_try_compute_with(|current| async {
                let known = match current.map(|entry| entry.into_value()).filter(Entry::is_alive) {
                    // Refreshed, or just failed, by the caller this one waited for.
                    Some(entry) if entry.is_fresh() => return Ok::<_, LookupError>(Op::Nop),
                    Some(Entry::Found { facts, .. } | Entry::Failed { stale: Some(facts), .. }) => {
                        Some(facts)
                    }
                    _ => None,
                };
                missed.store(true, Ordering::Relaxed);
                let _revalidation = known.is_some().then(|| Revalidation::start(&self.revalidating, key));
                let outcome = self.fetch_tag(endpoint, tag, known.clone()).await;
                let tag_life = self.ttls.digest.max(self.ttls.tag);
                let entry = match outcome {
                    Ok(facts) => Entry::Found {
                        facts,
                        fresh_until: Some(Instant::now() + self.ttls.tag),
                        dies_at: Instant::now() + tag_life,
                    },
                    Err(error) if error.is_definite() => {
                        Entry::Missing { error: Box::new(error), dies_at: Instant::now() + self.ttls.miss }
                    }
                    Err(error) => Entry::Failed {
                        error: Box::new(error),
                        // A registry in backoff is asked again when the backoff ends, not later.
                        retry_at: Instant::now()
                            + self
                                .transport
                                .backoff_remaining(endpoint.api_host)
                                .unwrap_or(FAILED_LOOKUP_ANSWERS_FOR),
                        dies_at: Instant::now()
                            + if known.is_some() { tag_life } else { FAILED_LOOKUP_ANSWERS_FOR },
                        stale: known,
                    },
                };
                Ok(Op::Put(entry))
            })
            .await;
        self.count_lookup(missed.load(Ordering::Relaxed));
        match computed? {
            CompResult::Inserted(entry) | CompResult::ReplacedWith(entry) | CompResult::Unchanged(entry) => {
                from_entry(entry.into_value())
            }
            // Not reachable: the closure never removes, and only skips an entry that exists.
            CompResult::Removed(_) | CompResult::StillNone(_) => Err(LookupError::RegistryFailure {
                status: None,
                reason: "the image cache lost an entry being resolved".into(),
            }),
        }
    }

    async fn by_digest(&self, endpoint: &Endpoint<'_>, digest: &str) -> Result<Arc<ImageFacts>, LookupError> {
        let key = cache_key(endpoint, "@", digest);
        match self.lookups.get(&key).await {
            Some(entry) if entry.is_alive() => {
                self.count_lookup(false);
                return from_entry(entry);
            }
            // Makes way for `try_get_with`, which would hand out the dead entry. Two callers may
            // both remove it; the load after it is still shared.
            Some(_) => self.lookups.invalidate(&key).await,
            None => {}
        }
        let missed = AtomicBool::new(false);
        let entry = self
            .lookups
            .try_get_with(key, async {
                missed.store(true, Ordering::Relaxed);
                let outcome = self.fetch_digest(endpoint, digest).await;
                into_entry(outcome, self.ttls.digest, self.ttls.miss)
            })
            .await
            .map_err(|error| (*error).clone());
        self.count_lookup(missed.load(Ordering::Relaxed));
        from_entry(entry?)
    }

    fn is_revalidating(&self, key: Key) -> bool {
        self.revalidating.lock().is_ok_and(|keys| keys.contains(&key))
    }

    /// A caller that waited on another's load counts as a hit: it caused no request.
    fn count_lookup(&self, missed: bool) {
        self.metrics.cache_lookup(!missed);
        self.metrics.cache_entries.set(i64::try_from(self.lookups.entry_count()).unwrap_or(i64::MAX));
    }

    /// `known`: what the tag resolved to before it went stale, revalidated with a HEAD.
    async fn fetch_tag(
        &self,
        endpoint: &Endpoint<'_>,
        tag: &str,
        known: Option<Arc<ImageFacts>>,
    ) -> Result<Arc<ImageFacts>, LookupError> {
        if let Some(known) = known {
            let head = self.transport.head_manifest(endpoint, tag).await?;
            if !head.is_not_found()
                && let Some(digest) = head.digest
            {
                if digest == known.digest {
                    return Ok(known);
                }
                return self.by_digest(endpoint, &digest).await;
            }
            // A HEAD that says "not found" (or gives no digest) is confirmed by the GET below.
        }
        let reply = self.transport.get_manifest(endpoint, tag).await?;
        if reply.is_not_found() {
            return Err(self.explain_missing_tag(endpoint, tag).await);
        }
        let media_type = manifest::media_type_of(reply.content_type.as_deref(), &reply.body)?;
        let digest = verified_digest(&media_type, reply.digest.as_deref(), &reply.body, None)?;
        let digest_key = cache_key(endpoint, "@", &digest);
        // Another tag (or an earlier pin by digest) already resolved this content.
        if let Some(Entry::Found { facts, .. }) = self.lookups.get(&digest_key).await.filter(Entry::is_alive)
        {
            return Ok(facts);
        }
        let facts = Arc::new(self.facts_from(endpoint, &digest, &media_type, &reply.body).await?);
        let entry = Entry::Found {
            facts: facts.clone(),
            fresh_until: None,
            dies_at: Instant::now() + self.ttls.digest,
        };
        self.lookups.insert(digest_key, entry).await;
        Ok(facts)
    }

    async fn fetch_digest(
        &self,
        endpoint: &Endpoint<'_>,
        digest: &str,
    ) -> Result<Arc<ImageFacts>, LookupError> {
        let reply = self.transport.get_manifest(endpoint, digest).await?;
        if reply.is_not_found() {
            return Err(match reply.error_code.as_deref() {
                Some("NAME_UNKNOWN") => LookupError::RepositoryNotFound,
                _ => LookupError::DigestNotFound { digest: digest.to_string() },
            });
        }
        let media_type = manifest::media_type_of(reply.content_type.as_deref(), &reply.body)?;
        let digest = verified_digest(&media_type, reply.digest.as_deref(), &reply.body, Some(digest))?;
        Ok(Arc::new(self.facts_from(endpoint, &digest, &media_type, &reply.body).await?))
    }

    /// A missing tag: the tag list tells a missing repository from a missing tag and gives the
    /// closest tags to suggest. A tag list we cannot read still leaves a definite "not found".
    /// A tag the list does name is a passing fault, not a miss: registries answer 404 (or 500)
    /// for a tag while it is being pushed again, and a cached "not found" would deny a valid
    /// image for the whole miss TTL.
    async fn explain_missing_tag(&self, endpoint: &Endpoint<'_>, tag: &str) -> LookupError {
        match self.transport.list_tags(endpoint).await {
            Ok(tags) if tags.iter().any(|listed| listed == tag) => LookupError::RegistryFailure {
                status: Some(404),
                reason: format!("the registry answered 404 for tag {tag:?} yet lists it (being pushed?)"),
            },
            Ok(tags) => LookupError::TagNotFound {
                tag: tag.to_string(),
                existing_tags: Some(closest_tags(tag, tags)),
            },
            Err(LookupError::RepositoryNotFound) => LookupError::RepositoryNotFound,
            Err(_) => LookupError::TagNotFound { tag: tag.to_string(), existing_tags: None },
        }
    }

    async fn facts_from(
        &self,
        endpoint: &Endpoint<'_>,
        digest: &str,
        media_type: &str,
        body: &[u8],
    ) -> Result<ImageFacts, LookupError> {
        let (mut facts, to_read) = facts_of(digest, media_type, manifest::parse(media_type, body)?);
        match to_read {
            ToRead::Nothing => {}
            ToRead::Config(config_digest) => {
                facts.platforms = self.config_platform(endpoint, &config_digest).await?.into_iter().collect();
            }
            ToRead::Children(children) => {
                // containerd keeps index entries without a platform and matches them by their
                // config; so does this, instead of calling the index platform-less.
                let read = futures::future::join_all(
                    children.iter().map(|child| self.child_platform(endpoint, child)),
                );
                for platform in read.await.into_iter().flatten() {
                    facts.platforms.push(platform);
                }
                facts.platforms.sort();
                facts.platforms.dedup();
            }
        }
        Ok(facts)
    }

    /// The platform of an index entry that names none: its manifest, then its config. `None`
    /// when the child cannot be read or is not a runnable image (the entry stays unknown; a
    /// failure here never fails the index).
    async fn child_platform(&self, endpoint: &Endpoint<'_>, digest: &str) -> Option<ImagePlatform> {
        let reply = self.transport.get_manifest(endpoint, digest).await.ok()?;
        if reply.is_not_found() {
            return None;
        }
        let media_type = manifest::media_type_of(reply.content_type.as_deref(), &reply.body).ok()?;
        verified_digest(&media_type, reply.digest.as_deref(), &reply.body, Some(digest)).ok()?;
        let (_, to_read) = facts_of(digest, &media_type, manifest::parse(&media_type, &reply.body).ok()?);
        match to_read {
            ToRead::Config(config_digest) => {
                self.config_platform(endpoint, &config_digest).await.ok().flatten()
            }
            ToRead::Nothing | ToRead::Children(_) => None,
        }
    }

    /// The platform of a single-manifest image lives in its config blob.
    async fn config_platform(
        &self,
        endpoint: &Endpoint<'_>,
        digest: &str,
    ) -> Result<Option<ImagePlatform>, LookupError> {
        let reply = self.transport.get_blob(endpoint, digest).await?;
        if reply.is_not_found() {
            return Err(LookupError::InvalidManifest { reason: format!("config blob {digest} is missing") });
        }
        if content_digest(&reply.body) != digest && digest.starts_with("sha256:") {
            return Err(LookupError::RegistryFailure {
                status: None,
                reason: format!("config blob does not match its digest {digest}"),
            });
        }
        Ok(ConfigPlatform::parse(&reply.body))
    }
}

/// Marks a tag as being revalidated for as long as it lives, including when the admission that
/// started the revalidation is cut off by its deadline.
struct Revalidation<'a> {
    keys: &'a Mutex<HashSet<Key>>,
    key: Key,
}

impl<'a> Revalidation<'a> {
    fn start(keys: &'a Mutex<HashSet<Key>>, key: Key) -> Revalidation<'a> {
        if let Ok(mut keys) = keys.lock() {
            keys.insert(key);
        }
        Revalidation { keys, key }
    }
}

impl Drop for Revalidation<'_> {
    fn drop(&mut self) {
        if let Ok(mut keys) = self.keys.lock() {
            keys.remove(&self.key);
        }
    }
}

/// 128 bits of SHA-256 over an image's name, reference and credential identity: 16 bytes per
/// entry instead of a 50-150 byte string, no allocation per lookup, and no collision (one
/// tenant's answer serving another) within reach.
type Key = u128;

/// `registry/repository` + separator + tag or digest + credential identity.
fn cache_key(endpoint: &Endpoint<'_>, separator: &str, reference: &str) -> Key {
    let identity = endpoint.credential.map_or("anonymous", Credential::identity);
    let mut hasher = Sha256::new();
    // Length-prefixed, so that no two different sets of parts hash the same bytes.
    for part in [endpoint.registry, endpoint.repository, separator, reference, identity] {
        hasher.update((part.len() as u64).to_le_bytes());
        hasher.update(part.as_bytes());
    }
    let digest = hasher.finalize();
    let mut first = [0u8; 16];
    first.copy_from_slice(&digest[..16]);
    u128::from_le_bytes(first)
}

fn into_entry(
    outcome: Result<Arc<ImageFacts>, LookupError>,
    found_ttl: Duration,
    miss_ttl: Duration,
) -> Result<Entry, LookupError> {
    match outcome {
        Ok(facts) => Ok(Entry::Found { facts, fresh_until: None, dies_at: Instant::now() + found_ttl }),
        Err(error) if error.is_definite() => {
            Ok(Entry::Missing { error: Box::new(error), dies_at: Instant::now() + miss_ttl })
        }
        Err(error) => Err(error),
    }
}

fn from_entry(entry: Entry) -> Result<Arc<ImageFacts>, LookupError> {
    match entry {
        Entry::Found { facts, .. } => Ok(facts),
        Entry::Missing { error, .. } | Entry::Failed { error, .. } => Err(*error),
    }
}

fn content_digest(body: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(body)))
}

/// The digest of a manifest, checked against what we asked for and what the registry claims.
/// Signed schema 1 manifests are the exception: their digest covers the payload without the
/// signatures, so the registry's header is trusted for them.
fn verified_digest(
    media_type: &str,
    header: Option<&str>,
    body: &[u8],
    requested: Option<&str>,
) -> Result<String, LookupError> {
    let schema1 = media_type == manifest::DOCKER_SCHEMA1_SIGNED || media_type == manifest::DOCKER_SCHEMA1;
    let computed = content_digest(body);
    let lie = |what: &str, claimed: &str| LookupError::RegistryFailure {
        status: None,
        reason: format!("manifest body does not match the {what} digest {claimed}"),
    };
    if schema1 {
        return Ok(header.or(requested).map(str::to_string).unwrap_or(computed));
    }
    if let Some(requested) = requested
        && requested.starts_with("sha256:")
        && requested != computed
    {
        return Err(lie("requested", requested));
    }
    if let Some(header) = header
        && header.starts_with("sha256:")
        && header != computed
    {
        return Err(lie("Docker-Content-Digest", header));
    }
    Ok(computed)
}

/// Up to three existing tags closest to the one asked for, for "did you mean" in PG101.
pub fn closest_tags(wanted: &str, tags: Vec<String>) -> Vec<String> {
    let mut scored: Vec<(usize, String)> =
        tags.into_iter().map(|tag| (strsim::levenshtein(wanted, &tag), tag)).collect();
    scored.sort();
    scored.into_iter().take(MAX_SUGGESTIONS).map(|(_, tag)| tag).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggestions_are_the_closest_three() {
        let tags = ["v1.2.3", "v1.2.4", "latest", "v2.0.0", "main"].map(String::from).to_vec();
        assert_eq!(closest_tags("v1.2.5", tags), vec!["v1.2.3", "v1.2.4", "v2.0.0"]);
        assert!(closest_tags("x", vec![]).is_empty());
    }

    #[test]
    fn digests_are_verified() {
        let body = b"{}";
        let good = content_digest(body);
        assert_eq!(verified_digest(manifest::OCI_MANIFEST, Some(&good), body, Some(&good)).unwrap(), good);
        assert!(verified_digest(manifest::OCI_MANIFEST, Some("sha256:00"), body, None).is_err());
        assert!(verified_digest(manifest::OCI_MANIFEST, None, body, Some("sha256:00")).is_err());
        assert_eq!(
            verified_digest(manifest::DOCKER_SCHEMA1_SIGNED, Some("sha256:aa"), body, None).unwrap(),
            "sha256:aa"
        );
    }

    #[test]
    fn keys_separate_credentials() {
        let a = Credential::new("a", "1");
        let b = Credential::new("a", "2");
        let endpoint = |credential| Endpoint { registry: "r", api_host: "r", repository: "n", credential };
        let key = |credential, separator, reference| cache_key(&endpoint(credential), separator, reference);
        assert_ne!(key(Some(&a), ":", "t"), key(Some(&b), ":", "t"));
        assert_ne!(key(Some(&a), ":", "t"), key(None, ":", "t"));
        assert_ne!(key(None, ":", "t"), key(None, "@", "t"));
        assert_eq!(key(Some(&a), ":", "t"), key(Some(&Credential::new("a", "1")), ":", "t"));
    }
}
