//! Kafka client settings shared by every service, and idempotent topic creation.

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;
use serde::Deserialize;

/// Where the brokers are, plus any librdkafka property to pass through unchanged.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaSettings {
    /// Comma-separated `host:port` list.
    #[serde(default = "default_bootstrap")]
    pub bootstrap_servers: String,
    /// Extra librdkafka properties (for example `security.protocol`), applied last.
    #[serde(default)]
    pub client: BTreeMap<String, String>,
    /// Replication factor of topics Sluice creates (use 3 on a real cluster).
    #[serde(default = "default_replication")]
    pub replication_factor: i32,
    /// `min.insync.replicas` of topics Sluice creates (use 2 with a replication factor of 3); unset, the broker's
    /// default.
    #[serde(default)]
    pub min_insync_replicas: Option<i32>,
}

impl Default for KafkaSettings {
    fn default() -> Self {
        Self {
            bootstrap_servers: default_bootstrap(),
            client: BTreeMap::new(),
            replication_factor: default_replication(),
            min_insync_replicas: None,
        }
    }
}

fn default_replication() -> i32 {
    1
}

fn default_bootstrap() -> String {
    "127.0.0.1:9092".to_owned()
}

impl KafkaSettings {
    /// A librdkafka config with the bootstrap servers and the pass-through properties.
    pub fn client_config(&self) -> ClientConfig {
        let mut cfg = ClientConfig::new();
        cfg.set("bootstrap.servers", &self.bootstrap_servers);
        for (k, v) in &self.client {
            cfg.set(k, v);
        }
        cfg
    }
}

/// A topic a service wants to exist.
#[derive(Debug, Clone)]
pub struct TopicSpec<'a> {
    /// Topic name.
    pub name: &'a str,
    /// Partition count when created.
    pub partitions: i32,
    /// Topic-level configs, such as `cleanup.policy=compact`.
    pub config: Vec<(&'a str, &'a str)>,
}

/// Creates each topic that does not exist yet; an existing topic is left as it is.
pub async fn ensure_topics(
    settings: &KafkaSettings,
    topics: &[TopicSpec<'_>],
) -> Result<(), KafkaError> {
    let admin: AdminClient<DefaultClientContext> = settings.client_config().create()?;
    let min_insync = settings.min_insync_replicas.map(|n| n.to_string());
    let new: Vec<NewTopic<'_>> = topics
        .iter()
        .map(|t| {
            let topic = t.config.iter().fold(
                NewTopic::new(
                    t.name,
                    t.partitions,
                    TopicReplication::Fixed(settings.replication_factor),
                ),
                |nt, (k, v)| nt.set(k, v),
            );
            match &min_insync {
                Some(n) if !t.config.iter().any(|(k, _)| *k == "min.insync.replicas") => {
                    topic.set("min.insync.replicas", n)
                }
                _ => topic,
            }
        })
        .collect();
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    for result in admin.create_topics(new.iter(), &opts).await? {
        match result {
            Ok(_) => {}
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((name, code)) => {
                return Err(KafkaError::AdminOp(code))
                    .inspect_err(|_| tracing::error!(topic = %name, ?code, "create topic failed"));
            }
        }
    }
    Ok(())
}

/// Asks the cluster for its metadata; `Ok` means a broker answered within `timeout`.
pub async fn ping(settings: &KafkaSettings, timeout: Duration) -> Result<(), String> {
    let cfg = settings.client_config();
    tokio::task::spawn_blocking(move || {
        let consumer: rdkafka::consumer::BaseConsumer = cfg.create().map_err(|e| e.to_string())?;
        use rdkafka::consumer::Consumer;
        consumer
            .fetch_metadata(None, timeout)
            .map(|_| ())
            .map_err(|e| e.to_string())
    })
    .await
    .map_err(|e| e.to_string())?
}
