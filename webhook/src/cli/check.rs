//! `pullguard check`: images or manifests in, a report out, exit 0/1/2.

use std::path::PathBuf;

use futures::future::join_all;
use k8s_openapi::api::core::v1::{Node, PodSpec};
use pullguard_core::{
    checks::{NodeTargets, Placement},
    config::Config,
    nodes::node_facts,
    platform::Platform,
    pod_credentials::PodCredentials,
    scheduling::NodeFacts,
    workload::{ContainerImage, ContainerKind, WorkloadKind},
};
use tokio::time::Instant;

use super::{
    docker_config::load_keyring,
    error::CliError,
    manifests,
    report::{self, Labelled, Output},
};
use crate::{
    app::Engine,
    cluster::{self, PullSecretReader},
    inspect::{InspectOptions, PodContext},
};

#[derive(Debug, Clone, clap::Args)]
pub struct CheckArgs {
    /// Image reference to check (repeatable).
    #[arg(long = "image")]
    pub images: Vec<String>,
    /// Manifest file with workloads (YAML or JSON, multi-document, `List`); `-` reads stdin. Repeatable.
    #[arg(short = 'f', long = "file")]
    pub files: Vec<PathBuf>,
    /// Parse and run the static checks only; contact no registry.
    #[arg(long)]
    pub offline: bool,
    #[arg(long, value_enum, default_value_t = Output::Text)]
    pub output: Output,
    /// Check platforms against these node platforms (os/arch[/variant], repeatable: several stand
    /// for a mixed pool). Without it and without --kubeconfig, platforms are not checked.
    #[arg(long = "platform", conflicts_with = "kubeconfig")]
    pub platforms: Vec<Platform>,
    /// Read the live nodes of this cluster for the platform checks.
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// Secret manifest (YAML or JSON) of a pull secret the images may use (repeatable).
    #[arg(long = "pull-secret")]
    pub pull_secrets: Vec<PathBuf>,
    /// Docker config JSON with registry credentials (default: $DOCKER_CONFIG/config.json or ~/.docker/config.json).
    #[arg(long, env = "PULLGUARD_DOCKER_CONFIG")]
    pub docker_config: Option<PathBuf>,
}

struct Target {
    workload: Option<String>,
    /// `None` for `--image`.
    kind: Option<WorkloadKind>,
    namespace: Option<String>,
    file: Option<String>,
    image_lines: Vec<(String, usize)>,
    spec: PodSpec,
    containers: Vec<ContainerImage>,
}

/// Where platforms are compared: given platforms, the live nodes, or nowhere.
enum Nodes {
    NotChecked,
    Platforms(NodeTargets),
    Live(Vec<NodeFacts>),
}

impl Nodes {
    async fn load(args: &CheckArgs, client: Option<kube::Client>) -> Result<Nodes, CliError> {
        if !args.platforms.is_empty() {
            return Ok(Nodes::Platforms(NodeTargets::from_platforms(&args.platforms)));
        }
        let (Some(path), Some(client)) = (&args.kubeconfig, client) else { return Ok(Nodes::NotChecked) };
        let nodes = kube::Api::<Node>::all(client).list(&Default::default()).await.map_err(|error| {
            CliError::Usage(format!("cannot list nodes with {}: {error}", path.display()))
        })?;
        Ok(Nodes::Live(nodes.items.iter().map(node_facts).collect()))
    }

    fn targets(&self, target: &Target, pool_labels: &[String]) -> Option<NodeTargets> {
        match self {
            Nodes::NotChecked => None,
            Nodes::Platforms(targets) => Some(targets.clone()),
            Nodes::Live(nodes) => Some(NodeTargets::for_pod(&target.spec, nodes, pool_labels)),
        }
    }
}

pub async fn run(config: Config, args: CheckArgs) -> Result<i32, CliError> {
    if args.images.is_empty() && args.files.is_empty() {
        return Err(CliError::Usage("nothing to check: give --image REF or -f FILE".into()));
    }
    let mut targets: Vec<Target> = Vec::new();
    if !args.images.is_empty() {
        let containers =
            args.images.iter().map(|image| ContainerImage::new("-", image, ContainerKind::App)).collect();
        targets.push(Target {
            workload: None,
            kind: None,
            namespace: None,
            file: None,
            image_lines: Vec::new(),
            spec: PodSpec::default(),
            containers,
        });
    }
    for path in &args.files {
        let (source_name, text) = manifests::read_source(path)?;
        for workload in manifests::workloads(&source_name, &text)? {
            targets.push(Target {
                workload: Some(workload.label),
                kind: Some(workload.kind),
                namespace: workload.namespace,
                file: Some(workload.file),
                image_lines: workload.image_lines,
                spec: workload.spec,
                containers: workload.containers,
            });
        }
    }
    let mut secrets = Vec::new();
    for path in &args.pull_secrets {
        let (source_name, text) = manifests::read_source(path)?;
        secrets.extend(manifests::pull_secrets(&source_name, &text)?);
    }
    let provided = secrets.iter().map(|(name, _)| name.clone()).collect();
    let given = Given { provided, credentials: PodCredentials::from_secrets(secrets) };
    let keyring = load_keyring(args.docker_config.as_ref())?;
    let Engine { config, inspector, .. } = Engine::new(config, keyring)?;
    let deadline = Instant::now() + config.deadline.0;
    let options = InspectOptions { offline: args.offline, deadline, image_reports: true };
    let client = match &args.kubeconfig {
        Some(path) => cluster::connect(Some(path)).await?.map(|(client, _)| client),
        None => None,
    };
    let nodes = Nodes::load(&args, client.clone()).await?;
    let reader = client.map(PullSecretReader::new);
    let pod_credentials: Vec<PodCredentials> =
        join_all(targets.iter().map(|target| credentials_for(target, &given, reader.as_ref()))).await;
    let node_targets: Vec<Option<NodeTargets>> =
        targets.iter().map(|target| nodes.targets(target, &config.node_pool_labels)).collect();
    let inspections = join_all(targets.iter().zip(&node_targets).zip(&pod_credentials).map(
        |((target, node_targets), credentials)| {
            let context = PodContext {
                targets: node_targets.as_ref(),
                credentials,
                placement: Placement::of(target.kind == Some(WorkloadKind::DaemonSet), &target.spec),
            };
            inspector.inspect(&target.containers, context, options)
        },
    ))
    .await;

    let labelled: Vec<Labelled> = targets
        .into_iter()
        .zip(inspections)
        .map(|(target, inspection)| Labelled {
            workload: target.workload,
            file: target.file,
            image_lines: target.image_lines,
            inspection,
        })
        .collect();
    report::print(&labelled, args.output)
}

/// The pull secrets given with `--pull-secret`, by name.
struct Given {
    provided: Vec<String>,
    credentials: PodCredentials,
}

/// A workload's pull credentials as the webhook would see them: with a cluster, its service
/// account and secrets read from it (plus any given with `--pull-secret`); without one, the given
/// secrets stand in for what the pods will have, and what `check` cannot know (a service
/// account's secrets, secrets the manifest names but were not given) leaves the credentials "not
/// verified" (PG200, info), never "missing".
async fn credentials_for(
    target: &Target,
    given: &Given,
    cluster: Option<&PullSecretReader>,
) -> PodCredentials {
    if let (Some(reader), Some(kind)) = (cluster, target.kind) {
        let namespace = target.namespace.as_deref().unwrap_or("default");
        let is_pod = kind == WorkloadKind::Pod;
        let mut credentials = PodCredentials::read(reader, namespace, &target.spec, is_pod).await;
        credentials.keyring.extend(given.credentials.keyring.clone());
        return credentials;
    }
    let mut credentials = given.credentials.clone();
    let unknown: Vec<&str> = target
        .spec
        .image_pull_secrets
        .iter()
        .flatten()
        .map(|reference| reference.name.as_str())
        .filter(|name| !name.is_empty() && !given.provided.iter().any(|provided| provided == name))
        .collect();
    if !unknown.is_empty() {
        credentials.unreadable = Some(format!(
            "the manifest names pull secret(s) {} that were not given with --pull-secret",
            unknown.join(", ")
        ));
    } else if given.provided.is_empty() {
        "the pods".clone_into(&mut credentials.origin);
        credentials.unreadable =
            Some("check was given neither a cluster (--kubeconfig) nor the secrets (--pull-secret)".into());
    }
    credentials
}
