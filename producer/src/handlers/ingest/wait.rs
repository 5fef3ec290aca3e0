//! `?wait=clickhouse|lake` (or the `Sluice-Wait` header, for clients that cannot change the URL): after Kafka's
//! acknowledgement, a request waits until the consumer group has committed past every one of its events, then
//! answers 200; at `wait.timeout_ms` it answers 202 naming the events still pending. Either way the events are safe
//! in Kafka: the wait only tells the client when they can be queried.

use serde::Serialize;
use tokio::time::Instant;

use crate::committed::WaitFor;
use crate::handlers::AppState;
use crate::sink::Position;

/// An event not yet committed past when the wait ended.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Pending {
    /// Its position in the request.
    pub index: usize,
    /// Its id, when the stream has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event_id: Option<String>,
}

/// Waits for `what` to commit past `positions` (one per record, in request order), within `wait.timeout_ms`; the
/// events still pending when it ends (none when every one landed). `event_ids` are the records' ids and `indexes`
/// their places in the request when some events were left out (`?partial=true`). A request beyond
/// `wait.max_waiting` does not wait: all its events are pending.
pub(crate) async fn land(
    app: &AppState,
    what: WaitFor,
    topic: &str,
    positions: &[Position],
    (event_ids, indexes): (&[String], Option<&[usize]>),
) -> Vec<Pending> {
    let pending_all = |landed: &[bool]| -> Vec<Pending> {
        (0..positions.len())
            .filter(|i| !landed.get(*i).copied().unwrap_or(false))
            .map(|i| Pending {
                index: indexes.and_then(|x| x.get(i).copied()).unwrap_or(i),
                event_id: event_ids.get(i).cloned(),
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
