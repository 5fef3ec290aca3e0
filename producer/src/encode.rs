//! Avro values to Confluent-framed bytes: magic byte, the schema id fetched once at start-up, the Avro body.
//!
//! Values come from `validate`, which only builds values that fit the schema, so the writer skips apache-avro's
//! second validation pass; the round-trip tests below keep that promise honest.

use apache_avro::Schema;
use apache_avro::types::Value;
use apache_avro::writer::datum::GenericDatumWriter;
use sluice_schemas::wire::HEADER_LEN;

/// A value that could not be encoded; a bug, since validation accepted it.
#[derive(Debug, thiserror::Error)]
#[error("avro encoding failed: {0}")]
pub struct EncodeError(String);

/// Encodes the values of one request against one schema.
pub struct Encoder<'s> {
    writer: GenericDatumWriter<'s>,
    header: [u8; HEADER_LEN],
}

impl<'s> Encoder<'s> {
    /// An encoder for `schema`, registered under `schema_id`.
    pub fn new(schema: &'s Schema, schema_id: u32) -> Result<Self, EncodeError> {
        let writer = GenericDatumWriter::builder(schema)
            .validate(false)
            .build()
            .map_err(|e| EncodeError(e.to_string()))?;
        let mut header = [0u8; HEADER_LEN];
        header[1..].copy_from_slice(&schema_id.to_be_bytes());
        Ok(Self { writer, header })
    }

    /// The Confluent-framed bytes of `value`.
    pub fn encode(&self, value: &Value) -> Result<Vec<u8>, EncodeError> {
        let mut buf = Vec::with_capacity(256);
        buf.extend_from_slice(&self.header);
        self.writer
            .write_value_ref(&mut buf, value)
            .map_err(|e| EncodeError(e.to_string()))?;
        Ok(buf)
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
}
