//! The Segment HTTP tracking API, so the SDKs teams already use (Segment's, RudderStack's, Jitsu's) land their
//! events in Sluice by changing one URL: `POST /v1/batch` (what the SDKs send) and `/v1/track`, `/v1/identify`,
//! `/v1/page`, `/v1/screen`, `/v1/group`, `/v1/alias` for single messages, all into the `segment` stream.
//!
//! Auth as Segment does it: HTTP Basic with the write key as user name, or `writeKey` in the body (an ingestion
//! key of the producer's key configuration; Bearer and X-Api-Key work too). The answer is 200 `{"success": true}`
//! only once Kafka acknowledged every message; errors have Segment's shape (`{"success": false, "code",
//! "message", "errors"}`), with 400 for oversize messages and batches (32 KB, 500 KB) as Segment answers them.

pub mod message;
#[cfg(test)]
mod tests;

use std::sync::Arc;

use axum::Json;
use axum::body::BodyDataStream;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::AppState;
use super::ingest::options::Options;
use super::ingest::prepare::{BuildJob, Built, Input, Rejected};
use super::ingest::wait::Pending;
use super::ingest::{admission, body, headers, produce_and_wait};
use crate::auth;
use crate::error::{ApiError, EventError};
use crate::idempotency::{Digest32, body_digest};
use message::Envelope;

/// The stream the Segment routes write to (its schema is the bundled `segment`).
pub const STREAM: &str = "segment";

/// Segment's limit on a whole batch request.
pub const MAX_BATCH_BYTES: usize = 500 * 1024;

/// `POST /v1/batch`.
pub async fn batch(State(app): State<Arc<AppState>>, req: Request) -> Response {
    respond(&app, None, req).await
}

/// `POST /v1/track`.
pub async fn track(State(app): State<Arc<AppState>>, req: Request) -> Response {
    respond(&app, Some("track"), req).await
}

/// `POST /v1/identify`.
pub async fn identify(State(app): State<Arc<AppState>>, req: Request) -> Response {
    respond(&app, Some("identify"), req).await
}

/// `POST /v1/page`.
pub async fn page(State(app): State<Arc<AppState>>, req: Request) -> Response {
    respond(&app, Some("page"), req).await
}

/// `POST /v1/screen`.
pub async fn screen(State(app): State<Arc<AppState>>, req: Request) -> Response {
    respond(&app, Some("screen"), req).await
}

/// `POST /v1/group`.
pub async fn group(State(app): State<Arc<AppState>>, req: Request) -> Response {
    respond(&app, Some("group"), req).await
}

/// `POST /v1/alias`.
pub async fn alias(State(app): State<Arc<AppState>>, req: Request) -> Response {
    respond(&app, Some("alias"), req).await
}

async fn respond(app: &Arc<AppState>, route_type: Option<&'static str>, req: Request) -> Response {
    let mut events = 0usize;
    let (parts, body) = req.into_parts();
    let mut body = Some(body.into_data_stream());
    let result = handle(
        app,
        route_type,
        (&parts.headers, &parts.uri),
        &mut body,
        &mut events,
    )
    .await;
    if let Some(rest) = body.take()
        && result.is_err()
    {
        body::drain(rest, MAX_BATCH_BYTES).await;
    }
    match result {
        Ok(Answer { pending, rejected }) => {
            app.metrics
                .accepted
                .with_label_values(&[STREAM])
                .inc_by(events.saturating_sub(rejected.events) as u64);
            let mut body = json!({"success": true});
            if rejected.events > 0 {
                app.metrics
                    .rejected
                    .with_label_values(&[STREAM, "invalid_events"])
                    .inc_by(rejected.events as u64);
                body["rejected"] = json!(rejected.events);
                body["errors"] = json!(rejected.errors);
            }
            match pending {
                // `?wait=` ended first: still a success (the events are in Kafka), with what is pending.
                Some(p) if !p.is_empty() => {
                    body["pending"] = json!(p);
                    (StatusCode::ACCEPTED, Json(body)).into_response()
                }
                _ => (StatusCode::OK, Json(body)).into_response(),
            }
        }
        Err(e) => {
            app.metrics
                .rejected
                .with_label_values(&[STREAM, e.code()])
                .inc_by(events.max(1) as u64);
            if matches!(
                e,
                ApiError::Sink(_) | ApiError::Timeout | ApiError::Internal(_)
            ) {
                tracing::warn!(error = %e, "segment request failed");
            }
            segment_error(e, app.limits.retry_after_secs)
        }
    }
}

async fn handle(
    app: &Arc<AppState>,
    route_type: Option<&'static str>,
    (headers, uri): (&HeaderMap, &Uri),
    body: &mut Option<BodyDataStream>,
    events: &mut usize,
) -> Result<Answer, ApiError> {
    let limits = &app.limits;
    let deadline = tokio::time::Instant::now() + limits.request_timeout();
    let max = MAX_BATCH_BYTES.min(limits.max_body_bytes);
    let keys = app.keys.current();
    // A key in the headers is checked before any body byte is reserved or read, and such requests share the main
    // budget with the native route's; a key only in the body can be checked only once the body is read, so those
    // requests draw on a small budget of their own and cannot starve the others.
    let header_key = match auth::segment_header_key(headers) {
        Some(k) => Some(keys.lookup(&k)?),
        None => None,
    };
    let checked = headers::check(headers, max)?;
    let options = Options::of(headers, uri)?;
    let mut held_bytes = match header_key {
        Some(_) => admission::reserve_body(app, checked.content_length)?,
        None => admission::reserve_unkeyed_body(app, checked.content_length)?,
    };
    let bytes = body::read_within(body, deadline, max, &mut held_bytes).await?;
    let body_len = bytes.len();
    let received_at = chrono::Utc::now();
    // Parsing and converting a large batch is CPU work: off the async workers, like the native route's.
    let digest = checked.idempotency.is_some();
    let parsed = if bytes.len() <= INLINE_BODY_BYTES {
        parse(&bytes, route_type, received_at, digest)
    } else {
        tokio::task::spawn_blocking(move || parse(&bytes, route_type, received_at, digest))
            .await
            .map_err(|e| ApiError::Internal(e.to_string()))?
    }?;
    *events = parsed.count;
    // The key may be in the body, so authentication waits for it; a bad key wins over bad messages.
    let key = match header_key {
        Some(key) => key,
        // No key in the headers: the body's `writeKey`.
        None => keys.authenticate_segment(headers, parsed.write_key.as_deref())?,
    };
    let stream = app
        .streams
        .get(STREAM)
        .ok_or_else(|| ApiError::UnknownStream(STREAM.to_owned()))?
        .clone();
    if !key.allows(STREAM) {
        return Err(ApiError::Forbidden(STREAM.to_owned()));
    }
    key.quota.admit_bytes(body_len)?;
    let converted = parsed.messages?;
    let invalid = converted.errors.len();
    let mut unconverted: Vec<EventError> = converted.errors.into_iter().flatten().collect();
    if invalid > 0 && (!options.partial || converted.events.is_empty()) {
        return Err(ApiError::Invalid {
            invalid,
            total: parsed.count,
            errors: unconverted,
        });
    }
    let job = BuildJob {
        app: app.clone(),
        stream: stream.clone(),
        tenant: key.tenant.clone(),
        quota: key.quota.clone(),
        idempotency: checked.idempotency,
        input: Input::Events {
            events: converted.events,
            as_sent: parsed.as_sent,
        },
        partial: options.partial,
        origins: (invalid > 0).then_some(converted.origins),
    };
    // What conversion left out joins what validation did, by index in the request.
    let merge = |mut errors: Vec<EventError>, more: Vec<EventError>| {
        errors.extend(more);
        errors.sort_by_key(|e| e.index);
        errors
    };
    let built = super::ingest::prepare::build(job, events).await;
    *events = parsed.count;
    // The permits are bound, not dropped with `..`: they are held until Kafka has acknowledged.
    let Built {
        records,
        event_ids,
        indexes,
        mut rejected,
        _events,
        _share,
    } = built.map_err(|e| match e {
        ApiError::Invalid {
            invalid: n, errors, ..
        } => ApiError::Invalid {
            invalid: n + invalid,
            total: parsed.count,
            errors: merge(errors, std::mem::take(&mut unconverted)),
        },
        other => other,
    })?;
    rejected.events += invalid;
    rejected.errors = merge(rejected.errors, unconverted);
    let pending = produce_and_wait(
        app,
        &stream.topic,
        (records, &event_ids, indexes.as_deref()),
        (deadline, options.wait),
        (held_bytes, _events, _share),
    )
    .await?;
    Ok(Answer { pending, rejected })
}

/// What a successful request answers: the events still pending after a `?wait=`, and those `?partial=true` left
/// out.
struct Answer {
    pending: Option<Vec<Pending>>,
    rejected: Rejected,
}

/// Bodies above this are parsed and converted on the blocking pool.
const INLINE_BODY_BYTES: usize = 64 * 1024;

/// A request body, parsed: its write key, how many messages it held, and those messages converted (or why not).
struct Parsed {
    write_key: Option<String>,
    count: usize,
    /// The digest of the messages as sent, when asked for (the request has an `Idempotency-Key`).
    as_sent: Option<Digest32>,
    messages: Result<Converted, ApiError>,
}

/// `/v1/batch`'s body, with each message left raw so its size as sent is known without serializing it again.
#[derive(serde::Deserialize)]
struct BatchBody<'a> {
    #[serde(borrow, default)]
    batch: Option<Vec<&'a serde_json::value::RawValue>>,
    #[serde(rename = "writeKey", default)]
    write_key: Option<String>,
    #[serde(rename = "sentAt", default)]
    sent_at: Option<Value>,
}

fn parse(
    bytes: &[u8],
    route_type: Option<&'static str>,
    received_at: chrono::DateTime<chrono::Utc>,
    digest: bool,
) -> Result<Parsed, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::EmptyBody);
    }
    let bad_json = |e: serde_json::Error| ApiError::BadJson(e.to_string());
    // A retry's envelope changes (SDKs set `sentAt` on every attempt), so only the messages identify the events.
    let mut as_sent = None;
    let (write_key, sent_at, messages): (Option<String>, Option<Value>, Vec<(Value, usize)>) =
        match route_type {
            None => {
                let body: BatchBody<'_> = serde_json::from_slice(bytes).map_err(bad_json)?;
                let raw = body.batch.ok_or_else(|| {
                    ApiError::BadJson("a batch needs a `batch` array of messages".into())
                })?;
                if digest {
                    as_sent = Some(body_digest(raw.iter().map(|r| r.get().as_bytes())));
                }
                let messages = raw
                    .into_iter()
                    .map(|r| Ok((serde_json::from_str(r.get())?, r.get().len())))
                    .collect::<Result<Vec<_>, serde_json::Error>>()
                    .map_err(bad_json)?;
                (body.write_key, body.sent_at, messages)
            }
            Some(_) => {
                let mut doc: serde_json::Map<String, Value> =
                    serde_json::from_slice(bytes).map_err(bad_json)?;
                let write_key = match doc.remove("writeKey") {
                    Some(Value::String(k)) => Some(k),
                    _ => None,
                };
                let sent_at = doc.remove("sentAt");
                if digest {
                    let message = serde_json::to_vec(&doc).map_err(bad_json)?;
                    as_sent = Some(body_digest([&message[..]]));
                }
                if let Some(t) = &sent_at {
                    doc.insert("sentAt".to_owned(), t.clone());
                }
                (write_key, sent_at, vec![(Value::Object(doc), bytes.len())])
            }
        };
    let env = Envelope {
        route_type,
        sent_at: sent_at.as_ref(),
        received_at,
    };
    Ok(Parsed {
        write_key,
        count: messages.len(),
        as_sent,
        messages: convert_all(messages, &env),
    })
}

/// A batch's messages, converted: the good ones with their indexes, and every problem of each bad one.
struct Converted {
    events: Vec<Value>,
    origins: Vec<usize>,
    /// One entry per invalid message, with all its problems.
    errors: Vec<Vec<EventError>>,
}

/// Converts every message, keeping every problem of every invalid one (the route decides whether any fails it).
fn convert_all(messages: Vec<(Value, usize)>, env: &Envelope<'_>) -> Result<Converted, ApiError> {
    let total = messages.len();
    if total == 0 {
        return Err(ApiError::EmptyBatch);
    }
    let mut c = Converted {
        events: Vec::with_capacity(total),
        origins: Vec::with_capacity(total),
        errors: Vec::new(),
    };
    for (i, (m, size)) in messages.into_iter().enumerate() {
        match message::convert(i, m, size, env) {
            Ok(v) => {
                c.events.push(v);
                c.origins.push(i);
            }
            Err(e) => c.errors.push(e),
        }
    }
    Ok(c)
}

/// An error in Segment's shape. Oversize bodies and messages are 400 there, which the SDKs do not retry.
fn segment_error(e: ApiError, retry_after_secs: u64) -> Response {
    let (status, code, retry) = e.parts();
    let status = match e {
        ApiError::BodyTooLarge(_)
        | ApiError::BatchTooLarge { .. }
        | ApiError::EventTooLarge { .. } => StatusCode::BAD_REQUEST,
        _ => status,
    };
    let message = match &e {
        ApiError::BodyTooLarge(_) => {
            format!("batch is larger than Segment's limit of {MAX_BATCH_BYTES} bytes")
        }
        other => other.to_string(),
    };
    let details = match e {
        ApiError::Invalid { errors, .. } => errors,
        _ => Vec::new(),
    };
    let mut resp = (
        status,
        Json(json!({"success": false, "code": code, "message": message, "errors": details})),
    )
        .into_response();
    if retry && let Ok(v) = HeaderValue::from_str(&retry_after_secs.to_string()) {
        resp.headers_mut().insert(header::RETRY_AFTER, v);
    }
    if status == StatusCode::UNAUTHORIZED {
        resp.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Basic"));
    }
    resp
}
