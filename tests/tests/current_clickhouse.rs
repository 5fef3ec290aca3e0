//! The current-server path against the stack's ClickHouse 26.9 server (over its HTTP interface, as in production):
//! the consumer detects the version, its own DDL creates the table with the current mapping, its own RowBinary
//! encoder writes a row of every mapped Avro type, its own INSERT (with the deduplication token and the explicit
//! settings) loads them, and the values read back are exactly the ones sent, milliseconds and microseconds
//! included; the same INSERT repeated leaves one copy.

use std::sync::Arc;

use apache_avro::Schema;
use apache_avro::types::Value;
use sluice_consumer::config::ClickHouseSettings;
use sluice_consumer::decode::{Reader, Shape};
use sluice_consumer::metrics::Metrics;
use sluice_consumer::sink::clickhouse::ClickHouseSink;
use sluice_consumer::sink::clickhouse::ddl::DEDUP_WINDOW;
use sluice_consumer::sink::clickhouse::insert::RowRef;
use sluice_schemas::clickhouse::{Capabilities, TableSpec};
use sluice_tests::{clickhouse, clickhouse_url, unique};
use uuid::Uuid;

const SCHEMA: &str = r#"{"type":"record","name":"All","namespace":"t","fields":[
    {"name":"id","type":{"type":"string","logicalType":"uuid"}},
    {"name":"ts","type":{"type":"long","logicalType":"timestamp-millis"}},
    {"name":"us","type":{"type":"long","logicalType":"timestamp-micros"}},
    {"name":"b","type":"boolean"},{"name":"i","type":"int"},{"name":"l","type":"long"},
    {"name":"f","type":"float"},{"name":"d","type":"double"},{"name":"by","type":"bytes"},
    {"name":"e","type":{"type":"enum","name":"Color","symbols":["RED","GREEN"]}},
    {"name":"maybe_e","type":["null","Color"],"default":null},
    {"name":"fx","type":{"type":"fixed","name":"Four","size":4}},
    {"name":"day","type":{"type":"int","logicalType":"date"}},
    {"name":"dec","type":{"type":"bytes","logicalType":"decimal","precision":9,"scale":2}},
    {"name":"big","type":{"type":"bytes","logicalType":"decimal","precision":30,"scale":4}},
    {"name":"opt","type":["null","long"],"default":null},
    {"name":"arr","type":{"type":"array","items":["null","long"]}},
    {"name":"nested","type":{"type":"record","name":"Inner","fields":[{"name":"x","type":"int"},{"name":"m","type":{"type":"map","values":"int"}}]}},
    {"name":"tags","type":{"type":"map","values":"string"}},
    {"name":"maybe_tags","type":["null",{"type":"map","values":"long"}],"default":null},
    {"name":"either","type":["int","string"]}
]}"#;

fn map(pairs: &[(&str, Value)]) -> Value {
    Value::Map(
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect(),
    )
}

fn row(id: &str, maybe_e: Option<u32>, maybe_tags: Option<Value>) -> anyhow::Result<Value> {
    let union = |v: Option<Value>| match v {
        Some(v) => Value::Union(1, Box::new(v)),
        None => Value::Union(0, Box::new(Value::Null)),
    };
    Ok(Value::Record(vec![
        ("id".into(), Value::Uuid(Uuid::parse_str(id)?)),
        ("ts".into(), Value::TimestampMillis(1_700_000_000_123)),
        ("us".into(), Value::TimestampMicros(1_700_000_000_123_456)),
        ("b".into(), Value::Boolean(true)),
        ("i".into(), Value::Int(-5)),
        ("l".into(), Value::Long(1 << 40)),
        ("f".into(), Value::Float(1.5)),
        ("d".into(), Value::Double(-2.25)),
        ("by".into(), Value::Bytes(b"hi".to_vec())),
        ("e".into(), Value::Enum(1, "GREEN".into())),
        (
            "maybe_e".into(),
            union(maybe_e.map(|i| Value::Enum(i, ["RED", "GREEN"][i as usize].into()))),
        ),
        ("fx".into(), Value::Fixed(4, b"abcd".to_vec())),
        ("day".into(), Value::Date(19_000)),
        (
            "dec".into(),
            Value::Decimal(apache_avro::Decimal::from(vec![0x04, 0xe2])),
        ),
        // -12.5000 at scale 4: the unscaled -125000.
        (
            "big".into(),
            Value::Decimal(apache_avro::Decimal::from(vec![0xfe, 0x17, 0xb8])),
        ),
        ("opt".into(), union(Some(Value::Long(9)))),
        (
            "arr".into(),
            Value::Array(vec![
                Value::Union(0, Box::new(Value::Null)),
                Value::Union(1, Box::new(Value::Long(7))),
            ]),
        ),
        (
            "nested".into(),
            Value::Record(vec![
                ("x".into(), Value::Int(3)),
                (
                    "m".into(),
                    map(&[("b", Value::Int(2)), ("a", Value::Int(1))]),
                ),
            ]),
        ),
        (
            "tags".into(),
            map(&[
                ("z", Value::String("1".into())),
                ("y", Value::String("2".into())),
            ]),
        ),
        ("maybe_tags".into(), union(maybe_tags)),
        (
            "either".into(),
            Value::Union(1, Box::new(Value::String("s".into()))),
        ),
    ]))
}

#[tokio::test]
async fn clickhouse_26_reads_back_every_type_and_drops_a_repeated_token() -> anyhow::Result<()> {
    let sink = ClickHouseSink::new(
        &ClickHouseSettings {
            url: clickhouse_url(),
            ..Default::default()
        },
        Metrics::detached(),
    );
    let caps = sink.detect_server().await?;
    let version: String = clickhouse().query("SELECT version()").fetch_one().await?;
    assert!(version.starts_with("26."), "ran on ClickHouse {version}");
    assert_eq!(caps, Capabilities::CURRENT);

    let schema = Arc::new(Schema::parse_str(SCHEMA)?);
    let shape = Shape {
        caps,
        source_columns: true,
    };
    let reader = Reader::for_table(Some(1), Some(1), schema, shape)?;
    let plan = &reader.plan;
    let db = unique("current");
    let table = format!("{db}.all_types");
    let order = ["id".to_string()];
    sink.ensure_table(
        plan,
        TableSpec {
            table: &table,
            order_by: &order,
            partition_by: Some("ts"),
            dedup_window: Some(DEDUP_WINDOW),
        },
    )
    .await?;

    let mut rows = Vec::new();
    let first = row("00112233-4455-6677-8899-aabbccddeeff", None, None)?;
    plan.encode(&first, &mut rows)?;
    plan.encode_source("events", 2, 40, &mut rows);
    let split = rows.len();
    let second = row(
        "ffeeddcc-4455-6677-8899-aabbccddeeff",
        Some(0),
        Some(map(&[("k", Value::Long(5))])),
    )?;
    plan.encode(&second, &mut rows)?;
    plan.encode_source("events", 2, 41, &mut rows);
    let refs = [
        RowRef {
            index: 0,
            bytes: &rows[..split],
        },
        RowRef {
            index: 1,
            bytes: &rows[split..],
        },
    ];
    for _ in 0..3 {
        sink.insert(
            &table,
            &plan.insert_columns(),
            &refs,
            Some("events:2:40-41"),
            2,
        )
        .await?;
    }
    let count: u64 = clickhouse()
        .query(&format!("SELECT count() FROM {table}"))
        .fetch_one()
        .await?;
    assert_eq!(count, 2, "three inserts with one token leave one copy");
    let tsv = reqwest::Client::new()
        .post(clickhouse_url())
        .body(format!(
            "SELECT * FROM {table} ORDER BY id FORMAT TabSeparated"
        ))
        .send()
        .await?
        .text()
        .await?;
    assert_eq!(
        tsv.trim_end(),
        "00112233-4455-6677-8899-aabbccddeeff\t2023-11-14 22:13:20.123\t2023-11-14 22:13:20.123456\ttrue\t-5\t\
         1099511627776\t1.5\t-2.25\thi\tGREEN\t\\N\tabcd\t2022-01-08\t12.5\t-12.5\t9\t[NULL,7]\t(3,[('a',1),('b',2)])\t\
         {'y':'2','z':'1'}\t{}\t\"s\"\tevents\t2\t40\n\
         ffeeddcc-4455-6677-8899-aabbccddeeff\t2023-11-14 22:13:20.123\t2023-11-14 22:13:20.123456\ttrue\t-5\t\
         1099511627776\t1.5\t-2.25\thi\tGREEN\tRED\tabcd\t2022-01-08\t12.5\t-12.5\t9\t[NULL,7]\t(3,[('a',1),('b',2)])\t\
         {'y':'2','z':'1'}\t{'k':5}\t\"s\"\tevents\t2\t41"
    );
    clickhouse()
        .query(&format!("DROP DATABASE {db}"))
        .execute()
        .await?;
    Ok(())
}
