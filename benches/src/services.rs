//! Sluice services started as real processes from the build's own binaries, each with a generated config file,
//! so the benchmark measures what ships (and can read a process's memory from `/proc`).

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::Context;
use tokio::process::{Child, Command};
use tokio::time::Instant;

/// A running service process; stopped with SIGTERM by [`Service::stop`], killed if dropped.
pub struct Service {
    name: String,
    child: Child,
    pid: u32,
    /// Where its stdout and stderr go.
    pub log: PathBuf,
    /// Its HTTP address, `http://127.0.0.1:<port>`.
    pub base_url: String,
}

/// Memory figures from `/proc/<pid>/status`, in KiB.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct Memory {
    /// Resident set size now.
    pub rss_kib: u64,
    /// Peak resident set size ("high water mark").
    pub hwm_kib: u64,
}

/// A port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

impl Service {
    /// Starts `binary` with `config` (a TOML file) and `env` overrides, logging to `dir/<name>.log`.
    pub async fn start(
        name: &str,
        binary: &Path,
        config: &Path,
        env: &[(String, String)],
        port: u16,
        dir: &Path,
    ) -> anyhow::Result<Self> {
        Self::start_with_args(name, binary, &[], config, env, port, dir).await
    }

    /// Like [`Service::start`], with command-line `args` (a subcommand).
    pub async fn start_with_args(
        name: &str,
        binary: &Path,
        args: &[&str],
        config: &Path,
        env: &[(String, String)],
        port: u16,
        dir: &Path,
    ) -> anyhow::Result<Self> {
        anyhow::ensure!(binary.exists(), "{} is not built", binary.display());
        anyhow::ensure!(config.exists(), "{} does not exist", config.display());
        tokio::fs::create_dir_all(dir).await?;
        let log = dir.join(format!("{name}.log"));
        let out = std::fs::File::create(&log)?;
        let err = out.try_clone()?;
        let mut cmd = Command::new(binary);
        // The benchmark's own SLUICE_* environment must not reconfigure the services it starts.
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("SLUICE_") {
                cmd.env_remove(k);
            }
        }
        cmd.args(args)
            .env("SLUICE_CONFIG", config)
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env(
                "RUST_LOG",
                std::env::var("SLUICE_BENCH_SERVICE_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .kill_on_drop(true);
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        let pid = child.id().context("child has no pid")?;
        Ok(Self {
            name: name.to_owned(),
            child,
            pid,
            log,
            base_url: format!("http://127.0.0.1:{port}"),
        })
    }

    /// Waits until `/readyz` answers 200, failing early if the process exits.
    pub async fn wait_ready(&mut self, timeout: Duration) -> anyhow::Result<()> {
        let client = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(2))
            .build()?;
        let deadline = Instant::now() + timeout;
        let url = format!("{}/readyz", self.base_url);
        loop {
            if let Some(status) = self.child.try_wait()? {
                anyhow::bail!(
                    "{} exited ({status}) while starting; see {}",
                    self.name,
                    self.log.display()
                );
            }
            if let Ok(resp) = client.get(&url).send().await
                && resp.status().is_success()
            {
                return Ok(());
            }
            if Instant::now() >= deadline {
                anyhow::bail!(
                    "{} not ready within {timeout:?}; see {}",
                    self.name,
                    self.log.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Current and peak resident memory.
    pub fn memory(&self) -> anyhow::Result<Memory> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid))?;
        let field = |name: &str| -> Option<u64> {
            status
                .lines()
                .find(|l| l.starts_with(name))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        };
        Ok(Memory {
            rss_kib: field("VmRSS:").context("no VmRSS")?,
            hwm_kib: field("VmHWM:").context("no VmHWM")?,
        })
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Whether the process is still running.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// SIGTERM, then up to `grace` for a clean exit, then SIGKILL.
    pub async fn stop(mut self, grace: Duration) {
        if self.child.try_wait().ok().flatten().is_some() {
            return;
        }
        // tokio only sends SIGKILL; ask politely first so the service flushes and leaves its group.
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.pid.to_string())
            .status()
            .await;
        if tokio::time::timeout(grace, self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }
}

/// A `perf record` (software cpu-clock sampling, which works where hardware counters are unsupported) attached to
/// one process; absent when perf is missing or refuses.
pub struct Perf {
    child: Child,
}

impl Perf {
    /// Starts sampling `pid` into `out`.
    pub fn attach(pid: u32, out: &Path) -> Option<Self> {
        let child = Command::new("perf")
            .args(["record", "-e", "cpu-clock", "-F", "499", "-g", "-o"])
            .arg(out)
            .arg("-p")
            .arg(pid.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .ok()?;
        Some(Self { child })
    }

    /// Stops sampling (SIGINT, so perf writes its file) and waits up to 10 s for it.
    pub async fn stop(mut self) {
        if let Some(pid) = self.child.id() {
            let _ = Command::new("kill")
                .arg("-INT")
                .arg(pid.to_string())
                .status()
                .await;
        }
        if tokio::time::timeout(Duration::from_secs(10), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }
}
