//! The rdkafka sink: an idempotent producer (acks=all) whose delivery reports decide every response.
//!
//! A request's records share one [`BatchAck`]: each delivery report counts it down and the request wakes once,
//! when the last one is in. A future per record (rdkafka's `FutureProducer`) cost a channel and a poll per event,
//! about 7% of the producer's CPU at its maximum.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::{ClientConfig, ClientContext, Message};
use sluice_runtime::kafka::KafkaSettings;
use tokio::sync::Notify;

use super::{EventSink, OutRecord, Position, SinkError};
use crate::config::ProduceSettings;

/// Writes to Kafka through one shared producer, whose polling thread runs the delivery reports.
#[derive(Clone)]
pub struct KafkaSink {
    producer: Arc<ThreadedProducer<Deliveries>>,
    probe_topic: Option<String>,
}

/// The producer's context: delivery reports count down their request's [`BatchAck`].
pub struct Deliveries;

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = Box<Delivery>;

    fn delivery(&self, result: &DeliveryResult<'_>, d: Box<Delivery>) {
        match result {
            Err((e, _)) => d.ack.fail(classify(e)),
            Ok(m) => d.ack.place(d.index, m.partition(), m.offset()),
        }
        d.ack.done_one();
    }
}

/// A record's request and its place in it. A box per record (one small allocation) is what lets a delivery report
/// say which record it is about, for requests that wait on positions.
pub struct Delivery {
    ack: Arc<BatchAck>,
    index: usize,
}

/// What one request's records have been told so far.
pub struct BatchAck {
    /// Records not yet reported, plus one while the request is still enqueueing.
    outstanding: AtomicUsize,
    first_error: Mutex<Option<SinkError>>,
    all_in: Notify,
    /// Each record's position, by its index in the request, when the request asked for them.
    positions: Option<Mutex<Vec<Position>>>,
}

impl BatchAck {
    fn new(records: usize, positions: bool) -> Self {
        let unknown = Position {
            partition: -1,
            offset: -1,
        };
        Self {
            outstanding: AtomicUsize::new(1),
            first_error: Mutex::new(None),
            all_in: Notify::new(),
            positions: positions.then(|| Mutex::new(vec![unknown; records])),
        }
    }

    fn place(&self, index: usize, partition: i32, offset: i64) {
        if let Some(p) = &self.positions {
            let mut p = p.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(slot) = p.get_mut(index) {
                *slot = Position { partition, offset };
            }
        }
    }

    fn fail(&self, e: SinkError) {
        // A poisoned lock only means another report panicked; the error slot is still usable.
        let mut first = self.first_error.lock().unwrap_or_else(|p| p.into_inner());
        first.get_or_insert(e);
    }

    fn done_one(&self) {
        if self.outstanding.fetch_sub(1, Ordering::AcqRel) == 1 {
            // Stores a permit when nobody waits yet, so the request cannot miss it.
            self.all_in.notify_one();
        }
    }

    fn result(&self) -> Result<Vec<Position>, SinkError> {
        let first = self.first_error.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(e) = first.clone() {
            return Err(e);
        }
        Ok(self
            .positions
            .as_ref()
            .map(|p| std::mem::take(&mut *p.lock().unwrap_or_else(|p| p.into_inner())))
            .unwrap_or_default())
    }
}

/// The librdkafka config the producer runs with: tuning first, pass-through properties over it, and the
/// durability settings last because a 202 means nothing without them.
pub fn producer_config(kafka: &KafkaSettings, produce: &ProduceSettings) -> ClientConfig {
    let mut cfg = ClientConfig::new();
    cfg.set("bootstrap.servers", &kafka.bootstrap_servers)
        .set("compression.type", &produce.compression)
        .set("linger.ms", produce.linger_ms.to_string())
        .set("batch.size", produce.batch_size.to_string())
        .set("message.timeout.ms", produce.message_timeout_ms.to_string())
        .set(
            "queue.buffering.max.messages",
            produce.queue_max_messages.to_string(),
        )
        .set(
            "queue.buffering.max.kbytes",
            produce.queue_max_kbytes.to_string(),
        )
        // Java's default partitioner, so other Kafka clients agree on which partition a key lives in.
        .set("partitioner", "murmur2_random");
    for (k, v) in &kafka.client {
        cfg.set(k, v);
    }
    cfg.set("enable.idempotence", "true").set("acks", "all");
    cfg
}

impl KafkaSink {
    /// Creates the producer; it connects lazily, so a broker that is down now is not an error.
    ///
    /// Readiness asks for `probe_topic`'s metadata only: all-topic metadata is heavy on a big cluster.
    pub fn new(
        kafka: &KafkaSettings,
        produce: &ProduceSettings,
        probe_topic: Option<String>,
    ) -> Result<Self, KafkaError> {
        let producer: ThreadedProducer<Deliveries> =
            producer_config(kafka, produce).create_with_context(Deliveries)?;
        Ok(Self {
            producer: Arc::new(producer),
            probe_topic,
        })
    }
}

fn classify(e: &KafkaError) -> SinkError {
    match e.rdkafka_error_code() {
        Some(RDKafkaErrorCode::QueueFull) => SinkError::QueueFull,
        Some(RDKafkaErrorCode::MessageSizeTooLarge) => SinkError::TooLarge(e.to_string()),
        _ => SinkError::Unavailable(e.to_string()),
    }
}

impl EventSink for KafkaSink {
    fn send_all<'a>(
        &'a self,
        topic: &'a str,
        records: Vec<OutRecord>,
        positions: bool,
    ) -> BoxFuture<'a, Result<Vec<Position>, SinkError>> {
        async move {
            let ack = Arc::new(BatchAck::new(records.len(), positions));
            for (index, r) in records.iter().enumerate() {
                ack.outstanding.fetch_add(1, Ordering::AcqRel);
                let delivery = Box::new(Delivery {
                    ack: ack.clone(),
                    index,
                });
                let record = BaseRecord::with_opaque_to(topic, delivery)
                    .key(&r.key)
                    .payload(&r.payload);
                if let Err((e, _)) = self.producer.send(record) {
                    ack.fail(classify(&e));
                    ack.done_one();
                    break;
                }
            }
            // librdkafka copied the bytes; free ours before the wait.
            drop(records);
            // Wait even after an enqueue failure: what was queued may still be written, and the in-flight
            // accounting must not be released before librdkafka lets go of it.
            ack.done_one();
            ack.all_in.notified().await;
            ack.result()
        }
        .boxed()
    }

    fn check(&self) -> BoxFuture<'_, Result<(), String>> {
        let producer = self.producer.clone();
        let topic = self.probe_topic.clone();
        async move {
            tokio::task::spawn_blocking(move || {
                producer
                    .client()
                    .fetch_metadata(topic.as_deref(), Duration::from_secs(2))
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            })
            .await
            .map_err(|e| e.to_string())?
        }
        .boxed()
    }

    fn flush(&self, timeout: Duration) -> BoxFuture<'_, Result<(), String>> {
        let producer = self.producer.clone();
        async move {
            tokio::task::spawn_blocking(move || producer.flush(timeout).map_err(|e| e.to_string()))
                .await
                .map_err(|e| e.to_string())?
        }
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durability_settings_cannot_be_overridden() {
        let mut kafka = KafkaSettings::default();
        kafka.client.insert("acks".into(), "1".into());
        kafka.client.insert("linger.ms".into(), "50".into());
        let cfg = producer_config(&kafka, &ProduceSettings::default());
        assert_eq!(cfg.get("acks"), Some("all"));
        assert_eq!(cfg.get("enable.idempotence"), Some("true"));
        assert_eq!(cfg.get("linger.ms"), Some("50"));
        assert_eq!(cfg.get("compression.type"), Some("lz4"));
    }
}
