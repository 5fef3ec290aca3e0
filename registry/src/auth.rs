//! Who may do what: HTTP Basic credentials, checked before a request reaches its handler, the way Confluent's
//! clients send them (`basic.auth.user.info`, or `user:password@` in the URL).
//!
//! With no users configured the registry is open, as before (the local stack on loopback). With users, every
//! write (register, delete, config, mode) needs a `write` or `admin` user, a permanent delete needs `admin`, and
//! reads need any user when `require_for_reads` is set. The ops endpoints stay open for probes.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::error::Error;

/// What a user may do; each role includes the ones before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Read schemas, subjects and config.
    Read,
    /// Register, soft-delete, change compatibility.
    Write,
    /// Also delete permanently.
    Admin,
}

/// A user of `[auth.users.<name>]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserConfig {
    /// Lowercase hex SHA-256 of the password (`printf '%s' "$PASSWORD" | sha256sum`), so config holds no secret.
    pub password_sha256: String,
    /// What the user may do.
    pub role: Role,
}

/// `[auth]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// Users by name; none: the registry is open.
    #[serde(default)]
    pub users: BTreeMap<String, UserConfig>,
    /// Reads need a user too (default false: reads are open).
    #[serde(default)]
    pub require_for_reads: bool,
}

impl AuthConfig {
    /// Whether any credential is checked.
    pub fn enabled(&self) -> bool {
        !self.users.is_empty()
    }

    /// The role `headers` authenticate as: `Ok(None)` without credentials, 401 for wrong ones.
    fn authenticate(&self, headers: &HeaderMap) -> Result<Option<Role>, Error> {
        let Some((user, password)) = basic(headers) else {
            return Ok(None);
        };
        let digest = hex::encode(Sha256::digest(password.as_bytes()));
        match self.users.get(&user) {
            Some(u) if u.password_sha256.eq_ignore_ascii_case(&digest) => Ok(Some(u.role)),
            _ => Err(Error::Unauthorized),
        }
    }
}

/// The role a request needs; `None`: open to anyone.
fn needed(
    method: &Method,
    path: &str,
    query: Option<&str>,
    require_for_reads: bool,
) -> Option<Role> {
    if matches!(path, "/healthz" | "/readyz" | "/metrics") {
        return None;
    }
    // Looking a schema up and testing compatibility are POSTs that change nothing.
    let read = method == Method::GET
        || method == Method::HEAD
        || (method == Method::POST
            && (path.starts_with("/compatibility/")
                || (path.starts_with("/subjects/") && path.matches('/').count() == 2)));
    if read {
        return require_for_reads.then_some(Role::Read);
    }
    let permanent = method == Method::DELETE
        && query.is_some_and(|q| {
            q.split('&')
                .any(|kv| kv.eq_ignore_ascii_case("permanent=true"))
        });
    Some(if permanent { Role::Admin } else { Role::Write })
}

/// Middleware: 401 (with a Basic challenge) without valid credentials where some are needed, 403 when the user's
/// role is short of the request's.
pub async fn authorize(
    State(auth): State<Arc<AuthConfig>>,
    request: Request,
    next: Next,
) -> Response {
    if !auth.enabled() {
        return next.run(request).await;
    }
    let uri = request.uri();
    let Some(needs) = needed(
        request.method(),
        uri.path(),
        uri.query(),
        auth.require_for_reads,
    ) else {
        return next.run(request).await;
    };
    match auth.authenticate(request.headers()) {
        Ok(Some(role)) if role >= needs => next.run(request).await,
        Ok(Some(_)) => Error::Forbidden.into_response(),
        Ok(None) | Err(_) => Error::Unauthorized.into_response(),
    }
}

/// User name and password of `Authorization: Basic …`.
fn basic(headers: &HeaderMap) -> Option<(String, String)> {
    use base64::Engine as _;
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, encoded) = v.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_owned(), password.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_need_write_permanent_deletes_need_admin_reads_are_open_unless_required() {
        let n = |m: Method, p: &str, q: Option<&str>| needed(&m, p, q, false);
        assert_eq!(n(Method::GET, "/subjects", None), None);
        assert_eq!(n(Method::POST, "/subjects/s", None), None, "lookup");
        assert_eq!(
            n(
                Method::POST,
                "/compatibility/subjects/s/versions/latest",
                None
            ),
            None
        );
        assert_eq!(
            n(Method::POST, "/subjects/s/versions", None),
            Some(Role::Write)
        );
        assert_eq!(n(Method::PUT, "/config", None), Some(Role::Write));
        assert_eq!(n(Method::DELETE, "/subjects/s", None), Some(Role::Write));
        assert_eq!(
            n(Method::DELETE, "/subjects/s", Some("permanent=true")),
            Some(Role::Admin)
        );
        assert_eq!(n(Method::GET, "/readyz", None), None);
        assert_eq!(
            needed(&Method::GET, "/subjects", None, true),
            Some(Role::Read)
        );
        assert_eq!(needed(&Method::GET, "/metrics", None, true), None);
    }
}
