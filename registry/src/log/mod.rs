//! Where the registry's records go: the Kafka topic in production, memory in unit tests.

pub mod kafka;
#[cfg(test)]
pub mod memory;

use futures::future::BoxFuture;

use crate::records::Record;

/// An append-only, acknowledged record log.
pub trait Log: Send + Sync + 'static {
    /// Appends one record; resolves once it is durable (for Kafka: acknowledged with acks=all).
    fn append<'a>(&'a self, record: &'a Record) -> BoxFuture<'a, Result<(), String>>;
}
