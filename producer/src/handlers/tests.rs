//! Handler tests through the real router with a recording sink: every status the API documents, and that nothing
//! reaches the sink unless the answer is 202. The Kafka path is covered by `tests/tests/producer*.rs`.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use futures::FutureExt;
use futures::future::BoxFuture;
use serde_json::{Value as Json, json};
use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;
use tower::ServiceExt;

use super::AppState;
use crate::auth::Keys;
use crate::config::{Config, FutureSkew, KeyConfig, Limits, StreamConfig};
use crate::metrics::Metrics;
use crate::routes;
use crate::sink::{EventSink, OutRecord, Position, SinkError};
use crate::stream::Stream;

const KEY: &str = "test-key";
const OTHER_STREAM_KEY: &str = "other-key";

/// A sink that keeps what it was sent (shared with the Segment API's tests).
#[derive(Default)]
pub(super) struct RecordingSink {
    records: Mutex<Vec<(String, OutRecord)>>,
    fail: Mutex<Option<SinkError>>,
    /// When set, each send waits for a permit, so tests can hold requests in flight.
    gate: Option<Arc<Semaphore>>,
}

impl RecordingSink {
    pub(super) fn count(&self) -> usize {
        self.records.lock().map(|r| r.len()).unwrap_or(0)
    }

    /// The Kafka keys of every record written, in order.
    pub(super) fn keys(&self) -> Vec<Vec<u8>> {
        self.records
            .lock()
            .map(|r| r.iter().map(|(_, rec)| rec.key.clone()).collect())
            .unwrap_or_default()
    }
}

impl EventSink for RecordingSink {
    fn send_all<'a>(
        &'a self,
        topic: &'a str,
        records: Vec<OutRecord>,
        positions: bool,
    ) -> BoxFuture<'a, Result<Vec<Position>, SinkError>> {
        async move {
            if let Some(gate) = &self.gate {
                let _permit = gate.acquire().await;
            }
            if let Some(e) = self.fail.lock().ok().and_then(|f| f.clone()) {
                return Err(e);
            }
            let mut placed = Vec::new();
            if let Ok(mut r) = self.records.lock() {
                for rec in records {
                    if positions {
                        placed.push(Position {
                            partition: 0,
                            offset: r.len() as i64,
                        });
                    }
                    r.push((topic.to_owned(), rec));
                }
            }
            Ok(placed)
        }
        .boxed()
    }
    fn check(&self) -> BoxFuture<'_, Result<(), String>> {
        async { Ok(()) }.boxed()
    }
    fn flush(&self, _: Duration) -> BoxFuture<'_, Result<(), String>> {
        async { Ok(()) }.boxed()
    }
}

pub(super) fn hash(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

fn app_with(sink: Arc<RecordingSink>, limits: Limits) -> (Router, Metrics) {
    app_with_stream(sink, limits, Config::default().streams["events"].clone())
}

/// Like `app_with`, with `events` configured as given.
fn app_with_stream(
    sink: Arc<RecordingSink>,
    limits: Limits,
    events: StreamConfig,
) -> (Router, Metrics) {
    let config = Config::default();
    let mut streams = HashMap::new();
    let mut second = config.streams["events"].clone();
    second.topic = "other".into();
    for (name, cfg) in [("events", events), ("other", second)] {
        streams.insert(
            name.to_owned(),
            Arc::new(Stream::new(name, &cfg, 42).expect("stream")),
        );
    }
    let keys = Keys::new(
        &BTreeMap::from([
            (
                hash(KEY),
                KeyConfig {
                    tenant: "demo".into(),
                    streams: vec!["events".into()],
                    ..Default::default()
                },
            ),
            (
                hash(OTHER_STREAM_KEY),
                KeyConfig {
                    tenant: "demo".into(),
                    streams: vec!["other".into()],
                    ..Default::default()
                },
            ),
        ]),
        &crate::config::Limits::default(),
    );
    let metrics = Metrics::new().expect("metrics");
    let state = Arc::new(AppState::new(streams, keys, sink, limits, metrics.clone()));
    let ops = sluice_runtime::ops::Ops::new(metrics.registry.clone(), vec![]);
    (routes::router(state, ops), metrics)
}

fn app(sink: Arc<RecordingSink>) -> Router {
    app_with(sink, Limits::default()).0
}

fn event(i: usize) -> Json {
    json!({"event_type": "page_view", "occurred_at": "2026-11-22T10:00:00Z", "user_id": format!("u{i}"), "properties": {"i": i.to_string()}})
}

fn post() -> axum::http::request::Builder {
    Request::post("/v1/streams/events/events")
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::AUTHORIZATION, format!("Bearer {KEY}"))
}

async fn send(app: &Router, req: Request<Body>) -> (StatusCode, axum::http::HeaderMap, Json) {
    let resp = app.clone().oneshot(req).await.expect("infallible");
    let status = resp.status();
    let headers = resp.headers().clone();
    let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
        .await
        .expect("body");
    let json = serde_json::from_slice(&bytes)
        .unwrap_or(Json::String(String::from_utf8_lossy(&bytes).into_owned()));
    (status, headers, json)
}

fn json_req(body: &Json) -> Request<Body> {
    post().body(Body::from(body.to_string())).expect("request")
}

#[tokio::test]
async fn single_event_and_batch_are_accepted_with_ids() {
    let sink = Arc::new(RecordingSink::default());
    let app = app(sink.clone());
    let (status, _, body) = send(&app, json_req(&event(1))).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["accepted"], 1);
    assert_eq!(body["event_ids"].as_array().map(Vec::len), Some(1));

    let batch = Json::Array((0..5).map(event).collect());
    let (status, _, body) = send(&app, json_req(&batch)).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["accepted"], 5);
    assert_eq!(sink.count(), 6);
    let records = sink.records.lock().expect("lock");
    assert!(
        records
            .iter()
            .all(|(topic, r)| topic == "events" && r.key == b"demo")
    );
    let (id, _) = sluice_schemas::wire::unframe(&records[0].1.payload).expect("framed");
    assert_eq!(id, 42);
}

#[tokio::test]
async fn idempotency_key_repeats_ids() {
    let sink = Arc::new(RecordingSink::default());
    let app = app(sink.clone());
    let batch = Json::Array((0..3).map(event).collect());
    let req = || {
        post()
            .header("Idempotency-Key", "abc")
            .body(Body::from(batch.to_string()))
            .expect("request")
    };
    let (_, _, a) = send(&app, req()).await;
    let (_, _, b) = send(&app, req()).await;
    assert_eq!(a["event_ids"], b["event_ids"]);
    let ids: std::collections::BTreeSet<String> = a["event_ids"]
        .as_array()
        .expect("ids")
        .iter()
        .map(|v| v.to_string())
        .collect();
    assert_eq!(ids.len(), 3, "each event of the batch gets its own id");
}

#[tokio::test]
async fn an_idempotency_key_reused_with_another_body_gets_422_and_writes_nothing() {
    let sink = Arc::new(RecordingSink::default());
    let app = app(sink.clone());
    let req = |body: String| {
        post()
            .header("Idempotency-Key", "order-42")
            .body(Body::from(body))
            .expect("request")
    };
    // A rejected body does not take the key: the client fixes it and keeps the key.
    let (status, _, _) = send(&app, req(json!([{"event_type": 5}]).to_string())).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let first = Json::Array((0..2).map(event).collect()).to_string();
    let (status, _, a) = send(&app, req(first.clone())).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{a}");
    let (status, _, b) = send(&app, req(first)).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(
        a["event_ids"], b["event_ids"],
        "the same body, the same ids"
    );
    let other = Json::Array((2..4).map(event).collect()).to_string();
    let (status, _, c) = send(&app, req(other)).await;
    assert_eq!(
        (status, c["error"].as_str()),
        (
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("idempotency_key_reused")
        )
    );
    assert_eq!(sink.count(), 4, "nothing written for the refused request");
}

#[tokio::test]
async fn gzip_and_zstd_bodies_are_decoded() {
    let sink = Arc::new(RecordingSink::default());
    let app = app(sink.clone());
    let raw = Json::Array((0..3).map(event).collect()).to_string();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(raw.as_bytes()).expect("gzip");
    let gz = gz.finish().expect("gzip");
    let req = post()
        .header(header::CONTENT_ENCODING, "gzip")
        .body(Body::from(gz))
        .expect("request");
    assert_eq!(send(&app, req).await.0, StatusCode::ACCEPTED);
    let zs = zstd::encode_all(raw.as_bytes(), 3).expect("zstd");
    let req = post()
        .header(header::CONTENT_ENCODING, "zstd")
        .body(Body::from(zs))
        .expect("request");
    assert_eq!(send(&app, req).await.0, StatusCode::ACCEPTED);
    assert_eq!(sink.count(), 6);
}

#[tokio::test]
async fn every_error_path_has_its_status_and_code_and_produces_nothing() {
    let sink = Arc::new(RecordingSink::default());
    let limits = Limits {
        max_body_bytes: 4096,
        max_batch_events: 10,
        ..Limits::default()
    };
    let (app, metrics) = app_with(sink.clone(), limits);
    let one = event(1).to_string();
    let base =
        |uri: &str| Request::post(uri.to_owned()).header(header::CONTENT_TYPE, "application/json");
    let mut gz_bad = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3];
    gz_bad.extend_from_slice(b"this is not deflate data");
    let mut bomb = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    bomb.write_all(&vec![b' '; 100_000]).expect("gzip");
    let bomb = bomb.finish().expect("gzip");
    let auth = format!("Bearer {KEY}");
    let cases: Vec<(&str, Request<Body>, StatusCode, &str)> = vec![
        (
            "no key",
            base("/v1/streams/events/events")
                .body(Body::from(one.clone()))
                .expect("r"),
            StatusCode::UNAUTHORIZED,
            "missing_key",
        ),
        (
            "wrong key",
            base("/v1/streams/events/events")
                .header("x-api-key", "nope")
                .body(Body::from(one.clone()))
                .expect("r"),
            StatusCode::UNAUTHORIZED,
            "bad_key",
        ),
        (
            "key not allowed on stream",
            base("/v1/streams/events/events")
                .header("x-api-key", OTHER_STREAM_KEY)
                .body(Body::from(one.clone()))
                .expect("r"),
            StatusCode::FORBIDDEN,
            "forbidden",
        ),
        (
            "unknown stream",
            base("/v1/streams/nope/events")
                .header(header::AUTHORIZATION, &auth)
                .body(Body::from(one.clone()))
                .expect("r"),
            StatusCode::NOT_FOUND,
            "unknown_stream",
        ),
        (
            "text/plain",
            Request::post("/v1/streams/events/events")
                .header(header::CONTENT_TYPE, "text/plain")
                .header(header::AUTHORIZATION, &auth)
                .body(Body::from(one.clone()))
                .expect("r"),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_content_type",
        ),
        (
            "brotli",
            post()
                .header(header::CONTENT_ENCODING, "br")
                .body(Body::from(one.clone()))
                .expect("r"),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_encoding",
        ),
        (
            "two content types",
            post()
                .header(header::CONTENT_TYPE, "text/plain")
                .body(Body::from(one.clone()))
                .expect("r"),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_content_type",
        ),
        (
            "empty body",
            post().body(Body::empty()).expect("r"),
            StatusCode::BAD_REQUEST,
            "empty_body",
        ),
        (
            "whitespace body",
            post().body(Body::from(" \n")).expect("r"),
            StatusCode::BAD_REQUEST,
            "empty_body",
        ),
        (
            "empty batch",
            post().body(Body::from("[]")).expect("r"),
            StatusCode::BAD_REQUEST,
            "empty_batch",
        ),
        (
            "not json",
            post().body(Body::from("{nope")).expect("r"),
            StatusCode::BAD_REQUEST,
            "bad_json",
        ),
        (
            "a string",
            post().body(Body::from("\"hi\"")).expect("r"),
            StatusCode::BAD_REQUEST,
            "bad_json",
        ),
        (
            "invalid utf-8",
            post()
                .body(Body::from(
                    b"{\"event_type\":\"\xff\xfe\",\"occurred_at\":1}".to_vec(),
                ))
                .expect("r"),
            StatusCode::BAD_REQUEST,
            "bad_json",
        ),
        (
            "bad gzip",
            post()
                .header(header::CONTENT_ENCODING, "gzip")
                .body(Body::from(gz_bad))
                .expect("r"),
            StatusCode::BAD_REQUEST,
            "bad_body",
        ),
        (
            "gzip bomb",
            post()
                .header(header::CONTENT_ENCODING, "gzip")
                .body(Body::from(bomb))
                .expect("r"),
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
        ),
        (
            "too big",
            post().body(Body::from(vec![b' '; 5000])).expect("r"),
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
        ),
        (
            "batch too big",
            post()
                .body(Body::from(
                    Json::Array((0..11).map(|_| json!({})).collect()).to_string(),
                ))
                .expect("r"),
            StatusCode::PAYLOAD_TOO_LARGE,
            "batch_too_large",
        ),
        (
            "bad idempotency key",
            post()
                .header("Idempotency-Key", " ")
                .body(Body::from(one.clone()))
                .expect("r"),
            StatusCode::BAD_REQUEST,
            "bad_header",
        ),
        (
            "invalid event",
            post()
                .body(Body::from(json!({"event_type": 1}).to_string()))
                .expect("r"),
            StatusCode::BAD_REQUEST,
            "invalid_events",
        ),
    ];
    for (what, req, status, code) in cases {
        let (got, headers, body) = send(&app, req).await;
        assert_eq!(got, status, "{what}: {body}");
        assert_eq!(body["error"], code, "{what}: {body}");
        assert!(
            body["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{what}: {body}"
        );
        if status == StatusCode::UNAUTHORIZED {
            assert!(headers.contains_key(header::WWW_AUTHENTICATE), "{what}");
        }
    }
    assert_eq!(sink.count(), 0, "no error path may produce anything");
    let rejected = metrics
        .rejected
        .with_label_values(&["events", "invalid_events"])
        .get();
    assert_eq!(rejected, 1);
}

#[tokio::test]
async fn invalid_batch_lists_every_problem_and_writes_nothing() {
    let sink = Arc::new(RecordingSink::default());
    let app = app(sink.clone());
    let batch = json!([
        event(0),
        {"event_type": "x", "occurred_at": "not a time", "colour": "red"},
        event(2),
        {"occurred_at": 5, "tenant": "someone-else"},
        "just a string"
    ]);
    let (status, _, body) = send(&app, json_req(&batch)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"], "invalid_events");
    let details: Vec<(u64, String)> = body["details"]
        .as_array()
        .expect("details")
        .iter()
        .map(|d| {
            (
                d["index"].as_u64().unwrap_or(99),
                d["pointer"].as_str().unwrap_or("?").to_owned(),
            )
        })
        .collect();
    assert_eq!(
        details,
        [
            (1, "/colour".to_owned()),
            (1, "/occurred_at".to_owned()),
            (3, "/tenant".to_owned()),
            (4, String::new())
        ]
    );
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("3 of 5 events are invalid")),
        "{body}"
    );
    assert_eq!(sink.count(), 0);
}

#[tokio::test]
async fn timestamps_clickhouse_cannot_store_are_400_and_write_nothing() {
    let sink = Arc::new(RecordingSink::default());
    let app = app(sink.clone());
    let at = |t: Json| json!({"event_type": "x", "occurred_at": t});
    let batch = json!([
        at(json!("1969-12-31T23:59:59Z")),
        at(json!(-1000)),
        event(2),
        at(json!("2107-01-01T00:00:00Z")),
    ]);
    let (status, _, body) = send(&app, json_req(&batch)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"], "invalid_events");
    let range =
        "is outside what ClickHouse can store (1970-01-01T00:00:00Z to 2106-02-07T06:28:15Z)";
    assert_eq!(
        body["details"],
        json!([
            {"index": 0, "pointer": "/occurred_at", "message": format!("timestamp 1969-12-31T23:59:59Z {range}")},
            {"index": 1, "pointer": "/occurred_at", "message": format!("timestamp -1000 (1969-12-31T23:59:59Z) {range}")},
            {"index": 3, "pointer": "/occurred_at", "message": format!("timestamp 2107-01-01T00:00:00Z {range}")},
        ])
    );
    assert_eq!(sink.count(), 0);

    let (status, _, body) = send(&app, json_req(&at(json!("1970-01-01T00:00:00Z")))).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let (status, _, body) = send(&app, json_req(&at(json!(0)))).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(sink.count(), 2);
}

/// `field` of the Avro record in a recorded payload.
fn decoded_field(payload: &[u8], field: &str) -> apache_avro::types::Value {
    let schema =
        apache_avro::Schema::parse_str(sluice_schemas::catalog::EVENT.text).expect("parses");
    let (_, mut body) = sluice_schemas::wire::unframe(payload).expect("framed");
    let value = apache_avro::reader::datum::GenericDatumReader::builder(&schema)
        .build()
        .expect("reader")
        .read_value(&mut body)
        .expect("decodes");
    match value {
        apache_avro::types::Value::Record(fields) => fields
            .into_iter()
            .find(|(k, _)| k == field)
            .map(|(_, v)| v)
            .expect("field"),
        other => panic!("record expected, got {other:?}"),
    }
}

#[tokio::test]
async fn occurred_at_too_far_ahead_is_400_unless_the_stream_clamps_it() {
    let ahead = |ms: i64| json!({"event_type": "x", "occurred_at": chrono::Utc::now().timestamp_millis() + ms});
    let two_days = 2 * 86_400_000;
    let sink = Arc::new(RecordingSink::default());
    let app = app(sink.clone());
    let (status, _, body) = send(&app, json_req(&ahead(two_days))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"], "invalid_events");
    assert_eq!(body["details"][0]["index"], 0);
    assert_eq!(body["details"][0]["pointer"], "/occurred_at");
    let message = body["details"][0]["message"].as_str().unwrap_or_default();
    assert!(
        message.starts_with("occurred_at ")
            && message.ends_with("by more than the allowed 86400 seconds"),
        "{message}"
    );
    let (status, _, body) = send(&app, json_req(&ahead(3_600_000))).await;
    assert_eq!(
        status,
        StatusCode::ACCEPTED,
        "an hour ahead is within the skew: {body}"
    );
    assert_eq!(sink.count(), 1);

    let mut events = Config::default().streams["events"].clone();
    events.future_skew = FutureSkew::Clamp;
    let sink = Arc::new(RecordingSink::default());
    let (app, _) = app_with_stream(sink.clone(), Limits::default(), events);
    let (status, _, body) = send(&app, json_req(&ahead(two_days))).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let records = sink.records.lock().map(|r| r.clone()).unwrap_or_default();
    let payload = &records.first().expect("one record").1.payload;
    let received = decoded_field(payload, "received_at");
    assert!(matches!(
        received,
        apache_avro::types::Value::TimestampMillis(_)
    ));
    assert_eq!(decoded_field(payload, "occurred_at"), received);
}

#[tokio::test]
async fn full_in_flight_budget_answers_429_with_retry_after() {
    let gate = Arc::new(Semaphore::new(0));
    let sink = Arc::new(RecordingSink {
        gate: Some(gate.clone()),
        ..RecordingSink::default()
    });
    let limits = Limits {
        max_in_flight_events: 10,
        max_batch_events: 10,
        ..Limits::default()
    };
    let (app, metrics) = app_with(sink.clone(), limits);
    let batch = Json::Array((0..10).map(event).collect());
    let held = tokio::spawn({
        let app = app.clone();
        let req = json_req(&batch);
        async move { send(&app, req).await }
    });
    // Wait until the first request holds every permit.
    for _ in 0..200 {
        if metrics.in_flight_events.get() == 10 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(metrics.in_flight_events.get(), 10);
    let (status, headers, body) = send(&app, json_req(&event(1))).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert_eq!(body["error"], "overloaded");
    assert_eq!(
        headers.get(header::RETRY_AFTER).map(|v| v.as_bytes()),
        Some(&b"1"[..])
    );
    gate.add_permits(10);
    let (status, _, _) = held.await.expect("joined");
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(metrics.in_flight_events.get(), 0);
    assert_eq!(metrics.in_flight_bytes.get(), 0);
    assert_eq!(
        send(&app, json_req(&event(1))).await.0,
        StatusCode::ACCEPTED
    );
}

#[tokio::test]
async fn sink_failures_are_503_with_retry_after_never_202() {
    for (failure, code) in [
        (SinkError::QueueFull, "queue_full"),
        (SinkError::Unavailable("down".into()), "broker_unavailable"),
    ] {
        let sink = Arc::new(RecordingSink {
            fail: Mutex::new(Some(failure)),
            ..RecordingSink::default()
        });
        let app = app(sink);
        let (status, headers, body) = send(&app, json_req(&event(1))).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
        assert_eq!(body["error"], code);
        assert!(headers.contains_key(header::RETRY_AFTER));
    }
}

#[tokio::test]
async fn metrics_count_requests_by_route_and_status() {
    let sink = Arc::new(RecordingSink::default());
    let app = app(sink);
    send(&app, json_req(&event(1))).await;
    send(&app, post().body(Body::empty()).expect("r")).await;
    let (status, _, body) = send(
        &app,
        Request::get("/metrics").body(Body::empty()).expect("r"),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let text = body.as_str().expect("text");
    assert!(text.contains(r#"sluice_producer_http_requests_total{route="/v1/streams/{stream}/events",status="202"} 1"#), "{text}");
    assert!(text.contains(
        r#"sluice_producer_http_requests_total{route="/v1/streams/{stream}/events",status="400"} 1"#
    ));
    assert!(text.contains(r#"sluice_producer_events_accepted_total{stream="events"} 1"#));
    assert!(text.contains(
        r#"sluice_producer_events_rejected_total{reason="empty_body",stream="events"} 1"#
    ));
    assert!(text.contains("sluice_producer_produce_latency_seconds_count 1"));
    assert!(text.contains("sluice_producer_in_flight_events 0"));
}

#[tokio::test]
async fn oversize_event_fails_the_whole_batch_and_large_bodies_work() {
    let sink = Arc::new(RecordingSink::default());
    let limits = Limits {
        max_message_bytes: 2000,
        ..Limits::default()
    };
    let (app, _) = app_with(sink.clone(), limits);
    let mut big = event(1);
    big["properties"]["pad"] = json!("x".repeat(3000));
    let (status, _, body) = send(&app, json_req(&json!([event(0), big]))).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    assert_eq!(body["error"], "event_too_large");
    assert_eq!(
        sink.count(),
        0,
        "the event before the oversize one was not sent either"
    );

    // ~150 KiB: parsed and encoded on the blocking pool.
    let batch: Vec<Json> = (0..100)
        .map(|i| {
            let mut e = event(i);
            e["properties"]["pad"] = json!("y".repeat(1500));
            e
        })
        .collect();
    let (status, _, body) = send(&app, json_req(&Json::Array(batch))).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["accepted"], 100);
    assert_eq!(sink.count(), 100);
}

#[tokio::test]
async fn a_body_that_never_arrives_times_out_with_408() {
    let sink = Arc::new(RecordingSink::default());
    let limits = Limits {
        request_timeout_ms: 200,
        ..Limits::default()
    };
    let (app, metrics) = app_with(sink.clone(), limits);
    let stalled = futures::stream::pending::<Result<bytes::Bytes, std::io::Error>>();
    let req = post().body(Body::from_stream(stalled)).expect("request");
    let started = std::time::Instant::now();
    let (status, _, body) = send(&app, req).await;
    assert_eq!(status, StatusCode::REQUEST_TIMEOUT, "{body}");
    assert_eq!(body["error"], "body_timeout");
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(
        metrics.in_flight_bytes.get(),
        0,
        "the reservation is released"
    );
    assert_eq!(sink.count(), 0);
}

#[tokio::test]
async fn compressed_bodies_reserve_what_they_decompress_to() {
    let gate = Arc::new(Semaphore::new(0));
    let sink = Arc::new(RecordingSink {
        gate: Some(gate.clone()),
        ..RecordingSink::default()
    });
    let limits = Limits {
        max_body_bytes: 100_000,
        max_in_flight_bytes: 100_000,
        ..Limits::default()
    };
    let (app, metrics) = app_with(sink.clone(), limits);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(event(1).to_string().as_bytes()).expect("gzip");
    let gz = gz.finish().expect("gzip");
    let req = || {
        post()
            .header(header::CONTENT_ENCODING, "gzip")
            .body(Body::from(gz.clone()))
            .expect("request")
    };
    // Two small gzip requests in flight at once fit a budget of one maximum-size body.
    let held: Vec<_> = (0..2)
        .map(|_| {
            let (app, req) = (app.clone(), req());
            tokio::spawn(async move { send(&app, req).await })
        })
        .collect();
    for _ in 0..200 {
        if metrics.in_flight_events.get() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(
        metrics.in_flight_events.get(),
        2,
        "both requests are in flight together"
    );
    assert!(metrics.in_flight_bytes.get() < 100_000);
    // A body that outgrows what is left of the budget while streaming in is refused with 429.
    // ~80 KB: under the 100 KB body limit, over the ~67 KB the two held requests leave.
    let big: Vec<Json> = (0..50)
        .map(|i| {
            let mut e = event(i);
            e["properties"]["pad"] = json!("z".repeat(1500));
            e
        })
        .collect();
    let stalled = futures::stream::iter(vec![Ok::<_, std::io::Error>(bytes::Bytes::from(
        Json::Array(big).to_string(),
    ))]);
    let (status, headers, body) = send(
        &app,
        post().body(Body::from_stream(stalled)).expect("request"),
    )
    .await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert!(headers.contains_key(header::RETRY_AFTER));
    gate.add_permits(2);
    for h in held {
        assert_eq!(h.await.expect("joined").0, StatusCode::ACCEPTED);
    }
    assert_eq!(metrics.in_flight_bytes.get(), 0);
}

#[tokio::test]
async fn partial_writes_the_valid_events_and_names_the_invalid_ones_by_index() {
    let sink = Arc::new(RecordingSink::default());
    let app = app(sink.clone());
    let mut batch: Vec<Json> = (0..5).map(event).collect();
    batch[1] = json!({"event_type": 7, "occurred_at": "2026-11-22T10:00:00Z"});
    batch[3] = json!({"occurred_at": "2026-11-22T10:00:00Z"});
    let body = Json::Array(batch).to_string();
    let req = |uri: &str| {
        Request::post(uri)
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::AUTHORIZATION, format!("Bearer {KEY}"))
            .body(Body::from(body.clone()))
            .expect("request")
    };
    // Without it, all or nothing.
    let (status, _, b) = send(&app, req("/v1/streams/events/events")).await;
    assert_eq!(
        (status, b["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_events"))
    );
    assert_eq!(sink.count(), 0);

    let (status, _, b) = send(&app, req("/v1/streams/events/events?partial=true")).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{b}");
    assert_eq!(b["accepted"], 3);
    assert_eq!(b["event_ids"].as_array().map(Vec::len), Some(3));
    assert_eq!(b["rejected"], 2);
    let named: Vec<(u64, String)> = b["details"]
        .as_array()
        .expect("details")
        .iter()
        .map(|d| {
            (
                d["index"].as_u64().unwrap_or(99),
                d["pointer"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    assert_eq!(
        named,
        vec![(1, "/event_type".to_owned()), (3, "/event_type".to_owned())]
    );
    assert_eq!(sink.count(), 3, "only the valid events were written");

    // Nothing valid is still a 400 that writes nothing.
    let none = Json::Array(vec![json!({"event_type": 1})]).to_string();
    let r = Request::post("/v1/streams/events/events?partial=true")
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::AUTHORIZATION, format!("Bearer {KEY}"))
        .body(Body::from(none))
        .expect("request");
    let (status, _, _) = send(&app, r).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(sink.count(), 3);
}
