//! Avro schema → column encodings: resolving named types, checking names, and the [`Enc`] of every (sub)schema.

use std::collections::HashMap;

use apache_avro::Schema;
use apache_avro::schema::{Name, RecordSchema, UuidSchema};

use super::{Capabilities, Enc, FieldKind, MAX_DEPTH, MappingError};

pub(super) fn check_name(name: &str) -> Result<(), MappingError> {
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
pub(super) fn collect_names(
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

/// Maps (sub)schemas to encodings, resolving references through `names`.
pub(super) struct Mapper<'a> {
    pub(super) names: &'a HashMap<String, Schema>,
    /// Which native types new columns may use.
    pub(super) caps: Capabilities,
}

impl Mapper<'_> {
    pub(super) fn top_level(
        &self,
        field: &str,
        schema: &Schema,
        ns: Option<&str>,
    ) -> Result<FieldKind, MappingError> {
        let schema = self.deref(field, schema, ns)?;
        let map = |values: Enc, nullable: bool| {
            if !self.caps.map_type {
                return FieldKind::Map(values);
            }
            let map = Enc::Map(Box::new(values));
            // `Map` cannot be Nullable: null is the empty map, as in the two-column shape.
            FieldKind::Whole(if nullable {
                Enc::NullAsDefault(Box::new(map))
            } else {
                map
            })
        };
        match schema {
            Schema::Map(m) => Ok(map(self.enc(field, &m.types, ns, 1)?, false)),
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
                    return Ok(map(self.enc(field, &m.types, ns, 1)?, true));
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
        let caps = self.caps;
        let timestamp = |precision: u32| {
            if caps.datetime64 {
                Enc::DateTime64(precision)
            } else {
                Enc::DateTime
            }
        };
        Ok(match schema {
            Schema::Null => Enc::Nullable(Box::new(Enc::Bool)),
            Schema::Boolean if caps.bool_type => Enc::Boolean,
            Schema::Boolean => Enc::Bool,
            Schema::Int | Schema::TimeMillis => Enc::I32,
            Schema::Long | Schema::TimeMicros => Enc::I64,
            Schema::Float => Enc::F32,
            Schema::Double => Enc::F64,
            Schema::Enum(_) if caps.decimal_and_low_cardinality => Enc::LowCardStr,
            Schema::Bytes | Schema::String | Schema::Enum(_) => Enc::Str,
            Schema::Fixed(f) => Enc::Fixed(f.size),
            Schema::Duration(_) => Enc::Fixed(12),
            Schema::Uuid(_) => Enc::Uuid,
            Schema::Date => Enc::Date,
            Schema::TimestampMillis | Schema::LocalTimestampMillis => timestamp(3),
            Schema::TimestampMicros | Schema::LocalTimestampMicros => timestamp(6),
            Schema::TimestampNanos | Schema::LocalTimestampNanos => timestamp(9),
            Schema::Decimal(d) if caps.decimal_and_low_cardinality && d.precision <= 76 => {
                Enc::DecimalBin {
                    precision: d.precision,
                    scale: d.scale,
                }
            }
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
