//! The live dashboard, as an operator sees it: headless Chromium (Debian's, driven by playwright-core from npm)
//! shows non-zero ingest and insert rates, a lag row per partition and a poison message's class within seconds,
//! with no request leaving the service; and its event stream carries the numbers `/metrics` serves. (That a tab
//! which stops reading holds no queue is a unit test of the stream, `dashboard::tests`: from outside, the sockets'
//! kernel buffers, up to 4 MiB each, would hide any queue for minutes.)

mod consumer_support;
mod producer_support;

use std::time::Duration;

use consumer_support::{
    InProcess, PARTITIONS, Setup, metric, producer as kafka_producer, send_raw,
};
use producer_support::{KEY, Producer};
use serde_json::{Value as Json, json};
use sluice_tests::kafka::project_root;
use sluice_tests::{eventually, init_tracing};
use tokio_util::sync::CancellationToken;

/// Where test artifacts go (the screenshot).
fn artifacts() -> std::path::PathBuf {
    let dir = project_root().join(".stack/artifacts");
    let _ = std::fs::create_dir_all(&dir);
    dir
}

/// Posts a small batch every 100 ms, each event for another user so every partition gets some, until `stop`.
fn load(url: String, stop: CancellationToken) -> tokio::task::JoinHandle<u64> {
    tokio::spawn(async move {
        let http = producer_support::client();
        let mut sent = 0u64;
        let mut i = 0u64;
        while !stop.is_cancelled() {
            let batch: Vec<Json> = (0..10)
                .map(|_| {
                    i += 1;
                    json!({"event_type": "page_view", "occurred_at": now_ms(),
                        "user_id": format!("u{i}"), "properties": {"n": i.to_string()}})
                })
                .collect();
            if let Ok(r) = http.post(&url).bearer_auth(KEY).json(&batch).send().await
                && r.status() == 202
            {
                sent += 10;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        sent
    })
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The dashboard's key in this test.
const DASHBOARD_KEY: &str = "dash-key";

/// The first event of the dashboard's stream.
async fn first_snapshot(url: &str) -> anyhow::Result<Json> {
    let mut resp = reqwest::Client::new()
        .get(url)
        .bearer_auth(DASHBOARD_KEY)
        .send()
        .await?;
    anyhow::ensure!(resp.status() == 200, "GET {url}: {}", resp.status());
    let mut buf = Vec::new();
    while let Some(chunk) = tokio::time::timeout(Duration::from_secs(10), resp.chunk()).await?? {
        buf.extend_from_slice(&chunk);
        let text = String::from_utf8_lossy(&buf);
        if let Some(line) = text.lines().find(|l| l.starts_with("data: {\"at_ms\"")) {
            return Ok(serde_json::from_str(&line["data: ".len()..])?);
        }
    }
    anyhow::bail!("the stream ended before a snapshot")
}

fn counter(snap: &Json, name: &str) -> f64 {
    snap["consumer"][name]
        .as_array()
        .map(|s| s.iter().filter_map(|m| m["value"].as_f64()).sum())
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_sees_the_pipeline_flow_and_the_stream_matches_metrics() -> anyhow::Result<()> {
    init_tracing();
    let s = Setup::new("dashboard").await?;
    let mut pconfig = producer_support::config();
    if let Some(events) = pconfig.streams.get_mut("events") {
        events.topic = s.topic.clone();
        events.key_field = "user_id".into();
        events.partitions = PARTITIONS;
    }
    let producer = Producer::ready(pconfig).await?;
    let mut config = s.config();
    config.dashboard.producer_metrics = vec![producer.url("/metrics")];
    // With a key: the browser opens the page with it once, and the page's stream must work by its cookie.
    config.dashboard.key = Some(DASHBOARD_KEY.into());
    let consumer = InProcess::start(config).await?;
    consumer.ready().await?;
    let base = format!("http://{}", consumer.addr);

    let stop = CancellationToken::new();
    let loader = load(producer.events_url("events"), stop.clone());
    // A poison message the DLQ panel must show.
    send_raw(
        &kafka_producer()?,
        &s.topic,
        &[("poison".into(), b"not avro".to_vec())],
    )
    .await?;

    let shot = artifacts().join("dashboard.png");
    let script = project_root().join("tests/fixtures/browser/dashboard.mjs");
    let out = tokio::process::Command::new("node")
        .arg(script)
        .arg(format!("{base}/dashboard?key={DASHBOARD_KEY}"))
        .arg(PARTITIONS.to_string())
        .arg("undecodable")
        .arg(&shot)
        .output()
        .await?;
    anyhow::ensure!(
        out.status.success(),
        "the browser script failed (SLUICE_TEST_PLAYWRIGHT_DIR={:?}): {}",
        std::env::var("SLUICE_TEST_PLAYWRIGHT_DIR").ok(),
        String::from_utf8_lossy(&out.stderr)
    );
    let seen: Json = serde_json::from_slice(&out.stdout)?;
    let number = |v: &Json| {
        v.as_str()
            .map_or(0.0, |s| s.replace(',', "").parse::<f64>().unwrap_or(0.0))
    };
    assert_eq!(seen["state"], "live", "{seen}");
    assert!(number(&seen["ingest"]) > 0.0, "ingest rate shown: {seen}");
    assert!(number(&seen["insert"]) > 0.0, "insert rate shown: {seen}");
    let partitions: Vec<&str> = seen["lagRows"]
        .as_array()
        .map(|a| a.iter().filter_map(Json::as_str).collect())
        .unwrap_or_default();
    for p in 0..PARTITIONS {
        assert!(
            partitions.contains(&format!("{}/{p}", s.topic).as_str()),
            "partition {p} in the lag table: {seen}"
        );
    }
    assert!(
        seen["classes"]
            .as_array()
            .is_some_and(|c| c.contains(&json!("undecodable"))),
        "{seen}"
    );
    assert!(
        seen["replay"]
            .as_str()
            .is_some_and(|r| r.contains("dlq replay") && r.contains(&s.dlq)),
        "{seen}"
    );
    assert_eq!(
        seen["external"],
        json!([]),
        "the page makes no request elsewhere"
    );
    assert_eq!(
        seen["keyInUrls"],
        json!([]),
        "the key left the address bar and no request carried it (the stream went by the cookie)"
    );
    assert!(
        std::fs::metadata(&shot)?.len() > 10_000,
        "screenshot written"
    );

    // Quiet, then the stream and /metrics must agree.
    stop.cancel();
    let sent = loader.await?;
    assert!(sent > 0);
    let addr = consumer.addr;
    eventually(
        "all rows inserted",
        Duration::from_secs(30),
        || async move {
            let consumed = metric(addr, "sluice_consumer_messages_consumed_total").await?;
            Ok((consumed >= sent as f64 + 1.0).then_some(()))
        },
    )
    .await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let snap = first_snapshot(&format!("{base}/dashboard/events")).await?;
    for name in [
        "sluice_consumer_messages_consumed_total",
        "sluice_consumer_rows_inserted_total",
        "sluice_consumer_dead_lettered_total",
        "sluice_consumer_offset_commits_total",
    ] {
        assert_eq!(counter(&snap, name), metric(addr, name).await?, "{name}");
    }
    assert_eq!(counter(&snap, "sluice_consumer_dead_lettered_total"), 1.0);
    assert!(
        snap["producer"]["accepted"]["events"]
            .as_f64()
            .unwrap_or(0.0)
            >= sent as f64
    );

    consumer.stop().await?;
    producer.stop().await?;
    s.cleanup().await;
    Ok(())
}
