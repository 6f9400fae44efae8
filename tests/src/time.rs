//! Wall-clock times as the registry protocols write them: libtrust signatures and token replies
//! carry RFC 3339 in whole seconds, JWT claims carry Unix seconds.

use jiff::Timestamp;

/// Seconds since the Unix epoch, now.
pub fn unix_now() -> i64 {
    Timestamp::now().as_second()
}

/// `2024-02-29T01:01:01Z` for the given Unix seconds.
pub fn rfc3339(unix_seconds: i64) -> String {
    // Out of range only past the year 9999, which no test clock reaches.
    Timestamp::from_second(unix_seconds).unwrap_or(Timestamp::UNIX_EPOCH).to_string()
}

/// Now, as [`rfc3339`].
pub fn now_rfc3339() -> String {
    rfc3339(unix_now())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(19_782 * 86_400 + 3661), "2024-02-29T01:01:01Z");
    }

    #[test]
    fn civil_dates() {
        assert_eq!(rfc3339(11_016 * 86_400), "2000-02-29T00:00:00Z");
        assert!(now_rfc3339().ends_with('Z') && !now_rfc3339().contains('.'), "whole seconds");
    }
}
