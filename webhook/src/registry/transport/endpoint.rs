//! Where one request goes, and what came back.

use pullguard_core::credentials::Credential;
use reqwest::StatusCode;

/// Where one lookup goes: the registry as the image names it, the host that serves its API, the
/// repository, and the credential to present (if any).
#[derive(Clone, Copy)]
pub struct Endpoint<'a> {
    pub registry: &'a str,
    pub api_host: &'a str,
    pub repository: &'a str,
    pub credential: Option<&'a Credential>,
}

/// A successful (2xx) or not-found (404) answer.
pub struct Reply {
    pub status: StatusCode,
    pub content_type: Option<String>,
    pub digest: Option<String>,
    /// The registry's error code on a 404 (`MANIFEST_UNKNOWN`, `NAME_UNKNOWN`, ...).
    pub error_code: Option<String>,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn is_not_found(&self) -> bool {
        self.status == StatusCode::NOT_FOUND
    }
}
