//! Pull secrets and service accounts, read as the kubelet will use them.
//!
//! Cached, coalesced GETs rather than cluster-wide watches: a watch on every Secret needs
//! `list`/`watch` on all secrets in the cluster, which is far more than a webhook should hold,
//! while a GET per admission exhausts the client's rate limit under load (as a peer found). A
//! short cache gives both: `get` on secrets and serviceaccounts only, and no API request per
//! admission at steady state. Listing a namespace's pull secrets (to say "add imagePullSecrets:
//! [name]") is an optional extra that works only where `list secrets` is granted.

use std::{sync::Arc, time::Duration};

use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use kube::{Api, api::ListParams};
use moka::{Expiry, future::Cache};
use pullguard_core::{
    credentials::{DOCKER_CFG, DOCKER_CONFIG_JSON, Keyring, keyring_from_secret},
    pod_credentials::{AccountRead, PullSecretSource, SecretRead},
};

/// Pull secrets of a namespace that the pod might have meant, for hints; `None` when not allowed.
pub type Listing = Option<Arc<Vec<(String, Keyring)>>>;

#[derive(Clone)]
struct Timed<T> {
    value: T,
    ttl: Duration,
}

struct TimedExpiry;

impl<K, T> Expiry<K, Timed<T>> for TimedExpiry {
    fn expire_after_create(&self, _key: &K, value: &Timed<T>, _now: std::time::Instant) -> Option<Duration> {
        Some(value.ttl)
    }
}

/// How long answers are believed: a rotated secret is seen within `FOUND_TTL`, a secret created
/// after a PG202 within `MISSING_TTL`, and a failing API is not asked more than once per `ERROR_TTL`.
const FOUND_TTL: Duration = Duration::from_secs(30);
const MISSING_TTL: Duration = Duration::from_secs(10);
const ERROR_TTL: Duration = Duration::from_secs(5);
const LISTING_FORBIDDEN_TTL: Duration = Duration::from_secs(300);

#[derive(Clone)]
pub struct PullSecretReader {
    client: kube::Client,
    secrets: Cache<(String, String), Timed<SecretRead>>,
    accounts: Cache<(String, String), Timed<AccountRead>>,
    listings: Cache<String, Timed<Listing>>,
}

impl PullSecretReader {
    pub fn new(client: kube::Client) -> PullSecretReader {
        PullSecretReader {
            client,
            secrets: Cache::builder().max_capacity(50_000).expire_after(TimedExpiry).build(),
            accounts: Cache::builder().max_capacity(50_000).expire_after(TimedExpiry).build(),
            listings: Cache::builder().max_capacity(10_000).expire_after(TimedExpiry).build(),
        }
    }

    /// The namespace's usable pull secrets, when pullguard may list them.
    pub async fn listing(&self, namespace: &str) -> Listing {
        let read = async {
            let api: Api<Secret> = Api::namespaced(self.client.clone(), namespace);
            let mut found = Vec::new();
            for secret_type in [DOCKER_CONFIG_JSON, DOCKER_CFG] {
                let params = ListParams::default().fields(&format!("type={secret_type}"));
                match api.list(&params).await {
                    Ok(list) => {
                        for secret in list.items {
                            let name = secret.metadata.name.clone().unwrap_or_default();
                            let label = format!("secret {namespace}/{name}");
                            if let Ok(keyring) =
                                keyring_from_secret(&label, secret.type_.as_deref(), &secret_data(&secret))
                            {
                                found.push((name, keyring));
                            }
                        }
                    }
                    Err(kube::Error::Api(status)) if status.code == 403 => {
                        return Timed { value: None, ttl: LISTING_FORBIDDEN_TTL };
                    }
                    Err(_) => return Timed { value: None, ttl: ERROR_TTL },
                }
            }
            Timed { value: Some(Arc::new(found)), ttl: FOUND_TTL }
        };
        self.listings.get_with(namespace.to_string(), read).await.value
    }
}

impl PullSecretSource for PullSecretReader {
    async fn secret(&self, namespace: &str, name: &str) -> SecretRead {
        let key = (namespace.to_string(), name.to_string());
        let read = async {
            let api: Api<Secret> = Api::namespaced(self.client.clone(), namespace);
            match api.get_opt(name).await {
                Ok(Some(secret)) => {
                    let data = secret_data(&secret);
                    let label = format!("secret {namespace}/{name}");
                    match keyring_from_secret(&label, secret.type_.as_deref(), &data) {
                        Ok(keyring) => Timed { value: SecretRead::Usable(keyring), ttl: FOUND_TTL },
                        Err(problem) => Timed { value: SecretRead::Malformed(problem), ttl: FOUND_TTL },
                    }
                }
                Ok(None) => Timed { value: SecretRead::Missing, ttl: MISSING_TTL },
                Err(error) => Timed { value: SecretRead::Unreadable(api_error(&error)), ttl: ERROR_TTL },
            }
        };
        self.secrets.get_with(key, read).await.value
    }

    async fn service_account(&self, namespace: &str, name: &str) -> AccountRead {
        let key = (namespace.to_string(), name.to_string());
        let read = async {
            let api: Api<ServiceAccount> = Api::namespaced(self.client.clone(), namespace);
            match api.get_opt(name).await {
                Ok(Some(account)) => {
                    let names = account
                        .image_pull_secrets
                        .iter()
                        .flatten()
                        .filter(|reference| !reference.name.is_empty())
                        .map(|reference| reference.name.clone())
                        .collect();
                    Timed { value: AccountRead::Found(names), ttl: FOUND_TTL }
                }
                Ok(None) => Timed { value: AccountRead::Missing, ttl: MISSING_TTL },
                Err(error) => Timed { value: AccountRead::Unreadable(api_error(&error)), ttl: ERROR_TTL },
            }
        };
        self.accounts.get_with(key, read).await.value
    }

    /// Drops what is remembered about `secrets`, `account` and the namespace's listing, so the
    /// next reads ask the API. A denial must rest on fresh facts: a user who fixed what the
    /// message said and retries at once must not be denied by what was cached before the fix.
    async fn forget(&self, namespace: &str, secrets: &[String], account: Option<&str>) {
        for name in secrets {
            self.secrets.invalidate(&(namespace.to_string(), name.clone())).await;
        }
        if let Some(account) = account {
            self.accounts.invalidate(&(namespace.to_string(), account.to_string())).await;
        }
        self.listings.invalidate(namespace).await;
    }
}

fn secret_data(secret: &Secret) -> std::collections::BTreeMap<String, Vec<u8>> {
    secret.data.iter().flatten().map(|(key, value)| (key.clone(), value.0.clone())).collect()
}

/// The API's own words (reason and code), never a request detail that could carry a secret.
fn api_error(error: &kube::Error) -> String {
    match error {
        kube::Error::Api(status) => format!("{} ({})", status.reason, status.code),
        _ => "Kubernetes API unreachable".to_string(),
    }
}
