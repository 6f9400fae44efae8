//! Checks that the harness seeds what it claims, against the real registry.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

use pullguard_tests::registry::RegistryProcess;
use pullguard_tests::seed::{
    Format, ImageSpec, IndexEntry, LayerSpec, SBOM_ARTIFACT_TYPE, Seeder, media, sha256_digest,
};
use reqwest::StatusCode;

const GIB: u64 = 1 << 30;

async fn assert_served(
    seeder: &Seeder,
    repo: &str,
    reference: &str,
    media_type: &str,
    digest: &str,
) -> anyhow::Result<()> {
    let got = seeder.get_manifest(repo, reference).await?;
    assert_eq!(got.status, StatusCode::OK, "{repo}:{reference}: {}", String::from_utf8_lossy(&got.body));
    assert_eq!(got.content_type.as_deref(), Some(media_type), "{repo}:{reference}");
    assert_eq!(got.digest.as_deref(), Some(digest), "{repo}:{reference}");
    let head = seeder.head_manifest(repo, reference).await?;
    assert_eq!(head.status, StatusCode::OK);
    assert_eq!(head.content_type.as_deref(), Some(media_type), "HEAD {repo}:{reference}");
    assert_eq!(head.digest.as_deref(), Some(digest), "HEAD {repo}:{reference}");
    Ok(())
}

#[tokio::test]
async fn plain_registry_serves_every_seeded_kind() {
    let registry = RegistryProcess::start_plain().await.unwrap();
    assert!(registry.base_url().starts_with("http://127.0.0.1:"));
    assert!(registry.ca_pem().is_none() && registry.credentials().is_none());
    let seeder = Seeder::new(&registry).unwrap();

    let oci = seeder.push_image("app", "oci", &ImageSpec::linux("amd64")).await.unwrap();
    assert_eq!(oci.media_type, media::OCI_MANIFEST);
    assert_served(&seeder, "app", "oci", media::OCI_MANIFEST, &oci.digest).await.unwrap();
    assert_served(&seeder, "app", &oci.digest, media::OCI_MANIFEST, &oci.digest).await.unwrap();
    let config = seeder.get_manifest("app", "oci").await.unwrap().json().unwrap();
    assert_eq!(config["config"]["digest"], oci.config_digest.as_str());

    let docker = seeder.push_image("app", "docker", &ImageSpec::linux("amd64").docker()).await.unwrap();
    assert_served(&seeder, "app", "docker", media::DOCKER_MANIFEST, &docker.digest).await.unwrap();
    assert_ne!(oci.digest, docker.digest);

    let entries = [
        IndexEntry::image(ImageSpec::linux("amd64")),
        IndexEntry::image(ImageSpec::linux("arm64/v8")),
        IndexEntry::attestation(0),
    ];
    let index = seeder.push_index_detailed("multi", "oci", &entries, Format::Oci).await.unwrap();
    assert_served(&seeder, "multi", "oci", media::OCI_INDEX, &index.digest).await.unwrap();
    let body = seeder.get_manifest("multi", "oci").await.unwrap().json().unwrap();
    let manifests = body["manifests"].as_array().unwrap();
    assert_eq!(manifests.len(), 3);
    assert_eq!(manifests[0]["platform"]["architecture"], "amd64");
    assert_eq!(manifests[1]["platform"]["variant"], "v8");
    assert_eq!(manifests[2]["platform"]["os"], "unknown");
    assert_eq!(manifests[2]["annotations"]["vnd.docker.reference.type"], "attestation-manifest");
    assert_eq!(manifests[2]["annotations"]["vnd.docker.reference.digest"], index.children[0].digest.as_str());
    assert_ne!(index.children[0].digest, index.children[1].digest);
    for child in &index.children {
        assert_served(&seeder, "multi", &child.digest, media::OCI_MANIFEST, &child.digest).await.unwrap();
    }
    let arm_config = seeder.get_manifest("multi", &index.children[1].digest).await.unwrap().json().unwrap();
    let arm_config_digest = arm_config["config"]["digest"].as_str().unwrap();
    let blob_url = format!("{}/v2/multi/blobs/{arm_config_digest}", registry.base_url());
    let blob = registry.client().unwrap().get(blob_url).send().await.unwrap();
    let arm_config: serde_json::Value = blob.json().await.unwrap();
    assert_eq!(arm_config["architecture"], "arm64");
    assert_eq!(arm_config["variant"], "v8");
    assert_eq!(arm_config["rootfs"]["type"], "layers");

    let docker_entries = [
        IndexEntry::image(ImageSpec::linux("amd64").docker()),
        IndexEntry::image(ImageSpec::linux("arm64/v8").docker()),
    ];
    let list = seeder.push_index("multi", "docker", &docker_entries, Format::DockerV2).await.unwrap();
    assert_served(&seeder, "multi", "docker", media::DOCKER_LIST, &list).await.unwrap();

    let schema1 = seeder.push_schema1("legacy", "v1", "amd64").await.unwrap();
    assert_served(&seeder, "legacy", "v1", media::SCHEMA1_SIGNED, &schema1).await.unwrap();
    assert_served(&seeder, "legacy", &schema1, media::SCHEMA1_SIGNED, &schema1).await.unwrap();
    let signed = seeder.get_manifest("legacy", "v1").await.unwrap();
    assert_ne!(signed.body_digest(), schema1, "the served body carries the signatures");
    assert_eq!(signed.json().unwrap()["architecture"], "amd64");

    let octet = ImageSpec::linux("amd64").with_config_media_type(media::OCTET_STREAM);
    let octet = seeder.push_image("odd", "octet", &octet).await.unwrap();
    assert_served(&seeder, "odd", "octet", media::OCI_MANIFEST, &octet.digest).await.unwrap();
    let body = seeder.get_manifest("odd", "octet").await.unwrap().json().unwrap();
    assert_eq!(body["config"]["mediaType"], media::OCTET_STREAM);

    let artifact = seeder.push_artifact("sbom", "v1").await.unwrap();
    assert_served(&seeder, "sbom", "v1", media::OCI_MANIFEST, &artifact).await.unwrap();
    let body = seeder.get_manifest("sbom", "v1").await.unwrap().json().unwrap();
    assert_eq!(body["artifactType"], SBOM_ARTIFACT_TYPE);
    assert_eq!(body["config"]["mediaType"], media::OCI_EMPTY);
    assert_eq!(body["config"]["digest"], sha256_digest(b"{}"));

    let big = ImageSpec::linux("amd64").with_layers(vec![LayerSpec::declared(3 * GIB), LayerSpec::small()]);
    let big = seeder.push_image("big", "3g", &big).await.unwrap();
    assert!(big.total_layer_size > 3 * GIB);
    let body = seeder.get_manifest("big", "3g").await.unwrap().json().unwrap();
    assert_eq!(body["layers"][0]["size"], 3 * GIB);

    let odd_layers = ImageSpec::linux("amd64").docker().with_layers(vec![
        LayerSpec::small(),
        LayerSpec::repeat_previous(),
        LayerSpec::empty(),
    ]);
    let dup = seeder.push_image("dup", "v1", &odd_layers).await.unwrap();
    assert_served(&seeder, "dup", "v1", media::DOCKER_MANIFEST, &dup.digest).await.unwrap();
    let body = seeder.get_manifest("dup", "v1").await.unwrap().json().unwrap();
    assert_eq!(body["layers"][0], body["layers"][1]);
    assert_eq!(body["layers"][2]["size"], 0);
    assert_eq!(body["layers"][2]["digest"], sha256_digest(b""));

    let windows = ImageSpec::windows("amd64", "10.0.20348.2113");
    let windows = seeder.push_image("win", "ltsc2022", &windows).await.unwrap();
    assert_served(&seeder, "win", "ltsc2022", media::DOCKER_MANIFEST, &windows.digest).await.unwrap();
    let body = seeder.get_manifest("win", "ltsc2022").await.unwrap().json().unwrap();
    assert_eq!(body["layers"][0]["mediaType"], media::DOCKER_FOREIGN_LAYER);

    let doomed = seeder.push_image("app", "doomed", &ImageSpec::linux("s390x")).await.unwrap();
    seeder.delete_manifest("app", &doomed.digest).await.unwrap();
    let gone = seeder.get_manifest("app", &doomed.digest).await.unwrap();
    assert_eq!(gone.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn tls_auth_registry_requires_credentials_and_counts_requests() {
    let registry = RegistryProcess::start_tls_auth("alice", "s3cret").await.unwrap();
    assert!(registry.base_url().starts_with("https://127.0.0.1:"));
    assert_eq!(registry.credentials(), Some(("alice", "s3cret")));
    assert!(registry.ca_path().unwrap().is_file());

    let client = registry.client().unwrap();
    let url = format!("{}/v2/", registry.base_url());
    let anonymous = client.get(&url).send().await.unwrap();
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    let challenge = anonymous.headers()["www-authenticate"].to_str().unwrap();
    assert!(challenge.starts_with("Basic realm="), "{challenge}");
    let wrong = client.get(&url).basic_auth("alice", Some("nope")).send().await.unwrap();
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    let right = client.get(&url).basic_auth("alice", Some("s3cret")).send().await.unwrap();
    assert_eq!(right.status(), StatusCode::OK);
    assert_eq!(right.version(), reqwest::Version::HTTP_2);

    let seeder = Seeder::new(&registry).unwrap();
    let image = seeder.push_image("app", "v1", &ImageSpec::linux("amd64")).await.unwrap();
    assert_eq!(registry.manifest_requests("app"), 0, "PUTs are not reads");
    for _ in 0..3 {
        let head = seeder.head_manifest("app", "v1").await.unwrap();
        assert_eq!(head.digest.as_deref(), Some(image.digest.as_str()));
    }
    assert_eq!(registry.manifest_requests("app"), 3);
    assert_eq!(registry.requests("HEAD /v2/app/manifests/v1"), 3);
    assert_eq!(registry.manifest_requests("ap"), 0);
    assert!(registry.access_log().iter().any(|e| e.protocol == "HTTP/2.0"));

    let anonymous_read = client
        .get(format!("{}/v2/app/manifests/v1", registry.base_url()))
        .header("accept", media::FULL_ACCEPT)
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous_read.status(), StatusCode::UNAUTHORIZED);

    if std::path::Path::new("/usr/bin/skopeo").is_file() {
        let output = tokio::process::Command::new("/usr/bin/skopeo")
            .args(["inspect", "--raw", "--cert-dir"])
            .arg(registry.ca_dir().unwrap())
            .args(["--creds", "alice:s3cret"])
            .arg(format!("docker://{}/app:v1", registry.host()))
            .output()
            .await
            .unwrap();
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        assert_eq!(sha256_digest(&output.stdout), image.digest);
    }
}

#[tokio::test]
async fn restart_keeps_port_and_storage() {
    let mut registry = RegistryProcess::start_plain().await.unwrap();
    let seeder = Seeder::new(&registry).unwrap();
    let image = seeder.push_image("app", "v1", &ImageSpec::linux("amd64")).await.unwrap();
    let host = registry.host();
    registry.restart().await.unwrap();
    assert_eq!(registry.host(), host);
    assert_served(&seeder, "app", "v1", media::OCI_MANIFEST, &image.digest).await.unwrap();
    registry.stop().await.unwrap();
    assert!(seeder.get_manifest("app", "v1").await.is_err());
}
