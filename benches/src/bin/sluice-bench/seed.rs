//! The seed-style ingest service (`benches/seed-service`: FastAPI + pydantic + confluent-kafka under uvicorn) as the
//! peer of Sluice's HTTP ingest: the same load generator, events, connections and batch size, on the same broker.
//! Its worker count is probed first (1–4 workers, a few seconds each; the best on this box is what a team would
//! deploy), then it runs flat out `--rounds` times at that count. CPU is the uvicorn master and every worker it
//! spawned, from `/proc`, beside the broker's; the topic's end offsets must hold every event it answered 202 for.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use anyhow::Context;
use rdkafka::consumer::{BaseConsumer, Consumer};
use sluice_benches::cpu::{CpuMeter, per_item};
use sluice_benches::loadgen::{self, LoadConfig, LoadReport};
use sluice_benches::report::{Row, Verdict, per_s};
use sluice_benches::services::free_port;
use tokio::process::{Child, Command};
use tokio::time::Instant;

use crate::harness::{Bench, KEY, PARTITIONS};
use crate::interleaved::{spread, spread_text};
use crate::say;

/// Worker counts probed: one process, one per core, and oversubscribed.
const WORKERS: [u32; 4] = [1, 2, 3, 4];
/// Seconds of load per probed worker count, after a warm-up.
const PROBE_SECONDS: f64 = 5.0;
/// What the target asks of Sluice over the peer.
const NEED: f64 = 3.0;
const TARGET: &str = "Sluice ≥ 3× the seed service";

/// A running uvicorn with its workers, in a process group of its own so stopping it stops every worker.
struct SeedService {
    child: Child,
    pid: u32,
    base_url: String,
    log: PathBuf,
}

/// What the flat-out runs at the chosen worker count measured.
struct SeedRounds {
    /// Accepted events/s of each timed run.
    rates: Vec<f64>,
    /// CPU seconds of the timed runs together, by process name.
    used: Vec<(String, f64)>,
    /// Events accepted in the timed runs.
    timed: u64,
    /// Events accepted in the warm-up and the timed runs: what the topic must hold from them.
    accepted: u64,
    /// Every answer's status and count.
    statuses: Vec<(String, u64)>,
}

impl Bench {
    /// The seed service's row against Sluice's flat-out ingest rates (`sluice`: the rounds' rates, or one run's),
    /// then its CPU row.
    pub(crate) async fn seed(&mut self, sluice: &[f64]) -> Vec<Row> {
        let what = format!(
            "Seed-style FastAPI service ({} events/request), flat out",
            self.args.batch
        );
        match self.seed_runs(sluice).await {
            Ok(rows) => rows,
            Err(e) => vec![Row::failed(&what, TARGET, &e)],
        }
    }

    async fn seed_runs(&mut self, sluice: &[f64]) -> anyhow::Result<Vec<Row>> {
        let dir = self.args.config_dir.join("../benches/seed-service");
        install(&dir).await?;
        let topic = self.name("seed");
        self.create_topic(&topic).await?;
        let mut answered = 0;
        let mut probes = Vec::new();
        for workers in WORKERS {
            say(&format!(
                "seed: probing {workers} uvicorn worker(s) for {PROBE_SECONDS} s"
            ));
            let svc = SeedService::start(self, &dir, &topic, workers).await?;
            let probe = self.seed_load(&svc, 3.0).await;
            let probe = match probe {
                Ok(warm) => {
                    answered += warm.events_accepted;
                    self.seed_load(&svc, PROBE_SECONDS).await
                }
                Err(e) => Err(e),
            };
            svc.stop().await;
            let probe = probe?;
            answered += probe.events_accepted;
            probes.push((workers, probe.accepted_per_s));
        }
        let best = probes
            .iter()
            .max_by(|a, b| a.1.total_cmp(&b.1))
            .map_or(2, |p| p.0);
        self.notes.push(format!(
            "Seed service worker probe ({PROBE_SECONDS} s each): {}; the rounds ran with {best}.",
            probes
                .iter()
                .map(|(w, r)| format!("{w} → {}", per_s(*r, "events")))
                .collect::<Vec<_>>()
                .join(", ")
        ));
        let rounds = if self.phase("rounds") {
            self.args.rounds
        } else {
            1
        };
        let svc = SeedService::start(self, &dir, &topic, best).await?;
        let result = self.seed_rounds(&svc, rounds).await;
        svc.stop().await;
        let SeedRounds {
            rates,
            used,
            timed,
            accepted,
            statuses,
        } = result?;
        answered += accepted;
        let held = end_offsets(self, &topic).await?;
        anyhow::ensure!(
            held >= answered,
            "the seed service answered 202 for {answered} events but its topic holds {held}"
        );
        self.notes.push(format!(
            "Seed service statuses: {statuses:?}; its topic holds {held} events for the {answered} it accepted."
        ));
        self.notes.push(
            "Seed service peer: what it does not do that Sluice does. No schema registry or Avro: the topic gets \
             JSON, so every reader re-parses text and schema changes are a code deploy; one shared key, no \
             per-tenant ingestion keys; no bounded in-flight bytes (a 10× burst queues in each worker's librdkafka \
             buffer until it answers 503); no Segment API, DLQ or replay tooling downstream."
                .into(),
        );
        let ratio = (!sluice.is_empty()).then(|| spread(sluice).0 / spread(&rates).0.max(1e-9));
        Ok(vec![
            Row {
                what: format!(
                    "Seed-style FastAPI service ({best} uvicorn workers, {} events/request) vs Sluice HTTP ingest, \
                     median of {} runs [min–max]",
                    self.args.batch,
                    rates.len()
                ),
                sluice: if sluice.is_empty() {
                    "ingest not measured".into()
                } else {
                    format!("{} (Sluice HTTP ingest)", spread_text(sluice, "events"))
                },
                limit: spread_text(&rates, "events"),
                ratio,
                target: TARGET.into(),
                verdict: match ratio {
                    Some(r) if r >= NEED => Verdict::Met,
                    Some(_) => Verdict::Missed,
                    None => Verdict::Info,
                },
            },
            Row {
                what: format!(
                    "CPU per accepted event, seed service flat out ({best} workers and their master; the load \
                     generator not counted)"
                ),
                sluice: per_item(&used, timed),
                limit: "—".into(),
                ratio: None,
                target: "—".into(),
                verdict: Verdict::Info,
            },
        ])
    }

    /// A warm-up, then `rounds` flat-out runs, each timed for CPU.
    async fn seed_rounds(&self, svc: &SeedService, rounds: usize) -> anyhow::Result<SeedRounds> {
        let warm = self.seed_load(svc, 3.0).await?;
        let mut accepted = warm.events_accepted;
        let mut timed = 0;
        let mut rates = Vec::new();
        let mut used: Vec<(String, f64)> = Vec::new();
        let mut statuses = std::collections::BTreeMap::<String, u64>::new();
        for r in 0..rounds {
            say(&format!(
                "seed: round {}/{rounds}, flat out for {} s",
                r + 1,
                self.args.duration
            ));
            let mut processes: Vec<(&str, u32)> = svc
                .processes()
                .into_iter()
                .map(|p| ("seed service", p))
                .collect();
            if let Some(pid) = self.stack_pid("broker") {
                processes.push(("broker", pid));
            }
            let cpu = CpuMeter::start(&processes);
            let run = self.seed_load(svc, self.args.duration).await?;
            add_by_name(&mut used, cpu.stop());
            say(&format!("seed round {}:\n{run}", r + 1));
            accepted += run.events_accepted;
            timed += run.events_accepted;
            rates.push(run.accepted_per_s);
            for (s, n) in run.statuses {
                *statuses.entry(s).or_default() += n;
            }
        }
        Ok(SeedRounds {
            rates,
            used,
            timed,
            accepted,
            statuses: statuses.into_iter().collect(),
        })
    }

    /// Flat-out load on the seed service for `seconds`, failing when it accepted nothing.
    async fn seed_load(&self, svc: &SeedService, seconds: f64) -> anyhow::Result<LoadReport> {
        let cfg = LoadConfig {
            progress: false,
            ..self.load_at(&svc.base_url, "events", None, seconds)
        };
        let report = loadgen::run(cfg, None).await?;
        anyhow::ensure!(
            report.events_accepted > 0,
            "the seed service accepted nothing; statuses {:?}; see {}",
            report.statuses,
            svc.log.display()
        );
        Ok(report)
    }
}

impl SeedService {
    /// Starts uvicorn with `workers` on a free port and waits for `/readyz`.
    async fn start(
        bench: &Bench,
        dir: &std::path::Path,
        topic: &str,
        workers: u32,
    ) -> anyhow::Result<Self> {
        let port = free_port()?;
        let log = bench.work_dir.join(format!("seed-{workers}.log"));
        let out = std::fs::File::create(&log)?;
        let err = out.try_clone()?;
        let uvicorn = venv().join("bin/uvicorn");
        let child = Command::new(&uvicorn)
            .args(["app:app", "--host", "127.0.0.1", "--port"])
            .arg(port.to_string())
            .arg("--workers")
            .arg(workers.to_string())
            .args([
                "--loop",
                "uvloop",
                "--http",
                "httptools",
                "--no-access-log",
                "--log-level",
                "warning",
            ])
            .current_dir(dir)
            .env("SEED_KAFKA", &bench.args.kafka)
            .env("SEED_TOPIC", topic)
            .env("SEED_KEY", KEY)
            .env("SEED_TENANT", "demo")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", uvicorn.display()))?;
        let pid = child.id().context("uvicorn has no pid")?;
        let mut svc = Self {
            child,
            pid,
            base_url: format!("http://127.0.0.1:{port}"),
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        let url = format!("{}/readyz", svc.base_url);
        loop {
            if let Some(status) = svc.child.try_wait()? {
                anyhow::bail!(
                    "the seed service exited ({status}) while starting; see {}",
                    svc.log.display()
                );
            }
            if let Ok(resp) = bench.http.get(&url).send().await
                && resp.status().is_success()
            {
                return Ok(svc);
            }
            if Instant::now() >= deadline {
                svc.stop().await;
                anyhow::bail!("the seed service was not ready within 60 s");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// uvicorn's pid and every process below it (its workers, multiprocessing's helpers).
    fn processes(&self) -> Vec<u32> {
        let mut all = vec![self.pid];
        let mut i = 0;
        while i < all.len() {
            all.extend(children(all[i]));
            i += 1;
        }
        all
    }

    /// SIGTERM to the whole group, up to 10 s, then SIGKILL to the group.
    async fn stop(mut self) {
        let group = format!("-{}", self.pid);
        let _ = Command::new("kill")
            .args(["-TERM", "--", &group])
            .status()
            .await;
        if tokio::time::timeout(Duration::from_secs(10), self.child.wait())
            .await
            .is_err()
        {
            let _ = Command::new("kill")
                .args(["-KILL", "--", &group])
                .status()
                .await;
            let _ = self.child.wait().await;
        }
    }
}

/// The virtualenv `install` fills (`SEED_VENV`, else `~/.cache/sluice/seed-venv`).
fn venv() -> PathBuf {
    std::env::var_os("SEED_VENV").map_or_else(
        || {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
                .join(".cache/sluice/seed-venv")
        },
        PathBuf::from,
    )
}

/// Runs the service's `install` (pip, once per requirements file), quoting its output when it fails.
async fn install(dir: &std::path::Path) -> anyhow::Result<()> {
    say("seed: installing the service's Python packages (once)");
    let out = Command::new("bash")
        .arg(dir.join("install"))
        .env("SEED_VENV", venv())
        .stdin(Stdio::null())
        .output()
        .await
        .context("running benches/seed-service/install")?;
    if !out.status.success() {
        let text = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = text.lines().rev().take(5).collect();
        anyhow::bail!(
            "benches/seed-service/install failed ({}): {}",
            out.status,
            tail.into_iter().rev().collect::<Vec<_>>().join(" / ")
        );
    }
    Ok(())
}

/// The direct children of `pid`, from every thread's `/proc/<pid>/task/<tid>/children`.
fn children(pid: u32) -> Vec<u32> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("children")).ok())
        .flat_map(|s| {
            s.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect::<Vec<u32>>()
        })
        .collect()
}

/// Adds `more` into `total`, one entry per process name, in first-seen order.
fn add_by_name(total: &mut Vec<(String, f64)>, more: Vec<(String, f64)>) {
    for (name, s) in more {
        match total.iter_mut().find(|(n, _)| *n == name) {
            Some((_, t)) => *t += s,
            None => total.push((name, s)),
        }
    }
}

/// The sum of the high watermarks of `topic`'s partitions: every event the broker holds.
async fn end_offsets(bench: &Bench, topic: &str) -> anyhow::Result<u64> {
    let consumer: BaseConsumer = bench.kafka.client_config().create()?;
    let topic = topic.to_owned();
    tokio::task::spawn_blocking(move || -> anyhow::Result<u64> {
        let mut total = 0;
        for p in 0..PARTITIONS {
            let (_, high) = consumer.fetch_watermarks(&topic, p, Duration::from_secs(10))?;
            total += u64::try_from(high).unwrap_or(0);
        }
        Ok(total)
    })
    .await?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_adds_up_per_process_name() {
        let mut total = Vec::new();
        add_by_name(
            &mut total,
            vec![("seed service".into(), 1.0), ("seed service".into(), 2.0)],
        );
        add_by_name(
            &mut total,
            vec![("broker".into(), 0.5), ("seed service".into(), 1.0)],
        );
        assert_eq!(
            total,
            vec![("seed service".into(), 4.0), ("broker".into(), 0.5)]
        );
    }

    #[test]
    fn a_spawned_child_is_listed() {
        let mut child = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .expect("sleep runs");
        let pid = child.id();
        let found = children(std::process::id()).contains(&pid);
        let _ = child.kill();
        let _ = child.wait();
        assert!(found, "the spawned child is listed");
    }
}
