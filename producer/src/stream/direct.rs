//! A request body's events written straight from its bytes to Confluent-framed Avro, field by field as the JSON
//! parser reads them: no `serde_json::Value` tree for the body, no map of fields per event.
//!
//! Most fields go through `validate::direct`. The few that the server fills in or reads back (tenant, receive
//! time, event id, Kafka key, event time) are converted whole by the tree path's converter, since their rules
//! (mint an id for a null, hold the event time to the server's clock) are on values. Any problem at all, and
//! anything unusual (a duplicate field, a batch over the limit), answers `None`: the caller then runs the tree
//! path, which reports every problem exactly as before. So a client error costs a second parse; valid events cost
//! one pass.

use std::fmt;

use apache_avro::Schema;
use apache_avro::types::Value;
use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::Value as Json;
use sluice_schemas::wire::{self, HEADER_LEN};

use super::{ServerSide, Stream, scalar_text};
use crate::validate::direct::{Context, Node, NodeSeed, writable, write_value};
use crate::validate::{self, ValidateLimits};

/// One event written on the direct path.
#[derive(Debug, Clone, PartialEq)]
pub struct Encoded {
    /// The event's id, when the stream has an id field.
    pub event_id: Option<String>,
    /// Kafka message key.
    pub key: Vec<u8>,
    /// Confluent-framed Avro.
    pub payload: Vec<u8>,
}

/// How a stream's events are written from JSON, planned once per stream.
#[derive(Debug)]
pub(super) struct EventPlan {
    fields: Vec<FieldPlan>,
    tenant: Option<usize>,
    received_at: Option<usize>,
    event_id: Option<usize>,
}

#[derive(Debug)]
struct FieldPlan {
    name: String,
    schema: Schema,
    how: How,
    /// What a missing field becomes, when the schema gives it a default.
    default: Option<Missing>,
}

#[derive(Debug)]
enum How {
    /// Written as it is read.
    Direct(Node),
    /// Converted whole, because the server sets it or reads it back.
    Whole,
}

#[derive(Debug)]
enum Missing {
    Bytes(Vec<u8>),
    Value(Value),
}

impl EventPlan {
    /// The plan for `stream`, or `None` when a field's schema needs the tree path (see [`Node::plan`]).
    pub(super) fn new(stream: &Stream) -> Option<Self> {
        let Schema::Record(rec) = &stream.schema else {
            return None;
        };
        let position = |name: &Option<String>| {
            name.as_ref()
                .and_then(|n| rec.fields.iter().position(|f| &f.name == n))
        };
        let tenant = position(&stream.tenant_field);
        let received_at = position(&stream.received_at.as_ref().map(|(f, _)| f.clone()));
        let event_id = position(&stream.event_id_field);
        let future = stream.future.as_ref().map(|f| f.index);
        let limits = ValidateLimits {
            max_string_bytes: usize::MAX,
        };
        let mut fields = Vec::with_capacity(rec.fields.len());
        for (i, f) in rec.fields.iter().enumerate() {
            let whole =
                [tenant, received_at, event_id, stream.key_field, future].contains(&Some(i));
            let how = if whole {
                writable(&f.schema).then_some(How::Whole)?
            } else {
                How::Direct(Node::plan(&f.schema)?)
            };
            let default = match &f.default {
                None => None,
                Some(json) => {
                    let value =
                        validate::to_avro(json.clone(), &f.schema, &stream.names, limits).ok()?;
                    Some(match &how {
                        How::Whole => Missing::Value(value),
                        // Written by the same code as a value the client sent, so it cannot differ from it.
                        How::Direct(node) => {
                            let mut bytes = Vec::new();
                            NodeSeed {
                                node,
                                out: &mut bytes,
                                ctx: Context {
                                    names: &stream.names,
                                    limits,
                                },
                            }
                            .deserialize(json.clone())
                            .ok()?;
                            Missing::Bytes(bytes)
                        }
                    })
                }
            };
            fields.push(FieldPlan {
                name: f.name.clone(),
                schema: f.schema.clone(),
                how,
                default,
            });
        }
        Some(Self {
            fields,
            tenant,
            received_at,
            event_id,
        })
    }
}

impl Stream {
    /// The events of a native-route body, written straight from its bytes; `None` when the body is anything but
    /// one object or an array of 1 to `max_events` objects that are all valid, which the tree path then reports.
    pub fn encode_body(
        &self,
        body: &[u8],
        server: &ServerSide<'_>,
        limits: ValidateLimits,
        max_events: usize,
    ) -> Option<Vec<Encoded>> {
        let plan = self.direct.as_ref()?;
        let field_value = |i: Option<usize>, json: Json| -> Option<Option<Value>> {
            match i {
                None => Some(None),
                Some(i) => {
                    let schema = &plan.fields.get(i)?.schema;
                    validate::to_avro(json, schema, &self.names, limits)
                        .ok()
                        .map(Some)
                }
            }
        };
        let tenant = field_value(plan.tenant, Json::String(server.tenant.to_owned()))?;
        let received_at = match &self.received_at {
            Some((_, unit)) => field_value(plan.received_at, unit.json(server.received_at))?,
            None => None,
        };
        let request = Request {
            stream: self,
            plan,
            server,
            ctx: Context {
                names: &self.names,
                limits,
            },
            tenant,
            received_at,
            header: wire::header(self.schema_id),
        };
        let mut out = Vec::new();
        let mut scratch = Scratch::default();
        let mut de = serde_json::Deserializer::from_slice(body);
        BodySeed {
            req: &request,
            out: &mut out,
            scratch: &mut scratch,
            max_events,
        }
        .deserialize(&mut de)
        .ok()?;
        de.end().ok()?;
        (!out.is_empty()).then_some(out)
    }
}

/// What every event of one request shares.
struct Request<'r> {
    stream: &'r Stream,
    plan: &'r EventPlan,
    server: &'r ServerSide<'r>,
    ctx: Context<'r, Schema>,
    /// The tenant field's value, when the stream has one.
    tenant: Option<Value>,
    /// The receive-time field's value, when the stream has one.
    received_at: Option<Value>,
    header: [u8; HEADER_LEN],
}

/// Buffers reused from event to event.
#[derive(Default)]
struct Scratch<'r> {
    /// The direct fields' bytes, in the order the client sent them.
    bytes: Vec<u8>,
    slots: Vec<Slot<'r>>,
}

/// What one field of the event being read holds so far.
enum Slot<'r> {
    Missing,
    /// Direct bytes, a span of [`Scratch::bytes`].
    Span(usize, usize),
    /// A value converted whole.
    Value(Value),
    /// The request's value of a server-set field.
    Server(&'r Value),
    /// A server-set field the client sent (checked), to be replaced.
    Replaced,
}

fn refuse<E: de::Error>() -> E {
    E::custom("not on the direct path")
}

/// The whole body: one event object, or an array of them.
struct BodySeed<'a, 'r> {
    req: &'r Request<'r>,
    out: &'a mut Vec<Encoded>,
    scratch: &'a mut Scratch<'r>,
    max_events: usize,
}

impl<'de> DeserializeSeed<'de> for BodySeed<'_, '_> {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for BodySeed<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an event object or an array of event objects")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        if let Some(n) = seq.size_hint() {
            self.out.reserve(n.min(self.max_events));
        }
        loop {
            if self.out.len() >= self.max_events {
                // One more event would be over the limit; the tree path counts them all for its message.
                return match seq.next_element::<IgnoredAny>()? {
                    Some(_) => Err(refuse()),
                    None => Ok(()),
                };
            }
            let seed = EventSeed {
                req: self.req,
                scratch: &mut *self.scratch,
                index: self.out.len(),
            };
            match seq.next_element_seed(seed)? {
                Some(event) => self.out.push(event),
                None => return Ok(()),
            }
        }
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<(), A::Error> {
        let event = EventSeed {
            req: self.req,
            scratch: self.scratch,
            index: 0,
        }
        .visit_map(map)?;
        self.out.push(event);
        Ok(())
    }
}

/// One event object, the `index`th of its request.
struct EventSeed<'a, 'r> {
    req: &'r Request<'r>,
    scratch: &'a mut Scratch<'r>,
    index: usize,
}

impl<'de> DeserializeSeed<'de> for EventSeed<'_, '_> {
    type Value = Encoded;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Encoded, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for EventSeed<'_, '_> {
    type Value = Encoded;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an event object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Encoded, A::Error> {
        let req = self.req;
        let (plan, ctx, server) = (req.plan, req.ctx, req.server);
        let Scratch { bytes, slots } = &mut *self.scratch;
        bytes.clear();
        slots.clear();
        slots.resize_with(plan.fields.len(), || Slot::Missing);
        let mut next = 0;
        while let Some(i) = map.next_key_seed(FieldKey { plan, hint: next })? {
            next = i + 1;
            let (Some(field), Some(Slot::Missing)) = (plan.fields.get(i), slots.get(i)) else {
                // A duplicate: the tree path keeps the last, so it decides.
                return Err(refuse());
            };
            let slot = match &field.how {
                How::Direct(node) => {
                    let start = bytes.len();
                    map.next_value_seed(NodeSeed {
                        node,
                        out: &mut *bytes,
                        ctx,
                    })?;
                    Slot::Span(start, bytes.len())
                }
                How::Whole if Some(i) == plan.tenant => match map.next_value::<Json>()? {
                    Json::Null => Slot::Replaced,
                    Json::String(t) if t == server.tenant => Slot::Replaced,
                    _ => return Err(refuse()),
                },
                How::Whole if Some(i) == plan.received_at => {
                    map.next_value::<IgnoredAny>()?;
                    Slot::Replaced
                }
                How::Whole => match map.next_value::<Json>()? {
                    Json::Null if Some(i) == plan.event_id => Slot::Missing,
                    json => {
                        let v = validate::to_avro(json, &field.schema, ctx.names, ctx.limits)
                            .map_err(|_| refuse())?;
                        Slot::Value(v)
                    }
                },
            };
            slots[i] = slot;
        }
        self.finish().ok_or_else(refuse)
    }
}

impl EventSeed<'_, '_> {
    /// Fills what the client left out or the server sets, applies the event-time limit, and writes the record.
    fn finish(self) -> Option<Encoded> {
        let req = self.req;
        let (plan, stream) = (req.plan, req.stream);
        let Scratch { bytes, slots } = self.scratch;
        for (i, slot) in slots.iter_mut().enumerate() {
            let server_value = if Some(i) == plan.tenant {
                req.tenant.as_ref()
            } else if Some(i) == plan.received_at {
                req.received_at.as_ref()
            } else {
                None
            };
            if let Some(v) = server_value {
                *slot = Slot::Server(v);
                continue;
            }
            if !matches!(slot, Slot::Missing) {
                continue;
            }
            let field = plan.fields.get(i)?;
            *slot = if Some(i) == plan.event_id {
                let id = Json::String(req.server.ids.id(self.index).to_string());
                Slot::Value(
                    validate::to_avro(id, &field.schema, req.ctx.names, req.ctx.limits).ok()?,
                )
            } else {
                match field.default.as_ref()? {
                    Missing::Value(v) => Slot::Value(v.clone()),
                    // Written from the plan below, in place.
                    Missing::Bytes(_) => Slot::Missing,
                }
            };
        }
        if let Some(future) = &stream.future
            && let Some(slot) = slots.get_mut(future.index)
        {
            if let Slot::Server(v) = slot {
                *slot = Slot::Value((*v).clone());
            }
            if let Slot::Value(v) = slot {
                future.hold(v, req.server.received_at).ok()?;
            }
        }
        let value_at = |i: Option<usize>| match slots.get(i?)? {
            Slot::Value(v) => Some(v),
            Slot::Server(v) => Some(*v),
            _ => None,
        };
        let event_id = value_at(plan.event_id).and_then(scalar_text);
        let key = value_at(stream.key_field)
            .and_then(scalar_text)
            .unwrap_or_else(|| req.server.tenant.to_owned())
            .into_bytes();
        let mut payload = Vec::with_capacity(HEADER_LEN + bytes.len() + 64);
        payload.extend_from_slice(&req.header);
        for (field, slot) in plan.fields.iter().zip(slots.iter()) {
            match slot {
                Slot::Span(a, b) => payload.extend_from_slice(bytes.get(*a..*b)?),
                Slot::Value(v) => write_value(&mut payload, v, &field.schema)?,
                Slot::Server(v) => write_value(&mut payload, v, &field.schema)?,
                Slot::Missing => match &field.default {
                    Some(Missing::Bytes(d)) => payload.extend_from_slice(d),
                    _ => return None,
                },
                Slot::Replaced => return None,
            }
        }
        Some(Encoded {
            event_id,
            key,
            payload,
        })
    }
}

/// A field name, answered as the field's position; `hint` is checked first, since clients mostly send fields in
/// the schema's order.
struct FieldKey<'a> {
    plan: &'a EventPlan,
    hint: usize,
}

impl<'de> DeserializeSeed<'de> for FieldKey<'_> {
    type Value = usize;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<usize, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for FieldKey<'_> {
    type Value = usize;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a field of the schema")
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<usize, E> {
        let fields = &self.plan.fields;
        if fields.get(self.hint).is_some_and(|f| f.name == s) {
            return Ok(self.hint);
        }
        // Unknown fields are errors the tree path reports.
        fields.iter().position(|f| f.name == s).ok_or_else(refuse)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, FutureSkew, StreamConfig};
    use crate::encode::Encoder;
    use crate::stream::IdSource;

    const LIMITS: ValidateLimits = ValidateLimits {
        max_string_bytes: 64,
    };

    fn server() -> ServerSide<'static> {
        ServerSide {
            tenant: "acme",
            received_at: chrono::DateTime::from_timestamp_millis(1_800_000_000_000).expect("valid"),
            ids: IdSource::Idempotency {
                tenant: "acme",
                stream: "events",
                key: "k",
                body: &[0; 32],
            },
        }
    }

    fn events(edit: impl FnOnce(&mut StreamConfig)) -> Stream {
        let mut cfg = Config::default().streams["events"].clone();
        edit(&mut cfg);
        Stream::new("events", &cfg, 7).expect("stream")
    }

    /// One event as both paths are compared: its id, its key and its decoded value.
    type Seen = (Option<String>, Vec<u8>, Value);

    /// The tree path's answer for `body`, or `None` when it rejects it.
    fn tree(stream: &Stream, body: &str, max: usize) -> Option<Vec<Seen>> {
        let items = match serde_json::from_str::<Json>(body).ok()? {
            Json::Array(items) => items,
            obj @ Json::Object(_) => vec![obj],
            _ => return None,
        };
        if items.is_empty() || items.len() > max {
            return None;
        }
        let encoder = Encoder::new(stream.schema(), stream.schema_id).expect("encoder");
        items
            .into_iter()
            .enumerate()
            .map(|(i, item)| {
                let p = stream.prepare(item, i, &server(), LIMITS).ok()?;
                let bytes = encoder.encode(&p.value).expect("encodes");
                Some((p.event_id, p.key, decode(stream, &bytes)))
            })
            .collect()
    }

    fn decode(stream: &Stream, bytes: &[u8]) -> Value {
        let (id, mut body) = wire::unframe(bytes).expect("framed");
        assert_eq!(id, stream.schema_id);
        let v = apache_avro::reader::datum::GenericDatumReader::builder(stream.schema())
            .build()
            .expect("reader")
            .read_value(&mut body)
            .expect("decodes");
        assert!(body.is_empty(), "every byte read");
        v
    }

    /// The direct path writes what the tree path writes, event for event, and refuses what it rejects.
    fn agree(stream: &Stream, bodies: &[&str]) {
        for body in bodies {
            let direct = stream.encode_body(body.as_bytes(), &server(), LIMITS, 3);
            let direct = direct.map(|events| {
                events
                    .into_iter()
                    .map(|e| (e.event_id, e.key, decode(stream, &e.payload)))
                    .collect::<Vec<_>>()
            });
            assert_eq!(direct, tree(stream, body, 3), "{body}");
        }
    }

    const ID: &str = "0190b8a4-6c3e-7a1b-9c2d-3e4f5a6b7c8d";

    #[test]
    fn the_events_stream_is_written_as_the_tree_path_writes_it() {
        let stream = events(|_| {});
        assert!(stream.direct.is_some(), "the events schema is planned");
        let full = format!(
            r#"{{"event_id":"{ID}","tenant":"acme","event_type":"order","occurred_at":"2026-11-22T10:00:00.5Z",
               "received_at":"ignored","source":"web","user_id":"u1","anonymous_id":null,"session_id":"s",
               "trace_id":"t","properties":{{"a":"1","b":"é\"\n"}}}}"#
        );
        let reordered = format!(
            r#"{{"properties":{{}},"user_id":"u2","occurred_at":1700000000000,"event_type":"x","event_id":"{}"}}"#,
            ID.to_uppercase()
        );
        agree(
            &stream,
            &[
                &full,
                &reordered,
                r#"{"event_type":"x","occurred_at":5}"#,
                r#"[{"event_type":"x","occurred_at":5},{"event_type":"y","occurred_at":6,"event_id":null}]"#,
                r#"  [ {"event_type":"x","occurred_at":5} ]  "#,
            ],
        );
    }

    #[test]
    fn what_the_tree_path_rejects_is_refused() {
        let stream = events(|_| {});
        agree(
            &stream,
            &[
                "",
                "[]",
                "7",
                "[7]",
                "{",
                r#"{"event_type":"x","occurred_at":5} x"#,
                r#"{"event_type":"x"}"#,
                r#"{"event_type":"x","occurred_at":5,"nope":1}"#,
                r#"{"event_type":"x","occurred_at":5,"tenant":"other"}"#,
                r#"{"event_type":"x","occurred_at":-1}"#,
                r#"{"event_type":"x","occurred_at":5,"event_id":"not-a-uuid"}"#,
                r#"{"event_type":1,"occurred_at":5}"#,
                r#"{"event_type":"x","occurred_at":5,"properties":{"a":1}}"#,
                r#"{"event_type":"x","occurred_at":5,"user_id":[]}"#,
                &format!(r#"{{"event_type":"{}","occurred_at":5}}"#, "x".repeat(65)),
                // Over the limit of 3 events.
                r#"[{"event_type":"x","occurred_at":5},{"event_type":"x","occurred_at":5},
                    {"event_type":"x","occurred_at":5},{"event_type":"x","occurred_at":5}]"#,
                // Ahead of the server's clock (1_800_000_000_000) by more than the default skew.
                r#"{"event_type":"x","occurred_at":1900000000000}"#,
            ],
        );
    }

    #[test]
    fn a_duplicate_field_takes_the_tree_path_which_keeps_the_last() {
        let stream = events(|_| {});
        let body = r#"{"event_type":"x","event_type":"y","occurred_at":5}"#;
        assert!(
            stream
                .encode_body(body.as_bytes(), &server(), LIMITS, 3)
                .is_none()
        );
        assert!(tree(&stream, body, 3).is_some());
    }

    #[test]
    fn clamped_event_times_and_other_keys_match() {
        let stream = events(|c| {
            c.future_skew = FutureSkew::Clamp;
            c.key_field = "user_id".into();
        });
        agree(
            &stream,
            &[
                r#"{"event_type":"x","occurred_at":1900000000000,"user_id":"u"}"#,
                r#"{"event_type":"x","occurred_at":5,"user_id":null}"#,
            ],
        );
        let stream = events(|c| c.key_field = String::new());
        agree(&stream, &[r#"{"event_type":"x","occurred_at":5}"#]);
    }
}
