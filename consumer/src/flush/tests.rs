//! The flush's decisions against in-memory fakes of ClickHouse, the registry and the DLQ.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use apache_avro::Schema;
use apache_avro::types::Value;
use rdkafka::Timestamp;
use rdkafka::message::{Message, OwnedMessage};
use sluice_schemas::clickhouse::{Capabilities, RowPlan, TableSpec};
use sluice_schemas::wire;

use super::ports::{DeadLetterSink, RowSink, SchemaSource};
use super::*;
use crate::config::StreamConfig;
use crate::dlq::ErrorClass;
use crate::error::Error;
use crate::offsets::{Position, TopicPartition};
use crate::registry::{Latest, RegistryError};
use crate::sink::clickhouse::ddl::Widened;
use crate::sink::clickhouse::insert::RowRef;

const SCHEMA: &str = r#"{"type":"record","name":"E","fields":[
    {"name":"id","type":"string"},{"name":"n","type":"long"}]}"#;
const WRITER_ID: u32 = 1;

/// ClickHouse: refuses (code 53) any INSERT holding a row whose id is "bad", fails the next `transient` INSERTs
/// of `flaky_table` with a network error, and keeps every row it accepted. With `tokens`, it is a server that
/// has insert deduplication: a block whose token it has seen is dropped, and `land_then_time_out` INSERTs write
/// their rows but answer with a timeout (the reply lost on the way back).
#[derive(Default)]
struct FakeClickHouse {
    transient: AtomicU32,
    flaky_table: Mutex<Option<String>>,
    inserts: AtomicU32,
    rows: Mutex<Vec<(String, Vec<u8>)>>,
    tokens: bool,
    land_then_time_out: AtomicU32,
    /// Tokens of the blocks written, which a repeat of is dropped.
    seen_tokens: Mutex<Vec<String>>,
    /// Every token an INSERT carried, written or refused.
    sent_tokens: Mutex<Vec<String>>,
    /// A cluster: blocks are routed by partition; each INSERT's partition argument and row count are kept.
    routes: bool,
    routed: Mutex<Vec<(i32, usize)>>,
    /// When set, an INSERT of more rows than this is refused the way a server refuses a block that spans more
    /// partitions than `max_partitions_per_insert_block` (every row here is taken to be a month of its own).
    max_block_rows: Option<usize>,
    /// A table that cannot be created or checked (dropped and detached under the consumer, say).
    broken_table: Mutex<Option<String>>,
}

fn is_bad(row: &[u8]) -> bool {
    row.starts_with(&[3, b'b', b'a', b'd'])
}

/// A row the fake server always refuses with an error it calls transient (as a row too large for the memory
/// limit would be), whatever block it is in.
fn is_heavy(row: &[u8]) -> bool {
    row.starts_with(&[5, b'h', b'e', b'a', b'v', b'y'])
}

impl RowSink for Shared<FakeClickHouse> {
    async fn insert(
        &self,
        table: &str,
        _columns: &str,
        rows: &[RowRef<'_>],
        token: Option<&str>,
        partition: i32,
    ) -> Result<(), clickhouse::error::Error> {
        self.inserts.fetch_add(1, Ordering::SeqCst);
        if self.routes {
            self.routed
                .lock()
                .expect("lock")
                .push((partition, rows.len()));
        }
        assert_eq!(
            token.is_some(),
            self.tokens,
            "tokens only where the server has them"
        );
        if let Some(token) = token {
            self.sent_tokens
                .lock()
                .expect("lock")
                .push(token.to_owned());
        }
        // A server remembers the token of a block it wrote, never of one it refused.
        if let Some(token) = token
            && self
                .seen_tokens
                .lock()
                .expect("lock")
                .iter()
                .any(|t| t == token)
        {
            return Ok(());
        }
        if self.max_block_rows.is_some_and(|max| rows.len() > max) {
            return Err(clickhouse::error::Error::BadResponse(
                "Code: 252. DB::Exception: Too many partitions for single INSERT block (more than 100). \
                 (TOO_MANY_PARTS) (version 26.9.2.1)"
                    .into(),
            ));
        }
        let flaky = self
            .flaky_table
            .lock()
            .expect("lock")
            .as_deref()
            .is_none_or(|t| t == table);
        if flaky
            && self
                .transient
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
        {
            return Err(clickhouse::error::Error::Network("connection reset".into()));
        }
        if rows.iter().any(|r| is_heavy(r.bytes)) {
            return Err(clickhouse::error::Error::BadResponse(
                "Code: 241. DB::Exception: Memory limit (for query) exceeded. (MEMORY_LIMIT_EXCEEDED) \
                 (version 26.9.2.1)"
                    .into(),
            ));
        }
        if rows.iter().any(|r| is_bad(r.bytes)) {
            return Err(clickhouse::error::Error::BadResponse(
                "Code: 53. DB::Exception: Type mismatch".into(),
            ));
        }
        let mut landed = self.rows.lock().expect("lock");
        landed.extend(rows.iter().map(|r| (table.to_owned(), r.bytes.to_vec())));
        if let Some(token) = token {
            self.seen_tokens
                .lock()
                .expect("lock")
                .push(token.to_owned());
        }
        if self
            .land_then_time_out
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(clickhouse::error::Error::TimedOut);
        }
        Ok(())
    }

    fn routes_by_partition(&self) -> bool {
        self.routes
    }

    fn capabilities(&self) -> Capabilities {
        if self.tokens {
            Capabilities::CURRENT
        } else {
            Capabilities::LEGACY
        }
    }

    async fn ensure_table(&self, plan: &RowPlan, spec: TableSpec<'_>) -> Result<Widened, Error> {
        if self.broken_table.lock().expect("lock").as_deref() == Some(spec.table) {
            return Err(Error::ClickHouse(clickhouse::error::Error::BadResponse(
                "Code: 60. DB::Exception: Table sluice.a does not exist. (UNKNOWN_TABLE)".into(),
            )));
        }
        Ok(Widened {
            added: Vec::new(),
            plan: plan.clone(),
        })
    }

    async fn add_missing_columns(&self, _table: &str, plan: &RowPlan) -> Result<Widened, Error> {
        Ok(Widened {
            added: Vec::new(),
            plan: plan.clone(),
        })
    }
}

/// The registry: knows `WRITER_ID` (and `LATE_ID` once `late_known`), and can be unreachable.
struct FakeRegistry {
    schema: Arc<Schema>,
    down: AtomicBool,
    late_known: AtomicBool,
}

/// An id a registry replica learns late.
const LATE_ID: u32 = 2;

impl SchemaSource for Shared<FakeRegistry> {
    async fn schema_by_id(&self, id: u32) -> Result<Arc<Schema>, RegistryError> {
        if self.down.load(Ordering::SeqCst) {
            return Err(RegistryError::Unavailable("connection refused".into()));
        }
        if id == WRITER_ID || (id == LATE_ID && self.late_known.load(Ordering::SeqCst)) {
            Ok(self.schema.clone())
        } else {
            Err(RegistryError::NotFound(format!("schema id {id}")))
        }
    }

    async fn latest(&self, _subject: &str) -> Result<Option<Latest>, RegistryError> {
        if self.down.load(Ordering::SeqCst) {
            return Err(RegistryError::Unavailable("connection refused".into()));
        }
        Ok(Some(Latest {
            id: WRITER_ID,
            version: 1,
            schema: self.schema.clone(),
        }))
    }
}

/// The DLQ: keeps (topic, source offset, class) of each acknowledged letter; the next `failing` sends fail.
#[derive(Default)]
struct FakeDlq {
    failing: AtomicU32,
    letters: Mutex<Vec<(String, i64, ErrorClass)>>,
}

impl DeadLetterSink for Shared<FakeDlq> {
    async fn send(
        &self,
        dlq_topic: &str,
        msg: &OwnedMessage,
        letter: &Letter,
    ) -> Result<(), Error> {
        if self
            .failing
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(Error::Kafka(rdkafka::error::KafkaError::MessageProduction(
                rdkafka::types::RDKafkaErrorCode::MessageTimedOut,
            )));
        }
        self.letters
            .lock()
            .expect("lock")
            .push((dlq_topic.to_owned(), msg.offset(), letter.class));
        Ok(())
    }
}

type TestFlush = Flush<Shared<FakeClickHouse>, Shared<FakeDlq>, Shared<FakeRegistry>>;

/// A fake that the flush owns while the test keeps a handle on its state.
#[derive(Default)]
struct Shared<T>(Arc<T>);

impl<T> Clone for Shared<T> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

impl<T> std::ops::Deref for Shared<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

/// A flush over streams `topics` (each into table `sluice.<topic>`), its fakes, and an offset book with
/// partitions 0 and 1 of each topic assigned.
struct Harness {
    flush: TestFlush,
    clickhouse: Shared<FakeClickHouse>,
    dlq: Shared<FakeDlq>,
    registry: Shared<FakeRegistry>,
    offsets: Offsets,
    schema: Arc<Schema>,
}

impl Harness {
    fn new(topics: &[&str]) -> Self {
        Self::on(topics, FakeClickHouse::default())
    }

    /// A harness on a server with insert deduplication tokens.
    fn with_tokens(topics: &[&str]) -> Self {
        Self::on(
            topics,
            FakeClickHouse {
                tokens: true,
                ..FakeClickHouse::default()
            },
        )
    }

    fn on(topics: &[&str], clickhouse: FakeClickHouse) -> Self {
        let schema = Arc::new(Schema::parse_str(SCHEMA).expect("parses"));
        let clickhouse = Shared(Arc::new(clickhouse));
        let dlq = Shared::<FakeDlq>::default();
        let registry = Shared(Arc::new(FakeRegistry {
            schema: schema.clone(),
            down: AtomicBool::new(false),
            late_known: AtomicBool::new(false),
        }));
        let streams = topics
            .iter()
            .map(|t| {
                let reader = Reader::new(Some(WRITER_ID), Some(1), schema.clone()).expect("maps");
                let cfg = StreamConfig::new(t, t);
                (t.to_string(), Stream::new(&cfg, "sluice", reader))
            })
            .collect();
        let flush = Flush::new(
            clickhouse.clone(),
            dlq.clone(),
            registry.clone(),
            streams,
            Metrics::detached(),
        );
        let mut offsets = Offsets::default();
        offsets.assign(
            topics
                .iter()
                .flat_map(|t| [TopicPartition::new(*t, 0), TopicPartition::new(*t, 1)]),
        );
        Self {
            flush,
            clickhouse,
            dlq,
            registry,
            offsets,
            schema,
        }
    }

    fn framed(&self, id: &str, n: i64) -> Vec<u8> {
        let record = Value::Record(vec![
            ("id".into(), Value::String(id.into())),
            ("n".into(), Value::Long(n)),
        ]);
        let body = apache_avro::writer::datum::GenericDatumWriter::builder(&self.schema)
            .build()
            .expect("writer")
            .write_value_to_vec(record)
            .expect("encodes");
        wire::frame(WRITER_ID, &body)
    }

    fn entry(&mut self, topic: &str, partition: i32, offset: i64, payload: Vec<u8>) -> Entry {
        let receipt = self
            .offsets
            .received(topic, partition, offset)
            .expect("assigned");
        let message = OwnedMessage::new(
            Some(payload),
            None,
            topic.into(),
            Timestamp::NotAvailable,
            partition,
            offset,
            None,
        );
        Entry::new(Received { message, receipt })
    }

    /// Good events `e<offset>` at `offsets` of `topic` partition 0.
    fn good(&mut self, topic: &str, offsets: std::ops::Range<i64>) -> Vec<Entry> {
        offsets
            .map(|o| {
                let payload = self.framed(&format!("e{o}"), o);
                self.entry(topic, 0, o, payload)
            })
            .collect()
    }

    fn landed(&self) -> usize {
        self.clickhouse.rows.lock().expect("lock").len()
    }

    fn letters(&self) -> Vec<(String, i64, ErrorClass)> {
        self.dlq.letters.lock().expect("lock").clone()
    }
}

fn at(topic: &str, partition: i32, next_offset: i64) -> Position {
    Position {
        partition: TopicPartition::new(topic, partition),
        next_offset,
    }
}

#[tokio::test]
async fn a_transient_clickhouse_error_retries_and_never_dead_letters() {
    let mut h = Harness::new(&["t"]);
    h.clickhouse.transient.store(2, Ordering::SeqCst);
    let mut entries = h.good("t", 0..10);
    for _ in 0..2 {
        let failure = h
            .flush
            .attempt(&mut entries, None)
            .await
            .expect_err("ClickHouse is down");
        assert!(matches!(failure, Failure::Insert(_)), "{failure}");
        assert_eq!(settle(&mut entries, &mut h.offsets), 0);
        assert!(h.offsets.committable().is_empty());
    }
    h.flush
        .attempt(&mut entries, None)
        .await
        .expect("recovered");
    assert_eq!(settle(&mut entries, &mut h.offsets), 10);
    assert!(entries.is_empty());
    assert_eq!(h.landed(), 10);
    assert!(h.letters().is_empty(), "nothing dead-lettered");
    assert_eq!(h.offsets.committable(), vec![at("t", 0, 10)]);
}

#[tokio::test]
async fn a_poison_row_is_bisected_out_and_the_good_rows_land() {
    let mut h = Harness::new(&["t"]);
    let mut entries = h.good("t", 0..5);
    let bad = h.framed("bad", 5);
    entries.push(h.entry("t", 0, 5, bad));
    entries.extend(h.good("t", 6..8));
    h.flush.attempt(&mut entries, None).await.expect("done");
    let outcomes: Vec<Option<Outcome>> = entries.iter().map(|e| e.outcome).collect();
    let mut want = vec![Some(Outcome::Inserted); 8];
    want[5] = Some(Outcome::DeadLettered);
    assert_eq!(outcomes, want);
    assert_eq!(h.letters(), vec![("t.dlq".into(), 5, ErrorClass::Rejected)]);
    let landed: HashSet<Vec<u8>> = h
        .clickhouse
        .rows
        .lock()
        .expect("lock")
        .iter()
        .map(|(_, r)| r.clone())
        .collect();
    assert_eq!(landed.len(), 7);
    assert!(!landed.iter().any(|r| is_bad(r)));
    // 8 rows, one bad: the whole, then halves down to the single bad row (1 + 2 + 2 + 2).
    assert_eq!(h.clickhouse.inserts.load(Ordering::SeqCst), 7);
    settle(&mut entries, &mut h.offsets);
    assert_eq!(h.offsets.committable(), vec![at("t", 0, 8)]);
}

#[tokio::test]
async fn a_block_over_the_partition_limit_is_split_and_a_rebuilt_batch_splits_it_the_same() {
    let mut h = Harness::on(
        &["t"],
        FakeClickHouse {
            tokens: true,
            max_block_rows: Some(3),
            ..FakeClickHouse::default()
        },
    );
    let mut entries = h.good("t", 0..10);
    h.flush.attempt(&mut entries, None).await.expect("done");
    assert!(entries.iter().all(|e| e.outcome == Some(Outcome::Inserted)));
    assert!(h.letters().is_empty(), "a block's shape is no row's fault");
    assert_eq!(h.landed(), 10);
    let tokens = h.clickhouse.seen_tokens.lock().expect("lock").clone();
    // 10 refused → 5 + 5, each refused → 2 + 3 and 2 + 3, which land.
    assert_eq!(
        offsets_named(&tokens),
        ["t:0:0-1", "t:0:2-4", "t:0:5-6", "t:0:7-9"],
        "{tokens:?}"
    );
    assert_eq!(h.clickhouse.inserts.load(Ordering::SeqCst), 7);
    // The same messages again (a batch rebuilt after a crash): the same blocks, every one of them dropped.
    let mut again = h.good("t", 0..10);
    h.flush.attempt(&mut again, None).await.expect("done");
    assert_eq!(h.landed(), 10, "nothing written twice");
    assert_eq!(*h.clickhouse.seen_tokens.lock().expect("lock"), tokens);
}

#[tokio::test]
async fn undecodable_bytes_and_unknown_schema_ids_are_dead_lettered_with_their_class() {
    let mut h = Harness::new(&["t"]);
    let mut entries = h.good("t", 0..2);
    entries.push(h.entry("t", 0, 2, b"not avro".to_vec()));
    let mut unknown = h.framed("x", 3);
    unknown[1..5].copy_from_slice(&99u32.to_be_bytes());
    entries.push(h.entry("t", 0, 3, unknown));
    entries.push(h.entry("t", 0, 4, wire::frame(WRITER_ID, &[0xff, 0xff])));
    entries.extend(h.good("t", 5..6));
    h.flush.attempt(&mut entries, None).await.expect("done");
    let mut letters = h.letters();
    letters.sort_by_key(|l| l.1);
    assert_eq!(
        letters,
        vec![
            ("t.dlq".into(), 2, ErrorClass::Undecodable),
            ("t.dlq".into(), 3, ErrorClass::UnknownSchema),
            ("t.dlq".into(), 4, ErrorClass::Undecodable),
        ]
    );
    assert_eq!(h.landed(), 3);
    settle(&mut entries, &mut h.offsets);
    assert_eq!(h.offsets.committable(), vec![at("t", 0, 6)]);
}

#[tokio::test]
async fn an_unreachable_registry_is_waited_out_not_dead_lettered() {
    let mut h = Harness::new(&["t"]);
    h.registry.down.store(true, Ordering::SeqCst);
    let mut entries = h.good("t", 0..3);
    let failure = h
        .flush
        .attempt(&mut entries, None)
        .await
        .expect_err("registry down");
    assert!(matches!(failure, Failure::Registry(_)), "{failure}");
    assert!(entries.iter().all(Entry::is_pending));
    assert!(h.letters().is_empty());
    assert_eq!(h.landed(), 0);
    h.registry.down.store(false, Ordering::SeqCst);
    h.flush.attempt(&mut entries, None).await.expect("back");
    assert_eq!(h.landed(), 3);
    assert!(h.letters().is_empty());
}

#[tokio::test]
async fn a_revoked_partitions_rows_are_dropped_not_inserted() {
    let mut h = Harness::new(&["t"]);
    let mut entries = h.good("t", 0..3);
    for o in 0..3 {
        let payload = h.framed(&format!("p1-{o}"), o);
        entries.push(h.entry("t", 1, o, payload));
    }
    h.offsets.revoke([TopicPartition::new("t", 1)]);
    assert_eq!(mark_revoked(&mut entries, &h.offsets), 3);
    h.flush.attempt(&mut entries, None).await.expect("done");
    assert_eq!(h.landed(), 3, "only partition 0's rows");
    assert!(
        entries[3..]
            .iter()
            .all(|e| e.outcome == Some(Outcome::Revoked))
    );
    settle(&mut entries, &mut h.offsets);
    assert_eq!(h.offsets.committable(), vec![at("t", 0, 3)]);
}

#[tokio::test]
async fn rows_decoded_ahead_of_a_revoke_are_not_inserted() {
    let mut h = Harness::new(&["t"]);
    let mut entries = h.good("t", 0..2);
    let payload = h.framed("p1", 0);
    entries.push(h.entry("t", 1, 0, payload));
    // Decoded ahead with what the flush published, before partition 1 left.
    h.flush.publish_snapshot();
    let snapshot = h.flush.snapshot().current();
    let mut ahead = Decoded::default();
    let messages = entries
        .iter()
        .enumerate()
        .map(|(i, e)| (i, &e.received.message));
    assert!(decode_into(snapshot.as_ref(), messages, &mut ahead).is_empty());
    h.offsets.revoke([TopicPartition::new("t", 1)]);
    mark_revoked(&mut entries, &h.offsets);
    h.flush
        .attempt(&mut entries, Some(ahead))
        .await
        .expect("done");
    assert_eq!(h.landed(), 2);
}

#[tokio::test]
async fn a_commit_never_passes_a_message_still_pending() {
    let mut h = Harness::new(&["t"]);
    let mut entries = h.good("t", 0..2);
    let bad = h.framed("bad", 2);
    entries.push(h.entry("t", 0, 2, bad));
    entries.extend(h.good("t", 3..5));
    // The poison row's dead letter is not acknowledged the first time.
    h.dlq.failing.store(1, Ordering::SeqCst);
    let failure = h
        .flush
        .attempt(&mut entries, None)
        .await
        .expect_err("DLQ down");
    assert!(matches!(failure, Failure::DeadLetter(_)), "{failure}");
    assert_eq!(settle(&mut entries, &mut h.offsets), 4);
    assert_eq!(
        h.offsets.committable(),
        vec![at("t", 0, 2)],
        "offsets 3 and 4 are in ClickHouse, but 2 is not done"
    );
    h.flush.attempt(&mut entries, None).await.expect("done");
    settle(&mut entries, &mut h.offsets);
    assert_eq!(h.offsets.committable(), vec![at("t", 0, 5)]);
    assert_eq!(h.letters(), vec![("t.dlq".into(), 2, ErrorClass::Rejected)]);
    assert_eq!(h.landed(), 4, "the good rows were inserted once");
}

#[tokio::test]
async fn one_streams_outage_does_not_hold_back_another() {
    let mut h = Harness::new(&["a", "b"]);
    *h.clickhouse.flaky_table.lock().expect("lock") = Some("sluice.b".into());
    h.clickhouse.transient.store(1, Ordering::SeqCst);
    let mut entries = h.good("a", 0..3);
    entries.extend(h.good("b", 0..3));
    h.flush
        .attempt(&mut entries, None)
        .await
        .expect_err("b's table is down");
    settle(&mut entries, &mut h.offsets);
    assert_eq!(h.offsets.committable(), vec![at("a", 0, 3)]);
    assert_eq!(entries.len(), 3, "b's messages are still pending");
    h.flush.attempt(&mut entries, None).await.expect("done");
    settle(&mut entries, &mut h.offsets);
    assert_eq!(h.offsets.committable(), vec![at("a", 0, 3), at("b", 0, 3)]);
}

#[tokio::test]
async fn a_stream_whose_table_cannot_be_made_ready_waits_alone() {
    let mut h = Harness::new(&["a", "b"]);
    *h.clickhouse.broken_table.lock().expect("lock") = Some("sluice.a".into());
    let mut entries = h.good("a", 0..3);
    entries.extend(h.good("b", 0..3));
    let failure = h
        .flush
        .attempt(&mut entries, None)
        .await
        .expect_err("a's table is broken");
    assert!(matches!(failure, Failure::Table(_)), "{failure}");
    settle(&mut entries, &mut h.offsets);
    assert_eq!(h.offsets.committable(), vec![at("b", 0, 3)]);
    assert_eq!(entries.len(), 3, "a's messages are still pending");
    assert!(h.letters().is_empty(), "an outage dead-letters nothing");
    *h.clickhouse.broken_table.lock().expect("lock") = None;
    h.flush.attempt(&mut entries, None).await.expect("repaired");
    settle(&mut entries, &mut h.offsets);
    assert_eq!(h.offsets.committable(), vec![at("a", 0, 3), at("b", 0, 3)]);
    assert_eq!(h.landed(), 6);
}

#[tokio::test]
async fn an_id_the_registry_learns_late_waits_then_lands_and_one_it_never_learns_is_dead_lettered()
{
    let mut h = Harness::new(&["t"]);
    h.flush
        .wait_for_unknown_ids(std::time::Duration::from_millis(300));
    let mut entries = h.good("t", 0..2);
    let mut late = h.framed("late", 2);
    late[1..5].copy_from_slice(&LATE_ID.to_be_bytes());
    entries.push(h.entry("t", 0, 2, late.clone()));
    entries.extend(h.good("t", 3..5));
    let failure = h
        .flush
        .attempt(&mut entries, None)
        .await
        .expect_err("one id unknown yet");
    assert!(matches!(failure, Failure::Registry(_)), "{failure}");
    settle(&mut entries, &mut h.offsets);
    assert_eq!(entries.len(), 1, "only the unknown id's message waits");
    assert_eq!(h.landed(), 4);
    assert!(h.letters().is_empty(), "not dead-lettered within the wait");
    assert_eq!(h.offsets.committable(), vec![at("t", 0, 2)]);
    h.registry.late_known.store(true, Ordering::SeqCst);
    h.flush
        .attempt(&mut entries, None)
        .await
        .expect("the id is known now");
    settle(&mut entries, &mut h.offsets);
    assert_eq!(h.landed(), 5);
    assert!(h.letters().is_empty());
    assert_eq!(h.offsets.committable(), vec![at("t", 0, 5)]);

    // An id never registered is dead-lettered once its wait is over.
    h.registry.late_known.store(false, Ordering::SeqCst);
    let mut entries = vec![h.entry("t", 0, 5, late)];
    h.flush
        .attempt(&mut entries, None)
        .await
        .expect_err("waiting");
    assert!(h.letters().is_empty());
    tokio::time::sleep(std::time::Duration::from_millis(350)).await;
    h.flush
        .attempt(&mut entries, None)
        .await
        .expect("dead-lettered");
    assert_eq!(
        h.letters(),
        vec![("t.dlq".into(), 5, ErrorClass::UnknownSchema)]
    );
}

#[test]
fn settling_a_revoked_message_moves_nothing() {
    let mut o = Offsets::default();
    o.assign([TopicPartition::new("t", 0)]);
    let r = o.received("t", 0, 0).expect("assigned");
    o.settle(r, Outcome::Revoked);
    assert!(o.committable().is_empty());
}

#[tokio::test]
async fn a_server_with_tokens_gets_one_block_per_partition_named_by_its_offsets() {
    let mut h = Harness::with_tokens(&["t"]);
    let mut entries = h.good("t", 0..3);
    for o in 10..12 {
        let payload = h.framed(&format!("p1-{o}"), o);
        entries.push(h.entry("t", 1, o, payload));
    }
    h.flush.attempt(&mut entries, None).await.expect("done");
    assert_eq!(
        offsets_named(&h.clickhouse.seen_tokens.lock().expect("lock")),
        ["t:0:0-2", "t:1:10-11"]
    );
    assert_eq!(h.landed(), 5);
}

#[tokio::test]
async fn an_insert_that_landed_but_timed_out_is_dropped_when_retried() {
    let mut h = Harness::with_tokens(&["t"]);
    h.clickhouse.land_then_time_out.store(1, Ordering::SeqCst);
    let mut entries = h.good("t", 0..10);
    let failure = h
        .flush
        .attempt(&mut entries, None)
        .await
        .expect_err("the reply was lost");
    assert!(matches!(failure, Failure::Insert(_)), "{failure}");
    assert_eq!(
        settle(&mut entries, &mut h.offsets),
        0,
        "not known to have landed"
    );
    h.flush.attempt(&mut entries, None).await.expect("retried");
    assert_eq!(h.landed(), 10, "the retry's block had the same token");
    assert!(h.letters().is_empty());
}

#[tokio::test]
async fn a_batch_rebuilt_after_a_crash_gets_the_same_tokens() {
    let tokens_of_a_run = || async {
        let mut h = Harness::with_tokens(&["t"]);
        let mut entries = h.good("t", 5..9);
        let payload = h.framed("p1", 3);
        entries.push(h.entry("t", 1, 3, payload));
        // Read in another order: the partition's rows are still sorted by offset.
        entries.reverse();
        h.flush.attempt(&mut entries, None).await.expect("done");
        h.clickhouse.seen_tokens.lock().expect("lock").clone()
    };
    let before_the_crash = tokens_of_a_run().await;
    assert_eq!(offsets_named(&before_the_crash), ["t:0:5-8", "t:1:3-3"]);
    assert_eq!(tokens_of_a_run().await, before_the_crash);
}

#[tokio::test]
async fn a_row_refused_alone_with_a_transient_error_is_dead_lettered_after_its_strikes() {
    for tokens in [false, true] {
        let mut h = if tokens {
            Harness::with_tokens(&["t"])
        } else {
            Harness::new(&["t"])
        };
        let mut entries = h.good("t", 0..40);
        let heavy = h.framed("heavy", 17);
        entries[17] = h.entry("t", 0, 17, heavy);
        for attempt in 1..super::insert::STRIKES {
            let failure = h
                .flush
                .attempt(&mut entries, None)
                .await
                .expect_err("the heavy row is still pending");
            assert!(matches!(failure, Failure::Insert(_)), "{failure}");
            assert_eq!(h.landed(), 39, "attempt {attempt}: every other row landed");
            assert!(h.letters().is_empty(), "attempt {attempt}: not yet");
        }
        h.flush.attempt(&mut entries, None).await.expect("settled");
        assert_eq!(
            h.letters(),
            vec![("t.dlq".into(), 17, ErrorClass::Persistent)],
            "tokens: {tokens}"
        );
        assert_eq!(h.landed(), 39);
    }
}

#[tokio::test]
async fn a_server_refusing_everything_is_waited_out_and_no_row_is_blamed() {
    let mut h = Harness::with_tokens(&["t"]);
    // Every row heavy: the server refuses whatever it is sent, as an overloaded one would.
    let mut entries: Vec<Entry> = (0..64)
        .map(|o| {
            let payload = h.framed("heavy", o);
            h.entry("t", (o % 2) as i32, o / 2, payload)
        })
        .collect();
    for _ in 0..2 * super::insert::STRIKES {
        h.clickhouse.inserts.store(0, Ordering::SeqCst);
        h.flush
            .attempt(&mut entries, None)
            .await
            .expect_err("waits");
        let sent = h.clickhouse.inserts.load(Ordering::SeqCst);
        assert!(
            sent <= 4,
            "an outage costs a few inserts per attempt, not a descent: {sent}"
        );
    }
    assert!(h.letters().is_empty(), "nothing is the rows' fault");
    assert_eq!(h.landed(), 0);
}

/// The topic, partition and offsets a token names, without the digest of its messages.
fn offsets_named(tokens: &[String]) -> Vec<&str> {
    tokens
        .iter()
        .map(|t| t.rsplit_once(':').map_or(t.as_str(), |(named, _)| named))
        .collect()
}

#[tokio::test]
async fn a_topic_created_again_gets_other_tokens_for_the_same_offsets() {
    let mut h = Harness::with_tokens(&["t"]);
    let mut first_life = h.good("t", 0..3);
    h.flush.attempt(&mut first_life, None).await.expect("done");
    // Deleted and created again: its new messages are numbered from 0 once more.
    let mut second_life: Vec<Entry> = (0..3)
        .map(|o| {
            let payload = h.framed(&format!("new{o}"), o);
            h.entry("t", 0, o, payload)
        })
        .collect();
    h.flush.attempt(&mut second_life, None).await.expect("done");
    assert_eq!(h.landed(), 6, "the new messages were not taken for the old");
    let tokens = h.clickhouse.seen_tokens.lock().expect("lock").clone();
    assert_eq!(offsets_named(&tokens), ["t:0:0-2", "t:0:0-2"]);
    assert_ne!(tokens[0], tokens[1]);
}

#[tokio::test]
async fn bisected_blocks_get_tokens_of_their_own() {
    let mut h = Harness::with_tokens(&["t"]);
    let mut entries = h.good("t", 0..3);
    let bad = h.framed("bad", 3);
    entries.push(h.entry("t", 0, 3, bad));
    h.flush.attempt(&mut entries, None).await.expect("done");
    let tokens = h.clickhouse.sent_tokens.lock().expect("lock").clone();
    assert_eq!(
        offsets_named(&tokens),
        ["t:0:0-3", "t:0:0-1", "t:0:2-3", "t:0:2-2", "t:0:3-3"]
    );
    assert_eq!(h.landed(), 3);
    assert_eq!(h.letters(), vec![("t.dlq".into(), 3, ErrorClass::Rejected)]);
}

#[tokio::test]
async fn on_a_cluster_every_block_holds_one_partition_and_names_it() {
    let mut h = Harness::on(
        &["t"],
        FakeClickHouse {
            routes: true,
            ..FakeClickHouse::default()
        },
    );
    // Interleaved as a fetch delivers them: 0, 1, 0, 1, …
    let mut entries: Vec<Entry> = (0..10)
        .map(|o| {
            let payload = h.framed(&format!("e{o}"), o);
            h.entry("t", (o % 2) as i32, o / 2, payload)
        })
        .collect();
    h.flush.attempt(&mut entries, None).await.expect("flushes");
    assert_eq!(h.landed(), 10);
    let mut routed = h.clickhouse.routed.lock().expect("lock").clone();
    routed.sort();
    assert_eq!(
        routed,
        [(0, 5), (1, 5)],
        "one block per partition, sent with its partition"
    );
    let rows = h.clickhouse.rows.lock().expect("lock").clone();
    let ids: Vec<&[u8]> = rows.iter().map(|(_, r)| &r[1..3]).collect();
    assert_eq!(
        ids,
        [
            b"e0", b"e2", b"e4", b"e6", b"e8", b"e1", b"e3", b"e5", b"e7", b"e9"
        ],
        "each block in offset order"
    );
}

#[tokio::test]
async fn a_planned_cut_splits_a_partition_into_the_blocks_it_was_sent_as_before() {
    let mut h = Harness::on(
        &["t"],
        FakeClickHouse {
            routes: true,
            ..FakeClickHouse::default()
        },
    );
    // A crashed owner sent offsets 0..=3 as one block; the batch rebuilt after it reaches offset 9.
    let prior = std::collections::HashMap::from([(
        ("t".to_owned(), 0),
        crate::block_plan::Recorded {
            first: 0,
            ends: vec![3],
        },
    )]);
    let ranges = std::collections::HashMap::from([(("t".to_owned(), 0), (0, 9))]);
    h.flush
        .set_plan(crate::block_plan::BlockPlan::for_batch(&ranges, &prior));
    let mut entries = h.good("t", 0..10);
    h.flush.attempt(&mut entries, None).await.expect("flushes");
    assert_eq!(
        *h.clickhouse.routed.lock().expect("lock"),
        [(0, 4), (0, 6)],
        "the crashed owner's block again, then the rest"
    );
}
