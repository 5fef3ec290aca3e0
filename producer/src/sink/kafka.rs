//! The rdkafka sink: an idempotent producer (acks=all) whose delivery reports decide every response.

use std::time::Duration;

use futures::FutureExt;
use futures::future::{BoxFuture, join_all};
use rdkafka::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use sluice_runtime::kafka::KafkaSettings;

use super::{EventSink, OutRecord, SinkError};
use crate::config::ProduceSettings;

/// Writes to Kafka through one shared `FutureProducer`.
#[derive(Clone)]
pub struct KafkaSink {
    producer: FutureProducer,
    probe_topic: Option<String>,
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
        let producer: FutureProducer = producer_config(kafka, produce).create()?;
        Ok(Self {
            producer,
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
    ) -> BoxFuture<'a, Result<(), SinkError>> {
        async move {
            let mut pending = Vec::with_capacity(records.len());
            let mut enqueue_error = None;
            for r in &records {
                match self
                    .producer
                    .send_result(FutureRecord::to(topic).key(&r.key).payload(&r.payload))
                {
                    Ok(delivery) => pending.push(delivery),
                    Err((e, _)) => {
                        enqueue_error = Some(classify(&e));
                        break;
                    }
                }
            }
            // librdkafka copied the bytes; free ours before the wait.
            drop(records);
            // Wait even after an enqueue failure: what was queued may still be written, and the in-flight
            // accounting must not be released before librdkafka lets go of it.
            let mut first_error = enqueue_error;
            for result in join_all(pending).await {
                let err = match result {
                    Ok(Ok(_)) => continue,
                    Ok(Err((e, _))) => classify(&e),
                    Err(_) => SinkError::Unavailable("producer shut down before delivery".into()),
                };
                first_error.get_or_insert(err);
            }
            first_error.map_or(Ok(()), Err)
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
