//! `?wait=clickhouse|lake` (or the `Sluice-Wait` header, for clients that cannot change the URL): after Kafka's
//! acknowledgement, a request waits until the consumer group has committed past every one of its events, then
//! answers 200; at `wait.timeout_ms` it answers 202 naming the events still pending. Either way the events are safe
//! in Kafka: the wait only tells the client when they can be queried.

use std::collections::HashMap;

use axum::extract::Query;
use axum::http::{HeaderMap, Uri};
use serde::Serialize;
use tokio::time::Instant;

use crate::committed::WaitFor;
use crate::error::ApiError;
use crate::handlers::AppState;
use crate::sink::Position;

/// The header that asks the same as `?wait=`.
pub const WAIT_HEADER: &str = "sluice-wait";

/// What the request asks to wait for: `?wait=` first, then the `Sluice-Wait` header, else Kafka's acknowledgement.
pub(crate) fn requested(headers: &HeaderMap, uri: &Uri) -> Result<WaitFor, ApiError> {
    let query = Query::<HashMap<String, String>>::try_from_uri(uri)
        .map(|Query(q)| q.get("wait").cloned())
        .unwrap_or_default();
    let header = headers
        .get(WAIT_HEADER)
        .map(|v| v.to_str().map(str::to_owned));
    let asked = match (query, header) {
        (Some(q), _) => q,
        (None, Some(Ok(h))) => h,
        (None, Some(Err(_))) => return Err(bad_wait("a Sluice-Wait header that is not text")),
        (None, None) => return Ok(WaitFor::Kafka),
    };
    WaitFor::parse(&asked).ok_or_else(|| bad_wait(&format!("{asked:?}")))
}

fn bad_wait(what: &str) -> ApiError {
    ApiError::BadWait(format!(
        "wait must be kafka, clickhouse or lake, not {what}"
    ))
}

/// An event not yet committed past when the wait ended.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Pending {
    /// Its position in the request.
    pub index: usize,
    /// Its id, when the stream has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event_id: Option<String>,
}

/// Waits for `what` to commit past `positions` (one per event, in request order), within `wait.timeout_ms`; the
/// events still pending when it ends (none when every one landed). A request beyond `wait.max_waiting` does not
/// wait: all its events are pending.
pub(crate) async fn land(
    app: &AppState,
    what: WaitFor,
    topic: &str,
    positions: &[Position],
    event_ids: &[String],
) -> Vec<Pending> {
    let pending_all = |landed: &[bool]| -> Vec<Pending> {
        (0..positions.len())
            .filter(|i| !landed.get(*i).copied().unwrap_or(false))
            .map(|index| Pending {
                index,
                event_id: event_ids.get(index).cloned(),
            })
            .collect()
    };
    let Some(watch) = app.waits.watch(what) else {
        return Vec::new();
    };
    let Ok(_slot) = app.waits.slots.clone().try_acquire_owned() else {
        return pending_all(&[]);
    };
    let started = Instant::now();
    // Counted down however the wait ends, a client hanging up included.
    let _waiting = Waiting::count(&app.metrics.waiting);
    let landed = watch
        .wait(topic, positions, started + app.waits.timeout)
        .await;
    let pending = pending_all(&landed);
    let outcome = if pending.is_empty() {
        "landed"
    } else {
        "timed_out"
    };
    app.metrics
        .wait_seconds
        .with_label_values(&[what.label(), outcome])
        .observe(started.elapsed().as_secs_f64());
    pending
}

/// One waiting request in `sluice_producer_waiting_requests`, for as long as it lives.
struct Waiting<'a>(&'a prometheus::IntGauge);

impl<'a> Waiting<'a> {
    fn count(gauge: &'a prometheus::IntGauge) -> Self {
        gauge.inc();
        Self(gauge)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_query_wins_over_the_header_and_bad_values_are_400() {
        let uri: Uri = "/v1/streams/events/events?wait=clickhouse"
            .parse()
            .expect("uri");
        let mut headers = HeaderMap::new();
        assert_eq!(requested(&headers, &uri).ok(), Some(WaitFor::ClickHouse));
        headers.insert(WAIT_HEADER, "lake".parse().expect("value"));
        assert_eq!(requested(&headers, &uri).ok(), Some(WaitFor::ClickHouse));
        let plain: Uri = "/v1/batch".parse().expect("uri");
        assert_eq!(requested(&headers, &plain).ok(), Some(WaitFor::Lake));
        assert_eq!(
            requested(&HeaderMap::new(), &plain).ok(),
            Some(WaitFor::Kafka)
        );
        let bad: Uri = "/v1/batch?wait=postgres".parse().expect("uri");
        let err = requested(&HeaderMap::new(), &bad).expect_err("refused");
        assert_eq!(err.code(), "bad_wait");
    }
}
