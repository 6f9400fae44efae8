//! Inputs in the spirit of the fuzz targets (`fuzz/`, run by `tests/fuzz.sh`): every parser that
//! sees attacker- or registry-controlled bytes must answer with a value or an error, never panic.
//! Each table row runs under `catch_unwind`, so one run names every row that panics.
//!
//! Crashes the fuzzers find are added here, minimised, as rows of their own (marked `FUZZ-FOUND`).

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

use std::{collections::BTreeMap, panic};

use base64::{Engine, engine::general_purpose::STANDARD};
use pullguard::admission::{ReviewError, ReviewRequest};
use pullguard_core::{
    credentials::{DOCKER_CFG, DOCKER_CONFIG_JSON, Keyring, keyring_from_secret},
    manifest::{self, ConfigPlatform, Parsed},
    reference::ImageRef,
    workload::{WorkloadKind, changed_containers, containers},
};
use serde_json::{Value, json};

const HEX: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

/// Runs every row (a label and its data); fails once, naming every row that panicked or gave
/// the wrong answer.
fn run_table<T>(what: &str, rows: &[(String, T)], check: impl Fn(&T) -> Result<(), String>) {
    let mut failures = Vec::new();
    for (label, row) in rows {
        match panic::catch_unwind(panic::AssertUnwindSafe(|| check(row))) {
            Ok(Ok(())) => {}
            Ok(Err(wrong)) => failures.push(format!("{label}: {wrong}")),
            Err(payload) => {
                let message = payload
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                failures.push(format!("{label}: PANICKED: {message}"));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{what}: {} of {} rows failed:\n{}",
        failures.len(),
        rows.len(),
        failures.join("\n")
    );
}

/// A row labelled by its own (shortened) text.
fn labelled(inputs: Vec<String>) -> Vec<(String, String)> {
    inputs.into_iter().map(|input| (format!("{:?}", shorten(&input)), input)).collect()
}

fn shorten(text: &str) -> String {
    if text.len() > 80 { format!("{}... ({} bytes)", &text[..80], text.len()) } else { text.to_string() }
}

// ---------------------------------------------------------------------------------------------
// Image references

/// The invariants the `reference` fuzz target asserts, for a reference that parsed.
fn round_trips(r: &ImageRef) -> Result<(), String> {
    let normalized = r.normalized();
    let again = ImageRef::parse(&normalized).map_err(|e| format!("normalized {normalized:?} fails: {e}"))?;
    let expected_tag = r.tag().or(r.digest().is_none().then_some("latest"));
    if (again.registry(), again.repository(), again.digest(), again.tag())
        != (r.registry(), r.repository(), r.digest(), expected_tag)
    {
        return Err(format!("{normalized:?} re-parses as {again:?}"));
    }
    if r.manifest_reference().is_empty() || !normalized.starts_with(&r.name()) {
        return Err(format!("bad manifest reference or name for {normalized:?}"));
    }
    Ok(())
}

#[test]
fn odd_references_are_rejected_without_panicking() {
    let mut inputs: Vec<String> = [
        "[::1]:/a",
        "a@sha256:",
        "a@",
        "@",
        "@sha256:",
        ":",
        "::",
        "/",
        "//",
        "a/",
        "/a",
        "a:",
        ":a",
        "a/:b",
        "[",
        "]",
        "[]",
        "[]/a",
        "[/a",
        "[::1]",
        "[::1]:",
        "[::1]:5000",
        "[::1]:5000/",
        "[::1]]/a",
        "[[::1]]/a",
        "[::1]:5000:6000/a",
        "[::1]a/b",
        "[::1]:x/a",
        "[1:2:3:4:5:6:7:8:9]/a",
        "[::1%]/a",
        "localhost:/a",
        "localhost:/",
        "a.b:/c",
        ".a/b",
        "a./b",
        "a..b/c",
        "-/a",
        "a/-",
        "a/b:",
        "a/b@sha256:",
        "a/b:@sha256:",
        "a:b@",
        "a@b@c",
        "a@sha256:@",
        "a:tag:tag",
        "a:tag/b",
        "a\u{0}b",
        "a\u{7f}",
        "ñ",
        "😀/a",
        "a/😀",
        "docker.io/",
        "index.docker.io/",
        "docker.io/library/",
        "localhost/",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    inputs.extend([
        format!("a@sha256:{}", HEX.to_uppercase()),
        format!("a@sha256:{}", &HEX[1..]),
        format!("a@sha256:{HEX}@sha256:{HEX}"),
        format!("a@sha256:{HEX}:tag"),
        format!("a@sha256:{HEX}/b"),
        format!("a@sha384:{HEX}"),
        format!("a@sha512:{HEX}"),
        format!("a:{}", "t".repeat(129)),
        format!("{}/a", "h.".repeat(2000)),
        format!("a/{}", "b/".repeat(2000)),
        format!("a.io/{}", "b".repeat(256)),
        "a".repeat(4097),
        format!("[{}]/a", ":".repeat(4000)),
        "[".repeat(4096),
        ":".repeat(4096),
        "@".repeat(4096),
        "/".repeat(4096),
    ]);
    run_table("references that must be rejected", &labelled(inputs), |input| match ImageRef::parse(input) {
        Err(_) => Ok(()),
        Ok(r) => Err(format!("{} was accepted as {r:?}", shorten(input))),
    });
}

#[test]
fn odd_but_valid_references_round_trip() {
    let inputs = [
        "a".to_string(),
        "0".to_string(),
        "a:0".to_string(),
        "a:_".to_string(),
        "a:A".to_string(),
        "[::]/a".to_string(),
        "[::1]:0/a".to_string(),
        "[::ffff:0:0]:65536/a".to_string(),
        "Foo/bar".to_string(),
        "FOO:1/bar".to_string(),
        "localhost:5000/a:5000".to_string(),
        "a-----b/c".to_string(),
        "a__b/c_d.e".to_string(),
        "localhost".to_string(),
        // Any number of port digits, as distribution's grammar has it.
        "host:99999999999999999999999/a".to_string(),
        "index.docker.io/a".to_string(),
        "docker.io/library/library/a".to_string(),
        format!("{HEX}:v1"),
        format!("{HEX}/a"),
        format!("a@sha256:{HEX}"),
        format!("[::1]/a:b@sha256:{HEX}"),
        format!("a.io/{}", "b".repeat(255)),
        format!("a:{}", "t".repeat(128)),
    ];
    run_table("references that must parse and round-trip", &labelled(inputs.to_vec()), |input| {
        let r = ImageRef::parse(input).map_err(|e| format!("rejected: {e}"))?;
        round_trips(&r)
    });
}

// ---------------------------------------------------------------------------------------------
// AdmissionReview bodies

fn review(kind: (&str, &str), object: Value) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
            "kind": {"group": kind.0, "version": "v1", "kind": kind.1},
            "resource": {"group": kind.0, "version": "v1", "resource": "x"},
            "operation": "CREATE",
            "userInfo": {},
            "object": object,
        }
    }))
    .unwrap()
}

fn pod(spec: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": spec})
}

fn nested(depth: usize, leaf: &str) -> String {
    format!("{}{leaf}{}", "[".repeat(depth), "]".repeat(depth))
}

/// What the handler does with a body: decode, pod spec of the kind in object and oldObject,
/// containers. Returns how many containers the object has, or the first error. The objects read
/// in the pass over the body must give what their text read part by part gives.
fn walk_review(body: &[u8]) -> Result<usize, String> {
    let walked = walk_decoded(ReviewRequest::decode(body));
    assert_eq!(walked, walk_decoded(ReviewRequest::decode_raw(body)), "one pass and parts differ");
    walked
}

fn walk_decoded(decoded: Result<ReviewRequest<'_>, ReviewError>) -> Result<usize, String> {
    let request = decoded.map_err(|e| e.to_string())?;
    let kind = WorkloadKind::from_group_kind(&request.kind.group, &request.kind.kind)
        .ok_or_else(|| "not a workload kind".to_string())?;
    let mut found = Vec::new();
    for object in [request.object, request.old_object].into_iter().flatten() {
        object.metadata().map_err(|e| e.to_string())?;
        let spec = object.pod_spec(kind).map_err(|e| e.to_string())?;
        found.push(containers(&spec));
    }
    let count = found.first().map_or(0, Vec::len);
    let mut lists = found.into_iter();
    if let (Some(new), Some(old)) = (lists.next(), lists.next()) {
        for container in changed_containers(new, &old) {
            let _ = ImageRef::parse(&container.image);
        }
    }
    Ok(count)
}

/// A review of a Pod whose object is the given raw JSON text (for bodies `json!` cannot build).
fn raw_pod_review(object: &str) -> Vec<u8> {
    let envelope = review(("", "Pod"), json!("OBJECT")).to_vec();
    let envelope = String::from_utf8(envelope).unwrap();
    envelope.replace(r#""OBJECT""#, object).into_bytes()
}

#[test]
fn odd_admission_reviews_give_errors_not_panics() {
    const DEEP: usize = 100_000;
    let pod_review = |spec: Value| review(("", "Pod"), pod(spec));
    let many: Vec<Value> =
        (0..20_000).map(|i| json!({"name": format!("c{i}"), "image": format!("r.io/a/b{i}:v{i}")})).collect();
    let valid = pod_review(json!({"containers": [{"name": "a", "image": "nginx"}]}));
    let edited = |edit: &dyn Fn(&mut Value)| {
        let mut body: Value = serde_json::from_slice(&valid).unwrap();
        edit(&mut body);
        serde_json::to_vec(&body).unwrap()
    };
    let within_limit: Value = serde_json::from_str(&nested(100, "1")).unwrap();
    let bad_limits = json!({"limits": {"cpu": "-1e999999Ei", "memory": "\u{0}"}});

    // (name, body, Some(containers in the object) when it must be readable, None for an error)
    let cases: Vec<(&str, Vec<u8>, Option<usize>)> = vec![
        ("empty body", vec![], None),
        ("null", b"null".to_vec(), None),
        ("not UTF-8", vec![0xff, 0xfe, b'{', 0x80], None),
        ("NUL bytes", vec![0; 64], None),
        ("truncated", valid[..50].to_vec(), None),
        ("deep array body", nested(DEEP, "").into_bytes(), None),
        ("deep object body", format!("{}1{}", r#"{"a":"#.repeat(DEEP), "}".repeat(DEEP)).into_bytes(), None),
        // Fields no check reads (args, grace period, ...) are skipped unbuilt, and serde_json skips
        // without recursing: readable, with no stack to overflow. The API server validates them.
        (
            "deeply nested args in a container",
            raw_pod_review(&format!(
                r#"{{"spec":{{"containers":[{{"name":"a","image":"x","args":{}}}]}}}}"#,
                nested(DEEP, r#""x""#)
            )),
            Some(1),
        ),
        (
            "nesting within the parser's limit, in an unknown field",
            pod_review(json!({"containers": [{"name": "a", "image": "x"}], "x": within_limit})),
            Some(1),
        ),
        ("v1beta1", edited(&|body| body["apiVersion"] = json!("admission.k8s.io/v1beta1")), None),
        ("empty uid", edited(&|body| body["request"]["uid"] = json!("")), None),
        ("no request", edited(&|body| body["request"] = Value::Null), None),
        ("20000 containers", pod_review(json!({"containers": many})), Some(20_000)),
        ("containers is a string", pod_review(json!({"containers": "nope"})), None),
        ("image is a number", pod_review(json!({"containers": [{"name": "a", "image": 1e300}]})), None),
        (
            "grace period past i64",
            pod_review(json!({"terminationGracePeriodSeconds": 1e300, "containers": [{"name": "a"}]})),
            Some(0),
        ),
        (
            "nonsense quantities (strings to the API types)",
            pod_review(json!({"containers": [{"name": "a", "image": "x", "resources": bad_limits}]})),
            Some(1),
        ),
        (
            "lone surrogate escape in an image",
            raw_pod_review(r#"{"spec":{"containers":[{"name":"a","image":"\ud800"}]}}"#),
            None,
        ),
        ("spec is null", review(("apps", "Deployment"), json!({"spec": {"template": {"spec": null}}})), None),
        ("cronjob without a job template", review(("batch", "CronJob"), json!({"spec": {}})), None),
        ("object is an array", review(("", "Pod"), json!([1, 2])), None),
        ("NUL in the group", review(("apps\u{0}", "Deployment"), json!({})), None),
        (
            "malformed oldObject",
            edited(&|body| body["request"]["oldObject"] = pod(json!({"containers": "nope"}))),
            None,
        ),
        (
            "container without an image (a template being edited)",
            pod_review(json!({
                "containers": [{"name": "a"}],
                "initContainers": [{"name": "i", "image": "[::1]:/a"}],
            })),
            Some(1),
        ),
        (
            "odd images in every container list",
            pod_review(json!({
                "initContainers": [{"name": "i", "image": "a@sha256:"}],
                "containers": [{"name": "a", "image": ""}, {"name": "a", "image": "😀"}],
                "ephemeralContainers": [{"name": "e", "image": "[".repeat(5000)}],
            })),
            Some(4),
        ),
    ];
    let rows: Vec<_> =
        cases.into_iter().map(|(name, body, expected)| (name.to_string(), (body, expected))).collect();
    run_table("AdmissionReview bodies", &rows, |(body, expected)| match (walk_review(body), expected) {
        (Ok(n), Some(want)) if n == *want => Ok(()),
        (Err(_), None) => Ok(()),
        (got, _) => Err(format!("expected {expected:?} containers, got {got:?}")),
    });
}

// ---------------------------------------------------------------------------------------------
// Manifests from registries

#[test]
fn odd_manifests_give_errors_not_panics() {
    let deep = nested(100_000, "");
    let entry = r#"{"mediaType":"m","digest":"d","size":1,"platform":{"os":"linux","architecture":"amd64"}}"#;
    let image = |layers: &str| {
        format!(
            r#"{{"schemaVersion":2,"config":{{"mediaType":"c","digest":"d","size":1}},"layers":[{layers}]}}"#
        )
    };
    let layer = |size: &str| format!(r#"{{"mediaType":"l","digest":"d","size":{size}}}"#);
    let index = |manifests: &str| format!(r#"{{"schemaVersion":2,"manifests":[{manifests}]}}"#);
    let bodies: Vec<(&str, Vec<u8>)> = vec![
        ("empty", vec![]),
        ("not UTF-8", vec![0xff, 0xfe, 0x00]),
        ("html error page", b"<html><body>502 Bad Gateway</body></html>".to_vec()),
        ("json null", b"null".to_vec()),
        ("json array", b"[]".to_vec()),
        ("empty object", b"{}".to_vec()),
        ("deep nesting", deep.clone().into_bytes()),
        ("deep nesting in a field", format!(r#"{{"schemaVersion":2,"manifests":{deep}}}"#).into_bytes()),
        ("media type is a number", br#"{"mediaType":1,"schemaVersion":2}"#.to_vec()),
        ("schema version is negative", br#"{"schemaVersion":-1,"config":{}}"#.to_vec()),
        ("schema version is huge", br#"{"schemaVersion":18446744073709551616}"#.to_vec()),
        (
            "negative and i64::MAX layer sizes",
            image(&[i64::MIN, i64::MAX, i64::MAX].map(|size| layer(&size.to_string())).join(","))
                .into_bytes(),
        ),
        ("layer size past i64", image(&layer("1e300")).into_bytes()),
        (
            "platform fields empty",
            index(r#"{"mediaType":"","digest":"","size":0,"platform":{"os":"","architecture":""}}"#)
                .into_bytes(),
        ),
        (
            "annotations not strings",
            index(r#"{"mediaType":"m","digest":"d","size":1,"annotations":{"vnd.docker.reference.type":1}}"#)
                .into_bytes(),
        ),
        ("schema 1 with a null layer", br#"{"schemaVersion":1,"fsLayers":[null]}"#.to_vec()),
        ("schema 1 architecture not a string", br#"{"schemaVersion":1,"architecture":{}}"#.to_vec()),
        (
            "config blob with odd platform",
            r#"{"os":"\u0000","architecture":"😀","variant":null,"os.version":7}"#.as_bytes().to_vec(),
        ),
        ("lone surrogate", br#"{"mediaType":"\ud800"}"#.to_vec()),
        ("20000 index entries", index(&vec![entry; 20_000].join(",")).into_bytes()),
    ];
    let media_types = [
        manifest::OCI_INDEX,
        manifest::OCI_MANIFEST,
        manifest::DOCKER_LIST,
        manifest::DOCKER_V2,
        manifest::DOCKER_SCHEMA1_SIGNED,
        manifest::DOCKER_SCHEMA1,
        "",
        ";",
        "application/json",
        "APPLICATION/VND.OCI.IMAGE.INDEX.V1+JSON",
        "\u{0}",
        "ä; charset=ü",
    ];
    let rows: Vec<(String, (&[u8], &str))> = bodies
        .iter()
        .flat_map(|(name, body)| {
            media_types
                .iter()
                .map(move |media_type| (format!("{name} as {media_type:?}"), (&body[..], *media_type)))
        })
        .collect();
    run_table("manifest bodies", &rows, |(body, media_type)| {
        let _ = manifest::media_type_of(None, body);
        let _ = manifest::media_type_of(Some(media_type), body);
        let _ = ConfigPlatform::parse(body).map(|platform| platform.to_string());
        if let Ok(Parsed::Index { entries, .. }) = manifest::parse(media_type, body) {
            let _ =
                entries.iter().filter_map(|entry| entry.platform.as_ref()).map(ToString::to_string).count();
        }
        Ok(())
    });

    // A few answers pinned down beyond "does not panic".
    assert!(manifest::media_type_of(Some(";"), b"{}").is_err());
    let schema1 = manifest::media_type_of(Some(" ; x"), br#"{"schemaVersion":1}"#).unwrap();
    assert_eq!(schema1, manifest::DOCKER_SCHEMA1);
    assert!(manifest::parse(manifest::OCI_INDEX, deep.as_bytes()).is_err());
    assert!(manifest::parse("", b"{}").is_err());
    let Parsed::Image { layers, .. } =
        manifest::parse(manifest::OCI_MANIFEST, image(&layer("-5")).as_bytes()).unwrap()
    else {
        panic!("not an image manifest")
    };
    assert_eq!(layers[0].size, 0, "a negative declared size counts as unknown (0)");
}

// ---------------------------------------------------------------------------------------------
// Docker config JSON and pull secrets

#[test]
fn odd_docker_configs_give_errors_not_panics() {
    let entry = |key: &str, fields: &str| format!(r#"{{"auths":{{"{key}":{fields}}}}}"#);
    let auth = |text: &[u8]| format!(r#"{{"auth":"{}"}}"#, STANDARD.encode(text));
    let odd_keys =
        ["", "https://", "[", "[::1", "]:", "[::1]:", ":::::", "*", "*.*.*:*/*", "http:///v2/", "😀/😀"]
            .iter()
            .map(|key| key.to_string())
            .chain(["*".repeat(10_000), "a.".repeat(5_000)])
            .map(|key| format!(r#""{key}":{}"#, auth(b"u:p")))
            .collect::<Vec<_>>()
            .join(",");
    // (name, config, whether it must parse)
    let configs: Vec<(&str, String, bool)> = vec![
        ("empty", String::new(), false),
        ("null", "null".into(), false),
        ("array", "[]".into(), false),
        ("string", r#""auths""#.into(), false),
        ("auths null", r#"{"auths":null}"#.into(), false),
        ("auths array", r#"{"auths":[]}"#.into(), false),
        ("empty auths", r#"{"auths":{}}"#.into(), true),
        ("empty legacy map", "{}".into(), true),
        ("entry is null", entry("a", "null"), false),
        ("entry empty", entry("a", "{}"), false),
        ("auth not base64", entry("a", r#"{"auth":"%%%"}"#), false),
        ("auth without colon", entry("a", &auth(b"nocolon")), false),
        ("auth not UTF-8", entry("a", &auth(&[0xff, b':', 0xfe])), false),
        ("auth is just a colon", entry("a", &auth(b":")), true),
        ("auth is whitespace", entry("a", r#"{"auth":"   "}"#), false),
        ("empty username and no auth", entry("a", r#"{"username":"","password":"p"}"#), false),
        ("username is a number", entry("a", r#"{"username":1,"password":"p"}"#), false),
        ("deep nesting", nested(100_000, ""), false),
        ("deep nesting in an entry", entry("a", &format!(r#"{{"x":{}}}"#, nested(100_000, ""))), false),
        ("odd keys", format!(r#"{{"auths":{{{odd_keys}}}}}"#), true),
    ];
    let long_host = format!("{}io/x", "h.".repeat(120));
    let images: Vec<ImageRef> =
        ["nginx", "[::1]:5000/app", "localhost/app", "a.b.c.d.e.f/x", "127.0.0.1/a", &long_host]
            .iter()
            .map(|image| ImageRef::parse(image).unwrap())
            .collect();
    let rows: Vec<(String, (String, bool))> =
        configs.into_iter().map(|(name, json, ok)| (name.to_string(), (json, ok))).collect();
    run_table("docker configs", &rows, |(json, ok)| {
        let result = Keyring::from_docker_config(json.as_bytes(), "test");
        if result.is_ok() != *ok {
            return Err(format!("expected ok={ok}, got {result:?}"));
        }
        if let Ok(keyring) = result {
            for image in &images {
                for credential in keyring.lookup(image) {
                    let _ = (credential.identity(), format!("{credential:?}"));
                }
            }
        }
        for secret_type in [Some(DOCKER_CONFIG_JSON), Some(DOCKER_CFG), Some("Opaque"), Some(""), None] {
            for key in [".dockerconfigjson", ".dockercfg", ""] {
                let data = BTreeMap::from([(key.to_string(), json.as_bytes().to_vec())]);
                let _ = keyring_from_secret("test", secret_type, &data);
            }
        }
        Ok(())
    });
}
