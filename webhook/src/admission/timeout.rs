//! How long an admission may take: the configured `deadline`, but never past the time the API
//! server itself waits. It calls `/validate?timeout=10s` with the webhook's `timeoutSeconds`;
//! when that is shorter than `deadline` (users lower it, Gatekeeper ships 3 s) and pullguard
//! waited longer, the API server would give up first and, under `failurePolicy: Ignore`, admit
//! without the PG501 warning that was due.

use std::time::Duration;

/// Left for the answer's way back to the API server (serialising, TLS, the network).
const MIN_ANSWER_MARGIN: Duration = Duration::from_millis(250);

/// The `timeout` parameter of a query string, as the API server writes it (Go's duration
/// format: `10s`, `1m30s`, `500ms`).
pub fn from_query(query: &str) -> Option<Duration> {
    let value = query.split('&').find_map(|pair| pair.strip_prefix("timeout="))?;
    parse_go_duration(value)
}

/// The time an admission may use: `configured`, shortened to answer before `caller` (the API
/// server's timeout) runs out, with a tenth of it (at least 250 ms) for the answer's trip.
pub fn budget(configured: Duration, caller: Option<Duration>) -> Duration {
    match caller {
        Some(caller) => configured.min(caller.saturating_sub((caller / 10).max(MIN_ANSWER_MARGIN))),
        None => configured,
    }
}

/// A Go `time.Duration` string: decimal numbers each with a unit (`h`, `m`, `s`, `ms`, `us`,
/// `µs`, `ns`). Negative, empty or unit-less values are refused: without a sure timeout the
/// configured deadline stands.
fn parse_go_duration(text: &str) -> Option<Duration> {
    if text == "0" {
        return Some(Duration::ZERO);
    }
    if text.is_empty() {
        return None;
    }
    let mut rest = text;
    let mut total = 0f64;
    while !rest.is_empty() {
        let number_len = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
        let number: f64 = rest[..number_len].parse().ok()?;
        rest = &rest[number_len..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(rest.len());
        let seconds_per_unit = match &rest[..unit_len] {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 1e-3,
            "us" | "µs" => 1e-6,
            "ns" => 1e-9,
            _ => return None,
        };
        rest = &rest[unit_len..];
        total += number * seconds_per_unit;
    }
    Duration::try_from_secs_f64(total).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_as_the_api_server_writes_them() {
        let ms = Duration::from_millis;
        let cases: &[(&str, Option<Duration>)] = &[
            ("timeout=10s", Some(ms(10_000))),
            ("timeout=2s", Some(ms(2_000))),
            ("dryRun=All&timeout=30s", Some(ms(30_000))),
            ("timeout=1m30s", Some(ms(90_000))),
            ("timeout=1.5s", Some(ms(1_500))),
            ("timeout=500ms", Some(ms(500))),
            ("timeout=0", Some(Duration::ZERO)),
            ("timeout=", None),
            ("timeout=10", None),
            ("timeout=-2s", None),
            ("timeout=2x", None),
            ("timeouts=2s", None),
            ("", None),
        ];
        for (query, expected) in cases {
            assert_eq!(from_query(query), *expected, "{query}");
        }
    }

    #[test]
    fn the_budget_ends_before_the_caller_gives_up() {
        let s = Duration::from_secs;
        let ms = Duration::from_millis;
        // The shipped configuration: 8 s within the webhook's 10 s.
        assert_eq!(budget(s(8), Some(s(10))), s(8));
        // timeoutSeconds lowered below the deadline: answer with room to spare.
        assert_eq!(budget(s(8), Some(s(2))), ms(1_750));
        assert_eq!(budget(s(8), Some(s(5))), ms(4_500));
        assert_eq!(budget(s(8), Some(ms(100))), Duration::ZERO);
        assert_eq!(budget(s(8), None), s(8));
    }
}
