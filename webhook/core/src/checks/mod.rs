//! Checks: pure functions from what is known about one container image to findings.
//!
//! Each family lives in its own file; none of them performs I/O, so every rule is table-tested.
//! Findings are built with the code's default severity; `grade` applies the configuration last.

mod credentials;
mod lookup;
mod manifest;
mod platform;
mod pull_policy;
mod reference;

pub use self::{
    credentials::{CredentialUse, credential_findings, unused_secret_findings},
    lookup::lookup_findings,
    manifest::manifest_findings,
    platform::{NodeTargets, Placement, Pool, platform_findings},
    pull_policy::{held_on_every_node, never_pulled},
    reference::reference_findings,
};
use crate::{
    config::Config,
    finding::{Code, Finding, Severity},
};

/// The container (or image volume) under check, as the manifest names it.
#[derive(Debug, Clone, Copy)]
pub struct Subject<'a> {
    pub container: &'a str,
    pub image: &'a str,
    /// `container` names an image volume.
    pub volume: bool,
}

impl Subject<'_> {
    fn finding(&self, code: Code, summary: impl Into<String>, message: impl Into<String>) -> Finding {
        self.finding_with(code, code.default_severity(), summary, message)
    }

    /// For the few codes whose severity depends on the situation (PG202/PG203: error only when
    /// the registry needs the secret).
    fn finding_with(
        &self,
        code: Code,
        severity: Severity,
        summary: impl Into<String>,
        message: impl Into<String>,
    ) -> Finding {
        Finding {
            code,
            severity,
            container: self.container.to_string(),
            volume: self.volume,
            image: self.image.to_string(),
            summary: summary.into(),
            message: message.into(),
        }
    }
}

/// Applies configured severities and drops silenced codes.
pub fn grade(findings: Vec<Finding>, config: &Config) -> Vec<Finding> {
    findings
        .into_iter()
        .filter_map(|mut finding| {
            finding.severity = config.regrade(finding.code, finding.severity)?;
            Some(finding)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Grade;

    #[test]
    fn grading_regrades_and_silences() {
        let subject = Subject { container: "app", image: "nginx", volume: false };
        let findings = vec![
            subject.finding(Code::MutableTag, "s", "m"),
            subject.finding(Code::WastefulLayers, "s", "m"),
            subject.finding(Code::TagNotFound, "s", "m"),
        ];
        let mut config = Config::default();
        config.findings.insert(Code::MutableTag, Grade::Off);
        config.findings.insert(Code::WastefulLayers, Grade::Error);
        let graded = grade(findings, &config);
        assert_eq!(graded.len(), 2);
        assert_eq!(graded[0].code, Code::WastefulLayers);
        assert_eq!(graded[0].severity, Severity::Error);
        assert_eq!(graded[1].severity, Severity::Error);
    }
}
