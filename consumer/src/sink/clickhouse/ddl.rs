//! Creating a stream's table from its reader schema and widening it when a newer schema adds fields; on a server
//! with insert deduplication tokens, with a window that covers every retry.
//!
//! On a cluster every statement runs `ON CLUSTER`: ClickHouse queues it in ZooKeeper and each node runs it, a node
//! that is down when it returns. The same statement sent to each node in turn would leave a node that was down
//! without the table or the column until the consumer happened to run again.

use sluice_schemas::clickhouse::{
    Column, RowPlan, TableSpec, add_column_on_cluster_sql, add_column_sql, create_distributed_sql,
};

use super::ClickHouseSink;
use crate::error::Error;

#[derive(clickhouse::Row, serde::Deserialize, Debug)]
struct ColumnRow {
    name: String,
    ty: String,
}

/// `(database, table)` of a qualified name.
fn split(table: &str) -> Result<(&str, &str), Error> {
    table
        .split_once('.')
        .ok_or_else(|| Error::Config(format!("table {table} is not qualified with a database")))
}

/// Insert blocks whose tokens a table remembers. A flush inserts one block per partition (more when bisecting), and
/// what a retry or a rebuilt batch re-sends is at most the last few flushes: 1000 covers hundreds of flushes of a
/// 4-partition stream, and costs ClickHouse only that many hashes in the table's metadata.
pub const DEDUP_WINDOW: u64 = 1000;

/// What [`ClickHouseSink::add_missing_columns`] did.
#[derive(Debug, PartialEq)]
pub struct Widened {
    /// Columns added.
    pub added: Vec<String>,
    /// The plan, fitted to the table's columns (a field the table holds with legacy types keeps them).
    pub plan: RowPlan,
}

/// ClickHouse's TIMEOUT_EXCEEDED: an `ON CLUSTER` statement some node has not run within the DDL timeout.
const DDL_TIMEOUT_CODE: u32 = 159;

impl ClickHouseSink {
    /// Creates the database and table when missing, then adds any column of `plan` the table lacks. On a cluster:
    /// the replicated local table and the `Distributed` table over it, on every node.
    pub async fn ensure_table(
        &self,
        plan: &RowPlan,
        mut spec: TableSpec<'_>,
    ) -> Result<Widened, Error> {
        let caps = self.detect_server().await?;
        if caps.dedup_token {
            spec.dedup_window = Some(DEDUP_WINDOW);
        }
        let (db, _) = split(spec.table)?;
        let on_cluster = self
            .cluster()
            .map(|c| format!(" ON CLUSTER {}", c.name()))
            .unwrap_or_default();
        self.run_ddl(&format!("CREATE DATABASE IF NOT EXISTS {db}{on_cluster}"))
            .await?;
        if let Some(cluster) = self.cluster() {
            let table = cluster.table(spec.table);
            self.run_ddl(&plan.create_replicated_sql(
                &spec,
                &table,
                DEDUP_WINDOW,
                caps.replicated_comments,
            )?)
            .await?;
            self.run_ddl(&create_distributed_sql(spec.table, &table))
                .await?;
        } else {
            self.run_ddl(&plan.create_table_sql(&spec)?).await?;
            if caps.dedup_token {
                self.check_dedup_window(spec.table).await?;
            }
        }
        self.add_missing_columns(spec.table, plan).await
    }

    /// Runs one DDL statement. On a cluster, a statement that some node did not run within the DDL timeout is
    /// not a failure: it stays queued for that node, and inserts routed there are retried (on the shard's other
    /// replica first) until the node has run it.
    async fn run_ddl(&self, sql: &str) -> Result<(), Error> {
        match self.node().await?.query(sql).execute().await {
            Ok(()) => Ok(()),
            Err(clickhouse::error::Error::BadResponse(text))
                if self.cluster().is_some()
                    && crate::verdict::clickhouse_code(&text) == Some(DDL_TIMEOUT_CODE) =>
            {
                tracing::warn!(statement = %sql.lines().next().unwrap_or(sql), answer = %text, "a node has not run this DDL yet; it stays queued for it");
                Ok(())
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Warns when a table that existed before has a smaller deduplication window than retries need: tokens that
    /// fell out of it no longer drop a re-sent block (ReplacingMergeTree still collapses it through FINAL).
    async fn check_dedup_window(&self, table: &str) -> Result<(), Error> {
        let (db, name) = split(table)?;
        let engine: String = self
            .node()
            .await?
            .query("SELECT engine_full FROM system.tables WHERE database = ? AND name = ?")
            .bind(db)
            .bind(name)
            .fetch_one()
            .await?;
        let window = dedup_window_of(&engine);
        if window < DEDUP_WINDOW && !engine.starts_with("Replicated") {
            tracing::warn!(
                table,
                window,
                wanted = DEDUP_WINDOW,
                "the table's non_replicated_deduplication_window is too small for retried inserts to be dropped; \
                 run ALTER TABLE {table} MODIFY SETTING non_replicated_deduplication_window = {DEDUP_WINDOW}"
            );
        }
        Ok(())
    }

    /// The table's columns and types, in order; empty when the table does not exist (on a cluster: on the node
    /// metadata queries go to).
    pub async fn columns(&self, table: &str) -> Result<Vec<(String, String)>, Error> {
        columns_on(&self.node().await?, table).await
    }

    /// Adds the columns of `plan` that `table` lacks; refuses (changing nothing) if a shared column's type differs.
    ///
    /// On a cluster, the local tables get them `ON CLUSTER`; the `Distributed` table gets them node by node,
    /// because 18.16 refuses `ON CLUSTER` for a table that is not replicated on a cluster whose shards are
    /// (code 371). A node that is down then keeps its old `Distributed` columns until the consumer next checks the
    /// table (at start-up and on every new reader): reads through it simply lack the new column meanwhile.
    pub async fn add_missing_columns(&self, table: &str, plan: &RowPlan) -> Result<Widened, Error> {
        let Some(cluster) = self.cluster() else {
            return self.widen(&self.client, table, None, plan).await;
        };
        let local = cluster.table(table).local;
        let widened = self
            .widen(&self.node().await?, &local, Some(cluster.name()), plan)
            .await?;
        for replica in cluster.nodes() {
            match self
                .widen(&replica.client, table, None, &widened.plan)
                .await
            {
                Ok(_) | Err(Error::Mapping(_)) => {}
                Err(e) => {
                    tracing::warn!(node = %replica.url, table, error = %e, "could not widen this node's Distributed table; it is checked again at the next start-up or schema change");
                }
            }
        }
        Ok(widened)
    }

    /// ClickHouse 18.16 has no `ADD COLUMN IF NOT EXISTS`, so two consumers may race here: a column that appeared
    /// meanwhile is re-checked rather than reported.
    async fn widen(
        &self,
        client: &clickhouse::Client,
        table: &str,
        cluster: Option<&str>,
        plan: &RowPlan,
    ) -> Result<Widened, Error> {
        let existing = columns_on(client, table).await?;
        let plan = plan.fit(&existing);
        let missing = missing_columns(&existing, &plan.columns()).map_err(Error::Mapping)?;
        let mut widened = Widened {
            added: Vec::new(),
            plan,
        };
        for column in missing {
            let result = match cluster {
                Some(c) => {
                    let comments = self.capabilities().replicated_comments;
                    self.run_ddl(&add_column_on_cluster_sql(table, c, &column, comments))
                        .await
                }
                None => client
                    .query(&add_column_sql(table, &column))
                    .execute()
                    .await
                    .map_err(Error::from),
            };
            match result {
                Ok(()) => widened.added.push(column.name.clone()),
                Err(e) => {
                    let now = columns_on(client, table).await?;
                    if !now.iter().any(|(n, _)| *n == column.name) {
                        return Err(e);
                    }
                }
            }
        }
        Ok(widened)
    }
}

/// `table`'s columns and types on the server of `client`, in order; empty when it does not exist there.
async fn columns_on(
    client: &clickhouse::Client,
    table: &str,
) -> Result<Vec<(String, String)>, Error> {
    let (db, name) = split(table)?;
    let rows: Vec<ColumnRow> = client
        .query("SELECT name, type FROM system.columns WHERE database = ? AND table = ?")
        .bind(db)
        .bind(name)
        .fetch_all()
        .await?;
    Ok(rows.into_iter().map(|r| (r.name, r.ty)).collect())
}

/// The columns of `wanted` absent from `existing`; an error naming the first column whose type differs.
pub fn missing_columns(
    existing: &[(String, String)],
    wanted: &[Column],
) -> Result<Vec<Column>, String> {
    let mut missing = Vec::new();
    for column in wanted {
        match existing.iter().find(|(n, _)| *n == column.name) {
            Some((_, ty)) if normalize(ty) != normalize(&column.ty) => {
                return Err(format!(
                    "column `{}` is {ty} in ClickHouse but the schema maps it to {}",
                    column.name, column.ty
                ));
            }
            Some(_) => {}
            None => missing.push(column.clone()),
        }
    }
    Ok(missing)
}

/// The `non_replicated_deduplication_window` in a table's `engine_full`; 0 (the server's default) when absent.
fn dedup_window_of(engine_full: &str) -> u64 {
    let key = "non_replicated_deduplication_window = ";
    engine_full
        .find(key)
        .map(|at| &engine_full[at + key.len()..])
        .and_then(|rest| {
            rest.chars()
                .take_while(char::is_ascii_digit)
                .collect::<String>()
                .parse()
                .ok()
        })
        .unwrap_or(0)
}

fn normalize(ty: &str) -> String {
    ty.chars().filter(|c| !c.is_whitespace()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use apache_avro::Schema;

    fn plan(text: &str) -> RowPlan {
        RowPlan::from_schema(&Schema::parse_str(text).expect("parses")).expect("maps")
    }

    #[test]
    fn only_new_fields_are_added_and_conflicts_refused() {
        let v2 = plan(
            r#"{"type":"record","name":"E","fields":[{"name":"id","type":"string"},
            {"name":"tags","type":{"type":"map","values":"long"}},
            {"name":"note","type":["null","string"],"default":null}]}"#,
        );
        let existing = vec![("id".to_string(), "String".to_string())];
        let names: Vec<String> = missing_columns(&existing, &v2.columns())
            .expect("ok")
            .into_iter()
            .map(|c| c.name)
            .collect();
        assert_eq!(names, ["tags.keys", "tags.values", "note"]);
        let conflicting = vec![("id".to_string(), "UInt64".to_string())];
        assert!(missing_columns(&conflicting, &v2.columns()).is_err());
        let spaced = vec![("tags.values".to_string(), "Array( Int64 )".to_string())];
        assert!(missing_columns(&spaced, &v2.columns()).is_ok());
    }

    #[test]
    fn the_dedup_window_is_read_from_the_engine() {
        assert_eq!(
            dedup_window_of(
                "ReplacingMergeTree PARTITION BY toYYYYMM(ts) ORDER BY id SETTINGS non_replicated_deduplication_window = 1000, index_granularity = 8192"
            ),
            1000
        );
        assert_eq!(
            dedup_window_of("ReplacingMergeTree ORDER BY id SETTINGS index_granularity = 8192"),
            0
        );
    }
}
