//! The `_schemas` topic: a transactional acks=all producer for writes, and the start-up replay that rebuilds
//! the index by reading the topic from the beginning past a marker record written at start.
//!
//! One writer per topic, enforced: the producer's `transactional.id` is fixed by the topic, so a second instance
//! starting on the same topic fences the first (Kafka refuses the first one's next commit) before it replays the
//! log, and its replay then includes everything the first one committed. A fenced instance refuses every write
//! and reports not ready, so two instances can never mint the same id for different schemas.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use futures::FutureExt;
use futures::future::BoxFuture;
use rdkafka::consumer::{BaseConsumer, Consumer, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};
use sluice_runtime::kafka::{KafkaSettings, TopicSpec, ensure_topics};

use super::Log;
use crate::index::Index;
use crate::metrics::Metrics;
use crate::records::Record;

/// The registry's only partition: one partition keeps every record in one total order.
const PARTITION: i32 = 0;
/// Replay gives up when the broker sends nothing for this long before the marker arrives.
const REPLAY_IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a metadata request may take.
const METADATA_TIMEOUT: Duration = Duration::from_secs(10);

/// Writes records to the registry topic.
pub struct KafkaLog {
    producer: FutureProducer,
    topic: String,
    timeout: Duration,
    /// One transaction at a time (the marker at replay and the API's writes).
    writing: tokio::sync::Mutex<Transactions>,
    /// Set once another instance took the topic over: shared with the readiness check.
    fenced: Arc<AtomicBool>,
}

/// Whether this producer's transactions were initialised (once, at the first write: that is what fences an
/// older instance).
#[derive(Default)]
struct Transactions {
    ready: bool,
}

impl KafkaLog {
    /// A producer for `topic` that waits at most `timeout` for each acknowledgement.
    pub fn new(settings: &KafkaSettings, topic: &str, timeout: Duration) -> Result<Self, String> {
        let producer: FutureProducer = settings
            .client_config()
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("transactional.id", format!("sluice-registry-{topic}"))
            // Registry writes are rare and a client waits on each: send at once.
            .set("linger.ms", "0")
            .set("message.timeout.ms", timeout.as_millis().to_string())
            .create()
            .map_err(|e| format!("creating the Kafka producer: {e}"))?;
        Ok(Self {
            producer,
            topic: topic.to_owned(),
            timeout,
            writing: tokio::sync::Mutex::new(Transactions::default()),
            fenced: Arc::new(AtomicBool::new(false)),
        })
    }

    /// Set once another registry instance took the topic over.
    pub fn fenced(&self) -> Arc<AtomicBool> {
        self.fenced.clone()
    }

    /// Appends `record` in a transaction of its own and returns its offset once committed.
    async fn send(&self, record: &Record) -> Result<i64, String> {
        let mut tx = self.writing.lock().await;
        if self.fenced.load(Ordering::SeqCst) {
            return Err(FENCED.to_owned());
        }
        if !tx.ready {
            let (producer, timeout) = (self.producer.clone(), self.timeout);
            self.blocking("starting transactions on", move || {
                producer.init_transactions(timeout)
            })
            .await?;
            tx.ready = true;
        }
        self.producer
            .begin_transaction()
            .map_err(|e| self.failed("beginning a transaction", e))?;
        let (key, value) = record.encode();
        let mut out = FutureRecord::<Vec<u8>, Vec<u8>>::to(&self.topic)
            .partition(PARTITION)
            .key(&key);
        if let Some(value) = &value {
            out = out.payload(value);
        }
        let offset = match self.producer.send(out, self.timeout).await {
            Ok(delivery) => delivery.offset,
            Err((e, _)) => {
                let error = self.failed("writing", e);
                let (producer, timeout) = (self.producer.clone(), self.timeout);
                let _ = self
                    .blocking("aborting a write to", move || {
                        producer.abort_transaction(timeout)
                    })
                    .await;
                return Err(error);
            }
        };
        let (producer, timeout) = (self.producer.clone(), self.timeout);
        if let Err(error) = self
            .blocking("committing a write to", move || {
                producer.commit_transaction(timeout)
            })
            .await
        {
            // Not committed: aborted, so the next write starts clean (a no-op once fenced).
            let (producer, timeout) = (self.producer.clone(), self.timeout);
            let _ = self
                .blocking("aborting a write to", move || {
                    producer.abort_transaction(timeout)
                })
                .await;
            return Err(error);
        }
        Ok(offset)
    }

    /// Runs a blocking transaction call off the runtime.
    async fn blocking(
        &self,
        what: &str,
        call: impl FnOnce() -> Result<(), KafkaError> + Send + 'static,
    ) -> Result<(), String> {
        match tokio::task::spawn_blocking(call).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(self.failed(what, e)),
            Err(e) => Err(format!("transaction task: {e}")),
        }
    }

    /// Describes `e`, marking this instance fenced when another one took the topic over.
    fn failed(&self, what: &str, e: KafkaError) -> String {
        let fenced = matches!(
            e.rdkafka_error_code(),
            Some(
                RDKafkaErrorCode::Fenced
                    | RDKafkaErrorCode::ProducerFenced
                    | RDKafkaErrorCode::InvalidProducerEpoch
            )
        ) || matches!(&e, KafkaError::Transaction(t) if t.is_fatal());
        if fenced {
            if !self.fenced.swap(true, Ordering::SeqCst) {
                tracing::error!(topic = %self.topic, error = %e, "another registry instance took this topic over: this one refuses writes from now on");
            }
            return FENCED.to_owned();
        }
        format!("{what} {}: {e}", self.topic)
    }
}

/// What a fenced instance answers to every write.
const FENCED: &str =
    "another registry instance writes this topic now: this one is fenced and refuses writes";

impl Log for KafkaLog {
    fn append<'a>(&'a self, record: &'a Record) -> BoxFuture<'a, Result<(), String>> {
        self.send(record).map(|r| r.map(|_| ())).boxed()
    }
}

/// Refuses a topic with several partitions: records would lose their single order and replay would miss some.
async fn check_single_partition(settings: &KafkaSettings, topic: &str) -> Result<(), String> {
    let config = settings.client_config();
    let name = topic.to_owned();
    let partitions = tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = config.create().map_err(|e| e.to_string())?;
        let metadata = consumer
            .fetch_metadata(Some(&name), METADATA_TIMEOUT)
            .map_err(|e| e.to_string())?;
        Ok::<_, String>(
            metadata
                .topics()
                .iter()
                .find(|t| t.name() == name)
                .map_or(0, |t| t.partitions().len()),
        )
    })
    .await
    .map_err(|e| e.to_string())?
    .map_err(|e| format!("reading metadata of {topic}: {e}"))?;
    if partitions != 1 {
        return Err(format!(
            "topic {topic} has {partitions} partitions; the registry needs exactly one"
        ));
    }
    Ok(())
}

/// Creates the topic if needed and reads it from the beginning into a fresh index.
///
/// A `NOOP` marker is written first and the read stops at its offset: that is "the end of the log" even when
/// compaction has left gaps in the offsets, and it proves the broker takes writes before the registry says
/// it is ready.
pub async fn replay(
    settings: &KafkaSettings,
    topic: &str,
    log: &KafkaLog,
    metrics: &Metrics,
) -> Result<Index, String> {
    let spec = TopicSpec {
        name: topic,
        partitions: 1,
        config: vec![("cleanup.policy", "compact")],
    };
    ensure_topics(settings, &[spec])
        .await
        .map_err(|e| format!("creating topic {topic}: {e}"))?;
    check_single_partition(settings, topic).await?;
    let marker = log.send(&Record::Noop).await?;

    let consumer: StreamConsumer = settings
        .client_config()
        // Offsets are never committed: every start reads the whole log.
        .set("group.id", format!("sluice-registry-replay-{topic}"))
        // Only committed writes: an aborted one never minted anything.
        .set("isolation.level", "read_committed")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .create()
        .map_err(|e| format!("creating the Kafka consumer: {e}"))?;
    let mut assignment = TopicPartitionList::new();
    assignment
        .add_partition_offset(topic, PARTITION, Offset::Beginning)
        .map_err(|e| format!("assigning {topic}: {e}"))?;
    consumer
        .assign(&assignment)
        .map_err(|e| format!("assigning {topic}: {e}"))?;

    let started = Instant::now();
    let mut index = Index::default();
    let mut applied = 0u64;
    loop {
        let message = tokio::time::timeout(REPLAY_IDLE_TIMEOUT, consumer.recv())
            .await
            .map_err(|_| {
                format!("no record from {topic} for {REPLAY_IDLE_TIMEOUT:?} before offset {marker}")
            })?
            .map_err(|e| format!("reading {topic}: {e}"))?;
        match Record::decode(message.key(), message.payload()) {
            Ok(Some(record)) => {
                index.apply(&record);
                applied += 1;
            }
            Ok(None) => {}
            Err(e) => {
                // One foreign or damaged record must not keep the registry down; it is counted and logged.
                metrics.replay_skipped.inc();
                tracing::error!(offset = message.offset(), error = %e, "skipping a record while replaying");
            }
        }
        if message.offset() >= marker {
            break;
        }
    }
    metrics.replayed.inc_by(applied);
    tracing::info!(topic, records = applied, schemas = index.schema_count(), elapsed = ?started.elapsed(), "log replayed");
    Ok(index)
}
