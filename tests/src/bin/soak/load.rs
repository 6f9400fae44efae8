//! The load: HTTP/2 keep-alive connections opened beforehand (as the API server keeps them), a
//! closed loop to find the maximum throughput, an open loop at a fixed rate, and requests on fresh
//! connections (a TLS handshake each) that see every certificate rotation.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use serde_json::Value;
use tokio::task::JoinSet;

use crate::scenario::{Kind, Scenario};

/// Above the server's 8 s admission deadline: a request that takes longer is a failure anyway.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
/// How long answers are awaited after the last request was sent.
const DRAIN: Duration = Duration::from_secs(15);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// The closed-loop measurement of the maximum throughput.
    Max,
    Soak,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Via {
    KeepAlive,
    /// A new connection, so a new TLS handshake.
    Fresh,
}

/// One admission as the client saw it.
#[derive(Debug)]
pub struct Record {
    pub phase: Phase,
    pub via: Via,
    pub kind: Kind,
    pub sent: Instant,
    pub done: Instant,
    pub result: Result<Answer, String>,
}

impl Record {
    pub fn latency(&self) -> Duration {
        self.done.saturating_duration_since(self.sent)
    }
}

#[derive(Debug, Default)]
pub struct Answer {
    pub status: u16,
    pub uid_matches: bool,
    pub allowed: bool,
    /// Codes of the error and warning findings (from the `findings` audit annotation).
    pub codes: Vec<String>,
    /// `warnings` lines (kubectl `Warning:`).
    pub warnings: usize,
    /// The first of them, to explain an unexpected answer.
    pub first_warning: Option<String>,
    /// The server's leaf certificate (DER), on fresh connections only.
    pub peer_certificate: Option<Vec<u8>>,
}

impl Answer {
    fn read(status: u16, body: &[u8], uid: &str, peer_certificate: Option<Vec<u8>>) -> Result<Answer> {
        let mut answer = Answer { status, peer_certificate, ..Answer::default() };
        if status != 200 {
            return Ok(answer);
        }
        let review: Value = serde_json::from_slice(body).context("the answer is not JSON")?;
        let response = review.get("response").context("the answer has no response")?;
        answer.uid_matches = response.get("uid").and_then(Value::as_str) == Some(uid);
        answer.allowed = response.get("allowed").and_then(Value::as_bool).context("no response.allowed")?;
        let warnings = response.get("warnings").and_then(Value::as_array);
        answer.warnings = warnings.map_or(0, Vec::len);
        answer.first_warning = warnings
            .and_then(|lines| lines.first())
            .and_then(Value::as_str)
            .map(|line| line.chars().take(200).collect());
        if let Some(findings) = response.pointer("/auditAnnotations/findings").and_then(Value::as_str) {
            let findings: Vec<Value> =
                serde_json::from_str(findings).context("the findings annotation is not JSON")?;
            answer.codes = findings
                .iter()
                .filter(|finding| finding.get("severity").and_then(Value::as_str) != Some("info"))
                .filter_map(|finding| finding.get("code").and_then(Value::as_str).map(str::to_owned))
                .collect();
        }
        Ok(answer)
    }
}

pub struct Load {
    url: Arc<str>,
    ca_pem: String,
    clients: Vec<reqwest::Client>,
    scenario: Arc<Scenario>,
}

pub struct MaxThroughput {
    /// Answers per second in the measured part.
    pub rate: f64,
    pub records: Vec<Record>,
}

pub struct OpenLoop {
    pub scheduled: u64,
    /// Not sent because the in-flight cap was reached: the server had fallen behind.
    pub not_sent: u64,
    /// Sent but not answered when the drain time ran out.
    pub unanswered: u64,
    /// How late the generator itself started requests (p99, ms).
    pub lag_p99_ms: f64,
    pub in_flight_cap: usize,
    pub records: Vec<Record>,
}

impl Load {
    /// Opens `connections` HTTP/2 connections (one client each) with a first admission apiece.
    pub async fn connect(
        url: &str,
        ca_pem: &str,
        connections: usize,
        scenario: Arc<Scenario>,
    ) -> Result<Load> {
        let mut load = Load { url: url.into(), ca_pem: ca_pem.to_owned(), clients: Vec::new(), scenario };
        for connection in 0..connections.max(1) {
            let client = client(ca_pem, Via::KeepAlive)?;
            let uid = format!("soak-connect-{connection}");
            let (kind, body) = load.scenario.request(0, &uid);
            let record =
                send(client.clone(), load.url.clone(), body, uid, kind, (Phase::Max, Via::KeepAlive)).await;
            match record.result {
                Ok(answer) if answer.status == 200 && answer.uid_matches => {}
                other => bail!("the first admission on connection {connection} failed: {other:?}"),
            }
            load.clients.push(client);
        }
        Ok(load)
    }

    /// Keeps `in_flight` requests going for `warm_up + measure`; the rate counts answers that
    /// arrived in the measured part.
    pub async fn closed_loop(
        &self,
        in_flight: usize,
        warm_up: Duration,
        measure: Duration,
    ) -> Result<MaxThroughput> {
        let counted_from = Instant::now() + warm_up;
        let end = counted_from + measure;
        let next = AtomicU64::new(0);
        let workers = (0..in_flight).map(|worker| {
            let (client, next) = (&self.clients[worker % self.clients.len()], &next);
            async move {
                let mut records = Vec::new();
                while Instant::now() < end {
                    let index = next.fetch_add(1, Ordering::Relaxed);
                    let uid = format!("soak-max-{index:08}");
                    let (kind, body) = self.scenario.request(index, &uid);
                    let tags = (Phase::Max, Via::KeepAlive);
                    records.push(send(client.clone(), self.url.clone(), body, uid, kind, tags).await);
                }
                records
            }
        });
        let records: Vec<Record> = futures::future::join_all(workers).await.into_iter().flatten().collect();
        let answered = records
            .iter()
            .filter(|r| r.done >= counted_from && r.done <= end)
            .filter(|r| matches!(&r.result, Ok(answer) if answer.status == 200))
            .count();
        Ok(MaxThroughput { rate: answered as f64 / measure.as_secs_f64(), records })
    }

    /// Starts request `i` at `started + i / rate`, whether or not earlier ones were answered, over
    /// the keep-alive connections in turn, until `end`. At most half a second's worth of requests
    /// (64 at least) are in flight; a request due beyond that is counted as not sent.
    pub async fn open_loop(&self, rate: f64, started: Instant, end: Instant) -> Result<OpenLoop> {
        let interval = Duration::from_secs_f64(1.0 / rate);
        let in_flight_cap = ((rate / 2.0).ceil() as usize).max(64);
        let mut tasks = JoinSet::new();
        let mut out = OpenLoop {
            scheduled: 0,
            not_sent: 0,
            unanswered: 0,
            lag_p99_ms: 0.0,
            in_flight_cap,
            records: Vec::with_capacity((rate * end.duration_since(started).as_secs_f64()) as usize + 16),
        };
        let mut lags = Vec::new();
        for index in 0u64.. {
            let due = started + interval.mul_f64(index as f64);
            if due >= end {
                break;
            }
            tokio::time::sleep_until(due.into()).await;
            out.scheduled += 1;
            while let Some(joined) = tasks.try_join_next() {
                out.records.push(joined.context("a request task failed")?);
            }
            if tasks.len() >= in_flight_cap {
                out.not_sent += 1;
                continue;
            }
            lags.push(due.elapsed().as_secs_f64() * 1000.0);
            let uid = format!("soak-{index:09}");
            let (kind, body) = self.scenario.request(index, &uid);
            let client = self.clients[(index % self.clients.len() as u64) as usize].clone();
            tasks.spawn(send(client, self.url.clone(), body, uid, kind, (Phase::Soak, Via::KeepAlive)));
        }
        let drained_by = tokio::time::Instant::now() + DRAIN;
        loop {
            match tokio::time::timeout_at(drained_by, tasks.join_next()).await {
                Ok(Some(joined)) => out.records.push(joined.context("a request task failed")?),
                Ok(None) => break,
                Err(_) => {
                    out.unanswered = tasks.len() as u64;
                    tasks.abort_all();
                    break;
                }
            }
        }
        out.lag_p99_ms = pullguard_tests::stats::percentile(&mut lags, 99.0).unwrap_or(0.0);
        Ok(out)
    }

    /// One admission every `every` on a connection of its own, until `end`.
    pub async fn fresh_connections(&self, every: Duration, end: Instant) -> Vec<Record> {
        let mut records = Vec::new();
        let mut index = 0u64;
        while Instant::now() + every < end {
            tokio::time::sleep(every).await;
            index += 1;
            records.push(self.fresh(&format!("soak-fresh-{index:06}"), index).await);
        }
        records
    }

    /// An admission on a new connection, with the certificate the server presented.
    pub async fn fresh(&self, uid: &str, index: u64) -> Record {
        let (kind, body) = self.scenario.request(index, uid);
        let tags = (Phase::Soak, Via::Fresh);
        match client(&self.ca_pem, Via::Fresh) {
            Ok(client) => send(client, self.url.clone(), body, uid.to_owned(), kind, tags).await,
            Err(error) => {
                let now = Instant::now();
                let result = Err(format!("building a client: {error:#}"));
                Record { phase: tags.0, via: tags.1, kind, sent: now, done: now, result }
            }
        }
    }
}

/// Trusts only the soak's CA: an answer proves the served certificate chains to it.
fn client(ca_pem: &str, via: Via) -> Result<reqwest::Client> {
    let mut builder = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(ca_pem.as_bytes())?])
        .http2_prior_knowledge()
        .no_proxy()
        .timeout(REQUEST_TIMEOUT);
    if via == Via::Fresh {
        builder = builder.pool_max_idle_per_host(0).tls_info(true);
    }
    Ok(builder.build()?)
}

async fn send(
    client: reqwest::Client,
    url: Arc<str>,
    body: String,
    uid: String,
    kind: Kind,
    (phase, via): (Phase, Via),
) -> Record {
    let sent = Instant::now();
    let result = exchange(&client, &url, body, &uid).await.map_err(|error| format!("{error:#}"));
    Record { phase, via, kind, sent, done: Instant::now(), result }
}

async fn exchange(client: &reqwest::Client, url: &str, body: String, uid: &str) -> Result<Answer> {
    let response = client.post(url).header("content-type", "application/json").body(body).send().await?;
    let status = response.status().as_u16();
    let peer = response
        .extensions()
        .get::<reqwest::tls::TlsInfo>()
        .and_then(reqwest::tls::TlsInfo::peer_certificate)
        .map(<[u8]>::to_vec);
    let bytes = response.bytes().await?;
    Answer::read(status, &bytes, uid, peer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_read_from_the_review() {
        let findings = r#"[{"code":"PG501","severity":"warning"},{"code":"PG200","severity":"info"}]"#;
        let body = serde_json::json!({"response": {
            "uid": "u1", "allowed": true, "warnings": ["PG501 app: registry unreachable"],
            "auditAnnotations": {"findings": findings}}});
        let answer = Answer::read(200, body.to_string().as_bytes(), "u1", None).unwrap();
        assert!(answer.uid_matches && answer.allowed);
        assert_eq!(answer.codes, ["PG501"]);
        assert_eq!(answer.warnings, 1);
        let other = Answer::read(200, body.to_string().as_bytes(), "u2", None).unwrap();
        assert!(!other.uid_matches);
        assert!(Answer::read(200, b"<html>", "u1", None).is_err());
        assert_eq!(Answer::read(503, b"", "u1", None).unwrap().status, 503);
    }
}
