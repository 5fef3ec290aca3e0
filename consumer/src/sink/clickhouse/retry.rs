//! Retry or dead-letter: the one place that decides what a ClickHouse failure means, and the backoff between tries.
//!
//! Only codes that say "this data is bad" reject (and then the batch is bisected down to the rows at fault); a
//! network error, a timeout, an overloaded server, and any code not listed here are retried, because sending good
//! rows to the DLQ is worse than waiting.

use std::time::Duration;

use rand::Rng;

use crate::config::RetrySettings;

/// What to do about a failed INSERT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Transient: back off, keep the partitions paused, try the same rows again.
    Retry,
    /// The rows are at fault: bisect to find them and dead-letter them.
    Reject,
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

/// The `Code: N` of a ClickHouse exception text, if any.
pub fn clickhouse_code(text: &str) -> Option<u32> {
    let rest = &text[text.find("Code: ")? + "Code: ".len()..];
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// Decides whether a failed INSERT is retried or its rows rejected.
pub fn classify(err: &clickhouse::error::Error) -> Action {
    match err {
        clickhouse::error::Error::BadResponse(text) => match clickhouse_code(text) {
            Some(code) if BAD_DATA.contains(&code) => Action::Reject,
            _ => Action::Retry,
        },
        _ => Action::Retry,
    }
}

/// Capped exponential backoff with equal jitter: each delay is between half and all of `min(max, initial * 2^n)`.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    attempt: u32,
}

impl Backoff {
    /// A fresh backoff.
    pub fn new(settings: &RetrySettings) -> Self {
        Self {
            initial: Duration::from_millis(settings.initial_backoff_ms),
            max: Duration::from_millis(settings.max_backoff_ms),
            attempt: 0,
        }
    }

    /// Attempts made so far.
    pub fn attempts(&self) -> u32 {
        self.attempt
    }

    /// The delay before the next attempt.
    pub fn next_delay(&mut self) -> Duration {
        let factor = 1u32.checked_shl(self.attempt.min(20)).unwrap_or(u32::MAX);
        self.attempt = self.attempt.saturating_add(1);
        let ceiling = self.initial.saturating_mul(factor).min(self.max);
        let half = ceiling / 2;
        let jitter_ms = rand::rng().random_range(0..=half.as_millis() as u64);
        half + Duration::from_millis(jitter_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clickhouse::error::Error;

    fn bad(text: &str) -> Error {
        Error::BadResponse(text.to_owned())
    }

    #[test]
    fn classify_table() {
        let cases: Vec<(Error, Action)> = vec![
            (
                bad(
                    "Code: 395, e.displayText() = DB::Exception: Value passed to 'throwIf' function is non zero",
                ),
                Action::Reject,
            ),
            (
                bad("Code: 53. DB::Exception: Type mismatch (TYPE_MISMATCH) (version 24.3)"),
                Action::Reject,
            ),
            (
                bad("Code: 117. DB::Exception: Incorrect data"),
                Action::Reject,
            ),
            (
                bad("Code: 27, e.displayText() = DB::Exception: Cannot parse input"),
                Action::Reject,
            ),
            (
                bad("Code: 6. DB::Exception: Cannot parse text"),
                Action::Reject,
            ),
            (
                bad("Code: 33, e.displayText() = DB::Exception: Cannot read all data"),
                Action::Reject,
            ),
            (
                bad("Code: 252. DB::Exception: Too many parts (TOO_MANY_PARTS)"),
                Action::Retry,
            ),
            (
                bad("Code: 159. DB::Exception: Timeout exceeded (TIMEOUT_EXCEEDED)"),
                Action::Retry,
            ),
            (
                bad("Code: 241. DB::Exception: Memory limit exceeded"),
                Action::Retry,
            ),
            (
                bad("Code: 202. DB::Exception: Too many simultaneous queries"),
                Action::Retry,
            ),
            (
                bad("Code: 60. DB::Exception: Table sluice.events doesn't exist"),
                Action::Retry,
            ),
            (
                bad("Code: 516. DB::Exception: default: Authentication failed"),
                Action::Retry,
            ),
            (bad("Code: 999999. something new"), Action::Retry),
            (bad("HTTP 502 Bad Gateway"), Action::Retry),
            (Error::Network("connection refused".into()), Action::Retry),
            (Error::TimedOut, Action::Retry),
        ];
        for (err, want) in cases {
            assert_eq!(classify(&err), want, "{err}");
        }
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

    #[test]
    fn backoff_grows_to_the_cap_with_jitter() {
        let mut b = Backoff::new(&RetrySettings {
            initial_backoff_ms: 100,
            max_backoff_ms: 1_000,
        });
        let delays: Vec<Duration> = (0..8).map(|_| b.next_delay()).collect();
        assert!(
            delays[0] >= Duration::from_millis(50) && delays[0] <= Duration::from_millis(100),
            "{delays:?}"
        );
        assert!(
            delays[2] >= Duration::from_millis(200) && delays[2] <= Duration::from_millis(400),
            "{delays:?}"
        );
        for d in &delays[4..] {
            assert!(
                *d >= Duration::from_millis(500) && *d <= Duration::from_millis(1_000),
                "{delays:?}"
            );
        }
        assert_eq!(b.attempts(), 8);
    }
}
