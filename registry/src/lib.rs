//! Sluice's schema registry: a drop-in for Confluent Schema Registry's REST API (Avro), whose only state is a
//! compacted single-partition Kafka topic (`_schemas`), replayed into memory at start-up.
//!
//! One registry process writes to a topic at a time: it assigns ids and versions from its in-memory index and
//! does not follow writes made by another process. Run one instance per topic (as Confluent's docs say for
//! a single primary); a second instance on the same topic would mint conflicting ids.

pub mod api;
pub mod auth;
pub mod avro;
pub mod compat;
pub mod config;
pub mod error;
pub mod index;
pub mod log;
pub mod metrics;
pub mod records;
pub mod routes;
pub mod server;
pub mod service;

pub use config::RegistryConfig;
pub use error::Error;
pub use server::serve;
