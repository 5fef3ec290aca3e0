//! `sluice-profile`: runs one hot path a fixed number of times, for profilers that count rather than time
//! (`valgrind --tool=callgrind`, `perf record`), so two builds can be compared instruction for instruction.
//!
//! `valgrind --tool=callgrind target/release/sluice-profile consumer --rounds 20` then `callgrind_annotate`.

use std::hint::black_box;

use clap::{Parser, ValueEnum};
use sluice_benches::events::EventGen;
use sluice_benches::payloads::{ConsumerPath, ProducerPath};

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Path {
    /// JSON body → parse → validate → Avro → Confluent bytes, per request of `--events` (the tree path).
    Producer,
    /// JSON body bytes → Avro → Confluent bytes on the direct path the handler takes for a valid body.
    ProducerDirect,
    /// Confluent bytes → RowBinary with a reader registered under the writers' id (one decoder per batch).
    Consumer,
    /// The same with the bundled fallback reader, so every value is resolved.
    ConsumerOtherReader,
}

/// Fixed-work driver of one hot path.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Which path.
    path: Path,
    /// Events per round (one request, or one batch).
    #[arg(long, default_value_t = 1000)]
    events: usize,
    /// Rounds.
    #[arg(long, default_value_t = 20)]
    rounds: usize,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let events = EventGen::new(42).events(args.events, sluice_benches::events::now_ms());
    let producer = ProducerPath::new(1)?;
    match args.path {
        Path::Producer => {
            let body = serde_json::to_vec(&events)?;
            for _ in 0..args.rounds {
                let parsed: Vec<serde_json::Value> = serde_json::from_slice(black_box(&body))?;
                black_box(producer.encode_batch(parsed)?);
            }
        }
        Path::ProducerDirect => {
            let body = serde_json::to_vec(&events)?;
            for _ in 0..args.rounds {
                black_box(producer.encode_body(black_box(&body), args.events)?);
            }
        }
        Path::Consumer | Path::ConsumerOtherReader => {
            let encoded = producer.encode_batch(events)?;
            let reader_id = matches!(args.path, Path::Consumer).then_some(1);
            let consumer = ConsumerPath::new(reader_id)?;
            let mut out = Vec::with_capacity(args.events * 512);
            for _ in 0..args.rounds {
                // As the consumer's pipeline does: one decoder per writer schema per batch.
                let decoder = consumer.decoder(1)?;
                out.clear();
                for e in &encoded {
                    decoder
                        .decode(black_box(&e.payload), &mut out)
                        .map_err(anyhow::Error::from)?;
                }
                black_box(out.len());
            }
        }
    }
    eprintln!(
        "{:?}: {} rounds of {} events",
        args.path, args.rounds, args.events
    );
    Ok(())
}
