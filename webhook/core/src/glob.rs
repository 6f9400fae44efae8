//! Two small glob dialects: image and namespace patterns (`*` spans anything, `/` included, as
//! users write `registry.k8s.io/*`), and registry host patterns (`*` is one DNS label, as the
//! kubelet's keyring matches `*.corp.example`).

/// `*` matches any run of characters, `?` exactly one.
pub fn matches(pattern: &str, text: &str) -> bool {
    // Runs on every admission for every image and namespace pattern: ASCII (all Kubernetes names
    // and image references) is matched in place; anything else by characters, so that `?` is one.
    if pattern.is_ascii() && text.is_ascii() {
        wildcard(pattern.as_bytes(), text.as_bytes(), |a, b| a == b)
    } else {
        let pattern: Vec<char> = pattern.chars().collect();
        let text: Vec<char> = text.chars().collect();
        wildcard(&pattern, &text, |a, b| a == b)
    }
}

/// Greedy `*` with one backtrack point: linear in practice, quadratic at worst, never exponential.
fn wildcard<T: Copy + PartialEq + Wildcards>(pattern: &[T], text: &[T], same: impl Fn(T, T) -> bool) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut backtrack: Option<(usize, usize)> = None;
    while t < text.len() {
        match pattern.get(p) {
            Some(&c) if c == T::STAR => {
                backtrack = Some((p, t));
                p += 1;
            }
            Some(&c) if c == T::ANY || same(c, text[t]) => {
                p += 1;
                t += 1;
            }
            _ => match backtrack {
                Some((star, matched)) => {
                    p = star + 1;
                    t = matched + 1;
                    backtrack = Some((star, matched + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|&c| c == T::STAR)
}

trait Wildcards {
    const STAR: Self;
    const ANY: Self;
}

impl Wildcards for u8 {
    const STAR: u8 = b'*';
    const ANY: u8 = b'?';
}

impl Wildcards for char {
    const STAR: char = '*';
    const ANY: char = '?';
}

/// `host[:port]` against a pattern: same number of labels, `*` globbing within one label, ports equal.
pub fn host_matches(pattern: &str, host: &str) -> bool {
    let (pattern_host, pattern_port) = split_port(pattern);
    let (host_name, host_port) = split_port(host);
    if pattern_port != host_port {
        return false;
    }
    // Runs for every keyring entry and registry setting on every image of every admission, and
    // nearly every pattern names one host: without wildcards, label-by-label equality ignoring
    // ASCII case is equality of the whole names ignoring ASCII case.
    if !pattern_host.contains(['*', '?']) {
        return pattern_host.eq_ignore_ascii_case(host_name);
    }
    labels_match(pattern_host, host_name)
}

fn labels_match(pattern_host: &str, host_name: &str) -> bool {
    if pattern_host.split('.').count() != host_name.split('.').count() {
        return false;
    }
    pattern_host.split('.').zip(host_name.split('.')).all(|(pattern, label)| label_matches(pattern, label))
}

/// One DNS label against its pattern, ignoring ASCII case.
fn label_matches(pattern: &str, label: &str) -> bool {
    if pattern.is_ascii() && label.is_ascii() {
        wildcard(pattern.as_bytes(), label.as_bytes(), |a, b| a.eq_ignore_ascii_case(&b))
    } else {
        matches(&pattern.to_ascii_lowercase(), &label.to_ascii_lowercase())
    }
}

/// Splits a port off `host:port`, leaving bracketed IPv6 literals intact.
pub fn split_port(host: &str) -> (&str, Option<&str>) {
    if host.starts_with('[') {
        return match host.rfind("]:") {
            Some(end) => (&host[..=end], Some(&host[end + 2..])),
            None => (host, None),
        };
    }
    match host.rsplit_once(':') {
        Some((name, port)) if !name.contains(':') => (name, Some(port)),
        _ => (host, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn star_spans_slashes_in_image_patterns() {
        assert!(matches("registry.k8s.io/*", "registry.k8s.io/pause:3.9"));
        assert!(matches("*nginx*", "docker.io/library/nginx:latest"));
        assert!(matches("kube-*", "kube-system"));
        assert!(!matches("kube-*", "default"));
        assert!(matches("a?c", "abc"));
        assert!(!matches("a?c", "ac"));
        assert!(matches("*", ""));
        assert!(matches("a*b*c", "aXbYbZc"));
        assert!(!matches("a*b*c", "aXbYbZ"));
        assert!(!matches("Kube-*", "kube-system"));
        // Outside ASCII, `?` is one character, not one byte.
        assert!(matches("r?sum?", "résumé"));
        assert!(!matches("r??sum?", "résumé"));
    }

    #[test]
    fn host_star_is_one_label() {
        assert!(host_matches("*.corp.example", "registry.corp.example"));
        assert!(!host_matches("*.corp.example", "a.b.corp.example"));
        assert!(!host_matches("*.corp.example", "corp.example"));
        assert!(host_matches("registry.internal:5000", "registry.internal:5000"));
        assert!(!host_matches("registry.internal", "registry.internal:5000"));
        assert!(host_matches("127.0.0.1:*", "127.0.0.1:*"));
        assert!(host_matches("[::1]:5000", "[::1]:5000"));
        assert!(host_matches("Registry.Example.com", "registry.example.com"));
        assert!(host_matches("*.Corp.example", "REGISTRY.corp.EXAMPLE"));
        assert!(host_matches("reg-?.corp", "reg-1.corp"));
        assert!(!host_matches("reg-?.corp", "reg-10.corp"));
        assert!(host_matches("bücher.example", "BüCHER.example"));
    }

    #[test]
    fn hosts_without_wildcards_match_as_label_by_label() {
        let names = [
            "registry.example.com",
            "Registry.Example.COM",
            "registry.example.co",
            "registry.example.com.",
            "example.com",
            "127.0.0.1",
            "[::1]",
            "ünï.example",
            "ÜNÏ.example",
            "",
            ".",
            "a..b",
        ];
        for pattern in names {
            for host in names {
                assert_eq!(
                    host_matches(pattern, host),
                    labels_match(pattern, host),
                    "pattern {pattern:?}, host {host:?}"
                );
            }
        }
    }

    #[test]
    fn ports_split_without_breaking_ipv6() {
        assert_eq!(split_port("[::1]:5000"), ("[::1]", Some("5000")));
        assert_eq!(split_port("[::1]"), ("[::1]", None));
        assert_eq!(split_port("host:1"), ("host", Some("1")));
        assert_eq!(split_port("host"), ("host", None));
    }
}
