//! End-to-end freshness at half load: a fresh producer with a consumer behind it on the same cores. The pipeline's
//! own maximum is measured first (ingest flat out with the consumer beside it: the rate rows land in ClickHouse),
//! since on a shared 2-core box half of the producer's maximum alone is more than producer, consumer and ClickHouse
//! together sustain. Then one probe per accepted request (its first event id and when the 202 arrived) at half that
//! rate, with ClickHouse polled every 50 ms for the probes' rows, so each figure is the time from the 202 to the
//! first query that sees the row (an upper bound). Meanwhile two connections send 10-event requests with
//! `?wait=clickhouse` one after another: their latency is what a client pays to be answered once its events are
//! queryable.

use std::collections::HashMap;
use std::time::Duration;

use sluice_benches::clickhouse::ClickHouse;
use sluice_benches::loadgen::{self, Ack, LoadConfig, LoadReport};
use sluice_benches::report::{Row, Verdict, per_s};
use sluice_benches::services::Service;
use sluice_benches::stats::{self, Latency};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::harness::{Bench, DATABASE};
use crate::say;

impl Bench {
    /// The freshness row at half the co-located pipeline's maximum, judged against p99 ≤ 1 s with every probe seen,
    /// and the row of the `?wait=clickhouse` requests sent meanwhile.
    pub(crate) async fn freshness(&mut self) -> Vec<Row> {
        let what = "End-to-end freshness at half load (202 → row visible)";
        let target = "p99 ≤ 1 s";
        match self.freshness_run().await {
            Ok((lat, missing, waited)) => {
                let verdict = if missing == 0 && lat.count > 0 && lat.p99_ms <= 1000.0 {
                    Verdict::Met
                } else {
                    Verdict::Missed
                };
                let answered = waited.statuses.get("200").copied().unwrap_or(0);
                let wait_row = Row {
                    what:
                        "A `?wait=clickhouse` request at half load (request → 200, rows queryable)"
                            .into(),
                    sluice: format!(
                        "p50 {:.0} ms, p99 {:.0} ms ({answered} of {} answered 200; statuses {:?})",
                        waited.ack_latency.p50_ms,
                        waited.ack_latency.p99_ms,
                        waited.requests,
                        waited.statuses
                    ),
                    limit: "—".into(),
                    ratio: None,
                    target: "every request 200, p99 ≤ 1 s".into(),
                    verdict: if answered > 0
                        && answered == waited.requests
                        && waited.ack_latency.p99_ms <= 1000.0
                    {
                        Verdict::Met
                    } else {
                        Verdict::Missed
                    },
                };
                vec![
                    Row {
                        what: what.into(),
                        sluice: format!(
                            "p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms ({} probes, {missing} never seen)",
                            lat.p50_ms, lat.p99_ms, lat.max_ms, lat.count
                        ),
                        limit: "—".into(),
                        ratio: None,
                        target: target.into(),
                        verdict,
                    },
                    wait_row,
                ]
            }
            Err(e) => vec![Row::failed(what, target, &e)],
        }
    }

    /// Starts a fresh producer and consumer, measures their joint maximum, then probes at half of it.
    async fn freshness_run(&mut self) -> anyhow::Result<(Latency, usize, LoadReport)> {
        let topic = self.name("fresh");
        let table = format!("{DATABASE}.{}", self.name("fresh"));
        // `?wait=clickhouse` waits on the consumer's group, which is the run's own.
        let config = self.args.config_dir.join("producer.toml");
        let group = self.consumer_group(&topic);
        let producer = self
            .start_producer_with(
                &topic,
                &config,
                vec![("SLUICE_WAIT__CLICKHOUSE_GROUP".into(), group)],
            )
            .await?;
        let consumer = match self.start_consumer(&topic, &table).await {
            Ok(c) => c,
            Err(e) => {
                producer.stop(Duration::from_secs(20)).await;
                return Err(e);
            }
        };
        let result = match self.pipeline_max(&producer, &table).await {
            Ok(max) => self.freshness_at(&producer, &table, max / 2.0).await,
            Err(e) => Err(e),
        };
        consumer.stop(Duration::from_secs(20)).await;
        producer.stop(Duration::from_secs(20)).await;
        result
    }

    /// Ingest flat out for `--duration` with the consumer running: rows landed per second (bounded by the events
    /// accepted per second), once every accepted event has landed.
    async fn pipeline_max(&mut self, producer: &Service, table: &str) -> anyhow::Result<f64> {
        say(&format!(
            "freshness: the pipeline flat out for {} s, to find its joint maximum",
            self.args.duration
        ));
        let cfg = LoadConfig {
            progress: false,
            ..self.load(producer, "events", None, self.args.duration)
        };
        let load = loadgen::run(cfg, None).await?;
        let landed = self.ch.count(table).await.unwrap_or(0);
        let landed_per_s = landed as f64 / load.elapsed_s.max(1e-9);
        let max = landed_per_s.min(load.accepted_per_s);
        // The probes must not queue behind this run's backlog.
        let deadline = Instant::now() + Duration::from_secs(120);
        while self.ch.count(table).await.unwrap_or(0) < load.events_accepted {
            anyhow::ensure!(
                Instant::now() < deadline,
                "the flat-out run's {} events did not all land within 120 s",
                load.events_accepted
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        self.notes.push(format!(
            "Freshness: the pipeline flat out (producer, consumer and ClickHouse sharing the cores) accepted {} \
             and landed {} in ClickHouse; half load is half of the lower, {}.",
            per_s(load.accepted_per_s, "events"),
            per_s(landed_per_s, "rows"),
            per_s(max / 2.0, "events")
        ));
        Ok(max)
    }

    /// Sends at `rate` to `producer` and times each request's first event from its 202 to the moment a query
    /// first sees its row in `table` (polled every 50 ms, so figures are upper bounds).
    async fn freshness_at(
        &mut self,
        producer: &Service,
        table: &str,
        rate: f64,
    ) -> anyhow::Result<(Latency, usize, LoadReport)> {
        say(&format!(
            "freshness: {} for {} s, consumer into {table}",
            per_s(rate, "events"),
            self.args.duration
        ));
        let (tx, rx) = mpsc::channel(100_000);
        let cfg = self.load(producer, "events", Some(rate), self.args.duration);
        let settle = Duration::from_secs(30);
        let base = self.load(producer, "events", None, self.args.duration);
        let waiting = LoadConfig {
            url: format!("{}?wait=clickhouse", base.url),
            connections: 2,
            batch: 10,
            progress: false,
            ..base
        };
        let (load, probes, waited) = tokio::join!(
            loadgen::run(cfg, Some(tx)),
            probe_rows(&self.ch, table, rx, settle),
            loadgen::run(waiting, None)
        );
        let load = load?;
        let waited = waited?;
        say(&format!("freshness, ?wait=clickhouse requests:\n{waited}"));
        let (hist, missing) = probes?;
        let lat = Latency::of(&hist);
        say(&format!(
            "freshness load:\n{load}\nfreshness: {lat}, {missing} probes never seen"
        ));
        self.notes.push(format!(
            "Freshness: one probe per accepted request ({} requests at {}); ack latency meanwhile {}.",
            load.requests,
            per_s(load.accepted_per_s, "events"),
            load.ack_latency
        ));
        Ok((lat, missing, waited))
    }
}

/// Collects acks and polls `table` for their event ids until the sender is done and every probe is seen, or
/// `settle` passes after the sender finished.
async fn probe_rows(
    ch: &ClickHouse,
    table: &str,
    mut acks: mpsc::Receiver<Ack>,
    settle: Duration,
) -> anyhow::Result<(hdrhistogram::Histogram<u64>, usize)> {
    let mut hist = stats::histogram();
    let mut pending: HashMap<String, Instant> = HashMap::new();
    let mut sender_done_at: Option<Instant> = None;
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        loop {
            match acks.try_recv() {
                Ok(a) => {
                    pending.insert(a.event_id, a.at);
                }
                Err(mpsc::error::TryRecvError::Empty) => break,
                Err(mpsc::error::TryRecvError::Disconnected) => {
                    sender_done_at.get_or_insert_with(Instant::now);
                    break;
                }
            }
        }
        if let Some(done) = sender_done_at
            && (pending.is_empty() || done.elapsed() >= settle)
        {
            return Ok((hist, pending.len()));
        }
        if pending.is_empty() {
            continue;
        }
        let ids: Vec<&String> = pending.keys().take(5000).collect();
        let list = ids
            .iter()
            .map(|id| format!("'{}'", id.replace('\'', "")))
            .collect::<Vec<_>>()
            .join(",");
        // The UUID column against a set of literals: no per-row string conversion, so polling stays cheap and
        // steals little CPU from the pipeline it measures.
        let sql = format!(
            "SELECT toString(event_id) FROM {table} WHERE event_id IN ({list}) FORMAT TabSeparated"
        );
        let text = match ch.query(&sql).await {
            Ok(t) => t,
            // The consumer creates the table with its first batch.
            Err(e)
                if e.to_string().contains("doesn't exist")
                    || e.to_string().contains("UNKNOWN_TABLE") =>
            {
                continue;
            }
            Err(e) => return Err(e),
        };
        let seen = Instant::now();
        for id in text.lines() {
            if let Some(at) = pending.remove(id.trim()) {
                stats::record(&mut hist, seen.saturating_duration_since(at));
            }
        }
    }
}
