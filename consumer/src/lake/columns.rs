//! Avro reader schema → Arrow schema, and decoded Avro values → one Arrow record batch.
//!
//! Types keep what Parquet can hold: timestamps keep their unit (and UTC, unless Avro says local), UUIDs are
//! 16-byte values with Parquet's UUID type, decimals keep precision and scale, maps stay maps, `["null", T]`
//! unions become nullable `T`. What Parquet has no type for (a union of several non-null branches) is its JSON
//! text, as in ClickHouse.

use std::collections::HashMap;
use std::sync::Arc;

use apache_avro::Schema as Avro;
use apache_avro::schema::{Name, RecordSchema, UuidSchema};
use apache_avro::types::Value;
use arrow_array::builder::{
    BinaryBuilder, BooleanBuilder, FixedSizeBinaryBuilder, Float32Builder, Float64Builder,
    Int32Builder, Int64Builder, StringBuilder,
};
use arrow_array::types::{
    Date32Type, Decimal128Type, Decimal256Type, Time32MillisecondType, Time64MicrosecondType,
    TimestampMicrosecondType, TimestampMillisecondType, TimestampNanosecondType,
};
use arrow_array::{ArrayRef, ListArray, MapArray, PrimitiveArray, RecordBatch, StructArray};
use arrow_buffer::{NullBuffer, OffsetBuffer, i256};
use arrow_schema::extension::Uuid as UuidExtension;
use arrow_schema::{DataType, Field, Fields, Schema, SchemaRef, TimeUnit};

/// Nesting deeper than this is refused rather than followed (a recursive schema would never end).
const MAX_DEPTH: usize = 32;

/// Why a schema has no Arrow shape, or a value does not fit its column.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ColumnError {
    /// The schema cannot be mapped.
    #[error("schema: {0}")]
    Schema(String),
    /// A value does not have its column's type.
    #[error("field {field}: {detail}")]
    Value {
        /// The top-level field.
        field: String,
        /// What was wrong.
        detail: String,
    },
}

/// What one column holds.
#[derive(Debug, Clone)]
enum Kind {
    Bool,
    I32,
    I64,
    F32,
    F64,
    Binary,
    Utf8,
    Fixed(i32),
    Uuid,
    Date,
    TimeMs,
    TimeUs,
    Timestamp(TimeUnit, bool),
    Decimal128(u8, i8),
    Decimal256(u8, i8),
    Json,
    List(Box<Col>),
    Map(Box<Col>),
    Struct(Vec<(String, Col)>),
}

#[derive(Debug, Clone)]
struct Col {
    kind: Kind,
    nullable: bool,
}

/// A stream's reader schema as Arrow columns.
#[derive(Debug, Clone)]
pub struct Columns {
    schema: SchemaRef,
    fields: Vec<(String, Col)>,
}

impl Columns {
    /// The columns of a record schema.
    pub fn for_schema(schema: &Avro) -> Result<Self, ColumnError> {
        let mut names = HashMap::new();
        collect_names(schema, &mut names, 0);
        let Avro::Record(record) = schema else {
            return Err(ColumnError::Schema("the schema is not a record".into()));
        };
        let fields = record_cols(record, &names, 0)?;
        let arrow: Vec<Field> = fields.iter().map(|(n, c)| field(n, c)).collect();
        Ok(Self {
            schema: Arc::new(Schema::new(arrow)),
            fields,
        })
    }

    /// The Arrow schema of the files.
    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    /// One record batch of `rows` (each a record value of the reader schema).
    pub fn batch(&self, rows: &[&Value]) -> Result<RecordBatch, ColumnError> {
        let mut columns = Vec::with_capacity(self.fields.len());
        for (i, (name, col)) in self.fields.iter().enumerate() {
            let values: Vec<Option<&Value>> = rows.iter().map(|r| record_field(r, i)).collect();
            let array = build(col, &values).map_err(|detail| ColumnError::Value {
                field: name.clone(),
                detail,
            })?;
            columns.push(array);
        }
        RecordBatch::try_new(self.schema.clone(), columns)
            .map_err(|e| ColumnError::Schema(e.to_string()))
    }
}

fn record_field(v: &Value, i: usize) -> Option<&Value> {
    match v {
        Value::Record(fields) => fields.get(i).map(|(_, v)| v),
        _ => None,
    }
}

fn collect_names(schema: &Avro, out: &mut HashMap<Name, Avro>, depth: usize) {
    if depth > MAX_DEPTH {
        return;
    }
    match schema {
        Avro::Record(r) => {
            out.insert(r.name.clone(), schema.clone());
            for f in &r.fields {
                collect_names(&f.schema, out, depth + 1);
            }
        }
        Avro::Enum(e) => {
            out.insert(e.name.clone(), schema.clone());
        }
        Avro::Fixed(f) | Avro::Duration(f) | Avro::Uuid(UuidSchema::Fixed(f)) => {
            out.insert(f.name.clone(), schema.clone());
        }
        Avro::Array(a) => collect_names(&a.items, out, depth + 1),
        Avro::Map(m) => collect_names(&m.types, out, depth + 1),
        Avro::Union(u) => u
            .variants()
            .iter()
            .for_each(|v| collect_names(v, out, depth + 1)),
        _ => {}
    }
}

fn record_cols(
    r: &RecordSchema,
    names: &HashMap<Name, Avro>,
    depth: usize,
) -> Result<Vec<(String, Col)>, ColumnError> {
    r.fields
        .iter()
        .map(|f| Ok((f.name.clone(), col(&f.schema, names, depth + 1)?)))
        .collect()
}

fn col(schema: &Avro, names: &HashMap<Name, Avro>, depth: usize) -> Result<Col, ColumnError> {
    if depth > MAX_DEPTH {
        return Err(ColumnError::Schema("nested too deeply".into()));
    }
    let required = |kind| {
        Ok(Col {
            kind,
            nullable: false,
        })
    };
    match schema {
        Avro::Ref { name } => {
            let target = names
                .get(name)
                .or_else(|| {
                    names
                        .iter()
                        .find(|(n, _)| n.name() == name.name())
                        .map(|(_, s)| s)
                })
                .ok_or_else(|| ColumnError::Schema(format!("unknown type {name}")))?;
            col(target, names, depth + 1)
        }
        Avro::Null => Ok(Col {
            kind: Kind::Bool,
            nullable: true,
        }),
        Avro::Boolean => required(Kind::Bool),
        Avro::Int => required(Kind::I32),
        Avro::Long => required(Kind::I64),
        Avro::Float => required(Kind::F32),
        Avro::Double => required(Kind::F64),
        Avro::Bytes => required(Kind::Binary),
        Avro::String | Avro::Enum(_) | Avro::BigDecimal => required(Kind::Utf8),
        Avro::Fixed(f) => required(Kind::Fixed(fixed_size(f.size)?)),
        Avro::Duration(_) => required(Kind::Fixed(12)),
        Avro::Uuid(_) => required(Kind::Uuid),
        Avro::Date => required(Kind::Date),
        Avro::TimeMillis => required(Kind::TimeMs),
        Avro::TimeMicros => required(Kind::TimeUs),
        Avro::TimestampMillis => required(Kind::Timestamp(TimeUnit::Millisecond, true)),
        Avro::TimestampMicros => required(Kind::Timestamp(TimeUnit::Microsecond, true)),
        Avro::TimestampNanos => required(Kind::Timestamp(TimeUnit::Nanosecond, true)),
        Avro::LocalTimestampMillis => required(Kind::Timestamp(TimeUnit::Millisecond, false)),
        Avro::LocalTimestampMicros => required(Kind::Timestamp(TimeUnit::Microsecond, false)),
        Avro::LocalTimestampNanos => required(Kind::Timestamp(TimeUnit::Nanosecond, false)),
        Avro::Decimal(d) => {
            let scale = i8::try_from(d.scale)
                .map_err(|_| ColumnError::Schema(format!("decimal scale {}", d.scale)))?;
            match u8::try_from(d.precision) {
                Ok(p) if p <= 38 => required(Kind::Decimal128(p, scale)),
                Ok(p) if p <= 76 => required(Kind::Decimal256(p, scale)),
                _ => Err(ColumnError::Schema(format!(
                    "decimal precision {} is above Parquet's 76 digits",
                    d.precision
                ))),
            }
        }
        Avro::Array(a) => required(Kind::List(Box::new(col(&a.items, names, depth + 1)?))),
        Avro::Map(m) => required(Kind::Map(Box::new(col(&m.types, names, depth + 1)?))),
        Avro::Record(r) => required(Kind::Struct(record_cols(r, names, depth)?)),
        Avro::Union(u) => {
            let non_null: Vec<&Avro> = u
                .variants()
                .iter()
                .filter(|s| !matches!(s, Avro::Null))
                .collect();
            match non_null.as_slice() {
                [inner] => Ok(Col {
                    nullable: u.is_nullable(),
                    ..col(inner, names, depth + 1)?
                }),
                _ => Ok(Col {
                    kind: Kind::Json,
                    nullable: u.is_nullable(),
                }),
            }
        }
    }
}

fn fixed_size(size: usize) -> Result<i32, ColumnError> {
    i32::try_from(size).map_err(|_| ColumnError::Schema(format!("fixed size {size}")))
}

fn data_type(c: &Col) -> DataType {
    match &c.kind {
        Kind::Bool => DataType::Boolean,
        Kind::I32 => DataType::Int32,
        Kind::I64 => DataType::Int64,
        Kind::F32 => DataType::Float32,
        Kind::F64 => DataType::Float64,
        Kind::Binary => DataType::Binary,
        Kind::Utf8 | Kind::Json => DataType::Utf8,
        Kind::Fixed(n) => DataType::FixedSizeBinary(*n),
        Kind::Uuid => DataType::FixedSizeBinary(16),
        Kind::Date => DataType::Date32,
        Kind::TimeMs => DataType::Time32(TimeUnit::Millisecond),
        Kind::TimeUs => DataType::Time64(TimeUnit::Microsecond),
        Kind::Timestamp(unit, utc) => DataType::Timestamp(*unit, utc.then(|| "UTC".into())),
        Kind::Decimal128(p, s) => DataType::Decimal128(*p, *s),
        Kind::Decimal256(p, s) => DataType::Decimal256(*p, *s),
        Kind::List(item) => DataType::List(Arc::new(field("element", item))),
        Kind::Map(values) => DataType::Map(Arc::new(entries_field(values)), false),
        Kind::Struct(fields) => DataType::Struct(struct_fields(fields)),
    }
}

fn field(name: &str, c: &Col) -> Field {
    let f = Field::new(name, data_type(c), c.nullable);
    if matches!(c.kind, Kind::Uuid) {
        f.with_extension_type(UuidExtension)
    } else {
        f
    }
}

fn struct_fields(fields: &[(String, Col)]) -> Fields {
    fields.iter().map(|(n, c)| field(n, c)).collect()
}

fn entries_field(values: &Col) -> Field {
    let key = Col {
        kind: Kind::Utf8,
        nullable: false,
    };
    Field::new(
        "key_value",
        DataType::Struct(struct_fields(&[
            ("key".into(), key),
            ("value".into(), (*values).clone()),
        ])),
        false,
    )
}

/// The value of a nullable column without its union wrapper; `None` for null.
fn unwrap(v: Option<&Value>) -> Option<&Value> {
    match v? {
        Value::Null => None,
        Value::Union(_, inner) => unwrap(Some(inner)),
        other => Some(other),
    }
}

fn mismatch(expected: &str, got: &Value) -> String {
    let shown = format!("{got:?}");
    let shown: String = shown.chars().take(80).collect();
    format!("expected {expected}, got {shown}")
}

fn nulls(values: &[Option<&Value>]) -> Option<NullBuffer> {
    let valid: Vec<bool> = values.iter().map(|v| unwrap(*v).is_some()).collect();
    valid.iter().any(|v| !v).then(|| NullBuffer::from(valid))
}

/// Builds one column from its values; a null in a required column is refused.
fn build(c: &Col, values: &[Option<&Value>]) -> Result<ArrayRef, String> {
    if !c.nullable && values.iter().any(|v| unwrap(*v).is_none()) {
        return Err("null in a required column".into());
    }
    let vals = || values.iter().map(|v| unwrap(*v));
    macro_rules! prim {
        ($ty:ty, $pat:pat => $out:expr, $what:literal) => {{
            let out: Result<PrimitiveArray<$ty>, String> = vals()
                .map(|v| match v {
                    None => Ok(None),
                    Some($pat) => Ok(Some($out)),
                    Some(other) => Err(mismatch($what, other)),
                })
                .collect();
            out.map(|a| Arc::new(a) as ArrayRef)
        }};
    }
    match &c.kind {
        Kind::Bool => {
            let mut b = BooleanBuilder::with_capacity(values.len());
            for v in vals() {
                match v {
                    None => b.append_null(),
                    Some(Value::Boolean(x)) => b.append_value(*x),
                    Some(other) => return Err(mismatch("boolean", other)),
                }
            }
            Ok(Arc::new(b.finish()))
        }
        Kind::I32 => scalar(
            vals(),
            Int32Builder::with_capacity(values.len()),
            |v| match v {
                Value::Int(x) => Some(*x),
                _ => None,
            },
        ),
        Kind::I64 => scalar(
            vals(),
            Int64Builder::with_capacity(values.len()),
            |v| match v {
                Value::Long(x) => Some(*x),
                _ => None,
            },
        ),
        Kind::F32 => scalar(vals(), Float32Builder::new(), |v| match v {
            Value::Float(x) => Some(*x),
            _ => None,
        }),
        Kind::F64 => scalar(vals(), Float64Builder::new(), |v| match v {
            Value::Double(x) => Some(*x),
            _ => None,
        }),
        Kind::Binary => {
            let mut b = BinaryBuilder::with_capacity(values.len(), values.len() * 16);
            for v in vals() {
                match v {
                    None => b.append_null(),
                    Some(Value::Bytes(x)) => b.append_value(x),
                    Some(other) => return Err(mismatch("bytes", other)),
                }
            }
            Ok(Arc::new(b.finish()))
        }
        Kind::Utf8 => {
            let mut b = StringBuilder::with_capacity(values.len(), values.len() * 16);
            for v in vals() {
                match v {
                    None => b.append_null(),
                    Some(Value::String(s) | Value::Enum(_, s)) => b.append_value(s),
                    Some(Value::BigDecimal(d)) => b.append_value(d.to_string()),
                    Some(other) => return Err(mismatch("string", other)),
                }
            }
            Ok(Arc::new(b.finish()))
        }
        Kind::Json => {
            let mut b = StringBuilder::with_capacity(values.len(), values.len() * 16);
            for v in vals() {
                match v {
                    None => b.append_null(),
                    Some(v) => {
                        let json =
                            serde_json::Value::try_from(v.clone()).map_err(|e| e.to_string())?;
                        b.append_value(json.to_string())
                    }
                }
            }
            Ok(Arc::new(b.finish()))
        }
        Kind::Fixed(n) => fixed(vals(), *n),
        Kind::Uuid => fixed(vals(), 16),
        Kind::Date => prim!(Date32Type, Value::Date(d) => *d, "date"),
        Kind::TimeMs => prim!(Time32MillisecondType, Value::TimeMillis(t) => *t, "time-millis"),
        Kind::TimeUs => prim!(Time64MicrosecondType, Value::TimeMicros(t) => *t, "time-micros"),
        Kind::Timestamp(unit, utc) => {
            let tz = utc.then_some("UTC");
            Ok(match unit {
                TimeUnit::Millisecond => Arc::new(
                    timestamps::<TimestampMillisecondType>(
                        vals(),
                        "timestamp-millis",
                        |v| match v {
                            Value::TimestampMillis(t) | Value::LocalTimestampMillis(t) => Some(*t),
                            _ => None,
                        },
                    )?
                    .with_timezone_opt(tz),
                ),
                TimeUnit::Microsecond => Arc::new(
                    timestamps::<TimestampMicrosecondType>(
                        vals(),
                        "timestamp-micros",
                        |v| match v {
                            Value::TimestampMicros(t) | Value::LocalTimestampMicros(t) => Some(*t),
                            _ => None,
                        },
                    )?
                    .with_timezone_opt(tz),
                ),
                TimeUnit::Nanosecond | TimeUnit::Second => Arc::new(
                    timestamps::<TimestampNanosecondType>(
                        vals(),
                        "timestamp-nanos",
                        |v| match v {
                            Value::TimestampNanos(t) | Value::LocalTimestampNanos(t) => Some(*t),
                            _ => None,
                        },
                    )?
                    .with_timezone_opt(tz),
                ),
            })
        }
        Kind::Decimal128(p, s) => {
            let a: PrimitiveArray<Decimal128Type> = vals()
                .map(|v| {
                    v.map(|v| decimal_bytes(v, 16).map(|b| i128::from_be_bytes(to_array(&b))))
                        .transpose()
                })
                .collect::<Result<_, _>>()?;
            Ok(Arc::new(
                a.with_precision_and_scale(*p, *s)
                    .map_err(|e| e.to_string())?,
            ))
        }
        Kind::Decimal256(p, s) => {
            let a: PrimitiveArray<Decimal256Type> = vals()
                .map(|v| {
                    v.map(|v| decimal_bytes(v, 32).map(|b| i256::from_be_bytes(to_array(&b))))
                        .transpose()
                })
                .collect::<Result<_, _>>()?;
            Ok(Arc::new(
                a.with_precision_and_scale(*p, *s)
                    .map_err(|e| e.to_string())?,
            ))
        }
        Kind::List(item) => {
            let mut offsets = vec![0i32];
            let mut items: Vec<Option<&Value>> = Vec::new();
            for v in vals() {
                match v {
                    None => {}
                    Some(Value::Array(xs)) => items.extend(xs.iter().map(Some)),
                    Some(other) => return Err(mismatch("array", other)),
                }
                offsets.push(offset(items.len())?);
            }
            let child = build(item, &items)?;
            let list = ListArray::try_new(
                Arc::new(field("element", item)),
                OffsetBuffer::new(offsets.into()),
                child,
                nulls(values),
            )
            .map_err(|e| e.to_string())?;
            Ok(Arc::new(list))
        }
        Kind::Map(value_col) => {
            let mut offsets = vec![0i32];
            let mut keys = StringBuilder::new();
            let mut entries: Vec<Option<&Value>> = Vec::new();
            for v in vals() {
                match v {
                    None => {}
                    Some(Value::Map(m)) => {
                        // Sorted, so the same map always makes the same file.
                        let mut pairs: Vec<(&String, &Value)> = m.iter().collect();
                        pairs.sort_by(|a, b| a.0.cmp(b.0));
                        for (k, x) in pairs {
                            keys.append_value(k);
                            entries.push(Some(x));
                        }
                    }
                    Some(other) => return Err(mismatch("map", other)),
                }
                offsets.push(offset(entries.len())?);
            }
            let entries_field = entries_field(value_col);
            let DataType::Struct(fields) = entries_field.data_type().clone() else {
                return Err("map entries are not a struct".into());
            };
            let struct_array = StructArray::try_new(
                fields,
                vec![
                    Arc::new(keys.finish()) as ArrayRef,
                    build(value_col, &entries)?,
                ],
                None,
            )
            .map_err(|e| e.to_string())?;
            let map = MapArray::try_new(
                Arc::new(entries_field),
                OffsetBuffer::new(offsets.into()),
                struct_array,
                nulls(values),
                false,
            )
            .map_err(|e| e.to_string())?;
            Ok(Arc::new(map))
        }
        Kind::Struct(fields) => {
            let mut children = Vec::with_capacity(fields.len());
            for (i, (name, child)) in fields.iter().enumerate() {
                let vs: Vec<Option<&Value>> =
                    vals().map(|v| v.and_then(|v| record_field(v, i))).collect();
                if let Some(bad) = vals().flatten().find(|v| !matches!(v, Value::Record(_))) {
                    return Err(mismatch("record", bad));
                }
                let nested = Col {
                    nullable: child.nullable || c.nullable,
                    ..child.clone()
                };
                children.push(build(&nested, &vs).map_err(|e| format!("{name}: {e}"))?);
            }
            let array = StructArray::try_new(struct_fields(fields), children, nulls(values))
                .map_err(|e| e.to_string())?;
            Ok(Arc::new(array))
        }
    }
}

fn offset(n: usize) -> Result<i32, String> {
    i32::try_from(n).map_err(|_| "more than 2^31 items in one file's column".to_string())
}

fn scalar<'v, B, T>(
    vals: impl Iterator<Item = Option<&'v Value>>,
    mut b: B,
    get: impl Fn(&Value) -> Option<T>,
) -> Result<ArrayRef, String>
where
    B: arrow_array::builder::ArrayBuilder + ScalarBuilder<T>,
{
    for v in vals {
        match v {
            None => b.push(None),
            Some(x) => match get(x) {
                Some(t) => b.push(Some(t)),
                None => return Err(mismatch("a number of the column's type", x)),
            },
        }
    }
    Ok(b.finish_array())
}

/// The one builder operation [`scalar`] needs, for the numeric builders.
trait ScalarBuilder<T> {
    fn push(&mut self, v: Option<T>);
    fn finish_array(&mut self) -> ArrayRef;
}

macro_rules! scalar_builder {
    ($b:ty, $t:ty) => {
        impl ScalarBuilder<$t> for $b {
            fn push(&mut self, v: Option<$t>) {
                self.append_option(v)
            }
            fn finish_array(&mut self) -> ArrayRef {
                Arc::new(self.finish())
            }
        }
    };
}
scalar_builder!(Int32Builder, i32);
scalar_builder!(Int64Builder, i64);
scalar_builder!(Float32Builder, f32);
scalar_builder!(Float64Builder, f64);

fn timestamps<'v, T: arrow_array::types::ArrowPrimitiveType<Native = i64>>(
    vals: impl Iterator<Item = Option<&'v Value>>,
    what: &str,
    get: impl Fn(&Value) -> Option<i64>,
) -> Result<PrimitiveArray<T>, String> {
    vals.map(|v| match v {
        None => Ok(None),
        Some(x) => get(x).map(Some).ok_or_else(|| mismatch(what, x)),
    })
    .collect()
}

fn fixed<'v>(vals: impl Iterator<Item = Option<&'v Value>>, size: i32) -> Result<ArrayRef, String> {
    let mut b = FixedSizeBinaryBuilder::new(size);
    for v in vals {
        match v {
            None => b.append_null(),
            Some(Value::Uuid(u)) => b.append_value(u.as_bytes()).map_err(|e| e.to_string())?,
            Some(Value::String(s)) if size == 16 => {
                let u = uuid::Uuid::parse_str(s).map_err(|e| format!("uuid {s:?}: {e}"))?;
                b.append_value(u.as_bytes()).map_err(|e| e.to_string())?
            }
            Some(Value::Fixed(_, bytes)) => b.append_value(bytes).map_err(|e| e.to_string())?,
            Some(Value::Duration(d)) => {
                let mut bytes = [0u8; 12];
                bytes[..4].copy_from_slice(&u32::from(d.months()).to_le_bytes());
                bytes[4..8].copy_from_slice(&u32::from(d.days()).to_le_bytes());
                bytes[8..].copy_from_slice(&u32::from(d.millis()).to_le_bytes());
                b.append_value(bytes).map_err(|e| e.to_string())?
            }
            Some(other) => return Err(mismatch("fixed", other)),
        }
    }
    Ok(Arc::new(b.finish()))
}

/// A decimal's unscaled value as `width` big-endian two's-complement bytes.
fn decimal_bytes(v: &Value, width: usize) -> Result<Vec<u8>, String> {
    let Value::Decimal(d) = v else {
        return Err(mismatch("decimal", v));
    };
    let raw: Vec<u8> = Vec::<u8>::try_from(d).map_err(|e| e.to_string())?;
    if raw.len() > width {
        return Err(format!(
            "decimal of {} bytes does not fit {width}",
            raw.len()
        ));
    }
    let fill = if raw.first().is_some_and(|b| b & 0x80 != 0) {
        0xff
    } else {
        0
    };
    let mut out = vec![fill; width - raw.len()];
    out.extend_from_slice(&raw);
    Ok(out)
}

fn to_array<const N: usize>(bytes: &[u8]) -> [u8; N] {
    let mut out = [0u8; N];
    out.copy_from_slice(&bytes[..N]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use apache_avro::Decimal;
    use arrow_array::cast::AsArray;
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

    const RICH: &str = r#"{"type":"record","name":"R","namespace":"t","fields":[
        {"name":"id","type":{"type":"string","logicalType":"uuid"}},
        {"name":"at","type":{"type":"long","logicalType":"timestamp-millis"}},
        {"name":"local","type":{"type":"long","logicalType":"local-timestamp-micros"}},
        {"name":"day","type":{"type":"int","logicalType":"date"}},
        {"name":"tod","type":{"type":"int","logicalType":"time-millis"}},
        {"name":"price","type":{"type":"bytes","logicalType":"decimal","precision":10,"scale":2}},
        {"name":"kind","type":{"type":"enum","name":"Kind","symbols":["A","B"]}},
        {"name":"hash","type":{"type":"fixed","name":"H","size":4}},
        {"name":"tags","type":{"type":"array","items":"string"}},
        {"name":"props","type":{"type":"map","values":"long"}},
        {"name":"note","type":["null","string"],"default":null},
        {"name":"inner","type":["null",{"type":"record","name":"In","fields":[{"name":"n","type":"int"}]}],"default":null},
        {"name":"again","type":["null","In"],"default":null},
        {"name":"either","type":["null","int","string"],"default":null},
        {"name":"ok","type":"boolean"},
        {"name":"ratio","type":"double"}
    ]}"#;

    fn row(i: i32, with_optionals: bool) -> Value {
        let opt = |v: Value| {
            if with_optionals {
                Value::Union(1, Box::new(v))
            } else {
                Value::Union(0, Box::new(Value::Null))
            }
        };
        Value::Record(vec![
            (
                "id".into(),
                Value::Uuid(uuid::Uuid::from_u128(i as u128 + 1)),
            ),
            (
                "at".into(),
                Value::TimestampMillis(1_764_691_200_123 + i64::from(i)),
            ),
            ("local".into(), Value::LocalTimestampMicros(5)),
            ("day".into(), Value::Date(20_424)),
            ("tod".into(), Value::TimeMillis(1_000)),
            (
                "price".into(),
                Value::Decimal(Decimal::from(
                    (-1250i64 - i64::from(i)).to_be_bytes().to_vec(),
                )),
            ),
            ("kind".into(), Value::Enum(1, "B".into())),
            ("hash".into(), Value::Fixed(4, vec![1, 2, 3, 4])),
            (
                "tags".into(),
                Value::Array(vec![Value::String("x".into()), Value::String("y".into())]),
            ),
            (
                "props".into(),
                Value::Map(
                    [
                        ("b".to_string(), Value::Long(2)),
                        ("a".to_string(), Value::Long(1)),
                    ]
                    .into(),
                ),
            ),
            ("note".into(), opt(Value::String(format!("n{i}")))),
            (
                "inner".into(),
                opt(Value::Record(vec![("n".into(), Value::Int(i))])),
            ),
            (
                "again".into(),
                opt(Value::Record(vec![("n".into(), Value::Int(-i))])),
            ),
            (
                "either".into(),
                if with_optionals {
                    Value::Union(2, Box::new(Value::String("s".into())))
                } else {
                    Value::Union(0, Box::new(Value::Null))
                },
            ),
            ("ok".into(), Value::Boolean(i % 2 == 0)),
            ("ratio".into(), Value::Double(0.5)),
        ])
    }

    #[test]
    fn every_mapped_type_survives_a_parquet_round_trip() {
        let schema = Avro::parse_str(RICH).expect("schema");
        let columns = Columns::for_schema(&schema).expect("maps");
        let rows = [row(0, true), row(1, false), row(2, true)];
        let refs: Vec<&Value> = rows.iter().collect();
        let batch = columns.batch(&refs).expect("batch");
        let types: Vec<String> = batch
            .schema()
            .fields()
            .iter()
            .map(|f| f.data_type().to_string())
            .collect();
        assert_eq!(types[1], "Timestamp(ms, \"UTC\")");
        assert_eq!(types[2], "Timestamp(µs)");
        assert_eq!(types[5], "Decimal128(10, 2)");
        assert!(types[9].starts_with("Map("), "{}", types[9]);
        assert_eq!(
            types[13], "Utf8",
            "a union of two non-null types is its JSON"
        );

        let bytes =
            super::super::files::parquet_bytes(&batch, super::super::settings::Compression::Zstd)
                .expect("parquet");
        let builder = ParquetRecordBatchReaderBuilder::try_new(bytes).expect("reader");
        let uuid_logical = builder
            .metadata()
            .file_metadata()
            .schema_descr()
            .column(0)
            .logical_type_ref()
            .cloned();
        assert_eq!(
            uuid_logical,
            Some(parquet::basic::LogicalType::Uuid),
            "Parquet's UUID type"
        );
        let back: Vec<RecordBatch> = builder
            .build()
            .expect("reader")
            .collect::<Result<_, _>>()
            .expect("reads");
        assert_eq!(back.len(), 1);
        assert_eq!(back[0].num_rows(), 3);
        for (i, (a, b)) in batch.columns().iter().zip(back[0].columns()).enumerate() {
            assert_eq!(
                a.as_ref(),
                b.as_ref(),
                "column {} round-trips",
                batch.schema().field(i).name()
            );
        }
        let prices = back[0].column(5).as_primitive::<Decimal128Type>();
        assert_eq!(prices.value(0), -1250, "-12.50 exactly");
        let props = back[0].column(9).as_map();
        assert_eq!(
            props.keys().as_string::<i32>().value(0),
            "a",
            "keys sorted: the same map makes the same file"
        );
        assert!(back[0].column(10).is_null(1) && back[0].column(11).is_null(1));
        assert_eq!(back[0].column(13).as_string::<i32>().value(0), "\"s\"");
    }

    #[test]
    fn every_mapped_type_is_one_json_object_per_line_in_gzip() {
        use std::io::Read as _;
        let schema = Avro::parse_str(RICH).expect("schema");
        let columns = Columns::for_schema(&schema).expect("maps");
        let rows = [row(0, true), row(1, false)];
        let refs: Vec<&Value> = rows.iter().collect();
        let batch = columns.batch(&refs).expect("batch");
        let gz = super::super::files::ndjson_gz_bytes(&batch).expect("ndjson");
        assert_eq!(
            super::super::files::ndjson_gz_bytes(&batch).expect("again"),
            gz,
            "the same rows give the same bytes"
        );
        let mut text = String::new();
        flate2::read::GzDecoder::new(&gz[..])
            .read_to_string(&mut text)
            .expect("gzip");
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
            .collect();
        assert_eq!(lines.len(), 2);
        let first = &lines[0];
        assert_eq!(first["id"], "00000000-0000-0000-0000-000000000001");
        assert_eq!(first["at"], "2025-12-02T16:00:00.123Z");
        assert_eq!(first["day"], "2025-12-02");
        assert!(
            text.contains(r#""price":-12.50,"#),
            "the decimal's digits: {text}"
        );
        assert_eq!(first["kind"], "B");
        assert_eq!(first["tags"], serde_json::json!(["x", "y"]));
        assert_eq!(first["props"], serde_json::json!({"a": 1, "b": 2}));
        assert_eq!(first["inner"], serde_json::json!({"n": 0}));
        assert_eq!(first["ok"], true);
        let keys = |v: &serde_json::Value| v.as_object().map(|o| o.len());
        assert_eq!(
            keys(&lines[1]),
            keys(first),
            "nulls are written: every line has every key"
        );
        assert!(lines[1]["note"].is_null());
    }

    #[test]
    fn a_value_of_the_wrong_shape_is_an_error_not_a_panic() {
        let schema = Avro::parse_str(RICH).expect("schema");
        let columns = Columns::for_schema(&schema).expect("maps");
        let Value::Record(mut fields) = row(0, true) else {
            unreachable!()
        };
        fields[1].1 = Value::String("soon".into());
        let bad = Value::Record(fields);
        let err = columns.batch(&[&bad]).expect_err("refused");
        assert!(
            matches!(err, ColumnError::Value { ref field, .. } if field == "at"),
            "{err}"
        );
        let not_record = Avro::parse_str(r#""string""#).expect("schema");
        assert!(Columns::for_schema(&not_record).is_err());
    }
}
