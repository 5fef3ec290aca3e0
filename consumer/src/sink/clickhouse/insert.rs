//! Bulk INSERT of pre-encoded RowBinary rows, streamed in chunks.

use std::time::Instant;

use bytes::{Bytes, BytesMut};
use sluice_schemas::clickhouse::Capabilities;

use super::ClickHouseSink;

/// Bytes sent per chunk of the streamed request body.
const CHUNK: usize = 1 << 20;

/// One row to insert: its position in the caller's batch and its RowBinary bytes.
#[derive(Debug, Clone, Copy)]
pub struct RowRef<'a> {
    /// Index in the caller's batch.
    pub index: usize,
    /// The encoded row.
    pub bytes: &'a [u8],
}

/// The INSERT statement for RowBinary rows on a server that accepts `caps`. With a token, a server that has already
/// seen it in the table's deduplication window drops the block instead of writing it again.
///
/// Exactly-once rests on what these settings mean, so they are sent rather than left to the server's defaults:
/// `async_insert = 0` (26.x defaults it to 1, which buffers rows on the server and acknowledges before they are in a
/// part, and deduplicates by other rules) and, with a token, `insert_deduplicate = 1`.
pub fn insert_sql(table: &str, columns: &str, token: Option<&str>, caps: Capabilities) -> String {
    let mut settings = Vec::new();
    if caps.async_insert {
        settings.push("async_insert = 0".to_owned());
    }
    if let Some(token) = token {
        settings.push("insert_deduplicate = 1".to_owned());
        settings.push(format!(
            "insert_deduplication_token = '{}'",
            token.replace('\\', "\\\\").replace('\'', "\\'")
        ));
    }
    if settings.is_empty() {
        format!("INSERT INTO {table} ({columns}) FORMAT RowBinary")
    } else {
        format!(
            "INSERT INTO {table} ({columns}) SETTINGS {} FORMAT RowBinary",
            settings.join(", ")
        )
    }
}

impl ClickHouseSink {
    /// One `INSERT INTO table (columns) FORMAT RowBinary` of `rows`, deduplicated by `token` when given. On a
    /// cluster the rows go to the local table of the shard Kafka partition `partition` names, to the replica that
    /// took the last insert, then to the others in turn while the failure is one waiting could fix.
    pub async fn insert(
        &self,
        table: &str,
        columns: &str,
        rows: &[RowRef<'_>],
        token: Option<&str>,
        partition: i32,
    ) -> Result<(), clickhouse::error::Error> {
        let Some(cluster) = self.cluster() else {
            return self
                .insert_into(&self.client, table, table, columns, rows, token)
                .await;
        };
        let local = cluster.table(table).local;
        let shard = cluster.shard_of(partition);
        let mut failed = None;
        for (i, replica) in shard.in_order() {
            match self
                .insert_into(&replica.client, table, &local, columns, rows, token)
                .await
            {
                Ok(()) => {
                    shard.prefer(i);
                    return Ok(());
                }
                Err(e) if crate::verdict::insert_verdict(&e) == crate::verdict::Verdict::Retry => {
                    // The copy a failed replica may have written is dropped by the next one: a shard's replicas
                    // share its block hashes in ZooKeeper.
                    tracing::warn!(replica = %replica.url, table = %local, partition, error = %e, "insert failed on a replica; trying the next");
                    self.metrics.replica_failover(shard.index);
                    failed = Some(e);
                }
                Err(e) => return Err(e),
            }
        }
        Err(failed
            .unwrap_or_else(|| clickhouse::error::Error::Custom("a shard with no replica".into())))
    }

    /// The INSERT itself, on `client`, into `into`; metrics are kept under the stream's `table`.
    async fn insert_into(
        &self,
        client: &clickhouse::Client,
        table: &str,
        into: &str,
        columns: &str,
        rows: &[RowRef<'_>],
        token: Option<&str>,
    ) -> Result<(), clickhouse::error::Error> {
        let started = Instant::now();
        let sql = insert_sql(into, columns, token, self.capabilities());
        let mut insert = client
            .insert_formatted_with(sql)
            .with_timeouts(Some(self.timeout), Some(self.timeout));
        let mut buf = BytesMut::with_capacity(CHUNK.min(rows.iter().map(|r| r.bytes.len()).sum()));
        let mut result = Ok(());
        for row in rows {
            buf.extend_from_slice(row.bytes);
            if buf.len() >= CHUNK {
                let chunk: Bytes = buf.split().freeze();
                // `split` leaves no capacity: without this the next chunk grew from one row, copying as it doubled.
                buf.reserve(CHUNK);
                if let Err(e) = insert.send(chunk).await {
                    result = Err(e);
                    break;
                }
            }
        }
        if result.is_ok() && !buf.is_empty() {
            result = insert.send(buf.freeze()).await;
        }
        // `end` reports the server's verdict even when a send failed because the server hung up early.
        let end = insert.end().await;
        let result = match (result, end) {
            (_, Err(e)) => Err(e),
            (Err(e), Ok(())) => Err(e),
            (Ok(()), Ok(())) => Ok(()),
        };
        match &result {
            Ok(()) => self
                .metrics
                .rows_inserted(table, rows.len(), started.elapsed()),
            Err(_) => self.metrics.insert_failed(table, started.elapsed()),
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn current_servers_get_explicit_exactly_once_settings() {
        assert_eq!(
            insert_sql("db.t", "`a`", Some("t:0:1-2"), Capabilities::CURRENT),
            "INSERT INTO db.t (`a`) SETTINGS async_insert = 0, insert_deduplicate = 1, \
             insert_deduplication_token = 't:0:1-2' FORMAT RowBinary"
        );
        assert_eq!(
            insert_sql("db.t", "`a`", None, Capabilities::CURRENT),
            "INSERT INTO db.t (`a`) SETTINGS async_insert = 0 FORMAT RowBinary"
        );
    }

    #[test]
    fn legacy_servers_get_no_setting_they_lack() {
        assert_eq!(
            insert_sql("db.t", "`a`", None, Capabilities::LEGACY),
            "INSERT INTO db.t (`a`) FORMAT RowBinary"
        );
    }

    #[test]
    fn tokens_are_quoted() {
        let sql = insert_sql("t", "`a`", Some(r"it's\"), Capabilities::CURRENT);
        assert!(
            sql.contains(r"insert_deduplication_token = 'it\'s\\'"),
            "{sql}"
        );
    }
}
