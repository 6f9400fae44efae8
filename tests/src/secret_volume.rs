//! Certificate files laid out the way the kubelet mounts a Secret: `tls.crt -> ..data/tls.crt`,
//! `..data -> ..<timestamp>`, and a new version published by renaming a fresh symlink over
//! `..data`, so readers see either the old pair or the new one, never a mix of files.

use std::{
    os::unix::fs::symlink,
    path::{Path, PathBuf},
};

use anyhow::{Context, Result};

/// A Secret volume: versioned directories behind an atomically swapped `..data` link.
pub struct SecretVolume {
    root: PathBuf,
    version: usize,
}

impl SecretVolume {
    pub fn new(root: &Path) -> SecretVolume {
        SecretVolume { root: root.to_path_buf(), version: 0 }
    }

    /// Writes a new version and swaps `..data` to it. Old versions stay (the kubelet removes them
    /// later; keeping them costs nothing here and leaves a reader mid-open undisturbed).
    pub fn publish(&mut self, cert: &str, key: &str) -> Result<()> {
        self.version += 1;
        let name = format!("..2026_11_23_00_00_{:02}", self.version);
        let dir = self.root.join(&name);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        std::fs::write(dir.join("tls.crt"), cert).context("writing tls.crt")?;
        std::fs::write(dir.join("tls.key"), key).context("writing tls.key")?;
        let staging = self.root.join("..data_tmp");
        symlink(&name, &staging).with_context(|| format!("linking {}", staging.display()))?;
        std::fs::rename(&staging, self.root.join("..data")).context("swapping ..data")?;
        for file in ["tls.crt", "tls.key"] {
            let link = self.root.join(file);
            if std::fs::symlink_metadata(&link).is_err() {
                symlink(format!("..data/{file}"), &link).with_context(|| format!("linking {file}"))?;
            }
        }
        Ok(())
    }

    pub fn cert(&self) -> PathBuf {
        self.root.join("tls.crt")
    }

    pub fn key(&self) -> PathBuf {
        self.root.join("tls.key")
    }

    /// How many versions were published.
    pub fn version(&self) -> usize {
        self.version
    }
}
