//! A configured stream made ready for traffic: its parsed schema, registry id, and how server-side fields and the
//! Kafka key are filled in.

use apache_avro::Schema;
use apache_avro::schema::{Names, ResolvedSchema, UuidSchema};
use apache_avro::types::Value;
use serde_json::Value as Json;
use sha2::{Digest, Sha256};

use crate::config::{ConfigProblem, StreamConfig};
use crate::validate::{self, FieldError, ValidateLimits};

/// A stream ready to accept events.
pub struct Stream {
    /// Name clients use in the URL.
    pub name: String,
    /// Kafka topic.
    pub topic: String,
    /// Registry subject.
    pub subject: String,
    /// The schema's JSON text, as registered.
    pub schema_text: &'static str,
    /// Registry id of the schema, put in every message's Confluent header.
    pub schema_id: u32,
    schema: Schema,
    names: Names,
    key_field: Option<usize>,
    tenant_field: Option<String>,
    event_id_field: Option<String>,
    received_at: Option<(String, TimeUnit)>,
}

#[derive(Debug, Clone, Copy)]
enum TimeUnit {
    Millis,
    Micros,
    Nanos,
    Rfc3339,
}

/// How event ids are chosen for events that did not bring one.
#[derive(Debug, Clone, Copy)]
pub enum IdSource<'a> {
    /// A fresh UUIDv7 per event.
    Mint,
    /// Derived from the request's `Idempotency-Key`, so a retried request gets the same ids.
    Idempotency {
        tenant: &'a str,
        stream: &'a str,
        key: &'a str,
    },
}

impl IdSource<'_> {
    /// The id of the `index`th event of a request.
    pub fn id(&self, index: usize) -> uuid::Uuid {
        match self {
            IdSource::Mint => uuid::Uuid::now_v7(),
            IdSource::Idempotency {
                tenant,
                stream,
                key,
            } => {
                let mut h = Sha256::new();
                for part in [
                    tenant.as_bytes(),
                    b"\0",
                    stream.as_bytes(),
                    b"\0",
                    key.as_bytes(),
                    b"\0",
                ] {
                    h.update(part);
                }
                h.update((index as u64).to_be_bytes());
                let digest = h.finalize();
                let mut bytes = [0u8; 16];
                bytes.copy_from_slice(&digest[..16]);
                uuid::Builder::from_custom_bytes(bytes).into_uuid()
            }
        }
    }
}

/// What the server adds to an event.
#[derive(Debug, Clone, Copy)]
pub struct ServerSide<'a> {
    /// Tenant of the ingestion key.
    pub tenant: &'a str,
    /// When the request was accepted.
    pub received_at: chrono::DateTime<chrono::Utc>,
    /// Where missing event ids come from.
    pub ids: IdSource<'a>,
}

/// An event validated against its schema, ready to encode.
#[derive(Debug, Clone, PartialEq)]
pub struct Prepared {
    /// The event's id, when the stream has an id field.
    pub event_id: Option<String>,
    /// Kafka message key.
    pub key: Vec<u8>,
    /// The Avro value, fields in schema order.
    pub value: Value,
}

fn field_schema<'s>(schema: &'s Schema, name: &str) -> Option<&'s Schema> {
    match schema {
        Schema::Record(rec) => rec
            .lookup
            .get(name)
            .and_then(|&i| rec.fields.get(i))
            .map(|f| &f.schema),
        _ => None,
    }
}

/// The non-null branch of `["null", T]`, or the schema itself.
fn non_null(schema: &Schema) -> &Schema {
    match schema {
        Schema::Union(u) => u
            .variants()
            .iter()
            .find(|s| !matches!(s, Schema::Null))
            .unwrap_or(schema),
        s => s,
    }
}

impl Stream {
    /// Parses the stream's bundled schema and checks the configured fields exist; `schema_id` comes from the registry.
    pub fn new(name: &str, cfg: &StreamConfig, schema_id: u32) -> Result<Self, ConfigProblem> {
        let problem = |key: &str, p: String| ConfigProblem {
            key: format!("streams.{name}.{key}"),
            problem: p,
        };
        let bundled = sluice_schemas::catalog::bundled(&cfg.schema).ok_or_else(|| {
            problem(
                "schema",
                format!("names no bundled schema `{}`", cfg.schema),
            )
        })?;
        let parsed = Schema::parse_str(bundled.text)
            .map_err(|e| problem("schema", format!("`{}` does not parse: {e}", cfg.schema)))?;
        let Schema::Record(rec) = &parsed else {
            return Err(problem(
                "schema",
                format!("`{}` is not a record schema", cfg.schema),
            ));
        };
        let lookup = |key: &str, field: &str| -> Result<Option<String>, ConfigProblem> {
            if field.is_empty() {
                return Ok(None);
            }
            if rec.lookup.contains_key(field) {
                Ok(Some(field.to_owned()))
            } else {
                Err(problem(
                    key,
                    format!(
                        "names `{field}`, which schema `{}` does not have",
                        cfg.schema
                    ),
                ))
            }
        };
        let key_field =
            lookup("key_field", &cfg.key_field)?.and_then(|f| rec.lookup.get(&f).copied());
        let tenant_field = lookup("tenant_field", &cfg.tenant_field)?;
        let event_id_field = lookup("event_id_field", &cfg.event_id_field)?;
        let received_at = match lookup("received_at_field", &cfg.received_at_field)? {
            None => None,
            Some(f) => {
                let unit = match field_schema(&parsed, &f).map(non_null) {
                    Some(Schema::TimestampMillis | Schema::LocalTimestampMillis | Schema::Long) => {
                        TimeUnit::Millis
                    }
                    Some(Schema::TimestampMicros | Schema::LocalTimestampMicros) => {
                        TimeUnit::Micros
                    }
                    Some(Schema::TimestampNanos | Schema::LocalTimestampNanos) => TimeUnit::Nanos,
                    Some(Schema::String) => TimeUnit::Rfc3339,
                    _ => {
                        return Err(problem(
                            "received_at_field",
                            format!("`{f}` is not a timestamp, long or string"),
                        ));
                    }
                };
                Some((f, unit))
            }
        };
        if let Some(f) = &event_id_field
            && !matches!(
                field_schema(&parsed, f).map(non_null),
                Some(Schema::String | Schema::Uuid(UuidSchema::String))
            )
        {
            return Err(problem(
                "event_id_field",
                format!("`{f}` must be a string or a uuid string"),
            ));
        }
        let names: Names = ResolvedSchema::new(&parsed)
            .map_err(|e| problem("schema", format!("`{}` does not resolve: {e}", cfg.schema)))?
            .get_names()
            .iter()
            .map(|(n, s)| (n.clone(), (*s).clone()))
            .collect();
        Ok(Self {
            name: name.to_owned(),
            topic: cfg.topic.clone(),
            subject: cfg.subject(),
            schema_text: bundled.text,
            schema_id,
            schema: parsed,
            names,
            key_field,
            tenant_field,
            event_id_field,
            received_at,
        })
    }

    /// The parsed schema.
    pub fn schema(&self) -> &Schema {
        &self.schema
    }

    /// Adds the server-side fields to one event, validates it and picks its Kafka key.
    pub fn prepare(
        &self,
        event: Json,
        index: usize,
        server: &ServerSide<'_>,
        limits: ValidateLimits,
    ) -> Result<Prepared, Vec<FieldError>> {
        let Json::Object(mut obj) = event else {
            let got = match event {
                Json::Array(_) => "array",
                Json::String(_) => "string",
                Json::Number(_) => "number",
                Json::Bool(_) => "boolean",
                _ => "null",
            };
            return Err(vec![FieldError {
                pointer: String::new(),
                message: format!("expected an object, got {got}"),
            }]);
        };
        if let Some(f) = &self.tenant_field {
            match obj.get(f) {
                None | Some(Json::Null) => {}
                Some(Json::String(t)) if t == server.tenant => {}
                Some(_) => {
                    let mut pointer = String::new();
                    validate::push_token(&mut pointer, f);
                    let message = format!(
                        "is set by the server; omit it or send the key's tenant {:?}",
                        server.tenant
                    );
                    return Err(vec![FieldError { pointer, message }]);
                }
            }
            obj.insert(f.clone(), Json::String(server.tenant.to_owned()));
        }
        if let Some((f, unit)) = &self.received_at {
            let t = server.received_at;
            let v = match unit {
                TimeUnit::Millis => Json::from(t.timestamp_millis()),
                TimeUnit::Micros => Json::from(t.timestamp_micros()),
                TimeUnit::Nanos => Json::from(t.timestamp_nanos_opt().unwrap_or(i64::MAX)),
                TimeUnit::Rfc3339 => {
                    Json::String(t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
                }
            };
            obj.insert(f.clone(), v);
        }
        if let Some(f) = &self.event_id_field
            && obj.get(f).is_none_or(Json::is_null)
        {
            obj.insert(f.clone(), Json::String(server.ids.id(index).to_string()));
        }
        let value = validate::to_avro(Json::Object(obj), &self.schema, &self.names, limits)?;
        let event_id = self.event_id_field.as_ref().and_then(|f| match &value {
            Value::Record(fields) => fields
                .iter()
                .find(|(k, _)| k == f)
                .and_then(|(_, v)| scalar_text(v)),
            _ => None,
        });
        let key = match (&value, self.key_field) {
            (Value::Record(fields), Some(i)) => fields.get(i).and_then(|(_, v)| scalar_text(v)),
            _ => None,
        };
        let key = key.unwrap_or_else(|| server.tenant.to_owned()).into_bytes();
        Ok(Prepared {
            event_id,
            key,
            value,
        })
    }
}

/// Text of a scalar value (through a union), `None` for null and composites.
fn scalar_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) | Value::Enum(_, s) => Some(s.clone()),
        Value::Uuid(u) => Some(u.to_string()),
        Value::Int(i) => Some(i.to_string()),
        Value::Long(i) => Some(i.to_string()),
        Value::Union(_, inner) => scalar_text(inner),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn cfg() -> StreamConfig {
        crate::config::Config::default().streams["events"].clone()
    }

    fn server(ids: IdSource<'_>) -> ServerSide<'_> {
        ServerSide {
            tenant: "acme",
            received_at: chrono::DateTime::from_timestamp_millis(1_800_000_000_000).expect("valid"),
            ids,
        }
    }

    const LIMITS: ValidateLimits = ValidateLimits {
        max_string_bytes: 1024,
    };

    fn field(p: &Prepared, name: &str) -> Value {
        match &p.value {
            Value::Record(f) => f
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
                .expect("field"),
            _ => panic!("record"),
        }
    }

    #[test]
    fn server_fields_are_filled() {
        let s = Stream::new("events", &cfg(), 7).expect("stream");
        let ev = json!({"event_type": "x", "occurred_at": 5});
        let p = s
            .prepare(ev, 0, &server(IdSource::Mint), LIMITS)
            .expect("valid");
        assert_eq!(field(&p, "tenant"), Value::String("acme".into()));
        assert_eq!(
            field(&p, "received_at"),
            Value::TimestampMillis(1_800_000_000_000)
        );
        let id = uuid::Uuid::parse_str(p.event_id.as_deref().expect("id")).expect("uuid");
        assert_eq!(id.get_version_num(), 7);
        assert_eq!(p.key, b"acme");
    }

    #[test]
    fn client_event_id_is_kept_and_idempotency_ids_are_stable() {
        let s = Stream::new("events", &cfg(), 7).expect("stream");
        let sent = "0190b8a4-6c3e-7a1b-9c2d-3e4f5a6b7c8d";
        let ev = json!({"event_type": "x", "occurred_at": 5, "event_id": sent});
        let p = s
            .prepare(ev, 0, &server(IdSource::Mint), LIMITS)
            .expect("valid");
        assert_eq!(p.event_id.as_deref(), Some(sent));

        let idem = IdSource::Idempotency {
            tenant: "acme",
            stream: "events",
            key: "k1",
        };
        let ev = json!({"event_type": "x", "occurred_at": 5});
        let a = s
            .prepare(ev.clone(), 3, &server(idem), LIMITS)
            .expect("valid");
        let b = s
            .prepare(ev.clone(), 3, &server(idem), LIMITS)
            .expect("valid");
        let c = s.prepare(ev, 4, &server(idem), LIMITS).expect("valid");
        assert_eq!(a.event_id, b.event_id);
        assert_ne!(a.event_id, c.event_id);
    }

    #[test]
    fn tenant_mismatch_is_rejected() {
        let s = Stream::new("events", &cfg(), 7).expect("stream");
        let ev = json!({"event_type": "x", "occurred_at": 5, "tenant": "other"});
        let errs = s
            .prepare(ev, 0, &server(IdSource::Mint), LIMITS)
            .expect_err("rejected");
        assert_eq!(errs[0].pointer, "/tenant");
        let ev = json!({"event_type": "x", "occurred_at": 5, "tenant": "acme"});
        assert!(s.prepare(ev, 0, &server(IdSource::Mint), LIMITS).is_ok());
    }

    #[test]
    fn key_from_entity_field_falls_back_to_tenant() {
        let mut c = cfg();
        c.key_field = "user_id".into();
        let s = Stream::new("events", &c, 7).expect("stream");
        let p = s.prepare(
            json!({"event_type": "x", "occurred_at": 5, "user_id": "u9"}),
            0,
            &server(IdSource::Mint),
            LIMITS,
        );
        assert_eq!(p.expect("valid").key, b"u9");
        let p = s.prepare(
            json!({"event_type": "x", "occurred_at": 5}),
            0,
            &server(IdSource::Mint),
            LIMITS,
        );
        assert_eq!(p.expect("valid").key, b"acme");
    }

    #[test]
    fn bad_field_names_are_config_errors() {
        let mut c = cfg();
        c.key_field = "nope".into();
        let err = Stream::new("events", &c, 7).err().expect("rejected");
        assert_eq!(err.key, "streams.events.key_field");
        let mut c = cfg();
        c.received_at_field = "properties".into();
        assert_eq!(
            Stream::new("events", &c, 7).err().expect("rejected").key,
            "streams.events.received_at_field"
        );
    }
}
