//! Workload kinds -> the pod spec inside them. Only the pod spec is deserialized (into
//! k8s-openapi's `PodSpec`): the parser walks the kind's path and skips every other field
//! unbuilt, from raw JSON (admission) or from an already parsed document (`check -f`, `audit`).
//! Within the spec, only the fields pullguard reads are built (`SpecFields`): volumes, env,
//! probes and resources were most of an admission's allocations.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Affinity, Container, EphemeralContainer, LocalObjectReference, PodSpec, Toleration,
};
use serde::{
    Deserialize, Deserializer,
    de::{self, DeserializeSeed, IgnoredAny, MapAccess, Visitor},
};
use serde_json::Value;

use super::review::{KeyIs, ObjectMetadata, RawObject};
use crate::inspect::{ContainerImage, ContainerKind};

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

    /// The object's metadata and pod spec in one pass over its JSON text (the review's largest
    /// part, so each pass counts). `None` when that pass fails anywhere: the caller then reads
    /// metadata and spec one after the other, which names the part that is broken and skips a
    /// controller-owned Pod before its spec is judged.
    pub fn metadata_and_spec_json(
        self,
        object: RawObject<'_>,
    ) -> Option<(ObjectMetadata, Result<PodSpec, WorkloadError>)> {
        let (path, keys) = self.spec_path();
        let (&spec_key, rest) = keys.split_first()?;
        let mut parser = serde_json::Deserializer::from_str(object.json());
        let (metadata, spec) = (&mut parser).deserialize_map(MetadataAndSpec { spec_key, rest }).ok()?;
        parser.end().ok()?;
        let spec = spec.ok_or_else(|| WorkloadError::MissingSpec { kind: self.name().to_string(), path });
        Some((metadata, spec))
    }

    fn extract(
        self,
        parse: impl FnOnce(&'static [&'static str]) -> Result<Option<PodSpec>, serde_json::Error>,
    ) -> Result<PodSpec, WorkloadError> {
        let (path, keys) = self.spec_path();
        let kind = || self.name().to_string();
        match parse(keys) {
            Ok(Some(spec)) => Ok(spec),
            Ok(None) => Err(WorkloadError::MissingSpec { kind: kind(), path }),
            Err(source) => Err(WorkloadError::Malformed { kind: kind(), path, source }),
        }
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

/// The top level of an object: `metadata` built, the pod spec followed from `spec_key` down
/// `rest`, the rest skipped.
struct MetadataAndSpec {
    spec_key: &'static str,
    rest: &'static [&'static str],
}

enum TopField {
    Metadata,
    Spec,
    Other,
}

impl<'de> Visitor<'de> for MetadataAndSpec {
    type Value = (ObjectMetadata, Option<PodSpec>);

    fn expecting(&self, formatter: &mut std::fmt::Formatter) -> std::fmt::Result {
        formatter.write_str("an object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let (mut metadata, mut spec) = (None, None);
        while let Some(field) = map.next_key_seed(TopKey { spec_key: self.spec_key })? {
            match field {
                // As a derived struct would: the two-pass reading then reports it.
                TopField::Metadata if metadata.is_some() => {
                    return Err(de::Error::duplicate_field("metadata"));
                }
                TopField::Metadata => metadata = Some(map.next_value::<ObjectMetadata>()?),
                TopField::Spec => spec = map.next_value_seed(SpecAt(self.rest))?,
                TopField::Other => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok((metadata.unwrap_or_default(), spec))
    }
}

struct TopKey {
    spec_key: &'static str,
}

impl<'de> DeserializeSeed<'de> for TopKey {
    type Value = TopField;
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<TopField, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for TopKey {
    type Value = TopField;
    fn expecting(&self, formatter: &mut std::fmt::Formatter) -> std::fmt::Result {
        formatter.write_str("a string key")
    }
    fn visit_str<E: de::Error>(self, key: &str) -> Result<TopField, E> {
        Ok(match key {
            "metadata" => TopField::Metadata,
            key if key == self.spec_key => TopField::Spec,
            _ => TopField::Other,
        })
    }
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

/// The fields of a pod spec that the checks read: container names and images, pull secrets and
/// service account (credentials), and the scheduling constraints (node platforms). Absent or
/// null lists and names read as empty, as k8s-openapi reads them.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SpecFields {
    #[serde(default)]
    containers: Option<Vec<ContainerFields>>,
    #[serde(default)]
    init_containers: Option<Vec<ContainerFields>>,
    #[serde(default)]
    ephemeral_containers: Option<Vec<ContainerFields>>,
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
}

#[derive(Deserialize)]
struct ContainerFields {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    image: Option<String>,
}

impl From<SpecFields> for PodSpec {
    fn from(fields: SpecFields) -> PodSpec {
        let container = |c: ContainerFields| Container {
            name: c.name.unwrap_or_default(),
            image: c.image,
            ..Container::default()
        };
        let ephemeral = |c: ContainerFields| EphemeralContainer {
            name: c.name.unwrap_or_default(),
            image: c.image,
            ..EphemeralContainer::default()
        };
        PodSpec {
            containers: fields.containers.unwrap_or_default().into_iter().map(container).collect(),
            init_containers: fields.init_containers.map(|list| list.into_iter().map(container).collect()),
            ephemeral_containers: fields
                .ephemeral_containers
                .map(|list| list.into_iter().map(ephemeral).collect()),
            image_pull_secrets: fields.image_pull_secrets,
            service_account_name: fields.service_account_name,
            node_name: fields.node_name,
            node_selector: fields.node_selector,
            affinity: fields.affinity,
            tolerations: fields.tolerations,
            ..PodSpec::default()
        }
    }
}

/// Every container of the spec with its image, in the order the kubelet starts them.
pub fn containers(spec: &PodSpec) -> Vec<ContainerImage> {
    let init = spec.init_containers.iter().flatten().map(|c| (ContainerKind::Init, &c.name, &c.image));
    let app = spec.containers.iter().map(|c| (ContainerKind::App, &c.name, &c.image));
    let ephemeral =
        spec.ephemeral_containers.iter().flatten().map(|c| (ContainerKind::Ephemeral, &c.name, &c.image));
    init.chain(app)
        .chain(ephemeral)
        // The API server rejects a container without an image; a template being edited may lack one.
        .filter_map(|(kind, name, image)| {
            image.as_ref().map(|image| ContainerImage { name: name.clone(), image: image.clone(), kind })
        })
        .collect()
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
            "volumes": [{"name": "v", "emptyDir": {}}]
        }});
        let spec = WorkloadKind::Pod.pod_spec(&object).unwrap();
        let parsed: PodSpec = serde_json::from_value(object["spec"].clone()).unwrap();
        assert_eq!(containers(&spec), containers(&parsed));
        assert_eq!(spec.image_pull_secrets, parsed.image_pull_secrets);
        assert_eq!(spec.service_account_name, parsed.service_account_name);
        assert_eq!(spec.node_name, parsed.node_name);
        assert_eq!(spec.node_selector, parsed.node_selector);
        assert_eq!(spec.affinity, parsed.affinity);
        assert_eq!(spec.tolerations, parsed.tolerations);
        assert!(spec.volumes.is_none(), "fields no check reads are not built");
    }

    /// One pass gives what metadata() and pod_spec_json() give, on every captured review.
    #[test]
    fn one_pass_reads_what_two_passes_read() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/data");
        let mut compared = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_none_or(|ext| ext != "json") {
                continue;
            }
            let body = std::fs::read(&path).unwrap();
            let Ok(request) = super::super::ReviewRequest::decode(&body) else { continue };
            let Some(kind) = WorkloadKind::from_group_kind(&request.kind.group, &request.kind.kind) else {
                continue;
            };
            for object in [request.object, request.old_object].into_iter().flatten() {
                let (metadata, spec) = kind.metadata_and_spec_json(object).unwrap();
                assert_eq!(metadata, object.metadata().unwrap(), "{}", path.display());
                assert_eq!(spec.unwrap(), kind.pod_spec_json(object).unwrap(), "{}", path.display());
                compared += 1;
            }
        }
        assert!(compared >= 20, "only {compared} objects compared");
    }

    #[test]
    fn one_pass_gives_way_on_any_fault() {
        let read = |text: &str| {
            let object: RawObject<'_> = serde_json::from_str(text).unwrap();
            WorkloadKind::Pod.metadata_and_spec_json(object)
        };
        let (metadata, spec) = read(
            r#"{"spec":{"containers":[{"name":"a","image":"x"}]},"spec":{"containers":[]},
               "metadata":{"ownerReferences":[{"controller":true}]}}"#,
        )
        .unwrap();
        assert!(metadata.controller_owned);
        assert!(spec.unwrap().containers.is_empty(), "a repeated key wins last");
        assert!(matches!(read(r#"{"metadata":{}}"#).unwrap().1, Err(WorkloadError::MissingSpec { .. })));
        // Faults are left to the two-pass reading, which says which part is broken.
        assert!(read(r#"{"metadata":{},"metadata":{}}"#).is_none());
        assert!(read(r#"{"metadata":{"ownerReferences":7},"spec":{}}"#).is_none());
        assert!(read(r#"{"metadata":{},"spec":{"containers":{}}}"#).is_none());
        assert!(read(r#"{"metadata":null,"spec":{}}"#).is_none());
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
        let container = |name: &str, image: &str| ContainerImage {
            name: name.into(),
            image: image.into(),
            kind: ContainerKind::App,
        };
        let old = vec![container("a", "x:1"), container("b", "y:1")];
        let new = vec![container("a", "x:1"), container("b", "y:2"), container("c", "z:1")];
        let changed = changed_containers(new, &old);
        assert_eq!(changed.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(), vec!["b", "c"]);
    }
}
