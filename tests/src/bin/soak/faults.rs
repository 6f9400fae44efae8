//! The faults and the watch on the server: registry outages (killed, restarted on the same port
//! with the same storage) with rolling tags re-pushed while it is up, certificate rotations through
//! the Secret volume, and RSS samples.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};
use base64::Engine as _;
use pullguard_tests::{
    certs::TestCa,
    registry::RegistryProcess,
    secret_volume::SecretVolume,
    seed::Seeder,
    served::{cpu_time, rss_kib},
};

use crate::{
    load::{Load, Record},
    scenario::{ROLLING_TAGS, rolling_spec},
    server,
};

/// When everything happens, as offsets from the start of the soak phase.
pub struct Plan {
    pub duration: Duration,
    pub outages: Vec<Duration>,
    pub outage_length: Duration,
    pub rotations: Vec<Duration>,
    pub repush_every: Duration,
    pub probe_every: Duration,
    pub rss_every: Duration,
    /// RSS "after warm-up" is the first sample at or after this.
    pub rss_warm_up: Duration,
    pub reload_interval: Duration,
    pub tag_ttl: Duration,
    pub miss_ttl: Duration,
}

impl Plan {
    /// A 20 s registry outage every 60 s from 10 s on, each followed by at least 10 s of load; a
    /// rotation every 45 s (more often in short runs). The RSS reference ("after warm-up") is
    /// taken 5 s after the first outage ended: the first outage's high-water mark (requests that
    /// queued while it lasted) is a one-time step, while a leak grows with every later outage.
    pub fn for_seconds(seconds: u64) -> Plan {
        let duration = Duration::from_secs(seconds);
        let outage_length = Duration::from_secs(20);
        let first_outage = Duration::from_secs(10);
        let outages = schedule(first_outage, Duration::from_secs(60), |at| {
            at + outage_length + Duration::from_secs(10) <= duration
        });
        let rotation_every = Duration::from_secs((seconds / 3).clamp(10, 45));
        let rotations =
            schedule(Duration::from_secs(10), rotation_every, |at| at + Duration::from_secs(10) <= duration);
        Plan {
            duration,
            outages,
            outage_length,
            rotations,
            repush_every: Duration::from_secs(10),
            probe_every: Duration::from_millis(500),
            rss_every: Duration::from_secs(5),
            rss_warm_up: first_outage + outage_length + Duration::from_secs(5),
            reload_interval: Duration::from_secs(2),
            // Shorter than an outage: cached tags outlive its start, not its end.
            tag_ttl: Duration::from_secs(10),
            miss_ttl: Duration::from_secs(10),
        }
    }
}

fn schedule(first: Duration, every: Duration, fits: impl Fn(Duration) -> bool) -> Vec<Duration> {
    std::iter::successors(Some(first), |at| Some(*at + every)).take_while(|at| fits(*at)).collect()
}

/// A registry outage as the soak caused it.
#[derive(Clone, Copy, Debug)]
pub struct Outage {
    pub stopped: Instant,
    /// When the restarted registry answered again.
    pub restarted: Instant,
}

pub struct RegistryChaos<'a> {
    registry: &'a mut RegistryProcess,
    seeder: &'a Seeder,
    repushes: u64,
    repush_failures: Vec<String>,
}

impl<'a> RegistryChaos<'a> {
    pub fn new(registry: &'a mut RegistryProcess, seeder: &'a Seeder) -> RegistryChaos<'a> {
        RegistryChaos { registry, seeder, repushes: 0, repush_failures: Vec::new() }
    }

    /// Successful re-pushes and the errors of failed ones.
    pub fn repushes(&self) -> (u64, &[String]) {
        (self.repushes, &self.repush_failures)
    }

    /// Kills the registry at each planned outage and restarts it `outage_length` later; in
    /// between, re-pushes one rolling tag every `repush_every`.
    pub async fn run(&mut self, plan: &Plan, started: Instant, end: Instant) -> Result<Vec<Outage>> {
        let mut outages = Vec::new();
        let mut planned = plan.outages.iter().map(|offset| started + *offset).peekable();
        let mut next_push = started + plan.repush_every;
        loop {
            let next_outage = planned.peek().copied();
            let wake = next_outage.unwrap_or(end).min(next_push).min(end);
            tokio::time::sleep_until(wake.into()).await;
            if wake >= end {
                return Ok(outages);
            }
            if Some(wake) == next_outage {
                planned.next();
                let stopped = Instant::now();
                self.registry.stop().await?;
                tokio::time::sleep(plan.outage_length).await;
                self.registry.restart().await.context("restarting the registry after an outage")?;
                outages.push(Outage { stopped, restarted: Instant::now() });
                next_push = Instant::now() + plan.repush_every;
            } else {
                self.repush().await;
                next_push += plan.repush_every;
            }
        }
    }

    /// The tags take turns; each push of a tag differs from its previous one (seeded as 0).
    async fn repush(&mut self) {
        let count = self.repushes + self.repush_failures.len() as u64;
        let tags = ROLLING_TAGS.len() as u64;
        let tag = ROLLING_TAGS[(count % tags) as usize];
        match self.seeder.push_image("shop/rolling", tag, &rolling_spec(count / tags + 1)).await {
            Ok(_) => self.repushes += 1,
            Err(error) => self.repush_failures.push(format!("{tag}: {error:#}")),
        }
    }
}

/// Unix times (seconds) of the registry's 5xx answers, from its access log. distribution 2.8 on
/// the filesystem driver answers a read of a tag that is being re-pushed with a 500 now and then
/// (the tag link is not replaced atomically); pullguard then reports PG504 and backs off 2 s, as
/// documented, so the soak must know when the registry itself failed.
pub fn registry_5xx_times(log: &str) -> Vec<i64> {
    log.lines()
        .filter_map(|line| {
            let (_, rest) = line.split_once(" [")?;
            let (time, rest) = rest.split_once("] \"")?;
            let (_, after_request) = rest.split_once("\" ")?;
            let status: u16 = after_request.split_whitespace().next()?.parse().ok()?;
            (status >= 500).then(|| apache_time(time)).flatten()
        })
        .collect()
}

/// `01/Dec/2026:15:17:40 +0000` as Unix seconds.
fn apache_time(text: &str) -> Option<i64> {
    let parsed = jiff::fmt::strtime::parse("%d/%b/%Y:%H:%M:%S %z", text).ok()?;
    Some(parsed.to_timestamp().ok()?.as_second())
}

/// A certificate rotation: a new leaf published through the volume, and when a new TLS handshake
/// first got it.
#[derive(Clone, Copy, Debug)]
pub struct Rotation {
    pub published: Instant,
    pub served_after: Option<Duration>,
}

pub struct Rotator<'a> {
    volume: &'a mut SecretVolume,
    ca: &'a TestCa,
    reload_interval: Duration,
}

impl<'a> Rotator<'a> {
    pub fn new(volume: &'a mut SecretVolume, ca: &'a TestCa, reload_interval: Duration) -> Rotator<'a> {
        Rotator { volume, ca, reload_interval }
    }

    /// At each offset: a new key pair and leaf from the same CA (the caBundle stays), published by
    /// the `..data` swap; then fresh connections until one is served the new leaf, bounded by
    /// the reload interval plus 10 s. Returns the rotations and the admissions made meanwhile.
    pub async fn run(
        &mut self,
        load: &Load,
        offsets: &[Duration],
        started: Instant,
        end: Instant,
    ) -> Result<(Vec<Rotation>, Vec<Record>)> {
        let (mut rotations, mut records) = (Vec::new(), Vec::new());
        for offset in offsets {
            let at = started + *offset;
            if at >= end {
                break;
            }
            tokio::time::sleep_until(at.into()).await;
            let leaf = self.ca.issue_server_cert(&["localhost", "127.0.0.1"])?;
            let der = pem_to_der(&leaf.cert_pem)?;
            self.volume.publish(&leaf.cert_pem, &leaf.key_pem)?;
            let published = Instant::now();
            let give_up = published + self.reload_interval + Duration::from_secs(10);
            let mut served_after = None;
            while served_after.is_none() && Instant::now() < give_up {
                let uid = format!("soak-rotation-{}-{}", self.volume.version(), records.len());
                let record = load.fresh(&uid, records.len() as u64).await;
                let served = matches!(&record.result, Ok(a) if a.peer_certificate.as_deref() == Some(&der));
                records.push(record);
                if served {
                    served_after = Some(published.elapsed());
                } else {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
            rotations.push(Rotation { published, served_after });
        }
        Ok((rotations, records))
    }
}

/// The DER of the first certificate of a PEM text.
fn pem_to_der(pem: &str) -> Result<Vec<u8>> {
    let body: String = pem
        .lines()
        .skip_while(|line| !line.starts_with("-----BEGIN CERTIFICATE-----"))
        .skip(1)
        .take_while(|line| !line.starts_with("-----END"))
        .collect();
    if body.is_empty() {
        return Err(anyhow!("no certificate in the PEM text"));
    }
    Ok(base64::engine::general_purpose::STANDARD.decode(body.trim())?)
}

/// One look at the server through `/proc`.
#[derive(Clone, Copy, Debug)]
pub struct Sample {
    /// From the start of the soak phase.
    pub at: Duration,
    pub rss_kib: u64,
    /// CPU time the server used so far.
    pub cpu_seconds: f64,
    /// The machine's 1-minute load average: other work on a shared machine shows here.
    pub load: f64,
}

/// The server's RSS and CPU time every `every` from the start of the soak phase, and at its end.
pub struct Sampler {
    pid: u32,
    every: Duration,
}

impl Sampler {
    pub fn new(pid: u32, every: Duration) -> Sampler {
        Sampler { pid, every }
    }

    /// Stops early if the process is gone (its exit status tells why).
    pub async fn run(&self, started: Instant, end: Instant) -> Vec<Sample> {
        let mut samples = Vec::new();
        let mut at = started;
        loop {
            tokio::time::sleep_until(at.into()).await;
            match (rss_kib(self.pid), cpu_time(self.pid).map(|cpu| cpu.as_secs_f64())) {
                (Ok(rss_kib), Ok(cpu_seconds)) => samples.push(Sample {
                    at: at.duration_since(started),
                    rss_kib,
                    cpu_seconds,
                    load: server::load_average(),
                }),
                _ => return samples,
            }
            if at >= end {
                return samples;
            }
            at = (at + self.every).min(end);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans_fit_their_duration() {
        let five = Plan::for_seconds(300);
        let secs = |list: &[Duration]| list.iter().map(Duration::as_secs).collect::<Vec<_>>();
        assert_eq!(secs(&five.outages), [10, 70, 130, 190, 250]);
        assert_eq!(secs(&five.rotations), [10, 55, 100, 145, 190, 235, 280]);
        let one = Plan::for_seconds(60);
        assert_eq!(secs(&one.outages), [10]);
        assert_eq!(secs(&one.rotations), [10, 30, 50]);
        assert!(!Plan::for_seconds(45).outages.is_empty());
    }

    #[test]
    fn registry_errors_are_found_with_their_time() {
        let log = "127.0.0.1 - - [01/Dec/2026:15:17:40 +0000] \"HEAD /v2/a/manifests/x HTTP/1.1\" 500 70 \"\" \"ua\"\n\
                   127.0.0.1 - - [01/Dec/2026:15:17:41 +0000] \"HEAD /v2/a/manifests/x HTTP/1.1\" 200 70 \"\" \"ua\"\n\
                   time=\"2026-12-01T15:17:40Z\" level=error msg=\"response completed with error\"\n";
        assert_eq!(registry_5xx_times(log), [1_796_138_260]);
        assert_eq!(apache_time("01/Jan/1970:00:00:00 +0000"), Some(0));
        assert_eq!(apache_time("01/Jan/1970:01:00:00 +0100"), Some(0));
        assert_eq!(apache_time("29/Feb/2024:12:00:00 +0000"), Some(1_709_208_000));
        assert_eq!(apache_time("garbage"), None);
    }

    #[test]
    fn pem_bodies_decode() {
        let ca = TestCa::new("t").unwrap();
        let der = pem_to_der(&ca.ca_pem).unwrap();
        assert_eq!(der[0], 0x30, "a DER SEQUENCE");
        assert!(pem_to_der("nothing").is_err());
    }
}
