//! Proves the local stack is real: a 4-partition topic on the broker, an idempotent producer, a consumer group that
//! commits, and a table in ClickHouse written and read through the `clickhouse` crate.

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::Context;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use sluice_runtime::kafka::{TopicSpec, ensure_topics};
use sluice_tests::{clickhouse, eventually, kafka_settings, unique};

const PARTITIONS: i32 = 4;
const MESSAGES: usize = 200;

#[tokio::test]
async fn broker_topic_produce_consume_and_commit() -> anyhow::Result<()> {
    let settings = kafka_settings();
    let topic = unique("stack_e2e");
    ensure_topics(
        &settings,
        &[TopicSpec {
            name: &topic,
            partitions: PARTITIONS,
            config: vec![],
        }],
    )
    .await?;
    // A second call must be a no-op, not an error.
    ensure_topics(
        &settings,
        &[TopicSpec {
            name: &topic,
            partitions: PARTITIONS,
            config: vec![],
        }],
    )
    .await?;

    let producer: FutureProducer = settings
        .client_config()
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "5")
        .create()?;
    let mut partitions_written = BTreeSet::new();
    for i in 0..MESSAGES {
        let key = format!("key-{}", i % 16);
        let payload = format!("message-{i}");
        let delivery = producer
            .send(
                FutureRecord::to(&topic).key(&key).payload(&payload),
                Duration::from_secs(10),
            )
            .await
            .map_err(|(e, _)| e)
            .context("produce")?;
        partitions_written.insert(delivery.partition);
    }
    assert!(
        partitions_written.len() > 1,
        "16 keys should spread over several of {PARTITIONS} partitions"
    );

    let group = unique("stack_group");
    let consumer: StreamConsumer = settings
        .client_config()
        .set("group.id", &group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "6000")
        .create()?;
    consumer.subscribe(&[&topic])?;
    let mut seen = BTreeSet::new();
    tokio::time::timeout(Duration::from_secs(60), async {
        while seen.len() < MESSAGES {
            let msg = consumer.recv().await?;
            let body = msg
                .payload_view::<str>()
                .transpose()?
                .unwrap_or_default()
                .to_owned();
            seen.insert(body);
            consumer.commit_message(&msg, CommitMode::Sync)?;
        }
        anyhow::Ok(())
    })
    .await
    .context("consuming every message")??;
    assert_eq!(seen.len(), MESSAGES);

    // The committed offsets, read back from the broker, sit at the end of every partition.
    let mut tpl = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        tpl.add_partition(&topic, p);
    }
    let committed = consumer.committed_offsets(tpl, Duration::from_secs(10))?;
    let mut total = 0;
    for elem in committed.elements() {
        let (low, high) =
            consumer.fetch_watermarks(&topic, elem.partition(), Duration::from_secs(10))?;
        let end = match elem.offset() {
            Offset::Offset(o) => o,
            Offset::Invalid if high == low => low,
            other => anyhow::bail!(
                "partition {} has no committed offset: {other:?}",
                elem.partition()
            ),
        };
        assert_eq!(
            end,
            high,
            "partition {} committed up to its high watermark",
            elem.partition()
        );
        total += high - low;
    }
    assert_eq!(total as usize, MESSAGES);
    Ok(())
}

#[derive(clickhouse::Row, serde::Serialize, serde::Deserialize, Debug, PartialEq)]
struct Row {
    id: u64,
    name: String,
}

#[tokio::test]
async fn clickhouse_create_insert_select() -> anyhow::Result<()> {
    let ch = clickhouse();
    let db = unique("stack_db");
    ch.query(&format!("CREATE DATABASE {db}")).execute().await?;
    let table = format!("{db}.rows");
    ch.query(&format!(
        "CREATE TABLE {table} (id UInt64, name String) ENGINE = MergeTree ORDER BY id"
    ))
    .execute()
    .await?;
    // The crate quotes the insert target as one identifier, so the database goes on the client.
    let mut insert = ch.clone().with_database(&db).insert::<Row>("rows").await?;
    for id in 0..1000u64 {
        insert
            .write(&Row {
                id,
                name: format!("row {id}"),
            })
            .await?;
    }
    insert.end().await?;

    let count = eventually("rows visible", Duration::from_secs(10), || async {
        let n: u64 = ch
            .query(&format!("SELECT count() FROM {table}"))
            .fetch_one()
            .await?;
        Ok((n == 1000).then_some(n))
    })
    .await?;
    assert_eq!(count, 1000);
    let picked: Vec<Row> = ch
        .query(&format!(
            "SELECT id, name FROM {table} WHERE id IN (?, ?) ORDER BY id"
        ))
        .bind(7)
        .bind(999)
        .fetch_all()
        .await?;
    assert_eq!(
        picked,
        vec![
            Row {
                id: 7,
                name: "row 7".into()
            },
            Row {
                id: 999,
                name: "row 999".into()
            }
        ]
    );
    ch.query(&format!("DROP DATABASE {db}")).execute().await?;
    Ok(())
}
