//! Sluice's benchmarks: realistic events, the services' hot paths, an HTTP load generator, the raw Kafka and
//! ClickHouse limits, and the stack benchmark that sets Sluice's figures beside them.

pub mod clickhouse;
pub mod cpu;
pub mod events;
pub mod limits;
pub mod loadgen;
pub mod machine;
pub mod payloads;
pub mod report;
pub mod services;
pub mod stats;
