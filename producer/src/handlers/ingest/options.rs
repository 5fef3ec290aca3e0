//! What a request asks for beyond its events, from its URL (or a header, for clients that cannot change the URL):
//! `?wait=kafka|clickhouse|lake` (`Sluice-Wait`) and `?partial=true`. Shared by the native and Segment routes.

use std::collections::HashMap;

use axum::extract::Query;
use axum::http::{HeaderMap, Uri};

use crate::committed::WaitFor;
use crate::error::ApiError;

/// The header that asks the same as `?wait=`.
pub const WAIT_HEADER: &str = "sluice-wait";

/// A request's options.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Options {
    /// What the answer waits for (`?wait=`, else `Sluice-Wait`, else Kafka's acknowledgement).
    pub(crate) wait: WaitFor,
    /// `?partial=true`: write the valid events of a batch and name the invalid ones, instead of all-or-nothing.
    pub(crate) partial: bool,
}

impl Options {
    /// Reads the options of a request; an unknown value is the client's mistake (400 `bad_query`).
    pub(crate) fn of(headers: &HeaderMap, uri: &Uri) -> Result<Self, ApiError> {
        let query = Query::<HashMap<String, String>>::try_from_uri(uri)
            .map(|Query(q)| q)
            .unwrap_or_default();
        let header = headers
            .get(WAIT_HEADER)
            .map(|v| v.to_str().map(str::to_owned));
        let wait = match (query.get("wait"), header) {
            (Some(q), _) => parse_wait(q)?,
            (None, Some(Ok(h))) => parse_wait(&h)?,
            (None, Some(Err(_))) => {
                return Err(ApiError::BadQuery(
                    "Sluice-Wait must be kafka, clickhouse or lake".into(),
                ));
            }
            (None, None) => WaitFor::Kafka,
        };
        let partial = match query.get("partial").map(|v| v.trim().to_ascii_lowercase()) {
            None => false,
            Some(v) if v == "true" || v == "1" => true,
            Some(v) if v == "false" || v == "0" || v.is_empty() => false,
            Some(v) => {
                return Err(ApiError::BadQuery(format!(
                    "partial must be true or false, not {v:?}"
                )));
            }
        };
        Ok(Self { wait, partial })
    }
}

fn parse_wait(v: &str) -> Result<WaitFor, ApiError> {
    WaitFor::parse(v).ok_or_else(|| {
        ApiError::BadQuery(format!("wait must be kafka, clickhouse or lake, not {v:?}"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn of(uri: &str, headers: &HeaderMap) -> Result<Options, ApiError> {
        Options::of(headers, &uri.parse().expect("uri"))
    }

    #[test]
    fn the_query_wins_over_the_header_and_bad_values_are_400() {
        let mut headers = HeaderMap::new();
        let wait = |r: Result<Options, ApiError>| r.ok().map(|o| o.wait);
        assert_eq!(
            wait(of("/v1/streams/e/events?wait=clickhouse", &headers)),
            Some(WaitFor::ClickHouse)
        );
        headers.insert(WAIT_HEADER, "lake".parse().expect("value"));
        assert_eq!(
            wait(of("/v1/streams/e/events?wait=clickhouse", &headers)),
            Some(WaitFor::ClickHouse)
        );
        assert_eq!(wait(of("/v1/batch", &headers)), Some(WaitFor::Lake));
        assert_eq!(
            of("/v1/batch", &HeaderMap::new()).ok(),
            Some(Options {
                wait: WaitFor::Kafka,
                partial: false
            })
        );
        for bad in ["/v1/batch?wait=postgres", "/v1/batch?partial=maybe"] {
            let err = of(bad, &HeaderMap::new()).expect_err("refused");
            assert_eq!(err.code(), "bad_query", "{bad}");
        }
        assert!(of("/v1/batch?partial=true", &HeaderMap::new()).is_ok_and(|o| o.partial));
    }
}
