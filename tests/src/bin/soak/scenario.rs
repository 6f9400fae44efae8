//! What the load asks about: images seeded in the registry, the pullguard config that reaches it,
//! and the AdmissionReview bodies (a captured Pod with its three containers pointed at them).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, ensure};
use pullguard_tests::{
    registry::RegistryProcess,
    seed::{ImageSpec, LayerSpec, Seeder},
    webhook::{fixture, spec_pointer},
};
use serde_json::Value;

use crate::faults::Plan;

/// Stable tags: looked up once, then served from the cache and revalidated with a HEAD per `tagTtl`.
const CACHED_TAGS: [&str; 6] = ["v1", "v2", "v3", "v4", "v5", "v6"];
/// Tags re-pushed with new content during the soak, so revalidations find a changed digest.
pub const ROLLING_TAGS: [&str; 3] = ["r1", "r2", "r3"];
/// Never pushed: PG101 (deny) whenever the registry can be asked, or its miss is still cached.
const MISSING_TAG: &str = "v404";
/// Stands for the uid in the body templates; replaced per request.
const UID_PLACEHOLDER: &str = "soak-uid-placeholder-0000000000000";

/// Which image the pod's `app` container names; decides the expected answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    Cached,
    Rolling,
    Missing,
}

struct Template {
    kind: Kind,
    body: String,
}

pub struct Scenario {
    host: String,
    templates: Vec<Template>,
}

impl Scenario {
    /// Seeds every image the bodies name and builds the bodies.
    pub async fn seed(registry: &RegistryProcess, seeder: &Seeder) -> Result<Scenario> {
        let host = registry.host();
        let amd64 = ImageSpec::linux("amd64");
        for tag in CACHED_TAGS {
            seeder.push_image("shop/web", tag, &amd64).await?;
        }
        for tag in ROLLING_TAGS {
            seeder.push_image("shop/rolling", tag, &rolling_spec(0)).await?;
        }
        seeder.push_image("library/busybox", "1.36", &amd64).await?;
        let sidecar = seeder.push_image("example/sidecar", "s1", &amd64).await?;
        // The sidecar is pinned by digest (24 h cache entry), the init container by tag.
        let fixed = [
            ("sidecar", format!("{host}/example/sidecar@{}", sidecar.digest)),
            ("init", format!("{host}/library/busybox:1.36")),
        ];

        // 16 of 20 requests name a cached tag, 3 a rolling one (one each), 1 the missing tag.
        let mut apps: Vec<(Kind, String)> = Vec::new();
        for slot in 0..20 {
            let (kind, image) = match slot {
                0..16 => (Kind::Cached, format!("{host}/shop/web:{}", CACHED_TAGS[slot % CACHED_TAGS.len()])),
                16..19 => (Kind::Rolling, format!("{host}/shop/rolling:{}", ROLLING_TAGS[slot - 16])),
                _ => (Kind::Missing, format!("{host}/shop/web:{MISSING_TAG}")),
            };
            apps.push((kind, image));
        }
        let mut templates = Vec::new();
        for (kind, app) in apps {
            templates.push(Template { kind, body: pod_review(&app, &fixed)? });
        }
        Ok(Scenario { host, templates })
    }

    /// The body of request `index` (and the kind of answer it should get), with its own uid.
    pub fn request(&self, index: u64, uid: &str) -> (Kind, String) {
        let template = &self.templates[(index % self.templates.len() as u64) as usize];
        (template.kind, template.body.replacen(UID_PLACEHOLDER, uid, 1))
    }

    /// The pullguard config: the loopback registry named (so the SSRF guard lets it through) and
    /// declared plain HTTP; short tag and miss TTLs so a registry outage outlives cache entries
    /// and revalidations happen all through the soak.
    pub fn write_config(&self, path: &Path, plan: &Plan) -> Result<PathBuf> {
        let text = format!(
            "mode: enforce\nregistryUnavailable: allow\ndeadline: 8s\nlookupTimeout: 2s\n\
             cache: {{tagTtl: {tag}s, missTtl: {miss}s}}\n\
             registries:\n  - host: \"{host}\"\n    insecure: true\n",
            tag = plan.tag_ttl.as_secs(),
            miss = plan.miss_ttl.as_secs(),
            host = self.host,
        );
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
        Ok(path.to_path_buf())
    }
}

/// A rolling tag's content at its `generation`-th push (0 when seeded): one more layer each time,
/// so every push is a digest pullguard has never seen and a revalidation must fetch it.
pub fn rolling_spec(generation: u64) -> ImageSpec {
    let layers = usize::try_from(generation).unwrap_or(usize::MAX).saturating_add(1);
    ImageSpec::linux("amd64").with_layers(vec![LayerSpec::small(); layers])
}

/// The captured `kubectl run`-style Pod (app, sidecar, init), its containers pointed at the
/// seeded images. Its `imagePullSecrets` stay: without a cluster they cannot be read, which is
/// an info finding, as in a deployment whose API server is briefly away.
fn pod_review(app: &str, fixed: &[(&str, String)]) -> Result<String> {
    let mut review = fixture("01-create-pod-main-web.json")?;
    let pointer = spec_pointer(&review, "object");
    let spec = review.pointer_mut(&pointer).context("the fixture has no pod spec")?;
    let mut named = 0;
    for list in ["containers", "initContainers"] {
        for container in spec.get_mut(list).and_then(Value::as_array_mut).into_iter().flatten() {
            let name = container.get("name").and_then(Value::as_str).unwrap_or_default().to_owned();
            let image = match fixed.iter().find(|(fixed_name, _)| *fixed_name == name) {
                Some((_, image)) => image.clone(),
                None if name == "app" => app.to_owned(),
                None => continue,
            };
            container["image"] = Value::String(image);
            named += 1;
        }
    }
    ensure!(named == 3, "the fixture's containers changed: {named} of app, sidecar, init found");
    review["request"]["uid"] = Value::String(UID_PLACEHOLDER.to_owned());
    let body = serde_json::to_string(&review)?;
    ensure!(body.matches(UID_PLACEHOLDER).count() == 1, "the uid placeholder must occur once");
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_name_the_seeded_images_and_carry_one_uid() {
        let fixed = [
            ("sidecar", "127.0.0.1:1/example/sidecar@sha256:00".to_owned()),
            ("init", "127.0.0.1:1/library/busybox:1.36".to_owned()),
        ];
        let body = pod_review("127.0.0.1:1/shop/web:v1", &fixed).unwrap();
        let scenario =
            Scenario { host: "127.0.0.1:1".into(), templates: vec![Template { kind: Kind::Cached, body }] };
        let (kind, body) = scenario.request(7, "uid-7");
        let review: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(kind, Kind::Cached);
        assert_eq!(review["request"]["uid"], "uid-7");
        let images: Vec<&str> = ["containers", "initContainers"]
            .iter()
            .flat_map(|list| review["request"]["object"]["spec"][list].as_array().unwrap())
            .filter_map(|container| container["image"].as_str())
            .collect();
        assert!(images.contains(&"127.0.0.1:1/shop/web:v1"), "{images:?}");
        assert!(images.iter().all(|image| image.starts_with("127.0.0.1:1/")), "{images:?}");
    }

    #[test]
    fn rolling_content_changes_every_push() {
        assert_ne!(rolling_spec(0), rolling_spec(1));
        assert_ne!(rolling_spec(1), rolling_spec(2));
    }
}
