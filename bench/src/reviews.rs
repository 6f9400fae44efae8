//! AdmissionReview bodies as the API server sends them: the captured Pod CREATE
//! (`tests/data/01-create-pod-main-web.json`, managedFields and last-applied annotation included,
//! so the body has its real size) with its containers replaced by the images under test.

use anyhow::{Context, Result};
use pullguard_tests::webhook::fixture;
use serde_json::{Value, json};

const POD_CREATE: &str = "01-create-pod-main-web.json";
const POD_DELETE: &str = "23-delete-pod-main-web.json";

/// Builds Pod CREATE reviews with any list of images.
pub struct PodReviews {
    template: Value,
    container: Value,
}

impl PodReviews {
    pub fn load() -> Result<PodReviews> {
        let mut template = fixture(POD_CREATE)?;
        let spec = template.pointer_mut("/request/object/spec").context("the fixture has no pod spec")?;
        let container =
            spec.pointer("/containers/0").cloned().context("the fixture's pod has no container")?;
        if let Some(spec) = spec.as_object_mut() {
            // One list of containers, all under test; no pull secrets, because the benchmark has no
            // cluster to read them from (they would only add a PG200 info).
            spec.remove("initContainers");
            spec.remove("imagePullSecrets");
        }
        Ok(PodReviews { template, container })
    }

    /// The Pod as it is in a cluster: it names `secret` as its pull secret.
    pub fn with_pull_secret(mut self, secret: &str) -> PodReviews {
        self.template["request"]["object"]["spec"]["imagePullSecrets"] = json!([{ "name": secret }]);
        self
    }

    /// A Pod with one container per image (`c0`, `c1`, ...), with `uid` as the review's uid.
    pub fn pod(&self, uid: &str, images: &[String]) -> Value {
        let mut review = self.template.clone();
        review["request"]["uid"] = json!(uid);
        let containers: Vec<Value> = images
            .iter()
            .enumerate()
            .map(|(index, image)| {
                let mut container = self.container.clone();
                container["name"] = json!(format!("c{index}"));
                container["image"] = json!(image);
                container
            })
            .collect();
        review["request"]["object"]["spec"]["containers"] = Value::Array(containers);
        review
    }

    /// The serialized body of [`PodReviews::pod`].
    pub fn pod_body(&self, uid: &str, images: &[String]) -> Result<Vec<u8>> {
        Ok(serde_json::to_vec(&self.pod(uid, images))?)
    }
}

/// A Pod DELETE: answered without any lookup, so it opens a connection without touching a cache.
pub fn delete_body() -> Result<Vec<u8>> {
    Ok(serde_json::to_vec(&fixture(POD_DELETE)?)?)
}

/// What pullguard answered, reduced to what the benchmark checks.
#[derive(Debug)]
pub struct Answer {
    pub allowed: bool,
    pub codes: Vec<String>,
}

impl Answer {
    pub fn parse(body: &str) -> Result<Answer> {
        let review: Value = serde_json::from_str(body).with_context(|| format!("not JSON: {body}"))?;
        let response = review.get("response").context("no response in the review")?;
        let allowed = response.get("allowed").and_then(Value::as_bool).unwrap_or(false);
        // Codes come from the warnings, the status message and the findings audit annotation.
        let mut text = String::new();
        if let Some(warnings) = response.get("warnings").and_then(Value::as_array) {
            for warning in warnings.iter().filter_map(Value::as_str) {
                text.push_str(warning);
                text.push('\n');
            }
        }
        if let Some(message) = response.pointer("/status/message").and_then(Value::as_str) {
            text.push_str(message);
        }
        if let Some(findings) = response.pointer("/auditAnnotations/findings").and_then(Value::as_str) {
            text.push_str(findings);
        }
        let mut codes: Vec<String> = text
            .match_indices("PG")
            .filter_map(|(at, _)| text.get(at..at + 5))
            .filter(|code| code[2..].bytes().all(|b| b.is_ascii_digit()))
            .map(str::to_string)
            .collect();
        codes.sort();
        codes.dedup();
        Ok(Answer { allowed, codes })
    }

    /// Allowed, and no finding says a registry could not answer (PG5xx): the lookup really ran.
    pub fn ensure_clean(&self, what: &str) -> Result<()> {
        if !self.allowed || self.codes.iter().any(|code| code.starts_with("PG5") || code.starts_with("PG1")) {
            anyhow::bail!("{what}: expected an allowed answer with resolved images, got {self:?}");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pods_carry_exactly_the_images_given() {
        let reviews = PodReviews::load().unwrap();
        let images: Vec<String> = (0..10).map(|i| format!("127.0.0.1:1/r{i}:v1")).collect();
        let pod = reviews.pod("u-1", &images);
        let containers = pod.pointer("/request/object/spec/containers").unwrap().as_array().unwrap();
        assert_eq!(containers.len(), 10);
        assert_eq!(containers[3]["image"], "127.0.0.1:1/r3:v1");
        assert_eq!(pod["request"]["uid"], "u-1");
        assert!(pod.pointer("/request/object/spec/initContainers").is_none());
    }

    #[test]
    fn answers_are_reduced_to_verdict_and_codes() {
        let body = r#"{"response":{"uid":"u","allowed":true,"warnings":["PG501 registry unreachable"],
            "auditAnnotations":{"findings":"[{\"code\":\"PG300\"}]"}}}"#;
        let answer = Answer::parse(body).unwrap();
        assert!(answer.allowed);
        assert_eq!(answer.codes, vec!["PG300", "PG501"]);
        assert!(answer.ensure_clean("x").is_err());
    }
}
