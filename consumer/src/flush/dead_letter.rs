//! The dead-letter step: every letter of the attempt is produced to its stream's DLQ topic at once, and a message
//! counts as dead-lettered only once the broker acknowledged its copy.

use std::collections::HashMap;

use futures::future::join_all;
use rdkafka::message::Message;

use super::ports::DeadLetterSink;
use super::{Entry, Stream};
use crate::dlq::Letter;
use crate::metrics::Metrics;
use crate::offsets::Outcome;
use crate::verdict::Failure;

/// Sends `letters` and marks their entries dead-lettered as they are acknowledged; returns a failed send, whose
/// entries stay pending for the next attempt.
pub(super) async fn send<D: DeadLetterSink>(
    dlq: &D,
    streams: &HashMap<String, Stream>,
    metrics: &Metrics,
    entries: &mut [Entry],
    letters: Vec<(usize, Letter)>,
) -> Option<Failure> {
    let sends = letters.iter().filter_map(|(i, letter)| {
        let message = &entries.get(*i)?.received.message;
        let dlq_topic = streams.get(message.topic())?.dlq_topic.as_str();
        Some(async move { (dlq.send(dlq_topic, message, letter).await, *i, letter) })
    });
    let results = join_all(sends).await;
    let mut failure = None;
    for (result, i, letter) in results {
        match result {
            Ok(()) => {
                let m = &entries[i].received.message;
                metrics.dead_lettered(
                    letter.class.as_str(),
                    m.topic(),
                    m.partition(),
                    m.offset(),
                    &letter.message,
                );
                entries[i].outcome = Some(Outcome::DeadLettered);
            }
            Err(e) => failure = Some(Failure::DeadLetter(e)),
        }
    }
    failure
}
