//! Decoded Avro values → RowBinary bytes in the column order of a [`RowPlan`].

use apache_avro::types::Value;

use super::{Enc, EncodeError, FieldKind, RowPlan};

impl RowPlan {
    /// Appends one row, in RowBinary, for `value` (a record decoded with, or resolved to, this plan's schema).
    ///
    /// On error `out` is left as it was, so a bad row never corrupts the rows around it.
    pub fn encode(&self, value: &Value, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        let start = out.len();
        let result = self.encode_inner(value, out);
        if result.is_err() {
            out.truncate(start);
        }
        result
    }

    fn encode_inner(&self, value: &Value, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        let Value::Record(items) = value else {
            return Err(mismatch("<row>", "record", value));
        };
        for (i, f) in self.fields.iter().enumerate() {
            // Resolution yields the reader's field order; fall back to a lookup by name otherwise.
            let v = match items.get(i) {
                Some((n, v)) if *n == f.name => v,
                _ => items
                    .iter()
                    .find(|(n, _)| *n == f.name)
                    .map(|(_, v)| v)
                    .ok_or_else(|| EncodeError::MissingField(f.name.clone()))?,
            };
            match &f.kind {
                FieldKind::Whole(enc) => write(enc, v, &f.name, out)?,
                FieldKind::Map(values) => write_top_map(values, v, &f.name, out)?,
            }
        }
        Ok(())
    }
}

/// The source columns of a row: `_topic String`, `_partition Int32`, `_offset Int64`.
pub(super) fn write_source(topic: &str, partition: i32, offset: i64, out: &mut Vec<u8>) {
    write_bytes(topic.as_bytes(), out);
    out.extend_from_slice(&partition.to_le_bytes());
    out.extend_from_slice(&offset.to_le_bytes());
}

fn mismatch(field: &str, expected: &'static str, got: &Value) -> EncodeError {
    let mut got = format!("{got:?}");
    got.truncate(60);
    EncodeError::Mismatch {
        field: field.to_owned(),
        expected,
        got,
    }
}

fn out_of_range(field: &str, value: impl ToString, ty: &'static str) -> EncodeError {
    EncodeError::OutOfRange {
        field: field.to_owned(),
        value: value.to_string(),
        ty,
    }
}

/// Writes `n` as the unsigned LEB128 varint RowBinary uses for lengths.
pub fn write_varint(mut n: u64, out: &mut Vec<u8>) {
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

/// Writes `b` as a RowBinary `String`: its length, then its bytes.
pub fn write_bytes(b: &[u8], out: &mut Vec<u8>) {
    write_varint(b.len() as u64, out);
    out.extend_from_slice(b);
}

/// Strips the union wrapper apache-avro keeps around resolved union values.
fn unwrap_union(v: &Value) -> &Value {
    match v {
        Value::Union(_, inner) => unwrap_union(inner),
        other => other,
    }
}

fn write_top_map(
    values: &Enc,
    v: &Value,
    field: &str,
    out: &mut Vec<u8>,
) -> Result<(), EncodeError> {
    match unwrap_union(v) {
        Value::Null => {
            write_varint(0, out);
            write_varint(0, out);
            Ok(())
        }
        Value::Map(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            write_varint(keys.len() as u64, out);
            for k in &keys {
                write_bytes(k.as_bytes(), out);
            }
            write_varint(keys.len() as u64, out);
            for k in &keys {
                if let Some(val) = m.get(*k) {
                    write(values, val, field, out)?;
                }
            }
            Ok(())
        }
        other => Err(mismatch(field, "map", other)),
    }
}

/// `DateTime64`'s range, in seconds since the epoch: 1900-01-01T00:00:00Z to 2299-12-31T23:59:59Z.
const DATETIME64_SECONDS: std::ops::RangeInclusive<i64> = -2_208_988_800..=10_413_791_999;

/// `t`, in ticks of 10^-`from` seconds, as ticks of 10^-`to` seconds (truncated towards the past).
pub(super) fn ticks(field: &str, t: i64, from: u32, to: u32) -> Result<i64, EncodeError> {
    let seconds = t.div_euclid(10i64.pow(from));
    if !DATETIME64_SECONDS.contains(&seconds) {
        return Err(out_of_range(
            field,
            format!("{seconds}s since epoch"),
            "DateTime64 (1900-01-01 to 2299-12-31)",
        ));
    }
    Ok(if to >= from {
        t.saturating_mul(10i64.pow(to - from))
    } else {
        t.div_euclid(10i64.pow(from - to))
    })
}

/// Bytes of `Decimal(precision, _)`: Decimal32, 64, 128 or 256.
fn decimal_width(precision: usize) -> usize {
    match precision {
        0..=9 => 4,
        10..=18 => 8,
        19..=38 => 16,
        _ => 32,
    }
}

/// The unscaled value of a decimal as `Decimal(precision, _)` holds it: 4, 8, 16 or 32 bytes, little-endian.
pub(super) fn write_decimal_bin(
    field: &str,
    bytes: &[u8],
    precision: usize,
    out: &mut Vec<u8>,
) -> Result<(), EncodeError> {
    let too_wide = || out_of_range(field, format!("{} bytes", bytes.len()), "Decimal");
    let width = decimal_width(precision);
    if bytes.len() > width {
        return Err(too_wide());
    }
    let negative = bytes.first().is_some_and(|b| b & 0x80 != 0);
    let fill = if negative { 0xff } else { 0 };
    if width <= 16 {
        let mut buf = [fill; 16];
        buf[16 - bytes.len()..].copy_from_slice(bytes);
        let n = i128::from_be_bytes(buf);
        // More digits than the precision would be stored, and read back, as a different number.
        if n.unsigned_abs() >= 10u128.pow(precision.min(38) as u32) {
            return Err(out_of_range(field, n, "Decimal precision"));
        }
        out.extend_from_slice(&n.to_le_bytes()[..width]);
    } else {
        let mut le: Vec<u8> = bytes.iter().rev().copied().collect();
        le.resize(32, fill);
        out.extend_from_slice(&le);
    }
    Ok(())
}

pub(super) fn seconds(field: &str, v: i64, per_second: i64) -> Result<u32, EncodeError> {
    let s = v.div_euclid(per_second);
    u32::try_from(s).map_err(|_| out_of_range(field, format!("{s}s since epoch"), "DateTime"))
}

pub(super) fn write(
    enc: &Enc,
    v: &Value,
    field: &str,
    out: &mut Vec<u8>,
) -> Result<(), EncodeError> {
    match enc {
        Enc::Nullable(inner) => {
            match unwrap_union(v) {
                Value::Null => out.push(1),
                val => {
                    out.push(0);
                    write(inner, val, field, out)?;
                }
            }
            return Ok(());
        }
        Enc::NullAsDefault(inner) => {
            return match unwrap_union(v) {
                Value::Null => {
                    write_default(inner, out);
                    Ok(())
                }
                val => write(inner, val, field, out),
            };
        }
        Enc::Json => {
            let json = serde_json::Value::try_from(unwrap_union(v).clone()).map_err(|e| {
                EncodeError::Mismatch {
                    field: field.to_owned(),
                    expected: "JSON-representable union",
                    got: e.to_string(),
                }
            })?;
            write_bytes(json.to_string().as_bytes(), out);
            return Ok(());
        }
        _ => {}
    }
    let v = unwrap_union(v);
    match (enc, v) {
        (Enc::Str | Enc::LowCardStr, Value::String(s) | Value::Enum(_, s)) => {
            write_bytes(s.as_bytes(), out)
        }
        (Enc::Str, Value::Bytes(b)) => write_bytes(b, out),
        (Enc::Str, Value::Uuid(u)) => write_bytes(u.to_string().as_bytes(), out),
        (Enc::Fixed(n), Value::Fixed(len, b)) if len == n && b.len() == *n => {
            out.extend_from_slice(b)
        }
        (Enc::Fixed(n), Value::Bytes(b)) if b.len() == *n => out.extend_from_slice(b),
        (Enc::Fixed(12), Value::Duration(d)) => {
            out.extend_from_slice(&u32::from(d.months()).to_le_bytes());
            out.extend_from_slice(&u32::from(d.days()).to_le_bytes());
            out.extend_from_slice(&u32::from(d.millis()).to_le_bytes());
        }
        (Enc::I32, Value::Int(i) | Value::TimeMillis(i) | Value::Date(i)) => {
            out.extend_from_slice(&i.to_le_bytes())
        }
        (Enc::I64, Value::Int(i)) => out.extend_from_slice(&i64::from(*i).to_le_bytes()),
        (
            Enc::I64,
            Value::Long(i)
            | Value::TimeMicros(i)
            | Value::TimestampMillis(i)
            | Value::TimestampMicros(i)
            | Value::TimestampNanos(i)
            | Value::LocalTimestampMillis(i)
            | Value::LocalTimestampMicros(i)
            | Value::LocalTimestampNanos(i),
        ) => out.extend_from_slice(&i.to_le_bytes()),
        (Enc::F32, Value::Float(f)) => out.extend_from_slice(&f.to_le_bytes()),
        (Enc::F64, Value::Double(f)) => out.extend_from_slice(&f.to_le_bytes()),
        (Enc::F64, Value::Float(f)) => out.extend_from_slice(&f64::from(*f).to_le_bytes()),
        (Enc::Bool | Enc::Boolean, Value::Boolean(b)) => out.push(u8::from(*b)),
        (Enc::Uuid, Value::Uuid(u)) => write_uuid(u, out),
        (Enc::Uuid, Value::String(s)) => {
            let u = uuid::Uuid::parse_str(s).map_err(|_| out_of_range(field, s, "UUID"))?;
            write_uuid(&u, out);
        }
        (Enc::Uuid, Value::Fixed(16, b) | Value::Bytes(b)) => {
            let u = uuid::Uuid::from_slice(b)
                .map_err(|_| out_of_range(field, format!("{b:?}"), "UUID"))?;
            write_uuid(&u, out);
        }
        (Enc::Date, Value::Date(d) | Value::Int(d)) => {
            let days =
                u16::try_from(*d).map_err(|_| out_of_range(field, format!("day {d}"), "Date"))?;
            out.extend_from_slice(&days.to_le_bytes());
        }
        (
            Enc::DateTime,
            Value::TimestampMillis(t) | Value::LocalTimestampMillis(t) | Value::Long(t),
        ) => {
            out.extend_from_slice(&seconds(field, *t, 1_000)?.to_le_bytes());
        }
        (Enc::DateTime, Value::TimestampMicros(t) | Value::LocalTimestampMicros(t)) => {
            out.extend_from_slice(&seconds(field, *t, 1_000_000)?.to_le_bytes());
        }
        (Enc::DateTime, Value::TimestampNanos(t) | Value::LocalTimestampNanos(t)) => {
            out.extend_from_slice(&seconds(field, *t, 1_000_000_000)?.to_le_bytes());
        }
        (Enc::Decimal { scale }, Value::Decimal(d)) => {
            let bytes = Vec::<u8>::try_from(d).map_err(|e| out_of_range(field, e, "Decimal"))?;
            let text = decimal_text(&bytes, *scale).ok_or_else(|| {
                out_of_range(
                    field,
                    format!("{} bytes", bytes.len()),
                    "Decimal (max 16 bytes)",
                )
            })?;
            write_bytes(text.as_bytes(), out);
        }
        (Enc::Decimal { .. }, Value::BigDecimal(d)) => write_bytes(d.to_string().as_bytes(), out),
        (Enc::DecimalBin { precision, .. }, Value::Decimal(d)) => {
            let bytes = Vec::<u8>::try_from(d).map_err(|e| out_of_range(field, e, "Decimal"))?;
            write_decimal_bin(field, &bytes, *precision, out)?;
        }
        (Enc::DateTime64(p), Value::TimestampMillis(t) | Value::LocalTimestampMillis(t)) => {
            out.extend_from_slice(&ticks(field, *t, 3, *p)?.to_le_bytes());
        }
        (Enc::DateTime64(p), Value::TimestampMicros(t) | Value::LocalTimestampMicros(t)) => {
            out.extend_from_slice(&ticks(field, *t, 6, *p)?.to_le_bytes());
        }
        (Enc::DateTime64(p), Value::TimestampNanos(t) | Value::LocalTimestampNanos(t)) => {
            out.extend_from_slice(&ticks(field, *t, 9, *p)?.to_le_bytes());
        }
        (Enc::Array(inner), Value::Array(items)) => {
            write_varint(items.len() as u64, out);
            for item in items {
                write(inner, item, field, out)?;
            }
        }
        (Enc::Pairs(values) | Enc::Map(values), Value::Map(m)) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            write_varint(keys.len() as u64, out);
            for k in keys {
                write_bytes(k.as_bytes(), out);
                if let Some(val) = m.get(k) {
                    write(values, val, field, out)?;
                }
            }
        }
        (Enc::Tuple(items), Value::Record(fields)) => {
            for (i, (name, e)) in items.iter().enumerate() {
                let val = match fields.get(i) {
                    Some((n, v)) if n == name => v,
                    _ => fields
                        .iter()
                        .find(|(n, _)| n == name)
                        .map(|(_, v)| v)
                        .ok_or_else(|| EncodeError::MissingField(format!("{field}.{name}")))?,
                };
                write(e, val, field, out)?;
            }
        }
        (enc, other) => return Err(mismatch(field, enc_name(enc), other)),
    }
    Ok(())
}

fn enc_name(enc: &Enc) -> &'static str {
    match enc {
        Enc::Str => "string",
        Enc::Fixed(_) => "fixed",
        Enc::I32 => "int",
        Enc::I64 => "long",
        Enc::F32 => "float",
        Enc::F64 => "double",
        Enc::Bool => "boolean",
        Enc::Uuid => "uuid",
        Enc::Date => "date",
        Enc::DateTime | Enc::DateTime64(_) => "timestamp",
        Enc::Boolean => "boolean",
        Enc::LowCardStr => "string",
        Enc::Decimal { .. } | Enc::DecimalBin { .. } => "decimal",
        Enc::Nullable(_) | Enc::NullAsDefault(_) => "nullable value",
        Enc::Array(_) => "array",
        Enc::Pairs(_) | Enc::Map(_) => "map",
        Enc::Tuple(_) => "record",
        Enc::Json => "union",
    }
}

/// ClickHouse's UUID in RowBinary: the high then the low 64 bits, each little-endian.
pub(super) fn write_uuid(u: &uuid::Uuid, out: &mut Vec<u8>) {
    let (hi, lo) = u.as_u64_pair();
    out.extend_from_slice(&hi.to_le_bytes());
    out.extend_from_slice(&lo.to_le_bytes());
}

pub(super) fn write_default(enc: &Enc, out: &mut Vec<u8>) {
    match enc {
        Enc::Str
        | Enc::LowCardStr
        | Enc::Decimal { .. }
        | Enc::Json
        | Enc::Array(_)
        | Enc::Pairs(_)
        | Enc::Map(_) => write_varint(0, out),
        Enc::DateTime64(_) => out.extend_from_slice(&[0; 8]),
        Enc::DecimalBin { precision, .. } => {
            out.extend(std::iter::repeat_n(0u8, decimal_width(*precision)))
        }
        Enc::Fixed(n) => out.extend(std::iter::repeat_n(0u8, *n)),
        Enc::I32 | Enc::F32 | Enc::DateTime => out.extend_from_slice(&[0; 4]),
        Enc::I64 | Enc::F64 => out.extend_from_slice(&[0; 8]),
        Enc::Bool | Enc::Boolean => out.push(0),
        Enc::Date => out.extend_from_slice(&[0; 2]),
        Enc::Uuid => out.extend_from_slice(&[0; 16]),
        Enc::Nullable(_) => out.push(1),
        Enc::NullAsDefault(inner) => write_default(inner, out),
        Enc::Tuple(items) => items.iter().for_each(|(_, e)| write_default(e, out)),
    }
}

/// The decimal text of a big-endian two's-complement unscaled value, or `None` past 128 bits.
pub(super) fn decimal_text(bytes: &[u8], scale: usize) -> Option<String> {
    if bytes.len() > 16 {
        return None;
    }
    let negative = bytes.first().is_some_and(|b| b & 0x80 != 0);
    let mut buf = if negative { [0xffu8; 16] } else { [0u8; 16] };
    buf[16 - bytes.len()..].copy_from_slice(bytes);
    let n = i128::from_be_bytes(buf);
    let digits = n.unsigned_abs().to_string();
    let sign = if n < 0 { "-" } else { "" };
    if scale == 0 {
        return Some(format!("{sign}{digits}"));
    }
    let padded = format!("{digits:0>width$}", width = scale + 1);
    let (int, frac) = padded.split_at(padded.len() - scale);
    Some(format!("{sign}{int}.{frac}"))
}
