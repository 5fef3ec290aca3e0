//! Every route the producer serves, named once so the router and the OpenAPI document cannot drift apart.

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};
use sluice_runtime::ops::Ops;
use tower_http::decompression::RequestDecompressionLayer;

use crate::handlers::{AppState, ingest, openapi};
use crate::metrics::Metrics;

/// Send one event or a batch to a stream.
pub const EVENTS: &str = "/v1/streams/{stream}/events";
/// The OpenAPI 3 document.
pub const OPENAPI: &str = "/openapi.json";
/// Liveness.
pub const HEALTHZ: &str = "/healthz";
/// Readiness: broker, registry and topics.
pub const READYZ: &str = "/readyz";
/// Prometheus metrics.
pub const METRICS: &str = "/metrics";

/// Every (method, path) served, as the OpenAPI document must list them.
pub const ALL: &[(&str, &str)] = &[
    ("post", EVENTS),
    ("get", OPENAPI),
    ("get", HEALTHZ),
    ("get", READYZ),
    ("get", METRICS),
];

/// The whole HTTP surface.
pub fn router(app: Arc<AppState>, ops: Ops) -> Router {
    let metrics = app.metrics.clone();
    let ingest_routes = Router::new()
        .route(EVENTS, post(ingest::ingest))
        // gzip and zstd are decoded as the body streams in; anything else reaches the handler, which answers 415.
        .layer(
            RequestDecompressionLayer::new()
                .gzip(true)
                .zstd(true)
                .pass_through_unaccepted(true),
        )
        .with_state(app);
    Router::new()
        .route(OPENAPI, get(openapi::serve))
        .merge(ingest_routes)
        .merge(ops.router())
        .layer(middleware::from_fn_with_state(metrics, track))
}

/// Counts every request by matched route and status.
async fn track(State(metrics): State<Metrics>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let started = Instant::now();
    let resp = next.run(req).await;
    metrics
        .requests
        .with_label_values(&[route.as_str(), resp.status().as_str()])
        .inc();
    metrics
        .request_seconds
        .with_label_values(&[route.as_str()])
        .observe(started.elapsed().as_secs_f64());
    resp
}
