//! The ClickHouse sink's write step, under the shared consume loop ([`crate::consume`]).
//!
//! A write makes one attempt at every message read since the last one (and at the held ones, when due): the
//! steps of one attempt are [`crate::flush`]'s. The receipts of the messages that got an outcome (inserted,
//! dead-lettered, or dropped because their partition left) are settled in the offset book; messages a failed
//! attempt left pending are [`Held`] and tried again with backoff, and their partitions are the only ones the loop
//! pauses.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use rdkafka::message::Message;
use tokio::time::Instant;

use crate::block_plan::{self, BlockPlan};
use crate::config::Config;
use crate::consume::{Group, GroupPort, Sink};
use crate::dlq::DlqProducer;
use crate::flush::{Entry, Flush, Stream, mark_revoked, observe_freshness, settle};
use crate::held::Held;
use crate::metrics::Metrics;
use crate::offsets::{Outcome, TopicPartition};
use crate::operator;
use crate::predecode::{Predecoder, SharedSnapshot};
use crate::registry::SchemaRegistry;
use crate::rows::{Decoded, RowBuffers};
use crate::sink::clickhouse::ClickHouseSink;
use crate::source::kafka::{commit_with_metadata, committed_plans};

/// What the ClickHouse step is made of.
pub struct Parts {
    /// Streams by topic.
    pub streams: HashMap<String, Stream>,
    /// Writer/reader schema source.
    pub registry: SchemaRegistry,
    /// Where rows go.
    pub sink: ClickHouseSink,
    /// Where poison goes.
    pub dlq: DlqProducer,
    /// Metric handles.
    pub metrics: Metrics,
}

/// The flush against the real services.
type LiveFlush = Flush<ClickHouseSink, DlqProducer, SchemaRegistry>;

/// Writes batches into ClickHouse (and poison to the DLQ).
pub struct ClickHouseStep {
    flush: LiveFlush,
    metrics: Metrics,
    cfg: Config,
    /// Messages a failed attempt left pending, and when they are tried again.
    held: Held<Entry>,
    /// What the read loop may decode ahead with.
    snapshot: SharedSnapshot,
    /// The assignment generation of each partition whose committed block plan was read (once per assignment).
    plans_read: HashMap<block_plan::Key, u64>,
}

impl ClickHouseStep {
    /// A step over `parts`.
    pub fn new(parts: Parts, cfg: Config) -> Self {
        let mut flush = Flush::new(
            parts.sink,
            parts.dlq,
            parts.registry,
            parts.streams,
            parts.metrics.clone(),
        );
        flush.wait_for_unknown_ids(Duration::from_millis(cfg.registry_unknown_id_wait_ms));
        Self {
            snapshot: flush.snapshot(),
            flush,
            metrics: parts.metrics,
            held: Held::new(cfg.retry.backoff()),
            cfg,
            plans_read: HashMap::new(),
        }
    }
}

impl Sink for ClickHouseStep {
    type Ahead = Predecoder;

    fn read_ahead(&self) -> Predecoder {
        Predecoder::new(self.snapshot.clone())
    }

    /// Makes one attempt at `entries` (and at the held messages when they are due), settles what got an outcome
    /// and holds what is still pending.
    async fn write(&mut self, group: &Group, mut entries: Vec<Entry>, mut ahead: Option<Decoded>) {
        let with_held = self.held.is_due();
        if with_held {
            // After the batch: the rows decoded ahead are indexed by the batch's positions.
            entries.append(&mut self.held.take());
        } else if self.held.absorb(&mut entries) {
            ahead = None;
        }
        if entries.is_empty() {
            return;
        }
        self.metrics.batch_flushed(entries.len());
        let plan = if self.flush.dedups_blocks() {
            self.plan_blocks(group, &entries).await
        } else {
            BlockPlan::default()
        };
        self.flush.set_plan(plan);
        let revoked = mark_revoked(&mut entries, &group.port.offsets());
        if revoked > 0 {
            tracing::info!(
                dropped = revoked,
                "dropping pending messages of revoked partitions"
            );
        }
        let result = self.flush.attempt(&mut entries, ahead).await;
        observe_freshness(&entries, &self.metrics);
        settle(&mut entries, &mut group.port.offsets());
        match result {
            Ok(()) => {
                if with_held {
                    self.held.recovered(self.cfg.retry.backoff());
                }
                self.metrics.held_partitions(&self.held.summary(), None);
            }
            Err(failure) => {
                let delay = self.held.hold(entries);
                self.metrics
                    .retrying(failure.label(), self.held.attempts(), delay, &failure);
                self.metrics
                    .held_partitions(&self.held.summary(), Some((failure.label(), &failure)));
            }
        }
    }

    fn spare(&mut self) -> Vec<RowBuffers> {
        self.flush.take_spare()
    }

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

    /// Dead-letters the held message `skip` names (class `operator`), so its partition moves on: the rest of the
    /// held messages are tried again at once and the commit passes it.
    async fn skip(
        &mut self,
        group: &Group,
        skip: &operator::Skip,
    ) -> Result<String, operator::Refused> {
        let Some(mut entry) = self.held.take_one(&skip.partition(), skip.offset) else {
            let held = self
                .held
                .summary()
                .iter()
                .map(|h| {
                    format!(
                        "{}/{} from {}",
                        h.partition.topic, h.partition.partition, h.first_offset
                    )
                })
                .collect();
            return Err(operator::Refused::NotHeld { held });
        };
        let reason = skip.reason.as_deref().unwrap_or("no reason given");
        match self.flush.dead_letter_by_hand(&mut entry, reason).await {
            Ok(dlq_topic) => {
                tracing::warn!(topic = %skip.topic, partition = skip.partition, offset = skip.offset, %dlq_topic, reason, "dead-lettered by an operator");
                group
                    .port
                    .offsets()
                    .settle_held(&entry.received.receipt, Outcome::DeadLettered);
                self.held.make_due();
                self.metrics.held_partitions(&self.held.summary(), None);
                Ok(dlq_topic)
            }
            Err(failure) => {
                self.held.hold_more(entry);
                Err(operator::Refused::Dlq(failure.to_string()))
            }
        }
    }
}

impl ClickHouseStep {
    /// Where this batch's blocks end, one per partition unless a crashed owner's plan for the same position cut
    /// it earlier; recorded with the group's offsets before anything is inserted (see [`crate::block_plan`]). A
    /// plan that cannot be read or recorded is logged: the batch is then cut as if fresh, and copies of rows that
    /// landed before a crash collapse in `FINAL` instead of being dropped by the server.
    async fn plan_blocks(&mut self, group: &Group, entries: &[Entry]) -> BlockPlan {
        let mut ranges: HashMap<block_plan::Key, (i64, i64)> = HashMap::new();
        for e in entries {
            let m = &e.received.message;
            let o = m.offset();
            ranges
                .entry((m.topic().to_owned(), m.partition()))
                .and_modify(|(first, last)| {
                    *first = (*first).min(o);
                    *last = (*last).max(o);
                })
                .or_insert((o, o));
        }
        // Only where the batch starts at the position the group would resume from: a plan is committed there.
        let unread: Vec<(block_plan::Key, u64)> = {
            let offsets = group.port.offsets();
            ranges.retain(|(t, p), (first, _)| offsets.next_pending(t, *p) == Some(*first));
            ranges
                .keys()
                .filter_map(|(t, p)| {
                    let generation = offsets.generation(t, *p)?;
                    (self.plans_read.get(&(t.clone(), *p)) != Some(&generation))
                        .then(|| ((t.clone(), *p), generation))
                })
                .collect()
        };
        let prior = match committed_plans(
            &group.port.consumer,
            unread.iter().map(|(k, _)| k.clone()).collect(),
        )
        .await
        {
            Ok(prior) => {
                self.plans_read.extend(unread);
                if !prior.is_empty() {
                    tracing::info!(
                        partitions = prior.len(),
                        "resuming at a crashed owner's block plan: its blocks are cut as they were"
                    );
                }
                prior
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not read the committed block plans; cutting this batch as if fresh");
                HashMap::new()
            }
        };
        let plan = BlockPlan::for_batch(&ranges, &prior);
        if let Err(e) = commit_with_metadata(&group.port.consumer, plan.metadata(&ranges)).await {
            tracing::warn!(error = %e, "could not record the block plan; a batch rebuilt after a crash may be cut elsewhere");
        }
        plan
    }
}
