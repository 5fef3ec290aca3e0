//! Confluent's request and response bodies, its content types, and how path parts are read.

use axum::http::{HeaderMap, header};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::compat::CompatibilityLevel;
use crate::error::Error;
use crate::records::Reference;

/// The content type of every answer.
pub const CONTENT_TYPE: &str = "application/vnd.schemaregistry.v1+json";

/// Answer media types, in Confluent's order of preference.
const PRODUCED: [&str; 3] = [
    CONTENT_TYPE,
    "application/vnd.schemaregistry+json",
    "application/json",
];

/// The answer media type for an `Accept` header: the most preferred one it names, else the v1 type.
pub fn negotiate(accept: Option<&str>) -> &'static str {
    let Some(accept) = accept else {
        return CONTENT_TYPE;
    };
    let named: Vec<&str> = accept
        .split(',')
        .map(|t| t.split(';').next().unwrap_or_default().trim())
        .collect();
    PRODUCED
        .into_iter()
        .find(|p| named.iter().any(|n| n.eq_ignore_ascii_case(p)))
        .unwrap_or(CONTENT_TYPE)
}

/// Request media types Confluent's server consumes.
const ACCEPTED: [&str; 4] = [
    "application/vnd.schemaregistry.v1+json",
    "application/vnd.schemaregistry+json",
    "application/json",
    "application/octet-stream",
];

/// Parses a JSON request body sent with one of Confluent's media types (or none).
pub fn parse_body<T: DeserializeOwned>(headers: &HeaderMap, body: &[u8]) -> Result<T, Error> {
    if let Some(value) = headers.get(header::CONTENT_TYPE) {
        let text = value.to_str().unwrap_or_default();
        let essence = text.split(';').next().unwrap_or_default().trim();
        if !ACCEPTED.iter().any(|a| a.eq_ignore_ascii_case(essence)) {
            return Err(Error::UnsupportedMediaType(text.to_owned()));
        }
    }
    serde_json::from_slice(body).map_err(|e| match e.classify() {
        serde_json::error::Category::Data => {
            Error::UnprocessableJson(format!("Unrecognized request body: {e}"))
        }
        _ => Error::MalformedJson(format!("Malformed JSON: {e}")),
    })
}

/// Body of register, look-up and compatibility requests.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SchemaRequest {
    /// The schema text.
    #[serde(default)]
    pub schema: Option<String>,
    /// `AVRO` (the default when absent); other types are rejected with 42201.
    #[serde(default)]
    pub schema_type: Option<String>,
    /// Named types this schema takes from other subjects.
    #[serde(default)]
    pub references: Option<Vec<ReferenceRequest>>,
}

/// A reference as clients send it (schema_registry_converter adds null `properties`/`tags`).
#[derive(Debug, Clone, Deserialize)]
pub struct ReferenceRequest {
    /// Type name used in the schema.
    pub name: String,
    /// Subject holding the referenced schema.
    pub subject: String,
    /// Its version; -1 means the latest.
    pub version: i64,
}

/// Body of `PUT /config` and `PUT /config/{subject}`.
#[derive(Debug, Clone, Deserialize)]
pub struct ConfigRequest {
    /// The new level (Confluent also accepts the name it answers with).
    #[serde(alias = "compatibilityLevel")]
    pub compatibility: String,
}

/// Answer of `POST /subjects/{subject}/versions`.
#[derive(Debug, Clone, Serialize)]
pub struct RegisterResponse {
    /// The schema's registry-wide id.
    pub id: u32,
}

/// A schema fetched by id.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SchemaResponse {
    /// Omitted for Avro, as Confluent does.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub schema_type: Option<String>,
    /// The schema text.
    pub schema: String,
    /// Omitted when empty.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub references: Vec<Reference>,
}

/// One version of a subject: answer of version GETs and of look-ups.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SubjectVersionResponse {
    /// Subject name.
    pub subject: String,
    /// Version within the subject.
    pub version: u32,
    /// Registry-wide schema id.
    pub id: u32,
    /// Omitted for Avro.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub schema_type: Option<String>,
    /// Omitted when empty.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub references: Vec<Reference>,
    /// The schema text.
    pub schema: String,
}

/// A subject and version using a schema id.
#[derive(Debug, Clone, Serialize)]
pub struct SubjectVersion {
    /// Subject name.
    pub subject: String,
    /// Version within it.
    pub version: u32,
}

/// Answer of `GET /config...`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ConfigResponse {
    /// The level in force.
    pub compatibility_level: CompatibilityLevel,
}

/// Answer of `PUT /config...`.
#[derive(Debug, Clone, Serialize)]
pub struct ConfigUpdateResponse {
    /// The level just set.
    pub compatibility: CompatibilityLevel,
}

/// Answer of `POST /compatibility/...`.
#[derive(Debug, Clone, Serialize)]
pub struct CompatibilityResponse {
    /// Whether the schema passes.
    pub is_compatible: bool,
    /// Why not; only with `?verbose=true`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub messages: Option<Vec<String>>,
}

/// A `{version}` path part.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VersionSpec {
    /// `latest` or `-1`.
    Latest,
    /// A number in `[1, 2^31-1]`.
    Number(u32),
}

impl VersionSpec {
    /// Reads a path part, failing with 42202 as Confluent does.
    pub fn parse(text: &str) -> Result<Self, Error> {
        if text.eq_ignore_ascii_case("latest") {
            return Ok(Self::Latest);
        }
        match text.parse::<i64>() {
            Ok(-1) => Ok(Self::Latest),
            Ok(n) if (1..=i64::from(i32::MAX)).contains(&n) => Ok(Self::Number(n as u32)),
            _ => Err(Error::InvalidVersion(text.to_owned())),
        }
    }
}

/// Rejects subject names Confluent rejects: empty, or holding control characters.
pub fn validate_subject(subject: &str) -> Result<(), Error> {
    if subject.trim().is_empty() || subject.chars().any(char::is_control) {
        return Err(Error::InvalidSubject(subject.to_owned()));
    }
    Ok(())
}

/// Whether a query flag such as `?deleted=true` is set.
pub fn flag(query: &std::collections::HashMap<String, String>, name: &str) -> bool {
    query
        .get(name)
        .is_some_and(|v| v.eq_ignore_ascii_case("true"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn versions() {
        assert_eq!(VersionSpec::parse("latest").ok(), Some(VersionSpec::Latest));
        assert_eq!(VersionSpec::parse("-1").ok(), Some(VersionSpec::Latest));
        assert_eq!(VersionSpec::parse("3").ok(), Some(VersionSpec::Number(3)));
        for bad in ["0", "-2", "x", "2147483648", ""] {
            assert!(
                matches!(VersionSpec::parse(bad), Err(Error::InvalidVersion(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn content_types() {
        let with = |ct: &str| {
            let mut h = HeaderMap::new();
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_str(ct).expect("header"),
            );
            h
        };
        let body = br#"{"schema":"\"int\""}"#;
        for ok in [
            CONTENT_TYPE,
            "application/json; charset=utf-8",
            "application/vnd.schemaregistry+json",
        ] {
            assert!(parse_body::<SchemaRequest>(&with(ok), body).is_ok(), "{ok}");
        }
        assert!(parse_body::<SchemaRequest>(&HeaderMap::new(), body).is_ok());
        assert!(matches!(
            parse_body::<SchemaRequest>(&with("text/plain"), body),
            Err(Error::UnsupportedMediaType(_))
        ));
        assert!(matches!(
            parse_body::<SchemaRequest>(&HeaderMap::new(), b"{"),
            Err(Error::MalformedJson(_))
        ));
        assert!(matches!(
            parse_body::<SchemaRequest>(&HeaderMap::new(), br#"{"schema":1}"#),
            Err(Error::UnprocessableJson(_))
        ));
    }

    #[test]
    fn answer_type_follows_accept() {
        assert_eq!(negotiate(None), CONTENT_TYPE);
        assert_eq!(negotiate(Some("*/*")), CONTENT_TYPE);
        assert_eq!(negotiate(Some("application/json")), "application/json");
        assert_eq!(
            negotiate(Some(
                "application/json; q=0.5, application/vnd.schemaregistry.v1+json"
            )),
            CONTENT_TYPE
        );
        assert_eq!(
            negotiate(Some("application/vnd.schemaregistry+json")),
            "application/vnd.schemaregistry+json"
        );
    }

    #[test]
    fn converter_style_references_parse() {
        let body = br#"{"schema":"{}","schemaType":"AVRO","references":[{"name":"a.B","subject":"b","version":1,"properties":null,"tags":null}]}"#;
        let req: SchemaRequest = parse_body(&HeaderMap::new(), body).expect("parses");
        assert_eq!(req.references.map(|r| r.len()), Some(1));
    }
}
