//! A batch's rows, decoded and encoded for ClickHouse, by topic; and the one loop that decodes them, used both by
//! the read-ahead (between reads, with what the last flush checked) and by the flush itself.

use std::ops::Range;
use std::sync::Arc;

use apache_avro::Schema;
use rdkafka::message::{Message, OwnedMessage};

use crate::decode::{DecodeError, Reader, RowDecoder, writer_id};
use crate::verdict::Failure;

/// One topic's rows: RowBinary bytes back to back and, per row, its batch index and byte range.
#[derive(Debug)]
pub struct TopicRows {
    /// The reader the rows were encoded for (the table's columns follow it).
    pub reader: Arc<Reader>,
    /// The rows, back to back.
    pub buf: Vec<u8>,
    /// Batch index and byte range of each row.
    pub rows: Vec<(usize, Range<usize>)>,
}

/// A batch's rows by topic.
#[derive(Debug, Default)]
pub struct Decoded {
    /// Rows by topic.
    pub topics: foldhash::HashMap<String, TopicRows>,
    /// Emptied buffers of an earlier batch, taken before allocating: a batch's rows are megabytes, and growing
    /// fresh ones each batch cost a fifth of the consumer's CPU in copies and page faults (zeroed huge pages).
    spare: Vec<RowBuffers>,
}

/// A topic's emptied row buffers, kept with their capacity.
#[derive(Debug, Default)]
pub struct RowBuffers {
    buf: Vec<u8>,
    rows: Vec<(usize, Range<usize>)>,
}

/// Spare buffer sets kept at most: one per topic of a batch is all the next batch can use.
const MAX_SPARE: usize = 16;

impl Decoded {
    /// Empties the rows, keeping their buffers for the next batch (with any spare ones not used yet).
    pub fn into_spare(self) -> Vec<RowBuffers> {
        let mut spare = self.spare;
        for (_, t) in self.topics {
            let (mut buf, mut rows) = (t.buf, t.rows);
            buf.clear();
            rows.clear();
            spare.push(RowBuffers { buf, rows });
        }
        spare.truncate(MAX_SPARE);
        spare
    }

    /// Adds emptied buffers to take before allocating new ones.
    pub fn add_spare(&mut self, spare: Vec<RowBuffers>) {
        self.spare.extend(spare);
        // The largest first: `pop` takes from the end.
        self.spare.sort_by_key(|b| b.buf.capacity());
        if self.spare.len() > MAX_SPARE {
            self.spare.drain(..self.spare.len() - MAX_SPARE);
        }
    }

    /// Keeps only the topics whose rows were encoded for the reader `current` gives now.
    pub fn retain_current(&mut self, current: impl Fn(&str) -> Option<Arc<Reader>>) {
        self.topics
            .retain(|topic, rows| current(topic).is_some_and(|r| Arc::ptr_eq(&r, &rows.reader)));
    }

    /// Marks `covered[i]` for every batch index `i` that has a row.
    pub fn mark_covered(&self, covered: &mut [bool]) {
        for (i, _) in self.topics.values().flat_map(|t| &t.rows) {
            if let Some(c) = covered.get_mut(*i) {
                *c = true;
            }
        }
    }
}

/// What a message's writer schema id resolves to.
pub enum Writer<'a> {
    /// The schema, reconciled with the topic's reader.
    Known(&'a Arc<Schema>),
    /// Looking it up failed for good (the failure says why).
    Failed(Failure),
    /// Not known here: leave the message to someone who knows more.
    Unknown,
}

/// Where the decode loop finds a message's schemas.
pub trait SchemaLookup {
    /// The reader of `topic`, if its rows can be decoded here.
    fn reader(&self, topic: &str) -> Option<&Arc<Reader>>;
    /// The writer schema registered under `id`, for `topic`.
    fn writer(&self, topic: &str, id: u32) -> Writer<'_>;
}

/// A decoder's topic and writer schema id.
type DecoderKey<'a> = (&'a str, u32);

/// Decodes each `(index, message)` into `out` with one prepared decoder per topic and writer schema, and returns
/// the messages that failed. A message is skipped, neither decoded nor failed, when its topic has no reader here,
/// its writer is [`Writer::Unknown`], or `out` already holds the topic's rows for another reader.
pub fn decode_into<'m, L: SchemaLookup>(
    lookup: &L,
    messages: impl IntoIterator<Item = (usize, &'m OwnedMessage)>,
    out: &mut Decoded,
) -> Vec<(usize, Failure)> {
    let mut failed = Vec::new();
    // Few distinct (topic, writer) pairs per batch: a linear scan beats hashing the topic for every message.
    let mut decoders: Vec<(DecoderKey<'_>, Result<RowDecoder<'_>, DecodeError>)> = Vec::new();
    for (i, message) in messages {
        let topic = message.topic();
        let Some(reader) = lookup.reader(topic) else {
            continue;
        };
        let payload = message.payload();
        let id = match writer_id(payload) {
            Ok(id) => id,
            Err(e) => {
                failed.push((i, e.into()));
                continue;
            }
        };
        let slot = match decoders.iter().position(|(k, _)| *k == (topic, id)) {
            Some(slot) => slot,
            None => {
                let decoder = match lookup.writer(topic, id) {
                    Writer::Known(schema) => RowDecoder::new(id, schema, reader),
                    Writer::Failed(f) => {
                        failed.push((i, f));
                        continue;
                    }
                    Writer::Unknown => continue,
                };
                decoders.push(((topic, id), decoder));
                decoders.len() - 1
            }
        };
        let decoder = match &decoders[slot].1 {
            Ok(d) => d,
            Err(e) => {
                failed.push((i, e.clone().into()));
                continue;
            }
        };
        if !out.topics.contains_key(topic) {
            let RowBuffers { buf, rows } = out.spare.pop().unwrap_or_default();
            let fresh = TopicRows {
                reader: reader.clone(),
                buf,
                rows,
            };
            out.topics.insert(topic.to_owned(), fresh);
        }
        let Some(rows) = out
            .topics
            .get_mut(topic)
            .filter(|rows| Arc::ptr_eq(&rows.reader, reader))
        else {
            continue;
        };
        let start = rows.buf.len();
        match decoder.decode(payload.unwrap_or_default(), &mut rows.buf) {
            Ok(()) => {
                if reader.plan.has_source_columns() {
                    reader.plan.encode_source(
                        topic,
                        message.partition(),
                        message.offset(),
                        &mut rows.buf,
                    );
                }
                rows.rows.push((i, start..rows.buf.len()));
            }
            Err(e) => {
                rows.buf.truncate(start);
                failed.push((i, e.into()));
            }
        }
    }
    failed
}
