//! The tag list (`/v2/<name>/tags/list`), read page by page: it tells a missing tag in a
//! repository that exists from a repository that does not.

use pullguard_core::lookup::LookupError;
use serde::Deserialize;

/// Pages read at the most: a repository with thousands of tags must not hold an admission.
pub const MAX_TAG_PAGES: usize = 20;

#[derive(Deserialize)]
struct TagList {
    #[serde(default)]
    tags: Option<Vec<String>>,
}

pub fn tags_of(body: &[u8]) -> Result<Vec<String>, LookupError> {
    let page: TagList = serde_json::from_slice(body).map_err(|error| LookupError::RegistryFailure {
        status: None,
        reason: format!("tag list is not valid JSON: {error}"),
    })?;
    Ok(page.tags.unwrap_or_default())
}

/// `Link: </v2/app/tags/list?last=x&n=100>; rel="next"`, kept only when it stays on this registry.
pub fn parse_next_link(value: &str) -> Option<String> {
    let start = value.find('<')? + 1;
    let end = value[start..].find('>')? + start;
    let target = &value[start..end];
    (value[end..].contains("rel=\"next\"") && target.starts_with("/v2/")).then(|| target.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_links_stay_on_the_registry() {
        assert_eq!(
            parse_next_link(r#"</v2/app/tags/list?last=b&n=2>; rel="next""#),
            Some("/v2/app/tags/list?last=b&n=2".into())
        );
        assert_eq!(parse_next_link(r#"<https://evil.example/x>; rel="next""#), None);
        assert_eq!(parse_next_link("garbage"), None);
    }

    #[test]
    fn pages() {
        assert_eq!(tags_of(br#"{"name":"a","tags":["v1","v2"]}"#).unwrap(), ["v1", "v2"]);
        assert!(tags_of(br#"{"name":"a","tags":null}"#).unwrap().is_empty());
        assert!(tags_of(b"<html>").is_err());
    }
}
