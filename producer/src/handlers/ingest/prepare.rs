//! From body bytes to Kafka records: parse the JSON, bound the batch, take its event permits, add the server-side
//! fields and validate every event, then encode each to Confluent-framed Avro.

use std::sync::Arc;

use serde_json::Value as Json;
use tokio::sync::OwnedSemaphorePermit;

use super::admission::{self, Held};
use crate::encode::Encoder;
use crate::error::{ApiError, EventError};
use crate::handlers::AppState;
use crate::idempotency::{Digest32, Idempotency, body_digest};
use crate::quota::KeyQuota;
use crate::sink::OutRecord;
use crate::stream::{Encoded, IdSource, Prepared, ServerSide, Stream};
use crate::validate::ValidateLimits;

/// Bodies above this are parsed, validated and encoded on the blocking pool, off the async workers.
const INLINE_BODY_BYTES: usize = 64 * 1024;

/// A request's events, encoded and ready for the sink, with their in-flight permits.
pub(crate) struct Built {
    /// One record per event, in request order.
    pub(crate) records: Vec<OutRecord>,
    /// The events' ids, in request order.
    pub(crate) event_ids: Vec<String>,
    /// With `partial`: each record's index in the request (`None`: every event became a record, in order).
    pub(crate) indexes: Option<Vec<usize>>,
    /// With `partial`: the problems of the events left out, and how many events those are.
    pub(crate) rejected: Rejected,
    /// The event permits, to hold until the records are acknowledged.
    pub(crate) _events: Held,
    /// The key's share of them, likewise.
    pub(crate) _share: OwnedSemaphorePermit,
}

/// The events a `partial` request left out.
#[derive(Debug, Default)]
pub(crate) struct Rejected {
    /// How many events.
    pub(crate) events: usize,
    /// Every problem of each, by request index.
    pub(crate) errors: Vec<EventError>,
}

/// Everything needed to turn a body into records, owned so it can run on the blocking pool.
pub(crate) struct BuildJob {
    /// Limits, permits and metrics.
    pub(crate) app: Arc<AppState>,
    /// The stream the events are for.
    pub(crate) stream: Arc<Stream>,
    /// The ingestion key's tenant.
    pub(crate) tenant: String,
    /// The ingestion key's quotas.
    pub(crate) quota: Arc<KeyQuota>,
    /// The request's idempotency key, if any.
    pub(crate) idempotency: Option<String>,
    /// The events.
    pub(crate) input: Input,
    /// Write the valid events and report the invalid ones, instead of all-or-nothing.
    pub(crate) partial: bool,
    /// Each input event's index in the request, when a route already left some out (`None`: in order from 0).
    pub(crate) origins: Option<Vec<usize>>,
}

/// What a request's events arrive as.
pub(crate) enum Input {
    /// The whole (decompressed) body of the native route: one event object or an array of them.
    Body(Vec<u8>),
    /// Events another route already parsed into the stream's shape (the Segment API's messages), with the digest
    /// of the messages as sent when the request has an `Idempotency-Key` (the converted events carry the time of
    /// receipt, so they cannot be what a retry is compared by).
    Events {
        /// The converted events.
        events: Vec<Json>,
        /// The digest of the messages as sent, without the envelope's `sentAt` and `writeKey`.
        as_sent: Option<Digest32>,
    },
}

impl Input {
    fn len_hint(&self) -> usize {
        match self {
            Input::Body(b) => b.len(),
            // A Segment message is at most 32 KB; count a typical one's size so large batches leave the workers.
            Input::Events { events, .. } => events.len().saturating_mul(1024),
        }
    }
}

/// Runs `job`, inline for a small body and on the blocking pool for a large one; sets `events` to how many events
/// the body held as soon as that is known, even when the build then fails.
pub(crate) async fn build(job: BuildJob, events: &mut usize) -> Result<Built, ApiError> {
    let (built, count) = if job.input.len_hint() <= INLINE_BODY_BYTES {
        job.run()
    } else {
        tokio::task::spawn_blocking(move || job.run())
            .await
            .map_err(|e| ApiError::Internal(e.to_string()))?
    };
    *events = count;
    built
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
            quota,
            idempotency,
            input,
            partial,
            origins,
        } = self;
        let limits = &app.limits;
        let idem = match (idempotency, &input) {
            (None, _) => None,
            (Some(key), Input::Body(b)) => Some(Idempotency {
                key,
                body: body_digest([&b[..]]),
            }),
            (Some(key), Input::Events { as_sent, .. }) => Some(Idempotency {
                key,
                body: as_sent.ok_or_else(|| {
                    ApiError::Internal("an idempotent request without its digest".into())
                })?,
            }),
        };
        // Claimed only once the events are known good: a client that fixes a rejected body may keep its key.
        let claim = || match &idem {
            Some(i) => app.idempotency.claim(&tenant, &stream.name, i),
            None => Ok(()),
        };
        let ids = match &idem {
            Some(i) => IdSource::Idempotency {
                tenant: &tenant,
                stream: &stream.name,
                key: &i.key,
                body: &i.body,
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
        let items = match input {
            Input::Body(body) => {
                // Valid bodies are written straight from their bytes; anything else takes the tree path below,
                // which reports it.
                if let Some(encoded) =
                    stream.encode_body(&body, &server, vlimits, limits.max_batch_events)
                {
                    drop(body);
                    *count = encoded.len();
                    claim()?;
                    let share = quota.admit_events(encoded.len())?;
                    let events = admission::admit_events(&app, encoded.len())?;
                    let (records, event_ids) = into_records(encoded, limits.max_message_bytes)?;
                    return Ok(Built {
                        records,
                        event_ids,
                        indexes: None,
                        rejected: Rejected::default(),
                        _events: events,
                        _share: share,
                    });
                }
                parse(body)?
            }
            Input::Events { events, .. } => events,
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
        let share = quota.admit_events(items.len())?;
        let events = admission::admit_events(&app, items.len())?;

        let v = validate_each(&stream, items, origins.as_deref(), &server, vlimits);
        if v.invalid > 0 && (!partial || v.prepared.is_empty()) {
            return Err(ApiError::Invalid {
                invalid: v.invalid,
                total: v.total,
                errors: v.errors,
            });
        }
        claim()?;
        let (records, event_ids) = encode_all(&stream, v.prepared, limits.max_message_bytes)
            .map_err(|e| match e {
                // The index the client knows is the one in its request.
                ApiError::EventTooLarge { index, size, max } => ApiError::EventTooLarge {
                    index: v.kept.get(index).copied().unwrap_or(index),
                    size,
                    max,
                },
                other => other,
            })?;
        let in_order = v.kept.iter().enumerate().all(|(i, k)| i == *k);
        Ok(Built {
            records,
            event_ids,
            indexes: (!in_order).then_some(v.kept),
            rejected: Rejected {
                events: v.invalid,
                errors: v.errors,
            },
            _events: events,
            _share: share,
        })
    }
}

/// The body's events: one object, or an array of them. Takes the body by value so its bytes are freed before
/// validation builds the Avro values.
fn parse(body: Vec<u8>) -> Result<Vec<Json>, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::EmptyBody);
    }
    let json: Json = serde_json::from_slice(&body).map_err(|e| ApiError::BadJson(e.to_string()))?;
    drop(body);
    match json {
        Json::Array(items) => Ok(items),
        obj @ Json::Object(_) => Ok(vec![obj]),
        _ => Err(ApiError::BadJson(
            "expected an event object or an array of event objects".into(),
        )),
    }
}

/// Every event of a batch, validated: the good ones with their request indexes, and every problem of the others.
struct Validated {
    prepared: Vec<Prepared>,
    /// The request index of each of `prepared`.
    kept: Vec<usize>,
    errors: Vec<EventError>,
    invalid: usize,
    total: usize,
}

/// Adds the server-side fields to every event and validates it, reporting every problem of every event by its
/// index in the request (`origins`, when a route already left some events out).
fn validate_each(
    stream: &Stream,
    items: Vec<Json>,
    origins: Option<&[usize]>,
    server: &ServerSide<'_>,
    vlimits: ValidateLimits,
) -> Validated {
    let total = items.len();
    let mut v = Validated {
        prepared: Vec::with_capacity(total),
        kept: Vec::with_capacity(total),
        errors: Vec::new(),
        invalid: 0,
        total,
    };
    for (i, item) in items.into_iter().enumerate() {
        let index = origins.and_then(|o| o.get(i).copied()).unwrap_or(i);
        match stream.prepare(item, index, server, vlimits) {
            Ok(p) => {
                v.prepared.push(p);
                v.kept.push(index);
            }
            Err(errs) => {
                v.invalid += 1;
                v.errors.extend(errs.into_iter().map(|e| EventError {
                    index,
                    pointer: e.pointer,
                    message: e.message,
                }));
            }
        }
    }
    v
}

/// Encodes every event of the tree path, then frames them as the direct path does.
fn encode_all(
    stream: &Stream,
    prepared: Vec<Prepared>,
    max_message_bytes: usize,
) -> Result<(Vec<OutRecord>, Vec<String>), ApiError> {
    let encoder = Encoder::new(stream.schema(), stream.schema_id)
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    let encoded = prepared
        .into_iter()
        .map(|p| {
            Ok(Encoded {
                payload: encoder
                    .encode(&p.value)
                    .map_err(|e| ApiError::Internal(e.to_string()))?,
                event_id: p.event_id,
                key: p.key,
            })
        })
        .collect::<Result<Vec<_>, ApiError>>()?;
    into_records(encoded, max_message_bytes)
}

/// The records for Kafka and the events' ids, once every event is known to fit in a message.
fn into_records(
    encoded: Vec<Encoded>,
    max_message_bytes: usize,
) -> Result<(Vec<OutRecord>, Vec<String>), ApiError> {
    // Checked before anything is sent, so an oversize event cannot leave half a batch written.
    if let Some((index, e)) = encoded
        .iter()
        .enumerate()
        .find(|(_, e)| e.payload.len() + e.key.len() > max_message_bytes)
    {
        return Err(ApiError::EventTooLarge {
            index,
            size: e.payload.len(),
            max: max_message_bytes,
        });
    }
    let mut records = Vec::with_capacity(encoded.len());
    let mut event_ids = Vec::with_capacity(encoded.len());
    for e in encoded {
        records.push(OutRecord {
            key: e.key,
            payload: e.payload,
        });
        if let Some(id) = e.event_id {
            event_ids.push(id);
        }
    }
    Ok((records, event_ids))
}
