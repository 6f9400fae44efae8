//! Leaving a registry alone while it asked for it (429, 5xx) or cannot be reached: answers in
//! the meantime come from memory instead of adding to its load, and they still name the cause.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use pullguard_core::lookup::LookupError;

pub const SERVER_ERROR_BACKOFF: Duration = Duration::from_secs(2);
/// A registry that refuses connections or times out is left alone this long: during an outage
/// every other image of that registry would otherwise wait out its own `lookupTimeout`.
pub const UNREACHABLE_BACKOFF: Duration = Duration::from_secs(2);
pub const RATE_LIMIT_BACKOFF: Duration = Duration::from_secs(30);
const MAX_BACKOFF: Duration = Duration::from_secs(300);

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BackoffReason {
    RateLimited,
    ServerError,
    /// Refused or timed out: the cause is kept so that the answers meanwhile still name it.
    Unreachable(Arc<str>),
}

/// Registry hosts being left alone, and until when.
#[derive(Default)]
pub struct Backoffs {
    hosts: Mutex<HashMap<String, (Instant, BackoffReason)>>,
}

impl Backoffs {
    pub fn start(&self, host: &str, wait: Duration, reason: BackoffReason) {
        self.start_at(host, wait, reason, Instant::now());
    }

    fn start_at(&self, host: &str, wait: Duration, reason: BackoffReason, now: Instant) {
        if let Ok(mut hosts) = self.hosts.lock() {
            hosts.insert(host.to_string(), (now + wait.min(MAX_BACKOFF), reason));
        }
    }

    /// How long the registry host is still left alone, if it is.
    pub fn remaining(&self, host: &str) -> Option<Duration> {
        self.remaining_at(host, Instant::now())
    }

    fn remaining_at(&self, host: &str, now: Instant) -> Option<Duration> {
        let hosts = self.hosts.lock().ok()?;
        let (until, _) = hosts.get(host)?;
        until.checked_duration_since(now).filter(|remaining| !remaining.is_zero())
    }

    /// The answer for a request to `host` while it is left alone; `Ok` when it may be asked.
    pub fn check(&self, host: &str) -> Result<(), LookupError> {
        self.check_at(host, Instant::now())
    }

    fn check_at(&self, host: &str, now: Instant) -> Result<(), LookupError> {
        let Ok(mut hosts) = self.hosts.lock() else {
            return Ok(());
        };
        let Some((until, reason)) = hosts.get(host).cloned() else {
            return Ok(());
        };
        if now >= until {
            hosts.remove(host);
            return Ok(());
        }
        let remaining = until - now;
        Err(match reason {
            BackoffReason::RateLimited => LookupError::RateLimited { retry_after: Some(remaining) },
            BackoffReason::ServerError => LookupError::RegistryFailure {
                status: None,
                reason: format!("registry failing, backing off for {}ms", remaining.as_millis()),
            },
            BackoffReason::Unreachable(cause) => LookupError::Unreachable {
                reason: format!("{cause} (next attempt in {}ms)", remaining.as_millis()),
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_name_the_cause_until_the_wait_is_over() {
        let backoffs = Backoffs::default();
        let start = Instant::now();
        let second = Duration::from_secs(1);
        backoffs.start_at("a:5000", 10 * second, BackoffReason::RateLimited, start);
        backoffs.start_at("b:5000", 10 * second, BackoffReason::ServerError, start);
        backoffs.start_at(
            "c:5000",
            10 * second,
            BackoffReason::Unreachable("connection refused".into()),
            start,
        );
        let later = start + 4 * second;
        assert_eq!(
            backoffs.check_at("a:5000", later),
            Err(LookupError::RateLimited { retry_after: Some(6 * second) })
        );
        assert!(matches!(backoffs.check_at("b:5000", later), Err(LookupError::RegistryFailure { .. })));
        let Err(LookupError::Unreachable { reason }) = backoffs.check_at("c:5000", later) else {
            panic!("not unreachable")
        };
        assert!(reason.starts_with("connection refused (next attempt in 6000ms"), "{reason}");
        assert_eq!(backoffs.check_at("other:5000", later), Ok(()));
        assert_eq!(backoffs.remaining_at("a:5000", later), Some(6 * second));
        let over = start + 10 * second;
        assert_eq!(backoffs.check_at("a:5000", over), Ok(()));
        assert_eq!(backoffs.remaining_at("a:5000", over), None, "forgotten once over");
    }

    /// A Retry-After of a day is not obeyed for a day: the wait is capped.
    #[test]
    fn waits_are_capped() {
        let backoffs = Backoffs::default();
        let start = Instant::now();
        backoffs.start_at("a", Duration::from_secs(86_400), BackoffReason::RateLimited, start);
        assert_eq!(backoffs.remaining_at("a", start), Some(MAX_BACKOFF));
    }
}
