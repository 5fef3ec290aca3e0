//! One attempt at a segment: writer schemas, the stream's reader, the files built, the manifest recorded, poison
//! dead-lettered, the files put. Any failure before the last put leaves the segment to be tried again whole; since
//! its manifest (written before any file) fixes its bounds, a retry or a restart rewrites the same files.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use apache_avro::Schema;
use rdkafka::message::Message;
use sluice_schemas::catalog;

use super::files::{self, Built, FileSchema};
use super::metrics::LakeMetrics;
use super::segment::Segment;
use super::store::Lake;
use crate::config::StreamConfig;
use crate::decode::writer_id;
use crate::dlq::DlqProducer;
use crate::error::Error;
use crate::metrics::Metrics;
use crate::offsets::Outcome;
use crate::registry::{RegistryError, SchemaRegistry};
use crate::verdict::{Failure, Verdict, verdict};

/// One stream as the lake writes it.
pub struct LakeStream {
    /// The table's name in the lake (its ClickHouse name without the database).
    pub table: String,
    subject: String,
    bundled: Option<String>,
    dlq_topic: String,
    partition_by: Option<String>,
    schema: Option<FileSchema>,
    known_writers: HashSet<u32>,
}

impl LakeStream {
    /// The lake side of a configured stream.
    pub fn new(cfg: &StreamConfig) -> Self {
        let table = cfg
            .table
            .rsplit('.')
            .next()
            .unwrap_or(&cfg.table)
            .to_owned();
        Self {
            table,
            subject: cfg.subject(),
            bundled: cfg.bundled_schema.clone(),
            dlq_topic: cfg.dlq_topic(),
            partition_by: cfg.partition_field().map(str::to_owned),
            schema: None,
            known_writers: HashSet::new(),
        }
    }
}

/// Everything an attempt needs.
pub struct Publisher {
    /// Where files go.
    pub lake: Lake,
    /// Streams by topic.
    pub streams: HashMap<String, LakeStream>,
    /// Writer and reader schemas.
    pub registry: SchemaRegistry,
    /// Where poison goes.
    pub dlq: DlqProducer,
    /// Shared consumer metrics.
    pub metrics: Metrics,
    /// The lake's own.
    pub lake_metrics: LakeMetrics,
    /// File format and codec.
    pub encoding: super::files::Encoding,
}

/// What a published segment settles: each message's outcome, in order.
pub type Outcomes = Vec<Outcome>;

impl Publisher {
    /// Tries `segment` once; hands it back with every message's outcome, or with why it must be tried again.
    pub async fn attempt(&mut self, mut segment: Segment) -> (Segment, Result<Outcomes, Failure>) {
        let started = Instant::now();
        let Some(stream) = self.streams.get(&segment.tp.topic) else {
            let n = segment.messages.len();
            return (segment, Ok(vec![Outcome::Ignored; n]));
        };
        let table = stream.table.clone();
        let writers = match self.writers(&segment).await {
            Ok(w) => w,
            Err(f) => return (segment, Err(f)),
        };
        let target = match self.reader(&segment.tp.topic, &writers).await {
            Ok(t) => t,
            Err(f) => return (segment, Err(f)),
        };
        let encoding = self.encoding;
        // CPU work on this worker thread, its other tasks handed to another (the service runs the multi-thread
        // runtime); a panic must not unwind through the loop that holds the segment's receipts.
        let built = tokio::task::block_in_place(|| {
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                files::build(&segment.messages, &writers, &target, encoding)
            }))
        });
        let built = match built {
            Ok(b) => b,
            Err(_) => {
                let f = Failure::Lake("building the files panicked".into());
                return (segment, Err(f));
            }
        };
        let built = match built {
            Ok(b) => b,
            Err(e) => return (segment, Err(Failure::Lake(e.to_string()))),
        };
        let result = self.publish(&mut segment, &table, &built).await;
        if result.is_ok() {
            let bytes = built.files.iter().map(|f| f.bytes.len()).sum();
            let rows = built.files.iter().map(|f| f.rows).sum();
            self.lake_metrics
                .published(&table, built.files.len(), rows, bytes, started.elapsed());
        }
        let outcomes = result.map(|()| {
            let mut out = vec![Outcome::Inserted; segment.messages.len()];
            for (i, _) in &built.letters {
                out[*i] = Outcome::DeadLettered;
            }
            out
        });
        (segment, outcomes)
    }

    /// Manifest, dead letters, files: in that order, so no file exists whose bounds are not on record.
    async fn publish(
        &self,
        segment: &mut Segment,
        table: &str,
        built: &Built,
    ) -> Result<(), Failure> {
        let layout = self.lake.layout();
        let tp = &segment.tp;
        let bounds = segment.bounds();
        let paths: Vec<_> = built
            .files
            .iter()
            .map(|f| layout.data_file(table, &f.hour, &tp.topic, tp.partition, bounds))
            .collect();
        let manifest = serde_json::json!({
            "topic": tp.topic,
            "partition": tp.partition,
            "first_offset": bounds.first,
            "last_offset": bounds.last,
            "files": paths.iter().map(|p| p.as_ref()).collect::<Vec<_>>(),
            "rows": built.files.iter().map(|f| f.rows).sum::<usize>(),
            "dead_lettered": built.letters.len(),
        });
        self.lake
            .put(
                &layout.manifest(table, &tp.topic, tp.partition, bounds),
                manifest.to_string().into(),
            )
            .await?;
        let dlq_topic = self
            .streams
            .get(&tp.topic)
            .map(|s| s.dlq_topic.as_str())
            .unwrap_or_default();
        for (i, letter) in &built.letters {
            let m = &segment.messages[*i].message;
            if segment.lettered.contains(&m.offset()) {
                continue;
            }
            self.dlq
                .send(dlq_topic, m, letter)
                .await
                .map_err(Failure::DeadLetter)?;
            self.metrics.dead_lettered(
                letter.class.as_str(),
                m.topic(),
                m.partition(),
                m.offset(),
                &letter.message,
            );
            let offset = m.offset();
            segment.lettered.insert(offset);
        }
        for (path, file) in paths.iter().zip(&built.files) {
            self.lake.put(path, file.bytes.clone()).await?;
        }
        Ok(())
    }

    /// The writer schema of every framed message; an unreachable registry fails the attempt.
    async fn writers(
        &self,
        segment: &Segment,
    ) -> Result<HashMap<u32, Result<Arc<Schema>, RegistryError>>, Failure> {
        let mut out = HashMap::new();
        for r in &segment.messages {
            let Ok(id) = writer_id(r.message.payload()) else {
                continue;
            };
            if out.contains_key(&id) {
                continue;
            }
            let schema = match self.registry.schema_by_id(id).await {
                Ok(s) => Ok(s),
                Err(e) => match verdict(&Failure::Registry(e.clone())) {
                    Verdict::Retry => return Err(Failure::Registry(e)),
                    Verdict::DeadLetter(_) => Err(e),
                },
            };
            out.insert(id, schema);
        }
        Ok(out)
    }

    /// The stream's file schema: the subject's latest version, looked up again whenever a writer id is new to
    /// the stream (a newer version adds its columns to the files from then on), or the bundled schema while the
    /// subject is not registered.
    async fn reader(
        &mut self,
        topic: &str,
        writers: &HashMap<u32, Result<Arc<Schema>, RegistryError>>,
    ) -> Result<FileSchema, Failure> {
        let Some(stream) = self.streams.get_mut(topic) else {
            return Err(Failure::Lake(format!("no stream for topic {topic}")));
        };
        let new_writer = writers
            .iter()
            .any(|(id, s)| s.is_ok() && !stream.known_writers.contains(id));
        if new_writer || stream.schema.is_none() {
            let latest = self.registry.latest(&stream.subject).await?;
            let current = stream.schema.as_ref().and_then(|s| s.id);
            let replacement = match latest {
                Some(l) if Some(l.id) != current => Some((Some(l.id), l.schema)),
                Some(_) => None,
                None if stream.schema.is_none() => Some((None, bundled(stream)?)),
                None => None,
            };
            if let Some((id, schema)) = replacement {
                let file_schema = FileSchema::new(id, schema, stream.partition_by.as_deref())
                    .map_err(|e| Failure::Lake(format!("{}: {e}", stream.subject)))?;
                tracing::info!(subject = %stream.subject, id, "lake files take this reader schema");
                stream.schema = Some(file_schema);
            }
            stream
                .known_writers
                .extend(writers.iter().filter(|(_, s)| s.is_ok()).map(|(id, _)| *id));
        }
        stream
            .schema
            .clone()
            .ok_or_else(|| Failure::Lake(format!("{}: no reader schema", stream.subject)))
    }
}

fn bundled(stream: &LakeStream) -> Result<Arc<Schema>, Failure> {
    let unavailable = |m: String| Failure::Registry(RegistryError::Unavailable(m));
    let name = stream.bundled.as_deref().ok_or_else(|| {
        unavailable(format!(
            "subject {} is not registered and the stream names no bundled_schema",
            stream.subject
        ))
    })?;
    let text = catalog::bundled(name)
        .ok_or_else(|| Failure::Table(Error::Config(format!("no bundled schema {name}"))))?
        .text;
    Schema::parse_str(text)
        .map(Arc::new)
        .map_err(|e| Failure::Table(Error::Config(format!("bundled schema {name}: {e}"))))
}
