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

/// The stack's ClickHouse (26.9 from chdb-core) killed with SIGKILL in the middle of a stream of deduplicated inserts
/// and restarted on the same data: every insert it acknowledged is there, in whole blocks, and its deduplication
/// window came back with it (every block sent again is dropped), which is what the consumer's exactly-once needs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clickhouse_killed_with_sigkill_keeps_every_acknowledged_block_and_its_tokens()
-> anyhow::Result<()> {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use apache_avro::types::Value;
    use sluice_consumer::config::ClickHouseSettings;
    use sluice_consumer::metrics::Metrics;
    use sluice_consumer::sink::clickhouse::ClickHouseSink;
    use sluice_consumer::sink::clickhouse::ddl::DEDUP_WINDOW;
    use sluice_consumer::sink::clickhouse::insert::RowRef;
    use sluice_schemas::clickhouse::{RowPlan, TableSpec};
    use sluice_tests::clickhouse_node::ClickHouseNode;

    const BLOCKS: usize = 100;
    const ROWS: usize = 500;
    let mut node = ClickHouseNode::start().await?;
    let sink = ClickHouseSink::new(
        &ClickHouseSettings {
            url: node.url(),
            ..Default::default()
        },
        Metrics::detached(),
    );
    let caps = sink.detect_server().await?;
    assert!(caps.dedup_token, "a current server: {caps:?}");
    let schema = apache_avro::Schema::parse_str(
        r#"{"type":"record","name":"R","fields":[{"name":"id","type":"long"},
            {"name":"ts","type":{"type":"long","logicalType":"timestamp-millis"}}]}"#,
    )?;
    let plan = RowPlan::for_server(&schema, caps)?;
    let table = "sluice.killed";
    let order = ["id".to_string()];
    sink.ensure_table(
        &plan,
        TableSpec {
            table,
            order_by: &order,
            partition_by: Some("ts"),
            dedup_window: Some(DEDUP_WINDOW),
        },
    )
    .await?;
    let mut blocks = Vec::new();
    for b in 0..BLOCKS {
        let mut rows = Vec::new();
        for r in 0..ROWS {
            let id = i64::try_from(b * ROWS + r)?;
            let row = Value::Record(vec![
                ("id".into(), Value::Long(id)),
                ("ts".into(), Value::TimestampMillis(1_700_000_000_000 + id)),
            ]);
            let mut bytes = Vec::new();
            plan.encode(&row, &mut bytes)?;
            rows.push(bytes);
        }
        blocks.push(rows);
    }
    let blocks = Arc::new(blocks);
    let columns = plan.insert_columns();
    let send_all = |stop_at_error: bool| {
        let (sink, blocks, columns) = (sink.clone(), blocks.clone(), columns.clone());
        let acked = Arc::new(AtomicUsize::new(0));
        let counter = acked.clone();
        let task = tokio::spawn(async move {
            for (b, rows) in blocks.iter().enumerate() {
                let refs: Vec<RowRef<'_>> = rows
                    .iter()
                    .enumerate()
                    .map(|(index, bytes)| RowRef { index, bytes })
                    .collect();
                let token = format!("killed:0:{b}");
                match sink.insert(table, &columns, &refs, Some(&token), 0).await {
                    Ok(()) => {
                        counter.fetch_add(1, Ordering::SeqCst);
                    }
                    Err(e) if stop_at_error => return Some(e),
                    Err(e) => panic!("insert after the restart: {e}"),
                }
            }
            None
        });
        (acked, task)
    };

    let (acked, task) = send_all(true);
    eventually(
        "20 acknowledged inserts",
        Duration::from_secs(60),
        || async { Ok((acked.load(Ordering::SeqCst) >= 20).then_some(())) },
    )
    .await?;
    node.kill9().await?;
    let error = task.await?;
    let acked = acked.load(Ordering::SeqCst);
    assert!(
        error.is_some() && acked < BLOCKS,
        "the kill landed mid-stream ({acked} acked)"
    );

    node.restart().await?;
    let count = |ch: clickhouse::Client| async move {
        anyhow::Ok(
            ch.query(&format!("SELECT count() FROM {table}"))
                .fetch_one::<u64>()
                .await? as usize,
        )
    };
    let ch = clickhouse::Client::default().with_url(node.url());
    let after_kill = count(ch.clone()).await?;
    assert!(
        after_kill >= acked * ROWS && after_kill <= (acked + 1) * ROWS && after_kill % ROWS == 0,
        "{after_kill} rows after the kill; {acked} blocks of {ROWS} were acknowledged"
    );

    let (_, task) = send_all(false);
    assert!(task.await?.is_none());
    assert_eq!(
        count(ch).await?,
        BLOCKS * ROWS,
        "every block sent again was dropped or written once"
    );
    Ok(())
}
