//! JSON text straight to Avro bytes for one schema, with no `serde_json::Value` tree in between: a serde
//! [`DeserializeSeed`] walks the JSON as the parser reads it and writes each value's Avro encoding as it goes.
//!
//! This is the fast path only. It answers "not this way" (any deserializer error) for anything it would have to
//! report, and the caller then runs the tree path (`to_avro`), which produces the errors with their pointers and
//! messages. So its one duty is to accept exactly what `to_avro` accepts and to write what that value encodes to.
//! Strings, UUID strings, `["null", T]`, arrays and maps are handled here; every other scalar goes through the tree
//! path's own converter one value at a time, so their rules (ranges, RFC 3339, enums) exist once.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::fmt;

use apache_avro::Schema;
use apache_avro::schema::{Name, UuidSchema};
use apache_avro::types::Value;
use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::Value as Json;

use super::{Converter, ValidateLimits};

/// How one schema is written from JSON, planned once per stream.
#[derive(Debug, Clone)]
pub enum Node {
    /// An Avro string.
    Str,
    /// A uuid over a string: parsed, and written in its canonical lowercase form.
    Uuid,
    /// A union with exactly one non-null branch, at `index`; `null` is the null branch's index, if it has one.
    Optional {
        /// Index of the null branch, when the union has one.
        null: Option<u32>,
        /// Index of the one other branch.
        index: u32,
        /// How that branch is written.
        inner: Box<Node>,
    },
    /// An array of items.
    Array(Box<Node>),
    /// A map of string keys to values.
    Map(Box<Node>),
    /// Any other scalar: converted by the tree path's converter, then written.
    Scalar(Schema),
}

impl Node {
    /// The plan for `schema`, or `None` when the fast path does not handle it (named references, nested records,
    /// unions of several types, decimals, durations, uuids over bytes): such a schema always takes the tree path.
    pub fn plan(schema: &Schema) -> Option<Node> {
        Some(match schema {
            Schema::String => Node::Str,
            Schema::Uuid(UuidSchema::String) => Node::Uuid,
            Schema::Union(u) => {
                let mut null = None;
                let mut other = None;
                for (i, s) in u.variants().iter().enumerate() {
                    let i = u32::try_from(i).ok()?;
                    match s {
                        Schema::Null => null = Some(i),
                        s if other.is_none() => other = Some((i, s)),
                        _ => return None,
                    }
                }
                let (index, inner) = other?;
                Node::Optional {
                    null,
                    index,
                    inner: Box::new(Node::plan(inner)?),
                }
            }
            Schema::Array(a) => Node::Array(Box::new(Node::plan(&a.items)?)),
            Schema::Map(m) => Node::Map(Box::new(Node::plan(&m.types)?)),
            s if writable_scalar(s) => Node::Scalar(s.clone()),
            _ => return None,
        })
    }
}

/// Whether [`write_value`] writes every value of `schema` that the converter makes.
fn writable_scalar(schema: &Schema) -> bool {
    matches!(
        schema,
        Schema::Null
            | Schema::Boolean
            | Schema::Int
            | Schema::Long
            | Schema::Float
            | Schema::Double
            | Schema::Bytes
            | Schema::Fixed(_)
            | Schema::Enum(_)
            | Schema::Date
            | Schema::TimeMillis
            | Schema::TimeMicros
            | Schema::TimestampMillis
            | Schema::TimestampMicros
            | Schema::TimestampNanos
            | Schema::LocalTimestampMillis
            | Schema::LocalTimestampMicros
            | Schema::LocalTimestampNanos
    )
}

/// Whether [`write_value`] writes every value of `schema` (a scalar, a string or uuid, or `["null", T]` of those).
pub fn writable(schema: &Schema) -> bool {
    match schema {
        Schema::String | Schema::Uuid(UuidSchema::String) => true,
        Schema::Union(u) => u
            .variants()
            .iter()
            .all(|s| !matches!(s, Schema::Union(_)) && writable(s)),
        s => writable_scalar(s),
    }
}

/// Writes Avro's zig-zag varint of `n`.
pub fn write_long(out: &mut Vec<u8>, n: i64) {
    let mut z = ((n << 1) ^ (n >> 63)) as u64;
    while z >= 0x80 {
        out.push((z as u8) | 0x80);
        z >>= 7;
    }
    out.push(z as u8);
}

/// Writes a length-prefixed string or bytes.
fn write_bytes(out: &mut Vec<u8>, b: &[u8]) {
    write_long(out, b.len() as i64);
    out.extend_from_slice(b);
}

/// Writes `uuid` as Avro's uuid-over-string does: 36 lowercase hyphenated characters.
fn write_uuid(out: &mut Vec<u8>, uuid: &uuid::Uuid) {
    let mut text = uuid::Uuid::encode_buffer();
    write_bytes(out, uuid.hyphenated().encode_lower(&mut text).as_bytes());
}

/// Writes a value the converter made for `schema` (see [`writable`]); `None` for a pairing it does not know,
/// which [`writable`] rules out at planning time.
pub fn write_value(out: &mut Vec<u8>, value: &Value, schema: &Schema) -> Option<()> {
    match (schema, value) {
        (Schema::Union(u), Value::Union(i, inner)) => {
            let branch = u.variants().get(*i as usize)?;
            write_long(out, i64::from(*i));
            write_value(out, inner, branch)
        }
        (Schema::Null, Value::Null) => Some(()),
        (Schema::Boolean, Value::Boolean(b)) => {
            out.push(u8::from(*b));
            Some(())
        }
        (Schema::Int | Schema::Date | Schema::TimeMillis, Value::Int(i) | Value::Date(i))
        | (Schema::TimeMillis, Value::TimeMillis(i)) => {
            write_long(out, i64::from(*i));
            Some(())
        }
        (
            _,
            Value::Long(i)
            | Value::TimeMicros(i)
            | Value::TimestampMillis(i)
            | Value::TimestampMicros(i)
            | Value::TimestampNanos(i)
            | Value::LocalTimestampMillis(i)
            | Value::LocalTimestampMicros(i)
            | Value::LocalTimestampNanos(i),
        ) => {
            write_long(out, *i);
            Some(())
        }
        (Schema::Float, Value::Float(f)) => {
            out.extend_from_slice(&f.to_le_bytes());
            Some(())
        }
        (Schema::Double, Value::Double(f)) => {
            out.extend_from_slice(&f.to_le_bytes());
            Some(())
        }
        (Schema::String | Schema::Uuid(UuidSchema::String), Value::String(s)) => {
            write_bytes(out, s.as_bytes());
            Some(())
        }
        (Schema::String | Schema::Uuid(UuidSchema::String), Value::Uuid(u)) => {
            write_uuid(out, u);
            Some(())
        }
        (Schema::Bytes, Value::Bytes(b)) => {
            write_bytes(out, b);
            Some(())
        }
        (Schema::Fixed(f), Value::Fixed(n, b)) if f.size == *n && b.len() == *n => {
            out.extend_from_slice(b);
            Some(())
        }
        (Schema::Enum(_), Value::Enum(i, _)) => {
            write_long(out, i64::from(*i));
            Some(())
        }
        _ => None,
    }
}

/// What every value of one event is checked against while it is written.
pub struct Context<'a, S> {
    /// Named types, for the converter (plans hold no references, so it never needs them).
    pub names: &'a HashMap<Name, S>,
    /// Bounds on strings.
    pub limits: ValidateLimits,
}

impl<S> Clone for Context<'_, S> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<S> Copy for Context<'_, S> {}

/// Writes one JSON value of `node` to `out`; any error means "take the tree path", never a client-facing message.
pub struct NodeSeed<'a, 'c, S> {
    /// The plan of the value.
    pub node: &'a Node,
    /// Where its Avro bytes go.
    pub out: &'a mut Vec<u8>,
    /// Names and limits.
    pub ctx: Context<'c, S>,
}

impl<'de, S: Borrow<Schema>> DeserializeSeed<'de> for NodeSeed<'_, '_, S> {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

/// The error every refusal carries: only its being an error matters.
fn refuse<E: de::Error>() -> E {
    E::custom("not on the direct path")
}

impl<S: Borrow<Schema>> NodeSeed<'_, '_, S> {
    /// A scalar through the converter, then written; `json` is what the tree path would have held.
    fn scalar<E: de::Error>(self, json: Json) -> Result<(), E> {
        let Node::Scalar(schema) = self.node else {
            return Err(refuse());
        };
        let mut conv = Converter::new(self.ctx.names, self.ctx.limits);
        let value = conv
            .convert(json, schema, None, &mut String::new())
            .filter(|_| conv.errors.is_empty())
            .ok_or_else(refuse)?;
        write_value(self.out, &value, schema).ok_or_else(refuse)
    }

    /// For a non-null value of an optional: writes the branch index and hands over to the branch's plan.
    fn branch(self) -> Option<Self> {
        match self.node {
            Node::Optional { index, inner, .. } => {
                write_long(self.out, i64::from(*index));
                Some(NodeSeed {
                    node: inner,
                    out: self.out,
                    ctx: self.ctx,
                })
            }
            _ => None,
        }
    }
}

/// Puts the block count in front of the `count` items written from `start`, and the closing zero after them.
fn close_block(out: &mut Vec<u8>, start: usize, count: usize) {
    if count > 0 {
        let mut prefix = Vec::with_capacity(4);
        write_long(&mut prefix, count as i64);
        out.splice(start..start, prefix);
    }
    out.push(0);
}

/// Map keys seen so far in one map, as spans of `out`: the tree path keeps the last of duplicate keys, which a
/// stream cannot, so a duplicate sends the event there. Beyond this many keys the check would cost more than the
/// tree path, so such maps take it too.
const MAX_DIRECT_MAP_KEYS: usize = 64;

impl<'de, S: Borrow<Schema>> Visitor<'de> for NodeSeed<'_, '_, S> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a value of the schema")
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<(), E> {
        match self.node {
            Node::Str => {
                if s.len() > self.ctx.limits.max_string_bytes {
                    return Err(refuse());
                }
                write_bytes(self.out, s.as_bytes());
                Ok(())
            }
            Node::Uuid => {
                let u = uuid::Uuid::try_parse(s).map_err(|_| refuse())?;
                write_uuid(self.out, &u);
                Ok(())
            }
            Node::Optional { .. } => self.branch().ok_or_else(refuse)?.visit_str(s),
            Node::Scalar(_) => self.scalar(Json::String(s.to_owned())),
            Node::Array(_) | Node::Map(_) => Err(refuse()),
        }
    }

    fn visit_bool<E: de::Error>(self, b: bool) -> Result<(), E> {
        match self.node {
            Node::Optional { .. } => self.branch().ok_or_else(refuse)?.visit_bool(b),
            _ => self.scalar(Json::Bool(b)),
        }
    }

    fn visit_i64<E: de::Error>(self, n: i64) -> Result<(), E> {
        match self.node {
            Node::Optional { .. } => self.branch().ok_or_else(refuse)?.visit_i64(n),
            _ => self.scalar(Json::from(n)),
        }
    }

    fn visit_u64<E: de::Error>(self, n: u64) -> Result<(), E> {
        match self.node {
            Node::Optional { .. } => self.branch().ok_or_else(refuse)?.visit_u64(n),
            _ => self.scalar(Json::from(n)),
        }
    }

    fn visit_f64<E: de::Error>(self, n: f64) -> Result<(), E> {
        match self.node {
            Node::Optional { .. } => self.branch().ok_or_else(refuse)?.visit_f64(n),
            _ => self.scalar(serde_json::Number::from_f64(n).map_or(Json::Null, Json::Number)),
        }
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        match self.node {
            Node::Optional { null: Some(i), .. } => {
                write_long(self.out, i64::from(*i));
                Ok(())
            }
            Node::Scalar(Schema::Null) => Ok(()),
            _ => Err(refuse()),
        }
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        match self.node {
            Node::Optional { .. } => self.branch().ok_or_else(refuse)?.visit_seq(seq),
            Node::Array(item) => {
                let start = self.out.len();
                let mut count = 0usize;
                while seq
                    .next_element_seed(NodeSeed {
                        node: item,
                        out: &mut *self.out,
                        ctx: self.ctx,
                    })?
                    .is_some()
                {
                    count += 1;
                }
                close_block(self.out, start, count);
                Ok(())
            }
            _ => Err(refuse()),
        }
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        match self.node {
            Node::Optional { .. } => self.branch().ok_or_else(refuse)?.visit_map(map),
            Node::Map(values) => {
                let start = self.out.len();
                let mut keys: Vec<(usize, usize)> = Vec::new();
                let max = self.ctx.limits.max_string_bytes;
                while let Some(key) = map.next_key_seed(MapKey {
                    out: &mut *self.out,
                    max,
                })? {
                    let new = &self.out[key.0..key.1];
                    if keys.len() >= MAX_DIRECT_MAP_KEYS
                        || keys.iter().any(|&(a, b)| &self.out[a..b] == new)
                    {
                        return Err(refuse());
                    }
                    keys.push(key);
                    map.next_value_seed(NodeSeed {
                        node: values,
                        out: &mut *self.out,
                        ctx: self.ctx,
                    })?;
                }
                close_block(self.out, start, keys.len());
                Ok(())
            }
            _ => Err(refuse()),
        }
    }
}

/// Writes a map key (length-prefixed) and answers where its text sits in `out`.
struct MapKey<'a> {
    out: &'a mut Vec<u8>,
    max: usize,
}

impl<'de> DeserializeSeed<'de> for MapKey<'_> {
    type Value = (usize, usize);

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for MapKey<'_> {
    type Value = (usize, usize);

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a map key")
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<Self::Value, E> {
        if s.len() > self.max {
            return Err(refuse());
        }
        write_long(self.out, s.len() as i64);
        let at = self.out.len();
        self.out.extend_from_slice(s.as_bytes());
        Ok((at, self.out.len()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use apache_avro::types::Value;

    fn limits() -> ValidateLimits {
        ValidateLimits {
            max_string_bytes: 64,
        }
    }

    /// The direct bytes of `json` for `schema`, or `None` when it refuses.
    fn direct(schema: &Schema, json: &str) -> Option<Vec<u8>> {
        let node = Node::plan(schema).expect("planned");
        let names: HashMap<Name, Schema> = HashMap::new();
        let mut out = Vec::new();
        let mut de = serde_json::Deserializer::from_str(json);
        NodeSeed {
            node: &node,
            out: &mut out,
            ctx: Context {
                names: &names,
                limits: limits(),
            },
        }
        .deserialize(&mut de)
        .ok()?;
        de.end().ok()?;
        Some(out)
    }

    /// What the tree path makes of `json`, decoded back from apache-avro's own encoding.
    fn tree(schema: &Schema, json: &str) -> Option<Value> {
        let names: HashMap<Name, Schema> = HashMap::new();
        let value =
            super::super::to_avro(serde_json::from_str(json).ok()?, schema, &names, limits())
                .ok()?;
        Some(decode(schema, &encode(schema, &value)))
    }

    fn encode(schema: &Schema, value: &Value) -> Vec<u8> {
        let mut out = Vec::new();
        apache_avro::writer::datum::GenericDatumWriter::builder(schema)
            .build()
            .expect("writer")
            .write_value_ref(&mut out, value)
            .expect("encodes");
        out
    }

    fn decode(schema: &Schema, mut bytes: &[u8]) -> Value {
        let v = apache_avro::reader::datum::GenericDatumReader::builder(schema)
            .build()
            .expect("reader")
            .read_value(&mut bytes)
            .expect("decodes");
        assert!(bytes.is_empty(), "every byte read");
        v
    }

    /// The fast path either refuses or writes what the tree path's value encodes to; and it refuses exactly what
    /// the tree path rejects.
    fn agree(schema: &str, cases: &[&str]) {
        let schema = Schema::parse_str(schema).expect("schema");
        for json in cases {
            let fast = direct(&schema, json);
            let slow = tree(&schema, json);
            match (&fast, &slow) {
                (Some(bytes), Some(v)) => assert_eq!(&decode(&schema, bytes), v, "{json}"),
                (None, None) => {}
                _ => panic!("{json}: direct {fast:?}, tree {slow:?}"),
            }
        }
    }

    #[test]
    fn strings_and_uuids() {
        agree(
            r#""string""#,
            &[
                r#""a""#,
                r#""""#,
                r#""é\n\"x""#,
                "1",
                "null",
                &format!("{:?}", "x".repeat(65)),
            ],
        );
        agree(
            r#"{"type":"string","logicalType":"uuid"}"#,
            &[
                r#""0190B8A4-6C3E-7A1B-9C2D-3E4F5A6B7C8D""#,
                r#""0190b8a46c3e7a1b9c2d3e4f5a6b7c8d""#,
                r#""nope""#,
                "7",
            ],
        );
    }

    #[test]
    fn optionals_in_either_order() {
        for schema in [
            r#"["null","string"]"#,
            r#"["long","null"]"#,
            r#"["string"]"#,
        ] {
            agree(
                schema,
                &["null", r#""x""#, "12", "-3", "1.5", "true", "[]", "{}"],
            );
        }
    }

    #[test]
    fn scalars_follow_the_converters_rules() {
        for schema in [
            r#""int""#,
            r#""long""#,
            r#""float""#,
            r#""double""#,
            r#""boolean""#,
            r#"{"type":"long","logicalType":"timestamp-millis"}"#,
            r#"{"type":"long","logicalType":"timestamp-micros"}"#,
            r#"{"type":"int","logicalType":"date"}"#,
            r#"{"type":"enum","name":"E","symbols":["a","b"]}"#,
            r#"{"type":"fixed","name":"F","size":2}"#,
            r#""bytes""#,
        ] {
            agree(
                schema,
                &[
                    "0",
                    "1",
                    "-1",
                    "2147483648",
                    "9223372036854775808",
                    "1.5",
                    "1e400",
                    "true",
                    "null",
                    r#""b""#,
                    r#""ab""#,
                    r#""2026-11-22T10:00:00Z""#,
                    r#""2026-11-22T10:00:00.123+02:00""#,
                    r#""1969-12-31T23:59:59Z""#,
                    r#""2026-11-22""#,
                    "4294967296000",
                ],
            );
        }
    }

    #[test]
    fn maps_and_arrays_with_their_limits() {
        agree(
            r#"{"type":"map","values":"string"}"#,
            &[
                "{}",
                r#"{"a":"1","b":"2"}"#,
                r#"{"a":1}"#,
                &format!(r#"{{"{}":"v"}}"#, "k".repeat(65)),
                "[]",
            ],
        );
        agree(
            r#"{"type":"array","items":["null","long"]}"#,
            &["[]", "[1,null,3]", r#"[1,"x"]"#, "{}", "[[1]]"],
        );
        agree(
            r#"{"type":"map","values":{"type":"array","items":"string"}}"#,
            &[r#"{"a":["x","y"],"b":[]}"#, r#"{"a":"x"}"#],
        );
    }

    #[test]
    fn a_map_with_a_duplicate_key_takes_the_tree_path() {
        let schema = Schema::parse_str(r#"{"type":"map","values":"string"}"#).expect("schema");
        let json = r#"{"a":"1","a":"2"}"#;
        assert!(direct(&schema, json).is_none());
        assert_eq!(
            tree(&schema, json),
            Some(Value::Map(
                [("a".to_owned(), Value::String("2".into()))].into()
            ))
        );
    }

    #[test]
    fn a_map_with_more_keys_than_it_checks_takes_the_tree_path() {
        let schema = Schema::parse_str(r#"{"type":"map","values":"string"}"#).expect("schema");
        let many: Vec<String> = (0..=MAX_DIRECT_MAP_KEYS)
            .map(|i| format!(r#""k{i}":"v""#))
            .collect();
        let json = format!("{{{}}}", many.join(","));
        assert!(direct(&schema, &json).is_none());
        assert!(tree(&schema, &json).is_some());
    }

    #[test]
    fn unsupported_schemas_are_not_planned() {
        for schema in [
            r#"["null","string","long"]"#,
            r#"{"type":"record","name":"R","fields":[{"name":"a","type":"string"}]}"#,
            r#"{"type":"bytes","logicalType":"decimal","precision":4,"scale":2}"#,
        ] {
            let schema = Schema::parse_str(schema).expect("schema");
            assert!(Node::plan(&schema).is_none(), "{schema:?}");
        }
    }

    #[test]
    fn zig_zag_matches_apache_avro() {
        for n in [0i64, 1, -1, 63, -64, 64, 300, i64::MAX, i64::MIN] {
            let mut ours = Vec::new();
            write_long(&mut ours, n);
            assert_eq!(ours, encode(&Schema::Long, &Value::Long(n)), "{n}");
        }
    }
}
