//! Shared helpers for the end-to-end tests: where the local stack listens, unique names, and polling with deadlines.
//!
//! Every test makes its own topics, groups, databases and tables with a random suffix, so tests can run in parallel
//! against one stack and never depend on what an earlier run left behind.

use std::future::Future;
use std::time::{Duration, Instant};

use sluice_runtime::kafka::KafkaSettings;

/// Kafka bootstrap servers of the local stack (`SLUICE_TEST_KAFKA` overrides).
pub fn kafka_bootstrap() -> String {
    std::env::var("SLUICE_TEST_KAFKA").unwrap_or_else(|_| "127.0.0.1:9092".into())
}

/// Kafka settings pointing at the local stack.
pub fn kafka_settings() -> KafkaSettings {
    KafkaSettings {
        bootstrap_servers: kafka_bootstrap(),
        ..KafkaSettings::default()
    }
}

/// ClickHouse HTTP URL of the local stack (`SLUICE_TEST_CLICKHOUSE` overrides).
pub fn clickhouse_url() -> String {
    std::env::var("SLUICE_TEST_CLICKHOUSE").unwrap_or_else(|_| "http://127.0.0.1:8123".into())
}

/// Schema registry URL of the local stack (`SLUICE_TEST_REGISTRY` overrides).
pub fn registry_url() -> String {
    std::env::var("SLUICE_TEST_REGISTRY").unwrap_or_else(|_| "http://127.0.0.1:8081".into())
}

/// A ClickHouse client for the local stack; validation off because the legacy pass's server (18.16) predates it.
pub fn clickhouse() -> clickhouse::Client {
    clickhouse::Client::default()
        .with_url(clickhouse_url())
        .with_validation(false)
}

/// `prefix` plus a random suffix, valid as a topic, group, database or table name.
pub fn unique(prefix: &str) -> String {
    format!(
        "{prefix}_{}",
        uuid::Uuid::new_v4()
            .simple()
            .to_string()
            .get(..12)
            .unwrap_or("0")
    )
}

/// Polls `probe` until it returns `Some`, or fails after `timeout` with `what` in the message.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut probe: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<Option<T>>>,
{
    let deadline = Instant::now() + timeout;
    let mut last_err = None;
    loop {
        match probe().await {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => {}
            Err(e) => last_err = Some(e),
        }
        if Instant::now() >= deadline {
            return Err(match last_err {
                Some(e) => e.context(format!("timed out after {timeout:?} waiting for {what}")),
                None => anyhow::anyhow!("timed out after {timeout:?} waiting for {what}"),
            });
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Installs a test-friendly tracing subscriber once (`RUST_LOG` filters).
pub fn init_tracing() {
    sluice_runtime::telemetry::init();
}

/// The `SLUICE_*` variables of the test's own environment. Services read every one as a config override (and
/// refuse `SLUICE_TEST_*` as unknown keys), so spawned services get them removed.
pub fn sluice_vars() -> Vec<String> {
    std::env::vars()
        .map(|(k, _)| k)
        .filter(|k| k.starts_with("SLUICE_"))
        .collect()
}

/// Path of a workspace binary (for example `sluice-consumer`) built beside the running test executable.
///
/// The test command builds every binary first (`cargo build --workspace --bins`); tests that must kill a real
/// process (kill -9, restarts) run it from here.
pub fn service_binary(name: &str) -> anyhow::Result<std::path::PathBuf> {
    let exe = std::env::current_exe()?;
    // target/debug/deps/<test>-<hash> -> target/debug/<name>
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .ok_or_else(|| anyhow::anyhow!("no target dir above {exe:?}"))?;
    let path = dir.join(name);
    anyhow::ensure!(
        path.exists(),
        "{} is not built; run `cargo build --workspace --bins` first",
        path.display()
    );
    Ok(path)
}

pub mod clickhouse_node;
pub mod kafka;
pub mod registry_node;
