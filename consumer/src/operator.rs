//! The operator's way out of a partition that waits on a failure that will not clear: `POST /operator/dead-letter`
//! on the ops port dead-letters one held message by hand (class `operator`), so its partition moves on without
//! stopping the group or editing offsets. `sluice-consumer dlq skip` is its client.
//!
//! Only a message this replica holds (it failed an attempt and waits for a retry) can be taken: one being read or
//! inserted right now, or held by another replica, is refused with the partitions this replica does hold. The
//! endpoint answers on a loopback listener; elsewhere only when `operator_key` is set, as a bearer token.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

use crate::offsets::TopicPartition;

/// Which message to dead-letter, and why.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Skip {
    /// Source topic.
    pub topic: String,
    /// Source partition.
    pub partition: i32,
    /// Source offset.
    pub offset: i64,
    /// Written to the letter's error message.
    #[serde(default)]
    pub reason: Option<String>,
}

/// Why a skip was not done.
#[derive(Debug, Clone, Serialize, Deserialize, thiserror::Error)]
pub enum Refused {
    /// This replica does not hold that message; it holds these (`topic/partition from offset`).
    #[error("not held by this consumer; it holds {held:?}")]
    NotHeld {
        /// What this replica holds.
        held: Vec<String>,
    },
    /// The letter could not be sent; the message stays held.
    #[error("the letter could not be sent: {0}")]
    Dlq(String),
    /// The consumer is shutting down or not consuming yet.
    #[error("the consumer is not consuming")]
    NotConsuming,
}

/// A skip on its way to the consume loop, with where its answer goes.
pub struct Request {
    /// What to skip.
    pub skip: Skip,
    /// The write step's answer: the DLQ topic the letter went to.
    pub reply: oneshot::Sender<Result<String, Refused>>,
}

impl Skip {
    /// The partition named.
    pub fn partition(&self) -> TopicPartition {
        TopicPartition::new(&self.topic, self.partition)
    }
}

#[derive(Clone)]
struct Operator {
    key: Option<String>,
    requests: mpsc::Sender<Request>,
}

/// The operator route, sending to `requests`; `None` when it may not be served (a non-loopback listener without a
/// key).
pub fn router(
    listen: &std::net::SocketAddr,
    key: Option<String>,
    requests: mpsc::Sender<Request>,
) -> Option<Router> {
    if key.is_none() && !listen.ip().is_loopback() {
        return None;
    }
    Some(
        Router::new()
            .route("/operator/dead-letter", post(dead_letter))
            .with_state(Operator { key, requests }),
    )
}

async fn dead_letter(
    State(op): State<Operator>,
    headers: HeaderMap,
    Json(skip): Json<Skip>,
) -> Response {
    if let Some(want) = &op.key
        && !sluice_runtime::ops::key_matches(sluice_runtime::ops::bearer(&headers), want)
    {
        return (
            StatusCode::UNAUTHORIZED,
            "needs Authorization: Bearer <operator_key>\n",
        )
            .into_response();
    }
    let (reply, answer) = oneshot::channel();
    if op.requests.send(Request { skip, reply }).await.is_err() {
        return refused(Refused::NotConsuming);
    }
    match answer.await {
        Ok(Ok(dlq_topic)) => {
            Json(serde_json::json!({ "dead_lettered_to": dlq_topic })).into_response()
        }
        Ok(Err(r)) => refused(r),
        Err(_) => refused(Refused::NotConsuming),
    }
}

fn refused(r: Refused) -> Response {
    let status = match r {
        Refused::NotHeld { .. } => StatusCode::NOT_FOUND,
        Refused::Dlq(_) | Refused::NotConsuming => StatusCode::SERVICE_UNAVAILABLE,
    };
    (
        status,
        Json(serde_json::json!({ "error": r.to_string(), "refused": r })),
    )
        .into_response()
}

/// Asks each consumer at `urls` in turn to dead-letter `skip` until one holds it; returns that consumer's URL and
/// the DLQ topic, or every consumer's answer.
pub async fn skip(
    urls: &[String],
    key: Option<&str>,
    skip: &Skip,
) -> Result<(String, String), Vec<String>> {
    let http = reqwest::Client::new();
    let mut answers = Vec::new();
    for url in urls {
        let mut req = http
            .post(format!(
                "{}/operator/dead-letter",
                url.trim_end_matches('/')
            ))
            .json(skip);
        if let Some(k) = key {
            req = req.bearer_auth(k);
        }
        match req.send().await {
            Ok(resp) if resp.status().is_success() => {
                let body: serde_json::Value = resp.json().await.unwrap_or_default();
                let dlq = body["dead_lettered_to"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned();
                return Ok((url.clone(), dlq));
            }
            Ok(resp) => {
                let status = resp.status();
                let body: serde_json::Value = resp.json().await.unwrap_or_default();
                answers.push(format!(
                    "{url}: {status} {}",
                    body["error"].as_str().unwrap_or_default()
                ));
            }
            Err(e) => answers.push(format!("{url}: {e}")),
        }
    }
    Err(answers)
}
