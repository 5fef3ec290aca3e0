//! A ClickHouse 26.9 of a test's own (`scripts/stack clickhouse-node`), on free loopback ports, with its data in a
//! temporary folder that outlives a kill -9 so a restart finds every part it had written.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use anyhow::Context;
use tokio::process::{Child, Command};

use crate::kafka::{free_port, project_root};

/// A ClickHouse server process that a test may kill and restart.
pub struct ClickHouseNode {
    dir: PathBuf,
    http: u16,
    tcp: u16,
    child: Option<Child>,
}

impl ClickHouseNode {
    /// Starts a new, empty server; returns once it answers `/ping`.
    pub async fn start() -> anyhow::Result<Self> {
        let dir = std::env::temp_dir().join(crate::unique("sluice_clickhouse_node"));
        std::fs::create_dir_all(&dir)?;
        let mut node = Self {
            dir,
            http: free_port()?,
            tcp: free_port()?,
            child: None,
        };
        node.restart().await?;
        Ok(node)
    }

    /// `http://127.0.0.1:<http port>`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.http)
    }

    /// SIGKILL: no shutdown, nothing flushed that was not already written.
    pub async fn kill9(&mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.take() {
            child.start_kill()?;
            child.wait().await?;
        }
        Ok(())
    }

    /// Starts the server again on the same ports and data (a no-op wait if it is running).
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        if self.child.is_none() {
            let log = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(self.dir.join("server.out"))?;
            let child = Command::new(project_root().join("scripts/stack"))
                .arg("clickhouse-node")
                .arg(&self.dir)
                .arg(self.http.to_string())
                .arg(self.tcp.to_string())
                .stdin(Stdio::null())
                .stdout(log.try_clone()?)
                .stderr(log)
                .kill_on_drop(true)
                .spawn()
                .context("starting scripts/stack clickhouse-node")?;
            self.child = Some(child);
        }
        let ping = format!("{}/ping", self.url());
        let http = reqwest::Client::new();
        crate::eventually(
            "the test's ClickHouse to answer /ping",
            Duration::from_secs(60),
            || {
                let (http, ping) = (http.clone(), ping.clone());
                async move {
                    let ok = http
                        .get(&ping)
                        .send()
                        .await
                        .is_ok_and(|r| r.status().is_success());
                    Ok(ok.then_some(()))
                }
            },
        )
        .await
        .map_err(|e| anyhow::anyhow!("{e}\n{}", self.log()))
    }

    /// The server's output so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("server.out")).unwrap_or_default()
    }
}

impl Drop for ClickHouseNode {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.start_kill();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
