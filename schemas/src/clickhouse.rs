//! Avro → ClickHouse: the column types a record schema maps to, the DDL that creates or widens its table, and the
//! RowBinary encoding of decoded Avro values.
//!
//! The mapping only uses types and syntax that ClickHouse 18.16 and current releases both accept (no `Map`, `Bool`,
//! `DateTime64`, `LowCardinality`, `JSON` or `IF NOT EXISTS` on columns):
//!
//! | Avro                                   | ClickHouse                                                    |
//! |----------------------------------------|---------------------------------------------------------------|
//! | `string`, `bytes`                      | `String`                                                      |
//! | `enum`                                 | `String` (the symbol; new symbols need no DDL)                |
//! | `fixed(n)`                             | `FixedString(n)`                                              |
//! | `int`, `time-millis`                   | `Int32`                                                       |
//! | `long`, `time-micros`                  | `Int64`                                                       |
//! | `float` / `double`                     | `Float32` / `Float64`                                         |
//! | `boolean`                              | `UInt8` (0 or 1)                                              |
//! | `uuid` (string or fixed)               | `UUID`                                                        |
//! | `date`                                 | `Date`                                                        |
//! | `timestamp-*`, `local-timestamp-*`     | `DateTime` (whole seconds, UTC: sub-second precision is lost) |
//! | `decimal`, `big-decimal`               | `String` (the exact decimal text, e.g. `-12.50`)              |
//! | `duration`                             | `FixedString(12)` (the raw Avro bytes)                        |
//! | `array<T>`                             | `Array(T)`                                                    |
//! | `map<T>` (top-level field `f`)         | `f.keys Array(String)` + `f.values Array(T)` (a Nested pair)  |
//! | `map<T>` (inside arrays or records)    | `Array(Tuple(String, T))`                                     |
//! | `record` (nested)                      | `Tuple(...)` of its fields                                    |
//! | `["null", T]`, T scalar                | `Nullable(T)`                                                 |
//! | `["null", T]`, T array/map/record      | `T` (null is stored as empty / default values)                |
//! | any other union                        | `String` holding the value as JSON                            |
//!
//! Top-level map keys are written sorted, so redelivered copies of an event encode to identical bytes.

use std::collections::HashMap;
use std::fmt::Write as _;

use apache_avro::Schema;
use apache_avro::schema::{Name, RecordSchema, UuidSchema};
use apache_avro::types::Value;

/// Deepest nesting of records/arrays/maps a schema may have; also stops recursive schemas.
const MAX_DEPTH: usize = 32;

/// Why a schema has no ClickHouse table shape.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MappingError {
    #[error("the top-level schema must be a record, got {0}")]
    NotARecord(String),
    #[error("field `{0}`: nesting deeper than {MAX_DEPTH} levels (recursive schema?)")]
    TooDeep(String),
    #[error("field `{0}`: reference to unknown named type {1}")]
    UnknownRef(String, String),
    #[error("field `{0}` is not valid as a ClickHouse column name")]
    BadName(String),
    #[error("ORDER BY field `{0}` {1}")]
    BadOrderBy(String, &'static str),
    #[error("PARTITION BY field `{0}` {1}")]
    BadPartition(String, &'static str),
}

/// Why a decoded value cannot be written as a row of its table.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EncodeError {
    #[error("field `{field}`: expected {expected}, got {got}")]
    Mismatch {
        field: String,
        expected: &'static str,
        got: String,
    },
    #[error("field `{field}`: {value} does not fit ClickHouse {ty}")]
    OutOfRange {
        field: String,
        value: String,
        ty: &'static str,
    },
    #[error("field `{0}` missing from the record")]
    MissingField(String),
}

/// How one Avro (sub)schema is written; mirrors a ClickHouse column type.
#[derive(Debug, Clone, PartialEq)]
enum Enc {
    Str,
    Fixed(usize),
    I32,
    I64,
    F32,
    F64,
    Bool,
    Uuid,
    Date,
    DateTime,
    Decimal {
        scale: usize,
    },
    /// A union of null and a type ClickHouse can wrap in `Nullable`.
    Nullable(Box<Enc>),
    /// A union of null and a type ClickHouse cannot wrap: null becomes the type's default.
    NullAsDefault(Box<Enc>),
    Array(Box<Enc>),
    /// A map below the top level: `Array(Tuple(String, V))`.
    Pairs(Box<Enc>),
    Tuple(Vec<(String, Enc)>),
    /// Any union other than `[null, T]`: its JSON text.
    Json,
}

impl Enc {
    fn sql(&self) -> String {
        match self {
            Enc::Str | Enc::Decimal { .. } | Enc::Json => "String".into(),
            Enc::Fixed(n) => format!("FixedString({n})"),
            Enc::I32 => "Int32".into(),
            Enc::I64 => "Int64".into(),
            Enc::F32 => "Float32".into(),
            Enc::F64 => "Float64".into(),
            Enc::Bool => "UInt8".into(),
            Enc::Uuid => "UUID".into(),
            Enc::Date => "Date".into(),
            Enc::DateTime => "DateTime".into(),
            Enc::Nullable(inner) => format!("Nullable({})", inner.sql()),
            Enc::NullAsDefault(inner) => inner.sql(),
            Enc::Array(inner) => format!("Array({})", inner.sql()),
            Enc::Pairs(v) => format!("Array(Tuple(String, {}))", v.sql()),
            Enc::Tuple(items) => {
                let parts: Vec<String> = items.iter().map(|(_, e)| e.sql()).collect();
                format!("Tuple({})", parts.join(", "))
            }
        }
    }

    /// ClickHouse wraps only plain values in `Nullable`, never arrays or tuples.
    fn nullable_ok(&self) -> bool {
        !matches!(
            self,
            Enc::Array(_)
                | Enc::Pairs(_)
                | Enc::Tuple(_)
                | Enc::Nullable(_)
                | Enc::NullAsDefault(_)
        )
    }
}

/// One ClickHouse column of a table made from an Avro record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    /// Column name (the Avro field name, or `field.keys` / `field.values` for a map).
    pub name: String,
    /// ClickHouse type, as written in DDL.
    pub ty: String,
    /// The Avro field's doc, used as the column comment.
    pub doc: Option<String>,
    /// Whether the column may be part of ORDER BY (not Nullable, not an array or tuple).
    sortable: bool,
    /// Whether the column is a `Date` or `DateTime`, so it can be partitioned by month.
    temporal: bool,
}

#[derive(Debug, Clone, PartialEq)]
enum FieldKind {
    Whole(Enc),
    /// A top-level map: two parallel array columns.
    Map(Enc),
}

#[derive(Debug, Clone, PartialEq)]
struct FieldPlan {
    name: String,
    doc: Option<String>,
    kind: FieldKind,
}

/// How rows of one Avro record schema become ClickHouse columns and RowBinary bytes.
#[derive(Debug, Clone, PartialEq)]
pub struct RowPlan {
    fields: Vec<FieldPlan>,
}

/// Where a table lives and how it is sorted and partitioned.
#[derive(Debug, Clone)]
pub struct TableSpec<'a> {
    /// `database.table`.
    pub table: &'a str,
    /// Fields of the sort key; the last should be the stable event id so redelivered rows collapse.
    pub order_by: &'a [String],
    /// A `Date`/`DateTime` field to partition by month, if any.
    pub partition_by: Option<&'a str>,
}

impl RowPlan {
    /// The plan for a record schema (named types it references must be defined inside it).
    pub fn from_schema(schema: &Schema) -> Result<Self, MappingError> {
        let Schema::Record(record) = schema else {
            return Err(MappingError::NotARecord(
                format!("{schema:?}").chars().take(40).collect(),
            ));
        };
        let mut names = HashMap::new();
        collect_names(schema, None, &mut names, 0);
        let mapper = Mapper { names: &names };
        let ns = record.name.namespace();
        let mut fields = Vec::with_capacity(record.fields.len());
        for field in &record.fields {
            check_name(&field.name)?;
            let kind = mapper.top_level(&field.name, &field.schema, ns)?;
            fields.push(FieldPlan {
                name: field.name.clone(),
                doc: field.doc.clone(),
                kind,
            });
        }
        Ok(Self { fields })
    }

    /// The columns in the order [`RowPlan::encode`] writes them.
    pub fn columns(&self) -> Vec<Column> {
        let mut out = Vec::new();
        for f in &self.fields {
            match &f.kind {
                FieldKind::Whole(enc) => out.push(Column {
                    name: f.name.clone(),
                    ty: enc.sql(),
                    doc: f.doc.clone(),
                    sortable: enc.nullable_ok(),
                    temporal: matches!(enc, Enc::Date | Enc::DateTime),
                }),
                FieldKind::Map(values) => {
                    let arr = |name: &str, ty: String| Column {
                        name: format!("{}.{name}", f.name),
                        ty: format!("Array({ty})"),
                        doc: f.doc.clone(),
                        sortable: false,
                        temporal: false,
                    };
                    out.push(arr("keys", "String".into()));
                    out.push(arr("values", values.sql()));
                }
            }
        }
        out
    }

    /// The backquoted column list for `INSERT INTO t (...) FORMAT RowBinary`.
    pub fn insert_columns(&self) -> String {
        self.columns()
            .iter()
            .map(|c| quote_ident(&c.name))
            .collect::<Vec<_>>()
            .join(", ")
    }

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

    /// `CREATE TABLE IF NOT EXISTS` for this plan: ReplacingMergeTree sorted by `spec.order_by`, by month.
    pub fn create_table_sql(&self, spec: &TableSpec<'_>) -> Result<String, MappingError> {
        let columns = self.columns();
        for key in spec.order_by {
            let col = columns.iter().find(|c| c.name == *key).ok_or_else(|| {
                MappingError::BadOrderBy(key.clone(), "is not a field of the schema")
            })?;
            if !col.sortable {
                return Err(MappingError::BadOrderBy(
                    key.clone(),
                    "is nullable, an array or a tuple",
                ));
            }
        }
        if spec.order_by.is_empty() {
            return Err(MappingError::BadOrderBy(String::new(), "list is empty"));
        }
        let partition = match spec.partition_by {
            Some(p) => {
                let col = columns.iter().find(|c| c.name == p).ok_or_else(|| {
                    MappingError::BadPartition(p.to_owned(), "is not a field of the schema")
                })?;
                if !col.temporal {
                    return Err(MappingError::BadPartition(
                        p.to_owned(),
                        "is not a date or timestamp",
                    ));
                }
                format!(" PARTITION BY toYYYYMM({})", quote_ident(p))
            }
            None => String::new(),
        };
        let mut sql = format!("CREATE TABLE IF NOT EXISTS {} (\n", spec.table);
        for (i, c) in columns.iter().enumerate() {
            let sep = if i + 1 == columns.len() { "" } else { "," };
            let _ = writeln!(sql, "    {}{sep}", column_def(c));
        }
        let order: Vec<String> = spec.order_by.iter().map(|k| quote_ident(k)).collect();
        let _ = write!(
            sql,
            ") ENGINE = ReplacingMergeTree(){partition} ORDER BY ({})",
            order.join(", ")
        );
        Ok(sql)
    }
}

/// `ALTER TABLE ... ADD COLUMN` for one column (ClickHouse 18.16 has no `IF NOT EXISTS` here: check first).
pub fn add_column_sql(table: &str, column: &Column) -> String {
    format!("ALTER TABLE {table} ADD COLUMN {}", column_def(column))
}

fn column_def(c: &Column) -> String {
    let mut def = format!("{} {}", quote_ident(&c.name), c.ty);
    if let Some(doc) = &c.doc {
        let _ = write!(def, " COMMENT '{}'", escape_literal(doc));
    }
    def
}

/// Backquotes an identifier (names are checked to be plain Avro names, so no escaping is needed).
pub fn quote_ident(name: &str) -> String {
    format!("`{name}`")
}

fn escape_literal(s: &str) -> String {
    s.replace('\\', "\\\\").replace('\'', "\\'")
}

fn check_name(name: &str) -> Result<(), MappingError> {
    let mut chars = name.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    if first_ok && chars.all(|c| c.is_ascii_alphanumeric() || c == '_') {
        Ok(())
    } else {
        Err(MappingError::BadName(name.to_owned()))
    }
}

/// Records every named type defined inside `schema` under its full name.
fn collect_names(
    schema: &Schema,
    ns: Option<&str>,
    out: &mut HashMap<String, Schema>,
    depth: usize,
) {
    if depth > MAX_DEPTH {
        return;
    }
    let mut named = |name: &Name, s: &Schema| -> Option<String> {
        let full = full_name(name, ns);
        out.insert(full, s.clone());
        name.namespace().or(ns).map(str::to_owned)
    };
    match schema {
        Schema::Record(r) => {
            let inner_ns = named(&r.name, schema);
            for f in &r.fields {
                collect_names(&f.schema, inner_ns.as_deref(), out, depth + 1);
            }
        }
        Schema::Enum(e) => {
            named(&e.name, schema);
        }
        Schema::Fixed(f) | Schema::Duration(f) | Schema::Uuid(UuidSchema::Fixed(f)) => {
            named(&f.name, schema);
        }
        Schema::Array(a) => collect_names(&a.items, ns, out, depth + 1),
        Schema::Map(m) => collect_names(&m.types, ns, out, depth + 1),
        Schema::Union(u) => {
            for v in u.variants() {
                collect_names(v, ns, out, depth + 1);
            }
        }
        _ => {}
    }
}

fn full_name(name: &Name, ns: Option<&str>) -> String {
    name.fullname(ns)
}

struct Mapper<'a> {
    names: &'a HashMap<String, Schema>,
}

impl Mapper<'_> {
    fn top_level(
        &self,
        field: &str,
        schema: &Schema,
        ns: Option<&str>,
    ) -> Result<FieldKind, MappingError> {
        let schema = self.deref(field, schema, ns)?;
        match schema {
            Schema::Map(m) => Ok(FieldKind::Map(self.enc(field, &m.types, ns, 1)?)),
            Schema::Union(u) => {
                // `["null", map]` at the top level keeps the two-column shape; null is an empty map.
                let non_null: Vec<&Schema> = u
                    .variants()
                    .iter()
                    .filter(|s| !matches!(s, Schema::Null))
                    .collect();
                if let ([inner], true) = (non_null.as_slice(), u.is_nullable())
                    && let Schema::Map(m) = self.deref(field, inner, ns)?
                {
                    return Ok(FieldKind::Map(self.enc(field, &m.types, ns, 1)?));
                }
                Ok(FieldKind::Whole(self.enc(field, schema, ns, 0)?))
            }
            _ => Ok(FieldKind::Whole(self.enc(field, schema, ns, 0)?)),
        }
    }

    fn deref<'s>(
        &'s self,
        field: &str,
        schema: &'s Schema,
        ns: Option<&str>,
    ) -> Result<&'s Schema, MappingError> {
        match schema {
            Schema::Ref { name } => {
                let full = full_name(name, ns);
                self.names
                    .get(&full)
                    .or_else(|| self.names.get(name.name()))
                    .ok_or_else(|| MappingError::UnknownRef(field.to_owned(), full))
            }
            s => Ok(s),
        }
    }

    fn enc(
        &self,
        field: &str,
        schema: &Schema,
        ns: Option<&str>,
        depth: usize,
    ) -> Result<Enc, MappingError> {
        if depth > MAX_DEPTH {
            return Err(MappingError::TooDeep(field.to_owned()));
        }
        let schema = self.deref(field, schema, ns)?;
        Ok(match schema {
            Schema::Null => Enc::Nullable(Box::new(Enc::Bool)),
            Schema::Boolean => Enc::Bool,
            Schema::Int | Schema::TimeMillis => Enc::I32,
            Schema::Long | Schema::TimeMicros => Enc::I64,
            Schema::Float => Enc::F32,
            Schema::Double => Enc::F64,
            Schema::Bytes | Schema::String | Schema::Enum(_) => Enc::Str,
            Schema::Fixed(f) => Enc::Fixed(f.size),
            Schema::Duration(_) => Enc::Fixed(12),
            Schema::Uuid(_) => Enc::Uuid,
            Schema::Date => Enc::Date,
            Schema::TimestampMillis
            | Schema::TimestampMicros
            | Schema::TimestampNanos
            | Schema::LocalTimestampMillis
            | Schema::LocalTimestampMicros
            | Schema::LocalTimestampNanos => Enc::DateTime,
            Schema::Decimal(d) => Enc::Decimal { scale: d.scale },
            Schema::BigDecimal => Enc::Decimal { scale: 0 },
            Schema::Array(a) => Enc::Array(Box::new(self.enc(field, &a.items, ns, depth + 1)?)),
            Schema::Map(m) => Enc::Pairs(Box::new(self.enc(field, &m.types, ns, depth + 1)?)),
            Schema::Record(r) => self.record(field, r, depth)?,
            Schema::Union(u) => {
                let non_null: Vec<&Schema> = u
                    .variants()
                    .iter()
                    .filter(|s| !matches!(s, Schema::Null))
                    .collect();
                match (non_null.as_slice(), u.is_nullable()) {
                    ([inner], true) => {
                        let inner = self.enc(field, inner, ns, depth + 1)?;
                        if inner.nullable_ok() {
                            Enc::Nullable(Box::new(inner))
                        } else {
                            Enc::NullAsDefault(Box::new(inner))
                        }
                    }
                    ([inner], false) => self.enc(field, inner, ns, depth + 1)?,
                    _ => Enc::Json,
                }
            }
            Schema::Ref { name } => {
                return Err(MappingError::UnknownRef(
                    field.to_owned(),
                    full_name(name, ns),
                ));
            }
        })
    }

    fn record(&self, field: &str, r: &RecordSchema, depth: usize) -> Result<Enc, MappingError> {
        let ns = r.name.namespace();
        let items = r
            .fields
            .iter()
            .map(|f| Ok((f.name.clone(), self.enc(field, &f.schema, ns, depth + 1)?)))
            .collect::<Result<Vec<_>, MappingError>>()?;
        Ok(Enc::Tuple(items))
    }
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

fn write_varint(mut n: u64, out: &mut Vec<u8>) {
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

fn write_bytes(b: &[u8], out: &mut Vec<u8>) {
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

fn seconds(field: &str, v: i64, per_second: i64) -> Result<u32, EncodeError> {
    let s = v.div_euclid(per_second);
    u32::try_from(s).map_err(|_| out_of_range(field, format!("{s}s since epoch"), "DateTime"))
}

fn write(enc: &Enc, v: &Value, field: &str, out: &mut Vec<u8>) -> Result<(), EncodeError> {
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
        (Enc::Str, Value::String(s)) | (Enc::Str, Value::Enum(_, s)) => {
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
        (Enc::Bool, Value::Boolean(b)) => out.push(u8::from(*b)),
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
        (Enc::Array(inner), Value::Array(items)) => {
            write_varint(items.len() as u64, out);
            for item in items {
                write(inner, item, field, out)?;
            }
        }
        (Enc::Pairs(values), Value::Map(m)) => {
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
        Enc::DateTime => "timestamp",
        Enc::Decimal { .. } => "decimal",
        Enc::Nullable(_) | Enc::NullAsDefault(_) => "nullable value",
        Enc::Array(_) => "array",
        Enc::Pairs(_) => "map",
        Enc::Tuple(_) => "record",
        Enc::Json => "union",
    }
}

/// ClickHouse's UUID in RowBinary: the high then the low 64 bits, each little-endian.
fn write_uuid(u: &uuid::Uuid, out: &mut Vec<u8>) {
    let (hi, lo) = u.as_u64_pair();
    out.extend_from_slice(&hi.to_le_bytes());
    out.extend_from_slice(&lo.to_le_bytes());
}

fn write_default(enc: &Enc, out: &mut Vec<u8>) {
    match enc {
        Enc::Str | Enc::Decimal { .. } | Enc::Json | Enc::Array(_) | Enc::Pairs(_) => {
            write_varint(0, out)
        }
        Enc::Fixed(n) => out.extend(std::iter::repeat_n(0u8, *n)),
        Enc::I32 | Enc::F32 | Enc::DateTime => out.extend_from_slice(&[0; 4]),
        Enc::I64 | Enc::F64 => out.extend_from_slice(&[0; 8]),
        Enc::Bool => out.push(0),
        Enc::Date => out.extend_from_slice(&[0; 2]),
        Enc::Uuid => out.extend_from_slice(&[0; 16]),
        Enc::Nullable(_) => out.push(1),
        Enc::NullAsDefault(inner) => write_default(inner, out),
        Enc::Tuple(items) => items.iter().for_each(|(_, e)| write_default(e, out)),
    }
}

/// The decimal text of a big-endian two's-complement unscaled value, or `None` past 128 bits.
fn decimal_text(bytes: &[u8], scale: usize) -> Option<String> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog;

    fn event_plan() -> RowPlan {
        let schema = Schema::parse_str(catalog::EVENT.text).expect("event schema parses");
        RowPlan::from_schema(&schema).expect("event schema maps")
    }

    #[test]
    fn event_schema_columns() {
        let cols: Vec<(String, String)> = event_plan()
            .columns()
            .into_iter()
            .map(|c| (c.name, c.ty))
            .collect();
        let expect = [
            ("event_id", "UUID"),
            ("tenant", "String"),
            ("event_type", "String"),
            ("occurred_at", "DateTime"),
            ("received_at", "DateTime"),
            ("source", "Nullable(String)"),
            ("user_id", "Nullable(String)"),
            ("anonymous_id", "Nullable(String)"),
            ("session_id", "Nullable(String)"),
            ("trace_id", "Nullable(String)"),
            ("properties.keys", "Array(String)"),
            ("properties.values", "Array(String)"),
        ];
        let expect: Vec<(String, String)> = expect
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        assert_eq!(cols, expect);
    }

    #[test]
    fn create_table_for_events() {
        let order = [
            "tenant".to_string(),
            "event_type".to_string(),
            "event_id".to_string(),
        ];
        let sql = event_plan()
            .create_table_sql(&TableSpec {
                table: "sluice.events",
                order_by: &order,
                partition_by: Some("occurred_at"),
            })
            .expect("ddl");
        assert!(
            sql.starts_with("CREATE TABLE IF NOT EXISTS sluice.events ("),
            "{sql}"
        );
        assert!(sql.contains("`properties.keys` Array(String)"), "{sql}");
        assert!(
            sql.contains("COMMENT 'Set by the server from the ingestion key.'"),
            "{sql}"
        );
        assert!(
            sql.ends_with(") ENGINE = ReplacingMergeTree() PARTITION BY toYYYYMM(`occurred_at`) ORDER BY (`tenant`, `event_type`, `event_id`)"),
            "{sql}"
        );
    }

    #[test]
    fn bad_sort_and_partition_keys_are_refused() {
        let plan = event_plan();
        let spec = |order: &'static [String], part| TableSpec {
            table: "t",
            order_by: order,
            partition_by: part,
        };
        let nullable: &'static [String] = Box::leak(Box::new(["user_id".to_string()]));
        let missing: &'static [String] = Box::leak(Box::new(["nope".to_string()]));
        let good: &'static [String] = Box::leak(Box::new(["event_id".to_string()]));
        assert!(matches!(
            plan.create_table_sql(&spec(nullable, None)),
            Err(MappingError::BadOrderBy(..))
        ));
        assert!(matches!(
            plan.create_table_sql(&spec(missing, None)),
            Err(MappingError::BadOrderBy(..))
        ));
        assert!(matches!(
            plan.create_table_sql(&spec(good, Some("tenant"))),
            Err(MappingError::BadPartition(..))
        ));
        assert!(matches!(
            plan.create_table_sql(&spec(&[], None)),
            Err(MappingError::BadOrderBy(..))
        ));
    }

    #[test]
    fn encodes_an_event_row() {
        let plan = event_plan();
        let id = uuid::Uuid::parse_str("00112233-4455-6677-8899-aabbccddeeff").expect("uuid");
        let mut props = HashMap::new();
        props.insert("b".to_string(), Value::String("2".into()));
        props.insert("a".to_string(), Value::String("1".into()));
        let value = Value::Record(vec![
            ("event_id".into(), Value::Uuid(id)),
            ("tenant".into(), Value::String("t".into())),
            ("event_type".into(), Value::String("e".into())),
            (
                "occurred_at".into(),
                Value::TimestampMillis(1_700_000_000_999),
            ),
            (
                "received_at".into(),
                Value::TimestampMillis(1_700_000_001_000),
            ),
            (
                "source".into(),
                Value::Union(1, Box::new(Value::String("s".into()))),
            ),
            ("user_id".into(), Value::Union(0, Box::new(Value::Null))),
            (
                "anonymous_id".into(),
                Value::Union(0, Box::new(Value::Null)),
            ),
            ("session_id".into(), Value::Union(0, Box::new(Value::Null))),
            ("trace_id".into(), Value::Union(0, Box::new(Value::Null))),
            ("properties".into(), Value::Map(props)),
        ]);
        let mut out = Vec::new();
        plan.encode(&value, &mut out).expect("encodes");
        let mut expect = vec![
            0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11, 0x00, 0xff, 0xee, 0xdd, 0xcc, 0xbb, 0xaa,
            0x99, 0x88,
        ];
        expect.extend_from_slice(&[1, b't', 1, b'e']);
        expect.extend_from_slice(&1_700_000_000u32.to_le_bytes());
        expect.extend_from_slice(&1_700_000_001u32.to_le_bytes());
        expect.extend_from_slice(&[0, 1, b's', 1, 1, 1, 1]);
        expect.extend_from_slice(&[2, 1, b'a', 1, b'b', 2, 1, b'1', 1, b'2']);
        assert_eq!(out, expect);
    }

    #[test]
    fn a_bad_value_leaves_the_buffer_untouched() {
        let plan = event_plan();
        let value = Value::Record(vec![
            ("event_id".into(), Value::Uuid(uuid::Uuid::nil())),
            ("tenant".into(), Value::Int(3)),
        ]);
        let mut out = vec![9, 9];
        let err = plan
            .encode(&value, &mut out)
            .expect_err("tenant is not a string");
        assert!(
            matches!(err, EncodeError::Mismatch { ref field, .. } if field == "tenant"),
            "{err}"
        );
        assert_eq!(out, vec![9, 9]);
    }

    #[test]
    fn timestamps_before_1970_do_not_fit_datetime() {
        let mut out = Vec::new();
        let err = write(&Enc::DateTime, &Value::TimestampMillis(-1), "ts", &mut out)
            .expect_err("out of range");
        assert!(matches!(err, EncodeError::OutOfRange { .. }), "{err}");
    }

    #[test]
    fn every_avro_type_has_a_column() {
        let schema = Schema::parse_str(
            r#"{"type":"record","name":"All","namespace":"t","fields":[
                {"name":"b","type":"boolean"},{"name":"i","type":"int"},{"name":"l","type":"long"},
                {"name":"f","type":"float"},{"name":"d","type":"double"},{"name":"by","type":"bytes"},
                {"name":"e","type":{"type":"enum","name":"Color","symbols":["RED","GREEN"]}},
                {"name":"fx","type":{"type":"fixed","name":"Four","size":4}},
                {"name":"day","type":{"type":"int","logicalType":"date"}},
                {"name":"dec","type":{"type":"bytes","logicalType":"decimal","precision":9,"scale":2}},
                {"name":"arr","type":{"type":"array","items":["null","long"]}},
                {"name":"nested","type":{"type":"record","name":"Inner","fields":[{"name":"x","type":"int"},{"name":"m","type":{"type":"map","values":"int"}}]}},
                {"name":"maybe_arr","type":["null",{"type":"array","items":"string"}],"default":null},
                {"name":"again","type":"Inner"},
                {"name":"either","type":["int","string"]},
                {"name":"col","type":"Color"}
            ]}"#,
        )
        .expect("parses");
        let plan = RowPlan::from_schema(&schema).expect("maps");
        let types: Vec<String> = plan.columns().into_iter().map(|c| c.ty).collect();
        assert_eq!(
            types,
            [
                "UInt8",
                "Int32",
                "Int64",
                "Float32",
                "Float64",
                "String",
                "String",
                "FixedString(4)",
                "Date",
                "String",
                "Array(Nullable(Int64))",
                "Tuple(Int32, Array(Tuple(String, Int32)))",
                "Array(String)",
                "Tuple(Int32, Array(Tuple(String, Int32)))",
                "String",
                "String",
            ]
        );
    }

    #[test]
    fn decimal_text_keeps_scale_and_sign() {
        assert_eq!(decimal_text(&[0x04, 0xe2], 2).as_deref(), Some("12.50"));
        assert_eq!(decimal_text(&[0xfb, 0x1e], 2).as_deref(), Some("-12.50"));
        assert_eq!(decimal_text(&[0x05], 3).as_deref(), Some("0.005"));
        assert_eq!(decimal_text(&[0x7f], 0).as_deref(), Some("127"));
        assert_eq!(decimal_text(&[0; 17], 0), None);
    }

    #[test]
    fn varints_match_clickhouse() {
        let mut out = Vec::new();
        write_varint(300, &mut out);
        assert_eq!(out, vec![0xac, 0x02]);
    }
}
