//! Pull secrets and docker config files: parse the keyring, match images against it the way
//! the kubelet would. Secrets are user input: nothing here may panic.
#![no_main]

use std::collections::BTreeMap;

use libfuzzer_sys::fuzz_target;
use pullguard_core::{
    credentials::{DOCKER_CFG, DOCKER_CONFIG_JSON, Keyring, keyring_from_secret},
    reference::ImageRef,
};

const IMAGES: [&str; 8] = [
    "nginx",
    "docker.io/bitnami/redis:7",
    "registry.example.com:5443/team/web:v1.2.3",
    "a.b.corp.example/x/y/z",
    "localhost:5000/app:dev",
    "[::1]:5000/app:v1",
    "127.0.0.1/a",
    "ghcr.io/org/app@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
];

fn exercise(keyring: &Keyring) {
    let _ = keyring.is_empty();
    let mut images: Vec<ImageRef> = IMAGES.iter().filter_map(|image| ImageRef::parse(image).ok()).collect();
    // The keys themselves as registries, so fuzzed hosts, ports and paths meet a matching image.
    for key in keyring.keys().take(16) {
        let host = key.strip_prefix("https://").or_else(|| key.strip_prefix("http://")).unwrap_or(key);
        images.extend(ImageRef::parse(&format!("{}/x/y", host.trim_end_matches('/'))).ok());
    }
    for image in &images {
        for credential in keyring.lookup(image) {
            let _ = (credential.identity(), credential.source(), credential.key(), format!("{credential:?}"));
        }
    }
}

fuzz_target!(|data: &[u8]| {
    if let Ok(keyring) = Keyring::from_docker_config(data, "fuzz") {
        exercise(&keyring);
        let mut merged = keyring.clone();
        merged.extend(keyring.clone());
        assert_eq!(merged.keys().count(), 2 * keyring.keys().count());
        let mut taken = Keyring::default();
        taken.extend(keyring.clone());
        assert!(taken.keys().eq(keyring.keys()), "an empty keyring extended is the other");
    }

    // The same bytes as a Secret: the first byte picks the type and the data key.
    let Some((&selector, rest)) = data.split_first() else { return };
    let secret_type = match selector & 3 {
        0 => Some(DOCKER_CONFIG_JSON),
        1 => Some(DOCKER_CFG),
        2 => Some("Opaque"),
        _ => None,
    };
    let key = match (selector >> 2) & 3 {
        0 => ".dockerconfigjson",
        1 => ".dockercfg",
        2 => "config.json",
        _ => "",
    };
    let data = BTreeMap::from([(key.to_string(), rest.to_vec())]);
    if let Ok(keyring) = keyring_from_secret("fuzz", secret_type, &data) {
        exercise(&keyring);
    }
});
