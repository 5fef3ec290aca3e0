//! The live dashboard on the consumer's ops port: `GET /dashboard` (one page, its script and styles embedded in
//! the binary, no external requests) and `GET /dashboard/events`, a server-sent event stream of one snapshot a
//! second ([`snapshot`]).
//!
//! One task builds each snapshot once and publishes it, serialized, on a `watch` channel: every open tab reads the
//! latest one, so a tab that stops reading holds one shared snapshot at most, and a hundred tabs cost one build.

pub mod snapshot;

use std::convert::Infallible;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use futures::{Stream, StreamExt as _};
use serde::Deserialize;
use serde_json::json;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::metrics::Metrics;
use crate::sink::clickhouse::ClickHouseSink;
use crate::source::kafka::SourceContext;

/// The page.
const PAGE: &str = include_str!("page.html");

/// What the dashboard reads from.
pub struct Sources {
    /// The consumer's config (streams, group, dashboard settings).
    pub config: Config,
    /// The registry `/metrics` serves.
    pub registry: prometheus::Registry,
    /// For the recent dead letters.
    pub metrics: Metrics,
    /// For the tail of rows landed.
    pub sink: ClickHouseSink,
    /// This replica's rebalance context, once it is consuming (its own partitions, when the coordinator does not
    /// describe the group).
    pub context: Arc<OnceLock<SourceContext>>,
}

#[derive(Clone)]
struct Dashboard {
    key: Option<String>,
    latest: watch::Receiver<Arc<String>>,
}

/// The dashboard's routes, and the task that feeds them until `shutdown`; `None` when the dashboard is off.
pub fn router(sources: Sources, shutdown: CancellationToken) -> Option<Router> {
    let settings = &sources.config.dashboard;
    if !settings.is_enabled(&sources.config.listen) {
        return None;
    }
    let key = settings.key.clone();
    let (tx, rx) = watch::channel(Arc::new("{}".to_owned()));
    tokio::spawn(feed(sources, tx, shutdown));
    Some(routes(key, rx))
}

/// The two routes over the snapshots of `latest`, guarded by `key`.
fn routes(key: Option<String>, latest: watch::Receiver<Arc<String>>) -> Router {
    Router::new()
        .route("/dashboard", get(page))
        .route("/dashboard/events", get(events))
        .with_state(Dashboard { key, latest })
}

/// The cookie the page gets once its key is checked: the key's SHA-256, never the key, and only for these paths.
const COOKIE: &str = "sluice_dashboard";

/// The value [`COOKIE`] holds for `key`.
fn cookie_value(key: &str) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(key.as_bytes()))
}

#[derive(Deserialize)]
struct KeyQuery {
    key: Option<String>,
}

impl Dashboard {
    /// Whether the request carries the key: as a Bearer token, as the cookie the page sets, or (the page only,
    /// `query` given) as `?key=`. Each is compared in constant time, and all of them, so no timing tells which.
    fn allowed(&self, headers: &HeaderMap, query: Option<&KeyQuery>) -> bool {
        let Some(want) = &self.key else {
            return true;
        };
        use sluice_runtime::ops::{bearer, key_matches};
        let by_query = key_matches(query.and_then(|q| q.key.as_deref()), want);
        let by_header = key_matches(bearer(headers), want);
        let by_cookie = key_matches(cookie(headers), &cookie_value(want));
        by_query | by_header | by_cookie
    }
}

/// The value of [`COOKIE`] in the request's `Cookie` headers.
fn cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| pair.trim().strip_prefix(COOKIE)?.strip_prefix('='))
}

fn denied() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        "the dashboard needs its key: /dashboard?key=<dashboard.key> once (the page keeps it in a cookie), or \
         Authorization: Bearer <dashboard.key>\n",
    )
        .into_response()
}

async fn page(
    State(d): State<Dashboard>,
    headers: HeaderMap,
    Query(q): Query<KeyQuery>,
) -> Response {
    if !d.allowed(&headers, Some(&q)) {
        return denied();
    }
    let mut page = Html(PAGE).into_response();
    // The stream then needs no key in its URL (an `EventSource` cannot send headers), and the page takes the key
    // out of the address bar, so it stays out of history, proxies' logs and shared links.
    if let Some(key) = &d.key
        && let Ok(v) = axum::http::HeaderValue::from_str(&format!(
            "{COOKIE}={}; HttpOnly; SameSite=Strict; Path=/dashboard",
            cookie_value(key)
        ))
    {
        page.headers_mut().insert(axum::http::header::SET_COOKIE, v);
    }
    page
}

/// The snapshot stream: its key comes as the page's cookie or a Bearer token, never in the URL.
async fn events(State(d): State<Dashboard>, headers: HeaderMap) -> Response {
    if !d.allowed(&headers, None) {
        return denied();
    }
    let events =
        snapshots(d.latest).map(|data| Ok::<_, Infallible>(Event::default().data(data.as_str())));
    Sse::new(events)
        .keep_alive(KeepAlive::default())
        .into_response()
}

/// The current snapshot, then each new one; a slow reader skips to the latest instead of queueing, so a tab that
/// stops reading holds one snapshot (and what its socket buffers), however long it stays open.
fn snapshots(rx: watch::Receiver<Arc<String>>) -> impl Stream<Item = Arc<String>> {
    futures::stream::unfold((rx, true), |(mut rx, first)| async move {
        if !first && rx.changed().await.is_err() {
            return None;
        }
        let data = rx.borrow_and_update().clone();
        Some((data, (rx, false)))
    })
}

/// Builds a snapshot a second until `shutdown`.
async fn feed(sources: Sources, tx: watch::Sender<Arc<String>>, shutdown: CancellationToken) {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_millis(800))
        .no_proxy()
        .build()
        .unwrap_or_default();
    let probe: Option<Arc<rdkafka::consumer::BaseConsumer>> = sources
        .config
        .kafka
        .client_config()
        .create()
        .ok()
        .map(Arc::new);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut n: u64 = 0;
    let (mut members, mut tail) = (serde_json::Value::Null, serde_json::Value::Null);
    let mut table_letters = None;
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        // The group and the tail change slowly and cost a round trip each: every other second.
        if n.is_multiple_of(2) {
            tail = snapshot::tail(&sources.sink, &sources.config).await;
            table_letters = snapshot::table_letters(&sources.sink, &sources.config).await;
            members = match &probe {
                Some(p) => {
                    let group = sources.config.group_id.clone();
                    let p = p.clone();
                    tokio::task::spawn_blocking(move || snapshot::group_members(&p, &group))
                        .await
                        .ok()
                        .flatten()
                        .unwrap_or(serde_json::Value::Null)
                }
                None => serde_json::Value::Null,
            };
        }
        n += 1;
        let own: Vec<String> = sources
            .context
            .get()
            .map(|c| {
                c.offsets()
                    .assigned()
                    .into_iter()
                    .map(|tp| format!("{}/{}", tp.topic, tp.partition))
                    .collect()
            })
            .unwrap_or_default();
        let snap = json!({
            "at_ms": chrono::Utc::now().timestamp_millis(),
            "group": sources.config.group_id,
            "consumer": snapshot::families(&sources.registry),
            "producer": snapshot::producers(&http, &sources.config.dashboard.producer_metrics).await,
            "members": members,
            "own_partitions": own,
            "letters": table_letters
                .clone()
                .unwrap_or_else(|| snapshot::letters(&sources.metrics, &sources.config)),
            "held": snapshot::held(&sources.metrics, &sources.config),
            "tail": tail,
        });
        if tx.send(Arc::new(snap.to_string())).is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::FutureExt as _;
    use tower::ServiceExt as _;

    async fn get(app: &Router, uri: &str, header: Option<(&str, &str)>) -> Response {
        let mut req = axum::http::Request::get(uri);
        if let Some((name, value)) = header {
            req = req.header(name, value);
        }
        app.clone()
            .oneshot(req.body(axum::body::Body::empty()).expect("request"))
            .await
            .expect("answer")
    }

    #[tokio::test]
    async fn the_key_is_taken_once_from_the_page_url_and_then_travels_in_a_cookie() {
        let (_tx, rx) = watch::channel(Arc::new("{}".to_string()));
        let app = routes(Some("s3cret".into()), rx);
        assert_eq!(get(&app, "/dashboard", None).await.status(), 401);
        assert_eq!(get(&app, "/dashboard?key=wrong", None).await.status(), 401);
        let page = get(&app, "/dashboard?key=s3cret", None).await;
        assert_eq!(page.status(), 200);
        let set = page
            .headers()
            .get("set-cookie")
            .and_then(|v| v.to_str().ok())
            .expect("a cookie")
            .to_owned();
        assert!(
            set.contains("HttpOnly") && set.contains("SameSite=Strict"),
            "{set}"
        );
        assert!(
            !set.contains("s3cret"),
            "the cookie holds a digest, not the key: {set}"
        );
        let cookie = set.split(';').next().expect("name=value");
        // The stream: by the cookie or a Bearer token, never by a key in its URL.
        assert_eq!(
            get(&app, "/dashboard/events?key=s3cret", None)
                .await
                .status(),
            401
        );
        let by_cookie = get(&app, "/dashboard/events", Some(("cookie", cookie))).await;
        assert_eq!(by_cookie.status(), 200);
        let by_bearer = get(
            &app,
            "/dashboard/events",
            Some(("authorization", "Bearer s3cret")),
        )
        .await;
        assert_eq!(by_bearer.status(), 200);
        let forged = format!("{COOKIE}={}", cookie_value("guess"));
        assert_eq!(
            get(&app, "/dashboard/events", Some(("cookie", &forged)))
                .await
                .status(),
            401
        );
    }

    #[tokio::test]
    async fn a_tab_that_stops_reading_gets_only_the_latest_snapshot_when_it_reads_again() {
        let (tx, rx) = watch::channel(Arc::new("0".to_string()));
        let stream = snapshots(rx);
        futures::pin_mut!(stream);
        assert_eq!(
            stream.next().await.as_deref().map(String::as_str),
            Some("0")
        );
        // A thousand snapshots while the tab reads nothing, with time for any task behind the stream to take each
        // one (as a second between snapshots gives it): none of them waits for the tab.
        for n in 1..=1000 {
            let _ = tx.send(Arc::new(n.to_string()));
            tokio::task::yield_now().await;
        }
        assert_eq!(tx.receiver_count(), 1);
        assert_eq!(
            stream.next().await.as_deref().map(String::as_str),
            Some("1000")
        );
        assert!(
            stream.next().now_or_never().is_none(),
            "nothing else was waiting"
        );
        let _ = tx.send(Arc::new("1001".to_string()));
        assert_eq!(
            stream.next().await.as_deref().map(String::as_str),
            Some("1001")
        );
        drop(tx);
        assert!(
            stream.next().await.is_none(),
            "the stream ends with the feed"
        );
    }
}
