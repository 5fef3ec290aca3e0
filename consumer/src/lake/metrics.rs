//! The lake's own figures, beside the consumer metrics it shares (messages consumed, lag, retries, dead letters,
//! offset commits): files, rows and bytes published, and how long a segment takes from roll to commit.

use std::time::Duration;

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts, Registry};

/// Handles on the lake metrics.
#[derive(Clone)]
pub struct LakeMetrics {
    files: IntCounterVec,
    rows: IntCounterVec,
    bytes: IntCounterVec,
    publish_seconds: HistogramVec,
    open_bytes: IntGauge,
}

impl LakeMetrics {
    /// Registers the lake metrics in `registry`.
    pub fn new(registry: &Registry) -> prometheus::Result<Self> {
        let counter = |name: &str, help: &str| -> prometheus::Result<IntCounterVec> {
            let c = IntCounterVec::new(Opts::new(name, help), &["table"])?;
            registry.register(Box::new(c.clone()))?;
            Ok(c)
        };
        let publish_seconds = HistogramVec::new(
            HistogramOpts::new(
                "sluice_lake_publish_duration_seconds",
                "From a segment's roll to its files published (build, manifest, dead letters, puts)",
            )
            .buckets(vec![0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0]),
            &["table"],
        )?;
        registry.register(Box::new(publish_seconds.clone()))?;
        let open_bytes = IntGauge::new(
            "sluice_lake_open_bytes",
            "Bytes of messages read but not yet in a published file",
        )?;
        registry.register(Box::new(open_bytes.clone()))?;
        Ok(Self {
            files: counter("sluice_lake_files_total", "Parquet files published")?,
            rows: counter("sluice_lake_rows_total", "Rows in published Parquet files")?,
            bytes: counter(
                "sluice_lake_bytes_total",
                "Bytes of published Parquet files",
            )?,
            publish_seconds,
            open_bytes,
        })
    }

    /// A segment's files are published.
    pub fn published(&self, table: &str, files: usize, rows: usize, bytes: usize, took: Duration) {
        self.files.with_label_values(&[table]).inc_by(files as u64);
        self.rows.with_label_values(&[table]).inc_by(rows as u64);
        self.bytes.with_label_values(&[table]).inc_by(bytes as u64);
        self.publish_seconds
            .with_label_values(&[table])
            .observe(took.as_secs_f64());
        tracing::debug!(
            table,
            files,
            rows,
            bytes,
            ms = took.as_millis() as u64,
            "segment published"
        );
    }

    /// Bytes held in open segments.
    pub fn open_bytes(&self, bytes: usize) {
        self.open_bytes
            .set(i64::try_from(bytes).unwrap_or(i64::MAX));
    }
}
