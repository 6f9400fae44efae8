//! `ImageRef::parse` on arbitrary text. A parsed reference must survive its own normalisation:
//! what the kubelet would pull is the same after a second parse.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pullguard_core::reference::ImageRef;

fuzz_target!(|data: &[u8]| {
    let Ok(input) = std::str::from_utf8(data) else { return };
    let Ok(r) = ImageRef::parse(input) else { return };

    let normalized = r.normalized();
    let again = match ImageRef::parse(&normalized) {
        Ok(again) => again,
        Err(error) => panic!("{input:?} parsed, but its normalized form {normalized:?} did not: {error}"),
    };
    assert_eq!(again.registry(), r.registry(), "registry of {input:?} changed through {normalized:?}");
    assert_eq!(again.repository(), r.repository(), "repository of {input:?} changed through {normalized:?}");
    assert_eq!(again.digest(), r.digest(), "digest of {input:?} changed through {normalized:?}");
    // The implied "latest" becomes explicit; a digest-only reference stays without a tag.
    let expected_tag = r.tag().or(r.digest().is_none().then_some("latest"));
    assert_eq!(again.tag(), expected_tag, "tag of {input:?} changed through {normalized:?}");
    assert_eq!(again.normalized(), normalized, "normalisation of {input:?} is not idempotent");
    assert_eq!(again.manifest_reference(), r.manifest_reference());

    assert!(!r.manifest_reference().is_empty(), "{input:?}: empty manifest reference");
    assert!(!r.registry().is_empty() && !r.repository().is_empty(), "{input:?}: empty name part");
    let name = r.name();
    assert!(normalized.starts_with(&name), "{input:?}: name {name:?} is not a prefix of {normalized:?}");
    assert_eq!(r.to_string(), normalized);
    assert_eq!(r.effective_tag().is_none(), r.tag().is_none() && r.digest().is_some());
    assert!(!r.api_host().is_empty());
    assert_eq!(r.is_docker_hub(), r.registry() == "docker.io");
    assert_eq!(input.parse::<ImageRef>().ok().as_ref(), Some(&r), "FromStr disagrees with parse");
});
