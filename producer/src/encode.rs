//! Avro values to Confluent-framed bytes: magic byte, the schema id fetched once at start-up, the Avro body.
//!
//! Values come from `validate`, which only builds values that fit the schema, so the writer skips apache-avro's
//! second validation pass; the round-trip tests below keep that promise honest.

use apache_avro::Schema;
use apache_avro::schema::UuidSchema;
use apache_avro::types::Value;
use apache_avro::writer::datum::GenericDatumWriter;
use sluice_schemas::wire::{self, HEADER_LEN};

/// A value that could not be encoded; a bug, since validation accepted it.
#[derive(Debug, thiserror::Error)]
#[error("avro encoding failed: {0}")]
pub struct EncodeError(String);

/// Encodes the values of one request against one schema.
pub struct Encoder<'s> {
    writer: GenericDatumWriter<'s>,
    /// One writer per top-level field, when no field holds a named type. apache-avro finds a record's values
    /// through a hash map it builds for every record written; writing the fields in order skips that, which was
    /// two thirds of the encoding work (benches: `sluice-profile producer`).
    fields: Option<Vec<(&'s str, GenericDatumWriter<'s>)>>,
    header: [u8; HEADER_LEN],
}

impl<'s> Encoder<'s> {
    /// An encoder for `schema`, registered under `schema_id`.
    pub fn new(schema: &'s Schema, schema_id: u32) -> Result<Self, EncodeError> {
        let writer = GenericDatumWriter::builder(schema)
            .validate(false)
            .build()
            .map_err(|e| EncodeError(e.to_string()))?;
        Ok(Self {
            writer,
            fields: field_writers(schema),
            header: wire::header(schema_id),
        })
    }

    /// The Confluent-framed bytes of `value`.
    pub fn encode(&self, value: &Value) -> Result<Vec<u8>, EncodeError> {
        let mut buf = Vec::with_capacity(256);
        buf.extend_from_slice(&self.header);
        let err = |e: apache_avro::Error| EncodeError(e.to_string());
        match (&self.fields, value) {
            (Some(fields), Value::Record(items))
                if items.len() == fields.len()
                    && fields.iter().zip(items).all(|((f, _), (k, _))| f == k) =>
            {
                for ((_, w), (_, v)) in fields.iter().zip(items) {
                    w.write_value_ref(&mut buf, v).map_err(err)?;
                }
            }
            _ => {
                self.writer.write_value_ref(&mut buf, value).map_err(err)?;
            }
        }
        Ok(buf)
    }
}

/// Writers for each field of a record, or `None` when a field's encoding may need the record's named types.
fn field_writers(schema: &Schema) -> Option<Vec<(&str, GenericDatumWriter<'_>)>> {
    let Schema::Record(rec) = schema else {
        return None;
    };
    rec.fields
        .iter()
        .map(|f| {
            if names_types(&f.schema) {
                return None;
            }
            let w = GenericDatumWriter::builder(&f.schema)
                .validate(false)
                .build()
                .ok()?;
            Some((f.name.as_str(), w))
        })
        .collect()
}

/// Whether a schema defines or refers to a named type (record, enum, fixed and the logical types built on fixed).
fn names_types(schema: &Schema) -> bool {
    match schema {
        Schema::Record(_)
        | Schema::Enum(_)
        | Schema::Fixed(_)
        | Schema::Ref { .. }
        | Schema::Decimal(_)
        | Schema::Duration(_)
        | Schema::Uuid(UuidSchema::Fixed(_)) => true,
        Schema::Array(a) => names_types(&a.items),
        Schema::Map(m) => names_types(&m.types),
        Schema::Union(u) => u.variants().iter().any(names_types),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validate::{ValidateLimits, to_avro};
    use apache_avro::schema::ResolvedSchema;
    use serde_json::json;

    #[test]
    fn framed_bytes_decode_back_to_the_value() {
        let parsed = Schema::parse_str(sluice_schemas::catalog::EVENT.text).expect("parses");
        let schema = &parsed;
        let resolved = ResolvedSchema::new(schema).expect("resolves");
        let json = json!({
            "event_id": "0190b8a4-6c3e-7a1b-9c2d-3e4f5a6b7c8d", "tenant": "t", "event_type": "e",
            "occurred_at": 1, "received_at": 2, "trace_id": "abc", "properties": {"k": "v", "k2": "v2"}
        });
        let value = to_avro(
            json,
            schema,
            resolved.get_names(),
            ValidateLimits {
                max_string_bytes: 100,
            },
        )
        .expect("valid");
        let enc = Encoder::new(schema, 258).expect("encoder");
        let bytes = enc.encode(&value).expect("encodes");
        let (id, mut body) = sluice_schemas::wire::unframe(&bytes).expect("framed");
        assert_eq!(id, 258);
        let back = apache_avro::reader::datum::GenericDatumReader::builder(schema)
            .build()
            .expect("reader")
            .read_value(&mut body)
            .expect("decodes");
        // Decoding yields plain strings for uuid-over-string; compare through the validated form.
        let Value::Record(back) = back else {
            panic!("record")
        };
        let Value::Record(sent) = value else {
            panic!("record")
        };
        assert_eq!(back.len(), sent.len());
        for ((bk, bv), (sk, sv)) in back.iter().zip(&sent) {
            assert_eq!(bk, sk);
            match (bv, sv) {
                (Value::Uuid(b), Value::Uuid(s)) => assert_eq!(b, s),
                (Value::String(b), Value::Uuid(s)) => assert_eq!(b, &s.to_string()),
                (b, s) => assert_eq!(b, s, "field {bk}"),
            }
        }
        assert!(body.is_empty(), "whole body consumed");
    }

    #[test]
    fn records_with_named_types_fall_back_to_the_whole_record_writer() {
        let schema = Schema::parse_str(
            r#"{"type":"record","name":"R","namespace":"n","fields":[
                {"name":"a","type":"string"},
                {"name":"c","type":{"type":"enum","name":"Color","symbols":["red","blue"]}},
                {"name":"d","type":["null","Color"],"default":null}]}"#,
        )
        .expect("parses");
        let enc = Encoder::new(&schema, 1).expect("encoder");
        assert!(enc.fields.is_none());
        let value = Value::Record(vec![
            ("a".into(), Value::String("x".into())),
            ("c".into(), Value::Enum(1, "blue".into())),
            (
                "d".into(),
                Value::Union(1, Box::new(Value::Enum(0, "red".into()))),
            ),
        ]);
        let bytes = enc.encode(&value).expect("encodes");
        let mut body = &bytes[HEADER_LEN..];
        let back = apache_avro::reader::datum::GenericDatumReader::builder(&schema)
            .build()
            .expect("reader")
            .read_value(&mut body)
            .expect("decodes");
        assert_eq!(back, value);
    }

    #[test]
    fn field_by_field_writes_what_the_whole_record_writer_writes() {
        let schema = Schema::parse_str(sluice_schemas::catalog::EVENT.text).expect("parses");
        let enc = Encoder::new(&schema, 9).expect("encoder");
        assert!(
            enc.fields.is_some(),
            "the event schema is written field by field"
        );
        let value = Value::Record(vec![
            ("event_id".into(), Value::Uuid(uuid::Uuid::nil())),
            ("tenant".into(), Value::String("t".into())),
            ("event_type".into(), Value::String("e".into())),
            ("occurred_at".into(), Value::TimestampMillis(1)),
            ("received_at".into(), Value::TimestampMillis(2)),
            ("source".into(), Value::Union(0, Box::new(Value::Null))),
            (
                "user_id".into(),
                Value::Union(1, Box::new(Value::String("u".into()))),
            ),
            (
                "anonymous_id".into(),
                Value::Union(0, Box::new(Value::Null)),
            ),
            ("session_id".into(), Value::Union(0, Box::new(Value::Null))),
            ("trace_id".into(), Value::Union(0, Box::new(Value::Null))),
            (
                "properties".into(),
                Value::Map([("k".to_owned(), Value::String("v".into()))].into()),
            ),
        ]);
        let mut whole = enc.header.to_vec();
        enc.writer
            .write_value_ref(&mut whole, &value)
            .expect("encodes");
        assert_eq!(enc.encode(&value).expect("encodes"), whole);
    }
}
