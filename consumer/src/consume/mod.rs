//! The consume loop every sink shares: read → batch → write step → pause what waits → commit.
//!
//! This loop owns the Kafka side: the group member and its offset book (through the [`GroupPort`]), the pause set,
//! serving the group while a write runs long, the operator's requests, the commit, and shutdown. A sink is only its
//! write step ([`Sink`]), as a Kafka Connect `SinkTask` is only `put`/`flush` under a framework that owns the
//! consumer: the ClickHouse writer ([`crate::write`]) and the lake ([`crate::lake::step`]) are the two.
//!
//! One write runs while the next batch is read: the write and commit of batch N overlap the receiving of batch
//! N+1, whose receipts stay outstanding, so a commit never passes a message that is not done. A write step gives
//! every message it finishes an outcome in the offset book and keeps what it could not finish; the loop then pauses
//! exactly the partitions the sink says wait ([`Sink::waiting`]), so every other partition keeps flowing, and
//! commits every position that moved.

use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::stream::BoxStream;
use futures::{FutureExt, StreamExt};
use rdkafka::error::KafkaResult;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::batch::Batch;
use crate::config::BatchSettings;
use crate::flush::Entry;
use crate::metrics::Metrics;
use crate::offsets::{Position, TopicPartition};
use crate::operator;
use crate::source::Received;
use crate::source::kafka::KafkaGroup;

mod port;
#[cfg(test)]
mod tests;

pub use port::{GroupPort, PauseSet};

/// Work the read loop does on a filling batch, ahead of its write (the ClickHouse sink decodes rows there, so
/// little is left to decode when the batch is due).
pub trait ReadAhead: Send + 'static {
    /// What it hands the write step with the batch.
    type Done: Send + 'static;
    /// What the write step hands back (buffers to reuse).
    type Spare: Send + 'static;
    /// The batch grew to `items`.
    fn grew(&mut self, items: &[Entry]);
    /// The batch `items` is due: what was done ahead for it.
    fn finish(&mut self, items: &[Entry]) -> Self::Done;
    /// Takes back what the last write is done with.
    fn recycle(&mut self, spare: Self::Spare);
}

/// Nothing done ahead.
impl ReadAhead for () {
    type Done = ();
    type Spare = ();
    fn grew(&mut self, _: &[Entry]) {}
    fn finish(&mut self, _: &[Entry]) {}
    fn recycle(&mut self, (): ()) {}
}

/// What the read loop hands a write step for a due batch.
pub type Ahead<K, S> = <<S as Sink<K>>::Ahead as ReadAhead>::Done;

/// A sink's write step, over the group member `K`.
pub trait Sink<K: GroupPort = KafkaGroup>: Send + Sized + 'static {
    /// What the read loop does ahead for it.
    type Ahead: ReadAhead;

    /// The read loop's helper, made once.
    fn read_ahead(&self) -> Self::Ahead;

    /// Takes `batch` (messages in the order read; `ahead` done for them when given) and whatever it keeps that is
    /// due, and makes one attempt: every message it finishes is settled in `group`'s offset book, what it cannot
    /// finish yet it keeps (then [`Sink::waiting`] names its partitions and [`Sink::wake_at`] when to try again).
    fn write(
        &mut self,
        group: &Group<K>,
        batch: Vec<Entry>,
        ahead: Option<Ahead<K, Self>>,
    ) -> impl Future<Output = ()> + Send;

    /// Buffers the last write is done with, for the read-ahead.
    fn spare(&mut self) -> <Self::Ahead as ReadAhead>::Spare;

    /// When the sink wants to write again though nothing new arrived (a retry, a file's age); `None`: never.
    fn wake_at(&self) -> Option<Instant>;

    /// The partitions that must stay paused: the sink holds messages of theirs it could not finish.
    fn waiting(&self) -> HashSet<TopicPartition>;

    /// How many messages it holds for another try.
    fn holds(&self) -> usize;

    /// Makes what it holds due now (shutting down: what is left of the grace is spent trying).
    fn make_due(&mut self);

    /// `positions` were committed.
    fn committed(&mut self, positions: &[Position]) -> impl Future<Output = ()> + Send {
        let _ = positions;
        async {}
    }

    /// Dead-letters the held message `skip` names, by an operator's hand; returns the DLQ topic.
    fn skip(
        &mut self,
        group: &Group<K>,
        skip: &operator::Skip,
    ) -> impl Future<Output = Result<String, operator::Refused>> + Send {
        let _ = (group, skip);
        async { Err(operator::Refused::NotConsuming) }
    }
}

/// The Kafka side a write step sees: the group member (with its offset book) and the metrics.
pub struct Group<K = KafkaGroup> {
    /// The group member.
    pub port: Arc<K>,
    /// Metric handles.
    pub metrics: Metrics,
    paused: PauseSet,
}

impl<K: GroupPort> Group<K> {
    /// The group member `port`.
    pub fn new(port: K, metrics: Metrics) -> Self {
        Self {
            port: Arc::new(port),
            metrics,
            paused: PauseSet::default(),
        }
    }
}

/// What the loop is given besides its sink.
pub struct Settings {
    /// When a batch is due.
    pub batch: BatchSettings,
    /// How long shutting down may spend on what the sink holds.
    pub grace: Duration,
    /// Set while consuming.
    pub ready: Arc<AtomicBool>,
    /// Operators' requests to dead-letter a held message by hand (the ClickHouse consumer's).
    pub operator: Option<tokio::sync::mpsc::Receiver<operator::Request>>,
}

impl Settings {
    /// The batch and grace `config` sets.
    pub fn new(
        config: &crate::Config,
        ready: Arc<AtomicBool>,
        operator: Option<tokio::sync::mpsc::Receiver<operator::Request>>,
    ) -> Self {
        Self {
            batch: config.batch.clone(),
            grace: config.shutdown_grace(),
            ready,
            operator,
        }
    }
}

/// A sink with the Kafka side, between writes.
struct Worker<K, S> {
    sink: S,
    group: Group<K>,
}

impl<K: GroupPort, S: Sink<K>> Worker<K, S> {
    /// One write, then the Kafka side of it: pause exactly what waits, commit what moved.
    async fn write(mut self, batch: Vec<Entry>, ahead: Option<Ahead<K, S>>) -> Self {
        let started = Instant::now();
        let count = batch.len();
        self.sink.write(&self.group, batch, ahead).await;
        let written = started.elapsed();
        self.settle().await;
        if count > 0 {
            tracing::debug!(
                messages = count,
                held = self.sink.holds(),
                write_ms = written.as_millis() as u64,
                commit_ms = (started.elapsed() - written).as_millis() as u64,
                "batch written"
            );
        }
        self
    }

    /// Pauses exactly the partitions the sink waits on and commits every position that moved; a failed commit is
    /// counted and retried with the next.
    async fn settle(&mut self) {
        let waiting = self.sink.waiting();
        let g = &mut self.group;
        g.paused.pause_only(&*g.port, &g.metrics, &waiting);
        if let Some(positions) = g.port.commit_moved().await {
            self.sink.committed(&positions).await;
        }
    }
}

/// Consumes with `sink` until `shutdown`, then writes what it read, spends at most the grace on what the sink
/// holds, commits and leaves the group.
pub async fn run<K: GroupPort, S: Sink<K>>(
    sink: S,
    group: Group<K>,
    settings: Settings,
    shutdown: CancellationToken,
) {
    let Settings {
        batch,
        grace,
        ready,
        mut operator,
    } = settings;
    let mut batch = Batch::new(batch);
    let mut ahead = sink.read_ahead();
    ready.store(true, Ordering::SeqCst);
    // Reading needs only the port; the write in flight owns the rest.
    let port = group.port.clone();
    let metrics = group.metrics.clone();
    let mut writer = Writer::Idle(Box::new(Worker { sink, group }));
    // One stream for the whole run: `recv()` registers and drops a waker slot per message.
    let mut messages = port.messages();
    loop {
        let deadline = batch.deadline().map(Instant::from_std);
        let due: bool;
        let wake_at = writer.wake_at();
        tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            done = writer.finished() => {
                due = batch.is_worth_flushing(now_ms()) || is_due(done.sink.wake_at());
                writer = Writer::Idle(Box::new(done));
            }
            () = sluice_runtime::backoff::sleep_until_some(deadline) => due = true,
            () = sluice_runtime::backoff::sleep_until_some(wake_at) => due = true,
            Some(request) = recv_opt(&mut operator) => {
                let mut worker = writer.idle().await;
                let answer = worker.sink.skip(&worker.group, &request.skip).await;
                worker.settle().await;
                let _ = request.reply.send(answer);
                due = is_due(worker.sink.wake_at());
                writer = Writer::Idle(Box::new(worker));
            }
            msg = messages.next() => {
                let mut next = Some(msg);
                // What librdkafka already holds is taken without going back through `select!` (a timer and
                // four polls per message), up to a bound so shutdown and a finished write are still seen soon.
                for taken in 0..DRAIN_READY {
                    if taken > 0 {
                        // Only ever asked for a message this iteration handles: one taken and dropped would be a
                        // gap the commit passes over.
                        match messages.next().now_or_never() {
                            Some(m) => next = Some(m),
                            None => break,
                        }
                    }
                    match next.take().flatten() {
                        Some(Ok(Some(r))) => {
                            batch.push(r);
                            ahead.grew(batch.items());
                        }
                        // Its partition left: nothing to read.
                        Some(Ok(None)) => {}
                        Some(Err(e)) => {
                            metrics.retrying("kafka", 0, Duration::from_millis(100), &e);
                            tokio::time::sleep(Duration::from_millis(100)).await;
                            break;
                        }
                        None => break,
                    }
                    if batch.is_full() {
                        break;
                    }
                }
                due = batch.is_full() || (writer.is_idle() && batch.is_worth_flushing(now_ms()));
            }
        }
        if due {
            // At most one write runs, and the next waits for it, which bounds memory to two batches.
            let entries = batch.take();
            let done_ahead = ahead.finish(&entries);
            let mut worker = match writer {
                Writer::Idle(w) => *w,
                Writer::Busy(busy) => {
                    let mut fetched = Vec::new();
                    let w = wait_for(&*port, busy, &mut messages, &mut fetched).await;
                    // Already fetched when everything paused: the next batch starts with them, in order.
                    for r in fetched {
                        batch.push(r);
                    }
                    ahead.grew(batch.items());
                    w
                }
            };
            // The write before this one is done with its buffers: the batch read next fills them.
            ahead.recycle(worker.sink.spare());
            writer = Writer::Busy(Box::pin(worker.write(entries, Some(done_ahead))));
        }
    }
    drop(messages);
    let mut worker = writer.idle().await;
    tracing::info!(
        pending = batch.len(),
        "shutting down: writing the last batch"
    );
    worker = worker.write(batch.take(), None).await;
    worker = finish_held(worker, grace).await;
    ready.store(false, Ordering::SeqCst);
    worker.settle().await;
    // Dropping the last handle closes the consumer: it leaves the group (the revoke callback commits nothing new,
    // everything done is committed above). Closing blocks, so do it off the runtime.
    drop(worker);
    let _ = tokio::task::spawn_blocking(move || drop(port)).await;
    tracing::info!("left the group");
}

/// Shutting down: tries what the sink holds until it is done or `grace` runs out, serving the group meanwhile;
/// what is left stays uncommitted for redelivery.
async fn finish_held<K: GroupPort, S: Sink<K>>(
    mut worker: Worker<K, S>,
    grace: Duration,
) -> Worker<K, S> {
    let give_up_at = Instant::now() + grace;
    let port = worker.group.port.clone();
    while worker.sink.holds() > 0 {
        let Some(wake_at) = worker.sink.wake_at() else {
            break;
        };
        if Instant::now() >= give_up_at {
            tracing::warn!(
                messages = worker.sink.holds(),
                "shutdown grace over: leaving the held messages uncommitted for redelivery"
            );
            break;
        }
        let mut fetched = Vec::new();
        let mut messages = port.messages();
        loop {
            tokio::select! {
                () = tokio::time::sleep_until(wake_at.min(give_up_at)) => break,
                msg = messages.next() => {
                    // Keeps the group membership alive and serves rebalances; a message still in librdkafka's
                    // fetch queue waits with the held ones, so no received offset is passed over.
                    if let Some(Ok(Some(r))) = msg {
                        fetched.push(Entry::new(r));
                    }
                }
            }
        }
        drop(messages);
        worker.sink.make_due();
        worker = worker.write(fetched, None).await;
    }
    worker
}

fn is_due(at: Option<Instant>) -> bool {
    at.is_some_and(|t| Instant::now() >= t)
}

/// Most messages taken from librdkafka's queue in one go, about a millisecond of work.
const DRAIN_READY: usize = 1_000;

/// How long a due batch waits for the write in flight before the read loop pauses everything and polls while it
/// waits: writes shorter than this (nearly all) cost no pause.
const SERVE_THE_GROUP_AFTER: Duration = Duration::from_secs(1);

/// A write in flight, handing its worker back when done.
type Busy<K, S> = Pin<Box<dyn Future<Output = Worker<K, S>> + Send>>;

/// Waits for the write in flight while keeping the group membership: a write can take minutes (bisecting hundreds
/// of refused rows, an insert at its timeout, storage retried), and a member that stops polling for
/// `max.poll.interval.ms` is expelled and its batch read again by the next owner. After a moment every assigned
/// partition pauses and the stream is polled (serving rebalances and the poll interval); messages fetched before
/// the pause go to `fetched`, to be read into the next batch.
async fn wait_for<K: GroupPort, S: Sink<K>>(
    port: &K,
    mut busy: Busy<K, S>,
    messages: &mut BoxStream<'_, KafkaResult<Option<Received>>>,
    fetched: &mut Vec<Received>,
) -> Worker<K, S> {
    tokio::select! {
        w = &mut busy => return w,
        () = tokio::time::sleep(SERVE_THE_GROUP_AFTER) => {}
    }
    let mut paused: HashSet<TopicPartition> = port.offsets().assigned().into_iter().collect();
    port.set_paused(&paused.iter().cloned().collect::<Vec<_>>(), true);
    tracing::debug!(
        partitions = paused.len(),
        "a long write: paused everything to serve the group meanwhile"
    );
    let worker = loop {
        tokio::select! {
            w = &mut busy => break w,
            msg = messages.next() => {
                if let Some(Ok(Some(r))) = msg {
                    let tp = TopicPartition::new(r.receipt.topic(), r.receipt.partition());
                    // Assigned during the wait: paused too, so nothing more piles up here.
                    if paused.insert(tp.clone()) {
                        port.set_paused(&[tp], true);
                    }
                    fetched.push(r);
                }
            }
        }
    };
    // Every partition paused here is resumed, still assigned or not: one revoked meanwhile keeps librdkafka's
    // pause flag if it comes back (see the rebalance callback).
    let resume: Vec<TopicPartition> = paused.into_iter().collect();
    port.set_paused(&resume, false);
    // The partitions the sink waits on stay paused.
    worker.group.paused.reapply(port);
    worker
}

/// The worker between writes, or a write of it running while the next batch is read.
enum Writer<K, S> {
    Idle(Box<Worker<K, S>>),
    Busy(Busy<K, S>),
}

impl<K: GroupPort, S: Sink<K>> Writer<K, S> {
    /// The worker once no write is running.
    async fn idle(self) -> Worker<K, S> {
        match self {
            Writer::Idle(w) => *w,
            Writer::Busy(f) => f.await,
        }
    }

    /// Whether no write is running.
    fn is_idle(&self) -> bool {
        matches!(self, Writer::Idle(_))
    }

    /// When the idle sink wants to write again; `None` while a write runs (it decides again when done).
    fn wake_at(&self) -> Option<Instant> {
        match self {
            Writer::Idle(w) => w.sink.wake_at(),
            Writer::Busy(_) => None,
        }
    }

    /// Completes with the worker when the running write ends; never while idle.
    async fn finished(&mut self) -> Worker<K, S> {
        match self {
            Writer::Idle(_) => std::future::pending().await,
            Writer::Busy(f) => f.await,
        }
    }
}

/// Wall-clock milliseconds since the epoch, as Kafka timestamps count them.
fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// The next request of `rx`; pending forever without one.
async fn recv_opt<T>(rx: &mut Option<tokio::sync::mpsc::Receiver<T>>) -> Option<T> {
    match rx {
        Some(r) => r.recv().await,
        None => std::future::pending().await,
    }
}
