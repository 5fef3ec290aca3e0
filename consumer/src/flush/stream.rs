//! One configured stream and what the consumer currently knows about it: its reader schema, the writer schemas
//! reconciled with that reader, and whether its table is known to have the reader's columns.

use std::collections::HashMap;
use std::sync::Arc;

use apache_avro::Schema;
use sluice_schemas::clickhouse::{Capabilities, RowPlan, TableSpec};

use crate::config::StreamConfig;
use crate::decode::{Reader, Shape};

/// One configured stream and what the consumer currently knows about it.
pub struct Stream {
    cfg: StreamConfig,
    pub(super) table: String,
    pub(super) subject: String,
    pub(super) dlq_topic: String,
    pub(super) reader: Arc<Reader>,
    /// Writer schemas seen since the reader was last refreshed, by id.
    pub(super) known_writers: HashMap<u32, Arc<Schema>>,
    /// Whether the table is known to exist with the reader's columns.
    pub(super) table_ok: bool,
}

impl Stream {
    /// A stream starting with `reader`.
    pub fn new(cfg: &StreamConfig, default_db: &str, reader: Reader) -> Self {
        Self {
            table: cfg.qualified_table(default_db),
            subject: cfg.subject(),
            dlq_topic: cfg.dlq_topic(),
            cfg: cfg.clone(),
            reader: Arc::new(reader),
            known_writers: HashMap::new(),
            table_ok: false,
        }
    }

    /// How the table is created.
    pub fn spec(&self) -> TableSpec<'_> {
        TableSpec {
            table: &self.table,
            order_by: &self.cfg.order_by,
            partition_by: self.cfg.partition_field(),
            dedup_window: None,
        }
    }

    /// The reader's column mapping.
    pub fn plan(&self) -> &RowPlan {
        &self.reader.plan
    }

    /// The qualified table name.
    pub fn table(&self) -> &str {
        &self.table
    }

    /// Records that the table exists with the reader's columns.
    pub fn table_ready(&mut self) {
        self.table_ok = true;
    }

    /// What shapes this stream's table on a server with `caps`.
    pub fn shape(&self, caps: Capabilities) -> Shape {
        Shape {
            caps,
            source_columns: self.cfg.source_columns,
        }
    }

    /// Writes rows as `plan` from now on (the reader's plan fitted to the table), when it differs.
    pub fn adopt_plan(&mut self, plan: RowPlan) {
        if plan != self.reader.plan {
            self.reader = Arc::new(self.reader.with_plan(plan));
            // Writers were reconciled with the old plan's reader; they are checked again on their next message.
            self.known_writers.clear();
        }
    }
}
