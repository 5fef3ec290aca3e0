//! The state every phase shares: the parsed arguments, clients for the stack, where the binaries and scratch files
//! are, and what the run created (removed by [`Bench::cleanup`]) or wants to say under the table.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use sluice_benches::clickhouse::ClickHouse;
use sluice_runtime::kafka::KafkaSettings;

use crate::args::Args;

/// The dev ingestion key of config/producer.toml (tenant `demo`).
pub(crate) const KEY: &str = "dev-key";
/// The database holding every benchmark table.
pub(crate) const DATABASE: &str = "sluice_bench";
/// Partitions of every benchmark topic.
pub(crate) const PARTITIONS: i32 = 4;

/// One benchmark run: its settings, clients and bookkeeping.
pub(crate) struct Bench {
    /// The command line.
    pub(crate) args: Args,
    /// This run's random id, in every topic, table and consumer group it creates.
    pub(crate) id: String,
    /// Broker settings for the raw limits and for topic admin.
    pub(crate) kafka: KafkaSettings,
    /// ClickHouse over HTTP.
    pub(crate) ch: ClickHouse,
    /// The legacy ClickHouse (18.16), for the Kafka engine peer.
    pub(crate) legacy_ch: ClickHouse,
    /// Where sluice-producer and sluice-consumer are.
    pub(crate) bin_dir: PathBuf,
    /// Cargo profile of those binaries (the name of their directory).
    pub(crate) profile: String,
    /// Scratch directory for service configs and logs, and the raw insert's RowBinary file.
    pub(crate) work_dir: PathBuf,
    /// For the registry and the services' metrics.
    pub(crate) http: reqwest::Client,
    /// Topics to delete afterwards.
    pub(crate) topics: Vec<String>,
    /// Tables to drop afterwards.
    pub(crate) tables: Vec<String>,
    /// Remarks printed under the table.
    pub(crate) notes: Vec<String>,
    /// CPU-per-item rows a phase measured beside its own row.
    pub(crate) cpu_rows: Vec<sluice_benches::report::Row>,
}

impl Bench {
    /// Resolves the binary and scratch directories (creating the latter) and builds the clients.
    pub(crate) async fn new(args: Args) -> anyhow::Result<Self> {
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
        Ok(Self {
            kafka: KafkaSettings {
                bootstrap_servers: args.kafka.clone(),
                ..KafkaSettings::default()
            },
            ch: ClickHouse::new(&args.clickhouse)?,
            legacy_ch: ClickHouse::new(&args.legacy_clickhouse)?,
            http: reqwest::Client::builder()
                .no_proxy()
                .timeout(Duration::from_secs(10))
                .build()?,
            id,
            bin_dir,
            profile,
            work_dir,
            topics: Vec::new(),
            tables: Vec::new(),
            notes: Vec::new(),
            cpu_rows: Vec::new(),
            args,
        })
    }

    /// Whether `--phases` selects `name`.
    pub(crate) fn phase(&self, name: &str) -> bool {
        self.args.phases.split(',').any(|p| p.trim() == name)
    }

    /// A topic, table or group name unique to this run, so runs never read each other's data.
    pub(crate) fn name(&self, what: &str) -> String {
        format!("bench_{}_{what}", self.id)
    }
}

impl Bench {
    /// The pid `scripts/stack` recorded for `service` (broker, clickhouse), when it runs one.
    pub(crate) fn stack_pid(&self, service: &str) -> Option<u32> {
        let run = self.args.config_dir.join("../.stack/run");
        std::fs::read_to_string(run.join(format!("{service}.pid")))
            .ok()?
            .trim()
            .parse()
            .ok()
    }
}

/// A row of CPU time per item for each process, with a target on the first one.
pub(crate) fn cpu_row(
    what: &str,
    used: &[(String, f64)],
    items: u64,
    target_us: f64,
    target: &str,
) -> sluice_benches::report::Row {
    use sluice_benches::report::{Row, Verdict};
    let first = used.first().map(|(_, s)| s * 1e6 / items.max(1) as f64);
    Row {
        what: what.into(),
        sluice: sluice_benches::cpu::per_item(used, items),
        limit: "—".into(),
        ratio: None,
        target: target.into(),
        verdict: match first {
            Some(us) if us <= target_us => Verdict::Met,
            Some(_) => Verdict::Missed,
            None => Verdict::Failed("no CPU figures (process gone?)".into()),
        },
    }
}
