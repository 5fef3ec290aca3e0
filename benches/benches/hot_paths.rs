//! Criterion micro-benchmarks of the two hot paths, per event and per 1000-event batch:
//! - producer: JSON event → validated Avro record → Confluent bytes (and the whole request body, parse included, on
//!   the tree path and on the direct path the handler takes for a valid body);
//! - consumer: Confluent bytes → ClickHouse RowBinary row (`decode_row`, and with a reader prepared once per batch).
//!
//! `cargo bench -p sluice-benches --bench hot_paths` (add `-- --quick` for a fast pass).

use std::hint::black_box;

use apache_avro::writer::datum::GenericDatumWriter;
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use serde_json::Value as Json;
use sluice_benches::events::{EventGen, now_ms};
use sluice_benches::payloads::{ConsumerPath, ProducerPath};
use sluice_producer::encode::Encoder;

fn producer(c: &mut Criterion) {
    let path = ProducerPath::new(1).expect("events stream");
    let events = EventGen::new(42).events(1000, now_ms());
    let body = serde_json::to_vec(&events).expect("json");
    let mut g = c.benchmark_group("producer");

    g.throughput(Throughput::Elements(1));
    g.bench_function("validate_encode/1", |b| {
        let mut i = 0usize;
        b.iter_batched(
            || {
                i = (i + 1) % events.len();
                vec![events[i].clone()]
            },
            |batch| black_box(path.encode_batch(batch).expect("valid")),
            BatchSize::SmallInput,
        );
    });

    g.throughput(Throughput::Elements(1000));
    g.bench_function("validate_encode/1000", |b| {
        b.iter_batched(
            || events.clone(),
            |batch| black_box(path.encode_batch(batch).expect("valid")),
            BatchSize::LargeInput,
        );
    });
    // Encoding alone: the producer's encoder against apache-avro's whole-record writer it replaced.
    let values = path.prepare_batch(events.clone()).expect("valid");
    g.bench_function("encode/1000", |b| {
        b.iter(|| {
            let enc = Encoder::new(path.schema(), path.schema_id()).expect("encoder");
            for v in &values {
                black_box(enc.encode(black_box(v)).expect("encodes"));
            }
        });
    });
    g.bench_function("encode_whole_record_writer/1000", |b| {
        b.iter(|| {
            let w = GenericDatumWriter::builder(path.schema())
                .validate(false)
                .build()
                .expect("writer");
            for v in &values {
                let mut buf = Vec::with_capacity(256);
                buf.extend_from_slice(&[0, 0, 0, 0, 1]);
                w.write_value_ref(&mut buf, black_box(v)).expect("encodes");
                black_box(buf);
            }
        });
    });
    // The handler's path for a valid body: straight from its bytes, no JSON tree (`stream::direct`).
    g.bench_function("direct_body/1000", |b| {
        b.iter(|| black_box(path.encode_body(black_box(&body), 10_000).expect("valid")));
    });
    let one = serde_json::to_vec(&events[0]).expect("json");
    g.throughput(Throughput::Elements(1));
    g.bench_function("direct_body/1", |b| {
        b.iter(|| black_box(path.encode_body(black_box(&one), 10_000).expect("valid")));
    });
    g.throughput(Throughput::Elements(1000));
    g.bench_function("parse_validate_encode/1000", |b| {
        b.iter(|| {
            let parsed: Vec<Json> = serde_json::from_slice(black_box(&body)).expect("json");
            black_box(path.encode_batch(parsed).expect("valid"))
        });
    });
    g.finish();
}

fn consumer(c: &mut Criterion) {
    let producer = ProducerPath::new(1).expect("events stream");
    let encoded = producer
        .encode_batch(EventGen::new(43).events(1000, now_ms()))
        .expect("valid");
    // The reader came from the registry under the writers' id, as when a stream's latest version wrote the data.
    let path = ConsumerPath::new(Some(1)).expect("consumer path");
    // The bundled fallback reader (or any other version): every value is resolved to it.
    let other = ConsumerPath::new(None).expect("consumer path");
    let mut g = c.benchmark_group("consumer");

    g.throughput(Throughput::Elements(1));
    g.bench_function("decode_row/1", |b| {
        let mut out = Vec::with_capacity(1024);
        let mut i = 0usize;
        b.iter(|| {
            i = (i + 1) % encoded.len();
            out.clear();
            path.row(black_box(&encoded[i].payload), &mut out)
                .expect("row");
            black_box(out.len())
        });
    });

    g.throughput(Throughput::Elements(1000));
    g.bench_function("decode_row/1000", |b| {
        let mut out = Vec::with_capacity(1024 * 1024);
        b.iter(|| {
            out.clear();
            for e in &encoded {
                path.row(black_box(&e.payload), &mut out).expect("row");
            }
            black_box(out.len())
        });
    });
    g.bench_function("decode_row_other_reader/1000", |b| {
        let mut out = Vec::with_capacity(1024 * 1024);
        b.iter(|| {
            out.clear();
            for e in &encoded {
                other.row(black_box(&e.payload), &mut out).expect("row");
            }
            black_box(out.len())
        });
    });
    // The same rows through Avro values, as the consumer wrote them before the transcoder.
    g.bench_function("value_path/1000", |b| {
        let datum = path.datum_reader().expect("datum reader");
        let mut out = Vec::with_capacity(1024 * 1024);
        b.iter(|| {
            out.clear();
            for e in &encoded {
                path.row_by_value(&datum, black_box(&e.payload), &mut out)
                    .expect("row");
            }
            black_box(out.len())
        });
    });
    // What the consumer's pipeline does: one decoder per writer schema per batch (the transcoder, here).
    g.bench_function("batch_decoder/1000", |b| {
        let mut out = Vec::with_capacity(1024 * 1024);
        b.iter(|| {
            let decoder = path.decoder(1).expect("decoder");
            out.clear();
            for e in &encoded {
                decoder
                    .decode(black_box(&e.payload), &mut out)
                    .expect("row");
            }
            black_box(out.len())
        });
    });
    g.finish();
}

criterion_group!(benches, producer, consumer);
criterion_main!(benches);
