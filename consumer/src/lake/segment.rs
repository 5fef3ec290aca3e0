//! Which messages go into which file: one open segment per partition, rolled on rows, bytes or age, except that a
//! segment recorded in a manifest before a crash is cut again exactly where it was, so its files get the same
//! names and the same rows and overwrite themselves instead of adding a second copy.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use rdkafka::message::Message;

use super::layout::Bounds;
use crate::offsets::TopicPartition;
use crate::source::Received;

/// When a segment is rolled.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Messages.
    pub max_rows: usize,
    /// Bytes of message values.
    pub max_bytes: usize,
    /// Time since its first message was read.
    pub max_age: Duration,
    /// Bytes held across all open segments.
    pub max_buffer_bytes: usize,
}

/// Consecutive messages of one partition that become one set of files.
#[derive(Debug)]
pub struct Segment {
    /// The partition.
    pub tp: TopicPartition,
    /// Its messages, in offset order.
    pub messages: Vec<Received>,
    bytes: usize,
    opened: Instant,
    /// The manifest bounds it must end at, when it redoes a segment from before a restart.
    pinned: Option<Bounds>,
    /// Offsets whose dead letters the DLQ acknowledged, so a retried attempt does not send them again.
    pub lettered: std::collections::HashSet<i64>,
}

impl Segment {
    /// The offsets of its first and last message.
    pub fn bounds(&self) -> Bounds {
        let offset = |r: Option<&Received>| r.map_or(0, |r| r.message.offset());
        Bounds {
            first: offset(self.messages.first()),
            last: offset(self.messages.last()),
        }
    }

    /// Bytes of message values.
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

#[derive(Debug, Default)]
struct Partition {
    /// The assignment generation its manifests were read for.
    generation: u64,
    /// Manifests found at assignment that are not behind us yet, oldest first.
    pins: VecDeque<Bounds>,
    open: Option<Segment>,
}

/// The open segments of every assigned partition.
#[derive(Debug)]
pub struct Segments {
    limits: Limits,
    partitions: HashMap<TopicPartition, Partition>,
    buffered: usize,
}

impl Segments {
    /// No segments yet.
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            partitions: HashMap::new(),
            buffered: 0,
        }
    }

    /// Whether `tp` was started for assignment `generation`; if not, its manifests must be read first.
    pub fn knows(&self, tp: &TopicPartition, generation: u64) -> bool {
        self.partitions
            .get(tp)
            .is_some_and(|p| p.generation == generation)
    }

    /// Starts `tp`'s assignment `generation` with the bounds of the manifests found for it.
    pub fn start(&mut self, tp: TopicPartition, generation: u64, mut pins: Vec<Bounds>) {
        pins.sort();
        self.forget(&tp);
        self.partitions.insert(
            tp,
            Partition {
                generation,
                pins: pins.into(),
                open: None,
            },
        );
    }

    /// Drops `tp`'s open segment and what was known of it (revoked, or its receipts voided); its messages are
    /// read again by whoever owns it next.
    pub fn forget(&mut self, tp: &TopicPartition) {
        if let Some(p) = self.partitions.remove(tp)
            && let Some(s) = p.open
        {
            self.buffered -= s.bytes;
        }
    }

    /// The partitions known, to check against the assignment.
    pub fn partitions(&self) -> Vec<TopicPartition> {
        self.partitions.keys().cloned().collect()
    }

    /// Adds a message of a started partition; returns the segments that are complete because of it.
    pub fn push(&mut self, r: Received, now: Instant) -> Vec<Segment> {
        let tp = TopicPartition::new(r.message.topic(), r.message.partition());
        let offset = r.message.offset();
        let bytes = r.message.payload().map_or(0, <[u8]>::len);
        let limits = self.limits;
        let p = self.partitions.entry(tp.clone()).or_default();
        let mut done = Vec::new();
        while p.pins.front().is_some_and(|b| b.last < offset) {
            p.pins.pop_front();
        }
        let pin = p.pins.front().copied().filter(|b| b.first <= offset);
        // A segment never runs into a pinned one: it ends where the pinned one starts, and a pinned one ends at
        // its recorded last offset even if the message there is gone.
        if let Some(open) = &p.open
            && (open.pinned != pin || open.pinned.is_some_and(|b| offset > b.last))
            && let Some(s) = p.open.take()
        {
            done.push(s);
        }
        let open = p.open.get_or_insert_with(|| Segment {
            tp,
            messages: Vec::new(),
            bytes: 0,
            opened: now,
            pinned: pin,
            lettered: Default::default(),
        });
        open.messages.push(r);
        open.bytes += bytes;
        let full = match open.pinned {
            Some(b) => offset >= b.last,
            None => open.messages.len() >= limits.max_rows || open.bytes >= limits.max_bytes,
        };
        if full && let Some(s) = p.open.take() {
            if s.pinned.is_some() {
                p.pins.pop_front();
            }
            done.push(s);
        }
        self.buffered += bytes;
        for s in &done {
            self.buffered -= s.bytes;
        }
        done
    }

    /// Unpinned segments whose age limit has passed, and, while more than the buffer limit is held, the largest.
    pub fn due(&mut self, now: Instant) -> Vec<Segment> {
        let max_age = self.limits.max_age;
        let mut done = Vec::new();
        for p in self.partitions.values_mut() {
            let aged = p
                .open
                .as_ref()
                .is_some_and(|s| s.pinned.is_none() && now.duration_since(s.opened) >= max_age);
            if aged && let Some(s) = p.open.take() {
                done.push(s);
            }
        }
        for s in &done {
            self.buffered -= s.bytes;
        }
        while self.buffered > self.limits.max_buffer_bytes {
            let largest = self
                .partitions
                .values_mut()
                .filter(|p| p.open.as_ref().is_some_and(|s| s.pinned.is_none()))
                .max_by_key(|p| p.open.as_ref().map_or(0, |s| s.bytes));
            let Some(s) = largest.and_then(|p| p.open.take()) else {
                break;
            };
            self.buffered -= s.bytes;
            done.push(s);
        }
        done
    }

    /// When the oldest unpinned open segment comes of age.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.partitions
            .values()
            .filter_map(|p| p.open.as_ref())
            .filter(|s| s.pinned.is_none())
            .map(|s| s.opened + self.limits.max_age)
            .min()
    }

    /// Bytes held in open segments.
    pub fn buffered(&self) -> usize {
        self.buffered
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::offsets::Offsets;
    use rdkafka::Timestamp;
    use rdkafka::message::OwnedMessage;

    fn limits(max_rows: usize) -> Limits {
        Limits {
            max_rows,
            max_bytes: 1 << 20,
            max_age: Duration::from_secs(60),
            max_buffer_bytes: 1 << 30,
        }
    }

    fn msg(book: &mut Offsets, offset: i64) -> Received {
        let receipt = book.received("t", 0, offset).expect("assigned");
        Received {
            message: OwnedMessage::new(
                Some(vec![0; 10]),
                None,
                "t".into(),
                Timestamp::NotAvailable,
                0,
                offset,
                None,
            ),
            receipt,
        }
    }

    fn cut(limit: usize, pins: Vec<Bounds>, offsets: std::ops::Range<i64>) -> Vec<Bounds> {
        let mut book = Offsets::default();
        book.assign([TopicPartition::new("t", 0)]);
        let mut segments = Segments::new(limits(limit));
        segments.start(TopicPartition::new("t", 0), 1, pins);
        let now = Instant::now();
        let mut out = Vec::new();
        for o in offsets {
            out.extend(
                segments
                    .push(msg(&mut book, o), now)
                    .iter()
                    .map(Segment::bounds),
            );
        }
        out
    }

    fn b(first: i64, last: i64) -> Bounds {
        Bounds { first, last }
    }

    #[test]
    fn rolls_on_rows() {
        assert_eq!(cut(3, vec![], 0..7), vec![b(0, 2), b(3, 5)]);
    }

    #[test]
    fn a_recorded_segment_is_cut_where_it_was_whatever_the_limits() {
        // Before the crash: 10..=14 rolled at 5 rows; now the limit is 3.
        assert_eq!(cut(3, vec![b(10, 14)], 10..20), vec![b(10, 14), b(15, 17)]);
        // A limit above the pinned size waits for the pinned end.
        assert_eq!(
            cut(100, vec![b(10, 14), b(15, 16)], 10..20),
            vec![b(10, 14), b(15, 16)]
        );
    }

    #[test]
    fn an_open_segment_ends_where_a_recorded_one_starts() {
        assert_eq!(
            cut(100, vec![b(12, 13)], 10..20),
            vec![b(10, 11), b(12, 13)]
        );
    }

    #[test]
    fn stale_pins_are_skipped() {
        assert_eq!(cut(2, vec![b(0, 4)], 10..14), vec![b(10, 11), b(12, 13)]);
    }

    #[test]
    fn age_and_buffer_limits_roll_unpinned_segments() {
        let mut book = Offsets::default();
        book.assign([TopicPartition::new("t", 0)]);
        let mut segments = Segments::new(Limits {
            max_buffer_bytes: 25,
            ..limits(100)
        });
        segments.start(TopicPartition::new("t", 0), 1, vec![]);
        let t0 = Instant::now();
        for o in 0..2 {
            assert!(segments.push(msg(&mut book, o), t0).is_empty());
        }
        assert_eq!(segments.buffered(), 20);
        assert!(segments.due(t0).is_empty());
        assert_eq!(segments.next_deadline(), Some(t0 + Duration::from_secs(60)));
        let aged = segments.due(t0 + Duration::from_secs(61));
        assert_eq!(
            aged.iter().map(Segment::bounds).collect::<Vec<_>>(),
            vec![b(0, 1)]
        );
        for o in 2..5 {
            segments.push(msg(&mut book, o), t0);
        }
        let over = segments.due(t0);
        assert_eq!(
            over.iter().map(Segment::bounds).collect::<Vec<_>>(),
            vec![b(2, 4)]
        );
        assert_eq!(segments.buffered(), 0);
    }
}
