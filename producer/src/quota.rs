//! Fair shares between tenants: each ingestion key's events/s and bytes/s token buckets (GCRA, `governor`) and its
//! share of the in-flight event budget, so one tenant offered far more than its share gets 429s while the others
//! keep their latency and their 202s.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::config::{KeyConfig, Limits};
use crate::error::ApiError;

type Bucket = RateLimiter<NotKeyed, InMemoryState, DefaultClock, StateInformationMiddleware>;

/// One rate: its bucket and its configured rate per second.
struct Rate {
    per_second: u32,
    bucket: Bucket,
}

impl Rate {
    /// A bucket of `per_second`, bursting to `burst` (at least one whole request must fit).
    fn new(per_second: u32, burst: usize) -> Option<Self> {
        let rate = NonZeroU32::new(per_second)?;
        let burst = NonZeroU32::new(u32::try_from(burst).unwrap_or(u32::MAX).max(per_second))?;
        let bucket = RateLimiter::direct(Quota::per_second(rate).allow_burst(burst))
            .with_middleware::<StateInformationMiddleware>();
        Some(Self { per_second, bucket })
    }

    /// Takes `n` tokens, or says when they will be there.
    fn take(&self, n: usize, what: &'static str) -> Result<(), ApiError> {
        let Some(n32) = u32::try_from(n).ok().and_then(NonZeroU32::new) else {
            return Ok(());
        };
        let refused = |wait: Duration| ApiError::QuotaExceeded {
            what,
            limit: self.per_second,
            retry_after: wait,
        };
        match self.bucket.check_n(n32) {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(not_until)) => Err(refused(
                not_until.wait_time_from(DefaultClock::default().now()),
            )),
            // More than the burst at once: it can never pass whole.
            Err(_) => Err(refused(Duration::from_secs(1))),
        }
    }
}

/// A key's quotas.
pub struct KeyQuota {
    events: Option<Rate>,
    bytes: Option<Rate>,
    /// Its share of `limits.max_in_flight_events`.
    in_flight: Arc<Semaphore>,
    in_flight_limit: usize,
}

impl std::fmt::Debug for KeyQuota {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyQuota")
            .field(
                "events_per_second",
                &self.events.as_ref().map(|r| r.per_second),
            )
            .field(
                "bytes_per_second",
                &self.bytes.as_ref().map(|r| r.per_second),
            )
            .field("in_flight_limit", &self.in_flight_limit)
            .finish()
    }
}

impl KeyQuota {
    /// The quotas `key` sets, with `limits`' defaults.
    pub fn new(key: &KeyConfig, limits: &Limits) -> Self {
        let share = key.in_flight_share.unwrap_or(limits.key_in_flight_share);
        let in_flight_limit = ((limits.max_in_flight_events as f64 * share).ceil() as usize)
            .clamp(limits.max_batch_events, limits.max_in_flight_events);
        Self {
            events: key
                .events_per_second
                .and_then(|r| Rate::new(r, limits.max_batch_events)),
            bytes: key
                .bytes_per_second
                .and_then(|r| Rate::new(r, limits.max_body_bytes)),
            in_flight: Arc::new(Semaphore::new(in_flight_limit)),
            in_flight_limit,
        }
    }

    /// Takes `n` events from the key's rate and its share of the in-flight budget (held as long as the permit).
    pub fn admit_events(&self, n: usize) -> Result<OwnedSemaphorePermit, ApiError> {
        let n32 = u32::try_from(n).map_err(|_| ApiError::Overloaded("events"))?;
        let permit = self
            .in_flight
            .clone()
            .try_acquire_many_owned(n32)
            .map_err(|_| ApiError::QuotaExceeded {
                what: "in-flight events",
                limit: u32::try_from(self.in_flight_limit).unwrap_or(u32::MAX),
                retry_after: Duration::from_secs(1),
            })?;
        if let Some(rate) = &self.events {
            rate.take(n, "events per second")?;
        }
        Ok(permit)
    }

    /// Takes a body's bytes from the key's byte rate.
    pub fn admit_bytes(&self, n: usize) -> Result<(), ApiError> {
        match &self.bytes {
            Some(rate) => rate.take(n, "bytes per second"),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(events_per_second: Option<u32>, share: Option<f64>) -> KeyConfig {
        KeyConfig {
            tenant: "t".into(),
            streams: vec!["*".into()],
            events_per_second,
            in_flight_share: share,
            ..KeyConfig::default()
        }
    }

    #[test]
    fn a_key_over_its_rate_is_told_when_to_come_back() {
        let limits = Limits {
            max_batch_events: 10,
            ..Limits::default()
        };
        let q = KeyQuota::new(&key(Some(100), None), &limits);
        // The burst (one second's worth) passes, the next batch waits.
        for _ in 0..10 {
            assert!(q.admit_events(10).is_ok());
        }
        match q.admit_events(10) {
            Err(ApiError::QuotaExceeded {
                limit, retry_after, ..
            }) => {
                assert_eq!(limit, 100);
                assert!(retry_after > Duration::ZERO && retry_after <= Duration::from_millis(100));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_key_holds_at_most_its_share_of_the_in_flight_budget() {
        let limits = Limits {
            max_batch_events: 10,
            max_in_flight_events: 100,
            ..Limits::default()
        };
        let q = KeyQuota::new(&key(None, Some(0.3)), &limits);
        let held: Vec<_> = (0..3)
            .map(|_| q.admit_events(10).expect("within"))
            .collect();
        assert!(matches!(
            q.admit_events(10),
            Err(ApiError::QuotaExceeded { .. })
        ));
        drop(held);
        assert!(q.admit_events(10).is_ok(), "released with the requests");
    }
}
