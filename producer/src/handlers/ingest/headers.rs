//! The checks made on the request's headers before a byte of its body is read: content type, what is left of
//! the content encoding, the idempotency key and the declared length.

use axum::http::{HeaderMap, header};

use crate::error::ApiError;

/// Header whose value makes server-minted event ids deterministic, so a retried request collapses downstream.
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";

/// What the body-related headers said, once they passed.
pub(crate) struct Checked {
    /// The trimmed `Idempotency-Key`, when sent.
    pub(crate) idempotency: Option<String>,
    /// The declared `Content-Length`, when sent and a number; never above the body limit.
    pub(crate) content_length: Option<usize>,
}

/// Checks content type, encoding, idempotency key and declared length, in that order (it decides which error a
/// request with several problems gets).
pub(crate) fn check(headers: &HeaderMap, max_body_bytes: usize) -> Result<Checked, ApiError> {
    check_content_type(headers)?;
    check_encoding(headers)?;
    let idempotency = idempotency_key(headers)?.map(str::to_owned);
    let content_length = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if content_length.is_some_and(|n| n > max_body_bytes) {
        return Err(ApiError::BodyTooLarge(max_body_bytes));
    }
    Ok(Checked {
        idempotency,
        content_length,
    })
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
