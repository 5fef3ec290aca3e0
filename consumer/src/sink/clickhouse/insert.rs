//! Bulk INSERT of pre-encoded RowBinary rows, and isolating the rows ClickHouse rejects by bisecting the batch.

use std::time::Instant;

use bytes::{Bytes, BytesMut};

use super::ClickHouseSink;
use super::retry::{Action, classify};

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

/// What happened to the rows handed to [`ClickHouseSink::insert_isolating`].
#[derive(Debug, Default)]
pub struct InsertReport {
    /// Indexes of rows now in ClickHouse.
    pub inserted: Vec<usize>,
    /// Indexes of rows ClickHouse refused on their own, with its message.
    pub rejected: Vec<(usize, String)>,
    /// A transient failure that stopped the work; rows in neither list are still pending.
    pub transient: Option<clickhouse::error::Error>,
}

impl ClickHouseSink {
    /// One `INSERT INTO table (columns) FORMAT RowBinary` of `rows`.
    pub async fn insert(
        &self,
        table: &str,
        columns: &str,
        rows: &[RowRef<'_>],
    ) -> Result<(), clickhouse::error::Error> {
        let started = Instant::now();
        let sql = format!("INSERT INTO {table} ({columns}) FORMAT RowBinary");
        let mut insert = self
            .client
            .insert_formatted_with(sql)
            .with_timeouts(Some(self.timeout), Some(self.timeout));
        let mut buf = BytesMut::with_capacity(CHUNK.min(rows.iter().map(|r| r.bytes.len()).sum()));
        let mut result = Ok(());
        for row in rows {
            buf.extend_from_slice(row.bytes);
            if buf.len() >= CHUNK {
                let chunk: Bytes = buf.split().freeze();
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

    /// Inserts `rows`; when ClickHouse rejects the data, splits the batch in halves until the rows at fault stand
    /// alone, so that good rows land and only bad ones are reported. Stops at the first transient failure.
    pub async fn insert_isolating(
        &self,
        table: &str,
        columns: &str,
        rows: &[RowRef<'_>],
    ) -> InsertReport {
        let mut report = InsertReport::default();
        // Depth-first, left half first, so rows land roughly in their original order.
        let mut stack: Vec<&[RowRef<'_>]> = vec![rows];
        while let Some(part) = stack.pop() {
            if part.is_empty() {
                continue;
            }
            match self.insert(table, columns, part).await {
                Ok(()) => report.inserted.extend(part.iter().map(|r| r.index)),
                Err(e) => match classify(&e) {
                    Action::Retry => {
                        report.transient = Some(e);
                        return report;
                    }
                    Action::Reject if part.len() == 1 => {
                        report.rejected.push((part[0].index, e.to_string()));
                    }
                    Action::Reject => {
                        tracing::info!(table, rows = part.len(), error = %e, "ClickHouse rejected a batch; bisecting");
                        let (left, right) = part.split_at(part.len() / 2);
                        stack.push(right);
                        stack.push(left);
                    }
                },
            }
        }
        report
    }
}
