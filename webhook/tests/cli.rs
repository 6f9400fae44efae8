//! The `pullguard` binary as users run it: `check` in CI against a real registry, and `serve`
//! with no TLS flags (the zero-set-up default). These live in the binary's own package so the
//! binary under test is always the one just built.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

use std::{
    io::{BufRead, BufReader},
    path::Path,
    process::{Command, Output, Stdio},
    time::{Duration, Instant},
};

use pullguard_tests::{
    registry::RegistryProcess,
    seed::{ImageSpec, Seeder},
};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_pullguard");

fn run(args: &[&str], dir: &Path) -> Output {
    Command::new(BIN)
        .args(args)
        .current_dir(dir)
        .env("HOME", dir)
        .env_remove("DOCKER_CONFIG")
        .env_remove("PULLGUARD_CONFIG")
        .output()
        .unwrap()
}

fn json_of(output: &Output) -> Value {
    serde_json::from_slice(&output.stdout).unwrap_or_else(|error| {
        panic!(
            "{error}: {}\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    })
}

fn codes(report: &Value) -> Vec<String> {
    report["findings"].as_array().unwrap().iter().map(|f| f["code"].as_str().unwrap().to_string()).collect()
}

#[test]
fn offline_reference_checks() {
    let dir = tempfile::tempdir().unwrap();
    let output =
        run(&["check", "--offline", "--image", "Docker.io/Library/Nginx", "--output", "json"], dir.path());
    assert_eq!(output.status.code(), Some(1));
    let report = json_of(&output);
    assert_eq!(codes(&report), vec!["PG100"]);
    assert_eq!(report["summary"]["errors"], 1);

    let output = run(&["check", "--offline", "--image", "nginx", "--output", "json"], dir.path());
    assert_eq!(output.status.code(), Some(0));
    let report = json_of(&output);
    assert_eq!(codes(&report), vec!["PG601"]);
    let image = &report["images"][0];
    assert_eq!(image["normalized"], "docker.io/library/nginx:latest");
    assert_eq!(image["registry"], "docker.io");
    assert_eq!(image["repository"], "library/nginx");
    assert_eq!(image["tag"], "latest");
    assert_eq!(image["digest"], Value::Null);
    assert_eq!(image["resolved_digest"], Value::Null);
    assert_eq!(image["credential"], Value::Null);
}

#[test]
fn usage_and_config_errors_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let output = run(&["check"], dir.path());
    assert_eq!(output.status.code(), Some(2));
    std::fs::write(dir.path().join("bad.yaml"), "mode: enforce\ncache: {tagTTL: 5m}\n").unwrap();
    let output = run(&["check", "--config", "bad.yaml", "--offline", "--image", "nginx:1"], dir.path());
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("tagTTL"), "{stderr}");
    let output = run(&["check", "--mode", "strict", "--offline", "--image", "nginx:1"], dir.path());
    assert_eq!(output.status.code(), Some(2));
    let output = run(&["check", "--offline", "-f", "missing.yaml"], dir.path());
    assert_eq!(output.status.code(), Some(2));
}

#[tokio::test]
async fn check_against_a_seeded_registry() {
    let registry = RegistryProcess::start_plain().await.unwrap();
    let seeder = Seeder::new(&registry).unwrap();
    let good = seeder.push_image("app", "v1.2.3", &ImageSpec::linux("amd64")).await.unwrap();
    seeder.push_image("app", "v1.2.4", &ImageSpec::linux("amd64")).await.unwrap();
    seeder.push_schema1("legacy", "v1", "amd64").await.unwrap();
    let octet = ImageSpec::linux("amd64").docker().with_config_media_type("application/octet-stream");
    seeder.push_image("octet", "v1", &octet).await.unwrap();
    let host = registry.host();
    let dir = insecure_config_dir(&host);
    let check = |image: String| {
        let dir = dir.path().to_path_buf();
        tokio::task::spawn_blocking(move || {
            run(&["check", "--config", "pullguard.yaml", "--image", &image, "--output", "json"], &dir)
        })
    };

    let output = check(format!("{host}/app:nosuchtag")).await.unwrap();
    assert_eq!(output.status.code(), Some(1));
    let report = json_of(&output);
    assert_eq!(codes(&report), vec!["PG101"]);
    let message = report["findings"][0]["message"].as_str().unwrap();
    assert!(message.contains("v1.2.3") && message.contains("v1.2.4"), "{message}");

    let output = check(format!("{host}/legacy:v1")).await.unwrap();
    assert_eq!(codes(&json_of(&output)), vec!["PG401"]);
    let output = check(format!("{host}/octet:v1")).await.unwrap();
    assert_eq!(codes(&json_of(&output)), vec!["PG402"]);

    let output = check(format!("{host}/app:v1.2.3")).await.unwrap();
    assert_eq!(output.status.code(), Some(0));
    let report = json_of(&output);
    assert!(codes(&report).is_empty());
    assert_eq!(report["images"][0]["resolved_digest"], good.digest);

    // Manifests: a Deployment with a bad tag, in YAML, through stdin.
    let manifest = format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: api, namespace: shop}}\nspec:\n  template:\n    spec:\n      containers: [{{name: api, image: \"{host}/app:v9\"}}]\n---\napiVersion: v1\nkind: Service\nmetadata: {{name: api}}\n"
    );
    let dir_path = dir.path().to_path_buf();
    let output = tokio::task::spawn_blocking(move || {
        let mut child = Command::new(BIN)
            .args(["check", "--config", "pullguard.yaml", "-f", "-", "--output", "json"])
            .current_dir(&dir_path)
            .env("HOME", &dir_path)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        child.stdin.take().unwrap().write_all(manifest.as_bytes()).unwrap();
        child.wait_with_output().unwrap()
    })
    .await
    .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let report = json_of(&output);
    assert_eq!(report["findings"][0]["workload"], "Deployment/shop/api");
    assert_eq!(report["findings"][0]["container"], "api");
}

#[tokio::test]
async fn check_reports_the_credential_used_even_offline() {
    let (registry, dir, docker_config) = private_registry().await;
    let host = registry.host();
    std::fs::write(dir.path().join("docker.json"), docker_config).unwrap();
    let image = format!("{host}/private:v1");
    let dir_path = dir.path().to_path_buf();
    let (online, offline, anonymous) = tokio::task::spawn_blocking(move || {
        let base = ["check", "--config", "pullguard.yaml", "--output", "json", "--image", &image];
        let online = run(&[&base[..], &["--docker-config", "docker.json"]].concat(), &dir_path);
        let offline = run(&[&base[..], &["--docker-config", "docker.json", "--offline"]].concat(), &dir_path);
        let anonymous = run(&base, &dir_path);
        (online, offline, anonymous)
    })
    .await
    .unwrap();
    for output in [&online, &offline] {
        let report = json_of(output);
        assert!(codes(&report).is_empty(), "{report}");
        assert_eq!(report["images"][0]["credential"]["key"], host);
        assert!(report["images"][0]["credential"]["source"].as_str().unwrap().contains("docker.json"));
        let text =
            String::from_utf8_lossy(&output.stdout).to_string() + &String::from_utf8_lossy(&output.stderr);
        assert!(!text.contains("s3cret-pass"));
    }
    assert!(json_of(&online)["images"][0]["resolved_digest"].is_string());
    assert!(json_of(&offline)["images"][0]["resolved_digest"].is_null());
    // Without a cluster or the secrets, check cannot know what the pods will pull with: not
    // verified (info), never "missing".
    let report = json_of(&anonymous);
    assert_eq!(codes(&report), vec!["PG200"]);
    assert_eq!(anonymous.status.code(), Some(0));
    let message = report["findings"][0]["message"].as_str().unwrap();
    assert!(message.contains("--kubeconfig") && message.contains("--pull-secret"), "{message}");
}

/// Kills the server even when an assertion fails.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn serve_runs_with_a_generated_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Child(
        Command::new(BIN)
            .args(["serve", "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
            .current_dir(dir.path())
            .env("HOME", dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let stderr = child.0.stderr.take().unwrap();
    let (validate_url, admin) = tokio::task::spawn_blocking(move || {
        let started = Instant::now();
        let mut lines = BufReader::new(stderr).lines();
        while started.elapsed() < Duration::from_secs(30) {
            let Some(Ok(line)) = lines.next() else { break };
            if let Some(rest) = line.strip_prefix("pullguard: serving ") {
                let mut parts = rest.split(' ');
                let url = parts.next().unwrap().to_string();
                let admin = parts.nth(1).unwrap().trim_end_matches(')').to_string();
                // Keep draining stderr so the server never blocks on a full pipe.
                std::thread::spawn(move || for _ in lines {});
                return (url, admin);
            }
        }
        panic!("serve did not report its address");
    })
    .await
    .unwrap();
    let ca = std::fs::read(dir.path().join("pullguard-ca.pem")).unwrap();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(&ca).unwrap()])
        .no_proxy()
        .build()
        .unwrap();
    let review = std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/data/01-create-pod-main-web.json"),
    )
    .unwrap();
    let response = client.post(&validate_url).body(review).send().await.unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["kind"], "AdmissionReview");
    assert_eq!(body["response"]["uid"], "3544c348-d7ab-4aa0-aa24-4109dc43159f");
    // The fixture's registries do not exist here: unreachable is a warning, never a denial.
    assert_eq!(body["response"]["allowed"], true);
    let ready = reqwest::get(format!("{admin}/readyz")).await.unwrap();
    assert_eq!(ready.status().as_u16(), 200);
    let live = reqwest::get(format!("{admin}/livez")).await.unwrap();
    assert_eq!(live.status().as_u16(), 200);
}

#[tokio::test]
async fn check_compares_platforms_with_given_node_platforms() {
    use pullguard_tests::seed::{Format, IndexEntry};
    let registry = RegistryProcess::start_plain().await.unwrap();
    let seeder = Seeder::new(&registry).unwrap();
    seeder.push_image("armonly", "v1", &ImageSpec::linux("arm64/v8")).await.unwrap();
    let entries =
        [IndexEntry::image(ImageSpec::linux("amd64")), IndexEntry::image(ImageSpec::linux("arm64/v8"))];
    seeder.push_index("multi", "v1", &entries, Format::Oci).await.unwrap();
    let host = registry.host();
    let dir = insecure_config_dir(&host);
    let dir_path = dir.path().to_path_buf();
    let outputs = tokio::task::spawn_blocking(move || {
        let check = |image: &str, platforms: &[&str]| {
            let mut args = vec!["check", "--config", "pullguard.yaml", "--output", "json", "--image", image];
            for platform in platforms {
                args.extend(["--platform", platform]);
            }
            run(&args, &dir_path)
        };
        vec![
            check(&format!("{host}/armonly:v1"), &["linux/amd64"]),
            check(&format!("{host}/armonly:v1"), &["linux/amd64", "linux/aarch64"]),
            check(&format!("{host}/armonly:v1"), &[]),
            check(&format!("{host}/multi:v1"), &["linux/amd64", "linux/arm64"]),
            check(&format!("{host}/multi:v1"), &["linux/s390x"]),
            check(&format!("{host}/multi:v1"), &["linux"]),
        ]
    })
    .await
    .unwrap();
    assert_eq!(outputs[0].status.code(), Some(1));
    assert_eq!(codes(&json_of(&outputs[0])), vec!["PG301"]);
    let message = json_of(&outputs[0])["findings"][0]["message"].as_str().unwrap().to_string();
    assert!(message.contains("linux/arm64") && message.contains("linux/amd64"), "{message}");
    assert_eq!(outputs[1].status.code(), Some(0));
    assert_eq!(codes(&json_of(&outputs[1])), vec!["PG302"]);
    assert!(codes(&json_of(&outputs[2])).is_empty(), "no --platform: platforms are not checked");
    assert!(codes(&json_of(&outputs[3])).is_empty());
    assert_eq!(codes(&json_of(&outputs[4])), vec!["PG301"]);
    assert_eq!(outputs[5].status.code(), Some(2), "a malformed --platform is a usage error");
}

#[tokio::test]
async fn check_uses_pull_secret_manifests() {
    use base64::Engine;
    let (registry, dir, docker_config) = private_registry().await;
    let host = registry.host();
    let encoded = base64::engine::general_purpose::STANDARD.encode(&docker_config);
    std::fs::write(
        dir.path().join("secret.yaml"),
        format!(
            "apiVersion: v1\nkind: Secret\nmetadata: {{name: regcred, namespace: shop}}\ntype: kubernetes.io/dockerconfigjson\ndata:\n  .dockerconfigjson: {encoded}\n"
        ),
    )
    .unwrap();
    let image = format!("{host}/private:v1");
    let dir_path = dir.path().to_path_buf();
    let output = tokio::task::spawn_blocking(move || {
        run(
            &[
                "check",
                "--config",
                "pullguard.yaml",
                "--output",
                "json",
                "--pull-secret",
                "secret.yaml",
                "--image",
                &image,
            ],
            &dir_path,
        )
    })
    .await
    .unwrap();
    let report = json_of(&output);
    assert!(codes(&report).is_empty(), "{report}");
    let credential = &report["images"][0]["credential"];
    assert_eq!(credential["key"], host);
    assert!(credential["source"].as_str().unwrap().contains("regcred"), "{credential}");
    let text = String::from_utf8_lossy(&output.stdout);
    let auth = base64::engine::general_purpose::STANDARD.encode("robot:s3cret-pass");
    assert!(!text.contains("s3cret-pass") && !text.contains(&auth));
}

/// A directory holding `pullguard.yaml` that names `host` as a plain-HTTP registry.
fn insecure_config_dir(host: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let config = format!("registries:\n  - host: \"{host}\"\n    insecure: true\n");
    std::fs::write(dir.path().join("pullguard.yaml"), config).unwrap();
    dir
}

/// A TLS registry with htpasswd auth holding `private:v1`, a directory with `pullguard.yaml`
/// trusting its CA, and the docker config JSON of its credentials.
async fn private_registry() -> (RegistryProcess, tempfile::TempDir, String) {
    use base64::Engine;
    let registry = RegistryProcess::start_tls_auth("robot", "s3cret-pass").await.unwrap();
    Seeder::new(&registry).unwrap().push_image("private", "v1", &ImageSpec::linux("amd64")).await.unwrap();
    let host = registry.host();
    let dir = tempfile::tempdir().unwrap();
    let ca = registry.ca_path().unwrap().display().to_string();
    std::fs::write(
        dir.path().join("pullguard.yaml"),
        format!("registries:\n  - host: \"{host}\"\n    caFile: {ca}\n"),
    )
    .unwrap();
    let auth = base64::engine::general_purpose::STANDARD.encode("robot:s3cret-pass");
    let docker_config = format!(r#"{{"auths":{{"{host}":{{"auth":"{auth}"}}}}}}"#);
    (registry, dir, docker_config)
}

/// A plain registry holding `app:v1`, and a directory with `pullguard.yaml` naming it.
async fn registry_with_app_v1() -> (RegistryProcess, tempfile::TempDir) {
    let registry = RegistryProcess::start_plain().await.unwrap();
    Seeder::new(&registry).unwrap().push_image("app", "v1", &ImageSpec::linux("amd64")).await.unwrap();
    let dir = insecure_config_dir(&registry.host());
    (registry, dir)
}

#[tokio::test]
async fn github_annotations_point_at_the_image_lines() {
    let (registry, dir) = registry_with_app_v1().await;
    let host = registry.host();
    let manifest = format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: api}}\nspec:\n  ports: [{{port: 80}}]\n---\n\
         apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: api, namespace: shop}}\nspec:\n  template:\n    spec:\n\
         \x20     containers:\n        - name: api\n          image: {host}/app:v1\n        - name: side\n\
         \x20         image: \"{host}/app:v9\"  # typo\n"
    );
    std::fs::write(dir.path().join("deploy.yaml"), &manifest).unwrap();
    let expected_line = manifest.lines().position(|line| line.contains("app:v9")).unwrap() + 1;
    let dir_path = dir.path().to_path_buf();
    let output = tokio::task::spawn_blocking(move || {
        run(&["check", "--config", "pullguard.yaml", "--output", "github", "-f", "deploy.yaml"], &dir_path)
    })
    .await
    .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let annotation = stdout.lines().find(|line| line.starts_with("::error ")).expect("an error annotation");
    assert!(
        annotation.starts_with(&format!(
            "::error file=deploy.yaml,line={expected_line},title=PG101 Deployment/shop/api side::"
        )),
        "{annotation}"
    );
    assert!(annotation.contains("app%3Av9") || annotation.contains("\"v9\""), "{annotation}");
    assert!(stdout.lines().last().unwrap().contains("1 error(s)"), "{stdout}");
}

#[tokio::test]
async fn check_reads_image_volumes_from_manifests() {
    let (registry, dir) = registry_with_app_v1().await;
    let host = registry.host();
    let manifest = format!(
        "apiVersion: batch/v1\nkind: CronJob\nmetadata: {{name: train}}\nspec:\n  schedule: '@daily'\n  jobTemplate:\n    spec:\n      template:\n        spec:\n          restartPolicy: Never\n          containers: [{{name: trainer, image: \"{host}/app:v1\"}}]\n          volumes:\n            - name: weights\n              image: {{reference: \"{host}/app:v404\", pullPolicy: IfNotPresent}}\n"
    );
    std::fs::write(dir.path().join("cronjob.yaml"), manifest).unwrap();
    let dir_path = dir.path().to_path_buf();
    let output = tokio::task::spawn_blocking(move || {
        run(&["check", "--config", "pullguard.yaml", "-f", "cronjob.yaml", "--output", "json"], &dir_path)
    })
    .await
    .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let report = json_of(&output);
    assert_eq!(codes(&report), vec!["PG101"]);
    assert_eq!(report["findings"][0]["container"], "weights");
    assert_eq!(report["findings"][0]["volume"], true);
}

#[tokio::test]
async fn check_compares_stated_variants_as_containerd_does() {
    let registry = RegistryProcess::start_plain().await.unwrap();
    let seeder = Seeder::new(&registry).unwrap();
    seeder.push_image("neoverse", "v1", &ImageSpec::linux("arm64/v8.2")).await.unwrap();
    seeder.push_image("x86", "v3", &ImageSpec::linux("amd64/v3")).await.unwrap();
    let host = registry.host();
    let dir = insecure_config_dir(&host);
    let dir_path = dir.path().to_path_buf();
    let codes_for = move |image: String, platform: &'static str| {
        let dir = dir_path.clone();
        tokio::task::spawn_blocking(move || {
            let args = [
                "check",
                "--config",
                "pullguard.yaml",
                "--output",
                "json",
                "--image",
                &image,
                "--platform",
                platform,
            ];
            codes(&json_of(&run(&args, &dir)))
        })
    };
    // arm64 variants are ordered versions: v9.x runs v8.{0..x+5}; v8.0 runs no v8.2 image.
    assert_eq!(
        codes_for(format!("{host}/neoverse:v1"), "linux/arm64/v9.6").await.unwrap(),
        Vec::<String>::new()
    );
    assert_eq!(codes_for(format!("{host}/neoverse:v1"), "linux/arm64/v8").await.unwrap(), vec!["PG301"]);
    // An amd64 node of level v1 does not run an amd64/v3 image; without a variant nothing is refused.
    assert_eq!(codes_for(format!("{host}/x86:v3"), "linux/amd64/v1").await.unwrap(), vec!["PG301"]);
    assert_eq!(codes_for(format!("{host}/x86:v3"), "linux/amd64").await.unwrap(), Vec::<String>::new());
}
