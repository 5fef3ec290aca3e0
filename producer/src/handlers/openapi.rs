//! `GET /openapi.json`: the OpenAPI 3 document of the producer's routes, with the event body described from the
//! bundled Avro schema so the two cannot disagree.

use std::sync::OnceLock;

use apache_avro::Schema;
use axum::Json;
use serde_json::{Value, json};

use crate::routes;
use crate::validate;

/// Serves the document.
pub async fn serve() -> Json<Value> {
    static DOC: OnceLock<Value> = OnceLock::new();
    Json(DOC.get_or_init(document).clone())
}

/// A JSON Schema for the JSON clients send for values of an Avro schema.
pub fn json_schema(schema: &Schema) -> Value {
    match schema {
        Schema::Null => json!({"type": "null"}),
        Schema::Boolean => json!({"type": "boolean"}),
        Schema::Int => json!({"type": "integer", "format": "int32"}),
        Schema::Long => json!({"type": "integer", "format": "int64"}),
        Schema::Float | Schema::Double => json!({"type": "number"}),
        Schema::String | Schema::Bytes | Schema::Fixed(_) => json!({"type": "string"}),
        Schema::Uuid(_) => json!({"type": "string", "format": "uuid"}),
        Schema::Date => json!({"oneOf": [
            {"type": "string", "format": "date", "description": date_range()},
            {"type": "integer", "description": "days since 1970-01-01",
                "minimum": validate::MIN_DATE_DAYS, "maximum": validate::MAX_DATE_DAYS}
        ]}),
        Schema::TimestampMillis
        | Schema::TimestampMicros
        | Schema::TimestampNanos
        | Schema::LocalTimestampMillis
        | Schema::LocalTimestampMicros
        | Schema::LocalTimestampNanos => {
            let per_second = validate::per_second(schema).unwrap_or(1_000);
            let (min, max) = validate::timestamp_bounds(per_second);
            let unit = match per_second {
                1_000 => "epoch milliseconds",
                1_000_000 => "epoch microseconds",
                _ => "epoch nanoseconds",
            };
            let text = if matches!(
                schema,
                Schema::TimestampMillis | Schema::TimestampMicros | Schema::TimestampNanos
            ) {
                json!({"type": "string", "format": "date-time", "description": timestamp_range()})
            } else {
                json!({"type": "string", "description": format!("local date-time without offset; {}", timestamp_range())})
            };
            json!({"oneOf": [text, {"type": "integer", "description": unit, "minimum": min, "maximum": max}]})
        }
        Schema::Array(a) => json!({"type": "array", "items": json_schema(&a.items)}),
        Schema::Map(m) => json!({"type": "object", "additionalProperties": json_schema(&m.types)}),
        Schema::Enum(e) => json!({"type": "string", "enum": e.symbols}),
        Schema::Union(u) => {
            let branches: Vec<Value> = u.variants().iter().map(json_schema).collect();
            json!({"oneOf": branches})
        }
        Schema::Record(r) => {
            let mut props = serde_json::Map::new();
            let mut required = Vec::new();
            for f in &r.fields {
                let mut s = json_schema(&f.schema);
                if let (Some(doc), Value::Object(o)) = (&f.doc, &mut s) {
                    o.insert("description".into(), Value::String(doc.clone()));
                }
                if f.default.is_none() {
                    required.push(f.name.clone());
                }
                props.insert(f.name.clone(), s);
            }
            json!({"type": "object", "properties": props, "required": required, "additionalProperties": false})
        }
        _ => json!({}),
    }
}

/// The timestamps the producer accepts, for descriptions.
fn timestamp_range() -> String {
    format!(
        "{} (what ClickHouse can store)",
        validate::timestamp_range_text()
    )
}

/// The dates the producer accepts, for descriptions.
fn date_range() -> String {
    format!(
        "{} (what ClickHouse can store)",
        validate::date_range_text()
    )
}

fn error_response(description: &str, retry: bool) -> Value {
    let mut r = json!({
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
    });
    if retry {
        r["headers"] = json!({"Retry-After": {"description": "Seconds to wait before retrying", "schema": {"type": "integer"}}});
    }
    r
}

/// The OpenAPI document.
pub fn document() -> Value {
    let mut event = Schema::parse_str(sluice_schemas::catalog::EVENT.text)
        .map_or_else(|_| json!({}), |s| json_schema(&s));
    // The server fills these; clients may omit them (and `tenant` must match the key if sent).
    if let Some(req) = event.get_mut("required").and_then(Value::as_array_mut) {
        req.retain(|f| !matches!(f.as_str(), Some("event_id" | "tenant" | "received_at")));
    }
    let text = |s: &str| json!({"description": s, "content": {"text/plain": {"schema": {"type": "string"}}}});
    let mut doc = json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Sluice producer",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Send events over HTTP; each is validated against its stream's Avro schema and written to Kafka. \
                A 202 means Kafka acknowledged every event of the request (acks=all)."
        },
        "components": {
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "basic": {"type": "http", "scheme": "basic", "description": "Segment write key as the user name"},
                "apiKey": {"type": "apiKey", "in": "header", "name": "X-Api-Key"}
            },
            "schemas": {
                "Event": event,
                "Accepted": {
                    "type": "object",
                    "required": ["accepted", "event_ids"],
                    "properties": {
                        "accepted": {"type": "integer"},
                        "event_ids": {"type": "array", "items": {"type": "string", "format": "uuid"}},
                        "pending": {"type": "array", "description": "With wait=: the events not yet queryable when the wait ended (safe in Kafka)", "items": {"$ref": "#/components/schemas/Pending"}},
                        "rejected": {"type": "integer", "description": "With partial=true: how many events were left out as invalid"},
                        "details": {"type": "array", "description": "With partial=true: every problem of those events", "items": {"$ref": "#/components/schemas/EventError"}}
                    }
                },
                "Pending": {
                    "type": "object",
                    "required": ["index"],
                    "properties": {
                        "index": {"type": "integer", "description": "The event's position in the request"},
                        "event_id": {"type": "string"}
                    }
                },
                "Error": {
                    "type": "object",
                    "required": ["error", "message"],
                    "properties": {
                        "error": {"type": "string", "description": "Stable code, e.g. invalid_events, bad_key, overloaded, quota_exceeded (429 with Retry-After and X-RateLimit-Limit, -Remaining, -Reset)"},
                        "message": {"type": "string"},
                        "details": {"type": "array", "items": {"$ref": "#/components/schemas/EventError"}}
                    }
                },
                "EventError": {
                    "type": "object",
                    "required": ["index", "pointer", "message"],
                    "properties": {
                        "index": {"type": "integer", "description": "Position of the event in the request"},
                        "pointer": {"type": "string", "description": "JSON pointer into that event"},
                        "message": {"type": "string"}
                    }
                }
            }
        },
        "paths": {
            routes::EVENTS: {
                "post": {
                    "operationId": "sendEvents",
                    "summary": "Send one event (a JSON object) or a batch (a JSON array of objects)",
                    "description": "All-or-nothing validation: if any event of a batch is invalid, nothing is written and \
                        the 400 lists every problem. Content-Encoding gzip and zstd are accepted. Send an \
                        Idempotency-Key to make server-minted event ids repeat on retries of the same body; the key \
                        with a different body gets 422.",
                    "security": [{"bearer": []}, {"apiKey": []}],
                    "parameters": [
                        {"name": "stream", "in": "path", "required": true, "schema": {"type": "string"}, "example": "events"},
                        {"name": "Idempotency-Key", "in": "header", "required": false, "schema": {"type": "string", "maxLength": 255}},
                        {"name": "wait", "in": "query", "required": false, "description": "clickhouse: answer 200 once every event is queryable in ClickHouse (the consumer group committed past it); lake: once it is in the lake; kafka (default): 202 on Kafka's acknowledgement. The wait is bounded by wait.timeout_ms, then 202 lists the pending events.", "schema": {"type": "string", "enum": ["kafka", "clickhouse", "lake"], "default": "kafka"}},
                        {"name": "Sluice-Wait", "in": "header", "required": false, "description": "The same as the wait parameter, for clients that cannot change the URL (the parameter wins).", "schema": {"type": "string", "enum": ["kafka", "clickhouse", "lake"]}},
                        {"name": "partial", "in": "query", "required": false, "description": "true: write the valid events of a batch and name the invalid ones (rejected, details) instead of answering 400 for the whole batch.", "schema": {"type": "boolean", "default": false}},
                        {"name": "Content-Encoding", "in": "header", "required": false, "schema": {"type": "string", "enum": ["gzip", "zstd", "identity"]}}
                    ],
                    "requestBody": {
                        "required": true,
                        "content": {"application/json": {"schema": {"oneOf": [
                            {"$ref": "#/components/schemas/Event"},
                            {"type": "array", "minItems": 1, "items": {"$ref": "#/components/schemas/Event"}}
                        ]}}}
                    },
                    "responses": {
                        "200": {"description": "With wait=clickhouse or wait=lake: every event is queryable there", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Accepted"}}}},
                        "202": {"description": "Every event acknowledged by Kafka; with wait=, the wait ended first and pending lists the events not yet queryable", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Accepted"}}}},
                        "400": error_response("Empty body, bad JSON, bad header, or invalid events (details lists each problem: a value \
                            that does not fit the schema, a date or timestamp ClickHouse cannot store, or an event time too \
                            far ahead of the server's clock)", false),
                        "401": error_response("Missing or unknown ingestion key", false),
                        "403": error_response("Key may not write to this stream", false),
                        "404": error_response("Unknown stream", false),
                        "408": error_response("Body not received within the request timeout", false),
                        "413": error_response("Body, batch, or one encoded event too large", false),
                        "415": error_response("Content-Type is not application/json, or unsupported Content-Encoding", false),
                        "422": error_response("The Idempotency-Key was used with a different body (idempotency_key_reused)", false),
                        "429": error_response("Too many events or bytes in flight", true),
                        "503": error_response("Kafka did not acknowledge in time or the producer queue is full; some events may have been written", true)
                    }
                }
            },
            routes::OPENAPI: {"get": {"operationId": "openapi", "summary": "This document",
                "responses": {"200": {"description": "OpenAPI 3 document", "content": {"application/json": {}}}}}},
            routes::HEALTHZ: {"get": {"operationId": "healthz", "summary": "The process is alive", "responses": {"200": text("ok")}}},
            routes::READYZ: {"get": {"operationId": "readyz", "summary": "Broker, registry and topics reachable",
                "responses": {"200": text("Each dependency: ok"), "503": text("Each dependency and why it is not ready")}}},
            routes::METRICS: {"get": {"operationId": "metrics", "summary": "Prometheus metrics",
                "responses": {"200": text("Prometheus text format")}}}
        }
    });
    add_segment_paths(&mut doc);
    doc
}

/// The Segment tracking API's routes: `/v1/batch` and one route per message type.
fn add_segment_paths(doc: &mut Value) {
    let message = json!({
        "type": "object",
        "description": "A Segment message. Every type needs userId or anonymousId; track needs event, group needs \
            groupId, alias needs previousId. messageId becomes the stable id (retries collapse on it). At most 32 KB.",
        "required": ["type"],
        "properties": {
            "type": {"type": "string", "enum": super::segment::message::TYPES},
            "messageId": {"type": "string"}, "userId": {"type": "string"}, "anonymousId": {"type": "string"},
            "event": {"type": "string"}, "name": {"type": "string"}, "groupId": {"type": "string"},
            "previousId": {"type": "string"},
            "timestamp": {"type": "string", "format": "date-time"},
            "originalTimestamp": {"type": "string", "format": "date-time"},
            "sentAt": {"type": "string", "format": "date-time"},
            "properties": {"type": "object"}, "traits": {"type": "object"}, "context": {"type": "object"},
            "integrations": {"type": "object"}
        }
    });
    let segment_error = |description: &str, retry: bool| {
        let mut r = json!({"description": description, "content": {"application/json": {"schema": {
            "type": "object", "required": ["success", "code", "message"],
            "properties": {"success": {"const": false}, "code": {"type": "string"}, "message": {"type": "string"},
                "errors": {"type": "array", "items": {"type": "object"}}}}}}});
        if retry {
            r["headers"] = json!({"Retry-After": {"schema": {"type": "integer"}}});
        }
        r
    };
    let op = |id: &str, summary: &str, body: Value| {
        json!({"post": {
            "operationId": id,
            "summary": summary,
            "description": "Segment's HTTP tracking API, for its SDKs (and RudderStack's and Jitsu's): the write key is \
                HTTP Basic's user name (empty password) or writeKey in the body. 200 only once Kafka acknowledged \
                every message; gzip accepted.",
            "security": [{"basic": []}, {"bearer": []}, {"apiKey": []}],
            "parameters": [
                {"name": "wait", "in": "query", "required": false, "description": "clickhouse or lake: 200 once every message is queryable there, 202 with pending when the wait (wait.timeout_ms) ends first.", "schema": {"type": "string", "enum": ["kafka", "clickhouse", "lake"], "default": "kafka"}},
                {"name": "Sluice-Wait", "in": "header", "required": false, "schema": {"type": "string", "enum": ["kafka", "clickhouse", "lake"]}},
                {"name": "partial", "in": "query", "required": false, "description": "true: write the valid messages and name the others (rejected, errors).", "schema": {"type": "boolean", "default": false}}
            ],
            "requestBody": {"required": true, "content": {"application/json": {"schema": body}}},
            "responses": {
                "200": {"description": "Every message acknowledged by Kafka (and with wait=, queryable)", "content": {"application/json": {"schema": {
                    "type": "object", "properties": {"success": {"const": true}}}}}},
                "202": {"description": "With wait=: acknowledged by Kafka, the wait ended first", "content": {"application/json": {"schema": {
                    "type": "object", "properties": {"success": {"const": true}, "pending": {"type": "array", "items": {"$ref": "#/components/schemas/Pending"}}}}}}},
                "400": segment_error("Bad JSON, an invalid message (errors lists each problem), a message over 32 KB or a batch over 500 KB", false),
                "401": segment_error("Missing or unknown write key", false),
                "403": segment_error("The key may not write to the segment stream", false),
                "404": segment_error("No segment stream is configured", false),
                "415": segment_error("Content-Type is not application/json", false),
                "422": segment_error("The Idempotency-Key was used with different messages", false),
                "429": segment_error("Too much in flight", true),
                "503": segment_error("Kafka did not acknowledge in time", true)
            }
        }})
    };
    let Some(paths) = doc["paths"].as_object_mut() else {
        return;
    };
    let batch = json!({"type": "object", "required": ["batch"], "properties": {
        "batch": {"type": "array", "minItems": 1, "items": message},
        "sentAt": {"type": "string", "format": "date-time"}, "writeKey": {"type": "string"},
        "context": {"type": "object"}}});
    paths.insert(
        routes::SEGMENT_BATCH.into(),
        op("segmentBatch", "Send a batch of Segment messages", batch),
    );
    for (kind, path) in routes::SEGMENT_SINGLE {
        paths.insert(
            path.into(),
            op(
                &format!("segment_{kind}"),
                &format!("Send one Segment {kind} message"),
                message.clone(),
            ),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn document_lists_exactly_the_routes() {
        let doc = document();
        let mut documented = BTreeSet::new();
        for (path, item) in doc["paths"].as_object().expect("paths") {
            for method in item.as_object().expect("path item").keys() {
                documented.insert((method.clone(), path.clone()));
            }
        }
        let served: BTreeSet<(String, String)> = routes::ALL
            .iter()
            .map(|(m, p)| (m.to_string(), p.to_string()))
            .collect();
        assert_eq!(documented, served);
    }

    #[test]
    fn event_schema_comes_from_the_avro_schema() {
        let doc = document();
        let event = &doc["components"]["schemas"]["Event"];
        assert_eq!(event["required"], json!(["event_type", "occurred_at"]));
        assert_eq!(event["properties"]["event_id"]["format"], "uuid");
        let occurred = &event["properties"]["occurred_at"]["oneOf"];
        assert_eq!(occurred[1]["minimum"], 0);
        assert_eq!(occurred[1]["maximum"], 4_294_967_295_999i64);
        assert!(
            occurred[0]["description"]
                .as_str()
                .is_some_and(|d| d.contains("2106-02-07T06:28:15Z")),
            "{occurred}"
        );
        assert_eq!(
            event["properties"]["properties"]["additionalProperties"]["type"],
            "string"
        );
    }
}
