//! Certificate rotation over a real socket, with the files laid out the way the kubelet mounts a
//! Secret (`tls.crt -> ..data/tls.crt`, `..data -> ..<timestamp>`, swapped by renaming a symlink).

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use pullguard::{
    app::App,
    server::{self, reload::CertReloader, tls::CertStore},
};
use pullguard_core::{config::Config, credentials::Keyring};
use pullguard_tests::{
    answer::Answer, certs::TestCa, secret_volume::SecretVolume, wait::eventually, webhook::fixture,
};

fn client(ca_pem: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(ca_pem.as_bytes()).unwrap()])
        .http2_prior_knowledge()
        .no_proxy()
        .build()
        .unwrap()
}

async fn admits(client: &reqwest::Client, url: &str) -> bool {
    let review = fixture("08-update-scale-scale-api.json").unwrap();
    let Ok(response) = client.post(url).json(&review).send().await else { return false };
    response.text().await.is_ok_and(|text| Answer::parse(&text).is_ok_and(|answer| answer.allowed))
}

/// Whether a client trusting `ca_pem` gets an answer, polled until it does (bounded).
async fn admitted_with(ca_pem: &str, url: &str, what: &str) {
    let client = client(ca_pem);
    eventually(what, Duration::from_secs(10), || admits(&client, url)).await.unwrap();
}

#[tokio::test]
async fn a_rotated_secret_is_served_without_dropping_connections() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    let mut volume = SecretVolume::new(dir.path());
    let first_ca = TestCa::new("first").unwrap();
    let (cert, key) = first_ca.issue_server(&["localhost", "127.0.0.1"]).unwrap();
    volume.publish(&cert, &key).unwrap();

    let certs = Arc::new(CertStore::new(server::tls::load_pem_files(&volume.cert(), &volume.key()).unwrap()));
    CertReloader::new(volume.cert(), volume.key(), certs.clone()).spawn(Duration::from_millis(100));
    let app = App::new(Config::default(), Keyring::default()).unwrap();
    let running = server::start(
        app.router(),
        app.admin_router(),
        "127.0.0.1:0".parse().unwrap(),
        "127.0.0.1:0".parse().unwrap(),
        certs,
    )
    .unwrap();
    let url = format!("https://localhost:{}/validate", running.addr.port());

    let established = client(&first_ca.ca_pem);
    assert!(admits(&established, &url).await);

    // A client loop with a fresh connection per request runs through the rotation: it trusts
    // both CAs, as a caBundle does during a rollover, and must never see a failure.
    let second_ca = TestCa::new("second").unwrap();
    let both = format!("{}{}", first_ca.ca_pem, second_ca.ca_pem);
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let looping = {
        let (url, stop) = (url.clone(), stop.clone());
        tokio::spawn(async move {
            let (mut ok, mut failed) = (0usize, 0usize);
            let started = Instant::now();
            while !stop.load(std::sync::atomic::Ordering::Relaxed)
                && started.elapsed() < Duration::from_secs(20)
            {
                let fresh = reqwest::Client::builder()
                    .tls_certs_only(reqwest::Certificate::from_pem_bundle(both.as_bytes()).unwrap())
                    .pool_max_idle_per_host(0)
                    .no_proxy()
                    .build()
                    .unwrap();
                if admits(&fresh, &url).await { ok += 1 } else { failed += 1 }
            }
            (ok, failed)
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;

    // Rotation to a certificate from another CA: new connections get it...
    let (cert, key) = second_ca.issue_server(&["localhost", "127.0.0.1"]).unwrap();
    volume.publish(&cert, &key).unwrap();
    admitted_with(&second_ca.ca_pem, &url, "the new certificate").await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (ok, failed) = looping.await.unwrap();
    assert!(ok > 5, "the loop barely ran: {ok}");
    assert_eq!(failed, 0, "{failed} of {} requests failed during the rotation", ok + failed);
    assert!(
        !admits(&client(&first_ca.ca_pem), &url).await,
        "new handshakes no longer get the old certificate"
    );
    // ...while the connection made before the swap keeps working.
    for _ in 0..5 {
        assert!(admits(&established, &url).await, "an established connection was dropped");
    }

    // A broken new version is refused; the last good certificate stays.
    volume.publish("not a certificate", "not a key").unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(admits(&client(&second_ca.ca_pem), &url).await);
    let third_ca = TestCa::new("third").unwrap();
    let (_, mismatched_key) = third_ca.issue_server(&["localhost"]).unwrap();
    volume.publish(&cert, &mismatched_key).unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(admits(&client(&second_ca.ca_pem), &url).await, "a mismatched key must not be served");

    // And a good one after the bad ones is picked up again.
    let (cert, key) = third_ca.issue_server(&["localhost", "127.0.0.1"]).unwrap();
    volume.publish(&cert, &key).unwrap();
    admitted_with(&third_ca.ca_pem, &url, "recovery after a bad version").await;
    running.shutdown();
}
