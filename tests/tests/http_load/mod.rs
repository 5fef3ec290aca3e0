//! Real service binaries with config files of their own, and an HTTP load that records what every answer was:
//! for the tests that kill infrastructure under load and then check that every 202 landed once.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use serde_json::{Value as Json, json};
use sluice_tests::{eventually, service_binary, unique};
use tokio::process::{Child, Command};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// A real service binary with a config file of its own, answering on `base`.
pub struct Service {
    _child: Child,
    pub base: String,
    log: PathBuf,
}

impl Service {
    /// Starts `binary` with `config` (TOML, `{port}` replaced by a free port) and waits for `/readyz`.
    pub async fn start(binary: &str, config: &str) -> anyhow::Result<Self> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let path = std::env::temp_dir().join(format!("{}.toml", unique(binary)));
        std::fs::write(&path, config.replace("{port}", &port.to_string()))?;
        let log = path.with_extension("log");
        let out = std::fs::File::create(&log)?;
        let mut cmd = Command::new(service_binary(binary)?);
        for k in sluice_tests::sluice_vars() {
            cmd.env_remove(k);
        }
        let child = cmd
            .env("SLUICE_CONFIG", &path)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {binary}"))?;
        let s = Self {
            _child: child,
            base: format!("http://127.0.0.1:{port}"),
            log,
        };
        let url = format!("{}/readyz", s.base);
        eventually(
            &format!("{binary} ready"),
            Duration::from_secs(60),
            || async {
                Ok(reqwest::get(&url)
                    .await
                    .is_ok_and(|r| r.status().is_success())
                    .then_some(()))
            },
        )
        .await
        .map_err(|e| anyhow::anyhow!("{e}\n{}", s.log()))?;
        Ok(s)
    }

    /// What the service logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// What the HTTP load saw.
#[derive(Default)]
pub struct Seen {
    /// Ids of events answered 202.
    pub accepted: Vec<String>,
    /// Responses by status.
    pub statuses: BTreeMap<u16, u64>,
    /// Non-202 answers without a Retry-After header.
    pub without_retry_after: u64,
}

impl Seen {
    /// Checks what every answer under infrastructure trouble must be (202, or 503/429 with Retry-After) and that no
    /// id was handed out twice; returns the ids of the 202s. Prints the tally under `what`.
    pub fn accepted_ids(&self, what: &str) -> HashSet<String> {
        eprintln!(
            "{what}: statuses {:?}, {} events accepted",
            self.statuses,
            self.accepted.len()
        );
        assert!(
            self.statuses.keys().all(|s| matches!(s, 202 | 503 | 429)),
            "{what}: only 202, 503 or 429: {:?}",
            self.statuses
        );
        assert_eq!(
            self.without_retry_after, 0,
            "{what}: every 503 or 429 carries Retry-After"
        );
        let ids: HashSet<String> = self.accepted.iter().cloned().collect();
        assert_eq!(
            ids.len(),
            self.accepted.len(),
            "{what}: the producer never hands out an id twice"
        );
        ids
    }
}

/// `n` events of the bundled schema, `user_id` spread so they hash to every partition.
pub fn batch(n: usize) -> Json {
    Json::Array(
        (0..n)
            .map(|i| json!({"event_type": "restart", "occurred_at": 1_764_000_000_000i64 + i as i64, "user_id": format!("u-{i}")}))
            .collect(),
    )
}

/// `clients` loops each posting 10 events to `url` every 50 ms with `key`, until stopped.
pub struct Load {
    seen: Arc<Mutex<Seen>>,
    stop: CancellationToken,
    tasks: Vec<JoinHandle<anyhow::Result<()>>>,
}

impl Load {
    /// Starts the loops.
    pub fn start(url: &str, key: &str, clients: usize) -> Self {
        let seen = Arc::new(Mutex::new(Seen::default()));
        let stop = CancellationToken::new();
        let tasks = (0..clients)
            .map(|_| {
                let (seen, stop, url, key) =
                    (seen.clone(), stop.clone(), url.to_owned(), key.to_owned());
                tokio::spawn(async move {
                    let http = reqwest::Client::builder()
                        .timeout(Duration::from_secs(30))
                        .build()?;
                    while !stop.is_cancelled() {
                        let r = http
                            .post(&url)
                            .bearer_auth(&key)
                            .json(&batch(10))
                            .send()
                            .await?;
                        let status = r.status().as_u16();
                        let retry_after = r.headers().contains_key("retry-after");
                        let body: Json = r.json().await.unwrap_or(Json::Null);
                        let ids: Vec<String> = body["event_ids"]
                            .as_array()
                            .map(|ids| {
                                ids.iter()
                                    .filter_map(|v| v.as_str().map(str::to_owned))
                                    .collect()
                            })
                            .unwrap_or_default();
                        anyhow::ensure!(
                            status != 202 || !ids.is_empty(),
                            "a 202 without event_ids: {body}"
                        );
                        {
                            let mut seen = seen.lock().unwrap_or_else(|e| e.into_inner());
                            *seen.statuses.entry(status).or_default() += 1;
                            if status == 202 {
                                seen.accepted.extend(ids);
                            } else if !retry_after {
                                seen.without_retry_after += 1;
                            }
                        }
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    anyhow::Ok(())
                })
            })
            .collect();
        Self { seen, stop, tasks }
    }

    /// Events answered 202 so far.
    pub fn accepted(&self) -> usize {
        self.seen.lock().map(|s| s.accepted.len()).unwrap_or(0)
    }

    /// Answers with `status` so far.
    pub fn count(&self, status: u16) -> u64 {
        self.seen
            .lock()
            .map(|s| s.statuses.get(&status).copied().unwrap_or(0))
            .unwrap_or(0)
    }

    /// Waits until `n` more events than now were answered 202.
    pub async fn wait_more(&self, n: usize, timeout: Duration) -> anyhow::Result<()> {
        let target = self.accepted() + n;
        eventually(&format!("{n} more events accepted"), timeout, || async {
            Ok((self.accepted() >= target).then_some(()))
        })
        .await
    }

    /// Stops the loops and returns what they saw.
    pub async fn stop(self) -> anyhow::Result<Seen> {
        self.stop.cancel();
        for task in self.tasks {
            task.await??;
        }
        Ok(std::mem::take(
            &mut *self.seen.lock().unwrap_or_else(|e| e.into_inner()),
        ))
    }
}
