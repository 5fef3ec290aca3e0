//! The registry's one error enum, mapped to Confluent's HTTP statuses and `error_code`s in one place.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::api::CONTENT_TYPE;

/// Everything a request or start-up can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// 40401.
    #[error("Subject '{0}' not found.")]
    SubjectNotFound(String),
    /// 40402.
    #[error("Version {0} not found.")]
    VersionNotFound(String),
    /// 40403; `None` when looked up by content rather than id.
    #[error("{}", match .0 { Some(id) => format!("Schema {id} not found"), None => "Schema not found".to_owned() })]
    SchemaNotFound(Option<String>),
    /// 40404.
    #[error("Subject '{0}' was soft deleted.Set permanent=true to delete permanently")]
    SubjectSoftDeleted(String),
    /// 40405.
    #[error("Subject '{0}' was not deleted first before being permanently deleted")]
    SubjectNotSoftDeleted(String),
    /// 40406.
    #[error("Subject '{0}' Version {1} was soft deleted.Set permanent=true to delete permanently")]
    VersionSoftDeleted(String, u32),
    /// 40407.
    #[error("Subject '{0}' Version {1} was not deleted first before being permanently deleted")]
    VersionNotSoftDeleted(String, u32),
    /// 40408.
    #[error("Subject '{0}' does not have subject-level compatibility configured")]
    SubjectConfigNotFound(String),
    /// 409 (Confluent's `error_code` for this is the HTTP status itself).
    #[error("Schema being registered is incompatible with an earlier schema for subject \"{subject}\", details: [{}]", .messages.join(", "))]
    Incompatible {
        subject: String,
        messages: Vec<String>,
    },
    /// 42201.
    #[error("Invalid schema: {0}")]
    InvalidSchema(String),
    /// 42202.
    #[error(
        "The specified version '{0}' is not a valid version id. Allowed values are between [1, 2^31-1] and the string \"latest\""
    )]
    InvalidVersion(String),
    /// 42203.
    #[error(
        "Invalid compatibility level. Valid values are NONE, BACKWARD, FORWARD, FULL, BACKWARD_TRANSITIVE, FORWARD_TRANSITIVE, and FULL_TRANSITIVE: {0}"
    )]
    InvalidCompatibility(String),
    /// 42206.
    #[error("One or more references exist to the schema {{subject={0}, version={1}}}")]
    ReferenceExists(String, u32),
    /// 42208.
    #[error("The specified subject is not valid: {0:?}")]
    InvalidSubject(String),
    /// Malformed JSON body (400).
    #[error("{0}")]
    MalformedJson(String),
    /// JSON of the wrong shape (422).
    #[error("{0}")]
    UnprocessableJson(String),
    /// A body in a media type the API does not speak (415).
    #[error("HTTP 415 Unsupported Media Type: {0}")]
    UnsupportedMediaType(String),
    /// No such route (404).
    #[error("HTTP 404 Not Found")]
    NoRoute,
    /// Route exists, method does not (405).
    #[error("HTTP 405 Method Not Allowed")]
    MethodNotAllowed,
    /// 50001: the log could not be written or read.
    #[error("Error in the backend datastore: {0}")]
    Store(String),
    /// 50001 with 503: the log has not been replayed yet, so answers would be incomplete.
    #[error("The registry is still reading its log; retry shortly")]
    NotReady,
    /// No valid credentials where the request needs some (401).
    #[error("Unauthorized: send HTTP Basic credentials of a registry user")]
    Unauthorized,
    /// The user's role does not allow the request (403).
    #[error("Forbidden: this user's role may not do this")]
    Forbidden,
    /// The listener failed (start-up or serving).
    #[error("server: {0}")]
    Io(#[from] std::io::Error),
}

#[derive(Serialize)]
struct Body<'a> {
    error_code: u32,
    message: &'a str,
}

impl Error {
    /// HTTP status and Confluent `error_code`.
    pub fn codes(&self) -> (StatusCode, u32) {
        match self {
            Error::SubjectNotFound(_) => (StatusCode::NOT_FOUND, 40401),
            Error::VersionNotFound(_) => (StatusCode::NOT_FOUND, 40402),
            Error::SchemaNotFound(_) => (StatusCode::NOT_FOUND, 40403),
            Error::SubjectSoftDeleted(_) => (StatusCode::NOT_FOUND, 40404),
            Error::SubjectNotSoftDeleted(_) => (StatusCode::NOT_FOUND, 40405),
            Error::VersionSoftDeleted(..) => (StatusCode::NOT_FOUND, 40406),
            Error::VersionNotSoftDeleted(..) => (StatusCode::NOT_FOUND, 40407),
            Error::SubjectConfigNotFound(_) => (StatusCode::NOT_FOUND, 40408),
            Error::Incompatible { .. } => (StatusCode::CONFLICT, 409),
            Error::InvalidSchema(_) => (StatusCode::UNPROCESSABLE_ENTITY, 42201),
            Error::InvalidVersion(_) => (StatusCode::UNPROCESSABLE_ENTITY, 42202),
            Error::InvalidCompatibility(_) => (StatusCode::UNPROCESSABLE_ENTITY, 42203),
            Error::ReferenceExists(..) => (StatusCode::UNPROCESSABLE_ENTITY, 42206),
            Error::InvalidSubject(_) => (StatusCode::UNPROCESSABLE_ENTITY, 42208),
            Error::MalformedJson(_) => (StatusCode::BAD_REQUEST, 400),
            Error::UnprocessableJson(_) => (StatusCode::UNPROCESSABLE_ENTITY, 422),
            Error::UnsupportedMediaType(_) => (StatusCode::UNSUPPORTED_MEDIA_TYPE, 415),
            Error::NoRoute => (StatusCode::NOT_FOUND, 404),
            Error::Unauthorized => (StatusCode::UNAUTHORIZED, 40101),
            Error::Forbidden => (StatusCode::FORBIDDEN, 40301),
            Error::MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, 405),
            Error::Store(_) | Error::Io(_) => (StatusCode::INTERNAL_SERVER_ERROR, 50001),
            // 503 so clients (schema_registry_converter among them) treat it as retryable.
            Error::NotReady => (StatusCode::SERVICE_UNAVAILABLE, 50001),
        }
    }

    /// Metric label naming the kind of failure.
    pub fn label(&self) -> &'static str {
        match self {
            Error::SubjectNotFound(_) => "subject_not_found",
            Error::VersionNotFound(_) => "version_not_found",
            Error::SchemaNotFound(_) => "schema_not_found",
            Error::SubjectSoftDeleted(_) => "subject_soft_deleted",
            Error::SubjectNotSoftDeleted(_) => "subject_not_soft_deleted",
            Error::VersionSoftDeleted(..) => "version_soft_deleted",
            Error::VersionNotSoftDeleted(..) => "version_not_soft_deleted",
            Error::SubjectConfigNotFound(_) => "subject_config_not_found",
            Error::Incompatible { .. } => "incompatible_schema",
            Error::InvalidSchema(_) => "invalid_schema",
            Error::InvalidVersion(_) => "invalid_version",
            Error::InvalidCompatibility(_) => "invalid_compatibility",
            Error::ReferenceExists(..) => "reference_exists",
            Error::InvalidSubject(_) => "invalid_subject",
            Error::MalformedJson(_) => "malformed_json",
            Error::UnprocessableJson(_) => "unprocessable_json",
            Error::UnsupportedMediaType(_) => "unsupported_media_type",
            Error::NoRoute => "no_route",
            Error::Unauthorized => "unauthorized",
            Error::Forbidden => "forbidden",
            Error::MethodNotAllowed => "method_not_allowed",
            Error::Store(_) => "store",
            Error::NotReady => "not_ready",
            Error::Io(_) => "io",
        }
    }
}

/// Marks a response as an error of this kind, for the metrics layer.
#[derive(Debug, Clone, Copy)]
pub struct ErrorKind(pub &'static str);

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let (status, error_code) = self.codes();
        if status.is_server_error() {
            tracing::warn!(error = %self, kind = self.label(), "request failed");
        }
        let message = self.to_string();
        let body = serde_json::to_vec(&Body {
            error_code,
            message: &message,
        })
        .unwrap_or_default();
        let mut response = (status, body).into_response();
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
        if matches!(self, Error::Unauthorized) {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"sluice-registry\""),
            );
        }
        response.extensions_mut().insert(ErrorKind(self.label()));
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issue_error_codes() {
        let cases: [(Error, u16, u32); 7] = [
            (Error::SubjectNotFound("s".into()), 404, 40401),
            (Error::VersionNotFound("2".into()), 404, 40402),
            (Error::SchemaNotFound(Some("9".into())), 404, 40403),
            (Error::InvalidSchema("x".into()), 422, 42201),
            (Error::InvalidVersion("x".into()), 422, 42202),
            (
                Error::Incompatible {
                    subject: "s".into(),
                    messages: vec![],
                },
                409,
                409,
            ),
            (Error::Store("down".into()), 500, 50001),
        ];
        for (err, status, code) in cases {
            assert_eq!(
                err.codes(),
                (StatusCode::from_u16(status).expect("valid"), code),
                "{err}"
            );
        }
    }

    #[test]
    fn messages_follow_confluent() {
        assert_eq!(
            Error::SubjectNotFound("s".into()).to_string(),
            "Subject 's' not found."
        );
        assert_eq!(
            Error::SchemaNotFound(Some("9".into())).to_string(),
            "Schema 9 not found"
        );
        assert_eq!(Error::SchemaNotFound(None).to_string(), "Schema not found");
    }
}
