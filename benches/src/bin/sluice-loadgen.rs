//! `sluice-loadgen`: sends realistic events to a Sluice producer over HTTP and reports throughput, latency
//! percentiles and counts by status.
//!
//! `sluice-loadgen --connections 8 --batch 100 --duration 15` sends flat out; add `--rate 20000` to pace to
//! 20k events/s. Progress goes to stderr every second; the summary to stdout (`--json` for machines).

use std::time::Duration;

use clap::Parser;
use sluice_benches::loadgen::{self, BodyFormat, LoadConfig};

/// Sluice HTTP load generator.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Producer base URL (loopback only, by intent).
    #[arg(
        long,
        default_value = "http://127.0.0.1:8080",
        env = "SLUICE_LOADGEN_URL"
    )]
    url: String,
    /// Stream name.
    #[arg(long, default_value = "events")]
    stream: String,
    /// Send Segment `/v1/batch` bodies of track messages instead (`--stream` is then unused).
    #[arg(long)]
    segment: bool,
    /// Ingestion key (the dev key of config/producer.toml by default).
    #[arg(long, default_value = "dev-key", env = "SLUICE_LOADGEN_KEY")]
    key: String,
    /// Concurrent connections.
    #[arg(long, short = 'c', default_value_t = 8)]
    connections: usize,
    /// Events per request (1 sends a single object, more a JSON array).
    #[arg(long, short = 'b', default_value_t = 100)]
    batch: usize,
    /// Target events per second; 0 sends as fast as the server answers.
    #[arg(long, short = 'r', default_value_t = 0.0)]
    rate: f64,
    /// Seconds to send for (at most 3600).
    #[arg(long, short = 'd', default_value_t = 10.0)]
    duration: f64,
    /// Stop after this many requests.
    #[arg(long, default_value_t = 10_000_000)]
    requests: u64,
    /// Distinct request bodies generated up front.
    #[arg(long, default_value_t = 64)]
    bodies: usize,
    /// Seed of the event generator.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Per-request timeout in seconds.
    #[arg(long, default_value_t = 20.0)]
    timeout: f64,
    /// No progress lines.
    #[arg(long)]
    quiet: bool,
    /// Print the summary as JSON.
    #[arg(long)]
    json: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(
        args.duration > 0.0 && args.duration <= 3600.0,
        "--duration must be between 0 and 3600 seconds"
    );
    anyhow::ensure!(args.timeout > 0.0, "--timeout must be positive");
    let base = args.url.trim_end_matches('/');
    let (url, format) = if args.segment {
        (format!("{base}/v1/batch"), BodyFormat::Segment)
    } else {
        (
            format!("{base}/v1/streams/{}/events", args.stream),
            BodyFormat::Native,
        )
    };
    let cfg = LoadConfig {
        url,
        format,
        key: args.key,
        connections: args.connections,
        batch: args.batch,
        rate: (args.rate > 0.0).then_some(args.rate),
        duration: Duration::from_secs_f64(args.duration),
        max_requests: args.requests,
        bodies: args.bodies,
        seed: args.seed,
        progress: !args.quiet,
        timeout: Duration::from_secs_f64(args.timeout),
    };
    let report = loadgen::run(cfg, None).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!("{report}");
    }
    Ok(())
}
