//! Where messages come from: the Kafka group member and the messages it hands to the consume loop.

pub mod kafka;

use rdkafka::message::OwnedMessage;

use crate::offsets::Receipt;

/// A message read from Kafka with the receipt that must be completed before its offset can be committed.
#[derive(Debug)]
pub struct Received {
    /// The message as read (key, value, headers, timestamp).
    pub message: OwnedMessage,
    /// Completed once the message is inserted or dead-lettered.
    pub receipt: Receipt,
}
