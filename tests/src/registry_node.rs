//! A `sluice-registry` process of a test's own, on a `_schemas` topic of its own: its ids start at 1, so a test can
//! know which id the next schema registered there gets.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use anyhow::Context;
use tokio::process::{Child, Command};

use crate::{eventually, kafka_bootstrap, service_binary};

/// Starts the binary on `topic` and waits for `/readyz`; returns the child (killed on drop) and its base URL.
pub async fn start(topic: &str) -> anyhow::Result<(Child, String)> {
    start_with(topic, &[]).await
}

/// [`start`] with extra `SLUICE_*` settings.
pub async fn start_with(topic: &str, env: &[(&str, &str)]) -> anyhow::Result<(Child, String)> {
    let port = crate::kafka::free_port()?;
    let config = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../config/registry.toml");
    let mut cmd = Command::new(service_binary("sluice-registry")?);
    for k in crate::sluice_vars() {
        cmd.env_remove(k);
    }
    let child = cmd
        .env("SLUICE_CONFIG", config)
        .env("SLUICE_LISTEN", format!("127.0.0.1:{port}"))
        .env("SLUICE_TOPIC", topic)
        .env("SLUICE_KAFKA__BOOTSTRAP_SERVERS", kafka_bootstrap())
        .env("RUST_LOG", "warn")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .context("starting sluice-registry")?;
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    eventually(
        "registry process ready",
        Duration::from_secs(60),
        || async {
            let ok = http
                .get(format!("{base}/readyz"))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            Ok(ok.then_some(()))
        },
    )
    .await?;
    Ok((child, base))
}
