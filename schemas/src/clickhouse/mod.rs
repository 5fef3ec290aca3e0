//! Avro → ClickHouse: the column types a record schema maps to, the DDL that creates or widens its table, and the
//! RowBinary encoding of decoded Avro values.
//!
//! Two mappings, picked by what the server accepts ([`Capabilities`], from its version): the legacy one uses only
//! what ClickHouse 18.16 has; on a current server new columns get the native types. A table that exists keeps its
//! columns: [`RowPlan::fit`] writes each field the way its column holds it.
//!
//! | Avro                                   | ClickHouse 18.16 (legacy)                                     | current server                       |
//! |----------------------------------------|---------------------------------------------------------------|--------------------------------------|
//! | `string`, `bytes`                      | `String`                                                      | same                                 |
//! | `enum`                                 | `String` (the symbol; new symbols need no DDL)                | `LowCardinality(String)`             |
//! | `fixed(n)`                             | `FixedString(n)`                                              | same                                 |
//! | `int`, `time-millis`                   | `Int32`                                                       | same                                 |
//! | `long`, `time-micros`                  | `Int64`                                                       | same                                 |
//! | `float` / `double`                     | `Float32` / `Float64`                                         | same                                 |
//! | `boolean`                              | `UInt8` (0 or 1)                                              | `Bool`                               |
//! | `uuid` (string or fixed)               | `UUID`                                                        | same                                 |
//! | `date`                                 | `Date`                                                        | same                                 |
//! | `timestamp-millis` (and `local-`)      | `DateTime` (whole seconds, UTC: sub-second precision is lost) | `DateTime64(3, 'UTC')`               |
//! | `timestamp-micros` (and `local-`)      | `DateTime` (whole seconds)                                    | `DateTime64(6, 'UTC')`               |
//! | `timestamp-nanos` (and `local-`)       | `DateTime` (whole seconds)                                    | `DateTime64(9, 'UTC')`               |
//! | `decimal(P, S)`                        | `String` (the exact decimal text, e.g. `-12.50`)              | `Decimal(P, S)` (P ≤ 76)             |
//! | `big-decimal`                          | `String`                                                      | same                                 |
//! | `duration`                             | `FixedString(12)` (the raw Avro bytes)                        | same                                 |
//! | `array<T>`                             | `Array(T)`                                                    | same                                 |
//! | `map<T>` (top-level field `f`)         | `f.keys Array(String)` + `f.values Array(T)` (a Nested pair)  | `f Map(String, T)`                   |
//! | `map<T>` (inside arrays or records)    | `Array(Tuple(String, T))`                                     | same                                 |
//! | `record` (nested)                      | `Tuple(...)` of its fields                                    | same                                 |
//! | `["null", T]`, T scalar                | `Nullable(T)`                                                 | same (`LowCardinality(Nullable(String))` for enums) |
//! | `["null", T]`, T array/map/record      | `T` (null is stored as empty / default values)                | same                                 |
//! | any other union                        | `String` holding the value as JSON                            | same                                 |
//!
//! Top-level map keys are written sorted, so redelivered copies of an event encode to identical bytes.
//!
//! The module is split by job: [`mapping`] turns a schema into column encodings, [`ddl`] writes the SQL that creates
//! or widens a table, [`rowbinary`] writes decoded values as RowBinary rows, and [`transcode`] writes Avro bytes
//! straight to RowBinary when the message's writer schema is the plan's own.

mod ddl;
mod mapping;
mod rowbinary;
mod server;
mod transcode;

pub use ddl::{
    ClusterTable, add_column_on_cluster_sql, add_column_sql, create_distributed_sql, quote_ident,
};
pub use rowbinary::{write_bytes, write_varint};
pub use server::Capabilities;
pub use transcode::{TranscodeError, Transcoder};

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
    /// `DateTime64(precision, 'UTC')`: ticks of 10^-precision seconds.
    DateTime64(u32),
    /// `Bool` (one byte, as `UInt8`).
    Boolean,
    /// `LowCardinality(String)` (RowBinary as `String`).
    LowCardStr,
    /// The decimal's text in a `String`.
    Decimal {
        scale: usize,
    },
    /// `Decimal(precision, scale)`: the unscaled value, little-endian, 4 to 32 bytes by precision.
    DecimalBin {
        precision: usize,
        scale: usize,
    },
    /// A top-level map as `Map(String, V)` (RowBinary as `Array(Tuple(String, V))`).
    Map(Box<Enc>),
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
            Enc::DateTime64(p) => format!("DateTime64({p}, 'UTC')"),
            Enc::Boolean => "Bool".into(),
            Enc::LowCardStr => "LowCardinality(String)".into(),
            Enc::DecimalBin { precision, scale } => format!("Decimal({precision}, {scale})"),
            Enc::Map(v) => format!("Map(String, {})", v.sql()),
            // ClickHouse nests these the other way round: LowCardinality wraps Nullable.
            Enc::Nullable(inner) if **inner == Enc::LowCardStr => {
                "LowCardinality(Nullable(String))".into()
            }
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
                | Enc::Map(_)
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
    /// Whether the column is a `Date`, `DateTime` or `DateTime64`, so it can be partitioned by month.
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
    /// The legacy mapping of the field, when it differs: what a table created on 18.16 holds.
    legacy: Option<FieldKind>,
}

impl FieldPlan {
    fn columns(&self, kind: &FieldKind, out: &mut Vec<Column>) {
        match kind {
            FieldKind::Whole(enc) => out.push(Column {
                name: self.name.clone(),
                ty: enc.sql(),
                doc: self.doc.clone(),
                sortable: enc.nullable_ok(),
                temporal: matches!(enc, Enc::Date | Enc::DateTime | Enc::DateTime64(_)),
            }),
            FieldKind::Map(values) => {
                let arr = |name: &str, ty: String| Column {
                    name: format!("{}.{name}", self.name),
                    ty: format!("Array({ty})"),
                    doc: self.doc.clone(),
                    sortable: false,
                    temporal: false,
                };
                out.push(arr("keys", "String".into()));
                out.push(arr("values", values.sql()));
            }
        }
    }

    /// Whether `existing` holds every column of `kind`, with the same types.
    fn held_as(&self, kind: &FieldKind, existing: &[(String, String)]) -> bool {
        let mut wanted = Vec::new();
        self.columns(kind, &mut wanted);
        wanted.iter().all(|c| {
            existing
                .iter()
                .any(|(n, ty)| *n == c.name && ddl::same_type(ty, &c.ty))
        })
    }
}

/// How rows of one Avro record schema become ClickHouse columns and RowBinary bytes.
#[derive(Debug, Clone, PartialEq)]
pub struct RowPlan {
    fields: Vec<FieldPlan>,
    /// Whether each row ends with its message's topic, partition and offset ([`SOURCE_COLUMNS`]).
    source_columns: bool,
}

/// The columns that trace a row to its Kafka message, when a stream asks for them; both server generations have
/// these types.
pub const SOURCE_COLUMNS: [(&str, &str); 3] = [
    ("_topic", "String"),
    ("_partition", "Int32"),
    ("_offset", "Int64"),
];

/// Where a table lives and how it is sorted and partitioned.
#[derive(Debug, Clone)]
pub struct TableSpec<'a> {
    /// `database.table`.
    pub table: &'a str,
    /// Fields of the sort key; the last should be the stable event id so redelivered rows collapse.
    pub order_by: &'a [String],
    /// A `Date`/`DateTime` field to partition by month, if any.
    pub partition_by: Option<&'a str>,
    /// `non_replicated_deduplication_window`: how many recent insert blocks' tokens the table remembers (servers
    /// with `insert_deduplication_token` only; `None` leaves the server's default, which is no deduplication).
    pub dedup_window: Option<u64>,
}

impl RowPlan {
    /// The legacy plan for a record schema: what every supported server accepts.
    pub fn from_schema(schema: &Schema) -> Result<Self, MappingError> {
        Self::for_server(schema, Capabilities::LEGACY)
    }

    /// The plan for a record schema on a server with `caps` (named types it references must be defined inside it).
    pub fn for_server(schema: &Schema, caps: Capabilities) -> Result<Self, MappingError> {
        let Schema::Record(record) = schema else {
            return Err(MappingError::NotARecord(
                format!("{schema:?}").chars().take(40).collect(),
            ));
        };
        let mut names = HashMap::new();
        collect_names(schema, None, &mut names, 0);
        let mapper = Mapper {
            names: &names,
            caps,
        };
        let legacy_mapper = Mapper {
            names: &names,
            caps: Capabilities::LEGACY,
        };
        let ns = record.name.namespace();
        let mut fields = Vec::with_capacity(record.fields.len());
        for field in &record.fields {
            check_name(&field.name)?;
            let kind = mapper.top_level(&field.name, &field.schema, ns)?;
            let legacy = Some(legacy_mapper.top_level(&field.name, &field.schema, ns)?)
                .filter(|l| *l != kind);
            fields.push(FieldPlan {
                name: field.name.clone(),
                doc: field.doc.clone(),
                kind,
                legacy,
            });
        }
        Ok(Self {
            fields,
            source_columns: false,
        })
    }

    /// This plan writing each field the way `existing` (a table's `(name, type)` columns) holds it: a field whose
    /// columns have the legacy types keeps them, so a table created on an older server is never rewritten; fields
    /// the table lacks keep this plan's types (and are added with them).
    pub fn fit(&self, existing: &[(String, String)]) -> RowPlan {
        let fields = self
            .fields
            .iter()
            .map(|f| match &f.legacy {
                Some(legacy) if !f.held_as(&f.kind, existing) && f.held_as(legacy, existing) => {
                    FieldPlan {
                        kind: legacy.clone(),
                        legacy: None,
                        ..f.clone()
                    }
                }
                _ => f.clone(),
            })
            .collect();
        RowPlan {
            fields,
            source_columns: self.source_columns,
        }
    }

    /// This plan with the [`SOURCE_COLUMNS`] after the schema's.
    pub fn with_source_columns(mut self) -> Self {
        self.source_columns = true;
        self
    }

    /// Whether rows end with the [`SOURCE_COLUMNS`] (written by [`RowPlan::encode_source`]).
    pub fn has_source_columns(&self) -> bool {
        self.source_columns
    }

    /// Appends the [`SOURCE_COLUMNS`] of the message a row came from, after [`RowPlan::encode`] wrote the row.
    pub fn encode_source(&self, topic: &str, partition: i32, offset: i64, out: &mut Vec<u8>) {
        rowbinary::write_source(topic, partition, offset, out);
    }

    /// The columns in the order [`RowPlan::encode`] (and [`RowPlan::encode_source`]) write them.
    pub fn columns(&self) -> Vec<Column> {
        let mut out = Vec::new();
        for f in &self.fields {
            f.columns(&f.kind, &mut out);
        }
        if self.source_columns {
            out.extend(SOURCE_COLUMNS.iter().map(|(name, ty)| Column {
                name: (*name).to_owned(),
                ty: (*ty).to_owned(),
                doc: Some("Kafka message this row came from".to_owned()),
                sortable: true,
                temporal: false,
            }));
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
