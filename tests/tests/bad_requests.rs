//! Malformed and hostile requests over real HTTPS: each gets its documented answer within a
//! bound, and the server keeps serving afterwards.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use pullguard_core::{config::Config, credentials::Keyring};
use pullguard_tests::answer::{Answer, Reviews};
use pullguard_tests::webhook::{Webhook, fixture};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// What a case must get back.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Expect {
    Status(u16),
    /// HTTP 200 with an AdmissionReview whose `allowed` is this.
    Review {
        allowed: bool,
    },
}

fn body(value: &Value) -> Vec<u8> {
    serde_json::to_vec(value).unwrap()
}

fn pod() -> Value {
    fixture("01-create-pod-main-web.json").unwrap()
}

fn with(mut review: Value, pointer: &str, value: Value) -> Value {
    *review.pointer_mut(pointer).unwrap() = value;
    review
}

fn without(mut review: Value, parent: &str, key: &str) -> Value {
    review.pointer_mut(parent).unwrap().as_object_mut().unwrap().remove(key);
    review
}

fn cases() -> Vec<(&'static str, Vec<u8>, Expect)> {
    let nested = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let many: Vec<Value> =
        (0..10_000).map(|i| json!({"name": format!("c{i}"), "image": "Invalid/Name:1"})).collect();
    let huge_uid = "u".repeat(1 << 20);
    let deployment = fixture("02-create-deployment-main-api.json").unwrap();
    vec![
        ("not JSON", b"nope".to_vec(), Expect::Status(400)),
        ("empty body", Vec::new(), Expect::Status(400)),
        ("JSON array", b"[]".to_vec(), Expect::Status(400)),
        ("JSON number", b"42".to_vec(), Expect::Status(400)),
        ("JSON null", b"null".to_vec(), Expect::Status(400)),
        ("empty object", b"{}".to_vec(), Expect::Status(400)),
        ("truncated JSON", body(&pod())[..500].to_vec(), Expect::Status(400)),
        ("deeply nested JSON", nested.into_bytes(), Expect::Status(400)),
        (
            "wrong apiVersion",
            body(&with(pod(), "/apiVersion", json!("admission.k8s.io/v1beta1"))),
            Expect::Status(400),
        ),
        ("wrong kind", body(&with(pod(), "/kind", json!("ConfigMap"))), Expect::Status(400)),
        ("no request", body(&without(pod(), "", "request")), Expect::Status(400)),
        ("null request", body(&with(pod(), "/request", Value::Null)), Expect::Status(400)),
        ("empty uid", body(&with(pod(), "/request/uid", json!(""))), Expect::Status(400)),
        ("no uid", body(&without(pod(), "/request", "uid")), Expect::Status(400)),
        ("no kind in request", body(&without(pod(), "/request", "kind")), Expect::Status(400)),
        (
            "unknown operation",
            body(&with(pod(), "/request/operation", json!("EXPLODE"))),
            Expect::Status(400),
        ),
        ("object is a string", body(&with(pod(), "/request/object", json!("pod"))), Expect::Status(400)),
        (
            "no object on CREATE",
            body(&without(pod(), "/request", "object")),
            Expect::Review { allowed: true },
        ),
        (
            "containers of the wrong shape",
            body(&with(pod(), "/request/object/spec/containers", json!("nope"))),
            Expect::Review { allowed: true },
        ),
        (
            "Pod without spec",
            body(&without(pod(), "/request/object", "spec")),
            Expect::Review { allowed: true },
        ),
        (
            "Deployment without template",
            body(&without(deployment.clone(), "/request/object/spec", "template")),
            Expect::Review { allowed: true },
        ),
        (
            "10,000 containers with invalid images",
            body(&with(pod(), "/request/object/spec/containers", Value::Array(many))),
            Expect::Review { allowed: false },
        ),
        (
            "image that is not a string",
            body(&with(pod(), "/request/object/spec/containers/0/image", json!(42))),
            Expect::Review { allowed: true },
        ),
        (
            "unicode garbage image",
            body(&with(pod(), "/request/object/spec/containers/0/image", json!("ｎｇｉｎｘ:☃"))),
            Expect::Review { allowed: false },
        ),
        (
            "a 1 MiB uid",
            body(&with(pod(), "/request/uid", json!(huge_uid))),
            Expect::Review { allowed: true },
        ),
        (
            "CONNECT",
            body(&with(pod(), "/request/operation", json!("CONNECT"))),
            Expect::Review { allowed: true },
        ),
        (
            "DELETE with an object",
            body(&with(pod(), "/request/operation", json!("DELETE"))),
            Expect::Review { allowed: true },
        ),
        (
            "unknown kind",
            body(&with(pod(), "/request/kind/kind", json!("Gadget"))),
            Expect::Review { allowed: true },
        ),
        ("body over 3 MiB", vec![b' '; 4 << 20], Expect::Status(413)),
        (
            "valid review (control)",
            body(&fixture("08-update-scale-scale-api.json").unwrap()),
            Expect::Review { allowed: true },
        ),
    ]
}

fn no_registries() -> Config {
    // Every image here is invalid, unreachable or exempt: no registry call is wanted.
    Config {
        exempt_images: vec!["registry.example.com*".into(), "ghcr.io/*".into(), "busybox*".into()],
        ..Config::default()
    }
}

#[tokio::test]
async fn thirty_malformed_requests() {
    let webhook = Webhook::start(no_registries(), Keyring::default()).await.unwrap();
    let cases = cases();
    assert!(cases.len() >= 30, "{} cases", cases.len());
    for (name, bytes, expect) in cases {
        let started = Instant::now();
        let (status, text) = webhook.post_raw(bytes).await.unwrap();
        assert!(started.elapsed() < Duration::from_secs(5), "{name}: took {:?}", started.elapsed());
        match expect {
            Expect::Status(code) => assert_eq!(status, code, "{name}: {}", &text[..text.len().min(300)]),
            Expect::Review { allowed } => {
                assert_eq!(status, 200, "{name}: {}", &text[..text.len().min(300)]);
                let answer = Answer::parse(&text).unwrap();
                assert_eq!(answer.allowed, allowed, "{name}: {}", &text[..text.len().min(500)]);
                assert!(text.len() < 2 << 20, "{name}: response of {} bytes", text.len());
            }
        }
        if status == 400 {
            assert!(!Answer::parse(&text).unwrap().message.is_empty(), "{name}");
        }
    }
    // Still serving.
    let (status, _) = webhook.post(&fixture("02-create-deployment-main-api.json").unwrap()).await.unwrap();
    assert_eq!(status, 200);
    for (method, path, expected) in
        [("GET", "/validate", 405), ("PUT", "/validate", 405), ("POST", "/", 404), ("POST", "/mutate", 404)]
    {
        let (status, _) = webhook.request(method.parse().unwrap(), path, b"{}".to_vec()).await.unwrap();
        assert_eq!(status, expected, "{method} {path}");
    }
}

/// A raw TLS connection, for what HTTP clients will not send.
async fn raw_tls(webhook: &Webhook) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in ca_certificates(&webhook.ca_pem) {
        roots.add(cert).unwrap();
    }
    let config =
        rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let stream = tokio::net::TcpStream::connect(webhook.running.addr).await.unwrap();
    connector.connect("localhost".try_into().unwrap(), stream).await.unwrap()
}

fn ca_certificates(pem: &str) -> Vec<rustls::pki_types::CertificateDer<'static>> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::pem_slice_iter(pem.as_bytes()).map(Result::unwrap).collect()
}

#[tokio::test]
async fn http10_and_slowloris() {
    let webhook = Webhook::start(no_registries(), Keyring::default()).await.unwrap();
    let review = body(&fixture("08-update-scale-scale-api.json").unwrap());

    let mut stream = raw_tls(&webhook).await;
    let head = format!(
        "POST /validate HTTP/1.0\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        review.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&review).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer)).await.unwrap().ok();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.0 200") || answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("\"allowed\":true"), "{answer}");

    // Headers trickled one byte at a time: the server hangs up instead of waiting forever.
    let mut slow = raw_tls(&webhook).await;
    let started = Instant::now();
    let mut closed = false;
    for byte in
        b"POST /validate HTTP/1.1\r\nHost: localhost\r\nX-Slow: ".iter().chain(std::iter::repeat(&b'a'))
    {
        if slow.write_all(&[*byte]).await.is_err() || slow.flush().await.is_err() {
            closed = true;
            break;
        }
        let mut probe = [0u8; 64];
        if let Ok(Ok(0)) = tokio::time::timeout(Duration::from_millis(200), slow.read(&mut probe)).await {
            closed = true;
            break;
        }
        if started.elapsed() > Duration::from_secs(15) {
            break;
        }
    }
    assert!(closed, "a slowloris connection was kept open for {:?}", started.elapsed());
    assert!(started.elapsed() < Duration::from_secs(10), "cut off only after {:?}", started.elapsed());
    // And the server still answers others.
    let (status, _) = webhook.post(&fixture("08-update-scale-scale-api.json").unwrap()).await.unwrap();
    assert_eq!(status, 200);
}
