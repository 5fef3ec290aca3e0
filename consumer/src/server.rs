//! Wiring: the ops endpoints, start-up (topics, reader schemas, tables, subscription), then the consume loop with the
//! ClickHouse step.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::future::BoxFuture;
use sluice_runtime::kafka::{TopicSpec, ensure_topics};
use sluice_runtime::ops::{Ops, ReadinessCheck};
use sluice_schemas::catalog;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, StreamConfig};
use crate::consume::{self, Group, Settings};
use crate::dashboard;
use crate::decode::{Reader, Shape};
use crate::dlq::DlqProducer;
use crate::error::Error;
use crate::flush::Stream;
use crate::metrics::Metrics;
use crate::registry::SchemaRegistry;
use crate::sink::clickhouse::ClickHouseSink;
use crate::source::kafka::{KafkaGroup, SourceContext, subscribe};
use crate::write::{ClickHouseStep, Parts};

struct PipelineReady(Arc<AtomicBool>);

impl ReadinessCheck for PipelineReady {
    fn name(&self) -> &str {
        "pipeline"
    }
    fn check(&self) -> BoxFuture<'_, Result<(), String>> {
        let ready = self.0.load(Ordering::SeqCst);
        Box::pin(async move {
            if ready {
                Ok(())
            } else {
                Err("starting".into())
            }
        })
    }
}

struct ClickHouseReady(ClickHouseSink);

impl ReadinessCheck for ClickHouseReady {
    fn name(&self) -> &str {
        "clickhouse"
    }
    fn check(&self) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move { self.0.ping().await.map_err(|e| e.to_string()) })
    }
}

struct RegistryReady(SchemaRegistry);

impl ReadinessCheck for RegistryReady {
    fn name(&self) -> &str {
        "registry"
    }
    fn check(&self) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move { self.0.ping().await.map_err(|e| e.to_string()) })
    }
}

struct KafkaReady(sluice_runtime::kafka::KafkaSettings);

impl ReadinessCheck for KafkaReady {
    fn name(&self) -> &str {
        "kafka"
    }
    fn check(&self) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(sluice_runtime::kafka::ping(&self.0, Duration::from_secs(2)))
    }
}

/// Serves the ops endpoints on `listener` and consumes until `shutdown` is cancelled; then flushes, commits and
/// leaves the group before returning.
pub async fn serve(
    config: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    config.validate().map_err(Error::Config)?;
    let prometheus = prometheus::Registry::new();
    let metrics = Metrics::new(&prometheus).map_err(|e| Error::Config(format!("metrics: {e}")))?;
    let sink = ClickHouseSink::new(&config.clickhouse, metrics.clone());
    let registry = SchemaRegistry::new(
        &config.registry_url,
        Duration::from_millis(config.registry_timeout_ms),
    )?;
    let ready = Arc::new(AtomicBool::new(false));
    let checks: Vec<Box<dyn ReadinessCheck>> = vec![
        Box::new(PipelineReady(ready.clone())),
        Box::new(ClickHouseReady(sink.clone())),
        Box::new(KafkaReady(config.kafka.clone())),
        Box::new(RegistryReady(registry.clone())),
    ];
    let context = Arc::new(std::sync::OnceLock::new());
    let mut router = Ops::new(prometheus.clone(), checks).router::<()>();
    let sources = dashboard::Sources {
        config: config.clone(),
        registry: prometheus,
        metrics: metrics.clone(),
        sink: sink.clone(),
        context: context.clone(),
    };
    if let Some(d) = dashboard::router(sources, shutdown.clone()) {
        tracing::info!(url = %format!("http://{}/dashboard", listener.local_addr()?), "dashboard");
        router = router.merge(d);
    }
    let (operator_tx, operator_rx) = tokio::sync::mpsc::channel(8);
    if let Some(op) =
        crate::operator::router(&config.listen, config.operator_key.clone(), operator_tx)
    {
        router = router.merge(op);
    }
    let ops_shutdown = shutdown.clone();
    let ops = tokio::spawn(async move {
        axum::serve(listener, router)
            .with_graceful_shutdown(ops_shutdown.cancelled_owned())
            .await
    });

    let wiring = Wiring {
        ready,
        dashboard_context: &context,
        operator: operator_rx,
    };
    let result = run(&config, sink, registry, metrics, wiring, &shutdown).await;
    if let Err(e) = &result
        && !matches!(e, Error::Shutdown)
    {
        tracing::error!(error = %e, "consumer stopped");
    }
    shutdown.cancel();
    match ops.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(error = %e, "ops server failed"),
        Err(e) => tracing::warn!(error = %e, "ops server task failed"),
    }
    match result {
        Err(Error::Shutdown) => Ok(()),
        other => other,
    }
}

/// What the pipeline shares with the ops server: readiness, its rebalance context for the dashboard, and the
/// operator's requests.
struct Wiring<'a> {
    ready: Arc<AtomicBool>,
    dashboard_context: &'a std::sync::OnceLock<SourceContext>,
    operator: tokio::sync::mpsc::Receiver<crate::operator::Request>,
}

async fn run(
    config: &Config,
    sink: ClickHouseSink,
    registry: SchemaRegistry,
    metrics: Metrics,
    wiring: Wiring<'_>,
    shutdown: &CancellationToken,
) -> Result<(), Error> {
    let Wiring {
        ready,
        dashboard_context,
        operator,
    } = wiring;
    let retry = |what: &'static str| Retrier {
        what,
        config,
        metrics: &metrics,
        shutdown,
    };

    retry("topics")
        .run(|| async {
            let mut specs = Vec::new();
            let dlq_names: Vec<String> =
                config.streams.iter().map(StreamConfig::dlq_topic).collect();
            for (s, dlq) in config.streams.iter().zip(&dlq_names) {
                specs.push(TopicSpec {
                    name: &s.topic,
                    partitions: s.partitions,
                    config: vec![],
                });
                specs.push(TopicSpec {
                    name: dlq,
                    partitions: s.partitions,
                    config: vec![],
                });
            }
            ensure_topics(&config.kafka, &specs)
                .await
                .map_err(Error::from)
        })
        .await?;

    // New columns take the best types the server accepts.
    let caps = retry("clickhouse version")
        .run(|| sink.detect_server())
        .await?;
    let mut streams = HashMap::new();
    for s in &config.streams {
        let shape = Shape {
            caps,
            source_columns: s.source_columns,
        };
        let reader = retry("reader schema")
            .run(|| initial_reader(&registry, s, shape))
            .await?;
        let mut stream = Stream::new(s, &config.clickhouse.database, reader);
        let widened = retry("table")
            .run(|| sink.ensure_table(stream.plan(), stream.spec()))
            .await?;
        for column in &widened.added {
            metrics.schema_changed("column_added", &format!("{}.{column}", stream.table()));
        }
        stream.adopt_plan(widened.plan);
        stream.table_ready();
        streams.insert(s.topic.clone(), stream);
    }
    let dlq = DlqProducer::new(&config.kafka, &config.group_id, &config.streams)?;
    let (consumer, context) = subscribe(config, &metrics)?;
    let _ = dashboard_context.set(context.clone());
    tracing::info!(group = %config.group_id, topics = ?config.streams.iter().map(|s| &s.topic).collect::<Vec<_>>(), "consuming");
    let dead_letter_sink = sink.clone();
    let step = ClickHouseStep::new(
        Parts {
            streams,
            registry,
            sink,
            dlq,
            metrics: metrics.clone(),
        },
        config.clone(),
    );
    let settings = Settings::new(config, ready, Some(operator));
    // Beside it, in a group of its own: the DLQ topics copied into the dead-letter table.
    let copier_stop = shutdown.child_token();
    let copier = tokio::spawn(crate::dead_letters::run(
        config.clone(),
        dead_letter_sink,
        metrics.clone(),
        copier_stop.clone(),
    ));
    consume::run(
        step,
        Group::new(KafkaGroup { consumer, context }, metrics),
        settings,
        shutdown.clone(),
    )
    .await;
    copier_stop.cancel();
    match copier.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(error = %e, "the dead-letter table's copier failed"),
        Err(e) => tracing::warn!(error = %e, "the dead-letter table's copier task failed"),
    }
    Ok(())
}

/// The subject's latest version, or the bundled schema while the subject is not registered.
async fn initial_reader(
    registry: &SchemaRegistry,
    s: &StreamConfig,
    shape: Shape,
) -> Result<Reader, Error> {
    let subject = s.subject();
    if let Some(latest) = registry.latest(&subject).await? {
        tracing::info!(%subject, id = latest.id, version = latest.version, "reader schema from the registry");
        return Reader::for_table(Some(latest.id), Some(latest.version), latest.schema, shape)
            .map_err(Error::from);
    }
    let name = s.bundled_schema.as_deref().ok_or_else(|| {
        Error::Registry(crate::registry::RegistryError::Unavailable(format!(
            "subject {subject} is not registered and stream {} names no bundled_schema",
            s.topic
        )))
    })?;
    let bundled = catalog::bundled(name)
        .ok_or_else(|| Error::Config(format!("no bundled schema named {name}")))?;
    let schema = apache_avro::Schema::parse_str(bundled.text)
        .map_err(|e| Error::Config(format!("bundled schema {name}: {e}")))?;
    tracing::info!(%subject, bundled = name, "subject not registered yet; reading with the bundled schema");
    Reader::for_table(None, None, Arc::new(schema), shape).map_err(Error::from)
}

/// Retries a start-up step with backoff until it succeeds or shutdown is requested.
struct Retrier<'a> {
    what: &'static str,
    config: &'a Config,
    metrics: &'a Metrics,
    shutdown: &'a CancellationToken,
}

impl Retrier<'_> {
    async fn run<T, F, Fut>(self, mut step: F) -> Result<T, Error>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, Error>>,
    {
        let mut backoff = self.config.retry.backoff();
        loop {
            let e = match step().await {
                Ok(v) => return Ok(v),
                Err(Error::Config(m)) => return Err(Error::Config(m)),
                Err(e) => e,
            };
            let delay = backoff.next_delay();
            self.metrics
                .retrying(self.what, backoff.attempts(), delay, &e);
            tokio::select! {
                () = self.shutdown.cancelled() => return Err(Error::Shutdown),
                () = tokio::time::sleep(delay) => {}
            }
        }
    }
}
