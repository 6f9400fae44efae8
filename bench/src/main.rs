//! pullguard-bench: the numbers behind "pullguard never slows a rollout".
//!
//! `pullguard-bench run` measures, in one run and on loopback only, warm throughput and latency
//! against an allow-all floor on the same server stack, cold latency against a real registry
//! (with and without injected delay) against single lookups and a `skopeo inspect` loop,
//! registry requests per image, coalescing, and the memory of a `pullguard serve` process with a
//! full cache; then prints one markdown table. `pullguard-bench floor` is the allow-all server,
//! started by `run` as a process of its own so it is measured exactly like `pullguard serve`.
//! `bash bench/run.sh` installs the tools, builds in release mode and runs it.
#![forbid(unsafe_code)]

mod client;
mod cluster;
mod cold;
mod fake_registry;
mod floor;
mod h2load;
mod load;
mod memory;
mod process;
mod proxy;
mod report;
mod requests;
mod reviews;
mod stats;
mod warm;

use std::{path::PathBuf, time::Duration};

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "pullguard-bench", about = "Benchmarks for pullguard (see the README's Benchmarks section)")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Runs every measurement and prints one markdown table on stdout (progress on stderr).
    Run(RunArgs),
    /// Serves the allow-all floor: pullguard's server stack with a handler that allows everything.
    Floor(floor::FloorArgs),
    /// Open-loop load at a fixed rate (what `run` uses for latency at half of max throughput).
    Load(load::LoadArgs),
}

#[derive(clap::Args, Clone)]
pub struct RunArgs {
    /// The release binary measured for warm throughput and memory.
    #[arg(long, default_value = "target/release/pullguard")]
    pub pullguard: PathBuf,
    /// Seconds of each h2load measurement (after one second of warm-up).
    #[arg(long, default_value_t = 5)]
    pub warm_seconds: u64,
    /// Trials of each cold-latency measurement (the median is reported).
    #[arg(long, default_value_t = 5)]
    pub cold_trials: usize,
    /// Sequential `skopeo inspect` loops per delay (the median is reported).
    #[arg(long, default_value_t = 3)]
    pub skopeo_loops: usize,
    /// Distinct images cached for the memory figure (10 per admission).
    #[arg(long, default_value_t = 100_000)]
    pub memory_entries: usize,
    /// The whole run stops with an error past this many seconds.
    #[arg(long, default_value_t = 480)]
    pub budget_seconds: u64,
    /// Also write the table to this file.
    #[arg(long)]
    pub output: Option<PathBuf>,
    /// Keep request bodies, configs, server and h2load logs here (for profiling) instead of a
    /// temporary directory removed at the end.
    #[arg(long)]
    pub work_dir: Option<PathBuf>,
    /// Run only these parts (repeatable); default: all.
    #[arg(long, value_enum)]
    pub only: Vec<Part>,
}

#[derive(clap::ValueEnum, Clone, Copy, PartialEq, Eq, Debug)]
pub enum Part {
    Warm,
    Cold,
    Requests,
    Memory,
}

impl RunArgs {
    fn runs(&self, part: Part) -> bool {
        self.only.is_empty() || self.only.contains(&part)
    }
}

fn main() -> std::process::ExitCode {
    // reqwest and the servers are built without a default provider; everything here uses ring.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(args) => runtime().and_then(|runtime| runtime.block_on(run(args))),
        Command::Floor(args) => runtime().and_then(|runtime| runtime.block_on(floor::serve(args))),
        // One thread, like h2load -t1: the load generator must not take both cores.
        Command::Load(args) => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("starting the tokio runtime")
            .and_then(|runtime| runtime.block_on(load::generate(args))),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("pullguard-bench: {error:#}");
            std::process::ExitCode::from(2)
        }
    }
}

/// The same runtime `#[tokio::main]` gives `pullguard serve`: one worker per core.
fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the tokio runtime")
}

async fn run(args: RunArgs) -> Result<()> {
    let budget = Duration::from_secs(args.budget_seconds);
    let facts = report::MachineFacts::collect(&args.pullguard).await;
    // A bound on the whole run, so a wedged server or tool cannot hold the machine: every child
    // process is killed on drop when this gives up.
    let table = tokio::time::timeout(budget, measure(&args))
        .await
        .with_context(|| format!("the benchmark did not finish within {budget:?}"))??;
    let text = report::render(&facts, &table);
    println!("{text}");
    if let Some(path) = &args.output {
        std::fs::write(path, &text).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

async fn measure(args: &RunArgs) -> Result<report::Table> {
    let started = std::time::Instant::now();
    progress("start");
    // Held until the end: dropping it removes the directory.
    let temporary = tempfile::Builder::new().prefix("pullguard-bench-").tempdir()?;
    let work = match &args.work_dir {
        Some(dir) => {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            dir.clone()
        }
        None => temporary.path().to_path_buf(),
    };
    let mut table = report::Table::default();

    if args.runs(Part::Warm) {
        progress("warm: throughput and latency against the allow-all floor (h2load)");
        warm::measure(args, &work, &mut table).await.context("warm throughput")?;
    }
    if args.runs(Part::Cold) {
        progress("cold: 10 uncached images vs single lookups vs a skopeo loop");
        cold::measure(args, &mut table).await.context("cold latency")?;
    }
    if args.runs(Part::Requests) {
        progress("registry requests per image and coalescing");
        requests::measure(&mut table).await.context("registry requests")?;
    }
    if args.runs(Part::Memory) {
        progress("memory: pullguard serve idle and with a full cache");
        memory::measure(args, &work, &mut table).await.context("memory")?;
    }

    progress("done");
    table.elapsed = started.elapsed();
    Ok(table)
}

/// One line on stderr per step, with the time since the run started, so a slow step shows.
pub fn progress(what: &str) {
    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    let start = START.get_or_init(std::time::Instant::now);
    eprintln!("pullguard-bench [{:>6.1}s] {what}", start.elapsed().as_secs_f64());
}
