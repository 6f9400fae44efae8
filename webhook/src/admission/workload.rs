//! Workload kinds -> the pod spec inside them. Only the pod spec is deserialized (into
//! k8s-openapi's `PodSpec`): the parser walks the kind's path and skips every other field
//! unbuilt, from raw JSON (admission) or from an already parsed document (`check -f`, `audit`).
//! Within the spec, only the fields pullguard reads are built (`SpecFields`): volumes (but for
//! image volumes), env, probes and resources were most of an admission's allocations.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Affinity, Container, EphemeralContainer, ImageVolumeSource, LocalObjectReference, PodOS, PodSpec,
    Toleration, Volume,
};
use serde::{
    Deserialize, Deserializer,
    de::{self, DeserializeSeed, IgnoredAny, MapAccess, Visitor},
};
use serde_json::Value;

use super::review::{KeyIs, ObjectMetadata, RawObject};
use crate::inspect::{ContainerImage, ContainerKind, PullPolicy};

#[derive(Debug, thiserror::Error)]
pub enum WorkloadError {
    #[error("{kind} has no pod spec at {path}")]
    MissingSpec { kind: String, path: &'static str },
    #[error("{kind} pod spec at {path} is malformed: {source}")]
    Malformed {
        kind: String,
        path: &'static str,
        #[source]
        source: serde_json::Error,
    },
}

/// The kinds pullguard understands, with where their pod spec lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkloadKind {
    Pod,
    Deployment,
    StatefulSet,
    DaemonSet,
    ReplicaSet,
    ReplicationController,
    Job,
    CronJob,
}

impl WorkloadKind {
    /// `None` for kinds (and groups) that carry no pod template: they are allowed untouched.
    pub fn from_group_kind(group: &str, kind: &str) -> Option<WorkloadKind> {
        Some(match (group, kind) {
            ("", "Pod") => WorkloadKind::Pod,
            ("", "ReplicationController") => WorkloadKind::ReplicationController,
            ("apps", "Deployment") => WorkloadKind::Deployment,
            ("apps", "StatefulSet") => WorkloadKind::StatefulSet,
            ("apps", "DaemonSet") => WorkloadKind::DaemonSet,
            ("apps", "ReplicaSet") => WorkloadKind::ReplicaSet,
            ("batch", "Job") => WorkloadKind::Job,
            ("batch", "CronJob") => WorkloadKind::CronJob,
            _ => return None,
        })
    }

    /// From a manifest's `apiVersion` and `kind` (for `check -f`).
    pub fn from_api_version(api_version: &str, kind: &str) -> Option<WorkloadKind> {
        let group = api_version.rsplit_once('/').map_or("", |(group, _)| group);
        WorkloadKind::from_group_kind(group, kind)
    }

    pub fn name(self) -> &'static str {
        match self {
            WorkloadKind::Pod => "Pod",
            WorkloadKind::Deployment => "Deployment",
            WorkloadKind::StatefulSet => "StatefulSet",
            WorkloadKind::DaemonSet => "DaemonSet",
            WorkloadKind::ReplicaSet => "ReplicaSet",
            WorkloadKind::ReplicationController => "ReplicationController",
            WorkloadKind::Job => "Job",
            WorkloadKind::CronJob => "CronJob",
        }
    }

    /// Where the pod spec lives, as a JSON pointer (for messages) and as its keys.
    fn spec_path(self) -> (&'static str, &'static [&'static str]) {
        match self {
            WorkloadKind::Pod => ("/spec", &["spec"]),
            WorkloadKind::CronJob => {
                ("/spec/jobTemplate/spec/template/spec", &["spec", "jobTemplate", "spec", "template", "spec"])
            }
            _ => ("/spec/template/spec", &["spec", "template", "spec"]),
        }
    }

    /// The pod spec of an object of this kind (the whole object, as parsed JSON or YAML).
    pub fn pod_spec(self, object: &Value) -> Result<PodSpec, WorkloadError> {
        self.extract(|keys| SpecAt(keys).deserialize(object))
    }

    /// The pod spec of an object of this kind, parsed straight from its JSON text.
    pub fn pod_spec_json(self, object: RawObject<'_>) -> Result<PodSpec, WorkloadError> {
        self.extract(|keys| {
            let mut parser = serde_json::Deserializer::from_str(object.json());
            let spec = SpecAt(keys).deserialize(&mut parser)?;
            parser.end()?;
            Ok(spec)
        })
    }

    fn extract(
        self,
        parse: impl FnOnce(&'static [&'static str]) -> Result<Option<PodSpec>, serde_json::Error>,
    ) -> Result<PodSpec, WorkloadError> {
        let (path, keys) = self.spec_path();
        match parse(keys) {
            Ok(Some(spec)) => Ok(spec),
            Ok(None) => Err(self.missing_spec()),
            Err(source) => Err(WorkloadError::Malformed { kind: self.name().to_string(), path, source }),
        }
    }

    pub fn missing_spec(self) -> WorkloadError {
        WorkloadError::MissingSpec { kind: self.name().to_string(), path: self.spec_path().0 }
    }
}

/// Follows `keys` through nested maps and deserializes the `PodSpec` at their end; `None` when a
/// key is absent or null on the way. Sibling fields are skipped, never built.
struct SpecAt(&'static [&'static str]);

impl<'de> DeserializeSeed<'de> for SpecAt {
    type Value = Option<PodSpec>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Option<PodSpec>, D::Error> {
        match self.0.split_first() {
            None => Ok(Option::<SpecFields>::deserialize(deserializer)?.map(PodSpec::from)),
            Some((key, rest)) => deserializer.deserialize_any(Walk { key, rest }),
        }
    }
}

struct Walk {
    key: &'static str,
    rest: &'static [&'static str],
}

impl<'de> Visitor<'de> for Walk {
    type Value = Option<PodSpec>;

    fn expecting(&self, formatter: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(formatter, "an object with {:?}", self.key)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut found = None;
        while let Some(is_key) = map.next_key_seed(KeyIs(self.key))? {
            if is_key {
                // A repeated key wins last, as it does in a parsed JSON document.
                found = map.next_value_seed(SpecAt(self.rest))?;
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(found)
    }
}

/// An object as the pass over the review reads it, before its kind is applied: the metadata
/// pullguard uses, and the pod spec at each place a workload kind keeps one (`/spec` of a Pod,
/// `/spec/template/spec`, `/spec/jobTemplate/spec/template/spec` of a CronJob).
/// Every level on the way to a pod spec is [`MapOnly`], as [`SpecAt`] walks only objects.
pub type ObjectFields = MapOnly<ObjectLevel>;

#[derive(Deserialize)]
pub struct ObjectLevel {
    #[serde(default)]
    metadata: ObjectMetadata,
    #[serde(default)]
    spec: Option<MapOnly<SpecFields<MapOnly<TemplateFields>, MapOnly<JobTemplateFields>>>>,
}

#[derive(Deserialize)]
struct TemplateFields {
    #[serde(default)]
    spec: Option<Box<SpecFields>>,
}

#[derive(Deserialize)]
struct JobTemplateFields {
    #[serde(default)]
    spec: Option<MapOnly<JobSpecFields>>,
}

#[derive(Deserialize)]
struct JobSpecFields {
    #[serde(default)]
    template: Option<MapOnly<TemplateFields>>,
}

/// A struct read only from a JSON object: a derived struct also reads `[v1, v2]` as its fields in
/// order, which the walk to a pod spec refuses, and the one pass must refuse whatever it does.
pub struct MapOnly<T>(T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for MapOnly<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Fields<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for Fields<T> {
            type Value = T;
            fn expecting(&self, formatter: &mut std::fmt::Formatter) -> std::fmt::Result {
                formatter.write_str("an object")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
                T::deserialize(de::value::MapAccessDeserializer::new(map))
            }
        }
        deserializer.deserialize_map(Fields(std::marker::PhantomData)).map(MapOnly)
    }
}

/// An object read in the pass over the review, its pod spec taken from where its kind keeps it.
#[derive(Debug)]
pub struct ReadObject {
    pub metadata: ObjectMetadata,
    /// `None`: the object has nothing at its kind's pod-spec path.
    pub spec: Option<PodSpec>,
}

impl ReadObject {
    pub fn new(MapOnly(fields): ObjectFields, kind: WorkloadKind) -> ReadObject {
        let top = fields.spec.map(|MapOnly(spec)| spec);
        let template_spec =
            |template: Option<MapOnly<TemplateFields>>| template?.0.spec.map(|spec| PodSpec::from(*spec));
        let spec = match kind {
            WorkloadKind::Pod => top.map(PodSpec::from),
            WorkloadKind::CronJob => {
                template_spec(top.and_then(|spec| spec.job_template?.0.spec?.0.template))
            }
            _ => template_spec(top.and_then(|spec| spec.template)),
        };
        ReadObject { metadata: fields.metadata, spec }
    }
}

/// The fields of a pod spec that the checks read: container names and images, pull secrets and
/// service account (credentials), and the scheduling constraints (node platforms). Absent or
/// null lists and names read as empty, as k8s-openapi reads them. `template` and `jobTemplate`
/// are where workloads nest their pod spec: skipped unread unless the types say otherwise.
#[derive(Deserialize)]
#[serde(
    rename_all = "camelCase",
    bound(deserialize = "Template: Deserialize<'de>, JobTemplate: Deserialize<'de>")
)]
struct SpecFields<Template = IgnoredAny, JobTemplate = IgnoredAny> {
    #[serde(default)]
    containers: Option<Vec<ContainerFields>>,
    #[serde(default)]
    init_containers: Option<Vec<ContainerFields>>,
    #[serde(default)]
    ephemeral_containers: Option<Vec<ContainerFields>>,
    #[serde(default)]
    volumes: Option<Vec<VolumeFields>>,
    #[serde(default)]
    image_pull_secrets: Option<Vec<LocalObjectReference>>,
    #[serde(default)]
    service_account_name: Option<String>,
    #[serde(default)]
    node_name: Option<String>,
    #[serde(default)]
    node_selector: Option<BTreeMap<String, String>>,
    #[serde(default)]
    affinity: Option<Affinity>,
    #[serde(default)]
    tolerations: Option<Vec<Toleration>>,
    #[serde(default)]
    os: Option<PodOS>,
    #[serde(default)]
    template: Option<Template>,
    #[serde(default)]
    job_template: Option<JobTemplate>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ContainerFields {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    image: Option<String>,
    #[serde(default)]
    image_pull_policy: Option<String>,
}

/// A volume, read only as far as it is an image volume (`volumes[].image`, pulled by the kubelet
/// like a container image).
#[derive(Deserialize)]
struct VolumeFields {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    image: Option<ImageVolumeFields>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ImageVolumeFields {
    #[serde(default)]
    reference: Option<String>,
    #[serde(default)]
    pull_policy: Option<String>,
}

impl<Template, JobTemplate> From<SpecFields<Template, JobTemplate>> for PodSpec {
    fn from(fields: SpecFields<Template, JobTemplate>) -> PodSpec {
        let container = |c: ContainerFields| Container {
            name: c.name.unwrap_or_default(),
            image: c.image,
            image_pull_policy: c.image_pull_policy,
            ..Container::default()
        };
        let ephemeral = |c: ContainerFields| EphemeralContainer {
            name: c.name.unwrap_or_default(),
            image: c.image,
            image_pull_policy: c.image_pull_policy,
            ..EphemeralContainer::default()
        };
        PodSpec {
            containers: fields.containers.unwrap_or_default().into_iter().map(container).collect(),
            init_containers: fields.init_containers.map(|list| list.into_iter().map(container).collect()),
            ephemeral_containers: fields
                .ephemeral_containers
                .map(|list| list.into_iter().map(ephemeral).collect()),
            volumes: fields.volumes.and_then(|list| {
                let images: Vec<Volume> = list
                    .into_iter()
                    .filter_map(|volume| {
                        let image = volume.image?;
                        Some(Volume {
                            name: volume.name.unwrap_or_default(),
                            image: Some(ImageVolumeSource {
                                reference: image.reference,
                                pull_policy: image.pull_policy,
                            }),
                            ..Volume::default()
                        })
                    })
                    .collect();
                (!images.is_empty()).then_some(images)
            }),
            image_pull_secrets: fields.image_pull_secrets,
            service_account_name: fields.service_account_name,
            node_name: fields.node_name,
            node_selector: fields.node_selector,
            affinity: fields.affinity,
            tolerations: fields.tolerations,
            os: fields.os,
            ..PodSpec::default()
        }
    }
}

/// Every image the kubelet pulls for the spec: its containers' in the order it starts them, then
/// its image volumes'.
pub fn containers(spec: &PodSpec) -> Vec<ContainerImage> {
    let init = spec
        .init_containers
        .iter()
        .flatten()
        .map(|c| (ContainerKind::Init, &c.name, &c.image, &c.image_pull_policy));
    let app = spec.containers.iter().map(|c| (ContainerKind::App, &c.name, &c.image, &c.image_pull_policy));
    let ephemeral = spec
        .ephemeral_containers
        .iter()
        .flatten()
        .map(|c| (ContainerKind::Ephemeral, &c.name, &c.image, &c.image_pull_policy));
    let volumes = spec.volumes.iter().flatten().filter_map(|volume| {
        let image = volume.image.as_ref()?;
        Some((ContainerKind::Volume, &volume.name, &image.reference, &image.pull_policy))
    });
    init.chain(app)
        .chain(ephemeral)
        .chain(volumes)
        // The API server rejects a container without an image; a template being edited may lack one.
        .filter_map(|(kind, name, image, policy)| {
            image.as_ref().map(|image| ContainerImage {
                name: name.clone(),
                image: image.clone(),
                kind,
                pull_policy: PullPolicy::effective(policy.as_deref(), image),
            })
        })
        .collect()
}

/// Whether an UPDATE changed anything besides the images that the verdict rests on: where the
/// pods can run (`nodeName`, `nodeSelector`, affinity, tolerations, `spec.os`) and which
/// credentials their pulls use (`imagePullSecrets`, the service account). A DaemonSet moved to
/// Windows nodes, or a Deployment that lost its pull secret, fails to pull with the same images.
pub fn pull_inputs_changed(new: &PodSpec, old: &PodSpec) -> bool {
    new.node_name != old.node_name
        || new.node_selector != old.node_selector
        || new.affinity.as_ref().and_then(|a| a.node_affinity.as_ref())
            != old.affinity.as_ref().and_then(|a| a.node_affinity.as_ref())
        || new.tolerations != old.tolerations
        || new.os != old.os
        || new.image_pull_secrets != old.image_pull_secrets
        || new.service_account_name != old.service_account_name
}

/// On UPDATE only containers whose image changed (or that are new) are checked: an unrelated
/// edit must not be blocked by an image that was already running.
pub fn changed_containers(new: Vec<ContainerImage>, old: &[ContainerImage]) -> Vec<ContainerImage> {
    new.into_iter()
        .filter(|container| {
            !old.iter().any(|previous| {
                previous.name == container.name
                    && previous.kind == container.kind
                    && previous.image == container.image
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn kinds_by_group() {
        assert_eq!(WorkloadKind::from_group_kind("apps", "Deployment"), Some(WorkloadKind::Deployment));
        assert_eq!(WorkloadKind::from_group_kind("", "Deployment"), None);
        assert_eq!(WorkloadKind::from_group_kind("autoscaling", "Scale"), None);
        assert_eq!(WorkloadKind::from_api_version("batch/v1", "CronJob"), Some(WorkloadKind::CronJob));
        assert_eq!(WorkloadKind::from_api_version("v1", "Pod"), Some(WorkloadKind::Pod));
        assert_eq!(WorkloadKind::from_api_version("example.com/v1", "Pod"), None);
    }

    #[test]
    fn cronjob_spec_and_container_order() {
        let object = json!({"spec": {"jobTemplate": {"spec": {"template": {"spec": {
            "initContainers": [{"name": "i", "image": "busybox"}],
            "containers": [{"name": "a", "image": "nginx:1"}, {"name": "noimage"}]
        }}}}}});
        let spec = WorkloadKind::CronJob.pod_spec(&object).unwrap();
        let found = containers(&spec);
        assert_eq!(found.len(), 2);
        assert_eq!(found[0].kind, ContainerKind::Init);
        assert_eq!(found[1].image, "nginx:1");
    }

    #[test]
    fn every_field_the_checks_read_survives_extraction() {
        let object = json!({"spec": {
            "containers": [{"name": "a", "image": "nginx:1", "env": [{"name": "X", "value": "1"}]}],
            "initContainers": [{"name": "i", "image": "busybox"}],
            "ephemeralContainers": [{"name": "debug", "image": "alpine"}],
            "imagePullSecrets": [{"name": "regcred"}],
            "serviceAccountName": "builder",
            "nodeName": "node-1",
            "nodeSelector": {"kubernetes.io/arch": "arm64"},
            "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [{"matchExpressions": [
                    {"key": "pool", "operator": "In", "values": ["gpu"]}]}]}}},
            "tolerations": [{"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}],
            "volumes": [{"name": "v", "emptyDir": {}},
                        {"name": "model", "image": {"reference": "r.example/model:v3", "pullPolicy": "Always"}}]
        }});
        let spec = WorkloadKind::Pod.pod_spec(&object).unwrap();
        let parsed: PodSpec = serde_json::from_value(object["spec"].clone()).unwrap();
        assert_eq!(containers(&spec), containers(&parsed));
        let volume = containers(&spec).into_iter().find(|c| c.kind == ContainerKind::Volume).unwrap();
        assert_eq!((volume.name.as_str(), volume.image.as_str()), ("model", "r.example/model:v3"));
        assert_eq!(volume.pull_policy, PullPolicy::Always);
        assert_eq!(spec.image_pull_secrets, parsed.image_pull_secrets);
        assert_eq!(spec.service_account_name, parsed.service_account_name);
        assert_eq!(spec.node_name, parsed.node_name);
        assert_eq!(spec.node_selector, parsed.node_selector);
        assert_eq!(spec.affinity, parsed.affinity);
        assert_eq!(spec.tolerations, parsed.tolerations);
        let built: Vec<&str> = spec.volumes.iter().flatten().map(|volume| volume.name.as_str()).collect();
        assert_eq!(built, ["model"], "only image volumes are built");
    }

    use super::super::review::{ObjectJson, ReviewRequest};

    /// (metadata, pod spec) of `object` and `oldObject`, however they were read.
    fn read_both(request: &ReviewRequest<'_>, kind: WorkloadKind) -> Vec<(ObjectMetadata, Option<PodSpec>)> {
        [&request.object, &request.old_object]
            .into_iter()
            .flatten()
            .map(|object| {
                (
                    object.metadata().unwrap().into_owned(),
                    object.pod_spec(kind).ok().map(|spec| spec.into_owned()),
                )
            })
            .collect()
    }

    /// The one pass reads what reading the text part by part reads, on every captured review.
    #[test]
    fn one_pass_reads_what_parts_read() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/data");
        let mut compared = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_none_or(|ext| ext != "json") {
                continue;
            }
            let body = std::fs::read(&path).unwrap();
            let (fast, raw) =
                (ReviewRequest::decode(&body).unwrap(), ReviewRequest::decode_raw(&body).unwrap());
            let Some(kind) = WorkloadKind::from_group_kind(&raw.kind.group, &raw.kind.kind) else {
                assert!(!matches!(fast.object, Some(ObjectJson::Read(_))), "{}", path.display());
                continue;
            };
            assert!(!matches!(fast.object, Some(ObjectJson::Raw(_))), "{} read as text", path.display());
            assert_eq!(read_both(&fast, kind), read_both(&raw, kind), "{}", path.display());
            compared += 1;
        }
        assert!(compared >= 20, "only {compared} reviews compared");
    }

    #[test]
    fn one_pass_gives_way_on_any_fault() {
        let review = |object: &str| {
            format!(
                r#"{{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{{"uid":"u",
                "kind":{{"group":"","version":"v1","kind":"Pod"}},"operation":"CREATE","object":{object}}}}}"#
            )
        };
        let read = |object: &str| {
            let body = review(object);
            let request = ReviewRequest::decode(body.as_bytes()).unwrap();
            let fast = matches!(request.object, Some(ObjectJson::Read(_)));
            let spec = request.object.as_ref().unwrap().pod_spec(WorkloadKind::Pod).map(|s| s.into_owned());
            let owned = request.object.as_ref().unwrap().metadata().map(|m| m.controller_owned());
            (fast, owned.ok(), spec.map(|spec| spec.containers.len()).map_err(|error| error.to_string()))
        };
        // A repeated key is left to the parts, where it wins last (as in a parsed JSON document).
        let repeated = r#"{"spec":{"containers":[{"name":"a","image":"x"}]},"spec":{"containers":[]},
            "metadata":{"ownerReferences":[{"controller":true}]}}"#;
        assert_eq!(read(repeated), (false, Some(true), Ok(0)));
        assert_eq!(
            read(r#"{"metadata":{"ownerReferences":[{"controller":true}]},"spec":{}}"#),
            (true, Some(true), Ok(0))
        );
        assert_eq!(read(r#"{"metadata":{}}"#).2, Err("Pod has no pod spec at /spec".to_string()));
        // Faults: the parts say which one is broken; a broken metadata still leaves the spec.
        let (fast, owned, spec) = read(r#"{"metadata":{},"spec":{"containers":{}}}"#);
        assert!(!fast && owned == Some(false) && spec.unwrap_err().contains("malformed"));
        let (fast, owned, spec) = read(r#"{"metadata":{"ownerReferences":7},"spec":{"containers":[]}}"#);
        assert!(!fast && owned.is_none() && spec == Ok(0));
        assert!(!read(r#"{"metadata":{},"metadata":{},"spec":{}}"#).0);
        assert!(!read(r#"{"metadata":null,"spec":{}}"#).0);
        // Bytes that are not UTF-8 where the pass would skip them unread: refused as text is.
        let mut body = review(r#"{"metadata":{"name":"\u00e9"},"spec":{"containers":[]}}"#).into_bytes();
        let at = body.windows(6).position(|w| w == b"\\u00e9").unwrap();
        body.splice(at..at + 6, [0xC3]);
        assert!(ReviewRequest::decode(&body).is_err() && ReviewRequest::decode_raw(&body).is_err());
        // Arrays read as structs by position are refused in the pass, as the walk refuses them.
        assert!(!read(r#"{"metadata":{},"spec":[[{"name":"a","image":"x"}]]}"#).0);
        // A Deployment's template is read in the pass, a CronJob's job template too.
        for (kind, group, object) in [
            (
                "Deployment",
                "apps",
                r#"{"spec":{"template":{"spec":{"containers":[{"name":"a","image":"x"}]}}}}"#,
            ),
            (
                "CronJob",
                "batch",
                r#"{"spec":{"jobTemplate":{"spec":{"template":{"spec":{"containers":[{"name":"a","image":"x"}]}}}}}}"#,
            ),
        ] {
            let body = review(object).replace(
                r#""group":"","version":"v1","kind":"Pod""#,
                &format!(r#""group":"{group}","version":"v1","kind":"{kind}""#),
            );
            let request = ReviewRequest::decode(body.as_bytes()).unwrap();
            let workload = WorkloadKind::from_group_kind(group, kind).unwrap();
            assert!(matches!(request.object, Some(ObjectJson::Read(_))), "{kind}");
            let spec = request.object.as_ref().unwrap().pod_spec(workload).unwrap();
            assert_eq!(spec.containers[0].image.as_deref(), Some("x"), "{kind}");
        }
    }

    #[test]
    fn malformed_and_missing_specs() {
        assert!(matches!(
            WorkloadKind::Deployment.pod_spec(&json!({"spec": {}})),
            Err(WorkloadError::MissingSpec { .. })
        ));
        assert!(matches!(
            WorkloadKind::Pod.pod_spec(&json!({"spec": {"containers": "nope"}})),
            Err(WorkloadError::Malformed { .. })
        ));
    }

    #[test]
    fn only_changed_images_on_update() {
        let container = |name: &str, image: &str| ContainerImage::new(name, image, ContainerKind::App);
        let old = vec![container("a", "x:1"), container("b", "y:1")];
        let new = vec![container("a", "x:1"), container("b", "y:2"), container("c", "z:1")];
        let changed = changed_containers(new, &old);
        assert_eq!(changed.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(), vec!["b", "c"]);
    }
}
