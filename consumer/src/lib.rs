//! Sluice consumer: a Kafka consumer group that bulk-inserts Avro events into ClickHouse idempotently, commits
//! offsets only after the rows (or their dead letters) are durable, and routes poison messages to a DLQ.
//!
//! Modules follow a message's path: `source` (Kafka, rebalances) → `batch` → `consume` (the core every sink runs
//! under: read, batch, one write step in flight, pause what waits, commit) → a sink's write step. The ClickHouse
//! step is `write`: `predecode` (the read-ahead) runs `rows` (the one decode loop; `decode` is one Avro message to a
//! row) while the last batch is inserted → `block_plan` (where a batch is cut into insert blocks, kept across a
//! crash) → `flush` (the steps of one attempt: writers, tables, decode, insert into `sink::clickhouse`, dead-letter
//! to `dlq`) → `held` (what waits) → `offsets` (what may be committed). `verdict` alone decides retry or
//! dead-letter. `lake` is the second sink: the same streams as Parquet or NDJSON files, in a group of its own.

pub mod batch;
pub mod block_plan;
pub mod config;
pub mod consume;
pub mod dashboard;
pub mod dead_letters;
pub mod decode;
pub mod dlq;
pub mod error;
pub mod flush;
pub mod held;
pub mod lake;
pub mod metrics;
pub mod offsets;
pub mod operator;
pub mod predecode;
pub mod registry;
pub mod rows;
pub mod server;
pub mod sink;
pub mod source;
pub mod verdict;
pub mod write;

pub use config::Config;
pub use error::Error;
pub use server::serve;
