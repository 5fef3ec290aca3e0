//! Single values: null, boolean, the numbers, string, bytes, fixed and enum symbols.

use std::borrow::Borrow;

use apache_avro::Schema;
use apache_avro::types::Value;
use serde_json::Value as Json;

use super::Converter;

impl<S: Borrow<Schema>> Converter<'_, S> {
    /// Converts `json` to one of the non-logical, non-composite types.
    pub(super) fn scalar(&mut self, json: Json, schema: &Schema, pointer: &str) -> Option<Value> {
        match (schema, json) {
            (Schema::Null, Json::Null) => Some(Value::Null),
            (Schema::Boolean, Json::Bool(b)) => Some(Value::Boolean(b)),
            (Schema::Int, Json::Number(n)) => match n.as_i64().map(i32::try_from) {
                Some(Ok(i)) => Some(Value::Int(i)),
                Some(Err(_)) => self.fail(pointer, "integer out of range for int (32-bit)"),
                None => self.fail(pointer, format!("expected an integer, got {n}")),
            },
            (Schema::Long, Json::Number(n)) => match n.as_i64() {
                Some(i) => Some(Value::Long(i)),
                None if n.is_u64() => self.fail(pointer, "integer out of range for long (64-bit)"),
                None => self.fail(pointer, format!("expected an integer, got {n}")),
            },
            (Schema::Float, Json::Number(n)) => match n.as_f64().map(|f| f as f32) {
                Some(f) if f.is_finite() => Some(Value::Float(f)),
                _ => self.fail(pointer, "number out of range for float"),
            },
            (Schema::Double, Json::Number(n)) => match n.as_f64() {
                Some(f) => Some(Value::Double(f)),
                None => self.fail(pointer, "number out of range for double"),
            },
            (Schema::String, Json::String(s)) => {
                self.check_len(pointer, s.len())?;
                Some(Value::String(s))
            }
            (Schema::Bytes, Json::String(s)) => {
                let bytes = self.avro_bytes(pointer, &s)?;
                Some(Value::Bytes(bytes))
            }
            (Schema::Fixed(fixed), Json::String(s)) => {
                let bytes = self.avro_bytes(pointer, &s)?;
                if bytes.len() != fixed.size {
                    return self.fail(
                        pointer,
                        format!("expected exactly {} bytes, got {}", fixed.size, bytes.len()),
                    );
                }
                Some(Value::Fixed(fixed.size, bytes))
            }
            (Schema::Enum(e), Json::String(s)) => {
                match e.symbols.iter().position(|sym| *sym == s) {
                    Some(i) => Some(Value::Enum(i as u32, s)),
                    None => self.fail(
                        pointer,
                        format!("{s:?} is not one of {}", e.symbols.join(", ")),
                    ),
                }
            }
            (_, other) => self.mismatch(pointer, schema, &other),
        }
    }

    /// Avro's JSON encoding of bytes: each char is one byte (U+0000..U+00FF).
    fn avro_bytes(&mut self, pointer: &str, s: &str) -> Option<Vec<u8>> {
        self.check_len(pointer, s.len())?;
        let mut out = Vec::with_capacity(s.len());
        for c in s.chars() {
            match u8::try_from(u32::from(c)) {
                Ok(b) => out.push(b),
                Err(_) => {
                    self.fail(
                        pointer,
                        format!("bytes are sent as chars U+0000..U+00FF; got {c:?}"),
                    );
                    return None;
                }
            }
        }
        Some(out)
    }
}
