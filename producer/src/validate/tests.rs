//! Conversion tests: the bundled event schema end to end, every schema feature, and the error pointers.

use super::logical::{minimal_twos_complement, parse_decimal};
use super::*;
use apache_avro::schema::ResolvedSchema;
use serde_json::json;

const LIMITS: ValidateLimits = ValidateLimits {
    max_string_bytes: 16,
};

fn check(schema: &str, json: Json) -> Result<Value, Vec<FieldError>> {
    let schema = Schema::parse_str(schema).expect("schema parses");
    let resolved = ResolvedSchema::new(&schema).expect("resolves");
    to_avro(json, &schema, resolved.get_names(), LIMITS)
}

fn errors(schema: &str, json: Json) -> Vec<(String, String)> {
    check(schema, json)
        .expect_err("should fail")
        .into_iter()
        .map(|e| (e.pointer, e.message))
        .collect()
}

const EVENT: &str = sluice_schemas::catalog::EVENT.text;

fn good_event() -> Json {
    json!({
        "event_id": "0190b8a4-6c3e-7a1b-9c2d-3e4f5a6b7c8d",
        "tenant": "t",
        "event_type": "page_view",
        "occurred_at": "2026-11-22T10:00:00.123Z",
        "received_at": 1_700_000_000_000i64,
        "user_id": "u-1",
        "properties": {"path": "/p"}
    })
}

#[test]
fn event_converts_with_defaults_and_logical_types() {
    let v = check(EVENT, good_event()).expect("valid");
    let Value::Record(fields) = v else {
        panic!("record expected")
    };
    let get = |n: &str| {
        fields
            .iter()
            .find(|(k, _)| k == n)
            .map(|(_, v)| v.clone())
            .expect("field present")
    };
    assert_eq!(
        get("occurred_at"),
        Value::TimestampMillis(1_795_341_600_123)
    );
    assert_eq!(
        get("received_at"),
        Value::TimestampMillis(1_700_000_000_000)
    );
    assert!(matches!(get("event_id"), Value::Uuid(_)));
    assert_eq!(get("source"), Value::Union(0, Box::new(Value::Null)));
    assert_eq!(
        get("user_id"),
        Value::Union(1, Box::new(Value::String("u-1".into())))
    );
    // Field order follows the schema, as the encoder needs.
    let names: Vec<&str> = fields.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(names[..3], ["event_id", "tenant", "event_type"]);
    let mut no_props = good_event();
    no_props
        .as_object_mut()
        .expect("object")
        .remove("properties");
    let Value::Record(fields) = check(EVENT, no_props).expect("valid") else {
        panic!()
    };
    assert_eq!(
        fields.last().map(|f| f.1.clone()),
        Some(Value::Map(HashMap::new()))
    );
}

#[test]
fn every_problem_is_reported_with_its_pointer() {
    let mut e = good_event();
    let obj = e.as_object_mut().expect("object");
    obj.remove("event_type");
    obj.insert("colour".into(), json!("red"));
    obj.insert("occurred_at".into(), json!("yesterday"));
    obj.insert("user_id".into(), json!(42));
    obj.insert("properties".into(), json!({"a/b": 1, "ok": "x"}));
    obj.insert("source".into(), json!("x".repeat(17)));
    let errs = errors(EVENT, e);
    let pointers: Vec<&str> = errs.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(
        pointers,
        [
            "/colour",
            "/event_type",
            "/occurred_at",
            "/source",
            "/user_id",
            "/properties/a~1b"
        ],
        "{errs:?}"
    );
    assert_eq!(errs[0].1, "unknown field");
    assert_eq!(errs[1].1, "required field is missing");
    assert!(errs[2].1.contains("RFC 3339"), "{}", errs[2].1);
    assert!(
        errs[3].1.contains("longer than the limit of 16"),
        "{}",
        errs[3].1
    );
    assert_eq!(errs[4].1, "expected a string, got number");
    assert_eq!(errs[5].1, "expected a string, got number");
}

#[test]
fn wrong_top_level_and_null_for_required() {
    assert_eq!(
        errors(EVENT, json!([1])),
        [("".into(), "expected an object, got array".into())]
    );
    let mut e = good_event();
    e["event_type"] = Json::Null;
    assert_eq!(
        errors(EVENT, e),
        [("/event_type".into(), "expected a string, got null".into())]
    );
    let mut e = good_event();
    e["event_id"] = json!("not-a-uuid");
    assert_eq!(errors(EVENT, e)[0].0, "/event_id");
    let mut e = good_event();
    e["occurred_at"] = json!(1.5);
    assert_eq!(errors(EVENT, e)[0].0, "/occurred_at");
}

const RICH: &str = r#"{
    "type": "record", "name": "Rich", "namespace": "t",
    "fields": [
        {"name": "n", "type": "int"},
        {"name": "tags", "type": {"type": "array", "items": "string"}},
        {"name": "colour", "type": {"type": "enum", "name": "Colour", "symbols": ["RED", "GREEN"]}},
        {"name": "other", "type": ["null", "Colour"], "default": null},
        {"name": "multi", "type": ["null", "long", "string"], "default": null},
        {"name": "day", "type": {"type": "int", "logicalType": "date"}},
        {"name": "price", "type": {"type": "bytes", "logicalType": "decimal", "precision": 6, "scale": 2}},
        {"name": "raw", "type": "bytes", "default": ""},
        {"name": "inner", "type": {"type": "record", "name": "Inner", "fields": [{"name": "x", "type": "double"}]}},
        {"name": "ts_us", "type": {"type": "long", "logicalType": "timestamp-micros"}, "default": 0}
    ]
}"#;

#[test]
fn generic_schema_features() {
    let v = check(
        RICH,
        json!({
            "n": 7, "tags": ["a", "b"], "colour": "GREEN", "other": "RED", "multi": "x",
            "day": "1970-01-03", "price": "-12.5", "raw": "\u{00ff}A", "inner": {"x": 1.5},
            "ts_us": "1970-01-01T00:00:01.000002Z"
        }),
    )
    .expect("valid");
    let Value::Record(f) = v else { panic!() };
    assert_eq!(f[0].1, Value::Int(7));
    assert_eq!(
        f[1].1,
        Value::Array(vec![Value::String("a".into()), Value::String("b".into())])
    );
    assert_eq!(f[2].1, Value::Enum(1, "GREEN".into()));
    assert_eq!(
        f[3].1,
        Value::Union(1, Box::new(Value::Enum(0, "RED".into())))
    );
    assert_eq!(f[4].1, Value::Union(2, Box::new(Value::String("x".into()))));
    assert_eq!(f[5].1, Value::Date(2));
    assert_eq!(
        f[6].1,
        Value::Decimal(apache_avro::Decimal::from(minimal_twos_complement(-1250)))
    );
    assert_eq!(f[7].1, Value::Bytes(vec![0xff, b'A']));
    assert_eq!(
        f[8].1,
        Value::Record(vec![("x".into(), Value::Double(1.5))])
    );
    assert_eq!(f[9].1, Value::TimestampMicros(1_000_002));

    let errs = errors(
        RICH,
        json!({
            "n": 1u64 << 40, "tags": ["a", 2], "colour": "BLUE", "multi": true, "day": "1970-13-01",
            "price": "1.234", "raw": "\u{0100}", "inner": {"x": "1"}
        }),
    );
    let pointers: Vec<&str> = errs.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(
        pointers,
        [
            "/n", "/tags/1", "/colour", "/multi", "/day", "/price", "/raw", "/inner/x"
        ],
        "{errs:?}"
    );
    assert!(
        errs[3]
            .1
            .starts_with("expected one of: an integer | a string"),
        "{}",
        errs[3].1
    );
}

#[test]
fn decimal_helpers() {
    assert_eq!(parse_decimal("12.5", 2), Some(1250));
    assert_eq!(parse_decimal("-0.01", 2), Some(-1));
    assert_eq!(parse_decimal("1.230", 2), Some(123));
    assert_eq!(parse_decimal("1.234", 2), None);
    assert_eq!(parse_decimal("1e3", 2), None);
    assert_eq!(parse_decimal(".", 2), None);
    assert_eq!(minimal_twos_complement(0), vec![0]);
    assert_eq!(minimal_twos_complement(128), vec![0, 128]);
    assert_eq!(minimal_twos_complement(-1), vec![0xff]);
    assert_eq!(minimal_twos_complement(-129), vec![0xff, 0x7f]);
}

#[test]
fn pointer_escaping() {
    let mut p = String::new();
    push_token(&mut p, "a/b~c");
    assert_eq!(p, "/a~1b~0c");
    push_token(&mut p, "plain");
    assert_eq!(p, "/a~1b~0c/plain");
}
