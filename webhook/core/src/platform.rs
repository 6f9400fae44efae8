//! Platforms as containerd sees them: normalisation (`x86_64` -> amd64, `aarch64` -> arm64,
//! `armhf` -> arm/v7, ...) and the default compatibility rules of `platforms.Only` (an arm64 host
//! also runs arm/v8..v5, amd64 also runs 386, arm/v7 also runs v6 and v5).

use std::fmt;

use serde::Serialize;

use crate::manifest::ImagePlatform;

/// A normalised platform. An empty variant means the architecture's base level.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    pub variant: String,
    /// Windows build (`10.0.17763.5830`); only Windows matching uses it.
    pub os_version: String,
    /// The variant was stated (`--platform linux/amd64/v1`), not left out (Kubernetes node
    /// labels carry none). Normalisation spells some stated variants as "" (amd64/v1, arm64/v8),
    /// so the spelling alone cannot tell.
    #[serde(skip)]
    pub variant_known: bool,
}

impl Platform {
    pub fn new(os: &str, architecture: &str, variant: &str) -> Platform {
        let variant_known = !variant.is_empty();
        let (architecture, variant) = normalize_arch(architecture, variant);
        Platform { os: normalize_os(os), architecture, variant_known, variant, os_version: String::new() }
    }

    pub fn with_os_version(mut self, version: &str) -> Platform {
        self.os_version = version.to_string();
        self
    }

    pub fn from_image(platform: &ImagePlatform) -> Platform {
        Platform::new(&platform.os, &platform.architecture, platform.variant.as_deref().unwrap_or(""))
            .with_os_version(platform.os_version.as_deref().unwrap_or(""))
    }

    /// `os/arch[/variant]`, as `--platform` takes it.
    pub fn parse(text: &str) -> Result<Platform, String> {
        let parts: Vec<&str> = text.split('/').collect();
        match parts.as_slice() {
            [os, arch] if !os.is_empty() && !arch.is_empty() => Ok(Platform::new(os, arch, "")),
            [os, arch, variant] if !os.is_empty() && !arch.is_empty() && !variant.is_empty() => {
                Ok(Platform::new(os, arch, variant))
            }
            _ => Err(format!("{text:?} is not a platform (expected os/arch[/variant], e.g. linux/arm64)")),
        }
    }

    /// Whether a node of this platform runs an image built for `image`, by containerd's default
    /// rules (`platforms.Only`). The node's own variant is usually unknown (Kubernetes labels carry
    /// none): then any variant of its architecture is accepted, rather than refusing what may well run.
    pub fn runs(&self, image: &Platform) -> bool {
        if self.os != image.os {
            return false;
        }
        // What node labels give (no variant) on the architectures that then accept every variant
        // of their own; decided without building the list below.
        if !self.variant_known && self.architecture == image.architecture && self.architecture != "arm" {
            return true;
        }
        compatible_architectures(self).iter().any(|(arch, variant)| {
            arch == &image.architecture
                && (variant.is_none() || variant.as_deref() == Some(image.variant.as_str()))
        })
    }
}

impl std::str::FromStr for Platform {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Platform::parse(text)
    }
}

/// Windows Server 2022 (ltsc2022), the first release with a stable container ABI.
const WINDOWS_SERVER_2022: u32 = 20348;

/// The long-term releases from which newer hosts run containers (containerd's
/// `compatLTSCReleases`), ascending.
const COMPATIBLE_LTSC_BUILDS: [u32; 1] = [WINDOWS_SERVER_2022];

/// Whether a Windows host of `host` version (`10.0.26100`) runs a process-isolated container
/// built for `container` (`10.0.20348.2700`), by containerd's rules (`platforms`,
/// `checkWindowsHostAndContainerCompat`): major and minor must match; a host older than Windows
/// Server 2022 needs the exact build; a newer host runs containers from the latest long-term
/// release at or below its own build up to its own build (Server 2025 runs ltsc2022 images,
/// Server 2022 does not run 2025 images). An unknown version on either side is no mismatch.
pub fn windows_host_runs(host: &str, container: &str) -> bool {
    if host.is_empty() || container.is_empty() {
        return true;
    }
    let parse = |version: &str| -> Option<(u32, u32, u32)> {
        let mut parts = version.split('.');
        let major = parts.next()?.parse().ok()?;
        let minor = parts.next()?.parse().ok()?;
        let build = parts.next()?.parse().ok()?;
        Some((major, minor, build))
    };
    let (Some(host), Some(container)) = (parse(host), parse(container)) else {
        // containerd reads an unparsable version as 0.0.0, which no host runs.
        return false;
    };
    if (host.0, host.1) != (container.0, container.1) {
        return false;
    }
    if host.2 < WINDOWS_SERVER_2022 {
        return host.2 == container.2;
    }
    let oldest = COMPATIBLE_LTSC_BUILDS.iter().rev().find(|ltsc| host.2 >= **ltsc).copied().unwrap_or(0);
    container.2 >= oldest && container.2 <= host.2
}

impl Platform {
    /// As `docker buildx build --platform` takes it: `os/arch[/variant]`, no Windows build.
    pub fn buildx(&self) -> String {
        if self.variant.is_empty() {
            format!("{}/{}", self.os, self.architecture)
        } else {
            format!("{}/{}/{}", self.os, self.architecture, self.variant)
        }
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if !self.variant.is_empty() {
            write!(f, "/{}", self.variant)?;
        }
        if !self.os_version.is_empty() {
            write!(f, " ({})", self.os_version)?;
        }
        Ok(())
    }
}

fn normalize_os(os: &str) -> String {
    match os.to_ascii_lowercase().as_str() {
        "macos" => "darwin".to_string(),
        other => other.to_string(),
    }
}

fn normalize_arch(arch: &str, variant: &str) -> (String, String) {
    let arch = arch.to_ascii_lowercase();
    let variant = variant.to_ascii_lowercase();
    match arch.as_str() {
        "i386" => ("386".into(), String::new()),
        "x86_64" | "x86-64" | "amd64" => {
            ("amd64".into(), if variant == "v1" { String::new() } else { variant })
        }
        "aarch64" | "arm64" => {
            ("arm64".into(), if variant == "8" || variant == "v8" { String::new() } else { variant })
        }
        "armhf" => ("arm".into(), "v7".into()),
        "armel" => ("arm".into(), "v6".into()),
        "arm" => {
            let variant = match variant.as_str() {
                "" | "7" => "v7".to_string(),
                "5" | "6" | "8" => format!("v{variant}"),
                _ => variant,
            };
            ("arm".into(), variant)
        }
        _ => (arch, variant),
    }
}

/// (architecture, variant) pairs a host runs; `None` as variant means "any variant".
fn compatible_architectures(host: &Platform) -> Vec<(String, Option<String>)> {
    let exact = |arch: &str, variant: &str| (arch.to_string(), Some(variant.to_string()));
    match host.architecture.as_str() {
        "amd64" if !host.variant_known => vec![("amd64".into(), None), exact("386", "")],
        "amd64" => {
            let level = version_of(&host.variant).unwrap_or(1);
            let mut list: Vec<_> = (1..=level)
                .map(|v| exact("amd64", &if v == 1 { String::new() } else { format!("v{v}") }))
                .collect();
            list.push(exact("386", ""));
            list
        }
        "arm64" => {
            let mut list = if !host.variant_known {
                vec![("arm64".into(), None)]
            } else {
                arm64_levels(&host.variant).into_iter().map(|variant| exact("arm64", &variant)).collect()
            };
            list.extend((5..=8).rev().map(|v| exact("arm", &format!("v{v}"))));
            list
        }
        "arm" => match version_of(&host.variant) {
            // vN runs vN down to v5; below v5 (arm/v4) only itself.
            Some(level) if level >= 5 => (5..=level).rev().map(|v| exact("arm", &format!("v{v}"))).collect(),
            _ => vec![exact("arm", &host.variant)],
        },
        other => {
            vec![(other.to_string(), if host.variant.is_empty() { None } else { Some(host.variant.clone()) })]
        }
    }
}

/// arm64/v9.x runs v9.{0..x} and v8.{0..x+5}; v8.x runs v8.{0..x}; the base level is spelled "".
fn arm64_levels(variant: &str) -> Vec<String> {
    let trimmed = variant.trim_start_matches('v');
    let (major, minor) = trimmed.split_once('.').unwrap_or((trimmed, "0"));
    let (Ok(major), Ok(minor)) = (major.parse::<u32>(), minor.parse::<u32>()) else {
        return vec![variant.to_string()];
    };
    let spell = |major: u32, minor: u32| {
        if major == 8 && minor == 0 {
            String::new()
        } else if minor == 0 {
            format!("v{major}")
        } else {
            format!("v{major}.{minor}")
        }
    };
    let mut levels = Vec::new();
    let v8_top = if major >= 9 {
        levels.extend((0..=minor).rev().map(|m| spell(9, m)));
        minor + 5
    } else {
        minor
    };
    levels.extend((0..=v8_top).rev().map(|m| spell(8, m)));
    levels
}

fn version_of(variant: &str) -> Option<u32> {
    variant.trim_start_matches('v').parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// containerd `platforms` compare_test.go TestOnly: which image platforms a node of a known
    /// platform runs.
    #[test]
    fn only() {
        let cases: &[(&str, &[&str], &[&str])] = &[
            ("linux/amd64/v1", &["linux/amd64", "linux/386"], &["linux/amd64/v2", "linux/arm64"]),
            (
                "linux/amd64/v3",
                &["linux/amd64", "linux/amd64/v2", "linux/amd64/v3", "linux/386"],
                &["linux/amd64/v4", "windows/amd64"],
            ),
            (
                "linux/arm/v8",
                &["linux/arm/v8", "linux/arm/v7", "linux/arm/v6", "linux/arm/v5"],
                &["linux/arm/v4"],
            ),
            (
                "linux/arm/v7",
                &["linux/arm/v7", "linux/arm/v6", "linux/arm/v5"],
                &["linux/arm/v8", "linux/arm/v4"],
            ),
            ("linux/arm/v5", &["linux/arm/v5"], &["linux/arm/v6", "linux/arm/v4"]),
            ("linux/arm/v4", &["linux/arm/v4"], &["linux/arm/v5"]),
            (
                "linux/arm64/v8",
                &["linux/arm64", "linux/arm/v8", "linux/arm/v5"],
                &["linux/arm64/v8.1", "linux/arm64/v9"],
            ),
            (
                "linux/arm64/v8.2",
                &["linux/arm64/v8.2", "linux/arm64/v8.1", "linux/arm64"],
                &["linux/arm64/v8.3", "linux/arm64/v9"],
            ),
            (
                "linux/arm64/v9.6",
                &[
                    "linux/arm64/v9.6",
                    "linux/arm64/v9.1",
                    "linux/arm64/v9",
                    "linux/arm64/v8.11",
                    "linux/arm64/v8.2",
                    "linux/arm64",
                    "linux/arm/v7",
                ],
                &["linux/arm64/v9.7", "linux/arm64/v8.12"],
            ),
            (
                "linux/arm64/v9",
                &["linux/arm64/v9", "linux/arm64/v8.5", "linux/arm64"],
                &["linux/arm64/v9.1", "linux/arm64/v8.6"],
            ),
            // What Kubernetes nodes report: no variant, so none is refused.
            ("linux/arm64", &["linux/arm64/v9.6", "linux/arm64/v8.2", "linux/arm64"], &["linux/amd64"]),
            ("linux/amd64", &["linux/amd64/v4", "linux/amd64"], &["linux/arm64"]),
        ];
        for (node, runs, refuses) in cases {
            let node = Platform::parse(node).unwrap();
            for image in *runs {
                assert!(node.runs(&Platform::parse(image).unwrap()), "{node} runs {image}");
            }
            for image in *refuses {
                assert!(!node.runs(&Platform::parse(image).unwrap()), "{node} does not run {image}");
            }
        }
    }

    /// containerd `platforms` Test_PlatformCompat, with Windows Server 2025 (26100) added.
    #[test]
    fn platform_compat() {
        const RS5: &str = "10.0.17763";
        const WS2022: &str = "10.0.20348";
        const WIN11: &str = "10.0.22621";
        const WS2025: &str = "10.0.26100";
        let cases = [
            ("RS5Host_ltsc2019", RS5, "10.0.17763.5830", true),
            ("RS5Host_ltsc2022", RS5, "10.0.20348.2700", false),
            ("WS2022Host_ltsc2019", WS2022, "10.0.17763.5830", false),
            ("WS2022Host_ltsc2022", WS2022, "10.0.20348.2700", true),
            ("Wind11Host_ltsc2019", WIN11, "10.0.17763.5830", false),
            ("Wind11Host_ltsc2022", WIN11, "10.0.20348.2700", true),
            ("WS2025Host_ltsc2022", WS2025, "10.0.20348.2700", true),
            ("WS2025Host_ltsc2025", WS2025, "10.0.26100.2894", true),
            ("WS2025Host_ltsc2019", WS2025, "10.0.17763.5830", false),
            ("WS2022Host_ltsc2025", WS2022, "10.0.26100.2894", false),
            ("unknown host version", "", "10.0.26100.2894", true),
            ("unknown image version", WS2022, "", true),
            ("another major version", WS2022, "6.3.9600", false),
        ];
        for (name, host, container, runs) in cases {
            assert_eq!(windows_host_runs(host, container), runs, "{name}");
        }
    }

    fn p(text: &str) -> Platform {
        Platform::parse(text).unwrap()
    }

    #[test]
    fn normalisation_like_containerd() {
        let cases = [
            ("linux/x86_64", "linux/amd64"),
            ("linux/x86-64", "linux/amd64"),
            ("linux/amd64/v1", "linux/amd64"),
            ("linux/aarch64", "linux/arm64"),
            ("linux/arm64/v8", "linux/arm64"),
            ("linux/armhf", "linux/arm/v7"),
            ("linux/armel", "linux/arm/v6"),
            ("linux/arm", "linux/arm/v7"),
            ("linux/arm/6", "linux/arm/v6"),
            ("linux/i386", "linux/386"),
            ("Linux/AMD64", "linux/amd64"),
            ("macos/arm64", "darwin/arm64"),
        ];
        for (input, expected) in cases {
            assert_eq!(p(input).to_string(), expected, "{input}");
        }
        assert!(Platform::parse("linux").is_err());
        assert!(Platform::parse("linux//v7").is_err());
        assert!(Platform::parse("a/b/c/d").is_err());
    }

    #[test]
    fn compatibility_table() {
        let cases = [
            ("linux/amd64", "linux/amd64", true),
            ("linux/amd64", "linux/386", true),
            ("linux/amd64", "linux/amd64/v3", true),
            ("linux/amd64/v2", "linux/amd64/v3", false),
            ("linux/amd64/v3", "linux/amd64/v2", true),
            ("linux/amd64", "linux/arm64", false),
            ("linux/arm64", "linux/arm64/v8", true),
            ("linux/arm64", "linux/arm/v7", true),
            ("linux/arm64", "linux/arm/v5", true),
            ("linux/arm64", "linux/amd64", false),
            ("linux/arm64/v8.2", "linux/arm64/v8.1", true),
            ("linux/arm64/v8.2", "linux/arm64/v8.3", false),
            ("linux/arm64/v9", "linux/arm64/v8.5", true),
            ("linux/arm/v7", "linux/arm/v6", true),
            ("linux/arm/v6", "linux/arm/v7", false),
            ("linux/amd64", "windows/amd64", false),
            ("windows/amd64", "windows/amd64", true),
            ("linux/s390x", "linux/s390x", true),
            ("linux/ppc64le", "linux/s390x", false),
        ];
        for (host, image, expected) in cases {
            assert_eq!(p(host).runs(&p(image)), expected, "{host} runs {image}");
        }
    }
}
