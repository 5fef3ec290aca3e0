//! The `[lake]` section: where files go and in which format, which streams, and when a file is rolled.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;

/// The lake sink's settings; it runs as `sluice-consumer lake`, in a consumer group of its own.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LakeSettings {
    /// Where files go: a local directory (a path or `file://` URL) or `s3://bucket/prefix`, `gs://…`, `az://…`.
    /// Default `.stack/lake` (relative to the working directory).
    #[serde(default = "default_url")]
    pub url: String,
    /// Passed to the object store's builder, e.g. `aws_endpoint`, `aws_access_key_id`, `aws_allow_http`.
    /// `AWS_*`, `GOOGLE_*` and `AZURE_*` variables are read as well.
    #[serde(default)]
    pub options: BTreeMap<String, String>,
    /// The lake's own consumer group, so it scales apart from the ClickHouse writers. Default `sluice-lake`.
    #[serde(default = "default_group")]
    pub group_id: String,
    /// Ops endpoints of the lake process. Default `127.0.0.1:8083`.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Topics to write; default every configured stream.
    #[serde(default)]
    pub topics: Vec<String>,
    /// A file is rolled at this many messages. Default 100000.
    #[serde(default = "default_max_rows")]
    pub max_rows: usize,
    /// … or at this many bytes of Avro values. Default 64 MiB.
    #[serde(default = "default_max_bytes")]
    pub max_bytes: usize,
    /// … or this many milliseconds after its first message was read. Default 60000.
    #[serde(default = "default_max_age_ms")]
    pub max_age_ms: u64,
    /// Messages held in open files across all partitions; past it the largest is rolled early. Default 256 MiB.
    #[serde(default = "default_max_buffer_bytes")]
    pub max_buffer_bytes: usize,
    /// Parquet compression: `zstd` (default), `snappy` or `none`.
    #[serde(default)]
    pub compression: Compression,
    /// What the files hold: `parquet` (default) or `ndjson` (gzip-compressed newline-delimited JSON).
    #[serde(default)]
    pub format: Format,
}

/// What a lake file holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// Parquet, compressed as `compression` says: the columnar files warehouses, Spark and DuckDB read.
    #[default]
    Parquet,
    /// Newline-delimited JSON, one object per event, gzip-compressed: for ML datasets, `jq` and pandas.
    Ndjson,
}

impl Format {
    /// The data files' extension.
    pub fn extension(self) -> &'static str {
        match self {
            Format::Parquet => "parquet",
            Format::Ndjson => "ndjson.gz",
        }
    }

    /// The directory under `_sluice/` of this format's manifests, so a Parquet and an NDJSON lake can share a
    /// root without reading each other's segments.
    pub fn manifests(self) -> &'static str {
        match self {
            Format::Parquet => "segments",
            Format::Ndjson => "segments-ndjson",
        }
    }
}

/// How Parquet pages are compressed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// Zstandard, level 1: smaller files than snappy for about the same CPU.
    #[default]
    Zstd,
    /// Snappy, the common default of other writers.
    Snappy,
    /// Uncompressed.
    None,
}

impl Default for LakeSettings {
    fn default() -> Self {
        Self {
            url: default_url(),
            options: BTreeMap::new(),
            group_id: default_group(),
            listen: default_listen(),
            topics: Vec::new(),
            max_rows: default_max_rows(),
            max_bytes: default_max_bytes(),
            max_age_ms: default_max_age_ms(),
            max_buffer_bytes: default_max_buffer_bytes(),
            compression: Compression::default(),
            format: Format::default(),
        }
    }
}

impl LakeSettings {
    /// The age limit as a duration.
    pub fn max_age(&self) -> Duration {
        Duration::from_millis(self.max_age_ms)
    }

    /// Checks the limits.
    pub fn validate(&self) -> Result<(), String> {
        if self.max_rows == 0 || self.max_bytes == 0 || self.max_age_ms == 0 {
            return Err(
                "lake.max_rows, lake.max_bytes and lake.max_age_ms must be positive".into(),
            );
        }
        if self.max_buffer_bytes < self.max_bytes {
            return Err("lake.max_buffer_bytes must be at least lake.max_bytes".into());
        }
        if self.url.trim().is_empty() {
            return Err("lake.url must name a directory or a bucket".into());
        }
        Ok(())
    }
}

fn default_url() -> String {
    ".stack/lake".into()
}
fn default_group() -> String {
    "sluice-lake".into()
}
fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8083))
}
fn default_max_rows() -> usize {
    100_000
}
fn default_max_bytes() -> usize {
    64 * 1024 * 1024
}
fn default_max_age_ms() -> u64 {
    60_000
}
fn default_max_buffer_bytes() -> usize {
    256 * 1024 * 1024
}
