//! The consumer's one error enum: what stops start-up or a step against a server. Each variant names its metric
//! label. Whether a failure on the data path is retried or dead-lettered is [`crate::verdict`]'s to decide.

use crate::registry::RegistryError;

/// Anything that stops the consumer from doing its job right now.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration is unusable.
    #[error("configuration: {0}")]
    Config(String),
    /// The broker or librdkafka failed.
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    /// ClickHouse failed or refused a statement.
    #[error("clickhouse: {0}")]
    ClickHouse(#[from] clickhouse::error::Error),
    /// The schema registry failed.
    #[error("schema registry: {0}")]
    Registry(#[from] RegistryError),
    /// A schema has no ClickHouse table shape, or the table disagrees with it.
    #[error("schema mapping: {0}")]
    Mapping(String),
    /// A local I/O failure (binding the ops listener).
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    /// Shutdown was requested while waiting.
    #[error("shutting down")]
    Shutdown,
}

impl Error {
    /// A short label for metrics and logs.
    pub fn label(&self) -> &'static str {
        match self {
            Error::Config(_) => "config",
            Error::Kafka(_) => "kafka",
            Error::ClickHouse(_) => "clickhouse",
            Error::Registry(_) => "registry",
            Error::Mapping(_) => "mapping",
            Error::Io(_) => "io",
            Error::Shutdown => "shutdown",
        }
    }
}

impl From<sluice_schemas::clickhouse::MappingError> for Error {
    fn from(e: sluice_schemas::clickhouse::MappingError) -> Self {
        Error::Mapping(e.to_string())
    }
}
