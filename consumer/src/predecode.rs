//! Decoding a batch ahead, while the previous batch's insert is still in flight.
//!
//! The flush publishes what it has checked (each stream's reader, with a table that has its columns, and the
//! writer schemas already reconciled with it) as a [`Snapshot`]. The read loop decodes the batch it is filling with
//! it, a chunk at a time between reads, so decoding overlaps the insert in flight. Anything the snapshot cannot decode (a new
//! writer id, a poison message) is left for the flush, which decodes it the usual way; rows decoded with a reader
//! that has since changed are thrown away and decoded again.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use apache_avro::Schema;

use crate::consume::ReadAhead;
use crate::decode::Reader;
use crate::flush::Entry;
use crate::rows::{Decoded, RowBuffers, SchemaLookup, Writer, decode_into};

/// What one stream's rows can be decoded with.
#[derive(Debug, Clone)]
pub struct SnapshotStream {
    /// The reader the table's columns follow.
    pub reader: Arc<Reader>,
    /// Writer schemas by id, already reconciled with `reader`.
    pub writers: HashMap<u32, Arc<Schema>>,
}

/// Streams by topic.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// Decodable streams by topic (looked up for every message read).
    pub streams: foldhash::HashMap<String, SnapshotStream>,
}

impl SchemaLookup for Snapshot {
    fn reader(&self, topic: &str) -> Option<&Arc<Reader>> {
        self.streams.get(topic).map(|s| &s.reader)
    }

    fn writer(&self, topic: &str, id: u32) -> Writer<'_> {
        match self.streams.get(topic).and_then(|s| s.writers.get(&id)) {
            Some(schema) => Writer::Known(schema),
            None => Writer::Unknown,
        }
    }
}

/// The latest snapshot, shared between the flush that writes it and the read loop.
#[derive(Debug, Clone, Default)]
pub struct SharedSnapshot(Arc<Mutex<Arc<Snapshot>>>);

impl SharedSnapshot {
    /// The latest snapshot.
    pub fn current(&self) -> Arc<Snapshot> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Replaces the snapshot.
    pub fn publish(&self, snapshot: Snapshot) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = Arc::new(snapshot);
    }
}

/// Decodes every message of `items[from..]` that `snapshot` can, adding to `out`, so that a batch can be decoded a
/// chunk at a time as it is read; the rest are left to the flush, as is a chunk whose snapshot has another reader
/// than the rows already in `out`.
pub fn predecode_into(snapshot: &Snapshot, items: &[Entry], from: usize, out: &mut Decoded) {
    let messages = items
        .iter()
        .enumerate()
        .skip(from)
        .map(|(i, e)| (i, &e.received.message));
    // Poison is the flush's to classify and dead-letter: it decodes these messages again.
    let _left_to_the_flush = decode_into(snapshot, messages, out);
}

/// Messages decoded ahead at a time while a batch is read.
const PREDECODE_CHUNK: usize = 2_000;

/// The ClickHouse sink's read-ahead: decodes the batch being read a chunk at a time, between reads, so decoding
/// overlaps the insert in flight and little is left to decode when the batch is due.
pub struct Predecoder {
    snapshot: SharedSnapshot,
    /// The batch's rows decoded so far.
    pre: Decoded,
    /// How many of the batch's messages that covers.
    upto: usize,
}

impl Predecoder {
    /// Decodes with what `snapshot` holds when each chunk is decoded.
    pub fn new(snapshot: SharedSnapshot) -> Self {
        Self {
            snapshot,
            pre: Decoded::default(),
            upto: 0,
        }
    }
}

impl ReadAhead for Predecoder {
    type Done = Decoded;
    type Spare = Vec<RowBuffers>;

    fn grew(&mut self, items: &[Entry]) {
        if items.len() < self.upto {
            // A batch taken without `finish` (never today): start again rather than index past it.
            self.pre = Decoded::default();
            self.upto = 0;
        }
        if items.len() - self.upto >= PREDECODE_CHUNK {
            predecode_into(&self.snapshot.current(), items, self.upto, &mut self.pre);
            self.upto = items.len();
        }
    }

    fn finish(&mut self, items: &[Entry]) -> Decoded {
        predecode_into(
            &self.snapshot.current(),
            items,
            self.upto.min(items.len()),
            &mut self.pre,
        );
        self.upto = 0;
        std::mem::take(&mut self.pre)
    }

    fn recycle(&mut self, spare: Vec<RowBuffers>) {
        self.pre.add_spare(spare);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::offsets::{Offsets, TopicPartition};
    use crate::source::Received;
    use apache_avro::types::Value;
    use rdkafka::Timestamp;
    use rdkafka::message::OwnedMessage;
    use sluice_schemas::wire;

    const SCHEMA: &str = r#"{"type":"record","name":"E","fields":[{"name":"id","type":"string"}]}"#;

    fn message(o: &mut Offsets, topic: &str, offset: i64, payload: Vec<u8>) -> Entry {
        Entry::new(Received {
            message: OwnedMessage::new(
                Some(payload),
                None,
                topic.into(),
                Timestamp::NotAvailable,
                0,
                offset,
                None,
            ),
            receipt: o.received(topic, 0, offset).expect("assigned"),
        })
    }

    fn framed(schema: &Schema, id: u32, value: &str) -> Vec<u8> {
        let record = Value::Record(vec![("id".into(), Value::String(value.into()))]);
        let body = apache_avro::writer::datum::GenericDatumWriter::builder(schema)
            .build()
            .expect("writer")
            .write_value_to_vec(record)
            .expect("encodes");
        wire::frame(id, &body)
    }

    #[test]
    fn decodes_known_writers_and_leaves_the_rest_to_the_flush() {
        let schema = Arc::new(Schema::parse_str(SCHEMA).expect("parses"));
        let reader = Arc::new(Reader::new(Some(1), Some(1), schema.clone()).expect("maps"));
        let snapshot = Snapshot {
            streams: foldhash::HashMap::from_iter([(
                "t".to_string(),
                SnapshotStream {
                    reader: reader.clone(),
                    writers: HashMap::from([(1, schema.clone())]),
                },
            )]),
        };
        let mut o = Offsets::default();
        o.assign([TopicPartition::new("t", 0), TopicPartition::new("other", 0)]);
        let items = vec![
            message(&mut o, "t", 0, framed(&schema, 1, "a")),
            message(&mut o, "t", 1, framed(&schema, 2, "b")), // writer id not reconciled yet
            message(&mut o, "t", 2, wire::frame(1, &[0xff])), // poison
            message(&mut o, "other", 0, framed(&schema, 1, "c")), // no snapshot for the topic
            message(&mut o, "t", 3, framed(&schema, 1, "d")),
        ];
        let mut pre = Decoded::default();
        predecode_into(&snapshot, &items, 0, &mut pre);
        assert_eq!(pre.topics.len(), 1);
        let t = &pre.topics["t"];
        assert!(Arc::ptr_eq(&t.reader, &reader));
        let indexes: Vec<usize> = t.rows.iter().map(|(i, _)| *i).collect();
        assert_eq!(indexes, [0, 4]);
        // Each row is its own RowBinary string; the poison left no bytes behind.
        assert_eq!(&t.buf[t.rows[0].1.clone()], &[1, b'a']);
        assert_eq!(&t.buf[t.rows[1].1.clone()], &[1, b'd']);
        assert_eq!(t.buf.len(), 4);

        // A chunk at a time gives the same rows.
        let mut chunked = Decoded::default();
        predecode_into(&snapshot, &items[..2], 0, &mut chunked);
        predecode_into(&snapshot, &items, 2, &mut chunked);
        let c = &chunked.topics["t"];
        assert_eq!((&c.buf, &c.rows), (&t.buf, &t.rows));

        // The next batch fills the same buffers, emptied, instead of growing new ones.
        let (ptr, rows_ptr) = (t.buf.as_ptr(), t.rows.as_ptr());
        let mut next = Decoded::default();
        next.add_spare(pre.into_spare());
        predecode_into(&snapshot, &items[3..], 0, &mut next);
        let n = &next.topics["t"];
        assert_eq!((n.buf.as_ptr(), n.rows.as_ptr()), (ptr, rows_ptr));
        assert_eq!(&n.buf[n.rows[0].1.clone()], &[1, b'd']);
        assert_eq!(n.rows.len(), 1);
    }
}
