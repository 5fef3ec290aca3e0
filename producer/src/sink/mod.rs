//! Where encoded events go. Handlers hold an `Arc<dyn EventSink>`: Kafka in production, a recording sink in
//! handler unit tests.

pub mod kafka;

use std::time::Duration;

use futures::future::BoxFuture;

/// One message for the sink.
#[derive(Debug, Clone)]
pub struct OutRecord {
    /// Kafka message key.
    pub key: Vec<u8>,
    /// Confluent-framed Avro value.
    pub payload: Vec<u8>,
}

/// Where Kafka put a record: what a request waiting for a consumer group's commit waits on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    /// The partition.
    pub partition: i32,
    /// The record's offset in it.
    pub offset: i64,
}

/// Why a batch was not fully acknowledged. Some of its records may still have been written.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SinkError {
    /// The local producer queue is full: the client should back off.
    #[error("producer queue is full")]
    QueueFull,
    /// A record is larger than the broker accepts.
    #[error("message too large: {0}")]
    TooLarge(String),
    /// The broker did not acknowledge in time or refused; retrying later may work.
    #[error("broker unavailable: {0}")]
    Unavailable(String),
}

/// Writes batches of records and reports only once every one is acknowledged.
pub trait EventSink: Send + Sync + 'static {
    /// Sends `records` to `topic`; `Ok` only when every record was acknowledged, with each record's position in
    /// request order when `positions` is set (empty otherwise: only waiting requests pay for them).
    fn send_all<'a>(
        &'a self,
        topic: &'a str,
        records: Vec<OutRecord>,
        positions: bool,
    ) -> BoxFuture<'a, Result<Vec<Position>, SinkError>>;
    /// Whether the sink can reach its backend now.
    fn check(&self) -> BoxFuture<'_, Result<(), String>>;
    /// Waits up to `timeout` for everything queued to be delivered.
    fn flush(&self, timeout: Duration) -> BoxFuture<'_, Result<(), String>>;
}
