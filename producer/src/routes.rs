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

use crate::handlers::{AppState, ingest, openapi, segment};
use crate::metrics::Metrics;

/// Send one event or a batch to a stream.
pub const EVENTS: &str = "/v1/streams/{stream}/events";
/// Segment's batch route: what the Segment, RudderStack and Jitsu SDKs send.
pub const SEGMENT_BATCH: &str = "/v1/batch";
/// Segment's single-message routes, by message type.
pub const SEGMENT_SINGLE: [(&str, &str); 6] = [
    ("track", "/v1/track"),
    ("identify", "/v1/identify"),
    ("page", "/v1/page"),
    ("screen", "/v1/screen"),
    ("group", "/v1/group"),
    ("alias", "/v1/alias"),
];
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
    ("post", SEGMENT_BATCH),
    ("post", "/v1/track"),
    ("post", "/v1/identify"),
    ("post", "/v1/page"),
    ("post", "/v1/screen"),
    ("post", "/v1/group"),
    ("post", "/v1/alias"),
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
        .route(SEGMENT_BATCH, post(segment::batch))
        .route(SEGMENT_SINGLE[0].1, post(segment::track))
        .route(SEGMENT_SINGLE[1].1, post(segment::identify))
        .route(SEGMENT_SINGLE[2].1, post(segment::page))
        .route(SEGMENT_SINGLE[3].1, post(segment::screen))
        .route(SEGMENT_SINGLE[4].1, post(segment::group))
        .route(SEGMENT_SINGLE[5].1, post(segment::alias))
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
