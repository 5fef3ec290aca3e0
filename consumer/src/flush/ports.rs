//! What a flush talks to, as three small traits, so its logic runs against in-memory fakes in unit tests and
//! against ClickHouse, Kafka and the registry in production; and how the real clients fill them.

use std::future::Future;
use std::sync::Arc;

use apache_avro::Schema;
use rdkafka::message::OwnedMessage;
use sluice_schemas::clickhouse::{Capabilities, RowPlan, TableSpec};

use crate::dlq::{DlqProducer, Letter};
use crate::error::Error;
use crate::registry::{Latest, RegistryError, SchemaRegistry};
use crate::sink::clickhouse::ClickHouseSink;
use crate::sink::clickhouse::ddl::Widened;
use crate::sink::clickhouse::insert::RowRef;

/// Where rows go.
pub trait RowSink: Send + Sync {
    /// One INSERT of `rows` into `table`'s `columns`: all land or none; with `token`, a block the server already
    /// has under that token is dropped. `partition` is the Kafka partition of the rows when
    /// [`RowSink::routes_by_partition`] (every row of the block is from it), else that of the first row.
    fn insert(
        &self,
        table: &str,
        columns: &str,
        rows: &[RowRef<'_>],
        token: Option<&str>,
        partition: i32,
    ) -> impl Future<Output = Result<(), clickhouse::error::Error>> + Send;

    /// What the server accepts, as last detected.
    fn capabilities(&self) -> Capabilities;

    /// Whether where a block goes depends on its Kafka partition (a cluster's shards), so every block must hold
    /// one partition's rows.
    fn routes_by_partition(&self) -> bool {
        false
    }

    /// Creates the table when missing and adds the columns of `plan` it lacks.
    fn ensure_table(
        &self,
        plan: &RowPlan,
        spec: TableSpec<'_>,
    ) -> impl Future<Output = Result<Widened, Error>> + Send;

    /// Adds the columns of `plan` that `table` lacks (an `Error::Mapping` when a shared column's type differs).
    fn add_missing_columns(
        &self,
        table: &str,
        plan: &RowPlan,
    ) -> impl Future<Output = Result<Widened, Error>> + Send;
}

/// Where writer and reader schemas come from.
pub trait SchemaSource: Send + Sync {
    /// The writer schema registered under `id`.
    fn schema_by_id(
        &self,
        id: u32,
    ) -> impl Future<Output = Result<Arc<Schema>, RegistryError>> + Send;

    /// The latest version of `subject`, or `None` while it is not registered.
    fn latest(
        &self,
        subject: &str,
    ) -> impl Future<Output = Result<Option<Latest>, RegistryError>> + Send;
}

/// Where poison goes.
pub trait DeadLetterSink: Send + Sync {
    /// Sends `msg`'s copy with `letter`'s headers to `dlq_topic` and waits for the acknowledgement.
    fn send(
        &self,
        dlq_topic: &str,
        msg: &OwnedMessage,
        letter: &Letter,
    ) -> impl Future<Output = Result<(), Error>> + Send;
}

impl RowSink for ClickHouseSink {
    fn insert(
        &self,
        table: &str,
        columns: &str,
        rows: &[RowRef<'_>],
        token: Option<&str>,
        partition: i32,
    ) -> impl Future<Output = Result<(), clickhouse::error::Error>> + Send {
        ClickHouseSink::insert(self, table, columns, rows, token, partition)
    }

    fn capabilities(&self) -> Capabilities {
        ClickHouseSink::capabilities(self)
    }

    fn routes_by_partition(&self) -> bool {
        self.cluster().is_some()
    }

    fn ensure_table(
        &self,
        plan: &RowPlan,
        spec: TableSpec<'_>,
    ) -> impl Future<Output = Result<Widened, Error>> + Send {
        ClickHouseSink::ensure_table(self, plan, spec)
    }

    fn add_missing_columns(
        &self,
        table: &str,
        plan: &RowPlan,
    ) -> impl Future<Output = Result<Widened, Error>> + Send {
        ClickHouseSink::add_missing_columns(self, table, plan)
    }
}

impl SchemaSource for SchemaRegistry {
    fn schema_by_id(
        &self,
        id: u32,
    ) -> impl Future<Output = Result<Arc<Schema>, RegistryError>> + Send {
        SchemaRegistry::schema_by_id(self, id)
    }

    fn latest(
        &self,
        subject: &str,
    ) -> impl Future<Output = Result<Option<Latest>, RegistryError>> + Send {
        SchemaRegistry::latest(self, subject)
    }
}

impl DeadLetterSink for DlqProducer {
    fn send(
        &self,
        dlq_topic: &str,
        msg: &OwnedMessage,
        letter: &Letter,
    ) -> impl Future<Output = Result<(), Error>> + Send {
        DlqProducer::send(self, dlq_topic, msg, letter)
    }
}
