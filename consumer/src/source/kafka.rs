//! The Kafka side: a group member (classic cooperative-sticky, or KIP-848) with auto-commit off, whose rebalance
//! callbacks keep [`Offsets`] in step with the assignment. Both protocols hand over partitions incrementally.
//!
//! librdkafka runs these callbacks inside `recv()`, on the consume loop's own task, so they never race a flush: a
//! revoke commits what is already done for the leaving partitions, synchronously, then forgets them; the
//! write step drops their pending messages before its next insert or commit.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures::StreamExt;
use futures::stream::BoxStream;
use rdkafka::client::ClientContext;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::error::KafkaResult;
use rdkafka::statistics::Statistics;
use rdkafka::{Offset, TopicPartitionList};

use crate::config::{Config, GroupProtocol};
use crate::consume::GroupPort;
use crate::error::Error;
use crate::metrics::Metrics;
use crate::offsets::{Offsets, Position, TopicPartition};

/// The consumer type the consume loop reads from.
pub type SourceConsumer = StreamConsumer<SourceContext>;

/// Shared between the consume loop and the rebalance callbacks.
#[derive(Clone)]
pub struct SourceContext {
    offsets: Arc<Mutex<Offsets>>,
    metrics: Metrics,
}

impl SourceContext {
    /// Locks the offset book (a poisoned lock still holds consistent data: every update is a single step).
    pub fn offsets(&self) -> MutexGuard<'_, Offsets> {
        self.offsets.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes a message read into the offset book; `None` (logged) if its partition is no longer ours.
    pub fn receive(&self, m: &rdkafka::message::BorrowedMessage<'_>) -> Option<super::Received> {
        use rdkafka::message::Message as _;
        let receipt = self
            .offsets()
            .received(m.topic(), m.partition(), m.offset());
        match receipt {
            Some(receipt) => Some(super::Received {
                message: m.detach(),
                receipt,
            }),
            None => {
                tracing::warn!(
                    topic = m.topic(),
                    partition = m.partition(),
                    "message from an unassigned partition dropped"
                );
                None
            }
        }
    }

    /// Commits every position that moved and records it; returns what was committed (`None`: nothing moved, or
    /// the commit failed, counted in the metrics and retried with the next commit).
    pub async fn commit_moved(&self, consumer: &Arc<SourceConsumer>) -> Option<Vec<Position>> {
        let positions = self.offsets().committable();
        if positions.is_empty() {
            return None;
        }
        match commit_sync(consumer, positions.clone()).await {
            Ok(()) => {
                self.offsets().committed(&positions);
                self.metrics.offsets_committed(positions.len(), Ok(()));
                Some(positions)
            }
            Err(e) => {
                self.metrics.offsets_committed(positions.len(), Err(&e));
                None
            }
        }
    }
}

fn list(tpl: &TopicPartitionList) -> Vec<TopicPartition> {
    tpl.elements()
        .iter()
        .map(|e| TopicPartition::new(e.topic(), e.partition()))
        .collect()
}

/// A commit list for `positions`.
pub fn to_tpl(positions: &[Position]) -> Result<TopicPartitionList, Error> {
    let mut tpl = TopicPartitionList::new();
    for pos in positions {
        let TopicPartition { topic, partition } = &pos.partition;
        tpl.add_partition_offset(topic, *partition, Offset::Offset(pos.next_offset))?;
    }
    Ok(tpl)
}

impl ClientContext for SourceContext {
    fn stats(&self, statistics: Statistics) {
        for (topic, t) in &statistics.topics {
            for (partition, p) in &t.partitions {
                // Partition -1 is librdkafka's internal "unassigned" bucket; lag -1 means unknown.
                if *partition >= 0 && p.consumer_lag >= 0 {
                    self.metrics.lag(topic, *partition, p.consumer_lag);
                }
            }
        }
    }
}

impl ConsumerContext for SourceContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(tpl) => {
                let tps = list(tpl);
                tracing::info!(partitions = ?tps, "partitions assigned");
                self.metrics.rebalanced("assign", tps.len());
                self.offsets().assign(tps);
            }
            Rebalance::Revoke(tpl) => {
                // Resumed before it leaves: librdkafka keeps an application pause on a partition across a revoke
                // and a later assignment, and one paused now (held, or paused while a long flush ran) would never
                // be fetched again when it comes back.
                if let Err(e) = consumer.resume(tpl) {
                    tracing::warn!(error = %e, "could not resume the revoked partitions");
                }
                let tps = list(tpl);
                tracing::info!(partitions = ?tps, "partitions revoked; committing what is done, dropping the rest");
                self.metrics.rebalanced("revoke", tps.len());
                let done = self.offsets().revoke(tps.clone());
                for tp in &tps {
                    self.metrics.forget_partition(&tp.topic, tp.partition);
                }
                if done.is_empty() {
                    return;
                }
                match to_tpl(&done) {
                    Ok(commit) => {
                        let result = consumer.commit(&commit, CommitMode::Sync);
                        self.metrics.offsets_committed(
                            done.len(),
                            result.as_ref().map(|_| ()).map_err(|e| e as _),
                        );
                    }
                    Err(e) => tracing::error!(error = %e, "cannot build the revoke commit"),
                }
            }
            Rebalance::Error(e) => tracing::warn!(error = %e, "rebalance error"),
        }
    }
}

/// Creates the group member and subscribes it to every stream's topic.
pub fn subscribe(
    cfg: &Config,
    metrics: &Metrics,
) -> Result<(Arc<SourceConsumer>, SourceContext), Error> {
    let context = SourceContext {
        offsets: Arc::default(),
        metrics: metrics.clone(),
    };
    let mut client = cfg.kafka.client_config();
    // Ours, unless the operator overrides them in `kafka.client` (applied last by `client_config`, re-applied here).
    let defaults = [
        ("group.id", cfg.group_id.as_str()),
        ("group.protocol", cfg.group_protocol.as_str()),
        ("enable.auto.commit", "false"),
        ("enable.auto.offset.store", "false"),
        ("auto.offset.reset", "earliest"),
        ("enable.partition.eof", "false"),
        ("statistics.interval.ms", "5000"),
        ("topic.metadata.refresh.interval.ms", "10000"),
        // librdkafka's default (1000 ms) stops fetching for a whole second once its local queue was full, so a
        // consumer that drains faster than that starves: with it, draining a backlog ran 15-20% slower, with gaps
        // of ~450 ms between batches.
        ("fetch.queue.backoff.ms", "10"),
    ];
    for (k, v) in defaults {
        client.set(k, v);
    }
    // With KIP-848 the broker assigns (incrementally); the classic protocol needs the cooperative assignor so a
    // rebalance revokes only what moves.
    if cfg.group_protocol == GroupProtocol::Classic {
        client.set("partition.assignment.strategy", "cooperative-sticky");
    }
    for (k, v) in &cfg.kafka.client {
        client.set(k, v);
    }
    if client.get("enable.auto.commit") == Some("true")
        && client.get("enable.auto.offset.store") != Some("false")
    {
        return Err(Error::Config(
            "enable.auto.commit=true requires enable.auto.offset.store=false".into(),
        ));
    }
    let consumer: SourceConsumer = client.create_with_context(context.clone())?;
    let topics: Vec<&str> = cfg.streams.iter().map(|s| s.topic.as_str()).collect();
    consumer.subscribe(&topics)?;
    Ok((Arc::new(consumer), context))
}

/// Commits `positions` synchronously off the async runtime.
pub async fn commit_sync(
    consumer: &Arc<SourceConsumer>,
    positions: Vec<Position>,
) -> Result<(), Error> {
    let tpl = to_tpl(&positions)?;
    let consumer = consumer.clone();
    tokio::task::spawn_blocking(move || consumer.commit(&tpl, CommitMode::Sync))
        .await
        .map_err(|e| Error::Config(format!("commit task failed: {e}")))??;
    Ok(())
}

/// Commits each partition's `(key, offset, metadata)`: the position it already has, again, with a block plan.
pub async fn commit_with_metadata(
    consumer: &Arc<SourceConsumer>,
    entries: Vec<(crate::block_plan::Key, i64, String)>,
) -> Result<(), Error> {
    if entries.is_empty() {
        return Ok(());
    }
    let mut tpl = TopicPartitionList::new();
    for ((topic, partition), offset, metadata) in &entries {
        tpl.add_partition_offset(topic, *partition, Offset::Offset(*offset))?;
        if let Some(mut elem) = tpl.find_partition(topic, *partition) {
            elem.set_metadata(metadata);
        }
    }
    let consumer = consumer.clone();
    tokio::task::spawn_blocking(move || consumer.commit(&tpl, CommitMode::Sync))
        .await
        .map_err(|e| Error::Config(format!("commit task failed: {e}")))??;
    Ok(())
}

/// The block plans committed with the group's offsets of `keys`, for those whose committed offset is the one the
/// plan was made at (any other plan is stale).
pub async fn committed_plans(
    consumer: &Arc<SourceConsumer>,
    keys: Vec<crate::block_plan::Key>,
) -> Result<HashMap<crate::block_plan::Key, crate::block_plan::Recorded>, Error> {
    if keys.is_empty() {
        return Ok(HashMap::new());
    }
    let mut tpl = TopicPartitionList::new();
    for (topic, partition) in &keys {
        tpl.add_partition(topic, *partition);
    }
    let consumer = consumer.clone();
    // librdkafka's metadata accessor panics on bytes that are not UTF-8 (some other tool's commit): a panic here
    // ends the blocking task, which reads as "no plans" below.
    let committed = tokio::task::spawn_blocking(move || {
        consumer
            .committed_offsets(tpl, Duration::from_secs(10))
            .map(|tpl| {
                tpl.elements()
                    .iter()
                    .filter_map(|e| match e.offset() {
                        Offset::Offset(at) => Some((
                            (e.topic().to_owned(), e.partition()),
                            at,
                            e.metadata().to_owned(),
                        )),
                        _ => None,
                    })
                    .collect::<Vec<_>>()
            })
    })
    .await
    .map_err(|e| Error::Config(format!("reading committed offsets failed: {e}")))??;
    Ok(committed
        .into_iter()
        .filter_map(|(key, at, metadata)| {
            crate::block_plan::decode(&metadata)
                .filter(|r| r.first == at)
                .map(|r| (key, r))
        })
        .collect())
}

/// Pauses or resumes `tps` (those no longer assigned are skipped by librdkafka's error, which is logged).
pub fn set_paused(consumer: &SourceConsumer, tps: &[TopicPartition], paused: bool) {
    let mut tpl = TopicPartitionList::new();
    for tp in tps {
        tpl.add_partition(&tp.topic, tp.partition);
    }
    let result = if paused {
        consumer.pause(&tpl)
    } else {
        consumer.resume(&tpl)
    };
    if let Err(e) = result {
        tracing::warn!(error = %e, paused, "pause/resume failed");
    }
}

/// The real group member behind the consume loop's port.
pub struct KafkaGroup {
    /// The group member.
    pub consumer: Arc<SourceConsumer>,
    /// Its rebalance context (owns the offset book).
    pub context: SourceContext,
}

impl GroupPort for KafkaGroup {
    fn messages(&self) -> BoxStream<'_, KafkaResult<Option<super::Received>>> {
        let mut counted = ConsumedCounter::default();
        let context = &self.context;
        self.consumer
            .stream()
            .map(move |m| {
                m.map(|m| {
                    use rdkafka::message::Message as _;
                    counted.inc(&context.metrics, m.topic());
                    context.receive(&m)
                })
            })
            .boxed()
    }

    fn set_paused(&self, tps: &[TopicPartition], paused: bool) {
        set_paused(&self.consumer, tps, paused);
    }

    fn offsets(&self) -> MutexGuard<'_, Offsets> {
        self.context.offsets()
    }

    async fn commit_moved(&self) -> Option<Vec<Position>> {
        self.context.commit_moved(&self.consumer).await
    }
}

/// The consumed-messages counter of the topic read last, so a run of messages from one topic costs no label lookup.
#[derive(Default)]
struct ConsumedCounter(Option<(String, prometheus::IntCounter)>);

impl ConsumedCounter {
    fn inc(&mut self, metrics: &Metrics, topic: &str) {
        match &self.0 {
            Some((t, c)) if t == topic => c.inc(),
            _ => {
                let c = metrics.consumed_counter(topic);
                c.inc();
                self.0 = Some((topic.to_owned(), c));
            }
        }
    }
}

/// How long librdkafka may take to leave the group on close.
pub const CLOSE_TIMEOUT: Duration = Duration::from_secs(10);
