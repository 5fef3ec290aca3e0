//! Sluice consumer: a Kafka consumer group that bulk-inserts Avro events into ClickHouse idempotently, commits
//! offsets only after the rows (or their dead letters) are durable, and routes poison messages to a DLQ.
//!
//! Modules follow a message's path: `source` (Kafka, rebalances) → `decode` (registry, Avro) → `batch` →
//! `sink::clickhouse` (DDL, inserts, retry policy) → `dlq`; `offsets` owns what may be committed, `pipeline`
//! drives the loop and `predecode` decodes the next batch while the last one is inserted.

pub mod batch;
pub mod config;
pub mod decode;
pub mod dlq;
pub mod error;
pub mod metrics;
pub mod offsets;
pub mod pipeline;
pub mod predecode;
pub mod registry;
pub mod server;
pub mod sink;
pub mod source;

pub use config::Config;
pub use error::Error;
pub use server::serve;
