//! Wiring: registers schemas, creates the Kafka producer and topics, and serves HTTP until shutdown, then lets
//! in-flight requests finish and flushes the producer.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use sluice_runtime::backoff::Backoff;
use sluice_runtime::kafka::{KafkaSettings, TopicSpec, ensure_topics};
use sluice_runtime::ops::{Ops, ReadinessCheck};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::auth::Keys;
use crate::committed::Waits;
use crate::config::{Config, ConfigProblem};
use crate::handlers::AppState;
use crate::metrics::Metrics;
use crate::registry::{self, RegisterError};
use crate::routes;
use crate::sink::EventSink;
use crate::sink::kafka::KafkaSink;
use crate::stream::Stream;

/// How long shutdown waits for librdkafka to deliver what is still queued.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the producer could not start or stopped abnormally.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// A setting cannot work.
    #[error(transparent)]
    Config(#[from] ConfigProblem),
    /// A schema could not be registered (unreachable registry, or incompatible with the subject's history).
    #[error(transparent)]
    Register(#[from] RegisterError),
    /// The registry URL is unusable.
    #[error("schema registry client: {0}")]
    RegistryClient(String),
    /// The Kafka producer could not be created.
    #[error("kafka producer: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    /// Metrics could not be registered.
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    /// The HTTP server failed.
    #[error("http server: {0}")]
    Io(#[from] std::io::Error),
}

/// Runs the producer on `listener` until `shutdown` is cancelled.
pub async fn serve(
    config: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), ServeError> {
    serve_reloading_keys(config, None, listener, shutdown).await
}

/// [`serve`], with the ingestion keys read again from `keys_from` (the config file `config` came from) on SIGHUP
/// and whenever it changes ([`crate::reload`]).
pub async fn serve_reloading_keys(
    config: Config,
    keys_from: Option<std::path::PathBuf>,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), ServeError> {
    config.check()?;
    let metrics = Metrics::new()?;
    let sr = registry::settings(&config.registry_url)
        .map_err(|e| ServeError::RegistryClient(e.to_string()))?;
    let within = Duration::from_millis(config.limits.startup_timeout_ms);
    let mut streams = HashMap::new();
    for (name, cfg) in &config.streams {
        let text = sluice_schemas::catalog::bundled(&cfg.schema)
            .map(|s| s.text)
            .unwrap_or_default();
        let id =
            registry::register(&sr, &config.registry_url, &cfg.subject(), text, within).await?;
        let stream = Stream::new(name, cfg, id)?;
        tracing::info!(stream = %name, topic = %stream.topic, subject = %stream.subject, schema_id = id, "stream ready");
        streams.insert(name.clone(), Arc::new(stream));
    }
    let probe_topic = config.streams.values().next().map(|s| s.topic.clone());
    let sink: Arc<dyn EventSink> =
        Arc::new(KafkaSink::new(&config.kafka, &config.produce, probe_topic)?);

    let topics_ready = Arc::new(AtomicBool::new(false));
    let topics: Vec<(String, i32)> = config
        .streams
        .values()
        .map(|s| (s.topic.clone(), s.partitions))
        .collect();
    let topic_task = tokio::spawn(create_topics(
        config.kafka.clone(),
        topics,
        topics_ready.clone(),
        shutdown.clone(),
    ));

    let checks: Vec<Box<dyn ReadinessCheck>> = vec![
        Box::new(BrokerCheck { sink: sink.clone() }),
        Box::new(TopicsCheck {
            ready: topics_ready,
        }),
    ];
    // Up at start-up (every schema just registered); watched as a metric from here on.
    metrics.registry_up.set(1);
    let registry_task = tokio::spawn(registry::watch(
        sr,
        metrics.registry_up.clone(),
        shutdown.clone(),
    ));
    let ops = Ops::new(metrics.registry.clone(), checks);
    let mut state = AppState::new(
        streams,
        Keys::new(&config.keys, &config.limits),
        sink.clone(),
        config.limits.clone(),
        metrics,
    );
    state.waits = Waits::new(&config.kafka, &config.wait)?;
    let watch_tasks: Vec<_> = [&state.waits.clickhouse, &state.waits.lake]
        .into_iter()
        .flatten()
        .map(|w| tokio::spawn(w.clone().run()))
        .collect();
    let state = Arc::new(state);
    let reload_task = keys_from.map(|path| {
        tokio::spawn(crate::reload::watch_keys(
            path,
            state.clone(),
            shutdown.clone(),
        ))
    });
    let app = routes::router(state, ops);

    tracing::info!(addr = %listener.local_addr()?, "producer listening");
    let result = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.clone().cancelled_owned())
        .await;
    topic_task.abort();
    registry_task.abort();
    for task in watch_tasks {
        task.abort();
    }
    if let Some(task) = reload_task {
        task.abort();
    }
    // Handlers already waited for their acknowledgements; this catches anything a dropped request left queued.
    if let Err(e) = sink.flush(FLUSH_TIMEOUT).await {
        tracing::warn!(error = %e, "producer flush at shutdown did not complete");
    }
    tracing::info!("producer stopped");
    result.map_err(ServeError::Io)
}

/// Creates the streams' topics, retrying until the broker answers, so a producer started before its broker comes
/// up by itself (and reports not-ready meanwhile).
async fn create_topics(
    kafka: KafkaSettings,
    topics: Vec<(String, i32)>,
    ready: Arc<AtomicBool>,
    stop: CancellationToken,
) {
    let specs: Vec<TopicSpec<'_>> = topics
        .iter()
        .map(|(name, partitions)| TopicSpec {
            name,
            partitions: *partitions,
            config: vec![],
        })
        .collect();
    let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(10));
    loop {
        let attempt = tokio::time::timeout(Duration::from_secs(15), ensure_topics(&kafka, &specs));
        tokio::select! {
            () = stop.cancelled() => return,
            result = attempt => match result {
                Ok(Ok(())) => {
                    ready.store(true, Ordering::Release);
                    tracing::info!(count = specs.len(), "topics ready");
                    return;
                }
                Ok(Err(e)) => tracing::warn!(error = %e, "creating topics failed; retrying"),
                Err(_) => tracing::warn!("creating topics timed out; retrying"),
            }
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(backoff.next_delay()) => {}
        }
    }
}

struct BrokerCheck {
    sink: Arc<dyn EventSink>,
}

impl ReadinessCheck for BrokerCheck {
    fn name(&self) -> &str {
        "kafka"
    }
    fn check(&self) -> BoxFuture<'_, Result<(), String>> {
        self.sink.check()
    }
}

struct TopicsCheck {
    ready: Arc<AtomicBool>,
}

impl ReadinessCheck for TopicsCheck {
    fn name(&self) -> &str {
        "topics"
    }
    fn check(&self) -> BoxFuture<'_, Result<(), String>> {
        let ready = self.ready.load(Ordering::Acquire);
        async move {
            if ready {
                Ok(())
            } else {
                Err("not created yet".into())
            }
        }
        .boxed()
    }
}
