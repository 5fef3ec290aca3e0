//! What may be committed. Every message read gets a [`Receipt`]; only settling the receipt with the message's
//! [`Outcome`] through [`Offsets::settle`] (its row inserted or its DLQ copy acknowledged) lets the partition's
//! commit position move past it, and never past a message still outstanding.
//!
//! Revoking a partition forgets it: receipts of the old assignment are then ignored, so rows that were still
//! pending when the partition left can never move its committed offset.

use std::collections::{BTreeSet, VecDeque};

// Looked up for every message read and every one settled: SipHash over the topic was 3-4% of the CPU.
use foldhash::HashMap;
use std::sync::Arc;

/// A topic and partition.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicPartition {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: i32,
}

impl TopicPartition {
    /// `topic`'s partition `partition`.
    pub fn new(topic: impl Into<String>, partition: i32) -> Self {
        Self {
            topic: topic.into(),
            partition,
        }
    }
}

/// Where a partition's group resumes: the next offset to read, as Kafka commits it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Position {
    /// The partition.
    pub partition: TopicPartition,
    /// The next offset to read.
    pub next_offset: i64,
}

/// What became of a message; settling its receipt with it is what lets the commit position pass it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Its row is in ClickHouse.
    Inserted,
    /// The DLQ acknowledged its copy.
    DeadLettered,
    /// Not a configured topic: nothing to keep it for.
    Ignored,
    /// Its partition was revoked while it was pending: the new owner reads it again.
    Revoked,
}

/// Proof that a message was read and is not yet done. Deliberately neither `Clone` nor `Copy`.
#[derive(Debug, PartialEq, Eq)]
pub struct Receipt {
    topic: Arc<str>,
    partition: i32,
    offset: i64,
    generation: u64,
}

impl Receipt {
    /// The message's topic.
    pub fn topic(&self) -> &str {
        &self.topic
    }
    /// The message's partition.
    pub fn partition(&self) -> i32 {
        self.partition
    }
    /// The message's offset.
    pub fn offset(&self) -> i64 {
        self.offset
    }
}

/// Offsets read and not yet done. Read in ascending order within a generation and mostly done in that order, so
/// a deque (a B-tree insert and remove per message was 3% of the consumer's CPU); one done ahead of an older one
/// waits in `done_early` until it reaches the front.
#[derive(Debug, Default)]
struct Outstanding {
    read: VecDeque<i64>,
    done_early: BTreeSet<i64>,
}

impl Outstanding {
    /// Adds `offset`, above every offset held (the caller clears on a rewind).
    fn insert(&mut self, offset: i64) {
        debug_assert!(self.read.back().is_none_or(|b| *b < offset));
        self.read.push_back(offset);
    }

    /// Marks `offset` done; one never held is ignored.
    fn remove(&mut self, offset: i64) {
        if self.read.front() == Some(&offset) {
            self.read.pop_front();
            while !self.done_early.is_empty()
                && let Some(front) = self.read.front()
                && self.done_early.remove(front)
            {
                self.read.pop_front();
            }
        } else if self.read.binary_search(&offset).is_ok() {
            self.done_early.insert(offset);
        }
    }

    /// The oldest offset not done.
    fn first(&self) -> Option<i64> {
        self.read.front().copied()
    }

    fn clear(&mut self) {
        self.read.clear();
        self.done_early.clear();
    }
}

#[derive(Debug, Default)]
struct Partition {
    generation: u64,
    outstanding: Outstanding,
    /// Highest offset completed so far.
    high_done: Option<i64>,
    /// Highest offset read so far in this generation.
    high_read: Option<i64>,
    /// Last position committed (the next offset to read).
    committed: Option<i64>,
}

impl Partition {
    /// The offset the group may resume from: the oldest outstanding message, or one past the newest done one.
    fn position(&self) -> Option<i64> {
        let done = self.high_done?;
        Some(self.outstanding.first().unwrap_or(done + 1).min(done + 1))
    }
}

/// One topic's assigned partitions; the name is shared with every receipt instead of copied into each.
#[derive(Debug)]
struct Topic {
    name: Arc<str>,
    partitions: HashMap<i32, Partition>,
}

/// Per-partition bookkeeping of read, done and committed offsets for the current assignment.
///
/// Keyed by topic, then partition, so that the per-message calls look up by `&str` without allocating.
#[derive(Debug, Default)]
pub struct Offsets {
    topics: HashMap<Arc<str>, Topic>,
    next_generation: u64,
}

impl Offsets {
    fn partition(&self, topic: &str, partition: i32) -> Option<&Partition> {
        self.topics.get(topic)?.partitions.get(&partition)
    }

    fn partition_mut(&mut self, topic: &str, partition: i32) -> Option<&mut Partition> {
        self.topics.get_mut(topic)?.partitions.get_mut(&partition)
    }

    /// Starts tracking newly assigned partitions.
    pub fn assign(&mut self, tps: impl IntoIterator<Item = TopicPartition>) {
        for TopicPartition { topic, partition } in tps {
            self.next_generation += 1;
            let name: Arc<str> = Arc::from(topic.as_str());
            self.topics
                .entry(name.clone())
                .or_insert_with(|| Topic {
                    name,
                    partitions: HashMap::default(),
                })
                .partitions
                .insert(
                    partition,
                    Partition {
                        generation: self.next_generation,
                        ..Partition::default()
                    },
                );
        }
    }

    /// Stops tracking revoked partitions and returns the positions still worth committing for them.
    pub fn revoke(&mut self, tps: impl IntoIterator<Item = TopicPartition>) -> Vec<Position> {
        let mut out = Vec::new();
        for TopicPartition { topic, partition } in tps {
            let Some(t) = self.topics.get_mut(topic.as_str()) else {
                continue;
            };
            let removed = t.partitions.remove(&partition);
            if t.partitions.is_empty() {
                self.topics.remove(topic.as_str());
            }
            if let Some(p) = removed
                && let Some(next_offset) = p.position().filter(|pos| Some(*pos) > p.committed)
            {
                out.push(Position {
                    partition: TopicPartition { topic, partition },
                    next_offset,
                });
            }
        }
        out
    }

    /// Records that a message was read; `None` if its partition is not assigned to us (then it must be dropped).
    pub fn received(&mut self, topic: &str, partition: i32, offset: i64) -> Option<Receipt> {
        let t = self.topics.get_mut(topic)?;
        let p = t.partitions.get_mut(&partition)?;
        if p.high_read.is_some_and(|hi| offset <= hi) {
            // The fetch position went backwards (a reset or re-fetch librdkafka did on its own). Receipts read
            // before it are void, so a late completion can never move the position over what is re-read now.
            tracing::warn!(
                topic,
                partition,
                offset,
                "partition rewound; earlier receipts voided"
            );
            self.next_generation += 1;
            p.generation = self.next_generation;
            p.outstanding.clear();
            p.high_done = None;
        }
        p.high_read = Some(offset);
        p.outstanding.insert(offset);
        Some(Receipt {
            topic: t.name.clone(),
            partition,
            offset,
            generation: p.generation,
        })
    }

    /// Which assignment of `topic`'s `partition` is current (it changes on every assignment and rewind); `None`
    /// while it is not assigned.
    pub fn generation(&self, topic: &str, partition: i32) -> Option<u64> {
        self.partition(topic, partition).map(|p| p.generation)
    }

    /// Whether the receipt still belongs to the current assignment of its partition.
    pub fn is_current(&self, r: &Receipt) -> bool {
        self.partition(&r.topic, r.partition)
            .is_some_and(|p| p.generation == r.generation)
    }

    /// Settles a message's receipt with what became of it. A revoked message's receipt is stale already and
    /// settles nothing; so does any receipt of an earlier assignment.
    pub fn settle(&mut self, r: Receipt, outcome: Outcome) {
        self.settle_held(&r, outcome);
    }

    /// [`Offsets::settle`] for a receipt its holder drops right after: a batch's entries are settled and removed
    /// in place, since moving each (its message with it) out of the vector first was 3.5% of the consumer's CPU.
    pub fn settle_held(&mut self, r: &Receipt, outcome: Outcome) {
        match outcome {
            Outcome::Inserted | Outcome::DeadLettered | Outcome::Ignored => self.complete(r),
            Outcome::Revoked => {}
        }
    }

    fn complete(&mut self, r: &Receipt) {
        let Some(p) = self.partition_mut(&r.topic, r.partition) else {
            return;
        };
        if p.generation != r.generation {
            return;
        }
        p.outstanding.remove(r.offset);
        p.high_done = Some(p.high_done.map_or(r.offset, |h| h.max(r.offset)));
    }

    /// The partition's lowest offset read and not yet done, or the one after the highest done: where the group
    /// would resume if it committed now. `None` before anything was read.
    pub fn next_pending(&self, topic: &str, partition: i32) -> Option<i64> {
        let p = self.partition(topic, partition)?;
        p.outstanding.first().or(p.position())
    }

    /// Positions that moved since the last commit.
    pub fn committable(&self) -> Vec<Position> {
        let mut out: Vec<Position> = self
            .topics
            .values()
            .flat_map(|t| {
                t.partitions.iter().filter_map(|(partition, p)| {
                    p.position()
                        .filter(|pos| Some(*pos) > p.committed)
                        .map(|next_offset| Position {
                            partition: TopicPartition::new(t.name.as_ref(), *partition),
                            next_offset,
                        })
                })
            })
            .collect();
        out.sort();
        out
    }

    /// Records a successful commit.
    pub fn committed(&mut self, positions: &[Position]) {
        for pos in positions {
            let at = pos.next_offset;
            if let Some(p) = self.partition_mut(&pos.partition.topic, pos.partition.partition) {
                p.committed = Some(p.committed.map_or(at, |c| c.max(at)));
            }
        }
    }

    /// Partitions currently assigned.
    pub fn assigned(&self) -> Vec<TopicPartition> {
        let mut v: Vec<TopicPartition> = self
            .topics
            .values()
            .flat_map(|t| {
                t.partitions
                    .keys()
                    .map(|p| TopicPartition::new(t.name.as_ref(), *p))
            })
            .collect();
        v.sort();
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tp(p: i32) -> TopicPartition {
        TopicPartition::new("t", p)
    }

    fn at(p: i32, next_offset: i64) -> Position {
        Position {
            partition: tp(p),
            next_offset,
        }
    }

    const DONE: Outcome = Outcome::Inserted;

    #[test]
    fn nothing_is_committable_before_anything_is_done() {
        let mut o = Offsets::default();
        o.assign([tp(0)]);
        let _r = o.received("t", 0, 5).expect("assigned");
        assert!(o.committable().is_empty());
    }

    #[test]
    fn position_stops_at_the_oldest_outstanding_message() {
        let mut o = Offsets::default();
        o.assign([tp(0)]);
        let r5 = o.received("t", 0, 5).expect("assigned");
        let r6 = o.received("t", 0, 6).expect("assigned");
        let r7 = o.received("t", 0, 7).expect("assigned");
        o.settle(r6, DONE);
        o.settle(r7, DONE);
        // 5 is not done: committing 7 or 8 would lose it.
        assert_eq!(o.committable(), vec![at(0, 5)]);
        o.settle(r5, DONE);
        assert_eq!(o.committable(), vec![at(0, 8)]);
        o.committed(&[at(0, 8)]);
        assert!(o.committable().is_empty());
    }

    #[test]
    fn offsets_done_out_of_order_wait_until_the_older_ones_are_done() {
        let mut o = Outstanding::default();
        for offset in [3, 4, 5, 8, 9] {
            o.insert(offset);
        }
        o.remove(5);
        o.remove(8);
        o.remove(7); // never read: ignored
        assert_eq!(o.first(), Some(3));
        o.remove(3);
        assert_eq!(o.first(), Some(4));
        o.remove(4);
        // 5 and 8 were done already: the oldest not done is 9.
        assert_eq!(o.first(), Some(9));
        assert!(o.done_early.is_empty());
        o.remove(9);
        assert_eq!(o.first(), None);
    }

    #[test]
    fn unassigned_partitions_yield_no_receipt() {
        let mut o = Offsets::default();
        assert!(o.received("t", 0, 1).is_none());
    }

    #[test]
    fn revoke_returns_what_is_done_and_forgets_the_rest() {
        let mut o = Offsets::default();
        o.assign([tp(0), tp(1)]);
        let a = o.received("t", 0, 10).expect("assigned");
        let b = o.received("t", 0, 11).expect("assigned");
        let c = o.received("t", 1, 3).expect("assigned");
        o.settle(a, DONE);
        assert_eq!(o.revoke([tp(0)]), vec![at(0, 11)]);
        assert!(!o.is_current(&b));
        assert!(o.is_current(&c));
        // A late completion of the revoked partition's row must not resurrect it.
        o.settle(b, DONE);
        assert_eq!(o.assigned(), vec![tp(1)]);
        assert!(o.committable().is_empty());
    }

    #[test]
    fn a_rewound_partition_voids_earlier_receipts() {
        let mut o = Offsets::default();
        o.assign([tp(0)]);
        let late = o.received("t", 0, 150).expect("assigned");
        let again = o.received("t", 0, 100).expect("assigned");
        // 150 completing must not let the position jump over 101..149, which are not read yet.
        o.settle(late, DONE);
        assert!(o.committable().is_empty());
        o.settle(again, DONE);
        assert_eq!(o.committable(), vec![at(0, 101)]);
    }

    #[test]
    fn receipts_of_an_old_assignment_are_stale_after_reassignment() {
        let mut o = Offsets::default();
        o.assign([tp(0)]);
        let old = o.received("t", 0, 100).expect("assigned");
        o.revoke([tp(0)]);
        o.assign([tp(0)]);
        let fresh = o.received("t", 0, 50).expect("assigned");
        o.settle(old, DONE);
        assert!(
            o.committable().is_empty(),
            "the stale receipt must not move the new assignment"
        );
        o.settle(fresh, DONE);
        assert_eq!(o.committable(), vec![at(0, 51)]);
    }
}
