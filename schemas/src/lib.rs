//! Sluice's Avro schemas and the code both services share to turn them into wire bytes and ClickHouse columns.

pub mod catalog;
pub mod clickhouse;
pub mod wire;
