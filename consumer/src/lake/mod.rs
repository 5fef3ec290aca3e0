//! The lake sink (`sluice-consumer lake`): the same streams as Parquet files in a local directory or a bucket,
//! exactly once, in a consumer group of its own so a slow lake never holds back ClickHouse.
//!
//! Modules in the order a message travels: `segment` (which messages make one set of files) → `files` (Avro
//! values → `columns` → Parquet bytes) → `publish` (manifest, dead letters, files, through `store`, named by
//! `layout`) → `step` (the write step under the shared consume loop: recovery at assignment, publishing in order,
//! manifests deleted after the commit).
//!
//! Exactly once without a database: a segment's bounds are recorded in a manifest before any of its files is
//! put, every file is put whole under a name made of its topic, partition and offsets, and the offsets are
//! committed only after the last put. A crash before the commit leaves the manifest; whoever reads the partition
//! next cuts the same segment again and overwrites its files with the same bytes.

pub mod columns;
pub mod files;
pub mod layout;
pub mod metrics;
pub mod publish;
pub mod segment;
pub mod settings;
pub mod step;
pub mod store;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::future::BoxFuture;
use sluice_runtime::kafka::{TopicSpec, ensure_topics};
use sluice_runtime::ops::{Ops, ReadinessCheck};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use settings::LakeSettings;

use crate::config::{Config, StreamConfig};
use crate::consume::{self, Group, Settings};
use crate::dlq::DlqProducer;
use crate::error::Error;
use crate::metrics::Metrics;
use crate::registry::SchemaRegistry;
use crate::source::kafka::{KafkaGroup, subscribe};
use metrics::LakeMetrics;
use publish::{LakeStream, Publisher};
use segment::{Limits, Segments};
use step::LakeStep;
use store::Lake;

struct Ready(Arc<AtomicBool>);

impl ReadinessCheck for Ready {
    fn name(&self) -> &str {
        "lake"
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

struct StoreReady(Lake);

impl ReadinessCheck for StoreReady {
    fn name(&self) -> &str {
        "storage"
    }
    fn check(&self) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move { self.0.ping().await.map_err(|e| e.to_string()) })
    }
}

/// The streams the lake writes: `lake.topics`, or every stream.
pub fn streams(config: &Config) -> Result<Vec<StreamConfig>, Error> {
    let wanted = &config.lake.topics;
    if let Some(unknown) = wanted
        .iter()
        .find(|t| !config.streams.iter().any(|s| &s.topic == *t))
    {
        return Err(Error::Config(format!(
            "lake.topics names {unknown}, which is not a configured stream"
        )));
    }
    Ok(config
        .streams
        .iter()
        .filter(|s| wanted.is_empty() || wanted.contains(&s.topic))
        .cloned()
        .collect())
}

/// Serves the lake's ops endpoints on `listener` and writes files until `shutdown`.
pub async fn serve(
    config: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    config.validate().map_err(Error::Config)?;
    config.lake.validate().map_err(Error::Config)?;
    let streams = streams(&config)?;
    let lake = Lake::open(&config.lake).map_err(|e| Error::Config(e.to_string()))?;
    let prometheus = prometheus::Registry::new();
    let metrics = Metrics::new(&prometheus).map_err(|e| Error::Config(format!("metrics: {e}")))?;
    let lake_metrics =
        LakeMetrics::new(&prometheus).map_err(|e| Error::Config(format!("metrics: {e}")))?;
    let registry = SchemaRegistry::new(
        &config.registry_url,
        Duration::from_millis(config.registry_timeout_ms),
    )?;
    let ready = Arc::new(AtomicBool::new(false));
    let checks: Vec<Box<dyn ReadinessCheck>> = vec![
        Box::new(Ready(ready.clone())),
        Box::new(StoreReady(lake.clone())),
    ];
    let router = Ops::new(prometheus, checks).router::<()>();
    let ops_shutdown = shutdown.clone();
    let ops = tokio::spawn(async move {
        axum::serve(listener, router)
            .with_graceful_shutdown(ops_shutdown.cancelled_owned())
            .await
    });

    let topics: Vec<String> = streams
        .iter()
        .flat_map(|s| [s.topic.clone(), s.dlq_topic()])
        .collect();
    let partitions: HashMap<&str, i32> = streams
        .iter()
        .map(|s| (s.topic.as_str(), s.partitions))
        .collect();
    let mut backoff = config.retry.backoff();
    loop {
        let specs: Vec<TopicSpec<'_>> = topics
            .iter()
            .map(|name| TopicSpec {
                name,
                partitions: partitions.get(name.as_str()).copied().unwrap_or(4),
                config: vec![],
            })
            .collect();
        match ensure_topics(&config.kafka, &specs).await {
            Ok(()) => break,
            Err(e) => {
                let delay = backoff.next_delay();
                metrics.retrying("topics", backoff.attempts(), delay, &e);
                tokio::select! {
                    () = shutdown.cancelled() => return Ok(()),
                    () = tokio::time::sleep(delay) => {}
                }
            }
        }
    }

    match lake.sweep_staging(Duration::from_secs(3600)).await {
        Ok(0) => {}
        Ok(n) => tracing::info!(removed = n, "removed staged writes an earlier crash left"),
        Err(e) => tracing::warn!(error = %e, "could not sweep the staging directory"),
    }
    let mut member = config.clone();
    member.group_id = config.lake.group_id.clone();
    member.streams = streams.clone();
    let dlq = DlqProducer::new(&config.kafka, &member.group_id, &member.streams)?;
    let (consumer, context) = subscribe(&member, &metrics)?;
    tracing::info!(group = %member.group_id, lake = %lake.location, topics = ?streams.iter().map(|s| &s.topic).collect::<Vec<_>>(), "writing the lake");
    let publisher = Publisher {
        lake,
        streams: streams
            .iter()
            .map(|s| (s.topic.clone(), LakeStream::new(s)))
            .collect(),
        registry,
        dlq,
        metrics: metrics.clone(),
        lake_metrics,
        encoding: files::Encoding {
            format: config.lake.format,
            compression: config.lake.compression,
        },
    };
    let limits = Limits {
        max_rows: config.lake.max_rows,
        max_bytes: config.lake.max_bytes,
        max_age: config.lake.max_age(),
        max_buffer_bytes: config.lake.max_buffer_bytes,
    };
    let step = LakeStep::new(publisher, Segments::new(limits), config.retry.clone());
    let settings = Settings::new(&config, ready, None);
    consume::run(
        step,
        Group::new(KafkaGroup { consumer, context }, metrics),
        settings,
        shutdown.clone(),
    )
    .await;
    shutdown.cancel();
    match ops.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(error = %e, "ops server failed"),
        Err(e) => tracing::warn!(error = %e, "ops server task failed"),
    }
    Ok(())
}
