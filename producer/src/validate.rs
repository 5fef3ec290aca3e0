//! Turns a JSON value into an Avro value of a given schema, reporting every problem as a JSON pointer and a message.
//!
//! Works on any `apache_avro::Schema`: records (with defaults for missing fields), unions (a plain JSON value picks the
//! first branch it fits; `null` picks the null branch), maps, arrays, enums, fixed, bytes (Avro's JSON encoding: one
//! char per byte) and the logical types uuid, date, time-*, timestamp-* (RFC 3339 strings or epoch numbers) and decimal.
//! Unknown record fields are errors, never silently dropped.

use std::borrow::Borrow;
use std::collections::HashMap;

use apache_avro::Schema;
use apache_avro::schema::{DecimalSchema, InnerDecimalSchema, Name, RecordSchema, UuidSchema};
use apache_avro::types::Value;
use chrono::{DateTime, NaiveDate, NaiveDateTime, NaiveTime, Timelike};
use serde::Serialize;
use serde_json::Value as Json;

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
    let mut conv = Converter {
        names,
        limits,
        errors: Vec::new(),
    };
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

struct Converter<'a, S> {
    names: &'a HashMap<Name, S>,
    limits: ValidateLimits,
    errors: Vec<FieldError>,
}

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
        Schema::TimestampMillis | Schema::TimestampMicros | Schema::TimestampNanos => {
            "an RFC 3339 timestamp (e.g. 2026-11-22T10:00:00Z) or epoch milliseconds"
        }
        Schema::LocalTimestampMillis
        | Schema::LocalTimestampMicros
        | Schema::LocalTimestampNanos => {
            "a local timestamp (e.g. 2026-11-22T10:00:00) or epoch milliseconds"
        }
        Schema::Decimal(_) | Schema::BigDecimal => "a decimal number or a decimal string",
        Schema::Duration(_) => "a duration",
        Schema::Ref { .. } => "a named type",
    }
}

impl<S: Borrow<Schema>> Converter<'_, S> {
    fn fail(&mut self, pointer: &str, message: impl Into<String>) -> Option<Value> {
        self.errors.push(FieldError {
            pointer: pointer.to_owned(),
            message: message.into(),
        });
        None
    }

    fn mismatch(&mut self, pointer: &str, schema: &Schema, json: &Json) -> Option<Value> {
        let msg = format!("expected {}, got {}", expected(schema), kind(json));
        self.fail(pointer, msg)
    }

    fn convert(
        &mut self,
        json: Json,
        schema: &Schema,
        ns: Option<&str>,
        pointer: &mut String,
    ) -> Option<Value> {
        match (schema, json) {
            (Schema::Ref { name }, json) => {
                let full = name.fully_qualified_name(ns);
                match self.names.get(full.as_ref()).map(Borrow::borrow) {
                    Some(resolved) => {
                        let inner_ns = full.namespace().map(str::to_owned);
                        self.convert(json, resolved, inner_ns.as_deref(), pointer)
                    }
                    None => self.fail(
                        pointer,
                        format!("schema refers to unknown type {}", full.fullname(None)),
                    ),
                }
            }
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
            (Schema::Uuid(inner), Json::String(s)) => match uuid::Uuid::try_parse(&s) {
                Ok(u) => match inner {
                    UuidSchema::Fixed(f) if f.size != 16 => {
                        self.fail(pointer, "schema's uuid fixed is not 16 bytes")
                    }
                    _ => Some(Value::Uuid(u)),
                },
                Err(_) => self.fail(pointer, format!("expected a UUID string, got {s:?}")),
            },
            (Schema::Enum(e), Json::String(s)) => {
                match e.symbols.iter().position(|sym| *sym == s) {
                    Some(i) => Some(Value::Enum(i as u32, s)),
                    None => self.fail(
                        pointer,
                        format!("{s:?} is not one of {}", e.symbols.join(", ")),
                    ),
                }
            }
            (Schema::Array(arr), Json::Array(items)) => {
                let mut out = Vec::with_capacity(items.len());
                let mut ok = true;
                for (i, item) in items.into_iter().enumerate() {
                    let len = pointer.len();
                    pointer.push('/');
                    pointer.push_str(&i.to_string());
                    match self.convert(item, &arr.items, ns, pointer) {
                        Some(v) => out.push(v),
                        None => ok = false,
                    }
                    pointer.truncate(len);
                }
                ok.then_some(Value::Array(out))
            }
            (Schema::Map(map), Json::Object(obj)) => {
                let mut out = HashMap::with_capacity(obj.len());
                let mut ok = true;
                for (k, v) in obj {
                    let len = pointer.len();
                    push_token(pointer, &k);
                    if self.check_len(pointer, k.len()).is_none() {
                        ok = false;
                    } else {
                        match self.convert(v, &map.types, ns, pointer) {
                            Some(v) => {
                                out.insert(k, v);
                            }
                            None => ok = false,
                        }
                    }
                    pointer.truncate(len);
                }
                ok.then_some(Value::Map(out))
            }
            (Schema::Record(rec), Json::Object(obj)) => self.record(obj, rec, pointer),
            (Schema::Union(union), json) => self.union(json, union.variants(), ns, pointer),
            (Schema::Date, Json::String(s)) => match NaiveDate::parse_from_str(&s, "%Y-%m-%d") {
                Ok(d) => Some(Value::Date((d - NaiveDate::default()).num_days() as i32)),
                Err(e) => self.fail(pointer, format!("bad date {s:?}: {e}; expected YYYY-MM-DD")),
            },
            (Schema::Date, n @ Json::Number(_)) => self.int_like(&n, pointer).map(Value::Date),
            (Schema::TimeMillis, Json::String(s)) => {
                let t = self.time(pointer, &s)?;
                Some(Value::TimeMillis(
                    (t.num_seconds_from_midnight() * 1000 + t.nanosecond() / 1_000_000) as i32,
                ))
            }
            (Schema::TimeMicros, Json::String(s)) => {
                let t = self.time(pointer, &s)?;
                Some(Value::TimeMicros(
                    i64::from(t.num_seconds_from_midnight()) * 1_000_000
                        + i64::from(t.nanosecond() / 1000),
                ))
            }
            (Schema::TimeMillis, n @ Json::Number(_)) => {
                self.int_like(&n, pointer).map(Value::TimeMillis)
            }
            (Schema::TimeMicros, Json::Number(n)) => self.long(&n, pointer).map(Value::TimeMicros),
            (
                Schema::TimestampMillis
                | Schema::TimestampMicros
                | Schema::TimestampNanos
                | Schema::LocalTimestampMillis
                | Schema::LocalTimestampMicros
                | Schema::LocalTimestampNanos,
                Json::String(s),
            ) => self.timestamp_str(schema, &s, pointer),
            (
                Schema::TimestampMillis
                | Schema::TimestampMicros
                | Schema::TimestampNanos
                | Schema::LocalTimestampMillis
                | Schema::LocalTimestampMicros
                | Schema::LocalTimestampNanos,
                Json::Number(n),
            ) => {
                let i = self.long(&n, pointer)?;
                Some(timestamp_value(schema, i))
            }
            (Schema::Decimal(dec), d @ (Json::String(_) | Json::Number(_))) => {
                self.decimal(&d, dec, pointer)
            }
            (Schema::BigDecimal | Schema::Duration(_), _) => self.fail(
                pointer,
                "this schema type cannot be sent as JSON to this producer",
            ),
            (_, other) => self.mismatch(pointer, schema, &other),
        }
    }

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

    fn int_like(&mut self, json: &Json, pointer: &str) -> Option<i32> {
        match json.as_i64().map(i32::try_from) {
            Some(Ok(i)) => Some(i),
            _ => {
                self.fail(pointer, format!("expected a 32-bit integer, got {json}"));
                None
            }
        }
    }

    fn long(&mut self, n: &serde_json::Number, pointer: &str) -> Option<i64> {
        match n.as_i64() {
            Some(i) => Some(i),
            None => {
                self.fail(pointer, format!("expected a 64-bit integer, got {n}"));
                None
            }
        }
    }

    fn time(&mut self, pointer: &str, s: &str) -> Option<NaiveTime> {
        match NaiveTime::parse_from_str(s, "%H:%M:%S%.f") {
            Ok(t) => Some(t),
            Err(e) => {
                self.fail(
                    pointer,
                    format!("bad time {s:?}: {e}; expected HH:MM:SS[.fff]"),
                );
                None
            }
        }
    }

    fn timestamp_str(&mut self, schema: &Schema, s: &str, pointer: &str) -> Option<Value> {
        let local = matches!(
            schema,
            Schema::LocalTimestampMillis
                | Schema::LocalTimestampMicros
                | Schema::LocalTimestampNanos
        );
        let naive = if local {
            NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f").map_err(|e| e.to_string())
        } else {
            DateTime::parse_from_rfc3339(s)
                .map(|d| d.naive_utc())
                .map_err(|e| e.to_string())
        };
        let naive = match naive {
            Ok(n) => n,
            Err(e) => {
                return self.fail(
                    pointer,
                    format!("bad timestamp {s:?}: {e}; expected {}", expected(schema)),
                );
            }
        };
        let utc = naive.and_utc();
        let n = match schema {
            Schema::TimestampMillis | Schema::LocalTimestampMillis => Some(utc.timestamp_millis()),
            Schema::TimestampMicros | Schema::LocalTimestampMicros => Some(utc.timestamp_micros()),
            _ => utc.timestamp_nanos_opt(),
        };
        match n {
            Some(n) => Some(timestamp_value(schema, n)),
            None => self.fail(pointer, format!("timestamp {s:?} is out of range")),
        }
    }

    fn decimal(&mut self, json: &Json, dec: &DecimalSchema, pointer: &str) -> Option<Value> {
        let text = match json {
            Json::String(s) => s.clone(),
            other => other.to_string(),
        };
        let Some(unscaled) = parse_decimal(&text, dec.scale) else {
            let msg = format!(
                "{text:?} is not a decimal with at most {} fraction digits",
                dec.scale
            );
            return self.fail(pointer, msg);
        };
        let digits = unscaled
            .unsigned_abs()
            .checked_ilog10()
            .map_or(1, |d| d as usize + 1);
        if digits > dec.precision {
            return self.fail(
                pointer,
                format!("{text} has more than {} significant digits", dec.precision),
            );
        }
        let bytes = minimal_twos_complement(unscaled);
        if let InnerDecimalSchema::Fixed(f) = &dec.inner
            && bytes.len() > f.size
        {
            return self.fail(pointer, format!("{text} does not fit in {} bytes", f.size));
        }
        Some(Value::Decimal(apache_avro::Decimal::from(bytes)))
    }

    fn record(
        &mut self,
        mut obj: serde_json::Map<String, Json>,
        rec: &RecordSchema,
        pointer: &mut String,
    ) -> Option<Value> {
        let ns = rec.name.namespace();
        let mut ok = true;
        for key in obj.keys() {
            if !rec.lookup.contains_key(key) {
                let len = pointer.len();
                push_token(pointer, key);
                self.fail(pointer, "unknown field");
                pointer.truncate(len);
                ok = false;
            }
        }
        let mut fields = Vec::with_capacity(rec.fields.len());
        for field in &rec.fields {
            let len = pointer.len();
            push_token(pointer, &field.name);
            let value = match (obj.remove(&field.name), &field.default) {
                (Some(v), _) => self.convert(v, &field.schema, ns, pointer),
                (None, Some(default)) => self.convert(default.clone(), &field.schema, ns, pointer),
                (None, None) => self.fail(pointer, "required field is missing"),
            };
            pointer.truncate(len);
            match value {
                Some(v) => fields.push((field.name.clone(), v)),
                None => ok = false,
            }
        }
        ok.then_some(Value::Record(fields))
    }

    fn union(
        &mut self,
        json: Json,
        variants: &[Schema],
        ns: Option<&str>,
        pointer: &mut String,
    ) -> Option<Value> {
        if json.is_null() {
            return match variants.iter().position(|s| matches!(s, Schema::Null)) {
                Some(i) => Some(Value::Union(i as u32, Box::new(Value::Null))),
                None => self.fail(pointer, "must not be null"),
            };
        }
        let non_null = || {
            variants
                .iter()
                .enumerate()
                .filter(|(_, s)| !matches!(s, Schema::Null))
        };
        // The common `["null", T]`: convert in place, and T's own errors say the most. Checked without collecting
        // the branches, since every optional field of every event comes through here.
        let mut branches = non_null();
        if let (Some((i, branch)), None) = (branches.next(), branches.next()) {
            let v = self.convert(json, branch, ns, pointer)?;
            return Some(Value::Union(i as u32, Box::new(v)));
        }
        let candidates: Vec<(usize, &Schema)> = non_null().collect();
        let mut first_errors = None;
        for &(i, branch) in &candidates {
            let mut trial = Converter {
                names: self.names,
                limits: self.limits,
                errors: Vec::new(),
            };
            let value = trial.convert(json.clone(), branch, ns, pointer);
            match value {
                Some(v) if trial.errors.is_empty() => {
                    return Some(Value::Union(i as u32, Box::new(v)));
                }
                _ => {
                    if first_errors.is_none() {
                        first_errors = Some(trial.errors);
                    }
                }
            }
        }
        match (candidates.len(), first_errors) {
            // One real branch (the common `["null", T]`): its own errors say the most.
            (1, Some(errors)) => {
                self.errors.extend(errors);
                None
            }
            _ => {
                let wanted: Vec<&str> = candidates.iter().map(|(_, s)| expected(s)).collect();
                let msg = format!(
                    "expected one of: {}; got {}",
                    wanted.join(" | "),
                    kind(&json)
                );
                self.fail(pointer, msg)
            }
        }
    }
}

fn timestamp_value(schema: &Schema, n: i64) -> Value {
    match schema {
        Schema::TimestampMillis => Value::TimestampMillis(n),
        Schema::TimestampMicros => Value::TimestampMicros(n),
        Schema::TimestampNanos => Value::TimestampNanos(n),
        Schema::LocalTimestampMillis => Value::LocalTimestampMillis(n),
        Schema::LocalTimestampMicros => Value::LocalTimestampMicros(n),
        _ => Value::LocalTimestampNanos(n),
    }
}

/// `"-12.5"` at scale 2 is `-1250`; `None` when not a plain decimal or when it has more fraction digits than `scale`.
fn parse_decimal(text: &str, scale: usize) -> Option<i128> {
    let (neg, body) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text.strip_prefix('+').unwrap_or(text)),
    };
    let (int_part, frac_part) = body.split_once('.').unwrap_or((body, ""));
    if int_part.is_empty() && frac_part.is_empty() {
        return None;
    }
    if !int_part.bytes().all(|b| b.is_ascii_digit())
        || !frac_part.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let frac_trimmed = frac_part.trim_end_matches('0');
    if frac_trimmed.len() > scale {
        return None;
    }
    let mut v: i128 = 0;
    for b in int_part.bytes().chain(frac_trimmed.bytes()) {
        v = v.checked_mul(10)?.checked_add(i128::from(b - b'0'))?;
    }
    for _ in frac_trimmed.len()..scale {
        v = v.checked_mul(10)?;
    }
    Some(if neg { -v } else { v })
}

fn minimal_twos_complement(v: i128) -> Vec<u8> {
    let bytes = v.to_be_bytes();
    let mut start = 0;
    while start < bytes.len() - 1 {
        let (b, next) = (bytes[start], bytes[start + 1]);
        let redundant = (b == 0x00 && next & 0x80 == 0) || (b == 0xff && next & 0x80 != 0);
        if !redundant {
            break;
        }
        start += 1;
    }
    bytes[start..].to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;
    use apache_avro::schema::ResolvedSchema;
    use serde_json::json;

    const LIMITS: ValidateLimits = ValidateLimits {
        max_string_bytes: 16,
    };

    fn check(schema: &str, json: Json) -> Result<Value, Vec<FieldError>> {
        let schema = Schema::parse_str(schema).expect("schema parses");
        let resolved = ResolvedSchema::new(&schema).expect("resolves");
        to_avro(json, &schema, resolved.get_names(), LIMITS)
    }

    fn errors(schema: &str, json: Json) -> Vec<(String, String)> {
        check(schema, json)
            .expect_err("should fail")
            .into_iter()
            .map(|e| (e.pointer, e.message))
            .collect()
    }

    const EVENT: &str = sluice_schemas::catalog::EVENT.text;

    fn good_event() -> Json {
        json!({
            "event_id": "0190b8a4-6c3e-7a1b-9c2d-3e4f5a6b7c8d",
            "tenant": "t",
            "event_type": "page_view",
            "occurred_at": "2026-11-22T10:00:00.123Z",
            "received_at": 1_700_000_000_000i64,
            "user_id": "u-1",
            "properties": {"path": "/p"}
        })
    }

    #[test]
    fn event_converts_with_defaults_and_logical_types() {
        let v = check(EVENT, good_event()).expect("valid");
        let Value::Record(fields) = v else {
            panic!("record expected")
        };
        let get = |n: &str| {
            fields
                .iter()
                .find(|(k, _)| k == n)
                .map(|(_, v)| v.clone())
                .expect("field present")
        };
        assert_eq!(
            get("occurred_at"),
            Value::TimestampMillis(1_795_341_600_123)
        );
        assert_eq!(
            get("received_at"),
            Value::TimestampMillis(1_700_000_000_000)
        );
        assert!(matches!(get("event_id"), Value::Uuid(_)));
        assert_eq!(get("source"), Value::Union(0, Box::new(Value::Null)));
        assert_eq!(
            get("user_id"),
            Value::Union(1, Box::new(Value::String("u-1".into())))
        );
        // Field order follows the schema, as the encoder needs.
        let names: Vec<&str> = fields.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(names[..3], ["event_id", "tenant", "event_type"]);
        let mut no_props = good_event();
        no_props
            .as_object_mut()
            .expect("object")
            .remove("properties");
        let Value::Record(fields) = check(EVENT, no_props).expect("valid") else {
            panic!()
        };
        assert_eq!(
            fields.last().map(|f| f.1.clone()),
            Some(Value::Map(HashMap::new()))
        );
    }

    #[test]
    fn every_problem_is_reported_with_its_pointer() {
        let mut e = good_event();
        let obj = e.as_object_mut().expect("object");
        obj.remove("event_type");
        obj.insert("colour".into(), json!("red"));
        obj.insert("occurred_at".into(), json!("yesterday"));
        obj.insert("user_id".into(), json!(42));
        obj.insert("properties".into(), json!({"a/b": 1, "ok": "x"}));
        obj.insert("source".into(), json!("x".repeat(17)));
        let errs = errors(EVENT, e);
        let pointers: Vec<&str> = errs.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(
            pointers,
            [
                "/colour",
                "/event_type",
                "/occurred_at",
                "/source",
                "/user_id",
                "/properties/a~1b"
            ],
            "{errs:?}"
        );
        assert_eq!(errs[0].1, "unknown field");
        assert_eq!(errs[1].1, "required field is missing");
        assert!(errs[2].1.contains("RFC 3339"), "{}", errs[2].1);
        assert!(
            errs[3].1.contains("longer than the limit of 16"),
            "{}",
            errs[3].1
        );
        assert_eq!(errs[4].1, "expected a string, got number");
        assert_eq!(errs[5].1, "expected a string, got number");
    }

    #[test]
    fn wrong_top_level_and_null_for_required() {
        assert_eq!(
            errors(EVENT, json!([1])),
            [("".into(), "expected an object, got array".into())]
        );
        let mut e = good_event();
        e["event_type"] = Json::Null;
        assert_eq!(
            errors(EVENT, e),
            [("/event_type".into(), "expected a string, got null".into())]
        );
        let mut e = good_event();
        e["event_id"] = json!("not-a-uuid");
        assert_eq!(errors(EVENT, e)[0].0, "/event_id");
        let mut e = good_event();
        e["occurred_at"] = json!(1.5);
        assert_eq!(errors(EVENT, e)[0].0, "/occurred_at");
    }

    const RICH: &str = r#"{
        "type": "record", "name": "Rich", "namespace": "t",
        "fields": [
            {"name": "n", "type": "int"},
            {"name": "tags", "type": {"type": "array", "items": "string"}},
            {"name": "colour", "type": {"type": "enum", "name": "Colour", "symbols": ["RED", "GREEN"]}},
            {"name": "other", "type": ["null", "Colour"], "default": null},
            {"name": "multi", "type": ["null", "long", "string"], "default": null},
            {"name": "day", "type": {"type": "int", "logicalType": "date"}},
            {"name": "price", "type": {"type": "bytes", "logicalType": "decimal", "precision": 6, "scale": 2}},
            {"name": "raw", "type": "bytes", "default": ""},
            {"name": "inner", "type": {"type": "record", "name": "Inner", "fields": [{"name": "x", "type": "double"}]}},
            {"name": "ts_us", "type": {"type": "long", "logicalType": "timestamp-micros"}, "default": 0}
        ]
    }"#;

    #[test]
    fn generic_schema_features() {
        let v = check(
            RICH,
            json!({
                "n": 7, "tags": ["a", "b"], "colour": "GREEN", "other": "RED", "multi": "x",
                "day": "1970-01-03", "price": "-12.5", "raw": "\u{00ff}A", "inner": {"x": 1.5},
                "ts_us": "1970-01-01T00:00:01.000002Z"
            }),
        )
        .expect("valid");
        let Value::Record(f) = v else { panic!() };
        assert_eq!(f[0].1, Value::Int(7));
        assert_eq!(
            f[1].1,
            Value::Array(vec![Value::String("a".into()), Value::String("b".into())])
        );
        assert_eq!(f[2].1, Value::Enum(1, "GREEN".into()));
        assert_eq!(
            f[3].1,
            Value::Union(1, Box::new(Value::Enum(0, "RED".into())))
        );
        assert_eq!(f[4].1, Value::Union(2, Box::new(Value::String("x".into()))));
        assert_eq!(f[5].1, Value::Date(2));
        assert_eq!(
            f[6].1,
            Value::Decimal(apache_avro::Decimal::from(minimal_twos_complement(-1250)))
        );
        assert_eq!(f[7].1, Value::Bytes(vec![0xff, b'A']));
        assert_eq!(
            f[8].1,
            Value::Record(vec![("x".into(), Value::Double(1.5))])
        );
        assert_eq!(f[9].1, Value::TimestampMicros(1_000_002));

        let errs = errors(
            RICH,
            json!({
                "n": 1u64 << 40, "tags": ["a", 2], "colour": "BLUE", "multi": true, "day": "1970-13-01",
                "price": "1.234", "raw": "\u{0100}", "inner": {"x": "1"}
            }),
        );
        let pointers: Vec<&str> = errs.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(
            pointers,
            [
                "/n", "/tags/1", "/colour", "/multi", "/day", "/price", "/raw", "/inner/x"
            ],
            "{errs:?}"
        );
        assert!(
            errs[3]
                .1
                .starts_with("expected one of: an integer | a string"),
            "{}",
            errs[3].1
        );
    }

    #[test]
    fn decimal_helpers() {
        assert_eq!(parse_decimal("12.5", 2), Some(1250));
        assert_eq!(parse_decimal("-0.01", 2), Some(-1));
        assert_eq!(parse_decimal("1.230", 2), Some(123));
        assert_eq!(parse_decimal("1.234", 2), None);
        assert_eq!(parse_decimal("1e3", 2), None);
        assert_eq!(parse_decimal(".", 2), None);
        assert_eq!(minimal_twos_complement(0), vec![0]);
        assert_eq!(minimal_twos_complement(128), vec![0, 128]);
        assert_eq!(minimal_twos_complement(-1), vec![0xff]);
        assert_eq!(minimal_twos_complement(-129), vec![0xff, 0x7f]);
    }

    #[test]
    fn pointer_escaping() {
        let mut p = String::new();
        push_token(&mut p, "a/b~c");
        assert_eq!(p, "/a~1b~0c");
        push_token(&mut p, "plain");
        assert_eq!(p, "/a~1b~0c/plain");
    }
}
