//! Decoding a batch ahead, while the previous batch's insert is still in flight.
//!
//! The flush publishes what it has checked (each stream's reader, with a table that has its columns, and the
//! writer schemas already reconciled with it) as a [`Snapshot`]. The read loop decodes the batch it is filling with
//! it, a chunk at a time between reads, so decoding overlaps the insert in flight. Anything the snapshot cannot decode (a new
//! writer id, a poison message) is left for the flush, which decodes it the usual way; rows decoded with a reader
//! that has since changed are thrown away and decoded again.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::{Arc, Mutex, PoisonError};

use apache_avro::Schema;
use rdkafka::message::Message;

use crate::decode::{Reader, RowDecoder, writer_id};
use crate::source::Received;

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
    /// Decodable streams by topic.
    pub streams: HashMap<String, SnapshotStream>,
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

/// One topic's rows decoded ahead: RowBinary bytes and, per row, its batch index and byte range.
#[derive(Debug)]
pub struct DecodedTopic {
    /// The reader the rows were decoded for.
    pub reader: Arc<Reader>,
    /// The rows, back to back.
    pub buf: Vec<u8>,
    /// Batch index and byte range of each row.
    pub rows: Vec<(usize, Range<usize>)>,
}

/// A batch's rows decoded ahead, by topic.
#[derive(Debug, Default)]
pub struct Predecoded {
    /// Rows by topic.
    pub topics: HashMap<String, DecodedTopic>,
}

/// Decodes every message of `items[from..]` that `snapshot` can, adding to `out`, so that a batch can be decoded a
/// chunk at a time as it is read; the rest are left to the flush, as is a chunk whose snapshot has another reader
/// than the rows already in `out`.
pub fn predecode_into(snapshot: &Snapshot, items: &[Received], from: usize, out: &mut Predecoded) {
    let mut decoders: Vec<((&str, u32), Option<RowDecoder<'_>>)> = Vec::new();
    for (i, item) in items.iter().enumerate().skip(from) {
        let topic = item.message.topic();
        let Some(stream) = snapshot.streams.get(topic) else {
            continue;
        };
        let payload = item.message.payload();
        let Ok(id) = writer_id(payload) else {
            continue;
        };
        let Some(writer) = stream.writers.get(&id) else {
            continue;
        };
        let slot = match decoders.iter().position(|(k, _)| *k == (topic, id)) {
            Some(slot) => slot,
            None => {
                decoders.push((
                    (topic, id),
                    RowDecoder::new(id, writer, &stream.reader).ok(),
                ));
                decoders.len() - 1
            }
        };
        let Some(decoder) = &decoders[slot].1 else {
            continue;
        };
        if !out.topics.contains_key(topic) {
            out.topics.insert(
                topic.to_owned(),
                DecodedTopic {
                    reader: stream.reader.clone(),
                    buf: Vec::new(),
                    rows: Vec::new(),
                },
            );
        }
        let Some(decoded) = out
            .topics
            .get_mut(topic)
            .filter(|d| Arc::ptr_eq(&d.reader, &stream.reader))
        else {
            continue;
        };
        let start = decoded.buf.len();
        match decoder.decode(payload.unwrap_or_default(), &mut decoded.buf) {
            Ok(()) => decoded.rows.push((i, start..decoded.buf.len())),
            // Poison is the flush's to classify and dead-letter.
            Err(_) => decoded.buf.truncate(start),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::offsets::Offsets;
    use apache_avro::types::Value;
    use rdkafka::Timestamp;
    use rdkafka::message::OwnedMessage;
    use sluice_schemas::wire;

    const SCHEMA: &str = r#"{"type":"record","name":"E","fields":[{"name":"id","type":"string"}]}"#;

    fn message(o: &mut Offsets, topic: &str, offset: i64, payload: Vec<u8>) -> Received {
        Received {
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
        }
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
            streams: HashMap::from([(
                "t".to_string(),
                SnapshotStream {
                    reader: reader.clone(),
                    writers: HashMap::from([(1, schema.clone())]),
                },
            )]),
        };
        let mut o = Offsets::default();
        o.assign([("t".to_string(), 0), ("other".to_string(), 0)]);
        let items = vec![
            message(&mut o, "t", 0, framed(&schema, 1, "a")),
            message(&mut o, "t", 1, framed(&schema, 2, "b")), // writer id not reconciled yet
            message(&mut o, "t", 2, wire::frame(1, &[0xff])), // poison
            message(&mut o, "other", 0, framed(&schema, 1, "c")), // no snapshot for the topic
            message(&mut o, "t", 3, framed(&schema, 1, "d")),
        ];
        let mut pre = Predecoded::default();
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
        let mut chunked = Predecoded::default();
        predecode_into(&snapshot, &items[..2], 0, &mut chunked);
        predecode_into(&snapshot, &items, 2, &mut chunked);
        let c = &chunked.topics["t"];
        assert_eq!((&c.buf, &c.rows), (&t.buf, &t.rows));
    }
}
