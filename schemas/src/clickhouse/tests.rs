//! The mapping, DDL and RowBinary writer against the bundled schemas and hand-made ones.

use apache_avro::types::Value;

use super::rowbinary::{decimal_text, write, write_varint};
use super::transcode::TranscodeError;
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
            dedup_window: None,
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
        dedup_window: None,
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
        0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11, 0x00, 0xff, 0xee, 0xdd, 0xcc, 0xbb, 0xaa, 0x99,
        0x88,
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

const MODERN: &str = r#"{"type":"record","name":"M","namespace":"t","fields":[
    {"name":"id","type":"string"},
    {"name":"ts","type":{"type":"long","logicalType":"timestamp-millis"}},
    {"name":"us","type":{"type":"long","logicalType":"timestamp-micros"}},
    {"name":"ok","type":"boolean"},
    {"name":"e","type":{"type":"enum","name":"Color","symbols":["RED","GREEN"]}},
    {"name":"maybe_e","type":["null","Color"],"default":null},
    {"name":"dec","type":{"type":"bytes","logicalType":"decimal","precision":9,"scale":2}},
    {"name":"big","type":{"type":"bytes","logicalType":"decimal","precision":30,"scale":4}},
    {"name":"tags","type":{"type":"map","values":"long"}},
    {"name":"maybe_tags","type":["null",{"type":"map","values":"string"}],"default":null}
]}"#;

fn modern_plan() -> RowPlan {
    RowPlan::for_server(
        &Schema::parse_str(MODERN).expect("parses"),
        Capabilities::CURRENT,
    )
    .expect("maps")
}

fn legacy_plan() -> RowPlan {
    RowPlan::from_schema(&Schema::parse_str(MODERN).expect("parses")).expect("maps")
}

fn typed(plan: &RowPlan) -> Vec<(String, String)> {
    plan.columns().into_iter().map(|c| (c.name, c.ty)).collect()
}

#[test]
fn a_current_server_gets_native_types() {
    let types: Vec<String> = modern_plan().columns().into_iter().map(|c| c.ty).collect();
    assert_eq!(
        types,
        [
            "String",
            "DateTime64(3, 'UTC')",
            "DateTime64(6, 'UTC')",
            "Bool",
            "LowCardinality(String)",
            "LowCardinality(Nullable(String))",
            "Decimal(9, 2)",
            "Decimal(30, 4)",
            "Map(String, Int64)",
            "Map(String, String)",
        ]
    );
    let legacy: Vec<String> = legacy_plan().columns().into_iter().map(|c| c.ty).collect();
    assert_eq!(
        legacy,
        [
            "String",
            "DateTime",
            "DateTime",
            "UInt8",
            "String",
            "Nullable(String)",
            "String",
            "String",
            "Array(String)",
            "Array(Int64)",
            "Array(String)",
            "Array(String)",
        ]
    );
    let spec = TableSpec {
        table: "db.m",
        order_by: &["id".to_string()],
        partition_by: Some("ts"),
        dedup_window: None,
    };
    assert!(
        modern_plan()
            .create_table_sql(&spec)
            .expect("sql")
            .contains("PARTITION BY toYYYYMM(`ts`)"),
        "DateTime64 partitions by month too"
    );
}

#[test]
fn a_table_created_on_an_old_server_keeps_its_columns() {
    let modern = modern_plan();
    // Created by 18.16, then the server was upgraded: every field is written as the table holds it.
    assert_eq!(
        typed(&modern.fit(&typed(&legacy_plan()))),
        typed(&legacy_plan())
    );
    // Created on the current server: nothing changes.
    assert_eq!(typed(&modern.fit(&typed(&modern))), typed(&modern));
    // A legacy table missing a field: the old fields keep their types, the new one gets the native type.
    let mut old = typed(&legacy_plan());
    old.retain(|(n, _)| n != "us");
    let fitted = typed(&modern.fit(&old));
    assert!(fitted.contains(&("ts".into(), "DateTime".into())));
    assert!(fitted.contains(&("us".into(), "DateTime64(6, 'UTC')".into())));
    // ClickHouse's own spacing of type names does not matter.
    let spaced: Vec<(String, String)> = typed(&legacy_plan())
        .into_iter()
        .map(|(n, t)| (n, t.replace(',', " , ")))
        .collect();
    assert_eq!(typed(&modern.fit(&spaced)), typed(&legacy_plan()));
}

#[test]
fn native_values_are_written_as_clickhouse_reads_them() {
    let mut out = Vec::new();
    // Milliseconds survive: 1.234 s after the epoch is 1234 ticks of DateTime64(3).
    write(
        &Enc::DateTime64(3),
        &Value::TimestampMillis(1_234),
        "ts",
        &mut out,
    )
    .expect("fits");
    assert_eq!(out, 1_234i64.to_le_bytes());
    out.clear();
    write(
        &Enc::DateTime64(6),
        &Value::TimestampMillis(-1),
        "ts",
        &mut out,
    )
    .expect("1969 fits");
    assert_eq!(out, (-1_000i64).to_le_bytes());
    out.clear();
    let too_late = Value::TimestampMillis(10_413_792_000_000);
    assert!(write(&Enc::DateTime64(3), &too_late, "ts", &mut out).is_err());
    assert!(out.is_empty());
    // 12.50 as Decimal(9, 2): the unscaled 1250 in 4 bytes; -12.50 in 16 bytes for precision 30.
    let dec = |b: &[u8]| Value::Decimal(apache_avro::Decimal::from(b.to_vec()));
    let d9 = Enc::DecimalBin {
        precision: 9,
        scale: 2,
    };
    write(&d9, &dec(&[0x04, 0xe2]), "dec", &mut out).expect("fits");
    assert_eq!(out, 1_250i32.to_le_bytes());
    out.clear();
    let d30 = Enc::DecimalBin {
        precision: 30,
        scale: 2,
    };
    write(&d30, &dec(&[0xfb, 0x1e]), "dec", &mut out).expect("fits");
    assert_eq!(out, (-1_250i128).to_le_bytes());
    out.clear();
    // 10 digits do not fit Decimal(9, _).
    assert!(write(&d9, &dec(&[0x02, 0x54, 0x0b, 0xe4, 0x00]), "dec", &mut out).is_err());
    // A Map is written like the array of pairs it is on the wire, keys sorted.
    let map = Value::Map(
        [
            ("b".to_string(), Value::Long(2)),
            ("a".to_string(), Value::Long(1)),
        ]
        .into_iter()
        .collect(),
    );
    write(&Enc::Map(Box::new(Enc::I64)), &map, "tags", &mut out).expect("fits");
    let mut want = vec![2, 1, b'a'];
    want.extend_from_slice(&1i64.to_le_bytes());
    want.extend_from_slice(&[1, b'b']);
    want.extend_from_slice(&2i64.to_le_bytes());
    assert_eq!(out, want);
}

/// Avro bytes of `value` written with `schema`.
fn avro_bytes(schema: &Schema, value: Value) -> Vec<u8> {
    apache_avro::writer::datum::GenericDatumWriter::builder(schema)
        .build()
        .expect("writer")
        .write_value_to_vec(value)
        .expect("encodes")
}

const EVERY_TYPE: &str = r#"{"type":"record","name":"All","namespace":"t","fields":[
    {"name":"id","type":{"type":"string","logicalType":"uuid"}},
    {"name":"ts","type":{"type":"long","logicalType":"timestamp-millis"}},
    {"name":"us","type":{"type":"long","logicalType":"timestamp-micros"}},
    {"name":"b","type":"boolean"},{"name":"i","type":"int"},{"name":"l","type":"long"},
    {"name":"f","type":"float"},{"name":"d","type":"double"},{"name":"by","type":"bytes"},
    {"name":"s","type":"string"},
    {"name":"e","type":{"type":"enum","name":"Color","symbols":["RED","GREEN"]}},
    {"name":"maybe_e","type":["null","Color"],"default":null},
    {"name":"fx","type":{"type":"fixed","name":"Four","size":4}},
    {"name":"day","type":{"type":"int","logicalType":"date"}},
    {"name":"dec","type":{"type":"bytes","logicalType":"decimal","precision":9,"scale":2}},
    {"name":"opt","type":["null","long"],"default":null},
    {"name":"opt_rev","type":["string","null"]},
    {"name":"arr","type":{"type":"array","items":["null","long"]}},
    {"name":"nested","type":{"type":"record","name":"Inner","fields":[{"name":"x","type":"int"},{"name":"m","type":{"type":"map","values":"int"}}]}},
    {"name":"maybe_arr","type":["null",{"type":"array","items":"string"}],"default":null},
    {"name":"tags","type":{"type":"map","values":"string"}},
    {"name":"maybe_tags","type":["null",{"type":"map","values":"long"}],"default":null},
    {"name":"again","type":"Inner"}
]}"#;

fn every_type_value(variant: u8) -> Value {
    let map = |pairs: &[(&str, Value)]| {
        Value::Map(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect(),
        )
    };
    let null = || Value::Union(0, Box::new(Value::Null));
    let inner = Value::Record(vec![
        ("x".into(), Value::Int(3)),
        (
            "m".into(),
            map(&[
                ("b", Value::Int(2)),
                ("a", Value::Int(1)),
                ("c", Value::Int(-7)),
            ]),
        ),
    ]);
    Value::Record(vec![
        (
            "id".into(),
            Value::Uuid(
                uuid::Uuid::parse_str("00112233-4455-6677-8899-aabbccddeeff").expect("uuid"),
            ),
        ),
        ("ts".into(), Value::TimestampMillis(1_700_000_000_123)),
        ("us".into(), Value::TimestampMicros(1_700_000_000_123_456)),
        ("b".into(), Value::Boolean(variant == 0)),
        ("i".into(), Value::Int(-5 - i32::from(variant))),
        ("l".into(), Value::Long(1 << 40)),
        ("f".into(), Value::Float(1.5)),
        ("d".into(), Value::Double(-2.25)),
        ("by".into(), Value::Bytes(vec![0, 159, 146, 150])),
        ("s".into(), Value::String("héllo 🚀".into())),
        ("e".into(), Value::Enum(1, "GREEN".into())),
        (
            "maybe_e".into(),
            if variant == 0 {
                null()
            } else {
                Value::Union(1, Box::new(Value::Enum(0, "RED".into())))
            },
        ),
        ("fx".into(), Value::Fixed(4, b"abcd".to_vec())),
        ("day".into(), Value::Date(19_000)),
        (
            "dec".into(),
            Value::Decimal(apache_avro::Decimal::from(vec![0xfb, 0x1e])),
        ),
        (
            "opt".into(),
            if variant == 0 {
                Value::Union(1, Box::new(Value::Long(9)))
            } else {
                null()
            },
        ),
        (
            "opt_rev".into(),
            if variant == 0 {
                Value::Union(1, Box::new(Value::Null))
            } else {
                Value::Union(0, Box::new(Value::String("x".into())))
            },
        ),
        (
            "arr".into(),
            Value::Array(vec![null(), Value::Union(1, Box::new(Value::Long(7)))]),
        ),
        ("nested".into(), inner.clone()),
        (
            "maybe_arr".into(),
            if variant == 0 {
                null()
            } else {
                Value::Union(1, Box::new(Value::Array(vec![Value::String("q".into())])))
            },
        ),
        (
            "tags".into(),
            map(&[
                ("z", Value::String("1".into())),
                ("y", Value::String("2".into())),
                ("", Value::String("e".into())),
            ]),
        ),
        (
            "maybe_tags".into(),
            if variant == 0 {
                null()
            } else {
                Value::Union(
                    1,
                    Box::new(map(&[("k", Value::Long(5)), ("a", Value::Long(-1))])),
                )
            },
        ),
        ("again".into(), inner),
    ])
}

#[test]
fn the_transcoder_writes_what_the_value_path_writes_on_both_mappings() {
    let schema = Schema::parse_str(EVERY_TYPE).expect("parses");
    for caps in [Capabilities::LEGACY, Capabilities::CURRENT] {
        for plan in [
            RowPlan::for_server(&schema, caps).expect("maps"),
            RowPlan::for_server(&schema, caps)
                .expect("maps")
                .with_source_columns(),
        ] {
            let transcoder = plan.transcoder(&schema).expect("every field is covered");
            for variant in [0, 1] {
                let value = every_type_value(variant);
                let avro = avro_bytes(&schema, value.clone());
                let (mut by_value, mut by_bytes) = (Vec::new(), Vec::new());
                plan.encode(&value, &mut by_value).expect("value path");
                transcoder
                    .transcode(&avro, &mut by_bytes)
                    .expect("transcodes");
                assert_eq!(by_bytes, by_value, "{caps:?} variant {variant}");
            }
        }
    }
    // A plan fitted to a legacy table still transcodes, field by field.
    let current = RowPlan::for_server(&schema, Capabilities::CURRENT).expect("maps");
    let legacy = RowPlan::from_schema(&schema).expect("maps");
    let existing: Vec<(String, String)> = legacy
        .columns()
        .into_iter()
        .map(|c| (c.name, c.ty))
        .collect();
    let fitted = current.fit(&existing);
    let value = every_type_value(1);
    let (mut a, mut b) = (Vec::new(), Vec::new());
    fitted.encode(&value, &mut a).expect("value path");
    fitted
        .transcoder(&schema)
        .expect("covered")
        .transcode(&avro_bytes(&schema, value), &mut b)
        .expect("transcodes");
    assert_eq!(a, b);
}

#[test]
fn the_transcoder_refuses_bad_bytes_and_leaves_the_buffer_as_it_was() {
    let schema = Schema::parse_str(EVERY_TYPE).expect("parses");
    let plan = RowPlan::from_schema(&schema).expect("maps");
    let t = plan.transcoder(&schema).expect("covered");
    let good = avro_bytes(&schema, every_type_value(0));
    let mut out = vec![42];
    for cut in [0, 1, 5, good.len() / 2, good.len() - 1] {
        assert!(t.transcode(&good[..cut], &mut out).is_err(), "cut at {cut}");
        assert_eq!(out, [42]);
    }
    let mut long = good.clone();
    long.push(0);
    assert_eq!(
        t.transcode(&long, &mut out),
        Err(TranscodeError::Trailing(1))
    );
    // A timestamp before 1970 does not fit DateTime: the value path calls that unrepresentable too.
    let mut early = every_type_value(0);
    if let Value::Record(fields) = &mut early {
        fields[1].1 = Value::TimestampMillis(-1_000);
    }
    assert!(matches!(
        t.transcode(&avro_bytes(&schema, early), &mut out),
        Err(TranscodeError::Unrepresentable(_))
    ));
    assert_eq!(out, [42]);
}

#[test]
fn shapes_only_the_value_path_writes_get_no_transcoder() {
    let schema = Schema::parse_str(
        r#"{"type":"record","name":"U","fields":[{"name":"either","type":["int","string"]}]}"#,
    )
    .expect("parses");
    let plan = RowPlan::from_schema(&schema).expect("maps");
    assert!(plan.transcoder(&schema).is_none());
    let other =
        Schema::parse_str(r#"{"type":"record","name":"V","fields":[{"name":"x","type":"int"}]}"#)
            .expect("parses");
    assert!(plan.transcoder(&other).is_none(), "not the plan's schema");
}

#[test]
fn cluster_tables_are_replicated_locals_under_a_distributed_table() {
    let order = ["tenant".to_string(), "event_id".to_string()];
    let cluster = super::ClusterTable {
        name: "sluice".into(),
        local: "sluice.events_local".into(),
        zk_path: "/clickhouse/tables/{shard}/sluice/events_local".into(),
    };
    let spec = TableSpec {
        table: "sluice.events",
        order_by: &order,
        partition_by: Some("occurred_at"),
        dedup_window: Some(1000),
    };
    let local = event_plan()
        .create_replicated_sql(&spec, &cluster, 1000, false)
        .expect("ddl");
    assert!(
        !local.contains("COMMENT"),
        "18.16 refuses comments on a replica: {local}"
    );
    assert!(
        local.starts_with("CREATE TABLE IF NOT EXISTS sluice.events_local ON CLUSTER sluice ("),
        "{local}"
    );
    assert!(
        local.ends_with(
            ") ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/sluice/events_local', '{replica}') \
             PARTITION BY toYYYYMM(`occurred_at`) ORDER BY (`tenant`, `event_id`) SETTINGS replicated_deduplication_window = 1000"
        ),
        "{local}"
    );
    assert!(!local.contains("non_replicated"), "{local}");
    assert_eq!(
        super::create_distributed_sql("sluice.events", &cluster),
        "CREATE TABLE IF NOT EXISTS sluice.events ON CLUSTER sluice AS sluice.events_local \
         ENGINE = Distributed(sluice, sluice, events_local)"
    );
}
