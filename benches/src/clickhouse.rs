//! Queries against ClickHouse's HTTP interface, for counting rows and probing for them.

use std::time::Duration;

/// A ClickHouse HTTP endpoint.
#[derive(Clone)]
pub struct ClickHouse {
    url: String,
    client: reqwest::Client,
}

impl ClickHouse {
    /// Talks to `url` (e.g. `http://127.0.0.1:8123`).
    pub fn new(url: &str) -> anyhow::Result<Self> {
        let client = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(60))
            .build()?;
        Ok(Self {
            url: url.trim_end_matches('/').to_owned(),
            client,
        })
    }

    /// Runs `sql` and returns the response text.
    pub async fn query(&self, sql: &str) -> anyhow::Result<String> {
        let resp = self
            .client
            .post(&self.url)
            .body(sql.to_owned())
            .send()
            .await?;
        let status = resp.status();
        let text = resp.text().await?;
        anyhow::ensure!(status.is_success(), "ClickHouse {status}: {}", text.trim());
        Ok(text)
    }

    /// Runs `sql` (an INSERT … FORMAT …) with `body` as its data, with no timeout: a bulk load takes what it takes.
    pub async fn insert(&self, sql: &str, body: Vec<u8>) -> anyhow::Result<()> {
        let resp = self
            .client
            .post(&self.url)
            .query(&[("query", sql)])
            .timeout(Duration::from_secs(600))
            .body(body)
            .send()
            .await?;
        let status = resp.status();
        let text = resp.text().await?;
        anyhow::ensure!(status.is_success(), "ClickHouse {status}: {}", text.trim());
        Ok(())
    }

    /// The server's `version()`.
    pub async fn version(&self) -> anyhow::Result<String> {
        Ok(self.query("SELECT version()").await?.trim().to_owned())
    }

    /// `SELECT count() FROM table`, or 0 when the table does not exist yet.
    pub async fn count(&self, table: &str) -> anyhow::Result<u64> {
        match self.query(&format!("SELECT count() FROM {table}")).await {
            Ok(text) => Ok(text.trim().parse()?),
            Err(e)
                if e.to_string().contains("doesn't exist")
                    || e.to_string().contains("UNKNOWN_TABLE") =>
            {
                Ok(0)
            }
            Err(e) => Err(e),
        }
    }
}
