//! The lake loop: read → segments → publish → settle → commit.
//!
//! A segment is published whole before its offsets are settled, and a partition's segments are published in
//! order, so the committed position of a partition is always just past a published segment. On its first message
//! after an assignment a partition's manifests are read: segments recorded there but perhaps not committed are
//! cut again at the same bounds, and manifests behind the position are deleted.
//!
//! Nothing here waits inline: a segment that fails to publish is [`Held`] with the rest of its partition, and a
//! partition whose manifests cannot be read waits in [`Awaiting`]; only those partitions pause, each is tried again
//! from the loop's timer, and the loop goes on polling (rebalances, the poll interval) and publishing every other
//! partition meanwhile.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use object_store::path::Path;
use rdkafka::message::{BorrowedMessage, Message};
use sluice_runtime::backoff::Backoff;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::layout::Bounds;
use super::publish::Publisher;
use super::segment::{Segment, Segments};
use crate::held::Held;
use crate::metrics::Metrics;
use crate::offsets::TopicPartition;
use crate::source::Received;
use crate::source::kafka::{Paused, SourceConsumer, SourceContext};

/// The running lake writer.
pub struct LakeLoop {
    /// The group member.
    pub consumer: Arc<SourceConsumer>,
    /// Its rebalance context.
    pub context: SourceContext,
    /// The publish step.
    pub publisher: Publisher,
    /// Open segments.
    pub segments: Segments,
    /// Shared consumer metrics.
    pub metrics: Metrics,
    /// Retry delays.
    pub retry: crate::config::RetrySettings,
    /// How long a shutdown waits for a segment being retried.
    pub grace: Duration,
    /// Set once consuming.
    pub ready: Arc<AtomicBool>,
    /// Segments complete and waiting to be published, in order.
    pub queue: VecDeque<Segment>,
    /// Manifests of published segments, deleted once their offsets are committed.
    pub published: Vec<(TopicPartition, Bounds, Path)>,
    /// Partitions paused: those held or awaiting their manifests.
    pub paused: Paused,
    /// Segments whose publish failed, with the rest of their partitions', until their next try.
    pub held: Held<Segment>,
    /// Partitions whose manifests could not be read yet, with the messages fetched for them meanwhile.
    pub awaiting: HashMap<TopicPartition, Awaiting>,
}

/// A partition whose manifests could not be read: nothing of it can be cut into segments until they are.
pub struct Awaiting {
    generation: u64,
    messages: Vec<Received>,
    backoff: Backoff,
    retry_at: Instant,
}

impl LakeLoop {
    /// Consumes until `shutdown`. Open segments are not published on the way out: their messages are read again.
    pub async fn run(mut self, shutdown: CancellationToken) {
        self.ready.store(true, Ordering::SeqCst);
        let mut last_prune = Instant::now();
        loop {
            let deadline = self.segments.next_deadline().map(Instant::from_std);
            let retry_at = [self.held.retry_at(), self.awaiting_retry_at()]
                .into_iter()
                .flatten()
                .min();
            tokio::select! {
                biased;
                () = shutdown.cancelled() => break,
                () = sluice_runtime::backoff::sleep_until_some(deadline) => {}
                () = sluice_runtime::backoff::sleep_until_some(retry_at) => {}
                msg = self.consumer.recv() => match msg {
                    Ok(m) => {
                        if let Some(r) = receive(&self.context, &self.metrics, &m) {
                            self.accept(r).await;
                        }
                    }
                    Err(e) => {
                        self.metrics.retrying("kafka", 0, Duration::from_millis(100), &e);
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
            }
            self.recover_due().await;
            let due = self.segments.due(std::time::Instant::now());
            self.queue.extend(due);
            if !self.queue.is_empty() || self.held.is_due() {
                self.publish_queue().await;
                self.commit().await;
            }
            if last_prune.elapsed() > Duration::from_secs(1) {
                self.prune_revoked();
                last_prune = Instant::now();
            }
            self.publisher
                .lake_metrics
                .open_bytes(self.segments.buffered());
        }
        self.ready.store(false, Ordering::SeqCst);
        self.finish_held().await;
        self.commit().await;
        tracing::info!(
            open_bytes = self.segments.buffered(),
            "shutting down: open segments are left to be read again"
        );
        let consumer = self.consumer.clone();
        drop(self);
        let _ = tokio::task::spawn_blocking(move || drop(consumer)).await;
        tracing::info!("left the group");
    }

    /// Shutting down: the held segments are tried until the grace is spent; what is left is read again.
    async fn finish_held(&mut self) {
        let give_up_at = Instant::now() + self.grace;
        while !self.held.is_empty() {
            let next = self.held.retry_at().unwrap_or(give_up_at).min(give_up_at);
            tokio::time::sleep_until(next).await;
            if Instant::now() >= give_up_at {
                tracing::warn!(
                    messages = self.held.len(),
                    "shutdown grace over: leaving segments unpublished for redelivery"
                );
                return;
            }
            self.held.make_due();
            self.publish_queue().await;
        }
    }

    /// Takes a message into its partition's segment, reading the partition's manifests first if it is new.
    async fn accept(&mut self, r: Received) {
        let tp = TopicPartition::new(r.message.topic(), r.message.partition());
        let Some(generation) = self.context.offsets().generation(&tp.topic, tp.partition) else {
            return;
        };
        if let Some(waiting) = self.awaiting.get_mut(&tp) {
            if waiting.generation == generation {
                waiting.messages.push(r);
                return;
            }
            self.awaiting.remove(&tp);
        }
        if !self.segments.knows(&tp, generation) {
            match self.recover(&tp, r.message.offset()).await {
                Ok(pins) => self.segments.start(tp, generation, pins),
                Err(e) => {
                    let mut backoff = self.retry.backoff();
                    let delay = backoff.next_delay();
                    self.metrics.retrying("storage", 1, delay, &e);
                    self.awaiting.insert(
                        tp,
                        Awaiting {
                            generation,
                            messages: vec![r],
                            backoff,
                            retry_at: Instant::now() + delay,
                        },
                    );
                    self.repause();
                    return;
                }
            }
        }
        let done = self.segments.push(r, std::time::Instant::now());
        self.queue.extend(done);
    }

    /// When the next partition awaiting its manifests is tried again.
    fn awaiting_retry_at(&self) -> Option<Instant> {
        self.awaiting.values().map(|a| a.retry_at).min()
    }

    /// Reads the manifests of the awaiting partitions that are due; a partition that gets them starts its segments
    /// with the messages fetched meanwhile and resumes.
    async fn recover_due(&mut self) {
        let now = Instant::now();
        let due: Vec<TopicPartition> = self
            .awaiting
            .iter()
            .filter(|(_, a)| a.retry_at <= now)
            .map(|(tp, _)| tp.clone())
            .collect();
        if due.is_empty() {
            return;
        }
        for tp in due {
            let Some(mut waiting) = self.awaiting.remove(&tp) else {
                continue;
            };
            let from = waiting.messages.first().map_or(0, |r| r.message.offset());
            match self.recover(&tp, from).await {
                Ok(pins) => {
                    self.segments.start(tp.clone(), waiting.generation, pins);
                    for r in waiting.messages {
                        let done = self.segments.push(r, std::time::Instant::now());
                        self.queue.extend(done);
                    }
                    tracing::info!(topic = %tp.topic, partition = tp.partition, "its manifests read: the partition goes on");
                }
                Err(e) => {
                    let delay = waiting.backoff.next_delay();
                    self.metrics
                        .retrying("storage", waiting.backoff.attempts(), delay, &e);
                    waiting.retry_at = Instant::now() + delay;
                    self.awaiting.insert(tp, waiting);
                }
            }
        }
        self.repause();
    }

    /// The bounds of `tp`'s manifests at or after `from` (the group's position); deletes the ones behind it.
    async fn recover(
        &self,
        tp: &TopicPartition,
        from: i64,
    ) -> Result<Vec<Bounds>, super::store::StoreError> {
        let Some(table) = self
            .publisher
            .streams
            .get(&tp.topic)
            .map(|s| s.table.clone())
        else {
            return Ok(Vec::new());
        };
        let lake = self.publisher.lake.clone();
        let dir = lake.layout().manifest_dir(&table, &tp.topic, tp.partition);
        let found = lake.manifests(&dir).await?;
        let (ahead, behind): (Vec<Bounds>, Vec<Bounds>) =
            found.into_iter().partition(|b| b.last >= from);
        for b in behind {
            let path = lake.layout().manifest(&table, &tp.topic, tp.partition, b);
            if let Err(e) = lake.delete(&path).await {
                tracing::warn!(error = %e, %path, "could not delete a committed segment's manifest");
            }
        }
        if !ahead.is_empty() {
            tracing::info!(topic = %tp.topic, partition = tp.partition, segments = ?ahead, "redoing segments recorded before a restart at their recorded bounds");
        }
        Ok(ahead)
    }

    /// Publishes the queued segments in order, one attempt each; the held ones too when their retry is due. A
    /// segment that fails is held with every later one of its partition, and only that partition pauses.
    async fn publish_queue(&mut self) {
        let retrying = self.held.is_due();
        if retrying {
            for segment in self.held.take().into_iter().rev() {
                self.queue.push_front(segment);
            }
        }
        let mut failed: Vec<Segment> = Vec::new();
        let mut failed_partitions: HashSet<TopicPartition> = HashSet::new();
        let mut failure = None;
        while let Some(segment) = self.queue.pop_front() {
            let current = segment
                .messages
                .first()
                .is_some_and(|r| self.context.offsets().is_current(&r.receipt));
            if !current {
                tracing::info!(topic = %segment.tp.topic, partition = segment.tp.partition, "dropping a segment of a revoked partition");
                continue;
            }
            if failed_partitions.contains(&segment.tp) {
                failed.push(segment);
                continue;
            }
            if !retrying && self.held.partitions().contains(&segment.tp) {
                self.held.hold_more(segment);
                continue;
            }
            let (segment, result) = self.publisher.attempt(segment).await;
            match result {
                Ok(outcomes) => self.settle(segment, outcomes),
                Err(f) => {
                    failed_partitions.insert(segment.tp.clone());
                    failed.push(segment);
                    failure = Some(f);
                }
            }
        }
        match failure {
            Some(failure) => {
                let delay = self.held.hold(failed);
                self.metrics
                    .retrying(failure.label(), self.held.attempts(), delay, &failure);
                self.metrics
                    .held_partitions(&self.held.summary(), Some((failure.label(), &failure)));
            }
            None => {
                if retrying && self.held.is_empty() {
                    self.held.recovered(self.retry.backoff());
                }
                self.metrics.held_partitions(&self.held.summary(), None);
            }
        }
        self.repause();
    }

    /// A published segment: its manifest is kept for deletion after the commit, its messages settled.
    fn settle(&mut self, segment: Segment, outcomes: Vec<crate::offsets::Outcome>) {
        let table = self
            .publisher
            .streams
            .get(&segment.tp.topic)
            .map(|s| s.table.clone());
        if let Some(table) = table {
            let b = segment.bounds();
            let path = self.publisher.lake.layout().manifest(
                &table,
                &segment.tp.topic,
                segment.tp.partition,
                b,
            );
            self.published.push((segment.tp.clone(), b, path));
        }
        let mut offsets = self.context.offsets();
        for (r, outcome) in segment.messages.into_iter().zip(outcomes) {
            offsets.settle(r.receipt, outcome);
        }
    }

    /// Pauses exactly the partitions that wait: held, or awaiting their manifests.
    fn repause(&mut self) {
        let mut waiting: HashSet<TopicPartition> = self.held.partitions().clone();
        waiting.extend(self.awaiting.keys().cloned());
        self.paused
            .pause_only(&self.consumer, &self.context, &waiting);
    }

    /// Forgets the segments, and the awaiting messages, of partitions no longer assigned.
    fn prune_revoked(&mut self) {
        let assigned: HashSet<TopicPartition> =
            self.context.offsets().assigned().into_iter().collect();
        for tp in self.segments.partitions() {
            if !assigned.contains(&tp) {
                self.segments.forget(&tp);
            }
        }
        let before = self.awaiting.len();
        self.awaiting.retain(|tp, _| assigned.contains(tp));
        if self.awaiting.len() != before {
            self.repause();
        }
    }

    /// Commits every position that moved, then deletes the manifests the commit put behind us.
    async fn commit(&mut self) {
        let Some(positions) = self.context.commit_moved(&self.consumer).await else {
            return;
        };
        let behind = |tp: &TopicPartition, b: &Bounds| {
            positions
                .iter()
                .any(|p| &p.partition == tp && p.next_offset > b.last)
        };
        let (done, keep): (Vec<_>, Vec<_>) = std::mem::take(&mut self.published)
            .into_iter()
            .partition(|(tp, b, _)| behind(tp, b));
        self.published = keep;
        for (_, _, path) in done {
            if let Err(e) = self.publisher.lake.delete(&path).await {
                tracing::warn!(error = %e, %path, "could not delete a committed segment's manifest");
            }
        }
    }
}

/// Takes a message into the offset book; `None` if its partition is no longer ours.
fn receive(
    context: &SourceContext,
    metrics: &Metrics,
    m: &BorrowedMessage<'_>,
) -> Option<Received> {
    metrics.consumed(m.topic());
    context.receive(m)
}
