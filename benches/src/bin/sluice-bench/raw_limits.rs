//! The limits Sluice is measured against, taken with the plainest client for each system on the same data: the
//! raw produce limit (rdkafka straight to the broker, the producer's settings), the raw insert limit
//! (the same rows as RowBinary in one HTTP POST, with the mapping the consumer uses on that server) and the raw consume limit (rdkafka reading the
//! topic the produce limit filled). The payloads are encoded once, through the producer's own path, so every limit
//! and the drain phase see identical bytes.

use std::time::Duration;

use sluice_benches::events::{EventGen, now_ms};
use sluice_benches::limits::{self, Throughput};
use sluice_benches::payloads::{Encoded, ProducerPath};
use sluice_benches::report::{Row, Verdict, per_s};
use sluice_schemas::clickhouse::Capabilities;

use crate::harness::{Bench, DATABASE};
use crate::say;

impl Bench {
    /// Registers the event schema for `topic` and encodes `--events` distinct events through the producer's path.
    pub(crate) async fn payloads(&mut self, topic: &str) -> anyhow::Result<Vec<Encoded>> {
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

    /// Registers the bundled event schema under `subject`, returning its id for the Confluent framing.
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

    /// Produces `--events` payloads to `topic` with rdkafka (warming up on a topic of its own, so `topic` holds
    /// exactly those events); fails unless every one was acknowledged, since consume and drain need a full topic.
    pub(crate) async fn produce_limit(
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

    /// Bulk-inserts the payloads' rows in one HTTP POST into a fresh table like the one the consumer makes on this
    /// server (named by `what`), and checks the table then holds exactly that many rows.
    pub(crate) async fn insert_limit(
        &mut self,
        payloads: &[Encoded],
        what: &str,
    ) -> anyhow::Result<Throughput> {
        let version = self.ch.version().await?;
        let caps = Capabilities::of_version_text(&version)
            .ok_or_else(|| anyhow::anyhow!("ClickHouse answered version() with {version:?}"))?;
        let rows = limits::rows_of(payloads, caps)?;
        let table = format!("{DATABASE}.{}", self.name(what));
        self.tables.push(table.clone());
        say(&format!(
            "raw insert: {} rows ({} MiB RowBinary) into {table}",
            payloads.len(),
            rows.len() / (1 << 20)
        ));
        let t = limits::raw_insert(&self.ch, caps, &table, rows, payloads.len() as u64).await?;
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

    /// Reads the filled `topic` from its first message with rdkafka's BaseConsumer (the row), then again through
    /// the async StreamConsumer, the way a tokio service reads (a note).
    pub(crate) async fn consume_limit(&mut self, topic: &str) -> Row {
        let group = self.name("raw_consume");
        let row = match limits::raw_consume(
            &self.kafka,
            topic,
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
                Row {
                    what: "Raw consume limit (rdkafka BaseConsumer, same topic, from the first message)"
                        .into(),
                    sluice: "—".into(),
                    limit: per_s(t.per_second(), "events"),
                    ratio: None,
                    target: "—".into(),
                    verdict: Verdict::Reference,
                }
            }
            Err(e) => Row::failed("Raw consume limit", "—", &e),
        };
        let group = self.name("raw_stream_consume");
        match limits::raw_consume_stream(
            &self.kafka,
            topic,
            &group,
            self.args.events as u64,
            Duration::from_secs(120),
        )
        .await
        {
            Ok(t) => self.notes.push(format!(
                "The same topic through rdkafka's async StreamConsumer::recv, one message per await: {}.",
                per_s(t.per_second(), "events")
            )),
            Err(e) => self.notes.push(format!("StreamConsumer read failed: {e:#}")),
        }
        row
    }
}

/// The table row of a measured produce limit.
pub(crate) fn produce_row(t: &Throughput) -> Row {
    Row {
        what: "Raw produce limit (rdkafka, idempotent, acks=all, lz4)".into(),
        sluice: "—".into(),
        limit: per_s(t.per_second(), "events"),
        ratio: None,
        target: "—".into(),
        verdict: Verdict::Reference,
    }
}

/// The table row of a measured insert limit.
pub(crate) fn insert_row(t: &Throughput) -> Row {
    Row {
        what: "Raw insert limit (RowBinary, one bulk HTTP insert)".into(),
        sluice: "—".into(),
        limit: per_s(t.per_second(), "rows"),
        ratio: None,
        target: "—".into(),
        verdict: Verdict::Reference,
    }
}
