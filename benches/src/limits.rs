//! The physical limits Sluice is compared with: the same Avro payloads produced straight to the broker with
//! rdkafka (same idempotent, acks=all, lz4 settings as the producer), and the same rows bulk-inserted in one HTTP
//! POST into an identical table.

use std::time::Duration;

use anyhow::Context;
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde::Serialize;
use sluice_producer::config::ProduceSettings;
use sluice_runtime::kafka::KafkaSettings;
use tokio::time::Instant;

use sluice_schemas::clickhouse::Capabilities;

use crate::clickhouse::ClickHouse;
use crate::payloads::{ConsumerPath, Encoded};

/// Throughput of one limit run.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Throughput {
    /// Items done.
    pub count: u64,
    /// Seconds taken.
    pub seconds: f64,
}

impl Throughput {
    /// Items per second.
    pub fn per_second(&self) -> f64 {
        self.count as f64 / self.seconds.max(1e-9)
    }
}

/// Produces every payload to `topic` (cycling when `count` exceeds them), as fast as librdkafka takes them, and
/// counts acknowledged messages until all are in or `max_time` passes.
pub async fn raw_produce(
    kafka: &KafkaSettings,
    topic: &str,
    warmup_topic: &str,
    payloads: &[Encoded],
    count: usize,
    max_time: Duration,
) -> anyhow::Result<Throughput> {
    anyhow::ensure!(!payloads.is_empty(), "no payloads");
    let produce = ProduceSettings::default();
    let producer: FutureProducer =
        sluice_producer::sink::kafka::producer_config(kafka, &produce).create()?;
    // Keep below librdkafka's queue bound so QueueFull stays the exception, not the pacing mechanism.
    let window = usize::try_from(produce.queue_max_messages / 2)
        .unwrap_or(100_000)
        .max(1);
    // Connection set-up and the idempotent producer's id handshake are not throughput: pay them before the clock,
    // on another topic so the measured one holds exactly `count` messages.
    let first = &payloads[0];
    producer
        .send(
            FutureRecord::to(warmup_topic)
                .key(&first.key)
                .payload(&first.payload),
            Duration::from_secs(10),
        )
        .await
        .map_err(|(e, _)| anyhow::anyhow!("warm-up message not acknowledged: {e}"))?;
    let start = Instant::now();
    let deadline = start + max_time;
    let mut pending = FuturesUnordered::new();
    let mut sent = 0usize;
    let mut acked = 0u64;
    let mut failed = 0u64;
    let mut first_error = None;
    while (sent < count || !pending.is_empty()) && Instant::now() < deadline {
        while sent < count && pending.len() < window {
            let p = &payloads[sent % payloads.len()];
            match producer.send_result(FutureRecord::to(topic).key(&p.key).payload(&p.payload)) {
                Ok(delivery) => {
                    pending.push(delivery);
                    sent += 1;
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => break,
                Err((e, _)) => return Err(e.into()),
            }
        }
        let wait = tokio::time::timeout_at(deadline, pending.next()).await;
        match wait {
            Err(_) | Ok(None) => {}
            Ok(Some(Ok(Ok(_)))) => acked += 1,
            Ok(Some(Ok(Err((e, _))))) => {
                failed += 1;
                first_error.get_or_insert(e);
            }
            Ok(Some(Err(_))) => failed += 1,
        }
    }
    let seconds = start.elapsed().as_secs_f64();
    if let Some(e) = first_error {
        anyhow::bail!("{failed} of {sent} messages failed, first: {e}");
    }
    Ok(Throughput {
        count: acked,
        seconds,
    })
}

/// Turns payloads into one RowBinary blob, as the consumer's decode step would for a server that accepts `caps`.
pub fn rows_of(payloads: &[Encoded], caps: Capabilities) -> anyhow::Result<Vec<u8>> {
    let path = ConsumerPath::for_server(None, caps)?;
    let mut out = Vec::with_capacity(payloads.len() * 256);
    for p in payloads {
        path.row(&p.payload, &mut out)?;
    }
    Ok(out)
}

/// Creates `table` like the consumer would on a server that accepts `caps` and bulk-inserts `rows` (RowBinary,
/// `count` rows) in one HTTP POST, the way any client loads a file into ClickHouse; only the POST is timed.
pub async fn raw_insert(
    ch: &ClickHouse,
    caps: Capabilities,
    table: &str,
    rows: Vec<u8>,
    count: u64,
) -> anyhow::Result<Throughput> {
    let path = ConsumerPath::for_server(None, caps)?;
    let ddl = path.create_table_sql(table)?;
    ch.query(&ddl)
        .await
        .context("creating the raw-insert table")?;
    let insert = format!(
        "INSERT INTO {table} ({}) FORMAT RowBinary",
        path.insert_columns()
    );
    let start = Instant::now();
    ch.insert(&insert, rows).await.context("bulk insert")?;
    let seconds = start.elapsed().as_secs_f64().max(1e-3);
    Ok(Throughput { count, seconds })
}

/// Reads `topic` from the beginning with a plain rdkafka consumer (fresh group, same broker), counting messages
/// until `expected` arrived or `max_time` passed: how fast the broker hands a pre-filled topic to any client.
pub async fn raw_consume(
    kafka: &KafkaSettings,
    topic: &str,
    group: &str,
    expected: u64,
    max_time: Duration,
) -> anyhow::Result<Throughput> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let mut cfg = kafka.client_config();
    cfg.set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "6000");
    let consumer: BaseConsumer = cfg.create()?;
    consumer.subscribe(&[topic])?;
    // Polling blocks: keep it off the runtime.
    tokio::task::spawn_blocking(move || {
        let deadline = std::time::Instant::now() + max_time;
        let mut first = None;
        let mut count = 0u64;
        while count < expected && std::time::Instant::now() < deadline {
            match consumer.poll(Duration::from_millis(100)) {
                Some(Ok(_)) => {
                    first.get_or_insert_with(std::time::Instant::now);
                    count += 1;
                }
                Some(Err(e)) => return Err(anyhow::anyhow!("consume failed: {e}")),
                None => {}
            }
        }
        let seconds = first.map_or(0.0, |t| t.elapsed().as_secs_f64());
        anyhow::ensure!(count > 0, "nothing consumed within {max_time:?}");
        Ok(Throughput { count, seconds })
    })
    .await?
}

/// Like [`raw_consume`] through rdkafka's async `StreamConsumer::recv`, the way a tokio service reads.
pub async fn raw_consume_stream(
    kafka: &KafkaSettings,
    topic: &str,
    group: &str,
    expected: u64,
    max_time: Duration,
) -> anyhow::Result<Throughput> {
    use rdkafka::consumer::{Consumer, StreamConsumer};
    let mut cfg = kafka.client_config();
    cfg.set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "6000");
    let consumer: StreamConsumer = cfg.create()?;
    consumer.subscribe(&[topic])?;
    let deadline = Instant::now() + max_time;
    let mut first = None;
    let mut count = 0u64;
    while count < expected {
        match tokio::time::timeout_at(deadline, consumer.recv()).await {
            Err(_) => break,
            Ok(Ok(_)) => {
                first.get_or_insert_with(Instant::now);
                count += 1;
            }
            Ok(Err(e)) => anyhow::bail!("consume failed: {e}"),
        }
    }
    let seconds = first.map_or(0.0, |t| t.elapsed().as_secs_f64());
    anyhow::ensure!(count > 0, "nothing consumed within {max_time:?}");
    Ok(Throughput { count, seconds })
}
