//! Capped exponential backoff with equal jitter, shared by every retry loop: the consumer's flush, the
//! producer's registry registration and topic creation.

use std::time::Duration;

use rand::Rng;

/// Each delay is between half and all of `min(max, initial * 2^n)`, so retries spread out instead of arriving
/// in lockstep, and never wait less than half the nominal delay.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    attempt: u32,
}

impl Backoff {
    /// A fresh backoff starting at `initial` and growing to `max`.
    pub fn new(initial: Duration, max: Duration) -> Self {
        Self {
            initial,
            max: max.max(initial),
            attempt: 0,
        }
    }

    /// Delays handed out so far.
    pub fn attempts(&self) -> u32 {
        self.attempt
    }

    /// The delay before the next attempt.
    pub fn next_delay(&mut self) -> Duration {
        let factor = 1u32.checked_shl(self.attempt.min(20)).unwrap_or(u32::MAX);
        self.attempt = self.attempt.saturating_add(1);
        let ceiling = self.initial.saturating_mul(factor).min(self.max);
        let half = ceiling / 2;
        let jitter_ms = rand::rng().random_range(0..=(ceiling - half).as_millis() as u64);
        half + Duration::from_millis(jitter_ms)
    }
}

/// Sleeps until `deadline`; with none, forever (a `select!` branch for a timer that may not be set).
pub async fn sleep_until_some(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_to_the_cap_with_jitter() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(1_000));
        let delays: Vec<Duration> = (0..8).map(|_| b.next_delay()).collect();
        let within = |d: Duration, lo: u64, hi: u64| {
            d >= Duration::from_millis(lo) && d <= Duration::from_millis(hi)
        };
        assert!(within(delays[0], 50, 100), "{delays:?}");
        assert!(within(delays[2], 200, 400), "{delays:?}");
        for d in &delays[4..] {
            assert!(within(*d, 500, 1_000), "{delays:?}");
        }
        assert_eq!(b.attempts(), 8);
    }

    #[test]
    fn a_cap_below_the_start_is_the_start() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(10));
        let d = b.next_delay();
        assert!(d >= Duration::from_millis(50) && d <= Duration::from_millis(100));
    }
}
