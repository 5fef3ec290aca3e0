//! Values made of other values: records (defaults, unknown fields), unions (choosing the branch), arrays and maps.
//! Each keeps going past a bad member, so one pass reports every problem with its pointer.

use std::borrow::Borrow;
use std::collections::HashMap;

use apache_avro::Schema;
use apache_avro::schema::{ArraySchema, MapSchema, RecordSchema};
use apache_avro::types::Value;
use serde_json::Value as Json;

use super::{Converter, expected, kind, push_token};

impl<S: Borrow<Schema>> Converter<'_, S> {
    /// Converts `json` to a record, union, array or map.
    pub(super) fn composite(
        &mut self,
        json: Json,
        schema: &Schema,
        ns: Option<&str>,
        pointer: &mut String,
    ) -> Option<Value> {
        match (schema, json) {
            (Schema::Array(arr), Json::Array(items)) => self.array(items, arr, ns, pointer),
            (Schema::Map(map), Json::Object(obj)) => self.map(obj, map, ns, pointer),
            (Schema::Record(rec), Json::Object(obj)) => self.record(obj, rec, pointer),
            (Schema::Union(union), json) => self.union(json, union.variants(), ns, pointer),
            (_, other) => self.mismatch(pointer, schema, &other),
        }
    }

    fn array(
        &mut self,
        items: Vec<Json>,
        arr: &ArraySchema,
        ns: Option<&str>,
        pointer: &mut String,
    ) -> Option<Value> {
        let mut out = Vec::with_capacity(items.len());
        let mut ok = true;
        for (i, item) in items.into_iter().enumerate() {
            let len = pointer.len();
            pointer.push('/');
            pointer.push_str(&i.to_string());
            match self.convert(item, &arr.items, ns, pointer) {
                Some(v) => out.push(v),
                None => ok = false,
            }
            pointer.truncate(len);
        }
        ok.then_some(Value::Array(out))
    }

    fn map(
        &mut self,
        obj: serde_json::Map<String, Json>,
        map: &MapSchema,
        ns: Option<&str>,
        pointer: &mut String,
    ) -> Option<Value> {
        let mut out = HashMap::with_capacity(obj.len());
        let mut ok = true;
        for (k, v) in obj {
            let len = pointer.len();
            push_token(pointer, &k);
            if self.check_len(pointer, k.len()).is_none() {
                ok = false;
            } else {
                match self.convert(v, &map.types, ns, pointer) {
                    Some(v) => {
                        out.insert(k, v);
                    }
                    None => ok = false,
                }
            }
            pointer.truncate(len);
        }
        ok.then_some(Value::Map(out))
    }

    fn record(
        &mut self,
        mut obj: serde_json::Map<String, Json>,
        rec: &RecordSchema,
        pointer: &mut String,
    ) -> Option<Value> {
        let ns = rec.name.namespace();
        let mut ok = true;
        for key in obj.keys() {
            if !rec.lookup.contains_key(key) {
                let len = pointer.len();
                push_token(pointer, key);
                self.fail(pointer, "unknown field");
                pointer.truncate(len);
                ok = false;
            }
        }
        let mut fields = Vec::with_capacity(rec.fields.len());
        for field in &rec.fields {
            let len = pointer.len();
            push_token(pointer, &field.name);
            let value = match (obj.remove(&field.name), &field.default) {
                (Some(v), _) => self.convert(v, &field.schema, ns, pointer),
                (None, Some(default)) => self.convert(default.clone(), &field.schema, ns, pointer),
                (None, None) => self.fail(pointer, "required field is missing"),
            };
            pointer.truncate(len);
            match value {
                Some(v) => fields.push((field.name.clone(), v)),
                None => ok = false,
            }
        }
        ok.then_some(Value::Record(fields))
    }

    fn union(
        &mut self,
        json: Json,
        variants: &[Schema],
        ns: Option<&str>,
        pointer: &mut String,
    ) -> Option<Value> {
        if json.is_null() {
            return match variants.iter().position(|s| matches!(s, Schema::Null)) {
                Some(i) => Some(Value::Union(i as u32, Box::new(Value::Null))),
                None => self.fail(pointer, "must not be null"),
            };
        }
        let non_null = || {
            variants
                .iter()
                .enumerate()
                .filter(|(_, s)| !matches!(s, Schema::Null))
        };
        // The common `["null", T]`: convert in place, and T's own errors say the most. Checked without collecting
        // the branches, since every optional field of every event comes through here.
        let mut branches = non_null();
        if let (Some((i, branch)), None) = (branches.next(), branches.next()) {
            let v = self.convert(json, branch, ns, pointer)?;
            return Some(Value::Union(i as u32, Box::new(v)));
        }
        // Each branch is tried on its own converter, so a branch that does not fit leaves no errors behind.
        let candidates: Vec<(usize, &Schema)> = non_null().collect();
        let mut first_errors = None;
        for &(i, branch) in &candidates {
            let mut trial = Converter::new(self.names, self.limits);
            let value = trial.convert(json.clone(), branch, ns, pointer);
            match value {
                Some(v) if trial.errors.is_empty() => {
                    return Some(Value::Union(i as u32, Box::new(v)));
                }
                _ => {
                    if first_errors.is_none() {
                        first_errors = Some(trial.errors);
                    }
                }
            }
        }
        match (candidates.len(), first_errors) {
            // One real branch (the common `["null", T]`): its own errors say the most.
            (1, Some(errors)) => {
                self.errors.extend(errors);
                None
            }
            _ => {
                let wanted: Vec<&str> = candidates.iter().map(|(_, s)| expected(s)).collect();
                let msg = format!(
                    "expected one of: {}; got {}",
                    wanted.join(" | "),
                    kind(&json)
                );
                self.fail(pointer, msg)
            }
        }
    }
}
