//! The consumer's metrics, one method per operational fact: each logs and counts, so the log line and the metric
//! cannot drift apart.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};

/// Handles on every consumer metric, registered in one (per-instance) registry.
#[derive(Clone)]
pub struct Metrics {
    consumed: IntCounterVec,
    inserted: IntCounterVec,
    dead_lettered: IntCounterVec,
    batch_rows: Histogram,
    insert_seconds: HistogramVec,
    lag: IntGaugeVec,
    retries: IntCounterVec,
    failovers: IntCounterVec,
    paused: IntGauge,
    held_seconds: prometheus::GaugeVec,
    held_messages: IntGauge,
    /// The partitions waiting on a failure, for the dashboard, and why.
    held: Arc<Mutex<Vec<HeldShown>>>,
    commits: IntCounterVec,
    rebalances: IntCounterVec,
    schema_changes: IntCounterVec,
    freshness: Histogram,
    /// The last few dead letters, newest last, for the dashboard.
    recent_letters: Arc<Mutex<VecDeque<RecentLetter>>>,
}

/// Dead letters the dashboard shows.
const RECENT_LETTERS: usize = 20;

/// A partition waiting on a failure, as the dashboard lists it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct HeldShown {
    /// Source topic.
    pub topic: String,
    /// Source partition.
    pub partition: i32,
    /// Its oldest pending offset (the one `dlq skip` would take).
    pub first_offset: i64,
    /// Messages of it held.
    pub messages: usize,
    /// Seconds since its first failed attempt.
    pub waiting_s: f64,
    /// What failed (`clickhouse`, `registry`, `dlq`, …).
    pub reason: String,
    /// The last error.
    pub error: String,
}

/// One dead letter, as the dashboard lists it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RecentLetter {
    /// Error class.
    pub class: String,
    /// Source topic, partition and offset.
    pub topic: String,
    /// Source partition.
    pub partition: i32,
    /// Source offset.
    pub offset: i64,
    /// The error message (truncated).
    pub message: String,
    /// When it was dead-lettered, ms since the epoch.
    pub at_ms: i64,
}

fn counter(
    registry: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> prometheus::Result<IntCounterVec> {
    let c = IntCounterVec::new(Opts::new(name, help), labels)?;
    registry.register(Box::new(c.clone()))?;
    Ok(c)
}

impl Metrics {
    /// Registers every metric in `registry`.
    pub fn new(registry: &Registry) -> prometheus::Result<Self> {
        let batch_rows = Histogram::with_opts(
            HistogramOpts::new("sluice_consumer_batch_rows", "Messages per flushed batch").buckets(
                vec![
                    1.0, 10.0, 100.0, 500.0, 1_000.0, 5_000.0, 10_000.0, 50_000.0,
                ],
            ),
        )?;
        registry.register(Box::new(batch_rows.clone()))?;
        let insert_seconds = HistogramVec::new(
            HistogramOpts::new(
                "sluice_consumer_insert_duration_seconds",
                "Duration of one ClickHouse INSERT",
            )
            .buckets(vec![
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
            ]),
            &["table", "result"],
        )?;
        registry.register(Box::new(insert_seconds.clone()))?;
        let lag = IntGaugeVec::new(
            Opts::new(
                "sluice_consumer_lag_messages",
                "Messages between the consumer's position and the partition end",
            ),
            &["topic", "partition"],
        )?;
        registry.register(Box::new(lag.clone()))?;
        let paused = IntGauge::new(
            "sluice_consumer_paused_partitions",
            "Partitions paused while a failure is retried",
        )?;
        registry.register(Box::new(paused.clone()))?;
        let held_seconds = prometheus::GaugeVec::new(
            Opts::new(
                "sluice_consumer_held_seconds",
                "How long each partition's oldest pending message has waited since its first failed attempt, by \
                 what failed (updated at each retry)",
            ),
            &["topic", "partition", "reason"],
        )?;
        registry.register(Box::new(held_seconds.clone()))?;
        let held_messages = IntGauge::new(
            "sluice_consumer_held_messages",
            "Messages waiting on a failure to clear (their partitions paused)",
        )?;
        registry.register(Box::new(held_messages.clone()))?;
        let freshness = Histogram::with_opts(
            HistogramOpts::new(
                "sluice_consumer_freshness_seconds",
                "Age of the oldest and newest row of each flush when ClickHouse acknowledged it (Kafka timestamp to inserted)",
            )
            .buckets(vec![
                0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0, 3_600.0,
            ]),
        )?;
        registry.register(Box::new(freshness.clone()))?;
        Ok(Self {
            freshness,
            recent_letters: Arc::default(),
            consumed: counter(
                registry,
                "sluice_consumer_messages_consumed_total",
                "Messages read from Kafka",
                &["topic"],
            )?,
            inserted: counter(
                registry,
                "sluice_consumer_rows_inserted_total",
                "Rows inserted into ClickHouse",
                &["table"],
            )?,
            dead_lettered: counter(
                registry,
                "sluice_consumer_dead_lettered_total",
                "Messages acknowledged by the DLQ, by error class",
                &["reason"],
            )?,
            batch_rows,
            insert_seconds,
            lag,
            retries: counter(
                registry,
                "sluice_consumer_retries_total",
                "Transient failures retried, by dependency",
                &["what"],
            )?,
            failovers: counter(
                registry,
                "sluice_consumer_replica_failovers_total",
                "Inserts a ClickHouse replica failed and the next replica of its shard was tried, by shard",
                &["shard"],
            )?,
            paused,
            held_seconds,
            held_messages,
            held: Arc::default(),
            commits: counter(
                registry,
                "sluice_consumer_offset_commits_total",
                "Offset commits, by result",
                &["result"],
            )?,
            rebalances: counter(
                registry,
                "sluice_consumer_rebalances_total",
                "Partitions assigned to or revoked from this member, by kind",
                &["kind"],
            )?,
            schema_changes: counter(
                registry,
                "sluice_consumer_schema_changes_total",
                "Reader schema changes and columns added",
                &["change"],
            )?,
        })
    }

    /// Handles registered in a private registry nobody scrapes (for tools and tests that need a sink).
    pub fn detached() -> Self {
        // Registering fresh metrics in a fresh registry cannot collide; fall back to it regardless.
        Self::new(&Registry::new())
            .unwrap_or_else(|e| unreachable!("fresh registry rejected a metric: {e}"))
    }

    /// A message was read from `topic`.
    pub fn consumed(&self, topic: &str) {
        self.consumed.with_label_values(&[topic]).inc();
    }

    /// The consumed-messages counter of `topic`, for a caller that counts many messages of one topic.
    pub fn consumed_counter(&self, topic: &str) -> prometheus::IntCounter {
        self.consumed.with_label_values(&[topic])
    }

    /// A batch of `messages` is about to be flushed.
    pub fn batch_flushed(&self, messages: usize) {
        self.batch_rows.observe(messages as f64);
    }

    /// `rows` rows reached `table`.
    pub fn rows_inserted(&self, table: &str, rows: usize, took: Duration) {
        tracing::debug!(
            table,
            rows,
            took_ms = took.as_millis() as u64,
            "rows inserted"
        );
        self.inserted
            .with_label_values(&[table])
            .inc_by(rows as u64);
        self.insert_seconds
            .with_label_values(&[table, "ok"])
            .observe(took.as_secs_f64());
    }

    /// An INSERT into `table` failed.
    pub fn insert_failed(&self, table: &str, took: Duration) {
        self.insert_seconds
            .with_label_values(&[table, "error"])
            .observe(took.as_secs_f64());
    }

    /// An insert failed on a replica of `shard` (0-based, in `clickhouse.cluster.shards` order), and the next one is
    /// tried.
    pub fn replica_failover(&self, shard: usize) {
        self.failovers
            .with_label_values(&[&(shard + 1).to_string()])
            .inc();
    }

    /// The DLQ acknowledged a poison message.
    pub fn dead_lettered(
        &self,
        reason: &str,
        topic: &str,
        partition: i32,
        offset: i64,
        message: &str,
    ) {
        tracing::warn!(
            reason,
            topic,
            partition,
            offset,
            message,
            "message dead-lettered"
        );
        self.dead_lettered.with_label_values(&[reason]).inc();
        let mut recent = self
            .recent_letters
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if recent.len() == RECENT_LETTERS {
            recent.pop_front();
        }
        recent.push_back(RecentLetter {
            class: reason.to_owned(),
            topic: topic.to_owned(),
            partition,
            offset,
            message: message.chars().take(300).collect(),
            at_ms: chrono::Utc::now().timestamp_millis(),
        });
    }

    /// The last few dead letters, oldest first.
    pub fn recent_letters(&self) -> Vec<RecentLetter> {
        self.recent_letters
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .cloned()
            .collect()
    }

    /// Rows written `age` after Kafka stamped their messages.
    pub fn fresh(&self, age: Duration) {
        self.freshness.observe(age.as_secs_f64());
    }

    /// A transient failure of `what` is retried after `delay`.
    pub fn retrying(
        &self,
        what: &str,
        attempt: u32,
        delay: Duration,
        error: &dyn std::fmt::Display,
    ) {
        tracing::warn!(what, attempt, delay_ms = delay.as_millis() as u64, %error, "transient failure, retrying");
        self.retries.with_label_values(&[what]).inc();
    }

    /// `n` partitions are paused now.
    pub fn paused_partitions(&self, n: usize) {
        self.paused.set(n as i64);
    }

    /// The partitions now held, after an attempt that failed with `why` (`(label, error)`) or, with `None`,
    /// left the held ones as they were.
    pub fn held_partitions(
        &self,
        held: &[crate::held::HeldPartition],
        why: Option<(&str, &dyn std::fmt::Display)>,
    ) {
        let mut shown = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        if held.is_empty() && shown.is_empty() {
            return;
        }
        let before: HashMap<(String, i32), (String, String)> = shown
            .drain(..)
            .map(|h| ((h.topic, h.partition), (h.reason, h.error)))
            .collect();
        let why = why.map(|(label, e)| {
            (
                label.to_owned(),
                e.to_string().chars().take(300).collect::<String>(),
            )
        });
        let mut total = 0;
        for h in held {
            let tp = &h.partition;
            let key = (tp.topic.clone(), tp.partition);
            let (reason, error) = why
                .clone()
                .or_else(|| before.get(&key).cloned())
                .unwrap_or_else(|| ("pending".into(), String::new()));
            if let Some((old, _)) = before.get(&key)
                && *old != reason
            {
                let _ = self.held_seconds.remove_label_values(&[
                    &tp.topic,
                    &tp.partition.to_string(),
                    old,
                ]);
            }
            self.held_seconds
                .with_label_values(&[&tp.topic, &tp.partition.to_string(), &reason])
                .set(h.waiting.as_secs_f64());
            total += h.messages;
            shown.push(HeldShown {
                topic: tp.topic.clone(),
                partition: tp.partition,
                first_offset: h.first_offset,
                messages: h.messages,
                waiting_s: h.waiting.as_secs_f64(),
                reason,
                error,
            });
        }
        for ((topic, partition), (reason, _)) in &before {
            if !shown
                .iter()
                .any(|h| &h.topic == topic && h.partition == *partition)
            {
                let _ =
                    self.held_seconds
                        .remove_label_values(&[topic, &partition.to_string(), reason]);
            }
        }
        self.held_messages.set(total as i64);
    }

    /// The partitions waiting on a failure, and why.
    pub fn held_shown(&self) -> Vec<HeldShown> {
        self.held
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Offsets were committed (or not).
    pub fn offsets_committed(&self, partitions: usize, result: Result<(), &dyn std::fmt::Display>) {
        match result {
            Ok(()) => {
                tracing::debug!(partitions, "offsets committed");
                self.commits.with_label_values(&["ok"]).inc();
            }
            Err(e) => {
                tracing::warn!(partitions, error = %e, "offset commit failed; will retry with the next commit");
                self.commits.with_label_values(&["error"]).inc();
            }
        }
    }

    /// `n` partitions were assigned (`kind` = `assign`) or revoked (`revoke`).
    pub fn rebalanced(&self, kind: &str, n: usize) {
        self.rebalances.with_label_values(&[kind]).inc_by(n as u64);
    }

    /// The reader schema or the table's columns changed.
    pub fn schema_changed(&self, change: &str, detail: &str) {
        tracing::info!(change, detail, "schema change");
        self.schema_changes.with_label_values(&[change]).inc();
    }

    /// librdkafka reported the lag of a partition.
    pub fn lag(&self, topic: &str, partition: i32, lag: i64) {
        self.lag
            .with_label_values(&[topic, &partition.to_string()])
            .set(lag.max(0));
    }

    /// A partition is no longer ours; drop its lag series.
    pub fn forget_partition(&self, topic: &str, partition: i32) {
        let _ = self
            .lag
            .remove_label_values(&[topic, &partition.to_string()]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_conventions() {
        let registry = Registry::new();
        let m = Metrics::new(&registry).expect("registers");
        m.consumed("t");
        m.rows_inserted("db.t", 3, Duration::from_millis(5));
        m.dead_lettered("undecodable", "t", 0, 1, "bad");
        m.lag("t", 0, 7);
        let names: Vec<String> = registry
            .gather()
            .iter()
            .map(|f| f.name().to_owned())
            .collect();
        for n in &names {
            assert!(n.starts_with("sluice_consumer_"), "{n}");
        }
        assert!(
            names
                .iter()
                .any(|n| n == "sluice_consumer_rows_inserted_total")
        );
        assert!(
            names
                .iter()
                .any(|n| n == "sluice_consumer_insert_duration_seconds")
        );
    }
}
