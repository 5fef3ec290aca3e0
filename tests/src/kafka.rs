//! Apache Kafka as Kafka itself sees it: a group described by Kafka's own Java Admin client, and brokers of a
//! test's own that it may kill -9 and restart without touching the shared stack.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::Context;
use tokio::process::{Child, Command};

/// The project's root (the checkout holding `scripts/stack`).
pub fn project_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Where `scripts/stack` installed Kafka's jars (`SLUICE_TEST_KAFKA_LIBS` overrides).
pub fn kafka_libs() -> PathBuf {
    if let Ok(dir) = std::env::var("SLUICE_TEST_KAFKA_LIBS") {
        return dir.into();
    }
    let cache = std::env::var("SLUICE_CACHE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            PathBuf::from(std::env::var("HOME").unwrap_or_else(|_| "/root".into()))
                .join(".cache/sluice")
        });
    cache.join("kafka-4.4.0/libs")
}

/// A consumer group as the broker reports it.
#[derive(Debug, Clone, Default)]
pub struct GroupState {
    /// `CLASSIC` or `CONSUMER` (KIP-848).
    pub protocol: String,
    /// `STABLE`, `EMPTY`, ...
    pub state: String,
    /// Member id → the partitions of the topic assigned to it.
    pub members: BTreeMap<String, Vec<i32>>,
    /// Partition → (committed offset or -1, end offset).
    pub offsets: BTreeMap<i32, (i64, i64)>,
}

impl GroupState {
    /// Messages between the committed offset and the end, per partition.
    pub fn lag(&self) -> BTreeMap<i32, i64> {
        self.offsets
            .iter()
            .map(|(p, (c, e))| (*p, e - (*c).max(0)))
            .collect()
    }
}

/// Describes `group`'s hold on `topic` with Kafka's Java Admin client (`stack/kafka/GroupState.java`).
pub async fn group_state(bootstrap: &str, group: &str, topic: &str) -> anyhow::Result<GroupState> {
    let program = project_root().join("stack/kafka/GroupState.java");
    let out = Command::new("java")
        .arg("-cp")
        .arg(format!("{}/*", kafka_libs().display()))
        .arg(&program)
        .args([bootstrap, group, topic])
        .stdin(Stdio::null())
        .output()
        .await
        .context("running java (Kafka's Admin client)")?;
    anyhow::ensure!(
        out.status.success(),
        "GroupState failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let mut g = GroupState::default();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let f: Vec<&str> = line.split('\t').collect();
        match f.as_slice() {
            ["group", protocol, state, _] => {
                g.protocol = (*protocol).to_owned();
                g.state = (*state).to_owned();
            }
            ["member", id, parts] => {
                let parts = parts
                    .split(',')
                    .filter(|p| !p.is_empty())
                    .map(str::parse)
                    .collect::<Result<_, _>>()?;
                g.members.insert((*id).to_owned(), parts);
            }
            ["offset", p, committed, end] => {
                g.offsets
                    .insert(p.parse()?, (committed.parse()?, end.parse()?));
            }
            _ => anyhow::bail!("unexpected GroupState line {line:?}"),
        }
    }
    Ok(g)
}

/// A single-node Kafka of a test's own (`scripts/stack kafka-node`), on free loopback ports, with its log
/// directory in a temporary folder that outlives a kill -9 so a restart finds its data.
pub struct KafkaNode {
    dir: PathBuf,
    port: u16,
    controller_port: u16,
    child: Option<Child>,
}

/// A loopback port nothing listens on now.
pub(crate) fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

impl KafkaNode {
    /// Formats and starts a new node; returns once it answers a metadata request.
    pub async fn start() -> anyhow::Result<Self> {
        let dir = std::env::temp_dir().join(crate::unique("sluice_kafka_node"));
        std::fs::create_dir_all(&dir)?;
        let mut node = Self {
            dir,
            port: free_port()?,
            controller_port: free_port()?,
            child: None,
        };
        node.restart().await?;
        Ok(node)
    }

    /// `127.0.0.1:<port>`.
    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// SIGKILL: no controlled shutdown, no flush.
    pub async fn kill9(&mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.take() {
            child.start_kill()?;
            child.wait().await?;
        }
        Ok(())
    }

    /// Starts the node again on the same ports and data (a no-op wait if it is running).
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        if self.child.is_none() {
            let log = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(self.dir.join("broker.log"))?;
            let child = Command::new(project_root().join("scripts/stack"))
                .arg("kafka-node")
                .arg(&self.dir)
                .arg(self.port.to_string())
                .arg(self.controller_port.to_string())
                .stdin(Stdio::null())
                .stdout(log.try_clone()?)
                .stderr(log)
                .kill_on_drop(true)
                .spawn()
                .context("starting scripts/stack kafka-node")?;
            self.child = Some(child);
        }
        let bootstrap = self.bootstrap();
        crate::eventually(
            "the test's Kafka node to answer metadata",
            Duration::from_secs(90),
            || {
                let bootstrap = bootstrap.clone();
                async move {
                    let ok = tokio::task::spawn_blocking(move || {
                        use rdkafka::consumer::{BaseConsumer, Consumer};
                        let c: BaseConsumer = rdkafka::ClientConfig::new()
                            .set("bootstrap.servers", &bootstrap)
                            .create()?;
                        let md = c.fetch_metadata(None, Duration::from_secs(2))?;
                        anyhow::Ok(!md.brokers().is_empty())
                    })
                    .await??;
                    Ok(ok.then_some(()))
                }
            },
        )
        .await
        .map_err(|e| anyhow::anyhow!("{e}\n{}", self.log()))
    }

    /// The node's output so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("broker.log")).unwrap_or_default()
    }
}

impl Drop for KafkaNode {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.start_kill();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
