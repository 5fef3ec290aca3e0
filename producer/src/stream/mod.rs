//! A configured stream made ready for traffic: its parsed schema, registry id, how server-side fields and the
//! Kafka key are filled in, and how far ahead of the server's clock the client's event time may be.

use apache_avro::Schema;
use apache_avro::schema::{Names, ResolvedSchema, UuidSchema};
use apache_avro::types::Value;
use chrono::{DateTime, Utc};
use serde_json::Value as Json;
use sha2::{Digest, Sha256};

mod direct;

pub use direct::Encoded;

use crate::config::{ConfigProblem, FutureSkew, StreamConfig};
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
    future: Option<FutureLimit>,
    /// How events are written straight from the body's bytes, when every field of the schema allows it.
    direct: Option<direct::EventPlan>,
}

/// The event-time field a stream uses when `occurred_at_field` is not set and its schema has this field.
const DEFAULT_OCCURRED_AT_FIELD: &str = "occurred_at";

/// How far ahead of the receive time a stream's event-time field may be, and what happens beyond that.
#[derive(Debug, Clone)]
struct FutureLimit {
    field: String,
    /// Position of the field in the record, which is also its position in the validated value.
    index: usize,
    /// Units of the field's timestamp type in a second.
    per_second: i64,
    max_skew_secs: i64,
    action: FutureSkew,
}

impl FutureLimit {
    /// Holds the field of the validated `value` to `received` plus the allowed skew: clamps it or reports it.
    fn apply(&self, value: &mut Value, received: DateTime<Utc>) -> Result<(), Vec<FieldError>> {
        let Value::Record(fields) = value else {
            return Ok(());
        };
        match fields.get_mut(self.index) {
            Some((_, v)) => self.hold(v, received),
            None => Ok(()),
        }
    }

    /// Holds the field's own value `v` to `received` plus the allowed skew.
    fn hold(&self, v: &mut Value, received: DateTime<Utc>) -> Result<(), Vec<FieldError>> {
        // A null in an optional field has no time to hold to the limit.
        let Some(t) = timestamp_mut(v) else {
            return Ok(());
        };
        let Some(now) = epoch_units(received, self.per_second) else {
            return Ok(());
        };
        let limit = now.saturating_add(self.max_skew_secs.saturating_mul(self.per_second));
        if *t <= limit {
            return Ok(());
        }
        match self.action {
            FutureSkew::Clamp => {
                *t = now;
                Ok(())
            }
            FutureSkew::Reject => {
                let show = |n: i64| {
                    validate::epoch_rfc3339(n, self.per_second).unwrap_or_else(|| n.to_string())
                };
                let mut pointer = String::new();
                validate::push_token(&mut pointer, &self.field);
                let message = format!(
                    "{} {} is ahead of the server's clock ({}) by more than the allowed {} seconds",
                    self.field,
                    show(*t),
                    show(now),
                    self.max_skew_secs
                );
                Err(vec![FieldError { pointer, message }])
            }
        }
    }
}

/// The epoch number inside a timestamp value, through an optional field's union.
fn timestamp_mut(v: &mut Value) -> Option<&mut i64> {
    match v {
        Value::TimestampMillis(n) | Value::TimestampMicros(n) | Value::TimestampNanos(n) => Some(n),
        Value::Union(_, inner) => timestamp_mut(inner),
        _ => None,
    }
}

/// `t` in units of which `per_second` make a second; `None` when that overflows an i64.
fn epoch_units(t: DateTime<Utc>, per_second: i64) -> Option<i64> {
    let sub = i64::from(t.timestamp_subsec_nanos()).checked_div(1_000_000_000 / per_second)?;
    t.timestamp().checked_mul(per_second)?.checked_add(sub)
}

#[derive(Debug, Clone, Copy)]
enum TimeUnit {
    Millis,
    Micros,
    Nanos,
    Rfc3339,
}

impl TimeUnit {
    /// `t` as the JSON a client would send for a field of this unit.
    fn json(self, t: DateTime<Utc>) -> Json {
        match self {
            TimeUnit::Millis => Json::from(t.timestamp_millis()),
            TimeUnit::Micros => Json::from(t.timestamp_micros()),
            TimeUnit::Nanos => Json::from(t.timestamp_nanos_opt().unwrap_or(i64::MAX)),
            TimeUnit::Rfc3339 => {
                Json::String(t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
            }
        }
    }
}

/// How event ids are chosen for events that did not bring one.
#[derive(Debug, Clone, Copy)]
pub enum IdSource<'a> {
    /// A fresh UUIDv7 per event.
    Mint,
    /// Derived from the request's `Idempotency-Key` and its body's digest, so a retried request gets the same ids
    /// and a different body under the same key never gets them.
    Idempotency {
        tenant: &'a str,
        stream: &'a str,
        key: &'a str,
        body: &'a crate::idempotency::Digest32,
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
                body,
            } => {
                let mut h = Sha256::new();
                for part in [
                    tenant.as_bytes(),
                    b"\0",
                    stream.as_bytes(),
                    b"\0",
                    key.as_bytes(),
                    b"\0",
                    &body[..],
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
    pub received_at: DateTime<Utc>,
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
        let occurred_at = match cfg.occurred_at_field.as_deref() {
            None if rec.lookup.contains_key(DEFAULT_OCCURRED_AT_FIELD) => {
                Some(DEFAULT_OCCURRED_AT_FIELD.to_owned())
            }
            None => None,
            Some(f) => lookup("occurred_at_field", f)?,
        };
        let future = match occurred_at {
            None => None,
            Some(f) => {
                let per_second = match field_schema(&parsed, &f).map(non_null) {
                    Some(
                        s @ (Schema::TimestampMillis
                        | Schema::TimestampMicros
                        | Schema::TimestampNanos),
                    ) => validate::per_second(s),
                    _ => None,
                };
                let (Some(per_second), Some(&index)) = (per_second, rec.lookup.get(&f)) else {
                    return Err(problem(
                        "occurred_at_field",
                        format!(
                            "`{f}` is not a timestamp-millis, -micros or -nanos field (set it to \"\" to turn \
                             the future-skew check off)"
                        ),
                    ));
                };
                Some(FutureLimit {
                    field: f,
                    index,
                    per_second,
                    max_skew_secs: i64::try_from(cfg.max_future_skew_secs).unwrap_or(i64::MAX),
                    action: cfg.future_skew,
                })
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
        let mut stream = Self {
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
            future,
            direct: None,
        };
        stream.direct = direct::EventPlan::new(&stream);
        Ok(stream)
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
            obj.insert(f.clone(), unit.json(server.received_at));
        }
        if let Some(f) = &self.event_id_field
            && obj.get(f).is_none_or(Json::is_null)
        {
            obj.insert(f.clone(), Json::String(server.ids.id(index).to_string()));
        }
        let mut value = validate::to_avro(Json::Object(obj), &self.schema, &self.names, limits)?;
        if let Some(future) = &self.future {
            future.apply(&mut value, server.received_at)?;
        }
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

        let body = [1u8; 32];
        let idem = IdSource::Idempotency {
            tenant: "acme",
            stream: "events",
            key: "k1",
            body: &body,
        };
        let ev = json!({"event_type": "x", "occurred_at": 5});
        let a = s
            .prepare(ev.clone(), 3, &server(idem), LIMITS)
            .expect("valid");
        let b = s
            .prepare(ev.clone(), 3, &server(idem), LIMITS)
            .expect("valid");
        let c = s
            .prepare(ev.clone(), 4, &server(idem), LIMITS)
            .expect("valid");
        assert_eq!(a.event_id, b.event_id);
        assert_ne!(a.event_id, c.event_id);
        // The same key with another body never mints the first body's ids.
        let other = [2u8; 32];
        let d = s
            .prepare(
                ev,
                3,
                &server(IdSource::Idempotency {
                    tenant: "acme",
                    stream: "events",
                    key: "k1",
                    body: &other,
                }),
                LIMITS,
            )
            .expect("valid");
        assert_ne!(a.event_id, d.event_id);
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

    const RECEIVED_MS: i64 = 1_800_000_000_000;
    const DAY_MS: i64 = 86_400_000;

    fn occurred_at(ev: Json, s: &Stream) -> Result<Value, Vec<FieldError>> {
        s.prepare(ev, 0, &server(IdSource::Mint), LIMITS)
            .map(|p| field(&p, "occurred_at"))
    }

    #[test]
    fn occurred_at_beyond_the_future_skew_is_rejected_by_default() {
        let s = Stream::new("events", &cfg(), 7).expect("stream");
        let ev = json!({"event_type": "x", "occurred_at": RECEIVED_MS + DAY_MS + 1});
        assert_eq!(
            occurred_at(ev, &s),
            Err(vec![FieldError {
                pointer: "/occurred_at".into(),
                message: "occurred_at 2027-01-16T08:00:00.001Z is ahead of the server's clock \
                          (2027-01-15T08:00:00Z) by more than the allowed 86400 seconds"
                    .into(),
            }])
        );
        let ev = json!({"event_type": "x", "occurred_at": "2027-01-16T09:00:00+01:00"});
        assert!(occurred_at(ev, &s).is_ok(), "exactly the allowed skew");
        let ev = json!({"event_type": "x", "occurred_at": "2027-01-16T09:00:01+01:00"});
        let errs = occurred_at(ev, &s).expect_err("one second too far");
        assert_eq!(errs[0].pointer, "/occurred_at");
    }

    #[test]
    fn occurred_at_within_the_future_skew_is_untouched() {
        let mut clamp = cfg();
        clamp.future_skew = FutureSkew::Clamp;
        for c in [cfg(), clamp] {
            let s = Stream::new("events", &c, 7).expect("stream");
            for t in [
                0,
                RECEIVED_MS - 365 * DAY_MS,
                RECEIVED_MS,
                RECEIVED_MS + 1,
                RECEIVED_MS + DAY_MS,
            ] {
                let ev = json!({"event_type": "x", "occurred_at": t});
                assert_eq!(
                    occurred_at(ev, &s),
                    Ok(Value::TimestampMillis(t)),
                    "{:?} {t}",
                    c.future_skew
                );
            }
        }
    }

    #[test]
    fn clamp_sets_occurred_at_to_the_receive_time() {
        let mut c = cfg();
        c.future_skew = FutureSkew::Clamp;
        c.max_future_skew_secs = 60;
        let s = Stream::new("events", &c, 7).expect("stream");
        let ev = json!({"event_type": "x", "occurred_at": RECEIVED_MS + 60_000});
        assert_eq!(
            occurred_at(ev, &s),
            Ok(Value::TimestampMillis(RECEIVED_MS + 60_000))
        );
        let ev = json!({"event_type": "x", "occurred_at": "2100-01-01T00:00:00Z"});
        let p = s
            .prepare(ev, 0, &server(IdSource::Mint), LIMITS)
            .expect("clamped, not rejected");
        assert_eq!(
            field(&p, "occurred_at"),
            Value::TimestampMillis(RECEIVED_MS)
        );
        // What goes to Kafka carries the receive time too.
        let bytes = crate::encode::Encoder::new(s.schema(), 7)
            .expect("encoder")
            .encode(&p.value)
            .expect("encodes");
        let (_, mut body) = sluice_schemas::wire::unframe(&bytes).expect("framed");
        let back = apache_avro::reader::datum::GenericDatumReader::builder(s.schema())
            .build()
            .expect("reader")
            .read_value(&mut body)
            .expect("decodes");
        let decoded = Prepared {
            value: back,
            ..p.clone()
        };
        assert_eq!(
            field(&decoded, "occurred_at"),
            Value::TimestampMillis(RECEIVED_MS)
        );
        assert_eq!(
            field(&decoded, "occurred_at"),
            field(&decoded, "received_at")
        );
    }

    #[test]
    fn the_future_skew_field_must_be_a_timestamp_of_the_schema() {
        let mut c = cfg();
        c.occurred_at_field = Some(String::new());
        let s = Stream::new("events", &c, 7).expect("stream");
        let far = RECEIVED_MS + 1000 * DAY_MS;
        let ev = json!({"event_type": "x", "occurred_at": far});
        assert_eq!(
            occurred_at(ev, &s),
            Ok(Value::TimestampMillis(far)),
            "check off"
        );
        for f in ["nope", "properties", "user_id"] {
            let mut c = cfg();
            c.occurred_at_field = Some(f.into());
            let err = Stream::new("events", &c, 7).err().expect(f);
            assert_eq!(err.key, "streams.events.occurred_at_field", "{f}");
        }
        let mut c = cfg();
        c.occurred_at_field = Some("occurred_at".into());
        assert!(Stream::new("events", &c, 7).is_ok());
    }

    #[test]
    fn epoch_units_of_the_receive_time() {
        let t = DateTime::from_timestamp(1_800_000_000, 123_456_789).expect("valid");
        assert_eq!(epoch_units(t, 1_000), Some(1_800_000_000_123));
        assert_eq!(epoch_units(t, 1_000_000), Some(1_800_000_000_123_456));
        assert_eq!(
            epoch_units(t, 1_000_000_000),
            Some(1_800_000_000_123_456_789)
        );
        let far = DateTime::from_timestamp(10_000_000_000, 0).expect("valid");
        assert_eq!(epoch_units(far, 1_000_000_000), None);
    }
}
