//! The Segment routes through the real router with a recording sink: what the SDKs rely on, and a fuzz of random
//! messages that must never get a 5xx nor write anything unless the answer is 200.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use rand::{Rng, SeedableRng};
use serde_json::{Value as Json, json};
use tower::ServiceExt;

use crate::auth::Keys;
use crate::config::{KeyConfig, Limits, StreamConfig};
use crate::handlers::AppState;
use crate::handlers::tests::{RecordingSink, hash};
use crate::metrics::Metrics;
use crate::routes;
use crate::stream::Stream;

const WRITE_KEY: &str = "write-key";

fn app(sink: Arc<RecordingSink>) -> Router {
    let cfg = StreamConfig {
        key_field: "message_id".into(),
        event_id_field: "message_id".into(),
        ..StreamConfig::new("segment", "segment")
    };
    let streams = HashMap::from([(
        super::STREAM.to_owned(),
        Arc::new(Stream::new(super::STREAM, &cfg, 7).expect("stream")),
    )]);
    let keys = Keys::new(
        &BTreeMap::from([(
            hash(WRITE_KEY),
            KeyConfig {
                tenant: "acme".into(),
                streams: vec![super::STREAM.into()],
                ..Default::default()
            },
        )]),
        &crate::config::Limits::default(),
    );
    let metrics = Metrics::new().expect("metrics");
    let state = Arc::new(AppState::new(
        streams,
        keys,
        sink,
        Limits::default(),
        metrics.clone(),
    ));
    routes::router(
        state,
        sluice_runtime::ops::Ops::new(metrics.registry.clone(), vec![]),
    )
}

async fn post(app: &Router, path: &str, body: Vec<u8>) -> (StatusCode, Json) {
    post_with(app, path, &[], body).await
}

async fn post_with(
    app: &Router,
    path: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> (StatusCode, Json) {
    use base64::Engine as _;
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{WRITE_KEY}:"));
    let mut req = Request::post(path)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::AUTHORIZATION, format!("Basic {auth}"));
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    let req = req.body(Body::from(body)).expect("request");
    let resp = app.clone().oneshot(req).await.expect("infallible");
    let status = resp.status();
    let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
        .await
        .expect("body");
    (status, serde_json::from_slice(&bytes).unwrap_or(Json::Null))
}

#[tokio::test]
async fn every_route_answers_success_once_written() {
    let sink = Arc::new(RecordingSink::default());
    let app = app(sink.clone());
    let batch = json!({"batch": [
        {"type": "track", "event": "A", "userId": "u", "messageId": "1"},
        {"type": "alias", "previousId": "p", "userId": "u"}
    ], "sentAt": "2026-12-02T12:00:00Z"});
    let (status, body) = post(&app, "/v1/batch", batch.to_string().into_bytes()).await;
    assert_eq!((status, body), (StatusCode::OK, json!({"success": true})));
    assert_eq!(sink.count(), 2);
    let one = json!({"userId": "u", "traits": {"plan": "pro"}});
    for (kind, path) in routes::SEGMENT_SINGLE {
        let mut m = one.clone();
        match kind {
            "track" => m["event"] = json!("E"),
            "group" => m["groupId"] = json!("g"),
            "alias" => m["previousId"] = json!("p"),
            _ => {}
        }
        let (status, body) = post(&app, path, m.to_string().into_bytes()).await;
        assert_eq!(status, StatusCode::OK, "{path}: {body}");
    }
    assert_eq!(sink.count(), 8);
}

#[tokio::test]
async fn an_idempotent_retry_with_a_new_sent_at_gets_the_same_ids_and_other_messages_get_422() {
    let sink = Arc::new(RecordingSink::default());
    let app = app(sink.clone());
    let key = [("Idempotency-Key", "batch-7")];
    let batch = |sent_at: &str, event: &str| {
        json!({"batch": [
            {"type": "track", "event": event, "userId": "u"},
            {"type": "identify", "userId": "u"}
        ], "sentAt": sent_at})
        .to_string()
        .into_bytes()
    };
    for sent_at in ["2026-12-02T12:00:00Z", "2026-12-02T12:00:05Z"] {
        let (status, body) = post_with(&app, "/v1/batch", &key, batch(sent_at, "A")).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let keys = sink.keys();
    assert_eq!(keys.len(), 4);
    assert_eq!(
        keys[..2],
        keys[2..],
        "the retry minted the same message ids"
    );
    assert_ne!(keys[0], keys[1]);
    let (status, body) =
        post_with(&app, "/v1/batch", &key, batch("2026-12-02T12:00:09Z", "B")).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("idempotency_key_reused")
        )
    );
    assert_eq!(sink.count(), 4, "nothing written for the refused request");
}

#[tokio::test]
async fn errors_have_segments_shape() {
    let sink = Arc::new(RecordingSink::default());
    let app = app(sink.clone());
    let (status, body) = post(
        &app,
        "/v1/batch",
        b"{\"batch\": [{\"type\": \"nope\"}]}".to_vec(),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["success"], false);
    assert_eq!(body["code"], "invalid_events");
    assert_eq!(body["errors"][0]["pointer"], "/type");
    let huge = json!({"batch": [{"type": "track", "event": "e", "userId": "u", "properties": {"x": "y".repeat(600_000)}}]});
    let (status, body) = post(&app, "/v1/batch", huge.to_string().into_bytes()).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("body_too_large"))
    );
    let (status, _) = post(&app, "/v1/batch", b"[1, 2]".to_vec()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(sink.count(), 0);
}

/// A random JSON value, biased towards the keys and shapes Segment messages have.
fn random_value(rng: &mut impl Rng, depth: usize) -> Json {
    const KEYS: [&str; 14] = [
        "type",
        "event",
        "userId",
        "anonymousId",
        "messageId",
        "timestamp",
        "sentAt",
        "originalTimestamp",
        "properties",
        "traits",
        "context",
        "groupId",
        "previousId",
        "name",
    ];
    const STRINGS: [&str; 10] = [
        "track",
        "identify",
        "page",
        "alias",
        "group",
        "2026-12-02T12:00:00Z",
        "1969-01-01T00:00:00Z",
        "9999-12-31T23:59:59Z",
        "",
        "\u{1F600}",
    ];
    match rng.random_range(0..if depth > 3 { 5 } else { 7 }) {
        0 => Json::Null,
        1 => json!(rng.random::<bool>()),
        2 => json!(rng.random::<i64>()),
        3 => json!(rng.random::<f64>() * 1e6),
        4 => json!(STRINGS[rng.random_range(0..STRINGS.len())]),
        5 => Json::Array(
            (0..rng.random_range(0..4))
                .map(|_| random_value(rng, depth + 1))
                .collect(),
        ),
        _ => Json::Object(
            (0..rng.random_range(0..6))
                .map(|_| {
                    let k = KEYS[rng.random_range(0..KEYS.len())].to_owned();
                    (k, random_value(rng, depth + 1))
                })
                .collect(),
        ),
    }
}

#[tokio::test]
async fn random_messages_never_get_a_server_error_nor_a_partial_write() {
    let sink = Arc::new(RecordingSink::default());
    let app = app(sink.clone());
    let mut rng = rand::rngs::StdRng::seed_from_u64(20261202);
    let mut answers: BTreeMap<u16, usize> = BTreeMap::new();
    for i in 0..400 {
        let messages: Vec<Json> = (0..rng.random_range(1..4))
            .map(|_| {
                let mut m = random_value(&mut rng, 0);
                // Half the time a mostly valid message, so the accepted path is fuzzed too.
                if rng.random::<bool>() && m.is_object() {
                    m["type"] = json!("track");
                    m["event"] = json!("E");
                    m["userId"] = json!("u");
                }
                m
            })
            .collect();
        let (path, body) = if i % 3 == 0 {
            (routes::SEGMENT_SINGLE[i % 6].1, messages[0].clone())
        } else {
            ("/v1/batch", json!({"batch": messages}))
        };
        let before = sink.count();
        let (status, answer) = post(&app, path, body.to_string().into_bytes()).await;
        *answers.entry(status.as_u16()).or_default() += 1;
        assert!(
            status == StatusCode::OK || status == StatusCode::BAD_REQUEST,
            "{status} for {body}: {answer}"
        );
        assert_eq!(answer["success"], status == StatusCode::OK, "{answer}");
        if status != StatusCode::OK {
            assert_eq!(
                sink.count(),
                before,
                "nothing written for a refused request"
            );
        }
    }
    assert!(
        answers.len() == 2,
        "both accepted and refused requests were fuzzed: {answers:?}"
    );
}

#[tokio::test]
async fn partial_writes_the_valid_messages_and_names_the_invalid_ones() {
    let sink = Arc::new(RecordingSink::default());
    let app = app(sink.clone());
    let batch = json!({"batch": [
        {"type": "track", "event": "A", "userId": "u", "messageId": "p-0"},
        {"type": "track", "userId": "u", "messageId": "p-1"},
        {"type": "identify", "userId": "u", "messageId": "p-2"},
        {"type": "nope", "userId": "u", "messageId": "p-3"}
    ]})
    .to_string()
    .into_bytes();
    let (status, _) = post(&app, "/v1/batch", batch.clone()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(sink.count(), 0);
    let (status, body) = post(&app, "/v1/batch?partial=true", batch).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["rejected"], 2);
    let indexes: Vec<u64> = body["errors"]
        .as_array()
        .expect("errors")
        .iter()
        .filter_map(|e| e["index"].as_u64())
        .collect();
    assert_eq!(indexes, vec![1, 3]);
    assert_eq!(sink.keys(), vec![b"p-0".to_vec(), b"p-2".to_vec()]);
}
