//! `?wait=clickhouse`: a request is answered 200 only once the consumer group has committed past every one of its
//! events, so a query sent the moment it answers finds them all (no sleep, no retry in these tests); with no
//! consumer running, the bounded wait ends in 202 naming every event as pending, and they land once a consumer runs.
//! The native route, its `Sluice-Wait` header, and Segment's `/v1/batch`; `?partial=true` writes the valid events of
//! a batch and names the others.

mod consumer_support;
mod producer_support;

use consumer_support::{InProcess, Setup};
use producer_support::{KEY, Producer, key_hash};
use serde_json::{Value as Json, json};
use sluice_producer::config::{KeyConfig, StreamConfig};
use sluice_tests::{clickhouse, init_tracing};

/// The Segment write key (tenant `acme`).
const WRITE_KEY: &str = "wait-write-key";

async fn count(table: &str, column: &str, ids: &[String]) -> anyhow::Result<u64> {
    let list: Vec<String> = ids.iter().map(|i| format!("'{i}'")).collect();
    Ok(clickhouse()
        .query(&format!(
            "SELECT count() FROM {table} FINAL WHERE toString({column}) IN ({})",
            list.join(",")
        ))
        .fetch_one()
        .await?)
}

fn ids_of(body: &Json) -> Vec<String> {
    body["event_ids"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_clickhouse_answers_once_every_event_is_queryable() -> anyhow::Result<()> {
    init_tracing();
    let s = Setup::new("wait").await?;
    let seg = Setup::new("wait_seg").await?;

    let mut config = producer_support::config();
    config.streams.insert(
        "events".into(),
        StreamConfig {
            partitions: consumer_support::PARTITIONS,
            ..StreamConfig::new(&s.topic, "event")
        },
    );
    config.streams.insert(
        "segment".into(),
        StreamConfig {
            key_field: "message_id".into(),
            event_id_field: "message_id".into(),
            partitions: consumer_support::PARTITIONS,
            ..StreamConfig::new(&seg.topic, "segment")
        },
    );
    config.keys.insert(
        key_hash(WRITE_KEY),
        KeyConfig {
            tenant: "acme".into(),
            streams: vec!["segment".into()],
            ..Default::default()
        },
    );
    config.wait.clickhouse_group = s.group.clone();
    config.wait.poll_ms = 50;
    config.wait.timeout_ms = 1_500;
    let producer = Producer::ready(config).await?;
    let http = producer_support::client();
    let batch = |from: usize| Json::Array((from..from + 20).map(producer_support::event).collect());

    // No consumer yet: the wait ends, the answer is 202 and every event is pending (and safe in Kafka).
    let r = http
        .post(format!("{}?wait=clickhouse", producer.events_url("events")))
        .bearer_auth(KEY)
        .json(&batch(0))
        .send()
        .await?;
    assert_eq!(r.status(), 202);
    let body: Json = r.json().await?;
    let early = ids_of(&body);
    assert_eq!(early.len(), 20);
    let pending = body["pending"].as_array().cloned().unwrap_or_default();
    assert_eq!(pending.len(), 20, "{body}");
    assert_eq!(pending[3], json!({"index": 3, "event_id": early[3]}));

    // One consumer group for both streams, the one the producer watches.
    let mut consumer_config = s.config();
    let mut segment_stream = seg.config().streams.remove(0);
    segment_stream.bundled_schema = Some("segment".into());
    segment_stream.order_by = vec!["tenant".into(), "type".into(), "message_id".into()];
    segment_stream.event_id = "message_id".into();
    segment_stream.partition_by = "timestamp".into();
    consumer_config.streams.push(segment_stream);
    let consumer = InProcess::start(consumer_config).await?;
    consumer.ready().await?;

    // Now each answer is 200 and the rows are there the moment it comes: the early ones too, by then.
    let r = http
        .post(format!("{}?wait=clickhouse", producer.events_url("events")))
        .bearer_auth(KEY)
        .json(&batch(20))
        .send()
        .await?;
    assert_eq!(r.status(), 200);
    let body: Json = r.json().await?;
    assert!(body.get("pending").is_none(), "{body}");
    let ids = ids_of(&body);
    assert_eq!(count(&s.table, "event_id", &ids).await?, 20);
    // The header does the same for clients that cannot change the URL; by the time it answers, the first request's
    // events (written before any consumer ran) have long been committed past too.
    let r = http
        .post(producer.events_url("events"))
        .bearer_auth(KEY)
        .header("Sluice-Wait", "clickhouse")
        .json(&batch(40))
        .send()
        .await?;
    assert_eq!(r.status(), 200);
    let ids = ids_of(&r.json().await?);
    assert_eq!(count(&s.table, "event_id", &ids).await?, 20);
    assert_eq!(count(&s.table, "event_id", &early).await?, 20);

    // Segment's batch route: 200 once queryable too.
    let messages: Vec<String> = (0..5).map(|i| format!("wait-seg-{i}")).collect();
    let segment = json!({"batch": messages.iter().map(|m| json!({
        "type": "track", "event": "Waited", "userId": "u", "messageId": m
    })).collect::<Vec<_>>()});
    let r = http
        .post(producer.url("/v1/batch?wait=clickhouse"))
        .basic_auth(WRITE_KEY, Some(""))
        .json(&segment)
        .send()
        .await?;
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Json>().await?, json!({"success": true}));
    assert_eq!(count(&seg.table, "message_id", &messages).await?, 5);

    // ?partial=true: 3 valid and 2 invalid events; the 3 are written (and queryable at once, with the wait), the 2
    // named by index.
    let mut mixed: Vec<Json> = (80..85).map(producer_support::event).collect();
    mixed[0] = json!({"event_type": 5});
    mixed[2]["occurred_at"] = json!("yesterday");
    let r = http
        .post(format!(
            "{}?partial=true&wait=clickhouse",
            producer.events_url("events")
        ))
        .bearer_auth(KEY)
        .json(&mixed)
        .send()
        .await?;
    assert_eq!(r.status(), 200);
    let body: Json = r.json().await?;
    assert_eq!(
        (body["accepted"].as_u64(), body["rejected"].as_u64()),
        (Some(3), Some(2))
    );
    let named: Vec<u64> = body["details"]
        .as_array()
        .map(|d| d.iter().filter_map(|e| e["index"].as_u64()).collect())
        .unwrap_or_default();
    assert!(
        named.contains(&0) && named.contains(&2) && named.iter().all(|i| [0, 2].contains(i)),
        "{body}"
    );
    let ids = ids_of(&body);
    assert_eq!(count(&s.table, "event_id", &ids).await?, 3);
    let traces: u64 = clickhouse()
        .query(&format!(
            "SELECT count() FROM {} FINAL WHERE trace_id IN ('trace-80','trace-81','trace-82','trace-83','trace-84')",
            s.table
        ))
        .fetch_one()
        .await?;
    assert_eq!(traces, 3, "only the valid events were written");

    // An unknown target is the client's mistake.
    let r = http
        .post(format!("{}?wait=postgres", producer.events_url("events")))
        .bearer_auth(KEY)
        .json(&batch(60))
        .send()
        .await?;
    assert_eq!(r.status(), 400);
    assert_eq!(r.json::<Json>().await?["error"], "bad_query");

    consumer.stop().await?;
    producer.stop().await?;
    s.cleanup().await;
    seg.cleanup().await;
    Ok(())
}
