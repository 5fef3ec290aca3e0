//! What a failed attempt left pending, held for the next try while every other partition flows: the ClickHouse
//! writer holds messages ([`Entry`]), the lake whole segments ([`Segment`]).
//!
//! A failure that may clear (a table being repaired, ClickHouse, storage or the DLQ unreachable) holds only what it
//! stopped: its partitions pause until a retry gives each message an outcome, and the read loop goes on reading,
//! writing and committing every other partition meanwhile. What of a held partition was already fetched joins the
//! held items, so a partition is always tried from its oldest pending message.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use rdkafka::message::Message;
use sluice_runtime::backoff::Backoff;
use tokio::time::Instant;

use crate::flush::Entry;
use crate::lake::segment::Segment;
use crate::offsets::TopicPartition;

/// Something a sink holds: one message, or a run of one partition's messages.
pub trait HeldItem {
    /// Its partition.
    fn partition(&self) -> TopicPartition;
    /// Its first offset.
    fn first_offset(&self) -> i64;
    /// How many messages it carries.
    fn messages(&self) -> usize;
}

impl HeldItem for Entry {
    fn partition(&self) -> TopicPartition {
        let m = &self.received.message;
        TopicPartition::new(m.topic(), m.partition())
    }
    fn first_offset(&self) -> i64 {
        self.received.message.offset()
    }
    fn messages(&self) -> usize {
        1
    }
}

impl HeldItem for Segment {
    fn partition(&self) -> TopicPartition {
        self.tp.clone()
    }
    fn first_offset(&self) -> i64 {
        self.bounds().first
    }
    fn messages(&self) -> usize {
        self.messages.len()
    }
}

/// The held items (in the order they were tried), their partitions and when they are tried again.
pub struct Held<T> {
    entries: Vec<T>,
    partitions: HashSet<TopicPartition>,
    /// When each held partition started waiting.
    since: HashMap<TopicPartition, Instant>,
    retry_at: Option<Instant>,
    backoff: Backoff,
}

/// One held partition, as metrics and the dashboard show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldPartition {
    /// The partition.
    pub partition: TopicPartition,
    /// Its oldest pending offset.
    pub first_offset: i64,
    /// How many of its messages are held.
    pub messages: usize,
    /// How long it has waited since its first failed attempt.
    pub waiting: Duration,
}

impl<T: HeldItem> Held<T> {
    /// Nothing held; retries back off as `backoff` says.
    pub fn new(backoff: Backoff) -> Self {
        Self {
            entries: Vec::new(),
            partitions: HashSet::new(),
            since: HashMap::new(),
            retry_at: None,
            backoff,
        }
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// How many messages are held.
    pub fn len(&self) -> usize {
        self.entries.iter().map(HeldItem::messages).sum()
    }

    /// The partitions whose messages are held (and so stay paused).
    pub fn partitions(&self) -> &HashSet<TopicPartition> {
        &self.partitions
    }

    /// When the held messages are tried again; `None` when nothing is held.
    pub fn retry_at(&self) -> Option<Instant> {
        (!self.is_empty()).then_some(self.retry_at).flatten()
    }

    /// Whether the held messages are due for their next try.
    pub fn is_due(&self) -> bool {
        self.retry_at().is_some_and(|t| Instant::now() >= t)
    }

    /// Makes the held messages due now (shutting down: what is left of the grace is spent trying).
    pub fn make_due(&mut self) {
        if !self.is_empty() {
            self.retry_at = Some(Instant::now());
        }
    }

    /// Moves the entries of held partitions out of `batch` to wait with the rest of their partition; returns
    /// whether any moved (then the batch's positions changed).
    pub fn absorb(&mut self, batch: &mut Vec<T>) -> bool {
        if self.partitions.is_empty() {
            return false;
        }
        let before = batch.len();
        let mut kept = Vec::with_capacity(before);
        for e in batch.drain(..) {
            if self.partitions.contains(&e.partition()) {
                self.entries.push(e);
            } else {
                kept.push(e);
            }
        }
        *batch = kept;
        batch.len() != before
    }

    /// Holds one more message, read while the held ones wait (shutting down).
    pub fn hold_more(&mut self, e: T) {
        self.entries.push(e);
        self.update_partitions();
    }

    /// Takes every held message for a try (their partitions stay paused until the try settles them).
    pub fn take(&mut self) -> Vec<T> {
        std::mem::take(&mut self.entries)
    }

    /// Holds `pending` (what a failed attempt left) until a backoff delay from now; returns the delay.
    pub fn hold(&mut self, pending: Vec<T>) -> Duration {
        self.entries.extend(pending);
        self.update_partitions();
        let delay = self.backoff.next_delay();
        self.retry_at = Some(Instant::now() + delay);
        delay
    }

    /// An attempt that held messages took part in left nothing pending: the partitions are free again and the
    /// next failure backs off from the start.
    pub fn recovered(&mut self, backoff: Backoff) {
        debug_assert!(self.entries.is_empty(), "a try takes every held message");
        self.partitions.clear();
        self.since.clear();
        self.retry_at = None;
        self.backoff = backoff;
    }

    /// Takes the held item that starts at `offset` of `tp` out (an operator dead-letters a message by hand);
    /// `None` if none is held here.
    pub fn take_one(&mut self, tp: &TopicPartition, offset: i64) -> Option<T> {
        let i = self
            .entries
            .iter()
            .position(|e| &e.partition() == tp && e.first_offset() == offset)?;
        let entry = self.entries.swap_remove(i);
        self.update_partitions();
        Some(entry)
    }

    /// Each held partition: its oldest pending offset, how many messages wait and for how long.
    pub fn summary(&self) -> Vec<HeldPartition> {
        let now = Instant::now();
        let mut by: HashMap<TopicPartition, (i64, usize)> = HashMap::new();
        for e in &self.entries {
            let offset = e.first_offset();
            let slot = by.entry(e.partition()).or_insert((offset, 0));
            slot.0 = slot.0.min(offset);
            slot.1 += e.messages();
        }
        let mut out: Vec<HeldPartition> = by
            .into_iter()
            .map(|(tp, (first_offset, messages))| HeldPartition {
                waiting: self.since.get(&tp).map_or(Duration::ZERO, |t| now - *t),
                partition: tp,
                first_offset,
                messages,
            })
            .collect();
        out.sort_by(|a, b| {
            (&a.partition.topic, a.partition.partition)
                .cmp(&(&b.partition.topic, b.partition.partition))
        });
        out
    }

    fn update_partitions(&mut self) {
        self.partitions = self.entries.iter().map(HeldItem::partition).collect();
        let now = Instant::now();
        self.since.retain(|tp, _| self.partitions.contains(tp));
        for tp in &self.partitions {
            self.since.entry(tp.clone()).or_insert(now);
        }
    }

    /// Tries made since the last recovery.
    pub fn attempts(&self) -> u32 {
        self.backoff.attempts()
    }
}
