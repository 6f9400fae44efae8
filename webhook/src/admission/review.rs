//! The AdmissionReview wire format, read lean. The API server sends the whole object (and on
//! UPDATE the old one too), managedFields and last-applied annotations included; building all of
//! that into a JSON tree and then into typed objects was half the CPU of a warm admission. Only
//! the parts pullguard reads (the pod spec, controller ownership, the mode annotation) are ever
//! built; the parser skips everything else without allocating. Objects are read in the one pass
//! over the body; when that pass fails anywhere, the body is decoded again with the objects kept
//! as text, so that a broken object is reported for the part that is broken (and a Pod skipped
//! as controller-owned before its spec is judged) exactly as if it had been read in parts.

use std::{borrow::Cow, collections::BTreeMap};

use k8s_openapi::api::core::v1::PodSpec;
use kube::core::{GroupVersionKind, Status, admission::Operation};
use pullguard_core::workload::{ObjectFields, ObjectMetadata, ReadObject, WorkloadError, WorkloadKind};
use serde::{Deserialize, Deserializer, Serialize, de};
use serde_json::value::RawValue;

pub const API_VERSION: &str = "admission.k8s.io/v1";
pub const KIND: &str = "AdmissionReview";

#[derive(Debug, thiserror::Error)]
pub enum ReviewError {
    #[error("body is not an AdmissionReview: {0}")]
    Decode(#[source] serde_json::Error),
    #[error("unsupported AdmissionReview apiVersion {0:?}: only admission.k8s.io/v1 is served")]
    ApiVersion(String),
    #[error("body has kind {0:?}, not AdmissionReview")]
    Kind(String),
    #[error("AdmissionReview has no request")]
    NoRequest,
    #[error("AdmissionReview request has no uid")]
    NoUid,
}

/// `Object`: how `object` and `oldObject` are read ([`ObjectFields`] in the one pass, or
/// [`RawObject`] text); the rest of the envelope is the same either way.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", bound(deserialize = "Object: Deserialize<'de>"))]
struct Envelope<Object> {
    #[serde(default)]
    api_version: String,
    #[serde(default)]
    kind: String,
    request: Option<WireRequest<Object>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", bound(deserialize = "Object: Deserialize<'de>"))]
struct WireRequest<Object> {
    #[serde(default)]
    uid: String,
    kind: GroupVersionKind,
    #[serde(default)]
    sub_resource: Option<String>,
    #[serde(default)]
    name: String,
    #[serde(default)]
    namespace: Option<String>,
    operation: Operation,
    #[serde(default)]
    dry_run: bool,
    #[serde(default)]
    object: Option<Object>,
    #[serde(default)]
    old_object: Option<Object>,
}

/// The fields of `request` pullguard uses.
#[derive(Debug)]
pub struct ReviewRequest<'a> {
    pub uid: String,
    pub kind: GroupVersionKind,
    pub sub_resource: Option<String>,
    pub name: String,
    pub namespace: Option<String>,
    pub operation: Operation,
    pub dry_run: bool,
    pub object: Option<ObjectJson<'a>>,
    pub old_object: Option<ObjectJson<'a>>,
}

/// `object` or `oldObject` of a review.
#[derive(Debug)]
pub enum ObjectJson<'a> {
    /// Read in the pass over the body (an object of a workload kind, read without fault).
    Read(Box<ReadObject>),
    /// Kept as text, read part by part when asked.
    Raw(RawObject<'a>),
}

impl ObjectJson<'_> {
    /// Controller ownership and the mode annotation.
    pub fn metadata(&self) -> Result<Cow<'_, ObjectMetadata>, serde_json::Error> {
        match self {
            ObjectJson::Read(read) => Ok(Cow::Borrowed(&read.metadata)),
            ObjectJson::Raw(raw) => raw.metadata().map(Cow::Owned),
        }
    }

    /// The pod spec at `kind`'s path.
    pub fn pod_spec(&self, kind: WorkloadKind) -> Result<Cow<'_, PodSpec>, WorkloadError> {
        match self {
            ObjectJson::Read(read) => {
                read.spec.as_ref().map(Cow::Borrowed).ok_or_else(|| kind.missing_spec())
            }
            ObjectJson::Raw(raw) => kind.pod_spec_json(raw.json()).map(Cow::Owned),
        }
    }
}

impl<'a> ReviewRequest<'a> {
    /// Objects of workload kinds are read in the pass over the body; anything that pass cannot
    /// read is decoded again by [`ReviewRequest::decode_raw`], which then has the last word.
    pub fn decode(body: &'a [u8]) -> Result<ReviewRequest<'a>, ReviewError> {
        // JSON is UTF-8. The pass skips the strings it does not read without looking inside, where
        // keeping an object as text checks it: checked here once, for the whole body.
        if let Ok(text) = std::str::from_utf8(body)
            && let Ok(envelope) = serde_json::from_str::<Envelope<ObjectFields>>(text)
            && let Ok(request) = envelope.into_request()
            && let Some(kind) = WorkloadKind::from_group_kind(&request.kind.group, &request.kind.kind)
        {
            let read = |fields: ObjectFields| ObjectJson::Read(Box::new(ReadObject::new(fields, kind)));
            return Ok(request.with_objects(read));
        }
        ReviewRequest::decode_raw(body)
    }

    /// Every object kept as text.
    pub fn decode_raw(body: &'a [u8]) -> Result<ReviewRequest<'a>, ReviewError> {
        let envelope: Envelope<RawObject<'a>> = serde_json::from_slice(body).map_err(ReviewError::Decode)?;
        Ok(envelope.into_request()?.with_objects(ObjectJson::Raw))
    }
}

impl<Object> Envelope<Object> {
    fn into_request(self) -> Result<WireRequest<Object>, ReviewError> {
        if self.api_version != API_VERSION {
            return Err(ReviewError::ApiVersion(self.api_version));
        }
        if self.kind != KIND {
            return Err(ReviewError::Kind(self.kind));
        }
        let request = self.request.ok_or(ReviewError::NoRequest)?;
        if request.uid.is_empty() {
            return Err(ReviewError::NoUid);
        }
        Ok(request)
    }
}

impl<Object> WireRequest<Object> {
    fn with_objects<'a>(self, object: impl Fn(Object) -> ObjectJson<'a>) -> ReviewRequest<'a> {
        ReviewRequest {
            uid: self.uid,
            kind: self.kind,
            sub_resource: self.sub_resource,
            name: self.name,
            namespace: self.namespace,
            operation: self.operation,
            dry_run: self.dry_run,
            object: self.object.map(&object),
            old_object: self.old_object.map(&object),
        }
    }
}

/// A JSON object, unparsed. Anything but an object in `object`/`oldObject` is a malformed review.
#[derive(Debug, Clone, Copy)]
pub struct RawObject<'a>(&'a RawValue);

impl<'a> RawObject<'a> {
    pub fn json(&self) -> &'a str {
        self.0.get()
    }

    /// Controller ownership and the mode annotation; the rest of the metadata is skipped.
    pub fn metadata(&self) -> Result<ObjectMetadata, serde_json::Error> {
        #[derive(Deserialize)]
        struct Object {
            #[serde(default)]
            metadata: ObjectMetadata,
        }
        serde_json::from_str::<Object>(self.json()).map(|object| object.metadata)
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for RawObject<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = <&'a RawValue>::deserialize(deserializer)?;
        if !raw.get().starts_with('{') {
            return Err(de::Error::invalid_type(de::Unexpected::Other(raw.get()), &"a JSON object"));
        }
        Ok(RawObject(raw))
    }
}

/// The answer: `admission.k8s.io/v1` AdmissionReview with only `response`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReviewAnswer {
    api_version: &'static str,
    kind: &'static str,
    pub response: ReviewResponse,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReviewResponse {
    pub uid: String,
    pub allowed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<Status>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub audit_annotations: BTreeMap<String, String>,
}

impl ReviewAnswer {
    /// Allowed, echoing the request's uid (the API server matches the answer by it).
    pub fn allow(uid: &str) -> ReviewAnswer {
        ReviewAnswer {
            api_version: API_VERSION,
            kind: KIND,
            response: ReviewResponse {
                uid: uid.to_string(),
                allowed: true,
                status: None,
                warnings: Vec::new(),
                audit_annotations: BTreeMap::new(),
            },
        }
    }

    /// About the size of the serialized answer: the envelope plus every string it carries, with
    /// room for escaping (the findings annotation is JSON inside a JSON string).
    pub fn size_hint(&self) -> usize {
        let response = &self.response;
        let strings = response.uid.len()
            + response.warnings.iter().map(|warning| warning.len() + 3).sum::<usize>()
            + response
                .audit_annotations
                .iter()
                .map(|(key, value)| key.len() + value.len() + 6)
                .sum::<usize>()
            + response.status.as_ref().map_or(0, |status| status.message.len() + status.reason.len() + 64);
        160 + strings + strings / 8
    }

    /// The answer to a body that is not a review: there is no uid to echo.
    pub fn invalid(reason: &str) -> ReviewAnswer {
        let mut answer = ReviewAnswer::allow("");
        answer.response.allowed = false;
        answer.response.status = Some(Status::failure(reason, "InvalidRequest").with_code(400));
        answer
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn review(request: &str) -> String {
        format!(r#"{{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{request}}}"#)
    }

    #[test]
    fn objects_stay_raw_and_metadata_is_read_lean() {
        let body = review(
            r#"{"uid":"u1","kind":{"group":"","version":"v1","kind":"Pod"},"operation":"CREATE",
            "object":{"metadata":{"name":"p","managedFields":[{"manager":"kubectl"}],
              "ownerReferences":[{"kind":"ReplicaSet","controller":true}],
              "annotations":{"a":"{\"big\":1}","pullguard.io/mode":"warn"}},
              "spec":{"containers":[]}},
            "oldObject":null}"#,
        );
        for request in [ReviewRequest::decode(body.as_bytes()), ReviewRequest::decode_raw(body.as_bytes())] {
            let request = request.unwrap();
            assert_eq!(request.uid, "u1");
            assert_eq!(request.operation, Operation::Create);
            assert!(request.old_object.is_none());
            let object = request.object.unwrap();
            if let ObjectJson::Raw(raw) = &object {
                assert!(raw.json().starts_with("{\"metadata\""));
            }
            let metadata = object.metadata().unwrap();
            assert!(metadata.controller_owned());
            assert_eq!(metadata.mode_annotation.as_deref(), Some("warn"));
        }
    }

    #[test]
    fn envelope_errors() {
        let pod = r#"{"uid":"u","kind":{"group":"","version":"v1","kind":"Pod"},"operation":"CREATE"}"#;
        assert!(ReviewRequest::decode(review(pod).as_bytes()).is_ok());
        let cases = [
            (review(r#"{"kind":{"group":"","version":"v1","kind":"Pod"},"operation":"CREATE"}"#), "no uid"),
            (review("null"), "no request"),
            (review(&pod.replace("CREATE", "EXPLODE")), "operation"),
            (review(&pod.replace(r#""operation""#, r#""object":"pod","operation""#)), "object"),
            (pod.to_string(), "kind"),
        ];
        for (body, what) in cases {
            assert!(ReviewRequest::decode(body.as_bytes()).is_err(), "{what}");
            assert!(ReviewRequest::decode_raw(body.as_bytes()).is_err(), "{what}");
        }
    }

    #[test]
    fn answers_serialize_like_the_api_server_expects() {
        let mut answer = ReviewAnswer::allow("u1");
        answer.response.warnings.push("w".into());
        let json = serde_json::to_value(&answer).unwrap();
        assert_eq!(json["apiVersion"], "admission.k8s.io/v1");
        assert_eq!(json["kind"], "AdmissionReview");
        assert_eq!(json["response"]["uid"], "u1");
        assert_eq!(json["response"]["allowed"], true);
        assert_eq!(json["response"]["warnings"][0], "w");
        assert!(json["response"].get("status").is_none());
        let text = serde_json::to_string(&answer).unwrap();
        assert!(answer.size_hint() >= text.len() && answer.size_hint() < 2 * text.len() + 200, "{text}");
        let invalid = serde_json::to_value(ReviewAnswer::invalid("bad")).unwrap();
        assert_eq!(invalid["response"]["allowed"], false);
        assert_eq!(invalid["response"]["status"]["code"], 400);
    }

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
}
