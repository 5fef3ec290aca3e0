//! The ClickHouse sink: the server's version and what it accepts, table DDL (`ddl`), RowBinary inserts
//! (`insert`) and, on a cluster, its shards and replicas (`cluster`). What a failure means is
//! [`crate::verdict`]'s to decide.

pub mod cluster;
pub mod ddl;
pub mod insert;

use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use sluice_schemas::clickhouse::Capabilities;

use crate::config::ClickHouseSettings;
use crate::error::Error;
use crate::metrics::Metrics;
use cluster::Topology;

/// A ClickHouse HTTP client configured for the local 18.16 server and current ones alike, or for every node of a
/// cluster.
#[derive(Clone)]
pub struct ClickHouseSink {
    /// The one server's client; on a cluster, the first node's (metadata goes to [`ClickHouseSink::node`]).
    client: clickhouse::Client,
    cluster: Option<Arc<Topology>>,
    timeout: Duration,
    metrics: Metrics,
    /// What the server accepts, as last asked ([`ClickHouseSink::detect_server`]); legacy until then.
    caps: Arc<RwLock<Capabilities>>,
}

impl ClickHouseSink {
    /// A sink for `settings`.
    pub fn new(settings: &ClickHouseSettings, metrics: Metrics) -> Self {
        // Validation needs server features 18.16 lacks; compression stays off because 18.16's compressed HTTP
        // framing is not what the crate expects.
        let client = |url: &str| {
            clickhouse::Client::default()
                .with_url(url)
                .with_user(&settings.user)
                .with_password(&settings.password)
                .with_validation(false)
                .with_compression(clickhouse::Compression::None)
        };
        let cluster = settings.cluster.as_ref().map(|c| {
            // `ON CLUSTER` DDL waits this long for every node, then answers with the ones still missing; they run
            // it from the queue when they come back.
            let ddl_timeout = c.ddl_timeout_ms.div_ceil(1000).to_string();
            Arc::new(Topology::new(c, |url| {
                client(url).with_setting("distributed_ddl_task_timeout", ddl_timeout.as_str())
            }))
        });
        let first = settings
            .cluster
            .as_ref()
            .and_then(|c| c.replicas().into_iter().flatten().next());
        Self {
            client: client(first.as_deref().unwrap_or(&settings.url)),
            cluster,
            timeout: Duration::from_millis(settings.timeout_ms),
            metrics,
            caps: Arc::new(RwLock::new(Capabilities::LEGACY)),
        }
    }

    /// Asks the server its version and remembers what it accepts; called at start-up and whenever tables are
    /// checked again after a failure, so a server upgraded behind a reconnect is noticed.
    pub async fn detect_server(&self) -> Result<Capabilities, Error> {
        let version: String = self
            .node()
            .await?
            .query("SELECT version()")
            .fetch_one()
            .await?;
        let caps = Capabilities::of_version_text(&version).ok_or_else(|| {
            Error::Config(format!("ClickHouse answered version() with {version:?}"))
        })?;
        let before = std::mem::replace(
            &mut *self.caps.write().unwrap_or_else(PoisonError::into_inner),
            caps,
        );
        if before != caps {
            tracing::info!(%version, ?caps, "ClickHouse server version detected");
        }
        Ok(caps)
    }

    /// The newest `limit` rows of `table` (by `order`), only `columns`, as JSON objects (for the dashboard's tail).
    pub async fn recent_rows(
        &self,
        table: &str,
        columns: &[String],
        order: &str,
        limit: usize,
    ) -> Result<Vec<serde_json::Value>, Error> {
        use sluice_schemas::clickhouse::quote_ident;
        let cols: Vec<String> = columns.iter().map(|c| quote_ident(c)).collect();
        let sql = format!(
            "SELECT {} FROM {table} ORDER BY {} DESC LIMIT {limit}",
            cols.join(", "),
            quote_ident(order)
        );
        let mut cursor = self.node().await?.query(&sql).fetch_bytes("JSONEachRow")?;
        let mut bytes = Vec::new();
        while let Some(chunk) = cursor.next().await? {
            bytes.extend_from_slice(&chunk);
        }
        Ok(bytes
            .split(|b| *b == b'\n')
            .filter_map(|line| serde_json::from_slice(line).ok())
            .collect())
    }

    /// What the server accepts, as last detected.
    pub fn capabilities(&self) -> Capabilities {
        *self.caps.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// The cluster, when the sink writes to one.
    pub fn cluster(&self) -> Option<&Topology> {
        self.cluster.as_deref()
    }

    /// Where DDL and metadata queries go: the one server, or the first node of the cluster that answers.
    pub async fn node(&self) -> Result<clickhouse::Client, Error> {
        match &self.cluster {
            None => Ok(self.client.clone()),
            Some(c) => Ok(c.live_node().await?.client.clone()),
        }
    }

    /// `Ok` when the server (on a cluster: some node) answers a trivial query.
    pub async fn ping(&self) -> Result<(), clickhouse::error::Error> {
        let client = match self.node().await {
            Ok(c) => c,
            Err(Error::ClickHouse(e)) => return Err(e),
            Err(e) => return Err(clickhouse::error::Error::Custom(e.to_string())),
        };
        let one: u8 = client.query("SELECT 1").fetch_one().await?;
        if one == 1 {
            Ok(())
        } else {
            Err(clickhouse::error::Error::Custom(
                "SELECT 1 returned something else".into(),
            ))
        }
    }
}
