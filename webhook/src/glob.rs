//! Two small glob dialects: image and namespace patterns (`*` spans anything, `/` included, as
//! users write `registry.k8s.io/*`), and registry host patterns (`*` is one DNS label, as the
//! kubelet's keyring matches `*.corp.example`).

/// `*` matches any run of characters, `?` exactly one.
pub fn matches(pattern: &str, text: &str) -> bool {
    let pattern: Vec<char> = pattern.chars().collect();
    let text: Vec<char> = text.chars().collect();
    let (mut p, mut t) = (0, 0);
    let mut backtrack: Option<(usize, usize)> = None;
    while t < text.len() {
        match pattern.get(p) {
            Some('*') => {
                backtrack = Some((p, t));
                p += 1;
            }
            Some(&c) if c == '?' || c == text[t] => {
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
    pattern[p..].iter().all(|&c| c == '*')
}

/// `host[:port]` against a pattern: same number of labels, `*` globbing within one label, ports equal.
pub fn host_matches(pattern: &str, host: &str) -> bool {
    let (pattern_host, pattern_port) = split_port(pattern);
    let (host_name, host_port) = split_port(host);
    if pattern_port != host_port {
        return false;
    }
    let pattern_labels: Vec<&str> = pattern_host.split('.').collect();
    let host_labels: Vec<&str> = host_name.split('.').collect();
    pattern_labels.len() == host_labels.len()
        && pattern_labels
            .iter()
            .zip(&host_labels)
            .all(|(pattern, label)| matches(&pattern.to_ascii_lowercase(), &label.to_ascii_lowercase()))
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
    }

    #[test]
    fn ports_split_without_breaking_ipv6() {
        assert_eq!(split_port("[::1]:5000"), ("[::1]", Some("5000")));
        assert_eq!(split_port("[::1]"), ("[::1]", None));
        assert_eq!(split_port("host:1"), ("host", Some("1")));
        assert_eq!(split_port("host"), ("host", None));
    }
}
