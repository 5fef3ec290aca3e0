//! The dead-letter queue: poison messages are copied, with their original key, value and headers, to the stream's
//! DLQ topic, with headers that say what went wrong and where the message came from. The source offset counts as
//! done only once this produce is acknowledged.
//!
//! A letter the DLQ producer or topic refuses for its size (a source message near the broker's limit, plus Sluice's
//! headers, is over it) is sent again cut: without the value and the original headers, with the value's size and
//! SHA-256 and a header that says so. Otherwise it would be retried forever and hold its partition.
//!
//! A DLQ topic that no longer exists (deleted, with the broker's auto-create off) is created again, as at start-up,
//! and the letter sent to it. A DLQ the consumer may not write (ACLs) cannot be fixed from here: the letter's
//! message stays pending, holding only its own partition, and the failure shows as `dlq` in the retry metrics and
//! logs until an operator grants the write.

pub mod command;

use std::collections::HashMap;
use std::time::Duration;

use rdkafka::message::{Header, Headers, Message, OwnedHeaders, OwnedMessage};
use rdkafka::producer::{FutureProducer, FutureRecord};
use sha2::Digest as _;

use crate::error::Error;

/// Header names the consumer writes on every dead letter.
pub mod header {
    /// Error class (see [`super::ErrorClass`]).
    pub const CLASS: &str = "sluice.error.class";
    /// Error message.
    pub const MESSAGE: &str = "sluice.error.message";
    /// Topic the message was read from.
    pub const TOPIC: &str = "sluice.source.topic";
    /// Its partition.
    pub const PARTITION: &str = "sluice.source.partition";
    /// Its offset.
    pub const OFFSET: &str = "sluice.source.offset";
    /// Its Kafka timestamp, in milliseconds since the epoch (absent when it had none).
    pub const TIMESTAMP: &str = "sluice.source.timestamp";
    /// The consumer group that gave up on it.
    pub const GROUP: &str = "sluice.consumer.group";
    /// How many times the message has been dead-lettered (1 the first time; replays carry it forward).
    pub const ATTEMPTS: &str = "sluice.attempts";
    /// `true` when the letter was too large to send whole and carries no value or original headers.
    pub const CUT: &str = "sluice.payload.cut";
    /// On a cut letter: the source value's size in bytes.
    pub const SIZE: &str = "sluice.payload.size";
    /// On a cut letter: the source value's SHA-256, lowercase hex.
    pub const SHA256: &str = "sluice.payload.sha256";
    /// Every header the consumer adds; replay strips them all but `ATTEMPTS`.
    pub const ALL: [&str; 11] = [
        CLASS, MESSAGE, TOPIC, PARTITION, OFFSET, TIMESTAMP, GROUP, ATTEMPTS, CUT, SIZE, SHA256,
    ];
}

/// Why a message was dead-lettered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorClass {
    /// Not Confluent-framed Avro, or the Avro body does not decode with its writer schema.
    Undecodable,
    /// The schema id in the frame is not in the registry.
    UnknownSchema,
    /// The writer schema cannot be resolved to the stream's reader schema.
    Incompatible,
    /// A value does not fit its ClickHouse column (e.g. a timestamp before 1970 for `DateTime`).
    Unrepresentable,
    /// ClickHouse refused the row (found by bisecting the rejected batch).
    Rejected,
    /// An operator dead-lettered the message by hand (`sluice-consumer dlq skip`) so its partition could move on.
    Operator,
    /// ClickHouse kept refusing the row on its own with an error it calls transient, while the rows around it
    /// landed, attempt after attempt: the row's own doing, whatever the code says.
    Persistent,
}

impl ErrorClass {
    /// Every class.
    pub const ALL: [ErrorClass; 7] = [
        ErrorClass::Undecodable,
        ErrorClass::UnknownSchema,
        ErrorClass::Incompatible,
        ErrorClass::Unrepresentable,
        ErrorClass::Rejected,
        ErrorClass::Operator,
        ErrorClass::Persistent,
    ];

    /// The header value and metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorClass::Undecodable => "undecodable",
            ErrorClass::UnknownSchema => "unknown_schema",
            ErrorClass::Incompatible => "incompatible",
            ErrorClass::Unrepresentable => "unrepresentable",
            ErrorClass::Rejected => "rejected",
            ErrorClass::Operator => "operator",
            ErrorClass::Persistent => "persistent",
        }
    }

    /// Parses a header value.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_str() == s)
    }
}

/// The value of header `name` on `msg`, as text.
pub fn header_str<'a>(msg: &'a OwnedMessage, name: &str) -> Option<&'a str> {
    let headers = msg.headers()?;
    headers
        .iter()
        .filter(|h| h.key == name)
        .last()
        .and_then(|h| h.value)
        .and_then(|v| std::str::from_utf8(v).ok())
}

/// How many times `msg` was dead-lettered before (carried by replays).
pub fn previous_attempts(msg: &OwnedMessage) -> u32 {
    header_str(msg, header::ATTEMPTS)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// `msg`'s own headers without the ones the consumer adds.
pub fn original_headers(msg: &OwnedMessage) -> OwnedHeaders {
    let mut out = OwnedHeaders::new();
    if let Some(headers) = msg.headers() {
        for h in headers.iter() {
            if !header::ALL.contains(&h.key) {
                out = out.insert(Header {
                    key: h.key,
                    value: h.value,
                });
            }
        }
    }
    out
}

/// What the DLQ copy of a message says about why it is there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Letter {
    /// The error class.
    pub class: ErrorClass,
    /// The error message.
    pub message: String,
}

/// librdkafka properties that only a consumer understands; a producer built from the shared `kafka.client` map
/// drops them instead of warning about each at start-up.
const CONSUMER_ONLY: &[&str] = &[
    "session.timeout.ms",
    "heartbeat.interval.ms",
    "max.poll.interval.ms",
    "auto.offset.reset",
    "enable.auto.commit",
    "enable.auto.offset.store",
    "auto.commit.interval.ms",
    "partition.assignment.strategy",
    "group.id",
    "group.instance.id",
    "fetch.min.bytes",
    "fetch.max.bytes",
    "fetch.wait.max.ms",
    "max.partition.fetch.bytes",
    "queued.min.messages",
    "queued.max.messages.kbytes",
    "isolation.level",
    "enable.partition.eof",
];

/// A producer config from the shared Kafka settings, without consumer-only properties.
pub fn producer_config(settings: &sluice_runtime::kafka::KafkaSettings) -> rdkafka::ClientConfig {
    let mut cfg = settings.client_config();
    for key in CONSUMER_ONLY {
        cfg.remove(key);
    }
    cfg
}

/// Produces dead letters, acks=all and idempotent, so an acknowledged letter is durable.
#[derive(Clone)]
pub struct DlqProducer {
    producer: FutureProducer,
    group: String,
    timeout: Duration,
    kafka: sluice_runtime::kafka::KafkaSettings,
    /// The partitions of each stream's DLQ topic, for creating it again.
    partitions: HashMap<String, i32>,
}

impl DlqProducer {
    /// A producer on `settings`' brokers for the DLQ topics of `streams`, labelling letters with `group`.
    pub fn new(
        settings: &sluice_runtime::kafka::KafkaSettings,
        group: &str,
        streams: &[crate::config::StreamConfig],
    ) -> Result<Self, Error> {
        let producer: FutureProducer = producer_config(settings)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "5")
            .set("message.timeout.ms", "30000")
            // How long a letter waits for a topic missing from the metadata before failing as unknown: the DLQ
            // topics exist from start-up, so a missing one was deleted and is created again sooner this way.
            .set("topic.metadata.propagation.max.ms", "5000")
            .create()?;
        Ok(Self {
            producer,
            group: group.to_owned(),
            timeout: Duration::from_secs(30),
            kafka: settings.clone(),
            partitions: streams
                .iter()
                .map(|s| (s.dlq_topic(), s.partitions))
                .collect(),
        })
    }

    /// Sends `msg`'s copy to `dlq_topic` and waits for the broker's acknowledgement; a copy too large for the
    /// producer or the topic is sent cut (see the module doc).
    pub async fn send(
        &self,
        dlq_topic: &str,
        msg: &OwnedMessage,
        letter: &Letter,
    ) -> Result<(), Error> {
        match self.produce(dlq_topic, msg, letter, false).await {
            Err(e) if too_large(&e) => {
                tracing::warn!(
                    dlq_topic,
                    source_topic = msg.topic(),
                    partition = msg.partition(),
                    offset = msg.offset(),
                    bytes = msg.payload().map_or(0, <[u8]>::len),
                    error = %e,
                    "dead letter too large to send whole; sending it without its value"
                );
                self.produce(dlq_topic, msg, letter, true).await
            }
            Err(e) if unknown_topic(&e) => {
                // Sent on the next attempt if the new topic is not in the metadata yet.
                self.recreate(dlq_topic, &e).await?;
                self.produce(dlq_topic, msg, letter, false).await
            }
            result => result,
        }
    }

    /// Creates `dlq_topic` again after a produce found it missing (`error`); fails with `error` for a topic this
    /// producer does not own, and with the broker's answer if creating it is refused.
    async fn recreate(&self, dlq_topic: &str, error: &Error) -> Result<(), Error> {
        let Some(partitions) = self.partitions.get(dlq_topic) else {
            return Err(Error::Kafka(rdkafka::error::KafkaError::MessageProduction(
                rdkafka::types::RDKafkaErrorCode::UnknownTopicOrPartition,
            )));
        };
        tracing::warn!(dlq_topic, partitions, %error, "the DLQ topic is missing: creating it again");
        sluice_runtime::kafka::ensure_topics(
            &self.kafka,
            &[sluice_runtime::kafka::TopicSpec {
                name: dlq_topic,
                partitions: *partitions,
                config: vec![],
            }],
        )
        .await?;
        Ok(())
    }

    /// One produce of `msg`'s letter, whole or `cut`.
    async fn produce(
        &self,
        dlq_topic: &str,
        msg: &OwnedMessage,
        letter: &Letter,
        cut: bool,
    ) -> Result<(), Error> {
        let partition = msg.partition().to_string();
        let offset = msg.offset().to_string();
        let timestamp = msg.timestamp().to_millis().map(|t| t.to_string());
        let attempts = (previous_attempts(msg) + 1).to_string();
        // Messages are truncated so one huge error cannot exceed the broker's header budget.
        let message: String = letter.message.chars().take(2_000).collect();
        let (size, sha256) = if cut {
            let value = msg.payload().unwrap_or_default();
            let digest = sha2::Sha256::digest(value);
            (Some(value.len().to_string()), Some(hex::encode(digest)))
        } else {
            (None, None)
        };
        let mut headers = if cut {
            OwnedHeaders::new()
        } else {
            original_headers(msg)
        };
        let add = [
            (header::CUT, cut.then_some("true")),
            (header::SIZE, size.as_deref()),
            (header::SHA256, sha256.as_deref()),
            (header::CLASS, Some(letter.class.as_str())),
            (header::MESSAGE, Some(message.as_str())),
            (header::TOPIC, Some(msg.topic())),
            (header::PARTITION, Some(partition.as_str())),
            (header::OFFSET, Some(offset.as_str())),
            (header::TIMESTAMP, timestamp.as_deref()),
            (header::GROUP, Some(self.group.as_str())),
            (header::ATTEMPTS, Some(attempts.as_str())),
        ];
        for (key, value) in add {
            if let Some(v) = value {
                headers = headers.insert(Header {
                    key,
                    value: Some(v),
                });
            }
        }
        let mut record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(dlq_topic).headers(headers);
        if let Some(k) = msg.key() {
            record = record.key(k);
        }
        if let Some(v) = msg.payload().filter(|_| !cut) {
            record = record.payload(v);
        }
        self.producer
            .send(record, self.timeout)
            .await
            .map_err(|(e, _)| Error::Kafka(e))?;
        Ok(())
    }
}

/// Whether the DLQ refused a letter for its size: the producer's `message.max.bytes` (a local error) or the topic's
/// `max.message.bytes` (the broker's answer).
fn too_large(e: &Error) -> bool {
    use rdkafka::error::{KafkaError, RDKafkaErrorCode};
    matches!(
        e,
        Error::Kafka(KafkaError::MessageProduction(
            RDKafkaErrorCode::MessageSizeTooLarge
        ))
    )
}

/// Whether the DLQ topic does not exist (deleted, with auto-create off): librdkafka's local verdict from the
/// metadata, or the broker's.
fn unknown_topic(e: &Error) -> bool {
    use rdkafka::error::{KafkaError, RDKafkaErrorCode};
    matches!(
        e,
        Error::Kafka(KafkaError::MessageProduction(
            RDKafkaErrorCode::UnknownTopic | RDKafkaErrorCode::UnknownTopicOrPartition
        ))
    )
}

/// Whether `msg` is a cut letter: it has no value to replay.
pub fn is_cut(msg: &OwnedMessage) -> bool {
    header_str(msg, header::CUT) == Some("true")
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::Timestamp;

    #[test]
    fn classes_round_trip() {
        for c in ErrorClass::ALL {
            assert_eq!(ErrorClass::parse(c.as_str()), Some(c));
        }
        assert_eq!(ErrorClass::parse("nope"), None);
    }

    #[test]
    fn replayed_headers_keep_attempts_and_drop_the_rest() {
        let headers = OwnedHeaders::new()
            .insert(Header {
                key: "trace",
                value: Some("abc"),
            })
            .insert(Header {
                key: header::CLASS,
                value: Some("rejected"),
            })
            .insert(Header {
                key: header::ATTEMPTS,
                value: Some("2"),
            });
        let msg = OwnedMessage::new(
            Some(vec![1]),
            None,
            "t".into(),
            Timestamp::NotAvailable,
            0,
            0,
            Some(headers),
        );
        assert_eq!(previous_attempts(&msg), 2);
        let kept = original_headers(&msg);
        let keys: Vec<&str> = kept.iter().map(|h| h.key).collect();
        assert_eq!(keys, vec!["trace"]);
    }
}
