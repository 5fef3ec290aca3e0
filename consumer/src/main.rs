//! `sluice-consumer`: runs the consumer (default), or works with the dead-letter queue (`dlq`).

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use sluice_consumer::Config;
use sluice_consumer::dlq::ErrorClass;
use sluice_consumer::dlq::command::{self, Filter};

#[derive(Parser)]
#[command(
    name = "sluice-consumer",
    about = "Kafka → ClickHouse consumer with a dead-letter queue"
)]
struct Cli {
    /// Config file (TOML); `SLUICE_CONFIG` also names it. `SLUICE_*` variables override its keys.
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Consume into ClickHouse until SIGTERM (the default).
    Run,
    /// Write the streams as Parquet files to the lake (`[lake]`) until SIGTERM, in a group of its own.
    Lake,
    /// Work with dead letters.
    Dlq {
        #[command(subcommand)]
        action: DlqAction,
    },
}

#[derive(Subcommand)]
enum DlqAction {
    /// One line per dead letter: class, source, attempts, error.
    List(DlqArgs),
    /// Every header, the key and the value of each dead letter.
    Inspect(DlqArgs),
    /// Send dead letters back to their source topic.
    Replay(DlqArgs),
    /// Dead-letter one message a running consumer holds (class `operator`), so its partition moves on.
    Skip(SkipArgs),
}

#[derive(Args)]
struct SkipArgs {
    /// The source topic of the held message.
    #[arg(long)]
    topic: String,
    /// Its partition.
    #[arg(long)]
    partition: i32,
    /// Its offset (the dashboard's stuck partitions panel shows the oldest held one).
    #[arg(long)]
    offset: i64,
    /// Why, written to the letter.
    #[arg(long)]
    reason: Option<String>,
    /// A consumer's ops URL; repeat for each replica (the one holding the message takes it). Default: this
    /// config's `listen`.
    #[arg(long = "consumer")]
    consumers: Vec<String>,
}

#[derive(Args)]
struct DlqArgs {
    /// DLQ topic; default: every configured stream's DLQ.
    #[arg(long)]
    topic: Option<String>,
    /// Only this error class (undecodable, unknown_schema, incompatible, unrepresentable, rejected, operator).
    #[arg(long)]
    class: Option<String>,
    /// Only letters read from this source topic.
    #[arg(long)]
    source_topic: Option<String>,
    /// Only this DLQ partition.
    #[arg(long)]
    partition: Option<i32>,
    /// Only this DLQ offset.
    #[arg(long)]
    offset: Option<i64>,
    /// Only the letters whose row in the dead-letter table matches this SQL condition, e.g.
    /// `--where "class = 'incompatible' AND key = 'acme' AND dead_lettered_at > now() - INTERVAL 1 HOUR"`.
    #[arg(long = "where")]
    condition: Option<String>,
}

// Every message is copied out of librdkafka and decoded into row buffers: mimalloc handles those many small
// allocations with less CPU than glibc malloc.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    sluice_runtime::telemetry::init();
    let path = sluice_runtime::config_file::path_from_env_or(cli.config);
    let config: Config = sluice_runtime::config_file::load(path.as_deref())?;
    let runtime = tokio::runtime::Runtime::new().context("starting the tokio runtime")?;
    runtime.block_on(async move {
        match cli.command.unwrap_or(Command::Run) {
            Command::Run => run(config).await,
            Command::Lake => lake(config).await,
            Command::Dlq { action } => dlq(config, action).await,
        }
    })
}

async fn skip(config: &Config, a: SkipArgs) -> anyhow::Result<()> {
    let consumers = if a.consumers.is_empty() {
        vec![format!("http://{}", config.listen)]
    } else {
        a.consumers
    };
    let request = sluice_consumer::operator::Skip {
        topic: a.topic,
        partition: a.partition,
        offset: a.offset,
        reason: a.reason,
    };
    match sluice_consumer::operator::skip(&consumers, config.operator_key.as_deref(), &request)
        .await
    {
        Ok((url, dlq_topic)) => {
            println!(
                "{}/{}@{} dead-lettered to {dlq_topic} (class operator) by {url}; replay it later with \
                 `sluice-consumer dlq replay --topic {dlq_topic} --class operator --source-topic {}`",
                request.topic, request.partition, request.offset, request.topic
            );
            Ok(())
        }
        Err(answers) => anyhow::bail!(
            "no consumer took {}/{}@{}:\n  {}",
            request.topic,
            request.partition,
            request.offset,
            answers.join("\n  ")
        ),
    }
}

async fn lake(config: Config) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(config.lake.listen)
        .await
        .with_context(|| format!("binding {}", config.lake.listen))?;
    tracing::info!(listen = %config.lake.listen, "lake ops endpoints up");
    let shutdown = sluice_runtime::shutdown::on_signal();
    sluice_consumer::lake::serve(config, listener, shutdown).await?;
    Ok(())
}

async fn run(config: Config) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding {}", config.listen))?;
    tracing::info!(listen = %config.listen, "ops endpoints up");
    let shutdown = sluice_runtime::shutdown::on_signal();
    sluice_consumer::serve(config, listener, shutdown).await?;
    Ok(())
}

async fn dlq(config: Config, action: DlqAction) -> anyhow::Result<()> {
    let (args, which) = match action {
        DlqAction::List(a) => (a, "list"),
        DlqAction::Inspect(a) => (a, "inspect"),
        DlqAction::Replay(a) => (a, "replay"),
        DlqAction::Skip(a) => return skip(&config, a).await,
    };
    let class = match args.class.as_deref() {
        Some(c) => Some(ErrorClass::parse(c).with_context(|| format!("unknown error class {c}"))?),
        None => None,
    };
    let letters = match &args.condition {
        Some(c) => {
            let letters = sluice_consumer::dead_letters::select(&config, c)
                .await
                .with_context(|| {
                    format!("selecting letters from the dead-letter table where {c}")
                })?;
            eprintln!(
                "{} letters in the dead-letter table match {c}",
                letters.len()
            );
            Some(letters)
        }
        None => None,
    };
    let filter = Filter {
        class,
        source_topic: args.source_topic,
        partition: args.partition,
        offset: args.offset,
        letters,
    };
    let topics: Vec<String> = match args.topic {
        Some(t) => vec![t],
        None => config.streams.iter().map(|s| s.dlq_topic()).collect(),
    };
    let mut out = std::io::stdout().lock();
    for topic in topics {
        match which {
            "list" => command::list(&config.kafka, &topic, &filter, &mut out).await?,
            "inspect" => command::inspect(&config.kafka, &topic, &filter, &mut out).await?,
            _ => command::replay(&config.kafka, &topic, &filter, &mut out).await?,
        };
    }
    out.flush()?;
    Ok(())
}
