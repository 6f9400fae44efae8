//! The one markdown table the run prints, with the machine it ran on.

use std::{fmt::Write as _, time::Duration};

use tokio::process::Command;

/// One measured figure, next to what it is compared with and the target it answers.
#[derive(Debug, Clone)]
pub struct Row {
    pub measurement: String,
    pub value: String,
    pub compared_with: String,
    pub ratio: String,
    pub target: String,
    /// `None` for figures without a target.
    pub met: Option<bool>,
}

impl Row {
    pub fn info(measurement: impl Into<String>, value: impl Into<String>) -> Row {
        Row {
            measurement: measurement.into(),
            value: value.into(),
            compared_with: String::new(),
            ratio: String::new(),
            target: String::new(),
            met: None,
        }
    }

    pub fn compared(mut self, with: impl Into<String>, ratio: impl Into<String>) -> Row {
        self.compared_with = with.into();
        self.ratio = ratio.into();
        self
    }

    pub fn target(mut self, target: impl Into<String>, met: bool) -> Row {
        self.target = target.into();
        self.met = Some(met);
        self
    }
}

#[derive(Debug, Default)]
pub struct Table {
    pub rows: Vec<Row>,
    /// Settings and caveats printed under the table.
    pub notes: Vec<String>,
    pub elapsed: Duration,
}

impl Table {
    pub fn push(&mut self, row: Row) {
        eprintln!("  {}: {}", row.measurement, row.value);
        self.rows.push(row);
    }

    pub fn note(&mut self, note: impl Into<String>) {
        self.notes.push(note.into());
    }
}

/// Facts about the machine, so numbers from different machines are never compared blind.
pub struct MachineFacts {
    cores: String,
    cpu: String,
    memory: String,
    kernel: String,
    date: String,
    revision: String,
    binary: String,
    tools: String,
    load_at_start: String,
}

impl MachineFacts {
    pub async fn collect(binary: &std::path::Path) -> MachineFacts {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu = cpuinfo
            .lines()
            .find_map(|line| line.strip_prefix("model name"))
            .and_then(|rest| rest.split_once(':'))
            .map(|(_, model)| model.trim().to_string())
            .unwrap_or_else(|| "unknown".into());
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let memory = meminfo
            .lines()
            .find_map(|line| line.strip_prefix("MemTotal:"))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map(|kib| format!("{:.1} GiB", kib as f64 / 1024.0 / 1024.0))
            .unwrap_or_else(|| "unknown".into());
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|text| text.trim().to_string())
            .unwrap_or_else(|_| "unknown".into());
        let tools = [
            first_line("h2load", &["--version"]).await,
            first_line("docker-registry", &["--version"]).await,
            first_line("skopeo", &["--version"]).await,
            first_line("rustc", &["--version"]).await,
        ]
        .join("; ");
        MachineFacts {
            cores: first_line("nproc", &[]).await,
            cpu,
            memory,
            kernel,
            date: first_line("date", &["-u", "+%Y-%m-%d %H:%M:%S UTC"]).await,
            revision: first_line("git", &["describe", "--always", "--dirty"]).await,
            binary: binary.display().to_string(),
            tools,
            load_at_start: load_average(),
        }
    }
}

/// The 1, 5 and 15 minute load averages: a shared or busy machine shows here, not in the numbers.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|text| text.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

async fn first_line(program: &str, args: &[&str]) -> String {
    match Command::new(program).args(args).output().await {
        Ok(output) if output.status.success() => {
            String::from_utf8_lossy(&output.stdout).lines().next().unwrap_or_default().trim().to_string()
        }
        _ => "unknown".into(),
    }
}

pub fn render(facts: &MachineFacts, table: &Table) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "## pullguard benchmark ({})", facts.date);
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "- machine: nproc {}, {}, {} RAM, Linux {}",
        facts.cores, facts.cpu, facts.memory, facts.kernel
    );
    let bench_build = if cfg!(debug_assertions) { "debug" } else { "release" };
    let _ = writeln!(
        out,
        "- pullguard {} (`{}`, bench built {bench_build}); {}",
        facts.revision, facts.binary, facts.tools
    );
    let _ = writeln!(
        out,
        "- everything on loopback, one run, {:.0} s of measuring; load average {} at the start, {} at the end",
        table.elapsed.as_secs_f64(),
        facts.load_at_start,
        load_average()
    );
    let _ = writeln!(out);
    let _ = writeln!(out, "| # | measurement | pullguard | compared with | ratio | target | met |");
    let _ = writeln!(out, "|---|---|---|---|---|---|---|");
    for (index, row) in table.rows.iter().enumerate() {
        let met = match row.met {
            Some(true) => "met",
            Some(false) => "**not met**",
            None => "",
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} |",
            index + 1,
            cell(&row.measurement),
            cell(&row.value),
            cell(&row.compared_with),
            cell(&row.ratio),
            cell(&row.target),
            met
        );
    }
    let targets = table.rows.iter().filter(|row| row.met.is_some()).count();
    let met = table.rows.iter().filter(|row| row.met == Some(true)).count();
    let _ = writeln!(out);
    let _ = writeln!(out, "Targets met: {met} of {targets}.");
    for note in &table.notes {
        let _ = writeln!(out, "- {note}");
    }
    out
}

/// Table cells cannot hold `|` or line breaks.
fn cell(text: &str) -> String {
    text.replace('|', "\\|").replace('\n', " ")
}

/// `a / b` as `0.42×`, or `n/a` when `b` is zero.
pub fn ratio(a: f64, b: f64) -> String {
    if b > 0.0 && a.is_finite() && b.is_finite() { format!("{:.2}×", a / b) } else { "n/a".into() }
}
