//! One flush attempt, as its steps: resolve writer schemas → prepare the streams (tables, readers) → decode →
//! insert → dead-letter. Each step records what became of each message on its [`Entry`]; the write step then
//! settles the receipts of the entries that have an outcome (the only way an offset can move) and commits.
//!
//! Failures go through [`verdict`] one by one: a message at fault gets a [`Letter`] and is dead-lettered in the
//! same attempt; anything else fails the attempt, so the write step backs off and tries the messages still pending.
//! The steps talk to ClickHouse, the registry and the DLQ only through the [`ports`] traits.

mod dead_letter;
mod insert;
pub mod ports;
mod stream;
#[cfg(test)]
mod tests;
mod writers;

use std::collections::HashMap;
use std::sync::Arc;

use rdkafka::message::Message;

use crate::block_plan::BlockPlan;
use crate::decode::Reader;
use crate::dlq::Letter;
use crate::metrics::Metrics;
use crate::offsets::{Offsets, Outcome};
use crate::predecode::{SharedSnapshot, Snapshot, SnapshotStream};
use crate::rows::{Decoded, RowBuffers, SchemaLookup, Writer, decode_into};
use crate::source::Received;
use crate::verdict::{Failure, Verdict, verdict};
use ports::{DeadLetterSink, RowSink, SchemaSource};
pub use stream::Stream;
pub use writers::UnknownIds;
use writers::{Blocked, Writers};

/// A message of the batch being flushed and, once decided, what became of it.
#[derive(Debug)]
pub struct Entry {
    /// The message and its receipt.
    pub received: Received,
    /// `None` while pending.
    pub outcome: Option<Outcome>,
}

impl Entry {
    /// A pending entry.
    pub fn new(received: Received) -> Self {
        Self {
            received,
            outcome: None,
        }
    }

    /// Whether nothing became of the message yet.
    pub fn is_pending(&self) -> bool {
        self.outcome.is_none()
    }

    fn topic(&self) -> &str {
        self.received.message.topic()
    }
}

/// Marks the pending entries whose partition was revoked since they were read (they are the new owner's now);
/// returns how many.
pub fn mark_revoked(entries: &mut [Entry], offsets: &Offsets) -> usize {
    let mut revoked = 0;
    for e in entries.iter_mut().filter(|e| e.is_pending()) {
        if !offsets.is_current(&e.received.receipt) {
            e.outcome = Some(Outcome::Revoked);
            revoked += 1;
        }
    }
    revoked
}

/// Settles the receipt of every entry that has an outcome and removes it; the pending ones stay. Returns how
/// many were settled.
pub fn settle(entries: &mut Vec<Entry>, offsets: &mut Offsets) -> usize {
    let before = entries.len();
    // In place: a batch is tens of thousands of entries, and moving each out (into new vectors, or out of
    // `extract_if`) was 3.5-4% of the consumer's CPU while draining.
    entries.retain(|e| match e.outcome {
        Some(outcome) => {
            offsets.settle_held(&e.received.receipt, outcome);
            false
        }
        None => true,
    });
    before - entries.len()
}

/// Records how fresh the inserted rows of `entries` were: the ages of the oldest and the newest, so the
/// histogram's spread shows both the worst row and the typical batch.
pub fn observe_freshness(entries: &[Entry], metrics: &Metrics) {
    let now = chrono::Utc::now().timestamp_millis();
    let (mut oldest, mut newest) = (i64::MAX, i64::MIN);
    for e in entries
        .iter()
        .filter(|e| e.outcome == Some(Outcome::Inserted))
    {
        if let Some(t) = e.received.message.timestamp().to_millis() {
            oldest = oldest.min(t);
            newest = newest.max(t);
        }
    }
    if oldest <= newest {
        for t in [oldest, newest] {
            let age = u64::try_from(now.saturating_sub(t)).unwrap_or(0);
            metrics.fresh(std::time::Duration::from_millis(age));
        }
    }
}

/// The failures of one attempt, judged: letters for the messages at fault, and the first failure to retry.
#[derive(Debug, Default)]
struct Judged {
    letters: Vec<(usize, Letter)>,
    retry: Option<Failure>,
}

impl Judged {
    /// Files `failure` of entry `i` under what [`verdict`] says it is.
    fn judge(&mut self, i: usize, failure: Failure) {
        match verdict(&failure) {
            Verdict::DeadLetter(class) => self.letters.push((
                i,
                Letter {
                    class,
                    message: failure.to_string(),
                },
            )),
            Verdict::Retry => {
                self.retry.get_or_insert(failure);
            }
        }
    }
}

/// The streams and the three ports a flush works with.
pub struct Flush<S, D, R> {
    sink: S,
    dlq: D,
    registry: R,
    streams: HashMap<String, Stream>,
    metrics: Metrics,
    /// What the read loop may decode ahead with.
    snapshot: SharedSnapshot,
    /// Where the batch being flushed is cut into blocks.
    plan: BlockPlan,
    /// The last attempt's row buffers, emptied, for the read loop to fill next.
    spare: Vec<RowBuffers>,
    /// Writer ids the registry did not know, asked again for a while before their messages are dead-lettered.
    unknown_ids: UnknownIds,
    /// Rows refused on their own while the rows beside them landed, counted across attempts.
    strikes: insert::Strikes,
}

impl<S: RowSink, D: DeadLetterSink, R: SchemaSource> Flush<S, D, R> {
    /// A flush over `streams` (by topic).
    pub fn new(
        sink: S,
        dlq: D,
        registry: R,
        streams: HashMap<String, Stream>,
        metrics: Metrics,
    ) -> Self {
        Self {
            sink,
            dlq,
            registry,
            streams,
            metrics,
            snapshot: SharedSnapshot::default(),
            plan: BlockPlan::default(),
            spare: Vec::new(),
            unknown_ids: UnknownIds::default(),
            strikes: insert::Strikes::default(),
        }
    }

    /// Asks the registry again for up to `wait` about a writer id it answered 404 for before dead-lettering the
    /// id's messages (zero, the default: at once).
    pub fn wait_for_unknown_ids(&mut self, wait: std::time::Duration) {
        self.unknown_ids = UnknownIds::new(wait);
    }

    /// The emptied row buffers of the last flush, for the batch being read (its capacity is what saves the
    /// copies and page faults of growing new ones).
    pub fn take_spare(&mut self) -> Vec<RowBuffers> {
        std::mem::take(&mut self.spare)
    }

    /// Whether the server drops a block identical to one it has (replicated tables, insert tokens): then the
    /// write step plans where blocks end, so retries and rebuilt batches send the same blocks.
    pub fn dedups_blocks(&self) -> bool {
        self.sink.capabilities().dedup_token || self.sink.routes_by_partition()
    }

    /// Cuts the blocks of the batch about to be flushed where `plan` says.
    pub fn set_plan(&mut self, plan: BlockPlan) {
        self.plan = plan;
    }

    /// The snapshot this flush publishes after checking its streams.
    pub fn snapshot(&self) -> SharedSnapshot {
        self.snapshot.clone()
    }

    /// One try at giving every pending entry an outcome, using `ahead`'s rows where they are still valid.
    /// `Err` means some entries are still pending and the attempt should be repeated after a pause.
    pub async fn attempt(
        &mut self,
        entries: &mut [Entry],
        ahead: Option<Decoded>,
    ) -> Result<(), Failure> {
        self.ignore_unconfigured(entries);
        let writers = writers::resolve(&self.registry, entries, &mut self.unknown_ids).await?;
        let blocked = self.prepare_streams(&writers).await;
        self.publish_snapshot();
        let mut judged = Judged::default();
        let mut ahead = ahead.unwrap_or_default();
        ahead.add_spare(std::mem::take(&mut self.spare));
        let decoded = self.decode(entries, &writers, ahead, &mut judged, &blocked);
        self.insert(entries, &decoded, &mut judged, &blocked).await;
        self.spare = decoded.into_spare();
        let Judged { letters, mut retry } = judged;
        if retry.is_none() {
            retry = blocked.into_values().next();
        }
        if retry.is_none()
            && let Some(id) = writers.waiting_for()
        {
            retry = Some(Failure::Registry(crate::registry::RegistryError::NotFound(
                format!("writer schema id {id} not in the registry yet; asking again"),
            )));
        }
        let undelivered =
            dead_letter::send(&self.dlq, &self.streams, &self.metrics, entries, letters).await;
        self.strikes.forget_settled(entries);
        if let Some(f) = retry.or(undelivered) {
            return Err(f);
        }
        match entries.iter().filter(|e| e.is_pending()).count() {
            0 => Ok(()),
            n => Err(Failure::Unsettled(n)),
        }
    }

    /// Dead-letters `entry` by hand (class `operator`, `reason` in its message); returns the DLQ topic.
    pub async fn dead_letter_by_hand(
        &self,
        entry: &mut Entry,
        reason: &str,
    ) -> Result<String, Failure> {
        let dlq_topic = self
            .streams
            .get(entry.topic())
            .map(|s| s.dlq_topic.clone())
            .unwrap_or_default();
        let letter = Letter {
            class: crate::dlq::ErrorClass::Operator,
            message: format!("dead-lettered by an operator: {reason}"),
        };
        let entries = std::slice::from_mut(entry);
        match dead_letter::send(
            &self.dlq,
            &self.streams,
            &self.metrics,
            entries,
            vec![(0, letter)],
        )
        .await
        {
            None if entries[0].outcome.is_some() => Ok(dlq_topic),
            None => Err(Failure::Unsettled(1)),
            Some(f) => Err(f),
        }
    }

    /// Messages of topics no stream reads (impossible with `subscribe`) have nothing to be kept for.
    fn ignore_unconfigured(&self, entries: &mut [Entry]) {
        // A batch is runs of one topic: hashing it for every entry was most of this loop.
        let mut last: Option<(String, bool)> = None;
        for e in entries.iter_mut().filter(|e| e.is_pending()) {
            let known = match &last {
                Some((topic, known)) if topic == e.topic() => *known,
                _ => {
                    let known = self.streams.contains_key(e.topic());
                    last = Some((e.topic().to_owned(), known));
                    known
                }
            };
            if !known {
                e.outcome = Some(Outcome::Ignored);
            }
        }
    }

    /// Decodes every pending entry of a stream not `blocked` that `ahead` does not already hold a row for;
    /// failures are judged.
    fn decode(
        &self,
        entries: &[Entry],
        writers: &Writers,
        mut decoded: Decoded,
        judged: &mut Judged,
        blocked: &Blocked,
    ) -> Decoded {
        // Rows decoded ahead for a reader that has changed since are decoded again.
        decoded.retain_current(|topic| self.streams.get(topic).map(|s| s.reader.clone()));
        let mut covered = vec![false; entries.len()];
        decoded.mark_covered(&mut covered);
        let pending = entries
            .iter()
            .enumerate()
            .filter(|(i, e)| {
                e.is_pending()
                    && !covered[*i]
                    && (blocked.is_empty() || !blocked.contains_key(e.topic()))
            })
            .map(|(i, e)| (i, &e.received.message));
        let lookup = FlushLookup {
            streams: &self.streams,
            writers,
        };
        for (i, failure) in decode_into(&lookup, pending, &mut decoded) {
            judged.judge(i, failure);
        }
        decoded
    }

    /// Inserts the pending rows of each stream not `blocked`, isolating the ones ClickHouse refuses. A stream whose
    /// insert fails for a reason that is not its rows' stops there; the other streams' rows are still inserted.
    async fn insert(
        &mut self,
        entries: &mut [Entry],
        decoded: &Decoded,
        judged: &mut Judged,
        blocked: &Blocked,
    ) {
        for (topic, rows) in &decoded.topics {
            if blocked.contains_key(topic) {
                continue;
            }
            let Some(stream) = self.streams.get_mut(topic) else {
                continue;
            };
            if let Some(f) = insert::isolating(
                &self.sink,
                stream,
                rows,
                entries,
                judged,
                &self.plan,
                &mut self.strikes,
            )
            .await
            {
                // The table may have been dropped or altered under us: check it again before the next try.
                stream.table_ok = false;
                judged.retry.get_or_insert(f);
            }
        }
    }

    /// Shares each ready stream's reader and reconciled writers with the read loop.
    fn publish_snapshot(&self) {
        let streams = self
            .streams
            .iter()
            .filter(|(_, s)| s.table_ok)
            .map(|(topic, s)| {
                (
                    topic.clone(),
                    SnapshotStream {
                        reader: s.reader.clone(),
                        writers: s.known_writers.clone(),
                    },
                )
            })
            .collect();
        self.snapshot.publish(Snapshot { streams });
    }
}

/// The flush's view for the decode loop: each stream's current reader, and the writers this attempt resolved.
struct FlushLookup<'a> {
    streams: &'a HashMap<String, Stream>,
    writers: &'a Writers,
}

impl SchemaLookup for FlushLookup<'_> {
    fn reader(&self, topic: &str) -> Option<&Arc<Reader>> {
        self.streams.get(topic).map(|s| &s.reader)
    }

    fn writer(&self, _topic: &str, id: u32) -> Writer<'_> {
        match self.writers.get(id) {
            Some(Ok(schema)) => Writer::Known(schema),
            Some(Err(e)) => Writer::Failed(Failure::Registry(e.clone())),
            None => Writer::Unknown,
        }
    }
}
