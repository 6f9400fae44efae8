//! Settings given as flags or `PULLGUARD_*` variables, laid over the configuration file.

use std::path::{Path, PathBuf};

use pullguard_core::config::{ByteSize, Config, ConfigError, HumanDuration, Mode, UnavailablePolicy};

/// Values given as flags or `PULLGUARD_*` variables; they win over the file.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct Overrides {
    /// YAML configuration file (see the README for every key).
    #[arg(long, env = "PULLGUARD_CONFIG", global = true)]
    pub config: Option<PathBuf>,
    /// enforce | warn | audit
    #[arg(long, env = "PULLGUARD_MODE", global = true)]
    pub mode: Option<Mode>,
    /// allow | deny: the verdict when a registry cannot answer.
    #[arg(long, env = "PULLGUARD_REGISTRY_UNAVAILABLE", global = true)]
    pub registry_unavailable: Option<UnavailablePolicy>,
    /// Answer every admission within this (e.g. 8s).
    #[arg(long, env = "PULLGUARD_DEADLINE", global = true)]
    pub deadline: Option<HumanDuration>,
    /// Time limit of one registry request (e.g. 3s).
    #[arg(long, env = "PULLGUARD_LOOKUP_TIMEOUT", global = true)]
    pub lookup_timeout: Option<HumanDuration>,
    /// PG602 above this compressed size (e.g. 2Gi).
    #[arg(long, env = "PULLGUARD_MAX_IMAGE_SIZE", global = true)]
    pub max_image_size: Option<ByteSize>,
}

impl Overrides {
    /// File (if any), then overrides, then validation.
    pub fn load(&self) -> Result<Config, ConfigError> {
        let mut config = match &self.config {
            Some(path) => read_config_file(path)?,
            None => Config::default(),
        };
        if let Some(mode) = self.mode {
            config.mode = mode;
        }
        if let Some(policy) = self.registry_unavailable {
            config.registry_unavailable = policy;
        }
        if let Some(deadline) = self.deadline {
            config.deadline = deadline;
        }
        if let Some(timeout) = self.lookup_timeout {
            config.lookup_timeout = timeout;
        }
        if let Some(size) = self.max_image_size {
            config.max_image_size = size;
        }
        config.validate()?;
        check_ca_files(&config)?;
        Ok(config)
    }
}

fn read_config_file(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|source| ConfigError::Read { path: path.to_path_buf(), source })?;
    Config::from_yaml(&text).map_err(|message| ConfigError::Parse { path: path.to_path_buf(), message })
}

/// A CA file that cannot be read stops start-up with the registry it was for, rather than the
/// first lookup of that registry failing.
fn check_ca_files(config: &Config) -> Result<(), ConfigError> {
    for registry in &config.registries {
        if let Some(path) = &registry.ca_file {
            std::fs::metadata(path).map_err(|source| ConfigError::CaFile {
                host: registry.host.clone(),
                path: path.clone(),
                source,
            })?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_win_over_the_file() {
        let overrides = Overrides { mode: Some(Mode::Audit), ..Overrides::default() };
        let config = overrides.load().unwrap();
        assert_eq!(config.mode, Mode::Audit);
    }
}
