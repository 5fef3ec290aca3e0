//! The producer's one error type, mapped to an HTTP status, a stable code and a metric label in one place.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::sink::SinkError;

/// One problem with one event of a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EventError {
    /// Position of the event in the request (0 for a single object).
    pub index: usize,
    /// JSON pointer into that event.
    pub pointer: String,
    /// What is wrong.
    pub message: String,
}

/// Every way a request can fail. Nothing is produced for any of them except `Sink`, where part of a batch may have
/// been written before the failure (retry with the same event ids or `Idempotency-Key` to collapse duplicates).
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("missing ingestion key: send `Authorization: Bearer <key>` or `X-Api-Key: <key>`")]
    MissingKey,
    #[error("unknown ingestion key")]
    BadKey,
    #[error("this ingestion key may not write to stream `{0}`")]
    Forbidden(String),
    #[error("unknown stream `{0}`")]
    UnknownStream(String),
    #[error("unsupported content type {0:?}: send application/json")]
    UnsupportedContentType(String),
    #[error("unsupported content encoding {0:?}: send gzip, zstd or identity")]
    UnsupportedEncoding(String),
    #[error("request body is larger than {0} bytes (after decompression)")]
    BodyTooLarge(usize),
    #[error("batch has {got} events, more than the limit of {max}")]
    BatchTooLarge { got: usize, max: usize },
    #[error("event {index} encodes to {size} bytes, more than the limit of {max}")]
    EventTooLarge {
        index: usize,
        size: usize,
        max: usize,
    },
    #[error("request body is empty")]
    EmptyBody,
    #[error("batch has no events")]
    EmptyBatch,
    #[error("request body could not be read: {0}")]
    BadBody(String),
    #[error("bad header: {0}")]
    BadHeader(String),
    #[error("{0}")]
    BadQuery(String),
    #[error("request body is not valid JSON: {0}")]
    BadJson(String),
    #[error("{invalid} of {total} events are invalid; nothing was written")]
    Invalid {
        invalid: usize,
        total: usize,
        errors: Vec<EventError>,
    },
    #[error("too much work in flight ({0}); retry later")]
    Overloaded(&'static str),
    #[error("this key's quota of {limit} {what} is used up; retry after {retry_after:?}")]
    QuotaExceeded {
        what: &'static str,
        limit: u32,
        retry_after: std::time::Duration,
    },
    #[error(
        "Idempotency-Key {0:?} was used with a different body; send a new key for new events, or the first body again"
    )]
    IdempotencyKeyReused(String),
    #[error("request body was not received within the request timeout")]
    BodyTimeout,
    #[error(
        "not acknowledged by Kafka within the request timeout; some events may have been written"
    )]
    Timeout,
    #[error(
        "Kafka did not acknowledge every event ({0}); some may have been written, retry with the same ids"
    )]
    Sink(SinkError),
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    /// Status, stable code (also the metric label) and whether clients should retry after a pause.
    pub fn parts(&self) -> (StatusCode, &'static str, bool) {
        match self {
            ApiError::MissingKey => (StatusCode::UNAUTHORIZED, "missing_key", false),
            ApiError::BadKey => (StatusCode::UNAUTHORIZED, "bad_key", false),
            ApiError::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden", false),
            ApiError::UnknownStream(_) => (StatusCode::NOT_FOUND, "unknown_stream", false),
            ApiError::UnsupportedContentType(_) => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_content_type",
                false,
            ),
            ApiError::UnsupportedEncoding(_) => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_encoding",
                false,
            ),
            ApiError::BodyTooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "body_too_large", false),
            ApiError::BatchTooLarge { .. } => {
                (StatusCode::PAYLOAD_TOO_LARGE, "batch_too_large", false)
            }
            ApiError::EventTooLarge { .. } => {
                (StatusCode::PAYLOAD_TOO_LARGE, "event_too_large", false)
            }
            ApiError::EmptyBody => (StatusCode::BAD_REQUEST, "empty_body", false),
            ApiError::EmptyBatch => (StatusCode::BAD_REQUEST, "empty_batch", false),
            ApiError::BadBody(_) => (StatusCode::BAD_REQUEST, "bad_body", false),
            ApiError::BadHeader(_) => (StatusCode::BAD_REQUEST, "bad_header", false),
            ApiError::BadQuery(_) => (StatusCode::BAD_REQUEST, "bad_query", false),
            ApiError::BadJson(_) => (StatusCode::BAD_REQUEST, "bad_json", false),
            ApiError::Invalid { .. } => (StatusCode::BAD_REQUEST, "invalid_events", false),
            ApiError::Overloaded(_) => (StatusCode::TOO_MANY_REQUESTS, "overloaded", true),
            ApiError::QuotaExceeded { .. } => {
                (StatusCode::TOO_MANY_REQUESTS, "quota_exceeded", true)
            }
            ApiError::IdempotencyKeyReused(_) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "idempotency_key_reused",
                false,
            ),
            ApiError::BodyTimeout => (StatusCode::REQUEST_TIMEOUT, "body_timeout", false),
            ApiError::Timeout => (StatusCode::SERVICE_UNAVAILABLE, "timeout", true),
            ApiError::Sink(SinkError::QueueFull) => {
                (StatusCode::SERVICE_UNAVAILABLE, "queue_full", true)
            }
            ApiError::Sink(SinkError::TooLarge(_)) => {
                (StatusCode::PAYLOAD_TOO_LARGE, "message_too_large", false)
            }
            ApiError::Sink(SinkError::Unavailable(_)) => {
                (StatusCode::SERVICE_UNAVAILABLE, "broker_unavailable", true)
            }
            ApiError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal", false),
        }
    }

    /// The stable machine-readable code.
    pub fn code(&self) -> &'static str {
        self.parts().1
    }

    /// The JSON body clients get.
    pub fn body(&self) -> ErrorBody {
        let details = match self {
            ApiError::Invalid { errors, .. } => errors.clone(),
            _ => Vec::new(),
        };
        ErrorBody {
            error: self.code(),
            message: self.to_string(),
            details,
        }
    }

    /// Builds the response, adding `Retry-After` (seconds) when the client should come back later.
    pub fn into_response_with(self, retry_after_secs: u64) -> Response {
        let (status, _, retry) = self.parts();
        let mut resp = (status, Json(self.body())).into_response();
        let retry_after_secs = match &self {
            // A quota knows when its tokens are back: whole seconds, at least one.
            ApiError::QuotaExceeded {
                limit, retry_after, ..
            } => {
                let secs = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
                let secs = secs.max(1);
                for (name, value) in [
                    ("x-ratelimit-limit", u64::from(*limit)),
                    ("x-ratelimit-remaining", 0),
                    ("x-ratelimit-reset", secs),
                ] {
                    resp.headers_mut().insert(name, HeaderValue::from(value));
                }
                secs
            }
            _ => retry_after_secs,
        };
        if retry && let Ok(v) = HeaderValue::from_str(&retry_after_secs.to_string()) {
            resp.headers_mut().insert(header::RETRY_AFTER, v);
        }
        if matches!(self, ApiError::MissingKey | ApiError::BadKey) {
            resp.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        resp
    }
}

/// The error document: `{"error": code, "message": text, "details": [per-event problems]}`.
#[derive(Debug, Serialize)]
pub struct ErrorBody {
    /// Stable code, e.g. `invalid_events`.
    pub error: &'static str,
    /// Human-readable explanation.
    pub message: String,
    /// Per-event, per-field problems (only for `invalid_events`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub details: Vec<EventError>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retryable_errors_carry_retry_after() {
        let r = ApiError::Overloaded("events").into_response_with(2);
        assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(
            r.headers().get(header::RETRY_AFTER).map(|v| v.as_bytes()),
            Some(&b"2"[..])
        );
        let r = ApiError::Sink(SinkError::QueueFull).into_response_with(1);
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(r.headers().contains_key(header::RETRY_AFTER));
        let r = ApiError::EmptyBody.into_response_with(1);
        assert!(!r.headers().contains_key(header::RETRY_AFTER));
    }
}
