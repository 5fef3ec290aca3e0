//! Avro binary straight to RowBinary, for a plan whose schema is the message's writer schema: no
//! `apache_avro::Value` tree is built, each value is read and written in one pass. [`RowPlan::transcoder`] compiles
//! the plan and the schema into a program once per writer; a shape it does not cover (unions other than
//! `[null, T]`, `big-decimal`) gets `None`, and the caller keeps the value-based path.

use std::cell::RefCell;
use std::collections::HashMap;
use std::ops::Range;

use apache_avro::Schema;
use apache_avro::schema::{InnerDecimalSchema, RecordSchema, UuidSchema};

use super::mapping::collect_names;
use super::rowbinary::{
    decimal_text, seconds, ticks, write_bytes, write_decimal_bin, write_default, write_uuid,
    write_varint,
};
use super::{Enc, EncodeError, FieldKind, MAX_DEPTH, RowPlan};

/// Why a message could not be transcoded.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TranscodeError {
    /// The bytes are not valid Avro for the writer schema.
    #[error("avro: {0}")]
    Malformed(String),
    /// Bytes left over after the record.
    #[error("{0} bytes after the Avro datum")]
    Trailing(usize),
    /// A value does not fit its column.
    #[error("{0}")]
    Unrepresentable(#[from] EncodeError),
}

/// One compiled step: what to read from the Avro bytes and how to write it.
#[derive(Debug, Clone)]
enum Node {
    Bool,
    Int,
    IntAsLong,
    Long,
    Float,
    FloatAsDouble,
    Double,
    /// An Avro string: UTF-8 checked, as the value path's decoder does.
    Text,
    Bytes,
    EnumStr(Vec<String>),
    Fixed(usize),
    UuidText,
    UuidFixed,
    Date,
    DateTime(i64),
    DateTime64 {
        from: u32,
        to: u32,
    },
    DecimalText {
        scale: usize,
        fixed: Option<usize>,
    },
    DecimalBin {
        precision: usize,
        fixed: Option<usize>,
    },
    /// A two-branch union with null: `Nullable(T)` (flag byte) or, when ClickHouse cannot wrap T, T's default.
    Nullable {
        null_index: i64,
        inner: Box<Node>,
        default: Option<Vec<u8>>,
    },
    /// A one-branch union: the branch.
    Single(Box<Node>),
    Array(Box<Node>),
    /// A map below the top level or a `Map` column: count, then sorted (key, value) pairs.
    Pairs(Box<Node>),
    /// A top-level map as two columns: sorted keys, then their values. `null_index` when it sits in a union.
    TopMap {
        values: Box<Node>,
        null_index: Option<i64>,
    },
    Tuple(Vec<Node>),
}

/// A compiled Avro → RowBinary program for one record schema and plan.
#[derive(Debug, Clone)]
pub struct Transcoder {
    fields: Vec<Node>,
    source_columns: bool,
}

struct Compiler<'a> {
    names: &'a HashMap<String, Schema>,
}

impl RowPlan {
    /// A transcoder for messages written with `schema`, which must be the schema this plan was made from; `None`
    /// when the plan holds a shape only the value-based path writes.
    pub fn transcoder(&self, schema: &Schema) -> Option<Transcoder> {
        let Schema::Record(record) = schema else {
            return None;
        };
        if record.fields.len() != self.fields.len() {
            return None;
        }
        let mut names = HashMap::new();
        collect_names(schema, None, &mut names, 0);
        let c = Compiler { names: &names };
        let ns = record.name.namespace();
        let mut fields = Vec::with_capacity(self.fields.len());
        for (plan, avro) in self.fields.iter().zip(&record.fields) {
            if plan.name != avro.name {
                return None;
            }
            let node = match &plan.kind {
                FieldKind::Whole(enc) => c.node(enc, &avro.schema, ns, 0)?,
                FieldKind::Map(values) => c.top_map(values, &avro.schema, ns)?,
            };
            fields.push(node);
        }
        Some(Transcoder {
            fields,
            source_columns: self.source_columns,
        })
    }
}

impl Compiler<'_> {
    fn deref<'s>(&'s self, schema: &'s Schema, ns: Option<&str>) -> Option<&'s Schema> {
        match schema {
            Schema::Ref { name } => self
                .names
                .get(&name.fullname(ns))
                .or_else(|| self.names.get(name.name())),
            s => Some(s),
        }
    }

    fn top_map(&self, values: &Enc, schema: &Schema, ns: Option<&str>) -> Option<Node> {
        match self.deref(schema, ns)? {
            Schema::Map(m) => Some(Node::TopMap {
                values: Box::new(self.node(values, &m.types, ns, 1)?),
                null_index: None,
            }),
            Schema::Union(u) if u.variants().len() == 2 => {
                let null_index = u
                    .variants()
                    .iter()
                    .position(|v| matches!(v, Schema::Null))?;
                let other = &u.variants()[1 - null_index];
                let Schema::Map(m) = self.deref(other, ns)? else {
                    return None;
                };
                Some(Node::TopMap {
                    values: Box::new(self.node(values, &m.types, ns, 1)?),
                    null_index: Some(null_index as i64),
                })
            }
            _ => None,
        }
    }

    fn node(&self, enc: &Enc, schema: &Schema, ns: Option<&str>, depth: usize) -> Option<Node> {
        if depth > MAX_DEPTH {
            return None;
        }
        let schema = self.deref(schema, ns)?;
        let fixed_size = |s: &Schema| match s {
            Schema::Decimal(d) => match &d.inner {
                InnerDecimalSchema::Fixed(f) => Some(f.size),
                InnerDecimalSchema::Bytes => None,
            },
            _ => None,
        };
        Some(match (enc, schema) {
            (Enc::Nullable(inner) | Enc::NullAsDefault(inner), Schema::Union(u))
                if u.variants().len() == 2 =>
            {
                let null_index = u
                    .variants()
                    .iter()
                    .position(|v| matches!(v, Schema::Null))?;
                let branch = &u.variants()[1 - null_index];
                let default = matches!(enc, Enc::NullAsDefault(_)).then(|| {
                    let mut d = Vec::new();
                    write_default(inner, &mut d);
                    d
                });
                Node::Nullable {
                    null_index: null_index as i64,
                    inner: Box::new(self.node(inner, branch, ns, depth + 1)?),
                    default,
                }
            }
            (_, Schema::Union(u)) if u.variants().len() == 1 => {
                Node::Single(Box::new(self.node(enc, &u.variants()[0], ns, depth + 1)?))
            }
            (Enc::Bool | Enc::Boolean, Schema::Boolean) => Node::Bool,
            (Enc::I32, Schema::Int | Schema::TimeMillis | Schema::Date) => Node::Int,
            (Enc::I64, Schema::Int) => Node::IntAsLong,
            (
                Enc::I64,
                Schema::Long
                | Schema::TimeMicros
                | Schema::TimestampMillis
                | Schema::TimestampMicros
                | Schema::TimestampNanos
                | Schema::LocalTimestampMillis
                | Schema::LocalTimestampMicros
                | Schema::LocalTimestampNanos,
            ) => Node::Long,
            (Enc::F32, Schema::Float) => Node::Float,
            (Enc::F64, Schema::Float) => Node::FloatAsDouble,
            (Enc::F64, Schema::Double) => Node::Double,
            (Enc::Str | Enc::LowCardStr, Schema::String) => Node::Text,
            (Enc::Str | Enc::LowCardStr, Schema::Bytes) => Node::Bytes,
            (Enc::Str | Enc::LowCardStr, Schema::Enum(e)) => Node::EnumStr(e.symbols.clone()),
            (Enc::Fixed(n), Schema::Fixed(f)) if f.size == *n => Node::Fixed(*n),
            (Enc::Fixed(12), Schema::Duration(_)) => Node::Fixed(12),
            (Enc::Uuid, Schema::Uuid(UuidSchema::String)) => Node::UuidText,
            (Enc::Uuid, Schema::Uuid(UuidSchema::Fixed(_))) => Node::UuidFixed,
            (Enc::Date, Schema::Date) => Node::Date,
            (Enc::DateTime, Schema::TimestampMillis | Schema::LocalTimestampMillis) => {
                Node::DateTime(1_000)
            }
            (Enc::DateTime, Schema::TimestampMicros | Schema::LocalTimestampMicros) => {
                Node::DateTime(1_000_000)
            }
            (Enc::DateTime, Schema::TimestampNanos | Schema::LocalTimestampNanos) => {
                Node::DateTime(1_000_000_000)
            }
            (Enc::DateTime64(to), Schema::TimestampMillis | Schema::LocalTimestampMillis) => {
                Node::DateTime64 { from: 3, to: *to }
            }
            (Enc::DateTime64(to), Schema::TimestampMicros | Schema::LocalTimestampMicros) => {
                Node::DateTime64 { from: 6, to: *to }
            }
            (Enc::DateTime64(to), Schema::TimestampNanos | Schema::LocalTimestampNanos) => {
                Node::DateTime64 { from: 9, to: *to }
            }
            (Enc::Decimal { scale }, s @ Schema::Decimal(_)) => Node::DecimalText {
                scale: *scale,
                fixed: fixed_size(s),
            },
            (Enc::DecimalBin { precision, .. }, s @ Schema::Decimal(_)) => Node::DecimalBin {
                precision: *precision,
                fixed: fixed_size(s),
            },
            (Enc::Array(inner), Schema::Array(a)) => {
                Node::Array(Box::new(self.node(inner, &a.items, ns, depth + 1)?))
            }
            (Enc::Pairs(values) | Enc::Map(values), Schema::Map(m)) => {
                Node::Pairs(Box::new(self.node(values, &m.types, ns, depth + 1)?))
            }
            (Enc::Tuple(items), Schema::Record(r)) => self.tuple(items, r, depth)?,
            _ => return None,
        })
    }

    fn tuple(&self, items: &[(String, Enc)], r: &RecordSchema, depth: usize) -> Option<Node> {
        if items.len() != r.fields.len() {
            return None;
        }
        let ns = r.name.namespace();
        let nodes = items
            .iter()
            .zip(&r.fields)
            .map(|((name, enc), f)| {
                (name == &f.name)
                    .then(|| self.node(enc, &f.schema, ns, depth + 1))
                    .flatten()
            })
            .collect::<Option<Vec<_>>>()?;
        Some(Node::Tuple(nodes))
    }
}

/// The Avro bytes still to read.
struct Input<'a> {
    rest: &'a [u8],
}

fn malformed(what: &str) -> TranscodeError {
    TranscodeError::Malformed(what.to_owned())
}

impl<'a> Input<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], TranscodeError> {
        if self.rest.len() < n {
            return Err(malformed("unexpected end of data"));
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }

    fn long(&mut self) -> Result<i64, TranscodeError> {
        let mut n: u64 = 0;
        for shift in (0..64).step_by(7) {
            let b = *self
                .rest
                .first()
                .ok_or_else(|| malformed("unexpected end of a varint"))?;
            self.rest = &self.rest[1..];
            n |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok((n >> 1) as i64 ^ -((n & 1) as i64));
            }
        }
        Err(malformed("varint longer than 10 bytes"))
    }

    fn int(&mut self) -> Result<i32, TranscodeError> {
        i32::try_from(self.long()?).map_err(|_| malformed("int out of range"))
    }

    fn len(&mut self) -> Result<usize, TranscodeError> {
        usize::try_from(self.long()?).map_err(|_| malformed("negative length"))
    }

    fn bytes(&mut self) -> Result<&'a [u8], TranscodeError> {
        let n = self.len()?;
        self.take(n)
    }

    /// The items of an array or map block by block: calls `each` once per item.
    fn blocks(
        &mut self,
        mut each: impl FnMut(&mut Self) -> Result<(), TranscodeError>,
    ) -> Result<(), TranscodeError> {
        loop {
            let count = self.long()?;
            if count == 0 {
                return Ok(());
            }
            if count < 0 {
                // A negative count is followed by the block's size in bytes, which a reader may skip by.
                self.long()?;
            }
            for _ in 0..count.unsigned_abs() {
                each(self)?;
            }
        }
    }
}

impl Transcoder {
    /// Appends the RowBinary row of one Avro-encoded record (the body after the Confluent header); `out` is left as
    /// it was on error.
    pub fn transcode(&self, avro: &[u8], out: &mut Vec<u8>) -> Result<(), TranscodeError> {
        let start = out.len();
        let mut input = Input { rest: avro };
        let mut result = self
            .fields
            .iter()
            .try_for_each(|node| write_node(node, &mut input, out));
        if result.is_ok() && !input.rest.is_empty() {
            result = Err(TranscodeError::Trailing(input.rest.len()));
        }
        if result.is_err() {
            out.truncate(start);
        }
        result
    }

    /// Whether rows end with the source columns (written by [`RowPlan::encode_source`]).
    pub fn has_source_columns(&self) -> bool {
        self.source_columns
    }
}

const FIELD: &str = "<transcoded>";

fn write_node(node: &Node, input: &mut Input<'_>, out: &mut Vec<u8>) -> Result<(), TranscodeError> {
    match node {
        Node::Bool => match input.take(1)?[0] {
            0 => out.push(0),
            1 => out.push(1),
            _ => return Err(malformed("boolean is neither 0 nor 1")),
        },
        Node::Int => out.extend_from_slice(&input.int()?.to_le_bytes()),
        Node::IntAsLong => out.extend_from_slice(&i64::from(input.int()?).to_le_bytes()),
        Node::Long => out.extend_from_slice(&input.long()?.to_le_bytes()),
        Node::Float => out.extend_from_slice(input.take(4)?),
        Node::FloatAsDouble => {
            let b = input.take(4)?;
            let f = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            out.extend_from_slice(&f64::from(f).to_le_bytes());
        }
        Node::Double => out.extend_from_slice(input.take(8)?),
        Node::Text => {
            let b = input.bytes()?;
            if !is_utf8(b) {
                return Err(malformed("string is not UTF-8"));
            }
            write_bytes(b, out);
        }
        Node::Bytes => write_bytes(input.bytes()?, out),
        Node::EnumStr(symbols) => {
            let i = input.int()?;
            let s = usize::try_from(i)
                .ok()
                .and_then(|i| symbols.get(i))
                .ok_or_else(|| malformed("enum index out of range"))?;
            write_bytes(s.as_bytes(), out);
        }
        Node::Fixed(n) => out.extend_from_slice(input.take(*n)?),
        Node::UuidText => {
            let text = input.bytes()?;
            if !is_utf8(text) {
                return Err(malformed("uuid is not UTF-8"));
            }
            // Parsed from the bytes: a valid uuid is ASCII, so checking UTF-8 first only repeated the scan.
            let u =
                uuid::Uuid::try_parse_ascii(text).map_err(|e| malformed(&format!("uuid: {e}")))?;
            write_uuid(&u, out);
        }
        Node::UuidFixed => {
            let u = uuid::Uuid::from_slice(input.take(16)?)
                .map_err(|e| malformed(&format!("uuid: {e}")))?;
            write_uuid(&u, out);
        }
        Node::Date => {
            let d = input.int()?;
            let days = u16::try_from(d).map_err(|_| EncodeError::OutOfRange {
                field: FIELD.into(),
                value: format!("day {d}"),
                ty: "Date",
            })?;
            out.extend_from_slice(&days.to_le_bytes());
        }
        Node::DateTime(per_second) => {
            out.extend_from_slice(&seconds(FIELD, input.long()?, *per_second)?.to_le_bytes())
        }
        Node::DateTime64 { from, to } => {
            out.extend_from_slice(&ticks(FIELD, input.long()?, *from, *to)?.to_le_bytes())
        }
        Node::DecimalText { scale, fixed } => {
            let bytes = match fixed {
                Some(n) => input.take(*n)?,
                None => input.bytes()?,
            };
            let text = decimal_text(bytes, *scale).ok_or_else(|| EncodeError::OutOfRange {
                field: FIELD.into(),
                value: format!("{} bytes", bytes.len()),
                ty: "Decimal (max 16 bytes)",
            })?;
            write_bytes(text.as_bytes(), out);
        }
        Node::DecimalBin { precision, fixed } => {
            let bytes = match fixed {
                Some(n) => input.take(*n)?,
                None => input.bytes()?,
            };
            write_decimal_bin(FIELD, bytes, *precision, out)?;
        }
        Node::Nullable {
            null_index,
            inner,
            default,
        } => {
            let i = input.long()?;
            if i == *null_index {
                match default {
                    Some(d) => out.extend_from_slice(d),
                    None => out.push(1),
                }
            } else if i == 1 - *null_index {
                if default.is_none() {
                    out.push(0);
                }
                write_node(inner, input, out)?;
            } else {
                return Err(malformed("union index out of range"));
            }
        }
        Node::Single(inner) => {
            if input.long()? != 0 {
                return Err(malformed("union index out of range"));
            }
            write_node(inner, input, out)?;
        }
        Node::Array(inner) => {
            // RowBinary wants the count first: write the items aside, then both.
            let mut items = Vec::new();
            let mut n = 0u64;
            input.blocks(|input| {
                n += 1;
                write_node(inner, input, &mut items)
            })?;
            write_varint(n, out);
            out.extend_from_slice(&items);
        }
        Node::Pairs(values) => {
            let entries = sorted_entries(values, input)?;
            write_varint(entries.pairs.len() as u64, out);
            for (key, value) in &entries.pairs {
                write_bytes(&entries.bytes[key.clone()], out);
                out.extend_from_slice(&entries.bytes[value.clone()]);
            }
            entries.give_back();
        }
        Node::TopMap { values, null_index } => {
            if let Some(null_index) = null_index {
                let i = input.long()?;
                if i == *null_index {
                    write_varint(0, out);
                    write_varint(0, out);
                    return Ok(());
                }
                if i != 1 - *null_index {
                    return Err(malformed("union index out of range"));
                }
            }
            let entries = sorted_entries(values, input)?;
            write_varint(entries.pairs.len() as u64, out);
            for (key, _) in &entries.pairs {
                write_bytes(&entries.bytes[key.clone()], out);
            }
            write_varint(entries.pairs.len() as u64, out);
            for (_, value) in &entries.pairs {
                out.extend_from_slice(&entries.bytes[value.clone()]);
            }
            entries.give_back();
        }
        Node::Tuple(items) => {
            for item in items {
                write_node(item, input, out)?;
            }
        }
    }
    Ok(())
}

/// A map's entries, sorted by key (so redelivered copies encode to identical bytes, as on the value path): each
/// key's bytes and its value's RowBinary back to back in one buffer.
#[derive(Default)]
struct Entries {
    /// Each entry's key and value, as ranges of `bytes`.
    pairs: Vec<(Range<usize>, Range<usize>)>,
    bytes: Vec<u8>,
}

/// Spare entry buffers kept per thread: nested maps take one each.
const SPARE_ENTRIES: usize = 8;

thread_local! {
    /// Emptied [`Entries`] for the next map: two allocations and frees per row's map were 3% of the
    /// consumer's CPU while draining.
    static SPARE: RefCell<Vec<Entries>> = const { RefCell::new(Vec::new()) };
}

impl Entries {
    fn take() -> Self {
        SPARE.with_borrow_mut(Vec::pop).unwrap_or_default()
    }

    /// Returns the buffers, emptied, for the next map.
    fn give_back(mut self) {
        self.pairs.clear();
        self.bytes.clear();
        SPARE.with_borrow_mut(|spare| {
            if spare.len() < SPARE_ENTRIES {
                spare.push(self);
            }
        });
    }
}

/// Whether `b` is UTF-8, with the ASCII most text is checked a word at a time first: `from_utf8` on short
/// strings was 6% of the consumer's CPU while draining.
fn is_utf8(b: &[u8]) -> bool {
    b.is_ascii() || std::str::from_utf8(b).is_ok()
}

fn sorted_entries(values: &Node, input: &mut Input<'_>) -> Result<Entries, TranscodeError> {
    let mut entries = Entries::take();
    input.blocks(|input| {
        let key = input.bytes()?;
        if !is_utf8(key) {
            return Err(malformed("map key is not UTF-8"));
        }
        let key_start = entries.bytes.len();
        entries.bytes.extend_from_slice(key);
        let start = entries.bytes.len();
        write_node(values, input, &mut entries.bytes)?;
        entries
            .pairs
            .push((key_start..start, start..entries.bytes.len()));
        Ok(())
    })?;
    let Entries { pairs, bytes } = &mut entries;
    pairs.sort_by(|a, b| bytes[a.0.clone()].cmp(&bytes[b.0.clone()]));
    Ok(entries)
}
