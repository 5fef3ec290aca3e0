//! The dead-letter table's write step, under the shared consume loop: every letter read from the DLQ topics
//! becomes one row, the whole batch one INSERT, and the letters' offsets are settled only once it is in. Nothing
//! here is ever the data's fault (every field is stored as bytes), so a failed insert is the infrastructure's:
//! the batch is held and tried again with backoff, holding only its partitions.

use std::collections::HashSet;

use tokio::time::Instant;

use crate::config::Config;
use crate::consume::{Group, GroupPort, Sink};
use crate::flush::{Entry, mark_revoked, settle};
use crate::held::Held;
use crate::metrics::Metrics;
use crate::offsets::{Outcome, TopicPartition};
use crate::sink::clickhouse::ClickHouseSink;
use crate::sink::clickhouse::insert::RowRef;

use super::table;

/// The metric label of its failures.
const WHAT: &str = "dead_letters";

/// Writes letters into the dead-letter table.
pub struct DeadLetterStep {
    sink: ClickHouseSink,
    table: String,
    /// The main consumer's metrics, for the retries only: the loop's own figures would overwrite its gauges.
    metrics: Metrics,
    held: Held<Entry>,
    cfg: Config,
    /// Rows of the last batch, kept for the next one's bytes.
    rows: Vec<u8>,
}

impl DeadLetterStep {
    /// A step writing into `table` through `sink`.
    pub fn new(sink: ClickHouseSink, table: String, metrics: Metrics, cfg: Config) -> Self {
        Self {
            sink,
            table,
            metrics,
            held: Held::new(cfg.retry.backoff()),
            cfg,
            rows: Vec::new(),
        }
    }
}

impl Sink for DeadLetterStep {
    type Ahead = ();

    fn read_ahead(&self) {}

    async fn write(&mut self, group: &Group, mut entries: Vec<Entry>, _ahead: Option<()>) {
        let with_held = self.held.is_due();
        if with_held {
            entries.append(&mut self.held.take());
        } else {
            self.held.absorb(&mut entries);
        }
        if entries.is_empty() {
            return;
        }
        mark_revoked(&mut entries, &group.port.offsets());
        self.rows.clear();
        let mut bounds = Vec::with_capacity(entries.len());
        for e in entries.iter().filter(|e| e.is_pending()) {
            let start = self.rows.len();
            table::row(&e.received.message, &mut self.rows);
            bounds.push((start, self.rows.len()));
        }
        let refs: Vec<RowRef<'_>> = bounds
            .iter()
            .enumerate()
            .map(|(index, (a, b))| RowRef {
                index,
                bytes: &self.rows[*a..*b],
            })
            .collect();
        let result = if refs.is_empty() {
            Ok(())
        } else {
            self.sink
                .insert(&self.table, table::COLUMNS, &refs, None, 0)
                .await
        };
        match result {
            Ok(()) => {
                for e in entries.iter_mut().filter(|e| e.is_pending()) {
                    e.outcome = Some(Outcome::Inserted);
                }
                settle(&mut entries, &mut group.port.offsets());
                if with_held {
                    self.held.recovered(self.cfg.retry.backoff());
                }
            }
            Err(e) => {
                // The revoked ones are let go; the rest wait for ClickHouse.
                settle(&mut entries, &mut group.port.offsets());
                let delay = self.held.hold(entries);
                self.metrics.retrying(WHAT, self.held.attempts(), delay, &e);
                self.metrics
                    .held_partitions(&self.held.summary(), Some((WHAT, &e)));
            }
        }
    }

    fn spare(&mut self) {}

    fn wake_at(&self) -> Option<Instant> {
        self.held.retry_at()
    }

    fn waiting(&self) -> HashSet<TopicPartition> {
        self.held.partitions().clone()
    }

    fn holds(&self) -> usize {
        self.held.len()
    }

    fn make_due(&mut self) {
        self.held.make_due();
    }
}
