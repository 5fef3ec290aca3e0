//! `sluice-producer`: reads config and runs the server until SIGTERM or Ctrl-C.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};

/// Sluice's HTTP ingestion service.
#[derive(Parser)]
#[command(version, about)]
struct Args {
    /// TOML config file (default: $SLUICE_CONFIG; without either, built-in defaults plus SLUICE_* variables).
    #[arg(long)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Cmd>,
}

#[derive(Subcommand)]
enum Cmd {
    /// Prints the config entry (`[keys.<sha256>]`) for an ingestion key, so its plaintext never lands in config.
    HashKey {
        /// The key's plaintext.
        key: String,
    },
}

// Small allocations per event and per request: mimalloc handles them with less CPU than glibc malloc under
// contention from the runtime's worker threads (about 10% per event); `allocator` makes it give memory back.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Some(Cmd::HashKey { key }) = args.command {
        println!(
            "[keys.{}]\ntenant = \"...\"\nstreams = [\"events\"]",
            sluice_producer::auth::hash_key(&key)
        );
        return Ok(());
    }
    sluice_producer::allocator::return_memory_soon();
    sluice_runtime::telemetry::init();
    let path = sluice_runtime::config_file::path_from_env_or(args.config);
    let config = sluice_producer::Config::load(path.as_deref())?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding {}", config.listen))?;
    let shutdown = sluice_runtime::shutdown::on_signal();
    // Keys change without a restart when they come from a file.
    sluice_producer::serve_reloading_keys(config, path, listener, shutdown).await?;
    Ok(())
}
