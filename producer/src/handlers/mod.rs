//! Request handlers and the state they share.

pub mod ingest;
pub mod openapi;
pub mod segment;
#[cfg(test)]
pub(crate) mod tests;

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::Semaphore;

use crate::auth::{KeyRing, Keys};
use crate::committed::Waits;
use crate::config::Limits;
use crate::idempotency::Ledger;
use crate::metrics::Metrics;
use crate::sink::EventSink;
use crate::stream::Stream;

/// What every request handler reads.
pub struct AppState {
    /// Streams by name.
    pub streams: HashMap<String, Arc<Stream>>,
    /// Ingestion keys (reloadable).
    pub keys: KeyRing,
    /// Where events go.
    pub sink: Arc<dyn EventSink>,
    /// Request bounds.
    pub limits: Limits,
    /// Metric handles.
    pub metrics: Metrics,
    /// Permits for events in flight (one per event).
    pub events_in_flight: Arc<Semaphore>,
    /// Permits for request bytes in flight (one per byte).
    pub bytes_in_flight: Arc<Semaphore>,
    /// Permits for the bytes of requests whose key is only in their body.
    pub unkeyed_bytes_in_flight: Arc<Semaphore>,
    /// Which body each recent `Idempotency-Key` came with.
    pub idempotency: Ledger,
    /// The consumer groups `?wait=` may wait on.
    pub waits: Waits,
}

impl AppState {
    /// State with semaphores sized from `limits`.
    pub fn new(
        streams: HashMap<String, Arc<Stream>>,
        keys: Keys,
        sink: Arc<dyn EventSink>,
        limits: Limits,
        metrics: Metrics,
    ) -> Self {
        let events_in_flight = Arc::new(Semaphore::new(limits.max_in_flight_events));
        let bytes_in_flight = Arc::new(Semaphore::new(limits.max_in_flight_bytes));
        let unkeyed_bytes_in_flight = Arc::new(Semaphore::new(limits.max_unkeyed_in_flight_bytes));
        let idempotency = Ledger::new(
            std::time::Duration::from_secs(limits.idempotency_window_secs),
            limits.max_idempotency_keys,
        );
        Self {
            streams,
            keys: KeyRing::new(keys),
            sink,
            limits,
            metrics,
            events_in_flight,
            bytes_in_flight,
            unkeyed_bytes_in_flight,
            idempotency,
            waits: Waits::none(),
        }
    }
}
