//! The consumer against the real broker, registry and ClickHouse, run in-process: exactly-once rows through FINAL,
//! offsets committed only after inserts, poison to the DLQ with its headers and back by replay, a ClickHouse
//! outage that loses and dead-letters nothing, and schema evolution that adds a column.

mod consumer_support;
mod producer_support;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use anyhow::Context;
use apache_avro::types::Value;
use consumer_support::*;
use rdkafka::message::{Headers, Message};
use rdkafka::producer::FutureProducer;
use sluice_consumer::dlq::command::{Filter, replay};
use sluice_consumer::dlq::{ErrorClass, header, header_str};
use sluice_tests::{clickhouse, eventually, init_tracing, kafka_settings};
use uuid::Uuid;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn n_events_land_once_and_offsets_reach_the_partition_ends() -> anyhow::Result<()> {
    init_tracing();
    let s = Setup::new("cons_basic").await?;
    let schema_id = register(&s.subject, sluice_schemas::catalog::EVENT.text).await?;
    let mut config = s.config();
    config.streams[0].source_columns = true;
    let consumer = InProcess::start(config).await?;
    consumer.ready().await?;

    let producer = producer()?;
    let ids = ids(400);
    send_events(&producer, &s.topic, schema_id, &ids).await?;
    // A redelivered copy of some events (as after a crash) must collapse, not double count.
    send_events(&producer, &s.topic, schema_id, &ids[..25]).await?;

    s.wait_for_rows(400, Duration::from_secs(60)).await?;
    s.assert_exactly(&ids).await?;
    s.wait_committed_at_end(Duration::from_secs(30)).await?;
    assert_eq!(
        s.committed_total().await?,
        425,
        "all 425 messages committed"
    );
    // Every stored row names the message it came from: this topic, and offsets no two rows share.
    let (rows, messages, max_offset): (u64, u64, i64) = clickhouse()
        .query(&format!(
            "SELECT count(), uniqExact(_partition, _offset), max(_offset) FROM {} WHERE _topic = '{}'",
            s.table, s.topic
        ))
        .fetch_one()
        .await?;
    assert!(rows >= 400, "{rows} rows traced to {}", s.topic);
    assert_eq!(messages, rows, "one message per stored row");
    assert!(max_offset < 425, "offsets within the topic: {max_offset}");
    assert!(
        consumer
            .metric("sluice_consumer_rows_inserted_total")
            .await?
            >= 400.0
    );
    assert!(
        consumer
            .metric("sluice_consumer_messages_consumed_total")
            .await?
            >= 425.0
    );
    assert!(s.dead_letters().await?.is_empty(), "nothing poison here");
    let lag_series = format!(
        "sluice_consumer_lag_messages{{partition=\"0\",topic=\"{}\"}}",
        s.topic
    );
    eventually(
        "lag reported per partition and caught up",
        Duration::from_secs(20),
        || async {
            let text = reqwest::get(format!("http://{}/metrics", consumer.addr))
                .await?
                .text()
                .await?;
            Ok(text
                .lines()
                .any(|l| l == format!("{lag_series} 0"))
                .then_some(()))
        },
    )
    .await?;

    consumer.stop().await?;
    s.cleanup().await;
    Ok(())
}

/// A 1,010,001-byte garbage message produced straight to the topic (under the broker's 1 MiB limit, as a Java
/// producer's default `max.request.size` allows): its letter, the value plus Sluice's headers, is over the DLQ
/// producer's `message.max.bytes`. It is sent cut, with the value's size and SHA-256, and every other event, on every
/// partition, lands behind it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversize_garbage_message_is_dead_lettered_cut_and_nothing_waits_behind_it()
-> anyhow::Result<()> {
    use sha2::Digest as _;

    init_tracing();
    let s = Setup::new("cons_oversize").await?;
    let schema_id = register(&s.subject, sluice_schemas::catalog::EVENT.text).await?;
    let consumer = InProcess::start(s.config()).await?;
    consumer.ready().await?;
    let big: FutureProducer = kafka_settings()
        .client_config()
        .set("message.max.bytes", "1048576")
        .set("acks", "all")
        .create()?;
    // Not Confluent-framed: the first byte is no magic 0.
    let garbage: Vec<u8> = (0..1_010_001u32).map(|i| 0xff - (i % 251) as u8).collect();
    send_raw(&big, &s.topic, &[("huge".into(), garbage.clone())]).await?;
    let good = ids(200);
    send_events(&producer()?, &s.topic, schema_id, &good).await?;

    s.wait_for_rows(200, Duration::from_secs(60)).await?;
    s.assert_exactly(&good).await?;
    let letters = eventually("the cut letter", Duration::from_secs(30), || async {
        let l = s.dead_letters().await?;
        Ok((!l.is_empty()).then_some(l))
    })
    .await?;
    assert_eq!(letters.len(), 1);
    let letter = &letters[0];
    assert_eq!(letter.payload(), None, "sent without its value");
    assert_eq!(header_str(letter, header::CUT), Some("true"));
    assert_eq!(header_str(letter, header::SIZE), Some("1010001"));
    let sha = hex::encode(sha2::Sha256::digest(&garbage));
    assert_eq!(header_str(letter, header::SHA256), Some(sha.as_str()));
    assert_eq!(header_str(letter, header::CLASS), Some("undecodable"));
    assert_eq!(letter.key(), Some(&b"huge"[..]));
    s.wait_committed_at_end(Duration::from_secs(30)).await?;
    consumer.stop().await?;
    s.cleanup().await;
    Ok(())
}

/// The DLQ topic is deleted under a running consumer, on a broker with auto-create off: a poison message's letter
/// cannot be sent until the topic exists again. The consumer creates it again (as at start-up), the letter lands
/// there, and every good event lands on every partition with the group committed to the end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_dlq_topic_is_created_again_for_the_letter() -> anyhow::Result<()> {
    use rdkafka::admin::{AdminClient, AdminOptions};
    use rdkafka::client::DefaultClientContext;

    init_tracing();
    let s = Setup::new("cons_dlq_gone").await?;
    let schema_id = register(&s.subject, sluice_schemas::catalog::EVENT.text).await?;
    let consumer = InProcess::start(s.config()).await?;
    consumer.ready().await?;
    let admin: AdminClient<DefaultClientContext> = kafka_settings().client_config().create()?;
    for result in admin
        .delete_topics(&[s.dlq.as_str()], &AdminOptions::new())
        .await?
    {
        result.map_err(|(t, code)| anyhow::anyhow!("deleting {t}: {code:?}"))?;
    }
    let producer = producer()?;
    send_raw(
        &producer,
        &s.topic,
        &[("junk".into(), b"not an event".to_vec())],
    )
    .await?;
    let good = ids(200);
    send_events(&producer, &s.topic, schema_id, &good).await?;

    s.wait_for_rows(200, Duration::from_secs(60)).await?;
    s.assert_exactly(&good).await?;
    let letters = eventually(
        "the letter in the new DLQ topic",
        Duration::from_secs(60),
        || async {
            let l = s.dead_letters().await.unwrap_or_default();
            Ok((!l.is_empty()).then_some(l))
        },
    )
    .await?;
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].key(), Some(&b"junk"[..]));
    assert_eq!(header_str(&letters[0], header::CLASS), Some("undecodable"));
    s.wait_committed_at_end(Duration::from_secs(30)).await?;
    assert_eq!(s.committed_total().await?, 201);
    consumer.stop().await?;
    s.cleanup().await;
    Ok(())
}

/// Partitions that leave this consumer while it waits out a long flush (everything paused, the group served) and
/// come back later must be read again: librdkafka keeps a partition's pause flag across a revoke and a new
/// assignment. A second member joins while every insert is slow, then leaves; events sent to every partition
/// after that all land.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitions_that_leave_during_a_long_flush_and_come_back_are_read_again()
-> anyhow::Result<()> {
    init_tracing();
    let s = Setup::new("cons_come_back").await?;
    let schema_id = register(&s.subject, sluice_schemas::catalog::EVENT.text).await?;
    let config = s.config();
    let first = InProcess::start(config.clone()).await?;
    first.ready().await?;
    // Every insert takes 20 ms a row: a flush of 100 rows outlasts the one second after which the read loop
    // pauses everything and serves the group.
    clickhouse()
        .query(&format!(
            "ALTER TABLE {} ADD COLUMN guard UInt8 MATERIALIZED sleepEachRow(0.02) * 0",
            s.table
        ))
        .execute()
        .await?;
    let producer = producer()?;
    let mut sent = Vec::new();
    let load = |n: usize| {
        let producer = &producer;
        let topic = &s.topic;
        async move {
            let batch = ids(n);
            send_events(producer, topic, schema_id, &batch).await?;
            anyhow::Ok(batch)
        }
    };
    sent.extend(load(300).await?);
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    // A second member joins while the first waits for its flush, takes some partitions, and leaves again.
    let second = InProcess::start(config.clone()).await?;
    second.ready().await?;
    for _ in 0..4 {
        sent.extend(load(50).await?);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    second.stop().await?;
    clickhouse()
        .query(&format!("ALTER TABLE {} DROP COLUMN guard", s.table))
        .execute()
        .await?;
    // Every partition, after the partitions came back.
    sent.extend(load(200).await?);
    s.wait_for_rows(sent.len() as u64, Duration::from_secs(60))
        .await
        .context("events on the partitions that came back")?;
    s.assert_exactly(&sent).await?;
    s.wait_committed_at_end(Duration::from_secs(30)).await?;
    first.stop().await?;
    s.cleanup().await;
    Ok(())
}

/// A topic deleted and created again numbers its messages from 0 once more. The consumer must not take the new
/// messages for the old ones: on a server with deduplication tokens, a token named only by the offsets would be one
/// the table already has, and the new first block would be dropped as a duplicate. Both lives on partition 0, each in
/// one batch, so the blocks cover the very same offsets.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_topic_created_again_under_its_name_lands_its_new_events() -> anyhow::Result<()> {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    use rdkafka::client::DefaultClientContext;
    use rdkafka::producer::FutureRecord;

    init_tracing();
    let s = Setup::new("cons_recreated").await?;
    let schema_id = register(&s.subject, sluice_schemas::catalog::EVENT.text).await?;
    let producer = producer()?;
    let schema = event_schema();
    let send_to_partition_0 = |ids: Vec<Uuid>| {
        let (producer, schema, topic) = (&producer, &schema, &s.topic);
        async move {
            for id in ids {
                let value = framed(schema_id, schema, event(id, "page_view", vec![]))?;
                let key = id.to_string();
                producer
                    .send(
                        FutureRecord::to(topic)
                            .partition(0)
                            .key(&key)
                            .payload(&value),
                        Duration::from_secs(30),
                    )
                    .await
                    .map_err(|(e, _)| e)
                    .context("produce")?;
            }
            anyhow::Ok(())
        }
    };
    // One batch per life: the consumer starts after the 20 messages are there and waits for all of them.
    let mut config = s.config();
    config.batch.min_rows = 20;
    config.batch.max_rows = 1_000;
    config.batch.max_wait_ms = 5_000;

    let first = ids(20);
    send_to_partition_0(first.clone()).await?;
    let consumer = InProcess::start(config.clone()).await?;
    s.wait_for_rows(20, Duration::from_secs(60)).await?;
    s.wait_committed_at_end(Duration::from_secs(30)).await?;
    consumer.stop().await?;

    let admin: AdminClient<DefaultClientContext> = kafka_settings().client_config().create()?;
    for result in admin
        .delete_topics(&[s.topic.as_str()], &AdminOptions::new())
        .await?
    {
        result.map_err(|(t, code)| anyhow::anyhow!("deleting {t}: {code:?}"))?;
    }
    // Created again once the broker has let go of the old one (until then it answers that the topic exists).
    eventually(
        "the topic created again",
        Duration::from_secs(60),
        || async {
            let topic = NewTopic::new(&s.topic, PARTITIONS, TopicReplication::Fixed(1));
            let results = admin.create_topics(&[topic], &AdminOptions::new()).await?;
            Ok(results.iter().all(Result::is_ok).then_some(()))
        },
    )
    .await?;
    let second = ids(20);
    send_to_partition_0(second.clone()).await?;
    let consumer = InProcess::start(config).await?;
    s.wait_for_rows(40, Duration::from_secs(60))
        .await
        .context("the second life's events, which reuse the first life's offsets")?;
    let both: Vec<Uuid> = first.iter().chain(&second).copied().collect();
    s.assert_exactly(&both).await?;
    s.wait_committed_at_end(Duration::from_secs(30)).await?;
    assert!(s.dead_letters().await?.is_empty());
    consumer.stop().await?;
    s.cleanup().await;
    Ok(())
}

/// A backfill: one request whose 101 events span 101 months, all on one Kafka partition, so the consumer's one
/// block for it touches 101 table partitions. ClickHouse 26.9 refuses such a block (`max_partitions_per_insert_block`
/// is 100, code 252); the consumer splits it instead of retrying it forever, and every event lands once, nothing
/// dead-lettered, the group committed to the end. On 18.16 (the legacy pass) the block lands whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_spanning_101_months_lands_whole() -> anyhow::Result<()> {
    init_tracing();
    let s = Setup::new("cons_backfill").await?;
    let consumer = InProcess::start(s.config()).await?;
    let mut config = producer_support::config();
    if let Some(events) = config.streams.get_mut("events") {
        events.topic = s.topic.clone();
    }
    let producer = producer_support::Producer::ready(config).await?;
    consumer.ready().await?;

    let events: Vec<serde_json::Value> = (0..101)
        .map(|i| {
            let (year, month) = (2018 + i / 12, 1 + i % 12);
            serde_json::json!({
                "event_type": "backfill",
                "occurred_at": format!("{year}-{month:02}-15T12:00:00Z"),
                "user_id": "one-user",
                "properties": {"i": i.to_string()}
            })
        })
        .collect();
    let resp = producer_support::client()
        .post(producer.events_url("events"))
        .bearer_auth(producer_support::KEY)
        .json(&events)
        .send()
        .await?;
    let status = resp.status();
    anyhow::ensure!(status == 202, "{status}: {}", resp.text().await?);
    // Later traffic lands too: the backfill holds nothing back.
    let resp = producer_support::client()
        .post(producer.events_url("events"))
        .bearer_auth(producer_support::KEY)
        .json(&producer_support::event(1))
        .send()
        .await?;
    anyhow::ensure!(resp.status() == 202, "{}", resp.status());

    s.wait_for_rows(102, Duration::from_secs(60)).await?;
    let (months, backfilled): (u64, u64) = clickhouse()
        .query(&format!(
            "SELECT uniqExact(toYYYYMM(occurred_at)), countIf(event_type = 'backfill') FROM {} FINAL",
            s.table
        ))
        .fetch_one()
        .await?;
    assert_eq!(
        (months, backfilled),
        (102, 101),
        "101 backfilled months and one of today's"
    );
    s.wait_committed_at_end(Duration::from_secs(30)).await?;
    assert!(
        s.dead_letters().await?.is_empty(),
        "a block's shape is no event's fault"
    );
    producer.stop().await?;
    consumer.stop().await?;
    s.cleanup().await;
    Ok(())
}

/// A backlog read in bursts: the read loop takes up to 1000 ready messages at a time and stops a burst when the
/// batch is full, so a message fetched and not handled would be a gap the commit passes over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_read_in_bursts_lands_every_message_once() -> anyhow::Result<()> {
    init_tracing();
    let s = Setup::new("cons_backlog").await?;
    let schema_id = register(&s.subject, sluice_schemas::catalog::EVENT.text).await?;
    let producer = producer()?;
    let ids = ids(6_000);
    send_events(&producer, &s.topic, schema_id, &ids).await?;

    let mut config = s.config();
    config.batch.max_rows = 1_700;
    config.batch.min_rows = 1_700;
    let consumer = InProcess::start(config).await?;
    consumer.ready().await?;
    s.wait_for_rows(6_000, Duration::from_secs(90)).await?;
    s.assert_exactly(&ids).await?;
    s.wait_committed_at_end(Duration::from_secs(30)).await?;
    assert_eq!(s.committed_total().await?, 6_000, "every message committed");
    consumer.stop().await?;
    s.cleanup().await;
    Ok(())
}

/// A thousand events of which every tenth is refused by ClickHouse, each INSERT slowed to ~20 ms: bisecting one
/// batch's refused rows takes longer than the member's `max.poll.interval.ms` (6 s here). The consumer keeps serving
/// the group meanwhile, so it is never expelled: no partition is revoked, every good row lands once and every
/// refused row is dead-lettered exactly once (an expelled member's batch would be bisected and lettered again).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundreds_of_refused_rows_are_bisected_without_losing_the_group() -> anyhow::Result<()> {
    init_tracing();
    let s = Setup::new("cons_long_bisect").await?;
    let schema_id = register(&s.subject, sluice_schemas::catalog::EVENT.text).await?;
    let mut config = s.config();
    config
        .kafka
        .client
        .insert("max.poll.interval.ms".into(), "6000".into());
    let consumer = InProcess::start(config).await?;
    consumer.ready().await?;
    clickhouse()
        .query(&format!(
            "ALTER TABLE {} ADD COLUMN guard UInt8 MATERIALIZED throwIf(event_type = 'reject_me') + sleep(0.02) * 0",
            s.table
        ))
        .execute()
        .await?;
    let assigned = consumer
        .metric("sluice_consumer_rebalances_total{kind=\"assign\"}")
        .await?;

    let schema = event_schema();
    let all = ids(1000);
    let mut good = Vec::new();
    let mut items = Vec::new();
    for (i, id) in all.iter().enumerate() {
        let kind = if i % 10 == 0 {
            "reject_me"
        } else {
            "page_view"
        };
        if i % 10 != 0 {
            good.push(*id);
        }
        items.push((
            id.to_string(),
            framed(schema_id, &schema, event(*id, kind, vec![]))?,
        ));
    }
    // One partition, so the batches are long runs of it and each one's bisect is long.
    let producer = producer()?;
    let sends = items.iter().map(|(key, value)| {
        producer.send(
            rdkafka::producer::FutureRecord::to(&s.topic)
                .key(key)
                .payload(value)
                .partition(0),
            Duration::from_secs(30),
        )
    });
    for r in futures::future::join_all(sends).await {
        r.map_err(|(e, _)| e)?;
    }

    s.wait_for_rows(900, Duration::from_secs(120)).await?;
    s.assert_exactly(&good).await?;
    s.wait_committed_at_end(Duration::from_secs(60)).await?;
    let letters = s.dead_letters().await?;
    let keys: HashSet<Vec<u8>> = letters
        .iter()
        .filter_map(|l| l.key().map(<[u8]>::to_vec))
        .collect();
    assert_eq!(
        (letters.len(), keys.len()),
        (100, 100),
        "each refused row dead-lettered once"
    );
    assert_eq!(
        consumer
            .metric("sluice_consumer_rebalances_total{kind=\"revoke\"}")
            .await?,
        0.0,
        "the member was never expelled"
    );
    assert_eq!(
        consumer
            .metric("sluice_consumer_rebalances_total{kind=\"assign\"}")
            .await?,
        assigned
    );
    consumer.stop().await?;
    s.cleanup().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_is_dead_lettered_with_headers_and_replay_lands_it_after_the_fix()
-> anyhow::Result<()> {
    init_tracing();
    let s = Setup::new("cons_poison").await?;
    let schema_id = register(&s.subject, sluice_schemas::catalog::EVENT.text).await?;
    let consumer = InProcess::start(s.config()).await?;
    consumer.ready().await?;
    // ClickHouse itself refuses rows of this event type until the guard is dropped.
    clickhouse()
        .query(&format!(
            "ALTER TABLE {} ADD COLUMN guard UInt8 MATERIALIZED throwIf(event_type = 'reject_me')",
            s.table
        ))
        .execute()
        .await?;

    let schema = event_schema();
    let mut items: Vec<(String, Vec<u8>)> = Vec::new();
    let mut expect_class: HashMap<String, ErrorClass> = HashMap::new();
    let good = ids(60);
    for id in &good {
        items.push((
            id.to_string(),
            framed(schema_id, &schema, event(*id, "page_view", vec![]))?,
        ));
    }
    for i in 0..2 {
        let key = format!("garbage-{i}");
        items.push((key.clone(), b"definitely not avro".to_vec()));
        expect_class.insert(key, ErrorClass::Undecodable);
    }
    let unknown = Uuid::now_v7();
    items.push((
        unknown.to_string(),
        framed(2_000_000_000, &schema, event(unknown, "page_view", vec![]))?,
    ));
    expect_class.insert(unknown.to_string(), ErrorClass::UnknownSchema);
    let rejected = ids(2);
    for id in &rejected {
        items.push((
            id.to_string(),
            framed(schema_id, &schema, event(*id, "reject_me", vec![]))?,
        ));
        expect_class.insert(id.to_string(), ErrorClass::Rejected);
    }
    // 1890: before 18.16's `DateTime` (1970) and a current server's `DateTime64` (1900) alike.
    let before_1900 = Uuid::now_v7();
    let mut ancient = event(before_1900, "page_view", vec![]);
    if let Value::Record(fields) = &mut ancient {
        fields[3].1 = Value::TimestampMillis(-2_500_000_000_000);
    }
    items.push((
        before_1900.to_string(),
        framed(schema_id, &schema, ancient)?,
    ));
    expect_class.insert(before_1900.to_string(), ErrorClass::Unrepresentable);
    // Interleave poison with good messages so every batch has both.
    let mut shuffled = Vec::new();
    let (poison, mut good_items): (Vec<_>, Vec<_>) = items
        .into_iter()
        .partition(|(k, _)| expect_class.contains_key(k));
    for p in poison {
        shuffled.extend(good_items.drain(..good_items.len().min(9)));
        shuffled.push(p);
    }
    shuffled.append(&mut good_items);
    let sent: HashMap<String, Vec<u8>> = shuffled.iter().cloned().collect();
    send_raw(&producer()?, &s.topic, &shuffled).await?;

    s.wait_for_rows(60, Duration::from_secs(60)).await?;
    let letters = eventually("6 dead letters", Duration::from_secs(30), || async {
        let l = s.dead_letters().await?;
        Ok((l.len() >= 6).then_some(l))
    })
    .await?;
    assert_eq!(letters.len(), 6, "exactly the poison is dead-lettered");
    let mut source_positions = HashSet::new();
    for l in &letters {
        let key = std::str::from_utf8(l.key().context("key kept")?)?.to_owned();
        let class = expect_class
            .get(&key)
            .with_context(|| format!("unexpected letter {key}"))?;
        assert_eq!(header_str(l, header::CLASS), Some(class.as_str()), "{key}");
        assert!(
            header_str(l, header::MESSAGE).is_some_and(|m| !m.is_empty()),
            "{key} has an error message"
        );
        assert_eq!(header_str(l, header::TOPIC), Some(s.topic.as_str()));
        assert_eq!(header_str(l, header::GROUP), Some(s.group.as_str()));
        assert_eq!(header_str(l, header::ATTEMPTS), Some("1"));
        assert!(
            header_str(l, header::TIMESTAMP)
                .and_then(|t| t.parse::<i64>().ok())
                .is_some_and(|t| t > 0)
        );
        let partition: i32 = header_str(l, header::PARTITION)
            .context("partition")?
            .parse()?;
        let offset: i64 = header_str(l, header::OFFSET).context("offset")?.parse()?;
        assert!(
            source_positions.insert((partition, offset)),
            "distinct source positions"
        );
        assert_eq!(
            l.payload(),
            sent.get(&key).map(Vec::as_slice),
            "{key}: original value kept"
        );
        let trace = l
            .headers()
            .and_then(|h| h.iter().find(|h| h.key == "trace"))
            .and_then(|h| h.value);
        assert_eq!(trace, Some(key.as_bytes()), "{key}: original headers kept");
    }
    s.wait_committed_at_end(Duration::from_secs(30)).await?;
    assert_eq!(
        consumer
            .metric("sluice_consumer_dead_lettered_total")
            .await?,
        6.0
    );

    // Fix the cause, replay only the rejected letters: they land.
    clickhouse()
        .query(&format!("ALTER TABLE {} DROP COLUMN guard", s.table))
        .execute()
        .await?;
    let rejected_only = Filter {
        class: Some(ErrorClass::Rejected),
        ..Filter::default()
    };
    let mut out = Vec::new();
    let summary = replay(&kafka_settings(), &s.dlq, &rejected_only, &mut out).await?;
    assert_eq!(
        (
            summary.scanned,
            summary.matched,
            summary.replayed,
            summary.failed
        ),
        (6, 2, 2, 0),
        "{}",
        String::from_utf8_lossy(&out)
    );
    assert!(
        String::from_utf8_lossy(&out).contains("replayed 2 of 2"),
        "{}",
        String::from_utf8_lossy(&out)
    );
    s.wait_for_rows(62, Duration::from_secs(60)).await?;
    let landed: HashSet<Uuid> = s.ids().await?.into_iter().collect();
    assert!(
        rejected.iter().all(|id| landed.contains(id)),
        "replayed rows landed"
    );

    // Replaying what is still broken sends it back with the attempt count raised.
    let garbage_only = Filter {
        class: Some(ErrorClass::Undecodable),
        ..Filter::default()
    };
    replay(&kafka_settings(), &s.dlq, &garbage_only, &mut Vec::new()).await?;
    let again = eventually(
        "garbage dead-lettered again",
        Duration::from_secs(30),
        || async {
            let l = s.dead_letters().await?;
            let second: Vec<_> = l
                .into_iter()
                .filter(|m| header_str(m, header::ATTEMPTS) == Some("2"))
                .collect();
            Ok((second.len() >= 2).then_some(second))
        },
    )
    .await?;
    assert!(
        again
            .iter()
            .all(|m| header_str(m, header::CLASS) == Some("undecodable"))
    );
    assert_eq!(s.count_final().await?, 62);

    consumer.stop().await?;
    s.cleanup().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clickhouse_outage_pauses_retries_and_never_commits_past_it() -> anyhow::Result<()> {
    init_tracing();
    let s = Setup::new("cons_outage").await?;
    let schema_id = register(&s.subject, sluice_schemas::catalog::EVENT.text).await?;
    let proxy = Proxy::start(&clickhouse_addr()).await?;
    let consumer = InProcess::start(s.config_with_clickhouse(&proxy.url)).await?;
    consumer.ready().await?;
    let producer = producer()?;

    let first = ids(150);
    send_events(&producer, &s.topic, schema_id, &first).await?;
    s.wait_for_rows(150, Duration::from_secs(60)).await?;
    s.wait_committed_at_end(Duration::from_secs(30)).await?;

    proxy.cut();
    let second = ids(150);
    send_events(&producer, &s.topic, schema_id, &second).await?;
    eventually(
        "retries while ClickHouse is unreachable",
        Duration::from_secs(30),
        || async {
            let retries = consumer
                .metric("sluice_consumer_retries_total{what=\"clickhouse\"}")
                .await?;
            let paused = consumer.metric("sluice_consumer_paused_partitions").await?;
            Ok((retries >= 3.0 && paused > 0.0).then_some(()))
        },
    )
    .await?;
    let readyz = reqwest::get(format!("http://{}/readyz", consumer.addr)).await?;
    assert_eq!(readyz.status(), 503, "not ready while ClickHouse is down");
    assert_eq!(s.count_final().await?, 150, "nothing new could land");
    assert_eq!(s.committed_total().await?, 150, "no commit past the outage");
    assert!(
        s.dead_letters().await?.is_empty(),
        "an outage is not poison"
    );

    proxy.restore();
    s.wait_for_rows(300, Duration::from_secs(60)).await?;
    s.wait_committed_at_end(Duration::from_secs(30)).await?;
    assert_eq!(s.committed_total().await?, 300);
    let want: Vec<Uuid> = first.into_iter().chain(second).collect();
    s.assert_exactly(&want).await?;
    assert!(
        s.dead_letters().await?.is_empty(),
        "nothing dead-lettered after recovery either"
    );
    eventually("partitions resumed", Duration::from_secs(10), || async {
        Ok((consumer.metric("sluice_consumer_paused_partitions").await? == 0.0).then_some(()))
    })
    .await?;

    consumer.stop().await?;
    s.cleanup().await;
    Ok(())
}

/// A registry that does not know a writer id yet (a replica behind its leader, say) answers 404 for it. The
/// consumer asks again for up to `registry_unknown_id_wait_ms` instead of dead-lettering: events produced with a
/// schema registered seconds later land, nothing goes to the DLQ, and the events of the known id land meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writer_id_the_registry_learns_seconds_later_lands_without_a_letter() -> anyhow::Result<()>
{
    init_tracing();
    let s = Setup::new("cons_late_id").await?;
    // A registry of its own: its first schema is id 1 and the next one registered id 2.
    let (_registry, base) =
        sluice_tests::registry_node::start(&sluice_tests::unique("_schemas_late")).await?;
    let v1 = register_at(&base, &s.subject, sluice_schemas::catalog::EVENT.text).await?;
    assert_eq!(v1, 1);
    let mut config = s.config();
    config.registry_url = base.clone();
    config.registry_unknown_id_wait_ms = 60_000;
    let consumer = InProcess::start(config).await?;
    consumer.ready().await?;

    let producer = producer()?;
    let known = ids(100);
    send_events(&producer, &s.topic, v1, &known).await?;
    let v2_text = event_schema_v2_text();
    let v2_schema = apache_avro::Schema::parse_str(&v2_text)?;
    let late = ids(100);
    let items = late
        .iter()
        .map(|id| {
            let plan = vec![(
                "plan".to_string(),
                Value::Union(1, Box::new(Value::String("pro".into()))),
            )];
            Ok((
                id.to_string(),
                framed(2, &v2_schema, event(*id, "signup", plan))?,
            ))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    send_raw(&producer, &s.topic, &items).await?;

    s.wait_for_rows(100, Duration::from_secs(60)).await?;
    eventually("id 2 asked again", Duration::from_secs(30), || async {
        Ok((consumer
            .metric("sluice_consumer_retries_total{what=\"registry\"}")
            .await?
            >= 2.0)
            .then_some(()))
    })
    .await?;
    assert!(
        s.dead_letters().await?.is_empty(),
        "not dead-lettered while it may still appear"
    );
    let v2 = register_at(&base, &s.subject, &v2_text).await?;
    assert_eq!(v2, 2, "the id the late events were produced with");

    s.wait_for_rows(200, Duration::from_secs(60)).await?;
    let all: Vec<Uuid> = known.into_iter().chain(late).collect();
    s.assert_exactly(&all).await?;
    s.wait_committed_at_end(Duration::from_secs(30)).await?;
    assert!(s.dead_letters().await?.is_empty());
    let plans: u64 = clickhouse()
        .query(&format!(
            "SELECT count() FROM {} FINAL WHERE plan = 'pro'",
            s.table
        ))
        .fetch_one()
        .await?;
    assert_eq!(plans, 100, "the late events read with their own schema");
    consumer.stop().await?;
    s.cleanup().await;
    Ok(())
}

/// A partition waits on a failure that will not clear by itself (its table detached). The consumer shows it
/// (`sluice_consumer_held_seconds` with the reason, the dashboard's snapshot), and an operator dead-letters the held
/// message by hand with the real `sluice-consumer dlq skip`: a wrong offset is refused naming what is held, the right
/// one lands in the DLQ as class `operator`, the partition's commit moves past it and it resumes; after the table is
/// back, `dlq replay --class operator` lands the event once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_dead_letters_a_held_message_and_its_partition_moves_on() -> anyhow::Result<()>
{
    use rdkafka::producer::FutureRecord;

    init_tracing();
    let s = Setup::new("cons_skip").await?;
    let schema_id = register(&s.subject, sluice_schemas::catalog::EVENT.text).await?;
    let consumer = InProcess::start(s.config()).await?;
    consumer.ready().await?;
    let producer = producer()?;
    let first = ids(10);
    send_events(&producer, &s.topic, schema_id, &first).await?;
    s.wait_for_rows(10, Duration::from_secs(60)).await?;
    s.wait_committed_at_end(Duration::from_secs(30)).await?;

    clickhouse()
        .query(&format!("DETACH TABLE {}", s.table))
        .execute()
        .await?;
    let stuck = Uuid::now_v7();
    let payload = framed(
        schema_id,
        &event_schema(),
        event(stuck, "page_view", vec![]),
    )?;
    let key = stuck.to_string();
    let delivery = producer
        .send(
            FutureRecord::to(&s.topic).key(&key).payload(&payload),
            Duration::from_secs(30),
        )
        .await
        .map_err(|(e, _)| e)?;
    let (partition, offset) = (delivery.partition, delivery.offset);
    let held_line = format!("topic=\"{}\"", s.topic);
    eventually(
        "the partition shown as held",
        Duration::from_secs(30),
        || async {
            let text = reqwest::get(format!("http://{}/metrics", consumer.addr))
                .await?
                .text()
                .await?;
            Ok(text
                .lines()
                .any(|l| {
                    l.starts_with("sluice_consumer_held_seconds{")
                        && l.contains(&held_line)
                        && l.contains("reason=\"clickhouse\"")
                        && l.contains(&format!("partition=\"{partition}\""))
                })
                .then_some(()))
        },
    )
    .await?;
    assert_eq!(consumer.metric("sluice_consumer_held_messages").await?, 1.0);

    let cli = |offset: i64| {
        let mut cmd = std::process::Command::new(
            sluice_tests::service_binary("sluice-consumer").expect("built"),
        );
        for k in sluice_tests::sluice_vars() {
            cmd.env_remove(k);
        }
        cmd.args([
            "dlq",
            "skip",
            "--consumer",
            &format!("http://{}", consumer.addr),
            "--topic",
            &s.topic,
        ])
        .args([
            "--partition",
            &partition.to_string(),
            "--offset",
            &offset.to_string(),
        ])
        .args(["--reason", "table detached for a migration"]);
        cmd
    };
    let wrong = tokio::task::spawn_blocking({
        let mut c = cli(offset + 1000);
        move || c.output()
    })
    .await??;
    assert!(!wrong.status.success(), "a message not held is refused");
    let err = String::from_utf8_lossy(&wrong.stderr);
    assert!(
        err.contains("not held") && err.contains(&format!("{}/{partition} from {offset}", s.topic)),
        "{err}"
    );
    assert!(
        s.dead_letters().await?.is_empty(),
        "nothing dead-lettered by a refused skip"
    );

    let right = tokio::task::spawn_blocking({
        let mut c = cli(offset);
        move || c.output()
    })
    .await??;
    assert!(
        right.status.success(),
        "{}",
        String::from_utf8_lossy(&right.stderr)
    );
    let letters = s.dead_letters().await?;
    assert_eq!(letters.len(), 1);
    assert_eq!(header_str(&letters[0], header::CLASS), Some("operator"));
    assert_eq!(letters[0].key(), Some(key.as_bytes()));
    assert!(
        header_str(&letters[0], header::MESSAGE)
            .is_some_and(|m| m.contains("table detached for a migration")),
        "the operator's reason is on the letter"
    );
    s.wait_committed_at_end(Duration::from_secs(30)).await?;
    assert_eq!(
        s.committed_total().await?,
        11,
        "the commit passed the skipped message"
    );
    eventually(
        "resumed and nothing held",
        Duration::from_secs(10),
        || async {
            let paused = consumer.metric("sluice_consumer_paused_partitions").await?;
            let held = consumer.metric("sluice_consumer_held_seconds").await?;
            Ok((paused == 0.0 && held == 0.0).then_some(()))
        },
    )
    .await?;

    clickhouse()
        .query(&format!("ATTACH TABLE {}", s.table))
        .execute()
        .await?;
    let operator_only = Filter {
        class: Some(ErrorClass::Operator),
        ..Filter::default()
    };
    let summary = replay(&kafka_settings(), &s.dlq, &operator_only, &mut Vec::new()).await?;
    assert_eq!(summary.replayed, 1);
    s.wait_for_rows(11, Duration::from_secs(60)).await?;
    let all: Vec<Uuid> = first.into_iter().chain([stuck]).collect();
    s.assert_exactly(&all).await?;
    consumer.stop().await?;
    s.cleanup().await;
    Ok(())
}

/// Stream A's table is detached under the consumer (every insert and every check of it fails) while stream B
/// flows in the same consumer: B lands and commits at once, A waits on its own partitions (paused, retried, nothing
/// committed, nothing dead-lettered) and lands whole once the table is attached again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_table_holds_back_only_its_own_stream() -> anyhow::Result<()> {
    init_tracing();
    let a = Setup::new("cons_iso_a").await?;
    let mut b = Setup::new("cons_iso_b").await?;
    b.group = a.group.clone();
    let a_schema = register(&a.subject, sluice_schemas::catalog::EVENT.text).await?;
    let b_schema = register(&b.subject, sluice_schemas::catalog::EVENT.text).await?;
    let mut config = a.config();
    let mut b_stream = config.streams[0].clone();
    b_stream.topic = b.topic.clone();
    b_stream.table = b.table.clone();
    b_stream.dlq_topic = Some(b.dlq.clone());
    config.streams.push(b_stream);
    let consumer = InProcess::start(config).await?;
    consumer.ready().await?;
    let producer = producer()?;

    let (a_first, b_first) = (ids(100), ids(100));
    send_events(&producer, &a.topic, a_schema, &a_first).await?;
    send_events(&producer, &b.topic, b_schema, &b_first).await?;
    a.wait_for_rows(100, Duration::from_secs(60)).await?;
    b.wait_for_rows(100, Duration::from_secs(60)).await?;
    a.wait_committed_at_end(Duration::from_secs(30)).await?;

    clickhouse()
        .query(&format!("DETACH TABLE {}", a.table))
        .execute()
        .await?;
    let (a_second, b_second) = (ids(100), ids(100));
    send_events(&producer, &a.topic, a_schema, &a_second).await?;
    eventually("A's inserts retried", Duration::from_secs(30), || async {
        Ok((consumer
            .metric("sluice_consumer_retries_total{what=\"clickhouse\"}")
            .await?
            >= 2.0)
            .then_some(()))
    })
    .await?;
    // B's events are sent once A is stuck: they must not wait behind it.
    send_events(&producer, &b.topic, b_schema, &b_second).await?;
    b.wait_for_rows(200, Duration::from_secs(30)).await?;
    b.wait_committed_at_end(Duration::from_secs(30)).await?;
    let b_all: Vec<Uuid> = b_first.into_iter().chain(b_second).collect();
    b.assert_exactly(&b_all).await?;
    let paused = consumer.metric("sluice_consumer_paused_partitions").await?;
    assert!(
        (1.0..=f64::from(PARTITIONS)).contains(&paused),
        "only A's partitions pause: {paused}"
    );
    assert_eq!(
        a.committed_total().await?,
        100,
        "nothing of A committed past its outage"
    );
    assert!(
        a.dead_letters().await?.is_empty(),
        "an outage is not poison"
    );

    clickhouse()
        .query(&format!("ATTACH TABLE {}", a.table))
        .execute()
        .await?;
    a.wait_for_rows(200, Duration::from_secs(60)).await?;
    a.wait_committed_at_end(Duration::from_secs(30)).await?;
    let a_all: Vec<Uuid> = a_first.into_iter().chain(a_second).collect();
    a.assert_exactly(&a_all).await?;
    assert!(a.dead_letters().await?.is_empty());
    assert!(b.dead_letters().await?.is_empty());
    eventually("partitions resumed", Duration::from_secs(10), || async {
        Ok((consumer.metric("sluice_consumer_paused_partitions").await? == 0.0).then_some(()))
    })
    .await?;

    consumer.stop().await?;
    a.cleanup().await;
    b.cleanup().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_schema_version_adds_its_column_and_both_versions_land() -> anyhow::Result<()> {
    init_tracing();
    let s = Setup::new("cons_evolve").await?;
    let v1 = register(&s.subject, sluice_schemas::catalog::EVENT.text).await?;
    let consumer = InProcess::start(s.config()).await?;
    consumer.ready().await?;
    let producer = producer()?;
    send_events(&producer, &s.topic, v1, &ids(20)).await?;
    s.wait_for_rows(20, Duration::from_secs(60)).await?;

    let v2_text = event_schema_v2_text();
    let v2 = register(&s.subject, &v2_text).await?;
    assert_ne!(v1, v2);
    let v2_schema = apache_avro::Schema::parse_str(&v2_text)?;
    let plan = |p: &str| {
        vec![(
            "plan".to_string(),
            Value::Union(1, Box::new(Value::String(p.into()))),
        )]
    };
    let v2_items = ids(20)
        .into_iter()
        .map(|id| {
            Ok((
                id.to_string(),
                framed(v2, &v2_schema, event(id, "upgrade", plan("pro")))?,
            ))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    send_raw(&producer, &s.topic, &v2_items).await?;
    // Old producers keep sending v1 meanwhile.
    send_events(&producer, &s.topic, v1, &ids(10)).await?;

    s.wait_for_rows(50, Duration::from_secs(60)).await?;
    let ty: String = clickhouse()
        .query("SELECT type FROM system.columns WHERE database = ? AND table = 'events' AND name = 'plan'")
        .bind(&s.db)
        .fetch_one()
        .await
        .context("plan column exists")?;
    assert_eq!(ty, "Nullable(String)");
    let (pro, null): (u64, u64) = clickhouse()
        .query(&format!(
            "SELECT countIf(ifNull(plan, '') = 'pro'), countIf(isNull(plan)) FROM {} FINAL",
            s.table
        ))
        .fetch_one()
        .await?;
    assert_eq!(
        (pro, null),
        (20, 30),
        "v2 rows carry the new field, v1 rows read it as null"
    );
    assert!(
        consumer
            .metric("sluice_consumer_schema_changes_total")
            .await?
            >= 2.0,
        "reader change and column add"
    );
    assert!(s.dead_letters().await?.is_empty());
    s.wait_committed_at_end(Duration::from_secs(30)).await?;

    consumer.stop().await?;
    s.cleanup().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_during_an_outage_leaves_the_batch_for_the_next_run() -> anyhow::Result<()> {
    init_tracing();
    let s = Setup::new("cons_sigterm").await?;
    let schema_id = register(&s.subject, sluice_schemas::catalog::EVENT.text).await?;
    let proxy = Proxy::start(&clickhouse_addr()).await?;
    let mut config = s.config_with_clickhouse(&proxy.url);
    config.shutdown_grace_ms = 1_000;
    let consumer = InProcess::start(config).await?;
    consumer.ready().await?;
    let producer = producer()?;
    let first = ids(50);
    send_events(&producer, &s.topic, schema_id, &first).await?;
    s.wait_for_rows(50, Duration::from_secs(60)).await?;
    s.wait_committed_at_end(Duration::from_secs(30)).await?;

    proxy.cut();
    let second = ids(50);
    send_events(&producer, &s.topic, schema_id, &second).await?;
    eventually("retrying", Duration::from_secs(30), || async {
        Ok((consumer
            .metric("sluice_consumer_retries_total{what=\"clickhouse\"}")
            .await?
            >= 2.0)
            .then_some(()))
    })
    .await?;
    let started = std::time::Instant::now();
    consumer.stop().await?;
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "gave up after the grace period: {:?}",
        started.elapsed()
    );
    assert_eq!(
        s.committed_total().await?,
        50,
        "the unflushed batch stays uncommitted"
    );

    proxy.restore();
    let next = InProcess::start(s.config()).await?;
    next.ready().await?;
    s.wait_for_rows(100, Duration::from_secs(60)).await?;
    let want: Vec<Uuid> = first.into_iter().chain(second).collect();
    s.assert_exactly(&want).await?;
    s.wait_committed_at_end(Duration::from_secs(30)).await?;
    assert!(s.dead_letters().await?.is_empty());
    next.stop().await?;
    s.cleanup().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_mapped_avro_type_round_trips_through_clickhouse() -> anyhow::Result<()> {
    use sluice_consumer::sink::clickhouse::ClickHouseSink;
    use sluice_consumer::sink::clickhouse::insert::RowRef;
    use sluice_schemas::clickhouse::{RowPlan, TableSpec};

    let schema = apache_avro::Schema::parse_str(
        r#"{"type":"record","name":"All","namespace":"t","fields":[
            {"name":"id","type":{"type":"string","logicalType":"uuid"}},
            {"name":"ts","type":{"type":"long","logicalType":"timestamp-millis"}},
            {"name":"b","type":"boolean"},{"name":"i","type":"int"},{"name":"l","type":"long"},
            {"name":"f","type":"float"},{"name":"d","type":"double"},{"name":"by","type":"bytes"},
            {"name":"e","type":{"type":"enum","name":"Color","symbols":["RED","GREEN"]}},
            {"name":"fx","type":{"type":"fixed","name":"Four","size":4}},
            {"name":"day","type":{"type":"int","logicalType":"date"}},
            {"name":"dec","type":{"type":"bytes","logicalType":"decimal","precision":9,"scale":2}},
            {"name":"opt","type":["null","long"],"default":null},
            {"name":"arr","type":{"type":"array","items":["null","long"]}},
            {"name":"nested","type":{"type":"record","name":"Inner","fields":[{"name":"x","type":"int"},{"name":"m","type":{"type":"map","values":"int"}}]}},
            {"name":"maybe_arr","type":["null",{"type":"array","items":"string"}],"default":null},
            {"name":"either","type":["int","string"]},
            {"name":"tags","type":{"type":"map","values":"string"}}
        ]}"#,
    )?;
    let id = Uuid::parse_str("00112233-4455-6677-8899-aabbccddeeff")?;
    let map = |pairs: &[(&str, Value)]| {
        Value::Map(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect(),
        )
    };
    let value = Value::Record(vec![
        ("id".into(), Value::Uuid(id)),
        ("ts".into(), Value::TimestampMillis(1_700_000_000_123)),
        ("b".into(), Value::Boolean(true)),
        ("i".into(), Value::Int(-5)),
        ("l".into(), Value::Long(1 << 40)),
        ("f".into(), Value::Float(1.5)),
        ("d".into(), Value::Double(-2.25)),
        ("by".into(), Value::Bytes(b"hi".to_vec())),
        ("e".into(), Value::Enum(1, "GREEN".into())),
        ("fx".into(), Value::Fixed(4, b"abcd".to_vec())),
        ("day".into(), Value::Date(19_000)),
        (
            "dec".into(),
            Value::Decimal(apache_avro::Decimal::from(vec![0x04, 0xe2])),
        ),
        ("opt".into(), Value::Union(1, Box::new(Value::Long(9)))),
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
        ("maybe_arr".into(), Value::Union(0, Box::new(Value::Null))),
        (
            "either".into(),
            Value::Union(1, Box::new(Value::String("s".into()))),
        ),
        (
            "tags".into(),
            map(&[
                ("z", Value::String("1".into())),
                ("y", Value::String("2".into())),
            ]),
        ),
    ]);
    let plan = RowPlan::from_schema(&schema)?;
    let mut row = Vec::new();
    plan.encode(&value, &mut row)?;

    let db = sluice_tests::unique("cons_types");
    let table = format!("{db}.all_types");
    let sink = ClickHouseSink::new(
        &sluice_consumer::config::ClickHouseSettings {
            url: sluice_tests::clickhouse_url(),
            ..Default::default()
        },
        sluice_consumer::metrics::Metrics::detached(),
    );
    let order = ["id".to_string()];
    sink.ensure_table(
        &plan,
        TableSpec {
            table: &table,
            order_by: &order,
            partition_by: Some("ts"),
            dedup_window: None,
        },
    )
    .await?;
    sink.insert(
        &table,
        &plan.insert_columns(),
        &[RowRef {
            index: 0,
            bytes: &row,
        }],
        None,
        0,
    )
    .await?;
    let tsv = reqwest::Client::new()
        .post(sluice_tests::clickhouse_url())
        .body(format!("SELECT * FROM {table} FORMAT TabSeparated"))
        .send()
        .await?
        .text()
        .await?;
    assert_eq!(
        tsv.trim_end(),
        "00112233-4455-6677-8899-aabbccddeeff\t2023-11-14 22:13:20\t1\t-5\t1099511627776\t1.5\t-2.25\thi\tGREEN\tabcd\t\
         2022-01-08\t12.50\t9\t[NULL,7]\t(3,[('a',1),('b',2)])\t[]\t\"s\"\t['y','z']\t['2','1']"
    );
    clickhouse()
        .query(&format!("DROP DATABASE {db}"))
        .execute()
        .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_registry_is_waited_out_not_dead_lettered() -> anyhow::Result<()> {
    init_tracing();
    let s = Setup::new("cons_regdown").await?;
    let v1 = register(&s.subject, sluice_schemas::catalog::EVENT.text).await?;
    // The registry's base URL may carry a path (Apicurio's is /apis/ccompat/v7): the proxy forwards TCP to its
    // host and port, and the consumer keeps the path.
    let registry = reqwest::Url::parse(&sluice_tests::registry_url())?;
    let authority = format!(
        "{}:{}",
        registry.host_str().unwrap_or("127.0.0.1"),
        registry.port_or_known_default().unwrap_or(80)
    );
    let proxy = Proxy::start(&authority).await?;
    let mut config = s.config();
    config.registry_url = format!("{}{}", proxy.url, registry.path().trim_end_matches('/'));
    let consumer = InProcess::start(config).await?;
    consumer.ready().await?;
    let producer = producer()?;
    send_events(&producer, &s.topic, v1, &ids(30)).await?;
    s.wait_for_rows(30, Duration::from_secs(60)).await?;

    // A schema id the consumer has never seen arrives while the registry is unreachable.
    proxy.cut();
    let v2_text = event_schema_v2_text();
    let v2 = register(&s.subject, &v2_text).await?;
    let v2_schema = apache_avro::Schema::parse_str(&v2_text)?;
    let items = ids(30)
        .into_iter()
        .map(|id| {
            Ok((
                id.to_string(),
                framed(
                    v2,
                    &v2_schema,
                    event(
                        id,
                        "upgrade",
                        vec![("plan".into(), Value::Union(0, Box::new(Value::Null)))],
                    ),
                )?,
            ))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    send_raw(&producer, &s.topic, &items).await?;
    eventually("registry retries", Duration::from_secs(30), || async {
        Ok((consumer
            .metric("sluice_consumer_retries_total{what=\"registry\"}")
            .await?
            >= 2.0)
            .then_some(()))
    })
    .await?;
    assert_eq!(s.count_final().await?, 30);
    assert_eq!(
        s.committed_total().await?,
        30,
        "no commit past messages that could not be decoded yet"
    );
    assert!(
        s.dead_letters().await?.is_empty(),
        "an unreachable registry is not poison"
    );

    proxy.restore();
    s.wait_for_rows(60, Duration::from_secs(60)).await?;
    s.wait_committed_at_end(Duration::from_secs(30)).await?;
    assert!(s.dead_letters().await?.is_empty());
    consumer.stop().await?;
    s.cleanup().await;
    Ok(())
}

/// Every dead letter is a row of the dead-letter table, and `dlq replay --where` replays exactly the letters a SQL
/// condition on it selects.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dlq_replay_where_replays_only_the_letters_a_sql_condition_selects() -> anyhow::Result<()> {
    init_tracing();
    let s = Setup::new("cons_dlwhere").await?;
    register(&s.subject, sluice_schemas::catalog::EVENT.text).await?;
    let config = s.config();
    let consumer = InProcess::start(config.clone()).await?;
    consumer.ready().await?;
    let garbage: Vec<(String, Vec<u8>)> = ["a-0", "a-1", "a-2", "b-0", "b-1", "b-2"]
        .iter()
        .map(|k| (k.to_string(), format!("garbage {k}").into_bytes()))
        .collect();
    send_raw(&producer()?, &s.topic, &garbage).await?;
    let rows = |condition: &'static str| {
        let table = config.dead_letters.qualified(&config.clickhouse.database);
        async move {
            let keys: Vec<String> = clickhouse()
                .query(&format!(
                    "SELECT key FROM {table} FINAL WHERE {condition} ORDER BY key"
                ))
                .fetch_all()
                .await?;
            anyhow::Ok(keys)
        }
    };
    eventually(
        "six rows in the dead-letter table",
        Duration::from_secs(60),
        || async { Ok((rows("1").await?.len() == 6).then_some(())) },
    )
    .await?;

    // The dashboard's panel reads the table: every letter, each with the command that replays exactly it.
    let sink = sluice_consumer::sink::clickhouse::ClickHouseSink::new(
        &config.clickhouse,
        sluice_consumer::metrics::Metrics::new(&prometheus::Registry::new())?,
    );
    let shown = sluice_consumer::dashboard::snapshot::table_letters(&sink, &config)
        .await
        .context("letters from the table")?;
    let shown = shown.as_array().cloned().unwrap_or_default();
    assert_eq!(shown.len(), 6);
    assert!(shown.iter().all(|l| {
        l["class"] == "undecodable"
            && l["replay"]
                .as_str()
                .is_some_and(|r| r.contains(&format!("--topic {} --partition 0 --offset", s.dlq)))
    }));

    let letters = sluice_consumer::dead_letters::select(&config, "key LIKE 'b-%'").await?;
    assert_eq!(letters.len(), 3);
    let only_b = Filter {
        letters: Some(letters),
        ..Filter::default()
    };
    let mut out = Vec::new();
    let summary = replay(&kafka_settings(), &s.dlq, &only_b, &mut out).await?;
    assert_eq!(
        (summary.scanned, summary.matched, summary.replayed),
        (6, 3, 3),
        "{}",
        String::from_utf8_lossy(&out)
    );
    // Still garbage: dead-lettered again, their second attempt, and only those three.
    let again = eventually(
        "the replayed letters back",
        Duration::from_secs(60),
        || async {
            let keys = rows("attempts = 2").await?;
            Ok((keys.len() >= 3).then_some(keys))
        },
    )
    .await?;
    assert_eq!(again, vec!["b-0", "b-1", "b-2"]);
    assert_eq!(rows("1").await?.len(), 9);
    consumer.stop().await?;
    s.cleanup().await;
    Ok(())
}
