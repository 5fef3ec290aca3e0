//! The hot paths under test, called through the services' own library code: JSON event → validated Avro →
//! Confluent bytes (the producer's `stream`, `validate` and `encode`, and the direct path from body bytes), and Confluent bytes → ClickHouse RowBinary
//! (Avro decoding plus `sluice_schemas::clickhouse::RowPlan`, as the consumer does).
//!
//! Every benchmark goes through here, so when those APIs move only this file follows.

use std::sync::Arc;

use anyhow::Context;
use apache_avro::Schema;
use serde_json::Value as Json;
use sluice_consumer::decode::RowDecoder;
use sluice_producer::encode::Encoder;
use sluice_producer::stream::{IdSource, ServerSide, Stream};
use sluice_producer::validate::ValidateLimits;
use sluice_schemas::clickhouse::{Capabilities, RowPlan, TableSpec};

/// Tenant every benchmark event belongs to (the dev ingestion key's tenant in `config/producer.toml`).
pub const TENANT: &str = "demo";
/// Sort key of the events table, as `config/consumer.toml` configures it.
pub const ORDER_BY: &[&str] = &["tenant", "event_type", "event_id"];
/// Partition field of the events table.
pub const PARTITION_BY: &str = "occurred_at";

/// One encoded Kafka message.
#[derive(Debug, Clone)]
pub struct Encoded {
    /// Kafka key (the tenant, as the producer keys by default).
    pub key: Vec<u8>,
    /// Confluent-framed Avro.
    pub payload: Vec<u8>,
}

/// The producer's path for the `events` stream.
pub struct ProducerPath {
    stream: Stream,
    limits: ValidateLimits,
}

impl ProducerPath {
    /// The default `events` stream, with `schema_id` in every Confluent header.
    pub fn new(schema_id: u32) -> anyhow::Result<Self> {
        let config = sluice_producer::Config::default();
        let cfg = config
            .streams
            .get("events")
            .context("default config has no `events` stream")?;
        let stream = Stream::new("events", cfg, schema_id)?;
        let limits = ValidateLimits {
            max_string_bytes: config.limits.max_string_bytes,
        };
        Ok(Self { stream, limits })
    }

    /// Validates and encodes one request's events, as the ingest handler does.
    pub fn encode_batch(&self, events: Vec<Json>) -> anyhow::Result<Vec<Encoded>> {
        let server = ServerSide {
            tenant: TENANT,
            received_at: chrono::Utc::now(),
            ids: IdSource::Mint,
        };
        let encoder = Encoder::new(self.stream.schema(), self.stream.schema_id)?;
        let mut out = Vec::with_capacity(events.len());
        for (index, ev) in events.into_iter().enumerate() {
            let prepared = self
                .stream
                .prepare(ev, index, &server, self.limits)
                .map_err(|errs| anyhow::anyhow!("event {index} invalid: {errs:?}"))?;
            let payload = encoder.encode(&prepared.value)?;
            out.push(Encoded {
                key: prepared.key,
                payload,
            });
        }
        Ok(out)
    }

    /// Encodes one request body straight from its bytes, as the ingest handler does for a valid body.
    pub fn encode_body(&self, body: &[u8], max_events: usize) -> anyhow::Result<Vec<Encoded>> {
        let server = ServerSide {
            tenant: TENANT,
            received_at: chrono::Utc::now(),
            ids: IdSource::Mint,
        };
        let events = self
            .stream
            .encode_body(body, &server, self.limits, max_events)
            .context("the direct path refused the body")?;
        Ok(events
            .into_iter()
            .map(|e| Encoded {
                key: e.key,
                payload: e.payload,
            })
            .collect())
    }

    /// Validates one request's events into Avro values, without encoding them.
    pub fn prepare_batch(
        &self,
        events: Vec<Json>,
    ) -> anyhow::Result<Vec<apache_avro::types::Value>> {
        let server = ServerSide {
            tenant: TENANT,
            received_at: chrono::Utc::now(),
            ids: IdSource::Mint,
        };
        events
            .into_iter()
            .enumerate()
            .map(|(index, ev)| {
                self.stream
                    .prepare(ev, index, &server, self.limits)
                    .map(|p| p.value)
                    .map_err(|errs| anyhow::anyhow!("event {index} invalid: {errs:?}"))
            })
            .collect()
    }

    /// The stream's schema id.
    pub fn schema_id(&self) -> u32 {
        self.stream.schema_id
    }

    /// The parsed writer schema.
    pub fn schema(&self) -> &Schema {
        self.stream.schema()
    }
}

/// The consumer's path: Confluent bytes to one RowBinary row of the events table.
pub struct ConsumerPath {
    schema: Arc<Schema>,
    reader: sluice_consumer::decode::Reader,
    plan: RowPlan,
}

impl ConsumerPath {
    /// For the bundled `event` schema as both writer and reader, with the mapping of a current server (what the
    /// consumer writes on ClickHouse 22.3 and later, the stack's 26.9 included). `reader_id` is the registry id the
    /// consumer's reader came from: the writers' id in the usual case, `None` for the bundled fallback reader.
    pub fn new(reader_id: Option<u32>) -> anyhow::Result<Self> {
        Self::for_server(reader_id, Capabilities::CURRENT)
    }

    /// The same for a server that accepts `caps` (`Capabilities::LEGACY` for 18.16).
    pub fn for_server(reader_id: Option<u32>, caps: Capabilities) -> anyhow::Result<Self> {
        let schema = Arc::new(Schema::parse_str(sluice_schemas::catalog::EVENT.text)?);
        let shape = sluice_consumer::decode::Shape {
            caps,
            source_columns: false,
        };
        let reader =
            sluice_consumer::decode::Reader::for_table(reader_id, None, schema.clone(), shape)?;
        let plan = RowPlan::for_server(&schema, caps)?;
        Ok(Self {
            schema,
            reader,
            plan,
        })
    }

    /// Appends the row of one framed message to `out` with the consumer's own `decode_row`.
    pub fn row(&self, framed: &[u8], out: &mut Vec<u8>) -> anyhow::Result<()> {
        sluice_consumer::decode::decode_row(framed, &self.schema, &self.reader, out)
            .map_err(anyhow::Error::from)
    }

    /// The row of one framed message the way the consumer wrote it before the transcoder: an Avro value decoded
    /// with a reader prepared once, then encoded from the value (the baseline the transcoder is measured against).
    pub fn row_by_value(
        &self,
        datum: &apache_avro::reader::datum::GenericDatumReader<'_>,
        framed: &[u8],
        out: &mut Vec<u8>,
    ) -> anyhow::Result<()> {
        let (_, mut body) = sluice_schemas::wire::unframe(framed)?;
        let value = datum.read_value(&mut body)?;
        self.plan.encode(&value, out)?;
        Ok(())
    }

    /// A datum reader for the writer schema, for [`ConsumerPath::row_by_value`].
    pub fn datum_reader(
        &self,
    ) -> anyhow::Result<apache_avro::reader::datum::GenericDatumReader<'_>> {
        Ok(apache_avro::reader::datum::GenericDatumReader::builder(&self.schema).build()?)
    }

    /// The consumer's per-batch decoder for messages framed with `writer_id` (its name tables built once).
    pub fn decoder(&self, writer_id: u32) -> anyhow::Result<RowDecoder<'_>> {
        RowDecoder::new(writer_id, &self.schema, &self.reader).map_err(anyhow::Error::from)
    }

    /// `CREATE TABLE` for `table`, with the consumer's default sort key and partitioning.
    pub fn create_table_sql(&self, table: &str) -> anyhow::Result<String> {
        let order_by: Vec<String> = ORDER_BY.iter().map(|s| (*s).to_owned()).collect();
        Ok(self.plan.create_table_sql(&TableSpec {
            table,
            order_by: &order_by,
            partition_by: Some(PARTITION_BY),
            dedup_window: None,
        })?)
    }

    /// The column list for `INSERT INTO t (...) FORMAT RowBinary`.
    pub fn insert_columns(&self) -> String {
        self.plan.insert_columns()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::EventGen;

    #[test]
    fn events_survive_both_paths() {
        let producer = ProducerPath::new(1).expect("producer path");
        let consumer = ConsumerPath::new(Some(1)).expect("consumer path");
        let events = EventGen::new(3).events(50, crate::events::now_ms());
        let encoded = producer.encode_batch(events).expect("valid");
        assert_eq!(encoded.len(), 50);
        let mut rows = Vec::new();
        let decoder = consumer.decoder(1).expect("decoder");
        let mut same = Vec::new();
        for e in &encoded {
            assert_eq!(e.key, TENANT.as_bytes());
            decoder.decode(&e.payload, &mut rows).expect("row");
            consumer.row(&e.payload, &mut same).expect("row");
        }
        assert!(rows.len() > 50 * 40, "rows carry every field");
        assert_eq!(rows, same, "both decoders write the same rows");
        // The transcoder (the writer is the reader here) writes exactly what the value path writes.
        let datum = consumer.datum_reader().expect("datum reader");
        let mut by_value = Vec::new();
        for e in &encoded {
            consumer
                .row_by_value(&datum, &e.payload, &mut by_value)
                .expect("row");
        }
        assert_eq!(rows, by_value, "transcoded rows equal value-path rows");
        let ddl = consumer.create_table_sql("db.t").expect("ddl");
        assert!(ddl.starts_with("CREATE TABLE IF NOT EXISTS db.t"));
    }
}
