//! Apache Kafka killed with SIGKILL in the middle of an HTTP load and restarted ~10 s later, with the real registry,
//! producer and consumer binaries on a broker of the test's own: while it is down the producer answers 503 with
//! Retry-After (never a 500, never a 202 for an event Kafka did not acknowledge) and `/readyz` says why; afterwards
//! everything reconnects by itself and every event that got a 202 is in ClickHouse exactly once through FINAL.

mod consumer_support;
mod http_load;

use std::collections::HashSet;
use std::time::Duration;

use anyhow::Context;
use consumer_support::*;
use http_load::{Load, Service};
use serde_json::{Value as Json, json};
use sluice_runtime::kafka::KafkaSettings;
use sluice_tests::kafka::KafkaNode;
use sluice_tests::{eventually, init_tracing, unique};

const KEY: &str = "broker-restart-key";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_kill_9_mid_load_then_restart_loses_no_202() -> anyhow::Result<()> {
    init_tracing();
    let mut node = KafkaNode::start().await?;
    let kafka = KafkaSettings {
        bootstrap_servers: node.bootstrap(),
        ..KafkaSettings::default()
    };
    let s = Setup::on("broker_kill", kafka.clone()).await?;

    let registry = Service::start(
        "sluice-registry",
        &format!(
            "listen = \"127.0.0.1:{{port}}\"\ntopic = \"{}\"\nwrite_timeout_ms = 5000\n[kafka]\nbootstrap_servers = \"{}\"\n",
            unique("_schemas"),
            node.bootstrap()
        ),
    )
    .await?;
    let producer = Service::start(
        "sluice-producer",
        &format!(
            r#"listen = "127.0.0.1:{{port}}"
registry_url = "{registry}"
[kafka]
bootstrap_servers = "{kafka}"
[produce]
message_timeout_ms = 3000
[limits]
request_timeout_ms = 6000
retry_after_secs = 1
[streams.events]
topic = "{topic}"
schema = "event"
partitions = {PARTITIONS}
key_field = "user_id"
[keys.{hash}]
tenant = "demo"
streams = ["events"]
"#,
            registry = registry.base,
            kafka = node.bootstrap(),
            topic = s.topic,
            hash = sluice_producer::auth::hash_key(KEY),
        ),
    )
    .await?;
    let mut config = s.config();
    config.registry_url = registry.base.clone();
    let consumer = Process::start(&config)?;
    wait_ready(consumer.addr)
        .await
        .map_err(|e| anyhow::anyhow!("{e}\n{}", consumer.log()))?;

    let load = Load::start(
        &format!("{}/v1/streams/events/events", producer.base),
        KEY,
        4,
    );
    load.wait_more(300, Duration::from_secs(60)).await?;
    node.kill9().await?;
    let killed_at = tokio::time::Instant::now();

    eventually(
        "503s while the broker is down",
        Duration::from_secs(30),
        || async { Ok((load.count(503) >= 2).then_some(())) },
    )
    .await?;
    let readyz = eventually("/readyz to say why", Duration::from_secs(30), || async {
        let r = reqwest::get(format!("{}/readyz", producer.base)).await?;
        let status = r.status().as_u16();
        let body = r.text().await?;
        Ok((status == 503).then_some(body))
    })
    .await?;
    assert!(
        readyz
            .lines()
            .any(|l| l.starts_with("kafka: ") && l != "kafka: ok"),
        "{readyz}"
    );

    tokio::time::sleep_until(killed_at + Duration::from_secs(10)).await;
    node.restart().await?;
    load.wait_more(300, Duration::from_secs(90))
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "202s again after the restart: {e}\nproducer:\n{}",
                producer.log()
            )
        })?;
    // Every 202 lands exactly once; a 503 may have landed part of its batch (under ids nobody was told).
    let want = load.stop().await?.accepted_ids("broker kill -9");
    let table = s.table.clone();
    eventually(
        "every 202 in ClickHouse",
        Duration::from_secs(120),
        || async {
            let got: Vec<String> = sluice_tests::clickhouse()
                .query(&format!("SELECT toString(event_id) FROM {table} FINAL"))
                .fetch_all()
                .await
                .unwrap_or_default();
            let got_set: HashSet<&str> = got.iter().map(String::as_str).collect();
            anyhow::ensure!(
                got_set.len() == got.len(),
                "{} duplicated ids through FINAL",
                got.len() - got_set.len()
            );
            Ok(want
                .iter()
                .all(|id| got_set.contains(id.as_str()))
                .then_some(()))
        },
    )
    .await
    .map_err(|e| anyhow::anyhow!("{e}\nconsumer:\n{}", consumer.log()))?;
    s.wait_committed_at_end(Duration::from_secs(60)).await?;
    assert!(
        s.dead_letters().await?.is_empty(),
        "a broker restart is not poison"
    );

    // The registry kept serving and took writes again once its broker was back.
    let http = reqwest::Client::new();
    let latest: Json = http
        .get(format!(
            "{}/subjects/{}/versions/latest",
            registry.base, s.subject
        ))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let id = latest["id"].as_u64().context("the producer's schema id")?;
    http.get(format!("{}/schemas/ids/{id}", registry.base))
        .send()
        .await?
        .error_for_status()?;
    let v2 = http
        .post(format!("{}/subjects/{}/versions", registry.base, s.subject))
        .header("content-type", "application/vnd.schemaregistry.v1+json")
        .json(&json!({"schema": event_schema_v2_text()}))
        .send()
        .await?;
    assert!(
        v2.status().is_success(),
        "a write after the restart: {} {}",
        v2.status(),
        v2.text().await?
    );
    s.cleanup().await;
    drop(node);
    Ok(())
}
