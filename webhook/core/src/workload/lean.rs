//! Reading only what pullguard uses of an object: its controller, its mode annotation, and the
//! fields of the pod spec at its kind's path. Everything else is skipped unbuilt: last-applied
//! annotations, managedFields, env, probes and resources were most of an admission's allocations.

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

use super::{WorkloadError, WorkloadKind};
use crate::config::MODE_KEY;

impl WorkloadKind {
    /// The pod spec of an object of this kind (the whole object, as parsed JSON or YAML).
    pub fn pod_spec(self, object: &Value) -> Result<PodSpec, WorkloadError> {
        self.extract(|keys| SpecAt(keys).deserialize(object))
    }

    /// The pod spec of an object of this kind, parsed straight from its JSON text.
    pub fn pod_spec_json(self, object: &str) -> Result<PodSpec, WorkloadError> {
        self.extract(|keys| {
            let mut parser = serde_json::Deserializer::from_str(object);
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

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectMetadata {
    /// The owner reference with `controller: true`, if any.
    #[serde(default, rename = "ownerReferences", deserialize_with = "controller_of")]
    pub controller: Option<Controller>,
    #[serde(default, rename = "annotations", deserialize_with = "mode_annotation")]
    pub mode_annotation: Option<String>,
}

/// The controller that made an object (a Deployment for its ReplicaSets, a CronJob for its Jobs).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Controller {
    pub kind: String,
    pub name: String,
}

impl ObjectMetadata {
    pub fn controller_owned(&self) -> bool {
        self.controller.is_some()
    }
}

/// Reads `ownerReferences` down to the one with `controller: true`.
fn controller_of<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Controller>, D::Error> {
    #[derive(Deserialize)]
    struct Owner {
        #[serde(default)]
        controller: Option<bool>,
        #[serde(default)]
        kind: String,
        #[serde(default)]
        name: String,
    }
    let owners = Option::<Vec<Owner>>::deserialize(deserializer)?;
    Ok(owners
        .into_iter()
        .flatten()
        .find(|owner| owner.controller == Some(true))
        .map(|owner| Controller { kind: owner.kind, name: owner.name }))
}

/// Keeps only `pullguard.io/mode`; other annotations (last-applied configs can be large) are skipped.
fn mode_annotation<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<String>, D::Error> {
    struct ModeOnly;
    impl<'de> Visitor<'de> for ModeOnly {
        type Value = Option<String>;
        fn expecting(&self, formatter: &mut std::fmt::Formatter) -> std::fmt::Result {
            formatter.write_str("a map of annotations")
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut mode = None;
            while let Some(key) = map.next_key_seed(KeyIs(MODE_KEY))? {
                if key {
                    mode = Some(map.next_value::<String>()?);
                } else {
                    map.next_value::<IgnoredAny>()?;
                }
            }
            Ok(mode)
        }
    }
    deserializer.deserialize_any(ModeOnly)
}

/// A map key compared in place, without allocating it.
struct KeyIs(&'static str);

impl<'de> de::DeserializeSeed<'de> for KeyIs {
    type Value = bool;
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<bool, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeyIs {
    type Value = bool;
    fn expecting(&self, formatter: &mut std::fmt::Formatter) -> std::fmt::Result {
        formatter.write_str("a string key")
    }
    fn visit_str<E: de::Error>(self, key: &str) -> Result<bool, E> {
        Ok(key == self.0)
    }
}
