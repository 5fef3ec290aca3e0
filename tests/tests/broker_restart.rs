//! Apache Kafka killed with SIGKILL in the middle of an HTTP load and restarted ~10 s later, with the real registry,
//! producer and consumer binaries on a broker of the test's own: while it is down the producer answers 503 with
//! Retry-After (never a 500, never a 202 for an event Kafka did not acknowledge) and `/readyz` says why; afterwards
//! everything reconnects by itself and every event that got a 202 is in ClickHouse exactly once through FINAL.

mod consumer_support;

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use consumer_support::*;
use serde_json::{Value as Json, json};
use sluice_runtime::kafka::KafkaSettings;
use sluice_tests::kafka::KafkaNode;
use sluice_tests::{eventually, init_tracing, service_binary, unique};
use tokio::process::{Child, Command};
use tokio_util::sync::CancellationToken;

const KEY: &str = "broker-restart-key";

/// A real service binary with a config file of its own, answering on `base`.
struct Service {
    _child: Child,
    base: String,
    log: PathBuf,
}

impl Service {
    /// Starts `binary` with `config` (TOML, `{port}` replaced by a free port) and waits for `/readyz`.
    async fn start(binary: &str, config: &str) -> anyhow::Result<Self> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let path = std::env::temp_dir().join(format!("{}.toml", unique(binary)));
        std::fs::write(&path, config.replace("{port}", &port.to_string()))?;
        let log = path.with_extension("log");
        let out = std::fs::File::create(&log)?;
        let mut cmd = Command::new(service_binary(binary)?);
        for k in sluice_tests::sluice_vars() {
            cmd.env_remove(k);
        }
        let child = cmd
            .env("SLUICE_CONFIG", &path)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {binary}"))?;
        let s = Self {
            _child: child,
            base: format!("http://127.0.0.1:{port}"),
            log,
        };
        let url = format!("{}/readyz", s.base);
        eventually(
            &format!("{binary} ready"),
            Duration::from_secs(60),
            || async {
                Ok(reqwest::get(&url)
                    .await
                    .is_ok_and(|r| r.status().is_success())
                    .then_some(()))
            },
        )
        .await
        .map_err(|e| anyhow::anyhow!("{e}\n{}", s.log()))?;
        Ok(s)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// What the HTTP load saw.
#[derive(Default)]
struct Seen {
    /// Ids of events answered 202.
    accepted: Vec<String>,
    /// Responses by status.
    statuses: BTreeMap<u16, u64>,
    /// Non-202 answers without a Retry-After header.
    without_retry_after: u64,
}

fn batch(n: usize) -> Json {
    Json::Array(
        (0..n)
            .map(|i| json!({"event_type": "restart", "occurred_at": 1_764_000_000_000i64 + i as i64, "user_id": format!("u-{i}")}))
            .collect(),
    )
}

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

    let seen = Arc::new(Mutex::new(Seen::default()));
    let stop = CancellationToken::new();
    let url = format!("{}/v1/streams/events/events", producer.base);
    let load: Vec<_> = (0..4)
        .map(|_| {
            let (seen, stop, url) = (seen.clone(), stop.clone(), url.clone());
            tokio::spawn(async move {
                let http = reqwest::Client::builder()
                    .timeout(Duration::from_secs(20))
                    .build()?;
                while !stop.is_cancelled() {
                    let r = http
                        .post(&url)
                        .bearer_auth(KEY)
                        .json(&batch(10))
                        .send()
                        .await?;
                    let status = r.status().as_u16();
                    let retry_after = r.headers().contains_key("retry-after");
                    let body: Json = r.json().await.unwrap_or(Json::Null);
                    let ids: Vec<String> = body["event_ids"]
                        .as_array()
                        .map(|ids| {
                            ids.iter()
                                .filter_map(|v| v.as_str().map(str::to_owned))
                                .collect()
                        })
                        .unwrap_or_default();
                    anyhow::ensure!(
                        status != 202 || !ids.is_empty(),
                        "a 202 without event_ids: {body}"
                    );
                    {
                        let mut seen = seen.lock().unwrap_or_else(|e| e.into_inner());
                        *seen.statuses.entry(status).or_default() += 1;
                        if status == 202 {
                            seen.accepted.extend(ids);
                        } else if !retry_after {
                            seen.without_retry_after += 1;
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                anyhow::Ok(())
            })
        })
        .collect();
    let accepted = |seen: &Arc<Mutex<Seen>>| seen.lock().map(|s| s.accepted.len()).unwrap_or(0);
    let unavailable = |seen: &Arc<Mutex<Seen>>| {
        seen.lock()
            .map(|s| s.statuses.get(&503).copied().unwrap_or(0))
            .unwrap_or(0)
    };

    eventually(
        "a load flowing before the kill",
        Duration::from_secs(60),
        || async { Ok((accepted(&seen) >= 300).then_some(())) },
    )
    .await?;
    node.kill9().await?;
    let killed_at = tokio::time::Instant::now();
    let before = accepted(&seen);

    eventually(
        "503s while the broker is down",
        Duration::from_secs(30),
        || async { Ok((unavailable(&seen) >= 2).then_some(())) },
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
    eventually(
        "202s again after the restart",
        Duration::from_secs(90),
        || async { Ok((accepted(&seen) >= before + 300).then_some(())) },
    )
    .await
    .map_err(|e| anyhow::anyhow!("{e}\nproducer:\n{}", producer.log()))?;
    stop.cancel();
    for task in load {
        task.await??;
    }

    let seen = std::mem::take(&mut *seen.lock().unwrap_or_else(|e| e.into_inner()));
    eprintln!(
        "broker kill -9: statuses {:?}, {} events accepted",
        seen.statuses,
        seen.accepted.len()
    );
    assert!(
        seen.statuses.keys().all(|s| matches!(s, 202 | 503 | 429)),
        "only 202, 503 or 429 while the broker came and went: {:?}",
        seen.statuses
    );
    assert_eq!(
        seen.without_retry_after, 0,
        "every 503 or 429 carries Retry-After"
    );

    // Every 202 lands exactly once; a 503 may have landed part of its batch (under ids nobody was told).
    let want: HashSet<&str> = seen.accepted.iter().map(String::as_str).collect();
    assert_eq!(
        want.len(),
        seen.accepted.len(),
        "the producer never hands out an id twice"
    );
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
            Ok(want.is_subset(&got_set).then_some(()))
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
