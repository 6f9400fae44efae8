//! The `response` of an AdmissionReview as a typed value, so tests read `answer.allowed` and
//! `answer.codes()` instead of JSON pointers.

use std::{collections::BTreeMap, future::Future, time::Duration};

use anyhow::{Context, Result, ensure};
use serde::Deserialize;
use serde_json::Value;

/// Something that answers AdmissionReviews: the router in-process (`in_process::InProcess`) or
/// the webhook over HTTPS (`webhook::Webhook`). Tests are written once against this.
pub trait Reviews: Sync {
    /// Posts `body` to `/validate`: (HTTP status, body text).
    fn post_raw(&self, body: Vec<u8>) -> impl Future<Output = Result<(u16, String)>> + Send;

    /// Sends a review: (HTTP status, response body as JSON).
    fn post(&self, review: &Value) -> impl Future<Output = Result<(u16, Value)>> + Send {
        async move {
            let (status, text) = self.post_raw(serde_json::to_vec(review)?).await?;
            let body =
                serde_json::from_str(&text).with_context(|| format!("HTTP {status}: not JSON: {text}"))?;
            Ok((status, body))
        }
    }

    /// Sends a review and returns its answer; fails unless the HTTP status is 200.
    fn review(&self, review: &Value) -> impl Future<Output = Result<Answer>> + Send {
        async move {
            let (status, body) = self.post(review).await?;
            ensure!(status == 200, "HTTP {status}: {body}");
            Answer::from_review(&body)
        }
    }

    /// Sends `review` again and again (bounded by `limit`) until its answer is `accepted`, for
    /// changes the webhook learns in the background (watched nodes, namespaces, secrets).
    fn review_until(
        &self,
        review: &Value,
        what: &str,
        limit: Duration,
        accepted: impl Fn(&Answer) -> bool + Send + Sync,
    ) -> impl Future<Output = Result<Answer>> + Send {
        async move {
            // The last answer (or failure) is what a test that gives up must show.
            let last = std::sync::Mutex::new(String::from("no answer"));
            let found = crate::wait::poll(what, limit, || async {
                let (seen, answer) = match self.review(review).await {
                    Ok(answer) if accepted(&answer) => return Some(answer),
                    Ok(answer) => (format!("{answer:?}"), None),
                    Err(error) => (format!("{error:#}"), None),
                };
                if let Ok(mut last) = last.lock() {
                    *last = seen;
                }
                answer
            })
            .await;
            let last = last.lock().map(|last| last.clone()).unwrap_or_default();
            found.with_context(|| format!("the last answer was {last}"))
        }
    }
}

/// What pullguard answered one review with.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Answer {
    pub uid: String,
    pub allowed: bool,
    /// `status.code`, set on denials and on reviews that could not be decoded.
    #[serde(skip)]
    pub code: Option<u16>,
    /// `status.message`: the readable reason; empty when there is none.
    #[serde(skip)]
    pub message: String,
    #[serde(default, deserialize_with = "null_as_default")]
    pub warnings: Vec<String>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub audit_annotations: BTreeMap<String, String>,
}

#[derive(Deserialize)]
struct Status {
    code: Option<u16>,
    #[serde(default)]
    message: String,
}

fn null_as_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

impl Answer {
    /// The answer inside an AdmissionReview response body.
    pub fn from_review(review: &Value) -> Result<Self> {
        let response = review.get("response").with_context(|| format!("no response in {review}"))?;
        let mut answer: Self = serde_json::from_value(response.clone())
            .with_context(|| format!("unexpected answer {response}"))?;
        if let Some(status) = response.get("status").filter(|status| !status.is_null()) {
            let status: Status = serde_json::from_value(status.clone()).context("answer status")?;
            answer.code = status.code;
            answer.message = status.message;
        }
        Ok(answer)
    }

    /// [`Answer::from_review`] of a response body as text.
    pub fn parse(text: &str) -> Result<Self> {
        Self::from_review(&serde_json::from_str(text).context("the answer is not JSON")?)
    }

    /// The audit annotation `key`, if set.
    pub fn annotation(&self, key: &str) -> Option<&str> {
        self.audit_annotations.get(key).map(String::as_str)
    }

    /// The codes of the `findings` audit annotation, sorted (one per finding, so a code may
    /// repeat).
    pub fn codes(&self) -> Vec<String> {
        let findings: Vec<Value> =
            self.annotation("findings").and_then(|text| serde_json::from_str(text).ok()).unwrap_or_default();
        let mut codes: Vec<String> =
            findings.iter().filter_map(|finding| finding["code"].as_str().map(str::to_owned)).collect();
        codes.sort();
        codes
    }

    /// Whether any warning line contains `text`.
    pub fn warns(&self, text: &str) -> bool {
        self.warnings.iter().any(|warning| warning.contains(text))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn reads_a_denial_and_an_allowance() {
        let denial = json!({"response": {
            "uid": "u1", "allowed": false,
            "status": {"code": 403, "message": "no such tag"},
            "warnings": ["PG101 x"],
            "auditAnnotations": {"findings": r#"[{"code":"PG301"},{"code":"PG101"}]"#, "mode": "enforce"},
        }});
        let answer = Answer::from_review(&denial).unwrap();
        assert_eq!((answer.uid.as_str(), answer.allowed, answer.code), ("u1", false, Some(403)));
        assert_eq!(answer.message, "no such tag");
        assert_eq!(answer.codes(), ["PG101", "PG301"]);
        assert!(answer.warns("PG101"));
        assert_eq!(answer.annotation("mode"), Some("enforce"));

        let allowed = Answer::parse(r#"{"response":{"uid":"u2","allowed":true,"warnings":null}}"#).unwrap();
        assert!(allowed.allowed && allowed.warnings.is_empty() && allowed.codes().is_empty());
        assert!(Answer::parse("{}").is_err());
    }
}
