//! The schema registry at start-up and in `/readyz`: each stream's schema is registered under its subject (a no-op
//! returning the existing id when it is already there); an incompatible schema stops the producer from starting.

use std::time::Duration;

use schema_registry_converter::async_impl::schema_registry::{
    SrSettings, get_all_subjects, post_schema,
};
use schema_registry_converter::error::SRCError;
use schema_registry_converter::schema_registry_common::{SchemaType, SuppliedSchema};
use sluice_runtime::backoff::Backoff;
use tokio_util::sync::CancellationToken;

/// Why a schema could not be registered.
#[derive(Debug, thiserror::Error)]
#[error("registering schema for subject `{subject}` at {url}: {detail}")]
pub struct RegisterError {
    /// The subject.
    pub subject: String,
    /// The registry.
    pub url: String,
    /// The registry's answer (for example 409: incompatible with the latest version).
    pub detail: String,
}

/// Registry client settings with a short per-call timeout.
pub fn settings(url: &str) -> Result<SrSettings, SRCError> {
    SrSettings::new_builder(url.trim_end_matches('/').to_owned())
        .set_timeout(Duration::from_secs(5))
        .build()
}

/// `url` with the password of its `user:password@` (the registry credential) masked, for messages and logs.
fn without_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split_once(':').map_or(userinfo, |(u, _)| u);
            format!("{scheme}://{user}:***@{host}{}", &rest[authority_end..])
        }
        None => url.to_owned(),
    }
}

fn describe(e: &SRCError) -> String {
    match &e.cause {
        Some(cause) => format!("{}: {cause}", e.error),
        None => e.error.clone(),
    }
}

/// Registers `schema` under `subject` and returns its id, retrying while the registry is unreachable until `within`.
pub async fn register(
    sr: &SrSettings,
    url: &str,
    subject: &str,
    schema: &str,
    within: Duration,
) -> Result<u32, RegisterError> {
    let deadline = tokio::time::Instant::now() + within;
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
    loop {
        let supplied = SuppliedSchema::new(None, SchemaType::Avro, schema.to_owned());
        let e = match post_schema(sr, subject.to_owned(), supplied).await {
            Ok(registered) => return Ok(registered.id),
            Err(e) => e,
        };
        // Retry only if the pause ends before the deadline: sleeping past it would just delay the same error.
        let pause = e
            .retriable
            .then(|| backoff.next_delay())
            .filter(|pause| tokio::time::Instant::now() + *pause < deadline);
        let Some(pause) = pause else {
            return Err(RegisterError {
                subject: subject.to_owned(),
                url: without_password(url),
                detail: describe(&e),
            });
        };
        tracing::warn!(subject, error = %describe(&e), attempt = backoff.attempts(), "schema registry not reachable yet; retrying");
        tokio::time::sleep(pause).await;
    }
}

/// How often [`watch`] asks the registry whether it answers.
pub const WATCH_EVERY: Duration = Duration::from_secs(5);

/// Keeps `up` at 1 while the registry answers `GET /subjects` (within 2 s) and 0 while it does not, until
/// `shutdown`. A metric, not a readiness check: ingest never calls the registry after start-up, so a registry
/// rollout must not take every producer out of its Service.
pub async fn watch(sr: SrSettings, up: prometheus::IntGauge, shutdown: CancellationToken) {
    let mut ticks = tokio::time::interval(WATCH_EVERY);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = ticks.tick() => {}
        }
        let answer = match tokio::time::timeout(Duration::from_secs(2), get_all_subjects(&sr)).await
        {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(describe(&e)),
            Err(_) => Err("no answer within 2s".to_owned()),
        };
        let was_up = up.get() == 1;
        match answer {
            Ok(()) => {
                if !was_up {
                    tracing::info!("schema registry answers");
                }
                up.set(1);
            }
            Err(e) => {
                if was_up {
                    tracing::warn!(error = %e, "schema registry does not answer; ingest goes on without it");
                }
                up.set(0);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::without_password;

    #[test]
    fn a_registry_password_never_reaches_a_message() {
        assert_eq!(
            without_password("http://writer:s3cret@sr:8081/apis/ccompat/v7"),
            "http://writer:***@sr:8081/apis/ccompat/v7"
        );
        assert_eq!(without_password("http://sr:8081"), "http://sr:8081");
    }
}
