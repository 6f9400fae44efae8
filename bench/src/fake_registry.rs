//! A registry for filling pullguard's cache fast: the tests' fake registry with routes where
//! every `/v2/<repo>/manifests/<reference>` is one fixed single-platform OCI manifest (with its
//! `Docker-Content-Digest` and `Content-Type`) and `/v2/<repo>/blobs/<config digest>` its config.
//! Any repository and tag exists, so 100,000 distinct images cost no seeding. The real registry
//! would spend minutes on that; this answers in microseconds. Stops on drop.

use anyhow::Result;
use pullguard_tests::{
    fake::{Behaviour, FakeRegistry, Route},
    seed::{media, sha256_digest},
};
use serde_json::json;

/// Starts the fake registry with the benchmark's one image.
pub async fn start() -> Result<FakeRegistry> {
    FakeRegistry::start(Behaviour::Routes(routes()?)).await
}

fn routes() -> Result<Vec<Route>> {
    let config = serde_json::to_string(&json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {},
        "rootfs": {"type": "layers", "diff_ids": [sha256_digest(b"layer")]},
    }))?;
    let config_digest = sha256_digest(config.as_bytes());
    let manifest = serde_json::to_string(&json!({
        "schemaVersion": 2,
        "mediaType": media::OCI_MANIFEST,
        "config": {"mediaType": media::OCI_CONFIG, "digest": config_digest, "size": config.len()},
        "layers": [{
            "mediaType": media::OCI_LAYER,
            "digest": sha256_digest(b"layer.tar.gz"),
            "size": 31_457_280,
        }],
    }))?;
    let manifest_digest = sha256_digest(manifest.as_bytes());
    Ok(vec![
        Route::new("/manifests/", 200, &manifest)
            .with_header("Content-Type", media::OCI_MANIFEST)
            .with_header("Docker-Content-Digest", &manifest_digest),
        Route::new(&format!("/blobs/{config_digest}"), 200, &config)
            .with_header("Content-Type", media::OCTET_STREAM)
            .with_header("Docker-Content-Digest", &config_digest),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn manifests_carry_their_digest_and_blobs_their_config() {
        let registry = start().await.unwrap();
        let client = pullguard_tests::registry::http_client(None).unwrap();
        let get = |path: String| client.get(format!("http://{}{path}", registry.host())).send();
        let manifest = get("/v2/a/b/manifests/t1".into()).await.unwrap();
        assert_eq!(manifest.headers()["content-type"], media::OCI_MANIFEST);
        let digest = manifest.headers()["docker-content-digest"].to_str().unwrap().to_owned();
        let body = manifest.bytes().await.unwrap();
        assert_eq!(sha256_digest(&body), digest);
        let parsed: serde_json::Value = serde_json::from_slice(&body).unwrap();
        let config_digest = parsed["config"]["digest"].as_str().unwrap();
        let config = get(format!("/v2/a/blobs/{config_digest}")).await.unwrap();
        assert_eq!(config.status(), 200);
        assert_eq!(sha256_digest(&config.bytes().await.unwrap()), config_digest);
        assert_eq!(get("/v2/a/blobs/sha256:00".into()).await.unwrap().status(), 404);
        assert_eq!(registry.requests(), 3);
    }
}
