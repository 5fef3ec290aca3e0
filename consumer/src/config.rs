//! The consumer's settings: where to read, where to write, and how big a batch may grow.
//!
//! Loaded with `sluice_runtime::config_file::load` from `SLUICE_CONFIG` plus `SLUICE_*` variables
//! (for example `SLUICE_CLICKHOUSE__URL`). Every key has a default that works against the local stack.

use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;
use sluice_runtime::kafka::KafkaSettings;

/// The whole consumer configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Address of the ops endpoints (`/healthz`, `/readyz`, `/metrics`). Default `127.0.0.1:8082`.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Brokers and pass-through librdkafka properties (e.g. `client."session.timeout.ms"`).
    #[serde(default)]
    pub kafka: KafkaSettings,
    /// Consumer group shared by all replicas. Default `sluice-consumer`.
    #[serde(default = "default_group")]
    pub group_id: String,
    /// Kafka's group protocol: `classic` (default, any broker) or `consumer` (KIP-848, Kafka 4.0+).
    #[serde(default)]
    pub group_protocol: GroupProtocol,
    /// Schema registry base URL. Default `http://127.0.0.1:8081`.
    #[serde(default = "default_registry")]
    pub registry_url: String,
    /// Registry request timeout in milliseconds. Default 5000.
    #[serde(default = "default_registry_timeout_ms")]
    pub registry_timeout_ms: u64,
    /// How long (ms) a writer schema id the registry answers 404 for is asked again before its messages are
    /// dead-lettered: a registry replica may not have the id yet. Only its messages' partitions wait. Default 30000.
    #[serde(default = "default_registry_unknown_id_wait_ms")]
    pub registry_unknown_id_wait_ms: u64,
    /// Where rows go.
    #[serde(default)]
    pub clickhouse: ClickHouseSettings,
    /// Topic → table routes. Default: `events` → `sluice.events`, subject `events-value`.
    #[serde(default = "default_streams")]
    pub streams: Vec<StreamConfig>,
    /// When a batch is flushed.
    #[serde(default)]
    pub batch: BatchSettings,
    /// How transient failures are retried.
    #[serde(default)]
    pub retry: RetrySettings,
    /// On SIGTERM, how long (ms) to keep trying to flush the last batch before leaving it uncommitted. Default 15000.
    #[serde(default = "default_shutdown_grace_ms")]
    pub shutdown_grace_ms: u64,
    /// The live dashboard on the ops port (`/dashboard`).
    #[serde(default)]
    pub dashboard: DashboardSettings,
    /// Bearer key for `POST /operator/dead-letter` (`sluice-consumer dlq skip`). Unset: served on a loopback
    /// listener only.
    #[serde(default)]
    pub operator_key: Option<String>,
    /// The Parquet lake sink (`sluice-consumer lake`).
    #[serde(default)]
    pub lake: crate::lake::LakeSettings,
    /// The table every dead letter is copied to.
    #[serde(default)]
    pub dead_letters: crate::dead_letters::DeadLetterSettings,
}

/// The live dashboard: it shows tenant data (the last rows landed, dead letters), so it is off on a non-loopback
/// listener unless enabled, and can require a key.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DashboardSettings {
    /// Serve `/dashboard`. Default: on when `listen` is a loopback address, off otherwise.
    #[serde(default)]
    pub enabled: Option<bool>,
    /// When set, `/dashboard` needs `?key=<key>` (once: the page then keeps a cookie) or `Authorization: Bearer
    /// <key>`, and its event stream the cookie or the Bearer token.
    #[serde(default)]
    pub key: Option<String>,
    /// Producers' `/metrics` URLs, for the ingest panel. Default `["http://127.0.0.1:8080/metrics"]`.
    #[serde(default = "default_producer_metrics")]
    pub producer_metrics: Vec<String>,
}

impl DashboardSettings {
    /// Whether the dashboard is served on `listen`.
    pub fn is_enabled(&self, listen: &SocketAddr) -> bool {
        self.enabled.unwrap_or_else(|| listen.ip().is_loopback())
    }
}

fn default_producer_metrics() -> Vec<String> {
    vec!["http://127.0.0.1:8080/metrics".into()]
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: default_listen(),
            kafka: KafkaSettings::default(),
            group_id: default_group(),
            group_protocol: GroupProtocol::default(),
            registry_url: default_registry(),
            registry_timeout_ms: default_registry_timeout_ms(),
            registry_unknown_id_wait_ms: default_registry_unknown_id_wait_ms(),
            clickhouse: ClickHouseSettings::default(),
            streams: default_streams(),
            batch: BatchSettings::default(),
            retry: RetrySettings::default(),
            shutdown_grace_ms: default_shutdown_grace_ms(),
            dashboard: DashboardSettings::default(),
            operator_key: None,
            lake: crate::lake::LakeSettings::default(),
            dead_letters: crate::dead_letters::DeadLetterSettings::default(),
        }
    }
}

impl Config {
    /// The shutdown grace period as a duration.
    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_millis(self.shutdown_grace_ms)
    }

    /// Checks what serde cannot: at least one stream, no topic routed twice, sane limits.
    pub fn validate(&self) -> Result<(), String> {
        if self.streams.is_empty() {
            return Err("at least one stream is required".into());
        }
        let mut topics = std::collections::HashSet::new();
        for s in &self.streams {
            if !topics.insert(s.topic.as_str()) {
                return Err(format!("topic {} is routed twice", s.topic));
            }
            if s.dlq_topic() == s.topic {
                return Err(format!(
                    "stream {}: the DLQ topic must differ from the source topic",
                    s.topic
                ));
            }
            if s.order_by.last() != Some(&s.event_id) {
                return Err(format!(
                    "stream {}: order_by {:?} must end with the event id field `{}`: ReplacingMergeTree keeps one \
                     row per sort key, so without the id distinct events collapse (set `event_id` if the \
                     stream's id field has another name)",
                    s.topic, s.order_by, s.event_id
                ));
            }
        }
        if self.group_protocol == GroupProtocol::Consumer
            && let Some(key) = CLASSIC_ONLY
                .iter()
                .find(|k| self.kafka.client.contains_key(**k))
        {
            return Err(format!(
                "kafka.client.\"{key}\" is a classic-protocol setting; with group_protocol = \"consumer\" the \
                 broker decides it (group.consumer.* on the broker): remove it"
            ));
        }
        if self.batch.max_rows == 0 || self.batch.max_bytes == 0 {
            return Err("batch.max_rows and batch.max_bytes must be positive".into());
        }
        if self.batch.min_rows == 0 {
            return Err("batch.min_rows must be positive".into());
        }
        if self.retry.initial_backoff_ms == 0
            || self.retry.max_backoff_ms < self.retry.initial_backoff_ms
        {
            return Err(
                "retry.initial_backoff_ms must be positive and at most retry.max_backoff_ms".into(),
            );
        }
        if let Some(cluster) = &self.clickhouse.cluster {
            cluster.validate()?;
        }
        Ok(())
    }
}

/// Which of Kafka's consumer group protocols the group members speak.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GroupProtocol {
    /// The client-side assignor protocol (JoinGroup/SyncGroup) with the cooperative-sticky assignor: works with
    /// every broker Sluice supports, so it is the default.
    #[default]
    Classic,
    /// KIP-848: the broker assigns partitions and owns the session; incremental, no group-wide pause on a
    /// rebalance. Needs Kafka 4.0 or newer.
    Consumer,
}

impl GroupProtocol {
    /// The value of librdkafka's `group.protocol`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Classic => "classic",
            Self::Consumer => "consumer",
        }
    }
}

/// librdkafka properties that the `consumer` protocol moves to the broker: refused rather than silently ignored.
pub const CLASSIC_ONLY: &[&str] = &[
    "session.timeout.ms",
    "heartbeat.interval.ms",
    "partition.assignment.strategy",
    "group.protocol.type",
];

/// ClickHouse HTTP connection.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClickHouseSettings {
    /// HTTP URL. Default `http://127.0.0.1:8123`.
    #[serde(default = "default_ch_url")]
    pub url: String,
    /// Database of tables named without one; created when missing. Default `sluice`.
    #[serde(default = "default_ch_database")]
    pub database: String,
    /// User. Default `default`.
    #[serde(default = "default_ch_user")]
    pub user: String,
    /// Password. Default empty.
    #[serde(default)]
    pub password: String,
    /// Timeout of one INSERT or DDL statement, in milliseconds. Default 30000.
    #[serde(default = "default_ch_timeout_ms")]
    pub timeout_ms: u64,
    /// A ClickHouse cluster (`remote_servers`) to write to instead of the one server at `url`.
    #[serde(default)]
    pub cluster: Option<ClusterSettings>,
}

impl Default for ClickHouseSettings {
    fn default() -> Self {
        Self {
            url: default_ch_url(),
            database: default_ch_database(),
            user: default_ch_user(),
            password: String::new(),
            timeout_ms: default_ch_timeout_ms(),
            cluster: None,
        }
    }
}

/// A sharded, replicated ClickHouse: replicated local tables on every node, a `Distributed` table over them, rows
/// sent to the shard their Kafka partition names (README: Clusters).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterSettings {
    /// The cluster's name in the servers' `remote_servers`: DDL runs `ON CLUSTER` it and the `Distributed` tables
    /// read through it.
    pub name: String,
    /// One entry per shard, in the order of `remote_servers`: its replicas' HTTP URLs, comma-separated. A row of
    /// Kafka partition `p` goes to shard `p % shards.len()`, to whichever of its replicas answers.
    pub shards: Vec<String>,
    /// ZooKeeper path of each local table; `{database}` and `{table}` are filled in by Sluice, `{shard}` by the
    /// server's macros. Default `/clickhouse/tables/{shard}/{database}/{table}`.
    #[serde(default = "default_replica_path")]
    pub replica_path: String,
    /// Name of each stream's local (replicated) table: the stream's table name plus this. Default `_local`.
    #[serde(default = "default_local_suffix")]
    pub local_suffix: String,
    /// How long `ON CLUSTER` DDL waits for every node, in milliseconds; past it the nodes still missing run it
    /// when they return (ClickHouse keeps the task queued). Default 20000.
    #[serde(default = "default_ddl_timeout_ms")]
    pub ddl_timeout_ms: u64,
}

impl ClusterSettings {
    /// Each shard's replica URLs.
    pub fn replicas(&self) -> Vec<Vec<String>> {
        self.shards
            .iter()
            .map(|s| {
                s.split(',')
                    .map(str::trim)
                    .filter(|u| !u.is_empty())
                    .map(str::to_owned)
                    .collect()
            })
            .collect()
    }

    fn validate(&self) -> Result<(), String> {
        let plain = |s: &str| {
            !s.is_empty()
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        };
        if !plain(&self.name) {
            return Err(format!(
                "clickhouse.cluster.name {:?} must be a plain cluster name (letters, digits, _ and -)",
                self.name
            ));
        }
        if self.shards.is_empty() {
            return Err("clickhouse.cluster.shards must list at least one shard".into());
        }
        if let Some(i) = self.replicas().iter().position(Vec::is_empty) {
            return Err(format!(
                "clickhouse.cluster.shards[{i}] names no replica URL"
            ));
        }
        if !plain(&self.local_suffix) {
            return Err(
                "clickhouse.cluster.local_suffix must be a non-empty plain name suffix".into(),
            );
        }
        if self.replica_path.contains('\'') || !self.replica_path.starts_with('/') {
            return Err(format!(
                "clickhouse.cluster.replica_path {:?} must be an absolute ZooKeeper path without quotes",
                self.replica_path
            ));
        }
        if self.ddl_timeout_ms < 1000 {
            return Err("clickhouse.cluster.ddl_timeout_ms must be at least 1000".into());
        }
        Ok(())
    }
}

fn default_replica_path() -> String {
    "/clickhouse/tables/{shard}/{database}/{table}".into()
}
fn default_local_suffix() -> String {
    "_local".into()
}
fn default_ddl_timeout_ms() -> u64 {
    20_000
}

/// One topic routed to one table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamConfig {
    /// Source topic.
    pub topic: String,
    /// Target table, `db.table` or just `table` (in `clickhouse.database`).
    pub table: String,
    /// Registry subject of the reader schema. Default `<topic>-value`.
    #[serde(default)]
    pub subject: Option<String>,
    /// Bundled schema (`schemas/avro/<name>.avsc`) used as the reader until the subject is registered.
    #[serde(default)]
    pub bundled_schema: Option<String>,
    /// Dead-letter topic. Default `<topic>.dlq`.
    #[serde(default)]
    pub dlq_topic: Option<String>,
    /// The field holding each event's stable id, the last column of `order_by`. Default `event_id`.
    #[serde(default = "default_event_id")]
    pub event_id: String,
    /// Sort key of a table the consumer creates; must end with `event_id`. Default `[tenant, event_type, event_id]`.
    #[serde(default = "default_order_by")]
    pub order_by: Vec<String>,
    /// Date/timestamp field the table is partitioned by month on. Default `occurred_at`; empty for none.
    #[serde(default = "default_partition_by")]
    pub partition_by: String,
    /// Partitions of the source and DLQ topics when the consumer has to create them. Default 4.
    #[serde(default = "default_partitions")]
    pub partitions: i32,
    /// Add `_topic`, `_partition` and `_offset` columns that trace each row to its Kafka message. Default false.
    #[serde(default)]
    pub source_columns: bool,
}

impl StreamConfig {
    /// A stream with every optional key at its default.
    pub fn new(topic: &str, table: &str) -> Self {
        Self {
            topic: topic.to_owned(),
            table: table.to_owned(),
            subject: None,
            bundled_schema: None,
            dlq_topic: None,
            event_id: default_event_id(),
            order_by: default_order_by(),
            partition_by: default_partition_by(),
            partitions: default_partitions(),
            source_columns: false,
        }
    }

    /// The registry subject of the reader schema.
    pub fn subject(&self) -> String {
        self.subject
            .clone()
            .unwrap_or_else(|| format!("{}-value", self.topic))
    }

    /// The dead-letter topic.
    pub fn dlq_topic(&self) -> String {
        self.dlq_topic
            .clone()
            .unwrap_or_else(|| format!("{}.dlq", self.topic))
    }

    /// `db.table`, filling in the default database.
    pub fn qualified_table(&self, default_db: &str) -> String {
        if self.table.contains('.') {
            self.table.clone()
        } else {
            format!("{default_db}.{}", self.table)
        }
    }

    /// The partition field, if any.
    pub fn partition_field(&self) -> Option<&str> {
        (!self.partition_by.is_empty()).then_some(self.partition_by.as_str())
    }
}

/// Flush on whichever limit is reached first; sooner when ClickHouse is free and `min_rows` are waiting.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchSettings {
    /// Messages per batch. Default 50000.
    #[serde(default = "default_max_rows")]
    pub max_rows: usize,
    /// Messages that are flushed at once when no flush is running (at most `max_rows`). Default 10000.
    #[serde(default = "default_min_rows")]
    pub min_rows: usize,
    /// Sum of message value sizes per batch. Default 16 MiB.
    #[serde(default = "default_max_bytes")]
    pub max_bytes: usize,
    /// Milliseconds from a batch's first message to its flush. Default 1000.
    #[serde(default = "default_max_wait_ms")]
    pub max_wait_ms: u64,
}

impl Default for BatchSettings {
    fn default() -> Self {
        Self {
            max_rows: default_max_rows(),
            min_rows: default_min_rows(),
            max_bytes: default_max_bytes(),
            max_wait_ms: default_max_wait_ms(),
        }
    }
}

impl BatchSettings {
    /// The max wait as a duration.
    pub fn max_wait(&self) -> Duration {
        Duration::from_millis(self.max_wait_ms)
    }
}

/// Capped exponential backoff with jitter, for ClickHouse, registry and broker trouble.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetrySettings {
    /// First delay, in milliseconds. Default 200.
    #[serde(default = "default_initial_backoff_ms")]
    pub initial_backoff_ms: u64,
    /// Largest delay, in milliseconds. Default 10000.
    #[serde(default = "default_max_backoff_ms")]
    pub max_backoff_ms: u64,
}

impl RetrySettings {
    /// A fresh backoff with these delays.
    pub fn backoff(&self) -> sluice_runtime::backoff::Backoff {
        sluice_runtime::backoff::Backoff::new(
            Duration::from_millis(self.initial_backoff_ms),
            Duration::from_millis(self.max_backoff_ms),
        )
    }
}

impl Default for RetrySettings {
    fn default() -> Self {
        Self {
            initial_backoff_ms: default_initial_backoff_ms(),
            max_backoff_ms: default_max_backoff_ms(),
        }
    }
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8082))
}
fn default_group() -> String {
    "sluice-consumer".into()
}
fn default_registry() -> String {
    "http://127.0.0.1:8081".into()
}
fn default_registry_timeout_ms() -> u64 {
    5_000
}
fn default_ch_url() -> String {
    "http://127.0.0.1:8123".into()
}
fn default_ch_database() -> String {
    "sluice".into()
}
fn default_ch_user() -> String {
    "default".into()
}
fn default_ch_timeout_ms() -> u64 {
    30_000
}
fn default_streams() -> Vec<StreamConfig> {
    let mut s = StreamConfig::new("events", "sluice.events");
    s.bundled_schema = Some("event".into());
    vec![s]
}
fn default_event_id() -> String {
    "event_id".into()
}
fn default_order_by() -> Vec<String> {
    vec!["tenant".into(), "event_type".into(), "event_id".into()]
}
fn default_partition_by() -> String {
    "occurred_at".into()
}
fn default_partitions() -> i32 {
    4
}
fn default_min_rows() -> usize {
    // Under moderate load the insert is idle long before 50k rows arrive: flushing at 10k then keeps rows fresh
    // (p99 0.7 s instead of 1.6-2 s at half load), while a backlog still fills batches to max_rows.
    10_000
}
fn default_max_rows() -> usize {
    // ClickHouse wants few, large inserts; draining a backlog, 50k-row batches ran ~1.4x the rate of 10k-row
    // ones (BENCHMARKS.md). At low volume `max_wait_ms` flushes first, so this costs no freshness.
    50_000
}
fn default_max_bytes() -> usize {
    16 * 1024 * 1024
}
fn default_max_wait_ms() -> u64 {
    1_000
}
fn default_initial_backoff_ms() -> u64 {
    200
}
fn default_max_backoff_ms() -> u64 {
    10_000
}
fn default_registry_unknown_id_wait_ms() -> u64 {
    30_000
}
fn default_shutdown_grace_ms() -> u64 {
    15_000
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_runtime::config_file::load_from;

    #[test]
    fn defaults_route_events() {
        let cfg: Config = load_from(None, Vec::<(String, String)>::new()).expect("loads");
        cfg.validate().expect("valid");
        assert_eq!(cfg.listen.to_string(), "127.0.0.1:8082");
        let s = &cfg.streams[0];
        assert_eq!(
            (s.topic.as_str(), s.subject(), s.dlq_topic()),
            ("events", "events-value".into(), "events.dlq".into())
        );
        assert_eq!(s.qualified_table("x"), "sluice.events");
    }

    #[test]
    fn the_shipped_file_loads() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/consumer.toml");
        let cfg: Config = load_from(Some(&path), Vec::<(String, String)>::new()).expect("loads");
        cfg.validate().expect("valid");
        assert_eq!(cfg.streams[0].topic, "events");
    }

    #[test]
    fn the_group_protocol_is_classic_unless_asked_and_refuses_classic_settings() {
        let none = Vec::<(String, String)>::new();
        let cfg: Config = load_from(None, none).expect("loads");
        assert_eq!(cfg.group_protocol, GroupProtocol::Classic);
        let env = |v: &str| vec![("SLUICE_GROUP_PROTOCOL".to_string(), v.to_string())];
        let cfg: Config = load_from(None, env("consumer")).expect("loads");
        assert_eq!(cfg.group_protocol, GroupProtocol::Consumer);
        cfg.validate().expect("valid without classic settings");
        let mut with_session = cfg.clone();
        with_session
            .kafka
            .client
            .insert("session.timeout.ms".into(), "6000".into());
        let err = with_session.validate().expect_err("a classic setting");
        assert!(err.contains("session.timeout.ms"), "{err}");
        assert!(load_from::<Config, _>(None, env("eager")).is_err());
    }

    #[test]
    fn env_overrides_and_unknown_keys() {
        let env = vec![(
            "SLUICE_CLICKHOUSE__URL".to_string(),
            "http://ch:8123".to_string(),
        )];
        let cfg: Config = load_from(None, env).expect("loads");
        assert_eq!(cfg.clickhouse.url, "http://ch:8123");
        let env = vec![("SLUICE_BATCH__MAX_ROWZ".to_string(), "1".to_string())];
        assert!(load_from::<Config, _>(None, env).is_err());
    }

    #[test]
    fn validation_catches_loops_and_duplicates() {
        let mut cfg = Config::default();
        cfg.streams[0].dlq_topic = Some("events".into());
        assert!(cfg.validate().is_err());
        let mut cfg = Config::default();
        cfg.streams.push(cfg.streams[0].clone());
        assert!(cfg.validate().is_err());
    }

    #[test]
    fn the_sort_key_must_end_with_the_event_id() {
        let mut cfg = Config::default();
        cfg.streams[0].order_by = vec!["tenant".into(), "event_type".into()];
        let err = cfg.validate().expect_err("no id in the sort key");
        assert!(
            err.contains("must end with the event id field `event_id`"),
            "{err}"
        );
        cfg.streams[0].order_by = vec!["event_id".into(), "tenant".into()];
        assert!(cfg.validate().is_err(), "the id not last");
        cfg.streams[0].order_by = Vec::new();
        assert!(cfg.validate().is_err(), "an empty sort key");
        cfg.streams[0].order_by = vec!["tenant".into(), "message_id".into()];
        assert!(
            cfg.validate().is_err(),
            "another field than the configured id"
        );
        cfg.streams[0].event_id = "message_id".into();
        cfg.validate().expect("the id field renamed");
    }

    #[test]
    fn a_cluster_is_set_from_variables_and_checked() {
        let env = vec![
            (
                "SLUICE_CLICKHOUSE__CLUSTER__NAME".to_string(),
                "prod".to_string(),
            ),
            (
                "SLUICE_CLICKHOUSE__CLUSTER__SHARDS".to_string(),
                "http://a:8123,http://b:8123 http://c:8123,http://d:8123".to_string(),
            ),
        ];
        let cfg: Config = load_from(None, env).expect("loads");
        cfg.validate().expect("valid");
        let cluster = cfg.clickhouse.cluster.expect("a cluster");
        assert_eq!(
            cluster.replicas(),
            [
                vec!["http://a:8123".to_string(), "http://b:8123".to_string()],
                vec!["http://c:8123".to_string(), "http://d:8123".to_string()],
            ]
        );
        assert_eq!(
            cluster.replica_path,
            "/clickhouse/tables/{shard}/{database}/{table}"
        );
        // Other strings are not split into lists.
        let env = vec![("SLUICE_GROUP_ID".to_string(), "a b".to_string())];
        let cfg: Config = load_from(None, env).expect("loads");
        assert_eq!(cfg.group_id, "a b");

        let mut bad = cluster.clone();
        bad.shards = vec![" , ".into()];
        assert!(bad.validate().is_err(), "a shard without replicas");
        let mut bad = cluster.clone();
        bad.name = "prod; DROP".into();
        assert!(bad.validate().is_err(), "a name that is not an identifier");
        let mut bad = cluster;
        bad.replica_path = "clickhouse/'x'".into();
        assert!(bad.validate().is_err(), "a path with quotes");
    }
}
