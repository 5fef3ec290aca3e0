//! What the phases need from the local stack: a preflight check, topics, the producer and consumer under test as
//! real processes (configs, readiness, metrics, `perf` profiles), load against them, and cleanup afterwards.

use std::time::Duration;

use anyhow::Context;
use rdkafka::admin::{AdminClient, AdminOptions};
use rdkafka::client::DefaultClientContext;
use sluice_benches::loadgen::LoadConfig;
use sluice_benches::services::{Perf, Service, free_port};
use sluice_runtime::kafka::{TopicSpec, ensure_topics};

use crate::harness::{Bench, DATABASE, KEY, PARTITIONS};
use crate::say;

impl Bench {
    /// Fails fast, with the fix, when the broker, ClickHouse or the registry is not up.
    pub(crate) async fn preflight(&self) -> anyhow::Result<()> {
        sluice_runtime::kafka::ping(&self.kafka, Duration::from_secs(5))
            .await
            .map_err(|e| {
                anyhow::anyhow!(
                    "broker at {} does not answer ({e}); run `scripts/stack up`",
                    self.args.kafka
                )
            })?;
        self.ch
            .query(&format!("CREATE DATABASE IF NOT EXISTS {DATABASE}"))
            .await
            .context("ClickHouse does not answer; run `scripts/stack up`")?;
        let ok = self
            .http
            .get(format!("{}/subjects", self.args.registry))
            .send()
            .await
            .map(|r| r.status().is_success());
        anyhow::ensure!(
            matches!(ok, Ok(true)),
            "schema registry at {} does not answer; run `scripts/stack up`",
            self.args.registry
        );
        Ok(())
    }

    /// Drops the run's tables and deletes its topics, unless `--keep`; best effort, as the results are already in.
    pub(crate) async fn cleanup(&self) {
        if self.args.keep {
            say(&format!(
                "keeping topics {:?} and tables {:?}",
                self.topics, self.tables
            ));
            return;
        }
        // The Kafka engine's tables are on the legacy server, everything else on the stack's: a table is on one.
        for t in &self.tables {
            for ch in [&self.ch, &self.legacy_ch] {
                let _ = ch.query(&format!("DROP TABLE IF EXISTS {t}")).await;
            }
        }
        // Millions of benchmark events would stay in the stack's log directory (it survives restarts): give the disk back.
        if let Ok(admin) = self
            .kafka
            .client_config()
            .create::<AdminClient<DefaultClientContext>>()
        {
            let mut names: Vec<&str> = self.topics.iter().map(String::as_str).collect();
            names.sort_unstable();
            names.dedup();
            let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
            // A few at a time: one request for every topic of a full run (20-odd) ended in a segfault inside
            // librdkafka's result parsing (rd_kafka_topic_result_name on a NULL result) once.
            for chunk in names.chunks(4) {
                let _ = tokio::time::timeout(
                    Duration::from_secs(15),
                    admin.delete_topics(chunk, &opts),
                )
                .await;
            }
        }
    }

    /// Creates `topic` with the benchmark's partitions and remembers it for cleanup.
    pub(crate) async fn create_topic(&mut self, topic: &str) -> anyhow::Result<()> {
        ensure_topics(
            &self.kafka,
            &[TopicSpec {
                name: topic,
                partitions: PARTITIONS,
                config: vec![],
            }],
        )
        .await?;
        self.topics.push(topic.to_owned());
        Ok(())
    }

    /// A consumer config for one topic → table route, with the batch settings of `consumer.toml`.
    /// The consumer group of the consumer [`Bench::start_consumer`] starts on `topic`.
    pub(crate) fn consumer_group(&self, topic: &str) -> String {
        self.name(&format!("group_{topic}"))
    }

    fn consumer_config(&self, port: u16, topic: &str, table: &str) -> anyhow::Result<String> {
        let path = self.args.config_dir.join("consumer.toml");
        let base: sluice_consumer::Config =
            sluice_runtime::config_file::load_from(Some(&path), std::iter::empty())?;
        let max_rows = self.args.consumer_max_rows.unwrap_or(base.batch.max_rows);
        Ok(format!(
            r#"listen = "127.0.0.1:{port}"
group_id = "{group}"
registry_url = "{registry}"

[kafka]
bootstrap_servers = "{kafka}"

[kafka.client]
"session.timeout.ms" = "6000"

[clickhouse]
url = "{ch}"
database = "{DATABASE}"

[batch]
max_rows = {max_rows}
min_rows = {min_rows}
max_bytes = {max_bytes}
max_wait_ms = {max_wait_ms}

# Its once-a-second snapshots would be CPU the consumer's per-row figure counts.
[dashboard]
enabled = false

# The run's own copier group, so runs and the dev stack never rebalance each other's.
[dead_letters]
group_id = "{group}_dead_letters"

[[streams]]
topic = "{topic}"
table = "{table}"
bundled_schema = "event"
partitions = {PARTITIONS}
"#,
            group = self.consumer_group(topic),
            registry = self.args.registry,
            kafka = self.args.kafka,
            ch = self.args.clickhouse,
            min_rows = base.batch.min_rows,
            max_bytes = base.batch.max_bytes,
            max_wait_ms = base.batch.max_wait_ms,
        ))
    }

    /// A ready consumer on a free port, reading `topic` into `table` (both, and its DLQ, remembered for cleanup).
    pub(crate) async fn start_consumer(
        &mut self,
        topic: &str,
        table: &str,
    ) -> anyhow::Result<Service> {
        let port = free_port()?;
        let config = self.consumer_config(port, topic, table)?;
        self.tables.push(table.to_owned());
        self.topics.push(format!("{topic}.dlq"));
        let dir = self.work_dir.join(format!("consumer-{topic}"));
        tokio::fs::create_dir_all(&dir).await?;
        let config_path = dir.join("consumer.toml");
        tokio::fs::write(&config_path, config).await?;
        let bin = self.bin_dir.join("sluice-consumer");
        let mut svc = Service::start("consumer", &bin, &config_path, &[], port, &dir).await?;
        svc.wait_ready(Duration::from_secs(60)).await?;
        Ok(svc)
    }

    /// Starts `sluice-consumer lake` on `topic`, writing Parquet under `lake_dir` in a group of its own.
    pub(crate) async fn start_lake(
        &mut self,
        topic: &str,
        lake_dir: &std::path::Path,
    ) -> anyhow::Result<Service> {
        let port = free_port()?;
        let table = format!("{DATABASE}.{}", self.name("lake"));
        let mut config = self.consumer_config(free_port()?, topic, &table)?;
        config.push_str(&format!(
            "\n[lake]\nurl = \"{}\"\ngroup_id = \"{}\"\nlisten = \"127.0.0.1:{port}\"\n",
            lake_dir.display(),
            self.name(&format!("lake_{topic}")),
        ));
        self.topics.push(format!("{topic}.dlq"));
        let dir = self.work_dir.join(format!("lake-{topic}"));
        tokio::fs::create_dir_all(&dir).await?;
        let config_path = dir.join("consumer.toml");
        tokio::fs::write(&config_path, config).await?;
        let bin = self.bin_dir.join("sluice-consumer");
        let mut svc =
            Service::start_with_args("lake", &bin, &["lake"], &config_path, &[], port, &dir)
                .await?;
        svc.wait_ready(Duration::from_secs(60)).await?;
        Ok(svc)
    }

    /// A producer from `producer.toml`, serving its `events` stream on a free port and writing to `topic`.
    pub(crate) async fn start_producer(&mut self, topic: &str) -> anyhow::Result<Service> {
        let config = self.args.config_dir.join("producer.toml");
        self.start_producer_with(topic, &config, Vec::new()).await
    }

    /// [`Bench::start_producer`] from `config`, with `extra` environment settings on top.
    pub(crate) async fn start_producer_with(
        &mut self,
        topic: &str,
        config: &std::path::Path,
        extra: Vec<(String, String)>,
    ) -> anyhow::Result<Service> {
        let port = free_port()?;
        let mut env: Vec<(String, String)> = [
            ("SLUICE_LISTEN", format!("127.0.0.1:{port}")),
            ("SLUICE_REGISTRY_URL", self.args.registry.clone()),
            ("SLUICE_KAFKA__BOOTSTRAP_SERVERS", self.args.kafka.clone()),
            ("SLUICE_STREAMS__EVENTS__TOPIC", topic.to_owned()),
            // The Segment API's stream gets a topic of the run's own too, never the dev stack's.
            ("SLUICE_STREAMS__SEGMENT__TOPIC", format!("{topic}_segment")),
        ]
        .map(|(k, v)| (k.to_owned(), v))
        .into();
        env.extend(extra);
        self.topics.push(topic.to_owned());
        self.topics.push(format!("{topic}_segment"));
        let bin = self.bin_dir.join("sluice-producer");
        let dir = self.work_dir.join(format!("producer-{topic}"));
        let mut svc = Service::start("producer", &bin, config, &env, port, &dir).await?;
        svc.wait_ready(Duration::from_secs(60)).await?;
        Ok(svc)
    }

    /// Starts `perf record` on `svc` when `--perf-dir` is set.
    pub(crate) fn perf(&self, svc: &Service, label: &str) -> Option<Perf> {
        let dir = self.args.perf_dir.as_ref()?;
        let _ = std::fs::create_dir_all(dir);
        let out = dir.join(format!("{label}.data"));
        let p = Perf::attach(svc.pid(), &out);
        if p.is_some() {
            say(&format!(
                "perf: recording pid {} into {}",
                svc.pid(),
                out.display()
            ));
        }
        p
    }

    /// `Apache Kafka 4.4.0, ClickHouse 26.9.2.1, the Kafka engine peer on ClickHouse 18.16.1`: what the run measured against, from the running broker's class
    /// path (`scripts/stack` installs one version per directory) and ClickHouse's `version()`.
    pub(crate) async fn stack_versions(&self) -> String {
        let kafka = self
            .stack_pid("broker")
            .and_then(|pid| std::fs::read(format!("/proc/{pid}/cmdline")).ok())
            .and_then(|cmd| {
                let cmd = String::from_utf8_lossy(&cmd).into_owned();
                let at = cmd.find("/kafka-")? + "/kafka-".len();
                let version: String = cmd[at..]
                    .chars()
                    .take_while(|c| c.is_ascii_digit() || *c == '.')
                    .collect();
                (!version.is_empty()).then_some(version)
            })
            .map_or_else(
                || "Kafka at --kafka (version unknown: not the stack's broker)".into(),
                |v| format!("Apache Kafka {v} (KRaft, one node)"),
            );
        let clickhouse = match self.ch.version().await {
            Ok(v) => format!("ClickHouse {v}"),
            Err(e) => format!("ClickHouse version unknown ({e})"),
        };
        let legacy = match self.legacy_ch.version().await {
            Ok(v) => format!("the Kafka engine peer on ClickHouse {v}"),
            Err(_) => "no legacy ClickHouse for the Kafka engine peer".into(),
        };
        format!("{kafka}, {clickhouse}, {legacy}")
    }

    /// A service's Prometheus text, for figures only it knows.
    pub(crate) async fn scrape(&self, svc: &Service) -> anyhow::Result<String> {
        let resp = self
            .http
            .get(format!("{}/metrics", svc.base_url))
            .send()
            .await?;
        Ok(resp.text().await?)
    }

    /// Load on `svc`'s `stream` with the HTTP phases' connections and batch; `rate: None` is flat out.
    pub(crate) fn load(
        &self,
        svc: &Service,
        stream: &str,
        rate: Option<f64>,
        duration: f64,
    ) -> LoadConfig {
        self.load_at(&svc.base_url, stream, rate, duration)
    }

    /// [`Bench::load`] on any server that serves the producer's route at `base_url` (the seed-style peer).
    pub(crate) fn load_at(
        &self,
        base_url: &str,
        stream: &str,
        rate: Option<f64>,
        duration: f64,
    ) -> LoadConfig {
        LoadConfig {
            url: format!("{base_url}/v1/streams/{stream}/events"),
            key: KEY.into(),
            connections: self.args.connections,
            batch: self.args.batch,
            rate,
            duration: Duration::from_secs_f64(duration),
            progress: true,
            ..LoadConfig::default()
        }
    }
}
