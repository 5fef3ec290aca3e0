//! The first steps of an attempt: the writer schema of every pending message, then each stream made ready for
//! them (its table exists with the reader's columns, and a new writer may mean a newer reader to adopt).

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use apache_avro::Schema;
use rdkafka::message::Message;

use super::Flush;
use super::ports::{DeadLetterSink, RowSink, SchemaSource};
use crate::decode::{Reader, writer_id};
use crate::error::Error;
use crate::registry::RegistryError;
use crate::verdict::{Failure, Verdict, verdict};

/// The writer schemas of an attempt's pending messages, by id, and which topics see an id for the first time.
#[derive(Debug, Default)]
pub(super) struct Writers {
    by_id: HashMap<u32, Result<Arc<Schema>, RegistryError>>,
    new: HashSet<(String, u32)>,
    /// Ids the registry does not know yet, still within their wait: their messages stay pending.
    waiting: HashSet<u32>,
}

/// Writer schema ids the registry answered 404 for, and since when: such an id is asked again for a bounded time
/// before its messages are dead-lettered, because a registry replica may serve it a moment later. Only the
/// partitions of its messages wait (they are held like any pending message).
#[derive(Debug, Default)]
pub struct UnknownIds {
    wait: Duration,
    first_seen: HashMap<u32, Instant>,
}

/// Ids remembered at most; beyond it the ones whose wait is long over are forgotten (garbage with random ids).
const UNKNOWN_IDS_KEPT: usize = 10_000;

impl UnknownIds {
    /// Waits up to `wait` for each unknown id (zero: dead-letter at the first 404).
    pub fn new(wait: Duration) -> Self {
        Self {
            wait,
            first_seen: HashMap::new(),
        }
    }

    /// Whether `id`, just answered 404, is still within its wait.
    fn still_waiting(&mut self, id: u32) -> bool {
        if self.wait.is_zero() {
            return false;
        }
        let now = Instant::now();
        if self.first_seen.len() >= UNKNOWN_IDS_KEPT {
            let wait = self.wait;
            self.first_seen
                .retain(|_, t| now.duration_since(*t) < wait * 2);
        }
        let first = *self.first_seen.entry(id).or_insert_with(|| {
            tracing::warn!(
                id,
                wait_ms = self.wait.as_millis() as u64,
                "the registry does not know this writer schema id: asking again before dead-lettering its messages"
            );
            now
        });
        now.duration_since(first) < self.wait
    }

    /// `id` resolved: its wait ends.
    fn found(&mut self, id: u32) {
        if !self.first_seen.is_empty() {
            self.first_seen.remove(&id);
        }
    }
}

impl Writers {
    /// An id whose messages wait for the registry to know it, if any.
    pub(super) fn waiting_for(&self) -> Option<u32> {
        self.waiting.iter().next().copied()
    }

    /// The schema under `id`, or why there is none; `None` if no pending message named it.
    pub(super) fn get(&self, id: u32) -> Option<&Result<Arc<Schema>, RegistryError>> {
        self.by_id.get(&id)
    }
}

/// Streams that cannot take rows in this attempt, by topic, with the failure that stopped each.
pub(super) type Blocked = HashMap<String, Failure>;

/// Looks up the writer schema of every pending message. A lookup that [`verdict`] says to retry (the registry
/// unreachable) fails the attempt; an id the registry does not know is left out (its messages stay pending) while
/// `unknown` still waits for it, then kept as not found for the decode step to dead-letter.
pub(super) async fn resolve<R: SchemaSource>(
    registry: &R,
    entries: &[super::Entry],
    unknown: &mut UnknownIds,
) -> Result<Writers, Failure> {
    let mut writers = Writers::default();
    // A batch is long runs of one topic and writer: looking each message up again (a topic copy and two hashes
    // per message) was 2% of the consumer's CPU while draining.
    let mut last: Option<(&str, u32)> = None;
    for e in entries.iter().filter(|e| e.is_pending()) {
        // Unframed bytes are the decode step's to judge.
        let Ok(id) = writer_id(e.received.message.payload()) else {
            continue;
        };
        if last == Some((e.topic(), id)) {
            continue;
        }
        last = Some((e.topic(), id));
        if writers.waiting.contains(&id) {
            continue;
        }
        if let Entry::Vacant(slot) = writers.by_id.entry(id) {
            let schema = match registry.schema_by_id(id).await {
                Ok(s) => {
                    unknown.found(id);
                    Ok(s)
                }
                Err(RegistryError::NotFound(_)) if unknown.still_waiting(id) => {
                    writers.waiting.insert(id);
                    continue;
                }
                Err(err) => match verdict(&Failure::Registry(err.clone())) {
                    Verdict::Retry => return Err(Failure::Registry(err)),
                    Verdict::DeadLetter(_) => Err(err),
                },
            };
            slot.insert(schema);
        }
        if writers.by_id.get(&id).is_some_and(Result::is_ok) {
            writers.new.insert((e.topic().to_owned(), id));
        }
    }
    Ok(writers)
}

impl<S: RowSink, D: DeadLetterSink, R: SchemaSource> Flush<S, D, R> {
    /// Makes every stream ready for this attempt's writers: tables exist, and a topic seeing a writer id for the
    /// first time adopts the subject's latest version as its reader when that changed. Returns the streams that
    /// could not be made ready, by topic, with why: their messages wait, and every other stream goes on.
    pub(super) async fn prepare_streams(&mut self, writers: &Writers) -> Blocked {
        let mut blocked = Blocked::default();
        let topics: Vec<String> = self.streams.keys().cloned().collect();
        for topic in topics {
            if let Err(e) = self.ensure_table(&topic).await {
                blocked.insert(topic, Failure::Table(e));
            }
        }
        for (topic, id) in &writers.new {
            let Some(stream) = self.streams.get(topic) else {
                continue;
            };
            if stream.known_writers.contains_key(id) || blocked.contains_key(topic) {
                continue;
            }
            if let Err(f) = self.refresh_reader(topic).await {
                blocked.insert(topic.clone(), f);
                continue;
            }
            if let Some(stream) = self.streams.get_mut(topic)
                && let Some(Ok(schema)) = writers.get(*id)
            {
                stream.known_writers.insert(*id, schema.clone());
            }
        }
        blocked
    }

    async fn ensure_table(&mut self, topic: &str) -> Result<(), Error> {
        let Some(stream) = self.streams.get_mut(topic) else {
            return Ok(());
        };
        if stream.table_ok {
            return Ok(());
        }
        let widened = self
            .sink
            .ensure_table(&stream.reader.plan, stream.spec())
            .await?;
        for column in &widened.added {
            self.metrics
                .schema_changed("column_added", &format!("{}.{column}", stream.table));
        }
        stream.adopt_plan(widened.plan);
        stream.table_ok = true;
        Ok(())
    }

    /// Adopts the subject's latest version as the reader when it changed, adding its new columns first. A version
    /// with no table shape, or one that conflicts with the table, is logged and the old reader kept: rows still
    /// resolve to it.
    async fn refresh_reader(&mut self, topic: &str) -> Result<(), Failure> {
        let Some(stream) = self.streams.get_mut(topic) else {
            return Ok(());
        };
        let Some(latest) = self.registry.latest(&stream.subject).await? else {
            return Ok(());
        };
        if stream.reader.id == Some(latest.id) {
            return Ok(());
        }
        let shape = stream.shape(self.sink.capabilities());
        let candidate = match Reader::for_table(
            Some(latest.id),
            Some(latest.version),
            latest.schema,
            shape,
        ) {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(subject = %stream.subject, version = latest.version, error = %e, "new schema version has no table shape; keeping the old reader");
                return Ok(());
            }
        };
        match self
            .sink
            .add_missing_columns(&stream.table, &candidate.plan)
            .await
        {
            Ok(widened) => {
                for column in &widened.added {
                    self.metrics
                        .schema_changed("column_added", &format!("{}.{column}", stream.table));
                }
                self.metrics.schema_changed(
                    "reader",
                    &format!(
                        "{} now reads with id {} (version {})",
                        stream.subject, latest.id, latest.version
                    ),
                );
                stream.reader = Arc::new(candidate.with_plan(widened.plan));
                stream.known_writers.clear();
                Ok(())
            }
            Err(Error::Mapping(m)) => {
                tracing::error!(subject = %stream.subject, version = latest.version, error = %m, "new schema version conflicts with the table; keeping the old reader");
                Ok(())
            }
            Err(e) => Err(Failure::Table(e)),
        }
    }
}
