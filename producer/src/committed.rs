//! `?wait=clickhouse` and `?wait=lake`: a request is answered once a consumer group has committed past each of its
//! events. The consumers commit only after the insert (or the dead letter) is done, so a committed offset past an
//! event means the event is queryable (or dead-lettered).
//!
//! One [`CommitWatch`] per group serves every waiting request: it fetches the group's committed offsets for the
//! partitions someone waits on (and only while someone does), every `wait.poll_ms`, and publishes them; requests
//! wait on that publication, never on a fetch of their own.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::Offset;
use rdkafka::TopicPartitionList;
use rdkafka::consumer::{BaseConsumer, Consumer};
use sluice_runtime::kafka::KafkaSettings;
use tokio::sync::{Notify, Semaphore, watch};
use tokio::time::Instant;

use crate::sink::Position;

/// A topic and partition.
type Tp = (String, i32);

/// Committed offsets (the next offset the group will read) by partition.
type Committed = HashMap<Tp, i64>;

/// What a request waits for before it answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitFor {
    /// Kafka's acknowledgement (the default).
    Kafka,
    /// The ClickHouse consumer group's commit: the events are queryable.
    ClickHouse,
    /// The lake consumer group's commit: the events are in published files.
    Lake,
}

impl WaitFor {
    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            WaitFor::Kafka => "kafka",
            WaitFor::ClickHouse => "clickhouse",
            WaitFor::Lake => "lake",
        }
    }

    /// Parses `wait=` (query) or `Sluice-Wait:` (header): `kafka`, `clickhouse` or `lake`.
    pub fn parse(v: &str) -> Option<Self> {
        match v.trim().to_ascii_lowercase().as_str() {
            "" | "kafka" => Some(WaitFor::Kafka),
            "clickhouse" => Some(WaitFor::ClickHouse),
            "lake" => Some(WaitFor::Lake),
            _ => None,
        }
    }
}

/// The watches requests may wait on, and the bound on how many wait at once.
pub struct Waits {
    /// The ClickHouse consumers' group.
    pub clickhouse: Option<Arc<CommitWatch>>,
    /// The lake consumers' group.
    pub lake: Option<Arc<CommitWatch>>,
    /// The longest a request waits.
    pub timeout: Duration,
    /// One permit per waiting request.
    pub slots: Arc<Semaphore>,
}

impl Waits {
    /// No watches: every `?wait=` other than `kafka` answers at Kafka's acknowledgement with its events pending.
    pub fn none() -> Self {
        Self {
            clickhouse: None,
            lake: None,
            timeout: Duration::ZERO,
            slots: Arc::new(Semaphore::new(0)),
        }
    }

    /// Watches on both groups of `settings`; their tasks are started by [`CommitWatch::run`].
    pub fn new(
        kafka: &KafkaSettings,
        settings: &crate::config::WaitSettings,
    ) -> Result<Self, rdkafka::error::KafkaError> {
        let poll = Duration::from_millis(settings.poll_ms.max(10));
        Ok(Self {
            clickhouse: Some(CommitWatch::new(kafka, &settings.clickhouse_group, poll)?),
            lake: Some(CommitWatch::new(kafka, &settings.lake_group, poll)?),
            timeout: Duration::from_millis(settings.timeout_ms),
            slots: Arc::new(Semaphore::new(settings.max_waiting)),
        })
    }

    /// The watch for `what`, if it is one.
    pub fn watch(&self, what: WaitFor) -> Option<&Arc<CommitWatch>> {
        match what {
            WaitFor::Kafka => None,
            WaitFor::ClickHouse => self.clickhouse.as_ref(),
            WaitFor::Lake => self.lake.as_ref(),
        }
    }
}

/// Watches one consumer group's committed offsets for the requests that wait on them.
pub struct CommitWatch {
    group: String,
    consumer: Arc<BaseConsumer>,
    /// Partitions someone waits on, with how many waiters each.
    wanted: Mutex<HashMap<Tp, usize>>,
    /// Woken when the first waiter arrives, so an idle watch fetches nothing.
    someone_waits: Notify,
    published: watch::Sender<Arc<Committed>>,
    poll: Duration,
}

impl CommitWatch {
    /// A watch on `group` through a client that never joins it (it only reads the group's committed offsets).
    pub fn new(
        kafka: &KafkaSettings,
        group: &str,
        poll: Duration,
    ) -> Result<Arc<Self>, rdkafka::error::KafkaError> {
        let mut cfg = ClientConfig::new();
        cfg.set("bootstrap.servers", &kafka.bootstrap_servers);
        for (k, v) in &kafka.client {
            cfg.set(k, v);
        }
        cfg.set("group.id", group)
            .set("enable.auto.commit", "false");
        let consumer: BaseConsumer = cfg.create()?;
        Ok(Arc::new(Self {
            group: group.to_owned(),
            consumer: Arc::new(consumer),
            wanted: Mutex::new(HashMap::new()),
            someone_waits: Notify::new(),
            published: watch::Sender::new(Arc::new(HashMap::new())),
            poll,
        }))
    }

    /// The group watched.
    pub fn group(&self) -> &str {
        &self.group
    }

    /// Fetches and publishes committed offsets while anyone waits; runs until the process ends.
    pub async fn run(self: Arc<Self>) {
        loop {
            let tps: Vec<Tp> = self.wanted().keys().cloned().collect();
            if tps.is_empty() {
                self.someone_waits.notified().await;
                continue;
            }
            let mut tpl = TopicPartitionList::new();
            for (t, p) in &tps {
                tpl.add_partition(t, *p);
            }
            let consumer = self.consumer.clone();
            let timeout = self.poll.max(Duration::from_secs(2));
            let fetched =
                tokio::task::spawn_blocking(move || consumer.committed_offsets(tpl, timeout)).await;
            match fetched {
                Ok(Ok(list)) => {
                    let committed: Committed = list
                        .elements()
                        .iter()
                        .filter_map(|e| match e.offset() {
                            Offset::Offset(o) => Some(((e.topic().to_owned(), e.partition()), o)),
                            _ => None,
                        })
                        .collect();
                    self.published.send_replace(Arc::new(committed));
                }
                Ok(Err(e)) => {
                    tracing::debug!(group = %self.group, error = %e, "committed offsets not fetched")
                }
                Err(e) => {
                    tracing::debug!(group = %self.group, error = %e, "committed offsets task failed")
                }
            }
            tokio::time::sleep(self.poll).await;
        }
    }

    fn wanted(&self) -> std::sync::MutexGuard<'_, HashMap<Tp, usize>> {
        // A poisoned lock only means a waiter panicked mid-update; the counts are still usable.
        self.wanted.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits until the group has committed past every position in `positions` (of `topic`), or `until`; returns
    /// which positions have landed, in order.
    pub async fn wait(&self, topic: &str, positions: &[Position], until: Instant) -> Vec<bool> {
        let _interest = Interest::new(self, topic, positions);
        let mut rx = self.published.subscribe();
        loop {
            let now = landed(&rx.borrow_and_update(), topic, positions);
            if now.iter().all(|l| *l) {
                return now;
            }
            match tokio::time::timeout_at(until, rx.changed()).await {
                Ok(Ok(())) => {}
                // Timed out, or the watch is gone: answer with what has landed.
                _ => return landed(&self.published.borrow(), topic, positions),
            }
        }
    }
}

/// Which positions a group's committed offsets have passed.
fn landed(committed: &Committed, topic: &str, positions: &[Position]) -> Vec<bool> {
    positions
        .iter()
        .map(|p| {
            committed
                .get(&(topic.to_owned(), p.partition))
                .is_some_and(|c| *c > p.offset)
        })
        .collect()
}

/// A request's interest in partitions, withdrawn when it is dropped (also when the request is cancelled).
struct Interest<'a> {
    watch: &'a CommitWatch,
    tps: Vec<Tp>,
}

impl<'a> Interest<'a> {
    fn new(watch: &'a CommitWatch, topic: &str, positions: &[Position]) -> Self {
        let mut tps: Vec<Tp> = positions
            .iter()
            .map(|p| (topic.to_owned(), p.partition))
            .collect();
        tps.sort();
        tps.dedup();
        let mut wanted = watch.wanted();
        let first = wanted.is_empty();
        for tp in &tps {
            *wanted.entry(tp.clone()).or_default() += 1;
        }
        drop(wanted);
        if first {
            watch.someone_waits.notify_one();
        }
        Self { watch, tps }
    }
}

impl Drop for Interest<'_> {
    fn drop(&mut self) {
        let mut wanted = self.watch.wanted();
        for tp in &self.tps {
            if let Some(n) = wanted.get_mut(tp) {
                *n -= 1;
                if *n == 0 {
                    wanted.remove(tp);
                }
            }
        }
    }
}
