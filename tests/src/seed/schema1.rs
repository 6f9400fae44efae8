//! Docker schema 1 manifests, signed the way libtrust signs them (pretty JWS), and libtrust key
//! IDs, which distribution's token auth also uses to name keys.

use anyhow::{Result, anyhow, ensure};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

use super::{Seeder, media, sha256_digest};

impl Seeder {
    /// Pushes a signed Docker schema 1 manifest (libtrust pretty JWS, ES256) with one layer.
    /// Returns the digest the registry reports: sha256 of the payload without signatures.
    pub async fn push_schema1(&self, repo: &str, tag: &str, architecture: &str) -> Result<String> {
        let label = format!("{repo}:{tag} linux/{architecture}");
        let layer = self.push_blob(repo, format!("pullguard schema1 layer of {label}\n").as_bytes()).await?;
        let id = hex::encode(Sha256::digest(label.as_bytes()));
        let v1_compatibility = serde_json::to_string(&json!({
            "id": id,
            "created": "2020-01-01T00:00:00Z",
            "architecture": architecture,
            "os": "linux",
            "container_config": {"Cmd": [""]},
            "config": {"Labels": {"org.pullguard.test.seed": label}},
        }))?;
        let manifest = json!({
            "schemaVersion": 1,
            "name": repo,
            "tag": tag,
            "architecture": architecture,
            "fsLayers": [{"blobSum": layer.digest}],
            "history": [{"v1Compatibility": v1_compatibility}],
        });
        let payload = pretty_json(&manifest, 3)?;
        let signed = sign_pretty_jws(&payload)?;
        let digest = sha256_digest(&payload);
        let served = self.put_manifest(repo, tag, media::SCHEMA1_SIGNED, &signed).await?;
        if let Some(served) = served {
            ensure!(
                served == digest,
                "registry digested schema 1 {repo}:{tag} as {served}, expected {digest}"
            );
        }
        Ok(digest)
    }
}

// serde_json only indents by two spaces without a serde dependency; JSON strings cannot
// contain raw newlines, so leading spaces on each line are pure indentation.
fn pretty_json(value: &Value, indent: usize) -> Result<Vec<u8>> {
    let two = serde_json::to_string_pretty(value)?;
    let lines: Vec<String> = two
        .lines()
        .map(|line| {
            let depth = (line.len() - line.trim_start_matches(' ').len()) / 2;
            format!("{}{}", " ".repeat(depth * indent), line.trim_start_matches(' '))
        })
        .collect();
    Ok(lines.join("\n").into_bytes())
}

/// Signs `payload` (pretty-printed JSON) the way libtrust's `JSONSignature.PrettySignature`
/// does, with a fresh ECDSA P-256 key, and returns the signed manifest body.
pub fn sign_pretty_jws(payload: &[u8]) -> Result<Vec<u8>> {
    use ring::rand::SystemRandom;
    use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _};

    // libtrust keeps everything up to the last non-space byte before the final `}` and
    // records the rest as formatTail; verification re-appends the tail to that prefix.
    let close =
        payload.iter().rposition(|&b| b == b'}').ok_or_else(|| anyhow!("payload is not a JSON object"))?;
    let mut format_length = close;
    while format_length > 0 && payload[format_length - 1].is_ascii_whitespace() {
        format_length -= 1;
    }
    let format_tail = &payload[format_length..];

    let rng = SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
        .map_err(|_| anyhow!("generating the schema 1 signing key"))?;
    let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
        .map_err(|e| anyhow!("loading the schema 1 signing key: {e}"))?;
    let point = key.public_key().as_ref();
    ensure!(point.len() == 65 && point[0] == 4, "unexpected P-256 public key encoding");
    let mut spki = P256_SPKI_PREFIX.to_vec();
    spki.extend_from_slice(point);

    let protected = serde_json::to_vec(&json!({
        "formatLength": format_length,
        "formatTail": B64URL.encode(format_tail),
        "time": crate::time::now_rfc3339(),
    }))?;
    let protected = B64URL.encode(protected);
    let signing_input = format!("{protected}.{}", B64URL.encode(payload));
    let signature =
        key.sign(&rng, signing_input.as_bytes()).map_err(|_| anyhow!("signing the schema 1 manifest"))?;

    let signatures = json!([{
        "header": {
            "jwk": {
                "crv": "P-256",
                "kid": libtrust_key_id(&spki),
                "kty": "EC",
                "x": B64URL.encode(&point[1..33]),
                "y": B64URL.encode(&point[33..]),
            },
            "alg": "ES256",
        },
        "signature": B64URL.encode(signature.as_ref()),
        "protected": protected,
    }]);
    // libtrust marshals the signatures with the payload's indent as both prefix and step.
    let signatures = String::from_utf8(pretty_json(&signatures, 3)?)?.replace('\n', "\n   ");
    let mut body = payload[..format_length].to_vec();
    body.extend_from_slice(b",\n   \"signatures\": ");
    body.extend_from_slice(signatures.as_bytes());
    body.extend_from_slice(b"\n}");
    Ok(body)
}

// DER SubjectPublicKeyInfo header for an uncompressed P-256 point.
const P256_SPKI_PREFIX: [u8; 26] = [
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a, 0x86,
    0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];

/// libtrust key ID (also the `kid` of distribution's token auth): base32 of the first 30
/// bytes of SHA-256 of the DER SubjectPublicKeyInfo, in 12 colon-separated groups of 4.
pub fn libtrust_key_id(spki_der: &[u8]) -> String {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let hash = Sha256::digest(spki_der);
    let mut encoded = String::with_capacity(48);
    // 30 bytes = 6 groups of 5 bytes = 48 characters, so no padding is ever needed.
    for chunk in hash[..30].chunks(5) {
        let bits = chunk.iter().fold(0u64, |acc, &b| (acc << 8) | u64::from(b));
        for shift in (0..8).rev() {
            encoded.push(char::from(ALPHABET[((bits >> (shift * 5)) & 31) as usize]));
        }
    }
    let groups: Vec<&str> = (0..12).map(|i| &encoded[i * 4..i * 4 + 4]).collect();
    groups.join(":")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pretty_json_uses_requested_indent() {
        let out = pretty_json(&json!({"a": [1], "b": {"c": "x  y"}}), 3).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "{\n   \"a\": [\n      1\n   ],\n   \"b\": {\n      \"c\": \"x  y\"\n   }\n}"
        );
    }

    #[test]
    fn key_id_shape() {
        let kid = libtrust_key_id(b"anything");
        assert_eq!(kid.len(), 59);
        assert_eq!(kid.split(':').count(), 12);
    }

    #[test]
    fn signed_body_keeps_payload_prefix() {
        let payload = pretty_json(&json!({"schemaVersion": 1, "name": "a"}), 3).unwrap();
        let body = sign_pretty_jws(&payload).unwrap();
        let len = payload.len() - 2;
        assert_eq!(&body[..len], &payload[..len]);
        assert!(body.ends_with(b"\n}"));
        let parsed: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(parsed["signatures"][0]["header"]["alg"], "ES256");
    }
}
