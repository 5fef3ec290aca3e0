//! `sluice-bench`: the stack benchmark. On the local stack (`scripts/stack up`), measures side by side:
//!
//! 1. the raw produce limit: N Avro payloads straight to the broker with rdkafka (same settings as the producer);
//! 2. the raw insert limit: the same rows bulk-inserted by `clickhouse-client` into an identical table;
//! 3. Sluice's consumer draining that pre-filled topic into ClickHouse;
//! 4. Sluice's HTTP ingest flat out, then at half that rate (events/s, ack latency);
//! 5. end-to-end freshness at half load: HTTP 202 → row visible in ClickHouse;
//! 6. the producer's memory under 10× overload (VmRSS / VmHWM from /proc);
//!
//! then prints each Sluice figure as a share of its limit and, with `--output`, adds the table to BENCHMARKS.md.
//! The producer and consumer run as real processes from the binaries next to this one (`target/<profile>/`).
//! Every phase is bounded in time; a phase that fails is reported as "not measured" and the rest still run.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use rdkafka::admin::{AdminClient, AdminOptions};
use rdkafka::client::DefaultClientContext;
use sluice_benches::clickhouse::ClickHouse;
use sluice_benches::events::{EventGen, now_ms};
use sluice_benches::limits::{self, NativeEndpoint, Throughput};
use sluice_benches::loadgen::{self, Ack, LoadConfig, LoadReport};
use sluice_benches::payloads::{Encoded, ProducerPath};
use sluice_benches::report::{self, Row, Run, Verdict, per_s};
use sluice_benches::services::{Memory, Perf, Service, free_port};
use sluice_benches::stats::{self, Latency};
use sluice_runtime::kafka::{KafkaSettings, TopicSpec, ensure_topics};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// The dev ingestion key of config/producer.toml (tenant `demo`).
const KEY: &str = "dev-key";
const DATABASE: &str = "sluice_bench";
const PARTITIONS: i32 = 4;

/// Sluice stack benchmark.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Kafka bootstrap servers.
    #[arg(long, default_value = "127.0.0.1:9092")]
    kafka: String,
    /// ClickHouse HTTP URL.
    #[arg(long, default_value = "http://127.0.0.1:8123")]
    clickhouse: String,
    /// ClickHouse native port on 127.0.0.1, for clickhouse-client.
    #[arg(long, default_value_t = 9000)]
    clickhouse_native_port: u16,
    /// Schema registry URL.
    #[arg(long, default_value = "http://127.0.0.1:8081")]
    registry: String,
    /// Events for the produce, insert and drain phases (enough for ~20 of the consumer's 50k-row batches, so the
    /// drain rate does not hinge on where a few batch boundaries fall).
    #[arg(long, default_value_t = 1_000_000)]
    events: usize,
    /// Seconds each HTTP load phase lasts.
    #[arg(long, default_value_t = 15.0)]
    duration: f64,
    /// Connections of the HTTP phases.
    #[arg(long, default_value_t = 16)]
    connections: usize,
    /// Events per request in the HTTP phases.
    #[arg(long, default_value_t = 100)]
    batch: usize,
    /// Connections during overload (enough that connections × batch exceeds the producer's in-flight bound).
    #[arg(long, default_value_t = 100)]
    overload_connections: usize,
    /// Events per request during overload.
    #[arg(long, default_value_t = 1000)]
    overload_batch: usize,
    /// Overload factor over the measured maximum.
    #[arg(long, default_value_t = 10.0)]
    overload_factor: f64,
    /// Seconds of overload.
    #[arg(long, default_value_t = 20.0)]
    overload_duration: f64,
    /// Directory of the services' config files: the producer runs with `producer.toml` (listen address and topic
    /// overridden by SLUICE_* variables); the consumer's batch settings come from `consumer.toml`.
    #[arg(long, default_value = "config")]
    config_dir: PathBuf,
    /// Override the consumer's `batch.max_rows` (default: as in consumer.toml).
    #[arg(long)]
    consumer_max_rows: Option<usize>,
    /// Where sluice-producer and sluice-consumer are (default: next to this binary).
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// Scratch directory for service configs and logs (default: a fresh one under the system temp dir).
    #[arg(long)]
    work_dir: Option<PathBuf>,
    /// Insert the results table into this Markdown file (e.g. BENCHMARKS.md), keeping earlier runs.
    #[arg(long)]
    output: Option<PathBuf>,
    /// Code version to record (e.g. `git describe --always --dirty`).
    #[arg(long, default_value = "unknown")]
    commit: String,
    /// Phases to run, comma-separated: produce,insert,consume,drain,ingest,freshness,overload.
    #[arg(
        long,
        default_value = "produce,insert,consume,drain,ingest,freshness,overload"
    )]
    phases: String,
    /// Criterion's output directory (`target/criterion`): its hot-path figures are added to the table.
    #[arg(long)]
    criterion_dir: Option<PathBuf>,
    /// Record `perf` CPU profiles of the producer at max load and the consumer while draining into this directory.
    #[arg(long)]
    perf_dir: Option<PathBuf>,
    /// Keep the benchmark's topics and tables afterwards.
    #[arg(long)]
    keep: bool,
}

struct Bench {
    args: Args,
    id: String,
    kafka: KafkaSettings,
    ch: ClickHouse,
    bin_dir: PathBuf,
    work_dir: PathBuf,
    http: reqwest::Client,
    topics: Vec<String>,
    tables: Vec<String>,
    notes: Vec<String>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(
        args.events > 0 && args.duration > 0.0 && args.duration <= 600.0,
        "bad --events or --duration"
    );
    anyhow::ensure!(
        args.overload_duration > 0.0 && args.overload_duration <= 600.0,
        "bad --overload-duration"
    );
    let id = uuid::Uuid::new_v4().simple().to_string()[..8].to_owned();
    let exe = std::env::current_exe()?;
    let bin_dir = match &args.bin_dir {
        Some(d) => d.clone(),
        None => exe
            .parent()
            .context("binary has no directory")?
            .to_path_buf(),
    };
    let profile = bin_dir
        .file_name()
        .map_or_else(|| "unknown".into(), |n| n.to_string_lossy().into_owned());
    let work_dir = args
        .work_dir
        .clone()
        .unwrap_or_else(|| std::env::temp_dir().join(format!("sluice-bench-{id}")));
    tokio::fs::create_dir_all(&work_dir).await?;
    let mut bench = Bench {
        kafka: KafkaSettings {
            bootstrap_servers: args.kafka.clone(),
            ..KafkaSettings::default()
        },
        ch: ClickHouse::new(&args.clickhouse)?,
        http: reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(10))
            .build()?,
        id,
        bin_dir,
        work_dir,
        topics: Vec::new(),
        tables: Vec::new(),
        notes: Vec::new(),
        args,
    };
    say(&format!(
        "run {} · {profile} binaries from {} · scratch {}",
        bench.id,
        bench.bin_dir.display(),
        bench.work_dir.display()
    ));
    bench.preflight().await?;
    let mut rows = bench.run_phases().await;
    if let Some(dir) = &bench.args.criterion_dir {
        rows.extend(criterion_rows(dir));
    }
    bench.cleanup().await;

    let date = chrono::Utc::now().format("%Y-%m-%d %H:%M UTC").to_string();
    let mut notes = vec![format!(
        "Settings: {} events for produce/insert/drain; HTTP phases {} s each over {} connections, {} events per request; \
         overload {}× for {} s over {} connections of {} events; producer and consumer at their default config.",
        bench.args.events,
        bench.args.duration,
        bench.args.connections,
        bench.args.batch,
        bench.args.overload_factor,
        bench.args.overload_duration,
        bench.args.overload_connections,
        bench.args.overload_batch
    )];
    notes.append(&mut bench.notes);
    let run = Run {
        date,
        commit: bench.args.commit.clone(),
        profile,
        machine: sluice_benches::machine::describe(),
        rows,
        notes,
    };
    println!("\n{}", run.markdown());
    if let Some(path) = &bench.args.output {
        report::insert(path, &run).with_context(|| format!("writing {}", path.display()))?;
        say(&format!("results added to {}", path.display()));
    }
    Ok(())
}

fn say(msg: &str) {
    eprintln!("[bench] {msg}");
}

/// What one phase measured, kept for the phases that compare against it.
#[derive(Default)]
struct Figures {
    produce_limit: Option<f64>,
    insert_limit: Option<f64>,
    ingest_max: Option<f64>,
}

impl Bench {
    fn phase(&self, name: &str) -> bool {
        self.args.phases.split(',').any(|p| p.trim() == name)
    }

    fn name(&self, what: &str) -> String {
        format!("bench_{}_{what}", self.id)
    }

    async fn preflight(&self) -> anyhow::Result<()> {
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

    async fn run_phases(&mut self) -> Vec<Row> {
        let mut rows = Vec::new();
        let mut figures = Figures::default();
        let drain_topic = self.name("drain");
        let needs_payloads = self.phase("produce") || self.phase("insert") || self.phase("drain");
        let payloads = if needs_payloads {
            match self.payloads(&drain_topic).await {
                Ok(p) => Some(p),
                Err(e) => {
                    rows.push(Row::failed("Avro payloads for the limits", "—", &e));
                    None
                }
            }
        } else {
            None
        };
        let mut topic_filled = false;
        if let Some(payloads) = &payloads {
            if self.phase("produce") {
                match self.produce_limit(&drain_topic, payloads).await {
                    Ok(t) => {
                        figures.produce_limit = Some(t.per_second());
                        topic_filled = t.count as usize >= self.args.events;
                        rows.push(Row {
                            what: "Raw produce limit (rdkafka, idempotent, acks=all, lz4)".into(),
                            sluice: "—".into(),
                            limit: per_s(t.per_second(), "events"),
                            ratio: None,
                            target: "—".into(),
                            verdict: Verdict::Reference,
                        });
                    }
                    Err(e) => rows.push(Row::failed("Raw produce limit", "—", &e)),
                }
            }
            if self.phase("insert") {
                match self.insert_limit(payloads).await {
                    Ok(t) => {
                        figures.insert_limit = Some(t.per_second());
                        rows.push(Row {
                            what:
                                "Raw insert limit (clickhouse-client, RowBinary, one bulk insert)"
                                    .into(),
                            sluice: "—".into(),
                            limit: per_s(t.per_second(), "rows"),
                            ratio: None,
                            target: "—".into(),
                            verdict: Verdict::Reference,
                        });
                    }
                    Err(e) => rows.push(Row::failed("Raw insert limit", "—", &e)),
                }
            }
        }
        if self.phase("consume") && topic_filled {
            let group = self.name("raw_consume");
            match limits::raw_consume(
                &self.kafka,
                &drain_topic,
                &group,
                self.args.events as u64,
                Duration::from_secs(120),
            )
            .await
            {
                Ok(t) => {
                    say(&format!(
                        "raw consume: {} in {:.2} s = {}",
                        t.count,
                        t.seconds,
                        per_s(t.per_second(), "events")
                    ));
                    rows.push(Row {
                        what: "Raw consume limit (rdkafka BaseConsumer, same topic, from the first message)".into(),
                        sluice: "—".into(),
                        limit: per_s(t.per_second(), "events"),
                        ratio: None,
                        target: "—".into(),
                        verdict: Verdict::Reference,
                    });
                }
                Err(e) => rows.push(Row::failed("Raw consume limit", "—", &e)),
            }
            let group = self.name("raw_stream_consume");
            match limits::raw_consume_stream(&self.kafka, &drain_topic, &group, self.args.events as u64, Duration::from_secs(120)).await {
                Ok(t) => self.notes.push(format!(
                    "The same topic through rdkafka's async StreamConsumer::recv, one message per await: {}.",
                    per_s(t.per_second(), "events")
                )),
                Err(e) => self.notes.push(format!("StreamConsumer read failed: {e:#}")),
            }
        }
        if self.phase("drain") {
            let target = "≥ 70% of the insert limit";
            let what = "Consumer drain of a pre-filled topic";
            let result = if topic_filled {
                self.drain(&drain_topic).await
            } else {
                Err(anyhow::anyhow!("needs the produce phase to fill the topic"))
            };
            match result {
                Ok(rate) => rows.push(ratio_row(
                    what,
                    per_s(rate, "rows"),
                    rate,
                    figures.insert_limit,
                    "rows",
                    0.7,
                    target,
                )),
                Err(e) => rows.push(Row::failed(what, target, &e)),
            }
        }
        drop(payloads);
        if self.phase("ingest") || self.phase("freshness") {
            match self.ingest(&mut rows, &mut figures).await {
                Ok(()) => {}
                Err(e) => rows.push(Row::failed(
                    "Sluice HTTP ingest",
                    "≥ 50% of the produce limit",
                    &e,
                )),
            }
        }
        if self.phase("overload") {
            match self.overload(figures.ingest_max).await {
                Ok(row) => rows.push(row),
                Err(e) => rows.push(Row::failed(
                    "Producer memory under overload",
                    "flat, 429s",
                    &e,
                )),
            }
        }
        rows
    }

    /// Registers the event schema for `topic` and encodes `--events` distinct events through the producer's path.
    async fn payloads(&mut self, topic: &str) -> anyhow::Result<Vec<Encoded>> {
        let subject = format!("{topic}-value");
        let schema_id = self.register(&subject).await?;
        say(&format!(
            "encoding {} events (schema id {schema_id})",
            self.args.events
        ));
        let path = ProducerPath::new(schema_id)?;
        let mut gen_ = EventGen::new(7);
        let mut out = Vec::with_capacity(self.args.events);
        let now = now_ms();
        while out.len() < self.args.events {
            let n = (self.args.events - out.len()).min(1000);
            // Every event gets a fresh id, so ReplacingMergeTree never collapses two and counts stay exact.
            out.extend(path.encode_batch(gen_.events(n, now))?);
        }
        Ok(out)
    }

    async fn register(&self, subject: &str) -> anyhow::Result<u32> {
        #[derive(serde::Deserialize)]
        struct Registered {
            id: u32,
        }
        let body = serde_json::json!({ "schema": sluice_schemas::catalog::EVENT.text });
        let resp = self
            .http
            .post(format!(
                "{}/subjects/{subject}/versions",
                self.args.registry
            ))
            .header(
                reqwest::header::CONTENT_TYPE,
                "application/vnd.schemaregistry.v1+json",
            )
            .json(&body)
            .send()
            .await?;
        let status = resp.status();
        let text = resp.text().await?;
        anyhow::ensure!(status.is_success(), "registry answered {status}: {text}");
        Ok(serde_json::from_str::<Registered>(&text)?.id)
    }

    async fn create_topic(&mut self, topic: &str) -> anyhow::Result<()> {
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

    async fn produce_limit(
        &mut self,
        topic: &str,
        payloads: &[Encoded],
    ) -> anyhow::Result<Throughput> {
        self.create_topic(topic).await?;
        let warmup = format!("{topic}_warmup");
        self.create_topic(&warmup).await?;
        say(&format!(
            "raw produce: {} events to {topic}",
            self.args.events
        ));
        let t = limits::raw_produce(
            &self.kafka,
            topic,
            &warmup,
            payloads,
            self.args.events,
            Duration::from_secs(180),
        )
        .await?;
        anyhow::ensure!(
            t.count as usize >= self.args.events,
            "only {} of {} acknowledged within 180 s",
            t.count,
            self.args.events
        );
        say(&format!(
            "raw produce: {} in {:.2} s = {}",
            t.count,
            t.seconds,
            per_s(t.per_second(), "events")
        ));
        Ok(t)
    }

    async fn insert_limit(&mut self, payloads: &[Encoded]) -> anyhow::Result<Throughput> {
        let rows = limits::rows_of(payloads)?;
        let table = format!("{DATABASE}.{}", self.name("raw"));
        self.tables.push(table.clone());
        say(&format!(
            "raw insert: {} rows ({} MiB RowBinary) into {table}",
            payloads.len(),
            rows.len() / (1 << 20)
        ));
        let endpoint = NativeEndpoint {
            host: "127.0.0.1".into(),
            port: self.args.clickhouse_native_port,
        };
        let t = limits::raw_insert(
            &endpoint,
            &table,
            &rows,
            payloads.len() as u64,
            &self.work_dir,
        )
        .await?;
        let counted = self.ch.count(&table).await?;
        anyhow::ensure!(
            counted == t.count,
            "table holds {counted} rows, expected {}",
            t.count
        );
        say(&format!(
            "raw insert: {} rows in {:.2} s = {}",
            t.count,
            t.seconds,
            per_s(t.per_second(), "rows")
        ));
        Ok(t)
    }

    /// A consumer config for one topic → table route, with the batch settings of `consumer.toml`.
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

[[streams]]
topic = "{topic}"
table = "{table}"
bundled_schema = "event"
partitions = {PARTITIONS}
"#,
            group = self.name(&format!("group_{topic}")),
            registry = self.args.registry,
            kafka = self.args.kafka,
            ch = self.args.clickhouse,
            min_rows = base.batch.min_rows,
            max_bytes = base.batch.max_bytes,
            max_wait_ms = base.batch.max_wait_ms,
        ))
    }

    async fn start_consumer(&mut self, topic: &str, table: &str) -> anyhow::Result<Service> {
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

    /// Starts a consumer on the pre-filled topic and times the rows arriving in ClickHouse.
    async fn drain(&mut self, topic: &str) -> anyhow::Result<f64> {
        let table = format!("{DATABASE}.{}", self.name("drain"));
        let expected = self.args.events as u64;
        let started = Instant::now();
        let mut svc = self.start_consumer(topic, &table).await?;
        let perf = self.perf(&svc, "consumer-drain");
        say(&format!(
            "drain: consumer ready after {:.1} s; waiting for {expected} rows in {table}",
            started.elapsed().as_secs_f64()
        ));
        let limit = Duration::from_secs(60).max(Duration::from_millis(expected / 2));
        let deadline = Instant::now() + limit;
        let mut first: Option<(Instant, u64)> = None;
        // The last, partial batch waits batch.max_wait_ms by design (that is freshness, not throughput): the rate
        // is timed from the first visible batch to 90% of the rows.
        let mut steady: Option<(Instant, u64)> = None;
        let mut last_print = Instant::now();
        let result = loop {
            let n = self.ch.count(&table).await.unwrap_or(0);
            let now = Instant::now();
            if n > 0 && first.is_none() {
                first = Some((now, n));
            }
            if n * 10 >= expected * 9 && steady.is_none() {
                steady = Some((now, n));
            }
            if n >= expected {
                break Ok((now, n));
            }
            if now >= deadline {
                break Err(anyhow::anyhow!(
                    "only {n} of {expected} rows after {limit:?}; see {}",
                    svc.log.display()
                ));
            }
            if !svc.running() {
                break Err(anyhow::anyhow!(
                    "consumer exited with {n} of {expected} rows; see {}",
                    svc.log.display()
                ));
            }
            if now.duration_since(last_print) >= Duration::from_secs(1) {
                say(&format!("drain: {n} rows"));
                last_print = now;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        if let Some(p) = perf {
            p.stop().await;
        }
        let metrics = self.scrape(&svc).await.unwrap_or_default();
        svc.stop(Duration::from_secs(20)).await;
        let (done, n) = result?;
        let (t0, c0) = first.unwrap_or((done, n));
        let (t1, c1) = steady.unwrap_or((done, n));
        let rate = if c0 < c1 && t1 > t0 {
            (c1 - c0) as f64 / t1.duration_since(t0).as_secs_f64()
        } else {
            n as f64 / done.duration_since(started).as_secs_f64()
        };
        say(&format!(
            "drain: {n} rows, {} from the first visible batch to 90% of the rows",
            per_s(rate, "rows")
        ));
        self.notes.push(format!(
            "Drain: {n} rows; first rows visible {:.1} s after the consumer started, all after {:.1} s (rate timed from the first batch to 90% of the rows; the last partial batch waits batch.max_wait_ms).",
            t0.duration_since(started).as_secs_f64(),
            done.duration_since(started).as_secs_f64()
        ));
        let (inserts, insert_secs) =
            metric_sum_count(&metrics, "sluice_consumer_insert_duration_seconds");
        let (batches, batch_rows) = metric_sum_count(&metrics, "sluice_consumer_batch_rows");
        if inserts > 0.0 && batches > 0.0 {
            let span = done.duration_since(t0).as_secs_f64().max(1e-9);
            self.notes.push(format!(
                "Drain, from the consumer's metrics: {batches:.0} batches of {:.0} rows on average; {inserts:.0} \
                 inserts of {:.0} ms on average, {:.0}% of the time from the first batch to the last.",
                batch_rows / batches,
                insert_secs / inserts * 1000.0,
                (insert_secs / span * 100.0).min(100.0)
            ));
        }
        Ok(rate)
    }

    /// Starts `perf record` on `svc` when `--perf-dir` is set.
    fn perf(&self, svc: &Service, label: &str) -> Option<Perf> {
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

    /// A service's Prometheus text, for figures only it knows.
    async fn scrape(&self, svc: &Service) -> anyhow::Result<String> {
        let resp = self
            .http
            .get(format!("{}/metrics", svc.base_url))
            .send()
            .await?;
        Ok(resp.text().await?)
    }

    /// A producer from `producer.toml`, serving its `events` stream on a free port and writing to `topic`.
    async fn start_producer(&mut self, topic: &str) -> anyhow::Result<Service> {
        let port = free_port()?;
        let env = [
            ("SLUICE_LISTEN", format!("127.0.0.1:{port}")),
            ("SLUICE_REGISTRY_URL", self.args.registry.clone()),
            ("SLUICE_KAFKA__BOOTSTRAP_SERVERS", self.args.kafka.clone()),
            ("SLUICE_STREAMS__EVENTS__TOPIC", topic.to_owned()),
        ]
        .map(|(k, v)| (k.to_owned(), v));
        self.topics.push(topic.to_owned());
        let config = self.args.config_dir.join("producer.toml");
        let bin = self.bin_dir.join("sluice-producer");
        let dir = self.work_dir.join(format!("producer-{topic}"));
        let mut svc = Service::start("producer", &bin, &config, &env, port, &dir).await?;
        svc.wait_ready(Duration::from_secs(60)).await?;
        Ok(svc)
    }

    fn load(&self, svc: &Service, stream: &str, rate: Option<f64>, duration: f64) -> LoadConfig {
        LoadConfig {
            url: format!("{}/v1/streams/{stream}/events", svc.base_url),
            key: KEY.into(),
            connections: self.args.connections,
            batch: self.args.batch,
            rate,
            duration: Duration::from_secs_f64(duration),
            progress: true,
            ..LoadConfig::default()
        }
    }

    /// Flat out, then half of it; then half of it again on a fresh producer with a consumer behind it (freshness).
    async fn ingest(&mut self, rows: &mut Vec<Row>, figures: &mut Figures) -> anyhow::Result<()> {
        let svc = self.start_producer(&self.name("ingest")).await?;
        let result = self.ingest_with(&svc, rows, figures).await;
        let mem = svc.memory().ok();
        svc.stop(Duration::from_secs(20)).await;
        if let Some(m) = mem {
            self.notes.push(format!(
                "Producer after the ingest phases: RSS {:.0} MiB, peak {:.0} MiB.",
                m.rss_kib as f64 / 1024.0,
                m.hwm_kib as f64 / 1024.0
            ));
        }
        result?;
        if self.phase("freshness") {
            let what = "End-to-end freshness at half load (202 → row visible)";
            let target = "p99 ≤ 2 s";
            let max = figures.ingest_max.unwrap_or(0.0);
            match self.freshness(max / 2.0).await {
                Ok((lat, missing)) => {
                    let verdict = if missing == 0 && lat.count > 0 && lat.p99_ms <= 2000.0 {
                        Verdict::Met
                    } else {
                        Verdict::Missed
                    };
                    rows.push(Row {
                        what: what.into(),
                        sluice: format!(
                            "p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms ({} probes, {missing} never seen)",
                            lat.p50_ms, lat.p99_ms, lat.max_ms, lat.count
                        ),
                        limit: "—".into(),
                        ratio: None,
                        target: target.into(),
                        verdict,
                    });
                }
                Err(e) => rows.push(Row::failed(what, target, &e)),
            }
        }
        Ok(())
    }

    async fn ingest_with(
        &mut self,
        svc: &Service,
        rows: &mut Vec<Row>,
        figures: &mut Figures,
    ) -> anyhow::Result<()> {
        say("ingest: 3 s warm-up");
        loadgen::run(
            LoadConfig {
                progress: false,
                ..self.load(svc, "events", None, 3.0)
            },
            None,
        )
        .await?;
        say(&format!("ingest: flat out for {} s", self.args.duration));
        let perf = self.perf(svc, "producer-max");
        let max = loadgen::run(self.load(svc, "events", None, self.args.duration), None).await;
        if let Some(p) = perf {
            p.stop().await;
        }
        let max = max?;
        say(&format!("ingest max:\n{max}"));
        check_clean("max load", &max)?;
        let max_rate = max.accepted_per_s;
        figures.ingest_max = Some(max_rate);
        if self.phase("ingest") {
            rows.push(ratio_row(
                &format!(
                    "Sluice HTTP ingest, max ({} events/request)",
                    self.args.batch
                ),
                format!(
                    "{} (ack p50 {:.0} ms, p99 {:.0} ms)",
                    per_s(max_rate, "events"),
                    max.ack_latency.p50_ms,
                    max.ack_latency.p99_ms
                ),
                max_rate,
                figures.produce_limit,
                "events",
                0.5,
                "≥ 50% of the produce limit",
            ));
            let half = max_rate / 2.0;
            say(&format!(
                "ingest: half load, {} for {} s",
                per_s(half, "events"),
                self.args.duration
            ));
            let h = loadgen::run(
                self.load(svc, "events", Some(half), self.args.duration),
                None,
            )
            .await?;
            say(&format!("ingest half:\n{h}"));
            rows.push(Row {
                what: "Sluice HTTP ingest, half load: ack latency".into(),
                sluice: format!(
                    "{}: p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
                    per_s(h.accepted_per_s, "events"),
                    h.ack_latency.p50_ms,
                    h.ack_latency.p90_ms,
                    h.ack_latency.p99_ms,
                    h.ack_latency.max_ms
                ),
                limit: "—".into(),
                ratio: None,
                target: "—".into(),
                verdict: if h.statuses.keys().all(|s| s.starts_with('2')) {
                    Verdict::Info
                } else {
                    Verdict::Missed
                },
            });
            // One event per request: what a naive SDK does, and what the seeds' requests/s figure counts. Each request
            // waits for its Kafka ack (linger.ms included), so a closed loop over few connections measures latency,
            // not capacity: this phase offers 8x the connections.
            let single_secs = (self.args.duration / 2.0).max(3.0);
            let single_connections = self.args.connections * 8;
            say(&format!(
                "ingest: single-event requests flat out for {single_secs} s"
            ));
            let single = loadgen::run(
                LoadConfig {
                    batch: 1,
                    connections: single_connections,
                    ..self.load(svc, "events", None, single_secs)
                },
                None,
            )
            .await?;
            say(&format!("ingest single:\n{single}"));
            let req_s = single.requests as f64 / single.elapsed_s.max(1e-9);
            rows.push(Row {
                what: "Sluice HTTP ingest, one event per request".into(),
                sluice: format!(
                    "{} over {single_connections} connections (p50 {:.1} ms, p99 {:.1} ms)",
                    per_s(req_s, "requests"),
                    single.ack_latency.p50_ms,
                    single.ack_latency.p99_ms
                ),
                limit: "—".into(),
                ratio: None,
                target: "beat the seeds' 3.7k requests/s".into(),
                verdict: if req_s > 3700.0 && single.events_accepted == single.requests {
                    Verdict::Met
                } else {
                    Verdict::Missed
                },
            });
            self.notes.push(format!(
                "Ingest statuses: max {:?}; half {:?}; single-event {:?}.",
                max.statuses, h.statuses, single.statuses
            ));
        }
        Ok(())
    }

    /// Sends at `rate` to a fresh producer with a consumer behind it, and times each request's first event from
    /// its 202 to the moment a query first sees its row (polled every 50 ms, so figures are upper bounds).
    async fn freshness(&mut self, rate: f64) -> anyhow::Result<(Latency, usize)> {
        let topic = self.name("fresh");
        let table = format!("{DATABASE}.{}", self.name("fresh"));
        let producer = self.start_producer(&topic).await?;
        let consumer = match self.start_consumer(&topic, &table).await {
            Ok(c) => c,
            Err(e) => {
                producer.stop(Duration::from_secs(20)).await;
                return Err(e);
            }
        };
        say(&format!(
            "freshness: {} for {} s, consumer into {table}",
            per_s(rate, "events"),
            self.args.duration
        ));
        let (tx, rx) = mpsc::channel(100_000);
        let cfg = self.load(&producer, "events", Some(rate), self.args.duration);
        let settle = Duration::from_secs(30);
        let (load, probes) = tokio::join!(
            loadgen::run(cfg, Some(tx)),
            probe_rows(&self.ch, &table, rx, settle)
        );
        consumer.stop(Duration::from_secs(20)).await;
        producer.stop(Duration::from_secs(20)).await;
        let load = load?;
        let (hist, missing) = probes?;
        let lat = Latency::of(&hist);
        say(&format!(
            "freshness load:\n{load}\nfreshness: {lat}, {missing} probes never seen"
        ));
        self.notes.push(format!(
            "Freshness: one probe per accepted request ({} requests at {}); ack latency meanwhile {}.",
            load.requests,
            per_s(load.accepted_per_s, "events"),
            load.ack_latency
        ));
        Ok((lat, missing))
    }

    /// A fresh producer, warmed at half load, then offered `factor`× its maximum by many connections with large
    /// batches (so events wanted in flight exceed its bound); samples VmRSS throughout.
    async fn overload(&mut self, max: Option<f64>) -> anyhow::Result<Row> {
        let max = max.context("needs the ingest phase's maximum")?;
        let topic = self.name("overload");
        let svc = self.start_producer(&topic).await?;
        let result = self.overload_with(&svc, max).await;
        svc.stop(Duration::from_secs(20)).await;
        result
    }

    async fn overload_with(&mut self, svc: &Service, max: f64) -> anyhow::Result<Row> {
        say("overload: 5 s warm-up at half load");
        loadgen::run(
            LoadConfig {
                progress: false,
                ..self.load(svc, "events", Some(max / 2.0), 5.0)
            },
            None,
        )
        .await?;
        let before = svc.memory()?;
        let offered = max * self.args.overload_factor;
        say(&format!(
            "overload: offering {} for {} s",
            per_s(offered, "events"),
            self.args.overload_duration
        ));
        let cfg = LoadConfig {
            connections: self.args.overload_connections,
            batch: self.args.overload_batch,
            ..self.load(svc, "events", Some(offered), self.args.overload_duration)
        };
        let (load, samples) = tokio::join!(
            loadgen::run(cfg, None),
            sample_memory(svc, Duration::from_secs_f64(self.args.overload_duration))
        );
        let load = load?;
        let samples = samples?;
        let after = svc.memory()?;
        say(&format!("overload:\n{load}"));
        let half = samples.len() / 2;
        let peak = |s: &[Memory]| s.iter().map(|m| m.rss_kib).max().unwrap_or(0);
        let (first, second) = (peak(&samples[..half]), peak(&samples[half..]));
        let rejected = load.statuses.get("429").copied().unwrap_or(0);
        // Flat: the second half of the overload peaks no more than 10% (plus 16 MiB of noise) above the first.
        let flat = second as f64 <= first as f64 * 1.10 + 16.0 * 1024.0;
        let mib = |kib: u64| kib as f64 / 1024.0;
        self.notes.push(format!(
            "Overload: offered {} ({} requests), accepted {}; statuses {:?}; RSS before {:.0} MiB, peak in first half {:.0} MiB, \
             second half {:.0} MiB, after {:.0} MiB.",
            per_s(load.offered_per_s, "events"),
            load.requests,
            per_s(load.accepted_per_s, "events"),
            load.statuses,
            mib(before.rss_kib),
            mib(first),
            mib(second),
            mib(after.rss_kib)
        ));
        Ok(Row {
            what: format!(
                "Producer peak RSS under {}× overload",
                self.args.overload_factor
            ),
            sluice: format!(
                "VmHWM {:.0} MiB (RSS {:.0} → {:.0} MiB), {rejected} × 429 of {} requests",
                mib(after.hwm_kib),
                mib(before.rss_kib),
                mib(after.rss_kib),
                load.requests
            ),
            limit: "—".into(),
            ratio: None,
            target: "flat memory, 429s instead of growth".into(),
            verdict: if flat && rejected > 0 {
                Verdict::Met
            } else {
                Verdict::Missed
            },
        })
    }

    async fn cleanup(&self) {
        if self.args.keep {
            say(&format!(
                "keeping topics {:?} and tables {:?}",
                self.topics, self.tables
            ));
            return;
        }
        for t in &self.tables {
            let _ = self.ch.query(&format!("DROP TABLE IF EXISTS {t}")).await;
        }
        // Millions of benchmark events would stay in the stack's log directory (it survives restarts): give the disk back.
        if let Ok(admin) = self
            .kafka
            .client_config()
            .create::<AdminClient<DefaultClientContext>>()
        {
            let names: Vec<&str> = self.topics.iter().map(String::as_str).collect();
            let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
            let _ =
                tokio::time::timeout(Duration::from_secs(15), admin.delete_topics(&names, &opts))
                    .await;
        }
    }
}

/// `(count, sum)` of a histogram in Prometheus text, over all its label sets.
fn metric_sum_count(text: &str, name: &str) -> (f64, f64) {
    let mut count = 0.0;
    let mut sum = 0.0;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((key, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let metric = key.split('{').next().unwrap_or(key);
        let v: f64 = value.parse().unwrap_or(0.0);
        if metric == format!("{name}_count") {
            count += v;
        } else if metric == format!("{name}_sum") {
            sum += v;
        }
    }
    (count, sum)
}

/// Fails when a phase that should run clean saw anything but 2xx.
fn check_clean(what: &str, r: &LoadReport) -> anyhow::Result<()> {
    let bad: Vec<_> = r
        .statuses
        .iter()
        .filter(|(s, _)| !s.starts_with('2'))
        .collect();
    anyhow::ensure!(
        r.events_accepted > 0,
        "{what}: nothing accepted; statuses {:?}",
        r.statuses
    );
    if !bad.is_empty() {
        say(&format!("warning: {what} saw non-2xx answers: {bad:?}"));
    }
    Ok(())
}

fn ratio_row(
    what: &str,
    sluice: String,
    value: f64,
    limit: Option<f64>,
    unit: &str,
    need: f64,
    target: &str,
) -> Row {
    let ratio = limit.filter(|l| *l > 0.0).map(|l| value / l);
    Row {
        what: what.into(),
        sluice,
        limit: limit.map_or_else(|| "not measured".into(), |l| per_s(l, unit)),
        ratio,
        target: target.into(),
        verdict: match ratio {
            Some(r) if r >= need => Verdict::Met,
            Some(_) => Verdict::Missed,
            None => Verdict::Failed("its limit was not measured".into()),
        },
    }
}

/// Collects acks and polls `table` for their event ids until the sender is done and every probe is seen, or
/// `settle` passes after the sender finished.
async fn probe_rows(
    ch: &ClickHouse,
    table: &str,
    mut acks: mpsc::Receiver<Ack>,
    settle: Duration,
) -> anyhow::Result<(hdrhistogram::Histogram<u64>, usize)> {
    let mut hist = stats::histogram();
    let mut pending: HashMap<String, Instant> = HashMap::new();
    let mut sender_done_at: Option<Instant> = None;
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        loop {
            match acks.try_recv() {
                Ok(a) => {
                    pending.insert(a.event_id, a.at);
                }
                Err(mpsc::error::TryRecvError::Empty) => break,
                Err(mpsc::error::TryRecvError::Disconnected) => {
                    sender_done_at.get_or_insert_with(Instant::now);
                    break;
                }
            }
        }
        if let Some(done) = sender_done_at
            && (pending.is_empty() || done.elapsed() >= settle)
        {
            return Ok((hist, pending.len()));
        }
        if pending.is_empty() {
            continue;
        }
        let ids: Vec<&String> = pending.keys().take(5000).collect();
        let list = ids
            .iter()
            .map(|id| format!("'{}'", id.replace('\'', "")))
            .collect::<Vec<_>>()
            .join(",");
        // The UUID column against a set of literals: no per-row string conversion, so polling stays cheap and
        // steals little CPU from the pipeline it measures.
        let sql = format!(
            "SELECT toString(event_id) FROM {table} WHERE event_id IN ({list}) FORMAT TabSeparated"
        );
        let text = match ch.query(&sql).await {
            Ok(t) => t,
            // The consumer creates the table with its first batch.
            Err(e)
                if e.to_string().contains("doesn't exist")
                    || e.to_string().contains("UNKNOWN_TABLE") =>
            {
                continue;
            }
            Err(e) => return Err(e),
        };
        let seen = Instant::now();
        for id in text.lines() {
            if let Some(at) = pending.remove(id.trim()) {
                stats::record(&mut hist, seen.saturating_duration_since(at));
            }
        }
    }
}

async fn sample_memory(svc: &Service, duration: Duration) -> anyhow::Result<Vec<Memory>> {
    let mut samples = Vec::new();
    let end = Instant::now() + duration;
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    while Instant::now() < end {
        tick.tick().await;
        samples.push(svc.memory()?);
    }
    anyhow::ensure!(samples.len() >= 2, "too few memory samples");
    Ok(samples)
}

/// One row per criterion benchmark found under `dir`: median time per element and what that is on one core.
fn criterion_rows(dir: &std::path::Path) -> Vec<Row> {
    #[derive(serde::Deserialize)]
    struct Bench {
        full_id: String,
        throughput: Option<HashMap<String, u64>>,
    }
    #[derive(serde::Deserialize)]
    struct Estimate {
        point_estimate: f64,
    }
    #[derive(serde::Deserialize)]
    struct Estimates {
        median: Estimate,
    }
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    // Bounded walk: criterion's tree is a few levels deep.
    while let Some(d) = stack.pop() {
        if found.len() > 100 {
            break;
        }
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir()
                && path
                    .file_name()
                    .is_some_and(|n| n != "report" && n != "base" && n != "change")
            {
                stack.push(path);
            }
        }
        if d.file_name().is_some_and(|n| n == "new") {
            let read = |name: &str| std::fs::read_to_string(d.join(name)).ok();
            if let (Some(b), Some(e)) = (read("benchmark.json"), read("estimates.json"))
                && let (Ok(b), Ok(e)) = (
                    serde_json::from_str::<Bench>(&b),
                    serde_json::from_str::<Estimates>(&e),
                )
            {
                let per = b
                    .throughput
                    .and_then(|t| t.values().next().copied())
                    .unwrap_or(1)
                    .max(1);
                found.push((b.full_id, e.median.point_estimate / per as f64));
            }
        }
    }
    found.sort_by(|a, b| a.0.cmp(&b.0));
    found
        .into_iter()
        .map(|(id, ns)| Row {
            what: format!("Hot path `{id}` (criterion median)"),
            sluice: format!(
                "{:.2} µs/event = {} on one core",
                ns / 1000.0,
                per_s(1e9 / ns, "events")
            ),
            limit: "—".into(),
            ratio: None,
            target: "—".into(),
            verdict: Verdict::Info,
        })
        .collect()
}
