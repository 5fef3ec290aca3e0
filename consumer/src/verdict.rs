//! Retry or dead-letter: the one place that decides what a failure means.
//!
//! Every failure on the way from Kafka bytes to a ClickHouse row is one [`Failure`], and [`verdict`] alone says
//! whether waiting can fix it (retry the same messages with backoff, partitions paused) or the message itself is
//! at fault (dead-letter it, with a class). The rule everywhere: only a failure that names the message's bytes as
//! the cause dead-letters; anything that might be the server's, the network's or ours is retried, because sending
//! good rows to the DLQ is worse than waiting.

use crate::decode::DecodeError;
use crate::dlq::ErrorClass;
use crate::error::Error;
use crate::registry::RegistryError;

/// Something that stopped a message (or a whole attempt) on its way to ClickHouse.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    /// An INSERT failed.
    #[error("clickhouse: {0}")]
    Insert(#[from] clickhouse::error::Error),
    /// Looking up a schema failed.
    #[error("schema registry: {0}")]
    Registry(#[from] RegistryError),
    /// A message's bytes did not become a row.
    #[error("{0}")]
    Decode(#[from] DecodeError),
    /// Creating or widening a table failed.
    #[error("table: {0}")]
    Table(Error),
    /// The DLQ producer did not get an acknowledgement.
    #[error("dead-letter produce: {0}")]
    DeadLetter(Error),
    /// The lake's storage failed.
    #[error("lake storage: {0}")]
    Storage(#[from] crate::lake::store::StoreError),
    /// The lake could not build a segment's files (a schema it cannot map, say).
    #[error("lake: {0}")]
    Lake(String),
    /// An attempt ended with messages neither inserted nor dead-lettered and no failure to show for it.
    #[error("{0} messages are still pending")]
    Unsettled(usize),
}

impl Failure {
    /// A short label for metrics and logs.
    pub fn label(&self) -> &'static str {
        match self {
            Failure::Insert(_) | Failure::Table(_) => "clickhouse",
            Failure::Registry(_) => "registry",
            Failure::Decode(_) => "decode",
            // Not transient: it waits (only its partition) until someone grants the ACL, so it is told apart.
            Failure::DeadLetter(e) if dlq_denied(e) => "dlq_denied",
            Failure::DeadLetter(_) => "dlq",
            Failure::Unsettled(_) => "pending",
            Failure::Storage(_) => "storage",
            Failure::Lake(_) => "lake",
        }
    }
}

/// Whether the DLQ producer was refused by the broker's authorizer (an ACL), which no retry clears by itself.
fn dlq_denied(e: &Error) -> bool {
    use rdkafka::error::{KafkaError, RDKafkaErrorCode};
    matches!(
        e,
        Error::Kafka(KafkaError::MessageProduction(
            RDKafkaErrorCode::TopicAuthorizationFailed
                | RDKafkaErrorCode::ClusterAuthorizationFailed
                | RDKafkaErrorCode::SaslAuthenticationFailed
        ))
    )
}

/// What to do about a [`Failure`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Transient: back off, keep the partitions paused, try the same messages again.
    Retry,
    /// The message is at fault: send it to the DLQ with this class (a multi-row INSERT is bisected first).
    DeadLetter(ErrorClass),
}

/// Decides whether `failure` is retried or its message dead-lettered.
pub fn verdict(failure: &Failure) -> Verdict {
    match failure {
        Failure::Insert(e) => insert_verdict(e),
        Failure::Registry(RegistryError::NotFound(_) | RegistryError::BadSchema(_)) => {
            Verdict::DeadLetter(ErrorClass::UnknownSchema)
        }
        Failure::Registry(RegistryError::Unavailable(_)) => Verdict::Retry,
        Failure::Decode(e) => Verdict::DeadLetter(decode_class(e)),
        Failure::Table(_)
        | Failure::DeadLetter(_)
        | Failure::Unsettled(_)
        | Failure::Storage(_)
        | Failure::Lake(_) => Verdict::Retry,
    }
}

fn decode_class(e: &DecodeError) -> ErrorClass {
    match e {
        DecodeError::Unframed(_) | DecodeError::WriterSchema(_) | DecodeError::Avro(_) => {
            ErrorClass::Undecodable
        }
        DecodeError::TrailingBytes(_) => ErrorClass::Undecodable,
        DecodeError::WrongWriter { .. } => ErrorClass::UnknownSchema,
        DecodeError::ReaderSchema(_) | DecodeError::Unresolvable(_) => ErrorClass::Incompatible,
        DecodeError::Unrepresentable(_) => ErrorClass::Unrepresentable,
    }
}

/// ClickHouse error codes that mean the data, not the server, is wrong.
const BAD_DATA: &[u32] = &[
    6,   // CANNOT_PARSE_TEXT
    26,  // CANNOT_PARSE_QUOTED_STRING
    27,  // CANNOT_PARSE_INPUT_ASSERTION_FAILED
    32,  // ATTEMPT_TO_READ_AFTER_EOF
    33,  // CANNOT_READ_ALL_DATA
    36,  // BAD_ARGUMENTS
    38,  // CANNOT_PARSE_DATE
    41,  // CANNOT_PARSE_DATETIME
    53,  // TYPE_MISMATCH
    69,  // ARGUMENT_OUT_OF_BOUND
    70,  // CANNOT_CONVERT_TYPE
    72,  // CANNOT_PARSE_NUMBER
    117, // INCORRECT_DATA
    128, // TOO_LARGE_ARRAY_SIZE
    131, // TOO_LARGE_STRING_SIZE
    190, // SIZES_OF_ARRAYS_DOESNT_MATCH
    395, // FUNCTION_THROW_IF_VALUE_IS_NON_ZERO
    469, // VIOLATED_CONSTRAINT
    691, // UNKNOWN_ELEMENT_OF_ENUM
];

/// Only codes that say "this data is bad" reject; a network error, a timeout, an overloaded server, and any code
/// not listed (including ones newer servers add) are retried.
pub fn insert_verdict(err: &clickhouse::error::Error) -> Verdict {
    match err {
        clickhouse::error::Error::BadResponse(text) => match clickhouse_code(text) {
            Some(code) if BAD_DATA.contains(&code) => Verdict::DeadLetter(ErrorClass::Rejected),
            _ => Verdict::Retry,
        },
        _ => Verdict::Retry,
    }
}

/// Whether `failure` is a refusal of the block's shape rather than of any row in it: its halves, inserted on their
/// own, can land. Today that is one: more partitions in one INSERT block than the server's
/// `max_partitions_per_insert_block` (100 by default since 19.x; a backfill spanning years of months hits it).
/// It shares code 252 with "too many parts", which is the server's and waits, so the text decides.
pub fn is_block_shape(failure: &Failure) -> bool {
    match failure {
        Failure::Insert(clickhouse::error::Error::BadResponse(text)) => {
            clickhouse_code(text) == Some(252)
                && text.contains("Too many partitions for single INSERT block")
        }
        _ => false,
    }
}

/// The `Code: N` of a ClickHouse exception text, if any (18.16 writes `Code: N,`, current servers `Code: N.`).
pub fn clickhouse_code(text: &str) -> Option<u32> {
    let rest = &text[text.find("Code: ")? + "Code: ".len()..];
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use clickhouse::error::Error as ChError;

    fn bad(text: &str) -> Failure {
        Failure::Insert(ChError::BadResponse(text.to_owned()))
    }

    const REJECTED: Verdict = Verdict::DeadLetter(ErrorClass::Rejected);

    #[test]
    fn a_dlq_the_consumer_may_not_write_waits_under_a_label_of_its_own() {
        use rdkafka::error::{KafkaError, RDKafkaErrorCode};
        let produce = |code| Failure::DeadLetter(Error::Kafka(KafkaError::MessageProduction(code)));
        let denied = produce(RDKafkaErrorCode::TopicAuthorizationFailed);
        assert_eq!(
            verdict(&denied),
            Verdict::Retry,
            "never dead-letter a letter"
        );
        assert_eq!(denied.label(), "dlq_denied");
        assert_eq!(produce(RDKafkaErrorCode::RequestTimedOut).label(), "dlq");
    }

    #[test]
    fn clickhouse_failures() {
        let cases: Vec<(Failure, Verdict)> = vec![
            (
                bad(
                    "Code: 395, e.displayText() = DB::Exception: Value passed to 'throwIf' function is non zero",
                ),
                REJECTED,
            ),
            (
                bad("Code: 53. DB::Exception: Type mismatch (TYPE_MISMATCH) (version 24.3)"),
                REJECTED,
            ),
            (bad("Code: 117. DB::Exception: Incorrect data"), REJECTED),
            (
                bad("Code: 27, e.displayText() = DB::Exception: Cannot parse input"),
                REJECTED,
            ),
            (bad("Code: 6. DB::Exception: Cannot parse text"), REJECTED),
            (
                bad("Code: 33, e.displayText() = DB::Exception: Cannot read all data"),
                REJECTED,
            ),
            (
                bad("Code: 252. DB::Exception: Too many parts (TOO_MANY_PARTS)"),
                Verdict::Retry,
            ),
            (
                bad("Code: 159. DB::Exception: Timeout exceeded (TIMEOUT_EXCEEDED)"),
                Verdict::Retry,
            ),
            (
                bad("Code: 241. DB::Exception: Memory limit exceeded"),
                Verdict::Retry,
            ),
            (
                bad("Code: 202. DB::Exception: Too many simultaneous queries"),
                Verdict::Retry,
            ),
            (
                bad("Code: 60. DB::Exception: Table sluice.events doesn't exist"),
                Verdict::Retry,
            ),
            (
                bad("Code: 516. DB::Exception: default: Authentication failed"),
                Verdict::Retry,
            ),
            (bad("Code: 999999. something new"), Verdict::Retry),
            (bad("HTTP 502 Bad Gateway"), Verdict::Retry),
            (
                Failure::Insert(ChError::Network("connection refused".into())),
                Verdict::Retry,
            ),
            (Failure::Insert(ChError::TimedOut), Verdict::Retry),
        ];
        for (failure, want) in cases {
            assert_eq!(verdict(&failure), want, "{failure}");
        }
    }

    #[test]
    fn too_many_partitions_is_the_blocks_shape_and_too_many_parts_is_not() {
        let partitions = bad(
            "Code: 252. DB::Exception: Too many partitions for single INSERT block (more than 100). The limit is \
             controlled by 'max_partitions_per_insert_block' setting. (TOO_MANY_PARTS) (version 26.9.2.1)",
        );
        assert!(is_block_shape(&partitions));
        // Never a letter on its own: a block that cannot be split further waits.
        assert_eq!(verdict(&partitions), Verdict::Retry);
        assert!(!is_block_shape(&bad(
            "Code: 252. DB::Exception: Too many parts (300). Merges are processing significantly slower than inserts"
        )));
        assert!(!is_block_shape(&bad("Code: 53. Type mismatch")));
    }

    #[test]
    fn registry_failures() {
        let unknown = Verdict::DeadLetter(ErrorClass::UnknownSchema);
        assert_eq!(
            verdict(&RegistryError::NotFound("schema id 9".into()).into()),
            unknown
        );
        assert_eq!(
            verdict(&RegistryError::BadSchema("id 9: bad".into()).into()),
            unknown
        );
        assert_eq!(
            verdict(&RegistryError::Unavailable("refused".into()).into()),
            Verdict::Retry
        );
    }

    #[test]
    fn decode_failures_dead_letter_by_class() {
        let cases = [
            (
                DecodeError::Unframed("short".into()),
                ErrorClass::Undecodable,
            ),
            (DecodeError::Avro("eof".into()), ErrorClass::Undecodable),
            (DecodeError::TrailingBytes(3), ErrorClass::Undecodable),
            (
                DecodeError::WrongWriter {
                    framed: 2,
                    decoder: 1,
                },
                ErrorClass::UnknownSchema,
            ),
            (
                DecodeError::Unresolvable("x".into()),
                ErrorClass::Incompatible,
            ),
            (
                DecodeError::Unrepresentable("1969".into()),
                ErrorClass::Unrepresentable,
            ),
        ];
        for (e, class) in cases {
            assert_eq!(verdict(&e.into()), Verdict::DeadLetter(class));
        }
    }

    #[test]
    fn our_side_is_always_retried() {
        let kafka = || Error::Kafka(rdkafka::error::KafkaError::Canceled);
        assert_eq!(verdict(&Failure::DeadLetter(kafka())), Verdict::Retry);
        assert_eq!(
            verdict(&Failure::Table(Error::Mapping("x".into()))),
            Verdict::Retry
        );
    }

    #[test]
    fn codes_are_parsed_from_both_server_generations() {
        assert_eq!(clickhouse_code("Code: 395, e.displayText() = x"), Some(395));
        assert_eq!(
            clickhouse_code("bad response: Code: 53. DB::Exception"),
            Some(53)
        );
        assert_eq!(clickhouse_code("no code"), None);
    }
}
