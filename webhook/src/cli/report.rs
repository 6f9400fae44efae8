//! The report `check` and `audit` print: findings with their workload, the distinct images, and
//! a summary by severity and by code. JSON shape documented in the README (stable, additive).

use std::{collections::BTreeMap, io::Write, path::PathBuf};

use clap::ValueEnum;
use serde::Serialize;

use super::CliError;
use crate::{
    finding::{Finding, Severity},
    inspect::{ImageReport, Inspection},
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Text,
    Json,
}

#[derive(Serialize)]
struct ReportFinding<'a> {
    code: &'a str,
    severity: Severity,
    image: &'a str,
    container: &'a str,
    workload: Option<&'a str>,
    message: &'a str,
}

#[derive(Serialize, Default)]
struct Summary {
    errors: usize,
    warnings: usize,
    infos: usize,
    by_code: BTreeMap<&'static str, usize>,
}

#[derive(Serialize)]
struct Report<'a> {
    findings: Vec<ReportFinding<'a>>,
    images: Vec<&'a ImageReport>,
    summary: Summary,
}

/// Writes the report to stdout; the exit status is 1 when any finding is an error.
pub fn print(inspections: &[(Option<String>, Inspection)], output: Output) -> Result<i32, CliError> {
    let mut findings: Vec<(Option<&str>, &Finding)> = Vec::new();
    let mut images: BTreeMap<&str, &ImageReport> = BTreeMap::new();
    for (workload, inspection) in inspections {
        findings.extend(inspection.findings.iter().map(|finding| (workload.as_deref(), finding)));
        for image in &inspection.images {
            images.entry(image.input.as_str()).or_insert(image);
        }
    }
    let mut summary = Summary::default();
    for (_, finding) in &findings {
        match finding.severity {
            Severity::Error => summary.errors += 1,
            Severity::Warning => summary.warnings += 1,
            Severity::Info => summary.infos += 1,
        }
        *summary.by_code.entry(finding.code.as_str()).or_default() += 1;
    }
    let exit = if summary.errors > 0 { 1 } else { 0 };
    let report = Report {
        findings: findings
            .iter()
            .map(|(workload, finding)| ReportFinding {
                code: finding.code.as_str(),
                severity: finding.severity,
                image: &finding.image,
                container: &finding.container,
                workload: *workload,
                message: &finding.message,
            })
            .collect(),
        images: images.into_values().collect(),
        summary,
    };
    let mut stdout = std::io::stdout().lock();
    let written = match output {
        Output::Json => serde_json::to_writer_pretty(&mut stdout, &report)
            .map_err(std::io::Error::other)
            .and_then(|()| writeln!(stdout)),
        Output::Text => write_text(&mut stdout, &report),
    };
    written.map_err(|source| CliError::Write { path: PathBuf::from("<stdout>"), source })?;
    Ok(exit)
}

fn write_text(out: &mut impl Write, report: &Report<'_>) -> std::io::Result<()> {
    for finding in &report.findings {
        let severity = finding.severity.to_string().to_uppercase();
        let place = match finding.workload {
            Some(workload) => format!("{workload} container {:?}", finding.container),
            None => String::new(),
        };
        writeln!(out, "{severity:<7} {} {} {place}", finding.code, finding.image)?;
        writeln!(out, "        {}", finding.message)?;
    }
    for image in &report.images {
        if let (Some(normalized), Some(digest)) = (&image.normalized, &image.resolved_digest) {
            writeln!(out, "resolved {normalized} -> {digest}")?;
        }
    }
    if !report.summary.by_code.is_empty() {
        let codes: Vec<String> =
            report.summary.by_code.iter().map(|(code, count)| format!("{code}: {count}")).collect();
        writeln!(out, "by code: {}", codes.join(", "))?;
    }
    writeln!(
        out,
        "{} error(s), {} warning(s), {} info(s) in {} image(s)",
        report.summary.errors,
        report.summary.warnings,
        report.summary.infos,
        report.images.len()
    )
}
