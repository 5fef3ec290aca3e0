//! Avro's logical types: uuid, date, time-*, timestamp-* and local-timestamp-* (text or epoch numbers), and decimal
//! (text or a JSON number, stored as minimal two's-complement bytes). Dates and timestamps must also be in the range
//! ClickHouse can store (see [`MIN_TIMESTAMP_SECS`]).

use std::borrow::Borrow;

use apache_avro::Schema;
use apache_avro::schema::{DecimalSchema, InnerDecimalSchema, UuidSchema};
use apache_avro::types::Value;
use chrono::{
    DateTime, NaiveDate, NaiveDateTime, NaiveTime, SecondsFormat, TimeDelta, Timelike, Utc,
};
use serde_json::Value as Json;

use super::{Converter, expected};

// The consumer supports two ClickHouse generations. 18.16 stores every timestamp-* as `DateTime` (UInt32 seconds since
// the epoch) and `date` as `Date` (UInt16 days since the epoch); a current ClickHouse stores timestamps as
// `DateTime64` (1900-01-01 to 2299-12-31) and dates as the same `Date`. A value outside either would be answered 202
// and then dead-lettered as `unrepresentable`, so the producer accepts only the intersection: the old types' range.

/// Earliest timestamp ClickHouse can store, in seconds since the epoch (1970-01-01T00:00:00Z).
pub const MIN_TIMESTAMP_SECS: i64 = 0;
/// Latest whole second ClickHouse can store (2106-02-07T06:28:15Z); fractions of it are accepted, since `DateTime`
/// keeps whole seconds (the consumer rounds down) and `DateTime64` keeps them.
pub const MAX_TIMESTAMP_SECS: i64 = u32::MAX as i64;
/// Earliest date ClickHouse can store, in days since 1970-01-01.
pub const MIN_DATE_DAYS: i64 = 0;
/// Latest date ClickHouse can store, in days since 1970-01-01 (2149-06-06).
pub const MAX_DATE_DAYS: i64 = u16::MAX as i64;

/// How many units of `schema`, a timestamp or local-timestamp type, make a second; `None` for other types.
pub fn per_second(schema: &Schema) -> Option<i64> {
    match schema {
        Schema::TimestampMillis | Schema::LocalTimestampMillis => Some(1_000),
        Schema::TimestampMicros | Schema::LocalTimestampMicros => Some(1_000_000),
        Schema::TimestampNanos | Schema::LocalTimestampNanos => Some(1_000_000_000),
        _ => None,
    }
}

/// The first and last epoch value, in units of which `per_second` make a second, that ClickHouse can store.
pub fn timestamp_bounds(per_second: i64) -> (i64, i64) {
    (
        MIN_TIMESTAMP_SECS.saturating_mul(per_second),
        (MAX_TIMESTAMP_SECS + 1)
            .saturating_mul(per_second)
            .saturating_sub(1),
    )
}

/// `n` units since the epoch (`per_second` to a second) as RFC 3339 UTC, e.g. `1969-12-31T23:59:59.999Z`; `None`
/// beyond what chrono represents.
pub fn epoch_rfc3339(n: i64, per_second: i64) -> Option<String> {
    if per_second <= 0 || per_second > 1_000_000_000 {
        return None;
    }
    let nanos = n.rem_euclid(per_second) * (1_000_000_000 / per_second);
    let t = DateTime::<Utc>::from_timestamp(n.div_euclid(per_second), u32::try_from(nanos).ok()?)?;
    Some(t.to_rfc3339_opts(SecondsFormat::AutoSi, true))
}

/// Day `days` since 1970-01-01 as `YYYY-MM-DD`; `None` beyond what chrono represents.
fn day_text(days: i64) -> Option<String> {
    let d = NaiveDate::default().checked_add_signed(TimeDelta::try_days(days)?)?;
    Some(d.format("%Y-%m-%d").to_string())
}

/// The storable timestamps as text: `1970-01-01T00:00:00Z to 2106-02-07T06:28:15Z`.
pub fn timestamp_range_text() -> String {
    let bound = |s| epoch_rfc3339(s, 1).unwrap_or_else(|| s.to_string());
    format!(
        "{} to {}",
        bound(MIN_TIMESTAMP_SECS),
        bound(MAX_TIMESTAMP_SECS)
    )
}

/// The storable dates as text: `1970-01-01 to 2149-06-06`.
pub fn date_range_text() -> String {
    let bound = |d| day_text(d).unwrap_or_else(|| d.to_string());
    format!("{} to {}", bound(MIN_DATE_DAYS), bound(MAX_DATE_DAYS))
}

/// The message for a timestamp outside the storable range; `shown` is the value as the client sent it.
fn timestamp_range_message(shown: &str) -> String {
    format!(
        "timestamp {shown} is outside what ClickHouse can store ({})",
        timestamp_range_text()
    )
}

/// The message for a date outside the storable range; `shown` is the value as the client sent it.
fn date_range_message(shown: &str) -> String {
    format!(
        "date {shown} is outside what ClickHouse can store ({})",
        date_range_text()
    )
}

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
                Ok(d) => self.date(pointer, (d - NaiveDate::default()).num_days(), &s),
                Err(e) => self.fail(pointer, format!("bad date {s:?}: {e}; expected YYYY-MM-DD")),
            },
            (Schema::Date, n @ Json::Number(_)) => {
                let days = self.int_like(&n, pointer)?;
                let shown = match day_text(days.into()) {
                    Some(text) => format!("{days} ({text})"),
                    None => days.to_string(),
                };
                self.date(pointer, days.into(), &shown)
            }
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
                self.timestamp_int(schema, i, pointer)
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

    /// Day `days` since the epoch as a `date`, when ClickHouse can store it; `shown` is the value for messages.
    fn date(&mut self, pointer: &str, days: i64, shown: &str) -> Option<Value> {
        match i32::try_from(days) {
            Ok(d) if (MIN_DATE_DAYS..=MAX_DATE_DAYS).contains(&days) => Some(Value::Date(d)),
            _ => self.fail(pointer, date_range_message(shown)),
        }
    }

    /// An epoch number in `schema`'s unit, when ClickHouse can store it.
    fn timestamp_int(&mut self, schema: &Schema, n: i64, pointer: &str) -> Option<Value> {
        let per = per_second(schema).unwrap_or(1_000);
        let (min, max) = timestamp_bounds(per);
        if (min..=max).contains(&n) {
            return Some(timestamp_value(schema, n));
        }
        let shown = match epoch_rfc3339(n, per) {
            Some(text) => format!("{n} ({text})"),
            None => n.to_string(),
        };
        self.fail(pointer, timestamp_range_message(&shown))
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
        // Checked before converting to the schema's unit, which for nanoseconds overflows well inside chrono's range.
        if !(MIN_TIMESTAMP_SECS..=MAX_TIMESTAMP_SECS).contains(&utc.timestamp()) {
            return self.fail(pointer, timestamp_range_message(s));
        }
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
