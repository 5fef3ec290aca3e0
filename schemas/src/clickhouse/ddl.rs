//! The SQL that creates a stream's table from its plan and widens it when a newer schema adds fields.

use std::fmt::Write as _;

use super::{Column, MappingError, RowPlan, TableSpec};

impl RowPlan {
    /// `CREATE TABLE IF NOT EXISTS` for this plan: ReplacingMergeTree sorted by `spec.order_by`, by month.
    pub fn create_table_sql(&self, spec: &TableSpec<'_>) -> Result<String, MappingError> {
        let settings = spec
            .dedup_window
            .map(|w| format!("non_replicated_deduplication_window = {w}"));
        self.table_sql(
            spec,
            spec.table,
            "",
            "ReplacingMergeTree()",
            settings.as_deref(),
            true,
        )
    }

    /// `CREATE TABLE IF NOT EXISTS … ON CLUSTER` of a stream's local table on every node of `cluster`:
    /// ReplicatedReplacingMergeTree, so each shard's replicas hold the same parts and a re-sent block is dropped
    /// by the shard's ZooKeeper-kept block hashes (the last `replicated_window` blocks). Column comments only
    /// with `comments` (see [`super::Capabilities::replicated_comments`]).
    pub fn create_replicated_sql(
        &self,
        spec: &TableSpec<'_>,
        cluster: &ClusterTable,
        replicated_window: u64,
        comments: bool,
    ) -> Result<String, MappingError> {
        let engine = format!(
            "ReplicatedReplacingMergeTree('{}', '{{replica}}')",
            escape_literal(&cluster.zk_path)
        );
        let settings = format!("replicated_deduplication_window = {replicated_window}");
        self.table_sql(
            spec,
            &cluster.local,
            &format!(" ON CLUSTER {}", cluster.name),
            &engine,
            Some(&settings),
            comments,
        )
    }

    fn table_sql(
        &self,
        spec: &TableSpec<'_>,
        table: &str,
        on_cluster: &str,
        engine: &str,
        settings: Option<&str>,
        comments: bool,
    ) -> Result<String, MappingError> {
        let columns = self.columns();
        for key in spec.order_by {
            let col = columns.iter().find(|c| c.name == *key).ok_or_else(|| {
                MappingError::BadOrderBy(key.clone(), "is not a field of the schema")
            })?;
            if !col.sortable {
                return Err(MappingError::BadOrderBy(
                    key.clone(),
                    "is nullable, an array or a tuple",
                ));
            }
        }
        if spec.order_by.is_empty() {
            return Err(MappingError::BadOrderBy(String::new(), "list is empty"));
        }
        let partition = match spec.partition_by {
            Some(p) => {
                let col = columns.iter().find(|c| c.name == p).ok_or_else(|| {
                    MappingError::BadPartition(p.to_owned(), "is not a field of the schema")
                })?;
                if !col.temporal {
                    return Err(MappingError::BadPartition(
                        p.to_owned(),
                        "is not a date or timestamp",
                    ));
                }
                format!(" PARTITION BY toYYYYMM({})", quote_ident(p))
            }
            None => String::new(),
        };
        let mut sql = format!("CREATE TABLE IF NOT EXISTS {table}{on_cluster} (\n");
        for (i, c) in columns.iter().enumerate() {
            let sep = if i + 1 == columns.len() { "" } else { "," };
            let _ = writeln!(sql, "    {}{sep}", column_def(c, comments));
        }
        let order: Vec<String> = spec.order_by.iter().map(|k| quote_ident(k)).collect();
        let _ = write!(
            sql,
            ") ENGINE = {engine}{partition} ORDER BY ({})",
            order.join(", ")
        );
        if let Some(settings) = settings {
            let _ = write!(sql, " SETTINGS {settings}");
        }
        Ok(sql)
    }
}

/// A stream's tables on a ClickHouse cluster: what `ON CLUSTER` DDL needs to name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterTable {
    /// The cluster, as the servers' `remote_servers` name it.
    pub name: String,
    /// `database.table` of the replicated table on every node, which rows are inserted into.
    pub local: String,
    /// Its ZooKeeper path, with the server's `{shard}` macro left for each node to fill in.
    pub zk_path: String,
}

/// `CREATE TABLE IF NOT EXISTS … ON CLUSTER` of the `Distributed` table that reads every shard's local table.
/// It has no sharding key on purpose: Sluice inserts into the local tables by Kafka partition, and an INSERT into
/// the `Distributed` table (which would shard rows some other way) is refused by the server instead.
pub fn create_distributed_sql(table: &str, cluster: &ClusterTable) -> String {
    let (db, name) = cluster
        .local
        .split_once('.')
        .unwrap_or(("currentDatabase()", cluster.local.as_str()));
    format!(
        "CREATE TABLE IF NOT EXISTS {table} ON CLUSTER {c} AS {local} ENGINE = Distributed({c}, {db}, {name})",
        c = cluster.name,
        local = cluster.local,
    )
}

/// `ALTER TABLE ... ADD COLUMN` for one column (ClickHouse 18.16 has no `IF NOT EXISTS` here: check first).
pub fn add_column_sql(table: &str, column: &Column) -> String {
    format!(
        "ALTER TABLE {table} ADD COLUMN {}",
        column_def(column, true)
    )
}

/// [`add_column_sql`] on every node of `cluster`, with the column's comment only if `comments`.
pub fn add_column_on_cluster_sql(
    table: &str,
    cluster: &str,
    column: &Column,
    comments: bool,
) -> String {
    format!(
        "ALTER TABLE {table} ON CLUSTER {cluster} ADD COLUMN {}",
        column_def(column, comments)
    )
}

fn column_def(c: &Column, comments: bool) -> String {
    let mut def = format!("{} {}", quote_ident(&c.name), c.ty);
    if let Some(doc) = c.doc.as_ref().filter(|_| comments) {
        let _ = write!(def, " COMMENT '{}'", escape_literal(doc));
    }
    def
}

/// Backquotes an identifier (names are checked to be plain Avro names, so no escaping is needed).
pub fn quote_ident(name: &str) -> String {
    format!("`{name}`")
}

fn escape_literal(s: &str) -> String {
    s.replace('\\', "\\\\").replace('\'', "\\'")
}

/// Whether two ClickHouse type names are the same type (ClickHouse reports them with its own spacing).
pub(super) fn same_type(a: &str, b: &str) -> bool {
    let strip = |s: &str| s.chars().filter(|c| !c.is_whitespace()).collect::<String>();
    strip(a) == strip(b)
}
