//! Avro's logical types: uuid, date, time-*, timestamp-* and local-timestamp-* (text or epoch numbers), and decimal
//! (text or a JSON number, stored as minimal two's-complement bytes).

use std::borrow::Borrow;

use apache_avro::Schema;
use apache_avro::schema::{DecimalSchema, InnerDecimalSchema, UuidSchema};
use apache_avro::types::Value;
use chrono::{DateTime, NaiveDate, NaiveDateTime, NaiveTime, Timelike};
use serde_json::Value as Json;

use super::{Converter, expected};

impl<S: Borrow<Schema>> Converter<'_, S> {
    /// Converts `json` to one of the logical types.
    pub(super) fn logical(&mut self, json: Json, schema: &Schema, pointer: &str) -> Option<Value> {
        match (schema, json) {
            (Schema::Uuid(inner), Json::String(s)) => match uuid::Uuid::try_parse(&s) {
                Ok(u) => match inner {
                    UuidSchema::Fixed(f) if f.size != 16 => {
                        self.fail(pointer, "schema's uuid fixed is not 16 bytes")
                    }
                    _ => Some(Value::Uuid(u)),
                },
                Err(_) => self.fail(pointer, format!("expected a UUID string, got {s:?}")),
            },
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
            (_, other) => self.mismatch(pointer, schema, &other),
        }
    }

    /// A JSON number that must fit an `int`-based logical type (days, milliseconds of the day).
    fn int_like(&mut self, json: &Json, pointer: &str) -> Option<i32> {
        match json.as_i64().map(i32::try_from) {
            Some(Ok(i)) => Some(i),
            _ => {
                self.fail(pointer, format!("expected a 32-bit integer, got {json}"));
                None
            }
        }
    }

    /// A JSON number that must fit a `long`-based logical type (microseconds of the day, epoch timestamps).
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
        // A local timestamp has no zone, so it is read without an offset; a global one must carry one (RFC 3339).
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
}

/// Wraps `n` in the `Value` variant of `schema`, one of the timestamp types.
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
pub(super) fn parse_decimal(text: &str, scale: usize) -> Option<i128> {
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
    // Trailing zeros carry no value, so `1.230` still fits scale 2.
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

/// The big-endian two's-complement bytes of `v` without redundant sign bytes, as Avro's decimal stores it.
pub(super) fn minimal_twos_complement(v: i128) -> Vec<u8> {
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
