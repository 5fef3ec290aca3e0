//! `Idempotency-Key`: which body a key was first used with, so a key reused with a different body is refused
//! (422, Stripe's convention) instead of quietly standing for other events.
//!
//! Two layers keep that true. The event ids a key mints are derived from the key *and* the body's digest, so even
//! a producer replica that never saw the first request cannot give a different body the first body's ids: at
//! worst both land. The ledger here, one per replica, turns the reuse it can see into a 422. It remembers each key
//! for `limits.idempotency_window_secs` and at most `limits.max_idempotency_keys` keys, oldest forgotten first.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use crate::error::ApiError;

/// A SHA-256 digest.
pub type Digest32 = [u8; 32];

/// A request's `Idempotency-Key` with the digest of the events it came with.
#[derive(Debug, Clone)]
pub struct Idempotency {
    /// The key as the client sent it (trimmed).
    pub key: String,
    /// The digest of the request's events as sent (see [`body_digest`]).
    pub body: Digest32,
}

/// The digest of a body's bytes, the form every route hashes what identifies its events.
pub fn body_digest<'a>(parts: impl IntoIterator<Item = &'a [u8]>) -> Digest32 {
    let mut h = Sha256::new();
    for part in parts {
        // Length-prefixed, so the split between parts counts: ["ab","c"] and ["a","bc"] differ.
        h.update((part.len() as u64).to_be_bytes());
        h.update(part);
    }
    h.finalize().into()
}

/// Keys seen recently on this replica, each with the body it was first used with.
pub struct Ledger {
    window: Duration,
    capacity: usize,
    inner: Mutex<Entries>,
}

#[derive(Default)]
struct Entries {
    /// Key (tenant, stream, key hashed together) → (body digest, when first seen).
    by_key: HashMap<Digest32, (Digest32, Instant)>,
    /// Keys in the order they were first seen: the window and the capacity both forget from the front.
    order: VecDeque<(Digest32, Instant)>,
}

impl Ledger {
    /// A ledger that remembers keys for `window`, at most `capacity` of them (0 turns the check off).
    pub fn new(window: Duration, capacity: usize) -> Self {
        Self {
            window,
            capacity,
            inner: Mutex::new(Entries::default()),
        }
    }

    /// Records `idem` for `tenant`'s `stream`, or refuses it when the key was used with another body within the
    /// window.
    pub fn claim(&self, tenant: &str, stream: &str, idem: &Idempotency) -> Result<(), ApiError> {
        self.claim_at(tenant, stream, idem, Instant::now())
    }

    fn claim_at(
        &self,
        tenant: &str,
        stream: &str,
        idem: &Idempotency,
        now: Instant,
    ) -> Result<(), ApiError> {
        if self.capacity == 0 {
            return Ok(());
        }
        let id = body_digest([tenant.as_bytes(), stream.as_bytes(), idem.key.as_bytes()]);
        // A poisoned lock only means another request panicked mid-update; the map is still usable.
        let mut e = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        e.forget_before(now.checked_sub(self.window));
        match e.by_key.get(&id) {
            Some((body, _)) if *body == idem.body => Ok(()),
            Some(_) => Err(ApiError::IdempotencyKeyReused(idem.key.clone())),
            None => {
                while e.order.len() >= self.capacity {
                    let Some((old, _)) = e.order.pop_front() else {
                        break;
                    };
                    e.by_key.remove(&old);
                }
                e.by_key.insert(id, (idem.body, now));
                e.order.push_back((id, now));
                Ok(())
            }
        }
    }

    /// How many keys are remembered now.
    pub fn len(&self) -> usize {
        self.inner.lock().map(|e| e.by_key.len()).unwrap_or(0)
    }

    /// Whether no key is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Entries {
    fn forget_before(&mut self, cutoff: Option<Instant>) {
        let Some(cutoff) = cutoff else { return };
        while let Some((id, at)) = self.order.front().copied() {
            if at >= cutoff {
                break;
            }
            self.order.pop_front();
            self.by_key.remove(&id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn idem(key: &str, body: &str) -> Idempotency {
        Idempotency {
            key: key.into(),
            body: body_digest([body.as_bytes()]),
        }
    }

    #[test]
    fn the_same_body_passes_and_another_is_refused() {
        let l = Ledger::new(Duration::from_secs(60), 10);
        l.claim("t", "s", &idem("k", "a")).expect("first use");
        l.claim("t", "s", &idem("k", "a")).expect("a retry");
        let err = l.claim("t", "s", &idem("k", "b")).expect_err("reuse");
        assert_eq!(err.code(), "idempotency_key_reused");
        // Keys belong to a tenant and a stream.
        l.claim("u", "s", &idem("k", "b")).expect("another tenant");
        l.claim("t", "s2", &idem("k", "b")).expect("another stream");
    }

    #[test]
    fn keys_are_forgotten_after_the_window_and_beyond_the_capacity() {
        let l = Ledger::new(Duration::from_secs(60), 2);
        let t0 = Instant::now();
        l.claim_at("t", "s", &idem("k", "a"), t0).expect("first");
        l.claim_at("t", "s", &idem("k", "b"), t0 + Duration::from_secs(61))
            .expect("the window passed");
        l.claim_at("t", "s", &idem("x", "a"), t0 + Duration::from_secs(62))
            .expect("second key");
        l.claim_at("t", "s", &idem("y", "a"), t0 + Duration::from_secs(63))
            .expect("third key pushes out the oldest");
        assert_eq!(l.len(), 2);
        l.claim_at("t", "s", &idem("k", "c"), t0 + Duration::from_secs(64))
            .expect("k was forgotten");
    }

    #[test]
    fn digests_count_where_parts_split() {
        assert_ne!(
            body_digest([&b"ab"[..], b"c"]),
            body_digest([&b"a"[..], b"bc"])
        );
    }
}
