//! Image reference parsing and normalisation, following the grammar of
//! github.com/distribution/reference (`ParseNormalizedNamed`) plus the kubelet's
//! habit of pulling `latest` when neither tag nor digest is given. Admission
//! decisions must agree with what the node will actually pull, so this module
//! deliberately mirrors those quirks instead of inventing a friendlier grammar.

pub mod memo;

use std::fmt;
use std::str::FromStr;

/// Bound the work done on attacker-controlled admission input before parsing anything.
const MAX_INPUT_LEN: usize = 4096;
/// distribution's `NameTotalLengthMax`, applied to the normalised name.
const MAX_NAME_LEN: usize = 255;
const MAX_TAG_LEN: usize = 128;
const DOCKER_HUB: &str = "docker.io";
const LEGACY_DOCKER_HUB: &str = "index.docker.io";
/// docker.io is only a name; the registry API for Docker Hub lives here.
const DOCKER_HUB_API: &str = "registry-1.docker.io";
const DEFAULT_TAG: &str = "latest";

/// Why an image reference was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReferenceError {
    #[error("image reference is empty")]
    Empty,
    #[error("image reference is {len} bytes long, more than the {MAX_INPUT_LEN} allowed")]
    TooLong { len: usize },
    #[error("repository path is {len} characters long, more than the {MAX_NAME_LEN} allowed")]
    NameTooLong { len: usize },
    #[error("repository name must be lowercase")]
    UppercaseRepository,
    #[error("invalid reference format: {reason}")]
    InvalidFormat { reason: &'static str },
    #[error("invalid repository path {0:?}")]
    InvalidRepository(String),
    #[error("invalid tag {0:?}: must match [A-Za-z0-9_][A-Za-z0-9_.-]{{0,127}}")]
    InvalidTag(String),
    #[error(
        "invalid digest {0:?}: expected sha256, sha384 or sha512 followed by lowercase hex of matching length"
    )]
    InvalidDigest(String),
    #[error("invalid repository name: cannot specify 64-byte hexadecimal strings")]
    HexIdentifier,
    #[error("invalid registry domain {0:?}")]
    InvalidDomain(String),
}

/// A parsed, normalised image reference.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ImageRef {
    registry: String,
    repository: String,
    tag: Option<String>,
    digest: Option<String>,
}

impl ImageRef {
    pub fn parse(input: &str) -> Result<ImageRef, ReferenceError> {
        if input.is_empty() {
            return Err(ReferenceError::Empty);
        }
        if input.len() > MAX_INPUT_LEN {
            return Err(ReferenceError::TooLong { len: input.len() });
        }
        // The kubelet does not trim; whitespace, control and non-ASCII bytes can never match
        // the grammar, and rejecting them up front keeps later slicing on ASCII boundaries.
        if !input.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(ReferenceError::InvalidFormat {
                reason: "contains whitespace, control or non-ASCII characters",
            });
        }
        // A bare image ID would otherwise be read as docker.io/library/<hex>.
        if is_lower_hex(input, 64) {
            return Err(ReferenceError::HexIdentifier);
        }

        let (rest, digest) = match input.split_once('@') {
            Some((rest, digest)) => (rest, Some(parse_digest(digest)?)),
            None => (input, None),
        };
        // A ':' followed later by '/' belongs to a registry port, not a tag.
        let (name, tag) = match rest.rfind(':') {
            Some(i) if !rest[i..].contains('/') => (&rest[..i], Some(&rest[i + 1..])),
            _ => (rest, None),
        };
        if name.is_empty() {
            return Err(ReferenceError::InvalidFormat { reason: "missing repository name" });
        }
        if let Some(tag) = tag {
            validate_tag(tag)?;
        }

        let (domain, path) = split_domain(name);
        // Checked before the path grammar so "Nginx" gets docker's specific message.
        if path.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(ReferenceError::UppercaseRepository);
        }
        if let Some(domain) = domain {
            // distribution would silently re-read an invalid domain as a path component
            // (e.g. "a_b.c/d"), which no runtime can pull from; refuse it instead.
            validate_domain(domain)?;
        }
        validate_path(path)?;

        let registry = match domain {
            None | Some(LEGACY_DOCKER_HUB) => DOCKER_HUB,
            Some(domain) => domain,
        };
        let repository = if registry == DOCKER_HUB && !path.contains('/') {
            format!("library/{path}")
        } else {
            path.to_owned()
        };
        // distribution/reference (containerd, the kubelet's runtime) limits the repository path
        // after normalisation (`library/` included), never the registry's name with it.
        if repository.len() > MAX_NAME_LEN {
            return Err(ReferenceError::NameTooLong { len: repository.len() });
        }

        Ok(ImageRef { registry: registry.to_owned(), repository, tag: tag.map(str::to_owned), digest })
    }

    pub fn registry(&self) -> &str {
        &self.registry
    }

    pub fn repository(&self) -> &str {
        &self.repository
    }

    /// The tag exactly as written; `None` when the runtime would default it or ignore it.
    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    pub fn digest(&self) -> Option<&str> {
        self.digest.as_deref()
    }

    /// The tag the runtime pulls: explicit tag, else "latest" when there is no digest;
    /// None when digest-only.
    pub fn effective_tag(&self) -> Option<&str> {
        match (&self.tag, &self.digest) {
            (Some(tag), _) => Some(tag),
            (None, None) => Some(DEFAULT_TAG),
            (None, Some(_)) => None,
        }
    }

    /// What goes in /v2/<repo>/manifests/<reference>: the digest if present (runtimes
    /// ignore the tag then), else the effective tag.
    pub fn manifest_reference(&self) -> &str {
        self.digest.as_deref().or(self.tag.as_deref()).unwrap_or(DEFAULT_TAG)
    }

    /// "docker.io/library/nginx" (no tag/digest): what the kubelet keyring matches against.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    /// Fully normalised form; ":latest" is added only when neither tag nor digest is present,
    /// matching what the kubelet asks the runtime to pull.
    pub fn normalized(&self) -> String {
        let mut out = self.name();
        if let Some(tag) = self.effective_tag() {
            out.push(':');
            out.push_str(tag);
        }
        if let Some(digest) = &self.digest {
            out.push('@');
            out.push_str(digest);
        }
        out
    }

    /// How a node's image list (`status.images[].names`) names this image: by digest when the
    /// reference has one (the runtime pulls the digest), else by its effective tag.
    pub fn node_image_key(&self) -> String {
        let mut key = self.name();
        match (&self.digest, self.effective_tag()) {
            (Some(digest), _) => {
                key.push('@');
                key.push_str(digest);
            }
            (None, Some(tag)) => {
                key.push(':');
                key.push_str(tag);
            }
            (None, None) => {}
        }
        key
    }

    pub fn is_docker_hub(&self) -> bool {
        self.registry == DOCKER_HUB
    }

    /// Host to contact for the registry API: "registry-1.docker.io" for docker.io,
    /// otherwise the registry as written (host[:port], IPv6 in brackets).
    pub fn api_host(&self) -> &str {
        if self.is_docker_hub() { DOCKER_HUB_API } else { &self.registry }
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.normalized())
    }
}

impl FromStr for ImageRef {
    type Err = ReferenceError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ImageRef::parse(s)
    }
}

fn is_lower_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Docker's heuristic: the first component names a registry only if it cannot be a
/// Docker Hub user, i.e. it has a dot, a port, is "localhost", or has uppercase letters.
fn split_domain(name: &str) -> (Option<&str>, &str) {
    match name.split_once('/') {
        Some((first, rest))
            if first.contains(['.', ':'])
                || first == "localhost"
                || first.bytes().any(|b| b.is_ascii_uppercase()) =>
        {
            (Some(first), rest)
        }
        _ => (None, name),
    }
}

fn parse_digest(digest: &str) -> Result<String, ReferenceError> {
    let invalid = || ReferenceError::InvalidDigest(digest.to_owned());
    let (algorithm, encoded) = digest.split_once(':').ok_or_else(invalid)?;
    // containerd only verifies these; any other algorithm could never be pulled.
    let hex_len = match algorithm {
        "sha256" => 64,
        "sha384" => 96,
        "sha512" => 128,
        _ => return Err(invalid()),
    };
    if !is_lower_hex(encoded, hex_len) {
        return Err(invalid());
    }
    Ok(digest.to_owned())
}

fn validate_tag(tag: &str) -> Result<(), ReferenceError> {
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let mut bytes = tag.bytes();
    let first_ok = bytes.next().is_some_and(word);
    if first_ok && tag.len() <= MAX_TAG_LEN && bytes.all(|b| word(b) || b == b'.' || b == b'-') {
        Ok(())
    } else {
        Err(ReferenceError::InvalidTag(tag.to_owned()))
    }
}

fn validate_domain(domain: &str) -> Result<(), ReferenceError> {
    let invalid = || ReferenceError::InvalidDomain(domain.to_owned());
    let (host_ok, port) = if let Some(bracketed) = domain.strip_prefix('[') {
        let (ip, after) = bracketed.split_once(']').ok_or_else(invalid)?;
        // The charset check keeps out zones ("%eth0") and embedded IPv4, as distribution does;
        // the std parse rejects nonsense such as "[:::]" that the loose regex would let through.
        let ok = ip.bytes().all(|b| b.is_ascii_hexdigit() || b == b':')
            && ip.parse::<std::net::Ipv6Addr>().is_ok();
        let port = match after {
            "" => None,
            _ => Some(after.strip_prefix(':').ok_or_else(invalid)?),
        };
        (ok, port)
    } else {
        let (host, port) = match domain.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (domain, None),
        };
        (host.split('.').all(valid_domain_component), port)
    };
    let port_ok = port.is_none_or(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
    if host_ok && port_ok { Ok(()) } else { Err(invalid()) }
}

fn valid_domain_component(component: &str) -> bool {
    let bytes = component.as_bytes();
    match (bytes.first(), bytes.last()) {
        (Some(first), Some(last)) => {
            first.is_ascii_alphanumeric()
                && last.is_ascii_alphanumeric()
                && bytes.iter().all(|b| b.is_ascii_alphanumeric() || *b == b'-')
        }
        _ => false,
    }
}

fn validate_path(path: &str) -> Result<(), ReferenceError> {
    if path.split('/').all(valid_path_component) {
        Ok(())
    } else {
        Err(ReferenceError::InvalidRepository(path.to_owned()))
    }
}

/// alnum+ (separator alnum+)* with separator one of ".", "_", "__" or a run of dashes.
fn valid_path_component(component: &str) -> bool {
    let alnum = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let mut rest = component.as_bytes();
    loop {
        let run = rest.iter().take_while(|b| alnum(b)).count();
        if run == 0 {
            return false;
        }
        rest = &rest[run..];
        if rest.is_empty() {
            return true;
        }
        let sep_len = rest.iter().take_while(|b| !alnum(b)).count();
        let (sep, after) = rest.split_at(sep_len);
        if !(matches!(sep, b"." | b"_" | b"__") || sep.iter().all(|b| *b == b'-')) {
            return false;
        }
        rest = after;
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    const HEX: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    /// input | registry | repository | explicit tag ("-" = none) | normalized; `{D}` is a sha256 digest.
    const VALID: &[&str] = &[
        "nginx | docker.io | library/nginx | - | docker.io/library/nginx:latest",
        "nginx:1.25 | docker.io | library/nginx | 1.25 | docker.io/library/nginx:1.25",
        "library/nginx | docker.io | library/nginx | - | docker.io/library/nginx:latest",
        "docker.io/nginx | docker.io | library/nginx | - | docker.io/library/nginx:latest",
        "index.docker.io/library/nginx:1 | docker.io | library/nginx | 1 | docker.io/library/nginx:1",
        "bitnami/redis:7 | docker.io | bitnami/redis | 7 | docker.io/bitnami/redis:7",
        "ghcr.io/org/app:v1.2.3 | ghcr.io | org/app | v1.2.3 | ghcr.io/org/app:v1.2.3",
        "registry.example.com:5443/team/web:v1.2.3 | registry.example.com:5443 | team/web | v1.2.3 \
         | registry.example.com:5443/team/web:v1.2.3",
        "localhost/app | localhost | app | - | localhost/app:latest",
        "localhost:5000/app:dev | localhost:5000 | app | dev | localhost:5000/app:dev",
        "127.0.0.1:5000/a/b/c:t | 127.0.0.1:5000 | a/b/c | t | 127.0.0.1:5000/a/b/c:t",
        "[::1]:5000/app:v1 | [::1]:5000 | app | v1 | [::1]:5000/app:v1",
        "[2001:db8::1]/app | [2001:db8::1] | app | - | [2001:db8::1]/app:latest",
        "a.b/c__d/e-f/g.h:T_1.x-2 | a.b | c__d/e-f/g.h | T_1.x-2 | a.b/c__d/e-f/g.h:T_1.x-2",
        "a--b/c_d | docker.io | a--b/c_d | - | docker.io/a--b/c_d:latest",
        "Foo/bar | Foo | bar | - | Foo/bar:latest",
        "h:65536/x | h:65536 | x | - | h:65536/x:latest",
        "busybox@{D} | docker.io | library/busybox | - | docker.io/library/busybox@{D}",
        "busybox:1.36@{D} | docker.io | library/busybox | 1.36 | docker.io/library/busybox:1.36@{D}",
        "[::1]/app:v@{D} | [::1] | app | v | [::1]/app:v@{D}",
    ];

    #[test]
    fn valid_references_parse_and_round_trip() {
        let digest = format!("sha256:{HEX}");
        for row in VALID {
            let row = row.replace("{D}", &digest);
            let f: Vec<&str> = row.split('|').map(str::trim).collect();
            let (input, tag) = (f[0], Some(f[3]).filter(|t| *t != "-"));
            let r = ImageRef::parse(input).unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!((r.registry(), r.repository(), r.tag()), (f[1], f[2], tag), "{input}");
            assert_eq!(r.normalized(), f[4], "{input}");
            assert_eq!(r.digest(), input.contains('@').then_some(digest.as_str()), "{input}");
            assert_eq!(r.to_string(), r.normalized());
            assert_eq!(input.parse::<ImageRef>().unwrap(), r);
            assert_eq!(r.name(), format!("{}/{}", r.registry(), r.repository()));
            let expected_tag = tag.or(r.digest().is_none().then_some("latest"));
            assert_eq!(r.effective_tag(), expected_tag, "{input}");
            let expected_ref = r.digest().or(expected_tag);
            assert_eq!(Some(r.manifest_reference()), expected_ref, "{input}");

            let again = ImageRef::parse(&r.normalized()).unwrap_or_else(|e| panic!("{input}: {e}"));
            // Re-parsing makes the implied "latest" explicit; everything the runtime sees is unchanged.
            let implicit_latest = ImageRef { tag: Some("latest".into()), ..r.clone() };
            assert!(again == r || (tag.is_none() && r.digest().is_none() && again == implicit_latest));
            assert_eq!(again.normalized(), r.normalized());
            assert_eq!(again.manifest_reference(), r.manifest_reference());
            assert_eq!(ImageRef::parse(&again.normalized()).unwrap(), again);
        }
    }

    #[test]
    fn accessors() {
        let hub = ImageRef::parse("nginx").unwrap();
        assert!(hub.is_docker_hub());
        assert_eq!(hub.api_host(), "registry-1.docker.io");
        assert_eq!(hub.name(), "docker.io/library/nginx");
        let v6 = ImageRef::parse("[::1]:5000/app:v1").unwrap();
        assert!(!v6.is_docker_hub());
        assert_eq!(v6.api_host(), "[::1]:5000");
        let pinned = ImageRef::parse(&format!("busybox@sha256:{HEX}")).unwrap();
        assert_eq!(pinned.effective_tag(), None);
        assert_eq!(pinned.manifest_reference(), format!("sha256:{HEX}"));
        let both = ImageRef::parse(&format!("busybox:1.36@sha256:{HEX}")).unwrap();
        assert_eq!(both.effective_tag(), Some("1.36"));
        assert_eq!(both.manifest_reference(), format!("sha256:{HEX}"));
        for digest in [format!("sha384:{}", &HEX.repeat(2)[..96]), format!("sha512:{}", HEX.repeat(2))] {
            assert_eq!(ImageRef::parse(&format!("q.io/x@{digest}")).unwrap().digest(), Some(digest.as_str()));
        }
        // Only the bare 64-hex string is an image ID; with a tag it is an ordinary name.
        let hex_name = ImageRef::parse(&format!("{HEX}:v1")).unwrap();
        assert_eq!(hex_name.repository(), format!("library/{HEX}"));
    }

    #[test]
    fn invalid_references_are_rejected() {
        // Whitespace-separated, so the cases with blanks or generated content are listed below.
        const PLAIN: &str = "nginx: nginx:-x nginx:.x :tag Nginx Docker.io/Library/Nginx nginx@sha256:abc nginx@ \
            a//b a/b/ /a -a a_ a..b a___b a.-b a+b a/B a:b:c host:port/ h:99x/a h:/a -bad.com/a bad-.com/a \
            a..com/b a_b.c/d [::1/app [fe80::1%eth0]/app [::ffff:1.2.3.4]/app [:::]/app [::1]x/app \
            registry.example.com/ÄPP";
        let d = format!("sha256:{HEX}");
        let generated = [
            String::new(),
            " nginx".into(),
            "nginx ".into(),
            "ng\tinx".into(),
            "ex ample.com/a".into(),
            HEX.into(),
            format!("@{d}"),
            format!("nginx@md5:{}", &HEX[..32]),
            format!("nginx@SHA256:{HEX}"),
            format!("nginx@sha256:{}", HEX.to_uppercase()),
            format!("nginx@sha256:{HEX}0"),
            format!("nginx@{d}@{d}"),
            format!("nginx:{}", "a".repeat(129)),
            format!("a.io/{}", "b".repeat(260)),
            "x".repeat(MAX_INPUT_LEN + 1),
        ];
        let cases: Vec<String> = PLAIN.split_whitespace().map(str::to_owned).chain(generated).collect();
        assert!(cases.len() >= 45);
        for input in &cases {
            assert!(ImageRef::parse(input).is_err(), "{input:?} should be rejected");
        }
    }

    /// distribution/reference's `Parse`: `len(repo.path) > RepositoryNameTotalLengthMax` (255).
    #[test]
    fn the_length_limit_is_on_the_repository_path() {
        let at_limit = format!("example.com/{}", "a".repeat(255));
        assert_eq!(ImageRef::parse(&at_limit).map(|r| r.repository().len()), Ok(255));
        let over = format!("example.com/{}", "a".repeat(256));
        assert_eq!(ImageRef::parse(&over), Err(ReferenceError::NameTooLong { len: 256 }));
        // Docker Hub's `library/` counts: it is part of the path the runtime pulls.
        assert!(ImageRef::parse(&"a".repeat(247)).is_ok());
        assert_eq!(ImageRef::parse(&"a".repeat(248)), Err(ReferenceError::NameTooLong { len: 256 }));
    }

    #[test]
    fn error_variants() {
        use ReferenceError as E;
        let p = ImageRef::parse;
        assert_eq!(p(""), Err(E::Empty));
        assert_eq!(p(&"a".repeat(5000)), Err(E::TooLong { len: 5000 }));
        assert_eq!(p(&"a".repeat(250)), Err(E::NameTooLong { len: 258 }));
        assert_eq!(p("Nginx"), Err(E::UppercaseRepository));
        assert_eq!(p("Docker.io/Library/Nginx"), Err(E::UppercaseRepository));
        assert_eq!(p(HEX), Err(E::HexIdentifier));
        assert_eq!(p("h:99x/a"), Err(E::InvalidDomain("h:99x".into())));
        assert_eq!(p("nginx:-x"), Err(E::InvalidTag("-x".into())));
        assert_eq!(p("nginx@sha256:abc"), Err(E::InvalidDigest("sha256:abc".into())));
        assert_eq!(p("a__b_/c"), Err(E::InvalidRepository("a__b_/c".into())));
        assert!(matches!(p(" nginx"), Err(E::InvalidFormat { .. })));
        assert_eq!(E::UppercaseRepository.to_string(), "repository name must be lowercase");
        assert!(E::HexIdentifier.to_string().ends_with("cannot specify 64-byte hexadecimal strings"));
    }
}
