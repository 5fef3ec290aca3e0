//! Sluice's schema registry: a drop-in for Confluent Schema Registry's REST API (Avro), whose only state is a
//! compacted single-partition Kafka topic (`_schemas`), replayed into memory at start-up.
//!
//! One registry process writes to a topic at a time: it assigns ids and versions from its in-memory index and
//! does not follow writes made by another process, so a second instance on the same topic fences the first
//! (a fixed `transactional.id`, see `log::kafka`) and the first refuses writes from then on.

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
