//! Ingestion keys: presented as `Authorization: Bearer <key>` or `X-Api-Key: <key>`, looked up by SHA-256 so the
//! plaintext never sits in config or memory longer than one request.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, PoisonError, RwLock};

use axum::http::{HeaderMap, header};
use sha2::{Digest, Sha256};

use crate::config::{KeyConfig, Limits};
use crate::error::ApiError;
use crate::quota::KeyQuota;

/// Header carrying a key when `Authorization` is not used.
pub const API_KEY_HEADER: &str = "x-api-key";

/// How a key is stored in config: the lowercase hex SHA-256 of its plaintext.
pub fn hash_key(plaintext: &str) -> String {
    hex::encode(Sha256::digest(plaintext.as_bytes()))
}

/// A configured key and its quotas.
#[derive(Debug)]
pub struct Key {
    /// What it may do.
    pub config: KeyConfig,
    /// How much of the producer it may use.
    pub quota: Arc<KeyQuota>,
}

impl std::ops::Deref for Key {
    type Target = KeyConfig;
    fn deref(&self) -> &KeyConfig {
        &self.config
    }
}

/// The configured keys, by hex SHA-256.
#[derive(Debug, Default)]
pub struct Keys {
    by_hash: HashMap<String, Key>,
}

impl Keys {
    /// Keys from config (already checked to be lowercase hex), each with the quotas it and `limits` set.
    pub fn new(keys: &BTreeMap<String, KeyConfig>, limits: &Limits) -> Self {
        Self {
            by_hash: keys
                .iter()
                .map(|(h, k)| {
                    let quota = Arc::new(KeyQuota::new(k, limits));
                    (
                        h.clone(),
                        Key {
                            config: k.clone(),
                            quota,
                        },
                    )
                })
                .collect(),
        }
    }

    /// The key a request carries, or 401.
    pub fn authenticate(&self, headers: &HeaderMap) -> Result<&Key, ApiError> {
        let presented = presented_key(headers).ok_or(ApiError::MissingKey)?;
        self.lookup(presented)
    }

    /// The write key of a Segment API request: the one in its headers ([`segment_header_key`]), else `writeKey`
    /// from the body; or 401.
    pub fn authenticate_segment(
        &self,
        headers: &HeaderMap,
        body_key: Option<&str>,
    ) -> Result<&Key, ApiError> {
        let header = segment_header_key(headers);
        let presented = header
            .as_deref()
            .or(body_key.map(str::trim).filter(|k| !k.is_empty()))
            .ok_or(ApiError::MissingKey)?;
        self.lookup(presented)
    }

    /// The configuration of the key `presented` (plaintext), or 401.
    pub fn lookup(&self, presented: &str) -> Result<&Key, ApiError> {
        self.by_hash
            .get(&hash_key(presented))
            .ok_or(ApiError::BadKey)
    }
}

/// The keys in force, replaced whole when the config is read again ([`crate::reload`]): a request sees one set.
#[derive(Debug, Default)]
pub struct KeyRing(RwLock<Arc<Keys>>);

impl KeyRing {
    /// `keys` in force.
    pub fn new(keys: Keys) -> Self {
        Self(RwLock::new(Arc::new(keys)))
    }

    /// The keys in force now.
    pub fn current(&self) -> Arc<Keys> {
        self.0
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Puts `keys` in force for every request that starts from now on.
    pub fn replace(&self, keys: Keys) {
        *self.0.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(keys);
    }
}

/// The key a Segment API request carries in its headers: HTTP Basic's user name (Segment's SDKs send
/// `writeKey:`), else a Bearer or X-Api-Key header. Such a request is authenticated before its body is read.
pub fn segment_header_key(headers: &HeaderMap) -> Option<String> {
    basic_user(headers).or_else(|| presented_key(headers).map(str::to_owned))
}

/// The user name of `Authorization: Basic base64(user:password)`, when present and non-empty.
fn basic_user(headers: &HeaderMap) -> Option<String> {
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
    let user = text
        .split_once(':')
        .map_or(text.as_str(), |(u, _)| u)
        .trim();
    (!user.is_empty()).then(|| user.to_owned())
}

fn presented_key(headers: &HeaderMap) -> Option<&str> {
    if let Some(v) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        let mut parts = v.trim().splitn(2, ' ');
        if let (Some(scheme), Some(token)) = (parts.next(), parts.next())
            && scheme.eq_ignore_ascii_case("bearer")
            && !token.trim().is_empty()
        {
            return Some(token.trim());
        }
    }
    headers
        .get(API_KEY_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|k| !k.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn keys() -> Keys {
        let hash = hex::encode(Sha256::digest(b"dev-key"));
        Keys::new(
            &BTreeMap::from([(
                hash,
                KeyConfig {
                    tenant: "demo".into(),
                    streams: vec!["events".into()],
                    ..Default::default()
                },
            )]),
            &crate::config::Limits::default(),
        )
    }

    fn headers(name: &'static str, value: &'static str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(name, HeaderValue::from_static(value));
        h
    }

    #[test]
    fn bearer_and_api_key_both_work() {
        let k = keys();
        assert_eq!(
            k.authenticate(&headers("authorization", "Bearer dev-key"))
                .expect("ok")
                .tenant,
            "demo"
        );
        assert_eq!(
            k.authenticate(&headers("authorization", "bearer  dev-key "))
                .expect("ok")
                .tenant,
            "demo"
        );
        assert_eq!(
            k.authenticate(&headers("x-api-key", "dev-key"))
                .expect("ok")
                .tenant,
            "demo"
        );
    }

    #[test]
    fn segment_write_keys_come_from_basic_auth_or_the_body() {
        let k = keys();
        // base64("dev-key:")
        let basic = headers("authorization", "Basic ZGV2LWtleTo=");
        assert_eq!(
            k.authenticate_segment(&basic, None).expect("ok").tenant,
            "demo"
        );
        assert_eq!(
            k.authenticate_segment(&HeaderMap::new(), Some("dev-key"))
                .expect("ok")
                .tenant,
            "demo"
        );
        assert!(matches!(
            k.authenticate_segment(&HeaderMap::new(), None),
            Err(ApiError::MissingKey)
        ));
        // base64("nope:")
        let wrong = headers("authorization", "Basic bm9wZTo=");
        assert!(matches!(
            k.authenticate_segment(&wrong, Some("dev-key")),
            Err(ApiError::BadKey)
        ));
    }

    #[test]
    fn missing_and_wrong_keys_are_401() {
        let k = keys();
        assert!(matches!(
            k.authenticate(&HeaderMap::new()),
            Err(ApiError::MissingKey)
        ));
        assert!(matches!(
            k.authenticate(&headers("authorization", "Basic abc")),
            Err(ApiError::MissingKey)
        ));
        assert!(matches!(
            k.authenticate(&headers("authorization", "Bearer nope")),
            Err(ApiError::BadKey)
        ));
        assert!(matches!(
            k.authenticate(&headers("x-api-key", "DEV-KEY")),
            Err(ApiError::BadKey)
        ));
    }
}
