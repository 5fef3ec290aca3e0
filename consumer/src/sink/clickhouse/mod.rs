//! The ClickHouse sink: table DDL (`ddl`) and RowBinary inserts (`insert`). What a failure means is
//! [`crate::verdict`]'s to decide.

pub mod ddl;
pub mod insert;

use std::time::Duration;

use crate::config::ClickHouseSettings;
use crate::metrics::Metrics;

/// A ClickHouse HTTP client configured for the local 18.16 server and current ones alike.
#[derive(Clone)]
pub struct ClickHouseSink {
    client: clickhouse::Client,
    timeout: Duration,
    metrics: Metrics,
}

impl ClickHouseSink {
    /// A sink for `settings`.
    pub fn new(settings: &ClickHouseSettings, metrics: Metrics) -> Self {
        // Validation needs server features 18.16 lacks; compression stays off because 18.16's compressed HTTP
        // framing is not what the crate expects.
        let client = clickhouse::Client::default()
            .with_url(&settings.url)
            .with_user(&settings.user)
            .with_password(&settings.password)
            .with_validation(false)
            .with_compression(clickhouse::Compression::None);
        Self {
            client,
            timeout: Duration::from_millis(settings.timeout_ms),
            metrics,
        }
    }

    /// `Ok` when the server answers a trivial query.
    pub async fn ping(&self) -> Result<(), clickhouse::error::Error> {
        let one: u8 = self.client.query("SELECT 1").fetch_one().await?;
        if one == 1 {
            Ok(())
        } else {
            Err(clickhouse::error::Error::Custom(
                "SELECT 1 returned something else".into(),
            ))
        }
    }
}
