//! `pullguard audit`: every workload of a live cluster through the same core as the webhook,
//! one report. Read-only: it lists and gets, and never writes to the cluster.

use std::{
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use futures::{StreamExt, stream};
use k8s_openapi::api::{
    apps::v1::{DaemonSet, Deployment, ReplicaSet, StatefulSet},
    batch::v1::{CronJob, Job},
    core::v1::{Node, Pod, ReplicationController},
};
use kube::{Api, api::ListParams};
use pullguard_core::{
    checks::{NodeTargets, Placement},
    config::Config,
    nodes::node_facts,
    pod_credentials::PodCredentials,
    scheduling::NodeFacts,
    workload::{WorkloadKind, containers},
};
use serde::{Serialize, de::DeserializeOwned};
use serde_json::Value;
use tokio::time::Instant;

use super::{
    docker_config::load_keyring,
    error::CliError,
    report::{self, Labelled, Output},
};
use crate::{
    app::Engine,
    cluster::{self, PullSecretReader},
    inspect::{InspectOptions, PodContext},
};

#[derive(Debug, Clone, clap::Args)]
pub struct AuditArgs {
    /// Cluster to audit (default: the in-cluster service account, else $KUBECONFIG).
    #[arg(long, env = "PULLGUARD_KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// Only this namespace (default: all namespaces).
    #[arg(short = 'n', long)]
    pub namespace: Option<String>,
    #[arg(long, value_enum, default_value_t = Output::Text)]
    pub output: Output,
    /// Docker config JSON with node-level credentials.
    #[arg(long, env = "PULLGUARD_DOCKER_CONFIG")]
    pub docker_config: Option<PathBuf>,
    /// Workloads checked at the same time.
    #[arg(long, default_value_t = 8)]
    pub concurrency: usize,
}

struct Workload {
    label: String,
    kind: WorkloadKind,
    namespace: String,
    spec: k8s_openapi::api::core::v1::PodSpec,
}

const PAGE: u32 = 500;

pub async fn run(config: Config, args: AuditArgs) -> Result<i32, CliError> {
    let Some((client, _)) = cluster::connect(args.kubeconfig.as_deref()).await? else {
        return Err(CliError::Usage(
            "audit needs a cluster: give --kubeconfig, run it in a cluster, or set KUBECONFIG".into(),
        ));
    };
    let nodes: Vec<NodeFacts> =
        list_all::<Node>(Api::all(client.clone())).await?.iter().map(node_facts).collect();
    let mut workloads = Vec::new();
    collect::<Deployment>(&client, &args, WorkloadKind::Deployment, &mut workloads).await?;
    collect::<StatefulSet>(&client, &args, WorkloadKind::StatefulSet, &mut workloads).await?;
    collect::<DaemonSet>(&client, &args, WorkloadKind::DaemonSet, &mut workloads).await?;
    collect::<ReplicaSet>(&client, &args, WorkloadKind::ReplicaSet, &mut workloads).await?;
    collect::<ReplicationController>(&client, &args, WorkloadKind::ReplicationController, &mut workloads)
        .await?;
    collect::<Job>(&client, &args, WorkloadKind::Job, &mut workloads).await?;
    collect::<CronJob>(&client, &args, WorkloadKind::CronJob, &mut workloads).await?;
    collect::<Pod>(&client, &args, WorkloadKind::Pod, &mut workloads).await?;
    workloads.retain(|workload| !config.is_exempt_namespace(&workload.namespace));

    let keyring = load_keyring(args.docker_config.as_ref())?;
    let Engine { config, inspector, .. } = Engine::new(config, keyring)?;
    let reader = PullSecretReader::new(client);
    let done = Arc::new(AtomicUsize::new(0));
    let progress = spawn_progress(done.clone(), workloads.len());
    let inspections: Vec<Labelled> = stream::iter(workloads)
        .map(|workload| {
            let (inspector, reader, nodes, config, done) = (&inspector, &reader, &nodes, &config, &done);
            async move {
                let is_pod = workload.kind == WorkloadKind::Pod;
                let credentials =
                    PodCredentials::read(reader, &workload.namespace, &workload.spec, is_pod).await;
                let targets = NodeTargets::for_pod(&workload.spec, nodes, &config.node_pool_labels);
                let context = PodContext {
                    targets: Some(&targets),
                    credentials: &credentials,
                    placement: Placement::of(workload.kind == WorkloadKind::DaemonSet, &workload.spec),
                };
                let options = InspectOptions {
                    offline: false,
                    deadline: Instant::now() + config.deadline.0,
                    image_reports: true,
                };
                let inspection = inspector.inspect(&containers(&workload.spec), context, options).await;
                done.fetch_add(1, Ordering::Relaxed);
                Labelled { workload: Some(workload.label), file: None, image_lines: Vec::new(), inspection }
            }
        })
        .buffered(args.concurrency.max(1))
        .collect()
        .await;
    progress.abort();
    report::print(&inspections, args.output)
}

/// A progress line on stderr every two seconds, once the run takes longer than a moment.
fn spawn_progress(done: Arc<AtomicUsize>, total: usize) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let started = Instant::now();
        tokio::time::sleep(Duration::from_secs(1)).await;
        loop {
            eprintln!(
                "pullguard audit: {}/{total} workloads checked ({}s)",
                done.load(Ordering::Relaxed),
                started.elapsed().as_secs()
            );
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    })
}

/// Lists one kind and keeps the objects nothing else owns: a ReplicaSet of a Deployment, a Job
/// of a CronJob or a Pod of any controller is checked at its template, as the webhook does.
async fn collect<K>(
    client: &kube::Client,
    args: &AuditArgs,
    kind: WorkloadKind,
    into: &mut Vec<Workload>,
) -> Result<(), CliError>
where
    K: kube::Resource<Scope = kube::core::NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + Serialize
        + std::fmt::Debug,
    K::DynamicType: Default,
{
    let api: Api<K> = match &args.namespace {
        Some(namespace) => Api::namespaced(client.clone(), namespace),
        None => Api::all(client.clone()),
    };
    for object in list_all(api).await? {
        let meta = object.meta();
        if meta.owner_references.iter().flatten().any(|owner| owner.controller == Some(true)) {
            continue;
        }
        let namespace = meta.namespace.clone().unwrap_or_default();
        let label = format!("{}/{namespace}/{}", kind.name(), meta.name.clone().unwrap_or_default());
        let value: Value = serde_json::to_value(&object)
            .map_err(|error| CliError::Usage(format!("{label}: cannot read the object: {error}")))?;
        match kind.pod_spec(&value) {
            Ok(spec) => into.push(Workload { label, kind, namespace, spec }),
            Err(error) => eprintln!("pullguard audit: skipping {label}: {error}"),
        }
    }
    Ok(())
}

async fn list_all<K>(api: Api<K>) -> Result<Vec<K>, CliError>
where
    K: Clone + DeserializeOwned + std::fmt::Debug,
{
    let mut items = Vec::new();
    let mut params = ListParams::default().limit(PAGE);
    loop {
        let page =
            api.list(&params).await.map_err(|error| CliError::Usage(format!("cannot list: {error}")))?;
        items.extend(page.items);
        match page.metadata.continue_.filter(|token| !token.is_empty()) {
            Some(token) => params = ListParams::default().limit(PAGE).continue_token(&token),
            None => return Ok(items),
        }
    }
}
