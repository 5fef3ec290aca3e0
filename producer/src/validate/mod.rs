//! Turns a JSON value into an Avro value of a given schema, reporting every problem as a JSON pointer and a message.
//!
//! Works on any `apache_avro::Schema`: records (with defaults for missing fields), unions (a plain JSON value picks the
//! first branch it fits; `null` picks the null branch), maps, arrays, enums, fixed, bytes (Avro's JSON encoding: one
//! char per byte) and the logical types uuid, date, time-*, timestamp-* (RFC 3339 strings or epoch numbers) and decimal.
//! Unknown record fields are errors, never silently dropped. Dates and timestamps ClickHouse cannot store are errors
//! too ([`MIN_TIMESTAMP_SECS`] says which), so the producer never accepts an event the consumer must dead-letter.
//!
//! This file holds the entry points, the error type and the dispatch on the schema; the conversions themselves live
//! in `scalar` (single values), `composite` (records, unions, arrays, maps) and `logical` (logical types).

mod composite;
pub mod direct;
mod logical;
mod scalar;
#[cfg(test)]
mod tests;

use std::borrow::Borrow;
use std::collections::HashMap;

use apache_avro::Schema;
use apache_avro::schema::Name;
use apache_avro::types::Value;
use serde::Serialize;
use serde_json::Value as Json;

pub use logical::{
    MAX_DATE_DAYS, MAX_TIMESTAMP_SECS, MIN_DATE_DAYS, MIN_TIMESTAMP_SECS, date_range_text,
    epoch_rfc3339, per_second, timestamp_bounds, timestamp_range_text,
};

/// One problem with one value: where (RFC 6901 pointer, relative to the event) and what.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldError {
    /// JSON pointer to the offending value, `""` for the event itself.
    pub pointer: String,
    /// What is wrong, for a human.
    pub message: String,
}

/// Bounds applied while converting.
#[derive(Debug, Clone, Copy)]
pub struct ValidateLimits {
    /// Longest string (or bytes) value, in bytes.
    pub max_string_bytes: usize,
}

/// Converts `json` to a value of `schema`, or lists every problem found.
/// `names` resolves named types (`Schema::Ref`), as `ResolvedSchema::get_names` returns them.
pub fn to_avro<S: Borrow<Schema>>(
    json: Json,
    schema: &Schema,
    names: &HashMap<Name, S>,
    limits: ValidateLimits,
) -> Result<Value, Vec<FieldError>> {
    let mut conv = Converter::new(names, limits);
    let mut pointer = String::new();
    let value = conv.convert(json, schema, None, &mut pointer);
    match value {
        Some(v) if conv.errors.is_empty() => Ok(v),
        _ => Err(conv.errors),
    }
}

/// Appends one RFC 6901 reference token to `pointer`.
pub fn push_token(pointer: &mut String, token: &str) {
    pointer.push('/');
    // Field names almost never need escaping; this runs for every field of every event.
    if !token.contains(['~', '/']) {
        pointer.push_str(token);
        return;
    }
    for c in token.chars() {
        match c {
            '~' => pointer.push_str("~0"),
            '/' => pointer.push_str("~1"),
            c => pointer.push(c),
        }
    }
}

/// One conversion's state. Every `Option<Value>`-returning method answers `None` exactly when it recorded at
/// least one error, so callers keep going and report every problem, not just the first.
struct Converter<'a, S> {
    names: &'a HashMap<Name, S>,
    limits: ValidateLimits,
    errors: Vec<FieldError>,
}

/// The JSON type of `json`, for messages.
fn kind(json: &Json) -> &'static str {
    match json {
        Json::Null => "null",
        Json::Bool(_) => "boolean",
        Json::Number(_) => "number",
        Json::String(_) => "string",
        Json::Array(_) => "array",
        Json::Object(_) => "object",
    }
}

/// What `schema` accepts, for messages.
fn expected(schema: &Schema) -> &'static str {
    match schema {
        Schema::Null => "null",
        Schema::Boolean => "a boolean",
        Schema::Int | Schema::Long => "an integer",
        Schema::Float | Schema::Double => "a number",
        Schema::Bytes | Schema::Fixed(_) => "a string of bytes",
        Schema::String => "a string",
        Schema::Array(_) => "an array",
        Schema::Map(_) => "an object (map)",
        Schema::Record(_) => "an object",
        Schema::Enum(_) => "one of the enum's symbols",
        Schema::Union(_) => "a value of the union",
        Schema::Uuid(_) => "a UUID string",
        Schema::Date => "a date (YYYY-MM-DD) or days since 1970-01-01",
        Schema::TimeMillis | Schema::TimeMicros => "a time of day (HH:MM:SS[.fff])",
        // Epoch numbers are read in the schema's own unit, so the message names it.
        Schema::TimestampMillis => {
            "an RFC 3339 timestamp (e.g. 2026-11-22T10:00:00Z) or epoch milliseconds"
        }
        Schema::TimestampMicros => {
            "an RFC 3339 timestamp (e.g. 2026-11-22T10:00:00Z) or epoch microseconds"
        }
        Schema::TimestampNanos => {
            "an RFC 3339 timestamp (e.g. 2026-11-22T10:00:00Z) or epoch nanoseconds"
        }
        Schema::LocalTimestampMillis => {
            "a local timestamp (e.g. 2026-11-22T10:00:00) or epoch milliseconds"
        }
        Schema::LocalTimestampMicros => {
            "a local timestamp (e.g. 2026-11-22T10:00:00) or epoch microseconds"
        }
        Schema::LocalTimestampNanos => {
            "a local timestamp (e.g. 2026-11-22T10:00:00) or epoch nanoseconds"
        }
        Schema::Decimal(_) | Schema::BigDecimal => "a decimal number or a decimal string",
        Schema::Duration(_) => "a duration",
        Schema::Ref { .. } => "a named type",
    }
}

impl<'a, S: Borrow<Schema>> Converter<'a, S> {
    fn new(names: &'a HashMap<Name, S>, limits: ValidateLimits) -> Self {
        Self {
            names,
            limits,
            errors: Vec::new(),
        }
    }

    /// Records an error at `pointer`; always `None`, so a conversion can end with `return self.fail(..)`.
    fn fail(&mut self, pointer: &str, message: impl Into<String>) -> Option<Value> {
        self.errors.push(FieldError {
            pointer: pointer.to_owned(),
            message: message.into(),
        });
        None
    }

    /// Records that `json` is the wrong JSON type for `schema`.
    fn mismatch(&mut self, pointer: &str, schema: &Schema, json: &Json) -> Option<Value> {
        let msg = format!("expected {}, got {}", expected(schema), kind(json));
        self.fail(pointer, msg)
    }

    /// Converts `json` to `schema`; `ns` is the enclosing namespace, against which named references resolve.
    fn convert(
        &mut self,
        json: Json,
        schema: &Schema,
        ns: Option<&str>,
        pointer: &mut String,
    ) -> Option<Value> {
        match schema {
            Schema::Ref { name } => {
                let full = name.fully_qualified_name(ns);
                match self.names.get(full.as_ref()).map(Borrow::borrow) {
                    Some(resolved) => {
                        // Names inside the resolved type are relative to its own namespace, not the referrer's.
                        let inner_ns = full.namespace().map(str::to_owned);
                        self.convert(json, resolved, inner_ns.as_deref(), pointer)
                    }
                    None => self.fail(
                        pointer,
                        format!("schema refers to unknown type {}", full.fullname(None)),
                    ),
                }
            }
            Schema::Record(_) | Schema::Union(_) | Schema::Array(_) | Schema::Map(_) => {
                self.composite(json, schema, ns, pointer)
            }
            Schema::Uuid(_)
            | Schema::Date
            | Schema::TimeMillis
            | Schema::TimeMicros
            | Schema::TimestampMillis
            | Schema::TimestampMicros
            | Schema::TimestampNanos
            | Schema::LocalTimestampMillis
            | Schema::LocalTimestampMicros
            | Schema::LocalTimestampNanos
            | Schema::Decimal(_) => self.logical(json, schema, pointer),
            Schema::BigDecimal | Schema::Duration(_) => self.fail(
                pointer,
                "this schema type cannot be sent as JSON to this producer",
            ),
            Schema::Null
            | Schema::Boolean
            | Schema::Int
            | Schema::Long
            | Schema::Float
            | Schema::Double
            | Schema::String
            | Schema::Bytes
            | Schema::Fixed(_)
            | Schema::Enum(_) => self.scalar(json, schema, pointer),
        }
    }

    /// Records an error and answers `None` when a string (or map key, or bytes) of `len` bytes exceeds the limit.
    fn check_len(&mut self, pointer: &str, len: usize) -> Option<()> {
        if len > self.limits.max_string_bytes {
            let max = self.limits.max_string_bytes;
            self.fail(
                pointer,
                format!("string is {len} bytes, longer than the limit of {max}"),
            );
            return None;
        }
        Some(())
    }
}
