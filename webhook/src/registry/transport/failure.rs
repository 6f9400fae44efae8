//! Classifying what went wrong with a request into the finding-relevant cause. TLS failures
//! need care: an unknown CA is PG503, while a plain-HTTP server answering an HTTPS request is
//! PG502 (which the transport confirms by asking it in plain HTTP).

use std::time::Duration;

use pullguard_core::lookup::LookupError;
use reqwest::{StatusCode, header::HeaderMap};
use serde::Deserialize;

use crate::registry::address::AddressRefused;

/// What a failed request says, short of asking the server again.
#[derive(Debug, PartialEq, Eq)]
pub enum Failure {
    Known(LookupError),
    /// The answer was not TLS: a plain-HTTP registry, if it answers plain HTTP.
    NotTls,
}

pub fn classify(error: &reqwest::Error, timeout: Duration) -> Failure {
    if error.is_timeout() {
        return Failure::Known(LookupError::Unreachable { reason: format!("timed out after {timeout:?}") });
    }
    if let Some(refused) = find_in_chain::<AddressRefused>(error) {
        return Failure::Known(LookupError::AddressRefused { reason: refused.to_string() });
    }
    if error.is_redirect() {
        return Failure::Known(LookupError::RegistryFailure {
            status: None,
            reason: "too many redirects".into(),
        });
    }
    classify_text(describe(error), find_in_chain::<rustls::Error>(error))
}

/// The TLS part of [`classify`], on the error's text and the rustls error in its chain.
fn classify_text(text: String, tls: Option<&rustls::Error>) -> Failure {
    // Some layers box the rustls error so that it cannot be downcast; its text is stable.
    let certificate = matches!(tls, Some(rustls::Error::InvalidCertificate(_)))
        || text.contains("invalid peer certificate");
    let not_tls = matches!(
        tls,
        Some(rustls::Error::InvalidMessage(_)) | Some(rustls::Error::InappropriateMessage { .. })
    ) || text.contains("InvalidContentType")
        || text.contains("corrupt message");
    if certificate {
        let reason = match tls {
            Some(rustls::Error::InvalidCertificate(cause)) => format!("{cause:?}"),
            _ => text,
        };
        return Failure::Known(LookupError::UntrustedCertificate { reason });
    }
    if not_tls {
        return Failure::NotTls;
    }
    if let Some(other) = tls {
        return Failure::Known(LookupError::RegistryFailure {
            status: None,
            reason: format!("TLS failure: {other}"),
        });
    }
    Failure::Known(LookupError::Unreachable { reason: text })
}

/// Statuses worth telling apart on a dashboard; the rest by class.
pub fn status_class(status: StatusCode) -> String {
    match status.as_u16() {
        200..=299 => "2xx".into(),
        code @ (401 | 403 | 404 | 429) => code.to_string(),
        500..=599 => "5xx".into(),
        _ => "other".into(),
    }
}

pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?;
    value.trim().parse::<u64>().ok().map(Duration::from_secs)
}

#[derive(Deserialize)]
struct ErrorBody {
    #[serde(default)]
    errors: Vec<ErrorEntry>,
}

#[derive(Deserialize)]
struct ErrorEntry {
    #[serde(default)]
    code: String,
}

/// The registry's error code (`MANIFEST_UNKNOWN`, `NAME_UNKNOWN`, ...), from its error body.
pub fn first_error_code(body: &[u8]) -> Option<String> {
    let body: ErrorBody = serde_json::from_slice(body).ok()?;
    body.errors.into_iter().next().map(|entry| entry.code)
}

/// The first error of type `E` in a source chain, looking inside `io::Error`s too.
fn find_in_chain<'a, E: std::error::Error + 'static>(
    error: &'a (dyn std::error::Error + 'static),
) -> Option<&'a E> {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(error) = current {
        if let Some(found) = error.downcast_ref::<E>() {
            return Some(found);
        }
        if let Some(io) = error.downcast_ref::<std::io::Error>()
            && let Some(inner) = io.get_ref()
            && let Some(found) = inner.downcast_ref::<E>()
        {
            return Some(found);
        }
        current = error.source();
    }
    None
}

/// The innermost cause, which is the one that says what happened (DNS, refused, reset).
pub fn describe(error: &reqwest::Error) -> String {
    let mut message =
        if error.is_connect() { "connection failed".to_string() } else { "request failed".to_string() };
    let mut current: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(error);
    let mut last = None;
    while let Some(cause) = current {
        last = Some(cause.to_string());
        current = cause.source();
    }
    if let Some(last) = last {
        message.push_str(": ");
        message.push_str(&last);
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_codes() {
        assert_eq!(
            first_error_code(
                br#"{"errors":[{"code":"NAME_UNKNOWN","message":"repository name not known"}]}"#
            ),
            Some("NAME_UNKNOWN".into())
        );
        assert_eq!(first_error_code(b"<html>"), None);
    }

    #[test]
    fn status_classes_for_dashboards() {
        let rows = [
            (200, "2xx"),
            (206, "2xx"),
            (401, "401"),
            (404, "404"),
            (429, "429"),
            (503, "5xx"),
            (302, "other"),
        ];
        for (code, class) in rows {
            assert_eq!(status_class(StatusCode::from_u16(code).unwrap()), class, "{code}");
        }
    }

    #[test]
    fn retry_after_in_seconds_only() {
        let headers = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(reqwest::header::RETRY_AFTER, value.parse().unwrap());
            headers
        };
        assert_eq!(retry_after(&headers(" 7 ")), Some(Duration::from_secs(7)));
        assert_eq!(retry_after(&headers("Wed, 21 Oct 2015 07:28:00 GMT")), None);
        assert_eq!(retry_after(&HeaderMap::new()), None);
    }

    /// The causes a TLS failure can have, as rustls and the layers above it report them.
    #[test]
    fn tls_failures() {
        let untrusted = rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer);
        assert!(matches!(
            classify_text("x".into(), Some(&untrusted)),
            Failure::Known(LookupError::UntrustedCertificate { .. })
        ));
        assert!(matches!(
            classify_text("invalid peer certificate: UnknownIssuer".into(), None),
            Failure::Known(LookupError::UntrustedCertificate { .. })
        ));
        let garbage = rustls::Error::InvalidMessage(rustls::InvalidMessage::InvalidContentType);
        assert_eq!(classify_text("x".into(), Some(&garbage)), Failure::NotTls);
        assert_eq!(classify_text("received corrupt message".into(), None), Failure::NotTls);
        assert!(matches!(
            classify_text("x".into(), Some(&rustls::Error::DecryptError)),
            Failure::Known(LookupError::RegistryFailure { .. })
        ));
        assert_eq!(
            classify_text("connection refused".into(), None),
            Failure::Known(LookupError::Unreachable { reason: "connection refused".into() })
        );
    }

    /// Errors wrapped in an io::Error are found too (hyper and rustls wrap them so).
    #[test]
    fn causes_are_found_inside_io_errors() {
        let tls = rustls::Error::DecryptError;
        let wrapped = std::io::Error::other(tls.clone());
        assert_eq!(find_in_chain::<rustls::Error>(&wrapped), Some(&tls));
        assert_eq!(find_in_chain::<rustls::Error>(&std::io::Error::other("plain")), None);
    }
}
