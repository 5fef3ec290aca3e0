//! Dead letters as a table: every letter of the streams' DLQ topics lands in ClickHouse too, exactly once, in a
//! consumer group of its own (`dead_letters.group_id`) run beside the ClickHouse consumer, so operators find what
//! broke, since when and for whom with SQL instead of reading a topic nobody watches. The DLQ topics stay the
//! source of truth (`dlq list|inspect|replay` read them); the table is their queryable copy, kept
//! `dead_letters.ttl_days`.
//!
//! Modules in the order a letter travels: `table` (DDL, one row per letter) → `step` (the write step under the
//! shared consume loop).

pub mod step;
pub mod table;

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, StreamConfig};
use crate::consume::{self, Group, Settings};
use crate::error::Error;
use crate::metrics::Metrics;
use crate::sink::clickhouse::ClickHouseSink;
use crate::source::kafka::{KafkaGroup, subscribe};
use step::DeadLetterStep;

/// `[dead_letters]`: the table every dead letter is copied to.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeadLetterSettings {
    /// Copy the dead letters into ClickHouse. Default on.
    #[serde(default = "default_enabled")]
    pub enabled: bool,
    /// The table, in `clickhouse.database` unless qualified. Default `dead_letters`.
    #[serde(default = "default_table")]
    pub table: String,
    /// The copying consumers' group. Default `sluice-dead-letters`.
    #[serde(default = "default_group")]
    pub group_id: String,
    /// Days a row is kept (the TTL, on servers that have TTLs; 0 keeps rows forever). Default 30.
    #[serde(default = "default_ttl_days")]
    pub ttl_days: u32,
}

impl Default for DeadLetterSettings {
    fn default() -> Self {
        Self {
            enabled: default_enabled(),
            table: default_table(),
            group_id: default_group(),
            ttl_days: default_ttl_days(),
        }
    }
}

fn default_enabled() -> bool {
    true
}

fn default_table() -> String {
    "dead_letters".into()
}

fn default_group() -> String {
    "sluice-dead-letters".into()
}

fn default_ttl_days() -> u32 {
    30
}

impl DeadLetterSettings {
    /// The table's qualified name.
    pub fn qualified(&self, database: &str) -> String {
        if self.table.contains('.') {
            self.table.clone()
        } else {
            format!("{database}.{}", self.table)
        }
    }
}

/// The letters (DLQ topic, partition, offset) whose rows match `condition`, a SQL boolean expression over the
/// dead-letter table's columns (`dlq replay --where`): one letter per poison message and group, as `FINAL` shows.
pub async fn select(
    config: &Config,
    condition: &str,
) -> Result<std::collections::HashSet<(String, i32, i64)>, Error> {
    let metrics = Metrics::new(&prometheus::Registry::new())
        .map_err(|e| Error::Config(format!("metrics: {e}")))?;
    let sink = ClickHouseSink::new(&config.clickhouse, metrics);
    let table = config.dead_letters.qualified(&config.clickhouse.database);
    let rows: Vec<(String, i32, i64)> = sink
        .node()
        .await?
        .query(&format!(
            "SELECT dlq_topic, dlq_partition, dlq_offset FROM {table} FINAL WHERE ({condition})"
        ))
        .fetch_all()
        .await?;
    Ok(rows.into_iter().collect())
}

/// Copies the DLQ topics of `config`'s streams into the dead-letter table until `shutdown`; returns at once when
/// it is off. ClickHouse being down is waited out (the letters stay in Kafka, uncommitted).
pub async fn run(
    config: Config,
    sink: ClickHouseSink,
    metrics: Metrics,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    let settings = &config.dead_letters;
    if !settings.enabled || config.streams.is_empty() {
        return Ok(());
    }
    if config.clickhouse.cluster.is_some() {
        tracing::warn!(
            "the dead-letter table is not written on a ClickHouse cluster yet: the DLQ topics hold the letters"
        );
        return Ok(());
    }
    let table = settings.qualified(&config.clickhouse.database);
    let mut backoff = config.retry.backoff();
    loop {
        let created = async {
            let caps = sink.detect_server().await?;
            let node = sink.node().await?;
            node.query(&table::ddl(&table, caps, settings.ttl_days))
                .execute()
                .await?;
            Ok::<(), Error>(())
        }
        .await;
        match created {
            Ok(()) => break,
            Err(e) => {
                let delay = backoff.next_delay();
                metrics.retrying("dead_letters table", backoff.attempts(), delay, &e);
                tokio::select! {
                    () = shutdown.cancelled() => return Ok(()),
                    () = tokio::time::sleep(delay) => {}
                }
            }
        }
    }
    // A member of its own group, reading the DLQ topics as its "streams".
    let mut member = config.clone();
    member.group_id = settings.group_id.clone();
    member.streams = config
        .streams
        .iter()
        .map(|s| StreamConfig {
            topic: s.dlq_topic(),
            ..s.clone()
        })
        .collect();
    // The loop's own figures (lag, pauses, batches) in a registry of their own: in the consumer's they would overwrite
    // its gauges. What an operator needs from here is in the consumer's: retries{what="dead_letters"} and
    // rows_inserted_total{table}.
    let loop_metrics = Metrics::new(&prometheus::Registry::new())
        .map_err(|e| Error::Config(format!("metrics: {e}")))?;
    let (consumer, context) = subscribe(&member, &loop_metrics)?;
    tracing::info!(group = %member.group_id, %table, topics = ?member.streams.iter().map(|s| &s.topic).collect::<Vec<_>>(), "copying dead letters");
    let step = DeadLetterStep::new(sink, table, metrics, member.clone());
    consume::run(
        step,
        Group::new(KafkaGroup { consumer, context }, loop_metrics),
        Settings::new(&member, Arc::new(AtomicBool::new(false)), None),
        shutdown,
    )
    .await;
    Ok(())
}
