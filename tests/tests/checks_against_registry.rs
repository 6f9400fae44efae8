//! Every registry-backed check against a real registry (Debian's docker-registry, distribution
//! 2.8): a case that fires and a case that does not, the cache, and token auth. Faults a real
//! registry cannot produce on demand are in `registry_faults.rs`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

mod common;

use std::time::Duration;

use common::{codes, inspect, inspector, inspector_with, *};
use pullguard_tests::{
    seed::{Auth, Format, ImageSpec, IndexEntry, LayerSpec, Seeder},
    webhook::{keyring_for, registry_settings},
};

/// A plain registry holding `app:<tag>` (linux/amd64), its seeder, and a configuration naming it.
async fn registry_with_app(tag: &str) -> (RegistryProcess, Seeder, Config) {
    let registry = RegistryProcess::start_plain().await.expect("registry");
    let seeder = Seeder::new(&registry).expect("seeder");
    seeder.push_image("app", tag, &ImageSpec::linux("amd64")).await.unwrap();
    let config = Config { registries: vec![registry_settings(&registry)], ..Config::default() };
    (registry, seeder, config)
}

#[tokio::test]
async fn plain_registry_table() {
    let registry = RegistryProcess::start_plain().await.expect("registry");
    let seeder = Seeder::new(&registry).expect("seeder");
    let host = registry.host();
    let v1 = seeder.push_image("app", "v1", &ImageSpec::linux("amd64")).await.unwrap();
    seeder.push_image("app", "v1.2.3", &ImageSpec::linux("amd64")).await.unwrap();
    seeder.push_image("app", "v1.2.4", &ImageSpec::linux("amd64")).await.unwrap();
    seeder.push_image("app", "latest", &ImageSpec::linux("amd64")).await.unwrap();
    seeder.push_image("docker", "v1", &ImageSpec::linux("arm64/v8").docker()).await.unwrap();
    let entries = [
        IndexEntry::image(ImageSpec::linux("amd64")),
        IndexEntry::image(ImageSpec::linux("arm64/v8")),
        IndexEntry::attestation(0),
    ];
    seeder.push_index("multi", "v1", &entries, Format::Oci).await.unwrap();
    let docker_entries = [
        IndexEntry::image(ImageSpec::linux("amd64").docker()),
        IndexEntry::image(ImageSpec::linux("arm/v7").docker()),
    ];
    seeder.push_index("list", "v1", &docker_entries, Format::DockerV2).await.unwrap();
    seeder
        .push_index(
            "onlyattest",
            "v1",
            &[IndexEntry::image(ImageSpec::linux("amd64")), IndexEntry::attestation(0)],
            Format::Oci,
        )
        .await
        .unwrap();
    seeder.push_schema1("legacy", "v1", "amd64").await.unwrap();
    let octet = ImageSpec::linux("amd64").docker().with_config_media_type("application/octet-stream");
    seeder.push_image("octet", "v1", &octet).await.unwrap();
    seeder.push_artifact("sbom", "v1").await.unwrap();
    let helm = ImageSpec::linux("amd64").with_config_media_type("application/vnd.cncf.helm.config.v1+json");
    seeder.push_image("chart", "v1", &helm).await.unwrap();
    let big = ImageSpec::linux("amd64").with_layers(vec![LayerSpec::declared(3 << 30)]);
    seeder.push_image("big", "v1", &big).await.unwrap();
    let under = ImageSpec::linux("amd64").with_layers(vec![LayerSpec::declared(1 << 30)]);
    seeder.push_image("big", "v0", &under).await.unwrap();
    let dupes = ImageSpec::linux("amd64").with_layers(vec![LayerSpec::small(), LayerSpec::repeat_previous()]);
    seeder.push_image("dupes", "v1", &dupes).await.unwrap();
    let empty = ImageSpec::linux("amd64").with_layers(vec![LayerSpec::empty(), LayerSpec::small()]);
    seeder.push_image("dupes", "v2", &empty).await.unwrap();

    let inspector = inspector(vec![registry_settings(&registry)], Keyring::default());
    let missing_digest = format!("sha256:{}", "0".repeat(64));
    let cases: Vec<(String, Vec<Code>)> = vec![
        (format!("{host}/app:v1"), vec![]),
        (format!("{host}/app@{}", v1.digest), vec![]),
        (format!("{host}/app:v1@{}", v1.digest), vec![]),
        (format!("{host}/app"), vec![Code::MutableTag]),
        (format!("{host}/app:latest"), vec![Code::MutableTag]),
        (format!("{host}/docker:v1"), vec![]),
        (format!("{host}/multi:v1"), vec![]),
        (format!("{host}/list:v1"), vec![]),
        (format!("{host}/onlyattest:v1"), vec![]),
        (format!("{host}/app:nosuchtag"), vec![Code::TagNotFound]),
        (format!("{host}/nosuchrepo:v1"), vec![Code::RepositoryNotFound]),
        (format!("{host}/app@{missing_digest}"), vec![Code::DigestNotFound]),
        (format!("{host}/legacy:v1"), vec![Code::Schema1Manifest]),
        (format!("{host}/octet:v1"), vec![Code::OctetStreamConfig]),
        (format!("{host}/sbom:v1"), vec![Code::NotAContainerImage]),
        (format!("{host}/chart:v1"), vec![Code::NotAContainerImage]),
        (format!("{host}/big:v1"), vec![Code::ImageTooLarge]),
        (format!("{host}/big:v0"), vec![]),
        (format!("{host}/dupes:v1"), vec![Code::WastefulLayers]),
        (format!("{host}/dupes:v2"), vec![Code::WastefulLayers]),
        (format!("{host}/App:v1"), vec![Code::InvalidReference]),
    ];
    for (image, expected) in &cases {
        let inspection = inspect(&inspector, image).await;
        assert_eq!(&codes(&inspection), expected, "{image}: {:#?}", inspection.findings);
        for finding in &inspection.findings {
            assert_eq!(finding.container, "app");
            assert_eq!(&finding.image, image);
            assert!(finding.message.len() > 60, "message too thin: {}", finding.message);
        }
    }

    let inspection = inspect(&inspector, &format!("{host}/app:v1.2.5")).await;
    let message = &inspection.findings[0].message;
    assert!(message.contains("v1.2.4") && message.contains("v1.2.3"), "{message}");

    let inspection = inspect(&inspector, &format!("{host}/app:v1")).await;
    assert_eq!(inspection.images[0].resolved_digest.as_deref(), Some(v1.digest.as_str()));
    let facts = inspection.images[0].facts.clone().unwrap();
    assert_eq!(facts.platforms[0].to_string(), "linux/amd64");

    let inspection = inspect(&inspector, &format!("{host}/multi:v1")).await;
    let platforms: Vec<String> =
        inspection.images[0].facts.as_ref().unwrap().platforms.iter().map(ToString::to_string).collect();
    assert_eq!(platforms, vec!["linux/amd64", "linux/arm64/v8"], "attestations are not platforms");

    let inspection = inspect(&inspector, &format!("{host}/docker:v1")).await;
    let facts = inspection.images[0].facts.clone().unwrap();
    assert_eq!(facts.platforms[0].to_string(), "linux/arm64/v8", "platform read from the config blob");
}

#[tokio::test]
async fn findings_are_regraded_and_silenced_by_config() {
    let (registry, _seeder, mut config) = registry_with_app("latest").await;
    config.findings.insert(Code::MutableTag, pullguard_core::config::Grade::Error);
    let strict = inspector_with(config.clone(), Keyring::default());
    let inspection = inspect(&strict, &format!("{}/app:latest", registry.host())).await;
    assert_eq!(inspection.findings[0].severity, Severity::Error);
    config.findings.insert(Code::MutableTag, pullguard_core::config::Grade::Off);
    let silent = inspector_with(config, Keyring::default());
    assert!(inspect(&silent, &format!("{}/app:latest", registry.host())).await.findings.is_empty());
}

#[tokio::test]
async fn exempt_images_make_no_registry_call() {
    let registry = RegistryProcess::start_plain().await.expect("registry");
    let config = Config {
        registries: vec![registry_settings(&registry)],
        exempt_images: vec![format!("{}/exempt/*", registry.host())],
        ..Config::default()
    };
    let inspector = inspector_with(config, Keyring::default());
    let inspection = inspect(&inspector, &format!("{}/exempt/app:nosuchtag", registry.host())).await;
    assert!(inspection.findings.is_empty());
    assert_eq!(registry.requests("GET /v2/exempt"), 0);
    assert_eq!(registry.requests("HEAD /v2/exempt"), 0);
}

#[tokio::test]
async fn tls_registry_with_basic_auth() {
    let registry = RegistryProcess::start_tls_auth("robot", "s3cret-pass").await.expect("registry");
    let seeder = Seeder::new(&registry).expect("seeder");
    seeder.push_image("private", "v1", &ImageSpec::linux("amd64")).await.unwrap();
    let image = format!("{}/private:v1", registry.host());
    let settings = registry_settings(&registry);

    let with_credentials = inspector(vec![settings.clone()], keyring_for(&registry, None).unwrap());
    let inspection = inspect(&with_credentials, &image).await;
    assert_eq!(codes(&inspection), vec![], "{:#?}", inspection.findings);
    let credential = inspection.images[0].credential.clone().expect("credential reported");
    assert_eq!(credential.key, registry.host());
    assert!(inspection.images[0].resolved_digest.is_some());

    let anonymous = inspector(vec![settings.clone()], Keyring::default());
    assert_eq!(codes(&inspect(&anonymous, &image).await), vec![Code::CredentialsRequired]);

    let wrong =
        inspector(vec![settings.clone()], keyring_for(&registry, Some("not-the-password-9x")).unwrap());
    let inspection = inspect(&wrong, &image).await;
    assert_eq!(codes(&inspection), vec![Code::CredentialsRejected]);
    let printed = format!("{:?}", inspection.findings);
    assert!(
        !printed.contains("s3cret-pass") && !printed.contains("not-the-password-9x"),
        "secret in findings"
    );

    // The same registry without its CA: not trusted.
    let untrusted = RegistryConfig { ca_file: None, ..settings };
    let no_ca = inspector(vec![untrusted], keyring_for(&registry, None).unwrap());
    assert_eq!(codes(&inspect(&no_ca, &image).await), vec![Code::UntrustedCertificate]);
}

#[tokio::test]
async fn cached_tags_and_digests_cost_no_further_requests() {
    let registry = RegistryProcess::start_plain().await.expect("registry");
    let seeder = Seeder::new(&registry).expect("seeder");
    seeder.push_image("app", "v1", &ImageSpec::linux("amd64")).await.unwrap();
    let inspector = inspector(vec![registry_settings(&registry)], Keyring::default());
    let image = format!("{}/app:v1", registry.host());
    inspect(&inspector, &image).await;
    assert_eq!(registry.manifest_requests("app"), 1, "one manifest GET for a new tag");
    assert_eq!(registry.requests("GET /v2/app/blobs/"), 1, "one config blob for the platform");
    for _ in 0..5 {
        inspect(&inspector, &image).await;
    }
    assert_eq!(registry.manifest_requests("app"), 1);
    assert_eq!(registry.requests("GET /v2/app/blobs/"), 1);
}

#[tokio::test]
async fn a_second_tag_of_known_content_reuses_its_facts() {
    let registry = RegistryProcess::start_plain().await.expect("registry");
    let seeder = Seeder::new(&registry).expect("seeder");
    let first = seeder.push_image("app", "v1", &ImageSpec::linux("amd64")).await.unwrap();
    // `stable` names the same manifest, as a promotion in a pipeline does.
    let manifest = seeder.get_manifest("app", "v1").await.unwrap();
    let media_type = manifest.content_type.clone().unwrap();
    let second = seeder.push_manifest("app", "stable", &media_type, &manifest.body).await.unwrap();
    assert_eq!(first.digest, second);
    let seeding_reads = registry.requests("GET /v2/app/manifests/");
    let inspector = inspector(vec![registry_settings(&registry)], Keyring::default());
    inspect(&inspector, &format!("{}/app:v1", registry.host())).await;
    let inspection = inspect(&inspector, &format!("{}/app:stable", registry.host())).await;
    assert!(inspection.findings.is_empty(), "{:?}", inspection.findings);
    assert_eq!(inspection.images[0].resolved_digest.as_deref(), Some(first.digest.as_str()));
    let reads = registry.requests("GET /v2/app/manifests/") - seeding_reads;
    assert_eq!(reads, 2, "each tag's manifest is read once");
    assert_eq!(registry.requests("GET /v2/app/blobs/"), 1, "the config blob is read for the content once");
}

#[tokio::test]
async fn an_expired_tag_is_revalidated_with_a_head() {
    let (registry, seeder, mut config) = registry_with_app("v1").await;
    config.cache.tag_ttl = HumanDuration(Duration::from_millis(200));
    let inspector = inspector_with(config, Keyring::default());
    let image = format!("{}/app:v1", registry.host());
    inspect(&inspector, &image).await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(inspect(&inspector, &image).await.findings.is_empty());
    assert_eq!(registry.requests("GET /v2/app/manifests/"), 1);
    assert_eq!(registry.requests("HEAD /v2/app/manifests/v1"), 1);

    // The tag moves: the HEAD sees a new digest and the new manifest is read by digest.
    let moved = seeder.push_image("app", "v1", &ImageSpec::linux("arm64")).await.unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    let inspection = inspect(&inspector, &image).await;
    assert_eq!(inspection.images[0].resolved_digest.as_deref(), Some(moved.digest.as_str()));
    assert_eq!(registry.requests(&format!("GET /v2/app/manifests/{}", moved.digest)), 1);
}

/// Entries end with their life even though the cache keeps them until evicted: a miss is asked
/// again after `missTtl`, a digest read again after `digestTtl`, and neither sooner.
#[tokio::test]
async fn misses_and_digests_are_asked_again_when_their_life_ends() {
    let registry = RegistryProcess::start_plain().await.expect("registry");
    let seeder = Seeder::new(&registry).expect("seeder");
    let v1 = seeder.push_image("app", "v1", &ImageSpec::linux("amd64")).await.unwrap();
    let mut config = Config { registries: vec![registry_settings(&registry)], ..Config::default() };
    // Long enough that a loaded machine does not end a life between the first two rounds.
    config.cache.miss_ttl = HumanDuration(Duration::from_millis(1500));
    config.cache.digest_ttl = HumanDuration(Duration::from_millis(1500));
    let inspector = inspector_with(config, Keyring::default());
    let missing = format!("{}/app:nope", registry.host());
    let pinned = format!("{}/app@{}", registry.host(), v1.digest);
    let missing_reads = || registry.requests("GET /v2/app/manifests/nope");
    let pinned_reads = || registry.requests(&format!("GET /v2/app/manifests/{}", v1.digest));

    for _ in 0..2 {
        assert_eq!(codes(&inspect(&inspector, &missing).await), vec![Code::TagNotFound]);
        assert!(inspect(&inspector, &pinned).await.findings.is_empty());
    }
    assert_eq!((missing_reads(), pinned_reads()), (1, 1), "both answered from the cache the second time");

    tokio::time::sleep(Duration::from_millis(1800)).await;
    assert_eq!(codes(&inspect(&inspector, &missing).await), vec![Code::TagNotFound]);
    let inspection = inspect(&inspector, &pinned).await;
    assert!(inspection.findings.is_empty(), "{:?}", inspection.findings);
    assert_eq!(inspection.images[0].resolved_digest.as_deref(), Some(v1.digest.as_str()));
    assert_eq!((missing_reads(), pinned_reads()), (2, 2), "both asked again once their life ended");
    assert_eq!(registry.requests(&format!("GET /v2/app/blobs/{}", v1.config_digest)), 2);
}

/// A revalidation that fails while the registry is down keeps what the tag resolved to: once
/// the registry is back, a HEAD is enough again.
#[tokio::test]
async fn a_tag_that_failed_to_revalidate_is_revalidated_with_a_head_later() {
    let mut registry = RegistryProcess::start_plain().await.expect("registry");
    let seeder = Seeder::new(&registry).expect("seeder");
    seeder.push_image("app", "v1", &ImageSpec::linux("amd64")).await.unwrap();
    let mut config = Config { registries: vec![registry_settings(&registry)], ..Config::default() };
    config.cache.tag_ttl = HumanDuration(Duration::from_millis(200));
    let inspector = inspector_with(config, Keyring::default());
    let image = format!("{}/app:v1", registry.host());
    assert!(inspect(&inspector, &image).await.findings.is_empty());

    tokio::time::sleep(Duration::from_millis(400)).await;
    registry.stop().await.unwrap();
    assert_eq!(codes(&inspect(&inspector, &image).await), vec![Code::RegistryUnreachable]);
    registry.restart().await.unwrap();
    // Past the failure's answer time and the host's backoff (2 s each).
    tokio::time::sleep(Duration::from_millis(2200)).await;
    assert!(inspect(&inspector, &image).await.findings.is_empty());
    assert_eq!(registry.requests("GET /v2/app/manifests/"), 1, "no second GET after the outage");
    assert_eq!(registry.requests("HEAD /v2/app/manifests/v1"), 1);
}

/// A registry's challenge may name any realm: credentials go to a token service on another host
/// only when the registry's settings list that host.
#[tokio::test]
async fn credentials_go_to_a_realm_on_another_host_only_when_listed() {
    use pullguard_tests::token::{ROBOT_PASSWORD, ROBOT_USER, TokenServer};
    let tokens = TokenServer::start().await.unwrap();
    let registry = RegistryProcess::start_token_auth(&tokens).await.unwrap();
    let seeder = Seeder::with_auth(&registry, Auth::bearer(&tokens.push_token(&["app"]).unwrap())).unwrap();
    seeder.push_image("app", "v1", &ImageSpec::linux("amd64")).await.unwrap();
    // Named as localhost, the registry is another host than its realm at 127.0.0.1.
    let host = format!("localhost:{}", registry.port());
    let auth = base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        format!("{ROBOT_USER}:{ROBOT_PASSWORD}"),
    );
    let docker_config = serde_json::json!({"auths": {host.clone(): {"auth": auth}}}).to_string();
    let keyring = || Keyring::from_docker_config(docker_config.as_bytes(), "test").unwrap();
    let settings = RegistryConfig { host: host.clone(), ..registry_settings(&registry) };
    let image = format!("{host}/app:v1");

    // The realm shares the named registry's loopback address; what is tested is where
    // credentials go.
    let inspector = |settings: RegistryConfig| {
        let config = Config { registries: vec![settings], ..Config::default() };
        inspector_with(config, keyring())
    };
    let untrusted = inspector(settings.clone());
    let inspection = inspect(&untrusted, &image).await;
    assert_eq!(codes(&inspection), vec![Code::AddressRefused], "{:#?}", inspection.findings);
    assert!(inspection.findings[0].message.contains("tokenRealmHosts"), "{:#?}", inspection.findings);
    assert_eq!(tokens.requests_with_credentials(), 0, "no credentials left for the other host");

    let listed = RegistryConfig { token_realm_hosts: vec!["127.0.0.1".into()], ..settings };
    let inspection = inspect(&inspector(listed), &image).await;
    assert_eq!(codes(&inspection), vec![], "{:#?}", inspection.findings);
    assert!(tokens.requests_with_credentials() >= 1);
}

#[tokio::test]
async fn bearer_token_registry() {
    use pullguard_tests::token::{LIMITED_PASSWORD, LIMITED_USER, ROBOT_PASSWORD, ROBOT_USER, TokenServer};
    let tokens = TokenServer::start().await.unwrap();
    let registry = RegistryProcess::start_token_auth(&tokens).await.unwrap();
    let minted = tokens.push_token(&["app", "public/base"]).unwrap();
    let seeder = Seeder::with_auth(&registry, Auth::bearer(&minted)).unwrap();
    seeder.push_image("app", "v1", &ImageSpec::linux("amd64")).await.unwrap();
    seeder.push_image("app", "v2", &ImageSpec::linux("amd64")).await.unwrap();
    seeder.push_image("public/base", "v1", &ImageSpec::linux("arm64")).await.unwrap();
    let settings = registry_settings(&registry);
    let keyring = |user: &str, password: &str| {
        use base64::Engine;
        let auth = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        let json = serde_json::json!({"auths": {registry.host(): {"auth": auth}}});
        Keyring::from_docker_config(json.to_string().as_bytes(), "test").unwrap()
    };
    let host = registry.host();

    let robot = inspector(vec![settings.clone()], keyring(ROBOT_USER, ROBOT_PASSWORD));
    let inspection = inspect(&robot, &format!("{host}/app:v1")).await;
    assert_eq!(codes(&inspection), vec![], "{:#?}", inspection.findings);
    let fetched = tokens.requests();
    assert!(tokens.requests_with_credentials() >= 1, "credentials go to the realm the registry named");
    // Another tag of the same repository reuses the token.
    assert_eq!(codes(&inspect(&robot, &format!("{host}/app:v2")).await), vec![]);
    assert_eq!(tokens.requests(), fetched);
    assert_eq!(codes(&inspect(&robot, &format!("{host}/app:nosuchtag")).await), vec![Code::TagNotFound]);

    let anonymous = inspector(vec![settings.clone()], Keyring::default());
    let with_credentials_before = tokens.requests_with_credentials();
    let inspection = inspect(&anonymous, &format!("{host}/public/base:v1")).await;
    assert_eq!(codes(&inspection), vec![], "{:#?}", inspection.findings);
    assert_eq!(tokens.requests_with_credentials(), with_credentials_before, "anonymous sends no credentials");
    assert_eq!(codes(&inspect(&anonymous, &format!("{host}/app:v1")).await), vec![Code::CredentialsRequired]);

    let limited = inspector(vec![settings.clone()], keyring(LIMITED_USER, LIMITED_PASSWORD));
    assert_eq!(codes(&inspect(&limited, &format!("{host}/app:v1")).await), vec![Code::AccessDenied]);
    assert_eq!(codes(&inspect(&limited, &format!("{host}/public/base:v1")).await), vec![]);

    let wrong = inspector(vec![settings], keyring(ROBOT_USER, "not-the-password-9x"));
    assert_eq!(codes(&inspect(&wrong, &format!("{host}/app:v1")).await), vec![Code::CredentialsRejected]);
}

/// containerd keeps index entries that name no platform and matches them by their config; so
/// must pullguard (an index of such entries is not "no runnable platform").
#[tokio::test]
async fn index_entries_without_a_platform_are_read_from_their_config() {
    use pullguard_core::{checks::NodeTargets, platform::Platform};
    let registry = RegistryProcess::start_plain().await.unwrap();
    let seeder = Seeder::new(&registry).unwrap();
    let entries = [
        IndexEntry::Unlabelled(ImageSpec::linux("amd64")),
        IndexEntry::Unlabelled(ImageSpec::linux("arm64")),
    ];
    seeder
        .push_index_detailed("unlabelled", "v1", &entries, pullguard_tests::seed::Format::Oci)
        .await
        .unwrap();
    let inspector = inspector(vec![registry_settings(&registry)], Keyring::default());
    let image = format!("{}/unlabelled:v1", registry.host());
    let credentials = PodCredentials::none();
    let deadline = Instant::now() + inspector.config().deadline.0;
    let options = InspectOptions { offline: false, deadline, image_reports: true };
    let containers = vec![ContainerImage::new("app", &image, ContainerKind::App)];
    for (nodes, expected) in
        [("linux/arm64", vec![]), ("linux/amd64", vec![]), ("linux/s390x", vec![Code::NoRunnablePlatform])]
    {
        let targets = NodeTargets::from_platforms(&[Platform::parse(nodes).unwrap()]);
        let context = PodContext {
            targets: Some(&targets),
            credentials: &credentials,
            placement: Placement::Scheduled,
        };
        let inspection = inspector.inspect(&containers, context, options).await;
        assert_eq!(codes(&inspection), expected, "{nodes}: {:#?}", inspection.findings);
    }
}
