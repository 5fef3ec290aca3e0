//! The producer's settings: a TOML file (`SLUICE_CONFIG`) overlaid with `SLUICE_*` environment variables.
//!
//! Every key has a documented default, so an empty file runs a dev producer on `127.0.0.1:8080` with the
//! `events` stream; only ingestion keys must be configured for anyone to be let in.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;
use sluice_runtime::kafka::KafkaSettings;

/// Everything the producer reads at start-up.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Address the HTTP server binds (default `127.0.0.1:8080`).
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Brokers and pass-through librdkafka properties.
    #[serde(default)]
    pub kafka: KafkaSettings,
    /// Producer tuning: linger, batch size, compression, delivery timeout, local queue bounds.
    #[serde(default)]
    pub produce: ProduceSettings,
    /// Base URL of the Confluent-compatible schema registry (default `http://127.0.0.1:8081`).
    #[serde(default = "default_registry_url")]
    pub registry_url: String,
    /// Streams clients may write to, by name (default: one stream `events`).
    #[serde(default = "default_streams")]
    pub streams: BTreeMap<String, StreamConfig>,
    /// Ingestion keys by the lowercase hex SHA-256 of the key; the plaintext is never stored.
    #[serde(default)]
    pub keys: BTreeMap<String, KeyConfig>,
    /// Bounds on request size and on work in flight.
    #[serde(default)]
    pub limits: Limits,
    /// `?wait=clickhouse|lake`: which consumer groups' commits a request may wait for, and how long.
    #[serde(default)]
    pub wait: WaitSettings,
}

/// What `?wait=clickhouse` and `?wait=lake` wait on.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WaitSettings {
    /// The ClickHouse consumers' group (default `sluice-consumer`, the consumer's default).
    #[serde(default = "default_clickhouse_group")]
    pub clickhouse_group: String,
    /// The lake consumers' group (default `sluice-lake`).
    #[serde(default = "default_lake_group")]
    pub lake_group: String,
    /// The longest a request waits before it answers 202 with its pending events (default 10000 ms).
    #[serde(default = "default_wait_timeout_ms")]
    pub timeout_ms: u64,
    /// How often the groups' committed offsets are read while anyone waits (default 100 ms).
    #[serde(default = "default_wait_poll_ms")]
    pub poll_ms: u64,
    /// The most requests waiting at once; beyond it a request answers 202 at once, its events pending (default
    /// 10000).
    #[serde(default = "default_max_waiting")]
    pub max_waiting: usize,
}

impl Default for WaitSettings {
    fn default() -> Self {
        Self {
            clickhouse_group: default_clickhouse_group(),
            lake_group: default_lake_group(),
            timeout_ms: default_wait_timeout_ms(),
            poll_ms: default_wait_poll_ms(),
            max_waiting: default_max_waiting(),
        }
    }
}

fn default_clickhouse_group() -> String {
    "sluice-consumer".into()
}

fn default_lake_group() -> String {
    "sluice-lake".into()
}

fn default_wait_timeout_ms() -> u64 {
    10_000
}

fn default_wait_poll_ms() -> u64 {
    100
}

fn default_max_waiting() -> usize {
    10_000
}

/// One stream: where its events go and what they must look like.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamConfig {
    /// Kafka topic the stream's events are written to.
    pub topic: String,
    /// Name of a schema bundled in `schemas/avro/` (`sluice_schemas::catalog`), without `.avsc`.
    pub schema: String,
    /// Registry subject (default `<topic>-value`, Confluent's TopicNameStrategy).
    #[serde(default)]
    pub subject: Option<String>,
    /// Partitions of the topic when the producer creates it (default 4).
    #[serde(default = "default_partitions")]
    pub partitions: i32,
    /// Field whose value becomes the Kafka message key, so one entity's events stay in order on one partition
    /// (default `tenant`). When the field is null the tenant is used.
    #[serde(default = "default_key_field")]
    pub key_field: String,
    /// Field the server fills with the key's tenant (default `tenant`; empty: none).
    #[serde(default = "default_tenant_field")]
    pub tenant_field: String,
    /// Field holding the event id: kept when the client sent one, otherwise minted (default `event_id`; empty: none).
    #[serde(default = "default_event_id_field")]
    pub event_id_field: String,
    /// Field the server fills with the time it accepted the event (default `received_at`; empty: none).
    #[serde(default = "default_received_at_field")]
    pub received_at_field: String,
    /// Timestamp field holding the client's event time, held to `max_future_skew_secs` (default `occurred_at` when
    /// the schema has that field; empty: none).
    #[serde(default)]
    pub occurred_at_field: Option<String>,
    /// How far ahead of the server's receive time that field may be, in seconds (default 86400, one day).
    #[serde(default = "default_max_future_skew_secs")]
    pub max_future_skew_secs: u64,
    /// What happens to an event further ahead than that (default `reject`).
    #[serde(default)]
    pub future_skew: FutureSkew,
}

/// What the producer does with an event whose time is further ahead of the server's clock than the stream allows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
// Read through a string so a bad value's start-up error lists the good ones.
#[serde(try_from = "String")]
pub enum FutureSkew {
    /// Refuse the event with a 400. The default: the producer refuses bad input rather than rewriting it, and a
    /// client with a broken clock finds out at once instead of having its events silently re-timed.
    #[default]
    Reject,
    /// Accept the event with its time set to the receive time, for clients whose clocks are known to run ahead.
    Clamp,
}

impl TryFrom<String> for FutureSkew {
    type Error = String;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        match s.as_str() {
            "reject" => Ok(Self::Reject),
            "clamp" => Ok(Self::Clamp),
            other => Err(format!("must be \"reject\" or \"clamp\", not {other:?}")),
        }
    }
}

impl StreamConfig {
    /// A stream writing to `topic` with the bundled schema `schema` and every other key at its default.
    pub fn new(topic: &str, schema: &str) -> Self {
        Self {
            topic: topic.to_owned(),
            schema: schema.to_owned(),
            subject: None,
            partitions: default_partitions(),
            key_field: default_key_field(),
            tenant_field: default_tenant_field(),
            event_id_field: default_event_id_field(),
            received_at_field: default_received_at_field(),
            occurred_at_field: None,
            max_future_skew_secs: default_max_future_skew_secs(),
            future_skew: FutureSkew::default(),
        }
    }

    /// The registry subject this stream's schema is registered under.
    pub fn subject(&self) -> String {
        self.subject
            .clone()
            .unwrap_or_else(|| format!("{}-value", self.topic))
    }
}

/// What an ingestion key may do.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyConfig {
    /// Tenant every event sent with this key belongs to.
    pub tenant: String,
    /// Streams this key may write; `"*"` allows all.
    pub streams: Vec<String>,
    /// Events per second this key may send (a token bucket bursting to one second's worth, at least one batch);
    /// over it: 429 with `Retry-After` and `X-RateLimit-*`. Default: no rate limit.
    #[serde(default)]
    pub events_per_second: Option<u32>,
    /// Request body bytes per second this key may send, likewise. Default: no rate limit.
    #[serde(default)]
    pub bytes_per_second: Option<u32>,
    /// The most of `limits.max_in_flight_events` this key's requests may hold at once (0 to 1). Default:
    /// `limits.key_in_flight_share`.
    #[serde(default)]
    pub in_flight_share: Option<f64>,
}

impl KeyConfig {
    /// Whether this key may write to `stream`.
    pub fn allows(&self, stream: &str) -> bool {
        self.streams.iter().any(|s| s == "*" || s == stream)
    }
}

/// Producer tuning passed to librdkafka; anything in `kafka.client` wins over these.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProduceSettings {
    /// `linger.ms`: how long librdkafka waits to fill a batch (default 5).
    #[serde(default = "default_linger_ms")]
    pub linger_ms: u64,
    /// `batch.size` in bytes (default 1 MiB).
    #[serde(default = "default_batch_size")]
    pub batch_size: u64,
    /// `compression.type` (default `lz4`).
    #[serde(default = "default_compression")]
    pub compression: String,
    /// `message.timeout.ms`: how long a message may wait for its acknowledgement before the request fails
    /// (default 10000; keep it below `limits.request_timeout_ms`).
    #[serde(default = "default_message_timeout_ms")]
    pub message_timeout_ms: u64,
    /// `queue.buffering.max.messages` (default 200000; keep it above `limits.max_in_flight_events`).
    #[serde(default = "default_queue_max_messages")]
    pub queue_max_messages: u64,
    /// `queue.buffering.max.kbytes` (default 262144, 256 MiB).
    #[serde(default = "default_queue_max_kbytes")]
    pub queue_max_kbytes: u64,
}

impl Default for ProduceSettings {
    fn default() -> Self {
        Self {
            linger_ms: default_linger_ms(),
            batch_size: default_batch_size(),
            compression: default_compression(),
            message_timeout_ms: default_message_timeout_ms(),
            queue_max_messages: default_queue_max_messages(),
            queue_max_kbytes: default_queue_max_kbytes(),
        }
    }
}

/// Bounds that keep memory and latency finite under any load.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Most events in one request (default 1000).
    #[serde(default = "default_max_batch_events")]
    pub max_batch_events: usize,
    /// Largest request body, after decompression (default 5 MiB).
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: usize,
    /// Longest string value in an event (default 65536 bytes).
    #[serde(default = "default_max_string_bytes")]
    pub max_string_bytes: usize,
    /// Largest encoded event (key plus framed value); keep it within the broker's and librdkafka's
    /// `message.max.bytes` (default 1000000, librdkafka's default).
    #[serde(default = "default_max_message_bytes")]
    pub max_message_bytes: usize,
    /// Events accepted but not yet acknowledged by Kafka, across all requests (default 50000).
    #[serde(default = "default_max_in_flight_events")]
    pub max_in_flight_events: usize,
    /// Request bytes held by requests in progress (default 64 MiB).
    #[serde(default = "default_max_in_flight_bytes")]
    pub max_in_flight_bytes: usize,
    /// Request bytes held by Segment requests whose key is only in the body (`writeKey`), which cannot be
    /// authenticated before their body is read: a budget of their own, so clients without a key in their headers
    /// cannot take `max_in_flight_bytes` from those with one (default 8 MiB).
    #[serde(default = "default_max_unkeyed_in_flight_bytes")]
    pub max_unkeyed_in_flight_bytes: usize,
    /// The most of `max_in_flight_events` one key may hold unless its `in_flight_share` says otherwise (default
    /// 0.5: no tenant can take the whole budget from the others).
    #[serde(default = "default_key_in_flight_share")]
    pub key_in_flight_share: f64,
    /// Whole-request deadline, body upload included (default 15000 ms).
    #[serde(default = "default_request_timeout_ms")]
    pub request_timeout_ms: u64,
    /// Seconds clients are told to wait in `Retry-After` when the producer is overloaded (default 1).
    #[serde(default = "default_retry_after_secs")]
    pub retry_after_secs: u64,
    /// How long start-up waits for the schema registry (default 30000 ms).
    #[serde(default = "default_startup_timeout_ms")]
    pub startup_timeout_ms: u64,
    /// How long a replica remembers which body an `Idempotency-Key` came with, to refuse the key with another body
    /// (default 86400 s, Stripe's 24 h).
    #[serde(default = "default_idempotency_window_secs")]
    pub idempotency_window_secs: u64,
    /// The most `Idempotency-Key`s a replica remembers; the oldest are forgotten first (default 100000, about
    /// 10 MiB; 0 turns the 422 off, not the key-derived ids).
    #[serde(default = "default_max_idempotency_keys")]
    pub max_idempotency_keys: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_batch_events: default_max_batch_events(),
            max_body_bytes: default_max_body_bytes(),
            max_string_bytes: default_max_string_bytes(),
            max_message_bytes: default_max_message_bytes(),
            max_in_flight_events: default_max_in_flight_events(),
            max_in_flight_bytes: default_max_in_flight_bytes(),
            max_unkeyed_in_flight_bytes: default_max_unkeyed_in_flight_bytes(),
            key_in_flight_share: default_key_in_flight_share(),
            request_timeout_ms: default_request_timeout_ms(),
            retry_after_secs: default_retry_after_secs(),
            startup_timeout_ms: default_startup_timeout_ms(),
            idempotency_window_secs: default_idempotency_window_secs(),
            max_idempotency_keys: default_max_idempotency_keys(),
        }
    }
}

impl Limits {
    /// The whole-request deadline.
    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: default_listen(),
            kafka: KafkaSettings::default(),
            produce: ProduceSettings::default(),
            registry_url: default_registry_url(),
            streams: default_streams(),
            keys: BTreeMap::new(),
            limits: Limits::default(),
            wait: WaitSettings::default(),
        }
    }
}

/// A setting that parses but cannot work; the message names the key.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: `{key}` {problem}")]
pub struct ConfigProblem {
    /// Dotted path of the offending key.
    pub key: String,
    /// What is wrong with it.
    pub problem: String,
}

fn problem(key: impl Into<String>, problem: impl Into<String>) -> ConfigProblem {
    ConfigProblem {
        key: key.into(),
        problem: problem.into(),
    }
}

impl Config {
    /// Loads the file named by `SLUICE_CONFIG` (if any) plus `SLUICE_*` overrides, then checks it.
    pub fn load(file: Option<&std::path::Path>) -> anyhow::Result<Self> {
        let config: Config = sluice_runtime::config_file::load(file)?;
        config.check()?;
        Ok(config)
    }

    /// Rejects settings that would only fail later, naming the key at fault.
    pub fn check(&self) -> Result<(), ConfigProblem> {
        if self.streams.is_empty() {
            return Err(problem("streams", "must name at least one stream"));
        }
        for (name, stream) in &self.streams {
            if !valid_name(name) {
                return Err(problem(
                    format!("streams.{name}"),
                    "stream names use only [A-Za-z0-9._-]",
                ));
            }
            if stream.topic.is_empty() {
                return Err(problem(
                    format!("streams.{name}.topic"),
                    "must not be empty",
                ));
            }
            if sluice_schemas::catalog::bundled(&stream.schema).is_none() {
                let known: Vec<&str> = sluice_schemas::catalog::ALL
                    .iter()
                    .map(|s| s.name)
                    .collect();
                return Err(problem(
                    format!("streams.{name}.schema"),
                    format!(
                        "names no bundled schema `{}` (known: {})",
                        stream.schema,
                        known.join(", ")
                    ),
                ));
            }
            if stream.partitions < 1 {
                return Err(problem(
                    format!("streams.{name}.partitions"),
                    "must be at least 1",
                ));
            }
            // The Segment routes write messages in the bundled segment schema's shape to the stream of that name.
            if name == crate::handlers::segment::STREAM && stream.schema != "segment" {
                return Err(problem(
                    format!("streams.{name}.schema"),
                    "the stream the Segment API (/v1/batch) writes to must use the bundled `segment` schema",
                ));
            }
            // Beyond the span ClickHouse can store the check could never fire; the bound also keeps the skew, in
            // nanoseconds, within an i64.
            if stream.max_future_skew_secs > u64::from(u32::MAX) {
                return Err(problem(
                    format!("streams.{name}.max_future_skew_secs"),
                    "must be between 0 and 4294967295",
                ));
            }
        }
        for (hash, key) in &self.keys {
            if hash.len() != 64
                || !hash
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
            {
                return Err(problem(
                    format!("keys.{hash}"),
                    "must be the lowercase hex SHA-256 of the key (64 chars)",
                ));
            }
            if key.tenant.is_empty() {
                return Err(problem(format!("keys.{hash}.tenant"), "must not be empty"));
            }
            for stream in &key.streams {
                if stream != "*" && !self.streams.contains_key(stream) {
                    return Err(problem(
                        format!("keys.{hash}.streams"),
                        format!("names unknown stream `{stream}`"),
                    ));
                }
            }
        }
        let l = &self.limits;
        if l.max_batch_events == 0 {
            return Err(problem("limits.max_batch_events", "must be at least 1"));
        }
        if l.max_body_bytes == 0 || l.max_body_bytes > u32::MAX as usize {
            return Err(problem(
                "limits.max_body_bytes",
                "must be between 1 and 4294967295",
            ));
        }
        if l.max_in_flight_bytes < l.max_body_bytes || l.max_in_flight_bytes > u32::MAX as usize {
            return Err(problem(
                "limits.max_in_flight_bytes",
                "must be at least limits.max_body_bytes and below 4 GiB",
            ));
        }
        let shares =
            std::iter::once((
                "limits.key_in_flight_share".to_owned(),
                l.key_in_flight_share,
            ))
            .chain(self.keys.iter().filter_map(|(h, k)| {
                Some((format!("keys.{h}.in_flight_share"), k.in_flight_share?))
            }));
        for (key, share) in shares {
            if !(share > 0.0 && share <= 1.0) {
                return Err(problem(key, "must be above 0 and at most 1"));
            }
        }
        if l.max_unkeyed_in_flight_bytes > u32::MAX as usize {
            return Err(problem(
                "limits.max_unkeyed_in_flight_bytes",
                "must be below 4 GiB",
            ));
        }
        if l.max_in_flight_events < l.max_batch_events || l.max_in_flight_events > u32::MAX as usize
        {
            return Err(problem(
                "limits.max_in_flight_events",
                "must be at least limits.max_batch_events",
            ));
        }
        if l.request_timeout_ms <= self.produce.message_timeout_ms {
            return Err(problem(
                "limits.request_timeout_ms",
                "must exceed produce.message_timeout_ms, or requests time out before Kafka answers",
            ));
        }
        if !self.registry_url.starts_with("http://") && !self.registry_url.starts_with("https://") {
            return Err(problem(
                "registry_url",
                "must be an http:// or https:// URL",
            ));
        }
        Ok(())
    }
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8080))
}
fn default_registry_url() -> String {
    "http://127.0.0.1:8081".to_owned()
}
fn default_streams() -> BTreeMap<String, StreamConfig> {
    BTreeMap::from([("events".to_owned(), StreamConfig::new("events", "event"))])
}
fn default_partitions() -> i32 {
    4
}
fn default_key_field() -> String {
    "tenant".to_owned()
}
fn default_tenant_field() -> String {
    "tenant".to_owned()
}
fn default_event_id_field() -> String {
    "event_id".to_owned()
}
fn default_received_at_field() -> String {
    "received_at".to_owned()
}
fn default_max_future_skew_secs() -> u64 {
    86_400
}
fn default_linger_ms() -> u64 {
    5
}
fn default_batch_size() -> u64 {
    1 << 20
}
fn default_compression() -> String {
    "lz4".to_owned()
}
fn default_message_timeout_ms() -> u64 {
    10_000
}
fn default_queue_max_messages() -> u64 {
    200_000
}
fn default_queue_max_kbytes() -> u64 {
    262_144
}
fn default_max_batch_events() -> usize {
    1000
}
fn default_max_body_bytes() -> usize {
    5 << 20
}
fn default_max_message_bytes() -> usize {
    1_000_000
}
fn default_max_string_bytes() -> usize {
    65_536
}
fn default_max_in_flight_events() -> usize {
    50_000
}
fn default_max_in_flight_bytes() -> usize {
    64 << 20
}
fn default_key_in_flight_share() -> f64 {
    0.5
}
fn default_max_unkeyed_in_flight_bytes() -> usize {
    8 << 20
}
fn default_request_timeout_ms() -> u64 {
    15_000
}
fn default_retry_after_secs() -> u64 {
    1
}
fn default_startup_timeout_ms() -> u64 {
    30_000
}

fn default_idempotency_window_secs() -> u64 {
    86_400
}

fn default_max_idempotency_keys() -> usize {
    100_000
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_runtime::config_file::load_from;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_are_valid() {
        let c: Config = load_from(None, env(&[])).expect("loads");
        c.check().expect("valid");
        assert_eq!(c.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(c.limits.max_batch_events, 1000);
        assert_eq!(c.streams["events"].subject(), "events-value");
    }

    #[test]
    fn shipped_config_is_valid() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/producer.toml");
        let c: Config = load_from(Some(&path), env(&[])).expect("loads");
        c.check().expect("valid");
        assert_eq!(c.keys.len(), 1);
    }

    #[test]
    fn env_overrides_and_bad_values_name_the_key() {
        let c: Config =
            load_from(None, env(&[("SLUICE_LIMITS__MAX_BATCH_EVENTS", "10")])).expect("loads");
        assert_eq!(c.limits.max_batch_events, 10);
        let err = load_from::<Config, _>(None, env(&[("SLUICE_LIMITS__MAX_BATCH_EVENTS", "lots")]))
            .expect_err("fails");
        assert!(err.to_string().contains("max_batch_events"), "{err}");
        let err = load_from::<Config, _>(None, env(&[("SLUICE_LISTNE", "x")])).expect_err("fails");
        assert!(err.to_string().contains("listne"), "{err}");
    }

    #[test]
    fn future_skew_settings_load_and_bad_values_name_the_key() {
        let stream = [
            ("SLUICE_STREAMS__EVENTS__TOPIC", "events"),
            ("SLUICE_STREAMS__EVENTS__SCHEMA", "event"),
        ];
        let c: Config = load_from(None, env(&stream)).expect("loads");
        let s = &c.streams["events"];
        assert_eq!(
            (s.max_future_skew_secs, s.future_skew, &s.occurred_at_field),
            (86_400, FutureSkew::Reject, &None)
        );
        let mut vars = stream.to_vec();
        vars.push(("SLUICE_STREAMS__EVENTS__FUTURE_SKEW", "clamp"));
        vars.push(("SLUICE_STREAMS__EVENTS__MAX_FUTURE_SKEW_SECS", "60"));
        let c: Config = load_from(None, env(&vars)).expect("loads");
        assert_eq!(c.streams["events"].future_skew, FutureSkew::Clamp);
        assert_eq!(c.streams["events"].max_future_skew_secs, 60);
        let mut vars = stream.to_vec();
        vars.push(("SLUICE_STREAMS__EVENTS__FUTURE_SKEW", "drop"));
        let err = load_from::<Config, _>(None, env(&vars)).expect_err("fails");
        assert!(
            err.to_string().contains("streams.events.future_skew"),
            "{err}"
        );
        assert!(
            err.to_string()
                .contains(r#"must be "reject" or "clamp", not "drop""#),
            "{err}"
        );
        let mut vars = stream.to_vec();
        vars.push(("SLUICE_STREAMS__EVENTS__MAX_FUTURE_SKEW_SECS", "-1"));
        let err = load_from::<Config, _>(None, env(&vars)).expect_err("fails");
        assert!(err.to_string().contains("max_future_skew_secs"), "{err}");
    }

    #[test]
    fn check_names_the_key() {
        let mut c = Config::default();
        c.streams.get_mut("events").expect("default stream").schema = "nope".into();
        assert!(
            c.check()
                .expect_err("bad")
                .to_string()
                .contains("streams.events.schema")
        );

        let mut c = Config::default();
        c.keys.insert(
            "abc".into(),
            KeyConfig {
                tenant: "t".into(),
                streams: vec!["events".into()],
                ..KeyConfig::default()
            },
        );
        assert!(c.check().expect_err("bad").to_string().contains("keys.abc"));

        let mut c = Config::default();
        c.keys.insert(
            "a".repeat(64),
            KeyConfig {
                tenant: "t".into(),
                streams: vec!["other".into()],
                ..KeyConfig::default()
            },
        );
        assert!(
            c.check()
                .expect_err("bad")
                .to_string()
                .contains("keys.aaaa")
        );

        let mut c = Config::default();
        c.streams
            .get_mut("events")
            .expect("default stream")
            .max_future_skew_secs = 1 << 32;
        assert!(
            c.check()
                .expect_err("bad")
                .to_string()
                .contains("streams.events.max_future_skew_secs")
        );

        let mut c = Config::default();
        c.limits.request_timeout_ms = 1000;
        assert!(
            c.check()
                .expect_err("bad")
                .to_string()
                .contains("limits.request_timeout_ms")
        );
    }
}
