//! Mode + findings -> what the API server is told: allowed or not, the deny message, `warnings`
//! for kubectl, and `auditAnnotations` for the audit log. Pure, so every mode is table-tested.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::{
    config::Mode,
    finding::{Finding, Severity},
};

/// The audit annotations pullguard sets; the API server prefixes each key with the webhook's
/// name. They are part of the public contract (audit pipelines select on them), so each key is
/// spelled once, here.
pub mod audit_key {
    pub const MODE: &str = "mode";
    pub const VERDICT: &str = "verdict";
    pub const FINDINGS: &str = "findings";
    pub const FINDINGS_TRUNCATED: &str = "findings-truncated";
    /// Why an object was let through unchecked (controller-owned, no image change, a kind
    /// without pods).
    pub const SKIPPED: &str = "skipped";
    /// Why an object could not be checked (it was let through with a warning).
    pub const ERROR: &str = "error";
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub allowed: bool,
    /// The deny reason: one line per failing container.
    pub message: Option<String>,
    pub warnings: Vec<String>,
    /// Keys are bare; the API server prefixes them with the webhook's name.
    pub audit_annotations: BTreeMap<String, String>,
}

/// kubectl prints every warning on its own line; past a screenful they stop being read.
const MAX_WARNINGS: usize = 20;
/// Audit annotations travel in every audit event of the request: keep them bounded.
const MAX_AUDIT_FINDINGS: usize = 100;
/// The deny message lists this many containers; the rest are counted (and in the audit log).
const MAX_DENY_LINES: usize = 20;

#[derive(Serialize)]
struct AuditFinding<'a> {
    code: &'a str,
    severity: Severity,
    container: &'a str,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    volume: bool,
    image: &'a str,
    message: &'a str,
}

pub fn decide(mode: Mode, findings: &[Finding]) -> Verdict {
    let errors: Vec<&Finding> = findings.iter().filter(|f| f.severity == Severity::Error).collect();
    let warnings: Vec<&Finding> = findings.iter().filter(|f| f.severity == Severity::Warning).collect();
    let deny = mode == Mode::Enforce && !errors.is_empty();
    let warned: Vec<&Finding> = match mode {
        Mode::Enforce => warnings,
        Mode::Warn => errors.iter().chain(warnings.iter()).copied().collect(),
        Mode::Audit => Vec::new(),
    };
    let warning_lines = warning_lines(&warned);
    let verdict_label = if deny {
        "denied"
    } else if !warned.is_empty() {
        "warned"
    } else {
        "allowed"
    };
    let mut audit_annotations = BTreeMap::new();
    audit_annotations.insert(audit_key::MODE.to_string(), mode.to_string());
    audit_annotations.insert(audit_key::VERDICT.to_string(), verdict_label.to_string());
    if !findings.is_empty() {
        if findings.len() > MAX_AUDIT_FINDINGS {
            audit_annotations.insert(
                audit_key::FINDINGS_TRUNCATED.to_string(),
                format!("{} of {}", MAX_AUDIT_FINDINGS, findings.len()),
            );
        }
        let entries: Vec<AuditFinding<'_>> = findings
            .iter()
            .take(MAX_AUDIT_FINDINGS)
            .map(|f| AuditFinding {
                code: f.code.as_str(),
                severity: f.severity,
                container: &f.container,
                volume: f.volume,
                image: &f.image,
                message: &f.message,
            })
            .collect();
        if let Ok(json) = serde_json::to_string(&entries) {
            audit_annotations.insert(audit_key::FINDINGS.to_string(), json);
        }
    }
    Verdict {
        allowed: !deny,
        message: deny.then(|| deny_message(&errors)),
        warnings: warning_lines,
        audit_annotations,
    }
}

/// Findings of one image: the places (containers, image volumes) that use it, and each distinct
/// cause once. Thirty containers sharing one bad image are one line, not thirty.
struct ByImage<'a> {
    image: &'a str,
    places: Vec<String>,
    findings: Vec<&'a Finding>,
}

fn group_by_image<'a>(findings: &[&'a Finding]) -> Vec<ByImage<'a>> {
    let mut groups: Vec<ByImage<'a>> = Vec::new();
    for finding in findings {
        let index = match groups.iter().position(|group| group.image == finding.image) {
            Some(index) => index,
            None => {
                groups.push(ByImage { image: &finding.image, places: Vec::new(), findings: Vec::new() });
                groups.len() - 1
            }
        };
        let group = &mut groups[index];
        let place = finding.place();
        if !group.places.contains(&place) {
            group.places.push(place);
        }
        if !group.findings.iter().any(|known| known.code == finding.code && known.message == finding.message)
        {
            group.findings.push(finding);
        }
    }
    groups
}

/// One line per failing image, naming the containers (and image volumes) that use it, so
/// `kubectl apply` output reads as a short list.
fn deny_message(errors: &[&Finding]) -> String {
    let groups = group_by_image(errors);
    let places: usize = groups.iter().map(|group| group.places.len()).sum();
    let mut message = format!(
        "pullguard: {} image(s) would fail to pull ({places} container(s) or volume(s)):",
        groups.len()
    );
    let total = groups.len();
    for group in groups.into_iter().take(MAX_DENY_LINES) {
        let causes: Vec<String> =
            group.findings.iter().map(|f| format!("{} {}", f.code, f.message)).collect();
        message.push_str(&format!(
            "\n- {} in {}: {}",
            group.image,
            group.places.join(", "),
            causes.join(" | ")
        ));
    }
    if total > MAX_DENY_LINES {
        message.push_str(&format!("\n- and {} more image(s)", total - MAX_DENY_LINES));
    }
    message
}

/// One `Warning:` line per image and cause, naming the containers that share it.
fn warning_lines(warned: &[&Finding]) -> Vec<String> {
    let mut lines: Vec<(Vec<String>, &Finding)> = Vec::new();
    for finding in warned {
        let place = finding.short_place();
        match lines.iter_mut().find(|(_, known)| {
            known.code == finding.code && known.image == finding.image && known.summary == finding.summary
        }) {
            Some((places, _)) => {
                if !places.contains(&place) {
                    places.push(place);
                }
            }
            None => lines.push((vec![place], finding)),
        }
    }
    let total = lines.len();
    let mut out: Vec<String> = lines
        .into_iter()
        .take(MAX_WARNINGS)
        .map(|(places, finding)| finding.warning_line_for(&places.join(", ")))
        .collect();
    if total > MAX_WARNINGS {
        out.push(format!("pullguard: {} more findings in the audit log", total - MAX_WARNINGS));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::finding::Code;

    fn finding(code: Code, severity: Severity, container: &str) -> Finding {
        Finding {
            code,
            severity,
            container: container.into(),
            volume: false,
            image: format!("img-{container}"),
            summary: format!("summary {code}"),
            message: format!("message {code}"),
        }
    }

    #[test]
    fn modes_table() {
        let error = finding(Code::TagNotFound, Severity::Error, "app");
        let warning = finding(Code::MutableTag, Severity::Warning, "app");
        let info = finding(Code::WastefulLayers, Severity::Info, "side");
        let all = vec![error.clone(), warning.clone(), info.clone()];
        // (mode, findings, allowed, number of warnings)
        let cases: Vec<(Mode, Vec<Finding>, bool, usize)> = vec![
            (Mode::Enforce, all.clone(), false, 1),
            (Mode::Warn, all.clone(), true, 2),
            (Mode::Audit, all.clone(), true, 0),
            (Mode::Enforce, vec![warning.clone(), info.clone()], true, 1),
            (Mode::Enforce, vec![info.clone()], true, 0),
            (Mode::Enforce, vec![], true, 0),
        ];
        for (mode, findings, allowed, warnings) in cases {
            let verdict = decide(mode, &findings);
            assert_eq!(verdict.allowed, allowed, "{mode} {findings:?}");
            assert_eq!(verdict.warnings.len(), warnings, "{mode} {findings:?}");
            assert_eq!(verdict.message.is_some(), !allowed);
            assert_eq!(verdict.audit_annotations.get("mode").unwrap(), &mode.to_string());
            assert_eq!(verdict.audit_annotations.contains_key("findings"), !findings.is_empty());
        }
    }

    #[test]
    fn deny_message_has_one_line_per_failing_image() {
        let findings = vec![
            finding(Code::TagNotFound, Severity::Error, "app"),
            finding(Code::OctetStreamConfig, Severity::Error, "app"),
            finding(Code::RepositoryNotFound, Severity::Error, "init"),
        ];
        let message = decide(Mode::Enforce, &findings).message.unwrap();
        assert_eq!(message.lines().count(), 3, "{message}");
        assert!(message.contains("PG101") && message.contains("PG402") && message.contains("PG103"));
    }

    /// Thirty containers sharing one missing image: one line naming them all, and one warning.
    #[test]
    fn containers_sharing_an_image_share_its_line() {
        let shared = |container: String, severity| Finding {
            image: "r.example/app:v9".into(),
            ..finding(Code::TagNotFound, severity, &container)
        };
        let errors: Vec<Finding> = (0..30).map(|i| shared(format!("c{i}"), Severity::Error)).collect();
        let message = decide(Mode::Enforce, &errors).message.unwrap();
        assert_eq!(message.lines().count(), 2, "{message}");
        assert!(
            message.contains("container \"c0\", container \"c1\"") && message.contains("container \"c29\"")
        );
        assert_eq!(message.matches("message PG101").count(), 1, "{message}");
        let warned = decide(Mode::Warn, &errors).warnings;
        assert_eq!(warned.len(), 1, "{warned:?}");
    }

    #[test]
    fn deny_messages_are_capped() {
        let findings: Vec<Finding> =
            (0..500).map(|i| finding(Code::InvalidReference, Severity::Error, &format!("c{i}"))).collect();
        let message = decide(Mode::Enforce, &findings).message.unwrap();
        assert_eq!(message.lines().count(), MAX_DENY_LINES + 2, "{message}");
        assert!(message.contains("480 more"));
    }

    #[test]
    fn warnings_are_capped() {
        let findings: Vec<Finding> =
            (0..30).map(|i| finding(Code::MutableTag, Severity::Warning, &format!("c{i}"))).collect();
        let verdict = decide(Mode::Enforce, &findings);
        assert_eq!(verdict.warnings.len(), MAX_WARNINGS + 1);
        let audit: serde_json::Value = serde_json::from_str(&verdict.audit_annotations["findings"]).unwrap();
        assert_eq!(audit.as_array().unwrap().len(), 30);
        let many: Vec<Finding> =
            (0..300).map(|i| finding(Code::MutableTag, Severity::Warning, &format!("c{i}"))).collect();
        let verdict = decide(Mode::Audit, &many);
        assert_eq!(verdict.audit_annotations["findings-truncated"], "100 of 300");
    }
}
