//! Mode + findings -> what the API server is told: allowed or not, the deny message, `warnings`
//! for kubectl, and `auditAnnotations` for the audit log. Pure, so every mode is table-tested.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::{
    config::Mode,
    finding::{Finding, Severity},
};

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
    let mut warning_lines: Vec<String> = warned.iter().take(MAX_WARNINGS).map(|f| f.warning_line()).collect();
    if warned.len() > MAX_WARNINGS {
        warning_lines
            .push(format!("pullguard: {} more findings in the audit log", warned.len() - MAX_WARNINGS));
    }
    let verdict_label = if deny {
        "denied"
    } else if !warned.is_empty() {
        "warned"
    } else {
        "allowed"
    };
    let mut audit_annotations = BTreeMap::new();
    audit_annotations.insert("mode".to_string(), mode.to_string());
    audit_annotations.insert("verdict".to_string(), verdict_label.to_string());
    if !findings.is_empty() {
        if findings.len() > MAX_AUDIT_FINDINGS {
            audit_annotations.insert(
                "findings-truncated".to_string(),
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
            audit_annotations.insert("findings".to_string(), json);
        }
    }
    Verdict {
        allowed: !deny,
        message: deny.then(|| deny_message(&errors)),
        warnings: warning_lines,
        audit_annotations,
    }
}

/// One line per failing container (or image volume), each with its codes, so `kubectl apply`
/// output reads as a list.
fn deny_message(errors: &[&Finding]) -> String {
    let mut by_container: Vec<((&str, bool), Vec<&Finding>)> = Vec::new();
    for finding in errors {
        let place = (finding.container.as_str(), finding.volume);
        match by_container.iter_mut().find(|(known, _)| *known == place) {
            Some((_, list)) => list.push(finding),
            None => by_container.push((place, vec![finding])),
        }
    }
    let volumes = by_container.iter().filter(|((_, volume), _)| *volume).count();
    let containers = by_container.len() - volumes;
    let mut message = match (containers, volumes) {
        (_, 0) => format!("pullguard: {containers} container(s) would fail to pull their image:"),
        (0, _) => format!("pullguard: {volumes} image volume(s) would fail to pull their image:"),
        _ => format!(
            "pullguard: {containers} container(s) and {volumes} image volume(s) would fail to pull their image:"
        ),
    };
    let total = by_container.len();
    for (_, findings) in by_container.into_iter().take(MAX_DENY_LINES) {
        let Some(first) = findings.first() else { continue };
        let causes: Vec<String> = findings.iter().map(|f| format!("{} {}", f.code, f.message)).collect();
        message.push_str(&format!("\n- {} (image {}): {}", first.place(), first.image, causes.join(" | ")));
    }
    if total > MAX_DENY_LINES {
        message.push_str(&format!("\n- and {} more container(s)", total - MAX_DENY_LINES));
    }
    message
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
        let error = finding(Code::Pg101, Severity::Error, "app");
        let warning = finding(Code::Pg601, Severity::Warning, "app");
        let info = finding(Code::Pg603, Severity::Info, "side");
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
    fn deny_message_has_one_line_per_failing_container() {
        let findings = vec![
            finding(Code::Pg101, Severity::Error, "app"),
            finding(Code::Pg402, Severity::Error, "app"),
            finding(Code::Pg103, Severity::Error, "init"),
        ];
        let message = decide(Mode::Enforce, &findings).message.unwrap();
        assert_eq!(message.lines().count(), 3, "{message}");
        assert!(message.contains("PG101") && message.contains("PG402") && message.contains("PG103"));
    }

    #[test]
    fn deny_messages_are_capped() {
        let findings: Vec<Finding> =
            (0..500).map(|i| finding(Code::Pg100, Severity::Error, &format!("c{i}"))).collect();
        let message = decide(Mode::Enforce, &findings).message.unwrap();
        assert_eq!(message.lines().count(), MAX_DENY_LINES + 2, "{message}");
        assert!(message.contains("480 more"));
    }

    #[test]
    fn warnings_are_capped() {
        let findings: Vec<Finding> =
            (0..30).map(|i| finding(Code::Pg601, Severity::Warning, &format!("c{i}"))).collect();
        let verdict = decide(Mode::Enforce, &findings);
        assert_eq!(verdict.warnings.len(), MAX_WARNINGS + 1);
        let audit: serde_json::Value = serde_json::from_str(&verdict.audit_annotations["findings"]).unwrap();
        assert_eq!(audit.as_array().unwrap().len(), 30);
        let many: Vec<Finding> =
            (0..300).map(|i| finding(Code::Pg601, Severity::Warning, &format!("c{i}"))).collect();
        let verdict = decide(Mode::Audit, &many);
        assert_eq!(verdict.audit_annotations["findings-truncated"], "100 of 300");
    }
}
