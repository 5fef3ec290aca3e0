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
//!
//! The module is split by job: [`mapping`] turns a schema into column encodings, [`ddl`] writes the SQL that creates
//! or widens a table, and [`rowbinary`] writes decoded values as RowBinary rows.

mod ddl;
mod mapping;
mod rowbinary;

pub use ddl::{add_column_sql, quote_ident};

use std::collections::HashMap;

use apache_avro::Schema;
use mapping::{Mapper, check_name, collect_names};

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
}

#[cfg(test)]
mod tests;
