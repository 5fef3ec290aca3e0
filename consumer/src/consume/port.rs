//! The Kafka side of the consume loop as a port: the real group member implements it
//! ([`crate::source::kafka::KafkaGroup`]), and the loop's tests drive the loop with a fake.

use std::collections::HashSet;
use std::future::Future;
use std::sync::MutexGuard;

use futures::stream::BoxStream;
use rdkafka::error::KafkaResult;

use crate::metrics::Metrics;
use crate::offsets::{Offsets, Position, TopicPartition};
use crate::source::Received;

/// What the loop needs of a consumer group member.
pub trait GroupPort: Send + Sync + 'static {
    /// The messages read, in order, each taken into the offset book as it is read (`None`: its partition is no
    /// longer ours). One stream at a time.
    fn messages(&self) -> BoxStream<'_, KafkaResult<Option<Received>>>;

    /// Pauses (or resumes) fetching `tps`; messages already fetched may still arrive.
    fn set_paused(&self, tps: &[TopicPartition], paused: bool);

    /// The offset book (the rebalance callbacks update it too).
    fn offsets(&self) -> MutexGuard<'_, Offsets>;

    /// Commits every position that moved; returns what was committed (`None`: nothing moved, or the commit
    /// failed and is retried with the next).
    fn commit_moved(&self) -> impl Future<Output = Option<Vec<Position>>> + Send;
}

/// The partitions the loop keeps paused because the sink waits on them.
#[derive(Debug, Default)]
pub struct PauseSet(HashSet<TopicPartition>);

impl PauseSet {
    /// Pauses exactly `waiting` (those still assigned): partitions that start waiting pause, and paused ones no
    /// longer waiting resume.
    pub fn pause_only<K: GroupPort>(
        &mut self,
        port: &K,
        metrics: &Metrics,
        waiting: &HashSet<TopicPartition>,
    ) {
        if self.0.is_empty() && waiting.is_empty() {
            return;
        }
        let assigned: HashSet<TopicPartition> = port.offsets().assigned().into_iter().collect();
        let free: Vec<TopicPartition> = self.0.difference(waiting).cloned().collect();
        if !free.is_empty() {
            let resume: Vec<TopicPartition> = free
                .iter()
                .filter(|tp| assigned.contains(*tp))
                .cloned()
                .collect();
            port.set_paused(&resume, false);
            for tp in &free {
                self.0.remove(tp);
            }
            tracing::info!(partitions = ?resume, "resumed: their messages are done");
        }
        let new: Vec<TopicPartition> = waiting
            .iter()
            .filter(|tp| !self.0.contains(*tp) && assigned.contains(*tp))
            .cloned()
            .collect();
        if !new.is_empty() {
            tracing::info!(partitions = ?new, "paused while their pending messages are retried");
            port.set_paused(&new, true);
            self.0.extend(new);
        }
        metrics.paused_partitions(self.0.len());
    }

    /// Pauses again what this set holds (after something else resumed everything).
    pub fn reapply<K: GroupPort>(&self, port: &K) {
        if !self.0.is_empty() {
            let tps: Vec<TopicPartition> = self.0.iter().cloned().collect();
            port.set_paused(&tps, true);
        }
    }
}
