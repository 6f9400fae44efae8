//! The core shared by `serve`, `check` and `audit`: containers in, graded findings and per-image
//! reports out. Every distinct image is resolved once and concurrently, within one deadline.

use std::sync::Arc;

use futures::future::join_all;
use pullguard_core::{
    checks::{self, CredentialUse, NodeTargets, Placement, Subject},
    config::Config,
    credentials::{Credential, Keyring},
    facts::ImageFacts,
    finding::{Code, Finding},
    lookup::LookupError,
    pod_credentials::PodCredentials,
    reference::{
        ImageRef,
        memo::{Parsed, ReferenceMemo},
    },
    workload::{ContainerImage, ContainerKind, PullPolicy},
};
use serde::Serialize;
use tokio::time::Instant;

use crate::registry::Registry;

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct CredentialReport {
    pub source: String,
    pub key: String,
}

/// What is known about one distinct image (the `images` array of `check --output json`).
#[derive(Debug, Clone, Serialize)]
pub struct ImageReport {
    pub input: String,
    pub normalized: Option<String>,
    pub registry: Option<String>,
    pub repository: Option<String>,
    pub tag: Option<String>,
    pub digest: Option<String>,
    pub resolved_digest: Option<String>,
    pub credential: Option<CredentialReport>,
    #[serde(skip)]
    pub facts: Option<Arc<ImageFacts>>,
}

#[derive(Debug, Clone, Default)]
pub struct Inspection {
    pub findings: Vec<Finding>,
    pub images: Vec<ImageReport>,
}

#[derive(Debug, Clone, Copy)]
pub struct InspectOptions {
    /// Static checks only: nothing is sent to any registry.
    pub offline: bool,
    pub deadline: Instant,
    /// Build [`Inspection::images`] (the CLI prints it; an admission answer has no use for it).
    pub image_reports: bool,
}

pub struct Inspector {
    config: Arc<Config>,
    registry: Arc<Registry>,
    /// Credentials every lookup may use (a docker config given to `check`, or the node's).
    keyring: Keyring,
    references: ReferenceMemo,
}

/// `'c`: the pod's and the node's credentials, borrowed for the one inspection.
struct Resolved<'c> {
    parsed: Parsed,
    outcome: Option<Result<Arc<ImageFacts>, LookupError>>,
    /// The credential used (or, offline, the one that would be used first).
    credential: Option<&'c Credential>,
    /// Every matching credential, in the order tried, for messages.
    tried: Vec<&'c Credential>,
    authenticated: bool,
}

/// What is known about the pod beyond its images.
#[derive(Debug, Clone, Copy)]
pub struct PodContext<'a> {
    /// Where the pod can run; `None` when platforms were not asked about (`check --image`
    /// without `--platform` or a cluster).
    pub targets: Option<&'a NodeTargets>,
    pub credentials: &'a PodCredentials,
    /// How the pods land on the candidate nodes (picked by the scheduler, all of them, or bound).
    pub placement: Placement,
}

impl Inspector {
    pub fn new(config: Arc<Config>, registry: Arc<Registry>, keyring: Keyring) -> Inspector {
        Inspector { config, registry, keyring, references: ReferenceMemo::default() }
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    pub async fn inspect(
        &self,
        containers: &[ContainerImage],
        pod: PodContext<'_>,
        options: InspectOptions,
    ) -> Inspection {
        let mut distinct: Vec<&str> = Vec::new();
        for container in containers {
            if !distinct.contains(&container.image.as_str()) {
                distinct.push(&container.image);
            }
        }
        let resolved = join_all(distinct.iter().map(|image| {
            // An image only `Never` containers use is never pulled: no registry is asked.
            let pulled = containers
                .iter()
                .any(|container| container.image == *image && container.pull_policy != PullPolicy::Never);
            self.resolve_one(image, pod.credentials, options, pulled)
        }))
        .await;

        let mut findings = Vec::new();
        for container in containers {
            // A pod has a handful of images: a scan beats hashing each name.
            let Some(resolved) = distinct
                .iter()
                .position(|image| *image == container.image)
                .and_then(|index| resolved.get(index))
            else {
                continue;
            };
            findings.extend(self.findings_for(container, resolved, pod));
        }
        // A needed secret that is missing or unusable was reported with the image that needs it.
        let reported_secret_error = findings
            .iter()
            .any(|finding| matches!(finding.code, Code::SecretMissing | Code::SecretMalformed));
        if !reported_secret_error && let Some(first) = containers.first() {
            let subject = Subject { container: &first.name, image: &first.image, volume: false };
            findings.extend(checks::unused_secret_findings(subject, pod.credentials));
        }
        let images = if options.image_reports {
            distinct.iter().zip(resolved).map(|(input, resolved)| report(input, resolved)).collect()
        } else {
            Vec::new()
        };
        Inspection { findings: checks::grade(findings, &self.config), images }
    }

    fn findings_for(
        &self,
        container: &ContainerImage,
        resolved: &Resolved<'_>,
        pod: PodContext<'_>,
    ) -> Vec<Finding> {
        let volume = container.kind == ContainerKind::Volume;
        let subject = Subject { container: &container.name, image: &container.image, volume };
        let mut findings = checks::reference_findings(subject, &resolved.parsed);
        if let Ok(image) = &*resolved.parsed
            && container.pull_policy == PullPolicy::Never
        {
            findings.extend(checks::never_pulled(subject, image, pod.targets));
            return findings;
        }
        if let (Ok(image), Some(outcome)) = (&*resolved.parsed, &resolved.outcome) {
            match outcome {
                Ok(facts) => {
                    let schema1_pulled = pod.targets.is_some_and(NodeTargets::all_pull_schema1);
                    let manifest =
                        checks::manifest_findings(subject, facts, self.config.max_image_size, schema1_pulled);
                    // An image volume may be an OCI artifact: mounted, never run, so "not a
                    // runnable image" is no problem there, and only declared platforms compare.
                    findings.extend(
                        manifest
                            .into_iter()
                            .filter(|finding| !(volume && finding.code == Code::NotAContainerImage)),
                    );
                    if let Some(targets) = pod.targets
                        && !(volume && facts.platforms.is_empty())
                    {
                        findings.extend(checks::platform_findings(subject, facts, targets, pod.placement));
                    }
                }
                Err(error) => {
                    let lookup = checks::lookup_findings(subject, image, error);
                    let held_everywhere = container.pull_policy == PullPolicy::IfNotPresent
                        && pod.targets.and_then(|targets| targets.held_everywhere(&image.node_image_key()))
                            == Some(true);
                    if held_everywhere {
                        findings.extend(checks::held_on_every_node(subject, image, lookup));
                    } else {
                        findings.extend(lookup);
                    }
                }
            }
            let usage = CredentialUse {
                pod: pod.credentials,
                node_credentials: self.config.registry(image.registry()).is_some_and(|r| r.node_credentials),
                tried: &resolved.tried,
                authenticated: resolved.authenticated,
            };
            findings.extend(checks::credential_findings(subject, image, outcome, usage));
        }
        findings
    }

    async fn resolve_one<'c>(
        &'c self,
        input: &str,
        pod: &'c PodCredentials,
        options: InspectOptions,
        pulled: bool,
    ) -> Resolved<'c> {
        let parsed = self.references.parse(input);
        let Ok(image) = &*parsed else {
            return Resolved {
                parsed,
                outcome: None,
                credential: None,
                tried: Vec::new(),
                authenticated: false,
            };
        };
        // Pod secrets first, then node-level credentials: the kubelet's union keyring order.
        let mut credentials = pod.keyring.lookup(image);
        credentials.extend(self.keyring.lookup(image));
        let credential = credentials.first().copied();
        let exempt = self.config.is_exempt_image(input, Some(image));
        if options.offline || exempt || !pulled {
            return Resolved { parsed, outcome: None, credential, tried: credentials, authenticated: false };
        }
        let lookup = self.resolve_with(image, &credentials);
        let (outcome, used) = match tokio::time::timeout_at(options.deadline, lookup).await {
            Ok(result) => result,
            Err(_) => (Err(LookupError::Deadline), None),
        };
        let authenticated = used.is_some();
        let credential = used.or(credential);
        Resolved { parsed, outcome: Some(outcome), credential, tried: credentials, authenticated }
    }

    /// The kubelet tries every matching credential in order until one works; so do we.
    async fn resolve_with<'a>(
        &self,
        image: &ImageRef,
        credentials: &[&'a Credential],
    ) -> (Result<Arc<ImageFacts>, LookupError>, Option<&'a Credential>) {
        if credentials.is_empty() {
            return (self.registry.resolve(image, None).await, None);
        }
        let mut last = None;
        for credential in credentials {
            let outcome = self.registry.resolve(image, Some(credential)).await;
            let rejected = matches!(outcome, Err(LookupError::CredentialsRejected | LookupError::Denied));
            if !rejected {
                return (outcome, Some(credential));
            }
            last = Some((outcome, Some(*credential)));
        }
        last.unwrap_or((Err(LookupError::AuthRequired), None))
    }
}

fn credential_report(credential: &Credential) -> CredentialReport {
    CredentialReport { source: credential.source().into(), key: credential.key().into() }
}

fn report(input: &str, resolved: Resolved<'_>) -> ImageReport {
    let facts = match &resolved.outcome {
        Some(Ok(facts)) => Some(facts.clone()),
        _ => None,
    };
    match &*resolved.parsed {
        Ok(image) => ImageReport {
            input: input.to_string(),
            normalized: Some(image.normalized()),
            registry: Some(image.registry().to_string()),
            repository: Some(image.repository().to_string()),
            tag: image.effective_tag().map(str::to_string),
            digest: image.digest().map(str::to_string),
            resolved_digest: facts.as_ref().map(|facts| facts.digest.clone()),
            credential: resolved.credential.map(credential_report),
            facts,
        },
        Err(_) => ImageReport {
            input: input.to_string(),
            normalized: None,
            registry: None,
            repository: None,
            tag: None,
            digest: None,
            resolved_digest: None,
            credential: None,
            facts: None,
        },
    }
}
