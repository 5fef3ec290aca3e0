//! The lake's write step, under the shared consume loop ([`crate::consume`]): messages → segments → publish →
//! settle.
//!
//! A segment is published whole before its offsets are settled, and a partition's segments are published in
//! order, so the committed position of a partition is always just past a published segment. On its first message
//! after an assignment a partition's manifests are read: segments recorded there but perhaps not committed are
//! cut again at the same bounds, and manifests behind the position are deleted.
//!
//! Nothing here waits inline: a segment that fails to publish is [`Held`] with the rest of its partition, and a
//! partition whose manifests cannot be read waits in [`Awaiting`]; only those partitions pause (the loop asks
//! [`Sink::waiting`]), each is tried again when [`Sink::wake_at`] comes, and the loop goes on polling and
//! publishing every other partition meanwhile.

use std::collections::{HashMap, HashSet, VecDeque};

use object_store::path::Path;
use rdkafka::message::Message;
use sluice_runtime::backoff::Backoff;
use tokio::time::Instant;

use super::layout::Bounds;
use super::publish::Publisher;
use super::segment::{Segment, Segments};
use crate::config::RetrySettings;
use crate::consume::{Group, GroupPort, Sink};
use crate::flush::Entry;
use crate::held::Held;
use crate::offsets::{Position, TopicPartition};
use crate::source::Received;

/// How often segments of partitions no longer assigned are forgotten.
const PRUNE_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// The lake's write step.
pub struct LakeStep {
    /// The publish step.
    publisher: Publisher,
    /// Open segments.
    segments: Segments,
    /// Retry delays.
    retry: RetrySettings,
    /// Segments complete and waiting to be published, in order.
    queue: VecDeque<Segment>,
    /// Manifests of published segments, deleted once their offsets are committed.
    published: Vec<(TopicPartition, Bounds, Path)>,
    /// Segments whose publish failed, with the rest of their partitions', until their next try.
    held: Held<Segment>,
    /// Partitions whose manifests could not be read yet, with the messages fetched for them meanwhile.
    awaiting: HashMap<TopicPartition, Awaiting>,
    last_prune: Instant,
}

/// A partition whose manifests could not be read: nothing of it can be cut into segments until they are.
struct Awaiting {
    generation: u64,
    messages: Vec<Received>,
    backoff: Backoff,
    retry_at: Instant,
}

impl LakeStep {
    /// Publishes with `publisher`, cutting segments with `segments`.
    pub fn new(publisher: Publisher, segments: Segments, retry: RetrySettings) -> Self {
        Self {
            publisher,
            segments,
            held: Held::new(retry.backoff()),
            retry,
            queue: VecDeque::new(),
            published: Vec::new(),
            awaiting: HashMap::new(),
            last_prune: Instant::now(),
        }
    }

    /// Takes a message into its partition's segment, reading the partition's manifests first if it is new.
    async fn accept<K: GroupPort>(&mut self, group: &Group<K>, r: Received) {
        let tp = TopicPartition::new(r.message.topic(), r.message.partition());
        let Some(generation) = group.port.offsets().generation(&tp.topic, tp.partition) else {
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
                    group.metrics.retrying("storage", 1, delay, &e);
                    self.awaiting.insert(
                        tp,
                        Awaiting {
                            generation,
                            messages: vec![r],
                            backoff,
                            retry_at: Instant::now() + delay,
                        },
                    );
                    return;
                }
            }
        }
        let done = self.segments.push(r, std::time::Instant::now());
        self.queue.extend(done);
    }

    /// Reads the manifests of the awaiting partitions that are due; a partition that gets them starts its segments
    /// with the messages fetched meanwhile and resumes.
    async fn recover_due<K: GroupPort>(&mut self, group: &Group<K>) {
        let now = Instant::now();
        let due: Vec<TopicPartition> = self
            .awaiting
            .iter()
            .filter(|(_, a)| a.retry_at <= now)
            .map(|(tp, _)| tp.clone())
            .collect();
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
                    group
                        .metrics
                        .retrying("storage", waiting.backoff.attempts(), delay, &e);
                    waiting.retry_at = Instant::now() + delay;
                    self.awaiting.insert(tp, waiting);
                }
            }
        }
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
    /// segment that fails is held with every later one of its partition, and only that partition waits.
    async fn publish_queue<K: GroupPort>(&mut self, group: &Group<K>) {
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
                .is_some_and(|r| group.port.offsets().is_current(&r.receipt));
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
                Ok(outcomes) => self.settle(group, segment, outcomes),
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
                group
                    .metrics
                    .retrying(failure.label(), self.held.attempts(), delay, &failure);
                group
                    .metrics
                    .held_partitions(&self.held.summary(), Some((failure.label(), &failure)));
            }
            None => {
                if retrying && self.held.is_empty() {
                    self.held.recovered(self.retry.backoff());
                }
                group.metrics.held_partitions(&self.held.summary(), None);
            }
        }
    }

    /// A published segment: its manifest is kept for deletion after the commit, its messages settled.
    fn settle<K: GroupPort>(
        &mut self,
        group: &Group<K>,
        segment: Segment,
        outcomes: Vec<crate::offsets::Outcome>,
    ) {
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
        let mut offsets = group.port.offsets();
        for (r, outcome) in segment.messages.into_iter().zip(outcomes) {
            offsets.settle(r.receipt, outcome);
        }
    }

    /// Forgets the segments, and the awaiting messages, of partitions no longer assigned.
    fn prune_revoked<K: GroupPort>(&mut self, group: &Group<K>) {
        let assigned: HashSet<TopicPartition> =
            group.port.offsets().assigned().into_iter().collect();
        for tp in self.segments.partitions() {
            if !assigned.contains(&tp) {
                self.segments.forget(&tp);
            }
        }
        self.awaiting.retain(|tp, _| assigned.contains(tp));
    }
}

impl<K: GroupPort> Sink<K> for LakeStep {
    type Ahead = ();

    fn read_ahead(&self) {}

    /// Cuts `batch` into segments and publishes every segment that is due (and the held ones, when their retry
    /// is). Open segments stay open: their messages are settled only once published.
    async fn write(&mut self, group: &Group<K>, batch: Vec<Entry>, _: Option<()>) {
        if self.last_prune.elapsed() >= PRUNE_EVERY {
            self.prune_revoked(group);
            self.last_prune = Instant::now();
        }
        for e in batch {
            self.accept(group, e.received).await;
        }
        self.recover_due(group).await;
        let due = self.segments.due(std::time::Instant::now());
        self.queue.extend(due);
        if !self.queue.is_empty() || self.held.is_due() {
            self.publish_queue(group).await;
        }
        self.publisher
            .lake_metrics
            .open_bytes(self.segments.buffered());
    }

    fn spare(&mut self) {}

    fn wake_at(&self) -> Option<Instant> {
        let segment = self.segments.next_deadline().map(Instant::from_std);
        let awaiting = self.awaiting.values().map(|a| a.retry_at).min();
        [segment, self.held.retry_at(), awaiting]
            .into_iter()
            .flatten()
            .min()
    }

    fn waiting(&self) -> HashSet<TopicPartition> {
        let mut waiting = self.held.partitions().clone();
        waiting.extend(self.awaiting.keys().cloned());
        waiting
    }

    fn holds(&self) -> usize {
        self.held.len()
    }

    fn make_due(&mut self) {
        self.held.make_due();
    }

    /// Deletes the manifests the commit put behind the group.
    async fn committed(&mut self, positions: &[Position]) {
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
