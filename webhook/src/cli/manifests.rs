//! Reading manifests for `check -f`: multi-document YAML or JSON, `List` objects expanded, every
//! workload kind reduced to its containers.

use std::{collections::BTreeMap, io::Read, path::Path};

use base64::{Engine, engine::general_purpose::STANDARD};
use k8s_openapi::api::core::v1::PodSpec;
use pullguard_core::{
    credentials::{Keyring, SecretProblem, keyring_from_secret},
    workload::{ContainerImage, WorkloadKind, containers},
};
use serde_json::Value;

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("cannot read {source_name}: {error}")]
    Read { source_name: String, error: std::io::Error },
    #[error("{source_name}: not valid YAML or JSON: {message}")]
    Parse { source_name: String, message: String },
    #[error("{source_name}: {workload}: {message}")]
    Workload { source_name: String, workload: String, message: String },
}

/// One workload found in a manifest, with the containers to check.
#[derive(Debug, Clone)]
pub struct Workload {
    /// `Kind/namespace/name` (or `Kind/name` without a namespace).
    pub label: String,
    pub kind: WorkloadKind,
    /// `metadata.namespace`, when the manifest gives one.
    pub namespace: Option<String>,
    pub spec: PodSpec,
    pub containers: Vec<ContainerImage>,
    /// The file it came from and, per container name, the line of its `image` field.
    pub file: String,
    pub image_lines: Vec<(String, usize)>,
}

const MAX_MANIFEST_BYTES: u64 = 64 << 20;

pub fn read_source(path: &Path) -> Result<(String, String), ManifestError> {
    let source_name = path.display().to_string();
    let mut text = String::new();
    let result = if path == Path::new("-") {
        std::io::stdin().take(MAX_MANIFEST_BYTES).read_to_string(&mut text)
    } else {
        std::fs::File::open(path).and_then(|file| file.take(MAX_MANIFEST_BYTES).read_to_string(&mut text))
    };
    result.map_err(|error| ManifestError::Read { source_name: source_name.clone(), error })?;
    Ok((if source_name == "-" { "<stdin>".to_string() } else { source_name }, text))
}

pub fn workloads(source_name: &str, text: &str) -> Result<Vec<Workload>, ManifestError> {
    let documents = parse_documents(source_name, text)?;
    let mut found = Vec::new();
    for document in documents {
        collect(source_name, document, &mut found)?;
    }
    // Parsers give values, not positions: match each container's image to the `image:` lines of
    // the text, in order, so CI annotations point at the right line.
    let mut lines = image_lines(text);
    for workload in &mut found {
        workload.file = source_name.to_string();
        for container in &workload.containers {
            if let Some(entry) = lines.iter_mut().find(|(_, value, used)| !*used && *value == container.image)
            {
                entry.2 = true;
                workload.image_lines.push((container.name.clone(), entry.0));
            }
        }
    }
    Ok(found)
}

/// `(line, image, used)` for every `image:` / `"image":` field of YAML or JSON text (block or
/// flow style, several per line), 1-based lines.
fn image_lines(text: &str) -> Vec<(usize, String, bool)> {
    let mut found = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let line = line.split(" #").next().unwrap_or(line);
        let mut rest = line;
        while let Some(at) = rest.find("image") {
            let before = rest[..at].chars().last();
            let after = &rest[at + "image".len()..];
            rest = after;
            let after = after.strip_prefix('"').unwrap_or(after);
            let Some(value) = after.strip_prefix(':') else { continue };
            if !matches!(before, None | Some(' ' | '{' | ',' | '"' | '-')) {
                continue;
            }
            let value = value.trim_start();
            let value = match value.chars().next() {
                Some(quote @ ('"' | '\'')) => value[1..].split(quote).next().unwrap_or_default(),
                _ => value.split([',', '}', ' ']).next().unwrap_or_default(),
            };
            if !value.is_empty() {
                found.push((index + 1, value.to_string(), false));
            }
        }
    }
    found
}

/// A pull secret by name, usable or with the reason the kubelet would ignore it.
pub type NamedSecret = (String, Result<Keyring, SecretProblem>);

/// Secret manifests for `check --pull-secret`: every Secret in the text, read as the kubelet
/// would read it (its type picks the data key); `stringData` is accepted as kubectl writes it.
pub fn pull_secrets(source_name: &str, text: &str) -> Result<Vec<NamedSecret>, ManifestError> {
    let mut secrets = Vec::new();
    for document in parse_documents(source_name, text)? {
        let items = match document.get("kind").and_then(Value::as_str) {
            Some("List") => document.get("items").and_then(Value::as_array).cloned().unwrap_or_default(),
            _ => vec![document],
        };
        for item in
            items.into_iter().filter(|item| item.get("kind").and_then(Value::as_str) == Some("Secret"))
        {
            let name =
                item.pointer("/metadata/name").and_then(Value::as_str).unwrap_or("<unnamed>").to_string();
            let invalid = |message: String| ManifestError::Workload {
                source_name: source_name.to_string(),
                workload: format!("Secret/{name}"),
                message,
            };
            let mut data: BTreeMap<String, Vec<u8>> = BTreeMap::new();
            for (key, value) in item.get("data").and_then(Value::as_object).into_iter().flatten() {
                let text = value.as_str().unwrap_or_default();
                let bytes = STANDARD
                    .decode(text.trim())
                    .map_err(|_| invalid(format!("data key {key} is not base64")))?;
                data.insert(key.clone(), bytes);
            }
            for (key, value) in item.get("stringData").and_then(Value::as_object).into_iter().flatten() {
                data.insert(key.clone(), value.as_str().unwrap_or_default().as_bytes().to_vec());
            }
            let label = format!("secret {name} ({source_name})");
            let secret_type = item.get("type").and_then(Value::as_str);
            secrets.push((name, keyring_from_secret(&label, secret_type, &data)));
        }
    }
    Ok(secrets)
}

fn parse_documents(source_name: &str, text: &str) -> Result<Vec<Value>, ManifestError> {
    let trimmed = text.trim_start();
    if trimmed.starts_with('{') || trimmed.starts_with('[') {
        // JSON may hold several objects back to back, as `kubectl get -o json` pipelines produce.
        let mut documents = Vec::new();
        for document in serde_json::Deserializer::from_str(text).into_iter::<Value>() {
            documents.push(document.map_err(|error| ManifestError::Parse {
                source_name: source_name.to_string(),
                message: error.to_string(),
            })?);
        }
        return Ok(documents);
    }
    serde_saphyr::from_multiple::<Value>(text).map_err(|error| ManifestError::Parse {
        source_name: source_name.to_string(),
        message: error.to_string(),
    })
}

fn collect(source_name: &str, document: Value, found: &mut Vec<Workload>) -> Result<(), ManifestError> {
    match document {
        Value::Null => Ok(()),
        Value::Array(items) => items.into_iter().try_for_each(|item| collect(source_name, item, found)),
        Value::Object(ref object) => {
            let kind = object.get("kind").and_then(Value::as_str).unwrap_or_default();
            if kind == "List" || kind.ends_with("List") && object.get("items").is_some() {
                let items = object.get("items").and_then(Value::as_array).cloned().unwrap_or_default();
                return items.into_iter().try_for_each(|item| collect(source_name, item, found));
            }
            let api_version = object.get("apiVersion").and_then(Value::as_str).unwrap_or_default();
            let Some(workload_kind) = WorkloadKind::from_api_version(api_version, kind) else {
                return Ok(());
            };
            let name = document.pointer("/metadata/name").and_then(Value::as_str).unwrap_or("<unnamed>");
            let label = match document.pointer("/metadata/namespace").and_then(Value::as_str) {
                Some(namespace) => format!("{kind}/{namespace}/{name}"),
                None => format!("{kind}/{name}"),
            };
            let spec = workload_kind.pod_spec(&document).map_err(|error| ManifestError::Workload {
                source_name: source_name.to_string(),
                workload: label.clone(),
                message: error.to_string(),
            })?;
            let namespace =
                document.pointer("/metadata/namespace").and_then(Value::as_str).map(str::to_owned);
            found.push(Workload {
                label,
                kind: workload_kind,
                namespace,
                containers: containers(&spec),
                spec,
                file: String::new(),
                image_lines: Vec::new(),
            });
            Ok(())
        }
        _ => Err(ManifestError::Parse {
            source_name: source_name.to_string(),
            message: "a document is neither an object nor a list".to_string(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multi_document_yaml_with_a_list_and_a_service() {
        let text = r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: api, namespace: shop}
spec:
  template:
    spec:
      containers: [{name: api, image: "registry.example.com/team/api:v2"}]
---
apiVersion: v1
kind: Service
metadata: {name: api}
spec: {ports: [{port: 80}]}
---
apiVersion: v1
kind: List
items:
  - apiVersion: batch/v1
    kind: CronJob
    metadata: {name: nightly}
    spec: {schedule: "@daily", jobTemplate: {spec: {template: {spec: {containers: [{name: c, image: busybox}]}}}}}
"#;
        let found = workloads("test.yaml", text).unwrap();
        let labels: Vec<&str> = found.iter().map(|w| w.label.as_str()).collect();
        assert_eq!(labels, vec!["Deployment/shop/api", "CronJob/nightly"]);
        assert_eq!(found[0].containers[0].image, "registry.example.com/team/api:v2");
    }

    #[test]
    fn secret_manifests_as_kubectl_writes_them() {
        let config = r#"{"auths":{"r.example":{"username":"u","password":"p"}}}"#;
        let encoded = STANDARD.encode(config);
        let text = format!(
            "apiVersion: v1\nkind: Secret\nmetadata: {{name: regcred}}\ntype: kubernetes.io/dockerconfigjson\ndata:\n  .dockerconfigjson: {encoded}\n---\napiVersion: v1\nkind: Secret\nmetadata: {{name: opaque}}\ntype: Opaque\nstringData: {{.dockerconfigjson: '{config}'}}\n"
        );
        let secrets = pull_secrets("s.yaml", &text).unwrap();
        assert_eq!(secrets.len(), 2);
        assert!(secrets[0].1.is_ok());
        assert!(matches!(secrets[1].1, Err(SecretProblem::WrongType { .. })));
        let broken = "apiVersion: v1\nkind: Secret\nmetadata: {name: x}\ndata: {.dockerconfigjson: '!!'}\n";
        assert!(pull_secrets("b.yaml", broken).is_err());
    }

    #[test]
    fn image_lines_point_at_the_image_fields() {
        let text = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: a}\nspec:\n  template:\n    spec:\n      initContainers:\n        - name: init\n          image: busybox:1.36 # pinned\n      containers:\n        - name: app\n          image: \"r.example/app:v1\"\n        - image: busybox:1.36\n          name: side\n---\napiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  containers: [{name: c, image: 'r.example/app:v1'}]\n";
        let found = workloads("d.yaml", text).unwrap();
        assert_eq!(found[0].file, "d.yaml");
        assert_eq!(
            found[0].image_lines,
            vec![("init".to_string(), 9), ("app".to_string(), 12), ("side".to_string(), 13)]
        );
        assert_eq!(found[1].image_lines, vec![("c".to_string(), 20)]);
        let json = "{\"apiVersion\":\"v1\",\"kind\":\"Pod\",\"metadata\":{\"name\":\"p\"},\n \"spec\":{\"containers\":[\n  {\"name\":\"a\",\"image\":\"nginx:1\"}]}}";
        assert_eq!(workloads("p.json", json).unwrap()[0].image_lines, vec![("a".to_string(), 3)]);
    }

    #[test]
    fn json_documents_and_errors() {
        let text = r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p"},"spec":{"containers":[{"name":"a","image":"nginx"}]}}
{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"c"}}"#;
        assert_eq!(workloads("t.json", text).unwrap().len(), 1);
        assert!(matches!(workloads("t.json", "{nope"), Err(ManifestError::Parse { .. })));
        assert!(matches!(workloads("t.yaml", "a: [1,"), Err(ManifestError::Parse { .. })));
        let broken = r#"{"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"d"},"spec":{}}"#;
        assert!(matches!(workloads("t.json", broken), Err(ManifestError::Workload { .. })));
    }
}
