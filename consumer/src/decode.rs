//! From Kafka bytes to a RowBinary row: Confluent framing → writer schema (by id, from the registry) → Avro value →
//! resolved to the stream's reader schema → encoded for the table.
//!
//! Everything that can go wrong with one message's bytes is a [`DecodeError`]; what it means (always a dead
//! letter, with a class) is [`crate::verdict`]'s to say.

use std::sync::Arc;

use apache_avro::Schema;
use apache_avro::reader::datum::GenericDatumReader;
use apache_avro::schema::ResolvedSchema;
use sluice_schemas::clickhouse::{Capabilities, RowPlan, Transcoder};
use sluice_schemas::wire;

/// Why one message's bytes did not become a row.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// No value, or not Confluent-framed.
    #[error("{0}")]
    Unframed(String),
    /// The writer schema cannot be prepared for reading.
    #[error("writer schema: {0}")]
    WriterSchema(String),
    /// The Avro body does not decode with its writer schema.
    #[error("avro: {0}")]
    Avro(String),
    /// Bytes left over after the Avro datum.
    #[error("{0} bytes after the Avro datum")]
    TrailingBytes(usize),
    /// Framed with another schema id than the decoder is for.
    #[error("framed with schema id {framed}, decoder is for {decoder}")]
    WrongWriter {
        /// The id in the frame.
        framed: u32,
        /// The id the decoder was built for.
        decoder: u32,
    },
    /// The reader schema cannot be prepared for resolution.
    #[error("reader schema: {0}")]
    ReaderSchema(String),
    /// The value does not resolve to the reader schema.
    #[error("cannot resolve to the reader schema: {0}")]
    Unresolvable(String),
    /// A value does not fit its ClickHouse column.
    #[error("{0}")]
    Unrepresentable(String),
}

/// The schema rows of a stream are resolved to, and how they become columns.
#[derive(Debug, Clone)]
pub struct Reader {
    /// Registry id, when the reader came from the registry (not the bundled fallback).
    pub id: Option<u32>,
    /// Subject version, when known.
    pub version: Option<i32>,
    /// The reader schema.
    pub schema: Arc<Schema>,
    /// Its column mapping.
    pub plan: RowPlan,
}

impl Reader {
    /// A reader for `schema` with the legacy mapping (every server accepts it), if it maps to columns.
    pub fn new(
        id: Option<u32>,
        version: Option<i32>,
        schema: Arc<Schema>,
    ) -> Result<Self, sluice_schemas::clickhouse::MappingError> {
        Self::for_table(id, version, schema, Shape::default())
    }

    /// A reader for `schema` whose new columns take the types `shape.caps` allows.
    pub fn for_table(
        id: Option<u32>,
        version: Option<i32>,
        schema: Arc<Schema>,
        shape: Shape,
    ) -> Result<Self, sluice_schemas::clickhouse::MappingError> {
        let mut plan = RowPlan::for_server(&schema, shape.caps)?;
        if shape.source_columns {
            plan = plan.with_source_columns();
        }
        Ok(Self {
            id,
            version,
            schema,
            plan,
        })
    }

    /// The same reader writing rows as `plan` (the reader's plan fitted to its table's columns).
    pub fn with_plan(&self, plan: RowPlan) -> Self {
        Self {
            plan,
            ..self.clone()
        }
    }
}

/// What shapes a stream's table besides its schema.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Shape {
    /// What the server accepts.
    pub caps: Capabilities,
    /// Whether rows carry their message's topic, partition and offset.
    pub source_columns: bool,
}

/// The schema id in front of a Confluent-framed value.
pub fn writer_id(value: Option<&[u8]>) -> Result<u32, DecodeError> {
    let bytes = value.ok_or_else(|| DecodeError::Unframed("message has no value".into()))?;
    unframe(bytes).map(|(id, _)| id)
}

fn unframe(bytes: &[u8]) -> Result<(u32, &[u8]), DecodeError> {
    wire::unframe(bytes).map_err(|e| DecodeError::Unframed(e.to_string()))
}

/// Decodes a framed value written with `writer`, resolves it to `reader` and appends its row to `out`.
///
/// Prepares the Avro work for this one message; a batch uses one [`RowDecoder`] per writer schema instead.
pub fn decode_row(
    value: &[u8],
    writer: &Schema,
    reader: &Reader,
    out: &mut Vec<u8>,
) -> Result<(), DecodeError> {
    let (writer_id, _) = unframe(value)?;
    RowDecoder::new(writer_id, writer, reader)?.decode(value, out)
}

/// Turns messages written with one writer schema into rows for one reader, with the schemas' name tables built
/// once rather than per message.
pub struct RowDecoder<'a> {
    values: ValueDecoder<'a>,
    reader: &'a Reader,
    /// Avro bytes straight to RowBinary, when the writer is the reader and the plan's shapes allow it.
    transcoder: Option<Transcoder>,
}

/// Framed Avro bytes → a value of the reader schema, for one writer schema.
pub struct ValueDecoder<'a> {
    writer_id: u32,
    datum: GenericDatumReader<'a>,
    reader: &'a Schema,
    /// The reader's named types, when values must be resolved to it.
    reader_names: Option<ResolvedSchema<'a>>,
}

impl<'a> ValueDecoder<'a> {
    /// A decoder for values framed with `writer_id`, whose schema is `writer`, resolved to `reader`.
    /// `reader_id` is the reader's registry id when it has one.
    pub fn new(
        writer_id: u32,
        writer: &'a Schema,
        reader: &'a Schema,
        reader_id: Option<u32>,
    ) -> Result<Self, DecodeError> {
        let datum = GenericDatumReader::builder(writer)
            .build()
            .map_err(|e| DecodeError::WriterSchema(e.to_string()))?;
        // Registry ids are immutable: a reader registered under the writer's id is the writer's schema, so decoded
        // values already have the reader's shape and resolving them would only repeat a quarter of the work.
        let reader_names = if reader_id == Some(writer_id) {
            None
        } else {
            Some(
                ResolvedSchema::try_from(reader)
                    .map_err(|e| DecodeError::ReaderSchema(e.to_string()))?,
            )
        };
        Ok(Self {
            writer_id,
            datum,
            reader,
            reader_names,
        })
    }

    /// Unframes `value`, checks its writer id and decodes it.
    pub fn decode(&self, value: &[u8]) -> Result<apache_avro::types::Value, DecodeError> {
        let body = self.body(value)?;
        self.decode_body(body)
    }

    fn body<'v>(&self, value: &'v [u8]) -> Result<&'v [u8], DecodeError> {
        let (id, body) = unframe(value)?;
        if id != self.writer_id {
            return Err(DecodeError::WrongWriter {
                framed: id,
                decoder: self.writer_id,
            });
        }
        Ok(body)
    }

    /// Decodes an unframed Avro body.
    fn decode_body(&self, body: &[u8]) -> Result<apache_avro::types::Value, DecodeError> {
        let mut rest = body;
        let value = self
            .datum
            .read_value(&mut rest)
            .map_err(|e| DecodeError::Avro(e.to_string()))?;
        if !rest.is_empty() {
            return Err(DecodeError::TrailingBytes(rest.len()));
        }
        match &self.reader_names {
            None => Ok(value),
            Some(names) => value
                .resolve_with_names(self.reader, names.get_names())
                .map_err(|e| DecodeError::Unresolvable(e.to_string())),
        }
    }
}

impl<'a> RowDecoder<'a> {
    /// A decoder for values framed with `writer_id`, whose schema is `writer`.
    pub fn new(
        writer_id: u32,
        writer: &'a Schema,
        reader: &'a Reader,
    ) -> Result<Self, DecodeError> {
        let values = ValueDecoder::new(writer_id, writer, &reader.schema, reader.id)?;
        let transcoder = if reader.id == Some(writer_id) {
            reader.plan.transcoder(writer)
        } else {
            None
        };
        Ok(Self {
            values,
            reader,
            transcoder,
        })
    }

    /// Decodes one framed value and appends its row to `out` (left untouched on error).
    pub fn decode(&self, value: &[u8], out: &mut Vec<u8>) -> Result<(), DecodeError> {
        let body = self.values.body(value)?;
        // The fast path builds no values; when it refuses a message, the value path below decides, so a poison
        // message gets the same class and message it always did.
        if let Some(t) = &self.transcoder
            && t.transcode(body, out).is_ok()
        {
            return Ok(());
        }
        let value = self.values.decode_body(body)?;
        self.reader
            .plan
            .encode(&value, out)
            .map_err(|e| DecodeError::Unrepresentable(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use apache_avro::types::Value;

    const V1: &str = r#"{"type":"record","name":"E","fields":[
        {"name":"id","type":"string"},{"name":"n","type":"long"}]}"#;
    const V2: &str = r#"{"type":"record","name":"E","fields":[
        {"name":"id","type":"string"},{"name":"n","type":"long"},
        {"name":"note","type":["null","string"],"default":null}]}"#;

    fn framed(schema: &Schema, value: Value) -> Vec<u8> {
        let writer = apache_avro::writer::datum::GenericDatumWriter::builder(schema)
            .build()
            .expect("writer");
        let body = writer.write_value_to_vec(value).expect("encodes");
        wire::frame(7, &body)
    }

    fn record(id: &str, n: i64) -> Value {
        Value::Record(vec![
            ("id".into(), Value::String(id.into())),
            ("n".into(), Value::Long(n)),
        ])
    }

    fn reader(text: &str) -> Reader {
        Reader::new(
            Some(1),
            Some(1),
            Arc::new(Schema::parse_str(text).expect("parses")),
        )
        .expect("maps")
    }

    #[test]
    fn old_writer_resolves_to_new_reader() {
        let v1 = Schema::parse_str(V1).expect("parses");
        let mut out = Vec::new();
        decode_row(&framed(&v1, record("a", 5)), &v1, &reader(V2), &mut out).expect("decodes");
        // "a", 5 as Int64, then a null note.
        assert_eq!(
            out,
            [vec![1, b'a'], 5i64.to_le_bytes().to_vec(), vec![1]].concat()
        );
    }

    #[test]
    fn reader_with_the_writers_id_skips_resolution_and_writes_the_same_row() {
        let v1 = Schema::parse_str(V1).expect("parses");
        let bytes = wire::frame(1, &framed(&v1, record("a", 5))[wire::HEADER_LEN..]);
        let (mut same_id, mut other) = (Vec::new(), Vec::new());
        decode_row(&bytes, &v1, &reader(V1), &mut same_id).expect("decodes");
        let fallback = Reader::new(None, None, Arc::new(v1.clone())).expect("maps");
        decode_row(&bytes, &v1, &fallback, &mut other).expect("decodes");
        assert_eq!(same_id, other);
    }

    #[test]
    fn garbage_is_undecodable() {
        assert!(matches!(
            writer_id(Some(b"xyz")),
            Err(DecodeError::Unframed(_))
        ));
        assert!(matches!(writer_id(None), Err(DecodeError::Unframed(_))));
        let v1 = Schema::parse_str(V1).expect("parses");
        let mut out = Vec::new();
        let err = decode_row(
            &wire::frame(7, &[0xff, 0xff, 0xff]),
            &v1,
            &reader(V1),
            &mut out,
        )
        .expect_err("bad avro");
        assert!(matches!(err, DecodeError::Avro(_)), "{err:?}");
        let mut long = framed(&v1, record("a", 1));
        long.push(0);
        let err = decode_row(&long, &v1, &reader(V1), &mut out).expect_err("trailing byte");
        assert_eq!(err, DecodeError::TrailingBytes(1));
        assert!(out.is_empty());
    }

    #[test]
    fn incompatible_writer_is_poison() {
        let other = Schema::parse_str(
            r#"{"type":"record","name":"E","fields":[{"name":"id","type":"int"}]}"#,
        )
        .expect("parses");
        let value = Value::Record(vec![("id".into(), Value::Int(3))]);
        let mut out = Vec::new();
        let err = decode_row(&framed(&other, value), &other, &reader(V1), &mut out)
            .expect_err("incompatible");
        assert!(matches!(err, DecodeError::Unresolvable(_)), "{err:?}");
    }
}
