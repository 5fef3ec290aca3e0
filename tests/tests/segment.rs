//! The Segment tracking API with the SDKs teams already use: Segment's `segment-analytics-python` and
//! RudderStack's `rudder-sdk-python`, pointed at the producer by their `host`, land every track, identify, page,
//! screen, group and alias call in ClickHouse exactly once through FINAL with the documented mapping; retried
//! batches collapse, a wrong write key is a 401 that writes nothing, oversize messages and batches are a 400, and a
//! flood gets 429s that the SDKs retry until everything lands.

mod consumer_support;
mod producer_support;

use std::time::Duration;

use consumer_support::{InProcess, Setup};
use producer_support::{Producer, high_watermarks, key_hash};
use serde_json::{Value as Json, json};
use sluice_producer::config::{KeyConfig, StreamConfig};
use sluice_tests::{clickhouse, eventually, init_tracing};

/// The write key the SDKs are given (tenant `acme`).
const WRITE_KEY: &str = "segment-write-key";

/// The Python with both SDKs installed (`scripts/test` makes a venv and sets `SLUICE_TEST_SEGMENT_PYTHON`).
fn python() -> String {
    std::env::var("SLUICE_TEST_SEGMENT_PYTHON").unwrap_or_else(|_| "python3".into())
}

/// Runs `sdk` with `clients` clients sending `copies` rounds of the six calls; returns the messageIds sent.
async fn run_sdk(
    sdk: &str,
    host: &str,
    prefix: &str,
    copies: usize,
    clients: usize,
) -> anyhow::Result<Vec<String>> {
    let script = sluice_tests::kafka::project_root().join("tests/fixtures/python/segment_sdk.py");
    let out = tokio::process::Command::new(python())
        .arg(script)
        .args([sdk, host, WRITE_KEY, prefix])
        .args([copies.to_string(), clients.to_string()])
        .output()
        .await
        .map_err(|e| anyhow::anyhow!("running {} (SLUICE_TEST_SEGMENT_PYTHON): {e}", python()))?;
    anyhow::ensure!(
        out.status.success(),
        "the {sdk} SDK script failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let result: Json = serde_json::from_slice(&out.stdout)?;
    assert_eq!(result["errors"], json!([]), "{sdk} gave up on nothing");
    Ok(result["sent"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default())
}

async fn count_final(table: &str, filter: &str) -> anyhow::Result<u64> {
    Ok(clickhouse()
        .query(&format!("SELECT count() FROM {table} FINAL WHERE {filter}"))
        .fetch_one()
        .await?)
}

async fn wait_rows(table: &str, filter: &str, n: u64) -> anyhow::Result<()> {
    eventually(
        &format!("{n} rows where {filter}"),
        Duration::from_secs(90),
        || async move { Ok((count_final(table, filter).await? == n).then_some(())) },
    )
    .await
}

fn basic(key: &str) -> String {
    use base64::Engine as _;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{key}:"))
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn segment_and_rudderstack_sdks_land_exactly_once() -> anyhow::Result<()> {
    init_tracing();
    let s = Setup::new("segment").await?;
    let mut consumer_config = s.config();
    consumer_config.streams[0].bundled_schema = Some("segment".into());
    consumer_config.streams[0].order_by = vec!["tenant".into(), "type".into(), "message_id".into()];
    consumer_config.streams[0].event_id = "message_id".into();
    consumer_config.streams[0].partition_by = "timestamp".into();
    let consumer = InProcess::start(consumer_config).await?;

    let mut config = producer_support::config();
    config.streams.insert(
        "segment".into(),
        StreamConfig {
            key_field: "message_id".into(),
            event_id_field: "message_id".into(),
            partitions: consumer_support::PARTITIONS,
            ..StreamConfig::new(&s.topic, "segment")
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
    // One 50-message SDK batch fits, two at once do not; the linger keeps each request in flight for 100 ms so
    // that the flood's requests overlap.
    config.limits.max_in_flight_events = 60;
    config.limits.max_batch_events = 50;
    config.produce.linger_ms = 100;
    config
        .check()
        .map_err(|p| anyhow::anyhow!("{}: {}", p.key, p.problem))?;
    let producer = Producer::ready(config).await?;
    consumer.ready().await?;
    let table = &s.table;

    // Both SDKs, every message type.
    let segment_ids = run_sdk("segment", &producer.base, "seg", 3, 1).await?;
    let rudder_ids = run_sdk("rudder", &producer.base, "rud", 3, 1).await?;
    assert_eq!((segment_ids.len(), rudder_ids.len()), (18, 18));
    wait_rows(table, "1", 36).await?;
    let per_type: Vec<(String, u64)> = clickhouse()
        .query(&format!(
            "SELECT type, count() FROM {table} FINAL GROUP BY type ORDER BY type"
        ))
        .fetch_all()
        .await?;
    let want: Vec<(String, u64)> = ["alias", "group", "identify", "page", "screen", "track"]
        .iter()
        .map(|t| (t.to_string(), 6))
        .collect();
    assert_eq!(per_type, want);

    // The documented mapping, on a track call of Segment's SDK.
    #[derive(clickhouse::Row, serde::Deserialize, Debug)]
    struct Track {
        tenant: String,
        event: String,
        user_id: String,
        library: String,
        page_path: String,
        ip: String,
        total: f64,
        properties: String,
        original: u32,
        skew: i64,
    }
    let t: Track = clickhouse()
        .query(&format!(
            "SELECT tenant, assumeNotNull(event), assumeNotNull(user_id), assumeNotNull(context_library_name), \
             assumeNotNull(context_page_path), assumeNotNull(context_ip), visitParamExtractFloat(properties, 'total'), \
             properties, toUInt32(assumeNotNull(original_timestamp)), \
             toInt64(timestamp) - toInt64(assumeNotNull(original_timestamp)) \
             FROM {table} FINAL WHERE message_id = 'seg-0-1-track'"
        ))
        .fetch_one()
        .await?;
    assert_eq!(t.tenant, "acme", "the write key's tenant");
    assert_eq!(
        (t.event.as_str(), t.user_id.as_str()),
        ("Order Completed", "user-1")
    );
    assert_eq!(t.library, "analytics-python");
    assert_eq!((t.page_path.as_str(), t.ip.as_str()), ("/cart", "10.1.2.3"));
    assert_eq!(t.total, 12.5);
    assert!(
        t.properties.contains(r#""items":[{"qty":2,"sku":"a-1"}]"#),
        "{}",
        t.properties
    );
    // 2026-12-01T12:00:00Z, as the SDK stamped it; the corrected timestamp moves by at most the send delay.
    assert_eq!(t.original, 1_796_126_400);
    assert!(
        t.skew.abs() <= 5,
        "clock-skew correction moved it {}s",
        t.skew
    );
    let traits: String = clickhouse()
        .query(&format!(
            "SELECT traits FROM {table} FINAL WHERE message_id = 'rud-0-2-identify'"
        ))
        .fetch_one()
        .await?;
    assert_eq!(traits, r#"{"plan":"pro","seats":3}"#);

    // A retried batch (the same messageIds) collapses.
    let http = producer_support::client();
    let batch = json!({"batch": [
        {"type": "track", "event": "Retried", "userId": "u", "messageId": "retry-1"},
        {"type": "identify", "userId": "u", "messageId": "retry-2", "traits": {"a": 1}}
    ]});
    for _ in 0..2 {
        let r = http
            .post(producer.url("/v1/batch"))
            .header("authorization", basic(WRITE_KEY))
            .json(&batch)
            .send()
            .await?;
        assert_eq!(r.status(), 200);
        assert_eq!(r.json::<Json>().await?, json!({"success": true}));
    }
    wait_rows(table, "message_id LIKE 'retry-%'", 2).await?;

    // A single-message route with the key in the body.
    let r = http
        .post(producer.url("/v1/track"))
        .json(&json!({"writeKey": WRITE_KEY, "event": "Single", "anonymousId": "a-1", "messageId": "single-1"}))
        .send()
        .await?;
    assert_eq!(r.status(), 200);
    wait_rows(table, "message_id = 'single-1' AND type = 'track'", 1).await?;

    // Refusals: nothing of them reaches Kafka.
    let before = high_watermarks(&s.topic).await?;
    let refused = [
        (basic("wrong-key"), batch.clone(), 401, "bad_key"),
        (
            basic(WRITE_KEY),
            json!({"batch": [{"type": "track", "event": "big", "userId": "u", "properties": {"x": "y".repeat(40_000)}}]}),
            400,
            "invalid_events",
        ),
        (
            basic(WRITE_KEY),
            json!({"batch": (0..20).map(|i| json!({"type": "track", "event": "e", "userId": "u",
                "properties": {"x": "y".repeat(30_000)}, "messageId": format!("big-{i}")})).collect::<Vec<_>>()}),
            400,
            "body_too_large",
        ),
        (
            basic(WRITE_KEY),
            json!({"batch": [{"type": "purchase", "userId": "u"}]}),
            400,
            "invalid_events",
        ),
    ];
    for (auth, body, status, code) in refused {
        let r = http
            .post(producer.url("/v1/batch"))
            .header("authorization", auth)
            .json(&body)
            .send()
            .await?;
        assert_eq!(r.status(), status, "{code}");
        let answer: Json = r.json().await?;
        assert_eq!(answer["success"], false);
        assert_eq!(answer["code"], code, "{answer}");
    }
    assert_eq!(high_watermarks(&s.topic).await?, before, "nothing written");

    // A flood: SDK processes at once overflow the in-flight budget; the SDK retries its 429s until all land.
    // Rounds repeat until one was answered 429 (process start-up jitter can keep a round's requests apart).
    let mut flooded = 0;
    let mut overloaded = false;
    for round in 0..5 {
        let runs = (0..8).map(|n| {
            let base = producer.base.clone();
            async move { run_sdk("segment", &base, &format!("flood-{round}-{n}"), 10, 1).await }
        });
        for sent in futures::future::try_join_all(runs).await? {
            flooded += sent.len();
        }
        let metrics = http
            .get(producer.url("/metrics"))
            .send()
            .await?
            .text()
            .await?;
        overloaded = metrics.lines().any(|l| {
            // The shared budget's 429, or the key's share of it (one key sends the whole flood).
            l.starts_with("sluice_producer_events_rejected_total")
                && (l.contains("\"overloaded\"") || l.contains("\"quota_exceeded\""))
        });
        if overloaded {
            break;
        }
    }
    assert!(overloaded, "the flood was answered with 429 at least once");
    wait_rows(table, "message_id LIKE 'flood-%'", flooded as u64).await?;

    producer.stop().await?;
    consumer.stop().await?;
    s.cleanup().await;
    Ok(())
}
