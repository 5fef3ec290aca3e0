//! The registry's settings: where it listens, where its log lives, and the default compatibility level.

use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;
use sluice_runtime::kafka::KafkaSettings;

use crate::auth::AuthConfig;
use crate::compat::CompatibilityLevel;

/// Everything `sluice-registry` reads from `config/registry.toml` and `SLUICE_*` variables.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistryConfig {
    /// Address the HTTP API binds to (default `127.0.0.1:8081`, Confluent's port).
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// The brokers holding the registry's log.
    #[serde(default)]
    pub kafka: KafkaSettings,
    /// Compacted single-partition topic that is the registry's only durable state (default `_schemas`).
    #[serde(default = "default_topic")]
    pub topic: String,
    /// Compatibility level used until `PUT /config` sets another (default `BACKWARD`, as Confluent's).
    #[serde(default)]
    pub default_compatibility: CompatibilityLevel,
    /// How long a write may wait for the broker's acknowledgement before the request fails with 50001.
    #[serde(default = "default_write_timeout_ms")]
    pub write_timeout_ms: u64,
    /// Who may do what (HTTP Basic); no users: open.
    #[serde(default)]
    pub auth: AuthConfig,
}

impl Default for RegistryConfig {
    fn default() -> Self {
        Self {
            listen: default_listen(),
            kafka: KafkaSettings::default(),
            topic: default_topic(),
            default_compatibility: CompatibilityLevel::default(),
            write_timeout_ms: default_write_timeout_ms(),
            auth: AuthConfig::default(),
        }
    }
}

impl RegistryConfig {
    /// [`Self::write_timeout_ms`] as a duration.
    pub fn write_timeout(&self) -> Duration {
        Duration::from_millis(self.write_timeout_ms)
    }
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8081))
}

fn default_topic() -> String {
    "_schemas".to_owned()
}

fn default_write_timeout_ms() -> u64 {
    10_000
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
    fn defaults_match_confluent() {
        let c: RegistryConfig = load_from(None, env(&[])).expect("loads");
        assert_eq!(c.listen.to_string(), "127.0.0.1:8081");
        assert_eq!(c.topic, "_schemas");
        assert_eq!(c.default_compatibility, CompatibilityLevel::Backward);
        assert_eq!(c.kafka.bootstrap_servers, "127.0.0.1:9092");
    }

    #[test]
    fn env_overrides() {
        let c: RegistryConfig = load_from(
            None,
            env(&[
                ("SLUICE_TOPIC", "_s2"),
                ("SLUICE_DEFAULT_COMPATIBILITY", "FULL_TRANSITIVE"),
            ]),
        )
        .expect("loads");
        assert_eq!(c.topic, "_s2");
        assert_eq!(c.default_compatibility, CompatibilityLevel::FullTransitive);
    }

    #[test]
    fn shipped_config_file_loads() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/registry.toml");
        let c: RegistryConfig =
            load_from(Some(&path), env(&[])).expect("config/registry.toml loads");
        assert_eq!(c.listen.to_string(), "127.0.0.1:8081");
    }

    #[test]
    fn unknown_key_is_rejected() {
        assert!(load_from::<RegistryConfig, _>(None, env(&[("SLUICE_TOPICS", "x")])).is_err());
    }
}
