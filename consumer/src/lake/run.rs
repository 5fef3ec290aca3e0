//! The lake loop: read → segments → publish (retried until it lands) → settle → commit.
//!
//! A segment is published whole before its offsets are settled, and a partition's segments are published in
//! order, so the committed position of a partition is always just past a published segment. On its first message
//! after an assignment a partition's manifests are read: segments recorded there but perhaps not committed are
//! cut again at the same bounds, and manifests behind the position are deleted.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use object_store::path::Path;
use rdkafka::message::{BorrowedMessage, Message};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::layout::Bounds;
use super::publish::Publisher;
use super::segment::{Segment, Segments};
use crate::metrics::Metrics;
use crate::offsets::TopicPartition;
use crate::source::Received;
use crate::source::kafka::{Paused, SourceConsumer, SourceContext, commit_sync};

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
    /// Partitions paused while a publish is retried.
    pub paused: Paused,
}

impl LakeLoop {
    /// Consumes until `shutdown`. Open segments are not published on the way out: their messages are read again.
    pub async fn run(mut self, shutdown: CancellationToken) {
        self.ready.store(true, Ordering::SeqCst);
        let mut last_prune = Instant::now();
        loop {
            let deadline = self.segments.next_deadline();
            tokio::select! {
                biased;
                () = shutdown.cancelled() => break,
                () = sleep_until_opt(deadline) => {}
                msg = self.consumer.recv() => match msg {
                    Ok(m) => {
                        if let Some(r) = receive(&self.context, &self.metrics, &m) {
                            self.accept(r, &shutdown).await;
                        }
                    }
                    Err(e) => {
                        self.metrics.retrying("kafka", 0, Duration::from_millis(100), &e);
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
            }
            let due = self.segments.due(std::time::Instant::now());
            self.queue.extend(due);
            if !self.queue.is_empty() {
                self.publish_queue(&shutdown).await;
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

    /// Takes a message into its partition's segment, reading the partition's manifests first if it is new.
    async fn accept(&mut self, r: Received, shutdown: &CancellationToken) {
        let tp = TopicPartition::new(r.message.topic(), r.message.partition());
        let Some(generation) = self.context.offsets().generation(&tp.topic, tp.partition) else {
            return;
        };
        if !self.segments.knows(&tp, generation) {
            let Some(pins) = self.recover(&tp, r.message.offset(), shutdown).await else {
                return;
            };
            self.segments.start(tp, generation, pins);
        }
        let done = self.segments.push(r, std::time::Instant::now());
        self.queue.extend(done);
    }

    /// The bounds of `tp`'s manifests at or after `from` (the group's position); deletes the ones behind it.
    /// Retried until the store answers; `None` on shutdown.
    async fn recover(
        &mut self,
        tp: &TopicPartition,
        from: i64,
        shutdown: &CancellationToken,
    ) -> Option<Vec<Bounds>> {
        let Some(table) = self
            .publisher
            .streams
            .get(&tp.topic)
            .map(|s| s.table.clone())
        else {
            return Some(Vec::new());
        };
        let lake = self.publisher.lake.clone();
        let dir = lake.layout().manifest_dir(&table, &tp.topic, tp.partition);
        let mut backoff = self.retry.backoff();
        let found = loop {
            match lake.manifests(&dir).await {
                Ok(found) => break found,
                Err(e) => {
                    let delay = backoff.next_delay();
                    self.metrics
                        .retrying("storage", backoff.attempts(), delay, &e);
                    tokio::select! {
                        () = shutdown.cancelled() => return None,
                        () = tokio::time::sleep(delay) => {}
                    }
                }
            }
        };
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
        Some(ahead)
    }

    /// Publishes the queued segments in order, each retried until it lands, its partition leaves, or shutdown.
    async fn publish_queue(&mut self, shutdown: &CancellationToken) {
        let mut backoff = self.retry.backoff();
        let mut give_up_at: Option<Instant> = None;
        while let Some(segment) = self.queue.pop_front() {
            let current = segment
                .messages
                .first()
                .is_some_and(|r| self.context.offsets().is_current(&r.receipt));
            if !current {
                tracing::info!(topic = %segment.tp.topic, partition = segment.tp.partition, "dropping a segment of a revoked partition");
                continue;
            }
            let (segment, result) = self.publisher.attempt(segment).await;
            match result {
                Ok(outcomes) => {
                    backoff = self.retry.backoff();
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
                Err(failure) => {
                    let delay = backoff.next_delay();
                    self.metrics
                        .retrying(failure.label(), backoff.attempts(), delay, &failure);
                    self.queue.push_front(segment);
                    self.pause_assigned();
                    if shutdown.is_cancelled() && give_up_at.is_none() {
                        give_up_at = Some(Instant::now() + self.grace);
                    }
                    if give_up_at.is_some_and(|t| Instant::now() >= t) {
                        tracing::warn!(
                            segments = self.queue.len(),
                            "shutdown grace over: leaving segments unpublished for redelivery"
                        );
                        self.queue.clear();
                        return;
                    }
                    self.wait(delay, shutdown).await;
                }
            }
        }
        self.resume_paused();
    }

    /// Sleeps `delay` while serving the group (rebalances, and messages still fetched, which join their segments).
    async fn wait(&mut self, delay: Duration, shutdown: &CancellationToken) {
        let until = Instant::now() + delay;
        loop {
            tokio::select! {
                () = tokio::time::sleep_until(until) => return,
                () = shutdown.cancelled() => return,
                msg = self.consumer.recv() => {
                    if let Some(r) = msg.ok().and_then(|m| receive(&self.context, &self.metrics, &m)) {
                        self.accept(r, shutdown).await;
                    }
                }
            }
        }
    }

    fn pause_assigned(&mut self) {
        self.paused.pause_assigned(&self.consumer, &self.context);
    }

    fn resume_paused(&mut self) {
        self.paused.resume(&self.consumer, &self.context);
    }

    /// Forgets the segments of partitions no longer assigned.
    fn prune_revoked(&mut self) {
        let assigned: HashSet<TopicPartition> =
            self.context.offsets().assigned().into_iter().collect();
        for tp in self.segments.partitions() {
            if !assigned.contains(&tp) {
                self.segments.forget(&tp);
            }
        }
    }

    /// Commits every position that moved, then deletes the manifests the commit put behind us.
    async fn commit(&mut self) {
        let positions = self.context.offsets().committable();
        if positions.is_empty() {
            return;
        }
        match commit_sync(&self.consumer, positions.clone()).await {
            Ok(()) => {
                self.context.offsets().committed(&positions);
                self.metrics.offsets_committed(positions.len(), Ok(()));
            }
            Err(e) => {
                self.metrics.offsets_committed(positions.len(), Err(&e));
                return;
            }
        }
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
    let receipt = context
        .offsets()
        .received(m.topic(), m.partition(), m.offset())?;
    Some(Received {
        message: m.detach(),
        receipt,
    })
}

async fn sleep_until_opt(deadline: Option<std::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(Instant::from_std(d)).await,
        None => std::future::pending().await,
    }
}
