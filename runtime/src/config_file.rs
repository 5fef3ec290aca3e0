//! Loads a service's settings from an optional TOML file plus `SLUICE_*` environment variables.
//!
//! Environment keys use `__` between levels: `SLUICE_KAFKA__BOOTSTRAP_SERVERS` sets `kafka.bootstrap_servers`.

use std::path::Path;

use serde::de::DeserializeOwned;

/// Prefix of every environment override.
pub const ENV_PREFIX: &str = "SLUICE";
/// Separator between nesting levels in environment keys.
pub const ENV_SEPARATOR: &str = "__";

/// `SLUICE_*` variables read by the process itself (the config file's path, the log format), not settings.
pub const PROCESS_VARIABLES: &[&str] = &["SLUICE_CONFIG", "SLUICE_LOG_FORMAT"];

/// A config that could not be read; the message names the file or key at fault.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {0}")]
pub struct ConfigError(String);

/// Reads `T` from `file` (when given) overlaid with `SLUICE_*` variables from the process environment.
pub fn load<T: DeserializeOwned>(file: Option<&Path>) -> Result<T, ConfigError> {
    load_from(file, std::env::vars())
}

/// Like [`load`], with the environment passed in so tests need no global state.
pub fn load_from<T, I>(file: Option<&Path>, env: I) -> Result<T, ConfigError>
where
    T: DeserializeOwned,
    I: IntoIterator<Item = (String, String)>,
{
    let mut builder = config::Config::builder();
    if let Some(path) = file {
        if !path.exists() {
            return Err(ConfigError(format!(
                "config file {} does not exist",
                path.display()
            )));
        }
        builder = builder.add_source(config::File::from(path).format(config::FileFormat::Toml));
    }
    // `SLUICE_CONFIG` names the file itself and `SLUICE_LOG_FORMAT` is read by `telemetry`; neither is a setting.
    let vars: config::Map<String, String> = env
        .into_iter()
        .filter(|(k, _)| k != "SLUICE_CONFIG" && k != "SLUICE_LOG_FORMAT")
        .collect();
    builder = builder.add_source(
        config::Environment::with_prefix(ENV_PREFIX)
            .prefix_separator("_")
            .separator(ENV_SEPARATOR)
            .try_parsing(true)
            // The one list a variable sets: a cluster's shards, space-separated (each a comma-separated replica
            // list), e.g. SLUICE_CLICKHOUSE__CLUSTER__SHARDS="http://a:8123,http://b:8123 http://c:8123,http://d:8123".
            .list_separator(" ")
            .with_list_parse_key("clickhouse.cluster.shards")
            .source(Some(vars)),
    );
    let cfg = builder.build().map_err(|e| ConfigError(e.to_string()))?;
    cfg.try_deserialize()
        .map_err(|e| ConfigError(e.to_string()))
}

/// The config file named by `--config` or `SLUICE_CONFIG`, if any.
pub fn path_from_env_or(arg: Option<std::path::PathBuf>) -> Option<std::path::PathBuf> {
    arg.or_else(|| std::env::var_os("SLUICE_CONFIG").map(Into::into))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Sample {
        #[serde(default)]
        kafka: Kafka,
        #[serde(default = "default_port")]
        port: u16,
    }
    #[derive(Debug, Deserialize, PartialEq, Default)]
    #[serde(deny_unknown_fields)]
    struct Kafka {
        #[serde(default)]
        bootstrap_servers: String,
    }
    fn default_port() -> u16 {
        8080
    }

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn env_overrides_nested_keys() {
        let s: Sample = load_from(
            None,
            env(&[
                ("SLUICE_KAFKA__BOOTSTRAP_SERVERS", "h:1"),
                ("SLUICE_PORT", "9"),
            ]),
        )
        .expect("loads");
        assert_eq!(
            s,
            Sample {
                kafka: Kafka {
                    bootstrap_servers: "h:1".into()
                },
                port: 9
            }
        );
    }

    #[test]
    fn unrelated_env_is_ignored() {
        let s: Sample = load_from(
            None,
            env(&[
                ("HOME", "/root"),
                ("SLUICE_CONFIG", "x.toml"),
                ("SLUICE_LOG_FORMAT", "json"),
            ]),
        )
        .expect("loads");
        assert_eq!(s.port, 8080);
    }

    #[test]
    fn bad_value_names_the_key() {
        let err =
            load_from::<Sample, _>(None, env(&[("SLUICE_PORT", "not-a-port")])).expect_err("fails");
        assert!(err.to_string().contains("port"), "{err}");
    }

    #[test]
    fn unknown_key_is_an_error() {
        let err = load_from::<Sample, _>(None, env(&[("SLUICE_PROT", "1")])).expect_err("fails");
        assert!(err.to_string().contains("prot"), "{err}");
    }

    #[test]
    fn missing_file_is_an_error() {
        let err = load_from::<Sample, _>(Some(Path::new("/nonexistent.toml")), env(&[]))
            .expect_err("fails");
        assert!(err.to_string().contains("/nonexistent.toml"), "{err}");
    }
}
