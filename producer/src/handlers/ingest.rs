//! `POST /v1/streams/{stream}/events`: authenticate, bound, read, validate, encode, produce, and answer 202 only
//! once Kafka acknowledged every event.
//!
//! Body: one JSON object (one event) or a JSON array of objects (a batch), `Content-Type: application/json`,
//! optionally `Content-Encoding: gzip` or `zstd`. A batch is all-or-nothing at validation: if any event is invalid,
//! the answer is 400 listing every problem (event index, JSON pointer, message) and nothing is written.

use std::sync::Arc;
use std::time::Instant;

use axum::body::BodyDataStream;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use prometheus::IntGauge;
use serde::Serialize;
use serde_json::Value as Json;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::AppState;
use crate::encode::Encoder;
use crate::error::{ApiError, EventError};
use crate::sink::OutRecord;
use crate::stream::{IdSource, ServerSide, Stream};
use crate::validate::ValidateLimits;

/// How long an error answer waits for the client to finish sending a body nobody will read.
const DRAIN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// Header whose value makes server-minted event ids deterministic, so a retried request collapses downstream.
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";

/// The 202 body.
#[derive(Debug, Serialize)]
pub struct Accepted {
    /// Events written and acknowledged.
    pub accepted: usize,
    /// Their ids, in request order.
    pub event_ids: Vec<String>,
}

/// Permits held for the life of a request, mirrored in a gauge.
struct Held {
    permit: OwnedSemaphorePermit,
    sem: Arc<Semaphore>,
    gauge: IntGauge,
    what: &'static str,
    n: usize,
}

impl Held {
    fn try_new(
        sem: &Arc<Semaphore>,
        n: usize,
        gauge: &IntGauge,
        what: &'static str,
    ) -> Result<Self, ApiError> {
        let n32 = u32::try_from(n).map_err(|_| ApiError::Overloaded(what))?;
        let permit = sem
            .clone()
            .try_acquire_many_owned(n32)
            .map_err(|_| ApiError::Overloaded(what))?;
        gauge.add(n as i64);
        Ok(Self {
            permit,
            sem: sem.clone(),
            gauge: gauge.clone(),
            what,
            n,
        })
    }

    /// Takes `more` permits on top of those held, or fails with 429 when they are not free.
    fn grow(&mut self, more: usize) -> Result<(), ApiError> {
        let n32 = u32::try_from(more).map_err(|_| ApiError::Overloaded(self.what))?;
        let extra = self
            .sem
            .clone()
            .try_acquire_many_owned(n32)
            .map_err(|_| ApiError::Overloaded(self.what))?;
        self.permit.merge(extra);
        self.gauge.add(more as i64);
        self.n += more;
        Ok(())
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.gauge.sub(self.n as i64);
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
    let result = handle(&app, &stream, &parts.headers, &mut body, &mut events).await;
    if let Some(rest) = body.take()
        && result.is_err()
    {
        drain(rest, app.limits.max_body_bytes).await;
    }
    match result {
        Ok(accepted) => {
            app.metrics
                .accepted
                .with_label_values(&[label])
                .inc_by(accepted.accepted as u64);
            (StatusCode::ACCEPTED, axum::Json(accepted)).into_response()
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

fn check_content_type(headers: &HeaderMap) -> Result<(), ApiError> {
    let mut values = headers.get_all(header::CONTENT_TYPE).iter();
    let (Some(ct), None) = (values.next(), values.next()) else {
        return Err(ApiError::UnsupportedContentType(
            "none, or more than one".into(),
        ));
    };
    let ct = String::from_utf8_lossy(ct.as_bytes()).into_owned();
    let mime = ct.split(';').next().unwrap_or_default().trim();
    if mime.eq_ignore_ascii_case("application/json") {
        Ok(())
    } else {
        Err(ApiError::UnsupportedContentType(ct))
    }
}

/// What is left of `Content-Encoding` after the decompression layer took gzip and zstd off.
fn check_encoding(headers: &HeaderMap) -> Result<(), ApiError> {
    match headers.get(header::CONTENT_ENCODING) {
        None => Ok(()),
        Some(v) if v.as_bytes().eq_ignore_ascii_case(b"identity") => Ok(()),
        Some(v) => Err(ApiError::UnsupportedEncoding(
            String::from_utf8_lossy(v.as_bytes()).into_owned(),
        )),
    }
}

fn idempotency_key(headers: &HeaderMap) -> Result<Option<&str>, ApiError> {
    let Some(v) = headers.get(IDEMPOTENCY_KEY) else {
        return Ok(None);
    };
    match v.to_str() {
        Ok(s) if !s.trim().is_empty() && s.len() <= 255 => Ok(Some(s.trim())),
        _ => Err(ApiError::BadHeader(
            "Idempotency-Key must be 1 to 255 visible ASCII characters".into(),
        )),
    }
}

/// Reads the body up to `max` bytes (after decompression). On error the rest stays in `body` for [`drain`].
///
/// Bytes are reserved as they arrive (`held` grows, doubling), so a compressed or chunked body of unknown size
/// holds only what it really decompresses to, and a reservation that cannot grow is a 429.
async fn read_body(
    body: &mut BodyDataStream,
    max: usize,
    held: &mut Held,
) -> Result<Vec<u8>, ApiError> {
    let mut buf = Vec::with_capacity(held.n.min(max));
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| ApiError::BadBody(error_chain(&e)))?;
        let needed = buf.len() + chunk.len();
        if needed > max {
            return Err(ApiError::BodyTooLarge(max));
        }
        if needed > held.n {
            let target = needed.max(held.n.saturating_mul(2)).min(max);
            held.grow(target - held.n)?;
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf)
}

/// Reads and discards what the client is still sending, so it can read our error answer: closing a socket with
/// unread data makes the kernel reset the connection, and the client sees a broken pipe instead of a 4xx.
async fn drain(mut body: BodyDataStream, max: usize) {
    let _ = tokio::time::timeout(DRAIN_TIMEOUT, async {
        let mut seen = 0usize;
        while let Some(Ok(chunk)) = body.next().await {
            seen += chunk.len();
            if seen > max {
                break;
            }
        }
    })
    .await;
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut msg = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        source = s.source();
    }
    msg
}

/// What a body of unknown length reserves before its first byte arrives.
const INITIAL_RESERVE_BYTES: usize = 16 * 1024;

/// Bodies above this are parsed, validated and encoded on the blocking pool, off the async workers.
const INLINE_BODY_BYTES: usize = 64 * 1024;

async fn handle(
    app: &Arc<AppState>,
    name: &str,
    headers: &HeaderMap,
    body: &mut Option<BodyDataStream>,
    events: &mut usize,
) -> Result<Accepted, ApiError> {
    let limits = &app.limits;
    let deadline = tokio::time::Instant::now() + limits.request_timeout();
    let key = app.keys.authenticate(headers)?;
    let stream = app
        .streams
        .get(name)
        .ok_or_else(|| ApiError::UnknownStream(name.to_owned()))?
        .clone();
    if !key.allows(name) {
        return Err(ApiError::Forbidden(name.to_owned()));
    }
    check_content_type(headers)?;
    check_encoding(headers)?;
    let idempotency = idempotency_key(headers)?.map(str::to_owned);
    let content_length = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if content_length.is_some_and(|n| n > limits.max_body_bytes) {
        return Err(ApiError::BodyTooLarge(limits.max_body_bytes));
    }
    // A declared length is reserved up front; a body of unknown size (chunked, or compressed) starts small.
    let reserve = content_length
        .unwrap_or(INITIAL_RESERVE_BYTES)
        .clamp(1, limits.max_body_bytes);
    let mut held_bytes = Held::try_new(
        &app.bytes_in_flight,
        reserve,
        &app.metrics.in_flight_bytes,
        "bytes",
    )?;
    let Some(stream_body) = body.as_mut() else {
        return Err(ApiError::Internal("body already taken".into()));
    };
    let read = tokio::time::timeout_at(
        deadline,
        read_body(stream_body, limits.max_body_bytes, &mut held_bytes),
    )
    .await;
    let body = match read {
        Ok(Ok(bytes)) => {
            *body = None;
            bytes
        }
        // A client too slow to send its body is not worth waiting for again.
        Err(_) => {
            *body = None;
            return Err(ApiError::BodyTimeout);
        }
        Ok(Err(e)) => return Err(e),
    };

    let job = BuildJob {
        app: app.clone(),
        stream: stream.clone(),
        tenant: key.tenant.clone(),
        idempotency,
        body,
    };
    let (built, count) = if job.body.len() <= INLINE_BODY_BYTES {
        job.run()
    } else {
        tokio::task::spawn_blocking(move || job.run())
            .await
            .map_err(|e| ApiError::Internal(e.to_string()))?
    };
    *events = count;
    let Built {
        records,
        event_ids,
        _events,
    } = built?;

    let started = Instant::now();
    tokio::time::timeout_at(deadline, app.sink.send_all(&stream.topic, records))
        .await
        .map_err(|_| ApiError::Timeout)?
        .map_err(ApiError::Sink)?;
    app.metrics
        .produce_seconds
        .observe(started.elapsed().as_secs_f64());
    Ok(Accepted {
        accepted: count,
        event_ids,
    })
}

/// A request's events, encoded and ready for the sink, with their in-flight permits.
struct Built {
    records: Vec<OutRecord>,
    event_ids: Vec<String>,
    _events: Held,
}

/// Everything needed to turn a body into records, owned so it can run on the blocking pool.
struct BuildJob {
    app: Arc<AppState>,
    stream: Arc<Stream>,
    tenant: String,
    idempotency: Option<String>,
    body: Vec<u8>,
}

impl BuildJob {
    /// Parses, bounds, validates and encodes; also returns how many events the body held (for metrics).
    fn run(self) -> (Result<Built, ApiError>, usize) {
        let mut count = 0;
        let built = self.build(&mut count);
        (built, count)
    }

    fn build(self, count: &mut usize) -> Result<Built, ApiError> {
        let BuildJob {
            app,
            stream,
            tenant,
            idempotency,
            body,
        } = self;
        let limits = &app.limits;
        if body.iter().all(u8::is_ascii_whitespace) {
            return Err(ApiError::EmptyBody);
        }
        let json: Json =
            serde_json::from_slice(&body).map_err(|e| ApiError::BadJson(e.to_string()))?;
        drop(body);
        let items = match json {
            Json::Array(items) => items,
            obj @ Json::Object(_) => vec![obj],
            _ => {
                return Err(ApiError::BadJson(
                    "expected an event object or an array of event objects".into(),
                ));
            }
        };
        *count = items.len();
        if items.is_empty() {
            return Err(ApiError::EmptyBatch);
        }
        if items.len() > limits.max_batch_events {
            return Err(ApiError::BatchTooLarge {
                got: items.len(),
                max: limits.max_batch_events,
            });
        }
        let events = Held::try_new(
            &app.events_in_flight,
            items.len(),
            &app.metrics.in_flight_events,
            "events",
        )?;

        let ids = match &idempotency {
            Some(k) => IdSource::Idempotency {
                tenant: &tenant,
                stream: &stream.name,
                key: k,
            },
            None => IdSource::Mint,
        };
        let server = ServerSide {
            tenant: &tenant,
            received_at: chrono::Utc::now(),
            ids,
        };
        let vlimits = ValidateLimits {
            max_string_bytes: limits.max_string_bytes,
        };
        let total = items.len();
        let mut prepared = Vec::with_capacity(total);
        let mut errors = Vec::new();
        let mut invalid = 0;
        for (index, item) in items.into_iter().enumerate() {
            match stream.prepare(item, index, &server, vlimits) {
                Ok(p) => prepared.push(p),
                Err(errs) => {
                    invalid += 1;
                    errors.extend(errs.into_iter().map(|e| EventError {
                        index,
                        pointer: e.pointer,
                        message: e.message,
                    }));
                }
            }
        }
        if invalid > 0 {
            return Err(ApiError::Invalid {
                invalid,
                total,
                errors,
            });
        }

        let encoder = Encoder::new(stream.schema(), stream.schema_id)
            .map_err(|e| ApiError::Internal(e.to_string()))?;
        let mut records = Vec::with_capacity(total);
        let mut event_ids = Vec::with_capacity(total);
        for (index, p) in prepared.into_iter().enumerate() {
            let payload = encoder
                .encode(&p.value)
                .map_err(|e| ApiError::Internal(e.to_string()))?;
            // Checked before anything is sent, so an oversize event cannot leave half a batch written.
            if payload.len() + p.key.len() > limits.max_message_bytes {
                return Err(ApiError::EventTooLarge {
                    index,
                    size: payload.len(),
                    max: limits.max_message_bytes,
                });
            }
            records.push(OutRecord {
                key: p.key,
                payload,
            });
            if let Some(id) = p.event_id {
                event_ids.push(id);
            }
        }
        Ok(Built {
            records,
            event_ids,
            _events: events,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn content_type_must_be_json() {
        let mut h = HeaderMap::new();
        assert!(matches!(
            check_content_type(&h),
            Err(ApiError::UnsupportedContentType(_))
        ));
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("Application/JSON; charset=utf-8"),
        );
        assert!(check_content_type(&h).is_ok());
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        assert!(matches!(
            check_content_type(&h),
            Err(ApiError::UnsupportedContentType(_))
        ));
    }

    #[test]
    fn leftover_encodings_are_refused() {
        let mut h = HeaderMap::new();
        assert!(check_encoding(&h).is_ok());
        h.insert(header::CONTENT_ENCODING, HeaderValue::from_static("br"));
        assert!(matches!(
            check_encoding(&h),
            Err(ApiError::UnsupportedEncoding(_))
        ));
    }
}
