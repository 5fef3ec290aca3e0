//! The HTTP load generator: pre-built realistic bodies sent over N keep-alive connections, either flat out or
//! paced to a target event rate, for a bounded time and request count.
//!
//! In paced mode latency is measured from when a request was *due*, not when it was sent, so a server that falls
//! behind shows up in the percentiles instead of silently slowing the generator (coordinated omission).

use std::collections::BTreeMap;
use std::io::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use hdrhistogram::Histogram;
use serde::Serialize;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::events::{EventGen, now_ms};
use crate::stats::{self, Latency};

/// What to send, where, and for how long.
#[derive(Debug, Clone)]
pub struct LoadConfig {
    /// Full ingest URL, e.g. `http://127.0.0.1:8080/v1/streams/events/events`.
    pub url: String,
    /// Ingestion key (sent as a bearer token).
    pub key: String,
    /// Concurrent connections (one request in flight on each).
    pub connections: usize,
    /// Events per request.
    pub batch: usize,
    /// Target events per second; `None` sends as fast as responses come back.
    pub rate: Option<f64>,
    /// Stop sending after this long.
    pub duration: Duration,
    /// Stop after this many requests.
    pub max_requests: u64,
    /// Distinct bodies generated up front and cycled through.
    pub bodies: usize,
    /// Seed of the event generator.
    pub seed: u64,
    /// Print a progress line to stderr every second.
    pub progress: bool,
    /// Per-request timeout.
    pub timeout: Duration,
    /// What the bodies are: the native route's event arrays, or Segment `/v1/batch` bodies.
    pub format: BodyFormat,
}

/// The shape of the request bodies a run sends.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum BodyFormat {
    /// `POST /v1/streams/{stream}/events`: one event object or an array of them.
    #[default]
    Native,
    /// `POST /v1/batch`: `{"batch": [track messages], "sentAt": …}`.
    Segment,
}

impl Default for LoadConfig {
    fn default() -> Self {
        Self {
            url: "http://127.0.0.1:8080/v1/streams/events/events".into(),
            key: "dev-key".into(),
            connections: 8,
            batch: 100,
            rate: None,
            duration: Duration::from_secs(10),
            max_requests: 10_000_000,
            bodies: 64,
            seed: 1,
            progress: true,
            timeout: Duration::from_secs(20),
            format: BodyFormat::Native,
        }
    }
}

/// Sent for each accepted request when the caller asks for acknowledgements: the first event id and when the 202
/// arrived, for freshness probes.
#[derive(Debug, Clone)]
pub struct Ack {
    /// First event id of the accepted batch, as the server answered it.
    pub event_id: String,
    /// When the 202 was read.
    pub at: Instant,
}

/// What a run did.
#[derive(Debug, Clone, Serialize)]
pub struct LoadReport {
    /// Wall time from the first request to the last response.
    pub elapsed_s: f64,
    /// Requests completed (any outcome).
    pub requests: u64,
    /// Events in requests answered 2xx.
    pub events_accepted: u64,
    /// Events in every completed request.
    pub events_sent: u64,
    /// Accepted events per second.
    pub accepted_per_s: f64,
    /// Offered events per second (every completed request).
    pub offered_per_s: f64,
    /// Counts by HTTP status, or `error:<kind>` for requests without a response.
    pub statuses: BTreeMap<String, u64>,
    /// Latency of 2xx answers.
    pub ack_latency: Latency,
    /// Latency of every answer.
    pub all_latency: Latency,
}

impl std::fmt::Display for LoadReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "{} requests in {:.1} s: {:.0} events/s accepted, {:.0} events/s offered",
            self.requests, self.elapsed_s, self.accepted_per_s, self.offered_per_s
        )?;
        let statuses: Vec<String> = self
            .statuses
            .iter()
            .map(|(k, v)| format!("{k}: {v}"))
            .collect();
        writeln!(f, "statuses: {}", statuses.join(", "))?;
        writeln!(f, "2xx latency: {}", self.ack_latency)?;
        write!(f, "all latency: {}", self.all_latency)
    }
}

#[derive(Default)]
struct Counters {
    requests: AtomicU64,
    ok_events: AtomicU64,
    not_ok: AtomicU64,
}

struct Shared {
    cfg: LoadConfig,
    client: reqwest::Client,
    bodies: Vec<Bytes>,
    next: AtomicU64,
    start: Instant,
    deadline: Instant,
    counters: Counters,
    /// (2xx latency, all latency, statuses); also drained each second for the progress line.
    totals: Mutex<Totals>,
    interval: Mutex<Histogram<u64>>,
    acks: Option<mpsc::Sender<Ack>>,
}

struct Totals {
    ok: Histogram<u64>,
    all: Histogram<u64>,
    statuses: BTreeMap<String, u64>,
    last_done: Instant,
}

/// Generates `n` distinct request bodies of `batch` events each.
pub fn make_bodies(n: usize, batch: usize, seed: u64) -> Vec<Bytes> {
    make_bodies_as(BodyFormat::Native, n, batch, seed)
}

/// `n` distinct request bodies of `batch` events each, in `format`.
pub fn make_bodies_as(format: BodyFormat, n: usize, batch: usize, seed: u64) -> Vec<Bytes> {
    let mut g = EventGen::new(seed);
    let now = now_ms();
    (0..n.max(1))
        .map(|_| match format {
            BodyFormat::Native => g.body(batch, now),
            BodyFormat::Segment => g.segment_body(batch, now),
        })
        .collect()
}

/// Runs one load test; `acks`, when given, receives one [`Ack`] per accepted request (dropped when full).
pub async fn run(cfg: LoadConfig, acks: Option<mpsc::Sender<Ack>>) -> anyhow::Result<LoadReport> {
    anyhow::ensure!(
        cfg.connections > 0 && cfg.batch > 0,
        "connections and batch must be positive"
    );
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(cfg.connections)
        .tcp_nodelay(true)
        .timeout(cfg.timeout)
        .no_proxy()
        .build()?;
    let bodies = make_bodies_as(cfg.format, cfg.bodies, cfg.batch, cfg.seed);
    let start = Instant::now();
    let shared = Arc::new(Shared {
        deadline: start + cfg.duration,
        client,
        bodies,
        next: AtomicU64::new(0),
        start,
        counters: Counters::default(),
        totals: Mutex::new(Totals {
            ok: stats::histogram(),
            all: stats::histogram(),
            statuses: BTreeMap::new(),
            last_done: start,
        }),
        interval: Mutex::new(stats::histogram()),
        acks,
        cfg,
    });
    let progress = shared
        .cfg
        .progress
        .then(|| tokio::spawn(progress(shared.clone())));
    let workers: Vec<_> = (0..shared.cfg.connections)
        .map(|_| tokio::spawn(worker(shared.clone())))
        .collect();
    for w in workers {
        w.await?;
    }
    if let Some(p) = progress {
        p.abort();
    }
    let totals = shared
        .totals
        .lock()
        .map_err(|_| anyhow::anyhow!("a worker panicked"))?;
    let elapsed = totals
        .last_done
        .saturating_duration_since(shared.start)
        .as_secs_f64()
        .max(1e-9);
    let c = &shared.counters;
    let requests = c.requests.load(Ordering::Relaxed);
    let ok_events = c.ok_events.load(Ordering::Relaxed);
    let sent = requests * shared.cfg.batch as u64;
    Ok(LoadReport {
        elapsed_s: elapsed,
        requests,
        events_accepted: ok_events,
        events_sent: sent,
        accepted_per_s: ok_events as f64 / elapsed,
        offered_per_s: sent as f64 / elapsed,
        statuses: totals.statuses.clone(),
        ack_latency: Latency::of(&totals.ok),
        all_latency: Latency::of(&totals.all),
    })
}

async fn worker(s: Arc<Shared>) {
    let interval = s
        .cfg
        .rate
        .filter(|r| *r > 0.0)
        .map(|r| Duration::from_secs_f64(s.cfg.batch as f64 / r));
    loop {
        let i = s.next.fetch_add(1, Ordering::Relaxed);
        if i >= s.cfg.max_requests {
            return;
        }
        let due = match interval {
            Some(every) => {
                let due = s.start + every.mul_f64(i as f64);
                if due >= s.deadline {
                    return;
                }
                tokio::time::sleep_until(due).await;
                // Requests a slow server left overdue are not sent after the end: the run stays bounded.
                if Instant::now() >= s.deadline {
                    return;
                }
                due
            }
            None => {
                let now = Instant::now();
                if now >= s.deadline {
                    return;
                }
                now
            }
        };
        let body = s.bodies[(i as usize) % s.bodies.len()].clone();
        let result = s
            .client
            .post(&s.cfg.url)
            .bearer_auth(&s.cfg.key)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body)
            .send()
            .await;
        let (status, ok, text) = match result {
            Ok(resp) => {
                let status = resp.status();
                // Read the whole body so the connection is reused.
                let text = resp.bytes().await.ok();
                (status.as_u16().to_string(), status.is_success(), text)
            }
            Err(e) => (error_kind(&e), false, None),
        };
        let done = Instant::now();
        let latency = done.saturating_duration_since(due);
        s.counters.requests.fetch_add(1, Ordering::Relaxed);
        if ok {
            s.counters
                .ok_events
                .fetch_add(s.cfg.batch as u64, Ordering::Relaxed);
            if let (Some(tx), Some(text)) = (&s.acks, text)
                && let Some(event_id) = first_event_id(&text)
            {
                let _ = tx.try_send(Ack { event_id, at: done });
            }
        } else {
            s.counters.not_ok.fetch_add(1, Ordering::Relaxed);
        }
        if let Ok(mut t) = s.totals.lock() {
            stats::record(&mut t.all, latency);
            if ok {
                stats::record(&mut t.ok, latency);
            }
            *t.statuses.entry(status).or_default() += 1;
            if done > t.last_done {
                t.last_done = done;
            }
        }
        if s.cfg.progress
            && let Ok(mut h) = s.interval.lock()
        {
            stats::record(&mut h, latency);
        }
    }
}

fn error_kind(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timeout"
    } else if e.is_connect() {
        "connect"
    } else if e.is_body() || e.is_decode() {
        "body"
    } else {
        "request"
    };
    format!("error:{kind}")
}

fn first_event_id(body: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Accepted {
        event_ids: Vec<String>,
    }
    serde_json::from_slice::<Accepted>(body)
        .ok()?
        .event_ids
        .into_iter()
        .next()
}

async fn progress(s: Arc<Shared>) {
    let mut tick =
        tokio::time::interval_at(s.start + Duration::from_secs(1), Duration::from_secs(1));
    let mut last_events = 0u64;
    loop {
        tick.tick().await;
        let events = s.counters.ok_events.load(Ordering::Relaxed);
        let requests = s.counters.requests.load(Ordering::Relaxed);
        let not_ok = s.counters.not_ok.load(Ordering::Relaxed);
        let p99 = match s.interval.lock() {
            Ok(mut h) => {
                let l = Latency::of(&h);
                h.reset();
                l.p99_ms
            }
            Err(_) => 0.0,
        };
        let secs = s.start.elapsed().as_secs();
        let mut err = std::io::stderr().lock();
        let _ = writeln!(
            err,
            "[{secs:>4}s] {:>9} events/s  requests {requests:>9}  accepted {events:>11}  not-2xx {not_ok:>7}  p99 {p99:>8.1} ms",
            events - last_events
        );
        last_events = events;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_event_id_reads_the_202_body() {
        let body = br#"{"accepted":2,"event_ids":["a","b"]}"#;
        assert_eq!(first_event_id(body).as_deref(), Some("a"));
        assert_eq!(first_event_id(b"{}"), None);
    }

    #[test]
    fn bodies_hold_the_batch() {
        let bodies = make_bodies(3, 10, 5);
        assert_eq!(bodies.len(), 3);
        let v: serde_json::Value = serde_json::from_slice(&bodies[0]).expect("json");
        assert_eq!(v.as_array().map(Vec::len), Some(10));
    }
}
