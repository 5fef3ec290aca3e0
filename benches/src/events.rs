//! Realistic product-analytics events for `schemas/avro/event.avsc`, as a client would send them: no tenant,
//! event id or receive time (the server fills those), a skewed mix of event types, and a handful of properties.

use bytes::Bytes;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Map, Value as Json, json};

/// Event types with weights that roughly match web analytics traffic (page views dominate).
const TYPES: &[(&str, u32)] = &[
    ("page_view", 50),
    ("click", 20),
    ("session_start", 8),
    ("search", 7),
    ("add_to_cart", 6),
    ("checkout_started", 4),
    ("order_placed", 3),
    ("signup", 2),
];
const SOURCES: &[&str] = &[
    "web-sdk/3.2.1",
    "ios-sdk/2.9.0",
    "android-sdk/2.8.4",
    "backend/orders",
];
const PATHS: &[&str] = &[
    "/",
    "/pricing",
    "/docs/getting-started",
    "/blog/2026/sluice",
    "/cart",
    "/checkout",
    "/account",
];
const BROWSERS: &[&str] = &["Chrome 131", "Firefox 133", "Safari 18.1", "Edge 131"];
const COUNTRIES: &[&str] = &["DE", "US", "FR", "IN", "BR", "JP", "GB"];
const REFERRERS: &[&str] = &[
    "https://www.google.com/",
    "https://news.ycombinator.com/",
    "",
    "https://t.co/x1y2z3",
];

/// A seeded source of events, so runs are comparable.
pub struct EventGen {
    rng: StdRng,
    total_weight: u32,
}

impl EventGen {
    /// A generator whose sequence depends only on `seed`.
    pub fn new(seed: u64) -> Self {
        Self {
            rng: StdRng::seed_from_u64(seed),
            total_weight: TYPES.iter().map(|(_, w)| w).sum(),
        }
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.rng.random_range(0..items.len())]
    }

    fn event_type(&mut self) -> &'static str {
        let mut roll = self.rng.random_range(0..self.total_weight);
        for (name, w) in TYPES {
            if roll < *w {
                return name;
            }
            roll -= w;
        }
        "page_view"
    }

    /// One event as the JSON object a client sends; `occurred_at_ms` is its client-side time.
    pub fn event(&mut self, occurred_at_ms: i64) -> Json {
        let event_type = self.event_type();
        let known_user = self.rng.random_bool(0.4);
        let user = self.rng.random_range(0..50_000u32);
        let mut props = Map::new();
        props.insert("path".into(), self.pick(PATHS).into());
        props.insert("browser".into(), self.pick(BROWSERS).into());
        props.insert("country".into(), self.pick(COUNTRIES).into());
        let referrer = self.pick(REFERRERS);
        if !referrer.is_empty() {
            props.insert("referrer".into(), referrer.into());
        }
        match event_type {
            "search" => {
                props.insert(
                    "query".into(),
                    format!("kafka clickhouse {}", self.rng.random_range(0..999u32)).into(),
                );
            }
            "add_to_cart" | "order_placed" | "checkout_started" => {
                let cents = self.rng.random_range(199..49_999u32);
                props.insert(
                    "amount".into(),
                    format!("{}.{:02}", cents / 100, cents % 100).into(),
                );
                props.insert("currency".into(), "EUR".into());
                props.insert(
                    "sku".into(),
                    format!("SKU-{:05}", self.rng.random_range(0..20_000u32)).into(),
                );
            }
            _ => {}
        }
        let mut ev = json!({
            "event_type": event_type,
            "occurred_at": occurred_at_ms,
            "source": self.pick(SOURCES),
            "anonymous_id": format!("anon-{:016x}", self.rng.random::<u64>()),
            "session_id": format!("s-{:012x}", self.rng.random::<u64>() >> 16),
            "properties": props,
        });
        if known_user {
            ev["user_id"] = format!("user-{user}").into();
        }
        if self.rng.random_bool(0.3) {
            ev["trace_id"] = format!("{:032x}", self.rng.random::<u128>()).into();
        }
        ev
    }

    /// `n` events stamped around `now_ms`.
    pub fn events(&mut self, n: usize, now_ms: i64) -> Vec<Json> {
        (0..n)
            .map(|_| {
                let skew = self.rng.random_range(0..5_000);
                self.event(now_ms - skew)
            })
            .collect()
    }

    /// A request body: one object when `n == 1`, otherwise a JSON array of `n` events.
    pub fn body(&mut self, n: usize, now_ms: i64) -> Bytes {
        let mut events = self.events(n.max(1), now_ms);
        let json = if n <= 1 {
            events.swap_remove(0)
        } else {
            Json::Array(events)
        };
        Bytes::from(serde_json::to_vec(&json).unwrap_or_default())
    }
}

impl EventGen {
    /// A Segment `/v1/batch` body of `n` track messages carrying the same events as [`EventGen::body`] would.
    pub fn segment_body(&mut self, n: usize, now_ms: i64) -> Bytes {
        let batch: Vec<Json> = self
            .events(n.max(1), now_ms)
            .into_iter()
            .map(|e| {
                let at = chrono::DateTime::from_timestamp_millis(e["occurred_at"].as_i64().unwrap_or(now_ms))
                    .unwrap_or_default()
                    .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
                json!({
                    "type": "track",
                    "event": e["event_type"],
                    "userId": e.get("user_id"),
                    "anonymousId": e["anonymous_id"],
                    "messageId": format!("{:032x}", self.rng.random::<u128>()),
                    "timestamp": at,
                    "properties": e["properties"],
                    "context": {"library": {"name": "sluice-bench", "version": "1"}, "page": {"path": e["properties"]["path"]}},
                })
            })
            .collect();
        let sent_at = chrono::DateTime::from_timestamp_millis(now_ms)
            .unwrap_or_default()
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        Bytes::from(
            serde_json::to_vec(&json!({"batch": batch, "sentAt": sent_at})).unwrap_or_default(),
        )
    }
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_events() {
        let a = EventGen::new(7).events(20, 1_800_000_000_000);
        let b = EventGen::new(7).events(20, 1_800_000_000_000);
        assert_eq!(a, b);
    }

    #[test]
    fn bodies_are_objects_or_arrays() {
        let mut g = EventGen::new(1);
        let one: Json = serde_json::from_slice(&g.body(1, 0)).expect("json");
        assert!(one.is_object());
        let many: Json = serde_json::from_slice(&g.body(5, 0)).expect("json");
        assert_eq!(many.as_array().map(Vec::len), Some(5));
    }
}
