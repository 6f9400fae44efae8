//! The fault proxy in front of the real control plane: it forwards what kube's client and
//! reflectors send (lists, watches, writes), counts it, and injects the faults the suites need.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

use std::time::Duration;

use futures::StreamExt as _;
use k8s_openapi::api::core::v1::{Namespace, Node};
use kube::{
    Api, ResourceExt,
    api::{DeleteParams, Patch, PatchParams, PostParams},
    runtime::{
        reflector::{self, ObjectRef, Store},
        watcher,
    },
};
use pullguard_tests::{
    api_faults::{ApiFaults, Fault},
    control_plane::{ControlPlane, Options, random_suffix},
    shared::eventually,
};
use serde_json::json;
use tokio::time::timeout;

const LIMIT: Duration = Duration::from_secs(20);

async fn control_plane() -> Option<ControlPlane> {
    ControlPlane::shared(Options { controller_manager: false }).await.unwrap()
}

fn node(name: &str, pool: &str) -> Node {
    serde_json::from_value(json!({"apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": {"pool": pool}}}))
    .unwrap()
}

fn node_label(store: &Store<Node>, name: &str) -> Option<String> {
    store.get(&ObjectRef::new(name)).and_then(|node| node.labels().get("pool").cloned())
}

#[tokio::test]
async fn reflectors_run_through_the_proxy_and_survive_dropped_watches() {
    let Some(control_plane) = control_plane().await else { return };
    let proxy = ApiFaults::start(&control_plane).await.unwrap();
    let nodes: Api<Node> = Api::all(proxy.client().unwrap());
    let name = format!("smoke-{}", random_suffix());
    let (store, writer) = reflector::store();
    let stream = reflector::reflector(writer, watcher(nodes.clone(), watcher::Config::default()));
    let task = tokio::spawn(stream.for_each(|_| futures::future::ready(())));
    timeout(LIMIT, store.wait_until_ready()).await.unwrap().unwrap();

    nodes.create(&PostParams::default(), &node(&name, "a")).await.unwrap();
    eventually("the new node", LIMIT, || {
        std::future::ready(node_label(&store, &name).as_deref() == Some("a"))
    })
    .await
    .unwrap();
    let watches_before = proxy.requests().iter().filter(|request| request.is_watch()).count();
    assert!(watches_before >= 1, "the reflector watches: {:?}", proxy.requests());

    // A dropped watch is re-established, and nothing is missed across the gap.
    proxy.drop_watches();
    let patch = Patch::Merge(json!({"metadata": {"labels": {"pool": "b"}}}));
    nodes.patch(&name, &PatchParams::default(), &patch).await.unwrap();
    eventually("the relabel after the drop", LIMIT, || {
        std::future::ready(node_label(&store, &name).as_deref() == Some("b"))
    })
    .await
    .unwrap();
    let watches_after = proxy.requests().iter().filter(|request| request.is_watch()).count();
    assert!(watches_after > watches_before, "a new watch after the drop");

    nodes.delete(&name, &DeleteParams::default()).await.unwrap();
    eventually("the deletion", LIMIT, || std::future::ready(store.get(&ObjectRef::new(&name)).is_none()))
        .await
        .unwrap();
    assert!(proxy.request_count("/api/v1/nodes") >= 4);
    task.abort();
}

#[tokio::test]
async fn unavailable_stalled_and_slow() {
    let Some(control_plane) = control_plane().await else { return };
    let proxy = ApiFaults::start(&control_plane).await.unwrap();
    let namespaces: Api<Namespace> = Api::all(proxy.client_without_retries().unwrap());
    let retrying: Api<Namespace> = Api::all(proxy.client().unwrap());

    proxy.set_fault(Fault::Unavailable);
    match timeout(LIMIT, namespaces.get("default")).await.expect("an unavailable API answers at once") {
        Err(kube::Error::Api(status)) => {
            assert_eq!((status.code, status.reason.as_str()), (503, "ServiceUnavailable"))
        }
        other => panic!("expected a 503, got {other:?}"),
    }
    // kube's default client retries a 503 until the API is back.
    let pending = tokio::spawn(async move { retrying.get("default").await });
    eventually("the client retrying", LIMIT, || {
        std::future::ready(proxy.request_count("/api/v1/namespaces/default") >= 3)
    })
    .await
    .unwrap();
    proxy.set_fault(Fault::None);
    timeout(LIMIT, pending).await.expect("the retry succeeds").unwrap().unwrap();

    proxy.set_fault(Fault::Stall);
    assert!(
        timeout(Duration::from_millis(300), namespaces.get("default")).await.is_err(),
        "a stalled API does not answer"
    );
    let pending = tokio::spawn({
        let namespaces = namespaces.clone();
        async move { namespaces.get("default").await }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    proxy.set_fault(Fault::None);
    let released = timeout(LIMIT, pending).await.expect("released").unwrap().unwrap();
    assert_eq!(released.name_any(), "default", "a stalled request goes on once the stall ends");

    proxy.set_fault(Fault::Latency(Duration::from_millis(300)));
    let started = tokio::time::Instant::now();
    namespaces.get("default").await.unwrap();
    assert!(started.elapsed() >= Duration::from_millis(300));

    proxy.clear_requests();
    proxy.set_fault(Fault::None);
    namespaces.get("default").await.unwrap();
    assert_eq!(proxy.request_count("/api/v1/namespaces/default"), 1);

    // The fault stays in the proxy: the API server itself answers all along.
    let ca = std::fs::read_to_string(&control_plane.ca_path).unwrap();
    let direct = pullguard_tests::registry::http_client(Some(&ca)).unwrap();
    let ready =
        direct.get(control_plane.url_for("/readyz")).bearer_auth(control_plane.token()).send().await.unwrap();
    assert_eq!(ready.text().await.unwrap(), "ok");
}
