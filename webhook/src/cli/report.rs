//! The report `check` and `audit` print: findings with their workload, the distinct images, and
//! a summary by severity and by code. JSON shape documented in the README (stable, additive).

use std::{collections::BTreeMap, io::Write, path::PathBuf};

use clap::ValueEnum;
use pullguard_core::finding::{Finding, Severity};
use serde::Serialize;

use super::error::CliError;
use crate::inspect::{ImageReport, Inspection};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Text,
    Json,
    /// GitHub Actions workflow commands: `::error file=...,line=...::message`.
    Github,
}

/// One checked workload (or the `--image` list) and where its images are written.
pub struct Labelled {
    pub workload: Option<String>,
    pub file: Option<String>,
    /// Per container name, the line of its `image` field in `file`.
    pub image_lines: Vec<(String, usize)>,
    pub inspection: Inspection,
}

#[derive(Serialize)]
struct ReportFinding<'a> {
    code: &'a str,
    severity: Severity,
    image: &'a str,
    /// The container's name, or the image volume's when `volume` is set.
    container: &'a str,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    volume: bool,
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
pub fn print(inspections: &[Labelled], output: Output) -> Result<i32, CliError> {
    let mut findings: Vec<(Option<&str>, &Finding)> = Vec::new();
    let mut images: BTreeMap<&str, &ImageReport> = BTreeMap::new();
    for labelled in inspections {
        let inspection = &labelled.inspection;
        findings.extend(inspection.findings.iter().map(|finding| (labelled.workload.as_deref(), finding)));
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
                volume: finding.volume,
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
        Output::Github => write_github(&mut stdout, inspections, &report),
    };
    written.map_err(|source| CliError::Write { path: PathBuf::from("<stdout>"), source })?;
    Ok(exit)
}

/// Workflow-command escaping: `%`, CR and LF in messages, plus `:` and `,` in properties.
fn escape_data(text: &str) -> String {
    text.replace('%', "%25").replace('\r', "%0D").replace('\n', "%0A")
}

fn escape_property(text: &str) -> String {
    escape_data(text).replace(':', "%3A").replace(',', "%2C")
}

fn write_github(out: &mut impl Write, inspections: &[Labelled], report: &Report<'_>) -> std::io::Result<()> {
    for labelled in inspections {
        for finding in &labelled.inspection.findings {
            let level = match finding.severity {
                Severity::Error => "error",
                Severity::Warning => "warning",
                Severity::Info => "notice",
            };
            let mut properties = Vec::new();
            if let Some(file) = &labelled.file {
                properties.push(format!("file={}", escape_property(file)));
                let line = labelled.image_lines.iter().find(|(name, _)| *name == finding.container);
                if let Some((_, line)) = line {
                    properties.push(format!("line={line}"));
                }
            }
            let place = labelled.workload.as_deref().map(|w| format!(" {w}")).unwrap_or_default();
            properties.push(format!(
                "title={}",
                escape_property(&format!("{}{place} {}", finding.code, finding.container))
            ));
            writeln!(out, "::{level} {}::{}", properties.join(","), escape_data(&finding.message))?;
        }
    }
    writeln!(out, "{}", tally(report))
}

fn write_text(out: &mut impl Write, report: &Report<'_>) -> std::io::Result<()> {
    for finding in &report.findings {
        let severity = finding.severity.to_string().to_uppercase();
        let place = match finding.workload {
            Some(workload) => {
                let what = if finding.volume { "volume" } else { "container" };
                format!("{workload} {what} {:?}", finding.container)
            }
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
    writeln!(out, "{}", tally(report))
}

/// The last line of text and GitHub output: how many findings of each severity, in how many images.
fn tally(report: &Report<'_>) -> String {
    let summary = &report.summary;
    format!(
        "{} error(s), {} warning(s), {} info(s) in {} image(s)",
        summary.errors,
        summary.warnings,
        summary.infos,
        report.images.len()
    )
}
