//! The consume loop against a fake group member and a fake sink: what it commits and when, what it pauses, and
//! what shutdown leaves. The real group member and sinks are tested end to end in `tests/tests/`.

use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use futures::StreamExt;
use futures::stream::BoxStream;
use rdkafka::Timestamp;
use rdkafka::error::KafkaResult;
use rdkafka::message::OwnedMessage;
use tokio::sync::{Notify, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::*;
use crate::offsets::{Offsets, Outcome};

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// What the fake broker holds for the member and what the member did.
#[derive(Default)]
struct Broker {
    /// Fetched and not read yet, in order.
    queue: VecDeque<(TopicPartition, i64)>,
    paused: HashSet<TopicPartition>,
    commits: Vec<Position>,
}

/// A group member assigned `p0` and `p1` of topic `t`, reading what the test appends.
#[derive(Default)]
struct FakeGroup {
    broker: Mutex<Broker>,
    offsets: Mutex<Offsets>,
    arrived: Notify,
}

fn tp(partition: i32) -> TopicPartition {
    TopicPartition::new("t", partition)
}

impl FakeGroup {
    fn new() -> Self {
        let g = Self::default();
        lock(&g.offsets).assign([tp(0), tp(1)]);
        g
    }

    fn append(&self, partition: i32, offsets: std::ops::Range<i64>) {
        lock(&self.broker)
            .queue
            .extend(offsets.map(|o| (tp(partition), o)));
        self.arrived.notify_one();
    }

    /// The first message fetched whose partition is not paused.
    fn take_next(&self) -> Option<(TopicPartition, i64)> {
        let mut b = lock(&self.broker);
        let i = b.queue.iter().position(|(tp, _)| !b.paused.contains(tp))?;
        b.queue.remove(i)
    }

    fn unread(&self) -> usize {
        lock(&self.broker).queue.len()
    }

    fn paused(&self) -> HashSet<TopicPartition> {
        lock(&self.broker).paused.clone()
    }

    /// The position last committed for `partition`.
    fn committed(&self, partition: i32) -> Option<i64> {
        lock(&self.broker)
            .commits
            .iter()
            .rev()
            .find(|p| p.partition == tp(partition))
            .map(|p| p.next_offset)
    }
}

impl GroupPort for FakeGroup {
    fn messages(&self) -> BoxStream<'_, KafkaResult<Option<Received>>> {
        futures::stream::unfold(self, |g| async move {
            loop {
                if let Some((tp, offset)) = g.take_next() {
                    let receipt = g.offsets().received(&tp.topic, tp.partition, offset);
                    let r = receipt.map(|receipt| Received {
                        message: OwnedMessage::new(
                            Some(Vec::new()),
                            None,
                            tp.topic.clone(),
                            Timestamp::NotAvailable,
                            tp.partition,
                            offset,
                            None,
                        ),
                        receipt,
                    });
                    return Some((Ok(r), g));
                }
                g.arrived.notified().await;
            }
        })
        .boxed()
    }

    fn set_paused(&self, tps: &[TopicPartition], paused: bool) {
        let mut b = lock(&self.broker);
        for tp in tps {
            if paused {
                b.paused.insert(tp.clone());
            } else {
                b.paused.remove(tp);
            }
        }
        drop(b);
        self.arrived.notify_one();
    }

    fn offsets(&self) -> MutexGuard<'_, Offsets> {
        lock(&self.offsets)
    }

    async fn commit_moved(&self) -> Option<Vec<Position>> {
        let positions = self.offsets().committable();
        if positions.is_empty() {
            return None;
        }
        self.offsets().committed(&positions);
        lock(&self.broker).commits.extend(positions.iter().cloned());
        Some(positions)
    }
}

/// Writes every message, except those of `failing` partitions, which it holds and tries again 20 ms later. Each
/// write takes a permit of `gate` first, so a test can keep a write running.
struct FakeSink {
    gate: Arc<Semaphore>,
    failing: Arc<Mutex<HashSet<TopicPartition>>>,
    /// Writes begun.
    started: Arc<Mutex<usize>>,
    held: Vec<Entry>,
    retry_at: Option<Instant>,
}

impl Sink<FakeGroup> for FakeSink {
    type Ahead = ();

    fn read_ahead(&self) {}

    async fn write(&mut self, group: &Group<FakeGroup>, mut batch: Vec<Entry>, _: Option<()>) {
        if self.retry_at.is_some_and(|t| Instant::now() >= t) {
            batch.append(&mut self.held);
        }
        if batch.is_empty() {
            return;
        }
        *lock(&self.started) += 1;
        if let Ok(permit) = self.gate.acquire().await {
            permit.forget();
        }
        let failing = lock(&self.failing).clone();
        let mut offsets = group.port.offsets();
        for e in batch {
            let r = &e.received.receipt;
            if failing.contains(&TopicPartition::new(r.topic(), r.partition())) {
                self.held.push(e);
            } else {
                offsets.settle(e.received.receipt, Outcome::Inserted);
            }
        }
        self.retry_at = (!self.held.is_empty()).then(|| Instant::now() + Duration::from_millis(20));
    }

    fn spare(&mut self) {}

    fn wake_at(&self) -> Option<Instant> {
        self.retry_at
    }

    fn waiting(&self) -> HashSet<TopicPartition> {
        self.held
            .iter()
            .map(|e| {
                TopicPartition::new(e.received.receipt.topic(), e.received.receipt.partition())
            })
            .collect()
    }

    fn holds(&self) -> usize {
        self.held.len()
    }

    fn make_due(&mut self) {
        if !self.held.is_empty() {
            self.retry_at = Some(Instant::now());
        }
    }
}

/// A running loop and the handles a test drives it with.
struct Running {
    group: Arc<FakeGroup>,
    gate: Arc<Semaphore>,
    failing: Arc<Mutex<HashSet<TopicPartition>>>,
    started: Arc<Mutex<usize>>,
    shutdown: CancellationToken,
    done: tokio::task::JoinHandle<()>,
}

/// Batches of `rows` messages, due 5 ms after their first; writes gated by `permits`; shutdown grace `grace`.
fn start(rows: usize, permits: usize, failing: &[i32], grace: Duration) -> Running {
    let gate = Arc::new(Semaphore::new(permits));
    let failing = Arc::new(Mutex::new(failing.iter().map(|p| tp(*p)).collect()));
    let started = Arc::new(Mutex::new(0));
    let sink = FakeSink {
        gate: gate.clone(),
        failing: Arc::clone(&failing),
        started: started.clone(),
        held: Vec::new(),
        retry_at: None,
    };
    let metrics = Metrics::new(&prometheus::Registry::new()).expect("metrics");
    let group = Group::new(FakeGroup::new(), metrics);
    let port = group.port.clone();
    let settings = Settings {
        batch: BatchSettings {
            max_rows: rows,
            min_rows: rows,
            max_bytes: 1 << 20,
            max_wait_ms: 5,
        },
        grace,
        ready: Arc::new(AtomicBool::new(false)),
        operator: None,
    };
    let shutdown = CancellationToken::new();
    let done = tokio::spawn(run(sink, group, settings, shutdown.clone()));
    Running {
        group: port,
        gate,
        failing,
        started,
        shutdown,
        done,
    }
}

/// Polls `cond` every millisecond until it holds; fails after 10 s.
async fn until(what: &str, cond: impl Fn() -> bool) {
    let give_up = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < give_up, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

#[tokio::test]
async fn a_batch_read_while_a_write_runs_is_committed_only_after_its_own_write() {
    let r = start(3, 0, &[], Duration::from_secs(1));
    r.group.append(0, 0..3);
    until("the first write to begin", || *lock(&r.started) == 1).await;
    // Read while the first write runs: received, not written, so never committed with it.
    r.group.append(0, 3..6);
    until("the second batch to be read", || r.group.unread() == 0).await;
    assert_eq!(r.group.committed(0), None, "nothing is done yet");

    r.gate.add_permits(1);
    until("the second write to begin", || *lock(&r.started) == 2).await;
    // The first write was committed before the second began; the second batch is still in flight.
    assert_eq!(r.group.committed(0), Some(3));

    r.gate.add_permits(1);
    until("the second batch committed", || {
        r.group.committed(0) == Some(6)
    })
    .await;
    r.shutdown.cancel();
    r.done.await.expect("the loop ends");
}

#[tokio::test]
async fn only_the_partition_the_sink_waits_on_pauses_while_the_others_commit() {
    let r = start(4, 1_000, &[1], Duration::from_secs(1));
    r.group.append(0, 0..5);
    r.group.append(1, 0..5);
    until("p0 committed", || r.group.committed(0) == Some(5)).await;
    until("p1 paused", || r.group.paused() == HashSet::from([tp(1)])).await;
    assert_eq!(r.group.committed(1), None, "p1's messages are not done");

    // p0 keeps flowing while p1 waits.
    r.group.append(0, 5..9);
    until("p0 read on", || r.group.committed(0) == Some(9)).await;
    assert_eq!(r.group.paused(), HashSet::from([tp(1)]));

    // p1's failure clears: its messages land, it resumes and reads on.
    lock(&r.failing).clear();
    until("p1 committed", || r.group.committed(1) == Some(5)).await;
    until("p1 resumed", || r.group.paused().is_empty()).await;
    r.group.append(1, 5..8);
    until("p1 read on", || r.group.committed(1) == Some(8)).await;
    r.shutdown.cancel();
    r.done.await.expect("the loop ends");
}

#[tokio::test]
async fn shutdown_spends_the_grace_on_held_messages_and_commits_them_if_they_land() {
    let r = start(2, 1_000, &[1], Duration::from_secs(5));
    r.group.append(0, 0..2);
    r.group.append(1, 0..2);
    until("p0 committed", || r.group.committed(0) == Some(2)).await;
    r.shutdown.cancel();
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!r.done.is_finished(), "still trying within the grace");
    lock(&r.failing).clear();
    r.done.await.expect("the loop ends");
    assert_eq!(r.group.committed(1), Some(2));
}

#[tokio::test]
async fn shutdown_leaves_what_still_fails_after_the_grace_uncommitted() {
    let r = start(2, 1_000, &[1], Duration::from_millis(100));
    r.group.append(0, 0..2);
    r.group.append(1, 0..2);
    until("p0 committed", || r.group.committed(0) == Some(2)).await;
    let attempts = *lock(&r.started);
    r.shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(5), r.done)
        .await
        .expect("the loop gives up after the grace")
        .expect("the loop ends");
    assert!(*lock(&r.started) > attempts, "the grace was spent trying");
    assert_eq!(r.group.committed(1), None, "left for redelivery");
}
