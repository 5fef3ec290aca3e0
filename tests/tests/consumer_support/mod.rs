//! Helpers shared by the consumer's end-to-end tests: registering schemas, producing framed Avro events, running
//! the consumer in-process or as a real process, and reading back rows, committed offsets and dead letters.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::Context;
use apache_avro::Schema;
use apache_avro::types::Value;
use apache_avro::writer::datum::GenericDatumWriter;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, OwnedHeaders, OwnedMessage};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
pub use sluice_consumer::config::GroupProtocol;
use sluice_consumer::config::{
    BatchSettings, CLASSIC_ONLY, ClickHouseSettings, Config, RetrySettings, StreamConfig,
};
use sluice_runtime::kafka::{KafkaSettings, TopicSpec, ensure_topics};
use sluice_schemas::catalog;
use sluice_tests::{clickhouse, clickhouse_url, eventually, kafka_settings, registry_url, unique};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// Partitions of every test topic.
pub const PARTITIONS: i32 = 4;

/// One test's private topic, DLQ, subject, group and table.
pub struct Setup {
    pub topic: String,
    pub dlq: String,
    pub subject: String,
    pub group: String,
    pub db: String,
    pub table: String,
    /// The broker the topics live on (the stack's, unless [`Setup::on`] named another).
    pub kafka: KafkaSettings,
}

impl Setup {
    /// Creates the topics on the stack's broker and the database name (the consumer creates the table).
    pub async fn new(prefix: &str) -> anyhow::Result<Self> {
        Self::on(prefix, kafka_settings()).await
    }

    /// Like [`Setup::new`], on the broker of `kafka`.
    pub async fn on(prefix: &str, kafka: KafkaSettings) -> anyhow::Result<Self> {
        let topic = unique(prefix);
        let dlq = format!("{topic}.dlq");
        let db = unique(&format!("{prefix}_db"));
        let s = Self {
            subject: format!("{topic}-value"),
            group: unique(&format!("{prefix}_group")),
            table: format!("{db}.events"),
            db,
            topic,
            dlq,
            kafka,
        };
        ensure_topics(
            &s.kafka,
            &[
                TopicSpec {
                    name: &s.topic,
                    partitions: PARTITIONS,
                    config: vec![],
                },
                TopicSpec {
                    name: &s.dlq,
                    partitions: 1,
                    config: vec![],
                },
            ],
        )
        .await?;
        Ok(s)
    }

    /// A consumer config for this setup: small batches, short timeouts, fast retries.
    pub fn config(&self) -> Config {
        self.config_with_clickhouse(&clickhouse_url())
    }

    /// Like [`Setup::config`], with ClickHouse at `url` (a proxy, for outage tests).
    pub fn config_with_clickhouse(&self, url: &str) -> Config {
        let mut kafka = self.kafka.clone();
        // A killed member is noticed within seconds. KIP-848 (`with_protocol`) takes these from the broker, whose
        // stack config sets its group.consumer.session.timeout.ms to 10 s.
        kafka
            .client
            .insert("session.timeout.ms".into(), "6000".into());
        kafka
            .client
            .insert("heartbeat.interval.ms".into(), "1000".into());
        kafka
            .client
            .insert("statistics.interval.ms".into(), "1000".into());
        let mut stream = StreamConfig::new(&self.topic, &self.table);
        stream.dlq_topic = Some(self.dlq.clone());
        stream.partitions = PARTITIONS;
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            kafka,
            group_id: self.group.clone(),
            registry_url: registry_url(),
            clickhouse: ClickHouseSettings {
                url: url.to_owned(),
                timeout_ms: 5_000,
                ..ClickHouseSettings::default()
            },
            streams: vec![stream],
            batch: BatchSettings {
                max_rows: 500,
                min_rows: 100,
                max_bytes: 1 << 20,
                max_wait_ms: 200,
            },
            retry: RetrySettings {
                initial_backoff_ms: 100,
                max_backoff_ms: 1_000,
            },
            // Poison with an unknown id is dead-lettered after a short wait here; the wait has a test of its own.
            registry_unknown_id_wait_ms: 1_000,
            // Each test's dead letters in a table and group of its own.
            dead_letters: sluice_consumer::dead_letters::DeadLetterSettings {
                table: format!("{}.dead_letters", self.db),
                group_id: format!("{}_dead_letters", self.group),
                ..Default::default()
            },
            shutdown_grace_ms: 5_000,
            ..Config::default()
        }
    }

    /// [`Setup::config`] speaking `protocol`, without the settings that protocol leaves to the broker.
    pub fn config_with_protocol(&self, protocol: GroupProtocol) -> Config {
        let mut c = self.config();
        c.group_protocol = protocol;
        if protocol == GroupProtocol::Consumer {
            c.kafka
                .client
                .retain(|k, _| !CLASSIC_ONLY.contains(&k.as_str()));
        }
        c
    }

    /// Drops the test database (best effort).
    pub async fn cleanup(&self) {
        let _ = clickhouse()
            .query(&format!("DROP DATABASE IF EXISTS {}", self.db))
            .execute()
            .await;
    }

    /// `SELECT count() FROM table FINAL` (0 while the table does not exist).
    pub async fn count_final(&self) -> anyhow::Result<u64> {
        Ok(clickhouse()
            .query(&format!("SELECT count() FROM {} FINAL", self.table))
            .fetch_one()
            .await?)
    }

    /// Waits until `count() FINAL` is exactly `n`.
    pub async fn wait_for_rows(&self, n: u64, timeout: Duration) -> anyhow::Result<()> {
        let last = std::sync::atomic::AtomicU64::new(0);
        eventually(&format!("{n} rows in {}", self.table), timeout, || async {
            let now = self.count_final().await.unwrap_or(0);
            last.store(now, std::sync::atomic::Ordering::SeqCst);
            Ok((now == n).then_some(()))
        })
        .await
        .with_context(|| {
            format!(
                "last count {}",
                last.load(std::sync::atomic::Ordering::SeqCst)
            )
        })
    }

    /// The event ids of `SELECT ... FINAL`, sorted (duplicates kept, so a failed collapse shows).
    pub async fn ids(&self) -> anyhow::Result<Vec<Uuid>> {
        let ids: Vec<String> = clickhouse()
            .query(&format!(
                "SELECT toString(event_id) FROM {} FINAL",
                self.table
            ))
            .fetch_all()
            .await?;
        let mut ids = ids
            .iter()
            .map(|s| Uuid::parse_str(s).context("uuid"))
            .collect::<anyhow::Result<Vec<_>>>()?;
        ids.sort();
        Ok(ids)
    }

    /// Asserts that FINAL holds exactly `want`, each once, with a short report instead of two huge lists.
    pub async fn assert_exactly(&self, want: &[Uuid]) -> anyhow::Result<()> {
        let got = self.ids().await?;
        let mut want = want.to_vec();
        want.sort();
        if got != want {
            let got_set: std::collections::HashSet<&Uuid> = got.iter().collect();
            let want_set: std::collections::HashSet<&Uuid> = want.iter().collect();
            let missing = want_set.difference(&got_set).count();
            let extra = got_set.difference(&want_set).count();
            anyhow::bail!(
                "{} rows for {} wanted ids: {missing} missing, {extra} unexpected, {} duplicated",
                got.len(),
                want.len(),
                got.len() - got_set.len()
            );
        }
        Ok(())
    }

    /// The group's committed offsets and each partition's high watermark.
    pub async fn committed_and_ends(&self) -> anyhow::Result<Vec<(i32, Option<i64>, i64)>> {
        let settings = self.kafka.clone();
        let (topic, group) = (self.topic.clone(), self.group.clone());
        tokio::task::spawn_blocking(move || {
            let consumer: BaseConsumer = settings
                .client_config()
                .set("group.id", &group)
                .set("enable.auto.commit", "false")
                .create()?;
            let mut tpl = TopicPartitionList::new();
            for p in 0..PARTITIONS {
                tpl.add_partition(&topic, p);
            }
            let committed = consumer.committed_offsets(tpl, Duration::from_secs(10))?;
            let mut out = Vec::new();
            for e in committed.elements() {
                let (_, high) =
                    consumer.fetch_watermarks(&topic, e.partition(), Duration::from_secs(10))?;
                let c = match e.offset() {
                    Offset::Offset(o) => Some(o),
                    _ => None,
                };
                out.push((e.partition(), c, high));
            }
            anyhow::Ok(out)
        })
        .await?
    }

    /// Waits until every non-empty partition's committed offset is its high watermark.
    pub async fn wait_committed_at_end(&self, timeout: Duration) -> anyhow::Result<()> {
        eventually(
            "committed offsets at the partition ends",
            timeout,
            || async {
                let v = self.committed_and_ends().await?;
                Ok(v.iter()
                    .all(|(_, c, high)| *high == 0 || *c == Some(*high))
                    .then_some(()))
            },
        )
        .await
    }

    /// Sum of committed offsets (a partition with none counts 0).
    pub async fn committed_total(&self) -> anyhow::Result<i64> {
        Ok(self
            .committed_and_ends()
            .await?
            .iter()
            .map(|(_, c, _)| c.unwrap_or(0))
            .sum())
    }

    /// Every letter in the DLQ.
    pub async fn dead_letters(&self) -> anyhow::Result<Vec<OwnedMessage>> {
        Ok(sluice_consumer::dlq::command::read_all(&self.kafka, &self.dlq).await?)
    }
}

/// The bundled event schema.
pub fn event_schema() -> Schema {
    Schema::parse_str(catalog::EVENT.text).expect("bundled schema parses")
}

/// The event schema plus an optional `plan` field (a compatible v2).
pub fn event_schema_v2_text() -> String {
    let mut json: serde_json::Value = serde_json::from_str(catalog::EVENT.text).expect("json");
    if let Some(fields) = json["fields"].as_array_mut() {
        fields
            .push(serde_json::json!({"name": "plan", "type": ["null", "string"], "default": null}));
    }
    json.to_string()
}

/// Registers `schema` under `subject` in the stack's registry; returns its id.
pub async fn register(subject: &str, schema: &str) -> anyhow::Result<u32> {
    register_at(&registry_url(), subject, schema).await
}

/// Registers `schema` under `subject` in the registry at `base`; returns its id.
pub async fn register_at(base: &str, subject: &str, schema: &str) -> anyhow::Result<u32> {
    let resp = reqwest::Client::new()
        .post(format!("{base}/subjects/{subject}/versions"))
        .header("Content-Type", "application/vnd.schemaregistry.v1+json")
        .json(&serde_json::json!({ "schema": schema }))
        .send()
        .await?;
    let status = resp.status();
    let body: serde_json::Value = resp.json().await?;
    anyhow::ensure!(status.is_success(), "register {subject}: {status} {body}");
    body["id"]
        .as_u64()
        .and_then(|i| u32::try_from(i).ok())
        .context("id in answer")
}

/// An event record for the bundled schema (with `extra` fields appended, for v2).
pub fn event(id: Uuid, event_type: &str, extra: Vec<(String, Value)>) -> Value {
    let now = 1_763_800_000_000i64;
    let mut props = std::collections::HashMap::new();
    props.insert("n".to_string(), Value::String(id.to_string()));
    let mut fields = vec![
        ("event_id".to_string(), Value::Uuid(id)),
        ("tenant".to_string(), Value::String("acme".into())),
        ("event_type".to_string(), Value::String(event_type.into())),
        ("occurred_at".to_string(), Value::TimestampMillis(now)),
        ("received_at".to_string(), Value::TimestampMillis(now + 5)),
        (
            "source".to_string(),
            Value::Union(1, Box::new(Value::String("test".into()))),
        ),
        (
            "user_id".to_string(),
            Value::Union(0, Box::new(Value::Null)),
        ),
        (
            "anonymous_id".to_string(),
            Value::Union(0, Box::new(Value::Null)),
        ),
        (
            "session_id".to_string(),
            Value::Union(0, Box::new(Value::Null)),
        ),
        (
            "trace_id".to_string(),
            Value::Union(0, Box::new(Value::Null)),
        ),
        ("properties".to_string(), Value::Map(props)),
    ];
    fields.extend(extra);
    Value::Record(fields)
}

/// Confluent-framed Avro bytes of `value`.
pub fn framed(schema_id: u32, schema: &Schema, value: Value) -> anyhow::Result<Vec<u8>> {
    let body = GenericDatumWriter::builder(schema)
        .build()?
        .write_value_to_vec(value)?;
    Ok(sluice_schemas::wire::frame(schema_id, &body))
}

/// An idempotent producer on the stack.
pub fn producer() -> anyhow::Result<FutureProducer> {
    Ok(kafka_settings()
        .client_config()
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "5")
        .create()?)
}

/// Sends raw values keyed by `key`, with a `trace` header, waiting for every ack.
pub async fn send_raw(
    producer: &FutureProducer,
    topic: &str,
    items: &[(String, Vec<u8>)],
) -> anyhow::Result<()> {
    let sends = items.iter().map(|(key, value)| {
        let headers = OwnedHeaders::new().insert(Header {
            key: "trace",
            value: Some(key.as_str()),
        });
        producer.send(
            FutureRecord::to(topic)
                .key(key)
                .payload(value)
                .headers(headers),
            Duration::from_secs(30),
        )
    });
    for r in futures::future::join_all(sends).await {
        r.map_err(|(e, _)| e).context("produce")?;
    }
    Ok(())
}

/// Produces `ids` as events of the bundled schema registered as `schema_id`.
pub async fn send_events(
    producer: &FutureProducer,
    topic: &str,
    schema_id: u32,
    ids: &[Uuid],
) -> anyhow::Result<()> {
    let schema = event_schema();
    let items = ids
        .iter()
        .map(|id| {
            Ok((
                id.to_string(),
                framed(schema_id, &schema, event(*id, "page_view", vec![]))?,
            ))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    send_raw(producer, topic, &items).await
}

/// `n` fresh event ids.
pub fn ids(n: usize) -> Vec<Uuid> {
    (0..n).map(|_| Uuid::now_v7()).collect()
}

/// A consumer running in this process.
pub struct InProcess {
    pub addr: SocketAddr,
    pub shutdown: CancellationToken,
    pub task: JoinHandle<Result<(), sluice_consumer::Error>>,
}

impl InProcess {
    /// Starts `config` on an ephemeral port.
    pub async fn start(config: Config) -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(sluice_consumer::serve(config, listener, shutdown.clone()));
        Ok(Self {
            addr,
            shutdown,
            task,
        })
    }

    /// Waits for `/readyz` to answer 200.
    pub async fn ready(&self) -> anyhow::Result<()> {
        wait_ready(self.addr).await
    }

    /// Cancels and waits for a clean exit.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(30), self.task)
            .await
            .context("consumer did not stop")???;
        Ok(())
    }

    /// The value of one metric sample line (`name{labels}` prefix), summed over matching lines.
    pub async fn metric(&self, prefix: &str) -> anyhow::Result<f64> {
        metric(self.addr, prefix).await
    }
}

/// Sums the samples of `/metrics` whose line starts with `prefix`.
pub async fn metric(addr: SocketAddr, prefix: &str) -> anyhow::Result<f64> {
    let text = reqwest::get(format!("http://{addr}/metrics"))
        .await?
        .text()
        .await?;
    Ok(text
        .lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()))
        .sum())
}

/// Waits for `/readyz` on `addr`.
pub async fn wait_ready(addr: SocketAddr) -> anyhow::Result<()> {
    eventually("consumer ready", Duration::from_secs(60), || async move {
        let resp = reqwest::get(format!("http://{addr}/readyz")).await?;
        Ok(resp.status().is_success().then_some(()))
    })
    .await
}

/// A consumer running as a real `sluice-consumer` process (so it can be killed with SIGKILL).
pub struct Process {
    pub child: Child,
    pub addr: SocketAddr,
    config_path: PathBuf,
}

impl Process {
    /// Writes `config` as TOML (on a free port) and starts the binary with it.
    pub fn start(config: &Config) -> anyhow::Result<Self> {
        let addr = free_addr()?;
        Self::spawn(to_toml(config, addr), addr, &[])
    }

    /// Starts `sluice-consumer lake` with `config` and its `[lake]` section (on a free port).
    pub fn start_lake(config: &Config) -> anyhow::Result<Self> {
        let addr = free_addr()?;
        let l = &config.lake;
        let options: Vec<String> = l
            .options
            .iter()
            .map(|(k, v)| format!("{} = {}", q(k), q(v)))
            .collect();
        let toml = format!(
            "{}\n[lake]\nurl = {}\ngroup_id = {}\nlisten = {}\nmax_rows = {}\nmax_bytes = {}\nmax_age_ms = {}\nformat = {}\n\n[lake.options]\n{}\n",
            to_toml(config, free_addr()?),
            q(&l.url),
            q(&l.group_id),
            q(&addr.to_string()),
            l.max_rows,
            l.max_bytes,
            l.max_age_ms,
            q(match l.format {
                sluice_consumer::lake::settings::Format::Parquet => "parquet",
                sluice_consumer::lake::settings::Format::Ndjson => "ndjson",
            }),
            options.join("\n"),
        );
        Self::spawn(toml, addr, &["lake"])
    }

    fn spawn(toml: String, addr: SocketAddr, args: &[&str]) -> anyhow::Result<Self> {
        let config_path = std::env::temp_dir().join(format!("{}.toml", unique("consumer_cfg")));
        std::fs::write(&config_path, toml)?;
        let log = std::fs::File::create(config_path.with_extension("log"))?;
        let mut cmd = Command::new(sluice_tests::service_binary("sluice-consumer")?);
        for k in sluice_tests::sluice_vars() {
            cmd.env_remove(k);
        }
        let child = cmd
            .args(args)
            .env("SLUICE_CONFIG", &config_path)
            .env("RUST_LOG", "info,rdkafka=warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        Ok(Self {
            child,
            addr,
            config_path,
        })
    }

    /// SIGKILL, no goodbye.
    pub fn kill9(&mut self) -> anyhow::Result<()> {
        self.child.kill()?;
        self.child.wait()?;
        Ok(())
    }

    /// SIGTERM and wait for a clean exit.
    pub fn terminate(&mut self) -> anyhow::Result<std::process::ExitStatus> {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status()?;
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            anyhow::ensure!(
                std::time::Instant::now() < deadline,
                "consumer did not exit after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The process's log so far (for failure messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.config_path.with_extension("log")).unwrap_or_default()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.config_path);
        let _ = std::fs::remove_file(self.config_path.with_extension("log"));
    }
}

/// A free loopback port.
fn free_addr() -> anyhow::Result<SocketAddr> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    Ok(SocketAddr::from(([127, 0, 0, 1], port)))
}

fn q(s: &str) -> String {
    serde_json::Value::String(s.to_owned()).to_string()
}

/// The subset of `Config` the tests set, as a TOML file the binary reads.
fn to_toml(c: &Config, listen: SocketAddr) -> String {
    let s = &c.streams[0];
    let client: BTreeMap<&String, &String> = c.kafka.client.iter().collect();
    let client: Vec<String> = client
        .iter()
        .map(|(k, v)| format!("{} = {}", q(k), q(v)))
        .collect();
    format!(
        "listen = {}\ngroup_id = {}\ngroup_protocol = {}\nregistry_url = {}\nshutdown_grace_ms = {}\n\n[kafka]\nbootstrap_servers = {}\n{}\n[kafka.client]\n{}\n\n\
         [clickhouse]\nurl = {}\ntimeout_ms = {}\n\n[batch]\nmax_rows = {}\nmin_rows = {}\nmax_bytes = {}\nmax_wait_ms = {}\n\n\
         [retry]\ninitial_backoff_ms = {}\nmax_backoff_ms = {}\n\n[dead_letters]\nenabled = {}\ntable = {}\ngroup_id = {}\n\n[[streams]]\ntopic = {}\ntable = {}\ndlq_topic = {}\npartitions = {}\n",
        q(&listen.to_string()),
        q(&c.group_id),
        q(c.group_protocol.as_str()),
        q(&c.registry_url),
        c.shutdown_grace_ms,
        q(&c.kafka.bootstrap_servers),
        replication_toml(c),
        client.join("\n"),
        q(&c.clickhouse.url),
        c.clickhouse.timeout_ms,
        c.batch.max_rows,
        c.batch.min_rows,
        c.batch.max_bytes,
        c.batch.max_wait_ms,
        c.retry.initial_backoff_ms,
        c.retry.max_backoff_ms,
        c.dead_letters.enabled,
        q(&c.dead_letters.table),
        q(&c.dead_letters.group_id),
        q(&s.topic),
        q(&s.table),
        q(&s.dlq_topic()),
        s.partitions,
    ) + &cluster_toml(c)
}

/// The `[kafka]` replication keys.
fn replication_toml(c: &Config) -> String {
    let mut out = format!("replication_factor = {}\n", c.kafka.replication_factor);
    if let Some(n) = c.kafka.min_insync_replicas {
        out += &format!("min_insync_replicas = {n}\n");
    }
    out
}

/// The `[clickhouse.cluster]` table, on a cluster.
fn cluster_toml(c: &Config) -> String {
    let mut out = String::new();
    if let Some(cluster) = &c.clickhouse.cluster {
        let shards: Vec<String> = cluster.shards.iter().map(|s| q(s)).collect();
        out += &format!(
            "\n[clickhouse.cluster]\nname = {}\nshards = [{}]\nddl_timeout_ms = {}\n",
            q(&cluster.name),
            shards.join(", "),
            cluster.ddl_timeout_ms
        );
    }
    out
}

/// A TCP proxy to ClickHouse that a test can cut (every open connection dropped, new ones closed at once) and
/// restore, without touching the shared server other tests use.
pub struct Proxy {
    pub url: String,
    up: std::sync::Arc<std::sync::atomic::AtomicBool>,
    conns: std::sync::Arc<std::sync::Mutex<Vec<JoinHandle<()>>>>,
    accept: JoinHandle<()>,
}

impl Proxy {
    /// Listens on an ephemeral port and forwards to `target` (`host:port`).
    pub async fn start(target: &str) -> anyhow::Result<Self> {
        use std::sync::atomic::Ordering;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        let up = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let conns: std::sync::Arc<std::sync::Mutex<Vec<JoinHandle<()>>>> =
            std::sync::Arc::default();
        let target = target.to_owned();
        let accept = tokio::spawn({
            let (up, conns) = (up.clone(), conns.clone());
            async move {
                while let Ok((mut inbound, _)) = listener.accept().await {
                    if !up.load(Ordering::SeqCst) {
                        drop(inbound);
                        continue;
                    }
                    let target = target.clone();
                    let handle = tokio::spawn(async move {
                        if let Ok(mut outbound) = tokio::net::TcpStream::connect(&target).await {
                            let _ =
                                tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                        }
                    });
                    conns.lock().unwrap_or_else(|e| e.into_inner()).push(handle);
                }
            }
        });
        Ok(Self {
            url,
            up,
            conns,
            accept,
        })
    }

    /// Drops every connection and refuses new ones until [`Proxy::restore`].
    pub fn cut(&self) {
        self.up.store(false, std::sync::atomic::Ordering::SeqCst);
        for c in self
            .conns
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
        {
            c.abort();
        }
    }

    /// Forwards again.
    pub fn restore(&self) {
        self.up.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut();
    }
}

/// `host:port` of the stack's ClickHouse.
pub fn clickhouse_addr() -> String {
    clickhouse_url()
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_owned()
}
