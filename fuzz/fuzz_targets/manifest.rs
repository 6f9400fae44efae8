//! Registry answers: a manifest body under a media type chosen by the first byte (every type
//! pullguard accepts, or an arbitrary one taken from the input), sniffed, parsed, and judged.
//! Registries are untrusted: nothing here may panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pullguard::registry::manifest::{
    self, ConfigPlatform, DOCKER_LIST, DOCKER_SCHEMA1, DOCKER_SCHEMA1_SIGNED, DOCKER_V2, ImageFacts,
    ManifestKind, OCI_INDEX, OCI_MANIFEST, Parsed,
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
    // Turn the parse into facts the way the resolver does, and ask the checks' questions.
    let facts = match parsed {
        Parsed::Index { kind, artifact_type, entries } => {
            assert!(kind.is_index());
            ImageFacts {
                digest: String::new(),
                media_type,
                kind,
                platforms: entries.into_iter().filter_map(|entry| entry.platform).collect(),
                config_media_type: None,
                artifact_type,
                compressed_size: None,
                layers: vec![],
                comparable_platforms: Default::default(),
            }
        }
        Parsed::Image { kind, config_media_type, config_digest: _, artifact_type, layers } => {
            assert!(!kind.is_index());
            ImageFacts {
                digest: String::new(),
                media_type,
                kind,
                platforms: vec![],
                config_media_type: Some(config_media_type),
                artifact_type,
                compressed_size: Some(layers.iter().fold(0u64, |sum, layer| sum.saturating_add(layer.size))),
                layers,
                comparable_platforms: Default::default(),
            }
        }
        Parsed::Schema1 { architecture: _, layers } => ImageFacts {
            digest: String::new(),
            media_type,
            kind: ManifestKind::DockerSchema1,
            platforms: vec![],
            config_media_type: None,
            artifact_type: None,
            compressed_size: None,
            layers,
            comparable_platforms: Default::default(),
        },
    };
    for platform in &facts.platforms {
        let _ = platform.to_string();
    }
    // What the platform checks compare nodes with: any platform strings must normalise.
    for platform in facts.comparable_platforms() {
        let _ = platform.to_string();
    }
    let _ = facts.layers.iter().filter(|layer| layer.is_empty_layer()).count();
    let _ = manifest::not_runnable_reason(&facts);
});
