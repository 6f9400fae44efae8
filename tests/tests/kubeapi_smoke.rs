#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The fake Kubernetes API server driven by the real `kube` client and reflectors: if these pass, code
//! under test that talks to a cluster through `kube` can be pointed at it unmodified.

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::{
    ByteString,
    api::core::v1::{Namespace, Node, Secret},
    apimachinery::pkg::apis::meta::v1::ObjectMeta,
};
use kube::{
    Api, Client, ResourceExt,
    api::{DeleteParams, ListParams, Patch, PatchParams, WatchEvent, WatchParams},
    config::{KubeConfigOptions, Kubeconfig},
    runtime::{
        reflector::{self, ObjectRef, Store},
        watcher,
    },
};
use pullguard_tests::kubeapi::FakeApiServer;
use tokio::{task::JoinHandle, time::timeout};

/// Every wait in this file is bounded by this; the server is in-process, so real waits are milliseconds.
const LIMIT: Duration = Duration::from_secs(3);

fn meta(namespace: Option<&str>, name: &str, labels: &[(&str, &str)]) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_string()),
        namespace: namespace.map(String::from),
        labels: (!labels.is_empty())
            .then(|| labels.iter().map(|(key, value)| (key.to_string(), value.to_string())).collect()),
        ..ObjectMeta::default()
    }
}

fn namespace(name: &str, labels: &[(&str, &str)]) -> Namespace {
    Namespace { metadata: meta(None, name, labels), ..Namespace::default() }
}

fn node(name: &str, labels: &[(&str, &str)]) -> Node {
    Node { metadata: meta(None, name, labels), ..Node::default() }
}

fn secret(namespace: &str, name: &str, type_: &str) -> Secret {
    Secret {
        metadata: meta(Some(namespace), name, &[]),
        type_: Some(type_.to_string()),
        data: Some(BTreeMap::from([("k".to_string(), ByteString(b"v".to_vec()))])),
        ..Secret::default()
    }
}

fn names<K: ResourceExt>(objects: impl IntoIterator<Item = K>) -> Vec<String> {
    objects.into_iter().map(|obj| obj.name_any()).collect()
}

fn api_code(error: kube::Error) -> (u16, String) {
    match error {
        kube::Error::Api(status) => (status.code, status.reason),
        other => panic!("expected an API error, got {other:?}"),
    }
}

async fn eventually(what: &str, condition: impl Fn() -> bool) {
    let waited = timeout(LIMIT, async {
        while !condition() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(waited.is_ok(), "timed out waiting for {what}");
}

async fn node_reflector(client: Client, config: watcher::Config) -> (Store<Node>, JoinHandle<()>) {
    let (store, writer) = reflector::store();
    let stream = reflector::reflector(writer, watcher(Api::<Node>::all(client), config));
    let task = tokio::spawn(stream.for_each(|_| futures::future::ready(())));
    timeout(LIMIT, store.wait_until_ready()).await.expect("reflector ready in time").unwrap();
    (store, task)
}

fn node_label(store: &Store<Node>, name: &str, key: &str) -> Option<String> {
    store.get(&ObjectRef::new(name)).and_then(|node| node.labels().get(key).cloned())
}

fn node_requests(server: &FakeApiServer) -> Vec<pullguard_tests::kubeapi::RecordedRequest> {
    server.requests().into_iter().filter(|request| request.path == "/api/v1/nodes").collect()
}

#[tokio::test]
async fn namespaces_get_and_list_through_a_kubeconfig() {
    let server = FakeApiServer::start().await.unwrap();
    server.apply(&namespace("apps", &[("pullguard.io/mode", "enforce"), ("team", "a")])).unwrap();
    server.apply(&namespace("web", &[("pullguard.io/mode", "warn"), ("team", "b")])).unwrap();
    server.apply(&namespace("plain", &[])).unwrap();

    let dir = tempfile::tempdir().unwrap();
    let path = server.write_kubeconfig(dir.path()).unwrap();
    let kubeconfig = Kubeconfig::read_from(&path).unwrap();
    let config =
        kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await.unwrap();
    assert_eq!(config.cluster_url.to_string(), format!("{}/", server.url()));
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = Client::try_from(config).unwrap();

    let version = timeout(LIMIT, client.apiserver_version()).await.unwrap().unwrap();
    assert_eq!(version.git_version, "v1.36.2");

    let api: Api<Namespace> = Api::all(client);
    let apps = timeout(LIMIT, api.get("apps")).await.unwrap().unwrap();
    assert_eq!(apps.labels().get("pullguard.io/mode").map(String::as_str), Some("enforce"));
    assert!(apps.metadata.uid.is_some() && apps.metadata.creation_timestamp.is_some());
    assert!(apps.resource_version().is_some());
    let missing = timeout(LIMIT, api.get("nope")).await.unwrap().unwrap_err();
    assert_eq!(api_code(missing), (404, "NotFound".to_string()));

    let list = |selector: &'static str| {
        let api = api.clone();
        async move { timeout(LIMIT, api.list(&ListParams::default().labels(selector))).await.unwrap().unwrap() }
    };
    let moded = list("pullguard.io/mode").await;
    assert_eq!(names(moded.items.clone()), ["apps", "web"]);
    assert_eq!(moded.types.kind, "NamespaceList");
    assert_eq!(moded.metadata.resource_version, Some(server.resource_version().to_string()));
    assert_eq!(names(list("team=a").await), ["apps"]);
    assert_eq!(names(list("team!=a").await), ["plain", "web"]);
    assert_eq!(names(list("!team").await), ["plain"]);
    assert_eq!(names(list("team in (a,b),pullguard.io/mode notin (warn)").await), ["apps"]);
    assert_eq!(server.request_count("/api/v1/namespaces"), 7);
}

#[tokio::test]
async fn secrets_list_by_type() {
    let server = FakeApiServer::start().await.unwrap();
    server.apply(&secret("a", "pull", "kubernetes.io/dockerconfigjson")).unwrap();
    server.apply(&secret("a", "opaque", "Opaque")).unwrap();
    server.apply(&secret("b", "pull2", "kubernetes.io/dockerconfigjson")).unwrap();
    let client = server.client().unwrap();

    let by_type = ListParams::default().fields("type=kubernetes.io/dockerconfigjson");
    let all = timeout(LIMIT, Api::<Secret>::all(client.clone()).list(&by_type)).await.unwrap().unwrap();
    assert_eq!(names(all.items.clone()), ["pull", "pull2"]);
    assert_eq!(all.items[0].data.as_ref().unwrap()["k"], ByteString(b"v".to_vec()));
    let in_a = Api::<Secret>::namespaced(client.clone(), "a");
    assert_eq!(names(timeout(LIMIT, in_a.list(&by_type)).await.unwrap().unwrap()), ["pull"]);
    let others = ListParams::default().fields("type!=kubernetes.io/dockerconfigjson,metadata.namespace=a");
    assert_eq!(names(timeout(LIMIT, in_a.list(&others)).await.unwrap().unwrap()), ["opaque"]);

    // A real apiserver refuses field selectors it does not index, so this one must too.
    let unsupported = ListParams::default().fields("data.k=v");
    let error = timeout(LIMIT, in_a.list(&unsupported)).await.unwrap().unwrap_err();
    assert_eq!(api_code(error).0, 400);
}

#[tokio::test]
async fn node_reflector_follows_adds_changes_and_deletes() {
    let server = FakeApiServer::start().await.unwrap();
    server.apply(&node("n1", &[])).unwrap();
    let client = server.client().unwrap();
    let (store, task) = node_reflector(client.clone(), watcher::Config::default()).await;
    assert_eq!(names(store.state().iter().map(|node| (**node).clone())), ["n1"]);

    server.apply(&node("n2", &[("pool", "a")])).unwrap();
    eventually("n2 added", || node_label(&store, "n2", "pool").as_deref() == Some("a")).await;

    // Writes through the HTTP API, the way a controller would make them.
    let api: Api<Node> = Api::all(client);
    let patch = Patch::Merge(serde_json::json!({"metadata": {"labels": {"pool": "b"}}}));
    timeout(LIMIT, api.patch("n2", &PatchParams::default(), &patch)).await.unwrap().unwrap();
    eventually("n2 relabelled", || node_label(&store, "n2", "pool").as_deref() == Some("b")).await;
    timeout(LIMIT, api.delete("n2", &DeleteParams::default())).await.unwrap().unwrap();
    eventually("n2 deleted", || store.get(&ObjectRef::new("n2")).is_none()).await;

    // kube 5's default list semantic is MostRecent (a consistent read, no resourceVersion), in pages.
    let requests = node_requests(&server);
    let first = &requests[0];
    assert!(!first.is_watch() && first.param("resourceVersion").is_none(), "{first:?}");
    assert_eq!(first.param("limit").as_deref(), Some("500"));
    let watch = requests.iter().find(|request| request.is_watch()).unwrap();
    assert_eq!(watch.param("allowWatchBookmarks").as_deref(), Some("true"));
    task.abort();
}

#[tokio::test]
async fn node_reflector_with_streaming_lists() {
    let server = FakeApiServer::start().await.unwrap();
    server.apply(&node("n1", &[])).unwrap();
    let client = server.client().unwrap();
    let (store, task) = node_reflector(client, watcher::Config::default().streaming_lists()).await;
    assert!(store.get(&ObjectRef::new("n1")).is_some());

    server.apply(&node("n2", &[("pool", "a")])).unwrap();
    eventually("n2 added", || node_label(&store, "n2", "pool").as_deref() == Some("a")).await;
    server.apply(&node("n2", &[("pool", "b")])).unwrap();
    eventually("n2 relabelled", || node_label(&store, "n2", "pool").as_deref() == Some("b")).await;
    assert!(server.delete::<Node>(None, "n2"));
    eventually("n2 deleted", || store.get(&ObjectRef::new("n2")).is_none()).await;

    let requests = node_requests(&server);
    assert!(requests.iter().all(|request| request.is_watch()), "streaming lists never list: {requests:?}");
    assert_eq!(requests[0].param("sendInitialEvents").as_deref(), Some("true"));
    assert_eq!(requests[0].param("resourceVersionMatch").as_deref(), Some("NotOlderThan"));
    task.abort();
}

// The shape the webhook uses: a reflector over namespaces selected by a label. Gaining or losing the
// label must look like an add or a delete to it.
#[tokio::test]
async fn label_selected_reflector_sees_objects_enter_and_leave() {
    let server = FakeApiServer::start().await.unwrap();
    server.apply(&namespace("apps", &[("pullguard.io/mode", "warn")])).unwrap();
    server.apply(&namespace("plain", &[])).unwrap();
    let (store, writer) = reflector::store();
    let api: Api<Namespace> = Api::all(server.client().unwrap());
    let stream =
        reflector::reflector(writer, watcher(api, watcher::Config::default().labels("pullguard.io/mode")));
    let task = tokio::spawn(stream.for_each(|_| futures::future::ready(())));
    timeout(LIMIT, store.wait_until_ready()).await.unwrap().unwrap();
    let present = |name: &str| store.get(&ObjectRef::<Namespace>::new(name)).is_some();
    assert!(present("apps") && !present("plain"));

    server.apply(&namespace("plain", &[("pullguard.io/mode", "enforce")])).unwrap();
    eventually("plain selected", || present("plain")).await;
    server.apply(&namespace("apps", &[])).unwrap();
    eventually("apps unselected", || !present("apps")).await;
    task.abort();
}

#[tokio::test]
async fn raw_watches_replay_expire_bookmark_and_time_out() {
    let server = FakeApiServer::start().await.unwrap();
    server.set_bookmark_interval(Duration::from_millis(100));
    server.apply(&node("n1", &[])).unwrap();
    let old = server.resource_version();
    server.apply(&node("n2", &[])).unwrap();
    let api: Api<Node> = Api::all(server.client().unwrap());

    // Still in history: the change after `old` is replayed.
    let mut replay =
        timeout(LIMIT, api.watch(&WatchParams::default(), &old.to_string())).await.unwrap().unwrap().boxed();
    match timeout(LIMIT, replay.try_next()).await.unwrap().unwrap() {
        Some(WatchEvent::Added(node)) => assert_eq!(node.name_any(), "n2"),
        other => panic!("expected n2 added, got {other:?}"),
    }
    drop(replay);

    server.compact();
    let mut expired =
        timeout(LIMIT, api.watch(&WatchParams::default(), &old.to_string())).await.unwrap().unwrap().boxed();
    match timeout(LIMIT, expired.try_next()).await.unwrap().unwrap() {
        Some(WatchEvent::Error(status)) => {
            assert_eq!((status.code, status.reason.as_str()), (410, "Expired"))
        }
        other => panic!("expected 410 Expired, got {other:?}"),
    }
    assert!(timeout(LIMIT, expired.try_next()).await.unwrap().unwrap().is_none());

    let initial = WatchParams::default().initial_events();
    let mut streaming = timeout(LIMIT, api.watch(&initial, "0")).await.unwrap().unwrap().boxed();
    let mut added = Vec::new();
    loop {
        match timeout(LIMIT, streaming.try_next()).await.unwrap().unwrap() {
            Some(WatchEvent::Added(node)) => added.push(node.name_any()),
            Some(WatchEvent::Bookmark(bookmark)) => {
                assert_eq!(bookmark.metadata.annotations["k8s.io/initial-events-end"], "true");
                assert_eq!(bookmark.metadata.resource_version, server.resource_version().to_string());
                break;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(added, ["n1", "n2"]);
    drop(streaming);

    let started = Instant::now();
    let now = server.resource_version().to_string();
    let mut live =
        timeout(LIMIT, api.watch(&WatchParams::default().timeout(1), &now)).await.unwrap().unwrap().boxed();
    server.apply(&node("n3", &[])).unwrap();
    let (mut events, mut bookmarks) = (Vec::new(), 0);
    while let Some(event) = timeout(LIMIT, live.try_next()).await.unwrap().unwrap() {
        match event {
            WatchEvent::Bookmark(_) => bookmarks += 1,
            WatchEvent::Added(node) => events.push(node.name_any()),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(events, ["n3"]);
    assert!(bookmarks > 0);
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(900) && elapsed < LIMIT,
        "timeoutSeconds=1 ended after {elapsed:?}"
    );
}

// Single-threaded on purpose: between closing the watch and compacting, the watcher cannot run, so
// it can only resume from a resourceVersion the server no longer has.
#[tokio::test(flavor = "current_thread")]
async fn reflector_relists_after_its_version_expires() {
    let server = FakeApiServer::start().await.unwrap();
    server.apply(&node("old", &[])).unwrap();
    let (store, task) = node_reflector(server.client().unwrap(), watcher::Config::default()).await;
    eventually("the watch is open", || server.open_watches() == 1).await;

    server.close_watches();
    server.apply(&node("new", &[])).unwrap();
    assert!(server.delete::<Node>(None, "old"));
    server.compact();

    eventually("the reflector caught up", || {
        store.get(&ObjectRef::new("new")).is_some() && store.get(&ObjectRef::new("old")).is_none()
    })
    .await;
    let lists = node_requests(&server).into_iter().filter(|request| !request.is_watch()).count();
    assert_eq!(lists, 2, "one initial list, one after 410");
    task.abort();
}

#[tokio::test]
async fn unavailability_and_latency() {
    let server = FakeApiServer::start().await.unwrap();
    server.apply(&namespace("apps", &[])).unwrap();
    let mut config = kube::Config::new(server.url().parse().unwrap());
    // kube retries 429/503/504 by default; without that the 503 itself is visible.
    config.default_retry = false;
    let _ = rustls::crypto::ring::default_provider().install_default();
    let no_retry: Api<Namespace> = Api::all(Client::try_from(config).unwrap());
    let retrying: Api<Namespace> = Api::all(server.client().unwrap());

    server.set_unavailable(true);
    let error = timeout(LIMIT, no_retry.get("apps")).await.unwrap().unwrap_err();
    assert_eq!(api_code(error), (503, "ServiceUnavailable".to_string()));
    let pending = tokio::spawn(async move { retrying.get("apps").await });
    eventually("the client retrying", || server.request_count("/api/v1/namespaces/apps") >= 3).await;
    server.set_unavailable(false);
    timeout(LIMIT, pending).await.unwrap().unwrap().unwrap();

    server.clear_requests();
    server.set_latency(Duration::from_millis(200));
    let started = Instant::now();
    timeout(LIMIT, no_retry.get("apps")).await.unwrap().unwrap();
    assert!(started.elapsed() >= Duration::from_millis(200));
    assert_eq!(server.request_count("/api/v1/namespaces/apps"), 1);
}
