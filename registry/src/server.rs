//! Wiring: the Kafka log, the replay at start-up, the readiness checks and the HTTP server.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use sluice_runtime::kafka::{KafkaSettings, ping};
use sluice_runtime::ops::{Ops, ReadinessCheck};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::RegistryConfig;
use crate::error::Error;
use crate::log::kafka::{KafkaLog, replay};
use crate::metrics::Metrics;
use crate::routes::{AppState, router};
use crate::service::Registry;

/// Pause between attempts to replay the log while the broker is unreachable.
const REPLAY_RETRY: Duration = Duration::from_secs(1);

/// Serves the registry on `listener` until `shutdown` is cancelled.
///
/// The HTTP server answers at once (`/healthz`); the API answers 503 and `/readyz` fails until the `_schemas`
/// topic has been replayed, retried every second while the broker is unreachable.
pub async fn serve(
    config: RegistryConfig,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    let prometheus = prometheus::Registry::new();
    let metrics = Metrics::new(&prometheus).map_err(|e| Error::Store(format!("metrics: {e}")))?;
    let log = Arc::new(
        KafkaLog::new(&config.kafka, &config.topic, config.write_timeout())
            .map_err(Error::Store)?,
    );
    let fenced = log.fenced();
    let registry = Arc::new(Registry::new(
        log.clone(),
        config.default_compatibility,
        metrics.clone(),
    ));

    let last_error = Arc::new(Mutex::new(None::<String>));
    let loader = {
        let last_error = last_error.clone();
        let (registry, metrics, settings, topic) = (
            registry.clone(),
            metrics.clone(),
            config.kafka.clone(),
            config.topic.clone(),
        );
        let stop = shutdown.clone();
        tokio::spawn(async move {
            loop {
                let attempt = tokio::select! {
                    () = stop.cancelled() => return,
                    r = replay(&settings, &topic, &log, &metrics) => r,
                };
                match attempt {
                    Ok(index) => {
                        registry.install(index);
                        return;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "replaying the schema log failed; retrying");
                        if let Ok(mut last) = last_error.lock() {
                            *last = Some(e);
                        }
                    }
                }
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(REPLAY_RETRY) => {}
                }
            }
        })
    };

    let checks: Vec<Box<dyn ReadinessCheck>> = vec![
        Box::new(LogReplayed {
            registry: registry.clone(),
            last_error,
        }),
        Box::new(Broker(config.kafka.clone())),
        Box::new(SoleWriter(fenced)),
    ];
    if !config.auth.enabled() && !config.listen.ip().is_loopback() {
        tracing::warn!(listen = %config.listen, "no [auth.users]: anyone who can reach this address may register, delete and change compatibility");
    }
    let state = AppState {
        registry,
        metrics,
        auth: Arc::new(config.auth.clone()),
    };
    let app = router(state, Ops::new(prometheus, checks));
    let addr = listener.local_addr()?;
    tracing::info!(%addr, topic = %config.topic, "schema registry listening");
    let result = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.clone().cancelled_owned())
        .await;
    loader.abort();
    tracing::info!("schema registry stopped");
    Ok(result?)
}

/// Ready once the log has been read to its end; until then says why the last attempt failed.
struct LogReplayed {
    registry: Arc<Registry>,
    last_error: Arc<Mutex<Option<String>>>,
}

impl ReadinessCheck for LogReplayed {
    fn name(&self) -> &str {
        "schema_log"
    }

    fn check(&self) -> BoxFuture<'_, Result<(), String>> {
        let result = if self.registry.is_loaded() {
            Ok(())
        } else {
            let last = self.last_error.lock().ok().and_then(|l| l.clone());
            Err(last.map_or_else(
                || "still replaying the log".to_owned(),
                |e| format!("replay failed, retrying: {e}"),
            ))
        };
        futures::future::ready(result).boxed()
    }
}

/// Not ready once another instance fenced this one: its index no longer follows the topic.
struct SoleWriter(Arc<std::sync::atomic::AtomicBool>);

impl ReadinessCheck for SoleWriter {
    fn name(&self) -> &str {
        "sole_writer"
    }

    fn check(&self) -> BoxFuture<'_, Result<(), String>> {
        let fenced = self.0.load(std::sync::atomic::Ordering::SeqCst);
        futures::future::ready(if fenced {
            Err("fenced: another registry instance writes this topic".to_owned())
        } else {
            Ok(())
        })
        .boxed()
    }
}

/// Ready while a broker answers.
struct Broker(KafkaSettings);

impl ReadinessCheck for Broker {
    fn name(&self) -> &str {
        "kafka"
    }

    fn check(&self) -> BoxFuture<'_, Result<(), String>> {
        ping(&self.0, Duration::from_secs(2)).boxed()
    }
}
