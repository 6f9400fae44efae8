//! Every answer classified against the documented behaviour, the pass criteria, and the figures
//! table.

use std::{collections::BTreeMap, fmt::Write as _, process::ExitStatus, time::Duration, time::Instant};

use pullguard_tests::{registry::AccessLogEntry, stats::percentile};

use crate::{
    faults::{Outage, Rotation, Sample},
    load::{Phase, Record, Via},
    scenario::Kind,
    server::LogSummary,
};

/// Registry faults that fail open (README "Failure behaviour"): allowed with a `Warning:` line.
const FAIL_OPEN_CODES: [&str; 2] = ["PG501", "PG504"];
/// After a restart, answers may still carry what was looked up while the registry was down.
pub const RESTART_GRACE: Duration = Duration::from_secs(2);
/// RSS stable: the end within 1.5 times the RSS after warm-up plus this.
const RSS_SLACK_KIB: u64 = 16 * 1024;
/// Runs this long also compare the last minute with the second.
const TREND_MIN_SECONDS: f64 = 180.0;
/// Requests the generator could not start on schedule (in-flight cap) that still count as
/// having offered the target rate.
const NOT_SENT_TOLERANCE: f64 = 0.001;

/// A stretch of time in which the registry failed (down, or answering 5xx), fail-open expected.
pub type Window = (Instant, Instant);

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Class {
    Allowed,
    /// PG501/PG504 warnings only, while the registry was down or failing: the documented fail-open
    /// answer.
    FailOpen,
    /// PG101 for the missing tag.
    ExpectedDeny,
    Failure(String),
}

/// The answer `record` should have got, given when the registry was down or failing.
pub fn classify(record: &Record, down: &[Window]) -> Class {
    let answer = match &record.result {
        Ok(answer) => answer,
        Err(error) => return Class::Failure(format!("transport: {}", shorten(error))),
    };
    if answer.status != 200 {
        return Class::Failure(format!("HTTP {}", answer.status));
    }
    if !answer.uid_matches {
        return Class::Failure("uid does not match the request".into());
    }
    let registry_down = overlaps(record, down);
    let fail_open = answer.codes.iter().filter(|code| FAIL_OPEN_CODES.contains(&code.as_str())).count();
    let missing = answer.codes.iter().filter(|code| *code == "PG101").count();
    let others: Vec<&String> =
        answer.codes.iter().filter(|c| !FAIL_OPEN_CODES.contains(&c.as_str()) && *c != "PG101").collect();
    if !others.is_empty() {
        return Class::Failure(format!("unexpected findings {others:?} (allowed: {})", answer.allowed));
    }
    if fail_open > 0 && !registry_down {
        let warning = without_millis(answer.first_warning.as_deref().unwrap_or_default());
        return Class::Failure(format!("fail-open finding while the registry was up: {warning}"));
    }
    match (record.kind, answer.allowed, missing > 0, fail_open > 0) {
        (Kind::Missing, false, true, _) => Class::ExpectedDeny,
        (_, true, false, true) if answer.warnings > 0 => Class::FailOpen,
        (Kind::Cached | Kind::Rolling, true, false, false) => Class::Allowed,
        (Kind::Missing, true, false, false) => Class::Failure("the missing tag was admitted silently".into()),
        (_, allowed, _, _) => {
            Class::Failure(format!("{:?} answered allowed={allowed} codes={:?}", record.kind, answer.codes))
        }
    }
}

/// Whether the request was in flight at some moment of one of the windows.
fn overlaps(record: &Record, windows: &[Window]) -> bool {
    windows.iter().any(|(from, to)| record.sent <= *to && record.done >= *from)
}

/// `backing off for 1834ms` as `backing off for Nms`, so such reasons group.
fn without_millis(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut digits = String::new();
    for (index, c) in text.char_indices() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let millis = !digits.is_empty() && text[index..].starts_with("ms");
        out.push_str(if millis { "N" } else { &digits });
        digits.clear();
        out.push(c);
    }
    out.push_str(&digits);
    out
}

/// Transport errors name the URL and port; the cause is what groups them.
fn shorten(error: &str) -> String {
    let cause = error.rsplit(": ").next().unwrap_or(error);
    cause.chars().take(160).collect()
}

pub enum Outcome {
    Passed,
    Failed(Vec<String>),
}

pub struct Figures<'a> {
    pub seconds: f64,
    pub max_rate: f64,
    pub target_rate: f64,
    pub scheduled: u64,
    pub not_sent: u64,
    pub unanswered: u64,
    pub in_flight_cap: usize,
    pub lag_p99_ms: f64,
    pub records: &'a [Record],
    pub outages: &'a [Outage],
    pub outage_length: Duration,
    pub repushes: (u64, &'a [String]),
    pub registry_requests: &'a [AccessLogEntry],
    /// When the registry itself answered 5xx (plus pullguard's backoff after it).
    pub registry_errors: &'a [Window],
    pub rotations: &'a [Rotation],
    pub reload_interval: Duration,
    pub started: Instant,
    pub samples: &'a [Sample],
    pub rss_warm_up: Duration,
    pub server_exit: Option<ExitStatus>,
    pub log: &'a LogSummary,
    pub metrics: &'a str,
}

/// What the classification adds up to.
#[derive(Default)]
struct Tally {
    sent: u64,
    fresh: u64,
    answered: u64,
    allowed: u64,
    allowed_while_down: u64,
    fail_open: u64,
    fail_open_after_5xx: u64,
    denied: u64,
    failures: BTreeMap<String, u64>,
    max_phase_failures: u64,
    latencies_ms: Vec<f64>,
    /// Keep-alive latencies of requests that overlapped an outage.
    down_latencies_ms: Vec<f64>,
}

impl Figures<'_> {
    /// Outages, then the registry's own 5xx answers: fail-open answers are expected in both.
    fn failing(&self) -> (Vec<Window>, Vec<Window>) {
        let outages: Vec<Window> =
            self.outages.iter().map(|o| (o.stopped, o.restarted + RESTART_GRACE)).collect();
        let mut all = outages.clone();
        all.extend_from_slice(self.registry_errors);
        (outages, all)
    }

    fn tally(&self) -> Tally {
        let (down, failing) = self.failing();
        let mut tally = Tally::default();
        for record in self.records {
            let class = classify(record, &failing);
            if record.phase == Phase::Soak {
                tally.sent += 1;
                tally.fresh += u64::from(record.via == Via::Fresh);
                if record.via == Via::KeepAlive && record.result.is_ok() {
                    let ms = record.latency().as_secs_f64() * 1000.0;
                    tally.latencies_ms.push(ms);
                    if overlaps(record, &down) {
                        tally.down_latencies_ms.push(ms);
                    }
                }
                if matches!(&record.result, Ok(a) if a.status == 200 && a.uid_matches) {
                    tally.answered += 1;
                }
            }
            match class {
                Class::Allowed => {
                    tally.allowed += 1;
                    let during = down.iter().any(|(from, to)| record.sent >= *from && record.done <= *to);
                    tally.allowed_while_down += u64::from(during && record.phase == Phase::Soak);
                }
                Class::FailOpen if overlaps(record, &down) => tally.fail_open += 1,
                Class::FailOpen => tally.fail_open_after_5xx += 1,
                Class::ExpectedDeny => tally.denied += 1,
                Class::Failure(reason) => {
                    tally.max_phase_failures += u64::from(record.phase == Phase::Max);
                    *tally.failures.entry(reason).or_default() += 1;
                }
            }
        }
        if self.unanswered > 0 {
            tally.failures.insert("no answer within the drain time".into(), self.unanswered);
        }
        tally
    }

    fn rss_figures(&self) -> RssFigures {
        let kib = |sample: Option<&Sample>| sample.map_or(0, |sample| sample.rss_kib);
        let window_mean = |from: f64, to: f64| {
            let picked: Vec<u64> = self
                .samples
                .iter()
                .filter(|sample| (from..to).contains(&sample.at.as_secs_f64()))
                .map(|sample| sample.rss_kib)
                .collect();
            (!picked.is_empty()).then(|| picked.iter().sum::<u64>() / picked.len() as u64)
        };
        let end_secs = self.samples.last().map_or(0.0, |sample| sample.at.as_secs_f64());
        RssFigures {
            start: kib(self.samples.first()),
            warm: kib(self.samples.iter().find(|sample| sample.at >= self.rss_warm_up)),
            end: kib(self.samples.last()),
            max: self.samples.iter().map(|sample| sample.rss_kib).max().unwrap_or(0),
            second_minute: window_mean(60.0, 120.0),
            last_minute: (end_secs >= TREND_MIN_SECONDS)
                .then(|| window_mean(end_secs - 60.0, end_secs + 1.0))
                .flatten(),
        }
    }

    /// Every criterion of issue 7; the reasons of those that failed.
    pub fn judge(&self) -> Outcome {
        let tally = self.tally();
        let rss = self.rss_figures();
        let mut failed = Vec::new();
        let failures: u64 = tally.failures.values().sum();
        if failures > 0 {
            failed.push(format!("{failures} failed admissions"));
        }
        if (self.not_sent as f64) > NOT_SENT_TOLERANCE * self.scheduled as f64 {
            failed.push(format!(
                "{} of {} requests could not be sent on schedule",
                self.not_sent, self.scheduled
            ));
        }
        if let Some(status) = self.server_exit {
            failed.push(format!("pullguard exited during the soak ({status})"));
        }
        if let Some(first) = &self.log.first_panic {
            failed.push(format!("{} panics in the server log, the first: {first}", self.log.panics));
        }
        if self.outages.is_empty() || tally.fail_open == 0 {
            failed.push("the registry outages never reached pullguard (no fail-open answer)".into());
        }
        let unserved = self.rotations.iter().filter(|r| r.served_after.is_none()).count();
        if self.rotations.is_empty() || unserved > 0 {
            failed.push(format!("{unserved} of {} certificate rotations never served", self.rotations.len()));
        }
        let rss_bound = rss.warm + rss.warm / 2 + RSS_SLACK_KIB;
        if rss.end == 0 || rss.end > rss_bound {
            failed.push(format!("RSS grew: {} at the end, bound {}", mib(rss.end), mib(rss_bound)));
        }
        if let (Some(second), Some(last)) = (rss.second_minute, rss.last_minute) {
            let trend_bound = second + second / 4 + RSS_SLACK_KIB / 2;
            if last > trend_bound {
                failed.push(format!(
                    "RSS trend: last minute {} against {} in the second minute",
                    mib(last),
                    mib(second)
                ));
            }
        }
        if failed.is_empty() { Outcome::Passed } else { Outcome::Failed(failed) }
    }

    /// The figures as a markdown table, then the failure reasons if any.
    pub fn table(&self) -> String {
        let tally = self.tally();
        let rss = self.rss_figures();
        let mut latencies = tally.latencies_ms.clone();
        let (p50, p99) = (
            percentile(&mut latencies, 50.0).unwrap_or(0.0),
            percentile(&mut latencies, 99.0).unwrap_or(0.0),
        );
        let max_latency = latencies.last().copied().unwrap_or(0.0);
        let mut down_latencies = tally.down_latencies_ms.clone();
        let down_p99 = percentile(&mut down_latencies, 99.0).unwrap_or(0.0);
        let failures: u64 = tally.failures.values().sum();
        let served: Vec<f64> =
            self.rotations.iter().filter_map(|r| r.served_after).map(|d| d.as_secs_f64()).collect();
        let slowest_rotation = served.iter().copied().fold(0.0, f64::max);
        let manifest_requests = |method: &str| {
            self.registry_requests
                .iter()
                .filter(|e| e.method == method && e.path.contains("/manifests/"))
                .count()
        };
        let reloads =
            |result: &str| metric_sum(self.metrics, "pullguard_certificate_reloads_total", result) as u64;
        let cpu = match (self.samples.first(), self.samples.last()) {
            (Some(first), Some(last)) => last.cpu_seconds - first.cpu_seconds,
            _ => 0.0,
        };

        let mut rows: Vec<(String, String)> = vec![
            ("soak duration".into(), format!("{:.0} s", self.seconds)),
            (
                "max throughput (closed loop, 32 in flight, 4 HTTP/2 connections, 10 s)".into(),
                format!("{:.0} req/s", self.max_rate),
            ),
            (
                "target rate (open loop)".into(),
                format!(
                    "{:.0} req/s ({})",
                    self.target_rate,
                    if self.target_rate < self.max_rate / 2.0 - 0.5 {
                        "capped by --max-rate"
                    } else {
                        "half of max"
                    }
                ),
            ),
            (
                "requests scheduled / not sent on schedule (in-flight cap)".into(),
                format!("{} / {} (cap {})", self.scheduled, self.not_sent, self.in_flight_cap),
            ),
            (
                "requests sent (incl. fresh-connection ones)".into(),
                format!("{} ({} on a new TLS connection each)", tally.sent, tally.fresh),
            ),
            ("answered (HTTP 200, uid matches)".into(), tally.answered.to_string()),
            (
                "failures (all phases)".into(),
                format!("{failures} ({} in the max-throughput phase)", tally.max_phase_failures),
            ),
            (
                "fail-open warnings (PG501/PG504 while the registry was down)".into(),
                tally.fail_open.to_string(),
            ),
            (
                "fail-open warnings after the registry's own 5xx answers (5xx answers)".into(),
                format!("{} ({})", tally.fail_open_after_5xx, self.registry_errors.len()),
            ),
            ("allowed from cache while the registry was down".into(), tally.allowed_while_down.to_string()),
            ("denies (expected: PG101 for the missing tag)".into(), tally.denied.to_string()),
            ("allowed without findings (both phases)".into(), tally.allowed.to_string()),
            (
                "latency p50 / p99 / max (keep-alive requests)".into(),
                format!("{p50:.2} / {p99:.2} / {max_latency:.1} ms"),
            ),
            ("latency p99 of requests while the registry was down".into(), format!("{down_p99:.2} ms")),
            (
                "answers slower than 1 s / at the 8 s admission deadline or later".into(),
                format!(
                    "{} / {}",
                    tally.latencies_ms.iter().filter(|ms| **ms >= 1000.0).count(),
                    tally.latencies_ms.iter().filter(|ms| **ms >= 8000.0).count()
                ),
            ),
            ("generator lag p99".into(), format!("{:.2} ms", self.lag_p99_ms)),
            (
                "registry outages (killed, restarted on the same port)".into(),
                format!("{} x {} s", self.outages.len(), self.outage_length.as_secs()),
            ),
            (
                "rolling tags re-pushed (failed)".into(),
                format!("{} ({})", self.repushes.0, self.repushes.1.len()),
            ),
            (
                "registry manifest requests during the soak: HEAD / GET".into(),
                format!("{} / {}", manifest_requests("HEAD"), manifest_requests("GET")),
            ),
            (
                "certificate rotations (new leaf served after, max)".into(),
                format!(
                    "{} published, {} served, max {slowest_rotation:.1} s (poll {} s)",
                    self.rotations.len(),
                    served.len(),
                    self.reload_interval.as_secs()
                ),
            ),
            (
                "certificate reloads (server metric: swapped / rejected)".into(),
                format!("{} / {}", reloads("swapped"), reloads("rejected")),
            ),
            (
                format!(
                    "RSS start / after warm-up ({} s, first outage over) / end / max",
                    self.rss_warm_up.as_secs()
                ),
                format!("{} / {} / {} / {}", mib(rss.start), mib(rss.warm), mib(rss.end), mib(rss.max)),
            ),
            (
                "RSS mean second minute / last minute".into(),
                format!(
                    "{} / {}",
                    rss.second_minute.map_or("-".into(), mib),
                    rss.last_minute.map_or("-".into(), mib)
                ),
            ),
            (
                "server CPU during the soak".into(),
                format!(
                    "{cpu:.1} s ({:.0}% of one core, {:.3} ms per answered admission)",
                    100.0 * cpu / self.seconds,
                    1000.0 * cpu / tally.answered.max(1) as f64
                ),
            ),
            (
                format!(
                    "machine load average (1 min) at the start / max / end ({} cores)",
                    std::thread::available_parallelism().map_or(0, usize::from)
                ),
                format!(
                    "{:.1} / {:.1} / {:.1}",
                    self.samples.first().map_or(0.0, |s| s.load),
                    self.samples.iter().map(|s| s.load).fold(0.0, f64::max),
                    self.samples.last().map_or(0.0, |s| s.load)
                ),
            ),
            (
                "server alive at the end / panics / log WARN, ERROR lines".into(),
                format!(
                    "{} / {} / {}, {}",
                    if self.server_exit.is_none() { "yes" } else { "no" },
                    self.log.panics,
                    self.log.warn_lines,
                    self.log.error_lines
                ),
            ),
        ];
        if self.scheduled == 0 {
            rows.push(("note".into(), "no request was scheduled".into()));
        }
        let mut out = String::from("\n| figure | value |\n|---|---|\n");
        for (name, value) in rows {
            let _ = writeln!(out, "| {name} | {value} |");
        }
        if !tally.failures.is_empty() {
            let _ = writeln!(out, "\nfailures by reason:");
            let mut reasons: Vec<(&String, &u64)> = tally.failures.iter().collect();
            reasons.sort_by(|a, b| b.1.cmp(a.1));
            for (reason, count) in reasons.into_iter().take(10) {
                let _ = writeln!(out, "- {count} x {reason}");
            }
        }
        for failure in self.repushes.1.iter().take(3) {
            let _ = writeln!(out, "- re-push failed: {failure}");
        }
        out.push('\n');
        out
    }
}

impl Figures<'_> {
    /// The soak phase in buckets (about 20): load, answers, latency, registry state, rotations,
    /// and the server's RSS and CPU, so a trend or an outage's effect can be seen.
    pub fn timeline(&self) -> String {
        let width = Duration::from_secs(((self.seconds / 20.0 / 5.0).round() as u64 * 5).max(5));
        let offset = |at: Instant| at.saturating_duration_since(self.started);
        let (_, failing) = self.failing();
        // The last samples land a moment after the end; they do not make a bucket of their own.
        let buckets = ((self.seconds - 0.5) / width.as_secs_f64()).ceil().max(1.0) as u32;
        let mut out = String::from(
            "| from s | requests | fail-open | denied | failures | p50 ms | p99 ms | max ms | registry \
             | rotations | RSS MiB | server CPU | machine load |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|\n",
        );
        for bucket in 0..buckets {
            let (from, to) = (width * bucket, width * (bucket + 1));
            let inside = |at: Instant| (from..to).contains(&offset(at));
            let mut latencies = Vec::new();
            let (mut requests, mut fail_open, mut denied, mut failures) = (0, 0, 0, 0);
            for record in self.records.iter().filter(|r| r.phase == Phase::Soak && inside(r.sent)) {
                requests += 1;
                if record.via == Via::KeepAlive && record.result.is_ok() {
                    latencies.push(record.latency().as_secs_f64() * 1000.0);
                }
                match classify(record, &failing) {
                    Class::FailOpen => fail_open += 1,
                    Class::ExpectedDeny => denied += 1,
                    Class::Failure(_) => failures += 1,
                    Class::Allowed => {}
                }
            }
            // Seconds of the bucket the registry was down.
            let down_for: Duration = self
                .outages
                .iter()
                .map(|o| offset(o.restarted).min(to).saturating_sub(offset(o.stopped).max(from)))
                .sum();
            let registry = match down_for {
                d if d.is_zero() => "up".to_owned(),
                d if d >= width => "down".to_owned(),
                d => format!("down {} s", d.as_secs_f64().round()),
            };
            let rotations = self.rotations.iter().filter(|r| inside(r.published)).count();
            let at_or_before = |limit: Duration| self.samples.iter().rev().find(|s| s.at <= limit);
            let (start, end) = (at_or_before(from), at_or_before(to));
            let rss = end.map_or("-".into(), |s| format!("{:.1}", s.rss_kib as f64 / 1024.0));
            let load = end.map_or("-".into(), |s| format!("{:.1}", s.load));
            let cpu = match (start, end) {
                (Some(a), Some(b)) if b.at > a.at => {
                    format!("{:.0}%", 100.0 * (b.cpu_seconds - a.cpu_seconds) / (b.at - a.at).as_secs_f64())
                }
                _ => "-".into(),
            };
            let p50 = percentile(&mut latencies, 50.0).unwrap_or(0.0);
            let p99 = percentile(&mut latencies, 99.0).unwrap_or(0.0);
            let max = latencies.last().copied().unwrap_or(0.0);
            let _ = writeln!(
                out,
                "| {} | {requests} | {fail_open} | {denied} | {failures} | {p50:.1} | {p99:.1} | {max:.0} | {} \
                 | {rotations} | {rss} | {cpu} | {load} |",
                from.as_secs(),
                registry,
            );
        }
        out
    }
}

struct RssFigures {
    start: u64,
    warm: u64,
    end: u64,
    max: u64,
    second_minute: Option<u64>,
    last_minute: Option<u64>,
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

/// Sum of the samples of an OpenMetrics counter whose `result` label is `result`.
fn metric_sum(metrics: &str, name: &str, result: &str) -> f64 {
    let label = format!("result=\"{result}\"");
    metrics
        .lines()
        .filter(|line| line.starts_with(name) && line.contains(&label))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[cfg(test)]
mod tests;
