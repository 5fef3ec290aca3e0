//! Helpers shared by the producer's end-to-end tests: a producer served in-process (or as its real binary) against
//! the local broker and registry, reading a topic back, and Kafka's own partitioner.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use rdkafka::consumer::{BaseConsumer, Consumer, StreamConsumer};
use rdkafka::message::{Message, OwnedMessage};
use rdkafka::{Offset, TopicPartitionList};
use sluice_producer::Config;
use sluice_producer::config::{KeyConfig, StreamConfig};
use sluice_tests::{eventually, kafka_settings, registry_url, unique};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// The ingestion key every test config accepts for stream `events` (tenant `demo`).
pub const KEY: &str = "producer-test-key";
/// A key allowed only on stream `other`.
pub const OTHER_KEY: &str = "producer-test-other-key";
/// Partitions of the test topics.
pub const PARTITIONS: i32 = 4;

/// Lowercase hex SHA-256, as keys are configured.
pub fn key_hash(key: &str) -> String {
    sluice_producer::auth::hash_key(key)
}

/// A config for one test: stream `events` and `other` on fresh topics, the local broker and registry.
pub fn config() -> Config {
    let mut c = Config {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        kafka: kafka_settings(),
        registry_url: registry_url(),
        ..Config::default()
    };
    let stream = |topic: String| StreamConfig {
        partitions: PARTITIONS,
        ..StreamConfig::new(&topic, "event")
    };
    c.streams = BTreeMap::from([
        ("events".to_owned(), stream(unique("producer_events"))),
        ("other".to_owned(), stream(unique("producer_other"))),
    ]);
    c.keys = BTreeMap::from([
        (
            key_hash(KEY),
            KeyConfig {
                tenant: "demo".into(),
                streams: vec!["events".into()],
                ..Default::default()
            },
        ),
        (
            key_hash(OTHER_KEY),
            KeyConfig {
                tenant: "demo".into(),
                streams: vec!["other".into()],
                ..Default::default()
            },
        ),
    ]);
    c
}

/// A producer served in-process on an ephemeral port.
pub struct Producer {
    /// `http://127.0.0.1:<port>`.
    pub base: String,
    /// The config it runs with.
    pub config: Config,
    token: CancellationToken,
    handle: JoinHandle<Result<(), sluice_producer::ServeError>>,
}

impl Producer {
    /// Starts `config` and waits until `/healthz` answers (not `/readyz`: some tests want it unready).
    pub async fn start(config: Config) -> anyhow::Result<Self> {
        sluice_tests::init_tracing();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let base = format!("http://{}", listener.local_addr()?);
        let token = CancellationToken::new();
        let handle = tokio::spawn(sluice_producer::serve(
            config.clone(),
            listener,
            token.clone(),
        ));
        let p = Self {
            base,
            config,
            token,
            handle,
        };
        let client = client();
        let url = p.url("/healthz");
        eventually("producer /healthz", Duration::from_secs(60), || {
            let (client, url) = (client.clone(), url.clone());
            let finished = p.handle.is_finished();
            async move {
                anyhow::ensure!(!finished, "serve returned early (see the test log)");
                Ok(client
                    .get(&url)
                    .send()
                    .await
                    .ok()
                    .filter(|r| r.status().is_success())
                    .map(|_| ()))
            }
        })
        .await?;
        Ok(p)
    }

    /// Starts and waits until `/readyz` is 200 (topics created, broker and registry reachable).
    pub async fn ready(config: Config) -> anyhow::Result<Self> {
        let p = Self::start(config).await?;
        let client = client();
        let url = p.url("/readyz");
        eventually("producer /readyz", Duration::from_secs(60), || {
            let (client, url) = (client.clone(), url.clone());
            async move {
                Ok(client
                    .get(&url)
                    .send()
                    .await
                    .ok()
                    .filter(|r| r.status().is_success())
                    .map(|_| ()))
            }
        })
        .await?;
        Ok(p)
    }

    /// `base` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// The ingestion URL of `stream`.
    pub fn events_url(&self, stream: &str) -> String {
        self.url(&format!("/v1/streams/{stream}/events"))
    }

    /// The topic of stream `name`.
    pub fn topic(&self, name: &str) -> String {
        self.config.streams[name].topic.clone()
    }

    /// Graceful shutdown; fails if `serve` returned an error.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.token.cancel();
        tokio::time::timeout(Duration::from_secs(30), self.handle)
            .await
            .context("serve did not stop")???;
        Ok(())
    }
}

/// An HTTP client with a generous timeout (nothing may hang forever).
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap_or_default()
}

/// Sum of the high watermarks of `topic`'s partitions: how many messages were ever written.
pub async fn high_watermarks(topic: &str) -> anyhow::Result<i64> {
    let settings = kafka_settings();
    let topic = topic.to_owned();
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = settings.client_config().create()?;
        let mut total = 0;
        for p in 0..PARTITIONS {
            let (_, high) = consumer.fetch_watermarks(&topic, p, Duration::from_secs(10))?;
            total += high;
        }
        anyhow::Ok(total)
    })
    .await?
}

/// Reads exactly `n` messages from the start of every partition of `topic`.
pub async fn read_all(topic: &str, n: usize) -> anyhow::Result<Vec<OwnedMessage>> {
    let consumer: StreamConsumer = kafka_settings()
        .client_config()
        .set("group.id", unique("producer_reader"))
        .set("enable.auto.commit", "false")
        .set("session.timeout.ms", "6000")
        .create()?;
    let mut tpl = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        tpl.add_partition_offset(topic, p, Offset::Beginning)?;
    }
    consumer.assign(&tpl)?;
    let mut out = Vec::with_capacity(n);
    tokio::time::timeout(Duration::from_secs(60), async {
        while out.len() < n {
            out.push(consumer.recv().await?.detach());
        }
        anyhow::Ok(())
    })
    .await
    .with_context(|| format!("reading {n} messages from {topic}"))??;
    Ok(out)
}

/// Kafka's murmur2 (the Java client's default partitioner; librdkafka's `murmur2_random`).
pub fn murmur2(data: &[u8]) -> u32 {
    const M: u32 = 0x5bd1_e995;
    let mut h: u32 = 0x9747_b28c ^ data.len() as u32;
    let chunks = data.chunks_exact(4);
    let rest = chunks.remainder();
    for c in chunks {
        let mut k = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> 24;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    if rest.len() == 3 {
        h ^= u32::from(rest[2]) << 16;
    }
    if rest.len() >= 2 {
        h ^= u32::from(rest[1]) << 8;
    }
    if !rest.is_empty() {
        h ^= u32::from(rest[0]);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h
}

/// The partition Kafka's default partitioner picks for `key`.
pub fn partition_for(key: &[u8], partitions: i32) -> i32 {
    ((murmur2(key) & 0x7fff_ffff) % partitions as u32) as i32
}

/// A valid event for the `event` schema.
pub fn event(i: usize) -> serde_json::Value {
    serde_json::json!({
        "event_type": "page_view",
        "occurred_at": "2026-11-22T10:00:00.250Z",
        "user_id": format!("user-{}", i % 5),
        "trace_id": format!("trace-{i}"),
        "properties": {"i": i.to_string(), "path": "/pricing"}
    })
}

/// The message key of a consumed message, as text.
pub fn key_of(m: &OwnedMessage) -> String {
    String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned()
}
