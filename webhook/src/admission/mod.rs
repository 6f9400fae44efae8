//! AdmissionReview in, AdmissionReview out: decode, pick the pod spec of the kind, decide what
//! to check, run the core, and build the response from `AdmissionResponse::from(&request)` so
//! the uid is always the request's.

pub mod review;
pub mod timeout;

use std::{borrow::Cow, sync::Arc};

use k8s_openapi::api::core::v1::PodSpec;
use kube::core::{Status, admission::Operation};
use pullguard_core::{
    checks::{NodeTargets, Placement},
    config::{MODE_KEY, Mode},
    credentials::Keyring,
    finding::{Finding, Severity},
    namespaces::NamespaceMode,
    node_targets::TargetsMemo,
    pod_credentials::{PodCredentials, add_secret_hints},
    reference::ImageRef,
    verdict::audit_key,
    verdict::{self, Verdict},
    workload::{
        ContainerImage, ObjectMetadata, WorkloadKind, changed_containers, containers, pull_inputs_changed,
    },
};
use tokio::time::Instant;
use tracing::{info, warn};

pub use self::review::{ObjectJson, ReviewAnswer, ReviewError, ReviewRequest};
use crate::{
    cluster::ClusterState,
    inspect::{InspectOptions, Inspector, PodContext},
    metrics::{AdmissionLabels, FindingLabels, Metrics},
};

/// At most this long is spent reading pull secrets and service accounts for one admission.
const SECRET_READ_BUDGET: std::time::Duration = std::time::Duration::from_secs(2);

/// Why a request was allowed without any check; recorded in the audit annotations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skip {
    Operation,
    Kind,
    Subresource,
    ExemptNamespace,
    ControllerOwned,
    NoObject,
    NoImageChange,
}

impl Skip {
    fn label(self) -> &'static str {
        match self {
            Skip::Operation => "operation",
            Skip::Kind => "kind",
            Skip::Subresource => "subresource",
            Skip::ExemptNamespace => "exempt-namespace",
            Skip::ControllerOwned => "controller-owned",
            Skip::NoObject => "no-object",
            Skip::NoImageChange => "no-image-change",
        }
    }
}

/// What was decided for one review; the handler turns it into the response.
#[derive(Debug)]
pub enum Outcome {
    Skipped(Skip),
    Unreadable(String),
    Checked { mode: Mode, findings: Vec<Finding>, verdict: Verdict },
}

pub struct Admission {
    inspector: Arc<Inspector>,
    cluster: Option<ClusterState>,
    targets: TargetsMemo,
    metrics: Arc<Metrics>,
    /// (namespace, value) of invalid mode labels already logged and counted.
    invalid_labels_seen: std::sync::Mutex<std::collections::HashSet<(String, String)>>,
}

impl Admission {
    pub fn new(inspector: Arc<Inspector>, cluster: Option<ClusterState>, metrics: Arc<Metrics>) -> Admission {
        Admission {
            inspector,
            cluster,
            targets: TargetsMemo::default(),
            metrics,
            invalid_labels_seen: Default::default(),
        }
    }

    /// Answers one review, within `caller_timeout` (the API server's own wait) when it is
    /// known. Never fails: every problem past decoding becomes an allowed response with a
    /// message, by the fail-open rule.
    pub async fn review(
        &self,
        request: &ReviewRequest<'_>,
        caller_timeout: Option<std::time::Duration>,
    ) -> (ReviewAnswer, Outcome) {
        let mut outcome = self.evaluate(request, caller_timeout).await;
        let mut answer = ReviewAnswer::allow(&request.uid);
        let response = &mut answer.response;
        match &mut outcome {
            Outcome::Skipped(skip) => {
                response.audit_annotations.insert(audit_key::SKIPPED.into(), skip.label().into());
            }
            Outcome::Unreadable(reason) => {
                response.warnings.push(format!("pullguard could not check this object: {reason}"));
                response.audit_annotations.insert(audit_key::ERROR.into(), reason.clone());
            }
            Outcome::Checked { verdict, .. } => {
                response.allowed = verdict.allowed;
                if let Some(message) = &verdict.message {
                    response.status = Some(Status::failure(message, "Forbidden").with_code(403));
                }
                response.warnings.clone_from(&verdict.warnings);
                // Moved, not cloned: the findings annotation is the largest part of an answer, and
                // the log line and metrics after the answer do not read it.
                response.audit_annotations = std::mem::take(&mut verdict.audit_annotations);
            }
        }
        (answer, outcome)
    }

    async fn evaluate(
        &self,
        request: &ReviewRequest<'_>,
        caller_timeout: Option<std::time::Duration>,
    ) -> Outcome {
        let config = self.inspector.config();
        let started = Instant::now();
        if !matches!(request.operation, Operation::Create | Operation::Update) {
            return Outcome::Skipped(Skip::Operation);
        }
        let Some(kind) = WorkloadKind::from_group_kind(&request.kind.group, &request.kind.kind) else {
            return Outcome::Skipped(Skip::Kind);
        };
        // The ephemeralcontainers subresource carries the whole Pod; scale, status and the rest carry no new image.
        if request.sub_resource.as_deref().is_some_and(|sub| sub != "ephemeralcontainers") {
            return Outcome::Skipped(Skip::Subresource);
        }
        if request.namespace.as_deref().is_some_and(|namespace| config.is_exempt_namespace(namespace)) {
            return Outcome::Skipped(Skip::ExemptNamespace);
        }
        let Some(object) = &request.object else {
            return Outcome::Skipped(Skip::NoObject);
        };
        let metadata = match object.metadata() {
            Ok(metadata) => metadata,
            Err(error) => return Outcome::Unreadable(format!("metadata is malformed: {error}")),
        };
        // `kubectl debug` adds a person's new image to a pod, whoever created the pod: always checked.
        let debugging = request.sub_resource.as_deref() == Some("ephemeralcontainers");
        if kind == WorkloadKind::Pod
            && metadata.controller_owned()
            && !config.check_controller_pods
            && !debugging
        {
            return Outcome::Skipped(Skip::ControllerOwned);
        }
        let spec = match object.pod_spec(kind) {
            Ok(spec) => spec,
            Err(error) => return Outcome::Unreadable(error.to_string()),
        };
        let mut wanted = containers(&spec);
        if request.operation == Operation::Update
            && let Some(old) = &request.old_object
            && let Ok(old_spec) = old.pod_spec(kind)
        {
            // Where the pods run and how they authenticate bear on every image; otherwise only
            // new or changed images need a look.
            if !pull_inputs_changed(&spec, &old_spec) {
                wanted = changed_containers(wanted, &containers(&old_spec));
            }
        }
        if wanted.is_empty() {
            return Outcome::Skipped(Skip::NoImageChange);
        }
        let namespace_label = match (request.namespace.as_deref(), &self.cluster) {
            (Some(namespace), Some(cluster)) => cluster.namespace_modes.mode_of(namespace),
            _ => NamespaceMode::Unset,
        };
        let namespace_mode = namespace_label.mode();
        let annotation = self.mode_annotation(kind, request.namespace.as_deref(), &metadata).await;
        let mode = effective_mode(namespace_mode.unwrap_or(config.mode), annotation.as_deref());
        let budget = timeout::budget(config.deadline.0, caller_timeout);
        let deadline = started + budget;
        let targets = self.node_targets(&spec);
        let namespace = request.namespace.as_deref().unwrap_or("default");
        let is_pod = kind == WorkloadKind::Pod;
        // A slow or failing API must not eat the registry lookups' share of the deadline.
        let read_budget = (budget / 4).min(SECRET_READ_BUDGET);
        let read = CredentialRead { namespace, spec: &spec, is_pod, budget: read_budget };
        let mut credentials = self.credentials(&read, false).await;
        let options = InspectOptions { offline: false, deadline, image_reports: false };
        let placement = Placement::of(kind == WorkloadKind::DaemonSet, &spec);
        let context = PodContext { targets: Some(&*targets), credentials: &credentials, placement };
        let mut inspection = self.inspector.inspect(&wanted, context, options).await;
        if self.cluster.is_some() && inspection.findings.iter().any(is_credential_error) {
            // Cached reads may allow; a credential error must rest on what the API says now.
            credentials = self.credentials(&read, true).await;
            let context = PodContext { targets: Some(&*targets), credentials: &credentials, placement };
            inspection = self.inspector.inspect(&wanted, context, options).await;
        }
        if let Some(cluster) = &self.cluster
            // Hints are for errors only: a template's "does not exist yet" needs none.
            && inspection.findings.iter().any(|f| is_credential_error(f) && f.code.wants_a_secret())
            && let Some(secrets) = cluster.pull_secrets.listing(namespace).await
        {
            let working =
                self.working_secrets(&wanted, &inspection.findings, &secrets, &credentials, options).await;
            add_secret_hints(&mut inspection.findings, &working, &credentials.referenced);
        }
        let mut verdict = verdict::decide(mode, &inspection.findings);
        if let (NamespaceMode::Invalid(value), Some(namespace)) =
            (&namespace_label, request.namespace.as_deref())
        {
            verdict.warnings.insert(0, self.invalid_label(namespace, value, config.mode));
        }
        Outcome::Checked { mode, findings: inspection.findings, verdict }
    }
}

/// At most this long is spent reading a CronJob's annotation for one of its Jobs.
const OWNER_READ_BUDGET: std::time::Duration = std::time::Duration::from_millis(500);

/// How the invalid mode label of a namespace is reported (every answer in it carries the line).
const INVALID_LABEL_HELP: &str = "is not a mode (enforce, warn or audit, lowercase)";

/// What the pod's pull credentials are read for.
struct CredentialRead<'a> {
    namespace: &'a str,
    spec: &'a PodSpec,
    is_pod: bool,
    budget: std::time::Duration,
}

/// A finding about credentials that would deny (or, in warn mode, warn about) the pull.
fn is_credential_error(finding: &Finding) -> bool {
    finding.severity == Severity::Error && finding.code.is_credential()
}

/// How many unreferenced secrets are tried for the "add imagePullSecrets" hint of one denial.
const HINT_CANDIDATES: usize = 4;

impl Admission {
    /// The `Warning:` line for a namespace whose mode label is no mode; logged and counted once
    /// per namespace and value, so a misconfigured namespace does not flood logs or metrics.
    fn invalid_label(&self, namespace: &str, value: &str, configured: Mode) -> String {
        let first = self
            .invalid_labels_seen
            .lock()
            .is_ok_and(|mut seen| seen.insert((namespace.to_string(), value.to_string())));
        if first {
            warn!(namespace, value, "ignoring invalid {MODE_KEY} namespace label");
            self.metrics.invalid_mode_labels.inc();
        }
        format!(
            "pullguard: namespace {namespace} has the label {MODE_KEY}={value}, which {INVALID_LABEL_HELP}: \
             the configured mode {configured} applies"
        )
    }

    /// The object's `pullguard.io/mode` annotation, or, for a Job its CronJob created (whose
    /// controller does not copy the CronJob's annotations), the CronJob's: objects a controller
    /// makes from a checked template are checked again, in their owner's mode.
    async fn mode_annotation<'m>(
        &self,
        kind: WorkloadKind,
        namespace: Option<&str>,
        metadata: &'m ObjectMetadata,
    ) -> Option<Cow<'m, str>> {
        if let Some(own) = metadata.mode_annotation.as_deref() {
            return Some(Cow::Borrowed(own));
        }
        if kind != WorkloadKind::Job {
            return None;
        }
        let owner = metadata.controller.as_ref().filter(|owner| owner.kind == "CronJob")?;
        let (cluster, namespace) = (self.cluster.as_ref()?, namespace?);
        let read = cluster.owner_modes.cronjob_mode(namespace, &owner.name);
        tokio::time::timeout(OWNER_READ_BUDGET, read).await.ok().flatten().map(Cow::Owned)
    }

    /// The pod's pull credentials: from the reader's cache, or (`fresh`) asked of the API again.
    async fn credentials(&self, read: &CredentialRead<'_>, fresh: bool) -> PodCredentials {
        let CredentialRead { namespace, spec, is_pod, budget } = *read;
        let Some(cluster) = &self.cluster else {
            return PodCredentials::unknown(spec, is_pod, "pullguard runs without a Kubernetes API");
        };
        let reader = &cluster.pull_secrets;
        let answer = if fresh {
            tokio::time::timeout(budget, PodCredentials::read_fresh(reader, namespace, spec, is_pod)).await
        } else {
            tokio::time::timeout(budget, PodCredentials::read(reader, namespace, spec, is_pod)).await
        };
        answer.unwrap_or_else(|_| {
            PodCredentials::unknown(spec, is_pod, "the Kubernetes API did not answer in time")
        })
    }

    /// The namespace's secrets, not referenced by the pod, that the registry accepts for the
    /// images with credential errors: a hint must never name a secret whose credentials the
    /// registry rejects. Each is tried on its own, only when a denial is already due.
    async fn working_secrets(
        &self,
        wanted: &[ContainerImage],
        findings: &[Finding],
        secrets: &[(String, Keyring)],
        credentials: &PodCredentials,
        options: InspectOptions,
    ) -> Vec<(String, Keyring)> {
        let failing: Vec<ContainerImage> = wanted
            .iter()
            .filter(|container| findings.iter().any(|f| f.image == container.image && is_credential_error(f)))
            .cloned()
            .collect();
        let candidates = secrets
            .iter()
            .filter(|(name, keyring)| {
                !credentials.referenced.contains(name)
                    && failing.iter().any(|container| {
                        ImageRef::parse(&container.image)
                            .is_ok_and(|image| !keyring.lookup(&image).is_empty())
                    })
            })
            .take(HINT_CANDIDATES);
        let mut working = Vec::new();
        for (name, keyring) in candidates {
            let alone = PodCredentials::only(name, keyring.clone());
            let context = PodContext { targets: None, credentials: &alone, placement: Placement::Scheduled };
            let tried = self.inspector.inspect(&failing, context, options).await;
            if !tried.findings.iter().any(is_credential_error) {
                working.push((name.clone(), keyring.clone()));
            }
        }
        working
    }

    /// Where the pod can land: candidate nodes from the inventory, else the platform its
    /// selector names, else the reason nothing could be compared.
    fn node_targets(&self, spec: &PodSpec) -> Arc<NodeTargets> {
        let Some(cluster) = &self.cluster else {
            return Arc::new(NodeTargets::Unknown(
                "pullguard runs without a Kubernetes API, so node platforms are unknown".into(),
            ));
        };
        if !cluster.nodes.is_synced() {
            return Arc::new(NodeTargets::Unknown("the node inventory has not synced yet".into()));
        }
        let pool_labels = &self.inspector.config().node_pool_labels;
        self.targets.targets(spec, &cluster.nodes.nodes(), pool_labels)
    }
}

/// The object's annotation may only relax the mode (the namespace's, else the configured one);
/// an unknown value is ignored.
fn effective_mode(configured: Mode, requested: Option<&str>) -> Mode {
    match requested.map(|value| value.parse::<Mode>()) {
        Some(Ok(mode)) => configured.min(mode),
        Some(Err(error)) => {
            warn!(%error, "ignoring invalid {MODE_KEY} annotation");
            configured
        }
        None => configured,
    }
}

/// Counts the admission, its latency and its findings.
pub fn record_outcome(
    metrics: &Metrics,
    request: &ReviewRequest<'_>,
    outcome: &Outcome,
    elapsed: std::time::Duration,
) {
    let verdict = match outcome {
        Outcome::Skipped(_) => "skipped",
        Outcome::Unreadable(_) => "unreadable",
        Outcome::Checked { verdict, .. } if !verdict.allowed => "denied",
        Outcome::Checked { verdict, .. } if !verdict.warnings.is_empty() => "warned",
        Outcome::Checked { .. } => "allowed",
    };
    let kind = match WorkloadKind::from_group_kind(&request.kind.group, &request.kind.kind) {
        Some(kind) => Cow::Borrowed(kind.name()),
        None => Cow::Owned(request.kind.kind.clone()),
    };
    let labels = AdmissionLabels {
        kind,
        operation: operation_name(&request.operation).into(),
        verdict: verdict.into(),
    };
    metrics.admissions.get_or_create(&labels).inc();
    metrics.admission_duration.observe(elapsed.as_secs_f64());
    if let Outcome::Checked { findings, .. } = outcome {
        for finding in findings {
            let labels = FindingLabels { code: finding.code.as_str(), severity: finding.severity.as_str() };
            metrics.findings.get_or_create(&labels).inc();
        }
    }
}

/// As the API server spells it on the wire.
fn operation_name(operation: &Operation) -> &'static str {
    match operation {
        Operation::Create => "CREATE",
        Operation::Update => "UPDATE",
        Operation::Delete => "DELETE",
        Operation::Connect => "CONNECT",
    }
}

/// One log line per admission, with the identifiers an operator greps for.
pub fn log_outcome(request: &ReviewRequest<'_>, outcome: &Outcome, elapsed: std::time::Duration) {
    let namespace = request.namespace.as_deref().unwrap_or("");
    // Milliseconds to the microsecond: a warm admission takes well under one.
    let elapsed_ms = elapsed.as_micros() as f64 / 1000.0;
    info!(
        uid = %request.uid,
        kind = %request.kind.kind,
        operation = ?request.operation,
        namespace,
        name = %request.name,
        dry_run = request.dry_run,
        verdict = %LoggedVerdict(outcome),
        codes = %LoggedCodes(outcome),
        elapsed_ms,
        "admission"
    );
}

/// `enforce:allowed`, `warn:denied`, a skip reason or `unreadable: why`, written straight into
/// the log line.
struct LoggedVerdict<'a>(&'a Outcome);

impl std::fmt::Display for LoggedVerdict<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Outcome::Skipped(skip) => f.write_str(skip.label()),
            Outcome::Unreadable(reason) => write!(f, "unreadable: {reason}"),
            Outcome::Checked { verdict, mode, .. } => {
                write!(f, "{mode}:{}", if verdict.allowed { "allowed" } else { "denied" })
            }
        }
    }
}

/// The finding codes, comma-separated; empty when nothing was checked or found.
struct LoggedCodes<'a>(&'a Outcome);

impl std::fmt::Display for LoggedCodes<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let Outcome::Checked { findings, .. } = self.0 else {
            return Ok(());
        };
        for (index, finding) in findings.iter().enumerate() {
            if index > 0 {
                f.write_str(",")?;
            }
            f.write_str(finding.code.as_str())?;
        }
        Ok(())
    }
}
