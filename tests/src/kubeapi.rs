//! An in-process Kubernetes API server for tests. No kube-apiserver can run on the machines this
//! project is tested on, so this one speaks enough of the real wire format that the `kube` client and
//! its reflectors run against it unmodified: typed REST paths, `…List` kinds carrying
//! `metadata.resourceVersion`, `Status` objects for every error, label and field selectors, and
//! chunked watch streams of newline-delimited events with bookmarks, streaming lists
//! (`sendInitialEvents`) and `410 Expired` for resource versions older than the kept history.
//!
//! Where it knowingly differs from a real apiserver: a list at an old `resourceVersion` (or through a
//! `continue` token) is served from current data, strategic merge patches are applied as JSON merge
//! patches, JSON patches are refused (415), there is no authentication, admission, defaulting,
//! finalizers or graceful deletion, and discovery is the legacy (non-aggregated) kind only.

use std::{
    collections::{BTreeMap, VecDeque},
    convert::Infallible,
    fmt,
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex, MutexGuard, PoisonError,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context, Result};
use axum::{
    Router,
    body::{Body, Bytes},
    extract::{Request, State},
    http::{Method, StatusCode, header},
    response::{IntoResponse, Response},
};
use base64::Engine;
use serde::{Serialize, de::DeserializeOwned};
use serde_json::{Map, Value, json};
use tokio::{
    net::TcpListener,
    sync::{broadcast, broadcast::error::RecvError, mpsc, watch},
    time::Instant,
};

/// The version `/version` reports; discovery-minded clients only look at major/minor.
pub const GIT_VERSION: &str = "v1.36.2";

/// What a real apiserver does when a watch names no `timeoutSeconds` (its `--min-request-timeout`).
const DEFAULT_WATCH_TIMEOUT: Duration = Duration::from_secs(1800);
const DEFAULT_HISTORY_LIMIT: usize = 1000;
const DEFAULT_BOOKMARK_INTERVAL: Duration = Duration::from_secs(1);
/// Bounds how far a slow watch may fall behind before it is expired, as the apiserver's watch cache does.
const SIGNAL_CAPACITY: usize = 4096;
const MAX_BODY_BYTES: usize = 8 << 20;
const INITIAL_EVENTS_END: &str = "k8s.io/initial-events-end";

/// (group, version, plural, kind, namespaced, field labels beyond metadata.name/namespace)
type Builtin = (&'static str, &'static str, &'static str, &'static str, bool, &'static [&'static str]);

/// The built-in resources the server knows from the start, with the field selectors the real
/// apiserver accepts for each beyond `metadata.name` and `metadata.namespace` (anything else is a 400
/// there, so it is here too; a test that passes here must not rely on a selector a cluster refuses).
const BUILTINS: &[Builtin] = &[
    ("", "v1", "namespaces", "Namespace", false, &["status.phase"]),
    ("", "v1", "nodes", "Node", false, &["spec.unschedulable"]),
    ("", "v1", "secrets", "Secret", true, &["type"]),
    ("", "v1", "serviceaccounts", "ServiceAccount", true, &[]),
    ("", "v1", "configmaps", "ConfigMap", true, &[]),
    (
        "",
        "v1",
        "pods",
        "Pod",
        true,
        &[
            "spec.nodeName",
            "spec.restartPolicy",
            "spec.schedulerName",
            "spec.serviceAccountName",
            "spec.hostNetwork",
            "status.phase",
            "status.podIP",
            "status.nominatedNodeName",
        ],
    ),
    ("", "v1", "replicationcontrollers", "ReplicationController", true, &["status.replicas"]),
    ("apps", "v1", "deployments", "Deployment", true, &[]),
    ("apps", "v1", "statefulsets", "StatefulSet", true, &[]),
    ("apps", "v1", "daemonsets", "DaemonSet", true, &[]),
    ("apps", "v1", "replicasets", "ReplicaSet", true, &["status.replicas"]),
    ("batch", "v1", "jobs", "Job", true, &["status.successful"]),
    ("batch", "v1", "cronjobs", "CronJob", true, &[]),
];

/// One request as the server saw it, before latency or unavailability were applied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordedRequest {
    pub method: String,
    pub path: String,
    /// The raw query string, without the `?`.
    pub query: String,
}

impl RecordedRequest {
    /// The decoded value of one query parameter.
    pub fn param(&self, name: &str) -> Option<String> {
        form_urlencoded::parse(self.query.as_bytes())
            .find(|(key, _)| key == name)
            .map(|(_, v)| v.into_owned())
    }

    pub fn is_watch(&self) -> bool {
        self.param("watch").is_some_and(|value| parse_bool(&value) == Some(true))
    }
}

/// An in-memory Kubernetes API server on `http://127.0.0.1:PORT`. It stops when dropped.
pub struct FakeApiServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    shutdown: watch::Sender<bool>,
}

impl FakeApiServer {
    pub async fn start() -> Result<FakeApiServer> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (signals, _) = broadcast::channel(SIGNAL_CAPACITY);
        let shared = Arc::new(Shared {
            store: Mutex::new(Store::new()),
            signals,
            open_watches: AtomicUsize::new(0),
            addr,
        });
        let (shutdown, mut stop) = watch::channel(false);
        let app = Router::new().fallback(handle).with_state(shared.clone());
        tokio::spawn(async move {
            let stopped = async move {
                let _ = stop.wait_for(|stop| *stop).await;
            };
            let _ = axum::serve(listener, app).with_graceful_shutdown(stopped).await;
        });
        Ok(FakeApiServer { addr, shared, shutdown })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A kubeconfig with one cluster, one user without credentials and a context selecting both.
    pub fn kubeconfig_yaml(&self) -> String {
        format!(
            "apiVersion: v1\n\
             kind: Config\n\
             clusters:\n\
             - name: fake\n  cluster:\n    server: {url}\n\
             users:\n\
             - name: fake\n  user: {{}}\n\
             contexts:\n\
             - name: fake\n  context:\n    cluster: fake\n    user: fake\n    namespace: default\n\
             current-context: fake\n\
             preferences: {{}}\n",
            url = self.url()
        )
    }

    /// Writes [`Self::kubeconfig_yaml`] to `dir/kubeconfig` and returns that path.
    pub fn write_kubeconfig(&self, dir: &Path) -> Result<PathBuf> {
        let path = dir.join("kubeconfig");
        std::fs::write(&path, self.kubeconfig_yaml())
            .with_context(|| format!("writing {}", path.display()))?;
        Ok(path)
    }

    /// A `kube` client for this server. Must be called inside a Tokio runtime.
    pub fn client(&self) -> Result<kube::Client> {
        // kube's rustls connector is built even for plain http and needs a process-wide provider.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let config = kube::Config::new(self.url().parse()?);
        Ok(kube::Client::try_from(config)?)
    }

    /// Creates or replaces `obj` (no resourceVersion precondition) and returns its new resourceVersion.
    /// Types outside the built-in list are registered on first use, namespaced if the object has a
    /// namespace.
    pub fn apply<K: k8s_openapi::Resource + Serialize>(&self, obj: &K) -> Result<String> {
        let value = serde_json::to_value(obj)?;
        let gvr = Gvr::of::<K>();
        let mut store = self.shared.lock();
        if !store.resources.contains_key(&gvr) {
            let namespaced = meta_str(&value, "namespace").is_some();
            store.resources.insert(
                gvr.clone(),
                ResourceInfo { kind: K::KIND.to_string(), namespaced, field_labels: Vec::new() },
            );
        }
        let (stored, _) = store.upsert(&self.shared.signals, &gvr, value, Write::CreateOrReplace)?;
        Ok(meta_str(&stored, "resourceVersion").unwrap_or_default().to_string())
    }

    /// Deletes one object; false when there was none.
    pub fn delete<K: k8s_openapi::Resource>(&self, namespace: Option<&str>, name: &str) -> bool {
        let gvr = Gvr::of::<K>();
        let key = (namespace.unwrap_or_default().to_string(), name.to_string());
        let mut store = self.shared.lock();
        let exists = store.objects.get(&gvr).is_some_and(|objects| objects.contains_key(&key));
        if exists {
            store.commit(&self.shared.signals, &gvr, key, None);
        }
        exists
    }

    /// The stored object, as clients would get it.
    pub fn get<K: k8s_openapi::Resource + DeserializeOwned>(
        &self,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<Option<K>> {
        let key = (namespace.unwrap_or_default().to_string(), name.to_string());
        let store = self.shared.lock();
        let found = store.objects.get(&Gvr::of::<K>()).and_then(|objects| objects.get(&key)).cloned();
        drop(store);
        Ok(found.map(serde_json::from_value).transpose()?)
    }

    /// Every stored object of a type, in one namespace or (with `None`) in all of them.
    pub fn list<K: k8s_openapi::Resource + DeserializeOwned>(
        &self,
        namespace: Option<&str>,
    ) -> Result<Vec<K>> {
        let store = self.shared.lock();
        let values: Vec<Value> = store
            .objects
            .get(&Gvr::of::<K>())
            .map(|objects| {
                objects
                    .iter()
                    .filter(|((ns, _), _)| namespace.is_none_or(|wanted| wanted == ns))
                    .map(|(_, obj)| obj.clone())
                    .collect()
            })
            .unwrap_or_default();
        drop(store);
        Ok(values.into_iter().map(serde_json::from_value).collect::<Result<_, _>>()?)
    }

    /// The latest resourceVersion handed out.
    pub fn resource_version(&self) -> u64 {
        self.shared.lock().rv
    }

    /// Forgets the change history, as etcd compaction does: a watch resuming from any resourceVersion
    /// older than the current one gets a 410 Expired ERROR event and must re-list.
    pub fn compact(&self) {
        let mut store = self.shared.lock();
        store.history.clear();
        store.compacted = store.rv;
    }

    /// How many changes are kept for watches to resume from; older ones are compacted away.
    pub fn set_history_limit(&self, limit: usize) {
        let mut store = self.shared.lock();
        store.history_limit = limit;
        store.trim_history();
    }

    /// Sends every open watch a 410 Expired ERROR event and ends it, as an apiserver does with a
    /// watcher whose resourceVersion its watch cache can no longer serve.
    pub fn expire_watches(&self) {
        let _ = self.shared.signals.send(Signal::Expire);
    }

    /// Ends every open watch stream cleanly, as `timeoutSeconds` or an apiserver restart would.
    pub fn close_watches(&self) {
        let _ = self.shared.signals.send(Signal::Close);
    }

    /// Watch streams currently open.
    pub fn open_watches(&self) -> usize {
        self.shared.open_watches.load(Ordering::SeqCst)
    }

    /// While true every request is answered 503 with a `Status`; turning it on also ends open watch
    /// streams, since clients of a down apiserver lose them.
    pub fn set_unavailable(&self, unavailable: bool) {
        self.shared.lock().unavailable = unavailable;
        if unavailable {
            self.close_watches();
        }
    }

    /// Delay before answering each request (watches: before the stream starts).
    pub fn set_latency(&self, latency: Duration) {
        self.shared.lock().latency = latency;
    }

    /// How often watches with `allowWatchBookmarks=true` get a BOOKMARK (applies to watches opened
    /// afterwards).
    pub fn set_bookmark_interval(&self, interval: Duration) {
        self.shared.lock().bookmark_interval = interval.max(Duration::from_millis(10));
    }

    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.lock().log.clone()
    }

    /// Requests whose path starts with `path_prefix` (query excluded).
    pub fn request_count(&self, path_prefix: &str) -> usize {
        self.shared.lock().log.iter().filter(|request| request.path.starts_with(path_prefix)).count()
    }

    pub fn clear_requests(&self) {
        self.shared.lock().log.clear();
    }
}

impl Drop for FakeApiServer {
    fn drop(&mut self) {
        // Graceful shutdown waits for open responses, so end the watch streams first.
        let _ = self.shared.signals.send(Signal::Close);
        let _ = self.shutdown.send(true);
    }
}

struct Shared {
    store: Mutex<Store>,
    signals: broadcast::Sender<Signal>,
    open_watches: AtomicUsize,
    addr: SocketAddr,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Store> {
        // A panicking test thread must not take every later request down with it.
        self.store.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Gvr {
    group: String,
    version: String,
    plural: String,
}

impl Gvr {
    fn new(group: &str, version: &str, plural: &str) -> Gvr {
        Gvr { group: group.to_string(), version: version.to_string(), plural: plural.to_string() }
    }

    fn of<K: k8s_openapi::Resource>() -> Gvr {
        Gvr::new(K::GROUP, K::VERSION, K::URL_PATH_SEGMENT)
    }

    fn api_version(&self) -> String {
        if self.group.is_empty() { self.version.clone() } else { format!("{}/{}", self.group, self.version) }
    }

    /// How the apiserver names a resource in messages: `secrets`, `deployments.apps`.
    fn qualified(&self) -> String {
        if self.group.is_empty() { self.plural.clone() } else { format!("{}.{}", self.plural, self.group) }
    }
}

#[derive(Clone, Debug)]
struct ResourceInfo {
    kind: String,
    namespaced: bool,
    field_labels: Vec<String>,
}

/// (namespace, or "" for cluster-scoped objects; name)
type ObjectKey = (String, String);

#[derive(Debug)]
struct Change {
    rv: u64,
    gvr: Gvr,
    namespace: String,
    /// The previous state, stamped with this change's resourceVersion so it can go out as the
    /// object of a DELETED event.
    old: Option<Value>,
    new: Option<Value>,
}

#[derive(Clone, Debug)]
enum Signal {
    Change(Arc<Change>),
    Close,
    Expire,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Write {
    Create,
    Replace,
    CreateOrReplace,
}

struct Store {
    rv: u64,
    /// Changes up to and including this resourceVersion may be gone from `history`.
    compacted: u64,
    history: VecDeque<Arc<Change>>,
    history_limit: usize,
    resources: BTreeMap<Gvr, ResourceInfo>,
    objects: BTreeMap<Gvr, BTreeMap<ObjectKey, Value>>,
    unavailable: bool,
    latency: Duration,
    bookmark_interval: Duration,
    log: Vec<RecordedRequest>,
}

impl Store {
    fn new() -> Store {
        let resources = BUILTINS
            .iter()
            .map(|(group, version, plural, kind, namespaced, fields)| {
                let info = ResourceInfo {
                    kind: kind.to_string(),
                    namespaced: *namespaced,
                    field_labels: fields.iter().map(|field| field.to_string()).collect(),
                };
                (Gvr::new(group, version, plural), info)
            })
            .collect();
        Store {
            rv: 1,
            compacted: 0,
            history: VecDeque::new(),
            history_limit: DEFAULT_HISTORY_LIMIT,
            resources,
            objects: BTreeMap::new(),
            unavailable: false,
            latency: Duration::ZERO,
            bookmark_interval: DEFAULT_BOOKMARK_INTERVAL,
            log: Vec::new(),
        }
    }

    fn info(&self, gvr: &Gvr) -> Result<&ResourceInfo, ApiError> {
        self.resources.get(gvr).ok_or_else(ApiError::no_such_path)
    }

    fn trim_history(&mut self) {
        while self.history.len() > self.history_limit {
            if let Some(dropped) = self.history.pop_front() {
                self.compacted = dropped.rv;
            }
        }
    }

    /// Records one change under a fresh resourceVersion and tells every open watch. Callers hold the
    /// store lock, which is what keeps watch replay and live delivery free of gaps and duplicates.
    fn commit(
        &mut self,
        signals: &broadcast::Sender<Signal>,
        gvr: &Gvr,
        key: ObjectKey,
        new: Option<Value>,
    ) -> Arc<Change> {
        self.rv += 1;
        let rv = self.rv;
        let new = new.map(|mut obj| {
            set_resource_version(&mut obj, rv);
            obj
        });
        let objects = self.objects.entry(gvr.clone()).or_default();
        let old = match &new {
            Some(obj) => objects.insert(key.clone(), obj.clone()),
            None => objects.remove(&key),
        };
        let old = old.map(|mut obj| {
            set_resource_version(&mut obj, rv);
            obj
        });
        let change = Arc::new(Change { rv, gvr: gvr.clone(), namespace: key.0, old, new });
        self.history.push_back(change.clone());
        self.trim_history();
        // Fails only when no watch is subscribed.
        let _ = signals.send(Signal::Change(change.clone()));
        change
    }

    /// Validates and stores a whole object, filling in the server-owned metadata. Returns the stored
    /// object and whether it was created.
    fn upsert(
        &mut self,
        signals: &broadcast::Sender<Signal>,
        gvr: &Gvr,
        mut obj: Value,
        write: Write,
    ) -> Result<(Value, bool), ApiError> {
        let info = self.info(gvr)?.clone();
        let api_version = gvr.api_version();
        {
            let map =
                obj.as_object_mut().ok_or_else(|| ApiError::bad_request("the body must be a JSON object"))?;
            for (field, expected) in [("apiVersion", api_version.as_str()), ("kind", info.kind.as_str())] {
                match map.get(field).and_then(Value::as_str) {
                    None => {
                        map.insert(field.to_string(), Value::String(expected.to_string()));
                    }
                    Some(found) if found != expected => {
                        return Err(ApiError::bad_request(format!(
                            "{field} {found:?} does not match the expected {expected:?}"
                        )));
                    }
                    Some(_) => {}
                }
            }
        }
        let meta = metadata_mut(&mut obj)?;
        let name = match meta.get("name").and_then(Value::as_str).filter(|name| !name.is_empty()) {
            Some(name) => name.to_string(),
            None => match meta.get("generateName").and_then(Value::as_str) {
                Some(prefix) if write == Write::Create => {
                    let name = format!("{prefix}{:05x}", next_serial() & 0xfffff);
                    meta.insert("name".to_string(), Value::String(name.clone()));
                    name
                }
                _ => {
                    return Err(ApiError::invalid(
                        &info.kind,
                        "",
                        "metadata.name: Required value: name is required",
                    ));
                }
            },
        };
        let namespace = if info.namespaced {
            let namespace = meta.get("namespace").and_then(Value::as_str).unwrap_or("default").to_string();
            meta.insert("namespace".to_string(), Value::String(namespace.clone()));
            namespace
        } else {
            meta.remove("namespace");
            String::new()
        };
        let key = (namespace, name.clone());
        let existing = self.objects.get(gvr).and_then(|objects| objects.get(&key));
        match (write, existing) {
            (Write::Create, Some(_)) => {
                return Err(ApiError::new(
                    409,
                    "AlreadyExists",
                    format!("{} {name:?} already exists", gvr.qualified()),
                )
                .with_details(gvr, &name));
            }
            (Write::Replace, None) => return Err(ApiError::not_found(gvr, &name)),
            _ => {}
        }
        if let (Write::Replace, Some(existing)) = (write, existing) {
            let wanted = meta.get("resourceVersion").and_then(Value::as_str).filter(|rv| !rv.is_empty());
            if let Some(wanted) = wanted
                && Some(wanted) != meta_str(existing, "resourceVersion")
            {
                return Err(ApiError::new(
                    409,
                    "Conflict",
                    format!(
                        "Operation cannot be fulfilled on {} {name:?}: the object has been modified; \
                         please apply your changes to the latest version and try again",
                        gvr.qualified()
                    ),
                )
                .with_details(gvr, &name));
            }
        }
        let existing = existing.cloned();
        let created = existing.is_none();
        let kept = |field: &str| existing.as_ref().and_then(|old| old.get("metadata")?.get(field).cloned());
        let uid = match kept("uid") {
            Some(uid) => uid,
            None => {
                Value::String(format!("{:08x}-0000-4000-8000-{:012x}", std::process::id(), next_serial()))
            }
        };
        let created_at = kept("creationTimestamp").unwrap_or_else(|| Value::String(rfc3339_now()));
        let generation = match (&existing, kept("generation").and_then(|g| g.as_i64())) {
            (Some(old), Some(generation)) if old.get("spec") != obj.get("spec") => generation + 1,
            (Some(_), Some(generation)) => generation,
            _ => 1,
        };
        let meta = metadata_mut(&mut obj)?;
        meta.insert("uid".to_string(), uid);
        meta.insert("creationTimestamp".to_string(), created_at);
        meta.insert("generation".to_string(), json!(generation));
        meta.remove("resourceVersion");
        let change = self.commit(signals, gvr, key, Some(obj));
        let stored = change.new.clone().unwrap_or(Value::Null);
        Ok((stored, created))
    }
}

/// An API error, sent as a `Status` object (in the body, or as the object of a watch ERROR event).
#[derive(Debug)]
struct ApiError {
    code: u16,
    reason: &'static str,
    message: String,
    details: Option<Value>,
}

impl ApiError {
    fn new(code: u16, reason: &'static str, message: impl Into<String>) -> ApiError {
        ApiError { code, reason, message: message.into(), details: None }
    }

    fn with_details(mut self, gvr: &Gvr, name: &str) -> ApiError {
        self.details = Some(status_details(gvr, name));
        self
    }

    fn not_found(gvr: &Gvr, name: &str) -> ApiError {
        ApiError::new(404, "NotFound", format!("{} {name:?} not found", gvr.qualified()))
            .with_details(gvr, name)
    }

    fn no_such_path() -> ApiError {
        ApiError::new(404, "NotFound", "the server could not find the requested resource")
    }

    fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(400, "BadRequest", message)
    }

    fn invalid(kind: &str, name: &str, cause: &str) -> ApiError {
        ApiError::new(422, "Invalid", format!("{kind} {name:?} is invalid: {cause}"))
    }

    fn expired(message: impl Into<String>) -> ApiError {
        ApiError::new(410, "Expired", message)
    }

    fn status(&self) -> Value {
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if let Some(details) = &self.details {
            status["details"] = details.clone();
        }
        status
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({} {})", self.message, self.code, self.reason)
    }
}

impl std::error::Error for ApiError {}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let code = StatusCode::from_u16(self.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        json_response(code, &self.status())
    }
}

/// `Status.details` names the object by its resource (plural), as the apiserver does.
fn status_details(gvr: &Gvr, name: &str) -> Value {
    let mut details = json!({"name": name, "kind": gvr.plural});
    if !gvr.group.is_empty() {
        details["group"] = Value::String(gvr.group.clone());
    }
    details
}

fn json_response(code: StatusCode, body: &Value) -> Response {
    (code, [(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
}

enum Route {
    Version,
    CoreVersions,
    Groups,
    Group(String),
    Resources { group: String, version: String },
    Collection { gvr: Gvr, namespace: Option<String> },
    Object { gvr: Gvr, namespace: Option<String>, name: String },
}

fn route(store: &Store, path: &str) -> Result<Route, ApiError> {
    let segments: Vec<&str> = path.split('/').filter(|segment| !segment.is_empty()).collect();
    let (group, version, rest) = match segments.as_slice() {
        ["version"] => return Ok(Route::Version),
        ["api"] => return Ok(Route::CoreVersions),
        ["apis"] => return Ok(Route::Groups),
        ["apis", group] => return Ok(Route::Group(group.to_string())),
        ["api", version] => {
            return Ok(Route::Resources { group: String::new(), version: version.to_string() });
        }
        ["apis", group, version] => {
            return Ok(Route::Resources { group: group.to_string(), version: version.to_string() });
        }
        ["api", version, rest @ ..] => ("", *version, rest),
        ["apis", group, version, rest @ ..] => (*group, *version, rest),
        _ => return Err(ApiError::no_such_path()),
    };
    let gvr = |plural: &str| Gvr::new(group, version, plural);
    let namespaced = |plural: &str| store.resources.get(&gvr(plural)).map(|info| info.namespaced);
    match rest {
        [plural] if namespaced(plural).is_some() => {
            Ok(Route::Collection { gvr: gvr(plural), namespace: None })
        }
        [plural, name] if namespaced(plural) == Some(false) => {
            Ok(Route::Object { gvr: gvr(plural), namespace: None, name: name.to_string() })
        }
        ["namespaces", namespace, plural] if namespaced(plural) == Some(true) => {
            Ok(Route::Collection { gvr: gvr(plural), namespace: Some(namespace.to_string()) })
        }
        ["namespaces", namespace, plural, name] if namespaced(plural) == Some(true) => Ok(Route::Object {
            gvr: gvr(plural),
            namespace: Some(namespace.to_string()),
            name: name.to_string(),
        }),
        _ => Err(ApiError::no_such_path()),
    }
}

struct Query(BTreeMap<String, String>);

impl Query {
    fn parse(raw: &str) -> Query {
        Query(
            form_urlencoded::parse(raw.as_bytes())
                .map(|(key, value)| (key.into_owned(), value.into_owned()))
                .collect(),
        )
    }

    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    fn flag(&self, key: &str) -> Result<Option<bool>, ApiError> {
        match self.get(key) {
            None => Ok(None),
            Some(value) => parse_bool(value)
                .map(Some)
                .ok_or_else(|| ApiError::bad_request(format!("invalid boolean for {key}: {value:?}"))),
        }
    }

    fn number(&self, key: &str) -> Result<Option<u64>, ApiError> {
        match self.get(key).filter(|value| !value.is_empty()) {
            None => Ok(None),
            Some(value) => value
                .parse()
                .map(Some)
                .map_err(|_| ApiError::bad_request(format!("invalid value for {key}: {value:?}"))),
        }
    }
}

/// Go's strconv.ParseBool, which is what the apiserver uses for query flags.
fn parse_bool(value: &str) -> Option<bool> {
    match value {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Some(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Some(false),
        _ => None,
    }
}

/// Whether the client asked for `PartialObjectMetadata` (kube's metadata_watcher and `*_metadata` calls).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Form {
    Full,
    Metadata,
}

impl Form {
    fn render(self, obj: &Value) -> Value {
        match self {
            Form::Full => obj.clone(),
            Form::Metadata => json!({
                "apiVersion": "meta.k8s.io/v1",
                "kind": "PartialObjectMetadata",
                "metadata": obj.get("metadata").cloned().unwrap_or_else(|| json!({})),
            }),
        }
    }
}

async fn handle(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    let raw_query = request.uri().query().unwrap_or_default().to_string();
    let (latency, unavailable) = {
        let mut store = shared.lock();
        store.log.push(RecordedRequest {
            method: method.to_string(),
            path: path.clone(),
            query: raw_query.clone(),
        });
        (store.latency, store.unavailable)
    };
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    if unavailable {
        return ApiError::new(
            503,
            "ServiceUnavailable",
            "the server is currently unable to handle the request",
        )
        .into_response();
    }
    let (form, content_type) = {
        let headers = request.headers();
        let text =
            |name| headers.get(name).and_then(|value| value.to_str().ok()).unwrap_or_default().to_string();
        let form = if text(header::ACCEPT).contains("as=PartialObjectMetadata") {
            Form::Metadata
        } else {
            Form::Full
        };
        (form, text(header::CONTENT_TYPE))
    };
    let body = match axum::body::to_bytes(request.into_body(), MAX_BODY_BYTES).await {
        Ok(body) => body,
        Err(error) => return ApiError::bad_request(format!("reading the body: {error}")).into_response(),
    };
    let query = Query::parse(&raw_query);
    let call = Call {
        shared: &shared,
        method: &method,
        query: &query,
        form,
        content_type: &content_type,
        body: &body,
    };
    match call.dispatch(&path).await {
        Ok(response) => response,
        Err(error) => error.into_response(),
    }
}

struct Call<'a> {
    shared: &'a Arc<Shared>,
    method: &'a Method,
    query: &'a Query,
    form: Form,
    content_type: &'a str,
    body: &'a Bytes,
}

impl Call<'_> {
    async fn dispatch(&self, path: &str) -> Result<Response, ApiError> {
        let route = route(&self.shared.lock(), path)?;
        let ok = |body: Value| Ok(json_response(StatusCode::OK, &body));
        match (route, self.method.clone()) {
            (Route::Version, Method::GET) => ok(version_info()),
            (Route::CoreVersions, Method::GET) => ok(json!({
                "kind": "APIVersions",
                "versions": ["v1"],
                "serverAddressByClientCIDRs": [
                    {"clientCIDR": "0.0.0.0/0", "serverAddress": self.shared.addr.to_string()}
                ],
            })),
            (Route::Groups, Method::GET) => ok(json!({
                "kind": "APIGroupList",
                "apiVersion": "v1",
                "groups": self.groups(),
            })),
            (Route::Group(name), Method::GET) => {
                let group = self.groups().into_iter().find(|group| group["name"] == name.as_str());
                let mut group = group.ok_or_else(ApiError::no_such_path)?;
                group["kind"] = json!("APIGroup");
                group["apiVersion"] = json!("v1");
                ok(group)
            }
            (Route::Resources { group, version }, Method::GET) => ok(self.resources(&group, &version)?),
            (Route::Collection { gvr, namespace }, Method::GET) => {
                let filter = Filter::parse(&self.shared.lock(), gvr, namespace, self.query)?;
                if self.query.flag("watch")? == Some(true) {
                    self.watch(filter)
                } else {
                    ok(self.list(&filter)?)
                }
            }
            (Route::Collection { gvr, namespace }, Method::POST) => {
                let mut obj = self.json_body()?;
                self.pin_namespace(&gvr, &mut obj, namespace.as_deref())?;
                let (stored, _) =
                    self.shared.lock().upsert(&self.shared.signals, &gvr, obj, Write::Create)?;
                Ok(json_response(StatusCode::CREATED, &self.form.render(&stored)))
            }
            (Route::Object { gvr, namespace, name }, Method::GET) => {
                let key = (namespace.unwrap_or_default(), name.clone());
                let store = self.shared.lock();
                let found = store.objects.get(&gvr).and_then(|objects| objects.get(&key));
                let found = found.ok_or_else(|| ApiError::not_found(&gvr, &name))?;
                ok(self.form.render(found))
            }
            (Route::Object { gvr, namespace, name }, Method::PUT) => {
                let mut obj = self.json_body()?;
                self.pin_namespace(&gvr, &mut obj, namespace.as_deref())?;
                if meta_str(&obj, "name") != Some(name.as_str()) {
                    return Err(ApiError::bad_request(
                        "the name of the object does not match the name on the URL",
                    ));
                }
                let (stored, _) =
                    self.shared.lock().upsert(&self.shared.signals, &gvr, obj, Write::Replace)?;
                ok(self.form.render(&stored))
            }
            (Route::Object { gvr, namespace, name }, Method::PATCH) => self.patch(&gvr, namespace, &name),
            (Route::Object { gvr, namespace, name }, Method::DELETE) => {
                let key = (namespace.unwrap_or_default(), name.clone());
                let mut store = self.shared.lock();
                let exists = store.objects.get(&gvr).is_some_and(|objects| objects.contains_key(&key));
                if !exists {
                    return Err(ApiError::not_found(&gvr, &name));
                }
                let change = store.commit(&self.shared.signals, &gvr, key, None);
                let mut details = status_details(&gvr, &name);
                if let Some(uid) = change.old.as_ref().and_then(|old| meta_str(old, "uid")) {
                    details["uid"] = json!(uid);
                }
                ok(json!({
                    "kind": "Status",
                    "apiVersion": "v1",
                    "metadata": {},
                    "status": "Success",
                    "details": details,
                }))
            }
            (_, method) => Err(ApiError::new(
                405,
                "MethodNotAllowed",
                format!("the server does not allow this method on the requested resource: {method}"),
            )),
        }
    }

    fn json_body(&self) -> Result<Value, ApiError> {
        serde_json::from_slice(self.body)
            .map_err(|error| ApiError::bad_request(format!("decoding the body: {error}")))
    }

    /// Sets the URL's namespace on a namespaced object, refusing a body that names another.
    fn pin_namespace(&self, gvr: &Gvr, obj: &mut Value, namespace: Option<&str>) -> Result<(), ApiError> {
        let namespaced = self.shared.lock().info(gvr)?.namespaced;
        if !namespaced {
            return Ok(());
        }
        let namespace =
            namespace.ok_or_else(|| ApiError::bad_request("a namespace is required for this resource"))?;
        let meta = metadata_mut(obj)?;
        match meta.get("namespace").and_then(Value::as_str) {
            Some(found) if !found.is_empty() && found != namespace => Err(ApiError::bad_request(
                "the namespace of the provided object does not match the namespace sent on the request",
            )),
            _ => {
                meta.insert("namespace".to_string(), json!(namespace));
                Ok(())
            }
        }
    }

    fn patch(&self, gvr: &Gvr, namespace: Option<String>, name: &str) -> Result<Response, ApiError> {
        let media_type = self.content_type.split(';').next().unwrap_or_default().trim();
        let server_side_apply = match media_type {
            "application/merge-patch+json" | "application/strategic-merge-patch+json" => false,
            "application/apply-patch+yaml" => true,
            other => {
                return Err(ApiError::new(
                    415,
                    "UnsupportedMediaType",
                    format!(
                        "the body of the request was in an unknown format - accepted media types include: application/merge-patch+json, application/strategic-merge-patch+json, application/apply-patch+yaml (got {other:?})"
                    ),
                ));
            }
        };
        let patch = self.json_body()?;
        let key = (namespace.clone().unwrap_or_default(), name.to_string());
        let mut store = self.shared.lock();
        let info = store.info(gvr)?.clone();
        let existing = store.objects.get(gvr).and_then(|objects| objects.get(&key)).cloned();
        let mut obj = match existing {
            Some(existing) => existing,
            None if server_side_apply => {
                json!({"apiVersion": gvr.api_version(), "kind": info.kind, "metadata": {}})
            }
            None => return Err(ApiError::not_found(gvr, name)),
        };
        merge_patch(&mut obj, &patch);
        let meta = metadata_mut(&mut obj)?;
        meta.insert("name".to_string(), json!(name));
        if let Some(namespace) = namespace {
            meta.insert("namespace".to_string(), json!(namespace));
        }
        let (stored, created) = store.upsert(&self.shared.signals, gvr, obj, Write::CreateOrReplace)?;
        let code = if created { StatusCode::CREATED } else { StatusCode::OK };
        Ok(json_response(code, &self.form.render(&stored)))
    }

    fn groups(&self) -> Vec<Value> {
        let store = self.shared.lock();
        let mut groups: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for gvr in store.resources.keys().filter(|gvr| !gvr.group.is_empty()) {
            let versions = groups.entry(gvr.group.as_str()).or_default();
            if !versions.contains(&gvr.version.as_str()) {
                versions.push(gvr.version.as_str());
            }
        }
        groups
            .into_iter()
            .map(|(name, versions)| {
                let versions: Vec<Value> = versions
                    .iter()
                    .map(|version| json!({"groupVersion": format!("{name}/{version}"), "version": version}))
                    .collect();
                json!({"name": name, "preferredVersion": versions[0].clone(), "versions": versions})
            })
            .collect()
    }

    fn resources(&self, group: &str, version: &str) -> Result<Value, ApiError> {
        let store = self.shared.lock();
        let resources: Vec<Value> = store
            .resources
            .iter()
            .filter(|(gvr, _)| gvr.group == group && gvr.version == version)
            .map(|(gvr, info)| {
                json!({
                    "name": gvr.plural,
                    "singularName": info.kind.to_lowercase(),
                    "namespaced": info.namespaced,
                    "kind": info.kind,
                    "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"],
                })
            })
            .collect();
        if resources.is_empty() {
            return Err(ApiError::no_such_path());
        }
        let group_version = Gvr::new(group, version, "").api_version();
        Ok(
            json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version, "resources": resources}),
        )
    }

    fn list(&self, filter: &Filter) -> Result<Value, ApiError> {
        let store = self.shared.lock();
        let info = store.info(&filter.gvr)?;
        let requested_rv = self.query.number("resourceVersion")?;
        match self.query.get("resourceVersionMatch") {
            None | Some("") => {}
            Some(_) if requested_rv.is_none() => {
                return Err(ApiError::bad_request(
                    "resourceVersionMatch is forbidden unless resourceVersion is provided",
                ));
            }
            Some("NotOlderThan") => {}
            Some("Exact") => {
                if let Some(rv) = requested_rv
                    && rv != 0
                    && rv <= store.compacted
                {
                    return Err(ApiError::expired(format!("too old resource version: {rv} ({})", store.rv)));
                }
            }
            Some(other) => {
                return Err(ApiError::bad_request(format!("unknown resourceVersionMatch {other:?}")));
            }
        }
        let limit = self.query.number("limit")?.unwrap_or(0) as usize;
        let (list_rv, after) = match self.query.get("continue").filter(|token| !token.is_empty()) {
            Some(token) => {
                let (rv, after) = decode_continue(token)?;
                if rv < store.compacted {
                    return Err(ApiError::expired(
                        "The provided continue parameter is too old to display a consistent list result. \
                         You can start a new list without the continue parameter.",
                    ));
                }
                (rv, Some(after))
            }
            None => (store.rv, None),
        };
        let mut matching: Vec<(&ObjectKey, &Value)> = store
            .objects
            .get(&filter.gvr)
            .into_iter()
            .flatten()
            .filter(|(key, _)| after.as_ref().is_none_or(|after| *key > after))
            .filter(|(key, obj)| filter.matches(&key.0, obj))
            .collect();
        let mut metadata = json!({"resourceVersion": list_rv.to_string()});
        if limit > 0 && matching.len() > limit {
            let remaining = matching.len() - limit;
            matching.truncate(limit);
            if let Some((last, _)) = matching.last() {
                metadata["continue"] = json!(encode_continue(list_rv, last));
                metadata["remainingItemCount"] = json!(remaining);
            }
        }
        let items: Vec<Value> = matching.into_iter().map(|(_, obj)| self.form.render(obj)).collect();
        let (api_version, kind) = match self.form {
            Form::Full => (filter.gvr.api_version(), format!("{}List", info.kind)),
            Form::Metadata => ("meta.k8s.io/v1".to_string(), "PartialObjectMetadataList".to_string()),
        };
        Ok(json!({"apiVersion": api_version, "kind": kind, "metadata": metadata, "items": items}))
    }

    fn watch(&self, filter: Filter) -> Result<Response, ApiError> {
        let bookmarks = self.query.flag("allowWatchBookmarks")? == Some(true);
        let send_initial = self.query.flag("sendInitialEvents")?;
        let rv_match = self.query.get("resourceVersionMatch").filter(|value| !value.is_empty());
        let timeout = self.query.number("timeoutSeconds")?.map_or(DEFAULT_WATCH_TIMEOUT, Duration::from_secs);
        if send_initial == Some(true) {
            if !bookmarks {
                return Err(ApiError::invalid(
                    "ListOptions",
                    "",
                    "allowWatchBookmarks: Required value: sendInitialEvents requires setting allowWatchBookmarks to true",
                ));
            }
            if rv_match != Some("NotOlderThan") {
                return Err(ApiError::invalid(
                    "ListOptions",
                    "",
                    "resourceVersionMatch: Forbidden: sendInitialEvents requires setting resourceVersionMatch to NotOlderThan",
                ));
            }
        } else if rv_match.is_some() {
            return Err(ApiError::invalid(
                "ListOptions",
                "",
                "resourceVersionMatch: Forbidden: resourceVersionMatch is forbidden for watch unless sendInitialEvents is provided",
            ));
        }
        let requested = self.query.get("resourceVersion").unwrap_or_default();
        let start = match (send_initial, requested) {
            // NotOlderThan any version: the current state is always new enough.
            (Some(true), _) => Start::Snapshot { end_marker: true },
            (Some(false), "" | "0") => Start::Now,
            (None, "" | "0") => Start::Snapshot { end_marker: false },
            (_, rv) => Start::From(
                rv.parse().map_err(|_| ApiError::bad_request(format!("invalid resourceVersion {rv:?}")))?,
            ),
        };

        let (plan, receiver) = {
            let store = self.shared.lock();
            let info = store.info(&filter.gvr)?;
            // Subscribing under the lock is what makes the replay below and the live events meet exactly.
            let receiver = self.shared.signals.subscribe();
            let mut plan = WatchPlan {
                initial: Vec::new(),
                expired: false,
                start_rv: store.rv,
                bookmarks,
                bookmark_interval: store.bookmark_interval,
                timeout,
                form: self.form,
                kind: info.kind.clone(),
                api_version: filter.gvr.api_version(),
                filter,
            };
            match start {
                Start::Snapshot { end_marker } => {
                    let objects = store.objects.get(&plan.filter.gvr).into_iter().flatten();
                    for ((namespace, _), obj) in objects {
                        if plan.filter.matches(namespace, obj) {
                            plan.initial.push(plan.event("ADDED", obj));
                        }
                    }
                    if end_marker {
                        plan.initial.push(plan.bookmark(store.rv, true));
                    }
                }
                Start::Now => {}
                Start::From(rv) if rv < store.compacted => {
                    let error =
                        ApiError::expired(format!("too old resource version: {rv} ({})", store.compacted));
                    plan.initial.push(event_line("ERROR", &error.status()));
                    plan.expired = true;
                }
                Start::From(rv) => {
                    for change in store.history.iter().filter(|change| change.rv > rv) {
                        if let Some((kind, obj)) = plan.filter.translate(change) {
                            plan.initial.push(plan.event(kind, obj));
                        }
                    }
                }
            }
            (plan, receiver)
        };

        let (sender, mut events) = mpsc::channel::<Bytes>(64);
        self.shared.open_watches.fetch_add(1, Ordering::SeqCst);
        tokio::spawn(pump(OpenWatch(self.shared.clone()), plan, receiver, sender));
        let stream = futures::stream::poll_fn(move |cx| {
            events.poll_recv(cx).map(|line| line.map(Ok::<_, Infallible>))
        });
        Ok((StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], Body::from_stream(stream))
            .into_response())
    }
}

enum Start {
    /// ADDED for every matching object first; with `end_marker`, then the initial-events-end BOOKMARK.
    Snapshot {
        end_marker: bool,
    },
    Now,
    From(u64),
}

struct WatchPlan {
    /// Lines to send before live events.
    initial: Vec<Bytes>,
    /// The stream ends after `initial` (it holds the 410 ERROR event).
    expired: bool,
    start_rv: u64,
    bookmarks: bool,
    bookmark_interval: Duration,
    timeout: Duration,
    form: Form,
    kind: String,
    api_version: String,
    filter: Filter,
}

impl WatchPlan {
    fn event(&self, kind: &str, obj: &Value) -> Bytes {
        event_line(kind, &self.form.render(obj))
    }

    fn bookmark(&self, rv: u64, initial_events_end: bool) -> Bytes {
        let mut metadata = json!({"resourceVersion": rv.to_string(), "creationTimestamp": null});
        if initial_events_end {
            metadata["annotations"] = json!({INITIAL_EVENTS_END: "true"});
        }
        let (api_version, kind) = match self.form {
            Form::Full => (self.api_version.as_str(), self.kind.as_str()),
            Form::Metadata => ("meta.k8s.io/v1", "PartialObjectMetadata"),
        };
        event_line("BOOKMARK", &json!({"kind": kind, "apiVersion": api_version, "metadata": metadata}))
    }
}

fn event_line(kind: &str, obj: &Value) -> Bytes {
    let mut line = json!({"type": kind, "object": obj}).to_string();
    line.push('\n');
    Bytes::from(line)
}

/// Counts a watch as open for as long as its pump task lives.
struct OpenWatch(Arc<Shared>);

impl Drop for OpenWatch {
    fn drop(&mut self) {
        self.0.open_watches.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Feeds one watch response: the planned initial lines, then live changes and bookmarks until the
/// timeout, a close or expiry signal, or the client going away.
async fn pump(
    open: OpenWatch,
    plan: WatchPlan,
    mut signals: broadcast::Receiver<Signal>,
    sender: mpsc::Sender<Bytes>,
) {
    let _open = open;
    for line in &plan.initial {
        if sender.send(line.clone()).await.is_err() {
            return;
        }
    }
    if plan.expired {
        return;
    }
    let deadline = tokio::time::sleep(plan.timeout);
    tokio::pin!(deadline);
    let mut ticker =
        tokio::time::interval_at(Instant::now() + plan.bookmark_interval, plan.bookmark_interval);
    // The newest change this watch has passed (delivered or filtered out): a bookmark must never
    // claim a version whose events are still on their way.
    let mut seen = plan.start_rv;
    loop {
        let line = tokio::select! {
            () = sender.closed() => return,
            signal = signals.recv() => match signal {
                Ok(Signal::Change(change)) => {
                    seen = change.rv;
                    match plan.filter.translate(&change) {
                        Some((kind, obj)) => plan.event(kind, obj),
                        None => continue,
                    }
                }
                Ok(Signal::Close) | Err(RecvError::Closed) => return,
                Ok(Signal::Expire) | Err(RecvError::Lagged(_)) => {
                    let error = ApiError::expired(format!("too old resource version: {seen}"));
                    let _ = sender.send(event_line("ERROR", &error.status())).await;
                    return;
                }
            },
            _ = ticker.tick(), if plan.bookmarks => plan.bookmark(seen, false),
            () = &mut deadline => {
                if plan.bookmarks {
                    let _ = sender.send(plan.bookmark(seen, false)).await;
                }
                return;
            }
        };
        if sender.send(line).await.is_err() {
            return;
        }
    }
}

/// What a list or watch selects: a resource, optionally one namespace, and label/field selectors.
struct Filter {
    gvr: Gvr,
    namespace: Option<String>,
    labels: Vec<LabelRequirement>,
    fields: Vec<FieldRequirement>,
}

impl Filter {
    fn parse(store: &Store, gvr: Gvr, namespace: Option<String>, query: &Query) -> Result<Filter, ApiError> {
        let info = store.info(&gvr)?;
        let labels = parse_label_selector(query.get("labelSelector").unwrap_or_default())
            .map_err(|error| ApiError::bad_request(format!("unable to parse requirement: {error}")))?;
        let fields = parse_field_selector(query.get("fieldSelector").unwrap_or_default(), info)?;
        Ok(Filter { gvr, namespace, labels, fields })
    }

    fn matches(&self, namespace: &str, obj: &Value) -> bool {
        if self.namespace.as_deref().is_some_and(|wanted| wanted != namespace) {
            return false;
        }
        let labels = obj.get("metadata").and_then(|meta| meta.get("labels")).and_then(Value::as_object);
        self.labels.iter().all(|requirement| requirement.matches(labels))
            && self.fields.iter().all(|requirement| requirement.matches(namespace, obj))
    }

    /// The event this watch sees for a change, the way the apiserver's watch cache does it: an
    /// object moving into the selection is ADDED, one moving out is DELETED.
    fn translate<'c>(&self, change: &'c Change) -> Option<(&'static str, &'c Value)> {
        if change.gvr != self.gvr {
            return None;
        }
        let selected =
            |obj: &Option<Value>| obj.as_ref().is_some_and(|obj| self.matches(&change.namespace, obj));
        match (selected(&change.old), selected(&change.new), &change.old, &change.new) {
            (false, true, _, Some(new)) => Some(("ADDED", new)),
            (true, true, _, Some(new)) => Some(("MODIFIED", new)),
            (true, false, Some(old), _) => Some(("DELETED", old)),
            _ => None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum LabelRequirement {
    Equals(String, String),
    NotEquals(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    NotExists(String),
}

impl LabelRequirement {
    fn matches(&self, labels: Option<&Map<String, Value>>) -> bool {
        let value = |key: &str| labels.and_then(|labels| labels.get(key)).and_then(Value::as_str);
        match self {
            LabelRequirement::Equals(key, wanted) => value(key) == Some(wanted.as_str()),
            // As in Kubernetes, objects without the label satisfy `!=` and `notin`.
            LabelRequirement::NotEquals(key, unwanted) => value(key) != Some(unwanted.as_str()),
            LabelRequirement::In(key, values) => {
                value(key).is_some_and(|found| values.iter().any(|v| v == found))
            }
            LabelRequirement::NotIn(key, values) => {
                value(key).is_none_or(|found| values.iter().all(|v| v != found))
            }
            LabelRequirement::Exists(key) => value(key).is_some(),
            LabelRequirement::NotExists(key) => value(key).is_none(),
        }
    }
}

/// Kubernetes label selector syntax: `a=b`, `a==b`, `a!=b`, `a`, `!a`, `a in (x,y)`, `a notin (x,y)`,
/// joined by commas.
fn parse_label_selector(selector: &str) -> Result<Vec<LabelRequirement>, String> {
    let mut terms = Vec::new();
    let (mut depth, mut start) = (0usize, 0usize);
    for (index, character) in selector.char_indices() {
        match character {
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                terms.push(&selector[start..index]);
                start = index + 1;
            }
            _ => {}
        }
    }
    terms.push(&selector[start..]);
    let valid_key = |key: &str| -> Result<String, String> {
        let key = key.trim();
        if key.is_empty() || key.contains(char::is_whitespace) {
            Err(format!("invalid label key {key:?} in {selector:?}"))
        } else {
            Ok(key.to_string())
        }
    };
    let mut requirements = Vec::new();
    for term in terms.into_iter().map(str::trim).filter(|term| !term.is_empty()) {
        let requirement = if let Some(key) = term.strip_prefix('!') {
            LabelRequirement::NotExists(valid_key(key)?)
        } else if let Some(open) = term.find('(') {
            let inner = term[open + 1..]
                .strip_suffix(')')
                .ok_or_else(|| format!("found {term:?}, expected a closing ')'"))?;
            let values: Vec<String> =
                inner.split(',').map(str::trim).filter(|value| !value.is_empty()).map(String::from).collect();
            let head: Vec<&str> = term[..open].split_whitespace().collect();
            match head.as_slice() {
                [key, "in"] => LabelRequirement::In(valid_key(key)?, values),
                [key, "notin"] => LabelRequirement::NotIn(valid_key(key)?, values),
                _ => return Err(format!("found {term:?}, expected: in, notin")),
            }
        } else if let Some((key, value)) = term.split_once("!=") {
            LabelRequirement::NotEquals(valid_key(key)?, value.trim().to_string())
        } else if let Some((key, value)) = term.split_once("==").or_else(|| term.split_once('=')) {
            LabelRequirement::Equals(valid_key(key)?, value.trim().to_string())
        } else {
            LabelRequirement::Exists(valid_key(term)?)
        };
        requirements.push(requirement);
    }
    Ok(requirements)
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct FieldRequirement {
    path: String,
    value: String,
    negated: bool,
}

impl FieldRequirement {
    fn matches(&self, namespace: &str, obj: &Value) -> bool {
        (field_value(namespace, obj, &self.path) == self.value) != self.negated
    }
}

fn parse_field_selector(selector: &str, info: &ResourceInfo) -> Result<Vec<FieldRequirement>, ApiError> {
    let mut requirements = Vec::new();
    for term in selector.split(',').map(str::trim).filter(|term| !term.is_empty()) {
        let (path, value, negated) = if let Some((path, value)) = term.split_once("!=") {
            (path, value, true)
        } else if let Some((path, value)) = term.split_once("==").or_else(|| term.split_once('=')) {
            (path, value, false)
        } else {
            return Err(ApiError::bad_request(format!(
                "invalid selector: {term:?}; can't understand {term:?}"
            )));
        };
        let path = path.trim();
        let supported = matches!(path, "metadata.name" | "metadata.namespace")
            || info.field_labels.iter().any(|label| label == path);
        if !supported {
            return Err(ApiError::bad_request(format!("field label not supported: {path}",)));
        }
        requirements.push(FieldRequirement {
            path: path.to_string(),
            value: value.trim().to_string(),
            negated,
        });
    }
    Ok(requirements)
}

/// A field as the apiserver's field set presents it: Go zero values for absent scalars.
fn field_value(namespace: &str, obj: &Value, path: &str) -> String {
    if path == "metadata.namespace" {
        return namespace.to_string();
    }
    let zero = match path {
        "spec.unschedulable" | "spec.hostNetwork" => "false",
        "status.replicas" | "status.successful" => "0",
        _ => "",
    };
    let found = path.split('.').try_fold(obj, |current, part| current.get(part));
    match found {
        Some(Value::String(text)) => text.clone(),
        Some(Value::Bool(flag)) => flag.to_string(),
        Some(Value::Number(number)) => number.to_string(),
        Some(Value::Null) | None => zero.to_string(),
        Some(other) => other.to_string(),
    }
}

/// RFC 7386 JSON merge patch.
fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = json!({});
    }
    if let Value::Object(target) = target {
        for (key, value) in patch {
            if value.is_null() {
                target.remove(key);
            } else {
                merge_patch(target.entry(key.clone()).or_insert(Value::Null), value);
            }
        }
    }
}

fn encode_continue(rv: u64, after: &ObjectKey) -> String {
    let token = json!({"rv": rv, "namespace": after.0, "name": after.1});
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(token.to_string())
}

fn decode_continue(token: &str) -> Result<(u64, ObjectKey), ApiError> {
    let invalid = || ApiError::bad_request(format!("invalid continue token {token:?}"));
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(token).map_err(|_| invalid())?;
    let value: Value = serde_json::from_slice(&bytes).map_err(|_| invalid())?;
    let rv = value.get("rv").and_then(Value::as_u64).ok_or_else(invalid)?;
    let text = |field: &str| value.get(field).and_then(Value::as_str).map(String::from).ok_or_else(invalid);
    Ok((rv, (text("namespace")?, text("name")?)))
}

/// Unique across every server in the process, so uids never repeat between tests.
fn next_serial() -> u64 {
    static SERIAL: AtomicU64 = AtomicU64::new(0);
    SERIAL.fetch_add(1, Ordering::Relaxed) + 1
}

fn meta_str<'v>(obj: &'v Value, field: &str) -> Option<&'v str> {
    obj.get("metadata")?.get(field)?.as_str()
}

fn metadata_mut(obj: &mut Value) -> Result<&mut Map<String, Value>, ApiError> {
    let map = obj.as_object_mut().ok_or_else(|| ApiError::bad_request("the body must be a JSON object"))?;
    map.entry("metadata")
        .or_insert_with(|| json!({}))
        .as_object_mut()
        .ok_or_else(|| ApiError::bad_request("metadata must be an object"))
}

fn set_resource_version(obj: &mut Value, rv: u64) {
    if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.insert("resourceVersion".to_string(), Value::String(rv.to_string()));
    }
}

fn version_info() -> Value {
    json!({
        "major": "1",
        "minor": "36",
        "emulationMajor": "1",
        "emulationMinor": "36",
        "minCompatibilityMajor": "1",
        "minCompatibilityMinor": "35",
        "gitVersion": GIT_VERSION,
        "gitCommit": "5c4d4ba1d3ee25d5e8a1b5f0a4e4b8d1c2f3a6b7",
        "gitTreeState": "clean",
        "buildDate": "2026-04-15T10:12:00Z",
        "goVersion": "go1.25.9",
        "compiler": "gc",
        "platform": "linux/amd64",
    })
}

/// The current UTC time as `2006-01-02T15:04:05Z`, without pulling a date crate into the harness.
fn rfc3339_now() -> String {
    let seconds = SystemTime::now().duration_since(UNIX_EPOCH).map(|elapsed| elapsed.as_secs()).unwrap_or(0);
    let (days, rest) = ((seconds / 86_400) as i64, seconds % 86_400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z", rest / 3600, rest % 3600 / 60, rest % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_selectors_follow_kubernetes_semantics() {
        let labels = json!({"team": "a", "tier": "web"});
        let labels = labels.as_object();
        let check = |selector: &str| {
            parse_label_selector(selector).unwrap().iter().all(|requirement| requirement.matches(labels))
        };
        assert!(check("team=a"));
        assert!(check("team==a,tier"));
        assert!(check("team in (a, b),tier notin (db)"));
        assert!(check("missing!=x"));
        assert!(check("!missing"));
        assert!(!check("team!=a"));
        assert!(!check("team notin (a)"));
        assert!(!check("missing"));
        assert!(check(""));
        assert!(parse_label_selector("team in a").is_err());
    }

    #[test]
    fn merge_patch_removes_nulls_and_merges_objects() {
        let mut target = json!({"metadata": {"labels": {"a": "1", "b": "2"}}, "spec": [1]});
        merge_patch(&mut target, &json!({"metadata": {"labels": {"a": null, "c": "3"}}, "spec": [2]}));
        assert_eq!(target, json!({"metadata": {"labels": {"b": "2", "c": "3"}}, "spec": [2]}));
    }

    #[test]
    fn timestamps_are_rfc3339() {
        let now = rfc3339_now();
        assert_eq!(now.len(), 20, "{now}");
        assert!(now.starts_with("20") && now.ends_with('Z'), "{now}");
    }

    #[test]
    fn continue_tokens_round_trip() {
        let key = ("ns".to_string(), "name".to_string());
        assert_eq!(decode_continue(&encode_continue(42, &key)).unwrap(), (42, key));
    }
}
