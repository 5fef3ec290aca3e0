//! The command line: every knob of the run, with defaults that make `scripts/bench` a full, comparable run.

use std::path::PathBuf;

use clap::Parser;

/// Sluice stack benchmark.
#[derive(Debug, Parser)]
#[command(version, about)]
pub(crate) struct Args {
    /// Kafka bootstrap servers.
    #[arg(long, default_value = "127.0.0.1:9092")]
    pub(crate) kafka: String,
    /// ClickHouse HTTP URL.
    #[arg(long, default_value = "http://127.0.0.1:8123")]
    pub(crate) clickhouse: String,
    /// The legacy ClickHouse (18.16, `scripts/stack up --legacy`) over HTTP: the Kafka engine peer runs there,
    /// since the 26.9 engine from PyPI refuses `ENGINE = Kafka` (`Code: 49 … Shutdown was called`).
    #[arg(long, default_value = "http://127.0.0.1:8124")]
    pub(crate) legacy_clickhouse: String,
    /// Schema registry URL.
    #[arg(long, default_value = "http://127.0.0.1:8081")]
    pub(crate) registry: String,
    /// Events for the produce, insert and drain phases (enough for ~20 of the consumer's 50k-row batches, so the
    /// drain rate does not hinge on where a few batch boundaries fall).
    #[arg(long, default_value_t = 1_000_000)]
    pub(crate) events: usize,
    /// Seconds each HTTP load phase lasts.
    #[arg(long, default_value_t = 15.0)]
    pub(crate) duration: f64,
    /// Connections of the batched HTTP phases. Every request waits for its Kafka ack (linger.ms = 5 included), so
    /// a closed loop tops out near connections × batch / ack latency whatever the server could do: 16 connections
    /// capped Sluice at ~225k events/s with CPU to spare, 64 reach the broker's own limit.
    #[arg(long, default_value_t = 64)]
    pub(crate) connections: usize,
    /// Connections of the one-event-per-request phase (the target is stated over 128).
    #[arg(long, default_value_t = 128)]
    pub(crate) single_connections: usize,
    /// Events per request in the HTTP phases.
    #[arg(long, default_value_t = 100)]
    pub(crate) batch: usize,
    /// Connections during overload (enough that connections × batch exceeds the producer's in-flight bound).
    #[arg(long, default_value_t = 100)]
    pub(crate) overload_connections: usize,
    /// Events per request during overload.
    #[arg(long, default_value_t = 1000)]
    pub(crate) overload_batch: usize,
    /// Overload factor over the measured maximum.
    #[arg(long, default_value_t = 10.0)]
    pub(crate) overload_factor: f64,
    /// Seconds of overload.
    #[arg(long, default_value_t = 20.0)]
    pub(crate) overload_duration: f64,
    /// The noisy tenant's events/s quota in the fairness phase (it is offered 10× that).
    #[arg(long, default_value_t = 10_000.0)]
    pub(crate) fairness_quota: f64,
    /// Directory of the services' config files: the producer runs with `producer.toml` (listen address and topic
    /// overridden by SLUICE_* variables); the consumer's batch settings come from `consumer.toml`.
    #[arg(long, default_value = "config")]
    pub(crate) config_dir: PathBuf,
    /// Override the consumer's `batch.max_rows` (default: as in consumer.toml).
    #[arg(long)]
    pub(crate) consumer_max_rows: Option<usize>,
    /// Where sluice-producer and sluice-consumer are (default: next to this binary).
    #[arg(long)]
    pub(crate) bin_dir: Option<PathBuf>,
    /// Scratch directory for service configs and logs (default: a fresh one under the system temp dir).
    #[arg(long)]
    pub(crate) work_dir: Option<PathBuf>,
    /// Insert the results table into this Markdown file (e.g. BENCHMARKS.md), keeping earlier runs.
    #[arg(long)]
    pub(crate) output: Option<PathBuf>,
    /// Code version to record (e.g. `git describe --always --dirty`).
    #[arg(long, default_value = "unknown")]
    pub(crate) commit: String,
    /// Phases to run, comma-separated: produce,insert,consume,drain,lake,kafka_engine,rounds,ingest,seed,freshness,overload,fairness
    /// (`kafka_engine` and `seed`: the peers; `rounds`:
    /// the produce/ingest and insert/drain pairs again, `--rounds` times each, interleaved, as medians).
    #[arg(
        long,
        default_value = "produce,insert,consume,drain,lake,kafka_engine,rounds,ingest,seed,freshness,overload,fairness"
    )]
    pub(crate) phases: String,
    /// How many interleaved runs of each pair the `rounds` phase makes.
    #[arg(long, default_value_t = 3)]
    pub(crate) rounds: usize,
    /// Criterion's output directory (`target/criterion`): its hot-path figures are added to the table.
    #[arg(long)]
    pub(crate) criterion_dir: Option<PathBuf>,
    /// Record `perf` CPU profiles of the producer at max load and the consumer while draining into this directory.
    #[arg(long)]
    pub(crate) perf_dir: Option<PathBuf>,
    /// Keep the benchmark's topics and tables afterwards.
    #[arg(long)]
    pub(crate) keep: bool,
}

/// Every phase, in the order they run.
pub(crate) const PHASES: [&str; 12] = [
    "produce",
    "insert",
    "consume",
    "drain",
    "lake",
    "kafka_engine",
    "rounds",
    "ingest",
    "seed",
    "freshness",
    "overload",
    "fairness",
];

impl Args {
    /// Rejects sizes and durations that would make a phase empty or unbounded.
    pub(crate) fn check(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.events > 0 && self.duration > 0.0 && self.duration <= 600.0,
            "bad --events or --duration"
        );
        anyhow::ensure!(
            self.overload_duration > 0.0 && self.overload_duration <= 600.0,
            "bad --overload-duration"
        );
        anyhow::ensure!(
            self.connections > 0 && self.single_connections > 0 && self.overload_connections > 0,
            "every --*connections must be at least 1"
        );
        anyhow::ensure!(
            (1..=9).contains(&self.rounds),
            "--rounds must be between 1 and 9"
        );
        // A typo would otherwise silently skip the phase someone meant to measure.
        if let Some(unknown) = self
            .phases
            .split(',')
            .map(str::trim)
            .find(|p| !PHASES.contains(p))
        {
            anyhow::bail!(
                "unknown phase {unknown:?} in --phases; the phases are {}",
                PHASES.join(",")
            );
        }
        Ok(())
    }
}
