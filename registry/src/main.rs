//! `sluice-registry`: reads its config (`--config` or `SLUICE_CONFIG`, then `SLUICE_*` variables) and serves.

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use sluice_registry::RegistryConfig;
use sluice_runtime::{config_file, shutdown, telemetry};

/// Sluice's Confluent-compatible schema registry.
#[derive(Parser)]
#[command(version, about)]
struct Args {
    /// TOML config file (default: `SLUICE_CONFIG`, else built-in defaults).
    #[arg(long)]
    config: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    telemetry::init();
    let args = Args::parse();
    let path = config_file::path_from_env_or(args.config);
    let config: RegistryConfig = config_file::load(path.as_deref())?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding {}", config.listen))?;
    sluice_registry::serve(config, listener, shutdown::on_signal()).await?;
    Ok(())
}
