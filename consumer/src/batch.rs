//! Messages waiting to be flushed, and when to flush them: at `max_rows` messages, `max_bytes` of values, or
//! `max_wait` after the first message, whichever comes first; or at `min_rows` when no flush is running and the
//! consumer is caught up (its newest message is younger than `max_wait`), so that batches stay small (fresh) under
//! moderate load and grow to `max_rows` (cheaper per row) while a backlog drains.

use std::time::Instant;

use rdkafka::message::Message;

use crate::config::BatchSettings;
use crate::flush::Entry;
use crate::source::Received;

fn size(r: &Received) -> usize {
    r.message.payload().map_or(0, <[u8]>::len) + r.message.key().map_or(0, <[u8]>::len)
}

/// The messages read since the last flush.
#[derive(Debug)]
pub struct Batch {
    /// Held as the flush's entries already: wrapping 50k messages when the flush starts moved each one again.
    items: Vec<Entry>,
    bytes: usize,
    started: Option<Instant>,
    /// Kafka timestamp (ms since the epoch) of the newest message, when it has one.
    newest_ms: Option<i64>,
    limits: BatchSettings,
}

impl Batch {
    /// An empty batch with these limits.
    pub fn new(limits: BatchSettings) -> Self {
        Self {
            items: Vec::new(),
            bytes: 0,
            started: None,
            newest_ms: None,
            limits,
        }
    }

    /// Adds a message.
    pub fn push(&mut self, r: Received) {
        if self.items.is_empty() {
            self.started = Some(Instant::now());
            // Growing from nothing to a 50k-message batch copied it about sixteen times over; a batch that is
            // flushed at all is mostly at least `min_rows` long.
            self.items
                .reserve(self.limits.min_rows.min(self.limits.max_rows).max(1));
        }
        self.bytes += size(&r);
        if let Some(ms) = r.message.timestamp().to_millis() {
            self.newest_ms = Some(ms);
        }
        self.items.push(Entry::new(r));
    }

    /// The messages held, in the order read.
    pub fn items(&self) -> &[Entry] {
        &self.items
    }

    /// Messages held.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether no message is held.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Whether a size limit is reached.
    pub fn is_full(&self) -> bool {
        self.items.len() >= self.limits.max_rows || self.bytes >= self.limits.max_bytes
    }

    /// Whether the batch is worth flushing now that no flush is running: it holds `min_rows` and its newest
    /// message is recent (at `now_ms`), so the consumer is not draining a backlog.
    pub fn is_worth_flushing(&self, now_ms: i64) -> bool {
        let caught_up = self
            .newest_ms
            .is_none_or(|t| now_ms.saturating_sub(t) < self.limits.max_wait_ms as i64);
        caught_up && self.items.len() >= self.limits.min_rows.min(self.limits.max_rows)
    }

    /// When the batch must be flushed at the latest; `None` while empty.
    pub fn deadline(&self) -> Option<Instant> {
        self.started.map(|s| s + self.limits.max_wait())
    }

    /// Empties the batch, handing over its messages.
    pub fn take(&mut self) -> Vec<Entry> {
        self.bytes = 0;
        self.started = None;
        self.newest_ms = None;
        std::mem::take(&mut self.items)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::offsets::{Offsets, TopicPartition};
    use rdkafka::Timestamp;
    use rdkafka::message::OwnedMessage;
    use std::time::Duration;

    fn received(o: &mut Offsets, offset: i64, size: usize) -> Received {
        stamped(o, offset, size, Timestamp::NotAvailable)
    }

    fn stamped(o: &mut Offsets, offset: i64, size: usize, timestamp: Timestamp) -> Received {
        let message = OwnedMessage::new(
            Some(vec![0; size]),
            None,
            "t".into(),
            timestamp,
            0,
            offset,
            None,
        );
        Received {
            message,
            receipt: o.received("t", 0, offset).expect("assigned"),
        }
    }

    #[test]
    fn flushes_on_rows_bytes_or_time() {
        let mut o = Offsets::default();
        o.assign([TopicPartition::new("t", 0)]);
        let mut b = Batch::new(BatchSettings {
            max_rows: 3,
            min_rows: 2,
            max_bytes: 100,
            max_wait_ms: 50,
        });
        assert!(b.deadline().is_none());
        b.push(received(&mut o, 0, 10));
        let deadline = b.deadline().expect("started");
        assert!(deadline <= Instant::now() + Duration::from_millis(50));
        assert!(!b.is_worth_flushing(0));
        b.push(received(&mut o, 1, 10));
        assert!(!b.is_full());
        assert!(b.is_worth_flushing(0), "2 rows when no flush runs");
        b.push(received(&mut o, 2, 10));
        assert!(b.is_full(), "3 rows");
        assert_eq!(b.take().len(), 3);
        assert!(b.is_empty() && b.deadline().is_none());
        b.push(received(&mut o, 3, 100));
        assert!(b.is_full(), "100 bytes");
    }

    #[test]
    fn a_backlog_waits_for_full_batches() {
        let mut o = Offsets::default();
        o.assign([TopicPartition::new("t", 0)]);
        let mut b = Batch::new(BatchSettings {
            max_rows: 10,
            min_rows: 2,
            max_bytes: 1000,
            max_wait_ms: 1000,
        });
        b.push(stamped(&mut o, 0, 10, Timestamp::CreateTime(10_000)));
        b.push(stamped(&mut o, 1, 10, Timestamp::CreateTime(10_000)));
        assert!(b.is_worth_flushing(10_500), "caught up: flush at min_rows");
        assert!(
            !b.is_worth_flushing(12_000),
            "2 s behind: fill up to max_rows"
        );
    }
}
