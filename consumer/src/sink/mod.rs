//! Where rows go. ClickHouse is the only sink; the DLQ for what it cannot take lives in `crate::dlq`.

pub mod clickhouse;
