//! `sluice-bench`: the stack benchmark. On the local stack (`scripts/stack up`), measures side by side:
//!
//! 1. the raw produce limit: N Avro payloads straight to the broker with rdkafka (same settings as the producer);
//! 2. the raw insert limit: the same rows bulk-inserted in one HTTP POST into an identical table;
//! 3. Sluice's consumer draining that pre-filled topic into ClickHouse, then the lake sink draining it as Parquet,
//!    and ClickHouse's own Kafka engine draining the same events as JSONEachRow (a peer);
//! 4. Sluice's HTTP ingest flat out, then at half that rate (events/s, ack latency);
//! 5. end-to-end freshness at half the co-located pipeline's maximum: HTTP 202 → row visible in ClickHouse;
//! 6. a seed-style FastAPI + confluent-kafka ingest service under the same load (a peer, `seed`);
//! 7. the producer's memory under 10× overload (VmRSS / VmHWM from /proc);
//! 8. fair shares: a quiet tenant's p99 alone and beside a tenant offered 10× its quota;
//!
//! then prints each Sluice figure as a share of its limit and, with `--output`, adds the table to BENCHMARKS.md.
//! The producer and consumer run as real processes from the binaries next to this one (`target/<profile>/`).
//! Every phase is bounded in time; a phase that fails is reported as "not measured" and the rest still run.
//!
//! One module per phase (`raw_limits`, `drain`, `lake`, `kafka_engine`, `interleaved`, `ingest`, `single_event`,
//! `freshness`, `seed`, `overload`, `fairness`), each adding
//! its methods to the shared [`harness::Bench`]; [`Bench::run_phases`] below decides which run and in what order,
//! since later phases compare against the figures of earlier ones.

mod args;
mod drain;
mod fairness;
mod freshness;
mod harness;
mod ingest;
mod interleaved;
mod kafka_engine;
mod lake;
mod overload;
mod raw_limits;
mod report;
mod seed;
mod single_event;
mod stack;

use clap::Parser;
use sluice_benches::report::Row;

use crate::args::Args;
use crate::harness::Bench;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    args.check()?;
    let mut bench = Bench::new(args).await?;
    say(&format!(
        "run {} · {} binaries from {} · scratch {}",
        bench.id,
        bench.profile,
        bench.bin_dir.display(),
        bench.work_dir.display()
    ));
    bench.preflight().await?;
    let mut rows = bench.run_phases().await;
    let versions = bench.stack_versions().await;
    bench.notes.insert(0, format!("Stack: {versions}."));
    if let Some(dir) = &bench.args.criterion_dir {
        rows.extend(report::criterion_rows(dir));
    }
    // Results first: cleanup talks to the broker and ClickHouse, and what it fails at must not cost the run.
    bench.publish(rows)?;
    bench.cleanup().await;
    Ok(())
}

/// Progress for the operator, on stderr so stdout carries only the results table.
pub(crate) fn say(msg: &str) {
    eprintln!("[bench] {msg}");
}

/// What one phase measured, kept for the phases that compare against it.
#[derive(Default)]
pub(crate) struct Figures {
    /// Raw produce limit, events/s.
    pub(crate) produce_limit: Option<f64>,
    /// Raw insert limit, rows/s.
    pub(crate) insert_limit: Option<f64>,
    /// Sluice's HTTP ingest flat out, accepted events/s.
    pub(crate) ingest_max: Option<f64>,
    /// Sluice's HTTP ingest flat out in each interleaved round, accepted events/s.
    pub(crate) ingest_rounds: Vec<f64>,
}

impl Bench {
    /// Runs the selected phases in order and returns their rows; a failed phase becomes a "not measured" row.
    async fn run_phases(&mut self) -> Vec<Row> {
        let mut rows = Vec::new();
        let mut figures = Figures::default();
        // One topic serves produce, consume and drain: the raw produce limit is also what fills it for the others.
        let drain_topic = self.name("drain");
        let needs_payloads = self.phase("produce")
            || self.phase("insert")
            || self.phase("drain")
            || self.phase("lake")
            || self.phase("kafka_engine")
            || self.phase("rounds");
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
                        rows.push(raw_limits::produce_row(&t));
                    }
                    Err(e) => rows.push(Row::failed("Raw produce limit", "—", &e)),
                }
            }
            if self.phase("insert") {
                match self.insert_limit(payloads, "raw").await {
                    Ok(t) => {
                        figures.insert_limit = Some(t.per_second());
                        rows.push(raw_limits::insert_row(&t));
                    }
                    Err(e) => rows.push(Row::failed("Raw insert limit", "—", &e)),
                }
            }
        }
        if self.phase("consume") && topic_filled {
            rows.push(self.consume_limit(&drain_topic).await);
        }
        let mut drain_rate = None;
        if self.phase("drain") {
            let (row, rate) = self
                .drain(&drain_topic, topic_filled, figures.insert_limit)
                .await;
            rows.push(row);
            drain_rate = rate;
            rows.append(&mut self.cpu_rows);
        }
        if self.phase("lake") {
            rows.push(self.lake(&drain_topic, topic_filled, drain_rate).await);
            rows.append(&mut self.cpu_rows);
        }
        if self.phase("kafka_engine")
            && let Some(p) = &payloads
        {
            rows.extend(self.kafka_engine(p, drain_rate).await);
        }
        if self.phase("rounds")
            && let Some(p) = &payloads
        {
            let rounds = self.args.rounds;
            rows.extend(self.interleaved(p, rounds, &mut figures).await);
        }
        // The HTTP phases never use the encoded events: give their memory back before the services run flat out.
        drop(payloads);
        // The seed peer and the overload are set against the ingest maximum.
        if (self.phase("ingest") || self.phase("seed") || self.phase("overload"))
            && let Err(e) = self.ingest(&mut rows, &mut figures).await
        {
            rows.push(Row::failed(
                "Sluice HTTP ingest",
                "≥ 60% of the produce limit",
                &e,
            ));
        }
        if self.phase("freshness") {
            rows.extend(self.freshness().await);
        }
        if self.phase("seed") {
            // The rounds' medians when they ran, so the peer's median stands beside Sluice's.
            let sluice = if figures.ingest_rounds.is_empty() {
                figures.ingest_max.into_iter().collect()
            } else {
                figures.ingest_rounds.clone()
            };
            rows.extend(self.seed(&sluice).await);
        }
        if self.phase("overload") {
            rows.push(self.overload(figures.ingest_max).await);
        }
        if self.phase("fairness") {
            rows.push(self.fairness().await);
        }
        rows
    }
}
