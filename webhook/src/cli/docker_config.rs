//! The docker config file whose credentials every lookup of `serve`, `check` and `audit` may use.

use std::path::PathBuf;

use pullguard_core::credentials::Keyring;

use super::error::CliError;

/// Credentials from a docker config file: the named one, or the user's own when it exists.
pub fn load_keyring(explicit: Option<&PathBuf>) -> Result<Keyring, CliError> {
    let path = match explicit {
        Some(path) => path.clone(),
        None => match default_docker_config() {
            Some(path) if path.is_file() => path,
            _ => return Ok(Keyring::default()),
        },
    };
    let bytes = std::fs::read(&path)
        .map_err(|error| CliError::DockerConfig { path: path.clone(), message: error.to_string() })?;
    Keyring::from_docker_config(&bytes, &path.display().to_string())
        .map_err(|error| CliError::DockerConfig { path, message: error.to_string() })
}

fn default_docker_config() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("DOCKER_CONFIG") {
        return Some(PathBuf::from(dir).join("config.json"));
    }
    std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".docker").join("config.json"))
}
