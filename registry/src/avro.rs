//! Parsing submitted Avro schemas (with their references) and the identity that decides when two texts are
//! the same schema.

use apache_avro::Schema;
use serde_json::Value;

/// A schema that parsed, with what the registry needs to compare and check it.
#[derive(Debug, Clone)]
pub struct ParsedSchema {
    /// Self-contained form (referenced types inlined), used for compatibility checks.
    pub resolved: Schema,
    /// Avro's Parsing Canonical Form of the schema.
    pub canonical: String,
    /// What two texts must share to be one schema (see [`identity`]).
    pub identity: String,
}

/// Parses `text`, whose named types may come from `dependencies` (referenced schemas, dependencies first).
pub fn parse(text: &str, dependencies: &[&str]) -> Result<ParsedSchema, String> {
    let (schema, resolved) = if dependencies.is_empty() {
        let schema = Schema::parse_str(text).map_err(|e| e.to_string())?;
        (schema.clone(), schema)
    } else {
        let (schema, schemata) =
            Schema::parse_str_with_list(text, dependencies).map_err(|e| e.to_string())?;
        let mut resolved = schema.clone();
        resolved.denormalize(&schemata).map_err(|e| e.to_string())?;
        (schema, resolved)
    };
    let canonical = schema.canonical_form();
    let identity = identity(&schema)?;
    Ok(ParsedSchema {
        resolved,
        canonical,
        identity,
    })
}

/// The key under which a schema gets its id.
///
/// Avro's Parsing Canonical Form is the base, so whitespace, key order, namespace spelling and `doc` never
/// mint a new id. The canonical form also strips `default`, `logicalType` (with decimal precision/scale) and
/// `aliases`, yet those change how a reader resolves data: a field with a default is backward compatible,
/// the same field without one is not. Keying by the bare canonical form would hand the second the first's
/// id and stored text, so the identity is the parsed schema with only `doc` removed, keys sorted.
fn identity(schema: &Schema) -> Result<String, String> {
    let json = serde_json::to_value(schema).map_err(|e| e.to_string())?;
    let mut out = String::new();
    write_sorted(&json, true, &mut out);
    Ok(out)
}

/// Compact JSON with object keys sorted; `strip_doc` is off inside `default` values, which are data.
fn write_sorted(value: &Value, strip_doc: bool, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map
                .keys()
                .filter(|k| !(strip_doc && k.as_str() == "doc"))
                .collect();
            keys.sort();
            out.push('{');
            for (i, key) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(key.clone()).to_string());
                out.push(':');
                if let Some(v) = map.get(key) {
                    write_sorted(v, strip_doc && key != "default", out);
                }
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_sorted(v, strip_doc, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(text: &str) -> String {
        parse(text, &[]).expect("parses").identity
    }

    #[test]
    fn whitespace_key_order_namespace_and_doc_do_not_matter() {
        let a = r#"{"type":"record","name":"ns.R","fields":[{"name":"a","type":"int"}]}"#;
        let b = r#"{ "fields" : [ { "type" : "int", "name" : "a", "doc": "why" } ],
                     "namespace": "ns", "name": "R", "type": "record", "doc": "a record" }"#;
        assert_eq!(id(a), id(b));
        assert_eq!(
            parse(a, &[]).expect("a").canonical,
            parse(b, &[]).expect("b").canonical
        );
    }

    #[test]
    fn defaults_and_logical_types_do_matter() {
        let plain = r#"{"type":"record","name":"R","fields":[{"name":"a","type":"int"}]}"#;
        let with_default =
            r#"{"type":"record","name":"R","fields":[{"name":"a","type":"int","default":1}]}"#;
        let date = r#"{"type":"record","name":"R","fields":[{"name":"a","type":{"type":"int","logicalType":"date"}}]}"#;
        // Same canonical form, different schemas.
        assert_eq!(
            parse(plain, &[]).expect("p").canonical,
            parse(with_default, &[]).expect("d").canonical
        );
        assert_ne!(id(plain), id(with_default));
        assert_ne!(id(plain), id(date));
    }

    #[test]
    fn doc_inside_a_default_value_is_data() {
        let r = |d: &str| {
            format!(
                r#"{{"type":"record","name":"R","fields":[{{"name":"m","type":{{"type":"map","values":"string"}},"default":{{"doc":"{d}"}}}}]}}"#
            )
        };
        assert_ne!(id(&r("x")), id(&r("y")));
    }

    #[test]
    fn bundled_schemas_keep_their_identity_when_respelled() {
        for bundled in sluice_schemas::catalog::ALL {
            let first = parse(bundled.text, &[]).expect("bundled schema parses");
            // The same schema as compact JSON with keys in another order.
            let value: Value = serde_json::from_str(bundled.text).expect("json");
            let respelled = parse(&value.to_string(), &[]).expect("respelled parses");
            assert_eq!(first.identity, respelled.identity, "{}", bundled.name);
        }
    }

    #[test]
    fn primitive_schemas_parse() {
        assert_eq!(
            parse(r#""string""#, &[]).expect("parses").canonical,
            r#""string""#
        );
    }

    #[test]
    fn invalid_schemas_are_rejected() {
        assert!(parse("{", &[]).is_err());
        assert!(parse(r#"{"type":"record","name":"R"}"#, &[]).is_err());
        assert!(parse(r#""nosuchtype""#, &[]).is_err());
    }

    #[test]
    fn references_resolve_and_inline_for_checks() {
        let dep = r#"{"type":"record","name":"ns.Inner","fields":[{"name":"x","type":"int"}]}"#;
        let outer =
            r#"{"type":"record","name":"ns.Outer","fields":[{"name":"i","type":"ns.Inner"}]}"#;
        assert!(
            parse(outer, &[]).is_err(),
            "unknown type without the reference"
        );
        let p = parse(outer, &[dep]).expect("parses with the reference");
        let inlined = serde_json::to_string(&p.resolved).expect("serialises");
        assert!(inlined.contains(r#""name":"x""#), "{inlined}");
        assert!(
            !p.identity.contains(r#""name":"x""#),
            "identity names the reference, not its body"
        );
    }
}
