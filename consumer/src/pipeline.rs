//! The consume → decode → insert → dead-letter → commit loop.
//!
//! A flush takes every message read since the last one and ends only when each of them is either in ClickHouse
//! or acknowledged by the DLQ; only then are their receipts completed and offsets committed. A transient failure
//! (ClickHouse, registry, DLQ broker) pauses the partitions and retries the same messages with backoff, polling
//! the consumer meanwhile so the group membership and rebalances keep working.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::ops::Range;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use apache_avro::Schema;
use futures::future::join_all;
use rdkafka::message::{BorrowedMessage, Message};
use sluice_schemas::clickhouse::{RowPlan, TableSpec};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::batch::Batch;
use crate::config::{Config, StreamConfig};
use crate::decode::{Poison, Reader, RowDecoder, writer_id};
use crate::dlq::{DlqProducer, ErrorClass, Verdict};
use crate::error::Error;
use crate::metrics::Metrics;
use crate::offsets::TopicPartition;
use crate::predecode::{Predecoded, SharedSnapshot, Snapshot, SnapshotStream, predecode_into};
use crate::registry::{RegistryError, SchemaRegistry};
use crate::sink::clickhouse::ClickHouseSink;
use crate::sink::clickhouse::insert::RowRef;
use crate::sink::clickhouse::retry::Backoff;
use crate::source::Received;
use crate::source::kafka::{SourceConsumer, SourceContext, commit_sync, set_paused};

/// One configured stream and what the consumer currently knows about it.
pub struct Stream {
    cfg: StreamConfig,
    table: String,
    subject: String,
    dlq_topic: String,
    reader: Arc<Reader>,
    /// Writer schemas seen since the reader was last refreshed, by id.
    known_writers: HashMap<u32, Arc<Schema>>,
    /// Whether the table is known to exist with the reader's columns.
    table_ok: bool,
}

impl Stream {
    /// A stream starting with `reader`.
    pub fn new(cfg: &StreamConfig, default_db: &str, reader: Reader) -> Self {
        Self {
            table: cfg.qualified_table(default_db),
            subject: cfg.subject(),
            dlq_topic: cfg.dlq_topic(),
            cfg: cfg.clone(),
            reader: Arc::new(reader),
            known_writers: HashMap::new(),
            table_ok: false,
        }
    }

    /// How the table is created.
    pub fn spec(&self) -> TableSpec<'_> {
        TableSpec {
            table: &self.table,
            order_by: &self.cfg.order_by,
            partition_by: self.cfg.partition_field(),
        }
    }

    /// The reader's column mapping.
    pub fn plan(&self) -> &RowPlan {
        &self.reader.plan
    }

    /// The qualified table name.
    pub fn table(&self) -> &str {
        &self.table
    }

    /// Records that the table exists with the reader's columns.
    pub fn table_ready(&mut self) {
        self.table_ok = true;
    }
}

/// What the pipeline is made of.
pub struct Parts {
    /// The group member.
    pub consumer: Arc<SourceConsumer>,
    /// Its rebalance context (owns the offset book).
    pub context: SourceContext,
    /// Streams by topic.
    pub streams: HashMap<String, Stream>,
    /// Writer/reader schema source.
    pub registry: SchemaRegistry,
    /// Where rows go.
    pub sink: ClickHouseSink,
    /// Where poison goes.
    pub dlq: DlqProducer,
    /// Metric handles.
    pub metrics: Metrics,
    /// Set once the pipeline is consuming.
    pub ready: Arc<AtomicBool>,
}

/// The running loop.
pub struct Pipeline {
    parts: Parts,
    cfg: Config,
    paused: HashSet<TopicPartition>,
    /// What the read loop may decode ahead with.
    snapshot: SharedSnapshot,
    /// Once shutting down, when retrying stops: one grace period for the flush in flight and the last one together.
    give_up_at: Option<Instant>,
}

/// Messages decoded ahead at a time while a batch is read.
const PREDECODE_CHUNK: usize = 2_000;

/// One stream's rows of a flush attempt: the RowBinary bytes and, per row, its batch index and byte range.
#[derive(Default)]
struct Encoded {
    buf: Vec<u8>,
    rows: Vec<(usize, Range<usize>)>,
}

/// Why one flush attempt did not finish.
type AttemptResult = Result<(), Error>;

impl Pipeline {
    /// A pipeline over `parts`.
    pub fn new(parts: Parts, cfg: Config) -> Self {
        Self {
            parts,
            cfg,
            paused: HashSet::new(),
            snapshot: SharedSnapshot::default(),
            give_up_at: None,
        }
    }

    /// Consumes until `shutdown`, then flushes what it holds (within the grace period), commits and leaves.
    ///
    /// One flush runs while the next batch is read: the insert and commit of batch N overlap the receiving of
    /// batch N+1, whose receipts stay outstanding, so a commit still never passes a message that is not done.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), Error> {
        let mut batch = Batch::new(self.cfg.batch.clone());
        self.parts.ready.store(true, Ordering::SeqCst);
        let consumer = self.parts.consumer.clone();
        // Reading needs only these two; the flush in flight owns the rest.
        let context = self.parts.context.clone();
        let metrics = self.parts.metrics.clone();
        let snapshot = self.snapshot.clone();
        // The batch's rows decoded so far, and how many of its messages that covers.
        let mut pre = Predecoded::default();
        let mut decoded_upto = 0;
        let mut flusher = Flusher::Idle(Box::new(self));
        loop {
            let deadline = batch.deadline();
            let due: bool;
            tokio::select! {
                biased;
                () = shutdown.cancelled() => break,
                done = flusher.finished() => {
                    flusher = Flusher::Idle(Box::new(done));
                    due = batch.is_worth_flushing(now_ms());
                }
                () = sleep_until_opt(deadline) => due = true,
                msg = consumer.recv() => {
                    match msg {
                        Ok(m) => {
                            if let Some(r) = receive(&context, &metrics, &m) {
                                batch.push(r);
                            }
                            // Decoding a chunk at a time, between reads, overlaps the insert in flight and leaves
                            // little to decode when the batch is flushed.
                            if batch.len() - decoded_upto >= PREDECODE_CHUNK {
                                predecode_into(&snapshot.current(), batch.items(), decoded_upto, &mut pre);
                                decoded_upto = batch.len();
                            }
                        }
                        Err(e) => {
                            metrics.retrying("kafka", 0, Duration::from_millis(100), &e);
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                    }
                    due = batch.is_full() || (flusher.is_idle() && batch.is_worth_flushing(now_ms()));
                }
            }
            if due {
                // At most one flush runs, and the next waits for it, which bounds memory to two batches.
                let items = batch.take();
                predecode_into(&snapshot.current(), &items, decoded_upto, &mut pre);
                let pre = std::mem::take(&mut pre);
                decoded_upto = 0;
                let mut pipeline = flusher.idle().await;
                let shutdown = shutdown.clone();
                flusher = Flusher::Busy(Box::pin(async move {
                    pipeline.flush(items, Some(pre), &shutdown).await;
                    pipeline
                }));
            }
        }
        let mut pipeline = flusher.idle().await;
        tracing::info!(
            pending = batch.len(),
            "shutting down: flushing the last batch"
        );
        pipeline.flush(batch.take(), None, &shutdown).await;
        pipeline.parts.ready.store(false, Ordering::SeqCst);
        pipeline.commit().await;
        // Dropping the last handle closes the consumer: it leaves the group (the revoke callback commits nothing
        // new, everything done is committed above). Closing blocks, so do it off the runtime.
        drop(pipeline);
        let _ = tokio::task::spawn_blocking(move || drop(consumer)).await;
        tracing::info!("left the group");
        Ok(())
    }

    /// Flushes `items` until every message in it is done, or gives up when the shutdown grace runs out.
    async fn flush(
        &mut self,
        mut items: Vec<Received>,
        mut pre: Option<Predecoded>,
        shutdown: &CancellationToken,
    ) {
        if items.is_empty() {
            return;
        }
        self.parts.metrics.batch_flushed(items.len());
        let started = Instant::now();
        let mut done = vec![false; items.len()];
        let mut backoff = Backoff::new(&self.cfg.retry);
        let consumer = self.parts.consumer.clone();
        loop {
            if self.drop_revoked(&mut items, &mut done) {
                // Rows decoded ahead are indexed by the batch as it was.
                pre = None;
            }
            // Rows decoded ahead serve the first attempt only: later ones skip what is done.
            let error = match self.attempt(&items, &mut done, pre.take()).await {
                Ok(()) => break,
                Err(e) => e,
            };
            let delay = backoff.next_delay();
            self.parts
                .metrics
                .retrying(error.label(), backoff.attempts(), delay, &error);
            self.pause_assigned();
            let until = Instant::now() + delay;
            loop {
                if shutdown.is_cancelled() && self.give_up_at.is_none() {
                    self.give_up_at = Some(Instant::now() + self.cfg.shutdown_grace());
                }
                if self.give_up_at.is_some_and(|t| Instant::now() >= t) {
                    tracing::warn!(
                        messages = items.len(),
                        "shutdown grace over: leaving the batch uncommitted for redelivery"
                    );
                    return;
                }
                let wake = self.give_up_at.map_or(until, |t| t.min(until));
                tokio::select! {
                    () = tokio::time::sleep_until(wake) => {
                        if Instant::now() >= until { break; }
                    }
                    () = shutdown.cancelled(), if self.give_up_at.is_none() => {}
                    msg = consumer.recv() => {
                        // Keeps the group membership alive and serves rebalances; anything still in librdkafka's
                        // fetch queue joins this flush and its partition is paused too.
                        if let Some(r) = msg.ok().and_then(|m| receive(&self.parts.context, &self.parts.metrics, &m)) {
                            let tp = (r.receipt.topic().to_owned(), r.receipt.partition());
                            if self.paused.insert(tp.clone()) {
                                set_paused(&self.parts.consumer, &[tp], true);
                                self.parts.metrics.paused_partitions(self.paused.len());
                            }
                            items.push(r);
                            done.push(false);
                        }
                    }
                }
            }
        }
        let count = items.len();
        {
            let mut offsets = self.parts.context.offsets();
            for item in items {
                offsets.complete(item.receipt);
            }
        }
        self.resume_paused();
        let written = started.elapsed();
        self.commit().await;
        tracing::debug!(
            messages = count,
            write_ms = written.as_millis() as u64,
            commit_ms = (started.elapsed() - written).as_millis() as u64,
            "batch flushed"
        );
    }

    /// Removes messages whose partition was revoked since they were read: they are the new owner's now.
    /// Returns whether any was dropped.
    fn drop_revoked(&self, items: &mut Vec<Received>, done: &mut Vec<bool>) -> bool {
        let offsets = self.parts.context.offsets();
        let keep: Vec<bool> = items
            .iter()
            .map(|r| offsets.is_current(&r.receipt))
            .collect();
        drop(offsets);
        if keep.iter().all(|k| *k) {
            return false;
        }
        let dropped = keep.iter().filter(|k| !**k).count();
        tracing::info!(dropped, "dropping pending messages of revoked partitions");
        let mut i = 0;
        items.retain(|_| {
            i += 1;
            keep[i - 1]
        });
        let mut j = 0;
        done.retain(|_| {
            j += 1;
            keep[j - 1]
        });
        true
    }

    fn pause_assigned(&mut self) {
        let assigned = self.parts.context.offsets().assigned();
        let new: Vec<TopicPartition> = assigned
            .into_iter()
            .filter(|tp| !self.paused.contains(tp))
            .collect();
        if new.is_empty() {
            return;
        }
        set_paused(&self.parts.consumer, &new, true);
        self.paused.extend(new);
        self.parts.metrics.paused_partitions(self.paused.len());
    }

    fn resume_paused(&mut self) {
        if self.paused.is_empty() {
            return;
        }
        let assigned: HashSet<TopicPartition> = self
            .parts
            .context
            .offsets()
            .assigned()
            .into_iter()
            .collect();
        let resume: Vec<TopicPartition> = self
            .paused
            .drain()
            .filter(|tp| assigned.contains(tp))
            .collect();
        set_paused(&self.parts.consumer, &resume, false);
        tracing::info!(partitions = resume.len(), "resumed after recovery");
        self.parts.metrics.paused_partitions(0);
    }

    /// Commits every position that moved; a failure is logged and the positions are retried with the next commit.
    async fn commit(&mut self) {
        let positions = self.parts.context.offsets().committable();
        if positions.is_empty() {
            return;
        }
        match commit_sync(&self.parts.consumer, positions.clone()).await {
            Ok(()) => {
                self.parts.context.offsets().committed(&positions);
                self.parts
                    .metrics
                    .offsets_committed(positions.len(), Ok(()));
            }
            Err(e) => self
                .parts
                .metrics
                .offsets_committed(positions.len(), Err(&e)),
        }
    }

    /// One try at making every pending message of `items` done.
    async fn attempt(
        &mut self,
        items: &[Received],
        done: &mut [bool],
        pre: Option<Predecoded>,
    ) -> AttemptResult {
        // Writer schemas first: the registry being down is transient, an unknown id is poison.
        let mut writers: HashMap<u32, Result<Arc<Schema>, Poison>> = HashMap::new();
        let mut new_writers: HashSet<(String, u32)> = HashSet::new();
        for (i, item) in items.iter().enumerate() {
            if done[i] {
                continue;
            }
            let Ok(id) = writer_id(item.message.payload()) else {
                continue;
            };
            if let std::collections::hash_map::Entry::Vacant(e) = writers.entry(id) {
                let schema = match self.parts.registry.schema_by_id(id).await {
                    Ok(s) => Ok(s),
                    Err(RegistryError::NotFound(m)) => Err(Poison::new(
                        ErrorClass::UnknownSchema,
                        format!("{m} is not in the schema registry"),
                    )),
                    Err(RegistryError::BadSchema(m)) => {
                        Err(Poison::new(ErrorClass::UnknownSchema, m))
                    }
                    Err(e @ RegistryError::Unavailable(_)) => return Err(e.into()),
                };
                e.insert(schema);
            }
            let topic = item.message.topic();
            if let Some(stream) = self.parts.streams.get(topic)
                && !stream.known_writers.contains_key(&id)
                && writers.get(&id).is_some_and(Result::is_ok)
            {
                new_writers.insert((topic.to_owned(), id));
            }
        }

        // Tables exist, and a new writer may mean a new reader version with new columns.
        let topics: Vec<String> = self.parts.streams.keys().cloned().collect();
        for topic in &topics {
            self.ensure_table(topic).await?;
        }
        for (topic, id) in new_writers {
            self.refresh_reader(&topic).await?;
            if let Some(stream) = self.parts.streams.get_mut(&topic)
                && let Some(Ok(schema)) = writers.get(&id)
            {
                stream.known_writers.insert(id, schema.clone());
            }
        }
        self.publish_snapshot();

        let decode_started = Instant::now();
        // Decode every pending message into its stream's row buffer, with one prepared decoder per writer schema.
        let mut encoded: HashMap<String, Encoded> = HashMap::new();
        let mut ahead = vec![false; items.len()];
        for (topic, decoded) in pre.map(|p| p.topics).unwrap_or_default() {
            // Only rows decoded for the reader the table follows now.
            if let Some(stream) = self.parts.streams.get(&topic)
                && Arc::ptr_eq(&decoded.reader, &stream.reader)
            {
                for (i, _) in &decoded.rows {
                    ahead[*i] = true;
                }
                encoded.insert(
                    topic,
                    Encoded {
                        buf: decoded.buf,
                        rows: decoded.rows,
                    },
                );
            }
        }
        let mut poison: Vec<(usize, Poison)> = Vec::new();
        {
            let mut decoders: HashMap<(&str, u32), Result<RowDecoder<'_>, Poison>> = HashMap::new();
            for (i, item) in items.iter().enumerate() {
                if done[i] || ahead[i] {
                    continue;
                }
                let topic = item.message.topic();
                let Some(stream) = self.parts.streams.get(topic) else {
                    // Not a configured topic (cannot happen with subscribe); nothing to keep it for.
                    done[i] = true;
                    continue;
                };
                let payload = item.message.payload();
                if !encoded.contains_key(topic) {
                    encoded.insert(topic.to_owned(), Encoded::default());
                }
                let Some(Encoded { buf, rows }) = encoded.get_mut(topic) else {
                    continue;
                };
                let start = buf.len();
                let result = writer_id(payload).and_then(|id| {
                    let decoder =
                        decoders
                            .entry((topic, id))
                            .or_insert_with(|| match writers.get(&id) {
                                Some(Ok(w)) => RowDecoder::new(id, w, &stream.reader),
                                Some(Err(p)) => Err(p.clone()),
                                None => Err(Poison::new(
                                    ErrorClass::UnknownSchema,
                                    format!("schema id {id}"),
                                )),
                            });
                    match decoder {
                        Ok(d) => d.decode(payload.unwrap_or_default(), buf),
                        Err(p) => Err(p.clone()),
                    }
                });
                match result {
                    Ok(()) => rows.push((i, start..buf.len())),
                    Err(p) => poison.push((i, p)),
                }
            }
        }

        let decoded = decode_started.elapsed();
        // Insert, isolating rows ClickHouse refuses.
        let mut transient = None;
        for (topic, Encoded { buf, rows }) in &encoded {
            if rows.is_empty() {
                continue;
            }
            let Some(stream) = self.parts.streams.get_mut(topic) else {
                continue;
            };
            let refs: Vec<RowRef<'_>> = rows
                .iter()
                .map(|(i, r)| RowRef {
                    index: *i,
                    bytes: &buf[r.clone()],
                })
                .collect();
            let columns = stream.reader.plan.insert_columns();
            let report = self
                .parts
                .sink
                .insert_isolating(&stream.table, &columns, &refs)
                .await;
            for i in report.inserted {
                done[i] = true;
            }
            for (i, message) in report.rejected {
                poison.push((i, Poison::new(ErrorClass::Rejected, message)));
            }
            if let Some(e) = report.transient {
                // The table may have been dropped or altered under us: check it again before the next try.
                stream.table_ok = false;
                transient = Some(Error::ClickHouse(e));
            }
        }

        tracing::debug!(
            decode_ms = decoded.as_millis() as u64,
            insert_ms = (decode_started.elapsed() - decoded).as_millis() as u64,
            "batch written"
        );
        // Dead-letter the poison; its offsets count only once the DLQ acknowledged.
        let sends = poison.iter().map(|(i, p)| {
            let item = &items[*i];
            let dlq_topic = self
                .parts
                .streams
                .get(item.message.topic())
                .map(|s| s.dlq_topic.clone())
                .unwrap_or_default();
            let dlq = self.parts.dlq.clone();
            async move {
                let verdict = Verdict {
                    class: p.class,
                    message: &p.message,
                };
                (dlq.send(&dlq_topic, &item.message, &verdict).await, *i, p)
            }
        });
        let mut dlq_error = None;
        for (result, i, p) in join_all(sends).await {
            match result {
                Ok(()) => {
                    done[i] = true;
                    let m = &items[i].message;
                    self.parts.metrics.dead_lettered(
                        p.class.as_str(),
                        m.topic(),
                        m.partition(),
                        m.offset(),
                        &p.message,
                    );
                }
                Err(e) => dlq_error = Some(e),
            }
        }
        if let Some(e) = transient.or(dlq_error) {
            return Err(e);
        }
        Ok(())
    }

    /// Shares each ready stream's reader and reconciled writers with the read loop.
    fn publish_snapshot(&self) {
        let streams = self
            .parts
            .streams
            .iter()
            .filter(|(_, s)| s.table_ok)
            .map(|(topic, s)| {
                (
                    topic.clone(),
                    SnapshotStream {
                        reader: s.reader.clone(),
                        writers: s.known_writers.clone(),
                    },
                )
            })
            .collect();
        self.snapshot.publish(Snapshot { streams });
    }

    async fn ensure_table(&mut self, topic: &str) -> Result<(), Error> {
        let Some(stream) = self.parts.streams.get_mut(topic) else {
            return Ok(());
        };
        if stream.table_ok {
            return Ok(());
        }
        let widened = self
            .parts
            .sink
            .ensure_table(&stream.reader.plan, stream.spec())
            .await?;
        for column in &widened.added {
            self.parts
                .metrics
                .schema_changed("column_added", &format!("{}.{column}", stream.table));
        }
        stream.table_ok = true;
        Ok(())
    }

    /// Adopts the subject's latest version as the reader when it changed, adding its new columns first.
    async fn refresh_reader(&mut self, topic: &str) -> Result<(), Error> {
        let Some(stream) = self.parts.streams.get_mut(topic) else {
            return Ok(());
        };
        let Some(latest) = self.parts.registry.latest(&stream.subject).await? else {
            return Ok(());
        };
        if stream.reader.id == Some(latest.id) {
            return Ok(());
        }
        let candidate = match Reader::new(Some(latest.id), Some(latest.version), latest.schema) {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(subject = %stream.subject, version = latest.version, error = %e, "new schema version has no table shape; keeping the old reader");
                return Ok(());
            }
        };
        match self
            .parts
            .sink
            .add_missing_columns(&stream.table, &candidate.plan)
            .await
        {
            Ok(widened) => {
                for column in &widened.added {
                    self.parts
                        .metrics
                        .schema_changed("column_added", &format!("{}.{column}", stream.table));
                }
                self.parts.metrics.schema_changed(
                    "reader",
                    &format!(
                        "{} now reads with id {} (version {})",
                        stream.subject, latest.id, latest.version
                    ),
                );
                stream.reader = Arc::new(candidate);
                stream.known_writers.clear();
                Ok(())
            }
            Err(Error::Mapping(m)) => {
                tracing::error!(subject = %stream.subject, version = latest.version, error = %m, "new schema version conflicts with the table; keeping the old reader");
                Ok(())
            }
            Err(e) => Err(e),
        }
    }
}

/// The pipeline between batches, or a flush of it running while the next batch is read.
enum Flusher {
    Idle(Box<Pipeline>),
    Busy(Pin<Box<dyn Future<Output = Pipeline> + Send>>),
}

impl Flusher {
    /// The pipeline once no flush is running.
    async fn idle(self) -> Pipeline {
        match self {
            Flusher::Idle(p) => *p,
            Flusher::Busy(f) => f.await,
        }
    }

    /// Whether no flush is running.
    fn is_idle(&self) -> bool {
        matches!(self, Flusher::Idle(_))
    }

    /// Completes with the pipeline when the running flush ends; never while idle.
    async fn finished(&mut self) -> Pipeline {
        match self {
            Flusher::Idle(_) => std::future::pending().await,
            Flusher::Busy(f) => f.await,
        }
    }
}

/// Takes a message read from Kafka into the offset book; `None` if its partition is no longer ours.
fn receive(
    context: &SourceContext,
    metrics: &Metrics,
    m: &BorrowedMessage<'_>,
) -> Option<Received> {
    metrics.consumed(m.topic());
    let receipt = context
        .offsets()
        .received(m.topic(), m.partition(), m.offset());
    match receipt {
        Some(receipt) => Some(Received {
            message: m.detach(),
            receipt,
        }),
        None => {
            tracing::warn!(
                topic = m.topic(),
                partition = m.partition(),
                "message from an unassigned partition dropped"
            );
            None
        }
    }
}

/// Wall-clock milliseconds since the epoch, as Kafka timestamps count them.
fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

async fn sleep_until_opt(deadline: Option<std::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(Instant::from_std(d)).await,
        None => std::future::pending().await,
    }
}
