//! The consume → flush → commit loop.
//!
//! A flush makes one attempt at every message read since the last one (and at the held ones, when due); the
//! receipts of the messages that got an outcome (inserted, dead-lettered, or dropped because their partition
//! left) are settled and the offsets committed. The steps of one attempt are [`crate::flush`]'s; this loop owns
//! the Kafka side. Messages a failed attempt left pending are [`Held`]: only their partitions pause, and they are
//! tried again with backoff while the read loop keeps polling (the group membership and rebalances keep working)
//! and every other partition keeps flowing.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::{FutureExt, StreamExt};
use rdkafka::message::{BorrowedMessage, Message};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::batch::Batch;
use crate::block_plan::{self, BlockPlan};
use crate::config::Config;
use crate::dlq::DlqProducer;
use crate::error::Error;
use crate::flush::{Entry, Flush, Stream, mark_revoked, observe_freshness, settle};
use crate::held::Held;
use crate::metrics::Metrics;
use crate::offsets::Outcome;
use crate::offsets::TopicPartition;
use crate::operator;
use crate::predecode::{SharedSnapshot, predecode_into};
use crate::registry::SchemaRegistry;
use crate::rows::Decoded;
use crate::sink::clickhouse::ClickHouseSink;
use crate::source::Received;
use crate::source::kafka::{
    Paused, SourceConsumer, SourceContext, commit_with_metadata, committed_plans, set_paused,
};

/// What the pipeline is made of.
pub struct Parts {
    /// The group member.
    pub consumer: Arc<SourceConsumer>,
    /// Its rebalance context (owns the offset book).
    pub context: SourceContext,
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
    /// Set once the pipeline is consuming.
    pub ready: Arc<AtomicBool>,
    /// Operators' requests to dead-letter a held message by hand.
    pub operator: tokio::sync::mpsc::Receiver<operator::Request>,
}

/// The flush against the real services.
type LiveFlush = Flush<ClickHouseSink, DlqProducer, SchemaRegistry>;

/// The running loop.
pub struct Pipeline {
    flush: LiveFlush,
    consumer: Arc<SourceConsumer>,
    context: SourceContext,
    metrics: Metrics,
    ready: Arc<AtomicBool>,
    cfg: Config,
    paused: Paused,
    /// Messages a failed attempt left pending, and when they are tried again.
    held: Held<Entry>,
    /// What the read loop may decode ahead with.
    snapshot: SharedSnapshot,
    /// Operators' requests, taken by the read loop.
    operator: Option<tokio::sync::mpsc::Receiver<operator::Request>>,
    /// The assignment generation of each partition whose committed block plan was read (once per assignment).
    plans_read: HashMap<block_plan::Key, u64>,
}

/// Messages decoded ahead at a time while a batch is read.
const PREDECODE_CHUNK: usize = 2_000;

/// Most messages taken from librdkafka's queue in one go, about a millisecond of work.
const DRAIN_READY: usize = 1_000;

impl Pipeline {
    /// A pipeline over `parts`.
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
            consumer: parts.consumer,
            context: parts.context,
            metrics: parts.metrics,
            ready: parts.ready,
            paused: Paused::default(),
            held: Held::new(cfg.retry.backoff()),
            operator: Some(parts.operator),
            cfg,
            plans_read: HashMap::new(),
        }
    }

    /// Consumes until `shutdown`, then flushes what it holds (within the grace period), commits and leaves.
    ///
    /// One flush runs while the next batch is read: the insert and commit of batch N overlap the receiving of
    /// batch N+1, whose receipts stay outstanding, so a commit still never passes a message that is not done.
    pub async fn run(mut self, shutdown: CancellationToken) -> Result<(), Error> {
        let mut batch = Batch::new(self.cfg.batch.clone());
        let mut operator = self.operator.take();
        self.ready.store(true, Ordering::SeqCst);
        let consumer = self.consumer.clone();
        // Reading needs only these two; the flush in flight owns the rest.
        let context = self.context.clone();
        let metrics = self.metrics.clone();
        let snapshot = self.snapshot.clone();
        // The batch's rows decoded so far, and how many of its messages that covers.
        let mut pre = Decoded::default();
        let mut decoded_upto = 0;
        let mut flusher = Flusher::Idle(Box::new(self));
        // One stream for the whole run: `recv()` registers and drops a waker slot per message.
        let mut messages = consumer.stream();
        let mut counted = ConsumedCounter::default();
        loop {
            let deadline = batch.deadline();
            let due: bool;
            let retry_at = flusher.retry_at();
            tokio::select! {
                biased;
                () = shutdown.cancelled() => break,
                done = flusher.finished() => {
                    due = batch.is_worth_flushing(now_ms()) || done.held.is_due();
                    flusher = Flusher::Idle(Box::new(done));
                }
                () = sleep_until_some_std(deadline) => due = true,
                () = sluice_runtime::backoff::sleep_until_some(retry_at) => due = true,
                Some(request) = recv_opt(&mut operator) => {
                    let mut pipeline = flusher.idle().await;
                    let answer = pipeline.dead_letter_by_hand(&request.skip).await;
                    let _ = request.reply.send(answer);
                    due = pipeline.held.is_due();
                    flusher = Flusher::Idle(Box::new(pipeline));
                }
                msg = messages.next() => {
                    let mut next = Some(msg);
                    // What librdkafka already holds is taken without going back through `select!` (a timer and
                    // four polls per message), up to a bound so shutdown and a finished flush are still seen soon.
                    for taken in 0..DRAIN_READY {
                        if taken > 0 {
                            // Only ever asked for a message this iteration handles: one taken and dropped would
                            // be a gap the commit passes over.
                            match messages.next().now_or_never() {
                                Some(m) => next = Some(m),
                                None => break,
                            }
                        }
                        match next.take().flatten() {
                            Some(Ok(m)) => {
                                if let Some(r) = receive(&context, &mut counted, &metrics, &m) {
                                    batch.push(r);
                                }
                                // Decoding a chunk at a time, between reads, overlaps the insert in flight and
                                // leaves little to decode when the batch is flushed.
                                if batch.len() - decoded_upto >= PREDECODE_CHUNK {
                                    predecode_into(&snapshot.current(), batch.items(), decoded_upto, &mut pre);
                                    decoded_upto = batch.len();
                                }
                            }
                            Some(Err(e)) => {
                                metrics.retrying("kafka", 0, Duration::from_millis(100), &e);
                                tokio::time::sleep(Duration::from_millis(100)).await;
                                break;
                            }
                            None => break,
                        }
                        if batch.is_full() {
                            break;
                        }
                    }
                    due = batch.is_full() || (flusher.is_idle() && batch.is_worth_flushing(now_ms()));
                }
            }
            if due {
                // At most one flush runs, and the next waits for it, which bounds memory to two batches.
                let entries = batch.take();
                predecode_into(&snapshot.current(), &entries, decoded_upto, &mut pre);
                let ahead = std::mem::take(&mut pre);
                decoded_upto = 0;
                let mut pipeline = match flusher {
                    Flusher::Idle(p) => *p,
                    Flusher::Busy(busy) => {
                        let mut fetched = Vec::new();
                        let serving = Serving {
                            consumer: &consumer,
                            context: &context,
                            metrics: &metrics,
                        };
                        let p = serving
                            .wait_for(busy, &mut messages, &mut counted, &mut fetched)
                            .await;
                        // Already fetched when everything paused: the next batch starts with them, in order.
                        for r in fetched {
                            batch.push(r);
                        }
                        p
                    }
                };
                // The flush before this one is done with its buffers: the batch read next fills them.
                pre.add_spare(pipeline.flush.take_spare());
                flusher = Flusher::Busy(Box::pin(async move {
                    pipeline.write(entries, Some(ahead)).await;
                    pipeline
                }));
            }
        }
        drop(messages);
        let mut pipeline = flusher.idle().await;
        tracing::info!(
            pending = batch.len(),
            "shutting down: flushing the last batch"
        );
        pipeline.write(batch.take(), None).await;
        pipeline.finish_held().await;
        pipeline.ready.store(false, Ordering::SeqCst);
        pipeline.commit().await;
        // Dropping the last handle closes the consumer: it leaves the group (the revoke callback commits nothing
        // new, everything done is committed above). Closing blocks, so do it off the runtime.
        drop(pipeline);
        let _ = tokio::task::spawn_blocking(move || drop(consumer)).await;
        tracing::info!("left the group");
        Ok(())
    }

    /// Makes one attempt at `entries` (and at the held messages when they are due), settles what got an outcome,
    /// holds what is still pending, pauses exactly the partitions held, and commits.
    async fn write(&mut self, mut entries: Vec<Entry>, mut ahead: Option<Decoded>) {
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
        let count = entries.len();
        let started = Instant::now();
        let plan = if self.flush.dedups_blocks() {
            self.plan_blocks(&entries).await
        } else {
            BlockPlan::default()
        };
        self.flush.set_plan(plan);
        let revoked = mark_revoked(&mut entries, &self.context.offsets());
        if revoked > 0 {
            tracing::info!(
                dropped = revoked,
                "dropping pending messages of revoked partitions"
            );
        }
        let result = self.flush.attempt(&mut entries, ahead).await;
        observe_freshness(&entries, &self.metrics);
        settle(&mut entries, &mut self.context.offsets());
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
        self.paused
            .pause_only(&self.consumer, &self.context, self.held.partitions());
        let written = started.elapsed();
        self.commit().await;
        tracing::debug!(
            messages = count,
            held = self.held.len(),
            write_ms = written.as_millis() as u64,
            commit_ms = (started.elapsed() - written).as_millis() as u64,
            "batch flushed"
        );
    }

    /// Dead-letters the held message `skip` names (class `operator`), so its partition moves on: the rest of the
    /// held messages are tried again at once and the commit passes it. Returns the DLQ topic.
    async fn dead_letter_by_hand(
        &mut self,
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
                self.context
                    .offsets()
                    .settle_held(&entry.received.receipt, Outcome::DeadLettered);
                self.held.make_due();
                self.paused
                    .pause_only(&self.consumer, &self.context, self.held.partitions());
                self.metrics.held_partitions(&self.held.summary(), None);
                self.commit().await;
                Ok(dlq_topic)
            }
            Err(failure) => {
                self.held.hold_more(entry);
                Err(operator::Refused::Dlq(failure.to_string()))
            }
        }
    }

    /// Shutting down: tries the held messages until they are done or the grace period runs out, serving the group
    /// meanwhile; what is left stays uncommitted for redelivery.
    async fn finish_held(&mut self) {
        let give_up_at = Instant::now() + self.cfg.shutdown_grace();
        let consumer = self.consumer.clone();
        while !self.held.is_empty() {
            let Some(retry_at) = self.held.retry_at() else {
                break;
            };
            if Instant::now() >= give_up_at {
                tracing::warn!(
                    messages = self.held.len(),
                    "shutdown grace over: leaving the held messages uncommitted for redelivery"
                );
                return;
            }
            let wake = retry_at.min(give_up_at);
            loop {
                tokio::select! {
                    () = tokio::time::sleep_until(wake) => break,
                    msg = consumer.recv() => {
                        // Keeps the group membership alive and serves rebalances; a message still in librdkafka's
                        // fetch queue waits with the held ones, so no received offset is passed over.
                        if let Some(r) = msg.ok().and_then(|m| receive(&self.context, &mut ConsumedCounter::default(), &self.metrics, &m)) {
                            self.held.hold_more(Entry::new(r));
                        }
                    }
                }
            }
            self.held.make_due();
            self.write(Vec::new(), None).await;
        }
    }

    /// Where this batch's blocks end, one per partition unless a crashed owner's plan for the same position cut
    /// it earlier; recorded with the group's offsets before anything is inserted (see [`crate::block_plan`]). A
    /// plan that cannot be read or recorded is logged: the batch is then cut as if fresh, and copies of rows that
    /// landed before a crash collapse in `FINAL` instead of being dropped by the server.
    async fn plan_blocks(&mut self, entries: &[Entry]) -> BlockPlan {
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
            let offsets = self.context.offsets();
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
            &self.consumer,
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
        if let Err(e) = commit_with_metadata(&self.consumer, plan.metadata(&ranges)).await {
            tracing::warn!(error = %e, "could not record the block plan; a batch rebuilt after a crash may be cut elsewhere");
        }
        plan
    }

    /// Commits every position that moved; a failure is counted and the positions are retried with the next commit.
    async fn commit(&mut self) {
        self.context.commit_moved(&self.consumer).await;
    }
}

/// How long a due batch waits for the flush in flight before the read loop pauses everything and polls while it
/// waits: flushes shorter than this (nearly all) cost no pause.
const SERVE_THE_GROUP_AFTER: Duration = Duration::from_secs(1);

/// What the read loop needs to keep serving the group while a long flush runs.
struct Serving<'a> {
    consumer: &'a SourceConsumer,
    context: &'a SourceContext,
    metrics: &'a Metrics,
}

impl Serving<'_> {
    /// Waits for the flush in flight while keeping the group membership: a flush can take minutes (bisecting
    /// hundreds of refused rows, an insert at its timeout), and a member that stops polling for
    /// `max.poll.interval.ms` is expelled and its batch read again by the next owner. After a moment every assigned
    /// partition pauses and the stream is polled (serving rebalances and the poll interval); messages fetched
    /// before the pause go to `fetched`, to be read into the next batch.
    async fn wait_for(
        &self,
        mut busy: Pin<Box<dyn Future<Output = Pipeline> + Send>>,
        messages: &mut (
                 impl futures::Stream<Item = rdkafka::error::KafkaResult<BorrowedMessage<'_>>> + Unpin
             ),
        counted: &mut ConsumedCounter,
        fetched: &mut Vec<Received>,
    ) -> Pipeline {
        tokio::select! {
            p = &mut busy => return p,
            () = tokio::time::sleep(SERVE_THE_GROUP_AFTER) => {}
        }
        let mut paused: HashSet<TopicPartition> =
            self.context.offsets().assigned().into_iter().collect();
        set_paused(
            self.consumer,
            &paused.iter().cloned().collect::<Vec<_>>(),
            true,
        );
        tracing::debug!(
            partitions = paused.len(),
            "a long flush: paused everything to serve the group meanwhile"
        );
        let pipeline = loop {
            tokio::select! {
                p = &mut busy => break p,
                msg = messages.next() => {
                    if let Some(Ok(m)) = msg
                        && let Some(r) = receive(self.context, counted, self.metrics, &m)
                    {
                        let tp = TopicPartition::new(r.receipt.topic(), r.receipt.partition());
                        // Assigned during the wait: paused too, so nothing more piles up here.
                        if paused.insert(tp.clone()) {
                            set_paused(self.consumer, &[tp], true);
                        }
                        fetched.push(r);
                    }
                }
            }
        };
        // Every partition paused here is resumed, still assigned or not: one revoked meanwhile keeps librdkafka's
        // pause flag if it comes back (see the rebalance callback).
        let resume: Vec<TopicPartition> = paused.into_iter().collect();
        set_paused(self.consumer, &resume, false);
        // The partitions the pipeline holds stay paused.
        pipeline.paused.reapply(self.consumer);
        pipeline
    }
}

/// The pipeline between batches, or a flush of it running while the next batch is read.
enum Flusher {
    Idle(Box<Pipeline>),
    Busy(Pin<Box<dyn Future<Output = Pipeline> + Send>>),
}

impl Flusher {
    /// The pipeline once no flush is running.
    async fn idle(self) -> Pipeline {
        match self {
            Flusher::Idle(p) => *p,
            Flusher::Busy(f) => f.await,
        }
    }

    /// Whether no flush is running.
    fn is_idle(&self) -> bool {
        matches!(self, Flusher::Idle(_))
    }

    /// When the idle pipeline's held messages are due; `None` while a flush runs (it decides again when done).
    fn retry_at(&self) -> Option<Instant> {
        match self {
            Flusher::Idle(p) => p.held.retry_at(),
            Flusher::Busy(_) => None,
        }
    }

    /// Completes with the pipeline when the running flush ends; never while idle.
    async fn finished(&mut self) -> Pipeline {
        match self {
            Flusher::Idle(_) => std::future::pending().await,
            Flusher::Busy(f) => f.await,
        }
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

/// Takes a message read from Kafka into the offset book; `None` if its partition is no longer ours.
fn receive(
    context: &SourceContext,
    counted: &mut ConsumedCounter,
    metrics: &Metrics,
    m: &BorrowedMessage<'_>,
) -> Option<Received> {
    counted.inc(metrics, m.topic());
    context.receive(m)
}

/// Wall-clock milliseconds since the epoch, as Kafka timestamps count them.
fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// The next request of `rx`; pending forever without one.
async fn recv_opt<T>(rx: &mut Option<tokio::sync::mpsc::Receiver<T>>) -> Option<T> {
    match rx {
        Some(r) => r.recv().await,
        None => std::future::pending().await,
    }
}

async fn sleep_until_some_std(deadline: Option<std::time::Instant>) {
    sluice_runtime::backoff::sleep_until_some(deadline.map(Instant::from_std)).await;
}
