//! Workload kinds -> the pod spec inside them. Only the pod spec is deserialized (into
//! k8s-openapi's `PodSpec`): the parser walks the kind's path and skips every other field
//! unbuilt, from raw JSON (admission) or from an already parsed document (`check -f`, `audit`).
//! Within the spec, only the fields pullguard reads are built (`SpecFields`): volumes (but for
//! image volumes), env, probes and resources were most of an admission's allocations.

mod containers;
mod lean;

pub use self::{
    containers::{
        ContainerImage, ContainerKind, PullPolicy, changed_containers, containers, pull_inputs_changed,
    },
    lean::{Controller, ObjectFields, ObjectMetadata, ReadObject},
};

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
    pub(crate) fn spec_path(self) -> (&'static str, &'static [&'static str]) {
        match self {
            WorkloadKind::Pod => ("/spec", &["spec"]),
            WorkloadKind::CronJob => {
                ("/spec/jobTemplate/spec/template/spec", &["spec", "jobTemplate", "spec", "template", "spec"])
            }
            _ => ("/spec/template/spec", &["spec", "template", "spec"]),
        }
    }

    pub fn missing_spec(self) -> WorkloadError {
        WorkloadError::MissingSpec { kind: self.name().to_string(), path: self.spec_path().0 }
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::PodSpec;
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
}
