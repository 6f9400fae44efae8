//! Registry answers: a manifest body under a media type chosen by the first byte (every type
//! pullguard accepts, or an arbitrary one taken from the input), sniffed, parsed, and judged.
//! Registries are untrusted: nothing here may panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pullguard_core::{
    facts::{self, ToRead},
    manifest::{
        self, ConfigPlatform, DOCKER_LIST, DOCKER_SCHEMA1, DOCKER_SCHEMA1_SIGNED, DOCKER_V2, OCI_INDEX,
        OCI_MANIFEST, Parsed,
    },
};

const MEDIA_TYPES: [&str; 6] =
    [OCI_INDEX, OCI_MANIFEST, DOCKER_LIST, DOCKER_V2, DOCKER_SCHEMA1_SIGNED, DOCKER_SCHEMA1];

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else { return };
    // Selector 0..=5: one of the constants. Otherwise the first line of the input is the media
    // type (and the Content-Type header), the remainder the body.
    let (media_type, content_type, body) = match MEDIA_TYPES.get(usize::from(selector % 8)) {
        Some(media_type) => (media_type.to_string(), None, rest),
        None => {
            let (line, body) = match rest.iter().position(|&b| b == b'\n') {
                Some(i) => (&rest[..i], &rest[i + 1..]),
                None => (rest, &[][..]),
            };
            let line = String::from_utf8_lossy(line).into_owned();
            (line.clone(), Some(line), body)
        }
    };

    let _ = manifest::media_type_of(None, body);
    if let Some(content_type) = content_type.as_deref() {
        let _ = manifest::media_type_of(Some(content_type), body);
    }
    if let Some(platform) = ConfigPlatform::parse(body) {
        let _ = platform.to_string();
    }

    let Ok(parsed) = manifest::parse(&media_type, body) else { return };
    let index = matches!(parsed, Parsed::Index { .. });
    // The resolver's own function: whatever the registry declares must not overflow or panic.
    let (facts, to_read) = facts::facts_of("", &media_type, parsed);
    assert_eq!(facts.kind.is_index(), index);
    match to_read {
        ToRead::Config(_) => assert!(facts.config_media_type.is_some()),
        ToRead::Children(children) => {
            assert!(index && children.len() <= facts::MAX_UNLABELLED_ENTRIES)
        }
        ToRead::Nothing => {}
    }
    for platform in &facts.platforms {
        let _ = platform.to_string();
    }
    // What the platform checks compare nodes with: any platform strings must normalise.
    for platform in facts.comparable_platforms() {
        let _ = platform.to_string();
    }
    let _ = facts.layers.iter().filter(|layer| layer.is_empty_layer()).count();
    let _ = facts::not_runnable_reason(&facts);
});
