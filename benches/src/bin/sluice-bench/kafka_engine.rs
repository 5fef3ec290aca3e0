//! ClickHouse's own Kafka table engine as a peer of Sluice's consumer: the same events, on the same broker and
//! ClickHouse, as JSONEachRow lines in a 4-partition topic, read by `ENGINE = Kafka` and moved by a MATERIALIZED
//! VIEW into a table created with the consumer's DDL. Rows/s are timed like the drain phase (`count()` every
//! 100 ms, from the first rows visible to 90% of them), with ClickHouse's CPU per row, for `kafka_num_consumers`
//! 1 and 2 (the box has 2 cores), `--rounds` times when the `rounds` phase runs.
//!
//! The 18.16 engine starts a group with no committed offsets at the log's end, so each run's fresh group gets
//! offset 0 committed on every partition before the Kafka table exists: it then drains the pre-filled topic from
//! its first message, as Sluice's consumer does.

use std::time::Duration;

use apache_avro::types::Value;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::{Offset, TopicPartitionList};
use serde_json::{Map, Value as Json};
use sluice_benches::cpu::CpuMeter;
use sluice_benches::limits;
use sluice_benches::payloads::{ConsumerPath, Encoded};
use sluice_benches::report::{Row, Verdict, per_s};
use sluice_schemas::clickhouse::Capabilities;
use tokio::time::Instant;

use crate::harness::{Bench, DATABASE, PARTITIONS};
use crate::interleaved::spread;
use crate::say;

/// `kafka_num_consumers` settings tried: one consumer, and one per core.
const CONSUMERS: [u32; 2] = [1, 2];

/// What one engine run measured.
struct EngineRun {
    rate: f64,
    /// ClickHouse CPU µs per row over the run (None when its pid is unknown).
    ch_us: Option<f64>,
    rows: u64,
    first_after: f64,
    all_after: f64,
}

impl Bench {
    /// The engine's rows: one per `kafka_num_consumers`, each against Sluice's `drain_rate`, then one CPU row each.
    pub(crate) async fn kafka_engine(
        &mut self,
        payloads: &[Encoded],
        drain_rate: Option<f64>,
    ) -> Vec<Row> {
        let what = "ClickHouse Kafka engine drain (JSONEachRow → MV), on ClickHouse 18.16";
        let target = "Sluice ≥ 2× the Kafka engine";
        let topic = self.name("kafka_engine");
        let database = self
            .legacy_ch
            .query(&format!("CREATE DATABASE IF NOT EXISTS {DATABASE}"))
            .await;
        if let Err(e) = database {
            return vec![Row::failed(
                what,
                target,
                &e.context(
                    "the legacy ClickHouse does not answer; run `scripts/stack up --legacy`",
                ),
            )];
        }
        if let Err(e) = self.fill_json_topic(&topic, payloads).await {
            return vec![Row::failed(
                what,
                target,
                &e.context("filling the JSON topic"),
            )];
        }
        let rounds = if self.phase("rounds") {
            self.args.rounds
        } else {
            1
        };
        let mut runs: Vec<Vec<EngineRun>> = CONSUMERS.iter().map(|_| Vec::new()).collect();
        let mut errors: Vec<Option<anyhow::Error>> = CONSUMERS.iter().map(|_| None).collect();
        for r in 0..rounds {
            for (i, &c) in CONSUMERS.iter().enumerate() {
                say(&format!(
                    "kafka engine: round {}/{rounds}, kafka_num_consumers = {c}",
                    r + 1
                ));
                match self.engine_run(&topic, r, c).await {
                    Ok(run) => runs[i].push(run),
                    Err(e) => {
                        say(&format!("kafka engine: {e:#}"));
                        errors[i].get_or_insert(e);
                    }
                }
            }
        }
        let mut rows = Vec::new();
        let mut cpu_rows = Vec::new();
        for (i, &c) in CONSUMERS.iter().enumerate() {
            let label = format!("{what}, kafka_num_consumers = {c}");
            let done = &runs[i];
            if done.is_empty() {
                let e = errors[i]
                    .take()
                    .unwrap_or_else(|| anyhow::anyhow!("no run completed"));
                rows.push(Row::failed(&label, target, &e));
                continue;
            }
            let rates: Vec<f64> = done.iter().map(|r| r.rate).collect();
            let (median, lo, hi) = spread(&rates);
            let label = if done.len() > 1 {
                format!("{label}, median of {} runs [min–max]", done.len())
            } else {
                label
            };
            let engine = if done.len() > 1 {
                format!(
                    "{} [{}–{}]",
                    per_s(median, "rows"),
                    per_s(lo, "rows"),
                    per_s(hi, "rows")
                )
            } else {
                per_s(median, "rows")
            };
            let ratio = drain_rate.map(|d| d / median.max(1e-9));
            rows.push(Row {
                what: label,
                sluice: drain_rate.map_or_else(
                    || "drain not measured".into(),
                    |d| format!("{} (consumer drain)", per_s(d, "rows")),
                ),
                limit: engine,
                ratio,
                target: target.into(),
                verdict: match ratio {
                    Some(x) if x >= 2.0 => Verdict::Met,
                    Some(_) => Verdict::Missed,
                    None => Verdict::Info,
                },
            });
            let cpu: Vec<f64> = done.iter().filter_map(|r| r.ch_us).collect();
            cpu_rows.push(Row {
                what: format!(
                    "CPU per row, Kafka engine drain (ClickHouse alone: fetch, JSON parse, MV, insert), kafka_num_consumers = {c}"
                ),
                sluice: if cpu.is_empty() {
                    "—".into()
                } else {
                    format!("ClickHouse {:.2} µs", spread(&cpu).0)
                },
                limit: "—".into(),
                ratio: None,
                target: "—".into(),
                verdict: if cpu.is_empty() {
                    Verdict::Failed("ClickHouse's pid is unknown (.stack/run/clickhouse-legacy.pid)".into())
                } else {
                    Verdict::Info
                },
            });
            for (r, run) in done.iter().enumerate() {
                self.notes.push(format!(
                    "Kafka engine, kafka_num_consumers = {c}, run {}: {} rows; first rows visible {:.1} s after the \
                     view was created, all after {:.1} s; {} from the first rows to 90%.",
                    r + 1,
                    run.rows,
                    run.first_after,
                    run.all_after,
                    per_s(run.rate, "rows")
                ));
            }
        }
        rows.append(&mut cpu_rows);
        self.notes.push(
            "Kafka engine peer: what it does not do that Sluice does. No dead-letter queue: on 18.16 a message it \
             cannot parse stops the table's stream (kafka_skip_broken_messages, on later servers, skips such messages \
             and loses them); no schema registry or Avro schema evolution, the topic's JSON must match the Kafka \
             table's columns; at-least-once: a crash between the insert and the offset commit inserts those rows \
             again, and with no stable event id to collapse on (no ReplacingMergeTree-FINAL story) they stay \
             duplicated; batches are what the engine's flush settings make them (max_block_size / \
             kafka_max_block_size rows or stream_flush_interval_ms, 7.5 s by default), with no per-stream tuning \
             for freshness. It also needs the events already shaped as the table's columns (properties as \
             `properties.keys`/`properties.values` arrays, times converted in the view)."
                .into(),
        );
        rows
    }

    /// The same events as JSONEachRow lines, produced to a fresh 4-partition `topic` with the producer's settings.
    async fn fill_json_topic(&mut self, topic: &str, payloads: &[Encoded]) -> anyhow::Result<()> {
        let lines = json_lines(payloads)?;
        self.create_topic(topic).await?;
        let warmup = format!("{topic}_warmup");
        self.create_topic(&warmup).await?;
        say(&format!(
            "kafka engine: producing {} JSONEachRow messages to {topic}",
            lines.len()
        ));
        let t = limits::raw_produce(
            &self.kafka,
            topic,
            &warmup,
            &lines,
            lines.len(),
            Duration::from_secs(180),
        )
        .await?;
        anyhow::ensure!(
            t.count as usize >= lines.len(),
            "only {} of {} JSON messages acknowledged within 180 s",
            t.count,
            lines.len()
        );
        Ok(())
    }

    /// One engine run: a target table with the consumer's DDL, a fresh group at offset 0, the Kafka table, then the
    /// view (which starts the consumption); times the rows arriving, then drops the view and the Kafka table.
    async fn engine_run(
        &mut self,
        topic: &str,
        round: usize,
        consumers: u32,
    ) -> anyhow::Result<EngineRun> {
        let tag = format!("kengine_{round}_{consumers}");
        let table = format!("{DATABASE}.{}", self.name(&tag));
        let queue = format!("{DATABASE}.{}", self.name(&format!("{tag}_queue")));
        let view = format!("{DATABASE}.{}", self.name(&format!("{tag}_mv")));
        let group = self.name(&format!("group_{tag}"));
        // The view and the Kafka table first: cleanup drops in this order, and the engine keeps consuming
        // for as long as both exist.
        self.tables.push(view.clone());
        self.tables.push(queue.clone());
        self.tables.push(table.clone());
        let ddl = ConsumerPath::for_server(None, Capabilities::LEGACY)?.create_table_sql(&table)?;
        self.legacy_ch.query(&ddl).await?;
        self.commit_start(topic, &group).await?;
        self.legacy_ch
            .query(&queue_sql(
                &queue,
                &self.args.kafka,
                topic,
                &group,
                consumers,
            ))
            .await?;
        let expected = self.args.events as u64;
        let processes: Vec<(&str, u32)> = self
            .stack_pid("clickhouse-legacy")
            .map(|pid| ("ClickHouse", pid))
            .into_iter()
            .collect();
        let cpu = CpuMeter::start(&processes);
        let log_from = err_log_len(self);
        let started = Instant::now();
        self.legacy_ch
            .query(&view_sql(&view, &table, &queue))
            .await?;
        let limit = Duration::from_secs(60).max(Duration::from_millis(expected / 2));
        let deadline = started + limit;
        let mut first: Option<(Instant, u64)> = None;
        let mut steady: Option<(Instant, u64)> = None;
        let mut last_print = Instant::now();
        let result = loop {
            let n = self.legacy_ch.count(&table).await.unwrap_or(0);
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
                    "only {n} of {expected} rows after {limit:?}{}",
                    engine_errors(self, log_from)
                ));
            }
            if now.duration_since(last_print) >= Duration::from_secs(1) {
                say(&format!("kafka engine: {n} rows"));
                last_print = now;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let used = cpu.stop();
        // Stop the engine before anything else: the view first, so no block is half-pushed into a dropped table.
        let _ = self
            .legacy_ch
            .query(&format!("DROP TABLE IF EXISTS {view}"))
            .await;
        let _ = self
            .legacy_ch
            .query(&format!("DROP TABLE IF EXISTS {queue}"))
            .await;
        let (done, n) = result?;
        let (t0, c0) = first.unwrap_or((done, n));
        let (t1, c1) = steady.unwrap_or((done, n));
        // One block may carry most of the topic, so the first rows may already be 90% of them: then the rate is
        // timed from the view's creation, which includes the engine's group join.
        let rate = if c0 < c1 && t1 > t0 {
            (c1 - c0) as f64 / t1.duration_since(t0).as_secs_f64()
        } else {
            n as f64 / done.duration_since(started).as_secs_f64()
        };
        let ch_us = used.first().map(|(_, s)| s * 1e6 / n.max(1) as f64);
        say(&format!(
            "kafka engine: {n} rows, {}, ClickHouse {} µs/row",
            per_s(rate, "rows"),
            ch_us.map_or_else(|| "?".into(), |u| format!("{u:.2}"))
        ));
        Ok(EngineRun {
            rate,
            ch_us,
            rows: n,
            first_after: t0.duration_since(started).as_secs_f64(),
            all_after: done.duration_since(started).as_secs_f64(),
        })
    }

    /// Commits offset 0 on every partition of `topic` for the empty `group`, so the engine reads from the start.
    async fn commit_start(&self, topic: &str, group: &str) -> anyhow::Result<()> {
        let mut cfg = self.kafka.client_config();
        cfg.set("group.id", group)
            .set("enable.auto.commit", "false");
        let consumer: BaseConsumer = cfg.create()?;
        let mut tpl = TopicPartitionList::new();
        for p in 0..PARTITIONS {
            tpl.add_partition_offset(topic, p, Offset::Offset(0))?;
        }
        tokio::task::spawn_blocking(move || consumer.commit(&tpl, CommitMode::Sync)).await??;
        Ok(())
    }
}

/// `CREATE TABLE ... ENGINE = Kafka` with columns as the JSON carries them (times as epoch milliseconds, the
/// event id as text), valid on 18.16 and on current servers.
fn queue_sql(queue: &str, brokers: &str, topic: &str, group: &str, consumers: u32) -> String {
    format!(
        "CREATE TABLE {queue} (event_id String, tenant String, event_type String, occurred_at UInt64, \
         received_at UInt64, source Nullable(String), user_id Nullable(String), anonymous_id Nullable(String), \
         session_id Nullable(String), trace_id Nullable(String), `properties.keys` Array(String), \
         `properties.values` Array(String)) ENGINE = Kafka SETTINGS kafka_broker_list = '{brokers}', \
         kafka_topic_list = '{topic}', kafka_group_name = '{group}', kafka_format = 'JSONEachRow', \
         kafka_num_consumers = {consumers}"
    )
}

/// The view moving the engine's blocks into the consumer-DDL table, converting what JSON cannot carry.
fn view_sql(view: &str, table: &str, queue: &str) -> String {
    format!(
        "CREATE MATERIALIZED VIEW {view} TO {table} AS SELECT toUUID(event_id) AS event_id, tenant, event_type, \
         toDateTime(intDiv(occurred_at, 1000)) AS occurred_at, toDateTime(intDiv(received_at, 1000)) AS received_at, \
         source, user_id, anonymous_id, session_id, trace_id, `properties.keys`, `properties.values` FROM {queue}"
    )
}

/// One JSONEachRow line per payload: the Avro record's fields under the consumer table's column names.
fn json_lines(payloads: &[Encoded]) -> anyhow::Result<Vec<Encoded>> {
    let path = ConsumerPath::for_server(None, Capabilities::LEGACY)?;
    let datum = path.datum_reader()?;
    payloads
        .iter()
        .map(|p| {
            let (_, mut body) = sluice_schemas::wire::unframe(&p.payload)?;
            let value = datum.read_value(&mut body)?;
            let mut line = serde_json::to_vec(&row_json(value)?)?;
            line.push(b'\n');
            Ok(Encoded {
                key: p.key.clone(),
                payload: line,
            })
        })
        .collect()
}

fn row_json(value: Value) -> anyhow::Result<Json> {
    let Value::Record(fields) = value else {
        anyhow::bail!("not a record");
    };
    let mut out = Map::new();
    for (name, v) in fields {
        if name == "properties" {
            let Value::Map(map) = v else {
                anyhow::bail!("properties is not a map");
            };
            let mut entries: Vec<(String, Value)> = map.into_iter().collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            let (keys, values): (Vec<Json>, Vec<Json>) = entries
                .into_iter()
                .map(|(k, v)| Ok((Json::String(k), scalar(v)?)))
                .collect::<anyhow::Result<Vec<_>>>()?
                .into_iter()
                .unzip();
            out.insert("properties.keys".into(), Json::Array(keys));
            out.insert("properties.values".into(), Json::Array(values));
        } else {
            out.insert(name, scalar(v)?);
        }
    }
    Ok(Json::Object(out))
}

fn scalar(v: Value) -> anyhow::Result<Json> {
    Ok(match v {
        Value::Null => Json::Null,
        Value::String(s) => Json::String(s),
        Value::Uuid(u) => Json::String(u.to_string()),
        Value::Long(n) | Value::TimestampMillis(n) => Json::from(n),
        Value::Union(_, inner) => scalar(*inner)?,
        other => anyhow::bail!("unexpected Avro value {other:?}"),
    })
}

/// ClickHouse's error log, next to the stack's pid files.
fn err_log(bench: &Bench) -> std::path::PathBuf {
    bench
        .args
        .config_dir
        .join("../.stack/logs/clickhouse-legacy-server.err.log")
}

fn err_log_len(bench: &Bench) -> u64 {
    std::fs::metadata(err_log(bench)).map_or(0, |m| m.len())
}

/// The Kafka-related lines ClickHouse logged since `from` (bytes into its error log), for a failed run's row.
fn engine_errors(bench: &Bench, from: u64) -> String {
    let Ok(text) = std::fs::read(err_log(bench)) else {
        return String::new();
    };
    let tail = String::from_utf8_lossy(text.get(from as usize..).unwrap_or_default());
    let lines: Vec<&str> = tail
        .lines()
        .filter(|l| {
            (l.contains("Kafka") || l.contains("rdk") || l.contains("librdkafka"))
                && !l.contains("doesn't exist")
                // A log entry starts with its date; continuation lines and stack frames do not.
                && l.starts_with(char::is_numeric)
                && l.len() >= 20
        })
        .collect();
    match lines.last() {
        Some(l) => format!(
            "; ClickHouse's log ({}): {}",
            err_log(bench).display(),
            l.chars().take(400).collect::<String>()
        ),
        None => format!(
            "; nothing about Kafka in {} since the view was created",
            err_log(bench).display()
        ),
    }
}
