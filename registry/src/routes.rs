//! Confluent's REST paths mapped to the registry, plus the request metrics layer.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{MatchedPath, Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Router, http::Method};
use serde::Serialize;
use sluice_runtime::ops::Ops;

use crate::api::{
    CONTENT_TYPE, CompatibilityResponse, ConfigRequest, ConfigUpdateResponse, RegisterResponse,
    SchemaRequest, VersionSpec, flag, negotiate, parse_body,
};
use crate::auth::{AuthConfig, authorize};
use crate::error::{Error, ErrorKind};
use crate::metrics::Metrics;
use crate::service::Registry;

/// What every handler reads from.
#[derive(Clone)]
pub struct AppState {
    /// The registry itself.
    pub registry: Arc<Registry>,
    /// Request metrics.
    pub metrics: Metrics,
    /// Who may do what.
    pub auth: Arc<AuthConfig>,
}

type Params = Query<HashMap<String, String>>;
type Answer = Result<Response, Error>;

/// The whole HTTP surface: the API, the ops endpoints, and JSON errors for unknown paths and methods.
pub fn router(state: AppState, ops: Ops) -> Router {
    Router::new()
        .route("/", get(|| async { json(&serde_json::json!({})) }))
        .route("/schemas/types", get(|| async { json(&["AVRO"]) }))
        .route("/schemas/ids/{id}", get(schema_by_id))
        .route("/schemas/ids/{id}/schema", get(raw_schema_by_id))
        .route("/schemas/ids/{id}/subjects", get(subjects_of_id))
        .route("/schemas/ids/{id}/versions", get(versions_of_id))
        .route("/subjects", get(subjects))
        .route("/subjects/{subject}", post(lookup).delete(delete_subject))
        .route("/subjects/{subject}/versions", get(versions).post(register))
        .route(
            "/subjects/{subject}/versions/{version}",
            get(version).delete(delete_version),
        )
        .route(
            "/subjects/{subject}/versions/{version}/schema",
            get(raw_version),
        )
        .route(
            "/subjects/{subject}/versions/{version}/referencedby",
            get(referenced_by),
        )
        .route(
            "/config",
            get(global_config)
                .put(put_global_config)
                .delete(delete_global_config),
        )
        .route(
            "/config/{subject}",
            get(subject_config)
                .put(put_subject_config)
                .delete(delete_subject_config),
        )
        .route(
            "/compatibility/subjects/{subject}/versions",
            post(compatibility_with_all),
        )
        .route(
            "/compatibility/subjects/{subject}/versions/{version}",
            post(compatibility_with_version),
        )
        .route(
            "/mode",
            get(|| async { json(&serde_json::json!({ "mode": "READWRITE" })) }),
        )
        .merge(ops.router())
        // Inside the metrics layer, so refusals are counted like any answer.
        .route_layer(middleware::from_fn_with_state(
            state.auth.clone(),
            authorize,
        ))
        .route_layer(middleware::from_fn_with_state(state.metrics.clone(), track))
        .fallback(no_route)
        .method_not_allowed_fallback(|| async { Error::MethodNotAllowed })
        .layer(middleware::from_fn(negotiate_content_type))
        .with_state(state)
}

/// A JSON answer with Confluent's content type.
fn json<T: Serialize + ?Sized>(body: &T) -> Response {
    match serde_json::to_vec(body) {
        Ok(bytes) => with_content_type(bytes.into_response()),
        Err(e) => Error::Store(format!("encoding the answer: {e}")).into_response(),
    }
}

/// A schema's own text (the `/schema` endpoints answer the schema itself, not a JSON string holding it).
fn raw(text: String) -> Response {
    with_content_type(text.into_response())
}

fn with_content_type(mut response: Response) -> Response {
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
    response
}

fn schema_id(text: &str) -> Result<u32, Error> {
    text.parse()
        .map_err(|_| Error::SchemaNotFound(Some(text.to_owned())))
}

async fn no_route(State(state): State<AppState>, method: Method) -> Error {
    state
        .metrics
        .requests
        .with_label_values(&["unmatched", method.as_str(), "404"])
        .inc();
    state
        .metrics
        .errors
        .with_label_values(&[Error::NoRoute.label()])
        .inc();
    Error::NoRoute
}

/// Answers in the media type the client asked for, as Confluent's server does (`application/json` clients
/// get `application/json`).
async fn negotiate_content_type(request: Request, next: Next) -> Response {
    let wanted = negotiate(
        request
            .headers()
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok()),
    );
    let mut response = next.run(request).await;
    if wanted != CONTENT_TYPE
        && response
            .headers()
            .get(header::CONTENT_TYPE)
            .is_some_and(|v| v == CONTENT_TYPE)
    {
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(wanted));
    }
    response
}

async fn track(
    State(metrics): State<Metrics>,
    matched: Option<MatchedPath>,
    request: Request,
    next: Next,
) -> Response {
    let route = matched
        .as_ref()
        .map_or("unmatched", MatchedPath::as_str)
        .to_owned();
    let method = request.method().clone();
    let started = Instant::now();
    let response = next.run(request).await;
    metrics
        .duration
        .with_label_values(&[route.as_str()])
        .observe(started.elapsed().as_secs_f64());
    metrics
        .requests
        .with_label_values(&[route.as_str(), method.as_str(), response.status().as_str()])
        .inc();
    if let Some(ErrorKind(kind)) = response.extensions().get::<ErrorKind>() {
        metrics.errors.with_label_values(&[kind]).inc();
    }
    response
}

async fn schema_by_id(State(s): State<AppState>, Path(id): Path<String>) -> Answer {
    Ok(json(&s.registry.schema_by_id(schema_id(&id)?)?))
}

async fn raw_schema_by_id(State(s): State<AppState>, Path(id): Path<String>) -> Answer {
    Ok(raw(s.registry.schema_by_id(schema_id(&id)?)?.schema))
}

async fn subjects_of_id(
    State(s): State<AppState>,
    Path(id): Path<String>,
    Query(q): Params,
) -> Answer {
    let uses = s
        .registry
        .versions_of_id(schema_id(&id)?, flag(&q, "deleted"))?;
    let mut subjects: Vec<String> = uses.into_iter().map(|u| u.subject).collect();
    subjects.dedup();
    Ok(json(&subjects))
}

async fn versions_of_id(
    State(s): State<AppState>,
    Path(id): Path<String>,
    Query(q): Params,
) -> Answer {
    Ok(json(
        &s.registry
            .versions_of_id(schema_id(&id)?, flag(&q, "deleted"))?,
    ))
}

async fn subjects(State(s): State<AppState>, Query(q): Params) -> Answer {
    Ok(json(&s.registry.subjects(flag(&q, "deleted"))?))
}

async fn lookup(
    State(s): State<AppState>,
    Path(subject): Path<String>,
    Query(q): Params,
    headers: HeaderMap,
    body: Bytes,
) -> Answer {
    let request: SchemaRequest = parse_body(&headers, &body)?;
    Ok(json(&s.registry.lookup(
        &subject,
        &request,
        flag(&q, "deleted"),
    )?))
}

async fn register(
    State(s): State<AppState>,
    Path(subject): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Answer {
    let request: SchemaRequest = parse_body(&headers, &body)?;
    let id = s.registry.register(&subject, &request).await?;
    Ok(json(&RegisterResponse { id }))
}

async fn delete_subject(
    State(s): State<AppState>,
    Path(subject): Path<String>,
    Query(q): Params,
) -> Answer {
    Ok(json(
        &s.registry
            .delete_subject(&subject, flag(&q, "permanent"))
            .await?,
    ))
}

async fn versions(
    State(s): State<AppState>,
    Path(subject): Path<String>,
    Query(q): Params,
) -> Answer {
    Ok(json(&s.registry.versions(&subject, flag(&q, "deleted"))?))
}

async fn version(
    State(s): State<AppState>,
    Path((subject, version)): Path<(String, String)>,
    Query(q): Params,
) -> Answer {
    Ok(json(&s.registry.version(
        &subject,
        VersionSpec::parse(&version)?,
        flag(&q, "deleted"),
    )?))
}

async fn raw_version(
    State(s): State<AppState>,
    Path((subject, version)): Path<(String, String)>,
    Query(q): Params,
) -> Answer {
    Ok(raw(s
        .registry
        .version(&subject, VersionSpec::parse(&version)?, flag(&q, "deleted"))?
        .schema))
}

async fn referenced_by(
    State(s): State<AppState>,
    Path((subject, version)): Path<(String, String)>,
) -> Answer {
    Ok(json(
        &s.registry
            .referenced_by(&subject, VersionSpec::parse(&version)?)?,
    ))
}

async fn delete_version(
    State(s): State<AppState>,
    Path((subject, version)): Path<(String, String)>,
    Query(q): Params,
) -> Answer {
    let spec = VersionSpec::parse(&version)?;
    Ok(json(
        &s.registry
            .delete_version(&subject, spec, flag(&q, "permanent"))
            .await?,
    ))
}

async fn global_config(State(s): State<AppState>) -> Answer {
    Ok(json(&s.registry.global_config()?))
}

async fn put_global_config(State(s): State<AppState>, headers: HeaderMap, body: Bytes) -> Answer {
    let request: ConfigRequest = parse_body(&headers, &body)?;
    let compatibility = s.registry.set_config(None, &request.compatibility).await?;
    Ok(json(&ConfigUpdateResponse { compatibility }))
}

async fn delete_global_config(State(s): State<AppState>) -> Answer {
    Ok(json(&s.registry.delete_config(None).await?))
}

async fn subject_config(
    State(s): State<AppState>,
    Path(subject): Path<String>,
    Query(q): Params,
) -> Answer {
    Ok(json(
        &s.registry
            .subject_config(&subject, flag(&q, "defaultToGlobal"))?,
    ))
}

async fn put_subject_config(
    State(s): State<AppState>,
    Path(subject): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Answer {
    let request: ConfigRequest = parse_body(&headers, &body)?;
    let compatibility = s
        .registry
        .set_config(Some(&subject), &request.compatibility)
        .await?;
    Ok(json(&ConfigUpdateResponse { compatibility }))
}

async fn delete_subject_config(State(s): State<AppState>, Path(subject): Path<String>) -> Answer {
    Ok(json(&s.registry.delete_config(Some(&subject)).await?))
}

fn compatibility_answer(messages: Vec<String>, verbose: bool) -> Response {
    json(&CompatibilityResponse {
        is_compatible: messages.is_empty(),
        messages: verbose.then_some(messages),
    })
}

async fn compatibility_with_all(
    State(s): State<AppState>,
    Path(subject): Path<String>,
    Query(q): Params,
    headers: HeaderMap,
    body: Bytes,
) -> Answer {
    let request: SchemaRequest = parse_body(&headers, &body)?;
    let messages = s.registry.check_compatibility(&subject, None, &request)?;
    Ok(compatibility_answer(messages, flag(&q, "verbose")))
}

async fn compatibility_with_version(
    State(s): State<AppState>,
    Path((subject, version)): Path<(String, String)>,
    Query(q): Params,
    headers: HeaderMap,
    body: Bytes,
) -> Answer {
    let spec = VersionSpec::parse(&version)?;
    let request: SchemaRequest = parse_body(&headers, &body)?;
    let messages = s
        .registry
        .check_compatibility(&subject, Some(spec), &request)?;
    Ok(compatibility_answer(messages, flag(&q, "verbose")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compat::CompatibilityLevel;
    use crate::index::Index;
    use crate::log::memory::MemoryLog;
    use axum::body::Body;
    use axum::http::StatusCode;
    use tower::ServiceExt;

    fn app() -> Router {
        let metrics = Metrics::new(&prometheus::Registry::new()).expect("metrics");
        let registry = Arc::new(Registry::new(
            Arc::new(MemoryLog::default()),
            CompatibilityLevel::Backward,
            metrics.clone(),
        ));
        registry.install(Index::default());
        router(
            AppState {
                registry,
                metrics,
                auth: Arc::default(),
            },
            Ops::new(prometheus::Registry::new(), vec![]),
        )
    }

    async fn call(
        app: &Router,
        method: &str,
        uri: &str,
        body: Option<&str>,
    ) -> (StatusCode, String, String) {
        let mut request = Request::builder().method(method).uri(uri);
        if body.is_some() {
            request = request.header(header::CONTENT_TYPE, CONTENT_TYPE);
        }
        let request = request
            .body(Body::from(body.unwrap_or_default().to_owned()))
            .expect("request");
        let response = app.clone().oneshot(request).await.expect("infallible");
        let status = response.status();
        let content_type = response
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .expect("body");
        (
            status,
            content_type,
            String::from_utf8_lossy(&bytes).into_owned(),
        )
    }

    #[tokio::test]
    async fn register_then_read_back_in_every_shape() {
        let app = app();
        let (status, ct, body) = call(
            &app,
            "POST",
            "/subjects/a%2Fb/versions",
            Some(r#"{"schema":"\"string\""}"#),
        )
        .await;
        assert_eq!(
            (status, ct.as_str(), body.as_str()),
            (StatusCode::OK, CONTENT_TYPE, r#"{"id":1}"#)
        );
        let (_, _, body) = call(&app, "GET", "/subjects", None).await;
        assert_eq!(
            body, r#"["a/b"]"#,
            "percent-encoded slashes belong to the subject"
        );
        let (_, _, body) = call(&app, "GET", "/subjects/a%2Fb/versions/latest", None).await;
        assert_eq!(
            body,
            r#"{"subject":"a/b","version":1,"id":1,"schema":"\"string\""}"#
        );
        let (_, _, body) = call(&app, "GET", "/subjects/a%2Fb/versions/1/schema", None).await;
        assert_eq!(body, r#""string""#);
        let (_, _, body) = call(&app, "GET", "/schemas/ids/1?deleted=true", None).await;
        assert_eq!(body, r#"{"schema":"\"string\""}"#);
        let (_, _, body) = call(&app, "GET", "/schemas/ids/1/versions", None).await;
        assert_eq!(body, r#"[{"subject":"a/b","version":1}]"#);
    }

    #[tokio::test]
    async fn errors_are_confluent_json() {
        let app = app();
        let (status, ct, body) = call(&app, "GET", "/subjects/nope/versions", None).await;
        assert_eq!((status, ct.as_str()), (StatusCode::NOT_FOUND, CONTENT_TYPE));
        assert_eq!(
            body,
            r#"{"error_code":40401,"message":"Subject 'nope' not found."}"#
        );
        let (status, _, body) = call(&app, "GET", "/subjects/nope/versions/zero", None).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        assert!(body.contains("42202"), "{body}");
        let (status, _, body) = call(&app, "GET", "/no/such/path", None).await;
        assert_eq!(
            (status, body.as_str()),
            (
                StatusCode::NOT_FOUND,
                r#"{"error_code":404,"message":"HTTP 404 Not Found"}"#
            )
        );
        let (status, _, _) = call(&app, "PATCH", "/subjects", None).await;
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
        let (status, _, body) = call(&app, "POST", "/subjects/s/versions", Some("{")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    }

    #[tokio::test]
    async fn answers_in_the_accepted_media_type() {
        let app = app();
        let request = Request::builder()
            .uri("/subjects")
            .header(header::ACCEPT, "application/json")
            .body(Body::empty())
            .expect("request");
        let response = app.clone().oneshot(request).await.expect("infallible");
        assert_eq!(
            response
                .headers()
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok()),
            Some("application/json")
        );
        let (_, ct, _) = call(&app, "GET", "/subjects", None).await;
        assert_eq!(ct, CONTENT_TYPE);
    }

    #[tokio::test]
    async fn config_and_compatibility_bodies() {
        let app = app();
        let (_, _, body) = call(&app, "GET", "/config", None).await;
        assert_eq!(body, r#"{"compatibilityLevel":"BACKWARD"}"#);
        let (_, _, body) = call(
            &app,
            "PUT",
            "/config/s",
            Some(r#"{"compatibility":"full"}"#),
        )
        .await;
        assert_eq!(body, r#"{"compatibility":"FULL"}"#);
        let (status, _, body) = call(
            &app,
            "PUT",
            "/config",
            Some(r#"{"compatibility":"MOSTLY"}"#),
        )
        .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        assert!(body.contains("42203"), "{body}");
        let (_, _, body) = call(
            &app,
            "POST",
            "/compatibility/subjects/s/versions?verbose=true",
            Some(r#"{"schema":"\"int\""}"#),
        )
        .await;
        assert_eq!(body, r#"{"is_compatible":true,"messages":[]}"#);
        let (_, _, body) = call(&app, "GET", "/schemas/types", None).await;
        assert_eq!(body, r#"["AVRO"]"#);
    }

    #[tokio::test]
    async fn requests_are_counted_by_route_and_status() {
        let metrics = Metrics::new(&prometheus::Registry::new()).expect("metrics");
        let registry = Arc::new(Registry::new(
            Arc::new(MemoryLog::default()),
            CompatibilityLevel::Backward,
            metrics.clone(),
        ));
        let app = router(
            AppState {
                registry,
                metrics: metrics.clone(),
                auth: Arc::default(),
            },
            Ops::new(prometheus::Registry::new(), vec![]),
        );
        let (status, _, _) = call(&app, "GET", "/subjects", None).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "not replayed yet");
        assert_eq!(
            metrics
                .requests
                .with_label_values(&["/subjects", "GET", "503"])
                .get(),
            1
        );
        assert_eq!(metrics.errors.with_label_values(&["not_ready"]).get(), 1);
    }
}
