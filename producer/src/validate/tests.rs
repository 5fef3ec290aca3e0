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

const TIMES: &str = r#"{
    "type": "record", "name": "Times", "namespace": "t",
    "fields": [
        {"name": "ms", "type": {"type": "long", "logicalType": "timestamp-millis"}, "default": 0},
        {"name": "us", "type": {"type": "long", "logicalType": "timestamp-micros"}, "default": 0},
        {"name": "ns", "type": {"type": "long", "logicalType": "timestamp-nanos"}, "default": 0},
        {"name": "local_ms", "type": {"type": "long", "logicalType": "local-timestamp-millis"}, "default": 0},
        {"name": "local_us", "type": {"type": "long", "logicalType": "local-timestamp-micros"}, "default": 0},
        {"name": "local_ns", "type": {"type": "long", "logicalType": "local-timestamp-nanos"}, "default": 0},
        {"name": "opt", "type": ["null", {"type": "long", "logicalType": "timestamp-millis"}], "default": null},
        {"name": "day", "type": {"type": "int", "logicalType": "date"}, "default": 0}
    ]
}"#;

const TS_RANGE: &str =
    "is outside what ClickHouse can store (1970-01-01T00:00:00Z to 2106-02-07T06:28:15Z)";
const DATE_RANGE: &str = "is outside what ClickHouse can store (1970-01-01 to 2149-06-06)";

/// The one field of a `TIMES` record converted from `{field: value}`.
fn time_field(field: &str, value: Json) -> Result<Value, Vec<(String, String)>> {
    match check(TIMES, json!({ field: value })) {
        Ok(Value::Record(fields)) => Ok(fields
            .into_iter()
            .find(|(k, _)| k == field)
            .map(|(_, v)| v)
            .expect("field present")),
        Ok(other) => panic!("record expected, got {other:?}"),
        Err(errs) => Err(errs.into_iter().map(|e| (e.pointer, e.message)).collect()),
    }
}

#[test]
fn timestamps_before_1970_are_refused_as_strings_and_integers() {
    let mut e = good_event();
    e["occurred_at"] = json!("1969-12-31T23:59:59Z");
    assert_eq!(
        errors(EVENT, e),
        [(
            "/occurred_at".into(),
            format!("timestamp 1969-12-31T23:59:59Z {TS_RANGE}")
        )]
    );
    let mut e = good_event();
    e["occurred_at"] = json!(-1000);
    assert_eq!(
        errors(EVENT, e),
        [(
            "/occurred_at".into(),
            format!("timestamp -1000 (1969-12-31T23:59:59Z) {TS_RANGE}")
        )]
    );
    // One millisecond before the epoch, and the epoch reached through another offset.
    assert_eq!(
        time_field("ms", json!(-1)),
        Err(vec![(
            "/ms".into(),
            format!("timestamp -1 (1969-12-31T23:59:59.999Z) {TS_RANGE}")
        )])
    );
    assert_eq!(
        time_field("ms", json!("1970-01-01T00:59:59.999+01:00")),
        Err(vec![(
            "/ms".into(),
            format!("timestamp 1970-01-01T00:59:59.999+01:00 {TS_RANGE}")
        )])
    );
    for field in ["us", "ns", "local_ms", "local_us", "local_ns", "opt"] {
        let errs = time_field(field, json!(-1)).expect_err(field);
        assert_eq!(errs.len(), 1, "{field}: {errs:?}");
        assert_eq!(errs[0].0, format!("/{field}"));
        assert!(errs[0].1.ends_with(TS_RANGE), "{field}: {}", errs[0].1);
    }
    assert_eq!(
        time_field("local_us", json!("1969-12-31T23:59:59")),
        Err(vec![(
            "/local_us".into(),
            format!("timestamp 1969-12-31T23:59:59 {TS_RANGE}")
        )])
    );
}

#[test]
fn timestamps_after_2106_are_refused() {
    let mut e = good_event();
    e["occurred_at"] = json!("2107-01-01T00:00:00Z");
    assert_eq!(
        errors(EVENT, e),
        [(
            "/occurred_at".into(),
            format!("timestamp 2107-01-01T00:00:00Z {TS_RANGE}")
        )]
    );
    assert_eq!(
        time_field("ms", json!(4_294_967_296_000i64)),
        Err(vec![(
            "/ms".into(),
            format!("timestamp 4294967296000 (2106-02-07T06:28:16Z) {TS_RANGE}")
        )])
    );
    // The first value past the last storable second, in every unit.
    for (field, over) in [
        ("us", 4_294_967_296_000_000i64),
        ("ns", 4_294_967_296_000_000_000),
        ("local_ms", 4_294_967_296_000),
        ("local_us", 4_294_967_296_000_000),
        ("local_ns", 4_294_967_296_000_000_000),
    ] {
        let errs = time_field(field, json!(over)).expect_err(field);
        assert!(errs[0].1.ends_with(TS_RANGE), "{field}: {errs:?}");
        let text = if field.starts_with("local") {
            "2106-02-07T06:28:16"
        } else {
            "2106-02-07T06:28:16Z"
        };
        let errs = time_field(field, json!(text)).expect_err(field);
        assert!(errs[0].1.ends_with(TS_RANGE), "{field}: {errs:?}");
    }
    // Far beyond chrono's and an i64 of nanoseconds' range: still the range message, never a panic.
    let errs = time_field("ns", json!("9999-12-31T23:59:59Z")).expect_err("far");
    assert_eq!(
        errs[0].1,
        format!("timestamp 9999-12-31T23:59:59Z {TS_RANGE}")
    );
    let errs = time_field("ms", json!(i64::MAX)).expect_err("far");
    assert_eq!(errs[0].1, format!("timestamp {} {TS_RANGE}", i64::MAX));
}

#[test]
fn the_exact_timestamp_bounds_are_accepted() {
    let ms = 4_294_967_295_999i64;
    let us = 4_294_967_295_999_999i64;
    let ns = 4_294_967_295_999_999_999i64;
    type Ctor = fn(i64) -> Value;
    let cases: [(&str, &str, i64, Ctor); 6] = [
        ("ms", "2106-02-07T06:28:15.999Z", ms, Value::TimestampMillis),
        (
            "us",
            "2106-02-07T06:28:15.999999Z",
            us,
            Value::TimestampMicros,
        ),
        (
            "ns",
            "2106-02-07T06:28:15.999999999Z",
            ns,
            Value::TimestampNanos,
        ),
        (
            "local_ms",
            "2106-02-07T06:28:15.999",
            ms,
            Value::LocalTimestampMillis,
        ),
        (
            "local_us",
            "2106-02-07T06:28:15.999999",
            us,
            Value::LocalTimestampMicros,
        ),
        (
            "local_ns",
            "2106-02-07T06:28:15.999999999",
            ns,
            Value::LocalTimestampNanos,
        ),
    ];
    for (field, last, max, value) in cases {
        assert_eq!(time_field(field, json!(last)), Ok(value(max)), "{field}");
        assert_eq!(time_field(field, json!(max)), Ok(value(max)), "{field}");
        let first = if field.starts_with("local") {
            "1970-01-01T00:00:00"
        } else {
            "1970-01-01T00:00:00Z"
        };
        assert_eq!(time_field(field, json!(first)), Ok(value(0)), "{field}");
        assert_eq!(time_field(field, json!(0)), Ok(value(0)), "{field}");
    }
    assert_eq!(
        time_field("ms", json!("1970-01-01T01:00:00+01:00")),
        Ok(Value::TimestampMillis(0))
    );
    assert_eq!(
        time_field("opt", json!("2106-02-07T06:28:15Z")),
        Ok(Value::Union(
            1,
            Box::new(Value::TimestampMillis(4_294_967_295_000))
        ))
    );
}

#[test]
fn dates_outside_days_0_to_65535_are_refused() {
    assert_eq!(
        time_field("day", json!(-1)),
        Err(vec![(
            "/day".into(),
            format!("date -1 (1969-12-31) {DATE_RANGE}")
        )])
    );
    assert_eq!(
        time_field("day", json!(65_536)),
        Err(vec![(
            "/day".into(),
            format!("date 65536 (2149-06-07) {DATE_RANGE}")
        )])
    );
    assert_eq!(
        time_field("day", json!("1969-12-31")),
        Err(vec![(
            "/day".into(),
            format!("date 1969-12-31 {DATE_RANGE}")
        )])
    );
    assert_eq!(
        time_field("day", json!("2149-06-07")),
        Err(vec![(
            "/day".into(),
            format!("date 2149-06-07 {DATE_RANGE}")
        )])
    );
    assert_eq!(time_field("day", json!(0)), Ok(Value::Date(0)));
    assert_eq!(time_field("day", json!("1970-01-01")), Ok(Value::Date(0)));
    assert_eq!(time_field("day", json!(65_535)), Ok(Value::Date(65_535)));
    assert_eq!(
        time_field("day", json!("2149-06-06")),
        Ok(Value::Date(65_535))
    );
    assert!(time_field("day", json!(1i64 << 40)).is_err_and(|e| e[0].1.contains("32-bit")));
}

#[test]
fn range_helpers() {
    assert_eq!(timestamp_bounds(1_000), (0, 4_294_967_295_999));
    assert_eq!(
        timestamp_bounds(1_000_000_000),
        (0, 4_294_967_295_999_999_999)
    );
    assert_eq!(
        epoch_rfc3339(-1, 1_000_000).as_deref(),
        Some("1969-12-31T23:59:59.999999Z")
    );
    assert_eq!(epoch_rfc3339(i64::MAX, 1_000), None);
    assert_eq!(
        timestamp_range_text(),
        "1970-01-01T00:00:00Z to 2106-02-07T06:28:15Z"
    );
    assert_eq!(date_range_text(), "1970-01-01 to 2149-06-06");
}
