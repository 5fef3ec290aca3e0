//! `POST /v1/streams/{stream}/events`: authenticate, bound, read, validate, encode, produce, and answer 202 only
//! once Kafka acknowledged every event.
//!
//! Body: one JSON object (one event) or a JSON array of objects (a batch), `Content-Type: application/json`,
//! optionally `Content-Encoding: gzip` or `zstd`. A batch is all-or-nothing at validation: if any event is invalid,
//! the answer is 400 listing every problem (event index, JSON pointer, message) and nothing is written.
//!
//! [`handle`] is the whole request in order; each step lives in its own module: `headers` (checks before the body),
//! `admission` (the in-flight budget), `body` (reading within limits) and `prepare` (parse, validate, encode).

pub(crate) mod admission;
pub(crate) mod body;
pub(crate) mod headers;
pub(crate) mod options;
pub(crate) mod prepare;
pub(crate) mod wait;

use std::sync::Arc;
use std::time::Instant;

use axum::body::BodyDataStream;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

pub use self::headers::IDEMPOTENCY_KEY;
use self::options::Options;
use self::prepare::{BuildJob, Built, Input};
use super::AppState;
use crate::committed::WaitFor;
use crate::error::ApiError;
use crate::sink::{OutRecord, Position};

/// The success body: 202 on Kafka's acknowledgement, 200 once a `?wait=` target has every event, 202 with
/// `pending` when the wait ended first.
#[derive(Debug, Serialize)]
pub struct Accepted {
    /// Events written and acknowledged.
    pub accepted: usize,
    /// Their ids, in request order.
    pub event_ids: Vec<String>,
    /// With `?wait=`: the events not yet queryable when the wait ended (safe in Kafka all the same); absent when
    /// none is.
    #[serde(skip_serializing_if = "nothing_pending")]
    pub pending: Option<Vec<wait::Pending>>,
    /// With `?partial=true`: how many events were left out as invalid (absent when none was).
    #[serde(skip_serializing_if = "is_zero")]
    pub rejected: usize,
    /// Every problem of those events, by index in the request, pointer and message.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub details: Vec<crate::error::EventError>,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

fn nothing_pending(p: &Option<Vec<wait::Pending>>) -> bool {
    p.as_ref().is_none_or(Vec::is_empty)
}

impl Accepted {
    /// 200 when the request waited and nothing is pending, else 202.
    fn status(&self) -> StatusCode {
        match &self.pending {
            Some(p) if p.is_empty() => StatusCode::OK,
            _ => StatusCode::ACCEPTED,
        }
    }
}

/// The ingestion endpoint.
pub async fn ingest(
    State(app): State<Arc<AppState>>,
    Path(stream): Path<String>,
    req: Request,
) -> Response {
    let mut events = 0usize;
    let known = app.streams.contains_key(&stream);
    let label = if known { stream.as_str() } else { "unknown" };
    let (parts, body) = req.into_parts();
    let mut body = Some(body.into_data_stream());
    let result = handle(
        &app,
        &stream,
        (&parts.headers, &parts.uri),
        &mut body,
        &mut events,
    )
    .await;
    if let Some(rest) = body.take()
        && result.is_err()
    {
        body::drain(rest, app.limits.max_body_bytes).await;
    }
    match result {
        Ok(accepted) => {
            app.metrics
                .accepted
                .with_label_values(&[label])
                .inc_by(accepted.accepted as u64);
            if accepted.rejected > 0 {
                app.metrics
                    .rejected
                    .with_label_values(&[label, "invalid_events"])
                    .inc_by(accepted.rejected as u64);
            }
            (accepted.status(), axum::Json(accepted)).into_response()
        }
        Err(e) => {
            let n = events.max(1) as u64;
            app.metrics
                .rejected
                .with_label_values(&[label, e.code()])
                .inc_by(n);
            if matches!(
                e,
                ApiError::Sink(_) | ApiError::Timeout | ApiError::Internal(_)
            ) {
                tracing::warn!(stream = %stream, error = %e, "request failed");
            }
            e.into_response_with(app.limits.retry_after_secs)
        }
    }
}

/// One request, from its headers to Kafka's acknowledgement. `body` is left holding whatever was not read (for
/// draining); `events` is set as soon as the body's event count is known (for metrics).
async fn handle(
    app: &Arc<AppState>,
    name: &str,
    (headers, uri): (&HeaderMap, &Uri),
    body: &mut Option<BodyDataStream>,
    events: &mut usize,
) -> Result<Accepted, ApiError> {
    let limits = &app.limits;
    let deadline = tokio::time::Instant::now() + limits.request_timeout();
    let keys = app.keys.current();
    let key = keys.authenticate(headers)?;
    let options = Options::of(headers, uri)?;
    let stream = app
        .streams
        .get(name)
        .ok_or_else(|| ApiError::UnknownStream(name.to_owned()))?
        .clone();
    if !key.allows(name) {
        return Err(ApiError::Forbidden(name.to_owned()));
    }
    let checked = headers::check(headers, limits.max_body_bytes)?;

    // Both reservations are held until Kafka has acknowledged, so the budget covers everything a request pins.
    let mut held_bytes = admission::reserve_body(app, checked.content_length)?;
    let bytes = body::read_within(body, deadline, limits.max_body_bytes, &mut held_bytes).await?;
    key.quota.admit_bytes(bytes.len())?;

    let job = BuildJob {
        app: app.clone(),
        stream: stream.clone(),
        tenant: key.tenant.clone(),
        quota: key.quota.clone(),
        idempotency: checked.idempotency,
        input: Input::Body(bytes),
        partial: options.partial,
        origins: None,
    };
    let Built {
        records,
        event_ids,
        indexes,
        rejected,
        _events,
        _share,
    } = prepare::build(job, events).await?;

    let accepted = records.len();
    let pending = produce_and_wait(
        app,
        &stream.topic,
        (records, &event_ids, indexes.as_deref()),
        (deadline, options.wait),
        (held_bytes, _events, _share),
    )
    .await?;
    Ok(Accepted {
        accepted,
        event_ids,
        pending,
        rejected: rejected.events,
        details: rejected.errors,
    })
}

/// [`produce`], then what the request asked to wait for: the events still pending when the wait ended (`None`
/// when it waits for Kafka only). `built` is the records with their ids and request indexes (`?partial=true`).
pub(crate) async fn produce_and_wait<H: Send + 'static>(
    app: &AppState,
    topic: &str,
    (records, event_ids, indexes): (Vec<OutRecord>, &[String], Option<&[usize]>),
    (deadline, wait_for): (tokio::time::Instant, WaitFor),
    held: H,
) -> Result<Option<Vec<wait::Pending>>, ApiError> {
    let waits = wait_for != WaitFor::Kafka;
    let positions = produce(app, topic, records, deadline, waits, held).await?;
    // The permits are back: a waiting request holds only its connection.
    Ok(match wait_for {
        WaitFor::Kafka => None,
        w => Some(wait::land(app, w, topic, &positions, (event_ids, indexes)).await),
    })
}

/// Sends `records` and waits for every acknowledgement, or fails at `deadline`; each record's position when
/// `positions` is set. `held` (the request's in-flight
/// permits) is released once librdkafka lets go of the records: at once when they are acknowledged, and after the
/// answer when the deadline passes first, since librdkafka still holds them until its message timeout and the
/// budget must keep counting them.
pub(crate) async fn produce<H: Send + 'static>(
    app: &AppState,
    topic: &str,
    records: Vec<OutRecord>,
    deadline: tokio::time::Instant,
    positions: bool,
    held: H,
) -> Result<Vec<Position>, ApiError> {
    let started = Instant::now();
    let sink = app.sink.clone();
    let topic = topic.to_owned();
    let mut send = Box::pin(async move { sink.send_all(&topic, records, positions).await });
    match tokio::time::timeout_at(deadline, &mut send).await {
        Ok(result) => {
            let placed = result.map_err(ApiError::Sink)?;
            app.metrics
                .produce_seconds
                .observe(started.elapsed().as_secs_f64());
            drop(held);
            Ok(placed)
        }
        Err(_) => {
            tokio::spawn(async move {
                let _ = send.await;
                drop(held);
            });
            Err(ApiError::Timeout)
        }
    }
}
