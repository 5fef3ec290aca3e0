//! One Segment message → one event of the `segment` stream: the type checked against what it requires, the ids
//! and names lifted into their own fields, the commonly queried context fields into columns, `properties`,
//! `traits`, `context` and `integrations` kept whole as JSON text, and the timestamp corrected for the client's
//! clock as Segment does it.

use chrono::{DateTime, Utc};
use serde_json::{Map, Value as Json, json};

use crate::error::EventError;

/// Segment's limit on one message, serialized.
pub const MAX_MESSAGE_BYTES: usize = 32 * 1024;

/// The message types of the tracking API.
pub const TYPES: [&str; 6] = ["track", "identify", "page", "screen", "group", "alias"];

/// What every message of a request shares.
pub(super) struct Envelope<'a> {
    /// The type the route fixes (`/v1/track`…), or `None` for `/v1/batch`, where each message names its own.
    pub(super) route_type: Option<&'static str>,
    /// The batch's `sentAt`, used when a message has none of its own.
    pub(super) sent_at: Option<&'a Json>,
    /// When the server received the request.
    pub(super) received_at: DateTime<Utc>,
}

/// Converts message `index` (`size` bytes as sent), or says everything that is wrong with it.
pub(super) fn convert(
    index: usize,
    message: Json,
    size: usize,
    env: &Envelope<'_>,
) -> Result<Json, Vec<EventError>> {
    let mut errors = Vec::new();
    let mut fail = |pointer: &str, message: String| {
        errors.push(EventError {
            index,
            pointer: pointer.to_owned(),
            message,
        })
    };
    if size > MAX_MESSAGE_BYTES {
        fail(
            "",
            format!("message is {size} bytes, more than Segment's limit of {MAX_MESSAGE_BYTES}"),
        );
    }
    let Json::Object(m) = message else {
        fail("", "expected a message object".into());
        return Err(errors);
    };
    let kind = match (env.route_type, m.get("type")) {
        (Some(route), None) => Some(route),
        (Some(route), Some(Json::String(t))) if t == route => Some(route),
        (Some(route), Some(other)) => {
            fail(
                "/type",
                format!("is {other}, but this route takes {route} messages"),
            );
            None
        }
        (None, Some(Json::String(t))) => match TYPES.iter().find(|k| **k == t.as_str()) {
            Some(k) => Some(*k),
            None => {
                fail(
                    "/type",
                    format!(
                        "unknown message type {t:?}; expected one of {}",
                        TYPES.join(", ")
                    ),
                );
                None
            }
        },
        (None, None) => {
            fail("/type", "is required".into());
            None
        }
        (None, Some(other)) => {
            fail("/type", format!("expected a string, got {other}"));
            None
        }
    };

    let user_id = id_text(&m, "userId", &mut fail);
    let anonymous_id = id_text(&m, "anonymousId", &mut fail);
    let message_id = id_text(&m, "messageId", &mut fail);
    let group_id = id_text(&m, "groupId", &mut fail);
    let previous_id = id_text(&m, "previousId", &mut fail);
    let event = id_text(&m, "event", &mut fail);
    let name = id_text(&m, "name", &mut fail);
    if user_id.is_none() && anonymous_id.is_none() && kind.is_some() {
        fail(
            "/userId",
            "a message needs a userId or an anonymousId".into(),
        );
    }
    match kind {
        Some("track") if event.is_none() => {
            fail("/event", "a track message needs an event name".into())
        }
        Some("group") if group_id.is_none() => {
            fail("/groupId", "a group message needs a groupId".into())
        }
        Some("alias") if previous_id.is_none() => {
            fail("/previousId", "an alias message needs a previousId".into())
        }
        _ => {}
    }

    let time = |key: &str,
                v: Option<&Json>,
                fail: &mut dyn FnMut(&str, String)|
     -> Option<DateTime<Utc>> {
        match v {
            None | Some(Json::Null) => None,
            Some(Json::String(s)) => match DateTime::parse_from_rfc3339(s) {
                Ok(t) => Some(t.with_timezone(&Utc)),
                Err(e) => {
                    fail(
                        &format!("/{key}"),
                        format!("{s:?} is not an ISO 8601 date-time: {e}"),
                    );
                    None
                }
            },
            Some(other) => {
                fail(
                    &format!("/{key}"),
                    format!("expected an ISO 8601 string, got {other}"),
                );
                None
            }
        }
    };
    let original = time("originalTimestamp", m.get("originalTimestamp"), &mut fail)
        .or_else(|| time("timestamp", m.get("timestamp"), &mut fail));
    let sent_at = match m.get("sentAt") {
        Some(v) => time("sentAt", Some(v), &mut fail),
        None => time("sentAt", env.sent_at, &mut fail),
    };
    let object = |key: &str, fail: &mut dyn FnMut(&str, String)| -> String {
        match m.get(key) {
            None | Some(Json::Null) => "{}".to_owned(),
            Some(v @ Json::Object(_)) => v.to_string(),
            Some(other) => {
                fail(
                    &format!("/{key}"),
                    format!("expected an object, got {other}"),
                );
                String::new()
            }
        }
    };
    let properties = object("properties", &mut fail);
    let mut traits = object("traits", &mut fail);
    let context_text = object("context", &mut fail);
    let integrations = object("integrations", &mut fail);
    if !errors.is_empty() {
        return Err(errors);
    }
    let context = m.get("context").and_then(Json::as_object);
    // Server-side SDKs send identify traits at the top level, browser ones may put them in context.traits.
    if traits == "{}"
        && let Some(t @ Json::Object(_)) = context.and_then(|c| c.get("traits"))
    {
        traits = t.to_string();
    }
    let at = |path: &[&str]| -> Json {
        let mut v: Option<&Json> = None;
        for (i, p) in path.iter().enumerate() {
            v = if i == 0 {
                context.and_then(|c| c.get(*p))
            } else {
                v.and_then(|x| x.get(*p))
            };
        }
        match v {
            Some(Json::String(s)) => Json::String(s.clone()),
            Some(Json::Number(n)) => Json::String(n.to_string()),
            _ => Json::Null,
        }
    };
    let timestamp = segment_timestamp(original, sent_at, env.received_at);
    let ms = |t: Option<DateTime<Utc>>| t.map_or(Json::Null, |t| json!(t.timestamp_millis()));
    Ok(json!({
        "message_id": message_id,
        "type": kind,
        "event": event,
        "name": name,
        "user_id": user_id,
        "anonymous_id": anonymous_id,
        "group_id": group_id,
        "previous_id": previous_id,
        "timestamp": timestamp.timestamp_millis(),
        "original_timestamp": ms(original),
        "sent_at": ms(sent_at),
        "context_library_name": at(&["library", "name"]),
        "context_library_version": at(&["library", "version"]),
        "context_page_url": at(&["page", "url"]),
        "context_page_path": at(&["page", "path"]),
        "context_user_agent": at(&["userAgent"]),
        "context_ip": at(&["ip"]),
        "context_locale": at(&["locale"]),
        "properties": properties,
        "traits": traits,
        "context": context_text,
        "integrations": integrations,
    }))
}

/// Segment's clock-skew correction: the client's clock may be off, but the time between its event and its send
/// is not, so `timestamp = received_at - (sent_at - original)`; without `sent_at` the client's time stands, and
/// without either the server's receive time is used.
pub(super) fn segment_timestamp(
    original: Option<DateTime<Utc>>,
    sent_at: Option<DateTime<Utc>>,
    received_at: DateTime<Utc>,
) -> DateTime<Utc> {
    match (original, sent_at) {
        (Some(o), Some(s)) => received_at - (s - o),
        (Some(o), None) => o,
        (None, _) => received_at,
    }
}

/// A string id or name field (numbers are taken as their text, as Segment does); `None` when absent or empty.
fn id_text(
    m: &Map<String, Json>,
    key: &str,
    fail: &mut impl FnMut(&str, String),
) -> Option<String> {
    match m.get(key) {
        None | Some(Json::Null) => None,
        Some(Json::String(s)) if s.is_empty() => None,
        Some(Json::String(s)) => Some(s.clone()),
        Some(Json::Number(n)) => Some(n.to_string()),
        Some(other) => {
            fail(
                &format!("/{key}"),
                format!("expected a string, got {other}"),
            );
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn size_of(m: &Json) -> usize {
        m.to_string().len()
    }

    fn env(route_type: Option<&'static str>) -> Envelope<'static> {
        Envelope {
            route_type,
            sent_at: None,
            received_at: "2026-12-02T12:00:10Z".parse().expect("time"),
        }
    }

    #[test]
    fn a_track_message_becomes_a_row() {
        let msg = json!({
            "type": "track", "event": "Order Completed", "userId": 42, "messageId": "m-1",
            "timestamp": "2026-12-02T11:59:00Z", "sentAt": "2026-12-02T11:59:05Z",
            "properties": {"total": 12.5, "items": [{"sku": "a"}]},
            "context": {"library": {"name": "analytics-python", "version": "2.4.0"}, "ip": "10.0.0.1",
                "page": {"url": "https://x/y", "path": "/y"}, "userAgent": "ua", "locale": "en-US"},
        });
        let row = convert(0, msg.clone(), size_of(&msg), &env(None)).expect("valid");
        assert_eq!(row["type"], "track");
        assert_eq!(row["user_id"], "42");
        assert_eq!(row["message_id"], "m-1");
        // The client's clock is 10 s behind: sent 5 s after the event, received at 12:00:10, so it happened at 12:00:05.
        let want: DateTime<Utc> = "2026-12-02T12:00:05Z".parse().expect("time");
        assert_eq!(row["timestamp"], want.timestamp_millis());
        let original: DateTime<Utc> = "2026-12-02T11:59:00Z".parse().expect("time");
        assert_eq!(row["original_timestamp"], original.timestamp_millis());
        assert_eq!(row["context_library_name"], "analytics-python");
        assert_eq!(row["context_page_path"], "/y");
        assert_eq!(row["context_ip"], "10.0.0.1");
        let props: Json =
            serde_json::from_str(row["properties"].as_str().expect("text")).expect("json");
        assert_eq!(props["total"], 12.5, "numbers and nesting survive");
        assert_eq!(props["items"][0]["sku"], "a");
    }

    #[test]
    fn each_type_needs_what_it_needs() {
        let cases = [
            (json!({"type": "track", "userId": "u"}), "/event"),
            (json!({"type": "group", "userId": "u"}), "/groupId"),
            (json!({"type": "alias", "userId": "u"}), "/previousId"),
            (json!({"type": "identify"}), "/userId"),
            (json!({"type": "purchase", "userId": "u"}), "/type"),
            (json!({"userId": "u"}), "/type"),
            (
                json!({"type": "page", "userId": "u", "timestamp": "yesterday"}),
                "/timestamp",
            ),
            (
                json!({"type": "page", "userId": "u", "properties": [1]}),
                "/properties",
            ),
        ];
        for (msg, pointer) in cases {
            let errors = convert(3, msg.clone(), size_of(&msg), &env(None)).expect_err("invalid");
            assert!(
                errors.iter().any(|e| e.pointer == pointer && e.index == 3),
                "{msg}: {errors:?}"
            );
        }
        let errors = convert(
            0,
            json!({"type": "page", "userId": "u"}),
            10,
            &env(Some("track")),
        )
        .expect_err("wrong route");
        assert_eq!(errors[0].pointer, "/type");
        assert!(
            convert(
                0,
                json!({"userId": "u", "name": "Home"}),
                10,
                &env(Some("page"))
            )
            .is_ok()
        );
    }

    #[test]
    fn an_oversize_message_is_refused() {
        let msg = json!({"type": "track", "event": "e", "userId": "u", "properties": {"x": "y".repeat(MAX_MESSAGE_BYTES)}});
        let errors = convert(0, msg.clone(), size_of(&msg), &env(None)).expect_err("too big");
        assert!(errors[0].message.contains("32768"), "{errors:?}");
    }

    #[test]
    fn identify_traits_from_context_and_time_fallbacks() {
        let row = convert(
            0,
            json!({"type": "identify", "anonymousId": "a", "context": {"traits": {"plan": "pro"}}}),
            50,
            &env(None),
        )
        .expect("valid");
        assert_eq!(row["traits"], r#"{"plan":"pro"}"#);
        let received: DateTime<Utc> = "2026-12-02T12:00:10Z".parse().expect("time");
        assert_eq!(
            row["timestamp"],
            received.timestamp_millis(),
            "no client time: the server's"
        );
        assert_eq!(row["message_id"], Json::Null, "minted by the server later");
    }
}
