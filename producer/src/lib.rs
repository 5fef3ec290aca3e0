//! Sluice producer: accepts events over HTTP, validates them against their stream's Avro schema, and writes them to
//! Kafka in Confluent wire format, answering 202 only once Kafka acknowledged every one.
//!
//! A request travels `routes` → `handlers::ingest` → `stream` (server-side fields) → `validate` → `encode` → `sink`.

pub mod allocator;
pub mod auth;
pub mod committed;
pub mod config;
pub mod encode;
pub mod error;
pub mod handlers;
pub mod idempotency;
pub mod metrics;
pub mod quota;
pub mod registry;
pub mod reload;
pub mod routes;
pub mod server;
pub mod sink;
pub mod stream;
pub mod validate;

pub use config::Config;
pub use server::{ServeError, serve, serve_reloading_keys};
