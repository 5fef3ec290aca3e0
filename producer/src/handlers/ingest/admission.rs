//! The in-flight budget: permits for request bytes and for events, taken without waiting (a request that does not
//! fit is a 429, not a queue) and mirrored in the in-flight gauges for as long as they are held.

use std::sync::Arc;

use prometheus::IntGauge;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::ApiError;
use crate::handlers::AppState;

/// What a body of unknown length reserves before its first byte arrives.
const INITIAL_RESERVE_BYTES: usize = 16 * 1024;

/// Permits held for the life of a request, mirrored in a gauge.
pub(crate) struct Held {
    permit: OwnedSemaphorePermit,
    sem: Arc<Semaphore>,
    gauge: IntGauge,
    what: &'static str,
    n: usize,
}

/// Reserves bytes for a body: its declared length up front, or a small start for a body of unknown size (chunked,
/// or compressed) that [`Held::grow`] extends as it arrives.
pub(crate) fn reserve_body(
    app: &AppState,
    content_length: Option<usize>,
) -> Result<Held, ApiError> {
    Held::try_new(
        &app.bytes_in_flight,
        initial_reserve(app, content_length),
        &app.metrics.in_flight_bytes,
        "bytes",
    )
}

/// [`reserve_body`] for a request not authenticated yet (its key is in the body): from the small budget of its
/// own, so such requests cannot starve the ones that authenticated from their headers.
pub(crate) fn reserve_unkeyed_body(
    app: &AppState,
    content_length: Option<usize>,
) -> Result<Held, ApiError> {
    Held::try_new(
        &app.unkeyed_bytes_in_flight,
        initial_reserve(app, content_length),
        &app.metrics.in_flight_unkeyed_bytes,
        "unkeyed bytes",
    )
}

fn initial_reserve(app: &AppState, content_length: Option<usize>) -> usize {
    content_length
        .unwrap_or(INITIAL_RESERVE_BYTES)
        .clamp(1, app.limits.max_body_bytes)
}

/// Reserves one permit per event of a batch.
pub(crate) fn admit_events(app: &AppState, n: usize) -> Result<Held, ApiError> {
    Held::try_new(
        &app.events_in_flight,
        n,
        &app.metrics.in_flight_events,
        "events",
    )
}

impl Held {
    /// Takes `n` permits from `sem`, or fails with 429 when they are not free.
    fn try_new(
        sem: &Arc<Semaphore>,
        n: usize,
        gauge: &IntGauge,
        what: &'static str,
    ) -> Result<Self, ApiError> {
        let n32 = u32::try_from(n).map_err(|_| ApiError::Overloaded(what))?;
        let permit = sem
            .clone()
            .try_acquire_many_owned(n32)
            .map_err(|_| ApiError::Overloaded(what))?;
        gauge.add(n as i64);
        Ok(Self {
            permit,
            sem: sem.clone(),
            gauge: gauge.clone(),
            what,
            n,
        })
    }

    /// How many permits are held.
    pub(crate) fn count(&self) -> usize {
        self.n
    }

    /// Takes `more` permits on top of those held, or fails with 429 when they are not free.
    pub(crate) fn grow(&mut self, more: usize) -> Result<(), ApiError> {
        let n32 = u32::try_from(more).map_err(|_| ApiError::Overloaded(self.what))?;
        let extra = self
            .sem
            .clone()
            .try_acquire_many_owned(n32)
            .map_err(|_| ApiError::Overloaded(self.what))?;
        self.permit.merge(extra);
        self.gauge.add(more as i64);
        self.n += more;
        Ok(())
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.gauge.sub(self.n as i64);
    }
}
