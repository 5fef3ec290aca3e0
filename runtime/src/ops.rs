//! The ops endpoints every service serves: `/healthz` (alive), `/readyz` (dependencies reachable), `/metrics`.

use std::sync::Arc;

use axum::{
    Router, extract::State, http::StatusCode, http::header, response::IntoResponse, routing::get,
};
use futures::future::BoxFuture;
use prometheus::{Encoder, Registry, TextEncoder};

/// Something a service needs before it can do useful work (a broker, a registry, ClickHouse).
pub trait ReadinessCheck: Send + Sync + 'static {
    /// The dependency's name, shown in `/readyz` output.
    fn name(&self) -> &str;
    /// `Ok` when reachable now; the error says why not.
    fn check(&self) -> BoxFuture<'_, Result<(), String>>;
}

/// The token of `Authorization: Bearer <token>`, if the request carries one.
pub fn bearer(headers: &axum::http::HeaderMap) -> Option<&str> {
    headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
}

/// Whether `given` is the secret `want`, compared in constant time so the answer's timing tells nothing about it.
pub fn key_matches(given: Option<&str>, want: &str) -> bool {
    let given = given.unwrap_or_default();
    bool::from(subtle::ConstantTimeEq::ct_eq(
        given.as_bytes(),
        want.as_bytes(),
    ))
}

/// What the ops router serves from.
#[derive(Clone)]
pub struct Ops {
    registry: Registry,
    checks: Arc<Vec<Box<dyn ReadinessCheck>>>,
}

impl Ops {
    /// Ops endpoints over `registry`'s metrics and the given readiness checks.
    pub fn new(registry: Registry, checks: Vec<Box<dyn ReadinessCheck>>) -> Self {
        Self {
            registry,
            checks: Arc::new(checks),
        }
    }

    /// `/healthz`, `/readyz` and `/metrics`, to merge into a service's router.
    pub fn router<S: Clone + Send + Sync + 'static>(self) -> Router<S> {
        Router::new()
            .route("/healthz", get(|| async { "ok\n" }))
            .route("/readyz", get(readyz))
            .route("/metrics", get(metrics))
            .with_state(self)
    }
}

async fn readyz(State(ops): State<Ops>) -> impl IntoResponse {
    let mut body = String::new();
    let mut ready = true;
    for check in ops.checks.iter() {
        match check.check().await {
            Ok(()) => body.push_str(&format!("{}: ok\n", check.name())),
            Err(why) => {
                ready = false;
                body.push_str(&format!("{}: {why}\n", check.name()));
            }
        }
    }
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, body)
}

async fn metrics(State(ops): State<Ops>) -> impl IntoResponse {
    let mut buf = Vec::new();
    match TextEncoder::new().encode(&ops.registry.gather(), &mut buf) {
        Ok(()) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, prometheus::TEXT_FORMAT)],
            buf,
        )
            .into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_match_only_whole() {
        assert!(key_matches(Some("s3cret"), "s3cret"));
        assert!(!key_matches(Some("s3cre"), "s3cret"));
        assert!(!key_matches(Some("s3cretx"), "s3cret"));
        assert!(!key_matches(None, "s3cret"));
        let mut h = axum::http::HeaderMap::new();
        h.insert(
            axum::http::header::AUTHORIZATION,
            axum::http::HeaderValue::from_static("Bearer s3cret"),
        );
        assert_eq!(bearer(&h), Some("s3cret"));
    }
}
