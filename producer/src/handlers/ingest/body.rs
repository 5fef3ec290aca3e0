//! Reading the request body within the size limit, the byte budget and the request deadline, and draining what an
//! error answer leaves unread.

use std::time::Duration;

use axum::body::BodyDataStream;
use futures::StreamExt;

use super::admission::Held;
use crate::error::ApiError;

/// How long an error answer waits for the client to finish sending a body nobody will read.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);

/// Reads the whole body by `deadline`, up to `max` bytes. `body` becomes `None` once it is used up, or when the
/// client was too slow; on any other error the rest stays there for [`drain`].
pub(crate) async fn read_within(
    body: &mut Option<BodyDataStream>,
    deadline: tokio::time::Instant,
    max: usize,
    held: &mut Held,
) -> Result<Vec<u8>, ApiError> {
    let Some(stream_body) = body.as_mut() else {
        return Err(ApiError::Internal("body already taken".into()));
    };
    let read = tokio::time::timeout_at(deadline, read_body(stream_body, max, held)).await;
    match read {
        Ok(Ok(bytes)) => {
            *body = None;
            Ok(bytes)
        }
        // A client too slow to send its body is not worth waiting for again.
        Err(_) => {
            *body = None;
            Err(ApiError::BodyTimeout)
        }
        Ok(Err(e)) => Err(e),
    }
}

/// Reads the body up to `max` bytes (after decompression).
///
/// Bytes are reserved as they arrive (`held` grows, doubling), so a compressed or chunked body of unknown size
/// holds only what it really decompresses to, and a reservation that cannot grow is a 429.
async fn read_body(
    body: &mut BodyDataStream,
    max: usize,
    held: &mut Held,
) -> Result<Vec<u8>, ApiError> {
    let mut buf = Vec::with_capacity(held.count().min(max));
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| ApiError::BadBody(error_chain(&e)))?;
        let needed = buf.len() + chunk.len();
        if needed > max {
            return Err(ApiError::BodyTooLarge(max));
        }
        if needed > held.count() {
            let target = needed.max(held.count().saturating_mul(2)).min(max);
            held.grow(target - held.count())?;
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf)
}

/// Reads and discards what the client is still sending, so it can read our error answer: closing a socket with
/// unread data makes the kernel reset the connection, and the client sees a broken pipe instead of a 4xx.
pub(crate) async fn drain(mut body: BodyDataStream, max: usize) {
    let _ = tokio::time::timeout(DRAIN_TIMEOUT, async {
        let mut seen = 0usize;
        while let Some(Ok(chunk)) = body.next().await {
            seen += chunk.len();
            if seen > max {
                break;
            }
        }
    })
    .await;
}

/// `e` and its sources, joined with `: `, since the outermost body error alone rarely says what went wrong.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut msg = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        source = s.source();
    }
    msg
}
